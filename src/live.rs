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
//! # The one `unsafe` in the crate
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

use crate::page_table::{FrozenPage, PageBytes, PageTable, RangeOp};
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

const EMPTY_ENTRY: TlbEntry =
    TlbEntry { vpn: INVALID_VPN, meta: 0, slot: NO_SLOT, frozen: std::ptr::null() };

/// Where a page's current bytes are.
#[derive(Clone, Copy)]
pub(crate) struct Resolved<'a> {
    /// The page's state byte.
    pub(crate) meta: u8,
    /// The page's bytes (zero page for committed pages never written).
    pub(crate) bytes: &'a PageBytes,
}

/// Buffers of the pages written since the last freeze or reset.
#[derive(Default)]
struct Overlay {
    map: FxHashMap<u64, u32>,
    slots: Vec<Box<PageBytes>>,
    free: Vec<u32>,
}

impl Overlay {
    fn insert(&mut self, vpn: u64, src: &PageBytes) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize].copy_from_slice(src);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 dirty pages");
                self.slots.push(Box::new(*src));
                slot
            }
        };
        self.map.insert(vpn, slot);
        slot
    }

    fn remove_range(&mut self, lo: u64, hi: u64) {
        if self.map.is_empty() {
            return;
        }
        if hi - lo < self.map.len() as u64 {
            for vpn in lo..hi {
                if let Some(slot) = self.map.remove(&vpn) {
                    self.free.push(slot);
                }
            }
        } else {
            let free = &mut self.free;
            self.map.retain(|&vpn, &mut slot| {
                let keep = vpn < lo || vpn >= hi;
                if !keep {
                    free.push(slot);
                }
                keep
            });
        }
    }

    /// Frees every slot, keeping a pool big enough for a cycle like this one.
    fn reset(&mut self) {
        let used = self.map.len();
        self.map.clear();
        let keep = (2 * used).max(256).min(self.slots.len());
        self.slots.truncate(keep);
        self.free.clear();
        self.free.extend((0..keep as u32).rev());
    }
}

/// The live page store. See the module docs.
pub(crate) struct LivePages {
    table: PageTable,
    overlay: Overlay,
    tlb: [Cell<TlbEntry>; TLB_ENTRIES],
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
        }
    }

    fn flush(&self) {
        for e in &self.tlb {
            e.set(EMPTY_ENTRY);
        }
    }

    /// The persistent table (state bytes are always current; page bytes are
    /// not for pages in the overlay).
    #[inline]
    pub(crate) fn table(&self) -> &PageTable {
        &self.table
    }

    /// Pages currently in the overlay.
    pub(crate) fn dirty_pages(&self) -> usize {
        self.overlay.map.len()
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
            &*self.overlay.slots[e.slot as usize]
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
        match self.overlay.map.get(&vpn) {
            Some(&slot) => e.slot = slot,
            None => e.frozen = entry.bytes() as *const PageBytes,
        }
        if entry.meta & meta::COMMITTED != 0 {
            self.tlb[vpn as usize % TLB_ENTRIES].set(e);
        }
        self.entry_bytes(e)
    }

    /// A mutable view of committed page `vpn`'s bytes, copying it into the
    /// overlay on the first write since the last freeze or reset. The caller has
    /// checked that the page is committed. Time: O(1); first write: one 4 KiB copy.
    #[inline]
    pub(crate) fn page_mut(&mut self, vpn: u64) -> &mut PageBytes {
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        let slot = if e.vpn == vpn && e.slot != NO_SLOT { e.slot } else { self.make_dirty(vpn) };
        &mut self.overlay.slots[slot as usize]
    }

    /// The overlay slot of `vpn` when the TLB says it is dirty, with its state.
    #[inline]
    pub(crate) fn cached_dirty(&mut self, vpn: u64) -> Option<(u8, &mut PageBytes)> {
        let e = self.tlb[vpn as usize % TLB_ENTRIES].get();
        if e.vpn == vpn && e.slot != NO_SLOT {
            Some((e.meta, &mut self.overlay.slots[e.slot as usize]))
        } else {
            None
        }
    }

    #[cold]
    fn make_dirty(&mut self, vpn: u64) -> u32 {
        let entry = self.table.get(vpn);
        debug_assert!(entry.meta & meta::COMMITTED != 0);
        let slot = match self.overlay.map.get(&vpn) {
            Some(&slot) => slot,
            None => {
                let src: &PageBytes = entry.bytes();
                self.overlay.insert(vpn, src)
            }
        };
        self.tlb[vpn as usize % TLB_ENTRIES].set(TlbEntry {
            vpn,
            meta: entry.meta,
            slot,
            frozen: std::ptr::null(),
        });
        slot
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
    pub(crate) fn freeze(&mut self) -> PageTable {
        if !self.overlay.map.is_empty() {
            self.flush();
            let mut dirty: Vec<(u64, u32)> = self.overlay.map.iter().map(|(&v, &s)| (v, s)).collect();
            dirty.sort_unstable_by_key(|&(vpn, _)| vpn);
            for (vpn, slot) in dirty {
                let bytes: &PageBytes = &self.overlay.slots[slot as usize];
                let page = if bytes.iter().all(|&b| b == 0) {
                    None
                } else {
                    Some(Arc::new(FrozenPage { bytes: *bytes }))
                };
                self.table.set_page(vpn, page);
            }
            self.overlay.reset();
        }
        self.table.clone()
    }

    /// Drops the overlay and adopts `table`. Time: O(dirty pages).
    pub(crate) fn reset_to(&mut self, table: PageTable) {
        self.flush();
        self.overlay.reset();
        self.table = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_table::{PAGE, ZERO_PAGE};

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
        let v1 = live.freeze();
        assert_eq!(v1.get(3).bytes()[5], 42);
        assert_eq!(live.dirty_pages(), 0);
        live.page_mut(3)[5] = 43;
        assert_eq!(v1.get(3).bytes()[5], 42, "frozen version is immutable");
        live.reset_to(v1.clone());
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
        let t = live.freeze();
        assert!(t.get(2).page.is_none());
        assert_eq!(t.get(2).meta, RW);
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
