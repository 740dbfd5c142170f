//! The concurrency limit of a group: [`LimitError`], and the slots that
//! enforce it for threads.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Why a group refused a new limit.
///
/// ```
/// use ctxkit::group::{self, LimitError};
/// use ctxkit::Context;
///
/// let (release, released) = std::sync::mpsc::channel::<()>();
/// group::scope::<ctxkit::Error, _, _>(&Context::background(), |g| {
///     assert_eq!(g.set_limit(Some(0)), Err(LimitError::Zero));
///     g.spawn(move |_| {
///         released.recv().ok();
///         Ok(())
///     });
///     assert_eq!(g.set_limit(Some(2)), Err(LimitError::TasksRunning { running: 1 }));
///     release.send(()).unwrap(); // let the task finish
/// })
/// .unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitError {
    /// A limit of zero would block every `spawn` forever.
    Zero,
    /// The limit can only change while no task of the group is running
    /// (as in Go's `SetLimit`): set it before the first `spawn`.
    TasksRunning {
        /// How many tasks were running when the change was refused.
        running: usize,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::Zero => f.write_str(
                "a group limit of 0 would block every spawn forever; use at least 1, or None for no limit",
            ),
            LimitError::TasksRunning { running } => write!(
                f,
                "cannot change the limit of a group while {running} of its tasks are running; \
                 set the limit before the first spawn"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// Checks a requested limit against the number of running tasks.
pub(crate) fn check_new_limit(limit: Option<usize>, running: usize) -> Result<(), LimitError> {
    if limit == Some(0) {
        return Err(LimitError::Zero);
    }
    if running > 0 {
        return Err(LimitError::TasksRunning { running });
    }
    Ok(())
}

/// A counting semaphore for the threads of a scoped group.
///
/// Invariant: `running <= limit` whenever a limit is set, because a slot is
/// only taken under the lock after checking it, and the limit only changes
/// while `running == 0`.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    running: usize,
    limit: Option<usize>,
}

impl SlotState {
    fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.running >= limit)
    }
}

impl Slots {
    pub(crate) fn new() -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                running: 0,
                limit: None,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn set_limit(&self, limit: Option<usize>) -> Result<(), LimitError> {
        let mut state = self.lock();
        check_new_limit(limit, state.running)?;
        state.limit = limit;
        Ok(())
    }

    /// Takes a slot, blocking while the limit is reached.
    pub(crate) fn acquire(&self) {
        let mut state = self.lock();
        while state.is_full() {
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.running += 1;
    }

    /// Takes a slot if one is free.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        if state.is_full() {
            return false;
        }
        state.running += 1;
        true
    }

    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.running -= 1;
        drop(state);
        self.freed.notify_one();
    }

    /// No user code runs under this lock, so poisoning cannot leave the
    /// counter half-updated.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
