//! `vmsnap::nt`, the Windows face, one binary of two modules:
//!
//! - `virtual_memory`: NtAllocateVirtualMemory / NtFreeVirtualMemory /
//!   NtProtectVirtualMemory / NtQueryVirtualMemory against
//!   WINDOWS-SEMANTICS.md;
//! - `sections`: NtCreateSection / NtMapViewOfSection /
//!   NtUnmapViewOfSection / NtClose and the calls above on views.
//!
//! The calls go through the wrappers of `tests/common/nt.rs`, which also
//! check that a failed call leaves its outputs as given.

#[path = "../common/mod.rs"]
mod common;

mod sections;
mod virtual_memory;
