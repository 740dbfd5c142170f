//! What a live cancellation scope must notify when it ends.
//!
//! A [`Registry`] is a slab: each registration gets a key that stays valid
//! until its owner removes it or the scope ends and drains them all. Keys are
//! reused, so a parent that derives and drops a million children one after
//! another holds one slot, not a million. When the last registration leaves,
//! the storage is released, so a burst of children leaves nothing behind.
//!
//! Invariant (kept by `cancel.rs`): a registry lives only while its scope is
//! live, and is drained exactly once when the scope ends. A key is therefore
//! never reused behind its owner's back: the owner removes its own key, and
//! after a drain no key is handed out again.

use crate::context::Node;
use crate::sync::{thread::Thread, Arc, Weak};
use std::task::Waker;

/// One thing to notify when a scope ends.
pub(crate) enum Registration {
    /// A derived cancellation scope. Weak, so that a child nobody holds any
    /// more is freed (its `Drop` then removes this entry).
    Child(Weak<Node>),
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
    pub(crate) _keepalive: Arc<Node>,
}

enum Slot {
    Taken(Registration),
    Free { next: u32 },
}

const NO_FREE_SLOT: u32 = u32::MAX;

/// A slab of registrations with stable keys.
///
/// Keys and counts are `u32` to keep every scope small: four billion
/// registrations on one scope at once is far beyond any real tree.
pub(crate) struct Registry {
    slots: Vec<Slot>,
    first_free: u32,
    len: u32,
}

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry {
            slots: Vec::new(),
            first_free: NO_FREE_SLOT,
            len: 0,
        }
    }

    /// How many registrations are held.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn insert(&mut self, registration: Registration) -> usize {
        self.len = self
            .len
            .checked_add(1)
            .filter(|len| *len < NO_FREE_SLOT)
            .expect("ctxkit: more than four billion registrations on one context");
        if self.first_free == NO_FREE_SLOT {
            self.slots.push(Slot::Taken(registration));
            return self.slots.len() - 1;
        }
        let key = self.first_free as usize;
        match std::mem::replace(&mut self.slots[key], Slot::Taken(registration)) {
            Slot::Free { next } => self.first_free = next,
            Slot::Taken(_) => unreachable!("registry free list points at a taken slot"),
        }
        key
    }

    /// Removes the registration under `key`, handing it back so that the
    /// caller drops it after releasing the scope's lock (dropping a waker or a
    /// callback runs foreign code).
    pub(crate) fn remove(&mut self, key: usize) -> Option<Registration> {
        let slot = self.slots.get_mut(key)?;
        if matches!(slot, Slot::Free { .. }) {
            return None;
        }
        let Slot::Taken(registration) = std::mem::replace(
            slot,
            Slot::Free {
                next: self.first_free,
            },
        ) else {
            unreachable!()
        };
        // Keys fit in u32: `insert` caps the count, hence the slots, below it.
        self.first_free = key as u32;
        self.len -= 1;
        if self.len == 0 {
            // Nothing left: give the memory back rather than keep a free list
            // as long as the largest burst of children ever seen.
            *self = Registry::new();
        }
        Some(registration)
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Registration> {
        match self.slots.get_mut(key)? {
            Slot::Taken(registration) => Some(registration),
            Slot::Free { .. } => None,
        }
    }

    /// Every registration, in no particular order; the registry is consumed.
    pub(crate) fn drain(self) -> impl Iterator<Item = Registration> {
        self.slots.into_iter().filter_map(|slot| match slot {
            Slot::Taken(registration) => Some(registration),
            Slot::Free { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Registration {
        Registration::Task(Waker::noop().clone())
    }

    #[test]
    fn keys_are_reused_and_storage_released_when_empty() {
        let mut registry = Registry::new();
        let a = registry.insert(waker());
        let b = registry.insert(waker());
        assert_ne!(a, b);
        assert!(registry.remove(a).is_some());
        assert!(registry.remove(a).is_none(), "a key is removed once");
        let c = registry.insert(waker());
        assert_eq!(c, a, "a freed key is handed out again");
        assert_eq!(registry.len(), 2);
        registry.remove(b);
        registry.remove(c);
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.slots.capacity(), 0);
    }

    #[test]
    fn drain_yields_only_taken_slots() {
        let mut registry = Registry::new();
        let keys: Vec<_> = (0..5).map(|_| registry.insert(waker())).collect();
        registry.remove(keys[1]);
        registry.remove(keys[3]);
        assert!(registry.get_mut(keys[1]).is_none());
        assert!(registry.get_mut(keys[2]).is_some());
        assert_eq!(registry.drain().count(), 3);
    }
}
