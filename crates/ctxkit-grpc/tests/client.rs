//! The client layer over real TCP: the remaining deadline goes out as
//! `grpc-timeout`, a done context sends nothing, a context that ends resets
//! the stream, and values go out as metadata.

mod support;

use ctxkit::Context;
use ctxkit_grpc::demo::WorkRequest;
use ctxkit_grpc::{request, Ended, ForwardHeaders, ServerLayer};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{ticks, TestServer, PROMPT};
use tokio_stream::StreamExt;
use tonic::Code;

fn work(ms: u32) -> WorkRequest {
    WorkRequest { work_ms: ms }
}

#[tokio::test]
async fn the_remaining_deadline_is_sent_as_grpc_timeout() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let budget = Duration::from_millis(300);
    let (ctx, _cancel) = Context::background().with_timeout(budget);
    client.r#do(request(&ctx, work(0))).await.unwrap();
    let call = server.next_call().await;
    let remaining = call.remaining.expect("the caller's deadline arrived");
    assert!(remaining <= budget, "{remaining:?}");
    assert!(remaining > Duration::from_millis(150), "{remaining:?}");
    // The server's deadline is no later than the caller's, within the
    // rounding of the header (one microsecond) and the transit.
    let slack = Duration::from_millis(5);
    assert!(call.ctx.deadline().unwrap() <= ctx.deadline().unwrap() + slack);
}

#[tokio::test]
async fn an_expired_context_fails_locally_and_sends_nothing() {
    let server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    // The connection is up, so "sends nothing" is not "could not connect".
    client.r#do(work(0)).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    let (expired, _cancel) = Context::background().with_timeout(Duration::ZERO);
    let status = client.r#do(request(&expired, work(0))).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "context deadline exceeded");

    let (cancelled, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let status = client.r#do(request(&cancelled, work(0))).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "context canceled");

    // One more call goes through: the two above would have arrived first.
    client.r#do(work(0)).await.unwrap();
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        2,
        "the server saw a call"
    );
}

#[tokio::test]
async fn cancelling_the_context_resets_the_stream_and_cancels_the_server() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let (ctx, cancel) = Context::background().with_cancel();
    let call = tokio::spawn(async move { client.r#do(request(&ctx, work(10_000))).await });
    let observed = server.next_call().await;
    let server_ctx = observed.ctx.clone();
    let cancelled = Instant::now();
    cancel.cancel();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(cancelled.elapsed() <= PROMPT);
    let seen = observed.spawned_work_ended().await;
    assert!(seen - cancelled <= PROMPT, "took {:?}", seen - cancelled);
    assert_eq!(Ended::of(&server_ctx), Some(Ended::ClientGone));
}

#[tokio::test]
async fn a_deadline_mid_call_is_deadline_exceeded_on_both_ends() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
    let started = Instant::now();
    let status = client.r#do(request(&ctx, work(10_000))).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(150) + PROMPT);
    let observed = server.next_call().await;
    let server_ctx = observed.ctx.clone();
    observed.spawned_work_ended().await;
    // The server's own deadline, or the caller's reset a moment before it.
    assert!(server_ctx.is_done());
}

#[tokio::test]
async fn a_server_stream_ends_when_the_context_is_cancelled() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = ticks(&server.url(), &ctx).await.unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    // The handler has returned its stream long ago: the server's context
    // stays live while the response body streams.
    let server_ctx = server.streams.recv().await.unwrap();
    assert!(!server_ctx.is_done());
    let cancelled = Instant::now();
    cancel.cancel();
    let mut last = None;
    while let Some(item) = tokio::time::timeout(PROMPT, stream.next()).await.unwrap() {
        if let Err(status) = item {
            last = Some(status);
        }
    }
    let status = last.expect("the stream ended with a status");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(cancelled.elapsed() <= PROMPT);
    // The reset reached the server: its stream's context ended, the
    // caller gone.
    tokio::time::timeout(PROMPT, server_ctx.done())
        .await
        .unwrap();
    assert_eq!(Ended::of(&server_ctx), Some(Ended::ClientGone));
}

#[tokio::test]
async fn a_server_stream_ends_at_the_deadline() {
    let server = TestServer::start(ServerLayer::new(Context::background())).await;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(200));
    let mut stream = ticks(&server.url(), &ctx).await.unwrap();
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received >= 2, "{received} ticks before the deadline");
}

#[tokio::test]
async fn values_in_the_context_are_forwarded_as_metadata() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let values = ForwardHeaders::new()
        .with("x-request-id", "r-9")
        .with("baggage", "user=alice")
        .with("x-not-configured", "no");
    let ctx = Context::background().with_value(values);
    client.r#do(request(&ctx, work(0))).await.unwrap();
    let call = server.next_call().await;
    assert_eq!(call.value("x-request-id").as_deref(), Some("r-9"));
    assert_eq!(call.value("baggage").as_deref(), Some("user=alice"));
    // Metadata set on the call itself wins over the context's.
    let mut explicit = request(&ctx, work(0));
    explicit
        .metadata_mut()
        .insert("x-request-id", "explicit".parse().unwrap());
    client.r#do(explicit).await.unwrap();
    assert_eq!(
        server.next_call().await.value("x-request-id").as_deref(),
        Some("explicit")
    );
}

#[tokio::test]
async fn a_call_without_a_context_passes_through() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    server.client().r#do(work(0)).await.unwrap();
    assert_eq!(server.next_call().await.remaining, None);
}
