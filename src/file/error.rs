//! [`FileError`]: every way reading or writing a snapshot file can fail.

use super::*;

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

pub(super) fn limit(what: &'static str, value: u64, max: u64) -> Result<(), FileError> {
    if value > max { Err(FileError::SizeLimit { what, value, limit: max }) } else { Ok(()) }
}

pub(super) fn corrupt(what: &'static str) -> FileError {
    FileError::CorruptIndex(what)
}
