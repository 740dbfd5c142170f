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
//! - Cancelling holds no lock while it takes another: it takes one scope's
//!   lock at a time, then the parent's or the timer's to deregister. Two
//!   operations nest, both under the lock of a scope that is live and stays
//!   so meanwhile: moving a deadline takes the scope's timer shard (and the
//!   timer's wake lock) under the scope's lock, and a merged scope registers
//!   with its second parent under its own lock. Nothing takes a scope's lock
//!   while it holds a timer lock or the second parent's, so the order is
//!   acyclic, and no deadlock arises however cancels, moves, derivations and
//!   drops interleave. Holding the scope's lock is what orders these two with
//!   the scope's end: a cancel either comes first (they see the scope done
//!   and do nothing) or finds their work complete (and undoes it).
//! - No foreign code (wakers, callbacks, drops of user values) runs while a
//!   lock is held.
//! - Only a holder of a strong reference cancels a scope (the parent's drain
//!   and the timer upgrade their weak ones first). So once the last strong
//!   reference is gone, `release` runs alone: no cancel can race it.
//! - A child may register in its parent's `first_child` slot without the
//!   lock. `finish` swaps `SLOT_CLOSED` into the slot, taking any child
//!   there; a child fills only an empty slot. Both are read-modify-writes of
//!   the one slot, so they order: a child is either taken by the drain or
//!   finds the slot closed and registers under the lock, where it sees the
//!   scope done.
//! - A cancel returns only once its subtree is done, even one that lost the
//!   race for the scope: the winner ends the scope with `DRAINING` set when
//!   it has anything to drain and clears it once everything below is done,
//!   including the parts that other cancels ended first and were still
//!   draining (it waits for those with its bits set); a loser waits for the
//!   bit. Such waits point strictly down the tree, so no two cancels wait
//!   for each other. A drain that met a merged scope (two parents) clears
//!   its bits before waiting instead (`finish_drain`).
//! - A scope's own deadline (`deadline`) changes only under both the scope's
//!   lock and its timer shard's lock, together with its timer entry, whose
//!   key it is. Whoever holds the shard lock therefore finds the entry by it.
//!   The deadline a context reports is the earliest own deadline on its path
//!   to the root, read afresh on every call (`Context::deadline`), so a move
//!   is seen at once by every descendant, lock-free.
//! - A merged scope (`Context::merge`) is registered as a child with both of
//!   its parents' scopes; whichever drains it first ends it, and its end takes
//!   it out of the other (a done parent's registry is gone: leaving it does
//!   nothing).

use crate::context::Node;
use crate::deadline::Deadline;
use crate::error::{Cause, Error};
use crate::node_ref::{self, NodeRef, WeakNodeRef};
use crate::provenance::{self, EndKind, EndRecord, SiteId};
use crate::registry::{Registration, Registry};
use crate::sync::{lock, thread, AtomicI64, AtomicU32, AtomicU8, AtomicUsize, Mutex, Ordering};
use crate::{executor, timer};
use std::any::Any;

const LIVE: u8 = 0;
const CANCELED: u8 = 1;
const DEADLINE_EXCEEDED: u8 = 2;
/// `key_in_parent` of a scope registered in its parent's `first_child`.
const FIRST_CHILD: u32 = u32::MAX - 1;
/// `first_child` of a scope that ended: no child registers there any more.
/// Any odd value closes the slot (a block's address is even): a scope that
/// ended by a cancellation of its own keeps the call site and the time of
/// its end in the bits above (`closed_slot`).
const SLOT_CLOSED: usize = 1;
/// Or-ed into a done status when the scope has a cause of its own rather than
/// its error's default one: a scope that ended with the default cause can be
/// inherited from without taking its lock.
const CUSTOM_CAUSE: u8 = 4;
/// Bits 3 to 5 of a done status: how the scope ended (an `EndKind`), for
/// `Debug` and provenance. Stored with the status, in the same single store,
/// so they cost the cancel path nothing; the readers that decode the error
/// mask them out.
const END_KIND_SHIFT: u32 = 3;
const END_KIND: u8 = 7 << END_KIND_SHIFT;
/// The bits of a done status that give its `Error`.
const ERR: u8 = 3;
/// Or-ed into a done status while the cancel that ended the scope is still
/// ending its descendants: a cancel that lost the race for the scope waits
/// for it to come off (`Scope::wait_drained`), so that every `cancel()`
/// returns only once the whole subtree is done. Set in the very store that
/// ends the scope, so whoever sees the scope done sees it; cleared once, by
/// the winner.
const DRAINING: u8 = 1 << 6;
/// Where a scope's deadline goes: its timer shard (0 to 15), or `Merged`
/// for a merged scope (whose shard is 0: it has no deadline when built).
/// An enum rather than a `u8`, so that its unused values give `Layer` its
/// tag (a bool did, before the site took its byte).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Placement {
    S0,
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    S8,
    S9,
    S10,
    S11,
    S12,
    S13,
    S14,
    S15,
    Merged,
}

impl Placement {
    #[inline]
    fn of_shard(shard: u8) -> Placement {
        use Placement::*;
        const ALL: [Placement; 16] = [
            S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14, S15,
        ];
        ALL[usize::from(shard) % ALL.len()]
    }

    #[inline]
    fn shard(self) -> u8 {
        match self {
            Placement::Merged => 0,
            shard => shard as u8,
        }
    }
}

/// The cancellation state of one `with_cancel` / `with_deadline` context.
pub(crate) struct Scope {
    /// `LIVE`, or the `Error` that ended the scope. The only thing the hot path
    /// reads: one `Acquire` load.
    status: AtomicU8,
    /// The timer shard that holds this scope's own deadline: chosen when
    /// the scope is built, so that whoever removes the entry finds it. Or
    /// whether this is a merged scope (`Context::merge`), registered with a
    /// second parent too: a flag, so that the common scopes' end and release
    /// test one byte rather than their node's layer. One byte for both, so
    /// that `site` fits in the word with the key.
    placement: Placement,
    /// Where the scope was created (`provenance`), interned.
    site: SiteId,
    /// This scope's own deadline, a raw [`Deadline`] (`NEVER`: none). While
    /// the scope is live and the deadline is not `NEVER`, the timer holds one
    /// entry for it under this key, or has just taken it out to fire it.
    /// Written only under the scope's lock and the shard's (see the
    /// invariants), or before the scope is shared.
    deadline: AtomicI64,
    /// This scope's key in its parent scope's registry. Written by
    /// `attach`, before the node is shared with any other thread (sharing
    /// orders it), and again, under the parent's lock, by a tree snapshot
    /// that moves the scope out of the parent's `first_child` slot
    /// (`Scope::snapshot`).
    key_in_parent: AtomicU32,
    /// One child registered without the lock (a `WeakNodeRef` as a raw
    /// pointer), 0 when empty, or `SLOT_CLOSED` once the scope ended. Any
    /// child that finds it empty registers here: deriving and cancelling a
    /// child of a busy parent then costs one atomic operation on the parent
    /// each way, instead of a lock and an unlock.
    first_child: AtomicUsize,
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
    pub(crate) fn new(own_deadline: Deadline, site: SiteId) -> Scope {
        Scope::with_parents(own_deadline, false, site)
    }

    /// A live scope of a merge: two parents, no deadline of its own.
    pub(crate) fn new_merged(site: SiteId) -> Scope {
        Scope::with_parents(Deadline::NEVER, true, site)
    }

    #[inline]
    fn with_parents(own_deadline: Deadline, merged: bool, site: SiteId) -> Scope {
        let shard = if own_deadline != Deadline::NEVER {
            timer::home_shard()
        } else {
            0
        };
        Scope {
            status: AtomicU8::new(LIVE),
            placement: if merged {
                Placement::Merged
            } else {
                Placement::of_shard(shard)
            },
            site,
            deadline: AtomicI64::new(own_deadline.raw()),
            key_in_parent: AtomicU32::new(u32::MAX),
            first_child: AtomicUsize::new(0),
            inner: Mutex::new(Inner::Live(Registry::new())),
        }
    }

    /// A scope born ended with `err` and its default cause: the child of a
    /// parent that [`ended_with_default_cause`](Scope::ended_with_default_cause).
    /// It needs no registration and no timer entry, and never takes a lock.
    #[inline]
    pub(crate) fn new_done(own_deadline: Deadline, err: Error, site: SiteId) -> Scope {
        Scope {
            // Ended through its parent (`EndKind::Parent` is 0).
            status: AtomicU8::new(status_of(err)),
            // Never in the timer: born done.
            placement: Placement::S0,
            site,
            deadline: AtomicI64::new(own_deadline.raw()),
            key_in_parent: AtomicU32::new(u32::MAX),
            first_child: AtomicUsize::new(SLOT_CLOSED),
            inner: Mutex::new(Inner::Done(None)),
        }
    }

    /// The error this scope ended with, if it ended with that error's default
    /// cause; `None` while live or after a custom cause.
    #[inline]
    pub(crate) fn ended_with_default_cause(&self) -> Option<Error> {
        // Acquire, as in `err`. How the scope was cancelled (`END_KIND`)
        // does not matter to its children.
        match self.status.load(Ordering::Acquire) & !(END_KIND | DRAINING) {
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
        match self.status.load(Ordering::Acquire) & ERR {
            LIVE => None,
            DEADLINE_EXCEEDED => Some(Error::DeadlineExceeded),
            _ => Some(Error::Canceled),
        }
    }

    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.status.load(Ordering::Acquire) != LIVE
    }

    /// Whether the scope was ended by dropping its own [`CancelHandle`]
    /// (rather than by `cancel()`, its deadline or its parent).
    ///
    /// [`CancelHandle`]: crate::CancelHandle
    pub(crate) fn ended_by_dropped_handle(&self) -> bool {
        self.end_kind() == Some(EndKind::Dropped)
    }

    /// How the scope ended, or `None` while it is live.
    pub(crate) fn end_kind(&self) -> Option<EndKind> {
        // Acquire, as in `err`.
        let status = self.status.load(Ordering::Acquire);
        (status != LIVE).then(|| EndKind::from_bits((status & END_KIND) >> END_KIND_SHIFT))
    }

    /// What the scope recorded of its end, if it has ended.
    pub(crate) fn end_record(&self) -> Option<EndRecord> {
        // The record is written under the lock, with the status.
        let _inner = lock(&self.inner);
        let status = self.status.load(Ordering::Relaxed);
        if status == LIVE {
            return None;
        }
        let slot = self.first_child.load(Ordering::Relaxed);
        Some(EndRecord {
            kind: EndKind::from_bits((status & END_KIND) >> END_KIND_SHIFT),
            err: if status & ERR == DEADLINE_EXCEEDED {
                Error::DeadlineExceeded
            } else {
                Error::Canceled
            },
            custom_cause: status & CUSTOM_CAUSE != 0,
            site: (slot >> 1) as SiteId,
            at: (slot >> 17) as u32,
        })
    }

    /// Where the scope was created, interned.
    pub(crate) fn site(&self) -> SiteId {
        self.site
    }

    #[inline]
    fn merged(&self) -> bool {
        self.placement == Placement::Merged
    }

    /// This scope's own deadline (`NEVER`: none); the context's is the
    /// earliest on its path to the root.
    #[inline]
    pub(crate) fn own_deadline(&self) -> Deadline {
        // Relaxed: the value stands alone. Its writers order it with the
        // timer entry by the shard's lock, which removers take before
        // reading it again; `leave` and `release` read it after the scope's
        // end, which the scope's lock (or the last owner's Acquire) orders
        // after every move.
        Deadline::from_raw(self.deadline.load(Ordering::Relaxed))
    }

    pub(crate) fn has_own_deadline(&self) -> bool {
        self.own_deadline() != Deadline::NEVER
    }

    /// Records a new own deadline. The caller holds the scope's lock (or has
    /// the scope to itself) and the shard's, and moves the entry to match.
    pub(crate) fn set_own_deadline(&self, deadline: Deadline) {
        // Relaxed: see `own_deadline`.
        self.deadline.store(deadline.raw(), Ordering::Relaxed);
    }

    pub(crate) fn timer_shard(&self) -> u8 {
        self.placement.shard()
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
    /// already ended (the first cancellation wins). `origin` is recorded for
    /// `Debug` and provenance: its kind in the status, and for an end of
    /// the scope's own, its call site and time in the closed slot.
    fn finish(&self, err: Error, cause: Option<Cause>, origin: Origin) -> Option<Registry> {
        let (kind, site, at) = origin.record();
        let mut inner = lock(&self.inner);
        if !matches!(*inner, Inner::Live(_)) {
            return None;
        }
        let custom = if cause.is_some() { CUSTOM_CAUSE } else { 0 };
        let Inner::Live(registry) = std::mem::replace(&mut *inner, Inner::Done(cause)) else {
            unreachable!()
        };
        // Acquire: the child's registration (its weak reference) happens
        // before we take it. Closed before the status says done, under the
        // lock: a reader that sees the scope done finds the slot closed and
        // its end's record there (`end_record`, a snapshot), and we know
        // whether there is a subtree to drain before the one store that
        // ends the scope (see `DRAINING`). A child that finds the slot
        // closed registers under the lock, and so sees the scope done.
        let first = self
            .first_child
            .swap(closed_slot(site, at), Ordering::AcqRel);
        let child_in_slot = slot_child(first);
        let draining = if child_in_slot.is_some() || !registry.is_empty() {
            DRAINING
        } else {
            0
        };
        let status = status_of(err) | custom | (kind as u8) << END_KIND_SHIFT | draining;
        // Release: publishes the cause (and everything before) to `err` readers.
        self.status.store(status, Ordering::Release);
        drop(inner);
        let mut registry = registry;
        if let Some(child) = child_in_slot {
            // SAFETY: the slot held this weak reference, put there by
            // `attach_first_child`; the swap made it ours.
            registry.insert(Registration::Child(unsafe { WeakNodeRef::from_raw(child) }));
        }
        Some(registry)
    }

    /// The winner's end of a drain: every descendant it reached is done.
    fn drained(&self) {
        // A load and a store, not a read-modify-write: once the scope is
        // done only its winner writes the status. Release: the descendants'
        // ends happen before a loser's Acquire load sees the bit clear.
        let status = self.status.load(Ordering::Relaxed);
        self.status.store(status & !DRAINING, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.status.load(Ordering::Acquire) & DRAINING != 0
    }

    /// For a cancel that found the scope already ended: returns once the
    /// cancel that ended it has ended its descendants. A short wait, and
    /// rare (two cancels racing over one subtree); the winner takes no lock
    /// of ours and waits for nothing but other drains below it, so it always
    /// gets there. Not on a thread inside a drain of its own (a drop of a
    /// user value it runs may cancel): that drain could be the one waited
    /// for.
    #[inline]
    pub(crate) fn wait_drained(&self) {
        // The common case, a handle dropped after its own cancel: one load.
        if self.is_draining() {
            self.wait_drained_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_drained_slow(&self) {
        if !Draining::on_this_thread() {
            self.spin_until_drained();
        }
    }

    /// Waits for the bit, whatever this thread is doing: for a drain's own
    /// end (`finish_drain`), which runs no code of the user's meanwhile.
    fn spin_until_drained(&self) {
        while self.is_draining() {
            thread::yield_now();
        }
    }

    /// How many registrations the scope holds, 0 once done.
    pub(crate) fn registrations(&self) -> usize {
        let locked = self.with_registry(|registry| registry.len()).unwrap_or(0);
        locked + usize::from(slot_child(self.first_child.load(Ordering::Acquire)).is_some())
    }
}

/// The child a `first_child` value holds, if any.
fn slot_child(slot: usize) -> Option<usize> {
    (slot != 0 && slot & SLOT_CLOSED == 0).then_some(slot)
}

/// A closed `first_child` that keeps the call site and the time (in
/// coarse ticks) of the scope's end.
#[inline]
fn closed_slot(site: SiteId, at: u32) -> usize {
    (at as usize) << 17 | usize::from(site) << 1 | SLOT_CLOSED
}

// A child in `first_child` keeps its parent alive, and leaves the slot before
// it is freed (`release`), or the parent's drain takes it: a scope is never
// dropped with a child in its slot. Checked in debug builds; release builds
// pay no drop code for it.
#[cfg(debug_assertions)]
impl Drop for Scope {
    fn drop(&mut self) {
        debug_assert!(
            slot_child(self.first_child.load(Ordering::Relaxed)).is_none(),
            "a scope dropped with a child in its slot"
        );
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
/// the timer (a firing timer has already removed the entry), and what the
/// scope records of its end (`provenance`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `cancel()` or `cancel_with`, called at this site.
    Handle(SiteId),
    /// The handle, by being dropped: as `Handle`, and remembered for
    /// `Debug`.
    Dropped,
    /// An integration, named by this id (`CancelHandle::cancel_from`): as
    /// `Handle`.
    Integration(SiteId),
    Timer,
    Parent,
    /// A merged scope's second parent (at registration, or its drain): as
    /// `Parent`, but provenance follows the second parent.
    OtherParent,
}

impl Origin {
    /// What `finish` records: the kind, and for an end of the scope's own,
    /// its call site and the time.
    #[inline]
    fn record(self) -> (EndKind, SiteId, u32) {
        match self {
            Origin::Parent => (EndKind::Parent, 0, 0),
            Origin::OtherParent => (EndKind::OtherParent, 0, 0),
            Origin::Handle(site) => (EndKind::Handle, site, provenance::now_ticks()),
            Origin::Dropped => (EndKind::Dropped, 0, provenance::now_ticks()),
            Origin::Integration(site) => (EndKind::Integration, site, provenance::now_ticks()),
            Origin::Timer => (EndKind::Deadline, 0, provenance::now_ticks()),
        }
    }
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
/// `parent` is that scope (the caller has it at hand); `expiry` is given
/// for (and only for) a scope with its own deadline.
pub(crate) fn attach(node: &NodeRef, parent: Option<&Scope>, expiry: Option<Expiry>) {
    let scope = node.scope().expect("attach takes a scope node");
    if let Some(parent_scope) = parent {
        if let Err((err, cause)) = register(node, &scope.key_in_parent, parent_scope) {
            // A fresh scope has no registrations: nothing to notify.
            scope.finish(err, cause, Origin::Parent);
            return; // the parent had ended, and so have we
        }
    }
    let Some(Expiry { passed, cause }) = expiry else {
        return;
    };
    if passed {
        cancel(node, Error::DeadlineExceeded, cause, Origin::Timer);
        return;
    }
    timer::insert(node, cause);
    if scope.is_done() {
        // The parent ended us between registration and the insert above, and
        // its removal of our timer entry may have come first: take it out now.
        // (Cancel stores the status before removing; we insert before
        // loading it; the timer's lock orders the two.)
        timer::remove(node);
    }
}

/// Registers a freshly built merged scope `node` with `other`, the scope of
/// its second parent, keeping its key in `key`; ends it (and takes it out of
/// its first parent) if `other` is already done. Does nothing if `node` has
/// ended already (its first parent had).
///
/// Done under `node`'s own lock, so that a cancel of `node` either comes
/// first (and we register nothing) or finds the registration complete, key
/// included, and removes it in `leave`.
pub(crate) fn attach_other(node: &NodeRef, other: &Scope, key: &AtomicU32) {
    let scope = node.scope().expect("attach_other takes a scope node");
    let registered = scope.with_registry(|_| register(node, key, other));
    if let Ok(Err((err, cause))) = registered {
        // `other` had ended: so do we, leaving our first parent.
        cancel(node, err, cause, Origin::OtherParent);
    }
}

/// Registers `node` with `parent`, keeping its place in `key`; if the parent
/// has ended, returns the error and cause it ended with.
///
/// A caller that saw the parent done must get a child that is done at once.
/// `finish` closes the slot before the store that says done, so a child
/// that got into the slot got there before any end the caller could have
/// seen; that parent's drain takes it and ends it. After taking the slot we
/// still look at the parent's status (read-read coherence makes this load
/// see any end the caller saw), so that a child whose parent's end has
/// begun meanwhile is done on return rather than when the drain reaches
/// it. The drain may still take `node` from the slot; it then finds `node`
/// ended (the first cancellation wins).
fn register(node: &NodeRef, key: &AtomicU32, parent: &Scope) -> Result<(), (Error, Option<Cause>)> {
    if !attach_first_child(node, key, parent) {
        return attach_locked(node, key, parent);
    }
    if parent.is_done() {
        // Done under the lock with its cause: this returns them.
        return parent.with_registry(|_| ());
    }
    Ok(())
}

/// Registers `node` in its parent's `first_child` slot if it is empty;
/// returns false if it is not (another child holds it, or the parent ended).
/// `key` is where `node` keeps its place in that parent.
fn attach_first_child(node: &NodeRef, key: &AtomicU32, parent: &Scope) -> bool {
    // A plain look first, so that a busy slot costs no weak reference.
    if parent.first_child.load(Ordering::Relaxed) != 0 {
        return false;
    }
    let raw = NodeRef::downgrade(node).into_raw();
    // Stored before the slot is filled: once we are in it, a tree snapshot
    // may move us into the registry and store our new key, which must not
    // be overwritten by this one (the compare-and-swap's Release orders
    // this store before the snapshot's, whose swap reads our value). If
    // the swap fails, `attach_locked` stores the registry's key instead.
    key.store(FIRST_CHILD, Ordering::Relaxed);
    // Release: the weak reference (and the key) is complete before a drain
    // or a snapshot takes it.
    if parent
        .first_child
        .compare_exchange(0, raw, Ordering::Release, Ordering::Relaxed)
        .is_ok()
    {
        return true;
    }
    // SAFETY: ours: it never made it into the slot.
    drop(unsafe { WeakNodeRef::from_raw(raw) });
    false
}

/// Registers in the parent's locked registry, keeping the key in `key`; if
/// the parent is done, returns the error and cause it ended with.
fn attach_locked(
    node: &NodeRef,
    key: &AtomicU32,
    parent: &Scope,
) -> Result<(), (Error, Option<Cause>)> {
    parent.with_registry(|registry| {
        let index = registry.insert(Registration::Child(NodeRef::downgrade(node)));
        // Registry keys fit in u32 and stay below `FIRST_CHILD` (see
        // `Registry::insert`).
        key.store(index as u32, Ordering::Relaxed);
    })
}

/// Cancels `node` and, synchronously, every scope below it.
///
/// When this returns, the node and every descendant report done. Waiters are
/// woken and callbacks dispatched only after every scope of the subtree has
/// been marked done and every lock released, so a woken waiter observes the
/// whole subtree already cancelled. Descendants get `err` and `cause`, unless
/// they had already ended (the first cancellation wins).
/// Whether nothing could ever see `node` end: the caller's reference is
/// the only strong one. No context of it or below it is left (each holds
/// its parent), and nothing registered on it is waiting: every
/// registration keeps a strong reference while it waits (see
/// `Registration`), but a `done_receiver`'s guard, whose drop, which a
/// release does too, is its notification. Then an end is work for no one,
/// and letting the node go, as a detached handle's drop does, is
/// indistinguishable from it. A weak reference upgraded after the look (a
/// parent's cancel, the timer, a tree snapshot) sees a context being
/// released: it may end it first, or list it live, as with any release.
pub(crate) fn is_unobserved(node: &NodeRef) -> bool {
    node.is_only_strong()
}

pub(crate) fn cancel(node: &NodeRef, err: Error, cause: Option<Cause>, origin: Origin) {
    let scope = node.scope().expect("cancel takes a scope node");
    let Some(registry) = scope.finish(err, cause.clone(), origin) else {
        scope.wait_drained();
        return;
    };
    if registry.is_empty() {
        leave(node, scope, origin);
        emit(node, origin);
        return;
    }

    let draining = Draining::enter();
    // Leaves the parent (and the timer) only once the subtree is done, so
    // that a cancel of the parent that finds us there waits for it too.
    let root = Drained { node, origin };
    let mut wake = Wakeups::default();
    // Descendants that another cancel ended first and is still draining.
    let mut others: Vec<NodeRef> = Vec::new();
    // Scopes of ours with one of those below them: their bits stay set
    // until the others are done (see the end).
    let mut held: Vec<DrainedChild> = Vec::new();
    // Whether a merged scope was among the children met.
    let mut merges = false;
    // An explicit stack rather than recursion: trees may be very deep. It
    // allocates only when there are children to descend into. Each registry
    // goes with the address of the scope it came from, for merged children;
    // below it on the stack, that scope's `Drained`, popped once everything
    // above it, its subtree, has been visited.
    let mut pending: Vec<Step> = Vec::new();
    let mut next = Some(Step::Drain(registry, scope as *const Scope as usize));
    while let Some(step) = next.take().or_else(|| pending.pop()) {
        let (registry, drained) = match step {
            Step::Drain(registry, drained) => (registry, drained),
            Step::Drained(subtree_done, others_before) => {
                // Done, unless another cancel is still draining part of it.
                if others.len() == others_before {
                    drop(subtree_done); // clears its bit
                } else {
                    held.push(subtree_done);
                }
                continue;
            }
        };
        for registration in registry.drain() {
            match registration {
                Registration::Child(child) => {
                    // A child that cannot be upgraded is being dropped: nobody
                    // can observe it, and its drop no longer touches us.
                    let Some(child) = child.upgrade() else {
                        continue;
                    };
                    let child_scope = child.scope().expect("children are scopes");
                    let origin = if child_scope.merged() {
                        merges = true;
                        merged_child_origin(&child, drained)
                    } else {
                        Origin::Parent
                    };
                    match child_scope.finish(err, cause.clone(), origin) {
                        Some(grandchildren) if grandchildren.is_empty() => {
                            leave(&child, child_scope, origin);
                        }
                        Some(grandchildren) => {
                            let address = child_scope as *const Scope as usize;
                            let subtree_done = DrainedChild { child, origin };
                            pending.push(Step::Drained(subtree_done, others.len()));
                            pending.push(Step::Drain(grandchildren, address));
                        }
                        // Ended by another cancel, maybe still draining it.
                        None if child_scope.is_draining() => others.push(child),
                        None => {}
                    }
                    // Dropping `child` here may free it: it is done, so its
                    // drop takes no lock of ours.
                }
                other => wake.push(other),
            }
        }
    }
    finish_drain(root, held, others, merges);
    drop(draining);
    wake.run();
    emit(node, origin);
}

/// The end of a drain that met `others`, descendants another cancel ended
/// first and was still draining: clears the bits of `root` and of the
/// scopes `held` above them once the whole subtree is done, so that a
/// cancel that waits for any of them (a loser, or a cancel above) returns
/// only then too.
///
/// Waiting with bits set cannot deadlock in a tree: the cancel that ended
/// an `other` started there (it could not have passed through our scopes,
/// which we ended), so every such wait points strictly down the tree, and a
/// chain of them ends. Merged scopes have two parents, and two drains could
/// each wait for a scope below the other's: a drain that met a merge
/// clears its bits first and then waits, as before. Its `cancel()` still
/// returns after its subtree is done, but a cancel waiting on it may return
/// before the others are: the one case where the guarantee is weaker.
///
/// Called inside the drain (`Draining`): the drops of `held` and `root`
/// may free nodes, and so run drops of the user's values, which may cancel
/// a scope whose bit is still set here; such a cancel must not wait. For
/// the same reason a drain that is itself inside another drain of this
/// thread (started by such a drop) waits for nothing: the outer drain may
/// hold the very bits it would wait for.
fn finish_drain(root: Drained<'_>, held: Vec<DrainedChild>, others: Vec<NodeRef>, merges: bool) {
    if Draining::nested() {
        drop(held);
        drop(root);
        return;
    }
    let wait = |others: &[NodeRef]| {
        for other in others {
            let scope = other.scope().expect("children are scopes");
            scope.spin_until_drained();
        }
    };
    if merges {
        drop(held);
        drop(root);
        wait(&others);
    } else {
        wait(&others);
        drop(held); // innermost first: pushed as their subtrees were visited
        drop(root);
    }
    // `others` dropped last: they may free nodes (user values) too.
}

/// One step of a cancel's drain.
enum Step {
    /// End the children in this registry, which came from the scope at this
    /// address.
    Drain(Registry, usize),
    /// That scope's subtree has been visited; it is done unless `others`
    /// grew past this length meanwhile.
    Drained(DrainedChild, usize),
}

/// The scope this cancel started from: when this drops, once its subtree is
/// done (or while unwinding from a panic in a drop of a user value, so that
/// no other cancel waits for ever), it leaves its parent and the timer and
/// its `DRAINING` bit comes off.
struct Drained<'a> {
    node: &'a NodeRef,
    origin: Origin,
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        let scope = self.node.scope().expect("only scopes drain");
        leave(self.node, scope, self.origin);
        scope.drained();
    }
}

/// A descendant's [`Drained`], which keeps the descendant alive until then.
struct DrainedChild {
    child: NodeRef,
    origin: Origin,
}

impl Drop for DrainedChild {
    fn drop(&mut self) {
        let scope = self.child.scope().expect("only scopes drain");
        leave(&self.child, scope, self.origin);
        scope.drained();
    }
}

#[cfg(not(loom))]
std::thread_local! {
    /// How many drains this thread is inside (a drop of a user value during
    /// one may cancel, and drain, again).
    static DRAINS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

// A model's threads share one real thread: each needs its own count.
#[cfg(loom)]
loom::thread_local! {
    static DRAINS: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// This thread is inside a drain while one of these lives.
struct Draining;

impl Draining {
    fn enter() -> Draining {
        DRAINS.with(|drains| drains.set(drains.get() + 1));
        Draining
    }

    fn on_this_thread() -> bool {
        DRAINS.with(|drains| drains.get() > 0)
    }

    /// Whether this thread was inside a drain already when it entered the
    /// one it is in.
    fn nested() -> bool {
        DRAINS.with(|drains| drains.get() > 1)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        DRAINS.with(|drains| drains.set(drains.get() - 1));
    }
}

/// The `tracing` event of a cancellation that `origin` started (feature
/// `tracing`): sent last, once the subtree has ended and every lock is
/// released, as it runs the subscriber's code.
#[inline(always)]
fn emit(node: &Node, origin: Origin) {
    #[cfg(feature = "tracing")]
    if !matches!(origin, Origin::Parent | Origin::OtherParent) {
        provenance::emit(node);
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (node, origin);
}

/// Whether a drain of the scope at `drained` ends the merged scope `child`
/// through its first parent or its second (out of line: rare).
#[cold]
#[inline(never)]
fn merged_child_origin(child: &Node, drained: usize) -> Origin {
    match parent_scope(child) {
        Some(first) if first as *const Scope as usize == drained => Origin::Parent,
        _ => Origin::OtherParent,
    }
}

/// A just-ended scope leaves the structures that still point at it: the
/// timer, and its parent's registry unless the parent is the one draining it.
///
/// A merged scope leaves both parents whoever drained it: the one that did
/// is done, and leaving a done scope does nothing.
// Inlined: out of line, `cancel` pays a call and the saving of registers
// for what is a few tests on the common path (counted with callgrind).
#[inline(always)]
fn leave(node: &NodeRef, scope: &Scope, origin: Origin) {
    if scope.has_own_deadline() && origin != Origin::Timer {
        timer::remove(node);
    }
    let merged = scope.merged();
    if origin != Origin::Parent || merged {
        if let Some(parent) = parent_scope(node) {
            deregister_from(parent, node, &scope.key_in_parent);
        }
    }
    if merged {
        leave_other_parent(node);
    }
}

/// A merged scope leaves its second parent (out of line: rare).
#[cold]
#[inline(never)]
fn leave_other_parent(node: &Node) {
    if let Some((other, key)) = node.other_parent() {
        deregister_from(other, node, key);
    }
}

/// The nearest scope above `node`, if any.
fn parent_scope(node: &Node) -> Option<&Scope> {
    let parent = node.parent().scope_node()?;
    Some(parent.scope().expect("scope_node is a scope"))
}

/// Removes `node`'s registration, kept under `key`, from `parent_scope` (its
/// nearest scope above, or a merged scope's second parent), unless the
/// parent's drain took it already.
fn deregister_from(parent_scope: &Scope, node: &Node, key: &AtomicU32) {
    let current = key.load(Ordering::Relaxed);
    if current != FIRST_CHILD {
        drop(parent_scope.deregister(current as usize));
        return;
    }
    // Only our own registration can hold our address. If it is gone, the
    // parent's drain took it, or a tree snapshot moved it into the registry
    // (`Scope::snapshot`). These and the drain's swap are the only ways out
    // of the slot, and they order on it alone.
    let raw = node_ref::raw_address(node);
    if parent_scope
        .first_child
        .compare_exchange(raw, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: the compare-and-swap gave the registration back to us.
        drop(unsafe { WeakNodeRef::from_raw(raw) });
        return;
    }
    leave_after_snapshot(parent_scope, key);
}

/// The slow way out of a parent whose `first_child` slot no longer holds
/// us: under the parent's lock, a drain has ended it (nothing to do) or a
/// snapshot has moved us into its registry and stored our new key there
/// (taking the lock orders that store before our load). A snapshot that
/// found us being released moved nothing and left the key as it was.
#[cold]
#[inline(never)]
fn leave_after_snapshot(parent_scope: &Scope, key: &AtomicU32) {
    let removed = parent_scope.with_registry(|registry| {
        // Relaxed: written under this lock (see `Scope::snapshot`).
        match key.load(Ordering::Relaxed) {
            FIRST_CHILD => None,
            moved => registry.remove(moved as usize),
        }
    });
    drop(removed);
}

/// Called when the last reference to a scope node goes away: a live scope
/// leaves its parent and the timer. Nothing can observe it any more, so it is
/// not cancelled; its registrations can only be of its own (dead) kind.
#[inline]
pub(crate) fn release(node: &Node, scope: &Scope) {
    // No lock: nothing can cancel us any more (see the invariants above),
    // and the last owner's Acquire in `node_ref` orders every cancel that
    // came before: the status is final. A scope that ended has left
    // everything already (checked first: the commonest case, and one load).
    if scope.is_done() {
        return;
    }
    let parent = parent_scope(node);
    let merged = scope.merged();
    if !scope.has_own_deadline() && parent.is_none() && !merged {
        return; // nothing points at this scope
    }
    if scope.has_own_deadline() {
        timer::remove(node);
    }
    if let Some(parent) = parent {
        deregister_from(parent, node, &scope.key_in_parent);
    }
    if merged {
        leave_other_parent(node);
    }
}

/// Moves `node`'s own deadline to `to` (`NEVER`: none), ending it with
/// `DeadlineExceeded` now if `passed`. Returns false, changing nothing, if the
/// scope is done, or is being ended by its deadline: the timer took its
/// entry out to fire it (the deadline had come, the move is too late); then
/// it returns once the scope is done, so that false always means done.
pub(crate) fn move_deadline(node: &NodeRef, to: Deadline, passed: bool) -> bool {
    let scope = node.scope().expect("move_deadline takes a scope node");
    // Under the scope's lock: a cancel waits for the move, then finds the
    // moved entry (see the invariants). The replaced entry is returned, to
    // be dropped after the lock (its cause is a user value).
    let moved = scope.with_registry(|_| timer::reschedule(node, to, passed));
    match moved {
        Err(_) => false,
        Ok(timer::Rescheduled::Firing) => {
            // The firing thread holds none of our locks and is on its way to
            // end the scope: a short wait, and rare (a move in the instant
            // its deadline comes).
            while !scope.is_done() {
                thread::yield_now();
            }
            false
        }
        Ok(timer::Rescheduled::Moved(_replaced)) => true,
        Ok(timer::Rescheduled::Passed(cause)) => {
            // The entry is out of the timer: end the scope as its firing would.
            cancel(node, Error::DeadlineExceeded, cause, Origin::Timer);
            true
        }
    }
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

// Live-tree snapshots (tree.rs)

/// What a snapshot sees of one live scope: strong references to its live
/// children, and how many waiters and callbacks are pending on it.
#[derive(Default)]
pub(crate) struct ScopeView {
    pub(crate) children: Vec<NodeRef>,
    /// Threads, tasks and channels waiting for the scope's end.
    pub(crate) waiters: usize,
    /// Pending `after_func` callbacks.
    pub(crate) callbacks: usize,
}

impl Scope {
    /// The scope's live children and pending registrations, or `None` once
    /// it has ended. Takes the scope's lock for the copy, never blocks a
    /// cancel for longer than a derivation would, and never cancels.
    ///
    /// A child in the lock-free `first_child` slot cannot be read in place:
    /// it may leave the slot and be freed at any moment. So the snapshot
    /// moves it into the registry, under the lock, and stores its new key.
    /// A child leaving meanwhile finds the slot no longer holds it, and looks
    /// for its key again under this lock (`leave_after_snapshot`); one being
    /// released (no strong reference left) is not moved, and its weak
    /// reference is dropped by the caller.
    ///
    /// The strong references are the caller's to drop, after the lock: a
    /// last one releases its node, which may take this scope's lock.
    pub(crate) fn snapshot(&self, spare: &mut Vec<WeakNodeRef>) -> Option<ScopeView> {
        let mut view = ScopeView::default();
        self.with_registry(|registry| {
            registry.visit(
                |weak| view.children.extend(weak.upgrade()),
                |other| match other {
                    Registration::Callback(_) => view.callbacks += 1,
                    Registration::Child(_) => {}
                    _ => view.waiters += 1,
                },
            );
            // Acquire: the child's registration (its weak reference) happens
            // before we use it, as in `finish`. Under the lock, the scope is
            // live, so the slot is not `SLOT_CLOSED`.
            let first = self.first_child.swap(0, Ordering::AcqRel);
            let Some(raw) = slot_child(first) else {
                return;
            };
            // SAFETY: the slot held this weak reference, put there by
            // `attach_first_child`; the swap made it ours.
            let weak = unsafe { WeakNodeRef::from_raw(raw) };
            let Some(child) = weak.upgrade() else {
                // Being released: its deregistration finds the slot empty
                // and leaves. Our weak reference is dropped after the lock.
                spare.push(weak);
                return;
            };
            let key = registry.insert(Registration::Child(weak));
            // Relaxed: a child that read the old key finds the slot empty
            // and reads this one again under this lock.
            key_in(&child, self).store(key as u32, Ordering::Relaxed);
            // First: the slot's child is usually the oldest.
            view.children.insert(0, child);
        })
        .ok()?;
        Some(view)
    }
}

/// Where `child` keeps its place in `parent`: its own key, or, for a merged
/// scope registered with `parent` as its second parent, that one.
fn key_in<'a>(child: &'a Node, parent: &Scope) -> &'a AtomicU32 {
    match child.other_parent() {
        Some((other, key)) if std::ptr::eq(other, parent) => key,
        _ => &child.scope().expect("children are scopes").key_in_parent,
    }
}
