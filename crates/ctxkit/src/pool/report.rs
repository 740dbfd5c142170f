//! What a pool hands back: [`Report`] at the end, [`SubmitError`] when it
//! refuses a job, [`JobPanicked`] as the cause when a job panics.

use std::fmt;

/// The account of a pool that has stopped: what ran, and what did not.
///
/// Every job accepted by [`Pool::submit`](super::Pool::submit) or
/// [`Pool::try_submit`](super::Pool::try_submit) is in exactly one of the
/// two lists, and `accepted` counts them: [`is_balanced`](Report::is_balanced)
/// checks it. A job that a worker had started when the pool was cancelled
/// ran to completion (it was given the cancelled context and may have cut
/// its work short); its result is in `completed`.
///
/// ```
/// # #[cfg(feature = "crossbeam")] {
/// use ctxkit::pool::Pool;
/// use ctxkit::Context;
///
/// let pool = Pool::new(&Context::background(), 1, 4, |_ctx, job: &str| job.len());
/// pool.submit("abc").unwrap();
/// let report = pool.join();
/// assert_eq!(report.completed, vec![3]);
/// assert_eq!(report.len(), 1);
/// assert!(report.is_balanced());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<J, R> {
    /// The results of the jobs that ran, in the order they finished.
    pub completed: Vec<R>,
    /// The jobs that were accepted but never started, in no particular order.
    pub not_run: Vec<J>,
    /// How many jobs `submit` and `try_submit` accepted: as many as the two
    /// lists hold together.
    pub accepted: usize,
}

impl<J, R> Report<J, R> {
    /// How many jobs the pool accepted: `completed` plus `not_run`.
    ///
    /// ```
    /// let report = ctxkit::pool::Report::<u8, u8> { completed: vec![1], not_run: vec![2, 3], accepted: 3 };
    /// assert_eq!(report.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.completed.len() + self.not_run.len()
    }

    /// True if the pool accepted no job at all.
    ///
    /// ```
    /// let report = ctxkit::pool::Report::<u8, u8> { completed: vec![], not_run: vec![], accepted: 0 };
    /// assert!(report.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every accepted job is accounted for: `completed` and
    /// `not_run` together hold `accepted` jobs. Always true of a report a
    /// pool returned; a check for tests and for reports built by hand.
    ///
    /// ```
    /// # #[cfg(feature = "crossbeam")] {
    /// use ctxkit::pool::{Pool, Report};
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 2, 8, |_ctx, n: u32| n + 1);
    /// for n in 0..5 {
    ///     pool.submit(n).unwrap();
    /// }
    /// assert!(pool.shutdown().is_balanced(), "ran or handed back, nothing lost");
    ///
    /// let lost_one = Report::<u8, u8> { completed: vec![1], not_run: vec![], accepted: 2 };
    /// assert!(!lost_one.is_balanced());
    /// # }
    /// ```
    pub fn is_balanced(&self) -> bool {
        self.len() == self.accepted
    }

    pub(crate) fn new() -> Report<J, R> {
        Report {
            completed: Vec::new(),
            not_run: Vec::new(),
            accepted: 0,
        }
    }
}

/// A job the pool did not accept, handed back with the reason.
///
/// ```
/// # #[cfg(feature = "crossbeam")] {
/// use ctxkit::pool::{Pool, SubmitError};
/// use ctxkit::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let pool = Pool::new(&ctx, 1, 1, |_ctx, job: u32| job);
/// cancel.cancel();
/// match pool.submit(7) {
///     Err(SubmitError::Stopped(job)) => assert_eq!(job, 7),
///     other => panic!("unexpected {other:?}"),
/// }
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum SubmitError<J> {
    /// The queue was full ([`Pool::try_submit`](super::Pool::try_submit)
    /// only): try again later, or use `submit` to wait for room.
    Full(J),
    /// The pool's context is done, so its workers are stopping or stopped:
    /// the job was not queued and will never run in this pool.
    Stopped(J),
}

impl<J> SubmitError<J> {
    /// The job that was not accepted.
    ///
    /// ```
    /// let err = ctxkit::pool::SubmitError::Full("job");
    /// assert_eq!(err.into_job(), "job");
    /// ```
    pub fn into_job(self) -> J {
        match self {
            SubmitError::Full(job) | SubmitError::Stopped(job) => job,
        }
    }
}

/// Leaves the job out, so that any job type can be reported with `?`.
impl<J> fmt::Debug for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<J> fmt::Display for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Full(_) => {
                "the pool's queue is full; retry later, or use submit to wait for room"
            }
            SubmitError::Stopped(_) => {
                "the pool's context is done, so it accepts no more jobs; the job is handed back unrun"
            }
        })
    }
}

impl<J> std::error::Error for SubmitError<J> {}

/// The cause of a pool's context when one of its jobs panicked.
///
/// The other workers stop as on any cancellation, and
/// [`Pool::join`](super::Pool::join) resumes the panic once they have.
///
/// ```
/// # #[cfg(feature = "crossbeam")] {
/// use ctxkit::pool::{JobPanicked, Pool};
/// use ctxkit::Context;
///
/// let pool = Pool::new(&Context::background(), 1, 1, |_ctx, _job: ()| panic!("boom"));
/// pool.submit(()).unwrap();
/// pool.context().wait();
/// assert!(pool.context().cause().unwrap().is::<JobPanicked>());
/// assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.join())).is_err());
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct JobPanicked;

impl fmt::Display for JobPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a job of the pool panicked; the pool's join resumes the panic")
    }
}

impl std::error::Error for JobPanicked {}
