//! A slow query stopped by a 100 ms timeout, and a transaction cancelled
//! halfway: the database is left intact.
//!
//! ```sh
//! cargo run -p ctxkit-sql --example sqlite_cancel
//! ```

use ctxkit::Context;
use ctxkit_sql::sqlite::ConnectionExt;
use rusqlite::Connection;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("ctxkit-sql-demo-{}.sqlite", std::process::id()));
    let result = demo(&path);
    let _ = std::fs::remove_file(&path);
    result
}

fn demo(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = Connection::open(path)?;
    let root = Context::background();
    conn.execute_batch_ctx(
        &root,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT);
         INSERT INTO orders (item) VALUES ('apple'), ('pear'), ('plum');",
    )?;

    // 1. A query that would run forever, under a 100 ms timeout.
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";
    let err = conn
        .query_row_ctx(&ctx, slow, [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    println!(
        "slow query: stopped after {} ms: {err}",
        started.elapsed().as_millis()
    );

    // 2. A transaction cancelled halfway.
    let before = count(&mut conn)?;
    println!("rows before the transaction: {before}");
    let (ctx, cancel) = root.with_cancel();
    let tx = conn.transaction_ctx(&ctx)?;
    let inserted = tx.execute_ctx(
        "INSERT INTO orders (item) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT 'crate ' || x FROM c",
        [],
    )?;
    println!("transaction: inserted {inserted} rows, then cancelled halfway");
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel_with(std::io::Error::other("operator pressed stop"));
    });
    let err = tx
        .query_row_ctx(slow, [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    canceller.join().expect("canceller thread");
    println!("transaction: {err}");
    let commit = tx.commit();
    println!(
        "commit: {}",
        commit.map_or_else(|e| e.to_string(), |()| "committed".into())
    );

    let after = count(&mut conn)?;
    let mut second = Connection::open(path)?;
    let seen_by_second = count(&mut second)?;
    let intact = after == before && seen_by_second == before;
    println!(
        "rows after: {after} (this connection), {seen_by_second} (a second connection): {}",
        if intact {
            "the database is intact"
        } else {
            "DATABASE CHANGED"
        }
    );
    if intact {
        Ok(())
    } else {
        Err("the cancelled transaction left rows behind".into())
    }
}

fn count(conn: &mut Connection) -> Result<i64, ctxkit_sql::Error> {
    conn.query_row_ctx(
        &Context::background(),
        "SELECT count(*) FROM orders",
        [],
        |r| r.get(0),
    )
}
