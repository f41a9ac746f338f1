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

pub(super) fn blake3_prefix<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; N];
    out.copy_from_slice(&hash.as_bytes()[..N]);
    out
}

/// The identity of a file as a parent: BLAKE3-256 of its index bytes (after
/// checking its header and index checksum).
pub(super) fn index_hash(bytes: &[u8]) -> Result<[u8; 32], FileError> {
    let (_, index, _) = split(bytes)?;
    Ok(*blake3::hash(index).as_bytes())
}

/// Checks a parent record's fields (FORMAT.md §6.2).
pub(super) fn check_parent_record(p: &ParentRecord) -> Result<(), FileError> {
    if p.0.len() != 32 {
        return Err(corrupt("parent index hash is not 32 bytes"));
    }
    let hint = Path::new(&p.1);
    let normal = hint.components().all(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
    if p.1.is_empty()
        || p.1.len() > MAX_HINT_LENGTH
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

pub(super) fn parse_index(index_bytes: &[u8], header: &Header) -> Result<Parsed, FileError> {
    let incremental = header.incremental;
    let mut rest = index_bytes;
    let Index(frames, pages, snapshots, parent) =
        rmp_serde::decode::from_read(&mut rest).map_err(|_| corrupt("MessagePack index does not decode"))?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after the MessagePack index"));
    }
    limit("frame count", frames.len() as u64, MAX_STORED_PAGES)?;
    limit("page record count", pages.len() as u64, MAX_STORED_PAGES)?;
    limit("snapshot count", snapshots.len() as u64, MAX_SNAPSHOTS)?;
    if parent.is_some() != incremental {
        return Err(corrupt("parent record present exactly when the incremental flag is set"));
    }
    if let Some(p) = &parent {
        check_parent_record(p)?;
        if snapshots.len() != 1 {
            return Err(corrupt("an incremental file holds exactly one snapshot"));
        }
        if snapshots[0].0 != 0 || snapshots[0].1.is_some() || snapshots[0].2.is_some() {
            return Err(corrupt("an incremental file's snapshot has id 0, no name, no parent"));
        }
    }

    // Frames tile the frame area, in order.
    let mut at = 0u64;
    for FrameRecord(offset, length, count, checksum) in &frames {
        limit("frame compressed length", u64::from(*length), MAX_FRAME_COMPRESSED)?;
        if *offset != at || *length == 0 {
            return Err(corrupt("frames are not contiguous and ascending"));
        }
        if *count == 0 || usize::from(*count) > PAGES_PER_FRAME {
            return Err(corrupt("frame page count not in 1..=16"));
        }
        if checksum.len() != 8 {
            return Err(corrupt("frame checksum is not 8 bytes"));
        }
        at += u64::from(*length);
        if at > header.frames_length {
            return Err(corrupt("frame outside the frame area"));
        }
    }
    if at != header.frames_length {
        return Err(corrupt("frames do not fill the frame area"));
    }

    // Page records: valid, distinct slots and hashes, every slot used.
    let mut owner: Vec<[u32; PAGES_PER_FRAME]> = vec![[0; PAGES_PER_FRAME]; frames.len()];
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(pages.len());
    for (i, PageRecord(hash, frame, slot, kind, base, fingerprint)) in pages.iter().enumerate() {
        if hash.len() != 32 {
            return Err(corrupt("page hash is not 32 bytes"));
        }
        if fingerprint.is_some() != (header.minor >= FORMAT_MINOR_FINGERPRINTS) {
            return Err(corrupt("page fingerprint present exactly from format 1.2 on"));
        }
        match (*kind, base) {
            (KIND_PLAIN, None) => {}
            (KIND_XOR, Some(b)) if incremental && *b < VPN_LIMIT => {}
            (KIND_XOR, _) if !incremental => {
                return Err(corrupt("xor page in a file that is not incremental"));
            }
            _ => return Err(corrupt("page kind or base invalid")),
        }
        let f = frames.get(*frame as usize).ok_or(corrupt("page record names a missing frame"))?;
        if *slot >= f.2 {
            return Err(corrupt("page record names a missing slot"));
        }
        let cell = &mut owner[*frame as usize][usize::from(*slot)];
        if *cell != 0 {
            return Err(corrupt("two page records share a slot"));
        }
        *cell = i as u32 + 1;
        if !seen.insert(hash.as_slice()) {
            return Err(corrupt("two page records have the same hash"));
        }
    }
    let slots: u64 = frames.iter().map(|f| u64::from(f.2)).sum();
    if slots != pages.len() as u64 {
        return Err(corrupt("a frame slot has no page record"));
    }

    let frames = frames.iter().map(FrameInfo::of).collect();
    Ok(Parsed { minor: header.minor, frames, pages, snapshots, parent, owner })
}
