//! `PAGE_*` values ↔ [`Protection`]: the validity rules of docs/windows-semantics.md
//! §5 and the per-allocation cache modifiers of §9.
//!
//! ```text
//!   PAGE_* value (u32)
//!   ┌──────────────┬──────┬─────────┬──────────┬───────┬────────────────┐
//!   │ 31 ……… 11    │ 10   │ 9       │ 8        │ 7 … 0 │                │
//!   │ must be 0    │ WC   │ NOCACHE │ GUARD    │ base  │ exactly 1 bit  │
//!   └──────────────┴──────┴─────────┴──────────┴───────┴────────────────┘
//!   base → Protection:  01 ∅   02 R   04 RW   10 X   20 RX   40 RWX
//!                       08 R+WRITE_COPY   80 RX+WRITE_COPY   (section views only)
//!   GUARD → Protection::GUARD;  NOCACHE / WRITECOMBINE → the allocation's attributes
//! ```
//!
//! Two conversions read a `PAGE_*` value: [`protection_from_page`] for
//! private memory, which refuses the write-copy values \[W\]\[R\] (§4.2,
//! §5), and [`view_protection_from_page`] for section views, which accepts
//! them (§11). [`page_from_protection`] goes back for both.

use super::constants::*;
use super::status::NtStatus;
use crate::Protection;

/// The cache modifiers this face stores as allocation attributes (§9).
pub(crate) const CACHE_MODIFIERS: u32 = PAGE_NOCACHE | PAGE_WRITECOMBINE;

/// True when `protect` is a valid `PAGE_*` value in *some* context
/// (docs/windows-semantics.md §5): exactly one base value in the low byte; no bit of
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
/// `PAGE_EXECUTE_WRITECOPY`, which private memory refuses \[W\]\[R\] (§4.2,
/// §5); section views take them through [`view_protection_from_page`].
/// `PAGE_EXECUTE` is [`Protection::EXECUTE`] alone; `PAGE_GUARD` is
/// [`Protection::GUARD`]. Time: O(1).
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
    match view_protection_from_page(protect) {
        Ok((protection, _)) if protection.contains(Protection::WRITE_COPY) => {
            Err(NtStatus::INVALID_PAGE_PROTECTION)
        }
        result => result,
    }
}

/// Converts a `PAGE_*` value for a section view (docs/windows-semantics.md §5, §11):
/// as [`protection_from_page`], and also `PAGE_WRITECOPY` →
/// `READ | WRITE_COPY` and `PAGE_EXECUTE_WRITECOPY` →
/// `READ | EXECUTE | WRITE_COPY` (a guest write to such a page makes it
/// `READ | WRITE`, resp. `READ | WRITE | EXECUTE`, as Windows does \[W\]).
/// Fails with `STATUS_INVALID_PAGE_PROTECTION` for every value
/// [`is_valid_page_protection`] refuses. Whether the view allows the access
/// is the caller's question (a view's maximum is the protection it was
/// mapped with). Time: O(1).
///
/// ```
/// use vmsnap::Protection;
/// use vmsnap::nt::*;
/// let wc = Protection::READ | Protection::WRITE_COPY;
/// assert_eq!(view_protection_from_page(PAGE_WRITECOPY), Ok((wc, 0)));
/// assert_eq!(view_protection_from_page(PAGE_EXECUTE_WRITECOPY), Ok((wc | Protection::EXECUTE, 0)));
/// assert_eq!(page_from_protection(wc | Protection::GUARD, 0), PAGE_WRITECOPY | PAGE_GUARD);
/// assert_eq!(view_protection_from_page(0x0C), Err(NtStatus::INVALID_PAGE_PROTECTION));
/// ```
pub const fn view_protection_from_page(protect: u32) -> Result<(Protection, u32), NtStatus> {
    if !is_valid_page_protection(protect) {
        return Err(NtStatus::INVALID_PAGE_PROTECTION);
    }
    let write_copy = Protection::READ.union(Protection::WRITE_COPY);
    let base = match protect & 0xFF {
        PAGE_NOACCESS => Protection::empty(),
        PAGE_READONLY => Protection::READ,
        PAGE_READWRITE => Protection::READ_WRITE,
        PAGE_WRITECOPY => write_copy,
        PAGE_EXECUTE => Protection::EXECUTE,
        PAGE_EXECUTE_READ => Protection::READ_EXECUTE,
        PAGE_EXECUTE_READWRITE => Protection::ALL_ACCESS,
        // The only base value left: `is_valid_page_protection` checked that
        // the low byte has exactly one bit set.
        _ => write_copy.union(Protection::EXECUTE),
    };
    let protection = if protect & PAGE_GUARD != 0 { base.union(Protection::GUARD) } else { base };
    Ok((protection, protect & CACHE_MODIFIERS))
}

/// The `PAGE_*` value Windows reports for a page (or allocation) with
/// `protection` in an allocation whose cache modifiers are `modifiers`
/// (docs/windows-semantics.md §8, §9): the base value, `| PAGE_GUARD` for a guard
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
/// `WRITE_COPY` (without `WRITE`) reports `PAGE_WRITECOPY`, with `EXECUTE`
/// `PAGE_EXECUTE_WRITECOPY` (§11: write-copy view and image pages).
///
/// For protections the engine refuses ([`Protection::is_valid`] false) the
/// nearest value is returned: `WRITE` counts as `READ | WRITE` (also next to
/// `WRITE_COPY`), `WRITE_COPY` as `READ | WRITE_COPY`, and a lone `GUARD` as
/// `PAGE_NOACCESS | PAGE_GUARD`. Time: O(1).
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
    let write_copy = protection.contains(Protection::WRITE_COPY);
    let read = protection.contains(Protection::READ);
    let execute = protection.contains(Protection::EXECUTE);
    let base = match (write, read, execute) {
        (true, _, false) => PAGE_READWRITE,
        (true, _, true) => PAGE_EXECUTE_READWRITE,
        (false, _, false) if write_copy => PAGE_WRITECOPY,
        (false, _, true) if write_copy => PAGE_EXECUTE_WRITECOPY,
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
    fn every_view_value_converts_back_exactly() {
        let mut valid = 0;
        for p in 0..0x1000u32 {
            match view_protection_from_page(p) {
                Ok((prot, modifiers)) => {
                    valid += 1;
                    assert!(prot.is_valid(), "{p:#x}");
                    assert_eq!(page_from_protection(prot, modifiers), p, "{p:#x}");
                    let write_copy = prot.contains(Protection::WRITE_COPY);
                    assert_eq!(protection_from_page(p).is_err(), write_copy, "{p:#x}");
                }
                Err(s) => {
                    assert_eq!(s, NtStatus::INVALID_PAGE_PROTECTION);
                    assert!(protection_from_page(p).is_err());
                }
            }
        }
        // 8 base values; 7 with access each take GUARD, NOCACHE or WRITECOMBINE.
        assert_eq!(valid, 8 + 7 * 3);
    }

    #[test]
    fn refused_write_copy_combinations_report_the_nearest_value() {
        let wc = Protection::WRITE_COPY;
        assert_eq!(page_from_protection(wc, 0), PAGE_WRITECOPY);
        assert_eq!(page_from_protection(wc | Protection::EXECUTE, 0), PAGE_EXECUTE_WRITECOPY);
        assert_eq!(page_from_protection(wc | Protection::READ_WRITE, 0), PAGE_READWRITE);
        assert_eq!(page_from_protection(wc | Protection::ALL_ACCESS, 0), PAGE_EXECUTE_READWRITE);
    }

    #[test]
    fn high_bits_are_refused() {
        assert!(protection_from_page(PAGE_READWRITE | PAGE_TARGETS_INVALID).is_err());
        assert!(protection_from_page(u32::MAX).is_err());
        assert!(protection_from_page(0x804).is_err());
    }
}
