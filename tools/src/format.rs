//! Text formatting shared by the commands: numbers, sizes, Windows names,
//! hexdumps, and the region walk.

use std::fmt::Write;

use serde::Serialize;
use vmsnap::nt::{self, MemoryBasicInformation};
use vmsnap::{AddressSpace, RegionKind, USER_SPACE_END};

/// Parses `0x1000`, `1000h`, `00000001`40000000` (WinDbg) or a decimal.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let t: String = text.trim().chars().filter(|&c| c != '_' && c != '`').collect();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else if let Some(hex) = t.strip_suffix('h') {
        u64::from_str_radix(hex, 16)
    } else if text.contains('`') {
        u64::from_str_radix(&t, 16)
    } else {
        t.parse()
    };
    parsed.map_err(|_| format!("{text:?} is not a number (use 0x... for hex)"))
}

/// `1.5 MiB`, `4 KiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in the unit that fits: `120 ns`, `3.4 µs`, `12.0 ms`, `1.20 s`.
pub fn duration(seconds: f64) -> String {
    if seconds < 1e-6 {
        format!("{:.0} ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

/// `PAGE_READWRITE`, `PAGE_READWRITE|PAGE_GUARD`, `0` for none.
pub fn page_name(protect: u32) -> String {
    let base = match protect & 0xFF {
        0 => None,
        nt::PAGE_NOACCESS => Some("PAGE_NOACCESS"),
        nt::PAGE_READONLY => Some("PAGE_READONLY"),
        nt::PAGE_READWRITE => Some("PAGE_READWRITE"),
        nt::PAGE_WRITECOPY => Some("PAGE_WRITECOPY"),
        nt::PAGE_EXECUTE => Some("PAGE_EXECUTE"),
        nt::PAGE_EXECUTE_READ => Some("PAGE_EXECUTE_READ"),
        nt::PAGE_EXECUTE_READWRITE => Some("PAGE_EXECUTE_READWRITE"),
        nt::PAGE_EXECUTE_WRITECOPY => Some("PAGE_EXECUTE_WRITECOPY"),
        _ => None,
    };
    let mut parts: Vec<String> = base.map(str::to_owned).into_iter().collect();
    if base.is_none() && protect & 0xFF != 0 {
        parts.push(format!("{:#x}", protect & 0xFF));
    }
    for (bit, name) in [
        (nt::PAGE_GUARD, "PAGE_GUARD"),
        (nt::PAGE_NOCACHE, "PAGE_NOCACHE"),
        (nt::PAGE_WRITECOMBINE, "PAGE_WRITECOMBINE"),
    ] {
        if protect & bit != 0 {
            parts.push(name.to_owned());
        }
    }
    if parts.is_empty() { "0".to_owned() } else { parts.join("|") }
}

/// `MEM_COMMIT`, `MEM_RESERVE`, `MEM_FREE`.
pub fn state_name(state: u32) -> &'static str {
    match state {
        nt::MEM_COMMIT => "MEM_COMMIT",
        nt::MEM_RESERVE => "MEM_RESERVE",
        _ => "MEM_FREE",
    }
}

/// `MEM_PRIVATE`, `MEM_MAPPED`, `MEM_IMAGE`, or empty for free memory.
pub fn type_name(type_: u32) -> &'static str {
    match type_ {
        nt::MEM_PRIVATE => "MEM_PRIVATE",
        nt::MEM_MAPPED => "MEM_MAPPED",
        nt::MEM_IMAGE => "MEM_IMAGE",
        _ => "",
    }
}

/// The engine's name of a region kind.
pub fn kind_name(kind: RegionKind) -> &'static str {
    match kind {
        RegionKind::Free => "Free",
        RegionKind::Private => "Private",
        RegionKind::FileView => "FileView",
        RegionKind::PagefileView => "PagefileView",
        RegionKind::Image => "Image",
        RegionKind::Mmio => "Mmio",
    }
}

/// One row of the region table: `VirtualQuery`'s answer at a region start.
#[derive(Clone, Debug, Serialize)]
pub struct Region {
    pub base: u64,
    pub end: u64,
    pub size: u64,
    pub state: &'static str,
    pub protect: u32,
    pub protect_name: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub kind: &'static str,
    pub allocation_base: u64,
    pub allocation_protect: u32,
    /// The engine's protection letters (`rw-`, `r-x+guard`); empty when not committed.
    pub rwx: String,
}

impl Region {
    /// True for free memory (`MEM_FREE`), outside every allocation.
    pub fn is_free(&self) -> bool {
        self.state == "MEM_FREE"
    }
}

/// Every region from address 0 to the end of user space, free ones
/// included, by `AddressSpace::region_info`.
pub fn regions(space: &dyn AddressSpace) -> Vec<Region> {
    let mut out = Vec::new();
    let mut address = 0u64;
    while address < USER_SPACE_END {
        let info = space.region_info(address);
        if info.length == 0 {
            break;
        }
        let mbi = MemoryBasicInformation::from(info);
        out.push(Region {
            base: info.start,
            end: info.start + info.length,
            size: info.length,
            state: state_name(mbi.state),
            protect: mbi.protect,
            protect_name: if mbi.state == nt::MEM_COMMIT || mbi.state == nt::MEM_FREE {
                page_name(mbi.protect)
            } else {
                String::new()
            },
            type_: type_name(mbi.type_),
            kind: kind_name(info.kind),
            allocation_base: mbi.allocation_base,
            allocation_protect: mbi.allocation_protect,
            rwx: if info.is_committed { info.permissions.to_string() } else { String::new() },
        });
        address = info.start + info.length;
    }
    out
}

/// `00000001`40000000`, WinDbg's way of writing a 64-bit address.
pub fn windbg(address: u64) -> String {
    format!("{:08x}`{:08x}", address >> 32, address & 0xFFFF_FFFF)
}

/// Classic hexdump lines of `bytes` starting at `address`: address, 16 hex
/// bytes (`??` where `readable` is false), ASCII column.
pub fn hexdump(address: u64, bytes: &[u8], readable: &dyn Fn(u64) -> bool) -> String {
    let mut out = String::new();
    let start = address & !0xF;
    let end = address + bytes.len() as u64;
    let mut line = start;
    while line < end {
        let _ = write!(out, "{}  ", windbg(line));
        let mut ascii = String::new();
        for i in 0..16u64 {
            let a = line + i;
            if i == 8 {
                out.push(' ');
            }
            if a < address || a >= end {
                out.push_str("   ");
                ascii.push(' ');
            } else if !readable(a) {
                out.push_str("?? ");
                ascii.push('?');
            } else {
                let b = bytes[(a - address) as usize];
                let _ = write!(out, "{b:02x} ");
                ascii.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
            }
        }
        let _ = writeln!(out, " |{ascii}|");
        line += 16;
    }
    out
}

/// Bytes as lowercase hex pairs separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Bytes as lowercase hex digits, unseparated: how the JSON reports write them.
pub fn hex_digits(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serializes bytes as [`hex_digits`] (for `#[serde(serialize_with)]`).
pub fn serialize_hex<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex_digits(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0x7ffe0000"), Ok(0x7ffe_0000));
        assert_eq!(parse_u64("00000001`40000000"), Ok(0x1_4000_0000));
        assert_eq!(parse_u64("1000h"), Ok(0x1000));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert!(parse_u64("zz").is_err());
        assert_eq!(size(0x1000), "4 KiB");
        assert_eq!(size(1536 * 1024), "1.5 MiB");
        assert_eq!(page_name(nt::PAGE_READWRITE | nt::PAGE_GUARD), "PAGE_READWRITE|PAGE_GUARD");
    }

    #[test]
    fn hexdump_lines() {
        let dump = hexdump(0x1008, b"hello, world", &|a| a != 0x100a);
        assert_eq!(
            dump,
            "00000000`00001000                           68 65 ?? 6c 6f 2c 20 77  |        he?lo, w|\n\
             00000000`00001010  6f 72 6c 64                                       |orld            |\n"
        );
    }
}
