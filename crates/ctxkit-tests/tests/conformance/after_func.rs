use crate::support::*;
use ctxkit::Context;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

#[test]
fn f_runs_after_the_context_is_done_and_not_before() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let observed = ctx.clone();
    let after = ctx.after_func(move || tx.send(observed.err()).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(20)).is_err(),
        "ran while live"
    );
    cancel.cancel();
    assert_eq!(expect(&rx, "f"), Some(ctxkit::Error::Canceled));
    assert!(!after.stop(), "too late to stop");
}

#[test]
fn f_runs_after_a_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
    let (tx, rx) = mpsc::channel();
    let _ = ctx.after_func(move || tx.send(()).unwrap());
    expect(&rx, "f after the deadline");
}

#[test]
fn on_an_already_done_context_f_runs_promptly_on_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (tx, rx) = mpsc::channel();
    let after = ctx.after_func(move || tx.send(thread::current().id()).unwrap());
    assert_ne!(expect(&rx, "f"), thread::current().id());
    assert!(!after.stop());
}

#[test]
fn stop_before_cancel_prevents_the_run_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let after = {
        let ran = ran.clone();
        ctx.after_func(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
    };
    assert!(after.stop());
    assert!(!after.stop(), "a second stop prevents nothing");
    cancel.cancel();
    // Prove f is not merely late: a later registration runs, the stopped one
    // never does.
    let (tx, rx) = mpsc::channel();
    let _ = ctx.after_func(move || tx.send(()).unwrap());
    expect(&rx, "a later callback");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn stop_racing_cancel_either_stops_or_runs_exactly_once() {
    let (done_tx, done_rx) = mpsc::channel();
    let rounds = 500;
    let mut stopped = 0;
    for _ in 0..rounds {
        let (ctx, cancel) = Context::background().with_cancel();
        let done_tx = done_tx.clone();
        let after = ctx.after_func(move || done_tx.send(()).unwrap());
        let start = Arc::new(Barrier::new(2));
        let canceller = {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                cancel.cancel();
            })
        };
        start.wait();
        let prevented = after.stop();
        canceller.join().unwrap();
        // Once cancel() has returned, the outcome is settled.
        assert!(!after.stop());
        if prevented {
            stopped += 1;
        } else {
            expect(&done_rx, "f, since stop did not prevent it");
        }
    }
    drop(done_tx);
    // Every run was accounted for above: no extra run may follow.
    assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err());
    assert!(stopped <= rounds);
}

#[test]
fn cancel_does_not_wait_for_a_slow_f() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (ran_tx, ran_rx) = mpsc::channel();
    let _ = ctx.after_func(move || {
        release_rx.recv().unwrap();
        ran_tx.send(()).unwrap();
    });
    cancel.cancel(); // returns while f is blocked
    release_tx.send(()).unwrap();
    expect(&ran_rx, "the slow f to finish");
}

#[test]
fn registrations_are_independent_and_a_slow_one_delays_no_other() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let _ = ctx.after_func(move || release_rx.recv().unwrap());
    let stopped = ctx.after_func(|| panic!("stopped: must not run"));
    for i in 0..5 {
        let tx = tx.clone();
        let _ = ctx.after_func(move || tx.send(i).unwrap());
    }
    assert!(stopped.stop());
    cancel.cancel();
    let mut got: Vec<i32> = (0..5).map(|_| expect(&rx, "each callback")).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    release_tx.send(()).unwrap();
}

#[test]
fn a_panicking_f_is_contained() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let _ = ctx.after_func(|| panic!("callback failure (expected by this test)"));
    let _ = ctx.after_func(move || tx.send(()).unwrap());
    cancel.cancel();
    expect(&rx, "the other callback");
    // The tree still works.
    let (child, cancel_child) = Context::background().with_cancel();
    cancel_child.cancel();
    assert!(child.is_done());
}

#[test]
fn on_a_context_that_cannot_be_cancelled_f_never_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    for ctx in [
        Context::background(),
        Context::background().with_cancel().0.without_cancel(),
    ] {
        let ran = ran.clone();
        let after = ctx.after_func(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
        assert!(after.stop(), "nothing ran, so stop prevented it");
        assert!(!after.stop());
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn dropping_an_after_func_does_not_stop_it_and_a_pending_f_keeps_the_context() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    {
        let (ctx, cancel) = parent.with_cancel();
        drop(ctx.after_func(move || tx.send(()).unwrap()));
        cancel.detach();
    }
    // Every handle on the child is gone; the parent can still end it.
    assert_eq!(parent.registrations(), 1);
    cancel_parent.cancel();
    expect(&rx, "f of the detached child");
}
