//! Signal-cancelled contexts, tested with real signals: the examples run as
//! child processes, and kill(1) signals them once they print that they are
//! ready. Each child is killed, and its test failed, if it outlives a 20 s
//! watchdog.
#![cfg(unix)]

#[path = "signal/child.rs"]
mod child;

use child::{example, Child};
use ctxkit::signal::{notify_context, Notify, SignalReceived, SIGINT, SIGTERM};
use ctxkit::{Context, Error};
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;

fn graceful_shutdown(args: &[&str]) -> Child {
    let mut child = Child::spawn(&example("graceful_shutdown"), args);
    child.expect_line("ready");
    child
}

fn probe(mode: &str) -> Child {
    let mut child = Child::spawn(&example("signal_probe"), &[mode]);
    child.expect_line("ready");
    child
}

/// A grace period long enough for the default 50 ms wind-down on a loaded
/// machine; the watchdog ends the test long before it would run out.
const PATIENT: [&str; 1] = ["--grace-ms=600000"];

/// Workers slow enough to stop that main is still within its grace period
/// when a second signal comes.
const SLOW_SHUTDOWN: [&str; 2] = ["--cleanup-ms=600000", "--grace-ms=600000"];

#[test]
fn first_sigint_stops_the_workers_and_exits_zero() {
    let child = graceful_shutdown(&PATIENT);
    child.signal("INT");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(
        exited.printed("shutting down: received signal SIGINT"),
        "{exited:?}"
    );
    assert!(exited.printed("worker 1 stopped after"), "{exited:?}");
    assert!(
        exited.printed("summary: all 3 workers stopped cleanly"),
        "{exited:?}"
    );
}

#[test]
fn sigterm_stops_the_workers_gracefully_too() {
    let child = graceful_shutdown(&PATIENT);
    child.signal("TERM");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(
        exited.printed("shutting down: received signal SIGTERM"),
        "{exited:?}"
    );
    assert!(exited.printed("summary: all 3 workers"), "{exited:?}");
}

#[test]
fn second_sigint_during_shutdown_exits_at_once_with_130() {
    let mut child = graceful_shutdown(&SLOW_SHUTDOWN);
    child.signal("INT");
    child.expect_line("shutting down: received signal SIGINT");
    child.signal("INT");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(130), "{exited:?}");
    assert!(!exited.printed("summary"), "{exited:?}");
}

#[test]
fn second_signal_exits_with_128_plus_its_number() {
    let mut child = graceful_shutdown(&SLOW_SHUTDOWN);
    child.signal("INT");
    child.expect_line("shutting down: received signal SIGINT");
    child.signal("TERM");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(128 + SIGTERM), "{exited:?}");
}

#[test]
fn shutdown_longer_than_the_grace_period_exits_with_failure() {
    let child = graceful_shutdown(&["--cleanup-ms=600000", "--grace-ms=100"]);
    child.signal("TERM");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(
        exited.printed("summary: only 0 of 3 workers stopped within the grace period"),
        "{exited:?}"
    );
}

#[test]
fn after_stop_a_signal_takes_its_default_action() {
    for (name, number) in [("INT", SIGINT), ("TERM", SIGTERM)] {
        let mut child = probe("stop");
        child.signal(name);
        child.expect_line(&format!("received: {}", SignalReceived::new(number)));
        child.expect_line("stopped");
        child.signal(name);
        let exited = child.wait();
        assert_eq!(exited.status.signal(), Some(number), "{exited:?}");
        assert_eq!(exited.status.code(), None, "killed, not exited: {exited:?}");
    }
}

#[test]
fn opting_out_of_the_exit_keeps_the_process_alive_on_a_second_signal() {
    let mut child = probe("keep-alive");
    child.signal("INT");
    child.expect_line("received: received signal SIGINT");
    child.expect_line("listening again");
    child.signal("INT");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(
        exited.printed("received again: received signal SIGINT"),
        "{exited:?}"
    );
}

#[test]
fn stopping_one_listener_leaves_the_signal_to_the_other() {
    let child = probe("shared");
    child.signal("INT");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(
        exited.printed("received: received signal SIGINT"),
        "{exited:?}"
    );
}

#[test]
fn tokio_form_cancels_on_the_first_signal_and_exits_on_the_second() {
    let mut child = probe("tokio");
    child.signal("TERM");
    child.expect_line("received: received signal SIGTERM");
    child.expect_line("still shutting down");
    child.signal("TERM");
    let exited = child.wait();
    assert_eq!(exited.status.code(), Some(143), "{exited:?}");
}

// In-process tests below send no signals: the handlers they install must
// never fire in the test runner itself.

#[test]
fn unacceptable_signal_lists_are_rejected_with_invalid_input() {
    use signal_hook::consts::{SIGKILL, SIGSEGV};
    let background = Context::background();
    for signals in [&[][..], &[SIGKILL], &[SIGINT, SIGSEGV], &[1000]] {
        let err = Notify::new()
            .signals(signals)
            .install(&background)
            .expect_err("unacceptable list");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{signals:?}: {err}");
    }
}

#[test]
fn tokio_form_outside_a_runtime_is_an_error() {
    let err = Notify::new()
        .install_tokio(&Context::background())
        .expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn handles_and_options_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ctxkit::signal::SignalHandle>();
    send_sync::<Notify>();
    send_sync::<SignalReceived>();
}

#[test]
fn stop_and_drop_cancel_the_context_with_canceled() {
    let (ctx, signals) = notify_context(&Context::background()).unwrap();
    assert_eq!(ctx.err(), None);
    signals.stop();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    signals.stop(); // idempotent

    let (ctx, signals) = notify_context(&Context::background()).unwrap();
    drop(signals);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn the_parents_cancellation_reaches_the_signal_context() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, _signals) = notify_context(&parent).unwrap();
    cancel_parent.cancel_with(std::io::Error::other("config reloaded"));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap().to_string(), "config reloaded");
}

#[tokio::test]
async fn tokio_form_stops_like_the_thread_form() {
    let (ctx, signals) = ctxkit::signal::notify_context_tokio(&Context::background()).unwrap();
    assert!(!ctx.is_done());
    signals.stop();
    assert_eq!(ctx.done().await, Error::Canceled);
}
