use crate::support::*;
use ctxkit::{Context, Error};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn wait_blocks_until_cancelled_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiter = {
        let ctx = ctx.clone();
        thread::spawn(move || {
            ready_tx.send(()).unwrap();
            ctx.wait()
        })
    };
    expect(&ready_rx, "the waiter");
    cancel.cancel_with(Why("stop"));
    assert_eq!(waiter.join().unwrap(), Error::Canceled);
    assert_eq!(ctx.registrations(), 0);
}

#[test]
fn wait_timeout_returns_none_on_time_and_leaves_no_registration() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let start = Instant::now();
    assert_eq!(ctx.wait_timeout(Duration::from_millis(30)), None);
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(ctx.registrations(), 0);
}

#[test]
fn sleep_wakes_early_on_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let sleeper = {
        let ctx = ctx.clone();
        thread::spawn(move || {
            let start = Instant::now();
            (ctx.sleep(Duration::from_secs(3600)), start.elapsed())
        })
    };
    cancel.cancel();
    let (slept, took) = sleeper.join().unwrap();
    assert_eq!(slept, Err(Error::Canceled));
    assert!(took < PATIENCE, "slept {took:?}");
}

#[test]
fn sleep_ends_at_the_deadline_when_it_comes_first() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    assert_eq!(
        ctx.sleep(Duration::from_secs(3600)),
        Err(Error::DeadlineExceeded)
    );
}

/// Counts wake-ups.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn done_registers_on_poll_wakes_on_cancel_and_unregisters_on_drop() {
    let (ctx, cancel) = Context::background().with_cancel();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = TaskContext::from_waker(&waker);

    // Re-created every turn, as in a select! loop: nothing accumulates.
    for _ in 0..1000 {
        let mut done = pin!(ctx.done());
        assert!(done.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ctx.registrations(), 1);
    }
    assert_eq!(ctx.registrations(), 0);

    let mut done = pin!(ctx.done());
    assert!(done.as_mut().poll(&mut cx).is_pending());
    assert!(
        done.as_mut().poll(&mut cx).is_pending(),
        "re-poll keeps one registration"
    );
    assert_eq!(ctx.registrations(), 1);
    cancel.cancel();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(done.as_mut().poll(&mut cx), Poll::Ready(Error::Canceled));
}

#[test]
fn done_wakes_the_latest_waker() {
    let (ctx, cancel) = Context::background().with_cancel();
    let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let mut done = pin!(ctx.done());
    let waker = Waker::from(first.clone());
    assert!(done
        .as_mut()
        .poll(&mut TaskContext::from_waker(&waker))
        .is_pending());
    let waker = Waker::from(second.clone());
    assert!(done
        .as_mut()
        .poll(&mut TaskContext::from_waker(&waker))
        .is_pending());
    cancel.cancel();
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
}

#[test]
fn done_never_resolves_on_a_root() {
    let ctx = Context::background();
    let waker = Waker::noop();
    let mut done = pin!(ctx.done());
    assert!(done
        .as_mut()
        .poll(&mut TaskContext::from_waker(waker))
        .is_pending());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_wake_on_one_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.done().await })
        })
        .collect();
    cancel.cancel();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Error::Canceled);
    }
    assert_eq!(ctx.registrations(), 0);
}

#[tokio::test]
async fn run_returns_the_output_or_the_error_whichever_comes_first() {
    let ctx = Context::background();
    assert_eq!(ctx.run(async { 7 }).await, Ok(7));

    let (ctx, cancel) = Context::background().with_cancel();
    let pending = ctx.run(std::future::pending::<()>());
    let canceller = tokio::spawn(async move { cancel.cancel() });
    assert_eq!(pending.await, Err(Error::Canceled));
    canceller.await.unwrap();

    // Already done: the future is not even polled.
    let polled = AtomicUsize::new(0);
    let result = ctx
        .run(async {
            polled.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    assert_eq!(result, Err(Error::Canceled));
    assert_eq!(polled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn done_and_run_are_send() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(5));
    let task = tokio::spawn(async move {
        let done = assert_send(ctx.done());
        let err = done.await;
        let ran = assert_send(ctx.run(async { 1 })).await;
        (err, ran)
    });
    assert_eq!(
        task.await.unwrap(),
        (Error::DeadlineExceeded, Err(Error::DeadlineExceeded))
    );
    drop(cancel);
}

#[test]
fn done_receiver_disconnects_on_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let done = ctx.done_receiver();
    let (jobs_tx, jobs) = crossbeam_channel::unbounded::<u32>();
    let worker = thread::spawn(move || {
        let mut sum = 0;
        loop {
            crossbeam_channel::select! {
                recv(done) -> msg => { assert!(msg.is_err()); return sum; }
                recv(jobs) -> job => sum += job.unwrap(),
            }
        }
    });
    jobs_tx.send(5).unwrap();
    cancel.cancel();
    let sum = worker.join().unwrap();
    assert!(sum == 0 || sum == 5);
    // Done contexts hand out disconnected receivers; roots never disconnect.
    assert!(ctx.done_receiver().recv().is_err());
    let root = Context::background().done_receiver();
    assert!(root.recv_timeout(Duration::from_millis(5)).is_err());
    assert_eq!(
        root.recv_timeout(Duration::from_millis(1)),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    );
}

#[test]
fn owned_done_outlives_its_context_handle_and_unregisters_on_drop() {
    fn assert_static_send<T: Send + 'static>(value: T) -> T {
        value
    }
    let (ctx, cancel) = Context::background().with_cancel();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = TaskContext::from_waker(&waker);

    let mut abandoned = assert_static_send(ctx.done_owned());
    assert!(std::pin::Pin::new(&mut abandoned)
        .poll(&mut cx)
        .is_pending());
    assert_eq!(ctx.registrations(), 1);
    drop(abandoned);
    assert_eq!(ctx.registrations(), 0);

    let mut done = ctx.done_owned();
    drop(ctx.clone());
    assert!(std::pin::Pin::new(&mut done).poll(&mut cx).is_pending());
    cancel.cancel();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        std::pin::Pin::new(&mut done).poll(&mut cx),
        Poll::Ready(Error::Canceled)
    );
}
