//! Sections and their views (docs/windows-semantics.md §11): every view of a
//! section shows the same bytes, whichever view writes them — also across
//! snapshot and restore; commit state belongs to the section, protection to
//! the view.

use vmsnap::{MemoryError, MemoryManager, PAGE_SIZE, PageChangeKind, Protection, RegionKind, SectionId};

const RW: Protection = Protection::READ_WRITE;

fn read(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mm.read_memory(address, &mut buf).unwrap();
    buf
}

fn two_views(mm: &mut MemoryManager, commit: bool) -> (SectionId, u64, u64) {
    let s = mm.create_section(0x20000, RW, commit).unwrap();
    let a = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    let b = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    (s, a, b)
}

#[test]
fn views_share_bytes_whichever_writes() {
    let mut mm = MemoryManager::new();
    let (_, a, b) = two_views(&mut mm, true);
    assert_ne!(a, b);
    assert_eq!(a % 0x10000, 0, "views are 64 KiB aligned");
    mm.write_memory(a + 0x1234, b"from A").unwrap();
    assert_eq!(read(&mm, b + 0x1234, 6), b"from A");
    mm.guest_write(b + 0x1ffe, b"B!!").unwrap(); // spans two pages
    assert_eq!(read(&mm, a + 0x1ffe, 3), b"B!!");
    // Reads cached before a write still see it (the TLB follows the section).
    let _ = read(&mm, b + 0x5000, 1);
    mm.write_memory(a + 0x5000, &[7]).unwrap();
    assert_eq!(read(&mm, b + 0x5000, 1), [7]);
    let r = mm.region_info(a);
    assert_eq!(
        (r.kind, r.length, r.allocation_base, r.is_committed),
        (RegionKind::PagefileView, 0x20000, a, true)
    );
}

#[test]
fn views_stay_coherent_through_snapshot_and_restore() {
    let mut mm = MemoryManager::new();
    let (s, a, b) = two_views(&mut mm, true);
    mm.write_memory(a, b"one").unwrap();
    let first = mm.snapshot();
    mm.write_memory(b, b"two").unwrap();
    let second = mm.snapshot();
    assert_eq!(read(&mm, a, 3), b"two");
    mm.restore(&first);
    assert_eq!(read(&mm, a, 3), b"one");
    assert_eq!(read(&mm, b, 3), b"one");
    mm.write_memory(a, b"ONE").unwrap();
    assert_eq!(read(&mm, b, 3), b"ONE");
    mm.restore(&second);
    assert_eq!(read(&mm, b, 3), b"two");
    // A snapshot reads through its views too.
    let mut buf = [0u8; 3];
    first.read_memory(b, &mut buf).unwrap();
    assert_eq!(&buf, b"one");
    // The diff shows a section write in every view.
    let diff = first.diff(&second);
    assert_eq!(diff.changed_pages().collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(diff.page_changes()[1].kind(), PageChangeKind::Modified);
    assert_eq!(diff.page_changes()[1].byte_ranges(), vec![0..3]);
    // Unmapping survives restore both ways.
    mm.unmap_view_of_section(a + 0x1000).unwrap();
    assert_eq!(mm.region_kind(a), RegionKind::Free);
    mm.restore(&first);
    assert_eq!(mm.region_kind(a), RegionKind::PagefileView);
    assert_eq!(mm.section_info(s).unwrap().views, 2);
}

#[test]
fn sec_reserve_commit_applies_to_the_section_protection_to_the_view() {
    // §11: commit RO through one view of a SEC_RESERVE section; a second view
    // shows the same pages committed with its own protection (RW).
    let mut mm = MemoryManager::new();
    let (_, a, b) = two_views(&mut mm, false);
    let r = mm.region_info(a);
    assert!(r.is_reserved && !r.is_committed);
    assert_eq!(mm.read_memory(b, &mut [0u8; 1]), Err(MemoryError::NotCommitted { address: b }));
    mm.commit_memory(a, 0x10000, Protection::READ).unwrap();
    let (ra, rb) = (mm.region_info(a), mm.region_info(b));
    assert_eq!((ra.is_committed, ra.permissions, ra.length), (true, Protection::READ, 0x10000));
    assert_eq!((rb.is_committed, rb.permissions, rb.length), (true, RW, 0x10000));
    assert!(!mm.region_info(b + 0x10000).is_committed);
    mm.write_memory(b + 8, b"x").unwrap();
    assert_eq!(read(&mm, a + 8, 1), b"x");
    // Re-commit through B does not change A's protection.
    mm.commit_memory(b, 0x1000, RW).unwrap();
    assert_eq!(mm.region_info(a).permissions, Protection::READ);
    assert_eq!(mm.compute_memory_stats().committed_memory, 0x20000, "view pages count per view");
}

#[test]
fn views_cannot_be_decommitted_or_released_only_unmapped() {
    let mut mm = MemoryManager::new();
    let (s, a, _) = two_views(&mut mm, true);
    let v = mm.layout_version();
    assert_eq!(mm.decommit_memory(a, 0x1000), Err(MemoryError::SectionView { base: a }));
    assert_eq!(mm.release_memory(a, 0), Err(MemoryError::SectionView { base: a }));
    assert_eq!(mm.release_memory(a, 0x1000), Err(MemoryError::SectionView { base: a }));
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.unmap_view_of_section(0x7000_0000), Err(MemoryError::NotAView { address: 0x7000_0000 }));
    mm.unmap_view_of_section(a + 0x1064).unwrap();
    assert_eq!(mm.region_info(a).kind, RegionKind::Free);
    assert_eq!(mm.section_info(s).unwrap().views, 1);
}

#[test]
fn a_section_lives_while_its_handle_or_a_view_does() {
    let mut mm = MemoryManager::new();
    let s = mm.create_section(0x1000, RW, true).unwrap();
    let a = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    mm.write_memory(a, b"kept").unwrap();
    mm.unmap_view_of_section(a).unwrap();
    // No view, handle open: the bytes are kept.
    let a = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    assert_eq!(read(&mm, a, 4), b"kept");
    mm.close_section(s).unwrap();
    // Closed: the view stays mapped, the handle is gone.
    assert_eq!(read(&mm, a, 4), b"kept");
    assert_eq!(mm.map_view_of_section(s, 0, 0, 0, RW), Err(MemoryError::UnknownSection { id: s.get() }));
    assert_eq!(mm.close_section(s), Err(MemoryError::UnknownSection { id: s.get() }));
    assert!(!mm.section_info(s).unwrap().open);
    mm.unmap_view_of_section(a).unwrap();
    assert_eq!(mm.section_info(s), None, "the last view freed the closed section");
}

#[test]
fn view_arguments_are_checked() {
    let mut mm = MemoryManager::new();
    let s = mm.create_section(0x20000, Protection::READ, true).unwrap();
    assert_eq!(
        mm.map_view_of_section(s, 0, 0x1000, 0, Protection::READ),
        Err(MemoryError::Misaligned { address: 0x1000, alignment: 0x10000 })
    );
    assert_eq!(
        mm.map_view_of_section(s, 0x2000_1000, 0, 0, Protection::READ),
        Err(MemoryError::Misaligned { address: 0x2000_1000, alignment: 0x10000 })
    );
    assert!(matches!(
        mm.map_view_of_section(s, 0, 0x10000, 0x20000, Protection::READ),
        Err(MemoryError::ViewOutsideSection { .. })
    ));
    assert_eq!(
        mm.map_view_of_section(s, 0, 0, 0, RW),
        Err(MemoryError::ProtectionExceedsMaximum { requested: RW, maximum: Protection::READ })
    );
    let a = mm.map_view_of_section(s, 0x2000_0000, 0x10000, 0, Protection::READ).unwrap();
    assert_eq!((a, mm.region_info(a).allocation_length), (0x2000_0000, 0x10000));
    assert!(matches!(
        mm.map_view_of_section(s, 0x2000_0000, 0, 0, Protection::READ),
        Err(MemoryError::ConflictingAddresses { .. })
    ));
    // Protect on a view stays within the view's maximum.
    assert_eq!(
        mm.protect_memory(a, 0x1000, RW),
        Err(MemoryError::ProtectionExceedsMaximum { requested: RW, maximum: Protection::READ })
    );
    assert_eq!(mm.protect_memory(a, 0x1000, Protection::empty()), Ok(Protection::READ));
    assert_eq!(mm.create_section(0, RW, true), Err(MemoryError::ZeroSize { address: 0 }));
    assert!(mm.create_section(u64::MAX, RW, true).is_err());
}

#[test]
fn a_write_copy_view_gets_a_private_copy_on_guest_write() {
    let mut mm = MemoryManager::new();
    let s = mm.create_section(0x2000, RW, true).unwrap();
    let shared = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    let wc = Protection::READ | Protection::WRITE_COPY;
    let private = mm.map_view_of_section(s, 0, 0, 0, wc).unwrap();
    mm.write_memory(shared, b"section").unwrap();
    assert_eq!(read(&mm, private, 7), b"section");
    mm.guest_write(private + 1, b"E").unwrap();
    assert_eq!(read(&mm, private, 7), b"sEction", "the writer sees its copy");
    assert_eq!(read(&mm, shared, 7), b"section", "the section is untouched");
    assert_eq!(mm.region_info(private).permissions, RW);
    mm.write_memory(shared + 0x1000, b"second page").unwrap();
    assert_eq!(read(&mm, private + 0x1000, 11), b"second page", "unwritten pages still share");
}

#[test]
fn serialization_round_trips_sections_and_views() {
    let mut mm = MemoryManager::new();
    let (s, a, b) = two_views(&mut mm, false);
    mm.commit_memory(a, 0x3000, Protection::READ).unwrap();
    mm.write_memory(b + 0x10, b"shared bytes").unwrap();
    mm.allocate_memory_at(b + 0x20000, 0x1000, RW, false, RegionKind::Private).unwrap(); // adjacent
    let mut buf = Vec::new();
    mm.serialize_memory_state(&mut buf, false);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&buf, false).unwrap();
    let mut again = Vec::new();
    copy.serialize_memory_state(&mut again, false);
    assert_eq!(buf, again);
    assert_eq!(read(&copy, a + 0x10, 12), b"shared bytes");
    copy.write_memory(a + 0x10, b"SHARED").unwrap();
    assert_eq!(read(&copy, b + 0x10, 6), b"SHARED", "views stay coherent after a round trip");
    assert_eq!(copy.region_info(a).permissions, Protection::READ);
    // The copy names the section with its own id (ids belong to a manager).
    assert_eq!(copy.section_info(s), None);
    let (own, info) = copy.sections().next().unwrap();
    assert_eq!((own.get(), info.views), (s.get(), 2));
    assert_eq!(copy.section_info(own), Some(info));
    assert_eq!(PAGE_SIZE, 0x1000);
}

#[test]
fn a_huge_reserved_view_costs_a_few_shared_nodes() {
    // A view's pages share one word (the distance to their section pages), so
    // a terabyte view is a handful of uniform page-table nodes, not 2^28
    // entries: mapping, committing a page and unmapping stay cheap.
    let mut mm = MemoryManager::new();
    let s = mm.create_section(1 << 40, RW, false).unwrap();
    let a = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    let b = mm.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    let middle = 0x80_0000_0000u64;
    mm.commit_memory(a + middle, 0x1000, RW).unwrap();
    mm.write_memory(b + middle + 5, b"far").unwrap();
    assert_eq!(read(&mm, a + middle + 5, 3), b"far");
    let r = mm.region_info(a);
    assert_eq!((r.length, r.is_committed), (middle, false));
    let snap = mm.snapshot();
    mm.unmap_view_of_section(a).unwrap();
    mm.unmap_view_of_section(b).unwrap();
    mm.restore(&snap);
    assert_eq!(read(&mm, b + middle + 5, 3), b"far");
}

// ------------------------------------------- identity across managers (#12 item 9)

/// What a failed call must leave alone: layout version, allocations,
/// committed bytes, sections (with their handle states and view counts).
fn state_of(mm: &MemoryManager) -> (u64, Vec<vmsnap::ReservedRegion>, u64, Vec<(u64, vmsnap::SectionInfo)>) {
    (
        mm.layout_version(),
        mm.reserved_regions().collect(),
        mm.compute_memory_stats().committed_memory,
        mm.sections().map(|(id, info)| (id.get(), info)).collect(),
    )
}

#[test]
fn identity_across_managers_a_foreign_section_id_is_refused_and_changes_nothing() {
    // Both managers have a section number 1: A's id must not name B's.
    let mut a = MemoryManager::new();
    let mut b = MemoryManager::new();
    let from_a = a.create_section(0x10000, RW, true).unwrap();
    let in_b = b.create_section(0x10000, RW, true).unwrap();
    assert_eq!((from_a.get(), in_b.get()), (1, 1));
    assert_ne!(from_a, in_b);
    let before = state_of(&b);

    assert_eq!(b.map_view_of_section(from_a, 0, 0, 0, RW), Err(MemoryError::ForeignSection { id: 1 }));
    assert_eq!(
        b.map_view_of_section(from_a, 0x2000_0000, 0, 0x1000, RW),
        Err(MemoryError::ForeignSection { id: 1 })
    );
    assert_eq!(b.close_section(from_a), Err(MemoryError::ForeignSection { id: 1 }));
    assert_eq!(b.section_info(from_a), None);
    assert_eq!(state_of(&b), before, "a refused foreign id changed the manager");
    assert!(b.section_info(in_b).unwrap().open, "B's own section is still open");

    // Each manager still takes its own id.
    b.map_view_of_section(in_b, 0, 0, 0, RW).unwrap();
    a.map_view_of_section(from_a, 0, 0, 0, RW).unwrap();
    assert_eq!(a.section_info(in_b), None);
}

#[test]
fn identity_across_managers_a_restored_state_gives_its_sections_new_ids() {
    // B takes A's state: it has A's section, named by B's own id; A's id
    // stays A's.
    let mut a = MemoryManager::new();
    let s = a.create_section(0x10000, RW, true).unwrap();
    let view = a.map_view_of_section(s, 0, 0, 0, RW).unwrap();
    a.write_memory(view, b"shared").unwrap();
    let snap = a.snapshot();

    let mut b = MemoryManager::new();
    b.restore(&snap);
    assert_eq!(b.close_section(s), Err(MemoryError::ForeignSection { id: s.get() }));
    let ids: Vec<(SectionId, vmsnap::SectionInfo)> = b.sections().collect();
    assert_eq!(ids.len(), 1);
    let (mine, info) = ids[0];
    assert_eq!((mine.get(), info.views, info.open), (s.get(), 1, true));
    assert_ne!(mine, s);
    let second = b.map_view_of_section(mine, 0, 0, 0, RW).unwrap();
    assert_eq!(read(&b, second, 6), b"shared");
    // A's own ids keep working in A.
    assert_eq!(a.sections().next().map(|(id, _)| id), Some(s));
}
