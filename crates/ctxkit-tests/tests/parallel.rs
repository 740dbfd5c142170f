//! Rayon work stops early when its context is done.

use ctxkit::{parallel, Context, Error};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CPU work that the optimiser cannot remove.
fn crunch(n: u64) -> u64 {
    (0..200).fold(n, |acc, i| {
        std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i))
    })
}

#[test]
fn cancellation_midway_stops_early_with_canceled() {
    const TOTAL: u64 = 1_000_000;
    let (ctx, cancel) = Context::background().with_cancel();
    let processed = AtomicU64::new(0);
    let processed_when_cancelled = AtomicU64::new(0);
    let result = parallel::for_each(&ctx, 0..TOTAL, |n| {
        std::hint::black_box(crunch(n));
        if processed.fetch_add(1, Ordering::SeqCst) + 1 == 1_000 {
            cancel.cancel();
            // Other threads keep going while `cancel` runs; what counts is
            // what starts after it returned.
            processed_when_cancelled.store(processed.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    });
    assert_eq!(result, Err(Error::Canceled));
    let processed = processed.into_inner();
    let at_cancel = processed_when_cancelled.into_inner();
    assert!(at_cancel >= 1_000);
    // Once the context is done, each rayon thread finishes at most the item
    // it holds, and starts no other.
    let threads = rayon::current_num_threads() as u64;
    assert!(
        processed <= at_cancel + threads,
        "{processed} items processed, {at_cancel} when the cancel returned, {threads} threads"
    );
    assert!(processed < TOTAL);
}

#[test]
fn every_item_is_processed_when_nothing_cancels() {
    let ctx = Context::background();
    let sum = AtomicU64::new(0);
    let result = parallel::for_each(&ctx, 1..=10_000u64, |n| {
        sum.fetch_add(n, Ordering::Relaxed);
    });
    assert_eq!(result, Ok(()));
    assert_eq!(sum.into_inner(), 10_000 * 10_001 / 2);
}

#[test]
fn a_done_context_processes_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let processed = AtomicU64::new(0);
    let result = parallel::for_each(&ctx, vec![1, 2, 3], |_| {
        processed.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(result, Err(Error::Canceled));
    assert_eq!(processed.into_inner(), 0);
}

#[test]
fn a_deadline_stops_work_that_would_take_far_longer() {
    // Long enough for rayon to start working on a busy machine, so that the
    // work seen below is the deadline cutting it short, not preventing it.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(500));
    let processed = AtomicU64::new(0);
    let start = Instant::now();
    // Far more work than fits in the deadline, or in the test's patience.
    let result = parallel::for_each(&ctx, 0..u64::MAX / 2, |n| {
        std::hint::black_box(crunch(n));
        processed.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(result, Err(Error::DeadlineExceeded));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        processed.into_inner() > 0,
        "no work started before the deadline"
    );
}

#[test]
fn the_first_item_error_stops_the_rest() {
    #[derive(Debug, PartialEq)]
    enum Failure {
        Context(Error),
        Item(u64),
    }
    impl From<Error> for Failure {
        fn from(err: Error) -> Self {
            Failure::Context(err)
        }
    }

    let ctx = Context::background();
    let processed = AtomicU64::new(0);
    let result = parallel::try_for_each(&ctx, 0..1_000_000u64, |n| {
        processed.fetch_add(1, Ordering::Relaxed);
        if n % 1000 == 999 {
            return Err(Failure::Item(n));
        }
        Ok(())
    });
    assert!(
        matches!(result, Err(Failure::Item(n)) if n % 1000 == 999),
        "{result:?}"
    );
    assert!(processed.into_inner() < 1_000_000);
}

#[test]
fn collecting_into_a_result_stops_on_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let seen = AtomicU64::new(0);
    let squares: Result<Vec<u64>, Error> = (0..1_000_000u64)
        .into_par_iter()
        .map(|n| {
            ctx.check()?;
            if seen.fetch_add(1, Ordering::Relaxed) == 500 {
                cancel.cancel();
            }
            Ok(n * n)
        })
        .collect();
    assert_eq!(squares, Err(Error::Canceled));
    assert!(seen.into_inner() < 1_000_000);
}
