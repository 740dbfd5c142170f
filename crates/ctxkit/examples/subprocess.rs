//! `cargo run --example subprocess`: Go's `exec.CommandContext` with
//! `Cancel` and `WaitDelay`.
//!
//! A child that ignores SIGTERM runs under a 300 ms timeout. When the
//! context ends it gets SIGTERM, shrugs it off, and gets SIGKILL once the
//! 1 s wait delay is over; then it is reaped and its status shown. Unix
//! only.

#[cfg(unix)]
fn main() {
    use ctxkit::process::{CommandExt, Stop};
    use ctxkit::Context;
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_millis(300);
    const WAIT_DELAY: Duration = Duration::from_secs(1);
    let script = r#"trap 'echo "got SIGTERM, ignoring it"' TERM
echo "running"
while :; do sleep 0.05; done"#;

    let start = Instant::now();
    let ms = |at: Instant| at.duration_since(start).as_millis();
    let (ctx, _cancel) = Context::background().with_timeout(TIMEOUT);
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stop_with(Stop::new().wait_delay(WAIT_DELAY))
        .spawn_ctx(&ctx)
        .expect("sh starts");
    println!(
        "{:>5} ms  started pid {} (ignores SIGTERM): timeout {} ms, wait delay {} ms",
        0,
        child.id(),
        TIMEOUT.as_millis(),
        WAIT_DELAY.as_millis()
    );

    let err = child.wait().expect_err("the context stops it");
    let reaped = Instant::now();
    let stopped = err.stopped_at().expect("it was running");
    println!(
        "{:>5} ms  {}: SIGTERM sent",
        ms(stopped),
        err.context_error().expect("a context error")
    );
    match err.killed_at() {
        Some(killed) => println!(
            "{:>5} ms  still running {} ms later: SIGKILL sent",
            ms(killed),
            killed.duration_since(stopped).as_millis()
        ),
        None => println!("          (exited on SIGTERM: no SIGKILL needed)"),
    }
    println!(
        "{:>5} ms  reaped: {}",
        ms(reaped),
        err.status().expect("reaped")
    );

    let mut said = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut said);
    for line in said.lines() {
        println!("          child said: {line}");
    }
    println!("result: {err}");
}

#[cfg(not(unix))]
fn main() {
    eprintln!("this example needs Unix signals");
}
