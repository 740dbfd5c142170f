//! A [`ctxkit::Context`] for every HTTP request, and clients that pass the
//! deadline on.
//!
//! In Go, `http.Request.Context()` ends when the client goes away, when an
//! HTTP/2 stream is reset and when the handler returns; here each request
//! gets a real [`ctxkit::Context`] that ends in one of four ways, and says
//! which:
//!
//! | how it ended | `ctx.err()` | `ctx.cause()` downcasts to |
//! |---|---|---|
//! | the client closed the connection / reset the stream | `Canceled` | [`Ended::ClientGone`] |
//! | the response body was fully sent | `Canceled` | [`Ended::Completed`] |
//! | the caller's deadline header or the server's maximum | `DeadlineExceeded` | `ctxkit::Error::DeadlineExceeded` |
//! | graceful shutdown, after the grace period | `Canceled` | [`Ended::Shutdown`] |
//!
//! - [`ContextLayer`]: the tower layer that makes the request contexts
//!   (axum, hyper's `service_fn`, any tower `Service`); the context is in the
//!   request's extensions, and axum handlers take it as a [`RequestContext`].
//! - [`Server`]: serves HTTP/1.1 and h2c on a tokio `TcpListener` with the
//!   context tree root → connection ([`PeerAddr`]) → request, and a
//!   graceful shutdown that never hangs ([`ShutdownReport`]).
//! - [`client`]: outgoing requests that send the remaining deadline
//!   (`grpc-timeout`, `connect-timeout-ms`) and [`ForwardHeaders`]
//!   downstream and stop with the context's error.
//! - [`deadline_header`]: the codec of the two deadline headers, shared with
//!   `ctxkit-grpc`.
//!
//! # Features
//!
//! - `server` (default): [`ContextLayer`], [`Server`], [`RequestContext`].
//! - `axum` (default): [`RequestContext`] as an axum extractor.
//! - `client` (default): the tower client layer [`client::PropagateLayer`].
//! - `reqwest`: `send_ctx` for reqwest (no TLS backend is enabled here; no
//!   OpenSSL).
//! - `tracing`: a `tracing` span for every request (module `trace`).
//! - `opentelemetry`: OpenTelemetry's trace context and baggage through the
//!   layer and the clients (module `otel`).
//!
//! With no features, only [`deadline_header`] is built.
//!
//! # Tracing and OpenTelemetry
//!
//! With feature `tracing`, [`ContextLayer`] opens an INFO span for every
//! request (method, path, `x-request-id`, peer address), runs the handler's
//! future in it and keeps it in the request's context, where a handler
//! finds it as `ctx.value::<tracing::Span>()` (module `trace`).
//!
//! With feature `opentelemetry`, the layer extracts the caller's
//! `opentelemetry::Context` (W3C `traceparent`, `tracestate` and `baggage`,
//! read by the global propagator or the one given to
//! `ContextLayer::propagator`) and keeps it in the request's context as
//! `ctx.value::<opentelemetry::Context>()`; the client helpers (`send_ctx`,
//! `client::PropagateLayer`) send the one they find in their context, so a
//! trace goes on through a ctxkit service, and through `ctxkit-grpc`'s
//! layers too (module `otel`: the `Injector` and `Extractor` over
//! `http::HeaderMap`).
//!
//! Both are off by default; off, they add no field, no value and no work.
//!
//! # Detecting a client that went away
//!
//! - HTTP/2: a `RST_STREAM` or a closed connection makes hyper drop the
//!   request's future or body: the context ends with `ClientGone` then.
//! - HTTP/1.1: while a handler runs, hyper keeps reading the connection
//!   (once the request body has been read in full, as it has for GET) and
//!   drops the request at end of file, even if the handler neither reads
//!   nor writes. A request whose body the handler has not read is noticed
//!   when the handler reads it or writes the response.
//!
//! # A server and a client
//!
//! The caller's deadline reaches the handler's context, and a done context
//! sends nothing (the guide's HTTP example, `docs/guide.md` section 8 in
//! the repository):
//!
//! ```
//! use ctxkit::{Context, Error};
//! use ctxkit_http::client::RequestBuilderExt;
//! use ctxkit_http::{ContextLayer, RequestContext, Server};
//! use std::time::Duration;
//!
//! async fn work(ctx: RequestContext) -> String {
//!     // The caller's budget arrived as a header: the request context has it.
//!     let left = ctx.remaining().expect("the caller sent a deadline");
//!     match ctx.run(tokio::time::sleep(Duration::from_millis(10))).await {
//!         Ok(()) => format!("done, {} ms were left", left.as_millis()),
//!         Err(err) => format!("stopped: {err}"),
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let (root, shutdown) = Context::background().with_cancel(); // or signal::notify_context_tokio
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("http://{}/work", listener.local_addr()?);
//!     let app = axum::Router::new().route("/work", axum::routing::get(work));
//!     let server = tokio::spawn(
//!         Server::new(ContextLayer::new(root).max_timeout(Duration::from_secs(10)))
//!             .grace(Duration::from_secs(1))
//!             .serve(listener, app),
//!     );
//!
//!     // A caller with a 2 s budget: the server's request context gets it.
//!     let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
//!     let response = reqwest::Client::new().get(&url).send_ctx(&ctx).await?;
//!     let body = response.text().await?;
//!     assert!(body.starts_with("done"), "{body}");
//!
//!     // A caller whose context is already done sends nothing.
//!     let (ctx, cancel) = Context::background().with_cancel();
//!     cancel.cancel();
//!     let err = reqwest::Client::new().get(&url).send_ctx(&ctx).await.unwrap_err();
//!     assert_eq!(err.context_error(), Some(Error::Canceled));
//!
//!     shutdown.cancel(); // graceful shutdown: stop accepting, drain, report
//!     let report = server.await??;
//!     assert_eq!(report.cancelled, 0);
//!     Ok(())
//! }
//! ```

#![deny(missing_docs)]

pub mod deadline_header;

#[cfg(feature = "server")]
mod ended;
#[cfg(any(feature = "server", feature = "client"))]
mod forward;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod telemetry;

#[cfg(feature = "opentelemetry")]
pub mod otel;
#[cfg(feature = "tracing")]
pub mod trace;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub use ended::Ended;
#[cfg(any(feature = "server", feature = "client"))]
pub use forward::{ForwardHeaders, DEFAULT_FORWARDED};
#[cfg(feature = "server")]
pub use server::{
    ContextBody, ContextLayer, ContextService, MalformedDeadline, MissingContext, PeerAddr,
    RequestContext, ResponseFuture, Server, ShutdownReport,
};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
