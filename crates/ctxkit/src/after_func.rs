//! [`AfterFunc`]: run a function once a context is done.

use crate::cancel::Scope;
use crate::context::Context;
use crate::executor;
use crate::node_ref::NodeRef;
use crate::registry::{Callback, Registration};
use crate::sync::{AtomicU8, Ordering};
use std::fmt;

/// A function scheduled by [`Context::after_func`] to run once the context is
/// done; [`stop`](AfterFunc::stop) unschedules it.
///
/// Dropping an `AfterFunc` does not stop it.
///
/// ```
/// use ctxkit::Context;
/// use std::sync::mpsc;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let (ran, runs) = mpsc::channel();
/// let first = ctx.after_func(move || ran.send("first").unwrap());
/// let second = ctx.after_func(|| unreachable!("stopped in time"));
/// assert!(second.stop()); // unscheduled: it will never run
/// cancel.cancel();
/// assert_eq!(runs.recv().unwrap(), "first");
/// assert!(!first.stop()); // too late: its run was committed by the cancel
/// ```
pub struct AfterFunc {
    state: State,
    /// Set by the first `stop`. A registry key is removed by its owner at most
    /// once: after that the key may belong to someone else.
    stopped: AtomicU8,
}

enum State {
    /// Registered with a live scope under `key`.
    Registered { scope: NodeRef, key: usize },
    /// The context can never be done: `f` was dropped unrun. `stop` reports
    /// true once, as Go does, since it "prevented" the run.
    Never,
    /// The context was already done: `f` was dispatched at once.
    Dispatched,
}

impl Context {
    /// Runs `f` once, on a callback thread, after this context is done.
    ///
    /// - If the context is live, `f` never runs on the calling thread, and
    ///   [`CancelHandle::cancel`](crate::CancelHandle::cancel) does not wait
    ///   for it; if the context is already done, `f` is dispatched at once.
    /// - On a context that can never be cancelled (`background()`,
    ///   `without_cancel()`), `f` never runs.
    /// - Once `cancel()` has returned, the run is committed:
    ///   [`AfterFunc::stop`] returns false and `f` runs.
    /// - A panic in `f` is contained: other callbacks run, nothing is poisoned.
    /// - A pending `f` keeps its context alive, so that the context's
    ///   deadline or an ancestor's cancellation can still run it after every
    ///   other reference is gone; `stop` or the run releases it. So keep the
    ///   `AfterFunc` (to `stop` it) for a context that nothing may end: one
    ///   whose handle was detached, without a deadline, under no
    ///   cancellable ancestor. There `f` never runs, as in Go, and until
    ///   `stop` it and the context stay in memory (Go's collector would
    ///   free them).
    ///
    /// Several registrations on one context are independent of each other.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::sync::mpsc;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, rx) = mpsc::channel();
    /// let _ = ctx.after_func(move || tx.send("closed the connection").unwrap());
    /// cancel.cancel();
    /// assert_eq!(rx.recv().unwrap(), "closed the connection");
    /// ```
    pub fn after_func<F: FnOnce() + Send + 'static>(&self, f: F) -> AfterFunc {
        let Some(node) = self.scope_node() else {
            return AfterFunc::new(State::Never);
        };
        let scope = node.scope().expect("scope_node is a scope");
        let callback = Box::new(Callback {
            run: Box::new(f),
            _keepalive: node.clone(),
        });
        // Built outside the lock; moved in only if the scope is live.
        let mut callback = Some(callback);
        let registered = scope.with_registry(|registry| {
            registry.insert(Registration::Callback(callback.take().expect("once")))
        });
        let state = match registered {
            Ok(key) => State::Registered {
                scope: node.clone(),
                key,
            },
            Err(_) => {
                let callback = callback.expect("not moved into a done scope");
                executor::spawn(callback.run);
                State::Dispatched
            }
        };
        AfterFunc::new(state)
    }
}

impl AfterFunc {
    fn new(state: State) -> AfterFunc {
        AfterFunc {
            state,
            stopped: AtomicU8::new(0),
        }
    }

    /// Keeps the function from running. Returns true if this call prevented
    /// the run; false if the function has already been dispatched (the
    /// context is done) or an earlier `stop` already stopped it.
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let after = ctx.after_func(|| unreachable!("stopped in time"));
    /// assert!(after.stop());
    /// assert!(!after.stop(), "only the first stop prevents anything");
    /// cancel.cancel();
    /// ```
    pub fn stop(&self) -> bool {
        if self.stopped.swap(1, Ordering::Relaxed) == 1 {
            return false;
        }
        match &self.state {
            State::Registered { scope, key } => {
                let scope: &Scope = scope.scope().expect("registered with a scope");
                // The callback (a user closure) is dropped here, after the
                // lock is released.
                scope.deregister(*key).is_some()
            }
            State::Never => true,
            State::Dispatched => false,
        }
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Registered { .. } => "registered",
            State::Never => "never runs",
            State::Dispatched => "dispatched",
        };
        f.debug_tuple("AfterFunc").field(&state).finish()
    }
}
