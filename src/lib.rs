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
//! Three documents in the repository go further than these docs:
//! `docs/design.md` (the layers, and what a write, a snapshot, a restore, a
//! diff, a save and a lazy open do), `docs/windows-semantics.md` (every
//! Windows rule the crate follows, numbered, with the tests that pin it) and
//! `docs/performance.md` (the floors of the machine class, the benches, how
//! to run them, the latest figures).
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
//! Modules, by layer, lowest first (each uses only modules below it;
//! `.ci/layers` checks every `crate::` reference against this list):
//! `protection` → `error` → `address` → `page_table` (`store`, `node`,
//! `edit`, `walk`) → `region_map`, `live` → `state` (the serialization
//! format), `version` (what a version holds) → `query` (the [`SpaceView`]
//! shared by live and frozen versions) → `diff` → `snapshot` → `manager`
//! (`access`, `layout`, `sections`, `state`) → `timeline` →
//! [`file`](mod@file) (snapshot files), [`image`] (PE mapping) → [`nt`] (the
//! Windows system-call face).
//!
//! ## Costs
//!
//! Every public method states its cost. In short: a read or write is O(pages
//! touched) with a TLB hit costing a few nanoseconds; layout changes are
//! O(log allocations + page-table leaves touched); `snapshot()` and
//! `restore()` are O(pages written since the last of either), independent of
//! memory size and history length.
//!
//! ## Trade-offs
//!
//! What vmsnap is bad at, or does not do. The figures are from
//! `docs/performance.md` (2-vCPU virtualized Xeon, ratios to a baseline
//! measured in the same run).
//!
//! * **One writer per manager.** A `MemoryManager` is `Send` but not `Sync`:
//!   writes need `&mut self`, and even reads fill its TLB through `&self`, so
//!   one thread drives it. Parallel work means one manager per thread, each
//!   restored from a shared `Snapshot`; two threads cannot write one address
//!   space.
//! * **Random small accesses cost more than a flat buffer.** A read or write
//!   that misses the 512-entry TLB (2 MiB of pages) walks six page-table
//!   levels: random 1- and 8-byte accesses over 1 GiB take 4.3–5.6× a flat
//!   `Vec<u8>` (a random 8-byte read 175 ns against 38 ns). Sequential small
//!   accesses cost 1.2–1.7×, whole pages up to 1.8×.
//! * **The first write to a page after a snapshot or restore copies the whole
//!   4 KiB page** into the overlay, even to change one byte.
//! * **4 KiB pages only.** No large pages (`MEM_LARGE_PAGES` is refused), and
//!   only the x64 user address space.
//! * **Scattered writes make snapshots dearer.** `snapshot()` copies each
//!   shared page-table node on the written pages' paths once, so a written
//!   page alone in its leaf costs a leaf copy (about 1 KiB) and 64
//!   reference-count increments: 119–275 ns per page for 10 to 1,000 random
//!   pages of 256 MiB, and ten random pages cost 1.2× copying them cold. A
//!   recorder that writes, snapshots and drops old versions in a loop runs at
//!   2.9–5.5× a dirty-page memcpy into a history ring.
//! * **Old versions hold memory until they are dropped.** Every page a live
//!   `Snapshot` or `Timeline` entry references stays allocated; a long
//!   recording must drop or `remove` versions itself. The live overlay also
//!   keeps a pool of page buffers for the next cycle (at least 256 pages).
//! * **Diffs of unrelated versions walk leaves.** A child against its parent
//!   reads a change log (20,000× faster than comparing every byte at 1,000
//!   changed pages of 1 GiB); two versions with no such link walk their page
//!   tables, 0.27–0.37 ms for 1,000 pages in 1,000 leaves (338–560×).
//! * **The file format is vmsnap's own** (`snapshots-format/FORMAT.md`), not a
//!   core dump, CRIU or Firecracker format. It favours random access (16-page
//!   zstd level-3 frames) over size: heap-like pages compress 3.54×, where
//!   one zstd level-8 frame of everything reaches 3.98×. One core saves
//!   142 MiB/s and loads 421 MiB/s of such pages. `save` builds the file in
//!   memory before writing it and `load` reads the whole file; a file holds at
//!   most 2^24 distinct pages (64 GiB) and 2^20 snapshots. MMIO regions are
//!   saved as layout only, without their handlers: they load unbound (an
//!   access fails until the owner binds handlers again). The first reads of
//!   one lazily opened file are serialized, one frame at a time.
//! * **Windows semantics only.** Reserve/commit, 64 KiB granularity and
//!   `PAGE_*` protections; no Linux `mmap` / `mprotect` model, no file-backed
//!   sections, no write watching, no `NtAllocateVirtualMemoryEx`.

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
mod version;

pub use address::{granule_down, granule_up, page_down, page_up};
pub use diff::{MemoryDiff, PageChange, PageChangeKind, RegionChange};
pub use error::{MemoryError, StateError};
pub use manager::{DEFAULT_COMMIT_LIMIT, MemoryManager, SectionId, SectionInfo};
pub use page_table::frozen_pages_alive;
pub use protection::{Access, Protection, RegionKind};
pub use query::{AddressSpace, MemoryStats, RegionInfo, ReservedRegion, SpaceView};
pub use region_map::MmioHandlers;
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
