//! What a live cancellation scope must notify when it ends.
//!
//! A [`Registry`] gives each registration a key that stays valid until its
//! owner removes it or the scope ends and drains them all. Keys are reused,
//! so a parent that derives and drops a million children one after another
//! holds one slot, not a million. The first registration is held inline; when
//! the last of a burst leaves, the burst's storage is released, so a burst of
//! children leaves nothing behind.
//!
//! Invariant (kept by `cancel.rs`): a registry lives only while its scope is
//! live, and is drained exactly once when the scope ends. A key is therefore
//! never reused behind its owner's back: the owner removes its own key, and
//! after a drain no key is handed out again.

use crate::node_ref::{NodeRef, WeakNodeRef};
use crate::sync::thread::Thread;
use std::task::Waker;

/// One thing to notify when a scope ends.
///
/// Invariant (`cancel::is_unobserved` rests on it): while it waits, every
/// registration but a `DropGuard` comes with a strong reference to the
/// scope: a child holds its parent, a thread or a task waits through a
/// `Context`, a callback keeps the scope alive. A `DropGuard`'s notification
/// is its drop, which freeing the scope does too.
pub(crate) enum Registration {
    /// A derived cancellation scope. Weak, so that a child nobody holds any
    /// more is freed (its `Drop` then removes this entry).
    Child(WeakNodeRef),
    /// A thread parked in `wait`, `wait_timeout` or `sleep`.
    Thread(Thread),
    /// A task polling a `Done` future.
    Task(Waker),
    /// An `after_func` callback, sent to the callback threads on cancel.
    Callback(Box<Callback>),
    /// Something whose drop is the notification (a channel sender).
    #[cfg_attr(not(feature = "crossbeam"), allow(dead_code))]
    DropGuard(Box<dyn Send>),
}

/// A pending `after_func` callback.
pub(crate) struct Callback {
    pub(crate) run: Box<dyn FnOnce() + Send>,
    /// Keeps the scope alive while the callback is pending, so that the
    /// scope's own deadline, or an ancestor's cancellation, can still run it
    /// after every `Context` and `CancelHandle` of the scope is gone.
    pub(crate) _keepalive: NodeRef,
}

/// A registry holds its first registration inline and moves to a [`Slab`]
/// when a second one arrives: a scope with one child or one waiter, by far
/// the most common case, allocates nothing to hold it.
///
/// Keys are `index << 1 | kind`, kind 0 for a child and 1 for anything else,
/// so a key names its slot in the slab's two tables. The inline registration
/// already has the key it will keep in the slab: index 0 of its kind's table.
pub(crate) enum Registry {
    Inline(Option<Registration>),
    Slab(Box<Slab>),
}

const CHILD: usize = 0;
const OTHER: usize = 1;

fn kind_of(registration: &Registration) -> usize {
    match registration {
        Registration::Child(_) => CHILD,
        _ => OTHER,
    }
}

/// Keys stay below this: they must fit in the `u32` a child scope keeps of
/// its place in its parent, below the two values `cancel.rs` reserves.
const MAX_KEYS: usize = u32::MAX as usize - 1;

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry::Inline(None)
    }

    /// How many registrations are held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Registry::Inline(one) => usize::from(one.is_some()),
            Registry::Slab(slab) => slab.len,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `registration`, returning the key that removes it. Keys fit in
    /// a `u32`.
    pub(crate) fn insert(&mut self, registration: Registration) -> usize {
        match self {
            Registry::Inline(slot @ None) => {
                let key = kind_of(&registration);
                *slot = Some(registration);
                key
            }
            Registry::Inline(Some(_)) => {
                let Registry::Inline(Some(first)) =
                    std::mem::replace(self, Registry::Slab(Box::default()))
                else {
                    unreachable!("matched above")
                };
                let Registry::Slab(slab) = self else {
                    unreachable!("just replaced")
                };
                slab.insert(first);
                slab.insert(registration)
            }
            Registry::Slab(slab) => slab.insert(registration),
        }
    }

    /// Removes the registration under `key`, handing it back so that the
    /// caller drops it after releasing the scope's lock (dropping a waker or a
    /// callback runs foreign code).
    pub(crate) fn remove(&mut self, key: usize) -> Option<Registration> {
        match self {
            Registry::Inline(one) => match one {
                Some(registration) if kind_of(registration) == key => one.take(),
                _ => None,
            },
            Registry::Slab(slab) => {
                let removed = slab.remove(key);
                if slab.len == 0 && slab.is_large() {
                    // Give a burst's memory back rather than keep tables as
                    // long as the largest burst of children ever seen.
                    *self = Registry::new();
                }
                removed
            }
        }
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Registration> {
        match self {
            Registry::Inline(Some(registration)) if kind_of(registration) == key => {
                Some(registration)
            }
            Registry::Inline(_) => None,
            Registry::Slab(slab) => slab.get_mut(key),
        }
    }

    /// The registered children and every other registration, in no
    /// particular order (for snapshots of the live tree).
    pub(crate) fn visit(
        &self,
        mut child: impl FnMut(&WeakNodeRef),
        mut other: impl FnMut(&Registration),
    ) {
        match self {
            Registry::Inline(None) => {}
            Registry::Inline(Some(Registration::Child(weak))) => child(weak),
            Registry::Inline(Some(registration)) => other(registration),
            Registry::Slab(slab) => {
                slab.children.iter().flatten().for_each(child);
                for slot in &slab.others {
                    if let Slot::Taken(registration) = slot {
                        other(registration);
                    }
                }
            }
        }
    }

    /// Every registration, in no particular order; the registry is consumed.
    pub(crate) fn drain(self) -> impl Iterator<Item = Registration> {
        let (one, slab) = match self {
            Registry::Inline(one) => (one, None),
            Registry::Slab(slab) => (None, Some(*slab)),
        };
        one.into_iter()
            .chain(slab.into_iter().flat_map(Slab::drain))
    }
}

/// Two tables with stable keys: children, the bulk of any large registry, in
/// eight-byte slots; everything else in slots large enough for a waker.
/// Freed slots are reused, children's through a stack of free indices, the
/// others' through a list threaded through the free slots.
#[derive(Default)]
pub(crate) struct Slab {
    children: Vec<Option<WeakNodeRef>>,
    free_children: Vec<u32>,
    others: Vec<Slot>,
    first_free_other: Option<u32>,
    len: usize,
}

enum Slot {
    Taken(Registration),
    Free { next: Option<u32> },
}

/// Table slots an emptied slab may keep rather than free: enough that a
/// parent whose few children come and go allocates nothing per child.
const KEPT_SLOTS: usize = 8;

impl Slab {
    fn insert(&mut self, registration: Registration) -> usize {
        let index = match registration {
            Registration::Child(child) => self.insert_child(child) << 1 | CHILD,
            other => self.insert_other(other) << 1 | OTHER,
        };
        assert!(
            index < MAX_KEYS,
            "ctxkit: more than two billion registrations on one context"
        );
        self.len += 1;
        index
    }

    fn insert_child(&mut self, child: WeakNodeRef) -> usize {
        match self.free_children.pop() {
            Some(index) => {
                self.children[index as usize] = Some(child);
                index as usize
            }
            None => {
                self.children.push(Some(child));
                self.children.len() - 1
            }
        }
    }

    fn insert_other(&mut self, registration: Registration) -> usize {
        let Some(index) = self.first_free_other else {
            self.others.push(Slot::Taken(registration));
            return self.others.len() - 1;
        };
        let index = index as usize;
        match std::mem::replace(&mut self.others[index], Slot::Taken(registration)) {
            Slot::Free { next } => self.first_free_other = next,
            Slot::Taken(_) => unreachable!("registry free list points at a taken slot"),
        }
        index
    }

    fn remove(&mut self, key: usize) -> Option<Registration> {
        let (index, kind) = (key >> 1, key & 1);
        // Indices fit in u32: `insert` caps the keys below `u32::MAX`.
        let removed = if kind == CHILD {
            let child = self.children.get_mut(index)?.take()?;
            self.free_children.push(index as u32);
            Registration::Child(child)
        } else {
            let slot = self.others.get_mut(index)?;
            if matches!(slot, Slot::Free { .. }) {
                return None;
            }
            let next = self.first_free_other.replace(index as u32);
            let Slot::Taken(registration) = std::mem::replace(slot, Slot::Free { next }) else {
                unreachable!("checked above")
            };
            registration
        };
        self.len -= 1;
        if self.len == 0 && !self.is_large() {
            // Keep the (small) tables, but forget the free slots: the next
            // registrations start again at index 0.
            self.children.clear();
            self.free_children.clear();
            self.others.clear();
            self.first_free_other = None;
        }
        Some(removed)
    }

    fn is_large(&self) -> bool {
        self.children.capacity() + self.others.capacity() > KEPT_SLOTS
    }

    fn get_mut(&mut self, key: usize) -> Option<&mut Registration> {
        if key & 1 == CHILD {
            return None; // only waiters are ever updated in place
        }
        match self.others.get_mut(key >> 1)? {
            Slot::Taken(registration) => Some(registration),
            Slot::Free { .. } => None,
        }
    }

    fn drain(self) -> impl Iterator<Item = Registration> {
        let children = self.children.into_iter().flatten().map(Registration::Child);
        let others = self.others.into_iter().filter_map(|slot| match slot {
            Slot::Taken(registration) => Some(registration),
            Slot::Free { .. } => None,
        });
        children.chain(others)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Registration {
        Registration::Task(Waker::noop().clone())
    }

    /// A child registration: a weak reference to a fresh scope node, which
    /// the registry never upgrades.
    fn child() -> Registration {
        let (ctx, _cancel) = crate::Context::background().with_cancel();
        let node = ctx.scope_node().expect("a cancel scope");
        Registration::Child(NodeRef::downgrade(node))
    }

    fn is_inline(registry: &Registry) -> bool {
        matches!(registry, Registry::Inline(_))
    }

    #[test]
    fn one_registration_stays_inline_and_keeps_its_key_in_the_slab() {
        for first in [child as fn() -> Registration, waker] {
            let mut registry = Registry::new();
            let a = registry.insert(first());
            assert!(is_inline(&registry));
            let b = registry.insert(waker());
            let c = registry.insert(child());
            assert!(!is_inline(&registry));
            assert_eq!(registry.len(), 3);
            assert!(
                registry.remove(a).is_some(),
                "the inline key survives the move"
            );
            assert!(registry.remove(a).is_none(), "a key is removed once");
            assert!(registry.remove(b).is_some());
            assert!(registry.remove(c).is_some());
            assert!(registry.is_empty());
        }
    }

    #[test]
    fn keys_of_either_kind_are_reused() {
        let mut registry = Registry::new();
        let keep = registry.insert(waker());
        let keys: Vec<_> = [child(), waker(), child(), waker()]
            .into_iter()
            .map(|r| registry.insert(r))
            .collect();
        registry.remove(keys[0]);
        registry.remove(keys[1]);
        assert_eq!(
            registry.insert(child()),
            keys[0],
            "a freed child key is reused"
        );
        assert_eq!(
            registry.insert(waker()),
            keys[1],
            "a freed waiter key is reused"
        );
        assert_eq!(registry.len(), 5);
        assert!(registry.remove(keep).is_some());
    }

    #[test]
    fn a_small_registry_keeps_its_slab_and_a_burst_gives_it_back() {
        let mut registry = Registry::new();
        let a = registry.insert(child());
        let b = registry.insert(child());
        registry.remove(a);
        registry.remove(b);
        assert!(
            !is_inline(&registry),
            "a few children in turn reuse one slab"
        );

        let burst: Vec<_> = (0..100).map(|_| registry.insert(child())).collect();
        for key in burst {
            assert!(registry.remove(key).is_some());
        }
        assert!(is_inline(&registry), "a burst's storage is released");
        assert!(registry.is_empty());
    }

    #[test]
    fn the_inline_slot_answers_only_its_own_key() {
        let mut registry = Registry::new();
        let key = registry.insert(waker());
        assert!(registry.get_mut(key ^ 1).is_none());
        assert!(registry.remove(key ^ 1).is_none());
        assert!(registry.get_mut(key).is_some());
        assert!(registry.remove(key).is_some());
    }

    #[test]
    fn drain_yields_only_taken_slots() {
        let mut registry = Registry::new();
        let keys: Vec<_> = (0..6)
            .map(|i| registry.insert(if i % 2 == 0 { child() } else { waker() }))
            .collect();
        registry.remove(keys[1]);
        registry.remove(keys[2]);
        assert!(registry.get_mut(keys[1]).is_none());
        assert!(registry.get_mut(keys[3]).is_some());
        assert_eq!(registry.drain().count(), 4);
    }
}
