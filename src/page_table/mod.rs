//! The persistent radix page table: page number → (state byte, page bytes).
//!
//! ```text
//!  page number (36 bits used; user space needs 35)
//!  ┌──────┬──────┬──────┬──────┬──────┬──────┐
//!  │ L5   │ L4   │ L3   │ L2   │ L1   │ L0   │   6 bits per level, 64-way nodes
//!  └──┬───┴──┬───┴──┬───┴──┬───┴──┬───┴──┬───┘
//!     │      │      │      │      │      └─ index in a leaf: meta[64] + slot[64]
//!     └──────┴──────┴──────┴──────┴──────── index in an inner node: children[64]
//! ```
//!
//! A [`PageTable`] is one version: an `Arc` of a root. Cloning it is one
//! atomic increment; changing it copies the path from the root to each
//! changed leaf, once per node per batch ([`edit`]), so every older clone
//! keeps its own version. Two versions that share a subtree share it by
//! pointer, which lets [`PageTable::diff`] skip everything that did not
//! change.
//!
//! The modules, one concern each:
//! * [`store`]: page records (bytes, lazy fingerprint, reference count) and
//!   the lock under which every reference count changes — see there why
//!   counts are plain integers and what that buys a snapshot;
//! * [`node`]: inner nodes and leaves, copying and freeing them;
//! * [`edit`]: the one path-copy walker behind every change;
//! * [`walk`]: searches, visits and the diff walk.
//!
//! An absent subtree means "every page state byte is 0" (not committed). A
//! committed page without a record reads as zeros, so committing a
//! gigabyte allocates nothing but a handful of shared nodes: a fully
//! covered, uniform subtree is built once and shared by all its positions.
//!
//! The table never holds pages that are being written: the live version's
//! written pages sit in the mutable overlay (`live.rs`), whose buffers are
//! handed to new page records — not copied — when a snapshot freezes them.

pub(crate) mod edit;
pub(crate) mod node;
pub(crate) mod slab;
pub(crate) mod store;
pub(crate) mod walk;

use std::sync::Arc;

pub(crate) use edit::{Edit, Op, RangeOp};
use node::NodePtr;
pub use store::frozen_pages_alive;
pub(crate) use store::{LazyRecords, LazySource, RecPtr, Store};
use store::{PageRec, fingerprint_of};
pub(crate) use walk::Visit;

use crate::protection::meta;

/// Bytes in a page.
pub(crate) const PAGE: usize = crate::PAGE_SIZE as usize;
const BITS: u32 = 6;
const FANOUT: usize = 1 << BITS;
const INDEX_MASK: u64 = FANOUT as u64 - 1;
/// Levels of the trie: level 0 holds leaves, level `LEVELS - 1` is the root.
const LEVELS: u32 = 6;
/// Page numbers must be below this bound (2^36).
pub(crate) const VPN_LIMIT: u64 = 1 << (BITS * LEVELS);

/// The bytes of a page.
pub(crate) type PageBytes = [u8; PAGE];

/// The zero page every committed-but-never-written page reads as.
pub(crate) static ZERO_PAGE: PageBytes = [0; PAGE];

/// Pages covered by one node at `level`.
#[inline]
const fn span(level: u32) -> u64 {
    1 << (BITS * (level + 1))
}

/// A content summary of a page: eight lanes of wrapping 64-bit sums, mixed.
/// Vectorizes to a few dozen cycles per page; 0 for the zero page.
pub(crate) fn fingerprint(bytes: &PageBytes) -> u64 {
    let mut lanes = [0u64; 8];
    for chunk in bytes.chunks_exact(64) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let word = u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = lane.wrapping_add(word);
        }
    }
    // Chained, so equal lanes (a page of one repeated byte) still mix.
    lanes.iter().fold(0, |h, &l| (h ^ l).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31))
}

pub(crate) use slab::PageBuffers;
pub(crate) use store::{boxed_copy, is_zero_page};

/// A stored page as a table holds it, borrowed from the table.
#[derive(Clone, Copy)]
pub(crate) struct Page<'a> {
    store: &'a Arc<Store>,
    ptr: RecPtr,
    /// The bytes' address as the leaf knew it (0: ask the record).
    direct: usize,
}

impl std::fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page").field("loaded", &self.rec().loaded().is_some()).finish()
    }
}

impl<'a> Page<'a> {
    #[inline]
    fn new(store: &'a Arc<Store>, ptr: RecPtr) -> Page<'a> {
        Page { store, ptr, direct: 0 }
    }

    /// Entry `i` of `leaf`, which has a record.
    #[inline]
    pub(super) fn of_leaf(store: &'a Arc<Store>, leaf: &'a node::LeafBody, i: usize) -> Option<Page<'a>> {
        leaf.rec(i).map(|ptr| Page { store, ptr, direct: leaf.bytes[i] })
    }

    #[inline]
    fn rec(&self) -> &'a PageRec {
        // SAFETY (in `RecPtr::get`'s terms): the table this page was read
        // from references the record for at least `'a`.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr.get()
        }
    }

    /// The page's identity: equal for the same stored page.
    #[inline]
    pub(crate) fn ptr(&self) -> RecPtr {
        self.ptr
    }

    /// The page's bytes; `None` only for a lazily loaded page whose bytes
    /// cannot be read. Time: one load once read; the first call on a lazy
    /// page reads and decompresses its frame.
    #[inline]
    pub(crate) fn try_bytes(&self) -> Option<&'a PageBytes> {
        if self.direct != 0 {
            // SAFETY: the leaf this page was read from took the address from
            // its record, whose bytes never change or move while the record
            // is referenced — by that leaf, for at least `'a`.
            #[allow(unsafe_code)]
            return Some(unsafe { &*std::ptr::with_exposed_provenance::<PageBytes>(self.direct) });
        }
        match self.rec().loaded() {
            Some(b) => Some(b),
            None => self.store.bytes(self.rec()),
        }
    }

    /// The page's bytes, or the zero page for a lazily loaded page whose
    /// bytes cannot be read. For the consumers that cannot fail (diff byte
    /// views, `serialize_memory_state`): every fallible path checks
    /// [`try_bytes`](Self::try_bytes) first.
    #[inline]
    pub(crate) fn bytes(&self) -> &'a PageBytes {
        self.try_bytes().unwrap_or(&ZERO_PAGE)
    }

    /// True when the page has its bytes (always, except for a lazily loaded
    /// page not read yet).
    #[cfg(test)]
    pub(crate) fn is_loaded(&self) -> bool {
        self.rec().loaded().is_some()
    }

    /// The page's fingerprint, computed on first need and cached; `None`
    /// for a page whose bytes cannot be read.
    pub(crate) fn fingerprint(&self) -> Option<u64> {
        fingerprint_of(self.store, self.rec())
    }

    /// Where a lazily loaded page comes from (see [`Store::origin`]).
    pub(crate) fn origin(&self) -> Option<([u8; 32], u32)> {
        self.store.origin(self.rec())
    }

    /// True when both pages hold the same bytes (fingerprints first). A page
    /// whose bytes cannot be read equals only itself.
    pub(crate) fn same_bytes(&self, other: Page<'_>) -> bool {
        if self.ptr == other.ptr {
            return true;
        }
        if let (Some((file_a, record_a)), Some((file_b, record_b))) = (self.origin(), other.origin())
            && file_a == file_b
        {
            // Records of one file (perhaps two opens of it): a file stores
            // each distinct page once, so the same record is the same bytes
            // and another record other bytes, and nothing is read.
            return record_a == record_b;
        }
        match (self.fingerprint(), other.fingerprint()) {
            (Some(a), Some(b)) if a == b => {
                matches!((self.try_bytes(), other.try_bytes()), (Some(x), Some(y)) if x == y)
            }
            _ => false,
        }
    }

    /// True when the page holds only zeros (a page whose bytes cannot be
    /// read is not).
    pub(crate) fn is_zero(&self) -> bool {
        if let Some(fp) = self.rec().known_fingerprint()
            && fp != 0
        {
            return false;
        }
        self.try_bytes().is_some_and(is_zero_page)
    }

    /// An owned reference to the page.
    pub(crate) fn to_ref(self) -> PageRef {
        self.store.lock().retain_page(self.ptr);
        PageRef { store: self.store.clone(), ptr: Some(self.ptr) }
    }
}

/// An owned reference to a stored page, for carrying pages outside a table
/// (file encoding and decoding). Clone and drop take the store's lock.
pub(crate) struct PageRef {
    store: Arc<Store>,
    /// `None` only once the reference moved into a table (`into_raw`).
    ptr: Option<RecPtr>,
}

impl PageRef {
    /// A new page in `store` holding a copy of `bytes`, whose fingerprint
    /// is `fingerprint` when the caller knows it.
    pub(crate) fn new_in(store: &Arc<Store>, bytes: &PageBytes, fingerprint: Option<u64>) -> PageRef {
        // Copied before the store's lock is taken.
        let bytes = store::boxed_copy(bytes);
        let ptr = store.lock().new_page(bytes, fingerprint);
        PageRef { store: store.clone(), ptr: Some(ptr) }
    }

    /// The page, borrowed.
    pub(crate) fn page(&self) -> Page<'_> {
        Page::new(&self.store, self.ptr.expect("a PageRef holds its page until into_raw"))
    }

    /// The store the page lives in.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Takes a reference to page `ptr` of `store` (a lazily loaded record).
    pub(crate) fn retained(store: &Arc<Store>, ptr: RecPtr) -> PageRef {
        store.lock().retain_page(ptr);
        PageRef { store: store.clone(), ptr: Some(ptr) }
    }

    /// Gives up the reference without releasing it (it moves into a table).
    fn into_raw(mut self) -> RecPtr {
        self.ptr.take().expect("a PageRef holds its page until into_raw")
    }
}

impl Clone for PageRef {
    fn clone(&self) -> Self {
        self.page().to_ref()
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            self.store.lock().release_page(ptr);
        }
    }
}

/// One page as the table holds it.
#[derive(Clone, Copy)]
pub(crate) struct PageEntry<'a> {
    /// The state byte (see `protection::meta`).
    pub(crate) meta: u8,
    /// The stored bytes, or `None` for a zero page (or an uncommitted one).
    pub(crate) page: Option<Page<'a>>,
    /// For a view page, the distance to the page of its bytes.
    pub(crate) aux: u64,
}

impl<'a> PageEntry<'a> {
    /// The page's bytes (the zero page when it has none).
    #[cfg(test)]
    pub(crate) fn bytes(self) -> &'a PageBytes {
        match self.page {
            Some(p) => p.bytes(),
            None => &ZERO_PAGE,
        }
    }

    /// The page's bytes; `None` for a lazily loaded page that cannot be read.
    #[inline]
    pub(crate) fn try_bytes(self) -> Option<&'a PageBytes> {
        match self.page {
            Some(p) => p.try_bytes(),
            None => Some(&ZERO_PAGE),
        }
    }
}

const ABSENT: PageEntry<'static> = PageEntry { meta: 0, page: None, aux: 0 };

/// A version's root: its top node and the store of everything under it.
struct Root {
    node: Option<NodePtr>,
    store: Arc<Store>,
    /// The lazy source whose pages this table may hold (with, through it,
    /// the parents it reads XOR bases from): kept alive by every table
    /// derived from one that held it.
    keep: Option<Arc<dyn LazySource>>,
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(node) = self.node {
            self.store.lock().release_node(node);
        }
    }
}

/// A persistent map from page number to page state and bytes.
///
/// Clone: O(1) (one atomic increment). Lookup: O(levels) = 6 pointer hops.
#[derive(Clone, Default)]
pub(crate) struct PageTable {
    root: Option<Arc<Root>>,
}

impl PageTable {
    /// An empty table whose pages will live in `store`.
    pub(crate) fn in_store(store: Arc<Store>) -> PageTable {
        PageTable { root: Some(Arc::new(Root { node: None, store, keep: None })) }
    }

    /// The table's store, if it has one yet.
    pub(crate) fn store_ref(&self) -> Option<&Arc<Store>> {
        self.root.as_deref().map(|r| &r.store)
    }

    /// Keeps `source` alive as long as this table or one derived from it
    /// lives (its pages are loaded from it).
    pub(crate) fn keep_source(&mut self, source: Arc<dyn LazySource>) {
        self.root_mut().keep = Some(source);
    }

    /// The table's store, made on first need.
    pub(crate) fn store(&mut self) -> &Arc<Store> {
        &self.root.get_or_insert_with(|| Arc::new(Root { node: None, store: Store::new(), keep: None })).store
    }

    #[inline]
    fn top(&self) -> Option<(NodePtr, &Arc<Store>)> {
        let root = self.root.as_deref()?;
        Some((root.node?, &root.store))
    }

    /// The root, private to this table: a root shared with clones is
    /// replaced by a new one referencing the same node.
    fn root_mut(&mut self) -> &mut Root {
        let root =
            self.root.get_or_insert_with(|| Arc::new(Root { node: None, store: Store::new(), keep: None }));
        if Arc::get_mut(root).is_none() {
            let (node, store, keep) = (root.node, root.store.clone(), root.keep.clone());
            if let Some(n) = node {
                store.lock().retain_node(n);
            }
            *root = Arc::new(Root { node, store, keep });
        }
        Arc::get_mut(root).expect("made unique above")
    }

    /// The state of page `vpn` and its bytes, following a view page to the
    /// section page that holds them. Time: O(1) (one or two walks).
    ///
    /// A committed page whose bytes cannot be read (a lazily loaded page of a
    /// damaged file) comes back without its committed bit and as zeros, so
    /// every access fails (see [`PageTable::unavailable`]).
    #[inline]
    pub(crate) fn resolve(&self, vpn: u64) -> (u8, &PageBytes) {
        let e = self.get(vpn);
        let source = if e.meta & meta::VIEW != 0 { self.get(vpn + e.aux) } else { e };
        match source.try_bytes() {
            Some(bytes) => (e.meta, bytes),
            None => (e.meta & !meta::COMMITTED, &ZERO_PAGE),
        }
    }

    /// True when page `vpn` is committed but its bytes cannot be read (a
    /// lazily loaded page of a damaged file; its own or, for a view page,
    /// its section page's).
    pub(crate) fn unavailable(&self, vpn: u64) -> bool {
        let e = self.get(vpn);
        e.meta & meta::COMMITTED != 0 && self.resolve(vpn).0 & meta::COMMITTED == 0
    }

    /// Looks up page `vpn` (`vpn < VPN_LIMIT`). Time: O(1) (6 levels).
    #[inline]
    pub(crate) fn get(&self, vpn: u64) -> PageEntry<'_> {
        debug_assert!(vpn < VPN_LIMIT);
        let Some((mut node, store)) = self.top() else {
            return ABSENT;
        };
        let mut shift = BITS * (LEVELS - 1);
        loop {
            match &node.get().body {
                node::Body::Inner(children) => match children[((vpn >> shift) & INDEX_MASK) as usize] {
                    Some(child) => {
                        node = child;
                        shift -= BITS;
                    }
                    None => return ABSENT,
                },
                node::Body::Leaf(leaf) => {
                    let i = (vpn & INDEX_MASK) as usize;
                    return PageEntry {
                        meta: leaf.meta[i],
                        page: Page::of_leaf(store, leaf, i),
                        aux: leaf.view_offset(i),
                    };
                }
            }
        }
    }

    /// Applies `edits` (sorted by page, disjoint) in one walk; records the
    /// `build` closure makes (with the store's lock held) move into the
    /// table. Returns the change in the number of committed pages.
    /// Time: O(touched leaves + levels) node copies, each node at most once.
    pub(crate) fn edit_with(&mut self, build: impl FnOnce(&mut store::Guard<'_>) -> Vec<Edit>) -> i64 {
        let Root { node, store, .. } = self.root_mut();
        let mut g = store.lock();
        let mut edits = build(&mut g);
        edits.retain(|e| e.lo < e.hi);
        if edits.is_empty() {
            return 0;
        }
        debug_assert!(
            edits.windows(2).all(|w| w[0].hi <= w[1].lo) && edits.last().is_some_and(|e| e.hi <= VPN_LIMIT)
        );
        edit::edit(&mut g, node, LEVELS - 1, 0, &edits)
    }

    /// Applies `op` to every page in `[lo, hi)`. Returns the change in the
    /// number of committed pages. Time: O(touched leaves + levels); fully
    /// covered absent or uniform subtrees change whole in O(64 · levels).
    pub(crate) fn update(&mut self, lo: u64, hi: u64, op: RangeOp) -> i64 {
        debug_assert!(lo <= hi && hi <= VPN_LIMIT);
        if lo == hi {
            return 0;
        }
        self.edit_with(|_| vec![Edit { lo, hi, op: Op::Range(op) }])
    }

    /// The page as a record of this table's store: `page` itself when it
    /// lives there, else a copy of its bytes.
    fn adopt(&mut self, page: PageRef) -> RecPtr {
        let store = self.store().clone();
        if Arc::ptr_eq(&store, page.store()) {
            page.into_raw()
        } else {
            let (bytes, fp) = (*page.page().bytes(), page.page().fingerprint());
            PageRef::new_in(&store, &bytes, fp).into_raw()
        }
    }

    /// Stores bytes for the committed page `vpn`, keeping its state.
    /// Time: O(levels) (path copy of at most 6 nodes).
    pub(crate) fn set_page(&mut self, vpn: u64, page: Option<PageRef>) {
        let rec = page.map(|p| self.adopt(p));
        self.edit_with(|_| vec![Edit { lo: vpn, hi: vpn + 1, op: Op::Page(rec) }]);
    }

    /// [`set_page`](Self::set_page) for every `(vpn, page)` of `pages`
    /// (ascending, distinct page numbers) in one walk. Time: O(touched
    /// leaves + levels), each node copied at most once.
    pub(crate) fn set_pages(&mut self, pages: Vec<(u64, PageRef)>) {
        debug_assert!(pages.windows(2).all(|w| w[0].0 < w[1].0));
        let edits: Vec<Edit> = pages
            .into_iter()
            .map(|(vpn, page)| Edit { lo: vpn, hi: vpn + 1, op: Op::Page(Some(self.adopt(page))) })
            .collect();
        self.edit_with(|_| edits);
    }

    /// Sets page `vpn`'s state byte and bytes at once: `view_offset` is the
    /// distance of a view page (`meta` with `VIEW`) to its section page,
    /// ignored otherwise. `page` must be `None` unless `meta` holds bytes.
    /// For building a version from its parent's table (delta page maps in
    /// files). Time: O(levels) (path copy of at most 6 nodes).
    pub(crate) fn set_entry(&mut self, vpn: u64, meta: u8, page: Option<PageRef>, view_offset: u64) {
        let rec = page.map(|p| self.adopt(p));
        self.edit_with(|_| vec![Edit { lo: vpn, hi: vpn + 1, op: Op::Put { meta, page: rec, view_offset } }]);
    }

    /// [`set_entry`](Self::set_entry) without bytes for every page of
    /// `[lo, hi)`: each gets state `meta` (and, for a view state, the view
    /// offset), and whatever bytes it had are dropped. Time: O(touched
    /// leaves + levels); fully covered uniform or absent subtrees change
    /// whole.
    pub(crate) fn set_range(&mut self, lo: u64, hi: u64, meta: u8, view_offset: u64) {
        self.edit_with(|_| vec![Edit { lo, hi, op: Op::Put { meta, page: None, view_offset } }]);
    }

    /// True when both tables are the same version (same root). Time: O(1).
    pub(crate) fn ptr_eq(&self, other: &PageTable) -> bool {
        self.top().map(|t| t.0) == other.top().map(|t| t.0)
    }

    /// Pages with bytes (not zero pages) in this version. Time: O(1).
    #[cfg(test)]
    pub(crate) fn stored_pages(&self) -> u64 {
        self.top().map_or(0, |(n, _)| n.get().stored)
    }

    /// Stored pages held only by this table (`private`) and those it shares
    /// with other tables or versions (`shared`), found by reference counts:
    /// a page is private when it and every node above it are referenced
    /// once. Time: O(private nodes): a shared subtree is counted from its
    /// cached total.
    pub(crate) fn sharing(&self) -> (u64, u64) {
        fn walk(g: &store::Guard<'_>, node: NodePtr) -> (u64, u64) {
            if g.node_refs(node) != 1 {
                return (0, node.get().stored);
            }
            match &node.get().body {
                node::Body::Leaf(leaf) => {
                    (0..FANOUT).filter_map(|i| leaf.rec(i)).fold((0, 0), |(p, s), rec| {
                        if g.page_refs(rec) == 1 { (p + 1, s) } else { (p, s + 1) }
                    })
                }
                node::Body::Inner(children) => children.iter().flatten().fold((0, 0), |(p, s), &child| {
                    let (cp, cs) = walk(g, child);
                    (p + cp, s + cs)
                }),
            }
        }
        let Some(root) = self.root.as_deref() else { return (0, 0) };
        let Some(node) = root.node else { return (0, 0) };
        let g = root.store.lock();
        // A root shared by clones of this table is shared as a whole.
        if Arc::strong_count(self.root.as_ref().expect("checked")) > 1 {
            return (0, node.get().stored);
        }
        walk(&g, node)
    }

    /// The first page in `[lo, hi)` whose state byte differs from the state of
    /// page `lo`, or `hi` when none does. Time: O(nodes in the run).
    pub(crate) fn run_end(&self, lo: u64, hi: u64) -> u64 {
        if lo >= hi {
            return hi;
        }
        let first = self.get(lo).meta;
        self.find_first(lo, hi, |m| m != first).unwrap_or(hi)
    }

    /// The first page in `[lo, hi)` whose state byte satisfies `pred`.
    /// Time: O(nodes scanned; a uniform subtree is one).
    pub(crate) fn find_first(&self, lo: u64, hi: u64, pred: impl Fn(u8) -> bool) -> Option<u64> {
        if lo >= hi {
            return None;
        }
        walk::find(self.top().map(|t| t.0), LEVELS - 1, 0, lo, hi, &pred)
    }

    /// Calls `f(first, count, visit)` for the pages with a non-zero state,
    /// ascending: a uniform subtree (one state, no bytes: a committed range
    /// never written, a view) is one call for all its pages, every other
    /// page a call of its own. Consecutive calls may continue one run; the
    /// caller merges them. Time: O(non-uniform nodes), not O(pages): all of
    /// user space committed is a few hundred calls.
    pub(crate) fn for_each_run<'a>(&'a self, mut f: impl FnMut(u64, u64, Visit<'a>)) {
        if let Some((node, store)) = self.top() {
            walk::for_each_run(store, Some(node), LEVELS - 1, 0, &mut f);
        }
    }

    /// Calls `f(vpn, meta, page)` for every page with bytes in `[lo, hi)`,
    /// ascending. Time: O(nodes holding bytes there): subtrees without
    /// bytes are skipped whole.
    pub(crate) fn for_each_stored_in<'a>(&'a self, lo: u64, hi: u64, mut f: impl FnMut(u64, u8, Page<'a>)) {
        if let Some((node, store)) = self.top() {
            walk::for_each_stored(store, Some(node), LEVELS - 1, 0, (lo, hi), &mut f);
        }
    }

    /// [`for_each_stored_in`](Self::for_each_stored_in) over every page.
    pub(crate) fn for_each_stored<'a>(&'a self, f: impl FnMut(u64, u8, Page<'a>)) {
        self.for_each_stored_in(0, VPN_LIMIT, f)
    }

    /// Calls `f(first, count, old, new)` for the pages whose state or bytes
    /// may differ between `self` and `other`: subtrees shared by pointer are
    /// skipped, so the cost follows what changed. Two uniform subtrees (one
    /// state, no bytes) that differ are one call for all their pages, so
    /// committing or protecting all of user space diffs in O(levels); every
    /// other page is a call of its own (`count == 1`). Ascending; a page
    /// whose state and stored page are equal is not reported.
    pub(crate) fn diff<'a>(
        &'a self,
        other: &'a PageTable,
        mut f: impl FnMut(u64, u64, Visit<'a>, Visit<'a>),
    ) {
        let (a, b) = (self.top(), other.top());
        let fallback = match (a, b) {
            (Some((_, s)), _) | (None, Some((_, s))) => s,
            (None, None) => return,
        };
        let (sa, sb) = (a.map_or(fallback, |t| t.1), b.map_or(fallback, |t| t.1));
        let mut pairs = Vec::new();
        walk::collect_pairs(a.map(|t| t.0), b.map(|t| t.0), LEVELS - 1, 0, &mut pairs);
        // Leaf pairs are scattered in memory: their header lines were
        // prefetched during the walk; take them 16 at a time and load each
        // batch's candidate entries at once, so the cache misses overlap
        // instead of following one another.
        for batch in pairs.chunks(16) {
            for pair in batch {
                walk::preload(pair);
            }
            for &pair in batch {
                walk::diff_pair(sa, sb, pair, &mut f);
            }
        }
    }
}

#[cfg(test)]
mod tests;
