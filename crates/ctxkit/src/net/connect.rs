//! [`connect_ctx`]: a TCP connect bounded by a context.

use crate::Context;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

/// What the caller waits for: the connect's outcome or the context's end.
enum Event {
    Connected(io::Result<TcpStream>),
    ContextDone,
}

/// Connects to `addr` within the remaining time of `ctx`: Go's
/// `Dialer.DialContext`, for [`std::net::TcpStream`].
///
/// - A context already done connects nothing and returns its error.
/// - The deadline bounds the whole attempt (every address `addr` resolves
///   to, in turn); when it passes, the error is
///   [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), not "timed
///   out".
/// - A cancel returns [`Error::Canceled`](crate::Error::Canceled) at once,
///   even while the SYN goes unanswered.
///
/// Context errors are `io::Error`s holding the `ctxkit::Error`
/// ([`context_error`](super::context_error) recovers it); other errors are
/// the socket's own, unchanged (the last address's).
///
/// Cost: std cannot interrupt a connect in progress, so it runs on a
/// short-lived thread (64 KiB stack; tens of microseconds to start) while
/// the caller waits for it or for the context. A cancelled connect finishes
/// on its own thread, within the deadline or the system's connect timeout,
/// and its socket is then closed. Name resolution (`ToSocketAddrs`) happens
/// first, on the calling thread, and is not interruptible: pass addresses to
/// avoid it.
///
/// ```
/// use ctxkit::{net, Context, Error};
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(5));
/// let stream = net::connect_ctx(&ctx, listener.local_addr()?)?;
/// assert_eq!(stream.peer_addr()?, listener.local_addr()?);
///
/// cancel.cancel();
/// let err = net::connect_ctx(&ctx, listener.local_addr()?).unwrap_err();
/// assert_eq!(net::context_error(&err), Some(Error::Canceled));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect_ctx<A: ToSocketAddrs>(ctx: &Context, addr: A) -> io::Result<TcpStream> {
    ctx.check()?;
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        ));
    }
    let (tx, rx) = mpsc::channel();
    let deadline = ctx.deadline();
    let connector = {
        let tx = tx.clone();
        move || {
            let _ = tx.send(Event::Connected(connect_any(&addrs, deadline)));
        }
    };
    std::thread::Builder::new()
        .name("ctxkit-connect".into())
        .stack_size(64 * 1024)
        .spawn(connector)?;
    let watch = ctx.after_func(move || {
        let _ = tx.send(Event::ContextDone);
    });
    let event = rx.recv().unwrap_or(Event::ContextDone);
    watch.stop();
    match event {
        Event::Connected(Ok(stream)) => Ok(stream),
        Event::Connected(Err(err)) => Err(context_or(ctx, deadline, err)),
        Event::ContextDone => Err(context_or(ctx, deadline, io::ErrorKind::Interrupted.into())),
    }
}

/// Tries each address in turn within `deadline`.
fn connect_any(addrs: &[SocketAddr], deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        let attempt = match deadline {
            None => TcpStream::connect(addr),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => TcpStream::connect_timeout(addr, left),
                _ => break,
            },
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::TimedOut.into()))
}

/// The context's error if it is done or its deadline has passed (the
/// timer may fire a moment after `connect_timeout` gave up); else `err`.
fn context_or(ctx: &Context, deadline: Option<Instant>, err: io::Error) -> io::Error {
    if let Some(done) = ctx.err() {
        return done.into();
    }
    match deadline {
        Some(deadline) if Instant::now() >= deadline => crate::Error::DeadlineExceeded.into(),
        _ => err,
    }
}
