//! What each signal does process-wide while ctxkit handles it: how many
//! contexts listen for it, whether a second signal exits, and when its
//! default action comes back.
//!
//! signal-hook installs one OS handler per signal and never removes it; with
//! its last action unregistered, a signal would be silently ignored. Go
//! restores the default action once nobody listens, so each signal gets one
//! extra action, registered before any other of ours, that runs the default
//! action (terminate, for SIGINT and SIGTERM) while nobody listens.
//!
//! Every action here is a flag load, a flag store, `_exit` or the default
//! action: all async-signal-safe, as signal handlers require.

use signal_hook::consts::FORBIDDEN;
use signal_hook::flag;
use signal_hook::low_level::{signal_name, unregister};
use signal_hook::SigId;
use std::collections::BTreeMap;
use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The shell's convention: a process ended because of signal `n` exits with
/// `128 + n` (130 for SIGINT, 143 for SIGTERM).
fn exit_status(signal: c_int) -> c_int {
    128 + signal
}

struct Disposition {
    /// Live claims on this signal.
    listeners: usize,
    /// Read by the signal handler. Invariant, kept under `DISPOSITIONS`'
    /// lock: true exactly when `listeners` is zero.
    run_default: Arc<AtomicBool>,
}

/// Signals ctxkit has handled at least once. An entry is never removed: its
/// default-action registration must outlive every claim, and there are only
/// a few dozen signals.
static DISPOSITIONS: Mutex<BTreeMap<c_int, Disposition>> = Mutex::new(BTreeMap::new());

fn dispositions() -> MutexGuard<'static, BTreeMap<c_int, Disposition>> {
    // Nothing panics while holding the lock; recover rather than abandon
    // every future claim if that ever changes.
    DISPOSITIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks that ctxkit can listen for every one of `signals`, without
/// registering anything.
pub(super) fn validate(signals: &[c_int]) -> io::Result<()> {
    if signals.is_empty() {
        return Err(invalid(
            "no signals to listen for: give at least one, such as SIGINT or SIGTERM".into(),
        ));
    }
    for &signal in signals {
        if FORBIDDEN.contains(&signal) {
            let name = signal_name(signal).unwrap_or("it");
            return Err(invalid(format!(
                "cannot listen for signal {signal} ({name}): it cannot be caught or must not \
                 be handled outside the thread that caused it; listen for SIGINT, SIGTERM or \
                 another signal"
            )));
        }
        if signal_name(signal).is_none() {
            return Err(invalid(format!(
                "cannot listen for signal {signal}: its default action is unknown, so it could \
                 not be restored on stop; use one of the named signals of signal_hook::consts"
            )));
        }
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// One listener's hold on its signals: while it lives, their default action
/// does not run, and if asked, the second of them to arrive exits the
/// process. Dropping it gives the default action back to every signal that
/// no other claim holds.
pub(super) struct Claim {
    /// Signals whose listener count this claim incremented.
    signals: Vec<c_int>,
    actions: Vec<SigId>,
}

impl Claim {
    /// Claims `signals`, which must be [`validate`]d and free of duplicates
    /// (a duplicate would arm and fire the exit on the same delivery).
    pub(super) fn new(signals: &[c_int], exit_on_second_signal: bool) -> io::Result<Claim> {
        let mut claim = Claim {
            signals: Vec::with_capacity(signals.len()),
            actions: Vec::new(),
        };
        let mut dispositions = dispositions();
        let registered = claim.register(&mut dispositions, signals, exit_on_second_signal);
        // A failed claim releases what it took, which needs the lock.
        drop(dispositions);
        registered.map(|()| claim)
    }

    fn register(
        &mut self,
        dispositions: &mut BTreeMap<c_int, Disposition>,
        signals: &[c_int],
        exit_on_second_signal: bool,
    ) -> io::Result<()> {
        let armed = Arc::new(AtomicBool::new(false));
        for &signal in signals {
            acquire(dispositions, signal)?;
            self.signals.push(signal);
            if exit_on_second_signal {
                // signal-hook runs a signal's actions in registration order,
                // so the exit sees the flag as it was before this delivery:
                // the first signal arms it, the second exits.
                let status = exit_status(signal);
                let exit = flag::register_conditional_shutdown(signal, status, armed.clone())?;
                self.actions.push(exit);
                self.actions.push(flag::register(signal, armed.clone())?);
            }
        }
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Give the default action back before unregistering: a signal that
        // arrives in between then terminates, as it will once we return,
        // rather than being lost.
        let mut dispositions = dispositions();
        for signal in self.signals.drain(..) {
            release(&mut dispositions, signal);
        }
        drop(dispositions);
        for action in self.actions.drain(..) {
            unregister(action);
        }
    }
}

fn acquire(dispositions: &mut BTreeMap<c_int, Disposition>, signal: c_int) -> io::Result<()> {
    if let Some(disposition) = dispositions.get_mut(&signal) {
        disposition.listeners += 1;
        disposition.run_default.store(false, Ordering::SeqCst);
        return Ok(());
    }
    let run_default = Arc::new(AtomicBool::new(false));
    flag::register_conditional_default(signal, run_default.clone())?;
    let disposition = Disposition {
        listeners: 1,
        run_default,
    };
    dispositions.insert(signal, disposition);
    Ok(())
}

fn release(dispositions: &mut BTreeMap<c_int, Disposition>, signal: c_int) {
    let disposition = dispositions
        .get_mut(&signal)
        .expect("a claimed signal has a disposition");
    disposition.listeners -= 1;
    if disposition.listeners == 0 {
        disposition.run_default.store(true, Ordering::SeqCst);
    }
}
