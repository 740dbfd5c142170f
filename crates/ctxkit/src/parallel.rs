//! CPU-bound parallel work (rayon) that stops early on cancellation.
//!
//! Rayon has no notion of cancellation, but its `try_*` methods stop handing
//! out items once one of them fails. These helpers check the context before
//! each item and fail with its [`Error`] once it is done, so a cancelled (or
//! timed-out) context stops the whole parallel iteration after at most one
//! item in flight per rayon thread.
//!
//! The same pattern works for any rayon method that short-circuits on
//! `Err`, such as collecting into a `Result`:
//!
//! ```
//! use ctxkit::{Context, Error};
//! use rayon::prelude::*;
//!
//! let (ctx, cancel) = Context::background().with_cancel();
//! let squares: Result<Vec<u64>, Error> = (0..1000u64)
//!     .into_par_iter()
//!     .map(|n| ctx.check().map(|()| n * n))
//!     .collect();
//! assert_eq!(squares.unwrap()[999], 998_001);
//!
//! cancel.cancel();
//! let squares: Result<Vec<u64>, Error> = (0..1000u64)
//!     .into_par_iter()
//!     .map(|n| ctx.check().map(|()| n * n))
//!     .collect();
//! assert_eq!(squares, Err(Error::Canceled));
//! ```
//!
//! Checking costs one atomic load per item. For very small items, check per
//! chunk instead (`par_chunks`, `fold` with a `ctx.check()` per chunk).

use crate::{Context, Error};
use rayon::iter::{IntoParallelIterator, ParallelIterator};

/// Calls `f` on every item of `items`, in parallel on rayon's pool, until
/// `ctx` is done: `Ok(())` if every item was processed, `Err(err)` with the
/// context's error if the context ended first.
///
/// The context is checked before each item: once it is done, no new call
/// to `f` starts; calls already running finish (check `ctx` inside `f` to
/// cut long items short). Which items were processed before the end is
/// unspecified, as with any rayon iteration.
///
/// ```
/// use ctxkit::{parallel, Context, Error};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let processed = AtomicUsize::new(0);
/// let result = parallel::for_each(&ctx, 0..1_000_000u32, |_| {
///     if processed.fetch_add(1, Ordering::Relaxed) == 100 {
///         cancel.cancel(); // e.g. the request was abandoned
///     }
/// });
/// assert_eq!(result, Err(Error::Canceled));
/// assert!(processed.load(Ordering::Relaxed) < 1_000_000);
/// ```
pub fn for_each<I, F>(ctx: &Context, items: I, f: F) -> Result<(), Error>
where
    I: IntoParallelIterator,
    F: Fn(I::Item) + Sync + Send,
{
    try_for_each(ctx, items, |item| {
        f(item);
        Ok(())
    })
}

/// Like [`for_each`], for a fallible `f`: stops at the first error, whether
/// `f`'s or the context's (converted with `E: From<Error>`), and returns it.
///
/// If several items fail at once, which error is returned is unspecified,
/// as with rayon's `try_for_each`.
///
/// ```
/// use ctxkit::{parallel, Context};
///
/// #[derive(Debug, PartialEq)]
/// enum CrunchError {
///     Stopped(ctxkit::Error),
///     Overflow(u64),
/// }
/// impl From<ctxkit::Error> for CrunchError {
///     fn from(err: ctxkit::Error) -> Self {
///         CrunchError::Stopped(err)
///     }
/// }
///
/// let ctx = Context::background();
/// let result = parallel::try_for_each(&ctx, 0..100u64, |n| {
///     n.checked_mul(u64::MAX).map(drop).ok_or(CrunchError::Overflow(n))
/// });
/// assert!(matches!(result, Err(CrunchError::Overflow(n)) if n >= 2));
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let result = parallel::try_for_each(&ctx, 0..100u64, |_| Ok::<(), CrunchError>(()));
/// assert_eq!(result, Err(CrunchError::Stopped(ctxkit::Error::Canceled)));
/// ```
pub fn try_for_each<I, F, E>(ctx: &Context, items: I, f: F) -> Result<(), E>
where
    I: IntoParallelIterator,
    F: Fn(I::Item) -> Result<(), E> + Sync + Send,
    E: From<Error> + Send,
{
    items.into_par_iter().try_for_each(|item| {
        ctx.check()?;
        f(item)
    })
}
