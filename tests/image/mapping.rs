//! `vmsnap::image::map_image`: PE32+ and PE32 files built here (by hand, and
//! by the `object` crate's PE writer) and, where they are present, the real
//! `ntdll.dll` and `kernel32.dll` from Debian's `libwine` package.
//!
//! Protections are checked through the engine (`region_info`) and through
//! the Windows face (`nt_query_virtual_memory`), against what Windows
//! reports for image views (docs/windows-semantics.md §11): AllocationProtect 0x80
//! (PAGE_EXECUTE_WRITECOPY), the header page 0x02, Type MEM_IMAGE.

use crate::common;

use std::path::{Path, PathBuf};

use common::pe::*;
use vmsnap::image::{self, ImageError, MappedImage, map_image, section_protection};
use vmsnap::nt::{
    MEM_COMMIT, MEM_IMAGE, NtStatus, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY,
    PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY, nt_protect_virtual_memory,
    nt_query_virtual_memory,
};
use vmsnap::{Access, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionKind};

const EWC: Protection = Protection::READ.union(Protection::EXECUTE).union(Protection::WRITE_COPY);
const WC: Protection = Protection::READ.union(Protection::WRITE_COPY);

fn read(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mm.read_memory(address, &mut buf).expect("mapped bytes are readable");
    buf
}

fn read_u64(mm: &MemoryManager, address: u64) -> u64 {
    u64::from_le_bytes(read(mm, address, 8).try_into().unwrap())
}

fn read_u32(mm: &MemoryManager, address: u64) -> u32 {
    u32::from_le_bytes(read(mm, address, 4).try_into().unwrap())
}

/// The pointer-sized value at `address`.
fn read_ptr(mm: &MemoryManager, address: u64, pe32_plus: bool) -> u64 {
    if pe32_plus { read_u64(mm, address) } else { u64::from(read_u32(mm, address)) }
}

/// Checks the sample image mapped at `image.base` (relocated or not).
fn check_sample(mm: &MemoryManager, image: &MappedImage, file: &Pe, pe32_plus: bool) {
    let base = image.base;
    let preferred = if pe32_plus { PREFERRED_64 } else { PREFERRED_32 };
    assert_eq!(image.preferred_base, preferred);
    assert_eq!(image.relocated, base != preferred);
    assert_eq!(image.size, SAMPLE_SIZE);
    assert_eq!(image.entry_point, base + u64::from(TEXT) + 1);
    assert_eq!(image.is_pe32_plus, pe32_plus);
    assert_eq!(image.machine, if pe32_plus { 0x8664 } else { 0x14c });
    assert_eq!(base % 0x10000, 0);

    // The allocation.
    let regions: Vec<_> = mm.reserved_regions().filter(|r| r.base == base).collect();
    assert_eq!(regions.len(), 1);
    assert_eq!(
        (regions[0].length, regions[0].kind, regions[0].initial_permissions),
        (SAMPLE_SIZE, RegionKind::Image, EWC)
    );

    // Sections as reported.
    let names: Vec<_> = image.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".text", ".rdata", ".data", ".bss", ".reloc"]);
    let expected = [
        (TEXT, 0x1000, Protection::READ_EXECUTE),
        (RDATA, 0x1000, Protection::READ),
        (DATA, 0x2000, WC),
        (BSS, 0x1000, WC),
        (RELOC, 0x1000, Protection::READ),
    ];
    for (s, (rva, size, protection)) in image.sections.iter().zip(expected) {
        assert_eq!(
            (s.address, s.size, s.protection),
            (base + u64::from(rva), size, protection),
            "{}",
            s.name
        );
        assert_eq!(section_protection(s.characteristics), protection);
    }

    // Headers: the file's first SizeOfHeaders bytes (ImageBase updated when
    // relocated), then zeros to the end of the page.
    let soh = file.size_of_headers as usize;
    let headers = read(mm, base, soh);
    let mut expected_headers = file.bytes[..soh].to_vec();
    if image.relocated {
        if pe32_plus {
            expected_headers[OPT + 24..OPT + 32].copy_from_slice(&base.to_le_bytes());
        } else {
            expected_headers[OPT + 28..OPT + 32].copy_from_slice(&(base as u32).to_le_bytes());
        }
    }
    assert!(headers == expected_headers, "mapped headers differ from the file's");
    assert!(read(mm, base + soh as u64, 0x1000 - soh).iter().all(|&b| b == 0), "rest of the header page");

    // Section bytes; zero fill past the raw data.
    assert_eq!(read(mm, base + u64::from(TEXT), CODE.len()), CODE);
    assert_eq!(read(mm, base + u64::from(TEXT) + CODE.len() as u64, 16), [0u8; 16]);
    assert_eq!(read(mm, base + u64::from(RDATA), RDATA_BYTES.len()), RDATA_BYTES);
    assert_eq!(read(mm, base + u64::from(DATA), 8), b"DATA-MRK");
    assert!(read(mm, base + u64::from(DATA) + 0x1200, 0x600).iter().all(|&b| b == 0), ".data past raw");
    assert!(read(mm, base + u64::from(BSS), 0x1000).iter().all(|&b| b == 0), ".bss");

    // The pointers in .data point at .rdata wherever the image is.
    let rdata = base + u64::from(RDATA);
    assert_eq!(read_ptr(mm, base + u64::from(DATA + DATA_POINTER), pe32_plus), rdata);
    assert_eq!(read_ptr(mm, base + u64::from(DATA + DATA_POINTER_2), pe32_plus), rdata + 6);

    // Protections, page by page, through the engine.
    let pages = [
        (0x0000, Protection::READ),
        (0x1000, Protection::READ_EXECUTE),
        (0x2000, Protection::READ),
        (0x3000, WC),
        (0x4000, WC),
        (0x5000, WC),
        (0x6000, Protection::READ),
    ];
    for (offset, protection) in pages {
        let info = mm.region_info(base + offset);
        assert_eq!(info.permissions, protection, "page {offset:#x}");
        assert_eq!((info.is_committed, info.kind, info.allocation_base), (true, RegionKind::Image, base));
        assert_eq!(info.initial_permissions, EWC);
    }
    // .data and .bss share one protection: one region of three pages.
    assert_eq!(mm.region_info(base + u64::from(DATA)).length, 0x3000);
}

#[test]
fn pe32_plus_maps_at_its_preferred_base() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    assert_eq!(image.base, PREFERRED_64);
    assert!(!image.relocated);
    check_sample(&mm, &image, &file, true);
    assert_eq!(image.directory(5), Some((image.base + u64::from(RELOC), 8 + 2 * 2)));
    assert_eq!(image.directory(0), None);
}

#[test]
fn pe32_maps_at_its_preferred_base() {
    let file = sample(false);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    assert_eq!(image.base, PREFERRED_32);
    check_sample(&mm, &image, &file, false);
}

/// What `nt` must report for write-copy pages; the message names the place
/// to fix when it does not.
const NT_WRITECOPY: &str = "vmsnap::nt::page_from_protection must report Protection::WRITE_COPY as \
     PAGE_WRITECOPY (0x08) / PAGE_EXECUTE_WRITECOPY (0x80), as Windows does for image views (§11)";

#[test]
fn nt_query_reports_what_windows_reports_for_an_image_view() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let b = image.base;
    // (offset, Protect, RegionSize)
    let cases = [
        (0x0000, PAGE_READONLY, 0x1000),     // headers
        (0x1000, PAGE_EXECUTE_READ, 0x1000), // .text
        (0x2000, PAGE_READONLY, 0x1000),     // .rdata
        (0x3000, PAGE_WRITECOPY, 0x3000),    // .data + .bss
        (0x6000, PAGE_READONLY, 0x1000),     // .reloc
    ];
    for (offset, protect, size) in cases {
        let mbi = nt_query_virtual_memory(&mm, b + offset + 0x10).unwrap();
        assert_eq!(mbi.base_address, b + offset);
        assert_eq!(mbi.allocation_base, b);
        assert_eq!(
            mbi.allocation_protect, PAGE_EXECUTE_WRITECOPY,
            "AllocationProtect at {offset:#x}: {NT_WRITECOPY}"
        );
        assert_eq!((mbi.state, mbi.type_), (MEM_COMMIT, MEM_IMAGE));
        assert_eq!(mbi.protect, protect, "Protect at {offset:#x}: {NT_WRITECOPY}");
        assert_eq!(mbi.region_size, size, "RegionSize at {offset:#x}");
    }
}

// docs/windows-semantics.md §11 [W]: on image views, VirtualProtect turns RW
// requests into WC (and ERW into EWC); WC itself is accepted.
#[test]
fn w_11_protect_on_an_image_turns_read_write_into_write_copy() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let rdata = image.base + 0x2000;
    for (asked, reported) in [
        (PAGE_READWRITE, PAGE_WRITECOPY),
        (PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY),
        (PAGE_WRITECOPY, PAGE_WRITECOPY),
        (PAGE_READONLY, PAGE_READONLY),
    ] {
        let (mut base, mut size, mut old) = (rdata, 0x1000, 0);
        assert_eq!(
            nt_protect_virtual_memory(&mut mm, &mut base, &mut size, asked, &mut old),
            NtStatus::SUCCESS
        );
        assert_eq!(nt_query_virtual_memory(&mm, rdata).unwrap().protect, reported, "asked {asked:#x}");
    }
    // The write-copy page becomes writable on the guest's first write.
    let (mut base, mut size, mut old) = (rdata, 0x1000, 0);
    nt_protect_virtual_memory(&mut mm, &mut base, &mut size, PAGE_READWRITE, &mut old);
    mm.guest_write(rdata, b"x").unwrap();
    assert_eq!(nt_query_virtual_memory(&mm, rdata).unwrap().protect, PAGE_READWRITE);
}

#[test]
fn relocated_when_the_preferred_base_is_taken() {
    for pe32_plus in [true, false] {
        let file = sample(pe32_plus);
        let preferred = if pe32_plus { PREFERRED_64 } else { PREFERRED_32 };
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(preferred, 0x1000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        let image = map_image(&mut mm, &file.bytes).unwrap();
        assert_ne!(image.base, preferred);
        assert!(image.relocated);
        check_sample(&mm, &image, &file, pe32_plus);
        // The fixed-up values moved by exactly the delta.
        let delta = image.base.wrapping_sub(preferred);
        let old = preferred + u64::from(RDATA);
        let ptr = read_ptr(&mm, image.base + u64::from(DATA + DATA_POINTER), pe32_plus);
        assert_eq!(ptr, old.wrapping_add(delta) & if pe32_plus { u64::MAX } else { 0xFFFF_FFFF });
        if !pe32_plus {
            assert!(image.base + image.size <= 1 << 31, "PE32 without LARGE_ADDRESS_AWARE stays below 2 GiB");
        }
        // The private allocation is untouched.
        assert_eq!(mm.region_info(preferred).kind, RegionKind::Private);
    }
}

#[test]
fn two_images_side_by_side() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let first = map_image(&mut mm, &file.bytes).unwrap();
    let second = map_image(&mut mm, &file.bytes).unwrap();
    assert_eq!(first.base, PREFERRED_64);
    assert!(second.relocated);
    assert!(second.base >= first.base + first.size || second.base + second.size <= first.base);
    check_sample(&mm, &first, &file, true);
    check_sample(&mm, &second, &file, true);
    let images: Vec<_> = mm.reserved_regions().filter(|r| r.kind == RegionKind::Image).collect();
    assert_eq!(images.len(), 2);
    // Writing one image's data does not touch the other's.
    mm.guest_write(second.base + u64::from(DATA), b"SECOND").unwrap();
    assert_eq!(read(&mm, first.base + u64::from(DATA), 8), b"DATA-MRK");
}

#[test]
fn guest_access_follows_section_protections() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let b = image.base;
    let data = b + u64::from(DATA);

    // Code runs; data does not.
    let mut buf = [0u8; 3];
    mm.guest_fetch(image.entry_point - 1, &mut buf).unwrap();
    assert_eq!(&buf, b"\x90\x90\xC3");
    assert_eq!(
        mm.guest_fetch(data, &mut buf),
        Err(MemoryError::AccessViolation { address: data, access: Access::Execute })
    );
    // Headers, .text and .rdata are read-only.
    for at in [b, b + u64::from(TEXT), b + u64::from(RDATA)] {
        assert_eq!(
            mm.guest_write(at, &[1]),
            Err(MemoryError::AccessViolation { address: at, access: Access::Write })
        );
    }

    // A write to a write-copy page goes through and makes that page (only) read-write.
    let version = mm.layout_version();
    mm.guest_write(data + 0x20, b"written").unwrap();
    assert_eq!(read(&mm, data + 0x20, 7), b"written");
    assert!(mm.layout_version() > version);
    let info = mm.region_info(data);
    assert_eq!((info.permissions, info.length), (Protection::READ_WRITE, 0x1000));
    assert_eq!(mm.region_info(data + 0x1000).permissions, WC);

    // A write straddling the WC/RW boundary turns the second page too.
    mm.guest_write(data + 0xFFC, &[7; 8]).unwrap();
    assert_eq!(mm.region_info(data).length, 0x2000);
    assert_eq!(mm.region_info(data + 0x2000).permissions, WC);
}

#[test]
fn nt_query_after_a_guest_write_to_a_write_copy_page() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let data = image.base + u64::from(DATA);
    mm.guest_write(data + 0x20, b"written").unwrap();
    // Writing to a WC page turns it into RW; only the written page changes,
    // which splits the region (§11 [W]).
    let mbi = nt_query_virtual_memory(&mm, data).unwrap();
    assert_eq!((mbi.protect, mbi.region_size), (PAGE_READWRITE, 0x1000));
    assert_eq!(mbi.allocation_protect, PAGE_EXECUTE_WRITECOPY, "{NT_WRITECOPY}");
    let mbi = nt_query_virtual_memory(&mm, data + 0x1000).unwrap();
    assert_eq!((mbi.protect, mbi.region_size), (PAGE_WRITECOPY, 0x2000), "{NT_WRITECOPY}");
}

#[test]
fn stripped_image_maps_only_at_its_preferred_base() {
    let mut spec = sample_spec(true);
    spec.relocs.clear();
    spec.characteristics |= 1; // IMAGE_FILE_RELOCS_STRIPPED
    let file = build(&spec);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    assert_eq!((image.base, image.relocated), (PREFERRED_64, false));
    let regions: Vec<_> = mm.reserved_regions().collect();
    let version = mm.layout_version();
    assert_eq!(
        map_image(&mut mm, &file.bytes),
        Err(ImageError::RelocationsStripped { preferred_base: PREFERRED_64 })
    );
    assert_eq!(mm.reserved_regions().collect::<Vec<_>>(), regions);
    assert_eq!(mm.layout_version(), version);
}

#[test]
fn entry_point_zero_is_reported_as_zero() {
    let mut spec = sample_spec(true);
    spec.entry = 0;
    let file = build(&spec);
    let mut mm = MemoryManager::new();
    assert_eq!(map_image(&mut mm, &file.bytes).unwrap().entry_point, 0);
}

/// (characteristics, Protection, PAGE_*) for every combination of the R, W,
/// X and SHARED bits that Windows distinguishes.
const CHARACTERISTICS: [(u32, Protection, u32); 11] = [
    (0, Protection::empty(), PAGE_NOACCESS),
    (SCN_X, Protection::EXECUTE, 0x10),
    (SCN_R, Protection::READ, PAGE_READONLY),
    (SCN_R | SCN_X, Protection::READ_EXECUTE, PAGE_EXECUTE_READ),
    (SCN_W, WC, PAGE_WRITECOPY),
    (SCN_R | SCN_W, WC, PAGE_WRITECOPY),
    (SCN_W | SCN_X, EWC, PAGE_EXECUTE_WRITECOPY),
    (SCN_R | SCN_W | SCN_X, EWC, PAGE_EXECUTE_WRITECOPY),
    (SCN_R | SCN_W | SCN_SHARED, Protection::READ_WRITE, PAGE_READWRITE),
    (SCN_R | SCN_W | SCN_X | SCN_SHARED, Protection::ALL_ACCESS, 0x40),
    (SCN_R | SCN_SHARED, Protection::READ, PAGE_READONLY),
];

/// One section per [`CHARACTERISTICS`] entry, at 0x1000, 0x2000, ...
fn characteristics_image(mm: &mut MemoryManager) -> MappedImage {
    let spec = PeSpec {
        pe32_plus: true,
        machine: 0x8664,
        characteristics: 0x2022,
        image_base: PREFERRED_64,
        entry: 0,
        sections: CHARACTERISTICS
            .iter()
            .map(|&(characteristics, _, _)| SectionSpec {
                name: ".sect",
                characteristics,
                virtual_size: 0x10,
                data: vec![0xAB; 0x10],
            })
            .collect(),
        relocs: Vec::new(),
    };
    map_image(mm, &build(&spec).bytes).unwrap()
}

#[test]
fn every_characteristics_combination_gets_the_windows_protection() {
    let mut mm = MemoryManager::new();
    let image = characteristics_image(&mut mm);
    for (i, (s, &(characteristics, protection, _))) in image.sections.iter().zip(&CHARACTERISTICS).enumerate()
    {
        assert_eq!(s.address, image.base + 0x1000 * (i as u64 + 1));
        assert_eq!(s.protection, protection, "{characteristics:#x}");
        assert_eq!(mm.region_info(s.address).permissions, protection, "{characteristics:#x}");
        assert_eq!(read(&mm, s.address, 0x10), [0xAB; 0x10]);
    }
}

#[test]
fn nt_query_reports_the_page_value_of_every_characteristics_combination() {
    let mut mm = MemoryManager::new();
    let image = characteristics_image(&mut mm);
    for (s, &(characteristics, _, page)) in image.sections.iter().zip(&CHARACTERISTICS) {
        let protect = nt_query_virtual_memory(&mm, s.address).unwrap().protect;
        assert_eq!(protect, page, "characteristics {characteristics:#x}: {NT_WRITECOPY}");
    }
}

#[test]
fn gaps_between_sections_are_noaccess() {
    // Sections at 0x1000 and 0x4000: 0x2000..0x4000 is covered by nothing;
    // SizeOfImage runs one page past the last section.
    let mut spec = sample_spec(true);
    spec.relocs.clear();
    spec.sections.truncate(1);
    spec.sections.push(SectionSpec {
        name: ".rdata",
        characteristics: SCN_INITIALIZED | SCN_R,
        virtual_size: 0x10,
        data: vec![1; 0x10],
    });
    let mut file = build(&spec);
    file.put_u32(file.section_field(1, 12), 0x4000);
    file.put_u32(Pe::opt(56), 0x6000);
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let b = image.base;
    assert_eq!(image.size, 0x6000);
    assert_eq!(mm.region_info(b + 0x2000).permissions, Protection::empty());
    assert_eq!(mm.region_info(b + 0x2000).length, 0x2000);
    assert_eq!(mm.region_info(b + 0x4000).permissions, Protection::READ);
    assert_eq!(mm.region_info(b + 0x5000).permissions, Protection::empty());
    assert_eq!(read(&mm, b + 0x4000, 0x10), [1; 0x10]);
}

#[test]
fn a_snapshot_from_before_the_mapping_has_no_image() {
    let file = sample(true);
    let mut mm = MemoryManager::new();
    let before = mm.snapshot();
    let image = map_image(&mut mm, &file.bytes).unwrap();
    let after = mm.snapshot();
    mm.restore(&before);
    assert_eq!(mm.region_kind(image.base), RegionKind::Free);
    mm.restore(&after);
    check_sample(&mm, &image, &file, true);
}

#[test]
fn maps_a_file_written_by_the_object_crate() {
    use object::pe as ope;
    use object::write::pe::{NtHeaders, Writer};

    for is_64 in [true, false] {
        let image_base: u64 = if is_64 { 0x1_8000_0000 } else { 0x1000_0000 };
        let mut out = Vec::new();
        let mut w = Writer::new(is_64, 0x1000, 0x200, &mut out);
        w.reserve_dos_header_and_stub();
        w.reserve_nt_headers(16);
        w.reserve_section_headers(5);
        let code = b"\x55\x48\x89\xe5\xc3";
        let text = w.reserve_text_section(code.len() as u32);
        let rdata_bytes = b"object-rdata\0";
        let rdata = w.reserve_rdata_section(rdata_bytes.len() as u32);
        let data = w.reserve_data_section(0x2000, 0x10);
        let bss = w.reserve_bss_section(0x80);
        let pointer_rva = data.virtual_address + 8;
        w.add_reloc(
            pointer_rva,
            if is_64 { ope::IMAGE_REL_BASED_DIR64 } else { ope::IMAGE_REL_BASED_HIGHLOW },
        );
        let reloc = w.reserve_reloc_section();

        w.write_dos_header_and_stub().unwrap();
        w.write_nt_headers(NtHeaders {
            machine: if is_64 { ope::IMAGE_FILE_MACHINE_AMD64 } else { ope::IMAGE_FILE_MACHINE_I386 },
            time_date_stamp: 0,
            characteristics: ope::IMAGE_FILE_EXECUTABLE_IMAGE | ope::IMAGE_FILE_DLL,
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: text.virtual_address,
            image_base,
            major_operating_system_version: 6,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 6,
            minor_subsystem_version: 0,
            subsystem: ope::IMAGE_SUBSYSTEM_WINDOWS_GUI,
            dll_characteristics: ope::DllFlags(0),
            size_of_stack_reserve: 0x10_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0x10_0000,
            size_of_heap_commit: 0x1000,
        });
        w.write_section_headers();
        w.write_section(text.file_offset, code);
        w.write_section(rdata.file_offset, rdata_bytes);
        let mut data_bytes = [0u8; 0x10];
        let target = image_base + u64::from(rdata.virtual_address);
        let width = if is_64 { 8 } else { 4 };
        data_bytes[8..8 + width].copy_from_slice(&target.to_le_bytes()[..width]);
        w.write_section(data.file_offset, &data_bytes);
        w.write_reloc_section();
        let size_of_image = w.virtual_len();

        for occupy in [false, true] {
            let mut mm = MemoryManager::new();
            if occupy {
                mm.allocate_memory_at(image_base, 0x10000, Protection::READ, false, RegionKind::Private)
                    .unwrap();
            }
            let image = map_image(&mut mm, &out).unwrap();
            let b = image.base;
            assert_eq!(image.relocated, occupy);
            assert_eq!(image.size, u64::from(size_of_image));
            assert_eq!(image.entry_point, b + u64::from(text.virtual_address));
            assert_eq!(image.subsystem, ope::IMAGE_SUBSYSTEM_WINDOWS_GUI.0);
            let names: Vec<_> = image.sections.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, [".text", ".rdata", ".data", ".bss", ".reloc"]);
            let at = |r: &object::write::pe::SectionRange| b + u64::from(r.virtual_address);
            assert_eq!(read(&mm, at(&text), code.len()), code);
            assert_eq!(read(&mm, at(&rdata), rdata_bytes.len()), rdata_bytes);
            assert_eq!(
                read_ptr(&mm, b + u64::from(pointer_rva), is_64),
                b + u64::from(rdata.virtual_address)
            );
            assert_eq!(mm.region_info(at(&text)).permissions, Protection::READ_EXECUTE);
            assert_eq!(mm.region_info(at(&rdata)).permissions, Protection::READ);
            assert_eq!(mm.region_info(at(&data)).permissions, WC);
            assert_eq!(mm.region_info(at(&bss)).permissions, WC);
            assert_eq!(mm.region_info(at(&reloc)).permissions, Protection::READ);
            assert_eq!(mm.region_info(b).permissions, Protection::READ);
        }
    }
}

// ------------------------------------------------------------ real Wine DLLs

const WINE_DIR: &str = "usr/lib/x86_64-linux-gnu/wine/x86_64-windows";

/// Where the libwine PE DLLs are: an installed libwine, or the copy
/// `.ci/deps` extracts into `target/libwine`.
fn wine_dll(name: &str) -> Result<PathBuf, String> {
    let candidates = [
        Path::new("/").join(WINE_DIR).join(name),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/libwine").join(WINE_DIR).join(name),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "SKIPPED: {name} not found at {} or {}. It comes from Debian's libwine package; fetch it with \
             `(cd /tmp && apt-get download libwine) && dpkg -x /tmp/libwine_*.deb target/libwine` \
             from the repository root (or run .ci/deps).",
            candidates[0].display(),
            candidates[1].display()
        )
    })
}

/// Prints why a test skips, straight to stderr so that it shows in the
/// test log even though the test passes (the harness captures `println!`).
fn skip_message(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The protection Windows gives section characteristics (written out here
/// independently of the library's table).
fn expected_protection(c: u32) -> Protection {
    let (r, w, x, shared) = (c & SCN_R != 0, c & SCN_W != 0, c & SCN_X != 0, c & SCN_SHARED != 0);
    match (r || w, w, x) {
        (false, false, false) => Protection::empty(),
        (false, false, true) => Protection::EXECUTE,
        (true, false, false) => Protection::READ,
        (true, false, true) => Protection::READ_EXECUTE,
        (true, true, false) if shared => Protection::READ_WRITE,
        (true, true, false) => WC,
        (true, true, true) if shared => Protection::ALL_ACCESS,
        (true, true, true) => EWC,
        (false, true, _) => unreachable!(),
    }
}

fn page_value(p: Protection) -> u32 {
    match p {
        p if p == Protection::empty() => PAGE_NOACCESS,
        p if p == Protection::READ => PAGE_READONLY,
        p if p == Protection::READ_EXECUTE => PAGE_EXECUTE_READ,
        p if p == WC => PAGE_WRITECOPY,
        p if p == EWC => PAGE_EXECUTE_WRITECOPY,
        p if p == Protection::READ_WRITE => PAGE_READWRITE,
        p if p == Protection::EXECUTE => 0x10,
        _ => 0x40,
    }
}

/// Reads a NUL-terminated string of guest memory.
fn c_string(mm: &MemoryManager, address: u64) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    for i in 0..512 {
        mm.read_memory(address + i, &mut byte).unwrap();
        if byte[0] == 0 {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8(out).unwrap()
}

/// Looks `name` up in the mapped export directory; its absolute address.
fn export(mm: &MemoryManager, image: &MappedImage, name: &str) -> Option<u64> {
    let (dir, _) = image.directory(image::IMAGE_DIRECTORY_ENTRY_EXPORT)?;
    let b = image.base;
    let names = read_u32(mm, dir + 24);
    let functions = b + u64::from(read_u32(mm, dir + 28));
    let name_table = b + u64::from(read_u32(mm, dir + 32));
    let ordinals = b + u64::from(read_u32(mm, dir + 36));
    (0..u64::from(names)).find_map(|i| {
        let at = b + u64::from(read_u32(mm, name_table + 4 * i));
        (c_string(mm, at) == name).then(|| {
            let ordinal = u64::from(u16::from_le_bytes(read(mm, ordinals + 2 * i, 2).try_into().unwrap()));
            b + u64::from(read_u32(mm, functions + 4 * ordinal))
        })
    })
}

/// The DIR64 fixups of a file, parsed here independently of the library.
fn dir64_fixups(file: &[u8], image: &MappedImage, mm: &MemoryManager) -> Vec<u64> {
    let Some((dir, size)) = image.directory(image::IMAGE_DIRECTORY_ENTRY_BASERELOC) else { return vec![] };
    let data = read(mm, dir, size as usize);
    let _ = file;
    let mut fixups = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let page = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        let block = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
        for e in data[at + 8..at + block].chunks_exact(2) {
            let e = u16::from_le_bytes([e[0], e[1]]);
            match e >> 12 {
                0 => {}
                10 => fixups.push(u64::from(page) + u64::from(e & 0xfff)),
                other => panic!("unexpected relocation type {other} in a Wine DLL"),
            }
        }
        at += block;
    }
    fixups
}

/// Maps one Wine DLL and checks everything the bar asks for.
/// `exports` must be code in `.text`; `forwards` are `(export, target)`
/// pairs whose export address is a forwarder string inside the export
/// directory.
fn check_wine_dll(name: &str, exports: &[&str], forwards: &[(&str, &str)]) -> Option<()> {
    let path = match wine_dll(name) {
        Ok(p) => p,
        Err(skip) => {
            skip_message(&skip);
            return None;
        }
    };
    let file = std::fs::read(&path).unwrap();
    let mut mm = MemoryManager::new();
    let image = map_image(&mut mm, &file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(image.is_pe32_plus);
    assert_eq!(image.machine, image::IMAGE_FILE_MACHINE_AMD64);
    assert!(!image.relocated);
    assert_ne!(image.characteristics & image::IMAGE_FILE_DLL, 0);
    println!("{name} at {:#x}, {:#x} bytes, entry {:#x}:", image.base, image.size, image.entry_point);

    // The header page: read-only; the allocation: an EWC image.
    let info = mm.region_info(image.base);
    assert_eq!(
        (info.permissions, info.initial_permissions, info.kind),
        (Protection::READ, EWC, RegionKind::Image)
    );
    assert_eq!(read(&mm, image.base, 0x40), &file[..0x40]);

    // Every section: the protection its characteristics ask for, on every
    // page; its file bytes.
    let sh = u64::from(u32::from_le_bytes(file[0x3c..0x40].try_into().unwrap()));
    let opt_size =
        u64::from(u16::from_le_bytes(file[sh as usize + 20..sh as usize + 22].try_into().unwrap()));
    let table = (sh + 24 + opt_size) as usize;
    let mut seen = Vec::new();
    for (i, s) in image.sections.iter().enumerate() {
        let h = &file[table + 40 * i..table + 40 * (i + 1)];
        let characteristics = u32::from_le_bytes(h[36..40].try_into().unwrap());
        let raw_size = u32::from_le_bytes(h[16..20].try_into().unwrap()) as usize;
        let raw_offset = u32::from_le_bytes(h[20..24].try_into().unwrap()) as usize;
        let protection = expected_protection(characteristics);
        assert_eq!(s.characteristics, characteristics);
        assert_eq!(s.protection, protection, "{name} {}", s.name);
        let mut page = s.address;
        while page < s.address + s.size {
            assert_eq!(mm.page_protection(page), Some(protection), "{name} {} page {page:#x}", s.name);
            page += PAGE_SIZE;
        }
        let copied = raw_size.min(s.virtual_size as usize);
        assert!(
            read(&mm, s.address, copied) == file[raw_offset..raw_offset + copied],
            "{name} {} bytes",
            s.name
        );
        println!(
            "  {:<15} {:#x} +{:#7x}  chars {characteristics:#010x}  {protection}  PAGE {:#04x}",
            s.name,
            s.address,
            s.size,
            page_value(protection)
        );
        seen.push((s.name.clone(), protection));
    }
    // The usual MinGW layout.
    for (section, protection) in [
        (".text", Protection::READ_EXECUTE),
        (".rdata", Protection::READ),
        (".data", WC),
        (".bss", WC),
        (".edata", Protection::READ),
        (".reloc", Protection::READ),
    ] {
        assert!(seen.contains(&(section.to_string(), protection)), "{name}: {section} {protection}");
    }

    // Exports: found by name in the mapped export directory, inside .text.
    let (dir, _) = image.directory(image::IMAGE_DIRECTORY_ENTRY_EXPORT).unwrap();
    assert_eq!(c_string(&mm, image.base + u64::from(read_u32(&mm, dir + 12))).to_lowercase(), name);
    let text = image.section(".text").unwrap();
    for e in exports {
        let at = export(&mm, &image, e).unwrap_or_else(|| panic!("{name}: export {e} not found"));
        assert!(at >= text.address && at < text.address + text.size, "{name}!{e} at {at:#x} is not in .text");
        let mut insn = [0u8; 4];
        mm.guest_fetch(at, &mut insn).unwrap();
        println!("  {e} at {at:#x}");
    }
    let (dir, dir_size) = image.directory(image::IMAGE_DIRECTORY_ENTRY_EXPORT).unwrap();
    for (e, target) in forwards {
        let at = export(&mm, &image, e).unwrap_or_else(|| panic!("{name}: export {e} not found"));
        assert!(at >= dir && at < dir + u64::from(dir_size), "{name}!{e} is not a forwarder");
        assert_eq!(c_string(&mm, at), *target);
        println!("  {e} -> {target}");
    }
    assert_eq!(export(&mm, &image, "NoSuchExportAnywhere"), None);
    if let Some(entry) = (image.entry_point != 0).then_some(image.entry_point) {
        assert!(entry >= text.address && entry < text.address + text.size);
    }

    // Relocated copy: occupy the preferred base; every DIR64 fixup moved by
    // the delta, every other byte (but the ImageBase field) is the same.
    let mut moved = MemoryManager::new();
    moved
        .allocate_memory_at(image.preferred_base, 0x10000, Protection::READ, false, RegionKind::Private)
        .unwrap();
    let other = map_image(&mut moved, &file).unwrap();
    assert!(other.relocated);
    let delta = other.base.wrapping_sub(image.base);
    let fixups = dir64_fixups(&file, &image, &mm);
    assert!(!fixups.is_empty(), "{name} has relocations");
    let a = read(&mm, image.base, image.size as usize);
    let mut b = read(&moved, other.base, image.size as usize);
    for &f in &fixups {
        let f = f as usize;
        let old = u64::from_le_bytes(a[f..f + 8].try_into().unwrap());
        let new = u64::from_le_bytes(b[f..f + 8].try_into().unwrap());
        assert_eq!(new, old.wrapping_add(delta), "{name} fixup at RVA {f:#x}");
        b[f..f + 8].copy_from_slice(&old.to_le_bytes());
    }
    let image_base_field = (sh + 24 + 24) as usize;
    assert_eq!(u64::from_le_bytes(b[image_base_field..image_base_field + 8].try_into().unwrap()), other.base);
    b[image_base_field..image_base_field + 8].copy_from_slice(&image.base.to_le_bytes());
    assert!(a == b, "{name}: relocated image differs outside its fixups");
    for e in exports {
        assert_eq!(export(&moved, &other, e).unwrap(), export(&mm, &image, e).unwrap().wrapping_add(delta));
    }
    println!("  relocated to {:#x}: {} DIR64 fixups checked", other.base, fixups.len());
    Some(())
}

/// NtQueryVirtualMemory on every section of the mapped Wine DLLs reports
/// what Windows reports: the section's PAGE_* value, AllocationProtect 0x80,
/// MEM_IMAGE; the header page PAGE_READONLY.
#[test]
fn nt_query_on_wine_dlls_reports_windows_values() {
    for name in ["ntdll.dll", "kernel32.dll"] {
        let path = match wine_dll(name) {
            Ok(p) => p,
            Err(skip) => {
                skip_message(&skip);
                return;
            }
        };
        let mut mm = MemoryManager::new();
        let image = map_image(&mut mm, &std::fs::read(path).unwrap()).unwrap();
        let mbi = nt_query_virtual_memory(&mm, image.base).unwrap();
        assert_eq!((mbi.protect, mbi.type_, mbi.region_size), (PAGE_READONLY, MEM_IMAGE, 0x1000));
        assert_eq!(mbi.allocation_protect, PAGE_EXECUTE_WRITECOPY, "{name} headers: {NT_WRITECOPY}");
        for s in &image.sections {
            let mbi = nt_query_virtual_memory(&mm, s.address).unwrap();
            let expected = page_value(expected_protection(s.characteristics));
            assert_eq!((mbi.state, mbi.type_, mbi.allocation_base), (MEM_COMMIT, MEM_IMAGE, image.base));
            assert_eq!(mbi.protect, expected, "{name} {}: {NT_WRITECOPY}", s.name);
            assert_eq!(mbi.allocation_protect, PAGE_EXECUTE_WRITECOPY, "{name} {}: {NT_WRITECOPY}", s.name);
        }
    }
}

/// The bar: kernel32.dll and ntdll.dll from libwine map with the
/// right per-section protections. Skips (with a message saying what is
/// missing and how to fetch it) where libwine is not available.
#[test]
fn wine_ntdll_and_kernel32_map_with_the_right_section_protections() {
    let Some(()) =
        check_wine_dll("ntdll.dll", &["RtlComputeCrc32", "NtAllocateVirtualMemory", "LdrLoadDll"], &[])
    else {
        return;
    };
    check_wine_dll(
        "kernel32.dll",
        &["GetModuleHandleA", "Beep", "CreateFileA", "GetProcAddress"],
        &[("AcquireSRWLockExclusive", "NTDLL.RtlAcquireSRWLockExclusive")],
    )
    .unwrap();

    // Both in one address space, each at its preferred base.
    let mut mm = MemoryManager::new();
    let ntdll = map_image(&mut mm, &std::fs::read(wine_dll("ntdll.dll").unwrap()).unwrap()).unwrap();
    let kernel32 = map_image(&mut mm, &std::fs::read(wine_dll("kernel32.dll").unwrap()).unwrap()).unwrap();
    assert!(!ntdll.relocated && !kernel32.relocated);
    assert_eq!(mm.reserved_regions().filter(|r| r.kind == RegionKind::Image).count(), 2);
}
