//! `vmsnap stats`: a snapshot's memory statistics — reserved, committed,
//! by kind — and the bytes private to and shared by each version of the
//! file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use vmsnap::Snapshot;

use super::InFile;
use crate::format::{self, size};
use crate::open::Opened;

/// Arguments of `stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The snapshot: `#N` (an id), `N` (the id N, else the name N) or a name; default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// What `vmsnap stats` reports.
#[derive(Serialize)]
pub struct Stats {
    /// The file and the snapshot (`file`, `snapshot`, `name`).
    #[serde(flatten)]
    pub of: InFile,
    pub reserved_bytes: u64,
    pub committed_bytes: u64,
    pub allocations: u64,
    /// Bytes of stored pages no other version holds.
    pub private_bytes: u64,
    /// Bytes of stored pages other versions hold too.
    pub shared_bytes: u64,
    pub live_versions: u64,
    /// Per region kind (`Image`, `Private`, …), in name order.
    pub by_kind: BTreeMap<&'static str, KindStats>,
    /// Every version of the file, in file order.
    pub versions: Vec<VersionBytes>,
    /// The sum of every version's `private_bytes`: pages held by a single version.
    pub single_version_bytes: u64,
}

/// The allocations of one kind.
#[derive(Default, Serialize)]
pub struct KindStats {
    pub reserved_bytes: u64,
    pub committed_bytes: u64,
    pub allocations: u64,
}

/// One version's stored pages.
#[derive(Serialize)]
pub struct VersionBytes {
    pub private_bytes: u64,
    pub shared_bytes: u64,
}

/// `vmsnap stats`.
pub fn run(args: &StatsArgs) -> Result<Stats> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let stats = snapshot.compute_memory_stats();
    let versions: Vec<VersionBytes> = opened
        .timeline
        .memory()
        .iter()
        .map(|m| VersionBytes { private_bytes: m.private_bytes, shared_bytes: m.shared_bytes })
        .collect();
    Ok(Stats {
        of: InFile::new(&args.file, summary),
        reserved_bytes: stats.reserved_memory,
        committed_bytes: stats.committed_memory,
        allocations: stats.allocation_count,
        private_bytes: stats.private_memory,
        shared_bytes: stats.shared_memory,
        live_versions: stats.live_versions,
        by_kind: by_kind(snapshot),
        single_version_bytes: versions.iter().map(|v| v.private_bytes).sum(),
        versions,
    })
}

/// Reserved and committed bytes and allocations of each region kind.
fn by_kind(snapshot: &Snapshot) -> BTreeMap<&'static str, KindStats> {
    let mut by_kind: BTreeMap<&'static str, KindStats> = BTreeMap::new();
    for r in format::regions(snapshot).into_iter().filter(|r| !r.is_free()) {
        let e = by_kind.entry(r.kind).or_default();
        e.reserved_bytes += r.size;
        if r.state == "MEM_COMMIT" {
            e.committed_bytes += r.size;
        }
    }
    for r in snapshot.reserved_regions() {
        by_kind.entry(format::kind_name(r.kind)).or_default().allocations += 1;
    }
    by_kind
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.of)?;
        writeln!(
            f,
            "  reserved {}, committed {}, {} allocations",
            size(self.reserved_bytes),
            size(self.committed_bytes),
            self.allocations
        )?;
        writeln!(
            f,
            "  stored pages: {} private to this version, {} shared with the file's other {} versions",
            size(self.private_bytes),
            size(self.shared_bytes),
            self.versions.len().saturating_sub(1)
        )?;
        writeln!(f, "\n  {:<14} {:>7} {:>12} {:>12}", "kind", "allocs", "reserved", "committed")?;
        for (k, s) in &self.by_kind {
            let (reserved, committed) = (size(s.reserved_bytes), size(s.committed_bytes));
            writeln!(f, "  {k:<14} {:>7} {reserved:>12} {committed:>12}", s.allocations)?;
        }
        if self.versions.len() > 1 {
            writeln!(
                f,
                "\n  {} versions in the file; pages held by a single version (what removing it would free): {}",
                self.versions.len(),
                size(self.single_version_bytes)
            )?;
        }
        Ok(())
    }
}
