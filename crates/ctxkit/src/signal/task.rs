//! Delivery on a tokio task, through tokio's signal driver: no thread of
//! our own, and the runtime's reactor wakes the task.

use super::received::SignalReceived;
use crate::{CancelHandle, Context};
use std::ffi::c_int;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::AbortHandle;

/// The task that turns the first of its signals into a cancellation.
/// Dropping it aborts the task.
pub(super) struct Listener {
    task: AbortHandle,
}

impl Listener {
    /// Spawns the task on the current runtime.
    ///
    /// # Panics
    ///
    /// If the current runtime has its IO driver disabled (tokio's signal
    /// driver is part of it).
    pub(super) fn spawn(
        signals: &[c_int],
        ctx: &Context,
        cancel: Arc<CancelHandle>,
    ) -> io::Result<Listener> {
        let runtime = Handle::try_current().map_err(|_| {
            io::Error::other(
                "ctxkit::signal: the tokio form needs a tokio runtime: call it from within one \
                 (inside #[tokio::main], for instance), or use the thread form, which needs none",
            )
        })?;
        let mut streams = signals
            .iter()
            .map(|&number| Ok((number, signal(SignalKind::from_raw(number))?)))
            .collect::<io::Result<Vec<_>>>()?;
        let ctx = ctx.clone();
        let task = runtime.spawn(async move {
            tokio::select! {
                // Like the goroutine of Go's NotifyContext, stop listening
                // once the context ends for any reason.
                _ = ctx.done() => {}
                number = first_signal(&mut streams) => {
                    SignalReceived::new(number).cancel(&cancel);
                }
            }
        });
        Ok(Listener {
            task: task.abort_handle(),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The number of the first signal to arrive on any of `streams`.
async fn first_signal(streams: &mut [(c_int, Signal)]) -> c_int {
    poll_fn(|cx| {
        for (number, stream) in streams.iter_mut() {
            if stream.poll_recv(cx).is_ready() {
                return Poll::Ready(*number);
            }
        }
        Poll::Pending
    })
    .await
}
