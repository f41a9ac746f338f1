//! Reads and writes: the host view (protection ignored) and the guest view
//! (protection, guard pages and write-copy applied).

use super::MemoryManager;
use crate::address::{PAGE_MASK, page_down, vpn};
use crate::error::MemoryError;
use crate::page_table::{PAGE, RangeOp};
use crate::protection::{Access, Protection, meta};
use crate::query::{self, Denied};
use crate::{PAGE_SIZE, USER_SPACE_END};

impl MemoryManager {
    /// Reads `buf.len()` bytes at `address`, ignoring protection. Fails with
    /// `NotAllocated` / `NotCommitted` (at the first byte that cannot be read)
    /// when any byte is free or only reserved; MMIO ranges call their read
    /// handler (`MmioUnbound`, reading nothing, for a region without one:
    /// see [`bind_mmio`](Self::bind_mmio)). A zero-length read succeeds. Never fires or clears a guard page.
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
    /// write handler (`MmioUnbound`, writing nothing, for a region without
    /// one).
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
}
