//! Ten million derive/cancel cycles, synchronous and async: resident memory
//! stays flat and the timer ends as empty as it started.
//!
//! Each cycle derives a few contexts (a deadline far away, a value, a
//! child, an `after_func` stopped or run, a waiter) and ends them in one of
//! the ways the API allows: cancel, drop the handle, or detach and drop the
//! whole chain. A leak of anything per cycle, a timer entry, a registration
//! or a node, shows as growth over millions of cycles.
//!
//! The soaks take tens of seconds in release mode and are `#[ignore]`d:
//! `cargo test -p ctxkit-tests --release --test soak -- --ignored --nocapture`
//! (run by `.ci/soak.sh`). `a_freed_chain_leaves_no_deadline` is the quick
//! always-on check of the same property.

use ctxkit::{diagnostics, Context, Error};
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Cycles per soak.
const CYCLES: u64 = 10_000_000;
/// Cycles before the baseline is taken: allocator pools and the callback
/// pool fill up first.
const WARM_UP: u64 = 500_000;
/// Growth of resident memory past the baseline that fails the soak. A leak
/// of a single 64-byte node per cycle would be about 600 MiB.
const MAX_GROWTH: u64 = 16 * 1024 * 1024;

/// The soaks share the process-wide timer: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Resident set size in bytes, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("/proc/self/statm has a resident field");
    pages * 4096
}

/// Tracks resident memory across a soak and fails it if memory grows.
struct Memory {
    name: &'static str,
    baseline: Option<u64>,
    peak: u64,
    started: Instant,
}

impl Memory {
    fn new(name: &'static str) -> Memory {
        Memory {
            name,
            baseline: None,
            peak: 0,
            started: Instant::now(),
        }
    }

    /// Called every 100 000 cycles.
    fn sample(&mut self, cycle: u64) {
        if cycle % 100_000 != 0 {
            return;
        }
        let now = resident_bytes();
        self.peak = self.peak.max(now);
        if cycle == WARM_UP {
            self.baseline = Some(now);
        }
        if let Some(baseline) = self.baseline {
            assert!(
                now <= baseline + MAX_GROWTH,
                "{}: resident memory grew from {} KiB to {} KiB by cycle {cycle}: something leaks per cycle",
                self.name,
                baseline / 1024,
                now / 1024
            );
        }
    }

    fn report(&self) {
        eprintln!(
            "{}: {CYCLES} cycles in {:.1?}, resident baseline {} KiB, peak {} KiB",
            self.name,
            self.started.elapsed(),
            self.baseline.unwrap_or(0) / 1024,
            self.peak / 1024
        );
    }
}

/// One synchronous cycle; `i` picks how the contexts end.
fn sync_cycle(root: &Context, i: u64) {
    let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
    let (child, child_cancel) = ctx.with_value(i).with_cancel();
    match i % 4 {
        0 => {
            let after = child.after_func(|| {});
            assert!(after.stop(), "stopping a pending callback prevents it");
            cancel.cancel();
            assert_eq!(child.err(), Some(Error::Canceled));
            drop(child_cancel);
        }
        1 => {
            assert_eq!(child.wait_timeout(Duration::ZERO), None);
            drop(child_cancel);
            drop(cancel);
        }
        2 => {
            // The whole chain is freed without a cancel: each scope must
            // leave its parent and the timer on its own.
            cancel.detach();
            child_cancel.detach();
            drop(ctx);
            drop(child);
            return;
        }
        _ => {
            // A callback that runs: it must release its scope once run.
            if i % 1024 == 3 {
                let _ = child.after_func(|| {});
            }
            cancel.cancel_with(std::io::Error::other("soak"));
            assert_eq!(child.cause().unwrap().to_string(), "soak");
        }
    }
    assert!(child.is_done());
}

/// One async cycle: a `Done` future registers a waker, then the context
/// ends and the future resolves; every other cycle the future is dropped
/// unresolved instead.
fn async_cycle(root: &Context, i: u64) {
    let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
    let (child, _child_cancel) = ctx.with_cancel();
    let mut cx = std::task::Context::from_waker(Waker::noop());
    let mut done = pin!(child.done());
    assert!(done.as_mut().poll(&mut cx).is_pending());
    if i % 2 == 0 {
        cancel.cancel();
        assert_eq!(done.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
    } else {
        let mut run = pin!(child.run(std::future::pending::<()>()));
        assert!(run.as_mut().poll(&mut cx).is_pending());
    }
}

fn soak(name: &'static str, cycle: fn(&Context, u64)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let deadlines_before = diagnostics::pending_deadlines();
    let (root, _root_cancel) = Context::background().with_cancel();
    let mut memory = Memory::new(name);
    for i in 0..CYCLES {
        cycle(&root, i);
        memory.sample(i + 1);
    }
    memory.report();
    assert_eq!(
        root.registrations(),
        0,
        "{name}: the root holds registrations"
    );
    assert_eq!(
        diagnostics::pending_deadlines(),
        deadlines_before,
        "{name}: deadlines left in the timer"
    );
}

#[test]
#[ignore = "ten million cycles: run in release mode from .ci/soak.sh"]
fn sync_derive_cancel_soak() {
    soak("sync", sync_cycle);
}

#[test]
#[ignore = "ten million cycles: run in release mode from .ci/soak.sh"]
fn async_derive_cancel_soak() {
    soak("async", async_cycle);
}

/// A scope freed as part of a chain (its last reference held by a child
/// that goes away) still leaves the timer.
#[test]
fn a_freed_chain_leaves_no_deadline() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = diagnostics::pending_deadlines();
    let (parent, parent_cancel) = Context::background().with_timeout(Duration::from_secs(3600));
    parent_cancel.detach();
    let (child, child_cancel) = parent.with_cancel();
    child_cancel.detach();
    drop(parent);
    assert_eq!(diagnostics::pending_deadlines(), before + 1);
    drop(child);
    assert_eq!(
        diagnostics::pending_deadlines(),
        before,
        "the parent, freed through its child, left its timer entry"
    );
}
