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
//! - Both counts live in one 32-bit word, so one load tells an owner that it
//!   is the only reference of either kind. Such an owner (the common case: a
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
use crate::sync::{fence, AtomicU32, Ordering};
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;

struct Block {
    /// The strong count in the low 24 bits, the weak count in the high 8.
    counts: AtomicU32,
    /// When the node was created, in coarse clock ticks (see
    /// `provenance`): the other half of the word the counts once had to
    /// themselves, so that a block is still 72 bytes (an 80-byte glibc
    /// chunk). Written once, before the block is shared.
    born: u32,
    node: Node,
}

/// One strong reference, in `Block::counts`.
const STRONG: u32 = 1;
/// One weak reference, in `Block::counts`.
const WEAK: u32 = 1 << 24;
/// The counts of a block held by exactly one `NodeRef` and no `WeakNodeRef`.
const SOLE_OWNER: u32 = STRONG + WEAK;
/// Strong counts beyond this abort rather than overflow into the weak count
/// and a use after free (as `Arc` does at `isize::MAX`). A strong reference
/// is a clone of a context or a live child: fifteen million of them on one
/// context (a gigabyte and a half of children) is beyond any real program.
/// The margin below 2^24 absorbs increments racing the check.
const MAX_STRONG: u32 = (1 << 24) - (1 << 20);
/// Weak references are few per node (the implicit one, its place in its
/// parent, its timer entry, a merge's second parent, a tree snapshot's):
/// past this, abort as above.
const MAX_WEAK: u32 = 192;

fn strong_count(counts: u32) -> u32 {
    counts & (WEAK - 1)
}

fn weak_count(counts: u32) -> u32 {
    counts >> 24
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
    /// A node with one owner, made by `make` once its block is allocated.
    ///
    /// Building the node after the allocation lets it be written straight
    /// into the block: a node built first must survive the allocator call on
    /// the stack and is then copied over in 16-byte loads, each of which
    /// stalls on the narrower stores that built it.
    #[inline]
    pub(crate) fn new(make: impl FnOnce() -> Node) -> NodeRef {
        NodeRef {
            block: allocate(make, 1),
        }
    }

    /// A node with two owners, as if [`new`](NodeRef::new) and then cloned,
    /// without the clone's atomic increment.
    #[inline]
    pub(crate) fn new_pair(make: impl FnOnce() -> Node) -> (NodeRef, NodeRef) {
        let block = allocate(make, 2);
        (NodeRef { block }, NodeRef { block })
    }

    fn block(&self) -> &Block {
        // SAFETY: the block lives while any strong reference does.
        unsafe { self.block.as_ref() }
    }

    /// Whether this is the only strong reference to the node: no context
    /// of it, nor of anything derived from it (each holds its parent), is
    /// left. Only an upgrade of a weak reference (a parent's cancel, the
    /// timer, a tree snapshot) can make another after this says true.
    pub(crate) fn is_only_strong(&self) -> bool {
        // Acquire: pairs with the Release decrement of every other strong
        // reference dropped, so whatever its owner did to the node (such
        // as registering on it) happens before our look.
        strong_count(self.block().counts.load(Ordering::Acquire)) == 1
    }

    pub(crate) fn downgrade(this: &NodeRef) -> WeakNodeRef {
        // Relaxed: our strong reference keeps the block alive, so nothing
        // needs ordering here (as in `Arc::downgrade`).
        let previous = this.block().counts.fetch_add(WEAK, Ordering::Relaxed);
        if weak_count(previous) >= MAX_WEAK {
            std::process::abort();
        }
        WeakNodeRef { block: this.block }
    }
}

#[inline]
fn allocate(make: impl FnOnce() -> Node, strong: u32) -> NonNull<Block> {
    let block = spare::take().unwrap_or_else(|| {
        let layout = Layout::new::<Block>();
        // SAFETY: `Block` has a non-zero size.
        let raw = unsafe { alloc(layout) }.cast::<Block>();
        NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
    });
    // `make` only moves values in and clones the parent (which aborts, not
    // panics, on overflow); were it to panic, the block would leak unused.
    // SAFETY: allocated for a `Block` and unused (fresh, or a spare whose
    // node was dropped and which nobody can reach), so valid for the write.
    unsafe {
        block.as_ptr().write(Block {
            counts: AtomicU32::new(strong * STRONG + WEAK),
            born: crate::provenance::now_ticks(),
            node: make(),
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
        if strong_count(previous) >= MAX_STRONG {
            std::process::abort();
        }
        NodeRef { block: self.block }
    }
}

impl Drop for NodeRef {
    #[inline]
    fn drop(&mut self) {
        let counts = &self.block().counts;
        // The common case first, inline: another reference remains. (A sole
        // owner is not decremented: `release_last_strong` frees it as it is.)
        // Release: our uses of the node happen before its drop by whoever
        // lets go last.
        if counts.load(Ordering::Relaxed) != SOLE_OWNER
            && strong_count(counts.fetch_sub(STRONG, Ordering::Release)) != 1
        {
            return;
        }
        // SAFETY: `self` was the last strong reference, given up here and
        // never used again.
        unsafe { release_last_strong(self.block) }
    }
}

/// Drops the node of `block`, whose last strong reference was just given up
/// (decremented to zero, or left at one by a sole owner), and frees the
/// block; then gives up the node's reference to its parent the same way, and
/// so on up the chain: iteratively, so a chain of any depth is freed in
/// constant stack.
///
/// # Safety
///
/// The caller gave up the last strong reference to `block` as `drop` does.
unsafe fn release_last_strong(mut block: NonNull<Block>) {
    loop {
        // SAFETY: the block stays allocated until we free it below.
        let counts = unsafe { &block.as_ref().counts };
        // Acquire: a sole owner's load reads what the last other reference's
        // Release decrement wrote; after a decrement to zero, pairs with
        // every other owner's. Either way their uses of the node happen
        // before we drop it. A sole owner (no reference of either kind but
        // ours) needs no update of the counts: the block is about to be
        // freed, and nobody can make a reference from nothing.
        let sole_owner = counts.load(Ordering::Acquire) == SOLE_OWNER;
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
        // Give up the node's reference to its parent as `drop` does.
        let parent = ManuallyDrop::new(parent);
        let counts = &parent.block().counts;
        if counts.load(Ordering::Relaxed) != SOLE_OWNER
            && strong_count(counts.fetch_sub(STRONG, Ordering::Release)) != 1
        {
            return;
        }
        block = parent.block;
    }
}

/// When `node` was created, in coarse clock ticks.
pub(crate) fn born(node: &Node) -> u32 {
    // SAFETY: every node lives in a block, at this offset (`raw_address`),
    // and `born` is written before the block is shared, never after.
    unsafe { (*(raw_address(node) as *const Block)).born }
}

/// The address [`WeakNodeRef::into_raw`] gives for a reference to `node`.
pub(crate) fn raw_address(node: &Node) -> usize {
    // Every node lives in a block, at this offset.
    node as *const Node as usize - std::mem::offset_of!(Block, node)
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
    /// The reference as an address, for an atomic slot; [`from_raw`]
    /// turns it back. The address is [`raw_address`] of the node.
    ///
    /// [`from_raw`]: WeakNodeRef::from_raw
    pub(crate) fn into_raw(self) -> usize {
        ManuallyDrop::new(self).block.as_ptr() as usize
    }

    /// The reference [`into_raw`](WeakNodeRef::into_raw) gave out.
    ///
    /// # Safety
    ///
    /// `raw` comes from `into_raw`, and is turned back once.
    pub(crate) unsafe fn from_raw(raw: usize) -> WeakNodeRef {
        // SAFETY: `into_raw` gave the address of a live block (its weak
        // reference keeps it allocated), never null.
        WeakNodeRef {
            block: unsafe { NonNull::new_unchecked(raw as *mut Block) },
        }
    }

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
            if strong >= MAX_STRONG {
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
/// rest of a derivation; a push and a pop on a list threaded through the
/// kept blocks cost a few instructions. On the `CancelTree` benchmarks
/// (chains of 100 and 1,000 contexts) this is a third of the time.
///
/// Bounded: at most 1,024 blocks (80 KiB) per thread; beyond that, and when
/// the thread exits, blocks go back to the allocator.
#[cfg(not(loom))]
mod spare {
    use super::Block;
    use std::alloc::{dealloc, Layout};
    use std::cell::Cell;
    use std::ptr::NonNull;

    /// Enough for a chain of a thousand contexts.
    const KEPT: usize = 1024;

    /// The kept blocks, as a list threaded through the blocks themselves:
    /// the first bytes of a kept block hold the address of the next.
    /// No `Drop`, so reaching it costs no more than a thread-local address;
    /// [`Guard`] empties it when the thread exits.
    struct Spare {
        head: Cell<Option<NonNull<Block>>>,
        len: Cell<usize>,
        guard: Cell<GuardState>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum GuardState {
        /// The guard has not been touched on this thread yet.
        Unarmed,
        /// The guard will empty the list when the thread exits.
        Armed,
        /// The thread is exiting: keep nothing more.
        Gone,
    }

    struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            SPARE.with(|spare| {
                spare.guard.set(GuardState::Gone);
                while let Some(block) = pop(spare) {
                    // SAFETY: every kept block came from `allocate` with
                    // this layout and is unreachable (see `keep`).
                    unsafe { dealloc(block.as_ptr().cast(), Layout::new::<Block>()) }
                }
            });
        }
    }

    thread_local! {
        static SPARE: Spare = const {
            Spare {
                head: Cell::new(None),
                len: Cell::new(0),
                guard: Cell::new(GuardState::Unarmed),
            }
        };
        static GUARD: Guard = const { Guard };
    }

    /// The address of the next kept block, stored in `block`'s first bytes.
    fn link(block: NonNull<Block>) -> NonNull<Option<NonNull<Block>>> {
        // A block is larger than a pointer and at least as aligned.
        block.cast()
    }

    fn pop(spare: &Spare) -> Option<NonNull<Block>> {
        let block = spare.head.get()?;
        // SAFETY: `keep` wrote the link into this kept block, which nobody
        // else can reach.
        spare.head.set(unsafe { link(block).read() });
        spare.len.set(spare.len.get() - 1);
        Some(block)
    }

    /// A kept block, if this thread has one. Its contents are garbage.
    #[inline]
    pub(super) fn take() -> Option<NonNull<Block>> {
        SPARE.with(pop)
    }

    /// Keeps `block`, which must be unreachable, its node dropped; hands it
    /// back if this thread keeps enough already, or is exiting.
    #[inline]
    pub(super) fn keep(block: NonNull<Block>) -> Result<(), NonNull<Block>> {
        SPARE.with(|spare| {
            if spare.len.get() == KEPT || !armed(spare) {
                return Err(block);
            }
            // SAFETY: the block is unreachable by anyone else and its node
            // dropped: its bytes are ours to reuse for the link.
            unsafe { link(block).write(spare.head.get()) };
            spare.head.set(Some(block));
            spare.len.set(spare.len.get() + 1);
            Ok(())
        })
    }

    /// Whether the guard will empty the list at thread exit, arming it on
    /// first use.
    fn armed(spare: &Spare) -> bool {
        match spare.guard.get() {
            GuardState::Armed => true,
            GuardState::Gone => false,
            GuardState::Unarmed => {
                // Touching the guard registers its destructor; it fails
                // once the thread's destructors have run.
                let state = match GUARD.try_with(|_| ()) {
                    Ok(()) => GuardState::Armed,
                    Err(_) => GuardState::Gone,
                };
                spare.guard.set(state);
                state == GuardState::Armed
            }
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

    fn counts(node: &NodeRef) -> (u32, u32) {
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
        assert!(
            std::mem::size_of::<Block>() <= 72,
            "a block stays in an 80-byte malloc chunk"
        );
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
