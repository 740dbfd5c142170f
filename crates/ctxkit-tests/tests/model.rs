//! Random operation sequences on a context tree, checked step by step
//! against a plain reference model.
//!
//! Each case builds a tree with random derivations (cancel, deadline, value,
//! `without_cancel`, `after_func`, `merge` of two contexts), cancellations,
//! deadline moves (`set_deadline`, `clear_deadline`), handle drops, detaches
//! and context drops. After every step, every context still held must agree with
//! the model on `err`, `cause`, `deadline`, both value types and
//! `registrations` (so a parent holding a dead child is caught); every
//! `AfterFunc::stop` must return what the model predicts; at the end, every
//! committed callback has run exactly once and no other has run, and once
//! everything is dropped the timer holds no deadline of the case.
//!
//! There is no injectable clock, so deadlines are either far in the future
//! (hours: never reached during a case) or already past (the context is
//! born done); "advance time" lets a little real time pass and checks that
//! nothing far away fired. A failing case shrinks to a minimal sequence.
//!
//! The case count is fixed in code (256, overridable with `PROPTEST_CASES`),
//! so CI time is bounded: `cargo test -p ctxkit-tests --test model`.

use ctxkit::{AfterFunc, CancelHandle, Context, Error};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
struct ValueA(u32);
#[derive(Debug, PartialEq)]
struct ValueB(u32);

#[derive(Debug)]
struct Reason(String);

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

#[derive(Clone, Copy, Debug)]
enum When {
    /// `k` hours and seconds from the start of the case: never reached.
    Far(u8),
    /// `k + 1` milliseconds before the start of the case: already past.
    Past(u8),
}

/// One step. Indices pick among the contexts (or handles, or callbacks)
/// that exist at that point, modulo their number, so every sequence is
/// valid and shrinking keeps it valid.
#[derive(Clone, Debug)]
enum Op {
    WithCancel(usize),
    WithDeadline(usize, When, Option<u8>),
    WithValue(usize, bool, u32),
    WithoutCancel(usize),
    AfterFunc(usize),
    Stop(usize),
    Cancel(usize),
    CancelWith(usize, u8),
    DropHandle(usize),
    Detach(usize),
    DropContext(usize),
    AdvanceTime,
    Merge(usize, usize),
    SetDeadline(usize, When),
    ClearDeadline(usize),
}

/// Picks are small so that shrinking drives them to 0 (the first choice).
fn pick() -> impl Strategy<Value = usize> {
    0..16usize
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        any::<u8>().prop_map(When::Far),
        any::<u8>().prop_map(When::Past)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => pick().prop_map(Op::WithCancel),
        2 => (pick(), when(), any::<Option<u8>>()).prop_map(|(i, w, c)| Op::WithDeadline(i, w, c)),
        2 => (pick(), any::<bool>(), any::<u32>()).prop_map(|(i, a, v)| Op::WithValue(i, a, v)),
        1 => pick().prop_map(Op::WithoutCancel),
        2 => pick().prop_map(Op::AfterFunc),
        1 => pick().prop_map(Op::Stop),
        2 => pick().prop_map(Op::Cancel),
        1 => (pick(), any::<u8>()).prop_map(|(i, c)| Op::CancelWith(i, c)),
        1 => pick().prop_map(Op::DropHandle),
        1 => pick().prop_map(Op::Detach),
        2 => pick().prop_map(Op::DropContext),
        1 => Just(Op::AdvanceTime),
        2 => (pick(), pick()).prop_map(|(a, b)| Op::Merge(a, b)),
        2 => (pick(), when()).prop_map(|(i, w)| Op::SetDeadline(i, w)),
        1 => pick().prop_map(Op::ClearDeadline),
    ]
}

/// What a node of the model adds to its parent.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Background,
    /// A cancel scope, or (with `other`) a merge of its parent and `other`.
    Scope {
        own_deadline: Option<Instant>,
        other: Option<usize>,
    },
    ValueA(u32),
    ValueB(u32),
    WithoutCancel,
}

#[derive(Debug)]
struct ModelNode {
    parent: Option<usize>,
    kind: Kind,
    /// For scopes: `(err, cause text)` once done.
    done: Option<(Error, String)>,
    /// For scopes: the cause the own deadline ends it with, if not the
    /// default (it goes with the deadline when it moves, and is cleared
    /// with it).
    deadline_cause: Option<String>,
    /// Whether the test still holds the `Context`.
    held: bool,
    /// Whether the test still holds a live (undetached) handle.
    handle: bool,
    /// Whether an `AfterFunc` registered on this scope is held (it keeps
    /// the scope's node alive).
    pinned: bool,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Fate {
    /// Registered on a live scope; runs if the scope ends first.
    Pending(usize),
    /// Must run exactly once.
    Committed,
    /// Must never run.
    Stopped,
    /// On a context that can never end: never runs; the first stop is true.
    Never { stopped: bool },
}

#[derive(Default)]
struct Model {
    nodes: Vec<ModelNode>,
    fates: Vec<Fate>,
}

impl Model {
    /// The nearest scope at or above `id`, if cancellation reaches it.
    fn scope_of(&self, mut id: usize) -> Option<usize> {
        loop {
            match self.nodes[id].kind {
                Kind::Scope { .. } => return Some(id),
                Kind::Background | Kind::WithoutCancel => return None,
                Kind::ValueA(_) | Kind::ValueB(_) => id = self.nodes[id].parent?,
            }
        }
    }

    /// The scopes whose cancellation reaches `scope` directly: its
    /// parent's, and a merge's second parent's (possibly the same one twice).
    fn scope_parents(&self, scope: usize) -> Vec<usize> {
        let node = &self.nodes[scope];
        let other = match node.kind {
            Kind::Scope { other, .. } => other,
            _ => None,
        };
        node.parent
            .into_iter()
            .chain(other)
            .filter_map(|id| self.scope_of(id))
            .collect()
    }

    fn own_deadline(&self, scope: usize) -> Option<Instant> {
        match self.nodes[scope].kind {
            Kind::Scope { own_deadline, .. } => own_deadline,
            _ => unreachable!("not a scope"),
        }
    }

    fn err_cause(&self, id: usize) -> Option<(Error, String)> {
        self.scope_of(id)
            .and_then(|scope| self.nodes[scope].done.clone())
    }

    /// The earliest own deadline on every path from `id` to the root.
    fn deadline(&self, id: usize) -> Option<Instant> {
        let scope = self.scope_of(id)?;
        let own = self.own_deadline(scope);
        self.scope_parents(scope)
            .into_iter()
            .filter_map(|parent| self.deadline(parent))
            .chain(own)
            .min()
    }

    /// The nearest value of one type: through a merge, its first parent's
    /// chain first, then its second's.
    fn value(&self, mut id: usize, a: bool) -> Option<u32> {
        loop {
            match (self.nodes[id].kind, a) {
                (Kind::ValueA(v), true) | (Kind::ValueB(v), false) => return Some(v),
                (
                    Kind::Scope {
                        other: Some(other), ..
                    },
                    _,
                ) => {
                    let parent = self.nodes[id].parent.expect("a merge has a parent");
                    return self.value(parent, a).or_else(|| self.value(other, a));
                }
                _ => id = self.nodes[id].parent?,
            }
        }
    }

    fn has_values(&self, id: usize) -> bool {
        self.value(id, true).is_some() || self.value(id, false).is_some()
    }

    /// Ends `scope` and every live scope below it, first cancellation wins.
    fn cancel(&mut self, scope: usize, err: Error, cause: &str) {
        if self.nodes[scope].done.is_some() {
            return;
        }
        self.nodes[scope].done = Some((err, cause.to_string()));
        for fate in &mut self.fates {
            if *fate == Fate::Pending(scope) {
                *fate = Fate::Committed;
            }
        }
        let children: Vec<usize> = (0..self.nodes.len())
            .filter(|&id| {
                matches!(self.nodes[id].kind, Kind::Scope { .. })
                    && self.scope_parents(id).contains(&scope)
            })
            .collect();
        for child in children {
            self.cancel(child, err, cause);
        }
    }

    /// Which nodes are still allocated: those the test holds (a context, a
    /// handle, an `AfterFunc`) and every ancestor of one (through both
    /// parents of a merge).
    fn alive(&self) -> Vec<bool> {
        let mut alive = vec![false; self.nodes.len()];
        let mut pending: Vec<usize> = (0..self.nodes.len())
            .filter(|&id| {
                let node = &self.nodes[id];
                node.held || node.handle || node.pinned
            })
            .collect();
        while let Some(id) = pending.pop() {
            if alive[id] {
                continue;
            }
            alive[id] = true;
            pending.extend(self.nodes[id].parent);
            if let Kind::Scope {
                other: Some(other), ..
            } = self.nodes[id].kind
            {
                pending.push(other);
            }
        }
        alive
    }

    /// What `registrations()` must report on a context under `scope`: its
    /// live child scopes and its pending callbacks.
    fn registrations(&self, scope: Option<usize>, alive: &[bool]) -> usize {
        let Some(scope) = scope else { return 0 };
        if self.nodes[scope].done.is_some() {
            return 0;
        }
        // A merge of two contexts under one scope is registered there twice.
        let children: usize = (0..self.nodes.len())
            .filter(|&id| {
                alive[id]
                    && matches!(self.nodes[id].kind, Kind::Scope { .. })
                    && self.nodes[id].done.is_none()
            })
            .map(|id| {
                self.scope_parents(id)
                    .iter()
                    .filter(|&&parent| parent == scope)
                    .count()
            })
            .sum();
        let callbacks = self
            .fates
            .iter()
            .filter(|f| **f == Fate::Pending(scope))
            .count();
        children + callbacks
    }
}

/// The real tree, side by side with the model (same indices).
struct Real {
    contexts: Vec<Option<Context>>,
    handles: Vec<Option<CancelHandle>>,
    after_funcs: Vec<AfterFunc>,
    runs: Vec<Arc<AtomicUsize>>,
    /// Each callback sends its index here after counting its run.
    ran_tx: mpsc::Sender<usize>,
    ran_rx: mpsc::Receiver<usize>,
}

struct Harness {
    model: Model,
    real: Real,
    start: Instant,
}

impl Harness {
    fn new() -> Harness {
        let (ran_tx, ran_rx) = mpsc::channel();
        let mut harness = Harness {
            model: Model::default(),
            real: Real {
                contexts: Vec::new(),
                handles: Vec::new(),
                after_funcs: Vec::new(),
                runs: Vec::new(),
                ran_tx,
                ran_rx,
            },
            start: Instant::now(),
        };
        harness.push(None, Kind::Background, Context::background(), None);
        harness
    }

    fn push(
        &mut self,
        parent: Option<usize>,
        kind: Kind,
        ctx: Context,
        handle: Option<CancelHandle>,
    ) {
        self.model.nodes.push(ModelNode {
            parent,
            kind,
            done: None,
            deadline_cause: None,
            held: true,
            handle: handle.is_some(),
            pinned: false,
        });
        self.real.contexts.push(Some(ctx));
        self.real.handles.push(handle);
    }

    /// The `pick`-th held context, modulo their number.
    fn held(&self, pick: usize) -> Option<usize> {
        let held: Vec<usize> = (0..self.model.nodes.len())
            .filter(|&id| self.model.nodes[id].held)
            .collect();
        (!held.is_empty()).then(|| held[pick % held.len()])
    }

    fn with_handle(&self, pick: usize) -> Option<usize> {
        let ids: Vec<usize> = (0..self.model.nodes.len())
            .filter(|&id| self.model.nodes[id].handle)
            .collect();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }

    fn ctx(&self, id: usize) -> &Context {
        self.real.contexts[id].as_ref().expect("held")
    }

    fn when(&self, when: When) -> Instant {
        match when {
            When::Far(k) => {
                self.start + Duration::from_secs(3600 * (1 + u64::from(k)) + u64::from(k))
            }
            When::Past(k) => self
                .start
                .checked_sub(Duration::from_millis(1 + u64::from(k)))
                .unwrap_or(self.start),
        }
    }

    /// A new scope under `parent`: done at once if its parent is, or if its
    /// own deadline has passed.
    fn derive_scope(&mut self, parent: usize, own: Option<(Instant, Option<u8>)>) {
        let (ctx, handle) = match own {
            None => self.ctx(parent).with_cancel(),
            Some((deadline, None)) => self.ctx(parent).with_deadline(deadline),
            Some((deadline, Some(cause))) => self
                .ctx(parent)
                .with_deadline_cause(deadline, Reason(format!("deadline cause {cause}"))),
        };
        let inherited = self.model.deadline(parent);
        // Go's rule: a deadline no earlier than the parent's is not the
        // child's own (it sets no timer, and its cause is never used).
        let own_deadline = own
            .map(|(d, _)| d)
            .filter(|d| inherited.is_none_or(|p| *d < p));
        let own_cause = own.and_then(|(_, c)| c);
        self.push(
            Some(parent),
            Kind::Scope {
                own_deadline,
                other: None,
            },
            ctx,
            Some(handle),
        );
        let id = self.model.nodes.len() - 1;
        if own_deadline.is_some() {
            self.model.nodes[id].deadline_cause = own_cause.map(|c| format!("deadline cause {c}"));
        }
        if let Some((err, cause)) = self.model.err_cause(parent) {
            self.model.nodes[id].done = Some((err, cause));
        } else if let Some(deadline) = own_deadline.filter(|d| *d <= Instant::now()) {
            let _ = deadline;
            let cause = match own_cause {
                Some(c) => format!("deadline cause {c}"),
                None => Error::DeadlineExceeded.to_string(),
            };
            self.model.nodes[id].done = Some((Error::DeadlineExceeded, cause));
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::WithCancel(pick) => {
                if let Some(parent) = self.held(pick) {
                    self.derive_scope(parent, None);
                }
            }
            Op::WithDeadline(pick, when, cause) => {
                if let Some(parent) = self.held(pick) {
                    let deadline = self.when(when);
                    self.derive_scope(parent, Some((deadline, cause)));
                }
            }
            Op::WithValue(pick, a, v) => {
                if let Some(parent) = self.held(pick) {
                    let (ctx, kind) = if a {
                        (self.ctx(parent).with_value(ValueA(v)), Kind::ValueA(v))
                    } else {
                        (self.ctx(parent).with_value(ValueB(v)), Kind::ValueB(v))
                    };
                    self.push(Some(parent), kind, ctx, None);
                }
            }
            Op::WithoutCancel(pick) => {
                if let Some(parent) = self.held(pick) {
                    let ctx = self.ctx(parent).without_cancel();
                    self.push(Some(parent), Kind::WithoutCancel, ctx, None);
                }
            }
            Op::AfterFunc(pick) => {
                if let Some(id) = self.held(pick) {
                    self.after_func(id);
                }
            }
            Op::Stop(pick) => {
                if !self.real.after_funcs.is_empty() {
                    let index = pick % self.real.after_funcs.len();
                    self.stop(index);
                }
            }
            Op::Cancel(pick) => {
                if let Some(id) = self.with_handle(pick) {
                    self.real.handles[id]
                        .as_ref()
                        .expect("live handle")
                        .cancel();
                    self.model
                        .cancel(id, Error::Canceled, &Error::Canceled.to_string());
                }
            }
            Op::CancelWith(pick, cause) => {
                if let Some(id) = self.with_handle(pick) {
                    let text = format!("cancel cause {cause}");
                    self.real.handles[id]
                        .as_ref()
                        .expect("live handle")
                        .cancel_with(Reason(text.clone()));
                    self.model.cancel(id, Error::Canceled, &text);
                }
            }
            Op::DropHandle(pick) => {
                if let Some(id) = self.with_handle(pick) {
                    drop(self.real.handles[id].take());
                    self.model.nodes[id].handle = false;
                    self.model
                        .cancel(id, Error::Canceled, &Error::Canceled.to_string());
                }
            }
            Op::Detach(pick) => {
                if let Some(id) = self.with_handle(pick) {
                    self.real.handles[id].take().expect("live handle").detach();
                    self.model.nodes[id].handle = false;
                }
            }
            Op::DropContext(pick) => {
                if let Some(id) = self.held(pick) {
                    self.real.contexts[id] = None;
                    self.model.nodes[id].held = false;
                }
            }
            Op::AdvanceTime => std::thread::sleep(Duration::from_millis(1)),
            Op::Merge(first, second) => {
                if let (Some(first), Some(second)) = (self.held(first), self.held(second)) {
                    self.merge(first, second);
                }
            }
            Op::SetDeadline(pick, when) => {
                if let Some(id) = self.with_handle(pick) {
                    let deadline = self.when(when);
                    let moved = self.real.handles[id]
                        .as_ref()
                        .expect("live handle")
                        .set_deadline(deadline);
                    self.move_deadline(id, moved, Some(deadline));
                }
            }
            Op::ClearDeadline(pick) => {
                if let Some(id) = self.with_handle(pick) {
                    let moved = self.real.handles[id]
                        .as_ref()
                        .expect("live handle")
                        .clear_deadline();
                    self.move_deadline(id, moved, None);
                }
            }
        }
    }

    /// `first.merge(second)`: done at once if either is done (the first's
    /// err and cause if both are). Merging with a context that adds nothing
    /// (no scope, no values) is a plain `with_cancel` of the other.
    fn merge(&mut self, first: usize, second: usize) {
        let (ctx, handle) = self.ctx(first).merge(self.ctx(second));
        let model = &self.model;
        let adds_nothing = |id: usize| model.scope_of(id).is_none() && !model.has_values(id);
        let (parent, other) = if adds_nothing(second) {
            (first, None)
        } else if adds_nothing(first) {
            (second, None)
        } else {
            (first, Some(second))
        };
        let done = self
            .model
            .err_cause(first)
            .or_else(|| self.model.err_cause(second));
        let kind = Kind::Scope {
            own_deadline: None,
            other,
        };
        self.push(Some(parent), kind, ctx, Some(handle));
        let id = self.model.nodes.len() - 1;
        self.model.nodes[id].done = done;
    }

    /// A move of scope `id`'s own deadline to `to` (`None`: cleared), which
    /// returned `moved`: it succeeds exactly on a live scope; a deadline
    /// that has passed ends the scope (and its subtree) at once.
    fn move_deadline(&mut self, id: usize, moved: bool, to: Option<Instant>) {
        let live = self.model.nodes[id].done.is_none();
        assert_eq!(moved, live, "set_deadline / clear_deadline of #{id}");
        if !live {
            return;
        }
        let node = &mut self.model.nodes[id];
        let Kind::Scope { own_deadline, .. } = &mut node.kind else {
            unreachable!("handles are scopes'")
        };
        *own_deadline = to;
        if to.is_none() {
            node.deadline_cause = None;
        }
        if to.is_some_and(|to| to <= Instant::now()) {
            let cause = node
                .deadline_cause
                .clone()
                .unwrap_or_else(|| Error::DeadlineExceeded.to_string());
            self.model.cancel(id, Error::DeadlineExceeded, &cause);
        }
    }

    fn after_func(&mut self, id: usize) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let ran = self.real.ran_tx.clone();
        let index = self.real.runs.len();
        let after = self.ctx(id).after_func(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = ran.send(index);
        });
        let fate = match self.model.scope_of(id) {
            None => Fate::Never { stopped: false },
            Some(scope) if self.model.nodes[scope].done.is_some() => Fate::Committed,
            Some(scope) => {
                self.model.nodes[scope].pinned = true;
                Fate::Pending(scope)
            }
        };
        self.model.fates.push(fate);
        self.real.after_funcs.push(after);
        self.real.runs.push(runs);
    }

    fn stop(&mut self, index: usize) {
        let stopped = self.real.after_funcs[index].stop();
        let fate = &mut self.model.fates[index];
        let expected = match *fate {
            Fate::Pending(_) => {
                *fate = Fate::Stopped;
                true
            }
            Fate::Never { stopped: false } => {
                *fate = Fate::Never { stopped: true };
                true
            }
            Fate::Committed | Fate::Stopped | Fate::Never { stopped: true } => false,
        };
        assert_eq!(stopped, expected, "stop() of after_func #{index}");
    }

    /// Every held context agrees with the model.
    fn check(&self) {
        let alive = self.model.alive();
        for (id, ctx) in self.real.contexts.iter().enumerate() {
            let Some(ctx) = ctx else { continue };
            let expected = self.model.err_cause(id);
            let actual = ctx.err().map(|err| {
                let cause = ctx.cause().expect("a done context has a cause").to_string();
                (err, cause)
            });
            assert_eq!(actual, expected, "err and cause of context #{id} ({ctx:?})");
            assert_eq!(
                ctx.is_done(),
                expected.is_some(),
                "is_done of context #{id}"
            );
            assert_eq!(
                ctx.deadline(),
                self.model.deadline(id),
                "deadline of context #{id} ({ctx:?})"
            );
            assert_eq!(
                ctx.value::<ValueA>().map(|v| v.0),
                self.model.value(id, true),
                "ValueA of #{id}"
            );
            assert_eq!(
                ctx.value::<ValueB>().map(|v| v.0),
                self.model.value(id, false),
                "ValueB of #{id}"
            );
            let registrations = self.model.registrations(self.model.scope_of(id), &alive);
            assert_eq!(
                ctx.registrations(),
                registrations,
                "registrations of context #{id} ({ctx:?})"
            );
        }
        for (index, fate) in self.model.fates.iter().enumerate() {
            let runs = self.real.runs[index].load(Ordering::SeqCst);
            match fate {
                Fate::Committed => assert!(runs <= 1, "after_func #{index} ran {runs} times"),
                _ => assert_eq!(runs, 0, "after_func #{index} ({fate:?}) ran"),
            }
        }
    }

    /// Once every handle, context and callback is gone, the timer holds
    /// exactly the deadlines it held before the case: each freed or
    /// cancelled scope took its entry with it.
    fn release_everything(mut self, deadlines_before: usize) {
        for after in self.real.after_funcs.drain(..) {
            let _ = after.stop();
        }
        self.real.handles.clear();
        self.real.contexts.clear();
        assert_eq!(
            ctxkit::diagnostics::pending_deadlines(),
            deadlines_before,
            "deadlines left in the timer after everything was dropped"
        );
    }

    /// Committed callbacks run exactly once, soon; no other runs at all.
    fn check_callbacks_settle(&self) {
        let committed = self
            .model
            .fates
            .iter()
            .filter(|f| **f == Fate::Committed)
            .count();
        for _ in 0..committed {
            let index = self
                .real
                .ran_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a committed after_func did not run within 30 s");
            assert_eq!(
                self.model.fates[index],
                Fate::Committed,
                "after_func #{index} ran"
            );
        }
        self.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_agree_with_the_model(ops in prop::collection::vec(op(), 1..48)) {
        // This is the only test in this binary: nobody else uses the timer.
        let deadlines_before = ctxkit::diagnostics::pending_deadlines();
        let mut harness = Harness::new();
        harness.check();
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        harness.check_callbacks_settle();
        harness.release_everything(deadlines_before);
    }
}
