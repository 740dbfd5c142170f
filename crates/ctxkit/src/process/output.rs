//! `output_ctx`: the child's stdout and stderr, read while it runs.
//!
//! Two reader threads fill shared buffers, so that whatever was read before
//! the context stopped the child is there to report. After the child is
//! reaped, the pipes normally close at once; if a grandchild holds them
//! open, reading goes on until they close or until the wait delay has passed
//! since the context ended. Then the readers are told to stop: a reader
//! blocked in `read` leaves when the pipe next yields (or closes), keeping
//! nothing.

use super::child::Child;
use super::error::Error;
use crate::sync::lock_std as lock;
use crate::Context;
use std::io::Read;
use std::process::{ExitStatus, Output};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Pipes {
    state: Mutex<Captured>,
    changed: Condvar,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Readers still running.
    open: usize,
    /// Set when the caller stops waiting: readers drop what they read.
    abandoned: bool,
}

pub(super) fn collect(
    ctx: &Context,
    mut child: Child,
    wait_delay: Duration,
) -> Result<Output, Error> {
    let pipes = Arc::new(Pipes::default());
    if let Some(stdout) = child.stdout.take() {
        start_reader(&pipes, stdout, |c| &mut c.stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        start_reader(&pipes, stderr, |c| &mut c.stderr);
    }
    let result = child.wait();
    let (stdout, stderr) = drain(ctx, &pipes, wait_delay);
    with_output(result, stdout, stderr)
}

/// The output of a child reaped with `result`: the `Output`, or the error
/// carrying it when the context stopped the child.
pub(super) fn with_output(
    result: Result<ExitStatus, Error>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> Result<Output, Error> {
    match result {
        Ok(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Err(err) => match err.status() {
            Some(status) => Err(err.with_output(Output {
                status,
                stdout,
                stderr,
            })),
            None => Err(err),
        },
    }
}

fn start_reader<R>(pipes: &Arc<Pipes>, mut pipe: R, buffer: fn(&mut Captured) -> &mut Vec<u8>)
where
    R: Read + Send + 'static,
{
    lock(&pipes.state).open += 1;
    let shared = pipes.clone();
    let read = move || {
        let mut chunk = [0u8; 8192];
        loop {
            let n = match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut state = lock(&shared.state);
            if state.abandoned {
                break;
            }
            buffer(&mut state).extend_from_slice(&chunk[..n]);
        }
        lock(&shared.state).open -= 1;
        shared.changed.notify_all();
    };
    let spawned = std::thread::Builder::new()
        .name("ctxkit-output".into())
        .stack_size(64 * 1024)
        .spawn(read);
    if spawned.is_err() {
        // The pipe was moved into the lost closure and is closed: the child
        // sees a broken pipe, as it would if we had stopped reading.
        lock(&pipes.state).open -= 1;
    }
}

/// Waits for the readers until the pipes close, or until `wait_delay`
/// after the context ended; returns what they read.
fn drain(ctx: &Context, pipes: &Arc<Pipes>, wait_delay: Duration) -> (Vec<u8>, Vec<u8>) {
    let wake = ctx.after_func({
        let pipes = pipes.clone();
        move || {
            // Taking the lock orders this wake-up after the waiter's check.
            drop(lock(&pipes.state));
            pipes.changed.notify_all();
        }
    });
    let mut give_up: Option<Instant> = None;
    let mut state = lock(&pipes.state);
    while state.open > 0 {
        if give_up.is_none() && ctx.is_done() {
            give_up = Some(Instant::now() + wait_delay);
        }
        state = match give_up {
            None => pipes.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let Some(left) = at.checked_duration_since(Instant::now()) else {
                    break;
                };
                let waited = pipes.changed.wait_timeout(state, left);
                waited.unwrap_or_else(|e| e.into_inner()).0
            }
        };
    }
    state.abandoned = true;
    let out = (
        std::mem::take(&mut state.stdout),
        std::mem::take(&mut state.stderr),
    );
    drop(state);
    wake.stop();
    out
}
