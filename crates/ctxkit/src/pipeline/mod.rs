//! Stages connected by channels, all stopped by one context: Go's pipeline
//! pattern, with an exact account of every item.
//!
//! A pipeline is a source, a chain of stages and a sink. Each stage has its
//! own number of workers and hands its outputs to the next one through a
//! bounded channel, so a slow stage slows the ones before it instead of
//! piling up items. One context stops every stage: cancel it, let its
//! deadline pass, or let a stage fail, and the whole run stops.
//!
//! - **Threads** (feature `crossbeam`): [`Pipeline`], on scoped threads;
//!   stage functions are plain closures and may borrow from the caller.
//! - **Async** (feature `tokio`): [`AsyncPipeline`], on tokio tasks; stage
//!   functions return futures.
//!
//! Both return a [`Report`] once every worker has stopped. Go's pipelines
//! drop what is in flight when they are cancelled; here every item the
//! source produced is either delivered to the sink or counted where the run
//! stopped it, and the counters balance exactly ([`Report::is_balanced`]).
//!
//! A stage's error type is any `E: Error + Send + Sync + 'static`, or a
//! boxed `Box<dyn Error + Send + Sync>` when stages fail in several ways.
//! The first error stops the run and becomes its cause: [`Report::error`]
//! gives it back typed, [`Report::cause`] as it is (for a boxed error, the
//! boxed value itself). An async source is any [`Stream`], re-exported here
//! from `futures-core` (feature `tokio`).
//!
//! ```
//! # #[cfg(feature = "crossbeam")] {
//! use ctxkit::{pipeline::Pipeline, Context};
//! use std::time::Duration;
//!
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
//! let (mut lengths, report) = Pipeline::new(&ctx, ["tokio", "rayon", "crossbeam"])
//!     .stage(2, |_ctx, word: &str| Ok::<_, std::io::Error>(word.len()))
//!     .collect();
//! lengths.sort();
//! assert_eq!(lengths, [5, 5, 9]);
//! assert!(report.is_complete());
//! # }
//! ```
//!
//! Stages that fail in several ways can return a boxed error, and `?` any
//! error into it:
//!
//! ```
//! # #[cfg(feature = "crossbeam")] {
//! use ctxkit::{pipeline::Pipeline, Context};
//! use std::error::Error;
//!
//! type BoxError = Box<dyn Error + Send + Sync>;
//! let (_out, report) = Pipeline::new(&Context::background(), ["1", "x"])
//!     .stage(1, |_ctx, s: &str| -> Result<u64, BoxError> { Ok(s.parse::<u64>()?) })
//!     .collect();
//! let cause = report.cause.unwrap();
//! assert_eq!(cause.to_string(), "invalid digit found in string");
//! assert!(cause.is::<std::num::ParseIntError>(), "the boxed error itself");
//! # }
//! ```
//!
//! The module exists with the `crossbeam` or the `tokio` feature.

// The links above name items of both features.
#![cfg_attr(
    not(all(feature = "crossbeam", feature = "tokio")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(any(feature = "crossbeam", feature = "tokio"))]
mod report;

use crate::Cause;
use std::sync::Arc;

/// The boxed error a stage may return, `Box<dyn Error + Send + Sync>`.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The cause a stage error stands for: the error itself, boxed or not (the
/// boxed error's own value, not the box, so that it downcasts to its type).
fn boxed_cause(error: impl Into<BoxError>) -> Cause {
    Arc::from(error.into())
}
#[cfg(feature = "tokio")]
mod tasks;
#[cfg(feature = "crossbeam")]
mod threads;

#[cfg(feature = "tokio")]
pub use futures_core::Stream;
#[cfg(any(feature = "crossbeam", feature = "tokio"))]
pub use report::{Report, SourceReport, StageReport};
#[cfg(feature = "tokio")]
pub use tasks::AsyncPipeline;
#[cfg(feature = "crossbeam")]
pub use threads::Pipeline;
