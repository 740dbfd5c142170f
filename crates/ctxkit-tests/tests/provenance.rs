//! `Context::provenance`: who cancelled a context, from where, and when.

use ctxkit::provenance::Origin;
use ctxkit::{Context, Error, Message};
use std::panic::Location;
use std::time::{Duration, Instant};

/// The location of the line this is called on.
#[track_caller]
fn here() -> &'static Location<'static> {
    Location::caller()
}

fn same_line(a: &Location<'_>, b: &Location<'_>) -> bool {
    a.file() == b.file() && a.line() == b.line()
}

#[test]
fn a_live_context_has_no_provenance() {
    let (ctx, _cancel) = Context::background().with_cancel();
    assert!(ctx.provenance().is_none());
    assert!(Context::background().provenance().is_none());
    assert!(Context::todo().provenance().is_none());
    let (parent, cancel) = Context::background().with_cancel();
    let detached = parent.without_cancel();
    cancel.cancel();
    assert!(detached.provenance().is_none(), "never cancelled");
}

#[test]
fn a_dropped_handle_names_where_it_was_created() {
    let (created, (ctx, handle)) = (here(), Context::background().with_cancel());
    let dropped_at = here();
    drop(handle);
    let why = ctx.provenance().expect("cancelled");
    assert_eq!(why.origin(), Origin::HandleDropped);
    assert_eq!(why.levels_up(), 0);
    assert_eq!(why.err(), Error::Canceled);
    assert!(same_line(why.created_at(), created), "{why:?}");
    assert!(
        same_line(why.site().unwrap(), created),
        "a drop has no caller"
    );
    assert!(!same_line(why.site().unwrap(), dropped_at));
    assert!(why.drop_backtrace().is_none(), "not asked for");
    let text = why.to_string();
    let expected = format!(
        "canceled: CancelHandle dropped (created at {}:{}:",
        created.file(),
        created.line()
    );
    assert!(text.starts_with(&expected), "{text} / {expected}");
    assert!(text.ends_with(" after creation"), "{text}");
}

#[test]
fn a_handle_dropped_by_binding_it_to_underscore_is_named_too() {
    let created = here();
    #[rustfmt::skip]
    let (ctx, _) = Context::background().with_timeout(Duration::from_secs(60)); // line after `created`
    let why = ctx.provenance().unwrap();
    assert_eq!(why.origin(), Origin::HandleDropped);
    assert_eq!(why.created_at().line(), created.line() + 2);
    assert_eq!(why.created_at().file(), created.file());
}

#[test]
fn cancel_names_its_call_site() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (called, ()) = (here(), cancel.cancel());
    let why = ctx.provenance().unwrap();
    assert_eq!(why.origin(), Origin::Cancel);
    assert!(same_line(why.site().unwrap(), called), "{why:?}");
    assert_eq!(why.site().unwrap().file(), file!());
    let text = why.to_string();
    assert!(
        text.starts_with(&format!("canceled: cancel() at {}", why.site().unwrap())),
        "{text}"
    );
    // A second cancel does not overwrite the first.
    cancel.cancel();
    assert!(same_line(ctx.provenance().unwrap().site().unwrap(), called));
}

#[test]
fn cancel_with_names_its_call_site_and_keeps_the_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (called, ()) = (here(), cancel.cancel_with(Message::new("reloaded")));
    let why = ctx.provenance().unwrap();
    assert_eq!(why.origin(), Origin::CancelWith);
    assert!(same_line(why.site().unwrap(), called));
    assert_eq!(ctx.cause().unwrap().to_string(), "reloaded");
    assert!(why.to_string().starts_with("canceled: cancel_with() at "));
}

#[test]
fn deadline_provenance_names_the_deadline() {
    let at = Instant::now() + Duration::from_millis(30);
    let (created, (ctx, _cancel)) = (here(), Context::background().with_deadline(at));
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    let why = ctx.provenance().unwrap();
    assert_eq!(why.origin(), Origin::Deadline);
    assert_eq!(why.err(), Error::DeadlineExceeded);
    assert_eq!(why.deadline(), Some(at));
    assert_eq!(why.site(), None);
    assert!(same_line(why.created_at(), created));
    // It lived about 30 ms (the clock is coarse: a few ms either way).
    assert!(why.lived() >= Duration::from_millis(15), "{why:?}");
    assert!(why.lived() < Duration::from_secs(30), "{why:?}");
    let text = why.to_string();
    let expected = format!(
        "deadline exceeded: deadline (set at {}:{}:",
        created.file(),
        created.line()
    );
    assert!(text.starts_with(&expected), "{text}");
}

#[test]
fn a_passed_deadline_and_a_moved_one_are_deadlines_too() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    assert_eq!(ctx.provenance().unwrap().origin(), Origin::Deadline);
    let ctx = Context::background().with_timeout_detached(Duration::ZERO);
    assert_eq!(ctx.provenance().unwrap().origin(), Origin::Deadline);

    let (ctx, handle) = Context::background().with_timeout(Duration::from_secs(60));
    let now = Instant::now();
    assert!(handle.set_deadline(now));
    let why = ctx.provenance().unwrap();
    assert_eq!(why.origin(), Origin::Deadline);
    assert_eq!(
        why.deadline(),
        Some(now),
        "the deadline that passed: the moved one"
    );
}

#[test]
fn an_inherited_cancellation_counts_its_levels() {
    let (root, cancel) = Context::background().with_cancel();
    let values = root.with_value(1u8); // 1 level below root
    let (scope, _a) = values.with_cancel(); // 2
    let (deadline, _b) = scope.with_timeout(Duration::from_secs(60)); // 3
    let leaf = deadline.with_value("leaf"); // 4
    let (called, ()) = (here(), cancel.cancel());
    for (ctx, levels) in [
        (&root, 0),
        (&values, 1),
        (&scope, 2),
        (&deadline, 3),
        (&leaf, 4),
    ] {
        let why = ctx.provenance().unwrap();
        assert_eq!(why.levels_up(), levels, "{why:?}");
        assert_eq!(why.origin(), Origin::Cancel);
        assert!(same_line(why.site().unwrap(), called));
    }
    let text = leaf.provenance().unwrap().to_string();
    assert!(
        text.starts_with("canceled 4 levels up: cancel() at "),
        "{text}"
    );
    let text = values.provenance().unwrap().to_string();
    assert!(text.starts_with("canceled 1 level up: "), "{text}");
    // A child derived after the end is born done, and counts as well.
    let (late, _c) = leaf.with_cancel();
    assert_eq!(late.provenance().unwrap().levels_up(), 5);
}

#[test]
fn the_nearest_own_end_wins_over_a_later_one_above() {
    let (root, cancel_root) = Context::background().with_cancel();
    let (child, cancel_child) = root.with_cancel();
    let (grandchild, _g) = child.with_cancel();
    cancel_child.cancel_with(Message::new("first"));
    cancel_root.cancel();
    let why = grandchild.provenance().unwrap();
    assert_eq!(why.levels_up(), 1);
    assert_eq!(why.origin(), Origin::CancelWith);
}

#[test]
fn a_merge_follows_the_parent_that_ended_it() {
    for second in [false, true] {
        let (first_parent, cancel_first) = Context::background().with_cancel();
        let (other_parent, cancel_other) = Context::background().with_value(7u32).with_cancel();
        let (merged, _m) = first_parent.merge(&other_parent);
        let (below, _b) = merged.with_cancel();
        let called = here();
        if second {
            cancel_other.cancel_from("test: second parent");
        } else {
            cancel_first.cancel();
        }
        let why = below.provenance().unwrap();
        assert_eq!(why.levels_up(), 2, "{why:?}");
        if second {
            assert_eq!(why.origin(), Origin::Integration("test: second parent"));
        } else {
            assert_eq!(why.origin(), Origin::Cancel);
            assert_eq!(why.site().unwrap().line(), called.line() + 4);
        }
        // The other parent's later end changes nothing.
        cancel_first.cancel();
        cancel_other.cancel();
        assert_eq!(below.provenance().unwrap().levels_up(), 2);
    }
    // Merging with a parent that has already ended.
    let (done, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (live, _l) = Context::background().with_value(1u8).with_cancel();
    let (merged, _m) = live.merge(&done);
    let why = merged.provenance().unwrap();
    assert_eq!(why.levels_up(), 1);
    assert_eq!(why.origin(), Origin::Cancel);
}

#[test]
fn integrations_name_themselves() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    cancel.cancel_from("HTTP client disconnected");
    let why = child.provenance().unwrap();
    assert_eq!(
        why.origin(),
        Origin::Integration("HTTP client disconnected")
    );
    assert_eq!(why.site(), None);
    assert_eq!(ctx.cause().unwrap().downcast_ref(), Some(&Error::Canceled));
    let text = why.to_string();
    assert!(
        text.starts_with("canceled 1 level up: HTTP client disconnected, "),
        "{text}"
    );

    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_from_with("HTTP server shutting down", Message::new("drain"));
    assert_eq!(ctx.cause().unwrap().to_string(), "drain");
    assert_eq!(
        ctx.provenance().unwrap().origin(),
        Origin::Integration("HTTP server shutting down")
    );
}

#[test]
fn times_are_plausible() {
    let before = Instant::now();
    let (ctx, cancel) = Context::background().with_cancel();
    // Not synchronisation: the context must have lived a measurable time.
    std::thread::sleep(Duration::from_millis(60));
    cancel.cancel();
    let after = Instant::now();
    let why = ctx.provenance().unwrap();
    assert!(why.lived() >= Duration::from_millis(40), "{why:?}");
    assert!(
        why.lived() <= after - before + Duration::from_millis(20),
        "{why:?}"
    );
    // Coarse: up to a tick (about 4 ms) and a scheduler tick either way.
    let slack = Duration::from_millis(30);
    assert!(why.canceled_at() + slack >= before, "{why:?}");
    assert!(why.canceled_at() <= Instant::now() + slack, "{why:?}");
}

#[test]
fn display_and_debug() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_value(1u8).with_cancel();
    drop(cancel);
    let why = child.provenance().unwrap();
    let text = why.to_string();
    // `canceled 2 levels up: CancelHandle dropped (created at tests/provenance.rs:L:C), < 1 ms after creation`
    let rest = text
        .strip_prefix("canceled 2 levels up: CancelHandle dropped (created at ")
        .unwrap_or_else(|| panic!("{text}"));
    let (site, rest) = rest.split_once("), ").unwrap();
    assert!(
        site.ends_with(&format!(":{}", why.created_at().column())),
        "{site}"
    );
    assert!(site.contains("provenance.rs:"), "{site}");
    assert!(rest.ends_with(" after creation"), "{rest}");
    let amount = rest.strip_suffix(" after creation").unwrap();
    assert!(
        amount.ends_with(" ms") || amount.ends_with(" s"),
        "a short life reads in ms or s: {amount}"
    );

    let debug = format!("{why:?}");
    for field in [
        "origin: HandleDropped",
        "levels_up: 2",
        "err: Canceled",
        "site: Some(",
        "created_at: ",
        "deadline: None",
        "canceled_at: ",
        "lived: ",
        "drop_backtrace: None",
    ] {
        assert!(debug.contains(field), "{field} in {debug}");
    }
}

#[test]
fn every_deriving_method_records_its_caller() {
    let root = Context::background();
    let (other, _o) = root.with_value(1u8).with_cancel();
    #[rustfmt::skip]
    let cases: Vec<(u32, Context)> = vec![
        (line!(), root.with_cancel().0),
        (line!(), root.with_timeout(Duration::from_secs(60)).0),
        (line!(), root.with_deadline(Instant::now() + Duration::from_secs(60)).0),
        (line!(), root.with_timeout_cause(Duration::from_secs(60), Message::new("x")).0),
        (line!(), root.with_deadline_cause(Instant::now() + Duration::from_secs(60), Message::new("x")).0),
        (line!(), root.with_timeout_detached(Duration::ZERO)),
        (line!(), root.with_deadline_detached(Instant::now())),
        (line!(), root.with_value(2u16).with_cancel().0.merge(&other).0),
    ];
    for (line, ctx) in cases {
        let why = ctx.provenance().expect("the handle was dropped");
        assert_eq!(why.created_at().line(), line, "{why:?}");
        assert_eq!(why.created_at().file(), file!());
    }
}

#[test]
fn many_call_sites_and_threads() {
    // Each thread interns the same sites through its own cache.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..1_000 {
                    let (ctx, cancel) = Context::background().with_cancel();
                    let called = here();
                    cancel.cancel();
                    let why = ctx.provenance().unwrap();
                    assert_eq!(why.site().unwrap().line(), called.line() + 1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// Run by [`drop_backtraces_are_opt_in`] in a child process, with
/// `CTXKIT_DROP_BACKTRACE=1` (read once per process).
#[test]
#[ignore = "run by drop_backtraces_are_opt_in, with the variable set"]
fn drop_backtrace_child() {
    assert_eq!(std::env::var("CTXKIT_DROP_BACKTRACE").as_deref(), Ok("1"));
    let (ctx, cancel) = Context::background().with_cancel();
    drop_here(cancel);
    let why = ctx.provenance().unwrap();
    let backtrace = why.drop_backtrace().expect("captured").to_string();
    assert!(backtrace.contains("drop_here"), "{backtrace}");
    assert_eq!(format!("{why:?}").matches("captured").count(), 1);
    // Cancelled before its handle is dropped: no backtrace.
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    drop(cancel);
    assert!(ctx.provenance().unwrap().drop_backtrace().is_none());
}

#[inline(never)]
fn drop_here(cancel: ctxkit::CancelHandle) {
    drop(cancel);
}

#[test]
fn drop_backtraces_are_opt_in() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "drop_backtrace_child",
            "--nocapture",
        ])
        .env("CTXKIT_DROP_BACKTRACE", "1")
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    assert!(status.success());
}

/// The errgroup names itself as the origin: a failing task, and the group's
/// end once every task has returned.
#[test]
fn an_errgroup_names_itself() {
    let mut sibling_saw = None;
    // The failure waits for the sibling to start: a group that has already
    // failed refuses new tasks.
    let both_started = std::sync::Barrier::new(2);
    let result = ctxkit::group::scope::<Message, _, _>(&Context::background(), |g| {
        g.spawn(|_ctx| {
            both_started.wait();
            Err(Message::new("disk full"))
        });
        assert!(g.spawn(|ctx| {
            both_started.wait();
            ctx.wait();
            sibling_saw = ctx.provenance();
            Ok(())
        }));
    });
    assert_eq!(result.unwrap_err().as_str(), "disk full");
    let who = sibling_saw.expect("the sibling was cancelled");
    assert_eq!(
        who.origin(),
        Origin::Integration("errgroup task failed"),
        "{who}"
    );

    let mut group_ctx = None;
    ctxkit::group::scope::<Message, _, _>(&Context::background(), |g| {
        g.spawn(|ctx| {
            group_ctx = Some(ctx.clone());
            Ok(())
        });
    })
    .unwrap();
    let who = group_ctx
        .unwrap()
        .provenance()
        .expect("ended with the group");
    assert_eq!(
        who.origin(),
        Origin::Integration("errgroup finished"),
        "{who}"
    );
}
