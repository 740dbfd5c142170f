//! Graceful shutdown on Ctrl-C or SIGTERM: workers tick until a signal ends
//! their context, then wind down; main waits for them within a grace period
//! and prints a summary. A second Ctrl-C exits at once with status 130.
//!
//! ```text
//! cargo run -p ctxkit-tests --example graceful_shutdown
//! # Ctrl-C once: the workers stop, a summary, exit status 0
//! # Ctrl-C twice in a row: exit at once with status 130
//! cargo run -p ctxkit-tests --example graceful_shutdown -- --cleanup-ms=5000
//! # workers that take 5 s to wind down: more than the 2 s grace period
//! ```
//!
//! Options: `--cleanup-ms=N`, how long each worker takes to wind down once
//! stopped (default 50); `--grace-ms=N`, how long main waits for them
//! (default 2000).

use ctxkit::signal::notify_context;
use ctxkit::Context;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const TICK: Duration = Duration::from_millis(100);

struct Config {
    cleanup: Duration,
    grace: Duration,
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let mut config = Config {
            cleanup: Duration::from_millis(50),
            grace: Duration::from_secs(2),
        };
        for arg in std::env::args().skip(1) {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("expected --name=value, got {arg:?}"))?;
            let millis: u64 = value
                .parse()
                .map_err(|_| format!("{name} takes a number of milliseconds, got {value:?}"))?;
            match name {
                "--cleanup-ms" => config.cleanup = Duration::from_millis(millis),
                "--grace-ms" => config.grace = Duration::from_millis(millis),
                _ => {
                    return Err(format!(
                        "unknown option {name}: use --cleanup-ms or --grace-ms"
                    ))
                }
            }
        }
        Ok(config)
    }
}

/// What a worker reports once it has wound down.
struct Report {
    id: usize,
    ticks: u64,
}

fn worker(ctx: Context, id: usize, cleanup: Duration, reports: mpsc::Sender<Report>) {
    let mut ticks = 0;
    // Periodic work; `sleep` returns early, with an error, once a signal
    // has cancelled the context.
    while ctx.sleep(TICK).is_ok() {
        ticks += 1;
    }
    // Winding down: flushing buffers, closing connections. Main bounds how
    // long it waits for this, not the worker.
    thread::sleep(cleanup);
    let _ = reports.send(Report { id, ticks });
}

/// Collects the reports that arrive before `deadline`.
fn collect(reports: &mpsc::Receiver<Report>, deadline: Instant) -> Vec<Report> {
    let mut received = Vec::new();
    while received.len() < WORKERS {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok(report) => received.push(report),
            Err(_) => break, // the grace period is over
        }
    }
    received
}

fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("graceful_shutdown: {message}");
            return ExitCode::from(2);
        }
    };
    // The first SIGINT or SIGTERM cancels `ctx`; a second one, while we
    // still hold `signals`, exits the process at once with 130 or 143.
    let (ctx, signals) = match notify_context(&Context::background()) {
        Ok(listening) => listening,
        Err(err) => {
            eprintln!("graceful_shutdown: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };

    let (report_tx, reports) = mpsc::channel();
    for id in 1..=WORKERS {
        let (ctx, report_tx) = (ctx.clone(), report_tx.clone());
        thread::spawn(move || worker(ctx, id, config.cleanup, report_tx));
    }
    println!("ready: {WORKERS} workers running; press Ctrl-C to stop");

    ctx.wait();
    let cause = ctx.cause().expect("a done context has a cause");
    println!(
        "shutting down: {cause}; waiting up to {:?} for the workers",
        config.grace
    );
    let stopped = collect(&reports, Instant::now() + config.grace);
    // Only now give the signals their default action back: a Ctrl-C during
    // the wait above had to exit, not be ignored.
    signals.stop();

    for report in &stopped {
        println!("worker {} stopped after {} ticks", report.id, report.ticks);
    }
    let ticks: u64 = stopped.iter().map(|report| report.ticks).sum();
    if stopped.len() < WORKERS {
        println!(
            "summary: only {} of {WORKERS} workers stopped within the grace period \
             ({ticks} ticks); exiting anyway",
            stopped.len()
        );
        return ExitCode::FAILURE;
    }
    println!("summary: all {WORKERS} workers stopped cleanly after {ticks} ticks");
    ExitCode::SUCCESS
}
