//! Contexts cancelled by process signals (SIGINT, SIGTERM): Go's
//! `signal.NotifyContext`, for graceful shutdown. Unix only.
//!
//! [`notify_context`] returns a child of a context that is cancelled when the
//! first of SIGINT (Ctrl-C) or SIGTERM (`kill`, container stop) arrives, and a
//! [`SignalHandle`]. Hand the context to the workers; when it is done, they
//! finish what they are doing and return; main waits for them, then stops
//! the handle.
//!
//! - **The first signal** cancels the context with
//!   [`Error::Canceled`](crate::Error::Canceled); its
//!   [`cause`](crate::Context::cause) is a [`SignalReceived`] naming the
//!   signal, and its [`provenance`](crate::Context::provenance) names the
//!   signal as its origin (`canceled: SIGTERM, ...`).
//! - **A second signal** exits the process at once with status `128 + n`
//!   (130 for SIGINT, 143 for SIGTERM), so that a stuck shutdown never makes
//!   Ctrl-C useless; [`Notify::exit_on_second_signal`] opts out.
//! - **[`SignalHandle::stop`]**, or dropping the handle, cancels the context
//!   (as Go's `stop` does), stops listening and, once no context listens for
//!   a signal, gives the signal its default action back: a Ctrl-C after that
//!   terminates the process as if ctxkit had never handled it.
//!
//! Signals reach the context through a dedicated thread
//! ([`notify_context`], [`Notify::install`]), or with feature `tokio`
//! through tokio's signal driver on a task (`notify_context_tokio`,
//! `Notify::install_tokio`). Either way the signal handler does nothing but
//! async-signal-safe work (signal-hook's flags and self-pipe); and either way
//! the context is an ordinary one, for threads and async code alike.
//!
//! ```
//! use ctxkit::signal::{self, SignalReceived};
//! use ctxkit::Context;
//! use std::time::Duration;
//!
//! let (ctx, signals) = signal::notify_context(&Context::background())?;
//! let worker = std::thread::spawn({
//!     let ctx = ctx.clone();
//!     move || {
//!         let mut ticks = 0;
//!         while ctx.sleep(Duration::from_millis(5)).is_ok() {
//!             ticks += 1; // periodic work, until a signal ends the context
//!         }
//!         ticks
//!     }
//! });
//!
//! signal_hook::low_level::raise(signal::SIGTERM)?; // as `kill <pid>` would
//! ctx.wait();
//! let _ticks = worker.join().unwrap();
//! let cause = ctx.cause().unwrap();
//! assert_eq!(cause.downcast_ref(), Some(&SignalReceived::new(signal::SIGTERM)));
//! let why = ctx.provenance().unwrap();
//! assert_eq!(why.origin(), ctxkit::provenance::Origin::Integration("SIGTERM"));
//! signals.stop(); // the shutdown is over: signals take their default action again
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Caveats
//!
//! - The default action that `stop` restores is the signal's standard one,
//!   even if the process started with the signal ignored (as `nohup` does for
//!   SIGHUP).
//! - Only ctxkit's own listeners count: if other code handles the same
//!   signal through signal-hook or tokio directly, the default action
//!   restored by `stop` runs before it.
//! - Signals that arrive at the same time may be coalesced into one, as the
//!   OS already does.

#![cfg(unix)]

mod disposition;
mod handle;
mod notify;
mod received;
#[cfg(feature = "tokio")]
mod task;
mod thread;

pub use handle::SignalHandle;
pub use notify::Notify;
pub use received::SignalReceived;
/// Signal numbers for this platform, re-exported from `signal-hook` so that
/// a [`Notify`] can be configured without depending on it.
pub use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::Context;
use std::io;

/// A child of `parent` cancelled by the first SIGINT or SIGTERM, and the
/// handle that stops listening: Go's `signal.NotifyContext(parent,
/// os.Interrupt, syscall.SIGTERM)`. A second signal exits the process with
/// status 130 (SIGINT) or 143 (SIGTERM).
///
/// Shorthand for `Notify::new().install(parent)`; see [`Notify`] for other
/// signals and for keeping the process alive on a second signal.
///
/// # Errors
///
/// The OS error if a signal handler or the listening thread cannot be set up.
///
/// ```
/// use ctxkit::signal::notify_context;
/// use ctxkit::Context;
///
/// let (ctx, signals) = notify_context(&Context::background())?;
/// // ... serve until ctx is done ...
/// # signals.stop();
/// # assert!(ctx.is_done());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn notify_context(parent: &Context) -> io::Result<(Context, SignalHandle)> {
    Notify::new().install(parent)
}

/// [`notify_context`] with the signals delivered by tokio's signal driver
/// to a task on the current runtime, instead of a thread of its own.
///
/// Shorthand for `Notify::new().install_tokio(parent)`.
///
/// # Errors
///
/// An error if called outside a tokio runtime; the OS error if a signal
/// handler cannot be set up.
///
/// # Panics
///
/// If the current runtime has IO disabled (see [`Notify::install_tokio`]).
///
/// ```
/// use ctxkit::signal::notify_context_tokio;
/// use ctxkit::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (ctx, signals) = notify_context_tokio(&Context::background())?;
/// // ... serve until `ctx.done().await` ...
/// # signals.stop();
/// # assert!(ctx.is_done());
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
pub fn notify_context_tokio(parent: &Context) -> io::Result<(Context, SignalHandle)> {
    Notify::new().install_tokio(parent)
}
