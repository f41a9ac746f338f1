//! Page slabs: the buffers of a file's loaded pages, allocated
//! [`SLAB_PAGES`] at a time instead of one heap allocation per page.
//!
//! ```text
//!   PageBuffers (one load)            SlabTable (in the store's Pool)
//!   ├── slots 0..n ── write(i) ──►    slab k: [page 0 | page 1 | … | page 30]
//!   │   (each written once,                 live: records made from it
//!   │    by any worker thread)              sealed: no more records coming
//!   └── records(items) ─────────►    PageRec { bytes → slab page, slab: k+1 }
//! ```
//!
//! **Why.** A load makes one page record per stored page. Allocating each
//! 4 KiB buffer on its own costs, on glibc: on worker threads, arena growth
//! a few pages at a time, whose `mprotect` calls stall the other workers'
//! page faults (two threads loaded at 1.3× one); on the calling thread, a
//! best-fit search of the large bins, which a heap holding other snapshots
//! has fragmented (112 ms for 65,536 buffers, more than half a two-thread
//! load). A slab is one allocation of 31 pages (124 KiB): just below
//! glibc's default mmap threshold, so a freed slab goes back to the heap
//! and the next load reuses it (2 MiB slabs were mapped and unmapped each
//! time, and every load paid the kernel's zeroing of fresh memory: one
//! thread 1.2x slower).
//!
//! **Lifetime.** A slab is freed when it is sealed (its [`PageBuffers`] is
//! dropped: no more records will be made from it) and its last record is
//! released, or with the store. A slab's memory is held while any of its
//! pages is: the price of allocating together, bounded by one slab per
//! live page in the worst case.
//!
//! # Safety
//!
//! A slab's pages are written only through [`PageBuffers::write`], at most
//! once each (a slot's state goes free → writing → written, by atomic
//! exchange), and become records only once written (the state read with
//! `Acquire`); a record's bytes are never written again. Slab memory is
//! freed only when no record of it is alive and none can be made.

#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::store::Store;
use super::{PAGE, PageBytes, PageRef};

/// Pages per slab (124 KiB, see the module docs).
pub(super) const SLAB_PAGES: usize = 31;

/// One allocation of `capacity` pages.
struct Slab {
    base: NonNull<PageBytes>,
    capacity: usize,
    /// Records made from it and not yet released.
    live: u32,
    /// No more records will be made from it.
    sealed: bool,
}

impl Slab {
    fn layout(capacity: usize) -> Layout {
        // Invariant: at most 31 pages, far below isize::MAX; pages need
        // no more alignment than a `Box<PageBytes>` has.
        Layout::from_size_align(capacity * PAGE, 16).expect("a slab's layout")
    }
}

/// The store's slabs, by id (guarded by the store's lock, as the records).
#[derive(Default)]
pub(crate) struct SlabTable {
    slabs: Vec<Option<Slab>>,
    free_ids: Vec<u32>,
}

// SAFETY: the slabs are plain heap memory owned by the table; the store's
// lock serializes every access to the table.
unsafe impl Send for SlabTable {}

impl SlabTable {
    /// A new slab of `capacity` (1..=31) uninitialized pages: its id and
    /// first page.
    fn alloc(&mut self, capacity: usize) -> (u32, NonNull<PageBytes>) {
        debug_assert!((1..=SLAB_PAGES).contains(&capacity));
        let layout = Slab::layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw.cast::<PageBytes>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        let slab = Some(Slab { base, capacity, live: 0, sealed: false });
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slabs[id as usize] = slab;
                id
            }
            None => {
                self.slabs.push(slab);
                u32::try_from(self.slabs.len() - 1).expect("fewer than 2^32 slabs")
            }
        };
        (id, base)
    }

    fn slab(&mut self, id: u32) -> &mut Slab {
        self.slabs[id as usize].as_mut().expect("a live slab")
    }

    /// A record was made from slab `id`.
    pub(super) fn created(&mut self, id: u32) {
        self.slab(id).live += 1;
    }

    /// A record of slab `id` was released.
    pub(super) fn released(&mut self, id: u32) {
        let slab = self.slab(id);
        slab.live -= 1;
        if slab.live == 0 && slab.sealed {
            self.free(id);
        }
    }

    /// No more records will be made from slab `id`.
    fn seal(&mut self, id: u32) {
        let slab = self.slab(id);
        slab.sealed = true;
        if slab.live == 0 {
            self.free(id);
        }
    }

    fn free(&mut self, id: u32) {
        if let Some(slab) = self.slabs[id as usize].take() {
            // SAFETY: allocated by `alloc` with this layout; no record of it
            // is alive and none can be made (sealed, or the store is going).
            unsafe { std::alloc::dealloc(slab.base.as_ptr().cast(), Slab::layout(slab.capacity)) };
            self.free_ids.push(id);
        }
    }
}

impl Drop for SlabTable {
    fn drop(&mut self) {
        for id in 0..self.slabs.len() {
            self.free(id as u32);
        }
    }
}

/// A slot's states in [`PageBuffers`].
const FREE: u8 = 0;
const WRITING: u8 = 1;
const WRITTEN: u8 = 2;

/// Buffers for `len` new pages of one store, in slabs: slot `i` is written
/// once by any thread ([`write`](Self::write)), then made a record
/// ([`records`](Self::records)). Dropping it seals its slabs: a slot never
/// made a record is given back with its slab.
pub(crate) struct PageBuffers {
    store: Arc<Store>,
    /// Each slab's id and first page.
    slabs: Vec<(u32, NonNull<PageBytes>)>,
    state: Box<[AtomicU8]>,
}

// SAFETY: the slab pointers are written only through `write`, which gives
// each slot to one thread (the atomic state), and read only once written.
unsafe impl Send for PageBuffers {}
// SAFETY: as above.
unsafe impl Sync for PageBuffers {}

impl PageBuffers {
    /// Buffers for `len` pages of `store`, in `ceil(len / 31)` slabs.
    pub(crate) fn new(store: &Arc<Store>, len: usize) -> PageBuffers {
        let mut guard = store.lock();
        let slabs = (0..len.div_ceil(SLAB_PAGES))
            .map(|k| guard.pool.slabs.alloc((len - k * SLAB_PAGES).min(SLAB_PAGES)))
            .collect();
        drop(guard);
        PageBuffers { store: store.clone(), slabs, state: (0..len).map(|_| AtomicU8::new(FREE)).collect() }
    }

    /// Slot `i`'s slab id and page.
    fn slot(&self, i: usize) -> (u32, NonNull<PageBytes>) {
        let (id, base) = self.slabs[i / SLAB_PAGES];
        // SAFETY: `i % 31` is inside slab `i / 31`, whose capacity covers
        // every slot that maps to it.
        (id, unsafe { base.add(i % SLAB_PAGES) })
    }

    /// Writes `bytes` into slot `i`. False, writing nothing, when slot `i`
    /// does not exist or was written before.
    pub(crate) fn write(&self, i: usize, bytes: &PageBytes) -> bool {
        let Some(state) = self.state.get(i) else { return false };
        if state.compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        let (_, page) = self.slot(i);
        // SAFETY: this thread owns slot `i` (the exchange above), whose page
        // no record can reach yet (records are made only of written slots).
        unsafe { page.as_ptr().write(*bytes) };
        state.store(WRITTEN, Ordering::Release);
        true
    }

    /// Records of the written slots `items` (slot, fingerprint of its
    /// bytes), with their slots, in order, under one taking of the store's
    /// lock; each referenced once. A slot not written is skipped (so is one
    /// given twice: its state moves on once made).
    pub(crate) fn records(&self, items: &[(usize, u64)]) -> Vec<(usize, PageRef)> {
        let mut guard = self.store.lock();
        let mut out = Vec::with_capacity(items.len());
        for &(i, fingerprint) in items {
            let made = self.state.get(i).is_some_and(|s| {
                s.compare_exchange(WRITTEN, WRITTEN + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            });
            if made {
                let (id, page) = self.slot(i);
                let ptr = guard.new_slab_page(id, page, fingerprint);
                out.push((i, PageRef { store: self.store.clone(), ptr: Some(ptr) }));
            }
        }
        out
    }
}

impl Drop for PageBuffers {
    fn drop(&mut self) {
        let mut guard = self.store.lock();
        for &(id, _) in &self.slabs {
            guard.pool.slabs.seal(id);
        }
    }
}
