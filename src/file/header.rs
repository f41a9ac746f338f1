//! The 64-byte file header (FORMAT.md §3): one definition, which both
//! writes it ([`Header::to_bytes`]) and reads and checks it
//! ([`Header::parse`]).
//!
//! ```text
//!  offset  size  field
//!  0       8     magic
//!  8       2     format major (u16 LE)
//!  10      2     format minor
//!  12      4     flags (bit 0: incremental)
//!  16      8     index offset (= 64 + frames length)
//!  24      8     index length
//!  32      16    BLAKE3 of the index, first 16 bytes
//!  48      8     frames length
//!  56      8     BLAKE3 of bytes 0..56, first 8 bytes
//! ```

use super::{
    FLAG_INCREMENTAL, FORMAT_MAJOR, FORMAT_MINOR, FORMAT_MINOR_INCREMENTAL, FileError, HEADER_LENGTH, MAGIC,
    MAX_FRAMES_LENGTH, MAX_INDEX_LENGTH, blake3_prefix, limit,
};

/// Field offsets.
const MAJOR: usize = 8;
const MINOR: usize = 10;
const FLAGS: usize = 12;
const INDEX_OFFSET: usize = 16;
const INDEX_LENGTH: usize = 24;
const INDEX_CHECKSUM: usize = 32;
const FRAMES_LENGTH: usize = 48;
const CHECKSUM: usize = 56;

/// A file's header, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) minor: u16,
    pub(super) incremental: bool,
    pub(super) index_offset: u64,
    pub(super) index_length: u64,
    pub(super) frames_length: u64,
    pub(super) index_checksum: [u8; 16],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// The header this build writes for a file of `frames_length` bytes of
    /// frames followed by `index`.
    pub(super) fn new(incremental: bool, frames_length: u64, index: &[u8]) -> Header {
        Header {
            minor: FORMAT_MINOR,
            incremental,
            index_offset: HEADER_LENGTH as u64 + frames_length,
            index_length: index.len() as u64,
            frames_length,
            index_checksum: blake3_prefix(index),
        }
    }

    /// The 64 bytes.
    pub(super) fn to_bytes(self) -> [u8; HEADER_LENGTH] {
        let mut out = [0u8; HEADER_LENGTH];
        let flags = if self.incremental { FLAG_INCREMENTAL } else { 0 };
        out[..MAJOR].copy_from_slice(&MAGIC);
        out[MAJOR..MINOR].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        out[MINOR..FLAGS].copy_from_slice(&self.minor.to_le_bytes());
        out[FLAGS..INDEX_OFFSET].copy_from_slice(&flags.to_le_bytes());
        out[INDEX_OFFSET..INDEX_LENGTH].copy_from_slice(&self.index_offset.to_le_bytes());
        out[INDEX_LENGTH..INDEX_CHECKSUM].copy_from_slice(&self.index_length.to_le_bytes());
        out[INDEX_CHECKSUM..FRAMES_LENGTH].copy_from_slice(&self.index_checksum);
        out[FRAMES_LENGTH..CHECKSUM].copy_from_slice(&self.frames_length.to_le_bytes());
        let checksum: [u8; 8] = blake3_prefix(&out[..CHECKSUM]);
        out[CHECKSUM..].copy_from_slice(&checksum);
        out
    }

    /// Checks a file's header (`head`: its first `min(64, length)` bytes)
    /// and its length against it: §6.1 up to, not including, the index
    /// checksum (see [`Header::check_index`]).
    pub(super) fn parse(head: &[u8], file_length: u64) -> Result<Header, FileError> {
        let prefix = head.len().min(MAGIC.len());
        if head[..prefix] != MAGIC[..prefix] {
            return Err(FileError::BadMagic);
        }
        if head.len() < HEADER_LENGTH {
            return Err(FileError::Truncated { expected: HEADER_LENGTH as u64, actual: file_length });
        }
        let (major, minor) = (u16_at(head, MAJOR), u16_at(head, MINOR));
        if major != FORMAT_MAJOR {
            return Err(FileError::UnsupportedVersion { major, minor });
        }
        let flags = u32_at(head, FLAGS);
        // Bit 0 (incremental) exists from 1.1 on; every other bit is unknown.
        if flags & !FLAG_INCREMENTAL != 0 || (flags != 0 && minor < FORMAT_MINOR_INCREMENTAL) {
            return Err(FileError::UnsupportedFlags(flags));
        }
        if blake3_prefix::<8>(&head[..CHECKSUM]) != head[CHECKSUM..HEADER_LENGTH] {
            return Err(FileError::HeaderChecksum);
        }
        let index_offset = u64_at(head, INDEX_OFFSET);
        let index_length = u64_at(head, INDEX_LENGTH);
        let frames_length = u64_at(head, FRAMES_LENGTH);
        limit("index length", index_length, MAX_INDEX_LENGTH)?;
        limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
        if index_offset != HEADER_LENGTH as u64 + frames_length {
            return Err(FileError::CorruptHeader("index offset is not 64 + frames length"));
        }
        let total = index_offset + index_length;
        if file_length < total {
            return Err(FileError::Truncated { expected: total, actual: file_length });
        }
        if file_length > total {
            return Err(FileError::TrailingBytes { expected: total, actual: file_length });
        }
        Ok(Header {
            minor,
            incremental: flags & FLAG_INCREMENTAL != 0,
            index_offset,
            index_length,
            frames_length,
            index_checksum: head[INDEX_CHECKSUM..FRAMES_LENGTH].try_into().expect("16 bytes"),
        })
    }

    /// Checks the index bytes against the header's checksum (the first 16
    /// bytes of their BLAKE3); returns the whole BLAKE3, the file's
    /// identity as a parent (FORMAT.md §8), so it is computed once.
    pub(super) fn check_index(&self, index: &[u8]) -> Result<[u8; 32], FileError> {
        let hash = *blake3::hash(index).as_bytes();
        if hash[..16] != self.index_checksum {
            return Err(FileError::IndexChecksum);
        }
        Ok(hash)
    }
}

/// Checks the header and the index checksum of a whole file; returns the
/// frame area, the index bytes and the header.
pub(super) fn split(bytes: &[u8]) -> Result<(&[u8], &[u8], Header), FileError> {
    let header = Header::parse(&bytes[..bytes.len().min(HEADER_LENGTH)], bytes.len() as u64)?;
    let index = &bytes[header.index_offset as usize..];
    header.check_index(index)?;
    Ok((&bytes[HEADER_LENGTH..header.index_offset as usize], index, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_parses_back_and_each_damaged_field_is_refused() {
        let index = b"an index";
        let header = Header::new(true, 4096, index);
        let bytes = header.to_bytes();
        let length = HEADER_LENGTH as u64 + 4096 + index.len() as u64;
        assert_eq!(Header::parse(&bytes, length).unwrap(), header);
        header.check_index(index).unwrap();
        assert!(matches!(header.check_index(b"another"), Err(FileError::IndexChecksum)));
        for at in 0..HEADER_LENGTH {
            let mut damaged = bytes;
            damaged[at] ^= 0x40;
            assert!(Header::parse(&damaged, length).is_err(), "byte {at}");
        }
        assert!(matches!(Header::parse(&bytes, length - 1), Err(FileError::Truncated { .. })));
        assert!(matches!(Header::parse(&bytes, length + 1), Err(FileError::TrailingBytes { .. })));
    }
}
