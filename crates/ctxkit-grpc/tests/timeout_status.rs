//! `grpc-timeout` at the status level, property-tested through the server
//! layer itself (no network): whatever the bytes, the layer answers a clear
//! status or calls the handler with the decoded deadline; it never panics.

use ctxkit::Context;
use ctxkit_grpc::ServerLayer;
use ctxkit_http::deadline_header::TimeoutHeader;
use proptest::prelude::*;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

/// A handler that answers at once with the remaining deadline it saw, in
/// nanoseconds, in the header `x-remaining` (`none` without a deadline).
#[derive(Clone)]
struct Remaining;

impl Service<http::Request<()>> for Remaining {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        let ctx = request.extensions().get::<Context>().expect("a context");
        let remaining = ctx
            .remaining()
            .map_or("none".to_owned(), |r| r.as_nanos().to_string());
        let mut response = http::Response::new(String::new());
        let value = http::HeaderValue::try_from(remaining).unwrap();
        response.headers_mut().insert("x-remaining", value);
        std::future::ready(Ok(response))
    }
}

/// What the layer answers for a request with this `grpc-timeout` value:
/// `Ok(remaining)` when the handler ran, `Err(status)` when the layer
/// answered by itself.
fn answer(layer: &ServerLayer, value: &[u8]) -> Result<Option<Duration>, Status> {
    let mut service = layer.layer(Remaining);
    let mut request = http::Request::new(());
    let value = http::HeaderValue::from_bytes(value).expect("a header value");
    request.headers_mut().insert("grpc-timeout", value);
    let future = pin!(service.call(request));
    let Poll::Ready(Ok(response)) = future.poll(&mut std::task::Context::from_waker(Waker::noop()))
    else {
        panic!("the layer should answer at once");
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Err(status);
    }
    let remaining = response.headers()["x-remaining"].to_str().unwrap();
    Ok((remaining != "none").then(|| Duration::from_nanos(remaining.parse().unwrap())))
}

fn root() -> ServerLayer {
    ServerLayer::new(Context::background())
}

#[test]
fn every_unit_sets_the_deadline() {
    let layer = root();
    for (value, expected) in [
        ("1H", Duration::from_secs(3600)),
        ("2M", Duration::from_secs(120)),
        ("3S", Duration::from_secs(3)),
        ("400m", Duration::from_millis(400)),
        ("500000u", Duration::from_millis(500)),
        ("99999999n", Duration::from_nanos(99_999_999)),
    ] {
        let before = Instant::now();
        let remaining = answer(&layer, value.as_bytes())
            .unwrap()
            .expect("a deadline");
        assert!(remaining <= expected, "{value}: {remaining:?}");
        assert!(
            remaining + before.elapsed() + Duration::from_millis(50) >= expected,
            "{value}"
        );
    }
}

#[test]
fn zero_is_a_deadline_already_passed() {
    let status = answer(&root(), b"0n").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[test]
fn garbage_is_internal_with_a_clear_message() {
    let cases: [(&[u8], &str); 9] = [
        (b"123456789S", "more than 8 digits"),
        (b"10X", "'X' is not a unit"),
        (b"", "the value is empty"),
        (b"-1S", "'-' is not an ASCII digit"),
        (b"+1S", "'+' is not an ASCII digit"),
        (b" 1S", "byte 0x20 is not an ASCII digit"),
        (b"1S\t", "byte 0x09 is not a unit"),
        (b"1.5S", "'.' is not an ASCII digit"),
        (b"\xff1S", "byte 0xff is not an ASCII digit"),
    ];
    for (value, problem) in cases {
        let status = answer(&root(), value).unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{value:?}");
        assert!(
            status.message().contains(problem),
            "{value:?}: {}",
            status.message()
        );
        assert!(status
            .message()
            .starts_with("malformed grpc-timeout header"));
    }
}

#[test]
fn the_server_maximum_clamps_the_longest_value() {
    let layer = root().max_timeout(Duration::from_secs(5));
    let remaining = answer(&layer, b"99999999H").unwrap().unwrap();
    assert!(remaining <= Duration::from_secs(5));
}

proptest! {
    /// Any header value: a decoded deadline no longer than it says, or
    /// INTERNAL naming the header; never a panic.
    #[test]
    fn any_value_gives_a_deadline_or_a_clear_status(value in proptest::collection::vec(any::<u8>(), 0..16)) {
        prop_assume!(http::HeaderValue::from_bytes(&value).is_ok());
        let layer = root().max_timeout(Duration::from_secs(3600));
        match (answer(&layer, &value), TimeoutHeader::GrpcTimeout.decode(&value)) {
            (Ok(remaining), Ok(decoded)) => {
                let remaining = remaining.expect("the maximum at least");
                prop_assert!(remaining <= decoded.min(Duration::from_secs(3600)));
            }
            (Err(status), Ok(decoded)) => {
                prop_assert_eq!(status.code(), Code::DeadlineExceeded);
                prop_assert!(decoded < Duration::from_millis(1));
            }
            (Err(status), Err(error)) => {
                prop_assert_eq!(status.code(), Code::Internal);
                prop_assert_eq!(status.message(), error.to_string());
            }
            (Ok(_), Err(error)) => prop_assert!(false, "accepted a malformed value: {}", error),
        }
    }

    /// What `ClientLayer` sends (the codec's encoding of the remaining
    /// deadline) gives the server a deadline no shorter than the caller's
    /// budget, less the time spent, and longer by at most one unit.
    #[test]
    fn an_encoded_budget_arrives_whole(nanos in 1u64..=3_600_000_000_000) {
        let budget = Duration::from_nanos(nanos);
        let encoded = TimeoutHeader::GrpcTimeout.encode(budget).unwrap();
        let decoded = TimeoutHeader::GrpcTimeout.decode(encoded.as_bytes()).unwrap();
        prop_assert!(decoded >= budget);
        let unit = match encoded.as_bytes().last() {
            Some(b'n') => Duration::from_nanos(1),
            Some(b'u') => Duration::from_micros(1),
            Some(b'm') => Duration::from_millis(1),
            Some(b'S') => Duration::from_secs(1),
            other => panic!("unexpected unit {other:?}"),
        };
        prop_assert!(decoded - budget < unit);
    }
}
