//! The tokio form: [`AsyncCommandExt`] for `tokio::process::Command`.
//!
//! The same stop steps as the thread form, driven by the future that waits
//! for the child: it selects on the child's exit and the context's end,
//! signals, then waits for the exit or the end of the wait delay (tokio's
//! timer), and kills. No task or thread of its own while someone awaits
//! [`AsyncChild::wait`]. The runtime needs its time and process drivers
//! (`enable_all`).
//!
//! The pid is signalled only while tokio has not reaped the child: the
//! waiting future owns the `tokio::process::Child`, checks `try_wait`
//! first, and tokio reaps only inside those calls. One difference from the
//! thread form follows: tokio reaps as it reports the exit, so in group
//! mode a leader that exits mid-stop cannot take its leftover group members
//! with it; they got the first signal, and no SIGKILL.

use super::error::{Error, Stopped};
use super::stop::{First, Stop};
use crate::Context;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Instant;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

/// Context-aware `spawn`, `output` and `status` for
/// `tokio::process::Command` (feature `tokio`): the thread form
/// [`CommandExt`](super::CommandExt), in async.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::AsyncCommandExt;
/// use ctxkit::{Context, Error};
/// use std::time::Duration;
/// use tokio::process::Command;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
/// let err = Command::new("sleep").arg("30").status_ctx(&ctx).await.unwrap_err();
/// assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
/// # }
/// # }
/// ```
pub trait AsyncCommandExt {
    /// Starts the command under `ctx`: see
    /// [`CommandExt::spawn_ctx`](super::CommandExt::spawn_ctx). Must be
    /// called within a tokio runtime.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut child = Command::new("true").spawn_ctx(&Context::background()).unwrap();
    /// assert!(child.wait().await.unwrap().success());
    /// # }
    /// # }
    /// ```
    fn spawn_ctx(&mut self, ctx: &Context) -> Result<AsyncChild, Error>;

    /// Runs the command under `ctx` and collects its output: see
    /// [`CommandExt::output_ctx`](super::CommandExt::output_ctx).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = Command::new("echo").arg("hi").output_ctx(&Context::background()).await;
    /// assert_eq!(out.unwrap().stdout, b"hi\n");
    /// # }
    /// # }
    /// ```
    fn output_ctx<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Output, Error>> + Send + 'a;

    /// Runs the command under `ctx` and waits for it: see
    /// [`CommandExt::status_ctx`](super::CommandExt::status_ctx).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let status = Command::new("sh").args(["-c", "exit 2"]).status_ctx(&Context::background()).await;
    /// assert_eq!(status.unwrap().code(), Some(2));
    /// # }
    /// # }
    /// ```
    fn status_ctx<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<ExitStatus, Error>> + Send + 'a;

    /// The same three methods, stopping the child as `stop` says.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{AsyncCommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::time::Duration;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = Command::new("sleep").arg("30")
    ///     .stop_with(Stop::new().kill())
    ///     .status_ctx(&ctx)
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.killed_at().is_some());
    /// # }
    /// # }
    /// ```
    fn stop_with(&mut self, stop: Stop) -> AsyncWithStop<'_>;
}

impl AsyncCommandExt for Command {
    fn spawn_ctx(&mut self, ctx: &Context) -> Result<AsyncChild, Error> {
        self.stop_with(Stop::default()).spawn_ctx(ctx)
    }

    async fn output_ctx<'a>(&'a mut self, ctx: &'a Context) -> Result<Output, Error> {
        self.stop_with(Stop::default()).output_ctx(ctx).await
    }

    async fn status_ctx<'a>(&'a mut self, ctx: &'a Context) -> Result<ExitStatus, Error> {
        self.stop_with(Stop::default()).status_ctx(ctx).await
    }

    fn stop_with(&mut self, stop: Stop) -> AsyncWithStop<'_> {
        AsyncWithStop {
            command: self,
            stop,
        }
    }
}

/// A `tokio::process::Command` with the [`Stop`] to apply when its context
/// ends; made by [`AsyncCommandExt::stop_with`]. Its methods are those of
/// [`AsyncCommandExt`].
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::{AsyncCommandExt, Stop};
/// use ctxkit::Context;
/// use std::time::Duration;
/// use tokio::process::Command;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut command = Command::new("true");
/// let mut run = command.stop_with(Stop::new().wait_delay(Duration::from_secs(2)));
/// assert!(run.status_ctx(&Context::background()).await.unwrap().success());
/// # }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncWithStop<'a> {
    command: &'a mut Command,
    stop: Stop,
}

impl AsyncWithStop<'_> {
    /// [`AsyncCommandExt::spawn_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{AsyncCommandExt, Stop};
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut child = Command::new("true")
    ///     .stop_with(Stop::new().process_group(true))
    ///     .spawn_ctx(&Context::background())
    ///     .unwrap();
    /// assert!(child.wait().await.unwrap().success());
    /// # }
    /// # }
    /// ```
    pub fn spawn_ctx(&mut self, ctx: &Context) -> Result<AsyncChild, Error> {
        if ctx.is_done() {
            return Err(Error::stopped(Stopped::of(ctx)));
        }
        #[cfg(unix)]
        if self.stop.in_group() {
            self.command.process_group(0);
        }
        let mut child = self.command.spawn().map_err(Error::io)?;
        Ok(AsyncChild {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child: Some(child),
            ctx: ctx.clone(),
            stop: self.stop.clone(),
            stopped: None,
            status: None,
        })
    }

    /// [`AsyncCommandExt::output_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{AsyncCommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::time::Duration;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    /// let err = Command::new("sh").args(["-c", "echo started; exec sleep 30"])
    ///     .stop_with(Stop::new())
    ///     .output_ctx(&ctx)
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.output().unwrap().stdout, b"started\n");
    /// # }
    /// # }
    /// ```
    pub async fn output_ctx(&mut self, ctx: &Context) -> Result<Output, Error> {
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn_ctx(ctx)?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let result = {
            let reading = pin!(read_both(
                child.stdout.take(),
                child.stderr.take(),
                &mut stdout,
                &mut stderr
            ));
            collect(ctx, &mut child, reading, self.stop.delay()).await
        };
        super::output::with_output(result, stdout, stderr)
    }

    /// [`AsyncCommandExt::status_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{AsyncCommandExt, Stop};
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let status = Command::new("true").stop_with(Stop::new()).status_ctx(&Context::background()).await;
    /// assert!(status.unwrap().success());
    /// # }
    /// # }
    /// ```
    pub async fn status_ctx(&mut self, ctx: &Context) -> Result<ExitStatus, Error> {
        self.spawn_ctx(ctx)?.wait().await
    }
}

/// Waits for `child` while `reading` drains its pipes; once it is reaped,
/// reading goes on until the pipes close or until the wait delay after the
/// context ended.
async fn collect(
    ctx: &Context,
    child: &mut AsyncChild,
    mut reading: Pin<&mut impl Future<Output = ()>>,
    wait_delay: std::time::Duration,
) -> Result<ExitStatus, Error> {
    let mut read_all = false;
    tokio::select! {
        _ = child.wait() => {}
        () = &mut reading => read_all = true,
    }
    let result = child.wait().await;
    if !read_all {
        let give_up = async {
            ctx.done().await;
            tokio::time::sleep(wait_delay).await;
        };
        tokio::select! {
            () = reading => {}
            () = give_up => {}
        }
    }
    result
}

async fn read_both(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) {
    tokio::join!(read_into(stdout, out), read_into(stderr, err));
}

/// Appends what `pipe` yields to `buf` chunk by chunk, so that a reading
/// abandoned half-way keeps what it had. (No `io-util` feature needed.)
async fn read_into<R: AsyncRead + Unpin>(pipe: Option<R>, buf: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        let read = poll_fn(|cx| {
            let mut filled = ReadBuf::new(&mut chunk);
            Pin::new(&mut pipe)
                .poll_read(cx, &mut filled)
                .map_ok(|()| filled.filled().len())
        })
        .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A child process started by [`AsyncCommandExt::spawn_ctx`], stopped when
/// its context ends: the tokio form of [`Child`](super::Child).
///
/// Dropping it before it is reaped leaves a task on the current runtime
/// that goes on stopping (when the context ends) and reaps it. Without a
/// runtime, tokio's own orphan reaping takes over and the context no longer
/// stops it.
///
/// In group mode, tokio reaps a leader as it reports its exit: a leader that
/// exits mid-stop cannot take leftover group members with it (they got the
/// first signal, and no SIGKILL), unlike the thread form.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::AsyncCommandExt;
/// use ctxkit::{Context, Error};
/// use tokio::process::Command;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
/// cancel.cancel();
/// assert_eq!(child.wait().await.unwrap_err().context_error(), Some(Error::Canceled));
/// # }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncChild {
    /// `None` only once handed to the reaping task on drop.
    child: Option<tokio::process::Child>,
    ctx: Context,
    stop: Stop,
    stopped: Option<Stopped>,
    status: Option<ExitStatus>,
    /// The child's stdin, if piped. [`wait`](AsyncChild::wait) closes it
    /// first.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if piped.
    pub stderr: Option<ChildStderr>,
}

impl AsyncChild {
    /// The child's process id; `None` once it is reaped.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut child = Command::new("true").spawn_ctx(&Context::background()).unwrap();
    /// assert!(child.id().is_some());
    /// child.wait().await.unwrap();
    /// assert_eq!(child.id(), None);
    /// # }
    /// # }
    /// ```
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Waits for the child to exit and reaps it, closing its stdin first;
    /// stops it when the context ends. Results as for
    /// [`Child::wait`](super::Child::wait).
    ///
    /// Cancel-safe: dropped half-way, the next call carries on (the stop
    /// steps already taken stay taken).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut child = Command::new("sh").args(["-c", "exit 4"])
    ///     .spawn_ctx(&Context::background())
    ///     .unwrap();
    /// assert_eq!(child.wait().await.unwrap().code(), Some(4));
    /// # }
    /// # }
    /// ```
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return self.outcome(status);
        }
        let child = self.child.as_mut().expect("present until dropped");
        if self.stopped.is_none() {
            tokio::select! {
                biased;
                status = child.wait() => return self.reaped(status),
                _ = self.ctx.done() => {}
            }
            if let Some(status) = child.try_wait().map_err(Error::io)? {
                return self.reaped(Ok(status)); // exited on its own
            }
            self.begin_stop();
        }
        let child = self.child.as_mut().expect("present until dropped");
        let stopped = self.stopped.as_mut().expect("stop begun");
        if stopped.killed_at.is_none() {
            let at = stopped.at.expect("stop begun") + self.stop.delay();
            if let Ok(status) = tokio::time::timeout_at(at.into(), child.wait()).await {
                return self.reaped(status);
            }
            if let Some(status) = child.try_wait().map_err(Error::io)? {
                return self.reaped(Ok(status));
            }
            kill(child, &self.stop, stopped);
        }
        let status = child.wait().await;
        self.reaped(status)
    }

    /// Starts killing the child (SIGKILL, to its group in group mode; off
    /// Unix, tokio's `start_kill`), without waiting for it: then
    /// [`wait`](AsyncChild::wait) reaps it. A child that already exited is
    /// left alone (`Ok`): no reused pid is ever signalled.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::AsyncCommandExt;
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use tokio::process::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut child = Command::new("sleep").arg("30").spawn_ctx(&Context::background()).unwrap();
    /// child.start_kill().unwrap();
    /// assert_eq!(child.wait().await.unwrap().signal(), Some(9));
    /// child.start_kill().unwrap();
    /// # }
    /// # }
    /// ```
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if self.status.is_some() || child.try_wait()?.is_some() {
            return Ok(());
        }
        #[cfg(unix)]
        if let Some(pid) = child.id() {
            return super::sys::signal(pid, self.stop.in_group(), super::stop::SIGKILL);
        }
        child.start_kill()
    }

    /// The first step; the child is unreaped (its `try_wait` said so).
    fn begin_stop(&mut self) {
        let child = self.child.as_mut().expect("present until dropped");
        let mut stopped = Stopped::of(&self.ctx);
        stopped.at = Some(Instant::now());
        let pid = child.id().expect("unreaped");
        let first = match self.stop.first() {
            #[cfg(unix)]
            First::Signal(signal) => super::sys::signal(pid, self.stop.in_group(), *signal),
            First::Kill => Err(std::io::Error::other("kill at once")),
            First::Call(f) => f(pid),
        };
        if first.is_err() || self.stop.delay().is_zero() {
            kill(child, &self.stop, &mut stopped);
        }
        self.stopped = Some(stopped);
    }

    fn reaped(&mut self, status: std::io::Result<ExitStatus>) -> Result<ExitStatus, Error> {
        let status = status.map_err(Error::io)?;
        self.status = Some(status);
        if let Some(stopped) = &mut self.stopped {
            stopped.status = Some(status);
        }
        self.outcome(status)
    }

    fn outcome(&self, status: ExitStatus) -> Result<ExitStatus, Error> {
        match &self.stopped {
            Some(stopped) => Err(Error::stopped(stopped.clone())),
            None => Ok(status),
        }
    }
}

/// The second step, on an unreaped child.
fn kill(child: &mut tokio::process::Child, stop: &Stop, stopped: &mut Stopped) {
    #[cfg(unix)]
    match child.id() {
        Some(pid) => drop(super::sys::signal(
            pid,
            stop.in_group(),
            super::stop::SIGKILL,
        )),
        None => drop(child.start_kill()),
    }
    #[cfg(not(unix))]
    {
        let _ = stop;
        let _ = child.start_kill();
    }
    stopped.killed_at.get_or_insert_with(Instant::now);
}

impl Drop for AsyncChild {
    fn drop(&mut self) {
        if self.status.is_some() || self.child.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut orphan = AsyncChild {
            child: self.child.take(),
            ctx: self.ctx.clone(),
            stop: self.stop.clone(),
            stopped: self.stopped.take(),
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        runtime.spawn(async move {
            let _ = orphan.wait().await;
            // Reaped, or an error that a new task would only repeat.
            drop(orphan.child.take());
        });
    }
}
