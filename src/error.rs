//! `MemoryError`: every way a memory operation can fail, each with the value
//! that failed.

use crate::protection::{Access, Protection, RegionKind};

/// Why a memory operation failed. A failed operation changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// A guest access to a page whose state or protection forbids it.
    /// `address` is the first byte that could not be accessed.
    #[error("access violation: {access} at {address:#x}")]
    AccessViolation {
        /// First byte that could not be accessed.
        address: u64,
        /// What the guest tried to do.
        access: Access,
    },
    /// The first guest touch of a guard page. The guard bit is now cleared and
    /// the access was not performed; retrying it goes through.
    #[error("guard page violation: {access} at {address:#x}")]
    GuardPageViolation {
        /// First byte of the access inside the guard page.
        address: u64,
        /// What the guest tried to do.
        access: Access,
    },
    /// A host read or write touched memory that is not allocated.
    #[error("memory at {address:#x} is not allocated")]
    NotAllocated {
        /// First byte that is not allocated.
        address: u64,
    },
    /// A host access or a protection change touched a page that is reserved but
    /// not committed.
    #[error("memory at {address:#x} is not committed")]
    NotCommitted {
        /// First byte of the first page that is not committed.
        address: u64,
    },
    /// An address is not aligned as the operation requires.
    #[error("address {address:#x} is not aligned to {alignment:#x}")]
    Misaligned {
        /// The address given.
        address: u64,
        /// The alignment required.
        alignment: u64,
    },
    /// A size of 0 where the operation needs at least one byte.
    #[error("size 0 at {address:#x}")]
    ZeroSize {
        /// The address given.
        address: u64,
    },
    /// `address + size` overflows 64 bits.
    #[error("range {address:#x} + {size:#x} overflows")]
    RangeOverflow {
        /// The address given.
        address: u64,
        /// The size given.
        size: u64,
    },
    /// The range ends past [`USER_SPACE_END`](crate::USER_SPACE_END) or starts
    /// below [`MIN_ALLOCATION_ADDRESS`](crate::MIN_ALLOCATION_ADDRESS).
    #[error("range {address:#x} + {size:#x} is outside user space")]
    OutsideUserSpace {
        /// The address given.
        address: u64,
        /// The size given.
        size: u64,
    },
    /// A new allocation would overlap an existing one.
    #[error("range {address:#x} + {size:#x} overlaps the allocation at {existing:#x}")]
    ConflictingAddresses {
        /// Start of the requested range.
        address: u64,
        /// Size of the requested range.
        size: u64,
        /// Base of an allocation it overlaps.
        existing: u64,
    },
    /// A commit, decommit, protect or release range is not inside one
    /// allocation: it starts in free memory or crosses an allocation's end.
    #[error("range {address:#x} + {size:#x} is not inside one allocation")]
    NotInOneAllocation {
        /// Start of the rounded range.
        address: u64,
        /// Size of the rounded range.
        size: u64,
    },
    /// A whole-allocation release (size 0) at an address that is not an
    /// allocation's base.
    #[error("{address:#x} is not the base of its allocation (base {base:#x})")]
    NotAllocationBase {
        /// The address given.
        address: u64,
        /// The base of the allocation that contains it.
        base: u64,
    },
    /// A protection the engine does not accept (see [`Protection::is_valid`]).
    #[error("invalid protection {0:?}")]
    InvalidProtection(Protection),
    /// A region kind that cannot be used for this operation (for example
    /// `Free`, or `Mmio` without handlers).
    #[error("region kind {0:?} cannot be allocated this way")]
    InvalidKind(RegionKind),
    /// The operation is not allowed on MMIO memory (commit, decommit, protect,
    /// partial release).
    #[error("operation not allowed on the MMIO region at {base:#x}")]
    MmioRegion {
        /// Base of the MMIO region.
        base: u64,
    },
    /// An access to an MMIO region that has no handlers: one loaded from a
    /// snapshot file or a state buffer (which hold its layout, not its
    /// handlers) and not bound since
    /// ([`MemoryManager::bind_mmio`](crate::MemoryManager::bind_mmio), or a
    /// binder given to the loader). Nothing was read or written.
    #[error("no MMIO handlers are bound at {address:#x}")]
    MmioUnbound {
        /// First byte of the access inside the unbound region.
        address: u64,
    },
    /// [`MemoryManager::bind_mmio`](crate::MemoryManager::bind_mmio) found no
    /// unbound MMIO region based at `address` of `size` bytes (rounded up to
    /// pages): none there, another size, another kind, or already bound.
    #[error("no unbound MMIO region at {address:#x} of {size:#x} bytes")]
    NoUnboundMmio {
        /// The base given.
        address: u64,
        /// The size given.
        size: u64,
    },
    /// No section with this id (never created, or its handle was closed).
    #[error("no open section {id}")]
    UnknownSection {
        /// The section id.
        id: u64,
    },
    /// A [`SectionId`](crate::SectionId) handed out by another
    /// [`MemoryManager`](crate::MemoryManager): ids belong to their manager
    /// (as NT handles to their process), even when this one has a section
    /// with the same number. Nothing was changed.
    #[error("section {id} belongs to another memory manager")]
    ForeignSection {
        /// The section number the id carries.
        id: u64,
    },
    /// The address is not inside a view of a section.
    #[error("{address:#x} is not inside a section view")]
    NotAView {
        /// The address given.
        address: u64,
    },
    /// The operation is not allowed on a section view (decommit, release:
    /// unmap the view instead).
    #[error("operation not allowed on the section view at {base:#x}")]
    SectionView {
        /// Base of the view.
        base: u64,
    },
    /// A view range is not inside its section.
    #[error("view {offset:#x} + {size:#x} is outside a section of {section_size:#x} bytes")]
    ViewOutsideSection {
        /// Offset of the view in the section.
        offset: u64,
        /// Size of the view.
        size: u64,
        /// Size of the section.
        section_size: u64,
    },
    /// A protection asks for more access than a section or view allows.
    #[error("protection {requested} exceeds the maximum {maximum}")]
    ProtectionExceedsMaximum {
        /// What was asked for.
        requested: Protection,
        /// The most allowed.
        maximum: Protection,
    },
    /// The operation would commit more than the manager's commit limit
    /// ([`MemoryManager::set_commit_limit`](crate::MemoryManager::set_commit_limit)).
    /// Nothing was committed.
    #[error(
        "committing {requested:#x} more bytes (committed: {committed:#x}) exceeds the commit limit {limit:#x}"
    )]
    CommitLimitExceeded {
        /// Bytes the operation would newly commit.
        requested: u64,
        /// Bytes committed before it.
        committed: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// No free range of this size exists at or above the start address.
    #[error("no free range of {size:#x} bytes at or above {start:#x}")]
    NoFreeSpace {
        /// Size requested.
        size: u64,
        /// Lowest address searched (the default allocation address when the
        /// caller passed 0).
        start: u64,
    },
    /// A buffer given to `deserialize_memory_state` is not a valid state
    /// buffer; nothing was changed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A committed page of a lazily opened snapshot file could not be read:
    /// an I/O error, or a frame or page that fails its checksum or hash
    /// (`LazyFile::last_error` says which). Nothing was accessed; a retry
    /// reads the file again.
    #[error("page at {address:#x} could not be read from its snapshot file")]
    PageUnavailable {
        /// First byte of the access in that page.
        address: u64,
    },
}

/// Why a serialized state buffer (`serialize_memory_state`, and the layout
/// records inside snapshot files) was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The buffer was written by another format version.
    #[error("memory state format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The version in the buffer.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The buffer does not start with the state magic.
    #[error("not a vmsnap memory state buffer (bad magic)")]
    BadMagic,
    /// The buffer was written in the other mode (layout only vs. layout and
    /// contents) than the one asked for.
    #[error("memory state mode mismatch: buffer has contents = {buffer_has_contents}")]
    ModeMismatch {
        /// True when the buffer holds page contents.
        buffer_has_contents: bool,
    },
    /// The buffer is malformed: what is wrong with it.
    #[error("corrupt memory state: {0}")]
    Corrupt(&'static str),
}

/// The message of `e` with its sources, as a caller printing the chain
/// sees it (for the tests that each message names its values once).
#[cfg(test)]
pub(crate) fn message_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::message_chain as chain;
    use super::*;

    /// Every value an error carries, as its message shows it. The match is
    /// exhaustive, so a new variant cannot be added without saying what
    /// its message must show.
    fn values(e: &MemoryError) -> Vec<String> {
        use MemoryError::*;
        let hex = |v: u64| format!("{v:#x}");
        match e {
            AccessViolation { address, access } | GuardPageViolation { address, access } => {
                vec![hex(*address), access.to_string()]
            }
            NotAllocated { address }
            | NotCommitted { address }
            | ZeroSize { address }
            | NotAView { address } => {
                vec![hex(*address)]
            }
            PageUnavailable { address } | MmioUnbound { address } => vec![hex(*address)],
            NoUnboundMmio { address, size } => vec![hex(*address), hex(*size)],
            Misaligned { address, alignment } => vec![hex(*address), hex(*alignment)],
            RangeOverflow { address, size }
            | OutsideUserSpace { address, size }
            | NotInOneAllocation { address, size } => vec![hex(*address), hex(*size)],
            ConflictingAddresses { address, size, existing } => {
                vec![hex(*address), hex(*size), hex(*existing)]
            }
            NotAllocationBase { address, base } => vec![hex(*address), hex(*base)],
            InvalidProtection(p) => vec![format!("{p:?}")],
            InvalidKind(k) => vec![format!("{k:?}")],
            MmioRegion { base } | SectionView { base } => vec![hex(*base)],
            UnknownSection { id } | ForeignSection { id } => vec![id.to_string()],
            ViewOutsideSection { offset, size, section_size } => {
                vec![hex(*offset), hex(*size), hex(*section_size)]
            }
            ProtectionExceedsMaximum { requested, maximum } => {
                vec![requested.to_string(), maximum.to_string()]
            }
            CommitLimitExceeded { requested, committed, limit } => {
                vec![hex(*requested), hex(*committed), hex(*limit)]
            }
            NoFreeSpace { size, start } => vec![hex(*size), hex(*start)],
            State(s) => match s {
                StateError::UnsupportedVersion { found, supported } => {
                    vec![found.to_string(), supported.to_string()]
                }
                StateError::BadMagic => vec![],
                StateError::ModeMismatch { buffer_has_contents } => vec![buffer_has_contents.to_string()],
                StateError::Corrupt(what) => vec![what.to_string()],
            },
        }
    }

    #[test]
    fn each_display_names_its_values_once() {
        use MemoryError::*;
        // Values chosen so that none is a substring of another.
        let samples = [
            AccessViolation { address: 0x1_2345_0000, access: Access::Write },
            GuardPageViolation { address: 0x2_3456_0000, access: Access::Execute },
            NotAllocated { address: 0x3_4567_0000 },
            NotCommitted { address: 0x4_5678_0000 },
            Misaligned { address: 0x5_6789_0123, alignment: 0x10000 },
            ZeroSize { address: 0x6_789A_0000 },
            RangeOverflow { address: 0xFFFF_FFFF_FFFF_F000, size: 0x7_0000 },
            OutsideUserSpace { address: 0x8000_0000_0000, size: 0x8_1000 },
            ConflictingAddresses { address: 0x9_0000_0000, size: 0x9_2000, existing: 0x9_0003_0000 },
            NotInOneAllocation { address: 0xA_0000_0000, size: 0xA_4000 },
            NotAllocationBase { address: 0xB_0001_0000, base: 0xB_0000_0000 },
            InvalidProtection(Protection::WRITE),
            InvalidKind(RegionKind::Mmio),
            MmioRegion { base: 0x7FFE_0000 },
            UnknownSection { id: 4242 },
            ForeignSection { id: 5353 },
            NotAView { address: 0xC_0000_0000 },
            SectionView { base: 0xD_0000_0000 },
            ViewOutsideSection { offset: 0xE_0000, size: 0xE1_0000, section_size: 0xE20_0000 },
            ProtectionExceedsMaximum { requested: Protection::READ_WRITE, maximum: Protection::READ },
            CommitLimitExceeded { requested: 0xF_1000, committed: 0xF2_0000, limit: 0xF30_0000 },
            NoFreeSpace { size: 0x1_0000_0000_0000, start: 0x2_0000_0000 },
            PageUnavailable { address: 0x11_0000_0000 },
            MmioUnbound { address: 0x12_0000_0320 },
            NoUnboundMmio { address: 0x13_0000_0000, size: 0x13_1000 },
            State(StateError::UnsupportedVersion { found: 77, supported: 1 }),
            State(StateError::BadMagic),
            State(StateError::ModeMismatch { buffer_has_contents: true }),
            State(StateError::Corrupt("page runs overlap")),
        ];
        for e in &samples {
            let text = chain(e);
            assert!(!text.is_empty());
            for v in values(e) {
                assert_eq!(text.matches(&v).count(), 1, "{e:?} shows {v:?} not exactly once: {text}");
            }
        }
        // A wrapped state error shows its reason once, not twice.
        let wrapped = MemoryError::from(StateError::Corrupt("trailing bytes after the payload"));
        assert_eq!(chain(&wrapped).matches("trailing bytes").count(), 1);
    }
}
