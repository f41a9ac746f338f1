//! Atomic writes: a locked, exclusively created temporary file, fsync,
//! rename; the leftovers of killed saves swept by the next save.

use super::*;

/// On a file system that cannot take file locks: how old a leftover
/// temporary file of a save (one interrupted by a crash or a kill) must be
/// before a later successful save of the same target removes it: 10
/// minutes, far longer than the gaps between the writes of a save in
/// progress. Elsewhere a leftover is removed by the next save whatever its
/// age (see [`write_atomic`]).
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Attempts at a fresh random temporary name before giving up.
pub(super) const TEMPORARY_ATTEMPTS: u32 = 64;

/// 64 random bits: std's per-process random hash keys over a counter, the
/// time and the process id (no crate needed; names are also created
/// exclusively, so a collision is only a retry).
pub(super) fn random_u64() -> u64 {
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
pub(super) fn temporary_prefix(file_name: &std::ffi::OsStr) -> std::ffi::OsString {
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
pub(super) fn create_temporary(
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
pub(super) fn still_named(path: &Path, file: &fs::File) -> bool {
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
pub(super) fn sweep_stale_temporaries(dir: &Path, prefix: &std::ffi::OsStr) {
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
pub(super) fn write_atomic_with(
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
