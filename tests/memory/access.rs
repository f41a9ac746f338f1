//! Host and guest reads and writes: spanning, failures, protection checks and
//! guard pages. Section numbers refer to docs/windows-semantics.md.

use vmsnap::{Access, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionKind};

use crate::common;
use common::read_vec;

const RW: Protection = Protection::READ_WRITE;
const R: Protection = Protection::READ;
const X: Protection = Protection::EXECUTE;
const G: Protection = Protection::GUARD;
const A: u64 = 0x3000_0000;
const PAGE: usize = PAGE_SIZE as usize;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A reservation of 16 pages at `A`; the first `committed` pages are committed
/// RW and filled with 0x11.
fn setup(committed: u64) -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    if committed > 0 {
        mm.commit_memory(A, committed * PAGE_SIZE, RW).unwrap();
        mm.write_memory(A, &vec![0x11; committed as usize * PAGE]).unwrap();
    }
    mm
}

// ---------------------------------------------------------------------- host view

#[test]
fn host_read_write_span_pages_and_allocations() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x10000, R, false, RegionKind::Image).unwrap();
    let data = pattern(0x3000, 5);
    mm.write_memory(A + 0xF800, &data).unwrap();
    assert_eq!(read_vec(&mm, A + 0xF800, 0x3000), data);
    // Bytes around the written range are untouched.
    assert_eq!(read_vec(&mm, A + 0xF7FF, 1), vec![0]);
    assert_eq!(read_vec(&mm, A + 0x12800, 1), vec![0]);
    // Unaligned small reads inside and across a page.
    assert_eq!(read_vec(&mm, A + 0xFFFE, 4), data[0x7FE..0x802].to_vec());
    assert_eq!(read_vec(&mm, A + 0x10FFF, 2), data[0x17FF..0x1801].to_vec());
}

#[test]
fn host_access_to_free_memory_is_not_allocated_at_first_failing_byte() {
    // §10: access to free memory fails.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x1000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(A, &[0x22; PAGE]).unwrap();
    let mut buf = [0u8; 0x20];
    assert_eq!(mm.read_memory(A + 0xFF0, &mut buf), Err(MemoryError::NotAllocated { address: A + 0x1000 }));
    assert_eq!(
        mm.write_memory(A + 0xFF0, &[0x99; 0x20]),
        Err(MemoryError::NotAllocated { address: A + 0x1000 })
    );
    // The failed write wrote nothing.
    assert_eq!(read_vec(&mm, A, PAGE), vec![0x22; PAGE]);
    // Starting in free memory: the first byte fails.
    assert_eq!(mm.read_memory(A - 3, &mut buf), Err(MemoryError::NotAllocated { address: A - 3 }));
    assert_eq!(mm.write_memory(A + 0x1234, &[1]), Err(MemoryError::NotAllocated { address: A + 0x1234 }));
    assert_eq!(mm.read_memory(0, &mut buf), Err(MemoryError::NotAllocated { address: 0 }));
}

#[test]
fn host_access_to_reserved_memory_is_not_committed_and_failed_write_writes_nothing() {
    let mut mm = setup(2);
    let mut buf = vec![0u8; 0x2100];
    assert_eq!(mm.read_memory(A + 0x100, &mut buf), Err(MemoryError::NotCommitted { address: A + 0x2000 }));
    assert_eq!(
        mm.write_memory(A + 0x100, &[0x77; 0x2100]),
        Err(MemoryError::NotCommitted { address: A + 0x2000 })
    );
    // Neither committed page before the failing one was written.
    assert_eq!(read_vec(&mm, A, 2 * PAGE), vec![0x11; 2 * PAGE]);
    assert_eq!(
        mm.read_memory(A + 0x2345, &mut buf[..4]),
        Err(MemoryError::NotCommitted { address: A + 0x2345 })
    );
    // A hole of reserved pages between committed ones.
    mm.commit_memory(A + 0x3000, 0x1000, RW).unwrap();
    assert_eq!(
        mm.write_memory(A + 0x1000, &[0x77; 0x3000]),
        Err(MemoryError::NotCommitted { address: A + 0x2000 })
    );
    assert_eq!(read_vec(&mm, A + 0x1000, PAGE), vec![0x11; PAGE]);
    assert_eq!(read_vec(&mm, A + 0x3000, PAGE), vec![0; PAGE]);
}

#[test]
fn zero_length_accesses_succeed_anywhere() {
    let mut mm = setup(1);
    let v = mm.layout_version();
    for address in [0, A, A + 0x5000, A + 0x20000, u64::MAX] {
        assert_eq!(mm.read_memory(address, &mut []), Ok(()), "{address:#x}");
        assert!(mm.try_read_memory(address, &mut []));
        assert_eq!(mm.write_memory(address, &[]), Ok(()));
        assert_eq!(mm.guest_read(address, &mut []), Ok(()));
        assert_eq!(mm.guest_fetch(address, &mut []), Ok(()));
        assert_eq!(mm.guest_write(address, &[]), Ok(()));
    }
    assert_eq!(mm.layout_version(), v);
    assert_eq!(read_vec(&mm, A, PAGE), vec![0x11; PAGE]);
}

#[test]
fn try_read_and_try_write_report_success_only() {
    let mut mm = setup(1);
    let mut buf = [0u8; 8];
    assert!(mm.try_write_memory(A + 8, b"abcdefgh"));
    assert!(mm.try_read_memory(A + 8, &mut buf));
    assert_eq!(&buf, b"abcdefgh");
    let mut buf = [0xCCu8; 16];
    assert!(!mm.try_read_memory(A + 0xFF8, &mut buf));
    assert!(!mm.try_write_memory(A + 0xFF8, &[0x55; 16]));
    assert!(!mm.try_write_memory(A + 0x20000, &[0x55; 16]));
    assert_eq!(read_vec(&mm, A + 0xFF8, 8), vec![0x11; 8]);
}

#[test]
fn host_view_ignores_protection() {
    let mut mm = setup(0);
    mm.commit_memory(A, 0x1000, Protection::empty()).unwrap();
    mm.commit_memory(A + 0x1000, 0x1000, R).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, X).unwrap();
    let data = pattern(0x3000, 9);
    mm.write_memory(A, &data).unwrap();
    assert_eq!(read_vec(&mm, A, 0x3000), data);
}

// --------------------------------------------------------------------- guest view

#[test]
fn guest_read_needs_read_permission() {
    // §10: access checks.
    let mut mm = setup(0);
    mm.commit_memory(A, 0x1000, R).unwrap();
    mm.commit_memory(A + 0x1000, 0x1000, Protection::empty()).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, X).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(mm.guest_read(A + 0x10, &mut buf), Ok(()));
    assert_eq!(
        mm.guest_read(A + 0x1010, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x1010, access: Access::Read })
    );
    assert_eq!(
        mm.guest_read(A + 0x2010, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x2010, access: Access::Read })
    );
    // Spanning a readable page into an unreadable one: the first unreadable byte.
    assert_eq!(
        mm.guest_read(A + 0xFFE, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x1000, access: Access::Read })
    );
}

#[test]
fn guest_write_needs_write_permission() {
    let mut mm = setup(0);
    mm.commit_memory(A, 0x1000, RW).unwrap();
    mm.commit_memory(A + 0x1000, 0x1000, R).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, Protection::READ_EXECUTE).unwrap();
    mm.commit_memory(A + 0x3000, 0x1000, Protection::ALL_ACCESS).unwrap();
    assert_eq!(mm.guest_write(A + 0x10, b"ok"), Ok(()));
    assert_eq!(mm.guest_write(A + 0x3010, b"ok"), Ok(()));
    for page in [1u64, 2] {
        let at = A + page * PAGE_SIZE + 0x20;
        assert_eq!(
            mm.guest_write(at, b"no"),
            Err(MemoryError::AccessViolation { address: at, access: Access::Write })
        );
    }
    assert_eq!(read_vec(&mm, A + 0x10, 2), b"ok".to_vec());
    assert_eq!(read_vec(&mm, A + 0x3010, 2), b"ok".to_vec());
    assert_eq!(read_vec(&mm, A + 0x1020, 2), vec![0, 0]);
}

#[test]
fn guest_fetch_needs_execute_permission() {
    let mut mm = setup(0);
    mm.commit_memory(A, 0x1000, X).unwrap();
    mm.commit_memory(A + 0x1000, 0x1000, RW).unwrap();
    mm.commit_memory(A + 0x2000, 0x1000, Protection::READ_EXECUTE).unwrap();
    mm.write_memory(A, &[0x90; 16]).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(mm.guest_fetch(A, &mut buf), Ok(()));
    assert_eq!(buf, [0x90; 16]);
    assert_eq!(
        mm.guest_fetch(A + 0x1008, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x1008, access: Access::Execute })
    );
    assert_eq!(mm.guest_fetch(A + 0x2008, &mut buf), Ok(()));
    // Execute-only memory cannot be read as data.
    assert_eq!(
        mm.guest_read(A, &mut buf),
        Err(MemoryError::AccessViolation { address: A, access: Access::Read })
    );
    // Spanning execute-only into read-write.
    assert_eq!(
        mm.guest_fetch(A + 0xFF8, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x1000, access: Access::Execute })
    );
}

#[test]
fn guest_access_to_free_or_reserved_memory_is_access_violation() {
    // Crate docs (`MemoryError::AccessViolation`): free or reserved-only pages give AccessViolation.
    let mut mm = setup(1);
    mm.protect_memory(A, 0x1000, Protection::ALL_ACCESS).unwrap();
    let mut buf = [0u8; 8];
    let cases = [(A + 0x1000, A + 0x1000), (A + 0xFFC, A + 0x1000), (A + 0x20000, A + 0x20000), (0, 0)];
    for (at, fail) in cases {
        assert_eq!(
            mm.guest_read(at, &mut buf),
            Err(MemoryError::AccessViolation { address: fail, access: Access::Read })
        );
        assert_eq!(
            mm.guest_fetch(at, &mut buf),
            Err(MemoryError::AccessViolation { address: fail, access: Access::Execute })
        );
        assert_eq!(
            mm.guest_write(at, &buf),
            Err(MemoryError::AccessViolation { address: fail, access: Access::Write })
        );
    }
    assert_eq!(read_vec(&mm, A, PAGE), vec![0x11; PAGE]);
}

#[test]
fn refused_guest_write_writes_nothing_at_all() {
    // Crate docs (`MemoryManager::guest_write`): a refused guest access performs nothing (no partial write).
    let mut mm = setup(3);
    mm.protect_memory(A + 0x2000, 0x1000, R).unwrap();
    assert_eq!(
        mm.guest_write(A + 0x800, &[0x99; 0x2000]),
        Err(MemoryError::AccessViolation { address: A + 0x2000, access: Access::Write })
    );
    assert_eq!(read_vec(&mm, A, 3 * PAGE), vec![0x11; 3 * PAGE]);
    // Into reserved memory.
    assert_eq!(
        mm.guest_write(A + 0x1800, &[0x99; 0x2000]),
        Err(MemoryError::AccessViolation { address: A + 0x2000, access: Access::Write })
    );
    assert_eq!(read_vec(&mm, A, 3 * PAGE), vec![0x11; 3 * PAGE]);
    let v = mm.layout_version();
    assert_eq!(
        mm.guest_write(A + 0x2FF0, &[0x99; 0x20]),
        Err(MemoryError::AccessViolation { address: A + 0x2FF0, access: Access::Write })
    );
    assert_eq!(mm.layout_version(), v);
}

#[test]
fn refused_guest_read_leaves_buffer_untouched() {
    let mut mm = setup(2);
    mm.protect_memory(A + 0x1000, 0x1000, Protection::empty()).unwrap();
    let mut buf = [0xCCu8; 0x20];
    assert_eq!(
        mm.guest_read(A + 0xFF0, &mut buf),
        Err(MemoryError::AccessViolation { address: A + 0x1000, access: Access::Read })
    );
    assert_eq!(buf, [0xCC; 0x20]);
}

#[test]
fn guest_read_write_span_pages_and_allocations() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A + 0x10000, 0x10000, Protection::ALL_ACCESS, false, RegionKind::Private).unwrap();
    let data = pattern(0x2800, 1);
    mm.guest_write(A + 0xF000, &data).unwrap();
    let mut buf = vec![0u8; 0x2800];
    mm.guest_read(A + 0xF000, &mut buf).unwrap();
    assert_eq!(buf, data);
    assert_eq!(read_vec(&mm, A + 0xF000, 0x2800), data);
}

// -------------------------------------------------------------------- guard pages

#[test]
fn host_view_never_fires_or_clears_guard_pages() {
    // Crate docs (`MemoryManager::read_memory`): the host view never fires or clears a guard page.
    let mut mm = setup(0);
    mm.commit_memory(A, 0x1000, RW | G).unwrap();
    let v = mm.layout_version();
    mm.write_memory(A + 4, b"host").unwrap();
    assert_eq!(read_vec(&mm, A + 4, 4), b"host".to_vec());
    assert!(mm.try_read_memory(A, &mut [0u8; 16]));
    assert_eq!(mm.region_info(A).permissions, RW | G);
    assert_eq!(mm.layout_version(), v);
    // The guard still fires for the guest afterwards.
    let mut buf = [0u8; 4];
    assert_eq!(
        mm.guest_read(A + 4, &mut buf),
        Err(MemoryError::GuardPageViolation { address: A + 4, access: Access::Read })
    );
}

#[test]
fn guard_page_fires_once_then_access_succeeds() {
    // §9: the first access raises STATUS_GUARD_PAGE_VIOLATION and clears the guard bit
    // (AllocationProtect keeps it); contents are preserved; the second access goes through.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x2000, RW | G, false, RegionKind::Private).unwrap();
    mm.write_memory(A + 0x100, b"guarded!").unwrap();
    let mut buf = [0xCCu8; 8];
    assert_eq!(
        mm.guest_read(A + 0x100, &mut buf),
        Err(MemoryError::GuardPageViolation { address: A + 0x100, access: Access::Read })
    );
    // The read was not performed.
    assert_eq!(buf, [0xCC; 8]);
    let info = mm.region_info(A);
    assert_eq!(info.permissions, RW);
    assert_eq!(info.initial_permissions, RW | G);
    assert_eq!(info.length, 0x1000);
    // Only the touched page lost its guard.
    assert_eq!(mm.region_info(A + 0x1000).permissions, RW | G);
    mm.guest_read(A + 0x100, &mut buf).unwrap();
    assert_eq!(&buf, b"guarded!");
    mm.guest_read(A + 0x100, &mut buf).unwrap();
}

#[test]
fn guard_page_fires_for_writes_without_writing() {
    // §9: a write to a guard page raises the violation; crate docs: the access is not performed.
    let mut mm = setup(1);
    mm.protect_memory(A, 0x1000, RW | G).unwrap();
    assert_eq!(
        mm.guest_write(A + 0x10, b"xy"),
        Err(MemoryError::GuardPageViolation { address: A + 0x10, access: Access::Write })
    );
    assert_eq!(read_vec(&mm, A + 0x10, 2), vec![0x11, 0x11]);
    assert_eq!(mm.region_info(A).permissions, RW);
    mm.guest_write(A + 0x10, b"xy").unwrap();
    assert_eq!(read_vec(&mm, A + 0x10, 2), b"xy".to_vec());
}

#[test]
fn guard_page_fires_for_fetches() {
    // §9: access type 8 (execute).
    let mut mm = setup(1);
    mm.protect_memory(A, 0x1000, Protection::READ_EXECUTE | G).unwrap();
    let mut buf = [0u8; 2];
    assert_eq!(
        mm.guest_fetch(A + 0x20, &mut buf),
        Err(MemoryError::GuardPageViolation { address: A + 0x20, access: Access::Execute })
    );
    assert_eq!(mm.region_info(A).permissions, Protection::READ_EXECUTE);
    mm.guest_fetch(A + 0x20, &mut buf).unwrap();
    assert_eq!(buf, [0x11, 0x11]);
}

#[test]
fn multi_page_guest_access_stops_at_guard_page_and_performs_nothing() {
    // §9 and the crate docs: fails at the guard page's first byte; nothing is performed.
    let mut mm = setup(3);
    mm.protect_memory(A + 0x1000, 0x1000, RW | G).unwrap();
    assert_eq!(
        mm.guest_write(A + 0x800, &[0x99; 0x1000]),
        Err(MemoryError::GuardPageViolation { address: A + 0x1000, access: Access::Write })
    );
    assert_eq!(read_vec(&mm, A, 3 * PAGE), vec![0x11; 3 * PAGE]);
    assert_eq!(mm.region_info(A + 0x1000).permissions, RW);
    assert_eq!(mm.region_info(A).length, 0x3000);
    // The retry goes through.
    mm.guest_write(A + 0x800, &[0x99; 0x1000]).unwrap();
    assert_eq!(read_vec(&mm, A + 0x800, 0x1000), vec![0x99; 0x1000]);

    mm.protect_memory(A + 0x2000, 0x1000, RW | G).unwrap();
    let mut buf = [0xCCu8; 0x20];
    assert_eq!(
        mm.guest_read(A + 0x1FF0, &mut buf),
        Err(MemoryError::GuardPageViolation { address: A + 0x2000, access: Access::Read })
    );
    assert_eq!(buf, [0xCC; 0x20]);
    mm.guest_read(A + 0x1FF0, &mut buf).unwrap();
}

#[test]
fn protect_rearms_and_clears_guard_pages() {
    // §9: VirtualProtect(RW|GUARD) re-arms and returns old = RW; VirtualProtect(RW)
    // clears it and returns old = RW|GUARD.
    let mut mm = setup(1);
    mm.protect_memory(A, 0x1000, RW | G).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(mm.guest_read(A, &mut buf), Err(MemoryError::GuardPageViolation { .. })));
    assert_eq!(mm.protect_memory(A, 0x1000, RW | G), Ok(RW));
    assert_eq!(
        mm.guest_read(A, &mut buf),
        Err(MemoryError::GuardPageViolation { address: A, access: Access::Read })
    );
    assert_eq!(mm.protect_memory(A, 0x1000, RW | G), Ok(RW));
    assert_eq!(mm.protect_memory(A, 0x1000, RW), Ok(RW | G));
    mm.guest_read(A, &mut buf).unwrap();
}

#[test]
fn guard_firing_advances_layout_version() {
    // Crate docs (`MemoryManager::layout_version`): every guard page that fires is a layout change.
    let mut mm = setup(1);
    mm.protect_memory(A, 0x1000, RW | G).unwrap();
    let v = mm.layout_version();
    let mut buf = [0u8; 1];
    assert!(mm.guest_read(A, &mut buf).is_err());
    let fired = mm.layout_version();
    assert!(fired > v);
    mm.guest_read(A, &mut buf).unwrap();
    mm.guest_write(A, &buf).unwrap();
    assert_eq!(mm.layout_version(), fired);
}

// docs/windows-semantics.md §11: writing to a WC page turns it into RW (EWC into ERW);
// only the written page changes, which splits the region.
#[test]
fn guest_write_to_write_copy_page_makes_it_writable_and_splits_the_region() {
    let mut mm = MemoryManager::new();
    let wc = Protection::READ | Protection::WRITE_COPY;
    mm.allocate_memory_at(A, 0x3000, wc, false, RegionKind::Image).unwrap();
    let v0 = mm.layout_version();
    // Reads and host writes leave the protection alone.
    let mut buf = [0u8; 4];
    mm.guest_read(A + 0x1000, &mut buf).unwrap();
    mm.write_memory(A + 0x1000, b"host").unwrap();
    assert_eq!(mm.region_info(A).permissions, wc);
    assert_eq!(mm.layout_version(), v0);
    // The first guest write goes through and converts only its page.
    mm.guest_write(A + 0x1ffe, b"ab").unwrap();
    assert_eq!(read_vec(&mm, A + 0x1ffe, 2), b"ab".to_vec());
    assert!(mm.layout_version() > v0);
    let r = mm.region_info(A + 0x1000);
    assert_eq!((r.start, r.length, r.permissions), (A + 0x1000, 0x1000, Protection::READ_WRITE));
    assert_eq!(mm.region_info(A).permissions, wc);
    assert_eq!(mm.region_info(A + 0x2000).permissions, wc);
    assert_eq!(mm.region_info(A).initial_permissions, wc);
    // Execute-write-copy becomes execute-read-write.
    let ewc = Protection::READ_EXECUTE | Protection::WRITE_COPY;
    mm.protect_memory(A + 0x2000, 0x1000, ewc).unwrap();
    mm.guest_write(A + 0x2000, b"x").unwrap();
    assert_eq!(mm.region_info(A + 0x2000).permissions, Protection::ALL_ACCESS);
    // A write spanning two WC pages converts both.
    mm.protect_memory(A, 0x2000, wc).unwrap();
    mm.guest_write(A + 0xfff, b"yz").unwrap();
    assert_eq!(mm.region_info(A).permissions, Protection::READ_WRITE);
    assert_eq!(mm.region_info(A).length, 0x2000);
}
