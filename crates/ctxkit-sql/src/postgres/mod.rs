//! PostgreSQL under a context: tokio-postgres, alone or pooled by
//! deadpool-postgres.
//!
//! # What happens when the context ends
//!
//! The call sends the server a **cancel request** for the connection's
//! backend, waits until the server has delivered it, and keeps the query
//! future running until the server has stopped the query (PostgreSQL reports
//! `57014 query_canceled`). The call then returns [`Error`] with
//! `context_error()` set and the server's error as `source()`. The query is
//! over on the server when the call returns, and no cancel of ours is still in
//! flight, so nothing of the stop can reach a later query.
//!
//! Three facts about PostgreSQL's cancel protocol shape this (libpq and lib/pq
//! learnt them the hard way):
//! - a cancel request is a separate connection, and the server signals the
//!   backend only when it processes it; it closes that connection afterwards.
//!   Returning as soon as the request is written (as tokio-postgres's
//!   `cancel_query` does) lets a late cancel hit the *next* query. Here every
//!   cancel waits for the server's close, as libpq's `PQcancel` does;
//! - the server ignores a cancel that reaches a backend waiting for the
//!   client's next message (between the messages of one query). So the call
//!   repeats the cancel (2, 4, 8 ... up to 200 ms apart) until the query ends;
//! - the cancel is aimed at the address the server reports for the
//!   connection (`inet_server_addr()`, `inet_server_port()`, asked once per
//!   connection, one extra round trip on its first `*_ctx` call). Behind a
//!   pooler such as PgBouncer or a NAT that address may be another machine or
//!   unreachable: then the cancel cannot stop the query, the call gives up
//!   after 2 s, returns the context's error and leaves the query to the
//!   server's `statement_timeout`. Over a Unix socket the server reports no
//!   address: the cancel then goes through tokio-postgres's own
//!   `cancel_query`, which does not wait for the server's close.
//!
//! # Deadlines reach the server too
//!
//! A context with a deadline also sends it as `statement_timeout` (see
//! [`statement_timeout_ms`]: rounded up, clamped to what PostgreSQL
//! accepts), so the server enforces it even if the client dies. Outside a
//! transaction it is `SET` before the statement and `RESET` after (both
//! queued on the connection with the statement: no extra round trip);
//! inside a [`Transaction`] it is `SET LOCAL`. A session-level
//! `statement_timeout` of your own is therefore reset to the connection's
//! default by a deadline call outside a transaction.
//!
//! # Dropping a call
//!
//! Dropping a `*_ctx` future before it completes also stops the query on the
//! server (tokio-postgres alone lets it run to the end). A background task on
//! the current tokio runtime cancels it; the next `*_ctx` call on the same
//! connection waits until the dropped query has ended and no cancel is in
//! flight. Plain tokio-postgres calls do not wait for that, and one issued in
//! the moment a dropped query ends can be cancelled (`57014`).
//!
//! Queries pipelined concurrently on one client share its backend: a cancel
//! for one of them stops whichever is running on the server at that moment.
//!
//! # TLS
//!
//! The cancel request goes through the TLS connector set with
//! [`set_cancel_tls`] (the one your connections use); [`tokio_postgres::NoTls`]
//! by default.
//!
//! ```no_run
//! use ctxkit::Context;
//! use ctxkit_sql::postgres::ClientExt;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, connection) = tokio_postgres::connect("host=127.0.0.1 user=postgres", tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//!
//! let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
//! let err = client.query_ctx(&ctx, "SELECT pg_sleep(30)", &[]).await.unwrap_err();
//! assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
//! // The server has stopped the query; the client is ready for the next one.
//! let row = client.query_one_ctx(&Context::background(), "SELECT 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 1);
//! # Ok(())
//! # }
//! ```

mod call;
mod cancel;
mod timeout;
mod tls;
mod transaction;

pub use cancel::AwaitClose;
pub use timeout::{statement_timeout_ms, MAX_STATEMENT_TIMEOUT_MS};
pub use tls::{set_cancel_tls, CancelStream};
pub use transaction::Transaction;

use crate::Error;
use call::Timeout;
use ctxkit::Context;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement, ToStatement};

/// `*_ctx` forms of tokio-postgres's calls: the query stops on the server
/// when the context ends.
///
/// Contract of every method: a context that is already done fails the call
/// with its error before anything is sent; a context that ends while the
/// query runs gets it cancelled on the server (see the [module
/// docs](self)), and the call returns [`Error`] with `context_error()` set
/// and the server's `57014` as source; a query that completed before the
/// cancel took effect returns its result. Driver errors (malformed SQL, a
/// closed connection ...) come back with `context_error() == None` and the
/// `tokio_postgres::Error` as source.
///
/// Implemented for `tokio_postgres::Client`, so a `deadpool_postgres::Client`
/// (which derefs to it) has the methods too.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_sql::postgres::ClientExt;
///
/// // Compiled here; the same calls run against a real server in tests/postgres.rs.
/// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
///     // Also on a deadpool_postgres::Client, which derefs to tokio_postgres::Client.
///     let row = client.query_one_ctx(ctx, "SELECT 1", &[]).await?;
///     assert_eq!(row.get::<_, i32>(0), 1);
///     Ok(())
/// }
/// ```
pub trait ClientExt {
    /// `Client::query` under `ctx`: every row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let rows = client.query_ctx(ctx, "SELECT id FROM orders WHERE paid = $1", &[&false]).await?;
    ///     let ids: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    ///     assert!(ids.len() == rows.len());
    ///     Ok(())
    /// }
    /// ```
    fn query_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync;

    /// `Client::query_one` under `ctx`: exactly one row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let row = client.query_one_ctx(ctx, "SELECT count(*) FROM orders", &[]).await?;
    ///     let _count: i64 = row.get(0);
    ///     Ok(())
    /// }
    /// ```
    fn query_one_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync;

    /// `Client::query_opt` under `ctx`: zero or one row.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let order = client.query_opt_ctx(ctx, "SELECT paid FROM orders WHERE id = $1", &[&7i32]).await?;
    ///     if order.is_none() {
    ///         println!("no order 7");
    ///     }
    ///     Ok(())
    /// }
    /// ```
    fn query_opt_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync;

    /// `Client::execute` under `ctx`: the number of rows changed.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let changed = client.execute_ctx(ctx, "UPDATE orders SET paid = true WHERE id = $1", &[&7i32]).await?;
    ///     assert!(changed <= 1);
    ///     Ok(())
    /// }
    /// ```
    fn execute_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync;

    /// `Client::batch_execute` under `ctx`: several statements, no parameters.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     client.batch_execute_ctx(ctx, "CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1)").await?;
    ///     Ok(())
    /// }
    /// ```
    fn batch_execute_ctx<'a>(
        &'a self,
        ctx: &'a Context,
        sql: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// `Client::prepare` under `ctx`: a statement to run many times.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let statement = client.prepare_ctx(ctx, "SELECT paid FROM orders WHERE id = $1").await?;
    ///     for id in [1i32, 2, 3] {
    ///         client.query_opt_ctx(ctx, &statement, &[&id]).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    fn prepare_ctx<'a>(
        &'a self,
        ctx: &'a Context,
        sql: &'a str,
    ) -> impl Future<Output = Result<Statement, Error>> + Send + 'a;

    /// Begins a transaction bound to `ctx` (fails at once if `ctx` is done).
    /// See [`Transaction`].
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_sql::postgres::ClientExt;
    ///
    /// // Compiled here; the same calls run against a real server in tests/postgres.rs.
    /// async fn example(ctx: &Context, client: &tokio_postgres::Client) -> Result<(), ctxkit_sql::Error> {
    ///     let tx = client.transaction_ctx(ctx).await?; // fails at once if ctx is done
    ///     tx.execute_ctx("UPDATE orders SET paid = true WHERE id = $1", &[&7i32]).await?;
    ///     tx.commit().await?; // the context's error, and a rollback, if it ended
    ///     Ok(())
    /// }
    /// ```
    fn transaction_ctx<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Transaction<'a>, Error>> + Send + 'a;
}

impl ClientExt for Client {
    fn query_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync,
    {
        call::run(self, ctx, Timeout::Session, self.query(statement, params))
    }

    fn query_one_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync,
    {
        call::run(
            self,
            ctx,
            Timeout::Session,
            self.query_one(statement, params),
        )
    }

    fn query_opt_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync,
    {
        call::run(
            self,
            ctx,
            Timeout::Session,
            self.query_opt(statement, params),
        )
    }

    fn execute_ctx<'a, T>(
        &'a self,
        ctx: &'a Context,
        statement: &'a T,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a
    where
        T: ?Sized + ToStatement + Sync,
    {
        call::run(self, ctx, Timeout::Session, self.execute(statement, params))
    }

    fn batch_execute_ctx<'a>(
        &'a self,
        ctx: &'a Context,
        sql: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        call::run(self, ctx, Timeout::Session, self.batch_execute(sql))
    }

    fn prepare_ctx<'a>(
        &'a self,
        ctx: &'a Context,
        sql: &'a str,
    ) -> impl Future<Output = Result<Statement, Error>> + Send + 'a {
        call::run(self, ctx, Timeout::Off, self.prepare(sql))
    }

    fn transaction_ctx<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Transaction<'a>, Error>> + Send + 'a {
        Transaction::begin(self, ctx)
    }
}
