//! A worker pool: N long-lived workers fed by a bounded queue, stopped by a
//! context. [`Pool`] runs threads (feature `crossbeam`), [`TaskPool`] runs
//! tokio tasks (feature `tokio`); both keep the same account.
//!
//! Go's worker pool is a buffered `jobs` channel, N goroutines ranging over
//! it, and a context to stop them. [`Pool`] is that, with the bookkeeping Go
//! leaves to you: every job handed to the pool is accounted for. It either
//! ran, and its result is in the [`Report`] returned by [`Pool::join`] or
//! [`Pool::shutdown`], or it did not, and it comes back to you: in a
//! [`SubmitError`] if the pool refused it, in [`Report::not_run`] if it was
//! queued when the pool stopped. [`Report::is_balanced`] checks the account.
//!
//! Both pools read `capacity` the same way: the number of jobs the queue
//! holds, and 0 for a rendezvous (`submit` waits until a worker takes the
//! job; `try_submit` succeeds only while a worker is waiting for one).
//!
//! ```
//! # #[cfg(feature = "crossbeam")] {
//! use ctxkit::pool::Pool;
//! use ctxkit::Context;
//!
//! // 4 workers, at most 16 queued jobs; each job squares a number.
//! let pool = Pool::new(&Context::background(), 4, 16, |_ctx, n: u64| n * n);
//! for n in 1..=10 {
//!     pool.submit(n).unwrap();
//! }
//! let report = pool.join(); // runs what is queued, then stops the workers
//! assert!(report.not_run.is_empty());
//! assert_eq!(report.completed.iter().sum::<u64>(), 385);
//! # }
//! ```

#[cfg(any(feature = "crossbeam", feature = "tokio"))]
mod report;
#[cfg(feature = "tokio")]
mod tasks;
#[cfg(feature = "crossbeam")]
mod threads;
#[cfg(feature = "crossbeam")]
mod worker;

#[cfg(any(feature = "crossbeam", feature = "tokio"))]
pub use report::{JobPanicked, Report, SubmitError};
#[cfg(feature = "tokio")]
pub use tasks::TaskPool;
#[cfg(feature = "crossbeam")]
pub use threads::Pool;
