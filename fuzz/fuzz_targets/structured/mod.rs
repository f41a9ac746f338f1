//! Structure-aware inputs for the snapshot-file decoder: a session built
//! from arbitrary operations through the public API, saved to bytes, then
//! edited field by field (header fields, index nodes, snapshot state nodes,
//! page bodies, frame bytes) with every checksum, hash, length and offset
//! recomputed afterwards, so that a mutation is judged by the index, state
//! and frame parsers and not stopped at the first checksum.
//!
//! The layout follows `snapshots-format/FORMAT.md`: a 64-byte header, the
//! frame area, then the index (one MessagePack value, §5); a snapshot's
//! `state` is a `VMSNAPMS` buffer (8-byte magic, u32 version, MessagePack).

// Shared by several targets, each of which uses a part.
#![allow(dead_code)]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use rmpv::Value;
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, SectionId, Snapshot, Timeline};

/// Where every allocation of the built session lives (a 16 MiB window).
const WINDOW: u64 = 0x1000_0000;
const PAGE: usize = PAGE_SIZE as usize;

/// One step of the session the file is made from.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Allocate {
        granule: u8,
        pages: u8,
        protection: u8,
        reserve_only: bool,
        image: bool,
    },
    Commit {
        page: u16,
        pages: u8,
        protection: u8,
    },
    Decommit {
        page: u16,
        pages: u8,
    },
    Protect {
        page: u16,
        pages: u8,
        protection: u8,
    },
    Release {
        page: u16,
        pages: u8,
    },
    /// Writes `len` bytes of `value` (0: a zero page again), or a pattern.
    Write {
        page: u16,
        offset: u16,
        len: u16,
        value: u8,
        pattern: bool,
    },
    /// Copies one page over another (duplicate pages are stored once).
    CopyPage {
        from: u16,
        to: u16,
    },
    Section {
        pages: u8,
        commit: bool,
    },
    MapView {
        section: u8,
        pages: u8,
    },
    Unmap {
        page: u16,
    },
    CloseSection {
        section: u8,
    },
    Mmio {
        page: u16,
        pages: u8,
    },
    /// Takes a snapshot into the timeline, named or not.
    Snapshot {
        name: Option<u8>,
    },
    /// Returns to an earlier snapshot (the next one is a branch).
    Restore {
        which: u8,
    },
}

/// A new value for a MessagePack node.
#[derive(Arbitrary, Debug)]
pub enum NodeValue {
    Nil,
    Bool(bool),
    Small(u8),
    Uint(u64),
    Int(i64),
    /// The node's integer plus this (wrapping): near the valid value.
    Add(i8),
    Bin(Vec<u8>),
    Str(String),
    /// An array of `n` copies of the node itself.
    Repeat(u8),
    /// The node's array without its element `i`, or with it twice.
    Drop(u8),
    Duplicate(u8),
    /// Swaps two elements of the node's array.
    Swap(u8, u8),
}

/// One edit of the saved file.
#[derive(Arbitrary, Debug)]
pub enum Edit {
    /// Sets a header byte (0..56); the header checksum is recomputed.
    HeaderByte { at: u8, value: u8 },
    /// Replaces the index node at `path` (each step picks a child).
    Index { path: Vec<u8>, value: NodeValue },
    /// Replaces a node of the MessagePack record inside a snapshot's state.
    State { snapshot: u8, path: Vec<u8>, value: NodeValue },
    /// Changes a byte of a stored page body; with `rehash` the page record's
    /// hash and fingerprint follow, as a writer would have made them.
    PageByte { record: u16, at: u16, value: u8, rehash: bool },
    /// Changes a byte of a compressed frame (its checksum is recomputed).
    FrameByte { frame: u8, at: u16, xor: u8 },
}

/// What to build and how to damage it.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub ops: Vec<Op>,
    pub edits: Vec<Edit>,
    /// Save as an incremental file against the first snapshot.
    pub incremental: bool,
    /// Recompute frame checksums from the frame bytes after the index edits
    /// (otherwise an edited checksum field stays as edited).
    pub fix_checksums: bool,
}

fn protection(p: u8) -> Protection {
    const ALL: [Protection; 8] = [
        Protection::empty(),
        Protection::READ,
        Protection::READ_WRITE,
        Protection::READ_EXECUTE,
        Protection::ALL_ACCESS,
        Protection::WRITE_COPY,
        Protection::EXECUTE,
        Protection::READ_WRITE,
    ];
    let base = ALL[usize::from(p & 7)];
    if p & 8 != 0 && !base.is_empty() { base | Protection::GUARD } else { base }
}

fn at(page: u16) -> u64 {
    WINDOW + u64::from(page % 4096) * PAGE_SIZE
}

fn len(pages: u8) -> u64 {
    u64::from(pages % 64 + 1) * PAGE_SIZE
}

/// The session: a timeline of the snapshots taken (at least one).
pub struct Session {
    pub timeline: Timeline,
    pub first: Snapshot,
    pub last: Snapshot,
}

/// Runs `ops` on a fresh manager (errors are part of the game), snapshotting
/// where asked and at the end. At most 64 operations and 8 snapshots.
pub fn build(ops: &[Op]) -> Session {
    let mut mm = MemoryManager::new();
    let mut timeline = Timeline::new();
    let mut sections: Vec<SectionId> = Vec::new();
    let mut taken = Vec::new();
    for op in ops.iter().take(64) {
        match *op {
            Op::Allocate { granule, pages, protection: p, reserve_only, image } => {
                let kind = if image { RegionKind::Image } else { RegionKind::Private };
                let base = WINDOW + u64::from(granule % 128) * 0x10000;
                let _ = mm.allocate_memory_at(base, len(pages), protection(p), reserve_only, kind);
            }
            Op::Commit { page, pages, protection: p } => {
                let _ = mm.commit_memory(at(page), len(pages), protection(p));
            }
            Op::Decommit { page, pages } => {
                let _ = mm.decommit_memory(at(page), len(pages));
            }
            Op::Protect { page, pages, protection: p } => {
                let _ = mm.protect_memory(at(page), len(pages), protection(p));
            }
            Op::Release { page, pages } => {
                let _ = mm.release_memory(at(page), if pages == 0 { 0 } else { len(pages) });
            }
            Op::Write { page, offset, len, value, pattern } => {
                let offset = u64::from(offset) % PAGE_SIZE;
                let data: Vec<u8> = (0..usize::from(len % 0x2000))
                    .map(|i| if pattern { value.wrapping_add(i as u8) } else { value })
                    .collect();
                let _ = mm.write_memory(at(page) + offset, &data);
            }
            Op::CopyPage { from, to } => {
                let mut buf = [0u8; PAGE];
                if mm.read_memory(at(from), &mut buf).is_ok() {
                    let _ = mm.write_memory(at(to), &buf);
                }
            }
            Op::Section { pages, commit } => {
                if let Ok(s) = mm.create_section(len(pages), Protection::READ_WRITE, commit) {
                    sections.push(s);
                }
            }
            Op::MapView { section, pages } => {
                if let Some(&s) = sections.get(usize::from(section) % sections.len().max(1)) {
                    let size = len(pages).min(mm.section_info(s).map_or(0, |i| i.size));
                    let _ = mm.map_view_of_section(s, 0, 0, size, Protection::READ_WRITE);
                }
            }
            Op::Unmap { page } => {
                let _ = mm.unmap_view_of_section(at(page));
            }
            Op::CloseSection { section } => {
                if let Some(&s) = sections.get(usize::from(section) % sections.len().max(1)) {
                    let _ = mm.close_section(s);
                }
            }
            Op::Mmio { page, pages } => {
                let _ = mm.allocate_mmio(at(page), len(pages), |_, buf| buf.fill(0x5A), |_, _| {});
            }
            Op::Snapshot { name } => {
                if taken.len() < 8 {
                    let name = name.map(|n| format!("s{}", n % 16));
                    if let Ok(id) = timeline.take(&mut mm, name.as_deref()) {
                        taken.push(id);
                    }
                }
            }
            Op::Restore { which } => {
                if let Some(&id) = taken.get(usize::from(which) % taken.len().max(1)) {
                    let _ = timeline.restore(&mut mm, id);
                }
            }
        }
    }
    let last = mm.snapshot();
    let id = timeline.insert(last.clone(), timeline.head(), None).expect("an unnamed snapshot");
    let first_id = taken.first().copied().unwrap_or(id);
    let first = timeline.get(first_id).expect("taken").clone();
    Session { timeline, first, last }
}

// ------------------------------------------------------------------ editing

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn hash8(bytes: &[u8]) -> [u8; 8] {
    blake3::hash(bytes).as_bytes()[..8].try_into().expect("8 bytes")
}

/// The page fingerprint of FORMAT.md §4.1.
fn fingerprint(page: &[u8]) -> u64 {
    let mut lanes = [0u64; 8];
    for (k, word) in page.chunks_exact(8).enumerate() {
        lanes[k % 8] = lanes[k % 8].wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    lanes.iter().fold(0u64, |h, &l| (h ^ l).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31))
}

/// A file split into the parts the edits work on.
struct Parts {
    header: Vec<u8>,
    /// Compressed frames, in frame-table order.
    frames: Vec<Vec<u8>>,
    index: Value,
}

fn split(file: &[u8]) -> Option<Parts> {
    let offset = usize::try_from(le_u64(file, 16)).ok()?;
    let index = rmpv::decode::read_value(&mut &file[offset..]).ok()?;
    let mut frames = Vec::new();
    for f in index.as_array()?.first()?.as_array()? {
        let f = f.as_array()?;
        let start = 64 + usize::try_from(f.first()?.as_u64()?).ok()?;
        let length = usize::try_from(f.get(1)?.as_u64()?).ok()?;
        frames.push(file.get(start..start + length)?.to_vec());
    }
    Some(Parts { header: file[..64].to_vec(), frames, index })
}

/// The node at `path`: each step picks a child of an array or map (by
/// position, modulo its length); the walk stops at a leaf.
fn node<'a>(mut v: &'a mut Value, path: &[u8]) -> &'a mut Value {
    for &step in path {
        let len = match v {
            Value::Array(a) => a.len(),
            Value::Map(m) => m.len() * 2,
            _ => 0,
        };
        if len == 0 {
            break;
        }
        let i = usize::from(step) % len;
        v = match v {
            Value::Array(a) => &mut a[i],
            Value::Map(m) => {
                let (k, val) = &mut m[i / 2];
                if i % 2 == 0 { k } else { val }
            }
            _ => unreachable!("checked above"),
        };
    }
    v
}

fn set(target: &mut Value, value: &NodeValue) {
    match value {
        NodeValue::Nil => *target = Value::Nil,
        NodeValue::Bool(b) => *target = Value::Boolean(*b),
        NodeValue::Small(n) => *target = Value::from(*n),
        NodeValue::Uint(n) => *target = Value::from(*n),
        NodeValue::Int(n) => *target = Value::from(*n),
        NodeValue::Add(d) => {
            if let Some(n) = target.as_u64() {
                *target = Value::from(n.wrapping_add_signed(i64::from(*d)));
            } else if let Some(n) = target.as_i64() {
                *target = Value::from(n.wrapping_add(i64::from(*d)));
            }
        }
        NodeValue::Bin(b) => *target = Value::Binary(b.iter().copied().take(64).collect()),
        NodeValue::Str(s) => *target = Value::from(s.chars().take(32).collect::<String>()),
        NodeValue::Repeat(n) => *target = Value::Array(vec![target.clone(); usize::from(*n % 8)]),
        NodeValue::Drop(i) => {
            if let Value::Array(a) = target
                && !a.is_empty()
            {
                a.remove(usize::from(*i) % a.len());
            }
        }
        NodeValue::Duplicate(i) => {
            if let Value::Array(a) = target
                && !a.is_empty()
            {
                let i = usize::from(*i) % a.len();
                a.insert(i, a[i].clone());
            }
        }
        NodeValue::Swap(i, j) => {
            if let Value::Array(a) = target
                && !a.is_empty()
            {
                let n = a.len();
                a.swap(usize::from(*i) % n, usize::from(*j) % n);
            }
        }
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec");
    out
}

/// `index[section][i]` as a mutable array, if it is one.
fn record(index: &mut Value, section: usize, i: usize) -> Option<&mut Vec<Value>> {
    match index {
        Value::Array(a) => match a.get_mut(section)? {
            Value::Array(records) => match records.get_mut(i)? {
                Value::Array(r) => Some(r),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn page_byte(parts: &mut Parts, record_index: u16, at: u16, value: u8, rehash: bool) -> Option<()> {
    let pages = parts.index.as_array()?.get(1)?.as_array()?.len();
    if pages == 0 {
        return None;
    }
    let k = usize::from(record_index) % pages;
    let (frame, slot) = {
        let r = record(&mut parts.index, 1, k)?;
        (usize::try_from(r.get(1)?.as_u64()?).ok()?, usize::try_from(r.get(2)?.as_u64()?).ok()?)
    };
    let compressed = parts.frames.get(frame)?;
    let mut raw = zstd::bulk::decompress(compressed, 16 * PAGE).ok()?;
    let body = raw.get_mut(slot * PAGE..(slot + 1) * PAGE)?;
    body[usize::from(at) % PAGE] = value;
    let plain = {
        let r = record(&mut parts.index, 1, k)?;
        r.get(3)?.as_u64()? == 0
    };
    if rehash && plain {
        let hash = blake3::hash(body);
        let fp = fingerprint(body);
        let r = record(&mut parts.index, 1, k)?;
        r[0] = Value::Binary(hash.as_bytes().to_vec());
        if r.len() > 5 {
            r[5] = Value::from(fp);
        }
    }
    parts.frames[frame] = zstd::bulk::compress(&raw, 3).ok()?;
    Some(())
}

fn state_node(parts: &mut Parts, snapshot: u8, path: &[u8], value: &NodeValue) -> Option<()> {
    let count = parts.index.as_array()?.get(2)?.as_array()?.len();
    if count == 0 {
        return None;
    }
    let r = record(&mut parts.index, 2, usize::from(snapshot) % count)?;
    let state = match r.get_mut(4)? {
        Value::Binary(b) => b,
        _ => return None,
    };
    let head = state.get(..12)?.to_vec();
    let mut body = rmpv::decode::read_value(&mut &state[12..]).ok()?;
    set(node(&mut body, path), value);
    let mut rebuilt = head;
    rebuilt.extend(encode(&body));
    *state = rebuilt;
    Some(())
}

/// Lays the frames out again: offsets, lengths and checksums in the frame
/// table follow the (possibly edited) frame bytes.
fn relayout(parts: &mut Parts) {
    let mut offset = 0u64;
    for i in 0..parts.frames.len() {
        let (length, checksum) = (parts.frames[i].len() as u64, hash8(&parts.frames[i]));
        if let Some(f) = record(&mut parts.index, 0, i) {
            if let Some(slot) = f.get_mut(0) {
                *slot = Value::from(offset);
            }
            if let Some(slot) = f.get_mut(1) {
                *slot = Value::from(length);
            }
            if let Some(slot) = f.get_mut(3) {
                *slot = Value::Binary(checksum.to_vec());
            }
        }
        offset += length;
    }
}

/// Applies `edits` to `file` and returns a file whose header fields and
/// checksums are consistent with its (edited) frames and index.
pub fn edit(file: &[u8], edits: &[Edit], fix_checksums: bool) -> Vec<u8> {
    let Some(mut parts) = split(file) else { return file.to_vec() };
    // Body edits first: the frame table follows them.
    for e in edits.iter().take(8) {
        match *e {
            Edit::PageByte { record, at, value, rehash } => {
                let _ = page_byte(&mut parts, record, at, value, rehash);
            }
            Edit::FrameByte { frame, at, xor } => {
                if !parts.frames.is_empty() {
                    let n = parts.frames.len();
                    let f = &mut parts.frames[usize::from(frame) % n];
                    if !f.is_empty() {
                        let i = usize::from(at) % f.len();
                        f[i] ^= xor.max(1);
                    }
                }
            }
            _ => {}
        }
    }
    relayout(&mut parts);
    for e in edits.iter().take(8) {
        match e {
            Edit::Index { path, value } => set(node(&mut parts.index, path), value),
            Edit::State { snapshot, path, value } => {
                let _ = state_node(&mut parts, *snapshot, path, value);
            }
            _ => {}
        }
    }
    if fix_checksums {
        let sums: Vec<[u8; 8]> = parts.frames.iter().map(|f| hash8(f)).collect();
        for (i, sum) in sums.into_iter().enumerate() {
            if let Some(slot) = record(&mut parts.index, 0, i).and_then(|f| f.get_mut(3)) {
                *slot = Value::Binary(sum.to_vec());
            }
        }
    }
    let index = encode(&parts.index);
    let frames: Vec<u8> = parts.frames.concat();
    let mut header = parts.header;
    header[16..24].copy_from_slice(&(64 + frames.len() as u64).to_le_bytes());
    header[24..32].copy_from_slice(&(index.len() as u64).to_le_bytes());
    header[32..48].copy_from_slice(&blake3::hash(&index).as_bytes()[..16]);
    header[48..56].copy_from_slice(&(frames.len() as u64).to_le_bytes());
    for e in edits.iter().take(8) {
        if let Edit::HeaderByte { at, value } = *e {
            header[usize::from(at) % 56] = value;
        }
    }
    let sum = hash8(&header[..56]);
    header[56..64].copy_from_slice(&sum);
    let mut out = header;
    out.extend(frames);
    out.extend(index);
    out
}

/// For coverage measurements (`fuzz/README.md`): when `VMSNAP_FUZZ_DUMP` names
/// a directory, every file an input decodes to is written there (named by
/// its BLAKE3), so the byte-level `load_file` target can replay exactly the
/// files the structured targets fed the decoder.
pub fn dump(bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("VMSNAP_FUZZ_DUMP") {
        let path = std::path::Path::new(&dir).join(blake3::hash(bytes).to_hex().as_str());
        std::fs::write(path, bytes).expect("VMSNAP_FUZZ_DUMP: cannot write");
    }
}
