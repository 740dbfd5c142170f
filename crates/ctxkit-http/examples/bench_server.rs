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
//! - `bare`: the hyper-util auto connection loop below, no layer;
//! - `layer`: the same loop with `ContextLayer` around the router;
//! - `server`: `ctxkit_http::Server` (layer, connection contexts, shutdown).
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
    let usage = "usage: bench_server axum|bare|layer|server ADDR";
    let (Some(mode), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&addr).await?;
    println!(r#"{{"listening":"{}"}}"#, listener.local_addr()?);
    match mode.as_str() {
        "axum" => axum::serve(listener, app()).await,
        "bare" => serve_loop(listener, app()).await,
        "layer" => {
            let layered = ContextLayer::new(Context::background()).layer(app());
            serve_loop(listener, layered).await
        }
        "server" => {
            let layer = ContextLayer::new(Context::background());
            Server::new(layer).serve(listener, app()).await.map(drop)
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// Accepts and serves each connection with hyper-util's auto builder
/// (HTTP/1.1 and h2c), as `axum::serve` does, without shutdown handling.
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
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
