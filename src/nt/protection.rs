//! `PAGE_*` values ↔ [`Protection`]: the validity rules of WINDOWS-SEMANTICS
//! §5 and the per-allocation cache modifiers of §9.
//!
//! ```text
//!   PAGE_* value (u32)
//!   ┌──────────────┬──────┬─────────┬──────────┬───────┬────────────────┐
//!   │ 31 ……… 11    │ 10   │ 9       │ 8        │ 7 … 0 │                │
//!   │ must be 0    │ WC   │ NOCACHE │ GUARD    │ base  │ exactly 1 bit  │
//!   └──────────────┴──────┴─────────┴──────────┴───────┴────────────────┘
//!   base → Protection:  01 ∅   02 R   04 RW   10 X   20 RX   40 RWX
//!                       08 WRITECOPY, 80 EXECUTE_WRITECOPY: views only (not expressible)
//!   GUARD → Protection::GUARD;  NOCACHE / WRITECOMBINE → the allocation's attributes
//! ```

use super::constants::*;
use super::status::NtStatus;
use crate::Protection;

/// The cache modifiers this face stores as allocation attributes (§9).
pub(crate) const CACHE_MODIFIERS: u32 = PAGE_NOCACHE | PAGE_WRITECOMBINE;

/// True when `protect` is a valid `PAGE_*` value in *some* context
/// (WINDOWS-SEMANTICS §5): exactly one base value in the low byte; no bit of
/// 0x800 or above \[R\]; `PAGE_GUARD` not with `PAGE_NOACCESS`, `PAGE_NOCACHE`
/// or `PAGE_WRITECOMBINE` \[D\]\[R\]; `PAGE_NOCACHE` not with `PAGE_NOACCESS` or
/// `PAGE_WRITECOMBINE` \[D\]\[R\]; `PAGE_WRITECOMBINE` not with `PAGE_NOACCESS`
/// \[D\]. `PAGE_WRITECOPY` and `PAGE_EXECUTE_WRITECOPY` pass here: they are
/// valid for section views, not for private memory (see
/// [`protection_from_page`]). Time: O(1).
///
/// ```
/// use vmsnap::nt::*;
/// assert!(is_valid_page_protection(PAGE_READWRITE | PAGE_GUARD));
/// assert!(is_valid_page_protection(PAGE_WRITECOPY));
/// assert!(!is_valid_page_protection(PAGE_READONLY | PAGE_READWRITE)); // two base values
/// assert!(!is_valid_page_protection(PAGE_NOACCESS | PAGE_GUARD));
/// assert!(!is_valid_page_protection(0));
/// ```
pub const fn is_valid_page_protection(protect: u32) -> bool {
    if protect >= 0x800 {
        return false;
    }
    let base = protect & 0xFF;
    if base.count_ones() != 1 {
        return false;
    }
    let guard = protect & PAGE_GUARD != 0;
    let nocache = protect & PAGE_NOCACHE != 0;
    let writecombine = protect & PAGE_WRITECOMBINE != 0;
    let noaccess = base == PAGE_NOACCESS;
    if guard && (noaccess || nocache || writecombine) {
        return false;
    }
    if nocache && (noaccess || writecombine) {
        return false;
    }
    if writecombine && noaccess {
        return false;
    }
    true
}

/// Converts a `PAGE_*` value for private memory into the engine's
/// [`Protection`] and its cache modifiers (`PAGE_NOCACHE` or
/// `PAGE_WRITECOMBINE`, else 0), which this face keeps as the allocation's
/// attributes (§9).
///
/// Fails with `STATUS_INVALID_PAGE_PROTECTION` for every value
/// [`is_valid_page_protection`] refuses, and for `PAGE_WRITECOPY` /
/// `PAGE_EXECUTE_WRITECOPY`, which private memory refuses \[W\]\[R\] (§4.2, §5)
/// and which [`Protection`] cannot express. `PAGE_EXECUTE` is
/// [`Protection::EXECUTE`] alone; `PAGE_GUARD` is [`Protection::GUARD`].
/// Time: O(1).
///
/// ```
/// use vmsnap::Protection;
/// use vmsnap::nt::*;
/// assert_eq!(protection_from_page(PAGE_EXECUTE), Ok((Protection::EXECUTE, 0)));
/// assert_eq!(
///     protection_from_page(PAGE_READWRITE | PAGE_NOCACHE),
///     Ok((Protection::READ_WRITE, PAGE_NOCACHE))
/// );
/// assert_eq!(protection_from_page(PAGE_WRITECOPY), Err(NtStatus::INVALID_PAGE_PROTECTION));
/// ```
pub const fn protection_from_page(protect: u32) -> Result<(Protection, u32), NtStatus> {
    if !is_valid_page_protection(protect) {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    let base = match protect & 0xFF {
        PAGE_NOACCESS => Protection::empty(),
        PAGE_READONLY => Protection::READ,
        PAGE_READWRITE => Protection::READ_WRITE,
        PAGE_EXECUTE => Protection::EXECUTE,
        PAGE_EXECUTE_READ => Protection::READ_EXECUTE,
        PAGE_EXECUTE_READWRITE => Protection::ALL_ACCESS,
        // PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY: not for private memory.
        _ => return Err(NtStatus::INVALID_PAGE_PROTECTION),
    };
    let protection = if protect & PAGE_GUARD != 0 { base.union(Protection::GUARD) } else { base };
    Ok((protection, protect & CACHE_MODIFIERS))
}

/// The `PAGE_*` value Windows reports for a page (or allocation) with
/// `protection` in an allocation whose cache modifiers are `modifiers`
/// (WINDOWS-SEMANTICS §8, §9): the base value, `| PAGE_GUARD` for a guard
/// page, `| PAGE_NOCACHE` or `| PAGE_WRITECOMBINE` from `modifiers` (other
/// bits of `modifiers` are ignored).
///
/// A cache modifier is reported only where Windows can express it: not on a
/// `PAGE_NOACCESS` page and not on a guard page (NT encodes a cache mode and
/// the guard bit in the same field, so `PAGE_GUARD | PAGE_NOCACHE` is not a
/// valid value; the modifier shows again once the guard page has fired).
/// This keeps the round trip exact: for every value `p` that
/// [`protection_from_page`] accepts, `page_from_protection` of its result is
/// `p`.
///
/// For protections the engine refuses ([`Protection::is_valid`] false) the
/// nearest value is returned: `WRITE` counts as `READ | WRITE`, and a lone
/// `GUARD` as `PAGE_NOACCESS | PAGE_GUARD`. Time: O(1).
///
/// ```
/// use vmsnap::Protection;
/// use vmsnap::nt::*;
/// assert_eq!(page_from_protection(Protection::EXECUTE, 0), PAGE_EXECUTE);
/// assert_eq!(page_from_protection(Protection::READ_WRITE, PAGE_NOCACHE), 0x204);
/// assert_eq!(page_from_protection(Protection::READ_WRITE | Protection::GUARD, 0), 0x104);
/// assert_eq!(page_from_protection(Protection::empty(), PAGE_NOCACHE), PAGE_NOACCESS);
/// ```
pub const fn page_from_protection(protection: Protection, modifiers: u32) -> u32 {
    let write = protection.contains(Protection::WRITE);
    let read = protection.contains(Protection::READ);
    let execute = protection.contains(Protection::EXECUTE);
    let base = match (write, read, execute) {
        (true, _, false) => PAGE_READWRITE,
        (true, _, true) => PAGE_EXECUTE_READWRITE,
        (false, true, false) => PAGE_READONLY,
        (false, true, true) => PAGE_EXECUTE_READ,
        (false, false, true) => PAGE_EXECUTE,
        (false, false, false) => PAGE_NOACCESS,
    };
    if protection.contains(Protection::GUARD) {
        return base | PAGE_GUARD;
    }
    if base == PAGE_NOACCESS {
        return base;
    }
    if modifiers & PAGE_NOCACHE != 0 {
        base | PAGE_NOCACHE
    } else if modifiers & PAGE_WRITECOMBINE != 0 {
        base | PAGE_WRITECOMBINE
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_converts_or_is_refused() {
        let mut valid = 0;
        for p in 0..0x1000u32 {
            match protection_from_page(p) {
                Ok((prot, modifiers)) => {
                    valid += 1;
                    assert!(prot.is_valid(), "{p:#x}");
                    assert_eq!(page_from_protection(prot, modifiers), p, "{p:#x}");
                }
                Err(s) => assert_eq!(s, NtStatus::INVALID_PAGE_PROTECTION),
            }
        }
        // 6 base values; 5 with access each take GUARD, NOCACHE or WRITECOMBINE.
        assert_eq!(valid, 6 + 5 * 3);
    }

    #[test]
    fn high_bits_are_refused() {
        assert!(protection_from_page(PAGE_READWRITE | PAGE_TARGETS_INVALID).is_err());
        assert!(protection_from_page(u32::MAX).is_err());
        assert!(protection_from_page(0x804).is_err());
    }
}
