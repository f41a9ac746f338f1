//! Timelines: take / restore / branch / find / ancestors / children / remove /
//! insert / memory; a branching history of 1,000 versions restored at random
//! and compared with a reference model; layout versions of snapshots; and
//! diffs between versions (both orders) and against the live state: changed
//! pages, page-change kinds, exact byte ranges and region changes.
//!
//! Every test takes the `serial()` lock: `frozen_pages_alive()` counts the
//! whole process, so the tests that read it must not overlap with others.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

mod common;
use common::Rng;

use vmsnap::{
    Access, AddressSpace, MemoryDiff, MemoryError, MemoryManager, PAGE_SIZE, PageChangeKind, Protection,
    RegionChange, RegionInfo, RegionKind, ReservedRegion, Snapshot, SnapshotId, Timeline, TimelineError,
    USER_SPACE_END, VersionMemory, frozen_pages_alive,
};

const RW: Protection = Protection::READ_WRITE;
const R: Protection = Protection::READ;
const G: Protection = Protection::GUARD;
const PAGE: usize = PAGE_SIZE as usize;
/// Base of the main allocation of every test.
const A: u64 = 0x1000_0000;
/// Base of the allocation the history test makes and releases.
const B: u64 = A + 0x10_0000;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn page(i: u64) -> u64 {
    A + i * PAGE_SIZE
}

fn read_vec(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEEu8; len];
    mm.read_memory(address, &mut buf).unwrap();
    buf
}

fn snap_vec(s: &Snapshot, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEEu8; len];
    s.read_memory(address, &mut buf).unwrap();
    buf
}

fn changed(d: &MemoryDiff) -> Vec<u64> {
    d.changed_pages().collect()
}

fn kinds(d: &MemoryDiff) -> Vec<(u64, PageChangeKind)> {
    d.page_changes().iter().map(|c| (c.address(), c.kind())).collect()
}

/// A manager with one allocation of 16 committed read-write pages at `A`.
fn manager() -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm
}

fn stamp(mm: &mut MemoryManager, value: u8) {
    mm.write_memory(A, &[value; 16]).unwrap();
}

fn stamp_of(s: &Snapshot) -> u8 {
    snap_vec(s, A, 1)[0]
}

fn ids(v: &[u64]) -> Vec<SnapshotId> {
    v.iter().map(|&i| SnapshotId(i)).collect()
}

// ------------------------------------------------------------- structure

#[test]
fn take_restore_branch_find_ancestors_children() {
    let _serial = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    assert!(t.is_empty());
    assert_eq!((t.len(), t.head()), (0, None));

    let v1 = t.take(&mut mm, Some("boot")).unwrap();
    assert_eq!(v1, SnapshotId(1));
    stamp(&mut mm, 1);
    let v2 = t.take(&mut mm, None).unwrap();
    stamp(&mut mm, 2);
    let v3 = t.take(&mut mm, Some("main-3")).unwrap();
    assert_eq!((v2, v3), (SnapshotId(2), SnapshotId(3)));
    assert_eq!(t.head(), Some(v3));

    // Back to v2 and on: a branch.
    t.restore(&mut mm, v2).unwrap();
    assert_eq!(t.head(), Some(v2));
    assert_eq!(read_vec(&mm, A, 16), vec![1; 16]);
    stamp(&mut mm, 20);
    let v4 = t.take(&mut mm, Some("branch")).unwrap();
    stamp(&mut mm, 21);
    let v5 = t.take(&mut mm, None).unwrap();
    // Back to the root; a snapshot with no change in between.
    t.restore(&mut mm, v1).unwrap();
    assert_eq!(read_vec(&mm, A, 16), vec![0; 16]);
    let v6 = t.take(&mut mm, None).unwrap();
    assert_eq!((v4, v5, v6), (SnapshotId(4), SnapshotId(5), SnapshotId(6)));
    assert!(t.get(v1).unwrap().diff(t.get(v6).unwrap()).is_empty());

    // Parents, names, order.
    let listed: Vec<(SnapshotId, Option<String>, Option<SnapshotId>)> =
        t.iter().map(|e| (e.id, e.name.clone(), e.parent)).collect();
    assert_eq!(
        listed,
        vec![
            (v1, Some("boot".to_owned()), None),
            (v2, None, Some(v1)),
            (v3, Some("main-3".to_owned()), Some(v2)),
            (v4, Some("branch".to_owned()), Some(v2)),
            (v5, None, Some(v4)),
            (v6, None, Some(v1)),
        ]
    );
    for e in t.iter() {
        assert_eq!(e.snapshot.layout_version(), t.get(e.id).unwrap().layout_version());
    }
    let stamps: Vec<u8> = t.iter().map(|e| stamp_of(&e.snapshot)).collect();
    assert_eq!(stamps, vec![0, 1, 2, 20, 21, 0]);
    assert_eq!(t.len(), 6);
    assert!(!t.is_empty());

    assert_eq!(t.find("boot"), Some(v1));
    assert_eq!(t.find("branch"), Some(v4));
    assert_eq!(t.find("main-3"), Some(v3));
    assert_eq!(t.find("nope"), None);

    assert_eq!(t.ancestors(v5).collect::<Vec<_>>(), vec![v4, v2, v1]);
    assert_eq!(t.ancestors(v3).collect::<Vec<_>>(), vec![v2, v1]);
    assert_eq!(t.ancestors(v6).collect::<Vec<_>>(), vec![v1]);
    assert_eq!(t.ancestors(v1).count(), 0);
    assert_eq!(t.ancestors(SnapshotId(99)).count(), 0);
    assert_eq!(t.children(v1), vec![v2, v6]);
    assert_eq!(t.children(v2), vec![v3, v4]);
    assert_eq!(t.children(v4), vec![v5]);
    assert_eq!(t.children(v5), vec![]);
    assert_eq!(t.children(SnapshotId(99)), vec![]);

    assert_eq!(t.entry(v4).unwrap().name.as_deref(), Some("branch"));
    assert_eq!(t.entry(SnapshotId(99)).unwrap_err(), TimelineError::UnknownSnapshot(SnapshotId(99)));
    assert!(t.get(SnapshotId(0)).is_none());

    // Restoring to the tip of each branch.
    t.restore(&mut mm, v3).unwrap();
    assert_eq!(read_vec(&mm, A, 16), vec![2; 16]);
    t.restore(&mut mm, v5).unwrap();
    assert_eq!(read_vec(&mm, A, 16), vec![21; 16]);

    // Failures change nothing: not the timeline, not the manager.
    stamp(&mut mm, 77);
    let (layout, dirty) = (mm.layout_version(), mm.compute_memory_stats().dirty_pages);
    assert_eq!(dirty, 1);
    assert_eq!(t.take(&mut mm, Some("boot")), Err(TimelineError::DuplicateName("boot".to_owned())));
    assert_eq!(t.restore(&mut mm, SnapshotId(99)), Err(TimelineError::UnknownSnapshot(SnapshotId(99))));
    assert_eq!((t.len(), t.head()), (6, Some(v5)));
    assert_eq!(mm.layout_version(), layout);
    assert_eq!(mm.compute_memory_stats().dirty_pages, 1, "a refused take() did not snapshot");
    assert_eq!(mm.compute_memory_stats().live_versions, 6);
    assert_eq!(read_vec(&mm, A, 16), vec![77; 16]);
    // A refused take used no id.
    let v7 = t.take(&mut mm, Some("after")).unwrap();
    assert_eq!(v7, SnapshotId(7));
    assert_eq!(t.entry(v7).unwrap().parent, Some(v5));

    assert_eq!(TimelineError::UnknownSnapshot(SnapshotId(99)).to_string(), "no snapshot #99 in the timeline");
    assert_eq!(
        TimelineError::DuplicateName("boot".into()).to_string(),
        "a snapshot named \"boot\" already exists"
    );
    assert_eq!(SnapshotId(12).to_string(), "#12");
}

#[test]
fn snapshot_names_cannot_start_with_hash_so_hash_n_is_always_an_id() {
    // #12 item 9: a snapshot named "#1" shadowed id 1 in the CLI.
    let _guard = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    let first = t.take(&mut mm, None).unwrap();
    stamp(&mut mm, 5);
    let (layout, dirty) = (mm.layout_version(), mm.compute_memory_stats().dirty_pages);
    for name in ["#1", "#", "#step", "##2"] {
        assert_eq!(t.take(&mut mm, Some(name)), Err(TimelineError::ReservedName(name.to_owned())));
        let other = mm.snapshot();
        assert_eq!(
            t.insert(other, Some(first), Some(name)),
            Err(TimelineError::ReservedName(name.to_owned()))
        );
    }
    // Nothing changed: no entry, no id used, the head and the manager's dirty page kept.
    assert_eq!((t.len(), t.head()), (1, Some(first)));
    assert_eq!(t.find("#1"), None);
    assert_eq!(mm.layout_version(), layout);
    assert_eq!(dirty, 1);
    // Names that only contain '#' later, or digits, are names.
    let digits = t.take(&mut mm, Some("2")).unwrap();
    let inner = t.take(&mut mm, Some("step#1")).unwrap();
    assert_eq!((digits, inner), (SnapshotId(2), SnapshotId(3)));
    assert_eq!((t.find("2"), t.find("step#1")), (Some(digits), Some(inner)));
    assert_eq!(
        TimelineError::ReservedName("#1".into()).to_string(),
        "snapshot name \"#1\" starts with '#', which is reserved for ids (#N)"
    );
}

#[test]
fn remove_relinks_children_moves_the_head_and_never_reuses_ids() {
    let _serial = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    let v1 = t.take(&mut mm, Some("root")).unwrap();
    stamp(&mut mm, 2);
    let v2 = t.take(&mut mm, Some("two")).unwrap();
    stamp(&mut mm, 3);
    let v3 = t.take(&mut mm, None).unwrap();
    t.restore(&mut mm, v2).unwrap();
    stamp(&mut mm, 4);
    let v4 = t.take(&mut mm, None).unwrap();
    assert_eq!(t.head(), Some(v4));

    // An inner node: its children take its parent.
    let removed = t.remove(v2).unwrap();
    assert_eq!(stamp_of(&removed), 2);
    assert_eq!(t.len(), 3);
    assert!(t.get(v2).is_none());
    assert_eq!(t.find("two"), None);
    assert_eq!(t.entry(v3).unwrap().parent, Some(v1));
    assert_eq!(t.entry(v4).unwrap().parent, Some(v1));
    assert_eq!(t.children(v1), vec![v3, v4]);
    assert_eq!(t.ancestors(v4).collect::<Vec<_>>(), vec![v1]);
    assert_eq!(t.remove(v2).unwrap_err(), TimelineError::UnknownSnapshot(v2));
    assert_eq!(t.head(), Some(v4), "removing another snapshot keeps the head");
    // Its name can be used again; the removed snapshot is still readable.
    drop(removed);

    // The head: its parent becomes the head.
    let removed = t.remove(v4).unwrap();
    assert_eq!(stamp_of(&removed), 4);
    drop(removed);
    assert_eq!(t.head(), Some(v1));
    // The manager still holds v4's state and can go on from it.
    assert_eq!(read_vec(&mm, A, 16), vec![4; 16]);
    let v5 = t.take(&mut mm, Some("two")).unwrap();
    assert_eq!(v5, SnapshotId(5), "ids are never reused");
    assert_eq!(t.entry(v5).unwrap().parent, Some(v1));
    assert_eq!(t.find("two"), Some(v5));

    // The root: its children become roots.
    t.remove(v1).unwrap();
    assert_eq!(t.entry(v3).unwrap().parent, None);
    assert_eq!(t.entry(v5).unwrap().parent, None);
    assert_eq!(t.head(), Some(v5));
    assert_eq!(t.ancestors(v5).count(), 0);
    assert_eq!(t.find("root"), None);

    // Removing the head with no parent leaves no head; the next take is a root.
    t.remove(v5).unwrap();
    assert_eq!(t.head(), None);
    let v6 = t.take(&mut mm, None).unwrap();
    assert_eq!((v6, t.entry(v6).unwrap().parent), (SnapshotId(6), None));
    assert_eq!(t.iter().map(|e| e.id).collect::<Vec<_>>(), ids(&[3, 6]));

    // What remains restores as before.
    t.restore(&mut mm, v3).unwrap();
    assert_eq!(read_vec(&mm, A, 16), vec![3; 16]);
    assert_eq!(t.head(), Some(v3));
    assert_eq!(mm.compute_memory_stats().live_versions, 2);
}

#[test]
fn insert_adds_existing_snapshots_with_a_parent() {
    let _serial = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    let v1 = t.take(&mut mm, Some("mine")).unwrap();

    // A snapshot of another manager (say, loaded from a file).
    let mut other = MemoryManager::new();
    other.allocate_memory_at(0x5000_0000, 0x3000, R, false, RegionKind::Image).unwrap();
    other.write_memory(0x5000_1000, b"other").unwrap();
    other.set_default_allocation_address(0x7000_0000);
    let s = other.snapshot();
    drop(other);

    assert_eq!(
        t.insert(s.clone(), Some(SnapshotId(42)), None).unwrap_err(),
        TimelineError::UnknownSnapshot(SnapshotId(42))
    );
    assert_eq!(
        t.insert(s.clone(), None, Some("mine")).unwrap_err(),
        TimelineError::DuplicateName("mine".into())
    );
    assert_eq!((t.len(), t.head()), (1, Some(v1)));

    let v2 = t.insert(s.clone(), Some(v1), Some("loaded")).unwrap();
    assert_eq!(v2, SnapshotId(2));
    assert_eq!(t.head(), Some(v2));
    assert_eq!(t.entry(v2).unwrap().parent, Some(v1));
    assert_eq!(t.find("loaded"), Some(v2));
    assert_eq!(t.children(v1), vec![v2]);
    let v3 = t.insert(s.clone(), None, None).unwrap();
    assert_eq!(t.entry(v3).unwrap().parent, None);
    assert!(t.get(v2).unwrap().diff(t.get(v3).unwrap()).is_empty());

    // Restoring to it brings the other manager's state.
    t.restore(&mut mm, v2).unwrap();
    assert_eq!(read_vec(&mm, 0x5000_1000, 5), b"other".to_vec());
    assert_eq!(mm.region_info(A).kind, RegionKind::Free);
    assert_eq!(mm.region_kind(0x5000_0000), RegionKind::Image);
    assert_eq!(mm.default_allocation_address(), 0x7000_0000);
    // The next take is its child.
    mm.write_memory(0x5000_0000, b"x").unwrap();
    let v4 = t.take(&mut mm, None).unwrap();
    assert_eq!(t.entry(v4).unwrap().parent, Some(v2));
    assert_eq!(t.ancestors(v4).collect::<Vec<_>>(), vec![v2, v1]);
    // Back to the own snapshot.
    t.restore(&mut mm, v1).unwrap();
    assert_eq!(
        mm.reserved_regions().collect::<Vec<_>>(),
        vec![ReservedRegion {
            base: A,
            length: 0x10000,
            kind: RegionKind::Private,
            initial_permissions: RW,
            attributes: 0,
        }]
    );
}

// ---------------------------------------------------------------- memory

fn memory_of(t: &Timeline, id: SnapshotId) -> VersionMemory {
    t.memory().into_iter().find(|m| m.id == id).unwrap()
}

fn mem(id: SnapshotId, private_pages: u64, shared_pages: u64) -> VersionMemory {
    VersionMemory { id, private_bytes: private_pages * PAGE_SIZE, shared_bytes: shared_pages * PAGE_SIZE }
}

#[test]
fn memory_accounts_private_and_shared_bytes_and_remove_frees_private_pages() {
    let _serial = serial();
    let start = frozen_pages_alive();
    let mut mm = manager();
    let mut t = Timeline::new();
    let v1 = t.take(&mut mm, None).unwrap(); // zero pages only: nothing stored
    for i in 0..4u64 {
        mm.write_memory(page(i), &[i as u8 + 1; PAGE]).unwrap();
    }
    assert_eq!(mm.compute_memory_stats().dirty_pages, 4);
    assert_eq!(mm.compute_memory_stats().private_memory, 4 * PAGE_SIZE, "dirty pages are private");
    assert_eq!(frozen_pages_alive(), start, "dirty pages are not frozen yet");
    let v2 = t.take(&mut mm, None).unwrap();
    assert_eq!(frozen_pages_alive(), start + 4);
    mm.write_memory(page(0), &[9; PAGE]).unwrap();
    let v3 = t.take(&mut mm, None).unwrap();
    assert_eq!(frozen_pages_alive(), start + 5);
    // The live manager holds v3's pages too.
    assert_eq!(memory_of(&t, v3), mem(v3, 0, 4));
    let stats = mm.compute_memory_stats();
    assert_eq!((stats.private_memory, stats.shared_memory, stats.dirty_pages), (0, 4 * PAGE_SIZE, 0));

    t.restore(&mut mm, v1).unwrap();
    assert_eq!(t.memory(), vec![mem(v1, 0, 0), mem(v2, 1, 3), mem(v3, 1, 3)]);
    let s2 = t.get(v2).unwrap().compute_memory_stats();
    assert_eq!(
        (s2.private_memory, s2.shared_memory, s2.committed_memory, s2.reserved_memory, s2.allocation_count),
        (PAGE_SIZE, 3 * PAGE_SIZE, 0x10000, 0x10000, 1)
    );
    assert_eq!((s2.dirty_pages, s2.live_versions), (0, 3));
    let stats = mm.compute_memory_stats();
    assert_eq!((stats.private_memory, stats.shared_memory, stats.live_versions), (0, 0, 3));

    // The live manager at v3, with one more dirty page.
    t.restore(&mut mm, v3).unwrap();
    assert_eq!(memory_of(&t, v3), mem(v3, 0, 4));
    assert_eq!(memory_of(&t, v2), mem(v2, 1, 3));
    mm.write_memory(page(5), &[5; 8]).unwrap();
    let stats = mm.compute_memory_stats();
    assert_eq!((stats.private_memory, stats.shared_memory, stats.dirty_pages), (PAGE_SIZE, 4 * PAGE_SIZE, 1));
    t.restore(&mut mm, v1).unwrap();
    assert_eq!(frozen_pages_alive(), start + 5);

    // Removing v2 frees its one private page once the snapshot is dropped.
    let removed = t.remove(v2).unwrap();
    assert_eq!(frozen_pages_alive(), start + 5, "the returned snapshot still holds it");
    let r = removed.compute_memory_stats();
    assert_eq!((r.private_memory, r.shared_memory, r.live_versions), (PAGE_SIZE, 3 * PAGE_SIZE, 3));
    drop(removed);
    assert_eq!(frozen_pages_alive(), start + 4);
    assert_eq!(t.memory(), vec![mem(v1, 0, 0), mem(v3, 4, 0)], "v3 now holds its pages alone");
    assert_eq!(mm.compute_memory_stats().live_versions, 2);
    assert_eq!(t.get(v3).unwrap().compute_memory_stats().live_versions, 2);

    // Removing v3 frees everything it held privately.
    let private: u64 = memory_of(&t, v3).private_bytes / PAGE_SIZE;
    drop(t.remove(v3).unwrap());
    assert_eq!(frozen_pages_alive(), start + 4 - private);
    assert_eq!(frozen_pages_alive(), start);
    assert_eq!(mm.compute_memory_stats().live_versions, 1);
    // Clones of a snapshot are one version.
    let c = t.get(v1).unwrap().clone();
    assert_eq!(c.compute_memory_stats().live_versions, 1);
    drop(c);
    drop(t);
    assert_eq!(mm.compute_memory_stats().live_versions, 0);
    drop(mm);
    assert_eq!(frozen_pages_alive(), start);
}

// --------------------------------------------------------- layout version

#[test]
fn each_snapshot_keeps_the_layout_version_it_was_taken_at() {
    let _serial = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    let mut seen = vec![mm.layout_version()];
    let mut taken = Vec::new();
    for i in 0..6u64 {
        match i % 3 {
            0 => mm.protect_memory(page(i), PAGE_SIZE, R).map(drop).unwrap(),
            1 => mm.decommit_memory(page(i), PAGE_SIZE).unwrap(),
            _ => mm.write_memory(page(i), b"no layout change").unwrap(),
        }
        let lv = mm.layout_version();
        let id = t.take(&mut mm, None).unwrap();
        assert_eq!(mm.layout_version(), lv, "take() does not change the layout version");
        assert_eq!(t.get(id).unwrap().layout_version(), lv);
        taken.push((id, lv));
        seen.push(lv);
    }
    // Writes leave it, layout changes move it.
    assert!(taken[2].1 == taken[1].1 && taken[1].1 > taken[0].1);
    for &(id, lv) in taken.iter().rev() {
        let before = mm.layout_version();
        t.restore(&mut mm, id).unwrap();
        let after = mm.layout_version();
        assert!(after > before && seen.iter().all(|&v| after > v), "restore moves it past every old value");
        seen.push(after);
        assert_eq!(t.get(id).unwrap().layout_version(), lv, "the snapshot keeps its own");
    }
}

// ------------------------------------------------------------------ diffs

#[test]
fn diff_reports_exact_byte_ranges_and_page_kinds() {
    let _serial = serial();
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x6000, RW).unwrap();
    mm.write_memory(page(2), &[0x22; PAGE]).unwrap();
    mm.write_memory(page(3) + 10, &[7, 7]).unwrap();
    let mut t = Timeline::new();
    let old = t.take(&mut mm, None).unwrap();

    mm.write_memory(page(0) + 100, &[1, 2, 3]).unwrap(); // 3 bytes at offset 100
    mm.write_memory(page(1), &[0xAA]).unwrap(); // first byte
    mm.write_memory(page(1) + 0xFFF, &[0xBB]).unwrap(); // last byte
    mm.write_memory(page(1) + 63, &[1, 1]).unwrap(); // across a 64-byte block boundary
    mm.write_memory(page(2) + 5, &[0x22; 8]).unwrap(); // identical bytes
    mm.decommit_memory(page(3), PAGE_SIZE).unwrap(); // had bytes 10..12
    mm.commit_memory(page(6), PAGE_SIZE, RW).unwrap(); // new zero page
    mm.commit_memory(page(7), PAGE_SIZE, RW).unwrap();
    mm.write_memory(page(7) + 0x800, b"hi").unwrap(); // new page with bytes
    let new = t.take(&mut mm, None).unwrap();
    let (so, sn) = (t.get(old).unwrap(), t.get(new).unwrap());

    let d = so.diff(sn);
    assert_eq!(changed(&d), vec![page(0), page(1), page(3), page(6), page(7)]);
    use PageChangeKind::*;
    assert_eq!(
        kinds(&d),
        vec![
            (page(0), Modified),
            (page(1), Modified),
            (page(3), Decommitted),
            (page(6), Committed),
            (page(7), Committed)
        ]
    );
    let ranges: Vec<Vec<Range<usize>>> = d.page_changes().iter().map(|c| c.byte_ranges()).collect();
    assert_eq!(
        ranges,
        vec![vec![100..103], vec![0..1, 63..65, 0xFFF..0x1000], vec![10..12], vec![], vec![0x800..0x802]]
    );
    let p0 = &d.page_changes()[0];
    assert_eq!(p0.old_bytes(), &[0u8; PAGE][..]);
    assert_eq!(&p0.new_bytes()[99..104], &[0, 1, 2, 3, 0]);
    let p3 = &d.page_changes()[2];
    assert_eq!(&p3.old_bytes()[10..12], &[7, 7]);
    assert_eq!(p3.new_bytes(), &[0u8; PAGE][..], "a decommitted page reads as zeros on the new side");
    assert_eq!(d.page_changes()[3].new_bytes(), &[0u8; PAGE][..]);

    // The reverse diff: same pages, mirrored kinds, same ranges, swapped bytes.
    let r = sn.diff(so);
    assert_eq!(changed(&r), changed(&d));
    assert_eq!(
        kinds(&r),
        vec![
            (page(0), Modified),
            (page(1), Modified),
            (page(3), Committed),
            (page(6), Decommitted),
            (page(7), Decommitted)
        ]
    );
    for (x, y) in d.page_changes().iter().zip(r.page_changes()) {
        assert_eq!(x.byte_ranges(), y.byte_ranges());
        assert_eq!(x.old_bytes(), y.new_bytes());
        assert_eq!(x.new_bytes(), y.old_bytes());
    }
    // Layout: one decommitted run and one committed run (pages 6 and 7).
    assert_eq!(
        d.region_changes(),
        &[
            RegionChange::Decommitted { address: page(3), length: PAGE_SIZE },
            RegionChange::Committed { address: page(6), length: 2 * PAGE_SIZE, permissions: RW },
        ]
    );
    assert_eq!(
        r.region_changes(),
        &[
            RegionChange::Committed { address: page(3), length: PAGE_SIZE, permissions: RW },
            RegionChange::Decommitted { address: page(6), length: 2 * PAGE_SIZE },
        ]
    );
    assert!(so.diff(so).is_empty());
    assert!(sn.diff(sn).is_empty());
}

#[test]
fn diff_reports_region_changes() {
    let _serial = serial();
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x8000, RW).unwrap();
    mm.protect_memory(page(4), PAGE_SIZE, RW | G).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x3000, R, false, RegionKind::Image).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0x4000, RW, false, RegionKind::Private).unwrap();
    let s0 = mm.snapshot();
    let lr = |base, length, kind, initial_permissions| ReservedRegion {
        base,
        length,
        kind,
        initial_permissions,
        attributes: 0,
    };

    // Allocate (committed and reserve-only), release (whole).
    mm.allocate_memory_at(A + 0x30000, 0x2000, RW, false, RegionKind::FileView).unwrap();
    mm.allocate_memory_at(A + 0x40000, 0x5000, R, true, RegionKind::Private).unwrap();
    mm.release_memory(A + 0x10000, 0).unwrap();
    let d = mm.diff_from(&s0);
    assert_eq!(
        d.region_changes(),
        &[
            RegionChange::Released(lr(A + 0x10000, 0x3000, RegionKind::Image, R)),
            RegionChange::Allocated(lr(A + 0x30000, 0x2000, RegionKind::FileView, RW)),
            RegionChange::Allocated(lr(A + 0x40000, 0x5000, RegionKind::Private, R)),
            RegionChange::Decommitted { address: A + 0x10000, length: 0x3000 },
            RegionChange::Committed { address: A + 0x30000, length: 0x2000, permissions: RW },
        ]
    );
    use PageChangeKind::*;
    assert_eq!(
        kinds(&d),
        vec![
            (A + 0x10000, Decommitted),
            (A + 0x11000, Decommitted),
            (A + 0x12000, Decommitted),
            (A + 0x30000, Committed),
            (A + 0x31000, Committed),
        ]
    );
    let s1 = mm.snapshot();
    let back = s1.diff(&s0);
    assert_eq!(
        back.region_changes(),
        &[
            RegionChange::Allocated(lr(A + 0x10000, 0x3000, RegionKind::Image, R)),
            RegionChange::Released(lr(A + 0x30000, 0x2000, RegionKind::FileView, RW)),
            RegionChange::Released(lr(A + 0x40000, 0x5000, RegionKind::Private, R)),
            RegionChange::Committed { address: A + 0x10000, length: 0x3000, permissions: R },
            RegionChange::Decommitted { address: A + 0x30000, length: 0x2000 },
        ]
    );

    // A partial release: the old allocation goes, two new ones come.
    mm.release_memory(A + 0x21000, 0x2000).unwrap();
    let d = s1.diff(&mm.snapshot());
    assert_eq!(
        d.region_changes(),
        &[
            RegionChange::Released(lr(A + 0x20000, 0x4000, RegionKind::Private, RW)),
            RegionChange::Allocated(lr(A + 0x20000, 0x1000, RegionKind::Private, RW)),
            RegionChange::Allocated(lr(A + 0x23000, 0x1000, RegionKind::Private, RW)),
            RegionChange::Decommitted { address: A + 0x21000, length: 0x2000 },
        ]
    );
    assert_eq!(changed(&d), vec![A + 0x21000, A + 0x22000]);

    // Commit, decommit, protect (runs of pages), with no byte change for protect.
    let s2 = mm.snapshot();
    mm.commit_memory(page(10), 0x2000, R).unwrap();
    mm.decommit_memory(page(6), 0x2000).unwrap();
    mm.protect_memory(page(0), 0x3000, R).unwrap();
    mm.commit_memory(page(3), PAGE_SIZE, Protection::READ_EXECUTE).unwrap(); // re-commit: new protection
    let d = mm.diff_from(&s2);
    assert_eq!(
        d.region_changes(),
        &[
            RegionChange::ProtectionChanged { address: page(0), length: 0x3000, old: RW, new: R },
            RegionChange::ProtectionChanged {
                address: page(3),
                length: PAGE_SIZE,
                old: RW,
                new: Protection::READ_EXECUTE
            },
            RegionChange::Decommitted { address: page(6), length: 0x2000 },
            RegionChange::Committed { address: page(10), length: 0x2000, permissions: R },
        ]
    );
    assert_eq!(
        kinds(&d),
        vec![(page(6), Decommitted), (page(7), Decommitted), (page(10), Committed), (page(11), Committed)]
    );

    // A guard page firing is a protection change, and nothing else.
    let s3 = mm.snapshot();
    let mut buf = [0u8; 4];
    assert_eq!(
        mm.guest_read(page(4) + 8, &mut buf),
        Err(MemoryError::GuardPageViolation { address: page(4) + 8, access: Access::Read })
    );
    let d = mm.diff_from(&s3);
    assert_eq!(
        d.region_changes(),
        &[RegionChange::ProtectionChanged { address: page(4), length: PAGE_SIZE, old: RW | G, new: RW }]
    );
    assert_eq!(changed(&d), vec![]);
    assert_eq!(s3.region_info(page(4)).permissions, RW | G, "the snapshot keeps the guard bit");

    // Everything at once, from the first snapshot.
    let all = s0.diff(&mm.snapshot());
    let pages_changed: Vec<u64> = changed(&all);
    assert_eq!(
        pages_changed,
        vec![
            page(6),
            page(7),
            page(10),
            page(11),
            A + 0x10000,
            A + 0x11000,
            A + 0x12000,
            A + 0x21000,
            A + 0x22000,
            A + 0x30000,
            A + 0x31000
        ]
    );
}

#[test]
fn diff_of_mmio_regions_reports_the_layout_not_bytes() {
    let _serial = serial();
    let mut mm = manager();
    let s0 = mm.snapshot();
    let m = A + 0x10_0000;
    mm.allocate_mmio(m, 0x2000, |off, buf| buf.fill(off as u8 | 1), |_, _| {}).unwrap();
    let s1 = mm.snapshot();
    let mmio = ReservedRegion {
        base: m,
        length: 0x2000,
        kind: RegionKind::Mmio,
        initial_permissions: RW,
        attributes: 0,
    };
    let d = s0.diff(&s1);
    assert_eq!(
        d.region_changes(),
        &[
            RegionChange::Allocated(mmio),
            RegionChange::Committed { address: m, length: 0x2000, permissions: RW },
        ]
    );
    assert_eq!(changed(&d), vec![], "MMIO bytes are not captured");
    // Released, and across a restore that brings it back.
    mm.release_memory(m, 0).unwrap();
    let d = mm.diff_from(&s1);
    assert_eq!(
        d.region_changes(),
        &[RegionChange::Released(mmio), RegionChange::Decommitted { address: m, length: 0x2000 },]
    );
    assert_eq!(changed(&d), vec![]);
    mm.restore(&s1);
    assert!(mm.diff_from(&s1).is_empty());
    assert_eq!(read_vec(&mm, m + 0x1002, 2), vec![3, 3]);
}

#[test]
fn diff_from_compares_the_live_state_with_any_snapshot() {
    let _serial = serial();
    let mut mm = manager();
    let mut t = Timeline::new();
    mm.write_memory(page(1), &[1; PAGE]).unwrap();
    let v1 = t.take(&mut mm, None).unwrap();
    mm.write_memory(page(2), &[2; PAGE]).unwrap();
    let v2 = t.take(&mut mm, None).unwrap();

    // Dirty, unsnapshotted pages are part of the live state.
    mm.write_memory(page(3) + 100, &[1, 2, 3]).unwrap();
    mm.write_memory(page(1), &[1; PAGE]).unwrap(); // identical bytes: not a change
    mm.write_memory(page(4), &[0; 64]).unwrap(); // zeros over zeros: not a change
    let d = mm.diff_from(t.get(v2).unwrap());
    assert_eq!(changed(&d), vec![page(3)]);
    assert_eq!(d.page_changes()[0].kind(), PageChangeKind::Modified);
    assert_eq!(d.page_changes()[0].byte_ranges(), vec![100..103]);
    assert!(d.region_changes().is_empty());
    let d = mm.diff_from(t.get(v1).unwrap());
    assert_eq!(changed(&d), vec![page(2), page(3)]);
    assert_eq!(d.page_changes()[0].byte_ranges(), vec![0..PAGE]);

    // Nothing observable changed: bytes, layout version, later snapshots and diffs.
    let lv = mm.layout_version();
    assert_eq!(read_vec(&mm, page(3) + 99, 5), vec![0, 1, 2, 3, 0]);
    mm.write_memory(page(3) + 101, &[9]).unwrap();
    let d = mm.diff_from(t.get(v2).unwrap());
    assert_eq!(d.page_changes()[0].byte_ranges(), vec![100..103]);
    assert_eq!(&d.page_changes()[0].new_bytes()[100..103], &[1, 9, 3]);
    assert_eq!(mm.layout_version(), lv);
    let v3 = t.take(&mut mm, None).unwrap();
    assert_eq!(changed(&t.get(v2).unwrap().diff(t.get(v3).unwrap())), vec![page(3)]);
    assert!(mm.diff_from(t.get(v3).unwrap()).is_empty());

    // After a restore, against the restored version and another one.
    t.restore(&mut mm, v1).unwrap();
    assert!(mm.diff_from(t.get(v1).unwrap()).is_empty());
    assert_eq!(changed(&mm.diff_from(t.get(v3).unwrap())), vec![page(2), page(3)]);
    mm.decommit_memory(page(1), PAGE_SIZE).unwrap();
    let d = mm.diff_from(t.get(v1).unwrap());
    assert_eq!(kinds(&d), vec![(page(1), PageChangeKind::Decommitted)]);
    assert_eq!(d.page_changes()[0].byte_ranges(), vec![0..PAGE]);
    assert_eq!(d.region_changes(), &[RegionChange::Decommitted { address: page(1), length: PAGE_SIZE }]);
}

/// `MemoryStats::dirty_pages` is "pages written since the last `snapshot()`
/// or `restore()`", and `diff_from` promises that nothing observable changes.
#[test]
fn diff_from_leaves_the_dirty_page_count_alone() {
    let _serial = serial();
    let mut mm = manager();
    let s = mm.snapshot();
    mm.write_memory(page(0), b"dirty").unwrap();
    mm.write_memory(page(1), b"dirty").unwrap();
    let before = mm.compute_memory_stats();
    assert_eq!(before.dirty_pages, 2);
    let _ = mm.diff_from(&s);
    let after = mm.compute_memory_stats();
    assert_eq!(after.dirty_pages, before.dirty_pages, "diff_from changed dirty_pages");
    assert_eq!(after, before);
}

// ------------------------------------------------------ a long history

/// A page of the reference model: protection and bytes (shared between the
/// versions that have not changed it).
#[derive(Clone)]
struct MPage {
    prot: Protection,
    bytes: Arc<[u8; PAGE]>,
}

/// The reference model of the history test: committed pages and allocations.
#[derive(Clone, Default)]
struct HModel {
    pages: BTreeMap<u64, MPage>,
    allocs: BTreeMap<u64, ReservedRegion>,
}

const ZERO: [u8; PAGE] = [0; PAGE];
const A_PAGES: u64 = 32;
const B_PAGES: u64 = 4;
const PROTS: [Protection; 7] = [
    RW,
    R,
    Protection::READ_EXECUTE,
    Protection::ALL_ACCESS,
    Protection::empty(),
    Protection::READ_WRITE.union(Protection::GUARD),
    Protection::READ.union(Protection::GUARD),
];

impl HModel {
    fn containing(&self, p: u64) -> Option<ReservedRegion> {
        self.allocs.range(..=p).next_back().map(|(_, r)| *r).filter(|r| p < r.base + r.length)
    }

    fn commit(&mut self, lo: u64, hi: u64, prot: Protection) {
        let mut p = lo;
        while p < hi {
            self.pages
                .entry(p)
                .and_modify(|pg| pg.prot = prot)
                .or_insert_with(|| MPage { prot, bytes: Arc::new(ZERO) });
            p += PAGE_SIZE;
        }
    }

    fn decommit(&mut self, lo: u64, hi: u64) {
        let mut p = lo;
        while p < hi {
            self.pages.remove(&p);
            p += PAGE_SIZE;
        }
    }

    /// The pages the history test looks at: every page of `A` and `B`.
    fn space() -> impl Iterator<Item = u64> {
        (0..A_PAGES).map(page).chain((0..B_PAGES).map(|i| B + i * PAGE_SIZE))
    }

    fn info(&self, p: u64) -> RegionInfo {
        let Some(r) = self.containing(p) else {
            let next = self.allocs.range(p..).next().map_or(USER_SPACE_END, |(b, _)| *b);
            return common::free_info(p, next - p);
        };
        let key = |q: u64| self.pages.get(&q).map(|pg| pg.prot);
        let mut end = p + PAGE_SIZE;
        while end < r.base + r.length && key(end) == key(p) {
            end += PAGE_SIZE;
        }
        RegionInfo {
            start: p,
            length: end - p,
            allocation_base: r.base,
            allocation_length: r.length,
            is_reserved: true,
            is_committed: key(p).is_some(),
            permissions: key(p).unwrap_or(Protection::empty()),
            initial_permissions: r.initial_permissions,
            kind: r.kind,
            attributes: r.attributes,
        }
    }

    fn bytes(&self, p: u64) -> &[u8; PAGE] {
        self.pages.get(&p).map_or(&ZERO, |pg| &pg.bytes)
    }
}

/// Compares the whole state of `v` with the model.
fn check_state(v: &impl AddressSpace, m: &HModel, what: &str) {
    assert_eq!(
        v.reserved_regions().collect::<Vec<_>>(),
        m.allocs.values().copied().collect::<Vec<_>>(),
        "{what}: reserved_regions"
    );
    assert_eq!(
        v.compute_memory_stats().committed_memory,
        m.pages.len() as u64 * PAGE_SIZE,
        "{what}: committed_memory"
    );
    let mut buf = vec![0u8; PAGE];
    for p in HModel::space() {
        let info = m.info(p);
        assert_eq!(v.region_info(p + 0x123), info, "{what}: region_info({p:#x})");
        let got = v.read_memory(p, &mut buf);
        if info.is_committed {
            assert_eq!(got, Ok(()), "{what}: read of {p:#x}");
            assert!(buf[..] == m.bytes(p)[..], "{what}: bytes of page {p:#x}");
        } else if info.is_reserved {
            assert_eq!(got, Err(MemoryError::NotCommitted { address: p }), "{what}: read of {p:#x}");
        } else {
            assert_eq!(got, Err(MemoryError::NotAllocated { address: p }), "{what}: read of {p:#x}");
        }
    }
}

/// The engine's own region walk over `A` and `B`, recorded per version.
fn walk(v: &impl AddressSpace) -> Vec<RegionInfo> {
    let mut out = Vec::new();
    let mut at = A;
    while at < B + B_PAGES * PAGE_SIZE {
        let i = v.region_info(at);
        out.push(i);
        at += i.length.min(B + B_PAGES * PAGE_SIZE - at);
    }
    out
}

/// One random operation on both the manager and the model, with its result checked.
fn random_op(mm: &mut MemoryManager, m: &mut HModel, rng: &mut Rng) {
    let p = page(rng.below(A_PAGES));
    let n = 1 + rng.below(4);
    let hi = (p + n * PAGE_SIZE).min(page(A_PAGES));
    match rng.below(100) {
        0..=44 => {
            // Write: mostly inside A, sometimes B; whole pages or a few bytes.
            let target = if rng.chance(15) { B + rng.below(B_PAGES) * PAGE_SIZE } else { p };
            let (off, len) = if rng.chance(20) {
                (0, PAGE)
            } else {
                let len = 1 + rng.below(64) as usize;
                (rng.below((PAGE - len) as u64 + 1) as usize, len)
            };
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            let got = mm.write_memory(target + off as u64, &data);
            let allocated = m.containing(target).is_some();
            match m.pages.get_mut(&target) {
                Some(pg) => {
                    assert_eq!(got, Ok(()));
                    Arc::make_mut(&mut pg.bytes)[off..off + len].copy_from_slice(&data);
                }
                None if allocated => {
                    assert_eq!(got, Err(MemoryError::NotCommitted { address: target + off as u64 }))
                }
                None => assert_eq!(got, Err(MemoryError::NotAllocated { address: target + off as u64 })),
            }
        }
        45..=56 => {
            let prot = rng.pick(&PROTS);
            mm.commit_memory(p, hi - p, prot).unwrap();
            m.commit(p, hi, prot);
        }
        57..=65 => {
            mm.decommit_memory(p, hi - p).unwrap();
            m.decommit(p, hi);
        }
        66..=79 => {
            let prot = rng.pick(&PROTS);
            let got = mm.protect_memory(p, hi - p, prot);
            let missing = (p..hi).step_by(PAGE).find(|q| !m.pages.contains_key(q));
            match missing {
                Some(q) => assert_eq!(got, Err(MemoryError::NotCommitted { address: q })),
                None => {
                    assert_eq!(got, Ok(m.pages[&p].prot));
                    m.commit(p, hi, prot);
                }
            }
        }
        80..=91 => {
            let mut buf = [0u8; 8];
            let got = mm.guest_read(p + 8, &mut buf);
            let av = Err(MemoryError::AccessViolation { address: p + 8, access: Access::Read });
            match m.pages.get_mut(&p) {
                None => assert_eq!(got, av),
                Some(pg) if !pg.prot.contains(R) => assert_eq!(got, av),
                Some(pg) if pg.prot.contains(G) => {
                    assert_eq!(
                        got,
                        Err(MemoryError::GuardPageViolation { address: p + 8, access: Access::Read })
                    );
                    pg.prot.remove(G);
                }
                Some(pg) => {
                    assert_eq!(got, Ok(()));
                    assert_eq!(buf[..], pg.bytes[8..16]);
                }
            }
        }
        _ => {
            if m.allocs.remove(&B).is_some() {
                mm.release_memory(B, 0).unwrap();
                m.decommit(B, B + B_PAGES * PAGE_SIZE);
            } else {
                let prot = rng.pick(&[RW, R, Protection::READ_EXECUTE]);
                let kind = rng.pick(&[RegionKind::Private, RegionKind::Image, RegionKind::FileView]);
                mm.allocate_memory_at(B, B_PAGES * PAGE_SIZE, prot, false, kind).unwrap();
                m.allocs.insert(
                    B,
                    ReservedRegion {
                        base: B,
                        length: B_PAGES * PAGE_SIZE,
                        kind,
                        initial_permissions: prot,
                        attributes: 0,
                    },
                );
                m.commit(B, B + B_PAGES * PAGE_SIZE, prot);
            }
        }
    }
}

/// A page's state change, as region changes describe it page by page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateChange {
    Committed(Protection),
    Decommitted,
    Protection(Protection, Protection),
}

/// Maximal byte ranges where `a` and `b` differ (a plain loop).
fn byte_ranges(a: &[u8], b: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let s = i;
        while i < a.len() && a[i] != b[i] {
            i += 1;
        }
        out.push(s..i);
    }
    out
}

/// Checks a diff from model `old` to model `new`: page changes with kinds,
/// bytes and byte ranges; allocation changes exactly; page-state runs page by page.
fn check_diff(d: &MemoryDiff, old: &HModel, new: &HModel, what: &str) {
    let all: BTreeSet<u64> = old.pages.keys().chain(new.pages.keys()).copied().collect();
    let mut want = Vec::new();
    for &p in &all {
        let kind = match (old.pages.get(&p), new.pages.get(&p)) {
            (Some(x), Some(y)) if x.bytes != y.bytes => PageChangeKind::Modified,
            (Some(_), Some(_)) => continue,
            (Some(_), None) => PageChangeKind::Decommitted,
            (None, _) => PageChangeKind::Committed,
        };
        want.push((p, kind));
    }
    assert_eq!(kinds(d), want, "{what}: page changes");
    for c in d.page_changes() {
        let (o, n) = (old.bytes(c.address()), new.bytes(c.address()));
        assert!(c.old_bytes() == &o[..], "{what}: old bytes of {:#x}", c.address());
        assert!(c.new_bytes() == &n[..], "{what}: new bytes of {:#x}", c.address());
        assert_eq!(c.byte_ranges(), byte_ranges(o, n), "{what}: byte ranges of {:#x}", c.address());
    }

    // Allocations: those only in one version, by base (old before new at one base).
    let mut allocs: Vec<RegionChange> = Vec::new();
    for r in old.allocs.values().filter(|r| new.allocs.get(&r.base) != Some(r)) {
        allocs.push(RegionChange::Released(*r));
    }
    for r in new.allocs.values().filter(|r| old.allocs.get(&r.base) != Some(r)) {
        allocs.push(RegionChange::Allocated(*r));
    }
    allocs.sort_by_key(|c| match c {
        RegionChange::Allocated(r) => (r.base, 1),
        RegionChange::Released(r) => (r.base, 0),
        _ => unreachable!(),
    });
    let changes = d.region_changes();
    let split = changes
        .iter()
        .position(|c| !matches!(c, RegionChange::Allocated(_) | RegionChange::Released(_)))
        .unwrap_or(changes.len());
    assert_eq!(&changes[..split], &allocs[..], "{what}: allocation changes");

    // Page-state runs: ascending, disjoint, and page by page what the models say.
    let mut got = BTreeMap::new();
    let mut last_end = 0;
    for c in &changes[split..] {
        let (address, length, change) = match *c {
            RegionChange::Committed { address, length, permissions } => {
                (address, length, StateChange::Committed(permissions))
            }
            RegionChange::Decommitted { address, length } => (address, length, StateChange::Decommitted),
            RegionChange::ProtectionChanged { address, length, old, new } => {
                assert_ne!(old, new, "{what}: {c:?}");
                (address, length, StateChange::Protection(old, new))
            }
            _ => panic!("{what}: allocation change after page runs: {c:?}"),
        };
        assert!(address >= last_end && length > 0 && length % PAGE_SIZE == 0, "{what}: run {c:?}");
        last_end = address + length;
        for p in (address..address + length).step_by(PAGE) {
            got.insert(p, change);
        }
    }
    let mut expected = BTreeMap::new();
    for &p in &all {
        let change = match (old.pages.get(&p).map(|x| x.prot), new.pages.get(&p).map(|x| x.prot)) {
            (None, Some(n)) => StateChange::Committed(n),
            (Some(_), None) => StateChange::Decommitted,
            (Some(o), Some(n)) if o != n => StateChange::Protection(o, n),
            _ => continue,
        };
        expected.insert(p, change);
    }
    assert_eq!(got, expected, "{what}: page-state changes");
}

struct Recorded {
    model: HModel,
    walk: Vec<RegionInfo>,
    layout_version: u64,
    parent: Option<SnapshotId>,
}

#[test]
fn a_history_of_1000_versions_restores_exactly_across_branches() {
    let _serial = serial();
    const VERSIONS: u64 = 1000;
    let mut rng = Rng(0x5EED_0F71_3311_E5E5);
    let mut mm = MemoryManager::new();
    let mut m = HModel::default();
    mm.allocate_memory_at(A, A_PAGES * PAGE_SIZE, RW, true, RegionKind::Private).unwrap();
    m.allocs.insert(
        A,
        ReservedRegion {
            base: A,
            length: A_PAGES * PAGE_SIZE,
            kind: RegionKind::Private,
            initial_permissions: RW,
            attributes: 0,
        },
    );
    mm.commit_memory(A, 24 * PAGE_SIZE, RW).unwrap();
    m.commit(A, page(24), RW);

    let mut t = Timeline::new();
    let mut rec: BTreeMap<SnapshotId, Recorded> = BTreeMap::new();
    let mut seen_layout = mm.layout_version();
    let mut restores = 0;
    for step in 0..VERSIONS {
        if step > 0 && rng.chance(30) {
            let id = SnapshotId(1 + rng.below(step));
            t.restore(&mut mm, id).unwrap();
            let r = &rec[&id];
            m = r.model.clone();
            assert!(mm.layout_version() > seen_layout, "restore moves the layout version forward");
            seen_layout = mm.layout_version();
            check_state(&mm, &m, &format!("after restoring {id}"));
            assert_eq!(walk(&mm), r.walk, "region walk after restoring {id}");
            restores += 1;
        }
        for _ in 0..1 + rng.below(3) {
            random_op(&mut mm, &mut m, &mut rng);
        }
        check_state(&mm, &m, &format!("step {step}"));
        let parent = t.head();
        let layout_version = mm.layout_version();
        seen_layout = seen_layout.max(layout_version);
        let name = step.is_multiple_of(100).then(|| format!("v{step}"));
        let id = t.take(&mut mm, name.as_deref()).unwrap();
        assert_eq!(id, SnapshotId(step + 1));
        assert_eq!(t.entry(id).unwrap().parent, parent);
        assert_eq!(t.get(id).unwrap().layout_version(), layout_version);
        rec.insert(id, Recorded { model: m.clone(), walk: walk(&mm), layout_version, parent });
    }
    assert!(restores > 200, "the history branches ({restores} restores)");
    assert_eq!(t.len(), VERSIONS as usize);
    assert_eq!(mm.compute_memory_stats().live_versions, VERSIONS);
    for step in (0..VERSIONS).step_by(100) {
        assert_eq!(t.find(&format!("v{step}")), Some(SnapshotId(step + 1)));
    }

    // The tree: parents, ancestors, children.
    let mut children: BTreeMap<SnapshotId, Vec<SnapshotId>> = BTreeMap::new();
    for e in t.iter() {
        assert_eq!(e.parent, rec[&e.id].parent, "parent of {}", e.id);
        if let Some(p) = e.parent {
            children.entry(p).or_default().push(e.id);
        }
    }
    assert!(children.values().filter(|c| c.len() > 1).count() > 50, "many branch points");
    for e in t.iter() {
        assert_eq!(
            t.children(e.id),
            children.get(&e.id).cloned().unwrap_or_default(),
            "children of {}",
            e.id
        );
    }
    for _ in 0..100 {
        let id = SnapshotId(1 + rng.below(VERSIONS));
        let mut chain = Vec::new();
        let mut at = rec[&id].parent;
        while let Some(p) = at {
            chain.push(p);
            at = rec[&p].parent;
        }
        assert_eq!(t.ancestors(id).collect::<Vec<_>>(), chain, "ancestors of {id}");
    }

    // Every version read on its own.
    for (id, r) in &rec {
        let s = t.get(*id).unwrap();
        check_state(s, &r.model, &format!("snapshot {id}"));
        assert_eq!(walk(s), r.walk, "region walk of snapshot {id}");
        assert_eq!(s.layout_version(), r.layout_version);
    }

    // Restores to random versions, a few live changes, diffs against another version.
    for round in 0..300 {
        let x = SnapshotId(1 + rng.below(VERSIONS));
        let y = SnapshotId(1 + rng.below(VERSIONS));
        t.restore(&mut mm, x).unwrap();
        let mut live = rec[&x].model.clone();
        check_state(&mm, &live, &format!("round {round}: restored {x}"));
        assert_eq!(walk(&mm), rec[&x].walk);
        let (sx, sy) = (t.get(x).unwrap(), t.get(y).unwrap());
        check_diff(&sx.diff(sy), &rec[&x].model, &rec[&y].model, &format!("diff {x} -> {y}"));
        check_diff(&sy.diff(sx), &rec[&y].model, &rec[&x].model, &format!("diff {y} -> {x}"));
        for _ in 0..rng.below(3) {
            random_op(&mut mm, &mut live, &mut rng);
        }
        check_diff(&mm.diff_from(sy), &rec[&y].model, &live, &format!("diff_from {y} (live from {x})"));
        check_diff(&mm.diff_from(sx), &rec[&x].model, &live, &format!("diff_from {x} (live from {x})"));
        check_state(&mm, &live, &format!("round {round}: after diff_from"));
    }
}
