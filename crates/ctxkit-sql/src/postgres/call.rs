//! One database call under a context: the fence, the server-side
//! timeout, the race with the context, and the clean-up when dropped.

use super::cancel::Backend;
use super::statement_timeout_ms;
use crate::Error;
use ctxkit::Context;
use futures_util::{FutureExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Where a deadline is sent to the server as `statement_timeout`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// Not at all (`BEGIN`, `COMMIT`).
    Off,
    /// `SET` before the statement, `RESET` after: outside a transaction.
    Session,
    /// `SET LOCAL` before the statement: inside a transaction, which ends it.
    Local,
}

/// Runs `query` on `client` under `ctx`. A done context fails at once;
/// one that ends while the query runs gets it cancelled on the server.
pub(crate) async fn run<'c, T, F>(
    client: &'c Client,
    ctx: &Context,
    timeout: Timeout,
    query: F,
) -> Result<T, Error>
where
    F: Future<Output = Result<T, tokio_postgres::Error>> + 'c,
{
    if ctx.is_done() {
        return Err(Error::stopped(ctx, None));
    }
    let backend = prepare(client, ctx).await?;
    let set = statement_timeout(ctx, timeout);
    if let Some(set) = &set {
        // Queued before the query on the same connection; its reply is not
        // waited for (a failure shows up as the query's own failure).
        send_now(client, set);
    }
    let mut in_flight = InFlight {
        client,
        backend: Some(backend.clone()),
        reset_after: set.is_some() && timeout == Timeout::Session,
    };
    let mut query = Box::pin(query);
    let first = tokio::select! {
        biased;
        out = &mut query => Some(out),
        _ = ctx.done() => None,
    };
    let ended = match first {
        Some(out) => Some(out),
        None => backend.cancel_until_done(&mut query).await,
    };
    let Some(out) = ended else {
        // The server did not stop it in time: `in_flight` hands the query
        // to a background clean-up when dropped.
        drop(query);
        return Err(Error::stopped(ctx, None));
    };
    in_flight.finish();
    match out {
        Ok(value) => Ok(value),
        Err(e) => Err(classify(ctx, e).await),
    }
}

/// Learns the client's backend, then waits out any clean-up on it (under
/// `ctx`) and resets a `statement_timeout` a clean-up could not.
async fn prepare(client: &Client, ctx: &Context) -> Result<Arc<Backend>, Error> {
    let backend = Backend::of(client).await.map_err(Error::driver)?;
    let reset = tokio::select! {
        biased;
        reset = backend.fence().pass() => reset,
        _ = ctx.done() => return Err(Error::stopped(ctx, None)),
    };
    if reset {
        client
            .batch_execute("RESET statement_timeout")
            .await
            .map_err(Error::driver)?;
    }
    Ok(backend)
}

fn statement_timeout(ctx: &Context, timeout: Timeout) -> Option<String> {
    let ms = statement_timeout_ms(ctx.remaining()?);
    match timeout {
        Timeout::Off => None,
        Timeout::Session => Some(format!("SET statement_timeout = {ms}")),
        Timeout::Local => Some(format!("SET LOCAL statement_timeout = {ms}")),
    }
}

/// A driver error under `ctx`: the server's `57014 query_canceled` is the
/// context's stop when the context is done or its deadline has passed (the
/// server's `statement_timeout` may fire a moment before the client's timer).
async fn classify(ctx: &Context, error: tokio_postgres::Error) -> Error {
    if error.code() != Some(&SqlState::QUERY_CANCELED) {
        return Error::driver(error);
    }
    let deadline_passed = ctx.deadline().is_some_and(|d| d <= Instant::now());
    if deadline_passed && !ctx.is_done() {
        let _ = tokio::time::timeout(Duration::from_millis(100), ctx.done()).await;
    }
    if ctx.is_done() {
        Error::stopped(ctx, Some(Box::new(error)))
    } else {
        Error::driver(error)
    }
}

/// Queues `sql` on `client` now, without waiting for the reply: the
/// simple-query request is handed to the connection before the call returns.
pub(crate) fn send_now(client: &Client, sql: &str) {
    let _ = client.simple_query_raw(sql).now_or_never();
}

/// A query that may still run on the server; dropped before
/// [`finish`](InFlight::finish), it has the query stopped in the background.
struct InFlight<'c> {
    client: &'c Client,
    backend: Option<Arc<Backend>>,
    reset_after: bool,
}

impl InFlight<'_> {
    /// The query ended: undo the session `statement_timeout` (queued, so no
    /// later statement runs before it).
    fn finish(&mut self) {
        self.backend = None;
        if self.reset_after {
            send_now(self.client, "RESET statement_timeout");
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        // Queued behind the dropped query: it completes only once that query
        // has ended, which tells the clean-up when to stop cancelling.
        let sql = if self.reset_after {
            "RESET statement_timeout"
        } else {
            ""
        };
        let Some(Ok(stream)) = self.client.simple_query_raw(sql).now_or_never() else {
            return; // the connection is closed: nothing runs on it any more
        };
        let sentinel = async move {
            let mut stream = Box::pin(stream);
            let mut ok = true;
            while let Some(message) = stream.next().await {
                ok &= message.is_ok();
            }
            ok
        };
        backend.clean_up_in_background(sentinel, self.reset_after);
    }
}
