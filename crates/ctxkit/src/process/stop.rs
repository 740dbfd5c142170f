//! [`Stop`]: how a context stops its child process.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// SIGTERM (15): the default first step of a [`Stop`].
///
/// ```
/// use ctxkit::process::{Stop, SIGTERM};
///
/// let stop = Stop::new().signal(SIGTERM); // the default, spelled out
/// # let _ = stop;
/// ```
#[cfg(unix)]
pub const SIGTERM: i32 = 15;
/// SIGINT (2), as Ctrl-C sends: for [`Stop::signal`].
///
/// ```
/// use ctxkit::process::{Stop, SIGINT};
///
/// let stop = Stop::new().signal(SIGINT); // as if Ctrl-C were pressed
/// # let _ = stop;
/// ```
#[cfg(unix)]
pub const SIGINT: i32 = 2;
/// SIGKILL (9): the second step, once the wait delay is over.
///
/// ```
/// use ctxkit::process::{Stop, SIGKILL};
///
/// let stop = Stop::new().signal(SIGKILL); // no gentle first step
/// # let _ = stop;
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
/// use ctxkit::process::{Stop, SIGINT};
/// use std::time::Duration;
///
/// // Ctrl-C to the whole group, SIGKILL 2 s later.
/// let stop = Stop::new()
///     .signal(SIGINT)
///     .wait_delay(Duration::from_secs(2))
///     .process_group(true);
/// # let _ = stop;
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
    /// use ctxkit::process::{Stop, SIGINT};
    ///
    /// let stop = Stop::new().signal(SIGINT);
    /// # let _ = stop;
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
    /// use ctxkit::process::Stop;
    ///
    /// let stop = Stop::new().kill();
    /// # let _ = stop;
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
    /// use ctxkit::process::Stop;
    ///
    /// let stop = Stop::new().call(|pid| {
    ///     eprintln!("asking {pid} to quit");
    ///     Ok(())
    /// });
    /// # let _ = stop;
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
    /// use ctxkit::process::Stop;
    /// use std::time::Duration;
    ///
    /// let stop = Stop::new().wait_delay(Duration::from_millis(500));
    /// assert_eq!(stop.delay(), Duration::from_millis(500));
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
