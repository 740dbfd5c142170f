//! Nothing leaks: children that are cancelled or dropped leave their parent,
//! merged contexts leave both, cancelled deadlines leave the timer, a moved
//! deadline keeps one entry, and resident memory stays flat over a million
//! derivations, merges or moves.
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

#[test]
fn a_million_merges_nobody_holds_leave_both_parents_at_once() {
    let _turn = one_at_a_time();
    let (first, _a) = Context::background().with_value(1u8).with_cancel();
    let (second, _b) = Context::background().with_value(2u16).with_cancel();
    assert_flat("merge + detach + drop", MILLION, || {
        let (merged, cancel) = first.merge(&second);
        cancel.detach();
        std::hint::black_box(&merged);
        drop(merged);
    });
    assert_eq!(first.registrations(), 0);
    assert_eq!(second.registrations(), 0);

    assert_flat("merge + cancel", MILLION / 4, || {
        let (merged, cancel) = first.merge(&second);
        drop(cancel);
        std::hint::black_box(merged);
    });
    assert_eq!(first.registrations(), 0);
    assert_eq!(second.registrations(), 0);
}

#[test]
fn a_million_deadline_moves_keep_one_timer_entry() {
    let _turn = one_at_a_time();
    let start = diagnostics::pending_deadlines();
    let (ctx, handle) = Context::background().with_timeout(Duration::from_secs(3600));
    let (child, _child_cancel) = ctx.with_cancel();
    let mut moves = 0u64;
    assert_flat(
        "set_timeout / set_deadline / clear_deadline",
        MILLION,
        || {
            moves += 1;
            let moved = match moves % 4 {
                0 => handle.set_timeout(Duration::from_secs(3600 + moves % 1000)),
                1 => handle.set_deadline(std::time::Instant::now() + Duration::from_secs(7200)),
                2 => handle.clear_deadline(),
                _ => handle.set_timeout(Duration::from_secs(1800)),
            };
            assert!(moved);
        },
    );
    assert_eq!(diagnostics::pending_deadlines(), start + 1);
    assert_eq!(child.deadline(), ctx.deadline());
    assert!(!ctx.is_done());
    assert!(handle.clear_deadline());
    assert_eq!(diagnostics::pending_deadlines(), start);
    drop(handle);
    assert_eq!(diagnostics::pending_deadlines(), start);
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
