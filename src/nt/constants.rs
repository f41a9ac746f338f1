//! Windows' `PAGE_*`, `MEM_*` and `SEC_*` values (docs/windows-semantics.md §1.1–§1.3),
//! as `u32`, exactly as `winnt.h` defines them.

// ------------------------------------------------------------ page protection

/// No access (§1.1). As a query result it is also the `Protect` of free memory.
pub const PAGE_NOACCESS: u32 = 0x01;
/// Read only (§1.1).
pub const PAGE_READONLY: u32 = 0x02;
/// Read and write (§1.1).
pub const PAGE_READWRITE: u32 = 0x04;
/// Copy-on-write (§1.1). Only section views can use it; private memory
/// rejects it with `STATUS_INVALID_PAGE_PROTECTION` (§5).
pub const PAGE_WRITECOPY: u32 = 0x08;
/// Execute only (§1.1); maps to [`Protection::EXECUTE`](crate::Protection::EXECUTE) alone.
pub const PAGE_EXECUTE: u32 = 0x10;
/// Execute and read (§1.1).
pub const PAGE_EXECUTE_READ: u32 = 0x20;
/// Execute, read and write (§1.1).
pub const PAGE_EXECUTE_READWRITE: u32 = 0x40;
/// Execute and copy-on-write (§1.1). Only section views can use it (§5).
pub const PAGE_EXECUTE_WRITECOPY: u32 = 0x80;
/// Guard-page modifier (§1.1, §9): the first access fails once with
/// `STATUS_GUARD_PAGE_VIOLATION` and clears it.
pub const PAGE_GUARD: u32 = 0x100;
/// Non-cached modifier (§1.1). A per-allocation attribute on modern Windows (§9).
pub const PAGE_NOCACHE: u32 = 0x200;
/// Write-combined modifier (§1.1). A per-allocation attribute, like `PAGE_NOCACHE`.
pub const PAGE_WRITECOMBINE: u32 = 0x400;
/// Control-flow-guard modifier `PAGE_TARGETS_INVALID` (§1.1). Like every
/// value of 0x800 or more, this face rejects it (§5).
pub const PAGE_TARGETS_INVALID: u32 = 0x4000_0000;
/// `PAGE_TARGETS_NO_UPDATE`: the same bit as [`PAGE_TARGETS_INVALID`] (§1.1).
pub const PAGE_TARGETS_NO_UPDATE: u32 = 0x4000_0000;

// ------------------------------------------------- allocation, free, state, type

/// Allocation type: commit (§1.2); also the `State` of committed pages.
pub const MEM_COMMIT: u32 = 0x1000;
/// Allocation type: reserve (§1.2); also the `State` of reserved pages.
pub const MEM_RESERVE: u32 = 0x2000;
/// Free type: decommit (§1.2).
pub const MEM_DECOMMIT: u32 = 0x4000;
/// Free type: release (§1.2).
pub const MEM_RELEASE: u32 = 0x8000;
/// `State` of free memory (§1.2). Invalid as a free type.
pub const MEM_FREE: u32 = 0x10000;
/// `Type` of private memory (§1.2).
pub const MEM_PRIVATE: u32 = 0x20000;
/// `Type` of data and pagefile section views (§1.2).
pub const MEM_MAPPED: u32 = 0x40000;
/// Allocation type: reset, used alone (§1.2, §4.4).
pub const MEM_RESET: u32 = 0x80000;
/// Allocation modifier: pick the highest free hole (§1.2, §4.5).
pub const MEM_TOP_DOWN: u32 = 0x100000;
/// Allocation modifier: track writes; needs `MEM_RESERVE` (§1.2).
pub const MEM_WRITE_WATCH: u32 = 0x200000;
/// Allocation modifier: AWE physical memory (§1.2).
pub const MEM_PHYSICAL: u32 = 0x400000;
/// Allocation type `MEM_RESET_UNDO` (§1.2).
pub const MEM_RESET_UNDO: u32 = 0x1000000;
/// `Type` of image views (§1.2), the same value as [`SEC_IMAGE`].
pub const MEM_IMAGE: u32 = 0x1000000;
/// Allocation modifier: large pages (§1.2).
pub const MEM_LARGE_PAGES: u32 = 0x20000000;
/// `AT_ROUND_TO_PAGE`, which `NtAllocateVirtualMemory` rejects (§1.2).
pub const AT_ROUND_TO_PAGE: u32 = 0x40000000;
/// `NtFreeVirtualMemory` placeholder modifier `MEM_COALESCE_PLACEHOLDERS` (§1.2).
pub const MEM_COALESCE_PLACEHOLDERS: u32 = 0x1;
/// `NtFreeVirtualMemory` placeholder modifier `MEM_PRESERVE_PLACEHOLDER` (§1.2).
pub const MEM_PRESERVE_PLACEHOLDER: u32 = 0x2;

// -------------------------------------------------------------------- sections

/// Section attribute: backed by a file (§1.3).
pub const SEC_FILE: u32 = 0x800000;
/// Section attribute: an executable image (§1.3).
pub const SEC_IMAGE: u32 = 0x1000000;
/// Section attribute: views start reserved (§1.3).
pub const SEC_RESERVE: u32 = 0x4000000;
/// Section attribute: views start committed (§1.3).
pub const SEC_COMMIT: u32 = 0x8000000;
/// Section attribute: non-cached (§1.3).
pub const SEC_NOCACHE: u32 = 0x10000000;
/// Section attribute: write-combined (§1.3).
pub const SEC_WRITECOMBINE: u32 = 0x40000000;
/// Section attribute: large pages (§1.3).
pub const SEC_LARGE_PAGES: u32 = 0x80000000;

/// View access `FILE_MAP_COPY` (§1.3).
pub const FILE_MAP_COPY: u32 = 0x1;
/// View access `FILE_MAP_WRITE` (§1.3).
pub const FILE_MAP_WRITE: u32 = 0x2;
/// View access `FILE_MAP_READ` (§1.3).
pub const FILE_MAP_READ: u32 = 0x4;
/// Section access `SECTION_MAP_EXECUTE` (§1.3).
pub const SECTION_MAP_EXECUTE: u32 = 0x8;
/// View access `FILE_MAP_EXECUTE` (§1.3).
pub const FILE_MAP_EXECUTE: u32 = 0x20;
