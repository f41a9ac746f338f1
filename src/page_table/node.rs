//! Page-table nodes: 64-way inner nodes and leaves of 64 pages, with
//! reference counts kept under the store's lock (see [`super::store`]).
//!
//! ```text
//!   Node (line aligned)
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │ refs · id · origin · changed · stored         (first line)   │
//!   ├──────────────────────────────────────────────────────────────┤
//!   │ Inner: children[64]  (NodePtr or none)                       │
//!   │ Leaf:  meta[64] (state bytes) · slot[64] (u64 words)         │
//!   └──────────────────────────────────────────────────────────────┘
//!   slot word: a view page's distance to its section page (state has VIEW),
//!              otherwise a PageRec pointer, or 0 for a page without bytes
//! ```
//!
//! `id` is unique per node; a node made by copying another records that
//! node's id in `origin`, and every change to a child or entry sets its bit
//! in `changed`. Two nodes where one is the other's origin can then differ
//! only in the children `x.changed | y.changed`, so a diff of related
//! versions visits only those.
//!
//! This module also holds the cache prefetch hint the diff walk uses to
//! overlap its misses ([`prefetch`]).

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::{Guard, RecPtr};
use super::{FANOUT, PageBytes};
use crate::protection::meta;

/// Source of node ids; 0 means "no origin".
static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A leaf's contents.
#[derive(Clone)]
pub(crate) struct LeafBody {
    /// State bytes (see `protection::meta`).
    pub(crate) meta: [u8; FANOUT],
    /// Slot words (see the module docs).
    pub(crate) slots: [u64; FANOUT],
    /// For a page with a record: its bytes' address when the record had
    /// them as the entry was set (0 otherwise: a lazily loaded page not yet
    /// read is reached through its record). A read then costs no hop
    /// through the record.
    pub(crate) bytes: [usize; FANOUT],
}

impl LeafBody {
    /// The page record of entry `i`, if it has one.
    #[inline]
    pub(crate) fn rec(&self, i: usize) -> Option<RecPtr> {
        (self.meta[i] & meta::VIEW == 0 && self.slots[i] != 0).then(|| RecPtr::from_word(self.slots[i]))
    }

    /// Sets entry `i`'s slot word (its state byte already set), and the
    /// direct bytes address that goes with it.
    #[inline]
    pub(crate) fn set_slot(&mut self, i: usize, word: u64) {
        self.slots[i] = word;
        self.bytes[i] = match self.rec(i) {
            // SAFETY (in `RecPtr::get`'s terms): the entry references the
            // record from now on.
            #[allow(unsafe_code)]
            Some(r) => unsafe { r.get() }.loaded().map_or(0, |b| (b as *const PageBytes).expose_provenance()),
            None => 0,
        };
    }

    /// The view offset of entry `i` (0 for a page that is not a view page).
    #[inline]
    pub(crate) fn view_offset(&self, i: usize) -> u64 {
        if self.meta[i] & meta::VIEW != 0 { self.slots[i] } else { 0 }
    }
}

/// A node's contents. Inner nodes are 1/64 of the nodes, so padding them
/// to a leaf's size costs little, while boxing leaves would add a pointer
/// hop to every lookup.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Body {
    Inner([Option<NodePtr>; FANOUT]),
    Leaf(LeafBody),
}

/// See the module docs.
#[repr(C, align(64))]
pub(crate) struct Node {
    refs: UnsafeCell<u32>,
    pub(crate) id: u64,
    pub(crate) origin: u64,
    pub(crate) changed: u64,
    /// Pages with bytes (records) under this node.
    pub(crate) stored: u64,
    pub(crate) body: Body,
}

// SAFETY: `refs` is read and written only through a `Guard` (the store's
// lock held); every other field is changed only while the node is
// reachable from exactly one table, owned mutably by its one user.
unsafe impl Sync for Node {}
// SAFETY: as above.
unsafe impl Send for Node {}

/// A pointer to a live node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct NodePtr(NonNull<Node>);

// SAFETY: a pointer to a `Sync` node.
unsafe impl Send for NodePtr {}
// SAFETY: as above.
unsafe impl Sync for NodePtr {}

impl NodePtr {
    /// The node. Callers hold a table that references it for as long as
    /// the borrow lives (the invariant every caller in this module tree
    /// keeps: nodes are reached only by walking from a table's root).
    #[inline]
    pub(crate) fn get<'a>(self) -> &'a Node {
        // SAFETY: see above; a node is freed only when its count reaches
        // zero, i.e. when no table reaches it.
        unsafe { self.0.as_ref() }
    }

    /// The node, for changing it in place.
    ///
    /// # Safety
    /// The node must be reachable from exactly one table (every node on the
    /// path from that table's root has one reference), and that table must
    /// be borrowed mutably by the caller: no other reader can see it.
    #[inline]
    pub(crate) unsafe fn get_mut<'a>(self) -> &'a mut Node {
        // SAFETY: by the caller's promise, nothing else reaches the node.
        unsafe { &mut *self.0.as_ptr() }
    }
}

/// Hints the CPU to start loading `value`'s cache line. No effect on
/// anything but timing; a no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline, and a prefetch never
    // faults or reads into the program: it only names an address (here a
    // valid reference).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl Guard<'_> {
    /// A new node (one reference, the caller's), in a spare allocation when
    /// there is one.
    fn alloc(&mut self, body: Body, stored: u64, origin: u64) -> NodePtr {
        let node = Node { refs: UnsafeCell::new(1), id: next_id(), origin, changed: 0, stored, body };
        let boxed = match self.pool.spare_nodes.pop() {
            Some(mut spare) => {
                *spare = node;
                spare
            }
            None => Box::new(node),
        };
        NodePtr(NonNull::from(Box::leak(boxed)))
    }

    /// A new leaf without page records (one reference, held by the caller).
    pub(crate) fn new_leaf(&mut self, meta: [u8; FANOUT], slots: [u64; FANOUT]) -> NodePtr {
        debug_assert!((0..FANOUT).all(|i| meta[i] & crate::protection::meta::VIEW != 0 || slots[i] == 0));
        self.alloc(Body::Leaf(LeafBody { meta, slots, bytes: [0; FANOUT] }), 0, 0)
    }

    /// A new inner node (one reference); `children` already hold theirs.
    pub(crate) fn new_inner(&mut self, children: [Option<NodePtr>; FANOUT], stored: u64) -> NodePtr {
        self.alloc(Body::Inner(children), stored, 0)
    }
}

impl Node {
    /// The leaf's contents (`None` for an inner node).
    #[inline]
    pub(crate) fn as_leaf(&self) -> Option<&LeafBody> {
        match &self.body {
            Body::Leaf(l) => Some(l),
            Body::Inner(_) => None,
        }
    }

    /// The inner node's children (`None` for a leaf).
    #[inline]
    pub(crate) fn children(&self) -> Option<&[Option<NodePtr>; FANOUT]> {
        match &self.body {
            Body::Inner(c) => Some(c),
            Body::Leaf(_) => None,
        }
    }

    /// True when no page under the node has a state.
    pub(crate) fn is_empty(&self) -> bool {
        match &self.body {
            Body::Inner(c) => c.iter().all(Option::is_none),
            Body::Leaf(l) => l.meta.iter().all(|&m| m == 0),
        }
    }
}

impl Guard<'_> {
    /// Adds a reference to `node`.
    #[inline]
    pub(crate) fn retain_node(&mut self, node: NodePtr) {
        // SAFETY: the lock is held (`self`), and `node` is alive.
        unsafe { *node.get().refs.get() += 1 };
    }

    /// References to `node`.
    #[inline]
    pub(crate) fn node_refs(&self, node: NodePtr) -> u32 {
        // SAFETY: the lock is held, and `node` is alive.
        unsafe { *node.get().refs.get() }
    }

    /// Drops a reference to `node`, freeing it (and releasing what it
    /// references) with the last. Time: O(nodes freed).
    pub(crate) fn release_node(&mut self, node: NodePtr) {
        // SAFETY: the lock is held, and `node` is alive.
        let refs = unsafe { &mut *node.get().refs.get() };
        debug_assert!(*refs > 0);
        *refs -= 1;
        if *refs != 0 {
            return;
        }
        // SAFETY: the last reference is gone: nothing reaches the node, and
        // it was allocated by `Node::alloc` (a leaked box).
        let owned = unsafe { Box::from_raw(node.0.as_ptr()) };
        match &owned.body {
            Body::Inner(children) => {
                for &child in children.iter().flatten() {
                    self.release_node(child);
                }
            }
            Body::Leaf(leaf) => {
                for i in 0..FANOUT {
                    if let Some(rec) = leaf.rec(i) {
                        self.release_page(rec);
                    }
                }
            }
        }
        if self.pool.spare_nodes.len() < super::store::SPARE_NODES {
            self.pool.spare_nodes.push(owned);
        }
    }

    /// A copy of `node` (one reference, the caller's) with a reference to
    /// everything it references; `node` loses the reference the caller held.
    /// The copy's origin is `node`, with nothing changed yet.
    pub(crate) fn copy_node(&mut self, node: NodePtr) -> NodePtr {
        let n = node.get();
        let body = match &n.body {
            Body::Inner(children) => {
                for &child in children.iter().flatten() {
                    self.retain_node(child);
                }
                Body::Inner(*children)
            }
            Body::Leaf(leaf) => {
                for i in 0..FANOUT {
                    if let Some(rec) = leaf.rec(i) {
                        self.retain_page(rec);
                    }
                }
                Body::Leaf(leaf.clone())
            }
        };
        let copy = self.alloc(body, n.stored, n.id);
        self.release_node(node);
        copy
    }

    /// `slot`'s node, made private to the caller's table: copied when
    /// shared. The caller owns the table mutably and every node above.
    #[inline]
    pub(crate) fn make_mut<'a>(&mut self, slot: &mut NodePtr) -> &'a mut Node {
        if self.node_refs(*slot) != 1 {
            *slot = self.copy_node(*slot);
        }
        // SAFETY: `slot` holds the node's only reference, and the caller
        // owns every node above it (and so the table) mutably.
        unsafe { slot.get_mut() }
    }
}
