//! The `chain` example as three processes on 127.0.0.1, edge → middle →
//! leaf, driven by its `call` command: deadlines shrink hop by hop, a
//! cancel reaches every hop, values cross, an expired budget sends nothing,
//! and statuses are grpc-go's.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The bound for a cancel to reach every hop.
const PROMPT: Duration = Duration::from_millis(500);
/// How much later than a cancel a hop's task may see it and log the call's
/// time, on a busy machine.
const SEEN_AFTER_CANCEL_MS: i64 = 25;

/// The example binary, built by `cargo test` with the other targets (or
/// built here when it is missing).
fn chain_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let binary = target.join("examples").join("chain");
    if !binary.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "-p", "ctxkit-grpc", "--example", "chain"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the chain example");
    }
    binary
}

/// One `serve` process and the JSON lines it prints.
struct Hop {
    child: Child,
    url: String,
    lines: mpsc::Receiver<Value>,
}

impl Hop {
    fn start(name: &str, next: Option<&Hop>, extra: &[&str]) -> Hop {
        let mut command = Command::new(chain_binary());
        command.args(["serve", "--name", name, "--listen", "127.0.0.1:0"]);
        if let Some(next) = next {
            command.args(["--next", &next.url]);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let line = line.unwrap();
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no listening line");
        let address = first["listening"]
            .as_str()
            .expect("listening line")
            .to_owned();
        assert_eq!(first.as_object().unwrap().len(), 1, "{first}");
        Hop {
            child,
            url: format!("http://{address}"),
            lines,
        }
    }

    /// The next per-call line, waiting at most `within`.
    fn line(&self, within: Duration) -> Value {
        self.lines
            .recv_timeout(within)
            .expect("the hop logged no call in time")
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// edge → middle → leaf; `leaf_extra` are more options for the leaf.
fn chain(leaf_extra: &[&str]) -> [Hop; 3] {
    let leaf = Hop::start("leaf", None, leaf_extra);
    let middle = Hop::start("middle", Some(&leaf), &[]);
    let edge = Hop::start("edge", Some(&middle), &[]);
    [edge, middle, leaf]
}

/// Runs `chain call --to edge ARGS`: its output, and its stdout as JSON.
fn call(edge: &Hop, args: &[&str]) -> (Output, Value) {
    let output = Command::new(chain_binary())
        .args(["call", "--to", &edge.url])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout:?}");
    let value = serde_json::from_str(stdout.trim()).unwrap();
    (output, value)
}

fn ms(value: &Value, key: &str) -> i64 {
    value[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {key} in {value}"))
}

#[test]
fn a_budget_and_a_request_id_cross_every_hop() {
    let hops = chain(&[]);
    let (output, reply) = call(&hops[0], &["--budget-ms", "300", "--request-id", "r-1"]);
    assert!(output.status.success(), "{reply}");
    let replies = [&reply, &reply["next"], &reply["next"]["next"]];
    let mut caller_remaining = 300;
    for (reply, name) in replies.iter().zip(["edge", "middle", "leaf"]) {
        assert_eq!(reply["hop"], name, "{reply}");
        assert_eq!(reply["request_id"], "r-1", "{reply}");
        // Each hop's deadline is no later than its caller's.
        let remaining = ms(reply, "remaining_ms");
        assert!(
            (0..=caller_remaining).contains(&remaining),
            "{name}: {remaining} ms"
        );
        caller_remaining = remaining;
    }
    assert!(reply["next"]["next"].get("next").is_none(), "{reply}");
    for hop in &hops {
        let line = hop.line(Duration::from_secs(5));
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["hop", "request_id", "remaining_ms", "ended", "ms"],
            "{line}"
        );
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["ended"], "completed", "{line}");
        assert!(ms(&line, "remaining_ms") <= 300);
    }
}

#[test]
fn a_cancel_stops_every_hop_within_500_ms() {
    let hops = chain(&[]);
    let (output, reply) = call(
        &hops[0],
        &[
            "--work-ms",
            "5000",
            "--cancel-after-ms",
            "300",
            "--request-id",
            "r-c",
        ],
    );
    let cancelled = Instant::now(); // the caller exits right after its cancel
    assert!(!output.status.success());
    assert_eq!(reply["status"], "CANCELLED", "{reply}");
    for hop in &hops {
        let line = hop.line(PROMPT.saturating_sub(cancelled.elapsed()) + Duration::from_millis(1));
        assert_eq!(line["ended"], "canceled", "{line}");
        assert_eq!(line["request_id"], "r-c");
        assert_eq!(ms(&line, "remaining_ms"), -1, "no budget, no deadline");
        let ran = ms(&line, "ms");
        assert!(
            (250..300 + PROMPT.as_millis() as i64).contains(&ran),
            "{line}"
        );
    }
}

#[test]
fn a_budget_that_runs_out_ends_every_hop_at_its_deadline() {
    let hops = chain(&[]);
    let (output, reply) = call(&hops[0], &["--budget-ms", "300", "--work-ms", "2000"]);
    assert!(!output.status.success());
    assert_eq!(reply["status"], "DEADLINE_EXCEEDED", "{reply}");
    assert!(reply["message"].is_string());
    for hop in &hops {
        let line = hop.line(Duration::from_secs(5));
        let ran = ms(&line, "ms");
        assert!(ran < 300 + PROMPT.as_millis() as i64, "{line}");
        // `grpc-timeout` is relative, so a hop's deadline falls one transit
        // of the call's headers after its caller's; the caller's reset at
        // its own deadline may beat the hop's timer. Such a cancel, arriving
        // before the hop's deadline, is `canceled` by definition; one
        // arriving at or after it is `deadline`. Its `ms` is taken when the
        // hop's task sees the end, a wake-up later, and both numbers are
        // whole milliseconds: hence the allowance. A transit is short on a
        // quiet machine, but a call that waits in the caller's channel
        // (a loaded machine that does not schedule it) arrives late, and the
        // caller's reset then ends it early: only a hop that reached its own
        // deadline has run for most of the budget.
        match line["ended"].as_str() {
            Some("deadline") => assert!(ran >= 250, "{line}"),
            Some("canceled") => assert!(
                ran <= ms(&line, "remaining_ms") + SEEN_AFTER_CANCEL_MS,
                "{line}"
            ),
            _ => panic!("{line}"),
        }
    }
}

#[test]
fn an_expired_budget_fails_locally() {
    let hops = chain(&[]);
    let (output, reply) = call(&hops[0], &["--budget-ms", "0", "--request-id", "expired"]);
    assert!(!output.status.success());
    assert_eq!(reply["status"], "DEADLINE_EXCEEDED", "{reply}");
    // The edge's next line is the next call's: the expired one never came.
    let (output, _) = call(&hops[0], &["--request-id", "after"]);
    assert!(output.status.success());
    for hop in &hops {
        let line = hop.line(Duration::from_secs(5));
        assert_eq!(line["request_id"], "after", "{line}");
        assert_eq!(ms(&line, "remaining_ms"), -1);
    }
}

#[test]
fn a_hops_maximum_caps_its_deadline_and_its_status_reaches_the_caller() {
    let hops = chain(&["--max-timeout-ms", "100"]);
    let (output, reply) = call(&hops[0], &["--budget-ms", "5000", "--work-ms", "1000"]);
    assert!(!output.status.success());
    // The leaf's deadline ended its work; edge and middle pass its status on.
    assert_eq!(reply["status"], "DEADLINE_EXCEEDED", "{reply}");
    let leaf = hops[2].line(Duration::from_secs(5));
    assert_eq!(leaf["ended"], "deadline", "{leaf}");
    assert!(ms(&leaf, "remaining_ms") <= 100, "{leaf}");
    let middle = hops[1].line(Duration::from_secs(5));
    assert!(ms(&middle, "remaining_ms") > 100, "{middle}");
}
