//! [`MemoryManager`]: the live address space.

use std::sync::Arc;

use crate::address::{PAGE_MASK, checked_end, page_down, page_range, page_up, vpn};
use crate::error::MemoryError;
use crate::live::LivePages;
use crate::page_table::{PAGE, PageTable, RangeOp};
use crate::protection::{Access, Protection, RegionKind, meta};
use crate::query::{self, Denied, MemoryStats, RegionInfo, ReservedRegion};
use crate::region_map::{Allocation, MmioHandlers, RegionMap, SECTION_KEY_BASE};
use crate::snapshot::{Lineage, Snapshot, Version, VersionToken};
use crate::{
    ALLOCATION_GRANULARITY, DEFAULT_ALLOCATION_ADDRESS_64BIT, MIN_ALLOCATION_ADDRESS, PAGE_SIZE,
    USER_SPACE_END,
};

/// An address space with Windows virtual-memory semantics whose pages live in
/// persistent copy-on-write structures. See the [crate docs](crate) for the
/// model (allocations, regions, pages, versions) and the costs.
///
/// `MemoryManager` is `Send` (not `Sync`: its software TLB is a cache filled
/// by `&self` reads). Freeze it into a [`Snapshot`] to share a version with
/// other threads.
pub struct MemoryManager {
    pub(crate) regions: RegionMap,
    pub(crate) pages: LivePages,
    pub(crate) committed_pages: u64,
    pub(crate) default_allocation_address: u64,
    pub(crate) layout_version: u64,
    pub(crate) lineage: Lineage,
    /// The version the live state was last snapshotted or restored to, and
    /// the layout version then: while it is unchanged, only page bytes
    /// changed since, and the next snapshot records a change log.
    pub(crate) base: Option<(u64, u64)>,
    /// The highest section id this manager has handed out: ids never repeat,
    /// even across restores, so a stale handle never names a newer section.
    pub(crate) section_ids: u64,
    /// The most bytes that may be committed (`None`: no limit). A setting of
    /// the manager, not of its versions.
    pub(crate) commit_limit: Option<u64>,
    /// This manager's process-unique tag: the [`SectionId`](crate::SectionId)s
    /// it hands out carry it, and it refuses ids with another tag.
    pub(crate) tag: u64,
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

fn check_protection(protection: Protection) -> Result<u8, MemoryError> {
    if protection.is_valid() {
        Ok(protection.bits())
    } else {
        Err(MemoryError::InvalidProtection(protection))
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

    fn bump_layout(&mut self) {
        self.layout_version += 1;
    }

    // ----------------------------------------------------------------- host view

    /// Reads `buf.len()` bytes at `address`, ignoring protection. Fails with
    /// `NotAllocated` / `NotCommitted` (at the first byte that cannot be read)
    /// when any byte is free or only reserved; MMIO ranges call their read
    /// handler. A zero-length read succeeds. Never fires or clears a guard page.
    ///
    /// Time: O(pages touched); a read inside one recently used page is a TLB
    /// hit (a compare and a copy).
    #[inline]
    pub fn read_memory(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = (address & PAGE_MASK) as usize;
        if off + buf.len() <= PAGE && address < USER_SPACE_END {
            let r = self.pages.resolve(vpn(address));
            if r.meta & (meta::COMMITTED | meta::MMIO) == meta::COMMITTED {
                buf.copy_from_slice(&r.bytes[off..off + buf.len()]);
                return Ok(());
            }
        }
        self.read_slow(address, buf)
    }

    #[cold]
    fn read_slow(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        query::host_read(&self.pages, &self.regions, address, buf)
    }

    /// [`read_memory`](Self::read_memory) that reports only success.
    #[inline]
    pub fn try_read_memory(&self, address: u64, buf: &mut [u8]) -> bool {
        self.read_memory(address, buf).is_ok()
    }

    /// Writes `data` at `address`, ignoring protection. Fails, writing
    /// nothing, when any byte is free or only reserved. MMIO ranges call their
    /// write handler.
    ///
    /// Time: O(pages touched). The first write to a page since the last
    /// `snapshot()`/`restore()` copies it (4 KiB) into the live overlay; later
    /// writes to it are a TLB hit and a copy.
    #[inline]
    pub fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), MemoryError> {
        let off = (address & PAGE_MASK) as usize;
        if off + data.len() <= PAGE
            && address < USER_SPACE_END
            && let Some(page) =
                self.pages.writable(vpn(address), meta::COMMITTED | meta::MMIO, meta::COMMITTED)
        {
            page[off..off + data.len()].copy_from_slice(data);
            return Ok(());
        }
        self.write_slow(address, data, None)
    }

    /// [`write_memory`](Self::write_memory) that reports only success.
    #[inline]
    pub fn try_write_memory(&mut self, address: u64, data: &[u8]) -> bool {
        self.write_memory(address, data).is_ok()
    }

    #[cold]
    fn write_slow(&mut self, address: u64, data: &[u8], access: Option<Access>) -> Result<(), MemoryError> {
        self.check(address, data.len(), access)?;
        if access.is_some() {
            self.resolve_write_copy(address, data.len());
        }
        query::copy_in(&mut self.pages, &self.regions, address, data);
        Ok(())
    }

    /// Checks a range; a guest access that meets a guard page fires it.
    fn check(&mut self, address: u64, len: usize, access: Option<Access>) -> Result<(), MemoryError> {
        match query::check_range(&self.pages, &self.regions, address, len, access) {
            Ok(()) => Ok(()),
            Err(Denied::Error(e)) => Err(e),
            Err(Denied::Guard { address: at }) => {
                let page = vpn(at);
                let m = self.pages.table().get(page).meta;
                self.pages.set_meta(page, m & !meta::GUARD);
                self.bump_layout();
                // Invariant: guard pages are only reported for guest accesses.
                let access = access.expect("guard pages only stop guest accesses");
                Err(MemoryError::GuardPageViolation { address: at, access })
            }
        }
    }

    /// A guest write was allowed: its write-copy pages become writable (the
    /// private copy is the page itself: every page of this manager is already
    /// private to it). A layout change when any page changed.
    fn resolve_write_copy(&mut self, address: u64, len: usize) {
        if len == 0 {
            return;
        }
        let mut changed = false;
        let mut page = page_down(address);
        let end = address + len as u64; // checked by `check`
        while page < end {
            let m = self.pages.meta(vpn(page));
            if m & meta::WRITE_COPY != 0 {
                let new = (m & !meta::WRITE_COPY) | Protection::WRITE.bits();
                if m & meta::VIEW != 0 {
                    // The view page gets its own copy of the section page.
                    let bytes = *self.pages.resolve(vpn(page)).bytes;
                    self.pages.update(vpn(page), vpn(page) + 1, RangeOp::Set(new & !meta::VIEW));
                    self.pages.page_mut(vpn(page)).copy_from_slice(&bytes);
                } else {
                    self.pages.set_meta(vpn(page), new);
                }
                changed = true;
            }
            page += PAGE_SIZE;
        }
        if changed {
            self.bump_layout();
        }
    }

    // ---------------------------------------------------------------- guest view

    /// A guest data read: every page must be committed and readable. The
    /// first guard page met fails with `GuardPageViolation` and loses its guard
    /// bit (the read is not performed; a retry goes through). A refused access
    /// reads nothing.
    ///
    /// Pages are checked in address order; on each page the protection is
    /// checked before the guard bit, as NT's fault handler does, so an access
    /// the page's protection forbids is an `AccessViolation` and leaves the
    /// guard armed. Time: as [`read_memory`](Self::read_memory).
    #[inline]
    pub fn guest_read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.guest_load(address, buf, Access::Read)
    }

    /// A guest instruction fetch: like [`guest_read`](Self::guest_read) but
    /// needs `EXECUTE`.
    #[inline]
    pub fn guest_fetch(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.guest_load(address, buf, Access::Execute)
    }

    #[inline]
    fn guest_load(&mut self, address: u64, buf: &mut [u8], access: Access) -> Result<(), MemoryError> {
        let off = (address & PAGE_MASK) as usize;
        if off + buf.len() <= PAGE && address < USER_SPACE_END {
            let r = self.pages.resolve(vpn(address));
            let need = meta::COMMITTED | access.required().bits();
            if r.meta & (need | meta::MMIO | meta::GUARD) == need {
                buf.copy_from_slice(&r.bytes[off..off + buf.len()]);
                return Ok(());
            }
        }
        self.guest_load_slow(address, buf, access)
    }

    #[cold]
    fn guest_load_slow(&mut self, address: u64, buf: &mut [u8], access: Access) -> Result<(), MemoryError> {
        self.check(address, buf.len(), Some(access))?;
        query::copy_out(&self.pages, &self.regions, address, buf);
        Ok(())
    }

    /// A guest data write: every page must be committed and writable; guard
    /// pages fire as for [`guest_read`](Self::guest_read). A refused write
    /// changes nothing. Time: as [`write_memory`](Self::write_memory).
    #[inline]
    ///
    /// ```
    /// # use vmsnap::{Access, MemoryError, MemoryManager, Protection, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// let stack = mm.allocate_memory(0x10000, Protection::READ_WRITE | Protection::GUARD, false, 0, RegionKind::Private)?;
    /// // The first touch of a guard page fails once and disarms it...
    /// assert_eq!(mm.guest_write(stack, &[1]), Err(MemoryError::GuardPageViolation { address: stack, access: Access::Write }));
    /// assert_eq!(mm.region_info(stack).permissions, Protection::READ_WRITE);
    /// // ...and the retry goes through.
    /// mm.guest_write(stack, &[1])?;
    /// # Ok::<(), MemoryError>(())
    /// ```
    pub fn guest_write(&mut self, address: u64, data: &[u8]) -> Result<(), MemoryError> {
        let off = (address & PAGE_MASK) as usize;
        if off + data.len() <= PAGE && address < USER_SPACE_END {
            let need = meta::COMMITTED | Protection::WRITE.bits();
            if let Some(page) = self.pages.writable(vpn(address), need | meta::MMIO | meta::GUARD, need) {
                page[off..off + data.len()].copy_from_slice(data);
                return Ok(());
            }
        }
        self.write_slow(address, data, Some(Access::Write))
    }

    // ---------------------------------------------------------------- allocation

    /// Reserves (and, unless `reserve_only`, commits with `protection`) a new
    /// allocation at `address`, which must be 64 KiB aligned and at or above
    /// [`MIN_ALLOCATION_ADDRESS`]; `size` is rounded up to whole pages. Fails
    /// with `ConflictingAddresses` if any byte is already allocated.
    ///
    /// Time: O(log allocations + levels); committed pages are zero pages
    /// shared in uniform page-table nodes, so committing 1 GiB allocates a few
    /// nodes, not 1 GiB.
    pub fn allocate_memory_at(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
        reserve_only: bool,
        kind: RegionKind,
    ) -> Result<(), MemoryError> {
        if matches!(kind, RegionKind::Free | RegionKind::Mmio) {
            return Err(MemoryError::InvalidKind(kind));
        }
        let bits = check_protection(protection)?;
        if !address.is_multiple_of(ALLOCATION_GRANULARITY) {
            return Err(MemoryError::Misaligned { address, alignment: ALLOCATION_GRANULARITY });
        }
        let end = self.new_range(address, size)?;
        if !reserve_only {
            // The range is free: every page of it is newly committed.
            let pages = (end - address) / PAGE_SIZE;
            self.charge(pages, |_| pages)?;
        }
        self.regions.insert(Allocation {
            base: address,
            length: end - address,
            initial: protection,
            kind,
            attributes: 0,
            mmio: None,
            view: None,
        });
        if !reserve_only {
            self.apply(address, end, RangeOp::Commit(bits));
        }
        self.bump_layout();
        Ok(())
    }

    /// Checks a new allocation's range: in user space, rounded to pages, free.
    fn new_range(&self, address: u64, size: u64) -> Result<u64, MemoryError> {
        if address < MIN_ALLOCATION_ADDRESS {
            return Err(MemoryError::OutsideUserSpace { address, size });
        }
        let end = checked_end(address, size)?;
        // `end <= USER_SPACE_END` (page aligned), so rounding cannot overflow.
        let end = page_up(end).ok_or(MemoryError::RangeOverflow { address, size })?;
        if let Some(existing) = self.regions.overlapping(address, end) {
            return Err(MemoryError::ConflictingAddresses { address, size, existing: existing.base });
        }
        Ok(end)
    }

    /// Applies a page-state change to `[lo, hi)` (byte addresses, page aligned).
    fn apply(&mut self, lo: u64, hi: u64, op: RangeOp) {
        self.apply_pages(vpn(lo), vpn(hi), op);
    }

    /// Applies a page-state change to the user pages `[lo, hi)` (page
    /// numbers) and counts the pages it commits or decommits.
    pub(crate) fn apply_pages(&mut self, lo: u64, hi: u64, op: RangeOp) {
        let delta = self.pages.update(lo, hi, op);
        // Invariant: the count is the number of committed user pages, so no
        // change takes it below zero.
        self.committed_pages =
            self.committed_pages.checked_add_signed(delta).expect("committed count stays >= 0");
    }

    /// Allocates at the first free 64 KiB-aligned address at or above `start`
    /// (0 means the default allocation address) and returns it. Otherwise as
    /// [`allocate_memory_at`](Self::allocate_memory_at).
    /// Time: O(k log n) for the k allocations skipped.
    pub fn allocate_memory(
        &mut self,
        size: u64,
        protection: Protection,
        reserve_only: bool,
        start: u64,
        kind: RegionKind,
    ) -> Result<u64, MemoryError> {
        if matches!(kind, RegionKind::Free | RegionKind::Mmio) {
            return Err(MemoryError::InvalidKind(kind));
        }
        check_protection(protection)?;
        if size == 0 {
            return Err(MemoryError::ZeroSize { address: start });
        }
        let base =
            self.find_free_allocation_base(size, start).ok_or(MemoryError::NoFreeSpace { size, start })?;
        self.allocate_memory_at(base, size, protection, reserve_only, kind)?;
        Ok(base)
    }

    /// The allocation containing the rounded range `[lo, hi)`, if it is inside
    /// one, else `NotInOneAllocation`.
    fn enclosing(&self, lo: u64, hi: u64) -> Result<&Allocation, MemoryError> {
        match self.regions.containing(lo) {
            Some(a) if hi <= a.end() => Ok(a),
            _ => Err(MemoryError::NotInOneAllocation { address: lo, size: hi - lo }),
        }
    }

    /// Commits the pages touched by `[address, address + size)`, which must lie
    /// inside one allocation. Pages already committed keep their bytes and take
    /// `protection`; the others become zero pages. Not allowed on MMIO.
    /// Time: O(log n + touched leaves).
    pub fn commit_memory(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), MemoryError> {
        let bits = check_protection(protection)?;
        let (lo, hi) = page_range(address, size)?;
        let a = self.enclosing(lo, hi)?;
        if a.mmio.is_some() {
            return Err(MemoryError::MmioRegion { base: a.base });
        }
        if a.view.is_some() {
            let view = a.clone();
            self.commit_view(&view, lo, hi, protection)?;
            self.bump_layout();
            return Ok(());
        }
        let (first, last) = (vpn(lo), vpn(hi));
        self.charge(last - first, |mm| last - first - mm.committed_in(first, last))?;
        self.apply(lo, hi, RangeOp::Commit(bits));
        self.bump_layout();
        Ok(())
    }

    /// Decommits the pages touched by `[address, address + size)`, inside one
    /// allocation: they become reserved and lose their bytes (a later commit
    /// reads zeros). Reserved pages in the range are fine. MMIO cannot be
    /// decommitted. Time: O(log n + touched leaves + dirty pages in range).
    pub fn decommit_memory(&mut self, address: u64, size: u64) -> Result<(), MemoryError> {
        let (lo, hi) = page_range(address, size)?;
        let a = self.enclosing(lo, hi)?;
        if a.mmio.is_some() {
            return Err(MemoryError::MmioRegion { base: a.base });
        }
        if a.view.is_some() {
            return Err(MemoryError::SectionView { base: a.base });
        }
        self.apply(lo, hi, RangeOp::Clear);
        self.bump_layout();
        Ok(())
    }

    /// Releases memory. `size == 0`: the whole allocation whose base is
    /// `page_down(address)`. Otherwise the pages touched by the range, inside
    /// one allocation; what remains of the allocation below and above the range
    /// become independent allocations (the upper one based at the range end), as
    /// `NtFreeVirtualMemory` does. An MMIO region can only be released whole.
    /// Time: O(log n + touched leaves).
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, Protection, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// mm.allocate_memory_at(0x10000, 0x4000, Protection::READ_WRITE, false, RegionKind::Private)?;
    /// mm.release_memory(0x11000, 0x1000)?;                 // punch a hole
    /// assert_eq!(mm.region_info(0x10000).allocation_length, 0x1000);
    /// assert_eq!(mm.region_info(0x12000).allocation_base, 0x12000); // its own allocation now
    /// mm.release_memory(0x12000, 0)?;                      // released whole, at its new base
    /// assert!(!mm.overlaps_reserved_region(0x11000, 0x3000));
    /// # Ok::<(), vmsnap::MemoryError>(())
    /// ```
    pub fn release_memory(&mut self, address: u64, size: u64) -> Result<(), MemoryError> {
        if size == 0 {
            let base = page_down(address);
            let a = self.regions.containing(base).ok_or(MemoryError::NotAllocated { address })?;
            if a.view.is_some() {
                return Err(MemoryError::SectionView { base: a.base });
            }
            if a.base != base {
                return Err(MemoryError::NotAllocationBase { address, base: a.base });
            }
            let end = a.end();
            self.regions.remove(base);
            self.apply(base, end, RangeOp::Clear);
            self.bump_layout();
            return Ok(());
        }
        let (lo, hi) = page_range(address, size)?;
        let a = self.regions.containing(lo).ok_or(MemoryError::NotAllocated { address })?;
        if a.view.is_some() {
            return Err(MemoryError::SectionView { base: a.base });
        }
        if hi > a.end() {
            return Err(MemoryError::NotInOneAllocation { address: lo, size: hi - lo });
        }
        if a.mmio.is_some() && (lo, hi) != (a.base, a.end()) {
            return Err(MemoryError::MmioRegion { base: a.base });
        }
        let a = a.clone();
        self.regions.remove(a.base);
        if lo > a.base {
            self.regions.insert(Allocation { length: lo - a.base, ..a.clone() });
        }
        if hi < a.end() {
            self.regions.insert(Allocation { base: hi, length: a.end() - hi, ..a.clone() });
        }
        self.apply(lo, hi, RangeOp::Clear);
        self.bump_layout();
        Ok(())
    }

    /// Releases everything. The default allocation address is kept.
    /// Time: O(dirty pages); the old pages are freed as the last version
    /// holding them goes.
    pub fn unmap_all_memory(&mut self) {
        self.regions = RegionMap::default();
        self.pages.reset_to(&PageTable::default());
        self.committed_pages = 0;
        self.bump_layout();
    }

    /// Sets the protection of the pages touched by `[address, address + size)`
    /// and returns the previous protection of the first page (`GUARD` kept).
    /// Every page must be committed (`NotCommitted`) and inside one allocation
    /// (`NotInOneAllocation`). Bytes are kept. Not allowed on MMIO.
    /// Time: O(log n + touched leaves).
    pub fn protect_memory(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<Protection, MemoryError> {
        let bits = check_protection(protection)?;
        let (lo, hi) = page_range(address, size)?;
        let a = self.enclosing(lo, hi)?;
        if a.mmio.is_some() {
            return Err(MemoryError::MmioRegion { base: a.base });
        }
        if a.view.is_some() && !crate::section::within(protection, a.initial) {
            return Err(MemoryError::ProtectionExceedsMaximum { requested: protection, maximum: a.initial });
        }
        let table = self.pages.table();
        if let Some(page) = table.find_first(vpn(lo), vpn(hi), |m| m & meta::COMMITTED == 0) {
            return Err(MemoryError::NotCommitted { address: page * PAGE_SIZE });
        }
        let old = meta::protection(table.get(vpn(lo)).meta);
        self.apply(lo, hi, RangeOp::Protect(bits));
        self.bump_layout();
        Ok(old)
    }

    /// Maps an MMIO region: `address` page aligned (not necessarily 64 KiB:
    /// MMIO is the emulator's own device memory, not a Windows allocation),
    /// `size` rounded up to pages, no byte of it allocated yet. The region reports committed,
    /// `READ | WRITE`, kind `Mmio`. Every access to it calls a handler once per
    /// contiguous run, with the offset from the region's base. Snapshots keep
    /// the handlers, not bytes. Time: O(log n + levels).
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// // A KUSER_SHARED_DATA-like page whose bytes are computed on each read.
    /// mm.allocate_mmio(0x7FFE_0000, 0x1000, |offset, buf| buf.fill(offset as u8), |_, _| {})?;
    /// let mut buf = [0u8; 2];
    /// mm.read_memory(0x7FFE_0014, &mut buf)?;
    /// assert_eq!(buf, [0x14, 0x14]); // one call, offset 0x14 from the region base
    /// assert_eq!(mm.region_kind(0x7FFE_0000), RegionKind::Mmio);
    /// # Ok::<(), vmsnap::MemoryError>(())
    /// ```
    pub fn allocate_mmio(
        &mut self,
        address: u64,
        size: u64,
        read: impl Fn(u64, &mut [u8]) + Send + Sync + 'static,
        write: impl Fn(u64, &[u8]) + Send + Sync + 'static,
    ) -> Result<(), MemoryError> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::Misaligned { address, alignment: PAGE_SIZE });
        }
        let end = self.new_range(address, size)?;
        let pages = (end - address) / PAGE_SIZE;
        self.charge(pages, |_| pages)?;
        self.regions.insert(Allocation {
            base: address,
            length: end - address,
            initial: Protection::READ_WRITE,
            kind: RegionKind::Mmio,
            attributes: 0,
            mmio: Some(Arc::new(MmioHandlers { read: Box::new(read), write: Box::new(write) })),
            view: None,
        });
        self.apply(address, end, RangeOp::Set(meta::COMMITTED | meta::MMIO | Protection::READ_WRITE.bits()));
        self.bump_layout();
        Ok(())
    }

    // ------------------------------------------------------------------- queries

    /// `VirtualQuery`: the run of pages at `address` with the same state,
    /// protection and allocation. Time: O(log n + leaves in the run).
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, Protection, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// mm.allocate_memory_at(0x10000, 0x10000, Protection::READ_WRITE, true, RegionKind::Private)?;
    /// mm.commit_memory(0x10000, 0x2000, Protection::READ)?;
    /// let r = mm.region_info(0x10123);
    /// assert_eq!((r.start, r.length, r.is_committed, r.permissions), (0x10000, 0x2000, true, Protection::READ));
    /// let r = mm.region_info(0x12000);
    /// assert_eq!((r.length, r.is_committed, r.is_reserved), (0xE000, false, true));
    /// # Ok::<(), vmsnap::MemoryError>(())
    /// ```
    pub fn region_info(&self, address: u64) -> RegionInfo {
        query::region_info(&self.regions, self.pages.table(), address)
    }

    /// The protection of the page containing `address` (`GUARD` kept), or
    /// `None` when it is not committed. The cheapest query: a TLB hit, or a
    /// page-table walk. Time: O(1).
    #[inline]
    pub fn page_protection(&self, address: u64) -> Option<Protection> {
        if address >= USER_SPACE_END {
            return None;
        }
        let m = self.pages.meta(vpn(address));
        (m & meta::COMMITTED != 0).then(|| meta::protection(m))
    }

    /// First fit: the lowest 64 KiB-aligned address at or above `start` (0:
    /// the default allocation address) where `size` bytes fit below
    /// [`USER_SPACE_END`]. `None` for size 0 or a start at or past the end.
    /// Time: O(k log n) for the k allocations skipped.
    pub fn find_free_allocation_base(&self, size: u64, start: u64) -> Option<u64> {
        let start = if start == 0 { self.default_allocation_address } else { start };
        self.regions.find_free(size, start)
    }

    /// First fit inside `[lowest, highest_end)`: the lowest 64 KiB-aligned
    /// base (with `top_down`, the highest) where `size` bytes fit without
    /// overlapping an allocation; `highest_end` is clamped to
    /// [`USER_SPACE_END`]. What `MEM_TOP_DOWN` and `zero_bits` need.
    /// Time: O(k log n) for the k allocations skipped.
    pub fn find_free_allocation_base_in(
        &self,
        size: u64,
        lowest: u64,
        highest_end: u64,
        top_down: bool,
    ) -> Option<u64> {
        self.regions.find_free_in(size, lowest, highest_end, top_down)
    }

    /// Stores `attributes` on the allocation containing `address`. The
    /// engine does not interpret them: they are kept, split with the
    /// allocation, reported in [`RegionInfo`] and [`ReservedRegion`], captured
    /// by snapshots and serialization. The `nt` face keeps `PAGE_NOCACHE` /
    /// `PAGE_WRITECOMBINE` there. A layout change. Time: O(log n).
    pub fn set_allocation_attributes(&mut self, address: u64, attributes: u32) -> Result<(), MemoryError> {
        let a = self.regions.containing(address).ok_or(MemoryError::NotAllocated { address })?;
        let updated = crate::region_map::Allocation { attributes, ..a.clone() };
        self.regions.remove(updated.base);
        self.regions.insert(updated);
        self.bump_layout();
        Ok(())
    }

    /// True when any byte of `[address, address + size)` is allocated (the end
    /// saturates at `u64::MAX`). Time: O(log n).
    pub fn overlaps_reserved_region(&self, address: u64, size: u64) -> bool {
        size != 0 && self.regions.overlapping(address, address.saturating_add(size)).is_some()
    }

    /// The kind of the allocation containing `address`, `Free` if none.
    /// Time: O(log n).
    pub fn region_kind(&self, address: u64) -> RegionKind {
        self.regions.containing(address).map_or(RegionKind::Free, |a| a.kind)
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

    /// Checks that committing `at_most` more pages, of which `exact(self)`
    /// are newly committed (computed only when `at_most` would not fit),
    /// stays within the commit limit. O(1) when it fits; otherwise the cost
    /// of `exact`.
    pub(crate) fn charge(&self, at_most: u64, exact: impl FnOnce(&Self) -> u64) -> Result<(), MemoryError> {
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
    pub(crate) fn committed_in(&self, lo: u64, hi: u64) -> u64 {
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

    /// A number that grows on every successful layout change (allocate,
    /// commit, decommit, release, protect, MMIO, unmap-all, restore,
    /// deserialize, a guard page firing) and never repeats for this manager.
    /// Time: O(1).
    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }

    /// Every allocation, in address order. Time: O(1) per item.
    pub fn reserved_regions(&self) -> impl Iterator<Item = ReservedRegion> + '_ {
        self.regions.iter().map(ReservedRegion::from)
    }

    /// Reserved and committed bytes, allocations, dirty pages, the bytes
    /// private to the live version and shared with snapshots, and the number
    /// of live versions. Time: O(page-table nodes private to the live version)
    /// — O(1) right after a snapshot or restore.
    pub fn compute_memory_stats(&self) -> MemoryStats {
        let (private, shared) = self.pages.table().sharing();
        let dirty = self.pages.dirty_pages() as u64;
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

    // ------------------------------------------------------------------ versions

    /// Freezes the live state into an immutable [`Snapshot`]. The pages written
    /// since the previous snapshot or restore move from the overlay into the
    /// persistent page table. Does not change the layout version.
    ///
    /// Time: O(pages written since the previous snapshot or restore),
    /// independent of memory size and of history length.
    pub fn snapshot(&mut self) -> Snapshot {
        let (pages, log) = self.pages.freeze();
        let id = crate::snapshot::next_version_id();
        let delta = match self.base {
            Some((parent, at)) if at == self.layout_version && log.iter().all(|&p| p < SECTION_KEY_BASE) => {
                Some(crate::snapshot::Delta { parent, pages: log })
            }
            _ => None,
        };
        self.base = Some((id, self.layout_version));
        Snapshot::new(Version {
            id,
            delta,
            regions: self.regions.clone(),
            pages,
            committed_pages: self.committed_pages,
            default_allocation_address: self.default_allocation_address,
            layout_version: self.layout_version,
            token: VersionToken::new(&self.lineage),
        })
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
    /// allocations, protections and guard bits, MMIO regions (with their
    /// handlers), default allocation address. The layout version moves forward
    /// (it never repeats). Time: O(pages written since the last snapshot or
    /// restore), independent of memory size and of history length.
    pub fn restore(&mut self, snapshot: &Snapshot) {
        let v = snapshot.version();
        self.pages.reset_to(&v.pages);
        self.regions.assign(&v.regions);
        self.committed_pages = v.committed_pages;
        self.default_allocation_address = v.default_allocation_address;
        if !self.lineage.same(v.token.lineage()) {
            self.lineage = v.token.lineage().clone();
        }
        self.bump_layout();
        self.base = Some((v.id, self.layout_version));
    }
}
