//! [`Context::merge`]: one context ended by either of two parents.
//!
//! A merged context is a cancellation scope with two parents. Its node hangs
//! under the first (`self`), as any derived context does, and its scope is
//! registered as a child with the scopes of both: the first parent's
//! cancellation that reaches it ends it, with that parent's error and cause,
//! exactly as a child of either would end. Nothing runs per merge: no thread,
//! no task, no callback; just a second registration, removed when the merged
//! scope ends or is dropped.

use crate::cancel::Scope;
use crate::context::Context;
use crate::handle::CancelHandle;
use crate::sync::AtomicU32;
use crate::values::ValueLayer;

/// The layer of a merged context: its scope, and what it keeps of the
/// second parent.
pub(crate) struct Merged {
    pub(crate) scope: Scope,
    /// The second parent: kept alive, for its scope (whose registry holds
    /// ours), its deadline and its values.
    pub(crate) other: Context,
    /// This scope's key in the second parent's scope (see
    /// `Scope::key_in_parent`).
    pub(crate) key_in_other: AtomicU32,
    /// The values of both parents, the first's winning, when the second
    /// carries any; otherwise lookups go on up the first parent's chain.
    pub(crate) values: Option<ValueLayer>,
}

impl Context {
    /// A context that is done when this context or `other` is done, or when
    /// the returned handle cancels it, whichever comes first.
    ///
    /// - Its [`err`](Context::err) and [`cause`](Context::cause) are those
    ///   of whichever parent ended first (Go's cause table applies as for a
    ///   child of that parent); if both were done already, this context's.
    /// - Its [`deadline`](Context::deadline) is the earlier of both parents'
    ///   (and follows them when they [move](CancelHandle::set_deadline)).
    /// - [`value::<T>()`](Context::value) looks in this context first, then
    ///   in `other`.
    /// - It costs one registration in each parent and no thread or task. A
    ///   merged context that nobody holds any more leaves both parents at
    ///   once. Merging with a context that can never be cancelled and holds
    ///   no values (`background()`) is just [`with_cancel`](Context::with_cancel).
    ///
    /// # When to merge, and what to use instead
    ///
    /// Merge when the work must stop on either of two independent lifetimes
    /// and needs a context for both: a request's context and the server's
    /// shutdown context, a connection's and a job's. When only one side needs
    /// to stop the other (a job that should also stop when the server shuts
    /// down, but whose context need not carry the server's deadline or
    /// values), [`after_func`](Context::after_func) on that side, cancelling
    /// the other's handle, is enough, and costs a callback rather than a
    /// second parent. When one lifetime always contains the other, derive
    /// from the shorter one: it already ends with both.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// struct RequestId(u32);
    ///
    /// let (server, shutdown) = Context::background().with_cancel();
    /// let (request, _done) = Context::background().with_value(RequestId(7)).with_cancel();
    ///
    /// let (work, _cancel) = request.merge(&server);
    /// assert_eq!(work.value::<RequestId>().unwrap().0, 7);
    /// shutdown.cancel_with(std::io::Error::other("server shutting down"));
    /// assert_eq!(work.err(), Some(Error::Canceled));
    /// assert_eq!(work.cause().unwrap().to_string(), "server shutting down");
    /// assert!(!request.is_done(), "the request itself goes on");
    /// ```
    #[inline]
    #[track_caller]
    pub fn merge(&self, other: &Context) -> (Context, CancelHandle) {
        if other.adds_nothing() {
            return self.with_cancel();
        }
        self.merge_with(other)
    }

    /// Whether merging with this context adds nothing: it can never be
    /// cancelled and holds no values (`background()`, `todo()`).
    #[inline]
    fn adds_nothing(&self) -> bool {
        self.scope_node().is_none() && self.value_layer().is_none()
    }

    #[track_caller]
    fn merge_with(&self, other: &Context) -> (Context, CancelHandle) {
        if self.adds_nothing() {
            return other.with_cancel();
        }
        let values = other
            .value_layer()
            .map(|theirs| ValueLayer::merged(self.value_layer(), theirs));
        let site = crate::provenance::site_id(std::panic::Location::caller());
        self.new_merged(other, values, site)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{Context, Error};
    use std::time::{Duration, Instant};

    #[derive(Debug, PartialEq)]
    struct A(u8);
    #[derive(Debug, PartialEq)]
    struct B(u8);

    #[test]
    fn either_parent_or_the_handle_ends_it() {
        for which in 0..3 {
            let (first, cancel_first) = Context::background().with_cancel();
            let (second, cancel_second) = Context::background().with_cancel();
            let (merged, cancel) = first.merge(&second);
            let (child, _c) = merged.with_cancel();
            assert!(!merged.is_done());
            assert_eq!(first.registrations(), 1);
            assert_eq!(second.registrations(), 1);
            match which {
                0 => cancel_first.cancel(),
                1 => cancel_second.cancel(),
                _ => cancel.cancel(),
            }
            assert_eq!(merged.err(), Some(Error::Canceled));
            assert_eq!(child.err(), Some(Error::Canceled));
            // Ended, it left both parents.
            assert_eq!(first.registrations(), 0);
            assert_eq!(second.registrations(), 0);
        }
    }

    #[test]
    fn a_dropped_merge_leaves_both_parents() {
        let (first, _a) = Context::background().with_cancel();
        let (second, _b) = Context::background().with_cancel();
        for _ in 0..1000 {
            let (merged, cancel) = first.merge(&second);
            cancel.detach();
            drop(merged);
            assert_eq!(first.registrations(), 0);
            assert_eq!(second.registrations(), 0);
        }
    }

    #[test]
    fn values_look_in_self_first() {
        let first = Context::background().with_value(A(1));
        let second = Context::background().with_value(A(2)).with_value(B(2));
        let (merged, _c) = first.merge(&second);
        assert_eq!(merged.value::<A>(), Some(&A(1)));
        assert_eq!(merged.value::<B>(), Some(&B(2)));
        let below = merged.with_value(7u32);
        assert_eq!(below.value::<B>(), Some(&B(2)));
        assert_eq!(below.value::<u32>(), Some(&7));
    }

    #[test]
    fn the_deadline_is_the_earlier_and_ends_it() {
        let soon = Instant::now() + Duration::from_millis(20);
        let (first, _a) = Context::background().with_timeout(Duration::from_secs(3600));
        let (second, _b) = Context::background().with_deadline(soon);
        let (merged, _c) = first.merge(&second);
        assert_eq!(merged.deadline(), Some(soon));
        assert_eq!(merged.wait(), Error::DeadlineExceeded);
    }

    #[test]
    fn a_done_parent_gives_a_done_merge() {
        let (second, cancel) = Context::background().with_cancel();
        cancel.cancel_with(std::io::Error::other("gone"));
        let (first, _a) = Context::background().with_cancel();
        let (merged, _c) = first.merge(&second);
        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(merged.cause().unwrap().to_string(), "gone");
        assert_eq!(first.registrations(), 0);
    }

    #[test]
    fn merging_with_background_is_with_cancel() {
        let (ctx, _a) = Context::background().with_cancel();
        let (merged, _c) = ctx.merge(&Context::background());
        assert_eq!(
            format!("{merged:?}"),
            "context.Background.WithCancel.WithCancel"
        );
        let (merged, _c) = Context::background().merge(&ctx);
        assert_eq!(
            format!("{merged:?}"),
            "context.Background.WithCancel.WithCancel"
        );
    }
}
