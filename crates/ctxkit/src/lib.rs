//! Go's `context.Context`, done right in Rust.
//!
//! A [`Context`] carries **cancellation, a deadline and request-scoped values**
//! down a tree of threads and async tasks. Think of a company-wide "stop
//! work" order: issued at the top, it cascades down the org chart, and every
//! team that was listening halts. Cancel a context and every context derived
//! from it is cancelled too, synchronously, before `cancel()` returns.
//!
//! ```
//! use ctxkit::{Context, Error};
//! use std::time::Duration;
//!
//! // A request with a 50 ms budget, and a value every layer below can read.
//! struct RequestId(u64);
//! let (ctx, _cancel) = Context::background()
//!     .with_value(RequestId(7))
//!     .with_timeout(Duration::from_millis(50));
//!
//! let worker = std::thread::spawn({
//!     let ctx = ctx.clone();
//!     move || {
//!         let mut polls = 0;
//!         // Periodic work that stops promptly when the context ends.
//!         while ctx.sleep(Duration::from_millis(5)).is_ok() {
//!             polls += 1;
//!         }
//!         (ctx.value::<RequestId>().unwrap().0, polls, ctx.err())
//!     }
//! });
//! let (id, _polls, err) = worker.join().unwrap();
//! assert_eq!(id, 7);
//! assert_eq!(err, Some(Error::DeadlineExceeded));
//! ```
//!
//! # How it differs from Go
//!
//! - **Dropping a [`CancelHandle`] cancels.** A forgotten `cancel()` cannot
//!   happen; [`CancelHandle::detach`] opts out explicitly.
//! - **Nothing leaks.** A context nobody holds any more is freed at once,
//!   even if never cancelled: its timer entry and its place in its parent go
//!   with it.
//! - **Values are keyed by type**, not by an `any` key: `with_value(RequestId(7))`
//!   then `value::<RequestId>()`. Use a newtype per value.
//! - **One primitive, both worlds.** Threads block with [`Context::wait`],
//!   [`Context::wait_timeout`] and [`Context::sleep`]; async code awaits
//!   [`Context::done`] or wraps a future in [`Context::run`], on any executor.
//!
//! # Cost
//!
//! Checking for cancellation ([`Context::is_done`], [`Context::err`],
//! [`Context::check`]) is one atomic load. Cloning is one reference-count
//! increment, free for `background()`. There is no thread or task per
//! context: every deadline shares one lazily started timer thread, and
//! `after_func` callbacks run on a small pool that exists only while there
//! are callbacks to run.
//!
//! A derived context is one 72-byte heap block (80 with malloc's header and
//! rounding). Each thread keeps up to 1,024 blocks it freed (80 KiB at most)
//! for its next derivations, and returns them to the allocator when it
//! exits: building and dropping a tree of contexts then rarely reaches
//! `malloc` at all.
//!
//! # Features
//!
//! - `crossbeam`: `Context::done_receiver()`, a channel for `select!`; the
//!   thread forms of `pool`, [`pipeline`] and [`or_done`].
//! - `tokio`: async forms of the patterns ([`group`], `pool`, [`pipeline`],
//!   [`or_done`]).
//! - `signal`: contexts cancelled by SIGINT / SIGTERM (module `signal`).
//! - `rayon`: parallel iteration that stops early on cancellation.

#![warn(missing_docs)]

mod after_func;
mod cancel;
#[cfg(feature = "crossbeam")]
mod channel;
mod context;
mod deadline;
mod error;
mod executor;
pub mod group;
mod handle;
#[cfg(all(test, loom))]
mod loom_tests;
mod merge;
// Blocking sockets need real threads and callbacks, not loom models.
#[cfg(not(loom))]
pub mod net;
mod node_ref;
pub mod or_done;
#[cfg(feature = "rayon")]
pub mod parallel;
pub mod pipeline;
#[cfg(any(feature = "crossbeam", feature = "tokio"))]
pub mod pool;
#[cfg(not(loom))]
pub mod process;
mod registry;
// tokio has no signal support under loom, and models need none.
#[cfg(all(feature = "signal", not(loom)))]
pub mod signal;
mod sync;
mod timer;
mod values;
mod wait;

pub use after_func::AfterFunc;
pub use context::Context;
pub use error::{Cause, Error};
pub use handle::CancelHandle;
pub use wait::{Done, OwnedDone};

/// Process-wide diagnostics, for leak checks in tests and for metrics.
pub mod diagnostics {
    /// How many deadlines the shared timer holds: one per live context with a
    /// deadline of its own. Cancelled and dropped contexts leave at once.
    ///
    /// ```
    /// use ctxkit::{diagnostics, Context};
    /// use std::time::Duration;
    ///
    /// let (_ctx, cancel) = Context::background().with_timeout(Duration::from_secs(3600));
    /// assert!(diagnostics::pending_deadlines() >= 1);
    /// cancel.cancel(); // leaves the timer at once
    /// ```
    pub fn pending_deadlines() -> usize {
        crate::timer::pending()
    }
}
