//! The demo's executable: a small PE32+ file (`.text`, `.rdata`, `.data`
//! with a pointer the loader relocates, `.bss`, `.reloc`) written in memory
//! with the `object` crate.

use anyhow::{Context, Result};
use object::pe;
use object::write::pe::{NtHeaders, Writer};
use vmsnap::PAGE_SIZE;

use super::{HEAP_RESERVE, IMAGE_BASE, STACK_COMMIT_PAGES, STACK_RESERVE};

/// The PE file's bytes and the RVA of its `.data` section.
pub fn demo_pe() -> Result<(Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut w = Writer::new(true, 0x1000, 0x200, &mut out);
    w.reserve_dos_header_and_stub();
    w.reserve_nt_headers(16);
    w.reserve_section_headers(5);
    // mov eax, [rip+...]; inc eax; ret — the bytes only need to look like code.
    let code = [0x8Bu8, 0x05, 0xFA, 0x0F, 0x00, 0x00, 0xFF, 0xC0, 0xC3];
    let text = w.reserve_text_section(code.len() as u32);
    let message = b"vmsnap demo: hello from .rdata\0";
    let rdata = w.reserve_rdata_section(message.len() as u32);
    let data = w.reserve_data_section(0x2000, 0x40);
    w.reserve_bss_section(0x3000);
    // .data+0: a pointer to the .rdata message, fixed up if the image moves.
    w.add_reloc(data.virtual_address, pe::IMAGE_REL_BASED_DIR64);
    w.reserve_reloc_section();
    w.write_dos_header_and_stub().context("PE writer")?;
    w.write_nt_headers(nt_headers(text.virtual_address));
    w.write_section_headers();
    w.write_section(text.file_offset, &code);
    w.write_section(rdata.file_offset, message);
    let mut data_bytes = [0u8; 0x40];
    data_bytes[..8].copy_from_slice(&(IMAGE_BASE + u64::from(rdata.virtual_address)).to_le_bytes());
    w.write_section(data.file_offset, &data_bytes);
    w.write_reloc_section();
    Ok((out, data.virtual_address))
}

/// The NT headers of a 64-bit console executable starting at `entry`.
fn nt_headers(entry: u32) -> NtHeaders {
    NtHeaders {
        machine: pe::IMAGE_FILE_MACHINE_AMD64,
        time_date_stamp: 0,
        characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE,
        major_linker_version: 14,
        minor_linker_version: 0,
        address_of_entry_point: entry,
        image_base: IMAGE_BASE,
        major_operating_system_version: 10,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 10,
        minor_subsystem_version: 0,
        subsystem: pe::IMAGE_SUBSYSTEM_WINDOWS_CUI,
        dll_characteristics: pe::DllFlags(0),
        size_of_stack_reserve: STACK_RESERVE,
        size_of_stack_commit: STACK_COMMIT_PAGES * PAGE_SIZE,
        size_of_heap_reserve: HEAP_RESERVE,
        size_of_heap_commit: 0x1000,
    }
}
