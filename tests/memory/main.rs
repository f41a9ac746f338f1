//! The `MemoryManager` API and Windows virtual-memory semantics, one
//! binary of several modules (one link instead of ten); section numbers
//! refer to WINDOWS-SEMANTICS.md:
//!
//! - `access`: host and guest reads and writes, protections, guard pages;
//! - `allocation`: allocation, address selection, queries, release;
//! - `bad_input`: hostile arguments to every operation;
//! - `commit_limit`: `set_commit_limit` and `CommitLimitExceeded`;
//! - `commit_protect`: commit, decommit and protect;
//! - `layout_version`: the layout version's rules;
//! - `mmio`: MMIO regions and their handlers;
//! - `sections`: sections and their views;
//! - `snapshots_basic`: snapshots, restores and diffs;
//! - `state`: `serialize_memory_state` / `deserialize_memory_state`.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod allocation;
mod bad_input;
mod commit_limit;
mod commit_protect;
mod layout_version;
mod mmio;
mod sections;
mod snapshots_basic;
mod state;
