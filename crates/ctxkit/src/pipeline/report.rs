//! What a pipeline run did with every item: [`Report`].

use crate::{Cause, Context, Error};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The account of one pipeline run, returned once every worker has stopped.
///
/// Every item is counted exactly once, wherever the run stopped it, so the
/// counters always balance:
///
/// - `source.sent == stages[0].received + stages[0].unreceived`;
/// - for every stage, `received == sent + failed + discarded`;
/// - `stages[i].sent == stages[i + 1].received + stages[i + 1].unreceived`;
/// - the last stage's `sent` (the source's, without stages)
///   `== delivered + undelivered`.
///
/// When the run completed (`err` is `None`), the source ran out and every
/// item it produced went through every stage to the sink:
/// `delivered == source.sent`.
///
/// ```
/// # #[cfg(feature = "crossbeam")] {
/// use ctxkit::{pipeline::Pipeline, Context};
///
/// let ctx = Context::background();
/// let (out, report) = Pipeline::new(&ctx, 1..=4u32)
///     .stage(2, |_ctx, n| Ok::<_, std::io::Error>(n * 10))
///     .collect();
/// assert_eq!(out.len(), 4);
/// assert_eq!(report.err, None);
/// assert_eq!(report.source.sent, 4);
/// assert_eq!(report.stages[0].sent, 4);
/// assert_eq!((report.delivered, report.undelivered), (4, 0));
/// # }
/// ```
pub struct Report<E> {
    /// What the source produced.
    pub source: SourceReport,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageReport>,
    /// Outputs of the last stage handed to the sink.
    pub delivered: u64,
    /// Outputs of the last stage left waiting for the sink when the run
    /// stopped.
    pub undelivered: u64,
    /// `None` if the run completed: the source ran out and every item was
    /// delivered. Otherwise the error of the pipeline's context, which
    /// stopped the run (a stage error stops it with [`Error::Canceled`]).
    pub err: Option<Error>,
    /// Why the run was stopped, if it was: the failing stage's error (see
    /// [`error`](Report::error)), or the cause of the parent context's end.
    pub cause: Option<Cause>,
    stage_error: PhantomData<fn() -> E>,
}

impl<E: std::error::Error + 'static> Report<E> {
    /// The stage error that stopped the run, if one did. Only the first
    /// failure stops the run; failures racing with it are counted in
    /// [`StageReport::failed`], errors returned after the run stopped in
    /// [`StageReport::discarded`].
    ///
    /// ```
    /// # #[cfg(feature = "crossbeam")] {
    /// use ctxkit::{pipeline::Pipeline, Context, Error};
    /// use std::io;
    ///
    /// let ctx = Context::background();
    /// let (_out, report) = Pipeline::new(&ctx, 0..100u32)
    ///     .stage(1, |_ctx, n| match n {
    ///         7 => Err(io::Error::other("bad record 7")),
    ///         n => Ok(n),
    ///     })
    ///     .collect();
    /// assert_eq!(report.err, Some(Error::Canceled));
    /// assert_eq!(report.error().unwrap().to_string(), "bad record 7");
    /// assert_eq!(report.stages[0].failed, 1);
    /// # }
    /// ```
    pub fn error(&self) -> Option<&E> {
        self.cause.as_ref()?.downcast_ref::<E>()
    }
}

impl<E> Report<E> {
    /// Whether the run completed: the source ran out and every item it
    /// produced was delivered (`err` is `None`).
    ///
    /// ```
    /// # #[cfg(feature = "crossbeam")] {
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let (out, report) = Pipeline::new(&ctx, 0..10)
    ///     .stage(1, |_ctx, n| Ok::<i32, std::io::Error>(n))
    ///     .collect();
    /// assert!(out.is_empty());
    /// assert!(!report.is_complete());
    /// # }
    /// ```
    pub fn is_complete(&self) -> bool {
        self.err.is_none()
    }

    /// Whether the counters balance, as the type's documentation lists:
    /// every item the source produced was delivered or counted once where
    /// the run stopped it. Always true of a report a run returned; the check
    /// its own tests make, and a guard for reports built or edited by hand.
    ///
    /// ```
    /// # #[cfg(feature = "crossbeam")] {
    /// use ctxkit::{pipeline::Pipeline, Context};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut seen = 0;
    /// let report = Pipeline::new(&ctx, 0..1000u32)
    ///     .stage(2, |_ctx, n| Ok::<_, std::io::Error>(n))
    ///     .run(|_| {
    ///         seen += 1;
    ///         if seen == 10 {
    ///             cancel.cancel(); // stopped halfway: items are left in flight
    ///         }
    ///     });
    /// assert!(!report.is_complete());
    /// assert!(report.is_balanced(), "{report:?}");
    /// # }
    /// ```
    pub fn is_balanced(&self) -> bool {
        let mut handed_over = self.source.sent;
        for stage in &self.stages {
            let taken = stage.sent + stage.failed + stage.discarded;
            if handed_over != stage.received + stage.unreceived || stage.received != taken {
                return false;
            }
            handed_over = stage.sent;
        }
        handed_over == self.delivered + self.undelivered && self.source.discarded <= 1
    }

    /// The report of a run whose workers have all stopped: `leftovers` are
    /// the items left in each channel, in pipeline order (the input of each
    /// stage, then of the sink). `ctx` is the run's context, still live
    /// unless something stopped the run.
    pub(crate) fn assemble(
        ctx: &Context,
        source: &SourceCounters,
        stages: &[(usize, Arc<StageCounters>)],
        leftovers: impl IntoIterator<Item = u64>,
        delivered: u64,
    ) -> Report<E> {
        let mut leftovers = leftovers.into_iter();
        let mut report = Report {
            source: source.report(),
            stages: stages
                .iter()
                .map(|(workers, counters)| counters.report(*workers, leftovers.next().unwrap_or(0)))
                .collect(),
            delivered,
            undelivered: leftovers.next().unwrap_or(0),
            err: None,
            cause: None,
            stage_error: PhantomData,
        };
        // A run that lost nothing completed, even if its context ended just
        // after the last delivery.
        if !report.nothing_lost() {
            report.err = ctx.err();
            report.cause = ctx.cause();
        }
        report
    }

    /// Whether the counters show a complete run: the source ran out and
    /// nothing failed or was left behind.
    fn nothing_lost(&self) -> bool {
        self.source.exhausted
            && self.source.discarded == 0
            && self.undelivered == 0
            && self
                .stages
                .iter()
                .all(|s| s.failed == 0 && s.discarded == 0 && s.unreceived == 0)
    }
}

impl<E> fmt::Debug for Report<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("source", &self.source)
            .field("stages", &self.stages)
            .field("delivered", &self.delivered)
            .field("undelivered", &self.undelivered)
            .field("err", &self.err)
            .field("cause", &self.cause)
            .finish()
    }
}

/// What the source of a pipeline produced.
///
/// ```
/// let report = ctxkit::pipeline::SourceReport::default();
/// assert_eq!(report.sent + report.discarded, 0);
/// assert!(!report.exhausted);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Whether the source ran out. If not, the run was stopped first and
    /// the source was not asked for more items.
    pub exhausted: bool,
    /// Items taken from the source and handed to the first stage.
    pub sent: u64,
    /// Items taken from the source that could not be handed over because
    /// the run was stopped meanwhile (at most one).
    pub discarded: u64,
}

/// What one stage did with the items handed to it.
///
/// ```
/// let report = ctxkit::pipeline::StageReport::default();
/// assert_eq!(report.received, report.sent + report.failed + report.discarded);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageReport {
    /// How many workers the stage ran.
    pub workers: usize,
    /// Items its workers took from the stage's input.
    pub received: u64,
    /// Outputs handed to the next stage (or the sink).
    pub sent: u64,
    /// Items for which the stage function returned an error while the run
    /// was going on (each such error stops the run).
    pub failed: u64,
    /// Items taken but not passed on because the run was stopped: outputs
    /// that could not be handed over, errors returned after the stop, and
    /// (async stages) work cut short.
    pub discarded: u64,
    /// Items handed to this stage that no worker took before the run
    /// stopped.
    pub unreceived: u64,
}

/// Live counters of one stage, shared by its workers; read once they have
/// all stopped.
#[derive(Debug, Default)]
pub(crate) struct StageCounters {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

impl StageCounters {
    /// Counters only ever grow and are read after the workers are joined,
    /// which orders every increment before the read: `Relaxed` is enough.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, workers: usize, unreceived: u64) -> StageReport {
        StageReport {
            workers,
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            unreceived,
        }
    }
}

/// Live counters of the source; read once it has stopped.
#[derive(Debug, Default)]
pub(crate) struct SourceCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) exhausted: AtomicBool,
}

impl SourceCounters {
    fn report(&self) -> SourceReport {
        SourceReport {
            exhausted: self.exhausted.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }
}
