//! What `ContextLayer` adds to one request, in process: the same
//! hello-world service called bare and under the layer (with and without
//! a deadline header), the response body read to its end and dropped.
//! `bench/http.sh` measures the same over TCP with wrk and h2load.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group!(benches, layer);
criterion_main!(benches);
