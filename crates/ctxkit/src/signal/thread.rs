//! Delivery on a dedicated thread, through signal-hook's iterator: the
//! signal handler only writes a byte to a pipe, and the thread that reads it
//! cancels the context.

use super::received::SignalReceived;
use crate::{CancelHandle, Context};
use signal_hook::iterator::{Handle, Signals};
use std::ffi::c_int;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The thread that turns the first of its signals into a cancellation.
/// Dropping it stops the thread and waits for it, so that its signal-hook
/// registrations are gone when the drop returns.
pub(super) struct Listener {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub(super) fn spawn(
        signals: &[c_int],
        ctx: &Context,
        cancel: Arc<CancelHandle>,
    ) -> io::Result<Listener> {
        let mut iterator = Signals::new(signals)?;
        let handle = iterator.handle();
        let thread = thread::Builder::new()
            .name("ctxkit-signal".into())
            .spawn(move || {
                // One signal is all the context needs; a second one is the
                // business of the claim's exit action, in the handler itself.
                if let Some(signal) = iterator.forever().next() {
                    SignalReceived::new(signal).cancel(&cancel);
                }
            })?;
        // Like the goroutine of Go's NotifyContext, stop listening once the
        // context ends for any reason, such as its parent's cancellation.
        let _ = ctx.after_func({
            let handle = handle.clone();
            move || handle.close()
        });
        Ok(Listener {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            // The thread runs no code of ours that could drop a listener,
            // but a waker woken by its cancellation might: never join
            // ourselves.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
