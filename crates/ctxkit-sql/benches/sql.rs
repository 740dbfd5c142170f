//! Cancel latency and `*_ctx` overhead, side by side with the plain driver
//! calls in one run. Prints the rows of BENCHMARKS.md's SQL section.
//!
//! ```sh
//! cargo bench -p ctxkit-sql --bench sql
//! ```
//!
//! PostgreSQL rows need a server: a temporary cluster is started as in the
//! tests (skipped with a message when none can start).

#[path = "../tests/support/mod.rs"]
mod support;

use ctxkit::Context;
use ctxkit_sql::postgres::ClientExt;
use ctxkit_sql::sqlite::ConnectionExt;
use rusqlite::Connection;
use std::time::{Duration, Instant};

const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";
const RUNS: usize = 200;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --no-run` and test listing
    }
    println!("| what | p50 | p99 | max |\n|---|---|---|---|");
    sqlite_cancel_latency();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pg = support::cluster();
    if let Some(pg) = pg {
        runtime.block_on(postgres_cancel_latency(pg));
    }
    println!("\n| call | plain driver | `*_ctx` | overhead |\n|---|---|---|---|");
    sqlite_overhead();
    if let Some(pg) = pg {
        runtime.block_on(postgres_overhead(pg));
    }
}

fn percentiles(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {what} | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// From `cancel()` to the call returning, SQLite, `RUNS` runs.
fn sqlite_cancel_latency() {
    let mut conn = Connection::open_in_memory().unwrap();
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (ctx, cancel) = Context::background().with_cancel();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2 + fastrand::u64(0..5)));
            let at = Instant::now();
            cancel.cancel();
            at
        });
        let err = conn.query_row_ctx(&ctx, ENDLESS, [], |r| r.get::<_, i64>(0));
        let returned = Instant::now();
        assert!(err.is_err());
        samples.push(returned - canceller.join().unwrap());
    }
    percentiles(&format!("SQLite cancel latency ({RUNS} runs)"), samples);
}

/// From `cancel()` to the call returning, PostgreSQL on loopback.
async fn postgres_cancel_latency(pg: &support::Cluster) {
    let client = pg.connect().await;
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (ctx, cancel) = Context::background().with_cancel();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5 + fastrand::u64(0..5)));
            let at = Instant::now();
            cancel.cancel();
            at
        });
        let err = client.query_ctx(&ctx, "SELECT pg_sleep(30)", &[]).await;
        let returned = Instant::now();
        assert!(err.unwrap_err().context_error().is_some());
        samples.push(returned - canceller.join().unwrap());
    }
    percentiles(
        &format!("PostgreSQL cancel latency, loopback ({RUNS} runs)"),
        samples,
    );
}

/// Median time of one call of `plain` and of `ctx`, over `pairs` pairs run
/// back to back (which one goes first alternates), so that a busy machine's
/// drift hits both alike.
fn side_by_side(what: &str, pairs: usize, mut plain: impl FnMut(), mut ctx: impl FnMut()) {
    let (mut a, mut b) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for i in 0..pairs {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        if i % 2 == 0 {
            a.push(time(&mut plain));
            b.push(time(&mut ctx));
        } else {
            b.push(time(&mut ctx));
            a.push(time(&mut plain));
        }
    }
    report(what, a, b);
}

fn report(what: &str, mut plain: Vec<Duration>, mut ctx: Vec<Duration>) {
    plain.sort();
    ctx.sort();
    let (p, c) = (plain[plain.len() / 2], ctx[ctx.len() / 2]);
    println!(
        "| {what} | {:.2} µs | {:.2} µs | {:+.1}% |",
        p.as_secs_f64() * 1e6,
        c.as_secs_f64() * 1e6,
        (c.as_secs_f64() / p.as_secs_f64() - 1.0) * 100.0
    );
}

fn sqlite_overhead() {
    let plain = Connection::open_in_memory().unwrap();
    let mut with_ctx = Connection::open_in_memory().unwrap();
    let setup = "CREATE TABLE t (x INTEGER); INSERT INTO t WITH RECURSIVE c(x) AS \
                 (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000) SELECT x FROM c;";
    plain.execute_batch(setup).unwrap();
    with_ctx.execute_batch(setup).unwrap();
    // A cancellable context, as a request would carry (not background()).
    let (ctx, _cancel) = Context::background().with_cancel();
    side_by_side(
        "SQLite `SELECT 1` (query_row)",
        200_000,
        || {
            let v: i64 = plain.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
            std::hint::black_box(v);
        },
        || {
            let v: i64 = with_ctx
                .query_row_ctx(&ctx, "SELECT 1", [], |r| r.get(0))
                .unwrap();
            std::hint::black_box(v);
        },
    );
    let scan_plain = Connection::open_in_memory().unwrap();
    scan_plain.execute_batch(setup).unwrap();
    side_by_side(
        "SQLite 10,000-row scan (query_map, collect)",
        400,
        || {
            let mut stmt = scan_plain.prepare("SELECT x FROM t").unwrap();
            let rows: Vec<i64> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), 10_000);
        },
        || {
            let rows: Vec<i64> = with_ctx
                .query_map_ctx(&ctx, "SELECT x FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows.len(), 10_000);
        },
    );
}

async fn postgres_overhead(pg: &support::Cluster) {
    // One connection for both, so that both talk to the same backend.
    let plain = pg.connect().await;
    let with_ctx = &plain;
    plain
        .batch_execute(
            "DROP TABLE IF EXISTS bench_scan; CREATE TABLE bench_scan AS SELECT generate_series(1, 10000) AS x",
        )
        .await
        .unwrap();
    let (ctx, _cancel) = Context::background().with_cancel();
    let (deadline_ctx, _cancel2) = Context::background().with_timeout(Duration::from_secs(3600));
    let one = plain.prepare("SELECT 1").await.unwrap();
    let one_ctx = with_ctx.prepare("SELECT 1").await.unwrap();
    let scan = plain.prepare("SELECT x FROM bench_scan").await.unwrap();
    let scan_ctx = with_ctx.prepare("SELECT x FROM bench_scan").await.unwrap();
    // Warm up (the first *_ctx call on a connection learns its backend).
    with_ctx.query_one_ctx(&ctx, &one_ctx, &[]).await.unwrap();

    let rows = [
        (
            "PostgreSQL `SELECT 1` (query_one, prepared)",
            20_000,
            false,
            false,
        ),
        (
            "PostgreSQL 10,000-row scan (query, prepared)",
            400,
            true,
            false,
        ),
        (
            "PostgreSQL `SELECT 1`, context with a deadline (+SET/RESET statement_timeout)",
            20_000,
            false,
            true,
        ),
    ];
    for (what, pairs, is_scan, deadline) in rows {
        let ctx = if deadline { &deadline_ctx } else { &ctx };
        let (mut a, mut b) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
        for i in 0..pairs {
            let plain_call = async {
                let t = Instant::now();
                if is_scan {
                    assert_eq!(plain.query(&scan, &[]).await.unwrap().len(), 10_000);
                } else {
                    plain.query_one(&one, &[]).await.unwrap();
                }
                t.elapsed()
            };
            let ctx_call = async {
                let t = Instant::now();
                if is_scan {
                    let rows = with_ctx.query_ctx(ctx, &scan_ctx, &[]).await.unwrap();
                    assert_eq!(rows.len(), 10_000);
                } else {
                    with_ctx.query_one_ctx(ctx, &one_ctx, &[]).await.unwrap();
                }
                t.elapsed()
            };
            if i % 2 == 0 {
                a.push(plain_call.await);
                b.push(ctx_call.await);
            } else {
                b.push(ctx_call.await);
                a.push(plain_call.await);
            }
        }
        report(what, a, b);
    }
}
