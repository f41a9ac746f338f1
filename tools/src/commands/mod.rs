//! The file commands, one module each: [`info`], [`regions`], [`dump`],
//! [`diff`], [`verify`], [`stats`], [`rebase`] and [`map`].
//!
//! Each module holds the command's arguments (`…Args`, parsed by clap) and
//! a `run` that does the work and returns the command's report: a typed
//! value that is both `Serialize` (the `--json` document) and `Display`
//! (the text). `main` prints one of the two, so every figure the text shows
//! is a field of the JSON. Nothing here writes to standard output.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use vmsnap::file::SnapshotSummary;

use crate::open::id_label;

pub mod diff;
pub mod dump;
pub mod info;
pub mod map;
pub mod rebase;
pub mod regions;
pub mod stats;
pub mod verify;

/// A snapshot of a file, as the reports name it: `file`, `snapshot` (its id
/// in the file, as `info` lists it) and `name` in JSON; `FILE #ID NAME` in
/// text.
#[derive(Serialize)]
pub struct InFile {
    /// The path given.
    pub file: String,
    /// The snapshot's id in the file.
    pub snapshot: u64,
    /// The snapshot's name, if it has one.
    pub name: Option<String>,
}

impl InFile {
    /// The snapshot `summary` of the file at `path`.
    pub fn new(path: &Path, summary: &SnapshotSummary) -> InFile {
        InFile { file: path.display().to_string(), snapshot: summary.id, name: summary.name.clone() }
    }
}

impl fmt::Display for InFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.file, id_label(self.snapshot, self.name.as_deref()))
    }
}
