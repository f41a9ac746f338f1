//! Opening a snapshot file of any kind (one snapshot, a timeline, an
//! incremental file with its parent chain) and choosing a snapshot in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vmsnap::file::{FileInfo, LazyFile, SnapshotSummary};
use vmsnap::{Snapshot, SnapshotId, Timeline};

/// An opened file: what its index says, and its snapshots as a timeline
/// whose pages are read from the file on first touch (`file::open_lazy`).
pub struct Opened {
    /// The path given.
    pub path: PathBuf,
    /// Header and index (`vmsnap::file::inspect`).
    pub info: FileInfo,
    /// The snapshots, in file order (ids renumbered by the loader).
    pub timeline: Timeline,
    /// Timeline ids of the file's snapshot records, in file order.
    ids: Vec<SnapshotId>,
    /// The lazily opened file (its page-read errors).
    lazy: LazyFile,
}

/// What kind of file the index describes.
pub fn file_kind(info: &FileInfo) -> &'static str {
    if info.is_incremental() {
        "incremental snapshot"
    } else if info.snapshots.len() == 1 && info.snapshots[0].name.is_none() && info.snapshots[0].id == 0 {
        "snapshot"
    } else {
        "timeline"
    }
}

impl Opened {
    /// Inspects and opens `path` lazily: header, index and parent chain are
    /// read and checked now; a page is read (its frame decompressed, its
    /// hash checked) when a command first needs it. `verify` reads all.
    pub fn open(path: &Path) -> Result<Opened> {
        let context = || path.display().to_string();
        let info = vmsnap::file::inspect(path).with_context(context)?;
        let lazy = vmsnap::file::open_lazy(path).with_context(context)?;
        let timeline = lazy.timeline();
        let ids = timeline.iter().map(|e| e.id).collect();
        Ok(Opened { path: path.to_owned(), info, timeline, ids, lazy })
    }

    /// Fails when a page a command read could not be read from the file (a
    /// damaged frame, an I/O error): commands call it before printing.
    pub fn check_pages(&self) -> Result<()> {
        match self.lazy.take_error() {
            Some(e) => Err(e).with_context(|| self.path.display().to_string()),
            None => Ok(()),
        }
    }

    /// The position (in file order) of the snapshot `selector` names, by the
    /// rule of [`select_position`]; `None` is the last one (the head).
    pub fn position(&self, selector: Option<&str>) -> Result<usize> {
        let count = self.info.snapshots.len();
        if count == 0 {
            bail!("{}: the file holds no snapshot", self.path.display());
        }
        let Some(sel) = selector else { return Ok(count - 1) };
        if let Some(i) = select_position(&self.info.snapshots, sel) {
            return Ok(i);
        }
        let names: Vec<String> = self.info.snapshots.iter().take(6).map(label).collect();
        let what = if sel.starts_with('#') { "an id is #N with N a number" } else { "no such id or name" };
        bail!(
            "{}: no snapshot {sel:?} ({what}; the file has {count}: {}{})",
            self.path.display(),
            names.join(", "),
            if count > 6 { ", ..." } else { "" }
        )
    }

    /// The snapshot at `position` (file order).
    pub fn snapshot(&self, position: usize) -> &Snapshot {
        // Invariant: the loader inserted one entry per snapshot record.
        self.timeline.get(self.ids[position]).expect("one entry per record")
    }

    /// The snapshot `selector` names, with its summary.
    pub fn select(&self, selector: Option<&str>) -> Result<(&SnapshotSummary, &Snapshot)> {
        let i = self.position(selector)?;
        Ok((&self.info.snapshots[i], self.snapshot(i)))
    }
}

/// The position (in file order) of the snapshot `selector` names, by one rule:
///
/// * `#N` is always the id N (the file's id, as `info` prints it), never a
///   name: names cannot start with `#` (`Timeline` refuses them, and files
///   holding one do not load);
/// * a bare number `N` (ASCII digits only) is the id N too when the file has
///   one; only when it has none is it the snapshot *named* `N`, so a name
///   never shadows an id;
/// * anything else is a name, matched exactly.
pub fn select_position(snapshots: &[SnapshotSummary], selector: &str) -> Option<usize> {
    let by_id = |id: u64| snapshots.iter().position(|s| s.id == id);
    let by_name = || snapshots.iter().position(|s| s.name.as_deref() == Some(selector));
    if let Some(digits) = selector.strip_prefix('#') {
        return digits
            .parse::<u64>()
            .ok()
            .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(by_id);
    }
    if !selector.is_empty() && selector.bytes().all(|b| b.is_ascii_digit()) {
        return selector.parse::<u64>().ok().and_then(by_id).or_else(by_name);
    }
    by_name()
}

/// `#id name` (or `#id`).
pub fn label(s: &SnapshotSummary) -> String {
    id_label(s.id, s.name.as_deref())
}

/// `#id name` (or `#id`) of a snapshot's id and name.
pub fn id_label(id: u64, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("#{id} {n}"),
        None => format!("#{id}"),
    }
}
