//! Commit, decommit and protect: contents, rounding, the one-allocation rule,
//! and what VirtualQuery-style region_info reports afterwards. Section numbers
//! refer to docs/windows-semantics.md.

use vmsnap::{MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind};

use crate::common;
use common::read_vec;

const RW: Protection = Protection::READ_WRITE;
const R: Protection = Protection::READ;
const A: u64 = 0x2000_0000;

fn reserved(size: u64) -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, size, RW, true, RegionKind::Private).unwrap();
    mm
}

/// (start, length, committed, permissions) of every region of the allocation at `A`.
fn layout(mm: &MemoryManager) -> Vec<(u64, u64, bool, Protection)> {
    let end = A + mm.region_info(A).allocation_length;
    let mut out = Vec::new();
    let mut at = A;
    while at < end {
        let i = mm.region_info(at);
        out.push((i.start, i.length, i.is_committed, i.permissions));
        at += i.length;
    }
    out
}

#[test]
fn committed_pages_read_zeros() {
    // §10: newly committed memory is zero-filled.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A + 0x3000, 0x2000, RW).unwrap();
    assert_eq!(read_vec(&mm, A + 0x3000, 0x2000), vec![0; 0x2000]);
    assert_eq!(
        layout(&mm),
        vec![
            (A, 0x3000, false, Protection::empty()),
            (A + 0x3000, 0x2000, true, RW),
            (A + 0x5000, 0xB000, false, Protection::empty()),
        ]
    );
}

#[test]
fn recommit_keeps_contents_and_applies_new_protection() {
    // §4.3: committing committed pages succeeds, keeps their bytes, applies the new protection.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x2000, RW).unwrap();
    mm.write_memory(A + 0xFF0, &[7; 0x20]).unwrap();
    // Re-commit a range that also covers a reserved page.
    mm.commit_memory(A, 0x3000, R).unwrap();
    assert_eq!(read_vec(&mm, A + 0xFF0, 0x20), vec![7; 0x20]);
    assert_eq!(read_vec(&mm, A + 0x2000, 0x1000), vec![0; 0x1000]);
    assert_eq!(layout(&mm), vec![(A, 0x3000, true, R), (A + 0x3000, 0xD000, false, Protection::empty()),]);
    assert_eq!(mm.compute_memory_stats().committed_memory, 0x3000);
}

#[test]
fn decommit_then_commit_gives_zeros() {
    // §6.2 and §10: decommitting discards the contents.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x4000, RW).unwrap();
    mm.write_memory(A, &[0x5A; 0x4000]).unwrap();
    mm.decommit_memory(A + 0x1000, 0x2000).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(mm.read_memory(A + 0x1000, &mut buf), Err(MemoryError::NotCommitted { address: A + 0x1000 }));
    mm.commit_memory(A + 0x1000, 0x2000, RW).unwrap();
    assert_eq!(read_vec(&mm, A, 0x1000), vec![0x5A; 0x1000]);
    assert_eq!(read_vec(&mm, A + 0x1000, 0x2000), vec![0; 0x2000]);
    assert_eq!(read_vec(&mm, A + 0x3000, 0x1000), vec![0x5A; 0x1000]);
}

#[test]
fn decommit_of_already_reserved_pages_succeeds() {
    // §6.2: reserved or already-decommitted pages in the range are fine.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x1000, RW).unwrap();
    mm.decommit_memory(A, 0x10000).unwrap();
    assert_eq!(layout(&mm), vec![(A, 0x10000, false, Protection::empty())]);
    mm.decommit_memory(A, 0x10000).unwrap();
    mm.decommit_memory(A + 0x8000, 0x1000).unwrap();
    assert_eq!(layout(&mm), vec![(A, 0x10000, false, Protection::empty())]);
    assert_eq!(mm.compute_memory_stats().committed_memory, 0);
    assert_eq!(mm.compute_memory_stats().reserved_memory, 0x10000);
}

#[test]
fn commit_range_is_every_page_touched() {
    // §3: a 2-byte range straddling a page boundary commits 2 pages.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A + 0xFFF, 2, RW).unwrap();
    assert_eq!(layout(&mm), vec![(A, 0x2000, true, RW), (A + 0x2000, 0xE000, false, Protection::empty()),]);
    // One byte commits one page.
    mm.commit_memory(A + 0x5123, 1, R).unwrap();
    assert_eq!(mm.region_info(A + 0x5000).length, 0x1000);
    assert_eq!(mm.region_info(A + 0x5000).permissions, R);
    assert_eq!(mm.compute_memory_stats().committed_memory, 0x3000);
}

#[test]
fn decommit_range_is_every_page_touched() {
    // §3: NtFreeVirtualMemory at A+0x1FFF, size 2, MEM_DECOMMIT covers A+0x1000..A+0x3000.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x4000, RW).unwrap();
    mm.decommit_memory(A + 0x1FFF, 2).unwrap();
    assert_eq!(
        layout(&mm),
        vec![
            (A, 0x1000, true, RW),
            (A + 0x1000, 0x2000, false, Protection::empty()),
            (A + 0x3000, 0x1000, true, RW),
            (A + 0x4000, 0xC000, false, Protection::empty()),
        ]
    );
}

#[test]
fn protect_range_is_every_page_touched() {
    // §3: NtProtectVirtualMemory at A+1 with size 1 covers one page; a straddling range two.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x4000, RW).unwrap();
    mm.protect_memory(A + 1, 1, R).unwrap();
    mm.protect_memory(A + 0x2FFF, 2, Protection::READ_EXECUTE).unwrap();
    assert_eq!(
        layout(&mm),
        vec![
            (A, 0x1000, true, R),
            (A + 0x1000, 0x1000, true, RW),
            (A + 0x2000, 0x2000, true, Protection::READ_EXECUTE),
            (A + 0x4000, 0xC000, false, Protection::empty()),
        ]
    );
}

#[test]
fn ranges_crossing_an_allocation_end_are_not_in_one_allocation() {
    // §4.3 and §7: the rounded range must lie inside one allocation.
    let mut mm = reserved(0x10000);
    mm.allocate_memory_at(A + 0x10000, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x10000, RW).unwrap();
    let before = mm.layout_version();
    let err = MemoryError::NotInOneAllocation { address: A + 0xF000, size: 0x2000 };
    assert_eq!(mm.commit_memory(A + 0xF000, 0x2000, R), Err(err.clone()));
    assert_eq!(mm.commit_memory(A + 0xFFFF, 2, R), Err(err.clone()));
    assert_eq!(mm.decommit_memory(A + 0xF000, 0x2000), Err(err.clone()));
    assert_eq!(mm.protect_memory(A + 0xF000, 0x2000, R), Err(err));
    // A small allocation: a range into the unusable tail of its granule.
    mm.allocate_memory_at(A + 0x40000, 0x1000, RW, false, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    let err = MemoryError::NotInOneAllocation { address: A + 0x40000, size: 0x2000 };
    assert_eq!(mm.commit_memory(A + 0x40000, 0x2000, RW), Err(err.clone()));
    assert_eq!(mm.decommit_memory(A + 0x40000, 0x2000), Err(err.clone()));
    assert_eq!(mm.protect_memory(A + 0x40000, 0x2000, R), Err(err));
    assert_eq!(mm.layout_version(), v);
    assert!(v > before);
    assert_eq!(mm.region_info(A + 0xF000).permissions, RW);
    assert_eq!(mm.region_info(A + 0x10000).permissions, RW);
}

#[test]
fn ranges_starting_in_free_memory_are_not_in_one_allocation() {
    // §4.3 (no reservation at the address) and §7 (a free address).
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x10000, RW).unwrap();
    let v = mm.layout_version();
    for (address, size, lo, len) in [
        (A - 0x1000, 0x2000, A - 0x1000, 0x2000),
        (A + 0x10000, 0x1000, A + 0x10000, 0x1000),
        (A + 0x20000 + 5, 1, A + 0x20000, 0x1000),
        (0x10000, 0x1000, 0x10000, 0x1000),
    ] {
        let err = MemoryError::NotInOneAllocation { address: lo, size: len };
        assert_eq!(mm.commit_memory(address, size, RW), Err(err.clone()), "{address:#x}");
        assert_eq!(mm.decommit_memory(address, size), Err(err.clone()), "{address:#x}");
        assert_eq!(mm.protect_memory(address, size, R), Err(err), "{address:#x}");
    }
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.reserved_regions().count(), 1);
}

#[test]
fn protect_of_reserved_pages_is_not_committed() {
    // §7: every page in the range must be committed.
    let mut mm = reserved(0x10000);
    let v = mm.layout_version();
    assert_eq!(mm.protect_memory(A, 0x1000, R), Err(MemoryError::NotCommitted { address: A }));
    assert_eq!(
        mm.protect_memory(A + 0x3456, 0x10, R),
        Err(MemoryError::NotCommitted { address: A + 0x3000 })
    );
    assert_eq!(mm.layout_version(), v);
}

#[test]
fn protect_of_partly_committed_range_is_not_committed_and_changes_nothing() {
    // §7 [W: VirtualProtect of 0xFFFC over a reservation with only its first page committed].
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x1000, RW).unwrap();
    mm.commit_memory(A + 0x3000, 0x1000, RW).unwrap();
    let v = mm.layout_version();
    assert_eq!(mm.protect_memory(A, 0xFFFC, R), Err(MemoryError::NotCommitted { address: A + 0x1000 }));
    assert_eq!(
        mm.protect_memory(A + 0x3000, 0x2000, R),
        Err(MemoryError::NotCommitted { address: A + 0x4000 })
    );
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.region_info(A).permissions, RW);
    assert_eq!(mm.region_info(A + 0x3000).permissions, RW);
}

#[test]
fn protect_returns_old_protection_of_first_page_even_for_mixed_ranges() {
    // §7 [W: 16 pages, first 8 RW and last 8 ERW; protecting all 16 returns RW].
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x8000, RW).unwrap();
    mm.commit_memory(A + 0x8000, 0x8000, Protection::ALL_ACCESS).unwrap();
    assert_eq!(mm.protect_memory(A, 0x10000, R), Ok(RW));
    assert_eq!(layout(&mm), vec![(A, 0x10000, true, R)]);
    // The reverse order of a mixed range.
    mm.protect_memory(A + 0x8000, 0x8000, Protection::ALL_ACCESS).unwrap();
    assert_eq!(mm.protect_memory(A + 0x7000, 0x2000, RW), Ok(R));
    assert_eq!(mm.protect_memory(A + 0x8000, 0x1000, RW), Ok(RW));
    assert_eq!(mm.protect_memory(A + 0x9000, 0x1000, RW), Ok(Protection::ALL_ACCESS));
    // No access is a protection too.
    assert_eq!(mm.protect_memory(A, 0x1000, Protection::empty()), Ok(R));
    assert_eq!(mm.protect_memory(A, 0x1000, RW), Ok(Protection::empty()));
}

#[test]
fn protect_returns_guard_bit_of_first_page() {
    // §7: the old value includes the guard modifier; §9.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x2000, RW | Protection::GUARD).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, RW).unwrap();
    assert_eq!(mm.protect_memory(A, 0x3000, R), Ok(RW | Protection::GUARD));
    assert_eq!(mm.protect_memory(A + 0x1000, 0x1000, R | Protection::GUARD), Ok(R));
    // Mixed range whose first page is not a guard page.
    assert_eq!(mm.protect_memory(A, 0x2000, RW), Ok(R));
    assert_eq!(layout(&mm)[..2], [(A, 0x2000, true, RW), (A + 0x2000, 0x1000, true, R)]);
}

#[test]
fn protect_keeps_bytes() {
    // §7 and §10: changing the protection preserves the contents.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x3000, RW).unwrap();
    let data: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 + 3) as u8).collect();
    mm.write_memory(A, &data).unwrap();
    mm.protect_memory(A, 0x3000, Protection::empty()).unwrap();
    assert_eq!(read_vec(&mm, A, 0x3000), data);
    mm.protect_memory(A + 0x1000, 0x1000, R | Protection::GUARD).unwrap();
    mm.protect_memory(A, 0x3000, Protection::ALL_ACCESS).unwrap();
    assert_eq!(read_vec(&mm, A, 0x3000), data);
}

#[test]
fn region_info_splits_on_protection_changes() {
    // §7 and §8: a region never spans pages of different protection (GUARD included).
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x8000, RW).unwrap();
    mm.protect_memory(A + 0x2000, 0x1000, R).unwrap();
    mm.protect_memory(A + 0x3000, 0x1000, RW | Protection::GUARD).unwrap();
    assert_eq!(
        layout(&mm),
        vec![
            (A, 0x2000, true, RW),
            (A + 0x2000, 0x1000, true, R),
            (A + 0x3000, 0x1000, true, RW | Protection::GUARD),
            (A + 0x4000, 0x4000, true, RW),
            (A + 0x8000, 0x8000, false, Protection::empty()),
        ]
    );
    // start is page_down(address), not the start of the region.
    assert_eq!(
        mm.region_info(A + 0x1234),
        RegionInfo {
            start: A + 0x1000,
            length: 0x1000,
            allocation_base: A,
            allocation_length: 0x10000,
            is_reserved: true,
            is_committed: true,
            permissions: RW,
            initial_permissions: RW,
            kind: RegionKind::Private,
            attributes: 0,
        }
    );
    // Protecting back merges the regions.
    mm.protect_memory(A + 0x2000, 0x2000, RW).unwrap();
    assert_eq!(layout(&mm), vec![(A, 0x8000, true, RW), (A + 0x8000, 0x8000, false, Protection::empty()),]);
}

#[test]
fn initial_permissions_never_change() {
    // §4.3 and §8: AllocationProtect never changes after the allocation is created.
    let mut mm = MemoryManager::new();
    let initial = RW | Protection::GUARD;
    mm.allocate_memory_at(A, 0x10000, initial, false, RegionKind::Private).unwrap();
    let check = |mm: &MemoryManager, pages: u64| {
        for page in 0..pages {
            assert_eq!(mm.region_info(A + page * PAGE_SIZE).initial_permissions, initial);
        }
        assert_eq!(mm.reserved_regions().next().unwrap().initial_permissions, initial);
    };
    check(&mm, 16);
    assert_eq!(mm.region_info(A).permissions, initial);
    mm.protect_memory(A, 0x4000, R).unwrap();
    check(&mm, 16);
    mm.decommit_memory(A + 0x4000, 0x4000).unwrap();
    check(&mm, 16);
    mm.commit_memory(A + 0x4000, 0x8000, Protection::EXECUTE).unwrap();
    check(&mm, 16);
    mm.release_memory(A + 0xF000, 0x1000).unwrap();
    check(&mm, 15);
}

#[test]
fn commit_and_protect_reject_invalid_protection_first() {
    // §5 and §7: an invalid protection is STATUS_INVALID_PAGE_PROTECTION, checked first.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x1000, RW).unwrap();
    let v = mm.layout_version();
    for p in [
        Protection::WRITE,
        Protection::GUARD,
        Protection::WRITE | Protection::EXECUTE,
        Protection::from_bits_retain(0x40),
    ] {
        assert_eq!(mm.commit_memory(A, 0x1000, p), Err(MemoryError::InvalidProtection(p)));
        assert_eq!(mm.protect_memory(A, 0x1000, p), Err(MemoryError::InvalidProtection(p)));
        // Even where the range itself is also wrong.
        assert_eq!(mm.protect_memory(A + 0x1000, 0x1000, p), Err(MemoryError::InvalidProtection(p)));
        assert_eq!(mm.commit_memory(0x10000, 0x1000, p), Err(MemoryError::InvalidProtection(p)));
    }
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.region_info(A).permissions, RW);
}

#[test]
fn commit_with_guard_and_noaccess_protections_is_reported() {
    // §8: committed pages report the current protection with its modifiers.
    let mut mm = reserved(0x10000);
    mm.commit_memory(A, 0x1000, Protection::empty()).unwrap();
    mm.commit_memory(A + 0x1000, 0x1000, R | Protection::GUARD).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, Protection::EXECUTE | Protection::GUARD).unwrap();
    assert_eq!(
        layout(&mm),
        vec![
            (A, 0x1000, true, Protection::empty()),
            (A + 0x1000, 0x1000, true, R | Protection::GUARD),
            (A + 0x2000, 0x1000, true, Protection::EXECUTE | Protection::GUARD),
            (A + 0x3000, 0xD000, false, Protection::empty()),
        ]
    );
}
