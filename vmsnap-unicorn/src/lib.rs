//! # vmsnap-unicorn — rewindable Unicorn sessions on vmsnap memory
//!
//! A [`Session`] is a Unicorn x86-64 CPU whose memory is a vmsnap
//! [`MemoryManager`](vmsnap::MemoryManager): Windows layout semantics
//! (reserve/commit, protections, guard pages, PE images) from vmsnap, real
//! instructions from Unicorn, and snapshots that rewind both to any earlier
//! version, on any branch.
//!
//! ```text
//!   vmsnap MemoryManager                Session                      Unicorn (x86-64)
//!   ┌───────────────────────┐   fold    ┌─────────────────────────┐  mem_map_ptr  ┌──────────────┐
//!   │ layout, protections,  │◄──────────│ one host arena per      │──────────────►│ runs of      │
//!   │ versions (snapshots)  │  restore  │ allocation (page-aligned│  (accessible  │ accessible   │
//!   │ bytes as of last fold │──────────►│ bytes, live)            │   pages only) │ pages        │
//!   └───────────────────────┘ diff ∪    │ dirty log ◄─────────────┼── MEM_WRITE hook             │
//!                              dirty    │ fault ◄─────────────────┼── MEM_INVALID hook           │
//!                                       └─────────────────────────┘               └──────────────┘
//! ```
//!
//! * **Bytes.** Each vmsnap allocation gets a page-aligned host arena; every
//!   maximal run of committed pages with the same access is registered with
//!   Unicorn once (`mem_map_ptr`), so the CPU reads and writes the arena
//!   directly. Reserved, no-access and guard pages are not mapped: touching
//!   them faults. A `MEM_WRITE` hook records written pages in a dirty log.
//! * **Layout.** Allocate, commit, decommit, protect, release and
//!   [`map_image`](Session::map_image) go through vmsnap
//!   ([`Session::with_memory`] runs any vmsnap or `nt` call), then the
//!   session re-registers the runs of the allocations that changed, outside
//!   `emu_start` (never from a hook).
//! * **Snapshots.** [`Session::snapshot`] folds the dirty pages into vmsnap
//!   and pairs a vmsnap [`Snapshot`](vmsnap::Snapshot) with the
//!   [`Registers`] (plain values: engine-independent, serializable,
//!   diffable). [`Session::restore`] to any version copies only the pages
//!   that differ — vmsnap's diff between the last fold and the target, plus
//!   the dirty log — zero-fills pages not committed there, re-registers runs
//!   whose layout or protection differ, flushes Unicorn's translation cache
//!   for every copied page executable in either version, and sets the
//!   registers.
//! * **Faults.** An access Unicorn refuses is decided by vmsnap's guest view
//!   after `emu_start` returns: [`MemoryError::AccessViolation`](vmsnap::MemoryError::AccessViolation)
//!   or [`MemoryError::GuardPageViolation`](vmsnap::MemoryError::GuardPageViolation)
//!   (the guard fires once; running again from `rip` retries and goes
//!   through), while a write to a write-copy page turns it writable and goes
//!   on, as on Windows.
//! * **Calls.** [`Session::call`] calls a guest function with the Windows
//!   x64 convention on a [`CallStack`] whose return address is a trap page;
//!   [`find_export`] finds a DLL export; [`wine`] loads Wine's PE
//!   `ntdll.dll` ready to call.
//!
//! ```
//! use vmsnap::{MemoryManager, Protection, RegionKind};
//! use vmsnap_unicorn::{RegisterX86, Session};
//!
//! let mut s = Session::new(MemoryManager::new())?;
//! let code = s.allocate_memory(0x1000, Protection::READ_WRITE, false, 0, RegionKind::Private)?;
//! let data = s.allocate_memory(0x1000, Protection::READ_WRITE, false, 0, RegionKind::Private)?;
//! s.write(code, &[0x48, 0x89, 0x18])?; // mov [rax], rbx
//! s.protect_memory(code, 0x1000, Protection::READ_EXECUTE)?;
//! s.set_reg(RegisterX86::RAX, data)?;
//! s.set_reg(RegisterX86::RBX, 0x1111)?;
//! let before = s.snapshot()?;
//! s.run(code, code + 3, 0)?;
//! let mut word = [0u8; 8];
//! s.read(data, &mut word)?;
//! assert_eq!(u64::from_le_bytes(word), 0x1111);
//! s.restore(&before)?; // bytes and registers back
//! s.read(data, &mut word)?;
//! assert_eq!(u64::from_le_bytes(word), 0);
//! # Ok::<(), vmsnap_unicorn::SessionError>(())
//! ```
//!
//! Costs: a restore is O(pages that differ) plus a fixed cost (the register
//! file); a snapshot is O(dirty pages); layout changes are O(allocations +
//! regions). The CPU runs with a write hook, which costs 1.5–1.9× on
//! store-heavy code.
//!
//! Limits: MMIO regions and section views are not mirrored
//! ([`SessionError::Unsupported`]); snapshots restore into the session that
//! took them (another session's snapshot restores too, with a full layout
//! pass).

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod arena;
mod call;
mod error;
mod registers;
mod session;
pub mod wine;

pub use call::{CallStack, MAX_ARGUMENTS, find_export};
pub use error::SessionError;
pub use registers::{RegisterChange, Registers};
pub use session::{CpuData, Exit, Session, SessionDiff, SessionSnapshot};
pub use unicorn_engine::RegisterX86;

/// The page size vmsnap and the CPU share.
pub(crate) const PAGE: u64 = vmsnap::PAGE_SIZE;
pub(crate) const PAGE_SHIFT: u32 = 12;
