//! Panics in user code do not break the tree.
//!
//! A panicking `after_func` callback or waker does not stop the other
//! callbacks, waiters or descendants from being notified and cancelled, and
//! poisons nothing: the same contexts keep working afterwards. A thread that
//! panics while holding contexts and handles leaves the tree usable, with
//! its handles' contexts cancelled and nothing left registered.
//!
//! `cancel()` delivers every notification, then re-raises the first waker
//! panic on the cancelling thread (unless that thread is already unwinding):
//! the tests pin that documented behaviour down.

use ctxkit::{Context, Done, Error};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

/// Long enough that only a lost notification can exhaust it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A waker whose `wake` panics.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker panic");
    }
}

/// A waker that records being woken.
#[derive(Default)]
struct FlagWaker(AtomicBool);

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `ctx.done()` once with `waker`, leaving the future registered.
fn register_waker<'a>(ctx: &'a Context, waker: &Waker) -> Pin<Box<Done<'a>>> {
    let mut done = Box::pin(ctx.done());
    let mut cx = std::task::Context::from_waker(waker);
    assert!(done.as_mut().poll(&mut cx).is_pending());
    done
}

/// Waits until `ctx` holds `count` registrations (a thread has parked in
/// `wait`), so that cancel finds it registered rather than racing it.
fn wait_for_registrations(ctx: &Context, count: usize) {
    let give_up = std::time::Instant::now() + PATIENCE;
    while ctx.registrations() < count {
        assert!(
            std::time::Instant::now() < give_up,
            "the waiter never registered"
        );
        thread::yield_now();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

#[test]
fn a_panicking_callback_does_not_stop_the_others() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let _ = ctx.after_func(|| panic!("callback panic"));
    for i in 0..3 {
        let tx = tx.clone();
        let _ = ctx.after_func(move || tx.send(i).unwrap());
    }
    let _ = ctx.after_func(|| panic!("callback panic"));
    cancel.cancel(); // callbacks run elsewhere: nothing reaches the canceller
    let mut ran: Vec<i32> = (0..3).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    ran.sort();
    assert_eq!(ran, [0, 1, 2]);

    // Nothing is poisoned: the callback threads and the tree still work.
    let (other, other_cancel) = Context::background().with_cancel();
    let (child, _child_cancel) = other.with_cancel();
    let _ = child.after_func(move || tx.send(99).unwrap());
    other_cancel.cancel();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(99));
    let (late, _late_cancel) = ctx.with_cancel();
    assert_eq!(late.err(), Some(Error::Canceled));
}

#[test]
fn a_panicking_waker_does_not_stop_waiters_callbacks_or_descendants() {
    let (ctx, cancel) = Context::background().with_cancel();
    // Registered first, so it is notified before everything below.
    let panicking = Waker::from(Arc::new(PanickingWaker));
    let _panicking_done = register_waker(&ctx, &panicking);

    let flag = Arc::new(FlagWaker::default());
    let flag_waker = Waker::from(flag.clone());
    let mut flagged_done = register_waker(&ctx, &flag_waker);

    let thread_waiter = {
        let ctx = ctx.clone();
        thread::spawn(move || ctx.wait())
    };
    wait_for_registrations(&ctx, 3);
    let (ran_tx, ran_rx) = mpsc::channel();
    let _ = ctx.after_func(move || ran_tx.send(()).unwrap());
    let (child, _child_cancel) = ctx.with_value(1u8).with_cancel();
    let (grandchild, _grandchild_cancel) = child.with_timeout(Duration::from_secs(3600));
    let _another_panicking = register_waker(&grandchild, &panicking);

    let raised = catch_unwind(AssertUnwindSafe(|| cancel.cancel()));
    let payload = raised.expect_err("cancel() re-raises the waker's panic");
    assert_eq!(panic_message(&*payload), "waker panic");

    // Everything was delivered despite the panics.
    assert!(child.is_done() && grandchild.is_done());
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    assert!(flag.0.load(Ordering::SeqCst), "the other waker was woken");
    let mut cx = std::task::Context::from_waker(&flag_waker);
    assert_eq!(
        flagged_done.as_mut().poll(&mut cx),
        Poll::Ready(Error::Canceled)
    );
    assert_eq!(thread_waiter.join().unwrap(), Error::Canceled);
    ran_rx.recv_timeout(PATIENCE).expect("the callback ran");

    // Nothing is poisoned: the same contexts answer every query.
    assert_eq!(ctx.cause().unwrap().to_string(), "context canceled");
    assert_eq!(ctx.registrations(), 0);
    assert_eq!(grandchild.wait(), Error::Canceled);
    let (late, _late_cancel) = ctx.with_cancel();
    assert!(late.is_done());
    cancel.cancel(); // already done: nothing to deliver, nothing raised
}

#[test]
fn a_waker_panic_during_unwinding_is_not_raised_again() {
    let (ctx, cancel) = Context::background().with_cancel();
    let waiter = thread::spawn({
        let ctx = ctx.clone();
        move || {
            let panicking = Waker::from(Arc::new(PanickingWaker));
            let _done = register_waker(&ctx, &panicking);
            // Dropped while unwinding: a second panic here would abort.
            let _cancel = cancel;
            panic!("worker failed");
        }
    });
    let payload = waiter.join().expect_err("the worker panicked");
    assert_eq!(panic_message(&*payload), "worker failed");
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn a_thread_that_panics_holding_contexts_leaves_the_tree_usable() {
    let (root, root_cancel) = Context::background().with_cancel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let worker = thread::spawn({
        let root = root.clone();
        move || {
            let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3600));
            let (child, _child_cancel) = ctx.with_value("request").with_cancel();
            let _after = child.after_func(|| {});
            let mut done = pin!(child.done());
            let mut cx = std::task::Context::from_waker(Waker::noop());
            assert!(done.as_mut().poll(&mut cx).is_pending());
            ready_tx.send(ctx.clone()).unwrap();
            go_rx.recv().unwrap();
            panic!("worker failed while holding contexts");
        }
    });
    let ctx = ready_rx.recv().unwrap();
    assert_eq!(root.registrations(), 1);
    drop(go_tx);
    assert!(worker.join().is_err());

    // The worker's handles were dropped while it unwound: its contexts are
    // cancelled and have left the root.
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(root.registrations(), 0);

    // The tree works as before.
    let (sibling, sibling_cancel) = root.with_cancel();
    let waiter = thread::spawn({
        let root = root.clone();
        move || root.wait()
    });
    wait_for_registrations(&root, 2);
    sibling_cancel.cancel();
    assert_eq!(root.registrations(), 1, "only the waiter is left");
    assert!(sibling.is_done());
    root_cancel.cancel();
    assert_eq!(waiter.join().unwrap(), Error::Canceled);
}
