//! `vmsnap::nt` sections and views: NtCreateSection / NtMapViewOfSection /
//! NtUnmapViewOfSection / NtClose, and what NtAllocateVirtualMemory /
//! NtFreeVirtualMemory / NtProtectVirtualMemory / NtQueryVirtualMemory do on
//! views, against docs/windows-semantics.md §11 (and the view rules of §4.3, §5,
//! §6.1, §8). Test names start with the rule's evidence tag and section, as
//! in `virtual_memory.rs`: `w_11_...` is a [W] rule of §11, `r_` a
//! ReactOS one; untagged tests cover this crate's choices, coherence across
//! versions and hostile inputs.
//!
//! [W] rules of §11 NOT tested here, and why:
//! * "Image views: AllocationProtect is 0x80, the header page 0x02" and "on
//!   image views VirtualProtect turns RW requests into WC": image mapping is
//!   `vmsnap::image` (tests/image/); the nt face keeps its Image-kind
//!   behaviour.
//! * NtMapViewOfSection with a NULL process (STATUS_INVALID_HANDLE), zero_bits
//!   22 (STATUS_INVALID_PARAMETER_4) and AT_ROUND_TO_PAGE
//!   (STATUS_INVALID_PARAMETER_9): the call maps into the current process and
//!   takes no process handle, zero_bits or allocation type.
//! * "On a file-backed view VirtualAlloc(MEM_COMMIT) always fails with
//!   ERROR_ACCESS_DENIED": only pagefile-backed sections exist; the rule is
//!   checked on an engine allocation of kind FileView.

use vmsnap::nt::*;

use crate::common;
use common::nt::*;
use vmsnap::{
    Access, MAX_ALLOCATION_ADDRESS, MemoryError, MemoryManager, Protection, RegionKind, USER_SPACE_END,
};

/// Free, 64 KiB-aligned addresses the tests place explicit views at.
const A: u64 = 0x2000_0000;
const B: u64 = 0x3000_0000;
const C: u64 = 0x4000_0000;

/// The eight base protections, in `PAGE_*` order.
const BASES: [u32; 8] = [
    PAGE_NOACCESS,
    PAGE_READONLY,
    PAGE_READWRITE,
    PAGE_WRITECOPY,
    PAGE_EXECUTE,
    PAGE_EXECUTE_READ,
    PAGE_EXECUTE_READWRITE,
    PAGE_EXECUTE_WRITECOPY,
];

// ------------------------------------------------------------------- helpers

fn create(mm: &mut MemoryManager, size: u64, prot: u32, attributes: u32) -> SectionHandle {
    nt_create_section(mm, size, prot, attributes).expect("section")
}

/// `NtMapViewOfSection`; on failure also checks that base and size were left
/// as given.
fn map(
    mm: &mut MemoryManager,
    section: SectionHandle,
    base: u64,
    offset: u64,
    size: u64,
    prot: u32,
) -> Result<(u64, u64), NtStatus> {
    let (mut b, mut s) = (base, size);
    let status = nt_map_view_of_section(mm, section, &mut b, offset, &mut s, prot);
    if status.is_success() {
        assert_eq!(status, NtStatus::SUCCESS);
        Ok((b, s))
    } else {
        assert_eq!((b, s), (base, size), "outputs written on failure ({status})");
        Err(status)
    }
}

/// A view of the whole section at a system-picked address.
fn view(mm: &mut MemoryManager, section: SectionHandle, prot: u32) -> u64 {
    map(mm, section, 0, 0, 0, prot).expect("view").0
}

/// The access a `PAGE_*` base value needs, or a view mapped with it allows:
/// (read, write, execute). Write-copy needs (and allows) read access only: a
/// write-copy page never writes the section.
fn access(prot: u32) -> (bool, bool, bool) {
    match prot & 0xFF {
        PAGE_NOACCESS => (false, false, false),
        PAGE_READONLY | PAGE_WRITECOPY => (true, false, false),
        PAGE_READWRITE => (true, true, false),
        PAGE_EXECUTE => (false, false, true),
        PAGE_EXECUTE_READ | PAGE_EXECUTE_WRITECOPY => (true, false, true),
        _ => (true, true, true),
    }
}

/// True when `prot` asks for no more than a view mapped with `maximum` allows.
fn within(prot: u32, maximum: u32) -> bool {
    let ((r, w, x), (mr, mw, mx)) = (access(prot), access(maximum));
    (!r || mr) && (!w || mw) && (!x || mx)
}

// --------------------------------------------------------------- §11 views

#[test]
fn w_11_view_base_is_64k_aligned_type_mapped_allocation_base_is_the_view_base() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x3000, PAGE_READWRITE, SEC_COMMIT);
    let mut bases = Vec::new();
    for _ in 0..4 {
        let v = view(&mut mm, s, PAGE_READWRITE);
        assert_eq!(v % 0x10000, 0, "{v:#x}");
        for page in [v, v + 0x1000, v + 0x2FFF] {
            let mbi = query(&mm, page);
            assert_eq!((mbi.type_, mbi.allocation_base), (MEM_MAPPED, v));
            assert_eq!(mbi.base_address, page & !0xFFF);
        }
        assert_eq!(mm.region_kind(v), RegionKind::PagefileView);
        bases.push(v);
    }
    bases.sort();
    bases.dedup();
    assert_eq!(bases.len(), 4, "every view has its own base");
}

#[test]
fn w_11_two_views_share_bytes() {
    // Pagefile-backed sections: every view of one section shows the same
    // bytes, whichever view (guest or host) writes them (crate docs of `vmsnap::nt`, §11).
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x30000, PAGE_READWRITE, SEC_COMMIT);
    let a = view(&mut mm, s, PAGE_READWRITE);
    let b = view(&mut mm, s, PAGE_READWRITE);
    let (tail, _) = map(&mut mm, s, 0, 0x20000, 0, PAGE_READONLY).unwrap();
    mm.guest_write(a + 0x1FFC, b"across pages").unwrap();
    assert_eq!(read(&mm, b + 0x1FFC, 12), b"across pages");
    mm.write_memory(b + 0x20010, b"host write").unwrap();
    assert_eq!(read(&mm, a + 0x20010, 10), b"host write");
    let mut buf = [0u8; 10];
    mm.guest_read(tail + 0x10, &mut buf).unwrap();
    assert_eq!(&buf, b"host write");
    // A read cached before a write sees the write.
    assert_eq!(read(&mm, a + 0x5000, 1), [0]);
    mm.guest_write(b + 0x5000, &[0x5A]).unwrap();
    assert_eq!(read(&mm, a + 0x5000, 1), [0x5A]);
}

#[test]
fn w_11_allocation_protect_is_the_protection_the_view_was_mapped_with() {
    // FILE_MAP_READ 0x02, FILE_MAP_WRITE 0x04, FILE_MAP_COPY 0x08, and with
    // FILE_MAP_EXECUTE 0x20, 0x40, 0x80 [W]; NOACCESS and EXECUTE views too.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x2000, PAGE_EXECUTE_READWRITE, SEC_COMMIT);
    for prot in BASES {
        let v = view(&mut mm, s, prot);
        let mbi = query(&mm, v);
        assert_eq!((mbi.allocation_protect, mbi.protect, mbi.state), (prot, prot, MEM_COMMIT), "{prot:#x}");
        assert_eq!(mbi.region_size, 0x2000);
    }
    // The modifier PAGE_GUARD is part of the value too.
    let v = view(&mut mm, s, PAGE_READWRITE | PAGE_GUARD);
    assert_eq!((query(&mm, v).allocation_protect, query(&mm, v).protect), (0x104, 0x104));
}

#[test]
fn w_11_region_size_is_the_page_rounded_view_size() {
    let mut mm = MemoryManager::new();
    // A view of a 4096-byte mapping is 0x1000, a view of a 0x100000 mapping 0x100000 [W].
    for size in [0x1000, 0x100000] {
        let s = create(&mut mm, size, PAGE_READWRITE, SEC_COMMIT);
        let (v, len) = map(&mut mm, s, 0, 0, 0, PAGE_READWRITE).unwrap();
        assert_eq!(len, size);
        assert_eq!(query(&mm, v).region_size, size);
        assert_eq!(mm.region_info(v).allocation_length, size);
    }
    // Sizes round up to pages: the section's, and a view's.
    let s = create(&mut mm, 0x1801, PAGE_READWRITE, SEC_COMMIT);
    let (v, len) = map(&mut mm, s, 0, 0, 0, PAGE_READWRITE).unwrap();
    assert_eq!((len, query(&mm, v).region_size), (0x2000, 0x2000));
    let (v, len) = map(&mut mm, s, 0, 0, 0x1001, PAGE_READWRITE).unwrap();
    assert_eq!((len, query(&mm, v).region_size), (0x2000, 0x2000));
    let (v, len) = map(&mut mm, s, 0, 0, 1, PAGE_READWRITE).unwrap();
    assert_eq!((len, query(&mm, v).region_size), (0x1000, 0x1000));
}

#[test]
fn w_11_sec_commit_views_start_committed() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    for prot in [PAGE_READWRITE, PAGE_READONLY, PAGE_WRITECOPY] {
        let v = view(&mut mm, s, prot);
        assert_eq!(regions(&mm, v), vec![(v, 0x20000, MEM_COMMIT, prot)]);
        assert_eq!(read(&mm, v, 0x20000), vec![0; 0x20000], "new sections are zero-filled");
    }
}

#[test]
fn w_11_sec_reserve_views_start_reserved_protect_0_allocation_protect_rw() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_RESERVE);
    let v = view(&mut mm, s, PAGE_READWRITE);
    let mbi = query(&mm, v + 0x5000);
    assert_eq!((mbi.state, mbi.protect, mbi.allocation_protect), (MEM_RESERVE, 0, PAGE_READWRITE));
    assert_eq!((mbi.type_, mbi.allocation_base, mbi.region_size), (MEM_MAPPED, v, 0x1B000));
    assert_eq!(regions(&mm, v), vec![(v, 0x20000, MEM_RESERVE, 0)]);
    // Reserved view pages are not accessible.
    assert!(mm.read_memory(v, &mut [0u8; 1]).is_err());
    assert_eq!(
        mm.guest_write(v, b"x"),
        Err(MemoryError::AccessViolation { address: v, access: Access::Write })
    );
}

#[test]
fn w_11_sec_reserve_commit_applies_to_section_protection_to_view() {
    // VirtualAlloc(view, 0x10000, MEM_COMMIT, PAGE_READONLY) on a SEC_RESERVE
    // view succeeds; the view shows COMMIT/RO for 0x10000, a second view of
    // the same section COMMIT/RW for the same 0x10000 [W test_MapViewOfFile].
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_RESERVE);
    let first = view(&mut mm, s, PAGE_READWRITE);
    let second = view(&mut mm, s, PAGE_READWRITE);
    assert_eq!(alloc(&mut mm, first, 0x10000, MEM_COMMIT, PAGE_READONLY), Ok((first, 0x10000)));
    assert_eq!(
        regions(&mm, first),
        vec![(first, 0x10000, MEM_COMMIT, PAGE_READONLY), (first + 0x10000, 0x10000, MEM_RESERVE, 0)]
    );
    assert_eq!(
        regions(&mm, second),
        vec![(second, 0x10000, MEM_COMMIT, PAGE_READWRITE), (second + 0x10000, 0x10000, MEM_RESERVE, 0)]
    );
    // A view mapped later shows the section's commit state with its own protection.
    let third = view(&mut mm, s, PAGE_WRITECOPY);
    assert_eq!(
        regions(&mm, third),
        vec![(third, 0x10000, MEM_COMMIT, PAGE_WRITECOPY), (third + 0x10000, 0x10000, MEM_RESERVE, 0)]
    );
    // The committed pages are shared.
    mm.guest_write(second + 0x20, b"through the second view").unwrap();
    assert_eq!(read(&mm, first + 0x20, 23), b"through the second view");
    assert_eq!(read(&mm, third + 0x20, 23), b"through the second view");
}

#[test]
fn w_11_commit_on_a_view_within_its_access_succeeds_beyond_it_gives_87() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_EXECUTE_READWRITE, SEC_RESERVE);
    for view_prot in BASES {
        let v = view(&mut mm, s, view_prot);
        for prot in BASES {
            let within = within(prot, view_prot);
            let result = alloc(&mut mm, v + 0x1000, 0x1000, MEM_COMMIT, prot);
            if within {
                assert_eq!(result, Ok((v + 0x1000, 0x1000)), "view {view_prot:#x}, commit {prot:#x}");
                assert_eq!(query(&mm, v + 0x1000).protect, prot);
            } else {
                let status = result.unwrap_err();
                assert_eq!(status, NtStatus::SECTION_PROTECTION, "view {view_prot:#x}, commit {prot:#x}");
                assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
            }
        }
        nt_unmap_view_of_section(&mut mm, v);
    }
    // A failed commit changes nothing, in any view.
    let v = view(&mut mm, s, PAGE_READONLY);
    fails_unchanged(&mut mm, NtStatus::SECTION_PROTECTION, |mm| {
        nt_allocate_virtual_memory(mm, &mut (v + 0x2000), 0, &mut 0x1000, MEM_COMMIT, PAGE_READWRITE)
    });
    assert_eq!(query(&mm, v + 0x2000).state, MEM_RESERVE);
}

#[test]
fn w_11_commit_on_a_file_backed_view_gives_access_denied() {
    // Only pagefile-backed sections exist here; an engine allocation of kind
    // FileView stands for a file-backed view.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, Protection::READ_WRITE, true, RegionKind::FileView).unwrap();
    for prot in [PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY] {
        fails_unchanged(&mut mm, NtStatus::ALREADY_COMMITTED, |mm| {
            nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut 0x1000, MEM_COMMIT, prot)
        });
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::ALREADY_COMMITTED), ERROR_ACCESS_DENIED);
}

#[test]
fn w_4_3_commit_on_a_view_reports_the_newly_requested_protection_and_keeps_bytes() {
    // §4.3 [W]: anonymous section views report the newly requested protection.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READWRITE);
    mm.write_memory(v + 0x1000, b"kept").unwrap();
    assert_eq!(alloc(&mut mm, v + 0x1000, 0x2000, MEM_COMMIT, PAGE_READONLY), Ok((v + 0x1000, 0x2000)));
    assert_eq!(
        regions(&mm, v),
        vec![
            (v, 0x1000, MEM_COMMIT, PAGE_READWRITE),
            (v + 0x1000, 0x2000, MEM_COMMIT, PAGE_READONLY),
            (v + 0x3000, 0xD000, MEM_COMMIT, PAGE_READWRITE),
        ]
    );
    assert_eq!(read(&mm, v + 0x1000, 4), b"kept");
    assert_eq!(query(&mm, v + 0x1000).allocation_protect, PAGE_READWRITE, "AllocationProtect never changes");
}

#[test]
fn w_11_views_cannot_be_decommitted_or_freed() {
    // VirtualFree(view, 0x10000, MEM_DECOMMIT) → 87 [W]; at NT level
    // STATUS_UNABLE_TO_DELETE_SECTION [R] (§6.1), for decommit and release alike.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READWRITE);
    mm.write_memory(v + 0x10, b"still here").unwrap();
    for ty in [MEM_DECOMMIT, MEM_RELEASE] {
        for (base, size) in [(v, 0x10000), (v, 0), (v + 0x1000, 0x1000), (v + 0x1FFFF, 1)] {
            let before = fingerprint(&mm);
            let status = free(&mut mm, base, size, ty).unwrap_err();
            assert_eq!(status, NtStatus::UNABLE_TO_DELETE_SECTION, "{ty:#x} {base:#x}+{size:#x}");
            assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
            assert_eq!(fingerprint(&mm), before);
        }
    }
    assert_eq!(read(&mm, v + 0x10, 10), b"still here");
    assert_eq!(regions(&mm, v), vec![(v, 0x20000, MEM_COMMIT, PAGE_READWRITE)]);
}

#[test]
fn w_11_unmap_any_address_inside_view() {
    // UnmapViewOfFile(base + 100 / base + 0x1000 / base + 0x1064) unmaps the
    // whole view [W]; so do its base and its last byte.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x3000, PAGE_READWRITE, SEC_COMMIT);
    for inside in [0, 100, 0x1000, 0x1064, 0x2FFF] {
        let v = view(&mut mm, s, PAGE_READWRITE);
        assert_eq!(nt_unmap_view_of_section(&mut mm, v + inside), NtStatus::SUCCESS, "+{inside:#x}");
        assert_eq!(mm.region_kind(v), RegionKind::Free);
        assert!(!mm.overlaps_reserved_region(v, 0x3000));
    }
    assert_eq!(mm.section_info(s.id()).unwrap().views, 0);
}

#[test]
fn w_11_unmap_of_private_memory_or_a_wild_pointer_gives_not_mapped_view() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READWRITE);
    let (private, _) = alloc(&mut mm, A, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, B, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    mm.allocate_mmio(C, 0x1000, |_, buf| buf.fill(0), |_, _| {}).unwrap();
    for wild in [
        private,
        private + 0x1000,
        B + 0x8000,
        C,
        0xdeadbeef,
        0,
        v + 0x1000, // the view's unused granule tail is free
        MAX_ALLOCATION_ADDRESS,
        USER_SPACE_END,
        u64::MAX,
    ] {
        fails_unchanged(&mut mm, NtStatus::NOT_MAPPED_VIEW, |mm| nt_unmap_view_of_section(mm, wild));
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::NOT_MAPPED_VIEW), ERROR_INVALID_ADDRESS);
    // Unmapped twice: the second time there is no view.
    assert_eq!(nt_unmap_view_of_section(&mut mm, v), NtStatus::SUCCESS);
    fails_unchanged(&mut mm, NtStatus::NOT_MAPPED_VIEW, |mm| nt_unmap_view_of_section(mm, v));
}

#[test]
fn w_11_after_unmap_the_range_is_free() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    let (v, _) = map(&mut mm, s, A, 0, 0, PAGE_READWRITE).unwrap();
    let before = mm.compute_memory_stats().committed_memory;
    nt_unmap_view_of_section(&mut mm, v + 0x1234);
    for at in [v, v + 0x1000, v + 0x1FFFF] {
        let mbi = query(&mm, at);
        assert_eq!((mbi.state, mbi.protect, mbi.type_), (MEM_FREE, PAGE_NOACCESS, 0));
        assert_eq!((mbi.allocation_base, mbi.allocation_protect), (0, 0));
    }
    assert_eq!(mm.compute_memory_stats().committed_memory, before - 0x20000);
    // The address can be used again, by a view or by private memory.
    assert_eq!(map(&mut mm, s, A, 0, 0x10000, PAGE_READONLY), Ok((A, 0x10000)));
    assert_eq!(alloc(&mut mm, A + 0x10000, 0x1000, MEM_RESERVE, PAGE_READWRITE), Ok((A + 0x10000, 0x1000)));
}

#[test]
fn w_11_close_handle_keeps_views() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x2000, PAGE_READWRITE, SEC_COMMIT);
    let a = view(&mut mm, s, PAGE_READWRITE);
    let b = view(&mut mm, s, PAGE_READONLY);
    mm.write_memory(a, b"before close").unwrap();
    assert_eq!(nt_close_section(&mut mm, s), NtStatus::SUCCESS);
    // Views stay mapped, with their bytes, still shared.
    assert_eq!(regions(&mm, a), vec![(a, 0x2000, MEM_COMMIT, PAGE_READWRITE)]);
    assert_eq!(read(&mm, b, 12), b"before close");
    mm.guest_write(a + 0x1000, b"after close").unwrap();
    assert_eq!(read(&mm, b + 0x1000, 11), b"after close");
    // The handle is dead.
    fails_unchanged(&mut mm, NtStatus::INVALID_HANDLE, |mm| nt_close_section(mm, s));
    fails_unchanged(&mut mm, NtStatus::INVALID_HANDLE, |mm| {
        nt_map_view_of_section(mm, s, &mut 0, 0, &mut 0, PAGE_READONLY)
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_HANDLE), ERROR_INVALID_HANDLE);
    // The last view gone, the section is gone.
    assert_eq!(nt_unmap_view_of_section(&mut mm, a), NtStatus::SUCCESS);
    assert_eq!(read(&mm, b, 12), b"before close");
    assert_eq!(nt_unmap_view_of_section(&mut mm, b + 0x1FFF), NtStatus::SUCCESS);
    assert_eq!(mm.section_info(s.id()), None);
}

#[test]
fn a_section_keeps_its_bytes_with_no_view_while_its_handle_is_open() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READWRITE);
    mm.write_memory(v + 8, b"kept").unwrap();
    nt_unmap_view_of_section(&mut mm, v);
    let v = view(&mut mm, s, PAGE_READONLY);
    assert_eq!(read(&mm, v + 8, 4), b"kept");
    nt_unmap_view_of_section(&mut mm, v);
    // Closing the handle of a section with no views frees it.
    assert_eq!(nt_close_section(&mut mm, s), NtStatus::SUCCESS);
    assert_eq!(mm.section_info(s.id()), None);
}

#[test]
fn w_11_protect_on_a_read_view_allows_only_noaccess_readonly_writecopy() {
    // On a FILE_MAP_READ view only NA, RO and WC succeed [W test_mapping].
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_EXECUTE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READONLY);
    for prot in BASES {
        let result = protect(&mut mm, v, 0x1000, prot);
        if matches!(prot, PAGE_NOACCESS | PAGE_READONLY | PAGE_WRITECOPY) {
            assert!(result.is_ok(), "{prot:#x}: {result:?}");
            assert_eq!(query(&mm, v).protect, prot);
        } else {
            let status = result.unwrap_err();
            assert_eq!(status, NtStatus::SECTION_PROTECTION, "{prot:#x}");
            assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
        }
    }
}

#[test]
fn w_11_protect_on_a_view_stays_within_its_maximum_writecopy_allowed_when_readable() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_EXECUTE_READWRITE, SEC_COMMIT);
    for view_prot in BASES {
        let v = view(&mut mm, s, view_prot);
        for prot in BASES {
            let before = fingerprint(&mm);
            match protect(&mut mm, v + 0x1000, 0x1000, prot) {
                Ok((base, size, _)) => {
                    assert!(within(prot, view_prot), "view {view_prot:#x} allowed {prot:#x}");
                    assert_eq!((base, size, query(&mm, v + 0x1000).protect), (v + 0x1000, 0x1000, prot));
                }
                Err(status) => {
                    assert!(!within(prot, view_prot), "view {view_prot:#x} refused {prot:#x}: {status}");
                    assert_eq!(status, NtStatus::SECTION_PROTECTION);
                    assert_eq!(fingerprint(&mm), before);
                }
            }
        }
        // AllocationProtect never changes.
        assert_eq!(query(&mm, v + 0x1000).allocation_protect, view_prot);
        nt_unmap_view_of_section(&mut mm, v);
    }
    // A write-copy protection on a readable view, with its old value back.
    let v = view(&mut mm, s, PAGE_READWRITE);
    assert_eq!(protect(&mut mm, v, 0x2000, PAGE_WRITECOPY), Ok((v, 0x2000, PAGE_READWRITE)));
    assert_eq!(protect(&mut mm, v, 0x1000, PAGE_READONLY | PAGE_GUARD), Ok((v, 0x1000, PAGE_WRITECOPY)));
    assert_eq!(protect(&mut mm, v, 0x1000, PAGE_WRITECOPY | PAGE_GUARD), Ok((v, 0x1000, 0x102)));
    assert_eq!(query(&mm, v).protect, PAGE_WRITECOPY | PAGE_GUARD);
}

#[test]
fn w_11_write_to_a_writecopy_page_makes_it_rw_and_splits_the_region() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x3000, PAGE_READWRITE, SEC_COMMIT);
    let shared = view(&mut mm, s, PAGE_READWRITE);
    let wc = view(&mut mm, s, PAGE_WRITECOPY);
    mm.write_memory(shared, &[7; 0x3000]).unwrap();
    assert_eq!(read(&mm, wc + 0x1000, 4), [7; 4], "unwritten write-copy pages show the section");
    mm.guest_write(wc + 0x1800, b"copy").unwrap();
    assert_eq!(
        regions(&mm, wc),
        vec![
            (wc, 0x1000, MEM_COMMIT, PAGE_WRITECOPY),
            (wc + 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
            (wc + 0x2000, 0x1000, MEM_COMMIT, PAGE_WRITECOPY),
        ]
    );
    assert_eq!(query(&mm, wc + 0x1000).allocation_protect, PAGE_WRITECOPY);
    assert_eq!(read(&mm, wc + 0x1800, 4), b"copy");
    assert_eq!(read(&mm, wc + 0x17FF, 1), [7], "the copy starts from the section's bytes");
    assert_eq!(read(&mm, shared + 0x1800, 4), [7; 4], "the section is untouched");
    // The copied page is the view's own now; the others still follow the section.
    mm.write_memory(shared + 0x1000, &[9; 0x2000]).unwrap();
    assert_eq!(read(&mm, wc + 0x1000, 1), [7]);
    assert_eq!(read(&mm, wc + 0x2000, 1), [9]);
}

#[test]
fn w_8_a_copied_writecopy_page_merges_with_equal_neighbours() {
    // §8 [W]: RegionSize runs to the first page that differs in State,
    // Protect, Type or AllocationBase. A copied page (now RW) next to shared
    // RW pages of the same view differs in none of them.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x3000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, s, PAGE_READWRITE);
    protect(&mut mm, v, 0x1000, PAGE_WRITECOPY).unwrap();
    mm.guest_write(v, b"copied").unwrap();
    assert_eq!(regions(&mm, v), vec![(v, 0x3000, MEM_COMMIT, PAGE_READWRITE)]);
}

#[test]
fn w_11_write_to_an_execute_writecopy_page_makes_it_execute_readwrite() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x2000, PAGE_EXECUTE_READWRITE, SEC_COMMIT);
    let ewc = view(&mut mm, s, PAGE_EXECUTE_WRITECOPY);
    let other = view(&mut mm, s, PAGE_EXECUTE_READ);
    mm.guest_write(ewc + 0x1000, &[0xC3]).unwrap();
    assert_eq!(
        regions(&mm, ewc),
        vec![(ewc, 0x1000, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY), (ewc + 0x1000, 0x1000, MEM_COMMIT, 0x40)]
    );
    let mut code = [0u8; 1];
    mm.guest_fetch(ewc + 0x1000, &mut code).unwrap();
    assert_eq!(code, [0xC3]);
    assert_eq!(read(&mm, other + 0x1000, 1), [0], "the other view keeps the section's byte");
}

#[test]
fn w_11_writecopy_set_by_protect_on_a_shared_view_copies_on_write() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x2000, PAGE_READWRITE, SEC_COMMIT);
    let a = view(&mut mm, s, PAGE_READWRITE);
    let b = view(&mut mm, s, PAGE_READWRITE);
    protect(&mut mm, a, 0x1000, PAGE_WRITECOPY).unwrap();
    mm.guest_write(a, b"private").unwrap();
    assert_eq!(query(&mm, a).protect, PAGE_READWRITE);
    assert_eq!(read(&mm, b, 7), [0; 7]);
    // The page not made write-copy still writes the section.
    mm.guest_write(a + 0x1000, b"shared").unwrap();
    assert_eq!(read(&mm, b + 0x1000, 6), b"shared");
}

#[test]
fn guest_access_follows_the_view_protection() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_EXECUTE_READWRITE, SEC_COMMIT);
    let rw = view(&mut mm, s, PAGE_READWRITE);
    let ro = view(&mut mm, s, PAGE_READONLY);
    let na = view(&mut mm, s, PAGE_NOACCESS);
    let x = view(&mut mm, s, PAGE_EXECUTE);
    mm.guest_write(rw, &[0x90]).unwrap();
    let mut buf = [0u8; 1];
    mm.guest_read(ro, &mut buf).unwrap();
    assert_eq!(buf, [0x90]);
    assert_eq!(
        mm.guest_write(ro, b"x"),
        Err(MemoryError::AccessViolation { address: ro, access: Access::Write })
    );
    assert_eq!(
        mm.guest_read(na, &mut buf),
        Err(MemoryError::AccessViolation { address: na, access: Access::Read })
    );
    assert_eq!(
        mm.guest_fetch(rw, &mut buf),
        Err(MemoryError::AccessViolation { address: rw, access: Access::Execute })
    );
    mm.guest_fetch(x, &mut buf).unwrap();
    assert_eq!(exception_code(&mm.guest_write(x, b"x").unwrap_err()), Some(NtStatus::ACCESS_VIOLATION));
}

// ---------------------------------------------------- NtMapViewOfSection

#[test]
fn w_11_map_offset_not_64k_aligned_gives_mapped_alignment() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x40000, PAGE_READWRITE, SEC_COMMIT);
    for offset in [1, 0x1000, 0x8000, 0x10001, 0x0004_0211, u64::MAX] {
        for base in [0, A] {
            fails_unchanged(&mut mm, NtStatus::MAPPED_ALIGNMENT, |mm| {
                nt_map_view_of_section(mm, s, &mut base.clone(), offset, &mut 0x1000, PAGE_READWRITE)
            });
        }
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::MAPPED_ALIGNMENT), ERROR_MAPPED_ALIGNMENT);
    assert!(map(&mut mm, s, 0, 0x30000, 0, PAGE_READWRITE).is_ok());
}

#[test]
fn w_11_map_address_not_64k_aligned_gives_mapped_alignment() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_READWRITE, SEC_COMMIT);
    for base in [A + 42, A + 0x1000, A + 0xFFFF, 0x0056_7A20, 0x3000_1000, 1] {
        fails_unchanged(&mut mm, NtStatus::MAPPED_ALIGNMENT, |mm| {
            nt_map_view_of_section(mm, s, &mut base.clone(), 0, &mut 0x1000, PAGE_READWRITE)
        });
    }
    assert_eq!(map(&mut mm, s, A, 0, 0x1000, PAGE_READWRITE), Ok((A, 0x1000)));
}

#[test]
fn w_11_map_overlapping_an_existing_view_gives_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    assert_eq!(map(&mut mm, s, A, 0, 0, PAGE_READWRITE), Ok((A, 0x20000)));
    for base in [A, A + 0x10000, A - 0x10000] {
        fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
            nt_map_view_of_section(mm, s, &mut base.clone(), 0, &mut 0, PAGE_READWRITE)
        });
    }
    // A view over private memory conflicts too [R kmtest].
    alloc(&mut mm, B, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_map_view_of_section(mm, s, &mut B.clone(), 0, &mut 0x1000, PAGE_READWRITE)
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::CONFLICTING_ADDRESSES), ERROR_INVALID_ADDRESS);
    // Right after the first view is free.
    assert_eq!(map(&mut mm, s, A + 0x20000, 0, 0x1000, PAGE_READWRITE), Ok((A + 0x20000, 0x1000)));
}

#[test]
fn w_11_view_size_larger_than_the_section_gives_invalid_view_size() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    for (offset, size) in [
        (0, 0x20001),
        (0, 0x30000),
        (0x10000, 0x10001),
        (0x20000, 0),      // at the end, "to the end" is empty
        (0x20000, 0x1000), // past the end
        (0x30000, 0),
        (0xFFFF_FFFF_FFFF_0000, 0x10000), // offset + size overflows
        (0xFFFF_FFFF_FFFF_0000, 0),
        (1 << 63, 0x1000),
    ] {
        fails_unchanged(&mut mm, NtStatus::INVALID_VIEW_SIZE, |mm| {
            nt_map_view_of_section(mm, s, &mut 0, offset, &mut size.clone(), PAGE_READWRITE)
        });
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_VIEW_SIZE), ERROR_ACCESS_DENIED);
    assert!(map(&mut mm, s, 0, 0x10000, 0x10000, PAGE_READWRITE).is_ok());
}

#[test]
fn view_size_zero_maps_from_the_offset_to_the_end() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x35000, PAGE_READWRITE, SEC_COMMIT);
    let whole = view(&mut mm, s, PAGE_READWRITE);
    mm.write_memory(whole + 0x20000, b"offset 0x20000").unwrap();
    mm.write_memory(whole + 0x34FF0, b"last bytes").unwrap();
    let (v, size) = map(&mut mm, s, 0, 0x20000, 0, PAGE_READONLY).unwrap();
    assert_eq!(size, 0x15000);
    assert_eq!(query(&mm, v).region_size, 0x15000);
    assert_eq!(read(&mm, v, 14), b"offset 0x20000");
    assert_eq!(read(&mm, v + 0x14FF0, 10), b"last bytes");
    // A sized view at an offset shows that part of the section.
    let (v, size) = map(&mut mm, s, 0, 0x30000, 0x5000, PAGE_READONLY).unwrap();
    assert_eq!(size, 0x5000);
    assert_eq!(read(&mm, v + 0x4FF0, 10), b"last bytes");
}

#[test]
fn map_writes_back_base_and_rounded_size_only_on_success() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_COMMIT);
    let (mut base, mut size) = (B, 0x1234);
    assert_eq!(
        nt_map_view_of_section(&mut mm, s, &mut base, 0x10000, &mut size, PAGE_READWRITE),
        NtStatus::SUCCESS
    );
    assert_eq!((base, size), (B, 0x2000));
    let (mut base, mut size) = (B, 0x1234);
    let status = nt_map_view_of_section(&mut mm, s, &mut base, 0x10000, &mut size, PAGE_READWRITE);
    assert_eq!((status, base, size), (NtStatus::CONFLICTING_ADDRESSES, B, 0x1234));
    // A system-picked base is written back.
    let (mut base, mut size) = (0, 0);
    assert!(nt_map_view_of_section(&mut mm, s, &mut base, 0, &mut size, PAGE_READWRITE).is_success());
    assert!(base != 0 && base % 0x10000 == 0 && size == 0x20000);
    assert_eq!(query(&mm, base).allocation_base, base);
}

#[test]
fn system_picked_views_start_at_the_default_address_and_never_overlap() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x18000, PAGE_READWRITE, SEC_COMMIT);
    let mut views: Vec<(u64, u64)> = Vec::new();
    for _ in 0..8 {
        let (v, size) = map(&mut mm, s, 0, 0, 0, PAGE_READWRITE).unwrap();
        assert!(v >= mm.default_allocation_address());
        assert!(views.iter().all(|&(w, wsize)| v + size <= w || w + wsize <= v), "{v:#x} overlaps");
        views.push((v, size));
    }
    // When nothing fits above the default address, lower memory is used.
    mm.set_default_allocation_address(USER_SPACE_END - 0x10000);
    let (v, _) = map(&mut mm, s, 0, 0, 0, PAGE_READWRITE).unwrap();
    assert!(v < USER_SPACE_END - 0x10000 && v % 0x10000 == 0);
}

#[test]
fn r_11_map_beyond_the_section_protection_gives_section_protection() {
    // ReactOS kmtest ZwMapViewOfSection, run against Windows [R].
    let mut mm = MemoryManager::new();
    for section_prot in [
        PAGE_READONLY,
        PAGE_READWRITE,
        PAGE_WRITECOPY,
        PAGE_EXECUTE_READ,
        PAGE_EXECUTE_READWRITE,
        PAGE_EXECUTE_WRITECOPY,
    ] {
        let s = create(&mut mm, 0x1000, section_prot, SEC_COMMIT);
        for prot in BASES {
            // A PAGE_WRITECOPY section allows what a PAGE_READONLY one does.
            let maximum = match section_prot {
                PAGE_WRITECOPY => PAGE_READONLY,
                PAGE_EXECUTE_WRITECOPY => PAGE_EXECUTE_READ,
                p => p,
            };
            let before = fingerprint(&mm);
            match map(&mut mm, s, 0, 0, 0, prot) {
                Ok((v, _)) => {
                    assert!(within(prot, maximum), "section {section_prot:#x} allowed {prot:#x}");
                    nt_unmap_view_of_section(&mut mm, v);
                }
                Err(status) => {
                    assert!(!within(prot, maximum), "section {section_prot:#x} refused {prot:#x}");
                    assert_eq!(status, NtStatus::SECTION_PROTECTION);
                    assert_eq!(fingerprint(&mm), before);
                }
            }
        }
    }
    // The kmtest cases themselves.
    let rw = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    let ro = create(&mut mm, 0x1000, PAGE_READONLY, SEC_COMMIT);
    assert_eq!(map(&mut mm, rw, 0, 0, 0, PAGE_EXECUTE_WRITECOPY), Err(NtStatus::SECTION_PROTECTION));
    assert_eq!(map(&mut mm, rw, 0, 0, 0, PAGE_EXECUTE_READWRITE), Err(NtStatus::SECTION_PROTECTION));
    assert_eq!(map(&mut mm, ro, 0, 0, 0, PAGE_READWRITE), Err(NtStatus::SECTION_PROTECTION));
    assert_eq!(map(&mut mm, ro, 0, 0, 0, PAGE_EXECUTE_READ), Err(NtStatus::SECTION_PROTECTION));
    assert_eq!(map(&mut mm, ro, 0, 0, 0, PAGE_EXECUTE), Err(NtStatus::SECTION_PROTECTION));
    assert!(map(&mut mm, ro, 0, 0, 0, PAGE_WRITECOPY).is_ok());
    assert!(map(&mut mm, rw, 0, 0, 0, PAGE_NOACCESS).is_ok());
    assert_eq!(nt_status_to_dos_error(NtStatus::SECTION_PROTECTION), ERROR_INVALID_PARAMETER);
}

#[test]
fn r_11_map_with_an_invalid_protection_gives_invalid_page_protection() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    for prot in [
        0,
        PAGE_READWRITE | PAGE_READONLY,
        0x0C,
        PAGE_NOACCESS | PAGE_GUARD,
        PAGE_READWRITE | PAGE_NOCACHE,
        PAGE_READWRITE | PAGE_WRITECOMBINE,
        0x800,
        PAGE_READWRITE | PAGE_TARGETS_INVALID,
        u32::MAX,
    ] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_map_view_of_section(mm, s, &mut 0, 0, &mut 0, prot)
        });
        // Checked before the handle, the address and the offset.
        assert_eq!(map(&mut mm, s, A + 1, 1, u64::MAX, prot), Err(NtStatus::INVALID_PAGE_PROTECTION));
    }
}

#[test]
fn r_11_map_base_or_size_outside_user_space_gives_invalid_parameter_3() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_READWRITE, SEC_COMMIT);
    for (base, size) in [
        (MAX_ALLOCATION_ADDRESS + 1, 0),
        (USER_SPACE_END, 0x1000),
        (0x8000_0000_0000 + 200, 0),
        (u64::MAX, 0),
        (0, u64::MAX),
        (0, USER_SPACE_END + 1),
        (A, USER_SPACE_END - A + 1),
        (USER_SPACE_END - 0x10000, 0x10001),
    ] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_3, |mm| {
            nt_map_view_of_section(mm, s, &mut base.clone(), 0, &mut size.clone(), PAGE_READWRITE)
        });
    }
    // The highest granule works.
    assert_eq!(
        map(&mut mm, s, USER_SPACE_END - 0x10000, 0, 0, PAGE_READWRITE),
        Ok((USER_SPACE_END - 0x10000, 0x10000))
    );
}

#[test]
fn map_with_a_closed_handle_gives_invalid_handle() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    nt_close_section(&mut mm, s);
    fails_unchanged(&mut mm, NtStatus::INVALID_HANDLE, |mm| {
        nt_map_view_of_section(mm, s, &mut 0, 0, &mut 0, PAGE_READWRITE)
    });
    // The handle is checked before alignment and size, after the protection.
    assert_eq!(map(&mut mm, s, A + 1, 0x1000, 0x1000, PAGE_READWRITE), Err(NtStatus::INVALID_HANDLE));
    assert_eq!(map(&mut mm, s, 0, 0, 0, 0x03), Err(NtStatus::INVALID_PAGE_PROTECTION));
}

// ------------------------------------------------------- NtCreateSection

#[test]
fn w_11_create_section_rejects_noaccess_execute_zero_and_combinations() {
    // The CreateFileMapping column of §5 [W].
    let mut mm = MemoryManager::new();
    for prot in 0..0x1000u32 {
        let before = fingerprint(&mm);
        match nt_create_section(&mut mm, 0x1000, prot, SEC_COMMIT) {
            Ok(s) => {
                assert!([0x02, 0x04, 0x08, 0x20, 0x40, 0x80].contains(&prot), "{prot:#x} accepted");
                assert_eq!(nt_close_section(&mut mm, s), NtStatus::SUCCESS);
            }
            Err(status) => {
                assert_eq!(status, NtStatus::INVALID_PAGE_PROTECTION, "{prot:#x}");
                assert_eq!(fingerprint(&mm), before);
            }
        }
    }
    for prot in [PAGE_NOACCESS, PAGE_EXECUTE, 0, PAGE_READONLY | PAGE_READWRITE, PAGE_READWRITE | PAGE_GUARD]
    {
        let status = nt_create_section(&mut mm, 0x1000, prot, SEC_RESERVE).unwrap_err();
        assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
    }
}

#[test]
fn w_5_create_section_accepts_writecopy() {
    let mut mm = MemoryManager::new();
    for prot in [PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY] {
        let s = create(&mut mm, 0x1000, prot, SEC_COMMIT);
        let v = view(&mut mm, s, prot);
        assert_eq!(query(&mm, v).allocation_protect, prot);
        // The guest's write stays in its view.
        mm.guest_write(v, b"mine").unwrap();
        let other = view(&mut mm, s, PAGE_READONLY);
        assert_eq!(read(&mm, other, 4), [0; 4]);
    }
}

#[test]
fn w_11_create_section_rejects_reserve_and_commit_together() {
    let mut mm = MemoryManager::new();
    for attributes in [
        SEC_RESERVE | SEC_COMMIT,
        0,
        SEC_NOCACHE,
        SEC_IMAGE,
        SEC_IMAGE | SEC_COMMIT,
        SEC_FILE | SEC_COMMIT,
        0x1 | SEC_COMMIT,
        0x0020_0000 | SEC_RESERVE, // SEC_BASED
        0x0040_0000 | SEC_COMMIT,  // SEC_NO_CHANGE
        u32::MAX,
    ] {
        let before = fingerprint(&mm);
        let status = nt_create_section(&mut mm, 0x1000, PAGE_READWRITE, attributes).unwrap_err();
        assert_eq!(status, NtStatus::INVALID_PARAMETER, "{attributes:#x}");
        assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
        assert_eq!(fingerprint(&mm), before);
    }
    // Attributes are checked before the protection [R].
    assert_eq!(
        nt_create_section(&mut mm, 0x1000, PAGE_NOACCESS, SEC_RESERVE | SEC_COMMIT),
        Err(NtStatus::INVALID_PARAMETER)
    );
}

#[test]
fn create_section_size_and_unmodelled_attributes() {
    let mut mm = MemoryManager::new();
    let v = mm.layout_version();
    assert_eq!(nt_create_section(&mut mm, 0, PAGE_READWRITE, SEC_COMMIT), Err(NtStatus::INVALID_PARAMETER));
    assert_eq!(
        nt_create_section(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT | SEC_LARGE_PAGES),
        Err(NtStatus::PRIVILEGE_NOT_HELD)
    );
    for modifier in [SEC_NOCACHE, SEC_WRITECOMBINE] {
        assert_eq!(
            nt_create_section(&mut mm, 0x1000, PAGE_READWRITE, SEC_RESERVE | modifier),
            Err(NtStatus::NOT_SUPPORTED)
        );
    }
    for size in [u64::MAX, u64::MAX - 0xFFE, 1 << 63, 1 << 48] {
        assert_eq!(nt_create_section(&mut mm, size, PAGE_READWRITE, SEC_COMMIT), Err(NtStatus::NO_MEMORY));
    }
    assert_eq!(mm.layout_version(), v);
    // A size is rounded up to whole pages.
    let s = create(&mut mm, 1, PAGE_READWRITE, SEC_COMMIT);
    assert_eq!(mm.section_info(s.id()).unwrap().size, 0x1000);
    assert_eq!(SectionHandle::from(s.id()), s);
}

#[test]
fn huge_sections_are_cheap_until_mapped() {
    // A 64 GiB section, committed or reserved, costs a few page-table nodes;
    // a small view of its far end works.
    let mut mm = MemoryManager::new();
    for attributes in [SEC_COMMIT, SEC_RESERVE] {
        let s = create(&mut mm, 1 << 36, PAGE_READWRITE, attributes);
        let (v, size) = map(&mut mm, s, 0, (1 << 36) - 0x10000, 0, PAGE_READWRITE).unwrap();
        assert_eq!(size, 0x10000);
        let expected = if attributes == SEC_COMMIT { MEM_COMMIT } else { MEM_RESERVE };
        assert_eq!(query(&mm, v).state, expected);
        nt_unmap_view_of_section(&mut mm, v);
        nt_close_section(&mut mm, s);
    }
}

// ------------------------------------------- NtAllocate / NtProtect on views

#[test]
fn r_11_commit_past_the_view_end_gives_conflicting_addresses() {
    // ReactOS apitest NtMapViewOfSection [R]: a view of 2 pages of a larger
    // section; committing 3 pages from its base conflicts.
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_RESERVE);
    assert_eq!(map(&mut mm, s, A, 0, 0x2000, PAGE_READWRITE), Ok((A, 0x2000)));
    assert_eq!(alloc(&mut mm, A, 0x1000, MEM_COMMIT, PAGE_READWRITE), Ok((A, 0x1000)));
    for (base, size) in [(A, 0x3000), (A + 0x2000, 0x1000), (A + 0x1FFF, 2)] {
        fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
            nt_allocate_virtual_memory(
                mm,
                &mut base.clone(),
                0,
                &mut size.clone(),
                MEM_COMMIT,
                PAGE_READWRITE,
            )
        });
    }
    // Reserving in the view's granule tail conflicts; the next granule works.
    assert_eq!(
        alloc(&mut mm, A + 0x2000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE),
        Err(NtStatus::CONFLICTING_ADDRESSES)
    );
    assert!(alloc(&mut mm, A + 0x10000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).is_ok());
    // Commit in a SEC_COMMIT view succeeds too [R].
    let c = create(&mut mm, 0x2000, PAGE_READWRITE, SEC_COMMIT);
    let v = view(&mut mm, c, PAGE_READWRITE);
    assert_eq!(alloc(&mut mm, v + 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE), Ok((v + 0x1000, 0x1000)));
}

#[test]
fn r_11_cache_modifiers_on_a_view_are_refused() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x10000, PAGE_READWRITE, SEC_RESERVE);
    let v = view(&mut mm, s, PAGE_READWRITE);
    for modifier in [PAGE_NOCACHE, PAGE_WRITECOMBINE] {
        // Commit through a view [R]: STATUS_INVALID_PAGE_PROTECTION.
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_allocate_virtual_memory(
                mm,
                &mut v.clone(),
                0,
                &mut 0x1000,
                MEM_COMMIT,
                PAGE_READWRITE | modifier,
            )
        });
    }
    alloc(&mut mm, v, 0x1000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    for modifier in [PAGE_NOCACHE, PAGE_WRITECOMBINE] {
        // Protect in a view [R]: STATUS_INVALID_PARAMETER_4.
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_4, |mm| {
            nt_protect_virtual_memory(mm, &mut v.clone(), &mut 0x1000, PAGE_READONLY | modifier, &mut 0)
        });
    }
}

#[test]
fn writecopy_is_refused_for_private_memory_and_accepted_on_views_and_images() {
    let mut mm = MemoryManager::new();
    let (p, _) = alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, B, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    mm.allocate_memory_at(C, 0x2000, Protection::READ_EXECUTE, false, RegionKind::Image).unwrap();
    for wc in [PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY] {
        for ty in [MEM_RESERVE, MEM_RESERVE | MEM_COMMIT] {
            fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
                nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, ty, wc)
            });
        }
        for at in [p, B, C, 0x5000_0000] {
            fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
                nt_allocate_virtual_memory(mm, &mut at.clone(), 0, &mut 0x1000, MEM_COMMIT, wc)
            });
            if at != C {
                fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
                    nt_protect_virtual_memory(mm, &mut at.clone(), &mut 0x1000, wc, &mut 0)
                });
            }
        }
    }
    // §11: an image view accepts write-copy protections.
    assert_eq!(protect(&mut mm, C, 0x1000, PAGE_WRITECOPY), Ok((C, 0x1000, PAGE_EXECUTE_READ)));
    // A view next door accepts them.
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_RESERVE);
    let (v, _) = map(&mut mm, s, A + 0x10000, 0, 0, PAGE_READWRITE).unwrap();
    assert_eq!(alloc(&mut mm, v, 0x1000, MEM_COMMIT, PAGE_WRITECOPY), Ok((v, 0x1000)));
    assert_eq!(protect(&mut mm, v, 0x1000, PAGE_READONLY), Ok((v, 0x1000, PAGE_WRITECOPY)));
}

#[test]
fn unmap_releases_an_image_view() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(C, 0x3000, Protection::READ_EXECUTE, false, RegionKind::Image).unwrap();
    assert_eq!(query(&mm, C + 0x2000).type_, MEM_IMAGE);
    assert_eq!(nt_unmap_view_of_section(&mut mm, C + 0x2345), NtStatus::SUCCESS);
    assert_eq!(query(&mm, C).state, MEM_FREE);
}

// ------------------------------------------------------------ §8 queries

#[test]
fn w_8_queries_on_views_report_state_protect_type_base_allocation_protect_and_size() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x40000, PAGE_EXECUTE_READWRITE, SEC_RESERVE);
    let (v, _) = map(&mut mm, s, A, 0x10000, 0x30000, PAGE_EXECUTE_READ).unwrap();
    let (w, _) = map(&mut mm, s, B, 0, 0, PAGE_READWRITE).unwrap();
    // Commit two pages through the view of offset 0x10000 …
    alloc(&mut mm, v + 0x3000, 0x2000, MEM_COMMIT, PAGE_EXECUTE_READ).unwrap();
    // … and guard the second.
    protect(&mut mm, v + 0x4000, 0x1000, PAGE_READONLY | PAGE_GUARD).unwrap();
    let expect = |mbi: MemoryBasicInformation, base, size, state, prot, alloc_base, alloc_prot| {
        assert_eq!(
            (mbi.base_address, mbi.region_size, mbi.state, mbi.protect),
            (base, size, state, prot),
            "query at {base:#x}"
        );
        assert_eq!(
            (mbi.allocation_base, mbi.allocation_protect, mbi.type_),
            (alloc_base, alloc_prot, MEM_MAPPED)
        );
        assert_eq!(mbi.partition_id, 0);
    };
    expect(query(&mm, v + 0x10), v, 0x3000, MEM_RESERVE, 0, v, PAGE_EXECUTE_READ);
    expect(query(&mm, v + 0x3FFF), v + 0x3000, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ, v, PAGE_EXECUTE_READ);
    expect(query(&mm, v + 0x4000), v + 0x4000, 0x1000, MEM_COMMIT, 0x102, v, PAGE_EXECUTE_READ);
    expect(query(&mm, v + 0x7000), v + 0x7000, 0x29000, MEM_RESERVE, 0, v, PAGE_EXECUTE_READ);
    // The other view sees the same two pages at section offset 0x13000, RW.
    expect(query(&mm, w), w, 0x13000, MEM_RESERVE, 0, w, PAGE_READWRITE);
    expect(query(&mm, w + 0x13000), w + 0x13000, 0x2000, MEM_COMMIT, PAGE_READWRITE, w, PAGE_READWRITE);
    expect(query(&mm, w + 0x15000), w + 0x15000, 0x2B000, MEM_RESERVE, 0, w, PAGE_READWRITE);
    // Past the view: free up to the next allocation.
    let after = query(&mm, v + 0x30000);
    assert_eq!((after.state, after.allocation_base, after.region_size), (MEM_FREE, 0, B - (v + 0x30000)));
    // A snapshot answers the same.
    let snap = mm.snapshot();
    for at in [v, v + 0x3000, v + 0x4000, w + 0x13000] {
        assert_eq!(MemoryBasicInformation::from(snap.region_info(at)), query(&mm, at));
    }
}

// ------------------------------------------------- coherence and versions

#[test]
fn two_views_stay_coherent_through_snapshot_and_restore() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x20000, PAGE_READWRITE, SEC_RESERVE);
    let a = view(&mut mm, s, PAGE_READWRITE);
    let b = view(&mut mm, s, PAGE_READWRITE);
    alloc(&mut mm, a, 0x2000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    mm.guest_write(a, b"one").unwrap();
    let first = mm.snapshot();

    mm.guest_write(b, b"two").unwrap(); // through the other view
    alloc(&mut mm, b + 0x10000, 0x1000, MEM_COMMIT, PAGE_READONLY).unwrap();
    mm.write_memory(a + 0x10000, b"host").unwrap();
    let second = mm.snapshot();
    assert_eq!(read(&mm, a, 3), b"two");
    assert_eq!(read(&mm, b + 0x10000, 4), b"host");

    mm.restore(&first);
    assert_eq!((read(&mm, a, 3), read(&mm, b, 3)), (b"one".to_vec(), b"one".to_vec()));
    assert_eq!(query(&mm, a + 0x10000).state, MEM_RESERVE, "the later commit is undone in every view");
    assert_eq!(query(&mm, b + 0x10000).state, MEM_RESERVE);
    // Writes after a restore go to both views again, whichever writes.
    mm.guest_write(b + 1, b"NE").unwrap();
    assert_eq!(read(&mm, a, 3), b"oNE");
    mm.guest_write(a + 0xFFE, b"span").unwrap(); // across two pages
    assert_eq!(read(&mm, b + 0xFFE, 4), b"span");
    let third = mm.snapshot();

    mm.restore(&second);
    assert_eq!((read(&mm, a, 3), read(&mm, b, 3)), (b"two".to_vec(), b"two".to_vec()));
    assert_eq!(
        (query(&mm, a + 0x10000).protect, query(&mm, b + 0x10000).protect),
        (PAGE_READWRITE, PAGE_READONLY)
    );
    assert_eq!(read(&mm, b + 0x10000, 4), b"host");

    // Unmapping and closing are undone by restore too.
    nt_unmap_view_of_section(&mut mm, a);
    nt_close_section(&mut mm, s);
    assert_eq!(query(&mm, a).state, MEM_FREE);
    mm.restore(&third);
    assert_eq!(read(&mm, a, 3), b"oNE");
    assert_eq!(read(&mm, b + 0xFFE, 4), b"span");
    mm.guest_write(a, b"ONE").unwrap();
    assert_eq!(read(&mm, b, 3), b"ONE");
    assert!(map(&mut mm, s, 0, 0, 0, PAGE_READONLY).is_ok(), "the handle is open again in this version");

    // Frozen versions read through their views.
    let mut buf = [0u8; 3];
    first.read_memory(b, &mut buf).unwrap();
    assert_eq!(&buf, b"one");
    second.read_memory(a, &mut buf).unwrap();
    assert_eq!(&buf, b"two");
}

#[test]
fn writecopy_copies_survive_snapshot_and_restore() {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x1000, PAGE_READWRITE, SEC_COMMIT);
    let shared = view(&mut mm, s, PAGE_READWRITE);
    let wc = view(&mut mm, s, PAGE_WRITECOPY);
    mm.write_memory(shared, b"section").unwrap();
    let before = mm.snapshot();
    mm.guest_write(wc, b"S").unwrap();
    let after = mm.snapshot();
    mm.restore(&before);
    assert_eq!(query(&mm, wc).protect, PAGE_WRITECOPY);
    mm.write_memory(shared, b"SECTION").unwrap();
    assert_eq!(read(&mm, wc, 7), b"SECTION", "before the write the page is shared again");
    mm.restore(&after);
    assert_eq!((read(&mm, wc, 7), read(&mm, shared, 7)), (b"Section".to_vec(), b"section".to_vec()));
    assert_eq!(query(&mm, wc).protect, PAGE_READWRITE);
}

// ------------------------------------------------------------ hostile input

const HOSTILE_ADDRESSES: [u64; 14] = [
    0,
    1,
    0xFFFF,
    0x10000,
    A,
    A + 0x10000,
    A + 0x1FFF,
    MAX_ALLOCATION_ADDRESS - 0xFFFF,
    USER_SPACE_END - 0x10000,
    USER_SPACE_END,
    1 << 47,
    1 << 63,
    u64::MAX - 0xFFFF,
    u64::MAX,
];

const HOSTILE_SIZES: [u64; 12] = [
    0,
    1,
    0x1000,
    0x10001,
    0x30000,
    0x30001,
    USER_SPACE_END - A,
    USER_SPACE_END,
    1 << 63,
    u64::MAX - 0xFFFF,
    u64::MAX - 0xFFF,
    u64::MAX,
];

const HOSTILE_OFFSETS: [u64; 8] =
    [0, 0x1000, 0x10000, 0x20000, 0x30000, 1 << 47, u64::MAX - 0xFFFF, u64::MAX];

/// A view of a 0x30000-byte SEC_RESERVE section at `A`, its first page
/// committed, and the section's handle.
fn hostile_setup() -> (MemoryManager, SectionHandle) {
    let mut mm = MemoryManager::new();
    let s = create(&mut mm, 0x30000, PAGE_READWRITE, SEC_RESERVE);
    map(&mut mm, s, A, 0, 0, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A, 0x1000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    (mm, s)
}

#[test]
fn hostile_maps_fail_cleanly_or_stay_inside_the_section_and_user_space() {
    let (mut mm, s) = hostile_setup();
    for &base in &HOSTILE_ADDRESSES {
        for &offset in &HOSTILE_OFFSETS {
            for &size in &HOSTILE_SIZES {
                for prot in [PAGE_READWRITE, PAGE_WRITECOPY, PAGE_EXECUTE_READ, 0x03, u32::MAX] {
                    let before = fingerprint(&mm);
                    match map(&mut mm, s, base, offset, size, prot) {
                        Ok((b, len)) => {
                            assert!(b % 0x10000 == 0 && b.checked_add(len).unwrap() <= USER_SPACE_END);
                            assert!(offset + len <= 0x30000 && len > 0 && len % 0x1000 == 0);
                            assert_eq!(query(&mm, b).allocation_base, b);
                            assert_eq!(nt_unmap_view_of_section(&mut mm, b), NtStatus::SUCCESS);
                            assert_eq!(fingerprint(&mm).1, before.1, "unmap restores the layout");
                        }
                        Err(status) => {
                            assert!(!status.is_success());
                            assert_eq!(fingerprint(&mm), before, "{base:#x} {offset:#x} {size:#x} {prot:#x}");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(mm.section_info(s.id()).unwrap().views, 1);
}

#[test]
fn hostile_section_calls_fail_cleanly() {
    let (mut mm, s) = hostile_setup();
    for &size in &HOSTILE_SIZES {
        for prot in [0, PAGE_READWRITE, PAGE_EXECUTE, PAGE_WRITECOPY | PAGE_GUARD, u32::MAX] {
            for attributes in [0, SEC_COMMIT, SEC_RESERVE, SEC_COMMIT | SEC_RESERVE, SEC_IMAGE, u32::MAX] {
                let before = fingerprint(&mm);
                match nt_create_section(&mut mm, size, prot, attributes) {
                    Ok(h) => {
                        assert!(size > 0);
                        let info = mm.section_info(h.id()).unwrap();
                        assert_eq!(info.size, vmsnap::page_up(size).unwrap());
                        assert_eq!(nt_close_section(&mut mm, h), NtStatus::SUCCESS);
                        assert_eq!(mm.section_info(h.id()), None);
                    }
                    Err(_) => assert_eq!(fingerprint(&mm), before),
                }
            }
        }
    }
    for &address in HOSTILE_ADDRESSES.iter().filter(|&&a| !(A..A + 0x30000).contains(&a)) {
        fails_unchanged(&mut mm, NtStatus::NOT_MAPPED_VIEW, |mm| nt_unmap_view_of_section(mm, address));
    }
    // Views ignore hostile frees, commits and protections.
    for &base in &HOSTILE_ADDRESSES {
        for &size in &HOSTILE_SIZES {
            for prot in [PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY, PAGE_WRITECOPY | PAGE_NOCACHE] {
                let before = fingerprint(&mm);
                let (mut b, mut len) = (base, size);
                let status = nt_allocate_virtual_memory(&mut mm, &mut b, 0, &mut len, MEM_COMMIT, prot);
                if !status.is_success() {
                    assert_eq!(fingerprint(&mm), before);
                } else if base == 0 {
                    // A NULL base with MEM_COMMIT makes a private allocation.
                    assert_eq!(query(&mm, b).type_, MEM_PRIVATE);
                    free(&mut mm, b, 0, MEM_RELEASE).unwrap();
                }
                let before = fingerprint(&mm);
                let status =
                    nt_protect_virtual_memory(&mut mm, &mut base.clone(), &mut size.clone(), prot, &mut 0);
                if !status.is_success() {
                    assert_eq!(fingerprint(&mm), before);
                }
            }
            for ty in [MEM_DECOMMIT, MEM_RELEASE] {
                if (A..A + 0x30000).contains(&base) {
                    let before = fingerprint(&mm);
                    assert!(free(&mut mm, base, size, ty).is_err());
                    assert_eq!(fingerprint(&mm), before);
                }
            }
        }
    }
    assert_eq!(query(&mm, A).type_, MEM_MAPPED);
    assert_eq!(nt_close_section(&mut mm, s), NtStatus::SUCCESS);
    assert_eq!(nt_close_section(&mut mm, s), NtStatus::INVALID_HANDLE);
}

#[test]
fn failed_section_calls_leave_the_layout_version_unchanged() {
    let (mut mm, s) = hostile_setup();
    let v = mm.layout_version();
    let _ = nt_create_section(&mut mm, 0x1000, PAGE_NOACCESS, SEC_COMMIT);
    let _ = map(&mut mm, s, A, 0, 0, PAGE_READWRITE);
    let _ = map(&mut mm, s, 0, 0x1000, 0, PAGE_READWRITE);
    let _ = map(&mut mm, s, 0, 0, 0, PAGE_EXECUTE_READ);
    let _ = nt_unmap_view_of_section(&mut mm, B);
    let _ = alloc(&mut mm, A, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ);
    let _ = protect(&mut mm, A, 0x1000, PAGE_EXECUTE_READ);
    let _ = free(&mut mm, A, 0, MEM_RELEASE);
    assert_eq!(mm.layout_version(), v);
}

// ------------------------------------------- identity across managers (#12 item 9)

#[test]
fn identity_across_managers_a_foreign_handle_is_invalid_handle() {
    let mut a = MemoryManager::new();
    let mut b = MemoryManager::new();
    let from_a = create(&mut a, 0x10000, PAGE_READWRITE, SEC_COMMIT);
    let in_b = create(&mut b, 0x10000, PAGE_READWRITE, SEC_COMMIT);
    assert_eq!(from_a.id().get(), in_b.id().get(), "both are section 1 of their manager");
    fails_unchanged(&mut b, NtStatus::INVALID_HANDLE, |mm| {
        let (mut base, mut size) = (0, 0);
        nt_map_view_of_section(mm, from_a, &mut base, 0, &mut size, PAGE_READWRITE)
    });
    fails_unchanged(&mut b, NtStatus::INVALID_HANDLE, |mm| nt_close_section(mm, from_a));
    assert!(b.section_info(in_b.id()).unwrap().open);
    assert_eq!(nt_close_section(&mut b, in_b), NtStatus::SUCCESS);
}
