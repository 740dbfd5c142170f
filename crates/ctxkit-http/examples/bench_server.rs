//! A hello-world server for `bench/http.sh`: the same axum handler served
//! bare and under ctxkit-http, so that wrk (HTTP/1.1) and h2load (HTTP/2)
//! measure what the per-request context costs.
//!
//! ```text
//! cargo run --release -p ctxkit-http --example bench_server -- MODE ADDR
//! ```
//!
//! MODE is one of:
//! - `axum`: bare `axum::serve` (the reference);
//! - `server`: `ctxkit_http::Server` (layer, connection contexts, shutdown);
//! - `server-nodelay`: the same with `TCP_NODELAY` on every connection;
//! - `bare`: the hyper-util auto connection loop below, no layer;
//! - `layer`: the same loop with `ContextLayer` around the router;
//! - `axum-layer`: `axum::serve` with `ContextLayer` applied by
//!   `Router::layer`, as an axum application adds it without `Server`.
//!
//! `axum` against `server` is the comparison issue 12 asks for; `bare`
//! and `layer` isolate the layer from the rest of `Server`.
//!
//! It prints `{"listening":"IP:PORT"}` and serves until killed.

use axum::routing::get;
use ctxkit::Context;
use ctxkit_http::{ContextLayer, Server};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer;

fn app() -> axum::Router {
    axum::Router::new().route("/", get(|| async { "Hello, World!" }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_server axum|axum-layer|server|server-nodelay|bare|layer ADDR";
    let (Some(mode), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&addr).await?;
    println!(r#"{{"listening":"{}"}}"#, listener.local_addr()?);
    match mode.as_str() {
        "axum" => axum::serve(listener, app()).await,
        "axum-layer" => {
            let layered = app().layer(ContextLayer::new(Context::background()));
            axum::serve(listener, layered).await
        }
        "bare" => serve_loop(listener, app()).await,
        "layer" => {
            let layered = ContextLayer::new(Context::background()).layer(app());
            serve_loop(listener, layered).await
        }
        "server" | "server-nodelay" => {
            let layer = ContextLayer::new(Context::background());
            let server = Server::new(layer).tcp_nodelay(mode == "server-nodelay");
            server.serve(listener, app()).await.map(drop)
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// Accepts and serves each connection with hyper-util's auto builder
/// (HTTP/1.1 and h2c), as `axum::serve` does (`TCP_NODELAY` off), without
/// shutdown handling.
async fn serve_loop<S, B>(listener: TcpListener, service: S) -> std::io::Result<()>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
