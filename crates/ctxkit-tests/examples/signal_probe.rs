//! Small programs that show, one at a time, what ctxkit does with the
//! signals it no longer listens for, or listens for in other ways;
//! `tests/signal.rs` runs them and sends them real signals.
//!
//! ```text
//! cargo run -p ctxkit-tests --example signal_probe -- stop        # then Ctrl-C twice
//! cargo run -p ctxkit-tests --example signal_probe -- keep-alive  # Ctrl-C twice: both handled
//! cargo run -p ctxkit-tests --example signal_probe -- shared      # one of two listeners stopped
//! cargo run -p ctxkit-tests --example signal_probe -- tokio       # tokio's signal driver
//! ```
//!
//! Each mode prints a line starting with `ready` once it listens, and
//! reports on stdout what it receives.

use ctxkit::signal::{notify_context, notify_context_tokio, Notify};
use ctxkit::Context;
use std::io;
use std::process::ExitCode;

/// The first signal ends the context; after `stop`, the next one takes its
/// default action (the process dies by that signal).
fn stop() -> io::Result<()> {
    let (ctx, signals) = notify_context(&Context::background())?;
    println!("ready");
    ctx.wait();
    println!("received: {}", ctx.cause().expect("done"));
    signals.stop();
    println!("stopped");
    loop {
        std::thread::park();
    }
}

/// With `exit_on_second_signal(false)`, a second signal leaves the process
/// alive: a second listener, installed after the first signal, receives it.
fn keep_alive() -> io::Result<()> {
    let keep_alive = Notify::new().exit_on_second_signal(false);
    let (first, _first_signals) = keep_alive.install(&Context::background())?;
    println!("ready");
    first.wait();
    println!("received: {}", first.cause().expect("done"));
    let (second, _second_signals) = keep_alive.install(&Context::background())?;
    println!("listening again");
    second.wait();
    println!("received again: {}", second.cause().expect("done"));
    Ok(())
}

/// Stopping one of two listeners leaves the signals with the other one, not
/// with their default action.
fn shared() -> io::Result<()> {
    let (_stopped, first_signals) = notify_context(&Context::background())?;
    let (ctx, _signals) = notify_context(&Context::background())?;
    first_signals.stop();
    println!("ready");
    ctx.wait();
    println!("received: {}", ctx.cause().expect("done"));
    Ok(())
}

/// The tokio form: the first signal ends the context, a second one exits
/// with 128 + its number.
fn tokio_form() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (ctx, _signals) = notify_context_tokio(&Context::background())?;
        println!("ready");
        ctx.done().await;
        println!("received: {}", ctx.cause().expect("done"));
        println!("still shutting down");
        std::future::pending::<io::Result<()>>().await
    })
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let result = match mode.as_str() {
        "stop" => stop(),
        "keep-alive" => keep_alive(),
        "shared" => shared(),
        "tokio" => tokio_form(),
        _ => {
            eprintln!("signal_probe: give a mode: stop, keep-alive, shared or tokio");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("signal_probe {mode}: {err}");
            ExitCode::FAILURE
        }
    }
}
