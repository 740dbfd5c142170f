//! The timer shared by every deadline in the process.
//!
//! Deadlines live in ordered maps keyed by `(deadline, node address)`; one
//! thread, started on the first deadline, sleeps until the earliest entry
//! and cancels the scopes whose time has come. A scope removes its entry when
//! it is cancelled or dropped, so cancelled timeouts leave nothing behind, and
//! the maps hold only weak references: a pending deadline keeps nobody alive.
//!
//! The entries are spread over [`SHARDS`] maps by the thread that set the
//! deadline (threads take shards in turn), so that threads setting and
//! cancelling timeouts at once rarely meet on a lock or on the nodes of one
//! map (Go keeps a timer heap per processor for the same reason). A scope
//! records its shard when it is built, for its removal. The timer
//! thread publishes the deadline it sleeps towards in `next_wake`; an insert
//! wakes it only when the new entry is earlier, which for the common case of
//! equal timeouts set one after another is never.
//!
//! A scope's entry is keyed by its own deadline, which changes only together
//! with the entry, under the shard's lock ([`reschedule`]): a moved deadline
//! still has exactly one entry, and a remover finds it by reading the
//! deadline under that lock.

use crate::cancel::{self, Origin};
use crate::context::Node;
use crate::deadline::Deadline;
use crate::error::{Cause, Error};
use crate::node_ref::{NodeRef, WeakNodeRef};
use crate::sync::lock_std as lock;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock, PoisonError};

type Key = (Deadline, usize);

/// A pending deadline: whom to cancel, with what cause.
pub(crate) struct Entry {
    node: WeakNodeRef,
    /// `None`: `DeadlineExceeded`'s default cause.
    cause: Option<Cause>,
}

/// One map and its lock, alone on its cache lines (two, for the adjacent
/// line prefetch): unpadded, two shards share a line, and threads that never
/// touch the same shard still fight over it.
#[repr(align(128))]
struct Shard(Mutex<BTreeMap<Key, Entry>>);

/// Threads take shards in turn (`home_shard`): up to sixteen threads setting
/// deadlines each have a map and a lock of their own.
const SHARDS: usize = 16;

/// `next_wake` while the timer thread scans the shards: every insert must
/// then wake it, as the scan may have missed the new entry.
const SCANNING: i64 = i64::MIN;

struct Timer {
    shards: [Shard; SHARDS],
    /// The raw [`Deadline`] the timer thread sleeps towards (`NEVER`: none),
    /// or `SCANNING`.
    next_wake: AtomicI64,
    /// Held by the timer thread from the start of a scan until it sleeps,
    /// so that a wake-up sent after the scan cannot be lost.
    wake: Mutex<()>,
    /// Signalled when an entry earlier than `next_wake` arrives.
    earlier: Condvar,
    #[cfg_attr(loom, allow(dead_code))]
    started: Once,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        shards: std::array::from_fn(|_| Shard(Mutex::new(BTreeMap::new()))),
        next_wake: AtomicI64::new(Deadline::NEVER.raw()),
        wake: Mutex::new(()),
        earlier: Condvar::new(),
        started: Once::new(),
    })
}

/// The shard for deadlines set on the calling thread. Threads take shards
/// in turn, so up to `SHARDS` threads never share one.
pub(crate) fn home_shard() -> u8 {
    thread_local! {
        static HOME: Cell<u8> = const { Cell::new(u8::MAX) };
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    HOME.with(|home| {
        if home.get() == u8::MAX {
            // Relaxed: only the spread of the values matters.
            home.set((NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS) as u8);
        }
        home.get()
    })
}

/// The shard that holds `node`'s entry: the one its scope recorded.
fn shard_of<'t>(timer: &'t Timer, node: &Node) -> MutexGuard<'t, BTreeMap<Key, Entry>> {
    let scope = node.scope().expect("only scopes have deadlines");
    lock(&timer.shards[usize::from(scope.timer_shard())].0)
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

fn key(deadline: Deadline, node: &Node) -> Key {
    // The address is unique while the node lives, and the node removes its
    // entry before it dies, so it identifies the entry.
    (deadline, node as *const Node as usize)
}

/// The timer, its thread started.
fn started() -> &'static Timer {
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
    timer
}

/// The deadline of `node`'s entry: its scope's own deadline. Read under the
/// shard's lock, which every change of it holds.
fn own_deadline(node: &Node) -> Deadline {
    node.scope()
        .expect("only scopes have deadlines")
        .own_deadline()
}

/// Schedules `node` to be cancelled with `DeadlineExceeded` and `cause` at
/// its scope's own deadline. For a scope not yet shared with other threads.
pub(crate) fn insert(node: &NodeRef, cause: Option<Cause>) {
    let timer = started();
    let deadline = own_deadline(node);
    let key = key(deadline, node);
    #[cfg(loom)]
    let _model = model_order();
    let entry = Entry {
        node: NodeRef::downgrade(node),
        cause,
    };
    shard_of(timer, node).insert(key, entry);
    wake_for(timer, deadline);
}

/// Wakes the timer thread if it must see an entry just inserted at
/// `deadline`.
fn wake_for(timer: &Timer, deadline: Deadline) {
    // SeqCst, with the stores in `run`: if the timer's scan of our shard came
    // before our insert, its `SCANNING` store comes before this load, so we
    // read `SCANNING` or the deadline it settled on, never an older one.
    let next_wake = timer.next_wake.load(Ordering::SeqCst);
    if next_wake == SCANNING || deadline.raw() < next_wake {
        // The timer thread holds `wake` until it sleeps: taking it here
        // makes sure the signal finds it asleep, not about to be.
        let _wake = lock(&timer.wake);
        timer.earlier.notify_one();
    }
}

/// Removes `node`'s entry, if it is still there.
pub(crate) fn remove(node: &Node) {
    #[cfg(loom)]
    let _model = model_order();
    let mut entries = shard_of(timer(), node);
    let entry = entries.remove(&key(own_deadline(node), node));
    drop(entries);
    // Dropped here, outside the lock: the cause is a user value.
    drop(entry);
}

/// What [`reschedule`] did.
pub(crate) enum Rescheduled {
    /// The deadline moved; the entry it replaced, if any was left over (to
    /// be dropped by the caller outside its locks).
    Moved(Option<Entry>),
    /// The entry was gone: the timer took it out to fire it. Nothing changed.
    Firing,
    /// The new deadline has passed: the entry is out, and the scope must be
    /// ended now with this cause.
    Passed(Option<Cause>),
}

/// Moves `node`'s entry to `to` (`NEVER`: takes it out), recording `to` as
/// its scope's own deadline; `passed`: `to` has come, take the entry out and
/// hand its cause over. The caller holds the scope's lock, and the scope is
/// live: nothing else changes its deadline meanwhile.
///
/// One lock, one removal and one insertion in the shard's map: a move is
/// one timer update, and allocates nothing once the map's nodes exist.
pub(crate) fn reschedule(node: &NodeRef, to: Deadline, passed: bool) -> Rescheduled {
    let timer = started();
    #[cfg(loom)]
    let _model = model_order();
    let scope = node.scope().expect("only scopes have deadlines");
    let mut entries = shard_of(timer, node);
    let from = scope.own_deadline();
    let entry = if from == Deadline::NEVER {
        None
    } else {
        match entries.remove(&key(from, node)) {
            Some(entry) => Some(entry),
            // A live scope with a deadline has an entry, unless the timer
            // has just taken it out to fire it.
            None => return Rescheduled::Firing,
        }
    };
    scope.set_own_deadline(to);
    if passed {
        return Rescheduled::Passed(entry.and_then(|entry| entry.cause));
    }
    if to == Deadline::NEVER {
        return Rescheduled::Moved(entry);
    }
    let entry = entry.unwrap_or_else(|| Entry {
        node: NodeRef::downgrade(node),
        cause: None,
    });
    entries.insert(key(to, node), entry);
    drop(entries);
    wake_for(timer, to);
    Rescheduled::Moved(None)
}

/// The key of `node`'s entry, for loom models that fire it with [`fire`]
/// (possibly after the node is gone).
#[cfg(all(test, loom))]
pub(crate) fn entry_key(deadline: std::time::Instant, node: &Node) -> Key {
    key(Deadline::from_instant(deadline), node)
}

/// What the timer thread does for one due entry, for loom models (which
/// cannot run the timer thread): takes the entry out of the map and, if it
/// was still there and its node is alive, cancels the node with
/// `DeadlineExceeded` and the entry's cause. Returns whether the entry was
/// still there.
#[cfg(all(test, loom))]
pub(crate) fn fire(key: Key) -> bool {
    let entry = {
        let _model = model_order();
        // The node may be gone: look in every shard.
        let timer = timer();
        timer
            .shards
            .iter()
            .find_map(|shard| lock(&shard.0).remove(&key))
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
    let timer = timer();
    timer.shards.iter().map(|shard| lock(&shard.0).len()).sum()
}

#[cfg_attr(loom, allow(dead_code))]
fn run() {
    let timer = timer();
    loop {
        let wake = lock(&timer.wake);
        timer.next_wake.store(SCANNING, Ordering::SeqCst);
        let now = Deadline::now();
        let mut due = Vec::new();
        let mut earliest = Deadline::NEVER;
        for index in 0..SHARDS {
            let mut entries = lock(&timer.shards[index].0);
            while let Some(entry) = entries.first_entry() {
                if entry.key().0 > now {
                    earliest = earliest.min(entry.key().0);
                    break;
                }
                due.push(entry.remove());
            }
        }
        if !due.is_empty() {
            // Cancel without holding `wake`: inserts (from the scopes'
            // callbacks, say) must not wait for us.
            drop(wake);
            for Entry { node, cause } in due {
                if let Some(node) = node.upgrade() {
                    cancel::cancel(&node, Error::DeadlineExceeded, cause, Origin::Timer);
                }
            }
            continue;
        }
        timer.next_wake.store(earliest.raw(), Ordering::SeqCst);
        // Waking early (spuriously, or for an entry since removed) costs
        // one scan: the loop checks the clock again.
        let wake = match earliest.instant() {
            Some(instant) => {
                let sleep = instant.saturating_duration_since(std::time::Instant::now());
                timer
                    .earlier
                    .wait_timeout(wake, sleep)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            // Nothing pending: sleep until an insert signals.
            None => timer
                .earlier
                .wait(wake)
                .unwrap_or_else(PoisonError::into_inner),
        };
        drop(wake);
    }
}
