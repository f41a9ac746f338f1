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
//! many threads as a [`Writer`] or [`Loader`] is given. Both stream: a
//! save writes frames to the file as later frames compress, a load reads
//! each worker's frames with one positioned read as it decodes them, so
//! memory in flight is a few frames per thread, never the file.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::StateError;
use crate::page_table::{
    LazySource, PAGE, Page, PageBuffers, PageBytes, PageRef, PageTable, RecPtr, Store, VPN_LIMIT, boxed_copy,
};
use crate::protection::meta;
use crate::region_map::{MmioHandlers, RegionMap};
use crate::snapshot::Snapshot;
use crate::timeline::{SnapshotId, Timeline};
use crate::version::{Lineage, Version};

mod atomic;
mod chain;
mod codec;
mod decode;
mod encode;
mod error;
mod frames;
mod header;
mod index;
mod inspect;
mod lazy;
mod maps;
mod options;
mod read;
mod source;
use atomic::*;
pub use atomic::{STALE_TEMPORARY_AGE, write_atomic};
use chain::*;
use codec::{FRAMES_PER_BATCH, FRAMES_PER_CHUNK, FrameDecoder, Pool};
use decode::*;
use encode::*;
pub use error::FileError;
use error::*;
use frames::*;
use header::{Header, split};
use index::*;
pub use inspect::{
    FileInfo, ParentInfo, SnapshotSummary, inspect, inspect_bytes, load_timeline_with_progress,
};
pub use lazy::{
    LazyFile, open, open_lazy, open_lazy_bytes, open_lazy_bytes_with, open_lazy_with, open_source,
};
use maps::*;
pub use options::{Loader, Writer};
use read::*;
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

// ---------------------------------------------------------------- index ----

// --------------------------------------------------------------- encode ----

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
    check_parent_record(&ParentRecord(Fixed::new(index_hash), hint.to_owned()))?;
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
        if p.index_hash() != &identity[..] {
            return Err(FileError::ParentMismatch { path: PathBuf::from(p.hint()) });
        }
        Ok(parent.clone())
    };
    one_snapshot(decode(bytes, &mut resolve, &mut Loader::new())?)
}

// ------------------------------------------------------------ file system ----

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
/// against its length and the limits, before its frames, which are read as
/// they are decoded. Time: O(total size of the chain's files); memory: the
/// pages, plus a few frames per thread.
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
/// parent itself ([`FileError::ParentCycle`]) or a file further up its
/// chain (that cycle, [`FileError::InParent`] of the file naming it), I/O.
pub fn save_incremental(snapshot: &Snapshot, parent: &Path, path: &Path) -> Result<(), FileError> {
    Writer::new().save_incremental(snapshot, parent, path)
}

/// Merges the chain ending at `path` into one self-contained
/// file at `out`: exactly the bytes [`save`] writes for the loaded snapshot.
/// `out` may be `path` (the child is replaced atomically).
pub fn rebase(path: &Path, out: &Path) -> Result<(), FileError> {
    save(&load(path)?, out)
}

#[cfg(test)]
mod tests;
