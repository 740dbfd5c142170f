use ctxkit::Context;
use std::time::Duration;

#[test]
fn background_and_todo_are_never_done_and_carry_nothing() {
    for ctx in [Context::background(), Context::todo()] {
        assert!(!ctx.is_done());
        assert_eq!(ctx.err(), None);
        assert!(ctx.cause().is_none());
        assert_eq!(ctx.check(), Ok(()));
        assert_eq!(ctx.deadline(), None);
        assert_eq!(ctx.remaining(), None);
        assert!(ctx.value::<u32>().is_none());
        assert_eq!(ctx.registrations(), 0);
    }
}

#[test]
fn waiting_on_a_root_blocks_until_the_bound() {
    for ctx in [Context::background(), Context::todo()] {
        assert_eq!(ctx.wait_timeout(Duration::from_millis(20)), None);
        assert_eq!(ctx.sleep(Duration::from_millis(1)), Ok(()));
    }
}

#[test]
fn roots_name_themselves_and_derived_contexts_print_the_chain() {
    struct RequestId;
    assert_eq!(format!("{:?}", Context::background()), "context.Background");
    assert_eq!(format!("{:?}", Context::todo()), "context.TODO");

    let (ctx, _cancel) = Context::background().with_cancel();
    assert_eq!(format!("{ctx:?}"), "context.Background.WithCancel");

    let ctx = Context::todo().with_value(RequestId).without_cancel();
    let printed = format!("{ctx:?}");
    assert!(printed.starts_with("context.TODO.WithValue("), "{printed}");
    assert!(printed.contains("RequestId"), "{printed}");
    assert!(printed.ends_with(").WithoutCancel"), "{printed}");

    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let printed = format!("{ctx:?}");
    assert!(
        printed.starts_with("context.Background.WithDeadline(+"),
        "{printed}"
    );
}

#[test]
fn a_later_deadline_than_the_parents_prints_as_a_plain_cancel() {
    let (parent, _a) = Context::background().with_timeout(Duration::from_secs(1));
    let (child, _b) = parent.with_timeout(Duration::from_secs(60));
    assert!(format!("{child:?}").ends_with(".WithCancel"), "{child:?}");
}

#[test]
fn roots_are_cheap_and_default_is_background() {
    let ctx = Context::default();
    assert_eq!(format!("{ctx:?}"), "context.Background");
    let _clones: Vec<Context> = (0..1000).map(|_| Context::todo()).collect();
    assert!(!Context::todo().is_done());
}
