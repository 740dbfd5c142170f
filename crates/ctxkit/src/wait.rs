//! Waiting for a context to be done: blocking (threads) and async (futures).
//!
//! A waiter registers with the context's scope and is notified by the cancel
//! that drains it. Both kinds re-check the status after every wake-up, so
//! spurious wake-ups are harmless, and both remove their registration when
//! they give up, so abandoned waits leave nothing behind.

use crate::cancel::Scope;
use crate::context::Context;
use crate::error::Error;
use crate::registry::Registration;
use crate::sync::thread;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

impl Context {
    /// A future that resolves to [`err`](Context::err) once this context is
    /// done: Go's `<-ctx.Done()`.
    ///
    /// Cancel-safe and cheap: it registers its waker on first poll and
    /// unregisters on drop, so creating one in every turn of a `select!` loop
    /// leaks nothing. It is `Send`, works on any executor, and never resolves
    /// on a context that cannot be cancelled.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let task = tokio::spawn({
    ///     let ctx = ctx.clone();
    ///     async move { ctx.done().await }
    /// });
    /// cancel.cancel();
    /// assert_eq!(task.await.unwrap(), Error::Canceled);
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {} // needs a runtime: the `tokio` feature
    /// ```
    pub fn done(&self) -> Done<'_> {
        Done {
            scope: self.scope(),
            waiter: TaskWaiter::default(),
        }
    }

    /// Blocks the calling thread until this context is done, then returns
    /// [`err`](Context::err). On a context that cannot be cancelled it never
    /// returns.
    ///
    /// The thread is parked, not polling: it costs nothing while it waits.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(5));
    /// assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    /// ```
    pub fn wait(&self) -> Error {
        loop {
            if let Some(err) = self.wait_until(None) {
                return err;
            }
        }
    }

    /// Blocks until this context is done or `timeout` has passed: `Some(err)`
    /// in the first case, `None` in the second.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let ctx = Context::background();
    /// assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Error> {
        match Instant::now().checked_add(timeout) {
            Some(until) => self.wait_until(Some(until)),
            None => Some(self.wait()),
        }
    }

    /// Sleeps for `duration`, waking early if this context is done: `Ok(())`
    /// after a full sleep, `Err(err)` on cancellation. The building block of
    /// periodic work that must stop promptly.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Duration;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(ctx.sleep(Duration::from_millis(1)), Ok(()));
    /// cancel.cancel();
    /// assert_eq!(ctx.sleep(Duration::from_secs(3600)), Err(Error::Canceled));
    /// ```
    pub fn sleep(&self, duration: Duration) -> Result<(), Error> {
        match self.wait_timeout(duration) {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }

    /// Runs `fut` until it completes or this context is done, whichever comes
    /// first: `Ok(output)` or `Err(err)`. If the context is done first, `fut`
    /// is dropped unfinished (and is not polled at all if the context was
    /// done to begin with).
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Duration;
    ///
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
    /// let slow = tokio::time::sleep(Duration::from_secs(3600));
    /// assert_eq!(ctx.run(slow).await, Err(Error::DeadlineExceeded));
    ///
    /// let ctx = Context::background();
    /// assert_eq!(ctx.run(async { 42 }).await, Ok(42));
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {} // needs a runtime: the `tokio` feature
    /// ```
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        let mut fut = pin!(fut);
        let mut done = self.done();
        poll_fn(|cx| {
            if let Poll::Ready(err) = Pin::new(&mut done).poll(cx) {
                return Poll::Ready(Err(err));
            }
            fut.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// One registration, parked until done or `until`.
    fn wait_until(&self, until: Option<Instant>) -> Option<Error> {
        let Some(scope) = self.scope() else {
            // Nothing can end this context: just let the time pass.
            match until {
                Some(until) => std::thread::sleep(until.saturating_duration_since(Instant::now())),
                None => loop {
                    std::thread::park();
                },
            }
            return None;
        };
        if let Some(err) = scope.err() {
            return Some(err);
        }
        let key = match scope.with_registry(|r| r.insert(Registration::Thread(thread::current()))) {
            Ok(key) => key,
            Err((err, _)) => return Some(err),
        };
        loop {
            match until {
                None => thread::park(),
                Some(until) => {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    thread::park_timeout(until - now);
                }
            }
            // Only the cancel that drains our registration sets the status,
            // and it unparks us after: seeing it done means we were drained.
            if let Some(err) = scope.err() {
                return Some(err);
            }
        }
        // Timed out: leave, unless a cancel drained us meanwhile.
        if scope.deregister(key).is_none() {
            return scope.err();
        }
        None
    }
}

/// The future returned by [`Context::done`]: resolves to the context's
/// [`Error`] once it is done.
///
/// Dropping it before it resolves removes its registration.
///
/// ```
/// use ctxkit::{Context, Error};
/// use std::future::Future;
/// use std::task::{Context as TaskContext, Poll, Waker};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut task = TaskContext::from_waker(Waker::noop());
///
/// let mut done = Box::pin(ctx.done());
/// assert_eq!(done.as_mut().poll(&mut task), Poll::Pending);
/// assert_eq!(ctx.registrations(), 1); // its waker is registered...
/// drop(done);
/// assert_eq!(ctx.registrations(), 0); // ...and leaves with it
///
/// let mut done = Box::pin(ctx.done());
/// cancel.cancel();
/// assert_eq!(done.as_mut().poll(&mut task), Poll::Ready(Error::Canceled));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Done<'a> {
    scope: Option<&'a Scope>,
    waiter: TaskWaiter,
}

impl Future for Done<'_> {
    type Output = Error;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let scope = self.scope;
        self.waiter.poll(scope, cx)
    }
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.waiter.leave(self.scope);
    }
}

impl fmt::Debug for Done<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.waiter.debug("Done", self.scope, f)
    }
}

/// [`Done`] that owns a clone of its context instead of borrowing it, for
/// futures and streams that must be `'static` (stored in a struct, moved
/// into `tokio::spawn`). Returned by [`Context::done_owned`].
///
/// ```
/// use ctxkit::{Context, Error, OwnedDone};
/// use std::future::Future;
/// use std::task::{Context as TaskContext, Poll, Waker};
///
/// fn closed(ctx: &Context) -> OwnedDone {
///     ctx.done_owned() // borrows nothing: may outlive `ctx`
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut done = Box::pin(closed(&ctx));
/// drop(ctx);
/// cancel.cancel();
/// let mut task = TaskContext::from_waker(Waker::noop());
/// assert_eq!(done.as_mut().poll(&mut task), Poll::Ready(Error::Canceled));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct OwnedDone {
    ctx: Context,
    waiter: TaskWaiter,
}

impl Context {
    /// Like [`done`](Context::done), but the future holds a clone of the
    /// context, so it borrows nothing and can be stored or moved freely.
    ///
    /// ```
    /// use ctxkit::{Context, Error, OwnedDone};
    ///
    /// struct Connection {
    ///     closed: OwnedDone, // lives as long as the connection, no borrow
    /// }
    ///
    /// # #[cfg(feature = "tokio")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let connection = Connection { closed: ctx.done_owned() };
    /// drop(ctx);
    /// let task = tokio::spawn(async move { connection.closed.await });
    /// cancel.cancel();
    /// assert_eq!(task.await.unwrap(), Error::Canceled);
    /// # }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {} // needs a runtime: the `tokio` feature
    /// ```
    pub fn done_owned(&self) -> OwnedDone {
        OwnedDone {
            ctx: self.clone(),
            waiter: TaskWaiter::default(),
        }
    }
}

impl Future for OwnedDone {
    type Output = Error;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let this = &mut *self;
        this.waiter.poll(this.ctx.scope(), cx)
    }
}

impl Drop for OwnedDone {
    fn drop(&mut self) {
        self.waiter.leave(self.ctx.scope());
    }
}

impl fmt::Debug for OwnedDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.waiter.debug("OwnedDone", self.ctx.scope(), f)
    }
}

/// A task's registration with a scope, shared by [`Done`] and [`OwnedDone`].
#[derive(Default)]
struct TaskWaiter {
    /// Our key in the scope's registry, once registered.
    key: Option<usize>,
}

impl TaskWaiter {
    fn poll(&mut self, scope: Option<&Scope>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let Some(scope) = scope else {
            return Poll::Pending; // nothing can end this context
        };
        if let Some(err) = scope.err() {
            self.key = None; // drained with the rest
            return Poll::Ready(err);
        }
        let key = self.key;
        let registered = scope.with_registry(|registry| match key {
            None => (
                registry.insert(Registration::Task(cx.waker().clone())),
                None,
            ),
            Some(key) => {
                // Only the latest waker is woken. The one it replaces is
                // handed out, to be dropped after the lock.
                let replaced = match registry.get_mut(key) {
                    Some(Registration::Task(waker)) if !waker.will_wake(cx.waker()) => {
                        Some(std::mem::replace(waker, cx.waker().clone()))
                    }
                    _ => None,
                };
                (key, replaced)
            }
        });
        match registered {
            Ok((key, _replaced)) => {
                self.key = Some(key);
                Poll::Pending
            }
            Err((err, _)) => {
                self.key = None;
                Poll::Ready(err)
            }
        }
    }

    /// Removes the registration, if any: a future dropped before it resolved.
    fn leave(&mut self, scope: Option<&Scope>) {
        if let (Some(scope), Some(key)) = (scope, self.key.take()) {
            drop(scope.deregister(key));
        }
    }

    fn debug(&self, name: &str, scope: Option<&Scope>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("err", &scope.and_then(Scope::err))
            .field("registered", &self.key.is_some())
            .finish()
    }
}
