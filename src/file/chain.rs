//! Parent chains (FORMAT.md §6.6): finding, checking and loading an
//! incremental file's parents, and saving an increment against one.

use super::*;

/// The files of a parent chain as it is followed, from the file asked for
/// (or the increment being saved) to the one being opened: their canonical
/// paths, which catch a cycle before anything of the repeated file is
/// read, and their count, which [`MAX_CHAIN_LENGTH`] bounds. The one place
/// that resolves parents (FORMAT.md §6.6): a full load ([`read_chain`]), a
/// lazy open ([`lazy::open_parts`]), an incremental save and [`rebase`]
/// all follow their parents through it.
pub(super) struct ParentChain {
    files: Vec<PathBuf>,
}

impl ParentChain {
    /// A chain that starts at the existing file `path`.
    pub(super) fn starting_at(path: &Path) -> Result<ParentChain, FileError> {
        Ok(ParentChain { files: vec![fs::canonicalize(path).map_err(io(path))?] })
    }

    /// A chain of the files at the canonical paths `files`, first to last
    /// (the first may not exist yet: an increment being saved).
    pub(super) fn of(files: Vec<PathBuf>) -> ParentChain {
        ParentChain { files }
    }

    /// Follows the parent record `p` of the chain's last file, at `child`:
    /// opens the parent with the checks of FORMAT.md §6.6 up to its
    /// identity, in this order: chain length ([`FileError::SizeLimit`]); a
    /// regular file at the hint relative to `child`'s directory
    /// ([`FileError::ParentMissing`], [`FileError::NotAFile`], I/O); not
    /// already in the chain ([`FileError::ParentCycle`], before anything is
    /// read); its header and index ([`FileError::InParent`]); the BLAKE3 of
    /// its index ([`FileError::ParentMismatch`]). Its frames are not read.
    /// Then `f` gets the chain with the parent as its last file, the
    /// parent's path and its head; `f`'s errors are the parent's
    /// ([`FileError::InParent`]).
    pub(super) fn follow<T>(
        &mut self,
        child: &Path,
        p: &ParentRecord,
        f: impl FnOnce(&mut ParentChain, &Path, Head) -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        let parent_path = directory_of(child).join(p.hint());
        limit("parent chain length", self.files.len() as u64 + 1, MAX_CHAIN_LENGTH)?;
        let (file, length) = open_chain_file(&parent_path)?;
        let canonical = fs::canonicalize(&parent_path).map_err(io(&parent_path))?;
        if self.files.contains(&canonical) {
            return Err(FileError::ParentCycle { path: parent_path });
        }
        let head = head_of(&parent_path, file, length).map_err(in_parent(&parent_path))?;
        if head.index_hash[..] != p.index_hash()[..] {
            return Err(FileError::ParentMismatch { path: parent_path });
        }
        self.files.push(canonical);
        let result = f(self, &parent_path, head);
        self.files.pop();
        result.map_err(in_parent(&parent_path))
    }
}

/// Opens a file of a parent chain: a regular file, missing
/// ([`FileError::ParentMissing`]) or not ([`FileError::NotAFile`], I/O).
fn open_chain_file(path: &Path) -> Result<(fs::File, u64), FileError> {
    match open_regular(path) {
        Err(FileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(FileError::ParentMissing { path: path.to_owned() })
        }
        opened => opened,
    }
}

pub(super) fn in_parent(path: &Path) -> impl Fn(FileError) -> FileError + '_ {
    move |e| FileError::InParent { path: path.to_owned(), source: Box::new(e) }
}

/// Decodes the file at `path` (its header and index read: `head`), the
/// last file of `chain`; its frames are read as they are decoded. An
/// incremental file's parent is followed through the chain
/// ([`ParentChain::follow`]) and loaded the same way, first.
pub(super) fn decode_chain(
    path: &Path,
    head: Head,
    chain: &mut ParentChain,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let Head { source, header, index, .. } = head;
    let mut quiet = loader.quiet();
    let mut resolve = |p: &ParentRecord| -> Result<Snapshot, FileError> {
        chain.follow(path, p, |chain, parent_path, head| {
            one_snapshot(decode_chain(parent_path, head, chain, &mut quiet)?)
        })
    };
    decode_parts(Area::Source(&source), &header, &index, &mut resolve, loader)
}

pub(super) fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads and decodes the file at `path` with its whole parent chain. Each
/// file's header and index are read and checked before its frames.
pub(super) fn read_chain(path: &Path, loader: &mut Loader<'_>) -> Result<Vec<Decoded>, FileError> {
    let head = read_head(path)?;
    decode_chain(path, head, &mut ParentChain::starting_at(path)?, loader)
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
    // The chain starts at the increment itself: a parent chain that leads
    // back to `path` would be broken by this save (a cycle).
    let mut chain = ParentChain::of(vec![target.child_canonical, target.parent_canonical]);
    let mut loader = Loader::new().threads(writer.threads);
    let parent_file =
        lazy::open_parts(parent, target.parent_head, &mut chain, &mut loader).map_err(in_parent(parent))?;
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
    if target.parent_head.index_hash != opened.index_hash() {
        return Err(FileError::ParentMismatch { path: parent.to_owned() });
    }
    save_against(snapshot, opened, parent, &target.hint, path, writer)
}

/// The checks of an incremental save before its parent is opened.
pub(super) struct IncrementalTarget {
    /// The parent's header and index, checked.
    pub(super) parent_head: Head,
    pub(super) parent_canonical: PathBuf,
    /// Where the increment goes: its directory, canonical, and its name.
    pub(super) child_canonical: PathBuf,
    /// The parent's path relative to the child's directory.
    pub(super) hint: String,
}

impl IncrementalTarget {
    /// The parent is read as any file: a regular file
    /// ([`FileError::ParentMissing`], [`FileError::NotAFile`]), header and
    /// index checked ([`FileError::InParent`]) before anything else; `path`
    /// may not name it ([`FileError::ParentCycle`]).
    pub(super) fn check(parent: &Path, path: &Path) -> Result<IncrementalTarget, FileError> {
        let (parent_file, parent_length) = open_chain_file(parent)?;
        let parent_head = head_of(parent, parent_file, parent_length).map_err(in_parent(parent))?;
        let parent_canonical = fs::canonicalize(parent).map_err(io(parent))?;
        let dir = directory_of(path);
        let dir_canonical = fs::canonicalize(&dir).map_err(io(&dir))?;
        let file_name = path.file_name().ok_or_else(|| FileError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?;
        let child_canonical = dir_canonical.join(file_name);
        if child_canonical == parent_canonical {
            return Err(FileError::ParentCycle { path: path.to_owned() });
        }
        let hint = relative_path(&dir_canonical, &parent_canonical).ok_or_else(|| FileError::Io {
            path: parent.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no relative path from the child's directory",
            ),
        })?;
        Ok(IncrementalTarget { parent_head, parent_canonical, child_canonical, hint })
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
