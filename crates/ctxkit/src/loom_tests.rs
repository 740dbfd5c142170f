//! Model checks of the core's races, with loom.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ctxkit --lib --release loom_tests`
//! (or `.ci/loom.sh`). Under `--cfg loom` every lock, atomic and park of the
//! core is loom's, `after_func` callbacks run on model threads of their own
//! (see `executor.rs`), and the timer thread is replaced by `timer::fire`,
//! which does what the timer thread does for one due entry.
//!
//! Each model is checked exhaustively (no preemption bound: loom's
//! partial-order-reduced search) and again with at most [`PREEMPTION_BOUND`]
//! preemptions (threads switched away from while they could have gone on);
//! loom's guidance is that bounds of 2 to 3 find nearly all bugs. Both runs
//! of every model together take about a second.
//!
//! The nodes' reference counts (`node_ref.rs`) are loom atomics, so the
//! models explore the orders in which the last owners of a node let go. What
//! loom cannot see is the timer's map (a `std` mutex): under loom its
//! operations also take a per-execution loom lock (see `timer.rs`), so the
//! orders between a firing timer and a cancel are explored anyway.

use crate::context::Context;
use crate::error::Error;
use crate::handle::CancelHandle;
use crate::node_ref::{NodeRef, WeakNodeRef};
use crate::sync::Arc;
use crate::timer;
use crate::wait::OwnedDone;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Notify;
use loom::thread;
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The preemption bound of the bounded run of every model.
const PREEMPTION_BOUND: usize = 3;

/// Checks `f` twice: with no preemption bound (loom's exhaustive,
/// partial-order-reduced search) and with [`PREEMPTION_BOUND`] (loom's
/// bounded search, which prunes differently). Both are cheap for these
/// models. Prints how many interleavings each explored (`--nocapture` shows
/// it), so that a model that stops exploring anything is noticed.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    check(f, &[None, Some(PREEMPTION_BOUND)]);
}

/// Checks `f` with these preemption bounds only: for a model of three
/// threads, two of which may spin (`yield_now`) waiting for the third.
/// Searched exhaustively it does not end in a CI run's time, and from a
/// bound of 2 loom finds schedules where the spinners alone run on past its
/// branch limit (with the code before the fix too).
fn model_bounded<F: Fn() + Sync + Send + 'static>(f: F, bounds: &[usize]) {
    let bounds: Vec<Option<usize>> = bounds.iter().copied().map(Some).collect();
    check(f, &bounds);
}

fn check<F: Fn() + Sync + Send + 'static>(f: F, bounds: &[Option<usize>]) {
    let f = Arc::new(f);
    for &bound in bounds {
        let interleavings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = interleavings.clone();
        let f = f.clone();
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = bound;
        builder.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        let name = std::thread::current().name().unwrap_or("model").to_string();
        let count = interleavings.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{name}: {count} interleavings, preemption bound {bound:?}");
    }
}

/// Records which outcomes of a race some interleaving produced, so a model
/// can assert that it explored both sides of the race and not just one.
#[derive(Clone, Default)]
struct Outcomes(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl Outcomes {
    fn record(&self, outcome: impl ToString) {
        self.0.lock().unwrap().insert(outcome.to_string());
    }

    fn assert_all_seen(&self, expected: &[&str]) {
        let seen = self.0.lock().unwrap();
        for outcome in expected {
            assert!(
                seen.contains(*outcome),
                "no interleaving gave {outcome}: {seen:?}"
            );
        }
    }
}

/// A deadline no model ever reaches by the clock: only `timer::fire` ends it.
fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

fn node(ctx: &Context) -> &NodeRef {
    ctx.scope_node().expect("a cancellable context")
}

fn cause_text(ctx: &Context) -> String {
    ctx.cause().expect("a done context has a cause").to_string()
}

/// Asserts that `ctx` ended either by its deadline, with the cause
/// `deadline_cause`, or by its handle, with the cause "handle" (one
/// consistent pair, never a mix), and that `child` agrees; returns the
/// cause's text.
fn one_ending(ctx: &Context, child: &Context, deadline_cause: &str) -> String {
    let outcome = (ctx.err(), cause_text(ctx));
    assert!(
        outcome == (Some(Error::DeadlineExceeded), deadline_cause.to_string())
            || outcome == (Some(Error::Canceled), "handle".to_string()),
        "{outcome:?}"
    );
    assert_eq!((child.err(), cause_text(child)), outcome);
    outcome.1
}

#[derive(Debug)]
struct Named(&'static str);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Named {}

/// A child derived while its parent is being cancelled is either drained by
/// that cancel or sees the parent done at registration: it always ends up
/// done, with the parent's error and cause, and out of the timer.
/// Two cancels race over one subtree: the parent's, and the child's own
/// (or a second cancel of the same context). The loser finds the child
/// already ended, but its `cancel()` must still return only once every
/// descendant reports done, whichever cancel is still draining them.
#[test]
fn a_losing_cancel_returns_after_the_subtree() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let (grandchild, _g) = child.with_cancel();
        let loser = {
            let grandchild = grandchild.clone();
            thread::spawn(move || {
                cancel_child.cancel();
                assert!(grandchild.is_done(), "the child's cancel returned first");
            })
        };
        cancel_parent.cancel();
        assert!(
            child.is_done() && grandchild.is_done(),
            "the parent's cancel returned first"
        );
        loser.join().unwrap();
    });
}

/// Three cancels over a chain: one ends the grandchild and drains the
/// great-grandchild, one ends the child and finds the grandchild still
/// draining, one loses the child to the second. The loser, too, returns
/// only once the great-grandchild is done: the child's bit stays set until
/// the drain below it is over. (With the bit cleared before that wait, this
/// model finds the loser returning first, as the conformance test
/// `every_cancel_returns_after_its_whole_subtree_even_one_that_lost_the_race`
/// did about once in ten runs.)
#[test]
fn a_loser_returns_after_a_drain_below_the_winner() {
    model_bounded(
        || {
            let (child, cancel_child) = Context::background().with_cancel();
            let (grandchild, cancel_grandchild) = child.with_cancel();
            let (great_grandchild, _g) = grandchild.with_cancel();
            let cancel_child = Arc::new(cancel_child);
            let below = thread::spawn(move || cancel_grandchild.cancel());
            let loser = {
                let (cancel_child, great_grandchild) =
                    (cancel_child.clone(), great_grandchild.clone());
                thread::spawn(move || {
                    cancel_child.cancel();
                    assert!(great_grandchild.is_done(), "the loser returned first");
                })
            };
            cancel_child.cancel();
            assert!(great_grandchild.is_done(), "the winner returned first");
            below.join().unwrap();
            loser.join().unwrap();
        },
        &[1],
    );
}

/// As above, one level down: the parent's cancel ends the child on its way
/// and finds the grandchild still being drained below it, while a second
/// cancel of the child loses to it. The child's bit, not only the bit of
/// the scope the drain started from, stays set until the drain below is
/// over. (With the child's cleared once its subtree has been visited, this
/// model finds the child's loser returning first.)
#[test]
fn a_loser_of_a_scope_inside_a_drain_returns_after_a_drain_below_it() {
    model_bounded(
        || {
            let (parent, cancel_parent) = Context::background().with_cancel();
            let (child, cancel_child) = parent.with_cancel();
            let (grandchild, cancel_grandchild) = child.with_cancel();
            let (great_grandchild, _g) = grandchild.with_cancel();
            let below = thread::spawn(move || cancel_grandchild.cancel());
            let loser = {
                let great_grandchild = great_grandchild.clone();
                thread::spawn(move || {
                    cancel_child.cancel();
                    assert!(
                        great_grandchild.is_done(),
                        "the child's loser returned first"
                    );
                })
            };
            cancel_parent.cancel();
            assert!(
                great_grandchild.is_done(),
                "the parent's cancel returned first"
            );
            below.join().unwrap();
            loser.join().unwrap();
        },
        &[1],
    );
}

#[test]
fn cancel_vs_child_registration() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let canceller = thread::spawn(move || cancel.cancel_with(Named("shutdown")));
        let (child, _child_cancel) = parent.with_deadline(far_deadline());
        let deadline = child.deadline().expect("own deadline");
        let key = timer::entry_key(deadline, node(&child));
        canceller.join().unwrap();

        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(cause_text(&child), "shutdown");
        assert_eq!(parent.registrations(), 0);
        assert!(!timer::fire(key), "a cancelled child left its timer entry");
    });
}

/// A child derived by a thread that has seen its parent done is done at once,
/// even while the parent's cancel is still on its way (status stored, first-
/// child slot not yet closed) and the cause is a custom one (so no child is
/// born done without registering): a plain child and a merge under either
/// parent. Run without the check after taking the slot, this model finds
/// a child (or a merge) still live after its parent reported done.
#[test]
fn child_of_a_parent_seen_done_is_done_at_once() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (parent, cancel) = Context::background().with_cancel();
        let (other, _other_cancel) = Context::background().with_cancel();
        let canceller = thread::spawn(move || cancel.cancel_with(Named("shutdown")));
        let parent_done = parent.is_done();
        let (child, _c) = parent.with_cancel();
        let (merged, _m) = parent.merge(&other);
        let (merged_second, _n) = other.merge(&parent);
        if parent_done {
            for ctx in [&child, &merged, &merged_second] {
                assert_eq!(
                    ctx.err(),
                    Some(Error::Canceled),
                    "{ctx:?} live under a done parent"
                );
            }
        }
        seen.record(if parent_done {
            "seen done"
        } else {
            "seen live"
        });
        canceller.join().unwrap();
        for ctx in [&child, &merged, &merged_second] {
            assert_eq!(ctx.err(), Some(Error::Canceled));
            assert_eq!(cause_text(ctx), "shutdown");
        }
        drop((child, merged, merged_second, _c, _m, _n));
        assert_eq!(parent.registrations(), 0);
        assert_eq!(other.registrations(), 0);
    });
    outcomes.assert_all_seen(&["seen done", "seen live"]);
}

/// The same race with the default cause, where a child of a parent already
/// done is built without taking any lock: whichever path the child takes
/// (drained, refused at registration, or born done), it and its own child
/// end up done with `Canceled` and the default cause, registered nowhere and
/// out of the timer.
#[test]
fn default_cancel_vs_child_registration() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (parent, cancel) = Context::background().with_cancel();
        let canceller = thread::spawn(move || cancel.cancel());
        let (child, _child_cancel) = parent.with_deadline(far_deadline());
        let born_done = child.is_done();
        let (grandchild, _grandchild_cancel) = child.with_cancel();
        let key = timer::entry_key(child.deadline().expect("own deadline"), node(&child));
        canceller.join().unwrap();

        seen.record(if born_done {
            "born done"
        } else {
            "live, then drained"
        });
        for ctx in [&child, &grandchild] {
            assert_eq!(ctx.err(), Some(Error::Canceled));
            assert_eq!(cause_text(ctx), "context canceled");
            assert_eq!(ctx.registrations(), 0);
        }
        assert_eq!(parent.registrations(), 0);
        assert!(!timer::fire(key), "a cancelled child left its timer entry");
    });
    outcomes.assert_all_seen(&["born done", "live, then drained"]);
}

/// Counts its drops: held in a context's value layer, it tells whether the
/// node was dropped, and how many times.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The last references to a chain go away on two threads at once: a scope's
/// handle (detached) and context on one, a clone of a value context below it
/// on the other, with a child scope registered (weakly) in the scope and
/// cancelled meanwhile. Whichever thread lets go last frees each node, by
/// the counts' sole-owner shortcut or by their decrement: every node is
/// dropped exactly once, and the parent is left with no registration.
#[test]
fn last_owners_let_go_at_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (parent, _parent_cancel) = Context::background().with_cancel();
        let (scope, handle) = parent.with_cancel();
        let valued = scope.with_value(DropCount(drops.clone()));
        let (child, child_cancel) = valued.with_cancel();
        let other = {
            let valued = valued.clone();
            thread::spawn(move || {
                child_cancel.cancel();
                drop(child);
                drop(valued);
            })
        };
        handle.detach();
        drop(scope);
        drop(valued);
        other.join().unwrap();

        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the value is dropped once"
        );
        assert_eq!(parent.registrations(), 0, "the freed scope left its parent");
    });
}

/// A child cancelled on one thread is freed on another, while a sibling
/// derived on a third takes its place in the parent's registry (the same
/// key). The thread that frees the child must see it cancelled (the
/// reference counts order the cancel before the free), or it would remove
/// the sibling's registration in the child's name. (A first child holds the
/// parent's lock-free slot, so that the two take keys in the registry.)
#[test]
fn child_cancelled_on_one_thread_freed_on_another() {
    model(|| {
        let (parent, parent_cancel) = Context::background().with_cancel();
        let (_first, _first_cancel) = parent.with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let canceller = thread::spawn(move || child_cancel.cancel());
        let deriver = {
            let parent = parent.clone();
            thread::spawn(move || {
                let (sibling, handle) = parent.with_cancel();
                handle.detach();
                sibling
            })
        };
        drop(child);
        canceller.join().unwrap();
        let sibling = deriver.join().unwrap();

        assert_eq!(parent.registrations(), 2, "the sibling is still registered");
        parent_cancel.cancel();
        assert!(sibling.is_done(), "the parent's cancel reached the sibling");
    });
}

/// Two children race for their parent's lock-free slot, one derived on
/// another thread, the other here just before the parent is cancelled:
/// whichever got the slot, the registry, or a closed slot, both end up done
/// and the parent holds nothing.
#[test]
fn siblings_race_for_the_slot_while_the_parent_ends() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let other = {
            let parent = parent.clone();
            thread::spawn(move || {
                let (child, handle) = parent.with_cancel();
                handle.detach();
                child
            })
        };
        let (here, handle) = parent.with_cancel();
        handle.detach();
        cancel.cancel();
        let other = other.join().unwrap();

        assert_eq!(here.err(), Some(Error::Canceled));
        assert_eq!(other.err(), Some(Error::Canceled));
        assert_eq!(parent.registrations(), 0);
    });
}

/// A child cancelled by its own handle while its parent is cancelled:
/// whichever comes first ends it, nothing is removed twice, and the freed
/// child leaves no trace in its parent.
#[test]
fn cancel_vs_child_drop() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let weak: WeakNodeRef = NodeRef::downgrade(node(&child));
        let dropper = {
            let parent = parent.clone();
            thread::spawn(move || {
                // Observing the parent takes its lock: one more point at
                // which loom may switch threads around the parent's drain.
                let _ = parent.registrations();
                drop(child_cancel);
                drop(child);
            })
        };
        cancel.cancel();
        dropper.join().unwrap();

        assert!(weak.upgrade().is_none(), "the dropped child is freed");
        assert!(parent.is_done());
        assert_eq!(parent.registrations(), 0);
    });
}

/// Siblings dropped concurrently on a live parent release their registry
/// slots without disturbing each other: the parent ends up with none, and a
/// later cancel has nothing stale to drain.
#[test]
fn sibling_drops_on_live_parent() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let spawn_child = |parent: &Context| {
            let parent = parent.clone();
            thread::spawn(move || {
                let (child, child_cancel) = parent.with_cancel();
                child_cancel.detach();
                drop(child);
            })
        };
        let first = spawn_child(&parent);
        let second = spawn_child(&parent);
        first.join().unwrap();
        second.join().unwrap();

        assert_eq!(parent.registrations(), 0);
        cancel.cancel();
        assert!(parent.is_done());
    });
}

/// Parent and child cancelled at once, with different causes: the parent
/// keeps its own; the child keeps whichever reached it first; the grandchild
/// agrees with the child, since only the child's end reaches it.
#[test]
fn concurrent_cancels_of_parent_and_child() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let (grandchild, _grandchild_cancel) = child.with_value(7u8).with_cancel();
        let child_canceller = thread::spawn(move || child_cancel.cancel_with(Named("child")));
        cancel.cancel_with(Named("parent"));
        child_canceller.join().unwrap();

        assert_eq!(cause_text(&parent), "parent");
        let child_cause = cause_text(&child);
        assert!(
            child_cause == "parent" || child_cause == "child",
            "{child_cause}"
        );
        assert_eq!(cause_text(&grandchild), child_cause);
        assert_eq!(grandchild.err(), Some(Error::Canceled));
        assert_eq!(child.registrations(), 0);
    });
}

/// Wakes a parked model thread: the whole of a minimal executor's waker.
struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion, parking between polls, with a waker that
/// unparks this thread. An unpark that comes before the park is kept (a
/// token), so a wake-up is lost only if nobody wakes the waker; then every
/// thread ends up parked and loom reports the deadlock.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// A parked thread and a polled `Done` future register while cancel runs:
/// both are woken (no lost wake-up) and see `Canceled`.
#[test]
fn waiters_registering_while_cancel_runs() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let thread_waiter = {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.wait())
        };
        let task_waiter = {
            let ctx = ctx.clone();
            thread::spawn(move || block_on(ctx.done()))
        };
        cancel.cancel();
        assert_eq!(thread_waiter.join().unwrap(), Error::Canceled);
        assert_eq!(task_waiter.join().unwrap(), Error::Canceled);
        assert_eq!(ctx.registrations(), 0);
    });
}

/// A cancellable parent, and the `done_owned()` of its detached child as
/// that child's only owner; the weak reference watches the child's end.
fn owned_done_of_a_detached_child() -> (Context, CancelHandle, OwnedDone, WeakNodeRef) {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = parent.with_cancel();
    child_cancel.detach();
    let weak = NodeRef::downgrade(node(&child));
    (parent, cancel, child.done_owned(), weak)
}

/// The child is freed and its parent holds no registration of it.
fn assert_freed(parent: &Context, child: &WeakNodeRef) {
    assert!(
        child.upgrade().is_none(),
        "the child outlived its last owner"
    );
    assert_eq!(parent.registrations(), 0);
}

/// An `OwnedDone` holding the last reference to its context waits on
/// another thread while the parent cancels: it wakes with `Canceled`, and
/// the context is freed once the future is.
#[test]
fn owned_done_is_the_last_owner_while_the_parent_cancels() {
    model(|| {
        let (parent, cancel, done, child) = owned_done_of_a_detached_child();
        let waiter = thread::spawn(move || block_on(done));
        cancel.cancel();
        assert_eq!(waiter.join().unwrap(), Error::Canceled);
        assert_freed(&parent, &child);
    });
}

/// A registered `OwnedDone`, the last owner of its context, is dropped on
/// one thread while the parent cancels on another: its registration leaves
/// the registry or is drained with it, without either side blocking the
/// other, and the context is freed either way.
#[test]
fn pending_owned_done_dropped_while_the_parent_cancels() {
    model(|| {
        let (parent, cancel, done, child) = owned_done_of_a_detached_child();
        let mut done = Box::pin(done);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        assert!(done.as_mut().poll(&mut cx).is_pending());
        let dropper = thread::spawn(move || drop(done));
        cancel.cancel();
        dropper.join().unwrap();
        assert_freed(&parent, &child);
    });
}

/// Set and notified when dropped: a callback closure owns one, so its drop
/// (after a run, or unrun by `stop`) tells the model the callback's fate is
/// sealed.
struct Released {
    done: AtomicBool,
    notify: Notify,
}

impl Released {
    fn new() -> Arc<Released> {
        Arc::new(Released {
            done: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    /// Blocks until the guard is dropped. loom's `Notify` may wake
    /// spuriously, hence the flag.
    fn wait(&self) {
        while !self.done.load(Ordering::Acquire) {
            self.notify.wait();
        }
    }
}

struct ReleaseGuard(Arc<Released>);

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.notify.notify();
    }
}

/// `after_func` registered and stopped while cancel runs: the function runs
/// exactly once if `stop` returned false, and never if it returned true.
#[test]
fn after_func_registration_and_stop_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs = Arc::new(AtomicUsize::new(0));
        let released = Released::new();
        let canceller = thread::spawn(move || cancel.cancel());
        let after = {
            let runs = runs.clone();
            let guard = ReleaseGuard(released.clone());
            ctx.after_func(move || {
                let _guard = guard;
                runs.fetch_add(1, Ordering::Relaxed);
            })
        };
        let stopped = after.stop();
        canceller.join().unwrap();
        released.wait();

        let expected = if stopped { 0 } else { 1 };
        assert_eq!(
            runs.load(Ordering::Relaxed),
            expected,
            "stop returned {stopped}"
        );
        assert!(!after.stop(), "a second stop never prevents anything");
    });
}

/// An `after_func` registered before the race, stopped from one thread while
/// another cancels: exactly one of "stop returned true" and "f ran" holds.
#[test]
fn after_func_stop_vs_cancel() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs = Arc::new(AtomicUsize::new(0));
        let released = Released::new();
        let after = {
            let runs = runs.clone();
            let guard = ReleaseGuard(released.clone());
            ctx.after_func(move || {
                let _guard = guard;
                runs.fetch_add(1, Ordering::Relaxed);
            })
        };
        let stopper = thread::spawn(move || after.stop());
        cancel.cancel();
        let stopped = stopper.join().unwrap();
        released.wait();

        assert_eq!(runs.load(Ordering::Relaxed), usize::from(!stopped));
        assert_eq!(ctx.registrations(), 0);
        seen.record(if stopped { "stopped" } else { "ran" });
    });
    outcomes.assert_all_seen(&["stopped", "ran"]);
}

/// The timer fires while the handle cancels: the first to end the scope
/// wins, so err and cause are exactly one consistent pair, the child agrees,
/// and the timer entry is gone either way.
#[test]
fn timer_firing_vs_explicit_cancel() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (ctx, cancel) =
            Context::background().with_deadline_cause(far_deadline(), Named("timer"));
        let (child, _child_cancel) = ctx.with_cancel();
        let key = timer::entry_key(ctx.deadline().expect("own deadline"), node(&ctx));
        let timer_thread = thread::spawn(move || timer::fire(key));
        cancel.cancel_with(Named("handle"));
        timer_thread.join().unwrap();

        let outcome = one_ending(&ctx, &child, "timer");
        assert!(!timer::fire(key), "the timer entry is gone");
        seen.record(outcome);
    });
    outcomes.assert_all_seen(&["timer", "handle"]);
}

/// A detached child with a deadline is dropped while its parent is
/// cancelled: it is freed, its timer entry goes with it, and the parent's
/// drain skips it.
#[test]
fn detach_and_drop_vs_parent_cancel() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_deadline(far_deadline());
        child_cancel.detach();
        let weak: WeakNodeRef = NodeRef::downgrade(node(&child));
        let key = timer::entry_key(child.deadline().expect("own deadline"), node(&child));
        let dropper = {
            let parent = parent.clone();
            thread::spawn(move || {
                // As in `cancel_vs_child_drop`: makes the free-before-upgrade
                // order visible to loom.
                let _ = parent.registrations();
                drop(child);
            })
        };
        cancel.cancel();
        dropper.join().unwrap();

        assert!(
            weak.upgrade().is_none(),
            "the detached, dropped child is freed"
        );
        assert!(!timer::fire(key), "the dropped child's timer entry is gone");
        assert_eq!(parent.registrations(), 0);
    });
}

/// A child that inherits its parent's deadline (and so sets no timer of its
/// own) is cancelled by its handle while the parent's timer fires and a
/// thread waits on the child: the waiter wakes with the error that won.
#[test]
fn inherited_deadline_fires_while_child_waits() {
    model(|| {
        let (parent, _cancel) = Context::background().with_deadline(far_deadline());
        let (child, child_cancel) = parent.with_cancel();
        let key = timer::entry_key(parent.deadline().expect("deadline"), node(&parent));
        let waiter = {
            let child = child.clone();
            thread::spawn(move || child.wait())
        };
        let timer_thread = thread::spawn(move || timer::fire(key));
        child_cancel.cancel();
        let woke_with = waiter.join().unwrap();
        assert!(
            timer_thread.join().unwrap(),
            "the parent's entry was pending"
        );

        assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
        assert_eq!(Some(woke_with), child.err());
    });
}

/// The timer fires for a detached context while its last reference is
/// dropped: either the firing cancels it or the drop frees it first; the
/// entry is gone either way and nothing is cancelled twice.
#[test]
fn timer_firing_vs_last_drop() {
    model(|| {
        let (ctx, cancel) = Context::background().with_deadline(far_deadline());
        cancel.detach();
        let weak: WeakNodeRef = NodeRef::downgrade(node(&ctx));
        let key = timer::entry_key(ctx.deadline().expect("own deadline"), node(&ctx));
        let timer_thread = thread::spawn(move || timer::fire(key));
        drop(ctx);
        timer_thread.join().unwrap();

        assert!(weak.upgrade().is_none(), "the dropped context is freed");
        assert!(!timer::fire(key), "the entry is gone");
    });
}

/// A pending callback keeps its context alive after every reference is
/// dropped, so the parent's cancel still runs it, exactly once, whichever
/// comes first.
#[test]
fn pending_callback_outlives_its_context() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        child_cancel.detach();
        let runs = Arc::new(AtomicUsize::new(0));
        let released = Released::new();
        let after = {
            let runs = runs.clone();
            let guard = ReleaseGuard(released.clone());
            child.after_func(move || {
                let _guard = guard;
                runs.fetch_add(1, Ordering::Relaxed);
            })
        };
        drop(after); // dropping an AfterFunc does not stop it
        let dropper = thread::spawn(move || drop(child));
        cancel.cancel();
        dropper.join().unwrap();
        released.wait();

        assert_eq!(runs.load(Ordering::Relaxed), 1);
        assert_eq!(parent.registrations(), 0);
    });
}

/// A context merged from two parents while both are cancelled, each with a
/// cause of its own: the first cancellation to reach it wins, its err and
/// cause are one parent's pair, its child agrees, and it has left both
/// parents.
#[test]
fn merge_vs_both_parents_cancelling() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (first, cancel_first) = Context::background().with_cancel();
        let (second, cancel_second) = Context::background().with_cancel();
        let (merged, _merged_cancel) = first.merge(&second);
        let (child, _child_cancel) = merged.with_cancel();
        let canceller = thread::spawn(move || cancel_first.cancel_with(Named("first")));
        cancel_second.cancel_with(Named("second"));
        canceller.join().unwrap();

        assert_eq!(merged.err(), Some(Error::Canceled));
        let cause = cause_text(&merged);
        assert!(cause == "first" || cause == "second", "{cause}");
        assert_eq!(cause_text(&child), cause);
        assert_eq!(first.registrations(), 0);
        assert_eq!(second.registrations(), 0);
        seen.record(cause);
    });
    outcomes.assert_all_seen(&["first", "second"]);
}

/// A merge is built while one of its parents is cancelled (`second`: the
/// second one, else the first): whether the cancel drains its registration
/// or it finds the parent done when registering, it ends with that parent's
/// cause, and leaves no registration in either parent.
fn merge_vs_parent_cancel(second: bool) {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (first, cancel_first) = Context::background().with_cancel();
        let (other, cancel_other) = Context::background().with_cancel();
        let (cancel, _keep) = if second {
            (cancel_other, cancel_first)
        } else {
            (cancel_first, cancel_other)
        };
        let canceller = thread::spawn(move || cancel.cancel_with(Named("parent")));
        let (merged, _merged_cancel) = first.merge(&other);
        let born_done = merged.is_done();
        canceller.join().unwrap();

        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(cause_text(&merged), "parent");
        assert_eq!(first.registrations(), 0);
        assert_eq!(other.registrations(), 0);
        seen.record(if born_done { "born done" } else { "drained" });
    });
    outcomes.assert_all_seen(&["born done", "drained"]);
}

#[test]
fn merge_vs_first_parent_cancel() {
    merge_vs_parent_cancel(false);
}

#[test]
fn merge_vs_second_parent_cancel() {
    merge_vs_parent_cancel(true);
}

/// The last reference to a detached merge is dropped while its second
/// parent is cancelled: the merge is freed either way, ended by the cancel
/// or not, and leaves no registration in either parent.
#[test]
fn merge_dropped_vs_second_parent_cancel() {
    model(|| {
        let (first, _cancel_first) = Context::background().with_cancel();
        let (other, cancel_other) = Context::background().with_cancel();
        let (merged, merged_cancel) = first.merge(&other);
        merged_cancel.detach();
        let weak: WeakNodeRef = NodeRef::downgrade(node(&merged));
        let canceller = thread::spawn(move || cancel_other.cancel());
        drop(merged);
        canceller.join().unwrap();

        assert!(weak.upgrade().is_none(), "the dropped merge is freed");
        assert_eq!(first.registrations(), 0);
        assert_eq!(other.registrations(), 0);
    });
}

/// The deadline moves while the timer fires the old one and the handle
/// cancels: whichever ends the context first wins, with one consistent err
/// and cause that its child shares; a move that lost to the timer reports
/// false; and no timer entry is left, at the old deadline or the new.
#[test]
fn set_deadline_vs_timer_firing_vs_cancel() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (ctx, cancel) =
            Context::background().with_deadline_cause(far_deadline(), Named("timer"));
        let (child, _child_cancel) = ctx.with_cancel();
        let old = timer::entry_key(ctx.deadline().expect("own deadline"), node(&ctx));
        let new_deadline = far_deadline() + Duration::from_secs(60);
        let new = timer::entry_key(new_deadline, node(&ctx));
        let cancel = Arc::new(cancel);
        let timer_thread = thread::spawn(move || timer::fire(old));
        let canceller = {
            let cancel = cancel.clone();
            thread::spawn(move || cancel.cancel_with(Named("handle")))
        };
        let moved = cancel.set_deadline(new_deadline);
        let fired = timer_thread.join().unwrap();
        canceller.join().unwrap();

        let outcome = one_ending(&ctx, &child, "timer");
        assert!(
            !(moved && fired),
            "a move and the firing of the old entry exclude each other"
        );
        if moved {
            assert_eq!(ctx.deadline(), Some(new_deadline));
            assert_eq!(child.deadline(), Some(new_deadline));
        }
        assert!(!timer::fire(old) && !timer::fire(new), "no entry is left");
        seen.record(format!("moved={moved} {outcome}"));
    });
    outcomes.assert_all_seen(&[
        "moved=true handle",
        "moved=false timer",
        "moved=false handle",
    ]);
}

/// A move to a deadline that has passed ends the context with
/// `DeadlineExceeded` (and the deadline's cause) before it returns, unless
/// the concurrent cancel came first; never a mix of the two.
#[test]
fn set_deadline_to_now_vs_cancel() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (ctx, cancel) =
            Context::background().with_deadline_cause(far_deadline(), Named("deadline"));
        let (child, _child_cancel) = ctx.with_cancel();
        let old = timer::entry_key(ctx.deadline().expect("own deadline"), node(&ctx));
        let cancel = Arc::new(cancel);
        let canceller = {
            let cancel = cancel.clone();
            thread::spawn(move || cancel.cancel_with(Named("handle")))
        };
        let moved = cancel.set_deadline(Instant::now());
        if moved {
            assert!(
                ctx.is_done(),
                "a move to now ends the context before it returns"
            );
        }
        canceller.join().unwrap();

        let outcome = one_ending(&ctx, &child, "deadline");
        assert!(!timer::fire(old), "no entry is left");
        seen.record(outcome);
    });
    outcomes.assert_all_seen(&["deadline", "handle"]);
}

/// A child that inherited its parent's deadline waits while the parent's
/// deadline moves: it sees the new deadline, and the new entry's firing
/// wakes it with `DeadlineExceeded`; the old entry no longer fires.
#[test]
fn moved_deadline_wakes_an_inheriting_waiter() {
    model(|| {
        let (parent, handle) = Context::background().with_deadline(far_deadline());
        let (child, _child_cancel) = parent.with_cancel();
        let old = timer::entry_key(parent.deadline().expect("own deadline"), node(&parent));
        let waiter = {
            let child = child.clone();
            thread::spawn(move || child.wait())
        };
        let new_deadline = far_deadline() - Duration::from_secs(60);
        assert!(handle.set_deadline(new_deadline));
        assert_eq!(child.deadline(), Some(new_deadline));
        assert!(!timer::fire(old), "the old entry moved");
        assert!(timer::fire(timer::entry_key(new_deadline, node(&parent))));
        assert_eq!(waiter.join().unwrap(), Error::DeadlineExceeded);
    });
}

/// A child's handle dropped on one thread while its parent is cancelled with
/// a cause on another: whichever ends the child first decides both its
/// cause and whether its `Debug` names the dropped handle, and the two never
/// disagree. The grandchild, ended by the child's end, never claims a
/// dropped handle of its own.
#[test]
fn handle_drop_vs_parent_cancel() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let (grandchild, _grandchild_cancel) = child.with_cancel();
        let dropper = thread::spawn(move || drop(child_cancel));
        cancel.cancel_with(Named("parent"));
        dropper.join().unwrap();

        let dropped = format!("{child:?}").contains("CancelHandle dropped");
        let by_parent = cause_text(&child) == "parent";
        assert_ne!(
            dropped,
            by_parent,
            "{child:?}, cause {}",
            cause_text(&child)
        );
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(grandchild.err(), Some(Error::Canceled));
        assert_eq!(cause_text(&grandchild), cause_text(&child));
        assert!(!format!("{grandchild:?}").ends_with("CancelHandle dropped)"));
        seen.record(if dropped { "dropped" } else { "parent" });
    });
    outcomes.assert_all_seen(&["dropped", "parent"]);
}

/// Provenance is read while a parent and its child are cancelled at once,
/// by each canceller as soon as its cancel returns: whatever the other is
/// doing, both read the final answer (the child's end, whichever reached it
/// first, is recorded with its status under its lock), and that answer
/// agrees with the cause: the nearest end of its own wins.
///
/// Both read the child, not the grandchild: a cancel that finds a context
/// already ended goes no further down, and the other cancel may not have
/// reached the grandchild yet (so neither `cancel()` waits for the whole
/// subtree when another cancel is ending part of it).
#[test]
fn provenance_read_while_parent_and_child_cancel() {
    use crate::provenance::Origin;
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move || {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let (grandchild, _grandchild_cancel) = child.with_cancel();
        let child_canceller = {
            let child = child.clone();
            thread::spawn(move || {
                child_cancel.cancel_with(Named("child"));
                child.provenance().map(|why| why.levels_up())
            })
        };
        cancel.cancel_from("parent");
        let read_by_parent_canceller = child.provenance().map(|why| why.levels_up());
        let read_by_child_canceller = child_canceller.join().unwrap();

        let why = grandchild.provenance().expect("done");
        let levels = if cause_text(&child) == "child" { 1 } else { 2 };
        assert_eq!(why.levels_up(), levels);
        let origin = if levels == 1 {
            Origin::CancelWith
        } else {
            Origin::Integration("parent")
        };
        assert_eq!(why.origin(), origin);
        assert_eq!(read_by_parent_canceller, Some(levels - 1));
        assert_eq!(read_by_child_canceller, Some(levels - 1));
        assert_eq!(parent.provenance().unwrap().levels_up(), 0);
        seen.record(levels);
    });
    outcomes.assert_all_seen(&["1", "2"]);
}

/// `finish_with` while another thread registers an `after_func` on the
/// context and then lets go of its own reference: whichever the finish
/// sees, the function runs (a finish that finds itself the only owner also
/// finds the registration, so it ends the context rather than letting it
/// go), and the context leaves its parent.
#[test]
fn finish_with_vs_a_registration_and_its_owners_drop() {
    model(|| {
        let (parent, _cancel) = Context::background().with_cancel();
        let (ctx, finish) = parent.with_cancel();
        let weak = NodeRef::downgrade(node(&ctx));
        let runs = Arc::new(AtomicUsize::new(0));
        let released = Released::new();
        let registrar = {
            let (runs, guard) = (runs.clone(), ReleaseGuard(released.clone()));
            thread::spawn(move || {
                let after = ctx.after_func(move || {
                    let _guard = guard;
                    runs.fetch_add(1, Ordering::Relaxed);
                });
                drop(after); // the function stays registered
                drop(ctx);
            })
        };
        finish.finish_with(Named("finished"));
        registrar.join().unwrap();
        released.wait();

        assert_eq!(runs.load(Ordering::Relaxed), 1);
        assert_eq!(parent.registrations(), 0);
        assert!(weak.upgrade().is_none(), "nobody holds the context");
    });
}

/// A context read back through its handle (`CancelHandle::context`) while
/// its last other owner lets go on another thread is an owner like any
/// other: the finish that follows ends it, with its cause, rather than
/// letting it go, and then it leaves its parent.
#[test]
fn a_context_read_through_its_handle_is_ended_not_let_go() {
    model(|| {
        let (parent, _cancel) = Context::background().with_cancel();
        let (ctx, finish) = parent.with_cancel();
        let other = thread::spawn(move || drop(ctx));
        let seen = finish.context().expect("the handle holds its context");
        finish.finish_with(Named("finished"));
        other.join().unwrap();

        assert_eq!(seen.err(), Some(Error::Canceled));
        assert_eq!(cause_text(&seen), "finished");
        assert_eq!(parent.registrations(), 0);
    });
}

/// `finish_with` on a context nobody holds, while its parent is cancelled:
/// either the parent's cancel ends it first or the finish lets it go; both
/// leave nothing behind, and the parent's cancel returns whole.
#[test]
fn finish_with_unobserved_vs_parent_cancel() {
    model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (ctx, finish) = parent.with_deadline(far_deadline());
        let weak = NodeRef::downgrade(node(&ctx));
        let key = timer::entry_key(ctx.deadline().expect("own deadline"), node(&ctx));
        drop(ctx);
        let finisher = thread::spawn(move || finish.finish_with(Named("finished")));
        cancel.cancel();
        finisher.join().unwrap();

        assert!(weak.upgrade().is_none(), "the context is freed");
        assert!(!timer::fire(key), "its timer entry is gone");
        assert_eq!(parent.registrations(), 0);
    });
}
