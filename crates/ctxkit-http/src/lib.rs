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
//!
//! With no features, only [`deadline_header`] is built.
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

#![warn(missing_docs)]

pub mod deadline_header;

#[cfg(feature = "server")]
mod ended;
#[cfg(any(feature = "server", feature = "client"))]
mod forward;
#[cfg(feature = "server")]
mod server;

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
