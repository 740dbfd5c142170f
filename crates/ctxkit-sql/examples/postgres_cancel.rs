//! A slow query stopped on the server by a 100 ms timeout, and a transaction
//! cancelled halfway: the server stopped both, nothing was written.
//!
//! ```sh
//! cargo run -p ctxkit-sql --example postgres_cancel -- "host=127.0.0.1 user=postgres"
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run -p ctxkit-sql --example postgres_cancel
//! ```

use ctxkit::Context;
use ctxkit_sql::postgres::ClientExt;
use std::error::Error as _;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const TABLE: &str = "ctxkit_sql_demo_orders";

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
    else {
        eprintln!(
            "no database given: pass a connection string or set DATABASE_URL, e.g.\n  \
             cargo run -p ctxkit-sql --example postgres_cancel -- \"host=127.0.0.1 user=postgres\"\n  \
             DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run -p ctxkit-sql --example postgres_cancel"
        );
        std::process::exit(2);
    };
    let (client, observer) = match (connect(&url).await, connect(&url).await) {
        (Ok(client), Ok(observer)) => (client, observer),
        (Err(e), _) | (_, Err(e)) => {
            let reason = e.source().map_or(e.to_string(), |s| format!("{e}: {s}"));
            eprintln!(
                "cannot reach PostgreSQL at {url:?}: {reason}\n\
                 start a server (e.g. `pg_ctlcluster 15 main start`) or pass the connection string of one that runs"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = demo(&client, &observer).await {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn demo(client: &Client, observer: &Client) -> Result<(), Box<dyn std::error::Error>> {
    let root = Context::background();
    client
        .batch_execute_ctx(
            &root,
            &format!(
                "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id serial PRIMARY KEY, item text);
                 INSERT INTO {TABLE} (item) VALUES ('apple'), ('pear'), ('plum');"
            ),
        )
        .await?;

    // 1. pg_sleep(30) under a 100 ms timeout: cancelled on the server.
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = client
        .query_ctx(&ctx, "SELECT pg_sleep(30)", &[])
        .await
        .unwrap_err();
    // The server's own report of the stop: tokio-postgres keeps it one level down.
    let server = err.source().and_then(|s| s.source()).map(|s| s.to_string());
    println!(
        "slow query: stopped after {} ms: {err} (server: {})",
        started.elapsed().as_millis(),
        server.unwrap_or_default()
    );
    let still_running: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
            &[],
        )
        .await?
        .get(0);
    println!("backends still running it: {still_running}");

    // 2. A transaction cancelled halfway.
    let before = count(observer).await?;
    println!("rows before the transaction: {before}");
    let (ctx, cancel) = root.with_cancel();
    let tx = client.transaction_ctx(&ctx).await?;
    let inserted = tx
        .execute_ctx(
            &format!(
                "INSERT INTO {TABLE} (item) SELECT 'crate ' || x FROM generate_series(1, 1000) x"
            ),
            &[],
        )
        .await?;
    println!("transaction: inserted {inserted} rows, then cancelled halfway");
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel_with(std::io::Error::other("operator pressed stop"));
    });
    let err = tx
        .execute_ctx("SELECT pg_sleep(30)", &[])
        .await
        .unwrap_err();
    canceller.await?;
    println!("transaction: {err}");
    let commit = tx.commit().await;
    println!(
        "commit: {}",
        commit.map_or_else(|e| e.to_string(), |()| "committed".into())
    );

    let after_same = count(client).await?;
    let after_second = count(observer).await?;
    let intact = after_same == before && after_second == before;
    println!(
        "rows after: {after_same} (this connection), {after_second} (a second connection): {}",
        if intact {
            "the database is intact"
        } else {
            "DATABASE CHANGED"
        }
    );
    client.batch_execute(&format!("DROP TABLE {TABLE}")).await?;
    if intact {
        Ok(())
    } else {
        Err("the cancelled transaction left rows behind".into())
    }
}

async fn count(client: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
        .await?
        .get(0))
}
