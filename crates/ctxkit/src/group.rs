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
//! The error type is cloned once (one copy becomes the context's cause, the
//! other is returned), so `E` must be `Clone`: wrap other errors in an `Arc`,
//! or use [`ctxkit::Cause`](crate::Cause).
//!
//! ```
//! use ctxkit::{group, Context, Error};
//! use std::time::Duration;
//!
//! let (parent, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
//! let result = group::scope(&parent, |g| {
//!     g.spawn(|_| Err(Error::DeadlineExceeded)); // fails at once...
//!     g.spawn(|ctx| {
//!         // ...and so ends this sibling's wait early, with the error as cause.
//!         ctx.wait();
//!         let cause = ctx.cause().unwrap();
//!         assert_eq!(cause.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
//!         Ok(())
//!     });
//! });
//! assert_eq!(result, Err(Error::DeadlineExceeded));
//! ```

// The table links to the tokio form, which exists only with its feature
// (docs.rs documents every feature).
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

mod limit;
mod scoped;
mod state;
#[cfg(feature = "tokio")]
mod task;

pub use limit::LimitError;
pub use scoped::{scope, ScopedGroup};
pub use state::TaskPanicked;
#[cfg(feature = "tokio")]
pub use task::TaskGroup;
