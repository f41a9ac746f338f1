//! [`SessionError`]: every way a session operation can fail.

use unicorn_engine::uc_error;
use vmsnap::{MemoryError, RegionKind};

/// Why a session operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A memory error with Windows meaning: a layout operation vmsnap refused,
    /// or a guest access the CPU made that Windows would fault
    /// ([`MemoryError::AccessViolation`], [`MemoryError::GuardPageViolation`]
    /// with the faulting address and access kind). After a fault `rip` is the
    /// faulting instruction, so running again retries it.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A PE image [`Session::map_image`](crate::Session::map_image) refused.
    #[error(transparent)]
    Image(#[from] vmsnap::image::ImageError),
    /// Unicorn failed for a reason that is not a memory fault (an invalid
    /// instruction, an exception, a failed register access...).
    #[error("unicorn: {0:?}")]
    Cpu(uc_error),
    /// The address space holds an allocation the session cannot mirror into
    /// the CPU: MMIO regions and section views (views of one section share
    /// bytes, which per-allocation arenas cannot). The allocation stays
    /// unmapped in the CPU (any access to it faults).
    #[error("allocation at {base:#x} of kind {kind:?} cannot be mirrored into the CPU")]
    Unsupported {
        /// Base of the allocation.
        base: u64,
        /// Its kind.
        kind: RegionKind,
    },
    /// A [`Session::call`](crate::Session::call) stopped before the function
    /// returned to the trap (instruction budget used, or the CPU stopped).
    #[error("the call did not return (stopped at {rip:#x})")]
    CallDidNotReturn {
        /// Where the CPU stopped.
        rip: u64,
    },
    /// A call with more arguments than the helper supports.
    #[error("{0} arguments: at most 16 are supported")]
    TooManyArguments(usize),
    /// The CPU refused an access that vmsnap allows: the mirror is out of
    /// step (a bug in this crate).
    #[error("the CPU refused a {access:?} at {address:#x} that vmsnap allows")]
    Desync {
        /// The faulting address.
        address: u64,
        /// The access kind.
        access: vmsnap::Access,
    },
}

impl From<uc_error> for SessionError {
    fn from(e: uc_error) -> Self {
        SessionError::Cpu(e)
    }
}
