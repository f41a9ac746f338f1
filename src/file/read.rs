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
    /// The file, for positioned reads of its frames.
    pub(super) source: LocalFile,
    pub(super) header: Header,
    pub(super) index: Vec<u8>,
    /// BLAKE3-256 of `index`: the file's identity as a parent.
    pub(super) index_hash: [u8; 32],
}

/// Opens `path` (a regular file, [`open_regular`]) and reads its header and
/// index, checked: see [`head_of`].
pub(super) fn read_head(path: &Path) -> Result<Head, FileError> {
    let (file, length) = open_regular(path)?;
    head_of(path, file, length)
}

/// [`read_head_from`] the opened regular `file` at `path`, `length` bytes
/// long.
pub(super) fn head_of(path: &Path, file: fs::File, length: u64) -> Result<Head, FileError> {
    let source = LocalFile::from_parts(file, length, path);
    let (header, index, index_hash) = read_head_from(&source)?;
    Ok(Head { source, header, index, index_hash })
}

/// Reads the header of `source`, checks it and the source's length against
/// it and the limits, then reads the index it locates (at most
/// [`MAX_INDEX_LENGTH`]) and checks its checksum. Reads at most 64 bytes
/// before the checks, and no frame. A failed read is [`FileError::Io`]
/// naming [`ByteSource::name`]. Returns the header, the index and its
/// BLAKE3.
pub(super) fn read_head_from(source: &dyn ByteSource) -> Result<(Header, Vec<u8>, [u8; 32]), FileError> {
    let length = source.len();
    let mut raw = [0u8; HEADER_LENGTH];
    let head = &mut raw[..length.min(HEADER_LENGTH as u64) as usize];
    source.read_at(0, head).map_err(io(source.name()))?;
    let header = Header::parse(head, length)?;
    // Bounded: index_length ≤ MAX_INDEX_LENGTH (checked by `Header::parse`).
    let mut index = vec![0u8; header.index_length as usize];
    source.read_at(header.index_offset, &mut index).map_err(io(source.name()))?;
    let hash = header.check_index(&index)?;
    Ok((header, index, hash))
}
