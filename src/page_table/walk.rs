//! Walks over a table: searching state bytes, visiting pages, and the diff
//! of two tables, which skips every subtree they share by pointer.

use super::node::{Body, LeafBody, NodePtr, prefetch};
use super::store::Store;
use super::{FANOUT, Page, span};

/// The first page in `[lo, hi)` under `node` whose state byte satisfies
/// `pred`. Uniform subtrees are answered whole. Time: O(nodes scanned).
pub(super) fn find(
    node: Option<NodePtr>,
    level: u32,
    base: u64,
    lo: u64,
    hi: u64,
    pred: &impl Fn(u8) -> bool,
) -> Option<u64> {
    let end = base + span(level);
    let Some(node) = node else {
        return pred(0).then(|| lo.max(base));
    };
    if level > 0
        && let Some((m, _)) = super::edit::uniform_meta(node)
    {
        return pred(m).then(|| lo.max(base));
    }
    let from = lo.max(base) - base;
    let to = hi.min(end) - base;
    match &node.get().body {
        Body::Leaf(leaf) => (from..to).find(|&i| pred(leaf.meta[i as usize])).map(|i| base + i),
        Body::Inner(children) => {
            let child_span = span(level - 1);
            let first = (from / child_span) as usize;
            let last = ((to - 1) / child_span) as usize;
            (first..=last)
                .find_map(|i| find(children[i], level - 1, base + i as u64 * child_span, lo, hi, pred))
        }
    }
}

/// One page with a state, as a walk sees it.
#[derive(Clone, Copy)]
pub(crate) struct Visit<'a> {
    /// The state byte.
    pub(crate) meta: u8,
    /// The bytes, for a page that has them.
    pub(crate) page: Option<Page<'a>>,
    /// A view page's distance to its section page (0 otherwise).
    pub(crate) view_offset: u64,
}

impl<'a> Visit<'a> {
    #[inline]
    pub(super) fn of(store: &'a std::sync::Arc<Store>, leaf: &'a LeafBody, i: usize) -> Visit<'a> {
        Visit { meta: leaf.meta[i], page: Page::of_leaf(store, leaf, i), view_offset: leaf.view_offset(i) }
    }

    pub(super) const ABSENT: Visit<'static> = Visit { meta: 0, page: None, view_offset: 0 };

    /// True when both sides hold the same bytes (no page = zeros). Reads
    /// page memory only when the fingerprints match.
    pub(crate) fn same_bytes(&self, other: &Visit<'_>) -> bool {
        match (self.page, other.page) {
            (None, None) => true,
            (Some(p), Some(q)) => p.same_bytes(q),
            (Some(p), None) | (None, Some(p)) => p.is_zero(),
        }
    }
}

/// Calls `f(vpn, visit)` for every page with a non-zero state under
/// `node`, ascending. Time: O(non-empty leaves).
pub(super) fn for_each<'a>(
    store: &'a std::sync::Arc<Store>,
    node: Option<NodePtr>,
    level: u32,
    base: u64,
    f: &mut impl FnMut(u64, Visit<'a>),
) {
    let Some(node) = node else { return };
    match &node.get().body {
        Body::Leaf(leaf) => {
            for i in 0..FANOUT {
                if leaf.meta[i] != 0 {
                    f(base + i as u64, Visit::of(store, leaf, i));
                }
            }
        }
        Body::Inner(children) => {
            let child_span = span(level - 1);
            for (i, &child) in children.iter().enumerate() {
                for_each(store, child, level - 1, base + i as u64 * child_span, f);
            }
        }
    }
}

/// A pair of leaves that may differ, and the first page number they cover.
type LeafPair<'t> = (Option<(NodePtr, &'t LeafBody)>, Option<(NodePtr, &'t LeafBody)>, u64);

/// Collects the leaf pairs under `a` and `b` that are not the same pointer.
/// Touches inner nodes only.
pub(super) fn collect_leaf_pairs<'t>(
    a: Option<NodePtr>,
    b: Option<NodePtr>,
    level: u32,
    base: u64,
    pairs: &mut Vec<LeafPair<'t>>,
) {
    match (a, b) {
        (None, None) => return,
        (Some(x), Some(y)) if x == y => return,
        _ => {}
    }
    let leaf = |n: Option<NodePtr>| n.and_then(|p| p.get().as_leaf().map(|l| (p, l)));
    if level == 0 {
        // Start loading both headers now; the pairs are diffed after the walk.
        a.inspect(|p| prefetch(p.get()));
        b.inspect(|p| prefetch(p.get()));
        pairs.push((leaf(a), leaf(b), base));
        return;
    }
    let child = |n: Option<NodePtr>, i: usize| n.and_then(|p| p.get().children().and_then(|c| c[i]));
    let child_span = span(level - 1);
    // Related nodes (one copied from the other) differ only in children
    // either changed since.
    let mut todo = match (a, b) {
        (Some(x), Some(y)) => candidates(x, y),
        _ => u64::MAX,
    };
    while todo != 0 {
        let i = todo.trailing_zeros() as usize;
        todo &= todo - 1;
        collect_leaf_pairs(child(a, i), child(b, i), level - 1, base + i as u64 * child_span, pairs);
    }
}

/// The children or entries two nodes may differ in: for related nodes (one
/// copied from the other) those either changed since, otherwise all 64.
#[inline]
fn candidates(x: NodePtr, y: NodePtr) -> u64 {
    let (x, y) = (x.get(), y.get());
    if x.origin == y.id || y.origin == x.id { x.changed | y.changed } else { u64::MAX }
}

/// Starts loading the entry line the diff of `pair` will read first.
#[inline]
pub(super) fn preload(pair: &LeafPair<'_>) {
    if let (Some((x, lx)), Some((y, ly)), _) = *pair {
        let i = candidates(x, y).trailing_zeros() as usize % FANOUT;
        prefetch(&lx.slots[i]);
        prefetch(&ly.slots[i]);
    }
}

/// Reports the entries of a leaf pair whose state or slot differ.
pub(super) fn diff_leaves<'t>(
    sa: &'t std::sync::Arc<Store>,
    sb: &'t std::sync::Arc<Store>,
    pair: LeafPair<'t>,
    f: &mut impl FnMut(u64, Visit<'t>, Visit<'t>),
) {
    let (x, y, base) = pair;
    match (x, y) {
        (Some((px, x)), Some((py, y))) => {
            let mut todo = candidates(px, py);
            while todo != 0 {
                let i = todo.trailing_zeros() as usize;
                todo &= todo - 1;
                if x.meta[i] != y.meta[i] || x.slots[i] != y.slots[i] {
                    f(base + i as u64, Visit::of(sa, x, i), Visit::of(sb, y, i));
                }
            }
        }
        (Some((_, x)), None) => {
            for i in 0..FANOUT {
                if x.meta[i] != 0 {
                    f(base + i as u64, Visit::of(sa, x, i), Visit::ABSENT);
                }
            }
        }
        (None, Some((_, y))) => {
            for i in 0..FANOUT {
                if y.meta[i] != 0 {
                    f(base + i as u64, Visit::ABSENT, Visit::of(sb, y, i));
                }
            }
        }
        (None, None) => {}
    }
}
