//! A small PE32+/PE32 writer for the image tests: every header field at a
//! known offset, so tests can build a valid file and then break exactly one
//! field.
//!
//! ```text
//!  0x000  DOS header ("MZ", e_lfanew = 0x80 at 0x3c)
//!  0x080  "PE\0\0"
//!  0x084  COFF header (20 bytes)
//!  0x098  optional header (PE32+: 240 bytes, PE32: 224 bytes; 16 directories)
//!  ....   section table (40 bytes a section)
//!  0x200  end of headers (FileAlignment 0x200); section raw data follows,
//!         each at a 0x200-aligned offset; sections at 0x1000-aligned RVAs
//!         from 0x1000 in the order given; `.reloc` last when relocations
//!         were added.
//! ```
#![allow(dead_code)]

pub const E_LFANEW: usize = 0x80;
pub const COFF: usize = E_LFANEW + 4;
pub const OPT: usize = COFF + 20;
pub const FILE_ALIGNMENT: u32 = 0x200;
pub const SECTION_ALIGNMENT: u32 = 0x1000;

pub const SCN_CODE: u32 = 0x20;
pub const SCN_INITIALIZED: u32 = 0x40;
pub const SCN_UNINITIALIZED: u32 = 0x80;
pub const SCN_DISCARDABLE: u32 = 0x0200_0000;
pub const SCN_SHARED: u32 = 0x1000_0000;
pub const SCN_X: u32 = 0x2000_0000;
pub const SCN_R: u32 = 0x4000_0000;
pub const SCN_W: u32 = 0x8000_0000;

pub const REL_ABSOLUTE: u8 = 0;
pub const REL_HIGHLOW: u8 = 3;
pub const REL_DIR64: u8 = 10;

/// One section to write.
#[derive(Clone, Debug)]
pub struct SectionSpec {
    pub name: &'static str,
    pub characteristics: u32,
    pub virtual_size: u32,
    /// Raw data (padded to `FILE_ALIGNMENT` in the file).
    pub data: Vec<u8>,
}

/// What to write.
#[derive(Clone, Debug)]
pub struct PeSpec {
    pub pe32_plus: bool,
    pub machine: u16,
    pub characteristics: u16,
    pub image_base: u64,
    /// RVA of the entry point (0: none).
    pub entry: u32,
    pub sections: Vec<SectionSpec>,
    /// Base relocations `(rva, type)`; a `.reloc` section is added when not empty.
    pub relocs: Vec<(u32, u8)>,
}

/// Where the writer put a section.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    /// File offset of its section header.
    pub header: usize,
    pub rva: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

/// A written file and where its parts are.
#[derive(Clone, Debug)]
pub struct Pe {
    pub bytes: Vec<u8>,
    pub optional_header_size: usize,
    pub section_table: usize,
    pub sections: Vec<Placed>,
    /// The `.reloc` section, when written.
    pub reloc: Option<Placed>,
    pub size_of_image: u32,
    pub size_of_headers: u32,
}

fn align(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

impl Pe {
    pub fn put_u16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put_u64(&mut self, at: usize, v: u64) {
        self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }
    /// Offset of a field of section `index`'s header (8 VirtualSize,
    /// 12 VirtualAddress, 16 SizeOfRawData, 20 PointerToRawData, 36 Characteristics).
    pub fn section_field(&self, index: usize, field: usize) -> usize {
        self.section_table + 40 * index + field
    }
    /// Offset of optional-header field `field` (16 AddressOfEntryPoint,
    /// 32 SectionAlignment, 36 FileAlignment, 56 SizeOfImage, 60 SizeOfHeaders).
    pub fn opt(field: usize) -> usize {
        OPT + field
    }
    /// Offset of data directory `index` (its RVA; the size follows).
    pub fn directory(&self, index: usize) -> usize {
        let fixed = if self.optional_header_size == 240 { 112 } else { 96 };
        OPT + fixed + 8 * index
    }
}

/// Base-relocation blocks for `relocs`, grouped by page, each padded to a
/// multiple of 4 bytes with an `ABSOLUTE` entry.
pub fn reloc_blocks(relocs: &[(u32, u8)]) -> Vec<u8> {
    let mut sorted = relocs.to_vec();
    sorted.sort_by_key(|r| r.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let page = sorted[i].0 & !0xfff;
        let mut entries: Vec<u16> = Vec::new();
        while i < sorted.len() && sorted[i].0 & !0xfff == page {
            entries.push((u16::from(sorted[i].1) << 12) | (sorted[i].0 & 0xfff) as u16);
            i += 1;
        }
        if entries.len() % 2 == 1 {
            entries.push(0);
        }
        out.extend_from_slice(&page.to_le_bytes());
        out.extend_from_slice(&(8 + 2 * entries.len() as u32).to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    out
}

pub fn build(spec: &PeSpec) -> Pe {
    let mut sections = spec.sections.clone();
    let has_relocs = !spec.relocs.is_empty();
    if has_relocs {
        let data = reloc_blocks(&spec.relocs);
        sections.push(SectionSpec {
            name: ".reloc",
            characteristics: SCN_INITIALIZED | SCN_R | SCN_DISCARDABLE,
            virtual_size: data.len() as u32,
            data,
        });
    }
    let optional_header_size = if spec.pe32_plus { 240 } else { 224 };
    let section_table = OPT + optional_header_size;
    let headers_end = section_table + 40 * sections.len();
    let size_of_headers = align(headers_end as u32, FILE_ALIGNMENT);

    // Layout.
    let mut placed = Vec::new();
    let mut rva = align(size_of_headers, SECTION_ALIGNMENT);
    let mut file_end = size_of_headers;
    for (i, s) in sections.iter().enumerate() {
        let raw_size = align(s.data.len() as u32, FILE_ALIGNMENT);
        let raw_offset = if raw_size == 0 { 0 } else { file_end };
        file_end += raw_size;
        placed.push(Placed { header: section_table + 40 * i, rva, raw_offset, raw_size });
        rva = align(rva + s.virtual_size.max(1), SECTION_ALIGNMENT);
    }
    let size_of_image = rva;

    let mut b = vec![0u8; file_end as usize];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&(E_LFANEW as u32).to_le_bytes());
    b[E_LFANEW..E_LFANEW + 4].copy_from_slice(b"PE\0\0");
    let mut pe = Pe {
        bytes: b,
        optional_header_size,
        section_table,
        sections: Vec::new(),
        reloc: None,
        size_of_image,
        size_of_headers,
    };
    pe.put_u16(COFF, spec.machine);
    pe.put_u16(COFF + 2, sections.len() as u16);
    pe.put_u16(COFF + 16, optional_header_size as u16);
    pe.put_u16(COFF + 18, spec.characteristics);
    pe.put_u16(OPT, if spec.pe32_plus { 0x20b } else { 0x10b });
    pe.put_u32(OPT + 16, spec.entry);
    if spec.pe32_plus {
        pe.put_u64(OPT + 24, spec.image_base);
    } else {
        pe.put_u32(OPT + 28, spec.image_base as u32);
    }
    pe.put_u32(OPT + 32, SECTION_ALIGNMENT);
    pe.put_u32(OPT + 36, FILE_ALIGNMENT);
    pe.put_u32(OPT + 56, size_of_image);
    pe.put_u32(OPT + 60, size_of_headers);
    pe.put_u16(OPT + 68, 3); // IMAGE_SUBSYSTEM_WINDOWS_CUI
    pe.put_u32(OPT + if spec.pe32_plus { 108 } else { 92 }, 16);
    for (s, p) in sections.iter().zip(&placed) {
        let h = p.header;
        let name = s.name.as_bytes();
        pe.bytes[h..h + name.len().min(8)].copy_from_slice(&name[..name.len().min(8)]);
        pe.put_u32(h + 8, s.virtual_size);
        pe.put_u32(h + 12, p.rva);
        pe.put_u32(h + 16, p.raw_size);
        pe.put_u32(h + 20, p.raw_offset);
        pe.put_u32(h + 36, s.characteristics);
        let at = p.raw_offset as usize;
        pe.bytes[at..at + s.data.len()].copy_from_slice(&s.data);
    }
    if has_relocs {
        let r = *placed.last().unwrap();
        let size = sections.last().unwrap().virtual_size;
        let dir = pe.directory(5);
        pe.put_u32(dir, r.rva);
        pe.put_u32(dir + 4, size);
        pe.reloc = Some(r);
        placed.pop();
    }
    pe.sections = placed;
    pe
}

/// RVAs of the sample image's sections.
pub const TEXT: u32 = 0x1000;
pub const RDATA: u32 = 0x2000;
pub const DATA: u32 = 0x3000;
pub const BSS: u32 = 0x5000;
pub const RELOC: u32 = 0x6000;
/// `.data` holds a pointer to `.rdata` at this offset.
pub const DATA_POINTER: u32 = 0x10;
/// `.data` holds a second pointer, on its second page, at this offset.
pub const DATA_POINTER_2: u32 = 0x1000 - 2;
/// The sample's `SizeOfImage`.
pub const SAMPLE_SIZE: u64 = 0x7000;
/// The sample's code bytes (`nop; nop; ret`, then a marker).
pub const CODE: &[u8] = b"\x90\x90\xC3CODE-MARKER";
pub const RDATA_BYTES: &[u8] = b"hello from .rdata\0";
pub const PREFERRED_64: u64 = 0x1_4000_0000;
pub const PREFERRED_32: u64 = 0x40_0000;

/// The sample DLL: `.text` (RX), `.rdata` (R), `.data` (RW, two pages of
/// which one is backed by the file, holding two pointers into `.rdata`),
/// `.bss` (RW, uninitialized), `.reloc` (R, discardable), entry point at
/// `.text + 1`.
pub fn sample_spec(pe32_plus: bool) -> PeSpec {
    let image_base = if pe32_plus { PREFERRED_64 } else { PREFERRED_32 };
    let (width, kind) = if pe32_plus { (8, REL_DIR64) } else { (4, REL_HIGHLOW) };
    let mut data = vec![0u8; 0x1000 + 0x10];
    let target = image_base + u64::from(RDATA);
    data[DATA_POINTER as usize..DATA_POINTER as usize + width]
        .copy_from_slice(&target.to_le_bytes()[..width]);
    let second = target + 6;
    data[DATA_POINTER_2 as usize..DATA_POINTER_2 as usize + width]
        .copy_from_slice(&second.to_le_bytes()[..width]);
    data[0..8].copy_from_slice(b"DATA-MRK");
    PeSpec {
        pe32_plus,
        machine: if pe32_plus { 0x8664 } else { 0x14c },
        characteristics: if pe32_plus { 0x2022 } else { 0x2102 },
        image_base,
        entry: TEXT + 1,
        sections: vec![
            SectionSpec {
                name: ".text",
                characteristics: SCN_CODE | SCN_X | SCN_R,
                virtual_size: CODE.len() as u32,
                data: CODE.to_vec(),
            },
            SectionSpec {
                name: ".rdata",
                characteristics: SCN_INITIALIZED | SCN_R,
                virtual_size: RDATA_BYTES.len() as u32,
                data: RDATA_BYTES.to_vec(),
            },
            SectionSpec {
                name: ".data",
                characteristics: SCN_INITIALIZED | SCN_R | SCN_W,
                virtual_size: 0x1800,
                data,
            },
            SectionSpec {
                name: ".bss",
                characteristics: SCN_UNINITIALIZED | SCN_R | SCN_W,
                virtual_size: 0x100,
                data: Vec::new(),
            },
        ],
        relocs: vec![(DATA + DATA_POINTER, kind), (DATA + DATA_POINTER_2, kind)],
    }
}

pub fn sample(pe32_plus: bool) -> Pe {
    let pe = build(&sample_spec(pe32_plus));
    assert_eq!(
        pe.sections.iter().map(|p| p.rva).collect::<Vec<_>>(),
        [TEXT, RDATA, DATA, BSS],
        "sample layout"
    );
    assert_eq!(pe.reloc.unwrap().rva, RELOC);
    assert_eq!(u64::from(pe.size_of_image), SAMPLE_SIZE);
    pe
}
