//! `vmsnap::nt`: NtAllocateVirtualMemory / NtFreeVirtualMemory /
//! NtProtectVirtualMemory / NtQueryVirtualMemory against the rules of
//! docs/windows-semantics.md. Test names start with the rule's evidence tag and
//! section: `w_4_3_...` is a [W] rule of §4.3, `r_`/`d_`/`i_` the weaker
//! tags; tests without a tag cover this crate's own choices, conversions and
//! hostile inputs.
//!
//! [W] rules of §2–§10 NOT tested here, and why:
//! * §2 KUSER_SHARED_DATA at 0x7FFE0000: the document leaves modelling it to
//!   the re-implementation; `nt` does not create it (an emulator may map it
//!   with `allocate_mmio`).
//! * §2 "a 0x20000000-aligned allocation below 0x20001000 gets
//!   STATUS_NO_MEMORY" and §4.5 MEM_ADDRESS_REQUIREMENTS: these belong to
//!   NtAllocateVirtualMemoryEx, which `nt` does not provide.
//! * §4.1 step 1, §6.1, §7 NULL process handle → STATUS_INVALID_HANDLE: the
//!   calls act on the current process and take no handle.
//! * §4.3 "anonymous section views report the newly requested protection":
//!   tested with real sections in `nt_sections.rs`
//!   (`w_4_3_commit_on_a_view_reports_the_newly_requested_protection_...`).
//! * §6.1 "VirtualFree with MEM_RELEASE and a non-zero size fails": a check
//!   of the Win32 wrapper, made before any Nt call; `nt` is the Nt layer,
//!   where partial release is allowed (§6.3, tested).
//! * §7 old_prot NULL → STATUS_ACCESS_VIOLATION: `&mut u32` cannot be NULL.
//! * §8 "VirtualQuery returns sizeof(MBI)" and the buffer-length rule: the
//!   query returns the structure itself; its size (48) and layout are tested.
//! * §8 MemoryRegionInformation (STATUS_INVALID_ADDRESS on a free address):
//!   that information class is not provided.
//! * §9 the exception record (NumberParameters = 2, access code, address):
//!   raising exceptions is the emulator's job; the engine's error carries the
//!   access kind and address, and `exception_code` gives the status (tested).
//! * §9 RtlCreateUserStack's guard-page layout: no such call here; the same
//!   layout built with Nt calls is tested (`w_9_stack_layout_...`).
//! * §10 placeholder memory filled with 0xCC: placeholders are not modelled;
//!   the "release, allocate again, reads zeros" part is tested.
//! * §10 ReadProcessMemory across a NOACCESS page → ERROR_PARTIAL_COPY:
//!   NtReadVirtualMemory is not part of `nt`.
//! * §11 (sections and views): tested in `nt_sections.rs`, with the view
//!   rules of §4.3, §5, §6.1 and §8 on real sections. The ones expressible
//!   through engine allocations of kind FileView / PagefileView / Image
//!   (§4.3 commit in a file view, §6.1 free of a view, §8 Type) are also
//!   tested here.
//! * §12 VirtualLock: not part of `nt`.

use vmsnap::nt::*;

use crate::common;
use common::nt::*;
use vmsnap::{
    Access, MAX_ALLOCATION_ADDRESS, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, Protection,
    RegionKind, USER_SPACE_END,
};

/// A free, 64 KiB-aligned address the tests place explicit allocations at.
const A: u64 = 0x2000_0000;
/// Another one, far from `A`.
const B: u64 = 0x3000_0000;

// ------------------------------------------------------------------- helpers

/// A new allocation where the system picks the address.
fn new_alloc(mm: &mut MemoryManager, size: u64, ty: u32, prot: u32) -> u64 {
    alloc(mm, 0, size, ty, prot).expect("allocation").0
}

// ------------------------------------------------------ §1: statuses, layout

#[test]
fn status_values_match_windows() {
    let table = [
        (NtStatus::SUCCESS, 0x0000_0000),
        (NtStatus::GUARD_PAGE_VIOLATION, 0x8000_0001),
        (NtStatus::ACCESS_VIOLATION, 0xC000_0005),
        (NtStatus::INFO_LENGTH_MISMATCH, 0xC000_0004),
        (NtStatus::INVALID_HANDLE, 0xC000_0008),
        (NtStatus::INVALID_PARAMETER, 0xC000_000D),
        (NtStatus::NO_MEMORY, 0xC000_0017),
        (NtStatus::CONFLICTING_ADDRESSES, 0xC000_0018),
        (NtStatus::NOT_MAPPED_VIEW, 0xC000_0019),
        (NtStatus::UNABLE_TO_FREE_VM, 0xC000_001A),
        (NtStatus::UNABLE_TO_DELETE_SECTION, 0xC000_001B),
        (NtStatus::ALREADY_COMMITTED, 0xC000_0021),
        (NtStatus::ACCESS_DENIED, 0xC000_0022),
        (NtStatus::NOT_COMMITTED, 0xC000_002D),
        (NtStatus::INVALID_PAGE_PROTECTION, 0xC000_0045),
        (NtStatus::FREE_VM_NOT_AT_BASE, 0xC000_009F),
        (NtStatus::MEMORY_NOT_ALLOCATED, 0xC000_00A0),
        (NtStatus::INVALID_PARAMETER_1, 0xC000_00EF),
        (NtStatus::INVALID_PARAMETER_3, 0xC000_00F1),
        (NtStatus::INVALID_PARAMETER_4, 0xC000_00F2),
        (NtStatus::INVALID_PARAMETER_5, 0xC000_00F3),
        (NtStatus::INVALID_PARAMETER_9, 0xC000_00F7),
        (NtStatus::INVALID_PARAMETER_12, 0xC000_00FA),
        (NtStatus::INVALID_ADDRESS, 0xC000_0141),
        (NtStatus::INVALID_VIEW_SIZE, 0xC000_001F),
        (NtStatus::MAPPED_ALIGNMENT, 0xC000_0220),
        (NtStatus::IMAGE_NOT_AT_BASE, 0x4000_0003),
    ];
    for (status, value) in table {
        assert_eq!(status.0, value, "{status}");
        assert!(status.name().is_some());
    }
    assert_eq!(NtStatus::ACCESS_VIOLATION.to_string(), "STATUS_ACCESS_VIOLATION (0xC0000005)");
    assert_eq!(NtStatus(0xC0DE_0001).to_string(), "NTSTATUS 0xC0DE0001");
    assert!(NtStatus::SUCCESS.is_success() && NtStatus::IMAGE_NOT_AT_BASE.is_success());
    assert!(!NtStatus::GUARD_PAGE_VIOLATION.is_success() && !NtStatus::NO_MEMORY.is_success());
}

#[test]
fn constant_values_match_windows() {
    let page = [
        (PAGE_NOACCESS, 0x01),
        (PAGE_READONLY, 0x02),
        (PAGE_READWRITE, 0x04),
        (PAGE_WRITECOPY, 0x08),
        (PAGE_EXECUTE, 0x10),
        (PAGE_EXECUTE_READ, 0x20),
        (PAGE_EXECUTE_READWRITE, 0x40),
        (PAGE_EXECUTE_WRITECOPY, 0x80),
        (PAGE_GUARD, 0x100),
        (PAGE_NOCACHE, 0x200),
        (PAGE_WRITECOMBINE, 0x400),
    ];
    let mem = [
        (MEM_COMMIT, 0x1000),
        (MEM_RESERVE, 0x2000),
        (MEM_DECOMMIT, 0x4000),
        (MEM_RELEASE, 0x8000),
        (MEM_FREE, 0x10000),
        (MEM_PRIVATE, 0x20000),
        (MEM_MAPPED, 0x40000),
        (MEM_RESET, 0x80000),
        (MEM_TOP_DOWN, 0x100000),
        (MEM_WRITE_WATCH, 0x200000),
        (MEM_PHYSICAL, 0x400000),
        (MEM_IMAGE, 0x1000000),
        (MEM_LARGE_PAGES, 0x20000000),
        (AT_ROUND_TO_PAGE, 0x40000000),
        (SEC_RESERVE, 0x4000000),
        (SEC_COMMIT, 0x8000000),
        (SEC_IMAGE, 0x1000000),
        (SEC_FILE, 0x800000),
    ];
    for (c, v) in page.into_iter().chain(mem) {
        assert_eq!(c, v);
    }
}

#[test]
fn w_1_6_status_to_dos_error() {
    let invalid_address = [
        NtStatus::CONFLICTING_ADDRESSES,
        NtStatus::NOT_MAPPED_VIEW,
        NtStatus::NOT_COMMITTED,
        NtStatus::FREE_VM_NOT_AT_BASE,
        NtStatus::MEMORY_NOT_ALLOCATED,
        NtStatus::UNABLE_TO_DECOMMIT_VM,
    ];
    for s in invalid_address {
        assert_eq!(nt_status_to_dos_error(s), ERROR_INVALID_ADDRESS, "{s}");
    }
    let mut invalid_parameter = vec![
        NtStatus::INVALID_PARAMETER,
        NtStatus::INVALID_PAGE_PROTECTION,
        NtStatus::SECTION_PROTECTION,
        NtStatus::UNABLE_TO_FREE_VM,
        NtStatus::UNABLE_TO_DELETE_SECTION,
        NtStatus::WORKING_SET_LIMIT_RANGE,
    ];
    invalid_parameter.extend((0xC000_00EF..=0xC000_00FA).map(NtStatus));
    for s in invalid_parameter {
        assert_eq!(nt_status_to_dos_error(s), ERROR_INVALID_PARAMETER, "{s}");
    }
    for s in [NtStatus::ALREADY_COMMITTED, NtStatus::INVALID_VIEW_SIZE, NtStatus::ACCESS_DENIED] {
        assert_eq!(nt_status_to_dos_error(s), ERROR_ACCESS_DENIED, "{s}");
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::ACCESS_VIOLATION), ERROR_NOACCESS);
    assert_eq!(nt_status_to_dos_error(NtStatus::NO_MEMORY), ERROR_NOT_ENOUGH_MEMORY);
    assert_eq!(nt_status_to_dos_error(NtStatus::INFO_LENGTH_MISMATCH), ERROR_BAD_LENGTH);
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_HANDLE), ERROR_INVALID_HANDLE);
    assert_eq!(nt_status_to_dos_error(NtStatus::SUCCESS), 0);
    assert_eq!(nt_status_to_dos_error(NtStatus(0xC0DE_0001)), ERROR_MR_MID_NOT_FOUND);
    // The constants themselves (§1.5).
    assert_eq!(
        [ERROR_ACCESS_DENIED, ERROR_INVALID_HANDLE, ERROR_NOT_ENOUGH_MEMORY, ERROR_BAD_LENGTH],
        [5, 6, 8, 24]
    );
    assert_eq!(
        [
            ERROR_INVALID_PARAMETER,
            ERROR_PARTIAL_COPY,
            ERROR_INVALID_ADDRESS,
            ERROR_NOACCESS,
            ERROR_COMMITMENT_LIMIT
        ],
        [87, 299, 487, 998, 1455]
    );
}

#[test]
fn memory_basic_information_layout_is_x64() {
    use std::mem::{align_of, offset_of, size_of};
    assert_eq!(size_of::<MemoryBasicInformation>(), 48);
    assert_eq!(align_of::<MemoryBasicInformation>(), 8);
    assert_eq!(offset_of!(MemoryBasicInformation, base_address), 0);
    assert_eq!(offset_of!(MemoryBasicInformation, allocation_base), 8);
    assert_eq!(offset_of!(MemoryBasicInformation, allocation_protect), 16);
    assert_eq!(offset_of!(MemoryBasicInformation, partition_id), 20);
    assert_eq!(offset_of!(MemoryBasicInformation, region_size), 24);
    assert_eq!(offset_of!(MemoryBasicInformation, state), 32);
    assert_eq!(offset_of!(MemoryBasicInformation, protect), 36);
    assert_eq!(offset_of!(MemoryBasicInformation, type_), 40);
}

// -------------------------------------------------- protection conversions (§5)

#[test]
fn every_protection_below_0x1000_converts_or_is_invalid_page_protection() {
    let mut valid = Vec::new();
    for p in 0..0x1000u32 {
        match protection_from_page(p) {
            Ok((prot, modifiers)) => {
                assert!(prot.is_valid(), "{p:#x} gave {prot:?}");
                assert_eq!(modifiers & !(PAGE_NOCACHE | PAGE_WRITECOMBINE), 0);
                assert_eq!(page_from_protection(prot, modifiers), p, "round trip of {p:#x}");
                assert!(is_valid_page_protection(p));
                valid.push(p);
            }
            Err(status) => assert_eq!(status, NtStatus::INVALID_PAGE_PROTECTION, "{p:#x}"),
        }
    }
    let bases = [0x01, 0x02, 0x04, 0x10, 0x20, 0x40];
    let mut expected: Vec<u32> = bases.to_vec();
    for b in &bases[1..] {
        expected.extend([b | PAGE_GUARD, b | PAGE_NOCACHE, b | PAGE_WRITECOMBINE]);
    }
    expected.sort();
    assert_eq!(valid, expected);
}

#[test]
fn page_execute_is_execute_alone_and_back() {
    assert_eq!(protection_from_page(PAGE_EXECUTE), Ok((Protection::EXECUTE, 0)));
    assert_eq!(page_from_protection(Protection::EXECUTE, 0), PAGE_EXECUTE);
    assert_eq!(protection_from_page(PAGE_EXECUTE_READ), Ok((Protection::READ_EXECUTE, 0)));
    assert_eq!(protection_from_page(PAGE_EXECUTE_READWRITE), Ok((Protection::ALL_ACCESS, 0)));
    assert_eq!(protection_from_page(PAGE_NOACCESS), Ok((Protection::empty(), 0)));
    assert_eq!(
        protection_from_page(PAGE_READONLY | PAGE_GUARD),
        Ok((Protection::READ | Protection::GUARD, 0))
    );
}

#[test]
fn protections_the_engine_refuses_still_convert_to_something() {
    for bits in 0..16u8 {
        let p = page_from_protection(Protection::from_bits_retain(bits), PAGE_NOCACHE);
        assert!(p & 0xFF != 0 && (p & 0xFF).count_ones() == 1, "{bits:#x} -> {p:#x}");
    }
}

#[test]
fn w_5_base_value_must_be_exactly_one_bit() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for bad in [0, 0x03, 0x06, 0x12, 0x30, 0x44, 0x84, 0xFF, 0x100, 0x300] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, MEM_RESERVE, bad)
        });
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_protect_virtual_memory(mm, &mut a.clone(), &mut 0x1000, bad, &mut 0)
        });
        assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_PAGE_PROTECTION), ERROR_INVALID_PARAMETER);
    }
}

#[test]
fn w_5_writecopy_is_invalid_for_private_memory() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for wc in [PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY] {
        // VirtualAlloc row.
        for ty in [MEM_RESERVE, MEM_COMMIT, MEM_RESERVE | MEM_COMMIT] {
            fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
                nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, ty, wc)
            });
            fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
                nt_allocate_virtual_memory(mm, &mut B.clone(), 0, &mut 0x1000, ty, wc)
            });
        }
        // VirtualProtect row.
        assert_eq!(protect(&mut mm, a, 0x1000, wc), Err(NtStatus::INVALID_PAGE_PROTECTION));
    }
    // The other six base values work in both rows.
    for ok in [0x01, 0x02, 0x04, 0x10, 0x20, 0x40] {
        let b = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, ok);
        assert_eq!(query(&mm, b).protect, ok);
        assert!(protect(&mut mm, a, 0x1000, ok).is_ok());
        assert_eq!(query(&mm, a).protect, ok);
    }
}

#[test]
fn d_5_guard_with_noaccess_nocache_or_writecombine_is_invalid() {
    for p in [
        PAGE_NOACCESS | PAGE_GUARD,
        PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,
        PAGE_READWRITE | PAGE_GUARD | PAGE_WRITECOMBINE,
    ] {
        assert_eq!(protection_from_page(p), Err(NtStatus::INVALID_PAGE_PROTECTION), "{p:#x}");
        let mut mm = MemoryManager::new();
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, MEM_RESERVE, p)
        });
    }
}

#[test]
fn d_5_nocache_with_noaccess_or_writecombine_is_invalid() {
    for p in [PAGE_NOACCESS | PAGE_NOCACHE, PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE] {
        assert_eq!(protection_from_page(p), Err(NtStatus::INVALID_PAGE_PROTECTION), "{p:#x}");
    }
    // And PAGE_WRITECOMBINE | PAGE_NOACCESS [D].
    assert_eq!(
        protection_from_page(PAGE_NOACCESS | PAGE_WRITECOMBINE),
        Err(NtStatus::INVALID_PAGE_PROTECTION)
    );
}

#[test]
fn r_5_values_of_0x800_or_more_are_invalid() {
    for p in [0x800, 0x804, 0x1004, PAGE_READWRITE | PAGE_TARGETS_INVALID, 0x8000_0004, u32::MAX] {
        assert_eq!(protection_from_page(p), Err(NtStatus::INVALID_PAGE_PROTECTION), "{p:#x}");
        assert!(!is_valid_page_protection(p));
    }
}

// ----------------------------------------------------------- §2 address space

#[test]
fn w_2_system_picked_bases_are_64k_aligned() {
    let mut mm = MemoryManager::new();
    for (size, ty) in [
        (0x1000, MEM_RESERVE),
        (0x1234, MEM_COMMIT),
        (0x10001, MEM_RESERVE | MEM_COMMIT),
        (0x1, MEM_RESERVE | MEM_TOP_DOWN),
    ] {
        let (base, len) = alloc(&mut mm, 0, size, ty, PAGE_READWRITE).unwrap();
        assert_eq!(base % 0x10000, 0, "{base:#x}");
        assert_eq!(len, size.div_ceil(0x1000) * 0x1000);
    }
}

#[test]
fn w_2_out_of_space_gives_no_memory() {
    let mut mm = MemoryManager::new();
    let whole = USER_SPACE_END - MIN_ALLOCATION_ADDRESS;
    assert_eq!(alloc(&mut mm, 0, whole, MEM_RESERVE, PAGE_NOACCESS), Ok((MIN_ALLOCATION_ADDRESS, whole)));
    fails_unchanged(&mut mm, NtStatus::NO_MEMORY, |mm| {
        nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, MEM_RESERVE, PAGE_READWRITE)
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::NO_MEMORY), ERROR_NOT_ENOUGH_MEMORY);
}

#[test]
fn i_2_explicit_base_below_64k_is_invalid_parameter() {
    let mut mm = MemoryManager::new();
    for base in [1, 0x1000, 0xFFFF] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER, |mm| {
            nt_allocate_virtual_memory(mm, &mut base.clone(), 0, &mut 0x1000, MEM_RESERVE, PAGE_READWRITE)
        });
    }
    // 0x10000 itself is the lowest usable granule.
    assert_eq!(alloc(&mut mm, 0x10000, 0x1000, MEM_RESERVE, PAGE_READWRITE), Ok((0x10000, 0x1000)));
}

#[test]
fn r_2_base_past_user_space_or_overflowing_size_is_invalid_parameter() {
    let mut mm = MemoryManager::new();
    for base in [MAX_ALLOCATION_ADDRESS + 1, USER_SPACE_END, 1 << 63, u64::MAX] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_2, |mm| {
            nt_allocate_virtual_memory(mm, &mut base.clone(), 0, &mut 0x1000, MEM_RESERVE, PAGE_READWRITE)
        });
    }
    for (base, size) in [(A, u64::MAX), (A, u64::MAX - A + 1), (USER_SPACE_END - 0x10000, 0x10001)] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_4, |mm| {
            nt_allocate_virtual_memory(
                mm,
                &mut base.clone(),
                0,
                &mut size.clone(),
                MEM_RESERVE,
                PAGE_READWRITE,
            )
        });
    }
    for size in [USER_SPACE_END + 1, u64::MAX, u64::MAX - 0xFFE] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_4, |mm| {
            nt_allocate_virtual_memory(mm, &mut 0, 0, &mut size.clone(), MEM_RESERVE, PAGE_READWRITE)
        });
    }
    // The highest granule is usable.
    let top = USER_SPACE_END - 0x10000;
    assert_eq!(alloc(&mut mm, top, 0x10000, MEM_RESERVE, PAGE_READWRITE), Ok((top, 0x10000)));
}

#[test]
fn d_2_query_at_or_above_user_limit_is_invalid_parameter() {
    let mm = MemoryManager::new();
    for a in [USER_SPACE_END, USER_SPACE_END + 1, MAX_ALLOCATION_ADDRESS + 1, 1 << 63, u64::MAX] {
        assert_eq!(nt_query_virtual_memory(&mm, a), Err(NtStatus::INVALID_PARAMETER), "{a:#x}");
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_PARAMETER), ERROR_INVALID_PARAMETER);
    // The last user page answers.
    let mbi = query(&mm, MAX_ALLOCATION_ADDRESS);
    assert_eq!((mbi.base_address, mbi.region_size, mbi.state), (USER_SPACE_END - 0x1000, 0x1000, MEM_FREE));
}

#[test]
fn i_2_query_of_null_and_low_free_addresses_reports_free() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, 0x10000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    for a in [0, 1, 0xFFF, 0x1000, 0xFFFF] {
        let mbi = query(&mm, a);
        assert_eq!(mbi.state, MEM_FREE);
        assert_eq!(mbi.protect, PAGE_NOACCESS);
        assert_eq!(mbi.base_address, a & !0xFFF);
        assert_eq!(mbi.base_address + mbi.region_size, 0x10000);
    }
}

// ------------------------------------------------------------- §3 rounding

#[test]
fn w_3_null_base_reserve_of_0xfffc_reserves_0x10000() {
    let mut mm = MemoryManager::new();
    let (base, size) = alloc(&mut mm, 0, 0xFFFC, MEM_RESERVE, PAGE_READWRITE).unwrap();
    assert_eq!(size, 0x10000);
    let mbi = query(&mm, base);
    assert_eq!((mbi.state, mbi.region_size, mbi.allocation_base), (MEM_RESERVE, 0x10000, base));
}

#[test]
fn d_3_explicit_reserve_rounds_start_to_64k_and_end_to_page() {
    let mut mm = MemoryManager::new();
    assert_eq!(alloc(&mut mm, A + 0x1234, 0x100, MEM_RESERVE, PAGE_READWRITE), Ok((A, 0x2000)));
    let mbi = query(&mm, A + 0x1FFF);
    assert_eq!((mbi.allocation_base, mbi.base_address, mbi.region_size), (A, A + 0x1000, 0x1000));
    assert_eq!(mm.region_info(A).allocation_length, 0x2000);
    // Reserve + commit rounds the same way and commits the whole range.
    assert_eq!(alloc(&mut mm, B + 0x8001, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY), Ok((B, 0xA000)));
    assert_eq!(regions(&mm, B), vec![(B, 0xA000, MEM_COMMIT, PAGE_READONLY)]);
}

#[test]
fn d_3_commit_rounds_to_touched_pages_and_returns_page_down() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    // Two bytes straddling a page boundary commit two pages.
    assert_eq!(alloc(&mut mm, A + 0x1FFF, 2, MEM_COMMIT, PAGE_READWRITE), Ok((A + 0x1000, 0x2000)));
    // The returned pointer is PAGE_DOWN(addr), not the 64 KiB-rounded value.
    assert_eq!(alloc(&mut mm, A + 0x5010, 0x10, MEM_COMMIT, PAGE_READONLY), Ok((A + 0x5000, 0x1000)));
    assert_eq!(
        regions(&mm, A),
        vec![
            (A, 0x1000, MEM_RESERVE, 0),
            (A + 0x1000, 0x2000, MEM_COMMIT, PAGE_READWRITE),
            (A + 0x3000, 0x2000, MEM_RESERVE, 0),
            (A + 0x5000, 0x1000, MEM_COMMIT, PAGE_READONLY),
            (A + 0x6000, 0xA000, MEM_RESERVE, 0),
        ]
    );
}

#[test]
fn w_3_free_writes_back_the_rounded_range() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    assert_eq!(free(&mut mm, a + 0x1FFF, 2, MEM_DECOMMIT), Ok((a + 0x1000, 0x2000)));
    assert_eq!(query(&mm, a + 0x1000).state, MEM_RESERVE);
    assert_eq!(query(&mm, a + 0x1000).region_size, 0x2000);
}

#[test]
fn w_3_protect_writes_back_the_rounded_range() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    assert_eq!(protect(&mut mm, a + 1, 1, PAGE_READONLY), Ok((a, 0x1000, PAGE_READWRITE)));
    assert_eq!(protect(&mut mm, a + 0xFFF, 2, PAGE_READONLY), Ok((a, 0x2000, PAGE_READONLY)));
}

#[test]
fn w_3_size_zero_allocation_is_invalid_parameter() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    for (base, ty) in [(0, MEM_RESERVE), (0, MEM_COMMIT), (B, MEM_RESERVE | MEM_COMMIT), (A, MEM_COMMIT)] {
        let before = fingerprint(&mm);
        let status = alloc(&mut mm, base, 0, ty, PAGE_READWRITE).unwrap_err();
        assert_eq!(status, NtStatus::INVALID_PARAMETER_4);
        assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
        assert_eq!(fingerprint(&mm), before);
    }
}

#[test]
fn granule_tail_of_a_small_reservation_is_free_but_unusable() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    let mbi = query(&mm, A + 0x1000);
    assert_eq!((mbi.state, mbi.allocation_base, mbi.type_), (MEM_FREE, 0, 0));
    // An explicit reserve there rounds down to A and conflicts.
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut (A + 0x1000), 0, &mut 0x1000, MEM_RESERVE, PAGE_READWRITE)
    });
    // A system-picked address never lands in the tail.
    mm.set_default_allocation_address(A);
    assert_eq!(new_alloc(&mut mm, 0x1000, MEM_RESERVE, PAGE_READWRITE), A + 0x10000);
}

// ------------------------------------------------------- §4.1 validation

#[test]
fn w_4_1_zero_bits_22_to_31_is_invalid_parameter_3() {
    let mut mm = MemoryManager::new();
    for zb in 22..=31 {
        for base in [0, A] {
            fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_3, |mm| {
                nt_allocate_virtual_memory(
                    mm,
                    &mut base.clone(),
                    zb,
                    &mut 0x1000,
                    MEM_RESERVE,
                    PAGE_READWRITE,
                )
            });
        }
    }
}

#[test]
fn w_4_1_unknown_type_bits_are_invalid_parameter() {
    let mut mm = MemoryManager::new();
    let known = MEM_COMMIT
        | MEM_RESERVE
        | MEM_RESET
        | MEM_TOP_DOWN
        | MEM_WRITE_WATCH
        | MEM_PHYSICAL
        | MEM_LARGE_PAGES;
    for bit in (0..32).map(|i| 1u32 << i).filter(|b| b & known == 0) {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_5, |mm| {
            nt_allocate_virtual_memory(
                mm,
                &mut 0,
                0,
                &mut 0x1000,
                MEM_RESERVE | MEM_COMMIT | bit,
                PAGE_READWRITE,
            )
        });
    }
    // AT_ROUND_TO_PAGE [W], also at an explicit base.
    fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_5, |mm| {
        nt_allocate_virtual_memory(
            mm,
            &mut A.clone(),
            0,
            &mut 0x1000,
            MEM_RESERVE | AT_ROUND_TO_PAGE,
            PAGE_READWRITE,
        )
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_PARAMETER_5), ERROR_INVALID_PARAMETER);
}

#[test]
fn w_4_1_type_without_commit_reserve_or_reset_is_invalid() {
    let mut mm = MemoryManager::new();
    for ty in [0, MEM_TOP_DOWN, MEM_WRITE_WATCH, MEM_TOP_DOWN | MEM_WRITE_WATCH, MEM_LARGE_PAGES] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_5, |mm| {
            nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, ty, PAGE_READWRITE)
        });
    }
}

#[test]
fn r_4_1_reset_with_any_other_flag_is_invalid() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for other in [MEM_COMMIT, MEM_RESERVE, MEM_TOP_DOWN, MEM_COMMIT | MEM_RESERVE] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_5, |mm| {
            nt_allocate_virtual_memory(mm, &mut a.clone(), 0, &mut 0x1000, MEM_RESET | other, PAGE_READWRITE)
        });
    }
}

#[test]
fn w_4_1_write_watch_without_reserve_is_invalid() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_5, |mm| {
        nt_allocate_virtual_memory(
            mm,
            &mut a.clone(),
            0,
            &mut 0x1000,
            MEM_COMMIT | MEM_WRITE_WATCH,
            PAGE_READWRITE,
        )
    });
    // With MEM_RESERVE it is accepted (write tracking itself is not modelled).
    let (b, _) = alloc(&mut mm, 0, 0x1000, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
    assert_eq!(query(&mm, b).state, MEM_RESERVE);
}

#[test]
fn physical_and_large_pages_are_refused() {
    let mut mm = MemoryManager::new();
    fails_unchanged(&mut mm, NtStatus::NOT_SUPPORTED, |mm| {
        nt_allocate_virtual_memory(mm, &mut 0, 0, &mut 0x1000, MEM_RESERVE | MEM_PHYSICAL, PAGE_READWRITE)
    });
    fails_unchanged(&mut mm, NtStatus::PRIVILEGE_NOT_HELD, |mm| {
        nt_allocate_virtual_memory(
            mm,
            &mut 0,
            0,
            &mut 0x20_0000,
            MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES,
            PAGE_READWRITE,
        )
    });
}

#[test]
fn w_4_1_checks_run_in_order() {
    let mut mm = MemoryManager::new();
    // zero_bits before the type, the type before the protection, the
    // protection before the size.
    assert_eq!(alloc_zb(&mut mm, 0, 22, 0, 0, 0), Err(NtStatus::INVALID_PARAMETER_3));
    assert_eq!(alloc(&mut mm, 0, 0, AT_ROUND_TO_PAGE | MEM_RESERVE, 0), Err(NtStatus::INVALID_PARAMETER_5));
    assert_eq!(alloc(&mut mm, 0, 0, MEM_RESERVE, PAGE_WRITECOPY), Err(NtStatus::INVALID_PAGE_PROTECTION));
    assert_eq!(alloc(&mut mm, 0, 0, MEM_RESERVE, PAGE_READWRITE), Err(NtStatus::INVALID_PARAMETER_4));
    assert_eq!(mm.layout_version(), 0);
}

// ------------------------------------------------------ §4.2 new allocations

#[test]
fn w_4_2_new_allocation_reports_its_base_and_flprotect() {
    let mut mm = MemoryManager::new();
    for (prot, ty) in [
        (PAGE_READWRITE, MEM_RESERVE),
        (PAGE_EXECUTE_READ, MEM_RESERVE | MEM_COMMIT),
        (PAGE_READWRITE | PAGE_GUARD, MEM_RESERVE | MEM_COMMIT),
        (PAGE_READWRITE | PAGE_NOCACHE, MEM_RESERVE),
        (PAGE_READONLY | PAGE_WRITECOMBINE, MEM_COMMIT),
        (PAGE_NOACCESS, MEM_RESERVE | MEM_COMMIT),
    ] {
        let (base, size) = alloc(&mut mm, 0, 0x3000, ty, prot).unwrap();
        for at in [base, base + 0x1234, base + size - 1] {
            let mbi = query(&mm, at);
            assert_eq!(mbi.allocation_base, base);
            assert_eq!(mbi.allocation_protect, prot, "{prot:#x}");
            assert_eq!(mbi.type_, MEM_PRIVATE);
        }
    }
}

#[test]
fn w_4_2_overlap_gives_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    let (a, _) = alloc(&mut mm, 0, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE).unwrap();
    for zero_bits in [0, 12] {
        let before = fingerprint(&mm);
        let status = alloc_zb(
            &mut mm,
            a + 0x1000,
            zero_bits,
            0x1000,
            MEM_RESERVE | MEM_COMMIT,
            PAGE_EXECUTE_READWRITE,
        );
        assert_eq!(status, Err(NtStatus::CONFLICTING_ADDRESSES));
        assert_eq!(fingerprint(&mm), before);
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::CONFLICTING_ADDRESSES), ERROR_INVALID_ADDRESS);
    // A range that only partly overlaps conflicts too, with reserve alone.
    alloc(&mut mm, A + 0x20000, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    assert_eq!(alloc(&mut mm, A, 0x20001, MEM_RESERVE, PAGE_READWRITE), Err(NtStatus::CONFLICTING_ADDRESSES));
    assert_eq!(
        alloc(&mut mm, A + 0x2F000, 0x1000, MEM_RESERVE, PAGE_READWRITE),
        Err(NtStatus::CONFLICTING_ADDRESSES)
    );
}

#[test]
fn w_4_2_reserve_alone_leaves_pages_reserved_with_protect_0() {
    let mut mm = MemoryManager::new();
    let (a, size) = alloc(&mut mm, 0, 0x5000, MEM_RESERVE, PAGE_EXECUTE_READWRITE).unwrap();
    let mbi = query(&mm, a + 0x2000);
    assert_eq!(
        (mbi.state, mbi.protect, mbi.base_address, mbi.region_size),
        (MEM_RESERVE, 0, a + 0x2000, 0x3000)
    );
    assert_eq!(regions(&mm, a), vec![(a, size, MEM_RESERVE, 0)]);
}

#[test]
fn w_4_2_reserve_commit_or_null_commit_commits_the_whole_allocation() {
    let mut mm = MemoryManager::new();
    for ty in [MEM_RESERVE | MEM_COMMIT, MEM_COMMIT] {
        let (a, size) = alloc(&mut mm, 0, 0x2345, ty, PAGE_READWRITE).unwrap();
        assert_eq!(size, 0x3000);
        let mbi = query(&mm, a);
        assert_eq!((mbi.state, mbi.region_size, mbi.allocation_base), (MEM_COMMIT, 0x3000, a));
        assert_eq!(mbi.protect, PAGE_READWRITE);
    }
}

#[test]
fn w_4_2_a_released_base_can_be_reused_explicitly() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, &[0xCC; 16]).unwrap();
    free(&mut mm, a, 0, MEM_RELEASE).unwrap();
    assert_eq!(alloc(&mut mm, a, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), Ok((a, 0x10000)));
    assert_eq!(read(&mm, a, 16), vec![0; 16]);
}

// ------------------------------------------------ §4.3 commit in a reservation

#[test]
fn r_4_3_commit_without_a_reservation_is_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    for base in [A, 0x1000, 0x10000] {
        fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
            nt_allocate_virtual_memory(mm, &mut base.clone(), 0, &mut 0x1000, MEM_COMMIT, PAGE_READWRITE)
        });
    }
}

#[test]
fn r_4_3_commit_past_the_allocation_end_is_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x3000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut (A + 0x2000), 0, &mut 0x1001, MEM_COMMIT, PAGE_READWRITE)
    });
    // Into the free granule tail.
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut (A + 0x3000), 0, &mut 0x1000, MEM_COMMIT, PAGE_READWRITE)
    });
}

#[test]
fn r_4_3_commit_across_two_reservations_is_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A + 0x10000, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut (A + 0xF000), 0, &mut 0x2000, MEM_COMMIT, PAGE_READWRITE)
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::CONFLICTING_ADDRESSES), ERROR_INVALID_ADDRESS);
}

#[test]
fn w_4_3_recommit_succeeds_keeps_contents_and_applies_protection() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A, 0x2000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    mm.write_memory(A + 0xFF0, &[7; 0x20]).unwrap();
    // Re-commit a range covering the committed pages and one reserved page.
    assert_eq!(alloc(&mut mm, A, 0x3000, MEM_COMMIT, PAGE_READONLY), Ok((A, 0x3000)));
    assert_eq!(read(&mm, A + 0xFF0, 0x20), vec![7; 0x20]);
    assert_eq!(read(&mm, A + 0x2000, 8), vec![0; 8]);
    assert_eq!(regions(&mm, A)[0], (A, 0x3000, MEM_COMMIT, PAGE_READONLY));
}

#[test]
fn d_4_3_committing_reserved_or_decommitted_pages_gives_zero_pages() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    mm.write_memory(A, &[9; 0x3000]).unwrap();
    free(&mut mm, A + 0x1000, 0x1000, MEM_DECOMMIT).unwrap();
    alloc(&mut mm, A + 0x1000, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ).unwrap();
    assert_eq!(read(&mm, A + 0x1000, 0x1000), vec![0; 0x1000]);
    assert_eq!(query(&mm, A + 0x1000).protect, PAGE_EXECUTE_READ);
    assert_eq!(read(&mm, A + 0x2000, 4), vec![9; 4]);
}

#[test]
fn w_4_3_allocation_protect_never_changes() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE | PAGE_GUARD).unwrap();
    alloc(&mut mm, A, 0x4000, MEM_COMMIT, PAGE_EXECUTE_READ).unwrap();
    protect(&mut mm, A, 0x1000, PAGE_NOACCESS).unwrap();
    free(&mut mm, A + 0x2000, 0x1000, MEM_DECOMMIT).unwrap();
    for at in (A..A + 0x10000).step_by(0x1000) {
        assert_eq!(query(&mm, at).allocation_protect, PAGE_READWRITE | PAGE_GUARD);
    }
}

#[test]
fn w_4_3_writecopy_commit_in_private_memory_is_invalid() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    for wc in [PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut 0x1000, MEM_COMMIT, wc)
        });
    }
}

#[test]
fn w_4_3_commit_in_a_file_view_is_already_committed() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, Protection::READ_WRITE, false, RegionKind::FileView).unwrap();
    fails_unchanged(&mut mm, NtStatus::ALREADY_COMMITTED, |mm| {
        nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut 0x1000, MEM_COMMIT, PAGE_READONLY)
    });
    assert_eq!(nt_status_to_dos_error(NtStatus::ALREADY_COMMITTED), ERROR_ACCESS_DENIED);
}

#[test]
fn commit_in_a_pagefile_view_needs_access_within_the_view() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, Protection::READ_WRITE, true, RegionKind::PagefileView).unwrap();
    // §11 [W]: within the view's access it succeeds...
    assert_eq!(alloc(&mut mm, A, 0x10000, MEM_COMMIT, PAGE_READONLY), Ok((A, 0x10000)));
    let mbi = query(&mm, A);
    assert_eq!((mbi.state, mbi.protect, mbi.type_), (MEM_COMMIT, PAGE_READONLY, MEM_MAPPED));
    // ...beyond it it fails with 87.
    let status = alloc(&mut mm, A, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ).unwrap_err();
    assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
}

#[test]
fn commit_or_protect_in_mmio_is_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    mm.allocate_mmio(A, 0x2000, |_, buf| buf.fill(0), |_, _| {}).unwrap();
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut 0x1000, MEM_COMMIT, PAGE_READWRITE)
    });
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_protect_virtual_memory(mm, &mut A.clone(), &mut 0x1000, PAGE_READONLY, &mut 0)
    });
    fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
        nt_allocate_virtual_memory(mm, &mut A.clone(), 0, &mut 0x1000, MEM_RESET, PAGE_READWRITE)
    });
}

// -------------------------------------------------------------- §4.4 reset

#[test]
fn w_4_4_reset_returns_the_address_and_changes_nothing() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    protect(&mut mm, A + 0x1000, 0x1000, PAGE_READONLY).unwrap();
    mm.write_memory(A, &[5; 0x3000]).unwrap();
    let before = (fingerprint(&mm), regions(&mm, A));
    assert_eq!(alloc(&mut mm, A, 0x3000, MEM_RESET, PAGE_NOACCESS), Ok((A, 0x3000)));
    assert_eq!(alloc(&mut mm, A + 0x10, 0x10, MEM_RESET, PAGE_READWRITE), Ok((A, 0x1000)));
    assert_eq!((fingerprint(&mm), regions(&mm, A)), before);
    // The contents may stay or become zero [W]; here they stay.
    let bytes = read(&mm, A, 0x3000);
    assert!(bytes == vec![5; 0x3000] || bytes == vec![0; 0x3000]);
}

#[test]
fn w_4_4_reset_of_reserved_pages_succeeds_and_they_stay_reserved() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    assert_eq!(alloc(&mut mm, A + 0x4000, 0x2000, MEM_RESET, PAGE_READWRITE), Ok((A + 0x4000, 0x2000)));
    assert_eq!(regions(&mm, A), vec![(A, 0x10000, MEM_RESERVE, 0)]);
}

#[test]
fn w_4_4_reset_past_the_allocation_end_is_invalid_address() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    for (base, size) in [(A + 0x2000, 0x1001), (A + 0x3000, 0x1000), (B, 0x1000), (0, 0x1000)] {
        let before = fingerprint(&mm);
        let status = alloc(&mut mm, base, size, MEM_RESET, PAGE_READWRITE).unwrap_err();
        assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_ADDRESS, "{base:#x}");
        assert_eq!(fingerprint(&mm), before);
    }
}

#[test]
fn reset_needs_a_valid_protection_and_a_size() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!(alloc(&mut mm, A, 0x1000, MEM_RESET, 0), Err(NtStatus::INVALID_PAGE_PROTECTION));
    assert_eq!(alloc(&mut mm, A, 0, MEM_RESET, PAGE_READWRITE), Err(NtStatus::INVALID_PARAMETER_4));
    // flProtect is otherwise ignored: a write-copy value passes.
    assert_eq!(alloc(&mut mm, A, 0x1000, MEM_RESET, PAGE_WRITECOPY), Ok((A, 0x1000)));
}

// ---------------------------------------------- §4.5 address selection

#[test]
fn i_4_5_top_down_is_above_bottom_up() {
    let mut mm = MemoryManager::new();
    let low: Vec<u64> = (0..4).map(|_| new_alloc(&mut mm, 0x1000, MEM_RESERVE, PAGE_READWRITE)).collect();
    let high: Vec<u64> =
        (0..4).map(|_| new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE)).collect();
    for &h in &high {
        assert_eq!(h % 0x10000, 0);
        assert!(h + 0x1000 <= USER_SPACE_END);
        assert!(low.iter().all(|&l| l < h));
    }
    // Each top-down allocation is below the previous one; bottom-up ones climb.
    assert!(high.windows(2).all(|w| w[1] < w[0]));
    assert!(low.windows(2).all(|w| w[1] > w[0]));
    // This crate's choice: bottom-up starts at the default allocation address,
    // top-down at the end of user space.
    assert_eq!(low[0], mm.default_allocation_address());
    assert_eq!(high[0], USER_SPACE_END - 0x10000);
}

#[test]
fn bottom_up_falls_back_below_the_default_address_when_needed() {
    let mut mm = MemoryManager::new();
    // zero_bits 1 limits the end to 2 GiB, below the 4 GiB default address.
    let (a, _) = alloc_zb(&mut mm, 0, 1, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    assert_eq!(a, MIN_ALLOCATION_ADDRESS);
}

#[test]
fn w_4_5_zero_bits_1_to_20_with_top_down_respect_the_limit() {
    let mut mm = MemoryManager::new();
    for zb in 1..=20u64 {
        match alloc_zb(&mut mm, 0, zb, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE) {
            Ok((a, size)) => {
                assert_eq!(a >> (32 - zb), 0, "zero_bits {zb}: {a:#x}");
                assert!(a + size <= 1 << (32 - zb));
                assert!(free(&mut mm, a, 0, MEM_RELEASE).is_ok());
                // With the whole space free, top-down picks the highest slot.
                assert_eq!(a, (1 << (32 - zb)) - 0x10000);
            }
            Err(status) => {
                assert_eq!(status, NtStatus::NO_MEMORY, "zero_bits {zb}");
                // Only limits below the 64 KiB minimum plus one granule fail here.
                assert!(1u64 << (32 - zb) < 0x20000, "zero_bits {zb}");
            }
        }
    }
}

#[test]
fn w_4_5_zero_bits_21_never_succeeds() {
    let mut mm = MemoryManager::new();
    for ty in [MEM_RESERVE | MEM_COMMIT, MEM_RESERVE | MEM_TOP_DOWN] {
        let before = fingerprint(&mm);
        let status = alloc_zb(&mut mm, 0, 21, 0x1000, ty, PAGE_EXECUTE_READWRITE).unwrap_err();
        assert!(status == NtStatus::NO_MEMORY || status == NtStatus::INVALID_PARAMETER);
        assert_eq!(fingerprint(&mm), before);
    }
}

#[test]
fn w_4_5_zero_bits_above_31_is_a_mask_of_leading_zeros() {
    let mut mm = MemoryManager::new();
    let zero_bits = 0x1aaa_aaaa; // mask 0x1fffffff
    let (a, _) =
        alloc_zb(&mut mm, 0, zero_bits, 0x1000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE)
            .unwrap();
    assert_eq!(a & !0x1FFF_FFFF, 0, "{a:#x}");
    assert_ne!(a & !zero_bits, 0, "only the leading zeros matter: {a:#x}");
    // Bottom-up under a mask (the default address 4 GiB is above it).
    let (b, _) = alloc_zb(&mut mm, 0, 0xFFFF_FFFF, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    assert!(b + 0x1000 <= 1 << 32);
    // A 64-bit mask covering user space does not constrain.
    let (c, _) =
        alloc_zb(&mut mm, 0, 0x7FFF_FFFF_FFFF, 0x1000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE).unwrap();
    assert_eq!(c, USER_SPACE_END - 0x10000);
}

#[test]
fn zero_bits_do_not_constrain_an_explicit_base() {
    let mut mm = MemoryManager::new();
    assert_eq!(alloc_zb(&mut mm, A, 12, 0x1000, MEM_RESERVE, PAGE_READWRITE), Ok((A, 0x1000)));
}

// ----------------------------------------------------------- §6.1 free checks

#[test]
fn w_6_1_free_type_must_be_exactly_decommit_or_release() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    let mut bad = vec![
        0,
        MEM_FREE,
        MEM_DECOMMIT | MEM_RELEASE,
        MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER,
        MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS,
        !MEM_RELEASE,
        u32::MAX,
    ];
    bad.extend((0..32).map(|i| 1u32 << i).filter(|&b| b != MEM_DECOMMIT && b != MEM_RELEASE));
    for ty in bad {
        for (base, size) in [(a, 0), (a, 0x1000), (B, 0), (u64::MAX, u64::MAX)] {
            fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_4, |mm| {
                nt_free_virtual_memory(mm, &mut base.clone(), &mut size.clone(), ty)
            });
        }
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::INVALID_PARAMETER_4), ERROR_INVALID_PARAMETER);
}

#[test]
fn w_6_1_free_where_nothing_is_allocated_gives_memory_not_allocated() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    for ty in [MEM_DECOMMIT, MEM_RELEASE] {
        for (base, size) in [(B, 0), (B, 0x1000), (A + 0x1000, 0), (0, 0), (0x1000, 0x1000)] {
            fails_unchanged(&mut mm, NtStatus::MEMORY_NOT_ALLOCATED, |mm| {
                nt_free_virtual_memory(mm, &mut base.clone(), &mut size.clone(), ty)
            });
        }
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::MEMORY_NOT_ALLOCATED), ERROR_INVALID_ADDRESS);
}

#[test]
fn w_6_1_freeing_or_decommitting_a_view_gives_unable_to_delete_section() {
    let mut mm = MemoryManager::new();
    let kinds = [RegionKind::FileView, RegionKind::PagefileView, RegionKind::Image];
    for (i, kind) in kinds.into_iter().enumerate() {
        let v = A + i as u64 * 0x10000;
        mm.allocate_memory_at(v, 0x10000, Protection::READ_WRITE, false, kind).unwrap();
        for ty in [MEM_DECOMMIT, MEM_RELEASE] {
            for (base, size) in [(v, 0x10000), (v, 0), (v + 0x1000, 0x1000)] {
                let before = fingerprint(&mm);
                let status = free(&mut mm, base, size, ty).unwrap_err();
                assert_eq!(status, NtStatus::UNABLE_TO_DELETE_SECTION, "{kind:?}");
                assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
                assert_eq!(fingerprint(&mm), before);
            }
        }
    }
    // MMIO regions cannot be freed by the guest either.
    mm.allocate_mmio(B, 0x1000, |_, _| {}, |_, _| {}).unwrap();
    assert_eq!(free(&mut mm, B, 0, MEM_RELEASE), Err(NtStatus::UNABLE_TO_DELETE_SECTION));
    assert_eq!(free(&mut mm, B, 0x1000, MEM_DECOMMIT), Err(NtStatus::UNABLE_TO_DELETE_SECTION));
}

#[test]
fn w_6_1_free_size0_not_at_base_gives_free_vm_not_at_base() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    for ty in [MEM_DECOMMIT, MEM_RELEASE] {
        for base in [a + 0x1001, a + 0x1000, a + 0xFFFF] {
            fails_unchanged(&mut mm, NtStatus::FREE_VM_NOT_AT_BASE, |mm| {
                nt_free_virtual_memory(mm, &mut base.clone(), &mut 0, ty)
            });
        }
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::FREE_VM_NOT_AT_BASE), ERROR_INVALID_ADDRESS);
}

#[test]
fn w_6_1_free_size0_within_the_first_page_is_accepted() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    assert_eq!(free(&mut mm, a + 0xFFE, 0, MEM_DECOMMIT), Ok((a, 0)));
    assert_eq!(free(&mut mm, a + 0xFFF, 0, MEM_RELEASE), Ok((a, 0x10000)));
    assert_eq!(query(&mm, a).state, MEM_FREE);
}

#[test]
fn w_6_1_free_range_past_the_allocation_gives_unable_to_free_vm() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, B, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    for ty in [MEM_DECOMMIT, MEM_RELEASE] {
        // Across two reservations.
        for (base, size) in [(A, 0x20000), (A + 0xF000, 0x2000), (A + 0xFFFF, 2)] {
            fails_unchanged(&mut mm, NtStatus::UNABLE_TO_FREE_VM, |mm| {
                nt_free_virtual_memory(mm, &mut base.clone(), &mut size.clone(), ty)
            });
        }
        // One page reserved: one byte too many, or one page from the wrong origin.
        for (base, size) in [(B, 0x1001), (B + 1, 0x1000)] {
            fails_unchanged(&mut mm, NtStatus::UNABLE_TO_FREE_VM, |mm| {
                nt_free_virtual_memory(mm, &mut base.clone(), &mut size.clone(), ty)
            });
        }
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::UNABLE_TO_FREE_VM), ERROR_INVALID_PARAMETER);
    // In bounds from an unaligned origin it works and rounds.
    assert_eq!(free(&mut mm, B + 1, 0xFFF, MEM_DECOMMIT), Ok((B, 0x1000)));
    assert_eq!(free(&mut mm, B + 1, 0xFFF, MEM_RELEASE), Ok((B, 0x1000)));
}

#[test]
fn w_6_1_failed_free_leaves_base_and_size_unchanged() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for (base, size, ty) in
        [(a + 0x1001, 0, MEM_RELEASE), (a + 0xF000, 0x2000, MEM_DECOMMIT), (B, 0x1000, MEM_RELEASE)]
    {
        let (mut b, mut s) = (base, size);
        let status = nt_free_virtual_memory(&mut mm, &mut b, &mut s, ty);
        assert!(!status.is_success());
        assert_eq!((b, s), (base, size), "{status}");
    }
    assert_eq!(query(&mm, a).region_size, 0x10000);
}

#[test]
fn r_6_1_free_with_a_base_or_size_past_user_space_is_invalid_parameter() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    for base in [USER_SPACE_END, 1 << 63, u64::MAX] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_2, |mm| {
            nt_free_virtual_memory(mm, &mut base.clone(), &mut 0, MEM_RELEASE)
        });
    }
    for size in [u64::MAX, u64::MAX - A + 1, USER_SPACE_END] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PARAMETER_3, |mm| {
            nt_free_virtual_memory(mm, &mut A.clone(), &mut size.clone(), MEM_DECOMMIT)
        });
    }
}

// ------------------------------------------------------------ §6.2 decommit

#[test]
fn w_6_2_decommit_over_reserved_pages_succeeds() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A + 0x3000, 0x1000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!(free(&mut mm, A, 0x10000, MEM_DECOMMIT), Ok((A, 0x10000)));
    assert_eq!(regions(&mm, A), vec![(A, 0x10000, MEM_RESERVE, 0)]);
    // Decommitting pages that are all reserved works too.
    assert_eq!(free(&mut mm, A + 0x5000, 0x2000, MEM_DECOMMIT), Ok((A + 0x5000, 0x2000)));
}

#[test]
fn w_6_2_decommit_size0_at_base_decommits_everything_and_returns_size_0() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    protect(&mut mm, a + 0x2000, 0x1000, PAGE_READONLY | PAGE_GUARD).unwrap();
    assert_eq!(free(&mut mm, a, 0, MEM_DECOMMIT), Ok((a, 0)));
    let mbi = query(&mm, a);
    assert_eq!((mbi.state, mbi.protect, mbi.region_size), (MEM_RESERVE, 0, 0x10000));
    assert_eq!(mbi.allocation_protect, PAGE_READWRITE);
}

#[test]
fn d_6_2_decommit_discards_contents() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, &[0xAB; 0x2000]).unwrap();
    free(&mut mm, a, 0x2000, MEM_DECOMMIT).unwrap();
    assert!(!mm.try_read_memory(a, &mut [0; 1]));
    alloc(&mut mm, a, 0x2000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!(read(&mm, a, 0x2000), vec![0; 0x2000]);
}

// ------------------------------------------------------------- §6.3 release

#[test]
fn w_6_3_release_size0_returns_base_and_allocation_size() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x12345, MEM_RESERVE, PAGE_READWRITE);
    assert_eq!(free(&mut mm, a, 0, MEM_RELEASE), Ok((a, 0x13000)));
}

#[test]
fn w_6_3_released_pages_are_free() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);
    free(&mut mm, a, 0, MEM_RELEASE).unwrap();
    let mbi = query(&mm, a + 0x1000);
    assert_eq!(
        mbi,
        MemoryBasicInformation {
            base_address: a + 0x1000,
            allocation_base: 0,
            allocation_protect: 0,
            partition_id: 0,
            region_size: USER_SPACE_END - a - 0x1000,
            state: MEM_FREE,
            protect: PAGE_NOACCESS,
            type_: 0,
        }
    );
    assert_eq!(free(&mut mm, a, 0, MEM_RELEASE), Err(NtStatus::MEMORY_NOT_ALLOCATED));
}

#[test]
fn w_6_3_partial_release_splits_the_allocation() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_NOACCESS).unwrap();
    // A hole in the middle: [A+0x8000, A+0xC000).
    assert_eq!(free(&mut mm, A + 0x8000, 0x4000, MEM_RELEASE), Ok((A + 0x8000, 0x4000)));
    let (low, hole, high) = (query(&mm, A), query(&mm, A + 0x8000), query(&mm, A + 0xC000));
    assert_eq!((low.allocation_base, low.region_size, low.state), (A, 0x8000, MEM_RESERVE));
    assert_eq!((hole.state, hole.region_size), (MEM_FREE, 0x4000));
    assert_eq!((high.allocation_base, high.region_size, high.state), (A + 0xC000, 0x4000, MEM_RESERVE));
    assert_eq!(high.allocation_protect, PAGE_NOACCESS);
    // The freed pages give MEMORY_NOT_ALLOCATED now.
    assert_eq!(free(&mut mm, A + 0x8000, 0, MEM_RELEASE), Err(NtStatus::MEMORY_NOT_ALLOCATED));
    // The upper piece is its own allocation: releasable with size 0 at its start.
    assert_eq!(free(&mut mm, A + 0xC000, 0, MEM_RELEASE), Ok((A + 0xC000, 0x4000)));
    // Head and tail of the lower piece.
    assert_eq!(free(&mut mm, A, 0x1000, MEM_RELEASE), Ok((A, 0x1000)));
    assert_eq!(free(&mut mm, A + 0x7000, 0x1000, MEM_RELEASE), Ok((A + 0x7000, 0x1000)));
    let rest = query(&mm, A + 0x1000);
    assert_eq!((rest.allocation_base, rest.region_size), (A + 0x1000, 0x6000));
    assert_eq!(free(&mut mm, A + 0x1000, 0, MEM_RELEASE), Ok((A + 0x1000, 0x6000)));
    assert_eq!(mm.reserved_regions().count(), 0);
}

#[test]
fn r_6_3_two_pages_released_one_after_the_other() {
    let mut mm = MemoryManager::new();
    for order in [[0, 0x1000], [0x1000, 0]] {
        let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE, PAGE_READWRITE);
        for off in order {
            assert_eq!(free(&mut mm, a + off, 0x1000, MEM_RELEASE), Ok((a + off, 0x1000)));
        }
        assert_eq!(query(&mm, a).state, MEM_FREE);
    }
    // One byte into a two-page reservation with a page-sized length covers both pages.
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE, PAGE_READWRITE);
    assert_eq!(free(&mut mm, a + 1, 0x1000, MEM_RELEASE), Ok((a, 0x2000)));
}

// ---------------------------------------------------------------- §7 protect

#[test]
fn w_7_invalid_protection_gives_invalid_page_protection() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for p in [0, 0x03, 0x0C, PAGE_NOACCESS | PAGE_GUARD, 0x800, PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY] {
        fails_unchanged(&mut mm, NtStatus::INVALID_PAGE_PROTECTION, |mm| {
            let (mut b, mut s, mut old) = (a, 0x1000, 7);
            let status = nt_protect_virtual_memory(mm, &mut b, &mut s, p, &mut old);
            assert_eq!((b, s, old), (a, 0x1000, PAGE_NOACCESS));
            status
        });
    }
}

#[test]
fn r_7_protection_is_checked_before_the_address() {
    let mut mm = MemoryManager::new();
    assert_eq!(protect(&mut mm, A, 0x1000, 0x03), Err(NtStatus::INVALID_PAGE_PROTECTION));
    assert_eq!(protect(&mut mm, u64::MAX, 0x1000, 0x03), Err(NtStatus::INVALID_PAGE_PROTECTION));
}

#[test]
fn r_7_free_address_or_crossing_allocations_gives_conflicting_addresses() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, B, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    for (base, size) in
        [(A - 0x1000, 0x1000), (A - 0x1000, 0x2000), (A + 0xF000, 0x2000), (B, 0x2000), (0, 1)]
    {
        fails_unchanged(&mut mm, NtStatus::CONFLICTING_ADDRESSES, |mm| {
            nt_protect_virtual_memory(mm, &mut base.clone(), &mut size.clone(), PAGE_READONLY, &mut 0)
        });
    }
}

#[test]
fn w_7_uncommitted_pages_give_not_committed() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    alloc(&mut mm, a, 0x1000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    for (base, size) in [(a, 0xFFFC), (a + 0x1000, 0x1000), (a, 0x2000)] {
        fails_unchanged(&mut mm, NtStatus::NOT_COMMITTED, |mm| {
            nt_protect_virtual_memory(mm, &mut base.clone(), &mut size.clone(), PAGE_READONLY, &mut 0)
        });
    }
    assert_eq!(query(&mm, a).protect, PAGE_READWRITE);
    assert_eq!(nt_status_to_dos_error(NtStatus::NOT_COMMITTED), ERROR_INVALID_ADDRESS);
}

#[test]
fn w_7_failure_sets_old_protect_to_noaccess() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    for (base, prot) in [(a, PAGE_READONLY), (B, PAGE_READONLY), (a, 0)] {
        let mut old = 0x1234;
        let status = nt_protect_virtual_memory(&mut mm, &mut base.clone(), &mut 0x1000, prot, &mut old);
        assert!(!status.is_success());
        assert_eq!(old, PAGE_NOACCESS);
    }
}

#[test]
fn w_7_old_protect_is_the_first_page_only() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    protect(&mut mm, a + 0x8000, 0x8000, PAGE_EXECUTE_READWRITE).unwrap();
    assert_eq!(protect(&mut mm, a, 0x10000, PAGE_NOACCESS), Ok((a, 0x10000, PAGE_READWRITE)));
    assert_eq!(regions(&mm, a), vec![(a, 0x10000, MEM_COMMIT, PAGE_NOACCESS)]);
    // Starting in the second half reports ERW... after the first change, NOACCESS.
    assert_eq!(protect(&mut mm, a + 0x8000, 0x1000, PAGE_READONLY), Ok((a + 0x8000, 0x1000, PAGE_NOACCESS)));
}

#[test]
fn w_7_protect_splits_regions_and_keeps_allocation_protect_state_and_bytes() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x4000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, &[3; 0x4000]).unwrap();
    protect(&mut mm, a + 0x1000, 0x2000, PAGE_READONLY).unwrap();
    assert_eq!(
        regions(&mm, a),
        vec![
            (a, 0x1000, MEM_COMMIT, PAGE_READWRITE),
            (a + 0x1000, 0x2000, MEM_COMMIT, PAGE_READONLY),
            (a + 0x3000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
        ]
    );
    assert!((a..a + 0x4000).step_by(0x1000).all(|p| query(&mm, p).allocation_protect == PAGE_READWRITE));
    assert_eq!(read(&mm, a, 0x4000), vec![3; 0x4000]);
}

#[test]
fn w_7_guard_pages_can_be_set_and_cleared() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READWRITE | PAGE_GUARD), Ok((a, 0x1000, PAGE_READWRITE)));
    assert_eq!(query(&mm, a).protect, 0x104);
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READONLY), Ok((a, 0x1000, PAGE_READWRITE | PAGE_GUARD)));
    assert_eq!(query(&mm, a).protect, PAGE_READONLY);
}

#[test]
fn protect_of_a_view_beyond_its_protection_is_refused() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(A, 0x10000, Protection::READ, false, RegionKind::FileView).unwrap();
    // A FILE_MAP_READ view: NA and RO succeed [W §11], RW does not (87).
    assert_eq!(protect(&mut mm, A, 0x1000, PAGE_NOACCESS), Ok((A, 0x1000, PAGE_READONLY)));
    assert_eq!(protect(&mut mm, A, 0x1000, PAGE_READONLY), Ok((A, 0x1000, PAGE_NOACCESS)));
    let status = protect(&mut mm, A, 0x1000, PAGE_READWRITE).unwrap_err();
    assert_eq!(status, NtStatus::SECTION_PROTECTION);
    assert_eq!(nt_status_to_dos_error(status), ERROR_INVALID_PARAMETER);
}

#[test]
fn protect_of_an_empty_range_is_invalid_parameter_3() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    assert_eq!(protect(&mut mm, a, 0, PAGE_READONLY), Err(NtStatus::INVALID_PARAMETER_3));
    // Size 0 at an unaligned address touches that address's page.
    assert_eq!(protect(&mut mm, a + 0x10, 0, PAGE_READONLY), Ok((a, 0x1000, PAGE_READWRITE)));
}

// ------------------------------------------------------------------ §8 query

#[test]
fn d_8_base_address_is_page_down_and_free_size_runs_to_the_next_allocation() {
    let mut mm = MemoryManager::new();
    // A 40 MiB free block between two allocations; query 10 MiB into it.
    alloc(&mut mm, A, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    let free_start = A + 0x10000;
    alloc(&mut mm, free_start + 0x280_0000, 0x1000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    let mbi = query(&mm, free_start + 0xA0_0123);
    assert_eq!(
        (mbi.state, mbi.base_address, mbi.region_size),
        (MEM_FREE, free_start + 0xA0_0000, 0x1E0_0000)
    );
    // The free space above the last allocation runs to the end of user space.
    let last = query(&mm, free_start + 0x281_0000);
    assert_eq!(last.base_address + last.region_size, USER_SPACE_END);
    // Inside an allocation too, BaseAddress is the queried page.
    let inside = query(&mm, A + 0x123);
    assert_eq!((inside.base_address, inside.allocation_base), (A, A));
}

#[test]
fn w_8_free_memory_reports_mem_free_noaccess_and_zeros() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    let next = new_alloc(&mut mm, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    free(&mut mm, a, 0, MEM_RELEASE).unwrap();
    let mbi = query(&mm, a + 0x10);
    assert_eq!((mbi.state, mbi.protect, mbi.type_), (MEM_FREE, PAGE_NOACCESS, 0));
    assert_eq!((mbi.allocation_base, mbi.allocation_protect, mbi.partition_id), (0, 0, 0));
    assert_eq!((mbi.base_address, mbi.base_address + mbi.region_size), (a, next));
}

#[test]
fn w_8_region_size_ends_where_state_protect_or_allocation_changes() {
    let mut mm = MemoryManager::new();
    // Two adjacent allocations with the same state and protection.
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, A + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!(query(&mm, A + 0x8000).region_size, 0x8000);
    // Guard bit, state and protection changes split.
    protect(&mut mm, A + 0x2000, 0x1000, PAGE_READWRITE | PAGE_GUARD).unwrap();
    free(&mut mm, A + 0x4000, 0x1000, MEM_DECOMMIT).unwrap();
    protect(&mut mm, A + 0x6000, 0x1000, PAGE_READONLY).unwrap();
    assert_eq!(
        regions(&mm, A),
        vec![
            (A, 0x2000, MEM_COMMIT, PAGE_READWRITE),
            (A + 0x2000, 0x1000, MEM_COMMIT, 0x104),
            (A + 0x3000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
            (A + 0x4000, 0x1000, MEM_RESERVE, 0),
            (A + 0x5000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
            (A + 0x6000, 0x1000, MEM_COMMIT, PAGE_READONLY),
            (A + 0x7000, 0x9000, MEM_COMMIT, PAGE_READWRITE),
        ]
    );
    // Counting runs forward only.
    assert_eq!(query(&mm, A + 0x1000).region_size, 0x1000);
}

#[test]
fn w_8_reserved_and_committed_pages_report_their_allocation() {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE, PAGE_EXECUTE_READ).unwrap();
    alloc(&mut mm, A + 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD).unwrap();
    let reserved = query(&mm, A);
    assert_eq!(
        reserved,
        MemoryBasicInformation {
            base_address: A,
            allocation_base: A,
            allocation_protect: PAGE_EXECUTE_READ,
            partition_id: 0,
            region_size: 0x1000,
            state: MEM_RESERVE,
            protect: 0,
            type_: MEM_PRIVATE,
        }
    );
    let committed = query(&mm, A + 0x1FFF);
    assert_eq!((committed.state, committed.protect, committed.base_address), (MEM_COMMIT, 0x104, A + 0x1000));
    assert_eq!((committed.allocation_base, committed.allocation_protect), (A, PAGE_EXECUTE_READ));
}

#[test]
fn w_8_type_is_private_mapped_or_image() {
    let mut mm = MemoryManager::new();
    let kinds = [
        (RegionKind::Private, MEM_PRIVATE),
        (RegionKind::FileView, MEM_MAPPED),
        (RegionKind::PagefileView, MEM_MAPPED),
        (RegionKind::Image, MEM_IMAGE),
    ];
    for (i, (kind, ty)) in kinds.into_iter().enumerate() {
        let base = A + i as u64 * 0x10000;
        mm.allocate_memory_at(base, 0x2000, Protection::READ, i % 2 == 0, kind).unwrap();
        let mbi = query(&mm, base + 0x1000);
        assert_eq!((mbi.type_, mbi.allocation_base, mbi.allocation_protect), (ty, base, PAGE_READONLY));
    }
}

#[test]
fn mmio_reports_as_committed_private_read_write() {
    let mut mm = MemoryManager::new();
    mm.allocate_mmio(A, 0x2000, |_, buf| buf.fill(1), |_, _| {}).unwrap();
    let mbi = query(&mm, A + 0x1000);
    assert_eq!((mbi.state, mbi.protect, mbi.type_), (MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE));
    assert_eq!((mbi.allocation_base, mbi.allocation_protect, mbi.region_size), (A, PAGE_READWRITE, 0x1000));
}

#[test]
fn snapshots_report_the_same_information() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);
    let snap = mm.snapshot();
    free(&mut mm, a, 0, MEM_RELEASE).unwrap();
    let then = MemoryBasicInformation::from(snap.region_info(a));
    assert_eq!((then.state, then.protect, then.allocation_protect), (MEM_COMMIT, 0x204, 0x204));
    mm.restore(&snap);
    assert_eq!(query(&mm, a), then);
}

// --------------------------------------------------------------- §9 guard, NOCACHE

#[test]
fn w_9_guard_allocation_reports_0x104() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    let mbi = query(&mm, a);
    assert_eq!((mbi.allocation_protect, mbi.protect), (0x104, 0x104));
}

#[test]
fn w_9_first_guard_touch_raises_once_then_the_access_goes_through() {
    for write in [false, true] {
        let mut mm = MemoryManager::new();
        let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
        let touch = |mm: &mut MemoryManager| {
            if write { mm.guest_write(a + 8, &[1]) } else { mm.guest_read(a + 8, &mut [0]) }
        };
        let err = touch(&mut mm).unwrap_err();
        let access = if write { Access::Write } else { Access::Read };
        assert_eq!(err, MemoryError::GuardPageViolation { address: a + 8, access });
        assert_eq!(exception_code(&err), Some(NtStatus::GUARD_PAGE_VIOLATION));
        let mbi = query(&mm, a);
        assert_eq!((mbi.protect, mbi.allocation_protect), (PAGE_READWRITE, 0x104));
        // Exactly one exception per arming.
        touch(&mut mm).unwrap();
        touch(&mut mm).unwrap();
    }
}

#[test]
fn w_9_protect_rearms_and_clears_the_guard() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    mm.guest_read(a, &mut [0]).unwrap_err();
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READWRITE | PAGE_GUARD), Ok((a, 0x1000, PAGE_READWRITE)));
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READWRITE), Ok((a, 0x1000, 0x104)));
    mm.guest_read(a, &mut [0]).unwrap();
}

#[test]
fn w_9_contents_are_preserved_while_guarded() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, b"guarded").unwrap();
    protect(&mut mm, a, 0x1000, PAGE_READWRITE | PAGE_GUARD).unwrap();
    assert_eq!(read(&mm, a, 7), b"guarded");
    let mut buf = [0; 7];
    mm.guest_read(a, &mut buf).unwrap_err();
    mm.guest_read(a, &mut buf).unwrap();
    assert_eq!(&buf, b"guarded");
}

#[test]
fn w_9_stack_layout_reserved_then_guard_then_committed() {
    // What RtlCreateUserStack builds, with Nt calls: reserve 1 MiB, commit the
    // top page RW and the page below it RW|GUARD.
    let mut mm = MemoryManager::new();
    let (s, size) = alloc(&mut mm, 0, 0x10_0000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    let top = s + size;
    alloc(&mut mm, top - 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    alloc(&mut mm, top - 0x2000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD).unwrap();
    assert_eq!(
        regions(&mm, s),
        vec![
            (s, size - 0x2000, MEM_RESERVE, 0),
            (top - 0x2000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD),
            (top - 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE),
        ]
    );
}

#[test]
fn w_9_nocache_allocation_reports_0x204() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);
    let mbi = query(&mm, a);
    assert_eq!((mbi.allocation_protect, mbi.protect, mbi.region_size), (0x204, 0x204, 0x2000));
    assert_eq!(mm.region_info(a).attributes, PAGE_NOCACHE);
}

#[test]
fn w_9_protect_rw_on_a_nocache_allocation_keeps_0x204() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READWRITE), Ok((a, 0x1000, 0x204)));
    let mbi = query(&mm, a);
    assert_eq!((mbi.protect, mbi.region_size), (0x204, 0x2000));
    // Then RO reports 0x202.
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READONLY), Ok((a, 0x1000, 0x204)));
    assert_eq!(query(&mm, a).protect, 0x202);
    assert_eq!(query(&mm, a).allocation_protect, 0x204);
}

#[test]
fn w_9_nocache_on_a_plain_allocation_is_ignored() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READONLY | PAGE_NOCACHE), Ok((a, 0x1000, PAGE_READWRITE)));
    assert_eq!(query(&mm, a).protect, PAGE_READONLY);
    // A commit does not add it either.
    let r = new_alloc(&mut mm, 0x2000, MEM_RESERVE, PAGE_READWRITE);
    alloc(&mut mm, r, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE).unwrap();
    assert_eq!(query(&mm, r).protect, PAGE_READWRITE);
}

#[test]
fn writecombine_is_an_allocation_attribute_like_nocache() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE, PAGE_READWRITE | PAGE_WRITECOMBINE);
    assert_eq!(query(&mm, a).allocation_protect, 0x404);
    assert_eq!(query(&mm, a).protect, 0);
    alloc(&mut mm, a, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ).unwrap();
    assert_eq!(query(&mm, a).protect, PAGE_EXECUTE_READ | PAGE_WRITECOMBINE);
    // NOACCESS pages cannot carry a cache modifier.
    protect(&mut mm, a, 0x1000, PAGE_NOACCESS).unwrap();
    assert_eq!(query(&mm, a).protect, PAGE_NOACCESS);
    // It survives a partial release on both pieces.
    free(&mut mm, a + 0x4000, 0x1000, MEM_RELEASE).unwrap();
    assert_eq!(query(&mm, a + 0x5000).allocation_protect, 0x404);
}

#[test]
fn guard_on_a_nocache_allocation_reports_the_guard_until_it_fires() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);
    assert_eq!(protect(&mut mm, a, 0x1000, PAGE_READWRITE | PAGE_GUARD), Ok((a, 0x1000, 0x204)));
    assert_eq!(query(&mm, a).protect, 0x104);
    mm.guest_write(a, &[1]).unwrap_err();
    assert_eq!(query(&mm, a).protect, 0x204);
}

// ---------------------------------------------------------------- §10 contents

#[test]
fn d_10_newly_committed_memory_is_zero() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    assert_eq!(read(&mm, a, 0x3000), vec![0; 0x3000]);
}

#[test]
fn w_10_released_then_allocated_again_reads_zero() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, &[0xCC; 0x10000]).unwrap();
    free(&mut mm, a, 0, MEM_RELEASE).unwrap();
    alloc(&mut mm, a, 0x10000, MEM_RESERVE, PAGE_READWRITE).unwrap();
    alloc(&mut mm, a, 0x10000, MEM_COMMIT, PAGE_READWRITE).unwrap();
    assert_eq!(read(&mm, a, 0x10000), vec![0; 0x10000]);
}

#[test]
fn w_10_protection_changes_preserve_bytes() {
    let mut mm = MemoryManager::new();
    let a = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    mm.write_memory(a, b"keep").unwrap();
    for p in [PAGE_NOACCESS, PAGE_EXECUTE, PAGE_READONLY | PAGE_GUARD, PAGE_EXECUTE_READWRITE] {
        protect(&mut mm, a, 4, p).unwrap();
        assert_eq!(read(&mm, a, 4), b"keep");
    }
}

#[test]
fn w_10_forbidden_writes_raise_access_violation() {
    let mut mm = MemoryManager::new();
    let ro = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    let na = new_alloc(&mut mm, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS);
    let reserved = new_alloc(&mut mm, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    for address in [ro, na, reserved, B] {
        let before = fingerprint(&mm);
        let err = mm.guest_write(address, &[1]).unwrap_err();
        assert_eq!(exception_code(&err), Some(NtStatus::ACCESS_VIOLATION), "{address:#x}");
        assert_eq!(fingerprint(&mm), before);
    }
    assert_eq!(nt_status_to_dos_error(NtStatus::ACCESS_VIOLATION), ERROR_NOACCESS);
    assert_eq!(exception_code(&MemoryError::NotAllocated { address: 0 }), None);
}

// ----------------------------------------------------------- hostile inputs

const HOSTILE_ADDRESSES: [u64; 16] = [
    0,
    1,
    0xFFFF,
    0x10000,
    A,
    A + 0x1FFF,
    A + 0x10000,
    MAX_ALLOCATION_ADDRESS - 0xFFFF,
    MAX_ALLOCATION_ADDRESS,
    USER_SPACE_END,
    1 << 47,
    1 << 63,
    u64::MAX - 0x10000,
    u64::MAX - 0xFFF,
    u64::MAX - 1,
    u64::MAX,
];

const HOSTILE_SIZES: [u64; 12] = [
    0,
    1,
    0x1000,
    0x10001,
    USER_SPACE_END - A,
    USER_SPACE_END,
    USER_SPACE_END + 1,
    1 << 63,
    u64::MAX - A,
    u64::MAX - 0xFFF,
    u64::MAX - 1,
    u64::MAX,
];

/// A manager with a committed allocation at `A` (64 KiB, half guarded).
fn hostile_setup() -> MemoryManager {
    let mut mm = MemoryManager::new();
    alloc(&mut mm, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE).unwrap();
    protect(&mut mm, A + 0x8000, 0x8000, PAGE_READONLY | PAGE_GUARD).unwrap();
    mm
}

#[test]
fn hostile_allocations_fail_cleanly_or_stay_in_user_space() {
    let types = [
        0,
        MEM_COMMIT,
        MEM_RESERVE,
        MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN,
        MEM_RESET,
        MEM_RESET | MEM_COMMIT,
        u32::MAX,
        0x8000_0000 | MEM_RESERVE,
    ];
    let protects =
        [0, PAGE_READWRITE, PAGE_NOACCESS | PAGE_GUARD, 0xFFFF_FFFF, PAGE_EXECUTE_READWRITE | 0x800];
    let zero_bits = [0, 1, 21, 31, 32, u64::MAX];
    let mut mm = hostile_setup();
    for &base in &HOSTILE_ADDRESSES {
        for &size in &HOSTILE_SIZES {
            for &ty in &types {
                for &prot in &protects {
                    for &zb in &zero_bits {
                        let before = fingerprint(&mm);
                        match alloc_zb(&mut mm, base, zb, size, ty, prot) {
                            Ok((b, s)) => {
                                assert!(
                                    b >= MIN_ALLOCATION_ADDRESS
                                        && b.checked_add(s).unwrap() <= USER_SPACE_END
                                );
                                assert_eq!(b % 0x1000, 0);
                                assert!(s > 0 && s % 0x1000 == 0);
                                if ty != MEM_RESET {
                                    mm = hostile_setup();
                                }
                            }
                            Err(_) => assert_eq!(fingerprint(&mm), before),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn hostile_frees_and_protects_fail_cleanly() {
    let mut mm = hostile_setup();
    for &base in &HOSTILE_ADDRESSES {
        for &size in &HOSTILE_SIZES {
            for ty in [0, MEM_DECOMMIT, MEM_RELEASE, u32::MAX] {
                let before = fingerprint(&mm);
                match free(&mut mm, base, size, ty) {
                    Ok((b, s)) => {
                        assert!(b.checked_add(s).unwrap() <= USER_SPACE_END);
                        mm = hostile_setup();
                    }
                    Err(_) => assert_eq!(fingerprint(&mm), before),
                }
            }
            for prot in [0, PAGE_READONLY, PAGE_READWRITE | PAGE_GUARD, u32::MAX, PAGE_WRITECOPY] {
                let before = fingerprint(&mm);
                match protect(&mut mm, base, size, prot) {
                    Ok((b, s, _)) => {
                        assert!(b >= A && b + s <= A + 0x10000);
                        mm = hostile_setup();
                    }
                    Err(_) => assert_eq!(fingerprint(&mm), before),
                }
            }
        }
        // Queries never panic: below the limit they answer, above they refuse.
        match nt_query_virtual_memory(&mm, base) {
            Ok(mbi) => {
                assert!(base < USER_SPACE_END);
                assert!(mbi.region_size > 0 && mbi.base_address + mbi.region_size <= USER_SPACE_END);
            }
            Err(status) => {
                assert_eq!(status, NtStatus::INVALID_PARAMETER);
                assert!(base >= USER_SPACE_END);
            }
        }
    }
}

#[test]
fn failed_calls_leave_the_layout_version_unchanged() {
    let mut mm = hostile_setup();
    let v = mm.layout_version();
    let _ = alloc(&mut mm, A, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    let _ = alloc(&mut mm, A, 0x1000, MEM_RESET, PAGE_READWRITE);
    let _ = free(&mut mm, A + 0x1000, 0, MEM_RELEASE);
    let _ = protect(&mut mm, A + 0x10000, 0x1000, PAGE_READWRITE);
    let _ = nt_query_virtual_memory(&mm, A);
    assert_eq!(mm.layout_version(), v);
}
