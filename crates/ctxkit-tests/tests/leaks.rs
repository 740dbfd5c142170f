//! Nothing leaks: children that are cancelled or dropped leave their parent,
//! cancelled deadlines leave the timer, and resident memory stays flat over a
//! million derivations.
//!
//! In its own binary so that other tests do not move the memory readings.

use ctxkit::{diagnostics, Context};
use std::time::Duration;

const MILLION: usize = 1_000_000;

/// Memory readings are process-wide: the tests here take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resident set size in bytes, from /proc/self/statm.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

/// Runs `cycles` of `f` twice, and checks that the second run (after the
/// allocator has warmed up) grows resident memory by less than `slack`.
fn assert_flat(what: &str, cycles: usize, mut f: impl FnMut()) {
    const SLACK: usize = 8 << 20;
    for _ in 0..cycles / 10 {
        f();
    }
    let before = resident_bytes();
    for _ in 0..cycles {
        f();
    }
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    assert!(
        grown < SLACK,
        "{what}: resident memory grew by {grown} bytes over {cycles} cycles"
    );
}

#[test]
fn a_million_children_derived_and_dropped_leave_nothing_behind() {
    let _turn = one_at_a_time();
    let (parent, _cancel) = Context::background().with_value(1u8).with_cancel();

    assert_flat("derive + drop", MILLION, || {
        let (child, cancel) = parent.with_cancel();
        std::hint::black_box(&child);
        drop(cancel);
    });
    assert_eq!(parent.registrations(), 0);

    assert_flat("derive + detach + drop", MILLION, || {
        let (child, cancel) = parent.with_cancel();
        cancel.detach();
        drop(child);
    });
    assert_eq!(parent.registrations(), 0);

    // A burst: a million live children at once, then all dropped.
    let burst: Vec<_> = (0..MILLION).map(|_| parent.with_cancel()).collect();
    assert_eq!(parent.registrations(), MILLION);
    drop(burst);
    assert_eq!(parent.registrations(), 0);
}

#[test]
fn a_million_cancelled_one_hour_timeouts_leave_the_timer_empty() {
    let _turn = one_at_a_time();
    let (parent, _cancel) = Context::background().with_cancel();
    let start = diagnostics::pending_deadlines();
    assert_flat("with_timeout(1h) + cancel", MILLION, || {
        let (child, cancel) = parent.with_timeout(Duration::from_secs(3600));
        cancel.cancel();
        std::hint::black_box(child);
    });
    assert_eq!(diagnostics::pending_deadlines(), start);
    assert_eq!(parent.registrations(), 0);

    // Detached timeouts that nobody holds are freed at once, timer included.
    assert_flat("with_timeout(1h) + detach + drop", MILLION / 4, || {
        let (child, cancel) = parent.with_timeout(Duration::from_secs(3600));
        cancel.detach();
        drop(child);
    });
    assert_eq!(diagnostics::pending_deadlines(), start);
    assert_eq!(parent.registrations(), 0);
}

#[tokio::test]
async fn abandoned_done_futures_leave_nothing_behind() {
    let (ctx, _cancel) = Context::background().with_cancel();
    for _ in 0..100_000 {
        tokio::select! {
            biased;
            _ = std::future::ready(()) => {}
            _ = ctx.done() => unreachable!("the context is live"),
        }
    }
    assert_eq!(ctx.registrations(), 0);
}
