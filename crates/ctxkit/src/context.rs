//! [`Context`]: derivation and observation.

use crate::cancel::{self, Scope};
use crate::deadline::Deadline;
use crate::error::{Cause, Error};
use crate::handle::CancelHandle;
use crate::merge::Merged;
use crate::node_ref::NodeRef;
use crate::provenance::{self, Provenance, SiteId};
use crate::sync::AtomicU32;
use crate::values::ValueLayer;
use std::fmt;
use std::panic::Location;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Carries cancellation, a deadline and request-scoped values across API
/// boundaries, threads and async tasks.
///
/// A `Context` is an immutable view of one node in a tree. The roots are
/// [`background`](Context::background) and [`todo`](Context::todo); every
/// other context is derived from a parent and adds one thing: a way to cancel
/// it ([`with_cancel`](Context::with_cancel)), a deadline
/// ([`with_deadline`](Context::with_deadline)), a value
/// ([`with_value`](Context::with_value)), or a break in cancellation
/// ([`without_cancel`](Context::without_cancel)).
///
/// # Keep the handle, or take a detached child
///
/// Dropping a [`CancelHandle`] cancels its context, at once. Two habits
/// from Go therefore hand out contexts that are already cancelled:
///
/// | wrong: cancelled before use | right |
/// |---|---|
/// | `let (ctx, _) = parent.with_cancel();` (`_` drops the handle there and then) | `let (ctx, _cancel) = parent.with_cancel();` (dropped at the end of the scope) |
/// | in a spawn loop, `let (ctx, _cancel) = parent.with_timeout(d); spawn(move \|\| work(ctx));` (dropped at the end of each iteration) | `let ctx = parent.with_timeout_detached(d); spawn(move \|\| work(ctx));` |
///
/// [`with_timeout_detached`](Context::with_timeout_detached) and
/// [`with_deadline_detached`](Context::with_deadline_detached) give a child
/// that owns its own cancellation: it ends with its deadline or its parent,
/// and is freed when nothing holds it. A context ended by its handle's drop
/// says so in its `Debug` output: `WithCancel(canceled: CancelHandle
/// dropped)`.
///
/// ```
/// use ctxkit::Context;
/// use std::time::Duration;
///
/// let root = Context::background();
/// let mut wrong = Vec::new();
/// let mut right = Vec::new();
/// for _ in 0..3 {
///     let (ctx, _cancel) = root.with_timeout(Duration::from_secs(5));
///     wrong.push(ctx); // `_cancel` is dropped at the end of this iteration...
///     right.push(root.with_timeout_detached(Duration::from_secs(5)));
/// }
/// assert!(wrong.iter().all(Context::is_done), "...so every one is cancelled");
/// assert!(format!("{:?}", wrong[0]).contains("CancelHandle dropped"));
/// assert!(right.iter().all(|ctx| !ctx.is_done()));
/// ```
///
/// # Contract
///
/// - Cancelling a context cancels every context derived from it, through any
///   number of layers, before [`CancelHandle::cancel`] returns.
/// - Once done, a context stays done, and its [`err`](Context::err) and
///   [`cause`](Context::cause) never change: the first cancellation wins.
/// - A context derived from a done parent is done at once, with the parent's
///   err and cause.
/// - A context's deadline is the earliest of its own and its ancestors'.
/// - Observation ([`is_done`](Context::is_done), [`err`](Context::err),
///   [`check`](Context::check)) is one atomic load: no lock, no allocation.
///   Cloning is one reference-count increment, and free for `background()`.
/// - A context nobody holds any more is freed at once, with its timer entry
///   and its place in its parent, whether or not it was ever cancelled.
///
/// `Context` is `Clone + Send + Sync + 'static`: pass it by value to threads
/// and tasks, or by reference down a call stack.
///
/// ```
/// use ctxkit::{Context, Error};
/// use std::time::Duration;
///
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(10));
/// let worker = {
///     let ctx = ctx.clone();
///     std::thread::spawn(move || {
///         let mut ticks = 0;
///         while ctx.sleep(Duration::from_millis(1)).is_ok() {
///             ticks += 1;
///         }
///         (ticks, ctx.err())
///     })
/// };
/// cancel.cancel();
/// let (_ticks, err) = worker.join().unwrap();
/// assert_eq!(err, Some(Error::Canceled));
/// ```
#[derive(Clone, Default)]
pub struct Context {
    /// `None` is `background()`: no allocation, nothing to observe.
    node: Option<NodeRef>,
}

/// One layer of a context chain. Every derived context owns one.
pub(crate) struct Node {
    parent: Context,
    layer: Layer,
}

// Each layer keeps where it was created (`provenance::SiteId`): a scope in
// its header, a value layer in itself, the others beside their tag.
enum Layer {
    Todo(SiteId),
    Cancel(Scope),
    /// A scope with a second parent (`Context::merge`); boxed, as it is
    /// larger than any other layer and rare.
    Merge(Box<Merged>),
    Value(ValueLayer),
    WithoutCancel(SiteId),
}

impl Node {
    pub(crate) fn parent(&self) -> &Context {
        &self.parent
    }

    /// The cancellation scope this node holds, if it is a cancel layer.
    #[inline]
    pub(crate) fn scope(&self) -> Option<&Scope> {
        // The common layer first, on its own: one comparison of the tag on
        // the observation paths, the rare merge out of line.
        if let Layer::Cancel(scope) = &self.layer {
            return Some(scope);
        }
        self.merged_scope()
    }

    /// The scope of a merge layer; `None` for any other non-scope layer.
    #[cold]
    #[inline(never)]
    fn merged_scope(&self) -> Option<&Scope> {
        match &self.layer {
            Layer::Merge(merged) => Some(&merged.scope),
            _ => None,
        }
    }

    /// A merged scope's second parent's scope, and where the merged scope
    /// keeps its place there; `None` for any other node, and for a merge
    /// whose second parent can never be cancelled.
    #[inline]
    pub(crate) fn other_parent(&self) -> Option<(&Scope, &AtomicU32)> {
        match &self.layer {
            Layer::Merge(merged) => Some((merged.other.scope()?, &merged.key_in_other)),
            _ => None,
        }
    }

    /// Called once, by the last owner, before the node is dropped: a scope
    /// leaves its parent and the timer. (The chain above is released by
    /// `node_ref`, iteratively.)
    #[inline]
    pub(crate) fn release(&self) {
        match &self.layer {
            Layer::Cancel(scope) => cancel::release(self, scope),
            Layer::Merge(merged) => cancel::release(self, &merged.scope),
            _ => {}
        }
    }

    /// Where this node was created: the call to `with_cancel`,
    /// `with_value`, `merge`... that made it (`#[track_caller]`).
    pub(crate) fn created_at(&self) -> &'static Location<'static> {
        provenance::created_at(self.site())
    }

    fn site(&self) -> SiteId {
        match &self.layer {
            Layer::Todo(site) | Layer::WithoutCancel(site) => *site,
            Layer::Cancel(scope) => scope.site(),
            Layer::Merge(merged) => merged.scope.site(),
            Layer::Value(values) => values.site,
        }
    }

    /// How long ago this node was created (to a few milliseconds: see
    /// `provenance`).
    pub(crate) fn age(&self) -> Duration {
        provenance::age(self.born())
    }

    /// When this node was created, in coarse clock ticks.
    pub(crate) fn born(&self) -> u32 {
        crate::node_ref::born(self)
    }

    /// A merged node's second parent; `None` for any other node.
    pub(crate) fn other_parent_context(&self) -> Option<&Context> {
        match &self.layer {
            Layer::Merge(merged) => Some(&merged.other),
            _ => None,
        }
    }

    /// The parent's reference, taken out so that the caller releases it.
    #[inline]
    pub(crate) fn take_parent(&mut self) -> Option<NodeRef> {
        self.parent.node.take()
    }
}

impl Context {
    /// The root of every context tree: never cancelled, no deadline, no
    /// values. Free: it allocates nothing, and neither do its clones.
    ///
    /// Use it in `main`, initialisation and tests, as the top of a request.
    ///
    /// ```
    /// let ctx = ctxkit::Context::background();
    /// assert!(!ctx.is_done());
    /// assert_eq!(ctx.deadline(), None);
    /// assert_eq!(format!("{ctx:?}"), "context.Background");
    /// ```
    pub fn background() -> Context {
        Context { node: None }
    }

    /// Like [`background`](Context::background), but marks a place where the
    /// right context is not known yet (static analysis and `Debug` show it).
    ///
    /// ```
    /// let ctx = ctxkit::Context::todo();
    /// assert!(!ctx.is_done());
    /// assert_eq!(format!("{ctx:?}"), "context.TODO");
    /// ```
    #[track_caller]
    pub fn todo() -> Context {
        static TODO: OnceLock<Context> = OnceLock::new();
        // One for the process: its creation site is its first caller's.
        let site = Location::caller();
        TODO.get_or_init(|| {
            let site = provenance::site_id(site);
            Context::derive(&Context::background(), || Layer::Todo(site))
        })
        .clone()
    }

    /// This context's node; `None` for `background()`.
    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    /// Who cancelled this context, from where, when, and how long it had
    /// lived; `None` while it is live (and always for a context that can
    /// never be cancelled).
    ///
    /// Works for any context under the cancelled one: the answer names the
    /// context whose cancellation it was, and how many levels up it is. See
    /// the [`provenance`](crate::provenance) module for what is recorded
    /// and what it costs.
    ///
    /// ```
    /// use ctxkit::provenance::Origin;
    /// use ctxkit::Context;
    ///
    /// let (server, _s) = Context::background().with_cancel();
    /// let (request, cancel) = server.with_cancel(); // the handle's creation site
    /// let (query, _q) = request.with_cancel();
    /// drop(cancel); // e.g. a `let (ctx, _) = ...` that was meant to keep it
    /// let why = query.provenance().unwrap();
    /// assert_eq!(why.origin(), Origin::HandleDropped);
    /// assert_eq!(why.levels_up(), 1);
    /// assert_eq!(why.created_at().line(), line!() - 6);
    /// let text = why.to_string();
    /// assert!(text.starts_with("canceled 1 level up: CancelHandle dropped (created at "), "{text}");
    /// assert!(server.provenance().is_none(), "live");
    /// ```
    pub fn provenance(&self) -> Option<Provenance> {
        provenance::of(self)
    }

    /// A child of this context with the layer `make` builds, once the node's
    /// block is allocated (see [`NodeRef::new`]).
    #[inline]
    fn derive(&self, make: impl FnOnce() -> Layer) -> Context {
        Context {
            node: Some(NodeRef::new(|| Node {
                parent: self.clone(),
                layer: make(),
            })),
        }
    }

    /// A child context that is cancelled when `handle` is cancelled or dropped,
    /// or when this context is, whichever happens first.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// let parent = Context::background();
    /// let (ctx, cancel) = parent.with_cancel();
    /// assert!(!ctx.is_done());
    /// cancel.cancel();
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// assert!(!parent.is_done(), "cancellation flows down, never up");
    /// ```
    #[inline]
    #[track_caller]
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        let site = provenance::site_id(Location::caller());
        self.new_scope(self.scope(), Deadline::NEVER, None, site)
    }

    /// A child context that is also cancelled, with
    /// [`Error::DeadlineExceeded`], at `deadline`.
    ///
    /// If this context's deadline is already as early, the child keeps it:
    /// as in Go, it is then a plain cancel scope, with no timer and no
    /// deadline of its own, so it follows its ancestors' deadline wherever
    /// that [moves](CancelHandle::set_deadline). (To give it one that stays
    /// when an ancestor's moves later, call `set_deadline` on its handle.) A
    /// deadline at or before now gives a context that is already done.
    ///
    /// # Range
    ///
    /// Deadlines are kept as signed 64-bit nanoseconds from the first
    /// deadline the process set: about 292 years either way. A later
    /// deadline saturates to that edge, so it fires (and
    /// [`deadline`](Context::deadline) reports it) about 292 years out: a
    /// 500-year deadline comes back about 208 years early, which no program
    /// will live to see. A timeout too large for an `Instant` at all
    /// (`Duration::MAX`) becomes a century. Use no deadline, not a huge one,
    /// for "never".
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::{Duration, Instant};
    ///
    /// let deadline = Instant::now() + Duration::from_millis(10);
    /// let (ctx, _cancel) = Context::background().with_deadline(deadline);
    /// assert_eq!(ctx.deadline(), Some(deadline));
    /// assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    /// ```
    #[track_caller]
    pub fn with_deadline(&self, deadline: Instant) -> (Context, CancelHandle) {
        self.with_deadline_of(OwnDeadline::at(deadline, None))
    }

    /// [`with_deadline`](Context::with_deadline)`(now + timeout)`.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(30));
    /// assert!(ctx.remaining().unwrap() <= Duration::from_secs(30));
    /// drop(cancel); // dropping the handle cancels: nothing is left running
    /// assert!(ctx.is_done());
    /// ```
    #[track_caller]
    pub fn with_timeout(&self, timeout: Duration) -> (Context, CancelHandle) {
        self.with_deadline_of(OwnDeadline::after(timeout, None))
    }

    /// Like [`with_deadline`](Context::with_deadline), but when the deadline
    /// ends the context its [`cause`](Context::cause) is `cause` (its
    /// [`err`](Context::err) is still `DeadlineExceeded`).
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Instant;
    ///
    /// #[derive(Debug)]
    /// struct SlowUpstream;
    /// impl std::fmt::Display for SlowUpstream {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("upstream took too long")
    ///     }
    /// }
    /// impl std::error::Error for SlowUpstream {}
    ///
    /// let (ctx, _cancel) = Context::background().with_deadline_cause(Instant::now(), SlowUpstream);
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// assert!(ctx.cause().unwrap().downcast_ref::<SlowUpstream>().is_some());
    /// ```
    #[track_caller]
    pub fn with_deadline_cause<E>(&self, deadline: Instant, cause: E) -> (Context, CancelHandle)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.with_deadline_of(OwnDeadline::at(
            deadline,
            Some(crate::error::into_cause(cause)),
        ))
    }

    /// [`with_deadline_cause`](Context::with_deadline_cause)`(now + timeout, cause)`.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let cause = std::io::Error::other("lookup budget spent");
    /// let (ctx, _cancel) = Context::background().with_timeout_cause(Duration::ZERO, cause);
    /// assert_eq!(ctx.cause().unwrap().to_string(), "lookup budget spent");
    /// ```
    #[track_caller]
    pub fn with_timeout_cause<E>(&self, timeout: Duration, cause: E) -> (Context, CancelHandle)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.with_deadline_of(OwnDeadline::after(
            timeout,
            Some(crate::error::into_cause(cause)),
        ))
    }

    /// A child context that ends at `now + timeout` (or with its parent),
    /// and owns its own cancellation: no [`CancelHandle`] to keep alive.
    ///
    /// This is the form for spawn loops, where Go writes
    /// `ctx, cancel := context.WithTimeout(parent, d); defer cancel()` and
    /// hands `ctx` to a goroutine. With [`with_timeout`](Context::with_timeout),
    /// a handle bound as `_cancel` inside the loop body is dropped at the end
    /// of each iteration, and dropping a handle cancels: every worker would
    /// start cancelled. Here there is no handle to drop. The context, its
    /// timer entry included, is freed as soon as nothing holds it, so a
    /// worker that finishes early leaves nothing behind.
    ///
    /// `with_timeout(timeout)` then [`detach`](CancelHandle::detach).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let root = Context::background();
    /// let workers: Vec<_> = (0..4)
    ///     .map(|n| {
    ///         // Each job gets its own 5 s budget; nothing to keep alive.
    ///         let ctx = root.with_timeout_detached(Duration::from_secs(5));
    ///         std::thread::spawn(move || (n, ctx.is_done()))
    ///     })
    ///     .collect();
    /// for worker in workers {
    ///     let (_n, cancelled_at_start) = worker.join().unwrap();
    ///     assert!(!cancelled_at_start);
    /// }
    /// ```
    #[must_use = "a detached context does nothing unless it is used"]
    #[track_caller]
    pub fn with_timeout_detached(&self, timeout: Duration) -> Context {
        let (ctx, handle) = self.with_timeout(timeout);
        handle.detach();
        ctx
    }

    /// A child context that ends at `deadline` (or with its parent), and
    /// owns its own cancellation: see
    /// [`with_timeout_detached`](Context::with_timeout_detached).
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Instant;
    ///
    /// let ctx = Context::background().with_deadline_detached(Instant::now());
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// ```
    #[must_use = "a detached context does nothing unless it is used"]
    #[track_caller]
    pub fn with_deadline_detached(&self, deadline: Instant) -> Context {
        let (ctx, handle) = self.with_deadline(deadline);
        handle.detach();
        ctx
    }

    /// A child scope with the deadline `own`, unless the inherited one is
    /// already as early: then, as in Go, the child is a plain cancel scope
    /// (no deadline of its own, no timer entry) that follows its ancestors'.
    #[inline]
    #[track_caller]
    fn with_deadline_of(&self, own: OwnDeadline) -> (Context, CancelHandle) {
        let site = provenance::site_id(Location::caller());
        let parent = self.scope();
        let deadline = Deadline::from_instant(own.at);
        if deadline >= self.effective_deadline() {
            return self.new_scope(parent, Deadline::NEVER, None, site);
        }
        self.new_scope(parent, deadline, Some(own.expiry), site)
    }

    /// A child scope under `parent` (this context's scope) with the deadline
    /// `own` of its own (`NEVER`: none), ending as `expiry` says (given
    /// exactly when `own` is), created at `site`.
    #[inline]
    fn new_scope(
        &self,
        parent: Option<&Scope>,
        own: Deadline,
        expiry: Option<cancel::Expiry>,
        site: SiteId,
    ) -> (Context, CancelHandle) {
        // A child of a scope that ended with its default cause is born done:
        // no lock, no registration, no timer entry. (Any other done parent is
        // caught by `attach`, under the parent's lock.)
        if let Some(err) = parent.and_then(Scope::ended_with_default_cause) {
            let ctx = self.derive(|| Layer::Cancel(Scope::new_done(own, err, site)));
            return (ctx, CancelHandle::default()); // born done: nothing to cancel
        }
        let (node, handle_node) = NodeRef::new_pair(|| Node {
            parent: self.clone(),
            layer: Layer::Cancel(Scope::new(own, site)),
        });
        if parent.is_some() || expiry.is_some() {
            cancel::attach(&node, parent, expiry);
        }
        if parent.is_none() && crate::tree::roots_tracked() {
            crate::tree::track_root(&node);
        }
        (Context { node: Some(node) }, CancelHandle::new(handle_node))
    }

    /// A merged scope under this context, with `other` as its second parent
    /// and `values` (this context's, then `other`'s) if `other` has any:
    /// registered with both parents' scopes, or done at once if either is.
    pub(crate) fn new_merged(
        &self,
        other: &Context,
        values: Option<ValueLayer>,
        site: SiteId,
    ) -> (Context, CancelHandle) {
        let parent = self.scope();
        let (node, handle_node) = NodeRef::new_pair(|| Node {
            parent: self.clone(),
            layer: Layer::Merge(Box::new(Merged {
                scope: Scope::new_merged(site),
                other: other.clone(),
                key_in_other: AtomicU32::new(u32::MAX),
                values,
            })),
        });
        if parent.is_some() {
            cancel::attach(&node, parent, None);
        }
        if let Some((other_scope, key)) = node.other_parent() {
            cancel::attach_other(&node, other_scope, key);
        }
        (Context { node: Some(node) }, CancelHandle::new(handle_node))
    }

    /// The earliest own deadline of the scopes on this context's path (or
    /// paths, through merges) to the root: one atomic load per scope, no
    /// lock, so that a moved deadline is seen at once by every descendant.
    pub(crate) fn effective_deadline(&self) -> Deadline {
        let mut earliest = Deadline::NEVER;
        let mut next = self.scope_node();
        while let Some(node) = next {
            let scope = node.scope().expect("scope_node is a scope");
            earliest = earliest.min(scope.own_deadline());
            if let Layer::Merge(merged) = &node.layer {
                earliest = earliest.min(merged.other.effective_deadline());
            }
            next = node.parent.scope_node();
        }
        earliest
    }

    /// A child context carrying `value`, found by [`value::<T>()`](Context::value)
    /// on this context and every context derived from it. The nearest value
    /// of a type wins; values of other types pass through.
    ///
    /// Key values by a type of your own (a newtype), as Go keys them by an
    /// unexported key type, so that no other crate can read or shadow them.
    ///
    /// The key is the value's exact type, nothing looser: `with_value(7)`
    /// stores an `i32` (an integer literal's default), found by
    /// `value::<i32>()` and not by `value::<u32>()`; `with_value("id")` a
    /// `&'static str`, not a `String`; `with_value(Arc::new(config))` an
    /// `Arc<Config>`, which `value::<Config>()` does not find. A newtype
    /// makes the key explicit and avoids all three surprises.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::sync::Arc;
    ///
    /// let ctx = Context::background().with_value(7).with_value(Arc::new(String::from("cfg")));
    /// assert_eq!(ctx.value::<i32>(), Some(&7));
    /// assert_eq!(ctx.value::<u32>(), None);
    /// assert!(ctx.value::<String>().is_none(), "an Arc<String> is not a String");
    /// assert_eq!(ctx.value::<Arc<String>>().unwrap().as_str(), "cfg");
    /// ```
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// struct RequestId(u64);
    /// struct User(&'static str);
    ///
    /// let ctx = Context::background()
    ///     .with_value(RequestId(7))
    ///     .with_value(User("ana"))
    ///     .with_value(RequestId(8));
    /// assert_eq!(ctx.value::<RequestId>().unwrap().0, 8);
    /// assert_eq!(ctx.value::<User>().unwrap().0, "ana");
    /// assert!(ctx.value::<String>().is_none());
    /// ```
    #[track_caller]
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        let mut values = ValueLayer::new(self.scope_node().cloned(), self.value_layer(), value);
        values.site = provenance::site_id(Location::caller());
        self.derive(|| Layer::Value(values))
    }

    /// A child context that keeps this context's values but is never
    /// cancelled and has no deadline, even when this context ends.
    ///
    /// For work that must outlive the request that started it (an audit
    /// write, a cache fill), while keeping its request id and trace.
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// struct TraceId(u128);
    /// let (request, cancel) = Context::background().with_value(TraceId(42)).with_cancel();
    /// let detached = request.without_cancel();
    /// cancel.cancel();
    /// assert!(request.is_done());
    /// assert!(!detached.is_done());
    /// assert_eq!(detached.value::<TraceId>().unwrap().0, 42);
    /// ```
    #[track_caller]
    pub fn without_cancel(&self) -> Context {
        let site = provenance::site_id(Location::caller());
        self.derive(|| Layer::WithoutCancel(site))
    }

    /// The nearest cancellation scope node at or above this context, if any.
    #[inline]
    pub(crate) fn scope_node(&self) -> Option<&NodeRef> {
        let node = self.node.as_ref()?;
        // Tested one by one, the common layers first (see `Node::scope`).
        if let Layer::Cancel(_) = &node.layer {
            return Some(node);
        }
        if let Layer::Value(values) = &node.layer {
            return values.scope.as_ref();
        }
        if let Layer::Merge(_) = &node.layer {
            return Some(node);
        }
        None
    }

    /// The nearest cancellation scope at or above this context, if any.
    #[inline]
    pub(crate) fn scope(&self) -> Option<&Scope> {
        // `scope_node` then `Node::scope`, with the common layers tested
        // first and once: observing a context is this and one load.
        let node = self.node.as_deref()?;
        if let Layer::Cancel(scope) = &node.layer {
            return Some(scope);
        }
        if let Layer::Value(values) = &node.layer {
            return values.scope.as_deref().and_then(Node::scope);
        }
        node.merged_scope()
    }

    pub(crate) fn value_layer(&self) -> Option<&ValueLayer> {
        let mut node = self.node.as_deref()?;
        loop {
            match &node.layer {
                Layer::Value(values) => return Some(values),
                Layer::Merge(merged) if merged.values.is_some() => return merged.values.as_ref(),
                _ => {}
            }
            node = node.parent.node.as_deref()?;
        }
    }

    /// Why this context is done, or `None` while it is live.
    ///
    /// One atomic load: call it as often as you like.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// assert_eq!(Context::background().err(), None);
    /// ```
    #[inline]
    pub fn err(&self) -> Option<Error> {
        self.scope().and_then(Scope::err)
    }

    /// Whether this context is done: `err().is_some()`, one atomic load.
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// assert!(!ctx.is_done());
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// ```
    #[inline]
    pub fn is_done(&self) -> bool {
        self.scope().is_some_and(Scope::is_done)
    }

    /// `Err(err)` once this context is done, for `?` at the top of a loop.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// fn crunch(ctx: &Context, items: &[u64]) -> Result<u64, Error> {
    ///     let mut sum = 0;
    ///     for item in items {
    ///         ctx.check()?;
    ///         sum += item;
    ///     }
    ///     Ok(sum)
    /// }
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(crunch(&ctx, &[1, 2, 3]), Ok(6));
    /// cancel.cancel();
    /// assert_eq!(crunch(&ctx, &[1, 2, 3]), Err(Error::Canceled));
    /// ```
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        match self.err() {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }

    /// The reason this context is done, or `None` while it is live: the
    /// error given to [`CancelHandle::cancel_with`] or a `*_cause`
    /// constructor, else the [`Error`] itself. Inherited from the ancestor
    /// whose cancellation ended this context.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let (child, _child_cancel) = parent.with_cancel();
    /// cancel.cancel_with(std::io::Error::other("client went away"));
    /// assert_eq!(child.err(), Some(Error::Canceled));
    /// assert_eq!(child.cause().unwrap().to_string(), "client went away");
    ///
    /// let (plain, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(plain.cause().unwrap().downcast_ref::<Error>(), Some(&Error::Canceled));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        self.scope().and_then(Scope::cause)
    }

    /// When this context will be cancelled by its deadline (or an ancestor's),
    /// if it has one.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::{Duration, Instant};
    ///
    /// let soon = Instant::now() + Duration::from_secs(1);
    /// let later = soon + Duration::from_secs(60);
    /// let (parent, _a) = Context::background().with_deadline(soon);
    /// let (child, _b) = parent.with_deadline(later);
    /// assert_eq!(child.deadline(), Some(soon), "a child never outlives its parent");
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.effective_deadline().instant()
    }

    /// Time left until the deadline, saturating at zero; `None` without one.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    /// let left = ctx.remaining().unwrap();
    /// assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
    /// assert_eq!(Context::background().remaining(), None);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The value of type `T` nearest to this context, if any.
    ///
    /// A binary search in the nearest value layer, however deep the chain.
    /// Values stay readable after the context is done.
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Tenant(&'static str);
    ///
    /// let (ctx, cancel) = Context::background().with_value(Tenant("acme")).with_cancel();
    /// cancel.cancel();
    /// assert_eq!(ctx.value::<Tenant>(), Some(&Tenant("acme")));
    /// ```
    pub fn value<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.value_layer()?.get()
    }

    /// How many registrations this context's cancellation scope holds: live
    /// child scopes, waiting threads and tasks, pending `after_func`
    /// callbacks. Zero for a context that can never be cancelled, and for a
    /// done one.
    ///
    /// A diagnostic, for leak checks in tests and metrics.
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// let (parent, _cancel) = Context::background().with_cancel();
    /// let (child, child_cancel) = parent.with_cancel();
    /// assert_eq!(parent.registrations(), 1);
    /// drop(child_cancel); // cancels the child, which leaves its parent
    /// assert_eq!(parent.registrations(), 0);
    /// # drop(child);
    /// ```
    pub fn registrations(&self) -> usize {
        self.scope().map_or(0, Scope::registrations)
    }
}

// A panic cannot leave a context half-updated: the tree's locks ignore poison
// and no user code runs while one is held, and stored values are only ever
// shared as `&T`. So a context may cross `catch_unwind` freely, as
// `Arc<T>` of an unwind-safe `T` does.
impl std::panic::UnwindSafe for Context {}
impl std::panic::RefUnwindSafe for Context {}

/// A deadline given to `with_deadline` or `with_timeout`, and how the scope
/// ends when it comes (used only if it is earlier than the inherited one).
struct OwnDeadline {
    at: Instant,
    expiry: cancel::Expiry,
}

impl OwnDeadline {
    fn at(at: Instant, cause: Option<Cause>) -> OwnDeadline {
        let passed = at <= Instant::now();
        OwnDeadline {
            at,
            expiry: cancel::Expiry { passed, cause },
        }
    }

    /// `now + timeout`, saturating far in the future rather than
    /// overflowing. One clock read: a non-zero timeout has not passed yet.
    fn after(timeout: Duration, cause: Option<Cause>) -> OwnDeadline {
        let at = crate::deadline::instant_after(Instant::now(), timeout);
        OwnDeadline {
            at,
            expiry: cancel::Expiry {
                passed: timeout.is_zero(),
                cause,
            },
        }
    }
}

/// Prints the chain like Go's `String()`: `context.Background.WithCancel`,
/// `context.TODO.WithValue(my_app::RequestId).WithDeadline(+1.5s)`. A scope
/// that was ended by dropping its [`CancelHandle`] says so:
/// `WithCancel(canceled: CancelHandle dropped)`,
/// `WithDeadline(+5s, canceled: CancelHandle dropped)`.
///
/// ```
/// use ctxkit::Context;
///
/// let (ctx, _) = Context::background().with_cancel(); // `_` drops the handle
/// assert_eq!(format!("{ctx:?}"), "context.Background.WithCancel(canceled: CancelHandle dropped)");
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel(); // an explicit cancel is not a mistake: nothing to say
/// assert_eq!(format!("{ctx:?}"), "context.Background.WithCancel");
/// ```
impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut layers = Vec::new();
        let mut next = self.node.as_deref();
        while let Some(node) = next {
            layers.push(&node.layer);
            next = node.parent.node.as_deref();
        }
        if !matches!(layers.last(), Some(Layer::Todo(_))) {
            f.write_str("context.Background")?;
        }
        for layer in layers.iter().rev() {
            match layer {
                Layer::Todo(_) => f.write_str("context.TODO")?,
                Layer::Cancel(scope) if scope.has_own_deadline() => {
                    let deadline = scope.own_deadline().instant().expect("own deadline");
                    let now = Instant::now();
                    let dropped = dropped_note(scope, ", ");
                    if deadline > now {
                        write!(f, ".WithDeadline(+{:?}{dropped})", deadline - now)?;
                    } else {
                        write!(f, ".WithDeadline(-{:?}{dropped})", now - deadline)?;
                    }
                }
                Layer::Cancel(scope) if scope.ended_by_dropped_handle() => {
                    write!(f, ".WithCancel({})", dropped_note(scope, ""))?
                }
                Layer::Cancel(_) => f.write_str(".WithCancel")?,
                Layer::Merge(merged) => write!(
                    f,
                    ".Merge({:?}{})",
                    merged.other,
                    dropped_note(&merged.scope, ", ")
                )?,
                Layer::Value(values) => write!(f, ".WithValue({})", values.type_name)?,
                Layer::WithoutCancel(_) => f.write_str(".WithoutCancel")?,
            }
        }
        Ok(())
    }
}

/// What `Debug` adds to a scope ended by dropping its handle (after
/// `separator`), or nothing.
fn dropped_note(scope: &Scope, separator: &'static str) -> DroppedNote {
    DroppedNote(scope.ended_by_dropped_handle().then_some(separator))
}

struct DroppedNote(Option<&'static str>);

impl fmt::Display for DroppedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(separator) => write!(f, "{separator}canceled: CancelHandle dropped"),
            None => Ok(()),
        }
    }
}

// Live-tree snapshots (tree.rs)

impl Node {
    /// What this node adds to its parent, for a tree snapshot.
    pub(crate) fn kind(&self) -> crate::tree::Kind {
        use crate::tree::Kind;
        match &self.layer {
            Layer::Todo(_) => Kind::Todo,
            Layer::Cancel(scope) if scope.has_own_deadline() => Kind::Deadline,
            Layer::Cancel(_) => Kind::Cancel,
            Layer::Merge(_) => Kind::Merged,
            Layer::Value(values) => Kind::Value(values.type_name.to_owned()),
            Layer::WithoutCancel(_) => Kind::WithoutCancel,
        }
    }
}

impl Context {
    /// This context's node; `None` for `background()`.
    pub(crate) fn node_ref(&self) -> Option<&NodeRef> {
        self.node.as_ref()
    }

    /// The context that views `node`.
    pub(crate) fn from_node_ref(node: NodeRef) -> Context {
        Context { node: Some(node) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes per live child context are a published number (BENCHMARKS.md):
    /// a field added to `Node` or `Scope` must be paid for knowingly. The
    /// provenance record (BENCHMARKS.md, "Provenance") fits in the same
    /// bytes: a scope's creation site in its header's spare bytes, the
    /// creation time beside the block's counts (`node_ref`), the end's site
    /// and time in the closed `first_child` slot.
    #[test]
    fn a_node_stays_small() {
        assert!(
            std::mem::size_of::<Node>() <= 64,
            "{}",
            std::mem::size_of::<Node>()
        );
        assert_eq!(std::mem::size_of::<Scope>(), 56);
        assert_eq!(
            std::mem::size_of::<Layer>(),
            56,
            "the layer's tag is a niche"
        );
        assert!(std::mem::size_of::<crate::registry::Registration>() <= 24);
        assert_eq!(std::mem::size_of::<Context>(), 8);
        // One pointer each, so that `with_cancel` returns its pair in two
        // registers (a wider handle went through memory and stalled).
        assert_eq!(std::mem::size_of::<CancelHandle>(), 8);
    }
}
