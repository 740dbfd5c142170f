//! Go's errgroup, on threads and on tokio: the first failure cancels the
//! siblings, and waiting returns that failure.
//!
//! ```text
//! cargo run -p ctxkit-tests --example errgroup
//! ```

use ctxkit::group::{self, TaskGroup};
use ctxkit::Context;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a download failed.
#[derive(Debug, Clone)]
struct DownloadFailed(&'static str);

impl fmt::Display for DownloadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "download of {} failed: connection reset", self.0)
    }
}

impl std::error::Error for DownloadFailed {}

/// Name, simulated duration, and whether the download fails at the end.
const FILES: [(&str, u64, bool); 5] = [
    ("a.txt", 20, false),
    ("b.txt", 400, false),
    ("c.txt", 60, true),
    ("d.txt", 800, false),
    ("e.txt", 30, false),
];

/// A download that takes `ms` unless the context ends first.
fn download(
    ctx: &Context,
    name: &'static str,
    ms: u64,
    fails: bool,
) -> Result<usize, DownloadFailed> {
    match ctx.sleep(Duration::from_millis(ms)) {
        Ok(()) if fails => Err(DownloadFailed(name)),
        Ok(()) => Ok(name.len() * 100),
        Err(err) => {
            let cause = ctx.cause().map(|c| c.to_string()).unwrap_or_default();
            println!("  {name}: stopped early ({err}; cause: {cause})");
            Ok(0)
        }
    }
}

fn threads(started: Instant) {
    println!("threads: 5 downloads, at most 3 at a time; c.txt fails after 60 ms");
    let sizes = Mutex::new(Vec::new()); // borrowed by the tasks
    let result = group::scope::<DownloadFailed, _, _>(&Context::background(), |g| {
        g.set_limit(Some(3)).expect("no task runs yet");
        for (name, ms, fails) in FILES {
            let sizes = &sizes;
            g.spawn(move |ctx| {
                let size = download(ctx, name, ms, fails)?;
                if size > 0 {
                    println!("  {name}: {size} bytes");
                }
                sizes.lock().unwrap().push((name, size));
                Ok(())
            });
        }
    });
    match result {
        Ok(()) => println!("  all done"),
        Err(err) => println!("  group failed: {err}"),
    }
    println!(
        "  finished in {} ms (the slow downloads did not run to the end)",
        started.elapsed().as_millis()
    );
    println!(
        "  {} tasks reported back",
        sizes.into_inner().unwrap().len()
    );
}

async fn tokio_tasks(started: Instant) {
    println!("tokio: the same downloads as tasks");
    let mut g = TaskGroup::new(&Context::background());
    g.set_limit(Some(3)).expect("no task runs yet");
    for (name, ms, fails) in FILES {
        g.spawn(move |ctx| async move {
            match ctx.run(tokio::time::sleep(Duration::from_millis(ms))).await {
                Ok(()) if fails => return Err(DownloadFailed(name)),
                Ok(()) => println!("  {name}: {} bytes", name.len() * 100),
                Err(err) => println!(
                    "  {name}: stopped early ({err}; cause: {})",
                    ctx.cause().map(|c| c.to_string()).unwrap_or_default()
                ),
            }
            Ok(())
        })
        .await;
    }
    let ctx = g.context().clone();
    match g.wait().await {
        Ok(()) => println!("  all done"),
        Err(err) => println!("  group failed: {err}"),
    }
    println!(
        "  finished in {} ms; group context after wait: {:?}",
        started.elapsed().as_millis(),
        ctx.err()
    );
}

fn main() {
    threads(Instant::now());
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(tokio_tasks(Instant::now()));
}
