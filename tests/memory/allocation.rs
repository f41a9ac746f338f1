//! Allocation, address selection, queries over allocations, and release
//! (whole and partial). Section numbers refer to docs/windows-semantics.md.

use vmsnap::{
    ALLOCATION_GRANULARITY, DEFAULT_ALLOCATION_ADDRESS_32BIT, DEFAULT_ALLOCATION_ADDRESS_64BIT,
    MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind,
    ReservedRegion, USER_SPACE_END,
};

use crate::common;
use common::{free_info, read_vec};

const RW: Protection = Protection::READ_WRITE;
const A: u64 = 0x1000_0000;

fn regions(mm: &MemoryManager) -> Vec<(u64, u64)> {
    mm.reserved_regions().map(|r| (r.base, r.length)).collect()
}

// ------------------------------------------------------------ allocate_memory_at

#[test]
fn allocate_at_requires_64k_aligned_address() {
    // §2: allocation granularity is 64 KiB.
    let mut mm = MemoryManager::new();
    for address in [A + PAGE_SIZE, A + 1, A + 0x8000, A - PAGE_SIZE] {
        assert_eq!(
            mm.allocate_memory_at(address, 0x1000, RW, false, RegionKind::Private),
            Err(MemoryError::Misaligned { address, alignment: ALLOCATION_GRANULARITY })
        );
    }
    assert_eq!(mm.reserved_regions().count(), 0);
    assert_eq!(mm.layout_version(), 0);
}

#[test]
fn allocate_at_below_min_allocation_address_is_outside_user_space() {
    // §2: the first 64 KiB (NULL included) can never be allocated.
    let mut mm = MemoryManager::new();
    assert_eq!(
        mm.allocate_memory_at(0, 0x1000, RW, false, RegionKind::Private),
        Err(MemoryError::OutsideUserSpace { address: 0, size: 0x1000 })
    );
    assert_eq!(mm.reserved_regions().count(), 0);
    // The lowest legal base works.
    mm.allocate_memory_at(MIN_ALLOCATION_ADDRESS, 0x1000, RW, false, RegionKind::Private).unwrap();
    assert_eq!(regions(&mm), vec![(MIN_ALLOCATION_ADDRESS, 0x1000)]);
}

#[test]
fn allocate_at_rounds_size_up_to_whole_pages() {
    // §3: the reserved size is PAGE_UP(size); it need not be a multiple of 64 KiB.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 1, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x1234, RW, true, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0xFFFC, RW, true, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x30000, 0x2000, RW, true, RegionKind::Private).unwrap();
    assert_eq!(
        regions(&mm),
        vec![(A, 0x1000), (A + 0x10000, 0x2000), (A + 0x20000, 0x10000), (A + 0x30000, 0x2000)]
    );
    let info = mm.region_info(A + 0x10000);
    assert_eq!(info.length, 0x2000);
    assert_eq!(info.allocation_length, 0x2000);
    // The tail of the granule after a small reservation is free.
    assert_eq!(mm.region_info(A + 0x12000), free_info(A + 0x12000, 0xE000));
}

#[test]
fn allocate_at_over_existing_allocation_is_conflicting_addresses() {
    // §4.2: the range must be completely free.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x20000, RW, true, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    // Same base.
    assert_eq!(
        mm.allocate_memory_at(A, 0x1000, RW, false, RegionKind::Private),
        Err(MemoryError::ConflictingAddresses { address: A, size: 0x1000, existing: A })
    );
    // Inside.
    assert_eq!(
        mm.allocate_memory_at(A + 0x10000, 0x1000, RW, false, RegionKind::Private),
        Err(MemoryError::ConflictingAddresses { address: A + 0x10000, size: 0x1000, existing: A })
    );
    // Starting below, running one byte into it.
    assert_eq!(
        mm.allocate_memory_at(A - 0x10000, 0x10001, RW, false, RegionKind::Private),
        Err(MemoryError::ConflictingAddresses { address: A - 0x10000, size: 0x10001, existing: A })
    );
    // Covering it completely.
    assert_eq!(
        mm.allocate_memory_at(A - 0x10000, 0x40000, RW, true, RegionKind::Image),
        Err(MemoryError::ConflictingAddresses { address: A - 0x10000, size: 0x40000, existing: A })
    );
    assert_eq!(regions(&mm), vec![(A, 0x20000)]);
    assert_eq!(mm.layout_version(), v);
    // Exactly adjacent below is fine.
    mm.allocate_memory_at(A - 0x10000, 0x10000, RW, true, RegionKind::Private).unwrap();
    assert_eq!(regions(&mm), vec![(A - 0x10000, 0x10000), (A, 0x20000)]);
}

#[test]
fn allocate_at_reserve_only_leaves_pages_reserved() {
    // §4.2: a reserve alone leaves every page MEM_RESERVE with Protect 0.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x3000, RW, true, RegionKind::Private).unwrap();
    assert_eq!(
        mm.region_info(A + 0x1800),
        RegionInfo {
            start: A + 0x1000,
            length: 0x2000,
            allocation_base: A,
            allocation_length: 0x3000,
            is_reserved: true,
            is_committed: false,
            permissions: Protection::empty(),
            initial_permissions: RW,
            kind: RegionKind::Private,
            attributes: 0,
        }
    );
    let mut buf = [0u8; 4];
    assert_eq!(mm.read_memory(A, &mut buf), Err(MemoryError::NotCommitted { address: A }));
    let stats = mm.compute_memory_stats();
    assert_eq!(stats.reserved_memory, 0x3000);
    assert_eq!(stats.committed_memory, 0);
}

#[test]
fn allocate_at_committed_commits_whole_allocation_with_zeros() {
    // §4.2 (reserve with commit commits the whole allocation) and §10 (zero-filled).
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x2800, Protection::READ, false, RegionKind::Image).unwrap();
    assert_eq!(
        mm.region_info(A),
        RegionInfo {
            start: A,
            length: 0x3000,
            allocation_base: A,
            allocation_length: 0x3000,
            is_reserved: true,
            is_committed: true,
            permissions: Protection::READ,
            initial_permissions: Protection::READ,
            kind: RegionKind::Image,
            attributes: 0,
        }
    );
    assert_eq!(read_vec(&mm, A, 0x3000), vec![0u8; 0x3000]);
    let stats = mm.compute_memory_stats();
    assert_eq!(stats.reserved_memory, 0x3000);
    assert_eq!(stats.committed_memory, 0x3000);
}

#[test]
fn allocate_at_reuses_base_after_release_with_fresh_zero_pages() {
    // §4.2: a base that is free again after a release can be reused; §10: zeros.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x2000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(A + 0x10, &[0xAB; 0x1800]).unwrap();
    mm.release_memory(A, 0).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
    mm.allocate_memory_at(A, 0x2000, Protection::READ, false, RegionKind::Private).unwrap();
    assert_eq!(regions(&mm), vec![(A, 0x2000)]);
    assert_eq!(read_vec(&mm, A, 0x2000), vec![0u8; 0x2000]);
    assert_eq!(mm.region_info(A).permissions, Protection::READ);
}

#[test]
fn allocate_at_top_of_user_space_fits_exactly() {
    // §2: the exclusive end of user space is USER_SPACE_END.
    let mut mm = MemoryManager::new();
    let top = USER_SPACE_END - 0x10000;
    assert_eq!(
        mm.allocate_memory_at(top, 0x10001, RW, true, RegionKind::Private),
        Err(MemoryError::OutsideUserSpace { address: top, size: 0x10001 })
    );
    mm.allocate_memory_at(top, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(USER_SPACE_END - 4, &[1, 2, 3, 4]).unwrap();
    assert_eq!(read_vec(&mm, USER_SPACE_END - 4, 4), vec![1, 2, 3, 4]);
}

// ------------------------------------------------------------------ allocate_memory

#[test]
fn allocate_memory_first_fit_starts_at_default_address() {
    // §4.5: bottom-up, 64K-aligned.
    let mut mm = MemoryManager::new();
    let a = mm.allocate_memory(0x1000, RW, false, 0, RegionKind::Private).unwrap();
    assert_eq!(a, DEFAULT_ALLOCATION_ADDRESS_64BIT);
    assert_eq!(regions(&mm), vec![(a, 0x1000)]);
    assert!(mm.region_info(a).is_committed);
}

#[test]
fn allocate_memory_skips_unusable_tail_of_granule_after_small_reservation() {
    // §3: the tail of the last 64K granule is free but cannot hold an allocation.
    let mut mm = MemoryManager::new();
    let a = mm.allocate_memory(0x1000, RW, true, 0, RegionKind::Private).unwrap();
    let b = mm.allocate_memory(0x1000, RW, true, 0, RegionKind::Private).unwrap();
    let c = mm.allocate_memory(0x11000, RW, true, 0, RegionKind::Private).unwrap();
    let d = mm.allocate_memory(0x1000, RW, true, 0, RegionKind::Private).unwrap();
    assert_eq!(a, DEFAULT_ALLOCATION_ADDRESS_64BIT);
    assert_eq!(b, a + 0x10000);
    assert_eq!(c, a + 0x20000);
    assert_eq!(d, a + 0x40000);
}

#[test]
fn allocate_memory_from_explicit_start_is_first_fit_and_aligned() {
    let mut mm = MemoryManager::new();
    // An unaligned start rounds up to the next granule.
    let a = mm.allocate_memory(0x1000, RW, false, A + 1, RegionKind::Private).unwrap();
    assert_eq!(a, A + 0x10000);
    // A start inside an allocation moves past it.
    mm.allocate_memory_at(A + 0x40000, 0x30000, RW, true, RegionKind::Private).unwrap();
    let b = mm.allocate_memory(0x1000, RW, false, A + 0x50000, RegionKind::Private).unwrap();
    assert_eq!(b, A + 0x70000);
    // A hole too small is skipped; the first hole that fits is taken.
    // Holes now: [A+0x20000, A+0x40000) (0x20000 bytes), then above A+0x80000.
    let c = mm.allocate_memory(0x30000, RW, true, A + 0x10000, RegionKind::Private).unwrap();
    assert_eq!(c, A + 0x80000);
    let d = mm.allocate_memory(0x20000, RW, true, A + 0x10000, RegionKind::Private).unwrap();
    assert_eq!(d, A + 0x20000);
    // A start below MIN_ALLOCATION_ADDRESS (but non-zero) searches from MIN_ALLOCATION_ADDRESS.
    let e = mm.allocate_memory(0x1000, RW, false, 1, RegionKind::Private).unwrap();
    assert_eq!(e, MIN_ALLOCATION_ADDRESS);
}

#[test]
fn allocate_memory_results_are_64k_aligned_and_disjoint() {
    let mut mm = MemoryManager::new();
    let sizes = [1u64, 0x1000, 0xFFFF, 0x10000, 0x10001, 0x2345, 0x30000, 0x800];
    let mut got = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let base = mm.allocate_memory(size, RW, i.is_multiple_of(2), 0, RegionKind::Private).unwrap();
        assert_eq!(base % ALLOCATION_GRANULARITY, 0, "base {base:#x}");
        assert!(base >= DEFAULT_ALLOCATION_ADDRESS_64BIT);
        got.push((base, size.div_ceil(PAGE_SIZE) * PAGE_SIZE));
    }
    got.sort();
    for w in got.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?} overlap");
    }
    assert_eq!(regions(&mm), got);
}

#[test]
fn allocate_memory_without_room_is_no_free_space() {
    // §2: running out of space is STATUS_NO_MEMORY.
    let mut mm = MemoryManager::new();
    let top = USER_SPACE_END - 0x10000;
    mm.allocate_memory_at(top, 0x10000, RW, true, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    assert_eq!(
        mm.allocate_memory(0x1000, RW, false, top, RegionKind::Private),
        Err(MemoryError::NoFreeSpace { size: 0x1000, start: top })
    );
    assert_eq!(
        mm.allocate_memory(USER_SPACE_END, RW, false, MIN_ALLOCATION_ADDRESS, RegionKind::Private),
        Err(MemoryError::NoFreeSpace { size: USER_SPACE_END, start: MIN_ALLOCATION_ADDRESS })
    );
    assert!(matches!(
        mm.allocate_memory(u64::MAX, RW, false, 0, RegionKind::Private),
        Err(MemoryError::NoFreeSpace { size: u64::MAX, .. })
    ));
    assert_eq!(
        mm.allocate_memory(0, RW, false, A, RegionKind::Private),
        Err(MemoryError::ZeroSize { address: A })
    );
    assert_eq!(mm.layout_version(), v);
    assert_eq!(regions(&mm), vec![(top, 0x10000)]);
}

// ------------------------------------------------------------------------ queries

#[test]
fn find_free_allocation_base_follows_first_fit_rules() {
    let mut mm = MemoryManager::new();
    assert_eq!(mm.find_free_allocation_base(0x1000, 0), Some(DEFAULT_ALLOCATION_ADDRESS_64BIT));
    assert_eq!(mm.find_free_allocation_base(0, 0), None);
    assert_eq!(mm.find_free_allocation_base(0, A), None);
    assert_eq!(mm.find_free_allocation_base(0x1000, USER_SPACE_END), None);
    assert_eq!(mm.find_free_allocation_base(0x1000, USER_SPACE_END + 0x10000), None);
    assert_eq!(mm.find_free_allocation_base(0x1000, u64::MAX), None);
    assert_eq!(mm.find_free_allocation_base(u64::MAX, A), None);
    assert_eq!(mm.find_free_allocation_base(0x1000, A + 0x1234), Some(A + 0x10000));
    assert_eq!(
        mm.find_free_allocation_base(0x10000, USER_SPACE_END - 0x10000),
        Some(USER_SPACE_END - 0x10000)
    );
    assert_eq!(mm.find_free_allocation_base(0x10001, USER_SPACE_END - 0x10000), None);

    mm.allocate_memory_at(A, 0x1000, RW, true, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    // The unusable tail of the granule is skipped.
    assert_eq!(mm.find_free_allocation_base(0x1000, A), Some(A + 0x10000));
    assert_eq!(mm.find_free_allocation_base(0x1000, A - 0x10000), Some(A - 0x10000));
    assert_eq!(mm.find_free_allocation_base(0x10001, A - 0x10000), Some(A + 0x10000));
    // A query changes nothing.
    assert_eq!(mm.layout_version(), v);
    assert_eq!(regions(&mm), vec![(A, 0x1000)]);
}

#[test]
fn overlaps_reserved_region_checks_every_byte_of_the_range() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x2000, RW, true, RegionKind::Private).unwrap();
    assert!(!mm.overlaps_reserved_region(A - 0x1000, 0x1000));
    assert!(mm.overlaps_reserved_region(A - 0x1000, 0x1001));
    assert!(mm.overlaps_reserved_region(A, 1));
    assert!(mm.overlaps_reserved_region(A + 0x1FFF, 1));
    assert!(!mm.overlaps_reserved_region(A + 0x2000, 0x1000));
    assert!(!mm.overlaps_reserved_region(A + 0x2000, 0xE000));
    assert!(!mm.overlaps_reserved_region(A, 0));
    assert!(mm.overlaps_reserved_region(0, u64::MAX));
    assert!(mm.overlaps_reserved_region(A + 0x1000, u64::MAX));
    assert!(!mm.overlaps_reserved_region(A + 0x2000, u64::MAX));
    assert!(!mm.overlaps_reserved_region(u64::MAX, u64::MAX));
}

#[test]
fn region_kind_reports_the_allocation_kind_or_free() {
    let mut mm = MemoryManager::new();
    let kinds = [RegionKind::Private, RegionKind::FileView, RegionKind::PagefileView, RegionKind::Image];
    for (i, &kind) in kinds.iter().enumerate() {
        mm.allocate_memory_at(A + i as u64 * 0x10000, 0x1000, RW, !i.is_multiple_of(2), kind).unwrap();
    }
    for (i, &kind) in kinds.iter().enumerate() {
        let base = A + i as u64 * 0x10000;
        assert_eq!(mm.region_kind(base), kind);
        assert_eq!(mm.region_kind(base + 0xFFF), kind);
        assert_eq!(mm.region_kind(base + 0x1000), RegionKind::Free);
        assert_eq!(mm.region_info(base).kind, kind);
    }
    assert_eq!(mm.region_kind(0), RegionKind::Free);
    assert_eq!(mm.region_kind(A - 1), RegionKind::Free);
    assert_eq!(mm.region_kind(u64::MAX), RegionKind::Free);
}

#[test]
fn default_allocation_address_can_be_read_and_set() {
    let mut mm = MemoryManager::new();
    assert_eq!(mm.default_allocation_address(), DEFAULT_ALLOCATION_ADDRESS_64BIT);
    let v = mm.layout_version();
    mm.set_default_allocation_address(DEFAULT_ALLOCATION_ADDRESS_32BIT);
    assert_eq!(mm.default_allocation_address(), DEFAULT_ALLOCATION_ADDRESS_32BIT);
    // Not a layout change.
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.find_free_allocation_base(0x1000, 0), Some(DEFAULT_ALLOCATION_ADDRESS_32BIT));
    let a = mm.allocate_memory(0x1000, RW, false, 0, RegionKind::Private).unwrap();
    assert_eq!(a, DEFAULT_ALLOCATION_ADDRESS_32BIT);
    mm.set_default_allocation_address(A);
    let b = mm.allocate_memory(0x1000, RW, false, 0, RegionKind::Private).unwrap();
    assert_eq!(b, A);
}

#[test]
fn reserved_regions_are_listed_in_address_order() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A + 0x50000, 0x3000, Protection::READ, true, RegionKind::Image).unwrap();
    mm.allocate_memory_at(A, 0x1000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0x20000, Protection::READ_EXECUTE, false, RegionKind::FileView)
        .unwrap();
    let got: Vec<ReservedRegion> = mm.reserved_regions().collect();
    assert_eq!(
        got,
        vec![
            ReservedRegion {
                base: A,
                length: 0x1000,
                kind: RegionKind::Private,
                initial_permissions: RW,
                attributes: 0
            },
            ReservedRegion {
                base: A + 0x20000,
                length: 0x20000,
                kind: RegionKind::FileView,
                initial_permissions: Protection::READ_EXECUTE,
                attributes: 0,
            },
            ReservedRegion {
                base: A + 0x50000,
                length: 0x3000,
                kind: RegionKind::Image,
                initial_permissions: Protection::READ,
                attributes: 0,
            },
        ]
    );
}

#[test]
fn compute_memory_stats_counts_reserved_and_committed_bytes() {
    let mut mm = MemoryManager::new();
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory, s.allocation_count), (0, 0, 0));
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x3000, RW, false, RegionKind::Private).unwrap();
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory, s.allocation_count), (0x13000, 0x3000, 2));
    mm.commit_memory(A + 0x1000, 0x2000, RW).unwrap();
    // Re-committing committed pages does not count them twice.
    mm.commit_memory(A + 0x1000, 0x3000, Protection::READ).unwrap();
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory), (0x13000, 0x6000));
    mm.decommit_memory(A, 0x10000).unwrap();
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory), (0x13000, 0x3000));
    mm.release_memory(A + 0x10000, 0).unwrap();
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory, s.allocation_count), (0x10000, 0, 1));
}

#[test]
fn unmap_all_memory_releases_everything_and_keeps_default_address() {
    let mut mm = MemoryManager::new();
    mm.set_default_allocation_address(A);
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x100000, 0x1000, RW, true, RegionKind::Image).unwrap();
    mm.write_memory(A, b"data").unwrap();
    let v = mm.layout_version();
    mm.unmap_all_memory();
    assert!(mm.layout_version() > v);
    assert_eq!(mm.reserved_regions().count(), 0);
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory, s.allocation_count), (0, 0, 0));
    assert_eq!(mm.region_info(A), free_info(A, USER_SPACE_END - A));
    let mut buf = [0u8; 4];
    assert_eq!(mm.read_memory(A, &mut buf), Err(MemoryError::NotAllocated { address: A }));
    assert_eq!(mm.default_allocation_address(), A);
    // The space is usable again, with fresh zero pages.
    assert_eq!(mm.allocate_memory(0x1000, RW, false, 0, RegionKind::Private), Ok(A));
    assert_eq!(read_vec(&mm, A, 4), vec![0; 4]);
}

// ---------------------------------------------------------------- release (size 0)

#[test]
fn release_size_zero_frees_the_whole_allocation() {
    // §6.3: size 0 releases the whole allocation; the pages become MEM_FREE (§8).
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x5000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, RW).unwrap();
    mm.allocate_memory_at(A + 0x20000, 0x1000, RW, false, RegionKind::Private).unwrap();
    mm.release_memory(A, 0).unwrap();
    assert_eq!(regions(&mm), vec![(A + 0x20000, 0x1000)]);
    assert_eq!(mm.region_info(A + 0x2000), free_info(A + 0x2000, 0x1E000));
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory), (0x1000, 0x1000));
}

#[test]
fn release_size_zero_accepts_an_address_within_the_first_page() {
    // §6.1: A+0xFFF with size 0 works.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x3000, RW, false, RegionKind::Private).unwrap();
    mm.release_memory(A + 0xFFF, 0).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
}

#[test]
fn release_size_zero_not_at_base_is_not_allocation_base() {
    // §6.1: STATUS_FREE_VM_NOT_AT_BASE.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x3000, RW, false, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    for address in [A + 0x1000, A + 0x1FFF, A + 0x2ABC] {
        assert_eq!(mm.release_memory(address, 0), Err(MemoryError::NotAllocationBase { address, base: A }));
    }
    assert_eq!(mm.layout_version(), v);
    assert_eq!(regions(&mm), vec![(A, 0x3000)]);
}

#[test]
fn release_of_free_memory_is_not_allocated() {
    // §6.1: STATUS_MEMORY_NOT_ALLOCATED.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x1000, RW, false, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    for address in [A - 0x10000, A + 0x1000, A + 0x8000, 0, MIN_ALLOCATION_ADDRESS] {
        assert_eq!(mm.release_memory(address, 0), Err(MemoryError::NotAllocated { address }));
        assert_eq!(mm.release_memory(address, 0x1000), Err(MemoryError::NotAllocated { address }));
    }
    mm.release_memory(A, 0).unwrap();
    assert_eq!(mm.release_memory(A, 0), Err(MemoryError::NotAllocated { address: A }));
    assert_eq!(mm.layout_version(), v + 1);
}

// ------------------------------------------------------------------ partial release

/// A 16-page committed allocation at `A` whose page `i` is filled with `i + 1`.
fn patterned() -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    for i in 0..16u64 {
        mm.write_memory(A + i * PAGE_SIZE, &[i as u8 + 1; PAGE_SIZE as usize]).unwrap();
    }
    mm
}

fn assert_page_pattern(mm: &MemoryManager, pages: std::ops::Range<u64>) {
    for i in pages {
        assert_eq!(
            read_vec(mm, A + i * PAGE_SIZE, PAGE_SIZE as usize),
            vec![i as u8 + 1; PAGE_SIZE as usize],
            "page {i}"
        );
    }
}

#[test]
fn partial_release_of_head_leaves_tail_as_own_allocation() {
    // §6.3: NT-level partial release splits the allocation.
    let mut mm = patterned();
    mm.release_memory(A, 0x4000).unwrap();
    assert_eq!(regions(&mm), vec![(A + 0x4000, 0xC000)]);
    assert_eq!(mm.region_info(A), free_info(A, 0x4000));
    let info = mm.region_info(A + 0x4000);
    assert_eq!(info.allocation_base, A + 0x4000);
    assert_eq!(info.allocation_length, 0xC000);
    assert_eq!(info.initial_permissions, RW);
    assert_eq!(info.kind, RegionKind::Private);
    assert_page_pattern(&mm, 4..16);
    let s = mm.compute_memory_stats();
    assert_eq!((s.reserved_memory, s.committed_memory), (0xC000, 0xC000));
    assert_eq!(mm.release_memory(A, 0x1000), Err(MemoryError::NotAllocated { address: A }));
    mm.release_memory(A + 0x4000, 0).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
}

#[test]
fn partial_release_of_tail_shrinks_the_allocation() {
    let mut mm = patterned();
    mm.release_memory(A + 0xC000, 0x4000).unwrap();
    assert_eq!(regions(&mm), vec![(A, 0xC000)]);
    assert_eq!(mm.region_info(A).allocation_length, 0xC000);
    assert_eq!(mm.region_info(A).length, 0xC000);
    assert_eq!(mm.region_info(A + 0xC000), free_info(A + 0xC000, USER_SPACE_END - A - 0xC000));
    assert_page_pattern(&mm, 0..12);
    let mut buf = [0u8; 1];
    assert_eq!(mm.read_memory(A + 0xC000, &mut buf), Err(MemoryError::NotAllocated { address: A + 0xC000 }));
}

#[test]
fn partial_release_of_hole_splits_into_independent_allocations() {
    // §6.3: the piece above a hole becomes its own allocation based at the range end.
    let mut mm = patterned();
    mm.release_memory(A + 0x4000, 0x4000).unwrap();
    assert_eq!(regions(&mm), vec![(A, 0x4000), (A + 0x8000, 0x8000)]);
    assert_eq!(mm.region_info(A + 0x4000), free_info(A + 0x4000, 0x4000));
    let lower = mm.region_info(A + 0x1000);
    assert_eq!((lower.allocation_base, lower.allocation_length), (A, 0x4000));
    assert_eq!(lower.length, 0x3000);
    let upper = mm.region_info(A + 0x9000);
    assert_eq!((upper.allocation_base, upper.allocation_length), (A + 0x8000, 0x8000));
    assert_eq!(upper.initial_permissions, RW);
    assert_page_pattern(&mm, 0..4);
    assert_page_pattern(&mm, 8..16);
    // The freed pages are free: later frees there are NotAllocated.
    assert_eq!(mm.release_memory(A + 0x5000, 0x1000), Err(MemoryError::NotAllocated { address: A + 0x5000 }));
    // The pieces are independent: releasing the upper one whole at its new base...
    assert_eq!(
        mm.release_memory(A + 0x9000, 0),
        Err(MemoryError::NotAllocationBase { address: A + 0x9000, base: A + 0x8000 })
    );
    mm.release_memory(A + 0x8000, 0).unwrap();
    // ...leaves the lower one untouched.
    assert_eq!(regions(&mm), vec![(A, 0x4000)]);
    assert_page_pattern(&mm, 0..4);
    mm.release_memory(A, 0).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
}

#[test]
fn partial_release_rounds_to_the_pages_touched() {
    // §3: free acts on PAGE_DOWN(addr)..PAGE_UP(addr + size).
    let mut mm = patterned();
    mm.release_memory(A + 0x1FFF, 2).unwrap();
    assert_eq!(regions(&mm), vec![(A, 0x1000), (A + 0x3000, 0xD000)]);
}

#[test]
fn partial_release_across_allocation_end_is_not_in_one_allocation() {
    // §6.1: STATUS_UNABLE_TO_FREE_VM when the range runs past the allocation.
    let mut mm = patterned();
    mm.allocate_memory_at(A + 0x10000, 0x10000, RW, true, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    assert_eq!(
        mm.release_memory(A + 0xF000, 0x2000),
        Err(MemoryError::NotInOneAllocation { address: A + 0xF000, size: 0x2000 })
    );
    assert_eq!(
        mm.release_memory(A + 0xF800, 0x1000),
        Err(MemoryError::NotInOneAllocation { address: A + 0xF000, size: 0x2000 })
    );
    assert_eq!(mm.layout_version(), v);
    assert_eq!(regions(&mm), vec![(A, 0x10000), (A + 0x10000, 0x10000)]);
    assert_page_pattern(&mm, 0..16);
}

#[test]
fn partial_release_of_whole_range_removes_allocation() {
    let mut mm = patterned();
    mm.release_memory(A, 0x10000).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
    assert_eq!(mm.compute_memory_stats().committed_memory, 0);
}
