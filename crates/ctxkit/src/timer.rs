//! The one timer shared by every deadline in the process.
//!
//! Deadlines live in an ordered map keyed by `(deadline, node address)`; one
//! thread, started on the first deadline, sleeps until the earliest entry
//! and cancels the scopes whose time has come. A scope removes its entry when
//! it is cancelled or dropped, so cancelled timeouts leave nothing behind, and
//! the map holds only weak references: a pending deadline keeps nobody alive.

use crate::cancel::{self, Origin};
use crate::context::Node;
use crate::error::{Cause, Error};
use crate::sync::{lock_std as lock, Arc, Weak};
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, Once, OnceLock};
use std::time::Instant;

type Key = (Instant, usize);

struct Entry {
    node: Weak<Node>,
    cause: Cause,
}

struct Timer {
    entries: Mutex<BTreeMap<Key, Entry>>,
    /// Signalled when an entry becomes the earliest, so the timer thread
    /// shortens its sleep.
    earlier: Condvar,
    #[cfg_attr(loom, allow(dead_code))]
    started: Once,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        entries: Mutex::new(BTreeMap::new()),
        earlier: Condvar::new(),
        started: Once::new(),
    })
}

// The map is behind a `std` mutex, invisible to loom, so a model would not
// explore the orders in which a firing timer and a cancel take an entry out.
// Under loom each map operation also holds this lock, created afresh for
// every execution, which makes those orders part of the model.
#[cfg(loom)]
loom::lazy_static! {
    static ref MODEL_ORDER: loom::sync::Mutex<()> = loom::sync::Mutex::new(());
}

#[cfg(loom)]
fn model_order() -> crate::sync::MutexGuard<'static, ()> {
    crate::sync::lock(&*MODEL_ORDER)
}

fn key(deadline: Instant, node: &Node) -> Key {
    // The address is unique while the node lives, and the node removes its
    // entry before it dies, so it identifies the entry.
    (deadline, node as *const Node as usize)
}

/// Schedules `node` to be cancelled with `DeadlineExceeded` and `cause` at
/// `deadline`.
pub(crate) fn insert(deadline: Instant, node: &Arc<Node>, cause: Cause) {
    let timer = timer();
    // Under loom the timer thread is not started: a model cannot contain a
    // real thread. Models fire an entry themselves with `fire`.
    #[cfg(not(loom))]
    timer.started.call_once(|| {
        std::thread::Builder::new()
            .name("ctxkit-timer".into())
            .spawn(run)
            .expect("ctxkit: cannot start the deadline timer thread");
    });
    let key = key(deadline, node);
    #[cfg(loom)]
    let _model = model_order();
    let mut entries = lock(&timer.entries);
    let earliest = entries
        .first_key_value()
        .is_none_or(|(first, _)| key < *first);
    entries.insert(
        key,
        Entry {
            node: Arc::downgrade(node),
            cause,
        },
    );
    drop(entries);
    if earliest {
        timer.earlier.notify_one();
    }
}

/// Removes `node`'s entry, if it is still there.
pub(crate) fn remove(deadline: Instant, node: &Node) {
    remove_at(deadline, key(deadline, node).1);
}

/// Removes the entry of the node that lived at `address` when it was
/// inserted (a node being freed may have been moved out of its `Arc`).
pub(crate) fn remove_at(deadline: Instant, address: usize) {
    #[cfg(loom)]
    let _model = model_order();
    let entry = lock(&timer().entries).remove(&(deadline, address));
    // Dropped here, outside the lock: the cause is a user value.
    drop(entry);
}

/// The key of `node`'s entry, for loom models that fire it with [`fire`]
/// (possibly after the node is gone).
#[cfg(all(test, loom))]
pub(crate) fn entry_key(deadline: Instant, node: &Node) -> (Instant, usize) {
    key(deadline, node)
}

/// What the timer thread does for one due entry, for loom models (which
/// cannot run the timer thread): takes the entry out of the map and, if it
/// was still there and its node is alive, cancels the node with
/// `DeadlineExceeded` and the entry's cause. Returns whether the entry was
/// still there.
#[cfg(all(test, loom))]
pub(crate) fn fire(key: (Instant, usize)) -> bool {
    let entry = {
        let _model = model_order();
        lock(&timer().entries).remove(&key)
    };
    let Some(Entry { node, cause }) = entry else {
        return false;
    };
    if let Some(node) = node.upgrade() {
        cancel::cancel(&node, Error::DeadlineExceeded, cause, Origin::Timer);
    }
    true
}

/// How many deadlines are pending.
pub(crate) fn pending() -> usize {
    lock(&timer().entries).len()
}

#[cfg_attr(loom, allow(dead_code))]
fn run() {
    let timer = timer();
    let mut entries = lock(&timer.entries);
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(entries);
            for Entry { node, cause } in due {
                if let Some(node) = node.upgrade() {
                    cancel::cancel(&node, Error::DeadlineExceeded, cause, Origin::Timer);
                }
            }
            entries = lock(&timer.entries);
            continue;
        }
        entries = match entries.first_key_value() {
            Some(((deadline, _), _)) => {
                let sleep = deadline.saturating_duration_since(now);
                timer
                    .earlier
                    .wait_timeout(entries, sleep)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => timer
                .earlier
                .wait(entries)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
}
