//! The persistent radix page table: page number → (state byte, frozen page).
//!
//! ```text
//!  page number (36 bits used; user space needs 35)
//!  ┌──────┬──────┬──────┬──────┬──────┬──────┐
//!  │ L5   │ L4   │ L3   │ L2   │ L1   │ L0   │   6 bits per level, 64-way nodes
//!  └──┬───┴──┬───┴──┬───┴──┬───┴──┬───┴──┬───┘
//!     │      │      │      │      │      └─ index in a Leaf: meta[64] + pages[64]
//!     └──────┴──────┴──────┴──────┴──────── index in an Inner node: children[64]
//! ```
//!
//! Every node is an `Arc`. Cloning a table clones one pointer (O(1)); changing
//! it copies the path from the root to the changed leaves (`Arc::make_mut`), so
//! every older clone keeps seeing its own version. Two versions that share a
//! subtree share it by pointer, which lets [`PageTable::diff`] skip everything
//! that did not change.
//!
//! An absent subtree means "every page state byte is 0" (not committed). A
//! committed page whose frozen page is `None` reads as zeros, so committing a
//! gigabyte allocates nothing but a handful of shared nodes: a fully covered,
//! uniform subtree is built once and shared by all its positions.
//!
//! The table never holds pages that are being written: the live version's
//! written pages sit in the mutable overlay (`overlay.rs`) and enter the table
//! only when a snapshot freezes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::live::prefetch;
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

/// An immutable page shared by every version that contains it.
///
/// `fingerprint` is a cheap content summary computed once, when the page is
/// frozen (its bytes are hot then): pages with different fingerprints differ,
/// so a diff compares bytes only when fingerprints match.
///
/// A page of a lazily opened snapshot file (`file::open_lazy`) starts
/// without its bytes: it knows its fingerprint (from the file's page record)
/// and where to fetch them, and the first [`try_bytes`](Self::try_bytes)
/// decompresses its frame and fills it (and the frame's other pages) for
/// good. Every other page has its bytes from birth.
pub(crate) struct FrozenPage {
    pub(crate) fingerprint: u64,
    bytes: OnceLock<PageBytes>,
    lazy: Option<Box<LazyRef>>,
}

/// Where a lazily loaded page's bytes come from: record `record` of `source`.
struct LazyRef {
    source: Arc<dyn LazySource>,
    record: u32,
}

/// A store of lazily loaded pages (a snapshot file opened lazily).
pub(crate) trait LazySource: Send + Sync {
    /// Reads, checks and fills page record `record` (and the pages that share
    /// its frame) through [`FrozenPage::fill`]. On failure (an I/O error, a
    /// corrupt frame, a page that does not match its hash) it fills nothing
    /// and keeps the error for the file's owner; a later call tries again.
    fn load(&self, record: u32);
}

impl std::fmt::Debug for FrozenPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenPage")
            .field("fingerprint", &self.fingerprint)
            .field("loaded", &self.bytes.get().is_some())
            .finish()
    }
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

impl FrozenPage {
    /// The page's bytes; `None` only for a lazily loaded page whose bytes
    /// cannot be read (see [`LazySource::load`]). Time: one atomic load once
    /// loaded; the first call on a lazy page reads and decompresses its frame.
    #[inline]
    pub(crate) fn try_bytes(&self) -> Option<&PageBytes> {
        match self.bytes.get() {
            Some(b) => Some(b),
            None => self.load(),
        }
    }

    #[cold]
    fn load(&self) -> Option<&PageBytes> {
        let lazy = self.lazy.as_ref()?;
        lazy.source.load(lazy.record);
        self.bytes.get()
    }

    /// The page's bytes, or the zero page for a lazily loaded page whose
    /// bytes cannot be read. For the consumers that cannot fail (diff byte
    /// views, `serialize_memory_state`): every fallible path checks
    /// [`try_bytes`](Self::try_bytes) first.
    #[inline]
    pub(crate) fn bytes(&self) -> &PageBytes {
        self.try_bytes().unwrap_or(&ZERO_PAGE)
    }

    /// Fills a lazily loaded page with its (checked) bytes; a no-op when
    /// it has them already.
    pub(crate) fn fill(&self, bytes: &PageBytes) {
        if self.bytes.get().is_none() {
            let _ = self.bytes.set(*bytes);
        }
    }

    /// True when the page has its bytes (always, except for a lazily loaded
    /// page not read yet).
    pub(crate) fn is_loaded(&self) -> bool {
        self.bytes.get().is_some()
    }

    /// True when both pages hold the same bytes (fingerprints first). A page
    /// whose bytes cannot be read equals only itself.
    #[inline]
    pub(crate) fn same_bytes(&self, other: &FrozenPage) -> bool {
        std::ptr::eq(self, other)
            || (self.fingerprint == other.fingerprint
                && matches!((self.try_bytes(), other.try_bytes()), (Some(a), Some(b)) if a == b))
    }

    /// True when the page holds only zeros (a page whose bytes cannot be
    /// read is not).
    #[inline]
    pub(crate) fn is_zero(&self) -> bool {
        self.fingerprint == 0 && self.try_bytes().is_some_and(|b| *b == ZERO_PAGE)
    }
}

/// Frozen pages alive in this process (see [`crate::frozen_pages_alive`]).
static FROZEN_PAGES: AtomicU64 = AtomicU64::new(0);

impl FrozenPage {
    /// A new shared page holding a copy of `bytes`.
    pub(crate) fn new(bytes: &PageBytes) -> Arc<FrozenPage> {
        Self::with_fingerprint(bytes, fingerprint(bytes))
    }

    /// A new shared page whose fingerprint the caller computed.
    pub(crate) fn with_fingerprint(bytes: &PageBytes, fingerprint: u64) -> Arc<FrozenPage> {
        FROZEN_PAGES.fetch_add(1, Ordering::Relaxed);
        Arc::new(FrozenPage { fingerprint, bytes: OnceLock::from(*bytes), lazy: None })
    }

    /// A new lazily loaded page: record `record` of `source`, whose bytes
    /// have this fingerprint (the caller's promise, checked when loaded).
    pub(crate) fn lazy(fingerprint: u64, source: Arc<dyn LazySource>, record: u32) -> Arc<FrozenPage> {
        FROZEN_PAGES.fetch_add(1, Ordering::Relaxed);
        Arc::new(FrozenPage {
            fingerprint,
            bytes: OnceLock::new(),
            lazy: Some(Box::new(LazyRef { source, record })),
        })
    }
}

impl Drop for FrozenPage {
    fn drop(&mut self) {
        FROZEN_PAGES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The number of frozen pages alive in the whole process: pages held by
/// snapshots and page tables (not zero pages, not the live overlay's
/// buffers). A diagnostic for leak tests: it returns to its old value when
/// every version holding a page is dropped. Time: O(1).
pub fn frozen_pages_alive() -> u64 {
    FROZEN_PAGES.load(Ordering::Relaxed)
}

/// Source of leaf ids; 0 means "no origin".
static NEXT_LEAF_ID: AtomicU64 = AtomicU64::new(1);

/// A leaf: 64 page states and page pointers, plus its lineage.
///
/// `id` is unique per leaf; a leaf made by copying another (`Arc::make_mut`
/// on a shared leaf) records that leaf's id in `origin`, and every change to
/// an entry sets its bit in `changed`. Two leaves where one is the other's
/// origin can then differ only in the entries `x.changed | y.changed`, so a
/// diff reads those entries and nothing else of the two leaves.
///
/// Layout: the lineage words first, on the leaf's first cache line (the
/// leaf is line aligned), so a diff decides which entries to read from one
/// line; then the states, then the entries, four to a line.
#[repr(C, align(64))]
struct Leaf {
    id: u64,
    origin: u64,
    changed: u64,
    /// Pages with bytes (`Some`) in this leaf.
    stored: u64,
    meta: [u8; FANOUT],
    entries: [Entry; FANOUT],
}

/// A page pointer and a word beside it (one cache line holds four).
#[derive(Clone, Default)]
struct Entry {
    page: Option<Arc<FrozenPage>>,
    /// For a section view page (state bit `VIEW`): the distance from its page
    /// number to the section page holding its bytes (above user space); the
    /// same for every page of a view, so a view is made of shared uniform
    /// subtrees. Otherwise
    /// `page.fingerprint`, or 0 without a page, so a diff tells two pages
    /// apart without touching either.
    aux: u64,
}

impl Leaf {
    fn new(meta: [u8; FANOUT]) -> Leaf {
        Leaf {
            meta,
            id: NEXT_LEAF_ID.fetch_add(1, Ordering::Relaxed),
            origin: 0,
            changed: 0,
            stored: 0,
            entries: std::array::from_fn(|_| Entry::default()),
        }
    }
}

impl Clone for Leaf {
    /// A copy is a new leaf whose origin is `self`, with nothing changed yet.
    fn clone(&self) -> Leaf {
        Leaf {
            meta: self.meta,
            id: NEXT_LEAF_ID.fetch_add(1, Ordering::Relaxed),
            origin: self.id,
            changed: 0,
            stored: self.stored,
            entries: self.entries.clone(),
        }
    }
}

/// An inner node: 64 children, with the same lineage as a [`Leaf`] (`id`,
/// `origin`, `changed` children) so a diff of related nodes visits only the
/// children that changed.
struct Inner {
    id: u64,
    origin: u64,
    changed: u64,
    /// Pages with bytes under this node.
    stored: u64,
    children: [Option<Arc<Node>>; FANOUT],
}

impl Inner {
    fn new(children: [Option<Arc<Node>>; FANOUT], stored: u64) -> Inner {
        Inner { id: NEXT_LEAF_ID.fetch_add(1, Ordering::Relaxed), origin: 0, changed: 0, stored, children }
    }
}

impl Clone for Inner {
    /// A copy is a new node whose origin is `self`, with nothing changed yet.
    fn clone(&self) -> Inner {
        Inner {
            id: NEXT_LEAF_ID.fetch_add(1, Ordering::Relaxed),
            origin: self.id,
            changed: 0,
            stored: self.stored,
            children: self.children.clone(),
        }
    }
}

impl std::ops::Deref for Inner {
    type Target = [Option<Arc<Node>>; FANOUT];
    fn deref(&self) -> &Self::Target {
        &self.children
    }
}

// Leaves are about twice the size of inner nodes; inner nodes are 1/64 of
// the nodes, so the padding costs little, while boxing leaves would add a
// pointer hop to every lookup.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Node {
    Inner(Inner),
    Leaf(Leaf),
}

impl Node {
    fn empty(level: u32) -> Node {
        if level == 0 {
            Node::Leaf(Leaf::new([0; FANOUT]))
        } else {
            Node::Inner(Inner::new(std::array::from_fn(|_| None), 0))
        }
    }

    /// Pages with bytes under this node. O(1).
    fn stored(&self) -> u64 {
        match self {
            Node::Inner(inner) => inner.stored,
            Node::Leaf(leaf) => leaf.stored,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Node::Inner(children) => children.iter().all(Option::is_none),
            Node::Leaf(leaf) => leaf.meta.iter().all(|&m| m == 0),
        }
    }
}

/// Pages covered by one node at `level`.
#[inline]
const fn span(level: u32) -> u64 {
    1 << (BITS * (level + 1))
}

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
    /// Set this state byte on every page and drop its bytes.
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

/// What an operation does to an absent (all-zero) subtree.
enum Absent {
    /// Nothing: the pages stay absent.
    Skip,
    /// Every page gets this state and word (`Entry::aux`) and no bytes: a
    /// shared uniform subtree.
    Uniform(u8, u64),
}

impl RangeOp {
    /// What the op does to absent pages.
    fn on_absent(self) -> Absent {
        match self {
            RangeOp::Commit(prot) | RangeOp::CommitReserved(prot) => {
                Absent::Uniform(meta::COMMITTED | prot, 0)
            }
            RangeOp::Set(m) if m != 0 => Absent::Uniform(m, 0),
            RangeOp::View { meta, key_offset } => Absent::Uniform(meta, key_offset),
            _ => Absent::Skip,
        }
    }

    /// The state and word a page with state `m`, word `aux` and no bytes
    /// gets: the same for every page of a uniform subtree.
    fn apply_uniform(self, m: u8, aux: u64) -> (u8, u64) {
        let mut m = m;
        let mut entry = Entry { page: None, aux };
        self.apply(0, &mut m, &mut entry);
        (m, entry.aux)
    }

    /// Applies the op to page `vpn`; returns the change in committed pages.
    #[inline]
    fn apply(self, _vpn: u64, m: &mut u8, entry: &mut Entry) -> i64 {
        let was = i64::from(*m & meta::COMMITTED != 0);
        match self {
            RangeOp::Commit(prot) => {
                if *m & meta::COMMITTED == 0 {
                    entry.page = None;
                }
                *m = (*m & !meta::PROT) | meta::COMMITTED | prot;
            }
            RangeOp::CommitReserved(prot) => {
                if *m & meta::COMMITTED == 0 {
                    entry.page = None;
                    *m = (*m & !meta::PROT) | meta::COMMITTED | prot;
                }
            }
            RangeOp::Protect(prot) => {
                if *m & meta::COMMITTED != 0 {
                    *m = (*m & !meta::PROT) | prot;
                }
            }
            RangeOp::Clear => {
                *m = 0;
                entry.page = None;
            }
            RangeOp::Set(new) => {
                *m = new;
                entry.page = None;
            }
            RangeOp::View { meta: new, key_offset } => {
                *m = new;
                entry.page = None;
                entry.aux = key_offset;
            }
        }
        if *m & meta::VIEW == 0 && entry.page.is_none() {
            entry.aux = 0;
        }
        i64::from(*m & meta::COMMITTED != 0) - was
    }
}

/// One page as the table holds it.
#[derive(Clone, Copy)]
pub(crate) struct PageEntry<'a> {
    /// The state byte (see `protection::meta`).
    pub(crate) meta: u8,
    /// The frozen bytes, or `None` for a zero page (or an uncommitted one).
    pub(crate) page: Option<&'a Arc<FrozenPage>>,
    /// For a view page, the distance to the page of its bytes (see `Entry::aux`).
    pub(crate) aux: u64,
}

impl<'a> PageEntry<'a> {
    /// The page's bytes (the zero page when it has none).
    #[inline]
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

/// One side of a page that differs between two tables, as a diff sees it.
#[derive(Clone, Copy)]
pub(crate) struct DiffEntry<'a> {
    /// The state byte.
    pub(crate) meta: u8,
    /// The frozen page, if any.
    pub(crate) page: Option<&'a Arc<FrozenPage>>,
    /// The page's fingerprint, read from the leaf (0 without a page).
    pub(crate) fingerprint: u64,
}

impl DiffEntry<'_> {
    const ABSENT: DiffEntry<'static> = DiffEntry { meta: 0, page: None, fingerprint: 0 };

    fn of(leaf: &Leaf, i: usize) -> DiffEntry<'_> {
        DiffEntry {
            meta: leaf.meta[i],
            page: leaf.entries[i].page.as_ref(),
            fingerprint: leaf.entries[i].aux,
        }
    }

    /// True when both sides hold the same bytes (no page = zeros). Touches
    /// page memory only when the fingerprints match.
    pub(crate) fn same_bytes(&self, other: &DiffEntry<'_>) -> bool {
        if self.fingerprint != other.fingerprint {
            return false;
        }
        match (self.page, other.page) {
            (None, None) => true,
            (Some(p), Some(q)) => p.same_bytes(q),
            (Some(p), None) | (None, Some(p)) => p.is_zero(),
        }
    }
}

/// A persistent map from page number to page state and bytes.
///
/// Clone: O(1). Lookup: O(levels) = 6 pointer hops.
#[derive(Clone, Default)]
pub(crate) struct PageTable {
    root: Option<Arc<Node>>,
}

impl PageTable {
    /// The state of page `vpn` and its bytes, following a view page to the
    /// section page that holds them. Time: O(1) (one or two walks).
    #[inline]
    /// A committed page whose bytes cannot be read (a lazily loaded page of a
    /// damaged file) comes back without its committed bit and as zeros, so
    /// every access fails (see [`PageTable::unavailable`]).
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
        let Some(mut node) = self.root.as_deref() else {
            return ABSENT;
        };
        let mut shift = BITS * (LEVELS - 1);
        loop {
            match node {
                Node::Inner(children) => match &children[((vpn >> shift) & INDEX_MASK) as usize] {
                    Some(child) => {
                        node = child;
                        shift -= BITS;
                    }
                    None => return ABSENT,
                },
                Node::Leaf(leaf) => {
                    let i = (vpn & INDEX_MASK) as usize;
                    let e = &leaf.entries[i];
                    return PageEntry { meta: leaf.meta[i], page: e.page.as_ref(), aux: e.aux };
                }
            }
        }
    }

    /// Applies `op` to every page in `[lo, hi)`. Returns the change in the
    /// number of committed pages. Time: O(touched leaves + levels); fully
    /// covered absent subtrees become shared uniform nodes in O(64 · levels).
    pub(crate) fn update(&mut self, lo: u64, hi: u64, op: RangeOp) -> i64 {
        debug_assert!(lo <= hi && hi <= VPN_LIMIT);
        if lo == hi {
            return 0;
        }
        update_node(&mut self.root, LEVELS - 1, 0, lo, hi, op)
    }

    /// Stores frozen bytes for the committed page `vpn`, keeping its state.
    /// Time: O(levels) (path copy of at most 6 nodes).
    pub(crate) fn set_page(&mut self, vpn: u64, page: Option<Arc<FrozenPage>>) {
        fn set(slot: &mut Option<Arc<Node>>, level: u32, vpn: u64, page: Option<Arc<FrozenPage>>) -> i64 {
            match Arc::make_mut(slot.get_or_insert_with(|| Arc::new(Node::empty(level)))) {
                Node::Inner(inner) => {
                    let index = ((vpn >> (BITS * level)) & INDEX_MASK) as usize;
                    inner.changed |= 1 << index;
                    let child = &mut inner.children[index];
                    let delta = set(child, level - 1, vpn, page);
                    inner.stored = inner.stored.checked_add_signed(delta).expect("stored count stays >= 0");
                    delta
                }
                Node::Leaf(leaf) => {
                    let i = (vpn & INDEX_MASK) as usize;
                    debug_assert!(leaf.meta[i] & meta::COMMITTED != 0);
                    let delta = i64::from(page.is_some()) - i64::from(leaf.entries[i].page.is_some());
                    debug_assert!(leaf.meta[i] & meta::VIEW == 0, "view pages hold no bytes");
                    leaf.entries[i] = Entry { aux: page.as_ref().map_or(0, |p| p.fingerprint), page };
                    leaf.changed |= 1 << i;
                    leaf.stored = leaf.stored.checked_add_signed(delta).expect("stored count stays >= 0");
                    delta
                }
            }
        }
        set(&mut self.root, LEVELS - 1, vpn, page);
    }

    /// Sets page `vpn`'s state byte and bytes at once: `view_offset` is the
    /// aux word of a view page (`meta` with `VIEW`), ignored otherwise (the
    /// aux word is then the page's fingerprint, or 0). `page` must be `None`
    /// unless `meta` is committed and neither MMIO nor a view. For building a
    /// version from its parent's table (delta page maps in files). Time:
    /// O(levels) (path copy of at most 6 nodes).
    pub(crate) fn set_entry(&mut self, vpn: u64, meta: u8, page: Option<Arc<FrozenPage>>, view_offset: u64) {
        fn set(
            slot: &mut Option<Arc<Node>>,
            level: u32,
            vpn: u64,
            state: u8,
            page: Option<Arc<FrozenPage>>,
            view_offset: u64,
        ) -> i64 {
            match Arc::make_mut(slot.get_or_insert_with(|| Arc::new(Node::empty(level)))) {
                Node::Inner(inner) => {
                    let index = ((vpn >> (BITS * level)) & INDEX_MASK) as usize;
                    inner.changed |= 1 << index;
                    let delta = set(&mut inner.children[index], level - 1, vpn, state, page, view_offset);
                    inner.stored = inner.stored.checked_add_signed(delta).expect("stored count stays >= 0");
                    delta
                }
                Node::Leaf(leaf) => {
                    let i = (vpn & INDEX_MASK) as usize;
                    debug_assert!(page.is_none() || meta::holds_bytes(state));
                    let delta = i64::from(page.is_some()) - i64::from(leaf.entries[i].page.is_some());
                    let aux = if state & meta::VIEW != 0 {
                        view_offset
                    } else {
                        page.as_ref().map_or(0, |p| p.fingerprint)
                    };
                    leaf.meta[i] = state;
                    leaf.entries[i] = Entry { page, aux };
                    leaf.changed |= 1 << i;
                    leaf.stored = leaf.stored.checked_add_signed(delta).expect("stored count stays >= 0");
                    delta
                }
            }
        }
        set(&mut self.root, LEVELS - 1, vpn, meta, page, view_offset);
    }

    /// True when both tables are the same version (same root). Time: O(1).
    pub(crate) fn ptr_eq(&self, other: &PageTable) -> bool {
        match (&self.root, &other.root) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Pages with bytes (not zero pages) in this version. Time: O(1).
    #[cfg(test)]
    pub(crate) fn stored_pages(&self) -> u64 {
        self.root.as_deref().map_or(0, Node::stored)
    }

    /// Frozen pages held only by this table (`private`) and those it shares
    /// with other tables or versions (`shared`), found by reference counts: a
    /// page is private when it and every node above it are referenced once.
    /// Time: O(private nodes): a shared subtree is counted from its cached total.
    pub(crate) fn sharing(&self) -> (u64, u64) {
        fn walk(node: &Arc<Node>) -> (u64, u64) {
            if Arc::strong_count(node) != 1 {
                return (0, node.stored());
            }
            match &**node {
                Node::Leaf(leaf) => {
                    leaf.entries.iter().filter_map(|e| e.page.as_ref()).fold((0, 0), |(p, s), page| {
                        if Arc::strong_count(page) == 1 { (p + 1, s) } else { (p, s + 1) }
                    })
                }
                Node::Inner(inner) => inner.children.iter().flatten().fold((0, 0), |(p, s), child| {
                    let (cp, cs) = walk(child);
                    (p + cp, s + cs)
                }),
            }
        }
        self.root.as_ref().map_or((0, 0), walk)
    }

    /// The first page in `[lo, hi)` whose state byte differs from the state of
    /// page `lo`, or `hi` when none does. Time: O(leaves in the run).
    pub(crate) fn run_end(&self, lo: u64, hi: u64) -> u64 {
        if lo >= hi {
            return hi;
        }
        let first = self.get(lo).meta;
        self.find_first(lo, hi, |m| m != first).unwrap_or(hi)
    }

    /// The first page in `[lo, hi)` whose state byte satisfies `pred`.
    /// Time: O(leaves scanned).
    pub(crate) fn find_first(&self, lo: u64, hi: u64, pred: impl Fn(u8) -> bool + Copy) -> Option<u64> {
        if lo >= hi {
            return None;
        }
        find_node(self.root.as_deref(), LEVELS - 1, 0, lo, hi, pred)
    }

    /// Calls `f(vpn, meta, page)` for every page with a non-zero state, in
    /// ascending order. Time: O(non-empty leaves).
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, u8, Option<&Arc<FrozenPage>>)) {
        for_each_node(self.root.as_deref(), LEVELS - 1, 0, &mut f);
    }

    /// Calls `f(vpn)` for every page whose state or bytes may differ between
    /// `self` and `other`: subtrees shared by pointer are skipped, so the cost
    /// follows what changed. Pages are reported in ascending order; a page whose
    /// state and frozen page pointer are equal is not reported.
    pub(crate) fn diff(&self, other: &PageTable, mut f: impl FnMut(u64, DiffEntry<'_>, DiffEntry<'_>)) {
        let mut pairs = Vec::new();
        collect_leaf_pairs(self.root.as_ref(), other.root.as_ref(), LEVELS - 1, 0, &mut pairs);
        // Leaf pairs are scattered in memory: their header lines were
        // prefetched during the walk; take them 16 at a time and load each
        // batch's candidate entries at once, so the cache misses overlap
        // instead of following one another.
        for batch in pairs.chunks(16) {
            for pair in batch {
                preload(pair);
            }
            for &(x, y, base) in batch {
                diff_leaves(x, y, base, &mut f);
            }
        }
    }
}

fn update_node(slot: &mut Option<Arc<Node>>, level: u32, base: u64, lo: u64, hi: u64, op: RangeOp) -> i64 {
    let end = base + span(level);
    let covered = lo <= base && end <= hi;
    match slot {
        None => match op.on_absent() {
            Absent::Skip => return 0,
            Absent::Uniform(m, aux) if covered => {
                *slot = Some(uniform(level, m, aux));
                return if m & meta::COMMITTED != 0 { span(level) as i64 } else { 0 };
            }
            Absent::Uniform(..) => *slot = Some(Arc::new(Node::empty(level))),
        },
        Some(node) if covered && matches!(op, RangeOp::Clear) => {
            let gone = committed_in(node);
            *slot = None;
            return -(gone as i64);
        }
        Some(node) if covered => {
            // A uniform subtree (say, a committed gigabyte never written)
            // changes as a whole: O(64 · levels), not O(pages).
            if let Some((m, aux)) = uniform_meta(node) {
                let (new, new_aux) = op.apply_uniform(m, aux);
                if (new, new_aux) != (m, aux) {
                    *slot = (new != 0).then(|| uniform(level, new, new_aux));
                }
                let committed = |m: u8| i64::from(m & meta::COMMITTED != 0);
                return (committed(new) - committed(m)) * span(level) as i64;
            }
        }
        Some(_) => {}
    }
    // Invariant: `slot` was filled just above when it was `None`.
    let node = Arc::make_mut(slot.as_mut().expect("slot filled above"));
    let from = lo.max(base) - base;
    let to = hi.min(end) - base;
    let mut delta = 0;
    match node {
        Node::Leaf(leaf) => {
            for i in from as usize..to as usize {
                delta += op.apply(base + i as u64, &mut leaf.meta[i], &mut leaf.entries[i]);
            }
            leaf.changed |= range_mask(from as usize, to as usize);
            leaf.stored = leaf.entries.iter().filter(|e| e.page.is_some()).count() as u64;
        }
        Node::Inner(inner) => {
            let child_span = span(level - 1);
            let first = (from / child_span) as usize;
            let last = ((to - 1) / child_span) as usize;
            let stored = |c: &Option<Arc<Node>>| c.as_deref().map_or(0, Node::stored);
            for i in first..=last {
                inner.changed |= 1 << i;
                let before = stored(&inner.children[i]);
                delta +=
                    update_node(&mut inner.children[i], level - 1, base + i as u64 * child_span, lo, hi, op);
                inner.stored = inner.stored + stored(&inner.children[i]) - before;
            }
        }
    }
    if node.is_empty() {
        *slot = None;
    }
    delta
}

/// Pages under `node`, from its depth.
fn span_of(node: &Node) -> u64 {
    let mut level = 0;
    let mut n = node;
    while let Node::Inner(children) = n {
        level += 1;
        // Invariant: inner nodes are pruned when empty, so one child exists.
        n = children.iter().flatten().next().expect("inner nodes are never empty");
    }
    span(level)
}

/// A subtree at `level` whose every page has state `m`, word `aux` and no
/// bytes. Its
/// nodes are shared: 64 pointers to one child at each level.
fn uniform(level: u32, m: u8, aux: u64) -> Arc<Node> {
    let mut leaf = Leaf::new([m; FANOUT]);
    for e in &mut leaf.entries {
        e.aux = aux;
    }
    let mut node = Arc::new(Node::Leaf(leaf));
    for _ in 0..level {
        let child = node;
        node = Arc::new(Node::Inner(Inner::new(std::array::from_fn(|_| Some(child.clone())), 0)));
    }
    node
}

/// Bits `from..to` set (`to <= 64`).
fn range_mask(from: usize, to: usize) -> u64 {
    let upper = if to >= FANOUT { u64::MAX } else { (1u64 << to) - 1 };
    upper & !((1u64 << from) - 1)
}

/// The state byte and word of every page under `node`, when they all share
/// them and none has bytes: a node built by [`uniform`] (or a leaf that happens to be).
/// Time: O(64 · levels).
fn uniform_meta(node: &Node) -> Option<(u8, u64)> {
    match node {
        Node::Leaf(leaf) => {
            let (m, aux) = (leaf.meta[0], leaf.entries[0].aux);
            let same = leaf.meta.iter().all(|&x| x == m)
                && leaf.entries.iter().all(|e| e.page.is_none() && e.aux == aux);
            same.then_some((m, aux))
        }
        Node::Inner(children) => {
            let first = children[0].as_ref()?;
            if children.iter().all(|c| c.as_ref().is_some_and(|c| Arc::ptr_eq(c, first))) {
                uniform_meta(first)
            } else {
                None
            }
        }
    }
}

/// Committed pages under `node`. Time: O(non-uniform leaves under it).
fn committed_in(node: &Node) -> u64 {
    if let Node::Inner(_) = node
        && let Some((m, _)) = uniform_meta(node)
    {
        return if m & meta::COMMITTED != 0 { span_of(node) } else { 0 };
    }
    match node {
        Node::Leaf(leaf) => leaf.meta.iter().filter(|&&m| m & meta::COMMITTED != 0).count() as u64,
        Node::Inner(children) => children.iter().flatten().map(|c| committed_in(c)).sum(),
    }
}

fn find_node(
    node: Option<&Node>,
    level: u32,
    base: u64,
    lo: u64,
    hi: u64,
    pred: impl Fn(u8) -> bool + Copy,
) -> Option<u64> {
    let end = base + span(level);
    let Some(node) = node else {
        return pred(0).then(|| lo.max(base));
    };
    if let Node::Inner(_) = node
        && let Some((m, _)) = uniform_meta(node)
    {
        return pred(m).then(|| lo.max(base));
    }
    let from = lo.max(base) - base;
    let to = hi.min(end) - base;
    match node {
        Node::Leaf(leaf) => (from..to).find(|&i| pred(leaf.meta[i as usize])).map(|i| base + i),
        Node::Inner(children) => {
            let child_span = span(level - 1);
            let first_child = (from / child_span) as usize;
            let last_child = ((to - 1) / child_span) as usize;
            (first_child..=last_child).find_map(|i| {
                find_node(children[i].as_deref(), level - 1, base + i as u64 * child_span, lo, hi, pred)
            })
        }
    }
}

fn for_each_node(
    node: Option<&Node>,
    level: u32,
    base: u64,
    f: &mut impl FnMut(u64, u8, Option<&Arc<FrozenPage>>),
) {
    match node {
        None => {}
        Some(Node::Leaf(leaf)) => {
            for i in 0..FANOUT {
                if leaf.meta[i] != 0 {
                    f(base + i as u64, leaf.meta[i], leaf.entries[i].page.as_ref());
                }
            }
        }
        Some(Node::Inner(children)) => {
            let child_span = span(level - 1);
            for (i, child) in children.iter().enumerate() {
                for_each_node(child.as_deref(), level - 1, base + i as u64 * child_span, f);
            }
        }
    }
}

/// A pair of leaves that may differ, and the first page number they cover.
type LeafPair<'t> = (Option<&'t Leaf>, Option<&'t Leaf>, u64);

/// Collects the leaf pairs under `a` and `b` that are not the same pointer.
/// Touches inner nodes only.
fn collect_leaf_pairs<'t>(
    a: Option<&'t Arc<Node>>,
    b: Option<&'t Arc<Node>>,
    level: u32,
    base: u64,
    pairs: &mut Vec<LeafPair<'t>>,
) {
    let (a, b) = match (a, b) {
        (None, None) => return,
        (Some(x), Some(y)) if Arc::ptr_eq(x, y) => return,
        (a, b) => (a.map(|n| &**n), b.map(|n| &**n)),
    };
    let leaf = |n: Option<&'t Node>| match n {
        Some(Node::Leaf(l)) => Some(l),
        _ => None,
    };
    if level == 0 {
        // Start loading both headers now; the pairs are diffed after the walk.
        let (x, y) = (leaf(a), leaf(b));
        x.inspect(|l| prefetch(&l.id));
        y.inspect(|l| prefetch(&l.id));
        pairs.push((x, y, base));
        return;
    }
    fn children(n: Option<&Node>, i: usize) -> Option<&Arc<Node>> {
        match n {
            Some(Node::Inner(c)) => c[i].as_ref(),
            _ => None,
        }
    }
    let child_span = span(level - 1);
    // Related nodes (one copied from the other) differ only in children
    // either changed since.
    let mut todo = match (a, b) {
        (Some(Node::Inner(x)), Some(Node::Inner(y))) if x.origin == y.id || y.origin == x.id => {
            x.changed | y.changed
        }
        _ => u64::MAX,
    };
    while todo != 0 {
        let i = todo.trailing_zeros() as usize;
        todo &= todo - 1;
        collect_leaf_pairs(children(a, i), children(b, i), level - 1, base + i as u64 * child_span, pairs);
    }
}

/// The entries two leaves may differ in: for related leaves (one copied from
/// the other) the entries either changed since, otherwise all 64.
#[inline]
fn candidates(x: &Leaf, y: &Leaf) -> u64 {
    if x.origin == y.id || y.origin == x.id { x.changed | y.changed } else { u64::MAX }
}

/// Starts loading the entry line the diff of `pair` will read first.
#[inline]
fn preload(pair: &LeafPair<'_>) {
    if let (Some(x), Some(y), _) = *pair {
        let i = candidates(x, y).trailing_zeros() as usize % FANOUT;
        prefetch(&x.entries[i]);
        prefetch(&y.entries[i]);
    }
}

fn diff_leaves<'t>(
    x: Option<&'t Leaf>,
    y: Option<&'t Leaf>,
    base: u64,
    f: &mut impl FnMut(u64, DiffEntry<'t>, DiffEntry<'t>),
) {
    match (x, y) {
        (Some(x), Some(y)) => {
            let mut todo = candidates(x, y);
            while todo != 0 {
                let i = todo.trailing_zeros() as usize;
                todo &= todo - 1;
                let same_page = match (&x.entries[i].page, &y.entries[i].page) {
                    (None, None) => true,
                    (Some(p), Some(q)) => Arc::ptr_eq(p, q),
                    _ => false,
                };
                if x.meta[i] != y.meta[i] || !same_page || x.entries[i].aux != y.entries[i].aux {
                    f(base + i as u64, DiffEntry::of(x, i), DiffEntry::of(y, i));
                }
            }
        }
        (Some(x), None) => {
            for i in 0..FANOUT {
                if x.meta[i] != 0 {
                    f(base + i as u64, DiffEntry::of(x, i), DiffEntry::ABSENT);
                }
            }
        }
        (None, Some(y)) => {
            for i in 0..FANOUT {
                if y.meta[i] != 0 {
                    f(base + i as u64, DiffEntry::ABSENT, DiffEntry::of(y, i));
                }
            }
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const RW: u8 = meta::COMMITTED | 3;
    const RO: u8 = meta::COMMITTED | 1;

    fn page(byte: u8) -> Arc<FrozenPage> {
        FrozenPage::new(&[byte; PAGE])
    }

    fn collect(t: &PageTable) -> BTreeMap<u64, (u8, Option<u8>)> {
        let mut out = BTreeMap::new();
        t.for_each(|vpn, m, p| {
            out.insert(vpn, (m, p.map(|p| p.bytes()[0])));
        });
        out
    }

    #[test]
    fn fingerprints_separate_pages() {
        assert_eq!(fingerprint(&ZERO_PAGE), 0);
        let mut a = [0u8; PAGE];
        a[4095] = 1;
        let mut b = [0u8; PAGE];
        b[0] = 1;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), 0);
        let (pa, pb) = (FrozenPage::new(&a), FrozenPage::new(&a));
        assert!(pa.same_bytes(&pb));
        assert!(!pa.same_bytes(&FrozenPage::new(&b)));
        assert!(!pa.is_zero());
        assert!(FrozenPage::new(&ZERO_PAGE).is_zero());
        // Pages of one repeated byte (0xCC padding, 0xFF fill) have equal
        // lane sums: the lane rotations must still tell them apart.
        let uniform: Vec<u64> = (1..=255u8).map(|b| fingerprint(&[b; PAGE])).collect();
        assert!(uniform.iter().all(|&f| f != 0));
        let distinct: std::collections::HashSet<u64> = uniform.iter().copied().collect();
        assert_eq!(distinct.len(), 255);
    }

    /// FORMAT.md §4.1, written from the text: the file format stores this
    /// value, so the engine's fingerprint must never drift from it.
    #[test]
    fn fingerprint_follows_the_format_spec() {
        fn spec(b: &[u8]) -> u64 {
            let mut lane = [0u64; 8];
            for k in 0..64 {
                for (i, l) in lane.iter_mut().enumerate() {
                    let at = 64 * k + 8 * i;
                    *l = l.wrapping_add(u64::from_le_bytes(b[at..at + 8].try_into().unwrap()));
                }
            }
            let mut h = 0u64;
            for l in lane {
                h = ((h ^ l).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(31);
            }
            h
        }
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..50 {
            let mut page = [0u8; PAGE];
            for byte in page.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = if x.is_multiple_of(3) { x as u8 } else { 0 };
            }
            assert_eq!(fingerprint(&page), spec(&page));
        }
        let mut one = [0u8; PAGE];
        one[0] = 1;
        assert_eq!(fingerprint(&one), spec(&one));
        assert_eq!(fingerprint(&ZERO_PAGE), 0);
    }

    /// The bytes of record `r`: distinct, non-uniform pages.
    fn page_of(r: u32) -> PageBytes {
        let mut p = [0u8; PAGE];
        p[0] = r as u8 + 1;
        p[100] = 7;
        p
    }

    /// A source that hands out `page_of(record)`, or fails for record 0,
    /// counting its loads.
    struct CountingSource(std::sync::Mutex<Vec<Arc<FrozenPage>>>, AtomicU64);

    impl LazySource for CountingSource {
        fn load(&self, record: u32) {
            self.1.fetch_add(1, Ordering::Relaxed);
            if record != 0 {
                self.0.lock().unwrap()[record as usize].fill(&page_of(record));
            }
        }
    }

    #[test]
    fn lazy_pages_load_once_and_fail_without_lying() {
        let source = Arc::new(CountingSource(Default::default(), AtomicU64::new(0)));
        let dynamic: Arc<dyn LazySource> = source.clone();
        let pages: Vec<_> =
            (0..3).map(|r| FrozenPage::lazy(fingerprint(&page_of(r)), dynamic.clone(), r)).collect();
        *source.0.lock().unwrap() = pages.clone();
        assert!(!pages[2].is_loaded());
        assert_eq!(pages[2].try_bytes(), Some(&page_of(2)));
        assert_eq!(pages[2].bytes()[0], 3);
        assert_eq!(source.1.load(Ordering::Relaxed), 1, "loaded once");
        // Fingerprints first: different pages are told apart without a read.
        assert!(!pages[1].same_bytes(&pages[2]));
        assert_eq!(source.1.load(Ordering::Relaxed), 1);
        assert!(pages[1].same_bytes(&FrozenPage::new(&page_of(1))));
        // A page that cannot be read: None every time (each a new try), zeros
        // for the consumers that cannot fail, equal to nothing but itself.
        assert_eq!(pages[0].try_bytes(), None);
        assert_eq!(pages[0].try_bytes(), None);
        assert_eq!(pages[0].bytes(), &ZERO_PAGE);
        assert!(!pages[0].same_bytes(&FrozenPage::new(&ZERO_PAGE)));
        assert!(!pages[0].is_zero());
        assert!(pages[0].same_bytes(&pages[0]));
        assert!(source.1.load(Ordering::Relaxed) >= 4);
        source.0.lock().unwrap().clear(); // break the test's own cycle
    }

    #[test]
    fn empty_table_reads_absent() {
        let t = PageTable::default();
        assert_eq!(t.get(0).meta, 0);
        assert_eq!(t.get(VPN_LIMIT - 1).meta, 0);
        assert_eq!(t.run_end(0, 100), 100);
    }

    #[test]
    fn commit_counts_and_shares_uniform_nodes() {
        let mut t = PageTable::default();
        // A fully covered level-2 subtree: 262,144 pages (1 GiB).
        let delta = t.update(1 << 18, 2 << 18, RangeOp::Commit(3));
        assert_eq!(delta, 1 << 18);
        assert_eq!(t.get(1 << 18).meta, RW);
        assert_eq!(t.get((2 << 18) - 1).meta, RW);
        assert_eq!(t.get(2 << 18).meta, 0);
        assert_eq!(t.run_end(1 << 18, 3 << 18), 2 << 18);
        // Unaligned range.
        let delta = t.update(5, 200, RangeOp::Commit(1));
        assert_eq!(delta, 195);
        assert_eq!(t.get(4).meta, 0);
        assert_eq!(t.get(5).meta, RO);
        assert_eq!(t.get(199).meta, RO);
        assert_eq!(t.run_end(5, 1000), 200);
    }

    #[test]
    fn recommit_keeps_bytes_decommit_drops_them() {
        let mut t = PageTable::default();
        t.update(10, 20, RangeOp::Commit(3));
        t.set_page(12, Some(page(7)));
        assert_eq!(t.update(10, 20, RangeOp::Commit(1)), 0);
        assert_eq!(t.get(12).meta, RO);
        assert_eq!(t.get(12).bytes()[0], 7);
        assert_eq!(t.update(12, 13, RangeOp::Clear), -1);
        assert_eq!(t.get(12).meta, 0);
        t.update(12, 13, RangeOp::Commit(3));
        assert_eq!(t.get(12).bytes()[0], 0);
        // Clearing everything prunes the tree.
        assert_eq!(t.update(0, VPN_LIMIT, RangeOp::Clear), -10);
        assert!(t.root.is_none());
    }

    #[test]
    fn huge_uniform_ranges_change_as_a_whole() {
        let mut t = PageTable::default();
        // 256 GiB committed, then protected, queried and released.
        let (lo, hi) = (1 << 24, 65 << 24);
        assert_eq!(t.update(lo, hi, RangeOp::Commit(3)), 1 << 30);
        assert_eq!(t.update(lo, hi, RangeOp::Protect(1)), 0);
        assert_eq!(t.get(lo + 12345).meta, RO);
        assert_eq!(t.run_end(lo, VPN_LIMIT), hi);
        assert_eq!(t.find_first(lo, hi, |m| m & meta::COMMITTED == 0), None);
        // Carve a hole in the middle: only the touched path is split.
        assert_eq!(t.update(lo + 100, lo + 200, RangeOp::Clear), -100);
        assert_eq!(t.run_end(lo, hi), lo + 100);
        assert_eq!(t.run_end(lo + 100, hi), lo + 200);
        assert_eq!(t.run_end(lo + 200, hi), hi);
        assert_eq!(t.update(0, VPN_LIMIT, RangeOp::Clear), -((1 << 30) - 100));
        assert!(t.root.is_none());
    }

    #[test]
    fn protect_touches_committed_pages_only() {
        let mut t = PageTable::default();
        t.update(0, 4, RangeOp::Commit(3));
        assert_eq!(t.update(0, 8, RangeOp::Protect(1)), 0);
        assert_eq!(t.get(3).meta, RO);
        assert_eq!(t.get(5).meta, 0);
    }

    #[test]
    fn versions_are_independent() {
        let mut a = PageTable::default();
        a.update(0, 128, RangeOp::Commit(3));
        a.set_page(3, Some(page(1)));
        let b = a.clone();
        let mut same = Vec::new();
        a.diff(&b, |v, _, _| same.push(v));
        assert!(same.is_empty());
        a.set_page(3, Some(page(2)));
        a.set_page(100, Some(page(9)));
        assert_eq!(b.get(3).bytes()[0], 1);
        assert_eq!(a.get(3).bytes()[0], 2);
        let mut changed = Vec::new();
        a.diff(&b, |v, _, _| changed.push(v));
        assert_eq!(changed, vec![3, 100]);
        let mut changed = Vec::new();
        b.diff(&a, |v, _, _| changed.push(v));
        assert_eq!(changed, vec![3, 100]);
    }

    #[test]
    fn stored_counts_and_sharing_follow_reference_counts() {
        let mut a = PageTable::default();
        a.update(0, 300, RangeOp::Commit(3));
        for v in [1u64, 2, 100, 250] {
            a.set_page(v, Some(page(v as u8)));
        }
        assert_eq!(a.stored_pages(), 4);
        assert_eq!(a.sharing(), (4, 0));
        let b = a.clone();
        assert_eq!(a.sharing(), (0, 4), "a clone shares everything");
        a.set_page(1, Some(page(9)));
        assert_eq!(a.sharing(), (1, 3), "only the rewritten page is private");
        assert_eq!(b.sharing(), (1, 3), "b's old page 1 is private to b");
        drop(b);
        assert_eq!(a.sharing(), (4, 0));
        a.set_page(2, None);
        assert_eq!(a.stored_pages(), 3);
        a.update(0, 64, RangeOp::Clear);
        assert_eq!(a.stored_pages(), 2);
        a.update(90, 300, RangeOp::Commit(1));
        assert_eq!(a.stored_pages(), 2, "re-commit keeps bytes");
        a.update(200, 300, RangeOp::Clear);
        assert_eq!(a.stored_pages(), 1);
    }

    #[test]
    fn diff_sees_changes_on_both_sides_of_a_copied_leaf() {
        let mut a = PageTable::default();
        a.update(0, 64, RangeOp::Commit(3));
        a.set_page(1, Some(page(1)));
        let mut b = a.clone();
        b.set_page(2, Some(page(2))); // b's leaf is a copy of a's
        a.set_page(3, Some(page(3))); // a's leaf, unique again, changes in place
        a.update(10, 11, RangeOp::Protect(1));
        let mut changed = Vec::new();
        a.diff(&b, |v, _, _| changed.push(v));
        assert_eq!(changed, vec![2, 3, 10]);
        let mut changed = Vec::new();
        b.diff(&a, |v, _, _| changed.push(v));
        assert_eq!(changed, vec![2, 3, 10]);
        // A grandchild is not related to its grandparent: full comparison.
        let c = b.clone();
        let mut d = c.clone();
        d.set_page(5, Some(page(5)));
        let mut changed = Vec::new();
        a.diff(&d, |v, _, _| changed.push(v));
        assert_eq!(changed, vec![2, 3, 5, 10]);
    }

    #[test]
    fn diff_matches_brute_force_across_random_versions() {
        // Versions made by random changes, some while shared and some in place,
        // diffed pairwise against a page-by-page comparison.
        let mut seed = 0x0DDB_1A5E_5BAD_5EEDu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const SPAN: u64 = 9000;
        let mut live = PageTable::default();
        let mut versions: Vec<PageTable> = Vec::new();
        for step in 0..400u64 {
            let lo = next() % SPAN;
            match next() % 5 {
                0 => {
                    live.update(
                        lo,
                        (lo + next() % 200 + 1).min(SPAN),
                        RangeOp::Commit((next() % 2 + 1) as u8),
                    );
                }
                1 => {
                    live.update(lo, (lo + next() % 50 + 1).min(SPAN), RangeOp::Clear);
                }
                2 => {
                    live.update(lo, (lo + next() % 100 + 1).min(SPAN), RangeOp::Protect(1));
                }
                _ => {
                    if live.get(lo).meta & meta::COMMITTED != 0 {
                        live.set_page(lo, Some(page(step as u8)));
                    }
                }
            }
            if next() % 8 == 0 {
                versions.push(live.clone());
            }
            if next() % 16 == 0 && !versions.is_empty() {
                let i = (next() % versions.len() as u64) as usize;
                versions.swap_remove(i); // some nodes become unique again
            }
        }
        versions.push(live);
        for a in &versions {
            for b in &versions {
                let mut got = Vec::new();
                a.diff(b, |v, _, _| got.push(v));
                let expected: Vec<u64> = (0..SPAN)
                    .filter(|&v| {
                        let (x, y) = (a.get(v), b.get(v));
                        let same_page = match (x.page, y.page) {
                            (None, None) => true,
                            (Some(p), Some(q)) => Arc::ptr_eq(p, q),
                            _ => false,
                        };
                        x.meta != y.meta || !same_page
                    })
                    .collect();
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn diff_against_empty_lists_every_page() {
        let mut a = PageTable::default();
        a.update(60, 70, RangeOp::Commit(3));
        let mut changed = Vec::new();
        a.diff(&PageTable::default(), |v, _, _| changed.push(v));
        assert_eq!(changed, (60..70).collect::<Vec<_>>());
    }

    #[test]
    fn matches_a_btreemap_model() {
        // A small deterministic random walk against a plain map.
        let mut t = PageTable::default();
        let mut model: BTreeMap<u64, u8> = BTreeMap::new();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let lo = next() % 5000;
            let hi = lo + next() % 300 + 1;
            let prot = [1u8, 3, 4, 5, 7, 0][(next() % 6) as usize];
            let op = match next() % 6 {
                0 => RangeOp::Commit(prot),
                1 => RangeOp::Protect(prot),
                2 => RangeOp::Clear,
                3 => RangeOp::CommitReserved(prot),
                4 => RangeOp::View { meta: meta::VIEW | meta::COMMITTED | prot, key_offset: 1 << 35 },
                _ => RangeOp::Set(meta::COMMITTED | meta::MMIO | 3),
            };
            let mut expected_delta = 0i64;
            for v in lo..hi {
                let old = model.get(&v).copied().unwrap_or(0);
                let new = match op {
                    RangeOp::Commit(p) => meta::COMMITTED | p | (old & (meta::MMIO | meta::VIEW)),
                    RangeOp::Protect(p) if old != 0 => (old & !meta::PROT) | p,
                    RangeOp::Protect(_) => 0,
                    RangeOp::Clear => 0,
                    RangeOp::Set(m) => m,
                    RangeOp::CommitReserved(p) if old & meta::COMMITTED == 0 => meta::COMMITTED | p,
                    RangeOp::CommitReserved(_) => old,
                    RangeOp::View { meta: m, .. } => m,
                };
                expected_delta += i64::from(new != 0) - i64::from(old != 0);
                if new == 0 {
                    model.remove(&v);
                } else {
                    model.insert(v, new);
                }
            }
            assert_eq!(t.update(lo, hi, op), expected_delta);
        }
        let got: BTreeMap<u64, u8> = collect(&t).into_iter().map(|(k, (m, _))| (k, m)).collect();
        assert_eq!(got, model);
        for v in 0..5400 {
            assert_eq!(t.get(v).meta, model.get(&v).copied().unwrap_or(0), "vpn {v}");
            let expected_aux = if t.get(v).meta & meta::VIEW != 0 { 1 << 35 } else { 0 };
            assert_eq!(t.get(v).aux, expected_aux, "aux of vpn {v}");
            let end = t.run_end(v, 5400);
            let first = model.get(&v).copied().unwrap_or(0);
            let expect = (v..5400).find(|w| model.get(w).copied().unwrap_or(0) != first).unwrap_or(5400);
            assert_eq!(end, expect, "run_end from {v}");
        }
    }
}
