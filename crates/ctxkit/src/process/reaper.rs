//! The background reaper of dropped children that still run.
//!
//! One thread for all of them, alive only while there are any: it checks
//! each with `try_wait` (under the child's lock, like every reaping), every
//! 10 ms at first, backing off to 200 ms while nothing changes. Their
//! contexts keep stopping them meanwhile: the stop callbacks hold the
//! shared state, not the dropped `Child`.

use super::child::Shared;
use crate::sync::lock_std as lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

struct Orphans {
    children: Vec<Arc<Shared>>,
    /// Whether the reaper thread runs.
    running: bool,
}

static ORPHANS: Mutex<Orphans> = Mutex::new(Orphans {
    children: Vec::new(),
    running: false,
});

/// Reaps `child` in the background once it exits.
pub(super) fn adopt(child: Arc<Shared>) {
    let mut orphans = lock(&ORPHANS);
    orphans.children.push(child);
    if orphans.running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ctxkit-reaper".into())
        .stack_size(64 * 1024)
        .spawn(run);
    // Without a thread, the orphans wait for the next adoption to try again.
    orphans.running = spawned.is_ok();
}

fn run() {
    let mut pause = FIRST_PAUSE;
    loop {
        std::thread::sleep(pause);
        let mut orphans = lock(&ORPHANS);
        let before = orphans.children.len();
        orphans.children.retain(|child| !child.try_reap());
        if orphans.children.is_empty() {
            orphans.running = false;
            return;
        }
        pause = if orphans.children.len() == before {
            (pause * 2).min(LONGEST_PAUSE)
        } else {
            FIRST_PAUSE
        };
    }
}
