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

/// `[offset, compressed_length, pages, checksum(8)]`.
#[derive(Serialize, Deserialize)]
pub(super) struct FrameRecord(pub(super) u64, pub(super) u32, pub(super) u8, pub(super) ByteBuf);

/// `[hash(32), frame, slot, kind, base?, fingerprint]` (base: xor only, a
/// page number of the parent snapshot; fingerprint: from 1.2, absent
/// before).
#[derive(Serialize, Deserialize)]
pub(super) struct PageRecord(
    pub(super) ByteBuf,
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
pub(super) struct ParentRecord(pub(super) ByteBuf, pub(super) String);

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
        &self.3
    }
}

impl PageRecord {
    pub(super) fn hash(&self) -> &[u8] {
        &self.0
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
        &self.0
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

/// Decodes and checks a file's index (§6.2–§6.4) against its header.
pub(super) fn parse_index(index_bytes: &[u8], header: &Header) -> Result<Parsed, FileError> {
    let mut rest = index_bytes;
    let Index(frames, pages, snapshots, parent) =
        rmp_serde::decode::from_read(&mut rest).map_err(|_| corrupt("MessagePack index does not decode"))?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after the MessagePack index"));
    }
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
