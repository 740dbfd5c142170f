//! Load: 10,000 requests from 50 concurrent connections (half HTTP/1.1,
//! half HTTP/2), 1,000 of which the client abandons mid-flight. Every other
//! request succeeds, every abandoned one ends with `ClientGone`, and
//! afterwards nothing is left registered under the server.

mod common;

use axum::extract::{Query, State};
use axum::routing::get;
use common::*;
use ctxkit::Context;
use ctxkit_http::{Ended, RequestContext};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const CONNECTIONS: usize = 50;
const REQUESTS_PER_CONNECTION: usize = 200;
/// Every tenth request is abandoned.
const ABANDON_EVERY: usize = 10;

/// Abandoned requests' handlers hand their context to the client that
/// sent them, by request id.
#[derive(Clone, Default)]
struct Hangs(Arc<Mutex<HashMap<u64, oneshot::Sender<Context>>>>);

fn app(hangs: Hangs) -> axum::Router {
    axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/hang",
            get(
                |State(hangs): State<Hangs>,
                 Query(query): Query<HashMap<String, u64>>,
                 ctx: RequestContext| async move {
                    let waiter = hangs.0.lock().unwrap().remove(&query["id"]).unwrap();
                    let _ = waiter.send(ctx.clone().into_inner());
                    ctx.done().await;
                },
            ),
        )
        .with_state(hangs)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    client_gone: AtomicU64,
}

async fn one_connection(index: usize, addr: std::net::SocketAddr, hangs: Hangs, tally: Arc<Tally>) {
    let protocol = if index % 2 == 0 {
        Protocol::Http1
    } else {
        Protocol::Http2
    };
    let mut conn = Connected::open(addr, protocol).await;
    for request in 0..REQUESTS_PER_CONNECTION {
        if request % ABANDON_EVERY != ABANDON_EVERY - 1 {
            let (status, body) = conn.fetch("/ok", &[]).await;
            assert_eq!(
                (status.as_u16(), body.as_str()),
                (200, "ok"),
                "{protocol:?}"
            );
            tally.ok.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let id = (index * REQUESTS_PER_CONNECTION + request) as u64;
        let (tx, rx) = oneshot::channel();
        hangs.0.lock().unwrap().insert(id, tx);
        if let Conn::Http1(send) = &mut conn.conn {
            send.ready().await.unwrap();
        }
        let pending = tokio::spawn(conn.get(&format!("/hang?id={id}"), &[]));
        let ctx = tokio::time::timeout(PATIENCE, rx)
            .await
            .expect("handler starts")
            .unwrap();
        // Abandon it: HTTP/2 resets the stream, HTTP/1.1 closes the
        // connection (and opens a new one for the next requests).
        pending.abort();
        if protocol == Protocol::Http1 {
            conn.close();
            conn = Connected::open(addr, protocol).await;
        }
        ended(&ctx).await;
        assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone), "{protocol:?}");
        tally.client_gone.fetch_add(1, Ordering::Relaxed);
    }
    conn.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_a_thousand_abandoned_nothing_leaked() {
    let hangs = Hangs::default();
    let server =
        TestServer::start_cancellable(|l| l, Duration::from_secs(1), app(hangs.clone())).await;
    // The check below can see a leak: an open connection is registered.
    let mut probe = Connected::open(server.addr, Protocol::Http1).await;
    probe.fetch("/ok", &[]).await;
    assert!(server.server_ctx.registrations() >= 1);
    probe.close();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|index| {
            tokio::spawn(one_connection(
                index,
                server.addr,
                hangs.clone(),
                tally.clone(),
            ))
        })
        .collect();
    for client in clients {
        tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("the load is bounded")
            .unwrap();
    }
    let total = CONNECTIONS * REQUESTS_PER_CONNECTION;
    let abandoned = total / ABANDON_EVERY;
    assert_eq!(tally.ok.load(Ordering::Relaxed) as usize, total - abandoned);
    assert_eq!(
        tally.client_gone.load(Ordering::Relaxed) as usize,
        abandoned
    );
    eprintln!("{total} requests in {:?}", started.elapsed());

    // Every connection is closed by its client; the server notices each
    // close on its own task, so wait (bounded) for the last one.
    nothing_left_under(&server.server_ctx).await;
    let report = server.shut_down().await;
    assert_eq!((report.finished, report.cancelled), (0, 0));
}
