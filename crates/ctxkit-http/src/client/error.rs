//! [`ClientError`]: a failed outgoing request, telling a context's end
//! apart from the transport's errors.

use ctxkit::{Cause, Context};
use std::fmt;

/// The error of an outgoing request made under a context: either the
/// context ended (before sending, while waiting for the response, or while
/// reading the body) or the inner client failed.
///
/// As everywhere in ctxkit, [`context_error`](Self::context_error) gives
/// the context's `ctxkit::Error` and [`cause`](Self::cause) its cause, never
/// an opaque transport error.
///
/// ```
/// use ctxkit::{Context, Error};
/// use ctxkit_http::client::ClientError;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let error = ClientError::<std::io::Error>::from_context(&ctx);
/// assert_eq!(error.context_error(), Some(Error::Canceled));
/// assert_eq!(error.to_string(), "request stopped by its context: context canceled");
/// ```
#[derive(Debug)]
pub enum ClientError<E> {
    /// The context ended first; the request was not sent, or was aborted.
    Context {
        /// The context's error.
        error: ctxkit::Error,
        /// The context's cause.
        cause: Cause,
    },
    /// The inner client's error.
    Inner(E),
}

impl<E> ClientError<E> {
    /// The error of a context that is done.
    ///
    /// # Panics
    ///
    /// If `ctx` is still live: a context that did not end stopped nothing.
    ///
    /// ```
    /// use ctxkit::{Context, Message};
    /// use ctxkit_http::client::ClientError;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(Message::new("user left"));
    /// let error = ClientError::<std::io::Error>::from_context(&ctx);
    /// assert_eq!(error.cause().unwrap().to_string(), "user left");
    /// ```
    pub fn from_context(ctx: &Context) -> ClientError<E> {
        let error = ctx
            .err()
            .expect("ClientError::from_context on a live context");
        let cause = ctx.cause().expect("a done context has a cause");
        ClientError::Context { error, cause }
    }

    /// The context's error when the context stopped the request.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::ClientError;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    /// let error = ClientError::<std::io::Error>::from_context(&ctx);
    /// assert_eq!(error.context_error(), Some(Error::DeadlineExceeded));
    /// ```
    pub fn context_error(&self) -> Option<ctxkit::Error> {
        match self {
            ClientError::Context { error, .. } => Some(*error),
            ClientError::Inner(_) => None,
        }
    }

    /// The context's cause when the context stopped the request.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::ClientError;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel(); // no cause given: the error itself
    /// let error = ClientError::<std::io::Error>::from_context(&ctx);
    /// assert_eq!(error.cause().unwrap().downcast_ref::<Error>(), Some(&Error::Canceled));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        match self {
            ClientError::Context { cause, .. } => Some(cause.clone()),
            ClientError::Inner(_) => None,
        }
    }

    /// The inner client's error, if that is what failed.
    ///
    /// ```
    /// use ctxkit_http::client::ClientError;
    ///
    /// let error = ClientError::Inner(std::io::Error::other("connection refused"));
    /// assert_eq!(error.context_error(), None);
    /// assert!(error.cause().is_none());
    /// assert_eq!(error.inner().unwrap().to_string(), "connection refused");
    /// ```
    pub fn inner(&self) -> Option<&E> {
        match self {
            ClientError::Context { .. } => None,
            ClientError::Inner(inner) => Some(inner),
        }
    }
}

impl<E: fmt::Display> fmt::Display for ClientError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Context { error, cause } => {
                write!(f, "request stopped by its context: {error}")?;
                let reason = cause.to_string();
                if reason != error.to_string() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            ClientError::Inner(inner) => inner.fmt(f),
        }
    }
}

impl<E> std::error::Error for ClientError<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Context { cause, .. } => Some(&**cause),
            ClientError::Inner(inner) => Some(inner),
        }
    }
}
