//! What every form of group shares: its context, and the first failure.

use crate::context::Context;
use crate::error::Cause;
use crate::handle::CancelHandle;
use std::any::Any;
use std::fmt;
use std::panic::resume_unwind;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The payload of a panic, as `catch_unwind` and `JoinError` hand it over.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// The cause of a group's context when one of its tasks panicked.
///
/// The siblings see it through [`Context::cause`](crate::Context::cause);
/// the panic itself is resumed in the caller of the group's `wait` once every
/// task has stopped.
///
/// ```
/// use ctxkit::group::{self, TaskPanicked};
/// use ctxkit::Context;
///
/// let caught = std::panic::catch_unwind(|| {
///     group::scope(&Context::background(), |g| {
///         g.spawn(|_| -> () { panic!("boom") });
///         g.spawn(|ctx| {
///             ctx.wait();
///             assert!(ctx.cause().unwrap().is::<TaskPanicked>());
///         });
///     })
/// });
/// assert!(caught.is_err(), "the panic reached the caller");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TaskPanicked;

impl fmt::Display for TaskPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task of the group panicked; the group's wait resumes the panic")
    }
}

impl std::error::Error for TaskPanicked {}

/// The group's context and the right to cancel it, plus its first failure.
///
/// Invariant: the first error recorded is the cause the context was
/// cancelled with, unless something else (the parent, a panic) had already
/// cancelled it. Both are decided under one lock, so `wait` and the siblings
/// never disagree about which error came first. The error is kept once, in
/// an `Arc` that is also the context's cause: errors need not be `Clone`.
pub(crate) struct GroupState<E> {
    ctx: Context,
    cancel: CancelHandle,
    failure: Mutex<Failure<E>>,
}

struct Failure<E> {
    error: Option<Arc<E>>,
    panic: Option<PanicPayload>,
}

impl<E> GroupState<E> {
    pub(crate) fn new(parent: &Context) -> GroupState<E> {
        let (ctx, cancel) = parent.with_cancel();
        GroupState {
            ctx,
            cancel,
            failure: Mutex::new(Failure {
                error: None,
                panic: None,
            }),
        }
    }

    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    /// Cancels the group because a task is panicking. Safe to call while
    /// unwinding: it neither panics nor blocks on anything but the lock.
    pub(crate) fn cancel_for_panic(&self) {
        self.cancel.cancel_with(TaskPanicked);
    }

    /// Keeps the first panic's payload, to be resumed by `finish`.
    pub(crate) fn record_panic(&self, payload: PanicPayload) {
        self.cancel_for_panic();
        let mut failure = self.lock();
        failure.panic.get_or_insert(payload);
    }

    /// Ends the group once every task has stopped: cancels its context (with
    /// the first error as cause if there was one, else `Canceled`), resumes
    /// the first panic if any task panicked, else returns the first error.
    pub(crate) fn finish(&self) -> Result<(), Arc<E>> {
        self.cancel.cancel_from_cause("errgroup finished", None);
        let mut failure = self.lock();
        if let Some(payload) = failure.panic.take() {
            drop(failure);
            resume_unwind(payload);
        }
        failure.error.take().map_or(Ok(()), Err)
    }

    /// Cancels the group's context with `Canceled`, if nothing did before.
    pub(crate) fn cancel(&self) {
        self.cancel.cancel_from_cause("errgroup stopped", None);
    }

    /// The lock is never held while user code runs, so a poisoned lock can
    /// only come from a panic inside this file; the data stays consistent.
    fn lock(&self) -> MutexGuard<'_, Failure<E>> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<E> GroupState<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// Records the outcome of one task; the first failure cancels the group,
    /// with that very error (shared, not copied) as the cause.
    pub(crate) fn record(&self, outcome: Result<(), E>) {
        if let Err(error) = outcome {
            let mut failure = self.lock();
            if failure.error.is_none() {
                let error = Arc::new(error);
                let cause = Arc::clone(&error) as Cause;
                self.cancel
                    .cancel_from_cause("errgroup task failed", Some(cause));
                failure.error = Some(error);
            }
        }
    }
}
