//! A server whose request contexts end in each of the four ways.
//!
//! ```text
//! cargo run -p ctxkit-http --example http_server -- --listen ADDR [--max-timeout-ms N] [--grace-ms N]
//! ```
//!
//! `--grace-ms` defaults to 5000; without `--max-timeout-ms` only the
//! caller's deadline header bounds a request.
//!
//! `GET /work?ms=N[&fanout=K]` starts K workers (default 3; half threads,
//! half tokio tasks) that each work N ms under the request's context. Once
//! a request's context has ended and its workers have stopped, one JSON
//! line says how: `{"id":N,"path":"/work","ended":"completed|client_gone|deadline|shutdown","ms":N,"workers_stopped":K}`.
//! On SIGINT or SIGTERM the server shuts down gracefully and prints
//! `{"shutdown":{"finished":N,"cancelled":N}}`. Only these JSON lines go to
//! stdout; errors go to stderr.
//!
//! Try it:
//!
//! ```text
//! curl 'http://127.0.0.1:8080/work?ms=100'                          # completed
//! curl -m 0.2 'http://127.0.0.1:8080/work?ms=5000'                  # client_gone
//! curl -H 'grpc-timeout: 300m' 'http://127.0.0.1:8080/work?ms=5000'  # deadline (504)
//! curl --http2-prior-knowledge 'http://127.0.0.1:8080/work?ms=60000' & kill -TERM <pid>  # shutdown
//! ```

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use ctxkit::{Context, Error};
use ctxkit_http::{ContextLayer, Ended, RequestContext, Server};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The most workers one request may start.
const MAX_FANOUT: usize = 64;

struct Args {
    listen: String,
    max_timeout: Option<Duration>,
    grace: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        listen: String::new(),
        max_timeout: None,
        grace: Duration::from_secs(5),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let millis = |text: String| {
            text.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag} takes a number of milliseconds, not {text:?}"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen = value()?,
            "--max-timeout-ms" => parsed.max_timeout = Some(millis(value()?)?),
            "--grace-ms" => parsed.grace = millis(value()?)?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if parsed.listen.is_empty() {
        return Err("--listen ADDR is required".into());
    }
    Ok(parsed)
}

#[derive(Clone)]
struct App {
    next_id: Arc<AtomicU64>,
    /// Held by every request's supervisor: main waits until all are gone
    /// before printing the shutdown summary, so that it comes last.
    supervisors: mpsc::Sender<()>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("http_server: {message}\nusage: http_server --listen ADDR [--max-timeout-ms N] [--grace-ms N]");
            return ExitCode::from(2);
        }
    };
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http_server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let (root, signals) = ctxkit::signal::notify_context_tokio(&Context::background())?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!(r#"{{"listening":"{}"}}"#, listener.local_addr()?);

    let (supervisors, mut all_stopped) = mpsc::channel(1);
    let app = Router::new().route("/work", get(work)).with_state(App {
        next_id: Arc::new(AtomicU64::new(0)),
        supervisors,
    });
    let mut layer = ContextLayer::new(root);
    if let Some(max) = args.max_timeout {
        layer = layer.max_timeout(max);
    }
    let report = Server::new(layer)
        .grace(args.grace)
        .serve(listener, app)
        .await?;
    // Every request has ended; let the last lines be printed (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(5), all_stopped.recv()).await;
    println!(
        r#"{{"shutdown":{{"finished":{},"cancelled":{}}}}}"#,
        report.finished, report.cancelled
    );
    signals.stop();
    Ok(())
}

/// `GET /work?ms=N[&fanout=K]`.
async fn work(State(app): State<App>, ctx: RequestContext, uri: Uri) -> (StatusCode, String) {
    let (ms, fanout) = match parse_query(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, message),
    };
    let id = app.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (stopped_tx, stopped) = oneshot::channel();
    // The supervisor, not this handler, waits for the end: if the client
    // goes away, hyper drops this future, and someone must still see the
    // workers stop and report.
    tokio::spawn(supervise(
        ctx.clone().into_inner(),
        id,
        Duration::from_millis(ms),
        fanout,
        stopped_tx,
        app.supervisors,
    ));
    let _ = stopped.await;
    match ctx.err() {
        None => (
            StatusCode::OK,
            format!("{{\"id\":{id},\"workers\":{fanout}}}\n"),
        ),
        Some(Error::DeadlineExceeded) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{}\n", Error::DeadlineExceeded),
        ),
        Some(Error::Canceled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", ctx.cause().unwrap()),
        ),
    }
}

/// `ms` (required) and `fanout` (default 3, at most `MAX_FANOUT`).
fn parse_query(query: &str) -> Result<(u64, usize), String> {
    let (mut ms, mut fanout) = (None, 3);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "ms" => {
                ms = Some(
                    value
                        .parse()
                        .map_err(|_| format!("ms={value:?} is not a number of milliseconds\n"))?,
                )
            }
            "fanout" => {
                fanout = value
                    .parse()
                    .ok()
                    .filter(|&k| k <= MAX_FANOUT)
                    .ok_or(format!(
                        "fanout={value:?} is not a number from 0 to {MAX_FANOUT}\n"
                    ))?;
            }
            _ => {}
        }
    }
    Ok((ms.ok_or("ms=N is required\n")?, fanout))
}

/// Runs the workers, tells the handler when they have stopped, then waits
/// for the request's context to end and prints the request's line.
async fn supervise(
    ctx: Context,
    id: u64,
    work: Duration,
    fanout: usize,
    stopped: oneshot::Sender<()>,
    _alive: mpsc::Sender<()>,
) {
    let started = Instant::now();
    let mut workers = Vec::with_capacity(fanout);
    for worker in 0..fanout {
        let (done, joined) = oneshot::channel::<()>();
        let ctx = ctx.clone();
        if worker % 2 == 0 {
            std::thread::spawn(move || {
                let _ = ctx.sleep(work); // blocking work that stops on cancel
                let _ = done.send(());
            });
        } else {
            tokio::spawn(async move {
                let _ = ctx.run(tokio::time::sleep(work)).await;
                let _ = done.send(());
            });
        }
        workers.push(joined);
    }
    let mut workers_stopped = 0;
    for joined in workers {
        if joined.await.is_ok() {
            workers_stopped += 1;
        }
    }
    let _ = stopped.send(());
    let error = ctx.done().await;
    let ended = match error {
        Error::DeadlineExceeded => "deadline",
        Error::Canceled => Ended::of(&ctx).unwrap_or(Ended::ClientGone).as_str(),
    };
    println!(
        r#"{{"id":{id},"path":"/work","ended":"{ended}","ms":{},"workers_stopped":{workers_stopped}}}"#,
        started.elapsed().as_millis()
    );
}
