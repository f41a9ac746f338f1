//! Read-only inspection of a snapshot file: its header and index, without
//! decompressing a single frame — what `vmsnap info` prints.
//!
//! [`inspect`] checks the header, the index checksum and the index itself
//! (FORMAT.md §6.1–§6.4), decodes every snapshot's layout, and counts: snapshots,
//! frames, stored (distinct, non-zero) pages, page-map entries, inherited
//! and zero pages, raw and stored bytes. It does not read the frames nor
//! follow a parent chain: [`verify`](super::verify) does both.
//!
//! ```
//! use vmsnap::{MemoryManager, Protection, RegionKind};
//!
//! let mut mm = MemoryManager::new();
//! mm.allocate_memory_at(0x10000, 0x4000, Protection::READ_WRITE, false, RegionKind::Private)?;
//! mm.write_memory(0x10000, b"same")?;
//! mm.write_memory(0x11000, b"same")?; // the same bytes: stored once
//! let info = vmsnap::file::inspect_bytes(&vmsnap::file::to_bytes(&mm.snapshot()).unwrap())?;
//! assert_eq!((info.snapshots.len(), info.stored_pages, info.page_references()), (1, 1, 2));
//! assert_eq!(info.snapshots[0].zero_pages, 2); // committed, never written: stored as nothing
//! assert_eq!(info.dedup_ratio(), 2.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use super::{
    FLAG_INCREMENTAL, FORMAT_MAJOR, FileError, Header, KIND_XOR, MapResolver, Parsed, Progress, corrupt,
    parse_index, split,
};
use crate::PAGE_SIZE;
use crate::protection::meta;
use crate::timeline::Timeline;

/// What a file's header and index say (see [`inspect`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FileInfo {
    /// Format major version (header bytes 8–9).
    pub format_major: u16,
    /// Format minor version (header bytes 10–11): 0 self-contained, 1 incremental.
    pub format_minor: u16,
    /// Header flags (bit 0: incremental).
    pub flags: u32,
    /// Bytes of the whole file.
    pub file_length: u64,
    /// Bytes of the frame area (the compressed pages).
    pub frames_length: u64,
    /// Bytes of the MessagePack index.
    pub index_length: u64,
    /// Number of zstd frames.
    pub frame_count: u64,
    /// Page records: distinct non-zero pages stored in this file.
    pub stored_pages: u64,
    /// Page records stored as an XOR with a parent page (incremental files).
    pub xor_pages: u64,
    /// Every snapshot record, in file order.
    pub snapshots: Vec<SnapshotSummary>,
    /// The parent file of an incremental file.
    pub parent: Option<ParentInfo>,
}

/// One snapshot record of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotSummary {
    /// Its id in the file (0 for [`save`](super::save); the `Timeline` id for
    /// [`save_timeline`](super::save_timeline)).
    pub id: u64,
    /// Its timeline name.
    pub name: Option<String>,
    /// The id of its parent snapshot in the same file.
    pub parent: Option<u64>,
    /// Its layout version.
    pub layout_version: u64,
    /// Allocations in its layout (MMIO regions included, as on load).
    pub allocations: u64,
    /// Committed pages that can hold bytes of their own (committed, neither
    /// MMIO nor a section view); section pages included.
    pub committed_pages: u64,
    /// Page-map entries naming a stored page of this file.
    pub stored_entries: u64,
    /// Page-map entries inherited from the parent file (incremental files).
    pub inherited_pages: u64,
    /// Committed pages stored as nothing because they read zeros.
    pub zero_pages: u64,
    /// Bytes of its layout record.
    pub state_length: u64,
}

/// The parent named by an incremental file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// BLAKE3-256 of the parent's index bytes: its identity.
    pub index_hash: [u8; 32],
    /// Its path relative to the child's directory, `/`-separated.
    pub file_name_hint: String,
}

impl FileInfo {
    /// True for an incremental file (format 1.1, names a parent).
    pub fn is_incremental(&self) -> bool {
        self.parent.is_some()
    }

    /// Page-map entries naming a stored page of this file, over every
    /// snapshot: the pages the file would hold without deduplication.
    pub fn page_references(&self) -> u64 {
        self.snapshots.iter().map(|s| s.stored_entries).sum()
    }

    /// Bytes of the non-zero pages of every snapshot, inherited ones
    /// included: what copying each snapshot's pages out would take.
    pub fn raw_bytes(&self) -> u64 {
        self.snapshots.iter().map(|s| (s.stored_entries + s.inherited_pages) * PAGE_SIZE).sum()
    }

    /// Bytes of the distinct pages stored (before compression).
    pub fn unique_bytes(&self) -> u64 {
        self.stored_pages * PAGE_SIZE
    }

    /// Page references per stored page (1.0: no page shared); 1.0 for a
    /// file with no stored page.
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.page_references(), self.stored_pages)
    }

    /// Distinct page bytes per byte of frame area (zstd's gain); 1.0 for a
    /// file with no stored page.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.unique_bytes(), self.frames_length)
    }

    /// [`raw_bytes`](FileInfo::raw_bytes) per byte of file: dedup, zero
    /// pages stored as nothing, inheritance and compression together.
    pub fn overall_ratio(&self) -> f64 {
        ratio(self.raw_bytes(), self.file_length)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Describes the file at `path` (see [`inspect_bytes`]), reading only its
/// header and index. Time: O(index + layouts); no frame is read.
pub fn inspect(path: &Path) -> Result<FileInfo, FileError> {
    // Only the header and the index are read.
    let head = super::read_head(path)?;
    describe(&head.header, &head.index)
}

/// Describes a file held in memory: header fields, counts and sizes, every
/// snapshot record and the parent record. Checks the header, both
/// checksums and the index (FORMAT.md §6.1–§6.4), and decodes each
/// snapshot's layout (errors as [`load`](super::load) reports them), but
/// reads no frame and follows no parent: a file that inspects may still fail
/// [`verify`](super::verify). Time: O(index + layouts).
pub fn inspect_bytes(bytes: &[u8]) -> Result<FileInfo, FileError> {
    let (_, index_bytes, header) = split(bytes)?;
    describe(&header, index_bytes)
}

/// [`inspect_bytes`] from a checked header and index.
fn describe(header: &Header, index_bytes: &[u8]) -> Result<FileInfo, FileError> {
    let parsed = parse_index(index_bytes, header)?;
    let mut maps = MapResolver::new(&parsed);
    let Parsed { frames, pages, snapshots, parent, .. } = parsed;
    let mut summaries = Vec::with_capacity(snapshots.len());
    for record in &snapshots {
        let layout = crate::state::decode_layout(record.state(), crate::page_table::Store::new())?;
        let mut committed = 0u64;
        layout.table.for_each_run(|_, count, visit| {
            if meta::holds_bytes(visit.meta) {
                committed += count;
            }
        });
        let (mut stored, mut inherited) = (0u64, 0u64);
        for (_, index) in maps.resolve(record.id(), record.parent(), record.page_map())? {
            if index == 0 {
                inherited += 1;
            } else {
                stored += 1;
            }
        }
        summaries.push(SnapshotSummary {
            id: record.id(),
            name: record.name().map(str::to_owned),
            parent: record.parent(),
            layout_version: record.layout_version(),
            allocations: layout.regions.len() as u64,
            committed_pages: committed,
            stored_entries: stored,
            inherited_pages: inherited,
            zero_pages: committed.saturating_sub(stored + inherited),
            state_length: record.state().len() as u64,
        });
    }
    let parent = match parent {
        Some(p) => {
            let index_hash =
                p.index_hash().try_into().map_err(|_| corrupt("parent index hash is not 32 bytes"))?;
            Some(ParentInfo { index_hash, file_name_hint: p.hint().to_owned() })
        }
        None => None,
    };
    Ok(FileInfo {
        format_major: FORMAT_MAJOR,
        format_minor: header.minor,
        flags: if header.incremental { FLAG_INCREMENTAL } else { 0 },
        file_length: header.index_offset + header.index_length,
        frames_length: header.frames_length,
        index_length: index_bytes.len() as u64,
        frame_count: frames.len() as u64,
        stored_pages: pages.len() as u64,
        xor_pages: pages.iter().filter(|r| r.kind() == KIND_XOR).count() as u64,
        snapshots: summaries,
        parent,
    })
}

/// [`load_timeline`](super::load_timeline), calling `progress` as the file's
/// frames are decompressed and checked (a parent chain is loaded first,
/// without reports), for a progress bar over a large timeline file.
pub fn load_timeline_with_progress(
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Timeline, FileError> {
    super::Loader::new().progress(progress).load_timeline(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryManager, Protection, RegionKind, Timeline};

    fn manager() -> MemoryManager {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 0x10000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        mm
    }

    #[test]
    fn counts_dedup_and_zero_pages() {
        let mut mm = manager();
        for p in 0..4u64 {
            mm.write_memory(0x10000 + p * PAGE_SIZE, &[7; 100]).unwrap(); // four equal pages
        }
        mm.write_memory(0x18000, &[9; 4096]).unwrap();
        mm.allocate_mmio(0x7FFE_0000, PAGE_SIZE, |_, b| b.fill(1), |_, _| {}).unwrap();
        let bytes = crate::file::to_bytes(&mm.snapshot()).unwrap();
        let info = inspect_bytes(&bytes).unwrap();
        assert_eq!((info.format_major, info.format_minor, info.flags), (1, 2, 0));
        assert_eq!(info.file_length, bytes.len() as u64);
        assert_eq!(info.file_length, 64 + info.frames_length + info.index_length);
        assert_eq!((info.frame_count, info.stored_pages, info.xor_pages), (1, 2, 0));
        let s = &info.snapshots[0];
        assert_eq!((s.id, s.name.as_deref(), s.parent), (0, None, None));
        assert_eq!(s.allocations, 2, "the MMIO region is counted, as on load");
        assert_eq!((s.committed_pages, s.stored_entries, s.inherited_pages, s.zero_pages), (16, 5, 0, 11));
        assert_eq!(info.page_references(), 5);
        assert_eq!(info.raw_bytes(), 5 * PAGE_SIZE);
        assert_eq!(info.dedup_ratio(), 2.5);
        assert!(info.compression_ratio() > 10.0, "{}", info.compression_ratio());
        assert!(!info.is_incremental());
    }

    #[test]
    fn timelines_keep_ids_names_and_parents() {
        let mut mm = manager();
        let mut t = Timeline::new();
        mm.write_memory(0x10000, b"one").unwrap();
        let one = t.take(&mut mm, Some("one")).unwrap();
        mm.write_memory(0x11000, b"two").unwrap();
        t.take(&mut mm, None).unwrap();
        t.restore(&mut mm, one).unwrap();
        mm.write_memory(0x12000, b"branch").unwrap();
        t.take(&mut mm, Some("branch")).unwrap();
        let info = inspect_bytes(&crate::file::timeline_to_bytes(&t).unwrap()).unwrap();
        let rows: Vec<_> =
            info.snapshots.iter().map(|s| (s.id, s.name.as_deref(), s.parent, s.stored_entries)).collect();
        assert_eq!(rows, [(1, Some("one"), None, 1), (2, None, Some(1), 2), (3, Some("branch"), Some(1), 2)]);
        assert_eq!(info.stored_pages, 3, "\"one\" is stored once for three snapshots");
        assert_eq!(info.page_references(), 5);

        let dir = std::env::temp_dir().join(format!("vmsnap-inspect-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.vmsnap");
        crate::file::save_timeline(&t, &path).unwrap();
        let mut reports = Vec::new();
        let loaded = load_timeline_with_progress(&path, &mut |p| reports.push(p)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded.find("branch").map(|id| id.0), Some(3));
        assert_eq!(reports, [Progress { done: 3 * PAGE_SIZE, total: 3 * PAGE_SIZE }]);
    }

    #[test]
    fn incremental_files_name_their_parent() {
        let mut mm = manager();
        for p in 0..8u64 {
            mm.write_memory(0x10000 + p * PAGE_SIZE, &[p as u8 + 1; 64]).unwrap();
        }
        let base = mm.snapshot();
        let parent_bytes = crate::file::to_bytes(&base).unwrap();
        mm.write_memory(0x10000, b"changed").unwrap();
        let child = mm.snapshot();
        let bytes = crate::file::incremental_to_bytes(&child, &base, &parent_bytes, "base.vmsnap").unwrap();
        let info = inspect_bytes(&bytes).unwrap();
        assert_eq!((info.format_minor, info.flags, info.stored_pages, info.xor_pages), (2, 1, 1, 1));
        let parent = info.parent.as_ref().unwrap();
        assert_eq!(parent.file_name_hint, "base.vmsnap");
        let (_, parent_index, _) = split(&parent_bytes).unwrap();
        assert_eq!(parent.index_hash, *blake3::hash(parent_index).as_bytes());
        let s = &info.snapshots[0];
        assert_eq!((s.stored_entries, s.inherited_pages, s.zero_pages), (1, 7, 8));
        assert_eq!(info.raw_bytes(), 8 * PAGE_SIZE);
        assert!(info.is_incremental());
    }

    #[test]
    fn refuses_what_the_header_checks_refuse() {
        let bytes = crate::file::to_bytes(&manager().snapshot()).unwrap();
        assert!(matches!(inspect_bytes(b"not a file"), Err(FileError::BadMagic)));
        assert!(matches!(inspect_bytes(&bytes[..bytes.len() - 1]), Err(FileError::Truncated { .. })));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(inspect_bytes(&flipped), Err(FileError::IndexChecksum)));
        let dir = std::env::temp_dir().join(format!("vmsnap-inspect-{}", std::process::id()));
        assert!(matches!(inspect(&dir.join("absent.vmsnap")), Err(FileError::Io { .. })));
    }
}
