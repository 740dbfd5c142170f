//! Pipelines: every item is processed when nothing stops the run; when
//! something does, no worker is left running and every item produced is
//! either delivered or counted where the run stopped it.

use ctxkit::pipeline::{AsyncPipeline, Pipeline, Report};
use ctxkit::{Context, Error};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, PartialEq)]
struct BadItem(u64);

impl fmt::Display for BadItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad item {}", self.0)
    }
}

impl std::error::Error for BadItem {}

/// Counts the stage calls running right now: one guard per call.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct LiveGuard(Arc<AtomicUsize>);

impl Live {
    fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(Arc::clone(&self.0))
    }

    fn now(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The counters of a report balance: every item produced is accounted for
/// exactly once.
fn assert_balanced<E>(report: &Report<E>) {
    let mut handed_over = report.source.sent;
    for (i, stage) in report.stages.iter().enumerate() {
        assert_eq!(
            handed_over,
            stage.received + stage.unreceived,
            "stage {i}: items handed over vs taken + left: {report:?}"
        );
        assert_eq!(
            stage.received,
            stage.sent + stage.failed + stage.discarded,
            "stage {i}: items taken vs passed on + failed + discarded: {report:?}"
        );
        handed_over = stage.sent;
    }
    assert_eq!(
        handed_over,
        report.delivered + report.undelivered,
        "sink: items handed over vs delivered + left: {report:?}"
    );
    assert!(report.source.discarded <= 1, "{report:?}");
    assert!(report.is_balanced(), "{report:?}");
}

// ---------------------------------------------------------------- threads

#[test]
fn every_item_goes_through_every_stage_when_nothing_stops_the_run() {
    let ctx = Context::background();
    let (mut out, report) = Pipeline::new(&ctx, 0..1000u64)
        .stage(4, |_ctx, n| Ok::<_, BadItem>(n * 2))
        .stage(3, |_ctx, n| Ok(n + 1))
        .stage(1, |_ctx, n| Ok(format!("#{n}")))
        .collect();
    out.sort_by_key(|s| s[1..].parse::<u64>().unwrap());
    let expected: Vec<String> = (0..1000u64).map(|n| format!("#{}", n * 2 + 1)).collect();
    assert_eq!(out, expected);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.err, None);
    assert!(report.cause.is_none());
    assert!(report.source.exhausted);
    assert_eq!(report.source.sent, 1000);
    assert_eq!(
        report
            .stages
            .iter()
            .map(|s| (s.workers, s.received, s.sent))
            .collect::<Vec<_>>(),
        [(4, 1000, 1000), (3, 1000, 1000), (1, 1000, 1000)]
    );
    assert_eq!((report.delivered, report.undelivered), (1000, 0));
    assert_balanced(&report);
}

#[test]
fn one_worker_per_stage_keeps_the_order() {
    let ctx = Context::background();
    let (out, report) = Pipeline::new(&ctx, 0..200u32)
        .stage(1, |_ctx, n| Ok::<_, BadItem>(n))
        .stage(1, |_ctx, n| Ok(n * 3))
        .collect();
    assert_eq!(out, (0..200).map(|n| n * 3).collect::<Vec<_>>());
    assert!(report.is_complete());
}

#[test]
fn stages_may_borrow_from_the_caller() {
    let offsets = vec![100u64, 200, 300];
    let calls = AtomicUsize::new(0);
    let ctx = Context::background();
    let (mut out, _report) = Pipeline::new(&ctx, 0..3usize)
        .stage(2, |_ctx, i| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BadItem>(offsets[i])
        })
        .collect();
    out.sort();
    assert_eq!(out, offsets);
    assert_eq!(calls.into_inner(), 3);
}

#[test]
fn a_pipeline_without_stages_passes_the_source_through() {
    let ctx = Context::background();
    let (out, report) = Pipeline::<_, BadItem>::new(&ctx, ["x", "y"]).collect();
    assert_eq!(out, ["x", "y"]);
    assert!(report.stages.is_empty());
    assert_eq!(report.delivered, 2);
    assert_balanced(&report);
}

#[test]
fn cancel_mid_stream_leaves_no_worker_running_and_accounts_for_every_item() {
    let (ctx, cancel) = Context::background().with_cancel();
    let live = Live::default();
    let mut delivered = Vec::new();
    // An endless source: only the context can stop this run.
    let report = Pipeline::new(&ctx, 0u64..)
        .stage(4, |_ctx, n| {
            let _live = live.enter();
            Ok::<_, BadItem>(n)
        })
        .stage(3, |_ctx, n| {
            let _live = live.enter();
            Ok(n * 10)
        })
        .run(|n| {
            delivered.push(n);
            if delivered.len() == 50 {
                cancel.cancel();
            }
        });
    assert_eq!(live.now(), 0, "a stage call outlived the run");
    assert_eq!(report.err, Some(Error::Canceled));
    assert!(!report.is_complete());
    assert!(
        !report.source.exhausted,
        "the source is not drained after a cancel"
    );
    assert_eq!(
        report.delivered, 50,
        "the sink gets nothing after the cancel"
    );
    assert_eq!(delivered.len(), 50);
    assert_balanced(&report);
}

#[test]
fn cancel_wakes_stages_that_wait_with_the_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let live = Live::default();
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded();
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Pipeline::new(&ctx, 0u64..)
                .stage(3, |ctx, n| {
                    let _live = live.enter();
                    entered_tx.send(()).unwrap();
                    // Work that would take an hour, unless the run stops.
                    ctx.sleep(Duration::from_secs(3600)).map(|()| n)
                })
                .run(drop)
        });
        // All three workers are busy in a long stage call.
        for _ in 0..3 {
            entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        cancel.cancel();
        run.join().unwrap()
    });
    assert_eq!(live.now(), 0);
    assert_eq!(report.err, Some(Error::Canceled));
    // The stage returned Err(Canceled) from its sleep: it gave up because
    // the run stopped, which is no failure of its own.
    assert_eq!(report.stages[0].received, 3);
    assert_eq!(report.stages[0].discarded, 3);
    assert_eq!(report.stages[0].failed, 0);
    assert_eq!(report.delivered, 0);
    assert!(report
        .cause
        .as_ref()
        .unwrap()
        .downcast_ref::<Error>()
        .is_some());
    assert_balanced(&report);
}

#[test]
fn the_first_stage_error_stops_the_run_and_is_its_cause() {
    let ctx = Context::background();
    let live = Live::default();
    let (out, report) = Pipeline::new(&ctx, 0u64..)
        .stage(2, |_ctx, n| {
            let _live = live.enter();
            if n == 100 {
                Err(BadItem(n))
            } else {
                Ok(n)
            }
        })
        .stage(2, |ctx, n| {
            let _live = live.enter();
            // A slow stage, so that items are in flight when the error hits.
            ctx.sleep(Duration::from_micros(100))
                .map(|()| n)
                .map_err(|_| BadItem(u64::MAX))
        })
        .collect();
    assert_eq!(live.now(), 0);
    assert_eq!(report.err, Some(Error::Canceled));
    assert_eq!(
        report.error(),
        Some(&BadItem(100)),
        "the first error wins: {report:?}"
    );
    assert!(report.stages[0].failed >= 1);
    assert!(!out.contains(&100));
    assert_eq!(report.delivered, out.len() as u64);
    assert!(
        !ctx.is_done(),
        "the run's context is its own: the parent lives on"
    );
    assert_balanced(&report);
}

#[test]
fn a_deadline_stops_the_run() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let report = Pipeline::new(&ctx, 0u64..)
        .stage(2, |ctx, n| ctx.sleep(Duration::from_millis(1)).map(|()| n))
        .run(drop);
    assert_eq!(report.err, Some(Error::DeadlineExceeded));
    assert!(!report.source.exhausted);
    assert_balanced(&report);
}

#[test]
fn a_done_context_runs_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let pulled = AtomicUsize::new(0);
    let source = std::iter::from_fn(|| Some(pulled.fetch_add(1, Ordering::Relaxed)));
    let (out, report) = Pipeline::new(&ctx, source)
        .stage(2, |_ctx, n| Ok::<_, BadItem>(n))
        .collect();
    assert!(out.is_empty());
    assert_eq!(pulled.into_inner(), 0, "the source is not asked for items");
    assert_eq!(report.err, Some(Error::Canceled));
    assert_balanced(&report);
}

#[test]
fn a_panicking_stage_stops_the_run_and_reaches_the_caller() {
    let ctx = Context::background();
    let live = Live::default();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pipeline::new(&ctx, 0u64..)
            .stage(3, |_ctx, n| {
                let _live = live.enter();
                if n == 20 {
                    panic!("stage blew up on {n}");
                }
                Ok::<_, BadItem>(n)
            })
            .run(drop)
    }))
    .expect_err("the panic reaches the caller of run");
    assert_eq!(
        panic.downcast_ref::<String>().unwrap(),
        "stage blew up on 20"
    );
    assert_eq!(live.now(), 0);
}

#[test]
fn a_panicking_sink_stops_the_run() {
    let ctx = Context::background();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pipeline::new(&ctx, 0u64..)
            .stage(2, |_ctx, n| Ok::<_, BadItem>(n))
            .run(|n| assert!(n < 10, "sink refused {n}"))
    }));
    assert!(panic.is_err());
}

#[test]
fn repeated_cancels_at_random_points_always_balance() {
    // A cheap pseudo-random sequence: the cancel point moves around.
    let mut seed = 0x2545_f491_u64;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cancel_after = seed % 200;
        let (ctx, cancel) = Context::background().with_cancel();
        let live = Live::default();
        let mut seen = 0;
        let report = Pipeline::new(&ctx, 0u64..1000)
            .stage(3, |_ctx, n| {
                let _live = live.enter();
                Ok::<_, BadItem>(n)
            })
            .stage(2, |_ctx, n| {
                let _live = live.enter();
                Ok(n)
            })
            .run(|_| {
                seen += 1;
                if seen == cancel_after {
                    cancel.cancel();
                }
            });
        assert_eq!(live.now(), 0);
        assert_eq!(report.delivered, seen);
        assert_balanced(&report);
        if cancel_after > 0 {
            assert_eq!(report.delivered, cancel_after, "{report:?}");
        }
    }
}

#[test]
fn a_channel_source_runs_until_disconnected() {
    let (jobs, queue) = crossbeam_channel::bounded(4);
    let producer = std::thread::spawn(move || {
        for job in 0..100u64 {
            jobs.send(job).unwrap();
        }
    });
    let ctx = Context::background();
    let (mut out, report) = Pipeline::from_receiver(&ctx, queue)
        .stage(3, |_ctx, job| Ok::<_, BadItem>(job + 1))
        .collect();
    producer.join().unwrap();
    out.sort();
    assert_eq!(out, (1..=100).collect::<Vec<_>>());
    assert!(report.is_complete(), "{report:?}");
    assert!(report.source.exhausted);
}

#[test]
fn a_channel_source_stops_waiting_when_a_stage_fails() {
    let (jobs, queue) = crossbeam_channel::unbounded();
    for job in 0..10u64 {
        jobs.send(job).unwrap();
    }
    // `jobs` stays open: only the run's own stop can end the source's wait.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let ctx = Context::background();
    let run = std::thread::spawn({
        let queue = queue.clone();
        move || {
            let report = Pipeline::from_receiver(&ctx, queue)
                .stage(
                    1,
                    |_ctx, job| if job == 5 { Err(BadItem(job)) } else { Ok(job) },
                )
                .run(drop);
            done_tx.send(report).unwrap();
        }
    });
    let report = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the source kept waiting on its channel after the run stopped");
    run.join().unwrap();
    assert_eq!(report.error(), Some(&BadItem(5)));
    assert!(!report.source.exhausted);
    assert_balanced(&report);
    // Items the source never took are still in the channel.
    assert_eq!(
        report.source.sent + report.source.discarded + queue.len() as u64,
        10
    );
    drop(jobs);
}

// ------------------------------------------------------------------ tokio

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_every_item_goes_through_every_stage() {
    let ctx = Context::background();
    let (mut out, report) = AsyncPipeline::new(&ctx, futures::stream::iter(0..500u64))
        .stage(4, |_ctx, n| async move {
            tokio::task::yield_now().await;
            Ok::<_, BadItem>(n * 2)
        })
        .stage(2, |_ctx, n| async move { Ok(n + 1) })
        .collect()
        .await;
    out.sort();
    assert_eq!(out, (0..500u64).map(|n| n * 2 + 1).collect::<Vec<_>>());
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.source.sent, 500);
    assert_eq!(report.delivered, 500);
    assert_balanced(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_cancel_mid_stream_leaves_no_task_running_and_accounts_for_every_item() {
    let (ctx, cancel) = Context::background().with_cancel();
    let live = Live::default();
    let mut seen = 0u64;
    let (first, second) = (live.clone(), live.clone());
    let report = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
        .stage(4, move |_ctx, n| {
            let guard = first.enter();
            async move {
                let _live = guard;
                tokio::task::yield_now().await;
                Ok::<_, BadItem>(n)
            }
        })
        .stage(2, move |_ctx, n| {
            let guard = second.enter();
            async move {
                let _live = guard;
                Ok(n)
            }
        })
        .run(|_| {
            seen += 1;
            if seen == 50 {
                cancel.cancel();
            }
        })
        .await;
    assert_eq!(live.now(), 0, "a stage future outlived the run");
    assert_eq!(report.err, Some(Error::Canceled));
    assert_eq!(report.delivered, 50);
    assert!(!report.source.exhausted);
    assert_balanced(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_stop_drops_stage_futures_stuck_in_await() {
    let (ctx, cancel) = Context::background().with_cancel();
    let live = Live::default();
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let stage_live = live.clone();
    let run = tokio::spawn(
        AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
            .stage(3, move |_ctx, n| {
                let guard = stage_live.enter();
                let entered = entered_tx.clone();
                async move {
                    let _live = guard;
                    entered.send(()).unwrap();
                    // Never finishes by itself and ignores its context.
                    std::future::pending::<()>().await;
                    Ok::<_, BadItem>(n)
                }
            })
            .run(drop),
    );
    for _ in 0..3 {
        entered_rx.recv().await.unwrap();
    }
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run did not stop after cancel")
        .unwrap();
    assert_eq!(live.now(), 0);
    assert_eq!(report.stages[0].received, 3);
    assert_eq!(report.stages[0].discarded, 3);
    assert_balanced(&report);
}

#[tokio::test]
async fn async_the_first_stage_error_stops_the_run() {
    let ctx = Context::background();
    let report = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
        .stage(2, |_ctx, n| async move {
            if n == 30 {
                Err(BadItem(n))
            } else {
                Ok(n)
            }
        })
        .stage(1, |_ctx, n| async move { Ok(n) })
        .run(drop)
        .await;
    assert_eq!(report.err, Some(Error::Canceled));
    assert_eq!(report.error(), Some(&BadItem(30)));
    assert!(!ctx.is_done());
    assert_balanced(&report);
}

#[tokio::test]
async fn async_a_panicking_stage_reaches_the_caller() {
    let ctx = Context::background();
    let run = tokio::spawn(
        AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
            .stage(2, |_ctx, n| async move {
                assert!(n != 5, "stage blew up");
                Ok::<_, BadItem>(n)
            })
            .run(drop),
    );
    let err = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("a panicking stage must not leave the run hanging")
        .expect_err("the panic reaches the caller");
    assert!(err.is_panic());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_deadline_stops_the_run() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let report = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
        .stage(3, |_ctx, n| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, BadItem>(n)
        })
        .run(drop)
        .await;
    assert_eq!(report.err, Some(Error::DeadlineExceeded));
    assert_balanced(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_dropping_the_run_aborts_every_task() {
    let ctx = Context::background();
    let live = Live::default();
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let stage_live = live.clone();
    let run = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
        .stage(3, move |_ctx, n| {
            let guard = stage_live.enter();
            let entered = entered_tx.clone();
            async move {
                let _live = guard;
                entered.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok::<_, BadItem>(n)
            }
        })
        .run(drop);
    let all_entered = async {
        for _ in 0..3 {
            entered_rx.recv().await.unwrap();
        }
    };
    tokio::select! {
        _ = run => unreachable!("the run cannot end by itself"),
        () = all_entered => {} // drops the run future
    }
    // Aborted tasks are dropped by the runtime soon after.
    let start = std::time::Instant::now();
    while live.now() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a stage future survived its run"
        );
        tokio::task::yield_now().await;
    }
}
