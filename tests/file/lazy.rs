//! Lazily opened snapshot files (`vmsnap::file::open_lazy`): pages are read
//! on first touch, one frame at a time; a manager runs straight from the
//! file; damage shows up as `PageUnavailable` on the pages it hits, never as
//! wrong bytes or a panic.

use proptest::prelude::*;
use vmsnap::file::{self, FileError};
use vmsnap::{Access, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, Timeline};

use crate::common;
use common::{Rng, assert_same, temp_dir};

const BASE: u64 = 0x100_0000;
/// Pages of the test address space: 64 frames of 16.
const PAGES: u64 = 1024;

/// `PAGES` pages, each starting with its page number and some noise, one
/// in eight zero, plus a reserved allocation and a guard page.
fn big() -> (MemoryManager, Snapshot) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, PAGES * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    mm.allocate_memory_at(0x4000_0000, 0x10_0000, Protection::READ, true, RegionKind::Private).unwrap();
    let mut rng = Rng(7);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for n in 0..PAGES {
        if n % 8 == 5 {
            continue;
        }
        rng.fill(&mut page[..64]);
        page[..8].copy_from_slice(&n.to_le_bytes());
        mm.write_memory(BASE + n * PAGE_SIZE, &page).unwrap();
    }
    mm.protect_memory(BASE + 3 * PAGE_SIZE, PAGE_SIZE, Protection::READ_WRITE | Protection::GUARD).unwrap();
    let s = mm.snapshot();
    (mm, s)
}

fn page_number(s: &Snapshot, n: u64) -> u64 {
    let mut buf = [0u8; 8];
    s.read_memory(BASE + n * PAGE_SIZE, &mut buf).unwrap();
    u64::from_le_bytes(buf)
}

#[test]
fn opening_reads_no_frame_and_a_read_reads_one() {
    let (_, s) = big();
    let lazy = file::open_lazy_bytes(file::to_bytes(&s).unwrap()).unwrap();
    assert!(lazy.is_lazy());
    let loaded = lazy.snapshot().unwrap();
    // Queries never touch page bytes.
    assert_eq!(loaded.region_info(BASE), s.region_info(BASE));
    assert_eq!(loaded.reserved_regions().count(), 2);
    assert_eq!(loaded.compute_memory_stats().committed_memory, s.compute_memory_stats().committed_memory);
    assert_eq!(lazy.frames_read(), 0);
    // One page, one frame; its 15 frame-mates come for free.
    assert_eq!(page_number(&loaded, 700), 700);
    assert_eq!(lazy.frames_read(), 1);
    assert_eq!(page_number(&loaded, 702), 702);
    assert_eq!(lazy.frames_read(), 1);
    // Everything, once: the same snapshot as the original.
    assert_same(&loaded, &s);
    assert_eq!(lazy.frames_read(), lazy.frames());
    lazy.load_all().unwrap();
    assert_eq!(lazy.frames_read(), lazy.frames(), "load_all reads nothing twice");
    assert!(lazy.take_error().is_none());
}

#[test]
fn a_manager_runs_straight_from_a_lazily_opened_file() {
    let (_, s) = big();
    let dir = temp_dir("lazy", "run");
    let path = dir.join("run.vmsnap");
    file::save(&s, &path).unwrap();
    let lazy = file::open_lazy(&path).unwrap();
    let mut mm = MemoryManager::new();
    mm.restore(&lazy.snapshot().unwrap());
    assert_eq!(lazy.frames_read(), 0, "restore reads nothing");

    // Guest reads, writes (copy-on-write of a lazy page), guard pages.
    let mut buf = [0u8; 8];
    mm.guest_read(BASE + 100 * PAGE_SIZE, &mut buf).unwrap();
    assert_eq!(u64::from_le_bytes(buf), 100);
    mm.guest_write(BASE + 200 * PAGE_SIZE + 8, b"written").unwrap();
    assert_eq!(
        mm.guest_read(BASE + 3 * PAGE_SIZE, &mut buf),
        Err(MemoryError::GuardPageViolation { address: BASE + 3 * PAGE_SIZE, access: Access::Read })
    );
    mm.guest_read(BASE + 3 * PAGE_SIZE, &mut buf).unwrap();
    assert_eq!(u64::from_le_bytes(buf), 3);
    assert_eq!(lazy.frames_read(), 3, "the frames of pages 3, 100 and 200");

    // Snapshot, diff against the file's snapshot (fingerprints: no reads
    // for unchanged pages), restore back.
    let after = mm.snapshot();
    let diff = after.diff(&lazy.snapshot().unwrap());
    assert_eq!(diff.changed_pages().collect::<Vec<_>>(), [BASE + 200 * PAGE_SIZE]);
    mm.restore(&lazy.snapshot().unwrap());
    let mut want = [0u8; 7];
    s.read_memory(BASE + 200 * PAGE_SIZE + 8, &mut want).unwrap();
    mm.read_memory(BASE + 200 * PAGE_SIZE + 8, &mut buf[..7]).unwrap();
    assert_eq!(&buf[..7], &want);
    assert_eq!(lazy.frames_read(), 3, "nothing more read");

    // Saving a lazily opened snapshot reads it and writes the same bytes.
    let again = file::to_bytes(&lazy.snapshot().unwrap()).unwrap();
    assert_eq!(again, std::fs::read(&path).unwrap());
}

#[test]
fn a_timeline_opens_lazily_with_pages_shared_between_its_snapshots() {
    let (mut mm, _) = big();
    let mut t = Timeline::new();
    t.take(&mut mm, Some("start")).unwrap();
    mm.write_memory(BASE + 10 * PAGE_SIZE, b"step one").unwrap();
    t.take(&mut mm, Some("one")).unwrap();
    mm.write_memory(BASE + 900 * PAGE_SIZE, b"step two").unwrap();
    t.take(&mut mm, Some("two")).unwrap();
    let bytes = file::timeline_to_bytes(&t).unwrap();
    let lazy = file::open_lazy_bytes(bytes).unwrap();
    assert_eq!(lazy.len(), 3);
    assert!(matches!(lazy.snapshot(), Err(FileError::SnapshotCount { found: 3 })));
    let opened = lazy.timeline();
    let id = |t: &Timeline, name| t.find(name).unwrap();
    // Diffs between the file's snapshots read nothing: shared pages are
    // the same objects, changed pages differ in fingerprint.
    let one = opened.get(id(&opened, "one")).unwrap();
    let two = opened.get(id(&opened, "two")).unwrap();
    assert_eq!(one.diff(two).changed_pages().collect::<Vec<_>>(), [BASE + 900 * PAGE_SIZE]);
    assert_eq!(lazy.frames_read(), 0);
    for entry in t.iter() {
        assert_same(opened.get(id(&opened, entry.name.as_deref().unwrap())).unwrap(), &entry.snapshot);
    }
}

#[test]
fn an_incremental_chain_opens_lazily() {
    let (mut mm, s0) = big();
    let dir = temp_dir("lazy", "chain");
    let p0 = dir.join("base.vmsnap");
    let p1 = dir.join("child.vmsnap");
    file::save(&s0, &p0).unwrap();
    mm.write_memory(BASE + 17 * PAGE_SIZE + 100, b"changed").unwrap();
    mm.write_memory(BASE + 5 * PAGE_SIZE, b"was zero").unwrap();
    let s1 = mm.snapshot();
    file::save_incremental(&s1, &p0, &p1).unwrap();

    let lazy = file::open_lazy(&p1).unwrap();
    assert_eq!(lazy.frames(), 1);
    let opened = lazy.snapshot().unwrap();
    assert_eq!(lazy.frames_read(), 0);
    // An xor page: its own frame plus its base's frame in the parent.
    let mut buf = [0u8; 7];
    opened.read_memory(BASE + 17 * PAGE_SIZE + 100, &mut buf).unwrap();
    assert_eq!(&buf, b"changed");
    assert_eq!(lazy.frames_read(), 1);
    assert_same(&opened, &s1);

    // The chain's checks hold lazily too.
    std::fs::write(&p0, file::to_bytes(&s1).unwrap()).unwrap();
    assert!(matches!(file::open_lazy(&p1), Err(FileError::ParentMismatch { .. })));
    std::fs::remove_file(&p0).unwrap();
    assert!(matches!(file::open_lazy(&p1), Err(FileError::ParentMissing { .. })));
    // In memory there is no parent to offer.
    assert!(matches!(
        file::open_lazy_bytes(std::fs::read(&p1).unwrap()),
        Err(FileError::ParentMissing { .. })
    ));
}

/// Offset of frame `n` of a file (from its index).
fn frame_offset(bytes: &[u8], n: usize) -> usize {
    type Frame = (u64, u32, u8, serde_bytes::ByteBuf);
    type Index = (Vec<Frame>, serde::de::IgnoredAny, serde::de::IgnoredAny, serde::de::IgnoredAny);
    let index_offset = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let index: Index = rmp_serde::from_slice(&bytes[index_offset..]).unwrap();
    64 + index.0[n].0 as usize
}

#[test]
fn a_damaged_frame_makes_its_pages_unavailable_and_nothing_else() {
    let (_, s) = big();
    let mut bytes = file::to_bytes(&s).unwrap();
    // Frame 2 holds page records 33..=48: pages 36..=54 of the allocation
    // (one page in eight is zero and not stored); page 35 is in frame 1.
    let at = frame_offset(&bytes, 2) + 10;
    bytes[at] ^= 0x40;
    assert!(matches!(file::verify_bytes(&bytes), Err(FileError::FrameCorrupt { frame: 2 })));
    let lazy = file::open_lazy_bytes(bytes).unwrap();
    let opened = lazy.snapshot().unwrap();
    let broken = BASE + 40 * PAGE_SIZE;
    let first_broken = BASE + 36 * PAGE_SIZE;
    let mut buf = [0u8; 8];
    assert_eq!(opened.read_memory(broken, &mut buf), Err(MemoryError::PageUnavailable { address: broken }));
    assert!(matches!(lazy.take_error(), Some(FileError::FrameCorrupt { frame: 2 })));
    assert!(lazy.take_error().is_none(), "taken");
    // Pages of other frames read fine.
    assert_eq!(page_number(&opened, 35), 35);
    assert_eq!(page_number(&opened, 1000), 1000);

    // In a manager: every access to the page fails, and changes nothing.
    let mut mm = MemoryManager::new();
    mm.restore(&opened);
    let layout = mm.layout_version();
    assert_eq!(
        mm.read_memory(broken + 8, &mut buf),
        Err(MemoryError::PageUnavailable { address: broken + 8 })
    );
    assert_eq!(mm.write_memory(broken, b"x"), Err(MemoryError::PageUnavailable { address: broken }));
    assert_eq!(mm.guest_read(broken, &mut buf), Err(MemoryError::PageUnavailable { address: broken }));
    // Accesses straddling into the damaged frame fail at its first page and
    // leave the readable page before it untouched.
    let straddle = first_broken - 4;
    assert_eq!(
        mm.guest_write(straddle, b"12345678"),
        Err(MemoryError::PageUnavailable { address: first_broken })
    );
    assert_eq!(
        mm.write_memory(straddle, b"12345678"),
        Err(MemoryError::PageUnavailable { address: first_broken })
    );
    assert_eq!(
        mm.read_memory(straddle, &mut buf),
        Err(MemoryError::PageUnavailable { address: first_broken })
    );
    assert!(!mm.try_read_memory(broken, &mut buf));
    assert_eq!(
        vmsnap::nt::exception_code(&MemoryError::PageUnavailable { address: broken }),
        Some(vmsnap::nt::NtStatus::IN_PAGE_ERROR)
    );
    assert_eq!(mm.layout_version(), layout);
    assert!(mm.diff_from(&opened).is_empty(), "the failed writes changed nothing");
    // Queries still answer: the page is committed, only its bytes are lost.
    assert!(mm.region_info(broken).is_committed);
    assert_eq!(mm.page_protection(broken), Some(Protection::READ_WRITE));

    // A diff never calls the broken page equal to the original.
    assert!(opened.diff(&s).changed_pages().any(|p| p == broken));
    // Saving it is an error, not a wrong file; load_all says why.
    assert!(
        matches!(file::to_bytes(&opened), Err(FileError::SourcePageUnavailable { address }) if address == first_broken)
    );
    assert!(matches!(lazy.load_all(), Err(FileError::FrameCorrupt { frame: 2 })));
    // The contents-mode state cannot fail: the page reads as zeros there.
    let mut state = Vec::new();
    mm.serialize_memory_state(&mut state, false);
    assert!(!state.is_empty());
}

#[test]
fn an_io_error_after_opening_is_page_unavailable_and_a_retry_reads_again() {
    let (_, s) = big();
    let dir = temp_dir("lazy", "io");
    let path = dir.join("io.vmsnap");
    let bytes = file::to_bytes(&s).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let lazy = file::open_lazy(&path).unwrap();
    let opened = lazy.snapshot().unwrap();
    // Cut the file in place (not an atomic save): reads past the cut fail.
    let cut = frame_offset(&bytes, 1) as u64;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
    let late = BASE + 900 * PAGE_SIZE;
    let mut buf = [0u8; 8];
    assert_eq!(opened.read_memory(late, &mut buf), Err(MemoryError::PageUnavailable { address: late }));
    assert!(matches!(lazy.take_error(), Some(FileError::Io { .. })));
    assert_eq!(page_number(&opened, 1), 1, "frame 0 is before the cut");
    // Put the bytes back in place (same file): the next read goes through.
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(page_number(&opened, 900), 900);
}

#[test]
fn an_atomic_save_over_an_open_file_does_not_change_what_it_serves() {
    let (mut mm, s) = big();
    let dir = temp_dir("lazy", "replace");
    let path = dir.join("replace.vmsnap");
    file::save(&s, &path).unwrap();
    let lazy = file::open_lazy(&path).unwrap();
    mm.write_memory(BASE + 500 * PAGE_SIZE, &[0xEE; 8]).unwrap();
    file::save(&mm.snapshot(), &path).unwrap();
    assert_eq!(page_number(&lazy.snapshot().unwrap(), 500), 500);
}

#[test]
fn lazy_open_refuses_what_load_refuses_before_reading_frames() {
    let (_, s) = big();
    let good = file::to_bytes(&s).unwrap();
    let index_offset = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    // Every byte of the header and the index: a flip is an error at open.
    for at in (0..64).chain(index_offset..good.len()) {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert!(file::open_lazy_bytes(bad).is_err(), "flip at {at}");
    }
    for len in [0, 7, 8, 63, 64, index_offset, good.len() - 1] {
        assert!(file::open_lazy_bytes(good[..len].to_vec()).is_err(), "truncated to {len}");
    }
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    /// A flipped bit anywhere in a file: either opening fails, or every
    /// committed page reads exactly as saved or is `PageUnavailable` —
    /// never wrong bytes, never a panic.
    #[test]
    fn a_flipped_bit_never_gives_wrong_bytes(seed in any::<u64>(), bit in 0u8..8) {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(BASE, 64 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        let mut rng = Rng(seed | 1);
        for n in 0..64u64 {
            let mut page = vec![0u8; 64];
            rng.fill(&mut page);
            mm.write_memory(BASE + n * PAGE_SIZE, &page).unwrap();
        }
        let s = mm.snapshot();
        let mut bytes = file::to_bytes(&s).unwrap();
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << bit;
        if let Ok(lazy) = file::open_lazy_bytes(bytes) {
            let opened = lazy.snapshot().unwrap();
            let mut got = vec![0u8; PAGE_SIZE as usize];
            let mut want = vec![0u8; PAGE_SIZE as usize];
            for n in 0..64u64 {
                let address = BASE + n * PAGE_SIZE;
                s.read_memory(address, &mut want).unwrap();
                match opened.read_memory(address, &mut got) {
                    Ok(()) => prop_assert_eq!(&got, &want),
                    Err(e) => prop_assert_eq!(e, MemoryError::PageUnavailable { address }),
                }
            }
        }
    }
}

/// A byte source that counts its reads and can be told to fail.
struct Counting {
    bytes: Vec<u8>,
    reads: std::sync::atomic::AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

impl file::ByteSource for Counting {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.fail.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the store is down"));
        }
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        Ok(())
    }

    fn name(&self) -> &std::path::Path {
        std::path::Path::new("bucket/key.vmsnap")
    }
}

#[test]
fn any_byte_source_opens_lazily_reading_the_header_the_index_and_one_frame_per_touch() {
    use std::sync::atomic::Ordering;
    let (_, s) = big();
    let bytes = file::to_bytes(&s).unwrap();
    let source = std::sync::Arc::new(Counting {
        bytes: bytes.clone(),
        reads: Default::default(),
        fail: Default::default(),
    });
    let lazy = file::open_source(source.clone()).unwrap();
    assert_eq!(source.reads.load(Ordering::Relaxed), 2, "the header, then the index");
    let opened = lazy.snapshot().unwrap();
    assert_eq!(page_number(&opened, 100), 100);
    assert_eq!(source.reads.load(Ordering::Relaxed), 3, "one frame");
    lazy.verify().unwrap();
    assert_same(&opened, &s);

    // A failing source: a typed error naming it, and the page unavailable.
    let down = std::sync::Arc::new(Counting { bytes, reads: Default::default(), fail: Default::default() });
    let lazy = file::open_source(down.clone()).unwrap();
    down.fail.store(true, Ordering::Relaxed);
    let opened = lazy.snapshot().unwrap();
    let mut buf = [0u8; 8];
    let at = BASE + 7 * PAGE_SIZE;
    assert_eq!(opened.read_memory(at, &mut buf), Err(MemoryError::PageUnavailable { address: at }));
    let e = lazy.take_error().unwrap();
    assert!(matches!(&e, FileError::Io { path, .. } if path.ends_with("key.vmsnap")), "{e:?}");
    assert!(lazy.verify().is_err());
    down.fail.store(false, Ordering::Relaxed);
    assert_eq!(page_number(&opened, 7), 7, "a retry reads again");
}

#[test]
fn open_reads_a_local_file_lazily_and_verify_finds_a_damaged_frame() {
    let (_, s) = big();
    let dir = temp_dir("lazy", "open-verify");
    let path = dir.join("s.vmsnap");
    file::save(&s, &path).unwrap();
    let lazy = file::open(&path).unwrap();
    assert_eq!(lazy.frames_read(), 0);
    lazy.verify().unwrap();
    assert_same(&lazy.snapshot().unwrap(), &s);

    let mut bytes = std::fs::read(&path).unwrap();
    let at = frame_offset(&bytes, 2) + 10;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let lazy = file::open(&path).unwrap();
    assert!(matches!(lazy.verify(), Err(FileError::FrameCorrupt { frame: 2 })));
    // The same damage through a LocalFile source.
    let local = file::LocalFile::open(&path).unwrap();
    let lazy = file::open_source(std::sync::Arc::new(local)).unwrap();
    assert!(matches!(lazy.load_all(), Err(FileError::FrameCorrupt { frame: 2 })));
    std::fs::remove_dir_all(&dir).ok();
}
