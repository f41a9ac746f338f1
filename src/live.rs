//! The live version's pages: the persistent page table, a flat mutable
//! overlay of the pages written since the last snapshot or restore, and a small
//! software TLB in front of both.
//!
//! ```text
//!            read / write (page number)
//!                     │
//!              ┌──────▼──────┐ hit: state byte + where the bytes are
//!              │  TLB (512)  │───────────────────────────────┐
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
//!   buffer; later writes go straight to it. No path copy, no allocation once
//!   the buffer pool is warm (a restore keeps the buffers).
//! * [`LivePages::freeze`] hands the overlay's buffers to the page table in
//!   one batch (they become the frozen pages) and returns the frozen table;
//!   [`LivePages::reset_to`] drops the overlay and adopts another table. Both
//!   cost O(overlay).
//!
//! # The `unsafe` here
//!
//! The TLB (the page table's own `unsafe` is in `page_table::store` and
//! `page_table::node`): a TLB entry keeps a raw pointer to the page's bytes: an overlay buffer
//! owned by `self` (a *dirty* entry, writable in place), a page record's
//! bytes referenced by the page table, or the static zero page. So a hot
//! read is one compare and one copy. The pointer is valid while the table
//! and the overlay are unchanged: every path that can change or replace
//! either (`update`, `reset_to`, `freeze`, a view page's first write)
//! flushes the TLB first, and both are private fields of this module, so no
//! other path exists. Frozen pages are never mutated, so reading through
//! the pointer never races a write.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr::NonNull;

use rustc_hash::FxHashMap;

use crate::page_table::{Edit, Op, PageBytes, PageTable, RangeOp, ZERO_PAGE, boxed_copy, is_zero_page};
use crate::protection::meta;

/// TLB entries (direct mapped by page number). 512 entries cover 2 MiB:
/// random reads within a megabyte hit.
const TLB_ENTRIES: usize = 512;
const NO_SLOT: u32 = u32::MAX;
const INVALID_VPN: u64 = u64::MAX;

#[derive(Clone, Copy)]
struct TlbEntry {
    vpn: u64,
    /// The page's bytes: an overlay buffer (`dirty`) or frozen bytes.
    bytes: *mut PageBytes,
    meta: u8,
    /// True when `bytes` is the page's overlay buffer (writable in place).
    dirty: bool,
}

const EMPTY_ENTRY: TlbEntry =
    TlbEntry { vpn: INVALID_VPN, bytes: std::ptr::null_mut(), meta: 0, dirty: false };

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

/// Buffers of the pages written since the last freeze or reset.
///
/// * `index`: page number → slot, as a small hash map of 4096-entry arrays
///   (one per 16 MiB of address space touched), so a lookup is one probe in a
///   map that stays in cache plus one array load.
/// * `bufs`: one heap buffer per slot. A freeze hands the buffers of the
///   pages it freezes to the page table (they become the frozen pages, no
///   copy) and leaves their slots empty; a reset keeps every buffer for the
///   next cycle, so a fuzz loop allocates nothing once warm.
/// * `dirty`: the pages inserted since the last reset, so reset and freeze
///   cost O(dirty pages), not O(index size).
#[derive(Default)]
struct Overlay {
    index: FxHashMap<u64, Box<[u32; INDEX_CHUNK]>>,
    /// Raw (a `Box` turned raw, freed by `Drop`), so that the TLB's pointer
    /// and every reference made here derive from one pointer: no borrow of
    /// the buffer ever invalidates the TLB's.
    bufs: Vec<Option<NonNull<PageBytes>>>,
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

    /// Slot `slot`'s buffer (occupied).
    #[inline]
    fn ptr(&self, slot: u32) -> NonNull<PageBytes> {
        self.bufs[slot as usize].expect("an occupied slot has a buffer")
    }

    #[inline]
    fn page(&self, slot: u32) -> &PageBytes {
        // SAFETY: the buffer is owned by `self` (a leaked box) and borrowed
        // for no longer than `self`.
        unsafe { self.ptr(slot).as_ref() }
    }

    #[inline]
    fn page_mut(&mut self, slot: u32) -> &mut PageBytes {
        // SAFETY: as in `page`; `&mut self` makes this the only borrow.
        unsafe { self.ptr(slot).as_mut() }
    }

    /// Takes slot `slot`'s buffer out (occupied).
    fn take_buffer(&mut self, slot: u32) -> Box<PageBytes> {
        let p = self.bufs[slot as usize].take().expect("an occupied slot has a buffer");
        // SAFETY: made by `Box::into_raw` (`insert`, `give`), and no longer
        // reachable from `self`.
        unsafe { Box::from_raw(p.as_ptr()) }
    }

    /// Puts `buf` into the (empty) slot `slot`.
    fn give(&mut self, slot: u32, buf: Box<PageBytes>) {
        debug_assert!(self.bufs[slot as usize].is_none());
        self.bufs[slot as usize] = Some(NonNull::from(Box::leak(buf)));
    }

    /// Copies `src` into a free slot for `vpn` (which has none).
    fn insert(&mut self, vpn: u64, src: &PageBytes) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.bufs.push(None);
                u32::try_from(self.bufs.len() - 1).expect("fewer than 2^32 dirty pages")
            }
        };
        match self.bufs[slot as usize] {
            Some(_) => self.page_mut(slot).copy_from_slice(src),
            None => self.give(slot, boxed_copy(src)),
        }
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

    /// [`sorted`](Self::sorted) for a caller that may not reorder the
    /// dirty list.
    fn sorted_copy(&self) -> Vec<(u64, u32)> {
        let mut pages: Vec<(u64, u32)> =
            self.dirty.iter().filter_map(|&vpn| self.get(vpn).map(|slot| (vpn, slot))).collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Frees every slot, keeping buffers for a cycle like this one.
    fn reset(&mut self) {
        for i in 0..self.dirty.len() {
            let vpn = self.dirty[i];
            if let Some(chunk) = self.index.get_mut(&(vpn / INDEX_CHUNK as u64)) {
                chunk[(vpn % INDEX_CHUNK as u64) as usize] = NO_SLOT;
            }
        }
        // Keep buffers for twice this cycle's pages (at least 256).
        let keep = (2 * self.len).max(256).min(self.bufs.len());
        for slot in keep..self.bufs.len() {
            if self.bufs[slot].is_some() {
                drop(self.take_buffer(slot as u32));
            }
        }
        self.bufs.truncate(keep);
        self.free.clear();
        self.free.extend((0..keep as u32).rev());
        self.dirty.clear();
        self.len = 0;
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for slot in 0..self.bufs.len() {
            if self.bufs[slot].is_some() {
                drop(self.take_buffer(slot as u32));
            }
        }
    }
}

/// The live page store. See the module docs.
pub(crate) struct LivePages {
    table: PageTable,
    overlay: Overlay,
    tlb: Box<[Cell<TlbEntry>]>,
    /// Bit i of word w: entry 64·w + i was filled since the last flush.
    tlb_filled: [Cell<u64>; TLB_ENTRIES / 64],
}

// SAFETY: the raw pointers in the TLB point into pages owned by
// `self.table` (records it references), into the overlay's buffers (owned
// by `self`) or into a `static`; moving the store to another thread moves
// their owner with them. `LivePages` is not `Sync` (it has `Cell`s), so no
// two threads ever read the TLB at once.
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
            tlb: (0..TLB_ENTRIES).map(|_| Cell::new(EMPTY_ENTRY)).collect(),
            tlb_filled: Default::default(),
        }
    }

    /// Empties the TLB: only the entries filled since the last flush.
    fn flush(&self) {
        for (w, word) in self.tlb_filled.iter().enumerate() {
            let mut filled = word.replace(0);
            while filled != 0 {
                let i = filled.trailing_zeros() as usize;
                filled &= filled - 1;
                self.tlb[w * 64 + i].set(EMPTY_ENTRY);
            }
        }
    }

    #[inline]
    fn tlb_index(vpn: u64) -> usize {
        vpn as usize % TLB_ENTRIES
    }

    /// Fills the TLB entry of `e.vpn`.
    #[inline]
    fn fill(&self, e: TlbEntry) {
        let i = Self::tlb_index(e.vpn);
        self.tlb[i].set(e);
        let word = &self.tlb_filled[i / 64];
        word.set(word.get() | 1 << (i % 64));
    }

    /// The persistent table (state bytes are always current; page bytes are
    /// not for pages in the overlay).
    #[inline]
    pub(crate) fn table(&self) -> &PageTable {
        &self.table
    }

    /// The page numbers written since the last freeze (in the overlay),
    /// ascending. Time: O(dirty pages · log).
    pub(crate) fn dirty_page_numbers(&self) -> Vec<u64> {
        self.overlay.sorted_copy().into_iter().map(|(vpn, _)| vpn).collect()
    }

    /// Pages currently in the overlay.
    pub(crate) fn dirty_pages(&self) -> usize {
        self.overlay.len
    }

    /// State and current bytes of page `vpn`. Fills the TLB.
    /// Time: O(1); a TLB hit is a compare and a load.
    #[inline]
    pub(crate) fn resolve(&self, vpn: u64) -> Resolved<'_> {
        let e = self.tlb[Self::tlb_index(vpn)].get();
        if e.vpn == vpn {
            // SAFETY: the entry's bytes are an overlay buffer owned by
            // `self` or frozen bytes referenced by `self.table` (or the
            // static zero page), and the TLB is flushed before either
            // changes (module docs). The borrow is tied to `&self`.
            return Resolved { meta: e.meta, bytes: unsafe { &*e.bytes } };
        }
        self.resolve_slow(vpn)
    }

    #[cold]
    fn resolve_slow(&self, vpn: u64) -> Resolved<'_> {
        let entry = self.table.get(vpn);
        // A view page's bytes are its section page's.
        let (target, source) = if entry.meta & meta::VIEW != 0 {
            (vpn + entry.aux, self.table.get(vpn + entry.aux))
        } else {
            (vpn, entry)
        };
        let in_overlay = if self.overlay.len == 0 { None } else { self.overlay.get(target) };
        let (bytes, dirty) = match in_overlay {
            Some(slot) => {
                let p = self.overlay.ptr(slot);
                self.fill(TlbEntry { vpn, bytes: p.as_ptr(), meta: entry.meta, dirty: true });
                // SAFETY: as in `Overlay::page`.
                return Resolved { meta: entry.meta, bytes: unsafe { p.as_ref() } };
            }
            None => match source.try_bytes() {
                Some(bytes) => (bytes, false),
                // A lazily loaded page that cannot be read: not committed
                // for every access, never cached (see `PageTable::resolve`).
                None => return Resolved { meta: entry.meta & !meta::COMMITTED, bytes: &ZERO_PAGE },
            },
        };
        if entry.meta & meta::COMMITTED != 0 {
            self.fill(TlbEntry {
                vpn,
                bytes: (bytes as *const PageBytes).cast_mut(),
                meta: entry.meta,
                dirty,
            });
        }
        Resolved { meta: entry.meta, bytes }
    }

    /// A mutable view of committed page `vpn`'s bytes, copying it into the
    /// overlay on the first write since the last freeze or reset. The caller has
    /// checked that the page is committed. Time: O(1); first write: one 4 KiB copy.
    #[inline]
    pub(crate) fn page_mut(&mut self, vpn: u64) -> &mut PageBytes {
        let e = self.tlb[Self::tlb_index(vpn)].get();
        if e.vpn == vpn && e.dirty {
            // SAFETY: a dirty entry's bytes are an overlay buffer owned by
            // `self` (flushed before the buffer is freed or handed over);
            // `&mut self` makes this the only borrow.
            return unsafe { &mut *e.bytes };
        }
        // Invariant: callers checked the range, which read every lazily
        // loaded page in it, and a loaded page stays loaded.
        let slot = self.make_dirty(vpn).expect("checked pages are readable");
        self.overlay.page_mut(slot)
    }

    /// The state byte of `vpn`, without touching its bytes or filling the
    /// TLB. Time: O(1) (TLB hit or a 6-level walk).
    #[inline]
    pub(crate) fn meta(&self, vpn: u64) -> u8 {
        let e = self.tlb[Self::tlb_index(vpn)].get();
        if e.vpn == vpn { e.meta } else { self.table.get(vpn).meta }
    }

    /// A mutable view of page `vpn` when its state byte satisfies
    /// `meta & mask == need` (which must imply committed), copying the page
    /// into the overlay on its first write. One TLB probe, or one page-table
    /// walk and one overlay lookup.
    #[inline]
    pub(crate) fn writable(&mut self, vpn: u64, mask: u8, need: u8) -> Option<&mut PageBytes> {
        debug_assert!(mask & need & meta::COMMITTED != 0);
        let e = self.tlb[Self::tlb_index(vpn)].get();
        if e.vpn == vpn && e.dirty {
            if e.meta & mask != need {
                return None;
            }
            // SAFETY: as in `page_mut`.
            return Some(unsafe { &mut *e.bytes });
        }
        if self.table.get(vpn).meta & mask != need {
            return None;
        }
        let slot = self.make_dirty(vpn)?;
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
        let bytes = self.overlay.ptr(slot).as_ptr();
        self.fill(TlbEntry { vpn, bytes, meta: entry.meta, dirty: true });
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

    /// Moves the overlay into the table and returns the frozen table, with
    /// the pages frozen (ascending): their change log against the previous
    /// version.
    ///
    /// One batch: the pages are sorted, each touched node is copied once,
    /// and each written page's buffer becomes its frozen page (no copy, no
    /// hashing; a page written back to zeros stores nothing). Time: O(dirty
    /// pages + touched nodes), independent of memory size.
    pub(crate) fn freeze(&mut self) -> (PageTable, Vec<u64>) {
        let mut log = Vec::new();
        if self.overlay.len != 0 {
            self.flush();
            let dirty = self.overlay.sorted();
            log.reserve(dirty.len());
            let overlay = &mut self.overlay;
            self.table.edit_with(|g| {
                dirty
                    .iter()
                    .map(|&(vpn, slot)| {
                        log.push(vpn);
                        let page = if is_zero_page(overlay.page(slot)) {
                            None
                        } else {
                            let page = g.new_page(overlay.take_buffer(slot), None);
                            // A buffer freed by an older version, for the
                            // next first write (no allocator call then).
                            if let Some(spare) = g.take_spare_page() {
                                overlay.give(slot, spare);
                            }
                            Some(page)
                        };
                        Edit { lo: vpn, hi: vpn + 1, op: Op::Page(page) }
                    })
                    .collect()
            });
            self.overlay.reset();
        }
        (self.table.clone(), log)
    }

    /// The live version as a frozen table, without changing `self`: the
    /// table with the overlay's pages copied in. Time: O(dirty pages · levels).
    pub(crate) fn frozen_view(&self) -> PageTable {
        let mut table = self.table.clone();
        let dirty = self.overlay.sorted_copy();
        let overlay = &self.overlay;
        table.edit_with(|g| {
            dirty
                .iter()
                .map(|&(vpn, slot)| {
                    let bytes = overlay.page(slot);
                    let page = (!is_zero_page(bytes)).then(|| g.new_page(boxed_copy(bytes), None));
                    Edit { lo: vpn, hi: vpn + 1, op: Op::Page(page) }
                })
                .collect()
        });
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
        assert_eq!(log[0], 3);
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
        assert!(live.overlay.bufs.len() >= 980, "pool kept for the next cycle");
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
