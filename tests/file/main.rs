//! Snapshot files (`vmsnap::file`), one binary of several modules (one
//! link instead of four):
//!
//! - `format`: round trips, dedup, atomic writes, golden vectors
//!   (`snapshots-format/vectors`) and one test per failure mode;
//! - `hostile`: hostile input and a hostile file system (#12);
//! - `incremental`: incremental files (format 1.1): chains, rebase, failures;
//! - `lazy`: lazily opened files (`open_lazy`).

#[path = "../common/mod.rs"]
mod common;

mod format;
mod hostile;
mod incremental;
mod lazy;
