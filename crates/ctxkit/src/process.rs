//! Child processes that stop with their context: Go's `exec.CommandContext`,
//! with `Cmd.Cancel` and `Cmd.WaitDelay`.
//!
//! [`CommandExt`] adds `spawn_ctx`, `output_ctx` and `status_ctx` to
//! [`std::process::Command`]; with feature `tokio`, `AsyncCommandExt` does the
//! same for `tokio::process::Command`. When the context ends while the child
//! runs:
//!
//! 1. the child gets SIGTERM, or the signal given to [`Stop::signal`], or the
//!    function given to [`Stop::call`] runs (Go's `Cmd.Cancel`);
//! 2. if it is still running after [`Stop::wait_delay`] (5 s unless set), it
//!    gets SIGKILL (Go's `Cmd.WaitDelay`);
//! 3. with [`Stop::process_group`], the child leads a new process group and
//!    both signals go to the whole group, so grandchildren stop too.
//!
//! The result then says so: an [`Error`] whose
//! [`context_error`](Error::context_error) and [`cause`](Error::cause) are
//! the context's, with the [`status`](Error::status) the child was reaped
//! with. A child that exits on its own is reported as usual, even if the
//! context ends afterwards. `Error` converts into [`std::io::Error`].
//!
//! Two differences from Go: the default is a gentle stop (Go kills at once
//! and has no wait delay; [`Stop::kill`] does that), and a child the context
//! stopped is always reported as stopped, with its status (Go returns the
//! context's error only if the stopped command still exits successfully,
//! and its exit error otherwise).
//!
//! ```
//! # #[cfg(unix)] {
//! use ctxkit::process::CommandExt;
//! use ctxkit::{Context, Error};
//! use std::process::Command;
//! use std::time::Duration;
//!
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
//! let err = Command::new("sleep").arg("30").status_ctx(&ctx).unwrap_err();
//! assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
//! assert!(!err.status().unwrap().success()); // reaped: it died of SIGTERM
//!
//! // A child that exits on its own is reported as usual.
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(60));
//! let status = Command::new("sh").args(["-c", "exit 3"]).status_ctx(&ctx).unwrap();
//! assert_eq!(status.code(), Some(3));
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **A done context starts nothing**: `spawn_ctx` returns its error and
//!   the command never runs.
//! - **Spawn errors are unchanged**: a missing program gives the very
//!   `io::Error` that `Command::spawn` gave.
//! - **No zombies.** Every child is reaped: by [`Child::wait`] (and the
//!   `_ctx` methods, which wait), or, once a [`Child`] is dropped while its
//!   process runs, by a background reaper (which keeps stopping it if the
//!   context ends).
//! - **No signal ever reaches a stranger.** A pid is signalled only while
//!   the child is unreaped: between its exit and its reaping the pid belongs
//!   to a zombie, which ignores signals, and reaping happens under the same
//!   lock as signalling. So a reused pid is never signalled. In group mode
//!   the group id is the leader's pid, so the same holds; a consequence is
//!   that grandchildren that outlive the reaped leader are no longer
//!   signalled. If the leader exits while a stop is under way, the group
//!   gets SIGKILL before the leader is reaped (thread form, where
//!   `waitid(WNOWAIT)` exists).
//!
//! # Cost
//!
//! `spawn_ctx` adds one [`after_func`](Context::after_func) registration and
//! one allocation to `Command::spawn`; no thread is started. The thread that
//! calls [`Child::wait`] blocks in `waitid(WNOWAIT)` (Linux, Android, Apple;
//! elsewhere it polls `try_wait`, backing off from 1 to 50 ms); signals are
//! sent from the callback pool of `after_func`, and the wait delay runs on
//! the shared deadline timer. A dropped, still running [`Child`] goes to one
//! reaper thread shared by all of them, which exists only while such
//! children do and checks each with `try_wait` every 10 to 200 ms.
//! `output_ctx` reads stdout and stderr on two short-lived threads (64 KiB
//! stacks), as reading both pipes while waiting needs.
//!
//! # Platforms
//!
//! Signals and process groups are Unix only ([`Stop::signal`],
//! [`Stop::process_group`], the constants [`SIGTERM`], [`SIGINT`],
//! [`SIGKILL`]). Elsewhere the first step is `Child::kill` (or your
//! [`Stop::call`] function) and there is no second step.

mod child;
mod error;
mod output;
mod reaper;
mod stop;
mod sys;
#[cfg(feature = "tokio")]
mod tokio_child;

pub use child::Child;
pub use error::Error;
pub use stop::Stop;
#[cfg(unix)]
pub use stop::{SIGINT, SIGKILL, SIGTERM};
#[cfg(feature = "tokio")]
pub use tokio_child::{AsyncChild, AsyncCommandExt, AsyncWithStop};

use crate::Context;
use std::process::{Command, ExitStatus, Output};

/// Context-aware `spawn`, `output` and `status` for
/// [`std::process::Command`]: the child is stopped when the context ends
/// (see the [module docs](self)).
///
/// The methods use [`Stop::default`]; [`stop_with`](CommandExt::stop_with)
/// picks another way to stop.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::CommandExt;
/// use ctxkit::Context;
/// use std::process::Command;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
/// let out = Command::new("uname").output_ctx(&ctx).unwrap();
/// assert!(out.status.success());
/// # }
/// ```
pub trait CommandExt {
    /// Starts the command under `ctx`, as [`Command::spawn`] does.
    ///
    /// Fails with the context's error, without starting anything, if `ctx`
    /// is already done; with the spawn's own `io::Error`, unchanged, if the
    /// command cannot start.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::{Context, Error};
    /// use std::process::Command;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut child = Command::new("sleep").arg("30").spawn_ctx(&ctx).unwrap();
    /// cancel.cancel();
    /// let err = child.wait().unwrap_err();
    /// assert_eq!(err.context_error(), Some(Error::Canceled));
    /// # }
    /// ```
    fn spawn_ctx(&mut self, ctx: &Context) -> Result<Child, Error>;

    /// Runs the command under `ctx` and collects its output, as
    /// [`Command::output`] does: stdin is null, stdout and stderr are
    /// captured (these settings replace any made on the command).
    ///
    /// If the context stops the child, the error carries what was captured
    /// until then ([`Error::output`]). Pipes still held open by a
    /// grandchild after the child is gone are read until they close, or
    /// until the wait delay has passed since the context ended.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let out = Command::new("echo").arg("hi").output_ctx(&Context::background()).unwrap();
    /// assert_eq!(out.stdout, b"hi\n");
    /// # }
    /// ```
    fn output_ctx(&mut self, ctx: &Context) -> Result<Output, Error>;

    /// Runs the command under `ctx` and waits for it, as
    /// [`Command::status`] does (stdio is inherited).
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::CommandExt;
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let status = Command::new("sh").args(["-c", "exit 3"]).status_ctx(&Context::background());
    /// assert_eq!(status.unwrap().code(), Some(3));
    /// # }
    /// ```
    fn status_ctx(&mut self, ctx: &Context) -> Result<ExitStatus, Error>;

    /// The same three methods, stopping the child as `stop` says.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop, SIGINT};
    /// use ctxkit::Context;
    /// use std::process::Command;
    /// use std::time::Duration;
    ///
    /// let stop = Stop::new().signal(SIGINT).wait_delay(Duration::from_secs(1));
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = Command::new("sleep").arg("30").stop_with(stop).status_ctx(&ctx).unwrap_err();
    /// assert!(err.context_error().is_some());
    /// # }
    /// ```
    fn stop_with(&mut self, stop: Stop) -> WithStop<'_>;
}

impl CommandExt for Command {
    fn spawn_ctx(&mut self, ctx: &Context) -> Result<Child, Error> {
        self.stop_with(Stop::default()).spawn_ctx(ctx)
    }

    fn output_ctx(&mut self, ctx: &Context) -> Result<Output, Error> {
        self.stop_with(Stop::default()).output_ctx(ctx)
    }

    fn status_ctx(&mut self, ctx: &Context) -> Result<ExitStatus, Error> {
        self.stop_with(Stop::default()).status_ctx(ctx)
    }

    fn stop_with(&mut self, stop: Stop) -> WithStop<'_> {
        WithStop {
            command: self,
            stop,
        }
    }
}

/// A [`Command`] with the [`Stop`] to apply when its context ends; made by
/// [`CommandExt::stop_with`]. Its methods are those of [`CommandExt`].
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::{CommandExt, Stop};
/// use ctxkit::Context;
/// use std::process::Command;
/// use std::time::Duration;
///
/// let mut make = Command::new("true");
/// let mut build = make.stop_with(Stop::new().wait_delay(Duration::from_secs(2)));
/// assert!(build.status_ctx(&Context::background()).unwrap().success());
/// assert!(build.status_ctx(&Context::background()).unwrap().success(), "reusable");
/// # }
/// ```
#[derive(Debug)]
pub struct WithStop<'a> {
    command: &'a mut Command,
    stop: Stop,
}

impl WithStop<'_> {
    /// [`CommandExt::spawn_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let mut child = Command::new("true")
    ///     .stop_with(Stop::new().process_group(true))
    ///     .spawn_ctx(&Context::background())
    ///     .unwrap();
    /// assert!(child.wait().unwrap().success());
    /// # }
    /// ```
    pub fn spawn_ctx(&mut self, ctx: &Context) -> Result<Child, Error> {
        Child::spawn(self.command, ctx, &self.stop)
    }

    /// [`CommandExt::output_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let out = Command::new("sh").args(["-c", "echo oops >&2"])
    ///     .stop_with(Stop::new())
    ///     .output_ctx(&Context::background())
    ///     .unwrap();
    /// assert_eq!(out.stderr, b"oops\n");
    /// # }
    /// ```
    pub fn output_ctx(&mut self, ctx: &Context) -> Result<Output, Error> {
        use std::process::Stdio;
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.spawn_ctx(ctx)?;
        output::collect(ctx, child, self.stop.delay())
    }

    /// [`CommandExt::status_ctx`] with this stop.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::process::Command;
    ///
    /// let status = Command::new("true").stop_with(Stop::new()).status_ctx(&Context::background());
    /// assert!(status.unwrap().success());
    /// # }
    /// ```
    pub fn status_ctx(&mut self, ctx: &Context) -> Result<ExitStatus, Error> {
        self.spawn_ctx(ctx)?.wait()
    }
}
