//! The live version's pages: the persistent page table, a flat mutable
//! overlay of the pages written since the last snapshot or restore, and a small
//! software TLB in front of both.
//!
//! ```text
//!            read / write (page number)
//!                     │
//!              ┌──────▼──────┐ hit: state byte + where the bytes are
//!              │  TLB (64)   │───────────────────────────────┐
//!              └──────┬──────┘                               │
//!                miss │                                      │
//!      ┌──────────────▼───────────┐   ┌────────────────────┐ │
//!      │ page table (persistent)  │   │ overlay (mutable)  │ │
//!      │ state byte + frozen page │   │ page → slot buffer │◄┘
//!      └──────────────────────────┘   └────────────────────┘
//! ```
//!
//! * The page table is authoritative for every page's state byte; the overlay
//!   only ever holds the *bytes* of committed pages.
//! * The first write to a page copies its bytes (frozen or zero) into an overlay
//!   slot; later writes go straight to the slot. No path copy, no allocation
//!   once the slot pool is warm.
//! * [`LivePages::freeze`] moves the overlay into the page table (one path copy
//!   per written page) and returns the frozen table; [`LivePages::reset_to`]
//!   drops the overlay and adopts another table. Both cost O(overlay).
//!
//! # The `unsafe` in the crate
//!
//! Two small pieces, both here. [`prefetch`] issues a cache prefetch hint
//! (the diff walk uses it to overlap cache misses): it only names an address
//! and never faults. The TLB is the other:
//!
//! A TLB entry for a page that is not in the overlay keeps a raw pointer to the
//! page's bytes (inside an `Arc<FrozenPage>` held by the page table, or the
//! static zero page), so a hot read is one compare and one copy. The pointer is
//! valid while the table is unchanged: every path that can change or replace
//! the table (`table_mut`, `reset_to`, `freeze`) flushes the TLB first, and the
//! table is a private field of this module, so no other path exists. Frozen
//! pages are never mutated (no `get_mut` on them anywhere), so reading through
//! the pointer never races a write.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::page_table::{FrozenPage, PageBytes, PageTable, RangeOp, ZERO_PAGE, fingerprint};
use crate::protection::meta;

const TLB_ENTRIES: usize = 64;
const NO_SLOT: u32 = u32::MAX;
const INVALID_VPN: u64 = u64::MAX;

#[derive(Clone, Copy)]
struct TlbEntry {
    vpn: u64,
    meta: u8,
    /// Overlay slot, or `NO_SLOT` when the bytes are frozen (`frozen`).
    slot: u32,
    frozen: *const PageBytes,
}

const EMPTY_ENTRY: TlbEntry = TlbEntry { vpn: INVALID_VPN, meta: 0, slot: NO_SLOT, frozen: std::ptr::null() };

/// Where a page's current bytes are.
#[derive(Clone, Copy)]
pub(crate) struct Resolved<'a> {
    /// The page's state byte.
    pub(crate) meta: u8,
    /// The page's bytes (zero page for committed pages never written).
    pub(crate) bytes: &'a PageBytes,
}

/// Pages per overlay index chunk (16 MiB of address space).
const INDEX_CHUNK: usize = 4096;
/// Pages per slab of slot buffers (256 KiB).
const SLAB_PAGES: usize = 64;

/// Buffers of the pages written since the last freeze or reset.
///
/// * `index`: page number → slot, as a small hash map of 4096-entry arrays
///   (one per 16 MiB of address space touched), so a lookup is one probe in a
///   map that stays in cache plus one array load.
/// * `slabs`: slot buffers, 64 pages per allocation; slot `s` lives at
///   `slabs[s / 64][s % 64]`.
/// * `dirty`: the pages inserted since the last reset, so reset and freeze
///   cost O(dirty pages), not O(index size). Index arrays and slabs are kept
///   across resets: a fuzz loop allocates nothing once warm.
#[derive(Default)]
struct Overlay {
    index: FxHashMap<u64, Box<[u32; INDEX_CHUNK]>>,
    slabs: Vec<Box<[PageBytes]>>,
    free: Vec<u32>,
    dirty: Vec<u64>,
    len: usize,
}

impl Overlay {
    #[inline]
    fn get(&self, vpn: u64) -> Option<u32> {
        let chunk = self.index.get(&(vpn / INDEX_CHUNK as u64))?;
        let slot = chunk[(vpn % INDEX_CHUNK as u64) as usize];
        (slot != NO_SLOT).then_some(slot)
    }

    #[inline]
    fn page(&self, slot: u32) -> &PageBytes {
        &self.slabs[slot as usize / SLAB_PAGES][slot as usize % SLAB_PAGES]
    }

    #[inline]
    fn page_mut(&mut self, slot: u32) -> &mut PageBytes {
        &mut self.slabs[slot as usize / SLAB_PAGES][slot as usize % SLAB_PAGES]
    }

    /// Copies `src` into a free slot for `vpn` (which has none).
    fn insert(&mut self, vpn: u64, src: &PageBytes) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let first = self.slabs.len() * SLAB_PAGES;
                let slot = u32::try_from(first).expect("fewer than 2^32 dirty pages");
                self.slabs.push(vec![[0u8; crate::page_table::PAGE]; SLAB_PAGES].into_boxed_slice());
                self.free.extend((slot + 1..slot + SLAB_PAGES as u32).rev());
                slot
            }
        };
        self.page_mut(slot).copy_from_slice(src);
        let chunk =
            self.index.entry(vpn / INDEX_CHUNK as u64).or_insert_with(|| Box::new([NO_SLOT; INDEX_CHUNK]));
        chunk[(vpn % INDEX_CHUNK as u64) as usize] = slot;
        self.dirty.push(vpn);
        self.len += 1;
        slot
    }

    fn take(&mut self, vpn: u64) -> Option<u32> {
        let chunk = self.index.get_mut(&(vpn / INDEX_CHUNK as u64))?;
        let entry = &mut chunk[(vpn % INDEX_CHUNK as u64) as usize];
        let slot = std::mem::replace(entry, NO_SLOT);
        (slot != NO_SLOT).then(|| {
            self.free.push(slot);
            self.len -= 1;
            slot
        })
    }

    fn remove_range(&mut self, lo: u64, hi: u64) {
        if self.len == 0 {
            return;
        }
        if hi - lo <= self.dirty.len() as u64 {
            for vpn in lo..hi {
                self.take(vpn);
            }
        } else {
            let dirty = std::mem::take(&mut self.dirty);
            for &vpn in &dirty {
                if (lo..hi).contains(&vpn) {
                    self.take(vpn);
                }
            }
            self.dirty = dirty;
        }
        // `dirty` may now list pages that left the overlay; readers of the
        // list check the index.
    }

    /// The pages in the overlay with their slots, ascending.
    fn sorted(&mut self) -> Vec<(u64, u32)> {
        self.dirty.sort_unstable();
        self.dirty.dedup();
        self.dirty.iter().filter_map(|&vpn| self.get(vpn).map(|slot| (vpn, slot))).collect()
    }

    /// Frees every slot, keeping buffers for a cycle like this one.
    fn reset(&mut self) {
        for i in 0..self.dirty.len() {
            let vpn = self.dirty[i];
            if let Some(chunk) = self.index.get_mut(&(vpn / INDEX_CHUNK as u64)) {
                chunk[(vpn % INDEX_CHUNK as u64) as usize] = NO_SLOT;
            }
        }
        let keep_pages = (2 * self.len).max(4 * SLAB_PAGES);
        let keep = keep_pages.div_ceil(SLAB_PAGES).min(self.slabs.len());
        self.slabs.truncate(keep);
        self.free.clear();
        self.free.extend((0..(keep * SLAB_PAGES) as u32).rev());
        self.dirty.clear();
        self.len = 0;
    }
}

/// Hints the CPU to start loading `value`'s cache line. No effect on
/// anything but timing; a no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline, and a prefetch never
    // faults or reads into the program: it only names an address (here a
    // valid reference).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A frozen copy of a written page, or `None` when it holds only zeros.
fn frozen_copy(bytes: &PageBytes) -> Option<Arc<FrozenPage>> {
    let fingerprint = fingerprint(bytes);
    if fingerprint == 0 && bytes == &ZERO_PAGE {
        None
    } else {
        Some(FrozenPage::with_fingerprint(bytes, fingerprint))
    }
}

/// The live page store. See the module docs.
pub(crate) struct LivePages {
    table: PageTable,
    overlay: Overlay,
    tlb: [Cell<TlbEntry>; TLB_ENTRIES],
    /// Bit i: entry i was filled since the last flush.
    tlb_filled: Cell<u64>,
}

// SAFETY: the raw pointers in the TLB point into pages owned (through `Arc`s)
// by `self.table` or into a `static`; moving the store to another thread moves
// their owner with them. `LivePages` is not `Sync` (it has `Cell`s), so no two
// threads ever read the TLB at once.
unsafe impl Send for LivePages {}

impl Default for LivePages {
    fn default() -> Self {
        LivePages::new(PageTable::default())
    }
}

impl LivePages {
    pub(crate) fn new(table: PageTable) -> Self {
        LivePages {
            table,
            overlay: Overlay::default(),
            tlb: std::array::from_fn(|_| Cell::new(EMPTY_ENTRY)),
            tlb_filled: Cell::new(0),
        }
    }

    /// Empties the TLB: only the entries filled since the last flush.
    fn flush(&self) {
        let mut filled = self.tlb_filled.replace(0);
        while filled != 0 {
            let i = filled.trailing_zeros() as usize;
            filled &= filled - 1;
            self.tlb[i].set(EMPTY_ENTRY);
        }
    }

    /// Fills TLB entry `vpn % 64`.
    #[inline]
    fn fill(&self, e: TlbEntry) {
        let i = e.vpn as usize % TLB_ENTRIES;
        self.tlb[i].set(e);
        self.tlb_filled.set(self.tlb_filled.get() | 1 << i);
    }

    /// The persistent table (state bytes are always current; page bytes are
    /// not for pages in the overlay).
    #[inline]
    pub(crate) fn table(&self) -> &PageTable {
        &self.table
    }

    /// Pages currently in the overlay.
    pub(crate) fn dirty_pages(&self) -> usize {
        self.overlay.len
    }

    /// State and current bytes of page `vpn`. Fills the TLB.
    /// Time: O(1); a TLB hit is a compare and a load.
    #[inline]
    pub(crate) fn resolve(&self, vpn: u64) -> Resolved<'_> {
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        if e.vpn == vpn {
            return self.entry_bytes(e);
        }
        self.resolve_slow(vpn)
    }

    #[inline]
    fn entry_bytes(&self, e: TlbEntry) -> Resolved<'_> {
        let bytes = if e.slot != NO_SLOT {
            self.overlay.page(e.slot)
        } else {
            // SAFETY: `frozen` was taken from a page owned by `self.table` (or
            // the static zero page) when the entry was filled, and the TLB is
            // flushed before the table changes (module docs). The returned
            // borrow is tied to `&self`, so the table cannot change while it
            // lives. Frozen pages are immutable.
            unsafe { &*e.frozen }
        };
        Resolved { meta: e.meta, bytes }
    }

    #[cold]
    fn resolve_slow(&self, vpn: u64) -> Resolved<'_> {
        let entry = self.table.get(vpn);
        let mut e = TlbEntry { vpn, meta: entry.meta, slot: NO_SLOT, frozen: std::ptr::null() };
        // A view page's bytes are its section page's.
        let (target, source) = if entry.meta & meta::VIEW != 0 {
            (vpn + entry.aux, self.table.get(vpn + entry.aux))
        } else {
            (vpn, entry)
        };
        match self.overlay.get(target) {
            Some(slot) => e.slot = slot,
            None => match source.try_bytes() {
                Some(bytes) => e.frozen = bytes as *const PageBytes,
                // A lazily loaded page that cannot be read: not committed
                // for every access, never cached (see `PageTable::resolve`).
                None => return Resolved { meta: entry.meta & !meta::COMMITTED, bytes: &ZERO_PAGE },
            },
        }
        if entry.meta & meta::COMMITTED != 0 {
            self.fill(e);
        }
        self.entry_bytes(e)
    }

    /// A mutable view of committed page `vpn`'s bytes, copying it into the
    /// overlay on the first write since the last freeze or reset. The caller has
    /// checked that the page is committed. Time: O(1); first write: one 4 KiB copy.
    #[inline]
    pub(crate) fn page_mut(&mut self, vpn: u64) -> &mut PageBytes {
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        let slot = if e.vpn == vpn && e.slot != NO_SLOT {
            e.slot
        } else {
            // Invariant: callers checked the range, which read every lazily
            // loaded page in it, and a loaded page stays loaded.
            self.make_dirty(vpn).expect("checked pages are readable")
        };
        self.overlay.page_mut(slot)
    }

    /// The state byte of `vpn`, without touching its bytes or filling the
    /// TLB. Time: O(1) (TLB hit or a 6-level walk).
    #[inline]
    pub(crate) fn meta(&self, vpn: u64) -> u8 {
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        if e.vpn == vpn { e.meta } else { self.table.get(vpn).meta }
    }

    /// A mutable view of page `vpn` when its state byte satisfies
    /// `meta & mask == need` (which must imply committed), copying the page
    /// into the overlay on its first write. One TLB probe, or one page-table
    /// walk and one overlay lookup.
    #[inline]
    pub(crate) fn writable(&mut self, vpn: u64, mask: u8, need: u8) -> Option<&mut PageBytes> {
        debug_assert!(mask & need & meta::COMMITTED != 0);
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        let slot = if e.vpn == vpn && e.slot != NO_SLOT {
            if e.meta & mask != need {
                return None;
            }
            e.slot
        } else {
            if self.table.get(vpn).meta & mask != need {
                return None;
            }
            self.make_dirty(vpn)?
        };
        Some(self.overlay.page_mut(slot))
    }

    /// Copies committed page `vpn` (for a view page, its section page) into
    /// the overlay unless it is there. `None` for a lazily loaded page whose
    /// bytes cannot be read.
    #[cold]
    fn make_dirty(&mut self, vpn: u64) -> Option<u32> {
        let entry = self.table.get(vpn);
        debug_assert!(entry.meta & meta::COMMITTED != 0);
        let target = if entry.meta & meta::VIEW != 0 { vpn + entry.aux } else { vpn };
        let slot = match self.overlay.get(target) {
            Some(slot) => slot,
            None => {
                let slot = self.overlay.insert(target, self.table.get(target).try_bytes()?);
                if target != vpn {
                    // Other views of this section page may have its frozen
                    // bytes in the TLB: they must see the new slot.
                    self.flush();
                }
                slot
            }
        };
        self.fill(TlbEntry { vpn, meta: entry.meta, slot, frozen: std::ptr::null() });
        Some(slot)
    }

    /// Applies a state change to `[lo, hi)`; pages that lose their bytes leave
    /// the overlay. Returns the change in committed pages.
    pub(crate) fn update(&mut self, lo: u64, hi: u64, op: RangeOp) -> i64 {
        self.flush();
        if matches!(op, RangeOp::Clear | RangeOp::Set(_)) {
            self.overlay.remove_range(lo, hi);
        }
        self.table.update(lo, hi, op)
    }

    /// Changes the state byte of one page in place (a guard page firing).
    pub(crate) fn set_meta(&mut self, vpn: u64, new_meta: u8) {
        let old = self.table.get(vpn).meta;
        debug_assert!(old & meta::COMMITTED != 0 && new_meta & meta::COMMITTED != 0);
        self.update(vpn, vpn + 1, RangeOp::Protect(new_meta & meta::PROT));
    }

    /// Moves the overlay into the table and returns the frozen table.
    /// Time: O(dirty pages · levels), independent of memory size.
    /// Also returns the change log of the frozen pages: `(page, old
    /// fingerprint, new fingerprint)` in ascending page order.
    pub(crate) fn freeze(&mut self) -> (PageTable, Vec<(u64, u64, u64)>) {
        let mut log = Vec::new();
        if self.overlay.len != 0 {
            self.flush();
            let dirty = self.overlay.sorted();
            log.reserve(dirty.len());
            for (vpn, slot) in dirty {
                let old = self.table.get(vpn).aux;
                let page = frozen_copy(self.overlay.page(slot));
                log.push((vpn, old, page.as_ref().map_or(0, |p| p.fingerprint)));
                self.table.set_page(vpn, page);
            }
            self.overlay.reset();
        }
        (self.table.clone(), log)
    }

    /// The live version as a frozen table, without changing `self`: the
    /// table with the overlay's pages copied in. Time: O(dirty pages · levels).
    pub(crate) fn frozen_view(&self) -> PageTable {
        let mut table = self.table.clone();
        let mut dirty = self.overlay.dirty.clone();
        dirty.sort_unstable();
        dirty.dedup();
        for vpn in dirty {
            if let Some(slot) = self.overlay.get(vpn) {
                table.set_page(vpn, frozen_copy(self.overlay.page(slot)));
            }
        }
        table
    }

    /// Drops the overlay and adopts `table`. Time: O(dirty pages).
    pub(crate) fn reset_to(&mut self, table: &PageTable) {
        self.flush();
        self.overlay.reset();
        if !self.table.ptr_eq(table) {
            self.table = table.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_table::PAGE;

    const RW: u8 = meta::COMMITTED | 3;

    #[test]
    fn write_goes_to_overlay_and_freezes() {
        let mut live = LivePages::default();
        live.update(0, 16, RangeOp::Commit(3));
        assert_eq!(live.resolve(3).bytes, &ZERO_PAGE);
        live.page_mut(3)[5] = 42;
        assert_eq!(live.resolve(3).bytes[5], 42);
        assert_eq!(live.resolve(3).meta, RW);
        assert_eq!(live.table().get(3).bytes()[5], 0, "table untouched until freeze");
        let (v1, log) = live.freeze();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0, 3);
        assert_eq!(v1.get(3).bytes()[5], 42);
        assert_eq!(live.dirty_pages(), 0);
        live.page_mut(3)[5] = 43;
        assert_eq!(v1.get(3).bytes()[5], 42, "frozen version is immutable");
        live.reset_to(&v1);
        assert_eq!(live.resolve(3).bytes[5], 42);
    }

    #[test]
    fn clear_drops_dirty_bytes() {
        let mut live = LivePages::default();
        live.update(0, 4, RangeOp::Commit(3));
        live.page_mut(1).fill(9);
        live.update(1, 2, RangeOp::Clear);
        live.update(1, 2, RangeOp::Commit(3));
        assert_eq!(live.resolve(1).bytes, &ZERO_PAGE);
    }

    #[test]
    fn zero_pages_freeze_to_nothing() {
        let mut live = LivePages::default();
        live.update(0, 4, RangeOp::Commit(3));
        live.page_mut(2);
        let (t, _) = live.freeze();
        assert!(t.get(2).page.is_none());
        assert_eq!(t.get(2).meta, RW);
    }

    #[test]
    fn many_dirty_pages_survive_slab_growth_removal_and_reset() {
        let mut live = LivePages::default();
        live.update(0, 20_000, RangeOp::Commit(3));
        let mark = |vpn: u64| (vpn % 251) as u8 + 1;
        for vpn in (0..20_000).step_by(3) {
            live.page_mut(vpn)[7] = mark(vpn);
        }
        assert_eq!(live.dirty_pages(), 6667);
        // A small range probes page by page; a big one walks the dirty list.
        live.update(30, 40, RangeOp::Clear);
        live.update(9_000, 19_000, RangeOp::Clear);
        let expect = |vpn: u64| {
            if vpn.is_multiple_of(3) && !(30..40).contains(&vpn) && !(9_000..19_000).contains(&vpn) {
                mark(vpn)
            } else {
                0
            }
        };
        for vpn in 0..20_000 {
            let r = live.resolve(vpn);
            if r.meta != 0 {
                assert_eq!(r.bytes[7], expect(vpn), "vpn {vpn}");
            }
        }
        let (frozen, _) = live.freeze();
        assert_eq!(live.dirty_pages(), 0);
        for vpn in (0..9_000).chain(19_000..20_000) {
            assert_eq!(frozen.get(vpn).bytes()[7], expect(vpn), "frozen vpn {vpn}");
        }
        // Dirty again, then reset: the overlay's bytes vanish, buffers stay.
        for vpn in (0..500).filter(|v| !(30..40).contains(v)) {
            live.page_mut(vpn)[7] = 0xEE;
        }
        live.reset_to(&frozen);
        for vpn in (0..500).filter(|v| !(30..40).contains(v)) {
            assert_eq!(live.resolve(vpn).bytes[7], expect(vpn));
        }
        assert!(live.overlay.slabs.len() * SLAB_PAGES >= 980, "pool kept for the next cycle");
    }

    #[test]
    fn tlb_aliasing_pages_stay_distinct() {
        let mut live = LivePages::default();
        live.update(0, 200, RangeOp::Commit(3));
        for vpn in [1u64, 65, 129] {
            live.page_mut(vpn)[0] = vpn as u8;
        }
        for vpn in [1u64, 65, 129, 1] {
            assert_eq!(live.resolve(vpn).bytes[0], vpn as u8);
        }
        assert_eq!(PAGE, 4096);
    }
}
