//! ctxkit and tokio-util's `CancellationToken` on the hot paths Go measures.
//!
//! The first half mirrors Go's `src/context/benchmark_test.go` (Go 1.19) one
//! benchmark to one: each criterion id is Go's name without `Benchmark`,
//! then `/ctxkit` or `/tokio-util`, so that `bench/compare.sh` can pair the
//! three. The second half adds what Go's file leaves out: child create +
//! cancel, the wake-up of 10,000 tasks awaiting one context, and the heap
//! bytes a live child context costs (printed as `bytes-per-live-child` lines).
//!
//! Parallel benchmarks run on `available_parallelism()` threads, as Go's
//! `RunParallel` runs on `GOMAXPROCS` goroutines, and report wall time per
//! operation, as Go does.

use criterion::{black_box, Criterion};
use ctxkit::{CancelHandle, Context};
use futures::FutureExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    common_parent_cancel(&mut c);
    with_timeout(&mut c);
    move_deadline(&mut c);
    cancel_tree(&mut c);
    check_canceled(&mut c);
    context_cancel_done(&mut c);
    deep_value(&mut c);
    child_create_cancel(&mut c);
    merge(&mut c);
    fan_out_wake(&mut c);
    c.final_summary();
    bytes_per_live_child();
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `iters` calls of `op` split over `threads()` threads and returns the
/// wall time from the first thread starting work to the last finishing:
/// Go's `RunParallel`. Thread start-up and join are outside the timing.
fn run_parallel(iters: u64, op: impl Fn() + Sync) -> Duration {
    let threads = threads() as u64;
    let start_line = Barrier::new(threads as usize);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let share = iters / threads + u64::from(index < iters % threads);
                let (op, start_line) = (&op, &start_line);
                scope.spawn(move || {
                    start_line.wait();
                    let start = Instant::now();
                    for _ in 0..share {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first_start = spans.iter().map(|span| span.0).min();
    let last_end = spans.iter().map(|span| span.1).max();
    last_end.unwrap() - first_start.unwrap()
}

/// Go's `for i := 0; i < 100; i++ { x /= x + 1 }`: work between derive and
/// cancel that the compiler cannot remove.
fn spin(mut x: i64) -> i64 {
    for _ in 0..100 {
        x = black_box(x);
        x /= x + 1;
    }
    x
}

// ---------------------------------------------------------------------------
// Go's benchmark_test.go
// ---------------------------------------------------------------------------

/// Go's key "key" with value "value": ours are keyed by type.
struct SharedKey(&'static str);

/// Derive a child of a shared parent, read a value through it, cancel it:
/// on every thread at once, so the parent's registry is contended.
fn common_parent_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("CommonParentCancel");
    group.bench_function("ctxkit", |b| {
        let root = Context::background().with_value(SharedKey("value"));
        let (shared, _shared_cancel) = root.with_cancel();
        b.iter_custom(|iters| {
            run_parallel(iters, || {
                let (ctx, cancel) = shared.with_cancel();
                assert_eq!(ctx.value::<SharedKey>().map(|k| k.0), Some("value"));
                let x = spin(0);
                cancel.cancel();
                black_box(spin(x));
            })
        });
    });
    group.bench_function("tokio-util", |b| {
        let shared = CancellationToken::new();
        b.iter_custom(|iters| {
            run_parallel(iters, || {
                let token = shared.child_token();
                let x = spin(0);
                token.cancel();
                black_box(spin(x));
            })
        });
    });
    group.finish();
}

/// Ten timeouts derived and cancelled per operation, on every thread, while
/// `concurrency` other timeouts stay pending. tokio-util has no deadlines.
fn with_timeout(c: &mut Criterion) {
    for concurrency in [40, 4_000, 400_000] {
        let mut group = c.benchmark_group(format!("WithTimeout/concurrency={concurrency}"));
        // Created on first use (criterion calls the closure once per
        // sample), cancelled when dropped after the group.
        let mut outstanding: Option<Vec<Vec<CancelHandle>>> = None;
        group.bench_function("ctxkit", |b| {
            outstanding.get_or_insert_with(|| pending_timeouts(concurrency));
            b.iter_custom(|iters| {
                run_parallel(iters, || {
                    let root = Context::background();
                    let handles: [CancelHandle; 10] =
                        std::array::from_fn(|_| root.with_timeout(Duration::from_secs(3600)).1);
                    for handle in &handles {
                        handle.cancel();
                    }
                })
            });
        });
        group.finish();
        drop(outstanding);
    }
}

/// Beside `WithTimeout/concurrency=4000`: ten moves of a deadline per
/// operation, on every thread (each moving its own context's, alternately
/// later and earlier), with 4,000 other timeouts pending. Go cannot move a
/// deadline: its side cancels the context and derives a new timeout from the
/// same parent, ten times.
fn move_deadline(c: &mut Criterion) {
    thread_local! {
        static MOVED: (Context, CancelHandle) =
            Context::background().with_timeout(Duration::from_secs(3600));
    }
    let mut group = c.benchmark_group("MoveDeadline/concurrency=4000");
    let mut outstanding: Option<Vec<Vec<CancelHandle>>> = None;
    group.bench_function("ctxkit", |b| {
        outstanding.get_or_insert_with(|| pending_timeouts(4_000));
        b.iter_custom(|iters| {
            run_parallel(iters, || {
                MOVED.with(|(_, handle)| {
                    for step in 0..10 {
                        let timeout = Duration::from_secs(3600 + step % 2);
                        assert!(handle.set_timeout(black_box(timeout)));
                    }
                })
            })
        });
    });
    group.finish();
    drop(outstanding);
}

/// `concurrency` live one-hour timeouts, created from every thread as Go
/// creates them from every P. Dropping the result cancels them all.
fn pending_timeouts(concurrency: usize) -> Vec<Vec<CancelHandle>> {
    let per_thread = concurrency / threads();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads())
            .map(|_| {
                scope.spawn(move || {
                    (0..per_thread)
                        .map(|_| {
                            Context::background()
                                .with_timeout(Duration::from_secs(3600))
                                .1
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

/// Go's `buildContextTree`: a chain of `depth` cancellable contexts whose
/// cancel functions are discarded (`detach`, as Go's `_`), then dropped.
/// Go passes `root` by value for free; so the chain starts from the borrowed
/// root rather than from a clone of it (a clone and its drop would be two
/// reference-count operations that Go's version does not have).
fn build_context_tree(root: &Context, depth: usize) {
    let mut ctx: Option<Context> = None;
    for _ in 0..depth {
        let (child, cancel) = ctx.as_ref().unwrap_or(root).with_cancel();
        cancel.detach();
        ctx = Some(child);
    }
}

/// tokio-util's nearest form of `buildContextTree`: each child token replaces
/// its parent, as `root, _ = WithCancel(root)` does, starting from the
/// borrowed root as above.
fn build_token_tree(root: &CancellationToken, depth: usize) {
    let mut token: Option<CancellationToken> = None;
    for _ in 0..depth {
        token = Some(token.as_ref().unwrap_or(root).child_token());
    }
}

fn cancel_tree(c: &mut Criterion) {
    for depth in [1, 10, 100, 1000] {
        let mut group = c.benchmark_group(format!("CancelTree/depth={depth}/Root=Background"));
        group.bench_function("ctxkit", |b| {
            b.iter(|| build_context_tree(&Context::background(), depth))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("CancelTree/depth={depth}/Root=OpenCanceler"));
        group.bench_function("ctxkit", |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                build_context_tree(&ctx, depth);
                cancel.cancel();
            })
        });
        group.bench_function("tokio-util", |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                build_token_tree(&root, depth);
                root.cancel();
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("CancelTree/depth={depth}/Root=ClosedCanceler"));
        group.bench_function("ctxkit", |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                cancel.cancel();
                build_context_tree(&ctx, depth);
            })
        });
        group.bench_function("tokio-util", |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                root.cancel();
                build_token_tree(&root, depth);
            })
        });
        group.finish();
    }
}

/// Checking a cancelled context. Go's `Done` row is a non-blocking receive
/// on the done channel; the Rust form of that question is `is_done()` (and
/// `is_cancelled()`), so both rows read the same state two ways.
fn check_canceled(c: &mut Criterion) {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let token = CancellationToken::new();
    token.cancel();

    let mut group = c.benchmark_group("CheckCanceled/Err");
    group.bench_function("ctxkit", |b| b.iter(|| black_box(&ctx).err()));
    group.bench_function("tokio-util", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.finish();

    let mut group = c.benchmark_group("CheckCanceled/Done");
    group.bench_function("ctxkit", |b| b.iter(|| black_box(&ctx).is_done()));
    group.bench_function("tokio-util", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.finish();
}

/// A non-blocking done check on one live context from every thread at once.
fn context_cancel_done(c: &mut Criterion) {
    let mut group = c.benchmark_group("ContextCancelDone");
    group.bench_function("ctxkit", |b| {
        let (ctx, _cancel) = Context::background().with_cancel();
        b.iter_custom(|iters| {
            run_parallel(iters, || {
                black_box(black_box(&ctx).is_done());
            })
        });
    });
    group.bench_function("tokio-util", |b| {
        let token = CancellationToken::new();
        b.iter_custom(|iters| {
            run_parallel(iters, || {
                black_box(black_box(&token).is_cancelled());
            })
        });
    });
    group.finish();
}

/// Go keys its values by `i`; ours are keyed by type, so key `i` is the type
/// `Key<i>`, and Go's missing key `-1` is `Key<1000>`.
struct Key<const N: usize>(usize);

fn add_value<const N: usize>(ctx: &Context) -> Context {
    ctx.with_value(Key::<N>(N))
}

type AddValue = fn(&Context) -> Context;

/// `add_value::<N>` for N in 0..100: rows of ten, `tens * 10 + unit`.
macro_rules! add_value_table {
    ($($tens:literal)*; $units:tt) => {
        [$(add_value_table!(@row $tens $units)),*]
    };
    (@row $tens:literal [$($unit:literal)*]) => {
        [$(add_value::<{ $tens * 10 + $unit }> as AddValue),*]
    };
}

const ADD_VALUE: [[AddValue; 10]; 10] =
    add_value_table!(0 1 2 3 4 5 6 7 8 9; [0 1 2 3 4 5 6 7 8 9]);

/// A chain of `depth` value layers with distinct keys: Go's
/// `for i := 0; i < depth; i++ { ctx = WithValue(ctx, i, i) }`.
fn deep_values(depth: usize) -> Context {
    ADD_VALUE
        .iter()
        .flatten()
        .take(depth)
        .fold(Context::background(), |ctx, add| add(&ctx))
}

fn miss(ctx: &Context) -> bool {
    ctx.value::<Key<1000>>().is_none()
}

/// A missed value lookup under `depth` value layers, on the benchmark's own
/// thread, and in a freshly spawned task (Go spawns a goroutine; the nearest
/// Rust form is a task on a current-thread runtime, which like Go's P runs
/// the new task on the same thread).
fn deep_value(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    for depth in [10, 20, 30, 50, 100] {
        let ctx = deep_values(depth);
        assert!(ctx.value::<Key<0>>().is_some_and(|k| k.0 == 0));
        assert!(miss(&ctx));

        let mut group = c.benchmark_group(format!("DeepValueNewGoRoutine/depth={depth}"));
        group.bench_function("ctxkit", |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ctx = ctx.clone();
                        let task = tokio::spawn(async move { miss(&ctx) });
                        black_box(task.await.expect("the lookup task runs"));
                    }
                    start.elapsed()
                })
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("DeepValueSameGoRoutine/depth={depth}"));
        group.bench_function("ctxkit", |b| b.iter(|| miss(black_box(&ctx))));
        group.finish();
    }
}

// ---------------------------------------------------------------------------
// Beyond Go's file
// ---------------------------------------------------------------------------

/// Derive a child of a live cancellable parent and cancel it, on one thread.
fn child_create_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("ChildCreateCancel");
    group.bench_function("ctxkit", |b| {
        let (parent, _cancel) = Context::background().with_cancel();
        b.iter(|| {
            let (child, cancel) = parent.with_cancel();
            cancel.cancel();
            child
        })
    });
    group.bench_function("tokio-util", tokio_child_create_cancel);
    group.finish();
}

/// Merge: a context ended by either of two live parents, cancelled; Go's
/// side is the `AfterFunc` glue Go code writes for it (`WithCancelCause` of
/// one, `AfterFunc` on the other). MergeBackground: a merge with
/// `background()`, beside a plain `with_cancel` (Go: `WithCancel`;
/// tokio-util: `child_token()`).
fn merge(c: &mut Criterion) {
    let (first, _a) = Context::background().with_cancel();
    let (second, _b) = Context::background().with_cancel();
    let mut group = c.benchmark_group("Merge");
    group.bench_function("ctxkit", |b| {
        b.iter(|| {
            let (merged, cancel) = first.merge(&second);
            cancel.cancel();
            merged
        })
    });
    group.finish();

    let mut group = c.benchmark_group("MergeBackground");
    let background = Context::background();
    group.bench_function("ctxkit", |b| {
        b.iter(|| {
            let (merged, cancel) = first.merge(&background);
            cancel.cancel();
            merged
        })
    });
    group.bench_function("tokio-util", tokio_child_create_cancel);
    group.finish();
}

/// tokio-util's side of ChildCreateCancel and MergeBackground.
fn tokio_child_create_cancel(b: &mut criterion::Bencher<'_>) {
    let parent = CancellationToken::new();
    b.iter(|| {
        let child = parent.child_token();
        child.cancel();
        child
    })
}

const FAN_OUT_TASKS: usize = 10_000;

/// Counts tasks in and out of one fan-out, and stamps the last wake-up.
#[derive(Default)]
struct FanOut {
    registered: AtomicUsize,
    all_registered: Notify,
    woken: AtomicUsize,
    last_woken_at: OnceLock<Instant>,
    all_woken: Notify,
}

impl FanOut {
    /// Awaits `done` in a task: polls it once so that its waker is
    /// registered before the cancel is timed, then awaits it.
    async fn wait_in_task<F: Future>(&self, done: F) {
        let mut done = pin!(done);
        assert!(done.as_mut().now_or_never().is_none(), "not cancelled yet");
        if self.registered.fetch_add(1, Ordering::AcqRel) + 1 == FAN_OUT_TASKS {
            self.all_registered.notify_one();
        }
        done.await;
        if self.woken.fetch_add(1, Ordering::AcqRel) + 1 == FAN_OUT_TASKS {
            self.last_woken_at
                .set(Instant::now())
                .expect("one last task");
            self.all_woken.notify_one();
        }
    }

    /// Spawns the waiting tasks (`spawn_waiter` spawns one), then times
    /// `cancel` until the last of them has woken.
    async fn time(
        spawn_waiter: impl Fn(Arc<FanOut>) -> tokio::task::JoinHandle<()>,
        cancel: impl FnOnce(),
    ) -> Duration {
        let fan_out = Arc::new(FanOut::default());
        let tasks: Vec<_> = (0..FAN_OUT_TASKS)
            .map(|_| spawn_waiter(fan_out.clone()))
            .collect();
        fan_out.all_registered.notified().await;
        let start = Instant::now();
        cancel();
        fan_out.all_woken.notified().await;
        let elapsed = *fan_out.last_woken_at.get().expect("stamped") - start;
        for task in tasks {
            task.await.expect("the waiting task finishes");
        }
        elapsed
    }
}

/// 10,000 tasks on a multi-thread runtime await one context; the time from
/// cancel until the last of them has run.
fn fan_out_wake(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads())
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("FanOutWake");
    group.sample_size(10);
    group.bench_function("ctxkit", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    runtime.block_on(async {
                        let (ctx, cancel) = Context::background().with_cancel();
                        let spawn = |fan_out: Arc<FanOut>| {
                            let ctx = ctx.clone();
                            tokio::spawn(async move { fan_out.wait_in_task(ctx.done()).await })
                        };
                        FanOut::time(spawn, || cancel.cancel()).await
                    })
                })
                .sum()
        })
    });
    group.bench_function("tokio-util", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    runtime.block_on(async {
                        let token = CancellationToken::new();
                        let spawn = |fan_out: Arc<FanOut>| {
                            let token = token.clone();
                            tokio::spawn(
                                async move { fan_out.wait_in_task(token.cancelled()).await },
                            )
                        };
                        FanOut::time(spawn, || token.cancel()).await
                    })
                })
                .sum()
        })
    });
    group.finish();
}

/// Heap bytes per live child: derive many children of one live parent,
/// keep them all, and divide the heap growth by their number.
fn bytes_per_live_child() {
    const CHILDREN: usize = 100_000;
    let (parent, _cancel) = Context::background().with_cancel();
    let mut children: Vec<(Context, CancelHandle)> = Vec::with_capacity(CHILDREN);
    let ctxkit = count_heap(|| children.extend((0..CHILDREN).map(|_| parent.with_cancel())));
    assert_eq!(parent.registrations(), CHILDREN);
    drop(children);

    let parent = CancellationToken::new();
    let mut children: Vec<CancellationToken> = Vec::with_capacity(CHILDREN);
    let tokio_util = count_heap(|| children.extend((0..CHILDREN).map(|_| parent.child_token())));
    drop(children);

    for (name, heap) in [("ctxkit", ctxkit), ("tokio-util", tokio_util)] {
        println!(
            "bytes-per-live-child {name} requested={:.1} malloc={:.1}",
            heap.requested as f64 / CHILDREN as f64,
            heap.malloc as f64 / CHILDREN as f64,
        );
    }
}

// ---------------------------------------------------------------------------
// Heap accounting
// ---------------------------------------------------------------------------

/// Net heap growth over a stretch of code.
#[derive(Clone, Copy, Debug)]
struct Heap {
    /// Bytes asked of the allocator.
    requested: isize,
    /// Bytes glibc's malloc spends on them: each block rounded up to its
    /// chunk size, header included. Go's figure counts its size classes
    /// likewise, so this is the one to compare with Go.
    malloc: isize,
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static MALLOC: AtomicIsize = AtomicIsize::new(0);

/// Runs `f` and returns the heap it left allocated. Only one thread may
/// count at a time, and `f` should not spawn threads that allocate.
fn count_heap(f: impl FnOnce()) -> Heap {
    let before = (
        REQUESTED.load(Ordering::SeqCst),
        MALLOC.load(Ordering::SeqCst),
    );
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    Heap {
        requested: REQUESTED.load(Ordering::SeqCst) - before.0,
        malloc: MALLOC.load(Ordering::SeqCst) - before.1,
    }
}

/// glibc's chunk size for a request of `size` bytes (64-bit): the size plus
/// an 8-byte header, rounded up to 16, at least 32.
fn malloc_chunk(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

/// The system allocator, counting net bytes while `COUNTING` is set. The
/// flag keeps the counters (and their cache-line traffic) out of the timed
/// benchmarks.
struct CountingAllocator;

impl CountingAllocator {
    fn record(&self, size: usize, sign: isize) {
        if COUNTING.load(Ordering::Relaxed) {
            REQUESTED.fetch_add(sign * size as isize, Ordering::Relaxed);
            MALLOC.fetch_add(sign * malloc_chunk(size), Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record(layout.size(), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record(layout.size(), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.record(layout.size(), -1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record(layout.size(), -1);
        self.record(new_size, 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
