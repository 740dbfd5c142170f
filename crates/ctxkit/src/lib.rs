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
//! # Keep the handle, or take a detached child
//!
//! Dropping a [`CancelHandle`] cancels its context. So `let (ctx, _) =
//! parent.with_cancel();` is cancelled on the spot, and Go's spawn-loop
//! habit, `let (ctx, _cancel) = parent.with_timeout(d);` then handing `ctx`
//! to a thread, cancels every worker when the iteration ends. Bind the
//! handle to a name that lives as long as the work, or, in a loop, take a
//! child that owns its own cancellation:
//!
//! ```
//! use ctxkit::Context;
//! use std::time::Duration;
//!
//! let root = Context::background();
//! let workers: Vec<_> = (0..3)
//!     .map(|n| {
//!         // Wrong: `let (ctx, _cancel) = root.with_timeout(...)` here.
//!         let ctx = root.with_timeout_detached(Duration::from_secs(5));
//!         std::thread::spawn(move || (n, ctx.err()))
//!     })
//!     .collect();
//! for worker in workers {
//!     assert_eq!(worker.join().unwrap().1, None, "not cancelled at start");
//! }
//! ```
//!
//! A context ended by its handle's drop says so in its `Debug` output
//! (`context.Background.WithCancel(canceled: CancelHandle dropped)`).
//! There is no warning at run time, even in debug builds. A check that
//! flags a handle dropped before anything looked at its context would be
//! cheap (a bit set on the first `is_done`), but not quiet: that is also
//! what correct code does when an early `return` or `?` abandons work it had
//! not started, so it would fire on correct programs and get silenced (the
//! README's "The dropped-handle trap" has the measurements).
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
//! # Recipes
//!
//! **A grace period, then a forced stop.** In-flight work runs under a
//! context that shutdown does not end, but that has a handle of its own:
//! `root.without_cancel().with_cancel()` (values kept, cancellation cut).
//! When shutdown starts, stop taking new work and give the in-flight work a
//! deadline with [`CancelHandle::set_timeout`]: it finishes, or is stopped
//! when the grace period is over.
//!
//! ```
//! use ctxkit::{Context, Error};
//! use std::time::Duration;
//!
//! let (root, shutdown) = Context::background().with_cancel(); // e.g. a signal
//! let (in_flight, force_stop) = root.without_cancel().with_cancel();
//! let worker = std::thread::spawn({
//!     let ctx = in_flight.clone();
//!     move || {
//!         while ctx.sleep(Duration::from_millis(5)).is_ok() {} // a long job
//!         ctx.err()
//!     }
//! });
//! shutdown.cancel(); // stop accepting work...
//! assert!(root.is_done() && !in_flight.is_done(), "...but let this finish");
//! force_stop.set_timeout(Duration::from_millis(20)); // the grace period
//! assert_eq!(worker.join().unwrap(), Some(Error::DeadlineExceeded));
//! ```
//!
//! **My own deadline, or someone else's end?** `err()` says
//! `DeadlineExceeded` for an inherited deadline too, and `Canceled` for a
//! parent's cancel and a failed sibling alike. Give your own deadline a
//! cause of its own type and ask [`Context::cause`]: the first ending wins
//! and its cause is what the context reports.
//!
//! ```
//! use ctxkit::{group, Context, Message};
//! use std::time::Duration;
//!
//! #[derive(Debug)]
//! struct FetchTimedOut;
//! impl std::fmt::Display for FetchTimedOut {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("fetch took longer than its 10 ms budget")
//!     }
//! }
//! impl std::error::Error for FetchTimedOut {}
//!
//! fn fetch(parent: &Context) -> &'static str {
//!     let (ctx, _cancel) = parent.with_timeout_cause(Duration::from_millis(10), FetchTimedOut);
//!     ctx.wait(); // a fetch that never answers
//!     match ctx.cause() {
//!         Some(cause) if cause.is::<FetchTimedOut>() => "my own deadline",
//!         _ => "ended from above: a parent, or a failed sibling",
//!     }
//! }
//!
//! assert_eq!(fetch(&Context::background()), "my own deadline");
//! let mut seen = "";
//! let _ = group::scope(&Context::background(), |g| {
//!     // Spawned first: a group whose context is done starts nothing more.
//!     g.spawn(|ctx| {
//!         ctx.wait(); // the group's context ends first...
//!         seen = fetch(ctx); // ...so this fetch is born ended
//!         Ok(())
//!     });
//!     g.spawn(|_| Err(Message::new("sibling failed")));
//! });
//! assert_eq!(seen, "ended from above: a parent, or a failed sibling");
//! ```
//!
//! **A reason in one line.** [`Message`] is a cause that is just a sentence:
//! `cancel.cancel_with(Message::new("config reloaded"))`.
//!
//! # Cost
//!
//! Checking for cancellation ([`Context::is_done`], [`Context::err`],
//! [`Context::check`]) is one atomic load. Cloning is one reference-count
//! increment, free for `background()`. There is no thread or task per
//! context: every deadline shares one lazily started timer thread,
//! `after_func` callbacks run on a small pool that exists only while there
//! are callbacks to run, and one more thread, `ctxkit-clock`, keeps the
//! coarse time of [`provenance`] records while contexts are being made
//! (parked after a second without any).
//!
//! A derived context is one 72-byte heap block (80 with malloc's header and
//! rounding). Each thread keeps up to 1,024 blocks it freed (80 KiB at most)
//! for its next derivations, and returns them to the allocator when it
//! exits: building and dropping a tree of contexts then rarely reaches
//! `malloc` at all.
//!
//! # Debugging
//!
//! `Debug` prints the chain like Go's `String()`, with a note on a context
//! that its dropped handle ended; [`Context::cause`] says why a context
//! ended; [`Context::registrations`] and [`diagnostics::pending_deadlines`]
//! show what a tree still holds:
//!
//! ```
//! use ctxkit::{diagnostics, Context};
//! use std::time::Duration;
//!
//! let (server, _shutdown) = Context::background().with_cancel();
//! let before = diagnostics::pending_deadlines();
//! {
//!     let (request, _done) = server.with_timeout(Duration::from_secs(30));
//!     assert_eq!(server.registrations(), 1);
//!     assert_eq!(diagnostics::pending_deadlines(), before + 1);
//!     let (ctx, _) = request.with_cancel(); // the `_` mistake, named:
//!     assert!(format!("{ctx:?}").ends_with(".WithCancel(canceled: CancelHandle dropped)"));
//! }
//! assert_eq!(server.registrations(), 0); // nothing left behind
//! assert_eq!(diagnostics::pending_deadlines(), before);
//! ```
//!
//! [`Context::provenance`] says who cancelled a context, from which line,
//! how many levels up and how long it had lived; [`Context::tree`] lists a
//! context's live descendants and draws them as text, Mermaid, Graphviz DOT
//! or JSON (`cargo run --example tree`):
//!
//! ```
//! use ctxkit::provenance::Origin;
//! use ctxkit::Context;
//!
//! let (server, _shutdown) = Context::background().with_cancel();
//! let (conn, hang_up) = server.with_cancel();
//! let (request, _done) = conn.with_value("req-7").with_cancel();
//! assert_eq!(server.tree().len(), 4); // server, conn, the value, request
//! hang_up.cancel_from("client went away");
//! let who = request.provenance().unwrap();
//! assert_eq!(who.origin(), Origin::Integration("client went away"));
//! assert_eq!(who.levels_up(), 2);
//! assert_eq!(server.tree().len(), 1, "the cancelled branch is gone");
//! ```
//!
//! # The guide
//!
//! The repository's `docs/guide.md` tells the whole story in order: the
//! stop-work-order picture, the problem, the context tree, the idiomatic
//! program for threads and async, the pitfalls, when to use a context and
//! when not, the patterns ([`group`], `pool`, [`pipeline`], [`or_done`],
//! `parallel`, `signal`, [`process`], [`net`]), services and debugging, with
//! a Go → ctxkit table and a section for tokio-util users. Every Rust block
//! in it runs as a test.
//!
//! # Features
//!
//! - `crossbeam`: `Context::done_receiver()`, a channel for `select!`; the
//!   thread forms of `pool`, `pipeline` and [`or_done`].
//! - `tokio`: async forms of the patterns ([`group`], `pool`, `pipeline`,
//!   [`or_done`]).
//! - `signal`: contexts cancelled by SIGINT / SIGTERM (module `signal`).
//! - `rayon`: parallel iteration that stops early on cancellation.
//! - `tracing`: every cancellation that is its own origin is a `tracing`
//!   event carrying its [`provenance`].
//! - `serde`: [`tree::Tree`] as JSON (`to_json`, `from_json`).

#![deny(missing_docs)]
// On docs.rs (`--cfg docsrs`, nightly), every item gated on a feature shows
// a badge naming the feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod after_func;
mod cancel;
#[cfg(feature = "crossbeam")]
mod channel;
// Under loom only its model uses the word; the thread is not started.
#[cfg_attr(loom, allow(dead_code))]
mod clock;
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
#[cfg(any(feature = "crossbeam", feature = "tokio"))]
pub mod pipeline;
#[cfg(any(feature = "crossbeam", feature = "tokio"))]
pub mod pool;
#[cfg(not(loom))]
pub mod process;
pub mod provenance;
mod registry;
// tokio has no signal support under loom, and models need none.
#[cfg(all(feature = "signal", not(loom)))]
pub mod signal;
mod sync;
mod timer;
pub mod tree;
mod values;
mod wait;

pub use after_func::AfterFunc;
pub use context::Context;
pub use error::{Cause, Error, Message};
pub use handle::CancelHandle;
pub use provenance::Provenance;
pub use wait::{Done, OwnedDone};

/// Process-wide diagnostics, for leak checks in tests and for metrics.
///
/// ```
/// use ctxkit::{diagnostics, Context};
/// use std::time::Duration;
///
/// let before = diagnostics::pending_deadlines();
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
/// assert_eq!(diagnostics::pending_deadlines(), before + 1);
/// drop(cancel); // cancels: the deadline leaves the timer at once
/// assert_eq!(diagnostics::pending_deadlines(), before);
/// # drop(ctx);
/// ```
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
