//! SQLite under a context: rusqlite with its bundled SQLite.
//!
//! # How a statement is stopped
//!
//! A SQLite **progress handler** watches the call's context. SQLite calls
//! the handler every [`PROGRESS_OPS`] virtual-machine instructions of the
//! running statement (a few microseconds); the handler is one atomic load,
//! `ctx.is_done()`, and a `true` makes SQLite abandon the statement with
//! `SQLITE_INTERRUPT`, which the call reports as the context's error.
//!
//! The handler is installed on a connection by its first `*_ctx` call and
//! stays; each call publishes its context to it for exactly as long as the
//! call runs (withdrawn on return and on panic), and between calls the
//! handler stops nothing. Installing once keeps a call's cost at a few
//! nanoseconds (see BENCHMARKS.md). ctxkit-sql owns the connection's progress
//! handler: one you install yourself is replaced by the next `*_ctx` call.
//!
//! Why not `sqlite3_interrupt` (rusqlite's `InterruptHandle`) from the thread
//! that cancels? An interrupt is a one-shot flag on the connection: sent
//! before the statement starts, it is lost (SQLite clears it when no
//! statement is running), and sent just after the statement ended, it stops
//! whatever runs next on that connection. The progress handler instead
//! *polls* the context: a context that ended at any moment is seen at the next
//! check (a done context stays done, so nothing is lost), and it only sees
//! the context of the call now running, so it cannot hit another statement.
//! A context that is already done fails the call before anything is prepared.
//!
//! Limits: SQLite does not call the handler while it sleeps in a busy handler
//! (`busy_timeout`) waiting for another connection's lock, nor inside a single
//! long-running user-defined function.
//!
//! # Transactions
//!
//! [`ConnectionExt::transaction_ctx`] begins a [`Transaction`] bound to a
//! context. Every statement in it runs under that context; when the context
//! ends, the statement that sees it is stopped and the whole transaction is
//! rolled back at once; [`Transaction::commit`] on a done context rolls back
//! and returns the context's error; dropping the transaction rolls it back.
//!
//! # From async code
//!
//! The calls block the calling thread, like rusqlite's. From async code, move
//! the connection (or a pooled one) and a clone of the context into
//! `tokio::task::spawn_blocking`; cancelling the context from the async side
//! stops the statement on the blocking thread:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use ctxkit::Context;
//! use ctxkit_sql::sqlite::ConnectionExt;
//! use std::time::Duration;
//!
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
//! let mut conn = rusqlite::Connection::open_in_memory().unwrap();
//! let task_ctx = ctx.clone();
//! let result = tokio::task::spawn_blocking(move || {
//!     conn.query_row_ctx(
//!         &task_ctx,
//!         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
//!         [],
//!         |row| row.get::<_, i64>(0),
//!     )
//! })
//! .await
//! .unwrap();
//! assert_eq!(result.unwrap_err().context_error(), Some(ctxkit::Error::DeadlineExceeded));
//! # }
//! ```
//!
//! Dropping the `JoinHandle` does not stop the blocking thread: end the
//! context (drop its `CancelHandle`) to stop it.

mod guard;
mod transaction;

pub use transaction::Transaction;

use crate::Error;
use ctxkit::Context;
use rusqlite::{Connection, Params, Row, TransactionBehavior};

/// How many SQLite virtual-machine instructions run between two checks of
/// the context: small enough that a stop takes microseconds, large enough
/// that the check costs nothing measurable.
///
/// ```
/// assert_eq!(ctxkit_sql::sqlite::PROGRESS_OPS, 1000);
/// ```
pub const PROGRESS_OPS: i32 = 1000;

/// `*_ctx` forms of rusqlite's calls: the statement stops when the context
/// ends.
///
/// Contract of every method: a context that is already done fails the call
/// with its error before anything runs; a context that ends while the
/// statement runs stops it within microseconds and the call returns
/// [`Error`] with `context_error()` set and SQLite's `SQLITE_INTERRUPT` as
/// the source; the connection stays usable and nothing of the stop reaches a
/// later call. Driver errors (malformed SQL, constraints ...) come back with
/// `context_error() == None` and the `rusqlite::Error` as source.
///
/// The receiver is `&mut Connection` because rusqlite requires it to set a
/// progress handler.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_sql::sqlite::ConnectionExt;
///
/// let mut conn = rusqlite::Connection::open_in_memory()?;
/// let ctx = Context::background();
/// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
/// conn.execute_ctx(&ctx, "INSERT INTO t VALUES (?1), (?2)", [1, 2])?;
/// let sum: i64 = conn.query_row_ctx(&ctx, "SELECT sum(x) FROM t", [], |r| r.get(0))?;
/// assert_eq!(sum, 3);
/// let xs: Vec<i64> = conn.query_map_ctx(&ctx, "SELECT x FROM t ORDER BY x", [], |r| r.get(0))?;
/// assert_eq!(xs, [1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ConnectionExt {
    /// `Connection::execute` under `ctx`: the number of rows changed.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
    /// assert_eq!(conn.execute_ctx(&ctx, "INSERT INTO t VALUES (?1), (?2)", [1, 2])?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn execute_ctx<P: Params>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
    ) -> Result<usize, Error>;

    /// `Connection::query_row` under `ctx`: the first row mapped by `f`.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    /// use std::time::Duration;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let answer: i64 = conn.query_row_ctx(&ctx, "SELECT 6 * 7", [], |r| r.get(0))?;
    /// assert_eq!(answer, 42);
    /// let (short, _cancel) = ctx.with_timeout(Duration::from_millis(50));
    /// let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";
    /// let err = conn.query_row_ctx(&short, endless, [], |r| r.get::<_, i64>(0)).unwrap_err();
    /// assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn query_row_ctx<T, P, F>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T, Error>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;

    /// Every row mapped by `f`, collected. The context is also checked
    /// between rows, so a long iteration stops even while `f` does the work.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let squares: Vec<i64> = conn.query_map_ctx(
    ///     &ctx,
    ///     "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x * x FROM c",
    ///     [],
    ///     |r| r.get(0),
    /// )?;
    /// assert_eq!(squares, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn query_map_ctx<T, P, F>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<Vec<T>, Error>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>;

    /// `Connection::execute_batch` under `ctx`: several statements, no
    /// parameters.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// conn.execute_batch_ctx(&ctx, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")?;
    /// let n: i64 = conn.query_row_ctx(&ctx, "SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn execute_batch_ctx(&mut self, ctx: &Context, sql: &str) -> Result<(), Error>;

    /// Runs `f` with the connection under `ctx`: anything rusqlite offers
    /// (prepared and cached statements, row streaming, blobs) is stopped the
    /// same way while `f` runs.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let n = conn.with_ctx(&Context::background(), |c| {
    ///     let mut stmt = c.prepare_cached("SELECT ?1 + 1")?;
    ///     stmt.query_row([41], |r| r.get::<_, i64>(0))
    /// })?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn with_ctx<T, F>(&mut self, ctx: &Context, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>;

    /// Begins a deferred transaction bound to `ctx` (fails at once if `ctx`
    /// is done). See [`Transaction`].
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// tx.execute_ctx("INSERT INTO t VALUES (1)", [])?;
    /// tx.commit()?;
    /// let (done, cancel) = ctx.with_cancel();
    /// cancel.cancel();
    /// assert!(conn.transaction_ctx(&done).is_err()); // a done context begins nothing
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn transaction_ctx(&mut self, ctx: &Context) -> Result<Transaction<'_>, Error>;

    /// [`transaction_ctx`](ConnectionExt::transaction_ctx) with rusqlite's
    /// `DEFERRED`, `IMMEDIATE` or `EXCLUSIVE` behaviour.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    /// use rusqlite::TransactionBehavior;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let tx = conn.transaction_ctx_with(&ctx, TransactionBehavior::Immediate)?; // takes the write lock now
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn transaction_ctx_with(
        &mut self,
        ctx: &Context,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>, Error>;
}

impl ConnectionExt for Connection {
    fn execute_ctx<P: Params>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
    ) -> Result<usize, Error> {
        guard::run(self, ctx, |c| c.execute(sql, params))
    }

    fn query_row_ctx<T, P, F>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T, Error>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        guard::run(self, ctx, |c| c.query_row(sql, params, f))
    }

    fn query_map_ctx<T, P, F>(
        &mut self,
        ctx: &Context,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<Vec<T>, Error>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        guard::run(self, ctx, |c| guard::collect_rows(c, ctx, sql, params, f))
    }

    fn execute_batch_ctx(&mut self, ctx: &Context, sql: &str) -> Result<(), Error> {
        guard::run(self, ctx, |c| c.execute_batch(sql))
    }

    fn with_ctx<T, F>(&mut self, ctx: &Context, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        guard::run(self, ctx, f)
    }

    fn transaction_ctx(&mut self, ctx: &Context) -> Result<Transaction<'_>, Error> {
        Transaction::begin(self, ctx, TransactionBehavior::Deferred)
    }

    fn transaction_ctx_with(
        &mut self,
        ctx: &Context,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>, Error> {
        Transaction::begin(self, ctx, behavior)
    }
}
