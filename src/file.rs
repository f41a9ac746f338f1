//! Snapshot files: a [`Snapshot`] (or a whole [`Timeline`]) on disk.
//!
//! The byte-level contract is `snapshots-format/FORMAT.md` (format 1.0); the
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
//! let bytes = vmsnap::file::to_bytes(&mm.snapshot());
//! let loaded = vmsnap::file::load_from_bytes(&bytes)?;
//! let mut buf = [0u8; 7];
//! loaded.read_memory(0x10000, &mut buf)?;
//! assert_eq!(&buf, b"on disk");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! MMIO regions are saved as layout only and left out on load (their
//! handlers cannot be serialized), as `deserialize_memory_state` does.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::MemoryError;
use crate::page_table::{FrozenPage, PAGE, PageBytes, VPN_LIMIT};
use crate::protection::meta;
use crate::snapshot::{Lineage, Snapshot, Version, VersionToken};
use crate::timeline::{SnapshotId, Timeline};

/// Major version of the file format this crate writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor version of the file format this crate writes.
pub const FORMAT_MINOR: u16 = 0;
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
    /// An operating-system error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
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
    /// Flag bits this reader does not support (bit 0, incremental, is
    /// reserved for a later minor version).
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
    /// A snapshot's layout record does not decode or validate.
    #[error("invalid snapshot layout: {0}")]
    InvalidState(#[from] MemoryError),
    /// `load` needs a file with exactly one snapshot (use `load_timeline`).
    #[error("the file holds {found} snapshots, expected exactly one")]
    SnapshotCount {
        /// Snapshots in the file.
        found: usize,
    },
}

// ---------------------------------------------------------------- index ----

#[derive(Serialize, Deserialize)]
struct Index(Vec<FrameRecord>, Vec<PageRecord>, Vec<SnapshotRecord>, Option<ParentRecord>);

/// `[offset, compressed_length, pages, checksum(8)]`.
#[derive(Serialize, Deserialize)]
struct FrameRecord(u64, u32, u8, ByteBuf);

/// `[hash(32), frame, slot, kind, base?]`.
#[derive(Serialize, Deserialize)]
struct PageRecord(ByteBuf, u32, u8, u8, Option<u32>);

/// `[id, name?, parent?, layout_version, state, page_map]`.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord(u64, Option<String>, Option<u64>, u64, ByteBuf, Vec<RunRecord>);

/// `[first_page, [page record index, ...]]`.
#[derive(Serialize, Deserialize)]
struct RunRecord(u64, Vec<u32>);

/// `[index_hash(32), file_name_hint]` — incremental files only (reserved).
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

fn encode(items: &[Item<'_>]) -> Vec<u8> {
    // Distinct pages, in order of first appearance; index = position + 1.
    let mut by_hash: HashMap<[u8; 32], u32> = HashMap::new();
    let mut by_pointer: HashMap<*const FrozenPage, u32> = HashMap::new();
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut bodies: Vec<Arc<FrozenPage>> = Vec::new();
    let mut snapshots = Vec::with_capacity(items.len());
    for item in items {
        let v = item.snapshot.version();
        let mut state = Vec::new();
        crate::state::serialize_layout(
            &v.regions,
            &v.pages,
            v.default_allocation_address,
            v.layout_version,
            &mut state,
        );
        let mut runs: Vec<RunRecord> = Vec::new();
        v.pages.for_each(|page, m, frozen| {
            let Some(frozen) = frozen else { return };
            if m & meta::COMMITTED == 0 || m & (meta::MMIO | meta::VIEW) != 0 || frozen.is_zero() {
                return;
            }
            let index = *by_pointer.entry(Arc::as_ptr(frozen)).or_insert_with(|| {
                let hash = *blake3::hash(&frozen.bytes).as_bytes();
                *by_hash.entry(hash).or_insert_with(|| {
                    hashes.push(hash);
                    bodies.push(frozen.clone());
                    hashes.len() as u32
                })
            });
            match runs.last_mut() {
                Some(RunRecord(first, list)) if *first + list.len() as u64 == page => list.push(index),
                _ => runs.push(RunRecord(page, vec![index])),
            }
        });
        snapshots.push(SnapshotRecord(
            item.id,
            item.name.map(str::to_owned),
            item.parent,
            v.layout_version,
            ByteBuf::from(state),
            runs,
        ));
    }

    let mut frames_area = Vec::new();
    let mut frames = Vec::new();
    let mut raw = Vec::with_capacity(PAGES_PER_FRAME * PAGE);
    for chunk in bodies.chunks(PAGES_PER_FRAME) {
        raw.clear();
        for body in chunk {
            raw.extend_from_slice(&body.bytes);
        }
        // Invariant: compressing a bounded in-memory buffer cannot fail.
        let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compression of 64 KiB");
        let checksum: [u8; 8] = blake3_prefix(&compressed);
        frames.push(FrameRecord(
            frames_area.len() as u64,
            compressed.len() as u32,
            chunk.len() as u8,
            ByteBuf::from(checksum.to_vec()),
        ));
        frames_area.extend_from_slice(&compressed);
    }
    let pages = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            PageRecord(
                ByteBuf::from(h.to_vec()),
                (i / PAGES_PER_FRAME) as u32,
                (i % PAGES_PER_FRAME) as u8,
                0,
                None,
            )
        })
        .collect();
    let index = Index(frames, pages, snapshots, None);
    // Invariant: encoding plain values into a Vec cannot fail.
    let index = rmp_serde::to_vec(&index).expect("encoding into a Vec cannot fail");

    let mut out = Vec::with_capacity(HEADER_LENGTH + frames_area.len() + index.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    out.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&((HEADER_LENGTH + frames_area.len()) as u64).to_le_bytes());
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    out.extend_from_slice(&blake3_prefix::<16>(&index));
    out.extend_from_slice(&(frames_area.len() as u64).to_le_bytes());
    let header_checksum: [u8; 8] = blake3_prefix(&out[..56]);
    out.extend_from_slice(&header_checksum);
    debug_assert_eq!(out.len(), HEADER_LENGTH);
    out.extend_from_slice(&frames_area);
    out.extend_from_slice(&index);
    out
}

/// The file bytes of `snapshot` (exactly what [`save`] writes). Deterministic:
/// equal snapshots give equal bytes. Time: O(allocations + committed pages),
/// hashing and compressing every distinct non-zero page once.
pub fn to_bytes(snapshot: &Snapshot) -> Vec<u8> {
    encode(&[Item { id: 0, name: None, parent: None, snapshot }])
}

/// The file bytes of a whole timeline (exactly what [`save_timeline`]
/// writes): every entry in id order with its id, name and parent; pages
/// shared by several snapshots are stored once.
pub fn timeline_to_bytes(timeline: &Timeline) -> Vec<u8> {
    let items: Vec<Item<'_>> = timeline
        .iter()
        .map(|e| Item {
            id: e.id.0,
            name: e.name.as_deref(),
            parent: e.parent.map(|p| p.0),
            snapshot: &e.snapshot,
        })
        .collect();
    encode(&items)
}

// --------------------------------------------------------------- decode ----

struct Decoded {
    id: u64,
    name: Option<String>,
    parent: Option<u64>,
    snapshot: Snapshot,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn limit(what: &'static str, value: u64, max: u64) -> Result<(), FileError> {
    if value > max { Err(FileError::SizeLimit { what, value, limit: max }) } else { Ok(()) }
}

fn corrupt(what: &'static str) -> FileError {
    FileError::CorruptIndex(what)
}

/// Checks the header and the index checksum; returns the frame area and the
/// index bytes.
fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), FileError> {
    let prefix = bytes.len().min(MAGIC.len());
    if bytes[..prefix] != MAGIC[..prefix] {
        return Err(FileError::BadMagic);
    }
    if bytes.len() < HEADER_LENGTH {
        return Err(FileError::Truncated { expected: HEADER_LENGTH as u64, actual: bytes.len() as u64 });
    }
    let (major, minor) = (u16_at(bytes, 8), u16_at(bytes, 10));
    if major != FORMAT_MAJOR {
        return Err(FileError::UnsupportedVersion { major, minor });
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(FileError::UnsupportedFlags(flags));
    }
    if blake3_prefix::<8>(&bytes[..56]) != bytes[56..64] {
        return Err(FileError::HeaderChecksum);
    }
    let index_offset = u64_at(bytes, 16);
    let index_length = u64_at(bytes, 24);
    let frames_length = u64_at(bytes, 48);
    limit("index length", index_length, MAX_INDEX_LENGTH)?;
    limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
    if index_offset != HEADER_LENGTH as u64 + frames_length {
        return Err(FileError::CorruptHeader("index offset is not 64 + frames length"));
    }
    let total = index_offset + index_length;
    let actual = bytes.len() as u64;
    if actual < total {
        return Err(FileError::Truncated { expected: total, actual });
    }
    if actual > total {
        return Err(FileError::TrailingBytes { expected: total, actual });
    }
    let index = &bytes[index_offset as usize..];
    if blake3_prefix::<16>(index) != bytes[32..48] {
        return Err(FileError::IndexChecksum);
    }
    Ok((&bytes[HEADER_LENGTH..index_offset as usize], index))
}

fn decode(bytes: &[u8]) -> Result<Vec<Decoded>, FileError> {
    let (area, index_bytes) = split(bytes)?;
    let mut rest = index_bytes;
    let Index(frames, pages, snapshots, parent) =
        rmp_serde::decode::from_read(&mut rest).map_err(|_| corrupt("MessagePack index does not decode"))?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after the MessagePack index"));
    }
    limit("frame count", frames.len() as u64, MAX_STORED_PAGES)?;
    limit("page record count", pages.len() as u64, MAX_STORED_PAGES)?;
    limit("snapshot count", snapshots.len() as u64, MAX_SNAPSHOTS)?;
    if parent.is_some() {
        return Err(corrupt("parent record in a file that is not incremental"));
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
        if at > area.len() as u64 {
            return Err(corrupt("frame outside the frame area"));
        }
    }
    if at != area.len() as u64 {
        return Err(corrupt("frames do not fill the frame area"));
    }

    // Page records: valid, distinct slots and hashes, every slot used.
    let mut owner: Vec<[u32; PAGES_PER_FRAME]> = vec![[0; PAGES_PER_FRAME]; frames.len()];
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(pages.len());
    for (i, PageRecord(hash, frame, slot, kind, base)) in pages.iter().enumerate() {
        if hash.len() != 32 {
            return Err(corrupt("page hash is not 32 bytes"));
        }
        if *kind != 0 || base.is_some() {
            return Err(corrupt("xor page in a file that is not incremental"));
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

    // Every frame: checksum, bounded decompression, every page's BLAKE3.
    let mut stored: Vec<Option<Arc<FrozenPage>>> = vec![None; pages.len()];
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|_| FileError::FrameCorrupt { frame: 0 })?;
    let mut raw = vec![0u8; PAGES_PER_FRAME * PAGE];
    for (n, FrameRecord(offset, length, count, checksum)) in frames.iter().enumerate() {
        let frame = n as u32;
        let src = &area[*offset as usize..(*offset + u64::from(*length)) as usize];
        if blake3_prefix::<8>(src)[..] != checksum[..] {
            return Err(FileError::FrameCorrupt { frame });
        }
        let expected = usize::from(*count) * PAGE;
        let got = decompressor
            .decompress_to_buffer(src, &mut raw[..expected])
            .map_err(|_| FileError::FrameCorrupt { frame })?;
        if got != expected {
            return Err(FileError::FrameCorrupt { frame });
        }
        for slot in 0..usize::from(*count) {
            let record = owner[n][slot];
            let body: &PageBytes = raw[slot * PAGE..(slot + 1) * PAGE].try_into().expect("one page");
            if blake3::hash(body).as_bytes()[..] != pages[record as usize - 1].0[..] {
                return Err(FileError::PageHash { page: record });
            }
            if body == &crate::page_table::ZERO_PAGE {
                return Err(corrupt("a stored page is all zeros"));
            }
            stored[record as usize - 1] = Some(FrozenPage::new(body));
        }
    }

    // Snapshots.
    let lineage = Lineage::default();
    let mut referenced = vec![false; pages.len()];
    let mut ids: HashSet<u64> = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(snapshots.len());
    for SnapshotRecord(id, name, parent, layout_version, state, runs) in &snapshots {
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
        let layout = crate::state::decode_layout(state)?;
        if layout.layout_version != *layout_version {
            return Err(corrupt("snapshot layout version differs from its state"));
        }
        let mut table = layout.table;
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
            for (page, &index) in (*first..end).zip(list) {
                let slot = (index as usize)
                    .checked_sub(1)
                    .and_then(|i| stored.get(i))
                    .ok_or(corrupt("page map names a missing page record"))?;
                let m = table.get(page).meta;
                if m & meta::COMMITTED == 0 || m & (meta::MMIO | meta::VIEW) != 0 {
                    return Err(corrupt("page map names a page that is not committed"));
                }
                referenced[index as usize - 1] = true;
                table.set_page(page, slot.clone());
            }
        }
        let version = Version {
            id: crate::snapshot::next_version_id(),
            delta: None,
            regions: layout.regions,
            pages: table,
            committed_pages: layout.committed_pages,
            default_allocation_address: layout.default_allocation_address,
            layout_version: layout.layout_version,
            token: VersionToken::new(&lineage),
        };
        out.push(Decoded { id: *id, name: name.clone(), parent: *parent, snapshot: Snapshot::new(version) });
    }
    if referenced.iter().any(|r| !r) {
        return Err(corrupt("a stored page is referenced by no snapshot"));
    }
    Ok(out)
}

/// Decodes a one-snapshot file held in memory, checking everything
/// ([`load`] without the file system). Time: O(file size + committed pages).
pub fn load_from_bytes(bytes: &[u8]) -> Result<Snapshot, FileError> {
    let mut all = decode(bytes)?;
    if all.len() != 1 {
        return Err(FileError::SnapshotCount { found: all.len() });
    }
    Ok(all.pop().expect("one snapshot").snapshot)
}

/// Checks a file held in memory as [`verify`] does: header, index, every
/// frame and every page hash, every snapshot's layout and page map.
pub fn verify_bytes(bytes: &[u8]) -> Result<(), FileError> {
    decode(bytes).map(drop)
}

/// Decodes a timeline file held in memory (see [`load_timeline`]).
pub fn timeline_from_bytes(bytes: &[u8]) -> Result<Timeline, FileError> {
    let mut timeline = Timeline::new();
    let mut new_ids: HashMap<u64, SnapshotId> = HashMap::new();
    for d in decode(bytes)? {
        let parent = d.parent.map(|p| new_ids[&p]);
        // Invariant: decode checked parents (earlier ids) and unique names.
        let id = timeline.insert(d.snapshot, parent, d.name.as_deref()).expect("checked by decode");
        new_ids.insert(d.id, id);
    }
    Ok(timeline)
}

// ------------------------------------------------------------ file system ----

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_owned(), source }
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(io(path))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, `fsync`, rename over `path`, `fsync` of the directory. On
/// failure the temporary file is removed and `path` is untouched.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| FileError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&temp).map_err(io(&temp))?;
        f.write_all(bytes).map_err(io(&temp))?;
        f.sync_all().map_err(io(&temp))?;
        drop(f);
        fs::rename(&temp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    #[cfg(unix)]
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
    Ok(())
}

/// Saves `snapshot` to `path`, atomically replacing any file there (after a
/// crash `path` holds the old file or the complete new one). Time: as
/// [`to_bytes`] plus the write.
pub fn save(snapshot: &Snapshot, path: &Path) -> Result<(), FileError> {
    write_atomic(path, &to_bytes(snapshot))
}

/// Loads the snapshot saved at `path`, checking the header, the index, and
/// every page against its BLAKE3 hash. The result reads, queries and diffs as
/// the saved snapshot did (MMIO regions excepted: they are left out). It
/// starts a lineage of its own.
pub fn load(path: &Path) -> Result<Snapshot, FileError> {
    load_from_bytes(&read(path)?)
}

/// Checks the file at `path` completely (every frame decompressed, every page
/// hash checked) without keeping anything.
pub fn verify(path: &Path) -> Result<(), FileError> {
    verify_bytes(&read(path)?)
}

/// Saves a whole timeline (snapshots, names, parent links) to one file,
/// atomically; a page shared by several snapshots is stored once.
pub fn save_timeline(timeline: &Timeline, path: &Path) -> Result<(), FileError> {
    write_atomic(path, &timeline_to_bytes(timeline))
}

/// Loads a timeline file: the snapshots in file order, with their names and
/// parent links (ids are renumbered by [`Timeline::insert`]; the head is the
/// last snapshot). Every page is checked against its hash.
pub fn load_timeline(path: &Path) -> Result<Timeline, FileError> {
    timeline_from_bytes(&read(path)?)
}
