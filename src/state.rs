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
use crate::error::StateError;
use crate::page_table::{PAGE, PageRef, PageTable, RangeOp, Store, VPN_LIMIT};
use crate::protection::{Protection, RegionKind, meta};
use crate::region_map::{Allocation, Backing, MMIO_PAGE, RegionMap, SECTION_KEY_BASE, Section, ViewOf};
use crate::{MIN_ALLOCATION_ADDRESS, PAGE_SIZE, USER_SPACE_END};

/// The format version of
/// [`MemoryManager::serialize_memory_state`](crate::MemoryManager::serialize_memory_state)
/// buffers. A buffer with another version is refused with
/// [`StateError::UnsupportedVersion`].
pub const STATE_FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"VMSNAPMS";
/// Buffers may not carry a layout version above 2^63, so the counter can
/// keep growing for the life of any manager without overflowing.
const MAX_LAYOUT_VERSION: u64 = 1 << 63;
pub(crate) const HEADER: usize = 12;

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

fn corrupt(what: &'static str) -> StateError {
    StateError::Corrupt(what)
}

/// Encodes a state buffer (header included) at the end of `buffer`: the
/// layout of `regions` and `table`, and with `contents` (contents mode) those
/// pages' bytes, `(page number, bytes)` ascending. Deterministic.
/// Time: O(allocations + page runs + contents).
pub(crate) fn encode_state(
    buffer: &mut Vec<u8>,
    regions: &RegionMap,
    table: &PageTable,
    default_allocation_address: u64,
    layout_version: u64,
    contents: Option<Vec<(u64, Vec<u8>)>>,
) {
    let pages: Vec<PageRecord> =
        contents.iter().flatten().map(|(page, bytes)| PageRecord(*page, bytes.clone())).collect();
    let contents = contents.is_some();
    let runs = page_runs(table);
    let record = StateRecord {
        contents,
        default_allocation_address,
        layout_version,
        allocations: regions
            .iter()
            .map(|a| {
                let view = a.backing.view().map(|v| (v.section, v.key));
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
fn decode_record(buffer: &[u8]) -> Result<StateRecord, StateError> {
    if buffer.len() < HEADER || &buffer[..8] != MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = u32::from_le_bytes(buffer[8..12].try_into().expect("4 bytes"));
    if version != STATE_FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion { found: version, supported: STATE_FORMAT_VERSION });
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

/// A state buffer decoded and validated by [`decode_state`].
pub(crate) struct DecodedState {
    /// True for a contents-mode buffer.
    pub(crate) contents: bool,
    /// The allocations and sections (MMIO regions unbound: a buffer holds
    /// no handlers).
    pub(crate) regions: RegionMap,
    /// Page states, and in contents mode the pages' bytes; every other
    /// committed page reads zeros.
    pub(crate) table: PageTable,
    pub(crate) committed_pages: u64,
    pub(crate) default_allocation_address: u64,
    pub(crate) layout_version: u64,
}

/// Decodes and validates a state buffer, building its table in `store`.
/// Time: O(buffer size + committed pages).
pub(crate) fn decode_state(buffer: &[u8], store: std::sync::Arc<Store>) -> Result<DecodedState, StateError> {
    let record = decode_record(buffer)?;
    let (regions, table, committed_pages) = build(&record, store)?;
    Ok(DecodedState {
        contents: record.contents,
        regions,
        table,
        committed_pages,
        default_allocation_address: record.default_allocation_address,
        layout_version: record.layout_version,
    })
}

/// Decodes a layout-mode buffer (snapshot files): as [`decode_state`], and
/// a contents-mode buffer is refused.
pub(crate) fn decode_layout(buffer: &[u8], store: std::sync::Arc<Store>) -> Result<DecodedState, StateError> {
    let state = decode_state(buffer, store)?;
    if state.contents {
        return Err(StateError::ModeMismatch { buffer_has_contents: true });
    }
    Ok(state)
}

/// Validates a decoded record and builds its region map and page table.
fn build(
    record: &StateRecord,
    store: std::sync::Arc<Store>,
) -> Result<(RegionMap, PageTable, u64), StateError> {
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
    // Pages of MMIO regions: in all, and met in the page runs.
    let (mut mmio_pages, mut mmio_covered) = (0u64, 0u64);
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
        let backing = match view {
            None => Backing::Private,
            Some((section, key)) => {
                let s = regions.section(section).ok_or(corrupt("view of an unknown section"))?;
                let fits =
                    key >= s.key && key.checked_add(length / PAGE_SIZE).is_some_and(|e| e <= s.key + s.pages);
                if !fits || kind != RegionKind::PagefileView {
                    return Err(corrupt("view outside its section"));
                }
                Backing::View(ViewOf { section, key })
            }
        };
        let backing = match kind {
            RegionKind::Free => return Err(corrupt("allocation of kind Free")),
            RegionKind::Mmio if initial != Protection::READ_WRITE => {
                return Err(corrupt("MMIO region not created read-write"));
            }
            // Its handlers are not in the buffer: it is left unbound.
            RegionKind::Mmio => {
                mmio_pages += length / PAGE_SIZE;
                Backing::Mmio(None)
            }
            _ => backing,
        };
        regions.insert(Allocation { base, length, initial, kind, attributes, backing });
    }

    let mut table = PageTable::in_store(store.clone());
    let mut committed = 0u64;
    let mut previous_end = 0u64;
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
            let a = regions.containing(at).ok_or(corrupt("committed pages outside an allocation"))?;
            let piece_end = end.min(a.end() / PAGE_SIZE);
            if a.kind == RegionKind::Mmio {
                if m & meta::MMIO == 0 || m & meta::VIEW != 0 {
                    return Err(corrupt("MMIO region with a non-MMIO page state"));
                }
                if m != MMIO_PAGE {
                    return Err(corrupt("MMIO pages not committed read-write"));
                }
                mmio_covered += piece_end - page;
                table.update(page, piece_end, RangeOp::Set(m));
                committed += piece_end - page;
            } else {
                if m & meta::MMIO != 0 {
                    return Err(corrupt("MMIO page state outside an MMIO region"));
                }
                if m & meta::VIEW != 0 {
                    let v = a.backing.view().ok_or(corrupt("view page outside a view"))?;
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
    // Every MMIO allocation must be wholly committed as MMIO: the runs are
    // disjoint, so they cover every MMIO page exactly when they cover as
    // many as there are.
    if mmio_covered != mmio_pages {
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
        if !meta::holds_bytes(m) {
            return Err(corrupt("page bytes for a page that is not committed"));
        }
        let bytes: &[u8; PAGE] =
            bytes.as_slice().try_into().map_err(|_| corrupt("page is not 4096 bytes"))?;
        table.set_page(*page, Some(PageRef::new_in(&store, bytes, None)));
    }
    debug_assert!(vpn(USER_SPACE_END) <= VPN_LIMIT);
    Ok((regions, table, committed))
}
