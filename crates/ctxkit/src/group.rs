//! Structured concurrency: a group of tasks under one context, Go's
//! `errgroup`.
//!
//! A group derives a context from a parent and runs tasks that each return
//! `Result<(), E>`. The first task to fail cancels the group's context with
//! its error as the [cause](crate::Context::cause), so its siblings stop
//! early; waiting for the group returns that first error once every task has
//! finished. A limit bounds how many tasks run at once, and a task's panic
//! reaches whoever waits for the group, after the others have stopped.
//!
//! | | threads | tokio (feature `tokio`) |
//! |---|---|---|
//! | form | [`scope`]`(&ctx, \|g\| ...)` | [`TaskGroup::new`]`(&ctx)` |
//! | tasks | `FnOnce(&Context) -> Result<(), E>`, may borrow | `FnOnce(Context) -> impl Future<Output = Result<(), E>>`, `'static` |
//! | spawn at the limit | blocks | `.await`s |
//! | wait | at the end of `scope` | [`TaskGroup::wait`]`().await` |
//!
//! Tasks return no value: like Go's errgroup, a group reports only the first
//! error. Scoped tasks write results through borrowed `&mut` slots; tokio
//! tasks send them on a channel or store them behind an `Arc`.
//!
//! Any error type works, `Clone` or not (`std::io::Error`): the first error
//! is kept once, in an `Arc` that is both the context's cause and the
//! group's `Err`, the same value (Go's errgroup returns the error it
//! cancelled with). Tasks that cannot fail return `()` and need no error
//! type at all ([`TaskOutcome`]). Spawning on a group whose context is done
//! runs nothing and returns false.
//!
//! ```
//! use ctxkit::{group, Context};
//! use std::io;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let (parent, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
//! let result = group::scope(&parent, |g| {
//!     g.spawn(|ctx| {
//!         // Ended early by the sibling's failure, with its error as the cause.
//!         ctx.wait();
//!         let cause = ctx.cause().unwrap();
//!         assert_eq!(cause.downcast_ref::<io::Error>().unwrap().kind(), io::ErrorKind::NotFound);
//!         Ok(())
//!     });
//!     g.spawn(|_| Err(io::Error::new(io::ErrorKind::NotFound, "no such page")));
//! });
//! let err: Arc<io::Error> = result.unwrap_err();
//! assert_eq!(err.kind(), io::ErrorKind::NotFound);
//! ```

// The table links to the tokio form, which exists only with its feature
// (docs.rs documents every feature).
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

mod limit;
mod outcome;
mod scoped;
mod state;
#[cfg(feature = "tokio")]
mod task;

pub use limit::LimitError;
pub use outcome::TaskOutcome;
pub use scoped::{scope, ScopedGroup};
pub use state::TaskPanicked;
#[cfg(feature = "tokio")]
pub use task::TaskGroup;
