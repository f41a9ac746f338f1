//! Walks over a table: searching state bytes, visiting pages, and the diff
//! of two tables, which skips every subtree they share by pointer.

use super::edit::uniform_meta;
use super::node::{Body, LeafBody, NodePtr, prefetch};
use super::store::Store;
use super::{FANOUT, Page, span};
use crate::protection::meta;

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
        && let Some((m, _)) = uniform_meta(node)
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

    /// A page of a uniform subtree: state `m`, slot word `aux`, no bytes.
    #[inline]
    fn uniform(m: u8, aux: u64) -> Visit<'static> {
        Visit { meta: m, page: None, view_offset: if m & meta::VIEW != 0 { aux } else { 0 } }
    }

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

/// Calls `f(first, count, visit)` for the pages with a non-zero state under
/// `node`, ascending: a uniform subtree (every page the same state and slot
/// word, none with bytes) is one call for all its pages, every other page a
/// call of its own (`count == 1`). Time: O(non-uniform nodes), whatever the
/// number of pages.
pub(super) fn for_each_run<'a>(
    store: &'a std::sync::Arc<Store>,
    node: Option<NodePtr>,
    level: u32,
    base: u64,
    f: &mut impl FnMut(u64, u64, Visit<'a>),
) {
    let Some(node) = node else { return };
    if let Some((m, aux)) = uniform_meta(node) {
        if m != 0 {
            f(base, span(level), Visit::uniform(m, aux));
        }
        return;
    }
    match &node.get().body {
        Body::Leaf(leaf) => {
            for i in 0..FANOUT {
                if leaf.meta[i] != 0 {
                    f(base + i as u64, 1, Visit::of(store, leaf, i));
                }
            }
        }
        Body::Inner(children) => {
            let child_span = span(level - 1);
            for (i, &child) in children.iter().enumerate() {
                for_each_run(store, child, level - 1, base + i as u64 * child_span, f);
            }
        }
    }
}

/// Calls `f(vpn, meta, page)` for every page with bytes (a record) under
/// `node` in `[lo, hi)`, ascending. Subtrees without records are skipped
/// whole. Time: O(nodes holding records in the range).
pub(super) fn for_each_stored<'a>(
    store: &'a std::sync::Arc<Store>,
    node: Option<NodePtr>,
    level: u32,
    base: u64,
    (lo, hi): (u64, u64),
    f: &mut impl FnMut(u64, u8, Page<'a>),
) {
    let end = base + span(level);
    let Some(node) = node.filter(|n| n.get().stored != 0) else { return };
    if hi <= base || end <= lo {
        return;
    }
    match &node.get().body {
        Body::Leaf(leaf) => {
            let (from, to) = ((lo.max(base) - base) as usize, (hi.min(end) - base) as usize);
            for i in from..to {
                if let Some(page) = Page::of_leaf(store, leaf, i) {
                    f(base + i as u64, leaf.meta[i], page);
                }
            }
        }
        Body::Inner(children) => {
            let child_span = span(level - 1);
            for (i, &child) in children.iter().enumerate() {
                for_each_stored(store, child, level - 1, base + i as u64 * child_span, (lo, hi), f);
            }
        }
    }
}

/// Two subtrees that may differ, and the first page number they cover.
#[derive(Clone, Copy)]
pub(super) enum Pair<'t> {
    /// Two leaves (either may be absent), compared entry by entry.
    Leaves(Option<(NodePtr, &'t LeafBody)>, Option<(NodePtr, &'t LeafBody)>, u64),
    /// `count` pages from `base` whose every page has state and slot word
    /// `a` in one version and `b` in the other, none with bytes: reported
    /// as one run, whatever its size.
    Run { base: u64, count: u64, a: (u8, u64), b: (u8, u64) },
}

/// Collects the pairs of subtrees under `a` and `b` that are not the same
/// pointer: two uniform (or absent) inner subtrees as one run, leaves as
/// leaf pairs. Touches inner nodes only.
pub(super) fn collect_pairs<'t>(
    a: Option<NodePtr>,
    b: Option<NodePtr>,
    level: u32,
    base: u64,
    pairs: &mut Vec<Pair<'t>>,
) {
    match (a, b) {
        (None, None) => return,
        (Some(x), Some(y)) if x == y => return,
        _ => {}
    }
    let leaf = |n: Option<NodePtr>| n.and_then(|p| p.get().as_leaf().map(|l| (p, l)));
    if level > 0 {
        let uniform = |n: Option<NodePtr>| n.map_or(Some((0, 0)), uniform_meta);
        if let (Some(ua), Some(ub)) = (uniform(a), uniform(b)) {
            if ua != ub {
                pairs.push(Pair::Run { base, count: span(level), a: ua, b: ub });
            }
            return;
        }
    }
    if level == 0 {
        // Start loading both headers now; the pairs are diffed after the walk.
        a.inspect(|p| prefetch(p.get()));
        b.inspect(|p| prefetch(p.get()));
        pairs.push(Pair::Leaves(leaf(a), leaf(b), base));
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
        collect_pairs(child(a, i), child(b, i), level - 1, base + i as u64 * child_span, pairs);
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
pub(super) fn preload(pair: &Pair<'_>) {
    if let Pair::Leaves(Some((x, lx)), Some((y, ly)), _) = *pair {
        let i = candidates(x, y).trailing_zeros() as usize % FANOUT;
        prefetch(&lx.slots[i]);
        prefetch(&ly.slots[i]);
    }
}

/// Reports the entries of a pair whose state or slot differ: a run as one
/// call, a leaf pair entry by entry (`count == 1`).
pub(super) fn diff_pair<'t>(
    sa: &'t std::sync::Arc<Store>,
    sb: &'t std::sync::Arc<Store>,
    pair: Pair<'t>,
    f: &mut impl FnMut(u64, u64, Visit<'t>, Visit<'t>),
) {
    let (x, y, base) = match pair {
        Pair::Leaves(x, y, base) => (x, y, base),
        Pair::Run { base, count, a, b } => {
            return f(base, count, Visit::uniform(a.0, a.1), Visit::uniform(b.0, b.1));
        }
    };
    match (x, y) {
        (Some((px, x)), Some((py, y))) => {
            let mut todo = candidates(px, py);
            while todo != 0 {
                let i = todo.trailing_zeros() as usize;
                todo &= todo - 1;
                if x.meta[i] != y.meta[i] || x.slots[i] != y.slots[i] {
                    f(base + i as u64, 1, Visit::of(sa, x, i), Visit::of(sb, y, i));
                }
            }
        }
        (Some((_, x)), None) => {
            for i in 0..FANOUT {
                if x.meta[i] != 0 {
                    f(base + i as u64, 1, Visit::of(sa, x, i), Visit::ABSENT);
                }
            }
        }
        (None, Some((_, y))) => {
            for i in 0..FANOUT {
                if y.meta[i] != 0 {
                    f(base + i as u64, 1, Visit::ABSENT, Visit::of(sb, y, i));
                }
            }
        }
        (None, None) => {}
    }
}
