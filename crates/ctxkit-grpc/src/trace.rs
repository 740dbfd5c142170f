//! A [`tracing`] span for every call (feature `tracing`).
//!
//! [`ServerLayer`](crate::ServerLayer) opens an INFO span named `grpc_call`
//! for every call, with the fields
//!
//! | field | value |
//! |---|---|
//! | `rpc.system` | `"grpc"` |
//! | `rpc.service` | the service's full name, e.g. `ctxkit.demo.v1.Work` |
//! | `rpc.method` | the method's name, e.g. `Do` |
//! | `request_id` | the `x-request-id` metadata, when the call has one |
//! | `client.address` | the caller's address, under `tonic::transport::Server` |
//! | `otel.kind` | `"server"` (read by the `tracing-opentelemetry` bridge) |
//!
//! The handler runs in the span (so [`tracing::Span::current`] is the
//! call's span), and the span is a value of the call's context: a handler
//! gets it with `request.context().value::<tracing::Span>()`, e.g. to
//! instrument a task it spawns. When no subscriber wants the span (none is
//! installed, or its filter rejects the span), the context holds none and
//! the call pays for no value.
//!
//! ```
//! use ctxkit_grpc::demo::{WorkReply, WorkRequest};
//! use ctxkit_grpc::RequestExt;
//! use tonic::{Request, Response, Status};
//! use tracing::Instrument;
//!
//! async fn r#do(request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
//!     tracing::info!(work_ms = request.get_ref().work_ms, "working"); // inside the call's span
//!     let ctx = request.context();
//!     let span = ctx.value::<tracing::Span>().cloned().unwrap_or_else(tracing::Span::none);
//!     // Spawned work does not inherit the span by itself:
//!     tokio::spawn(async { tracing::info!("in the background") }.instrument(span));
//!     Ok(Response::new(WorkReply::default()))
//! }
//! # let _ = r#do;
//! ```
//!
//! With no `tracing` feature the layer creates no span and stores nothing:
//! the hooks compile to nothing.

use tracing::field::{display, Empty};
use tracing::Span;

/// The span of the call `request`.
pub(crate) fn call_span<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    // `/package.Service/Method`
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .unwrap_or(("", path));
    let span = tracing::info_span!(
        "grpc_call",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        request_id = Empty,
        client.address = Empty,
        otel.kind = "server",
    );
    if !span.is_disabled() {
        let request_id = request.headers().get("x-request-id");
        if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
            span.record("request_id", id);
        }
        let connection = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>();
        if let Some(peer) = connection.and_then(|connection| connection.remote_addr()) {
            span.record("client.address", display(peer));
        }
    }
    span
}
