//! `NtAllocateVirtualMemory`, `NtFreeVirtualMemory` and
//! `NtProtectVirtualMemory` over the public [`MemoryManager`] API.
//!
//! Each call is a pure function of its arguments: it validates them in the
//! order docs/windows-semantics.md gives, rounds the range as Windows does, checks
//! what the engine would refuse so that the refusal gets Windows' status,
//! calls the engine once (twice when a cache modifier is stored), and writes
//! the rounded base and size back only on success. A failed call changes
//! nothing: neither the address space nor its outputs (except
//! `NtProtectVirtualMemory`'s `old_protect`, which Windows sets to
//! `PAGE_NOACCESS`).

use super::constants::*;
use super::protection::{is_valid_page_protection, page_from_protection, view_protection_from_page};
use super::status::NtStatus;
use crate::{
    MAX_ALLOCATION_ADDRESS, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, Protection, RegionInfo,
    RegionKind, USER_SPACE_END, granule_down, page_down, page_up,
};

type NtResult<T> = Result<T, NtStatus>;

/// Every allocation-type bit `NtAllocateVirtualMemory` knows (§4.1 step 3).
const ALLOCATION_TYPE_BITS: u32 =
    MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_TOP_DOWN | MEM_WRITE_WATCH | MEM_PHYSICAL | MEM_LARGE_PAGES;

/// The engine's error as the closest NTSTATUS. The calls below check every
/// case they can name before calling the engine, so this is the fallback.
pub(super) fn status_of(error: &MemoryError) -> NtStatus {
    match error {
        MemoryError::ConflictingAddresses { .. }
        | MemoryError::NotInOneAllocation { .. }
        | MemoryError::MmioRegion { .. } => NtStatus::CONFLICTING_ADDRESSES,
        MemoryError::NotCommitted { .. } => NtStatus::NOT_COMMITTED,
        MemoryError::NotAllocated { .. } => NtStatus::MEMORY_NOT_ALLOCATED,
        MemoryError::NotAllocationBase { .. } => NtStatus::FREE_VM_NOT_AT_BASE,
        MemoryError::NoFreeSpace { .. } => NtStatus::NO_MEMORY,
        MemoryError::CommitLimitExceeded { .. } => NtStatus::COMMITMENT_LIMIT,
        MemoryError::InvalidProtection(_) => NtStatus::INVALID_PAGE_PROTECTION,
        MemoryError::Misaligned { .. } => NtStatus::INVALID_PARAMETER_2,
        MemoryError::ZeroSize { .. }
        | MemoryError::RangeOverflow { .. }
        | MemoryError::OutsideUserSpace { .. } => NtStatus::INVALID_PARAMETER,
        MemoryError::AccessViolation { .. } => NtStatus::ACCESS_VIOLATION,
        MemoryError::GuardPageViolation { .. } => NtStatus::GUARD_PAGE_VIOLATION,
        MemoryError::PageUnavailable { .. } => NtStatus::IN_PAGE_ERROR,
        MemoryError::SectionView { .. } => NtStatus::UNABLE_TO_DELETE_SECTION,
        MemoryError::ProtectionExceedsMaximum { .. } => NtStatus::SECTION_PROTECTION,
        MemoryError::UnknownSection { .. } | MemoryError::ForeignSection { .. } => NtStatus::INVALID_HANDLE,
        MemoryError::NotAView { .. } => NtStatus::NOT_MAPPED_VIEW,
        MemoryError::ViewOutsideSection { .. } => NtStatus::INVALID_VIEW_SIZE,
        _ => NtStatus::INVALID_PARAMETER,
    }
}

/// The region at `address` when it lies inside an allocation.
fn allocation_at(mm: &MemoryManager, address: u64) -> Option<RegionInfo> {
    let info = mm.region_info(address);
    info.is_reserved.then_some(info)
}

/// Exclusive end of the allocation a region belongs to.
fn allocation_end(info: &RegionInfo) -> u64 {
    info.allocation_base + info.allocation_length
}

/// True for the kinds that are section views: a view is unmapped, never
/// freed or decommitted.
pub(super) fn is_view(kind: RegionKind) -> bool {
    matches!(kind, RegionKind::FileView | RegionKind::PagefileView | RegionKind::Image)
}

/// True for the data views (`FileView`, `PagefileView`): the views whose
/// pages may be protected or committed write-copy (§5, §11) and whose
/// protection is bounded by the view's maximum. Image views keep the rules
/// of private memory here (see `vmsnap::image`).
fn is_data_view(kind: RegionKind) -> bool {
    matches!(kind, RegionKind::FileView | RegionKind::PagefileView)
}

/// The kind of the allocation holding the page of `address` (`Free` for
/// free memory and for addresses past user space).
fn kind_at(mm: &MemoryManager, address: u64) -> RegionKind {
    if address >= USER_SPACE_END { RegionKind::Free } else { mm.region_kind(page_down(address)) }
}

/// True when `requested` asks for no access beyond `maximum`, a view's
/// maximum: the protection it was mapped with (its AllocationProtect, §11).
/// `GUARD` is not access; write-copy needs only read access (a write-copy
/// page never writes the section), so `PAGE_WRITECOPY` is allowed on every
/// readable view \[W\], and a write-copy view allows read, write-copy and
/// no access, never write.
pub(super) fn within_view(requested: Protection, maximum: Protection) -> bool {
    let access = |p: Protection| {
        let p = p.difference(Protection::GUARD);
        if p.contains(Protection::WRITE_COPY) {
            p.difference(Protection::WRITE_COPY).union(Protection::READ)
        } else {
            p
        }
    };
    access(maximum).contains(access(requested))
}

/// The exclusive end an address picked under `zero_bits` may reach (§4.5):
/// 0 → user space; 1..=21 → `1 << (32 - zero_bits)`, so that
/// `(base >> (32 - zero_bits)) == 0`; 22..=31 → `STATUS_INVALID_PARAMETER_3`
/// \[W\]; above 31 a mask whose leading zero bits count \[W\]: a mask of `n`
/// significant bits allows ends up to `1 << n`.
fn zero_bits_limit(zero_bits: u64) -> NtResult<u64> {
    match zero_bits {
        0 => Ok(USER_SPACE_END),
        1..=21 => Ok(1 << (32 - zero_bits)),
        22..=31 => Err(NtStatus::INVALID_PARAMETER_3),
        mask => Ok(1u64.checked_shl(64 - mask.leading_zeros()).unwrap_or(u64::MAX)),
    }
}

/// `end` of an explicit `[base, base + size)`, refusing a base past the last
/// user address (`bad_base`) and a size that overflows or runs past user
/// space (`bad_size`) \[R\].
fn explicit_end(base: u64, size: u64, bad_base: NtStatus, bad_size: NtStatus) -> NtResult<u64> {
    if base > MAX_ALLOCATION_ADDRESS {
        return Err(bad_base);
    }
    match base.checked_add(size) {
        Some(end) if end <= USER_SPACE_END => Ok(end),
        _ => Err(bad_size),
    }
}

// ------------------------------------------------------------------ allocate

/// `NtAllocateVirtualMemory(NtCurrentProcess(), base, zero_bits, size,
/// allocation_type, protect)`: reserve and/or commit private memory
/// (docs/windows-semantics.md §3, §4).
///
/// **Validation** (§4.1, in this order; the first failure is returned):
/// 1. `zero_bits` 22..=31 → `STATUS_INVALID_PARAMETER_3` \[W\].
/// 2. A type bit outside `MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_TOP_DOWN
///    | MEM_WRITE_WATCH | MEM_PHYSICAL | MEM_LARGE_PAGES` (e.g.
///    `AT_ROUND_TO_PAGE`), none of `MEM_COMMIT`/`MEM_RESERVE`/`MEM_RESET`,
///    `MEM_RESET` with any other bit, or `MEM_WRITE_WATCH` without
///    `MEM_RESERVE` → `STATUS_INVALID_PARAMETER_5` \[W\]\[R\].
/// 3. An invalid `protect` (§5) → `STATUS_INVALID_PAGE_PROTECTION` \[W\];
///    so are `PAGE_WRITECOPY` and `PAGE_EXECUTE_WRITECOPY` \[W\]\[R\], except
///    for a `MEM_COMMIT` at an explicit base inside a data view (§11).
/// 4. `*size == 0` → `STATUS_INVALID_PARAMETER_4` \[W\]\[R\].
/// 5. `MEM_PHYSICAL` (AWE) is not modelled → `STATUS_NOT_SUPPORTED`;
///    `MEM_LARGE_PAGES` → `STATUS_PRIVILEGE_NOT_HELD`, as for a process
///    without the lock-memory privilege. `MEM_WRITE_WATCH` is accepted; the
///    allocation behaves as without it (write tracking is not modelled).
/// 6. An explicit `*base` past [`MAX_ALLOCATION_ADDRESS`] →
///    `STATUS_INVALID_PARAMETER_2`; `*base + *size` overflowing or past
///    [`USER_SPACE_END`] → `STATUS_INVALID_PARAMETER_4` \[R\].
///
/// **What it does:**
/// * `*base == 0` (with `MEM_RESERVE`, `MEM_COMMIT` or both): a new
///   allocation of `PAGE_UP(*size)` bytes at a 64 KiB-aligned hole the
///   system picks (§3, §4.5): bottom-up, the lowest hole at or above the
///   [default allocation address](MemoryManager::default_allocation_address)
///   (or, when none fits there, at or above [`MIN_ALLOCATION_ADDRESS`]); with
///   `MEM_TOP_DOWN` the highest hole. Under `zero_bits` the allocation ends
///   at or below the limit described in step 1 (`1 << (32 - zero_bits)`, or
///   for a mask `1 << significant bits`). No hole → `STATUS_NO_MEMORY` \[W\].
/// * `MEM_RESERVE` at an explicit base: a new allocation
///   `[G_DOWN(base), PAGE_UP(base + size))` (§3). A start below
///   [`MIN_ALLOCATION_ADDRESS`] → `STATUS_INVALID_PARAMETER` \[I\]; any overlap
///   with an allocation → `STATUS_CONFLICTING_ADDRESSES` \[W\].
///   `zero_bits` and `MEM_TOP_DOWN` do not constrain an explicit base.
/// * A new allocation is private ([`RegionKind::Private`]); with `MEM_COMMIT`
///   it is committed whole with `protect`; its AllocationProtect is
///   `protect`. `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` are stored as the
///   allocation's [attributes](MemoryManager::set_allocation_attributes) and
///   reported on every accessible committed page (§9).
/// * `MEM_COMMIT` alone at an explicit base: commits
///   `[PAGE_DOWN(base), PAGE_UP(base + size))`, which must lie inside one
///   allocation, else `STATUS_CONFLICTING_ADDRESSES` \[R\] (§4.3). Committed
///   pages keep their bytes and take `protect`; the others read zeros. Cache
///   modifiers are ignored here (they belong to the allocation). In a
///   file-backed or image view → `STATUS_ALREADY_COMMITTED` \[W\]; in an
///   MMIO region → `STATUS_CONFLICTING_ADDRESSES` (as NT refuses
///   device-memory VADs \[R\]).
/// * `MEM_COMMIT` in a view of a pagefile-backed section (§11): commits the
///   pages **in the section**, so every view of it shows them committed; this
///   view's pages take `protect`, the other views' newly committed pages
///   their own view protection \[W\]. Pages already committed keep their
///   bytes. `protect` must stay within the view's access (the protection it
///   was mapped with; write-copy needs read access only), else
///   `STATUS_SECTION_PROTECTION` (Win32 87 \[W\]; see below);
///   `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` → `STATUS_INVALID_PAGE_PROTECTION`
///   \[R\].
///
///   *Why `STATUS_SECTION_PROTECTION`:* \[W\] pins only the Win32 error
///   (87). Wine answers `STATUS_INVALID_PAGE_PROTECTION` \[I\]; ReactOS does
///   not check \[R\]; `NtMapViewOfSection` answers `STATUS_SECTION_PROTECTION`
///   for the same excess (a view beyond its section) \[R, kmtest run against
///   Windows\]. This face uses `STATUS_SECTION_PROTECTION` for every "more
///   access than the view or section allows", as
///   [`nt_protect_virtual_memory`] does.
/// * `MEM_RESET` (alone, explicit base): `[PAGE_DOWN(base),
///   PAGE_UP(base + size))` must lie inside one allocation (reserved pages
///   are fine), else `STATUS_CONFLICTING_ADDRESSES` (ERROR_INVALID_ADDRESS
///   \[W\]). Nothing changes: states, protections and bytes stay (Windows may
///   keep or zero them \[W\]); `protect` only has to be valid (§5; write-copy
///   values pass).
///
/// **Write-back**, only on success: `*base` = the start of the range
/// (64 KiB aligned for a new allocation, page aligned for commit/reset) and
/// `*size` = its rounded length.
///
/// Time: O(log allocations + page-table leaves touched); picking a hole adds
/// O(k log n) for the k allocations skipped.
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let (mut base, mut size) = (0, 0xFFFC);
/// let status = nt_allocate_virtual_memory(&mut mm, &mut base, 0, &mut size, MEM_RESERVE, PAGE_READWRITE);
/// assert_eq!(status, NtStatus::SUCCESS);
/// assert_eq!((base % 0x10000, size), (0, 0x10000));
/// // Commit two bytes straddling a page boundary: two pages, from PAGE_DOWN(address).
/// let (mut at, mut len) = (base + 0x1FFF, 2);
/// assert!(nt_allocate_virtual_memory(&mut mm, &mut at, 0, &mut len, MEM_COMMIT, PAGE_READWRITE).is_success());
/// assert_eq!((at, len), (base + 0x1000, 0x2000));
/// ```
pub fn nt_allocate_virtual_memory(
    mm: &mut MemoryManager,
    base: &mut u64,
    zero_bits: u64,
    size: &mut u64,
    allocation_type: u32,
    protect: u32,
) -> NtStatus {
    match allocate(mm, *base, zero_bits, *size, allocation_type, protect) {
        Ok((start, length)) => {
            *base = start;
            *size = length;
            NtStatus::SUCCESS
        }
        Err(status) => status,
    }
}

fn allocate(
    mm: &mut MemoryManager,
    base: u64,
    zero_bits: u64,
    size: u64,
    ty: u32,
    protect: u32,
) -> NtResult<(u64, u64)> {
    let limit = zero_bits_limit(zero_bits)?;
    if ty & !ALLOCATION_TYPE_BITS != 0
        || ty & (MEM_COMMIT | MEM_RESERVE | MEM_RESET) == 0
        || (ty & MEM_RESET != 0 && ty != MEM_RESET)
        || (ty & MEM_WRITE_WATCH != 0 && ty & MEM_RESERVE == 0)
    {
        return Err(NtStatus::INVALID_PARAMETER_5);
    }
    if ty == MEM_RESET {
        if !is_valid_page_protection(protect) {
            return Err(NtStatus::INVALID_PAGE_PROTECTION);
        }
        if size == 0 {
            return Err(NtStatus::INVALID_PARAMETER_4);
        }
        return reset(mm, base, size);
    }
    let (protection, modifiers) = view_protection_from_page(protect)?;
    let commit_in_data_view = base != 0 && ty & MEM_RESERVE == 0 && is_data_view(kind_at(mm, base));
    if protection.contains(Protection::WRITE_COPY) && !commit_in_data_view {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    if size == 0 {
        return Err(NtStatus::INVALID_PARAMETER_4);
    }
    if ty & MEM_PHYSICAL != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    if ty & MEM_LARGE_PAGES != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    let reserve_only = ty & MEM_COMMIT == 0;
    if base == 0 {
        let length = page_up(size).filter(|&l| l <= USER_SPACE_END).ok_or(NtStatus::INVALID_PARAMETER_4)?;
        let at = if ty & MEM_TOP_DOWN != 0 {
            mm.find_free_allocation_base_in(length, MIN_ALLOCATION_ADDRESS, limit, true)
        } else {
            mm.find_free_allocation_base_in(length, mm.default_allocation_address(), limit, false)
                .or_else(|| mm.find_free_allocation_base_in(length, MIN_ALLOCATION_ADDRESS, limit, false))
        }
        .ok_or(NtStatus::NO_MEMORY)?;
        create(mm, at, length, protection, modifiers, reserve_only)?;
        return Ok((at, length));
    }
    let end = explicit_end(base, size, NtStatus::INVALID_PARAMETER_2, NtStatus::INVALID_PARAMETER_4)?;
    // `end <= USER_SPACE_END`, which is page aligned: rounding up cannot overflow.
    let end = page_up(end).ok_or(NtStatus::INVALID_PARAMETER_4)?;
    if ty & MEM_RESERVE != 0 {
        let start = granule_down(base);
        if start < MIN_ALLOCATION_ADDRESS {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        create(mm, start, end - start, protection, modifiers, reserve_only)?;
        return Ok((start, end - start));
    }
    commit(mm, page_down(base), end, protection, modifiers)
}

/// A new private allocation `[at, at + length)`, its cache modifiers stored
/// as its attributes.
fn create(
    mm: &mut MemoryManager,
    at: u64,
    length: u64,
    protection: Protection,
    modifiers: u32,
    reserve_only: bool,
) -> NtResult<()> {
    mm.allocate_memory_at(at, length, protection, reserve_only, RegionKind::Private)
        .map_err(|e| status_of(&e))?;
    if modifiers != 0
        && let Err(e) = mm.set_allocation_attributes(at, modifiers)
    {
        // Cannot happen (the allocation was just made at `at`); undo it so
        // that the failed call changes nothing.
        let _ = mm.release_memory(at, 0);
        return Err(status_of(&e));
    }
    Ok(())
}

/// `MEM_COMMIT` inside an existing allocation: `[lo, hi)` page aligned.
fn commit(
    mm: &mut MemoryManager,
    lo: u64,
    hi: u64,
    protection: Protection,
    modifiers: u32,
) -> NtResult<(u64, u64)> {
    let info = allocation_at(mm, lo).ok_or(NtStatus::CONFLICTING_ADDRESSES)?;
    if hi > allocation_end(&info) {
        return Err(NtStatus::CONFLICTING_ADDRESSES);
    }
    match info.kind {
        RegionKind::Private => {}
        RegionKind::FileView | RegionKind::Image => return Err(NtStatus::ALREADY_COMMITTED),
        RegionKind::PagefileView => {
            if modifiers != 0 {
                return Err(NtStatus::INVALID_PAGE_PROTECTION);
            }
            if !within_view(protection, info.initial_permissions) {
                return Err(NtStatus::SECTION_PROTECTION);
            }
        }
        RegionKind::Mmio | RegionKind::Free => return Err(NtStatus::CONFLICTING_ADDRESSES),
    }
    mm.commit_memory(lo, hi - lo, protection).map_err(|e| status_of(&e))?;
    Ok((lo, hi - lo))
}

/// `MEM_RESET`: checks the range, changes nothing.
fn reset(mm: &MemoryManager, base: u64, size: u64) -> NtResult<(u64, u64)> {
    let end = explicit_end(base, size, NtStatus::INVALID_PARAMETER_2, NtStatus::INVALID_PARAMETER_4)?;
    let (lo, hi) = (page_down(base), page_up(end).ok_or(NtStatus::INVALID_PARAMETER_4)?);
    let info = allocation_at(mm, lo).ok_or(NtStatus::CONFLICTING_ADDRESSES)?;
    if hi > allocation_end(&info) || info.kind == RegionKind::Mmio {
        return Err(NtStatus::CONFLICTING_ADDRESSES);
    }
    Ok((lo, hi - lo))
}

// ---------------------------------------------------------------------- free

/// `NtFreeVirtualMemory(NtCurrentProcess(), base, size, free_type)`:
/// decommit or release private memory (docs/windows-semantics.md §6).
///
/// **Validation**, in this order:
/// 1. `free_type` must be exactly `MEM_DECOMMIT` or `MEM_RELEASE` (not 0,
///    not `MEM_FREE`, not both, no placeholder modifiers) →
///    `STATUS_INVALID_PARAMETER_4` \[W\]\[R\], checked before the address \[R\].
/// 2. `*base` past [`MAX_ALLOCATION_ADDRESS`] → `STATUS_INVALID_PARAMETER_2`;
///    `*base + *size` overflowing or past [`USER_SPACE_END`] →
///    `STATUS_INVALID_PARAMETER_3` \[R\].
/// 3. No allocation contains `PAGE_DOWN(*base)` →
///    `STATUS_MEMORY_NOT_ALLOCATED` \[W\].
/// 4. The allocation is a section view (kind `FileView`, `PagefileView`,
///    `Image`) → `STATUS_UNABLE_TO_DELETE_SECTION` \[R\] (Win32 87 \[W\]); views
///    are unmapped ([`nt_unmap_view_of_section`](super::nt_unmap_view_of_section)),
///    not freed. MMIO regions answer the same (NT refuses
///    device-memory VADs the same way \[R\]); the emulator removes them with
///    [`MemoryManager::release_memory`].
/// 5. `*size == 0` and `PAGE_DOWN(*base)` is not the allocation base →
///    `STATUS_FREE_VM_NOT_AT_BASE` \[W\]; any address in the first page works.
/// 6. `*size != 0` and `PAGE_UP(*base + *size)` is past the allocation's end
///    → `STATUS_UNABLE_TO_FREE_VM` \[W\].
///
/// **What it does:**
/// * `*size == 0`: the whole allocation. `MEM_DECOMMIT` makes every page
///   reserved (bytes dropped) and writes back `*base` = the allocation base,
///   `*size` = 0 (Windows 10 1803+ \[W\]); `MEM_RELEASE` frees it and writes
///   back the base and the allocation's length \[W\].
/// * `*size != 0`: the pages touched by `[*base, *base + *size)`.
///   `MEM_DECOMMIT` makes them reserved (reserved pages in the range are
///   fine \[W\]); `MEM_RELEASE` frees them and splits the allocation: what
///   remains below and above become separate allocations, the upper one
///   based at the range end \[W\]. Writes back `PAGE_DOWN(*base)` and the
///   rounded length \[W\].
///
/// On failure `*base` and `*size` are unchanged \[W\].
///
/// Time: O(log allocations + page-table leaves touched + dirty pages dropped).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let (mut a, mut size) = (0, 0x10000);
/// nt_allocate_virtual_memory(&mut mm, &mut a, 0, &mut size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
/// let (mut base, mut size) = (a + 0x1001, 0);
/// assert_eq!(nt_free_virtual_memory(&mut mm, &mut base, &mut size, MEM_RELEASE), NtStatus::FREE_VM_NOT_AT_BASE);
/// let (mut base, mut size) = (a + 0xFFF, 0);
/// assert_eq!(nt_free_virtual_memory(&mut mm, &mut base, &mut size, MEM_RELEASE), NtStatus::SUCCESS);
/// assert_eq!((base, size), (a, 0x10000));
/// ```
pub fn nt_free_virtual_memory(
    mm: &mut MemoryManager,
    base: &mut u64,
    size: &mut u64,
    free_type: u32,
) -> NtStatus {
    match free(mm, *base, *size, free_type) {
        Ok((start, length)) => {
            *base = start;
            *size = length;
            NtStatus::SUCCESS
        }
        Err(status) => status,
    }
}

fn free(mm: &mut MemoryManager, base: u64, size: u64, free_type: u32) -> NtResult<(u64, u64)> {
    let decommit = match free_type {
        MEM_DECOMMIT => true,
        MEM_RELEASE => false,
        _ => return Err(NtStatus::INVALID_PARAMETER_4),
    };
    let end = explicit_end(base, size, NtStatus::INVALID_PARAMETER_2, NtStatus::INVALID_PARAMETER_3)?;
    let lo = page_down(base);
    let info = allocation_at(mm, lo).ok_or(NtStatus::MEMORY_NOT_ALLOCATED)?;
    if is_view(info.kind) || info.kind == RegionKind::Mmio {
        return Err(NtStatus::UNABLE_TO_DELETE_SECTION);
    }
    let (alloc_base, alloc_length) = (info.allocation_base, info.allocation_length);
    let engine = |e: MemoryError| status_of(&e);
    if size == 0 {
        if lo != alloc_base {
            return Err(NtStatus::FREE_VM_NOT_AT_BASE);
        }
        return if decommit {
            mm.decommit_memory(alloc_base, alloc_length).map_err(engine)?;
            Ok((alloc_base, 0))
        } else {
            mm.release_memory(alloc_base, 0).map_err(engine)?;
            Ok((alloc_base, alloc_length))
        };
    }
    // `end <= USER_SPACE_END`, which is page aligned: rounding up cannot overflow.
    let hi = page_up(end).ok_or(NtStatus::INVALID_PARAMETER_3)?;
    if hi > allocation_end(&info) {
        return Err(NtStatus::UNABLE_TO_FREE_VM);
    }
    if decommit {
        mm.decommit_memory(lo, hi - lo).map_err(engine)?;
    } else {
        mm.release_memory(lo, hi - lo).map_err(engine)?;
    }
    Ok((lo, hi - lo))
}

// ------------------------------------------------------------------- protect

/// `NtProtectVirtualMemory(NtCurrentProcess(), base, size, new_protect,
/// old_protect)`: change the protection of committed pages
/// (docs/windows-semantics.md §7).
///
/// **Validation**, in this order:
/// 1. An invalid `new_protect` (§5) → `STATUS_INVALID_PAGE_PROTECTION`
///    \[W\]; checked before the address \[R\]. `PAGE_WRITECOPY` and
///    `PAGE_EXECUTE_WRITECOPY` answer the same \[W\] unless `*base` lies in
///    a data view (`FileView`, `PagefileView`), where they are allowed when
///    the view is readable (§5, §11 \[W\]).
/// 2. `*base` past [`MAX_ALLOCATION_ADDRESS`] → `STATUS_INVALID_PARAMETER_2`;
///    `*base + *size` overflowing or past [`USER_SPACE_END`], or an empty
///    range (size 0 at a page-aligned address) → `STATUS_INVALID_PARAMETER_3`.
/// 3. The range `[PAGE_DOWN(base), PAGE_UP(base + size))` must lie inside one
///    allocation: a free address or a range crossing an allocation's end →
///    `STATUS_CONFLICTING_ADDRESSES` \[R\]\[W\]. MMIO regions, whose protection
///    is fixed, answer the same (NT refuses device-memory VADs so \[R\]).
/// 4. In a data view (`FileView`, `PagefileView`): `PAGE_NOCACHE` /
///    `PAGE_WRITECOMBINE` → `STATUS_INVALID_PARAMETER_4` \[R\]; access beyond
///    the view's maximum (the protection it was mapped with; write-copy needs
///    read access only) → `STATUS_SECTION_PROTECTION` (Win32 87 \[W\]; Wine
///    answers `STATUS_INVALID_PAGE_PROTECTION` \[I\], and this face keeps one
///    status for every excess over a view's or section's maximum, see
///    [`nt_allocate_virtual_memory`]).
/// 5. Every page must be committed → else `STATUS_NOT_COMMITTED` \[W\].
///
/// **On success** every page takes `new_protect`, bytes, state and
/// AllocationProtect unchanged \[W\]; `*old_protect` is the protection of the
/// **first** page, `PAGE_GUARD` and the allocation's cache modifier included
/// \[W\]; `*base` and `*size` get the rounded range \[W\]. On private memory
/// `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` in `new_protect` are ignored: they
/// are per-allocation attributes on modern Windows (§9), so an allocation
/// made with `PAGE_NOCACHE` keeps reporting it and one made without never
/// does. A write-copy page of a view becomes writable (a private copy) when
/// the guest writes it \[W\] (§11).
///
/// **On failure** `*old_protect` = `PAGE_NOACCESS` \[W\], and nothing else
/// changes.
///
/// Time: O(log allocations + page-table leaves touched).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let (mut a, mut size) = (0, 0x10000);
/// nt_allocate_virtual_memory(&mut mm, &mut a, 0, &mut size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
/// let (mut base, mut size, mut old) = (a + 1, 1, 0);
/// let status = nt_protect_virtual_memory(&mut mm, &mut base, &mut size, PAGE_READWRITE | PAGE_GUARD, &mut old);
/// assert_eq!(status, NtStatus::SUCCESS);
/// assert_eq!((base, size, old), (a, 0x1000, PAGE_READWRITE));
/// ```
pub fn nt_protect_virtual_memory(
    mm: &mut MemoryManager,
    base: &mut u64,
    size: &mut u64,
    new_protect: u32,
    old_protect: &mut u32,
) -> NtStatus {
    match protect(mm, *base, *size, new_protect) {
        Ok((start, length, old)) => {
            *base = start;
            *size = length;
            *old_protect = old;
            NtStatus::SUCCESS
        }
        Err(status) => {
            *old_protect = PAGE_NOACCESS;
            status
        }
    }
}

fn protect(mm: &mut MemoryManager, base: u64, size: u64, new_protect: u32) -> NtResult<(u64, u64, u32)> {
    let (mut protection, modifiers) = view_protection_from_page(new_protect)?;
    let kind = kind_at(mm, base);
    if protection.contains(Protection::WRITE_COPY) && !is_data_view(kind) && kind != RegionKind::Image {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    let end = explicit_end(base, size, NtStatus::INVALID_PARAMETER_2, NtStatus::INVALID_PARAMETER_3)?;
    let lo = page_down(base);
    let hi = page_up(end).ok_or(NtStatus::INVALID_PARAMETER_3)?;
    if hi == lo {
        return Err(NtStatus::INVALID_PARAMETER_3);
    }
    let info = allocation_at(mm, lo).ok_or(NtStatus::CONFLICTING_ADDRESSES)?;
    if hi > allocation_end(&info) {
        return Err(NtStatus::CONFLICTING_ADDRESSES);
    }
    match info.kind {
        RegionKind::Mmio | RegionKind::Free => return Err(NtStatus::CONFLICTING_ADDRESSES),
        RegionKind::FileView | RegionKind::PagefileView => {
            if modifiers != 0 {
                return Err(NtStatus::INVALID_PARAMETER_4);
            }
            if !within_view(protection, info.initial_permissions) {
                return Err(NtStatus::SECTION_PROTECTION);
            }
        }
        // §11: on image views, read-write requests become write-copy (the
        // image's pages stay private copies of the file).
        RegionKind::Image if protection.contains(Protection::WRITE) => {
            protection = (protection - Protection::WRITE) | Protection::WRITE_COPY;
        }
        // Cache modifiers are the allocation's (§9): ignored here.
        RegionKind::Private | RegionKind::Image => {}
    }
    let old = mm.protect_memory(lo, hi - lo, protection).map_err(|e| status_of(&e))?;
    Ok((lo, hi - lo, page_from_protection(old, info.attributes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bits_limits() {
        assert_eq!(zero_bits_limit(0), Ok(USER_SPACE_END));
        assert_eq!(zero_bits_limit(1), Ok(0x8000_0000));
        assert_eq!(zero_bits_limit(15), Ok(0x2_0000));
        assert_eq!(zero_bits_limit(21), Ok(0x800));
        for z in 22..=31 {
            assert_eq!(zero_bits_limit(z), Err(NtStatus::INVALID_PARAMETER_3));
        }
        // Masks: only the leading zero bits count.
        assert_eq!(zero_bits_limit(0x1aaa_aaaa), Ok(0x2000_0000));
        assert_eq!(zero_bits_limit(0x3fff_ffff), Ok(0x4000_0000));
        assert_eq!(zero_bits_limit(32), Ok(64));
        assert_eq!(zero_bits_limit(0x7FFF_FFFF_FFFF), Ok(0x8000_0000_0000));
        assert_eq!(zero_bits_limit(u64::MAX), Ok(u64::MAX));
    }

    #[test]
    fn view_maximum() {
        assert!(within_view(Protection::READ, Protection::READ_WRITE));
        assert!(within_view(Protection::READ_WRITE | Protection::GUARD, Protection::READ_WRITE));
        assert!(within_view(Protection::empty(), Protection::READ));
        assert!(!within_view(Protection::READ_WRITE, Protection::READ));
        assert!(!within_view(Protection::READ_EXECUTE, Protection::READ_WRITE));
        let wc = Protection::READ | Protection::WRITE_COPY;
        assert!(within_view(wc, Protection::READ));
        assert!(within_view(wc, Protection::READ_WRITE));
        assert!(within_view(wc | Protection::EXECUTE, Protection::READ_EXECUTE));
        assert!(!within_view(wc | Protection::EXECUTE, Protection::READ_WRITE));
        assert!(!within_view(wc, Protection::EXECUTE));
        assert!(within_view(Protection::READ, wc));
        assert!(!within_view(Protection::READ_WRITE, wc));
        assert!(within_view(wc | Protection::GUARD, wc));
    }
}
