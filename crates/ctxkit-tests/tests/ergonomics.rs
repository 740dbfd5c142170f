//! What a newcomer runs into first: the dropped-handle trap and its
//! detached-child fix, error types that fit (non-`Clone`, boxed, messages,
//! `?`), groups that need no error type, spawning on a done group, the same
//! capacity-0 contract for both pools, balanced reports, value keys by exact
//! type, and the deadline range.

use ctxkit::group::{self, TaskGroup};
use ctxkit::pipeline::{AsyncPipeline, Pipeline};
use ctxkit::pool::{Pool, SubmitError, TaskPool};
use ctxkit::{Context, Error, Message};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Generous: these machines are shared and noisy.
const PATIENCE: Duration = Duration::from_secs(10);

// ---- the dropped-handle trap ----------------------------------------------

#[test]
fn a_handle_bound_in_a_spawn_loop_cancels_every_worker() {
    let root = Context::background();
    let (tx, rx) = mpsc::channel();
    let start = Arc::new(std::sync::Barrier::new(5));
    let mut workers = Vec::new();
    for _ in 0..4 {
        // The Go habit: `_cancel` lives until the end of the iteration only.
        let (ctx, _cancel) = root.with_timeout(PATIENCE);
        let (tx, start) = (tx.clone(), Arc::clone(&start));
        workers.push(thread::spawn(move || {
            start.wait(); // the work begins once the loop is over
            tx.send((ctx.err(), format!("{ctx:?}"))).unwrap();
        }));
    }
    start.wait();
    for worker in workers {
        worker.join().unwrap();
    }
    drop(tx);
    for (err, debug) in rx {
        assert_eq!(err, Some(Error::Canceled), "every worker starts cancelled");
        assert!(
            debug.ends_with(", canceled: CancelHandle dropped)"),
            "Debug names the mistake: {debug}"
        );
    }
}

#[test]
fn detached_timeout_children_run_until_their_deadline() {
    let root = Context::background();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let ctx = root.with_timeout_detached(Duration::from_millis(50));
            thread::spawn(move || {
                let at_start = ctx.err();
                let ended = ctx.wait();
                (at_start, ended, format!("{ctx:?}"))
            })
        })
        .collect();
    for worker in workers {
        let (at_start, ended, debug) = worker.join().unwrap();
        assert_eq!(at_start, None, "not cancelled by the loop");
        assert_eq!(ended, Error::DeadlineExceeded);
        assert!(!debug.contains("dropped"), "{debug}");
    }
}

#[test]
fn a_detached_child_ends_with_its_parent_and_leaves_it_when_dropped() {
    let (parent, cancel) = Context::background().with_cancel();
    let child = parent.with_timeout_detached(PATIENCE);
    let at = Instant::now() + PATIENCE;
    let other = parent.with_deadline_detached(at);
    assert_eq!(other.deadline(), Some(at));
    assert_eq!(parent.registrations(), 2);
    drop(other); // nothing holds it: freed, timer entry and registration too
    assert_eq!(parent.registrations(), 1);
    cancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
}

#[test]
fn finish_with_ends_a_context_still_held_with_its_cause_and_call_site() {
    let (parent, _cancel) = Context::background().with_cancel();
    let (ctx, finish) = parent.with_cancel();
    let below = ctx.with_value(7u32);
    let line = line!() + 1;
    finish.finish_with(Message::new("response sent"));
    for ended in [&ctx, &below] {
        assert_eq!(ended.err(), Some(Error::Canceled));
        assert_eq!(ended.cause().unwrap().to_string(), "response sent");
    }
    let why = ctx.provenance().unwrap();
    assert_eq!(why.site().unwrap().line(), line, "{why:?}");
    assert_eq!(parent.registrations(), 0);
}

#[test]
fn finish_with_ends_a_context_that_only_a_descendant_holds() {
    let (parent, _cancel) = Context::background().with_cancel();
    let (ctx, finish) = parent.with_timeout(PATIENCE);
    let below = ctx.with_value(7u32);
    drop(ctx);
    finish.finish_with(Message::new("response sent"));
    assert_eq!(below.err(), Some(Error::Canceled));
    assert_eq!(below.cause().unwrap().to_string(), "response sent");
}

#[test]
fn finish_with_lets_go_of_a_context_nobody_holds() {
    let (parent, _cancel) = Context::background().with_cancel();
    let (plain, finish_plain) = parent.with_cancel();
    let (timed, finish_timed) = parent.with_timeout(PATIENCE);
    assert_eq!(parent.registrations(), 2);
    drop((plain, timed));
    finish_plain.finish_with(Message::new("response sent"));
    finish_timed.finish_with(Message::new("response sent"));
    assert_eq!(parent.registrations(), 0, "both left their parent");
    assert!(!parent.is_done());
}

#[test]
fn finish_with_runs_an_after_func_whose_handle_was_dropped() {
    let (ctx, finish) = Context::background().with_cancel();
    let (ran, runs) = mpsc::channel();
    drop(ctx.after_func(move || ran.send("ran").unwrap()));
    drop(ctx);
    finish.finish_with(Message::new("response sent"));
    assert_eq!(runs.recv_timeout(PATIENCE), Ok("ran"));
}

#[test]
fn finish_with_disconnects_a_done_receiver() {
    let (ctx, finish) = Context::background().with_cancel();
    let done = ctx.done_receiver();
    drop(ctx);
    finish.finish_with(Message::new("response sent"));
    let error = done.recv_timeout(PATIENCE).unwrap_err();
    assert!(error.is_disconnected(), "{error:?}");
}

#[test]
fn debug_says_which_contexts_a_dropped_handle_ended() {
    let (ctx, _) = Context::background().with_cancel();
    assert_eq!(
        format!("{ctx:?}"),
        "context.Background.WithCancel(canceled: CancelHandle dropped)"
    );
    let (ctx, _) = Context::background().with_timeout(PATIENCE);
    let debug = format!("{ctx:?}");
    assert!(
        debug.starts_with("context.Background.WithDeadline(+"),
        "{debug}"
    );
    assert!(
        debug.ends_with(", canceled: CancelHandle dropped)"),
        "{debug}"
    );

    // Below a dropped handle, the contexts it ended inherit nothing to say.
    let (parent, parent_handle) = Context::background().with_cancel();
    let (child, _child_handle) = parent.with_value(7u8).with_cancel();
    drop(parent_handle);
    assert_eq!(
        format!("{child:?}"),
        "context.Background.WithCancel(canceled: CancelHandle dropped).WithValue(u8).WithCancel"
    );

    // Cancelled on purpose, by its deadline, or detached: nothing to flag.
    let (ctx, handle) = Context::background().with_cancel();
    handle.cancel();
    drop(handle);
    assert_eq!(format!("{ctx:?}"), "context.Background.WithCancel");
    let (ctx, handle) = Context::background().with_timeout(Duration::ZERO);
    drop(handle);
    assert!(!format!("{ctx:?}").contains("dropped"));
    let (ctx, handle) = Context::background().with_cancel();
    handle.detach();
    assert_eq!(format!("{ctx:?}"), "context.Background.WithCancel");
    // And the error and cause are the usual ones.
    let (ctx, _) = Context::background().with_cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
}

// ---- error types ------------------------------------------------------------

#[test]
fn messages_are_causes() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Message::new("config reloaded"));
    assert_eq!(ctx.cause().unwrap().to_string(), "config reloaded");
    assert_eq!(
        ctx.cause()
            .unwrap()
            .downcast_ref::<Message>()
            .unwrap()
            .as_str(),
        "config reloaded"
    );

    let reason = format!("budget of {} ms spent", 0);
    let (ctx, _cancel) =
        Context::background().with_timeout_cause(Duration::ZERO, Message::from(reason));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap().to_string(), "budget of 0 ms spent");

    let borrowed = String::from("shutting down");
    let (ctx, _cancel) =
        Context::background().with_deadline_cause(Instant::now(), Message::from(borrowed.as_str()));
    assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");
    assert_eq!(format!("{:?}", Message::new("x")), r#"Message("x")"#);
}

#[test]
fn question_mark_turns_a_context_error_into_common_error_types() {
    fn io_step(ctx: &Context) -> io::Result<()> {
        ctx.check()?;
        Ok(())
    }
    fn boxed_step(ctx: &Context) -> Result<(), BoxError> {
        ctx.check()?;
        Ok(())
    }
    fn plain_boxed_step(ctx: &Context) -> Result<(), Box<dyn std::error::Error>> {
        ctx.check()?;
        Ok(())
    }
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    assert_eq!(io_step(&ctx).unwrap_err().kind(), io::ErrorKind::TimedOut);
    let boxed = boxed_step(&ctx).unwrap_err();
    assert_eq!(
        boxed.downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
    assert_eq!(
        plain_boxed_step(&ctx).unwrap_err().to_string(),
        "context deadline exceeded"
    );
}

#[test]
fn a_group_takes_a_non_clone_error_and_shares_it_with_the_cause() {
    let mut seen_by_sibling = None;
    let mut group_ctx = None;
    let result = group::scope(&Context::background(), |g| {
        group_ctx = Some(g.context().clone());
        g.spawn(|ctx| {
            ctx.wait();
            seen_by_sibling = ctx.cause();
            Ok(())
        });
        g.spawn(|_| Err(io::Error::new(io::ErrorKind::NotFound, "no such page")));
    });
    let err: Arc<io::Error> = result.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    let cause = seen_by_sibling.expect("the sibling saw a cause");
    assert_eq!(
        cause.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert!(
        std::ptr::addr_eq(Arc::as_ptr(&cause), Arc::as_ptr(&err)),
        "one shared value"
    );
    drop(cause);
    drop(group_ctx);
    // Nothing of the group is left: the error comes back by value.
    let err: io::Error = Arc::into_inner(err).expect("no other owner");
    assert_eq!(err.to_string(), "no such page");
}

#[test]
fn question_mark_works_in_a_group_task_with_a_non_clone_error() {
    fn read_all(paths: &[&str]) -> Result<(), Arc<io::Error>> {
        group::scope(&Context::background(), |g| {
            for path in paths {
                g.spawn(move |_ctx| {
                    std::fs::read(path)?;
                    Ok::<(), io::Error>(())
                });
            }
        })
    }
    let err = read_all(&["/nonexistent/ctxkit"]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // And `?` from the group's error into a boxed one.
    fn boxed() -> Result<(), BoxError> {
        read_all(&["/nonexistent/ctxkit"])?;
        Ok(())
    }
    assert!(boxed().unwrap_err().is::<Arc<io::Error>>());
}

#[tokio::test]
async fn a_task_group_takes_a_non_clone_error() {
    let mut g = TaskGroup::new(&Context::background());
    g.spawn(|_| async { Err(io::Error::other("disk full")) })
        .await;
    g.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    })
    .await;
    let ctx = g.context().clone();
    let err = g.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    assert!(ctx.cause().unwrap().is::<io::Error>());
}

#[test]
fn infallible_tasks_need_no_error_type() {
    let ran = AtomicUsize::new(0);
    let result = group::scope(&Context::background(), |g| {
        for _ in 0..3 {
            assert!(g.spawn(|_ctx| {
                ran.fetch_add(1, Ordering::Relaxed);
            }));
        }
        assert!(g.try_spawn(|_ctx| {
            ran.fetch_add(1, Ordering::Relaxed);
        }));
        "done"
    });
    assert_eq!(result.unwrap(), "done");
    assert_eq!(ran.into_inner(), 4);
}

#[tokio::test]
async fn infallible_async_tasks_need_no_error_type() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGroup::new(&Context::background());
    for _ in 0..3 {
        let ran = Arc::clone(&ran);
        assert!(
            g.spawn(move |_ctx| async move {
                ran.fetch_add(1, Ordering::Relaxed);
            })
            .await
        );
    }
    g.wait().await.unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 3);
}

#[test]
fn spawn_on_a_done_group_runs_nothing_and_says_so() {
    let ran = AtomicUsize::new(0);
    let (parent, cancel) = Context::background().with_cancel();
    let result = group::scope(&parent, |g| {
        assert!(g.spawn(|_| Err(Message::new("first"))));
        g.context().wait();
        assert!(!g.spawn(|_| {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
        assert!(!g.try_spawn(|_| {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
    });
    assert_eq!(result.unwrap_err().as_str(), "first");

    // The same when the parent ended the group.
    cancel.cancel();
    group::scope(&parent, |g| {
        assert!(!g.spawn(|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        }));
    })
    .unwrap();
    assert_eq!(ran.into_inner(), 0, "no task ran");
}

#[tokio::test]
async fn spawn_on_a_done_task_group_runs_nothing_and_says_so() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGroup::new(&Context::background());
    assert!(g.spawn(|_| async { Err(Message::new("first")) }).await);
    g.context().done().await;
    let counter = Arc::clone(&ran);
    assert!(
        !g.spawn(move |_| async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await
    );
    let counter = Arc::clone(&ran);
    assert!(!g.try_spawn(move |_| async move {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }));
    assert_eq!(g.wait().await.unwrap_err().as_str(), "first");
    assert_eq!(ran.load(Ordering::Relaxed), 0, "no task ran");
}

#[test]
fn a_pipeline_takes_boxed_errors() {
    let (out, report) = Pipeline::new(&Context::background(), ["1", "2", "x", "4"])
        .stage(1, |_ctx, s: &str| -> Result<u64, BoxError> {
            let n: u64 = s.parse()?;
            if n == 4 {
                return Err("four is right out".into());
            }
            Ok(n)
        })
        .collect();
    assert!(out.len() <= 2);
    assert!(report.is_balanced(), "{report:?}");
    let cause = report.cause.unwrap();
    assert!(
        cause.is::<std::num::ParseIntError>(),
        "the boxed error itself: {cause}"
    );
}

#[tokio::test]
async fn an_async_pipeline_takes_boxed_errors_and_any_stream() {
    // `Stream` comes from ctxkit: no futures crate needed to name it.
    fn numbers() -> impl ctxkit::pipeline::Stream<Item = u32> + Send + 'static {
        futures::stream::iter(0..100u32)
    }
    let report = AsyncPipeline::new(&Context::background(), numbers())
        .stage(2, |_ctx, n| async move {
            if n == 13 {
                return Err(BoxError::from(format!("unlucky {n}")));
            }
            Ok(n)
        })
        .run(drop)
        .await;
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.cause.unwrap().to_string(), "unlucky 13");
}

// ---- the same contract for both pools ---------------------------------------

#[test]
fn a_zero_capacity_pool_is_a_rendezvous() {
    let (release, released) = mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let pool = Pool::new(&Context::background(), 1, 0, move |_ctx, n: u32| {
        released.lock().unwrap().recv().ok();
        n
    });
    // No worker is waiting yet, or it is: either way the queue holds nothing.
    pool.submit(1).unwrap(); // taken by the worker, which now blocks
    assert!(
        matches!(pool.try_submit(2), Err(SubmitError::Full(2))),
        "busy: no room"
    );
    release.send(()).unwrap();
    let report = pool.join();
    assert_eq!(report.completed, vec![1]);
    assert!(report.is_balanced());
}

/// A capacity-0 task pool with one worker, whose jobs each wait for a
/// permit of `gate` (or for it to close) before they finish.
fn gated_rendezvous_pool(gate: &Arc<tokio::sync::Semaphore>) -> TaskPool<u32, u32> {
    let gate = Arc::clone(gate);
    TaskPool::new(&Context::background(), 1, 0, move |_ctx, n: u32| {
        let gate = Arc::clone(&gate);
        async move {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            n
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_capacity_task_pool_is_a_rendezvous() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let pool = gated_rendezvous_pool(&gate);
    pool.submit(1).await.unwrap(); // waits until the worker takes it
    assert!(
        matches!(pool.try_submit(2), Err(SubmitError::Full(2))),
        "busy: no room"
    );
    gate.add_permits(1);
    for n in 3..8 {
        gate.add_permits(1);
        pool.submit(n).await.unwrap();
    }
    let report = pool.join().await;
    let mut completed = report.completed.clone();
    completed.sort_unstable();
    assert_eq!(completed, vec![1, 3, 4, 5, 6, 7]);
    assert!(report.not_run.is_empty());
    assert!(report.is_balanced());
}

#[tokio::test]
async fn a_zero_capacity_task_pool_stops_a_waiting_submit_when_cancelled() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let pool = gated_rendezvous_pool(&gate);
    pool.submit(1).await.unwrap(); // the only worker is busy from now on
    let waiting = pool.submit(2);
    let cancel = async {
        tokio::task::yield_now().await;
        pool.cancel();
        gate.close(); // let the busy job end
    };
    let (submitted, ()) = tokio::join!(waiting, cancel);
    assert!(matches!(submitted, Err(SubmitError::Stopped(2))));
    let report = pool.join().await;
    assert_eq!(report.completed, vec![1]);
    assert!(report.is_balanced());
}

// ---- values and deadlines -----------------------------------------------------

#[test]
fn values_are_keyed_by_their_exact_type() {
    let ctx = Context::background().with_value(7);
    assert_eq!(ctx.value::<i32>(), Some(&7), "an integer literal is an i32");
    assert_eq!(ctx.value::<u32>(), None);
    assert_eq!(ctx.value::<i64>(), None);

    let ctx = Context::background().with_value(Arc::new(String::from("shared")));
    assert_eq!(
        ctx.value::<String>(),
        None,
        "an Arc<String> is not a String"
    );
    assert_eq!(ctx.value::<Arc<String>>().unwrap().as_str(), "shared");

    let ctx = Context::background().with_value("text");
    assert_eq!(
        ctx.value::<&str>(),
        Some(&"text"),
        "a literal is a &'static str"
    );
    assert_eq!(ctx.value::<String>(), None);
}

#[test]
fn far_deadlines_saturate_about_292_years_out() {
    const YEAR: u64 = 365 * 24 * 3600;
    let before = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(500 * YEAR));
    let reported = ctx.deadline().unwrap().duration_since(before);
    // 2^63 ns is about 292.3 years from the process's first deadline.
    assert!(reported > Duration::from_secs(290 * YEAR), "{reported:?}");
    assert!(reported < Duration::from_secs(293 * YEAR), "{reported:?}");
    assert!(!ctx.is_done());

    // A timeout too large for an Instant at all becomes a century.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::MAX);
    let reported = ctx.deadline().unwrap().duration_since(before);
    assert!(reported > Duration::from_secs(99 * YEAR), "{reported:?}");
    assert!(reported < Duration::from_secs(101 * YEAR), "{reported:?}");
}

// ---- recipes from the README ----------------------------------------------------

#[tokio::test]
async fn async_periodic_work_stops_when_its_context_ends() {
    let ctx = Context::background().with_timeout_detached(Duration::from_millis(50));
    let mut interval = tokio::time::interval(Duration::from_millis(5));
    let mut ticks = 0u32;
    while ctx.run(interval.tick()).await.is_ok() {
        ticks += 1;
    }
    assert!(ticks >= 1, "it ticked before the deadline");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn a_grace_period_lets_work_finish_then_stops_it() {
    let (root, shutdown) = Context::background().with_value(7u8).with_cancel();
    let (in_flight, force_stop) = root.without_cancel().with_cancel();
    let (finished_tx, finished) = mpsc::channel();
    let quick = {
        let ctx = in_flight.clone();
        thread::spawn(move || {
            // Finishes within the grace period, though shutdown has begun.
            finished.recv().unwrap();
            (ctx.err(), ctx.value::<u8>().copied())
        })
    };
    let slow = {
        let ctx = in_flight.clone();
        thread::spawn(move || {
            while ctx.sleep(Duration::from_millis(5)).is_ok() {}
            ctx.err()
        })
    };
    shutdown.cancel();
    assert!(root.is_done());
    assert!(!in_flight.is_done(), "shutdown does not end in-flight work");
    finished_tx.send(()).unwrap();
    assert_eq!(quick.join().unwrap(), (None, Some(7)));
    assert!(force_stop.set_timeout(Duration::from_millis(30)));
    assert_eq!(slow.join().unwrap(), Some(Error::DeadlineExceeded));
}
