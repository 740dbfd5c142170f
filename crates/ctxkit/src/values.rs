//! Request-scoped values, keyed by type.
//!
//! Each `with_value` layer carries an index of every value visible from it:
//! its own and its ancestors', one per type, nearest first, sorted by
//! `TypeId`. A lookup is a binary search in the nearest value layer, however
//! deep the chain: `value::<T>()` on a context under a hundred value layers
//! costs a handful of comparisons, not a hundred pointer hops. The price is
//! paid once per `with_value`: the parent's index is copied (reference
//! counts, no value is cloned), which is small for the few values a request
//! carries.

use crate::node_ref::NodeRef;
use crate::sync::Arc;
use std::any::{Any, TypeId};

/// One `with_value` layer.
pub(crate) struct ValueLayer {
    /// The nearest cancellation scope above this layer, so that observing a
    /// value context is as cheap as observing its scope.
    pub(crate) scope: Option<NodeRef>,
    /// The type this layer added, for `Debug`.
    pub(crate) type_name: &'static str,
    /// Where the layer was created (`provenance`), set by its deriver.
    pub(crate) site: crate::provenance::SiteId,
    index: Box<[Entry]>,
}

struct Entry {
    type_id: TypeId,
    value: Arc<dyn Any + Send + Sync>,
}

impl Entry {
    /// The same value under the same type, for another index (a reference
    /// count, never a clone of the value).
    fn share(&self) -> Entry {
        Entry {
            type_id: self.type_id,
            value: self.value.clone(),
        }
    }
}

impl ValueLayer {
    /// A layer holding `value` on top of the values in `parent` (the nearest
    /// value layer above, if any).
    pub(crate) fn new<T: Send + Sync + 'static>(
        scope: Option<NodeRef>,
        parent: Option<&ValueLayer>,
        value: T,
    ) -> ValueLayer {
        let inherited = parent.map_or(&[][..], |layer| &layer.index[..]);
        let type_id = TypeId::of::<T>();
        let entry = Entry {
            type_id,
            value: Arc::new(value),
        };
        let mut index = Vec::with_capacity(inherited.len() + 1);
        index.extend(inherited.iter().map(Entry::share));
        match index.binary_search_by_key(&type_id, |entry| entry.type_id) {
            // The nearest value of a type wins: it replaces the ancestor's.
            Ok(position) => index[position] = entry,
            Err(position) => index.insert(position, entry),
        }
        ValueLayer {
            scope,
            type_name: std::any::type_name::<T>(),
            site: 0,
            index: index.into_boxed_slice(),
        }
    }

    /// The values of `first` and `second` in one index, `first`'s winning
    /// where both hold a type: a merged context's values.
    pub(crate) fn merged(first: Option<&ValueLayer>, second: &ValueLayer) -> ValueLayer {
        let first = first.map_or(&[][..], |layer| &layer.index[..]);
        let mut index: Vec<Entry> = Vec::with_capacity(first.len() + second.index.len());
        // Both are sorted by type: merge them, keeping `first`'s on a tie.
        let (mut a, mut b) = (first.iter().peekable(), second.index.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            let take = if x.type_id <= y.type_id {
                if x.type_id == y.type_id {
                    b.next();
                }
                a.next()
            } else {
                b.next()
            };
            index.extend(take.map(Entry::share));
        }
        index.extend(a.chain(b).map(Entry::share));
        ValueLayer {
            scope: None,
            type_name: "merge",
            site: 0,
            index: index.into_boxed_slice(),
        }
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let type_id = TypeId::of::<T>();
        let position = self
            .index
            .binary_search_by_key(&type_id, |entry| entry.type_id)
            .ok()?;
        self.index[position].value.downcast_ref()
    }
}
