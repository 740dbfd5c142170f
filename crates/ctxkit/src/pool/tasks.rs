//! [`TaskPool`]: the worker pool on tokio (feature `tokio`).

use super::report::{JobPanicked, Report, SubmitError};
use crate::context::Context;
use crate::handle::CancelHandle;
use std::fmt;
use std::future::Future;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinSet;

/// The queue's receiving end, shared by the workers one `recv` at a time.
type Backlog<J> = Arc<Mutex<mpsc::Receiver<J>>>;

/// A fixed set of tokio tasks running one async handler over jobs from a
/// bounded queue, under a context derived from a parent: the async twin of
/// [`Pool`](super::Pool), with the same contract.
///
/// - [`submit`](TaskPool::submit) waits (asynchronously) while the queue is
///   full and is cancel-safe: if its future is dropped, the job was not
///   queued. [`try_submit`](TaskPool::try_submit) never waits. A refused job
///   comes back in the [`SubmitError`].
/// - When the pool's context is done, workers take no new job; a job already
///   started runs to completion with the cancelled context.
/// - [`join`](TaskPool::join) closes the queue, lets the workers finish what
///   is queued (unless the context ends first) and returns the [`Report`]:
///   every accepted job is in `completed` or in `not_run`.
/// - A panicking job cancels the pool with [`JobPanicked`] as the cause;
///   `join` resumes the panic once every worker has stopped.
/// - Dropping the pool without joining it cancels its context, then aborts
///   its workers: a job in progress is dropped at its next `.await`, and the
///   report is discarded.
///
/// ```
/// use ctxkit::pool::TaskPool;
/// use ctxkit::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = TaskPool::new(&Context::background(), 4, 16, |_ctx, n: u64| async move { n * n });
/// for n in 1..=10 {
///     pool.submit(n).await.unwrap();
/// }
/// let report = pool.join().await;
/// assert_eq!(report.completed.iter().sum::<u64>(), 385);
/// # }
/// ```
pub struct TaskPool<J, R> {
    ctx: Context,
    cancel: Arc<CancelHandle>,
    /// `None` once `join` has closed the queue.
    queue: Option<mpsc::Sender<J>>,
    backlog: Backlog<J>,
    /// Filled by the workers as they go, so a worker's panic loses nothing
    /// but the job that panicked.
    report: Arc<StdMutex<Report<J, R>>>,
    workers: JoinSet<()>,
    /// Capacity 0 only: permits given by workers ready to take a job.
    ready: Option<Arc<Semaphore>>,
    /// Jobs accepted so far, for [`Report::accepted`].
    accepted: AtomicUsize,
}

impl<J, R> TaskPool<J, R>
where
    J: Send + 'static,
    R: Send + 'static,
{
    /// Spawns `workers` tasks on the current runtime, running `handler` over
    /// jobs from a queue that holds at most `capacity` jobs (0 makes every
    /// `submit` wait for a worker to take the job, and `try_submit` succeed
    /// only when a worker is waiting for one: a rendezvous, as for
    /// [`Pool`](super::Pool)). The pool's context derives from `parent`.
    ///
    /// # Panics
    ///
    /// If `workers` is 0, or if called outside a tokio runtime.
    ///
    /// ```
    /// use ctxkit::pool::TaskPool;
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 2, 1, |_ctx, s: String| async move {
    ///     s.to_uppercase()
    /// });
    /// pool.submit("go".to_string()).await.unwrap();
    /// assert_eq!(pool.join().await.completed, vec!["GO".to_string()]);
    /// # }
    /// ```
    pub fn new<H, Fut>(parent: &Context, workers: usize, capacity: usize, handler: H) -> Self
    where
        H: Fn(Context, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        assert!(workers > 0, "a pool needs at least one worker");
        let (ctx, cancel) = parent.with_cancel();
        let cancel = Arc::new(cancel);
        // A rendezvous: each job waits for a worker's permit, and the queue
        // holds at most one job per waiting worker (see `Worker::next_job`).
        let ready = (capacity == 0).then(|| Arc::new(Semaphore::new(0)));
        let (queue, backlog) = mpsc::channel(if capacity == 0 { workers } else { capacity });
        let backlog = Arc::new(Mutex::new(backlog));
        let report = Arc::new(StdMutex::new(Report::new()));
        let handler = Arc::new(handler);
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let worker = Worker {
                ctx: ctx.clone(),
                jobs: Arc::clone(&backlog),
                report: Arc::clone(&report),
                cancel: Arc::clone(&cancel),
                ready: ready.clone(),
            };
            tasks.spawn(worker.run(Arc::clone(&handler)));
        }
        TaskPool {
            ctx,
            cancel,
            queue: Some(queue),
            backlog,
            report,
            workers: tasks,
            ready,
            accepted: AtomicUsize::new(0),
        }
    }

    /// The pool's context: the one every job receives a clone of.
    ///
    /// ```
    /// use ctxkit::pool::TaskPool;
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 1, 1, |_ctx, n: u8| async move { n });
    /// pool.cancel();
    /// assert!(pool.context().is_done());
    /// # }
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
    /// use ctxkit::pool::{SubmitError, TaskPool};
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 1, 1, |_ctx, n: u32| async move { n });
    /// pool.submit(1).await.unwrap();
    /// pool.cancel();
    /// assert_eq!(pool.submit(2).await, Err(SubmitError::Stopped(2)));
    /// assert_eq!(pool.join().await.len(), 1);
    /// # }
    /// ```
    pub async fn submit(&self, job: J) -> Result<(), SubmitError<J>> {
        if self.ctx.is_done() {
            return Err(SubmitError::Stopped(job));
        }
        if let Some(ready) = &self.ready {
            tokio::select! {
                biased;
                _ = self.ctx.done() => return Err(SubmitError::Stopped(job)),
                // Never closed; a permit taken is used at once, below, with
                // no `.await` in between, so dropping this future loses none.
                permit = ready.acquire() => permit.expect("never closed").forget(),
            }
            match self.open_queue().try_send(job) {
                Ok(()) => return self.count(Ok(())),
                Err(TrySendError::Closed(job)) => return Err(SubmitError::Stopped(job)),
                // Only if workers left with permits unused, as the pool
                // stopped: wait as a queue with room would.
                Err(TrySendError::Full(returned)) => return self.send(returned).await,
            }
        }
        self.send(job).await
    }

    /// Waits for room in the queue, unless the pool stops first.
    async fn send(&self, job: J) -> Result<(), SubmitError<J>> {
        let queue = self.open_queue();
        // `reserve` rather than `send`: dropping it loses no job.
        let sent = tokio::select! {
            biased;
            _ = self.ctx.done() => Err(SubmitError::Stopped(job)),
            permit = queue.reserve() => match permit {
                Ok(permit) => {
                    permit.send(job);
                    Ok(())
                }
                Err(_) => Err(SubmitError::Stopped(job)),
            },
        };
        self.count(sent)
    }

    /// Counts an accepted job.
    fn count(&self, sent: Result<(), SubmitError<J>>) -> Result<(), SubmitError<J>> {
        if sent.is_ok() {
            // Relaxed: read by `join`, which owns the pool, so every submit
            // has returned before it.
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Queues `job` if there is room now.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job if the queue is full;
    /// [`SubmitError::Stopped`] with the job if the pool's context is done.
    ///
    /// ```
    /// use ctxkit::pool::{SubmitError, TaskPool};
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // On this single-threaded runtime the worker cannot run before the
    /// // next `.await`, so the second job finds the queue full.
    /// let pool = TaskPool::new(&Context::background(), 1, 1, |_ctx, n: u32| async move { n });
    /// pool.try_submit(1).unwrap();
    /// assert_eq!(pool.try_submit(2), Err(SubmitError::Full(2)));
    /// assert_eq!(pool.join().await.completed, vec![1]);
    /// # }
    /// ```
    pub fn try_submit(&self, job: J) -> Result<(), SubmitError<J>> {
        if self.ctx.is_done() {
            return Err(SubmitError::Stopped(job));
        }
        if let Some(ready) = &self.ready {
            match ready.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(SubmitError::Full(job)), // no worker waiting
            }
        }
        let sent = self.open_queue().try_send(job).map_err(|err| match err {
            TrySendError::Full(job) => SubmitError::Full(job),
            TrySendError::Closed(job) => SubmitError::Stopped(job),
        });
        self.count(sent)
    }

    /// Cancels the pool's context: workers take no new job, and the jobs
    /// being run see the cancellation. Returns at once.
    ///
    /// ```
    /// use ctxkit::pool::TaskPool;
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 1, 4, |ctx, _job: ()| async move {
    ///     ctx.done().await
    /// });
    /// pool.submit(()).await.unwrap();
    /// pool.cancel();
    /// assert_eq!(pool.join().await.len(), 1);
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Closes the queue, waits for the workers to finish the queued jobs (or
    /// to stop early if the context ends meanwhile), then cancels the pool's
    /// context and returns the report of every accepted job.
    ///
    /// # Panics
    ///
    /// Resumes the panic of a job that panicked, once every worker has
    /// stopped.
    ///
    /// ```
    /// use ctxkit::pool::TaskPool;
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 2, 2, |_ctx, n: u32| async move { n * 2 });
    /// for n in 0..5 {
    ///     pool.submit(n).await.unwrap();
    /// }
    /// let mut doubled = pool.join().await.completed;
    /// doubled.sort();
    /// assert_eq!(doubled, vec![0, 2, 4, 6, 8]);
    /// # }
    /// ```
    pub async fn join(mut self) -> Report<J, R> {
        self.queue = None;
        let mut panic = None;
        while let Some(joined) = self.workers.join_next().await {
            if let Err(err) = joined {
                if err.is_panic() {
                    panic.get_or_insert(err.into_panic());
                }
            }
        }
        let mut report = std::mem::replace(&mut *lock(&self.report), Report::new());
        // The workers are gone: what is left in the queue never started.
        let mut backlog = self.backlog.lock().await;
        while let Ok(job) = backlog.try_recv() {
            report.not_run.push(job);
        }
        report.accepted = self.accepted.load(Ordering::Relaxed);
        self.cancel.cancel();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        report
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
    /// use ctxkit::pool::TaskPool;
    /// use ctxkit::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new(&Context::background(), 1, 8, |ctx, _job: u32| async move {
    ///     ctx.done().await
    /// });
    /// for job in 0..5 {
    ///     pool.submit(job).await.unwrap();
    /// }
    /// let report = pool.shutdown().await;
    /// assert_eq!(report.len(), 5);
    /// # }
    /// ```
    pub async fn shutdown(self) -> Report<J, R> {
        self.cancel();
        self.join().await
    }

    fn open_queue(&self) -> &mpsc::Sender<J> {
        self.queue
            .as_ref()
            .expect("the queue stays open until join consumes the pool")
    }
}

impl<J, R> Drop for TaskPool<J, R> {
    /// Cancel first, so the jobs' own helpers stop too; then abort the
    /// workers that have not stopped.
    fn drop(&mut self) {
        self.cancel.cancel();
        self.workers.abort_all();
    }
}

impl<J, R> fmt::Debug for TaskPool<J, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPool")
            .field("context", &self.ctx)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// One worker task of a [`TaskPool`].
struct Worker<J, R> {
    ctx: Context,
    jobs: Backlog<J>,
    report: Arc<StdMutex<Report<J, R>>>,
    cancel: Arc<CancelHandle>,
    /// A capacity-0 pool's rendezvous: one permit per job this worker is
    /// ready to take.
    ready: Option<Arc<Semaphore>>,
}

impl<J, R> Worker<J, R> {
    /// Runs jobs until the queue is closed and empty, or the context is done.
    ///
    /// Invariant: every job taken from the queue is recorded, as a result or
    /// as not run, except one whose handler panicked (that panic reaches
    /// `join` through the worker's `JoinError`).
    async fn run<H, Fut>(self, handler: Arc<H>)
    where
        H: Fn(Context, J) -> Fut,
        Fut: Future<Output = R>,
    {
        let _on_panic = CancelOnPanic(&self.cancel);
        while let Some(job) = self.next_job().await {
            // Taken just as the context ended: not started, so handed back.
            if self.ctx.is_done() {
                lock(&self.report).not_run.push(job);
                break;
            }
            let result = handler(self.ctx.clone(), job).await;
            lock(&self.report).completed.push(result);
        }
    }

    /// The next job, or `None` once the queue is closed and drained or the
    /// context is done, whichever comes first.
    async fn next_job(&self) -> Option<J> {
        if self.ctx.is_done() {
            return None;
        }
        // Both `lock` and `recv` are cancel-safe: losing the race to `done`
        // takes nothing from the queue.
        let mut jobs = tokio::select! {
            biased;
            _ = self.ctx.done() => return None,
            jobs = self.jobs.lock() => jobs,
        };
        // Ready for one job: a rendezvous submit may now hand it over. Given
        // once per job taken, so the queue never holds more jobs than there
        // are workers waiting for them (its capacity is the worker count).
        if let Some(ready) = &self.ready {
            ready.add_permits(1);
        }
        tokio::select! {
            biased;
            _ = self.ctx.done() => None,
            job = jobs.recv() => job,
        }
    }
}

/// Cancels the pool if a worker unwinds: its job panicked.
struct CancelOnPanic<'a>(&'a CancelHandle);

impl Drop for CancelOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel_with(JobPanicked);
        }
    }
}

/// The report is only touched for a push or a swap; no user code runs under
/// this lock, so poisoning cannot leave it half-updated.
fn lock<T>(report: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    report.lock().unwrap_or_else(PoisonError::into_inner)
}
