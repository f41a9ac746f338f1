//! Wine's PE `ntdll.dll` (Debian's `libwine`, x86_64-windows) on a session:
//! finding the file, mapping it, and making its traced functions callable
//! without a thread block.

use std::path::{Path, PathBuf};

use vmsnap::image::MappedImage;
use vmsnap::{MemoryManager, Protection, RegionKind};

use crate::call::{CallStack, find_export};
use crate::error::SessionError;
use crate::session::Session;

/// Where libwine installs its PE DLLs (relative to `/`).
pub const WINE_DIR: &str = "usr/lib/x86_64-linux-gnu/wine/x86_64-windows";

/// The path of libwine's PE `ntdll.dll`: `$VMSNAP_NTDLL`, an installed
/// libwine, or the copy `.ci/deps` extracts into the workspace's
/// `target/libwine`. The error says where it looked and how to fetch it.
pub fn ntdll_path() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("VMSNAP_NTDLL").map(PathBuf::from).into_iter().collect();
    candidates.push(Path::new("/").join(WINE_DIR).join("ntdll.dll"));
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/libwine").join(WINE_DIR).join("ntdll.dll"),
    );
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!(
            "ntdll.dll not found (looked at {}). It comes from Debian's libwine package; fetch it with \
             `(cd /tmp && apt-get download libwine) && dpkg -x /tmp/libwine_*.deb target/libwine` \
             from the repository root (or run .ci/deps), or set VMSNAP_NTDLL.",
            looked.join(", ")
        )
    })
}

/// Clears the flags of every Wine debug channel in the image's `.data` and
/// returns how many it cleared.
///
/// A channel is `{ flags: u8, name: [u8; 15] }`, 16-byte aligned, one per
/// channel per source file, with `flags = 0xff` meaning "not yet known": a
/// traced function then asks the thread block (`gs:[0x30]`) for them. A
/// session has no thread block, so the flags must read 0 (e.g.
/// `RtlComputeCrc32`'s `ntdll` channel at RVA 0x69a90 in Wine 8.0).
pub fn quiet_debug_channels(session: &mut Session, image: &MappedImage) -> Result<usize, SessionError> {
    let Some(data) = image.section(".data") else { return Ok(0) };
    let mut bytes = vec![0u8; data.size as usize];
    session.read(data.address, &mut bytes)?;
    let mut cleared = 0;
    for (i, chunk) in bytes.chunks_exact(16).enumerate() {
        let name_len = chunk[1..].iter().position(|&b| b == 0).unwrap_or(15);
        let is_name =
            name_len > 0 && chunk[1..=name_len].iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
        if chunk[0] == 0xff && is_name {
            session.write(data.address + 16 * i as u64, &[0])?;
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// A session with ntdll.dll mapped (debug channels quiet), a 64 KiB
/// [`CallStack`] and a 64 KiB read-write scratch allocation.
#[derive(Debug)]
pub struct Ntdll {
    /// The session.
    pub session: Session,
    /// The mapped image.
    pub image: MappedImage,
    /// The stack calls use.
    pub stack: CallStack,
    /// A 64 KiB read-write buffer for arguments.
    pub scratch: u64,
}

impl Ntdll {
    /// Maps `file` (ntdll.dll's bytes) into a new session and prepares it.
    pub fn load(file: &[u8]) -> Result<Ntdll, SessionError> {
        let mut session = Session::new(MemoryManager::new())?;
        let image = session.map_image(file)?;
        quiet_debug_channels(&mut session, &image)?;
        let stack = session.create_call_stack(0x10000)?;
        let scratch =
            session.allocate_memory(0x10000, Protection::READ_WRITE, false, 0, RegionKind::Private)?;
        Ok(Ntdll { session, image, stack, scratch })
    }

    /// The address of export `name`, if the image has it.
    pub fn export(&self, name: &str) -> Option<u64> {
        find_export(self.session.memory(), &self.image, name)
    }

    /// [`Session::call`] on this session's stack.
    pub fn call(&mut self, function: u64, args: &[u64], limit: usize) -> Result<u64, SessionError> {
        self.session.call(&self.stack, function, args, limit)
    }
}
