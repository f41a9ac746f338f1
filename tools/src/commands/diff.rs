//! `vmsnap diff`: what changed between two files, or two snapshots of one
//! file — layout changes, then each changed page with its changed byte
//! ranges.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vmsnap::{PageChange, PageChangeKind, RegionChange};

use super::InFile;
use crate::format::{self, hex, serialize_hex, size, windbg};
use crate::open::{Opened, label};

/// Arguments of `diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The old file.
    pub a: PathBuf,
    /// The new file (default: the same file as A).
    pub b: Option<PathBuf>,
    /// Snapshot in A (id or name); default: the last one, or with one file the head's parent.
    #[arg(long)]
    pub from: Option<String>,
    /// Snapshot in B (id or name); default: the last one.
    #[arg(long)]
    pub to: Option<String>,
    /// Pages whose bytes are shown (the rest are counted).
    #[arg(long, default_value_t = 16)]
    pub max_pages: usize,
}

/// What `vmsnap diff` reports.
#[derive(Serialize)]
pub struct Diff {
    /// The old snapshot (`file`, `snapshot`, `name`).
    pub from: InFile,
    /// The new snapshot.
    pub to: InFile,
    /// Pages whose bytes differ, all of them (`page_changes` may list fewer).
    pub changed_pages: usize,
    /// Seconds the library took to compute the diff.
    pub seconds: f64,
    /// Layout changes.
    pub region_changes: Vec<RegionChangeRow>,
    /// Changed pages with their bytes, in address order: all of them, or
    /// the first ones only (the text's `--max-pages`).
    pub page_changes: Vec<PageChangeRow>,
}

/// One layout change (`change` names it in JSON).
#[derive(Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum RegionChangeRow {
    /// An allocation that is new.
    Allocated { address: u64, length: u64, kind: &'static str, protection: String },
    /// An allocation that is gone.
    Released { address: u64, length: u64, kind: &'static str },
    /// Pages that became committed.
    Committed { address: u64, length: u64, protection: String },
    /// Pages that stopped being committed.
    Decommitted { address: u64, length: u64 },
    /// Committed pages whose protection changed.
    Protection { address: u64, length: u64, old: String, new: String },
}

/// One changed page.
#[derive(Serialize)]
pub struct PageChangeRow {
    pub address: u64,
    /// `modified`, `committed` or `decommitted`.
    pub kind: &'static str,
    /// The byte ranges that differ (offsets in the page), ascending.
    pub ranges: Vec<ByteRange>,
}

/// Bytes of a page that differ: `[start, end)` and both versions of them.
#[derive(Serialize)]
pub struct ByteRange {
    pub start: usize,
    pub end: usize,
    #[serde(serialize_with = "serialize_hex")]
    pub old: Vec<u8>,
    #[serde(serialize_with = "serialize_hex")]
    pub new: Vec<u8>,
}

/// `vmsnap diff`, listing the bytes of the first `pages` changed pages
/// (`None`: all of them). Pages past those are counted, not read: all of
/// user space committed is 2^35 changed pages.
pub fn run(args: &DiffArgs, pages: Option<usize>) -> Result<Diff> {
    let a = Opened::open(&args.a)?;
    let b_opened = args.b.as_deref().map(Opened::open).transpose()?;
    let b = b_opened.as_ref().unwrap_or(&a);
    let (from, to) = positions(args, &a, b, b_opened.is_none())?;
    let started = Instant::now();
    let d = a.snapshot(from).diff(b.snapshot(to));
    let seconds = started.elapsed().as_secs_f64();
    // The changed pages' bytes, read (from the files, lazily) and compared
    // once; a page a damaged file cannot give is an error, not zeros.
    let page_changes: Vec<PageChangeRow> =
        d.iter_page_changes().take(pages.unwrap_or(usize::MAX)).map(|c| PageChangeRow::new(&c)).collect();
    a.check_pages()?;
    b.check_pages()?;
    Ok(Diff {
        from: InFile::new(&args.a, &a.info.snapshots[from]),
        to: InFile::new(args.b.as_ref().unwrap_or(&args.a), &b.info.snapshots[to]),
        changed_pages: d.changed_page_count(),
        seconds,
        region_changes: d.region_changes().iter().map(RegionChangeRow::new).collect(),
        page_changes,
    })
}

/// The positions of the old snapshot in `a` and the new one in `b`: as
/// selected, else the heads, or with one file the head and its parent.
fn positions(args: &DiffArgs, a: &Opened, b: &Opened, same_file: bool) -> Result<(usize, usize)> {
    let to = b.position(args.to.as_deref())?;
    let from = match (&args.from, same_file) {
        (Some(sel), _) => a.position(Some(sel))?,
        (None, false) => a.position(None)?,
        (None, true) => {
            let head = &a.info.snapshots[to];
            let parent = head.parent.with_context(|| {
                format!("{}: {} has no parent: name one with --from", args.a.display(), label(head))
            })?;
            a.position(Some(&parent.to_string()))?
        }
    };
    Ok((from, to))
}

impl RegionChangeRow {
    fn new(c: &RegionChange) -> RegionChangeRow {
        match *c {
            RegionChange::Allocated(r) => RegionChangeRow::Allocated {
                address: r.base,
                length: r.length,
                kind: format::kind_name(r.kind),
                protection: r.initial_permissions.to_string(),
            },
            RegionChange::Released(r) => RegionChangeRow::Released {
                address: r.base,
                length: r.length,
                kind: format::kind_name(r.kind),
            },
            RegionChange::Committed { address, length, permissions } => {
                RegionChangeRow::Committed { address, length, protection: permissions.to_string() }
            }
            RegionChange::Decommitted { address, length } => RegionChangeRow::Decommitted { address, length },
            RegionChange::ProtectionChanged { address, length, old, new } => {
                RegionChangeRow::Protection { address, length, old: old.to_string(), new: new.to_string() }
            }
        }
    }
}

impl PageChangeRow {
    fn new(c: &PageChange<'_>) -> PageChangeRow {
        let (old, new) = (c.old_bytes(), c.new_bytes());
        let ranges = c
            .byte_ranges()
            .into_iter()
            .map(|r| ByteRange {
                start: r.start,
                end: r.end,
                old: old[r.clone()].to_vec(),
                new: new[r].to_vec(),
            })
            .collect();
        PageChangeRow { address: c.address(), kind: kind_word(c.kind()), ranges }
    }
}

fn kind_word(k: PageChangeKind) -> &'static str {
    match k {
        PageChangeKind::Modified => "modified",
        PageChangeKind::Committed => "committed",
        PageChangeKind::Decommitted => "decommitted",
    }
}

/// Ranges listed on a page's line; hex lines shown under it.
const RANGES_LISTED: usize = 8;
const HEX_LINES: usize = 8;

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "diff {} → {}", self.from, self.to)?;
        writeln!(
            f,
            "{} region changes, {} pages changed ({} to compute)",
            self.region_changes.len(),
            self.changed_pages,
            format::duration(self.seconds)
        )?;
        if !self.region_changes.is_empty() {
            writeln!(f, "\nregions:")?;
            for c in &self.region_changes {
                writeln!(f, "  {c}")?;
            }
        }
        if !self.page_changes.is_empty() {
            writeln!(f, "\npages:")?;
        }
        for page in &self.page_changes {
            write!(f, "{page}")?;
        }
        let more = self.changed_pages.saturating_sub(self.page_changes.len());
        if more > 0 {
            writeln!(f, "  ... and {more} more pages (--max-pages, or --json for all)")?;
        }
        Ok(())
    }
}

impl fmt::Display for RegionChangeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionChangeRow::Allocated { address, length, kind, protection } => {
                write!(f, "+ allocated   {}  {:>9}  {kind} {protection}", windbg(*address), size(*length))
            }
            RegionChangeRow::Released { address, length, kind } => {
                write!(f, "- released    {}  {:>9}  {kind}", windbg(*address), size(*length))
            }
            RegionChangeRow::Committed { address, length, protection } => {
                write!(f, "+ committed   {}  {:>9}  {protection}", windbg(*address), size(*length))
            }
            RegionChangeRow::Decommitted { address, length } => {
                write!(f, "- decommitted {}  {:>9}", windbg(*address), size(*length))
            }
            RegionChangeRow::Protection { address, length, old, new } => {
                write!(f, "~ protection  {}  {:>9}  {old} -> {new}", windbg(*address), size(*length))
            }
        }
    }
}

/// A page's line (its changed bytes and ranges), then up to [`HEX_LINES`]
/// pairs of old and new hex lines, 16 bytes each.
impl fmt::Display for PageChangeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changed: usize = self.ranges.iter().map(|r| r.end - r.start).sum();
        let list: Vec<String> =
            self.ranges.iter().take(RANGES_LISTED).map(|r| format!("{:#x}..{:#x}", r.start, r.end)).collect();
        writeln!(
            f,
            "  {} {:<11} {changed} bytes in {} ranges: {}{}",
            windbg(self.address),
            self.kind,
            self.ranges.len(),
            list.join(" "),
            if self.ranges.len() > RANGES_LISTED { " ..." } else { "" }
        )?;
        if self.ranges.is_empty() {
            writeln!(f, "      (reads zeros in both versions)")?;
        }
        let mut lines = 0;
        for r in &self.ranges {
            for (i, (old, new)) in r.old.chunks(16).zip(r.new.chunks(16)).enumerate() {
                if lines == HEX_LINES {
                    break;
                }
                let at = r.start + 16 * i;
                writeln!(f, "      +{at:03x}  - {}", hex(old))?;
                writeln!(f, "      +{at:03x}  + {}", hex(new))?;
                lines += 1;
            }
        }
        if lines >= HEX_LINES {
            writeln!(f, "      ...")?;
        }
        Ok(())
    }
}
