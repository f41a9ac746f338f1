//! Snapshot files (`vmsnap::file`): round trips, dedup, atomic writes, golden
//! vectors and one test per failure mode.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_bytes::ByteBuf;
use vmsnap::file::{self, FileError};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, Timeline};

use crate::common;
use common::assert_same;

// ------------------------------------------------------------- helpers ----

/// An empty address space.
fn empty() -> Snapshot {
    MemoryManager::new().snapshot()
}

/// A few allocations, a guard page, written pages, a duplicated page and a
/// committed zero page.
fn small() -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x8000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(0x40000, 0x20000, Protection::READ, true, RegionKind::Image).unwrap();
    mm.commit_memory(0x41000, 0x2000, Protection::READ_EXECUTE).unwrap();
    mm.protect_memory(0x12000, 0x1000, Protection::READ_WRITE | Protection::GUARD).unwrap();
    mm.write_memory(0x10ffe, b"spans two pages").unwrap();
    // 0x13000 and 0x14000 hold the same bytes (stored once).
    mm.write_memory(0x13000, &[0xAB; 4096]).unwrap();
    mm.write_memory(0x14000, &[0xAB; 4096]).unwrap();
    mm.write_memory(0x41000, b"\x90\x90\xc3").unwrap();
    // 0x15000: written, then zeroed again (a zero page: not stored).
    mm.write_memory(0x15000, b"gone").unwrap();
    mm.write_memory(0x15000, &[0; 4]).unwrap();
    mm.set_default_allocation_address(0x7000_0000);
    mm.snapshot()
}

/// The index, as a test sees it (mirror of FORMAT.md §5).
type Frame = (u64, u32, u8, ByteBuf);
type Page = (ByteBuf, u32, u8, u8, Option<u32>, Option<u64>);
type Snap = (u64, Option<String>, Option<u64>, u64, ByteBuf, Vec<(u64, Vec<u32>)>);
type Index = (Vec<Frame>, Vec<Page>, Vec<Snap>, Option<(ByteBuf, String)>);

fn split(bytes: &[u8]) -> (Vec<u8>, Index) {
    let offset = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    (bytes[..offset].to_vec(), rmp_serde::from_slice(&bytes[offset..]).unwrap())
}

fn reseal_header(bytes: &mut [u8]) {
    let sum = blake3::hash(&bytes[..56]);
    bytes[56..64].copy_from_slice(&sum.as_bytes()[..8]);
}

/// Rebuilds a file from its head (header + frames) and a changed index, with
/// valid lengths and checksums.
fn reseal(head: &[u8], index: &Index) -> Vec<u8> {
    let index = rmp_serde::to_vec(index).unwrap();
    let mut out = head.to_vec();
    out[24..32].copy_from_slice(&(index.len() as u64).to_le_bytes());
    out[32..48].copy_from_slice(&blake3::hash(&index).as_bytes()[..16]);
    reseal_header(&mut out);
    out.extend_from_slice(&index);
    out
}

// ---------------------------------------------------------- round trips ----

#[test]
fn round_trip_small_and_empty() {
    for s in [empty(), small()] {
        let bytes = file::to_bytes(&s).unwrap();
        let loaded = file::load_from_bytes(&bytes).unwrap();
        assert_same(&s, &loaded);
        assert_eq!(file::to_bytes(&loaded).unwrap(), bytes, "re-encoding gives the same bytes");
    }
}

#[test]
fn round_trip_through_the_file_system() {
    let dir = common::temp_dir("file", "roundtrip");
    let path = dir.join("small.vmsnap");
    let s = small();
    file::save(&s, &path).unwrap();
    file::verify(&path).unwrap();
    assert_same(&s, &file::load(&path).unwrap());
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    dir.close().unwrap();
}

#[test]
fn identical_pages_are_stored_once_and_zero_pages_not_at_all() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 200 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    for i in 0..100 {
        mm.write_memory(0x10000 + i * PAGE_SIZE, &[0x5A; 4096]).unwrap();
    }
    let s = mm.snapshot();
    let bytes = file::to_bytes(&s).unwrap();
    let (_, index) = split(&bytes);
    assert_eq!(index.1.len(), 1, "one stored page");
    assert_eq!(index.0.len(), 1, "one frame");
    assert_same(&s, &file::load_from_bytes(&bytes).unwrap());

    // 200 committed zero pages: nothing stored.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 200 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    let bytes = file::to_bytes(&mm.snapshot()).unwrap();
    let (_, index) = split(&bytes);
    assert!(index.0.is_empty() && index.1.is_empty());
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
}

#[test]
fn many_distinct_pages_span_frames() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 40 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    for i in 0..40u64 {
        mm.write_memory(0x10000 + i * PAGE_SIZE + i, &i.to_le_bytes()).unwrap();
        mm.write_memory(0x10000 + i * PAGE_SIZE + 4000, &[1]).unwrap();
    }
    let s = mm.snapshot();
    let bytes = file::to_bytes(&s).unwrap();
    let (_, index) = split(&bytes);
    assert_eq!(index.0.iter().map(|f| f.2).collect::<Vec<_>>(), vec![16, 16, 8]);
    assert_same(&s, &file::load_from_bytes(&bytes).unwrap());
}

#[test]
fn timeline_round_trip_dedups_across_snapshots() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x10000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let mut t = Timeline::new();
    mm.write_memory(0x10000, &[7; 4096]).unwrap();
    let a = t.take(&mut mm, Some("a")).unwrap();
    mm.write_memory(0x11000, b"second").unwrap();
    t.take(&mut mm, Some("b")).unwrap();
    t.restore(&mut mm, a).unwrap();
    mm.write_memory(0x12000, b"branch").unwrap();
    t.take(&mut mm, None).unwrap();
    let bytes = file::timeline_to_bytes(&t).unwrap();
    let (_, index) = split(&bytes);
    assert_eq!(index.1.len(), 3, "page 0x10000 stored once for three snapshots");
    let loaded = file::timeline_from_bytes(&bytes).unwrap();
    assert_eq!(loaded.len(), 3);
    for (x, y) in t.iter().zip(loaded.iter()) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.parent.is_some(), y.parent.is_some());
        assert_same(&x.snapshot, &y.snapshot);
    }
    let b = loaded.find("b").unwrap();
    assert_eq!(loaded.entry(b).unwrap().parent, loaded.find("a"));
    assert_eq!(file::timeline_to_bytes(&loaded).unwrap(), bytes);
    // A timeline file with several snapshots is not a one-snapshot file.
    assert!(matches!(file::load_from_bytes(&bytes), Err(FileError::SnapshotCount { found: 3 })));
    let dir = common::temp_dir("file", "timeline");
    file::save_timeline(&t, &dir.join("t.vmsnap")).unwrap();
    assert_eq!(file::load_timeline(&dir.join("t.vmsnap")).unwrap().len(), 3);
    dir.close().unwrap();
}

// ---------------------------------------------------------- atomic write ----

#[test]
fn failed_save_leaves_no_file_and_keeps_the_old_one() {
    let dir = common::temp_dir("file", "atomic");
    let missing = dir.join("no-such-dir").join("x.vmsnap");
    assert!(matches!(file::save(&small(), &missing), Err(FileError::Io { .. })));
    assert!(!missing.exists());

    let path = dir.join("keep.vmsnap");
    file::save(&empty(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A directory in the way of the rename: the save fails, the old file at
    // `path` (here: the directory's neighbour) is untouched, no temp remains.
    let blocked = dir.join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("inside"), b"x").unwrap();
    assert!(file::save(&small(), &blocked).is_err());
    assert!(blocked.is_dir());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Replacing works and leaves exactly the two entries.
    file::save(&small(), &path).unwrap();
    assert_same(&small_loaded(&path), &small());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    dir.close().unwrap();
}

fn small_loaded(path: &Path) -> Snapshot {
    file::load(path).unwrap()
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let p = Path::new("/nonexistent/vmsnap/file.vmsnap");
    match file::load(p) {
        Err(FileError::Io { path, .. }) => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
}

/// A timeline of four snapshots: `one` (pages 0x10..0x13 written), `two`
/// (page 0x11 changed, 0x15 new), `three` (page 0x12 decommitted) and,
/// branching from `one`, `four` (page 0x16 new).
fn branching_timeline() -> Timeline {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x8000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    for page in 0..4u64 {
        mm.write_memory(0x10000 + page * PAGE_SIZE, &(page + 1).to_le_bytes()).unwrap();
    }
    let mut t = Timeline::new();
    let one = t.take(&mut mm, Some("one")).unwrap();
    mm.write_memory(0x11000, b"changed").unwrap();
    mm.write_memory(0x15000, b"new").unwrap();
    t.take(&mut mm, Some("two")).unwrap();
    mm.decommit_memory(0x12000, PAGE_SIZE).unwrap();
    t.take(&mut mm, Some("three")).unwrap();
    t.restore(&mut mm, one).unwrap();
    mm.write_memory(0x16000, b"branch").unwrap();
    t.take(&mut mm, Some("four")).unwrap();
    t
}

#[test]
fn a_timeline_stores_each_page_map_as_a_delta_against_its_parent() {
    let t = branching_timeline();
    let bytes = file::timeline_to_bytes(&t).unwrap();
    let (head, index) = split(&bytes);
    let maps: Vec<&Vec<(u64, Vec<u32>)>> = index.2.iter().map(|s| &s.5).collect();
    assert_eq!(*maps[0], [(0x10, vec![1, 2, 3, 4])], "no parent: the whole map");
    assert_eq!(*maps[1], [(0x11, vec![5]), (0x15, vec![6])], "what changed against `one`");
    assert_eq!(*maps[2], [(0x12, vec![0])], "0: no longer stored");
    assert_eq!(*maps[3], [(0x16, vec![7])], "against `one`, its parent, not `three`");
    let loaded = file::timeline_from_bytes(&bytes).unwrap();
    for (x, y) in t.iter().zip(loaded.iter()) {
        assert_same(&x.snapshot, &y.snapshot);
    }
    assert_eq!(file::timeline_to_bytes(&loaded).unwrap(), bytes);

    // The reader holds deltas to their canonical form.
    let corrupted = |record: usize, runs: Vec<(u64, Vec<u32>)>| {
        let mut bad = index.clone();
        bad.2[record].5 = runs;
        file::timeline_from_bytes(&reseal(&head, &bad))
    };
    // Repeating the parent's entry.
    assert!(matches!(
        corrupted(1, vec![(0x10, vec![1, 5]), (0x15, vec![6])]),
        Err(FileError::CorruptIndex("page map repeats its parent snapshot's entry"))
    ));
    // Removing a page the parent does not store.
    assert!(matches!(
        corrupted(2, vec![(0x12, vec![0]), (0x17, vec![0])]),
        Err(FileError::CorruptIndex("page map removes a page its parent snapshot does not store"))
    ));
    // Inheriting a page into a decommitted one.
    assert!(matches!(
        corrupted(2, vec![(0x11, vec![2])]),
        Err(FileError::CorruptIndex("page map names a page that is not committed"))
    ));
    // A timeline of many small steps stays small: each step adds its own
    // change, not its whole page map.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 1024 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    for page in 0..1024u64 {
        mm.write_memory(0x10000 + page * PAGE_SIZE, &(page + 1).to_le_bytes()).unwrap();
    }
    let mut long = Timeline::new();
    for step in 0..200u64 {
        mm.write_memory(0x10000 + (step * 37 % 1024) * PAGE_SIZE + 8, &step.to_le_bytes()).unwrap();
        long.take(&mut mm, None).unwrap();
    }
    let (_, long_index) = split(&file::timeline_to_bytes(&long).unwrap());
    let entries: usize = long_index.2.iter().flat_map(|s| s.5.iter()).map(|(_, list)| list.len()).sum();
    assert_eq!(entries, 1024 + 199, "the first map whole, then one entry a step");
}

// --------------------------------------------------------- golden vectors ----

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-format/vectors")
}

/// The golden chain's parent (a 1.0 file): four pages of one allocation.
fn chain_parent() -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x6000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(0x10000, b"page zero of the parent").unwrap();
    mm.write_memory(0x11000, b"page one, inherited").unwrap();
    mm.write_memory(0x12000, &[0x5A; 4096]).unwrap();
    mm.write_memory(0x13000, b"page three, zeroed by the child").unwrap();
    mm.snapshot()
}

/// The golden chain's child (a 1.1 incremental file against
/// `chain-parent.vmsnap`): page 0 changed in a few bytes (xor), pages 1 and 2
/// unchanged (inherited), page 3 zeroed (not stored), page 4 new (plain).
fn chain_child() -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x6000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(0x10000, b"page ZERO of the child!").unwrap();
    mm.write_memory(0x11000, b"page one, inherited").unwrap();
    mm.write_memory(0x12000, &[0x5A; 4096]).unwrap();
    mm.write_memory(0x14000, b"page four, new").unwrap();
    mm.snapshot()
}

const CHAIN_HINT: &str = "chain-parent.vmsnap";

#[test]
fn golden_vectors_decode_and_reencode_to_the_same_bytes() {
    let made =
        [("empty.vmsnap", empty()), ("small.vmsnap", small()), ("chain-parent.vmsnap", chain_parent())];
    let child_bytes = |parent: &Snapshot| {
        file::incremental_to_bytes(&chain_child(), parent, &file::to_bytes(parent).unwrap(), CHAIN_HINT)
            .unwrap()
    };
    if std::env::var_os("VMSNAP_REGENERATE_VECTORS").is_some_and(|v| v == "1") {
        for (name, s) in &made {
            std::fs::write(vectors_dir().join(name), file::to_bytes(s).unwrap()).unwrap();
        }
        std::fs::write(vectors_dir().join("chain-child.vmsnap"), child_bytes(&chain_parent())).unwrap();
        std::fs::write(
            vectors_dir().join("timeline.vmsnap"),
            file::timeline_to_bytes(&branching_timeline()).unwrap(),
        )
        .unwrap();
    }
    let mut seen = 0;
    let mut incremental = 0;
    let mut timelines = 0;
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "vmsnap") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        seen += 1;
        if bytes[12] & 1 != 0 {
            // Incremental (1.1): decoded against its parent, re-encoded
            // against the same parent.
            let (_, index) = split(&bytes);
            let hint = index.3.unwrap().1;
            let parent_file = std::fs::read(vectors_dir().join(&hint)).unwrap();
            let parent = file::load_from_bytes(&parent_file).unwrap();
            let loaded = file::incremental_from_bytes(&bytes, &parent, &parent_file)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = file::incremental_to_bytes(&loaded, &parent, &parent_file, &hint).unwrap();
            assert_eq!(again, bytes, "{} re-encodes differently", path.display());
            assert_same(&file::load(&path).unwrap(), &loaded);
            incremental += 1;
            continue;
        }
        match file::load_from_bytes(&bytes) {
            Ok(loaded) => {
                assert_eq!(
                    file::to_bytes(&loaded).unwrap(),
                    bytes,
                    "{} re-encodes differently",
                    path.display()
                )
            }
            Err(FileError::SnapshotCount { .. }) => {
                let loaded = file::timeline_from_bytes(&bytes).unwrap();
                let again = file::timeline_to_bytes(&loaded).unwrap();
                assert_eq!(again, bytes, "{} re-encodes differently", path.display());
                timelines += 1;
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(seen >= 5 && incremental >= 1 && timelines >= 1);
    // The helpers still produce exactly the committed vectors.
    for (name, s) in &made {
        assert_eq!(
            std::fs::read(vectors_dir().join(name)).unwrap(),
            file::to_bytes(s).unwrap(),
            "{name} is stale"
        );
    }
    assert_eq!(
        std::fs::read(vectors_dir().join("timeline.vmsnap")).unwrap(),
        file::timeline_to_bytes(&branching_timeline()).unwrap(),
        "timeline.vmsnap is stale"
    );
    let child_path = vectors_dir().join("chain-child.vmsnap");
    assert_eq!(
        std::fs::read(&child_path).unwrap(),
        child_bytes(&chain_parent()),
        "chain-child.vmsnap is stale"
    );
    assert_same(&file::load(&vectors_dir().join("small.vmsnap")).unwrap(), &small());
    assert_same(&file::load(&child_path).unwrap(), &chain_child());
    // The child uses an xor page, a plain page and inherited entries.
    let (_, index) = split(&std::fs::read(&child_path).unwrap());
    let kinds: Vec<(u8, Option<u32>)> = index.1.iter().map(|p| (p.3, p.4)).collect();
    assert_eq!(kinds, [(1, Some(0x10)), (0, None)]);
    assert_eq!(index.2[0].5, [(0x10, vec![1, 0, 0]), (0x14, vec![2])]);
}

/// Files written by 1.0 and 1.1 writers (`vectors/1.1/`: the same helpers'
/// snapshots, before page records carried fingerprints) still load, to the
/// same snapshots, and re-encode to the current vectors.
#[test]
fn older_vectors_load_and_reencode_as_current() {
    let old = vectors_dir().join("1.1");
    for (name, expected) in
        [("empty.vmsnap", empty()), ("small.vmsnap", small()), ("chain-parent.vmsnap", chain_parent())]
    {
        let bytes = std::fs::read(old.join(name)).unwrap();
        assert_eq!(&bytes[10..12], &0u16.to_le_bytes(), "{name} is a minor-0 file");
        let loaded = file::load_from_bytes(&bytes).unwrap();
        assert_same(&loaded, &expected);
        assert_eq!(
            file::to_bytes(&loaded).unwrap(),
            std::fs::read(vectors_dir().join(name)).unwrap(),
            "{name}"
        );
        // Lazily opened: no fingerprints to go on, so it is read eagerly.
        let lazy = file::open_lazy(&old.join(name)).unwrap();
        assert_same(&lazy.snapshot().unwrap(), &expected);
    }
    let child = old.join("chain-child.vmsnap");
    let bytes = std::fs::read(&child).unwrap();
    assert_eq!(&bytes[10..16], &[1, 0, 1, 0, 0, 0], "chain-child.vmsnap is a 1.1 incremental file");
    assert_same(&file::load(&child).unwrap(), &chain_child());
    file::verify(&child).unwrap();
    assert_same(&file::open_lazy(&child).unwrap().snapshot().unwrap(), &chain_child());
}

// --------------------------------------------------------- failure modes ----

#[test]
fn bad_magic() {
    let good = file::to_bytes(&small()).unwrap();
    let mut bad = good.clone();
    bad[1] = b'X';
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::BadMagic)));
    assert!(matches!(file::load_from_bytes(b"hello"), Err(FileError::BadMagic)));
    assert!(matches!(file::load_from_bytes(&[]), Err(FileError::Truncated { .. })));
}

#[test]
fn bad_magic_from_text_mode_transports() {
    let good = file::to_bytes(&small()).unwrap();
    // \r\n -> \n everywhere.
    let mut crlf = Vec::new();
    let mut i = 0;
    while i < good.len() {
        if good[i] == b'\r' && good.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        crlf.push(good[i]);
        i += 1;
    }
    assert!(matches!(file::load_from_bytes(&crlf), Err(FileError::BadMagic)));
    // \n -> \r\n everywhere.
    let lf: Vec<u8> =
        good.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
    assert!(matches!(file::load_from_bytes(&lf), Err(FileError::BadMagic)));
    // The 8th bit stripped.
    let seven: Vec<u8> = good.iter().map(|b| b & 0x7F).collect();
    assert!(matches!(file::load_from_bytes(&seven), Err(FileError::BadMagic)));
    // DOS `type` stopping at Ctrl-Z.
    let cut = &good[..good.iter().position(|&b| b == 0x1A).unwrap()];
    assert!(matches!(file::load_from_bytes(cut), Err(FileError::BadMagic | FileError::Truncated { .. })));
}

#[test]
fn unsupported_major_version() {
    let mut bad = file::to_bytes(&small()).unwrap();
    bad[8..10].copy_from_slice(&2u16.to_le_bytes());
    reseal_header(&mut bad);
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::UnsupportedVersion { major: 2, minor: 2 })));
}

#[test]
fn later_minor_version_is_accepted() {
    let mut newer = file::to_bytes(&small()).unwrap();
    newer[10..12].copy_from_slice(&7u16.to_le_bytes());
    reseal_header(&mut newer);
    file::verify_bytes(&newer).unwrap();
}

#[test]
fn unknown_or_misplaced_flags_are_refused() {
    let good = file::to_bytes(&small()).unwrap();
    // Unknown bits.
    for flags in [2u32, 1 << 31, 3] {
        let mut bad = good.clone();
        bad[12..16].copy_from_slice(&flags.to_le_bytes());
        reseal_header(&mut bad);
        assert!(matches!(file::load_from_bytes(&bad), Err(FileError::UnsupportedFlags(f)) if f == flags));
    }
    // The incremental bit in a minor-0 file (before 1.1).
    let mut bad = good.clone();
    bad[10..12].copy_from_slice(&0u16.to_le_bytes());
    bad[12] = 1;
    reseal_header(&mut bad);
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::UnsupportedFlags(1))));
    // The incremental bit without a parent record.
    let mut bad = good;
    bad[12] = 1;
    reseal_header(&mut bad);
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::CorruptIndex(_))));
}

#[test]
fn header_and_index_checksums() {
    let good = file::to_bytes(&small()).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::HeaderChecksum)));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(file::load_from_bytes(&bad), Err(FileError::IndexChecksum)));
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    for good in [file::to_bytes(&small()).unwrap(), file::to_bytes(&empty()).unwrap()] {
        for cut in 0..good.len() {
            assert!(file::load_from_bytes(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(file::load_from_bytes(&longer), Err(FileError::TrailingBytes { .. })));
    }
}

#[test]
fn one_flipped_bit_at_every_offset_is_an_error() {
    let good = file::to_bytes(&small()).unwrap();
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            assert!(file::load_from_bytes(&bad).is_err(), "bit {bit} of byte {at}");
        }
    }
    // A timeline with delta page maps, and every truncation of it, too.
    let good = file::timeline_to_bytes(&branching_timeline()).unwrap();
    for at in 0..good.len() {
        assert!(file::timeline_from_bytes(&good[..at]).is_err(), "truncated to {at}");
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            assert!(file::timeline_from_bytes(&bad).is_err(), "timeline: bit {bit} of byte {at}");
        }
    }
}

#[test]
fn frame_checksum_and_corrupt_frame() {
    let good = file::to_bytes(&small()).unwrap();
    let (head, index) = split(&good);
    // A byte of frame 0 changed: its checksum catches it.
    let mut bad_head = head.clone();
    bad_head[64 + 5] ^= 0x40;
    assert!(matches!(
        file::load_from_bytes(&reseal(&bad_head, &index)),
        Err(FileError::FrameCorrupt { frame: 0 })
    ));
    // And with the checksum fixed too, zstd or the page hash catches it.
    let mut idx = index;
    let (off, len) = (idx.0[0].0 as usize, idx.0[0].1 as usize);
    idx.0[0].3 = ByteBuf::from(blake3::hash(&bad_head[64 + off..64 + off + len]).as_bytes()[..8].to_vec());
    assert!(matches!(
        file::load_from_bytes(&reseal(&bad_head, &idx)),
        Err(FileError::FrameCorrupt { .. } | FileError::PageHash { .. })
    ));
}

#[test]
fn wrong_page_hash() {
    let good = file::to_bytes(&small()).unwrap();
    let (head, mut index) = split(&good);
    index.1[1].0[3] ^= 0xFF;
    assert!(matches!(file::load_from_bytes(&reseal(&head, &index)), Err(FileError::PageHash { page: 2 })));
}

#[test]
fn two_page_records_with_one_hash_are_refused() {
    let good = file::to_bytes(&small()).unwrap();
    let (head, mut index) = split(&good);
    assert!(index.1.len() >= 3);
    // The last record takes the first one's hash (the index is found
    // corrupt before any frame is read).
    let first = index.1[0].0.clone();
    index.1.last_mut().unwrap().0 = first;
    let err = file::load_from_bytes(&reseal(&head, &index)).unwrap_err();
    assert!(matches!(&err, FileError::CorruptIndex(m) if m.contains("same hash")), "{err}");
}

#[test]
fn a_hash_or_checksum_of_another_length_is_refused() {
    let good = file::to_bytes(&small()).unwrap();
    let corrupt = |index: &Index, what: &str| {
        let (head, _) = split(&good);
        let err = file::load_from_bytes(&reseal(&head, index)).unwrap_err();
        assert!(matches!(&err, FileError::CorruptIndex(m) if m.contains(what)), "{what}: {err}");
    };
    for (hash, checksum) in [(0, 0), (31, 7), (33, 9)] {
        let (_, mut index) = split(&good);
        index.1[0].0 = ByteBuf::from(vec![7u8; hash]);
        corrupt(&index, "page hash is not 32 bytes");
        let (_, mut index) = split(&good);
        index.0[0].3 = ByteBuf::from(vec![7u8; checksum]);
        corrupt(&index, "frame checksum is not 8 bytes");
    }
}

#[test]
fn size_limit_index_length() {
    let mut bad = file::to_bytes(&small()).unwrap();
    bad[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    reseal_header(&mut bad);
    assert!(matches!(
        file::load_from_bytes(&bad),
        Err(FileError::SizeLimit { what: "index length", value, .. }) if value == 1 << 40
    ));
}

#[test]
fn size_limit_frame_length() {
    let good = file::to_bytes(&small()).unwrap();
    let (head, mut index) = split(&good);
    index.0[0].1 = u32::MAX;
    assert!(matches!(
        file::load_from_bytes(&reseal(&head, &index)),
        Err(FileError::SizeLimit { what: "frame compressed length", .. })
    ));
    let (head, mut index) = split(&good);
    index.0[0].2 = 17;
    assert!(matches!(file::load_from_bytes(&reseal(&head, &index)), Err(FileError::CorruptIndex(_))));
}

#[test]
fn frame_decompressing_to_more_than_its_pages_is_refused() {
    // Three distinct pages in one frame; claim the frame holds one page.
    let good = file::to_bytes(&small()).unwrap();
    let (head, mut index) = split(&good);
    assert!(index.0[0].2 >= 2);
    index.0[0].2 = 1;
    index.1.truncate(1);
    for s in &mut index.2 {
        for run in &mut s.5 {
            run.1.retain(|&i| i == 1);
        }
        s.5.retain(|r| !r.1.is_empty());
    }
    assert!(matches!(
        file::load_from_bytes(&reseal(&head, &index)),
        Err(FileError::FrameCorrupt { frame: 0 })
    ));
}

#[test]
fn corrupt_index_and_invalid_state() {
    let good = file::to_bytes(&small()).unwrap();
    let (head, index) = split(&good);
    // A page map naming a reserved page.
    let mut idx = index.clone();
    idx.2[0].5.push((0x70000, vec![1])); // page number of 0x7000_0000: reserved nowhere
    assert!(matches!(file::load_from_bytes(&reseal(&head, &idx)), Err(FileError::CorruptIndex(_))));
    // Garbage state.
    let mut idx = index.clone();
    idx.2[0].4 = ByteBuf::from(b"not a state".to_vec());
    assert!(matches!(file::load_from_bytes(&reseal(&head, &idx)), Err(FileError::InvalidState(_))));
    // Not MessagePack at all.
    let mut bytes = head.clone();
    let junk = b"\xc1junk".to_vec();
    bytes[24..32].copy_from_slice(&(junk.len() as u64).to_le_bytes());
    bytes[32..48].copy_from_slice(&blake3::hash(&junk).as_bytes()[..16]);
    reseal_header(&mut bytes);
    bytes.extend_from_slice(&junk);
    assert!(matches!(file::load_from_bytes(&bytes), Err(FileError::CorruptIndex(_))));
    // A parent record in a full file.
    let mut idx = index;
    idx.3 = Some((ByteBuf::from(vec![0; 32]), "p".into()));
    assert!(matches!(file::load_from_bytes(&reseal(&head, &idx)), Err(FileError::CorruptIndex(_))));
}

#[test]
fn a_file_naming_a_snapshot_with_a_leading_hash_is_refused() {
    // #12 item 9: `#N` always means an id; files cannot bring back the names
    // `Timeline` refuses.
    let mut mm = MemoryManager::new();
    let mut t = Timeline::new();
    t.take(&mut mm, Some("one")).unwrap();
    let good = file::timeline_to_bytes(&t).unwrap();
    let (head, index) = split(&good);
    assert_eq!(index.2[0].1.as_deref(), Some("one"));
    let mut idx = index;
    idx.2[0].1 = Some("#1".into());
    let bad = reseal(&head, &idx);
    for result in [file::timeline_from_bytes(&bad).map(drop), file::verify_bytes(&bad).map(drop)] {
        assert!(matches!(result, Err(FileError::CorruptIndex(m)) if m.contains("'#'")), "{result:?}");
    }
}

// ------------------------------------------------------------- proptest ----

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
        let mut input = bytes;
        if magic {
            input.splice(0..0, file::MAGIC);
        }
        prop_assert!(file::verify_bytes(&input).is_err());
        prop_assert!(file::load_from_bytes(&input).is_err());
    }

    #[test]
    fn mutated_files_are_refused(edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                                 cut in proptest::option::of(any::<prop::sample::Index>())) {
        let good = file::to_bytes(&small()).unwrap();
        let mut bad = good.clone();
        for (at, x) in edits {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        if let Some(c) = cut {
            bad.truncate(c.index(bad.len()));
        }
        prop_assume!(bad != good);
        prop_assert!(file::verify_bytes(&bad).is_err());
    }
}

#[test]
fn save_and_load_report_progress_batch_by_batch() {
    let mut mm = vmsnap::MemoryManager::new();
    mm.allocate_memory_at(
        0x10000,
        600 * 0x1000,
        vmsnap::Protection::READ_WRITE,
        false,
        vmsnap::RegionKind::Private,
    )
    .unwrap();
    for page in 0..600u64 {
        mm.write_memory(0x10000 + page * 0x1000, &(page + 1).to_le_bytes()).unwrap();
    }
    let snapshot = mm.snapshot();
    let dir = common::temp_dir("file", "progress");
    let path = dir.join("progress.vmsnap");
    let total = 600 * 0x1000;

    // One thread: a report per batch of 16 frames (256 pages).
    let mut saved = Vec::new();
    let mut report = |p| saved.push(p);
    vmsnap::file::Writer::new().threads(1).progress(&mut report).save(&snapshot, &path).unwrap();
    let done: Vec<u64> = saved.iter().map(|p| p.done).collect();
    assert_eq!(done, vec![256 * 0x1000, 512 * 0x1000, total], "one report per 16-frame batch");
    assert!(saved.iter().all(|p| p.total == total));

    // Any thread count: rising reports that end at the total.
    let mut loaded = Vec::new();
    let back = vmsnap::file::load_with_progress(&path, &mut |p| loaded.push(p)).unwrap();
    assert!(loaded.windows(2).all(|w| w[0].done < w[1].done));
    assert_eq!(loaded.last().map(|p| (p.done, p.total)), Some((total, total)));
    let mut buf = [0u8; 8];
    back.read_memory(0x10000 + 599 * 0x1000, &mut buf).unwrap();
    assert_eq!(u64::from_le_bytes(buf), 600);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vmsnap::file::to_bytes(&back).unwrap(),
        "loaded snapshot re-encodes the same"
    );

    let mut checked = 0;
    vmsnap::file::verify_with_progress(&path, &mut |_| checked += 1).unwrap();
    assert!(checked >= 1);

    // Nothing stored, nothing reported.
    let empty = vmsnap::MemoryManager::new().snapshot();
    let mut reports = 0;
    vmsnap::file::save_with_progress(&empty, &path, &mut |_| reports += 1).unwrap();
    assert_eq!(reports, 0);
}

/// One step of a random recording.
#[derive(Clone, Debug)]
enum Step {
    /// Write `len` bytes of `value` at page `page` (of 32), offset `offset`.
    Write {
        page: u64,
        offset: u64,
        len: usize,
        value: u8,
    },
    /// Zero a whole page (it is then stored as nothing).
    Zero {
        page: u64,
    },
    Decommit {
        page: u64,
    },
    Commit {
        page: u64,
    },
    Protect {
        page: u64,
        read_only: bool,
    },
    /// Take a snapshot.
    Take,
    /// Restore the snapshot taken `back` takes ago (modulo), branching.
    Rewind {
        back: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..32u64, 0..4000u64, 1..96usize, any::<u8>())
            .prop_map(|(page, offset, len, value)| Step::Write { page, offset, len, value }),
        1 => (0..32u64).prop_map(|page| Step::Zero { page }),
        1 => (0..32u64).prop_map(|page| Step::Decommit { page }),
        1 => (0..32u64).prop_map(|page| Step::Commit { page }),
        1 => (0..32u64, any::<bool>()).prop_map(|(page, read_only)| Step::Protect { page, read_only }),
        4 => Just(Step::Take),
        1 => (0..16usize).prop_map(|back| Step::Rewind { back }),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    /// Random recordings with branches, saved as a timeline (delta page maps)
    /// and loaded back, eagerly and lazily: every snapshot is the same.
    #[test]
    fn random_timelines_round_trip(steps in proptest::collection::vec(step(), 1..80)) {
        const BASE: u64 = 0x10000;
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(BASE, 32 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        let mut t = Timeline::new();
        let mut taken = Vec::new();
        for s in steps {
            let at = |page: u64| BASE + page * PAGE_SIZE;
            // Steps that do not apply (writing a decommitted page, ...) are
            // refused by the engine and change nothing: fine for this test.
            match s {
                Step::Write { page, offset, len, value } => {
                    let len = len.min((PAGE_SIZE - offset) as usize);
                    let _ = mm.write_memory(at(page) + offset, &vec![value; len]);
                }
                Step::Zero { page } => {
                    let _ = mm.write_memory(at(page), &[0; 4096]);
                }
                Step::Decommit { page } => {
                    let _ = mm.decommit_memory(at(page), PAGE_SIZE);
                }
                Step::Commit { page } => {
                    let _ = mm.commit_memory(at(page), PAGE_SIZE, Protection::READ_WRITE);
                }
                Step::Protect { page, read_only } => {
                    let p = if read_only { Protection::READ } else { Protection::READ_WRITE };
                    let _ = mm.protect_memory(at(page), PAGE_SIZE, p);
                }
                Step::Take => taken.push(t.take(&mut mm, None).unwrap()),
                Step::Rewind { back } => {
                    if !taken.is_empty() {
                        let id = taken[taken.len() - 1 - back % taken.len()];
                        t.restore(&mut mm, id).unwrap();
                    }
                }
            }
        }
        t.take(&mut mm, None).unwrap();
        let bytes = file::timeline_to_bytes(&t).unwrap();
        let loaded = file::timeline_from_bytes(&bytes).unwrap();
        let lazy = file::open_lazy_bytes(bytes.clone()).unwrap().timeline();
        prop_assert_eq!(loaded.len(), t.len());
        for ((x, y), z) in t.iter().zip(loaded.iter()).zip(lazy.iter()) {
            prop_assert_eq!(x.parent.is_some(), y.parent.is_some());
            assert_same(&x.snapshot, &y.snapshot);
            assert_same(&x.snapshot, &z.snapshot);
        }
        // Loaded snapshots are built from their parents' tables: diffs
        // between them (which trust the tables' lineage) match the
        // originals'.
        let originals: Vec<_> = t.iter().collect();
        let loaded_entries: Vec<_> = loaded.iter().collect();
        for i in 1..originals.len() {
            for j in [0, i - 1] {
                let want: Vec<u64> = originals[j].snapshot.diff(&originals[i].snapshot).changed_pages().collect();
                let got: Vec<u64> =
                    loaded_entries[j].snapshot.diff(&loaded_entries[i].snapshot).changed_pages().collect();
                prop_assert_eq!(got, want, "diff of snapshots {} and {}", j, i);
            }
        }
        prop_assert_eq!(file::timeline_to_bytes(&loaded).unwrap(), bytes);
    }
}

#[test]
fn a_streamed_save_writes_what_to_bytes_returns_at_any_thread_count_and_a_bad_level_is_refused() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x200_0000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    // 2,000 distinct pages: several batches of frames at one thread.
    for page in 0..2000u64 {
        mm.write_memory(0x10000 + page * PAGE_SIZE, &(page * 7 + 1).to_le_bytes()).unwrap();
    }
    let snapshot = mm.snapshot();
    let expected = file::to_bytes(&snapshot).unwrap();
    let dir = common::temp_dir("file", "streamed");
    let path = dir.join("streamed.vmsnap");
    for threads in [1, 2, 3, 0] {
        file::Writer::new().threads(threads).save(&snapshot, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected, "{threads} threads");
        let loaded = file::Loader::new().threads(threads).load(&path).unwrap();
        assert!(loaded.diff(&snapshot).is_empty());
    }
    // Another level: other bytes, the same snapshot.
    let mut writer = file::Writer::new().level(19).unwrap();
    writer.save(&snapshot, &path).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), expected);
    assert!(file::load(&path).unwrap().diff(&snapshot).is_empty());
    for level in [0, 23, -1, i32::MIN] {
        assert!(
            matches!(file::Writer::new().level(level), Err(FileError::InvalidLevel { level: l }) if l == level)
        );
    }
}

// ----------------------------------------------------------- MMIO regions ----

/// A KUSER_SHARED_DATA-like MMIO page whose reads give `fill`.
const KUSER: u64 = 0x7FFE_0000;

/// `small()`'s layout plus an MMIO page at `KUSER` reading `fill`, and a
/// two-page MMIO region at 0x7FFD_0000.
fn with_mmio(fill: u8) -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.restore(&small());
    mm.allocate_mmio(KUSER, PAGE_SIZE, move |_, b| b.fill(fill), |_, _| {}).unwrap();
    mm.allocate_mmio(0x7FFD_0000, 2 * PAGE_SIZE, |_, b| b.fill(0xDD), |_, _| {}).unwrap();
    mm
}

/// The handlers a binder gives for the KUSER page: reads give `fill`.
fn kuser_handlers(fill: u8) -> vmsnap::MmioHandlers {
    vmsnap::MmioHandlers::new(move |_, b| b.fill(fill), |_, _| {})
}

/// `loaded` has `original`'s layout, MMIO regions included, with every
/// MMIO region unbound: queries, statistics and the diff agree, accesses
/// to them are `MmioUnbound`.
fn assert_loaded_unbound(original: &Snapshot, loaded: &Snapshot) {
    assert_eq!(
        loaded.reserved_regions().collect::<Vec<_>>(),
        original.reserved_regions().collect::<Vec<_>>()
    );
    assert_eq!(loaded.layout_version(), original.layout_version());
    let mut mmio = 0;
    for r in original.reserved_regions() {
        for page in (r.base..r.base + r.length).step_by(PAGE_SIZE as usize) {
            assert_eq!(loaded.region_info(page), original.region_info(page), "region at {page:#x}");
            let mut byte = [0u8];
            if r.kind == RegionKind::Mmio {
                mmio += 1;
                assert_eq!(loaded.region_info(page).permissions, Protection::READ_WRITE);
                assert_eq!(
                    loaded.read_memory(page + 1, &mut byte),
                    Err(vmsnap::MemoryError::MmioUnbound { address: page + 1 })
                );
            }
        }
    }
    assert_eq!(mmio, 3, "three MMIO pages");
    let (a, b) = (loaded.compute_memory_stats(), original.compute_memory_stats());
    assert_eq!(
        (a.reserved_memory, a.committed_memory, a.allocation_count),
        (b.reserved_memory, b.committed_memory, b.allocation_count)
    );
    // Handlers are not part of a diff: nothing changed either way.
    assert!(original.diff(loaded).is_empty(), "{:?}", original.diff(loaded));
    assert!(loaded.diff(original).is_empty());
}

#[test]
fn a_loaded_snapshot_keeps_its_mmio_regions_unbound() {
    let original = with_mmio(0x11).snapshot();
    let bytes = file::to_bytes(&original).unwrap();
    let dir = common::temp_dir("file", "mmio-load");
    let path = dir.join("mmio.vmsnap");
    file::save(&original, &path).unwrap();
    // Lazily opened: the regions are in the index, and a refused access
    // reads no frame.
    let lazy = file::open_lazy(&path).unwrap();
    let s = lazy.snapshot().unwrap();
    assert_eq!((s.region_info(KUSER), s.region_kind(KUSER)), (original.region_info(KUSER), RegionKind::Mmio));
    assert_eq!(s.compute_memory_stats().committed_memory, original.compute_memory_stats().committed_memory);
    assert_eq!(s.read_memory(KUSER, &mut [0; 4]), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER }));
    assert_eq!(lazy.frames_read(), 0);
    for loaded in [
        file::load_from_bytes(&bytes).unwrap(),
        file::load(&path).unwrap(),
        lazy.snapshot().unwrap(),
        file::open_lazy_bytes(bytes.clone()).unwrap().snapshot().unwrap(),
    ] {
        assert_loaded_unbound(&original, &loaded);
        // Saved again, the file is the same bytes: the regions are layout.
        assert_eq!(file::to_bytes(&loaded).unwrap(), bytes);
    }
    // inspect counts the regions as the loaded snapshot does.
    assert_eq!(file::inspect_bytes(&bytes).unwrap().snapshots[0].allocations, 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_manager_restored_from_a_file_binds_its_mmio_regions() {
    let original = with_mmio(0x11).snapshot();
    let loaded = file::load_from_bytes(&file::to_bytes(&original).unwrap()).unwrap();
    let mut mm = MemoryManager::new();
    mm.restore(&loaded);
    let committed = mm.compute_memory_stats().committed_memory;
    assert_eq!(committed, original.compute_memory_stats().committed_memory);
    let mut buf = [0u8; 4];
    assert_eq!(mm.read_memory(KUSER, &mut buf), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER }));
    assert_eq!(mm.guest_write(KUSER + 8, &buf), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER + 8 }));
    // A bind of another base or size is refused and changes nothing.
    let version = mm.layout_version();
    for (address, size) in [(KUSER + PAGE_SIZE, PAGE_SIZE), (KUSER, 2 * PAGE_SIZE), (0x10000, 0x8000)] {
        assert_eq!(
            mm.bind_mmio(address, size, |_, _| {}, |_, _| {}),
            Err(vmsnap::MemoryError::NoUnboundMmio { address, size })
        );
    }
    assert_eq!(mm.layout_version(), version);
    mm.bind_mmio(KUSER, PAGE_SIZE, |_, b| b.fill(0x22), |_, _| {}).unwrap();
    assert!(mm.layout_version() > version);
    mm.read_memory(KUSER, &mut buf).unwrap();
    assert_eq!(buf, [0x22; 4]);
    // The other region stays unbound; the loaded snapshot is unchanged.
    assert_eq!(
        mm.read_memory(0x7FFD_1000, &mut buf),
        Err(vmsnap::MemoryError::MmioUnbound { address: 0x7FFD_1000 })
    );
    assert_eq!(loaded.read_memory(KUSER, &mut buf), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER }));
    assert_eq!(mm.compute_memory_stats().committed_memory, committed);
    // A restore to the loaded snapshot brings back its state: unbound.
    let bound = mm.snapshot();
    mm.restore(&loaded);
    assert_eq!(mm.read_memory(KUSER, &mut buf), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER }));
    assert!(bound.diff(&loaded).is_empty(), "binding is not a change a diff reports");
    // Saved, the bound state loads as the original did, unbound (at the
    // manager's layout version: restoring and binding were layout changes).
    let again = file::load_from_bytes(&file::to_bytes(&bound).unwrap()).unwrap();
    assert_eq!(again.layout_version(), bound.layout_version());
    assert!(again.diff(&original).is_empty());
    assert_eq!(again.read_memory(KUSER, &mut buf), Err(vmsnap::MemoryError::MmioUnbound { address: KUSER }));
}

#[test]
fn the_with_loaders_bind_each_distinct_region_once() {
    // A timeline of three snapshots: the KUSER page in all of them, a second
    // region from the second on.
    let mut mm = with_mmio(0x11);
    mm.release_memory(0x7FFD_0000, 0).unwrap();
    let mut t = Timeline::new();
    t.take(&mut mm, Some("first")).unwrap();
    mm.allocate_mmio(0x7FFD_0000, 2 * PAGE_SIZE, |_, b| b.fill(0xDD), |_, _| {}).unwrap();
    t.take(&mut mm, Some("second")).unwrap();
    mm.write_memory(0x10000, b"third").unwrap();
    t.take(&mut mm, Some("third")).unwrap();
    let bytes = file::timeline_to_bytes(&t).unwrap();
    let dir = common::temp_dir("file", "mmio-with");
    let path = dir.join("timeline.vmsnap");
    file::save_timeline(&t, &path).unwrap();

    type Asked = std::cell::RefCell<Vec<(u64, u64)>>;
    /// Binds the KUSER page (reads 0x33) and no other region, noting what
    /// it is asked.
    fn binder(asked: &Asked) -> impl FnMut(u64, u64) -> Option<vmsnap::MmioHandlers> + '_ {
        move |base, length| {
            asked.borrow_mut().push((base, length));
            (base == KUSER).then(|| kuser_handlers(0x33))
        }
    }
    let check = |loaded: &Timeline, asked: &Asked| {
        assert_eq!(
            *asked.borrow(),
            vec![(KUSER, PAGE_SIZE), (0x7FFD_0000, 2 * PAGE_SIZE)],
            "once per region"
        );
        for (entry, original) in loaded.iter().zip(t.iter()) {
            let mut byte = [0u8];
            entry.snapshot.read_memory(KUSER, &mut byte).unwrap();
            assert_eq!(byte, [0x33]);
            assert_eq!(entry.snapshot.region_kind(0x7FFD_0000), original.snapshot.region_kind(0x7FFD_0000));
            if entry.snapshot.region_kind(0x7FFD_0000) == RegionKind::Mmio {
                assert!(entry.snapshot.read_memory(0x7FFD_0000, &mut byte).is_err(), "left unbound");
            }
            assert!(entry.snapshot.diff(&original.snapshot).is_empty());
        }
    };
    for load in 0..4 {
        let asked = Asked::default();
        let loaded = match load {
            0 => file::load_timeline_with(&path, &mut binder(&asked)).unwrap(),
            1 => file::timeline_from_bytes_with(&bytes, &mut binder(&asked)).unwrap(),
            2 => file::open_lazy_with(&path, &mut binder(&asked)).unwrap().timeline(),
            _ => file::open_lazy_bytes_with(bytes.clone(), &mut binder(&asked)).unwrap().timeline(),
        };
        check(&loaded, &asked);
    }
    // One-snapshot files.
    let one = file::to_bytes(&t.get(t.find("third").unwrap()).unwrap().clone()).unwrap();
    let one_path = dir.join("one.vmsnap");
    file::write_atomic(&one_path, &one).unwrap();
    for load in 0..2 {
        let asked = Asked::default();
        let snapshot = match load {
            0 => file::load_with(&one_path, &mut binder(&asked)).unwrap(),
            _ => file::load_from_bytes_with(&one, &mut binder(&asked)).unwrap(),
        };
        assert_eq!(asked.borrow().len(), 2);
        let mut byte = [0u8];
        snapshot.read_memory(KUSER + 0xFFF, &mut byte).unwrap();
        assert_eq!(byte, [0x33]);
    }
    // A corrupt file calls no binder.
    let asked = Asked::default();
    let mut bad = one.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(file::load_from_bytes_with(&bad, &mut binder(&asked)).is_err());
    assert!(asked.borrow().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_incremental_file_keeps_its_mmio_regions() {
    let dir = common::temp_dir("file", "mmio-incremental");
    let (parent, child) = (dir.join("parent.vmsnap"), dir.join("child.vmsnap"));
    let mut mm = with_mmio(0x11);
    file::save(&mm.snapshot(), &parent).unwrap();
    mm.write_memory(0x10000, b"child").unwrap();
    let original = mm.snapshot();
    file::save_incremental(&original, &parent, &child).unwrap();
    assert_loaded_unbound(&original, &file::load(&child).unwrap());
    assert_loaded_unbound(&original, &file::open_lazy(&child).unwrap().snapshot().unwrap());
    let bound =
        file::load_with(&child, &mut |base, _| (base == KUSER).then(|| kuser_handlers(0x44))).unwrap();
    let mut byte = [0u8];
    bound.read_memory(KUSER, &mut byte).unwrap();
    assert_eq!(byte, [0x44]);
    // rebase keeps them too.
    let merged = dir.join("merged.vmsnap");
    file::rebase(&child, &merged).unwrap();
    assert_loaded_unbound(&original, &file::load(&merged).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
