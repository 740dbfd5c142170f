//! One context tree across gRPC services: deadlines, cancellation and
//! request-scoped values over [tonic], the way grpc-go carries them, and
//! interoperable with any other gRPC implementation.
//!
//! - [`ServerLayer`], a layer for [`tonic::transport::Server`], gives every
//!   call a [`ctxkit::Context`] derived from a root, in the request's
//!   extensions ([`RequestExt::context`]). Its deadline is the earlier of
//!   the caller's `grpc-timeout` and the server's maximum; it is cancelled,
//!   with the cause [`Ended::ClientGone`], when the caller resets the stream
//!   or the connection drops; it carries the caller's `x-request-id`, W3C
//!   `traceparent`, `tracestate` and `baggage` as [`ForwardHeaders`]. A call
//!   whose context ended first ends with `DEADLINE_EXCEEDED` or `CANCELLED`,
//!   as the context's `err()` says.
//! - [`ClientLayer`], around a [`tonic::transport::Channel`], makes every
//!   call issued with a context ([`RequestExt::with_context`], [`request`])
//!   send the remaining deadline as `grpc-timeout`, fail locally when the
//!   context is already done (nothing is sent), reset the stream when the
//!   context ends, and forward the configured values as metadata.
//! - [`IntoStatus`] turns a context error into the status grpc-go would
//!   send.
//!
//! A call that crosses three services, all in one process here:
//!
//! ```
//! use ctxkit::Context;
//! use ctxkit_grpc::demo::work_client::WorkClient;
//! use ctxkit_grpc::demo::work_server::{Work, WorkServer};
//! use ctxkit_grpc::demo::{WorkReply, WorkRequest};
//! use ctxkit_grpc::{ClientLayer, ForwardHeaders, IntoStatus, RequestExt, ServerLayer};
//! use std::time::Duration;
//! use tonic::{Request, Response, Status};
//! use tower_layer::Layer;
//!
//! struct Hop;
//!
//! #[tonic::async_trait]
//! impl Work for Hop {
//!     async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
//!         let ctx = request.context();
//!         let remaining_ms = ctx.remaining().map_or(-1, |left| left.as_millis() as i64);
//!         let request_id = ForwardHeaders::of(&ctx)
//!             .and_then(|values| values.get("x-request-id")?.to_str().ok())
//!             .unwrap_or_default()
//!             .to_owned();
//!         ctx.check().map_err(IntoStatus::into_status)?;
//!         Ok(Response::new(WorkReply { hop: "leaf".into(), remaining_ms, request_id, next: None }))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let address = listener.local_addr().unwrap();
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .layer(ServerLayer::new(Context::background()))
//!         .add_service(WorkServer::new(Hop))
//!         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
//! );
//!
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
//!     .unwrap()
//!     .connect_lazy();
//! let mut client = WorkClient::new(ClientLayer::new().layer(channel));
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
//! let ctx = ctx.with_value(ForwardHeaders::new().with("x-request-id", "r-7"));
//! let reply = client
//!     .r#do(Request::new(WorkRequest { work_ms: 0 }).with_context(&ctx))
//!     .await
//!     .unwrap()
//!     .into_inner();
//! assert!((0..=300).contains(&reply.remaining_ms));
//! assert_eq!(reply.request_id, "r-7");
//! # });
//! ```
//!
//! # Tracing and OpenTelemetry
//!
//! With feature `tracing`, [`ServerLayer`] opens an INFO span for every call
//! (`rpc.service`, `rpc.method`, `x-request-id`, peer address), runs the
//! handler in it and keeps it in the call's context, where a handler finds
//! it as `request.context().value::<tracing::Span>()` (module `trace`).
//!
//! With feature `opentelemetry`, the server layer extracts the caller's
//! `opentelemetry::Context` (W3C `traceparent`, `tracestate` and `baggage`,
//! read by the global propagator or the one given to
//! `ServerLayer::propagator`) into the call's context, and [`ClientLayer`]
//! sends the one it finds in a call's context, so a trace crosses HTTP
//! (`ctxkit-http`) and gRPC hops alike (module `otel`: the `Injector` and
//! `Extractor` over tonic's `MetadataMap`).
//!
//! Both are off by default; off, they add no field, no value and no work.
//!
//! # Across processes
//!
//! The `chain` example runs each hop as a process of its own, `edge →
//! middle → leaf`, each serving `ctxkit.demo.v1.Work` and calling the next
//! hop under its call's context. The caller's budget reaches the leaf less
//! the transit, a cancel by the caller stops every hop, and an expired
//! budget sends nothing (the commands and their output are in the crate's
//! README and in the guide, `docs/guide.md` section 8; `tests/chain.rs`
//! runs them):
//!
//! ```text
//! cargo run -p ctxkit-grpc --example chain -- serve --name leaf --listen 127.0.0.1:7003
//! cargo run -p ctxkit-grpc --example chain -- serve --name middle --listen 127.0.0.1:7002 --next http://127.0.0.1:7003
//! cargo run -p ctxkit-grpc --example chain -- serve --name edge --listen 127.0.0.1:7001 --next http://127.0.0.1:7002
//! cargo run -p ctxkit-grpc --example chain -- call --to http://127.0.0.1:7001 --budget-ms 300 --request-id r-1
//! ```

#![deny(missing_docs)]

mod client;
mod forward;
mod request;
mod server;
mod status;
mod telemetry;
pub mod w3c;

#[cfg(feature = "opentelemetry")]
pub mod otel;
#[cfg(feature = "tracing")]
pub mod trace;

pub use client::{ClientBody, ClientFuture, ClientLayer, ClientService};
pub use ctxkit_http::{Ended, ForwardHeaders};
pub use forward::Propagation;
pub use request::{request, RequestExt};
pub use server::{ServerBody, ServerFuture, ServerLayer, ServerService};
pub use status::{code_name, context_status, timeout_header_status, IntoStatus};

/// The demo service `ctxkit.demo.v1.Work`, generated from
/// `proto/work.proto` (the project's shared proto, copied unchanged): what
/// the `chain` example serves and calls, and what the interop tests call
/// from other gRPC implementations.
///
/// - [`WorkRequest`](demo::WorkRequest) and [`WorkReply`](demo::WorkReply),
///   the messages;
/// - [`work_server::Work`](demo::work_server::Work), the trait a hop
///   implements, served by [`work_server::WorkServer`](demo::work_server::WorkServer);
/// - [`work_client::WorkClient`](demo::work_client::WorkClient), its client.
///
/// A hop that answers with what it saw of its call, and a call to it under
/// a context (see the [crate] documentation for a chain of three):
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::demo::work_client::WorkClient;
/// use ctxkit_grpc::demo::work_server::{Work, WorkServer};
/// use ctxkit_grpc::demo::{WorkReply, WorkRequest};
/// use ctxkit_grpc::{request, ClientLayer, RequestExt, ServerLayer};
/// use std::time::Duration;
/// use tonic::{Request, Response, Status};
/// use tower_layer::Layer;
///
/// struct Leaf;
///
/// #[tonic::async_trait]
/// impl Work for Leaf {
///     async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
///         let remaining_ms = request.context().remaining().map_or(-1, |left| left.as_millis() as i64);
///         Ok(Response::new(WorkReply { hop: "leaf".into(), remaining_ms, ..Default::default() }))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let address = listener.local_addr().unwrap();
/// tokio::spawn(
///     tonic::transport::Server::builder()
///         .layer(ServerLayer::new(Context::background()))
///         .add_service(WorkServer::new(Leaf))
///         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// );
/// let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
///     .unwrap()
///     .connect_lazy();
/// let mut client = WorkClient::new(ClientLayer::new().layer(channel));
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
/// let reply = client.r#do(request(&ctx, WorkRequest { work_ms: 0 })).await.unwrap();
/// assert_eq!(reply.get_ref().hop, "leaf");
/// assert!((0..=5000).contains(&reply.get_ref().remaining_ms)); // the caller's deadline arrived
/// # });
/// ```
#[allow(clippy::all)]
pub mod demo {
    tonic::include_proto!("ctxkit.demo.v1");
}
