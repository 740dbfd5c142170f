//! Allocation ceilings: Go's `TestAllocs`, measured the same way (a warm-up
//! run, then the average over many runs), with a counting global allocator.
//! Ours must be no higher than Go's.
//!
//! In their own binary. Only allocations made by the measuring thread
//! count: background threads (the timer's start-up, the test harness) would
//! otherwise make the averages flaky. Everything measured here allocates on
//! the calling thread; the timer thread's own bookkeeping is not counted.

use ctxkit::Context;
use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Duration;

struct Counting;

thread_local! {
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Per thread, so that tests measuring at once do not count each other's.
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count() {
    if MEASURING.try_with(|m| m.get()).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Average allocations per run of `f`, after one warm-up run (Go's
/// `testing.AllocsPerRun`).
fn allocs_per_run(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    MEASURING.with(|m| m.set(true));
    let before = ALLOCATIONS.with(std::cell::Cell::get);
    for _ in 0..runs {
        f();
    }
    let after = ALLOCATIONS.with(std::cell::Cell::get);
    MEASURING.with(|m| m.set(false));
    (after - before) as f64 / runs as f64
}

/// An operation, Go's ceiling for it, and the operation.
type Ceiling = (&'static str, f64, Box<dyn FnMut()>);

#[test]
fn allocation_ceilings_are_no_higher_than_gos() {
    let ceilings: [Ceiling; 5] = [
        (
            "background()",
            0.0,
            Box::new(|| {
                std::hint::black_box(Context::background());
            }),
        ),
        (
            "with_value + value",
            3.0,
            Box::new(|| {
                let ctx = Context::background().with_value(7u32);
                assert_eq!(ctx.value::<u32>(), Some(&7));
            }),
        ),
        (
            "with_timeout(1ns) + wait for done",
            12.0,
            Box::new(|| {
                let (ctx, _cancel) = Context::background().with_timeout(Duration::from_nanos(1));
                ctx.wait();
            }),
        ),
        (
            "with_cancel + cancel + wait for done",
            5.0,
            Box::new(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                cancel.cancel();
                ctx.wait();
            }),
        ),
        (
            "with_timeout(5ms) + cancel + wait for done",
            8.0,
            Box::new(|| {
                let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(5));
                cancel.cancel();
                ctx.wait();
            }),
        ),
    ];
    let mut report = String::new();
    for (name, ceiling, mut f) in ceilings {
        let measured = allocs_per_run(100, &mut f);
        report += &format!("{name}: {measured} (Go: {ceiling})\n");
        assert!(
            measured <= ceiling,
            "{name}: {measured} allocations, ceiling {ceiling}\n{report}"
        );
    }
    println!("{report}");

    // Observation and cloning never allocate, live or done.
    let (parent, cancel) = Context::background().with_value(1u8).with_cancel();
    let ctx = parent.with_value(2u16);
    for _ in 0..2 {
        let observed = allocs_per_run(100, || {
            let clone = ctx.clone();
            let _ = std::hint::black_box((
                clone.is_done(),
                clone.err(),
                clone.check(),
                clone.cause(),
                clone.deadline(),
                clone.value::<u8>(),
                clone.value::<u16>(),
                clone.value::<u64>(),
            ));
        });
        assert_eq!(
            observed,
            0.0,
            "observation allocated (done: {})",
            ctx.is_done()
        );
        cancel.cancel();
    }
}

/// A deadline move allocates nothing (once the timer's map has its nodes),
/// whichever way it goes; a merge with `background()` allocates what
/// `with_cancel` does.
#[test]
fn moving_a_deadline_allocates_nothing() {
    let (ctx, handle) = Context::background().with_timeout(Duration::from_secs(3600));
    let (_child, _child_cancel) = ctx.with_cancel();
    let mut turn = 0u64;
    let moves = allocs_per_run(10_000, || {
        turn += 1;
        let timeout = if turn % 2 == 0 { 3600 + turn } else { 60 };
        assert!(handle.set_timeout(Duration::from_secs(timeout)));
    });
    assert_eq!(moves, 0.0, "allocations per move");
    let clears = allocs_per_run(1_000, || {
        assert!(handle.clear_deadline());
        assert!(handle.set_timeout(Duration::from_secs(60)));
    });
    assert_eq!(clears, 0.0, "allocations per clear and set");

    let (parent, _cancel) = Context::background().with_cancel();
    let with_cancel = allocs_per_run(100, || drop(parent.with_cancel()));
    let merge = allocs_per_run(100, || drop(parent.merge(&Context::background())));
    assert!(
        merge <= with_cancel,
        "merge with background: {merge}, with_cancel: {with_cancel}"
    );
}
