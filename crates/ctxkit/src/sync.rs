//! The synchronisation primitives the core is built on.
//!
//! Every lock, atomic, condition variable and thread operation of the core
//! goes through this module, so that `RUSTFLAGS="--cfg loom"` swaps them for
//! loom's model-checked versions, the reference counts of context nodes
//! (`node_ref.rs`) included. `Arc` is always `std`'s: it serves causes,
//! values and the patterns' shared state, outside the models.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

pub(crate) use std::sync::Arc;

pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, yield_now, Thread};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, park, park_timeout, yield_now, Thread};

    /// loom has no timed park; a model treats a timed park as a plain one
    /// that may return spuriously, which every caller already handles.
    #[cfg(loom)]
    pub(crate) fn park_timeout(_: std::time::Duration) {
        loom::thread::yield_now();
    }
}

/// Locks `mutex`, ignoring poison.
///
/// The core never runs user code while it holds one of its locks, so a panic
/// can only poison a lock between two of our own statements, never half-way
/// through an invariant. Ignoring poison keeps one panicking thread from
/// breaking every context that shares the lock.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a `std` mutex, ignoring poison for the same reason as [`lock`].
///
/// For the process-wide timer and callback pool, which run on real threads
/// and stay outside loom models.
pub(crate) fn lock_std<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
