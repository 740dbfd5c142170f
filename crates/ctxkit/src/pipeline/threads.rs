//! The pipeline on scoped threads: [`Pipeline`].

use super::report::{Report, SourceCounters, StageCounters};
use crate::or_done::OrDone;
use crate::{CancelHandle, Context};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

/// Stages connected by bounded channels, each run by its own number of
/// threads, all stopped by one context.
///
/// Build it from a context and a source, add stages, then run it with a
/// sink on the calling thread ([`run`](Pipeline::run) or
/// [`collect`](Pipeline::collect)). The threads are scoped: stage functions
/// may borrow from the caller, and every thread has stopped when `run`
/// returns.
///
/// # Contract
///
/// - **One context stops every stage.** The run has a context of its own,
///   derived from the one given to [`new`](Pipeline::new) and passed to
///   every stage function. When it is done, the source is not asked for
///   more items, idle workers stop at once, and busy workers stop when
///   their stage function returns (check the context in long stage
///   functions, or wait with it, to stop them sooner).
/// - **A stage error stops the run**, as in Go's errgroup: the first
///   `Err(e)` cancels the run's context with `e` as its cause, and
///   [`Report::error`] returns it. An `Err` returned once the run has
///   stopped means the stage gave up because of it: it is counted as
///   discarded, not failed.
/// - **Nothing is left running.** `run` returns once every thread has
///   stopped.
/// - **Nothing is lost silently.** Every item produced is either delivered
///   to the sink or counted where the run stopped it: see [`Report`].
/// - **A panic stops the run** and reaches the caller of `run` once every
///   other thread has stopped.
/// - The output order is unspecified when a stage has several workers.
///
/// Each stage's output channel holds as many items as the stage has
/// workers; the source's holds one. The source iterator runs on a thread of
/// its own and must not block forever: to feed the pipeline from a channel,
/// use [`from_receiver`](Pipeline::from_receiver).
///
/// ```
/// use ctxkit::{pipeline::Pipeline, Context};
///
/// #[derive(Debug)]
/// struct NotANumber(String);
/// impl std::fmt::Display for NotANumber {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "not a number: {:?}", self.0)
///     }
/// }
/// impl std::error::Error for NotANumber {}
///
/// let lines = ["1", "2", "3", "4"];
/// let ctx = Context::background();
/// let mut total = 0;
/// let report = Pipeline::new(&ctx, lines)
///     .stage(2, |_ctx, line: &str| line.parse::<u64>().map_err(|_| NotANumber(line.into())))
///     .stage(3, |_ctx, n| Ok(n * n))
///     .run(|square| total += square);
/// assert!(report.is_complete());
/// assert_eq!(total, 1 + 4 + 9 + 16);
///
/// let report = Pipeline::new(&ctx, ["1", "two", "3"])
///     .stage(1, |_ctx, line: &str| line.parse::<u64>().map_err(|_| NotANumber(line.into())))
///     .run(drop);
/// assert_eq!(report.error().unwrap().to_string(), r#"not a number: "two""#);
/// ```
#[must_use = "a pipeline does nothing until `run` or `collect` is called"]
pub struct Pipeline<'a, T, E> {
    ctx: Context,
    /// Starts the source and every stage so far; returns the tail channel.
    launch: Launch<'a, T>,
    stage_error: PhantomData<fn() -> E>,
}

type Launch<'a, T> = Box<dyn for<'s> FnOnce(&mut Launcher<'s, 'a>) -> Receiver<T> + 'a>;

/// What every thread of one run shares.
struct Shared {
    ctx: Context,
    cancel: CancelHandle,
    /// One done receiver for the whole run: each one made stays registered
    /// with the context until it ends.
    done: Receiver<()>,
}

impl Shared {
    /// Hands `item` downstream unless the run stops first: false if it did.
    fn send<T>(&self, output: &Sender<T>, item: T) -> bool {
        if self.ctx.is_done() {
            return false;
        }
        select! {
            send(output, item) -> sent => sent.is_ok(),
            recv(self.done) -> _ => false,
        }
    }
}

/// Cancels the run when a thread of it unwinds, so that the others stop
/// instead of waiting forever for the items it will not pass on.
struct StopOnPanic<'h>(&'h CancelHandle);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel_from_cause("pipeline task panicked", None);
        }
    }
}

/// Starts the threads of one run, inside its thread scope, and keeps what
/// is needed to account for them afterwards.
struct Launcher<'s, 'a> {
    scope: &'s Scope<'s, 'a>,
    shared: Arc<Shared>,
    source: Arc<SourceCounters>,
    stages: Vec<(usize, Arc<StageCounters>)>,
    /// One per channel, in pipeline order: counts and drops what is left in
    /// it once every thread has stopped.
    drains: Vec<Box<dyn FnOnce() -> u64 + 'a>>,
    threads: Vec<ScopedJoinHandle<'s, ()>>,
}

impl<'s, 'a> Launcher<'s, 'a> {
    fn spawn(&mut self, work: impl FnOnce(&Shared) + Send + 'a) {
        let shared = Arc::clone(&self.shared);
        self.threads.push(self.scope.spawn(move || {
            let _stop = StopOnPanic(&shared.cancel);
            work(&shared);
        }));
    }

    /// A channel whose leftovers are counted at the end of the run.
    fn channel<T: 'a>(&mut self, capacity: usize) -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = bounded(capacity);
        let leftovers = rx.clone();
        self.drains
            .push(Box::new(move || leftovers.try_iter().count() as u64));
        (tx, rx)
    }
}

impl<'a, T: Send + 'a, E> Pipeline<'a, T, E>
where
    E: Into<super::BoxError> + Send + 'static,
{
    /// A pipeline under `ctx` fed by `source`, which runs on a thread of its
    /// own. Nothing runs until [`run`](Pipeline::run).
    ///
    /// ```
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let words = vec!["a", "b"];
    /// let (out, _report) = Pipeline::<_, std::io::Error>::new(&Context::background(), &words)
    ///     .collect();
    /// assert_eq!(out, [&"a", &"b"]);
    /// ```
    pub fn new<I>(ctx: &Context, source: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        let source = source.into_iter();
        Self::with_source(ctx, move |_shared| source, |_| true)
    }

    /// A pipeline under `ctx` fed by the items of a channel, until it is
    /// disconnected and empty or the run stops. Unlike an iterator over the
    /// channel given to [`new`](Pipeline::new), the source stops waiting as
    /// soon as the run stops, for whatever reason (a stage error included);
    /// items it did not take stay in the channel.
    ///
    /// ```
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let (jobs, queue) = crossbeam_channel::unbounded();
    /// for job in 1..=3u32 {
    ///     jobs.send(job).unwrap();
    /// }
    /// drop(jobs); // no more jobs: the run ends once these are done
    /// let (mut out, report) = Pipeline::from_receiver(&Context::background(), queue)
    ///     .stage(2, |_ctx, job| Ok::<_, std::io::Error>(job * 100))
    ///     .collect();
    /// out.sort();
    /// assert_eq!(out, [100, 200, 300]);
    /// assert!(report.is_complete());
    /// ```
    pub fn from_receiver(ctx: &Context, source: Receiver<T>) -> Self {
        Self::with_source(
            ctx,
            move |shared| OrDone::with_done(&shared.ctx, &source, &shared.done),
            |items| items.err().is_none(),
        )
    }

    /// A pipeline whose source thread iterates over `make(shared)`; once that
    /// ends, `ran_out` tells whether it ran out (rather than being stopped).
    fn with_source<I, M>(ctx: &Context, make: M, ran_out: fn(&I) -> bool) -> Self
    where
        I: Iterator<Item = T> + 'a,
        M: FnOnce(&Shared) -> I + Send + 'a,
    {
        let launch: Launch<'a, T> = Box::new(move |launcher| {
            let (tx, rx) = launcher.channel(1);
            let counters = Arc::clone(&launcher.source);
            launcher.spawn(move |shared| {
                let mut items = make(shared);
                if feed(shared, &mut items, &tx, &counters) == Fed::Ended {
                    let exhausted = ran_out(&items);
                    counters.exhausted.store(exhausted, Ordering::Relaxed);
                }
            });
            rx
        });
        Pipeline {
            ctx: ctx.clone(),
            launch,
            stage_error: PhantomData,
        }
    }

    /// Adds a stage run by `workers` threads, each calling `f(&ctx, item)`
    /// on the items it takes, with the run's context. `Ok(out)` passes
    /// `out` on; `Err(e)` stops the run with `e` as its cause.
    ///
    /// # Panics
    ///
    /// If `workers` is 0: a stage needs at least one worker.
    ///
    /// ```
    /// use ctxkit::{pipeline::Pipeline, Context};
    /// use std::time::Duration;
    ///
    /// let ctx = Context::background();
    /// let (mut out, report) = Pipeline::new(&ctx, 1..=8u64)
    ///     // A slow stage gets more workers; it waits with the context, so
    ///     // a cancelled run does not wait for it.
    ///     .stage(4, |ctx, n| ctx.sleep(Duration::from_millis(1)).map(|()| n))
    ///     .stage(1, |_ctx, n| Ok(n + 100))
    ///     .collect();
    /// out.sort();
    /// assert_eq!(out, (101..=108).collect::<Vec<_>>());
    /// assert_eq!(report.stages[0].workers, 4);
    /// ```
    pub fn stage<U, F>(self, workers: usize, f: F) -> Pipeline<'a, U, E>
    where
        U: Send + 'a,
        F: Fn(&Context, T) -> Result<U, E> + Send + Sync + 'a,
    {
        assert!(
            workers > 0,
            "Pipeline::stage: a stage needs at least one worker, got 0"
        );
        let upstream = self.launch;
        let f = Arc::new(f);
        let launch: Launch<'a, U> = Box::new(move |launcher| {
            let input = upstream(launcher);
            let (tx, rx) = launcher.channel(workers);
            let counters = Arc::<StageCounters>::default();
            launcher.stages.push((workers, Arc::clone(&counters)));
            for _ in 0..workers {
                let (input, tx, f, counters) = (
                    input.clone(),
                    tx.clone(),
                    Arc::clone(&f),
                    Arc::clone(&counters),
                );
                launcher.spawn(move |shared| work(shared, &input, &tx, &*f, &counters));
            }
            rx
        });
        Pipeline {
            ctx: self.ctx,
            launch,
            stage_error: PhantomData,
        }
    }

    /// Runs the pipeline, handing every output to `sink` on the calling
    /// thread, until the source runs out or the run stops. Returns once
    /// every thread has stopped, with the account of every item.
    ///
    /// # Panics
    ///
    /// If the source, a stage or `sink` panics: the run is stopped and the
    /// panic resumes here once every thread has stopped.
    ///
    /// ```
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut seen = Vec::new();
    /// let report = Pipeline::new(&ctx, 0..)
    ///     .stage(2, |_ctx, n: u64| Ok::<_, std::io::Error>(n * 2))
    ///     .run(|n| {
    ///         seen.push(n);
    ///         if seen.len() == 10 {
    ///             cancel.cancel(); // an endless source, stopped by its context
    ///         }
    ///     });
    /// assert_eq!(report.delivered, 10);
    /// assert_eq!(report.err, Some(ctxkit::Error::Canceled));
    /// assert!(!report.source.exhausted);
    /// ```
    pub fn run(self, mut sink: impl FnMut(T)) -> Report<E> {
        let (ctx, cancel) = self.ctx.with_cancel();
        let shared = Arc::new(Shared {
            done: ctx.done_receiver(),
            ctx,
            cancel,
        });
        let source = Arc::<SourceCounters>::default();
        let launch = self.launch;
        let (stages, drains, delivered) = std::thread::scope(|scope| {
            let mut launcher = Launcher {
                scope,
                shared: Arc::clone(&shared),
                source: Arc::clone(&source),
                stages: Vec::new(),
                drains: Vec::new(),
                threads: Vec::new(),
            };
            let tail = launch(&mut launcher);
            let delivered = deliver(&shared, &tail, &mut sink);
            join_all(launcher.threads);
            (launcher.stages, launcher.drains, delivered)
        });
        account(&shared, &source, &stages, drains, delivered)
    }

    /// Runs the pipeline and collects the outputs, in arrival order: see
    /// [`run`](Pipeline::run).
    ///
    /// ```
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let ctx = Context::background();
    /// let (out, report) = Pipeline::new(&ctx, ["a", "b", "c"])
    ///     .stage(1, |_ctx, s: &str| Ok::<_, std::fmt::Error>(s.to_uppercase()))
    ///     .collect();
    /// assert_eq!(out, ["A", "B", "C"], "one worker keeps the order");
    /// assert!(report.is_complete());
    /// ```
    pub fn collect(self) -> (Vec<T>, Report<E>) {
        let mut out = Vec::new();
        let report = self.run(|item| out.push(item));
        (out, report)
    }
}

/// How the source thread finished.
#[derive(PartialEq)]
enum Fed {
    /// The source returned `None`.
    Ended,
    /// The run stopped first.
    Stopped,
}

/// The source thread: pulls items while the run goes on.
fn feed<T>(
    shared: &Shared,
    source: &mut impl Iterator<Item = T>,
    out: &Sender<T>,
    counters: &SourceCounters,
) -> Fed {
    while !shared.ctx.is_done() {
        let Some(item) = source.next() else {
            return Fed::Ended;
        };
        if !shared.send(out, item) {
            StageCounters::bump(&counters.discarded);
            return Fed::Stopped;
        }
        StageCounters::bump(&counters.sent);
    }
    Fed::Stopped
}

/// One worker of a stage: takes items until its input runs out or the run
/// stops. An item it takes is always counted as sent, failed or discarded.
fn work<T, U, E, F>(
    shared: &Shared,
    input: &Receiver<T>,
    out: &Sender<U>,
    f: &F,
    counters: &StageCounters,
) where
    F: Fn(&Context, T) -> Result<U, E>,
    E: Into<super::BoxError> + Send + 'static,
{
    for item in OrDone::with_done(&shared.ctx, input, &shared.done) {
        StageCounters::bump(&counters.received);
        match f(&shared.ctx, item) {
            Ok(output) => {
                if shared.send(out, output) {
                    StageCounters::bump(&counters.sent);
                } else {
                    StageCounters::bump(&counters.discarded);
                }
            }
            // Stopped meanwhile: the stage gave up because the run did.
            Err(_) if shared.ctx.is_done() => StageCounters::bump(&counters.discarded),
            Err(err) => {
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

/// The sink, on the caller's thread: returns how many outputs it was given.
fn deliver<T>(shared: &Shared, tail: &Receiver<T>, sink: &mut impl FnMut(T)) -> u64 {
    let _stop = StopOnPanic(&shared.cancel);
    let mut delivered = 0;
    for item in OrDone::with_done(&shared.ctx, tail, &shared.done) {
        delivered += 1;
        sink(item);
    }
    delivered
}

/// Joins every thread; the first panic, if any, resumes once all are joined.
fn join_all(threads: Vec<ScopedJoinHandle<'_, ()>>) {
    let mut panic: Option<Box<dyn Any + Send>> = None;
    for thread in threads {
        if let Err(payload) = thread.join() {
            panic.get_or_insert(payload);
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

/// Builds the report once every thread has stopped, then ends the run's
/// context.
fn account<E>(
    shared: &Shared,
    source: &SourceCounters,
    stages: &[(usize, Arc<StageCounters>)],
    drains: Vec<Box<dyn FnOnce() -> u64 + '_>>,
    delivered: u64,
) -> Report<E> {
    let leftovers = drains.into_iter().map(|drain| drain());
    let report = Report::assemble(&shared.ctx, source, stages, leftovers, delivered);
    shared.cancel.cancel_from_cause("pipeline finished", None);
    report
}

impl<T, E> fmt::Debug for Pipeline<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}
