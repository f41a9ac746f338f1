//! Where a file's bytes come from: [`ByteSource`], positioned reads of byte
//! ranges. Implemented for a local file ([`LocalFile`]) and for bytes in
//! memory (`Vec<u8>`, `Arc<[u8]>`); a remote object store adds its own
//! without touching the format code. [`open_source`](super::open_source)
//! opens any of them lazily.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::FileError;

/// Positioned reads of a snapshot file's bytes. Reads may come from several
/// threads at once (each lazily opened file serializes its own frame
/// reads, but several files may share a source).
pub trait ByteSource: Send + Sync {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// True for an empty source.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a read past the end or
    /// any failure is an error (the caller names the source in it).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    /// What errors call the source: a path, or a name such as an object
    /// key.
    fn name(&self) -> &Path;
}

/// A local regular file, read with positioned reads (`pread` on Unix: no
/// seek, no lock between threads).
#[derive(Debug)]
pub struct LocalFile {
    file: std::fs::File,
    length: u64,
    path: PathBuf,
}

impl LocalFile {
    /// Opens the regular file at `path` (a directory, FIFO, device or
    /// socket is [`FileError::NotAFile`], never read). Time: O(1).
    pub fn open(path: &Path) -> Result<LocalFile, FileError> {
        let (file, length) = super::open_regular(path)?;
        Ok(LocalFile { file, length, path: path.to_owned() })
    }

    /// A file already opened by [`super::open_regular`].
    pub(super) fn from_parts(file: std::fs::File, length: u64, path: &Path) -> LocalFile {
        LocalFile { file, length, path: path.to_owned() }
    }
}

impl ByteSource for LocalFile {
    fn len(&self) -> u64 {
        self.length
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(
                    &self.file,
                    &mut buf[done..],
                    offset + done as u64,
                )?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }

    fn name(&self) -> &Path {
        &self.path
    }
}

/// Copies `buf.len()` bytes at `offset` out of `bytes`, or fails past the end.
fn read_slice(bytes: &[u8], offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let start =
        usize::try_from(offset).map_err(|_| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let src = start
        .checked_add(buf.len())
        .and_then(|end| bytes.get(start..end))
        .ok_or(std::io::ErrorKind::UnexpectedEof)?;
    buf.copy_from_slice(src);
    Ok(())
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        read_slice(self, offset, buf)
    }

    fn name(&self) -> &Path {
        Path::new("<memory>")
    }
}

impl ByteSource for Arc<[u8]> {
    fn len(&self) -> u64 {
        (**self).len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        read_slice(self, offset, buf)
    }

    fn name(&self) -> &Path {
        Path::new("<memory>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_fail_and_reads_inside_copy() {
        let bytes: Vec<u8> = (0..100).collect();
        let mut buf = [0u8; 10];
        bytes.read_at(90, &mut buf).unwrap();
        assert_eq!(buf[0], 90);
        assert!(bytes.read_at(91, &mut buf).is_err());
        assert!(bytes.read_at(u64::MAX, &mut buf).is_err());
        let shared: Arc<[u8]> = bytes.clone().into();
        shared.read_at(0, &mut buf).unwrap();
        assert_eq!((buf[9], ByteSource::len(&shared)), (9, 100));
    }
}
