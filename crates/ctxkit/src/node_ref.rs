//! Reference counting for context nodes: `Arc` and `Weak`, cut to what the
//! tree needs.
//!
//! Every derived context is one [`Node`] in one heap block, shared by the
//! contexts that view it, its [`CancelHandle`](crate::CancelHandle), and its
//! children. `std::sync::Arc` would do, but a derivation is mostly reference
//! counting, and what `Arc` cannot offer saves most of it:
//!
//! - [`NodeRef::new_pair`] starts a block with two owners (the context and
//!   its handle) instead of creating one and cloning it: one atomic
//!   read-modify-write (RMW) less per `with_cancel`.
//! - Both counts live in one word, so one load tells an owner that it is the
//!   only reference of either kind. Such an owner (the common case: a
//!   context dropped after its handle, with no registration pointing at it)
//!   frees the node with no RMW at all, where `Arc` needs two.
//! - The last owner of a node releases its parent in the same loop, so a
//!   chain of any depth is freed without recursion and without moving each
//!   node out of its block first.
//!
//! Freed blocks are kept for reuse by the thread that freed them, up to a
//! bound (see [`spare`]).
//!
//! The counts use the atomics of [`crate::sync`], so loom models see them:
//! a model explores the orders in which the last owners let go.
//!
//! # Invariants
//!
//! - The strong count counts the [`NodeRef`]s. The node is dropped once it
//!   reaches zero (or once the only `NodeRef` is given up with no
//!   `WeakNodeRef` left), and a `NodeRef` is never made from zero again.
//! - The weak count counts the [`WeakNodeRef`]s, plus one held by all the
//!   strong references together. The block is freed when both reach zero.
//! - A new reference of either kind is only ever made from an existing one:
//!   whoever holds the only reference of both kinds holds the block alone.

use crate::context::Node;
use crate::sync::{fence, AtomicU64, Ordering};
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;

struct Block {
    /// The strong count in the low half, the weak count in the high half.
    counts: AtomicU64,
    node: Node,
}

/// One strong reference, in `Block::counts`.
const STRONG: u64 = 1;
/// One weak reference, in `Block::counts`.
const WEAK: u64 = 1 << 32;
/// The counts of a block held by exactly one `NodeRef` and no `WeakNodeRef`.
const SOLE_OWNER: u64 = STRONG + WEAK;
/// Counts beyond this are references leaked in a loop; abort rather than
/// overflow into a use after free (as `Arc` does). Two billion references
/// to one context is far beyond any real program.
const MAX_REFS: u64 = i32::MAX as u64;

fn strong_count(counts: u64) -> u64 {
    counts & (WEAK - 1)
}

fn weak_count(counts: u64) -> u64 {
    counts >> 32
}

/// A strong reference to a node: keeps it alive and readable.
pub(crate) struct NodeRef {
    block: NonNull<Block>,
}

/// A weak reference to a node: keeps its memory, not its life.
/// [`upgrade`](WeakNodeRef::upgrade) yields a [`NodeRef`] while the node
/// lives.
pub(crate) struct WeakNodeRef {
    block: NonNull<Block>,
}

// SAFETY: a `NodeRef` gives shared access (`&Node`) to a node that is `Send +
// Sync` (all its interior mutability is atomics and mutexes), and the counts
// are atomic: sending or sharing it across threads is sharing `&Node` and
// dropping a counted reference, as for `Arc<Node>`.
unsafe impl Send for NodeRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for NodeRef {}
// SAFETY: a `WeakNodeRef` only touches the atomic counts, or yields a
// `NodeRef`, which is `Send + Sync` as above.
unsafe impl Send for WeakNodeRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for WeakNodeRef {}

impl NodeRef {
    /// A node with one owner.
    #[inline]
    pub(crate) fn new(node: Node) -> NodeRef {
        NodeRef {
            block: allocate(node, 1),
        }
    }

    /// A node with two owners, as if [`new`](NodeRef::new) and then cloned,
    /// without the clone's atomic increment.
    #[inline]
    pub(crate) fn new_pair(node: Node) -> (NodeRef, NodeRef) {
        let block = allocate(node, 2);
        (NodeRef { block }, NodeRef { block })
    }

    fn block(&self) -> &Block {
        // SAFETY: the block lives while any strong reference does.
        unsafe { self.block.as_ref() }
    }

    pub(crate) fn downgrade(this: &NodeRef) -> WeakNodeRef {
        // Relaxed: our strong reference keeps the block alive, so nothing
        // needs ordering here (as in `Arc::downgrade`).
        let previous = this.block().counts.fetch_add(WEAK, Ordering::Relaxed);
        if weak_count(previous) >= MAX_REFS {
            std::process::abort();
        }
        WeakNodeRef { block: this.block }
    }
}

#[inline]
fn allocate(node: Node, strong: u64) -> NonNull<Block> {
    let block = spare::take().unwrap_or_else(|| {
        let layout = Layout::new::<Block>();
        // SAFETY: `Block` has a non-zero size.
        let raw = unsafe { alloc(layout) }.cast::<Block>();
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
    });
    // SAFETY: allocated for a `Block` and unused (fresh, or a spare whose
    // node was dropped and which nobody can reach), so valid for the write.
    unsafe {
        block.as_ptr().write(Block {
            counts: AtomicU64::new(strong * STRONG + WEAK),
            node,
        });
    }
    block
}

impl Deref for NodeRef {
    type Target = Node;

    #[inline]
    fn deref(&self) -> &Node {
        &self.block().node
    }
}

impl Clone for NodeRef {
    #[inline]
    fn clone(&self) -> NodeRef {
        // Relaxed: a new reference can only be made from an existing one,
        // which keeps the node alive meanwhile (as in `Arc::clone`).
        let previous = self.block().counts.fetch_add(STRONG, Ordering::Relaxed);
        if strong_count(previous) >= MAX_REFS {
            std::process::abort();
        }
        NodeRef { block: self.block }
    }
}

impl Drop for NodeRef {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `self` is a strong reference, given up here and never used
        // again.
        unsafe { release_strong(self.block) }
    }
}

/// Gives up one strong reference to `block`. If it was the last, drops the
/// node and frees the block, then gives up the node's reference to its
/// parent the same way, and so on up the chain: iteratively, so a chain of
/// any depth is freed in constant stack.
///
/// # Safety
///
/// The caller owns one strong reference to `block` and does not use it after.
unsafe fn release_strong(mut block: NonNull<Block>) {
    loop {
        // SAFETY: our strong reference keeps the block alive until we give
        // it up below.
        let counts = unsafe { &block.as_ref().counts };
        // Acquire: if we are the sole owner, this load reads what the last
        // other reference's Release decrement wrote, so everything its owner
        // did happens before we drop the node. Nobody else can then make a
        // reference (there is none to make it from), so the counts are ours
        // and need no update: the block is about to be freed.
        let sole_owner = counts.load(Ordering::Acquire) == SOLE_OWNER;
        if !sole_owner {
            // Release: our uses of the node happen before its drop by
            // whoever lets go last.
            let previous = counts.fetch_sub(STRONG, Ordering::Release);
            if strong_count(previous) != 1 {
                return;
            }
            // Acquire: pairs with every other owner's Release decrement, so
            // their uses of the node happen before we drop it.
            fence(Ordering::Acquire);
        }
        // SAFETY: no `NodeRef` remains and none can be made (`upgrade`
        // refuses a zero strong count; a sole owner has no `WeakNodeRef` to
        // upgrade): we have the node to ourselves.
        let node = unsafe { &mut (*block.as_ptr()).node };
        node.release();
        // Taken before the node is dropped, so that dropping the node's own
        // fields (a value layer's reference to the scope above, say) never
        // frees the chain above recursively: the parent keeps it alive until
        // the next turn of this loop.
        let parent = node.take_parent();
        // SAFETY: the node is ours (above) and dropped once; nothing reads it
        // after, and the block's counts are not part of it.
        unsafe { std::ptr::drop_in_place(node) };
        if sole_owner {
            // SAFETY: unreachable by anyone else all along (above).
            unsafe { free(block) };
        } else {
            // SAFETY: the strong references' implicit weak reference is ours
            // to give up now that the node is dropped.
            unsafe { release_weak(block, true) };
        }
        let Some(parent) = parent else {
            return;
        };
        // The parent's strong reference is released by the next turn.
        block = ManuallyDrop::new(parent).block;
    }
}

/// Gives up one weak reference to `block`, freeing it if it was the last.
/// `implicit` is true for the one the strong references held together: then
/// no `NodeRef` exists any more, and a weak count of one means no
/// `WeakNodeRef` exists either, nor can one be made (that needs a reference
/// of either kind), so the block is freed without a read-modify-write.
///
/// # Safety
///
/// The caller owns the weak reference and does not use it after.
#[inline]
unsafe fn release_weak(block: NonNull<Block>, implicit: bool) {
    // SAFETY: our weak reference keeps the block allocated.
    let counts = unsafe { &block.as_ref().counts };
    // Acquire: pairs with the Release decrements of weak references dropped
    // before, so their reads of the block happen before we free it. (The
    // strong count is zero whenever a weak reference is the last one.)
    let last = (implicit && counts.load(Ordering::Acquire) == WEAK)
        || counts.fetch_sub(WEAK, Ordering::Release) == WEAK;
    if !last {
        return;
    }
    fence(Ordering::Acquire);
    // SAFETY: the last reference of either kind is gone: nobody can reach
    // the block.
    unsafe { free(block) }
}

/// Frees `block`, whose node has been dropped.
///
/// # Safety
///
/// Nobody can reach `block` any more.
#[inline]
unsafe fn free(block: NonNull<Block>) {
    // The counts need no drop.
    if let Err(block) = spare::keep(block) {
        // SAFETY: allocated by `allocate` with this layout, and unreachable.
        unsafe { dealloc(block.as_ptr().cast(), Layout::new::<Block>()) }
    }
}

impl WeakNodeRef {
    /// A strong reference, if the node still lives.
    pub(crate) fn upgrade(&self) -> Option<NodeRef> {
        // SAFETY: our weak reference keeps the block allocated.
        let counts = &unsafe { self.block.as_ref() }.counts;
        let mut current = counts.load(Ordering::Relaxed);
        loop {
            let strong = strong_count(current);
            if strong == 0 {
                return None; // the node is dropped, or being dropped
            }
            if strong >= MAX_REFS {
                std::process::abort();
            }
            // Acquire on success, as in `Weak::upgrade`: what the node's
            // other owners did before we read it stays ordered before.
            match counts.compare_exchange_weak(
                current,
                current + STRONG,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(NodeRef { block: self.block }),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for WeakNodeRef {
    fn drop(&mut self) {
        // SAFETY: `self` is a weak reference, given up here and never used
        // again.
        unsafe { release_weak(self.block, false) }
    }
}

/// Freed blocks kept per thread and handed out again by the next derivation
/// on that thread.
///
/// Trees are built and torn down in bursts: a request derives its contexts,
/// then drops them all. glibc's `free` of a small block past its tiny
/// per-thread cache, and the `malloc` that takes it back, cost as much as the
/// rest of a derivation; a vector push and pop cost a few instructions. On
/// the `CancelTree` benchmarks (chains of 100 and 1,000 contexts) this is a
/// third of the time.
///
/// Bounded: at most 1,024 blocks (80 KiB) per thread; beyond that,
/// and when the thread exits, blocks go back to the allocator.
#[cfg(not(loom))]
mod spare {
    use super::Block;
    use std::alloc::{dealloc, Layout};
    use std::cell::RefCell;
    use std::ptr::NonNull;

    /// Enough for a chain of a thousand contexts.
    const KEPT: usize = 1024;

    struct Spare(Vec<NonNull<Block>>);

    impl Drop for Spare {
        fn drop(&mut self) {
            for block in self.0.drain(..) {
                // SAFETY: every kept block came from `allocate` with this
                // layout and is unreachable (see `keep`).
                unsafe { dealloc(block.as_ptr().cast(), Layout::new::<Block>()) }
            }
        }
    }

    thread_local! {
        static SPARE: RefCell<Spare> = const { RefCell::new(Spare(Vec::new())) };
    }

    /// A kept block, if this thread has one. Its contents are garbage.
    #[inline]
    pub(super) fn take() -> Option<NonNull<Block>> {
        // `try_with`: while the thread exits, the cache may be gone already.
        SPARE.try_with(|spare| spare.borrow_mut().0.pop()).ok()?
    }

    /// Keeps `block`, which must be unreachable, its node dropped; hands it
    /// back if this thread keeps enough already.
    #[inline]
    pub(super) fn keep(block: NonNull<Block>) -> Result<(), NonNull<Block>> {
        let kept = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.0.len() == KEPT {
                return false;
            }
            spare.0.push(block);
            true
        });
        match kept {
            Ok(true) => Ok(()),
            _ => Err(block),
        }
    }
}

/// Under loom all model threads share one OS thread, so a thread-local cache
/// would pass blocks between them behind the model's back: there is none.
#[cfg(loom)]
mod spare {
    use super::Block;
    use std::ptr::NonNull;

    #[inline]
    pub(super) fn take() -> Option<NonNull<Block>> {
        None
    }

    #[inline]
    pub(super) fn keep(block: NonNull<Block>) -> Result<(), NonNull<Block>> {
        Err(block)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Context;

    fn counts(node: &NodeRef) -> (u64, u64) {
        let counts = node.block().counts.load(Ordering::Relaxed);
        (strong_count(counts), weak_count(counts))
    }

    fn scope_node(ctx: &Context) -> &NodeRef {
        ctx.scope_node().expect("a cancel scope")
    }

    /// The block size is part of the published bytes per child.
    #[test]
    fn a_block_is_a_node_and_one_word() {
        assert_eq!(
            std::mem::size_of::<Block>(),
            std::mem::size_of::<Node>() + 8
        );
        assert!(std::mem::size_of::<Block>() <= 64);
    }

    #[test]
    fn a_pair_is_born_with_two_owners_and_counts_follow_references() {
        let (ctx, handle) = Context::background().with_cancel();
        let node = scope_node(&ctx);
        assert_eq!(counts(node), (2, 1), "context and handle, implicit weak");
        let clone = ctx.clone();
        assert_eq!(counts(node), (3, 1));
        let weak = NodeRef::downgrade(node);
        assert_eq!(counts(node), (3, 2));
        drop(clone);
        handle.detach();
        assert_eq!(counts(node), (1, 2));
        let upgraded = weak.upgrade().expect("still alive");
        assert_eq!(counts(&upgraded), (2, 2));
        drop(upgraded);
        drop(ctx);
        assert!(weak.upgrade().is_none(), "the last owner dropped the node");
    }

    #[test]
    fn a_deep_chain_is_freed_without_recursion() {
        let mut ctx = Context::background();
        for _ in 0..200_000 {
            let (child, handle) = ctx.with_cancel();
            handle.detach();
            ctx = child;
        }
        let leaf = NodeRef::downgrade(scope_node(&ctx));
        drop(ctx);
        assert!(leaf.upgrade().is_none());
    }

    #[test]
    fn spare_blocks_are_reused_and_bounded() {
        // Empty this thread's spares, then free more blocks than it keeps.
        while let Some(block) = spare::take() {
            // SAFETY: a kept block is unreachable; it came from `allocate`.
            unsafe { dealloc(block.as_ptr().cast(), Layout::new::<Block>()) }
        }
        let contexts: Vec<_> = (0..1_500)
            .map(|_| {
                let (ctx, handle) = Context::background().with_cancel();
                handle.detach();
                ctx
            })
            .collect();
        drop(contexts);
        let mut kept = Vec::new();
        while let Some(block) = spare::take() {
            kept.push(block);
        }
        assert_eq!(kept.len(), 1_024, "the thread keeps at most its bound");
        for block in kept {
            // SAFETY: as above.
            unsafe { dealloc(block.as_ptr().cast(), Layout::new::<Block>()) }
        }
    }
}
