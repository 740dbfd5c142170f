//! The errgroup: on scoped threads (`group::scope`) and on tokio
//! (`group::TaskGroup`).

use ctxkit::group::{self, LimitError, TaskGroup, TaskPanicked};
use ctxkit::{Context, Error};
use futures::FutureExt;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

/// Generous: these machines are shared and noisy.
const PATIENCE: Duration = Duration::from_secs(10);

/// A task error of our own, to tell errors apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failed(u32);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}

impl std::error::Error for Failed {}

/// A parent that ends by itself if a test hangs, with `DeadlineExceeded`
/// (which the tests tell apart from the group's own `Canceled`).
fn bounded_parent() -> (Context, ctxkit::CancelHandle) {
    Context::background().with_timeout(PATIENCE)
}

/// The same, when the test never cancels the parent itself.
fn bounded() -> Context {
    let (ctx, deadline_only) = bounded_parent();
    deadline_only.detach();
    ctx
}

/// The `Failed` a context was cancelled with, if any.
fn failed_cause(ctx: &Context) -> Option<Failed> {
    ctx.cause()?.downcast_ref::<Failed>().cloned()
}

/// Counts live tasks and remembers the highest count seen.
#[derive(Default)]
struct Concurrency {
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) -> Occupancy<'_> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Occupancy(self)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct Occupancy<'a>(&'a Concurrency);

impl Drop for Occupancy<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---- threads ------------------------------------------------------------

#[test]
fn first_error_cancels_blocked_siblings_with_it_as_cause() {
    const SIBLINGS: usize = 8;
    let (parent, _cancel) = bounded_parent();
    let started = Barrier::new(SIBLINGS + 1);
    let seen = std::sync::Mutex::new(Vec::new());
    let begun = Instant::now();
    let result = group::scope(&parent, |g| {
        for _ in 0..SIBLINGS {
            g.spawn(|ctx| {
                started.wait();
                let err = ctx.wait();
                seen.lock().unwrap().push((err, failed_cause(ctx)));
                Ok(())
            });
        }
        g.spawn(|_| {
            started.wait(); // every sibling is about to block
            Err(Failed(1))
        });
    });
    assert_eq!(result, Err(Arc::new(Failed(1))));
    assert!(
        begun.elapsed() < PATIENCE / 2,
        "siblings were not stopped promptly"
    );
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), SIBLINGS);
    for (err, cause) in seen {
        assert_eq!(err, Error::Canceled, "not the parent's deadline");
        assert_eq!(cause, Some(Failed(1)));
    }
}

#[test]
fn wait_returns_the_first_error_not_later_ones() {
    let (parent, _cancel) = bounded_parent();
    let result = group::scope(&parent, |g| {
        for n in 2..6 {
            g.spawn(move |ctx| {
                ctx.wait(); // fail only after the first failure
                Err(Failed(n))
            });
        }
        g.spawn(|_| Err(Failed(1)));
    });
    assert_eq!(result, Err(Arc::new(Failed(1))));
}

#[test]
fn concurrent_failures_agree_on_the_first() {
    for _ in 0..50 {
        let ctx_seen = std::sync::Mutex::new(None);
        let result = group::scope(&bounded(), |g| {
            *ctx_seen.lock().unwrap() = Some(g.context().clone());
            for n in 0..4 {
                g.spawn(move |_| Err(Failed(n)));
            }
        });
        let ctx = ctx_seen.into_inner().unwrap().unwrap();
        let first = result.unwrap_err();
        assert_eq!(
            failed_cause(&ctx),
            Some((*first).clone()),
            "cause and wait disagree"
        );
        let cause = ctx.cause().unwrap();
        assert!(
            std::ptr::addr_eq(Arc::as_ptr(&cause), Arc::as_ptr(&first)),
            "the cause is the returned error itself, not a copy"
        );
    }
}

#[test]
fn group_context_ends_when_scope_returns() {
    let (ctx, value) = group::scope::<Failed, _, _>(&bounded(), |g| {
        g.spawn(|ctx| {
            assert!(!ctx.is_done(), "success alone cancels nothing");
            Ok(())
        });
        (g.context().clone(), 7)
    })
    .unwrap();
    assert_eq!(value, 7);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.downcast_ref::<Error>(), Some(&Error::Canceled));

    let mut ctx = None;
    let result = group::scope(&bounded(), |g| {
        ctx = Some(g.context().clone());
        g.spawn(|_| Err(Failed(3)));
    });
    assert_eq!(result, Err(Arc::new(Failed(3))));
    assert_eq!(failed_cause(&ctx.unwrap()), Some(Failed(3)));
}

#[test]
fn scope_waits_for_every_task_and_tasks_may_borrow() {
    let mut slots = vec![0usize; 64];
    group::scope::<Failed, _, _>(&bounded(), |g| {
        for (i, slot) in slots.iter_mut().enumerate() {
            g.spawn(move |_| {
                std::thread::yield_now();
                *slot = i * 2;
                Ok(())
            });
        }
    })
    .unwrap();
    assert!(slots.iter().enumerate().all(|(i, &v)| v == i * 2));
}

#[test]
fn parent_cancellation_reaches_the_tasks() {
    let (parent, cancel) = Context::background().with_cancel();
    let result = group::scope::<Failed, _, _>(&parent, |g| {
        let (started_tx, started) = mpsc::channel();
        g.spawn(move |ctx| {
            started_tx.send(()).unwrap();
            assert_eq!(ctx.wait(), Error::Canceled);
            Ok(())
        });
        started.recv_timeout(PATIENCE).unwrap();
        cancel.cancel();
    });
    assert_eq!(result, Ok(()), "a cancelled parent is not a task error");
}

#[test]
fn limit_is_never_exceeded() {
    const LIMIT: usize = 3;
    let concurrency = Concurrency::default();
    let finished = AtomicUsize::new(0);
    group::scope::<Failed, _, _>(&bounded(), |g| {
        g.set_limit(Some(LIMIT)).unwrap();
        for _ in 0..300 {
            g.spawn(|_| {
                let _inside = concurrency.enter();
                std::thread::yield_now();
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
    })
    .unwrap();
    assert_eq!(finished.into_inner(), 300);
    let peak = concurrency.peak();
    assert!(
        (1..=LIMIT).contains(&peak),
        "peak concurrency {peak} > limit {LIMIT}"
    );
}

#[test]
fn spawn_blocks_at_the_limit_until_a_slot_frees() {
    let (release, released) = mpsc::channel::<()>();
    let slot_freed = Arc::new(AtomicBool::new(false));
    let second_ran = AtomicBool::new(false);
    group::scope::<Failed, _, _>(&bounded(), |g| {
        g.set_limit(Some(1)).unwrap();
        g.spawn(move |_| {
            released.recv_timeout(PATIENCE).unwrap();
            Ok(())
        });
        let releaser = std::thread::spawn({
            let slot_freed = Arc::clone(&slot_freed);
            move || {
                // A head start for a spawn that would wrongly not block.
                std::thread::sleep(Duration::from_millis(50));
                slot_freed.store(true, Ordering::SeqCst);
                release.send(()).unwrap();
            }
        });
        g.spawn(|_| {
            second_ran.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert!(
            slot_freed.load(Ordering::SeqCst),
            "spawn returned while the limit was reached"
        );
        releaser.join().unwrap();
    })
    .unwrap();
    assert!(second_ran.into_inner());
}

#[test]
fn try_spawn_returns_false_at_the_limit_and_drops_the_task() {
    let (release, released) = mpsc::channel::<()>();
    let ran = AtomicBool::new(false);
    group::scope::<Failed, _, _>(&bounded(), |g| {
        g.set_limit(Some(2)).unwrap();
        let released = Arc::new(std::sync::Mutex::new(released));
        for _ in 0..2 {
            let released = Arc::clone(&released);
            assert!(g.try_spawn(move |_| {
                released.lock().unwrap().recv_timeout(PATIENCE).unwrap();
                Ok(())
            }));
        }
        assert!(!g.try_spawn(|_| {
            ran.store(true, Ordering::SeqCst);
            Ok(())
        }));
        release.send(()).unwrap();
        release.send(()).unwrap();
    })
    .unwrap();
    assert!(!ran.into_inner(), "a refused task must not run");
}

#[test]
fn limit_changes_are_refused_while_tasks_run() {
    let (release, released) = mpsc::channel::<()>();
    group::scope::<Failed, _, _>(&bounded(), |g| {
        assert_eq!(g.set_limit(Some(0)), Err(LimitError::Zero));
        g.set_limit(Some(4)).unwrap();
        g.spawn(move |_| {
            released.recv_timeout(PATIENCE).unwrap();
            Ok(())
        });
        let refused = g.set_limit(None).unwrap_err();
        assert_eq!(refused, LimitError::TasksRunning { running: 1 });
        assert!(refused.to_string().contains("before the first spawn"));
        release.send(()).unwrap();
    })
    .unwrap();
}

#[test]
fn panic_reaches_the_caller_after_the_others_stopped() {
    let sibling_stopped = AtomicBool::new(false);
    let (parent, _cancel) = bounded_parent();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        group::scope::<Failed, _, _>(&parent, |g| {
            g.spawn(|ctx| {
                ctx.wait();
                assert!(ctx.cause().unwrap().is::<TaskPanicked>());
                // Slow clean-up: the panic must still wait for it.
                std::thread::sleep(Duration::from_millis(50));
                sibling_stopped.store(true, Ordering::SeqCst);
                Ok(())
            });
            // A task that only panics names its error type: `panic!`
            // alone would make it a `()` task, which only infallible groups
            // take.
            g.spawn(|_| -> Result<(), Failed> { panic!("task exploded") });
        })
    }));
    let payload = caught.expect_err("the panic reached the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task exploded"));
    assert!(
        sibling_stopped.into_inner(),
        "resumed before the sibling stopped"
    );
}

#[test]
fn panic_outranks_errors() {
    let caught = catch_unwind(|| {
        group::scope(&bounded(), |g| {
            // Spawned first: once the error has ended the group, a spawn
            // runs nothing.
            g.spawn(|ctx| -> Result<(), Failed> {
                ctx.wait();
                panic!("late panic");
            });
            g.spawn(|_| Err(Failed(1)));
        })
    });
    assert!(caught.is_err());
}

#[test]
fn panic_in_the_scope_closure_stops_the_tasks() {
    let (parent, _cancel) = bounded_parent();
    let task_err = std::sync::Mutex::new(None);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        group::scope::<Failed, _, _>(&parent, |g| {
            g.spawn(|ctx| {
                *task_err.lock().unwrap() = Some(ctx.wait());
                Ok(())
            });
            panic!("closure exploded");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(
        *task_err.lock().unwrap(),
        Some(Error::Canceled),
        "not the deadline"
    );
}

// ---- tokio --------------------------------------------------------------

/// Counts a task as live from creation until its future is dropped, and
/// reports the drop.
struct Live {
    count: Arc<AtomicUsize>,
    dropped: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::SeqCst);
        Live {
            count: Arc::clone(count),
            dropped: None,
        }
    }

    fn reporting(count: &Arc<AtomicUsize>, to: &tokio::sync::mpsc::UnboundedSender<()>) -> Live {
        let mut live = Live::new(count);
        live.dropped = Some(to.clone());
        live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        if let Some(dropped) = &self.dropped {
            let _ = dropped.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_first_error_cancels_siblings_with_it_as_cause() {
    const SIBLINGS: usize = 8;
    let (parent, _cancel) = bounded_parent();
    let mut g = TaskGroup::new(&parent);
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let started = Arc::new(tokio::sync::Barrier::new(SIBLINGS + 1));
    for _ in 0..SIBLINGS {
        let (seen_tx, started) = (seen_tx.clone(), Arc::clone(&started));
        g.spawn(move |ctx| async move {
            started.wait().await;
            let err = ctx.done().await;
            seen_tx.send((err, failed_cause(&ctx))).unwrap();
            Ok(())
        })
        .await;
    }
    g.spawn(move |_| async move {
        started.wait().await;
        Err(Failed(1))
    })
    .await;
    drop(seen_tx);
    assert_eq!(g.wait().await, Err(Arc::new(Failed(1))));
    let mut count = 0;
    while let Some((err, cause)) = seen.recv().await {
        assert_eq!(err, Error::Canceled);
        assert_eq!(cause, Some(Failed(1)));
        count += 1;
    }
    assert_eq!(count, SIBLINGS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_wait_returns_the_first_error_and_ends_the_context() {
    let mut g = TaskGroup::new(&bounded());
    for n in 2..6 {
        g.spawn(move |ctx| async move {
            ctx.done().await;
            Err(Failed(n))
        })
        .await;
    }
    g.spawn(|_| async { Err(Failed(1)) }).await;
    let ctx = g.context().clone();
    assert_eq!(g.wait().await, Err(Arc::new(Failed(1))));
    assert_eq!(failed_cause(&ctx), Some(Failed(1)));

    let g = TaskGroup::<Failed>::new(&bounded());
    let ctx = g.context().clone();
    assert_eq!(g.wait().await, Ok(()));
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_no_task_is_running_after_wait() {
    let live = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGroup::new(&bounded());
    for n in 0..64u32 {
        let guard = Live::new(&live);
        g.spawn(move |ctx| async move {
            let _guard = guard;
            if n == 40 {
                return Err(Failed(n));
            }
            // Half stop on cancellation, half finish their own work.
            if n % 2 == 0 {
                ctx.done().await;
            } else {
                tokio::task::yield_now().await;
            }
            Ok(())
        })
        .await;
    }
    assert_eq!(g.wait().await, Err(Arc::new(Failed(40))));
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_dropping_the_group_cancels_then_aborts_every_task() {
    const TASKS: usize = 16;
    let live = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let mut g = TaskGroup::<Failed>::new(&bounded());
    for _ in 0..TASKS {
        let guard = Live::reporting(&live, &dropped_tx);
        let started_tx = started_tx.clone();
        // Ignores its context: only an abort can end it.
        g.spawn(move |_| async move {
            let _guard = guard;
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
            Ok(())
        })
        .await;
    }
    for _ in 0..TASKS {
        started.recv().await.unwrap();
    }
    let ctx = g.context().clone();
    drop(g);
    assert_eq!(
        ctx.err(),
        Some(Error::Canceled),
        "cancelled before returning"
    );
    for _ in 0..TASKS {
        tokio::time::timeout(PATIENCE, dropped.recv())
            .await
            .expect("an aborted task was never dropped");
    }
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_abandoned_wait_aborts_the_tasks() {
    let live = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
    let mut g = TaskGroup::<Failed>::new(&bounded());
    let guard = Live::reporting(&live, &dropped_tx);
    g.spawn(move |_| async move {
        let _guard = guard;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    let ctx = g.context().clone();
    let waited = tokio::time::timeout(Duration::from_millis(20), g.wait()).await;
    assert!(waited.is_err(), "the task never ends by itself");
    assert!(ctx.is_done());
    tokio::time::timeout(PATIENCE, dropped.recv())
        .await
        .unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_limit_is_never_exceeded() {
    const LIMIT: usize = 4;
    let concurrency = Arc::new(Concurrency::default());
    let mut g = TaskGroup::<Failed>::new(&bounded());
    g.set_limit(Some(LIMIT)).unwrap();
    for _ in 0..200 {
        let concurrency = Arc::clone(&concurrency);
        g.spawn(move |_| async move {
            let _inside = concurrency.enter();
            tokio::task::yield_now().await;
            Ok(())
        })
        .await;
    }
    g.wait().await.unwrap();
    let peak = concurrency.peak();
    assert!(
        (1..=LIMIT).contains(&peak),
        "peak concurrency {peak} > limit {LIMIT}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_try_spawn_and_set_limit_at_the_limit() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut g = TaskGroup::<Failed>::new(&bounded());
    assert_eq!(g.set_limit(Some(0)), Err(LimitError::Zero));
    g.set_limit(Some(1)).unwrap();
    assert!(g.try_spawn(move |_| async move {
        released.await.unwrap();
        Ok(())
    }));
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    assert!(!g.try_spawn(move |_| async move {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    }));
    assert_eq!(
        g.set_limit(Some(2)),
        Err(LimitError::TasksRunning { running: 1 })
    );
    release.send(()).unwrap();
    // Waits for the slot rather than failing.
    g.spawn(|_| async { Ok(()) }).await;
    g.wait().await.unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a refused task must not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_panic_reaches_wait_after_the_others_stopped() {
    let sibling_stopped = Arc::new(AtomicBool::new(false));
    let mut g = TaskGroup::<Failed>::new(&bounded());
    let flag = Arc::clone(&sibling_stopped);
    g.spawn(move |ctx| async move {
        ctx.done().await;
        assert!(ctx.cause().unwrap().is::<TaskPanicked>());
        tokio::time::sleep(Duration::from_millis(50)).await; // slow clean-up
        flag.store(true, Ordering::SeqCst);
        Ok(())
    })
    .await;
    g.spawn(|_| async { panic!("task exploded") as Result<(), Failed> })
        .await;
    let caught = AssertUnwindSafe(g.wait()).catch_unwind().await;
    let payload = caught.expect_err("the panic reached wait");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task exploded"));
    assert!(
        sibling_stopped.load(Ordering::SeqCst),
        "resumed before the sibling stopped"
    );
}
