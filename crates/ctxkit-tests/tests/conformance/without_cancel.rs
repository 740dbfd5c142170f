use ctxkit::Context;
use std::time::Duration;

#[test]
fn without_cancel_is_never_done_and_keeps_values() {
    struct Key(u8);
    let (parent, cancel) = Context::background()
        .with_value(Key(3))
        .with_timeout(Duration::from_millis(1));
    let detached = parent.without_cancel();
    assert_eq!(detached.deadline(), None);
    cancel.cancel();
    assert!(parent.is_done());
    assert!(!detached.is_done());
    assert_eq!(detached.err(), None);
    assert!(detached.cause().is_none());
    assert_eq!(detached.check(), Ok(()));
    assert_eq!(detached.value::<Key>().map(|k| k.0), Some(3));
    assert_eq!(detached.wait_timeout(Duration::from_millis(5)), None);
}

#[test]
fn children_of_without_cancel_are_independent_of_the_original_parent() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, cancel_child) = parent.without_cancel().with_cancel();
    cancel.cancel();
    assert!(!child.is_done());
    assert_eq!(parent.registrations(), 0);
    cancel_child.cancel();
    assert!(child.is_done());
}
