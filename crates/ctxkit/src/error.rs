//! Why a context ended: [`Error`] (the kind) and [`Cause`] (the reason).

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

/// Why a context is done: the value of [`Context::err`](crate::Context::err).
///
/// Exactly two kinds exist, as in Go: the context was cancelled, or its
/// deadline passed. The `Display` strings are Go's, byte for byte, so logs
/// read the same across a polyglot fleet. The detailed reason, if any, is the
/// context's [`Cause`].
///
/// ```
/// use ctxkit::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(Error::Canceled.to_string(), "context canceled");
/// assert_eq!(Error::DeadlineExceeded.to_string(), "context deadline exceeded");
///
/// // `?`-friendly: converts into io::Error (TimedOut / Interrupted).
/// let io: std::io::Error = Error::DeadlineExceeded.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The context was cancelled: by its [`CancelHandle`](crate::CancelHandle)
    /// (explicitly or by dropping it) or by the cancellation of an ancestor.
    Canceled,
    /// The context's deadline passed before anything else ended it.
    DeadlineExceeded,
}

impl Error {
    /// True for [`Error::DeadlineExceeded`], as Go's `Timeout()` is.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }

    /// The shared `Cause` that stands for this error when no explicit cause
    /// was given. One allocation per kind per process, then reference counts.
    pub(crate) fn as_cause(self) -> Cause {
        static CANCELED: OnceLock<Cause> = OnceLock::new();
        static DEADLINE_EXCEEDED: OnceLock<Cause> = OnceLock::new();
        let cell = match self {
            Error::Canceled => &CANCELED,
            Error::DeadlineExceeded => &DEADLINE_EXCEEDED,
        };
        cell.get_or_init(|| Arc::new(self)).clone()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Canceled => "context canceled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err {
            Error::Canceled => io::ErrorKind::Interrupted,
            Error::DeadlineExceeded => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, err)
    }
}

/// The reason a context ended: the value of
/// [`Context::cause`](crate::Context::cause).
///
/// It is the error given to
/// [`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with) or
/// [`Context::with_deadline_cause`](crate::Context::with_deadline_cause); when
/// none was given it is the context's [`Error`] itself, which
/// `cause.downcast_ref::<ctxkit::Error>()` recovers.
///
/// ```
/// use ctxkit::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(std::io::Error::other("shutting down"));
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");
/// ```
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;
