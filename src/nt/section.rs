//! `NtCreateSection`, `NtMapViewOfSection`, `NtUnmapViewOfSection` and
//! `NtClose` on a section handle, for pagefile-backed sections
//! (docs/windows-semantics.md §11), over the engine's sections
//! ([`MemoryManager::create_section`] and its siblings).
//!
//! ```text
//!   nt_create_section ──► SectionHandle ──┬─ nt_map_view_of_section ──► view A (MEM_MAPPED)
//!                         (the section:    ├─ nt_map_view_of_section ──► view B (MEM_MAPPED)
//!                          bytes + commit) └─ nt_close_section: views stay mapped
//!   nt_unmap_view_of_section(any address inside a view) ──► the view's range is MEM_FREE
//! ```
//!
//! Every view of a section shows the same bytes, whichever view (or the host)
//! writes them, across `snapshot()` / `restore()` too. Commit state belongs
//! to the section (a page committed through one view is committed in all);
//! protection belongs to the view. A view's protection is also its maximum:
//! `NtProtectVirtualMemory` and `NtAllocateVirtualMemory(MEM_COMMIT)` on a
//! view stay within it.
//!
//! Like the rest of this face, each call validates in Windows' order,
//! changes nothing when it fails, and writes its outputs back only on
//! success.

use super::constants::*;
use super::protection::{CACHE_MODIFIERS, is_valid_page_protection, view_protection_from_page};
use super::status::NtStatus;
use super::virtual_memory::{is_view, status_of, within_view};
use crate::{
    ALLOCATION_GRANULARITY, MAX_ALLOCATION_ADDRESS, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager,
    Protection, SectionId, USER_SPACE_END, page_up,
};

type NtResult<T> = Result<T, NtStatus>;

/// A handle to a section of one [`MemoryManager`], as
/// [`nt_create_section`] returns it.
///
/// It names the engine's [`SectionId`] ([`id`](SectionHandle::id)); an
/// emulator keeps its own table from guest `HANDLE` values to these. After
/// [`nt_close_section`] the handle is dead: every call given it answers
/// `STATUS_INVALID_HANDLE`, while the section's views stay mapped.
/// Handles are values of the manager's state: `restore()` to a version
/// before the section existed makes the handle unknown there. A handle
/// belongs to the manager that made it, as an NT handle to its process:
/// given to another manager, every call answers `STATUS_INVALID_HANDLE`
/// and changes nothing (see [`SectionId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionHandle(SectionId);

impl SectionHandle {
    /// The engine's id of the section (for [`MemoryManager::section_info`]).
    /// Time: O(1).
    pub fn id(self) -> SectionId {
        self.0
    }
}

impl From<SectionId> for SectionHandle {
    /// The handle of a section made with [`MemoryManager::create_section`].
    fn from(id: SectionId) -> Self {
        SectionHandle(id)
    }
}

/// Every allocation attribute this face knows: the two kinds (exactly one
/// is required) and the modifiers it recognises but does not model.
const ATTRIBUTE_BITS: u32 = SEC_COMMIT | SEC_RESERVE | SEC_NOCACHE | SEC_WRITECOMBINE | SEC_LARGE_PAGES;

// ------------------------------------------------------------------- create

/// `NtCreateSection(&handle, SECTION_ALL_ACCESS, NULL, &maximum_size,
/// page_protection, allocation_attributes, NULL)`: a pagefile-backed section
/// (`CreateFileMapping(INVALID_HANDLE_VALUE, …)`) of `maximum_size` bytes,
/// rounded up to whole pages (docs/windows-semantics.md §11).
///
/// **Validation**, in this order:
/// 1. `allocation_attributes` must hold exactly one of `SEC_COMMIT` and
///    `SEC_RESERVE`, and no bit outside `SEC_COMMIT | SEC_RESERVE |
///    SEC_NOCACHE | SEC_WRITECOMBINE | SEC_LARGE_PAGES`: both kinds \[W\],
///    neither, `SEC_IMAGE` / `SEC_FILE` (they need a file; images are mapped
///    by [`crate::image::map_image`]) or an unknown bit →
///    `STATUS_INVALID_PARAMETER` (Win32 87 \[W\]; ReactOS answers
///    `STATUS_INVALID_PARAMETER_6` \[R\], also 87).
/// 2. `page_protection` follows the CreateFileMapping column of §5:
///    `PAGE_READONLY`, `PAGE_READWRITE`, `PAGE_WRITECOPY`,
///    `PAGE_EXECUTE_READ`, `PAGE_EXECUTE_READWRITE` and
///    `PAGE_EXECUTE_WRITECOPY` are accepted; `PAGE_NOACCESS`,
///    `PAGE_EXECUTE`, 0 and every combination → `STATUS_INVALID_PAGE_PROTECTION`
///    \[W\]; so are `PAGE_GUARD`, `PAGE_NOCACHE` and `PAGE_WRITECOMBINE`
///    (a section's cache mode is an attribute, `SEC_NOCACHE`) \[R\].
/// 3. `maximum_size == 0` → `STATUS_INVALID_PARAMETER` (a pagefile-backed
///    section needs a size).
/// 4. `SEC_LARGE_PAGES` → `STATUS_PRIVILEGE_NOT_HELD` (as for a process
///    without the lock-memory privilege); `SEC_NOCACHE` /
///    `SEC_WRITECOMBINE` are not modelled → `STATUS_NOT_SUPPORTED`.
/// 5. A size the engine's section space cannot hold (it rounds past
///    `u64::MAX`, or exceeds what is left of the engine's 128 TiB of section
///    pages) → `STATUS_NO_MEMORY`.
///
/// **What it makes:** with `SEC_COMMIT` every page is committed (zeros) and
/// views of it start `MEM_COMMIT`; with `SEC_RESERVE` every page is reserved
/// and views start `MEM_RESERVE` until `NtAllocateVirtualMemory(MEM_COMMIT)`
/// commits pages through a view \[W\]. `page_protection` is the most access a
/// view may have: a view asking for more gets `STATUS_SECTION_PROTECTION`
/// (`PAGE_WRITECOPY` needs only read access, so a read-only section allows
/// write-copy views \[R\]). The section keeps its bytes while its handle is
/// open, even with no view.
///
/// A layout change. Time: O(log sections + page-table levels): committing a
/// huge section commits whole page-table subtrees at once.
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let section = nt_create_section(&mut mm, 0x2000, PAGE_READWRITE, SEC_COMMIT)?;
/// let (mut a, mut a_size) = (0, 0);
/// assert!(nt_map_view_of_section(&mut mm, section, &mut a, 0, &mut a_size, PAGE_READWRITE).is_success());
/// let (mut b, mut b_size) = (0, 0);
/// assert!(nt_map_view_of_section(&mut mm, section, &mut b, 0, &mut b_size, PAGE_READONLY).is_success());
/// mm.write_memory(a + 0x1000, b"shared").unwrap();
/// let mut buf = [0u8; 6];
/// mm.read_memory(b + 0x1000, &mut buf).unwrap();
/// assert_eq!(&buf, b"shared");
/// assert_eq!(nt_create_section(&mut mm, 0x1000, PAGE_NOACCESS, SEC_COMMIT), Err(NtStatus::INVALID_PAGE_PROTECTION));
/// # Ok::<(), NtStatus>(())
/// ```
pub fn nt_create_section(
    mm: &mut MemoryManager,
    maximum_size: u64,
    page_protection: u32,
    allocation_attributes: u32,
) -> Result<SectionHandle, NtStatus> {
    if allocation_attributes & !ATTRIBUTE_BITS != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let commit = match allocation_attributes & (SEC_COMMIT | SEC_RESERVE) {
        SEC_COMMIT => true,
        SEC_RESERVE => false,
        _ => return Err(NtStatus::INVALID_PARAMETER),
    };
    let maximum = section_protection(page_protection)?;
    if maximum_size == 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if allocation_attributes & SEC_LARGE_PAGES != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    if allocation_attributes & (SEC_NOCACHE | SEC_WRITECOMBINE) != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    mm.create_section(maximum_size, maximum, commit).map(SectionHandle).map_err(|e| match e {
        MemoryError::RangeOverflow { .. } | MemoryError::NoFreeSpace { .. } => NtStatus::NO_MEMORY,
        e => status_of(&e),
    })
}

/// The maximum protection of a section from its `page_protection`: the
/// CreateFileMapping column of §5.
fn section_protection(page_protection: u32) -> NtResult<Protection> {
    let modifiers = PAGE_GUARD | CACHE_MODIFIERS;
    let base = page_protection & 0xFF;
    if page_protection & modifiers != 0
        || !is_valid_page_protection(page_protection)
        || base == PAGE_NOACCESS
        || base == PAGE_EXECUTE
    {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    view_protection_from_page(page_protection).map(|(protection, _)| protection)
}

// ---------------------------------------------------------------------- map

/// `NtMapViewOfSection(section, NtCurrentProcess(), base, 0, 0, &offset,
/// view_size, ViewShare, 0, protect)`: maps `[offset, offset + *view_size)`
/// of `section` as a new allocation of type `MEM_MAPPED`
/// (docs/windows-semantics.md §11).
///
/// **Validation**, in this order (ReactOS's order \[R\]; the statuses are
/// Windows' \[W\] where §11 names them):
/// 1. `protect` must be a valid `PAGE_*` value (§5; the write-copy values
///    are fine, `PAGE_GUARD` too) → else `STATUS_INVALID_PAGE_PROTECTION`
///    \[R\]. `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` answer the same (a view's
///    cache mode is its section's, which this face does not model).
/// 2. `*base` past [`MAX_ALLOCATION_ADDRESS`], or `*view_size` that does not
///    fit between `*base` and [`USER_SPACE_END`] → `STATUS_INVALID_PARAMETER_3`
///    \[R\].
/// 3. A closed or unknown `section`, or another manager's →
///    `STATUS_INVALID_HANDLE`.
/// 4. `*base` (when not 0) or `offset` not 64 KiB aligned →
///    `STATUS_MAPPED_ALIGNMENT` \[W\].
/// 5. `protect` asks for more than the section's `page_protection` allows →
///    `STATUS_SECTION_PROTECTION` \[R\] (write-copy needs read access only).
/// 6. `offset + *view_size` overflowing or past the section's (page-rounded)
///    size, or `*view_size == 0` with `offset` at or past the end →
///    `STATUS_INVALID_VIEW_SIZE` \[W\].
/// 7. `*base != 0`: the view must not overlap any allocation →
///    `STATUS_CONFLICTING_ADDRESSES` \[W\]. `*base == 0`: the system picks the
///    lowest free 64 KiB-aligned hole at or above the
///    [default allocation address](MemoryManager::default_allocation_address)
///    (or, when none fits there, at or above [`MIN_ALLOCATION_ADDRESS`]);
///    none → `STATUS_NO_MEMORY`.
///
/// **What it maps:** `*view_size == 0` maps from `offset` to the end of the
/// section. The view is one allocation: AllocationBase = the view base,
/// AllocationProtect = `protect` \[W\], RegionSize = the page-rounded view
/// size \[W\]. Pages committed in the section are committed in the view with
/// `protect`; the others are reserved (Protect 0) \[W\]. `protect` is also
/// the view's maximum: later protection changes and commits through the view
/// stay within it. A write-copy view shares the section's bytes until the
/// guest writes a page; that page then becomes the view's own copy with
/// `PAGE_READWRITE` (`PAGE_EXECUTE_READWRITE` for execute-write-copy) \[W\].
///
/// **Write-back**, only on success: `*base` = the view's base and
/// `*view_size` = its page-rounded size.
///
/// A layout change. Time: O(log allocations + view pages / 64).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let section = nt_create_section(&mut mm, 0x30000, PAGE_READWRITE, SEC_RESERVE)?;
/// // Map the last 0x20000 bytes (offset 64 KiB, size 0: to the end).
/// let (mut base, mut size) = (0, 0);
/// let status = nt_map_view_of_section(&mut mm, section, &mut base, 0x10000, &mut size, PAGE_READWRITE);
/// assert_eq!(status, NtStatus::SUCCESS);
/// assert_eq!((base % 0x10000, size), (0, 0x20000));
/// let mbi = nt_query_virtual_memory(&mm, base)?;
/// assert_eq!((mbi.state, mbi.protect, mbi.allocation_protect, mbi.type_), (MEM_RESERVE, 0, PAGE_READWRITE, MEM_MAPPED));
/// // An offset that is not 64 KiB aligned.
/// let (mut base, mut size) = (0, 0);
/// let status = nt_map_view_of_section(&mut mm, section, &mut base, 0x1000, &mut size, PAGE_READWRITE);
/// assert_eq!((status, base, size), (NtStatus::MAPPED_ALIGNMENT, 0, 0));
/// # Ok::<(), NtStatus>(())
/// ```
pub fn nt_map_view_of_section(
    mm: &mut MemoryManager,
    section: SectionHandle,
    base: &mut u64,
    offset: u64,
    view_size: &mut u64,
    protect: u32,
) -> NtStatus {
    match map(mm, section, *base, offset, *view_size, protect) {
        Ok((start, length)) => {
            *base = start;
            *view_size = length;
            NtStatus::SUCCESS
        }
        Err(status) => status,
    }
}

fn map(
    mm: &mut MemoryManager,
    section: SectionHandle,
    base: u64,
    offset: u64,
    size: u64,
    protect: u32,
) -> NtResult<(u64, u64)> {
    let (protection, modifiers) = view_protection_from_page(protect)?;
    if modifiers != 0 {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    // `base <= MAX_ALLOCATION_ADDRESS < USER_SPACE_END`: no underflow.
    if base > MAX_ALLOCATION_ADDRESS || USER_SPACE_END - base < size {
        return Err(NtStatus::INVALID_PARAMETER_3);
    }
    let info = mm.section_info(section.0).filter(|s| s.open).ok_or(NtStatus::INVALID_HANDLE)?;
    if !base.is_multiple_of(ALLOCATION_GRANULARITY) || !offset.is_multiple_of(ALLOCATION_GRANULARITY) {
        return Err(NtStatus::MAPPED_ALIGNMENT);
    }
    if !within_view(protection, info.max_protection) {
        return Err(NtStatus::SECTION_PROTECTION);
    }
    let size = if size == 0 { info.size.saturating_sub(offset) } else { size };
    match offset.checked_add(size) {
        Some(end) if size != 0 && end <= info.size => {}
        _ => return Err(NtStatus::INVALID_VIEW_SIZE),
    }
    // `offset + size <= info.size`, a whole number of pages: no overflow.
    let length = page_up(size).ok_or(NtStatus::INVALID_VIEW_SIZE)?;
    let at = if base == 0 {
        mm.find_free_allocation_base_in(length, mm.default_allocation_address(), USER_SPACE_END, false)
            .or_else(|| {
                mm.find_free_allocation_base_in(length, MIN_ALLOCATION_ADDRESS, USER_SPACE_END, false)
            })
            .ok_or(NtStatus::NO_MEMORY)?
    } else {
        // Step 2 keeps `base + size` in user space, and both `base` and
        // `USER_SPACE_END` are 64 KiB aligned, so `base + length` is too.
        if mm.overlaps_reserved_region(base, length) {
            return Err(NtStatus::CONFLICTING_ADDRESSES);
        }
        base
    };
    let mapped =
        mm.map_view_of_section(section.0, at, offset, length, protection).map_err(|e| status_of(&e))?;
    Ok((mapped, length))
}

// -------------------------------------------------------------------- unmap

/// `NtUnmapViewOfSection(NtCurrentProcess(), base)`: unmaps the whole view
/// containing `base` — any address inside it, not only its base \[W\]
/// (docs/windows-semantics.md §11). Its range becomes `MEM_FREE` \[W\].
///
/// An address that is not inside a view — free memory, private
/// (`VirtualAlloc`) memory, MMIO, a wild pointer, an address past user
/// space — → `STATUS_NOT_MAPPED_VIEW` (Win32 487 \[W\]), nothing changes.
///
/// The section lives on while its handle is open (its bytes are kept for
/// the next view); after [`nt_close_section`], unmapping its last view frees
/// it. Image views (kind `Image`, made by [`crate::image::map_image`]) and
/// engine allocations of a view kind that no section backs are released
/// whole, as Windows unmaps an image view.
///
/// A layout change. Time: O(log allocations + view pages / 64).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let section = nt_create_section(&mut mm, 0x10000, PAGE_READWRITE, SEC_COMMIT)?;
/// let (mut base, mut size) = (0, 0);
/// nt_map_view_of_section(&mut mm, section, &mut base, 0, &mut size, PAGE_READWRITE);
/// assert_eq!(nt_unmap_view_of_section(&mut mm, base + 0x1064), NtStatus::SUCCESS);
/// assert_eq!(nt_query_virtual_memory(&mm, base)?.state, MEM_FREE);
/// assert_eq!(nt_unmap_view_of_section(&mut mm, base), NtStatus::NOT_MAPPED_VIEW);
/// # Ok::<(), NtStatus>(())
/// ```
pub fn nt_unmap_view_of_section(mm: &mut MemoryManager, base: u64) -> NtStatus {
    match unmap(mm, base) {
        Ok(()) => NtStatus::SUCCESS,
        Err(status) => status,
    }
}

fn unmap(mm: &mut MemoryManager, address: u64) -> NtResult<()> {
    if address >= USER_SPACE_END {
        return Err(NtStatus::NOT_MAPPED_VIEW);
    }
    let info = mm.region_info(address);
    if !info.is_reserved || !is_view(info.kind) {
        return Err(NtStatus::NOT_MAPPED_VIEW);
    }
    match mm.unmap_view_of_section(address) {
        Ok(()) => Ok(()),
        // An image view, or a view kind no section backs: one allocation.
        Err(MemoryError::NotAView { .. }) => {
            mm.release_memory(info.allocation_base, 0).map_err(|_| NtStatus::NOT_MAPPED_VIEW)
        }
        Err(e) => Err(status_of(&e)),
    }
}

// -------------------------------------------------------------------- close

/// `NtClose(section)`: closes the section's handle (docs/windows-semantics.md §11).
///
/// Its views stay mapped and keep showing (and sharing) its bytes \[W\]; the
/// section's pages are freed when its last view is unmapped, or now when it
/// has no view. Closing a handle twice, or a handle this manager does not
/// know (another manager's included) → `STATUS_INVALID_HANDLE`.
///
/// A layout change. Time: O(allocations) (the views are counted).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let section = nt_create_section(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT)?;
/// let (mut base, mut size) = (0, 0);
/// nt_map_view_of_section(&mut mm, section, &mut base, 0, &mut size, PAGE_READWRITE);
/// assert_eq!(nt_close_section(&mut mm, section), NtStatus::SUCCESS);
/// assert_eq!(nt_query_virtual_memory(&mm, base)?.type_, MEM_MAPPED); // still mapped
/// assert_eq!(nt_close_section(&mut mm, section), NtStatus::INVALID_HANDLE);
/// # Ok::<(), NtStatus>(())
/// ```
pub fn nt_close_section(mm: &mut MemoryManager, section: SectionHandle) -> NtStatus {
    match mm.close_section(section.0) {
        Ok(()) => NtStatus::SUCCESS,
        Err(_) => NtStatus::INVALID_HANDLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_protection_is_the_create_file_mapping_column() {
        let ok = [0x02, 0x04, 0x08, 0x20, 0x40, 0x80];
        for p in 0..0x1000u32 {
            let expected = ok.contains(&p);
            assert_eq!(section_protection(p).is_ok(), expected, "{p:#x}");
        }
        assert_eq!(section_protection(PAGE_WRITECOPY), Ok(Protection::READ | Protection::WRITE_COPY));
        assert_eq!(section_protection(PAGE_EXECUTE_READWRITE), Ok(Protection::ALL_ACCESS));
    }
}
