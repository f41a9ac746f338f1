//! [`Snapshot`]: an immutable version of an address space, and [`MemoryDiff`].

use std::sync::Arc;

use crate::diff::MemoryDiff;
use crate::error::MemoryError;
use crate::page_table::PageTable;
use crate::query::{AddressSpace, MemoryStats, RegionInfo, ReservedRegion, SpaceView};
use crate::region_map::RegionMap;
use crate::version::Version;

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

impl AddressSpace for Snapshot {
    fn view(&self) -> SpaceView<'_> {
        Snapshot::view(self)
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
    /// (MMIO ranges call the region's handler; an unbound one, loaded from a
    /// file, is [`MemoryError::MmioUnbound`]). Time: O(pages touched · levels).
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
    /// with identical bytes is not reported. MMIO handlers are not compared
    /// (they are not memory): a region with handlers and the same region
    /// unbound (loaded from a file) are the same region, and an MMIO page
    /// never has changed bytes.
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
