//! The MessagePack index (FORMAT.md §5): its records, parsed and checked
//! ([`parse_index`]), and a file's identity as a parent.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct Index(
    pub(super) Vec<FrameRecord>,
    pub(super) Vec<PageRecord>,
    pub(super) Vec<SnapshotRecord>,
    pub(super) Option<ParentRecord>,
);

/// A fixed-length byte string of the index (a hash, a checksum), held
/// inline, so decoding one allocates nothing. It decodes from whatever
/// `serde_bytes::ByteBuf` decodes from (bytes, a string, an array of
/// bytes); one of another length than `N` decodes too, and reads as empty,
/// so the index checks refuse it by its length.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Fixed<const N: usize>(Option<[u8; N]>);

impl<const N: usize> Fixed<N> {
    pub(super) fn new(bytes: [u8; N]) -> Fixed<N> {
        Fixed(Some(bytes))
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| &b[..])
    }
}

impl<const N: usize> Serialize for Fixed<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_slice())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Fixed<N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<const N: usize>;
        impl<'de, const N: usize> serde::de::Visitor<'de> for Visit<N> {
            type Value = Fixed<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Fixed<N>, E> {
                Ok(Fixed(v.try_into().ok()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Fixed<N>, E> {
                Ok(Fixed(v.as_bytes().try_into().ok()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Fixed<N>, A::Error> {
                let (mut bytes, mut len) = ([0u8; N], 0usize);
                while let Some(b) = seq.next_element::<u8>()? {
                    if let Some(slot) = bytes.get_mut(len) {
                        *slot = b;
                    }
                    len += 1;
                }
                Ok(Fixed((len == N).then_some(bytes)))
            }
        }
        deserializer.deserialize_byte_buf(Visit::<N>)
    }
}

/// `[offset, compressed_length, pages, checksum(8)]`.
#[derive(Serialize, Deserialize)]
pub(super) struct FrameRecord(pub(super) u64, pub(super) u32, pub(super) u8, pub(super) Fixed<8>);

/// `[hash(32), frame, slot, kind, base?, fingerprint]` (base: xor only, a
/// page number of the parent snapshot; fingerprint: from 1.2, absent
/// before).
#[derive(Serialize, Deserialize)]
pub(super) struct PageRecord(
    pub(super) Fixed<32>,
    pub(super) u32,
    pub(super) u8,
    pub(super) u8,
    pub(super) Option<u64>,
    #[serde(default)] pub(super) Option<u64>,
);

/// `[id, name?, parent?, layout_version, state, page_map]`.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotRecord(
    pub(super) u64,
    pub(super) Option<String>,
    pub(super) Option<u64>,
    pub(super) u64,
    pub(super) ByteBuf,
    pub(super) Vec<RunRecord>,
);

/// `[first_page, [page record index, ...]]`.
#[derive(Serialize, Deserialize)]
pub(super) struct RunRecord(pub(super) u64, pub(super) Vec<u32>);

/// `[index_hash(32), file_name_hint]` — incremental files only (1.1).
#[derive(Serialize, Deserialize)]
pub(super) struct ParentRecord(pub(super) Fixed<32>, pub(super) String);

// The records keep the wire shape (MessagePack arrays, by position); the
// code reads them through these names.
impl FrameRecord {
    pub(super) fn offset(&self) -> u64 {
        self.0
    }
    pub(super) fn compressed_length(&self) -> u32 {
        self.1
    }
    pub(super) fn pages(&self) -> u8 {
        self.2
    }
    pub(super) fn checksum(&self) -> &[u8] {
        self.3.as_slice()
    }
}

impl PageRecord {
    pub(super) fn hash(&self) -> &[u8] {
        self.0.as_slice()
    }
    pub(super) fn frame(&self) -> u32 {
        self.1
    }
    pub(super) fn slot(&self) -> u8 {
        self.2
    }
    pub(super) fn kind(&self) -> u8 {
        self.3
    }
    /// The parent snapshot's page number under an XOR page.
    pub(super) fn base(&self) -> Option<u64> {
        self.4
    }
    /// From format 1.2 on.
    pub(super) fn fingerprint(&self) -> Option<u64> {
        self.5
    }
}

impl SnapshotRecord {
    pub(super) fn id(&self) -> u64 {
        self.0
    }
    pub(super) fn name(&self) -> Option<&str> {
        self.1.as_deref()
    }
    pub(super) fn parent(&self) -> Option<u64> {
        self.2
    }
    pub(super) fn layout_version(&self) -> u64 {
        self.3
    }
    /// The serialized layout (FORMAT.md §7).
    pub(super) fn state(&self) -> &[u8] {
        &self.4
    }
    pub(super) fn page_map(&self) -> &[RunRecord] {
        &self.5
    }
    pub(super) fn set_page_map(&mut self, runs: Vec<RunRecord>) {
        self.5 = runs;
    }
}

impl RunRecord {
    pub(super) fn first_page(&self) -> u64 {
        self.0
    }
    /// The 1-based page records of the run's pages (0: inherited).
    pub(super) fn records(&self) -> &[u32] {
        &self.1
    }
}

impl ParentRecord {
    /// BLAKE3-256 of the parent's index (32 bytes once checked).
    pub(super) fn index_hash(&self) -> &[u8] {
        self.0.as_slice()
    }
    /// The parent's path relative to the child's directory.
    pub(super) fn hint(&self) -> &str {
        &self.1
    }
}

pub(super) fn blake3_prefix<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; N];
    out.copy_from_slice(&hash.as_bytes()[..N]);
    out
}

/// The identity of a file as a parent: BLAKE3-256 of its index bytes (after
/// checking its header and index checksum).
pub(super) fn index_hash(bytes: &[u8]) -> Result<[u8; 32], FileError> {
    let (_, index, header) = split(bytes)?;
    header.check_index(index)
}

/// Checks a parent record's fields (FORMAT.md §6.2).
pub(super) fn check_parent_record(p: &ParentRecord) -> Result<(), FileError> {
    if p.index_hash().len() != 32 {
        return Err(corrupt("parent index hash is not 32 bytes"));
    }
    let hint = Path::new(p.hint());
    let normal = hint.components().all(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
    if p.hint().is_empty()
        || p.hint().len() > MAX_HINT_LENGTH
        || !normal
        || !hint.components().any(|c| matches!(c, Component::Normal(_)))
    {
        return Err(corrupt("parent file-name hint is not a relative path to a file"));
    }
    Ok(())
}

/// A file's index, decoded and checked (§6.2–§6.4): everything but the
/// frames' contents, the parent and the snapshots' layouts.
pub(super) struct Parsed {
    /// The header's minor version.
    pub(super) minor: u16,
    /// The frame records, checked, in compact form.
    pub(super) frames: Vec<FrameInfo>,
    pub(super) pages: Vec<PageRecord>,
    pub(super) snapshots: Vec<SnapshotRecord>,
    pub(super) parent: Option<ParentRecord>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    pub(super) owner: Vec<[u32; PAGES_PER_FRAME]>,
}

/// Decodes the MessagePack index: one value, nothing after it. Borrowed
/// from `index_bytes`, so its hashes and checksums are copied inline
/// ([`Fixed`]) without an allocation each.
fn decode_index(index_bytes: &[u8]) -> Result<Index, FileError> {
    use rmp_serde::decode::Error;
    let mut de = rmp_serde::Deserializer::from_read_ref(index_bytes);
    let index = Index::deserialize(&mut de).map_err(|_| corrupt("MessagePack index does not decode"))?;
    // Only an end of input where the next value's marker would be means
    // nothing follows.
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(Error::InvalidMarkerRead(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(index),
        _ => Err(corrupt("trailing bytes after the MessagePack index")),
    }
}

/// Decodes and checks a file's index (§6.2–§6.4) against its header.
pub(super) fn parse_index(index_bytes: &[u8], header: &Header) -> Result<Parsed, FileError> {
    let Index(frames, pages, snapshots, parent) = decode_index(index_bytes)?;
    limit("frame count", frames.len() as u64, MAX_STORED_PAGES)?;
    limit("page record count", pages.len() as u64, MAX_STORED_PAGES)?;
    limit("snapshot count", snapshots.len() as u64, MAX_SNAPSHOTS)?;
    if parent.is_some() != header.incremental {
        return Err(corrupt("parent record present exactly when the incremental flag is set"));
    }
    if let Some(p) = &parent {
        check_parent_record(p)?;
        if snapshots.len() != 1 {
            return Err(corrupt("an incremental file holds exactly one snapshot"));
        }
        let only = &snapshots[0];
        if only.id() != 0 || only.name().is_some() || only.parent().is_some() {
            return Err(corrupt("an incremental file's snapshot has id 0, no name, no parent"));
        }
    }
    check_frames(&frames, header)?;
    let owner = check_pages(&pages, &frames, header)?;
    let frames = frames.iter().map(FrameInfo::of).collect();
    Ok(Parsed { minor: header.minor, frames, pages, snapshots, parent, owner })
}

/// Frames tile the frame area, in order, each of 1 to 16 pages.
fn check_frames(frames: &[FrameRecord], header: &Header) -> Result<(), FileError> {
    let mut at = 0u64;
    for f in frames {
        limit("frame compressed length", u64::from(f.compressed_length()), MAX_FRAME_COMPRESSED)?;
        if f.offset() != at || f.compressed_length() == 0 {
            return Err(corrupt("frames are not contiguous and ascending"));
        }
        if f.pages() == 0 || usize::from(f.pages()) > PAGES_PER_FRAME {
            return Err(corrupt("frame page count not in 1..=16"));
        }
        if f.checksum().len() != 8 {
            return Err(corrupt("frame checksum is not 8 bytes"));
        }
        at += u64::from(f.compressed_length());
        if at > header.frames_length {
            return Err(corrupt("frame outside the frame area"));
        }
    }
    if at != header.frames_length {
        return Err(corrupt("frames do not fill the frame area"));
    }
    Ok(())
}

/// Page records: valid, in distinct slots with distinct hashes, every slot
/// used. Returns `owner[frame][slot]`, the 1-based record stored there.
fn check_pages(
    pages: &[PageRecord],
    frames: &[FrameRecord],
    header: &Header,
) -> Result<Vec<[u32; PAGES_PER_FRAME]>, FileError> {
    let mut owner: Vec<[u32; PAGES_PER_FRAME]> = vec![[0; PAGES_PER_FRAME]; frames.len()];
    for (i, record) in pages.iter().enumerate() {
        if record.hash().len() != 32 {
            return Err(corrupt("page hash is not 32 bytes"));
        }
        if record.fingerprint().is_some() != (header.minor >= FORMAT_MINOR_FINGERPRINTS) {
            return Err(corrupt("page fingerprint present exactly from format 1.2 on"));
        }
        match (record.kind(), record.base()) {
            (KIND_PLAIN, None) => {}
            (KIND_XOR, Some(b)) if header.incremental && b < VPN_LIMIT => {}
            (KIND_XOR, _) if !header.incremental => {
                return Err(corrupt("xor page in a file that is not incremental"));
            }
            _ => return Err(corrupt("page kind or base invalid")),
        }
        let frame = record.frame() as usize;
        let f = frames.get(frame).ok_or(corrupt("page record names a missing frame"))?;
        if record.slot() >= f.pages() {
            return Err(corrupt("page record names a missing slot"));
        }
        let cell = &mut owner[frame][usize::from(record.slot())];
        if *cell != 0 {
            return Err(corrupt("two page records share a slot"));
        }
        *cell = i as u32 + 1;
    }
    // Sorted, not hashed: O(n log n) whatever hashes a hostile file holds.
    // Invariant: every hash is 32 bytes (checked above).
    let key = |h: &[u8]| {
        let (a, b) = h.split_at(16);
        (u128::from_be_bytes(a.try_into().expect("16")), u128::from_be_bytes(b.try_into().expect("16")))
    };
    let mut hashes: Vec<(u128, u128)> = pages.iter().map(|r| key(r.hash())).collect();
    hashes.sort_unstable();
    if hashes.windows(2).any(|w| w[0] == w[1]) {
        return Err(corrupt("two page records have the same hash"));
    }
    let slots: u64 = frames.iter().map(|f| u64::from(f.pages())).sum();
    if slots != pages.len() as u64 {
        return Err(corrupt("a frame slot has no page record"));
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_one_value_and_nothing_after_it() {
        let mut bytes = rmp_serde::to_vec(&Index(vec![], vec![], vec![], None)).unwrap();
        assert!(decode_index(&bytes).is_ok());
        assert!(decode_index(&bytes[..bytes.len() - 1]).is_err());
        // A whole value after it, a marker alone, a marker with half its
        // length: each is trailing bytes.
        for tail in [&[0xC0u8][..], &[0xD9], &[0xDA, 0x00], &[0x00, 0x00]] {
            let mut with = bytes.clone();
            with.extend_from_slice(tail);
            assert!(
                matches!(decode_index(&with), Err(FileError::CorruptIndex(m)) if m.contains("trailing")),
                "{tail:?}"
            );
        }
        bytes[0] = 0x95; // an array of 5: not the index
        assert!(
            matches!(decode_index(&bytes), Err(FileError::CorruptIndex(m)) if m.contains("does not decode"))
        );
    }

    #[test]
    fn a_fixed_field_decodes_what_a_byte_buffer_does_and_keeps_only_its_length() {
        let decode = |bytes: Vec<u8>| rmp_serde::from_slice::<Fixed<4>>(&bytes).unwrap();
        let bin = |v: &[u8]| rmp_serde::to_vec(&serde_bytes::Bytes::new(v)).unwrap();
        assert_eq!(decode(bin(b"abcd")).as_slice(), b"abcd");
        // As an array of integers and as a string, as ByteBuf accepts.
        assert_eq!(decode(rmp_serde::to_vec(&vec![1u8, 2, 3, 4]).unwrap()).as_slice(), [1, 2, 3, 4]);
        assert_eq!(decode(rmp_serde::to_vec("wxyz").unwrap()).as_slice(), b"wxyz");
        // Another length reads as empty.
        for v in [&b""[..], b"abc", b"abcde"] {
            assert!(decode(bin(v)).as_slice().is_empty());
            assert!(decode(rmp_serde::to_vec(&v.to_vec()).unwrap()).as_slice().is_empty());
        }
        // Written as bytes, the same bytes as ByteBuf.
        let fixed = Fixed::new(*b"abcd");
        assert_eq!(
            rmp_serde::to_vec(&fixed).unwrap(),
            rmp_serde::to_vec(&ByteBuf::from(b"abcd".to_vec())).unwrap()
        );
        assert!(rmp_serde::from_slice::<Fixed<4>>(&rmp_serde::to_vec(&7u32).unwrap()).is_err());
    }
}
