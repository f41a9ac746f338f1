//! The allocation map: allocation base → [`Allocation`], in an `imbl::OrdMap`
//! so cloning a version's map is O(1) and changing it copies O(log n) nodes.
//!
//! Allocations never overlap. Per-page state (committed, protection) lives in
//! the page table, not here: an allocation only knows its range, its kind, the
//! protection it was created with, and (for MMIO) its handlers.

use std::fmt;
use std::sync::Arc;

use imbl::OrdMap;

use crate::address::granule_up;
use crate::protection::{Protection, RegionKind, meta};
use crate::{MIN_ALLOCATION_ADDRESS, USER_SPACE_END};

/// Read handler of an MMIO region: `(offset from the region base, buffer)`.
pub(crate) type MmioRead = dyn Fn(u64, &mut [u8]) + Send + Sync;
/// Write handler of an MMIO region: `(offset from the region base, data)`.
pub(crate) type MmioWrite = dyn Fn(u64, &[u8]) + Send + Sync;

/// The read and write handlers of an MMIO region, as
/// [`MemoryManager::allocate_mmio`](crate::MemoryManager::allocate_mmio)
/// takes them: what a binder gives for a region loaded without its handlers
/// ([`MemoryManager::deserialize_memory_state_with`](crate::MemoryManager::deserialize_memory_state_with),
/// [`file::load_with`](crate::file::load_with) and the other `_with` loaders).
pub struct MmioHandlers {
    pub(crate) read: Box<MmioRead>,
    pub(crate) write: Box<MmioWrite>,
}

impl MmioHandlers {
    /// Handlers from a read handler `(offset from the region base, buffer
    /// to fill)` and a write handler `(offset, data)`. Time: O(1).
    pub fn new(
        read: impl Fn(u64, &mut [u8]) + Send + Sync + 'static,
        write: impl Fn(u64, &[u8]) + Send + Sync + 'static,
    ) -> Self {
        MmioHandlers { read: Box::new(read), write: Box::new(write) }
    }
}

impl fmt::Debug for MmioHandlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioHandlers").finish_non_exhaustive()
    }
}

/// The page state of every page of an MMIO region: committed, `READ | WRITE`.
pub(crate) const MMIO_PAGE: u8 = meta::COMMITTED | meta::MMIO | Protection::READ_WRITE.bits();

/// One allocation (a VAD, in NT terms).
#[derive(Clone)]
pub(crate) struct Allocation {
    pub(crate) base: u64,
    pub(crate) length: u64,
    pub(crate) initial: Protection,
    pub(crate) kind: RegionKind,
    /// Opaque to the engine (see `MemoryManager::set_allocation_attributes`).
    pub(crate) attributes: u32,
    /// What holds the allocation's bytes.
    pub(crate) backing: Backing,
}

/// What holds an allocation's bytes.
#[derive(Clone)]
pub(crate) enum Backing {
    /// Its own pages in the page table (private and image memory).
    Private,
    /// An MMIO region: every access calls its handlers, no bytes are kept.
    /// `None`: unbound (loaded from a file or a state buffer, which cannot
    /// hold handlers): every access to it fails until handlers are bound.
    Mmio(Option<Arc<MmioHandlers>>),
    /// A view of a section: the section's pages (`initial` is the view's
    /// protection and its maximum).
    View(ViewOf),
}

impl Backing {
    /// The section a view shows, `None` for any other allocation.
    #[inline]
    pub(crate) fn view(&self) -> Option<ViewOf> {
        match self {
            Backing::View(v) => Some(*v),
            _ => None,
        }
    }
}

/// What a view allocation shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViewOf {
    /// The section's id.
    pub(crate) section: u64,
    /// Page number (above user space) of the section page at the view's base.
    pub(crate) key: u64,
}

/// A section: pagefile-backed bytes that views show. Its pages live in the
/// page table at page numbers `key..key + pages`, above user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) key: u64,
    pub(crate) pages: u64,
    /// The most access a view may have.
    pub(crate) max_protection: Protection,
    /// The creator's handle is still open.
    pub(crate) open: bool,
}

/// Page number of the first section page: just above user space.
pub(crate) const SECTION_KEY_BASE: u64 = 1 << 35;

impl Allocation {
    /// Exclusive end address.
    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.base + self.length
    }
}

impl PartialEq for Allocation {
    /// Same range, kind, initial protection, attributes and backing; MMIO
    /// handlers by identity: two unbound regions of the same range are equal,
    /// a bound one never equals an unbound one.
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && self.length == other.length
            && self.initial == other.initial
            && self.kind == other.kind
            && self.attributes == other.attributes
            && match (&self.backing, &other.backing) {
                (Backing::Private, Backing::Private) => true,
                (Backing::Mmio(Some(a)), Backing::Mmio(Some(b))) => Arc::ptr_eq(a, b),
                (Backing::Mmio(None), Backing::Mmio(None)) => true,
                (Backing::View(a), Backing::View(b)) => a == b,
                _ => false,
            }
    }
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("base", &format_args!("{:#x}", self.base))
            .field("length", &format_args!("{:#x}", self.length))
            .field("initial", &self.initial)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Non-overlapping allocations by base address.
#[derive(Clone, Default)]
pub(crate) struct RegionMap {
    map: OrdMap<u64, Allocation>,
    reserved_bytes: u64,
    sections: OrdMap<u64, Section>,
    /// The highest section id this state has seen (ids are handed out by
    /// the manager; the state keeps this for serialization).
    last_section: u64,
    /// Next free section page number (0 means `SECTION_KEY_BASE`).
    next_key: u64,
}

impl RegionMap {
    /// The allocation containing `address`. Time: O(log n).
    pub(crate) fn containing(&self, address: u64) -> Option<&Allocation> {
        self.map.get_prev(&address).map(|(_, a)| a).filter(|a| address < a.end())
    }

    /// The lowest allocation overlapping `[lo, hi)`. Time: O(log n).
    pub(crate) fn overlapping(&self, lo: u64, hi: u64) -> Option<&Allocation> {
        self.containing(lo).or_else(|| self.next_after(lo).filter(|a| a.base < hi))
    }

    /// The first allocation whose base is above `address`. Time: O(log n).
    pub(crate) fn next_after(&self, address: u64) -> Option<&Allocation> {
        let next = address.checked_add(1)?;
        self.map.get_next(&next).map(|(_, a)| a)
    }

    /// Adds an allocation; the caller has checked it overlaps nothing.
    pub(crate) fn insert(&mut self, allocation: Allocation) {
        debug_assert!(self.overlapping(allocation.base, allocation.end()).is_none());
        self.reserved_bytes += allocation.length;
        self.map.insert(allocation.base, allocation);
    }

    /// Removes the allocation based at `base`.
    pub(crate) fn remove(&mut self, base: u64) -> Option<Allocation> {
        let removed = self.map.remove(&base)?;
        self.reserved_bytes -= removed.length;
        Some(removed)
    }

    /// Every allocation in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Allocation> + '_ {
        self.map.values()
    }

    /// The section `id`.
    pub(crate) fn section(&self, id: u64) -> Option<&Section> {
        self.sections.get(&id)
    }

    /// Every section, by id.
    pub(crate) fn sections(&self) -> impl Iterator<Item = (u64, &Section)> + '_ {
        self.sections.iter().map(|(&id, s)| (id, s))
    }

    /// Adds section `id` (new, above every id this state has seen) of
    /// `pages` pages, or `None` when the section page space is exhausted.
    pub(crate) fn add_section(&mut self, id: u64, pages: u64, max_protection: Protection) -> Option<Section> {
        debug_assert!(id > self.last_section);
        let key = self.next_key.max(SECTION_KEY_BASE);
        let end = key.checked_add(pages).filter(|&e| e <= crate::page_table::VPN_LIMIT)?;
        let section = Section { key, pages, max_protection, open: true };
        self.last_section = id;
        self.next_key = end;
        self.sections.insert(id, section);
        Some(section)
    }

    /// Replaces or removes section `id`.
    pub(crate) fn set_section(&mut self, id: u64, section: Option<Section>) {
        match section {
            Some(s) => {
                self.sections.insert(id, s);
            }
            None => {
                self.sections.remove(&id);
            }
        }
    }

    /// The views of section `id`, in address order. Time: O(allocations).
    pub(crate) fn views_of(&self, id: u64) -> impl Iterator<Item = &Allocation> + '_ {
        self.map.values().filter(move |a| a.backing.view().is_some_and(|v| v.section == id))
    }

    /// Binds `handlers` to the unbound MMIO region based at `base` of
    /// `length` bytes; false (nothing changed) when there is none.
    /// Time: O(log n).
    pub(crate) fn bind_mmio(&mut self, base: u64, length: u64, handlers: Arc<MmioHandlers>) -> bool {
        let Some(a) = self.map.get(&base) else { return false };
        if a.length != length || !matches!(a.backing, Backing::Mmio(None)) {
            return false;
        }
        let bound = Allocation { backing: Backing::Mmio(Some(handlers)), ..a.clone() };
        self.map.insert(base, bound);
        true
    }

    /// Binds every unbound MMIO region for which `bind(base, length)` gives
    /// handlers. Time: O(allocations), plus O(log n) per region bound.
    pub(crate) fn bind_unbound(&mut self, bind: &mut dyn FnMut(u64, u64) -> Option<Arc<MmioHandlers>>) {
        let unbound: Vec<(u64, u64)> = self
            .map
            .values()
            .filter(|a| matches!(a.backing, Backing::Mmio(None)))
            .map(|a| (a.base, a.length))
            .collect();
        for (base, length) in unbound {
            if let Some(handlers) = bind(base, length) {
                self.bind_mmio(base, length, handlers);
            }
        }
    }

    /// Restores the section bookkeeping (deserialization): the highest
    /// section id seen and the next free section page.
    pub(crate) fn set_section_counters(&mut self, last_section: u64, next_key: u64) {
        self.last_section = last_section;
        self.next_key = next_key;
    }

    /// `(last_section, next_key)` (serialization).
    pub(crate) fn section_counters(&self) -> (u64, u64) {
        (self.last_section, self.next_key)
    }

    /// The highest section id this state has seen. Time: O(1).
    pub(crate) fn last_section_id(&self) -> u64 {
        self.last_section
    }

    /// Makes `self` equal to `other`, cheaply when it already is (the same
    /// persistent maps: no reference counts touched). Time: O(1).
    pub(crate) fn assign(&mut self, other: &RegionMap) {
        let same = self.map.ptr_eq(&other.map)
            && self.sections.ptr_eq(&other.sections)
            && self.reserved_bytes == other.reserved_bytes
            && (self.last_section, self.next_key) == (other.last_section, other.next_key);
        if !same {
            *self = other.clone();
        }
    }

    /// The underlying persistent map.
    pub(crate) fn map(&self) -> &OrdMap<u64, Allocation> {
        &self.map
    }

    /// Number of allocations.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes reserved by all allocations.
    pub(crate) fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes
    }

    /// First fit: the lowest 64 KiB-aligned base at or above `start` where
    /// `size` bytes (rounded up to pages) overlap no allocation and end at or
    /// below `USER_SPACE_END`. Time: O(k log n) for k allocations skipped.
    pub(crate) fn find_free(&self, size: u64, start: u64) -> Option<u64> {
        self.find_free_in(size, start, USER_SPACE_END, false)
    }

    /// First fit inside `[lowest, highest_end)`: the lowest (or, with
    /// `top_down`, the highest) 64 KiB-aligned base where `size` bytes
    /// (rounded up to pages) overlap no allocation. Time: O(k log n).
    pub(crate) fn find_free_in(
        &self,
        size: u64,
        lowest: u64,
        highest_end: u64,
        top_down: bool,
    ) -> Option<u64> {
        let highest_end = highest_end.min(USER_SPACE_END);
        if size == 0 || lowest >= highest_end {
            return None;
        }
        let size = crate::address::page_up(size)?;
        let lowest = granule_up(lowest.max(MIN_ALLOCATION_ADDRESS))?;
        if top_down {
            let mut end = highest_end;
            loop {
                let candidate = crate::address::granule_down(end.checked_sub(size)?);
                if candidate < lowest {
                    return None;
                }
                // The allocation with the highest base below the candidate's
                // end overlaps it if any allocation does.
                match self.map.get_prev(&(candidate + size - 1)).map(|(_, a)| a) {
                    Some(a) if a.end() > candidate => end = a.base,
                    _ => return Some(candidate),
                }
            }
        }
        let mut candidate = lowest;
        loop {
            let end = candidate.checked_add(size)?;
            if end > highest_end {
                return None;
            }
            match self.overlapping(candidate, end) {
                None => return Some(candidate),
                Some(a) => candidate = granule_up(a.end())?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(base: u64, length: u64) -> Allocation {
        Allocation {
            base,
            length,
            initial: Protection::READ,
            kind: RegionKind::Private,
            attributes: 0,
            backing: Backing::Private,
        }
    }

    #[test]
    fn lookups() {
        let mut m = RegionMap::default();
        m.insert(alloc(0x10000, 0x1000));
        m.insert(alloc(0x30000, 0x20000));
        assert_eq!(m.containing(0x10fff).map(|a| a.base), Some(0x10000));
        assert!(m.containing(0x11000).is_none());
        assert_eq!(m.overlapping(0x11000, 0x30001).map(|a| a.base), Some(0x30000));
        assert!(m.overlapping(0x11000, 0x30000).is_none());
        assert_eq!(m.next_after(0x10000).map(|a| a.base), Some(0x30000));
        assert_eq!(m.reserved_bytes(), 0x21000);
        assert_eq!(m.remove(0x10000).map(|a| a.length), Some(0x1000));
        assert_eq!(m.reserved_bytes(), 0x20000);
    }

    #[test]
    fn first_fit_is_granule_aligned() {
        let mut m = RegionMap::default();
        m.insert(alloc(0x10000, 0x1000));
        // The tail of the first granule is free but cannot hold an allocation.
        assert_eq!(m.find_free(0x1000, 0), Some(0x20000));
        m.insert(alloc(0x20000, 0x10000));
        assert_eq!(m.find_free(0x1000, 0x10000), Some(0x30000));
        assert_eq!(m.find_free(0, 0x10000), None);
        assert_eq!(m.find_free(0x1000, USER_SPACE_END), None);
        assert_eq!(m.find_free(USER_SPACE_END, 0), None);
        assert_eq!(m.find_free(u64::MAX, 0), None);
        assert_eq!(m.find_free(0x10000, USER_SPACE_END - 0x10000), Some(USER_SPACE_END - 0x10000));
    }

    #[test]
    fn top_down_and_bounded() {
        let mut m = RegionMap::default();
        m.insert(alloc(0x7000_0000, 0x1000));
        m.insert(alloc(0x6FFF_0000, 0x1000));
        assert_eq!(m.find_free_in(0x1000, 0x10000, 0x7001_0000, true), Some(0x6FFE_0000));
        assert_eq!(m.find_free_in(0x2_0000, 0x10000, 0x8000_0000, true), Some(0x7FFE_0000));
        assert_eq!(m.find_free_in(0x1000, 0x6FFF_0000, 0x7001_0000, true), None);
        assert_eq!(m.find_free_in(0x1000, 0x6FFF_0000, 0x7002_0000, false), Some(0x7001_0000));
        assert_eq!(m.find_free_in(0x1000, 0x10000, 0x10000, true), None);
        assert_eq!(m.find_free_in(0x1000, 0, USER_SPACE_END, true), Some(USER_SPACE_END - 0x10000));
    }
}
