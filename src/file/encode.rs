//! The encoder: a snapshot (or timeline, or increment) to file bytes, in
//! three passes (distinct pages, their hashes, records and page maps) and
//! then frames streamed into a [`Sink`].

use super::*;

/// One snapshot to encode.
pub(super) struct Item<'a> {
    pub(super) id: u64,
    pub(super) name: Option<&'a str>,
    pub(super) parent: Option<u64>,
    pub(super) snapshot: &'a Snapshot,
}

impl<'a> Item<'a> {
    /// A file's only snapshot.
    pub(super) fn one(snapshot: &'a Snapshot) -> Item<'a> {
        Item { id: 0, name: None, parent: None, snapshot }
    }

    /// Every entry of a timeline, in id order.
    pub(super) fn of_timeline(timeline: &'a Timeline) -> Vec<Item<'a>> {
        timeline
            .iter()
            .map(|e| Item {
                id: e.id.0,
                name: e.name.as_deref(),
                parent: e.parent.map(|p| p.0),
                snapshot: &e.snapshot,
            })
            .collect()
    }
}

/// The parent of an incremental file being encoded.
pub(super) struct ParentFile<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) index_hash: [u8; 32],
    pub(super) hint: &'a str,
}

/// The bytes a page with state `m` and frozen page `page` stores in a file:
/// the page, when its bytes are its own (`meta::holds_bytes`) and not zero.
pub(super) fn stored_bytes(m: u8, page: Option<Page<'_>>) -> Option<Page<'_>> {
    page.filter(|p| meta::holds_bytes(m) && !p.is_zero())
}

/// The stored page `page` of a snapshot (see [`stored_bytes`]): exactly the
/// pages a file's page map lists.
pub(super) fn stored_page(v: &Version, page: u64) -> Option<Page<'_>> {
    let e = v.pages.get(page);
    stored_bytes(e.meta, e.page)
}

/// A snapshot's page map while a file is encoded: candidate numbers (+ 1;
/// 0 for a page inherited from the parent file) that pass 3 renumbers to
/// page records.
pub(super) enum MapDraft {
    /// The whole map, `(page, candidate)`.
    Whole(Vec<(u64, u32)>),
    /// For a snapshot whose parent is an earlier snapshot of the file, the
    /// pages that changed, `(page, candidate or 0, the parent's)`, read off
    /// the page-table diff in the cost of the changes (§5.1).
    Changes(Vec<(u64, u32, u32)>),
}

pub(super) fn xor_pages(a: &PageBytes, b: &PageBytes) -> Box<PageBytes> {
    let mut out = boxed_copy(a);
    for (o, x) in out.iter_mut().zip(b.iter()) {
        *o ^= x;
    }
    out
}

/// A stored body: the page itself, or (with a base) its XOR with the
/// parent's page at the same page number.
pub(super) struct Body<'a> {
    pub(super) page: Page<'a>,
    pub(super) base: Option<Page<'a>>,
}

/// Sorted `(page, entry)` pairs as maximal runs of consecutive pages.
pub(super) fn runs_of(entries: &[(u64, u32)]) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = Vec::new();
    for &(page, index) in entries {
        match runs.last_mut() {
            Some(RunRecord(first, list)) if *first + list.len() as u64 == page => list.push(index),
            _ => runs.push(RunRecord(page, vec![index])),
        }
    }
    runs
}

/// A page object to store and its xor base (page number, parent's page).
pub(super) type Candidate<'a> = (Page<'a>, Option<(u64, Page<'a>)>);

/// Where an encoder writes: the file's bytes in order, then the header
/// over the first 64 (written as zeros first).
pub(super) trait Sink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()>;
}

impl Sink for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()> {
        self[..HEADER_LENGTH].copy_from_slice(header);
        Ok(())
    }
}

/// A file being written: buffered appends, then the header in place.
pub(super) struct FileSink<'f>(pub(super) std::io::BufWriter<&'f mut fs::File>);

impl Sink for FileSink<'_> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }

    fn write_header(&mut self, header: &[u8; HEADER_LENGTH]) -> std::io::Result<()> {
        use std::io::Seek;
        self.0.flush()?;
        let file = self.0.get_mut();
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(header)
    }
}

/// The file bytes of `items`, in memory.
pub(super) fn encode<'a>(
    items: &[Item<'a>],
    parent: Option<&ParentFile<'a>>,
    options: &mut Writer<'_>,
) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::new();
    encode_into(&mut out, &|e| unreachable!("writing into a Vec cannot fail: {e}"), items, parent, options)?;
    Ok(out)
}

/// Encodes `items` into `sink` as frames compress: at most one batch of
/// frames (16 per worker) is in memory at once, not the file. `io` names
/// the file in a write error.
pub(super) fn encode_into<'a>(
    sink: &mut dyn Sink,
    io: &dyn Fn(std::io::Error) -> FileError,
    items: &[Item<'a>],
    parent: Option<&ParentFile<'a>>,
    options: &mut Writer<'_>,
) -> Result<(), FileError> {
    let pool = Pool::new(options.threads);
    // Pass 1: the distinct page objects and each snapshot's page map.
    let mut candidates = Candidates::default();
    let mut snapshots: Vec<SnapshotRecord> = items.iter().map(layout_record).collect();
    let maps = page_map_drafts(items, parent, &mut candidates);
    if let Some(address) = candidates.unavailable {
        return Err(FileError::SourcePageUnavailable { address });
    }
    // Passes 2 and 3: hashes, one record per distinct hash, final maps.
    let records = Records::of(pool, &candidates.list);
    for (entry, map) in snapshots.iter_mut().zip(&maps) {
        entry.set_page_map(runs_of(&records.renumber(map)));
    }
    sink.append(&[0; HEADER_LENGTH]).map_err(io)?;
    let (frames, frames_length) = write_frames(sink, io, pool, options, &records.bodies)?;
    let parent_record = parent.map(|p| ParentRecord(Fixed::new(p.index_hash), p.hint.to_owned()));
    let counts = (snapshots.len() as u64, records.hashes.len() as u64, frames.len() as u64);
    let index = Index(frames, records.page_records(), snapshots, parent_record);
    // Invariant: encoding plain values into a Vec cannot fail.
    let index = rmp_serde::to_vec(&index).expect("encoding into a Vec cannot fail");
    // Never write a file a reader would refuse.
    check_writer_limits(counts.0, counts.1, counts.2, frames_length, index.len() as u64)?;
    sink.append(&index).map_err(io)?;
    sink.write_header(&Header::new(parent.is_some(), frames_length, &index).to_bytes()).map_err(io)
}

/// The distinct page objects to store, in order of first appearance, each
/// with its xor base (the parent's page at the same page number, if any);
/// page maps name them by candidate number + 1 (0: inherited).
#[derive(Default)]
pub(super) struct Candidates<'a> {
    by_pointer: HashMap<RecPtr, u32>,
    list: Vec<Candidate<'a>>,
    /// The first page (of a lazily opened snapshot) that cannot be read.
    unavailable: Option<u64>,
}

impl<'a> Candidates<'a> {
    /// The candidate number of `page` (added when new, with `base`).
    fn add(&mut self, page: Page<'a>, base: Option<(u64, Page<'a>)>) -> u32 {
        let list = &mut self.list;
        *self.by_pointer.entry(page.ptr()).or_insert_with(|| {
            list.push((page, base));
            list.len() as u32
        })
    }

    /// The candidate number `page` got earlier, or 0.
    fn known(&self, page: Page<'_>) -> u32 {
        self.by_pointer.get(&page.ptr()).copied().unwrap_or(0)
    }
}

/// A snapshot's record with its layout; its page map comes later.
fn layout_record(item: &Item<'_>) -> SnapshotRecord {
    let v = item.snapshot.version();
    let mut state = Vec::new();
    crate::state::encode_state(
        &mut state,
        &v.regions,
        &v.pages,
        v.default_allocation_address,
        v.layout_version,
        None,
    );
    SnapshotRecord(
        item.id,
        item.name.map(str::to_owned),
        item.parent,
        v.layout_version,
        ByteBuf::from(state),
        Vec::new(),
    )
}

/// Every snapshot's page map in candidate numbers: a snapshot whose parent
/// is an earlier snapshot of the file as the changes against it (read off
/// the page-table diff, in the cost of the changes: §5.1), any other whole.
fn page_map_drafts<'a>(
    items: &[Item<'a>],
    parent: Option<&ParentFile<'a>>,
    candidates: &mut Candidates<'a>,
) -> Vec<MapDraft> {
    let position: HashMap<u64, usize> = items.iter().enumerate().map(|(i, item)| (item.id, i)).collect();
    let parent_version = parent.map(|p| p.snapshot.version());
    let mut maps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let v = item.snapshot.version();
        maps.push(match item.parent.and_then(|p| position.get(&p)).filter(|&&j| j < i) {
            Some(&j) => changes_map(&items[j].snapshot.version().pages, &v.pages, candidates),
            None => whole_map(v, parent_version, candidates),
        });
    }
    maps
}

/// The changes from `before`'s map (an earlier snapshot of the file, whose
/// stored pages got candidates already) to `after`'s.
fn changes_map<'a>(before: &'a PageTable, after: &'a PageTable, candidates: &mut Candidates<'a>) -> MapDraft {
    let mut list = Vec::new();
    // Runs of more than one page (uniform layout changes) hold no bytes on
    // either side: nothing to list for them.
    before.diff(after, |page, _, old, new| {
        let (old, new) = (stored_bytes(old.meta, old.page), stored_bytes(new.meta, new.page));
        if new.is_some_and(|f| f.try_bytes().is_none()) {
            candidates.unavailable.get_or_insert(page * PAGE as u64);
            return;
        }
        let was = old.map_or(0, |b| candidates.known(b));
        let now = new.map_or(0, |frozen| candidates.add(frozen, None));
        if was != now {
            list.push((page, now, was));
        }
    });
    list.sort_unstable_by_key(|&(page, ..)| page);
    MapDraft::Changes(list)
}

/// A whole page map; against an incremental file's `parent`, a page equal
/// to the parent's is inherited (0) and a changed one XORed with it.
fn whole_map<'a>(v: &'a Version, parent: Option<&'a Version>, candidates: &mut Candidates<'a>) -> MapDraft {
    let mut full: Vec<(u64, u32)> = Vec::new();
    v.pages.for_each_stored(|page, m, frozen| {
        let Some(frozen) = stored_bytes(m, Some(frozen)) else { return };
        let base = parent.and_then(|pv| stored_page(pv, page));
        // Inherited from the parent: decided by identity or origin (the
        // same record of the parent's file, as a snapshot restored from a
        // lazily opened parent has), else by fingerprint, so an unchanged
        // page of a lazy parent is never read.
        if base.is_some_and(|b| b.same_bytes(frozen)) {
            full.push((page, 0));
            return;
        }
        // A changed page: its bytes, and its base's for the XOR.
        if frozen.try_bytes().is_none() || base.is_some_and(|b| b.try_bytes().is_none()) {
            candidates.unavailable.get_or_insert(page * PAGE as u64);
            return;
        }
        full.push((page, candidates.add(frozen, base.map(|b| (page, b)))));
    });
    MapDraft::Whole(full)
}

/// The page records: one per distinct BLAKE3 hash, in order of first
/// appearance (so a page's record keeps its first appearance's xor base).
struct Records<'a> {
    /// Candidate number - 1 → record number (1-based).
    record_of: Vec<u32>,
    hashes: Vec<[u8; 32]>,
    bodies: Vec<Body<'a>>,
    /// Each record's xor base page number.
    bases: Vec<Option<u64>>,
}

impl<'a> Records<'a> {
    /// Hashes every candidate on the pool, then keeps one per hash.
    fn of(pool: Pool, candidates: &[Candidate<'a>]) -> Records<'a> {
        let hashes: Vec<[u8; 32]> = pool
            .run(0..candidates.len(), 256, |range| {
                candidates[range].iter().map(|(p, _)| *blake3::hash(p.bytes()).as_bytes()).collect::<Vec<_>>()
            })
            .concat();
        let mut by_hash: HashMap<[u8; 32], u32> = HashMap::with_capacity(candidates.len());
        let mut records = Records {
            record_of: Vec::with_capacity(candidates.len()),
            hashes: Vec::new(),
            bodies: Vec::new(),
            bases: Vec::new(),
        };
        for ((frozen, base), hash) in candidates.iter().zip(&hashes) {
            let n = *by_hash.entry(*hash).or_insert_with(|| {
                records.hashes.push(*hash);
                records.bodies.push(Body { page: *frozen, base: base.map(|(_, b)| b) });
                records.bases.push(base.as_ref().map(|(page, _)| *page));
                records.hashes.len() as u32
            });
            records.record_of.push(n);
        }
        records
    }

    /// A page map in record numbers: a change list keeps only the pages
    /// whose record differs once equal pages share one (§5.1, 1.2).
    fn renumber(&self, map: &MapDraft) -> Vec<(u64, u32)> {
        let record = |candidate: u32| if candidate == 0 { 0 } else { self.record_of[candidate as usize - 1] };
        match map {
            MapDraft::Whole(full) => full.iter().map(|&(page, c)| (page, record(c))).collect(),
            MapDraft::Changes(list) => list
                .iter()
                .map(|&(page, now, was)| (page, record(now), record(was)))
                .filter(|&(_, now, was)| now != was)
                .map(|(page, now, _)| (page, now))
                .collect(),
        }
    }

    /// The index's page records: hash, place, kind, base, fingerprint.
    fn page_records(&self) -> Vec<PageRecord> {
        let records = self.hashes.iter().zip(&self.bases).zip(&self.bodies).enumerate();
        records
            .map(|(i, ((h, base), body))| {
                PageRecord(
                    Fixed::new(*h),
                    (i / PAGES_PER_FRAME) as u32,
                    (i % PAGES_PER_FRAME) as u8,
                    if base.is_some() { KIND_XOR } else { KIND_PLAIN },
                    *base,
                    // Invariant: every stored page was read above
                    // (unreadable ones end the encode before this point).
                    Some(body.page.fingerprint().expect("a readable page has a fingerprint")),
                )
            })
            .collect()
    }
}

/// Frames of 16 bodies each, compressed on the pool a batch at a time and
/// appended to `sink` as each batch is done. Returns the frame records and
/// the frame area's length.
fn write_frames(
    sink: &mut dyn Sink,
    io: &dyn Fn(std::io::Error) -> FileError,
    pool: Pool,
    options: &mut Writer<'_>,
    bodies: &[Body<'_>],
) -> Result<(Vec<FrameRecord>, u64), FileError> {
    let mut frames = Vec::new();
    let mut frames_length = 0u64;
    let frame_count = bodies.len().div_ceil(PAGES_PER_FRAME);
    let fill = |n: usize, raw: &mut Vec<u8>| {
        let body = &bodies[n];
        match body.base {
            None => raw.extend_from_slice(body.page.bytes()),
            Some(base) => raw.extend(body.page.bytes().iter().zip(base.bytes().iter()).map(|(a, b)| a ^ b)),
        }
    };
    let compress = |compressor: &mut Option<zstd::bulk::Compressor<'static>>, range: Range<usize>| {
        // Invariant: the level was checked when the writer was made, and
        // creating a context with a valid level cannot fail.
        let compressor = compressor
            .get_or_insert_with(|| zstd::bulk::Compressor::new(options.level).expect("zstd context"));
        codec::compress_frames(compressor, bodies.len(), range, &fill)
    };
    let total = (bodies.len() * PAGE) as u64;
    let progress = &mut options.progress;
    pool.stream(
        0..frame_count,
        FRAMES_PER_CHUNK,
        || None,
        compress,
        |range, compressed| {
            for frame in compressed {
                let length = frame.bytes.len() as u64;
                let checksum = Fixed::new(frame.checksum);
                frames.push(FrameRecord(frames_length, length as u32, frame.pages, checksum));
                sink.append(&frame.bytes).map_err(io)?;
                frames_length += length;
                limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
            }
            if let Some(progress) = progress.as_mut()
                && (range.end % FRAMES_PER_BATCH == 0 || range.end == frame_count)
            {
                let done = ((frames.len() * PAGES_PER_FRAME).min(bodies.len()) * PAGE) as u64;
                progress(Progress { done, total });
            }
            Ok::<(), FileError>(())
        },
    )?;
    Ok((frames, frames_length))
}

/// The reader's size limits (FORMAT.md §3.1, §6.1–§6.2), checked by the
/// writer so that it never writes a file a reader refuses: a timeline too
/// large for one file is [`FileError::SizeLimit`], and nothing is written.
pub(super) fn check_writer_limits(
    snapshots: u64,
    records: u64,
    frames: u64,
    frames_length: u64,
    index_length: u64,
) -> Result<(), FileError> {
    limit("snapshot count", snapshots, MAX_SNAPSHOTS)?;
    limit("page record count", records, MAX_STORED_PAGES)?;
    limit("frame count", frames, MAX_STORED_PAGES)?;
    limit("frame area length", frames_length, MAX_FRAMES_LENGTH)?;
    limit("index length", index_length, MAX_INDEX_LENGTH)
}
