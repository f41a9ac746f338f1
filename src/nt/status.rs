//! [`NtStatus`]: the NTSTATUS every `nt_*` call returns, its symbolic names
//! (docs/windows-semantics.md §1.4) and the NTSTATUS → Win32 error mapping of
//! `RtlNtStatusToDosError` (§1.6).

use std::fmt;

use crate::MemoryError;

/// An NTSTATUS value, exactly as Windows defines it (`u32`).
///
/// The top two bits give the severity: `0b00` success, `0b01` information,
/// `0b10` warning, `0b11` error. [`is_success`](NtStatus::is_success) is
/// `NT_SUCCESS`: success or information.
///
/// `Display` prints the symbolic name and the value
/// (`STATUS_ACCESS_VIOLATION (0xC0000005)`), or only the value for a status
/// this crate does not name. `Debug` prints the same inside `NtStatus(..)`.
///
/// ```
/// use vmsnap::nt::NtStatus;
/// assert!(NtStatus::SUCCESS.is_success());
/// assert!(!NtStatus::CONFLICTING_ADDRESSES.is_success());
/// assert_eq!(NtStatus::CONFLICTING_ADDRESSES.to_string(), "STATUS_CONFLICTING_ADDRESSES (0xC0000018)");
/// assert_eq!(NtStatus(0xC0000018), NtStatus::CONFLICTING_ADDRESSES);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NtStatus(pub u32);

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl NtStatus {
            $($(#[$doc])* pub const $name: NtStatus = NtStatus($value);)*
        }

        /// Every named status with its `STATUS_*` name.
        const NAMES: &[(NtStatus, &str)] = &[$((NtStatus::$name, concat!("STATUS_", stringify!($name))),)*];
    };
}

statuses! {
    /// `STATUS_SUCCESS`: the call did what was asked.
    SUCCESS = 0x0000_0000;
    /// `STATUS_WORKING_SET_LIMIT_RANGE` (information, §1.6).
    WORKING_SET_LIMIT_RANGE = 0x4000_0002;
    /// `STATUS_IMAGE_NOT_AT_BASE` (information): an image was mapped, relocated.
    IMAGE_NOT_AT_BASE = 0x4000_0003;
    /// `STATUS_GUARD_PAGE_VIOLATION` (warning): the exception of a guard page's
    /// first touch (§9).
    GUARD_PAGE_VIOLATION = 0x8000_0001;
    /// `STATUS_INFO_LENGTH_MISMATCH`: a query buffer is too small (§8).
    INFO_LENGTH_MISMATCH = 0xC000_0004;
    /// `STATUS_ACCESS_VIOLATION`: a forbidden access (§10), or a NULL output pointer.
    ACCESS_VIOLATION = 0xC000_0005;
    /// `STATUS_IN_PAGE_ERROR`: a page could not be read in from its backing
    /// file (here: a lazily opened snapshot file).
    IN_PAGE_ERROR = 0xC000_0006;
    /// `STATUS_INVALID_HANDLE`.
    INVALID_HANDLE = 0xC000_0008;
    /// `STATUS_INVALID_PARAMETER`.
    INVALID_PARAMETER = 0xC000_000D;
    /// `STATUS_NO_MEMORY`: no free range fits (§2).
    NO_MEMORY = 0xC000_0017;
    /// `STATUS_CONFLICTING_ADDRESSES`: a range overlaps an allocation, or is
    /// not inside one (§4.2, §4.3, §7).
    CONFLICTING_ADDRESSES = 0xC000_0018;
    /// `STATUS_NOT_MAPPED_VIEW`: the address is not a mapped view.
    NOT_MAPPED_VIEW = 0xC000_0019;
    /// `STATUS_UNABLE_TO_FREE_VM`: a free range runs past its allocation (§6.1).
    UNABLE_TO_FREE_VM = 0xC000_001A;
    /// `STATUS_UNABLE_TO_DELETE_SECTION`: freeing or decommitting a section view (§6.1).
    UNABLE_TO_DELETE_SECTION = 0xC000_001B;
    /// `STATUS_INVALID_VIEW_SIZE`: a view larger than its section (§11).
    INVALID_VIEW_SIZE = 0xC000_001F;
    /// `STATUS_ALREADY_COMMITTED`: committing in a file-backed view (§4.3).
    ALREADY_COMMITTED = 0xC000_0021;
    /// `STATUS_ACCESS_DENIED`.
    ACCESS_DENIED = 0xC000_0022;
    /// `STATUS_UNABLE_TO_DECOMMIT_VM` (§1.6).
    UNABLE_TO_DECOMMIT_VM = 0xC000_002C;
    /// `STATUS_NOT_COMMITTED`: a protection change over uncommitted pages (§7).
    NOT_COMMITTED = 0xC000_002D;
    /// `STATUS_INVALID_PAGE_PROTECTION`: a `PAGE_*` value or combination that
    /// is not valid here (§5).
    INVALID_PAGE_PROTECTION = 0xC000_0045;
    /// `STATUS_SECTION_PROTECTION`: more access than a section view allows (§11).
    SECTION_PROTECTION = 0xC000_004E;
    /// `STATUS_PRIVILEGE_NOT_HELD`: the caller lacks a privilege (for example
    /// the lock-memory privilege `MEM_LARGE_PAGES` needs).
    PRIVILEGE_NOT_HELD = 0xC000_0061;
    /// `STATUS_FREE_VM_NOT_AT_BASE`: a whole-allocation free (size 0) away
    /// from the allocation's base (§6.1).
    FREE_VM_NOT_AT_BASE = 0xC000_009F;
    /// `STATUS_MEMORY_NOT_ALLOCATED`: freeing where nothing is allocated (§6.1).
    MEMORY_NOT_ALLOCATED = 0xC000_00A0;
    /// `STATUS_NOT_SUPPORTED`: a request this face does not model.
    NOT_SUPPORTED = 0xC000_00BB;
    /// `STATUS_INVALID_PARAMETER_1`.
    INVALID_PARAMETER_1 = 0xC000_00EF;
    /// `STATUS_INVALID_PARAMETER_2`: usually a bad base address.
    INVALID_PARAMETER_2 = 0xC000_00F0;
    /// `STATUS_INVALID_PARAMETER_3`: for `NtAllocateVirtualMemory`, a bad `zero_bits` (§4.1).
    INVALID_PARAMETER_3 = 0xC000_00F1;
    /// `STATUS_INVALID_PARAMETER_4`: for `NtAllocateVirtualMemory` a bad size,
    /// for `NtFreeVirtualMemory` a bad free type.
    INVALID_PARAMETER_4 = 0xC000_00F2;
    /// `STATUS_INVALID_PARAMETER_5`: for `NtAllocateVirtualMemory`, a bad allocation type (§4.1).
    INVALID_PARAMETER_5 = 0xC000_00F3;
    /// `STATUS_INVALID_PARAMETER_6`.
    INVALID_PARAMETER_6 = 0xC000_00F4;
    /// `STATUS_INVALID_PARAMETER_7`.
    INVALID_PARAMETER_7 = 0xC000_00F5;
    /// `STATUS_INVALID_PARAMETER_8`.
    INVALID_PARAMETER_8 = 0xC000_00F6;
    /// `STATUS_INVALID_PARAMETER_9`.
    INVALID_PARAMETER_9 = 0xC000_00F7;
    /// `STATUS_INVALID_PARAMETER_10`.
    INVALID_PARAMETER_10 = 0xC000_00F8;
    /// `STATUS_INVALID_PARAMETER_11`.
    INVALID_PARAMETER_11 = 0xC000_00F9;
    /// `STATUS_INVALID_PARAMETER_12`.
    INVALID_PARAMETER_12 = 0xC000_00FA;
    /// `STATUS_COMMITMENT_LIMIT`: a commit past the manager's commit limit
    /// ([`MemoryManager::set_commit_limit`](crate::MemoryManager::set_commit_limit)).
    COMMITMENT_LIMIT = 0xC000_012D;
    /// `STATUS_INVALID_ADDRESS`: a region query at a free address (§8).
    INVALID_ADDRESS = 0xC000_0141;
    /// `STATUS_MAPPED_ALIGNMENT`: a view base or offset that is not 64 KiB aligned (§11).
    MAPPED_ALIGNMENT = 0xC000_0220;
}

impl NtStatus {
    /// `NT_SUCCESS`: true for success and information statuses (the value,
    /// read as `i32`, is not negative). Time: O(1).
    pub const fn is_success(self) -> bool {
        (self.0 as i32) >= 0
    }

    /// The `STATUS_*` name of a status this crate defines, else `None`.
    /// Time: O(named statuses), a few dozen comparisons.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010X})", self.0),
            None => write!(f, "NTSTATUS {:#010X}", self.0),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtStatus({self})")
    }
}

// ------------------------------------------------------------- Win32 errors

/// Win32 `ERROR_SUCCESS` (`NO_ERROR`).
pub const ERROR_SUCCESS: u32 = 0;
/// Win32 `ERROR_ACCESS_DENIED` (§1.5).
pub const ERROR_ACCESS_DENIED: u32 = 5;
/// Win32 `ERROR_INVALID_HANDLE` (§1.5).
pub const ERROR_INVALID_HANDLE: u32 = 6;
/// Win32 `ERROR_NOT_ENOUGH_MEMORY` (§1.5).
pub const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;
/// Win32 `ERROR_BAD_LENGTH` (§1.5).
pub const ERROR_BAD_LENGTH: u32 = 24;
/// Win32 `ERROR_NOT_SUPPORTED`.
pub const ERROR_NOT_SUPPORTED: u32 = 50;
/// Win32 `ERROR_INVALID_PARAMETER` (§1.5).
pub const ERROR_INVALID_PARAMETER: u32 = 87;
/// Win32 `ERROR_PARTIAL_COPY` (§1.5).
pub const ERROR_PARTIAL_COPY: u32 = 299;
/// Win32 `ERROR_MR_MID_NOT_FOUND`: what `RtlNtStatusToDosError` returns for
/// a status it has no mapping for.
pub const ERROR_MR_MID_NOT_FOUND: u32 = 317;
/// Win32 `ERROR_INVALID_ADDRESS` (§1.5).
pub const ERROR_INVALID_ADDRESS: u32 = 487;
/// Win32 `ERROR_IMAGE_NOT_AT_BASE`.
pub const ERROR_IMAGE_NOT_AT_BASE: u32 = 700;
/// Win32 `ERROR_NOACCESS` (§1.5).
pub const ERROR_NOACCESS: u32 = 998;
/// Win32 `ERROR_SWAPERROR`: what `STATUS_IN_PAGE_ERROR` becomes.
pub const ERROR_SWAPERROR: u32 = 999;
/// Win32 `ERROR_MAPPED_ALIGNMENT`.
pub const ERROR_MAPPED_ALIGNMENT: u32 = 1132;
/// Win32 `ERROR_PRIVILEGE_NOT_HELD`.
pub const ERROR_PRIVILEGE_NOT_HELD: u32 = 1314;
/// Win32 `ERROR_COMMITMENT_LIMIT` (§1.5).
pub const ERROR_COMMITMENT_LIMIT: u32 = 1455;

/// `RtlNtStatusToDosError` for the statuses of this face: the Win32 error the
/// `Virtual*` wrappers put in `GetLastError()` when the Nt call fails
/// (docs/windows-semantics.md §1.6, \[W\] Wine `run_error_tests`).
///
/// | NTSTATUS | Win32 |
/// |---|---|
/// | SUCCESS | 0 |
/// | CONFLICTING_ADDRESSES, NOT_MAPPED_VIEW, NOT_COMMITTED, FREE_VM_NOT_AT_BASE, MEMORY_NOT_ALLOCATED, UNABLE_TO_DECOMMIT_VM, INVALID_ADDRESS | `ERROR_INVALID_ADDRESS` (487) |
/// | INVALID_PARAMETER, INVALID_PARAMETER_1..12, INVALID_PAGE_PROTECTION, SECTION_PROTECTION, UNABLE_TO_FREE_VM, UNABLE_TO_DELETE_SECTION, WORKING_SET_LIMIT_RANGE | `ERROR_INVALID_PARAMETER` (87) |
/// | ALREADY_COMMITTED, INVALID_VIEW_SIZE, ACCESS_DENIED | `ERROR_ACCESS_DENIED` (5) |
/// | ACCESS_VIOLATION | `ERROR_NOACCESS` (998) |
/// | IN_PAGE_ERROR | `ERROR_SWAPERROR` (999) |
/// | NO_MEMORY | `ERROR_NOT_ENOUGH_MEMORY` (8) |
/// | COMMITMENT_LIMIT | `ERROR_COMMITMENT_LIMIT` (1455) |
/// | INFO_LENGTH_MISMATCH | `ERROR_BAD_LENGTH` (24) |
/// | INVALID_HANDLE | `ERROR_INVALID_HANDLE` (6) |
/// | PRIVILEGE_NOT_HELD | `ERROR_PRIVILEGE_NOT_HELD` (1314) |
/// | NOT_SUPPORTED | `ERROR_NOT_SUPPORTED` (50) |
/// | MAPPED_ALIGNMENT | `ERROR_MAPPED_ALIGNMENT` (1132) |
/// | IMAGE_NOT_AT_BASE | `ERROR_IMAGE_NOT_AT_BASE` (700) |
/// | GUARD_PAGE_VIOLATION | itself (0x80000001), as Windows maps exception codes \[I\] |
/// | anything else | `ERROR_MR_MID_NOT_FOUND` (317) |
///
/// Time: O(1).
///
/// ```
/// use vmsnap::nt::{NtStatus, nt_status_to_dos_error, ERROR_INVALID_ADDRESS};
/// assert_eq!(nt_status_to_dos_error(NtStatus::CONFLICTING_ADDRESSES), ERROR_INVALID_ADDRESS);
/// ```
pub fn nt_status_to_dos_error(status: NtStatus) -> u32 {
    match status {
        NtStatus::SUCCESS => ERROR_SUCCESS,
        NtStatus::CONFLICTING_ADDRESSES
        | NtStatus::NOT_MAPPED_VIEW
        | NtStatus::NOT_COMMITTED
        | NtStatus::FREE_VM_NOT_AT_BASE
        | NtStatus::MEMORY_NOT_ALLOCATED
        | NtStatus::UNABLE_TO_DECOMMIT_VM
        | NtStatus::INVALID_ADDRESS => ERROR_INVALID_ADDRESS,
        NtStatus::INVALID_PARAMETER
        | NtStatus::INVALID_PAGE_PROTECTION
        | NtStatus::SECTION_PROTECTION
        | NtStatus::UNABLE_TO_FREE_VM
        | NtStatus::UNABLE_TO_DELETE_SECTION
        | NtStatus::WORKING_SET_LIMIT_RANGE => ERROR_INVALID_PARAMETER,
        NtStatus(s) if (NtStatus::INVALID_PARAMETER_1.0..=NtStatus::INVALID_PARAMETER_12.0).contains(&s) => {
            ERROR_INVALID_PARAMETER
        }
        NtStatus::ALREADY_COMMITTED | NtStatus::INVALID_VIEW_SIZE | NtStatus::ACCESS_DENIED => {
            ERROR_ACCESS_DENIED
        }
        NtStatus::ACCESS_VIOLATION => ERROR_NOACCESS,
        NtStatus::IN_PAGE_ERROR => ERROR_SWAPERROR,
        NtStatus::NO_MEMORY => ERROR_NOT_ENOUGH_MEMORY,
        NtStatus::COMMITMENT_LIMIT => ERROR_COMMITMENT_LIMIT,
        NtStatus::INFO_LENGTH_MISMATCH => ERROR_BAD_LENGTH,
        NtStatus::INVALID_HANDLE => ERROR_INVALID_HANDLE,
        NtStatus::PRIVILEGE_NOT_HELD => ERROR_PRIVILEGE_NOT_HELD,
        NtStatus::NOT_SUPPORTED => ERROR_NOT_SUPPORTED,
        NtStatus::MAPPED_ALIGNMENT => ERROR_MAPPED_ALIGNMENT,
        NtStatus::IMAGE_NOT_AT_BASE => ERROR_IMAGE_NOT_AT_BASE,
        NtStatus::GUARD_PAGE_VIOLATION => NtStatus::GUARD_PAGE_VIOLATION.0,
        _ => ERROR_MR_MID_NOT_FOUND,
    }
}

/// The exception code a refused guest access raises, for an emulator that
/// turns [`MemoryError`]s of `guest_read` / `guest_write` / `guest_fetch`
/// into Windows exceptions: `AccessViolation` → `STATUS_ACCESS_VIOLATION`
/// (§10), `GuardPageViolation` → `STATUS_GUARD_PAGE_VIOLATION` (§9),
/// `PageUnavailable` (a lazily loaded page that cannot be read) →
/// `STATUS_IN_PAGE_ERROR`, as Windows raises for a failed page-in; `None`
/// for errors that are not guest faults. The exception record's parameters
/// (access kind, address) are in the error's fields. Time: O(1).
///
/// ```
/// use vmsnap::{Access, MemoryError};
/// use vmsnap::nt::{NtStatus, exception_code};
/// let fault = MemoryError::AccessViolation { address: 0x1000, access: Access::Write };
/// assert_eq!(exception_code(&fault), Some(NtStatus::ACCESS_VIOLATION));
/// ```
pub fn exception_code(error: &MemoryError) -> Option<NtStatus> {
    match error {
        MemoryError::AccessViolation { .. } => Some(NtStatus::ACCESS_VIOLATION),
        MemoryError::GuardPageViolation { .. } => Some(NtStatus::GUARD_PAGE_VIOLATION),
        MemoryError::PageUnavailable { .. } => Some(NtStatus::IN_PAGE_ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_displayed() {
        for (i, (s, n)) in NAMES.iter().enumerate() {
            assert!(NAMES[i + 1..].iter().all(|(t, m)| t != s && m != n), "{n} listed twice");
            assert_eq!(s.name(), Some(*n));
            assert!(s.to_string().starts_with(n));
        }
        assert_eq!(NtStatus(0xC000_1234).to_string(), "NTSTATUS 0xC0001234");
        assert_eq!(format!("{:?}", NtStatus::SUCCESS), "NtStatus(STATUS_SUCCESS (0x00000000))");
    }

    #[test]
    fn severity() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::IMAGE_NOT_AT_BASE.is_success());
        assert!(!NtStatus::GUARD_PAGE_VIOLATION.is_success());
        assert!(!NtStatus::ACCESS_VIOLATION.is_success());
    }
}
