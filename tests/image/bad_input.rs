//! `map_image` on malformed PE files: one test per failure mode, each
//! asserting the exact `ImageError` and that the manager is unchanged
//! (allocations, layout version, bytes); a truncation sweep over every
//! length of a valid file; and a property test over mutated files (no
//! panic, and a refused file changes nothing).

use crate::common;

use common::pe::*;
use proptest::prelude::*;
use vmsnap::image::{ImageError, MAX_IMAGE_SIZE, MAX_SECTIONS, map_image};
use vmsnap::{MemoryManager, Protection, RegionKind, ReservedRegion};

/// A manager with something in it, so "unchanged" means something.
fn manager() -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x5000_0000, 0x3000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(0x5000_0000, b"keep me").unwrap();
    mm
}

/// What "unchanged" compares.
fn state(mm: &MemoryManager) -> (Vec<ReservedRegion>, u64, Vec<u8>) {
    let mut bytes = vec![0u8; 7];
    mm.read_memory(0x5000_0000, &mut bytes).unwrap();
    (mm.reserved_regions().collect(), mm.layout_version(), bytes)
}

/// Maps `file` into a fresh [`manager`], expects `expected`, and checks that
/// nothing changed.
#[track_caller]
fn refused(file: &[u8], expected: ImageError) {
    let mut mm = manager();
    let before = state(&mm);
    let err = map_image(&mut mm, file).expect_err("a malformed file must be refused");
    assert_eq!(err, expected);
    assert!(!err.to_string().is_empty());
    assert_eq!(state(&mm), before, "a refused file changed the manager");
}

fn valid() -> Pe {
    let pe = sample(true);
    let mut mm = manager();
    map_image(&mut mm, &pe.bytes).expect("the unbroken sample maps");
    pe
}

#[test]
fn truncated_at_every_length() {
    let pe = valid();
    let len = pe.bytes.len();
    let headers = pe.size_of_headers as usize;
    let mut mm = manager();
    let before = state(&mm);
    for cut in 0..len {
        let err = map_image(&mut mm, &pe.bytes[..cut]).expect_err("a truncated file must be refused");
        match err {
            ImageError::Truncated { file_len, .. } => {
                assert_eq!(file_len, cut as u64);
                assert!(cut < headers, "cut {cut:#x}: the headers were complete");
            }
            ImageError::RawDataOutsideFile { file_len, .. } => {
                assert_eq!(file_len, cut as u64);
                assert!(cut >= headers, "cut {cut:#x}");
            }
            other => panic!("cut {cut:#x}: unexpected {other:?}"),
        }
    }
    assert_eq!(state(&mm), before);
    // The exact errors at a few lengths.
    let t = |structure, offset, size, cut: usize| ImageError::Truncated {
        structure,
        offset,
        size,
        file_len: cut as u64,
    };
    refused(&pe.bytes[..0], t("DOS header", 0, 64, 0));
    refused(&pe.bytes[..63], t("DOS header", 0, 64, 63));
    refused(&pe.bytes[..E_LFANEW + 3], t("PE signature", E_LFANEW as u64, 4, E_LFANEW + 3));
    refused(&pe.bytes[..COFF + 19], t("COFF header", COFF as u64, 20, COFF + 19));
    refused(&pe.bytes[..OPT + 1], t("optional header", OPT as u64, 2, OPT + 1));
    refused(&pe.bytes[..OPT + 100], t("optional header", OPT as u64, 240, OPT + 100));
    refused(
        &pe.bytes[..pe.section_table + 41],
        t("section table", pe.section_table as u64, 5 * 40, pe.section_table + 41),
    );
    refused(&pe.bytes[..headers - 1], t("headers", 0, headers as u64, headers - 1));
}

#[test]
fn bad_dos_signature() {
    let mut pe = valid();
    pe.bytes[0..2].copy_from_slice(b"ZM");
    refused(&pe.bytes, ImageError::BadDosSignature(0x4d5a));
}

#[test]
fn bad_pe_signature() {
    let mut pe = valid();
    pe.bytes[E_LFANEW..E_LFANEW + 4].copy_from_slice(b"PE\0\x01");
    refused(&pe.bytes, ImageError::BadPeSignature(0x0100_4550));
}

#[test]
fn e_lfanew_past_the_end() {
    let mut pe = valid();
    let len = pe.bytes.len() as u64;
    pe.put_u32(0x3c, 0xFFFF_FFFE);
    refused(
        &pe.bytes,
        ImageError::Truncated { structure: "PE signature", offset: 0xFFFF_FFFE, size: 4, file_len: len },
    );
}

#[test]
fn unknown_optional_header_magic() {
    let mut pe = valid();
    pe.put_u16(OPT, 0x107); // ROM image
    refused(&pe.bytes, ImageError::BadOptionalHeaderMagic(0x107));
}

#[test]
fn optional_header_too_small() {
    let mut pe = valid();
    pe.put_u16(COFF + 16, 100);
    refused(&pe.bytes, ImageError::OptionalHeaderTooSmall { size: 100, needed: 112 });
    // Room for the fixed fields, not for the 16 directories it announces.
    let mut pe = valid();
    pe.put_u16(COFF + 16, 112 + 8 * 5);
    refused(&pe.bytes, ImageError::OptionalHeaderTooSmall { size: 152, needed: 112 + 8 * 16 });
}

#[test]
fn section_alignment_below_a_page_or_not_a_power_of_two() {
    for alignment in [0, 0x200, 0x1800, 0xFFFF_FFFF] {
        let mut pe = valid();
        pe.put_u32(Pe::opt(32), alignment);
        refused(&pe.bytes, ImageError::BadSectionAlignment(alignment));
    }
}

#[test]
fn file_alignment_not_a_power_of_two() {
    let mut pe = valid();
    pe.put_u32(Pe::opt(36), 0x300);
    refused(&pe.bytes, ImageError::BadFileAlignment(0x300));
}

#[test]
fn misaligned_image_base() {
    let mut pe = valid();
    pe.put_u64(OPT + 24, PREFERRED_64 + 0x1000);
    refused(&pe.bytes, ImageError::MisalignedImageBase(PREFERRED_64 + 0x1000));
}

#[test]
fn size_of_image_zero() {
    let mut pe = valid();
    pe.put_u32(Pe::opt(56), 0);
    refused(&pe.bytes, ImageError::EmptyImage);
}

#[test]
fn size_of_image_huge() {
    for size in [MAX_IMAGE_SIZE as u32 + 1, 0xFFFF_F000, u32::MAX] {
        let mut pe = valid();
        pe.put_u32(Pe::opt(56), size);
        refused(&pe.bytes, ImageError::ImageTooLarge { size_of_image: u64::from(size), max: MAX_IMAGE_SIZE });
    }
    // The cap itself is accepted, and costs nothing: zero pages are shared.
    let mut pe = valid();
    pe.put_u32(Pe::opt(56), MAX_IMAGE_SIZE as u32);
    let mut mm = manager();
    let image = map_image(&mut mm, &pe.bytes).unwrap();
    assert_eq!(image.size, MAX_IMAGE_SIZE);
    assert_eq!(mm.region_info(image.base + 0x7000).permissions, Protection::empty());
}

#[test]
fn absurd_section_count() {
    for count in [MAX_SECTIONS + 1, u16::MAX] {
        let mut pe = valid();
        pe.put_u16(COFF + 2, count);
        refused(&pe.bytes, ImageError::TooManySections { count, max: MAX_SECTIONS });
    }
    // Within the cap: the table outgrows SizeOfHeaders, or the file.
    let mut pe = valid();
    pe.put_u16(COFF + 2, MAX_SECTIONS);
    let table_end = pe.section_table as u64 + 40 * u64::from(MAX_SECTIONS);
    refused(&pe.bytes, ImageError::HeadersTooSmall { size_of_headers: 0x400, headers_end: table_end });
    refused(
        &pe.bytes[..0x400],
        ImageError::Truncated {
            structure: "section table",
            offset: pe.section_table as u64,
            size: 40 * u64::from(MAX_SECTIONS),
            file_len: 0x400,
        },
    );
}

#[test]
fn size_of_headers_too_small_or_past_the_image() {
    let mut pe = valid();
    pe.put_u32(Pe::opt(60), 0x100);
    let headers_end = (pe.section_table + 5 * 40) as u64;
    refused(&pe.bytes, ImageError::HeadersTooSmall { size_of_headers: 0x100, headers_end });
    let mut pe = valid();
    pe.put_u32(Pe::opt(60), SAMPLE_SIZE as u32 + 1);
    refused(
        &pe.bytes,
        ImageError::HeadersOutsideImage { size_of_headers: SAMPLE_SIZE + 1, size_of_image: SAMPLE_SIZE },
    );
}

#[test]
fn entry_point_outside_the_image() {
    let mut pe = valid();
    pe.put_u32(Pe::opt(16), SAMPLE_SIZE as u32);
    refused(&pe.bytes, ImageError::EntryPointOutsideImage { rva: SAMPLE_SIZE, size_of_image: SAMPLE_SIZE });
}

#[test]
fn misaligned_section() {
    let mut pe = valid();
    let at = pe.section_field(1, 12);
    pe.put_u32(at, RDATA + 0x10);
    refused(
        &pe.bytes,
        ImageError::MisalignedSection {
            index: 1,
            virtual_address: u64::from(RDATA) + 0x10,
            alignment: 0x1000,
        },
    );
}

#[test]
fn section_overlapping_the_headers() {
    let mut pe = valid();
    let at = pe.section_field(0, 12);
    pe.put_u32(at, 0);
    refused(
        &pe.bytes,
        ImageError::SectionOverlapsHeaders { index: 0, virtual_address: 0, headers_end: 0x1000 },
    );
}

#[test]
fn sections_overlapping() {
    // .rdata moved onto .text.
    let mut pe = valid();
    let at = pe.section_field(1, 12);
    pe.put_u32(at, TEXT);
    refused(
        &pe.bytes,
        ImageError::SectionsOverlap { index: 1, virtual_address: u64::from(TEXT), previous_end: 0x2000 },
    );
    // .data grown over .bss.
    let mut pe = valid();
    let at = pe.section_field(2, 8);
    pe.put_u32(at, 0x2001);
    refused(
        &pe.bytes,
        ImageError::SectionsOverlap { index: 3, virtual_address: u64::from(BSS), previous_end: 0x6000 },
    );
    // Out of order.
    let mut pe = valid();
    let (a, b) = (pe.section_field(0, 12), pe.section_field(1, 12));
    pe.put_u32(a, RDATA);
    pe.put_u32(b, TEXT);
    refused(
        &pe.bytes,
        ImageError::SectionsOverlap { index: 1, virtual_address: u64::from(TEXT), previous_end: 0x3000 },
    );
}

#[test]
fn section_outside_size_of_image() {
    // The last section's virtual size runs past SizeOfImage.
    let mut pe = valid();
    let at = pe.section_field(4, 8);
    pe.put_u32(at, 0x1001);
    refused(&pe.bytes, ImageError::SectionOutsideImage { index: 4, end: 0x7001, size_of_image: SAMPLE_SIZE });
    // A section placed far beyond the image.
    let mut pe = valid();
    let at = pe.section_field(4, 12);
    pe.put_u32(at, 0xFFFF_F000);
    let end = 0xFFFF_F000 + 12;
    refused(&pe.bytes, ImageError::SectionOutsideImage { index: 4, end, size_of_image: SAMPLE_SIZE });
    // SizeOfImage shrunk under the sections.
    let mut pe = valid();
    pe.put_u32(Pe::opt(56), 0x3000);
    refused(&pe.bytes, ImageError::SectionOutsideImage { index: 2, end: 0x4800, size_of_image: 0x3000 });
}

#[test]
fn raw_data_outside_the_file() {
    let mut pe = valid();
    let len = pe.bytes.len() as u64;
    let at = pe.section_field(1, 20);
    pe.put_u32(at, 0xFFFF_FF00);
    refused(
        &pe.bytes,
        ImageError::RawDataOutsideFile { index: 1, offset: 0xFFFF_FF00, size: 0x200, file_len: len },
    );
    let mut pe = valid();
    let at = pe.section_field(0, 16);
    pe.put_u32(at, u32::MAX);
    let offset = u64::from(pe.sections[0].raw_offset);
    refused(
        &pe.bytes,
        ImageError::RawDataOutsideFile { index: 0, offset, size: u64::from(u32::MAX), file_len: len },
    );
}

/// The sample with its relocations replaced by `blocks`.
fn with_relocations(relocs: &[(u32, u8)]) -> Pe {
    let mut spec = sample_spec(true);
    spec.relocs = relocs.to_vec();
    build(&spec)
}

#[test]
fn relocation_pointing_outside_the_image() {
    // Starts outside.
    let pe = with_relocations(&[(0x7000, REL_DIR64)]);
    refused(
        &pe.bytes,
        ImageError::RelocationOutsideImage { rva: 0x7000, width: 8, size_of_image: SAMPLE_SIZE },
    );
    // Starts inside, ends outside.
    let pe = with_relocations(&[(SAMPLE_SIZE as u32 - 4, REL_DIR64)]);
    refused(
        &pe.bytes,
        ImageError::RelocationOutsideImage { rva: SAMPLE_SIZE - 4, width: 8, size_of_image: SAMPLE_SIZE },
    );
    // A block for a page far away.
    let pe = with_relocations(&[(0xFFFF_F008, REL_HIGHLOW)]);
    refused(
        &pe.bytes,
        ImageError::RelocationOutsideImage { rva: 0xFFFF_F008, width: 4, size_of_image: SAMPLE_SIZE },
    );
}

#[test]
fn unknown_relocation_type() {
    for kind in [1u8, 2, 4, 5, 9, 11, 15] {
        let pe = with_relocations(&[(DATA + 0x10, kind)]);
        refused(&pe.bytes, ImageError::UnsupportedRelocation { rva: u64::from(DATA) + 0x10, kind });
    }
    // DIR64 is a PE32+ fixup.
    let mut spec = sample_spec(false);
    spec.relocs = vec![(DATA + 0x10, REL_DIR64)];
    refused(&build(&spec).bytes, ImageError::UnsupportedRelocation { rva: u64::from(DATA) + 0x10, kind: 10 });
}

#[test]
fn bad_relocation_blocks() {
    let pe = valid();
    let reloc = pe.reloc.unwrap();
    let block = reloc.raw_offset as usize;
    let dir = pe.directory(5);
    let dir_size = u64::from(pe.u32_at(dir + 4));
    for size_of_block in [0u32, 4, 7, 9, 0x1000, u32::MAX] {
        let mut bad = pe.clone();
        bad.put_u32(block + 4, size_of_block);
        refused(
            &bad.bytes,
            ImageError::BadRelocationBlock {
                rva: u64::from(RELOC),
                size_of_block: u64::from(size_of_block),
                remaining: dir_size,
            },
        );
    }
    // A directory that ends inside a block header.
    let mut bad = pe.clone();
    bad.put_u32(dir + 4, dir_size as u32 + 4);
    bad.put_u32(reloc.header + 8, dir_size as u32 + 4); // VirtualSize follows
    refused(
        &bad.bytes,
        ImageError::BadRelocationBlock { rva: u64::from(RELOC) + dir_size, size_of_block: 0, remaining: 4 },
    );
}

#[test]
fn relocation_directory_not_in_the_file() {
    let pe = valid();
    let dir = pe.directory(5);
    // Inside .data's zero-filled tail (no file bytes there).
    let mut bad = pe.clone();
    bad.put_u32(dir, DATA + 0x1400);
    bad.put_u32(dir + 4, 12);
    refused(&bad.bytes, ImageError::RelocationsNotInFile { rva: u64::from(DATA) + 0x1400, size: 12 });
    // Past the image, and an RVA + size that would overflow 32 bits.
    for (rva, size) in [(0x10_0000u32, 12u32), (0xFFFF_FFF0, 0x20)] {
        let mut bad = pe.clone();
        bad.put_u32(dir, rva);
        bad.put_u32(dir + 4, size);
        refused(&bad.bytes, ImageError::RelocationsNotInFile { rva: u64::from(rva), size: u64::from(size) });
    }
}

#[test]
fn stripped_relocations_and_a_taken_base() {
    let mut spec = sample_spec(true);
    spec.relocs.clear();
    let pe = build(&spec);
    let mut mm = manager();
    mm.allocate_memory_at(PREFERRED_64, 0x1000, Protection::READ, false, RegionKind::Private).unwrap();
    let before = state(&mm);
    assert_eq!(
        map_image(&mut mm, &pe.bytes),
        Err(ImageError::RelocationsStripped { preferred_base: PREFERRED_64 })
    );
    assert_eq!(state(&mm), before);
    // Flag set, directory present: still not relocatable.
    let mut flagged = sample(true);
    flagged.put_u16(COFF + 18, 0x2023);
    assert_eq!(
        map_image(&mut mm, &flagged.bytes),
        Err(ImageError::RelocationsStripped { preferred_base: PREFERRED_64 })
    );
    assert_eq!(state(&mm), before);
}

#[test]
fn no_room_for_the_image() {
    // A PE32 image (must live below 2 GiB) whose preferred base is taken,
    // in a manager whose low 2 GiB are full.
    let pe = sample(false);
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x8000_0000 - 0x10000, Protection::READ, true, RegionKind::Private)
        .unwrap();
    let before = state_of(&mm);
    assert_eq!(map_image(&mut mm, &pe.bytes), Err(ImageError::NoFreeSpace { size: SAMPLE_SIZE }));
    assert_eq!(state_of(&mm), before);
}

fn state_of(mm: &MemoryManager) -> (Vec<ReservedRegion>, u64) {
    (mm.reserved_regions().collect(), mm.layout_version())
}

// ------------------------------------------------------------ property test

/// Values that tend to break parsers, written as 32-bit words.
const INTERESTING: [u32; 10] =
    [0, 1, 0x7F, 0x1000, 0xFFF, 0x8000_0000, 0x7FFF_FFFF, 0xFFFF_FFFF, 0xFFFF_F000, 0x10];

#[derive(Clone, Debug)]
enum Mutation {
    /// Set one byte anywhere.
    Byte(usize, u8),
    /// Put an interesting word in the headers (4-byte aligned).
    Word(usize, u32),
    /// Cut the file.
    Truncate(usize),
}

/// File offset of the sample's base-relocation blocks (the same for PE32+
/// and PE32: both have 0x400 bytes of headers).
fn reloc_offset() -> usize {
    sample(true).reloc.unwrap().raw_offset as usize
}

fn mutation(len: usize, headers: usize) -> impl Strategy<Value = Mutation> {
    let reloc = reloc_offset();
    prop_oneof![
        2 => (reloc..reloc + 12, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        3 => (0..headers, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        1 => (0..len, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        3 => (0..headers / 4, 0..INTERESTING.len()).prop_map(|(i, w)| Mutation::Word(4 * i, INTERESTING[w])),
        1 => (0..len).prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(1024))]

    /// Any mutation of a valid PE32+ or PE32 file: no panic; a refused file
    /// changes nothing; an accepted one is a consistent image allocation.
    #[test]
    fn mutated_files_never_panic_and_refusals_change_nothing(
        pe32_plus in any::<bool>(),
        mutations in prop::collection::vec(mutation(0x1c00, 0x400), 1..6),
        occupy_preferred in any::<bool>(),
    ) {
        let pe = sample(pe32_plus);
        let mut bytes = pe.bytes.clone();
        for m in &mutations {
            match *m {
                Mutation::Byte(i, b) if i < bytes.len() => bytes[i] = b,
                Mutation::Word(i, w) if i + 4 <= bytes.len() => bytes[i..i + 4].copy_from_slice(&w.to_le_bytes()),
                Mutation::Truncate(n) => bytes.truncate(n),
                _ => {}
            }
        }
        let mut mm = manager();
        if occupy_preferred {
            let preferred = if pe32_plus { PREFERRED_64 } else { PREFERRED_32 };
            mm.allocate_memory_at(preferred, 0x1000, Protection::READ, false, RegionKind::Private).unwrap();
        }
        let before = state(&mm);
        match map_image(&mut mm, &bytes) {
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(state(&mm), before, "refused with {:?} but changed the manager", e);
            }
            Ok(image) => {
                prop_assert!(mm.layout_version() > before.1);
                let regions: Vec<_> = mm.reserved_regions().filter(|r| r.kind == RegionKind::Image).collect();
                prop_assert_eq!(regions.len(), 1);
                prop_assert_eq!((regions[0].base, regions[0].length), (image.base, image.size));
                prop_assert_eq!(image.base % 0x10000, 0);
                prop_assert_eq!(mm.region_info(image.base).permissions, Protection::READ);
                if image.entry_point != 0 {
                    prop_assert!(image.entry_point >= image.base && image.entry_point < image.base + image.size);
                }
                for s in &image.sections {
                    prop_assert!(s.address >= image.base && s.address + s.size <= image.base + image.size);
                    if s.size != 0 {
                        prop_assert_eq!(mm.region_info(s.address).permissions, s.protection);
                    }
                }
                // The private allocation and its bytes are intact; the image
                // releases whole.
                let (mut after, _, bytes_after) = state(&mm);
                after.retain(|r| r.kind != RegionKind::Image);
                prop_assert_eq!(&after, &before.0);
                prop_assert_eq!(&bytes_after, &before.2);
                mm.release_memory(image.base, 0).unwrap();
                // A second mapping of the same bytes either fits elsewhere or
                // is refused without a change.
                let first = map_image(&mut mm, &bytes).unwrap();
                let before = state(&mm);
                match map_image(&mut mm, &bytes) {
                    Ok(second) => prop_assert!(second.relocated && second.base != first.base),
                    Err(e) => {
                        prop_assert!(matches!(e, ImageError::RelocationsStripped { .. } | ImageError::NoFreeSpace { .. }), "{:?}", e);
                        prop_assert_eq!(state(&mm), before);
                    }
                }
            }
        }
    }
}
