//! # `vmsnap::image` — mapping PE images
//!
//! [`map_image`] maps a PE32+ or PE32 file (an `.exe` or `.dll`) into a
//! [`MemoryManager`] the way the Windows image loader maps a `SEC_IMAGE`
//! view: one allocation of kind [`RegionKind::Image`] covering `SizeOfImage`,
//! the headers and every section copied to their virtual addresses, base
//! relocations applied when the image does not land at its preferred base,
//! and each range given the protection Windows gives it.
//!
//! ```text
//!  file                                 address space (base = ImageBase, or a free slot)
//!  ┌────────────────┐ 0                 ┌────────────────┐ base                  READ     (PAGE_READONLY)
//!  │ DOS + NT hdrs  │──── SizeOfHeaders ─►│ headers        │
//!  │ section table  │                   ├────────────────┤ base + .text VA       per section:
//!  ├────────────────┤ PointerToRawData  │ .text          │                       characteristics
//!  │ .text raw      │──── min(raw, VS) ─►│ (zero-filled   │                       → protection
//!  ├────────────────┤                   │  past raw)     │                       (table below)
//!  │ .data raw      │─────────────────► ├────────────────┤ base + .data VA
//!  └────────────────┘                   │ .data          │
//!                                       ├────────────────┤
//!                                       │ (gap: NOACCESS)│
//!                                       └────────────────┘ base + page_up(SizeOfImage)
//! ```
//!
//! ## Protections
//!
//! The allocation is created with `READ | EXECUTE | WRITE_COPY`, so its
//! `AllocationProtect` is `PAGE_EXECUTE_WRITECOPY` (0x80), as Windows reports
//! for every image view (docs/windows-semantics.md §11 \[W\]). Then:
//!
//! | range | protection | `PAGE_*` |
//! |---|---|---|
//! | headers: `[0, SizeOfHeaders)` rounded up to `SectionAlignment` | `READ` | 0x02 \[W\] |
//! | section with no R/W/X bit | empty | 0x01 |
//! | `IMAGE_SCN_MEM_EXECUTE` | `EXECUTE` | 0x10 |
//! | `MEM_READ` | `READ` | 0x02 |
//! | `MEM_READ \| MEM_EXECUTE` | `READ \| EXECUTE` | 0x20 |
//! | `MEM_WRITE` (with or without `MEM_READ`) | `READ \| WRITE_COPY` | 0x08 |
//! | `MEM_WRITE \| MEM_EXECUTE` (with or without `MEM_READ`) | `READ \| EXECUTE \| WRITE_COPY` | 0x80 |
//! | `MEM_WRITE \| MEM_SHARED` | `READ \| WRITE` | 0x04 |
//! | `MEM_WRITE \| MEM_EXECUTE \| MEM_SHARED` | `READ \| WRITE \| EXECUTE` | 0x40 |
//! | pages no header or section covers | empty | 0x01 |
//!
//! This is the table NT's image loader uses (a writable section is always
//! readable; a private writable section is write-copy, a shared one is
//! read-write). A section covers `[VirtualAddress, VirtualAddress +
//! VirtualSize)` rounded up to `SectionAlignment` (never past the next
//! section or the image end); with the usual `SectionAlignment` of one page
//! no gaps exist. Where a gap does exist (a hole between sections, or
//! `SizeOfImage` larger than the last section) this module makes it
//! `PAGE_NOACCESS`: nothing of the file lands there, so nothing should read
//! it. A guest write to a write-copy page goes through and makes that page
//! writable (see [`Protection::WRITE_COPY`]).
//!
//! ## Where the image goes
//!
//! At `ImageBase` when that range is free and inside user space. Otherwise
//! at the first free 64 KiB slot — PE32+ images from the manager's default
//! allocation address ([`MemoryManager::find_free_allocation_base`] with
//! start 0), PE32 images below 4 GiB (below 2 GiB unless the file is
//! `IMAGE_FILE_LARGE_ADDRESS_AWARE`) — and then the base relocations are
//! applied: `IMAGE_REL_BASED_DIR64` (PE32+ only) and `HIGHLOW` add the
//! difference to the 8- or 4-byte value at their address; `ABSOLUTE` is
//! padding. The `ImageBase` field of the mapped optional header is set to the
//! actual base, as Windows does. An image that cannot be relocated (the
//! `IMAGE_FILE_RELOCS_STRIPPED` flag, or no base-relocation directory)
//! maps only at its preferred base.
//!
//! ## Bad input
//!
//! Every offset and size read from the file is checked, with 64-bit
//! arithmetic that cannot overflow, against the file length and
//! `SizeOfImage` before it is used; absurd values are refused with a
//! precise [`ImageError`] before anything is allocated. Caps:
//! `SizeOfImage` ≤ [`MAX_IMAGE_SIZE`] (2 GiB), at most [`MAX_SECTIONS`]
//! (96) sections, `SectionAlignment` a power of two of at least a page,
//! relocation blocks inside the relocation directory, and the relocation
//! directory inside bytes the file provides (so relocation work is bounded
//! by the file size). Relocations are checked even when the image maps at
//! its preferred base, so whether a file is accepted does not depend on
//! what else is mapped.
//!
//! **A failed [`map_image`] changes nothing**: the whole file is parsed and
//! checked before the manager is touched, so `reserved_regions()` and
//! `layout_version()` are as before.
//!
//! ```
//! # fn tiny_pe() -> Vec<u8> {
//! #     // A PE32+ DLL: headers (0x200) + one RX section `.text` at RVA 0x1000.
//! #     let mut f = vec![0u8; 0x400];
//! #     f[0..2].copy_from_slice(b"MZ");
//! #     f[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
//! #     f[0x40..0x44].copy_from_slice(b"PE\0\0");
//! #     let coff = 0x44;
//! #     f[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes()); // AMD64
//! #     f[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes()); // one section
//! #     f[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes()); // SizeOfOptionalHeader
//! #     f[coff + 18..coff + 20].copy_from_slice(&0x2022u16.to_le_bytes()); // DLL | EXECUTABLE
//! #     let opt = coff + 20;
//! #     f[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
//! #     f[opt + 16..opt + 20].copy_from_slice(&0x1000u32.to_le_bytes()); // entry point
//! #     f[opt + 24..opt + 32].copy_from_slice(&0x1_8000_0000u64.to_le_bytes()); // ImageBase
//! #     f[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
//! #     f[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
//! #     f[opt + 56..opt + 60].copy_from_slice(&0x2000u32.to_le_bytes()); // SizeOfImage
//! #     f[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
//! #     f[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes()); // NumberOfRvaAndSizes
//! #     let s = opt + 240;
//! #     f[s..s + 5].copy_from_slice(b".text");
//! #     f[s + 8..s + 12].copy_from_slice(&0x10u32.to_le_bytes()); // VirtualSize
//! #     f[s + 12..s + 16].copy_from_slice(&0x1000u32.to_le_bytes()); // VirtualAddress
//! #     f[s + 16..s + 20].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfRawData
//! #     f[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes()); // PointerToRawData
//! #     f[s + 36..s + 40].copy_from_slice(&0x6000_0020u32.to_le_bytes()); // CODE | EXECUTE | READ
//! #     f[0x200] = 0xC3; // ret
//! #     f
//! # }
//! use vmsnap::{MemoryManager, Protection, RegionKind};
//! use vmsnap::image::map_image;
//!
//! let mut mm = MemoryManager::new();
//! let file: Vec<u8> = tiny_pe(); // e.g. std::fs::read("some.dll")?
//! let image = map_image(&mut mm, &file)?;
//! assert_eq!((image.base, image.size, image.relocated), (0x1_8000_0000, 0x2000, false));
//! assert_eq!(image.entry_point, image.base + 0x1000);
//! assert_eq!(mm.region_kind(image.base), RegionKind::Image);
//! assert_eq!(mm.region_info(image.base).permissions, Protection::READ); // headers
//! let text = image.section(".text").unwrap();
//! assert_eq!(text.protection, Protection::READ_EXECUTE);
//! let mut ret = [0u8; 1];
//! mm.guest_fetch(image.entry_point, &mut ret)?;
//! assert_eq!(ret, [0xC3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{
    DEFAULT_ALLOCATION_ADDRESS_32BIT, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, PAGE_SIZE,
    Protection, RegionKind, USER_SPACE_END,
};

/// The largest `SizeOfImage` [`map_image`] accepts: 2 GiB.
pub const MAX_IMAGE_SIZE: u64 = 0x8000_0000;
/// The largest `NumberOfSections` [`map_image`] accepts (the Windows loader's
/// limit).
pub const MAX_SECTIONS: u16 = 96;
/// Longest section name read from the COFF string table (`/123` names).
const MAX_LONG_NAME: usize = 256;

/// `IMAGE_FILE_MACHINE_I386`.
pub const IMAGE_FILE_MACHINE_I386: u16 = 0x014c;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_RELOCS_STRIPPED`: the image has no base relocations and maps
/// only at its preferred base.
pub const IMAGE_FILE_RELOCS_STRIPPED: u16 = 0x0001;
/// `IMAGE_FILE_LARGE_ADDRESS_AWARE`: a PE32 image may live above 2 GiB.
pub const IMAGE_FILE_LARGE_ADDRESS_AWARE: u16 = 0x0020;
/// `IMAGE_FILE_DLL`.
pub const IMAGE_FILE_DLL: u16 = 0x2000;

/// `IMAGE_SCN_MEM_SHARED`: a writable section shared between views
/// (read-write, not write-copy).
pub const IMAGE_SCN_MEM_SHARED: u32 = 0x1000_0000;
/// `IMAGE_SCN_MEM_EXECUTE`.
pub const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_READ`.
pub const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
pub const IMAGE_SCN_MEM_WRITE: u32 = 0x8000_0000;

/// `IMAGE_DIRECTORY_ENTRY_EXPORT`: index of the export directory.
pub const IMAGE_DIRECTORY_ENTRY_EXPORT: usize = 0;
/// `IMAGE_DIRECTORY_ENTRY_IMPORT`: index of the import directory.
pub const IMAGE_DIRECTORY_ENTRY_IMPORT: usize = 1;
/// `IMAGE_DIRECTORY_ENTRY_BASERELOC`: index of the base-relocation directory.
pub const IMAGE_DIRECTORY_ENTRY_BASERELOC: usize = 5;
/// `IMAGE_DIRECTORY_ENTRY_TLS`: index of the TLS directory.
pub const IMAGE_DIRECTORY_ENTRY_TLS: usize = 9;

/// `IMAGE_REL_BASED_ABSOLUTE`: padding, skipped.
pub const IMAGE_REL_BASED_ABSOLUTE: u8 = 0;
/// `IMAGE_REL_BASED_HIGHLOW`: add the low 32 bits of the delta to a 32-bit value.
pub const IMAGE_REL_BASED_HIGHLOW: u8 = 3;
/// `IMAGE_REL_BASED_DIR64`: add the delta to a 64-bit value (PE32+ only).
pub const IMAGE_REL_BASED_DIR64: u8 = 10;

const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Fixed part of the optional header (before the data directories).
const PE32_FIXED: u64 = 96;
const PE32_PLUS_FIXED: u64 = 112;
const DOS_HEADER_SIZE: u64 = 64;
const COFF_HEADER_SIZE: u64 = 20;
const SECTION_HEADER_SIZE: u64 = 40;
const MAX_DIRECTORIES: u32 = 16;

/// Why [`map_image`] refused a file. Each variant carries the value that was
/// wrong; a refused file changed nothing in the manager.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A header structure runs past the end of the file.
    #[error(
        "truncated file: the {structure} at {offset:#x} ({size:#x} bytes) ends past the file's {file_len:#x} bytes"
    )]
    Truncated {
        /// Which structure (`"DOS header"`, `"PE signature"`, `"COFF header"`,
        /// `"optional header"`, `"section table"`, `"headers"`).
        structure: &'static str,
        /// File offset of the structure.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The file does not start with `MZ`.
    #[error("bad DOS signature {0:#06x} (expected 0x5a4d, \"MZ\")")]
    BadDosSignature(u16),
    /// `e_lfanew` does not point at `PE\0\0`.
    #[error("bad PE signature {0:#010x} (expected 0x00004550, \"PE\\0\\0\")")]
    BadPeSignature(u32),
    /// The optional header's magic is neither PE32 (0x10b) nor PE32+ (0x20b).
    #[error("unknown optional header magic {0:#x} (expected 0x10b or 0x20b)")]
    BadOptionalHeaderMagic(u16),
    /// `SizeOfOptionalHeader` is smaller than the fields it must hold.
    #[error("SizeOfOptionalHeader {size:#x} is smaller than the {needed:#x} bytes its fields need")]
    OptionalHeaderTooSmall {
        /// `SizeOfOptionalHeader`.
        size: u16,
        /// Bytes needed (fixed fields and `NumberOfRvaAndSizes` directories, at most 16).
        needed: u64,
    },
    /// `SectionAlignment` is not a power of two, or below the page size
    /// (low-alignment images are not supported).
    #[error("unsupported SectionAlignment {0:#x} (needs a power of two >= 0x1000)")]
    BadSectionAlignment(u32),
    /// `FileAlignment` is not a power of two.
    #[error("FileAlignment {0:#x} is not a power of two")]
    BadFileAlignment(u32),
    /// `ImageBase` is not a multiple of 64 KiB.
    #[error("ImageBase {0:#x} is not 64 KiB aligned")]
    MisalignedImageBase(u64),
    /// `SizeOfImage` is 0.
    #[error("SizeOfImage is 0")]
    EmptyImage,
    /// `SizeOfImage` is above [`MAX_IMAGE_SIZE`].
    #[error("SizeOfImage {size_of_image:#x} is above the {max:#x} limit")]
    ImageTooLarge {
        /// `SizeOfImage`.
        size_of_image: u64,
        /// [`MAX_IMAGE_SIZE`].
        max: u64,
    },
    /// `SizeOfHeaders` does not cover the headers and section table.
    #[error("SizeOfHeaders {size_of_headers:#x} does not cover the headers, which end at {headers_end:#x}")]
    HeadersTooSmall {
        /// `SizeOfHeaders`.
        size_of_headers: u64,
        /// End of the section table.
        headers_end: u64,
    },
    /// `SizeOfHeaders` is larger than `SizeOfImage`.
    #[error("SizeOfHeaders {size_of_headers:#x} is larger than SizeOfImage {size_of_image:#x}")]
    HeadersOutsideImage {
        /// `SizeOfHeaders`.
        size_of_headers: u64,
        /// `SizeOfImage`.
        size_of_image: u64,
    },
    /// `NumberOfSections` is above [`MAX_SECTIONS`].
    #[error("{count} sections (at most {max})")]
    TooManySections {
        /// `NumberOfSections`.
        count: u16,
        /// [`MAX_SECTIONS`].
        max: u16,
    },
    /// A section's `VirtualAddress` is not a multiple of `SectionAlignment`.
    #[error("section {index} at RVA {virtual_address:#x} is not aligned to SectionAlignment {alignment:#x}")]
    MisalignedSection {
        /// Index in the section table.
        index: usize,
        /// Its `VirtualAddress`.
        virtual_address: u64,
        /// `SectionAlignment`.
        alignment: u64,
    },
    /// A section starts inside the (page-rounded) headers.
    #[error(
        "section {index} at RVA {virtual_address:#x} overlaps the headers, which end at {headers_end:#x}"
    )]
    SectionOverlapsHeaders {
        /// Index in the section table.
        index: usize,
        /// Its `VirtualAddress`.
        virtual_address: u64,
        /// `SizeOfHeaders` rounded up to a page.
        headers_end: u64,
    },
    /// A section starts before the previous one ends (sections must be in
    /// ascending address order, without overlap).
    #[error(
        "section {index} at RVA {virtual_address:#x} starts before the previous section ends at {previous_end:#x}"
    )]
    SectionsOverlap {
        /// Index in the section table.
        index: usize,
        /// Its `VirtualAddress`.
        virtual_address: u64,
        /// The previous section's end, rounded up to a page.
        previous_end: u64,
    },
    /// A section ends past `SizeOfImage`.
    #[error("section {index} ends at RVA {end:#x}, past SizeOfImage {size_of_image:#x}")]
    SectionOutsideImage {
        /// Index in the section table.
        index: usize,
        /// `VirtualAddress + VirtualSize`.
        end: u64,
        /// `SizeOfImage`.
        size_of_image: u64,
    },
    /// A section's raw data (`PointerToRawData`, `SizeOfRawData`) is not
    /// inside the file.
    #[error(
        "section {index}'s raw data at {offset:#x} ({size:#x} bytes) ends past the file's {file_len:#x} bytes"
    )]
    RawDataOutsideFile {
        /// Index in the section table.
        index: usize,
        /// `PointerToRawData`.
        offset: u64,
        /// `SizeOfRawData`.
        size: u64,
        /// The file's length.
        file_len: u64,
    },
    /// `AddressOfEntryPoint` is not inside the image.
    #[error("entry point RVA {rva:#x} is outside the image (SizeOfImage {size_of_image:#x})")]
    EntryPointOutsideImage {
        /// `AddressOfEntryPoint`.
        rva: u64,
        /// `SizeOfImage`.
        size_of_image: u64,
    },
    /// The base-relocation directory is not inside bytes the file provides
    /// (the headers, or the raw data of one section).
    #[error("base-relocation directory at RVA {rva:#x} ({size:#x} bytes) is not inside the file's data")]
    RelocationsNotInFile {
        /// Its RVA.
        rva: u64,
        /// Its size.
        size: u64,
    },
    /// A base-relocation block has a `SizeOfBlock` below 8, odd, or past the
    /// end of the directory.
    #[error(
        "bad base-relocation block at RVA {rva:#x}: SizeOfBlock {size_of_block:#x}, {remaining:#x} bytes left in the directory"
    )]
    BadRelocationBlock {
        /// RVA of the block header.
        rva: u64,
        /// Its `SizeOfBlock` (0 when fewer than 8 bytes were left).
        size_of_block: u64,
        /// Bytes left in the directory from the block header on.
        remaining: u64,
    },
    /// A base relocation of a type this loader does not apply.
    #[error("unsupported base relocation type {kind} at RVA {rva:#x}")]
    UnsupportedRelocation {
        /// RVA of the fixup.
        rva: u64,
        /// Its type (the top 4 bits of the entry).
        kind: u8,
    },
    /// A base relocation patches bytes outside the image.
    #[error(
        "base relocation at RVA {rva:#x} ({width} bytes) is outside the image (SizeOfImage {size_of_image:#x})"
    )]
    RelocationOutsideImage {
        /// RVA of the fixup.
        rva: u64,
        /// Bytes it patches (4 or 8).
        width: u64,
        /// `SizeOfImage`.
        size_of_image: u64,
    },
    /// The preferred base is taken (or outside user space) and the image
    /// cannot be relocated: `IMAGE_FILE_RELOCS_STRIPPED`, or no
    /// base-relocation directory.
    #[error("the preferred base {preferred_base:#x} is not available and the image has no relocations")]
    RelocationsStripped {
        /// `ImageBase`.
        preferred_base: u64,
    },
    /// No free range of the image's size is left where it may go.
    #[error("no free range of {size:#x} bytes for the image")]
    NoFreeSpace {
        /// The image's size (`SizeOfImage` rounded up to pages).
        size: u64,
    },
    /// The memory manager refused an operation that the checks made before
    /// it should have made impossible. Not expected; the allocation, if made,
    /// was released again.
    #[error("memory manager refused the mapping: {0}")]
    Memory(MemoryError),
}

/// One entry of the optional header's data directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DataDirectory {
    /// RVA of the directory (0 when absent).
    pub rva: u32,
    /// Its size in bytes (0 when absent).
    pub size: u32,
}

/// One section of a mapped image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MappedSection {
    /// The section's name: the 8-byte name without trailing NULs, or the long
    /// name a `/123` entry points to in the COFF string table; non-UTF-8
    /// bytes are replaced.
    pub name: String,
    /// Absolute address of the section (`base + VirtualAddress`).
    pub address: u64,
    /// Bytes that got [`protection`](Self::protection): the virtual size
    /// rounded up to `SectionAlignment` (clipped to the next section and to
    /// the image end); 0 for an empty section.
    pub size: u64,
    /// The header's `VirtualSize` (or `SizeOfRawData` when `VirtualSize` is 0,
    /// as the loader does).
    pub virtual_size: u64,
    /// The header's `Characteristics`.
    pub characteristics: u32,
    /// The protection the section was given ([`section_protection`] of the
    /// characteristics).
    pub protection: Protection,
}

/// A PE image mapped by [`map_image`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MappedImage {
    /// Where the image starts (a 64 KiB-aligned allocation base).
    pub base: u64,
    /// Bytes mapped: `SizeOfImage` rounded up to pages.
    pub size: u64,
    /// Absolute address of the entry point, 0 when `AddressOfEntryPoint` is 0
    /// (a DLL without one).
    pub entry_point: u64,
    /// `ImageBase` from the file.
    pub preferred_base: u64,
    /// True when `base != preferred_base` and the base relocations were applied.
    pub relocated: bool,
    /// The COFF `Machine` (e.g. [`IMAGE_FILE_MACHINE_AMD64`]).
    pub machine: u16,
    /// The COFF `Characteristics` (e.g. [`IMAGE_FILE_DLL`]).
    pub characteristics: u16,
    /// The optional header's `Subsystem`.
    pub subsystem: u16,
    /// True for PE32+ (64-bit) images, false for PE32.
    pub is_pe32_plus: bool,
    /// The data directories (at most 16; fewer when `NumberOfRvaAndSizes` says so).
    pub data_directories: Vec<DataDirectory>,
    /// The sections, in section-table order.
    pub sections: Vec<MappedSection>,
}

impl MappedImage {
    /// The section named `name`, if any (the first one, when names repeat).
    /// Time: O(sections).
    pub fn section(&self, name: &str) -> Option<&MappedSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Absolute address and size of data directory `index` (e.g.
    /// [`IMAGE_DIRECTORY_ENTRY_EXPORT`]), or `None` when it is absent (RVA or
    /// size 0, or not in the file's table) or not inside the image.
    /// Time: O(1).
    pub fn directory(&self, index: usize) -> Option<(u64, u32)> {
        let d = self.data_directories.get(index)?;
        let end = u64::from(d.rva) + u64::from(d.size);
        (d.rva != 0 && d.size != 0 && end <= self.size).then(|| (self.base + u64::from(d.rva), d.size))
    }
}

/// The protection NT's image loader gives a section with these
/// `Characteristics` (see the [module table](self#protections)): a writable
/// section is also readable, and write-copy unless `IMAGE_SCN_MEM_SHARED`.
/// Time: O(1).
///
/// ```
/// use vmsnap::Protection;
/// use vmsnap::image::*;
/// assert_eq!(section_protection(IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_EXECUTE), Protection::READ_EXECUTE);
/// assert_eq!(
///     section_protection(IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE),
///     Protection::READ | Protection::WRITE_COPY
/// );
/// assert_eq!(
///     section_protection(IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE | IMAGE_SCN_MEM_SHARED),
///     Protection::READ_WRITE
/// );
/// assert_eq!(section_protection(0), Protection::empty());
/// ```
pub const fn section_protection(characteristics: u32) -> Protection {
    let read = characteristics & IMAGE_SCN_MEM_READ != 0;
    let write = characteristics & IMAGE_SCN_MEM_WRITE != 0;
    let execute = characteristics & IMAGE_SCN_MEM_EXECUTE != 0;
    let shared = characteristics & IMAGE_SCN_MEM_SHARED != 0;
    let mut bits = 0;
    if read || write {
        bits |= Protection::READ.bits();
    }
    if execute {
        bits |= Protection::EXECUTE.bits();
    }
    if write {
        bits |= if shared { Protection::WRITE.bits() } else { Protection::WRITE_COPY.bits() };
    }
    Protection::from_bits_retain(bits)
}

/// Maps the PE32+ or PE32 image `file` into `mm` as one allocation of kind
/// [`RegionKind::Image`] and returns where everything went. See the
/// [module docs](self) for the layout, the protections, the choice of base
/// and the relocation rules.
///
/// Errors: an [`ImageError`] naming the first thing wrong with the file, or
/// [`ImageError::RelocationsStripped`] / [`ImageError::NoFreeSpace`] when the
/// image has nowhere to go. A failed call changes nothing (the file is
/// checked completely before the manager is touched). Never panics on any
/// input.
///
/// Time: O(file size + sections + relocations + log allocations) to check
/// the file; mapping commits the image as shared zero pages (O(page-table
/// levels), whatever `SizeOfImage` is), copies the file's bytes into their
/// pages (O(pages that receive file data)), applies the relocations
/// (O(relocations)) and makes one protection change per run of pages with
/// equal protection (O(sections · (log allocations + leaves touched))).
/// The layout version moves forward by several steps (allocation and
/// protection changes).
pub fn map_image(mm: &mut MemoryManager, file: &[u8]) -> Result<MappedImage, ImageError> {
    let layout = parse(file)?;
    let size = layout.size();
    let base = choose_base(mm, &layout, size)?;
    let initial = Protection::READ | Protection::EXECUTE | Protection::WRITE_COPY;
    mm.allocate_memory_at(base, size, initial, false, RegionKind::Image).map_err(ImageError::Memory)?;
    if let Err(e) = fill(mm, &layout, base) {
        // Unreachable by construction (every page is committed and every
        // range was checked); undo the allocation rather than leave half an
        // image.
        let _ = mm.release_memory(base, 0);
        return Err(ImageError::Memory(e));
    }
    Ok(layout.mapped(base))
}

// ------------------------------------------------------------------- parsing

/// Everything [`map_image`] needs, checked.
struct Layout<'a> {
    file: &'a [u8],
    is_pe32_plus: bool,
    machine: u16,
    characteristics: u16,
    subsystem: u16,
    image_base: u64,
    /// File offset of the `ImageBase` field (updated in the mapped header).
    image_base_offset: u64,
    section_alignment: u64,
    size_of_image: u64,
    size_of_headers: u64,
    entry_rva: u64,
    directories: Vec<DataDirectory>,
    sections: Vec<SectionLayout>,
    /// Fixups to apply when relocating: (RVA, width in bytes).
    fixups: Vec<(u64, u64)>,
    relocatable: bool,
}

struct SectionLayout {
    name: String,
    rva: u64,
    virtual_size: u64,
    /// End (RVA) of the range the section's protection covers.
    span_end: u64,
    /// File range copied to `rva`: `[raw_offset, raw_offset + copy_len)`.
    raw_offset: u64,
    copy_len: u64,
    characteristics: u32,
}

/// Bounds-checked little-endian reads from the file.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// `size` bytes at `offset`, or `Truncated` naming `structure`.
    fn bytes(&self, structure: &'static str, offset: u64, size: u64) -> Result<&'a [u8], ImageError> {
        let truncated = || ImageError::Truncated { structure, offset, size, file_len: self.len() };
        let end = offset.checked_add(size).ok_or_else(truncated)?;
        if end > self.len() {
            return Err(truncated());
        }
        // `end <= len`, which fits in usize.
        Ok(&self.0[offset as usize..end as usize])
    }

    fn u16(&self, structure: &'static str, offset: u64) -> Result<u16, ImageError> {
        let b = self.bytes(structure, offset, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, structure: &'static str, offset: u64) -> Result<u32, ImageError> {
        let b = self.bytes(structure, offset, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `value` rounded up to `align` (a power of two); values here are below
/// 2^34, so this cannot overflow.
fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

fn page_align(value: u64) -> u64 {
    align_up(value, PAGE_SIZE)
}

fn parse(file: &[u8]) -> Result<Layout<'_>, ImageError> {
    let r = Reader(file);

    // DOS header.
    r.bytes("DOS header", 0, DOS_HEADER_SIZE)?;
    let mz = r.u16("DOS header", 0)?;
    if mz != 0x5a4d {
        return Err(ImageError::BadDosSignature(mz));
    }
    let nt = u64::from(r.u32("DOS header", 0x3c)?);

    // PE signature and COFF header.
    let signature = r.u32("PE signature", nt)?;
    if signature != 0x0000_4550 {
        return Err(ImageError::BadPeSignature(signature));
    }
    let coff = r.bytes("COFF header", nt + 4, COFF_HEADER_SIZE)?;
    let machine = le_u16(coff, 0);
    let section_count = le_u16(coff, 2);
    let symbol_table = u64::from(le_u32(coff, 8));
    let symbol_count = u64::from(le_u32(coff, 12));
    let optional_size = le_u16(coff, 16);
    let characteristics = le_u16(coff, 18);

    // Optional header.
    let opt = nt + 4 + COFF_HEADER_SIZE;
    let magic = r.u16("optional header", opt)?;
    let (is_pe32_plus, fixed) = match magic {
        PE32_MAGIC => (false, PE32_FIXED),
        PE32_PLUS_MAGIC => (true, PE32_PLUS_FIXED),
        other => return Err(ImageError::BadOptionalHeaderMagic(other)),
    };
    if u64::from(optional_size) < fixed {
        return Err(ImageError::OptionalHeaderTooSmall { size: optional_size, needed: fixed });
    }
    let o = r.bytes("optional header", opt, u64::from(optional_size))?;
    let entry_rva = u64::from(le_u32(o, 16));
    let (image_base, image_base_offset) = if is_pe32_plus {
        (u64::from(le_u32(o, 24)) | u64::from(le_u32(o, 28)) << 32, opt + 24)
    } else {
        (u64::from(le_u32(o, 28)), opt + 28)
    };
    let section_alignment = le_u32(o, 32);
    let file_alignment = le_u32(o, 36);
    let size_of_image = u64::from(le_u32(o, 56));
    let size_of_headers = u64::from(le_u32(o, 60));
    let subsystem = le_u16(o, 68);
    let directory_count = le_u32(o, if is_pe32_plus { 108 } else { 92 }).min(MAX_DIRECTORIES);
    let needed = fixed + 8 * u64::from(directory_count);
    if u64::from(optional_size) < needed {
        return Err(ImageError::OptionalHeaderTooSmall { size: optional_size, needed });
    }
    let directories: Vec<DataDirectory> = (0..directory_count as usize)
        .map(|i| {
            let at = fixed as usize + 8 * i;
            DataDirectory { rva: le_u32(o, at), size: le_u32(o, at + 4) }
        })
        .collect();

    // Global values.
    if !section_alignment.is_power_of_two() || u64::from(section_alignment) < PAGE_SIZE {
        return Err(ImageError::BadSectionAlignment(section_alignment));
    }
    let section_alignment = u64::from(section_alignment);
    if !file_alignment.is_power_of_two() {
        return Err(ImageError::BadFileAlignment(file_alignment));
    }
    if !image_base.is_multiple_of(crate::ALLOCATION_GRANULARITY) {
        return Err(ImageError::MisalignedImageBase(image_base));
    }
    if size_of_image == 0 {
        return Err(ImageError::EmptyImage);
    }
    if size_of_image > MAX_IMAGE_SIZE {
        return Err(ImageError::ImageTooLarge { size_of_image, max: MAX_IMAGE_SIZE });
    }
    if section_count > MAX_SECTIONS {
        return Err(ImageError::TooManySections { count: section_count, max: MAX_SECTIONS });
    }
    let table_offset = opt + u64::from(optional_size);
    let table = r.bytes("section table", table_offset, SECTION_HEADER_SIZE * u64::from(section_count))?;
    let headers_end = table_offset + table.len() as u64;
    if size_of_headers < headers_end {
        return Err(ImageError::HeadersTooSmall { size_of_headers, headers_end });
    }
    if size_of_headers > size_of_image {
        return Err(ImageError::HeadersOutsideImage { size_of_headers, size_of_image });
    }
    r.bytes("headers", 0, size_of_headers)?;
    if entry_rva >= size_of_image {
        return Err(ImageError::EntryPointOutsideImage { rva: entry_rva, size_of_image });
    }

    // Sections.
    let image_end = page_align(size_of_image);
    let mut sections: Vec<SectionLayout> = Vec::with_capacity(usize::from(section_count));
    let mut previous_end = page_align(size_of_headers);
    for (index, h) in table.chunks_exact(SECTION_HEADER_SIZE as usize).enumerate() {
        let rva = u64::from(le_u32(h, 12));
        let raw_size = u64::from(le_u32(h, 16));
        let raw_offset = u64::from(le_u32(h, 20));
        let virtual_size = match u64::from(le_u32(h, 8)) {
            0 => raw_size,
            v => v,
        };
        if !rva.is_multiple_of(section_alignment) {
            return Err(ImageError::MisalignedSection {
                index,
                virtual_address: rva,
                alignment: section_alignment,
            });
        }
        if index == 0 && rva < previous_end {
            return Err(ImageError::SectionOverlapsHeaders {
                index,
                virtual_address: rva,
                headers_end: previous_end,
            });
        }
        if rva < previous_end {
            return Err(ImageError::SectionsOverlap { index, virtual_address: rva, previous_end });
        }
        let end = rva + virtual_size;
        if end > size_of_image {
            return Err(ImageError::SectionOutsideImage { index, end, size_of_image });
        }
        if raw_size != 0 && raw_offset + raw_size > r.len() {
            return Err(ImageError::RawDataOutsideFile {
                index,
                offset: raw_offset,
                size: raw_size,
                file_len: r.len(),
            });
        }
        let characteristics = le_u32(h, 36);
        let name = section_name(&r, &h[..8], symbol_table, symbol_count);
        previous_end = page_align(end);
        // Clipped to the next section's start below.
        let span_end = if virtual_size == 0 { rva } else { align_up(end, section_alignment).min(image_end) };
        sections.push(SectionLayout {
            name,
            rva,
            virtual_size,
            span_end,
            raw_offset,
            copy_len: raw_size.min(virtual_size),
            characteristics,
        });
    }
    for i in 1..sections.len() {
        let next = sections[i].rva;
        let previous = &mut sections[i - 1];
        previous.span_end = previous.span_end.min(next.max(previous.rva));
    }

    // Base relocations: always checked, applied only when the image moves.
    let relocation_dir = directories.get(IMAGE_DIRECTORY_ENTRY_BASERELOC).copied().unwrap_or_default();
    let has_directory = relocation_dir.size != 0;
    let fixups = if has_directory {
        let data = relocation_bytes(file, size_of_headers, &sections, relocation_dir)?;
        parse_relocations(data, u64::from(relocation_dir.rva), is_pe32_plus, size_of_image)?
    } else {
        Vec::new()
    };

    Ok(Layout {
        file,
        is_pe32_plus,
        machine,
        characteristics,
        subsystem,
        image_base,
        image_base_offset,
        section_alignment,
        size_of_image,
        size_of_headers,
        entry_rva,
        directories,
        sections,
        fixups,
        relocatable: has_directory && characteristics & IMAGE_FILE_RELOCS_STRIPPED == 0,
    })
}

/// The section's name: 8 bytes without trailing NULs, or `/N` resolved in
/// the COFF string table when it is there (else kept as `/N`).
fn section_name(r: &Reader<'_>, raw: &[u8], symbol_table: u64, symbol_count: u64) -> String {
    let short_len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let short = &raw[..short_len];
    let long = (|| {
        let digits = std::str::from_utf8(short.strip_prefix(b"/")?).ok()?;
        let offset: u64 = digits.parse().ok()?;
        let strings = symbol_table.checked_add(symbol_count.checked_mul(18)?)?;
        if symbol_table == 0 {
            return None;
        }
        let start = strings.checked_add(offset)?;
        let rest = r.0.get(usize::try_from(start).ok()?..)?;
        let rest = &rest[..rest.len().min(MAX_LONG_NAME)];
        let len = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..len]).into_owned())
    })();
    long.unwrap_or_else(|| String::from_utf8_lossy(short).into_owned())
}

/// The bytes of the base-relocation directory, which must lie inside bytes
/// the file provides: the headers or one section's copied raw data.
fn relocation_bytes<'a>(
    file: &'a [u8],
    size_of_headers: u64,
    sections: &[SectionLayout],
    dir: DataDirectory,
) -> Result<&'a [u8], ImageError> {
    let rva = u64::from(dir.rva);
    let size = u64::from(dir.size);
    let end = rva + size;
    let file_range = if end <= size_of_headers {
        Some(rva)
    } else {
        sections
            .iter()
            .find(|s| s.rva <= rva && end <= s.rva + s.copy_len)
            .map(|s| s.raw_offset + (rva - s.rva))
    };
    // Both ranges were checked against the file length while parsing.
    match file_range {
        Some(offset) => Ok(&file[offset as usize..(offset + size) as usize]),
        None => Err(ImageError::RelocationsNotInFile { rva, size }),
    }
}

/// Checks every base-relocation block and returns the fixups (RVA, width).
fn parse_relocations(
    data: &[u8],
    dir_rva: u64,
    is_pe32_plus: bool,
    size_of_image: u64,
) -> Result<Vec<(u64, u64)>, ImageError> {
    let mut fixups = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let remaining = (data.len() - at) as u64;
        let block_rva = dir_rva + at as u64;
        if remaining < 8 {
            return Err(ImageError::BadRelocationBlock { rva: block_rva, size_of_block: 0, remaining });
        }
        let page = u64::from(le_u32(data, at));
        let size_of_block = u64::from(le_u32(data, at + 4));
        if size_of_block < 8 || size_of_block > remaining || size_of_block % 2 != 0 {
            return Err(ImageError::BadRelocationBlock { rva: block_rva, size_of_block, remaining });
        }
        // `size_of_block <= remaining`, so the entries are inside `data`.
        for entry in data[at + 8..at + size_of_block as usize].chunks_exact(2) {
            let entry = u16::from_le_bytes([entry[0], entry[1]]);
            let kind = (entry >> 12) as u8;
            let rva = page + u64::from(entry & 0xfff);
            let width = match kind {
                IMAGE_REL_BASED_ABSOLUTE => continue,
                IMAGE_REL_BASED_HIGHLOW => 4,
                IMAGE_REL_BASED_DIR64 if is_pe32_plus => 8,
                _ => return Err(ImageError::UnsupportedRelocation { rva, kind }),
            };
            if rva + width > size_of_image {
                return Err(ImageError::RelocationOutsideImage { rva, width, size_of_image });
            }
            fixups.push((rva, width));
        }
        at += size_of_block as usize;
    }
    Ok(fixups)
}

impl Layout<'_> {
    fn size(&self) -> u64 {
        page_align(self.size_of_image)
    }

    /// The protection runs covering `[0, size)`, in address order, adjacent
    /// runs merged: `(start RVA, end RVA, protection)`.
    fn protection_runs(&self) -> Vec<(u64, u64, Protection)> {
        let size = self.size();
        let mut runs: Vec<(u64, u64, Protection)> = Vec::with_capacity(2 * self.sections.len() + 2);
        let mut push = |start: u64, end: u64, protection: Protection| {
            if start >= end {
                return;
            }
            match runs.last_mut() {
                Some(last) if last.1 == start && last.2 == protection => last.1 = end,
                _ => runs.push((start, end, protection)),
            }
        };
        let first = self.sections.first().map_or(size, |s| s.rva);
        let headers_end = align_up(self.size_of_headers, self.section_alignment).min(first).min(size);
        push(0, headers_end, Protection::READ);
        let mut covered = headers_end;
        for s in &self.sections {
            push(covered, s.rva, Protection::empty());
            push(s.rva, s.span_end, section_protection(s.characteristics));
            covered = covered.max(s.span_end).max(s.rva);
        }
        push(covered, size, Protection::empty());
        runs
    }

    fn mapped(&self, base: u64) -> MappedImage {
        MappedImage {
            base,
            size: self.size(),
            entry_point: if self.entry_rva == 0 { 0 } else { base + self.entry_rva },
            preferred_base: self.image_base,
            relocated: base != self.image_base,
            machine: self.machine,
            characteristics: self.characteristics,
            subsystem: self.subsystem,
            is_pe32_plus: self.is_pe32_plus,
            data_directories: self.directories.clone(),
            sections: self
                .sections
                .iter()
                .map(|s| MappedSection {
                    name: s.name.clone(),
                    address: base + s.rva,
                    size: s.span_end - s.rva,
                    virtual_size: s.virtual_size,
                    characteristics: s.characteristics,
                    protection: section_protection(s.characteristics),
                })
                .collect(),
        }
    }
}

// ------------------------------------------------------------------- mapping

/// The preferred base when it is free and in user space; else, for a
/// relocatable image, the first free slot where the image may live.
fn choose_base(mm: &MemoryManager, layout: &Layout<'_>, size: u64) -> Result<u64, ImageError> {
    let preferred = layout.image_base;
    let fits = preferred >= MIN_ALLOCATION_ADDRESS
        && preferred.checked_add(size).is_some_and(|end| end <= USER_SPACE_END)
        && !mm.overlaps_reserved_region(preferred, size);
    if fits {
        return Ok(preferred);
    }
    if !layout.relocatable {
        return Err(ImageError::RelocationsStripped { preferred_base: preferred });
    }
    let slot = if layout.is_pe32_plus {
        mm.find_free_allocation_base(size, 0)
    } else {
        let limit =
            if layout.characteristics & IMAGE_FILE_LARGE_ADDRESS_AWARE != 0 { 1 << 32 } else { 1 << 31 };
        mm.find_free_allocation_base_in(size, DEFAULT_ALLOCATION_ADDRESS_32BIT, limit, false)
    };
    slot.ok_or(ImageError::NoFreeSpace { size })
}

/// Copies headers and sections, relocates, protects. Every page is
/// committed and every range was checked by [`parse`], so the engine calls
/// cannot fail; their errors are passed on all the same.
fn fill(mm: &mut MemoryManager, layout: &Layout<'_>, base: u64) -> Result<(), MemoryError> {
    let file = layout.file;
    mm.write_memory(base, &file[..layout.size_of_headers as usize])?;
    for s in &layout.sections {
        if s.copy_len != 0 {
            let raw = &file[s.raw_offset as usize..(s.raw_offset + s.copy_len) as usize];
            mm.write_memory(base + s.rva, raw)?;
        }
    }
    if base != layout.image_base {
        let delta = base.wrapping_sub(layout.image_base);
        if layout.is_pe32_plus {
            mm.write_memory(base + layout.image_base_offset, &base.to_le_bytes())?;
        } else {
            // PE32 bases are below 4 GiB (see `choose_base`).
            mm.write_memory(base + layout.image_base_offset, &(base as u32).to_le_bytes())?;
        }
        for &(rva, width) in &layout.fixups {
            let at = base + rva;
            if width == 8 {
                let mut v = [0u8; 8];
                mm.read_memory(at, &mut v)?;
                mm.write_memory(at, &u64::from_le_bytes(v).wrapping_add(delta).to_le_bytes())?;
            } else {
                let mut v = [0u8; 4];
                mm.read_memory(at, &mut v)?;
                mm.write_memory(at, &u32::from_le_bytes(v).wrapping_add(delta as u32).to_le_bytes())?;
            }
        }
    }
    for (start, end, protection) in layout.protection_runs() {
        mm.protect_memory(base + start, end - start, protection)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_protection_table() {
        let (r, w, x, s) =
            (IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_SHARED);
        let wc = Protection::READ | Protection::WRITE_COPY;
        let ewc = wc | Protection::EXECUTE;
        let cases = [
            (0, Protection::empty()),
            (s, Protection::empty()),
            (x, Protection::EXECUTE),
            (r, Protection::READ),
            (r | x, Protection::READ_EXECUTE),
            (w, wc),
            (r | w, wc),
            (w | x, ewc),
            (r | w | x, ewc),
            (r | w | s, Protection::READ_WRITE),
            (w | s, Protection::READ_WRITE),
            (r | w | x | s, Protection::ALL_ACCESS),
            (r | s, Protection::READ),
        ];
        for (c, expected) in cases {
            assert_eq!(section_protection(c), expected, "{c:#x}");
            assert!(expected.is_valid());
        }
    }

    #[test]
    fn reader_refuses_overflowing_ranges() {
        let r = Reader(&[1, 2, 3]);
        assert!(r.bytes("x", u64::MAX, 2).is_err());
        assert!(r.bytes("x", 2, 2).is_err());
        assert_eq!(r.bytes("x", 1, 2).unwrap(), &[2, 3]);
        assert_eq!(r.u16("x", 0).unwrap(), 0x0201);
    }

    #[test]
    fn relocation_blocks() {
        // One block for page 0x1000: a DIR64 at 0x1008, a padding entry.
        let mut d = Vec::new();
        d.extend_from_slice(&0x1000u32.to_le_bytes());
        d.extend_from_slice(&12u32.to_le_bytes());
        d.extend_from_slice(&((10u16 << 12) | 8).to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        assert_eq!(parse_relocations(&d, 0x5000, true, 0x2000), Ok(vec![(0x1008, 8)]));
        // DIR64 in a PE32 image is refused.
        assert_eq!(
            parse_relocations(&d, 0x5000, false, 0x2000),
            Err(ImageError::UnsupportedRelocation { rva: 0x1008, kind: 10 })
        );
        // Past the image.
        assert_eq!(
            parse_relocations(&d, 0x5000, true, 0x100c),
            Err(ImageError::RelocationOutsideImage { rva: 0x1008, width: 8, size_of_image: 0x100c })
        );
        // A block header cut short.
        assert_eq!(
            parse_relocations(&d[..4], 0x5000, true, 0x2000),
            Err(ImageError::BadRelocationBlock { rva: 0x5000, size_of_block: 0, remaining: 4 })
        );
    }
}
