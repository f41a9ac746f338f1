//! `serialize_memory_state` / `deserialize_memory_state`: a manager's whole
//! state in one buffer.
//!
//! ```text
//!  offset  size  field
//!  0       8     magic  "VMSNAPMS"
//!  8       4     format version, u32 little-endian (STATE_FORMAT_VERSION)
//!  12      ..    MessagePack (rmp-serde) encoding of `StateRecord`
//! ```
//!
//! `StateRecord` is a MessagePack array (struct fields in declaration order):
//! `[contents, default_allocation_address, layout_version, allocations, runs,
//! pages]`, where `allocations` are `[base, length, initial_protection_bits,
//! kind, attributes]` in ascending order, `runs` are `[first_page_number, page_count,
//! state_byte]` (maximal runs of committed pages with the same state), and
//! `pages` are `[page_number, bytes(4096)]` for every committed page whose
//! bytes are not all zero (contents mode only). The encoding is deterministic,
//! so a round trip reproduces the buffer byte for byte.

use serde::{Deserialize, Serialize};

use crate::address::vpn;
use crate::error::MemoryError;
use crate::live::LivePages;
use crate::manager::MemoryManager;
use crate::page_table::{FrozenPage, PAGE, PageTable, RangeOp, VPN_LIMIT};
use crate::protection::{Protection, RegionKind, meta};
use crate::region_map::{Allocation, RegionMap};
use crate::{MIN_ALLOCATION_ADDRESS, PAGE_SIZE, USER_SPACE_END};

/// The format version of [`MemoryManager::serialize_memory_state`] buffers.
/// A buffer with another version is refused with
/// [`MemoryError::UnsupportedStateVersion`].
pub const STATE_FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"VMSNAPMS";
/// Buffers may not carry a layout version above 2^63, so the counter can
/// keep growing for the life of any manager without overflowing.
const MAX_LAYOUT_VERSION: u64 = 1 << 63;
const HEADER: usize = 12;

#[derive(Serialize, Deserialize)]
struct StateRecord {
    contents: bool,
    default_allocation_address: u64,
    layout_version: u64,
    allocations: Vec<AllocationRecord>,
    runs: Vec<RunRecord>,
    pages: Vec<PageRecord>,
}

#[derive(Serialize, Deserialize)]
struct AllocationRecord(u64, u64, u8, u8, u32);

#[derive(Serialize, Deserialize)]
struct RunRecord(u64, u64, u8);

#[derive(Serialize, Deserialize)]
struct PageRecord(u64, #[serde(with = "serde_bytes")] Vec<u8>);

const KINDS: [RegionKind; 6] = [
    RegionKind::Free,
    RegionKind::Private,
    RegionKind::FileView,
    RegionKind::PagefileView,
    RegionKind::Image,
    RegionKind::Mmio,
];

fn kind_code(kind: RegionKind) -> u8 {
    // Invariant: KINDS lists every variant.
    KINDS.iter().position(|&k| k == kind).expect("every kind is listed") as u8
}

fn corrupt(what: &'static str) -> MemoryError {
    MemoryError::CorruptState(what)
}

impl MemoryManager {
    /// Appends the manager's state to `buffer`. `is_snapshot == true`: the
    /// layout only (allocations, page states, default allocation address,
    /// layout version); `false`: the layout and the bytes of every committed
    /// page. MMIO regions are recorded as layout (no bytes). The encoding is
    /// deterministic. Does not change the layout version.
    ///
    /// Time: O(allocations + committed pages) (contents mode also copies every
    /// non-zero page once).
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, Protection, RegionKind};
    /// let mut mm = MemoryManager::new();
    /// mm.allocate_memory_at(0x10000, 0x1000, Protection::READ_WRITE, false, RegionKind::Private)?;
    /// mm.write_memory(0x10000, b"state")?;
    /// let mut buffer = Vec::new();
    /// mm.serialize_memory_state(&mut buffer, false);    // layout and contents
    ///
    /// let mut copy = MemoryManager::new();
    /// copy.deserialize_memory_state(&buffer, false)?;
    /// let mut again = Vec::new();
    /// copy.serialize_memory_state(&mut again, false);
    /// assert_eq!(buffer, again);                         // byte-identical round trip
    /// # Ok::<(), vmsnap::MemoryError>(())
    /// ```
    pub fn serialize_memory_state(&self, buffer: &mut Vec<u8>, is_snapshot: bool) {
        let table = self.pages.table();
        let mut runs: Vec<RunRecord> = Vec::new();
        let mut pages = Vec::new();
        table.for_each(|page, m, _| {
            match runs.last_mut() {
                Some(RunRecord(first, count, rm)) if *rm == m && *first + *count == page => *count += 1,
                _ => runs.push(RunRecord(page, 1, m)),
            }
            if !is_snapshot && m & meta::MMIO == 0 {
                let bytes = self.pages.resolve(page).bytes;
                if bytes.iter().any(|&b| b != 0) {
                    pages.push(PageRecord(page, bytes.to_vec()));
                }
            }
        });
        let record = StateRecord {
            contents: !is_snapshot,
            default_allocation_address: self.default_allocation_address,
            layout_version: self.layout_version,
            allocations: self
                .regions
                .iter()
                .map(|a| {
                    AllocationRecord(a.base, a.length, a.initial.bits(), kind_code(a.kind), a.attributes)
                })
                .collect(),
            runs,
            pages,
        };
        buffer.extend_from_slice(MAGIC);
        buffer.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        // Invariant: writing plain integers, bools and byte strings into a
        // Vec cannot fail.
        rmp_serde::encode::write(buffer, &record).expect("encoding into a Vec cannot fail");
    }

    /// Replaces the whole state of the manager with the one in `buffer`
    /// (default allocation address included), or fails and changes nothing.
    ///
    /// `is_snapshot` must match the mode the buffer was written in
    /// ([`MemoryError::StateModeMismatch`] otherwise). In layout mode the
    /// bytes are not in the buffer: a page committed both now and in the
    /// buffer keeps its current bytes, every other committed page reads zeros.
    /// MMIO regions are left out of the restored state (their handlers cannot
    /// be serialized): their owners register them again.
    ///
    /// The layout version becomes the buffer's, or one more than the current
    /// one if that is greater, so it never repeats.
    ///
    /// Every malformed buffer (bad magic, other version, truncated, bad
    /// MessagePack, overlapping or misaligned allocations, states outside
    /// allocations, invalid protections, pages of the wrong size) gives an
    /// error. Time: O(buffer size + committed pages).
    pub fn deserialize_memory_state(&mut self, buffer: &[u8], is_snapshot: bool) -> Result<(), MemoryError> {
        if buffer.len() < HEADER || &buffer[..8] != MAGIC {
            return Err(MemoryError::BadStateMagic);
        }
        let version = u32::from_le_bytes(buffer[8..12].try_into().expect("4 bytes"));
        if version != STATE_FORMAT_VERSION {
            return Err(MemoryError::UnsupportedStateVersion {
                found: version,
                supported: STATE_FORMAT_VERSION,
            });
        }
        let mut payload = &buffer[HEADER..];
        let record: StateRecord = rmp_serde::decode::from_read(&mut payload)
            .map_err(|_| corrupt("MessagePack payload does not decode"))?;
        if !payload.is_empty() {
            return Err(corrupt("trailing bytes after the payload"));
        }
        if record.layout_version > MAX_LAYOUT_VERSION {
            return Err(corrupt("layout version out of range"));
        }
        if record.contents == is_snapshot {
            return Err(MemoryError::StateModeMismatch { buffer_has_contents: record.contents });
        }
        let (regions, mut table, committed_pages) = build(&record)?;

        if is_snapshot {
            // Keep the current bytes of pages committed before and after.
            let current = self.pages.freeze();
            current.for_each(|page, _, frozen| {
                if let Some(frozen) = frozen {
                    let new = table.get(page).meta;
                    if new & meta::COMMITTED != 0 && new & meta::MMIO == 0 {
                        table.set_page(page, Some(frozen.clone()));
                    }
                }
            });
        }
        self.pages = LivePages::new(table);
        self.regions = regions;
        self.committed_pages = committed_pages;
        self.default_allocation_address = record.default_allocation_address;
        self.layout_version = record.layout_version.max(self.layout_version + 1);
        Ok(())
    }
}

/// Validates a decoded record and builds its region map and page table.
fn build(record: &StateRecord) -> Result<(RegionMap, PageTable, u64), MemoryError> {
    let mut regions = RegionMap::default();
    let mut mmio: Vec<(u64, u64)> = Vec::new();
    let mut previous_end = 0u64;
    for &AllocationRecord(base, length, initial, kind, attributes) in &record.allocations {
        let end = base.checked_add(length).ok_or(corrupt("allocation range overflows"))?;
        if base % PAGE_SIZE != 0 || length % PAGE_SIZE != 0 || length == 0 {
            return Err(corrupt("allocation not page aligned"));
        }
        if base < MIN_ALLOCATION_ADDRESS || end > USER_SPACE_END {
            return Err(corrupt("allocation outside user space"));
        }
        if base < previous_end {
            return Err(corrupt("allocations overlap or are out of order"));
        }
        previous_end = end;
        let initial = Protection::from_bits_retain(initial);
        if !initial.is_valid() {
            return Err(corrupt("invalid allocation protection"));
        }
        let kind = *KINDS.get(kind as usize).ok_or(corrupt("unknown region kind"))?;
        match kind {
            RegionKind::Free => return Err(corrupt("allocation of kind Free")),
            RegionKind::Mmio => mmio.push((base, end)),
            _ => regions.insert(Allocation { base, length, initial, kind, attributes, mmio: None }),
        }
    }

    let mut table = PageTable::default();
    let mut committed = 0u64;
    let mut previous_end = 0u64;
    for &RunRecord(first, count, m) in &record.runs {
        let end = first.checked_add(count).ok_or(corrupt("page run overflows"))?;
        if count == 0 || first < previous_end || end > VPN_LIMIT {
            return Err(corrupt("page runs overlap, are empty or out of order"));
        }
        previous_end = end;
        if m & meta::COMMITTED == 0 || !meta::is_valid(m) {
            return Err(corrupt("invalid page state"));
        }
        let (lo, hi) = (first * PAGE_SIZE, end * PAGE_SIZE);
        let in_mmio = mmio.iter().any(|&(b, e)| b <= lo && hi <= e);
        if m & meta::MMIO != 0 {
            if !in_mmio {
                return Err(corrupt("MMIO page state outside an MMIO region"));
            }
            continue; // MMIO regions are left out (see deserialize_memory_state).
        }
        match regions.containing(lo) {
            Some(a) if hi <= a.end() => {}
            _ => return Err(corrupt("committed pages outside an allocation")),
        }
        committed += count;
        table.update(first, end, RangeOp::Set(m));
    }
    // Every MMIO allocation must be wholly committed as MMIO.
    for &(b, e) in &mmio {
        let covered: u64 = record
            .runs
            .iter()
            .filter(|r| r.2 & meta::MMIO != 0 && b <= r.0 * PAGE_SIZE && (r.0 + r.1) * PAGE_SIZE <= e)
            .map(|r| r.1)
            .sum();
        if covered != (e - b) / PAGE_SIZE {
            return Err(corrupt("MMIO region not wholly committed"));
        }
    }

    if !record.contents && !record.pages.is_empty() {
        return Err(corrupt("page bytes in a layout-only buffer"));
    }
    let mut previous: Option<u64> = None;
    for PageRecord(page, bytes) in &record.pages {
        if previous.is_some_and(|p| *page <= p) {
            return Err(corrupt("pages out of order"));
        }
        previous = Some(*page);
        if *page >= VPN_LIMIT || table.get(*page).meta & meta::COMMITTED == 0 {
            return Err(corrupt("page bytes for a page that is not committed"));
        }
        let bytes: &[u8; PAGE] =
            bytes.as_slice().try_into().map_err(|_| corrupt("page is not 4096 bytes"))?;
        table.set_page(*page, Some(FrozenPage::new(bytes)));
    }
    debug_assert!(vpn(USER_SPACE_END) <= VPN_LIMIT);
    Ok((regions, table, committed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MemoryManager {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 0x8000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        mm.allocate_memory_at(0x40000, 0x20000, Protection::READ, true, RegionKind::Image).unwrap();
        mm.commit_memory(0x41000, 0x2000, Protection::READ_EXECUTE).unwrap();
        mm.protect_memory(0x12000, 0x1000, Protection::READ_WRITE | Protection::GUARD).unwrap();
        mm.write_memory(0x10ffe, b"spans two pages").unwrap();
        mm.set_default_allocation_address(0x7000_0000);
        mm
    }

    #[test]
    fn contents_round_trip_is_byte_identical() {
        let mm = sample();
        let mut a = Vec::new();
        mm.serialize_memory_state(&mut a, false);
        let mut other = MemoryManager::new();
        other.deserialize_memory_state(&a, false).unwrap();
        let mut b = Vec::new();
        other.serialize_memory_state(&mut b, false);
        assert_eq!(a, b);
        let mut buf = [0u8; 15];
        other.read_memory(0x10ffe, &mut buf).unwrap();
        assert_eq!(&buf, b"spans two pages");
        assert_eq!(other.default_allocation_address(), 0x7000_0000);
        assert_eq!(other.region_info(0x12000).permissions, Protection::READ_WRITE | Protection::GUARD);
    }

    #[test]
    fn layout_mode_keeps_current_bytes() {
        let mut mm = sample();
        let mut layout = Vec::new();
        mm.serialize_memory_state(&mut layout, true);
        mm.write_memory(0x10000, b"new").unwrap();
        mm.decommit_memory(0x41000, 0x1000).unwrap();
        let before = mm.layout_version();
        mm.deserialize_memory_state(&layout, true).unwrap();
        assert!(mm.layout_version() > before);
        let mut buf = [0u8; 3];
        mm.read_memory(0x10000, &mut buf).unwrap();
        assert_eq!(&buf, b"new");
        assert!(mm.region_info(0x41000).is_committed);
        mm.read_memory(0x41000, &mut buf).unwrap();
        assert_eq!(buf, [0; 3]);
    }

    #[test]
    fn refuses_bad_buffers_without_change() {
        let mut mm = sample();
        let mut good = Vec::new();
        mm.serialize_memory_state(&mut good, false);
        let version = mm.layout_version();

        assert_eq!(mm.deserialize_memory_state(b"nope", false), Err(MemoryError::BadStateMagic));
        let mut other_version = good.clone();
        other_version[8] = 9;
        assert_eq!(
            mm.deserialize_memory_state(&other_version, false),
            Err(MemoryError::UnsupportedStateVersion { found: 9, supported: STATE_FORMAT_VERSION })
        );
        assert_eq!(
            mm.deserialize_memory_state(&good, true),
            Err(MemoryError::StateModeMismatch { buffer_has_contents: true })
        );
        for cut in HEADER..good.len() {
            assert!(mm.deserialize_memory_state(&good[..cut], false).is_err(), "truncated at {cut}");
        }
        let mut huge = MemoryManager::new();
        huge.layout_version = u64::MAX;
        let mut huge_buf = Vec::new();
        huge.serialize_memory_state(&mut huge_buf, false);
        assert_eq!(
            mm.deserialize_memory_state(&huge_buf, false),
            Err(MemoryError::CorruptState("layout version out of range"))
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(mm.deserialize_memory_state(&longer, false).is_err());
        assert_eq!(mm.layout_version(), version);
        let mut again = Vec::new();
        mm.serialize_memory_state(&mut again, false);
        assert_eq!(again, good, "failed calls changed nothing");
    }
}
