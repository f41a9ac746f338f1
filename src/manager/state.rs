//! `serialize_memory_state` / `deserialize_memory_state` (the buffer format
//! is in `crate::state`).

use std::sync::Arc;

use super::MemoryManager;
use crate::error::{MemoryError, StateError};
use crate::live::LivePages;
use crate::protection::meta;
use crate::region_map::MmioHandlers;
use crate::state;

impl MemoryManager {
    /// Appends the manager's state to `buffer`. `is_snapshot == true`: the
    /// layout only (allocations, page states, default allocation address,
    /// layout version); `false`: the layout and the bytes of every committed
    /// page. MMIO regions are recorded as layout (no bytes, no handlers: a
    /// deserialized state has them unbound). The encoding is
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
        let contents = (!is_snapshot).then(|| {
            // Pages with bytes: the table's stored pages and the overlay's
            // written ones (a committed page with neither reads zeros).
            let mut candidates = self.pages.dirty_page_numbers();
            table.for_each_stored(|page, _, _| candidates.push(page));
            candidates.sort_unstable();
            candidates.dedup();
            candidates
                .into_iter()
                .filter_map(|page| {
                    let resolved = self.pages.resolve(page);
                    (meta::holds_bytes(resolved.meta) && resolved.bytes.iter().any(|&b| b != 0))
                        .then(|| (page, resolved.bytes.to_vec()))
                })
                .collect()
        });
        state::encode_state(
            buffer,
            &self.regions,
            table,
            self.default_allocation_address,
            self.layout_version,
            contents,
        );
    }

    /// Replaces the whole state of the manager with the one in `buffer`
    /// (default allocation address included), or fails and changes nothing.
    ///
    /// `is_snapshot` must match the mode the buffer was written in
    /// ([`StateError::ModeMismatch`] otherwise). In layout mode the
    /// bytes are not in the buffer: a page committed both now and in the
    /// buffer keeps its current bytes, every other committed page reads zeros.
    /// MMIO regions come back in the layout (kind `Mmio`, committed,
    /// `READ | WRITE`, counted as committed) but *unbound*: their handlers
    /// cannot be serialized, so every access to them is
    /// [`MemoryError::MmioUnbound`] until their owner binds them
    /// ([`bind_mmio`](Self::bind_mmio)), or binds them here with
    /// [`deserialize_memory_state_with`](Self::deserialize_memory_state_with).
    ///
    /// The layout version becomes the buffer's, or one more than the current
    /// one if that is greater, so it never repeats.
    ///
    /// Every malformed buffer (bad magic, other version, truncated, bad
    /// MessagePack, overlapping or misaligned allocations, states outside
    /// allocations, invalid protections, pages of the wrong size) gives an
    /// error. Time: O(buffer size + committed pages).
    pub fn deserialize_memory_state(&mut self, buffer: &[u8], is_snapshot: bool) -> Result<(), MemoryError> {
        self.deserialize_memory_state_with(buffer, is_snapshot, &mut |_, _| None)
    }

    /// [`deserialize_memory_state`](Self::deserialize_memory_state) that binds
    /// the buffer's MMIO regions: `binder(base, length)` is called once per
    /// MMIO region of the buffer, in address order, after the buffer is
    /// checked (never for a refused one); the handlers it gives are bound,
    /// and a region it answers `None` for is left unbound. The same
    /// errors, and a failed call changes nothing. Time: as
    /// `deserialize_memory_state`, plus one binder call and O(log n) per MMIO
    /// region.
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, MmioHandlers};
    /// let mut mm = MemoryManager::new();
    /// mm.allocate_mmio(0x7FFE_0000, 0x1000, |offset, buf| buf.fill(offset as u8), |_, _| {})?;
    /// let mut buffer = Vec::new();
    /// mm.serialize_memory_state(&mut buffer, false);
    ///
    /// let mut copy = MemoryManager::new();
    /// copy.deserialize_memory_state_with(&buffer, false, &mut |base, _length| {
    ///     (base == 0x7FFE_0000).then(|| MmioHandlers::new(|offset, buf| buf.fill(offset as u8), |_, _| {}))
    /// })?;
    /// let mut buf = [0u8; 1];
    /// copy.read_memory(0x7FFE_0009, &mut buf)?;
    /// assert_eq!(buf, [9]);
    /// # Ok::<(), vmsnap::MemoryError>(())
    /// ```
    pub fn deserialize_memory_state_with(
        &mut self,
        buffer: &[u8],
        is_snapshot: bool,
        binder: &mut dyn FnMut(u64, u64) -> Option<MmioHandlers>,
    ) -> Result<(), MemoryError> {
        // The new table lives in the live table's store, so the pages kept
        // below are shared, not copied.
        let store = self.pages.table().clone().store().clone();
        let mut decoded = state::decode_state(buffer, store)?;
        if decoded.contents == is_snapshot {
            return Err(StateError::ModeMismatch { buffer_has_contents: decoded.contents }.into());
        }
        decoded.regions.bind_unbound(&mut |base, length| binder(base, length).map(Arc::new));
        let mut table = decoded.table;
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
        self.adopt_layout(&decoded.regions, decoded.committed_pages, decoded.layout_version);
        self.set_default_allocation_address(decoded.default_allocation_address);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::STATE_FORMAT_VERSION;
    use crate::protection::{Protection, RegionKind};
    use crate::state::HEADER;

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

        assert_eq!(
            mm.deserialize_memory_state(b"nope", false),
            Err(MemoryError::State(StateError::BadMagic))
        );
        let mut other_version = good.clone();
        other_version[8] = 9;
        assert_eq!(
            mm.deserialize_memory_state(&other_version, false),
            Err(MemoryError::State(StateError::UnsupportedVersion {
                found: 9,
                supported: STATE_FORMAT_VERSION
            }))
        );
        assert_eq!(
            mm.deserialize_memory_state(&good, true),
            Err(MemoryError::State(StateError::ModeMismatch { buffer_has_contents: true }))
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
            Err(MemoryError::State(StateError::Corrupt("layout version out of range")))
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
