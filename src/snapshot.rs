//! [`Snapshot`]: an immutable version of an address space, and [`MemoryDiff`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::diff::MemoryDiff;
use crate::error::MemoryError;
use crate::page_table::PageTable;
use crate::query::{MemoryStats, RegionInfo, ReservedRegion, SpaceView};
use crate::region_map::RegionMap;

/// Counts the versions alive in one lineage: the snapshots taken by a
/// manager, by the managers restored from them, and so on.
#[derive(Clone, Default)]
pub(crate) struct Lineage(Arc<AtomicU64>);

impl Lineage {
    /// True when both are the same lineage.
    pub(crate) fn same(&self, other: &Lineage) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Versions of this lineage alive now.
    pub(crate) fn alive(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A version's membership in its lineage: counted while it lives.
pub(crate) struct VersionToken(Lineage);

impl VersionToken {
    pub(crate) fn new(lineage: &Lineage) -> Self {
        lineage.0.fetch_add(1, Ordering::Relaxed);
        VersionToken(lineage.clone())
    }

    pub(crate) fn lineage(&self) -> &Lineage {
        &self.0
    }
}

impl Drop for VersionToken {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Source of version ids.
static NEXT_VERSION_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh version id.
fn next_version_id() -> u64 {
    NEXT_VERSION_ID.fetch_add(1, Ordering::Relaxed)
}

/// How a version differs from the version it was taken after, when only
/// page bytes changed in between (no layout change): the pages written,
/// ascending. A diff between the two reads this log instead of walking the
/// page tables.
pub(crate) struct Delta {
    /// Id of the parent version.
    pub(crate) parent: u64,
    /// The page numbers.
    pub(crate) pages: Vec<u64>,
}

/// Everything a version holds.
pub(crate) struct Version {
    /// Unique id of this version.
    pub(crate) id: u64,
    /// The change log against the parent, when there is one.
    pub(crate) delta: Option<Delta>,
    pub(crate) regions: RegionMap,
    pub(crate) pages: PageTable,
    pub(crate) committed_pages: u64,
    pub(crate) default_allocation_address: u64,
    pub(crate) layout_version: u64,
    pub(crate) token: VersionToken,
}

impl Version {
    /// A version with a fresh id, counted in `lineage`, with no change log.
    pub(crate) fn new(
        regions: RegionMap,
        pages: PageTable,
        committed_pages: u64,
        default_allocation_address: u64,
        layout_version: u64,
        lineage: &Lineage,
    ) -> Version {
        Version {
            id: next_version_id(),
            delta: None,
            regions,
            pages,
            committed_pages,
            default_allocation_address,
            layout_version,
            token: VersionToken::new(lineage),
        }
    }
}

/// An immutable version of an address space, made by
/// [`MemoryManager::snapshot`](crate::MemoryManager::snapshot).
///
/// `Clone + Send + Sync`; cloning is O(1). It shares every unchanged page and
/// page-table node with the manager and with other snapshots, so holding many
/// costs only what differs between them. It can be read from any thread while
/// the manager goes on.
#[derive(Clone)]
pub struct Snapshot {
    inner: Arc<Version>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("layout_version", &self.inner.layout_version)
            .field("allocations", &self.inner.regions.len())
            .field("committed_pages", &self.inner.committed_pages)
            .finish()
    }
}

impl Snapshot {
    pub(crate) fn new(version: Version) -> Self {
        Snapshot { inner: Arc::new(version) }
    }

    pub(crate) fn version(&self) -> &Version {
        &self.inner
    }

    /// The layout version of the manager when this snapshot was taken. O(1).
    pub fn layout_version(&self) -> u64 {
        self.inner.layout_version
    }

    /// The read-only view the queries below read (shared with the live
    /// manager's, [`MemoryManager::view`](crate::MemoryManager::view)). O(1).
    pub fn view(&self) -> SpaceView<'_> {
        SpaceView::frozen(&self.inner)
    }

    /// Reads bytes as the manager's host view did when the snapshot was taken
    /// (MMIO ranges call the region's handler). Time: O(pages touched · levels).
    pub fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.view().read_memory(address, buf)
    }

    /// `VirtualQuery` on this version. Time: O(log n + leaves in the run).
    pub fn region_info(&self, address: u64) -> RegionInfo {
        self.view().region_info(address)
    }

    /// The kind of the allocation containing `address` in this version,
    /// `Free` if none. Time: O(log n).
    pub fn region_kind(&self, address: u64) -> crate::RegionKind {
        self.view().region_kind(address)
    }

    /// The protection of the page containing `address` in this version
    /// (`GUARD` kept), or `None` when it is not committed. Time: O(1).
    pub fn page_protection(&self, address: u64) -> Option<crate::Protection> {
        self.view().page_protection(address)
    }

    /// Every allocation of this version, in address order.
    pub fn reserved_regions(&self) -> impl Iterator<Item = ReservedRegion> + '_ {
        self.view().reserved_regions()
    }

    /// The default allocation address of this version. O(1).
    pub fn default_allocation_address(&self) -> u64 {
        self.inner.default_allocation_address
    }

    /// Reserved and committed bytes of this version, the bytes of its pages
    /// that no other version holds (`private_memory`) and those it shares
    /// (`shared_memory`), and the versions alive in its lineage.
    /// Time: O(page-table nodes private to this version).
    pub fn compute_memory_stats(&self) -> MemoryStats {
        self.view().compute_memory_stats()
    }

    /// What changed from `self` (old) to `other` (new), for any two
    /// versions in either order: allocations made and released, runs of pages
    /// committed, decommitted or reprotected, and the pages whose bytes differ
    /// (including pages committed or decommitted in between). A page rewritten
    /// with identical bytes is not reported.
    ///
    /// Time: O(changed page-table paths + changed allocations): subtrees the two
    /// versions share by pointer are skipped, so the cost follows what changed,
    /// not the memory size; each candidate page is compared once (`memcmp`,
    /// stopping at the first difference).
    pub fn diff(&self, other: &Snapshot) -> MemoryDiff {
        let (a, b) = (&*self.inner, &*other.inner);
        // A parent and its child with only page writes between them: the
        // child's change log is the diff.
        if let Some(d) = b.delta.as_ref().filter(|d| d.parent == a.id) {
            return crate::diff::diff_from_log(&a.pages, &b.pages, &d.pages);
        }
        if let Some(d) = a.delta.as_ref().filter(|d| d.parent == b.id) {
            return crate::diff::diff_from_log(&a.pages, &b.pages, &d.pages);
        }
        crate::diff::diff_versions(&a.regions, &a.pages, &b.regions, &b.pages)
    }

    pub(crate) fn pages(&self) -> &PageTable {
        &self.inner.pages
    }

    pub(crate) fn regions(&self) -> &RegionMap {
        &self.inner.regions
    }
}
