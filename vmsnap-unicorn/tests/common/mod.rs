//! Helpers shared by the session tests: a tiny machine-code kit and the
//! Wine ntdll.dll loader.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vmsnap::image::MappedImage;
use vmsnap::{MemoryManager, Protection, RegionKind};
use vmsnap_unicorn::{CallStack, Session, find_export};

/// `mov [rax], rbx`
pub const STORE_RBX_AT_RAX: [u8; 3] = [0x48, 0x89, 0x18];
/// `mov rbx, [rax]`
pub const LOAD_RBX_FROM_RAX: [u8; 3] = [0x48, 0x8B, 0x18];

/// `mov eax, imm32`
pub fn mov_eax(imm: u32) -> Vec<u8> {
    let mut v = vec![0xB8];
    v.extend_from_slice(&imm.to_le_bytes());
    v
}

/// A session with one code page (`READ | EXECUTE`) holding `code`; returns
/// the session and the code address.
pub fn session_with_code(code: &[u8]) -> (Session, u64) {
    let mut s = Session::new(MemoryManager::new()).unwrap();
    let at = s.allocate_memory(0x1000, Protection::READ_WRITE, false, 0, RegionKind::Private).unwrap();
    s.write(at, code).unwrap();
    s.protect_memory(at, 0x1000, Protection::READ_EXECUTE).unwrap();
    (s, at)
}

pub fn read_u64(s: &Session, address: u64) -> u64 {
    let mut b = [0u8; 8];
    s.read(address, &mut b).unwrap();
    u64::from_le_bytes(b)
}

pub const WINE_DIR: &str = "usr/lib/x86_64-linux-gnu/wine/x86_64-windows";

/// Where libwine's PE ntdll.dll is: an installed libwine, or the copy
/// `.ci/run` extracts into the workspace's `target/libwine`.
pub fn wine_ntdll() -> Result<PathBuf, String> {
    let candidates = [
        Path::new("/").join(WINE_DIR).join("ntdll.dll"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/libwine").join(WINE_DIR).join("ntdll.dll"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "SKIPPED: ntdll.dll not found at {} or {}. It comes from Debian's libwine package; fetch it with \
             `(cd /tmp && apt-get download libwine) && dpkg -x /tmp/libwine_*.deb target/libwine` \
             from the repository root (or run .ci/run).",
            candidates[0].display(),
            candidates[1].display()
        )
    })
}

/// Prints why a test skips, to stderr so it shows in the test log.
pub fn skip_message(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// A session with Wine's ntdll.dll mapped, its ntdll debug channel's flags
/// byte cleared (with no thread block, the flags must read 0 so traced
/// functions never ask for them), a call stack and a 64 KiB scratch buffer.
pub struct Ntdll {
    pub session: Session,
    pub image: MappedImage,
    pub stack: CallStack,
    pub scratch: u64,
}

impl Ntdll {
    pub fn load() -> Option<Ntdll> {
        let path = match wine_ntdll() {
            Ok(p) => p,
            Err(message) => {
                skip_message(&message);
                return None;
            }
        };
        let file = std::fs::read(path).unwrap();
        let mut session = Session::new(MemoryManager::new()).unwrap();
        let image = session.map_image(&file).unwrap();
        // Wine's debug channels `{ flags: u8 = 0xff (not yet known), name: [u8; 15] }`
        // sit 16-byte aligned in .data, one per channel per source file
        // (RtlComputeCrc32's is the `ntdll` one at RVA 0x69a90 in Wine 8.0).
        // With flags 0xff a traced function asks the thread block (gs:[0x30])
        // for them; there is none here, so every channel's flags become 0.
        let data = image.section(".data").expect(".data section");
        let mut bytes = vec![0u8; data.size as usize];
        session.read(data.address, &mut bytes).unwrap();
        let mut cleared = 0;
        for (i, chunk) in bytes.chunks_exact(16).enumerate() {
            let name_len = chunk[1..].iter().position(|&b| b == 0).unwrap_or(15);
            let is_name = name_len > 0 && chunk[1..=name_len].iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
            if chunk[0] == 0xff && is_name {
                session.write(data.address + 16 * i as u64, &[0]).unwrap();
                cleared += 1;
            }
        }
        assert!(cleared > 0, "no Wine debug channel found in .data");
        let stack = session.create_call_stack(0x10000).unwrap();
        let scratch =
            session.allocate_memory(0x10000, Protection::READ_WRITE, false, 0, RegionKind::Private).unwrap();
        Some(Ntdll { session, image, stack, scratch })
    }

    pub fn export(&self, name: &str) -> u64 {
        find_export(self.session.memory(), &self.image, name).unwrap_or_else(|| panic!("export {name}"))
    }

    pub fn call(&mut self, function: u64, args: &[u64]) -> u64 {
        self.session.call(&self.stack, function, args, 10_000_000).unwrap()
    }
}

/// CRC-32 (IEEE, reflected), written out here: the reference for
/// `RtlComputeCrc32(initial, data, len)`.
pub fn crc32(initial: u32, data: &[u8]) -> u32 {
    let mut crc = !initial;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
