//! Helpers shared by the session tests: a tiny machine-code kit and the
//! Wine ntdll.dll loader.
#![allow(dead_code)]

use vmsnap::{MemoryManager, Protection, RegionKind};
use vmsnap_unicorn::Session;

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

/// Prints why a test skips, to stderr so it shows in the test log.
pub fn skip_message(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Wine's ntdll.dll loaded into a session, or `None` (with a message saying
/// why and how to fetch it) where libwine is not available.
pub struct Ntdll(pub vmsnap_unicorn::wine::Ntdll);

impl Ntdll {
    pub fn load() -> Option<vmsnap_unicorn::wine::Ntdll> {
        match vmsnap_unicorn::wine::ntdll_path() {
            Ok(path) => Some(vmsnap_unicorn::wine::Ntdll::load(&std::fs::read(path).unwrap()).unwrap()),
            Err(message) => {
                skip_message(&format!("SKIPPED: {message}"));
                None
            }
        }
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
