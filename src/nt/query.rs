//! `NtQueryVirtualMemory(MemoryBasicInformation)` and the x64
//! `MEMORY_BASIC_INFORMATION` it fills (docs/windows-semantics.md §8).

use super::constants::*;
use super::protection::page_from_protection;
use super::status::NtStatus;
use crate::{MemoryManager, RegionInfo, RegionKind, USER_SPACE_END};

/// The x64 `MEMORY_BASIC_INFORMATION`, byte for byte (48 bytes, `repr(C)`):
///
/// ```text
///  offset  0  base_address        u64   PAGE_DOWN(queried address)
///          8  allocation_base     u64   0 when free
///         16  allocation_protect  u32   flProtect at creation, modifiers included; 0 when free
///         20  partition_id        u16   always 0
///         22  (padding)           2 bytes
///         24  region_size         u64   bytes from base_address with the same attributes
///         32  state               u32   MEM_COMMIT / MEM_RESERVE / MEM_FREE
///         36  protect             u32   current protection; 0 when reserved; PAGE_NOACCESS when free
///         40  type_               u32   MEM_PRIVATE / MEM_MAPPED / MEM_IMAGE; 0 when free
///         44  (padding)           4 bytes
/// ```
///
/// It can be copied into guest memory as the bytes of a little-endian x64
/// structure (with the padding zeroed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemoryBasicInformation {
    /// `BaseAddress`: the queried address rounded down to its page.
    pub base_address: u64,
    /// `AllocationBase`: the base of the allocation, 0 for free memory.
    pub allocation_base: u64,
    /// `AllocationProtect`: the protection the allocation was created with,
    /// `PAGE_GUARD` / `PAGE_NOCACHE` included; 0 for free memory.
    pub allocation_protect: u32,
    /// `PartitionId`: always 0.
    pub partition_id: u16,
    /// `RegionSize`: from `base_address` to the first page that differs in
    /// state, protection (modifiers included), type or allocation.
    pub region_size: u64,
    /// `State`: `MEM_COMMIT`, `MEM_RESERVE` or `MEM_FREE`.
    pub state: u32,
    /// `Protect`: the current protection of committed pages (modifiers
    /// included), 0 for reserved pages, `PAGE_NOACCESS` for free memory.
    pub protect: u32,
    /// `Type`: `MEM_PRIVATE`, `MEM_MAPPED` or `MEM_IMAGE`; 0 for free memory.
    pub type_: u32,
}

const _: () = assert!(std::mem::size_of::<MemoryBasicInformation>() == 48);

impl From<RegionInfo> for MemoryBasicInformation {
    /// What Windows reports for the region `info` describes (§8):
    ///
    /// * free: `MEM_FREE`, `Protect` = `PAGE_NOACCESS`, `AllocationBase`,
    ///   `AllocationProtect` and `Type` 0 \[W\];
    /// * reserved: `MEM_RESERVE`, `Protect` = 0 \[W\];
    /// * committed: `MEM_COMMIT`, `Protect` = the page's protection with
    ///   `PAGE_GUARD` and the allocation's cache modifier \[W\] (see
    ///   [`page_from_protection`](super::page_from_protection));
    /// * `AllocationProtect`: the protection the allocation was created
    ///   with; for a section view, the `PAGE_*` value it was mapped with
    ///   (`PAGE_WRITECOPY` / `PAGE_EXECUTE_WRITECOPY` included) \[W\];
    /// * `Type`: `MEM_PRIVATE` for private memory, `MEM_MAPPED` for
    ///   `FileView` / `PagefileView`, `MEM_IMAGE` for `Image` \[W\]. MMIO
    ///   regions, which Windows has no user-mode equivalent for, report as
    ///   committed private read-write memory.
    ///
    /// `region_size` is `info.length`: the engine already ends a region
    /// where state, protection (guard bit included) or allocation changes,
    /// and within one allocation the reported `Protect` differs exactly
    /// where the page protection does. Works for a [`Snapshot`](crate::Snapshot)'s
    /// `region_info` too. Time: O(1).
    fn from(info: RegionInfo) -> Self {
        if !info.is_reserved {
            return MemoryBasicInformation {
                base_address: info.start,
                region_size: info.length,
                state: MEM_FREE,
                protect: PAGE_NOACCESS,
                ..Default::default()
            };
        }
        let type_ = match info.kind {
            RegionKind::FileView | RegionKind::PagefileView => MEM_MAPPED,
            RegionKind::Image => MEM_IMAGE,
            RegionKind::Private | RegionKind::Mmio | RegionKind::Free => MEM_PRIVATE,
        };
        let (state, protect) = if info.is_committed {
            (MEM_COMMIT, page_from_protection(info.permissions, info.attributes))
        } else {
            (MEM_RESERVE, 0)
        };
        MemoryBasicInformation {
            base_address: info.start,
            allocation_base: info.allocation_base,
            allocation_protect: page_from_protection(info.initial_permissions, info.attributes),
            partition_id: 0,
            region_size: info.length,
            state,
            protect,
            type_,
        }
    }
}

/// `NtQueryVirtualMemory(NtCurrentProcess(), address, MemoryBasicInformation,
/// ...)`: what Windows reports about the pages at `address`
/// (docs/windows-semantics.md §8; the fields are described on
/// [`MemoryBasicInformation`]).
///
/// `address` at or past [`USER_SPACE_END`] → `STATUS_INVALID_PARAMETER`
/// \[I\]\[R\] (Win32 87 \[D\]). Any lower address answers, a free one below
/// `0x10000` (NULL included) with `MEM_FREE` \[I\]. `base_address` is
/// `PAGE_DOWN(address)`, not the region start \[I\]\[D\]; for free memory
/// `region_size` runs to the next allocation or to `USER_SPACE_END` \[D\].
/// The buffer-length rule (`STATUS_INFO_LENGTH_MISMATCH`) belongs to the
/// caller that copies the structure into guest memory.
///
/// Time: O(log allocations + page-table leaves in the region).
///
/// ```
/// use vmsnap::MemoryManager;
/// use vmsnap::nt::*;
/// let mut mm = MemoryManager::new();
/// let (mut a, mut size) = (0, 0x10000);
/// nt_allocate_virtual_memory(&mut mm, &mut a, 0, &mut size, MEM_RESERVE, PAGE_READWRITE | PAGE_NOCACHE);
/// let (mut at, mut len) = (a, 0x1000);
/// nt_allocate_virtual_memory(&mut mm, &mut at, 0, &mut len, MEM_COMMIT, PAGE_READWRITE);
/// let mbi = nt_query_virtual_memory(&mm, a + 0x10)?;
/// assert_eq!((mbi.state, mbi.protect, mbi.allocation_protect), (MEM_COMMIT, 0x204, 0x204));
/// assert_eq!((mbi.base_address, mbi.region_size, mbi.type_), (a, 0x1000, MEM_PRIVATE));
/// let mbi = nt_query_virtual_memory(&mm, a + 0x1000)?;
/// assert_eq!((mbi.state, mbi.protect, mbi.region_size), (MEM_RESERVE, 0, 0xF000));
/// # Ok::<(), NtStatus>(())
/// ```
pub fn nt_query_virtual_memory(mm: &MemoryManager, address: u64) -> Result<MemoryBasicInformation, NtStatus> {
    if address >= USER_SPACE_END {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(MemoryBasicInformation::from(mm.region_info(address)))
}
