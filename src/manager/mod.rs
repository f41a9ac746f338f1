//! [`MemoryManager`]: the live address space.
//!
//! ```text
//!   manager/
//!   ├── mod.rs       the struct, its fields (private to this module tree)
//!   │                and every invariant: the layout version, the committed
//!   │                page count, the version base, the section-id counter
//!   ├── access.rs    host and guest reads and writes (TLB fast paths)
//!   ├── layout.rs    allocate, commit, decommit, release, protect, MMIO,
//!   │                and the queries (through the shared `SpaceView`)
//!   ├── sections.rs  sections and their views
//!   └── state.rs     serialize_memory_state / deserialize_memory_state
//! ```
//!
//! The children change the fields only through the owners here:
//! `bump_layout` (the layout version), `apply` / `apply_pages` (page states
//! and the committed count), `snapshot` / `restore` (the version base),
//! `add_section` and `adopt_regions` (the section-id counter).
//! Queries shared with [`Snapshot`] are written once, on
//! [`SpaceView`](crate::SpaceView).

use crate::address::vpn;
use crate::error::MemoryError;
use crate::live::LivePages;
use crate::page_table::RangeOp;
use crate::protection::{Protection, meta};
use crate::region_map::{RegionMap, SECTION_KEY_BASE, Section};
use crate::snapshot::Snapshot;
use crate::version::{Lineage, Version};
use crate::{DEFAULT_ALLOCATION_ADDRESS_64BIT, PAGE_SIZE};

/// An address space with Windows virtual-memory semantics whose pages live in
/// persistent copy-on-write structures. See the [crate docs](crate) for the
/// model (allocations, regions, pages, versions) and the costs.
///
/// `MemoryManager` is `Send` (not `Sync`: its software TLB is a cache filled
/// by `&self` reads). Freeze it into a [`Snapshot`] to share a version with
/// other threads.
pub struct MemoryManager {
    regions: RegionMap,
    pages: LivePages,
    committed_pages: u64,
    default_allocation_address: u64,
    layout_version: u64,
    lineage: Lineage,
    /// The version the live state was last snapshotted or restored to, and
    /// the layout version then: while it is unchanged, only page bytes
    /// changed since, and the next snapshot records a change log.
    base: Option<(u64, u64)>,
    /// The highest section id this manager has handed out: ids never repeat,
    /// even across restores, so a stale handle never names a newer section.
    section_ids: u64,
    /// The most bytes that may be committed (`None`: no limit). A setting of
    /// the manager, not of its versions.
    commit_limit: Option<u64>,
    /// This manager's process-unique tag: the [`SectionId`](crate::SectionId)s
    /// it hands out carry it, and it refuses ids with another tag.
    tag: u64,
}

/// The commit limit of a new [`MemoryManager`]: 64 GiB, on every machine, so
/// that an emulation commits (and fails to commit) the same way everywhere.
/// See [`MemoryManager::set_commit_limit`].
pub const DEFAULT_COMMIT_LIMIT: u64 = 64 << 30;

/// Source of manager tags (0 is never handed out).
static NEXT_MANAGER_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Default for MemoryManager {
    fn default() -> Self {
        MemoryManager::new()
    }
}

impl std::fmt::Debug for MemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryManager")
            .field("allocations", &self.regions.len())
            .field("committed_pages", &self.committed_pages)
            .field("dirty_pages", &self.pages.dirty_pages())
            .field("layout_version", &self.layout_version)
            .finish()
    }
}

mod access;
mod layout;
mod sections;
mod state;

pub(crate) use sections::within;
pub use sections::{SectionId, SectionInfo};

impl crate::AddressSpace for MemoryManager {
    fn view(&self) -> crate::SpaceView<'_> {
        MemoryManager::view(self)
    }
}

impl MemoryManager {
    /// An empty address space; the default allocation address is
    /// [`DEFAULT_ALLOCATION_ADDRESS_64BIT`]. Time: O(1).
    pub fn new() -> Self {
        MemoryManager {
            regions: RegionMap::default(),
            pages: LivePages::default(),
            committed_pages: 0,
            default_allocation_address: DEFAULT_ALLOCATION_ADDRESS_64BIT,
            layout_version: 0,
            lineage: Lineage::default(),
            base: None,
            section_ids: 0,
            commit_limit: Some(DEFAULT_COMMIT_LIMIT),
            tag: NEXT_MANAGER_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Counts a layout change: the one place the layout version moves
    /// (restore and deserialization move it past a restored value).
    fn bump_layout(&mut self) {
        self.layout_version += 1;
    }

    /// Makes `regions` (a restored or deserialized state's) the layout. The
    /// section-id counter moves past every id in it, so a stale id never
    /// names a newer section — the one place the counter follows a state it
    /// did not make. Time: O(1) (O(log n) sections when they differ).
    fn adopt_regions(&mut self, regions: &RegionMap) {
        self.regions.assign(regions);
        self.section_ids = self.section_ids.max(self.regions.last_section_id());
    }

    /// Takes a whole new layout (deserialization, unmap-all; the caller
    /// replaced the pages): its regions (`adopt_regions`),
    /// its committed count — the one place the count is set rather than
    /// kept by `apply` — and a layout version past both the current one and
    /// `at_least`. The next snapshot records no change log. Time: O(1).
    fn adopt_layout(&mut self, regions: &RegionMap, committed_pages: u64, at_least: u64) {
        self.adopt_regions(regions);
        self.committed_pages = committed_pages;
        self.layout_version = at_least.max(self.layout_version + 1);
        self.base = None;
    }

    /// Adds a section of `pages` pages under a fresh id (one more than any
    /// this manager handed out or adopted), or `None` when the section page
    /// space is exhausted (the counter unchanged). Time: O(log n).
    fn add_section(&mut self, pages: u64, max_protection: Protection) -> Option<(u64, Section)> {
        let id = self.section_ids + 1;
        let section = self.regions.add_section(id, pages, max_protection)?;
        self.section_ids = id;
        Some((id, section))
    }

    /// The read-only view the queries read (shared with
    /// [`Snapshot::view`]). O(1).
    #[inline]
    pub fn view(&self) -> crate::SpaceView<'_> {
        crate::SpaceView::live(
            &self.regions,
            &self.pages,
            (self.committed_pages, self.default_allocation_address, self.layout_version),
            &self.lineage,
        )
    }

    /// Applies a page-state change to `[lo, hi)` (byte addresses, page aligned).
    fn apply(&mut self, lo: u64, hi: u64, op: RangeOp) {
        self.apply_pages(vpn(lo), vpn(hi), op);
    }

    /// Applies a page-state change to the user pages `[lo, hi)` (page
    /// numbers) and counts the pages it commits or decommits.
    fn apply_pages(&mut self, lo: u64, hi: u64, op: RangeOp) {
        let delta = self.pages.update(lo, hi, op);
        // Invariant: the count is the number of committed user pages, so no
        // change takes it below zero.
        self.committed_pages =
            self.committed_pages.checked_add_signed(delta).expect("committed count stays >= 0");
    }

    /// Checks that committing `at_most` more pages, of which `exact(self)`
    /// are newly committed (computed only when `at_most` would not fit),
    /// stays within the commit limit. O(1) when it fits; otherwise the cost
    /// of `exact`.
    fn charge(&self, at_most: u64, exact: impl FnOnce(&Self) -> u64) -> Result<(), MemoryError> {
        let Some(limit) = self.commit_limit else { return Ok(()) };
        let fits =
            |pages: u64| self.committed_pages.checked_add(pages).is_some_and(|n| n <= limit / PAGE_SIZE);
        if fits(at_most) {
            return Ok(());
        }
        let pages = exact(self);
        if fits(pages) {
            return Ok(());
        }
        Err(MemoryError::CommitLimitExceeded {
            requested: pages.saturating_mul(PAGE_SIZE),
            committed: self.committed_pages * PAGE_SIZE,
            limit,
        })
    }

    /// The number of committed pages among the page numbers `[lo, hi)`.
    /// Time: O(leaves scanned), one pair of searches per committed run.
    fn committed_in(&self, lo: u64, hi: u64) -> u64 {
        let table = self.pages.table();
        let mut count = 0;
        let mut at = lo;
        while let Some(start) = table.find_first(at, hi, |m| m & meta::COMMITTED != 0) {
            let end = table.find_first(start, hi, |m| m & meta::COMMITTED == 0).unwrap_or(hi);
            count += end - start;
            at = end;
        }
        count
    }

    /// Where [`allocate_memory`](Self::allocate_memory) starts searching when
    /// given `start == 0`. Time: O(1).
    pub fn default_allocation_address(&self) -> u64 {
        self.default_allocation_address
    }

    /// Sets the default allocation address (not a layout change). Time: O(1).
    pub fn set_default_allocation_address(&mut self, address: u64) {
        self.default_allocation_address = address;
    }

    /// The commit limit: the most bytes this manager lets be committed
    /// (what [`compute_memory_stats`](Self::compute_memory_stats) reports as
    /// `committed_memory`), or `None` when there is none. A new manager's is
    /// [`DEFAULT_COMMIT_LIMIT`]. Time: O(1).
    pub fn commit_limit(&self) -> Option<u64> {
        self.commit_limit
    }

    /// Sets the commit limit, as Windows' commit limit (RAM + page files)
    /// bounds the commit charge; `None` removes it. An operation that would
    /// take `committed_memory` past the limit fails with
    /// [`MemoryError::CommitLimitExceeded`] (`STATUS_COMMITMENT_LIMIT` from
    /// the [`nt`](crate::nt) face) and changes nothing.
    ///
    /// What counts is `committed_memory`: committed pages of user space —
    /// private and image pages, MMIO regions (they report committed), and
    /// the committed pages of each section view (a section's pages count in
    /// every view that shows them, when the view is mapped or the pages are
    /// committed through a view, not when the section is created). The
    /// operations that commit are checked: `allocate_memory_at` /
    /// `allocate_memory` without `reserve_only`, `commit_memory` (pages
    /// already committed are not counted again), `allocate_mmio`,
    /// `map_view_of_section`, and the `nt` and `image` calls made of them.
    ///
    /// The limit is a setting of the manager, like a machine's memory, not
    /// part of its state: snapshots, `restore`, serialization and snapshot
    /// files neither store nor change it. A restored or deserialized state,
    /// or a lower limit set now, may leave more committed than the limit:
    /// nothing is decommitted, and commits fail until enough is released.
    /// Time: O(1).
    ///
    /// ```
    /// # use vmsnap::{MemoryError, MemoryManager, Protection, RegionKind, PAGE_SIZE};
    /// let mut mm = MemoryManager::new();
    /// mm.set_commit_limit(Some(4 * PAGE_SIZE));
    /// let base = mm.allocate_memory(0x10000, Protection::READ_WRITE, true, 0, RegionKind::Private)?;
    /// mm.commit_memory(base, 3 * PAGE_SIZE, Protection::READ_WRITE)?;
    /// assert_eq!(
    ///     mm.commit_memory(base, 5 * PAGE_SIZE, Protection::READ_WRITE),
    ///     Err(MemoryError::CommitLimitExceeded { requested: 2 * PAGE_SIZE, committed: 3 * PAGE_SIZE, limit: 4 * PAGE_SIZE })
    /// );
    /// mm.set_commit_limit(None); // unlimited
    /// mm.commit_memory(base, 5 * PAGE_SIZE, Protection::READ_WRITE)?;
    /// # Ok::<(), MemoryError>(())
    /// ```
    pub fn set_commit_limit(&mut self, limit: Option<u64>) {
        self.commit_limit = limit;
    }

    /// A number that grows on every successful layout change (allocate,
    /// commit, decommit, release, protect, MMIO and its binding, unmap-all, restore,
    /// deserialize, a guard page firing) and never repeats for this manager.
    /// Time: O(1).
    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }

    /// Freezes the live state into an immutable [`Snapshot`]. The pages written
    /// since the previous snapshot or restore move from the overlay into the
    /// persistent page table. Does not change the layout version.
    ///
    /// Time: O(pages written since the previous snapshot or restore),
    /// independent of memory size and of history length.
    pub fn snapshot(&mut self) -> Snapshot {
        let (pages, log) = self.pages.freeze();
        let mut version = Version::new(
            self.regions.clone(),
            pages,
            self.committed_pages,
            self.default_allocation_address,
            self.layout_version,
            &self.lineage,
        );
        if let Some((parent, at)) = self.base
            && at == self.layout_version
            && log.iter().all(|&p| p < SECTION_KEY_BASE)
        {
            version.delta = Some(crate::version::Delta { parent, pages: log });
        }
        self.base = Some((version.id, self.layout_version));
        Snapshot::new(version)
    }

    /// What changed from `base` (old) to the live state (new): the same
    /// report as [`Snapshot::diff`]. The manager is not changed (the pages
    /// written since the last snapshot or restore are copied into a temporary
    /// frozen view). Time: O(dirty pages · levels + changed page-table paths),
    /// independent of memory size.
    pub fn diff_from(&self, base: &Snapshot) -> crate::MemoryDiff {
        let live = self.pages.frozen_view();
        crate::diff::diff_versions(base.regions(), base.pages(), &self.regions, &live)
    }

    /// Returns to `snapshot` (any earlier one, from any branch): bytes,
    /// allocations, protections and guard bits, MMIO regions (with the
    /// handlers they have in the snapshot: none, unbound, for one loaded from
    /// a file), default allocation address. The layout version moves forward
    /// (it never repeats). Time: O(pages written since the last snapshot or
    /// restore), independent of memory size and of history length.
    pub fn restore(&mut self, snapshot: &Snapshot) {
        let v = snapshot.version();
        self.pages.reset_to(&v.pages);
        self.adopt_regions(&v.regions);
        self.committed_pages = v.committed_pages;
        self.default_allocation_address = v.default_allocation_address;
        if !self.lineage.same(v.token.lineage()) {
            self.lineage = v.token.lineage().clone();
        }
        self.bump_layout();
        self.base = Some((v.id, self.layout_version));
    }
}
