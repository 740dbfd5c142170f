//! [`SignalReceived`]: the cause of a context ended by a signal.

use signal_hook::low_level::signal_name;
use std::ffi::c_int;
use std::fmt;

/// The [`Context::cause`](crate::Context::cause) of a context that a signal
/// ended: which signal arrived.
///
/// The context's [`err`](crate::Context::err) is
/// [`Error::Canceled`](crate::Error::Canceled), as for any cancellation;
/// downcast the cause to tell a signal from other reasons to stop.
///
/// ```
/// use ctxkit::signal::{SignalReceived, SIGINT};
/// use ctxkit::Context;
///
/// // What a context ended by Ctrl-C reports.
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel_with(SignalReceived::new(SIGINT));
///
/// let cause = ctx.cause().unwrap();
/// let received = cause.downcast_ref::<SignalReceived>().unwrap();
/// assert_eq!(received.signal(), SIGINT);
/// assert_eq!(received.name(), Some("SIGINT"));
/// assert_eq!(cause.to_string(), "received signal SIGINT");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalReceived {
    signal: c_int,
}

impl SignalReceived {
    /// The cause for `signal` having arrived. Useful to simulate a signal in
    /// tests with [`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with).
    ///
    /// ```
    /// use ctxkit::signal::{SignalReceived, SIGTERM};
    ///
    /// assert_eq!(SignalReceived::new(SIGTERM).signal(), SIGTERM);
    /// ```
    pub fn new(signal: c_int) -> SignalReceived {
        SignalReceived { signal }
    }

    /// The signal's number, e.g. `2` for `SIGINT` on Linux.
    ///
    /// ```
    /// use ctxkit::signal::{SignalReceived, SIGINT};
    ///
    /// assert_eq!(SignalReceived::new(SIGINT).signal(), SIGINT);
    /// ```
    pub fn signal(&self) -> c_int {
        self.signal
    }

    /// The signal's conventional name, e.g. `"SIGTERM"`; `None` for a number
    /// this platform does not name (real-time signals, for instance).
    ///
    /// ```
    /// use ctxkit::signal::{SignalReceived, SIGTERM};
    ///
    /// assert_eq!(SignalReceived::new(SIGTERM).name(), Some("SIGTERM"));
    /// assert_eq!(SignalReceived::new(1000).name(), None);
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        signal_name(self.signal)
    }

    /// Cancels `cancel` with this as its cause, naming the signal as the
    /// cancellation's origin (`Context::provenance`: `canceled: SIGTERM`).
    pub(super) fn cancel(self, cancel: &crate::CancelHandle) {
        cancel.cancel_from_with(self.name().unwrap_or("signal"), self);
    }
}

impl fmt::Display for SignalReceived {
    /// `received signal SIGINT`, or `received signal 40` for an unnamed one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "received signal {name}"),
            None => write!(f, "received signal {}", self.signal),
        }
    }
}

impl std::error::Error for SignalReceived {}
