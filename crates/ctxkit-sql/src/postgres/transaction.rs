//! A PostgreSQL transaction bound to a context.

use super::call::{self, Timeout};
use crate::Error;
use ctxkit::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement, ToStatement};

/// A transaction whose statements all run under one context, begun by
/// [`ClientExt::transaction_ctx`](super::ClientExt::transaction_ctx).
///
/// Contract (Go's `database/sql` `Tx`):
/// - every statement runs under the transaction's context, with its deadline
///   sent as `SET LOCAL statement_timeout`;
/// - when a statement is stopped because the context ended, `ROLLBACK` is
///   sent at once: the server discards every write, and the client is
///   usable again (no `25P02 in_failed_sql_transaction` for the next user);
///   every later call returns the context's error;
/// - [`commit`](Transaction::commit) on a done context rolls back and returns
///   the context's error;
/// - dropping the transaction without `commit` rolls it back (the `ROLLBACK`
///   is queued on the connection before `drop` returns).
///
/// Methods take `&self`, like `tokio_postgres::Client`'s.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_sql::postgres::ClientExt;
///
/// // Compiled here; the same calls run against a real server in tests/postgres.rs.
/// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
///     let tx = client.transaction_ctx(ctx).await?;
///     tx.execute_ctx("INSERT INTO orders (paid) VALUES (false)", &[]).await?;
///     tx.commit().await?; // or drop it: rolled back
///     Ok(())
/// }
/// ```
pub struct Transaction<'c> {
    client: &'c Client,
    ctx: Context,
    /// Set once the transaction is committed or rolled back.
    finished: AtomicBool,
}

impl<'c> Transaction<'c> {
    pub(super) async fn begin(client: &'c Client, ctx: &Context) -> Result<Transaction<'c>, Error> {
        call::run(client, ctx, Timeout::Off, client.batch_execute("BEGIN")).await?;
        Ok(Transaction {
            client,
            ctx: ctx.clone(),
            finished: AtomicBool::new(false),
        })
    }

    /// The context every statement of the transaction runs under.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     assert_eq!(tx.context().deadline(), ctx.deadline());
    ///     assert!(std::ptr::eq(tx.client(), client));
    ///     Ok(())
    /// }
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The client the transaction runs on.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let _same: &tokio_postgres::Client = tx.client();
    ///     Ok(())
    /// }
    /// ```
    pub fn client(&self) -> &'c Client {
        self.client
    }

    /// `query` in the transaction: every row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let rows = tx.query_ctx("SELECT id FROM orders FOR UPDATE", &[]).await?;
    ///     println!("{} orders locked", rows.len());
    ///     Ok(())
    /// }
    /// ```
    pub async fn query_ctx<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement + Sync,
    {
        self.run(self.client.query(statement, params)).await
    }

    /// `query_one` in the transaction: exactly one row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let _count: i64 = tx.query_one_ctx("SELECT count(*) FROM orders", &[]).await?.get(0);
    ///     Ok(())
    /// }
    /// ```
    pub async fn query_one_ctx<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement + Sync,
    {
        self.run(self.client.query_one(statement, params)).await
    }

    /// `query_opt` in the transaction: zero or one row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let _maybe = tx.query_opt_ctx("SELECT paid FROM orders WHERE id = $1", &[&7i32]).await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn query_opt_ctx<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement + Sync,
    {
        self.run(self.client.query_opt(statement, params)).await
    }

    /// `execute` in the transaction: the number of rows changed.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let changed = tx.execute_ctx("DELETE FROM orders WHERE paid", &[]).await?;
    ///     println!("{changed} deleted");
    ///     tx.commit().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn execute_ctx<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement + Sync,
    {
        self.run(self.client.execute(statement, params)).await
    }

    /// `batch_execute` in the transaction: several statements, no parameters.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     tx.batch_execute_ctx("SET LOCAL lock_timeout = '1s'; LOCK TABLE orders").await?;
    ///     tx.commit().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn batch_execute_ctx(&self, sql: &str) -> Result<(), Error> {
        self.run(self.client.batch_execute(sql)).await
    }

    /// `prepare` in the transaction.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     let insert = tx.prepare_ctx("INSERT INTO orders (paid) VALUES ($1)").await?;
    ///     for paid in [false, true] {
    ///         tx.execute_ctx(&insert, &[&paid]).await?;
    ///     }
    ///     tx.commit().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn prepare_ctx(&self, sql: &str) -> Result<Statement, Error> {
        self.run(self.client.prepare(sql)).await
    }

    /// Commits, unless the context is done: then rolls back and returns the
    /// context's error, so nothing of the transaction is written.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     tx.execute_ctx("UPDATE orders SET paid = true", &[]).await?;
    ///     match tx.commit().await {
    ///         Ok(()) => println!("written"),
    ///         Err(err) if err.context_error().is_some() => println!("rolled back: {err}"),
    ///         Err(err) => return Err(err),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn commit(self) -> Result<(), Error> {
        self.live()?;
        self.finished.store(true, Ordering::Relaxed);
        // COMMIT is not cancelled: the context was live when the decision
        // was made, and whether a half-cancelled commit happened is unknowable.
        let committed = self.client.batch_execute("COMMIT").await;
        committed.map_err(Error::driver)
    }

    /// Rolls back every write of the transaction.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?;
    ///     tx.execute_ctx("DELETE FROM orders", &[]).await?;
    ///     tx.rollback().await?; // a dry run: nothing deleted
    ///     Ok(())
    /// }
    /// ```
    pub async fn rollback(self) -> Result<(), Error> {
        self.finished.store(true, Ordering::Relaxed);
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::driver)
    }

    /// Fails with the context's error (rolling back) once the context is
    /// done or an earlier stop ended the transaction.
    fn live(&self) -> Result<(), Error> {
        if self.finished.load(Ordering::Relaxed) || self.ctx.is_done() {
            self.roll_back();
            return Err(Error::stopped(&self.ctx, None));
        }
        Ok(())
    }

    async fn run<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        self.live()?;
        let result = call::run(self.client, &self.ctx, Timeout::Local, query).await;
        if matches!(&result, Err(e) if e.context_error().is_some()) {
            self.roll_back();
        }
        result
    }

    /// Queues `ROLLBACK` once (the order on the connection puts it before any
    /// later statement of the client).
    fn roll_back(&self) {
        if !self.finished.swap(true, Ordering::Relaxed) {
            call::send_now(self.client, "ROLLBACK");
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.roll_back();
    }
}
