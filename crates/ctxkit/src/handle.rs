//! [`CancelHandle`]: the right to cancel one context.

use crate::cancel::{self, Origin};
use crate::deadline::Deadline;
use crate::error::{Cause, Error};
use crate::node_ref::NodeRef;
use crate::provenance;
use crate::Context;
use std::fmt;
use std::panic::Location;
use std::time::{Duration, Instant};

/// Cancels the context it was returned with, and with it every context
/// derived from that one. Dropping the handle cancels too.
///
/// Go asks you to `defer cancel()` and has a vet check for forgetting; here a
/// forgotten cancel cannot happen: when the handle goes out of scope, the
/// context ends and its timer and registrations are released. To let a
/// context live on until its parent or deadline ends it, call
/// [`detach`](CancelHandle::detach), or derive it with
/// [`Context::with_timeout_detached`](crate::Context::with_timeout_detached)
/// in the first place (the form for spawn loops).
///
/// A handle bound to `_` (`let (ctx, _) = ...`) is dropped on the spot,
/// and one bound inside a loop body at the end of each iteration: their
/// contexts are cancelled before anyone uses them, and their `Debug` says
/// `canceled: CancelHandle dropped`.
///
/// `CancelHandle` is `Send + Sync`: cancel from any thread, as often as you
/// like; only the first cancellation counts.
///
/// ```
/// use ctxkit::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// {
///     let _guard = cancel; // moved into a scope...
/// } // ...and cancelled when the scope ends
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// ```
#[must_use = "dropping a CancelHandle cancels its context at once; bind it (`let (ctx, _cancel) = ...`) or call `detach()`"]
pub struct CancelHandle {
    /// The scope this handle can cancel. `None` once detached, and from the
    /// start for a scope born done (its parent had ended): there is nothing
    /// to cancel, so the handle holds no reference.
    ///
    /// One pointer, so that `with_cancel` returns the context and its handle
    /// in two registers rather than through memory.
    scope: Option<NodeRef>,
}

impl CancelHandle {
    #[inline]
    pub(crate) fn new(node: NodeRef) -> CancelHandle {
        CancelHandle { scope: Some(node) }
    }

    /// Cancels the context with [`Error::Canceled`], if it is not done yet.
    ///
    /// When this returns, the context and every context derived from it
    /// report done, and their waiters have been woken. It does not wait for
    /// the work under the context to stop.
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// let (grandchild, _g) = ctx.with_value(1u8).with_cancel();
    /// cancel.cancel();
    /// cancel.cancel(); // idempotent
    /// assert!(grandchild.is_done());
    /// ```
    ///
    /// The call site is recorded for [`Context::provenance`](crate::Context::provenance).
    #[inline]
    #[track_caller]
    pub fn cancel(&self) {
        if let Some(node) = self.live_node() {
            let site = provenance::site_id(Location::caller());
            // `None`: the default cause, without touching its shared count.
            cancel::cancel(node, Error::Canceled, None, Origin::Handle(site));
        }
    }

    /// Cancels the context with [`Error::Canceled`] and `cause` as its
    /// [`Context::cause`](crate::Context::cause), if it is not done yet (the
    /// first cancellation wins, and its cause with it).
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(std::io::Error::other("config reloaded"));
    /// cancel.cancel_with(std::io::Error::other("ignored: already cancelled"));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "config reloaded");
    /// ```
    ///
    /// A cause that already is a [`Cause`](crate::Cause) is kept as it is,
    /// not wrapped again: a server that ends every request the same way can
    /// allocate that cause once and share it, and it still downcasts to its
    /// own type.
    ///
    /// ```
    /// use ctxkit::{Cause, Context, Message};
    /// use std::sync::{Arc, OnceLock};
    ///
    /// fn finished() -> Cause {
    ///     static FINISHED: OnceLock<Cause> = OnceLock::new();
    ///     FINISHED.get_or_init(|| Arc::new(Message::new("request finished"))).clone()
    /// }
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(finished());
    /// assert!(Arc::ptr_eq(&ctx.cause().unwrap(), &finished()));
    /// assert!(ctx.cause().unwrap().downcast_ref::<Message>().is_some());
    /// ```
    #[track_caller]
    pub fn cancel_with<E>(&self, cause: E)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(node) = self.live_node() {
            let site = provenance::site_id(Location::caller());
            let cause = Some(crate::error::into_cause(cause));
            cancel::cancel(node, Error::Canceled, cause, Origin::Handle(site));
        }
    }

    /// Ends the context as [`cancel_with`](CancelHandle::cancel_with)
    /// does, giving up the handle; or, when nothing could ever see that
    /// end, lets the context go without it, as [`detach`](CancelHandle::detach)
    /// and a drop would.
    ///
    /// Nothing can see it when no [`Context`](crate::Context) of it, or of
    /// any context derived from it, is left, and nothing is registered on
    /// it (an [`after_func`](crate::Context::after_func) still counts
    /// after its handle is dropped): nobody is left to ask its
    /// [`err`](crate::Context::err), its cause or its provenance. The
    /// context then leaves its parent and the timer at once, without the
    /// cancel's lock, record and wake-ups (a child made, ended and freed
    /// this way costs about a quarter less than with `cancel_with`), and
    /// no `tracing` event reports an end nobody saw. A context still held
    /// costs one check more than `cancel_with`. A server that ends each
    /// request's context once the response is sent then pays for that end
    /// only on the requests whose context is still held somewhere (a task
    /// the handler spawned).
    ///
    /// ```
    /// use ctxkit::{Context, Error, Message};
    ///
    /// let (parent, _cancel) = Context::background().with_cancel();
    /// // Still held: ended, with its cause, like `cancel_with`.
    /// let (watched, finish) = parent.with_cancel();
    /// finish.finish_with(Message::new("response sent"));
    /// assert_eq!(watched.err(), Some(Error::Canceled));
    /// assert_eq!(watched.cause().unwrap().to_string(), "response sent");
    ///
    /// // Nobody holds it: it is simply let go.
    /// let (unwatched, finish) = parent.with_cancel();
    /// drop(unwatched);
    /// finish.finish_with(Message::new("response sent"));
    /// assert_eq!(parent.registrations(), 0);
    /// ```
    #[track_caller]
    pub fn finish_with<E>(mut self, cause: E)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let Some(node) = self.live_node() else {
            return;
        };
        if cancel::is_unobserved(node) {
            // The release of our reference, the last, takes the scope out
            // of its parent and the timer, as a detached handle's would.
            self.scope = None;
            return;
        }
        let site = provenance::site_id(Location::caller());
        let cause = Some(crate::error::into_cause(cause));
        cancel::cancel(node, Error::Canceled, cause, Origin::Handle(site));
    }

    /// Cancels as [`cancel`](CancelHandle::cancel) does, on behalf of
    /// `source`: something outside the program, which
    /// [`Context::provenance`](crate::Context::provenance) then names
    /// ([`Origin::Integration`](crate::provenance::Origin::Integration)),
    /// as does the `tracing` event of feature `tracing`.
    ///
    /// For integrations: name the event, not the code, in a few words that
    /// read well after "canceled: ", such as `"SIGTERM received"`, `"HTTP
    /// client disconnected"`, `"HTTP server shutting down"`, `"gRPC caller
    /// cancelled"`. The core's [`signal`](crate#features) module names
    /// the signal. The context's [`cause`](crate::Context::cause) is
    /// [`Error::Canceled`]; to give a cause too, use
    /// [`cancel_from_with`](CancelHandle::cancel_from_with).
    ///
    /// ```
    /// use ctxkit::provenance::Origin;
    /// use ctxkit::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_from("HTTP client disconnected");
    /// let why = ctx.provenance().unwrap();
    /// assert_eq!(why.origin(), Origin::Integration("HTTP client disconnected"));
    /// assert!(why.to_string().starts_with("canceled: HTTP client disconnected, "));
    /// ```
    pub fn cancel_from(&self, source: &'static str) {
        if let Some(node) = self.live_node() {
            let source = provenance::source_id(source);
            cancel::cancel(node, Error::Canceled, None, Origin::Integration(source));
        }
    }

    /// [`cancel_from`](CancelHandle::cancel_from) with a cause, as
    /// [`cancel_with`](CancelHandle::cancel_with) gives one.
    ///
    /// ```
    /// use ctxkit::provenance::Origin;
    /// use ctxkit::{Context, Message};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_from_with("gRPC caller cancelled", Message::new("client sent RST_STREAM"));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "client sent RST_STREAM");
    /// assert_eq!(ctx.provenance().unwrap().origin(), Origin::Integration("gRPC caller cancelled"));
    /// ```
    pub fn cancel_from_with<E>(&self, source: &'static str, cause: E)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(node) = self.live_node() {
            let source = provenance::source_id(source);
            let cause = Some(crate::error::into_cause(cause));
            cancel::cancel(node, Error::Canceled, cause, Origin::Integration(source));
        }
    }

    /// [`cancel_from_with`](CancelHandle::cancel_from_with) with a cause
    /// already shared (or none): for the patterns of this crate, which name
    /// themselves as the origin (`"errgroup task failed"`...).
    pub(crate) fn cancel_from_cause(&self, source: &'static str, cause: Option<Cause>) {
        if let Some(node) = self.live_node() {
            let source = provenance::source_id(source);
            cancel::cancel(node, Error::Canceled, cause, Origin::Integration(source));
        }
    }

    /// Gives up the handle without cancelling: the context then ends only
    /// when its parent or its deadline ends it.
    ///
    /// A detached context that nobody holds any more is freed at once, timer
    /// entry included: nothing could observe its end.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let (parent, cancel_parent) = Context::background().with_cancel();
    /// let (ctx, cancel) = parent.with_timeout(Duration::from_secs(60));
    /// cancel.detach();
    /// assert!(!ctx.is_done());
    /// cancel_parent.cancel();
    /// assert!(ctx.is_done());
    /// ```
    #[inline]
    pub fn detach(mut self) {
        self.scope = None;
    }

    /// Moves this context's own deadline to `deadline`, earlier or later;
    /// returns false, changing nothing, if the context is already done. (A
    /// move made in the very instant the old deadline fires loses to it:
    /// it returns false once the context is done.)
    ///
    /// - The context's [`deadline`](crate::Context::deadline), and that of
    ///   every context derived from it, is still the earliest on its path to
    ///   the root: a move later than an ancestor's deadline changes nothing
    ///   visible (until that ancestor's moves later too). Descendants see the
    ///   move at once, and those that inherited the deadline end, and wake
    ///   their waiters, at the new time.
    /// - A deadline at or before now ends the context and its subtree with
    ///   [`Error::DeadlineExceeded`] before this returns.
    /// - A race with the deadline firing or with a cancel is won by whichever
    ///   ends the context first; its err and cause stay one consistent pair.
    /// - The cause given to `with_deadline_cause` / `with_timeout_cause`
    ///   goes with the deadline when it moves.
    /// - The timer holds one entry for the context whatever the number of
    ///   moves; a move costs about one timer update and allocates nothing.
    ///
    /// Also works on a [`with_cancel`](crate::Context::with_cancel) handle:
    /// it gives the context a deadline.
    ///
    /// An idle timeout: the connection ends after 50 ms without a message,
    /// and every message pushes that back.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::{Duration, Instant};
    ///
    /// let idle = Duration::from_millis(50);
    /// let (conn, conn_handle) = Context::background().with_timeout(idle);
    /// let (request, _request_handle) = conn.with_cancel(); // inherits the deadline
    /// for _message in 0..3 {
    ///     std::thread::sleep(Duration::from_millis(10)); // a message arrives
    ///     assert!(conn_handle.set_timeout(idle), "still open: extend");
    ///     assert_eq!(request.deadline(), conn.deadline());
    /// }
    /// assert_eq!(request.wait(), Error::DeadlineExceeded); // 50 ms of silence
    /// assert!(!conn_handle.set_timeout(idle), "too late: already done");
    ///
    /// // Cutting the budget now ends the context before the call returns.
    /// let (ctx, handle) = Context::background().with_timeout(Duration::from_secs(60));
    /// assert!(handle.set_deadline(Instant::now()));
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// ```
    pub fn set_deadline(&self, deadline: Instant) -> bool {
        let passed = deadline <= Instant::now();
        self.move_deadline(Deadline::from_instant(deadline), passed)
    }

    /// [`set_deadline`](CancelHandle::set_deadline)`(now + timeout)`.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let (ctx, handle) = Context::background().with_cancel();
    /// assert_eq!(ctx.deadline(), None);
    /// assert!(handle.set_timeout(Duration::from_secs(5)));
    /// assert!(ctx.remaining().unwrap() <= Duration::from_secs(5));
    /// ```
    pub fn set_timeout(&self, timeout: Duration) -> bool {
        let at = crate::deadline::instant_after(Instant::now(), timeout);
        self.move_deadline(Deadline::from_instant(at), timeout.is_zero())
    }

    /// Removes this context's own deadline: its deadline is its parent's
    /// again (or none). The deadline's cause, if one was given, goes with
    /// it. Returns false, changing nothing, if the context is already done.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let (parent, _p) = Context::background().with_timeout(Duration::from_secs(60));
    /// let (ctx, handle) = parent.with_timeout(Duration::from_secs(1));
    /// assert!(handle.clear_deadline());
    /// assert_eq!(ctx.deadline(), parent.deadline());
    /// ```
    pub fn clear_deadline(&self) -> bool {
        self.move_deadline(Deadline::NEVER, false)
    }

    /// The context this handle cancels, while the handle holds it: `None`
    /// once [detached](CancelHandle::detach), for a [default](CancelHandle::default)
    /// handle, and for a context born done under one that had already
    /// ended without a cause of its own (a plain cancel, a deadline):
    /// there was nothing left for the handle to hold.
    ///
    /// For code that keeps only the handle and, now and then, needs to see
    /// how its context ended: one reference fewer to keep than the pair.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// drop(ctx); // only the handle is kept
    /// cancel.cancel();
    /// assert_eq!(cancel.context().unwrap().err(), Some(Error::Canceled));
    ///
    /// let (done, _) = Context::background().with_cancel(); // dropped: cancelled
    /// let (_, born_done) = done.with_cancel();
    /// assert!(born_done.context().is_none());
    /// ```
    pub fn context(&self) -> Option<Context> {
        self.scope.clone().map(Context::from_node_ref)
    }

    fn move_deadline(&self, to: Deadline, passed: bool) -> bool {
        match &self.scope {
            Some(node) => cancel::move_deadline(node, to, passed),
            None => false, // born done: nothing to move
        }
    }

    #[inline]
    fn live_node(&self) -> Option<&NodeRef> {
        let node = self.scope.as_ref()?;
        // Skip the allocation of a cause and the lock when there is nothing
        // left to cancel.
        let scope = node.scope().expect("a handle holds a scope node");
        if scope.is_done() {
            // Another cancel ended it first: ours still returns only once
            // that one has ended the whole subtree.
            scope.wait_drained();
            return None;
        }
        Some(node)
    }
}

/// A handle that cancels nothing, as a [detached](CancelHandle::detach)
/// one: what [`std::mem::take`] leaves behind when it moves a handle out
/// of a struct that must keep one.
///
/// ```
/// use ctxkit::{CancelHandle, Context};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut slot = cancel;
/// let taken = std::mem::take(&mut slot);
/// drop(slot); // the default left behind: cancels nothing
/// assert!(!ctx.is_done());
/// drop(taken);
/// assert!(ctx.is_done());
/// ```
impl Default for CancelHandle {
    #[inline]
    fn default() -> CancelHandle {
        CancelHandle { scope: None }
    }
}

impl Drop for CancelHandle {
    /// Cancels as [`cancel`](CancelHandle::cancel) does, and marks the
    /// context as ended by a dropped handle, which its `Debug` shows.
    #[inline]
    fn drop(&mut self) {
        if let Some(node) = self.live_node() {
            if provenance::drop_backtraces() {
                return drop_with_backtrace(node);
            }
            cancel::cancel(node, Error::Canceled, None, Origin::Dropped);
        }
    }
}

/// A handle's drop with `CTXKIT_DROP_BACKTRACE=1`: the backtrace is
/// recorded before the cancel, so that whoever sees the context ended by the
/// drop finds it, and forgotten if something else ended it first.
#[cold]
#[inline(never)]
fn drop_with_backtrace(node: &NodeRef) {
    let number = provenance::record_drop_backtrace(node);
    cancel::cancel(node, Error::Canceled, None, Origin::Dropped);
    let scope = node.scope().expect("a handle holds a scope node");
    if !scope.ended_by_dropped_handle() {
        provenance::forget_drop_backtrace(node, number);
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tuple = f.debug_tuple("CancelHandle");
        match &self.scope {
            Some(node) => tuple.field(&node.scope().and_then(|s| s.err())),
            // Detached, or born done: either way it can cancel nothing.
            None => tuple.field(&"nothing to cancel"),
        };
        tuple.finish()
    }
}
