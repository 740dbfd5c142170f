//! [`CancelHandle`]: the right to cancel one context.

use crate::cancel::{self, Origin};
use crate::error::Error;
use crate::node_ref::NodeRef;
use crate::sync::Arc;
use std::fmt;

/// Cancels the context it was returned with, and with it every context
/// derived from that one. Dropping the handle cancels too.
///
/// Go asks you to `defer cancel()` and has a vet check for forgetting; here a
/// forgotten cancel cannot happen: when the handle goes out of scope, the
/// context ends and its timer and registrations are released. To let a
/// context live on until its parent or deadline ends it, call
/// [`detach`](CancelHandle::detach).
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

    /// The handle of a scope that was done from the start.
    #[inline]
    pub(crate) fn ended() -> CancelHandle {
        CancelHandle { scope: None }
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
    #[inline]
    pub fn cancel(&self) {
        if let Some(node) = self.live_node() {
            // `None`: the default cause, without touching its shared count.
            cancel::cancel(node, Error::Canceled, None, Origin::Handle);
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
    pub fn cancel_with<E>(&self, cause: E)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(node) = self.live_node() {
            cancel::cancel(node, Error::Canceled, Some(Arc::new(cause)), Origin::Handle);
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

    #[inline]
    fn live_node(&self) -> Option<&NodeRef> {
        let node = self.scope.as_ref()?;
        // Skip the allocation of a cause and the lock when there is nothing
        // left to cancel.
        let scope = node.scope().expect("a handle holds a scope node");
        (!scope.is_done()).then_some(node)
    }
}

impl Drop for CancelHandle {
    #[inline]
    fn drop(&mut self) {
        self.cancel();
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
