//! The errgroup on tokio: [`TaskGroup`] (feature `tokio`).

use super::limit::{check_new_limit, LimitError};
use super::outcome::TaskOutcome;
use super::state::GroupState;
use crate::context::Context;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio::task::{JoinError, JoinSet};

/// A group of tokio tasks under one context: Go's errgroup for async code.
///
/// # Contract
///
/// - [`new`](TaskGroup::new) derives the group's context from a parent.
///   Each task receives a clone of it and returns `Result<(), E>` (or `()`,
///   see [`TaskOutcome`]); tasks are
///   spawned onto the current tokio runtime (so the group must be used from
///   within one).
/// - The first task to fail cancels the group's context, with its error as
///   the [cause](Context::cause), at the moment it fails: the siblings see
///   it whether or not anyone is awaiting the group.
/// - [`wait`](TaskGroup::wait) waits for every task, then cancels the
///   group's context (cause: the first error, else
///   [`Canceled`](crate::Error::Canceled)) and returns the first error.
///   When it returns, no task of the group is running.
/// - A task spawned once the group's context is done does not run:
///   [`spawn`](TaskGroup::spawn) and [`try_spawn`](TaskGroup::try_spawn)
///   return false.
/// - A limit set with [`set_limit`](TaskGroup::set_limit) bounds how many
///   tasks run at once: [`spawn`](TaskGroup::spawn) waits for a slot,
///   [`try_spawn`](TaskGroup::try_spawn) returns false.
/// - A panicking task cancels the group at once (cause:
///   [`TaskPanicked`](super::TaskPanicked)); `wait` resumes the first panic
///   after every other task has finished. A panic outranks errors.
/// - Dropping the group without awaiting `wait` (or dropping the `wait`
///   future) first cancels the group's context, so that work the tasks
///   handed to other threads is told to stop, then aborts every task still
///   running: each is dropped at its next `.await`.
///
/// `E` is any `Error + Send + Sync + 'static`, `Clone` or not: the first
/// error is kept once, in an `Arc` that is both the context's cause and
/// what `wait` returns (see [`scope`](super::scope#the-error-type)).
///
/// ```
/// use ctxkit::{group::TaskGroup, Context, Error};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::new(&Context::background());
/// group
///     .spawn(|ctx| async move {
///         // Waits forever unless the group is cancelled.
///         ctx.done().await;
///         Ok(())
///     })
///     .await;
/// group
///     .spawn(|_| async {
///         tokio::time::sleep(Duration::from_millis(5)).await;
///         Err(Error::DeadlineExceeded) // cancels the sibling
///     })
///     .await;
/// assert_eq!(group.wait().await, Err(Arc::new(Error::DeadlineExceeded)));
/// # }
/// ```
pub struct TaskGroup<E> {
    state: Arc<GroupState<E>>,
    /// Every task not yet reaped. A task finishes inside the set, so
    /// `tasks.len()` bounds the number running: the limit checks it.
    tasks: JoinSet<()>,
    limit: Option<usize>,
}

impl<E> TaskGroup<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// A group whose context derives from `parent`, with no limit.
    ///
    /// ```
    /// use ctxkit::{group::TaskGroup, Context, Error};
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let group = TaskGroup::<Error>::new(&parent);
    /// cancel.cancel();
    /// assert_eq!(group.context().err(), Some(Error::Canceled));
    /// ```
    pub fn new(parent: &Context) -> TaskGroup<E> {
        TaskGroup {
            state: Arc::new(GroupState::new(parent)),
            tasks: JoinSet::new(),
            limit: None,
        }
    }

    /// The group's context: the one every task receives a clone of.
    ///
    /// ```
    /// use ctxkit::{group::TaskGroup, Context, Error};
    ///
    /// let group = TaskGroup::<Error>::new(&Context::background());
    /// assert!(!group.context().is_done());
    /// ```
    pub fn context(&self) -> &Context {
        self.state.context()
    }

    /// Limits how many tasks run at once: `Some(n)` with `n >= 1`, or `None`
    /// for no limit (the default).
    ///
    /// # Errors
    ///
    /// [`LimitError::Zero`] for `Some(0)`; [`LimitError::TasksRunning`] if a
    /// task of the group is still running: set the limit before spawning.
    /// The limit is unchanged in both cases.
    ///
    /// ```
    /// use ctxkit::group::{LimitError, TaskGroup};
    /// use ctxkit::{Context, Error};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<Error>::new(&Context::background());
    /// group.set_limit(Some(2)).unwrap();
    /// group.spawn(|ctx| async move { ctx.done().await; Ok(()) }).await;
    /// assert_eq!(group.set_limit(None), Err(LimitError::TasksRunning { running: 1 }));
    /// # }
    /// ```
    pub fn set_limit(&mut self, limit: Option<usize>) -> Result<(), LimitError> {
        self.reap_finished();
        check_new_limit(limit, self.tasks.len())?;
        self.limit = limit;
        Ok(())
    }

    /// Spawns `task(ctx)` onto the runtime, first waiting while the limit is
    /// reached (Go's `Go`), and returns true; returns false, dropping `task`
    /// unrun, if the group's context is done (a task failed, the parent
    /// ended). A task that starts just before the group ends gets the
    /// cancelled context and is expected to return early.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    ///
    /// ```
    /// use ctxkit::{group::TaskGroup, Context};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let total = Arc::new(AtomicUsize::new(0));
    /// // Tasks that cannot fail return `()`: the group needs no error type.
    /// let mut group = TaskGroup::new(&Context::background());
    /// for n in 1..=4 {
    ///     let total = Arc::clone(&total);
    ///     let started = group
    ///         .spawn(move |_| async move {
    ///             total.fetch_add(n, Ordering::Relaxed);
    ///         })
    ///         .await;
    ///     assert!(started);
    /// }
    /// group.wait().await.unwrap();
    /// assert_eq!(total.load(Ordering::Relaxed), 10);
    ///
    /// // Once a task failed, spawning runs nothing.
    /// let mut group = TaskGroup::new(&Context::background());
    /// group.spawn(|_| async { Err(std::fmt::Error) }).await;
    /// group.context().done().await;
    /// assert!(!group.spawn(|_| async { Ok(()) }).await);
    /// # }
    /// ```
    pub async fn spawn<F, Fut>(&mut self, task: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutcome<Error = E>,
    {
        while self.is_full() && !self.context().is_done() {
            // Not `None`: a full set is not empty.
            if let Some(joined) = self.tasks.join_next().await {
                self.note(joined);
            }
        }
        if self.context().is_done() {
            return false;
        }
        self.start(task);
        true
    }

    /// Spawns `task(ctx)` if the limit allows it now and the group's context
    /// is not done, and returns true; otherwise returns false at once and
    /// drops `task` unrun (Go's `TryGo`).
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    ///
    /// ```
    /// use ctxkit::{group::TaskGroup, Context, Error};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<Error>::new(&Context::background());
    /// group.set_limit(Some(1)).unwrap();
    /// assert!(group.try_spawn(|ctx| async move { ctx.done().await; Ok(()) }));
    /// assert!(!group.try_spawn(|_| async { Ok(()) }), "the only slot is taken");
    /// # }
    /// ```
    pub fn try_spawn<F, Fut>(&mut self, task: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutcome<Error = E>,
    {
        self.reap_finished();
        if self.is_full() || self.context().is_done() {
            return false;
        }
        self.start(task);
        true
    }

    /// Waits for every task, then cancels the group's context and returns
    /// the first error (Go's `Wait`). If a task panicked, resumes the first
    /// panic instead, once all the others have finished.
    ///
    /// Dropping this future before it completes drops the group: its
    /// context is cancelled and the remaining tasks are aborted.
    ///
    /// ```
    /// use ctxkit::{group::TaskGroup, Context, Error};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<Error>::new(&Context::background());
    /// group.spawn(|_| async { Ok(()) }).await;
    /// let ctx = group.context().clone();
    /// assert_eq!(group.wait().await, Ok(()));
    /// assert_eq!(ctx.err(), Some(Error::Canceled), "the group's context ends with it");
    ///
    /// // A non-`Clone` error: `wait` returns it, shared with the cause.
    /// let mut group = TaskGroup::new(&Context::background());
    /// group.spawn(|_| async { Err(std::io::Error::other("disk full")) }).await;
    /// let ctx = group.context().clone();
    /// let err = group.wait().await.unwrap_err();
    /// assert_eq!(err.to_string(), "disk full");
    /// assert!(ctx.cause().unwrap().is::<std::io::Error>());
    /// # }
    /// ```
    pub async fn wait(mut self) -> Result<(), Arc<E>> {
        while let Some(joined) = self.tasks.join_next().await {
            self.note(joined);
        }
        self.state.finish()
    }

    fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.tasks.len() >= limit)
    }

    fn start<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutcome<Error = E>,
    {
        let state = Arc::clone(&self.state);
        self.tasks.spawn(async move {
            let on_panic = CancelOnPanic(&state);
            let outcome = task(state.context().clone()).await;
            drop(on_panic);
            state.record(outcome.into_result());
        });
    }

    fn reap_finished(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            self.note(joined);
        }
    }

    /// Keeps the payload of a panicked task for `wait`. Aborted tasks need
    /// nothing: only dropping the group aborts them.
    fn note(&self, joined: Result<(), JoinError>) {
        if let Err(err) = joined {
            if err.is_panic() {
                self.state.record_panic(err.into_panic());
            }
        }
    }
}

impl<E> Drop for TaskGroup<E> {
    /// Cancel first, so anything outside the runtime holding the context
    /// stops too; then abort the stragglers (the `JoinSet` would on its own
    /// drop, but the order matters and is kept explicit here).
    fn drop(&mut self) {
        self.state.cancel();
        self.tasks.abort_all();
    }
}

impl<E> fmt::Debug for TaskGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("context", self.state.context())
            .field("tasks", &self.tasks.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Cancels the group if dropped while its task is unwinding, so the
/// siblings stop at once rather than when `wait` reaps the panic.
struct CancelOnPanic<'a, E>(&'a GroupState<E>);

impl<E> Drop for CancelOnPanic<'_, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel_for_panic();
        }
    }
}
