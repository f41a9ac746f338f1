//! The layout version (`MemoryManager::layout_version`): strictly increases on every
//! successful layout change, is unchanged by everything else, and never repeats.

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind};

const RW: Protection = Protection::READ_WRITE;
const A: u64 = 0x5000_0000;

/// Records every layout version seen and checks the history is strictly increasing.
struct Tracker {
    seen: Vec<u64>,
}

impl Tracker {
    fn new(mm: &MemoryManager) -> Self {
        Tracker { seen: vec![mm.layout_version()] }
    }

    fn last(&self) -> u64 {
        *self.seen.last().unwrap()
    }

    /// After a successful layout change: greater than every earlier value.
    fn changed(&mut self, mm: &MemoryManager, what: &str) {
        let v = mm.layout_version();
        assert!(v > self.last(), "{what}: {v} not above {}", self.last());
        assert!(!self.seen.contains(&v), "{what}: {v} repeats");
        self.seen.push(v);
    }

    /// After anything that is not a layout change.
    fn unchanged(&self, mm: &MemoryManager, what: &str) {
        assert_eq!(mm.layout_version(), self.last(), "{what} changed the layout version");
    }
}

#[test]
fn new_manager_starts_with_a_layout_version() {
    let mm = MemoryManager::new();
    let t = Tracker::new(&mm);
    t.unchanged(&mm, "nothing");
}

#[test]
fn every_successful_layout_change_increases_it() {
    let mut mm = MemoryManager::new();
    let mut t = Tracker::new(&mm);
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    t.changed(&mm, "allocate_memory_at");
    let b = mm.allocate_memory(0x2000, RW, false, 0, RegionKind::Private).unwrap();
    t.changed(&mm, "allocate_memory");
    mm.commit_memory(A, 0x4000, RW).unwrap();
    t.changed(&mm, "commit");
    // Re-committing committed pages with the same protection still counts as a call that succeeded.
    mm.commit_memory(A, 0x1000, RW).unwrap();
    t.changed(&mm, "re-commit");
    mm.decommit_memory(A + 0x3000, 0x1000).unwrap();
    t.changed(&mm, "decommit");
    mm.decommit_memory(A + 0x8000, 0x1000).unwrap();
    t.changed(&mm, "decommit of reserved pages");
    assert_eq!(mm.protect_memory(A, 0x1000, Protection::READ), Ok(RW));
    t.changed(&mm, "protect");
    mm.protect_memory(A + 0x1000, 0x1000, RW | Protection::GUARD).unwrap();
    t.changed(&mm, "protect with guard");
    mm.release_memory(A + 0xF000, 0x1000).unwrap();
    t.changed(&mm, "partial release");
    mm.release_memory(b, 0).unwrap();
    t.changed(&mm, "release");
    mm.allocate_mmio(A + 0x100000, 0x1000, |_, buf| buf.fill(1), |_, _| {}).unwrap();
    t.changed(&mm, "allocate_mmio");
    mm.release_memory(A + 0x100000, 0).unwrap();
    t.changed(&mm, "release mmio");
    mm.unmap_all_memory();
    t.changed(&mm, "unmap_all_memory");
    mm.unmap_all_memory();
    t.changed(&mm, "unmap_all_memory of nothing");
}

#[test]
fn a_guard_page_firing_increases_it() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x2000, RW | Protection::GUARD, false, RegionKind::Private).unwrap();
    let mut t = Tracker::new(&mm);
    let mut buf = [0u8; 4];
    assert!(mm.guest_read(A, &mut buf).is_err());
    t.changed(&mm, "guard fired by read");
    assert!(mm.guest_write(A + 0x1000, &buf).is_err());
    t.changed(&mm, "guard fired by write");
    mm.guest_read(A, &mut buf).unwrap();
    mm.guest_write(A + 0x1000, &buf).unwrap();
    t.unchanged(&mm, "guest access after the guard fired");
}

#[test]
fn failed_calls_leave_it_unchanged() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x1000, Protection::READ).unwrap();
    let t = Tracker::new(&mm);
    let mut buf = [0u8; 8];
    assert!(mm.allocate_memory_at(A, 0x1000, RW, false, RegionKind::Private).is_err());
    assert!(mm.allocate_memory_at(A + 1, 0x1000, RW, false, RegionKind::Private).is_err());
    assert!(mm.allocate_memory(0, RW, false, 0, RegionKind::Private).is_err());
    assert!(mm.allocate_memory(u64::MAX, RW, false, 0, RegionKind::Private).is_err());
    assert!(mm.commit_memory(A + 0xF000, 0x2000, RW).is_err());
    assert!(mm.commit_memory(A, 0x1000, Protection::WRITE).is_err());
    assert!(mm.decommit_memory(A + 0x20000, 0x1000).is_err());
    assert!(mm.protect_memory(A, 0x2000, RW).is_err());
    assert!(mm.release_memory(A + 0x1000, 0).is_err());
    assert!(mm.release_memory(A + 0x20000, 0).is_err());
    assert!(mm.release_memory(A + 0xF000, 0x2000).is_err());
    assert!(mm.allocate_mmio(A, 0x1000, |_, _| {}, |_, _| {}).is_err());
    assert!(mm.read_memory(A + 0x1000, &mut buf).is_err());
    assert!(mm.write_memory(A + 0x1000, &buf).is_err());
    assert!(mm.guest_write(A, &buf).is_err());
    assert!(mm.guest_fetch(A, &mut buf).is_err());
    assert!(mm.guest_read(A + 0x20000, &mut buf).is_err());
    t.unchanged(&mm, "failed calls");
}

#[test]
fn reads_writes_queries_and_snapshots_leave_it_unchanged() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    let t = Tracker::new(&mm);
    let mut buf = [0u8; 0x1800];
    mm.write_memory(A + 0x800, &[3; 0x1800]).unwrap();
    mm.read_memory(A + 0x800, &mut buf).unwrap();
    assert!(mm.try_write_memory(A, b"x"));
    assert!(mm.try_read_memory(A, &mut buf));
    mm.guest_write(A + 0x2000, &[4; 0x1800]).unwrap();
    mm.guest_read(A + 0x2000, &mut buf).unwrap();
    t.unchanged(&mm, "reads and writes");
    let _ = mm.region_info(A);
    let _ = mm.region_kind(A);
    let _ = mm.find_free_allocation_base(0x1000, 0);
    let _ = mm.overlaps_reserved_region(A, 0x1000);
    let _ = mm.reserved_regions().count();
    let _ = mm.compute_memory_stats();
    let _ = mm.default_allocation_address();
    mm.set_default_allocation_address(A + 0x100000);
    t.unchanged(&mm, "queries and set_default_allocation_address");
    let s = mm.snapshot();
    assert_eq!(s.layout_version(), t.last());
    let _ = mm.snapshot();
    t.unchanged(&mm, "snapshot()");
    let _ = s.diff(&mm.snapshot());
    t.unchanged(&mm, "diff");
}

#[test]
fn restore_increases_it_and_it_never_repeats() {
    let mut mm = MemoryManager::new();
    let mut t = Tracker::new(&mm);
    let s0 = mm.snapshot();
    assert_eq!(s0.layout_version(), t.last());
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    t.changed(&mm, "allocate");
    let s1 = mm.snapshot();
    assert_eq!(s1.layout_version(), t.last());
    mm.protect_memory(A, 0x1000, Protection::READ).unwrap();
    t.changed(&mm, "protect");
    let s2 = mm.snapshot();

    mm.restore(&s0);
    t.changed(&mm, "restore to the oldest snapshot");
    // A snapshot keeps the value it was taken at.
    assert_eq!(s0.layout_version(), t.seen[0]);
    // Redo the same changes: the versions do not repeat those of the first branch.
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    t.changed(&mm, "allocate on a new branch");
    mm.protect_memory(A, 0x1000, Protection::READ).unwrap();
    t.changed(&mm, "protect on a new branch");
    mm.restore(&s2);
    t.changed(&mm, "restore to a snapshot of another branch");
    mm.restore(&s1);
    t.changed(&mm, "restore to a middle snapshot");
    mm.restore(&s1);
    t.changed(&mm, "restore to the same snapshot again");
    let s3 = mm.snapshot();
    assert_eq!(s3.layout_version(), t.last());
    assert_eq!(s1.layout_version(), t.seen[1]);
    assert_eq!(s2.layout_version(), t.seen[2]);
    for _ in 0..3 {
        mm.commit_memory(A + PAGE_SIZE, PAGE_SIZE, RW).unwrap();
        t.changed(&mm, "commit");
        mm.restore(&s3);
        t.changed(&mm, "restore");
    }
}
