//! The client helpers (reqwest `send_ctx` and the tower `PropagateLayer`)
//! against real servers: the deadline reaches the next server no longer
//! than the caller's, a done context sends nothing, a context that ends
//! aborts the request and the body read, and values travel as headers.

mod common;

use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use common::*;
use ctxkit::{Context, Error};
use ctxkit_http::client::{ClientError, PropagateLayer, Propagation, RequestBuilderExt};
use ctxkit_http::deadline_header::TimeoutHeader;
use ctxkit_http::{Ended, ForwardHeaders, RequestContext};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Back {
    probe: Probe,
    requests: Arc<AtomicUsize>,
}

/// The downstream server: reports what it received.
fn back(state: Back) -> axum::Router {
    axum::Router::new()
        .route(
            "/remaining",
            get(|State(back): State<Back>, ctx: RequestContext| async move {
                back.requests.fetch_add(1, Ordering::Relaxed);
                let remaining = ctx.remaining().map_or(-1, |left| left.as_micros() as i64);
                let forwarded = ForwardHeaders::of(&ctx).map(|f| {
                    ["x-request-id", "traceparent", "baggage"]
                        .map(|name| f.get(name).map_or("-", |v| v.to_str().unwrap()).to_string())
                        .join(",")
                });
                format!("{remaining} {}", forwarded.unwrap_or_default())
            }),
        )
        .route(
            "/hang",
            get(|State(back): State<Back>, ctx: RequestContext| async move {
                back.requests.fetch_add(1, Ordering::Relaxed);
                back.probe.started(&ctx);
                if ctx.done().await == Error::DeadlineExceeded {
                    // Its own (propagated) deadline came first: answer
                    // nothing, so that only the caller's abort ends the call.
                    std::future::pending::<()>().await;
                }
            }),
        )
        .route(
            // One chunk, then nothing until the request ends.
            "/trickle",
            get(|State(back): State<Back>, ctx: RequestContext| async move {
                back.probe.started(&ctx);
                let chunks = futures::stream::unfold(0, |sent| async move {
                    if sent > 0 {
                        std::future::pending::<()>().await;
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from_static(b"first")),
                        sent + 1,
                    ))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
        .with_state(state)
}

async fn start_back() -> (TestServer, Back, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let (probe, seen) = Probe::new();
    let state = Back {
        probe,
        requests: Arc::default(),
    };
    let server =
        TestServer::start_cancellable(|l| l, Duration::from_secs(1), back(state.clone())).await;
    (server, state, seen)
}

fn reqwest_client(protocol: Protocol) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_prior_knowledge(),
    }
    .build()
    .unwrap()
}

/// The front server calls the back one under its request's context and
/// answers "<its own remaining µs> <what the back answered>".
fn front(back_url: String, protocol: Protocol, propagation: Propagation) -> axum::Router {
    let client = reqwest_client(protocol);
    axum::Router::new().route(
        "/call",
        get(move |ctx: RequestContext| {
            let (client, url, propagation) =
                (client.clone(), back_url.clone(), propagation.clone());
            async move {
                let mine = ctx.remaining().unwrap().as_micros();
                let response = client
                    .get(url)
                    .send_ctx_with(&ctx, &propagation)
                    .await
                    .unwrap();
                format!("{mine} {}", response.text().await.unwrap())
            }
        }),
    )
}

#[tokio::test]
async fn the_deadline_reaches_the_next_server_no_longer_than_the_callers() {
    let (back_server, _, _) = start_back().await;
    for protocol in BOTH {
        for header in TimeoutHeader::ALL {
            let propagation = Propagation::new().deadline_headers(&[header]);
            let app = front(back_server.url("/remaining"), protocol, propagation);
            let front_server =
                TestServer::start_cancellable(|l| l, Duration::from_secs(1), app).await;
            let mut client = Connected::open(front_server.addr, protocol).await;
            let ask = [("connect-timeout-ms", "2000"), ("x-request-id", "req-7")];
            let (status, body) = client.fetch("/call", &ask).await;
            assert_eq!(status, 200, "{body}");
            let fields: Vec<&str> = body.split(' ').collect();
            let (mine, theirs): (i64, i64) =
                (fields[0].parse().unwrap(), fields[1].parse().unwrap());
            assert!(
                theirs > 0,
                "{protocol:?} {header}: no deadline arrived: {body}"
            );
            assert!(
                theirs <= mine,
                "{protocol:?} {header}: {theirs} µs there, {mine} µs here"
            );
            assert!(mine <= 2_000_000 && mine - theirs < 1_000_000, "{body}");
            // The incoming x-request-id went on downstream.
            assert_eq!(fields[2], "req-7,-,-", "{protocol:?}");
        }
    }
}

#[tokio::test]
async fn configured_values_travel_as_headers() {
    let (back_server, _, _) = start_back().await;
    let forwarded = ForwardHeaders::new()
        .with("x-request-id", "r-1")
        .with(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .with("baggage", "userId=alice");
    let ctx = Context::background().with_value(forwarded);
    for protocol in BOTH {
        let response = reqwest_client(protocol)
            .get(back_server.url("/remaining"))
            .send_ctx(&ctx)
            .await
            .unwrap();
        let body = response.text().await.unwrap();
        assert_eq!(
            body, "-1 r-1,00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01,userId=alice",
            "{protocol:?}: no deadline, three values"
        );
        // Only the configured ones.
        let only_id =
            Propagation::new().forwarded_headers(&[http::HeaderName::from_static("x-request-id")]);
        let response = reqwest_client(protocol)
            .get(back_server.url("/remaining"))
            .send_ctx_with(&ctx, &only_id)
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "-1 r-1,-,-");
    }
}

#[tokio::test]
async fn a_done_context_fails_at_once_and_sends_nothing() {
    let (back_server, back, _) = start_back().await;
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(std::io::Error::other("the user gave up"));
    for protocol in BOTH {
        let error = reqwest_client(protocol)
            .get(back_server.url("/remaining"))
            .send_ctx(&ctx)
            .await
            .unwrap_err();
        assert_eq!(error.context_error(), Some(Error::Canceled));
        assert_eq!(error.cause().unwrap().to_string(), "the user gave up");
    }
    let (expired, _keep) = Context::background().with_timeout(Duration::ZERO);
    let error = reqwest_client(Protocol::Http1)
        .get(back_server.url("/remaining"))
        .send_ctx(&expired)
        .await
        .unwrap_err();
    assert_eq!(error.context_error(), Some(Error::DeadlineExceeded));
    assert_eq!(back.requests.load(Ordering::Relaxed), 0, "nothing was sent");
}

#[tokio::test]
async fn a_context_that_ends_aborts_the_request_with_its_error() {
    let (back_server, _, mut seen) = start_back().await;
    for protocol in BOTH {
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        // No deadline sent: only the abort can end the call there.
        let no_deadline = Propagation::new().deadline_headers(&[]);
        let error = reqwest_client(protocol)
            .get(back_server.url("/hang"))
            .send_ctx_with(&ctx, &no_deadline)
            .await
            .unwrap_err();
        let aborted = Instant::now();
        assert_eq!(
            error.context_error(),
            Some(Error::DeadlineExceeded),
            "{error}"
        );
        assert!(started.elapsed() < PATIENCE);
        // The abort reached the server, whose request ended at once.
        let there = next_seen(&mut seen).await;
        there.assert_both_saw(aborted, Ended::ClientGone).await;
    }
}

#[tokio::test]
async fn a_context_that_ends_stops_the_body_read() {
    let (back_server, _, mut seen) = start_back().await;
    for protocol in BOTH {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut response = reqwest_client(protocol)
            .get(back_server.url("/trickle"))
            .send_ctx(&ctx)
            .await
            .unwrap();
        assert_eq!(response.chunk().await.unwrap().unwrap(), "first");
        let there = next_seen(&mut seen).await;
        let stopper = tokio::spawn(async move {
            tokio::task::yield_now().await;
            cancel.cancel_with(std::io::Error::other("enough"));
        });
        let error = response.chunk().await.unwrap_err();
        stopper.await.unwrap();
        assert_eq!(error.context_error(), Some(Error::Canceled));
        assert_eq!(error.cause().unwrap().to_string(), "enough");
        drop(response);
        there
            .assert_both_saw(Instant::now(), Ended::ClientGone)
            .await;
    }
}

#[tokio::test]
async fn the_tower_layer_propagates_fails_early_and_aborts() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use tower::{Service, ServiceBuilder, ServiceExt};

    let (back_server, back, mut seen) = start_back().await;
    let inner = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(PropagateLayer::new(
            Propagation::new().deadline_headers(&[TimeoutHeader::GrpcTimeout]),
        ))
        .service(inner);
    let request = |ctx: &Context, path: &str| {
        let mut request = http::Request::get(back_server.url(path))
            .body(Empty::new())
            .unwrap();
        request.extensions_mut().insert(ctx.clone());
        request
    };

    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    let ctx = ctx.with_value(ForwardHeaders::new().with("x-request-id", "t-1"));
    let mine = ctx.remaining().unwrap().as_micros() as i64;
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(&ctx, "/remaining"))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    let (theirs, values) = body.split_once(' ').unwrap();
    let theirs: i64 = theirs.parse().unwrap();
    assert!(
        0 < theirs && theirs <= mine,
        "{theirs} µs there, {mine} µs here"
    );
    assert_eq!(values, "t-1,-,-");

    let (done, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let sent_before = back.requests.load(Ordering::Relaxed);
    let error = client
        .ready()
        .await
        .unwrap()
        .call(request(&done, "/remaining"))
        .await
        .unwrap_err();
    assert_eq!(error.context_error(), Some(Error::Canceled));
    assert_eq!(
        back.requests.load(Ordering::Relaxed),
        sent_before,
        "nothing was sent"
    );

    let (short, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
    let error = client
        .ready()
        .await
        .unwrap()
        .call(request(&short, "/hang"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Context {
                error: Error::DeadlineExceeded,
                ..
            }
        ),
        "{error}"
    );
    let there = next_seen(&mut seen).await;
    ended(&there.ctx).await;

    let (reading, cancel) = Context::background().with_cancel();
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(&reading, "/trickle"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    next_seen(&mut seen).await;
    cancel.cancel();
    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(error.context_error(), Some(Error::Canceled));
}
