//! The threads that run `after_func` callbacks.
//!
//! Callbacks must run off the cancelling thread (`cancel()` never waits for
//! them) and independently of each other (a slow one does not delay the
//! rest). An elastic pool gives both without a thread per context: a job goes
//! to an idle thread if there is one, else to a new thread; a thread idle for
//! a few seconds exits. No callback means no thread.

use crate::sync::lock_std as lock;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle callback thread waits for work before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for work. Invariant: if `idle >= queue.len()`, every
    /// queued job has a waiting thread that will take it.
    idle: usize,
}

#[cfg_attr(loom, allow(dead_code))]
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            idle: 0,
        }),
        work: Condvar::new(),
    })
}

/// Runs `job` soon on a callback thread. A panic in `job` is caught there and
/// goes no further; the thread carries on.
#[cfg(not(loom))]
pub(crate) fn spawn(job: Job) {
    let pool = pool();
    let mut state = lock(&pool.state);
    state.queue.push_back(job);
    if state.idle >= state.queue.len() {
        drop(state);
        pool.work.notify_one();
        return;
    }
    drop(state);
    let spawned = std::thread::Builder::new()
        .name("ctxkit-callback".into())
        .spawn(work);
    if spawned.is_err() {
        // No thread to be had: run what is queued here rather than lose it.
        // The canceller is delayed, but every callback still runs.
        while let Some(job) = lock(&pool.state).queue.pop_front() {
            run(job);
        }
    }
}

/// Under loom every callback gets a model thread of its own, so that a model
/// explores the callback's run interleaved with the rest; the pool's real
/// threads and timed condition variable cannot run inside a model.
#[cfg(loom)]
pub(crate) fn spawn(job: Job) {
    loom::thread::spawn(move || run(job));
}

#[cfg_attr(loom, allow(dead_code))]
fn work() {
    let pool = pool();
    let mut state = lock(&pool.state);
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            run(job);
            state = lock(&pool.state);
            continue;
        }
        state.idle += 1;
        let (next, timeout) = pool
            .work
            .wait_timeout(state, IDLE_TIMEOUT)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.queue.is_empty() {
            return;
        }
    }
}

fn run(job: Job) {
    // The panic has already been reported by the panic hook; containing it
    // here is what keeps other callbacks and the pool working.
    let _ = catch_unwind(AssertUnwindSafe(job));
}
