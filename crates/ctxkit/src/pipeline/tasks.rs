//! The pipeline on tokio tasks: [`AsyncPipeline`].

use super::report::{Report, SourceCounters, StageCounters};
use crate::{CancelHandle, Context};
use futures_core::Stream;
use std::any::Any;
use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

/// The async form of [`Pipeline`](super::Pipeline): stages run as tokio
/// tasks, connected by bounded tokio channels, all stopped by one context.
///
/// # Contract
///
/// As for [`Pipeline`](super::Pipeline), with these differences:
///
/// - The source is a `Stream`; stage functions take the run's context by
///   value and return a future.
/// - When the run stops, a stage future still running is dropped at its
///   next `.await` (counted in [`StageReport::discarded`](super::StageReport::discarded)):
///   nothing waits for work whose result nobody will take.
/// - [`run`](AsyncPipeline::run) spawns the tasks onto the current tokio
///   runtime and resolves once every one of them has ended. Dropping its
///   future aborts them and stops the run.
///
/// ```
/// use ctxkit::{pipeline::AsyncPipeline, Context};
/// use std::time::Duration;
///
/// # // The parts of the `futures` crate this example uses, so that it runs
/// # // as a doctest of the core, which depends on `futures-core` only.
/// # mod futures {
/// #     pub mod stream {
/// #         use futures_core::Stream;
/// #         use std::{pin::Pin, task::{Context, Poll}};
/// #         pub struct Iter<I>(I);
/// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
/// #             type Item = I::Item;
/// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
/// #                 Poll::Ready(self.0.next())
/// #             }
/// #         }
/// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
/// #             Iter(items.into_iter())
/// #         }
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = Context::background();
/// let (mut out, report) = AsyncPipeline::new(&ctx, futures::stream::iter(1..=5u64))
///     .stage(3, |_ctx, n| async move {
///         tokio::time::sleep(Duration::from_millis(n)).await; // e.g. a lookup
///         Ok::<_, std::io::Error>(n * 10)
///     })
///     .stage(1, |_ctx, n| async move { Ok(n + 1) })
///     .collect()
///     .await;
/// out.sort();
/// assert_eq!(out, [11, 21, 31, 41, 51]);
/// assert!(report.is_complete());
/// # }
/// ```
#[must_use = "a pipeline does nothing until `run` or `collect` is awaited"]
pub struct AsyncPipeline<T, E> {
    ctx: Context,
    /// Spawns the source and every stage so far; returns the tail channel.
    launch: Launch<T>,
    stage_error: PhantomData<fn() -> E>,
}

type Launch<T> = Box<dyn FnOnce(&mut Launcher) -> Link<T> + Send>;

/// A channel's receiving end, shared by the workers of the stage it feeds.
type Link<T> = Arc<Mutex<mpsc::Receiver<T>>>;

/// What every task of one run shares.
struct Shared {
    ctx: Context,
    cancel: CancelHandle,
}

impl Shared {
    /// Hands `item` downstream unless the run stops first: false if it did.
    async fn send<T>(&self, output: &mpsc::Sender<T>, item: T) -> bool {
        matches!(self.ctx.run(output.send(item)).await, Ok(Ok(())))
    }

    /// The next item of `input`, unless the run stops first or the input
    /// runs out. `recv` is cancel-safe: an item is either returned or left in
    /// the channel.
    async fn recv<T>(&self, input: &Link<T>) -> Option<T> {
        let next = async { input.lock().await.recv().await };
        self.ctx.run(next).await.ok().flatten()
    }
}

/// Cancels the run when a task of it unwinds, so that the others stop.
struct StopOnPanic<'h>(&'h CancelHandle);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel_from_cause("pipeline task panicked", None);
        }
    }
}

/// Spawns the tasks of one run and keeps what is needed to account for
/// them afterwards.
struct Launcher {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    source: Arc<SourceCounters>,
    stages: Vec<(usize, Arc<StageCounters>)>,
    /// One per channel, in pipeline order: counts and drops what is left in
    /// it once every task has ended.
    drains: Vec<Box<dyn FnOnce() -> u64 + Send>>,
}

impl Launcher {
    fn spawn<W, Fut>(&mut self, work: W)
    where
        W: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let task = work(Arc::clone(&shared));
        self.tasks.spawn(async move {
            let _stop = StopOnPanic(&shared.cancel);
            task.await;
        });
    }

    /// A channel whose leftovers are counted once every task has ended.
    fn channel<T: Send + 'static>(&mut self, capacity: usize) -> (mpsc::Sender<T>, Link<T>) {
        let (tx, rx) = mpsc::channel(capacity);
        let link = Arc::new(Mutex::new(rx));
        let leftovers = Arc::clone(&link);
        self.drains.push(Box::new(move || {
            let mut rx = leftovers
                .try_lock()
                .expect("every task has ended: nobody holds the receiver");
            std::iter::from_fn(|| rx.try_recv().ok()).count() as u64
        }));
        (tx, link)
    }
}

impl<T: Send + 'static, E> AsyncPipeline<T, E>
where
    E: Into<super::BoxError> + Send + 'static,
{
    /// A pipeline under `ctx` fed by `source`, which is polled by a task of
    /// its own. Nothing runs until [`run`](AsyncPipeline::run).
    ///
    /// ```
    /// use ctxkit::{pipeline::AsyncPipeline, Context};
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct Iter<I>(I);
    /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
    /// #             type Item = I::Item;
    /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
    /// #                 Poll::Ready(self.0.next())
    /// #             }
    /// #         }
    /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    /// #             Iter(items.into_iter())
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let source = futures::stream::iter(["a", "b"]);
    /// let (out, _report) = AsyncPipeline::<_, std::io::Error>::new(&Context::background(), source)
    ///     .collect()
    ///     .await;
    /// assert_eq!(out, ["a", "b"]);
    /// # }
    /// ```
    pub fn new<S>(ctx: &Context, source: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        let launch: Launch<T> = Box::new(move |launcher| {
            let (tx, rx) = launcher.channel(1);
            let counters = Arc::clone(&launcher.source);
            launcher
                .spawn(move |shared| async move { feed(&shared, source, &tx, &counters).await });
            rx
        });
        AsyncPipeline {
            ctx: ctx.clone(),
            launch,
            stage_error: PhantomData,
        }
    }

    /// Adds a stage run by `workers` tasks, each awaiting `f(ctx, item)` on
    /// the items it takes, with the run's context. `Ok(out)` passes `out`
    /// on; `Err(e)` stops the run with `e` as its cause.
    ///
    /// # Panics
    ///
    /// If `workers` is 0: a stage needs at least one worker.
    ///
    /// ```
    /// use ctxkit::{pipeline::AsyncPipeline, Context};
    /// use std::io;
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct Iter<I>(I);
    /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
    /// #             type Item = I::Item;
    /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
    /// #                 Poll::Ready(self.0.next())
    /// #             }
    /// #         }
    /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    /// #             Iter(items.into_iter())
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ctx = Context::background();
    /// let report = AsyncPipeline::new(&ctx, futures::stream::iter(0..100u32))
    ///     .stage(4, |_ctx, n| async move {
    ///         match n {
    ///             13 => Err(io::Error::other("unlucky")),
    ///             n => Ok(n),
    ///         }
    ///     })
    ///     .run(drop)
    ///     .await;
    /// assert_eq!(report.error().unwrap().to_string(), "unlucky");
    /// # }
    /// ```
    pub fn stage<U, F, Fut>(self, workers: usize, f: F) -> AsyncPipeline<U, E>
    where
        U: Send + 'static,
        F: Fn(Context, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        assert!(
            workers > 0,
            "AsyncPipeline::stage: a stage needs at least one worker, got 0"
        );
        let upstream = self.launch;
        let f = Arc::new(f);
        let launch: Launch<U> = Box::new(move |launcher| {
            let input = upstream(launcher);
            let (tx, rx) = launcher.channel(workers);
            let counters = Arc::<StageCounters>::default();
            launcher.stages.push((workers, Arc::clone(&counters)));
            for _ in 0..workers {
                let (input, tx, f, counters) = (
                    Arc::clone(&input),
                    tx.clone(),
                    Arc::clone(&f),
                    Arc::clone(&counters),
                );
                launcher.spawn(move |shared| async move {
                    work(&shared, &input, &tx, &*f, &counters).await
                });
            }
            rx
        });
        AsyncPipeline {
            ctx: self.ctx,
            launch,
            stage_error: PhantomData,
        }
    }

    /// Runs the pipeline on the current tokio runtime, handing every output
    /// to `sink` in this task, until the source ends or the run stops.
    /// Resolves once every task has ended, with the account of every item.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime. If the source, a stage or `sink` panics, the
    /// run is stopped and the panic resumes here once every task has ended.
    ///
    /// ```
    /// use ctxkit::{pipeline::AsyncPipeline, Context, Error};
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct Iter<I>(I);
    /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
    /// #             type Item = I::Item;
    /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
    /// #                 Poll::Ready(self.0.next())
    /// #             }
    /// #         }
    /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    /// #             Iter(items.into_iter())
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut seen = 0;
    /// let report = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
    ///     .stage(2, |_ctx, n| async move { Ok::<_, std::io::Error>(n) })
    ///     .run(|_| {
    ///         seen += 1;
    ///         if seen == 10 {
    ///             cancel.cancel(); // an endless source, stopped by its context
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(report.delivered, 10);
    /// assert_eq!(report.err, Some(Error::Canceled));
    /// # }
    /// ```
    pub async fn run(self, mut sink: impl FnMut(T)) -> Report<E> {
        let (ctx, cancel) = self.ctx.with_cancel();
        let shared = Arc::new(Shared { ctx, cancel });
        let mut launcher = Launcher {
            shared: Arc::clone(&shared),
            tasks: JoinSet::new(),
            source: Arc::default(),
            stages: Vec::new(),
            drains: Vec::new(),
        };
        let tail = (self.launch)(&mut launcher);
        let delivered = deliver(&shared, &tail, &mut sink).await;
        join_all(&mut launcher.tasks).await;
        let leftovers = launcher.drains.into_iter().map(|drain| drain());
        let report = Report::assemble(
            &shared.ctx,
            &launcher.source,
            &launcher.stages,
            leftovers,
            delivered,
        );
        shared.cancel.cancel_from_cause("pipeline finished", None);
        report
    }

    /// Runs the pipeline and collects the outputs, in arrival order: see
    /// [`run`](AsyncPipeline::run).
    ///
    /// ```
    /// use ctxkit::{pipeline::AsyncPipeline, Context};
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct Iter<I>(I);
    /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
    /// #             type Item = I::Item;
    /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
    /// #                 Poll::Ready(self.0.next())
    /// #             }
    /// #         }
    /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    /// #             Iter(items.into_iter())
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ctx = Context::background();
    /// let (out, report) = AsyncPipeline::new(&ctx, futures::stream::iter(["a", "b"]))
    ///     .stage(1, |_ctx, s| async move { Ok::<_, std::fmt::Error>(s.to_uppercase()) })
    ///     .collect()
    ///     .await;
    /// assert_eq!(out, ["A", "B"], "one worker keeps the order");
    /// assert!(report.is_complete());
    /// # }
    /// ```
    pub async fn collect(self) -> (Vec<T>, Report<E>) {
        let mut out = Vec::new();
        let report = self.run(|item| out.push(item)).await;
        (out, report)
    }
}

/// The source task: polls the stream while the run goes on.
async fn feed<T, S>(shared: &Shared, source: S, out: &mpsc::Sender<T>, counters: &SourceCounters)
where
    S: Stream<Item = T>,
{
    let mut source = Box::pin(source);
    loop {
        let next = poll_fn(|cx| source.as_mut().poll_next(cx));
        let item = match shared.ctx.run(next).await {
            Err(_) => return,
            Ok(None) => {
                counters.exhausted.store(true, Ordering::Relaxed);
                return;
            }
            Ok(Some(item)) => item,
        };
        if !shared.send(out, item).await {
            StageCounters::bump(&counters.discarded);
            return;
        }
        StageCounters::bump(&counters.sent);
    }
}

/// One worker of a stage: takes items until its input runs out or the run
/// stops. An item it takes is always counted as sent, failed or discarded.
async fn work<T, U, E, F, Fut>(
    shared: &Shared,
    input: &Link<T>,
    out: &mpsc::Sender<U>,
    f: &F,
    counters: &StageCounters,
) where
    F: Fn(Context, T) -> Fut,
    Fut: Future<Output = Result<U, E>>,
    E: Into<super::BoxError> + Send + 'static,
{
    while let Some(item) = shared.recv(input).await {
        StageCounters::bump(&counters.received);
        match shared.ctx.run(f(shared.ctx.clone(), item)).await {
            Ok(Ok(output)) => {
                if shared.send(out, output).await {
                    StageCounters::bump(&counters.sent);
                } else {
                    StageCounters::bump(&counters.discarded);
                }
            }
            // Stopped while the stage was working: its future was dropped.
            Err(_) => StageCounters::bump(&counters.discarded),
            // Stopped meanwhile: the stage gave up because the run did.
            Ok(Err(_)) if shared.ctx.is_done() => StageCounters::bump(&counters.discarded),
            Ok(Err(err)) => {
                StageCounters::bump(&counters.failed);
                // Of errors racing each other, the first cancellation wins.
                let cause = Some(super::boxed_cause(err));
                shared
                    .cancel
                    .cancel_from_cause("pipeline stage failed", cause);
            }
        }
    }
}

/// The sink, in the caller's task: returns how many outputs it was given.
async fn deliver<T>(shared: &Shared, tail: &Link<T>, sink: &mut impl FnMut(T)) -> u64 {
    let _stop = StopOnPanic(&shared.cancel);
    let mut delivered = 0;
    while let Some(item) = shared.recv(tail).await {
        delivered += 1;
        sink(item);
    }
    delivered
}

/// Waits for every task; the first panic, if any, resumes once all ended.
async fn join_all(tasks: &mut JoinSet<()>) {
    let mut panic: Option<Box<dyn Any + Send>> = None;
    while let Some(ended) = tasks.join_next().await {
        if let Err(err) = ended {
            if err.is_panic() {
                panic.get_or_insert(err.into_panic());
            }
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

impl<T, E> fmt::Debug for AsyncPipeline<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPipeline")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}
