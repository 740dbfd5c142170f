//! A SQLite transaction bound to a context.

use super::guard;
use crate::Error;
use ctxkit::Context;
use rusqlite::{Connection, Params, Row, TransactionBehavior};
use std::cell::{Cell, RefCell};

/// A transaction whose statements all run under one context, begun by
/// [`ConnectionExt::transaction_ctx`](super::ConnectionExt::transaction_ctx).
///
/// Contract (Go's `database/sql` `Tx`):
/// - every statement runs under the transaction's context, as the
///   connection's `*_ctx` calls do;
/// - when a statement is stopped because the context ended, the transaction
///   is rolled back at once, whole, and every later call returns the
///   context's error;
/// - [`commit`](Transaction::commit) on a done context rolls back, writes
///   nothing and returns the context's error;
/// - dropping the transaction without `commit` rolls it back.
///
/// Methods take `&self`; the borrow of the connection is held inside.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_sql::sqlite::ConnectionExt;
///
/// let mut conn = rusqlite::Connection::open_in_memory()?;
/// let ctx = Context::background();
/// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
///
/// let (tx_ctx, cancel) = ctx.with_cancel();
/// let tx = conn.transaction_ctx(&tx_ctx)?;
/// tx.execute_ctx("INSERT INTO t VALUES (1)", [])?;
/// cancel.cancel();
/// let err = tx.commit().unwrap_err();
/// assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
///
/// let n: i64 = conn.query_row_ctx(&ctx, "SELECT count(*) FROM t", [], |r| r.get(0))?;
/// assert_eq!(n, 0); // nothing was written
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Transaction<'c> {
    conn: RefCell<&'c mut Connection>,
    ctx: Context,
    /// Set once the transaction is committed or rolled back.
    finished: Cell<bool>,
}

impl<'c> Transaction<'c> {
    pub(super) fn begin(
        conn: &'c mut Connection,
        ctx: &Context,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'c>, Error> {
        let begin = match behavior {
            TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            TransactionBehavior::Exclusive => "BEGIN EXCLUSIVE",
            _ => "BEGIN DEFERRED",
        };
        guard::run(conn, ctx, |c| c.execute_batch(begin))?;
        Ok(Transaction {
            conn: RefCell::new(conn),
            ctx: ctx.clone(),
            finished: Cell::new(false),
        })
    }

    /// The context every statement of the transaction runs under.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// assert!(!tx.context().is_done());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// `execute` in the transaction: the number of rows changed.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// assert_eq!(tx.execute_ctx("INSERT INTO t VALUES (?1)", [7])?, 1);
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute_ctx<P: Params>(&self, sql: &str, params: P) -> Result<usize, Error> {
        self.run(|c| c.execute(sql, params))
    }

    /// `query_row` in the transaction.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// let one: i64 = tx.query_row_ctx("SELECT 1", [], |r| r.get(0))?;
    /// assert_eq!(one, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query_row_ctx<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T, Error>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.run(|c| c.query_row(sql, params, f))
    }

    /// Every row mapped by `f`, the context checked between rows too.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// let xs: Vec<i64> = tx.query_map_ctx("SELECT 1 UNION ALL SELECT 2", [], |r| r.get(0))?;
    /// assert_eq!(xs, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query_map_ctx<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<Vec<T>, Error>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        let ctx = self.ctx.clone();
        self.run(|c| guard::collect_rows(c, &ctx, sql, params, f))
    }

    /// `execute_batch` in the transaction.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// tx.execute_batch_ctx("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")?;
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute_batch_ctx(&self, sql: &str) -> Result<(), Error> {
        self.run(|c| c.execute_batch(sql))
    }

    /// Runs `f` with the connection inside the transaction, under its
    /// context (prepared statements and anything else rusqlite offers).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    /// use std::time::Duration;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// assert_eq!(tx.context().deadline(), ctx.deadline());
    /// let tables = tx.with_ctx(|conn| {
    ///     let mut statement = conn.prepare_cached("SELECT count(*) FROM sqlite_master")?;
    ///     statement.query_row([], |r| r.get::<_, i64>(0))
    /// })?;
    /// assert_eq!(tables, 0);
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_ctx<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        self.run(f)
    }

    /// Commits, unless the context is done: then rolls back and returns the
    /// context's error, so nothing of the transaction is written.
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
    /// tx.commit()?; // written
    /// let n: i64 = conn.query_row_ctx(&ctx, "SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(self) -> Result<(), Error> {
        self.live()?;
        self.finished.set(true);
        // COMMIT itself is not interruptible: the context was live when the
        // decision was made, and a half-stopped commit would help no one.
        let result = self.conn.borrow().execute_batch("COMMIT");
        if result.is_err() {
            self.roll_back();
        }
        result.map_err(Error::driver)
    }

    /// Rolls back every write of the transaction.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::sqlite::ConnectionExt;
    ///
    /// let mut conn = rusqlite::Connection::open_in_memory()?;
    /// let ctx = Context::background();
    /// conn.execute_ctx(&ctx, "CREATE TABLE t (x INTEGER)", [])?;
    /// let tx = conn.transaction_ctx(&ctx)?;
    /// tx.execute_batch_ctx("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")?;
    /// let rows = tx.query_map_ctx("SELECT x FROM t ORDER BY x", [], |r| r.get::<_, i64>(0))?;
    /// assert_eq!(rows, [1, 2]); // visible inside the transaction
    /// tx.rollback()?;
    /// let n: i64 = conn.query_row_ctx(&ctx, "SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback(self) -> Result<(), Error> {
        self.finished.set(true);
        self.conn
            .borrow()
            .execute_batch("ROLLBACK")
            .map_err(Error::driver)
    }

    /// Fails with the context's error (rolling back) once the context is
    /// done or the transaction was ended by an earlier stop.
    fn live(&self) -> Result<(), Error> {
        if self.finished.get() || self.ctx.is_done() {
            self.roll_back();
            return Err(Error::stopped(&self.ctx, None));
        }
        Ok(())
    }

    fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        self.live()?;
        let mut conn = self.conn.borrow_mut();
        let result = guard::run(&mut conn, &self.ctx, f);
        drop(conn);
        if matches!(&result, Err(e) if e.context_error().is_some()) {
            self.roll_back();
        }
        result
    }

    /// Rolls back once; SQLite may already have rolled back on its own after
    /// an interrupt, so "no transaction is active" is expected, not an error.
    fn roll_back(&self) {
        if !self.finished.replace(true) {
            let _ = self.conn.borrow().execute_batch("ROLLBACK");
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.roll_back();
    }
}
