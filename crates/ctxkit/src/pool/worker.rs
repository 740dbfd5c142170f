//! One worker of a pool: takes jobs until the queue closes or the context
//! ends, and keeps the account of what it did.

use super::report::{JobPanicked, Report};
use crate::context::Context;
use crate::handle::CancelHandle;
use crossbeam_channel::{select, Receiver};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// The payload of a job's panic, resumed by the pool's `join`.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// What a worker hands back when it stops.
pub(crate) struct Finished<J, R> {
    pub(crate) report: Report<J, R>,
    pub(crate) panic: Option<PanicPayload>,
}

pub(crate) struct Worker<J, H> {
    pub(crate) ctx: Context,
    pub(crate) jobs: Receiver<J>,
    /// Disconnects when `ctx` is done; shared by every worker of the pool.
    pub(crate) done: Receiver<()>,
    pub(crate) handler: Arc<H>,
    /// Only used to cancel the pool when a job panics.
    pub(crate) cancel: Arc<CancelHandle>,
}

impl<J, H> Worker<J, H> {
    /// Runs jobs until the queue is closed and empty, or the context is done.
    ///
    /// Invariant: every job taken from the queue ends up in the report, as a
    /// result or as not run, except one whose handler panicked (that panic
    /// is handed back instead).
    pub(crate) fn run<R>(self) -> Finished<J, R>
    where
        H: Fn(&Context, J) -> R,
    {
        let mut report = Report::new();
        while let Some(job) = self.next_job() {
            // `select!` picks at random among ready operations, so a job can
            // be taken just as the context ends: it was not started, so it is
            // handed back rather than run under a cancelled context.
            if self.ctx.is_done() {
                report.not_run.push(job);
                break;
            }
            match catch_unwind(AssertUnwindSafe(|| (self.handler)(&self.ctx, job))) {
                Ok(result) => report.completed.push(result),
                Err(payload) => {
                    self.cancel.cancel_with(JobPanicked);
                    return Finished {
                        report,
                        panic: Some(payload),
                    };
                }
            }
        }
        Finished {
            report,
            panic: None,
        }
    }

    /// The next job, or `None` once the queue is closed and drained or the
    /// context is done, whichever comes first.
    fn next_job(&self) -> Option<J> {
        if self.ctx.is_done() {
            return None;
        }
        select! {
            recv(self.jobs) -> job => job.ok(),
            recv(self.done) -> _ => None,
        }
    }
}
