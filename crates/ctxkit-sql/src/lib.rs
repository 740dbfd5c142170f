//! Query cancellation under a [`ctxkit::Context`]: when the context ends, the
//! database stops the query, and nothing of a cancelled transaction is
//! written.
//!
//! Go's `database/sql` `QueryContext`, `ExecContext` and `BeginTx` for Rust's
//! drivers, as `*_ctx` methods on extension traits of the connections users
//! already hold:
//!
//! - [`sqlite::ConnectionExt`] for `rusqlite::Connection` (feature `sqlite`,
//!   on by default, SQLite bundled: no system library);
//! - [`postgres::ClientExt`] for `tokio_postgres::Client` (feature
//!   `postgres`), also through a `deadpool-postgres` pooled client.
//!
//! Every call reports a stop by its context as such: [`Error::context_error`]
//! is `Canceled` or `DeadlineExceeded`, [`Error::cause`] the context's cause,
//! and `source()` the driver's own report of the stop.
//!
//! ```
//! use ctxkit::Context;
//! use ctxkit_sql::sqlite::ConnectionExt;
//! use std::time::Duration;
//!
//! let mut conn = rusqlite::Connection::open_in_memory()?;
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
//! let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";
//! let err = conn.query_row_ctx(&ctx, slow, [], |r| r.get::<_, i64>(0)).unwrap_err();
//! assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
//! // The connection is fine afterwards.
//! let one: i64 = conn.query_row_ctx(&Context::background(), "SELECT 1", [], |r| r.get(0))?;
//! assert_eq!(one, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod error;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use error::Error;
