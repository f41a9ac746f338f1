//! How files are written and read: [`Writer`] (threads, zstd level,
//! progress) and [`Loader`] (threads, progress). The free functions of
//! [`file`](super) are these with their defaults.

use std::path::Path;

use super::{FileError, Item, Progress, ZSTD_LEVEL};
use crate::snapshot::Snapshot;
use crate::timeline::Timeline;

/// Writes snapshot files. Built with its options, then used for any number
/// of saves:
///
/// ```
/// # use vmsnap::{MemoryManager, Protection, RegionKind};
/// # let dir = std::env::temp_dir().join(format!("vmsnap-writer-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let mut mm = MemoryManager::new();
/// mm.allocate_memory_at(0x10000, 0x10000, Protection::READ_WRITE, false, RegionKind::Private)?;
/// let mut done = 0;
/// let mut progress = |p: vmsnap::file::Progress| done = p.done;
/// vmsnap::file::Writer::new()
///     .threads(2)
///     .level(6)?
///     .progress(&mut progress)
///     .save(&mm.snapshot(), &dir.join("session.vmsnap"))?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The bytes written depend on the snapshot and the level only, never on
/// the thread count. A save streams: frames are written as later ones
/// compress, so the memory in flight is one batch of frames (16 per
/// thread, 1 MiB of pages each), not the file.
pub struct Writer<'p> {
    pub(super) threads: usize,
    pub(super) level: i32,
    pub(super) progress: Option<&'p mut dyn FnMut(Progress)>,
}

impl Default for Writer<'_> {
    fn default() -> Self {
        Writer { threads: 0, level: ZSTD_LEVEL, progress: None }
    }
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("threads", &self.threads)
            .field("level", &self.level)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'p> Writer<'p> {
    /// One thread per available core (at most 8), zstd level
    /// [`ZSTD_LEVEL`], no progress reports.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Threads compressing and hashing pages: 0 is one per available core
    /// (at most 8), 1 keeps the work on the calling thread.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The zstd level of the frames, 1 to 22 (higher: smaller and slower;
    /// any level reads the same). Another value is
    /// [`FileError::InvalidLevel`].
    pub fn level(mut self, level: i32) -> Result<Self, FileError> {
        if !(1..=22).contains(&level) {
            return Err(FileError::InvalidLevel { level });
        }
        self.level = level;
        Ok(self)
    }

    /// Calls `progress` after each batch of frames is compressed.
    pub fn progress(mut self, progress: &'p mut dyn FnMut(Progress)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// [`file::save`](super::save) with these options.
    pub fn save(&mut self, snapshot: &Snapshot, path: &Path) -> Result<(), FileError> {
        super::save_items(path, &[Item::one(snapshot)], None, self)
    }

    /// [`file::save_timeline`](super::save_timeline) with these options.
    pub fn save_timeline(&mut self, timeline: &Timeline, path: &Path) -> Result<(), FileError> {
        super::save_items(path, &Item::of_timeline(timeline), None, self)
    }

    /// [`file::save_incremental`](super::save_incremental) with these
    /// options.
    pub fn save_incremental(
        &mut self,
        snapshot: &Snapshot,
        parent: &Path,
        path: &Path,
    ) -> Result<(), FileError> {
        super::save_incremental_with(snapshot, parent, path, self)
    }

    /// [`save_incremental`](Self::save_incremental) against a parent the
    /// caller opened already (the file a run was restored from, say): the
    /// parent is not opened again, the pages it has read stay read, and a
    /// page of `snapshot` that is one of `opened`'s is known unchanged by
    /// identity. `parent` must be the path of that file (checked by the
    /// BLAKE3 of its index: [`FileError::ParentMismatch`]). The cost of a
    /// save is then the changed pages (and one pass over the page map),
    /// not the parent: what a fuzzer or a recorder saving increments of one
    /// base wants.
    pub fn save_incremental_from(
        &mut self,
        snapshot: &Snapshot,
        opened: &super::LazyFile,
        parent: &Path,
        path: &Path,
    ) -> Result<(), FileError> {
        super::save_incremental_from(snapshot, opened, parent, path, self)
    }

    /// [`file::to_bytes`](super::to_bytes) with these options.
    pub fn to_bytes(&mut self, snapshot: &Snapshot) -> Result<Vec<u8>, FileError> {
        super::encode(&[Item::one(snapshot)], None, self)
    }

    /// [`file::timeline_to_bytes`](super::timeline_to_bytes) with these
    /// options.
    pub fn timeline_to_bytes(&mut self, timeline: &Timeline) -> Result<Vec<u8>, FileError> {
        super::encode(&Item::of_timeline(timeline), None, self)
    }
}

/// Loads and checks snapshot files with its options (threads, progress, an
/// MMIO binder). The bytes loaded never depend on them.
#[derive(Default)]
pub struct Loader<'p> {
    pub(super) threads: usize,
    pub(super) progress: Option<&'p mut dyn FnMut(Progress)>,
    pub(super) binding: super::Binding<'p>,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("threads", &self.threads)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'p> Loader<'p> {
    /// One thread per available core (at most 8), no progress reports.
    pub fn new() -> Self {
        Loader::default()
    }

    /// Threads decompressing and checking frames: 0 is one per available
    /// core (at most 8), 1 keeps the work on the calling thread.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Calls `progress` after each batch of frames is checked (a parent
    /// chain is loaded first, without reports).
    pub fn progress(mut self, progress: &'p mut dyn FnMut(Progress)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Binds the MMIO regions of what is loaded with `binder(base,
    /// length)`, as [`file::load_with`](super::load_with) describes.
    pub fn binder(mut self, binder: &'p mut dyn FnMut(u64, u64) -> Option<crate::MmioHandlers>) -> Self {
        self.binding = super::Binding::with(binder);
        self
    }

    /// The same threads, no progress, no binder: for a parent chain (its
    /// regions are read for their pages only).
    pub(super) fn quiet(&self) -> Loader<'static> {
        Loader { threads: self.threads, progress: None, binding: super::Binding::none() }
    }

    /// Reports `done` of `total` bytes, if asked to.
    pub(super) fn report(&mut self, done: u64, total: u64) {
        if let Some(progress) = self.progress.as_mut() {
            progress(Progress { done, total });
        }
    }

    /// [`file::load`](super::load) with these options.
    pub fn load(&mut self, path: &Path) -> Result<Snapshot, FileError> {
        super::one_snapshot(super::read_chain(path, self)?)
    }

    /// [`file::load_timeline`](super::load_timeline) with these options.
    pub fn load_timeline(&mut self, path: &Path) -> Result<Timeline, FileError> {
        super::timeline_of(super::read_chain(path, self)?)
    }

    /// [`file::open`](super::open) with these options (the progress is not
    /// used: nothing is read but the header and the index).
    pub fn open(&mut self, path: &Path) -> Result<super::LazyFile, FileError> {
        super::lazy::open_with_loader(path, self)
    }

    /// [`file::verify`](super::verify) with these options.
    pub fn verify(&mut self, path: &Path) -> Result<(), FileError> {
        super::read_chain(path, self).map(drop)
    }
}
