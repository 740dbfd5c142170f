//! Runs an example of this package as a child process: reads its stdout line
//! by line, sends it signals, and kills it if it outlives a watchdog.

use std::io::{BufRead, BufReader, Lines, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

/// How long a child may live before the watchdog kills it and its test fails.
const WATCHDOG: Duration = Duration::from_secs(20);

/// The examples the tests run; all built together, once per test process.
const EXAMPLES: [&str; 2] = ["graceful_shutdown", "signal_probe"];

/// The path of example `name`, built first if it is missing or older than
/// the sources (`cargo test --test signal` builds no examples).
pub fn example(name: &str) -> PathBuf {
    assert!(EXAMPLES.contains(&name), "add {name} to EXAMPLES");
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let layout = Layout::of_this_test();
    if let Err(message) = BUILT.get_or_init(|| layout.build_if_stale()) {
        panic!("{message}");
    }
    layout.example(name)
}

/// Where cargo put this test binary, and so the examples.
struct Layout {
    /// `target/<profile>` or `target/<triple>/<profile>`.
    profile_dir: PathBuf,
}

impl Layout {
    fn of_this_test() -> Layout {
        let exe = std::env::current_exe().expect("the test binary's path");
        // <profile_dir>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps")
            .to_path_buf();
        Layout { profile_dir }
    }

    fn example(&self, name: &str) -> PathBuf {
        self.profile_dir.join("examples").join(name)
    }

    fn build_if_stale(&self) -> Result<(), String> {
        let sources = newest_source();
        let fresh = EXAMPLES
            .iter()
            .all(|name| modified(&self.example(name)).is_some_and(|built| built >= sources));
        if fresh {
            return Ok(());
        }
        let cargo = std::env::var_os("CARGO").ok_or(
            "the examples are missing or stale and CARGO is not set: \
             run `cargo build -p ctxkit-tests --examples` first",
        )?;
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "ctxkit-tests"]);
        for name in EXAMPLES {
            command.args(["--example", name]);
        }
        command.args(self.cargo_args());
        let output = command
            .output()
            .map_err(|err| format!("cannot run cargo to build the examples: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "building the examples failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// `--profile`, `--target-dir` and `--target` that put the examples
    /// next to this test binary.
    fn cargo_args(&self) -> Vec<String> {
        let profile = match self.profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let above = self.profile_dir.parent().expect("a target directory");
        // Cargo marks the root of a target directory with CACHEDIR.TAG;
        // without it, `above` is a `--target <triple>` directory.
        let mut args = vec!["--profile".to_string(), profile];
        if above.join("CACHEDIR.TAG").exists() {
            args.extend(["--target-dir".to_string(), path_arg(above)]);
        } else {
            let triple = above.file_name().expect("a triple").to_string_lossy();
            let target_dir = above.parent().expect("a target directory");
            args.extend(["--target".to_string(), triple.into_owned()]);
            args.extend(["--target-dir".to_string(), path_arg(target_dir)]);
        }
        args
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The newest modification time among the files the examples are built
/// from: the core crate and this package's manifest and examples.
fn newest_source() -> SystemTime {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let core_dir = crate_dir.join("../ctxkit");
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut pending = vec![
        crate_dir.join("Cargo.toml"),
        core_dir.join("Cargo.toml"),
        core_dir.join("src"),
    ];
    pending.extend(
        EXAMPLES
            .iter()
            .map(|name| crate_dir.join("examples").join(format!("{name}.rs"))),
    );
    while let Some(path) = pending.pop() {
        if let Ok(entries) = std::fs::read_dir(&path) {
            pending.extend(entries.flatten().map(|entry| entry.path()));
        } else if let Some(time) = modified(&path) {
            newest = newest.max(time);
        }
    }
    newest
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// A running example. Dropping it kills the process, so that a failed
/// assertion leaves nothing behind.
pub struct Child {
    name: String,
    process: std::process::Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<String>,
    watchdog: Watchdog,
}

/// The exit of a child: its status and everything it printed.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Exited {
    /// True if some stdout line starts with `prefix`.
    pub fn printed(&self, prefix: &str) -> bool {
        self.stdout.iter().any(|line| line.starts_with(prefix))
    }
}

impl std::fmt::Debug for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout.join("\n"),
            self.stderr
        )
    }
}

impl Child {
    pub fn spawn(program: &Path, args: &[&str]) -> Child {
        let mut process = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
        let stdout = BufReader::new(process.stdout.take().expect("piped")).lines();
        let mut stderr = process.stderr.take().expect("piped");
        // Drained on its own thread so that a chatty child never blocks on
        // a full pipe while we read stdout.
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Child {
            name: format!("{} {}", program.display(), args.join(" ")),
            watchdog: Watchdog::start(process.id()),
            process,
            stdout,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line starting with `prefix`, and returns it.
    /// Panics if the child closes stdout first (it exited, or the watchdog
    /// killed it).
    pub fn expect_line(&mut self, prefix: &str) -> String {
        for line in self.stdout.by_ref() {
            let line = line.expect("the child's stdout is UTF-8");
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
        panic!(
            "{} closed stdout before printing {prefix:?}; it printed:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }

    /// Sends signal `name` (such as "INT") with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.process.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -s {name} failed: {status}");
    }

    /// Reads the rest of the output and waits for the child to exit.
    /// Panics if the watchdog had to kill it.
    pub fn wait(mut self) -> Exited {
        let mut stdout = std::mem::take(&mut self.seen);
        stdout.extend(self.stdout.by_ref().map_while(Result::ok));
        let status = self.process.wait().expect("wait for the child");
        let killed = self.watchdog.stop();
        let stderr = self.stderr.take().expect("once").join().expect("reader");
        let exited = Exited {
            status,
            stdout,
            stderr,
        };
        assert!(
            !killed,
            "{} did not exit within {WATCHDOG:?}; killed it: {exited:?}",
            self.name
        );
        exited
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            // Not waited for: a test failed half way.
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// Kills a process that outlives [`WATCHDOG`].
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    killed: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(pid: u32) -> Watchdog {
        let (stop, stopped) = mpsc::channel::<()>();
        let killed = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let killed = killed.clone();
            move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCHDOG) {
                    killed.store(true, Ordering::SeqCst);
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", &pid.to_string()])
                        .status();
                }
            }
        });
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
            killed,
        }
    }

    /// Stops watching; true if the watchdog had killed the process.
    fn stop(&mut self) -> bool {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.killed.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}
