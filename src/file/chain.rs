//! Parent chains (FORMAT.md §6.6): finding, checking and loading an
//! incremental file's parents, and saving an increment against one.

use super::*;

/// Opens the parent that the incremental file number `depth` of a chain
/// (in directory `dir`; the chain's files so far are `chain`) names with
/// `p`, with the checks of FORMAT.md §6.6 up to its identity, in this
/// order: chain length ([`FileError::SizeLimit`]); a regular file at the
/// hint ([`FileError::ParentMissing`], [`FileError::NotAFile`], I/O);
/// not already in the chain ([`FileError::ParentCycle`], before anything
/// is read); its header and index ([`FileError::InParent`]); the BLAKE3 of
/// its index ([`FileError::ParentMismatch`]). Its frames are not read.
/// Returns its path, canonical path and head.
pub(super) fn open_parent(
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

pub(super) fn in_parent(path: &Path) -> impl Fn(FileError) -> FileError + '_ {
    move |e| FileError::InParent { path: path.to_owned(), source: Box::new(e) }
}

/// Decodes the file `bytes` read from `path`, which is file number `depth`
/// (1-based) of a parent chain whose files so far are `chain` (canonical
/// paths, `path` included): an incremental file's parent is found by its
/// hint relative to `path`'s directory, identified by the BLAKE3 of its
/// index ([`open_parent`]), and loaded the same way.
pub(super) fn decode_chain(
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

pub(super) fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads and decodes the file at `path` with its whole parent chain; `depth`
/// is its place in the chain (1 for the file asked for). Each file's header
/// and index are read and checked before its frames.
pub(super) fn read_chain(
    path: &Path,
    depth: u64,
    loader: &mut Loader<'_>,
) -> Result<(Vec<u8>, Vec<Decoded>), FileError> {
    let bytes = read(path)?;
    let mut chain = vec![fs::canonicalize(path).map_err(io(path))?];
    let decoded = decode_chain(path, &bytes, depth, &mut chain, loader)?;
    Ok((bytes, decoded))
}

/// The path of `to` relative to the directory `from` (both canonical),
/// `/`-separated.
pub(super) fn relative_path(from: &Path, to: &Path) -> Option<String> {
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

/// [`save_incremental`] with `writer`'s options.
pub(super) fn save_incremental_with(
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
pub(super) fn save_incremental_from(
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
pub(super) struct IncrementalTarget {
    /// The parent's header and index, checked.
    pub(super) parent_head: Head,
    pub(super) parent_canonical: PathBuf,
    /// The parent's path relative to the child's directory.
    pub(super) hint: String,
}

impl IncrementalTarget {
    /// The parent is read as any file: a regular file
    /// ([`FileError::ParentMissing`], [`FileError::NotAFile`]), header and
    /// index checked ([`FileError::InParent`]) before anything else; `path`
    /// may not name it ([`FileError::ParentCycle`]).
    pub(super) fn check(parent: &Path, path: &Path) -> Result<IncrementalTarget, FileError> {
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
pub(super) fn save_against(
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
