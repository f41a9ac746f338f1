//! # vmsnap — a Windows address space with O(1) snapshots
//!
//! `vmsnap` is the memory of a Windows user-mode emulator: an address space
//! with reserve/commit, 64 KiB allocation granularity, page protections with
//! guard pages, `VirtualQuery`-style region queries and MMIO ranges — whose
//! pages and region map live in persistent copy-on-write structures, so taking
//! a snapshot and returning to any earlier one cost O(what changed), not
//! O(memory size).
//!
//! ```
//! use vmsnap::{MemoryManager, Protection, RegionKind};
//!
//! let mut mm = MemoryManager::new();
//! // Reserve 1 MiB anywhere, then commit its first two pages.
//! let base = mm.allocate_memory(0x10_0000, Protection::READ_WRITE, true, 0, RegionKind::Private)?;
//! mm.commit_memory(base, 0x2000, Protection::READ_WRITE)?;
//! mm.write_memory(base + 0x10, b"hello")?;
//!
//! let before = mm.snapshot();                       // O(pages written since the last one)
//! mm.write_memory(base + 0x10, b"HELLO")?;
//! mm.restore(&before);                              // O(pages written since then)
//!
//! let mut buf = [0u8; 5];
//! mm.read_memory(base + 0x10, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), vmsnap::MemoryError>(())
//! ```
//!
//! ## The model
//!
//! **Allocations.** An allocation (a VAD, in NT terms) is a page-aligned range
//! created by [`MemoryManager::allocate_memory_at`] /
//! [`allocate_memory`](MemoryManager::allocate_memory) at a 64 KiB-aligned
//! base, with a kind ([`RegionKind`]) and the protection it was created with.
//! Allocations never overlap. Commit, decommit and protect act on pages inside
//! *one* allocation; a range that crosses an allocation boundary is an error,
//! as on Windows. A non-zero [`release_memory`](MemoryManager::release_memory)
//! splits an allocation as `NtFreeVirtualMemory` does.
//!
//! **Pages.** Every page of an allocation is reserved or committed; committed
//! pages have a [`Protection`] and bytes. Newly committed pages read as zeros;
//! re-committing keeps the bytes and applies the new protection; decommitting
//! drops the bytes.
//!
//! **Regions.** [`MemoryManager::region_info`] answers like `VirtualQuery`: the
//! run of pages starting at an address that share state, protection and
//! allocation.
//!
//! **Two views of memory.** The *host* view ([`read_memory`](MemoryManager::read_memory),
//! [`write_memory`](MemoryManager::write_memory)) is the emulator's: it ignores
//! protection but needs committed pages. The *guest* view
//! ([`guest_read`](MemoryManager::guest_read), [`guest_write`](MemoryManager::guest_write),
//! [`guest_fetch`](MemoryManager::guest_fetch)) is the emulated program's: it
//! enforces read, write and execute and fires guard pages once, as Windows does.
//!
//! **Versions.** [`MemoryManager::snapshot`] freezes the live state into an
//! immutable [`Snapshot`] (`Clone + Send + Sync`) and
//! [`MemoryManager::restore`] returns to any snapshot, on any branch. A
//! [`Timeline`] names snapshots and links them into a tree (restoring an old
//! one and going on starts a branch); [`Snapshot::diff`] and
//! [`MemoryManager::diff_from`] report what changed between two versions —
//! allocations, page states, pages and the byte ranges inside them — at a cost
//! that follows the change, not the memory size.
//!
//! **Sections and images.** [`MemoryManager::create_section`] and
//! [`MemoryManager::map_view_of_section`] give pagefile-backed sections whose
//! views all show the same bytes (across snapshots too);
//! [`image::map_image`] maps PE32+/PE32 files with per-section protections and
//! relocations.
//!
//! **Windows system calls.** [`nt`] maps `NtAllocateVirtualMemory`,
//! `NtFreeVirtualMemory`, `NtProtectVirtualMemory`, `NtQueryVirtualMemory`
//! and the section calls (`NtCreateSection`, `NtMapViewOfSection`,
//! `NtUnmapViewOfSection`, closing the handle) onto the engine with Windows'
//! rounding rules, statuses and write-backs.
//!
//! ## The design
//!
//! ```text
//!   MemoryManager (live)                       Snapshot (frozen, shared)
//!   ┌────────────────────────────┐             ┌──────────────────────────┐
//!   │ regions: imbl::OrdMap      │──clone O(1)─►│ regions                  │
//!   │ pages:  LivePages          │             │ pages: PageTable         │
//!   │   TLB (512 entries)        │             └────────────┬─────────────┘
//!   │   overlay: page → buffer   │  freeze: O(dirty)        │ shares nodes
//!   │   table: PageTable ────────┼──────────────────────────┘ and pages
//!   └────────────────────────────┘
//! ```
//!
//! * The **page table** (`page_table/`) is a persistent 64-way radix trie
//!   over the page number (6 levels): each leaf holds 64 one-byte page states,
//!   64 pointers to page records and the pages' byte addresses. Cloning it is
//!   one atomic increment; versions share every untouched node and page.
//!   Every table of a lineage shares one *store*: dense 32-byte page records
//!   (bytes, cached fingerprint, reference count), with every node's and
//!   page's reference count a plain integer changed only under the store's
//!   lock, once per batch. So copying a node costs a memcpy and non-atomic
//!   increments in a few dense lines, not 64 atomic operations in scattered
//!   cold lines; readers never lock.
//! * The live version's **written pages** sit in a flat mutable overlay
//!   (`live.rs`): the first write to a page after a snapshot or restore copies
//!   it into a heap buffer, and every later write goes straight there, with
//!   no path copy. `snapshot()` freezes the overlay in one batch: pages
//!   sorted, each touched node copied once, each buffer handed to the table
//!   as its frozen page (no copy, no hashing: fingerprints are computed when
//!   first needed). `restore()` drops the overlay, keeping its buffers for
//!   the next cycle. Both cost O(pages written), which is what a fuzzer's
//!   dirty-page reset costs too.
//! * A small **software TLB** maps recently used page numbers to their bytes,
//!   so a hot 8-byte read is a compare and a copy.
//! * The **region map** (`region_map.rs`) is an `imbl::OrdMap` of allocations.
//! * **Snapshot files** ([`file`](mod@file)) store distinct pages once, in 16-page zstd
//!   frames with an index. A lazily opened file ([`file::open_lazy`]) gives
//!   snapshots whose pages are 32-byte records without bytes, filled from
//!   their frame on the first read (one read per frame, also under
//!   concurrency); a page whose frame cannot be read is
//!   [`MemoryError::PageUnavailable`] on every access.
//!
//! Modules, by layer: `address` (page arithmetic) → `protection`, `error` →
//! `page_table` (`store`, `node`, `edit`, `walk`), `region_map` → `live` → `query` (shared by live and frozen
//! versions) → `manager`, `section`, `snapshot`, `diff`, `timeline`, `state`
//! (serialization) → [`file`](mod@file) (snapshot files), [`image`] (PE mapping),
//! [`nt`] (the Windows system-call face).
//!
//! ## Costs
//!
//! Every public method states its cost. In short: a read or write is O(pages
//! touched) with a TLB hit costing a few nanoseconds; layout changes are
//! O(log allocations + page-table leaves touched); `snapshot()` and
//! `restore()` are O(pages written since the last of either), independent of
//! memory size and history length.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod address;
mod diff;
mod error;
pub mod file;
pub mod image;
mod live;
mod manager;
pub mod nt;
mod page_table;
mod protection;
mod query;
mod region_map;
mod snapshot;
mod state;
mod timeline;

pub use address::{granule_down, granule_up, page_down, page_up};
pub use diff::{MemoryDiff, PageChange, PageChangeKind, RegionChange};
pub use error::{MemoryError, StateError};
pub use manager::{DEFAULT_COMMIT_LIMIT, MemoryManager, SectionId, SectionInfo};
pub use page_table::frozen_pages_alive;
pub use protection::{Access, Protection, RegionKind};
pub use query::{AddressSpace, MemoryStats, RegionInfo, ReservedRegion, SpaceView};
pub use snapshot::Snapshot;
pub use state::STATE_FORMAT_VERSION;
pub use timeline::{SnapshotId, Timeline, TimelineEntry, TimelineError, VersionMemory};

/// Size of a page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Allocation granularity: every allocation base is a multiple of 64 KiB.
pub const ALLOCATION_GRANULARITY: u64 = 0x10000;
/// The lowest address an allocation may start at (the first 64 KiB, NULL
/// included, is never allocated).
pub const MIN_ALLOCATION_ADDRESS: u64 = 0x10000;
/// The last usable byte of user space (inclusive).
pub const MAX_ALLOCATION_ADDRESS: u64 = 0x7FFF_FFFE_FFFF;
/// The exclusive end of user space.
pub const USER_SPACE_END: u64 = 0x7FFF_FFFF_0000;
/// Where 64-bit processes start searching for free memory.
pub const DEFAULT_ALLOCATION_ADDRESS_64BIT: u64 = 0x1_0000_0000;
/// Where 32-bit processes start searching for free memory.
pub const DEFAULT_ALLOCATION_ADDRESS_32BIT: u64 = 0x10000;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn thread_bounds() {
        assert_send::<MemoryManager>();
        assert_send_sync::<Snapshot>();
    }
}
