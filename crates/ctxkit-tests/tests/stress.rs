//! Several threads doing random operations on one shared context tree.
//!
//! Threads share a table of contexts and a table of cancel handles: each
//! step picks a random row and derives from it (cancel, short or long
//! timeout, value, `without_cancel`, a merge with another row), cancels,
//! moves or clears a deadline, drops, detaches, registers or stops an
//! `after_func`, or waits briefly (blocking and async). Short timeouts and
//! moves to short timeouts make the timer thread a participant.
//!
//! A watchdog aborts the process with a message if no step completes for
//! [`STALL_LIMIT`]: a deadlock becomes a failure, not a hung CI job. At the
//! end: a cancelled context reports done; after the root is cancelled every
//! context under it reports done (one run), or, once every handle, context
//! and callback is gone, the live root holds no registrations: no dead
//! children (the other run); either way the timer holds no new deadlines and
//! every callback ran exactly as often as its `stop` allowed.
//!
//! The `always_on_*` tests together run a million steps (4 threads, a couple
//! of seconds in a debug build); `ten_million_operations` is `#[ignore]`d,
//! for `.ci/soak.sh` in release mode:
//! `cargo test -p ctxkit-tests --release --test stress -- --ignored`.

use ctxkit::{diagnostics, AfterFunc, CancelHandle, Context};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// A step that takes longer than this means a deadlock.
const STALL_LIMIT: Duration = Duration::from_secs(60);
const ROWS: usize = 64;
/// `after_func`s kept per thread before the oldest is settled.
const KEPT_CALLBACKS: usize = 64;

/// The tests share the process-wide timer: one at a time, so the deadline
/// count at the end is this test's own.
static SERIAL: Mutex<()> = Mutex::new(());

/// xorshift64*: a seeded, reproducible stream of choices per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A context and whether cancelling the root reaches it (no
/// `without_cancel` on the way up).
#[derive(Clone)]
struct Row {
    ctx: Context,
    under_root: bool,
}

struct Tree {
    root: Row,
    contexts: Vec<Mutex<Option<Row>>>,
    handles: Vec<Mutex<Option<(Context, CancelHandle)>>>,
    steps: AtomicU64,
}

/// A settled callback: how often it must run (0 or 1) and how often it did.
struct Settled {
    expected: usize,
    runs: Arc<AtomicUsize>,
}

struct Worker {
    rng: Rng,
    kept: Vec<(AfterFunc, Arc<AtomicUsize>)>,
    settled: Vec<Settled>,
    ran: mpsc::Sender<()>,
}

impl Worker {
    fn pick_context(&mut self, tree: &Tree) -> Row {
        let row = self.rng.below(ROWS + 1);
        if row == ROWS {
            return tree.root.clone();
        }
        let slot = tree.contexts[row].lock().unwrap().clone();
        slot.unwrap_or_else(|| tree.root.clone())
    }

    fn step(&mut self, tree: &Tree) {
        match self.rng.below(100) {
            0..=29 => self.derive_scope(tree),
            30..=37 => {
                let parent = self.pick_context(tree);
                let row = Row {
                    ctx: parent.ctx.with_value(self.rng.next()),
                    under_root: parent.under_root,
                };
                self.store(tree, row);
            }
            38..=41 => {
                let parent = self.pick_context(tree);
                let row = Row {
                    ctx: parent.ctx.without_cancel(),
                    under_root: false,
                };
                self.store(tree, row);
            }
            42..=50 => self.cancel(tree),
            51..=55 => self.move_deadline(tree),
            56..=62 => {
                let row = self.rng.below(ROWS);
                let taken = tree.handles[row].lock().unwrap().take();
                if let Some((ctx, handle)) = taken {
                    if self.rng.below(2) == 0 {
                        drop(handle);
                        assert!(ctx.is_done(), "a dropped handle's context is done");
                    } else {
                        handle.detach();
                    }
                }
            }
            63..=70 => {
                let row = self.rng.below(ROWS);
                drop(tree.contexts[row].lock().unwrap().take());
            }
            71..=82 => self.after_func(tree),
            83..=87 => {
                if !self.kept.is_empty() {
                    let index = self.rng.below(self.kept.len());
                    let entry = self.kept.swap_remove(index);
                    self.settle(entry);
                }
            }
            88..=93 => {
                let row = self.pick_context(tree);
                if let Some(err) = row.ctx.wait_timeout(Duration::from_micros(20)) {
                    assert_eq!(row.ctx.err(), Some(err), "wait returns err()");
                }
            }
            _ => {
                // Register a waker and leave: the registration must go too.
                let row = self.pick_context(tree);
                let mut done = pin!(row.ctx.done());
                let mut cx = std::task::Context::from_waker(Waker::noop());
                if let Poll::Ready(err) = done.as_mut().poll(&mut cx) {
                    assert_eq!(row.ctx.err(), Some(err));
                }
            }
        }
    }

    fn derive_scope(&mut self, tree: &Tree) {
        let parent = self.pick_context(tree);
        let other = self.pick_context(tree);
        // Read before deriving: a cancel of the parent that is still
        // propagating may not have reached a child attached just before it.
        let parent_was_done = parent.ctx.is_done();
        let other_was_done = other.ctx.is_done();
        let choice = self.rng.below(5);
        let (ctx, handle) = match choice {
            0 => parent
                .ctx
                .with_timeout(Duration::from_micros(self.rng.below(2000) as u64)),
            1 => parent.ctx.with_timeout(Duration::from_secs(3600)),
            2 => parent.ctx.merge(&other.ctx),
            _ => parent.ctx.with_cancel(),
        };
        let merged = choice == 2;
        if parent_was_done || (merged && other_was_done) {
            assert!(ctx.is_done(), "a child of a done context is done at once");
        }
        let row = Row {
            ctx: ctx.clone(),
            under_root: parent.under_root || (merged && other.under_root),
        };
        self.store(tree, row);
        if self.rng.below(8) == 0 {
            handle.detach();
        } else {
            let slot = self.rng.below(ROWS);
            // The replaced handle, if any, is dropped (cancelled) here.
            let replaced = tree.handles[slot].lock().unwrap().replace((ctx, handle));
            drop(replaced);
        }
    }

    fn store(&mut self, tree: &Tree, row: Row) {
        let slot = self.rng.below(ROWS);
        let replaced = tree.contexts[slot].lock().unwrap().replace(row);
        drop(replaced);
    }

    fn cancel(&mut self, tree: &Tree) {
        let row = self.rng.below(ROWS);
        let slot = tree.handles[row].lock().unwrap();
        if let Some((ctx, handle)) = &*slot {
            handle.cancel();
            assert!(ctx.is_done(), "a context is done once cancel() returns");
            let (child, _child_cancel) = ctx.with_cancel();
            assert!(
                child.is_done(),
                "a child derived after cancel is done at once"
            );
        }
    }

    /// Moves a handle's deadline: to a short or long timeout, to now, or
    /// away. A live context's move succeeds (unless its deadline is firing
    /// that very moment), a done one's fails, and a move to now ends it.
    fn move_deadline(&mut self, tree: &Tree) {
        let row = self.rng.below(ROWS);
        let slot = tree.handles[row].lock().unwrap();
        let Some((ctx, handle)) = &*slot else { return };
        let was_done = ctx.is_done();
        let moved = match self.rng.below(4) {
            0 => handle.set_timeout(Duration::from_micros(self.rng.below(2000) as u64)),
            1 => handle.set_timeout(Duration::from_secs(3600)),
            2 => {
                let moved = handle.set_deadline(Instant::now());
                assert!(ctx.is_done(), "a move to now ends the context");
                moved
            }
            _ => handle.clear_deadline(),
        };
        if was_done {
            assert!(!moved, "a done context's deadline does not move");
        }
    }

    fn after_func(&mut self, tree: &Tree) {
        let row = self.pick_context(tree);
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let ran = self.ran.clone();
        let after = row.ctx.after_func(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = ran.send(());
        });
        self.kept.push((after, runs));
        if self.kept.len() > KEPT_CALLBACKS {
            let oldest = self.kept.remove(0);
            self.settle(oldest);
        }
    }

    /// Stops a callback for good: it must then run exactly once if `stop`
    /// could not prevent it, and never if it could.
    fn settle(&mut self, (after, runs): (AfterFunc, Arc<AtomicUsize>)) {
        let expected = usize::from(!after.stop());
        self.settled.push(Settled { expected, runs });
    }
}

/// How a run ends, each checking what the other cannot.
#[derive(Clone, Copy)]
enum End {
    /// Cancel the root with the tree still held: everything under it is done.
    CancelRoot,
    /// Drop every handle and context with the root still live: the root then
    /// holds nothing (no dead children), and the timer nothing new.
    ReleaseAll,
}

fn run(threads: usize, steps_per_thread: u64, seed: u64, end: End) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let deadlines_before = diagnostics::pending_deadlines();
    let (root_ctx, root_cancel) = Context::background().with_cancel();
    let tree = Arc::new(Tree {
        root: Row {
            ctx: root_ctx.clone(),
            under_root: true,
        },
        contexts: (0..ROWS).map(|_| Mutex::new(None)).collect(),
        handles: (0..ROWS).map(|_| Mutex::new(None)).collect(),
        steps: AtomicU64::new(0),
    });
    let started = Instant::now();
    let (finished_tx, finished_rx) = mpsc::channel::<()>();
    let watchdog = spawn_watchdog(tree.clone(), finished_rx);
    let (ran_tx, ran_rx) = mpsc::channel();

    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let tree = tree.clone();
            let ran = ran_tx.clone();
            let seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            thread::spawn(move || {
                let mut worker = Worker {
                    rng: Rng(seed | 1),
                    kept: Vec::new(),
                    settled: Vec::new(),
                    ran,
                };
                for _ in 0..steps_per_thread {
                    worker.step(&tree);
                    tree.steps.fetch_add(1, Ordering::Relaxed);
                }
                for entry in std::mem::take(&mut worker.kept) {
                    worker.settle(entry);
                }
                worker.settled
            })
        })
        .collect();
    drop(ran_tx);
    let settled: Vec<Settled> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("a stress thread panicked"))
        .collect();

    eprintln!(
        "stress: {} steps on {threads} threads in {:.1?}, {} callbacks settled",
        tree.steps.load(Ordering::Relaxed),
        started.elapsed(),
        settled.len()
    );
    match end {
        End::CancelRoot => {
            check_root_cancel_reaches_everything(&tree, &root_cancel);
            release_everything(&tree);
        }
        End::ReleaseAll => {
            release_everything(&tree);
            assert!(!root_ctx.is_done());
            assert_eq!(
                root_ctx.registrations(),
                0,
                "the live root still holds registrations after everything under it is gone"
            );
        }
    }
    drop(finished_tx);
    watchdog.join().unwrap();
    check_callbacks(&settled, &ran_rx);
    assert_eq!(
        diagnostics::pending_deadlines(),
        deadlines_before,
        "deadlines left in the timer"
    );
}

/// Aborts the process if the step counter stalls for `STALL_LIMIT`.
fn spawn_watchdog(tree: Arc<Tree>, finished: mpsc::Receiver<()>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut last = tree.steps.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(Duration::from_secs(1))
        {
            let now = tree.steps.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > STALL_LIMIT {
                eprintln!(
                    "stress: no operation completed in {STALL_LIMIT:?} after {now} steps: \
                     the tree is deadlocked (or the machine is stalled). Aborting."
                );
                std::process::abort();
            }
        }
    })
}

/// Cancels the root (it may be cancelled already: only the first counts),
/// then every context under it must report done.
fn check_root_cancel_reaches_everything(tree: &Tree, root_cancel: &CancelHandle) {
    let live_before = tree
        .contexts
        .iter()
        .filter(|slot| {
            let slot = slot.lock().unwrap();
            slot.as_ref()
                .is_some_and(|row| row.under_root && !row.ctx.is_done())
        })
        .count();
    eprintln!("stress: cancelling the root with {live_before} live contexts held under it");
    root_cancel.cancel();
    assert!(tree.root.ctx.is_done());
    for slot in &tree.contexts {
        if let Some(row) = &*slot.lock().unwrap() {
            if row.under_root {
                assert!(
                    row.ctx.is_done(),
                    "{:?} is under the cancelled root but live",
                    row.ctx
                );
                assert_eq!(row.ctx.wait_timeout(Duration::ZERO), row.ctx.err());
            }
        }
    }
    for slot in &tree.handles {
        if let Some((ctx, handle)) = &*slot.lock().unwrap() {
            handle.cancel();
            assert!(
                ctx.is_done(),
                "{ctx:?} is live after its handle cancelled it"
            );
        }
    }
}

fn release_everything(tree: &Tree) {
    for slot in &tree.handles {
        drop(slot.lock().unwrap().take());
    }
    for slot in &tree.contexts {
        drop(slot.lock().unwrap().take());
    }
}

/// Each callback that `stop` could not prevent runs exactly once; none of
/// the others ever runs.
fn check_callbacks(settled: &[Settled], ran: &mpsc::Receiver<()>) {
    let expected: usize = settled.iter().map(|s| s.expected).sum();
    for received in 0..expected {
        ran.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "only {received} of {expected} committed after_func callbacks ran within 30 s"
                )
            });
    }
    for (index, callback) in settled.iter().enumerate() {
        let runs = callback.runs.load(Ordering::SeqCst);
        assert_eq!(
            runs, callback.expected,
            "after_func #{index} ran {runs} times"
        );
    }
}

#[test]
fn always_on_ending_with_root_cancel() {
    run(4, 125_000, 0x5EED_0001, End::CancelRoot);
}

#[test]
fn always_on_ending_with_release() {
    run(4, 125_000, 0x5EED_0002, End::ReleaseAll);
}

#[test]
#[ignore = "ten million steps: run in release mode from .ci/soak.sh"]
fn ten_million_operations() {
    run(4, 1_250_000, 0x5EED_0003, End::CancelRoot);
    run(4, 1_250_000, 0x5EED_0004, End::ReleaseAll);
}
