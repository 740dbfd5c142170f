//! Why a context ended: [`Error`] (the kind), [`Cause`] (the reason), and
//! [`Message`] (a reason that is just a sentence).

use std::borrow::Cow;
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
/// // `?`-friendly: converts into io::Error (TimedOut / Interrupted)...
/// let io: std::io::Error = Error::DeadlineExceeded.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// // ...and, like every error, into a boxed one.
/// let boxed: Box<dyn std::error::Error + Send + Sync> = Error::Canceled.into();
/// assert_eq!(boxed.to_string(), "context canceled");
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
    ///
    /// ```
    /// use ctxkit::Error;
    ///
    /// assert!(Error::DeadlineExceeded.is_timeout());
    /// assert!(!Error::Canceled.is_timeout());
    /// ```
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

/// `cause` as a [`Cause`]: a value that already is one (an
/// `Arc<dyn Error + Send + Sync>`) is kept as it is, not wrapped in a second
/// `Arc`, so that a cause shared by many cancellations is allocated once and
/// still downcasts to its own type.
pub(crate) fn into_cause<E>(cause: E) -> Cause
where
    E: std::error::Error + Send + Sync + 'static,
{
    // `E` is known at compile time: the check folds away.
    let mut cause = Some(cause);
    match (&mut cause as &mut dyn std::any::Any).downcast_mut::<Option<Cause>>() {
        Some(shared) => shared.take().expect("taken once"),
        None => Arc::new(cause.expect("still here")),
    }
}

/// A cause that is just a sentence, for
/// [`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with) and the
/// `*_cause` constructors: Go's `errors.New("...")`.
///
/// Its `Display` is the message, unchanged; it has no source. Make one from
/// a `&str` or a `String` (`Message::new`, or `.into()`); a type of your own
/// is still the way to go when a caller must tell causes apart by type.
///
/// ```
/// use ctxkit::{Context, Message};
/// use std::time::Duration;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(Message::new("config reloaded"));
/// assert_eq!(ctx.cause().unwrap().to_string(), "config reloaded");
/// assert!(ctx.cause().unwrap().is::<Message>());
///
/// let budget = format!("lookup budget of {} ms spent", 0);
/// let (ctx, _cancel) = Context::background().with_timeout_cause(Duration::ZERO, Message::new(budget));
/// assert_eq!(ctx.cause().unwrap().to_string(), "lookup budget of 0 ms spent");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Message(Cow<'static, str>);

impl Message {
    /// A cause whose `Display` is `message`. A `&'static str` is kept as
    /// is; a `String` is moved in.
    ///
    /// ```
    /// use ctxkit::Message;
    ///
    /// let fixed = Message::new("shutting down"); // kept as is, no allocation
    /// let built = Message::new(format!("worker {} failed", 3)); // moved in
    /// assert_eq!(fixed.to_string(), "shutting down");
    /// assert_eq!(built.to_string(), "worker 3 failed");
    /// ```
    pub fn new(message: impl Into<Cow<'static, str>>) -> Message {
        Message(message.into())
    }

    /// The message.
    ///
    /// ```
    /// assert_eq!(ctxkit::Message::new("stop").as_str(), "stop");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shows the message as a string literal, as `io::Error::other` shows its
/// payload: `Message("config reloaded")`.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Message").field(&self.0).finish()
    }
}

impl std::error::Error for Message {}

impl From<&str> for Message {
    /// Copies the text (use [`Message::new`] to keep a `&'static str` as is).
    fn from(message: &str) -> Message {
        Message(Cow::Owned(message.to_owned()))
    }
}

impl From<String> for Message {
    fn from(message: String) -> Message {
        Message(Cow::Owned(message))
    }
}
