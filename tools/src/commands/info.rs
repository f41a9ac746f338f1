//! `vmsnap info`: a file's header and index — its kind, sizes, page counts,
//! dedup and compression ratios, its snapshots and their timeline — read
//! without reading a frame.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vmsnap::PAGE_SIZE;
use vmsnap::file::{FileInfo, SnapshotSummary};

use crate::format::{hex_digits, size};
use crate::open::{file_kind, id_label};

/// Arguments of `info`.
#[derive(Args)]
pub struct InfoArgs {
    /// The snapshot file.
    pub file: PathBuf,
}

/// What `vmsnap info` reports: the figures of `vmsnap::file::FileInfo`, under
/// the names tools/README.md lists.
#[derive(Serialize)]
pub struct Info {
    /// The path given.
    pub file: String,
    /// `snapshot`, `timeline` or `incremental snapshot`.
    pub kind: &'static str,
    /// `MAJOR.MINOR`.
    pub format: String,
    /// The header's flags.
    pub flags: u32,
    /// True for an incremental file (it names a parent).
    pub incremental: bool,
    pub file_bytes: u64,
    /// The file's bytes before its frames: `file_bytes - frames_bytes - index_bytes`.
    pub header_bytes: u64,
    pub frames_bytes: u64,
    pub index_bytes: u64,
    pub frames: u64,
    pub snapshot_count: usize,
    pub page_references: u64,
    pub unique_pages: u64,
    pub xor_pages: u64,
    pub zero_pages: u64,
    pub inherited_pages: u64,
    pub raw_bytes: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub overall_ratio: f64,
    /// The parent file of an incremental file.
    pub parent: Option<Parent>,
    /// Every snapshot record, in file order.
    pub snapshots: Vec<SnapshotRow>,
    /// The snapshots as a tree of straight lines, as the text draws it.
    pub timeline: Vec<Line>,
}

/// The parent an incremental file names.
#[derive(Serialize)]
pub struct Parent {
    pub file_name_hint: String,
    /// BLAKE3-256 of the parent's index, in hex.
    pub index_hash: String,
}

/// One snapshot record.
#[derive(Serialize)]
pub struct SnapshotRow {
    pub id: u64,
    pub name: Option<String>,
    pub parent: Option<u64>,
    pub layout_version: u64,
    pub allocations: u64,
    pub committed_pages: u64,
    /// Page-map entries naming a page stored in this file.
    pub stored_pages: u64,
    pub inherited_pages: u64,
    pub zero_pages: u64,
}

/// A straight line of the timeline: `first` and its descendants, each the
/// only child of the one before, up to `last` (ids).
#[derive(Serialize)]
pub struct Line {
    pub first: u64,
    pub last: u64,
    /// Snapshots on the line.
    pub snapshots: usize,
    /// 0 for the main line, one more per branch.
    pub depth: usize,
    /// The snapshot a branch (depth above 0) left from.
    pub branched_from: Option<u64>,
}

/// `vmsnap info`: reads the header and the index only.
pub fn run(args: &InfoArgs) -> Result<Info> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    Ok(Info::new(&args.file, &info))
}

impl Info {
    fn new(path: &Path, info: &FileInfo) -> Info {
        let snapshots: Vec<SnapshotRow> = info.snapshots.iter().map(SnapshotRow::new).collect();
        Info {
            file: path.display().to_string(),
            kind: file_kind(info),
            format: format!("{}.{}", info.format_major, info.format_minor),
            flags: info.flags,
            incremental: info.is_incremental(),
            file_bytes: info.file_length,
            header_bytes: info.file_length.saturating_sub(info.frames_length + info.index_length),
            frames_bytes: info.frames_length,
            index_bytes: info.index_length,
            frames: info.frame_count,
            snapshot_count: info.snapshots.len(),
            page_references: info.page_references(),
            unique_pages: info.stored_pages,
            xor_pages: info.xor_pages,
            zero_pages: info.snapshots.iter().map(|s| s.zero_pages).sum(),
            inherited_pages: info.snapshots.iter().map(|s| s.inherited_pages).sum(),
            raw_bytes: info.raw_bytes(),
            unique_bytes: info.unique_bytes(),
            stored_bytes: info.frames_length,
            dedup_ratio: info.dedup_ratio(),
            compression_ratio: info.compression_ratio(),
            overall_ratio: info.overall_ratio(),
            parent: info.parent.as_ref().map(|p| Parent {
                file_name_hint: p.file_name_hint.clone(),
                index_hash: hex_digits(&p.index_hash),
            }),
            timeline: lines(&snapshots),
            snapshots,
        }
    }

    /// `#id name` of the snapshot `id`.
    fn label(&self, id: u64) -> String {
        let name = self.snapshots.iter().find(|s| s.id == id).and_then(|s| s.name.as_deref());
        id_label(id, name)
    }
}

impl SnapshotRow {
    fn new(s: &SnapshotSummary) -> SnapshotRow {
        SnapshotRow {
            id: s.id,
            name: s.name.clone(),
            parent: s.parent,
            layout_version: s.layout_version,
            allocations: s.allocations,
            committed_pages: s.committed_pages,
            stored_pages: s.stored_entries,
            inherited_pages: s.inherited_pages,
            zero_pages: s.zero_pages,
        }
    }
}

/// The timeline as straight lines, in the order the text draws them: a
/// line follows each snapshot's only child; at a branch point it ends, the
/// first child starts the next line at the same depth and the others
/// start lines one deeper, drawn after it.
fn lines(snapshots: &[SnapshotRow]) -> Vec<Line> {
    let mut children: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        children.entry(s.parent).or_default().push(i);
    }
    let none = Vec::new();
    let kids = |i: usize| children.get(&Some(snapshots[i].id)).unwrap_or(&none);
    // (first snapshot of a line, depth), as a stack.
    let roots = children.get(&None).map_or(&[][..], Vec::as_slice);
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
    let mut out = Vec::new();
    // Each record is drawn once, even if an index names one id twice.
    let mut drawn = vec![false; snapshots.len()];
    while let Some((first, depth)) = stack.pop() {
        if std::mem::replace(&mut drawn[first], true) {
            continue;
        }
        let (mut last, mut count) = (first, 1);
        loop {
            let next = kids(last);
            stack.extend(next.iter().skip(1).rev().map(|&k| (k, depth + 1)));
            match next.as_slice() {
                [only] if !drawn[*only] => {
                    drawn[*only] = true;
                    (last, count) = (*only, count + 1);
                }
                [_] => break,
                [main, ..] => {
                    stack.push((*main, depth));
                    break;
                }
                [] => break,
            }
        }
        let branched_from = if depth > 0 { snapshots[first].parent } else { None };
        out.push(Line {
            first: snapshots[first].id,
            last: snapshots[last].id,
            snapshots: count,
            depth,
            branched_from,
        });
    }
    out
}

/// Rows shown at each end of a long snapshot table.
const SHOWN: usize = 12;

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_summary(f)?;
        self.fmt_table(f)?;
        if self.snapshots.len() > 1 {
            writeln!(f, "\ntimeline:")?;
            for line in &self.timeline {
                self.fmt_line(f, line)?;
            }
        }
        Ok(())
    }
}

impl Info {
    fn fmt_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: vmsnap {} (format {})", self.file, self.kind, self.format)?;
        writeln!(
            f,
            "  file {} = header {} + frames {} + index {}",
            size(self.file_bytes),
            size(self.header_bytes),
            size(self.frames_bytes),
            size(self.index_bytes)
        )?;
        writeln!(f, "  flags {:#x}{}", self.flags, if self.incremental { " (incremental)" } else { "" })?;
        if let Some(p) = &self.parent {
            let short = p.index_hash.get(..16).unwrap_or(&p.index_hash);
            writeln!(f, "  parent {} (index BLAKE3 {short}…)", p.file_name_hint)?;
        }
        let inherited = match self.inherited_pages {
            0 => String::new(),
            n => format!(", {n} pages inherited from the parent"),
        };
        writeln!(
            f,
            "  {} snapshots, {} page references, {} unique pages in {} frames ({} xor), {} zero pages stored as nothing{inherited}",
            self.snapshot_count,
            self.page_references,
            self.unique_pages,
            self.frames,
            self.xor_pages,
            self.zero_pages,
        )?;
        writeln!(
            f,
            "  raw {} → unique {} → stored {}: dedup {:.2}x, compression {:.2}x, overall {:.2}x",
            size(self.raw_bytes),
            size(self.unique_bytes),
            size(self.stored_bytes),
            self.dedup_ratio,
            self.compression_ratio,
            self.overall_ratio
        )
    }

    /// The snapshot table; a long one shows its first and last rows.
    fn fmt_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n  {:>6}  {:<16} {:>6} {:>8} {:>6} {:>10} {:>8} {:>8}",
            "id", "name", "parent", "layout", "allocs", "committed", "stored", "zero"
        )?;
        let n = self.snapshots.len();
        let elided = n > 2 * SHOWN;
        for (i, s) in self.snapshots.iter().enumerate() {
            if elided && i == SHOWN {
                writeln!(f, "  {:>6}  ... {} more ...", "", n - 2 * SHOWN)?;
            }
            if elided && (SHOWN..n - SHOWN).contains(&i) {
                continue;
            }
            writeln!(
                f,
                "  {:>6}  {:<16} {:>6} {:>8} {:>6} {:>10} {:>8} {:>8}",
                format!("#{}", s.id),
                s.name.as_deref().unwrap_or("-"),
                s.parent.map_or("-".to_owned(), |p| format!("#{p}")),
                s.layout_version,
                s.allocations,
                size(s.committed_pages * PAGE_SIZE),
                s.stored_pages + s.inherited_pages,
                s.zero_pages
            )?;
        }
        Ok(())
    }

    /// One line of the timeline tree: `#1 a → #7 b (7 snapshots)`, a branch
    /// indented under the line it left.
    fn fmt_line(&self, f: &mut fmt::Formatter<'_>, line: &Line) -> fmt::Result {
        let pad = "  ".repeat(line.depth);
        let branch = if line.depth > 0 { "└─ " } else { "" };
        let from = line.branched_from.map(|p| format!("branched from #{p}"));
        let first = self.label(line.first);
        if line.snapshots == 1 {
            let from = from.map(|s| format!(" ({s})")).unwrap_or_default();
            return writeln!(f, "  {pad}{branch}{first}{from}");
        }
        let from = from.map(|s| format!(", {s}")).unwrap_or_default();
        let (last, n) = (self.label(line.last), line.snapshots);
        writeln!(f, "  {pad}{branch}{first} → {last} ({n} snapshots{from})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, parent: Option<u64>) -> SnapshotRow {
        SnapshotRow {
            id,
            name: None,
            parent,
            layout_version: 0,
            allocations: 0,
            committed_pages: 0,
            stored_pages: 0,
            inherited_pages: 0,
            zero_pages: 0,
        }
    }

    /// `(first, last, snapshots, depth, branched_from)` of each line.
    fn shape(rows: &[SnapshotRow]) -> Vec<(u64, u64, usize, usize, Option<u64>)> {
        lines(rows).iter().map(|l| (l.first, l.last, l.snapshots, l.depth, l.branched_from)).collect()
    }

    /// 1 → 2 → {3, 4 → {5, 6}}, and a second root 7: a line ends at each
    /// branch point; the first child goes on at its depth, the others one
    /// deeper, after it.
    #[test]
    fn the_timeline_is_drawn_as_straight_lines() {
        let parents = [None, Some(1), Some(2), Some(2), Some(4), Some(4), None];
        let rows: Vec<SnapshotRow> = (1..).zip(parents).map(|(id, parent)| row(id, parent)).collect();
        assert_eq!(
            shape(&rows),
            [
                (1, 2, 2, 0, None),
                (3, 3, 1, 0, None),
                (4, 4, 1, 1, Some(2)),
                (5, 5, 1, 1, Some(4)),
                (6, 6, 1, 2, Some(4)),
                (7, 7, 1, 0, None)
            ]
        );
    }

    /// An index naming one id twice (the second record its own child)
    /// still draws each record once.
    #[test]
    fn a_record_is_drawn_once_even_when_ids_repeat() {
        assert_eq!(shape(&[row(1, None), row(1, Some(1))]), [(1, 1, 2, 0, None)]);
    }
}
