//! Reading files from the file system: regular files only, the header and
//! the index checked before any frame is read ([`Head`]).

use super::*;

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_owned(), source }
}

/// What a file that is not a regular file is, for [`FileError::NotAFile`].
pub(super) fn kind_of(t: &fs::FileType) -> &'static str {
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

pub(super) fn not_a_file(path: &Path, t: &fs::FileType) -> FileError {
    FileError::NotAFile { path: path.to_owned(), kind: kind_of(t) }
}

/// Opens `path` for reading if it is a regular file (symbolic links
/// followed), with its length. Checked before opening (so a device or a
/// FIFO is never opened) and again on the opened file (so one swapped in
/// between is caught); on Unix the open is non-blocking, so even a FIFO
/// swapped in between cannot make it wait for a writer.
pub(super) fn open_regular(path: &Path) -> Result<(fs::File, u64), FileError> {
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
pub(super) struct Head {
    pub(super) file: fs::File,
    pub(super) header: Header,
    /// The 64 header bytes.
    pub(super) raw: [u8; HEADER_LENGTH],
    pub(super) index: Vec<u8>,
}

/// Opens `path` (a regular file, [`open_regular`]) and reads its header and
/// index, checked: see [`head_of`].
pub(super) fn read_head(path: &Path) -> Result<Head, FileError> {
    let (file, length) = open_regular(path)?;
    head_of(path, file, length)
}

/// Reads the header of `file` (`length` bytes long), checks it and the
/// file's length against it and the limits, then reads the index it
/// locates (at most [`MAX_INDEX_LENGTH`]) and checks its checksum. Reads
/// at most 64 bytes before the checks, and no frame.
pub(super) fn head_of(path: &Path, mut file: fs::File, length: u64) -> Result<Head, FileError> {
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
pub(super) fn read_whole(path: &Path, head: Head) -> Result<Vec<u8>, FileError> {
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
pub(super) fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    read_whole(path, read_head(path)?)
}
