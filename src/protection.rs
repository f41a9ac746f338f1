//! Page protections, region kinds, access kinds, and the one-byte page state
//! that the page table stores for every page.

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

bitflags! {
    /// The protection of a page. `Protection::empty()` is "no access".
    ///
    /// `GUARD` is a modifier: the first guest access to a guard page fails with
    /// [`MemoryError::GuardPageViolation`](crate::MemoryError::GuardPageViolation)
    /// and clears the bit, as Windows does. Conversions to and from the Windows
    /// `PAGE_*` values live in the `nt` face.
    ///
    /// Windows cannot express every bit pattern: write access always implies read
    /// access, and a guard page needs some access. [`Protection::is_valid`] says
    /// whether a value is one the engine accepts.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Protection: u8 {
        /// The page can be read.
        const READ = 1;
        /// The page can be written (requires `READ`).
        const WRITE = 2;
        /// The page can be executed.
        const EXECUTE = 4;
        /// The page is a guard page: its first guest access fails once.
        const GUARD = 8;
        /// Write access by private copy (`PAGE_WRITECOPY`): a guest write is
        /// allowed and turns the page into `WRITE` (its region splits), as
        /// Windows does for image and section views. Requires `READ`, excludes
        /// `WRITE`.
        const WRITE_COPY = 16;
    }
}

impl Protection {
    /// `READ | WRITE`, the usual protection of data memory.
    pub const READ_WRITE: Protection = Protection::READ.union(Protection::WRITE);
    /// `READ | EXECUTE`, the usual protection of code.
    pub const READ_EXECUTE: Protection = Protection::READ.union(Protection::EXECUTE);
    /// `READ | WRITE | EXECUTE`.
    pub const ALL_ACCESS: Protection = Protection::READ_WRITE.union(Protection::EXECUTE);

    /// True when the engine accepts this protection: no unknown bits, `WRITE`
    /// or `WRITE_COPY` (not both) only together with `READ`, and `GUARD` only
    /// together with some access.
    ///
    /// ```
    /// use vmsnap::Protection;
    /// assert!(Protection::READ_WRITE.is_valid());
    /// assert!(Protection::empty().is_valid()); // PAGE_NOACCESS
    /// assert!(!Protection::WRITE.is_valid()); // Windows has no write-only page
    /// assert!(!Protection::GUARD.is_valid()); // PAGE_GUARD | PAGE_NOACCESS is invalid
    /// assert!(!Protection::from_bits_retain(0x40).is_valid());
    /// ```
    pub const fn is_valid(self) -> bool {
        let bits = self.bits();
        if bits & !Protection::all().bits() != 0 {
            return false;
        }
        let writes = Protection::WRITE.bits() | Protection::WRITE_COPY.bits();
        if bits & writes != 0 && bits & Protection::READ.bits() == 0 {
            return false;
        }
        if bits & writes == writes {
            return false;
        }
        if bits & Protection::GUARD.bits() != 0 && bits & (Protection::ALL_ACCESS.bits() | writes) == 0 {
            return false;
        }
        true
    }

    /// True when a guest access of kind `access` is allowed (ignoring `GUARD`;
    /// `WRITE_COPY` allows writes).
    pub const fn allows(self, access: Access) -> bool {
        let mut required = access.required().bits();
        if let Access::Write = access {
            required |= Protection::WRITE_COPY.bits();
        }
        self.bits() & required != 0
    }
}

impl std::fmt::Display for Protection {
    /// `rwx` letters, `-` for a missing right, `+guard` when `GUARD` is set:
    /// `rw-`, `r-x`, `rw-+guard`, `---` (no access); `c` in the write column
    /// for write-copy (`rc-`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bit = |flag: Protection, c: char| if self.contains(flag) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            bit(Protection::READ, 'r'),
            if self.contains(Protection::WRITE_COPY) { 'c' } else { bit(Protection::WRITE, 'w') },
            bit(Protection::EXECUTE, 'x')
        )?;
        if self.contains(Protection::GUARD) {
            f.write_str("+guard")?;
        }
        Ok(())
    }
}

/// What an allocation is. `Free` describes unallocated memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegionKind {
    /// Not allocated.
    Free,
    /// Private memory (`VirtualAlloc`, `MEM_PRIVATE`).
    Private,
    /// A view of a file-backed section (`MEM_MAPPED`).
    FileView,
    /// A view of a pagefile-backed section (`MEM_MAPPED`).
    PagefileView,
    /// A mapped executable image (`MEM_IMAGE`).
    Image,
    /// Memory-mapped I/O: reads and writes call handlers.
    Mmio,
}

/// The kind of a guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

impl Access {
    /// The protection bit this access needs.
    pub const fn required(self) -> Protection {
        match self {
            Access::Read => Protection::READ,
            Access::Write => Protection::WRITE,
            Access::Execute => Protection::EXECUTE,
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        })
    }
}

/// The state of one page as the page table stores it: one byte.
///
/// ```text
///  bit  7    6    5         4  3     2  1  0
///       VIEW MMIO COMMITTED WC GUARD X  W  R
/// ```
///
/// A page whose byte is 0 is not committed (free or reserved: the region map
/// tells which). The all-zero byte is also what an absent page-table subtree
/// means, so empty memory costs nothing.
pub(crate) mod meta {
    /// Mask of the protection bits.
    pub const PROT: u8 = 0x1f;
    /// The page is committed.
    pub const COMMITTED: u8 = 0x20;
    /// The page belongs to an MMIO region.
    pub const MMIO: u8 = 0x40;
    /// `WRITE_COPY` inside the byte.
    pub const WRITE_COPY: u8 = 0x10;
    /// The page belongs to a section view: its bytes live in the section (the
    /// page-table entry names the section page).
    pub const VIEW: u8 = 0x80;
    /// `GUARD` inside the byte.
    pub const GUARD: u8 = 0x08;

    /// The protection stored in a meta byte.
    #[inline]
    pub const fn protection(meta: u8) -> super::Protection {
        super::Protection::from_bits_retain(meta & PROT)
    }

    /// True for a page whose bytes are its own: committed, neither MMIO
    /// (bytes from handlers) nor a view page (bytes of its section page).
    /// Only such pages carry frozen bytes in files and page maps.
    #[inline]
    pub const fn holds_bytes(meta: u8) -> bool {
        meta & (COMMITTED | MMIO | VIEW) == COMMITTED
    }

    /// True for a meta byte the engine could have written.
    pub const fn is_valid(meta: u8) -> bool {
        if meta == 0 || meta == VIEW {
            return true; // not committed (a reserved view page keeps VIEW)
        }
        // Every bit of the byte has a meaning; a state is valid
        // when committed with a valid protection.
        meta & COMMITTED != 0 && super::Protection::from_bits_retain(meta & PROT).is_valid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        for bits in 0u8..=255 {
            let p = Protection::from_bits_retain(bits);
            let expected = bits < 32
                && (bits & 0x12 == 0 || bits & 1 != 0)
                && bits & 0x12 != 0x12
                && (bits & 8 == 0 || bits & 0x17 != 0);
            assert_eq!(p.is_valid(), expected, "bits {bits:#x}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(Protection::READ_WRITE.to_string(), "rw-");
        assert_eq!(Protection::READ_EXECUTE.to_string(), "r-x");
        assert_eq!((Protection::READ_WRITE | Protection::GUARD).to_string(), "rw-+guard");
        assert_eq!(Protection::empty().to_string(), "---");
        assert_eq!((Protection::READ | Protection::WRITE_COPY).to_string(), "rc-");
        assert!(Protection::WRITE_COPY.union(Protection::READ).allows(Access::Write));
        assert!(!Protection::WRITE_COPY.is_valid());
        assert!(!(Protection::READ_WRITE | Protection::WRITE_COPY).is_valid());
    }

    #[test]
    fn allows() {
        assert!(Protection::READ_WRITE.allows(Access::Write));
        assert!(!Protection::READ.allows(Access::Write));
        assert!(!Protection::READ_WRITE.allows(Access::Execute));
        assert!(Protection::EXECUTE.allows(Access::Execute));
        assert!(!Protection::empty().allows(Access::Read));
    }

    #[test]
    fn meta_roundtrip() {
        let m = meta::COMMITTED | (Protection::READ | Protection::GUARD).bits();
        assert_eq!(meta::protection(m), Protection::READ | Protection::GUARD);
        assert!(meta::is_valid(m));
        assert!(meta::is_valid(0));
        assert!(!meta::is_valid(Protection::READ.bits())); // not committed but has protection
        assert!(meta::is_valid(meta::VIEW | meta::COMMITTED | 1));
    }
}
