//! Lazily opened snapshot files (see [`LazyFile`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use super::*;

/// A snapshot file opened lazily ([`open_lazy`]): its snapshots are ready,
/// their pages are read on first touch.
///
/// [`open_lazy`] reads and checks the header and the index (§6.1–§6.4 and
/// §6.8–§6.9 of FORMAT.md: everything but the frames' contents) and builds
/// the file's snapshots with *lazy* frozen pages: each knows its fingerprint
/// (from its 1.2 page record) and where its bytes are, so region queries,
/// `restore`, `snapshot` and most of a diff never read a frame. The first
/// read of a page reads its frame (one `pread` of ≤ 64 KiB), checks the
/// frame's checksum and every page's BLAKE3 hash and fingerprint (§6.5,
/// §6.7), and fills every page of that frame for good; nothing else is
/// decompressed.
///
/// A page that cannot be read (an I/O error, or a frame or page that fails
/// its check) is [`MemoryError::PageUnavailable`](crate::MemoryError) on
/// every access that can fail (`read_memory`, `write_memory`, the guest
/// accesses) and [`LazyFile::take_error`] says why; nothing is filled, and
/// the next access tries again. The consumers that cannot fail see such a
/// page as zeros: diff byte views and `serialize_memory_state` (a diff never
/// calls it equal to another page). [`LazyFile::load_all`] reads everything
/// up front, with the error.
///
/// Opening costs memory for the index only: each stored page is a 32-byte
/// record of the file's page store (its fingerprint and record number), and
/// its 4 KiB buffer is allocated when its frame is first read. Many threads
/// touching pages of one frame at once read it once.
///
/// The open file handle is kept (as long as any of its pages lives), so a
/// file replaced by a later atomic save under the same name keeps serving
/// the old contents. Files before 1.2 have no fingerprints: they are read
/// completely when opened, as `load` does.
///
/// ```
/// use vmsnap::{MemoryManager, Protection, RegionKind};
///
/// let mut mm = MemoryManager::new();
/// mm.allocate_memory_at(0x10000, 0x100_0000, Protection::READ_WRITE, false, RegionKind::Private)?;
/// for page in 0..4096u64 {
///     mm.write_memory(0x10000 + page * 0x1000, &page.to_le_bytes())?;
/// }
/// let lazy = vmsnap::file::open_lazy_bytes(vmsnap::file::to_bytes(&mm.snapshot())?)?;
/// let snapshot = lazy.snapshot()?;
/// assert_eq!(lazy.frames_read(), 0); // nothing read yet
///
/// // A manager runs straight from the file: one frame is read here.
/// let mut run = MemoryManager::new();
/// run.restore(&snapshot);
/// let mut buf = [0u8; 8];
/// run.read_memory(0x10000 + 1234 * 0x1000, &mut buf)?;
/// assert_eq!(u64::from_le_bytes(buf), 1234);
/// assert_eq!((lazy.frames_read(), lazy.frames()), (1, 256));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LazyFile {
    decoded: Vec<Decoded>,
    /// `None` for a file read completely when opened (before 1.2).
    source: Option<Arc<Source>>,
    /// The store holding the file's page records, and those records.
    records: Option<(Arc<Store>, crate::page_table::LazyRecords)>,
    /// BLAKE3-256 of the index bytes: the file's identity as a parent.
    index_hash: [u8; 32],
    frames: u64,
}

impl std::fmt::Debug for LazyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyFile")
            .field("snapshots", &self.decoded.len())
            .field("frames", &self.frames)
            .field("frames_read", &self.frames_read())
            .finish()
    }
}

/// The lazy pages' store: one per lazily opened file.
struct Source {
    reader: Arc<dyn ByteSource>,
    /// What reading a frame needs of the index (the decoded index itself
    /// is dropped once the snapshots are built).
    index: LazyIndex,
    /// The parent snapshot of an incremental file (its xor bases).
    parent: Option<Snapshot>,
    /// One decompression context and compressed-frame buffer; frame reads
    /// are serialized through it.
    decoder: Mutex<(Option<FrameDecoder>, Vec<u8>)>,
    frames_read: AtomicU64,
    error: Mutex<Option<FileError>>,
}

impl LazySource for Source {
    fn load(&self, record: u32, fill: &mut dyn FnMut(u32, Box<PageBytes>)) {
        let frame = self.index.frame_of[record as usize] as usize;
        if let Err(e) = self.load_frame(frame, fill) {
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }
}

impl Source {
    /// Reads, checks and decompresses frame `n` and fills its pages
    /// (`fill(record, bytes)`), all of them or none.
    fn load_frame(&self, n: usize, fill: &mut dyn FnMut(u32, Box<PageBytes>)) -> Result<(), FileError> {
        let mut guard = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
        let (decoder, buf) = &mut *guard;
        let decoder = match decoder {
            Some(d) => d,
            None => decoder.insert(FrameDecoder::new()?),
        };
        let FrameInfo { offset, length, .. } = self.index.frames[n];
        buf.resize(length as usize, 0);
        self.reader.read_at(HEADER_LENGTH as u64 + offset, buf).map_err(io(self.reader.name()))?;
        let frames = Frames { parent: self.parent.as_ref().map(Snapshot::version), ..self.index.frames() };
        // Checked whole before any page is filled.
        let mut pages: Vec<(u32, Box<PageBytes>)> = Vec::with_capacity(PAGES_PER_FRAME);
        frames.decode_frame(n, buf, decoder, &mut |i, bytes, _| pages.push((i as u32, boxed_copy(bytes))))?;
        for (i, bytes) in pages {
            fill(i, bytes);
        }
        self.frames_read.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl LazyFile {
    /// The file's one snapshot ([`FileError::SnapshotCount`] for a timeline
    /// file: use [`timeline`](Self::timeline)). O(1): its pages stay lazy.
    pub fn snapshot(&self) -> Result<Snapshot, FileError> {
        match self.decoded.as_slice() {
            [one] => Ok(one.snapshot.clone()),
            all => Err(FileError::SnapshotCount { found: all.len() }),
        }
    }

    /// The file's snapshots as a [`Timeline`] (as [`load_timeline`] gives,
    /// ids renumbered), their pages lazy. Time: O(snapshots).
    pub fn timeline(&self) -> Timeline {
        // Invariant: the records were checked when the file was opened.
        timeline_of(self.decoded.clone()).expect("checked when opened")
    }

    /// Snapshots in the file.
    pub fn len(&self) -> usize {
        self.decoded.len()
    }

    /// True when the file holds no snapshot (never, for a valid file).
    pub fn is_empty(&self) -> bool {
        self.decoded.is_empty()
    }

    /// Frames in the file (this file only, not its parents).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames read and decompressed so far (this file only): all of them for
    /// a file read completely when opened (before format 1.2).
    pub fn frames_read(&self) -> u64 {
        self.source.as_ref().map_or(self.frames, |s| s.frames_read.load(Ordering::Relaxed))
    }

    /// True when pages are read on demand (format 1.2 and later).
    pub fn is_lazy(&self) -> bool {
        self.source.is_some()
    }

    /// The last failure to read a page of this file (taken: a second call
    /// returns `None` until the next failure). A parent file's failures are
    /// its own (`InParent` is not added here).
    pub fn take_error(&self) -> Option<FileError> {
        self.source.as_ref().and_then(|s| s.error.lock().unwrap_or_else(PoisonError::into_inner).take())
    }

    /// Reads every frame that still has unread pages, checking everything a
    /// full [`load`] checks for this file's pages; the first failure is
    /// returned (and the pages read before it stay filled). Afterwards no
    /// access touches the file. Parents are loaded as far as these pages'
    /// xor bases need.
    pub fn load_all(&self) -> Result<(), FileError> {
        self.read_frames(true)
    }

    /// Checks every frame of the file as [`verify`](super::verify) does (its
    /// checksum, every page's BLAKE3 hash and fingerprint), reading each
    /// once, without keeping the bytes of pages not read yet; the first
    /// failure is returned. A parent chain's pages are checked as far as
    /// this file's xor bases need them. Time: O(file size).
    pub fn verify(&self) -> Result<(), FileError> {
        self.read_frames(false)
    }

    /// Reads frames: with `fill`, those with unread pages, filling them;
    /// without, every frame, filling nothing.
    fn read_frames(&self, fill: bool) -> Result<(), FileError> {
        let (Some(source), Some((store, records))) = (&self.source, &self.records) else { return Ok(()) };
        for (n, owners) in source.index.owner.iter().enumerate() {
            if !fill {
                source.load_frame(n, &mut |_, _| {})?;
                continue;
            }
            let unread = owners.iter().filter(|&&r| r != 0).any(|&r| !records.is_loaded(store, r - 1));
            if unread {
                source.load_frame(n, &mut |r, bytes| records.fill(store, r, bytes))?;
            }
        }
        Ok(())
    }
}

/// Opens the snapshot file at `path` lazily: reads and checks its header and
/// index (and, for an incremental file, opens its parent chain the same way,
/// with the checks of [`load`]: [`FileError::ParentMissing`],
/// [`FileError::ParentMismatch`], [`FileError::ParentCycle`], chain length,
/// [`FileError::InParent`], [`FileError::NotAFile`]; nothing but regular
/// files is opened). Pages are read on first touch (module docs).
/// Time: O(index size) per file of the chain.
pub fn open_lazy(path: &Path) -> Result<LazyFile, FileError> {
    open_with_loader(path, &mut super::Loader::new())
}

/// [`open_lazy`] that binds the file's MMIO regions with `binder`, as
/// [`load_with`] does (called once the header and index are checked).
/// Time: as `open_lazy`, plus what [`load_with`] says of the binder.
pub fn open_lazy_with(
    path: &Path,
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<LazyFile, FileError> {
    open_with_loader(path, &mut super::Loader::new().binder(binder))
}

/// [`open_lazy`] with `loader`'s binder (and threads, for a file read whole).
pub(super) fn open_with_loader(path: &Path, loader: &mut super::Loader<'_>) -> Result<LazyFile, FileError> {
    let head = read_head(path)?;
    open_parts(path, head, &mut ParentChain::starting_at(path)?, loader)
}

/// Opens the snapshot file at `path` lazily: [`open_lazy`] under its short
/// name, the entry point of reading a file (then [`LazyFile::snapshot`],
/// [`LazyFile::timeline`], [`LazyFile::load_all`], [`LazyFile::verify`]).
pub fn open(path: &Path) -> Result<LazyFile, FileError> {
    open_lazy(path)
}

/// [`open_lazy`] for a file held in memory (self-contained files; an
/// incremental one is [`FileError::ParentMissing`] with its hint, as
/// [`load_from_bytes`] says).
pub fn open_lazy_bytes(bytes: Vec<u8>) -> Result<LazyFile, FileError> {
    open_source(Arc::new(bytes))
}

/// [`open_lazy_bytes`] that binds the file's MMIO regions with `binder`, as
/// [`open_lazy_with`] does. Time: as `open_lazy_bytes`, plus the binder's.
pub fn open_lazy_bytes_with(
    bytes: Vec<u8>,
    binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
) -> Result<LazyFile, FileError> {
    open_source_with_loader(Arc::new(bytes), &mut super::Loader::new().binder(binder))
}

/// Opens a file lazily from any [`ByteSource`] (a local file, bytes in
/// memory, an object in a store): reads and checks its header and index
/// (at most 64 bytes before the header's checks, then the index), and
/// reads each frame on first touch, as [`open_lazy`]. Self-contained files
/// only: an incremental one is [`FileError::ParentMissing`] with its hint
/// (its parent cannot be found from here). A read failure is
/// [`FileError::Io`] naming [`ByteSource::name`]. Time: O(index size).
pub fn open_source(source: Arc<dyn ByteSource>) -> Result<LazyFile, FileError> {
    open_source_with_loader(source, &mut super::Loader::new())
}

/// [`open_source`] with `loader`'s binder.
fn open_source_with_loader(
    source: Arc<dyn ByteSource>,
    loader: &mut super::Loader<'_>,
) -> Result<LazyFile, FileError> {
    let (header, index_bytes, index_hash) = read_head_from(&*source)?;
    let parsed = parse_index(&index_bytes, &header)?;
    if header.minor < FORMAT_MINOR_FINGERPRINTS {
        // No fingerprints: read it all now, as `load` does.
        let decoded = decode_parts(Area::Source(&*source), &header, &index_bytes, &mut no_parent, loader)?;
        return Ok(LazyFile {
            decoded,
            source: None,
            records: None,
            index_hash,
            frames: parsed.frames.len() as u64,
        });
    }
    if let Some(p) = &parsed.parent {
        return Err(FileError::ParentMissing { path: PathBuf::from(p.hint()) });
    }
    finish(source, parsed, None, index_hash, &mut loader.binding)
}

/// The rest of [`open_lazy`] for the file at `path` (its `head` read), the
/// last file of `chain`.
pub(super) fn open_parts(
    path: &Path,
    head: Head,
    chain: &mut ParentChain,
    loader: &mut super::Loader<'_>,
) -> Result<LazyFile, FileError> {
    let parsed = parse_index(&head.index, &head.header)?;
    let index_hash = head.index_hash;
    if head.header.minor < FORMAT_MINOR_FINGERPRINTS {
        // No fingerprints: read it all now, as `load` does.
        let decoded = decode_chain(path, head, chain, loader)?;
        return Ok(LazyFile {
            decoded,
            source: None,
            records: None,
            index_hash,
            frames: parsed.frames.len() as u64,
        });
    }
    let parent = match &parsed.parent {
        None => None,
        Some(p) => Some(chain.follow(path, p, |chain, parent_path, parent_head| {
            open_parts(parent_path, parent_head, chain, &mut loader.quiet())?.snapshot()
        })?),
    };
    let source: Arc<dyn ByteSource> = Arc::new(head.source);
    finish(source, parsed, parent, index_hash, &mut loader.binding)
}

/// Makes a lazy page per page record and builds the snapshots.
fn finish(
    reader: Arc<dyn ByteSource>,
    parsed: Parsed,
    parent: Option<Snapshot>,
    index_hash: [u8; 32],
    binding: &mut Binding<'_>,
) -> Result<LazyFile, FileError> {
    let frames = parsed.frames.len() as u64;
    let fingerprints = parsed
        .pages
        .iter()
        .map(|r| r.fingerprint().ok_or(corrupt("page fingerprint present exactly from format 1.2 on")))
        .collect::<Result<Vec<u64>, FileError>>()?;
    let source = Arc::new(Source {
        reader,
        index: LazyIndex::new(&parsed),
        parent,
        decoder: Mutex::new((None, Vec::new())),
        frames_read: AtomicU64::new(0),
        error: Mutex::new(None),
    });
    let as_source: Arc<dyn LazySource> = source.clone();
    // The pages are compact records of the file's store (the parent's, for
    // an incremental file): a fingerprint and a place, no bytes yet.
    let parent_version = source.parent.as_ref().map(Snapshot::version);
    let store = file_store(parent_version);
    let records = store.add_source(&as_source, &fingerprints, index_hash);
    let stored: Vec<PageRef> =
        (0..fingerprints.len() as u32).map(|i| PageRef::retained(&store, records.get(i))).collect();
    let decoded = build_snapshots(&parsed, &stored, parent_version, &store, Some(&as_source), binding)?;
    Ok(LazyFile { decoded, source: Some(source), records: Some((store, records)), index_hash, frames })
}

impl LazyFile {
    /// BLAKE3-256 of the file's index bytes: its identity as a parent of
    /// incremental files (FORMAT.md §8).
    pub fn index_hash(&self) -> [u8; 32] {
        self.index_hash
    }
}
