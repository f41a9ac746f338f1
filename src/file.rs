//! Snapshot files: a [`Snapshot`] (or a whole [`Timeline`]) on disk.
//!
//! The byte-level contract is `snapshots-format/FORMAT.md` (format 1.2); the
//! golden files in `snapshots-format/vectors/` are decoded and re-encoded to
//! the same bytes by the tests. In short: a 64-byte header (magic, version,
//! flags, offsets, checksums), then zstd frames of up to 16 pages each, then a
//! MessagePack index. Pages are content-addressed by BLAKE3 (each distinct
//! page is stored once per file), zero pages are never stored, and every page
//! is checked against its BLAKE3 hash when it is read.
//!
//! ```
//! use vmsnap::{MemoryManager, Protection, RegionKind};
//!
//! let mut mm = MemoryManager::new();
//! mm.allocate_memory_at(0x10000, 0x2000, Protection::READ_WRITE, false, RegionKind::Private)?;
//! mm.write_memory(0x10000, b"on disk")?;
//! let bytes = vmsnap::file::to_bytes(&mm.snapshot())?;
//! let loaded = vmsnap::file::load_from_bytes(&bytes)?;
//! let mut buf = [0u8; 7];
//! loaded.read_memory(0x10000, &mut buf)?;
//! assert_eq!(&buf, b"on disk");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! MMIO regions are saved as layout only (their handlers cannot be
//! serialized) and come back on load as they are in the layout — kind
//! `Mmio`, committed, `READ | WRITE`, counted in the statistics — but
//! *unbound*: an access to one is
//! [`MemoryError::MmioUnbound`](crate::MemoryError::MmioUnbound), never
//! zeros, as after `deserialize_memory_state`. The owner binds handlers
//! after a restore ([`MemoryManager::bind_mmio`](crate::MemoryManager::bind_mmio)),
//! or at load time with a binder: [`load_with`], [`load_from_bytes_with`],
//! [`load_timeline_with`], [`timeline_from_bytes_with`], [`open_lazy_with`],
//! [`open_lazy_bytes_with`]. A diff does not compare handlers, so a loaded
//! snapshot diffs empty against the one saved.
//!
//! Incremental files (1.1, [`save_incremental`]) store only the pages that
//! differ from a parent file's snapshot (each XORed with the parent's page
//! before compression) and inherit the rest; [`load`] and [`verify`] follow
//! the parent chain, [`rebase`] merges a chain into one self-contained file.
//!
//! In a timeline file (1.2) each snapshot's page map is stored as a delta
//! against its parent snapshot's. [`open_lazy`] opens any file reading only
//! its header and index; pages are read, a frame at a time, on first touch
//! ([`LazyFile`]). Frames are compressed and checked on every core, or as
//! many threads as a [`Writer`] or [`Loader`] is given. A save streams:
//! frames go to the file as later frames compress, so memory in flight is
//! one batch of frames, not the file.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::StateError;
use crate::page_table::{LazySource, PAGE, Page, PageBytes, PageRef, PageTable, RecPtr, Store, VPN_LIMIT};
use crate::protection::meta;
use crate::region_map::{MmioHandlers, RegionMap};
use crate::snapshot::Snapshot;
use crate::timeline::{SnapshotId, Timeline};
use crate::version::{Lineage, Version};

mod codec;
mod header;
mod inspect;
mod lazy;
mod options;
mod source;
use codec::{FRAMES_PER_BATCH, FrameDecoder, Pool};
use header::{Header, split};
pub use inspect::{
    FileInfo, ParentInfo, SnapshotSummary, inspect, inspect_bytes, load_timeline_with_progress,
};
pub use lazy::{
    LazyFile, open, open_lazy, open_lazy_bytes, open_lazy_bytes_with, open_lazy_with, open_source,
};
pub use options::{Loader, Writer};
pub use source::{ByteSource, LocalFile};

/// Major version of the file format this crate writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor version of the files this crate writes, self-contained or
/// incremental (1.2: page records carry the page's fingerprint, so a file
/// can be opened lazily). It reads every 1.x file.
pub const FORMAT_MINOR: u16 = 2;
/// The first minor version with incremental files (1.1): header flag bit 0
/// is refused below it.
pub const FORMAT_MINOR_INCREMENTAL: u16 = 1;
/// The first minor version whose page records carry fingerprints (1.2).
pub const FORMAT_MINOR_FINGERPRINTS: u16 = 2;
/// Header flag bit 0: the file is incremental (names a parent file; 1.1).
pub const FLAG_INCREMENTAL: u32 = 1;
/// Longest parent file-name hint a reader accepts, in bytes (FORMAT.md §5):
/// checked with the index, before the hint is joined to any path.
pub const MAX_HINT_LENGTH: usize = 4096;
/// Most files in one parent chain (the file itself and all its ancestors).
pub const MAX_CHAIN_LENGTH: u64 = 64;
/// Page kind: the stored body is the page's bytes.
const KIND_PLAIN: u8 = 0;
/// Page kind: the stored body is the page XORed with a page of the parent.
const KIND_XOR: u8 = 1;
/// The 8 magic bytes every file starts with (`\x89VMS\r\n\x1a\n`).
pub const MAGIC: [u8; 8] = *b"\x89VMS\r\n\x1a\n";
/// Size of the fixed header.
pub const HEADER_LENGTH: usize = 64;
/// Largest index a reader accepts (1 GiB).
pub const MAX_INDEX_LENGTH: u64 = 1 << 30;
/// Largest frame area a reader accepts (1 TiB).
pub const MAX_FRAMES_LENGTH: u64 = 1 << 40;
/// Pages per zstd frame (the last frame may hold fewer).
pub const PAGES_PER_FRAME: usize = 16;
/// Largest compressed frame a reader accepts: zstd's compress bound of
/// 16 × 4096 bytes (`ZSTD_COMPRESSBOUND(65536)`).
pub const MAX_FRAME_COMPRESSED: u64 = 65536 + (65536 >> 8) + ((128 * 1024 - 65536) >> 11);
/// Most stored (distinct, non-zero) pages a reader accepts (2^24, 64 GiB).
pub const MAX_STORED_PAGES: u64 = 1 << 24;
/// Most snapshots one file may hold.
pub const MAX_SNAPSHOTS: u64 = 1 << 20;
/// The zstd level writers use (fixed, so encoding is deterministic).
pub const ZSTD_LEVEL: i32 = 3;

/// Why reading or writing a snapshot file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// An operating-system error on `path` (for a failed save: the
    /// destination, whichever step failed). The message names the path; the
    /// operating system's reason is the [`source`](std::error::Error::source).
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `path` exists but is not a regular file (a directory, a device such
    /// as `/dev/zero` or `/dev/null`, a FIFO, a socket; for a save, also a
    /// symbolic link, see [`write_atomic`]). Readers check before opening
    /// and again on the opened file, and never block on it; writers refuse
    /// such a target before writing anything. For an incremental file's
    /// parent, `path` is where the file-name hint points.
    #[error("{path} is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a character device", "a
        /// block device", "a FIFO", "a socket", "a symbolic link", "a
        /// special file").
        kind: &'static str,
    },
    /// The file does not start with [`MAGIC`] (not a snapshot file, or
    /// mangled by a text-mode transfer).
    #[error("not a vmsnap snapshot file (bad magic)")]
    BadMagic,
    /// The major version is not [`FORMAT_MAJOR`].
    #[error("unsupported file format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// Flag bits this reader does not support (any but bit 0, incremental;
    /// bit 0 in a file whose minor version is 0).
    #[error("unsupported header flags {0:#x}")]
    UnsupportedFlags(u32),
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The header's offsets and lengths contradict each other.
    #[error("corrupt header: {0}")]
    CorruptHeader(&'static str),
    /// The index checksum does not match.
    #[error("index checksum mismatch")]
    IndexChecksum,
    /// The file is shorter than its header says.
    #[error("truncated file: {actual} bytes, expected {expected}")]
    Truncated {
        /// Bytes the file should have (at least).
        expected: u64,
        /// Bytes it has.
        actual: u64,
    },
    /// The file goes on after the end of its index.
    #[error("{actual} bytes, expected {expected}: trailing bytes after the index")]
    TrailingBytes {
        /// Bytes the file should have.
        expected: u64,
        /// Bytes it has.
        actual: u64,
    },
    /// A size or count above the reader's limit (checked before allocating
    /// or decompressing).
    #[error("{what} is {value}, above the limit {limit}")]
    SizeLimit {
        /// What was too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The index decodes but breaks an invariant of FORMAT.md §6.
    #[error("corrupt index: {0}")]
    CorruptIndex(&'static str),
    /// A frame's checksum does not match, or it does not decompress to its
    /// page count × 4096 bytes.
    #[error("frame {frame} is corrupt")]
    FrameCorrupt {
        /// Frame number.
        frame: u32,
    },
    /// A stored page's BLAKE3 does not match its record.
    #[error("page record {page} does not match its hash")]
    PageHash {
        /// Page record index (1-based).
        page: u32,
    },
    /// A snapshot's layout record does not decode or validate (the reason
    /// is the source).
    #[error("invalid snapshot layout")]
    InvalidState(#[from] StateError),
    /// An incremental file's parent file does not exist (`path` is where
    /// the child's file-name hint points; for the in-memory forms, the hint
    /// itself).
    #[error("parent file {path} is missing")]
    ParentMissing {
        /// Where the parent was looked for.
        path: PathBuf,
    },
    /// The file at the parent's place is not the parent the incremental
    /// file was saved against (the BLAKE3 of its index differs).
    #[error("parent file {path} is not the file this one was saved against")]
    ParentMismatch {
        /// The parent file found.
        path: PathBuf,
    },
    /// A parent chain names a file that is already in the chain (or
    /// `save_incremental` was asked to overwrite its own parent).
    #[error("parent chain cycles through {path}")]
    ParentCycle {
        /// The file named twice.
        path: PathBuf,
    },
    /// A parent file (at any depth) failed to load; `source` says why (it
    /// is the [`source`](std::error::Error::source), not repeated in the
    /// message).
    #[error("in parent file {path}")]
    InParent {
        /// The parent file.
        path: PathBuf,
        /// Its error.
        source: Box<FileError>,
    },
    /// A page of the snapshot being saved is a lazily loaded page that
    /// could not be read from its own (source) file (see
    /// [`LazyFile::take_error`]); nothing was written. The save's concern,
    /// not a memory access: a read of that page fails with
    /// [`MemoryError::PageUnavailable`](crate::MemoryError::PageUnavailable).
    #[error("page at {address:#x} could not be read from the file it was lazily opened from")]
    SourcePageUnavailable {
        /// Address of the page.
        address: u64,
    },
    /// A [`Writer`] was asked for a zstd level outside 1..=22.
    #[error("zstd level {level} is outside 1..=22")]
    InvalidLevel {
        /// The level asked for.
        level: i32,
    },
    /// `load` needs a file with exactly one snapshot (use `load_timeline`).
    #[error("the file holds {found} snapshots, expected exactly one")]
    SnapshotCount {
        /// Snapshots in the file.
        found: usize,
    },
}

impl FileError {
    /// The innermost error: through [`FileError::InParent`] wrappers to the
    /// error of the file that actually failed.
    pub fn root_cause(&self) -> &FileError {
        match self {
            FileError::InParent { source, .. } => source.root_cause(),
            e => e,
        }
    }
}

// ---------------------------------------------------------------- index ----

#[derive(Serialize, Deserialize)]
struct Index(Vec<FrameRecord>, Vec<PageRecord>, Vec<SnapshotRecord>, Option<ParentRecord>);

/// `[offset, compressed_length, pages, checksum(8)]`.
#[derive(Serialize, Deserialize)]
struct FrameRecord(u64, u32, u8, ByteBuf);

/// `[hash(32), frame, slot, kind, base?, fingerprint]` (base: xor only, a
/// page number of the parent snapshot; fingerprint: from 1.2, absent
/// before).
#[derive(Serialize, Deserialize)]
struct PageRecord(ByteBuf, u32, u8, u8, Option<u64>, #[serde(default)] Option<u64>);

/// `[id, name?, parent?, layout_version, state, page_map]`.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord(u64, Option<String>, Option<u64>, u64, ByteBuf, Vec<RunRecord>);

/// `[first_page, [page record index, ...]]`.
#[derive(Serialize, Deserialize)]
struct RunRecord(u64, Vec<u32>);

/// `[index_hash(32), file_name_hint]` — incremental files only (1.1).
#[derive(Serialize, Deserialize)]
struct ParentRecord(ByteBuf, String);

fn blake3_prefix<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; N];
    out.copy_from_slice(&hash.as_bytes()[..N]);
    out
}

// --------------------------------------------------------------- encode ----

/// One snapshot to encode.
struct Item<'a> {
    id: u64,
    name: Option<&'a str>,
    parent: Option<u64>,
    snapshot: &'a Snapshot,
}

impl<'a> Item<'a> {
    /// A file's only snapshot.
    fn one(snapshot: &'a Snapshot) -> Item<'a> {
        Item { id: 0, name: None, parent: None, snapshot }
    }

    /// Every entry of a timeline, in id order.
    fn of_timeline(timeline: &'a Timeline) -> Vec<Item<'a>> {
        timeline
            .iter()
            .map(|e| Item {
                id: e.id.0,
                name: e.name.as_deref(),
                parent: e.parent.map(|p| p.0),
                snapshot: &e.snapshot,
            })
            .collect()
    }
}

/// The parent of an incremental file being encoded.
struct ParentFile<'a> {
    snapshot: &'a Snapshot,
    index_hash: [u8; 32],
    hint: &'a str,
}

/// The bytes a page with state `m` and frozen page `page` stores in a file:
/// the page, when its bytes are its own (`meta::holds_bytes`) and not zero.
fn stored_bytes(m: u8, page: Option<Page<'_>>) -> Option<Page<'_>> {
    page.filter(|p| meta::holds_bytes(m) && !p.is_zero())
}

/// The stored page `page` of a snapshot (see [`stored_bytes`]): exactly the
/// pages a file's page map lists.
fn stored_page(v: &Version, page: u64) -> Option<Page<'_>> {
    let e = v.pages.get(page);
    stored_bytes(e.meta, e.page)
}

/// A snapshot's page map while a file is encoded: candidate numbers (+ 1;
/// 0 for a page inherited from the parent file) that pass 3 renumbers to
/// page records.
enum MapDraft {
    /// The whole map, `(page, candidate)`.
    Whole(Vec<(u64, u32)>),
    /// For a snapshot whose parent is an earlier snapshot of the file, the
    /// pages that changed, `(page, candidate or 0, the parent's)`, read off
    /// the page-table diff in the cost of the changes (§5.1).
    Changes(Vec<(u64, u32, u32)>),
}

fn xor_pages(a: &PageBytes, b: &PageBytes) -> Box<PageBytes> {
    let mut out = Box::new(*a);
    for (o, x) in out.iter_mut().zip(b.iter()) {
        *o ^= x;
    }
    out
}

/// A stored body: the page itself, or (with a base) its XOR with the
/// parent's page at the same page number.
struct Body<'a> {
    page: Page<'a>,
    base: Option<Page<'a>>,
}

/// Sorted `(page, entry)` pairs as maximal runs of consecutive pages.
fn runs_of(entries: &[(u64, u32)]) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = Vec::new();
    for &(page, index) in entries {
        match runs.last_mut() {
            Some(RunRecord(first, list)) if *first + list.len() as u64 == page => list.push(index),
            _ => runs.push(RunRecord(page, vec![index])),
        }
    }
    runs
}

/// A page object to store and its xor base (page number, parent's page).
type Candidate<'a> = (Page<'a>, Option<(u64, Page<'a>)>);

/// Where an encoder writes: the file's bytes in order, then the header
/// over the first 64 (written as zeros first).
trait Sink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()>;
}

impl Sink for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()> {
        self[..HEADER_LENGTH].copy_from_slice(header);
        Ok(())
    }
}

/// A file being written: buffered appends, then the header in place.
struct FileSink<'f>(std::io::BufWriter<&'f mut fs::File>);

impl Sink for FileSink<'_> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }

    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()> {
        use std::io::Seek;
        self.0.flush()?;
        let file = self.0.get_mut();
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(header)
    }
}

/// The file bytes of `items`, in memory.
fn encode<'a>(
    items: &[Item<'a>],
    parent: Option<&ParentFile<'a>>,
    options: &mut Writer<'_>,
) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::new();
    encode_into(&mut out, &|e| unreachable!("writing into a Vec cannot fail: {e}"), items, parent, options)?;
    Ok(out)
}

/// Encodes `items` into `sink` as frames compress: at most one batch of
/// frames (16 per worker) is in memory at once, not the file. `io` names
/// the file in a write error.
fn encode_into<'a>(
    sink: &mut dyn Sink,
    io: &dyn Fn(std::io::Error) -> FileError,
    items: &[Item<'a>],
    parent: Option<&ParentFile<'a>>,
    options: &mut Writer<'_>,
) -> Result<(), FileError> {
    let pool = Pool::new(options.threads);
    // Pass 1: the distinct page objects to store, in order of first
    // appearance, each with its xor base (the parent's page at the same
    // page number, if any); page maps name them by candidate number + 1.
    let mut by_pointer: HashMap<RecPtr, u32> = HashMap::new();
    let mut candidates: Vec<Candidate<'a>> = Vec::new();
    let mut snapshots = Vec::with_capacity(items.len());
    let parent_version = parent.map(|p| p.snapshot.version());
    // The first page (of a lazily opened snapshot) that cannot be read.
    let mut unavailable: Option<u64> = None;
    let mut maps: Vec<MapDraft> = Vec::with_capacity(items.len());
    let position: HashMap<u64, usize> = items.iter().enumerate().map(|(i, item)| (item.id, i)).collect();
    for (i, item) in items.iter().enumerate() {
        let v = item.snapshot.version();
        let mut state = Vec::new();
        crate::state::encode_state(
            &mut state,
            &v.regions,
            &v.pages,
            v.default_allocation_address,
            v.layout_version,
            None,
        );
        snapshots.push(SnapshotRecord(
            item.id,
            item.name.map(str::to_owned),
            item.parent,
            v.layout_version,
            ByteBuf::from(state),
            Vec::new(),
        ));
        if let Some(&j) = item.parent.and_then(|p| position.get(&p)).filter(|&&j| j < i) {
            let mut list = Vec::new();
            // Runs of more than one page (uniform layout changes) hold no
            // bytes on either side: nothing to list for them.
            items[j].snapshot.version().pages.diff(&v.pages, |page, _, before, after| {
                let (before, after) =
                    (stored_bytes(before.meta, before.page), stored_bytes(after.meta, after.page));
                if after.is_some_and(|f| f.try_bytes().is_none()) {
                    unavailable.get_or_insert(page * PAGE as u64);
                    return;
                }
                // The parent's stored pages got candidates when it was
                // encoded.
                let was = before.map_or(0, |b| by_pointer.get(&b.ptr()).copied().unwrap_or(0));
                let now = after.map_or(0, |frozen| {
                    *by_pointer.entry(frozen.ptr()).or_insert_with(|| {
                        candidates.push((frozen, None));
                        candidates.len() as u32
                    })
                });
                if was != now {
                    list.push((page, now, was));
                }
            });
            list.sort_unstable_by_key(|&(page, ..)| page);
            maps.push(MapDraft::Changes(list));
            continue;
        }
        let mut full: Vec<(u64, u32)> = Vec::new();
        v.pages.for_each_stored(|page, m, frozen| {
            let Some(frozen) = stored_bytes(m, Some(frozen)) else { return };
            let base = parent_version.and_then(|pv| stored_page(pv, page));
            // Inherited from the parent: decided by identity or origin
            // (the same record of the parent's file, as a snapshot restored
            // from a lazily opened parent has), else by fingerprint, so an
            // unchanged page of a lazy parent is never read.
            if base.is_some_and(|b| b.same_bytes(frozen)) {
                full.push((page, 0));
                return;
            }
            // A changed page: its bytes, and its base's for the XOR.
            if frozen.try_bytes().is_none() || base.is_some_and(|b| b.try_bytes().is_none()) {
                unavailable.get_or_insert(page * PAGE as u64);
                return;
            }
            let index = *by_pointer.entry(frozen.ptr()).or_insert_with(|| {
                candidates.push((frozen, base.map(|b| (page, b))));
                candidates.len() as u32
            });
            full.push((page, index));
        });
        maps.push(MapDraft::Whole(full));
    }

    if let Some(address) = unavailable {
        return Err(FileError::SourcePageUnavailable { address });
    }

    // Pass 2: BLAKE3 of every candidate, on the worker threads.
    let candidate_hashes: Vec<[u8; 32]> = pool
        .run(0..candidates.len(), 256, |range| {
            candidates[range].iter().map(|(p, _)| *blake3::hash(p.bytes()).as_bytes()).collect::<Vec<_>>()
        })
        .concat();

    // Pass 3: one page record per distinct hash, in order of first
    // appearance (so a page's record keeps its first appearance's xor base);
    // page maps renumbered from candidates to records.
    let mut by_hash: HashMap<[u8; 32], u32> = HashMap::with_capacity(candidates.len());
    let mut record_of: Vec<u32> = Vec::with_capacity(candidates.len());
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut bodies: Vec<Body> = Vec::new();
    let mut bases: Vec<Option<u64>> = Vec::new();
    for ((frozen, base), hash) in candidates.iter().zip(&candidate_hashes) {
        record_of.push(*by_hash.entry(*hash).or_insert_with(|| {
            hashes.push(*hash);
            bodies.push(Body { page: *frozen, base: base.map(|(_, b)| b) });
            bases.push(base.as_ref().map(|(page, _)| *page));
            hashes.len() as u32
        }));
    }
    // Page maps, renumbered from candidates to records: a snapshot whose
    // parent is an earlier snapshot of the file lists only what differs from
    // the parent's map (§5.1, 1.2) — the changed pages whose record differs
    // once equal pages share one; any other, its whole map.
    let record = |candidate: u32| if candidate == 0 { 0 } else { record_of[candidate as usize - 1] };
    for (entry, map) in snapshots.iter_mut().zip(&maps) {
        let entries: Vec<(u64, u32)> = match map {
            MapDraft::Whole(full) => full.iter().map(|&(page, c)| (page, record(c))).collect(),
            MapDraft::Changes(list) => list
                .iter()
                .map(|&(page, now, was)| (page, record(now), record(was)))
                .filter(|&(_, now, was)| now != was)
                .map(|(page, now, _)| (page, now))
                .collect(),
        };
        entry.5 = runs_of(&entries);
    }

    // Frames: 16 bodies each, compressed on the worker threads a batch at
    // a time and appended as each batch is done.
    sink.append(&[0; HEADER_LENGTH]).map_err(io)?;
    let mut frames = Vec::new();
    let mut frames_length = 0u64;
    let frame_count = bodies.len().div_ceil(PAGES_PER_FRAME);
    let fill = |n: usize, raw: &mut Vec<u8>| {
        let body = &bodies[n];
        match body.base {
            None => raw.extend_from_slice(body.page.bytes()),
            Some(base) => raw.extend(body.page.bytes().iter().zip(base.bytes().iter()).map(|(a, b)| a ^ b)),
        }
    };
    for batch in (0..frame_count).step_by(pool.batch_frames()) {
        let batch = batch..(batch + pool.batch_frames()).min(frame_count);
        for frame in codec::compress_frames(pool, options.level, bodies.len(), batch, &fill) {
            let length = frame.bytes.len() as u64;
            frames.push(FrameRecord(
                frames_length,
                length as u32,
                frame.pages,
                ByteBuf::from(frame.checksum.to_vec()),
            ));
            sink.append(&frame.bytes).map_err(io)?;
            frames_length += length;
            limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
        }
        if let Some(progress) = options.progress.as_mut() {
            progress(Progress {
                done: ((frames.len() * PAGES_PER_FRAME).min(bodies.len()) * PAGE) as u64,
                total: (bodies.len() * PAGE) as u64,
            });
        }
    }
    let pages: Vec<PageRecord> = hashes
        .iter()
        .zip(&bases)
        .enumerate()
        .map(|(i, (h, base))| {
            PageRecord(
                ByteBuf::from(h.to_vec()),
                (i / PAGES_PER_FRAME) as u32,
                (i % PAGES_PER_FRAME) as u8,
                if base.is_some() { KIND_XOR } else { KIND_PLAIN },
                *base,
                // Invariant: every stored page was read above (unreadable
                // ones end the encode before this point).
                Some(bodies[i].page.fingerprint().expect("a readable page has a fingerprint")),
            )
        })
        .collect();
    let parent_record = parent.map(|p| ParentRecord(ByteBuf::from(p.index_hash.to_vec()), p.hint.to_owned()));
    let counts = (snapshots.len() as u64, pages.len() as u64, frames.len() as u64);
    let index = Index(frames, pages, snapshots, parent_record);
    // Invariant: encoding plain values into a Vec cannot fail.
    let index = rmp_serde::to_vec(&index).expect("encoding into a Vec cannot fail");
    // Never write a file a reader would refuse.
    check_writer_limits(counts.0, counts.1, counts.2, frames_length, index.len() as u64)?;
    sink.append(&index).map_err(io)?;
    sink.write_header(&Header::new(parent.is_some(), frames_length, &index).to_bytes()).map_err(io)
}

/// The reader's size limits (FORMAT.md §3.1, §6.1–§6.2), checked by the
/// writer so that it never writes a file a reader refuses: a timeline too
/// large for one file is [`FileError::SizeLimit`], and nothing is written.
fn check_writer_limits(
    snapshots: u64,
    records: u64,
    frames: u64,
    frames_length: u64,
    index_length: u64,
) -> Result<(), FileError> {
    limit("snapshot count", snapshots, MAX_SNAPSHOTS)?;
    limit("page record count", records, MAX_STORED_PAGES)?;
    limit("frame count", frames, MAX_STORED_PAGES)?;
    limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
    limit("index length", index_length, MAX_INDEX_LENGTH)
}

/// How far a save or load has come, for a progress bar: bytes of page data
/// compressed (save) or decompressed and checked (load) so far, of the total
/// for the file. Reported after each batch of frames (16 frames, 1 MiB of
/// pages, per worker thread; see [`Writer::threads`]); the last report has
/// `done == total`. A file with no stored pages reports nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// [`save`], calling `progress` as frames are compressed
/// ([`Writer::progress`]).
pub fn save_with_progress(
    snapshot: &Snapshot,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), FileError> {
    Writer::new().progress(progress).save(snapshot, path)
}

/// [`load`], calling `progress` as the file's frames are decompressed and
/// checked (a parent chain is loaded first, without reports;
/// [`Loader::progress`]).
pub fn load_with_progress(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Snapshot, FileError> {
    Loader::new().progress(progress).load(path)
}

/// [`verify`], calling `progress` as the file's frames are checked.
pub fn verify_with_progress(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<(), FileError> {
    Loader::new().progress(progress).verify(path)
}

/// The file bytes of `snapshot` (exactly what [`save`] writes). Deterministic:
/// equal snapshots give equal bytes. Time: O(allocations + committed pages),
/// hashing and compressing every distinct non-zero page once.
///
/// Fails only for a snapshot of a lazily opened file one of whose pages
/// cannot be read ([`FileError::SourcePageUnavailable`]).
pub fn to_bytes(snapshot: &Snapshot) -> Result<Vec<u8>, FileError> {
    Writer::new().to_bytes(snapshot)
}

/// The file bytes of a whole timeline (exactly what [`save_timeline`]
/// writes): every entry in id order with its id, name and parent; pages
/// shared by several snapshots are stored once. Fails as [`to_bytes`] does.
pub fn timeline_to_bytes(timeline: &Timeline) -> Result<Vec<u8>, FileError> {
    Writer::new().timeline_to_bytes(timeline)
}

// --------------------------------------------------------------- decode ----

#[derive(Clone)]
struct Decoded {
    id: u64,
    name: Option<String>,
    parent: Option<u64>,
    snapshot: Snapshot,
}

fn limit(what: &'static str, value: u64, max: u64) -> Result<(), FileError> {
    if value > max { Err(FileError::SizeLimit { what, value, limit: max }) } else { Ok(()) }
}

fn corrupt(what: &'static str) -> FileError {
    FileError::CorruptIndex(what)
}

/// The identity of a file as a parent: BLAKE3-256 of its index bytes (after
/// checking its header and index checksum).
fn index_hash(bytes: &[u8]) -> Result<[u8; 32], FileError> {
    let (_, index, _) = split(bytes)?;
    Ok(*blake3::hash(index).as_bytes())
}

/// Checks a parent record's fields (FORMAT.md §6.2).
fn check_parent_record(p: &ParentRecord) -> Result<(), FileError> {
    if p.0.len() != 32 {
        return Err(corrupt("parent index hash is not 32 bytes"));
    }
    let hint = Path::new(&p.1);
    let normal = hint.components().all(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
    if p.1.is_empty()
        || p.1.len() > MAX_HINT_LENGTH
        || !normal
        || !hint.components().any(|c| matches!(c, Component::Normal(_)))
    {
        return Err(corrupt("parent file-name hint is not a relative path to a file"));
    }
    Ok(())
}

/// Finds the parent of an incremental file (its loaded snapshot), checking
/// its identity.
type Resolver<'r> = dyn FnMut(&ParentRecord) -> Result<Snapshot, FileError> + 'r;

/// A frame record, compact: where the frame is, its pages, its checksum.
#[derive(Clone, Copy)]
struct FrameInfo {
    offset: u64,
    length: u32,
    pages: u8,
    checksum: [u8; 8],
}

impl FrameInfo {
    fn of(FrameRecord(offset, length, pages, checksum): &FrameRecord) -> FrameInfo {
        // Invariant: `parse_index` checked the checksum is 8 bytes.
        FrameInfo {
            offset: *offset,
            length: *length,
            pages: *pages,
            checksum: checksum[..8].try_into().expect("8"),
        }
    }
}

/// How the pages of a frame are checked once decompressed.
#[derive(Clone, Copy)]
enum PageChecks<'a> {
    /// Each page against its record's BLAKE3 hash and fingerprint (a
    /// full load: the error names the page).
    Records(&'a [PageRecord]),
    /// The frame's pages together against one digest of their hashes and
    /// fingerprints (what a lazily opened file keeps, see [`LazyIndex`]);
    /// `bases` are the records' XOR bases in an incremental file
    /// ([`NO_BASE`] for a plain page).
    Digests { digests: &'a [[u8; 32]], bases: Option<&'a [u64]> },
}

/// A record's XOR base in [`PageChecks::Digests`]: none (a plain page).
const NO_BASE: u64 = u64::MAX;

/// Adds a page to its frame's digest: the BLAKE3 of the frame's pages'
/// `hash ‖ fingerprint (u64 LE)`, in slot order. Checking the digest
/// checks every page's hash and fingerprint at once.
fn digest_page(digest: &mut blake3::Hasher, hash: &[u8], fingerprint: u64) {
    digest.update(hash);
    digest.update(&fingerprint.to_le_bytes());
}

/// The part of a 1.2 file's index that a lazily opened file keeps while it
/// is open: per frame its place, checksum and pages' digest, per page
/// record its frame (and its XOR base in an incremental file). About 10
/// bytes a page, where the decoded index took about 100; the page records'
/// fingerprints live in the store's records.
struct LazyIndex {
    frames: Vec<FrameInfo>,
    digests: Vec<[u8; 32]>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    owner: Vec<[u32; PAGES_PER_FRAME]>,
    /// The frame of each page record (0-based records).
    frame_of: Vec<u32>,
    bases: Option<Vec<u64>>,
}

impl LazyIndex {
    /// The compact form of `parsed` (a 1.2 file: every record has its
    /// fingerprint).
    fn new(parsed: &Parsed) -> LazyIndex {
        let digests = parsed
            .owner
            .iter()
            .zip(&parsed.frames)
            .map(|(owners, f)| {
                let mut digest = blake3::Hasher::new();
                for &r in &owners[..usize::from(f.pages)] {
                    let PageRecord(hash, _, _, _, _, fingerprint) = &parsed.pages[r as usize - 1];
                    digest_page(&mut digest, hash, fingerprint.unwrap_or(0));
                }
                *digest.finalize().as_bytes()
            })
            .collect();
        let incremental = parsed.parent.is_some();
        LazyIndex {
            frames: parsed.frames.clone(),
            digests,
            owner: parsed.owner.clone(),
            frame_of: parsed.pages.iter().map(|r| r.1).collect(),
            bases: incremental.then(|| parsed.pages.iter().map(|r| r.4.unwrap_or(NO_BASE)).collect()),
        }
    }

    fn frames(&self) -> Frames<'_> {
        Frames {
            frames: &self.frames,
            checks: PageChecks::Digests { digests: &self.digests, bases: self.bases.as_deref() },
            owner: &self.owner,
            parent: None,
        }
    }
}

/// The parsed frame index of a file: what decoding a frame needs.
#[derive(Clone, Copy)]
struct Frames<'a> {
    frames: &'a [FrameInfo],
    checks: PageChecks<'a>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    owner: &'a [[u32; PAGES_PER_FRAME]],
    /// The parent snapshot (incremental files): the XOR bases.
    parent: Option<&'a Version>,
}

impl Frames<'_> {
    /// Checks and decompresses frame `n` (its compressed bytes `src`),
    /// checks each page in it (un-XORed, against its BLAKE3 hash and, from
    /// 1.2, its fingerprint; never all zeros) and hands each to `sink` with
    /// its 0-based page record index and fingerprint.
    fn decode_frame(
        &self,
        n: usize,
        src: &[u8],
        decoder: &mut FrameDecoder,
        sink: &mut dyn FnMut(usize, &PageBytes, u64),
    ) -> Result<(), FileError> {
        let FrameInfo { pages: count, checksum, .. } = self.frames[n];
        let frame = n as u32;
        if blake3_prefix::<8>(src) != checksum {
            return Err(FileError::FrameCorrupt { frame });
        }
        let expected = usize::from(count) * PAGE;
        let got = decoder
            .zstd
            .decompress_to_buffer(src, &mut decoder.raw[..expected])
            .map_err(|_| FileError::FrameCorrupt { frame })?;
        if got != expected {
            return Err(FileError::FrameCorrupt { frame });
        }
        let mut digest = matches!(self.checks, PageChecks::Digests { .. }).then(blake3::Hasher::new);
        for slot in 0..usize::from(count) {
            let i = self.owner[n][slot] as usize - 1;
            let body: &PageBytes = decoder.raw[slot * PAGE..(slot + 1) * PAGE].try_into().expect("one page");
            let base = match self.checks {
                PageChecks::Records(pages) => pages[i].4,
                PageChecks::Digests { bases, .. } => bases.map(|b| b[i]).filter(|&b| b != NO_BASE),
            };
            let unxored: Box<PageBytes>;
            let page: &PageBytes = match (base, self.parent) {
                (Some(b), Some(pv)) => {
                    if *body == crate::page_table::ZERO_PAGE {
                        return Err(corrupt("a stored page is all zeros"));
                    }
                    let under = stored_page(pv, b)
                        .ok_or(corrupt("xor page's base is not a stored page of the parent"))?;
                    unxored = xor_pages(body, under.bytes());
                    &unxored
                }
                _ => body,
            };
            let hash = *blake3::hash(&page[..]).as_bytes();
            let fingerprint = crate::page_table::fingerprint(page);
            if let PageChecks::Records(pages) = self.checks {
                let PageRecord(recorded_hash, .., recorded_fingerprint) = &pages[i];
                if hash[..] != recorded_hash[..] || recorded_fingerprint.is_some_and(|f| f != fingerprint) {
                    return Err(FileError::PageHash { page: i as u32 + 1 });
                }
            }
            if fingerprint == 0 && *page == crate::page_table::ZERO_PAGE {
                return Err(corrupt("a stored page is all zeros"));
            }
            if let Some(d) = &mut digest {
                digest_page(d, &hash, fingerprint);
            }
            sink(i, page, fingerprint);
        }
        if let (PageChecks::Digests { digests, .. }, Some(d)) = (self.checks, digest)
            && *d.finalize().as_bytes() != digests[n]
        {
            // Some page of the frame has another hash or fingerprint than
            // its record: named by the frame's first record.
            return Err(FileError::PageHash { page: self.owner[n][0] });
        }
        Ok(())
    }
}

/// A file's index, decoded and checked (§6.2–§6.4): everything but the
/// frames' contents, the parent and the snapshots' layouts.
struct Parsed {
    /// The header's minor version.
    minor: u16,
    /// The frame records, checked, in compact form.
    frames: Vec<FrameInfo>,
    pages: Vec<PageRecord>,
    snapshots: Vec<SnapshotRecord>,
    parent: Option<ParentRecord>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    owner: Vec<[u32; PAGES_PER_FRAME]>,
}

fn parse_index(index_bytes: &[u8], header: &Header) -> Result<Parsed, FileError> {
    let incremental = header.incremental;
    let mut rest = index_bytes;
    let Index(frames, pages, snapshots, parent) =
        rmp_serde::decode::from_read(&mut rest).map_err(|_| corrupt("MessagePack index does not decode"))?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after the MessagePack index"));
    }
    limit("frame count", frames.len() as u64, MAX_STORED_PAGES)?;
    limit("page record count", pages.len() as u64, MAX_STORED_PAGES)?;
    limit("snapshot count", snapshots.len() as u64, MAX_SNAPSHOTS)?;
    if parent.is_some() != incremental {
        return Err(corrupt("parent record present exactly when the incremental flag is set"));
    }
    if let Some(p) = &parent {
        check_parent_record(p)?;
        if snapshots.len() != 1 {
            return Err(corrupt("an incremental file holds exactly one snapshot"));
        }
        if snapshots[0].0 != 0 || snapshots[0].1.is_some() || snapshots[0].2.is_some() {
            return Err(corrupt("an incremental file's snapshot has id 0, no name, no parent"));
        }
    }

    // Frames tile the frame area, in order.
    let mut at = 0u64;
    for FrameRecord(offset, length, count, checksum) in &frames {
        limit("frame compressed length", u64::from(*length), MAX_FRAME_COMPRESSED)?;
        if *offset != at || *length == 0 {
            return Err(corrupt("frames are not contiguous and ascending"));
        }
        if *count == 0 || usize::from(*count) > PAGES_PER_FRAME {
            return Err(corrupt("frame page count not in 1..=16"));
        }
        if checksum.len() != 8 {
            return Err(corrupt("frame checksum is not 8 bytes"));
        }
        at += u64::from(*length);
        if at > header.frames_length {
            return Err(corrupt("frame outside the frame area"));
        }
    }
    if at != header.frames_length {
        return Err(corrupt("frames do not fill the frame area"));
    }

    // Page records: valid, distinct slots and hashes, every slot used.
    let mut owner: Vec<[u32; PAGES_PER_FRAME]> = vec![[0; PAGES_PER_FRAME]; frames.len()];
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(pages.len());
    for (i, PageRecord(hash, frame, slot, kind, base, fingerprint)) in pages.iter().enumerate() {
        if hash.len() != 32 {
            return Err(corrupt("page hash is not 32 bytes"));
        }
        if fingerprint.is_some() != (header.minor >= FORMAT_MINOR_FINGERPRINTS) {
            return Err(corrupt("page fingerprint present exactly from format 1.2 on"));
        }
        match (*kind, base) {
            (KIND_PLAIN, None) => {}
            (KIND_XOR, Some(b)) if incremental && *b < VPN_LIMIT => {}
            (KIND_XOR, _) if !incremental => {
                return Err(corrupt("xor page in a file that is not incremental"));
            }
            _ => return Err(corrupt("page kind or base invalid")),
        }
        let f = frames.get(*frame as usize).ok_or(corrupt("page record names a missing frame"))?;
        if *slot >= f.2 {
            return Err(corrupt("page record names a missing slot"));
        }
        let cell = &mut owner[*frame as usize][usize::from(*slot)];
        if *cell != 0 {
            return Err(corrupt("two page records share a slot"));
        }
        *cell = i as u32 + 1;
        if !seen.insert(hash.as_slice()) {
            return Err(corrupt("two page records have the same hash"));
        }
    }
    let slots: u64 = frames.iter().map(|f| u64::from(f.2)).sum();
    if slots != pages.len() as u64 {
        return Err(corrupt("a frame slot has no page record"));
    }

    let frames = frames.iter().map(FrameInfo::of).collect();
    Ok(Parsed { minor: header.minor, frames, pages, snapshots, parent, owner })
}

fn decode(
    bytes: &[u8],
    resolve: &mut Resolver<'_>,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let (area, index_bytes, header) = split(bytes)?;
    let parsed = parse_index(index_bytes, &header)?;
    // The parent (incremental files only), found and checked by `resolve`.
    let parent_snapshot = match &parsed.parent {
        Some(p) => Some(resolve(p)?),
        None => None,
    };
    let parent_version = parent_snapshot.as_ref().map(Snapshot::version);
    let store = file_store(parent_version);
    let stored = decode_frames(&parsed, area, parent_version, &store, loader)?;
    build_snapshots(&parsed, &stored, parent_version, &store, None, &mut loader.binding)
}

/// Every frame: checksum, bounded decompression; then every page in it:
/// un-XOR, BLAKE3 of the final bytes, fingerprint (1.2), no zero bodies or
/// pages. Frames are independent, so batches of them run on the worker
/// threads; the first error in frame order wins, as in a sequential pass.
/// Returns the frozen page of every page record, in record order.
fn decode_frames(
    parsed: &Parsed,
    area: &[u8],
    parent: Option<&Version>,
    store: &Arc<Store>,
    loader: &mut Loader<'_>,
) -> Result<Vec<PageRef>, FileError> {
    let pool = Pool::new(loader.threads);
    let Parsed { frames, pages, owner, .. } = parsed;
    let mut stored: Vec<Option<PageRef>> = (0..pages.len()).map(|_| None).collect();
    let total_bytes = pages.len() as u64 * PAGE as u64;
    let mut done = 0u64;
    let frames_ref = Frames { frames, checks: PageChecks::Records(pages), owner, parent };
    for batch in (0..frames.len()).step_by(pool.batch_frames()) {
        let batch = batch..(batch + pool.batch_frames()).min(frames.len());
        let parts = pool.run(batch.clone(), FRAMES_PER_BATCH / 4, |range| {
            let mut decoder = FrameDecoder::new()?;
            let mut out = Vec::with_capacity(range.len() * PAGES_PER_FRAME);
            for n in range {
                let FrameInfo { offset, length, .. } = frames[n];
                let src = &area[offset as usize..(offset + u64::from(length)) as usize];
                frames_ref.decode_frame(n, src, &mut decoder, &mut |i, page, fingerprint| {
                    out.push((i, PageRef::new_in(store, page, Some(fingerprint))));
                })?;
            }
            Ok::<_, FileError>(out)
        });
        for part in parts {
            for (i, page) in part? {
                stored[i] = Some(page);
            }
        }
        done += frames[batch].iter().map(|f| u64::from(f.pages)).sum::<u64>() * PAGE as u64;
        loader.report(done, total_bytes);
    }
    // Invariant: every record has a slot (checked by `parse_index`) and
    // every slot was decoded.
    Ok(stored.into_iter().map(|p| p.expect("every record was decoded")).collect())
}

/// The `(page, entry)` pairs a record's runs list, checking their shape:
/// non-empty, ascending, not touching, inside the page-number space.
fn entries_of(runs: &[RunRecord]) -> Result<Vec<(u64, u32)>, FileError> {
    let mut entries = Vec::with_capacity(runs.iter().map(|r| r.1.len()).sum());
    let mut previous_end: Option<u64> = None;
    for RunRecord(first, list) in runs {
        let end = first
            .checked_add(list.len() as u64)
            .filter(|&e| e <= VPN_LIMIT)
            .ok_or(corrupt("page map run out of range"))?;
        if list.is_empty() || previous_end.is_some_and(|p| *first <= p) {
            return Err(corrupt("page map runs empty, overlapping, adjacent or out of order"));
        }
        previous_end = Some(end);
        entries.extend((*first..end).zip(list.iter().copied()));
    }
    Ok(entries)
}

/// `delta` (sorted) applied to the page map `base` (sorted): an entry
/// replaces `base`'s at its page (it must differ), a 0 removes `base`'s
/// (there must be one), every other page of `base` stays (§5, 1.2).
fn apply_delta(base: &[(u64, u32)], delta: &[(u64, u32)]) -> Result<Vec<(u64, u32)>, FileError> {
    let mut out = Vec::with_capacity(base.len() + delta.len());
    let mut b = base.iter().peekable();
    for &(page, entry) in delta {
        while let Some(&&kept) = b.peek().filter(|(p, _)| *p < page) {
            out.push(kept);
            b.next();
        }
        let under = b.next_if(|(p, _)| *p == page).map(|&(_, e)| e);
        match (under, entry) {
            (None, 0) => return Err(corrupt("page map removes a page its parent snapshot does not store")),
            (Some(u), e) if u == e => return Err(corrupt("page map repeats its parent snapshot's entry")),
            (_, 0) => {}
            (_, e) => out.push((page, e)),
        }
    }
    out.extend(b.copied());
    Ok(out)
}

/// Resolves the snapshot records' page maps in file order: from 1.2 on, a
/// record with a parent lists only what differs from its parent's map, so
/// a parent's whole map is kept while a later record names it.
struct MapResolver {
    deltas: bool,
    /// Later records naming each id as their parent.
    pending: HashMap<u64, usize>,
    kept: HashMap<u64, Vec<(u64, u32)>>,
}

impl MapResolver {
    fn new(parsed: &Parsed) -> Self {
        let deltas = parsed.minor >= FORMAT_MINOR_FINGERPRINTS;
        let mut pending: HashMap<u64, usize> = HashMap::new();
        if deltas {
            for p in parsed.snapshots.iter().filter_map(|r| r.2) {
                *pending.entry(p).or_default() += 1;
            }
        }
        MapResolver { deltas, pending, kept: HashMap::new() }
    }

    /// The whole page map of the next record (`id`, `parent`, `runs`).
    fn resolve(
        &mut self,
        id: u64,
        parent: Option<u64>,
        runs: &[RunRecord],
    ) -> Result<Vec<(u64, u32)>, FileError> {
        let listed = entries_of(runs)?;
        let full = match parent.filter(|_| self.deltas) {
            Some(p) => {
                let base = self.kept.get(&p).ok_or(corrupt("snapshot parent is not an earlier snapshot"))?;
                let full = apply_delta(base, &listed)?;
                if let Some(left) = self.pending.get_mut(&p) {
                    *left -= 1;
                    if *left == 0 {
                        self.kept.remove(&p);
                    }
                }
                full
            }
            None => listed,
        };
        if self.pending.get(&id).is_some_and(|&n| n > 0) {
            self.kept.insert(id, full.clone());
        }
        Ok(full)
    }
}

/// The store a file's pages go into: its parent's (an incremental file
/// shares the pages it inherits), or a new one.
fn file_store(parent: Option<&Version>) -> Arc<Store> {
    parent.and_then(|v| v.pages.store_ref().cloned()).unwrap_or_else(Store::new)
}

/// The snapshots of a file whose page records are `stored` (loaded or lazy,
/// in `store`), checking §6.8–§6.9.
fn build_snapshots(
    parsed: &Parsed,
    stored: &[PageRef],
    parent_version: Option<&Version>,
    store: &Arc<Store>,
    keep: Option<&Arc<dyn LazySource>>,
    binding: &mut Binding<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let Parsed { pages, snapshots, .. } = parsed;
    let lineage = Lineage::default();
    let mut referenced = vec![false; pages.len()];
    // The first page number referencing each record (for canonical kinds).
    let mut first_use: Vec<Option<u64>> = vec![None; pages.len()];
    let mut ids: HashSet<u64> = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut built = Vec::with_capacity(snapshots.len());
    // Delta page maps (1.2): each parent's table and layout-only table are
    // kept while a later record names it.
    let deltas = parsed.minor >= FORMAT_MINOR_FINGERPRINTS;
    let mut pending: HashMap<u64, usize> = HashMap::new();
    if deltas {
        for p in snapshots.iter().filter_map(|r| r.2) {
            *pending.entry(p).or_default() += 1;
        }
    }
    let mut tables: HashMap<u64, (PageTable, PageTable)> = HashMap::new();
    for SnapshotRecord(id, name, parent, layout_version, state, runs) in snapshots {
        if let Some(p) = parent
            && !ids.contains(p)
        {
            return Err(corrupt("snapshot parent is not an earlier snapshot"));
        }
        if !ids.insert(*id) {
            return Err(corrupt("two snapshots have the same id"));
        }
        if let Some(n) = name
            && !names.insert(n.as_str())
        {
            return Err(corrupt("two snapshots have the same name"));
        }
        if name.as_deref().is_some_and(crate::timeline::reserved_name) {
            return Err(corrupt("a snapshot name starts with '#' (reserved for ids)"));
        }
        let layout = crate::state::decode_layout(state, store.clone())?;
        if layout.layout_version != *layout_version {
            return Err(corrupt("snapshot layout version differs from its state"));
        }
        let delta_parent = parent.filter(|_| deltas).map(|p| tables.get(&p).cloned());
        let mut table;
        if let Some(from) = delta_parent {
            // A delta page map (1.2, §5.1): the parent's table, brought to
            // this record's layout where the two layouts differ, with the
            // delta applied — in the cost of the differences, not of the
            // pages (the tables keep their lineage, so diffs between the
            // file's snapshots stay cheap too).
            let (parent_table, parent_layout) =
                from.ok_or(corrupt("snapshot parent is not an earlier snapshot"))?;
            table = parent_table;
            // Inherited pages the new layout cannot hold: the delta must
            // drop each of them.
            let mut must_drop: HashSet<u64> = HashSet::new();
            parent_layout.diff(&layout.table, |vpn, count, _, now| {
                if count == 1 {
                    let page = table.get(vpn).page.map(|p| p.to_ref());
                    let keep = if meta::holds_bytes(now.meta) { page } else { None };
                    if keep.is_none() && table.get(vpn).page.is_some() {
                        must_drop.insert(vpn);
                    }
                    table.set_entry(vpn, now.meta, keep, now.view_offset);
                    return;
                }
                // A uniform run (say, all of user space reprotected): the
                // new state laid over the range at once, then the parent's
                // pages there kept or dropped one by one.
                let mut had = Vec::new();
                table.for_each_stored_in(vpn, vpn + count, |page, _, bytes| had.push((page, bytes.to_ref())));
                table.set_range(vpn, vpn + count, now.meta, now.view_offset);
                for (page, bytes) in had {
                    if meta::holds_bytes(now.meta) {
                        table.set_entry(page, now.meta, Some(bytes), 0);
                    } else {
                        must_drop.insert(page);
                    }
                }
            });
            for (page, index) in entries_of(runs)? {
                let here = table.get(page);
                if index == 0 {
                    if !must_drop.remove(&page) {
                        if here.page.is_none() {
                            return Err(corrupt(
                                "page map removes a page its parent snapshot does not store",
                            ));
                        }
                        table.set_page(page, None);
                    }
                    continue;
                }
                if !meta::holds_bytes(here.meta) {
                    return Err(corrupt("page map names a page that is not committed"));
                }
                let frozen =
                    stored.get(index as usize - 1).ok_or(corrupt("page map names a missing page record"))?;
                if here.page.is_some_and(|p| p.ptr() == frozen.page().ptr()) {
                    return Err(corrupt("page map repeats its parent snapshot's entry"));
                }
                referenced[index as usize - 1] = true;
                table.set_page(page, Some(frozen.clone()));
            }
            if !must_drop.is_empty() {
                return Err(corrupt("page map names a page that is not committed"));
            }
        } else {
            table = layout.table.clone();
            for (page, index) in entries_of(runs)? {
                if !meta::holds_bytes(table.get(page).meta) {
                    return Err(corrupt("page map names a page that is not committed"));
                }
                let under = parent_version.and_then(|pv| stored_page(pv, page));
                if index == 0 {
                    // Inherited: the parent's page at the same page number.
                    let under = under.ok_or(corrupt("page map inherits a page the parent does not store"))?;
                    table.set_page(page, Some(under.to_ref()));
                    continue;
                }
                let frozen =
                    stored.get(index as usize - 1).ok_or(corrupt("page map names a missing page record"))?;
                // Fingerprints first: a lazily loaded page is read only when
                // they match (never, in a canonical file).
                if under.is_some_and(|u| u.same_bytes(frozen.page())) {
                    return Err(corrupt("a page equal to the parent's is stored instead of inherited"));
                }
                let i = index as usize - 1;
                if first_use[i].is_none() {
                    first_use[i] = Some(page);
                    // Canonical kinds: xor exactly where the parent has a page.
                    let expected = under.map(|_| page);
                    if pages[i].4 != expected {
                        return Err(corrupt("page kind or xor base is not the canonical one"));
                    }
                }
                referenced[i] = true;
                table.set_page(page, Some(frozen.clone()));
            }
        }
        if pending.get(id).is_some_and(|&n| n > 0) {
            tables.insert(*id, (table.clone(), layout.table));
        }
        if let Some(p) = parent.filter(|_| deltas)
            && let Some(left) = pending.get_mut(&p)
        {
            *left -= 1;
            if *left == 0 {
                tables.remove(&p);
            }
        }
        if let Some(source) = keep {
            table.keep_source(source.clone());
        }
        let version = Version::new(
            layout.regions,
            table,
            layout.committed_pages,
            layout.default_allocation_address,
            layout.layout_version,
            &lineage,
        );
        built.push((*id, name.clone(), *parent, version));
    }
    if referenced.iter().any(|r| !r) {
        return Err(corrupt("a stored page is referenced by no snapshot"));
    }
    // The file is checked: its MMIO regions may be bound now.
    let mut out = Vec::with_capacity(built.len());
    for (id, name, parent, mut version) in built {
        binding.bind(&mut version.regions);
        out.push(Decoded { id, name, parent, snapshot: Snapshot::new(version) });
    }
    Ok(out)
}

/// What a loader does with the MMIO regions of the snapshots it builds,
/// which a file holds without handlers: nothing (they stay unbound), or
/// what a caller's binder says ([`load_with`]), asked once per distinct
/// region and shared by every snapshot of the file that has it.
#[derive(Default)]
struct Binding<'b> {
    binder: Option<&'b mut dyn FnMut(u64, u64) -> Option<MmioHandlers>>,
    asked: HashMap<(u64, u64), Option<Arc<MmioHandlers>>>,
}

impl<'b> Binding<'b> {
    /// Leaves every region unbound.
    fn none() -> Self {
        Binding { binder: None, asked: HashMap::new() }
    }

    /// Binds with `binder(base, length)`.
    fn with(binder: &'b mut dyn FnMut(u64, u64) -> Option<MmioHandlers>) -> Self {
        Binding { binder: Some(binder), asked: HashMap::new() }
    }

    /// Binds the unbound MMIO regions of `regions`. Time: nothing without a
    /// binder; O(allocations) with one, plus a call per new region.
    fn bind(&mut self, regions: &mut RegionMap) {
        let Binding { binder: Some(binder), asked } = self else { return };
        regions.bind_unbound(&mut |base, length| {
            asked.entry((base, length)).or_insert_with(|| binder(base, length).map(Arc::new)).clone()
        });
    }
}

/// The resolver of the in-memory forms: they have no parent to offer.
fn no_parent(p: &ParentRecord) -> Result<Snapshot, FileError> {
    Err(FileError::ParentMissing { path: PathBuf::from(&p.1) })
}

fn one_snapshot(mut all: Vec<Decoded>) -> Result<Snapshot, FileError> {
    if all.len() != 1 {
        return Err(FileError::SnapshotCount { found: all.len() });
    }
    Ok(all.pop().expect("one snapshot").snapshot)
}

/// Decodes a one-snapshot file held in memory, checking everything
/// ([`load`] without the file system). Time: O(file size + committed pages).
/// An incremental file needs its parent: use [`incremental_from_bytes`]
/// (here it is [`FileError::ParentMissing`] with the file-name hint).
pub fn load_from_bytes(bytes: &[u8]) -> Result<Snapshot, FileError> {
    one_snapshot(decode(bytes, &mut no_parent, &mut Loader::new())?)
}

/// [`load_from_bytes`] that binds the file's MMIO regions with `binder`,
/// as [`load_with`] does. Time: as `load_from_bytes`, plus the binder's.
pub fn load_from_bytes_with(
    bytes: &[u8],
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<Snapshot, FileError> {
    one_snapshot(decode(bytes, &mut no_parent, &mut Loader::new().binder(binder))?)
}

/// Checks a self-contained file held in memory as [`verify`] does: header,
/// index, every frame and every page hash, every snapshot's layout and page
/// map (an incremental file is [`FileError::ParentMissing`]).
pub fn verify_bytes(bytes: &[u8]) -> Result<(), FileError> {
    decode(bytes, &mut no_parent, &mut Loader::new()).map(drop)
}

/// Decodes a timeline file held in memory (see [`load_timeline`]).
pub fn timeline_from_bytes(bytes: &[u8]) -> Result<Timeline, FileError> {
    timeline_of(decode(bytes, &mut no_parent, &mut Loader::new())?)
}

/// [`timeline_from_bytes`] that binds the file's MMIO regions with
/// `binder`, as [`load_timeline_with`] does. Time: as `timeline_from_bytes`,
/// plus the binder's.
pub fn timeline_from_bytes_with(
    bytes: &[u8],
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<Timeline, FileError> {
    timeline_of(decode(bytes, &mut no_parent, &mut Loader::new().binder(binder))?)
}

fn timeline_of(decoded: Vec<Decoded>) -> Result<Timeline, FileError> {
    let mut timeline = Timeline::new();
    let mut new_ids: HashMap<u64, SnapshotId> = HashMap::new();
    for d in decoded {
        let parent = d.parent.map(|p| new_ids[&p]);
        // Invariant: decode checked parents (earlier ids) and unique names.
        let id = timeline.insert(d.snapshot, parent, d.name.as_deref()).expect("checked by decode");
        new_ids.insert(d.id, id);
    }
    Ok(timeline)
}

/// The bytes of an incremental file (incremental since format 1.1; exactly what
/// [`save_incremental`] writes) of `snapshot` against a parent file held in
/// memory: `parent_file` is the parent's bytes (its identity is the BLAKE3 of
/// its index) and `parent` the snapshot it loads to (the caller's promise;
/// [`save_incremental`] loads it). `hint` is the parent's path relative to
/// the child's directory, `/`-separated. Deterministic.
pub fn incremental_to_bytes(
    snapshot: &Snapshot,
    parent: &Snapshot,
    parent_file: &[u8],
    hint: &str,
) -> Result<Vec<u8>, FileError> {
    let index_hash = index_hash(parent_file)?;
    // An invalid hint (absolute, empty, ...) is refused as a reader would.
    check_parent_record(&ParentRecord(ByteBuf::from(index_hash.to_vec()), hint.to_owned()))?;
    let item = Item { id: 0, name: None, parent: None, snapshot };
    encode(&[item], Some(&ParentFile { snapshot: parent, index_hash, hint }), &mut Writer::new())
}

/// Decodes an incremental file held in memory against its parent:
/// `parent_file` must be the file it was saved against
/// ([`FileError::ParentMismatch`] otherwise, with the hint as path) and
/// `parent` the snapshot that file loads to. A self-contained file decodes
/// as with [`load_from_bytes`] (the parent unused).
pub fn incremental_from_bytes(
    bytes: &[u8],
    parent: &Snapshot,
    parent_file: &[u8],
) -> Result<Snapshot, FileError> {
    let identity = index_hash(parent_file)?;
    let mut resolve = |p: &ParentRecord| {
        if p.0[..] != identity[..] {
            return Err(FileError::ParentMismatch { path: PathBuf::from(&p.1) });
        }
        Ok(parent.clone())
    };
    one_snapshot(decode(bytes, &mut resolve, &mut Loader::new())?)
}

// ------------------------------------------------------------ file system ----

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_owned(), source }
}

/// What a file that is not a regular file is, for [`FileError::NotAFile`].
fn kind_of(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

fn not_a_file(path: &Path, t: &fs::FileType) -> FileError {
    FileError::NotAFile { path: path.to_owned(), kind: kind_of(t) }
}

/// Opens `path` for reading if it is a regular file (symbolic links
/// followed), with its length. Checked before opening (so a device or a
/// FIFO is never opened) and again on the opened file (so one swapped in
/// between is caught); on Unix the open is non-blocking, so even a FIFO
/// swapped in between cannot make it wait for a writer.
fn open_regular(path: &Path) -> Result<(fs::File, u64), FileError> {
    let before = fs::metadata(path).map_err(io(path))?;
    if !before.is_file() {
        return Err(not_a_file(path, &before.file_type()));
    }
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on the reads of a regular file.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io(path))?;
    let opened = file.metadata().map_err(io(path))?;
    if !opened.is_file() {
        return Err(not_a_file(path, &opened.file_type()));
    }
    Ok((file, opened.len()))
}

/// A file opened for reading whose header and index were read and checked
/// (§6.1): nothing else of it has been read.
struct Head {
    file: fs::File,
    header: Header,
    /// The 64 header bytes.
    raw: [u8; HEADER_LENGTH],
    index: Vec<u8>,
}

/// Opens `path` (a regular file, [`open_regular`]) and reads its header and
/// index, checked: see [`head_of`].
fn read_head(path: &Path) -> Result<Head, FileError> {
    let (file, length) = open_regular(path)?;
    head_of(path, file, length)
}

/// Reads the header of `file` (`length` bytes long), checks it and the
/// file's length against it and the limits, then reads the index it
/// locates (at most [`MAX_INDEX_LENGTH`]) and checks its checksum. Reads
/// at most 64 bytes before the checks, and no frame.
fn head_of(path: &Path, mut file: fs::File, length: u64) -> Result<Head, FileError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut raw = [0u8; HEADER_LENGTH];
    let head = &mut raw[..length.min(HEADER_LENGTH as u64) as usize];
    file.read_exact(head).map_err(io(path))?;
    let header = Header::parse(head, length)?;
    // Bounded: index_length ≤ MAX_INDEX_LENGTH (checked by `Header::parse`).
    let mut index = vec![0u8; header.index_length as usize];
    file.seek(SeekFrom::Start(header.index_offset))
        .and_then(|_| file.read_exact(&mut index))
        .map_err(io(path))?;
    header.check_index(&index)?;
    Ok(Head { file, header, raw, index })
}

/// The whole file of a checked [`Head`]: its frame area is read only now,
/// after the header and the index have passed their checks against the
/// file's length and the limits.
fn read_whole(path: &Path, head: Head) -> Result<Vec<u8>, FileError> {
    use std::io::{Read, Seek, SeekFrom};
    let Head { mut file, header, raw, index } = head;
    let total = header.index_offset + header.index_length; // ≤ 2^40 + 2^30: checked
    let total = usize::try_from(total).map_err(|_| FileError::SizeLimit {
        what: "file length",
        value: total,
        limit: usize::MAX as u64,
    })?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(total).map_err(|_| FileError::Io {
        path: path.to_owned(),
        source: std::io::ErrorKind::OutOfMemory.into(),
    })?;
    bytes.extend_from_slice(&raw);
    file.seek(SeekFrom::Start(HEADER_LENGTH as u64))
        .and_then(|_| (&mut file).take(header.frames_length).read_to_end(&mut bytes))
        .map_err(io(path))?;
    if bytes.len() as u64 != header.index_offset {
        // The file shrank since its length was checked.
        return Err(FileError::Truncated { expected: total as u64, actual: bytes.len() as u64 });
    }
    bytes.extend_from_slice(&index);
    Ok(bytes)
}

/// Reads a whole snapshot file, header and index first ([`read_head`]).
fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    read_whole(path, read_head(path)?)
}

/// On a file system that cannot take file locks: how old a leftover
/// temporary file of a save (one interrupted by a crash or a kill) must be
/// before a later successful save of the same target removes it: 10
/// minutes, far longer than the gaps between the writes of a save in
/// progress. Elsewhere a leftover is removed by the next save whatever its
/// age (see [`write_atomic`]).
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Attempts at a fresh random temporary name before giving up.
const TEMPORARY_ATTEMPTS: u32 = 64;

/// 64 random bits: std's per-process random hash keys over a counter, the
/// time and the process id (no crate needed; names are also created
/// exclusively, so a collision is only a retry).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.finish()
}

/// `.NAME.tmp-`: how every temporary file of a save of `NAME` starts.
fn temporary_prefix(file_name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

/// Creates a new temporary file `PREFIXxxxxxxxxxxxxxxxx` (16 random hex
/// digits) in `dir`, exclusively (`create_new`: never a file that already
/// exists, whoever made it; a name taken is retried with another), with
/// the mode of the file it will replace (`existing`; the default mode for a
/// new file) from the start, and that file's owner where permitted.
#[cfg_attr(not(unix), allow(unused_variables))]
fn create_temporary(
    dir: &Path,
    prefix: &std::ffi::OsStr,
    existing: Option<&fs::Metadata>,
) -> std::io::Result<(PathBuf, fs::File)> {
    for _ in 0..TEMPORARY_ATTEMPTS {
        let mut name = prefix.to_owned();
        name.push(format!("{:016x}", random_u64()));
        let temp = dir.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            // Never more open than the final mode, even before the chmod.
            options.mode(existing.map_or(0o666, |m| m.permissions().mode() & 0o777));
        }
        let file = match options.open(&temp) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        #[cfg(unix)]
        if let Some(m) = existing {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let set = (|| {
                let mine = file.metadata()?;
                if (mine.uid(), mine.gid()) != (m.uid(), m.gid()) {
                    // The owner where permitted (root), else the group
                    // where permitted (a group of ours), else ours.
                    if std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())).is_err() {
                        let _ = std::os::unix::fs::fchown(&file, None, Some(m.gid()));
                    }
                }
                // After the chown (which may clear set-id bits); exact,
                // whatever the umask.
                file.set_permissions(fs::Permissions::from_mode(m.permissions().mode() & 0o7777))
            })();
            if let Err(e) = set {
                drop(file);
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        }
        // Held until the file is closed (renamed or abandoned; a killed
        // process's locks go with it): what tells a sweeper this save is
        // alive. A sweeper may have taken the name between our create and
        // our lock; then the file is gone, and we take another name.
        file.lock()?;
        if !still_named(&temp, &file) {
            continue;
        }
        return Ok((temp, file));
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary file name"))
}

/// True when `path` still names the open `file` (not removed or replaced).
fn still_named(path: &Path, file: &fs::File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::symlink_metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// Removes the temporary files of saves of the same target (`prefix`, then
/// only hex digits and `-`: this crate's names and the earlier `PID-N`
/// ones) that no live save holds: a save keeps an exclusive lock on its
/// temporary file until it is renamed, and the lock dies with its process,
/// so a file whose lock can be taken is the leftover of a killed save,
/// however young. Where the file system cannot lock, a file untouched for
/// [`STALE_TEMPORARY_AGE`] is taken as abandoned. Best effort: errors are
/// ignored.
fn sweep_stale_temporaries(dir: &Path, prefix: &std::ffi::OsStr) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix) else { continue };
        if rest.is_empty() || !rest.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-') {
            continue;
        }
        let Some(meta) = entry.metadata().ok().filter(fs::Metadata::is_file) else { continue };
        let path = entry.path();
        let Ok(file) = fs::File::open(&path) else { continue };
        let abandoned = match file.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(_)) => meta
                .modified()
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age >= STALE_TEMPORARY_AGE)),
        };
        if abandoned && still_named(&path, &file) {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Writes `bytes` to `path` atomically; what [`save`] and the other savers
/// use, public for other files that must be written the same way (the
/// command line's SVG maps).
///
/// - `path` must be absent or a regular file: a directory, a device (as
///   `/dev/null`), a FIFO, a socket or a **symbolic link** is refused with
///   [`FileError::NotAFile`] before anything is written (a link is not
///   followed: a save never writes through a link planted in its
///   directory; give the link's target instead).
/// - The bytes go to a new temporary file in the same directory, named
///   `.NAME.tmp-` and 16 random hex digits and created exclusively (never
///   a file someone else made), with the mode of the file it replaces
///   from the start (a new file gets the default mode, under the umask)
///   and, where permitted, its owner; then `fsync`, rename over `path`,
///   `fsync` of the directory (Unix). After a crash `path` holds the old
///   file or the complete new one.
/// - On failure only the temporary file this call created is removed;
///   `path` is untouched; the error names `path`.
/// - The temporary file stays locked (an exclusive advisory lock) while
///   it is written. After a successful write, the temporary files of
///   earlier saves of the same `path` that no live process holds (the
///   leftovers of a save killed at any point) are removed; a save in
///   progress elsewhere keeps its file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_with(path, |file| file.write_all(bytes).map_err(io(path)))
}

/// [`write_atomic`] of what `write` writes into the temporary file (the
/// same rules; `write`'s error is returned as it is, after the temporary
/// file is removed).
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> Result<(), FileError>,
) -> Result<(), FileError> {
    let dir = directory_of(path);
    let file_name = path.file_name().ok_or_else(|| FileError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Some(m),
        Ok(m) => return Err(not_a_file(path, &m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(FileError::Io { path: path.to_owned(), source }),
    };
    let prefix = temporary_prefix(file_name);
    let (temp, mut file) = create_temporary(&dir, &prefix, existing.as_ref()).map_err(io(path))?;
    let written = write(&mut file).and_then(|()| file.sync_all().map_err(io(path)));
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path).map_err(io(path))) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    #[cfg(unix)]
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(path))?;
    sweep_stale_temporaries(&dir, &prefix);
    Ok(())
}

/// Saves `snapshot` to `path`, atomically replacing any regular file there
/// (after a crash `path` holds the old file or the complete new one; see
/// [`write_atomic`]: a `path` that is not a regular file, a symbolic link
/// included, is [`FileError::NotAFile`]; a replaced file's mode and owner
/// are kept). Time: as [`to_bytes`] plus the write.
pub fn save(snapshot: &Snapshot, path: &Path) -> Result<(), FileError> {
    Writer::new().save(snapshot, path)
}

/// Encodes `items` (against `parent`) straight into a new file at `path`,
/// atomically ([`write_atomic`]'s rules): frames are written as they are
/// compressed, then the index, then the header in place; one `fsync`, the
/// rename.
fn save_items(
    path: &Path,
    items: &[Item<'_>],
    parent: Option<&ParentFile<'_>>,
    writer: &mut Writer<'_>,
) -> Result<(), FileError> {
    write_atomic_with(path, |file| {
        let mut sink = FileSink(std::io::BufWriter::with_capacity(1 << 20, file));
        let named = |e| FileError::Io { path: path.to_owned(), source: e };
        encode_into(&mut sink, &named, items, parent, writer)?;
        sink.0.flush().map_err(io(path))
    })
}

/// Opens the parent that the incremental file number `depth` of a chain
/// (in directory `dir`; the chain's files so far are `chain`) names with
/// `p`, with the checks of FORMAT.md §6.6 up to its identity, in this
/// order: chain length ([`FileError::SizeLimit`]); a regular file at the
/// hint ([`FileError::ParentMissing`], [`FileError::NotAFile`], I/O);
/// not already in the chain ([`FileError::ParentCycle`], before anything
/// is read); its header and index ([`FileError::InParent`]); the BLAKE3 of
/// its index ([`FileError::ParentMismatch`]). Its frames are not read.
/// Returns its path, canonical path and head.
fn open_parent(
    dir: &Path,
    p: &ParentRecord,
    depth: u64,
    chain: &[PathBuf],
) -> Result<(PathBuf, PathBuf, Head), FileError> {
    let parent_path = dir.join(&p.1);
    limit("parent chain length", depth + 1, MAX_CHAIN_LENGTH)?;
    let (file, length) = match open_regular(&parent_path) {
        Err(FileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(FileError::ParentMissing { path: parent_path });
        }
        opened => opened?,
    };
    let canonical = fs::canonicalize(&parent_path).map_err(io(&parent_path))?;
    if chain.contains(&canonical) {
        return Err(FileError::ParentCycle { path: parent_path });
    }
    let head = head_of(&parent_path, file, length).map_err(in_parent(&parent_path))?;
    if blake3::hash(&head.index).as_bytes()[..] != p.0[..] {
        return Err(FileError::ParentMismatch { path: parent_path });
    }
    Ok((parent_path, canonical, head))
}

fn in_parent(path: &Path) -> impl Fn(FileError) -> FileError + '_ {
    move |e| FileError::InParent { path: path.to_owned(), source: Box::new(e) }
}

/// Decodes the file `bytes` read from `path`, which is file number `depth`
/// (1-based) of a parent chain whose files so far are `chain` (canonical
/// paths, `path` included): an incremental file's parent is found by its
/// hint relative to `path`'s directory, identified by the BLAKE3 of its
/// index ([`open_parent`]), and loaded the same way.
fn decode_chain(
    path: &Path,
    bytes: &[u8],
    depth: u64,
    chain: &mut Vec<PathBuf>,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let dir = directory_of(path);
    let mut quiet = loader.quiet();
    let mut resolve = |p: &ParentRecord| -> Result<Snapshot, FileError> {
        let (parent_path, canonical, head) = open_parent(&dir, p, depth, chain)?;
        let in_parent = in_parent(&parent_path);
        let parent_bytes = read_whole(&parent_path, head).map_err(&in_parent)?;
        chain.push(canonical);
        let decoded = decode_chain(&parent_path, &parent_bytes, depth + 1, chain, &mut quiet);
        chain.pop();
        one_snapshot(decoded.map_err(&in_parent)?).map_err(&in_parent)
    };
    decode(bytes, &mut resolve, loader)
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads and decodes the file at `path` with its whole parent chain; `depth`
/// is its place in the chain (1 for the file asked for). Each file's header
/// and index are read and checked before its frames.
fn read_chain(
    path: &Path,
    depth: u64,
    loader: &mut Loader<'_>,
) -> Result<(Vec<u8>, Vec<Decoded>), FileError> {
    let bytes = read(path)?;
    let mut chain = vec![fs::canonicalize(path).map_err(io(path))?];
    let decoded = decode_chain(path, &bytes, depth, &mut chain, loader)?;
    Ok((bytes, decoded))
}

/// Loads the snapshot saved at `path`, checking the header, the index, and
/// every page against its BLAKE3 hash. The result reads, queries and diffs as
/// the saved snapshot did, except that its MMIO regions are unbound (module
/// docs; [`load_with`] binds them). It starts a lineage of its own.
///
/// An incremental file (since format 1.1) is loaded with its parent chain: each
/// parent is found by its file-name hint relative to the child's directory
/// ([`FileError::ParentMissing`]), must be the file the child was saved
/// against ([`FileError::ParentMismatch`]), and is loaded the same way (at
/// most [`MAX_CHAIN_LENGTH`] files, [`FileError::SizeLimit`]; a file named
/// twice is [`FileError::ParentCycle`]). A parent's own failure is
/// [`FileError::InParent`]. Every file of the chain must be a regular file
/// ([`FileError::NotAFile`]: a hint naming `/dev/zero` or a FIFO is refused
/// at once, never read), and each is read header and index first, checked
/// against its length and the limits, before its frames. Time: O(total size
/// of the chain's files).
pub fn load(path: &Path) -> Result<Snapshot, FileError> {
    Loader::new().load(path)
}

/// [`load`] that binds the file's MMIO regions: `binder(base, length)` is
/// called once per distinct MMIO region (base and length) of the file's
/// snapshots, in file order, once the whole file is checked (never for a
/// corrupt file; not for the regions of an incremental file's parents,
/// which are read for their pages only). The handlers it gives are bound
/// in every snapshot that has that region; a region it answers `None` for
/// stays unbound ([`MemoryError::MmioUnbound`](crate::MemoryError::MmioUnbound)
/// on access, [`MemoryManager::bind_mmio`](crate::MemoryManager::bind_mmio)
/// after a restore). Time: as `load`, plus O(allocations) per snapshot and
/// one binder call per distinct region.
///
/// ```
/// use vmsnap::{MemoryManager, MmioHandlers};
/// # let dir = std::env::temp_dir().join(format!("vmsnap-load-with-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("kuser.vmsnap");
/// let mut mm = MemoryManager::new();
/// mm.allocate_mmio(0x7FFE_0000, 0x1000, |offset, buf| buf.fill(offset as u8), |_, _| {})?;
/// vmsnap::file::save(&mm.snapshot(), &path)?;
///
/// let snapshot = vmsnap::file::load_with(&path, &mut |base, _length| {
///     (base == 0x7FFE_0000).then(|| MmioHandlers::new(|offset, buf| buf.fill(offset as u8), |_, _| {}))
/// })?;
/// let mut buf = [0u8; 1];
/// snapshot.read_memory(0x7FFE_0020, &mut buf)?;
/// assert_eq!(buf, [0x20]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_with(
    path: &Path,
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<Snapshot, FileError> {
    Loader::new().binder(binder).load(path)
}

/// Checks the file at `path` completely (every frame decompressed, every page
/// hash checked), parents included, without keeping anything.
pub fn verify(path: &Path) -> Result<(), FileError> {
    Loader::new().verify(path)
}

/// Saves a whole timeline (snapshots, names, parent links) to one file,
/// atomically; a page shared by several snapshots is stored once.
pub fn save_timeline(timeline: &Timeline, path: &Path) -> Result<(), FileError> {
    Writer::new().save_timeline(timeline, path)
}

/// Loads a timeline file: the snapshots in file order, with their names and
/// parent links (ids are renumbered by [`Timeline::insert`]; the head is the
/// last snapshot). Every page is checked against its hash.
pub fn load_timeline(path: &Path) -> Result<Timeline, FileError> {
    Loader::new().load_timeline(path)
}

/// [`load_timeline`] that binds the file's MMIO regions with `binder`, as
/// [`load_with`] does: once per distinct region, the same handlers in every
/// snapshot that has it. Time: as `load_timeline`, plus O(allocations) per
/// snapshot and one binder call per distinct region.
pub fn load_timeline_with(
    path: &Path,
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<Timeline, FileError> {
    Loader::new().binder(binder).load_timeline(path)
}

/// The path of `to` relative to the directory `from` (both canonical),
/// `/`-separated.
fn relative_path(from: &Path, to: &Path) -> Option<String> {
    let (a, b): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None; // different roots (Windows drives)
    }
    let mut parts: Vec<String> = vec!["..".to_owned(); a.len() - common];
    for c in &b[common..] {
        parts.push(c.as_os_str().to_str()?.to_owned());
    }
    Some(parts.join("/"))
}

/// Saves `snapshot` as an incremental file (since format 1.1) against the parent
/// file `parent` (itself full or incremental; its chain is loaded and
/// checked): only pages that differ from the parent snapshot's page at the
/// same page number are stored, a page the parent has there as its XOR with
/// it (kind `xor`), a page new there as itself (kind `plain`); equal pages
/// are inherited (page-map entry 0). The file names its parent by the
/// BLAKE3 of the parent's index and by its path relative to `path`'s
/// directory. Atomic as [`save`]. Errors: the parent's ([`FileError::InParent`],
/// a missing parent [`FileError::ParentMissing`]), a chain that would exceed
/// [`MAX_CHAIN_LENGTH`] files ([`FileError::SizeLimit`]), `path` naming the
/// parent itself ([`FileError::ParentCycle`]), I/O.
pub fn save_incremental(snapshot: &Snapshot, parent: &Path, path: &Path) -> Result<(), FileError> {
    Writer::new().save_incremental(snapshot, parent, path)
}

/// [`save_incremental`] with `writer`'s options.
fn save_incremental_with(
    snapshot: &Snapshot,
    parent: &Path,
    path: &Path,
    writer: &mut Writer<'_>,
) -> Result<(), FileError> {
    let target = IncrementalTarget::check(parent, path)?;
    // Opened lazily: its frames are read only for the pages that changed
    // (their XOR bases), so the cost follows the changes, not the parent.
    let mut chain = vec![target.parent_canonical.clone()];
    let parent_file = lazy::open_parts(
        parent,
        target.parent_head,
        2,
        &mut chain,
        &mut Loader::new().threads(writer.threads),
    )
    .map_err(in_parent(parent))?;
    save_against(snapshot, &parent_file, parent, &target.hint, path, writer)
}

/// [`Writer::save_incremental_from`]: against a parent already opened.
fn save_incremental_from(
    snapshot: &Snapshot,
    opened: &LazyFile,
    parent: &Path,
    path: &Path,
    writer: &mut Writer<'_>,
) -> Result<(), FileError> {
    let target = IncrementalTarget::check(parent, path)?;
    if *blake3::hash(&target.parent_head.index).as_bytes() != opened.index_hash() {
        return Err(FileError::ParentMismatch { path: parent.to_owned() });
    }
    save_against(snapshot, opened, parent, &target.hint, path, writer)
}

/// The checks of an incremental save before its parent is opened.
struct IncrementalTarget {
    /// The parent's header and index, checked.
    parent_head: Head,
    parent_canonical: PathBuf,
    /// The parent's path relative to the child's directory.
    hint: String,
}

impl IncrementalTarget {
    /// The parent is read as any file: a regular file
    /// ([`FileError::ParentMissing`], [`FileError::NotAFile`]), header and
    /// index checked ([`FileError::InParent`]) before anything else; `path`
    /// may not name it ([`FileError::ParentCycle`]).
    fn check(parent: &Path, path: &Path) -> Result<IncrementalTarget, FileError> {
        let (parent_file, parent_length) = match open_regular(parent) {
            Err(FileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(FileError::ParentMissing { path: parent.to_owned() });
            }
            opened => opened?,
        };
        let parent_head = head_of(parent, parent_file, parent_length).map_err(in_parent(parent))?;
        let parent_canonical = fs::canonicalize(parent).map_err(io(parent))?;
        let dir = directory_of(path);
        let dir_canonical = fs::canonicalize(&dir).map_err(io(&dir))?;
        let file_name = path.file_name().ok_or_else(|| FileError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?;
        if dir_canonical.join(file_name) == parent_canonical {
            return Err(FileError::ParentCycle { path: path.to_owned() });
        }
        let hint = relative_path(&dir_canonical, &parent_canonical).ok_or_else(|| FileError::Io {
            path: parent.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no relative path from the child's directory",
            ),
        })?;
        Ok(IncrementalTarget { parent_head, parent_canonical, hint })
    }
}

/// Saves `snapshot` at `path` as an increment over the opened `parent_file`
/// (at `parent`, named by `hint`).
fn save_against(
    snapshot: &Snapshot,
    parent_file: &LazyFile,
    parent: &Path,
    hint: &str,
    path: &Path,
    writer: &mut Writer<'_>,
) -> Result<(), FileError> {
    let in_parent = in_parent(parent);
    let parent_snapshot = parent_file.snapshot().map_err(&in_parent)?;
    let parent_record = ParentFile { snapshot: &parent_snapshot, index_hash: parent_file.index_hash(), hint };
    save_items(path, &[Item::one(snapshot)], Some(&parent_record), writer).map_err(|e| match e {
        // A base page the parent could not give: the parent's own failure.
        FileError::SourcePageUnavailable { .. } => match parent_file.take_error() {
            Some(cause) => in_parent(cause),
            None => e,
        },
        e => e,
    })
}

/// Merges the chain ending at `path` into one self-contained
/// file at `out`: exactly the bytes [`save`] writes for the loaded snapshot.
/// `out` may be `path` (the child is replaced atomically).
pub fn rebase(path: &Path, out: &Path) -> Result<(), FileError> {
    save(&load(path)?, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of `e` with its sources.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// Every value a file error carries, as its message chain shows it (an
    /// exhaustive match: a new variant must say what it shows).
    fn values(e: &FileError) -> Vec<String> {
        use FileError::*;
        match e {
            Io { path, .. } | ParentMissing { path } | ParentMismatch { path } | ParentCycle { path } => {
                vec![path.display().to_string()]
            }
            InParent { path, source } => {
                let mut v = vec![path.display().to_string()];
                v.extend(values(source));
                v
            }
            NotAFile { path, kind } => vec![path.display().to_string(), kind.to_string()],
            BadMagic | HeaderChecksum | IndexChecksum => vec![],
            UnsupportedVersion { major, minor } => vec![format!("{major}.{minor}")],
            UnsupportedFlags(flags) => vec![format!("{flags:#x}")],
            CorruptHeader(what) | CorruptIndex(what) => vec![what.to_string()],
            Truncated { expected, actual } | TrailingBytes { expected, actual } => {
                vec![expected.to_string(), actual.to_string()]
            }
            SizeLimit { what, value, limit } => vec![what.to_string(), value.to_string(), limit.to_string()],
            FrameCorrupt { frame } => vec![frame.to_string()],
            PageHash { page } => vec![page.to_string()],
            InvalidState(state) => vec![state.to_string()],
            SourcePageUnavailable { address } => vec![format!("{address:#x}")],
            InvalidLevel { level } => vec![level.to_string()],
            SnapshotCount { found } => vec![found.to_string()],
        }
    }

    #[test]
    fn each_file_error_names_its_values_once() {
        use FileError::*;
        let io = || std::io::Error::other("disk on fire");
        let samples = [
            Io { path: "/data/one.vmsnap".into(), source: io() },
            NotAFile { path: "/dev/zero".into(), kind: "a character device" },
            BadMagic,
            UnsupportedVersion { major: 7, minor: 31 },
            UnsupportedFlags(0xF0),
            HeaderChecksum,
            CorruptHeader("index offset is not 64 + frames length"),
            IndexChecksum,
            Truncated { expected: 123_456, actual: 789 },
            TrailingBytes { expected: 2_222, actual: 33_333 },
            SizeLimit { what: "frame count", value: 44_444_444, limit: 16_777_216 },
            CorruptIndex("page runs overlap"),
            FrameCorrupt { frame: 5_150 },
            PageHash { page: 6_161 },
            InvalidState(StateError::Corrupt("allocations overlap or are out of order")),
            ParentMissing { path: "base/parent.vmsnap".into() },
            ParentMismatch { path: "base/other.vmsnap".into() },
            ParentCycle { path: "loop/self.vmsnap".into() },
            InParent { path: "outer/p.vmsnap".into(), source: Box::new(FrameCorrupt { frame: 9_191 }) },
            SourcePageUnavailable { address: 0x7_7777_0000 },
            InvalidLevel { level: 99 },
            SnapshotCount { found: 12_321 },
        ];
        for e in &samples {
            let text = chain(e);
            for v in values(e) {
                assert_eq!(text.matches(&v).count(), 1, "{e:?} shows {v:?} not exactly once: {text}");
            }
        }
    }

    /// A writer refuses exactly what a reader refuses, before writing.
    #[test]
    fn writer_limits_are_the_reader_limits() {
        check_writer_limits(
            MAX_SNAPSHOTS,
            MAX_STORED_PAGES,
            MAX_STORED_PAGES,
            MAX_FRAMES_LENGTH,
            MAX_INDEX_LENGTH,
        )
        .unwrap();
        let cases: [(&str, [u64; 5]); 5] = [
            ("snapshot count", [MAX_SNAPSHOTS + 1, 0, 0, 0, 0]),
            ("page record count", [1, MAX_STORED_PAGES + 1, 0, 0, 0]),
            ("frame count", [1, 0, MAX_STORED_PAGES + 1, 0, 0]),
            ("frame area length", [1, 0, 0, MAX_FRAMES_LENGTH + 1, 0]),
            ("index length", [1, 0, 0, 0, MAX_INDEX_LENGTH + 1]),
        ];
        for (name, [a, b, c, d, e]) in cases {
            match check_writer_limits(a, b, c, d, e) {
                Err(FileError::SizeLimit { what, .. }) => assert_eq!(what, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
