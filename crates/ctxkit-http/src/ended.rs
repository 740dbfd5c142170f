//! [`Ended`]: why a request's context ended, when no deadline ended it.

use ctxkit::{CancelHandle, Cause, Context};
use std::fmt;
use std::sync::Arc;

/// Why a request's context ended: its [`cause`](Context::cause), which
/// downcasts to `Ended`. A deadline (the caller's or the server's maximum) is
/// not an `Ended`: its error is [`ctxkit::Error::DeadlineExceeded`] and its
/// cause that error itself.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::Ended;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(Ended::of(&ctx), None); // still live
/// cancel.cancel_with(Ended::ClientGone);
/// assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
/// assert_eq!(ctx.cause().unwrap().downcast_ref(), Some(&Ended::ClientGone));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ended {
    /// The client closed the connection or reset the stream before the
    /// response was fully sent.
    ClientGone,
    /// The response body was fully handed to the connection.
    Completed,
    /// The server shut down and the request was still running when the
    /// grace period ran out.
    Shutdown,
}

impl Ended {
    /// Why `ctx` (or the ancestor whose end reached it) ended, if an
    /// `Ended` was its cause; `None` while it is live and when something
    /// else (a deadline, a plain cancel) ended it.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::Ended;
    /// use std::time::Duration;
    ///
    /// let (connection, close) = Context::background().with_cancel();
    /// let (request, _request_done) = connection.with_cancel();
    /// close.cancel_with(Ended::Shutdown);
    /// assert_eq!(Ended::of(&request), Some(Ended::Shutdown)); // reached it from above
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    /// assert_eq!(Ended::of(&ctx), None); // a deadline is not an `Ended`
    /// ```
    pub fn of(ctx: &Context) -> Option<Ended> {
        ctx.cause()?.downcast_ref::<Ended>().copied()
    }

    /// Ends the context of `handle` with this cause. A client that went
    /// away and a shutdown are named as the origin of the cancellation
    /// ([`CancelHandle::cancel_from`]), so that
    /// [`provenance`](Context::provenance) reads `canceled: client gone`
    /// or `canceled: server shutdown`; a completed request is an ordinary
    /// cancel at the caller's line. The HTTP and gRPC layers end every
    /// request this way.
    ///
    /// The cause is one `Arc` per variant and thread, shared by every
    /// request it ends there (the core keeps a [`Cause`] as it is), so
    /// ending a request allocates nothing; it still downcasts to `Ended`.
    ///
    /// ```
    /// use ctxkit::provenance::Origin;
    /// use ctxkit::Context;
    /// use ctxkit_http::Ended;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// Ended::ClientGone.end(&cancel);
    /// assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    /// assert_eq!(ctx.provenance().unwrap().origin(), Origin::Integration("client gone"));
    ///
    /// // Requests ended the same way on one thread share one cause.
    /// let (one, end_one) = Context::background().with_cancel();
    /// let (other, end_other) = Context::background().with_cancel();
    /// Ended::Completed.end(&end_one);
    /// Ended::Completed.end(&end_other);
    /// assert!(std::sync::Arc::ptr_eq(&one.cause().unwrap(), &other.cause().unwrap()));
    /// assert_eq!(Ended::of(&other), Some(Ended::Completed));
    /// ```
    #[inline]
    #[track_caller]
    pub fn end(self, handle: &CancelHandle) {
        match self {
            Ended::ClientGone => handle.cancel_from_with("client gone", self.cause()),
            Ended::Shutdown => handle.cancel_from_with("server shutdown", self.cause()),
            Ended::Completed => handle.cancel_with(self.cause()),
        }
    }

    /// Ends the context as [`end`](Ended::end) does, giving up the
    /// handle: for [`Completed`](Ended::Completed), a context that nobody
    /// holds any more is let go rather than ended
    /// ([`CancelHandle::finish_with`]): nothing could see its end, and
    /// letting it go costs less. The HTTP and gRPC layers end every
    /// request that completed this way.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::Ended;
    ///
    /// let (connection, _close) = Context::background().with_cancel();
    /// let (request, request_end) = connection.with_cancel();
    /// let spawned = request.clone(); // a task the handler left running
    /// drop(request);
    /// Ended::Completed.finish(request_end);
    /// assert_eq!(Ended::of(&spawned), Some(Ended::Completed));
    ///
    /// let (request, request_end) = connection.with_cancel();
    /// drop(request); // nothing left running: let go
    /// Ended::Completed.finish(request_end);
    /// assert_eq!(connection.registrations(), 0);
    /// ```
    #[inline]
    #[track_caller]
    pub fn finish(self, handle: CancelHandle) {
        match self {
            // The variant itself, not the shared cause: most contexts
            // are let go, and then the cause is never made (the shared
            // one would cost a thread-local lookup and two reference
            // counts a request for nothing). One that is ended has its
            // cause allocated once.
            Ended::Completed => handle.finish_with(self),
            _ => self.end(&handle),
        }
    }

    /// This variant as a [`Cause`]: the same `Arc` every time on a thread.
    /// One per thread rather than one per process, so that the reference
    /// counts of the requests ended on one core do not bounce between the
    /// caches of all the others.
    #[inline]
    fn cause(self) -> Cause {
        thread_local! {
            static CAUSES: [Cause; 3] = [
                Arc::new(Ended::ClientGone),
                Arc::new(Ended::Completed),
                Arc::new(Ended::Shutdown),
            ];
        }
        CAUSES
            .try_with(|causes| {
                let [client_gone, completed, shutdown] = causes;
                match self {
                    Ended::ClientGone => client_gone.clone(),
                    Ended::Completed => completed.clone(),
                    Ended::Shutdown => shutdown.clone(),
                }
            })
            // A thread being torn down: its own `Arc`.
            .unwrap_or_else(|_| Arc::new(self))
    }

    /// A short name for logs: `client_gone`, `completed`, `shutdown`.
    ///
    /// ```
    /// assert_eq!(ctxkit_http::Ended::ClientGone.as_str(), "client_gone");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Ended::ClientGone => "client_gone",
            Ended::Completed => "completed",
            Ended::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ended::ClientGone => "the client closed the connection or reset the stream",
            Ended::Completed => "the response was sent",
            Ended::Shutdown => "the server shut down before the request finished",
        })
    }
}

impl std::error::Error for Ended {}
