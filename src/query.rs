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
use crate::region_map::{Allocation, Backing, RegionMap};
use crate::version::{Lineage, Version};
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

/// A read-only view of one version of an address space: the live
/// [`MemoryManager`](crate::MemoryManager)'s ([`MemoryManager::view`](crate::MemoryManager::view))
/// or a frozen [`Snapshot`](crate::Snapshot)'s ([`Snapshot::view`](crate::Snapshot::view)).
/// Every query the two share is written once, here; their inherent methods
/// of the same names call it. Borrowing a view is O(1).
#[derive(Clone, Copy)]
pub struct SpaceView<'a> {
    regions: &'a RegionMap,
    pages: Pages<'a>,
    committed_pages: u64,
    default_allocation_address: u64,
    layout_version: u64,
    lineage: &'a Lineage,
}

/// Where a view's pages come from.
#[derive(Clone, Copy)]
enum Pages<'a> {
    /// The live store: TLB, overlay and table.
    Live(&'a LivePages),
    /// A frozen version's table.
    Frozen(&'a PageTable),
}

impl<'a> Pages<'a> {
    fn table(self) -> &'a PageTable {
        match self {
            Pages::Live(live) => live.table(),
            Pages::Frozen(table) => table,
        }
    }
}

impl<'a> SpaceView<'a> {
    /// The live manager's view: its pages through the TLB and overlay.
    pub(crate) fn live(
        regions: &'a RegionMap,
        pages: &'a LivePages,
        counters: (u64, u64, u64),
        lineage: &'a Lineage,
    ) -> Self {
        let (committed_pages, default_allocation_address, layout_version) = counters;
        SpaceView {
            regions,
            pages: Pages::Live(pages),
            committed_pages,
            default_allocation_address,
            layout_version,
            lineage,
        }
    }

    /// A frozen version's view.
    pub(crate) fn frozen(version: &'a Version) -> Self {
        SpaceView {
            regions: &version.regions,
            pages: Pages::Frozen(&version.pages),
            committed_pages: version.committed_pages,
            default_allocation_address: version.default_allocation_address,
            layout_version: version.layout_version,
            lineage: version.token.lineage(),
        }
    }

    /// Host read (see [`MemoryManager::read_memory`](crate::MemoryManager::read_memory)):
    /// protection ignored, MMIO ranges call their handler (an unbound one,
    /// loaded from a file, is [`MemoryError::MmioUnbound`]). Time: O(pages
    /// touched · levels).
    pub fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        match self.pages {
            Pages::Live(live) => host_read(live, self.regions, address, buf),
            Pages::Frozen(table) => host_read(table, self.regions, address, buf),
        }
    }

    /// `VirtualQuery` at `address`: the run of pages with the same state,
    /// protection and allocation. Time: O(log n + leaves in the run).
    pub fn region_info(&self, address: u64) -> RegionInfo {
        region_info(self.regions, self.pages.table(), address)
    }

    /// The kind of the allocation containing `address`, `Free` if none.
    /// Time: O(log n).
    pub fn region_kind(&self, address: u64) -> RegionKind {
        self.regions.containing(address).map_or(RegionKind::Free, |a| a.kind)
    }

    /// The protection of the page containing `address` (`GUARD` kept), or
    /// `None` when it is not committed. Time: O(1) (live: a TLB hit or a
    /// table walk).
    #[inline]
    pub fn page_protection(&self, address: u64) -> Option<Protection> {
        if address >= USER_SPACE_END {
            return None;
        }
        let m = match self.pages {
            Pages::Live(live) => live.meta(vpn(address)),
            Pages::Frozen(table) => table.get(vpn(address)).meta,
        };
        (m & meta::COMMITTED != 0).then(|| meta::protection(m))
    }

    /// Every allocation, in address order. Time: O(1) per item.
    pub fn reserved_regions(self) -> impl Iterator<Item = ReservedRegion> + 'a {
        self.regions.iter().map(ReservedRegion::from)
    }

    /// Reserved and committed bytes, allocations, dirty pages (live only),
    /// the bytes private to this version (dirty pages included) and shared
    /// with others, and the versions alive in its lineage.
    /// Time: O(page-table nodes private to this version).
    pub fn compute_memory_stats(&self) -> MemoryStats {
        let (private, shared) = self.pages.table().sharing();
        let dirty = match self.pages {
            Pages::Live(live) => live.dirty_pages() as u64,
            Pages::Frozen(_) => 0,
        };
        MemoryStats {
            reserved_memory: self.regions.reserved_bytes(),
            committed_memory: self.committed_pages * PAGE_SIZE,
            allocation_count: self.regions.len() as u64,
            dirty_pages: dirty,
            private_memory: (private + dirty) * PAGE_SIZE,
            shared_memory: shared * PAGE_SIZE,
            live_versions: self.lineage.alive(),
        }
    }

    /// Where allocations without an address start searching. Time: O(1).
    pub fn default_allocation_address(&self) -> u64 {
        self.default_allocation_address
    }

    /// The layout version (a snapshot keeps the one it was taken at).
    /// Time: O(1).
    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }
}

/// What the live [`MemoryManager`](crate::MemoryManager) and a frozen
/// [`Snapshot`](crate::Snapshot) both answer, so code that inspects an
/// address space (a region table, a checker, a tool) serves either. Every
/// method is provided, from [`view`](AddressSpace::view).
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
    /// The read-only view every other method reads.
    fn view(&self) -> SpaceView<'_>;
    /// Host read (see [`MemoryManager::read_memory`](crate::MemoryManager::read_memory)).
    fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.view().read_memory(address, buf)
    }
    /// `VirtualQuery` at `address`.
    fn region_info(&self, address: u64) -> RegionInfo {
        self.view().region_info(address)
    }
    /// The kind of the allocation containing `address`, `Free` if none.
    fn region_kind(&self, address: u64) -> RegionKind {
        self.view().region_kind(address)
    }
    /// The protection of the page at `address`, `None` when not committed.
    fn page_protection(&self, address: u64) -> Option<Protection> {
        self.view().page_protection(address)
    }
    /// Every allocation, in address order.
    fn reserved_regions(&self) -> Box<dyn Iterator<Item = ReservedRegion> + '_> {
        Box::new(self.view().reserved_regions())
    }
    /// Memory accounting.
    fn compute_memory_stats(&self) -> MemoryStats {
        self.view().compute_memory_stats()
    }
    /// Where allocations without an address start searching.
    fn default_allocation_address(&self) -> u64 {
        self.view().default_allocation_address()
    }
    /// The layout version (a snapshot keeps the one it was taken at).
    fn layout_version(&self) -> u64 {
        self.view().layout_version()
    }
}

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
/// allows `access`; the first guard page stops it), and that every MMIO
/// page it allows has handlers (`MmioUnbound` otherwise). Time: O(pages),
/// plus O(log n) per MMIO region met.
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
    // MMIO pages below this address are known to have handlers.
    let mut bound_to = 0;
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
        // An access the page allows would call a handler: there must be one.
        if m & meta::MMIO != 0 && page >= bound_to {
            match regions.containing(page) {
                Some(a @ Allocation { backing: Backing::Mmio(Some(_)), .. }) => bound_to = a.end(),
                _ => return Err(Denied::Error(MemoryError::MmioUnbound { address: at })),
            }
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// The MMIO allocation containing `address` (a page whose state says MMIO,
/// in a range [`check_range`] allowed).
fn mmio_at(regions: &RegionMap, address: u64) -> (&Allocation, &crate::region_map::MmioHandlers) {
    // Invariant: a page carries the MMIO state bit only inside an MMIO
    // allocation, and `check_range` refused the range if that allocation
    // has no handlers.
    let a = regions.containing(address).expect("MMIO page inside an allocation");
    let Backing::Mmio(Some(handlers)) = &a.backing else {
        unreachable!("an MMIO page of a checked range outside a bound MMIO region")
    };
    (a, handlers)
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
