//! What `ContextLayer` adds to one request, in process: the same
//! hello-world service called bare and under the layer (with and without
//! a deadline header), the response body read to its end and dropped.
//! `bench/http.sh` measures the same over TCP with wrk and h2load.
//!
//! For instruction counts, `LAYER_ONLY=bare|layer|layer_grpc_timeout
//! LAYER_REQUESTS=N` runs that case N times and nothing else, without
//! criterion: run it under `valgrind --tool=callgrind` with two values of
//! N and divide the difference in instructions by the difference in N
//! (start-up cancels out).

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use ctxkit::Context;
use ctxkit_http::ContextLayer;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use tower::{Layer, Service};

type Request = http::Request<()>;

fn hello(_: Request) -> std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(http::Response::new(Full::new(Bytes::from_static(
        b"Hello, World!",
    )))))
}

/// Polls a future that never waits (the services here never do).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("nothing here waits"),
    }
}

/// One request: call, response, body to its end, everything dropped.
fn serve<S, B>(service: &mut S, request: Request) -> usize
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes, Error = Infallible>,
{
    let response = now(service.call(request)).unwrap();
    now(response.into_body().collect())
        .unwrap()
        .to_bytes()
        .len()
}

fn request(deadline: bool) -> Request {
    let mut builder = http::Request::get("/");
    if deadline {
        builder = builder.header("grpc-timeout", "5S");
    }
    builder.body(()).unwrap()
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_request");
    let mut bare = tower::service_fn(hello);
    group.bench_function("bare", |b| b.iter(|| serve(&mut bare, request(false))));
    let (root, _cancel) = Context::background().with_cancel();
    let mut layered = ContextLayer::new(root).layer(tower::service_fn(hello));
    group.bench_function("layer", |b| b.iter(|| serve(&mut layered, request(false))));
    group.bench_function("layer_grpc_timeout", |b| {
        b.iter(|| serve(&mut layered, request(true)))
    });
    group.finish();
}

/// The `LAYER_ONLY` run: one case, a fixed number of requests.
fn only(case: &str, requests: usize) {
    let (root, _cancel) = Context::background().with_cancel();
    let mut bare = tower::service_fn(hello);
    let mut layered = ContextLayer::new(root).layer(tower::service_fn(hello));
    let mut bytes = 0;
    for _ in 0..requests {
        bytes += match case {
            "bare" => serve(&mut bare, request(false)),
            "layer" => serve(&mut layered, request(false)),
            "layer_grpc_timeout" => serve(&mut layered, request(true)),
            _ => panic!("LAYER_ONLY={case}: expected bare, layer or layer_grpc_timeout"),
        };
    }
    assert_eq!(bytes, requests * b"Hello, World!".len());
}

criterion_group!(benches, layer);

fn main() {
    if let Ok(case) = std::env::var("LAYER_ONLY") {
        let requests = std::env::var("LAYER_REQUESTS").map_or(100_000, |n| {
            n.parse().expect("LAYER_REQUESTS: a number of requests")
        });
        return only(&case, requests);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
