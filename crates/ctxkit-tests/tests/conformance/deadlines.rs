use ctxkit::{diagnostics, Context, Error};
use std::io;
use std::time::{Duration, Instant};

#[test]
fn with_timeout_ends_with_deadline_exceeded_after_about_the_timeout() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    assert!(!ctx.is_done());
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(50), "ended early: {took:?}");
    assert!(took < Duration::from_secs(10), "ended very late: {took:?}");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.remaining(), Some(Duration::ZERO));
}

#[test]
fn a_childs_deadline_is_the_earlier_of_its_own_and_its_parents() {
    let now = Instant::now();
    let (soon, later) = (now + Duration::from_secs(10), now + Duration::from_secs(20));

    let (parent, _a) = Context::background().with_deadline(soon);
    let (child, _b) = parent.with_deadline(later);
    assert_eq!(child.deadline(), Some(soon));
    assert!(
        format!("{child:?}").ends_with(".WithCancel"),
        "no timer of its own"
    );

    let (parent, _c) = Context::background().with_deadline(later);
    let (child, _d) = parent.with_deadline(soon);
    assert_eq!(child.deadline(), Some(soon));
    assert_eq!(parent.deadline(), Some(later));

    // Deadlines flow through value layers, and not through without_cancel.
    assert_eq!(child.with_value(1u8).deadline(), Some(soon));
    assert_eq!(child.without_cancel().deadline(), None);
}

#[test]
fn a_later_deadline_than_the_parents_sets_no_timer_of_its_own() {
    let (parent, _a) = Context::background().with_timeout(Duration::from_secs(3600));
    let before = diagnostics::pending_deadlines();
    let children: Vec<_> = (0..100)
        .map(|_| parent.with_timeout(Duration::from_secs(7200)))
        .collect();
    // Other tests may add or remove deadlines concurrently; 100 new entries
    // cannot hide in that noise.
    assert!(diagnostics::pending_deadlines() < before + 50);
    drop(children);
}

#[test]
fn a_deadline_in_the_past_or_now_gives_a_context_already_done() {
    let now = Instant::now();
    for deadline in [now - Duration::from_secs(1), now] {
        let (ctx, cancel) = Context::background().with_deadline(deadline);
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        cancel.cancel(); // does nothing: the context is already done
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    }
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn cancelling_before_the_deadline_gives_canceled_and_stops_the_timer() {
    let far = Duration::from_secs(3600);
    let contexts: Vec<_> = (0..1000)
        .map(|_| Context::background().with_timeout(far))
        .collect();
    let mut observed = vec![];
    for (ctx, cancel) in contexts {
        cancel.cancel();
        assert_eq!(ctx.err(), Some(Error::Canceled));
        observed.push(ctx);
    }
    // All 1000 entries left the timer when they were cancelled; concurrent
    // tests hold only a few deadlines of their own.
    assert!(diagnostics::pending_deadlines() < 500);
}

#[test]
fn a_timeout_wakes_waiters_and_children() {
    let (parent, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let (child, _child_cancel) = parent.with_cancel();
    let waiter = std::thread::spawn(move || child.wait());
    assert_eq!(waiter.join().unwrap(), Error::DeadlineExceeded);
}

#[test]
fn many_deadlines_fire_in_order_on_one_timer() {
    let base = Instant::now() + Duration::from_millis(20);
    let contexts: Vec<_> = (0..50u32)
        .rev()
        .map(|i| Context::background().with_deadline(base + Duration::from_millis(u64::from(i))))
        .collect();
    for (ctx, _cancel) in &contexts {
        assert_eq!(ctx.wait(), Error::DeadlineExceeded);
        assert!(Instant::now() >= ctx.deadline().unwrap());
    }
}

#[test]
fn deadline_exceeded_is_a_timeout() {
    let err: io::Error = Error::DeadlineExceeded.into();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(Error::DeadlineExceeded.is_timeout());
    let err: io::Error = Error::Canceled.into();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    assert!(!Error::Canceled.is_timeout());
    assert_eq!(Error::Canceled.to_string(), "context canceled");
    assert_eq!(
        Error::DeadlineExceeded.to_string(),
        "context deadline exceeded"
    );
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::MAX);
    assert!(!ctx.is_done());
    assert!(ctx.deadline().is_some());
    assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
}
