//! What one version of an address space holds ([`Version`]), its id, its
//! change log against its parent, and the lineage that counts live versions.
//! Below the queries and [`Snapshot`](crate::Snapshot), which wraps a
//! `Version` in an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::page_table::PageTable;
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
