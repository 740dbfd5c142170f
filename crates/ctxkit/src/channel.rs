//! `done_receiver()`: cancellation as a crossbeam channel (feature `crossbeam`).

use crate::context::Context;
use crate::registry::Registration;
use crossbeam_channel::Receiver;

impl Context {
    /// A receiver that disconnects when this context is done, for
    /// `crossbeam_channel::select!` next to other channels: Go's
    /// `case <-ctx.Done():`. Nothing is ever sent on it.
    ///
    /// On a context that cannot be cancelled it never disconnects. Each call
    /// registers one sender with the context until it ends: call it once per
    /// loop, not once per iteration, and clone the receiver as needed.
    ///
    /// ```
    /// use crossbeam_channel::{select, unbounded};
    /// use ctxkit::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (jobs_tx, jobs) = unbounded::<u32>();
    /// let done = ctx.done_receiver();
    /// jobs_tx.send(1).unwrap();
    /// cancel.cancel();
    /// let mut handled = 0;
    /// loop {
    ///     select! {
    ///         recv(done) -> _ => break,
    ///         recv(jobs) -> job => handled += job.unwrap(),
    ///     }
    /// }
    /// # let _ = handled;
    /// assert!(ctx.is_done());
    /// ```
    pub fn done_receiver(&self) -> Receiver<()> {
        let Some(scope) = self.scope() else {
            return crossbeam_channel::never();
        };
        let (sender, receiver) = crossbeam_channel::bounded(0);
        // If the scope is already done, `sender` comes back in the error and
        // is dropped: the receiver is disconnected at once.
        let _ = scope.with_registry(|registry| {
            registry.insert(Registration::DropGuard(Box::new(sender)));
        });
        receiver
    }
}
