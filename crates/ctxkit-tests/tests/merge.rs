//! `Context::merge`: a context ended by either of two parents.
//!
//! Each way of ending (either parent, the handle), the cause table for
//! whichever parent ended first, the deadline and values of both, the
//! shortcut for `background()`, and that a merge costs no thread.

use ctxkit::{Context, Error};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
struct RequestId(u32);
#[derive(Debug, PartialEq)]
struct Tenant(&'static str);

fn cause_text(ctx: &Context) -> String {
    ctx.cause().expect("a done context has a cause").to_string()
}

fn pair(ctx: &Context) -> (Error, String) {
    (ctx.err().expect("done"), cause_text(ctx))
}

#[test]
fn the_first_parent_ends_it_with_its_err_and_cause() {
    let (first, cancel_first) = Context::background().with_cancel();
    let (second, _cancel_second) = Context::background().with_cancel();
    let (merged, _cancel) = first.merge(&second);
    let (grandchild, _g) = merged.with_value(1u8).with_cancel();
    cancel_first.cancel_with(std::io::Error::other("request finished"));
    for ctx in [&merged, &grandchild] {
        assert_eq!(pair(ctx), (Error::Canceled, "request finished".into()));
    }
    assert!(!second.is_done(), "cancellation never flows up");
    assert_eq!(second.registrations(), 0, "it left the live parent");
}

#[test]
fn the_second_parent_ends_it_with_its_err_and_cause() {
    let (first, _cancel_first) = Context::background().with_cancel();
    let (second, cancel_second) = Context::background().with_cancel();
    let (merged, _cancel) = first.merge(&second);
    cancel_second.cancel();
    assert_eq!(pair(&merged), (Error::Canceled, "context canceled".into()));
    assert!(!first.is_done());
    assert_eq!(first.registrations(), 0, "it left the live parent");
}

#[test]
fn the_handle_ends_it_and_neither_parent() {
    let (first, _a) = Context::background().with_cancel();
    let (second, _b) = Context::background().with_cancel();
    let (merged, cancel) = first.merge(&second);
    cancel.cancel_with(std::io::Error::other("done with both"));
    assert_eq!(pair(&merged), (Error::Canceled, "done with both".into()));
    assert!(!first.is_done() && !second.is_done());
    assert_eq!(first.registrations() + second.registrations(), 0);
    // Dropping the handle cancels too.
    let (merged, cancel) = first.merge(&second);
    drop(cancel);
    assert_eq!(merged.err(), Some(Error::Canceled));
}

#[test]
fn whichever_parent_ends_first_gives_the_cause() {
    let (first, cancel_first) = Context::background().with_cancel();
    let (second, cancel_second) = Context::background().with_cancel();
    let (merged, _cancel) = first.merge(&second);
    cancel_second.cancel_with(std::io::Error::other("second"));
    cancel_first.cancel_with(std::io::Error::other("first"));
    assert_eq!(pair(&merged), (Error::Canceled, "second".into()));
}

#[test]
fn a_parents_deadline_ends_it_with_deadline_exceeded_and_the_deadline_cause() {
    let (first, _a) = Context::background().with_cancel();
    let (second, _b) = Context::background()
        .with_timeout_cause(Duration::from_millis(10), std::io::Error::other("budget"));
    let (merged, _c) = first.merge(&second);
    assert_eq!(merged.wait(), Error::DeadlineExceeded);
    assert_eq!(cause_text(&merged), "budget");

    let (timed, _t) = Context::background().with_timeout(Duration::from_millis(10));
    let (merged, _c) = timed.merge(&first);
    assert_eq!(merged.wait(), Error::DeadlineExceeded);
    assert_eq!(
        merged.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[test]
fn a_done_parent_gives_a_merge_done_at_once() {
    let (live, _l) = Context::background().with_cancel();
    let (done, cancel) = Context::background().with_cancel();
    cancel.cancel_with(std::io::Error::other("already over"));
    for (merged, _c) in [live.merge(&done), done.merge(&live)] {
        assert_eq!(pair(&merged), (Error::Canceled, "already over".into()));
    }
    assert_eq!(live.registrations(), 0);
    // Both done: the first parent's.
    let (other_done, other_cancel) = Context::background().with_cancel();
    other_cancel.cancel();
    let (merged, _c) = done.merge(&other_done);
    assert_eq!(cause_text(&merged), "already over");
}

#[test]
fn the_deadline_is_the_earlier_of_both_and_follows_their_moves() {
    let soon = Instant::now() + Duration::from_secs(60);
    let later = soon + Duration::from_secs(60);
    let (first, first_handle) = Context::background().with_deadline(later);
    let (second, second_handle) = Context::background().with_deadline(soon);
    let (merged, _c) = first.merge(&second);
    let (child, _d) = merged.with_cancel();
    assert_eq!(merged.deadline(), Some(soon));
    assert!(second_handle.clear_deadline());
    assert_eq!(child.deadline(), Some(later));
    let sooner = soon - Duration::from_secs(30);
    assert!(first_handle.set_deadline(sooner));
    assert_eq!(child.deadline(), Some(sooner));
    let (without, _w) = Context::background().merge(&Context::todo());
    assert_eq!(without.deadline(), None);
}

#[test]
fn values_are_looked_up_in_self_first_then_in_other() {
    let first = Context::background().with_value(RequestId(1));
    let (second, _b) = Context::background()
        .with_value(RequestId(2))
        .with_value(Tenant("acme"))
        .with_cancel();
    let (merged, _c) = first.merge(&second);
    assert_eq!(merged.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(merged.value::<Tenant>(), Some(&Tenant("acme")));
    assert_eq!(merged.value::<u64>(), None);
    // Through layers below the merge, and after it ended.
    let (below, cancel) = merged.with_value(9u64).with_cancel();
    cancel.cancel();
    assert_eq!(below.value::<Tenant>(), Some(&Tenant("acme")));
    assert_eq!(below.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(below.value::<u64>(), Some(&9));
    // The other way round, the other's first.
    let (merged, _c) = second.merge(&first);
    assert_eq!(merged.value::<RequestId>(), Some(&RequestId(2)));
}

#[test]
fn merging_with_background_is_a_plain_with_cancel() {
    let (ctx, _a) = Context::background().with_value(RequestId(3)).with_cancel();
    for (merged, _c) in [
        ctx.merge(&Context::background()),
        Context::background().merge(&ctx),
    ] {
        assert_eq!(
            format!("{merged:?}"),
            format!("{:?}", ctx.with_cancel().0),
            "no second parent to keep"
        );
        assert_eq!(merged.value::<RequestId>(), Some(&RequestId(3)));
    }
}

#[test]
fn waiters_and_callbacks_of_a_merge_wake_when_either_parent_ends() {
    let (first, _a) = Context::background().with_cancel();
    let (second, cancel_second) = Context::background().with_cancel();
    let (merged, _c) = first.merge(&second);
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    let _after = merged.after_func(move || ran_tx.send(()).unwrap());
    let waiter = {
        let merged = merged.clone();
        std::thread::spawn(move || merged.wait())
    };
    let task = {
        let merged = merged.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async move { merged.done().await })
        })
    };
    cancel_second.cancel();
    assert_eq!(waiter.join().unwrap(), Error::Canceled);
    assert_eq!(task.join().unwrap(), Error::Canceled);
    ran_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the callback ran");
}

/// The number of threads of this process, from /proc.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

#[test]
fn a_merge_runs_no_thread_or_task() {
    let (first, _a) = Context::background().with_cancel();
    let (second, _b) = Context::background().with_cancel();
    // Start the timer thread (if no other test has) before counting.
    let _warm = Context::background().with_timeout(Duration::from_secs(3600));
    let before = threads();
    let merges: Vec<_> = (0..10_000).map(|_| first.merge(&second)).collect();
    assert_eq!(first.registrations(), 10_000);
    assert_eq!(second.registrations(), 10_000);
    // Other tests of this binary may start or end threads meanwhile; ten
    // thousand merges cannot hide in that.
    assert!(
        threads() < before + 50,
        "{} threads for 10,000 merges",
        threads()
    );
    drop(merges);
    assert_eq!(first.registrations() + second.registrations(), 0);
}

#[test]
fn merges_and_cancels_from_many_threads_agree() {
    for _ in 0..200 {
        let (first, cancel_first) = Context::background().with_cancel();
        let (second, cancel_second) = Context::background().with_cancel();
        let (merged, _c) = first.merge(&second);
        let (child, _d) = merged.with_cancel();
        std::thread::scope(|s| {
            s.spawn(|| cancel_first.cancel_with(std::io::Error::other("first")));
            s.spawn(|| cancel_second.cancel_with(std::io::Error::other("second")));
            s.spawn(|| {
                let (late, _l) = first.merge(&second);
                std::hint::black_box(late);
            });
        });
        let (err, cause) = pair(&merged);
        assert_eq!(err, Error::Canceled);
        assert!(cause == "first" || cause == "second", "{cause}");
        assert_eq!(pair(&child), (err, cause));
        assert_eq!(first.registrations() + second.registrations(), 0);
    }
}
