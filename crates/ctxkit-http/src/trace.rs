//! A [`tracing`] span for every request (feature `tracing`).
//!
//! [`ContextLayer`](crate::ContextLayer) opens an INFO span named
//! `http_request` for every request, with the fields
//!
//! | field | value |
//! |---|---|
//! | `http.request.method` | the request's method |
//! | `url.path` | the request's path |
//! | `request_id` | the `x-request-id` header, when the request has one |
//! | `client.address` | the peer's address ([`PeerAddr`]), under [`Server`](crate::Server) |
//! | `otel.kind` | `"server"` (read by the `tracing-opentelemetry` bridge) |
//!
//! The handler's future runs in the span (so [`tracing::Span::current`] is
//! the request's span, and events a handler emits belong to it), and the
//! span is a value of the request's context: a handler, or any code the
//! context reaches, gets it with `ctx.value::<tracing::Span>()`, e.g. to
//! instrument a task it spawns. When no subscriber wants the span (none is
//! installed, or its filter rejects the span), the context holds none and
//! the request pays for no value.
//!
//! ```
//! use ctxkit::Context;
//! use ctxkit_http::{ContextLayer, RequestContext};
//! use tracing::Instrument;
//!
//! async fn handler(ctx: RequestContext) -> &'static str {
//!     tracing::info!("working"); // recorded inside the request's span
//!     let span = ctx.value::<tracing::Span>().cloned().unwrap_or_else(tracing::Span::none);
//!     assert_eq!(span.id(), tracing::Span::current().id());
//!     // Spawned work does not inherit the span by itself:
//!     tokio::spawn(async { tracing::info!("in the background") }.instrument(span));
//!     "ok"
//! }
//!
//! let app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
//! let app = tower::ServiceBuilder::new()
//!     .layer(ContextLayer::new(Context::background()))
//!     .service(app);
//! # let _ = app;
//! ```
//!
//! With no `tracing` feature the layer creates no span and stores nothing:
//! the hooks compile to nothing.

use crate::PeerAddr;
use ctxkit::Context;
use http::Request;
use tracing::field::{display, Empty};
use tracing::Span;

/// The span of `request`, whose context (with the connection's values) is
/// `ctx`.
pub(crate) fn request_span<B>(request: &Request<B>, ctx: &Context) -> Span {
    let span = tracing::info_span!(
        "http_request",
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        request_id = Empty,
        client.address = Empty,
        otel.kind = "server",
    );
    if !span.is_disabled() {
        let request_id = request.headers().get("x-request-id");
        if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
            span.record("request_id", id);
        }
        if let Some(peer) = PeerAddr::of(ctx) {
            span.record("client.address", display(peer));
        }
    }
    span
}
