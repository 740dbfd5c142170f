//! [`Notify`]: which signals end a context, and what a second one does.

use super::disposition::{self, Claim};
use super::handle::{Delivery, SignalHandle};
use crate::{CancelHandle, Context};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::ffi::c_int;
use std::io;
use std::sync::Arc;

/// Options for a signal-cancelled context; [`install`](Notify::install) (or
/// `install_tokio`, with feature `tokio`) creates one.
///
/// By default: SIGINT and SIGTERM, and a second signal exits the process.
/// [`notify_context`](super::notify_context) is `Notify::new().install(parent)`.
///
/// ```
/// use ctxkit::signal::{Notify, SIGHUP, SIGTERM};
/// use ctxkit::Context;
///
/// // Reload on SIGHUP or stop on SIGTERM; the app decides what a second
/// // signal means.
/// let (ctx, signals) = Notify::new()
///     .signals(&[SIGHUP, SIGTERM])
///     .exit_on_second_signal(false)
///     .install(&Context::background())?;
/// # signals.stop();
/// # assert!(ctx.is_done());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Sorted, without duplicates.
    signals: Vec<c_int>,
    exit_on_second_signal: bool,
}

impl Default for Notify {
    fn default() -> Notify {
        Notify::new()
    }
}

impl Notify {
    /// SIGINT and SIGTERM; a second signal exits the process.
    ///
    /// ```
    /// use ctxkit::signal::{Notify, SIGINT, SIGTERM};
    ///
    /// assert_eq!(Notify::new(), Notify::new().signals(&[SIGTERM, SIGINT]));
    /// ```
    pub fn new() -> Notify {
        Notify {
            signals: Vec::new(),
            exit_on_second_signal: true,
        }
        .signals(&[SIGINT, SIGTERM])
    }

    /// Listens for exactly `signals` instead (duplicates count once). The
    /// list is checked by `install`: it must not be empty, nor name a signal
    /// that cannot be caught (SIGKILL, SIGSTOP) or that reports a fault
    /// (SIGSEGV, SIGILL, SIGFPE), nor one without a name in
    /// `signal_hook::consts`.
    ///
    /// ```
    /// use ctxkit::signal::{Notify, SIGQUIT};
    /// use ctxkit::Context;
    ///
    /// let (ctx, _signals) = Notify::new().signals(&[SIGQUIT]).install(&Context::background())?;
    /// # assert!(!ctx.is_done());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn signals(mut self, signals: &[c_int]) -> Notify {
        self.signals = signals.to_vec();
        self.signals.sort_unstable();
        self.signals.dedup();
        self
    }

    /// Whether a second signal, once the first has cancelled the context,
    /// exits the process at once with status `128 + n` (130 for SIGINT, 143
    /// for SIGTERM), the shell's convention for "killed by signal n". On by
    /// default: a stuck shutdown must not make Ctrl-C useless.
    ///
    /// The exit happens inside the signal handler (`_exit`): destructors do
    /// not run and buffered output not yet written is lost. Turned off, the
    /// signals that follow the first are ignored until
    /// [`SignalHandle::stop`] gives them their default action back.
    ///
    /// ```
    /// use ctxkit::signal::Notify;
    /// use ctxkit::Context;
    ///
    /// // A shutdown that must finish, such as a database migration.
    /// let (ctx, _signals) = Notify::new()
    ///     .exit_on_second_signal(false)
    ///     .install(&Context::background())?;
    /// # assert!(!ctx.is_done());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn exit_on_second_signal(mut self, exit: bool) -> Notify {
        self.exit_on_second_signal = exit;
        self
    }

    /// A child of `parent` that is cancelled when the first of the signals
    /// arrives, with [`Error::Canceled`](crate::Error::Canceled) and a
    /// [`SignalReceived`](super::SignalReceived) cause; and the handle that
    /// stops listening. A dedicated thread waits for the signals.
    ///
    /// From now until the handle stops, the signals no longer take their
    /// default action (terminating the process, for SIGINT and SIGTERM).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the signal list is not acceptable (see
    /// [`signals`](Notify::signals)); the OS error if a handler or the thread
    /// cannot be set up.
    ///
    /// ```
    /// use ctxkit::signal::{Notify, SignalReceived, SIGUSR1};
    /// use ctxkit::{Context, Error};
    ///
    /// let (ctx, _signals) = Notify::new().signals(&[SIGUSR1]).install(&Context::background())?;
    /// signal_hook::low_level::raise(SIGUSR1)?; // as `kill -USR1 <pid>` would
    /// assert_eq!(ctx.wait(), Error::Canceled);
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref(), Some(&SignalReceived::new(SIGUSR1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn install(&self, parent: &Context) -> io::Result<(Context, SignalHandle)> {
        self.install_with(parent, |signals, ctx, cancel| {
            super::thread::Listener::spawn(signals, ctx, cancel).map(Delivery::Thread)
        })
    }

    /// [`install`](Notify::install), with the signals delivered by tokio's
    /// signal driver to a task spawned on the current runtime, instead of a
    /// thread of its own.
    ///
    /// The context itself works anywhere; this form only spares the thread.
    ///
    /// # Errors
    ///
    /// As `install`, and an error if called outside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the current runtime has IO disabled: tokio's signal driver is part
    /// of its IO driver (`enable_io` or `enable_all` on the builder;
    /// `#[tokio::main]` enables it).
    ///
    /// ```
    /// use ctxkit::signal::{Notify, SignalReceived, SIGUSR2};
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (ctx, _signals) = Notify::new().signals(&[SIGUSR2]).install_tokio(&Context::background())?;
    /// signal_hook::low_level::raise(SIGUSR2)?;
    /// ctx.done().await;
    /// assert_eq!(ctx.cause().unwrap().to_string(), "received signal SIGUSR2");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn install_tokio(&self, parent: &Context) -> io::Result<(Context, SignalHandle)> {
        self.install_with(parent, |signals, ctx, cancel| {
            super::task::Listener::spawn(signals, ctx, cancel).map(Delivery::Task)
        })
    }

    fn install_with<F>(&self, parent: &Context, deliver: F) -> io::Result<(Context, SignalHandle)>
    where
        F: FnOnce(&[c_int], &Context, Arc<CancelHandle>) -> io::Result<Delivery>,
    {
        disposition::validate(&self.signals)?;
        let (ctx, cancel) = parent.with_cancel();
        let cancel = Arc::new(cancel);
        // Deliver first, claim second: a signal arriving in between then
        // either takes its default action (as it would have before this
        // call) or reaches the context (as it will after), and is never
        // lost between the two.
        let delivery = deliver(&self.signals, &ctx, cancel.clone())?;
        let claim = Claim::new(&self.signals, self.exit_on_second_signal)?;
        Ok((ctx, SignalHandle::new(cancel, claim, delivery)))
    }
}
