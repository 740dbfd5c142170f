//! [`Error`]: why a child under a context did not simply exit.

use crate::{Cause, Context};
use std::fmt;
use std::io;
use std::process::{ExitStatus, Output};
use std::time::Instant;

/// The error of the [`process`](super) methods: either an I/O error (from
/// spawning or waiting, passed on unchanged), or the context ended and
/// stopped the child (or kept it from starting).
///
/// - [`context_error`](Error::context_error) and [`cause`](Error::cause)
///   are the context's when it stopped the child, `None` for an I/O error.
/// - [`status`](Error::status) is the status the stopped child was reaped
///   with; [`output`](Error::output) what `output_ctx` captured until then.
/// - `io::Error::from(err)` gives an I/O error back as it was; a context
///   stop becomes `TimedOut` (deadline) or `Interrupted` (cancel) holding
///   this `Error`.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::CommandExt;
/// use ctxkit::{Context, Error};
/// use std::process::Command;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(std::io::Error::other("user pressed stop"));
/// let err = Command::new("sleep").arg("1").status_ctx(&ctx).unwrap_err();
/// assert_eq!(err.context_error(), Some(Error::Canceled));
/// assert_eq!(err.cause().unwrap().to_string(), "user pressed stop");
/// assert_eq!(err.status(), None, "never started");
/// let io: std::io::Error = err.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::Interrupted);
/// # }
/// ```
pub struct Error {
    repr: Repr,
}

enum Repr {
    Io(io::Error),
    Context(Box<Stopped>),
}

/// What a context's stop did to a child.
#[derive(Clone, Debug)]
pub(super) struct Stopped {
    pub(super) err: crate::Error,
    pub(super) cause: Cause,
    /// When the first step ran; `None` if the child never started.
    pub(super) at: Option<Instant>,
    pub(super) killed_at: Option<Instant>,
    pub(super) status: Option<ExitStatus>,
    pub(super) output: Option<Output>,
}

impl Stopped {
    /// The record of `ctx` ending, before anything is done about it.
    pub(super) fn of(ctx: &Context) -> Stopped {
        let err = ctx.err().unwrap_or(crate::Error::Canceled);
        Stopped {
            err,
            cause: ctx.cause().unwrap_or_else(|| err.as_cause()),
            at: None,
            killed_at: None,
            status: None,
            output: None,
        }
    }
}

impl Error {
    pub(super) fn io(err: io::Error) -> Error {
        Error {
            repr: Repr::Io(err),
        }
    }

    pub(super) fn stopped(stopped: Stopped) -> Error {
        Error {
            repr: Repr::Context(Box::new(stopped)),
        }
    }

    fn stop(&self) -> Option<&Stopped> {
        match &self.repr {
            Repr::Context(stopped) => Some(stopped),
            Repr::Io(_) => None,
        }
    }

    /// The context's error if the context stopped the child (or kept it
    /// from starting); `None` for an I/O error.
    ///
    /// ```
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let err = Command::new("/no/such/program").status_ctx(&Context::background()).unwrap_err();
    /// assert_eq!(err.context_error(), None);
    /// assert_eq!(err.io_error().unwrap().kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn context_error(&self) -> Option<crate::Error> {
        self.stop().map(|stopped| stopped.err)
    }

    /// The context's cause if the context stopped the child (the
    /// `ctxkit::Error` itself when none was given); `None` for an I/O error.
    ///
    /// ```
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::{Context, Error};
    /// use std::process::Command;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let err = Command::new("true").status_ctx(&ctx).unwrap_err();
    /// assert_eq!(err.cause().unwrap().downcast_ref(), Some(&Error::Canceled));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        self.stop().map(|stopped| stopped.cause.clone())
    }

    /// The status the stopped child was reaped with; `None` if it never
    /// started or for an I/O error.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::Command;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = Command::new("sleep").arg("30").status_ctx(&ctx).unwrap_err();
    /// assert_eq!(err.status().unwrap().signal(), Some(15)); // SIGTERM
    /// # }
    /// ```
    pub fn status(&self) -> Option<ExitStatus> {
        self.stop().and_then(|stopped| stopped.status)
    }

    /// When the first step (signal or function) ran; `None` if the child
    /// never started or for an I/O error.
    ///
    /// ```
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let err = Command::new("true").status_ctx(&ctx).unwrap_err();
    /// assert_eq!(err.stopped_at(), None, "a done context starts nothing");
    /// ```
    pub fn stopped_at(&self) -> Option<Instant> {
        self.stop().and_then(|stopped| stopped.at)
    }

    /// When SIGKILL was sent: the child outlived the wait delay (or the
    /// first step was a kill, or failed). `None` if no kill was needed.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = Command::new("sleep").arg("30").status_ctx(&ctx).unwrap_err();
    /// assert_eq!(err.killed_at(), None, "SIGTERM was enough");
    /// # }
    /// ```
    pub fn killed_at(&self) -> Option<Instant> {
        self.stop().and_then(|stopped| stopped.killed_at)
    }

    /// What `output_ctx` captured before the context stopped the child,
    /// with its status.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    /// let err = Command::new("sh").args(["-c", "echo started; exec sleep 30"])
    ///     .output_ctx(&ctx)
    ///     .unwrap_err();
    /// assert_eq!(err.output().unwrap().stdout, b"started\n");
    /// # }
    /// ```
    pub fn output(&self) -> Option<&Output> {
        self.stop().and_then(|stopped| stopped.output.as_ref())
    }

    /// The I/O error, if this is one (spawn errors are passed on unchanged).
    ///
    /// ```
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let err = Command::new("/no/such/program").spawn_ctx(&Context::background()).unwrap_err();
    /// assert_eq!(err.io_error().unwrap().kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.repr {
            Repr::Io(err) => Some(err),
            Repr::Context(_) => None,
        }
    }

    pub(super) fn with_output(mut self, output: Output) -> Error {
        if let Repr::Context(stopped) = &mut self.repr {
            stopped.output = Some(output);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Io(err) => fmt::Display::fmt(err, f),
            Repr::Context(stopped) => {
                write!(f, "{}", stopped.err)?;
                match stopped.status {
                    None => f.write_str(": process not started"),
                    Some(status) if stopped.killed_at.is_some() => {
                        write!(f, ": process killed after the wait delay ({status})")
                    }
                    Some(status) => write!(f, ": process stopped ({status})"),
                }
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Io(err) => f.debug_tuple("Io").field(err).finish(),
            Repr::Context(stopped) => f
                .debug_struct("Stopped")
                .field("err", &stopped.err)
                .field("cause", &stopped.cause.to_string())
                .field("status", &stopped.status)
                .field("killed", &stopped.killed_at.is_some())
                .finish(),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Io(err) => err.source(),
            Repr::Context(stopped) => Some(&*stopped.cause),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err.repr {
            Repr::Io(err) => err,
            Repr::Context(ref stopped) => io::Error::new(io::Error::from(stopped.err).kind(), err),
        }
    }
}
