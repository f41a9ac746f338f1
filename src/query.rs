//! What the live manager and a frozen [`Snapshot`](crate::Snapshot) answer the
//! same way: region queries, range checks and copies, statistics.
//!
//! Both sides are a [`RegionMap`] plus a page source: the live store (TLB +
//! overlay + table) or a bare frozen [`PageTable`].

use crate::address::{PAGE_MASK, page_down, vpn};
use crate::error::MemoryError;
use crate::live::{LivePages, Resolved};
use crate::page_table::{PAGE, PageTable};
use crate::protection::{Access, Protection, RegionKind, meta};
use crate::region_map::{Allocation, RegionMap};
use crate::{PAGE_SIZE, USER_SPACE_END};

/// What `VirtualQuery` says about the pages at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionInfo {
    /// `page_down(queried address)`.
    pub start: u64,
    /// From `start` to the first page that differs in state, protection or
    /// allocation (free memory: to the next allocation or `USER_SPACE_END`;
    /// 0 for addresses at or past `USER_SPACE_END`).
    pub length: u64,
    /// Base of the allocation, 0 when free.
    pub allocation_base: u64,
    /// Length of the allocation, 0 when free.
    pub allocation_length: u64,
    /// True for every page inside an allocation (reserved or committed).
    pub is_reserved: bool,
    /// True for committed pages.
    pub is_committed: bool,
    /// Current protection (`GUARD` kept); empty when not committed.
    pub permissions: Protection,
    /// Protection given when the allocation was created; empty when free.
    pub initial_permissions: Protection,
    /// The allocation's kind; `Free` when free.
    pub kind: RegionKind,
    /// The allocation's opaque attributes (0 when free); see
    /// [`MemoryManager::set_allocation_attributes`](crate::MemoryManager::set_allocation_attributes).
    pub attributes: u32,
}

/// One allocation, as [`MemoryManager::reserved_regions`](crate::MemoryManager::reserved_regions) lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservedRegion {
    /// Base address.
    pub base: u64,
    /// Length in bytes (a multiple of the page size).
    pub length: u64,
    /// What the allocation is.
    pub kind: RegionKind,
    /// Protection given at creation.
    pub initial_permissions: Protection,
    /// Opaque attributes (see [`MemoryManager::set_allocation_attributes`](crate::MemoryManager::set_allocation_attributes)).
    pub attributes: u32,
}

impl From<&Allocation> for ReservedRegion {
    fn from(a: &Allocation) -> Self {
        ReservedRegion {
            base: a.base,
            length: a.length,
            kind: a.kind,
            initial_permissions: a.initial,
            attributes: a.attributes,
        }
    }
}

/// Memory accounting of one version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Bytes inside allocations (reserved or committed, MMIO included).
    pub reserved_memory: u64,
    /// Bytes in committed pages (MMIO included).
    pub committed_memory: u64,
    /// Number of allocations.
    pub allocation_count: u64,
    /// Live manager only: pages written since the last `snapshot()` or
    /// `restore()` (the overlay). 0 for a snapshot.
    pub dirty_pages: u64,
    /// Bytes of stored pages only this version holds (for the live manager,
    /// the dirty pages too): what dropping it would free. Zero pages cost
    /// nothing and are not counted.
    pub private_memory: u64,
    /// Bytes of stored pages this version shares with other versions.
    pub shared_memory: u64,
    /// Versions (snapshots) alive in this version's lineage: the snapshots of
    /// this manager and of the managers restored from them.
    pub live_versions: u64,
}

/// What the live [`MemoryManager`](crate::MemoryManager) and a frozen
/// [`Snapshot`](crate::Snapshot) both answer, so code that inspects an
/// address space (a region table, a checker, a tool) serves either.
///
/// ```
/// use vmsnap::{AddressSpace, MemoryManager, Protection, RegionKind};
///
/// fn committed_regions(space: &impl AddressSpace) -> usize {
///     space.reserved_regions().filter(|r| space.region_info(r.base).is_committed).count()
/// }
///
/// let mut mm = MemoryManager::new();
/// mm.allocate_memory(0x1000, Protection::READ_WRITE, false, 0, RegionKind::Private)?;
/// let snapshot = mm.snapshot();
/// assert_eq!(committed_regions(&mm), committed_regions(&snapshot));
/// # Ok::<(), vmsnap::MemoryError>(())
/// ```
pub trait AddressSpace {
    /// Host read (see [`MemoryManager::read_memory`](crate::MemoryManager::read_memory)).
    fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// `VirtualQuery` at `address`.
    fn region_info(&self, address: u64) -> RegionInfo;
    /// The kind of the allocation containing `address`, `Free` if none.
    fn region_kind(&self, address: u64) -> RegionKind;
    /// The protection of the page at `address`, `None` when not committed.
    fn page_protection(&self, address: u64) -> Option<Protection>;
    /// Every allocation, in address order.
    fn reserved_regions(&self) -> Box<dyn Iterator<Item = ReservedRegion> + '_>;
    /// Memory accounting.
    fn compute_memory_stats(&self) -> MemoryStats;
    /// Where allocations without an address start searching.
    fn default_allocation_address(&self) -> u64;
    /// The layout version (a snapshot keeps the one it was taken at).
    fn layout_version(&self) -> u64;
}

/// Implements [`AddressSpace`] by calling the type's inherent methods of the
/// same names.
macro_rules! address_space {
    ($t:ty) => {
        impl AddressSpace for $t {
            fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
                <$t>::read_memory(self, address, buf)
            }
            fn region_info(&self, address: u64) -> RegionInfo {
                <$t>::region_info(self, address)
            }
            fn region_kind(&self, address: u64) -> RegionKind {
                <$t>::region_kind(self, address)
            }
            fn page_protection(&self, address: u64) -> Option<Protection> {
                <$t>::page_protection(self, address)
            }
            fn reserved_regions(&self) -> Box<dyn Iterator<Item = ReservedRegion> + '_> {
                Box::new(<$t>::reserved_regions(self))
            }
            fn compute_memory_stats(&self) -> MemoryStats {
                <$t>::compute_memory_stats(self)
            }
            fn default_allocation_address(&self) -> u64 {
                <$t>::default_allocation_address(self)
            }
            fn layout_version(&self) -> u64 {
                <$t>::layout_version(self)
            }
        }
    };
}

address_space!(crate::MemoryManager);
address_space!(crate::Snapshot);

/// A page source: where the bytes and the state of a page come from.
pub(crate) trait PageSource {
    fn resolve(&self, vpn: u64) -> Resolved<'_>;
    /// True when page `vpn` is committed but its bytes cannot be read (a
    /// lazily loaded page of a damaged file): `resolve` reports it as not
    /// committed.
    fn unavailable(&self, vpn: u64) -> bool;
}

impl PageSource for PageTable {
    #[inline]
    fn resolve(&self, vpn: u64) -> Resolved<'_> {
        let (meta, bytes) = PageTable::resolve(self, vpn);
        Resolved { meta, bytes }
    }

    fn unavailable(&self, vpn: u64) -> bool {
        PageTable::unavailable(self, vpn)
    }
}

impl PageSource for LivePages {
    #[inline]
    fn resolve(&self, vpn: u64) -> Resolved<'_> {
        LivePages::resolve(self, vpn)
    }

    fn unavailable(&self, vpn: u64) -> bool {
        self.table().get(vpn).meta & meta::COMMITTED != 0 && self.resolve(vpn).meta & meta::COMMITTED == 0
    }
}

/// `VirtualQuery` at `address`. Time: O(log allocations + leaves in the run).
pub(crate) fn region_info(regions: &RegionMap, table: &PageTable, address: u64) -> RegionInfo {
    let start = page_down(address);
    let free = |length| RegionInfo {
        start,
        length,
        allocation_base: 0,
        allocation_length: 0,
        is_reserved: false,
        is_committed: false,
        permissions: Protection::empty(),
        initial_permissions: Protection::empty(),
        kind: RegionKind::Free,
        attributes: 0,
    };
    if address >= USER_SPACE_END {
        return free(0);
    }
    let Some(a) = regions.containing(address) else {
        let next = regions.next_after(address).map_or(USER_SPACE_END, |a| a.base);
        return free(next - start);
    };
    let m = table.get(vpn(start)).meta;
    // Where a page's bytes live (its own, or its section's: `VIEW`) is not
    // part of what VirtualQuery reports, so it does not end a region.
    let visible = m & !meta::VIEW;
    let run_end =
        table.find_first(vpn(start), vpn(a.end()), |x| x & !meta::VIEW != visible).unwrap_or(vpn(a.end()));
    let committed = m & meta::COMMITTED != 0;
    RegionInfo {
        start,
        length: run_end * PAGE_SIZE - start,
        allocation_base: a.base,
        allocation_length: a.length,
        is_reserved: true,
        is_committed: committed,
        permissions: if committed { meta::protection(m) } else { Protection::empty() },
        initial_permissions: a.initial,
        kind: a.kind,
        attributes: a.attributes,
    }
}

/// Why an access was refused, before it is turned into a [`MemoryError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A guard page (guest only); `address` is the first byte of the access in it.
    Guard { address: u64 },
    /// Anything else.
    Error(MemoryError),
}

/// Checks that `[address, address + len)` can be accessed: by the host
/// (`access == None`: every page committed) or by the guest (protection
/// allows `access`; the first guard page stops it). Time: O(pages).
pub(crate) fn check_range(
    src: &impl PageSource,
    regions: &RegionMap,
    address: u64,
    len: usize,
    access: Option<Access>,
) -> Result<(), Denied> {
    let fail = |at: u64| -> Denied {
        Denied::Error(match access {
            Some(access) => MemoryError::AccessViolation { address: at, access },
            None if at < USER_SPACE_END && regions.containing(at).is_some() => {
                MemoryError::NotCommitted { address: at }
            }
            None => MemoryError::NotAllocated { address: at },
        })
    };
    if len == 0 {
        return Ok(());
    }
    let Some(end) = address.checked_add(len as u64) else {
        return Err(Denied::Error(MemoryError::RangeOverflow { address, size: len as u64 }));
    };
    let mut page = page_down(address);
    while page < end {
        let at = page.max(address);
        if page >= USER_SPACE_END {
            return Err(fail(at));
        }
        let m = src.resolve(vpn(page)).meta;
        if m & meta::COMMITTED == 0 {
            if src.unavailable(vpn(page)) {
                return Err(Denied::Error(MemoryError::PageUnavailable { address: at }));
            }
            return Err(fail(at));
        }
        if let Some(access) = access {
            if !meta::protection(m).allows(access) {
                return Err(fail(at));
            }
            if m & meta::GUARD != 0 {
                return Err(Denied::Guard { address: at });
            }
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// The MMIO allocation containing `address` (a page whose state says MMIO).
fn mmio_at(regions: &RegionMap, address: u64) -> (&Allocation, &crate::region_map::MmioHandlers) {
    // Invariant: a page carries the MMIO state bit only inside an MMIO
    // allocation, and every MMIO allocation has handlers.
    let a = regions.containing(address).expect("MMIO page inside an allocation");
    (a, a.mmio.as_deref().expect("MMIO allocation has handlers"))
}

/// Copies `[address, address + buf.len())` into `buf`; the range was checked.
/// One MMIO handler call per contiguous run inside an MMIO region.
pub(crate) fn copy_out(src: &impl PageSource, regions: &RegionMap, address: u64, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let at = address + done as u64;
        let r = src.resolve(vpn(at));
        let n = if r.meta & meta::MMIO != 0 {
            let (a, h) = mmio_at(regions, at);
            let n = (buf.len() - done).min((a.end() - at) as usize);
            (h.read)(at - a.base, &mut buf[done..done + n]);
            n
        } else {
            let off = (at & PAGE_MASK) as usize;
            let n = (buf.len() - done).min(PAGE - off);
            buf[done..done + n].copy_from_slice(&r.bytes[off..off + n]);
            n
        };
        done += n;
    }
}

/// Copies `data` to `address` in the live store; the range was checked.
pub(crate) fn copy_in(live: &mut LivePages, regions: &RegionMap, address: u64, data: &[u8]) {
    let mut done = 0;
    while done < data.len() {
        let at = address + done as u64;
        let n = if live.resolve(vpn(at)).meta & meta::MMIO != 0 {
            let (a, h) = mmio_at(regions, at);
            let n = (data.len() - done).min((a.end() - at) as usize);
            (h.write)(at - a.base, &data[done..done + n]);
            n
        } else {
            let off = (at & PAGE_MASK) as usize;
            let n = (data.len() - done).min(PAGE - off);
            live.page_mut(vpn(at))[off..off + n].copy_from_slice(&data[done..done + n]);
            n
        };
        done += n;
    }
}

/// Host read through any page source: check, then copy.
pub(crate) fn host_read(
    src: &impl PageSource,
    regions: &RegionMap,
    address: u64,
    buf: &mut [u8],
) -> Result<(), MemoryError> {
    match check_range(src, regions, address, buf.len(), None) {
        Ok(()) => {
            copy_out(src, regions, address, buf);
            Ok(())
        }
        Err(Denied::Error(e)) => Err(e),
        // Host checks never report guard pages.
        Err(Denied::Guard { address }) => Err(MemoryError::NotCommitted { address }),
    }
}
