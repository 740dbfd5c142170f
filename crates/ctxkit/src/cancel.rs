//! The cancellation scope: state, registrations, and propagation down the tree.
//!
//! A [`Scope`] lives inside the [`Node`] of every `with_cancel` /
//! `with_deadline` context. It is the only place where cancellation state is
//! kept; value and `without_cancel` layers point at the nearest scope above
//! them, or at none.
//!
//! # Invariants
//!
//! - `status` goes from `LIVE` to an `Error` exactly once, and only while
//!   `inner` is locked; the same critical section turns `inner` from
//!   `Live(registry)` into `Done(cause)`. So under the lock, `status` and
//!   `inner` agree, and anything that registers under the lock either lands
//!   in the registry before the drain or sees the scope done.
//! - No lock is held while another is taken: cancelling takes one scope's
//!   lock at a time, then the parent's or the timer's to deregister. Hence no
//!   lock order, and no deadlock however cancels, derivations and drops
//!   interleave.
//! - No foreign code (wakers, callbacks, drops of user values) runs while a
//!   lock is held.
//! - Only a holder of a strong reference cancels a scope (the parent's drain
//!   and the timer upgrade their weak ones first). So once the last strong
//!   reference is gone, `release` runs alone: no cancel can race it.

use crate::context::Node;
use crate::deadline::Deadline;
use crate::error::{Cause, Error};
use crate::node_ref::NodeRef;
use crate::registry::{Registration, Registry};
use crate::sync::{lock, AtomicU32, AtomicU8, Mutex, Ordering};
use crate::{executor, timer};
use std::any::Any;

const LIVE: u8 = 0;
const CANCELED: u8 = 1;
const DEADLINE_EXCEEDED: u8 = 2;
/// Or-ed into a done status when the scope has a cause of its own rather than
/// its error's default one: a scope that ended with the default cause can be
/// inherited from without taking its lock.
const CUSTOM_CAUSE: u8 = 4;

/// The cancellation state of one `with_cancel` / `with_deadline` context.
pub(crate) struct Scope {
    /// `LIVE`, or the `Error` that ended the scope. The only thing the hot path
    /// reads: one `Acquire` load.
    status: AtomicU8,
    /// Whether `deadline` is this scope's own (it set a timer) rather than
    /// inherited from an ancestor.
    own_deadline: bool,
    /// The earliest of this scope's deadline and its ancestors'.
    deadline: Deadline,
    /// This scope's key in its parent scope's registry. Written once by
    /// `attach`, before the node is shared with any other thread (sharing
    /// orders it); the atomic is only for `Sync`.
    key_in_parent: AtomicU32,
    inner: Mutex<Inner>,
}

pub(crate) enum Inner {
    Live(Registry),
    /// `None` stands for the error's default cause (`Error::as_cause`), so
    /// that cancelling does not touch that process-wide `Arc`'s count.
    Done(Option<Cause>),
}

impl Scope {
    #[inline]
    pub(crate) fn new(deadline: Deadline, own_deadline: bool) -> Scope {
        Scope {
            status: AtomicU8::new(LIVE),
            own_deadline,
            deadline,
            key_in_parent: AtomicU32::new(u32::MAX),
            inner: Mutex::new(Inner::Live(Registry::new())),
        }
    }

    /// A scope born ended with `err` and its default cause: the child of a
    /// parent that [`ended_with_default_cause`](Scope::ended_with_default_cause).
    /// It needs no registration and no timer entry, and never takes a lock.
    #[inline]
    pub(crate) fn new_done(deadline: Deadline, own_deadline: bool, err: Error) -> Scope {
        Scope {
            status: AtomicU8::new(status_of(err)),
            own_deadline,
            deadline,
            key_in_parent: AtomicU32::new(u32::MAX),
            inner: Mutex::new(Inner::Done(None)),
        }
    }

    /// The error this scope ended with, if it ended with that error's default
    /// cause; `None` while live or after a custom cause.
    #[inline]
    pub(crate) fn ended_with_default_cause(&self) -> Option<Error> {
        // Acquire, as in `err`.
        match self.status.load(Ordering::Acquire) {
            CANCELED => Some(Error::Canceled),
            DEADLINE_EXCEEDED => Some(Error::DeadlineExceeded),
            _ => None,
        }
    }

    /// The error that ended this scope, or `None` while it is live.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        // Acquire pairs with the Release store in `finish`: a reader that sees
        // the scope done also sees everything the canceller did before.
        match self.status.load(Ordering::Acquire) & !CUSTOM_CAUSE {
            LIVE => None,
            DEADLINE_EXCEEDED => Some(Error::DeadlineExceeded),
            _ => Some(Error::Canceled),
        }
    }

    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.status.load(Ordering::Acquire) != LIVE
    }

    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline
    }

    pub(crate) fn has_own_deadline(&self) -> bool {
        self.own_deadline
    }

    pub(crate) fn cause(&self) -> Option<Cause> {
        if !self.is_done() {
            return None;
        }
        let err = self.err().expect("checked done above");
        match &*lock(&self.inner) {
            Inner::Done(cause) => Some(cause.clone().unwrap_or_else(|| err.as_cause())),
            Inner::Live(_) => unreachable!("a done scope has a cause"),
        }
    }

    /// Runs `f` on the registry if the scope is live; otherwise returns the
    /// error and cause it ended with. Whatever `f` returns is dropped after
    /// the lock is released, so it may carry registrations out.
    pub(crate) fn with_registry<R>(
        &self,
        f: impl FnOnce(&mut Registry) -> R,
    ) -> Result<R, (Error, Option<Cause>)> {
        let mut inner = lock(&self.inner);
        match &mut *inner {
            Inner::Live(registry) => Ok(f(registry)),
            Inner::Done(cause) => {
                let err = self.err().expect("a done scope has an error");
                Err((err, cause.clone()))
            }
        }
    }

    /// Removes one registration if the scope is still live; the removed
    /// registration is dropped after the lock is released.
    pub(crate) fn deregister(&self, key: usize) -> Option<Registration> {
        self.with_registry(|registry| registry.remove(key))
            .ok()
            .flatten()
    }

    /// Ends the scope, returning its registrations, or `None` if it had
    /// already ended (the first cancellation wins).
    fn finish(&self, err: Error, cause: Option<Cause>) -> Option<Registry> {
        let mut inner = lock(&self.inner);
        if !matches!(*inner, Inner::Live(_)) {
            return None;
        }
        let custom = if cause.is_some() { CUSTOM_CAUSE } else { 0 };
        let Inner::Live(registry) = std::mem::replace(&mut *inner, Inner::Done(cause)) else {
            unreachable!()
        };
        let status = status_of(err) | custom;
        // Release: publishes the cause (and everything before) to `err` readers.
        self.status.store(status, Ordering::Release);
        Some(registry)
    }
}

fn status_of(err: Error) -> u8 {
    match err {
        Error::Canceled => CANCELED,
        Error::DeadlineExceeded => DEADLINE_EXCEEDED,
    }
}

/// Who is cancelling a scope: it decides whether the scope must leave its
/// parent's registry (a parent's cancellation drains that registry itself) and
/// the timer (a firing timer has already removed the entry).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Handle,
    Timer,
    Parent,
}

/// How a scope with a deadline of its own ends when the deadline comes.
pub(crate) struct Expiry {
    /// The deadline had passed when the scope was asked for: end it at once.
    pub(crate) passed: bool,
    /// `None`: `DeadlineExceeded`'s default cause.
    pub(crate) cause: Option<Cause>,
}

/// Registers a freshly built scope `node` with the nearest scope above it, or
/// ends it at once if that scope is already done or its deadline has passed.
///
/// `expiry` is given for (and only for) a scope with its own deadline.
pub(crate) fn attach(node: &NodeRef, expiry: Option<Expiry>) {
    let scope = node.scope().expect("attach takes a scope node");
    let parent = node.parent().scope_node();
    if let Some(parent) = parent {
        let parent_scope = parent.scope().expect("scope_node is a scope");
        let registered = parent_scope.with_registry(|registry| {
            let key = registry.insert(Registration::Child(NodeRef::downgrade(node)));
            // Registry keys fit in u32 (see `Registry::insert`).
            scope.key_in_parent.store(key as u32, Ordering::Relaxed);
        });
        match registered {
            Ok(()) => {}
            Err((err, cause)) => {
                // A fresh scope has no registrations: nothing to notify.
                scope.finish(err, cause);
                return;
            }
        }
    }
    let Some(Expiry { passed, cause }) = expiry else {
        return;
    };
    if passed {
        cancel(node, Error::DeadlineExceeded, cause, Origin::Timer);
        return;
    }
    let deadline = scope.deadline;
    timer::insert(deadline, node, cause);
    if scope.is_done() {
        // The parent ended us between registration and the insert above, and
        // its removal of our timer entry may have come first: take it out now.
        // (Cancel stores the status before removing; we insert before
        // loading it; the timer's lock orders the two.)
        timer::remove(deadline, node);
    }
}

/// Cancels `node` and, synchronously, every scope below it.
///
/// When this returns, the node and every descendant report done. Waiters are
/// woken and callbacks dispatched only after every scope of the subtree has
/// been marked done and every lock released, so a woken waiter observes the
/// whole subtree already cancelled. Descendants get `err` and `cause`, unless
/// they had already ended (the first cancellation wins).
pub(crate) fn cancel(node: &NodeRef, err: Error, cause: Option<Cause>, origin: Origin) {
    let scope = node.scope().expect("cancel takes a scope node");
    let Some(registry) = scope.finish(err, cause.clone()) else {
        return;
    };
    leave(node, scope, origin);
    if registry.is_empty() {
        return;
    }

    let mut wake = Wakeups::default();
    // An explicit stack rather than recursion: trees may be very deep. It
    // allocates only when there are children to descend into.
    let mut pending = Vec::new();
    let mut next = Some(registry);
    while let Some(registry) = next.take().or_else(|| pending.pop()) {
        for registration in registry.drain() {
            match registration {
                Registration::Child(child) => {
                    // A child that cannot be upgraded is being dropped: nobody
                    // can observe it, and its drop no longer touches us.
                    let Some(child) = child.upgrade() else {
                        continue;
                    };
                    let child_scope = child.scope().expect("children are scopes");
                    if let Some(grandchildren) = child_scope.finish(err, cause.clone()) {
                        leave(&child, child_scope, Origin::Parent);
                        pending.push(grandchildren);
                    }
                    // Dropping `child` here may free it: it is done, so its
                    // drop takes no lock of ours.
                }
                other => wake.push(other),
            }
        }
    }
    wake.run();
}

/// A just-ended scope leaves the structures that still point at it: the
/// timer, and its parent's registry unless the parent is the one draining it.
fn leave(node: &NodeRef, scope: &Scope, origin: Origin) {
    if scope.own_deadline && origin != Origin::Timer {
        timer::remove(scope.deadline, node);
    }
    if origin != Origin::Parent {
        deregister_from_parent(node, scope);
    }
}

fn deregister_from_parent(node: &Node, scope: &Scope) {
    if let Some(parent) = node.parent().scope_node() {
        let key = scope.key_in_parent.load(Ordering::Relaxed) as usize;
        let parent_scope = parent.scope().expect("scope_node is a scope");
        drop(parent_scope.deregister(key));
    }
}

/// Called when the last reference to a scope node goes away: a live scope
/// leaves its parent and the timer. Nothing can observe it any more, so it is
/// not cancelled; its registrations can only be of its own (dead) kind.
#[inline]
pub(crate) fn release(node: &Node, scope: &Scope) {
    if !scope.own_deadline && node.parent().scope_node().is_none() {
        return; // nothing points at this scope
    }
    // No lock: nothing can cancel us any more (see the invariants above),
    // and the last owner's Acquire in `node_ref` orders every cancel that
    // came before: the status is final. A scope that ended has left
    // everything already.
    if scope.is_done() {
        return;
    }
    if scope.own_deadline {
        timer::remove(scope.deadline, node);
    }
    deregister_from_parent(node, scope);
}

/// Notifications collected during a cancel, delivered after all locks are
/// released. A panicking waker does not stop the others; the first panic is
/// re-raised once every one has been delivered.
#[derive(Default)]
struct Wakeups {
    registrations: Vec<Registration>,
}

impl Wakeups {
    fn push(&mut self, registration: Registration) {
        self.registrations.push(registration);
    }

    fn run(self) {
        let mut first_panic: Option<Box<dyn Any + Send>> = None;
        for registration in self.registrations {
            let delivered =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match registration {
                    Registration::Thread(thread) => thread.unpark(),
                    Registration::Task(waker) => waker.wake(),
                    Registration::Callback(callback) => executor::spawn(callback.run),
                    Registration::DropGuard(guard) => drop(guard),
                    Registration::Child(_) => unreachable!("children are cancelled, not woken"),
                }));
            if let Err(panic) = delivered {
                first_panic.get_or_insert(panic);
            }
        }
        if let Some(panic) = first_panic {
            if !std::thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}
