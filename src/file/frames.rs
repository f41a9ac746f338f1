//! Reading frames back: where each frame is, what checks its pages
//! ([`PageChecks`], [`LazyIndex`]), and decoding one ([`Frames`]) or all
//! ([`decode_frames`]).

use super::*;

/// A frame record, compact: where the frame is, its pages, its checksum.
#[derive(Clone, Copy)]
pub(super) struct FrameInfo {
    pub(super) offset: u64,
    pub(super) length: u32,
    pub(super) pages: u8,
    pub(super) checksum: [u8; 8],
}

impl FrameInfo {
    pub(super) fn of(record: &FrameRecord) -> FrameInfo {
        // Invariant: `parse_index` checked the checksum is 8 bytes.
        FrameInfo {
            offset: record.offset(),
            length: record.compressed_length(),
            pages: record.pages(),
            checksum: record.checksum()[..8].try_into().expect("8"),
        }
    }
}

/// How the pages of a frame are checked once decompressed.
#[derive(Clone, Copy)]
pub(super) enum PageChecks<'a> {
    /// Each page against its record's BLAKE3 hash and fingerprint (a
    /// full load: the error names the page).
    Records(&'a [PageRecord]),
    /// The frame's pages together against one digest of their hashes and
    /// fingerprints (what a lazily opened file keeps, see [`LazyIndex`]);
    /// `bases` are the records' XOR bases in an incremental file
    /// ([`NO_BASE`] for a plain page).
    Digests { digests: &'a [[u8; 32]], bases: Option<&'a [u64]> },
}

/// A record's XOR base in [`PageChecks::Digests`]: none (a plain page).
pub(super) const NO_BASE: u64 = u64::MAX;

/// Adds a page to its frame's digest: the BLAKE3 of the frame's pages'
/// `hash ‖ fingerprint (u64 LE)`, in slot order. Checking the digest
/// checks every page's hash and fingerprint at once.
pub(super) fn digest_page(digest: &mut blake3::Hasher, hash: &[u8], fingerprint: u64) {
    digest.update(hash);
    digest.update(&fingerprint.to_le_bytes());
}

/// The part of a 1.2 file's index that a lazily opened file keeps while it
/// is open: per frame its place, checksum and pages' digest, per page
/// record its frame (and its XOR base in an incremental file). About 10
/// bytes a page, where the decoded index took about 100; the page records'
/// fingerprints live in the store's records.
pub(super) struct LazyIndex {
    pub(super) frames: Vec<FrameInfo>,
    pub(super) digests: Vec<[u8; 32]>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    pub(super) owner: Vec<[u32; PAGES_PER_FRAME]>,
    /// The frame of each page record (0-based records).
    pub(super) frame_of: Vec<u32>,
    pub(super) bases: Option<Vec<u64>>,
}

impl LazyIndex {
    /// The compact form of `parsed` (a 1.2 file: every record has its
    /// fingerprint).
    pub(super) fn new(parsed: &Parsed) -> LazyIndex {
        let digests = parsed
            .owner
            .iter()
            .zip(&parsed.frames)
            .map(|(owners, f)| {
                let mut digest = blake3::Hasher::new();
                for &r in &owners[..usize::from(f.pages)] {
                    let record = &parsed.pages[r as usize - 1];
                    digest_page(&mut digest, record.hash(), record.fingerprint().unwrap_or(0));
                }
                *digest.finalize().as_bytes()
            })
            .collect();
        let incremental = parsed.parent.is_some();
        LazyIndex {
            frames: parsed.frames.clone(),
            digests,
            owner: parsed.owner.clone(),
            frame_of: parsed.pages.iter().map(PageRecord::frame).collect(),
            bases: incremental.then(|| parsed.pages.iter().map(|r| r.base().unwrap_or(NO_BASE)).collect()),
        }
    }

    pub(super) fn frames(&self) -> Frames<'_> {
        Frames {
            frames: &self.frames,
            checks: PageChecks::Digests { digests: &self.digests, bases: self.bases.as_deref() },
            owner: &self.owner,
            parent: None,
        }
    }
}

/// The parsed frame index of a file: what decoding a frame needs.
#[derive(Clone, Copy)]
pub(super) struct Frames<'a> {
    pub(super) frames: &'a [FrameInfo],
    pub(super) checks: PageChecks<'a>,
    /// `owner[frame][slot]`: the 1-based page record stored there.
    pub(super) owner: &'a [[u32; PAGES_PER_FRAME]],
    /// The parent snapshot (incremental files): the XOR bases.
    pub(super) parent: Option<&'a Version>,
}

impl Frames<'_> {
    /// Checks and decompresses frame `n` (its compressed bytes `src`),
    /// checks each page in it (un-XORed, against its BLAKE3 hash and, from
    /// 1.2, its fingerprint; never all zeros) and hands each to `sink` with
    /// its 0-based page record index and fingerprint.
    pub(super) fn decode_frame(
        &self,
        n: usize,
        src: &[u8],
        decoder: &mut FrameDecoder,
        sink: &mut dyn FnMut(usize, &PageBytes, u64),
    ) -> Result<(), FileError> {
        let FrameInfo { pages: count, checksum, .. } = self.frames[n];
        let frame = n as u32;
        if blake3_prefix::<8>(src) != checksum {
            return Err(FileError::FrameCorrupt { frame });
        }
        let expected = usize::from(count) * PAGE;
        let got = decoder
            .zstd
            .decompress_to_buffer(src, &mut decoder.raw[..expected])
            .map_err(|_| FileError::FrameCorrupt { frame })?;
        if got != expected {
            return Err(FileError::FrameCorrupt { frame });
        }
        let mut digest = matches!(self.checks, PageChecks::Digests { .. }).then(blake3::Hasher::new);
        for slot in 0..usize::from(count) {
            let i = self.owner[n][slot] as usize - 1;
            let body: &PageBytes = decoder.raw[slot * PAGE..(slot + 1) * PAGE].try_into().expect("one page");
            let base = match self.checks {
                PageChecks::Records(pages) => pages[i].base(),
                PageChecks::Digests { bases, .. } => bases.map(|b| b[i]).filter(|&b| b != NO_BASE),
            };
            let unxored: Box<PageBytes>;
            let page: &PageBytes = match (base, self.parent) {
                (Some(b), Some(pv)) => {
                    if *body == crate::page_table::ZERO_PAGE {
                        return Err(corrupt("a stored page is all zeros"));
                    }
                    let under = stored_page(pv, b)
                        .ok_or(corrupt("xor page's base is not a stored page of the parent"))?;
                    unxored = xor_pages(body, under.bytes());
                    &unxored
                }
                _ => body,
            };
            let hash = *blake3::hash(&page[..]).as_bytes();
            let fingerprint = crate::page_table::fingerprint(page);
            if let PageChecks::Records(pages) = self.checks {
                let record = &pages[i];
                if hash[..] != *record.hash() || record.fingerprint().is_some_and(|f| f != fingerprint) {
                    return Err(FileError::PageHash { page: i as u32 + 1 });
                }
            }
            if fingerprint == 0 && *page == crate::page_table::ZERO_PAGE {
                return Err(corrupt("a stored page is all zeros"));
            }
            if let Some(d) = &mut digest {
                digest_page(d, &hash, fingerprint);
            }
            sink(i, page, fingerprint);
        }
        if let (PageChecks::Digests { digests, .. }, Some(d)) = (self.checks, digest)
            && *d.finalize().as_bytes() != digests[n]
        {
            // Some page of the frame has another hash or fingerprint than
            // its record: named by the frame's first record.
            return Err(FileError::PageHash { page: self.owner[n][0] });
        }
        Ok(())
    }
}

/// Where a file's frame area is read from while it is decoded.
#[derive(Clone, Copy)]
pub(super) enum Area<'a> {
    /// In memory: the bytes between the header and the index.
    Bytes(&'a [u8]),
    /// The whole file, read a few frames at a time by each worker (so the
    /// file is never in memory at once, and reading overlaps decoding).
    Source(&'a dyn ByteSource),
}

impl Area<'_> {
    /// The compressed bytes of `frames[range]` (contiguous: `parse_index`
    /// checked that frames tile the area), and the area offset they start
    /// at; read into `buf` unless in memory. A failed read is
    /// [`FileError::Io`] naming the source.
    fn frames<'b>(
        &'b self,
        frames: &[FrameInfo],
        range: Range<usize>,
        buf: &'b mut Vec<u8>,
    ) -> Result<(u64, &'b [u8]), FileError> {
        let start = frames[range.start].offset;
        let last = frames[range.end - 1];
        let end = last.offset + u64::from(last.length);
        match *self {
            // In bounds: `parse_index` checked the frames against the area.
            Area::Bytes(area) => Ok((start, &area[start as usize..end as usize])),
            Area::Source(source) => {
                buf.resize((end - start) as usize, 0);
                source.read_at(HEADER_LENGTH as u64 + start, buf).map_err(io(source.name()))?;
                Ok((start, buf))
            }
        }
    }
}

/// Every frame: checksum, bounded decompression; then every page in it:
/// un-XOR, BLAKE3 of the final bytes, fingerprint (1.2), no zero bodies or
/// pages. Frames are independent, so they stream through the worker
/// threads ([`Pool::stream`]); the first error in frame order wins, as in
/// a sequential pass. A progress report follows each batch of
/// [`FRAMES_PER_BATCH`] frames. Returns the frozen page of every page
/// record, in record order.
pub(super) fn decode_frames(
    parsed: &Parsed,
    area: Area<'_>,
    parent: Option<&Version>,
    store: &Arc<Store>,
    loader: &mut Loader<'_>,
) -> Result<Vec<PageRef>, FileError> {
    let Parsed { frames, pages, owner, .. } = parsed;
    let mut stored: Vec<Option<PageRef>> = (0..pages.len()).map(|_| None).collect();
    let total_bytes = pages.len() as u64 * PAGE as u64;
    let mut done = 0u64;
    let frames_ref = Frames { frames, checks: PageChecks::Records(pages), owner, parent };
    // Every page's buffer, in slabs (see `page_table::slab` for why).
    let buffers = PageBuffers::new(store, pages.len());
    let decode = |(decoder, buf): &mut (Option<FrameDecoder>, Vec<u8>), range: Range<usize>| {
        let decoder = match decoder {
            Some(d) => d,
            None => decoder.insert(FrameDecoder::new()?),
        };
        let (start, chunk) = area.frames(frames, range.clone(), buf)?;
        let mut written = Vec::with_capacity(range.len() * PAGES_PER_FRAME);
        for n in range {
            let FrameInfo { offset, length, .. } = frames[n];
            let src = &chunk[(offset - start) as usize..(offset - start + u64::from(length)) as usize];
            frames_ref.decode_frame(n, src, decoder, &mut |i, page, fingerprint| {
                // Invariant: `parse_index` gave each record one slot, so each
                // is decoded, and written, once.
                let fresh = buffers.write(i, page);
                debug_assert!(fresh, "record {i} decoded twice");
                written.push((i, fingerprint));
            })?;
        }
        // The pages join the store under one taking of its lock.
        Ok::<_, FileError>(buffers.records(&written))
    };
    Pool::new(loader.threads).stream(
        0..frames.len(),
        FRAMES_PER_CHUNK,
        || (None, Vec::new()),
        decode,
        |range, part| {
            for (i, page) in part? {
                stored[i] = Some(page);
            }
            done += frames[range.clone()].iter().map(|f| u64::from(f.pages)).sum::<u64>() * PAGE as u64;
            if range.end % FRAMES_PER_BATCH == 0 || range.end == frames.len() {
                loader.report(done, total_bytes);
            }
            Ok::<(), FileError>(())
        },
    )?;
    // Invariant: every record has a slot (checked by `parse_index`) and
    // every slot was decoded.
    Ok(stored.into_iter().map(|p| p.expect("every record was decoded")).collect())
}
