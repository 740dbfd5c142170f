use ctxkit::Context;

#[derive(Debug, PartialEq)]
struct RequestId(u64);
#[derive(Debug, PartialEq)]
struct User(&'static str);

#[test]
fn values_are_keyed_by_type_and_the_nearest_wins() {
    let root = Context::background();
    let a = root.with_value(RequestId(1));
    let b = a.with_value(User("ana"));
    let c = b.with_value(RequestId(2));
    assert_eq!(root.value::<RequestId>(), None);
    assert_eq!(a.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(
        b.value::<RequestId>(),
        Some(&RequestId(1)),
        "other types pass through"
    );
    assert_eq!(b.value::<User>(), Some(&User("ana")));
    assert_eq!(c.value::<RequestId>(), Some(&RequestId(2)));
    assert_eq!(c.value::<User>(), Some(&User("ana")));
    assert_eq!(
        a.value::<User>(),
        None,
        "a parent never sees its children's values"
    );
    assert_eq!(c.value::<u64>(), None);
}

#[test]
fn values_stay_readable_after_cancellation_through_every_kind_of_layer() {
    let (cancelled, cancel) = Context::background().with_value(RequestId(9)).with_cancel();
    let (timed, _t) = cancelled
        .with_value(User("bo"))
        .with_timeout(std::time::Duration::from_secs(60));
    let detached = timed.without_cancel();
    let _ = detached.after_func(|| {});
    cancel.cancel();
    for ctx in [&cancelled, &timed, &detached] {
        assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(9)), "{ctx:?}");
    }
    assert_eq!(timed.value::<User>(), Some(&User("bo")));
    assert_eq!(detached.value::<User>(), Some(&User("bo")));
    assert!(timed.is_done());
    assert!(!detached.is_done());
}

#[test]
fn deep_value_chains_find_every_layer() {
    let mut ctx = Context::background();
    for i in 0..100u32 {
        ctx = ctx.with_value(i).with_value(u64::from(i) * 2);
        let (child, cancel) = ctx.with_cancel();
        cancel.detach();
        ctx = child;
    }
    assert_eq!(ctx.value::<u32>(), Some(&99));
    assert_eq!(ctx.value::<u64>(), Some(&198));
    assert_eq!(ctx.value::<i8>(), None);
}

#[test]
fn values_are_dropped_when_the_last_context_goes() {
    use std::sync::Arc;
    let tracked = Arc::new(());
    let ctx = Context::background().with_value(tracked.clone());
    let child = ctx.with_value(5u8);
    assert_eq!(Arc::strong_count(&tracked), 2);
    drop(ctx);
    assert_eq!(Arc::strong_count(&tracked), 2, "the child still sees it");
    drop(child);
    assert_eq!(Arc::strong_count(&tracked), 1);
}
