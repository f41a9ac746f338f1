//! [`MemoryDiff`]: what changed between two versions, found by walking their
//! page tables side by side and skipping every subtree they share by pointer.

use std::ops::Range;

use imbl::ordmap::DiffItem;

use crate::PAGE_SIZE;
use crate::page_table::{PageBytes, PageTable, ZERO_PAGE};
use crate::protection::{Protection, meta};
use crate::query::ReservedRegion;
use crate::region_map::RegionMap;
use crate::region_map::SECTION_KEY_BASE;

/// A change to the layout between two versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionChange {
    /// An allocation exists in the new version and not (with this base and
    /// length) in the old one.
    Allocated(ReservedRegion),
    /// An allocation of the old version is gone (or changed its length: a
    /// partial release shows as `Released` + `Allocated`).
    Released(ReservedRegion),
    /// Pages `[address, address + length)` became committed with `permissions`.
    Committed {
        /// First page.
        address: u64,
        /// Bytes (whole pages).
        length: u64,
        /// Protection of the new pages.
        permissions: Protection,
    },
    /// Pages `[address, address + length)` stopped being committed (decommitted
    /// or released).
    Decommitted {
        /// First page.
        address: u64,
        /// Bytes (whole pages).
        length: u64,
    },
    /// Committed pages `[address, address + length)` changed protection
    /// (a guard page firing shows here too).
    ProtectionChanged {
        /// First page.
        address: u64,
        /// Bytes (whole pages).
        length: u64,
        /// Protection in the old version.
        old: Protection,
        /// Protection in the new version.
        new: Protection,
    },
}

/// How a page's bytes changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageChangeKind {
    /// Committed in both versions, with different bytes.
    Modified,
    /// Committed only in the new version.
    Committed,
    /// Committed only in the old version.
    Decommitted,
}

/// One page whose bytes differ between two versions, with both versions'
/// bytes (borrowed from the [`MemoryDiff`]).
#[derive(Clone, Copy)]
pub struct PageChange<'a> {
    address: u64,
    kind: PageChangeKind,
    old: &'a PageBytes,
    new: &'a PageBytes,
}

impl std::fmt::Debug for PageChange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageChange")
            .field("address", &format_args!("{:#x}", self.address))
            .field("kind", &self.kind)
            .finish()
    }
}

impl<'a> PageChange<'a> {
    /// Base address of the page.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// How it changed.
    pub fn kind(&self) -> PageChangeKind {
        self.kind
    }

    /// The page's bytes in the old version (zeros where it was not committed).
    pub fn old_bytes(&self) -> &'a [u8] {
        self.old
    }

    /// The page's bytes in the new version (zeros where it is not committed).
    pub fn new_bytes(&self) -> &'a [u8] {
        self.new
    }

    /// The byte ranges (offsets inside the page) where old and new bytes
    /// differ, ascending and maximal. Time: O(page).
    pub fn byte_ranges(&self) -> Vec<Range<usize>> {
        changed_ranges(self.old, self.new)
    }
}

/// Maximal ranges where `a` and `b` differ. Equal 64-byte blocks are skipped
/// with one comparison each.
pub(crate) fn changed_ranges(a: &[u8], b: &[u8]) -> Vec<Range<usize>> {
    debug_assert_eq!(a.len(), b.len());
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut push = |i: usize| match ranges.last_mut() {
        Some(r) if r.end == i => r.end = i + 1,
        _ => ranges.push(i..i + 1),
    };
    for (block, (x, y)) in a.chunks(64).zip(b.chunks(64)).enumerate() {
        if x == y {
            continue;
        }
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            if p != q {
                push(block * 64 + i);
            }
        }
    }
    ranges
}

/// What differs between two versions: layout changes and page changes. See
/// [`Snapshot::diff`](crate::Snapshot::diff) and
/// [`MemoryManager::diff_from`](crate::MemoryManager::diff_from).
///
/// It holds both versions' page tables (two pointers), so the bytes of a
/// changed page are read only when asked for.
#[derive(Clone, Default)]
pub struct MemoryDiff {
    regions: Vec<RegionChange>,
    /// Runs of changed pages, ascending and disjoint: (first page's
    /// address, pages, kind). Committing all of user space is one run.
    pages: Vec<(u64, u64, PageChangeKind)>,
    /// Pages in `pages`.
    page_count: usize,
    old: PageTable,
    new: PageTable,
}

impl MemoryDiff {
    /// The diff of `old` and `new` with these changes (`pages`: runs,
    /// ascending and disjoint).
    fn new(
        regions: Vec<RegionChange>,
        pages: Vec<(u64, u64, PageChangeKind)>,
        old: &PageTable,
        new: &PageTable,
    ) -> MemoryDiff {
        let page_count = pages.iter().map(|&(_, n, _)| n as usize).sum();
        MemoryDiff { regions, pages, page_count, old: old.clone(), new: new.clone() }
    }
}

/// Appends a run of `count` pages from `address` to `runs` (ascending),
/// extending the last run when this one continues it.
fn push_run(runs: &mut Vec<(u64, u64, PageChangeKind)>, address: u64, count: u64, kind: PageChangeKind) {
    match runs.last_mut() {
        Some((a, n, k)) if *k == kind && *a + *n * PAGE_SIZE == address => *n += count,
        _ => runs.push((address, count, kind)),
    }
}

/// The pages of a list of runs, in order, each with its run's kind.
struct RunPages<'a> {
    runs: std::slice::Iter<'a, (u64, u64, PageChangeKind)>,
    /// The next page of the current run, the pages left in it, its kind.
    current: (u64, u64, PageChangeKind),
    /// Pages left in all.
    left: usize,
}

impl<'a> RunPages<'a> {
    fn new(diff: &'a MemoryDiff) -> Self {
        RunPages { runs: diff.pages.iter(), current: (0, 0, PageChangeKind::Modified), left: diff.page_count }
    }
}

impl Iterator for RunPages<'_> {
    type Item = (u64, PageChangeKind);

    fn next(&mut self) -> Option<(u64, PageChangeKind)> {
        while self.current.1 == 0 {
            self.current = *self.runs.next()?;
        }
        let (address, left, kind) = self.current;
        self.current = (address + PAGE_SIZE, left - 1, kind);
        self.left -= 1;
        Some((address, kind))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for RunPages<'_> {}

impl std::fmt::Debug for MemoryDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDiff").field("regions", &self.regions).field("pages", &self.page_count).finish()
    }
}

impl MemoryDiff {
    /// Base addresses of the pages whose bytes differ between the two
    /// versions (including pages committed or decommitted in between),
    /// ascending. Time: O(1) per item.
    pub fn changed_pages(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        RunPages::new(self).map(|(address, _)| address)
    }

    /// The changed pages as maximal runs of one kind: (first page's
    /// address, length in bytes, kind), ascending. A range committed or
    /// decommitted whole is one run whatever its size, so this stays small
    /// where [`changed_pages`](Self::changed_pages) would list billions of
    /// pages (all of user space committed). Time: O(1) per run.
    pub fn changed_page_runs(&self) -> impl ExactSizeIterator<Item = (u64, u64, PageChangeKind)> + '_ {
        self.pages.iter().map(|&(address, count, kind)| (address, count * PAGE_SIZE, kind))
    }

    /// The number of changed pages. Time: O(1).
    pub fn changed_page_count(&self) -> usize {
        self.page_count
    }

    /// The changed pages with their old and new bytes, ascending.
    /// Time: O(changed pages · levels) (each page is looked up in both
    /// versions): a diff with huge runs (see
    /// [`changed_page_runs`](Self::changed_page_runs)) is better read run by
    /// run, with [`read_memory`](crate::Snapshot::read_memory) on both sides.
    pub fn page_changes(&self) -> Vec<PageChange<'_>> {
        self.iter_page_changes().collect()
    }

    /// [`page_changes`](Self::page_changes) one at a time, for a caller
    /// that reads only some of them (the first hundred of a huge diff).
    /// Time: O(levels) per item.
    pub fn iter_page_changes(&self) -> impl ExactSizeIterator<Item = PageChange<'_>> + '_ {
        fn bytes(table: &PageTable, address: u64) -> &PageBytes {
            let (m, bytes) = table.resolve(address / PAGE_SIZE);
            if m & meta::COMMITTED != 0 && m & meta::MMIO == 0 { bytes } else { &ZERO_PAGE }
        }
        RunPages::new(self).map(|(address, kind)| PageChange {
            address,
            kind,
            old: bytes(&self.old, address),
            new: bytes(&self.new, address),
        })
    }

    /// Layout changes: allocations first (ascending base), then page-state runs
    /// (ascending address).
    pub fn region_changes(&self) -> &[RegionChange] {
        &self.regions
    }

    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.regions.is_empty()
    }
}

/// The diff between two versions with the same layout, from the change log
/// of pages written between them (ascending page numbers). Time: O(logged
/// pages); bytes are compared only when the pages differ by identity and
/// their fingerprints (computed once per page, then cached) match.
pub(crate) fn diff_from_log(ta: &PageTable, tb: &PageTable, log: &[u64]) -> MemoryDiff {
    let mut pages = Vec::new();
    let changed = log.iter().filter(|&&vpn| {
        let (x, y) = (ta.get(vpn), tb.get(vpn));
        match (x.page, y.page) {
            (None, None) => false,
            (Some(p), Some(q)) => !p.same_bytes(q),
            (Some(p), None) | (None, Some(p)) => !p.is_zero(),
        }
    });
    for &vpn in changed {
        push_run(&mut pages, vpn * PAGE_SIZE, 1, PageChangeKind::Modified);
    }
    MemoryDiff::new(Vec::new(), pages, ta, tb)
}

/// The diff from version `(ra, ta)` (old) to `(rb, tb)` (new).
pub(crate) fn diff_versions(ra: &RegionMap, ta: &PageTable, rb: &RegionMap, tb: &PageTable) -> MemoryDiff {
    let mut regions = Vec::new();
    for item in ra.map().diff(rb.map()) {
        match item {
            DiffItem::Add(_, a) => regions.push(RegionChange::Allocated(a.into())),
            DiffItem::Remove(_, a) => regions.push(RegionChange::Released(a.into())),
            DiffItem::Update { old: (_, o), new: (_, n) } => {
                let (o, n): (ReservedRegion, ReservedRegion) = (o.into(), n.into());
                if o != n {
                    regions.push(RegionChange::Released(o));
                    regions.push(RegionChange::Allocated(n));
                }
            }
        }
    }
    regions.sort_by_key(|c| match c {
        RegionChange::Allocated(r) | RegionChange::Released(r) => {
            (r.base, matches!(c, RegionChange::Allocated(_)))
        }
        _ => (0, false),
    });

    let mut pages = Vec::new();
    let mut run: Option<(u64, u64, u8, u8)> = None; // (first page, count, old meta, new meta)
    let mut runs = Vec::new();
    let mut changed_keys = Vec::new();
    ta.diff(tb, |vpn, count, x, y| {
        if vpn >= SECTION_KEY_BASE {
            // A section page: its change shows in the views (below). (A run
            // of section pages holds no bytes on either side: the same.)
            let both = x.meta & y.meta & meta::COMMITTED != 0;
            if both && !x.same_bytes(&y) {
                changed_keys.push(vpn);
            }
            return;
        }
        if x.meta != y.meta {
            match &mut run {
                Some((first, n, om, nm)) if *first + *n == vpn && *om == x.meta && *nm == y.meta => {
                    *n += count
                }
                _ => {
                    runs.extend(run.take());
                    run = Some((vpn, count, x.meta, y.meta));
                }
            }
        }
        let committed = |m: u8| m & meta::COMMITTED != 0 && m & meta::MMIO == 0;
        let kind = match (committed(x.meta), committed(y.meta)) {
            (true, true) => PageChangeKind::Modified,
            (false, true) => PageChangeKind::Committed,
            (true, false) => PageChangeKind::Decommitted,
            (false, false) => return,
        };

        let same_bytes = kind == PageChangeKind::Modified && x.same_bytes(&y);
        if !same_bytes {
            push_run(&mut pages, vpn * PAGE_SIZE, count, kind);
        }
    });
    runs.extend(run);
    if !changed_keys.is_empty() {
        // Changed section pages, as the pages of every view showing them in
        // either version (a view present in both is visited twice).
        let mut shown = Vec::new();
        for view in ra.iter().chain(rb.iter()) {
            let Some(v) = view.backing.view() else { continue };
            let from = changed_keys.partition_point(|&k| k < v.key);
            let to = changed_keys.partition_point(|&k| k < v.key + view.length / PAGE_SIZE);
            for &k in &changed_keys[from..to] {
                let page = view.base / PAGE_SIZE + (k - v.key);
                if ta.get(page).meta & tb.get(page).meta & meta::COMMITTED != 0 {
                    shown.push(page * PAGE_SIZE);
                }
            }
        }
        shown.sort_unstable();
        shown.dedup();
        pages = merge_runs(&pages, &shown);
    }
    for (first, count, om, nm) in runs {
        let (address, length) = (first * PAGE_SIZE, count * PAGE_SIZE);
        let committed = |m: u8| m & meta::COMMITTED != 0;
        regions.push(match (committed(om), committed(nm)) {
            (false, true) => RegionChange::Committed { address, length, permissions: meta::protection(nm) },
            (true, false) => RegionChange::Decommitted { address, length },
            (true, true) => RegionChange::ProtectionChanged {
                address,
                length,
                old: meta::protection(om),
                new: meta::protection(nm),
            },
            (false, false) => continue,
        });
    }
    MemoryDiff::new(regions, pages, ta, tb)
}

/// `runs` with the pages at `modified` (ascending addresses: view pages
/// whose section page changed) added as `Modified` pages, ascending. A page
/// already inside a run keeps the run's kind.
fn merge_runs(runs: &[(u64, u64, PageChangeKind)], modified: &[u64]) -> Vec<(u64, u64, PageChangeKind)> {
    let mut out = Vec::with_capacity(runs.len() + modified.len());
    let mut extra = modified.iter().peekable();
    for &(address, count, kind) in runs {
        while let Some(&a) = extra.next_if(|&&a| a < address) {
            push_run(&mut out, a, 1, PageChangeKind::Modified);
        }
        let end = address + count * PAGE_SIZE;
        while extra.next_if(|&&a| a < end).is_some() {}
        push_run(&mut out, address, count, kind);
    }
    for &a in extra {
        push_run(&mut out, a, 1, PageChangeKind::Modified);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryManager, PAGE_SIZE, RegionKind};

    #[test]
    fn ranges_are_maximal() {
        let a = [0u8; 300];
        let mut b = a;
        b[3] = 1;
        b[4] = 1;
        b[64] = 9;
        b[299] = 2;
        assert_eq!(changed_ranges(&a, &b), vec![3..5, 64..65, 299..300]);
        assert!(changed_ranges(&a, &a).is_empty());
    }

    #[test]
    fn a_child_diffs_against_its_parent_from_its_change_log() {
        let mut mm = MemoryManager::new();
        let page = |i: u64| 0x10000 + i * PAGE_SIZE;
        mm.allocate_memory_at(page(0), 16 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
            .unwrap();
        mm.write_memory(page(3), b"three").unwrap();
        let a = mm.snapshot();
        mm.write_memory(page(1), b"one").unwrap();
        mm.write_memory(page(3), b"three").unwrap(); // identical bytes
        let b = mm.snapshot();
        assert!(b.version().delta.as_ref().is_some_and(|d| d.parent == a.version().id));
        let changed = |d: MemoryDiff| d.changed_pages().collect::<Vec<_>>();
        assert_eq!(changed(a.diff(&b)), vec![page(1)]);
        assert_eq!(changed(b.diff(&a)), vec![page(1)]);
        assert_eq!(a.diff(&b).page_changes()[0].byte_ranges(), vec![0..3]);
        // A branch from `a`: its log is against `a`; siblings use the walk.
        mm.restore(&a);
        mm.write_memory(page(5), b"five").unwrap();
        let c = mm.snapshot();
        assert_eq!(changed(a.diff(&c)), vec![page(5)]);
        assert_eq!(changed(b.diff(&c)), vec![page(1), page(5)]);
        // A layout change in between: no log, and the region change shows.
        mm.protect_memory(page(7), PAGE_SIZE, Protection::READ).unwrap();
        mm.write_memory(page(6), b"six").unwrap();
        let d = mm.snapshot();
        assert!(d.version().delta.is_none());
        let diff = c.diff(&d);
        assert_eq!(changed(diff.clone()), vec![page(6)]);
        assert_eq!(diff.region_changes().len(), 1);
    }

    #[test]
    fn reports_layout_and_bytes() {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 0x4000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        mm.allocate_memory_at(0x20000, 0x2000, Protection::READ, false, RegionKind::Private).unwrap();
        mm.write_memory(0x10000, b"abcd").unwrap();
        let old = mm.snapshot();

        mm.write_memory(0x10001, b"XY").unwrap(); // modified
        mm.write_memory(0x11000, b"same").unwrap();
        mm.write_memory(0x11000, &[0; 4]).unwrap(); // rewritten to identical bytes
        mm.protect_memory(0x12000, 0x2000, Protection::READ).unwrap();
        mm.decommit_memory(0x13000, 0x1000).unwrap();
        mm.release_memory(0x20000, 0).unwrap();
        mm.allocate_memory_at(0x30000, 0x1000, Protection::READ_WRITE, false, RegionKind::Image).unwrap();
        let live = mm.diff_from(&old);
        let new = mm.snapshot();
        let diff = old.diff(&new);
        assert_eq!(live.changed_pages().collect::<Vec<_>>(), diff.changed_pages().collect::<Vec<_>>());

        assert_eq!(
            diff.changed_pages().collect::<Vec<_>>(),
            vec![0x10000, 0x13000, 0x20000, 0x21000, 0x30000]
        );
        let kinds: Vec<_> = diff.page_changes().iter().map(|p| p.kind()).collect();
        use PageChangeKind::*;
        assert_eq!(kinds, vec![Modified, Decommitted, Decommitted, Decommitted, Committed]);
        assert_eq!(diff.page_changes()[0].byte_ranges(), vec![1..3]);
        assert_eq!(&diff.page_changes()[0].new_bytes()[..4], b"aXYd");

        let r = diff.region_changes();
        assert!(r.contains(&RegionChange::Released(ReservedRegion {
            base: 0x20000,
            length: 0x2000,
            kind: RegionKind::Private,
            initial_permissions: Protection::READ,
            attributes: 0
        })));
        assert!(r.iter().any(|c| matches!(c, RegionChange::Allocated(a) if a.base == 0x30000)));
        assert!(r.contains(&RegionChange::ProtectionChanged {
            address: 0x12000,
            length: 0x1000,
            old: Protection::READ_WRITE,
            new: Protection::READ
        }));
        assert!(r.contains(&RegionChange::Decommitted { address: 0x13000, length: 0x1000 }));
        assert!(r.contains(&RegionChange::Decommitted { address: 0x20000, length: 0x2000 }));
        assert!(r.contains(&RegionChange::Committed {
            address: 0x30000,
            length: 0x1000,
            permissions: Protection::READ_WRITE
        }));

        // The reverse diff mirrors it.
        let back = new.diff(&old);
        assert_eq!(back.changed_pages().collect::<Vec<_>>(), diff.changed_pages().collect::<Vec<_>>());
        assert_eq!(back.page_changes()[4].kind(), Decommitted);
        assert!(old.diff(&old).is_empty());
    }
}
