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
use crate::page_table::{PAGE, PageRef, PageTable, RangeOp, Store, VPN_LIMIT};
use crate::protection::{Protection, RegionKind, meta};
use crate::region_map::{Allocation, RegionMap, SECTION_KEY_BASE, Section, ViewOf};
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
    sections: Vec<SectionRecord>,
    section_counters: (u64, u64),
}

#[derive(Serialize, Deserialize)]
struct AllocationRecord(u64, u64, u8, u8, u32, Option<(u64, u64)>);

#[derive(Serialize, Deserialize)]
struct SectionRecord(u64, u64, u64, u8, bool);

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
        let runs = page_runs(table);
        let mut pages = Vec::new();
        if !is_snapshot {
            // Pages with bytes: the table's stored pages and the overlay's
            // written ones (a committed page with neither reads zeros).
            let mut candidates = self.pages.dirty_page_numbers();
            table.for_each_stored(|page, _, _| candidates.push(page));
            candidates.sort_unstable();
            candidates.dedup();
            for page in candidates {
                let resolved = self.pages.resolve(page);
                if meta::holds_bytes(resolved.meta) && resolved.bytes.iter().any(|&b| b != 0) {
                    pages.push(PageRecord(page, resolved.bytes.to_vec()));
                }
            }
        }
        write_record(
            buffer,
            !is_snapshot,
            self.default_allocation_address,
            self.layout_version,
            &self.regions,
            runs,
            pages,
        );
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
        let record = decode_record(buffer)?;
        if record.contents == is_snapshot {
            return Err(MemoryError::StateModeMismatch { buffer_has_contents: record.contents });
        }
        // The new table lives in the live table's store, so the pages kept
        // below are shared, not copied.
        let store = self.pages.table().clone().store().clone();
        let (regions, mut table, committed_pages) = build(&record, store)?;
        if is_snapshot {
            // Keep the current bytes of pages committed before and after.
            let (current, _) = self.pages.freeze();
            current.for_each_stored(|page, _, frozen| {
                let new = table.get(page).meta;
                if new & meta::COMMITTED != 0 && new & meta::MMIO == 0 {
                    table.set_page(page, Some(frozen.to_ref()));
                }
            });
        }
        self.pages = LivePages::new(table);
        self.regions = regions;
        self.committed_pages = committed_pages;
        self.default_allocation_address = record.default_allocation_address;
        self.section_ids = self.section_ids.max(record.section_counters.0);
        self.layout_version = record.layout_version.max(self.layout_version + 1);
        Ok(())
    }
}

/// Encodes a record (header included) at the end of `buffer`.
fn write_record(
    buffer: &mut Vec<u8>,
    contents: bool,
    default_allocation_address: u64,
    layout_version: u64,
    regions: &RegionMap,
    runs: Vec<RunRecord>,
    pages: Vec<PageRecord>,
) {
    let record = StateRecord {
        contents,
        default_allocation_address,
        layout_version,
        allocations: regions
            .iter()
            .map(|a| {
                let view = a.view.map(|v| (v.section, v.key));
                AllocationRecord(a.base, a.length, a.initial.bits(), kind_code(a.kind), a.attributes, view)
            })
            .collect(),
        runs,
        pages,
        sections: regions
            .sections()
            .map(|(id, s)| SectionRecord(id, s.key, s.pages, s.max_protection.bits(), s.open))
            .collect(),
        section_counters: regions.section_counters(),
    };
    buffer.extend_from_slice(MAGIC);
    buffer.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    // Invariant: writing plain integers, bools and byte strings into a
    // Vec cannot fail.
    rmp_serde::encode::write(buffer, &record).expect("encoding into a Vec cannot fail");
}

/// Checks the header and decodes the MessagePack record of a buffer.
fn decode_record(buffer: &[u8]) -> Result<StateRecord, MemoryError> {
    if buffer.len() < HEADER || &buffer[..8] != MAGIC {
        return Err(MemoryError::BadStateMagic);
    }
    let version = u32::from_le_bytes(buffer[8..12].try_into().expect("4 bytes"));
    if version != STATE_FORMAT_VERSION {
        return Err(MemoryError::UnsupportedStateVersion { found: version, supported: STATE_FORMAT_VERSION });
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
    Ok(record)
}

/// The layout of a frozen version (snapshot files): a layout-mode buffer of
/// `serialize_memory_state` (allocations, page states, sections, default
/// allocation address, layout version; no page bytes). MMIO regions are
/// recorded as layout. Deterministic. Time: O(allocations + page runs).
pub(crate) fn serialize_layout(
    regions: &RegionMap,
    table: &PageTable,
    default_allocation_address: u64,
    layout_version: u64,
    buffer: &mut Vec<u8>,
) {
    write_record(
        buffer,
        false,
        default_allocation_address,
        layout_version,
        regions,
        page_runs(table),
        Vec::new(),
    );
}

/// The maximal runs of pages with one non-zero state, ascending.
/// Time: O(runs + non-uniform nodes), not O(pages).
fn page_runs(table: &PageTable) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = Vec::new();
    table.for_each_run(|page, n, visit| match runs.last_mut() {
        Some(RunRecord(first, count, m)) if *m == visit.meta && *first + *count == page => *count += n,
        _ => runs.push(RunRecord(page, n, visit.meta)),
    });
    runs
}

/// A layout decoded and validated by [`decode_layout`].
pub(crate) struct DecodedLayout {
    pub(crate) regions: RegionMap,
    /// Page states; every committed page reads zeros until its bytes are set.
    pub(crate) table: PageTable,
    pub(crate) committed_pages: u64,
    pub(crate) default_allocation_address: u64,
    pub(crate) layout_version: u64,
}

/// Decodes and validates a layout-mode buffer exactly as
/// `deserialize_memory_state(buffer, true)` does (MMIO regions left out).
pub(crate) fn decode_layout(
    buffer: &[u8],
    store: std::sync::Arc<Store>,
) -> Result<DecodedLayout, MemoryError> {
    let record = decode_record(buffer)?;
    if record.contents {
        return Err(MemoryError::StateModeMismatch { buffer_has_contents: true });
    }
    let (regions, table, committed_pages) = build(&record, store)?;
    Ok(DecodedLayout {
        regions,
        table,
        committed_pages,
        default_allocation_address: record.default_allocation_address,
        layout_version: record.layout_version,
    })
}

/// Validates a decoded record and builds its region map and page table.
fn build(
    record: &StateRecord,
    store: std::sync::Arc<Store>,
) -> Result<(RegionMap, PageTable, u64), MemoryError> {
    let mut regions = RegionMap::default();
    let mut previous_key_end = SECTION_KEY_BASE;
    let (mut max_id, mut max_key) = (0, SECTION_KEY_BASE);
    for &SectionRecord(id, key, pages, max_bits, open) in &record.sections {
        let end = key.checked_add(pages).ok_or(corrupt("section range overflows"))?;
        if id == 0 || pages == 0 || key < previous_key_end || end > VPN_LIMIT || regions.section(id).is_some()
        {
            return Err(corrupt("sections overlap, are empty or out of range"));
        }
        previous_key_end = end;
        let max_protection = Protection::from_bits_retain(max_bits);
        if !max_protection.is_valid() {
            return Err(corrupt("invalid section protection"));
        }
        regions.set_section(id, Some(Section { key, pages, max_protection, open }));
        (max_id, max_key) = (max_id.max(id), max_key.max(end));
    }
    let (next_section, next_key) = record.section_counters;
    if next_section < max_id || next_key.max(SECTION_KEY_BASE) < max_key || next_key > VPN_LIMIT {
        return Err(corrupt("section counters behind the sections"));
    }
    regions.set_section_counters(next_section, next_key);
    let mut mmio: Vec<(u64, u64)> = Vec::new();
    let mut previous_end = 0u64;
    for &AllocationRecord(base, length, initial, kind, attributes, view) in &record.allocations {
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
        let view = match view {
            None => None,
            Some((section, key)) => {
                let s = regions.section(section).ok_or(corrupt("view of an unknown section"))?;
                let fits =
                    key >= s.key && key.checked_add(length / PAGE_SIZE).is_some_and(|e| e <= s.key + s.pages);
                if !fits || kind != RegionKind::PagefileView {
                    return Err(corrupt("view outside its section"));
                }
                Some(ViewOf { section, key })
            }
        };
        match kind {
            RegionKind::Free => return Err(corrupt("allocation of kind Free")),
            RegionKind::Mmio => mmio.push((base, end)),
            _ => regions.insert(Allocation { base, length, initial, kind, attributes, mmio: None, view }),
        }
    }

    let mut table = PageTable::in_store(store.clone());
    let mut committed = 0u64;
    let mut previous_end = 0u64;
    let mut mmio_covered = vec![0u64; mmio.len()];
    for &RunRecord(first, count, m) in &record.runs {
        let end = first.checked_add(count).ok_or(corrupt("page run overflows"))?;
        if count == 0 || first < previous_end || end > VPN_LIMIT {
            return Err(corrupt("page runs overlap, are empty or out of order"));
        }
        previous_end = end;
        if !meta::is_valid(m) || m == 0 {
            return Err(corrupt("invalid page state"));
        }
        if first >= SECTION_KEY_BASE {
            // Section pages: committed, inside sections.
            // Covered when the sections (ascending, non-overlapping) leave no gap.
            let mut covered_to = first;
            for (_, sec) in regions.sections() {
                if sec.key <= covered_to && covered_to < sec.key + sec.pages {
                    covered_to = sec.key + sec.pages;
                }
            }
            if m != meta::COMMITTED | Protection::READ_WRITE.bits() || covered_to < end {
                return Err(corrupt("section pages outside a section"));
            }
            table.update(first, end, RangeOp::Set(m));
            continue;
        }
        // User pages: piece by piece, one allocation at a time.
        let mut page = first;
        while page < end {
            let at = page * PAGE_SIZE;
            let piece_end;
            if let Some(i) = mmio.iter().position(|&(b, e)| b <= at && at < e) {
                piece_end = end.min(mmio[i].1 / PAGE_SIZE);
                if m & meta::MMIO == 0 || m & meta::VIEW != 0 {
                    return Err(corrupt("MMIO region with a non-MMIO page state"));
                }
                mmio_covered[i] += piece_end - page;
                // MMIO regions are left out (see deserialize_memory_state).
            } else {
                let a = regions.containing(at).ok_or(corrupt("committed pages outside an allocation"))?;
                piece_end = end.min(a.end() / PAGE_SIZE);
                if m & meta::MMIO != 0 {
                    return Err(corrupt("MMIO page state outside an MMIO region"));
                }
                if m & meta::VIEW != 0 {
                    let v = a.view.ok_or(corrupt("view page outside a view"))?;
                    let key_offset = v.key - a.base / PAGE_SIZE;
                    table.update(page, piece_end, RangeOp::View { meta: m, key_offset });
                } else {
                    if m & meta::COMMITTED == 0 {
                        return Err(corrupt("reserved page with a state"));
                    }
                    table.update(page, piece_end, RangeOp::Set(m));
                }
                if m & meta::COMMITTED != 0 {
                    committed += piece_end - page;
                }
            }
            page = piece_end;
        }
    }
    // Every MMIO allocation must be wholly committed as MMIO.
    if mmio.iter().zip(&mmio_covered).any(|(&(b, e), &covered)| covered != (e - b) / PAGE_SIZE) {
        return Err(corrupt("MMIO region not wholly committed"));
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
        let m = if *page < VPN_LIMIT { table.get(*page).meta } else { 0 };
        if m & meta::COMMITTED == 0 || m & meta::VIEW != 0 {
            return Err(corrupt("page bytes for a page that is not committed"));
        }
        let bytes: &[u8; PAGE] =
            bytes.as_slice().try_into().map_err(|_| corrupt("page is not 4096 bytes"))?;
        table.set_page(*page, Some(PageRef::new_in(&store, bytes, None)));
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
