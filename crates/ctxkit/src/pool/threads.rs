//! [`Pool`]: the worker pool on threads.

use super::report::{Report, SubmitError};
use super::worker::{Finished, Worker};
use crate::context::Context;
use crate::handle::CancelHandle;
use crossbeam_channel::{select, Receiver, SendError, Sender, TrySendError};
use std::fmt;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// A fixed set of worker threads running one handler over jobs from a
/// bounded queue, under a context derived from a parent.
///
/// # Contract
///
/// - [`submit`](Pool::submit) queues a job, waiting while the queue is
///   full; [`try_submit`](Pool::try_submit) never waits. A job that is not
///   accepted comes back in the [`SubmitError`].
/// - Each worker calls `handler(&ctx, job)` for one job at a time. When the
///   pool's context is done (the parent is cancelled, [`cancel`](Pool::cancel)
///   or [`shutdown`](Pool::shutdown) is called, or a job panics), workers
///   take no new job; a job already started runs to completion with the
///   cancelled context, which it may check to stop early.
/// - [`join`](Pool::join) closes the queue, lets the workers finish what is
///   queued (unless the context ends first) and returns the [`Report`]:
///   every accepted job is either in `completed` (its result) or in
///   `not_run` (the job itself). Nothing is dropped silently.
/// - If a job panics, the pool is cancelled with
///   [`JobPanicked`](super::JobPanicked) as the cause, and `join` (or
///   `shutdown`) resumes the panic once every worker has stopped.
/// - Dropping a pool without joining it cancels it and waits for the
///   workers; the report, queued jobs included, is then discarded. Call
///   `join` or `shutdown` to get it.
///
/// ```
/// use ctxkit::pool::Pool;
/// use ctxkit::{Context, Error};
/// use std::time::Duration;
///
/// let pool = Pool::new(&Context::background(), 2, 8, |ctx, ms: u64| {
///     // A job that stops early when the pool is cancelled.
///     ctx.sleep(Duration::from_millis(ms)).map(|()| ms)
/// });
/// for ms in [1, 2, 3_600_000, 3_600_000] {
///     pool.submit(ms).unwrap();
/// }
/// // Cancels: hour-long jobs that had started end early, the rest come back.
/// let report = pool.shutdown();
/// assert_eq!(report.len(), 4, "every job accounted for");
/// assert!(report.completed.iter().all(|r| matches!(r, Ok(1 | 2) | Err(Error::Canceled))));
/// ```
pub struct Pool<J, R> {
    ctx: Context,
    cancel: Arc<CancelHandle>,
    /// `None` once `join` has closed the queue.
    queue: Option<Sender<J>>,
    /// The queue's far end, to hand back the jobs no worker took.
    backlog: Receiver<J>,
    done: Receiver<()>,
    /// Empty once joined.
    workers: Vec<JoinHandle<Finished<J, R>>>,
    /// Jobs accepted so far, for [`Report::accepted`].
    accepted: AtomicUsize,
}

impl<J, R> Pool<J, R>
where
    J: Send + 'static,
    R: Send + 'static,
{
    /// Starts `workers` threads running `handler` over jobs from a queue
    /// that holds at most `capacity` jobs (0 makes every `submit` wait for a
    /// worker to take the job). The pool's context derives from `parent`.
    ///
    /// # Panics
    ///
    /// If `workers` is 0, or if the OS cannot create a thread.
    ///
    /// ```
    /// use ctxkit::pool::Pool;
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 3, 0, |_ctx, s: String| s.to_uppercase());
    /// pool.submit("go".to_string()).unwrap();
    /// assert_eq!(pool.join().completed, vec!["GO".to_string()]);
    /// ```
    pub fn new<H>(parent: &Context, workers: usize, capacity: usize, handler: H) -> Pool<J, R>
    where
        H: Fn(&Context, J) -> R + Send + Sync + 'static,
    {
        assert!(workers > 0, "a pool needs at least one worker");
        let (ctx, cancel) = parent.with_cancel();
        let cancel = Arc::new(cancel);
        let (queue, backlog) = crossbeam_channel::bounded(capacity);
        let done = ctx.done_receiver();
        let handler = Arc::new(handler);
        let workers = (0..workers)
            .map(|index| {
                let worker = Worker {
                    ctx: ctx.clone(),
                    jobs: backlog.clone(),
                    done: done.clone(),
                    handler: Arc::clone(&handler),
                    cancel: Arc::clone(&cancel),
                };
                thread::Builder::new()
                    .name(format!("ctxkit-pool-{index}"))
                    .spawn(move || worker.run())
                    .expect("the OS could not create a pool worker thread")
            })
            .collect();
        Pool {
            ctx,
            cancel,
            queue: Some(queue),
            backlog,
            done,
            workers,
            accepted: AtomicUsize::new(0),
        }
    }

    /// The pool's context: the one every job receives.
    ///
    /// ```
    /// use ctxkit::pool::Pool;
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 1, 1, |_ctx, job: u8| job);
    /// assert!(!pool.context().is_done());
    /// pool.cancel();
    /// assert!(pool.context().is_done());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Queues `job`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Stopped`] with the job if the pool's context is done,
    /// before or while waiting for room.
    ///
    /// ```
    /// use ctxkit::pool::{Pool, SubmitError};
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 1, 1, |_ctx, n: u32| n + 1);
    /// pool.submit(1).unwrap();
    /// pool.cancel();
    /// assert_eq!(pool.submit(2), Err(SubmitError::Stopped(2)));
    /// assert_eq!(pool.join().len(), 1);
    /// ```
    pub fn submit(&self, job: J) -> Result<(), SubmitError<J>> {
        if self.ctx.is_done() {
            return Err(SubmitError::Stopped(job));
        }
        let queue = self.open_queue();
        let sent = select! {
            send(queue, job) -> sent => sent.map_err(|SendError(job)| SubmitError::Stopped(job)),
            recv(self.done) -> _ => Err(SubmitError::Stopped(job)),
        };
        self.count(sent)
    }

    /// Queues `job` if there is room now.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job if the queue is full;
    /// [`SubmitError::Stopped`] with the job if the pool's context is done.
    ///
    /// ```
    /// use ctxkit::pool::{Pool, SubmitError};
    /// use ctxkit::Context;
    ///
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let pool = Pool::new(&Context::background(), 1, 1, move |ctx, job: u32| {
    ///     started_tx.send(job).unwrap();
    ///     ctx.wait(); // busy until the pool is cancelled
    /// });
    /// pool.submit(1).unwrap();
    /// started.recv().unwrap(); // the worker is busy with job 1
    /// pool.try_submit(2).unwrap(); // takes the one queue slot
    /// assert_eq!(pool.try_submit(3), Err(SubmitError::Full(3)));
    /// let report = pool.shutdown();
    /// assert_eq!((report.completed.len(), report.not_run), (1, vec![2]));
    /// ```
    pub fn try_submit(&self, job: J) -> Result<(), SubmitError<J>> {
        if self.ctx.is_done() {
            return Err(SubmitError::Stopped(job));
        }
        let sent = self.open_queue().try_send(job).map_err(|err| match err {
            TrySendError::Full(job) => SubmitError::Full(job),
            TrySendError::Disconnected(job) => SubmitError::Stopped(job),
        });
        self.count(sent)
    }

    /// Cancels the pool's context: workers take no new job, and the jobs
    /// being run see the cancellation. Returns at once; call
    /// [`join`](Pool::join) to wait for the workers and get the report.
    ///
    /// ```
    /// use ctxkit::pool::Pool;
    /// use ctxkit::{Context, Error};
    ///
    /// let pool = Pool::new(&Context::background(), 1, 1, |ctx, _job: ()| ctx.wait());
    /// pool.submit(()).unwrap();
    /// pool.cancel();
    /// assert_eq!(pool.join().len(), 1);
    /// ```
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Closes the queue, waits for the workers to finish the queued jobs
    /// (or to stop early if the context ends meanwhile), then cancels the
    /// pool's context and returns the report of every accepted job.
    ///
    /// # Panics
    ///
    /// Resumes the panic of a job that panicked, once every worker has
    /// stopped.
    ///
    /// ```
    /// use ctxkit::pool::Pool;
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 2, 2, |_ctx, n: u32| n * 2);
    /// for n in 0..5 {
    ///     pool.submit(n).unwrap();
    /// }
    /// let mut doubled = pool.join().completed;
    /// doubled.sort();
    /// assert_eq!(doubled, vec![0, 2, 4, 6, 8]);
    /// ```
    pub fn join(mut self) -> Report<J, R> {
        self.queue = None;
        self.collect()
    }

    /// Cancels the pool, waits for the running jobs to finish, and returns
    /// the report: queued jobs come back in `not_run`.
    ///
    /// # Panics
    ///
    /// Resumes the panic of a job that panicked, once every worker has
    /// stopped.
    ///
    /// ```
    /// use ctxkit::pool::Pool;
    /// use ctxkit::Context;
    ///
    /// let pool = Pool::new(&Context::background(), 1, 8, |ctx, _job: u32| ctx.wait());
    /// for job in 0..5 {
    ///     pool.submit(job).unwrap();
    /// }
    /// let report = pool.shutdown();
    /// assert_eq!(report.len(), 5);
    /// assert!(report.completed.len() <= 1, "at most the one started job ran");
    /// ```
    pub fn shutdown(self) -> Report<J, R> {
        self.cancel();
        self.join()
    }

    /// Counts an accepted job.
    fn count(&self, sent: Result<(), SubmitError<J>>) -> Result<(), SubmitError<J>> {
        if sent.is_ok() {
            // Relaxed: read by `collect`, which owns the pool, so every
            // submit has returned before it.
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    fn open_queue(&self) -> &Sender<J> {
        self.queue
            .as_ref()
            .expect("the queue stays open until join consumes the pool")
    }

    /// Waits for every worker, then gathers their reports and what is left
    /// in the queue: the workers have stopped, so nothing else can take it.
    fn collect(&mut self) -> Report<J, R> {
        let mut report = Report::new();
        let mut panic = None;
        for worker in self.workers.drain(..) {
            let finished = worker
                .join()
                .expect("pool workers catch the panics of their jobs");
            report.completed.extend(finished.report.completed);
            report.not_run.extend(finished.report.not_run);
            panic = panic.or(finished.panic);
        }
        report.not_run.extend(self.backlog.try_iter());
        report.accepted = self.accepted.load(Ordering::Relaxed);
        self.cancel.cancel();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        report
    }
}

impl<J, R> Drop for Pool<J, R> {
    /// Stops the workers and waits for them; the report is discarded.
    fn drop(&mut self) {
        self.cancel.cancel();
        self.queue = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<J, R> fmt::Debug for Pool<J, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("context", &self.ctx)
            .field("workers", &self.workers.len())
            .field("queued", &self.backlog.len())
            .finish_non_exhaustive()
    }
}
