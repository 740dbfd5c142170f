//! The errgroup on threads: [`scope`] and [`ScopedGroup`], on
//! `std::thread::scope` so tasks may borrow from the caller.

use super::limit::{LimitError, Slots};
use super::outcome::TaskOutcome;
use super::state::GroupState;
use crate::context::Context;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

/// Runs `f` with a new [`ScopedGroup`] whose context derives from `parent`,
/// waits for every task it spawned, and returns `f`'s value or the group's
/// first error: Go's `errgroup.WithContext` followed by `Wait`.
///
/// # Contract
///
/// - Each task gets the group's context and returns `Result<(), E>`, or
///   `()` if it cannot fail (see [`TaskOutcome`]). Tasks
///   run on scoped threads, so they may borrow anything that outlives the
///   call to `scope` (results are typically written through `&mut` slots).
/// - The first task to fail cancels the group's context with its error as
///   the [cause](Context::cause); the other tasks see `Err(Canceled)` and
///   should return early. Tasks still run to completion: nothing is killed.
/// - `scope` returns once `f` has returned and every task has finished.
///   Then the group's context is cancelled (cause: the first error, else
///   [`Canceled`](crate::Error::Canceled)), and the result is `Err(first
///   error)` or `Ok(value of f)`.
/// - A task spawned once the group's context is done does not run:
///   [`spawn`](ScopedGroup::spawn) returns false.
/// - If a task panics, the group is cancelled at once with [`TaskPanicked`]
///   as the cause, and once every task has stopped, `scope` resumes that
///   panic (the first one, if several panicked) in the caller. A panic
///   outranks errors. If `f` itself panics, the group is cancelled, the
///   tasks are waited for, and the panic continues.
///
/// # The error type
///
/// Any `E: Error + Send + Sync + 'static`, `Clone` or not (`std::io::Error`
/// works). The first error is kept once, in an `Arc`: it is both the
/// context's cause (siblings `downcast_ref::<E>()` it) and the `Err` this
/// returns, the same value, as in Go. `Arc::unwrap_or_clone(err)` gives a
/// `Clone` error back by value; `Arc::into_inner(err)` any error, once no
/// context of the group is left (none is, unless one was kept past the
/// group). The error type is usually inferred from the tasks; name it with
/// `scope::<E, _, _>` when only `Ok(())` and `?` say what it is.
///
/// [`TaskPanicked`]: super::TaskPanicked
///
/// ```
/// use ctxkit::{group, Context};
/// use std::num::ParseIntError;
///
/// let inputs = ["1", "2", "x", "4"];
/// let mut parsed = [0u32; 4];
/// let result = group::scope::<ParseIntError, _, _>(&Context::background(), |g| {
///     for (slot, input) in parsed.iter_mut().zip(inputs) {
///         g.spawn(move |ctx| {
///             if ctx.is_done() {
///                 return Ok(()); // a sibling failed: skip the work
///             }
///             *slot = input.parse()?;
///             Ok(())
///         });
///     }
/// });
/// assert_eq!(result.unwrap_err().to_string(), "invalid digit found in string");
/// assert!(parsed.iter().all(|&n| n == 0 || n == 1 || n == 2 || n == 4));
/// ```
pub fn scope<'env, E, F, R>(parent: &Context, f: F) -> Result<R, Arc<E>>
where
    E: std::error::Error + Send + Sync + 'static,
    F: for<'scope> FnOnce(&ScopedGroup<'scope, 'env, E>) -> R,
{
    let shared = Arc::new(Shared {
        state: GroupState::new(parent),
        slots: Slots::new(),
    });
    let value = thread::scope(|scope| {
        let group = ScopedGroup {
            scope,
            shared: Arc::clone(&shared),
        };
        f(&group)
    });
    shared.state.finish().map(|()| value)
}

/// A group of tasks on scoped threads, handed to the closure of [`scope`].
///
/// See [`scope`] for the contract. Tasks do not receive the group: spawn
/// from the closure given to `scope`, which may loop over a channel if tasks
/// discover more work.
///
/// ```
/// use ctxkit::{group, Context};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let (found, jobs) = std::sync::mpsc::channel();
/// for n in 1..=3 {
///     found.send(n).unwrap();
/// }
/// drop(found);
/// let total = AtomicUsize::new(0);
/// group::scope(&Context::background(), |g| {
///     assert!(!g.context().is_done());
///     for n in jobs {
///         // Spawned from the closure as work turns up; tasks may borrow.
///         let total = &total;
///         g.spawn(move |_ctx| {
///             total.fetch_add(n, Ordering::Relaxed);
///         });
///     }
/// })
/// .unwrap();
/// assert_eq!(total.into_inner(), 6);
/// ```
pub struct ScopedGroup<'scope, 'env: 'scope, E> {
    scope: &'scope thread::Scope<'scope, 'env>,
    shared: Arc<Shared<E>>,
}

struct Shared<E> {
    state: GroupState<E>,
    slots: Slots,
}

impl<'scope, E> ScopedGroup<'scope, '_, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// The group's context: the one every task receives. It is cancelled by
    /// the first error, a panic, the parent, or the end of the group.
    ///
    /// ```
    /// use ctxkit::{group, Context, Error};
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let ended = group::scope::<Error, _, _>(&parent, |g| {
    ///     cancel.cancel(); // the parent's cancellation reaches the group
    ///     g.context().err()
    /// });
    /// assert_eq!(ended, Ok(Some(Error::Canceled)));
    /// ```
    pub fn context(&self) -> &Context {
        self.shared.state.context()
    }

    /// Limits how many tasks run at once: `Some(n)` with `n >= 1`, or `None`
    /// for no limit (the default).
    ///
    /// # Errors
    ///
    /// [`LimitError::Zero`] for `Some(0)`; [`LimitError::TasksRunning`] if a
    /// task of the group is running: set the limit before spawning. The
    /// limit is unchanged in both cases.
    ///
    /// ```
    /// use ctxkit::{group, Context, Error};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    /// group::scope(&Context::background(), |g| {
    ///     g.set_limit(Some(2)).unwrap();
    ///     for _ in 0..8 {
    ///         g.spawn(|_| {
    ///             let now = running.fetch_add(1, Ordering::SeqCst) + 1;
    ///             peak.fetch_max(now, Ordering::SeqCst);
    ///             running.fetch_sub(1, Ordering::SeqCst);
    ///         });
    ///     }
    /// })
    /// .unwrap();
    /// assert!(peak.into_inner() <= 2);
    /// ```
    pub fn set_limit(&self, limit: Option<usize>) -> Result<(), LimitError> {
        self.shared.slots.set_limit(limit)
    }

    /// Runs `task` on a new scoped thread, blocking first while the limit is
    /// reached (Go's `Go`), and returns true; returns false, dropping `task`
    /// unrun, if the group's context is done (a task failed, the parent
    /// ended): nothing is left to do that the group will use.
    ///
    /// A task that starts just before the group ends still runs: it gets
    /// the cancelled context and is expected to return early.
    ///
    /// ```
    /// use ctxkit::{group, Context, Error};
    /// use std::sync::Arc;
    ///
    /// let (parent, _cancel) = Context::background().with_cancel();
    /// let result = group::scope(&parent, |g| {
    ///     assert!(g.spawn(|_| Err(Error::DeadlineExceeded)));
    ///     g.context().wait(); // the failure ends the group's context...
    ///     assert!(!g.spawn(|_| Err(Error::Canceled)), "...and no task starts after it");
    /// });
    /// assert_eq!(result, Err(Arc::new(Error::DeadlineExceeded)));
    /// ```
    pub fn spawn<F, O>(&self, task: F) -> bool
    where
        F: FnOnce(&Context) -> O + Send + 'scope,
        O: TaskOutcome<Error = E>,
    {
        if self.context().is_done() {
            return false;
        }
        self.shared.slots.acquire();
        self.start_unless_done(task)
    }

    /// Runs `task` on a new scoped thread if the limit allows it now and the
    /// group's context is not done, and returns true; otherwise returns
    /// false at once and drops `task` unrun (Go's `TryGo`).
    ///
    /// ```
    /// use ctxkit::{group, Context, Error};
    ///
    /// let (release, released) = std::sync::mpsc::channel::<()>();
    /// group::scope(&Context::background(), |g| {
    ///     g.set_limit(Some(1)).unwrap();
    ///     assert!(g.try_spawn(move |_| {
    ///         released.recv().ok();
    ///     }));
    ///     assert!(!g.try_spawn(|_| ()), "the only slot is taken");
    ///     release.send(()).unwrap();
    /// })
    /// .unwrap();
    /// ```
    pub fn try_spawn<F, O>(&self, task: F) -> bool
    where
        F: FnOnce(&Context) -> O + Send + 'scope,
        O: TaskOutcome<Error = E>,
    {
        if self.context().is_done() || !self.shared.slots.try_acquire() {
            return false;
        }
        self.start_unless_done(task)
    }

    /// Starts a task on a slot already taken for it, unless the group ended
    /// meanwhile (then the slot goes back and the task is dropped).
    fn start_unless_done<F, O>(&self, task: F) -> bool
    where
        F: FnOnce(&Context) -> O + Send + 'scope,
        O: TaskOutcome<Error = E>,
    {
        if self.context().is_done() {
            self.shared.slots.release();
            return false;
        }
        self.start(task);
        true
    }

    /// Starts a task on a slot already taken for it.
    fn start<F, O>(&self, task: F)
    where
        F: FnOnce(&Context) -> O + Send + 'scope,
        O: TaskOutcome<Error = E>,
    {
        // The slot goes back when the thread ends, or when its closure is
        // dropped unrun because the thread could not be created.
        let slot = SlotGuard(Arc::clone(&self.shared));
        self.scope.spawn(move || {
            let shared = &slot.0;
            match catch_unwind(AssertUnwindSafe(|| task(shared.state.context()))) {
                Ok(outcome) => shared.state.record(outcome.into_result()),
                Err(payload) => shared.state.record_panic(payload),
            }
        });
    }
}

impl<E> Drop for ScopedGroup<'_, '_, E> {
    /// If the closure of [`scope`] panics, the tasks are told to stop before
    /// `std::thread::scope` waits for them.
    fn drop(&mut self) {
        if thread::panicking() {
            self.shared.state.cancel();
        }
    }
}

impl<E> fmt::Debug for ScopedGroup<'_, '_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedGroup")
            .field("context", self.shared.state.context())
            .finish_non_exhaustive()
    }
}

/// A taken slot of the group's limit.
struct SlotGuard<E>(Arc<Shared<E>>);

impl<E> Drop for SlotGuard<E> {
    fn drop(&mut self) {
        self.0.slots.release();
    }
}
