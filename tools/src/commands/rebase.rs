//! `vmsnap rebase`: a self-contained copy of a file — an incremental
//! file's chain merged, one snapshot taken out, or a file rewritten.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vmsnap::file::FileInfo;

use crate::format::size;
use crate::open::{Opened, file_kind, label};
use crate::progress::Bar;

/// Arguments of `rebase`.
#[derive(Args)]
pub struct RebaseArgs {
    /// The file: incremental (its chain is merged), a timeline or a snapshot.
    pub file: PathBuf,
    /// Where to write the self-contained file (may be FILE).
    pub out: PathBuf,
    /// Write only this snapshot (id or name) as a one-snapshot file.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// What `vmsnap rebase` wrote.
#[derive(Serialize)]
pub struct Rebased {
    /// The file read.
    pub file: String,
    /// The file written.
    pub out: String,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes of the file read.
    pub input_bytes: u64,
    /// What the new file holds: `snapshot #7 step-6`, `the parent chain
    /// merged`, `already self-contained: rewritten`, …
    pub content: String,
}

/// `vmsnap rebase`.
pub fn run(args: &RebaseArgs) -> Result<Rebased> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    let content = match &args.snapshot {
        Some(selector) => save_one(args, selector)?,
        None => rewrite(args, &info)?,
    };
    let written = std::fs::metadata(&args.out).with_context(|| args.out.display().to_string())?.len();
    Ok(Rebased {
        file: args.file.display().to_string(),
        out: args.out.display().to_string(),
        bytes: written,
        input_bytes: info.file_length,
        content,
    })
}

/// Writes the snapshot `selector` names alone; what the file holds.
fn save_one(args: &RebaseArgs, selector: &str) -> Result<String> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(Some(selector))?;
    let mut bar = Bar::new("saving", 0, true);
    let saved = vmsnap::file::save_with_progress(snapshot, &args.out, &mut bar.hook());
    opened.check_pages()?;
    saved.with_context(|| args.out.display().to_string())?;
    Ok(format!("snapshot {}", label(summary)))
}

/// Writes the whole file self-contained; what the file holds.
fn rewrite(args: &RebaseArgs, info: &FileInfo) -> Result<String> {
    let merge =
        || vmsnap::file::rebase(&args.file, &args.out).with_context(|| args.file.display().to_string());
    if info.is_incremental() {
        merge()?;
        return Ok("the parent chain merged".to_owned());
    }
    if info.snapshots.len() == 1 && file_kind(info) == "snapshot" {
        merge()?;
        return Ok("already self-contained: rewritten".to_owned());
    }
    let opened = Opened::open(&args.file)?;
    let saved = vmsnap::file::save_timeline(&opened.timeline, &args.out);
    opened.check_pages()?;
    saved.with_context(|| args.out.display().to_string())?;
    Ok(format!("timeline of {} snapshots, already self-contained: rewritten", opened.timeline.len()))
}

impl fmt::Display for Rebased {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} (self-contained): {} ({} → {})",
            self.out,
            self.content,
            size(self.input_bytes),
            size(self.bytes)
        )
    }
}
