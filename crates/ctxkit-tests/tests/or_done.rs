//! Or-done adapters: iteration over a channel or stream ends the moment the
//! context is done, even while blocked waiting for the next item.

use ctxkit::or_done::{or_done, or_done_stream, ContextStreamExt, ReceiverExt};
use ctxkit::{Context, Error};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Generous: a prompt wake-up takes microseconds, a noisy machine seconds.
const PROMPT: Duration = Duration::from_secs(5);

/// Waits until `ctx` holds at least `n` registrations: the iterator or stream
/// under test has reached its blocking wait.
fn wait_for_registrations(ctx: &Context, n: usize) {
    let start = Instant::now();
    while ctx.registrations() < n {
        assert!(
            start.elapsed() < PROMPT,
            "the waiter never registered with the context"
        );
        std::thread::yield_now();
    }
}

#[test]
fn blocked_iteration_ends_when_the_context_is_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (_tx, rx) = crossbeam_channel::unbounded::<u32>();
    let (result_tx, result_rx) = crossbeam_channel::bounded(1);
    let iterating = std::thread::spawn({
        let ctx = ctx.clone();
        move || {
            let mut items = or_done(&ctx, &rx);
            let next = items.next();
            result_tx.send((next, items.err())).unwrap();
        }
    });
    // The channel stays open and empty: only the context can end the wait.
    wait_for_registrations(&ctx, 1);
    cancel.cancel();
    let (next, err) = result_rx
        .recv_timeout(PROMPT)
        .expect("the blocked iteration did not end after cancel");
    assert_eq!(next, None);
    assert_eq!(err, Some(Error::Canceled));
    iterating.join().unwrap();
}

#[test]
fn blocked_iteration_ends_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let (_tx, rx) = crossbeam_channel::unbounded::<u32>();
    let (result_tx, result_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut items = rx.until_done(&ctx);
        let next = items.next();
        result_tx.send((next, items.err())).unwrap();
    });
    let (next, err) = result_rx
        .recv_timeout(PROMPT)
        .expect("the blocked iteration outlived the deadline");
    assert_eq!(next, None);
    assert_eq!(err, Some(Error::DeadlineExceeded));
}

#[test]
fn items_before_the_cancel_are_delivered_and_the_rest_stay_in_the_channel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = crossbeam_channel::unbounded();
    for n in 1..=5 {
        tx.send(n).unwrap();
    }
    let mut items = rx.until_done(&ctx);
    assert_eq!(items.next(), Some(1));
    assert_eq!(items.next(), Some(2));
    cancel.cancel();
    assert_eq!(
        items.next(),
        None,
        "a done context ends the iteration even with items waiting"
    );
    assert_eq!(items.err(), Some(Error::Canceled));
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [3, 4, 5],
        "nothing was taken and dropped"
    );
}

#[test]
fn items_sent_while_blocked_arrive_one_by_one() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let (tx, rx) = crossbeam_channel::bounded(0);
    let producer = std::thread::spawn(move || {
        for n in 0..100 {
            tx.send(n).unwrap();
        }
    });
    let mut items = or_done(&ctx, &rx);
    assert_eq!(
        items.by_ref().collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(
        items.err(),
        None,
        "ended because the channel was disconnected"
    );
    producer.join().unwrap();
    assert!(
        ctx.registrations() <= 1,
        "one done receiver per iterator, not one per item: {} registrations",
        ctx.registrations()
    );
}

#[test]
fn a_done_context_takes_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (tx, rx) = crossbeam_channel::unbounded();
    tx.send("kept").unwrap();
    let mut items = or_done(&ctx, &rx);
    assert_eq!(items.next(), None);
    assert_eq!(items.err(), Some(Error::Canceled));
    assert_eq!(rx.len(), 1);
}

#[test]
fn iteration_is_fused_after_either_end() {
    let (tx, rx) = crossbeam_channel::unbounded();
    drop(tx);
    let mut items = or_done(&Context::background(), &rx);
    assert_eq!(items.next(), None::<u8>);
    assert_eq!(items.next(), None);
    assert_eq!(items.err(), None);

    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut items = or_done(&ctx, &rx);
    cancel.cancel();
    assert_eq!(items.next(), None);
    tx.send(1).unwrap();
    assert_eq!(items.next(), None, "stays ended");
    assert_eq!(items.err(), Some(Error::Canceled));
}

#[test]
fn the_iterator_moves_to_another_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let items = or_done(&Context::background(), &rx);
    assert_send(&items);
    tx.send("moved".into()).unwrap();
    drop(tx);
    let all = std::thread::spawn(move || items.collect::<Vec<_>>())
        .join()
        .unwrap();
    assert_eq!(all, ["moved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_stream_ends_when_the_context_is_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (_tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    let mut items = rx.until_done(&ctx);
    let task = tokio::spawn(async move {
        let next = items.next().await;
        (next, items.err())
    });
    // The stream stays open and empty: only the context can end it.
    let ready = ctx.clone();
    tokio::task::spawn_blocking(move || wait_for_registrations(&ready, 1))
        .await
        .unwrap();
    cancel.cancel();
    let (next, err) = tokio::time::timeout(PROMPT, task)
        .await
        .expect("the pending stream did not end after cancel")
        .unwrap();
    assert_eq!(next, None);
    assert_eq!(err, Some(Error::Canceled));
    assert_eq!(ctx.registrations(), 0);
}

#[tokio::test]
async fn pending_stream_ends_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let mut never = or_done_stream(&ctx, futures::stream::pending::<u8>());
    let next = tokio::time::timeout(PROMPT, never.next())
        .await
        .expect("the pending stream outlived the deadline");
    assert_eq!(next, None);
    assert_eq!(never.err(), Some(Error::DeadlineExceeded));
}

#[tokio::test]
async fn stream_items_before_the_cancel_are_delivered_and_the_rest_kept() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for n in 1..=5 {
        tx.unbounded_send(n).unwrap();
    }
    drop(tx);
    let mut items = rx.until_done(&ctx);
    assert_eq!(items.next().await, Some(1));
    assert_eq!(items.next().await, Some(2));
    cancel.cancel();
    assert_eq!(items.next().await, None);
    assert_eq!(items.err(), Some(Error::Canceled));
    let rest: Vec<_> = items.into_inner().collect().await;
    assert_eq!(rest, [3, 4, 5], "nothing was taken and dropped");
}

#[tokio::test]
async fn stream_that_ends_reports_no_error_and_stays_ended() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut items = futures::stream::iter([7, 8]).until_done(&ctx);
    assert_eq!((&mut items).collect::<Vec<_>>().await, [7, 8]);
    assert_eq!(items.err(), None);
    cancel.cancel();
    assert_eq!(items.next().await, None);
    assert_eq!(items.err(), None, "ended by the stream before the cancel");
    assert!(futures::stream::FusedStream::is_terminated(&items));
}

#[tokio::test]
async fn a_stream_that_never_waits_never_registers() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let items = futures::stream::iter(0..1000).until_done(&ctx);
    let mut items = Box::pin(items);
    let mut count = 0;
    while items.next().await.is_some() {
        count += 1;
        assert_eq!(ctx.registrations(), 0);
    }
    assert_eq!(count, 1000);
}

#[test]
fn the_stream_adapter_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (_tx, rx) = futures::channel::mpsc::unbounded::<u8>();
    assert_send(&rx.until_done(&Context::background()));
}
