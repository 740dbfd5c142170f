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
//!
//! # Transactions, and PostgreSQL
//!
//! A transaction whose context ends is rolled back whole:
//!
//! ```
//! use ctxkit::Context;
//! use ctxkit_sql::sqlite::ConnectionExt;
//!
//! let mut conn = rusqlite::Connection::open_in_memory()?;
//! conn.execute_ctx(&Context::background(), "CREATE TABLE t (x INTEGER)", [])?;
//! let (ctx, cancel) = Context::background().with_cancel();
//! let tx = conn.transaction_ctx(&ctx)?;
//! tx.execute_ctx("INSERT INTO t VALUES (1)", [])?;
//! cancel.cancel();
//! assert!(tx.commit().is_err()); // the context's error; nothing written
//! let rows: i64 = conn.query_row_ctx(&Context::background(), "SELECT count(*) FROM t", [], |r| r.get(0))?;
//! assert_eq!(rows, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! PostgreSQL (feature `postgres`) has the same calls on a
//! `tokio_postgres::Client`, also through a deadpool-postgres client; the
//! crate's tests run them against a real server:
//!
//! ```
//! # #[cfg(feature = "postgres")]
//! # mod example {
//! use ctxkit::Context;
//! use ctxkit_sql::postgres::ClientExt;
//!
//! async fn pay(ctx: &Context, client: &tokio_postgres::Client, id: i32) -> Result<(), ctxkit_sql::Error> {
//!     let tx = client.transaction_ctx(ctx).await?;
//!     tx.execute_ctx("UPDATE orders SET paid = true WHERE id = $1", &[&id]).await?;
//!     tx.commit().await // the context's error, and a rollback, if it ended
//! }
//! # }
//! ```
#![deny(missing_docs)]

mod error;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use error::Error;
