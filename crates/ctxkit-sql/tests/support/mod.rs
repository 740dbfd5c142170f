//! A temporary PostgreSQL cluster for the tests of one test binary.
//!
//! Started on first use from Debian's binaries (`/usr/lib/postgresql/*/bin`,
//! or `CTXKIT_PG_BIN`), in a temp dir, listening on 127.0.0.1 on a free port;
//! stopped and removed when the test binary exits, passed or failed. initdb
//! refuses to run as root: as root, the cluster runs as `nobody`.
//! In CI (`CI=true`) a cluster that cannot start fails the test; elsewhere the
//! test prints why and returns.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// A running cluster.
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Cluster {
    /// A libpq-style connection string for the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn config(&self) -> tokio_postgres::Config {
        self.url().parse().expect("valid connection string")
    }

    /// A new client, its connection driven by a spawned task.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env("LC_ALL", "C").current_dir(&self.dir);
        cmd
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
/// What the exit hook stops: a copy of the cluster's paths.
static TO_STOP: Mutex<Option<Cluster>> = Mutex::new(None);

/// The shared cluster, or `None` (with the reason printed) when PostgreSQL is
/// not available outside CI.
pub fn cluster() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => Some(cluster),
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and PostgreSQL is required: {reason}")
        }
        Err(reason) => {
            println!("skipped: no PostgreSQL test cluster: {reason}");
            None
        }
    }
}

fn start() -> Result<Cluster, String> {
    let bin = find_bin().ok_or(
        "no initdb under /usr/lib/postgresql/*/bin (install Debian's postgresql, or set CTXKIT_PG_BIN)",
    )?;
    let dir = tempfile::Builder::new()
        .prefix("ctxkit-sql-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let run_as = (unsafe { geteuid() } == 0).then_some((65534, 65534));
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let mut cluster = Cluster {
        port: 0,
        dir,
        bin,
        run_as,
    };
    let result = init_and_start(&mut cluster);
    if let Err(reason) = result {
        cluster.stop();
        return Err(reason);
    }
    *TO_STOP.lock().unwrap() = Some(Cluster {
        port: cluster.port,
        dir: cluster.dir.clone(),
        bin: cluster.bin.clone(),
        run_as: cluster.run_as,
    });
    // SAFETY: registers a plain function with no arguments to run at exit.
    unsafe { atexit(stop_at_exit) };
    Ok(cluster)
}

fn init_and_start(cluster: &mut Cluster) -> Result<(), String> {
    let init = cluster
        .command("initdb")
        .arg("-D")
        .arg(cluster.data())
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output();
    check("initdb", init)?;
    // A port can be taken between probing and binding: try a few.
    let mut last = String::new();
    for _ in 0..5 {
        cluster.port = free_port()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            cluster.port,
            cluster.dir.display()
        );
        let started = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(cluster.data())
            .arg("-l")
            .arg(cluster.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output();
        match check("pg_ctl start", started) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e}\n{}", log_tail(&cluster.dir.join("log"))),
        }
    }
    Err(last)
}

fn check(what: &str, output: std::io::Result<Output>) -> Result<(), String> {
    let output = output.map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CTXKIT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

extern "C" fn stop_at_exit() {
    if let Ok(mut guard) = TO_STOP.lock() {
        if let Some(cluster) = guard.take() {
            cluster.stop();
        }
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
    fn geteuid() -> u32;
}
