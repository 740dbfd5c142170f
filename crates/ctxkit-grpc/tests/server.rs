//! The server layer over real TCP: deadlines from `grpc-timeout` and the
//! server maximum, cancellation when the caller resets or disconnects,
//! values from metadata, and grpc-go's statuses.

mod support;

use ctxkit::provenance::Origin;
use ctxkit::Context;
use ctxkit_grpc::demo::WorkRequest;
use ctxkit_grpc::{Ended, Propagation, ServerLayer};
use std::time::{Duration, Instant};
use support::{raw_call, raw_connection, raw_request, TestServer, IGNORE_CONTEXT, PROMPT};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

fn with_metadata(work_ms: u32, metadata: &[(&'static str, &str)]) -> Request<WorkRequest> {
    let mut request = Request::new(WorkRequest { work_ms });
    for (name, value) in metadata {
        let value = MetadataValue::try_from(*value).unwrap();
        request.metadata_mut().append(*name, value);
    }
    request
}

#[tokio::test]
async fn grpc_timeout_becomes_the_handlers_deadline() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let reply = client
        .r#do(with_metadata(0, &[("grpc-timeout", "300m")]))
        .await
        .unwrap();
    let call = server.next_call().await;
    let remaining = call.remaining.expect("a deadline");
    assert!(remaining <= Duration::from_millis(300), "{remaining:?}");
    assert!(remaining > Duration::from_millis(200), "{remaining:?}");
    assert!((0..=300).contains(&reply.into_inner().remaining_ms));
    // Without a header and without a maximum: no deadline.
    client.r#do(with_metadata(0, &[])).await.unwrap();
    assert_eq!(server.next_call().await.remaining, None);
}

#[tokio::test]
async fn the_server_maximum_caps_the_callers_deadline() {
    let layer = ServerLayer::new(Context::background()).max_timeout(Duration::from_millis(200));
    let mut server = TestServer::start(layer).await;
    let mut client = server.client();
    for metadata in [
        &[][..],
        &[("grpc-timeout", "10S")][..],
        &[("grpc-timeout", "99999999H")][..],
    ] {
        client.r#do(with_metadata(0, metadata)).await.unwrap();
        let remaining = server.next_call().await.remaining.expect("the maximum");
        assert!(
            remaining <= Duration::from_millis(200),
            "{metadata:?}: {remaining:?}"
        );
    }
    // A shorter caller deadline wins.
    client
        .r#do(with_metadata(0, &[("grpc-timeout", "50m")]))
        .await
        .unwrap();
    let remaining = server.next_call().await.remaining.unwrap();
    assert!(remaining <= Duration::from_millis(50), "{remaining:?}");
}

#[tokio::test]
async fn the_longest_grpc_timeout_is_accepted_without_overflow() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    client
        .r#do(with_metadata(0, &[("grpc-timeout", "99999999H")]))
        .await
        .unwrap();
    let remaining = server.next_call().await.remaining;
    assert!(remaining.is_none_or(|r| r > Duration::from_secs(3600 * 24 * 365)));
}

/// Statuses as the server sends them, read over a raw HTTP/2 connection:
/// tonic's channel would answer first with its own timer.
#[tokio::test]
async fn a_deadline_that_passes_while_the_handler_works_is_deadline_exceeded() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    // The handler returns its context's error.
    let status = raw_call(server.address, &[("grpc-timeout", "100m")], 5_000).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "context deadline exceeded");
    server.next_call().await.spawned_work_ended().await;
    // The handler ignores its context and answers OK after its deadline:
    // the deadline passed first, so the call is DEADLINE_EXCEEDED, as with
    // grpc-go, and tonic's own "Timeout expired" (CANCELLED) never shows.
    for _ in 0..5 {
        let status = raw_call(
            server.address,
            &[("grpc-timeout", "50m")],
            IGNORE_CONTEXT + 300,
        )
        .await;
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        let call = server.next_call().await;
        assert_eq!(call.ctx.err(), Some(ctxkit::Error::DeadlineExceeded));
    }
}

/// Through `ClientLayer`, the caller sees DEADLINE_EXCEEDED too, not
/// tonic's "Timeout expired".
#[tokio::test]
async fn a_caller_with_a_context_deadline_sees_deadline_exceeded() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    for work_ms in [5_000, IGNORE_CONTEXT + 300] {
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(80));
        let request = ctxkit_grpc::request(&ctx, WorkRequest { work_ms });
        let status = client.r#do(request).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        let _ = server.next_call().await;
    }
}

#[tokio::test]
async fn a_server_maximum_without_caller_deadline_ends_in_deadline_exceeded() {
    let layer = ServerLayer::new(Context::background()).max_timeout(Duration::from_millis(100));
    let mut server = TestServer::start(layer).await;
    let status = server
        .client()
        .r#do(with_metadata(IGNORE_CONTEXT + 400, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        server.next_call().await.ctx.err(),
        Some(ctxkit::Error::DeadlineExceeded)
    );
}

#[tokio::test]
async fn cancelling_the_root_cancels_calls_in_flight() {
    let (root, cancel_root) = Context::background().with_cancel();
    let mut server = TestServer::start(ServerLayer::new(root)).await;
    let mut client = server.client();
    let call = tokio::spawn(async move { client.r#do(with_metadata(5_000, &[])).await });
    let observed = server.next_call().await;
    cancel_root.cancel();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(observed.ctx.err(), Some(ctxkit::Error::Canceled));
}

#[tokio::test]
async fn a_call_that_completes_ends_its_context_with_completed() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    server.client().r#do(with_metadata(0, &[])).await.unwrap();
    let call = server.next_call().await;
    let ctx = call.ctx.clone();
    call.spawned_work_ended().await;
    assert_eq!(Ended::of(&ctx), Some(Ended::Completed));
}

#[tokio::test]
async fn a_caller_that_resets_the_stream_cancels_the_handlers_spawned_work() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    // A caller that gives up drops its call: tonic/hyper send RST_STREAM.
    let call = tokio::spawn(async move { client.r#do(with_metadata(10_000, &[])).await });
    let observed = server.next_call().await;
    let ctx = observed.ctx.clone();
    let reset = Instant::now();
    call.abort();
    let seen = observed.spawned_work_ended().await;
    assert!(seen - reset <= PROMPT, "took {:?}", seen - reset);
    assert_eq!(ctx.err(), Some(ctxkit::Error::Canceled));
    assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    let who = ctx.provenance().expect("ended");
    assert_eq!(who.origin(), Origin::Integration("client gone"), "{who}");
}

#[tokio::test]
async fn a_dropped_connection_cancels_the_handlers_spawned_work() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let (mut sender, socket) = raw_connection(server.address).await;
    let _response = tokio::spawn(sender.send_request(raw_request(server.address, &[], 10_000)));
    let observed = server.next_call().await;
    let ctx = observed.ctx.clone();
    let dropped = Instant::now();
    socket.shutdown(std::net::Shutdown::Both).unwrap();
    let seen = observed.spawned_work_ended().await;
    assert!(seen - dropped <= PROMPT, "took {:?}", seen - dropped);
    assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    let who = ctx.provenance().expect("ended");
    assert_eq!(who.origin(), Origin::Integration("client gone"), "{who}");
}

/// Malformed `grpc-timeout` values get grpc-go's answer, INTERNAL with a
/// message naming the header and the expected format, and the handler is
/// not called; the server goes on serving.
#[tokio::test]
async fn malformed_grpc_timeouts_get_a_clear_status() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let cases = [
        ("123456789m", "more than 8 digits"),
        ("5X", "'X' is not a unit"),
        ("", "the value is empty"),
        ("-5S", "'-' is not an ASCII digit"),
        ("+5S", "'+' is not an ASCII digit"),
        ("5 S", "byte 0x20 is not an ASCII digit"),
        ("5S ", "byte 0x20 is not a unit"),
        (" 5S", "byte 0x20 is not an ASCII digit"),
        ("1 m", "byte 0x20 is not an ASCII digit"),
        ("m", "no digits before the unit"),
        ("50", "the unit is missing"),
    ];
    for (value, problem) in cases {
        let status = client
            .r#do(with_metadata(0, &[("grpc-timeout", value)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{value:?}: {status:?}");
        assert!(
            status.message().contains("malformed grpc-timeout header")
                && status.message().contains(problem)
                && status.message().contains("expected 1 to 8 ASCII digits"),
            "{value:?}: {}",
            status.message()
        );
    }
    assert!(server.calls.try_recv().is_err(), "no handler ran");
    client
        .r#do(with_metadata(0, &[("grpc-timeout", "1S")]))
        .await
        .unwrap();
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn values_are_restored_from_metadata() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let metadata = [
        ("x-request-id", "r-42"),
        ("traceparent", TRACEPARENT),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("baggage", "user=alice"),
        ("x-not-propagated", "1"),
    ];
    server
        .client()
        .r#do(with_metadata(0, &metadata))
        .await
        .unwrap();
    let call = server.next_call().await;
    assert_eq!(call.value("x-request-id").as_deref(), Some("r-42"));
    assert_eq!(call.value("traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(
        call.value("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );
    assert_eq!(call.value("baggage").as_deref(), Some("user=alice"));
    assert_eq!(call.value("x-not-propagated"), None);
}

#[tokio::test]
async fn the_list_of_restored_values_is_configurable() {
    let propagation = Propagation::none().with(http::HeaderName::from_static("x-tenant"));
    let layer = ServerLayer::new(Context::background()).propagation(propagation);
    let mut server = TestServer::start(layer).await;
    let metadata = [("x-request-id", "r-1"), ("x-tenant", "acme")];
    server
        .client()
        .r#do(with_metadata(0, &metadata))
        .await
        .unwrap();
    let call = server.next_call().await;
    assert_eq!(call.value("x-tenant").as_deref(), Some("acme"));
    assert_eq!(call.value("x-request-id"), None);
}

/// Garbage metadata: a 10 KB request id, malformed W3C headers, oversized
/// baggage. Each value is dropped or held to its limits; the call and the
/// ones after it are served.
#[tokio::test]
async fn garbage_metadata_is_dropped_and_the_server_keeps_serving() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let huge_id = "x".repeat(10 * 1024);
    let many_members: Vec<String> = (0..100).map(|i| format!("k{i}=v{i}")).collect();
    let many_members = many_members.join(",");
    let cases: Vec<Vec<(&'static str, &str)>> = vec![
        vec![("x-request-id", &huge_id)],
        vec![("traceparent", "00-not-a-trace-01"), ("tracestate", "a=1")],
        vec![(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        vec![("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],
        vec![("baggage", "=no-key"), ("tracestate", "UPPER=1")],
        vec![("x-request-id", "two"), ("x-request-id", "ids")],
    ];
    for metadata in &cases {
        client.r#do(with_metadata(0, metadata)).await.unwrap();
        let call = server.next_call().await;
        for name in ["x-request-id", "traceparent", "tracestate", "baggage"] {
            assert_eq!(call.value(name), None, "{name} kept from {metadata:?}");
        }
    }
    client
        .r#do(with_metadata(0, &[("baggage", &many_members)]))
        .await
        .unwrap();
    let baggage = server.next_call().await.value("baggage").unwrap();
    assert_eq!(baggage.split(',').count(), 64);
    assert!(baggage.starts_with("k0=v0,k1=v1,"));
    let big_value = "v".repeat(3000);
    let big = format!("a={big_value},b={big_value},c={big_value}");
    client
        .r#do(with_metadata(0, &[("baggage", &big)]))
        .await
        .unwrap();
    let baggage = server.next_call().await.value("baggage").unwrap();
    assert!(baggage.len() <= 8192);
    assert_eq!(baggage.split(',').count(), 2);
    // Still serving, values and all.
    client
        .r#do(with_metadata(0, &[("x-request-id", "after")]))
        .await
        .unwrap();
    assert_eq!(
        server.next_call().await.value("x-request-id").as_deref(),
        Some("after")
    );
}

/// A proto-level check that a request id too large for the transport is a
/// clear status, not a hang or a crash, and that the server serves on.
#[tokio::test]
async fn metadata_beyond_the_transport_limit_is_a_clear_status() {
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let mut client = server.client();
    let enormous = "x".repeat(64 * 1024);
    let result = client
        .r#do(with_metadata(0, &[("x-request-id", &enormous)]))
        .await;
    if let Err(status) = &result {
        assert_ne!(status.code(), Code::Ok);
        assert!(!status.message().is_empty());
    }
    let mut client = server.client();
    client.r#do(with_metadata(0, &[])).await.unwrap();
    let _ = server.next_call().await;
}
