//! The commit limit (#12 item 4b): `MemoryManager::set_commit_limit` bounds
//! `committed_memory`; a commit past it fails with
//! `MemoryError::CommitLimitExceeded` / `STATUS_COMMITMENT_LIMIT` and changes
//! nothing; `None` is unlimited; the default is `DEFAULT_COMMIT_LIMIT`.

use vmsnap::nt::*;

use crate::common;
use common::nt::*;
use vmsnap::{
    DEFAULT_COMMIT_LIMIT, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, PAGE_SIZE, Protection,
    RegionKind, SectionInfo, USER_SPACE_END,
};

const RW: Protection = Protection::READ_WRITE;
const A: u64 = 0x1000_0000;
const B: u64 = 0x2000_0000;

/// Everything a refused commit must leave alone, sections included.
type State = (u64, Vec<vmsnap::ReservedRegion>, u64, Vec<(u64, SectionInfo)>, Vec<u8>);

fn state(mm: &MemoryManager) -> State {
    let mut bytes = Vec::new();
    mm.serialize_memory_state(&mut bytes, true);
    (
        mm.layout_version(),
        mm.reserved_regions().collect(),
        mm.compute_memory_stats().committed_memory,
        mm.sections().map(|(id, info)| (id.get(), info)).collect(),
        bytes,
    )
}

fn exceeded(requested_pages: u64, committed_pages: u64, limit: u64) -> MemoryError {
    MemoryError::CommitLimitExceeded {
        requested: requested_pages * PAGE_SIZE,
        committed: committed_pages * PAGE_SIZE,
        limit,
    }
}

#[test]
fn commit_limit_commit_beyond_the_limit_is_refused_and_changes_nothing() {
    let limit = 16 * PAGE_SIZE;
    let mut mm = MemoryManager::new();
    assert_eq!(mm.commit_limit(), Some(DEFAULT_COMMIT_LIMIT));
    mm.set_commit_limit(Some(limit));
    assert_eq!(mm.commit_limit(), Some(limit));

    // 10 of 16 pages committed: 4 private, 6 through a view of a section.
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 4 * PAGE_SIZE, RW).unwrap();
    let s = mm.create_section(0x10000, RW, false).unwrap();
    let view = mm.map_view_of_section(s, B, 0, 0, RW).unwrap();
    mm.commit_memory(view, 6 * PAGE_SIZE, RW).unwrap();
    mm.write_memory(A, b"kept").unwrap();
    assert_eq!(mm.compute_memory_stats().committed_memory, 10 * PAGE_SIZE);
    let before = state(&mm);

    // A new committed allocation of 7 pages.
    assert_eq!(
        mm.allocate_memory_at(0x3000_0000, 7 * PAGE_SIZE, RW, false, RegionKind::Private),
        Err(exceeded(7, 10, limit))
    );
    assert_eq!(
        mm.allocate_memory(7 * PAGE_SIZE, RW, false, 0, RegionKind::Private),
        Err(exceeded(7, 10, limit))
    );
    // A commit over 4 committed + 7 new pages: only the new ones count.
    assert_eq!(mm.commit_memory(A, 11 * PAGE_SIZE, RW), Err(exceeded(7, 10, limit)));
    // MMIO counts as committed.
    assert_eq!(
        mm.allocate_mmio(0x4000_0000, 7 * PAGE_SIZE, |_, _| {}, |_, _| {}),
        Err(exceeded(7, 10, limit))
    );
    // A second view shows the 6 committed section pages: they count again.
    mm.set_commit_limit(Some(15 * PAGE_SIZE));
    assert_eq!(mm.map_view_of_section(s, 0x5000_0000, 0, 0, RW), Err(exceeded(6, 10, 15 * PAGE_SIZE)));
    mm.set_commit_limit(Some(limit));
    assert_eq!(state(&mm), before, "refused commits changed the manager");

    // Two views of one section (16 pages committed, 6 in each view):
    // committing 4 more section pages through one view commits them in both
    // (8 pages), which a limit of 23 pages cannot hold.
    let other = mm.map_view_of_section(s, 0x5000_0000, 0, 0, RW).unwrap();
    assert_eq!(mm.compute_memory_stats().committed_memory, 16 * PAGE_SIZE);
    mm.set_commit_limit(Some(limit + 7 * PAGE_SIZE));
    let before = state(&mm);
    assert_eq!(
        mm.commit_memory(other + 6 * PAGE_SIZE, 4 * PAGE_SIZE, RW),
        Err(exceeded(8, 16, limit + 7 * PAGE_SIZE))
    );
    assert_eq!(state(&mm), before);

    // The nt face: STATUS_COMMITMENT_LIMIT (Win32 1455), outputs untouched.
    fails_unchanged(&mut mm, NtStatus::COMMITMENT_LIMIT, |mm| {
        nt_allocate_virtual_memory(
            mm,
            &mut 0,
            0,
            &mut (8 * PAGE_SIZE),
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    });
    fails_unchanged(&mut mm, NtStatus::COMMITMENT_LIMIT, |mm| {
        nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut (12 * PAGE_SIZE), MEM_COMMIT, PAGE_READWRITE)
    });
    assert_eq!(NtStatus::COMMITMENT_LIMIT.0, 0xC000_012D);
    assert_eq!(nt_status_to_dos_error(NtStatus::COMMITMENT_LIMIT), ERROR_COMMITMENT_LIMIT);

    // Up to the limit exactly is fine; reserving is never charged.
    mm.commit_memory(other + 6 * PAGE_SIZE, 3 * PAGE_SIZE, RW).unwrap();
    assert_eq!(mm.compute_memory_stats().committed_memory, 22 * PAGE_SIZE);
    mm.commit_memory(A, 5 * PAGE_SIZE, RW).unwrap();
    assert_eq!(mm.compute_memory_stats().committed_memory, limit + 7 * PAGE_SIZE);
    mm.allocate_memory_at(0x6000_0000, 1 << 30, RW, true, RegionKind::Private).unwrap();
    assert_eq!(mm.commit_memory(A + 5 * PAGE_SIZE, 1, RW), Err(exceeded(1, 23, limit + 7 * PAGE_SIZE)));
    // Releasing makes room again.
    mm.decommit_memory(A, PAGE_SIZE).unwrap();
    mm.commit_memory(A + 5 * PAGE_SIZE, 1, RW).unwrap();
    let e = mm.commit_memory(A + 6 * PAGE_SIZE, 1, RW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "committing 0x1000 more bytes (committed: 0x17000) exceeds the commit limit 0x17000"
    );
}

#[test]
fn commit_limit_unlimited_allows_all_of_user_space_in_one_nt_allocate() {
    // 128 TiB, MEM_COMMIT | MEM_RESERVE of the whole of user space.
    let whole = USER_SPACE_END - MIN_ALLOCATION_ADDRESS;
    assert!(whole > 127 << 40);
    let mut mm = MemoryManager::new();
    // The default limit refuses it, changing nothing.
    fails_unchanged(&mut mm, NtStatus::COMMITMENT_LIMIT, |mm| {
        nt_allocate_virtual_memory(
            mm,
            &mut 0,
            0,
            &mut whole.clone(),
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    });
    mm.set_commit_limit(None);
    assert_eq!(mm.commit_limit(), None);
    let (base, size) =
        alloc(&mut mm, MIN_ALLOCATION_ADDRESS, whole, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!((base, size), (MIN_ALLOCATION_ADDRESS, whole));
    assert_eq!(mm.compute_memory_stats().committed_memory, whole);
    assert_eq!(query(&mm, USER_SPACE_END - 1).state, MEM_COMMIT);
    mm.write_memory(USER_SPACE_END - 4, b"end!").unwrap();
}

#[test]
fn commit_limit_is_a_manager_setting_kept_across_restore_and_deserialize() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, RW, false, RegionKind::Private).unwrap();
    let snap = mm.snapshot();
    let mut bytes = Vec::new();
    mm.serialize_memory_state(&mut bytes, true);

    // A state with 16 committed pages restored under a limit of 4: kept
    // whole; commits fail until enough is released.
    let mut small = MemoryManager::new();
    small.set_commit_limit(Some(4 * PAGE_SIZE));
    small.restore(&snap);
    assert_eq!(small.commit_limit(), Some(4 * PAGE_SIZE));
    assert_eq!(small.compute_memory_stats().committed_memory, 16 * PAGE_SIZE);
    assert_eq!(
        small.allocate_memory_at(B, PAGE_SIZE, RW, false, RegionKind::Private),
        Err(exceeded(1, 16, 4 * PAGE_SIZE))
    );
    small.deserialize_memory_state(&bytes, true).unwrap();
    assert_eq!(small.commit_limit(), Some(4 * PAGE_SIZE));
    small.release_memory(A, 0).unwrap();
    small.allocate_memory_at(B, 4 * PAGE_SIZE, RW, false, RegionKind::Private).unwrap();

    // Unlimited stays unlimited through a restore.
    let mut free = MemoryManager::new();
    free.set_commit_limit(None);
    free.restore(&snap);
    assert_eq!(free.commit_limit(), None);
    // The setting is not part of the state: managers with different limits
    // serialize the same state to the same bytes.
    let serialized = |limit: Option<u64>| {
        let mut m = MemoryManager::new();
        m.set_commit_limit(limit);
        m.deserialize_memory_state(&bytes, true).unwrap();
        let mut out = Vec::new();
        m.serialize_memory_state(&mut out, true);
        out
    };
    assert_eq!(serialized(None), serialized(Some(PAGE_SIZE)));
}
