//! [`ContextStream`]: blocking reads and writes that a context interrupts.

use crate::{AfterFunc, Context};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

/// A connected socket that [`ContextStream`] can interrupt: `TcpStream`,
/// and on Unix `UnixStream`. Sealed.
///
/// ```
/// fn takes_socket<S: ctxkit::net::Socket>(_: S) {}
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// takes_socket(std::net::TcpStream::connect(listener.local_addr()?)?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Socket: Send + Sync + 'static + sealed::Sealed {}

mod sealed {
    use std::io;

    /// What [`ContextStream`](super::ContextStream) needs of a socket:
    /// reads and writes through `&self`, and a shutdown from another
    /// thread.
    pub trait Sealed {
        fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize>;
        fn write_shared(&self, buf: &[u8]) -> io::Result<usize>;
        fn flush_shared(&self) -> io::Result<()>;
        fn shutdown_both(&self);
    }
}

macro_rules! socket {
    ($ty:ty) => {
        impl sealed::Sealed for $ty {
            fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
                (&mut &*self).read(buf)
            }
            fn write_shared(&self, buf: &[u8]) -> io::Result<usize> {
                (&mut &*self).write(buf)
            }
            fn flush_shared(&self) -> io::Result<()> {
                (&mut &*self).flush()
            }
            fn shutdown_both(&self) {
                // NotConnected when the peer already closed: nothing to wake.
                let _ = self.shutdown(Shutdown::Both);
            }
        }
        impl Socket for $ty {}
    };
}

socket!(TcpStream);
#[cfg(unix)]
socket!(std::os::unix::net::UnixStream);

/// A connected socket whose blocking `read` and `write` end with the
/// context's error as soon as the context ends.
///
/// When the context ends, the socket is shut down (both directions) from a
/// callback thread: a blocked call returns at once, and every call from then
/// on fails with the context's error (an `io::Error` holding the
/// [`ctxkit::Error`](crate::Error); see [`context_error`](super::context_error)).
/// The connection is over then: see the [module docs](super) for why
/// shutdown and what the peer sees. Before that, calls go straight to the
/// socket, after one atomic load.
///
/// Dropping the wrapper unregisters the callback and closes the socket (as
/// dropping the socket would).
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::net::{self, ContextStream};
/// use ctxkit::{Context, Error};
/// use std::io::Read;
/// use std::os::unix::net::UnixStream;
///
/// let (mine, _peer) = UnixStream::pair()?; // the peer never writes
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut stream = ContextStream::new(&ctx, mine);
/// let reader = std::thread::spawn(move || stream.read(&mut [0; 16]));
/// cancel.cancel(); // wakes the blocked read
/// let err = reader.join().unwrap().unwrap_err();
/// assert_eq!(net::context_error(&err), Some(Error::Canceled));
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ContextStream<S: Socket> {
    socket: Arc<S>,
    ctx: Context,
    watch: AfterFunc,
}

impl<S: Socket> ContextStream<S> {
    /// Puts `socket` under `ctx`. If `ctx` is already done, the socket is
    /// shut down at once and every call fails with the context's error.
    ///
    /// ```
    /// use ctxkit::net::ContextStream;
    /// use ctxkit::Context;
    /// use std::io::Write;
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let socket = TcpStream::connect(listener.local_addr()?)?;
    /// let mut stream = ContextStream::new(&Context::background(), socket);
    /// stream.write_all(b"hello")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(ctx: &Context, socket: S) -> ContextStream<S> {
        let socket = Arc::new(socket);
        let watch = ctx.after_func({
            let socket = socket.clone();
            move || socket.shutdown_both()
        });
        ContextStream {
            socket,
            ctx: ctx.clone(),
            watch,
        }
    }

    /// The socket, for its addresses and options. Reading or writing it
    /// directly bypasses the context.
    ///
    /// ```
    /// use ctxkit::net::ContextStream;
    /// use ctxkit::Context;
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let stream = ContextStream::new(&Context::background(), TcpStream::connect(listener.local_addr()?)?);
    /// assert_eq!(stream.get_ref().peer_addr()?, listener.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.socket
    }

    /// The context the calls run under.
    ///
    /// ```
    /// use ctxkit::net::ContextStream;
    /// use ctxkit::Context;
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let stream = ContextStream::new(&Context::background(), TcpStream::connect(listener.local_addr()?)?);
    /// assert!(!stream.context().is_done());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs `op` unless the context is done; reports the context's error
    /// for a failure (or an end of stream, per `ended`) that its shutdown
    /// may have caused.
    fn guard<T>(
        &self,
        op: impl FnOnce(&S) -> io::Result<T>,
        ended: impl FnOnce(&T) -> bool,
    ) -> io::Result<T> {
        self.ctx.check()?;
        match op(&self.socket) {
            Ok(value) if !ended(&value) => Ok(value),
            result => match self.ctx.err() {
                Some(err) => Err(err.into()),
                None => result,
            },
        }
    }
}

/// Reads through a shared reference too, as `&TcpStream` does: one thread
/// may read while another writes.
impl<S: Socket> Read for &ContextStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wanted = !buf.is_empty();
        self.guard(|s| s.read_shared(buf), |&n| wanted && n == 0)
    }
}

/// Writes through a shared reference too, as `&TcpStream` does.
impl<S: Socket> Write for &ContextStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wanted = !buf.is_empty();
        self.guard(|s| s.write_shared(buf), |&n| wanted && n == 0)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.guard(|s| s.flush_shared(), |_| false)
    }
}

impl<S: Socket> Read for ContextStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl<S: Socket> Write for ContextStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl<S: Socket> Drop for ContextStream<S> {
    fn drop(&mut self) {
        // Releases the callback's reference to the socket (unless it is
        // already running: then it holds the socket a moment longer).
        self.watch.stop();
    }
}

impl<S: Socket + fmt::Debug> fmt::Debug for ContextStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextStream")
            .field("socket", &self.socket)
            .field("ctx", &self.ctx)
            .finish()
    }
}
