//! Sockets under a context, for blocking threads: Go's
//! `Dialer.DialContext`, and a read or write that a context interrupts.
//!
//! - [`connect_ctx`] connects a [`TcpStream`](std::net::TcpStream) within
//!   the context's remaining time, and returns at once when it is
//!   cancelled.
//! - [`ContextStream`] wraps a connected `TcpStream` or `UnixStream`: its
//!   `read` and `write` return promptly with the context's error when the
//!   context ends, even while blocked.
//!
//! Errors are `io::Error`s, as `Read` and `Write` need; one that the
//! context caused is [`ctxkit::Error`](crate::Error) converted (`TimedOut`
//! for the deadline, `Interrupted` for a cancel), never a "timed out" or
//! "connection reset" from the socket. [`context_error`] tells them apart;
//! the detailed reason is the context's own [`cause`](crate::Context::cause).
//!
//! ```
//! use ctxkit::net::{self, ContextStream};
//! use ctxkit::{Context, Error};
//! use std::io::Read;
//! use std::net::TcpListener;
//! use std::time::Duration;
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?; // a peer that never answers
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
//! let stream = net::connect_ctx(&ctx, listener.local_addr()?)?;
//! let mut stream = ContextStream::new(&ctx, stream);
//! let err = stream.read(&mut [0; 64]).unwrap_err();
//! assert_eq!(net::context_error(&err), Some(Error::DeadlineExceeded));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # How a blocked call is interrupted, and what it does to the connection
//!
//! A thread blocked in `read(2)` or `write(2)` wakes only through its
//! socket. `ContextStream` registers an [`after_func`](crate::Context::after_func)
//! that calls `shutdown(Shutdown::Both)` on the socket when the context
//! ends: the blocked `read` returns at once (end of stream), a blocked
//! `write` fails (broken pipe), and the wrapper reports the context's error
//! instead. The alternative, a read timeout set from another thread, does
//! not wake a call already blocked (the timeout is read when the call
//! starts), so it would only bound the next call.
//!
//! The shutdown ends the connection for good: the peer reads end of stream
//! (a FIN, after any data already sent), and this side can neither read nor
//! write afterwards. (Closing the socket later while it holds received data
//! nobody read makes the kernel send a reset, as for any socket closed that
//! way.) That is the honest outcome, since
//! a read or write cut off half-way leaves the protocol on that connection
//! in an unknown state: close it and open a new one. Until the context
//! ends, the wrapper changes nothing: one atomic load per call.
//!
//! # Async code
//!
//! With tokio, nothing extra is needed: wrap any socket future in
//! [`Context::run`](crate::Context::run). The future is dropped when the
//! context ends, which tokio's sockets allow at any `.await`. (This example
//! needs tokio's `net` and `io-util` features, which ctxkit does not enable;
//! it runs as the test `tokio_run_bounds_a_socket_read` in
//! `crates/ctxkit-tests/tests/net.rs`.)
//!
//! ```ignore
//! use ctxkit::{Context, Error};
//! use std::time::Duration;
//! use tokio::io::AsyncReadExt;
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
//! let mut stream = ctx.run(TcpStream::connect(listener.local_addr()?)).await??;
//! let mut buf = [0; 64];
//! assert_eq!(ctx.run(stream.read(&mut buf)).await.unwrap_err(), Error::DeadlineExceeded);
//! # Ok(())
//! # }
//! ```

mod connect;
mod stream;

pub use connect::connect_ctx;
pub use stream::{ContextStream, Socket};

use std::io;

/// The context's error inside `err`, if the context caused it: the errors
/// of [`connect_ctx`] and [`ContextStream`] carry a
/// [`ctxkit::Error`](crate::Error) when the context ended the call. `None`
/// for any other error.
///
/// ```
/// use ctxkit::{net, Error};
///
/// let err: std::io::Error = Error::Canceled.into();
/// assert_eq!(net::context_error(&err), Some(Error::Canceled));
/// let other = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(net::context_error(&other), None);
/// ```
pub fn context_error(err: &io::Error) -> Option<crate::Error> {
    err.get_ref()?.downcast_ref::<crate::Error>().copied()
}
