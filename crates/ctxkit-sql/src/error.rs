//! The one error type of every `*_ctx` call.

use std::fmt;

/// The driver's own error, boxed: a `rusqlite::Error` or a
/// `tokio_postgres::Error` (downcast through [`std::error::Error::source`]).
type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a `*_ctx` call failed: its context ended, or the database said no.
///
/// Contract:
/// - [`context_error`](Error::context_error) is `Some` exactly when the call was
///   stopped because its context was cancelled or its deadline passed (before it
///   started, while it ran, or before a commit). [`cause`](Error::cause) then is
///   the context's cause (`ctxkit::Error` itself when none was given).
/// - Otherwise it is a driver error (malformed SQL, a constraint, a closed
///   connection ...): `context_error()` and `cause()` are `None`.
/// - [`source`](std::error::Error::source) is the driver's error whenever there is
///   one: for a stopped query that is the server's or SQLite's report of the stop
///   (PostgreSQL's `57014 query_canceled`, SQLite's `SQLITE_INTERRUPT`); a call
///   refused because its context was already done has no source.
///
/// ```
/// let err = ctxkit_sql::Error::from_context(ctxkit::Error::Canceled, None);
/// assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
/// assert_eq!(err.to_string(), "database call stopped: context canceled");
/// ```
pub struct Error {
    repr: Repr,
}

enum Repr {
    Context {
        err: ctxkit::Error,
        cause: ctxkit::Cause,
        source: Option<DriverError>,
    },
    Driver(DriverError),
}

impl Error {
    /// An error for a call stopped by a context that ended with `err`; the
    /// cause is `ctxkit::Error` itself when `cause` is `None` (as in ctxkit).
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let cause: ctxkit::Cause = Arc::new(ctxkit::Message::new("shutting down"));
    /// let err = ctxkit_sql::Error::from_context(ctxkit::Error::Canceled, Some(cause));
    /// assert_eq!(err.cause().unwrap().to_string(), "shutting down");
    /// ```
    pub fn from_context(err: ctxkit::Error, cause: Option<ctxkit::Cause>) -> Error {
        let cause = cause.unwrap_or_else(|| std::sync::Arc::new(err));
        Error {
            repr: Repr::Context {
                err,
                cause,
                source: None,
            },
        }
    }

    /// The error of a call refused or stopped by `ctx`, which must be done.
    /// Falls back to `Canceled` for a context that is still live.
    pub(crate) fn stopped(ctx: &ctxkit::Context, source: Option<DriverError>) -> Error {
        let err = ctx.err().unwrap_or(ctxkit::Error::Canceled);
        let mut error = Error::from_context(err, ctx.cause());
        if let Repr::Context { source: slot, .. } = &mut error.repr {
            *slot = source;
        }
        error
    }

    /// A driver error that has nothing to do with a context.
    pub(crate) fn driver<E>(error: E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error {
            repr: Repr::Driver(Box::new(error)),
        }
    }

    /// `Some` when a context stopped the call: `Canceled` or `DeadlineExceeded`.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let err = conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", []).unwrap_err();
    /// assert_eq!(err.context_error(), Some(Error::Canceled)); // refused: nothing ran
    ///
    /// let err = conn.execute_ctx(&Context::background(), "NOT SQL", []).unwrap_err();
    /// assert_eq!(err.context_error(), None); // the database said no
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn context_error(&self) -> Option<ctxkit::Error> {
        match &self.repr {
            Repr::Context { err, .. } => Some(*err),
            Repr::Driver(_) => None,
        }
    }

    /// The stopping context's cause, `None` for a driver error.
    ///
    /// ```
    /// use ctxkit::{Context, Message};
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(Message::new("request abandoned"));
    /// let err = conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", []).unwrap_err();
    /// assert_eq!(err.cause().unwrap().to_string(), "request abandoned");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cause(&self) -> Option<ctxkit::Cause> {
        match &self.repr {
            Repr::Context { cause, .. } => Some(cause.clone()),
            Repr::Driver(_) => None,
        }
    }

    /// The driver's error, if there is one (same as `source()`, typed for
    /// downcasting: `err.driver_error()?.downcast_ref::<rusqlite::Error>()`).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let err = conn.execute_ctx(&Context::background(), "NOT SQL", []).unwrap_err();
    /// let driver = err.driver_error().unwrap();
    /// assert!(driver.downcast_ref::<rusqlite::Error>().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn driver_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match &self.repr {
            Repr::Context { source, .. } => source.as_deref(),
            Repr::Driver(source) => Some(&**source),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Context { err, cause, .. } => {
                write!(f, "database call stopped: {err}")?;
                let cause = cause.to_string();
                if cause != err.to_string() {
                    write!(f, " ({cause})")?;
                }
                Ok(())
            }
            Repr::Driver(source) => {
                write!(f, "database error: {source}")?;
                // tokio-postgres says only "db error" and keeps the server's
                // message in its source: show the whole chain.
                let mut next = source.source();
                while let Some(inner) = next {
                    write!(f, ": {inner}")?;
                    next = inner.source();
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Context { err, cause, source } => f
                .debug_struct("Error::Context")
                .field("err", err)
                .field("cause", &cause.to_string())
                .field("source", source)
                .finish(),
            Repr::Driver(source) => f.debug_tuple("Error::Driver").field(source).finish(),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.driver_error() {
            Some(source) => Some(source),
            None => None,
        }
    }
}

impl From<ctxkit::Error> for Error {
    fn from(err: ctxkit::Error) -> Error {
        Error::from_context(err, None)
    }
}
