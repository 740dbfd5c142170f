//! The coarse clock of provenance records: when a context was made and when
//! its cancellation started, to a few milliseconds, for one relaxed load.
//!
//! Every derivation and every cancellation that starts one reads the time
//! (see [`provenance`](crate::provenance)). The cheapest clock the OS has,
//! Linux's `CLOCK_MONOTONIC_COARSE` through the vDSO, costs 5 to 7 ns a
//! read on the machines BENCHMARKS.md was measured on: half of what a whole
//! derivation cost before provenance. So a thread, `ctxkit-clock`, keeps the
//! time in one word, in ticks of 2^22 ns (about 4.2 ms), and readers load
//! the word.
//!
//! The thread starts on the first read and stops when nothing has read the
//! word for about a second: while contexts are being made it wakes once a
//! tick (about 240 times a second), and a quiet process has no wake-ups at
//! all. The first read after it stopped reads the OS clock itself and wakes
//! it. Where no thread can be started, every read reads the OS clock.
//!
//! # How late it can be
//!
//! The word lags the OS clock by up to a tick while the thread runs on time.
//! When the whole process is starved of CPU (an overloaded machine, a CPU
//! quota), the thread may run late and the word lags by as long: times read
//! meanwhile are early, ages short. A child of `fork()` has no ticking
//! thread (only the forking thread survives a fork), so a fork handler
//! stops the word in the child, and there every read reads the OS clock.
//! Provenance is for diagnostics: none of this touches deadlines, which the
//! timer keeps with `Instant`.
//!
//! # The word
//!
//! `ticks << 1 | READ`, or `STOPPED` (0) when no thread ticks. The thread
//! stores each tick with `READ` clear; the first reader after a tick sets it
//! (one compare-and-swap per tick, not per read), which is how the thread
//! knows it is still wanted without a store per read. All orderings are
//! relaxed: the word carries only its own value, and the thread's park and
//! unpark order the restart (see [`Word`]).

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// One tick, in nanoseconds as a power of two: 2^22 ns, about 4.2 ms (the
/// coarse clock's own resolution is 1 to 4 ms), so that a `u32` of ticks
/// spans about 208 days.
const TICK_SHIFT: u32 = 22;

/// Set in the word by the first read after a tick.
const READ: u64 = 1;

/// The word when no thread ticks it. A real time never reads as this: the
/// monotonic clock is past its first tick long before any program runs.
const STOPPED: u64 = 0;

/// Ticks without a read after which the thread stops: about a second.
const IDLE_TICKS: u32 = 240;

/// Now, in ticks (wrapping): the word, or the OS clock while no thread
/// ticks.
#[inline]
pub(crate) fn now() -> u32 {
    #[cfg(not(loom))]
    if let Some(ticks) = CLOCK.read() {
        return ticks as u32;
    }
    now_stopped() as u32
}

/// Ticks as a duration.
pub(crate) fn duration(ticks: u32) -> Duration {
    Duration::from_nanos(u64::from(ticks) << TICK_SHIFT)
}

/// The protocol of the clock word, apart from the thread and the OS clock so
/// that loom can check it (`clock::loom_tests`).
///
/// Invariants: a read never returns `STOPPED`'s zero time; once the thread
/// has stopped, the one read that restarts the word wakes it (a restart is
/// a compare-and-swap from `STOPPED`, so exactly one reader wins it); and
/// the thread stops only if no read marked the word since its last tick
/// (its stop is a compare-and-swap from the unmarked tick it stored).
#[cfg_attr(not(loom), repr(align(128)))] // Its own cache line (and the adjacent one x86 prefetches).
pub(crate) struct Word(AtomicU64);

impl Word {
    #[cfg(not(loom))]
    const fn new() -> Word {
        Word(AtomicU64::new(STOPPED))
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Word {
        Word(AtomicU64::new(STOPPED))
    }

    /// The time in ticks, or `None` if no thread ticks: then read the OS
    /// clock and call [`restart`](Word::restart).
    #[inline]
    pub(crate) fn read(&self) -> Option<u64> {
        let word = self.0.load(Ordering::Relaxed);
        if word & READ != 0 {
            return Some(word >> 1);
        }
        self.read_unmarked(word)
    }

    /// The first read since a tick: marks the word, so the thread knows it
    /// is still wanted. If the word changed meanwhile (a new tick, or a
    /// stop), the mark is not made, and the value read is still a time of
    /// this tick: the next read marks the new tick, or restarts.
    #[cold]
    #[inline(never)]
    fn read_unmarked(&self, word: u64) -> Option<u64> {
        if word == STOPPED {
            return None;
        }
        let _ = self
            .0
            .compare_exchange(word, word | READ, Ordering::Relaxed, Ordering::Relaxed);
        Some(word >> 1)
    }

    /// After a read found the word stopped, puts `now` (from the OS) in it.
    /// True for the one reader that restarted it, which must then wake the
    /// thread.
    pub(crate) fn restart(&self, now: u64) -> bool {
        self.0
            .compare_exchange(
                STOPPED,
                now << 1 | READ,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// The thread's tick: stores `now`, unmarked. True if the word was read
    /// since the previous tick.
    pub(crate) fn tick(&self, now: u64) -> bool {
        self.0.swap(now << 1, Ordering::Relaxed) & READ != 0
    }

    /// The thread, idle since its tick of `now`: stops the word unless a
    /// read marked it meanwhile. True if stopped: the thread must then park
    /// until [`is_stopped`](Word::is_stopped) is false.
    pub(crate) fn stop(&self, now: u64) -> bool {
        self.0
            .compare_exchange(now << 1, STOPPED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// True while no thread ticks and no reader has restarted the word.
    pub(crate) fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOPPED
    }

    /// For a restart whose thread could not start: every read then reads
    /// the OS clock.
    fn give_up(&self) {
        self.0.store(STOPPED, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
static CLOCK: Word = Word::new();

/// The ticking thread, once started; `None` if it could not be.
#[cfg(not(loom))]
static TICKER: std::sync::OnceLock<Option<std::thread::Thread>> = std::sync::OnceLock::new();

/// Set in a child of `fork()`, which has no ticking thread: the word stays
/// stopped there, and every read reads the OS clock.
#[cfg(not(loom))]
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A read that found the word stopped: the OS clock, and the thread woken
/// (started the first time).
#[cold]
#[inline(never)]
fn now_stopped() -> u64 {
    let now = os_ticks();
    #[cfg(not(loom))]
    if !matches!(TICKER.get(), Some(None)) && !FORKED.load(Ordering::Relaxed) && CLOCK.restart(now)
    {
        match TICKER.get_or_init(start) {
            Some(thread) => thread.unpark(),
            None => CLOCK.give_up(),
        }
    }
    now
}

/// Starts the ticking thread: a small stack, as it only loops.
#[cfg(not(loom))]
fn start() -> Option<std::thread::Thread> {
    stop_in_forked_children();
    std::thread::Builder::new()
        .name("ctxkit-clock".into())
        .stack_size(64 * 1024)
        .spawn(run)
        .ok()
        .map(|handle| handle.thread().clone())
}

/// The ticking thread's loop: a tick every 2^22 ns; parked after a second
/// without reads, until a read restarts the word and wakes it.
#[cfg(not(loom))]
fn run() {
    let mut idle = 0;
    loop {
        std::thread::sleep(duration(1));
        let now = os_ticks();
        if CLOCK.tick(now) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        idle = 0;
        if CLOCK.stop(now) {
            // A restart stores before it unparks, and an unpark before our
            // park makes the park return at once: no wake-up is lost.
            while CLOCK.is_stopped() {
                std::thread::park();
            }
        }
    }
}

/// Registers [`forked`] to run in every child of `fork()` from now on.
#[cfg(all(unix, not(loom)))]
fn stop_in_forked_children() {
    extern "C" {
        fn pthread_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
        ) -> std::os::raw::c_int;
    }
    // SAFETY: `pthread_atfork` is libc's (std links it on every Unix),
    // declared with its C signature; it only keeps the three function
    // pointers, and ours is a plain `extern "C"` function that lives as long
    // as the program. Called once, from `TICKER`'s initialisation. If it
    // fails (out of memory), a forked child reads a frozen word: times
    // skewed, diagnostics only.
    unsafe { pthread_atfork(None, None, Some(forked)) };
}

#[cfg(all(not(unix), not(loom)))]
fn stop_in_forked_children() {}

/// In the child of a fork: stops the word for good. Two relaxed stores,
/// which is all a fork handler may safely do in a child of a threaded
/// program (no lock, no allocation).
#[cfg(all(unix, not(loom)))]
extern "C" fn forked() {
    FORKED.store(true, Ordering::Relaxed);
    CLOCK.give_up();
}

/// The OS's coarse monotonic clock, in ticks.
fn os_ticks() -> u64 {
    os_nanos() >> TICK_SHIFT
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn os_nanos() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    /// Linux's `CLOCK_MONOTONIC_COARSE`: the monotonic clock as of the last
    /// scheduler tick, read from the vDSO without a system call.
    const CLOCK_MONOTONIC_COARSE: i32 = 6;
    let mut time = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` is libc's (std links libc on Linux), declared
    // with its C signature for 64-bit Linux (`time_t` and `long` are both
    // 64-bit); it writes only the `timespec` it is given, which is valid for
    // writes. It cannot fail for a clock id the kernel has had since 2.6.32;
    // if it did, the time would read as zero, which only skews diagnostics.
    // Measured: 5 to 7 ns against 20 to 25 for `Instant::now()` on this
    // machine's VM clock (BENCHMARKS.md, "Provenance"); now read once a tick
    // and on a restart, not per derivation.
    unsafe { clock_gettime(CLOCK_MONOTONIC_COARSE, &mut time) };
    (time.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(time.tv_nsec as u64)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn os_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Plus a tick, so that no time reads as `STOPPED`'s zero.
    (EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64) + (1 << TICK_SHIFT)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The word is never ahead of the OS clock, and catches up with it.
    /// Not by a fixed time: a starved process (valgrind runs one thread at
    /// a time) may see the thread tick late, as the module's docs say.
    #[test]
    fn the_word_tracks_the_os_clock() {
        now(); // the thread ticks from here
        let target = os_ticks() as u32 + 2;
        let limit = Instant::now() + Duration::from_secs(30);
        loop {
            let word = now();
            let os = os_ticks() as u32;
            assert!(
                os.wrapping_sub(word) as i32 >= 0,
                "the word ({word}) is ahead of the OS clock ({os})"
            );
            if word.wrapping_sub(target) as i32 >= 0 {
                return;
            }
            assert!(
                Instant::now() < limit,
                "the word stayed at {word}, the OS clock is at {os}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_stopped_word_restarts_once_and_reads_marked() {
        let word = Word(AtomicU64::new(STOPPED));
        assert_eq!(word.read(), None);
        assert!(word.restart(7));
        assert!(!word.restart(8), "one reader restarts");
        assert_eq!(word.read(), Some(7));
        assert!(word.tick(9), "the restart counts as a read");
        assert!(!word.tick(10), "no read since the tick of 9");
        assert_eq!(word.read(), Some(10));
        assert!(!word.stop(10), "read since the tick: keeps ticking");
        assert!(word.tick(11), "the read of 10 counts");
        assert!(word.stop(11), "idle since the tick of 11: stops");
        assert!(word.is_stopped());
        assert_eq!(word.read(), None);
    }

    /// Only the forking thread survives a fork: a child's reads must not
    /// keep returning the word as the ticking thread last left it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_forked_child_reads_a_clock_that_moves() {
        extern "C" {
            fn fork() -> i32;
            fn _exit(code: i32) -> !;
            fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        }
        // The thread ticks, its fork handler registered.
        now();
        // SAFETY: fork(2) has no arguments. The child calls only what is
        // safe after a fork in a threaded program: the clock's reads (a
        // load, then the vDSO's clock), nanosleep and _exit.
        let pid = unsafe { fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let start = now();
            std::thread::sleep(Duration::from_millis(100));
            let moved = now().wrapping_sub(start);
            // About 24 ticks of 4.2 ms; a frozen word gives 0.
            // SAFETY: ends the child without running the parent's state's
            // destructors or the test harness.
            unsafe { _exit(if moved >= 12 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int; `pid` is our child.
        assert_eq!(unsafe { waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "the clock stood still in a forked child");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::thread;
    use loom::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A read as `clock::now` does it, waking `ticker` on a restart.
    fn read(word: &Word, ticker: &loom::thread::Thread, now: u64) {
        match word.read() {
            Some(ticks) => assert_ne!(ticks, 0, "a stopped word read as a time"),
            None => {
                if word.restart(now) {
                    ticker.unpark();
                }
            }
        }
    }

    /// The ticker stops when idle and a concurrent reader restarts it: no
    /// read sees a zero time, and the thread is always woken once a read
    /// sees the word stopped (a lost wake-up would leave it parked, and the
    /// last loop below spinning, for ever, which loom reports).
    #[test]
    fn a_stopped_ticker_is_always_woken() {
        loom::model(|| {
            let word = Arc::new(Word::new());
            let finished = Arc::new(AtomicBool::new(false));
            assert!(word.restart(1));
            let ticker = {
                let (word, finished) = (word.clone(), finished.clone());
                loom::thread::spawn(move || {
                    word.tick(2);
                    // Idle from here on (as if for a second): try to stop.
                    if word.stop(2) {
                        while word.is_stopped() {
                            thread::park();
                        }
                    }
                    finished.store(true, Ordering::Release);
                })
            };
            let reader = {
                let word = word.clone();
                let ticker = ticker.thread().clone();
                loom::thread::spawn(move || read(&word, &ticker, 3))
            };
            reader.join().unwrap();
            // Reads until the ticker has finished or a read sees the word
            // stopped (loads may be stale for a while, not for ever): that
            // read restarts the word and must wake the ticker.
            while !finished.load(Ordering::Acquire) {
                if word.read().is_none() {
                    if word.restart(4) {
                        ticker.thread().unpark();
                    }
                    break;
                }
                loom::thread::yield_now();
            }
            ticker.join().unwrap();
        });
    }
}
