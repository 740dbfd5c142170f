//! Graceful shutdown: in-flight requests finish within the grace period,
//! the rest end with `Ended::Shutdown`, new connections get nothing, and
//! the report counts both; over HTTP/1.1 and HTTP/2.

mod common;

use axum::extract::State;
use axum::routing::{any, get};
use common::*;
use ctxkit::provenance::Origin;
use ctxkit_http::{Ended, RequestContext};
use std::time::{Duration, Instant};

fn app(probe: Probe) -> axum::Router {
    axum::Router::new()
        .route(
            "/short",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    "short done"
                },
            ),
        )
        .route(
            "/long",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    ctx.done().await;
                    (
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        ctx.cause().unwrap().to_string(),
                    )
                },
            ),
        )
        .route(
            // Ignores its context: only the drain timeout's abort ends it.
            "/stuck",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    std::future::pending::<()>().await;
                },
            ),
        )
        .route("/echo", any(switch_to_echo))
        .route("/ready", get(|| async { "ready" }))
        .with_state(probe)
}

#[tokio::test]
async fn shutdown_lets_short_requests_finish_and_cancels_the_rest_after_the_grace() {
    for protocol in BOTH {
        let grace = Duration::from_millis(1000);
        let (probe, mut seen) = Probe::new();
        let server = TestServer::start_cancellable(|layer| layer, grace, app(probe)).await;
        let addr = server.addr;
        let mut idle = Connected::open(addr, protocol).await;
        idle.fetch("/short", &[]).await; // keep-alive, idle at shutdown
        next_seen(&mut seen).await;
        let mut long_conn = Connected::open(addr, protocol).await;
        let long = tokio::spawn(long_conn.get("/long", &[]));
        let long_seen = next_seen(&mut seen).await;
        let mut short_conn = Connected::open(addr, protocol).await;
        let short = tokio::spawn(short_conn.get("/short", &[]));
        let short_seen = next_seen(&mut seen).await;

        let shutdown_began = Instant::now();
        let report = tokio::spawn(server.shut_down());

        // The short request completes within the grace period.
        let response = short.await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "{protocol:?}");
        short_seen
            .assert_both_saw(Instant::now(), Ended::Completed)
            .await;

        // The long one is cancelled with Shutdown once the grace is over.
        long_seen
            .assert_both_saw(shutdown_began + grace, Ended::Shutdown)
            .await;
        let (at, _) = long_seen.task_saw.lock().unwrap().unwrap();
        assert!(
            at >= shutdown_began + grace,
            "{protocol:?}: cancelled before the grace ran out"
        );
        let response = long.await.unwrap().unwrap();
        assert_eq!(response.status(), 503, "{protocol:?}");

        let report = report.await.unwrap();
        assert_eq!(
            (report.finished, report.cancelled),
            (1, 1),
            "{protocol:?}: {report:?}"
        );
        assert_eq!(report.aborted_connections, 0);
        drop(idle);
    }
}

#[tokio::test]
async fn after_shutdown_begins_new_connections_get_no_answer() {
    for protocol in BOTH {
        let (probe, mut seen) = Probe::new();
        let server =
            TestServer::start_cancellable(|layer| layer, Duration::from_secs(5), app(probe)).await;
        let addr = server.addr;
        let mut long_conn = Connected::open(addr, protocol).await;
        let long = tokio::spawn(long_conn.get("/long", &[]));
        let long_seen = next_seen(&mut seen).await;
        let report = tokio::spawn(server.shut_down());
        // Serving stops at once: the listener is closed.
        let refused = tokio::time::timeout(PATIENCE, async {
            loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Err(_) => break,
                    Ok(stream) => drop(stream), // accepted just before the close
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            refused.is_ok(),
            "{protocol:?}: new connections still accepted"
        );
        assert!(
            !long_seen.ctx.is_done(),
            "in-flight requests run on in the grace period"
        );
        long.abort();
        long_conn.close(); // the client gives up: finished, not cancelled
        long_seen
            .assert_both_saw(Instant::now(), Ended::ClientGone)
            .await;
        let report = report.await.unwrap();
        assert_eq!((report.finished, report.cancelled), (1, 0), "{protocol:?}");
    }
}

#[tokio::test]
async fn a_handler_that_ignores_its_context_is_aborted_after_the_drain_timeout() {
    let (probe, mut seen) = Probe::new();
    let server =
        TestServer::start_cancellable(|layer| layer, Duration::from_millis(200), app(probe)).await;
    let mut client = Connected::open(server.addr, Protocol::Http1).await;
    let stuck = tokio::spawn(client.get("/stuck", &[]));
    let stuck_seen = next_seen(&mut seen).await;
    let started = Instant::now();
    let report = server.shut_down().await; // bounded: never hangs
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(Ended::of(&stuck_seen.ctx), Some(Ended::Shutdown));
    let who = stuck_seen.ctx.provenance().expect("ended");
    assert_eq!(
        who.origin(),
        Origin::Integration("server shutdown"),
        "{who}"
    );
    assert_eq!(
        (
            report.finished,
            report.cancelled,
            report.aborted_connections
        ),
        (0, 1, 1)
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the aborted connection is closed"
    );
}

#[tokio::test]
async fn shutdown_ends_an_upgraded_connection_after_the_grace_and_counts_it() {
    let grace = Duration::from_millis(300);
    let (probe, mut seen) = Probe::new();
    let server = TestServer::start_cancellable(|layer| layer, grace, app(probe)).await;
    let mut stream = upgrade_to_echo(server.addr, "/echo").await;
    let request = next_seen(&mut seen).await;
    assert_eq!(echoed(&mut stream, b"ping").await, b"ping");

    let report = shut_down_after(server, grace).await;
    assert_eq!(Ended::of(&request.ctx), Some(Ended::Shutdown));
    assert_eq!(
        (
            report.finished,
            report.cancelled,
            report.aborted_connections
        ),
        (0, 1, 0)
    );
    // The echo saw its context end and dropped the connection.
    assert_eq!(read_to_close(&mut stream).await.unwrap(), 0);
}

#[tokio::test]
async fn shutdown_ends_an_http2_tunnel_after_the_grace_with_its_connection() {
    let grace = Duration::from_millis(300);
    let (probe, mut seen) = Probe::new();
    let server = TestServer::start_cancellable(|layer| layer, grace, app(probe)).await;
    let mut client = Connected::open(server.addr, Protocol::Http2).await;
    client.fetch("/ready", &[]).await; // the server's settings are in
    let mut tunnel = tunnel_to_echo(&mut client, "/echo").await;
    let request = next_seen(&mut seen).await;
    assert_eq!(echoed(&mut tunnel, b"ping").await, b"ping");

    let report = shut_down_after(server, grace).await;
    // Left to its connection's context, which the shutdown ended; the
    // report counts requests whose end the server holds, which a tunnel's
    // is not.
    assert_eq!(Ended::of(&request.ctx), Some(Ended::Shutdown));
    assert_eq!(report.aborted_connections, 0);
    // The echo dropped the stream: its end, or its reset.
    let read = read_to_close(&mut tunnel).await;
    assert!(read.as_ref().map_or(true, |&n| n == 0), "{read:?}");
}

/// Shuts `server` down, which must take at least its `grace`.
async fn shut_down_after(server: TestServer, grace: Duration) -> ctxkit_http::ShutdownReport {
    let began = Instant::now();
    let report = server.shut_down().await;
    assert!(
        began.elapsed() >= grace,
        "cancelled within the grace period"
    );
    report
}

/// Reads `stream` until the server closes it (bounded): how many bytes
/// came before the end, or the error that ended it.
async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<usize> {
    let mut rest = Vec::new();
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(stream, &mut rest),
    )
    .await
    .expect("the server closes it")
}
