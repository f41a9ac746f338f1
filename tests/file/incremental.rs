//! Incremental snapshot files (format 1.1, `vmsnap::file::save_incremental`):
//! chains, size, rebase, and one test per failure mode.

use std::path::{Path, PathBuf};

use serde_bytes::ByteBuf;
use vmsnap::file::{self, FileError};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

use crate::common;
use common::{Rng, assert_same};

// ------------------------------------------------------------- helpers ----

/// Deterministic, poorly compressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// The index, as a test sees it (mirror of FORMAT.md §5, 1.2).
type Frame = (u64, u32, u8, ByteBuf);
type Page = (ByteBuf, u32, u8, u8, Option<u64>, Option<u64>);
type Snap = (u64, Option<String>, Option<u64>, u64, ByteBuf, Vec<(u64, Vec<u32>)>);
type Index = (Vec<Frame>, Vec<Page>, Vec<Snap>, Option<(ByteBuf, String)>);

fn split(bytes: &[u8]) -> (Vec<u8>, Index) {
    let offset = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    (bytes[..offset].to_vec(), rmp_serde::from_slice(&bytes[offset..]).unwrap())
}

/// Rebuilds a file from its head and a changed index, with valid checksums.
fn reseal(head: &[u8], index: &Index) -> Vec<u8> {
    let index = rmp_serde::to_vec(index).unwrap();
    let mut out = head.to_vec();
    out[24..32].copy_from_slice(&(index.len() as u64).to_le_bytes());
    out[32..48].copy_from_slice(&blake3::hash(&index).as_bytes()[..16]);
    let sum = blake3::hash(&out[..56]);
    out[56..64].copy_from_slice(&sum.as_bytes()[..8]);
    out.extend_from_slice(&index);
    out
}

const BASE: u64 = 0x10000;

/// Three generations of one address space: `[s1, s2, s3]`. s2 changes a few
/// bytes of some pages, zeroes one, commits new pages; s3 decommits a page,
/// changes more and adds a region.
fn three() -> [Snapshot; 3] {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, 32 * PAGE_SIZE, Protection::READ_WRITE, true, RegionKind::Private).unwrap();
    mm.commit_memory(BASE, 24 * PAGE_SIZE, Protection::READ_WRITE).unwrap();
    for p in 0..20 {
        mm.write_memory(BASE + p * PAGE_SIZE, &noise(p, 4096)).unwrap();
    }
    let s1 = mm.snapshot();
    mm.write_memory(BASE + 3 * PAGE_SIZE + 100, b"changed!").unwrap();
    mm.write_memory(BASE + 7 * PAGE_SIZE + 4000, b"also").unwrap();
    mm.write_memory(BASE + 9 * PAGE_SIZE, &[0; 4096]).unwrap();
    mm.write_memory(BASE + 21 * PAGE_SIZE, b"new page").unwrap();
    mm.commit_memory(BASE + 24 * PAGE_SIZE, 2 * PAGE_SIZE, Protection::READ_WRITE).unwrap();
    mm.write_memory(BASE + 25 * PAGE_SIZE, &noise(99, 4096)).unwrap();
    let s2 = mm.snapshot();
    mm.decommit_memory(BASE + 4 * PAGE_SIZE, PAGE_SIZE).unwrap();
    mm.write_memory(BASE + 3 * PAGE_SIZE + 200, b"again").unwrap();
    mm.write_memory(BASE + 9 * PAGE_SIZE, b"back").unwrap();
    mm.protect_memory(BASE + 10 * PAGE_SIZE, PAGE_SIZE, Protection::READ).unwrap();
    mm.allocate_memory_at(0x100000, 0x3000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(0x101000, &noise(7, 4096)).unwrap();
    let s3 = mm.snapshot();
    [s1, s2, s3]
}

/// Saves `three()` as a chain `s1.vmsnap` <- `s2.vmsnap` <- `s3.vmsnap`.
fn save_three(dir: &Path) -> ([Snapshot; 3], [PathBuf; 3]) {
    let s = three();
    let p = [dir.join("s1.vmsnap"), dir.join("s2.vmsnap"), dir.join("s3.vmsnap")];
    file::save(&s[0], &p[0]).unwrap();
    file::save_incremental(&s[1], &p[0], &p[1]).unwrap();
    file::save_incremental(&s[2], &p[1], &p[2]).unwrap();
    (s, p)
}

/// A small parent/child pair in memory: `(parent, parent bytes, child, child bytes)`.
fn small_pair() -> (Snapshot, Vec<u8>, Snapshot, Vec<u8>) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, 4 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(BASE, b"first").unwrap();
    mm.write_memory(BASE + PAGE_SIZE, b"second").unwrap();
    let parent = mm.snapshot();
    mm.write_memory(BASE + 2, b"X").unwrap();
    mm.write_memory(BASE + 2 * PAGE_SIZE, b"third").unwrap();
    let child = mm.snapshot();
    let parent_bytes = file::to_bytes(&parent).unwrap();
    let child_bytes = file::incremental_to_bytes(&child, &parent, &parent_bytes, "p.vmsnap").unwrap();
    (parent, parent_bytes, child, child_bytes)
}

// ---------------------------------------------------------- round trips ----

#[test]
fn chain_of_three_round_trips() {
    let dir = common::temp_dir("incr", "chain3");
    let (s, p) = save_three(&dir);
    for (snap, path) in s.iter().zip(&p) {
        assert_same(snap, &file::load(path).unwrap());
        file::verify(path).unwrap();
    }
    // The children are incremental files using all three entry kinds.
    for path in &p[1..] {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[10..12], &2u16.to_le_bytes(), "minor 2");
        assert_eq!(&bytes[12..16], &1u32.to_le_bytes(), "flag bit 0");
        let (_, (_, pages, snaps, parent)) = split(&bytes);
        assert!(parent.is_some());
        assert!(pages.iter().any(|pg| pg.3 == 1 && pg.4.is_some()), "an xor page");
        assert!(pages.iter().any(|pg| pg.3 == 0 && pg.4.is_none()), "a plain page");
        assert!(snaps[0].5.iter().any(|run| run.1.contains(&0)), "an inherited page");
    }
    // The root is a plain 1.0 file.
    assert_eq!(std::fs::read(&p[0]).unwrap(), file::to_bytes(&s[0]).unwrap());
    // Deterministic: saving again gives the same bytes.
    let again = dir.join("s3-again.vmsnap");
    file::save_incremental(&s[2], &p[1], &again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&p[2]).unwrap());
    // In memory, against the loaded parent.
    let s2 = file::load(&p[1]).unwrap();
    let child =
        file::incremental_from_bytes(&std::fs::read(&p[2]).unwrap(), &s2, &std::fs::read(&p[1]).unwrap());
    assert_same(&s[2], &child.unwrap());
    dir.close().unwrap();
}

#[test]
fn parent_in_another_directory() {
    let dir = common::temp_dir("incr", "otherdir");
    std::fs::create_dir_all(dir.join("base")).unwrap();
    std::fs::create_dir_all(dir.join("deltas/x")).unwrap();
    let s = three();
    file::save(&s[0], &dir.join("base/root.vmsnap")).unwrap();
    file::save_incremental(&s[1], &dir.join("base/root.vmsnap"), &dir.join("deltas/x/child.vmsnap")).unwrap();
    let (_, (_, _, _, parent)) = split(&std::fs::read(dir.join("deltas/x/child.vmsnap")).unwrap());
    assert_eq!(parent.unwrap().1, "../../base/root.vmsnap");
    // Moving both together keeps the chain loadable.
    std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
    let moved = dir.with_extension("moved");
    assert_same(&s[1], &file::load(&moved.join("deltas/x/child.vmsnap")).unwrap());
    std::fs::remove_dir_all(&moved).unwrap();
}

#[test]
fn incremental_file_is_much_smaller_than_the_changed_pages() {
    let dir = common::temp_dir("incr", "size");
    let mut mm = MemoryManager::new();
    let pages = 256u64;
    mm.allocate_memory_at(BASE, pages * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    mm.write_memory(BASE, &noise(1, (pages * PAGE_SIZE) as usize)).unwrap();
    let parent = mm.snapshot();
    // 64 changed pages, ~8 bytes each.
    let changed = 64u64;
    for i in 0..changed {
        mm.write_memory(BASE + i * 4 * PAGE_SIZE + (i * 37) % 4000, &noise(1000 + i, 8)).unwrap();
    }
    let child = mm.snapshot();
    assert_eq!(parent.diff(&child).changed_pages().count() as u64, changed);
    file::save(&parent, &dir.join("parent.vmsnap")).unwrap();
    file::save_incremental(&child, &dir.join("parent.vmsnap"), &dir.join("child.vmsnap")).unwrap();
    file::save(&child, &dir.join("full.vmsnap")).unwrap();
    let child_size = std::fs::metadata(dir.join("child.vmsnap")).unwrap().len();
    let full_size = std::fs::metadata(dir.join("full.vmsnap")).unwrap().len();
    let changed_bytes = changed * PAGE_SIZE;
    println!(
        "incremental {child_size} bytes for {changed_bytes} changed bytes (ratio 1/{:.1}); full save {full_size} bytes",
        changed_bytes as f64 / child_size as f64
    );
    assert!(child_size * 10 <= changed_bytes, "{child_size} > {changed_bytes} / 10");
    assert_same(&child, &file::load(&dir.join("child.vmsnap")).unwrap());
    dir.close().unwrap();
}

#[test]
fn rebase_is_byte_identical_to_a_full_save() {
    let dir = common::temp_dir("incr", "rebase");
    let (s, p) = save_three(&dir);
    let out = dir.join("rebased.vmsnap");
    file::rebase(&p[2], &out).unwrap();
    let rebased = std::fs::read(&out).unwrap();
    file::save(&s[2], &dir.join("full.vmsnap")).unwrap();
    assert_eq!(rebased, std::fs::read(dir.join("full.vmsnap")).unwrap());
    assert_eq!(rebased, file::to_bytes(&s[2]).unwrap());
    assert_eq!(&rebased[10..16], &[2, 0, 0, 0, 0, 0], "a 1.2 file, no flags");
    // Self-contained: loads with the chain gone.
    std::fs::remove_file(&p[0]).unwrap();
    std::fs::remove_file(&p[1]).unwrap();
    assert_same(&s[2], &file::load(&out).unwrap());
    // Rebasing a child in place.
    let (s, p) = save_three(&dir);
    file::rebase(&p[1], &p[1]).unwrap();
    assert_eq!(std::fs::read(&p[1]).unwrap(), file::to_bytes(&s[1]).unwrap());
    dir.close().unwrap();
}

// --------------------------------------------------------- failure modes ----

#[test]
fn missing_parent() {
    let dir = common::temp_dir("incr", "missing");
    let (_, p) = save_three(&dir);
    std::fs::remove_file(&p[0]).unwrap();
    match file::load(&p[1]) {
        Err(FileError::ParentMissing { path }) => assert_eq!(path, dir.join("s1.vmsnap")),
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(file::verify(&p[1]), Err(FileError::ParentMissing { .. })));
    // Two levels up: wrapped in the parent's error.
    let err = file::load(&p[2]).unwrap_err();
    assert!(matches!(&err, FileError::InParent { path, .. } if *path == dir.join("s2.vmsnap")), "{err}");
    assert!(matches!(err.root_cause(), FileError::ParentMissing { .. }));
    // save_incremental against a missing parent.
    let s = three();
    assert!(matches!(
        file::save_incremental(&s[1], &dir.join("nope.vmsnap"), &dir.join("x.vmsnap")),
        Err(FileError::ParentMissing { .. })
    ));
    assert!(!dir.join("x.vmsnap").exists());
    // The in-memory forms have no parent to offer.
    let child = std::fs::read(&p[1]).unwrap();
    assert!(matches!(file::load_from_bytes(&child), Err(FileError::ParentMissing { .. })));
    assert!(matches!(file::verify_bytes(&child), Err(FileError::ParentMissing { .. })));
    dir.close().unwrap();
}

#[test]
fn mismatched_parent() {
    let dir = common::temp_dir("incr", "mismatch");
    let (s, p) = save_three(&dir);
    // Replace the parent by another valid file (here: the grandchild's snapshot).
    file::save(&s[2], &p[0]).unwrap();
    file::verify(&p[0]).unwrap();
    assert!(matches!(file::load(&p[1]), Err(FileError::ParentMismatch { path }) if path == p[0]));
    assert!(matches!(file::verify(&p[2]).unwrap_err().root_cause(), FileError::ParentMismatch { .. }));
    // In memory.
    let (_, _, _, child) = small_pair();
    let other = file::to_bytes(&s[0]).unwrap();
    assert!(matches!(
        file::incremental_from_bytes(&child, &s[0], &other),
        Err(FileError::ParentMismatch { .. })
    ));
    dir.close().unwrap();
}

#[test]
fn corrupted_parent_is_reported_by_verify_of_the_child() {
    let dir = common::temp_dir("incr", "corrupt");
    let (_, p) = save_three(&dir);
    let good = std::fs::read(&p[0]).unwrap();
    // A flipped bit in the parent's frames: same index (identity), bad frame.
    let mut bad = good.clone();
    bad[100] ^= 0x10;
    std::fs::write(&p[0], &bad).unwrap();
    let err = file::verify(&p[1]).unwrap_err();
    assert!(
        matches!(&err, FileError::InParent { path, source } if *path == p[0]
        && matches!(**source, FileError::FrameCorrupt { .. })),
        "{err}"
    );
    assert!(matches!(file::verify(&p[2]).unwrap_err().root_cause(), FileError::FrameCorrupt { .. }));
    // A flipped bit in the parent's index: the parent's own checksum fails.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&p[0], &bad).unwrap();
    assert!(matches!(file::verify(&p[1]).unwrap_err().root_cause(), FileError::IndexChecksum));
    // A truncated parent.
    std::fs::write(&p[0], &good[..good.len() - 1]).unwrap();
    assert!(matches!(file::load(&p[1]).unwrap_err().root_cause(), FileError::Truncated { .. }));
    // Repaired: fine again.
    std::fs::write(&p[0], &good).unwrap();
    file::verify(&p[2]).unwrap();
    dir.close().unwrap();
}

#[test]
fn truncated_or_bit_flipped_child_at_every_offset() {
    let (parent, parent_bytes, child, good) = small_pair();
    assert_same(&child, &file::incremental_from_bytes(&good, &parent, &parent_bytes).unwrap());
    for cut in 0..good.len() {
        assert!(file::incremental_from_bytes(&good[..cut], &parent, &parent_bytes).is_err(), "cut at {cut}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        file::incremental_from_bytes(&longer, &parent, &parent_bytes),
        Err(FileError::TrailingBytes { .. })
    ));
    for at in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[at] ^= bit;
            assert!(
                file::incremental_from_bytes(&bad, &parent, &parent_bytes).is_err(),
                "flip {bit:#x} at {at}"
            );
        }
    }
    // Through the file system too (a few offsets).
    let dir = common::temp_dir("incr", "flip");
    std::fs::write(dir.join("p.vmsnap"), &parent_bytes).unwrap();
    for at in [0, 12, 40, 70, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 4;
        std::fs::write(dir.join("c.vmsnap"), &bad).unwrap();
        assert!(file::verify(&dir.join("c.vmsnap")).is_err(), "flip at {at}");
    }
    std::fs::write(dir.join("c.vmsnap"), &good).unwrap();
    file::verify(&dir.join("c.vmsnap")).unwrap();
    dir.close().unwrap();
}

#[test]
fn structural_rules_of_incremental_files() {
    let (parent, parent_bytes, _, good) = small_pair();
    let (head, index) = split(&good);
    let check = |index: &Index, head: &[u8]| {
        file::incremental_from_bytes(&reseal(head, index), &parent, &parent_bytes)
    };
    check(&index, &head).unwrap();
    // The incremental flag on a minor-0 file is refused (1.0 rule).
    let mut old = head.clone();
    old[10] = 0;
    assert!(matches!(check(&index, &old), Err(FileError::UnsupportedFlags(1))));
    // Flag without parent record, and a parent record without the flag.
    let mut no_parent = index.clone();
    no_parent.3 = None;
    assert!(matches!(check(&no_parent, &head), Err(FileError::CorruptIndex(_))));
    let mut no_flag = head.clone();
    no_flag[12] = 0;
    assert!(matches!(check(&index, &no_flag), Err(FileError::CorruptIndex(_))));
    // An absolute or empty hint.
    for hint in ["", "/etc/p.vmsnap", ".."] {
        let mut bad = index.clone();
        bad.3.as_mut().unwrap().1 = hint.to_owned();
        assert!(matches!(check(&bad, &head), Err(FileError::CorruptIndex(_))), "{hint:?}");
    }
    // An inherited entry where the parent has no page.
    let mut bad = index.clone();
    let run = &mut bad.2[0].5[0];
    run.1.push(0);
    run.1.push(0);
    assert!(matches!(check(&bad, &head), Err(FileError::CorruptIndex(_))));
    // An xor page whose base the parent does not store.
    let mut bad = index.clone();
    let xor = bad.1.iter_mut().find(|p| p.3 == 1).unwrap();
    xor.4 = Some(xor.4.unwrap() + 3);
    assert!(check(&bad, &head).is_err());
    // A plain page where the parent has one (not canonical).
    let mut bad = index.clone();
    let xor = bad.1.iter_mut().find(|p| p.3 == 1).unwrap();
    xor.3 = 0;
    xor.4 = None;
    assert!(check(&bad, &head).is_err());
}

#[test]
fn chain_too_deep() {
    let dir = common::temp_dir("incr", "deep");
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let path = |i: u64| dir.join(format!("{i}.vmsnap"));
    mm.write_memory(BASE, &[1]).unwrap();
    file::save(&mm.snapshot(), &path(1)).unwrap();
    let max = file::MAX_CHAIN_LENGTH;
    for i in 2..=max {
        mm.write_memory(BASE, &[i as u8]).unwrap();
        file::save_incremental(&mm.snapshot(), &path(i - 1), &path(i)).unwrap();
    }
    let mut byte = [0u8];
    file::load(&path(max)).unwrap().read_memory(BASE, &mut byte).unwrap();
    assert_eq!(byte[0], max as u8);
    // One more file would make the chain too long.
    mm.write_memory(BASE, &[0xEE]).unwrap();
    let err = file::save_incremental(&mm.snapshot(), &path(max), &path(max + 1)).unwrap_err();
    assert!(
        matches!(err.root_cause(), FileError::SizeLimit { value, limit, .. } if *value == max + 1 && *limit == max),
        "{err}"
    );
    assert!(!path(max + 1).exists());
    dir.close().unwrap();
}

#[test]
fn parent_cycle() {
    let dir = common::temp_dir("incr", "cycle");
    let (s, p) = save_three(&dir);
    // A child whose hint names itself.
    let (head, mut index) = split(&std::fs::read(&p[1]).unwrap());
    index.3.as_mut().unwrap().1 = "s2.vmsnap".to_owned();
    std::fs::write(&p[1], reseal(&head, &index)).unwrap();
    assert!(matches!(file::load(&p[1]), Err(FileError::ParentCycle { path }) if path == p[1]));
    // s3 was saved against the old s2: the rewritten one is another file.
    assert!(matches!(file::verify(&p[2]), Err(FileError::ParentMismatch { .. })));
    // Saving a file over its own parent is refused, and the parent is kept.
    let before = std::fs::read(&p[0]).unwrap();
    assert!(matches!(file::save_incremental(&s[1], &p[0], &p[0]), Err(FileError::ParentCycle { .. })));
    assert_eq!(std::fs::read(&p[0]).unwrap(), before);
    dir.close().unwrap();
}

#[test]
fn saving_over_a_grandparent_is_a_cycle_and_keeps_the_chain() {
    let dir = common::temp_dir("incr", "grandparent");
    let (s, p) = save_three(&dir);
    // s3's chain is s3 → s2 → s1: saving an increment over s2 at s1 would
    // make s2's parent the increment itself.
    let before = std::fs::read(&p[0]).unwrap();
    let err = file::save_incremental(&s[2], &p[1], &p[0]).unwrap_err();
    assert!(
        matches!(&err, FileError::InParent { path, source } if *path == p[1]
            && matches!(&**source, FileError::ParentCycle { path } if path.ends_with("s1.vmsnap"))),
        "{err}"
    );
    assert_eq!(std::fs::read(&p[0]).unwrap(), before);
    assert_same(&s[2], &file::load(&p[2]).unwrap());
    dir.close().unwrap();
}

#[test]
fn an_incremental_save_reads_only_the_changed_pages_frames_of_its_parent() {
    const PAGES: u64 = 4096; // 256 frames
    let dir = common::temp_dir("incremental", "reads-changed");
    let (parent, child) = (dir.join("parent.vmsnap"), dir.join("child.vmsnap"));
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, PAGES * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    for page in 0..PAGES {
        mm.write_memory(BASE + page * PAGE_SIZE, &noise(page, 64)).unwrap();
    }
    file::save(&mm.snapshot(), &parent).unwrap();

    // A run from the parent opened lazily changes ten pages of one frame
    // (records 48..64: frame 3).
    let opened = file::open(&parent).unwrap();
    let mut run = MemoryManager::new();
    run.restore(&opened.snapshot().unwrap());
    for page in 50..60 {
        run.write_memory(BASE + page * PAGE_SIZE + 8, b"changed!").unwrap();
    }
    let snapshot = run.snapshot();
    file::save_incremental(&snapshot, &parent, &child).unwrap();
    let clean = std::fs::read(&child).unwrap();
    assert_same(&file::load(&child).unwrap(), &snapshot);

    // Damage every frame but frame 3 (the index, and so the parent's
    // identity, stay intact): the same save still succeeds with the same
    // bytes, so it read no other frame of the parent, and none of the run's
    // unchanged pages.
    let mut bytes = std::fs::read(&parent).unwrap();
    let (_, index) = split(&bytes);
    assert_eq!(index.0.len(), 256);
    for (n, frame) in index.0.iter().enumerate().filter(|&(n, _)| n != 3) {
        bytes[64 + frame.0 as usize + (n % 7)] ^= 0x55;
    }
    std::fs::write(&parent, &bytes).unwrap();
    std::fs::remove_file(&child).unwrap();
    file::save_incremental(&snapshot, &parent, &child).unwrap();
    assert_eq!(std::fs::read(&child).unwrap(), clean);
    assert!(file::verify(&child).is_err(), "the damaged parent fails the child's full check");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_increment_saved_from_the_opened_parent_equals_one_that_opens_it_and_checks_its_identity() {
    let dir = common::temp_dir("incremental", "from-opened");
    let (parent, other, child) = (dir.join("p.vmsnap"), dir.join("o.vmsnap"), dir.join("c.vmsnap"));
    let [s1, s2, _] = three();
    file::save(&s1, &parent).unwrap();
    file::save(&s2, &other).unwrap();
    let opened = file::open(&parent).unwrap();
    let mut run = MemoryManager::new();
    run.restore(&opened.snapshot().unwrap());
    run.write_memory(BASE + 8, b"a change").unwrap();
    let snapshot = run.snapshot();

    file::save_incremental(&snapshot, &parent, &child).unwrap();
    let reopened = std::fs::read(&child).unwrap();
    file::Writer::new().save_incremental_from(&snapshot, &opened, &parent, &child).unwrap();
    assert_eq!(std::fs::read(&child).unwrap(), reopened);
    assert_same(&file::load(&child).unwrap(), &snapshot);

    // The opened file must be the one at the parent path.
    let e = file::Writer::new().save_incremental_from(&snapshot, &opened, &other, &child).unwrap_err();
    assert!(matches!(&e, FileError::ParentMismatch { path } if path == &other), "{e:?}");
    assert_eq!(std::fs::read(&child).unwrap(), reopened, "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}
