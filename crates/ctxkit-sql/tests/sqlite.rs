//! SQLite behaviour: stops, transactions, a usable connection afterwards.

use ctxkit::Context;
use ctxkit_sql::sqlite::ConnectionExt;
use rusqlite::{Connection, ErrorCode};
use std::error::Error as _;
use std::time::{Duration, Instant};

/// Never finishes on its own: counts up forever.
const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";

/// Generous: the 50 ms is measured in BENCHMARKS.md; this only
/// catches a statement that does not stop promptly at all.
const PROMPT: Duration = Duration::from_millis(500);

fn sqlite_error(err: &ctxkit_sql::Error) -> Option<&rusqlite::Error> {
    err.source()?.downcast_ref::<rusqlite::Error>()
}

/// Cancels `cancel` after `delay` on another thread; returns when it did.
fn cancel_after(cancel: ctxkit::CancelHandle, delay: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let at = Instant::now();
        cancel.cancel_with(std::io::Error::other("operator stop"));
        at
    })
}

fn count(conn: &mut Connection, table: &str) -> i64 {
    conn.query_row_ctx(
        &Context::background(),
        &format!("SELECT count(*) FROM {table}"),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_running_statement_stops_when_its_context_is_cancelled() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let canceller = cancel_after(cancel, Duration::from_millis(100));
    let err = conn
        .query_row_ctx(&ctx, ENDLESS, [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    let returned = Instant::now();
    let latency = returned - canceller.join().unwrap();
    assert!(latency < PROMPT, "stopped {latency:?} after the cancel");
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert_eq!(err.cause().unwrap().to_string(), "operator stop");
    let source = sqlite_error(&err).expect("SQLite's error as source");
    assert_eq!(
        source.sqlite_error_code(),
        Some(ErrorCode::OperationInterrupted)
    );
}

#[test]
fn a_deadline_stops_the_statement() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = conn.execute_batch_ctx(&ctx, ENDLESS).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100) + PROMPT);
    assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
    let cause = err.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<ctxkit::Error>(),
        Some(&ctxkit::Error::DeadlineExceeded)
    );
}

#[test]
fn a_done_context_fails_at_once_and_the_statement_never_runs() {
    let mut conn = Connection::open_in_memory().unwrap();
    let live = Context::background();
    conn.execute_ctx(&live, "CREATE TABLE t (x INTEGER)", [])
        .unwrap();
    let (ctx, cancel) = live.with_cancel();
    cancel.cancel();
    let err = conn
        .execute_ctx(&ctx, "INSERT INTO t VALUES (1)", [])
        .unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert!(
        err.source().is_none(),
        "nothing ran, so SQLite reported nothing"
    );
    assert!(conn.transaction_ctx(&ctx).is_err());
    assert!(conn
        .query_map_ctx(&ctx, "SELECT x FROM t", [], |r| r.get::<_, i64>(0))
        .is_err());
    assert_eq!(count(&mut conn, "t"), 0);
}

/// Statements of random length, cancelled at random moments: every later
/// statement under a live context runs to its end.
#[test]
fn the_connection_stays_usable_after_stops_at_random_moments() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (mut stopped, mut completed) = (0, 0);
    for i in 0..300 {
        let n = fastrand::i64(100..20_000);
        let (ctx, cancel) = Context::background().with_cancel();
        let canceller = cancel_after(cancel, Duration::from_micros(fastrand::u64(0..3_000)));
        let sql = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT max(x) FROM c"
        );
        match conn.query_row_ctx(&ctx, &sql, [], |r| r.get::<_, i64>(0)) {
            Ok(max) => {
                assert_eq!(max, n);
                completed += 1;
            }
            Err(e) => {
                assert_eq!(e.context_error(), Some(ctxkit::Error::Canceled), "{e}");
                stopped += 1;
            }
        }
        canceller.join().unwrap();
        let next: i64 = conn
            .query_row_ctx(
                &Context::background(),
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT max(x) FROM c",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("iteration {i}: the next statement failed: {e}"));
        assert_eq!(next, 5000);
    }
    println!("stopped {stopped}, completed {completed}");
    assert!(stopped > 0 && completed > 0);
}

fn file_db() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut conn = Connection::open(&path).unwrap();
    conn.execute_ctx(&Context::background(), "CREATE TABLE t (x INTEGER)", [])
        .unwrap();
    (dir, path, conn)
}

#[test]
fn a_transaction_whose_context_ends_midway_writes_nothing() {
    let (_dir, path, mut conn) = file_db();
    let (ctx, cancel) = Context::background().with_cancel();
    let tx = conn.transaction_ctx(&ctx).unwrap();
    let written = tx
        .execute_ctx(
            "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c",
            [],
        )
        .unwrap();
    assert_eq!(written, 1000);
    let canceller = cancel_after(cancel, Duration::from_millis(50));
    let err = tx
        .query_row_ctx(ENDLESS, [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    // Every later call of the transaction fails the same way.
    let later = tx.execute_ctx("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert_eq!(later.context_error(), Some(ctxkit::Error::Canceled));
    assert_eq!(
        tx.commit().unwrap_err().context_error(),
        Some(ctxkit::Error::Canceled)
    );
    assert_eq!(count(&mut conn, "t"), 0, "same connection");
    let mut second = Connection::open(&path).unwrap();
    assert_eq!(count(&mut second, "t"), 0, "second connection");
}

#[test]
fn commit_after_the_context_is_done_returns_its_error_and_writes_nothing() {
    let (_dir, path, mut conn) = file_db();
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let tx = conn.transaction_ctx(&ctx).unwrap();
    tx.execute_ctx("INSERT INTO t VALUES (1), (2)", []).unwrap();
    cancel.cancel();
    let err = tx.commit().unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert_eq!(count(&mut conn, "t"), 0);
    let mut second = Connection::open(&path).unwrap();
    assert_eq!(count(&mut second, "t"), 0);

    // A live transaction commits, visible to the second connection.
    let tx = conn.transaction_ctx(&Context::background()).unwrap();
    tx.execute_ctx("INSERT INTO t VALUES (3)", []).unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&mut second, "t"), 1);
}

#[test]
fn dropping_a_transaction_rolls_it_back() {
    let (_dir, path, mut conn) = file_db();
    let ctx = Context::background();
    {
        let tx = conn
            .transaction_ctx_with(&ctx, rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        tx.execute_ctx("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(
            tx.query_row_ctx("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            1
        );
    }
    assert_eq!(count(&mut conn, "t"), 0);
    let mut second = Connection::open(&path).unwrap();
    assert_eq!(count(&mut second, "t"), 0);
}

#[test]
fn query_map_ctx_stops_a_long_iteration() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let canceller = cancel_after(cancel, Duration::from_millis(100));
    let mut seen = 0u64;
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
    let err = conn
        .query_map_ctx(&ctx, sql, [], |r| {
            seen += 1;
            // Slow work per row: the stop must come between rows too.
            std::thread::sleep(Duration::from_micros(200));
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    let latency = canceller.join().unwrap().elapsed();
    assert!(latency < PROMPT, "stopped {latency:?} after the cancel");
    assert_eq!(err.context_error(), Some(ctxkit::Error::Canceled));
    assert!(seen > 0);
}

#[test]
fn malformed_sql_and_constraint_errors_are_driver_errors() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    let err = conn.execute_ctx(&ctx, "SELEC 1", []).unwrap_err();
    assert_eq!(err.context_error(), None);
    assert!(err.cause().is_none());
    assert!(sqlite_error(&err).is_some());
    assert!(err.to_string().contains("syntax error"), "{err}");

    conn.execute_batch_ctx(
        &ctx,
        "CREATE TABLE u (x INTEGER UNIQUE); INSERT INTO u VALUES (1)",
    )
    .unwrap();
    let err = conn
        .execute_ctx(&ctx, "INSERT INTO u VALUES (1)", [])
        .unwrap_err();
    assert_eq!(err.context_error(), None);
    assert_eq!(
        sqlite_error(&err).unwrap().sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation)
    );
    // An error from the row closure is the caller's, passed through.
    let err = conn
        .query_row_ctx(&ctx, "SELECT 'text'", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert_eq!(err.context_error(), None);
}

#[test]
fn cancelling_after_the_statement_finished_is_harmless() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let one: i64 = conn
        .query_row_ctx(&ctx, "SELECT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(one, 1);
    cancel.cancel();
    let two: i64 = conn
        .query_row_ctx(&Context::background(), "SELECT 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(two, 2);
}

#[test]
fn with_ctx_stops_prepared_statements_too() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    let err = conn
        .with_ctx(&ctx, |c| {
            let mut stmt = c.prepare_cached(ENDLESS)?;
            stmt.query_row([], |r| r.get::<_, i64>(0))
        })
        .unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
}

/// The handler follows the connection: moved to another thread, or after
/// someone replaced the progress handler, a stop still lands, and a plain
/// rusqlite call between `*_ctx` calls is never stopped by a done context.
#[test]
fn stops_survive_a_move_and_a_replaced_handler() {
    let mut conn = Connection::open_in_memory().unwrap();
    let (done, cancel) = Context::background().with_cancel();
    let _ = conn.query_row_ctx(&Context::background(), "SELECT 1", [], |r| {
        r.get::<_, i64>(0)
    });
    cancel.cancel();
    assert!(conn.execute_ctx(&done, "SELECT 1", []).is_err());
    // A plain call right after: the done context is not watched any more.
    let n: i64 = conn
        .query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) SELECT max(x) FROM c",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 100_000);

    let mut conn = std::thread::spawn(move || {
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
        let err = conn.execute_batch_ctx(&ctx, ENDLESS).unwrap_err();
        assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
        conn
    })
    .join()
    .unwrap();

    conn.progress_handler(10, Some(|| false)).unwrap();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let err = conn.execute_batch_ctx(&ctx, ENDLESS).unwrap_err();
    assert_eq!(err.context_error(), Some(ctxkit::Error::DeadlineExceeded));
}
