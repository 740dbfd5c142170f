//! `ctxkit::process`: child processes stopped by their context, reaped
//! always. Real processes (`sh`, `sleep`); Linux, since zombies are read
//! from /proc.
#![cfg(target_os = "linux")]

use ctxkit::process::{AsyncCommandExt, CommandExt, Stop};
use ctxkit::{Context, Error};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The issue's bound for "promptly", generous on a busy 2-core machine.
const PROMPT: Duration = Duration::from_millis(500);

/// The state letter of process `pid` from /proc (R, S, Z...), or `None` once
/// it is gone (reaped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces, so go from the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The parent pid of `pid`, if it exists.
fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` is a zombie child of this process.
fn is_our_zombie(pid: u32) -> bool {
    proc_state(pid) == Some('Z') && proc_ppid(pid) == Some(std::process::id())
}

/// Polls `condition` until it holds, for at most `limit`: true if it did.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// Starts `sh -c script` under `ctx` and waits for its first stdout line
/// (the script's "I am ready"), so that a test's cancel reaches a process
/// whose traps are set.
fn spawn_ready(ctx: &Context, script: &str, stop: Stop) -> (ctxkit::process::Child, String) {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stop_with(stop)
        .spawn_ctx(ctx)
        .expect("sh starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("the script prints a line");
    (child, line.trim().to_owned())
}

#[test]
fn the_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ctxkit::process::Child>();
    send_sync::<ctxkit::process::AsyncChild>();
    send_sync::<ctxkit::process::Error>();
    send_sync::<Stop>();
}

#[test]
fn sleep_stops_within_500ms_of_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
    let pid = child.id();
    assert!(eventually(PROMPT, || proc_state(pid).is_some()));

    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    let took = cancelled.elapsed();
    assert!(took < PROMPT, "stopped {took:?} after cancel");
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert_eq!(err.status().unwrap().signal(), Some(15), "SIGTERM ended it");
    assert_eq!(err.killed_at(), None, "no SIGKILL was needed");
    assert!(err.stopped_at().is_some());
    assert_eq!(proc_state(pid), None, "reaped");
}

#[test]
fn term_ignoring_child_is_killed_after_the_wait_delay() {
    let delay = Duration::from_millis(300);
    let (ctx, cancel) = Context::background().with_cancel();
    let stop = Stop::new().wait_delay(delay).process_group(true);
    let (mut child, ready) = spawn_ready(&ctx, r#"trap "" TERM; echo ready; sleep 30"#, stop);
    assert_eq!(ready, "ready");

    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    let took = cancelled.elapsed();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert_eq!(err.status().unwrap().signal(), Some(9), "SIGKILL ended it");
    let (termed, killed) = (err.stopped_at().unwrap(), err.killed_at().unwrap());
    assert!(
        killed.duration_since(termed) >= delay,
        "SIGKILL came {:?} after SIGTERM, before the wait delay",
        killed.duration_since(termed)
    );
    assert!(
        took >= delay,
        "stopped {took:?} after cancel: before the delay"
    );
    assert!(took < delay + PROMPT, "stopped {took:?} after cancel");
    assert!(
        err.to_string().contains("killed after the wait delay"),
        "{err}"
    );
}

#[test]
fn a_child_that_exits_on_its_own_is_unaffected() {
    let (ctx, cancel) = Context::background().with_cancel();
    let status = Command::new("sh")
        .args(["-c", "exit 3"])
        .status_ctx(&ctx)
        .unwrap();
    assert_eq!(status.code(), Some(3));

    // Exited but not yet reaped when the context ends: the zombie's pid is
    // still ours, nothing is signalled, the status is its own.
    let mut child = Command::new("sh")
        .args(["-c", "exit 4"])
        .spawn_ctx(&ctx)
        .unwrap();
    let pid = child.id();
    assert!(eventually(Duration::from_secs(5), || proc_state(pid) == Some('Z')));
    cancel.cancel();
    assert_eq!(child.wait().unwrap().code(), Some(4));
    assert_eq!(child.wait().unwrap().code(), Some(4), "the status is kept");
}

#[test]
fn cancel_after_the_child_was_reaped_is_harmless() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("true").spawn_ctx(&ctx).unwrap();
    assert!(child.wait().unwrap().success());
    cancel.cancel(); // the stop callback was unregistered when it was reaped
    assert!(child.wait().unwrap().success());
    assert!(child.try_wait().unwrap().unwrap().success());
}

#[test]
fn a_grandchild_dies_in_process_group_mode() {
    let (ctx, cancel) = Context::background().with_cancel();
    let stop = Stop::new().process_group(true);
    // The shell prints its background child's pid, then waits for it.
    let (mut child, grandchild) = spawn_ready(&ctx, "sleep 30 & echo $!; wait", stop);
    let grandchild: u32 = grandchild.parse().expect("a pid");
    assert!(matches!(proc_state(grandchild), Some('S' | 'R')));

    cancel.cancel();
    let err = child.wait().unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    // The grandchild belongs to init (or a subreaper) now: it is dead once
    // gone or a zombie there.
    assert!(
        eventually(PROMPT, || matches!(
            proc_state(grandchild),
            None | Some('Z' | 'X')
        )),
        "grandchild {grandchild} still runs: {:?}",
        proc_state(grandchild)
    );
}

#[test]
fn group_members_that_outlive_the_leader_mid_stop_are_killed() {
    let (ctx, cancel) = Context::background().with_cancel();
    // A long wait delay: the leftover must not wait for it.
    let stop = Stop::new()
        .process_group(true)
        .wait_delay(Duration::from_secs(30));
    // The leader dies of SIGTERM; its child ignores it, and prints its pid
    // once it does (then becomes a sleep, which inherits the ignored signal).
    let script = r#"sh -c 'trap "" TERM; echo $$; exec sleep 30' & wait"#;
    let (mut child, leftover) = spawn_ready(&ctx, script, stop);
    let leftover: u32 = leftover.parse().expect("a pid");
    assert!(eventually(PROMPT, || matches!(
        proc_state(leftover),
        Some('S' | 'R')
    )));

    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    assert_eq!(
        err.status().unwrap().signal(),
        Some(15),
        "the leader took SIGTERM"
    );
    assert!(
        eventually(PROMPT, || matches!(
            proc_state(leftover),
            None | Some('Z' | 'X')
        )),
        "leftover {leftover} still runs: {:?}",
        proc_state(leftover)
    );
    assert!(cancelled.elapsed() < Duration::from_secs(5));
}

#[test]
fn output_is_captured_up_to_the_cancellation() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = Command::new("sh")
        .args(["-c", "echo one; echo two >&2; echo three; sleep 30"])
        .stop_with(Stop::new().process_group(true))
        .output_ctx(&ctx)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1) + PROMPT);
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
    let output = err.output().expect("output until the deadline");
    assert_eq!(output.stdout, b"one\nthree\n");
    assert_eq!(output.stderr, b"two\n");
    assert_eq!(output.status, err.status().unwrap());
    assert_eq!(output.status.signal(), Some(15));
}

#[test]
fn output_of_a_child_that_finishes_is_whole() {
    let out = Command::new("sh")
        .args(["-c", "seq 1 20000; echo done >&2; exit 5"])
        .output_ctx(&Context::background())
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 20000);
    assert_eq!(out.stderr, b"done\n");
}

#[test]
fn output_stops_reading_pipes_a_grandchild_holds_after_the_wait_delay() {
    let delay = Duration::from_millis(200);
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    // Not in group mode: the background sleep outlives the shell and keeps
    // stdout open.
    let err = Command::new("sh")
        .args(["-c", "echo before; sleep 3 & wait"])
        .stop_with(Stop::new().wait_delay(delay))
        .output_ctx(&ctx)
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1) + delay + PROMPT, "{took:?}");
    assert_eq!(err.output().unwrap().stdout, b"before\n");
}

#[test]
fn no_zombies_remain() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut pids = Vec::new();

    // Waited for, stopped, dropped while running, dropped after exiting.
    let mut waited = Command::new("true").spawn_ctx(&ctx).unwrap();
    pids.push(waited.id());
    waited.wait().unwrap();
    let running = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
    pids.push(running.id());
    drop(running);
    let exited = Command::new("true").spawn_ctx(&ctx).unwrap();
    let exited_pid = exited.id();
    pids.push(exited_pid);
    assert!(eventually(Duration::from_secs(5), || proc_state(
        exited_pid
    ) == Some('Z')));
    drop(exited);
    for _ in 0..5 {
        let child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
        pids.push(child.id());
    } // dropped at once
    let out = Command::new("echo").arg("x").output_ctx(&ctx).unwrap();
    assert_eq!(out.stdout, b"x\n");

    // The context still stops the dropped children, and they are reaped.
    cancel.cancel();
    assert!(
        eventually(Duration::from_secs(5), || pids
            .iter()
            .all(|&pid| !is_our_zombie(pid) && proc_state(pid).is_none())),
        "left: {:?}",
        pids.iter()
            .map(|&pid| (pid, proc_state(pid)))
            .filter(|(_, state)| state.is_some())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_done_context_starts_nothing() {
    let dir = std::env::temp_dir().join(format!("ctxkit-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("started");
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(std::io::Error::other("shutting down"));
    let err = Command::new("touch")
        .arg(&marker)
        .spawn_ctx(&ctx)
        .unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert_eq!(err.cause().unwrap().to_string(), "shutting down");
    assert_eq!(err.status(), None);
    assert!(err.to_string().contains("not started"), "{err}");
    let err = Command::new("touch")
        .arg(&marker)
        .output_ctx(&ctx)
        .unwrap_err();
    assert!(err.output().is_none());
    let (expired, _handle) = Context::background().with_timeout(Duration::ZERO);
    let err = Command::new("touch")
        .arg(&marker)
        .status_ctx(&expired)
        .unwrap_err();
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
    assert!(!marker.exists(), "the command ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_command_gives_the_spawn_error_unchanged() {
    let program = "/no/such/program-ctxkit";
    let std_err = Command::new(program).spawn().unwrap_err();
    let err = Command::new(program)
        .spawn_ctx(&Context::background())
        .unwrap_err();
    assert_eq!(err.context_error(), None);
    assert_eq!(err.cause().map(|c| c.to_string()), None);
    let io = err.io_error().unwrap();
    assert_eq!(io.kind(), std_err.kind());
    assert_eq!(io.raw_os_error(), std_err.raw_os_error());
    assert_eq!(err.to_string(), std_err.to_string());
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(io.raw_os_error(), std_err.raw_os_error());
}

#[test]
fn a_stopped_child_converts_into_an_io_error() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let err = Command::new("sleep")
        .arg("30")
        .status_ctx(&ctx)
        .unwrap_err();
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    let inner = io
        .get_ref()
        .unwrap()
        .downcast_ref::<ctxkit::process::Error>();
    assert_eq!(
        inner.unwrap().context_error(),
        Some(Error::DeadlineExceeded)
    );
}

#[test]
fn a_stop_function_runs_instead_of_the_signal() {
    let called = Arc::new(AtomicU32::new(0));
    let stop = Stop::new()
        .call({
            let called = called.clone();
            move |pid| {
                called.store(pid, Ordering::SeqCst);
                Ok(()) // asks nothing of the child: SIGKILL must follow
            }
        })
        .wait_delay(Duration::from_millis(100));
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("sleep")
        .arg("30")
        .stop_with(stop)
        .spawn_ctx(&ctx)
        .unwrap();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    assert_eq!(called.load(Ordering::SeqCst), child.id());
    assert_eq!(err.status().unwrap().signal(), Some(9));

    // A failing function means SIGKILL at once.
    let stop = Stop::new()
        .call(|_| Err(std::io::Error::other("no way to ask")))
        .wait_delay(Duration::from_secs(30));
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("sleep")
        .arg("30")
        .stop_with(stop)
        .spawn_ctx(&ctx)
        .unwrap();
    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    assert!(cancelled.elapsed() < PROMPT);
    assert_eq!(err.status().unwrap().signal(), Some(9));
}

#[test]
fn a_configured_signal_and_kill_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    let stop = Stop::new().signal(ctxkit::process::SIGINT);
    let mut child = Command::new("sleep")
        .arg("30")
        .stop_with(stop)
        .spawn_ctx(&ctx)
        .unwrap();
    cancel.cancel();
    assert_eq!(
        child.wait().unwrap_err().status().unwrap().signal(),
        Some(2)
    );

    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("sleep")
        .arg("30")
        .stop_with(Stop::new().kill())
        .spawn_ctx(&ctx)
        .unwrap();
    cancel.cancel();
    let err = child.wait().unwrap_err();
    assert_eq!(err.status().unwrap().signal(), Some(9));
    assert!(err.killed_at().is_some());
}

#[test]
fn kill_by_hand_is_not_a_context_stop() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    child.kill().unwrap(); // reaped: the pid is no longer ours, nothing is sent
    cancel.cancel();
    assert_eq!(child.wait().unwrap(), status);

    // Group mode: the kill reaches the grandchild too.
    let (mut child, grandchild) = spawn_ready(
        &Context::background(),
        "sleep 30 & echo $!; wait",
        Stop::new().process_group(true),
    );
    let grandchild: u32 = grandchild.parse().unwrap();
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert!(eventually(PROMPT, || matches!(
        proc_state(grandchild),
        None | Some('Z' | 'X')
    )));
}

#[tokio::test]
async fn tokio_start_kill() {
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .spawn_ctx(&Context::background())
        .unwrap();
    child.start_kill().unwrap();
    assert_eq!(child.wait().await.unwrap().signal(), Some(9));
    child.start_kill().unwrap();
    assert_eq!(child.id(), None);
}

#[tokio::test]
async fn tokio_sleep_stops_within_500ms_of_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .spawn_ctx(&ctx)
        .unwrap();
    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().await.unwrap_err();
    assert!(cancelled.elapsed() < PROMPT);
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert_eq!(err.status().unwrap().signal(), Some(15));
}

#[tokio::test]
async fn tokio_term_ignoring_child_is_killed_after_the_wait_delay() {
    let delay = Duration::from_millis(300);
    let (ctx, cancel) = Context::background().with_cancel();
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", r#"trap "" TERM; echo ready; sleep 30"#])
        .stdout(Stdio::piped())
        .stop_with(Stop::new().wait_delay(delay).process_group(true))
        .spawn_ctx(&ctx)
        .unwrap();
    let mut ready = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(child.stdout.as_mut().unwrap(), &mut ready)
        .await
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    let cancelled = Instant::now();
    cancel.cancel();
    let err = child.wait().await.unwrap_err();
    let took = cancelled.elapsed();
    assert!(took >= delay && took < delay + PROMPT, "{took:?}");
    assert_eq!(err.status().unwrap().signal(), Some(9));
}

#[tokio::test]
async fn tokio_output_and_status() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let err = tokio::process::Command::new("sh")
        .args(["-c", "echo one; echo two >&2; sleep 30"])
        .stop_with(Stop::new().process_group(true))
        .output_ctx(&ctx)
        .await
        .unwrap_err();
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
    let output = err.output().unwrap();
    assert_eq!(
        (&output.stdout[..], &output.stderr[..]),
        (&b"one\n"[..], &b"two\n"[..])
    );

    let status = tokio::process::Command::new("sh")
        .args(["-c", "exit 6"])
        .status_ctx(&Context::background())
        .await;
    assert_eq!(status.unwrap().code(), Some(6));
    let err = tokio::process::Command::new("/no/such/program-ctxkit")
        .status_ctx(&Context::background())
        .await
        .unwrap_err();
    assert_eq!(err.io_error().unwrap().kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn tokio_dropped_child_is_still_stopped_and_reaped() {
    let (ctx, cancel) = Context::background().with_cancel();
    let child = tokio::process::Command::new("sleep")
        .arg("30")
        .spawn_ctx(&ctx)
        .unwrap();
    let pid = child.id().unwrap();
    drop(child);
    cancel.cancel();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while proc_state(pid).is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(gone.await.is_ok(), "pid {pid}: {:?}", proc_state(pid));
}
