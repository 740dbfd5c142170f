//! Go's Cause table, row by row: (err, cause) for each setup.

use crate::support::*;
use ctxkit::{Cause, Context, Error};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

/// What a cause should be: our `Why`, or a plain `ctxkit::Error`.
#[derive(Debug, PartialEq)]
enum Expect {
    Why(&'static str),
    Plain(Error),
}

fn describe(cause: &Cause) -> Expect {
    match (why(cause), plain(cause)) {
        (Some(why), _) => Expect::Why(why),
        (None, Some(err)) => Expect::Plain(err),
        (None, None) => panic!("unexpected cause {cause}"),
    }
}

fn check(ctx: &Context, err: Error, cause: Expect) {
    assert_eq!(ctx.err(), Some(err), "{ctx:?}");
    assert_eq!(describe(&ctx.cause().expect("done")), cause, "{ctx:?}");
}

#[test]
fn roots() {
    for ctx in [Context::background(), Context::todo()] {
        assert_eq!(ctx.err(), None);
        assert!(ctx.cause().is_none());
    }
}

#[test]
fn with_cancel_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert!(ctx.cause().is_none(), "no cause while live");
    cancel.cancel();
    check(&ctx, Error::Canceled, Expect::Plain(Error::Canceled));
}

#[test]
fn cancel_with_a_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Why("e"));
    check(&ctx, Error::Canceled, Expect::Why("e"));
}

#[test]
fn cause_parent_and_cause_child_parent_cancelled_first() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_parent.cancel_with(Why("parent"));
    cancel_child.cancel_with(Why("child"));
    check(&child, Error::Canceled, Expect::Why("parent"));
}

#[test]
fn cause_parent_and_cause_child_child_cancelled_first() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel_with(Why("child"));
    cancel_parent.cancel_with(Why("parent"));
    check(&child, Error::Canceled, Expect::Why("child"));
    check(&parent, Error::Canceled, Expect::Why("parent"));
}

#[test]
fn parent_cancel_with_plain_child() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, _cancel_child) = parent.with_cancel();
    cancel_parent.cancel_with(Why("e"));
    check(&child, Error::Canceled, Expect::Why("e"));
}

#[test]
fn plain_parent_child_cancel_with_first() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel_with(Why("e"));
    cancel_parent.cancel();
    check(&child, Error::Canceled, Expect::Why("e"));
}

#[test]
fn plain_parent_cancelled_first_then_cause_child() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_parent.cancel();
    cancel_child.cancel_with(Why("too late"));
    check(&child, Error::Canceled, Expect::Plain(Error::Canceled));
}

#[test]
fn with_timeout_zero() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    check(
        &ctx,
        Error::DeadlineExceeded,
        Expect::Plain(Error::DeadlineExceeded),
    );
}

#[test]
fn with_timeout_long_then_cancel() {
    let (ctx, cancel) = Context::background().with_timeout(LONG);
    cancel.cancel();
    check(&ctx, Error::Canceled, Expect::Plain(Error::Canceled));
}

#[test]
fn with_timeout_cause_zero() {
    let (ctx, _cancel) = Context::background().with_timeout_cause(Duration::ZERO, Why("e"));
    check(&ctx, Error::DeadlineExceeded, Expect::Why("e"));
}

#[test]
fn with_timeout_cause_fired_by_the_timer() {
    let (ctx, _cancel) =
        Context::background().with_timeout_cause(Duration::from_millis(10), Why("slow"));
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    check(&ctx, Error::DeadlineExceeded, Expect::Why("slow"));
}

#[test]
fn with_timeout_cause_long_then_cancel() {
    let (ctx, cancel) = Context::background().with_timeout_cause(LONG, Why("e"));
    cancel.cancel();
    check(&ctx, Error::Canceled, Expect::Plain(Error::Canceled));
}

#[test]
fn with_timeout_cause_zero_under_a_cause_parent_later_cancelled() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, _cancel_child) = parent.with_timeout_cause(Duration::ZERO, Why("e"));
    cancel_parent.cancel_with(Why("parent"));
    check(&child, Error::DeadlineExceeded, Expect::Why("e"));
}

#[test]
fn with_timeout_long_under_a_parent_cancelled_with_a_cause() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, _cancel_child) = parent.with_timeout(LONG);
    cancel_parent.cancel_with(Why("e"));
    check(&child, Error::Canceled, Expect::Why("e"));
}

#[test]
fn without_cancel_of_anything() {
    let (parent, cancel) = Context::background().with_cancel();
    let detached = parent.without_cancel();
    cancel.cancel_with(Why("e"));
    assert_eq!(detached.err(), None);
    assert!(detached.cause().is_none());
}

#[test]
fn a_parent_deadline_reaches_children_as_deadline_exceeded_with_its_cause() {
    let (parent, _cancel) = Context::background().with_timeout_cause(Duration::ZERO, Why("late"));
    let (child, _c) = parent.with_cancel();
    check(&child, Error::DeadlineExceeded, Expect::Why("late"));
}

#[test]
fn reading_the_cause_while_it_is_being_set_is_race_free() {
    for _ in 0..200 {
        let (ctx, cancel) = Context::background().with_cancel();
        let start = Arc::new(Barrier::new(2));
        let reader = {
            let (ctx, start) = (ctx.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                loop {
                    match ctx.cause() {
                        Some(cause) => return why(&cause),
                        None => std::hint::spin_loop(),
                    }
                }
            })
        };
        start.wait();
        cancel.cancel_with(Why("e"));
        assert_eq!(reader.join().unwrap(), Some("e"));
    }
}
