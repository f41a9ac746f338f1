//! Layout changes (allocate, commit, decommit, release, protect, MMIO) and
//! the queries over the layout.

use std::sync::Arc;

use super::MemoryManager;
use crate::address::{checked_end, page_down, page_range, page_up, vpn};
use crate::error::MemoryError;
use crate::page_table::{PageTable, RangeOp};
use crate::protection::{Protection, RegionKind, meta};
use crate::query::{MemoryStats, RegionInfo, ReservedRegion};
use crate::region_map::{Allocation, Backing, MMIO_PAGE, MmioHandlers, RegionMap};
use crate::{ALLOCATION_GRANULARITY, MIN_ALLOCATION_ADDRESS, PAGE_SIZE};

fn check_protection(protection: Protection) -> Result<u8, MemoryError> {
    if protection.is_valid() {
        Ok(protection.bits())
    } else {
        Err(MemoryError::InvalidProtection(protection))
    }
}

impl MemoryManager {
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
            backing: Backing::Private,
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
        match a.backing {
            Backing::Mmio(_) => return Err(MemoryError::MmioRegion { base: a.base }),
            Backing::View(of) => {
                let view = a.clone();
                self.commit_view(&view, of, lo, hi, protection)?;
            }
            Backing::Private => {
                let (first, last) = (vpn(lo), vpn(hi));
                self.charge(last - first, |mm| last - first - mm.committed_in(first, last))?;
                self.apply(lo, hi, RangeOp::Commit(bits));
            }
        }
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
        match a.backing {
            Backing::Mmio(_) => return Err(MemoryError::MmioRegion { base: a.base }),
            Backing::View(_) => return Err(MemoryError::SectionView { base: a.base }),
            Backing::Private => {}
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
            if let Backing::View(_) = a.backing {
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
        if let Backing::View(_) = a.backing {
            return Err(MemoryError::SectionView { base: a.base });
        }
        if hi > a.end() {
            return Err(MemoryError::NotInOneAllocation { address: lo, size: hi - lo });
        }
        if let Backing::Mmio(_) = a.backing
            && (lo, hi) != (a.base, a.end())
        {
            // An MMIO region is released whole or not at all.
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
        self.pages.reset_to(&PageTable::default());
        self.adopt_layout(&RegionMap::default(), 0, 0);
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
        match a.backing {
            Backing::Mmio(_) => return Err(MemoryError::MmioRegion { base: a.base }),
            // A view's protection is bounded by the one it was mapped with.
            Backing::View(_) if !super::within(protection, a.initial) => {
                return Err(MemoryError::ProtectionExceedsMaximum {
                    requested: protection,
                    maximum: a.initial,
                });
            }
            Backing::View(_) | Backing::Private => {}
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
    /// the handlers, not bytes; snapshot files and state buffers keep the
    /// region but not its handlers (see [`bind_mmio`](Self::bind_mmio)).
    /// Time: O(log n + levels).
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
            backing: Backing::Mmio(Some(Arc::new(MmioHandlers::new(read, write)))),
        });
        self.apply(address, end, RangeOp::Set(MMIO_PAGE));
        self.bump_layout();
        Ok(())
    }

    /// Binds handlers to the unbound MMIO region based at `address` whose
    /// size is `size` rounded up to pages (the arguments that allocated it):
    /// a region of a snapshot file or a state buffer, which keep its layout
    /// but cannot keep its handlers, reached by [`restore`](Self::restore)
    /// or [`deserialize_memory_state`](Self::deserialize_memory_state).
    /// Until then every access to it is [`MemoryError::MmioUnbound`].
    ///
    /// Fails with [`MemoryError::NoUnboundMmio`], changing nothing, when
    /// there is no such region: nothing based there, another size, not
    /// MMIO, or already bound (handlers are bound once; release and
    /// allocate the region again to replace them). A layout change;
    /// snapshots taken before keep the region as it was in them (unbound).
    /// Time: O(log n).
    ///
    /// ```
    /// # use vmsnap::{MemoryError, MemoryManager, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// mm.allocate_mmio(0x7FFE_0000, 0x1000, |_, buf| buf.fill(7), |_, _| {})?;
    /// let file = vmsnap::file::to_bytes(&mm.snapshot()).unwrap();
    ///
    /// let mut run = MemoryManager::new();
    /// run.restore(&vmsnap::file::load_from_bytes(&file).unwrap());
    /// assert_eq!(run.region_kind(0x7FFE_0000), RegionKind::Mmio); // the layout came back...
    /// let mut buf = [0u8; 4];
    /// assert_eq!(run.read_memory(0x7FFE_0000, &mut buf), Err(MemoryError::MmioUnbound { address: 0x7FFE_0000 }));
    /// run.bind_mmio(0x7FFE_0000, 0x1000, |_, buf| buf.fill(7), |_, _| {})?; // ...the handlers are the owner's
    /// run.read_memory(0x7FFE_0000, &mut buf)?;
    /// assert_eq!(buf, [7; 4]);
    /// # Ok::<(), MemoryError>(())
    /// ```
    pub fn bind_mmio(
        &mut self,
        address: u64,
        size: u64,
        read: impl Fn(u64, &mut [u8]) + Send + Sync + 'static,
        write: impl Fn(u64, &[u8]) + Send + Sync + 'static,
    ) -> Result<(), MemoryError> {
        let length = page_up(size).ok_or(MemoryError::NoUnboundMmio { address, size })?;
        if !self.regions.bind_mmio(address, length, Arc::new(MmioHandlers::new(read, write))) {
            return Err(MemoryError::NoUnboundMmio { address, size });
        }
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
        self.view().region_info(address)
    }

    /// The protection of the page containing `address` (`GUARD` kept), or
    /// `None` when it is not committed. The cheapest query: a TLB hit, or a
    /// page-table walk. Time: O(1).
    #[inline]
    pub fn page_protection(&self, address: u64) -> Option<Protection> {
        self.view().page_protection(address)
    }

    /// First fit: the lowest 64 KiB-aligned address at or above `start` (0:
    /// the default allocation address) where `size` bytes fit below
    /// [`USER_SPACE_END`](crate::USER_SPACE_END). `None` for size 0 or a start at or past the end.
    /// Time: O(k log n) for the k allocations skipped.
    pub fn find_free_allocation_base(&self, size: u64, start: u64) -> Option<u64> {
        let start = if start == 0 { self.default_allocation_address } else { start };
        self.regions.find_free(size, start)
    }

    /// First fit inside `[lowest, highest_end)`: the lowest 64 KiB-aligned
    /// base (with `top_down`, the highest) where `size` bytes fit without
    /// overlapping an allocation; `highest_end` is clamped to
    /// [`USER_SPACE_END`](crate::USER_SPACE_END). What `MEM_TOP_DOWN` and `zero_bits` need.
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
        self.view().region_kind(address)
    }

    /// Every allocation, in address order. Time: O(1) per item.
    pub fn reserved_regions(&self) -> impl Iterator<Item = ReservedRegion> + '_ {
        self.view().reserved_regions()
    }

    /// Reserved and committed bytes, allocations, dirty pages, the bytes
    /// private to the live version and shared with snapshots, and the number
    /// of live versions. Time: O(page-table nodes private to the live version)
    /// — O(1) right after a snapshot or restore.
    pub fn compute_memory_stats(&self) -> MemoryStats {
        self.view().compute_memory_stats()
    }
}
