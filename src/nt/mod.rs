//! # `vmsnap::nt` — the Windows system-call face
//!
//! The `Nt*` virtual-memory calls of a Windows user-mode process, as a thin
//! layer over the public [`MemoryManager`](crate::MemoryManager) API: the
//! engine does the work; this module translates `PAGE_*` / `MEM_*` values,
//! rounds ranges as Windows does, validates arguments in Windows' order,
//! returns Windows' [`NtStatus`] for every failure, and writes the in/out
//! base and size back exactly when Windows would.
//!
//! It follows real Windows as `docs/windows-semantics.md` records it; each rule
//! in the docs carries that document's evidence tag: **\[W\]** asserted by a
//! Wine conformance test run against Windows, **\[D\]** Microsoft
//! documentation, **\[R\]** ReactOS, **\[I\]** Wine's implementation. Where the
//! sources disagree, the strongest evidence wins (\[W\] over \[R\] over \[I\]).
//!
//! | call | Windows | what it does |
//! |---|---|---|
//! | [`nt_allocate_virtual_memory`] | `NtAllocateVirtualMemory` | reserve / commit / reset (§3, §4) |
//! | [`nt_free_virtual_memory`] | `NtFreeVirtualMemory` | decommit / release, partial release splits (§6) |
//! | [`nt_protect_virtual_memory`] | `NtProtectVirtualMemory` | change protection, return the first page's old one (§7) |
//! | [`nt_query_virtual_memory`] | `NtQueryVirtualMemory(MemoryBasicInformation)` | [`MemoryBasicInformation`] (§8) |
//! | [`nt_create_section`] | `NtCreateSection` (pagefile-backed) | a [`SectionHandle`], `SEC_COMMIT` or `SEC_RESERVE` (§11) |
//! | [`nt_map_view_of_section`] | `NtMapViewOfSection` | a `MEM_MAPPED` view; every view of a section shows the same bytes (§11) |
//! | [`nt_unmap_view_of_section`] | `NtUnmapViewOfSection` | unmap the view containing an address (§11) |
//! | [`nt_close_section`] | `NtClose` (section handle) | close the handle; views stay mapped (§11) |
//! | [`protection_from_page`] / [`view_protection_from_page`] / [`page_from_protection`] | — | `PAGE_*` ↔ [`Protection`](crate::Protection) (§5, §9, §11) |
//! | [`nt_status_to_dos_error`] | `RtlNtStatusToDosError` | the Win32 error of a status (§1.6) |
//! | [`exception_code`] | — | the exception a refused guest access raises (§9, §10) |
//!
//! The process is always the current one, so the process handle argument
//! (and its `STATUS_INVALID_HANDLE`) is absent; Rust references cannot be
//! NULL, so the NULL-pointer cases (`STATUS_ACCESS_VIOLATION`) cannot arise.
//! Section handles are [`SectionHandle`] values; a closed one gives
//! `STATUS_INVALID_HANDLE`.
//!
//! ```
//! use vmsnap::MemoryManager;
//! use vmsnap::nt::*;
//!
//! let mut mm = MemoryManager::new();
//! // VirtualAlloc(NULL, 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
//! let (mut base, mut size) = (0u64, 0x3000u64);
//! let status = nt_allocate_virtual_memory(&mut mm, &mut base, 0, &mut size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
//! assert_eq!(status, NtStatus::SUCCESS);
//!
//! // VirtualProtect(base + 0x1000, 1, PAGE_READONLY, &old)
//! let (mut at, mut len, mut old) = (base + 0x1000, 1, 0);
//! assert!(nt_protect_virtual_memory(&mut mm, &mut at, &mut len, PAGE_READONLY, &mut old).is_success());
//! assert_eq!(old, PAGE_READWRITE);
//!
//! // VirtualQuery(base + 0x1234)
//! let mbi = nt_query_virtual_memory(&mm, base + 0x1234)?;
//! assert_eq!((mbi.base_address, mbi.region_size, mbi.protect), (base + 0x1000, 0x1000, PAGE_READONLY));
//!
//! // VirtualFree(base + 0x1000, 0, MEM_RELEASE) fails: not the allocation base.
//! let (mut at, mut len) = (base + 0x1000, 0);
//! let status = nt_free_virtual_memory(&mut mm, &mut at, &mut len, MEM_RELEASE);
//! assert_eq!(status, NtStatus::FREE_VM_NOT_AT_BASE);
//! assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_ADDRESS);
//! # Ok::<(), NtStatus>(())
//! ```
//!
//! ## Cache modifiers
//!
//! `PAGE_NOCACHE` and `PAGE_WRITECOMBINE` are per-allocation attributes on
//! modern Windows (§9 \[W\]). The allocation call stores them with
//! [`MemoryManager::set_allocation_attributes`](crate::MemoryManager::set_allocation_attributes)
//! (the attribute value is the `PAGE_*` modifier bit); queries report them in
//! `AllocationProtect` and in the `Protect` of every accessible committed
//! page; protection changes and later commits neither add nor remove them.
//!
//! ## Sections and views
//!
//! A pagefile-backed section ([`nt_create_section`]) holds bytes that every
//! view of it ([`nt_map_view_of_section`]) shows, whichever view writes them
//! and across `snapshot()` / `restore()`. Commit state belongs to the
//! section, protection to the view (§11 \[W\]):
//!
//! * `NtAllocateVirtualMemory(MEM_COMMIT)` inside a view commits the
//!   section's pages — a second view shows them committed with its own
//!   protection; the committing view gets the requested one;
//! * a view's protection is its maximum: protection changes and commits
//!   through it may not ask for more (`STATUS_SECTION_PROTECTION`, Win32 87);
//! * `PAGE_WRITECOPY` / `PAGE_EXECUTE_WRITECOPY` are accepted by views
//!   (mapping, protecting, committing) when they are readable, and still
//!   refused for private memory (§5). A guest write to a write-copy page
//!   gives the view its own copy of that page, now `PAGE_READWRITE` /
//!   `PAGE_EXECUTE_READWRITE`, and splits the region;
//! * views cannot be decommitted or freed (`STATUS_UNABLE_TO_DELETE_SECTION`);
//!   [`nt_unmap_view_of_section`] unmaps one from any address inside it;
//! * queries report views as `MEM_MAPPED`, AllocationProtect = the `PAGE_*`
//!   value the view was mapped with.
//!
//! ```
//! use vmsnap::MemoryManager;
//! use vmsnap::nt::*;
//!
//! let mut mm = MemoryManager::new();
//! let section = nt_create_section(&mut mm, 0x20000, PAGE_READWRITE, SEC_RESERVE)?;
//! let (mut a, mut a_size, mut b, mut b_size) = (0, 0, 0, 0);
//! nt_map_view_of_section(&mut mm, section, &mut a, 0, &mut a_size, PAGE_READWRITE);
//! nt_map_view_of_section(&mut mm, section, &mut b, 0, &mut b_size, PAGE_READWRITE);
//! // VirtualAlloc(a, 0x10000, MEM_COMMIT, PAGE_READONLY)
//! let (mut at, mut len) = (a, 0x10000);
//! assert!(nt_allocate_virtual_memory(&mut mm, &mut at, 0, &mut len, MEM_COMMIT, PAGE_READONLY).is_success());
//! let (qa, qb) = (nt_query_virtual_memory(&mm, a)?, nt_query_virtual_memory(&mm, b)?);
//! assert_eq!((qa.state, qa.protect, qa.region_size), (MEM_COMMIT, PAGE_READONLY, 0x10000));
//! assert_eq!((qb.state, qb.protect, qb.region_size), (MEM_COMMIT, PAGE_READWRITE, 0x10000));
//! assert_eq!((qb.type_, qb.allocation_base, qb.allocation_protect), (MEM_MAPPED, b, PAGE_READWRITE));
//! // Views are unmapped, not freed.
//! let (mut at, mut len) = (a, 0x10000);
//! assert_eq!(nt_free_virtual_memory(&mut mm, &mut at, &mut len, MEM_DECOMMIT), NtStatus::UNABLE_TO_DELETE_SECTION);
//! assert_eq!(nt_unmap_view_of_section(&mut mm, a + 0x1064), NtStatus::SUCCESS);
//! # Ok::<(), NtStatus>(())
//! ```
//!
//! ## What is not modelled here
//!
//! File-backed sections (`SEC_FILE`) and image sections (`SEC_IMAGE`: see
//! [`crate::image`]); `SEC_NOCACHE`, `SEC_WRITECOMBINE` and large-page
//! sections; write watches (`MEM_WRITE_WATCH` is accepted and ignored); AWE
//! (`MEM_PHYSICAL`); large pages; placeholders.

#![deny(missing_docs)]

mod constants;
mod protection;
mod query;
mod section;
mod status;
mod virtual_memory;

pub use constants::*;
pub use protection::{
    is_valid_page_protection, page_from_protection, protection_from_page, view_protection_from_page,
};
pub use query::{MemoryBasicInformation, nt_query_virtual_memory};
pub use section::{
    SectionHandle, nt_close_section, nt_create_section, nt_map_view_of_section, nt_unmap_view_of_section,
};
pub use status::{
    ERROR_ACCESS_DENIED, ERROR_BAD_LENGTH, ERROR_COMMITMENT_LIMIT, ERROR_IMAGE_NOT_AT_BASE,
    ERROR_INVALID_ADDRESS, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, ERROR_MAPPED_ALIGNMENT,
    ERROR_MR_MID_NOT_FOUND, ERROR_NOACCESS, ERROR_NOT_ENOUGH_MEMORY, ERROR_NOT_SUPPORTED, ERROR_PARTIAL_COPY,
    ERROR_PRIVILEGE_NOT_HELD, ERROR_SUCCESS, ERROR_SWAPERROR, NtStatus, exception_code,
    nt_status_to_dos_error,
};
pub use virtual_memory::{nt_allocate_virtual_memory, nt_free_virtual_memory, nt_protect_virtual_memory};
