//! The one path-copy walker: every change to a table (range operations,
//! single entries, a snapshot's batch of frozen pages) is a sorted list of
//! edits applied in one walk, so each touched node is copied once.

use super::node::{Body, LeafBody, NodePtr};
use super::store::{Guard, RecPtr};
use super::{BITS, FANOUT, span};
use crate::protection::meta;

/// A change applied to every page of a range.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RangeOp {
    /// Commit with this protection: committed pages keep their bytes and take
    /// the new protection; other pages become committed zero pages.
    Commit(u8),
    /// Replace the protection bits of committed pages (others untouched).
    Protect(u8),
    /// Decommit: state 0, bytes dropped.
    Clear,
    /// Set this state byte (never a view state) on every page and drop its
    /// bytes.
    Set(u8),
    /// Commit with this protection only the pages not committed yet.
    CommitReserved(u8),
    /// Make every page a view page with state `meta` (which has `VIEW`) whose
    /// bytes live at page number `vpn + key_offset`.
    View {
        /// The state byte.
        meta: u8,
        /// Added to a page's number to give its section page.
        key_offset: u64,
    },
}

/// One edit's operation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// A range operation.
    Range(RangeOp),
    /// Store these bytes (or none: a zero page) for a committed page,
    /// keeping its state. The record's reference moves into the table.
    Page(Option<RecPtr>),
    /// Set the state, bytes and view offset of a page at once (building a
    /// version from its parent's table). The record's reference moves into
    /// the table. `page` is `None` unless `meta` holds bytes.
    Put {
        /// The state byte.
        meta: u8,
        /// The bytes.
        page: Option<RecPtr>,
        /// A view page's distance to its section page.
        view_offset: u64,
    },
}

/// `op` on pages `[lo, hi)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Edit {
    pub(crate) lo: u64,
    pub(crate) hi: u64,
    pub(crate) op: Op,
}

/// What an operation does to an absent (all-zero) subtree.
enum Absent {
    /// Nothing: the pages stay absent.
    Skip,
    /// Every page gets this state and slot word and no bytes: a shared
    /// uniform subtree.
    Uniform(u8, u64),
    /// Something page by page.
    Nodes,
}

impl Op {
    fn on_absent(self) -> Absent {
        match self {
            Op::Range(RangeOp::Commit(prot) | RangeOp::CommitReserved(prot)) => {
                Absent::Uniform(meta::COMMITTED | prot, 0)
            }
            Op::Range(RangeOp::Set(m)) if m != 0 => Absent::Uniform(m, 0),
            Op::Range(RangeOp::View { meta, key_offset }) => Absent::Uniform(meta, key_offset),
            Op::Range(_) | Op::Put { meta: 0, page: None, .. } => Absent::Skip,
            Op::Put { meta: m, page: None, view_offset } => {
                Absent::Uniform(m, if m & meta::VIEW != 0 { view_offset } else { 0 })
            }
            Op::Page(_) | Op::Put { .. } => Absent::Nodes,
        }
    }
}

#[inline]
fn committed(m: u8) -> i64 {
    i64::from(m & meta::COMMITTED != 0)
}

/// Applies `op` to entry `i` of `leaf`; returns the change in committed
/// pages. Bytes the entry loses are released.
#[inline]
fn apply(g: &mut Guard<'_>, op: Op, leaf: &mut LeafBody, i: usize) -> i64 {
    let old = leaf.meta[i];
    let mut drop_bytes = |leaf: &mut LeafBody| {
        if let Some(rec) = leaf.rec(i) {
            g.release_page(rec);
            leaf.set_slot(i, 0);
        }
    };
    let new = match op {
        Op::Range(RangeOp::Commit(prot)) => {
            if old & meta::COMMITTED == 0 {
                drop_bytes(leaf);
            }
            (old & !meta::PROT) | meta::COMMITTED | prot
        }
        Op::Range(RangeOp::CommitReserved(prot)) => {
            if old & meta::COMMITTED == 0 {
                drop_bytes(leaf);
                (old & !meta::PROT) | meta::COMMITTED | prot
            } else {
                old
            }
        }
        Op::Range(RangeOp::Protect(prot)) => {
            if old & meta::COMMITTED != 0 {
                (old & !meta::PROT) | prot
            } else {
                old
            }
        }
        Op::Range(RangeOp::Clear) => {
            drop_bytes(leaf);
            leaf.set_slot(i, 0);
            0
        }
        Op::Range(RangeOp::Set(m)) => {
            debug_assert!(m & meta::VIEW == 0);
            drop_bytes(leaf);
            leaf.set_slot(i, 0);
            m
        }
        Op::Range(RangeOp::View { meta: m, key_offset }) => {
            drop_bytes(leaf);
            leaf.meta[i] = m;
            leaf.set_slot(i, key_offset);
            m
        }
        Op::Page(page) => {
            debug_assert!(meta::holds_bytes(old) || page.is_none());
            drop_bytes(leaf);
            leaf.set_slot(i, page.map_or(0, RecPtr::to_word));
            old
        }
        Op::Put { meta: m, page, view_offset } => {
            debug_assert!(page.is_none() || meta::holds_bytes(m));
            drop_bytes(leaf);
            leaf.meta[i] = m;
            leaf.set_slot(i, if m & meta::VIEW != 0 { view_offset } else { page.map_or(0, RecPtr::to_word) });
            m
        }
    };
    leaf.meta[i] = new;
    committed(new) - committed(old)
}

/// The state and slot word a page with state `m`, word `aux` and no bytes
/// gets: the same for every page of a uniform subtree.
fn apply_uniform(g: &mut Guard<'_>, op: Op, m: u8, aux: u64) -> (u8, u64) {
    let mut leaf = LeafBody { meta: [0; FANOUT], slots: [0; FANOUT], bytes: [0; FANOUT] };
    leaf.meta[0] = m;
    leaf.slots[0] = aux;
    apply(g, op, &mut leaf, 0);
    (leaf.meta[0], leaf.slots[0])
}

/// Applies `edits` (sorted, disjoint, each meeting the node's range) to
/// the subtree in `slot` at `level` covering pages from `base`. Returns the
/// change in committed pages.
pub(crate) fn edit(
    g: &mut Guard<'_>,
    slot: &mut Option<NodePtr>,
    level: u32,
    base: u64,
    edits: &[Edit],
) -> i64 {
    let end = base + span(level);
    if let [Edit { lo, hi, op }] = *edits
        && lo <= base
        && end <= hi
        && let Some(delta) = whole(g, slot, level, op)
    {
        return delta;
    }
    if slot.is_none() {
        if edits.iter().all(|e| matches!(e.op.on_absent(), Absent::Skip)) {
            return 0;
        }
        *slot = Some(empty(g, level));
    }
    let ptr = slot.as_mut().expect("filled above");
    let node = g.make_mut(ptr);
    let mut delta = 0;
    match &mut node.body {
        Body::Leaf(leaf) => {
            for e in edits {
                let (from, to) = ((e.lo.max(base) - base) as usize, (e.hi.min(end) - base) as usize);
                for i in from..to {
                    delta += apply(g, e.op, leaf, i);
                }
                node.changed |= range_mask(from, to);
            }
            node.stored = (0..FANOUT).filter(|&i| leaf.rec(i).is_some()).count() as u64;
        }
        Body::Inner(children) => {
            let child_span = span(level - 1);
            let mut at = edits[0].lo.max(base);
            let mut i = 0;
            while i < edits.len() && at < end {
                let c = ((at - base) / child_span) as usize;
                let child_end = base + (c as u64 + 1) * child_span;
                let j = i + edits[i..].partition_point(|e| e.lo < child_end);
                let stored = |c: &Option<NodePtr>| c.map_or(0, |n| n.get().stored);
                let before = stored(&children[c]);
                delta += edit(g, &mut children[c], level - 1, child_end - child_span, &edits[i..j]);
                node.stored = node.stored + stored(&children[c]) - before;
                node.changed |= 1 << c;
                if edits[j - 1].hi > child_end {
                    i = j - 1;
                    at = child_end;
                } else {
                    i = j;
                    at = edits.get(j).map_or(end, |e| e.lo.max(base));
                }
            }
        }
    }
    if node.is_empty() {
        g.release_node(*ptr);
        *slot = None;
    }
    delta
}

/// `op` over the whole subtree in `slot`, when that needs no page-by-page
/// work: an absent subtree, decommitting everything, or a uniform subtree
/// (say, a committed gigabyte never written) changing as a whole. A `Put`
/// without bytes is a range operation here too (a file's layout laid over
/// its parent's). Time:
/// O(64 · levels), not O(pages).
fn whole(g: &mut Guard<'_>, slot: &mut Option<NodePtr>, level: u32, op: Op) -> Option<i64> {
    let pages = span(level) as i64;
    match (*slot, op.on_absent()) {
        (None, Absent::Skip) => Some(0),
        (None, Absent::Uniform(m, aux)) => {
            *slot = Some(uniform(g, level, m, aux));
            Some(committed(m) * pages)
        }
        (None, Absent::Nodes) => None,
        (Some(node), _) if matches!(op, Op::Range(RangeOp::Clear) | Op::Put { meta: 0, page: None, .. }) => {
            let gone = committed_in(node) as i64;
            g.release_node(node);
            *slot = None;
            Some(-gone)
        }
        (Some(node), _) if matches!(op, Op::Range(_) | Op::Put { page: None, .. }) => {
            let (m, aux) = uniform_meta(node)?;
            let (new, new_aux) = apply_uniform(g, op, m, aux);
            if (new, new_aux) != (m, aux) {
                g.release_node(node);
                *slot = (new != 0).then(|| uniform(g, level, new, new_aux));
            }
            Some((committed(new) - committed(m)) * pages)
        }
        (Some(_), _) => None,
    }
}

/// An empty node for `level`.
fn empty(g: &mut Guard<'_>, level: u32) -> NodePtr {
    if level == 0 { g.new_leaf([0; FANOUT], [0; FANOUT]) } else { g.new_inner([None; FANOUT], 0) }
}

/// A subtree at `level` whose every page has state `m`, slot word `aux`
/// and no bytes. Its nodes are shared: 64 pointers to one child at each
/// level. Time: O(levels).
pub(crate) fn uniform(g: &mut Guard<'_>, level: u32, m: u8, aux: u64) -> NodePtr {
    let mut node = g.new_leaf([m; FANOUT], [aux; FANOUT]);
    for _ in 0..level {
        for _ in 1..FANOUT {
            g.retain_node(node);
        }
        node = g.new_inner([Some(node); FANOUT], 0);
    }
    node
}

/// Bits `from..to` set (`to <= 64`).
pub(crate) fn range_mask(from: usize, to: usize) -> u64 {
    let upper = if to >= FANOUT { u64::MAX } else { (1u64 << to) - 1 };
    upper & !((1u64 << from) - 1)
}

/// The state byte and slot word of every page under `node`, when they all
/// share them and none has bytes: a node built by [`uniform`] (or a leaf
/// that happens to be). Time: O(64 · levels).
pub(crate) fn uniform_meta(node: NodePtr) -> Option<(u8, u64)> {
    match &node.get().body {
        Body::Leaf(leaf) => {
            let (m, aux) = (leaf.meta[0], leaf.slots[0]);
            let no_bytes = m & meta::VIEW != 0 || aux == 0;
            let same = no_bytes && leaf.meta.iter().all(|&x| x == m) && leaf.slots.iter().all(|&s| s == aux);
            same.then_some((m, aux))
        }
        Body::Inner(children) => {
            let first = children[0]?;
            if children.iter().all(|c| *c == Some(first)) { uniform_meta(first) } else { None }
        }
    }
}

/// Committed pages under `node`. Time: O(non-uniform nodes under it).
pub(crate) fn committed_in(node: NodePtr) -> u64 {
    let n = node.get();
    if let Body::Inner(_) = n.body
        && let Some((m, _)) = uniform_meta(node)
    {
        return if m & meta::COMMITTED != 0 { span_of(node) } else { 0 };
    }
    match &n.body {
        Body::Leaf(leaf) => leaf.meta.iter().filter(|&&m| m & meta::COMMITTED != 0).count() as u64,
        Body::Inner(children) => children.iter().flatten().map(|&c| committed_in(c)).sum(),
    }
}

/// Pages under `node`, from its depth.
fn span_of(node: NodePtr) -> u64 {
    let mut level = 0;
    let mut n = node.get();
    while let Body::Inner(children) = &n.body {
        level += 1;
        // Invariant: inner nodes are pruned when empty, so one child exists.
        n = children.iter().flatten().next().expect("inner nodes are never empty").get();
    }
    1 << (BITS * (level + 1))
}
