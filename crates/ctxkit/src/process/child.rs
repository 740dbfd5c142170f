//! [`Child`]: a running child process that its context stops.

use super::error::{Error, Stopped};
use super::reaper;
use super::stop::{First, Stop};
use super::sys;
use crate::sync::lock_std as lock;
use crate::{AfterFunc, CancelHandle, Context};
use std::io;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

/// A child process started by [`spawn_ctx`](super::CommandExt::spawn_ctx):
/// like [`std::process::Child`], and stopped when its context ends.
///
/// [`wait`](Child::wait) reports a child the context stopped as an
/// [`Error`] (with its status). Dropping a `Child` does not kill the
/// process, as with std; but its context still stops it, and it is reaped in
/// the background, so it never lingers as a zombie.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::CommandExt;
/// use ctxkit::Context;
/// use std::io::Read;
/// use std::process::{Command, Stdio};
///
/// let mut child = Command::new("echo").arg("hello")
///     .stdout(Stdio::piped())
///     .spawn_ctx(&Context::background())
///     .unwrap();
/// let mut out = String::new();
/// child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
/// assert!(child.wait().unwrap().success());
/// assert_eq!(out, "hello\n");
/// # }
/// ```
#[derive(Debug)]
pub struct Child {
    shared: Arc<Shared>,
    /// The child's stdin, if piped. [`wait`](Child::wait) closes it first.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if piped.
    pub stderr: Option<ChildStderr>,
}

/// What the child, its waiter, the stop callbacks and the reaper share.
#[derive(Debug)]
pub(super) struct Shared {
    pid: u32,
    stop: Stop,
    /// Signals are sent and the child is reaped under this lock only: so no
    /// signal can follow the reaping, which frees the pid for reuse.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    child: std::process::Child,
    /// Set once the child is reaped.
    status: Option<ExitStatus>,
    /// Set when the context's stop reached the child while it ran.
    stopped: Option<Stopped>,
    /// The context's `after_func` that starts the stop.
    watch: Option<AfterFunc>,
    /// The second step, armed by the first for the end of the wait delay.
    kill_timer: Option<(AfterFunc, CancelHandle)>,
}

impl Child {
    pub(super) fn spawn(command: &mut Command, ctx: &Context, stop: &Stop) -> Result<Child, Error> {
        if ctx.is_done() {
            return Err(Error::stopped(Stopped::of(ctx)));
        }
        #[cfg(unix)]
        if stop.in_group() {
            std::os::unix::process::CommandExt::process_group(command, 0);
        }
        let mut child = command.spawn().map_err(Error::io)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let shared = Arc::new(Shared {
            pid: child.id(),
            stop: stop.clone(),
            state: Mutex::new(State {
                child,
                status: None,
                stopped: None,
                watch: None,
                kill_timer: None,
            }),
        });
        let watch = ctx.after_func({
            let (shared, ctx) = (Arc::downgrade(&shared), ctx.clone());
            move || {
                if let Some(shared) = shared.upgrade() {
                    shared.begin_stop(&ctx);
                }
            }
        });
        let mut state = shared.lock();
        // Where the stop callback reaps (no waitid), it may have reaped
        // already: nothing is left to watch.
        if state.status.is_some() {
            drop(state);
            watch.stop();
        } else {
            state.watch = Some(watch);
            drop(state);
        }
        Ok(Child {
            shared,
            stdin,
            stdout,
            stderr,
        })
    }

    /// The child's process id.
    ///
    /// Once the child is reaped, the id may belong to another process: do
    /// not signal it yourself after [`wait`](Child::wait).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let mut child = Command::new("true").spawn_ctx(&Context::background()).unwrap();
    /// assert!(child.id() > 0);
    /// child.wait().unwrap();
    /// # }
    /// ```
    pub fn id(&self) -> u32 {
        self.shared.pid
    }

    /// Waits for the child to exit and reaps it, closing its stdin first.
    ///
    /// `Ok(status)` if it exited on its own (even if the context ended
    /// afterwards); an [`Error`] with the context's error and the status if
    /// the context stopped it.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let mut child = Command::new("sh").args(["-c", "exit 7"])
    ///     .spawn_ctx(&Context::background())
    ///     .unwrap();
    /// assert_eq!(child.wait().unwrap().code(), Some(7));
    /// assert_eq!(child.wait().unwrap().code(), Some(7), "cached");
    /// # }
    /// ```
    pub fn wait(&mut self) -> Result<ExitStatus, Error> {
        drop(self.stdin.take());
        self.shared.wait()
    }

    /// Kills the child now (SIGKILL, to its group in group mode; off Unix,
    /// `Child::kill`), without waiting for it: then [`wait`](Child::wait)
    /// reaps it. Unlike killing by pid yourself, this never signals a
    /// reused pid: a child that already exited is left alone (`Ok`).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::Command;
    ///
    /// let mut child = Command::new("sleep").arg("30").spawn_ctx(&Context::background()).unwrap();
    /// child.kill().unwrap();
    /// assert_eq!(child.wait().unwrap().signal(), Some(9)); // not a context stop
    /// child.kill().unwrap(); // reaped: nothing to do
    /// # }
    /// ```
    pub fn kill(&mut self) -> io::Result<()> {
        let mut state = self.shared.lock();
        if self.shared.has_exited(&mut state) {
            return Ok(());
        }
        #[cfg(unix)]
        return sys::signal(
            self.shared.pid,
            self.shared.stop.in_group(),
            super::stop::SIGKILL,
        );
        #[cfg(not(unix))]
        return state.child.kill();
    }

    /// Reaps the child if it has exited, without blocking: `Ok(None)` while
    /// it runs. Results as for [`wait`](Child::wait).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
    /// assert!(child.try_wait().unwrap().is_none());
    /// cancel.cancel();
    /// assert!(child.wait().is_err());
    /// # }
    /// ```
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        let mut state = self.shared.lock();
        match self.shared.reap(&mut state) {
            Ok(true) => Shared::outcome(&state).map(Some),
            Ok(false) => Ok(None),
            Err(err) => Err(Error::io(err)),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let reaped = matches!(self.shared.reap(&mut state), Ok(true) | Err(_));
        drop(state);
        if !reaped {
            reaper::adopt(self.shared.clone());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Blocks until the child is reaped, then reports how it ended.
    fn wait(&self) -> Result<ExitStatus, Error> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            // Learn of the exit without reaping, outside the lock (signals
            // stay possible meanwhile); then reap under it.
            if self.lock().status.is_none() {
                if let Err(err) = sys::exited(self.pid, true) {
                    let mut state = self.lock();
                    return match self.reap(&mut state) {
                        Ok(true) => Shared::outcome(&state),
                        _ => Err(Error::io(err)),
                    };
                }
            }
            let mut state = self.lock();
            loop {
                match self.reap(&mut state) {
                    Ok(true) => return Shared::outcome(&state),
                    Ok(false) => {
                        // Unreachable in practice: waitid said it exited.
                        drop(state);
                        std::thread::yield_now();
                        state = self.lock();
                    }
                    Err(err) => return Err(Error::io(err)),
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        {
            use std::time::Duration;
            let mut pause = Duration::from_millis(1);
            loop {
                let mut state = self.lock();
                match self.reap(&mut state) {
                    Ok(true) => return Shared::outcome(&state),
                    Ok(false) => drop(state),
                    Err(err) => return Err(Error::io(err)),
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }

    /// Reaps the child if it has exited: true once it is reaped. Ends the
    /// stop machinery, whose callbacks find the status and do nothing.
    fn reap(&self, state: &mut State) -> io::Result<bool> {
        if state.status.is_some() {
            return Ok(true);
        }
        self.kill_leftovers(state);
        let Some(status) = state.child.try_wait()? else {
            return Ok(false);
        };
        state.status = Some(status);
        if let Some(stopped) = &mut state.stopped {
            stopped.status = Some(status);
        }
        if let Some(watch) = state.watch.take() {
            watch.stop();
        }
        if let Some((timer, handle)) = state.kill_timer.take() {
            timer.stop();
            drop(handle);
        }
        Ok(true)
    }

    /// In group mode, a leader that exits while a stop is under way takes
    /// its group with it: SIGKILL, while the leader's zombie still reserves
    /// the group id. (Where only `try_wait` exists, the exit cannot be seen
    /// before the reaping, and leftovers are not signalled.)
    fn kill_leftovers(&self, state: &State) {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        if self.stop.in_group()
            && state.stopped.is_some()
            && sys::exited(self.pid, false).unwrap_or(false)
        {
            let _ = sys::signal(self.pid, true, super::stop::SIGKILL);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        let _ = state;
    }

    /// Whether the child has exited, reaped or not.
    fn has_exited(&self, state: &mut State) -> bool {
        if state.status.is_some() {
            return true;
        }
        // Where waitid(WNOWAIT) exists, a waiter may be blocked in it: the
        // pid must stay unreaped (and ours) until that waiter reaps it.
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        return sys::exited(self.pid, false).unwrap_or(true);
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        return self.reap(state).unwrap_or(true);
    }

    fn outcome(state: &State) -> Result<ExitStatus, Error> {
        let status = state.status.expect("reaped");
        match &state.stopped {
            Some(stopped) => Err(Error::stopped(stopped.clone())),
            None => Ok(status),
        }
    }

    /// The first step, on a callback thread once the context is done.
    fn begin_stop(self: &Arc<Self>, ctx: &Context) {
        let mut state = self.lock();
        if state.stopped.is_some() || self.has_exited(&mut state) {
            // It exited on its own: the context did not stop it.
            return;
        }
        let mut stopped = Stopped::of(ctx);
        stopped.at = Some(Instant::now());
        state.stopped = Some(stopped);
        let first = match self.stop.first() {
            #[cfg(unix)]
            First::Signal(signal) => sys::signal(self.pid, self.stop.in_group(), *signal),
            First::Kill => return self.kill(&mut state),
            First::Call(f) => f(self.pid),
        };
        let delay = self.stop.delay();
        if first.is_err() || delay.is_zero() {
            return self.kill(&mut state);
        }
        let (timer_ctx, handle) = Context::background().with_timeout(delay);
        let weak: Weak<Shared> = Arc::downgrade(self);
        let timer = timer_ctx.after_func(move || {
            if let Some(shared) = weak.upgrade() {
                let mut state = shared.lock();
                if !shared.has_exited(&mut state) {
                    shared.kill(&mut state);
                }
            }
        });
        state.kill_timer = Some((timer, handle));
    }

    /// The second step: SIGKILL (off Unix, `Child::kill`). The caller holds
    /// the lock and has checked that the child is unreaped.
    fn kill(&self, state: &mut State) {
        #[cfg(unix)]
        let _ = sys::signal(self.pid, self.stop.in_group(), super::stop::SIGKILL);
        #[cfg(not(unix))]
        let _ = state.child.kill();
        if let Some(stopped) = &mut state.stopped {
            stopped.killed_at.get_or_insert_with(Instant::now);
        }
    }

    /// For the reaper: reaps the child if it has exited; true once reaped.
    pub(super) fn try_reap(&self) -> bool {
        let mut state = self.lock();
        self.reap(&mut state).unwrap_or(true)
    }
}
