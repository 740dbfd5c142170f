//! Deadlines from the caller's headers (grpc-timeout, connect-timeout-ms)
//! and from the server's maximum, over HTTP/1.1 and HTTP/2; malformed and
//! extreme header values.

mod common;

use axum::routing::get;
use common::*;
use ctxkit::Error;
use ctxkit_http::{Ended, MalformedDeadline, RequestContext};
use std::time::{Duration, Instant};

/// Reports the budget it was given, then waits for its context to end and
/// reports how (and after how long).
fn app() -> axum::Router {
    axum::Router::new()
        .route(
            "/budget",
            get(|ctx: RequestContext| async move {
                let budget = ctx.remaining().map_or(-1, |left| left.as_millis() as i64);
                format!("{budget}")
            }),
        )
        .route(
            "/wait",
            get(|ctx: RequestContext| async move {
                let started = Instant::now();
                let error = ctx.done().await;
                let cause = ctx.cause().unwrap();
                assert_eq!(
                    cause.downcast_ref::<Error>(),
                    Some(&Error::DeadlineExceeded)
                );
                assert_eq!(Ended::of(&ctx), None);
                format!("{error} {}", started.elapsed().as_millis())
            }),
        )
}

/// The milliseconds a `/wait` request ran, from its body.
fn waited(body: &str) -> u64 {
    let (error, ms) = body.rsplit_once(' ').unwrap();
    assert_eq!(error, "context deadline exceeded");
    ms.parse().unwrap()
}

#[tokio::test]
async fn each_deadline_header_and_the_server_maximum_end_the_request() {
    let server = TestServer::start_cancellable(
        |layer| layer.max_timeout(Duration::from_millis(600)),
        Duration::from_secs(1),
        app(),
    )
    .await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        let cases: [(&[(&str, &str)], u64); 4] = [
            (&[("grpc-timeout", "200m")], 200),
            (&[("grpc-timeout", "200000u")], 200),
            (&[("connect-timeout-ms", "200")], 200),
            (&[], 600), // the server's maximum alone
        ];
        for (headers, expected) in cases {
            let (status, body) = client.fetch("/wait", headers).await;
            assert_eq!(status, 200, "{protocol:?} {headers:?}: {body}");
            let ms = waited(&body);
            // Never early; late by no more than a busy machine explains.
            assert!(
                ms + 50 >= expected && ms < expected + 1500,
                "{protocol:?} {headers:?}: ended after {ms} ms, expected {expected}"
            );
        }
    }
}

#[tokio::test]
async fn the_earlier_of_the_header_and_the_maximum_wins_and_huge_values_are_clamped() {
    let max = Duration::from_millis(800);
    let server = TestServer::start_cancellable(
        |layer| layer.max_timeout(max),
        Duration::from_secs(1),
        app(),
    )
    .await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        for (header, value) in [
            ("grpc-timeout", "99999999H"),
            ("grpc-timeout", "99999999S"),
            ("connect-timeout-ms", "9999999999"),
            ("grpc-timeout", "5S"),
        ] {
            let (status, body) = client.fetch("/budget", &[(header, value)]).await;
            assert_eq!(status, 200, "{header}: {value}: {body}");
            let budget: i64 = body.parse().unwrap();
            assert!(
                (0..=800).contains(&budget),
                "{header}: {value} gave {budget} ms"
            );
        }
        let (_, body) = client
            .fetch("/budget", &[("connect-timeout-ms", "300")])
            .await;
        let budget: i64 = body.parse().unwrap();
        assert!(
            (0..=300).contains(&budget),
            "300 ms asked, {budget} ms given"
        );
    }
}

#[tokio::test]
async fn without_a_maximum_the_longest_values_do_not_overflow() {
    let server = TestServer::start_cancellable(|layer| layer, Duration::from_secs(1), app()).await;
    let mut client = Connected::open(server.addr, Protocol::Http1).await;
    let (status, body) = client
        .fetch("/budget", &[("grpc-timeout", "99999999H")])
        .await;
    assert_eq!(status, 200);
    assert!(body.parse::<i64>().unwrap() > 1_000_000_000, "{body}");
    let (_, body) = client.fetch("/budget", &[]).await;
    assert_eq!(body, "-1", "no header, no maximum: no deadline");
}

/// Values that are not in their header's format, and what the 400 says.
const MALFORMED: [(&str, &str, &str); 14] = [
    ("grpc-timeout", "123456789m", "more than 8 digits"),
    ("grpc-timeout", "10x", "'x' is not a unit"),
    ("grpc-timeout", "10s", "'s' is not a unit"),
    ("grpc-timeout", "10", "the unit is missing"),
    ("grpc-timeout", "m", "no digits before the unit"),
    ("grpc-timeout", "-5S", "'-' is not an ASCII digit"),
    ("grpc-timeout", "+5S", "'+' is not an ASCII digit"),
    ("grpc-timeout", "1 0m", "byte 0x20 is not an ASCII digit"),
    ("grpc-timeout", "", "the value is empty"),
    ("connect-timeout-ms", "12345678901", "more than 10 digits"),
    ("connect-timeout-ms", "-5", "'-' is not an ASCII digit"),
    ("connect-timeout-ms", "1.5", "'.' is not an ASCII digit"),
    (
        "connect-timeout-ms",
        "5 0",
        "byte 0x20 is not an ASCII digit",
    ),
    ("connect-timeout-ms", "", "the value is empty"),
];

#[tokio::test]
async fn malformed_deadline_headers_get_a_400_that_names_the_header_and_the_format() {
    let server = TestServer::start_cancellable(|layer| layer, Duration::from_secs(1), app()).await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        for (header, value, problem) in MALFORMED {
            let (status, body) = client.fetch("/budget", &[(header, value)]).await;
            assert_eq!(status, 400, "{protocol:?} {header}: {value:?}: {body}");
            assert!(
                body.starts_with(&format!("malformed {header} header: ")),
                "{body}"
            );
            assert!(body.contains(problem), "{body} should say {problem}");
            assert!(
                body.contains("expected 1 to "),
                "{body} should give the format"
            );
        }
    }
}

#[tokio::test]
async fn malformed_deadline_headers_can_be_ignored() {
    let server = TestServer::start_cancellable(
        |layer| layer.on_malformed_deadline(MalformedDeadline::Ignore),
        Duration::from_secs(1),
        app(),
    )
    .await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        for (header, value, _) in MALFORMED {
            let (status, body) = client.fetch("/budget", &[(header, value)]).await;
            assert_eq!(
                (status.as_u16(), body.as_str()),
                (200, "-1"),
                "{header}: {value:?}"
            );
        }
        // A good value next to a bad one still counts.
        let headers = [("grpc-timeout", "1x"), ("connect-timeout-ms", "500")];
        let (_, body) = client.fetch("/budget", &headers).await;
        assert!((0..=500).contains(&body.parse::<i64>().unwrap()), "{body}");
    }
}
