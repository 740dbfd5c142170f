//! PostgreSQL behaviour against a real server (a temporary cluster, see
//! `support`).

mod support;

use ctxkit::Context;
use ctxkit_sql::postgres::ClientExt;
use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Generous: the targets (100 ms) are measured in BENCHMARKS.md; this
/// only catches a call that does not return promptly at all.
const PROMPT: Duration = Duration::from_millis(500);

fn server_error(err: &ctxkit_sql::Error) -> Option<&tokio_postgres::Error> {
    err.source()?.downcast_ref::<tokio_postgres::Error>()
}

/// Backends (other than the caller's) still running a query containing `text`.
async fn running(observer: &Client, text: &str) -> i64 {
    observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'",
            &[&text],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls until no backend runs `text`, for at most 1 s; the time it took.
async fn server_stops(observer: &Client, text: &str) -> Duration {
    let started = Instant::now();
    while running(observer, text).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the server still runs {text:?} 1 s later"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn table(client: &Client, name: &str) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (x int)"
        ))
        .await
        .unwrap();
}

async fn count(client: &Client, name: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn cancel_stops_the_query_on_the_server() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let observer = pg.connect().await;
    let (ctx, cancel) = Context::background().with_cancel();
    let cancelled_at = Arc::new(std::sync::Mutex::new(None));
    let at = cancelled_at.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        *at.lock().unwrap() = Some(Instant::now());
        cancel.cancel_with(std::io::Error::other("user left"));
    });
    let err = client
        .query_ctx(&ctx, "SELECT pg_sleep(30) -- cancel_stops", &[])
        .await
        .unwrap_err();
    let returned = Instant::now();
    canceller.join().unwrap();
    let latency = returned - cancelled_at.lock().unwrap().unwrap();
    assert!(latency < PROMPT, "returned {latency:?} after the cancel");
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert_eq!(err.cause().unwrap().to_string(), "user left");
    let source = server_error(&err).expect("the server's error as source");
    assert_eq!(source.code(), Some(&SqlState::QUERY_CANCELED));
    server_stops(&observer, "cancel_stops").await;
    let one: i32 = client
        .query_one_ctx(&Context::background(), "SELECT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn deadline_stops_the_query() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = client
        .execute_ctx(&ctx, "SELECT pg_sleep(30)", &[])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(200) + PROMPT);
    assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
    assert_eq!(
        server_error(&err).and_then(|e| e.code()),
        Some(&SqlState::QUERY_CANCELED)
    );
}

#[tokio::test]
async fn a_done_context_fails_at_once_and_nothing_runs() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    table(&client, "done_at_once").await;
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let err = client
        .execute_ctx(&ctx, "INSERT INTO done_at_once VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert!(
        err.source().is_none(),
        "nothing was sent, so no server error"
    );
    assert!(client.transaction_ctx(&ctx).await.is_err());
    assert_eq!(count(&client, "done_at_once").await, 0);
}

/// A short query cancelled at a random moment around its end, then `SELECT
/// 1` under a fresh context: a late cancel must never reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_never_hits_a_later_query() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let (mut stopped, mut completed) = (0, 0);
    for i in 0..1000 {
        let (ctx, cancel) = Context::background().with_cancel();
        let delay = Duration::from_micros(fastrand::u64(0..1500));
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(delay);
            cancel.cancel();
        });
        match client.query_ctx(&ctx, "SELECT pg_sleep(0.0005)", &[]).await {
            Ok(_) => completed += 1,
            Err(e) => {
                assert_eq!(e.context_error(), Some(ctxkit::Error::Canceled), "{e}");
                stopped += 1;
            }
        }
        canceller.join().unwrap();
        let next = client
            .query_one_ctx(&Context::background(), "SELECT 1", &[])
            .await;
        let one: i32 = next
            .unwrap_or_else(|e| panic!("iteration {i}: the next query failed: {e:?}"))
            .get(0);
        assert_eq!(one, 1);
    }
    println!("stopped {stopped}, completed {completed}");
    assert!(stopped > 0, "no cancel landed while the query ran");
}

#[tokio::test]
async fn the_deadline_is_sent_as_statement_timeout() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    let row = client
        .query_one_ctx(&ctx, "SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    let setting: String = row.get(0);
    let ms = parse_ms(&setting);
    assert!((1..=5000).contains(&ms), "statement_timeout {setting}");
    // Reset after the call: plain queries see the default again.
    let after: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, "0");

    // Inside a transaction it is SET LOCAL, and the server enforces it on
    // its own: a plain (context-less) statement in the transaction is
    // stopped by the server once the deadline has passed.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
    let tx = client.transaction_ctx(&ctx).await.unwrap();
    tx.execute_ctx("SELECT 1", &[]).await.unwrap();
    let started = Instant::now();
    let err = client
        .execute("SELECT pg_sleep(10)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
    let after: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, "0");
}

fn parse_ms(setting: &str) -> u64 {
    let digits: String = setting.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap();
    match &setting[digits.len()..] {
        "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        other => panic!("unit {other}"),
    }
}

#[tokio::test]
async fn a_deadline_years_away_is_clamped() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(20 * 365 * 86_400));
    let setting: String = client
        .query_one_ctx(&ctx, "SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parse_ms(&setting), i32::MAX as u64);
}

#[tokio::test]
async fn dropping_the_call_stops_the_server_query() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let observer = pg.connect().await;
    let ctx = Context::background();
    let call = client.query_ctx(&ctx, "SELECT pg_sleep(30) -- dropped_call", &[]);
    assert!(tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .is_err());
    server_stops(&observer, "dropped_call").await;
    let one: i32 = client
        .query_one_ctx(&ctx, "SELECT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

/// Calls dropped at random moments around their end: the clean-up's
/// cancels never reach the next `*_ctx` call on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_never_cancels_a_later_query() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let ctx = Context::background();
    let mut dropped = 0;
    for i in 0..500 {
        let call = client.query_ctx(&ctx, "SELECT pg_sleep(0.001)", &[]);
        let budget = Duration::from_micros(fastrand::u64(0..2500));
        if tokio::time::timeout(budget, call).await.is_err() {
            dropped += 1;
        }
        let one: i32 = client
            .query_one_ctx(&ctx, "SELECT 1", &[])
            .await
            .unwrap_or_else(|e| panic!("iteration {i}: the next query failed: {e:?}"))
            .get(0);
        assert_eq!(one, 1);
    }
    println!("dropped {dropped} of 500");
    assert!(dropped > 0);
}

#[tokio::test]
async fn a_transaction_rolls_back_on_the_server_when_its_context_ends() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let observer = pg.connect().await;
    table(&client, "tx_cancel").await;
    let (ctx, cancel) = Context::background().with_cancel();
    let tx = client.transaction_ctx(&ctx).await.unwrap();
    tx.execute_ctx("INSERT INTO tx_cancel SELECT generate_series(1, 100)", &[])
        .await
        .unwrap();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
    });
    let err = tx
        .execute_ctx("SELECT pg_sleep(30) -- tx_cancel", &[])
        .await
        .unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    server_stops(&observer, "tx_cancel").await;
    assert_eq!(count(&observer, "tx_cancel").await, 0);
    let later = tx
        .execute_ctx("INSERT INTO tx_cancel VALUES (1)", &[])
        .await;
    assert_eq!(
        later.unwrap_err().context_error(),
        Some(ctxkit::Error::Canceled)
    );
    assert_eq!(
        tx.commit().await.unwrap_err().context_error(),
        Some(ctxkit::Error::Canceled)
    );
    // The client is ready for the next user: no 25P02.
    assert_eq!(count(&client, "tx_cancel").await, 0);
    assert_eq!(count(&observer, "tx_cancel").await, 0);
}

#[tokio::test]
async fn commit_after_done_returns_the_context_error_and_rolls_back() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let observer = pg.connect().await;
    table(&client, "tx_commit_done").await;
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let tx = client.transaction_ctx(&ctx).await.unwrap();
    tx.execute_ctx("INSERT INTO tx_commit_done VALUES (1), (2)", &[])
        .await
        .unwrap();
    cancel.cancel();
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert_eq!(count(&client, "tx_commit_done").await, 0);
    assert_eq!(count(&observer, "tx_commit_done").await, 0);

    // And a live one commits.
    let ctx = Context::background();
    let tx = client.transaction_ctx(&ctx).await.unwrap();
    tx.execute_ctx("INSERT INTO tx_commit_done VALUES (3)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&observer, "tx_commit_done").await, 1);
}

#[tokio::test]
async fn dropping_a_transaction_rolls_it_back() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    table(&client, "tx_drop").await;
    let ctx = Context::background();
    let tx = client.transaction_ctx(&ctx).await.unwrap();
    tx.execute_ctx("INSERT INTO tx_drop VALUES (1)", &[])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(count(&client, "tx_drop").await, 0);
}

#[tokio::test]
async fn malformed_sql_and_a_closed_connection_are_driver_errors() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let ctx = Context::background();
    let err = client.query_ctx(&ctx, "SELEC 1", &[]).await.unwrap_err();
    assert_eq!(err.context_error(), None);
    assert!(err.cause().is_none());
    assert_eq!(
        server_error(&err).and_then(|e| e.code()),
        Some(&SqlState::SYNTAX_ERROR)
    );
    assert!(err.to_string().contains("syntax error"), "{err}");

    let (closed, connection) = pg.config().connect(tokio_postgres::NoTls).await.unwrap();
    drop(connection);
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    let err = closed.query_ctx(&ctx, "SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.context_error(), None);
    assert!(server_error(&err).unwrap().is_closed(), "{err:?}");
}

#[tokio::test]
async fn cancelling_a_finished_query_is_harmless() {
    let Some(pg) = support::cluster() else { return };
    let client = pg.connect().await;
    let (ctx, cancel) = Context::background().with_cancel();
    let rows = client
        .query_ctx(&ctx, "SELECT generate_series(1, 3)", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    cancel.cancel();
    for _ in 0..20 {
        let one: i32 = client
            .query_one_ctx(&Context::background(), "SELECT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(one, 1);
    }
}

#[tokio::test]
async fn works_with_deadpool_postgres_clients() {
    let Some(pg) = support::cluster() else { return };
    let manager = deadpool_postgres::Manager::new(pg.config(), tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let observer = pg.connect().await;
    {
        let client = pool.get().await.unwrap();
        table(&client, "pooled").await;
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
        let err = client
            .query_ctx(&ctx, "SELECT pg_sleep(30) -- pooled", &[])
            .await
            .unwrap_err();
        assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
        // A transaction cancelled halfway, then back to the pool.
        let (ctx, cancel) = Context::background().with_cancel();
        let tx = client.transaction_ctx(&ctx).await.unwrap();
        tx.execute_ctx("INSERT INTO pooled VALUES (1)", &[])
            .await
            .unwrap();
        cancel.cancel();
        assert!(tx.commit().await.is_err());
    }
    server_stops(&observer, "pooled").await;
    // The same connection, next user: usable, nothing written.
    let client = pool.get().await.unwrap();
    let n: i64 = client
        .query_one_ctx(&Context::background(), "SELECT count(*) FROM pooled", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// A `NoTls` that counts how often a cancel connection asked it for TLS.
#[derive(Clone)]
struct CountingTls(Arc<AtomicUsize>);

impl tokio_postgres::tls::MakeTlsConnect<ctxkit_sql::postgres::CancelStream> for CountingTls {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type TlsConnect = tokio_postgres::NoTls;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, _domain: &str) -> std::io::Result<tokio_postgres::NoTls> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(tokio_postgres::NoTls)
    }
}

#[tokio::test]
async fn the_cancel_goes_through_the_configured_tls_connector() {
    let Some(pg) = support::cluster() else { return };
    let uses = Arc::new(AtomicUsize::new(0));
    ctxkit_sql::postgres::set_cancel_tls(CountingTls(uses.clone()));
    let client = pg.connect().await;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    let err = client
        .query_ctx(&ctx, "SELECT pg_sleep(30)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
    assert!(uses.load(Ordering::Relaxed) >= 1);
}
