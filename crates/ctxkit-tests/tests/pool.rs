//! The worker pool: bounded queue, prompt cancellation, and an account of
//! every job.

use ctxkit::pool::{JobPanicked, Pool, SubmitError, TaskPool};
use ctxkit::{Context, Error};
use futures::FutureExt;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: these machines are shared and noisy.
const PATIENCE: Duration = Duration::from_secs(10);

/// Receives within `PATIENCE`, or fails the test with `what`.
fn expect<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[test]
fn join_runs_every_queued_job() {
    let pool = Pool::new(&Context::background(), 4, 8, |_ctx, n: u64| n * n);
    for n in 0..100 {
        pool.submit(n).unwrap();
    }
    let report = pool.join();
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert!(report.not_run.is_empty());
    let mut squares = report.completed;
    squares.sort_unstable();
    assert_eq!(squares, (0..100).map(|n| n * n).collect::<Vec<_>>());
}

#[test]
fn no_job_is_lost_under_cancellation() {
    const SUBMITTERS: u32 = 4;
    const PER_SUBMITTER: u32 = 500;
    const TOTAL: usize = (SUBMITTERS * PER_SUBMITTER) as usize;
    for round in 0..10 {
        let (parent, cancel) = Context::background().with_cancel();
        // Cancel mid-way, after a number of jobs that varies from round to
        // round. Submitters can only run ahead of the workers by the queue's
        // capacity, so many submits still come after the cancellation.
        let cut = 100 + round * 150;
        let (cancel, started) = (Arc::new(cancel), Arc::new(AtomicUsize::new(0)));
        let pool = Pool::new(&parent, 4, 16, move |ctx, job: u32| {
            if started.fetch_add(1, Ordering::SeqCst) == cut {
                cancel.cancel();
            }
            // Short jobs, some of which notice the cancellation mid-way.
            let _ = ctx.sleep(Duration::from_micros(u64::from(job % 3) * 50));
            job
        });
        let refused = Mutex::new(Vec::new());
        let accepted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for submitter in 0..SUBMITTERS {
                let (pool, refused, accepted) = (&pool, &refused, &accepted);
                s.spawn(move || {
                    for i in 0..PER_SUBMITTER {
                        match pool.submit(submitter * PER_SUBMITTER + i) {
                            Ok(()) => drop(accepted.fetch_add(1, Ordering::SeqCst)),
                            Err(err) => refused.lock().unwrap().push(err.into_job()),
                        }
                    }
                });
            }
        });
        let report = pool.join();
        assert!(report.is_balanced(), "every accepted job ran or came back");
        let refused = refused.into_inner().unwrap();

        assert_eq!(report.len(), accepted.into_inner(), "round {round}");
        assert_eq!(report.len() + refused.len(), TOTAL, "round {round}");
        let every: HashSet<u32> = report
            .completed
            .iter()
            .chain(&report.not_run)
            .chain(&refused)
            .copied()
            .collect();
        assert_eq!(
            every.len(),
            TOTAL,
            "a job was counted twice (round {round})"
        );
        assert!(report.completed.len() > cut, "round {round}");
        assert!(
            !refused.is_empty(),
            "the cancellation came too late (round {round})"
        );
    }
}

#[test]
fn try_submit_hands_the_job_back_when_the_queue_is_full() {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let pool = Pool::new(&Context::background(), 1, 2, move |_ctx, job: u32| {
        started_tx.send(job).unwrap();
        released.lock().unwrap().recv_timeout(PATIENCE).unwrap();
        job
    });
    pool.try_submit(0).unwrap();
    assert_eq!(expect(&started, "the worker to take job 0"), 0);
    pool.try_submit(1).unwrap();
    pool.try_submit(2).unwrap();
    let refused = pool.try_submit(3).unwrap_err();
    assert_eq!(refused, SubmitError::Full(3));
    assert!(refused.to_string().contains("queue is full"));
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    let mut done = pool.join().completed;
    done.sort_unstable();
    assert_eq!(done, vec![0, 1, 2]);
}

#[test]
fn submit_waits_for_room() {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let room_made = AtomicBool::new(false);
    let pool = Pool::new(&Context::background(), 1, 1, move |_ctx, job: u32| {
        started_tx.send(job).unwrap();
        released.lock().unwrap().recv_timeout(PATIENCE).unwrap();
        job
    });
    pool.submit(0).unwrap();
    expect(&started, "the worker to take job 0");
    pool.submit(1).unwrap(); // fills the queue
    std::thread::scope(|s| {
        s.spawn(|| {
            // A head start for a submit that would wrongly not wait.
            std::thread::sleep(Duration::from_millis(50));
            room_made.store(true, Ordering::SeqCst);
            release.send(()).unwrap();
        });
        pool.submit(2).unwrap();
        assert!(
            room_made.load(Ordering::SeqCst),
            "submit returned on a full queue"
        );
    });
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(pool.join().completed.len(), 3);
}

#[test]
fn submit_waiting_for_room_fails_when_cancelled() {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    // The handler ignores the context, so only the submit can react to it.
    let pool = Pool::new(&Context::background(), 1, 1, move |_ctx, job: u32| {
        started_tx.send(job).unwrap();
        released.lock().unwrap().recv_timeout(PATIENCE).unwrap();
        job
    });
    pool.submit(0).unwrap();
    expect(&started, "the worker to take job 0");
    pool.submit(1).unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| pool.submit(2));
        // The outcome must be the same whether or not the submit is already
        // waiting when the cancellation comes; the pause makes waiting likely.
        std::thread::sleep(Duration::from_millis(20));
        pool.cancel();
        assert_eq!(waiting.join().unwrap(), Err(SubmitError::Stopped(2)));
    });
    assert_eq!(pool.try_submit(3), Err(SubmitError::Stopped(3)));
    release.send(()).unwrap();
    let report = pool.join();
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert_eq!(report.completed, vec![0], "the started job finished");
    assert_eq!(report.not_run, vec![1], "the queued job came back");
}

#[test]
fn workers_stop_promptly_after_cancel() {
    const WORKERS: usize = 4;
    let (started_tx, started) = mpsc::channel();
    let pool = Pool::new(
        &Context::background(),
        WORKERS,
        32,
        move |ctx, _job: u32| {
            started_tx.send(()).unwrap();
            ctx.wait() // a long job that stops on cancellation
        },
    );
    for job in 0..32 {
        pool.submit(job).unwrap();
    }
    for _ in 0..WORKERS {
        expect(&started, "every worker to be busy");
    }
    let begun = Instant::now();
    let report = pool.shutdown();
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert!(
        begun.elapsed() < PATIENCE / 2,
        "workers did not stop promptly"
    );
    assert_eq!(report.completed, vec![Error::Canceled; WORKERS]);
    assert_eq!(report.not_run.len(), 32 - WORKERS);
}

#[test]
fn parent_cancellation_stops_the_pool() {
    let (parent, cancel) = Context::background().with_cancel();
    let pool = Pool::new(&parent, 2, 4, |ctx, _job: ()| ctx.wait());
    pool.submit(()).unwrap();
    cancel.cancel();
    assert!(pool.context().is_done());
    assert_eq!(pool.submit(()), Err(SubmitError::Stopped(())));
    assert_eq!(pool.join().len(), 1);
}

#[test]
fn a_job_panic_cancels_the_pool_and_reaches_join() {
    let (started_tx, started) = mpsc::channel();
    let sibling_finished = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&sibling_finished);
    let pool = Pool::new(&Context::background(), 2, 4, move |ctx, job: u32| {
        if job == 0 {
            started_tx.send(()).unwrap();
            ctx.wait();
            assert!(ctx.cause().unwrap().is::<JobPanicked>());
            std::thread::sleep(Duration::from_millis(50)); // slow clean-up
            finished.store(true, Ordering::SeqCst);
        } else {
            panic!("job exploded");
        }
    });
    pool.submit(0).unwrap();
    expect(&started, "job 0 to start");
    pool.submit(1).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| pool.join()));
    let payload = caught.expect_err("the panic reached join");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"job exploded"));
    assert!(
        sibling_finished.load(Ordering::SeqCst),
        "resumed before the workers stopped"
    );
}

#[test]
fn dropping_the_pool_stops_its_workers() {
    let running = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::channel();
    let counter = Arc::clone(&running);
    let pool = Pool::new(&Context::background(), 3, 3, move |ctx, _job: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        started_tx.send(()).unwrap();
        ctx.wait();
        counter.fetch_sub(1, Ordering::SeqCst);
    });
    for _ in 0..3 {
        pool.submit(()).unwrap();
    }
    for _ in 0..3 {
        expect(&started, "the jobs to start");
    }
    let ctx = pool.context().clone();
    drop(pool);
    assert!(ctx.is_done());
    assert_eq!(
        running.load(Ordering::SeqCst),
        0,
        "drop returned before the workers stopped"
    );
}

#[test]
fn zero_capacity_hands_jobs_straight_to_workers() {
    let pool = Pool::new(&Context::background(), 2, 0, |_ctx, n: u32| n + 1);
    for n in 0..10 {
        pool.submit(n).unwrap();
    }
    assert_eq!(pool.join().completed.iter().sum::<u32>(), 55);
}

// ---- tokio --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_join_runs_every_queued_job() {
    let pool = TaskPool::new(&Context::background(), 4, 8, |_ctx, n: u64| async move {
        tokio::task::yield_now().await;
        n * n
    });
    for n in 0..100 {
        pool.submit(n).await.unwrap();
    }
    let report = pool.join().await;
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert!(report.not_run.is_empty());
    let mut squares = report.completed;
    squares.sort_unstable();
    assert_eq!(squares, (0..100).map(|n| n * n).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_no_job_is_lost_under_cancellation() {
    const SUBMITTERS: u32 = 4;
    const PER_SUBMITTER: u32 = 250;
    const TOTAL: usize = (SUBMITTERS * PER_SUBMITTER) as usize;
    for round in 0..10 {
        let (parent, cancel) = Context::background().with_cancel();
        let cut = 50 + round * 80;
        let (cancel, started) = (Arc::new(cancel), Arc::new(AtomicUsize::new(0)));
        let pool = Arc::new(TaskPool::new(&parent, 4, 16, move |ctx, job: u32| {
            if started.fetch_add(1, Ordering::SeqCst) == cut {
                cancel.cancel();
            }
            async move {
                let pause = tokio::time::sleep(Duration::from_micros(u64::from(job % 3) * 50));
                let _ = ctx.run(pause).await;
                job
            }
        }));
        let mut submitters = tokio::task::JoinSet::new();
        for submitter in 0..SUBMITTERS {
            let pool = Arc::clone(&pool);
            submitters.spawn(async move {
                let (mut accepted, mut refused) = (0, Vec::new());
                for i in 0..PER_SUBMITTER {
                    match pool.submit(submitter * PER_SUBMITTER + i).await {
                        Ok(()) => accepted += 1,
                        Err(err) => refused.push(err.into_job()),
                    }
                }
                (accepted, refused)
            });
        }
        let (mut accepted, mut refused) = (0, Vec::new());
        while let Some(joined) = submitters.join_next().await {
            let (a, r) = joined.unwrap();
            accepted += a;
            refused.extend(r);
        }
        let pool = Arc::into_inner(pool).expect("the submitters are done");
        let report = pool.join().await;
        assert!(report.is_balanced(), "every accepted job ran or came back");

        assert_eq!(report.len(), accepted, "round {round}");
        assert_eq!(report.len() + refused.len(), TOTAL, "round {round}");
        let every: HashSet<u32> = report
            .completed
            .iter()
            .chain(&report.not_run)
            .chain(&refused)
            .copied()
            .collect();
        assert_eq!(
            every.len(),
            TOTAL,
            "a job was counted twice (round {round})"
        );
        assert!(report.completed.len() > cut, "round {round}");
        assert!(
            !refused.is_empty(),
            "the cancellation came too late (round {round})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_try_submit_hands_the_job_back_when_the_queue_is_full() {
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let permits = Arc::clone(&release);
    let pool = TaskPool::new(&Context::background(), 1, 2, move |_ctx, job: u32| {
        let (started_tx, permits) = (started_tx.clone(), Arc::clone(&permits));
        async move {
            started_tx.send(job).unwrap();
            permits.acquire().await.unwrap().forget();
            job
        }
    });
    pool.try_submit(0).unwrap();
    assert_eq!(started.recv().await, Some(0));
    pool.try_submit(1).unwrap();
    pool.try_submit(2).unwrap();
    assert_eq!(pool.try_submit(3), Err(SubmitError::Full(3)));
    release.add_permits(3);
    let mut done = pool.join().await.completed;
    done.sort_unstable();
    assert_eq!(done, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_submit_waiting_for_room_fails_when_cancelled() {
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let permits = Arc::clone(&release);
    // The handler ignores the context, so only the submit can react to it.
    let pool = Arc::new(TaskPool::new(
        &Context::background(),
        1,
        1,
        move |_ctx, job: u32| {
            let (started_tx, permits) = (started_tx.clone(), Arc::clone(&permits));
            async move {
                started_tx.send(job).unwrap();
                permits.acquire().await.unwrap().forget();
                job
            }
        },
    ));
    pool.submit(0).await.unwrap();
    assert_eq!(started.recv().await, Some(0));
    pool.submit(1).await.unwrap();
    let waiting = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.submit(2).await }
    });
    // The outcome must be the same whether or not the submit is already
    // waiting when the cancellation comes; the pause makes waiting likely.
    tokio::time::sleep(Duration::from_millis(20)).await;
    pool.cancel();
    assert_eq!(waiting.await.unwrap(), Err(SubmitError::Stopped(2)));
    release.add_permits(1);
    let report = Arc::into_inner(pool).unwrap().join().await;
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert_eq!(report.completed, vec![0], "the started job finished");
    assert_eq!(report.not_run, vec![1], "the queued job came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_workers_stop_promptly_after_cancel() {
    const WORKERS: usize = 4;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let pool = TaskPool::new(
        &Context::background(),
        WORKERS,
        32,
        move |ctx, _job: u32| {
            started_tx.send(()).unwrap();
            async move { ctx.done().await }
        },
    );
    for job in 0..32 {
        pool.submit(job).await.unwrap();
    }
    for _ in 0..WORKERS {
        tokio::time::timeout(PATIENCE, started.recv())
            .await
            .unwrap();
    }
    let begun = Instant::now();
    let report = pool.shutdown().await;
    assert!(report.is_balanced(), "every accepted job ran or came back");
    assert!(
        begun.elapsed() < PATIENCE / 2,
        "workers did not stop promptly"
    );
    assert_eq!(report.completed, vec![Error::Canceled; WORKERS]);
    assert_eq!(report.not_run.len(), 32 - WORKERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_job_panic_cancels_the_pool_and_reaches_join() {
    let pool = TaskPool::new(&Context::background(), 2, 4, |ctx, job: u32| async move {
        if job == 1 {
            panic!("job exploded");
        }
        ctx.done().await;
        assert!(ctx.cause().unwrap().is::<JobPanicked>());
    });
    pool.submit(0).await.unwrap();
    pool.submit(1).await.unwrap();
    let caught = AssertUnwindSafe(pool.join()).catch_unwind().await;
    let payload = caught.expect_err("the panic reached join");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"job exploded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_dropping_the_pool_cancels_then_aborts_the_workers() {
    struct Live(Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedSender<()>);
    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
            let _ = self.1.send(());
        }
    }
    let live = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let counter = Arc::clone(&live);
    let pool = TaskPool::new(&Context::background(), 3, 3, move |_ctx, _job: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        let guard = Live(Arc::clone(&counter), dropped_tx.clone());
        started_tx.send(()).unwrap();
        async move {
            let _guard = guard;
            std::future::pending::<()>().await; // only an abort ends it
        }
    });
    for _ in 0..3 {
        pool.submit(()).await.unwrap();
    }
    for _ in 0..3 {
        tokio::time::timeout(PATIENCE, started.recv())
            .await
            .unwrap();
    }
    let ctx = pool.context().clone();
    drop(pool);
    assert!(ctx.is_done(), "cancelled before returning");
    for _ in 0..3 {
        tokio::time::timeout(PATIENCE, dropped.recv())
            .await
            .unwrap();
    }
    assert_eq!(live.load(Ordering::SeqCst), 0);
}
