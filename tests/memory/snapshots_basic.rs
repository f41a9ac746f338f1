//! Snapshots: round trips, restoring older versions, reading a frozen version
//! (also from another thread), and diffs (the crate docs, "Versions").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vmsnap::{
    Access, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind, ReservedRegion,
    Snapshot,
};

const RW: Protection = Protection::READ_WRITE;
const R: Protection = Protection::READ;
const G: Protection = Protection::GUARD;
const A: u64 = 0x6000_0000;
const PAGE: usize = PAGE_SIZE as usize;

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

fn page(i: u64) -> u64 {
    A + i * PAGE_SIZE
}

fn changed(a: &Snapshot, b: &Snapshot) -> Vec<u64> {
    a.diff(b).changed_pages().collect()
}

/// Every region of the address space between `A` and `A + 0x40000`.
fn layout(mm: &MemoryManager) -> Vec<RegionInfo> {
    let mut out = Vec::new();
    let mut at = A;
    while at < A + 0x40000 {
        let i = mm.region_info(at);
        out.push(i);
        at += i.length;
    }
    out
}

#[test]
fn restore_round_trips_bytes_allocations_protections_and_guard_bits() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x4000, RW).unwrap();
    mm.protect_memory(page(1), PAGE_SIZE, R).unwrap();
    mm.protect_memory(page(2), PAGE_SIZE, RW | G).unwrap();
    mm.write_memory(page(0) + 0x10, b"before").unwrap();
    mm.write_memory(page(3), &[0x33; PAGE]).unwrap();
    let layout_before = layout(&mm);
    let regions_before: Vec<ReservedRegion> = mm.reserved_regions().collect();
    let stats_before = mm.compute_memory_stats();
    let s = mm.snapshot();

    // Change everything.
    mm.write_memory(page(0) + 0x10, b"AFTER!").unwrap();
    mm.write_memory(page(3), &[0x44; PAGE]).unwrap();
    mm.protect_memory(page(1), PAGE_SIZE, Protection::empty()).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(mm.guest_read(page(2), &mut buf), Err(MemoryError::GuardPageViolation { .. })));
    mm.decommit_memory(page(3), PAGE_SIZE).unwrap();
    mm.commit_memory(page(8), PAGE_SIZE, RW).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0x3000, R, false, RegionKind::Image).unwrap();
    mm.release_memory(A + 0xC000, 0x4000).unwrap();
    mm.set_default_allocation_address(A);

    mm.restore(&s);
    assert_eq!(layout(&mm), layout_before);
    assert_eq!(mm.reserved_regions().collect::<Vec<_>>(), regions_before);
    let stats = mm.compute_memory_stats();
    assert_eq!(
        (stats.reserved_memory, stats.committed_memory),
        (stats_before.reserved_memory, stats_before.committed_memory)
    );
    assert_eq!(read_vec(&mm, page(0) + 0x10, 6), b"before".to_vec());
    assert_eq!(read_vec(&mm, page(3), PAGE), vec![0x33; PAGE]);
    assert_eq!(mm.default_allocation_address(), s.default_allocation_address());
    // The guard page is armed again.
    assert_eq!(mm.region_info(page(2)).permissions, RW | G);
    assert_eq!(
        mm.guest_read(page(2), &mut buf),
        Err(MemoryError::GuardPageViolation { address: page(2), access: Access::Read })
    );
    assert_eq!(
        mm.guest_write(page(1), b"x"),
        Err(MemoryError::AccessViolation { address: page(1), access: Access::Write })
    );
}

#[test]
fn restore_to_a_non_latest_snapshot() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    let mut snaps = Vec::new();
    for i in 0..5u8 {
        mm.write_memory(A, &[i; 16]).unwrap();
        mm.write_memory(page(u64::from(i) + 1), &[i; PAGE]).unwrap();
        snaps.push(mm.snapshot());
    }
    mm.restore(&snaps[1]);
    assert_eq!(read_vec(&mm, A, 16), vec![1; 16]);
    assert_eq!(read_vec(&mm, page(2), PAGE), vec![1; PAGE]);
    assert_eq!(read_vec(&mm, page(3), PAGE), vec![0; PAGE]);
    // Branch off the old version, then jump to the newest of the first branch and back.
    mm.write_memory(page(3), &[0xBB; PAGE]).unwrap();
    let branch = mm.snapshot();
    mm.restore(&snaps[4]);
    assert_eq!(read_vec(&mm, A, 16), vec![4; 16]);
    assert_eq!(read_vec(&mm, page(3), PAGE), vec![2; PAGE]);
    assert_eq!(read_vec(&mm, page(5), PAGE), vec![4; PAGE]);
    mm.restore(&branch);
    assert_eq!(read_vec(&mm, page(3), PAGE), vec![0xBB; PAGE]);
    assert_eq!(read_vec(&mm, page(5), PAGE), vec![0; PAGE]);
    mm.restore(&snaps[0]);
    assert_eq!(read_vec(&mm, A, 16), vec![0; 16]);
    assert_eq!(read_vec(&mm, page(1), PAGE), vec![0; PAGE]);
    assert_eq!(read_vec(&mm, page(2), PAGE), vec![0; PAGE]);
}

#[test]
fn restore_discards_unsnapshotted_writes_and_allocations() {
    let mut mm = MemoryManager::new();
    let empty = mm.snapshot();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(A, &[1; PAGE]).unwrap();
    mm.restore(&empty);
    assert_eq!(mm.reserved_regions().count(), 0);
    assert_eq!(mm.read_memory(A, &mut [0u8; 1]), Err(MemoryError::NotAllocated { address: A }));
    // The same range can be allocated again and reads zeros.
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    assert_eq!(read_vec(&mm, A, PAGE), vec![0; PAGE]);
}

#[test]
fn snapshot_is_frozen_while_the_manager_moves_on() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x2000, RW).unwrap();
    mm.protect_memory(page(1), PAGE_SIZE, R | G).unwrap();
    mm.write_memory(A + 0x100, b"frozen").unwrap();
    let s = mm.snapshot();
    mm.write_memory(A + 0x100, b"thawed").unwrap();
    mm.protect_memory(page(1), PAGE_SIZE, RW).unwrap();
    mm.commit_memory(page(4), PAGE_SIZE, RW).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x1000, RW, false, RegionKind::Image).unwrap();
    mm.release_memory(page(15), PAGE_SIZE).unwrap();

    assert_eq!(snap_vec(&s, A + 0x100, 6), b"frozen".to_vec());
    assert_eq!(
        s.region_info(page(1)),
        RegionInfo {
            start: page(1),
            length: PAGE_SIZE,
            allocation_base: A,
            allocation_length: 0x10000,
            is_reserved: true,
            is_committed: true,
            permissions: R | G,
            initial_permissions: RW,
            kind: RegionKind::Private,
            attributes: 0,
        }
    );
    let i = s.region_info(page(2));
    assert_eq!((i.start, i.length, i.is_committed), (page(2), 0xE000, false));
    assert_eq!(s.region_info(A + 0x10000).kind, RegionKind::Free);
    assert_eq!(
        s.reserved_regions().collect::<Vec<_>>(),
        vec![ReservedRegion {
            base: A,
            length: 0x10000,
            kind: RegionKind::Private,
            initial_permissions: RW,
            attributes: 0
        }]
    );
    let stats = s.compute_memory_stats();
    assert_eq!((stats.reserved_memory, stats.committed_memory, stats.allocation_count), (0x10000, 0x2000, 1));
    // Host-view errors, as the manager gave them at the time.
    let mut buf = [0u8; 4];
    assert_eq!(s.read_memory(page(4), &mut buf), Err(MemoryError::NotCommitted { address: page(4) }));
    assert_eq!(s.read_memory(A + 0x10000, &mut buf), Err(MemoryError::NotAllocated { address: A + 0x10000 }));
    assert_eq!(s.read_memory(A, &mut []), Ok(()));
    // A snapshot reads guard pages without firing them.
    assert_eq!(snap_vec(&s, page(1), 4), vec![0; 4]);
    assert_eq!(s.region_info(page(1)).permissions, R | G);
    // Clones are the same version.
    let c = s.clone();
    assert_eq!(c.layout_version(), s.layout_version());
    assert_eq!(snap_vec(&c, A + 0x100, 6), b"frozen".to_vec());
    assert!(s.diff(&c).is_empty());
}

#[test]
fn snapshot_is_readable_from_another_thread_while_the_manager_writes() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x40000, RW, false, RegionKind::Private).unwrap();
    for i in 0..64u64 {
        mm.write_memory(page(i), &[i as u8; PAGE]).unwrap();
    }
    let s = mm.snapshot();
    let reads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut buf = vec![0u8; PAGE];
            for round in 0..50u64 {
                for i in 0..64u64 {
                    s.read_memory(page(i), &mut buf).unwrap();
                    assert!(buf.iter().all(|&b| b == i as u8), "round {round} page {i}");
                }
                assert!(s.region_info(A).is_committed);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
        for round in 0..50u8 {
            for i in 0..64u64 {
                mm.write_memory(page(i), &[round.wrapping_add(100); PAGE]).unwrap();
            }
            if round.is_multiple_of(10) {
                let _ = mm.snapshot();
            }
        }
        reader.join().unwrap();
    });
    assert_eq!(reads.load(Ordering::Relaxed), 50);
    // A clone sent to another thread (Snapshot: Send + Sync + Clone).
    let shared = Arc::new(s.clone());
    let t = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            shared.read_memory(page(7), &mut b).unwrap();
            b[0]
        })
    };
    assert_eq!(t.join().unwrap(), 7);
    assert_eq!(read_vec(&mm, page(7), 1), vec![149]);
}

#[test]
fn diff_lists_changed_pages_ascending_in_either_order() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x8000, RW).unwrap();
    mm.write_memory(page(0), &[1; PAGE]).unwrap();
    mm.write_memory(page(2), &[2; PAGE]).unwrap();
    mm.write_memory(page(6), &[6; 16]).unwrap();
    let s0 = mm.snapshot();

    mm.write_memory(page(7) + 5, &[7]).unwrap(); // bytes changed
    mm.write_memory(page(0), &[1; PAGE]).unwrap(); // rewritten with identical bytes
    mm.write_memory(page(4), &[0; PAGE]).unwrap(); // zeros over zeros
    mm.decommit_memory(page(2), PAGE_SIZE).unwrap(); // decommitted (had bytes)
    mm.decommit_memory(page(3), PAGE_SIZE).unwrap(); // decommitted (was zero)
    mm.commit_memory(page(9), PAGE_SIZE, RW).unwrap(); // newly committed (zeros)
    mm.write_memory(page(1) + 0xFFE, &[9, 9]).unwrap(); // last bytes of page 1
    let s1 = mm.snapshot();
    let expected = vec![page(1), page(2), page(3), page(7), page(9)];
    assert_eq!(changed(&s0, &s1), expected);
    assert_eq!(changed(&s1, &s0), expected);
    assert!(s0.diff(&s0).is_empty());
    assert!(s1.diff(&s1).is_empty());
}

#[test]
fn diff_ignores_pages_rewritten_with_identical_bytes() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x4000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(A, &[5; 0x4000]).unwrap();
    let s0 = mm.snapshot();
    mm.write_memory(A, &[5; 0x4000]).unwrap();
    // Changed and changed back.
    mm.write_memory(page(1), &[6; PAGE]).unwrap();
    mm.write_memory(page(1), &[5; PAGE]).unwrap();
    let s1 = mm.snapshot();
    assert!(s0.diff(&s1).is_empty(), "{:x?}", changed(&s0, &s1));
    // Changed in an intermediate snapshot, back in the last one.
    mm.write_memory(page(2), &[6; PAGE]).unwrap();
    let s2 = mm.snapshot();
    mm.write_memory(page(2), &[5; PAGE]).unwrap();
    let s3 = mm.snapshot();
    assert_eq!(changed(&s1, &s2), vec![page(2)]);
    assert!(s1.diff(&s3).is_empty());
    assert!(s0.diff(&s3).is_empty());
}

#[test]
fn diff_reports_allocations_and_releases_of_committed_memory() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x3000, RW, false, RegionKind::Private).unwrap();
    let s0 = mm.snapshot();
    mm.allocate_memory_at(A + 0x10000, 0x2000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0x2000, RW, true, RegionKind::Private).unwrap();
    mm.release_memory(page(1), PAGE_SIZE).unwrap();
    let s1 = mm.snapshot();
    assert_eq!(changed(&s0, &s1), vec![page(1), A + 0x10000, A + 0x11000]);
    // Across a restore: the diff is about the versions, not the path between them.
    mm.restore(&s0);
    mm.write_memory(page(2), b"z").unwrap();
    let s2 = mm.snapshot();
    assert_eq!(changed(&s0, &s2), vec![page(2)]);
    assert_eq!(changed(&s1, &s2), vec![page(1), page(2), A + 0x10000, A + 0x11000]);
}

#[test]
fn mmio_regions_survive_restore_with_their_handlers() {
    let mut mm = MemoryManager::new();
    mm.allocate_mmio(A, 0x1000, |off, buf| buf.fill(off as u8 + 1), |_, _| {}).unwrap();
    let s = mm.snapshot();
    mm.release_memory(A, 0).unwrap();
    assert_eq!(mm.region_kind(A), RegionKind::Free);
    mm.restore(&s);
    assert_eq!(mm.region_kind(A), RegionKind::Mmio);
    assert_eq!(read_vec(&mm, A + 4, 2), vec![5, 5]);
    assert_eq!(snap_vec(&s, A + 9, 1), vec![10]);
}

#[test]
fn many_dirty_pages_across_index_chunks_survive_snapshot_restore_cycles() {
    // Hundreds of dirty pages on both sides of a 16 MiB boundary, decommits of small
    // and large ranges between snapshots, then restores in every direction.
    let mut mm = MemoryManager::new();
    let base = 0x1_0000_0000u64;
    let boundary = base + 0x100_0000;
    mm.allocate_memory_at(base, 0x200_0000, RW, false, RegionKind::Private).unwrap();
    let pages: Vec<u64> = (1..=300u64)
        .map(|i| boundary - i * PAGE_SIZE)
        .chain((0..300u64).map(|i| boundary + i * PAGE_SIZE))
        .collect();
    // Never zero, and different for every tag.
    let val = |tag: u8, k: usize| tag * 50 + (k % 50) as u8 + 1;
    let fill = |mm: &mut MemoryManager, tag: u8| {
        for (k, &p) in pages.iter().enumerate() {
            mm.write_memory(p + 8, &[val(tag, k); 16]).unwrap();
        }
    };
    let check = |mm: &MemoryManager, tag: Option<u8>, zero_below_boundary: bool| {
        for (k, &p) in pages.iter().enumerate() {
            let want = match tag {
                Some(_) if zero_below_boundary && p < boundary => 0,
                Some(t) => val(t, k),
                None => 0,
            };
            assert_eq!(read_vec(mm, p + 8, 16), vec![want; 16], "page {p:#x}");
        }
    };
    fill(&mut mm, 1);
    assert_eq!(mm.compute_memory_stats().dirty_pages, 600);
    let s1 = mm.snapshot();
    assert_eq!(mm.compute_memory_stats().dirty_pages, 0);
    fill(&mut mm, 2);
    // A small range (fewer pages than are dirty) and a large one (more).
    mm.decommit_memory(pages[1], 2 * PAGE_SIZE).unwrap();
    mm.decommit_memory(base, 0x100_0000).unwrap();
    mm.commit_memory(base, 0x100_0000, RW).unwrap();
    check(&mm, Some(2), true);
    let s2 = mm.snapshot();
    let mut expected = pages.clone();
    expected.sort();
    assert_eq!(changed(&s1, &s2), expected);
    mm.restore(&s1);
    assert_eq!(mm.compute_memory_stats().dirty_pages, 0);
    check(&mm, Some(1), false);
    fill(&mut mm, 3);
    mm.restore(&s2);
    check(&mm, Some(2), true);
    fill(&mut mm, 4);
    check(&mm, Some(4), false);
    mm.restore(&s1);
    check(&mm, Some(1), false);
    assert_eq!(snap_vec(&s2, boundary + 8, 1), vec![val(2, 300)]);
    assert_eq!(snap_vec(&s2, boundary - PAGE_SIZE + 8, 1), vec![0]);
}
