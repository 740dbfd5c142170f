//! [`Stop`]: how a context stops its child process.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// SIGTERM (15): the default first step of a [`Stop`].
///
/// ```
/// use ctxkit::process::{CommandExt, Stop, SIGTERM};
/// use ctxkit::Context;
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::Command;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
/// let err = Command::new("sleep").arg("30")
///     .stop_with(Stop::new().signal(SIGTERM)) // the default, spelled out
///     .status_ctx(&ctx)
///     .unwrap_err();
/// assert_eq!(err.status().unwrap().signal(), Some(SIGTERM));
/// ```
#[cfg(unix)]
pub const SIGTERM: i32 = 15;
/// SIGINT (2), as Ctrl-C sends: for [`Stop::signal`].
///
/// ```
/// use ctxkit::process::{CommandExt, Stop, SIGINT};
/// use ctxkit::Context;
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::Command;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
/// let err = Command::new("sleep").arg("30")
///     .stop_with(Stop::new().signal(SIGINT)) // as if Ctrl-C were pressed
///     .status_ctx(&ctx)
///     .unwrap_err();
/// assert_eq!(err.status().unwrap().signal(), Some(SIGINT));
/// ```
#[cfg(unix)]
pub const SIGINT: i32 = 2;
/// SIGKILL (9): the second step, once the wait delay is over.
///
/// ```
/// use ctxkit::process::{CommandExt, Stop, SIGKILL};
/// use ctxkit::Context;
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::Command;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
/// let err = Command::new("sleep").arg("30")
///     .stop_with(Stop::new().signal(SIGKILL)) // no gentle first step
///     .status_ctx(&ctx)
///     .unwrap_err();
/// assert_eq!(err.status().unwrap().signal(), Some(SIGKILL));
/// ```
#[cfg(unix)]
pub const SIGKILL: i32 = 9;

/// The function given to [`Stop::call`].
type StopFn = Arc<dyn Fn(u32) -> io::Result<()> + Send + Sync + 'static>;

/// How a context stops its child: a first, gentle step (SIGTERM by
/// default), then SIGKILL once the wait delay has passed; optionally for the
/// whole process group.
///
/// `Stop::new()` (= `Stop::default()`) sends SIGTERM, waits 5 s, then sends
/// SIGKILL, to the child alone. Off Unix, the first step is
/// `Child::kill` unless [`call`](Stop::call) says otherwise.
///
/// ```
/// # #[cfg(unix)] {
/// use ctxkit::process::{CommandExt, Stop, SIGINT};
/// use ctxkit::{Context, Error};
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::Command;
/// use std::time::Duration;
///
/// // Ctrl-C to the whole group, SIGKILL 2 s later.
/// let stop = Stop::new()
///     .signal(SIGINT)
///     .wait_delay(Duration::from_secs(2))
///     .process_group(true);
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
/// let err = Command::new("sleep").arg("30").stop_with(stop).status_ctx(&ctx).unwrap_err();
/// assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
/// assert_eq!(err.status().unwrap().signal(), Some(SIGINT));
/// assert_eq!(err.killed_at(), None, "the first step was enough");
/// # }
/// ```
#[derive(Clone)]
pub struct Stop {
    first: First,
    wait_delay: Duration,
    group: bool,
}

#[derive(Clone)]
pub(super) enum First {
    #[cfg(unix)]
    Signal(i32),
    Kill,
    Call(StopFn),
}

impl Stop {
    /// SIGTERM (off Unix: kill), SIGKILL 5 s later, the child alone.
    ///
    /// ```
    /// use ctxkit::process::Stop;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Stop::new().delay(), Duration::from_secs(5));
    /// ```
    pub fn new() -> Stop {
        #[cfg(unix)]
        let first = First::Signal(SIGTERM);
        #[cfg(not(unix))]
        let first = First::Kill;
        Stop {
            first,
            wait_delay: Duration::from_secs(5),
            group: false,
        }
    }

    /// Sends `signal` as the first step instead of SIGTERM. Unix only.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop, SIGINT};
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::Command;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut child = Command::new("sleep").arg("30")
    ///     .stop_with(Stop::new().signal(SIGINT))
    ///     .spawn_ctx(&ctx)
    ///     .unwrap();
    /// cancel.cancel();
    /// assert_eq!(child.wait().unwrap_err().status().unwrap().signal(), Some(SIGINT));
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn signal(mut self, signal: i32) -> Stop {
        self.first = First::Signal(signal);
        self
    }

    /// Kills at once (SIGKILL, or `TerminateProcess` on Windows): Go's
    /// default. There is no second step.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop, SIGKILL};
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::Command;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = Command::new("sleep").arg("30")
    ///     .stop_with(Stop::new().kill())
    ///     .status_ctx(&ctx)
    ///     .unwrap_err();
    /// assert_eq!(err.status().unwrap().signal(), Some(SIGKILL));
    /// assert!(err.killed_at().is_some());
    /// # }
    /// ```
    pub fn kill(mut self) -> Stop {
        self.first = First::Kill;
        self
    }

    /// Runs `f(pid)` as the first step instead of a signal: Go's
    /// `Cmd.Cancel`. It may close the child's stdin, write a quit command,
    /// send a request over a socket...
    ///
    /// `f` runs on a callback thread while the child is not yet reaped, so
    /// `pid` is the child's for the whole call (not after it). An `Err` from
    /// `f` means the gentle way failed: SIGKILL follows at once instead of
    /// after the wait delay.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop};
    /// use ctxkit::Context;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::Command;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let asked = Arc::new(AtomicU32::new(0));
    /// let stop = Stop::new().call({
    ///     let asked = Arc::clone(&asked);
    ///     move |pid| {
    ///         asked.store(pid, Ordering::SeqCst);
    ///         // Here a quit request by kill(1); an error means SIGKILL at once.
    ///         Command::new("sh").args(["-c", &format!("kill -HUP {pid}")]).status().map(drop)
    ///     }
    /// });
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut child = Command::new("sleep").arg("30").stop_with(stop).spawn_ctx(&ctx).unwrap();
    /// cancel.cancel();
    /// let err = child.wait().unwrap_err();
    /// assert_eq!(asked.load(Ordering::SeqCst), child.id());
    /// assert_eq!(err.status().unwrap().signal(), Some(1)); // SIGHUP
    /// # }
    /// ```
    pub fn call<F>(mut self, f: F) -> Stop
    where
        F: Fn(u32) -> io::Result<()> + Send + Sync + 'static,
    {
        self.first = First::Call(Arc::new(f));
        self
    }

    /// How long the child may take to exit after the first step before it
    /// gets SIGKILL: Go's `Cmd.WaitDelay`. Zero kills right after the first
    /// step. The same delay bounds how long `output_ctx` keeps reading pipes
    /// a grandchild holds open after the context ended.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use ctxkit::process::{CommandExt, Stop, SIGKILL};
    /// use ctxkit::Context;
    /// use std::io::{BufRead, BufReader};
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::{Command, Stdio};
    /// use std::time::Duration;
    ///
    /// // A child that ignores SIGTERM: only the second step stops it.
    /// let script = "trap '' TERM; echo ready; exec sleep 30";
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut child = Command::new("sh").args(["-c", script])
    ///     .stdout(Stdio::piped())
    ///     .stop_with(Stop::new().wait_delay(Duration::from_millis(100)))
    ///     .spawn_ctx(&ctx)
    ///     .unwrap();
    /// let mut ready = String::new();
    /// BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    /// cancel.cancel();
    /// let err = child.wait().unwrap_err();
    /// assert_eq!(err.status().unwrap().signal(), Some(SIGKILL));
    /// let waited = err.killed_at().unwrap() - err.stopped_at().unwrap();
    /// assert!(waited >= Duration::from_millis(100), "{waited:?}");
    /// # }
    /// ```
    pub fn wait_delay(mut self, delay: Duration) -> Stop {
        self.wait_delay = delay;
        self
    }

    /// With `true`, the child leads a new process group
    /// (`CommandExt::process_group(0)`, set on the command at spawn) and
    /// both steps signal the whole group, so its children stop too. Unix
    /// only.
    ///
    /// The group is signalled only while the child is unreaped (see the
    /// [module docs](super)): descendants that outlive it are not stopped
    /// afterwards.
    ///
    /// ```
    /// use ctxkit::process::Stop;
    ///
    /// # #[cfg(unix)]
    /// assert!(Stop::new().process_group(true).in_group());
    /// ```
    #[cfg(unix)]
    pub fn process_group(mut self, group: bool) -> Stop {
        self.group = group;
        self
    }

    /// The wait delay: see [`wait_delay`](Stop::wait_delay).
    ///
    /// ```
    /// use ctxkit::process::Stop;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Stop::default().delay(), Duration::from_secs(5));
    /// ```
    pub fn delay(&self) -> Duration {
        self.wait_delay
    }

    /// Whether the whole process group is signalled.
    ///
    /// ```
    /// use ctxkit::process::Stop;
    ///
    /// assert!(!Stop::new().in_group());
    /// ```
    pub fn in_group(&self) -> bool {
        self.group
    }

    pub(super) fn first(&self) -> &First {
        &self.first
    }
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl fmt::Debug for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = match &self.first {
            #[cfg(unix)]
            First::Signal(signal) => format!("signal {signal}"),
            First::Kill => "kill".to_owned(),
            First::Call(_) => "function".to_owned(),
        };
        f.debug_struct("Stop")
            .field("first", &first)
            .field("wait_delay", &self.wait_delay)
            .field("group", &self.group)
            .finish()
    }
}
