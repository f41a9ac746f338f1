//! Address arithmetic: pages, granules and checked ranges.
//!
//! Every user-supplied `(address, size)` pair flows through [`page_range`] or
//! [`checked_end`] before it touches the engine, so overflow near `u64::MAX` and
//! ranges past [`USER_SPACE_END`] become typed errors instead of wrapped values.

use crate::error::MemoryError;
use crate::{ALLOCATION_GRANULARITY, PAGE_SIZE, USER_SPACE_END};

/// log2 of [`PAGE_SIZE`].
pub(crate) const PAGE_SHIFT: u32 = 12;
/// Mask of the offset inside a page.
pub(crate) const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// Rounds `address` down to its page.
#[inline]
pub const fn page_down(address: u64) -> u64 {
    address & !PAGE_MASK
}

/// Rounds `address` up to a page boundary, or `None` on overflow.
#[inline]
pub const fn page_up(address: u64) -> Option<u64> {
    match address.checked_add(PAGE_MASK) {
        Some(v) => Some(v & !PAGE_MASK),
        None => None,
    }
}

/// Rounds `address` down to its 64 KiB allocation granule.
#[inline]
pub const fn granule_down(address: u64) -> u64 {
    address & !(ALLOCATION_GRANULARITY - 1)
}

/// Rounds `address` up to a 64 KiB allocation granule, or `None` on overflow.
#[inline]
pub const fn granule_up(address: u64) -> Option<u64> {
    match address.checked_add(ALLOCATION_GRANULARITY - 1) {
        Some(v) => Some(v & !(ALLOCATION_GRANULARITY - 1)),
        None => None,
    }
}

/// The page number (virtual page number) of `address`.
#[inline]
pub(crate) const fn vpn(address: u64) -> u64 {
    address >> PAGE_SHIFT
}

/// `address + size`, refusing size 0, overflow and ends past [`USER_SPACE_END`].
pub(crate) fn checked_end(address: u64, size: u64) -> Result<u64, MemoryError> {
    if size == 0 {
        return Err(MemoryError::ZeroSize { address });
    }
    let end = address.checked_add(size).ok_or(MemoryError::RangeOverflow { address, size })?;
    if end > USER_SPACE_END {
        return Err(MemoryError::OutsideUserSpace { address, size });
    }
    Ok(end)
}

/// The pages touched by `[address, address + size)`, as Windows rounds them:
/// `page_down(address)` to `page_up(address + size)`. Returns `(start, end)`.
pub(crate) fn page_range(address: u64, size: u64) -> Result<(u64, u64), MemoryError> {
    let end = checked_end(address, size)?;
    // `end <= USER_SPACE_END`, which is page aligned, so rounding up cannot overflow.
    let end = page_up(end).ok_or(MemoryError::RangeOverflow { address, size })?;
    Ok((page_down(address), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(page_down(0x1fff), 0x1000);
        assert_eq!(page_up(0x1001), Some(0x2000));
        assert_eq!(page_up(0x2000), Some(0x2000));
        assert_eq!(page_up(u64::MAX), None);
        assert_eq!(granule_down(0x1_2345), 0x1_0000);
        assert_eq!(granule_up(0x1_0001), Some(0x2_0000));
        assert_eq!(granule_up(u64::MAX - 5), None);
    }

    #[test]
    fn page_range_rounds_like_windows() {
        // A 2-byte range that straddles a page boundary touches two pages.
        assert_eq!(page_range(0x1fff, 2), Ok((0x1000, 0x3000)));
        assert_eq!(page_range(0x1000, 1), Ok((0x1000, 0x2000)));
    }

    #[test]
    fn page_range_refuses_bad_input() {
        assert_eq!(page_range(0x1000, 0), Err(MemoryError::ZeroSize { address: 0x1000 }));
        assert_eq!(
            page_range(u64::MAX - 1, 4),
            Err(MemoryError::RangeOverflow { address: u64::MAX - 1, size: 4 })
        );
        assert_eq!(
            page_range(USER_SPACE_END - 0x1000, 0x2000),
            Err(MemoryError::OutsideUserSpace { address: USER_SPACE_END - 0x1000, size: 0x2000 })
        );
    }
}
