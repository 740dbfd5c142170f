//! Deadlines that move: `CancelHandle::set_deadline`, `set_timeout` and
//! `clear_deadline`.
//!
//! Every context's deadline is the earliest current one on its path to the
//! root, after any moves; a move to now ends the subtree before it returns;
//! inheriting descendants end at the new time; moves race cleanly with the
//! timer and with cancel.

use ctxkit::{diagnostics, Context, Error};
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

fn cause_text(ctx: &Context) -> String {
    ctx.cause().expect("a done context has a cause").to_string()
}

#[test]
fn descendants_see_every_move_at_once() {
    let start = Instant::now();
    let (root, root_handle) = Context::background().with_deadline(start + 10 * HOUR);
    let (child, _c) = root.with_value(1u8).with_cancel();
    let (own, _o) = child.with_deadline(start + 5 * HOUR);
    let (grandchild, _g) = own.with_value(2u16).with_cancel();
    assert_eq!(grandchild.deadline(), Some(start + 5 * HOUR));

    // Earlier than the descendant's own: everyone below sees it.
    assert!(root_handle.set_deadline(start + HOUR));
    for ctx in [&root, &child, &own, &grandchild] {
        assert_eq!(ctx.deadline(), Some(start + HOUR));
    }
    // Later again: the descendant's own deadline shows through.
    assert!(root_handle.set_deadline(start + 20 * HOUR));
    assert_eq!(child.deadline(), Some(start + 20 * HOUR));
    assert_eq!(grandchild.deadline(), Some(start + 5 * HOUR));
    // Cleared: back to no deadline above the descendant.
    assert!(root_handle.clear_deadline());
    assert_eq!(root.deadline(), None);
    assert_eq!(child.with_value(3u32).deadline(), None);
    assert_eq!(grandchild.deadline(), Some(start + 5 * HOUR));
    // A context that never had a deadline of its own gets one.
    let (_plain, plain_handle) = own.with_cancel();
    assert!(plain_handle.set_deadline(start + 2 * HOUR));
    assert_eq!(_plain.deadline(), Some(start + 2 * HOUR));
}

#[test]
fn a_move_later_than_an_ancestors_deadline_changes_nothing_visible() {
    let (parent, _p) = Context::background().with_timeout(HOUR);
    let (child, handle) = parent.with_timeout(HOUR / 2);
    let (grandchild, _g) = child.with_cancel();
    assert!(handle.set_timeout(10 * HOUR));
    assert_eq!(child.deadline(), parent.deadline());
    assert_eq!(grandchild.deadline(), parent.deadline());
    assert!(!child.is_done());
}

#[test]
fn a_move_to_now_or_before_ends_the_subtree_before_it_returns() {
    let (ctx, handle) =
        Context::background().with_timeout_cause(HOUR, std::io::Error::other("too slow upstream"));
    let (child, _c) = ctx.with_value(1u8).with_cancel();
    let (grandchild, _g) = child.with_timeout(HOUR / 2);
    assert!(handle.set_deadline(Instant::now() - Duration::from_secs(1)));
    for c in [&ctx, &child, &grandchild] {
        assert_eq!(c.err(), Some(Error::DeadlineExceeded));
        assert_eq!(
            cause_text(c),
            "too slow upstream",
            "the deadline's cause moves with it"
        );
    }
    assert!(
        !handle.set_timeout(HOUR),
        "a done context's deadline does not move"
    );
    assert!(!handle.clear_deadline());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));

    let (ctx, handle) = Context::background().with_cancel();
    assert!(handle.set_timeout(Duration::ZERO));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[test]
fn an_inheriting_descendant_wakes_its_waiters_at_the_new_time() {
    let (parent, handle) = Context::background().with_timeout(HOUR);
    let (child, _c) = parent.with_value(1u8).with_cancel();
    let waiter = {
        let child = child.clone();
        std::thread::spawn(move || {
            let err = child.wait();
            (err, Instant::now())
        })
    };
    let new_deadline = Instant::now() + Duration::from_millis(50);
    assert!(handle.set_deadline(new_deadline));
    let (err, woken) = waiter.join().unwrap();
    assert_eq!(err, Error::DeadlineExceeded);
    assert!(woken >= new_deadline, "woken before the new deadline");
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn an_extended_deadline_fires_at_the_new_time_not_the_old() {
    let (ctx, handle) = Context::background().with_timeout(Duration::from_millis(20));
    let extended = Instant::now() + Duration::from_millis(400);
    assert!(handle.set_deadline(extended));
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    assert!(Instant::now() >= extended, "ended at the old deadline");
}

#[test]
fn an_idle_timeout_pushed_back_by_every_message() {
    let idle = Duration::from_millis(100);
    let (conn, handle) = Context::background().with_timeout(idle);
    let (request, _r) = conn.with_cancel();
    let started = Instant::now();
    // Messages every 10 ms for 300 ms: three idle periods, never idle.
    while started.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(10));
        if !handle.set_timeout(idle) {
            // Only a stall of a whole idle period (a busy machine) ends it.
            assert_eq!(conn.err(), Some(Error::DeadlineExceeded));
            return;
        }
    }
    let last = conn.deadline().unwrap();
    assert_eq!(request.wait(), Error::DeadlineExceeded);
    assert!(Instant::now() >= last);
}

#[test]
fn the_timer_holds_one_entry_per_context_whatever_the_moves() {
    let (ctx, handle) = Context::background().with_cancel();
    let before = diagnostics::pending_deadlines();
    for i in 0..10_000u64 {
        assert!(handle.set_timeout(HOUR + Duration::from_secs(i % 97)));
    }
    // Other tests add and remove their own entries meanwhile: 10,000 moves
    // cannot hide in that.
    assert!(diagnostics::pending_deadlines() < before + 50);
    assert!(!ctx.is_done());
}

/// Moves, the timer firing and cancels race on many threads: whichever ends
/// a context first decides its err and cause, as one pair, for it and its
/// child; a false move means the context was done.
#[test]
fn moves_race_cleanly_with_the_timer_and_cancel() {
    for round in 0..300u64 {
        let (ctx, handle) = Context::background().with_timeout_cause(
            Duration::from_micros(round % 50),
            std::io::Error::other("timer"),
        );
        let (child, _c) = ctx.with_cancel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20u64 {
                    let moved = handle.set_timeout(Duration::from_micros(i * 10));
                    if !moved {
                        assert!(ctx.is_done(), "a move fails only on a done context");
                    }
                }
            });
            s.spawn(|| {
                std::thread::sleep(Duration::from_micros(round % 100));
                handle.cancel_with(std::io::Error::other("handle"));
            });
        });
        let pair = (ctx.err(), cause_text(&ctx));
        assert!(
            pair == (Some(Error::DeadlineExceeded), "timer".to_string())
                || pair == (Some(Error::Canceled), "handle".to_string()),
            "{pair:?}"
        );
        assert_eq!((child.err(), cause_text(&child)), pair);
    }
}
