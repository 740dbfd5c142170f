//! [`SignalHandle`]: the right to stop listening for signals.

use super::disposition::Claim;
use crate::CancelHandle;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How signals reach the context: a thread or a tokio task. Dropping it
/// stops the delivery; the listeners are held for that drop alone, hence
/// the `dead_code` allowances.
pub(super) enum Delivery {
    Thread(#[allow(dead_code)] super::thread::Listener),
    #[cfg(feature = "tokio")]
    Task(#[allow(dead_code)] super::task::Listener),
}

/// Everything a listening context holds; gone once stopped.
struct Active {
    cancel: Arc<CancelHandle>,
    claim: Claim,
    delivery: Delivery,
}

/// Returned with a signal-cancelled context: [`stop`](SignalHandle::stop)
/// (or dropping the handle) ends the context and stops listening. Go's
/// `stop` from `signal.NotifyContext`.
///
/// Once no context listens for a signal any more, its default action is
/// back: a Ctrl-C after `stop` terminates the process at once, as if ctxkit
/// had never handled it.
///
/// `SignalHandle` is `Send + Sync`: stop from any thread; only the first
/// stop does anything.
///
/// ```
/// use ctxkit::signal::notify_context;
/// use ctxkit::{Context, Error};
///
/// let (ctx, signals) = notify_context(&Context::background())?;
/// assert!(!ctx.is_done());
/// signals.stop(); // the shutdown is over: Ctrl-C kills from here on
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping a SignalHandle stops listening and cancels its context at once; bind it: `let (ctx, _signals) = ...`"]
pub struct SignalHandle {
    active: Mutex<Option<Active>>,
}

impl SignalHandle {
    pub(super) fn new(cancel: Arc<CancelHandle>, claim: Claim, delivery: Delivery) -> SignalHandle {
        let active = Active {
            cancel,
            claim,
            delivery,
        };
        SignalHandle {
            active: Mutex::new(Some(active)),
        }
    }

    /// Cancels the context with [`Error::Canceled`](crate::Error::Canceled)
    /// (unless a signal or its parent ended it first), stops listening, and
    /// gives each signal its default action back unless another context
    /// still listens for it. Idempotent.
    ///
    /// When this returns, a signal that no other context listens for takes
    /// its default action. The thread form's thread has ended (`stop` waits
    /// the moment it takes to wake up and return); the tokio form's task is
    /// aborted.
    ///
    /// ```
    /// use ctxkit::signal::notify_context;
    /// use ctxkit::Context;
    ///
    /// let (ctx, signals) = notify_context(&Context::background())?;
    /// signals.stop();
    /// signals.stop(); // does nothing
    /// assert!(ctx.is_done());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stop(&self) {
        let active = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Active {
            cancel,
            claim,
            delivery,
        }) = active
        else {
            return;
        };
        // Go's order: cancel, then stop listening.
        cancel.cancel();
        drop(claim);
        drop(delivery);
    }

    fn is_stopped(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

impl Drop for SignalHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for SignalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
