//! Interop with Python's grpcio, another gRPC implementation: its deadlines
//! and cancels reach a ctxkit hop, and a ctxkit caller's reach a grpcio
//! server.
//!
//! The interpreter is `$CTXKIT_GRPC_PYTHON`, else the venv `.ci/install.sh`
//! makes (`target/grpc-venv`). Without grpcio the tests fail in CI
//! (`CI=true`) and are skipped elsewhere, saying why.

mod support;

use ctxkit::Context;
use ctxkit_grpc::demo::work_client::WorkClient;
use ctxkit_grpc::demo::WorkRequest;
use ctxkit_grpc::{request, ClientLayer, Ended, ServerLayer};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{channel, TestServer, PROMPT};
use tonic::Code;
use tower_layer::Layer;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A Python with grpcio and Python stubs of `work.proto`, or `None` (and why
/// on stderr) outside CI.
struct Python {
    interpreter: PathBuf,
    stubs: PathBuf,
}

impl Python {
    fn find(test: &str) -> Option<Python> {
        let interpreter = std::env::var_os("CTXKIT_GRPC_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate_dir().join("../../target/grpc-venv/bin/python"));
        let probe = Command::new(&interpreter)
            .args(["-c", "import grpc, grpc_tools"])
            .output();
        if !probe.as_ref().is_ok_and(|out| out.status.success()) {
            let why = format!(
                "{test}: no Python with grpcio and grpcio-tools at {} ({}); run .ci/install.sh \
                 or set CTXKIT_GRPC_PYTHON",
                interpreter.display(),
                match &probe {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(error) => error.to_string(),
                }
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            // Straight to stderr: libtest would capture `eprintln!`.
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            return None;
        }
        let stubs = std::env::temp_dir().join(format!("ctxkit-grpc-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&stubs).unwrap();
        let protoc = Command::new(&interpreter)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(crate_dir().join("proto"))
            .arg(format!("--python_out={}", stubs.display()))
            .arg(format!("--grpc_python_out={}", stubs.display()))
            .arg("work.proto")
            .output()
            .unwrap();
        assert!(protoc.status.success(), "grpc_tools.protoc: {protoc:?}");
        Some(Python { interpreter, stubs })
    }

    /// Runs `tests/interop/SCRIPT ARGS` with the stubs importable; its
    /// stdout lines as JSON arrive on the receiver.
    fn spawn(&self, script: &str, args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
        let mut child = Command::new(&self.interpreter)
            .arg(crate_dir().join("tests/interop").join(script))
            .args(args)
            .env("PYTHONPATH", &self.stubs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        (child, lines)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.stubs);
    }
}

/// The next JSON line, waiting at most `within` (without blocking the
/// runtime).
async fn next_line(lines: &mpsc::Receiver<Value>, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        match lines.try_recv() {
            Ok(line) => return line,
            Err(mpsc::TryRecvError::Disconnected) => panic!("the Python process ended early"),
            Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(mpsc::TryRecvError::Empty) => panic!("no line from Python within {within:?}"),
        }
    }
}

fn reap(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_clients_timeout_is_the_hops_deadline() {
    let Some(python) = Python::find("grpcio_client_deadline") else {
        return;
    };
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let (child, lines) = python.spawn("client.py", &[&server.address.to_string(), "deadline"]);
    let call = server.next_call().await;
    let remaining = call
        .remaining
        .expect("grpcio's timeout arrived as a deadline");
    assert!(remaining <= Duration::from_millis(300), "{remaining:?}");
    assert!(remaining > Duration::from_millis(100), "{remaining:?}");
    assert_eq!(call.value("x-request-id").as_deref(), Some("py-1"));
    let reply = next_line(&lines, Duration::from_secs(10)).await;
    assert!(
        (0..=300).contains(&reply["remaining_ms"].as_i64().unwrap()),
        "{reply}"
    );
    reap(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_that_cancels_cancels_the_hops_context() {
    let Some(python) = Python::find("grpcio_client_cancel") else {
        return;
    };
    let mut server = TestServer::start(ServerLayer::new(Context::background())).await;
    let (child, lines) = python.spawn("client.py", &[&server.address.to_string(), "cancel"]);
    let call = server.next_call().await;
    let ctx = call.ctx.clone();
    assert_eq!(
        next_line(&lines, Duration::from_secs(10)).await["cancelling"],
        true
    );
    let cancelling = Instant::now();
    let seen = call.spawned_work_ended().await;
    assert!(seen - cancelling <= PROMPT, "took {:?}", seen - cancelling);
    assert_eq!(ctx.err(), Some(ctxkit::Error::Canceled));
    assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    assert_eq!(
        next_line(&lines, Duration::from_secs(10)).await["cancelled"],
        true
    );
    reap(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_server_sees_the_ctxkit_callers_deadline_and_cancel() {
    let Some(python) = Python::find("grpcio_server") else {
        return;
    };
    let (mut child, lines) = python.spawn("server.py", &[]);
    let listening = next_line(&lines, Duration::from_secs(30)).await;
    let url = format!("http://{}", listening["listening"].as_str().unwrap());
    let mut client = WorkClient::new(ClientLayer::new().layer(channel(&url)));

    let budget = Duration::from_secs(2);
    let (ctx, _deadline) = Context::background().with_timeout(budget);
    let (ctx, cancel) = ctx.with_cancel();
    let call =
        tokio::spawn(async move { client.r#do(request(&ctx, WorkRequest { work_ms: 0 })).await });
    let arrived = next_line(&lines, Duration::from_secs(10)).await;
    let time_remaining = arrived["time_remaining"].as_f64().expect("a deadline");
    assert!(time_remaining < budget.as_secs_f64(), "{arrived}");
    assert!(time_remaining > 1.0, "{arrived}");

    let cancelled = Instant::now();
    cancel.cancel();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let inactive = next_line(&lines, PROMPT).await;
    assert!(inactive["inactive_after_ms"].is_number(), "{inactive}");
    assert!(
        cancelled.elapsed() <= PROMPT,
        "is_active() turned false late"
    );
    child.stdin.take().unwrap().write_all(b"").unwrap();
    reap(child);
}
