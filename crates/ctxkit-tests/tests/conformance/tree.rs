use crate::support::*;
use ctxkit::{CancelHandle, Context, Error};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

/// A small deterministic generator: the tests must be reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Derives `layers` random layers (cancel, timeout, value, after_func) below
/// `ctx`; returns every context of the chain and the handles to keep.
fn random_chain(ctx: &Context, layers: usize, seed: u64) -> (Vec<Context>, Vec<CancelHandle>) {
    let mut rng = Rng(seed);
    let mut contexts = vec![];
    let mut handles = vec![];
    let mut current = ctx.clone();
    for layer in 0..layers {
        current = match rng.below(3) {
            0 => {
                let (ctx, cancel) = current.with_cancel();
                handles.push(cancel);
                ctx
            }
            1 => {
                let (ctx, cancel) = current.with_timeout(Duration::from_secs(3600));
                handles.push(cancel);
                ctx
            }
            _ => current.with_value(layer),
        };
        contexts.push(current.clone());
    }
    (contexts, handles)
}

#[test]
fn cancelling_a_parent_cancels_every_descendant_before_cancel_returns() {
    for seed in 1..=20 {
        let (root, cancel) = Context::background().with_cancel();
        let (chain, _handles) = random_chain(&root, 40, seed);
        assert!(chain.iter().all(|ctx| !ctx.is_done()));
        cancel.cancel();
        for (depth, ctx) in chain.iter().enumerate() {
            assert_eq!(
                ctx.err(),
                Some(Error::Canceled),
                "seed {seed}, depth {depth}"
            );
        }
    }
}

#[test]
fn cancelling_a_child_leaves_parent_and_siblings_live_and_the_parent_empty() {
    let (parent, _cancel) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let (timeout_child, cancel_timeout) = parent.with_timeout(Duration::from_secs(3600));
    let after = parent.after_func(|| panic!("must not run: stopped"));
    assert_eq!(parent.registrations(), 4);

    cancel_child.cancel();
    assert!(child.is_done());
    assert!(!parent.is_done());
    assert!(!sibling.is_done());
    assert_eq!(parent.registrations(), 3);

    cancel_timeout.cancel();
    assert_eq!(timeout_child.err(), Some(Error::Canceled));
    assert_eq!(parent.registrations(), 2);

    assert!(after.stop());
    assert_eq!(parent.registrations(), 1, "only the sibling is left");
}

#[test]
fn dropped_children_leave_their_parent_too() {
    let (parent, _cancel) = Context::background().with_cancel();
    {
        let (child, cancel) = parent.with_timeout(Duration::from_secs(3600));
        cancel.detach();
        let _grandchild = child.with_value(1u8).with_cancel();
        assert_eq!(parent.registrations(), 1);
    }
    assert_eq!(parent.registrations(), 0);
}

#[test]
fn a_parent_that_cannot_be_cancelled_keeps_no_bookkeeping() {
    let roots = [
        Context::background(),
        Context::todo(),
        Context::background().with_value(1u8),
        Context::background().with_cancel().0.without_cancel(),
    ];
    for root in roots {
        let children: Vec<_> = (0..10).map(|_| root.with_cancel()).collect();
        assert_eq!(root.registrations(), 0);
        drop(children);
    }
}

#[test]
fn deriving_from_a_done_parent_gives_a_done_child_with_the_parents_err_and_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Why("gone"));
    let children = [
        parent.with_cancel().0,
        parent.with_timeout(Duration::from_secs(3600)).0,
        parent.with_timeout(Duration::ZERO).0,
        parent.with_value(1u8),
    ];
    for child in children {
        assert_eq!(child.err(), Some(Error::Canceled), "{child:?}");
        assert_eq!(why(&child.cause().unwrap()), Some("gone"), "{child:?}");
    }
    assert_eq!(parent.registrations(), 0);
}

#[test]
fn deriving_while_the_parent_is_cancelled_concurrently_never_misses_the_cancel() {
    for _ in 0..100 {
        let (parent, cancel) = Context::background().with_cancel();
        let start = Arc::new(Barrier::new(2));
        let deriver = {
            let (parent, start) = (parent.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                (0..50).map(|_| parent.with_cancel()).collect::<Vec<_>>()
            })
        };
        start.wait();
        cancel.cancel_with(Why("raced"));
        for (child, _handle) in deriver.join().unwrap() {
            assert_eq!(child.err(), Some(Error::Canceled));
            assert_eq!(why(&child.cause().unwrap()), Some("raced"));
        }
        assert_eq!(parent.registrations(), 0);
    }
}

/// Runs `f` on a thread; fails the test if it does not finish in time.
fn within_patience<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    expect(&rx, what)
}

#[test]
fn concurrent_cancels_of_every_node_of_a_tree_end_with_all_done() {
    within_patience("concurrent cancels (deadlock?)", || {
        for round in 0..10u64 {
            // A random tree of ~100 nodes: each new node picks a random parent.
            let mut rng = Rng(round + 7);
            let (root, root_cancel) = Context::background().with_cancel();
            let mut nodes = vec![(root, root_cancel)];
            for _ in 0..100 {
                let parent = nodes[rng.below(nodes.len() as u64) as usize].0.clone();
                nodes.push(parent.with_cancel());
            }
            let contexts: Vec<Context> = nodes.iter().map(|(ctx, _)| ctx.clone()).collect();
            // Shuffle the handles across 8 threads.
            let mut buckets: Vec<Vec<CancelHandle>> = (0..8).map(|_| vec![]).collect();
            for (_, handle) in nodes {
                buckets[rng.below(8) as usize].push(handle);
            }
            let start = Arc::new(Barrier::new(8));
            let threads: Vec<_> = buckets
                .into_iter()
                .map(|handles| {
                    let start = start.clone();
                    thread::spawn(move || {
                        start.wait();
                        for handle in &handles {
                            handle.cancel();
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert!(contexts.iter().all(Context::is_done));
            assert!(contexts.iter().all(|ctx| ctx.registrations() == 0));
        }
    });
}

#[test]
fn every_cancel_returns_after_its_whole_subtree_even_one_that_lost_the_race() {
    within_patience("racing cancels (deadlock?)", || {
        for round in 0..20u64 {
            // A random tree of ~200 nodes, each a random node's child.
            let mut rng = Rng(round + 101);
            let (root, root_cancel) = Context::background().with_cancel();
            let mut nodes = vec![(root, root_cancel)];
            let mut parents = vec![usize::MAX];
            for _ in 0..200 {
                let parent = rng.below(nodes.len() as u64) as usize;
                let child = nodes[parent].0.with_cancel();
                nodes.push(child);
                parents.push(parent);
            }
            // Each node's subtree: itself and everything below it.
            let contexts: Arc<Vec<Context>> =
                Arc::new(nodes.iter().map(|(ctx, _)| ctx.clone()).collect());
            let mut subtrees: Vec<Vec<usize>> = (0..nodes.len()).map(|n| vec![n]).collect();
            for node in (1..nodes.len()).rev() {
                let below = subtrees[node].clone();
                subtrees[parents[node]].extend(below);
            }
            let subtrees = Arc::new(subtrees);
            // Four threads cancel the nodes in four different orders, so
            // most cancels lose to another that is still draining.
            let handles: Arc<Vec<CancelHandle>> =
                Arc::new(nodes.into_iter().map(|(_, handle)| handle).collect());
            let start = Arc::new(Barrier::new(4));
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let (contexts, subtrees, handles, start) =
                        (contexts.clone(), subtrees.clone(), handles.clone(), start.clone());
                    let mut order: Vec<usize> = (0..handles.len()).collect();
                    let mut rng = Rng(round * 4 + t + 1);
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    thread::spawn(move || {
                        start.wait();
                        for node in order {
                            handles[node].cancel();
                            let undone = subtrees[node].iter().find(|&&n| !contexts[n].is_done());
                            assert!(
                                undone.is_none(),
                                "cancel() of node {node} returned before node {undone:?} below it was done"
                            );
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert!(contexts.iter().all(|ctx| ctx.registrations() == 0));
        }
    });
}

#[test]
fn a_child_cancelled_by_a_thread_woken_by_the_parents_cancel_does_not_deadlock() {
    within_patience("re-entrant cancel (deadlock?)", || {
        let (parent, cancel) = Context::background().with_cancel();
        let children: Vec<_> = (0..1000).map(|_| parent.with_cancel()).collect();
        let contexts: Vec<Context> = children.iter().map(|(ctx, _)| ctx.clone()).collect();
        let handles: Vec<CancelHandle> = children.into_iter().map(|(_, h)| h).collect();
        let canceller = {
            let parent = parent.clone();
            thread::spawn(move || {
                parent.wait();
                // Cancel children while the parent may still be cancelling.
                for handle in handles.iter().rev() {
                    handle.cancel_with(Why("from the woken thread"));
                }
            })
        };
        // Cancel once the canceller is blocked in `wait()` (its registration
        // beside the 1,000 children's): a thread the cancel wakes runs after
        // the drain. One that only looked, after the parent's status said
        // done but before the drain was over, may reach a child first, as in
        // Go.
        while parent.registrations() < 1001 {
            thread::yield_now();
        }
        cancel.cancel();
        canceller.join().unwrap();
        assert!(contexts.iter().all(Context::is_done));
        // The parent's cancellation reached every child first: its cause wins.
        assert!(contexts
            .iter()
            .all(|ctx| plain(&ctx.cause().unwrap()) == Some(Error::Canceled)));
    });
}

#[test]
fn cancel_is_idempotent_and_safe_from_many_threads_at_once() {
    for _ in 0..50 {
        let (ctx, cancel) = Context::background().with_cancel();
        let cancel = Arc::new(cancel);
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (cancel, start) = (cancel.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    if i % 2 == 0 {
                        cancel.cancel();
                    } else {
                        cancel.cancel_with(Why("odd"));
                    }
                    cancel.cancel();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(ctx.err(), Some(Error::Canceled));
        let first = ctx.cause().unwrap();
        assert!(why(&first) == Some("odd") || plain(&first) == Some(Error::Canceled));
        cancel.cancel_with(Why("late"));
        assert!(
            Arc::ptr_eq(&first, &ctx.cause().unwrap()),
            "the first cause stays"
        );
    }
}

#[test]
fn cancel_does_not_wait_for_the_work_to_stop() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let stopped = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (ctx, stopped) = (ctx.clone(), stopped.clone());
        thread::spawn(move || {
            ctx.wait();
            // Slow clean-up, only finished when the test allows it.
            release_rx.recv().unwrap();
            stopped.store(1, Ordering::SeqCst);
        })
    };
    cancel.cancel(); // returns although the worker is still cleaning up
    assert_eq!(stopped.load(Ordering::SeqCst), 0);
    release_tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_handle_dropped_anywhere_cancels_and_a_detached_one_does_not() {
    let (ctx, cancel) = Context::background().with_cancel();
    thread::spawn(move || drop(cancel)).join().unwrap();
    assert_eq!(ctx.err(), Some(Error::Canceled));

    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    cancel.detach();
    assert!(!ctx.is_done());
    assert_eq!(
        parent.registrations(),
        1,
        "a detached child stays registered"
    );
    cancel_parent.cancel();
    assert!(ctx.is_done());
}

#[test]
fn deep_chains_are_freed_without_overflowing_the_stack() {
    let (root, cancel) = Context::background().with_cancel();
    let mut ctx = root.clone();
    for i in 0..200_000u32 {
        ctx = if i % 2 == 0 {
            ctx.with_value(i)
        } else {
            let (child, handle) = ctx.with_cancel();
            handle.detach();
            child
        };
    }
    cancel.cancel();
    assert!(ctx.is_done());
    drop(ctx);
    assert_eq!(root.registrations(), 0);
}

#[test]
fn contexts_cross_threads_and_mutexes() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Context>();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CancelHandle>();
    assert_send_sync::<ctxkit::AfterFunc>();
    let shared = Mutex::new(Context::background().with_value(5u8));
    assert_eq!(shared.lock().unwrap().value::<u8>(), Some(&5));
}
