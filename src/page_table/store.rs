//! The store behind a lineage of page tables: page records, reference
//! counts and the one lock that guards them.
//!
//! ```text
//!   Store (one per lineage, Arc-shared by its tables)
//!   ├── lock: Mutex<Pool> ── held while any reference count changes
//!   │     └── chunks of PageRec (never moved: leaves point into them)
//!   ├── sources: lazily loaded files registered with this store
//!   └── loading: serializes first reads, so a frame is read once
//!
//!   PageRec (32 bytes, dense)                   page bytes (4 KiB: own heap
//!                                               buffer, or in a slab: super::slab)
//!   ┌──────────────────────────────────────┐    ┌──────────────┐
//!   │ bytes ─────────────────────────────────────►│ PageBytes    │
//!   │ fingerprint (lazy, cached)           │    └──────────────┘
//!   │ refs (under the lock)                │
//!   │ source, record (lazily loaded pages) │
//!   └──────────────────────────────────────┘
//! ```
//!
//! **Why a lock and plain counts.** A snapshot shares every node and page
//! with the live table; the next write copies the path from the root to the
//! written leaf, and every copied node adds one reference to each of its 64
//! children. With `Arc` children that is 64 atomic increments per copied
//! node, each in a different, often cold, cache line (page headers lie 4 KiB
//! apart): that was most of a snapshot's cost. Here a node's and a page's
//! reference count is a plain integer changed only while the store's lock is
//! held, and page records are dense (records frozen together sit side by
//! side), so copying a leaf is a 1,088-byte copy (states, slot words, byte
//! addresses) plus 64 non-atomic increments in a few lines. The lock is taken once per batch (a freeze,
//! a range update, dropping a version), never per page and never to read.
//!
//! **Readers take no lock.** Nodes and records are immutable once reachable
//! from more than one table; their bytes pointer and fingerprint are
//! atomics, set once. A node or record is freed only when its count reaches
//! zero, which means no table references it and so no reader can reach it.
//!
//! # Safety
//!
//! This module and [`super::node`] hold the page table's `unsafe`:
//! reference counts in `UnsafeCell`s changed only through a [`Guard`] (the
//! lock held), and raw pointers to nodes and records that stay valid while
//! a table references them. Each block states its own argument.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{PageBytes, ZERO_PAGE, fingerprint};

/// Records allocated at once when the free list runs dry.
const CHUNK: usize = 1024;

/// One stored page: where its bytes are, its fingerprint, its reference
/// count. See the module docs.
pub(crate) struct PageRec {
    /// The bytes (a `Box<PageBytes>` turned raw), or null for a lazily
    /// loaded page not read yet.
    bytes: AtomicPtr<PageBytes>,
    /// The fingerprint, valid when `fp_known`.
    fp: AtomicU64,
    fp_known: AtomicBool,
    /// Tables and nodes referencing this record; changed under the lock.
    refs: UnsafeCell<u32>,
    /// 1-based index of the lazy source in the store, or 0.
    source: u16,
    /// The record number in that source.
    record: u32,
    /// 1-based id of the slab holding the bytes ([`super::slab`]), or 0
    /// when they are a `Box` of their own; changed under the lock.
    slab: UnsafeCell<u32>,
}

// Dense records: a leaf's pages share few cache lines, and a lazily opened
// file keeps one record per stored page.
const _: () = assert!(std::mem::size_of::<PageRec>() == 32);

// SAFETY: every field but `refs` is an atomic or immutable after creation;
// `refs` is read and written only through a `Guard`, i.e. with the owning
// store's lock held, which serializes those accesses across threads.
unsafe impl Sync for PageRec {}
// SAFETY: as above; the raw bytes pointer is an owned heap buffer or a
// page of a slab the store owns.
unsafe impl Send for PageRec {}

impl PageRec {
    const fn empty() -> PageRec {
        PageRec {
            bytes: AtomicPtr::new(std::ptr::null_mut()),
            fp: AtomicU64::new(0),
            fp_known: AtomicBool::new(false),
            refs: UnsafeCell::new(0),
            source: 0,
            record: 0,
            slab: UnsafeCell::new(0),
        }
    }

    /// The page's bytes if it has them (a lazily loaded page may not yet).
    #[inline]
    pub(crate) fn loaded(&self) -> Option<&PageBytes> {
        // SAFETY: a non-null pointer is a live `Box<PageBytes>` published
        // with Release (`fill`, `Guard::new_page`) and freed only when the
        // record's count reaches zero, i.e. when no table (and so no
        // borrower of `self`) can reach it.
        unsafe { self.bytes.load(Ordering::Acquire).as_ref() }
    }

    /// The fingerprint when known without reading the page.
    #[inline]
    pub(crate) fn known_fingerprint(&self) -> Option<u64> {
        self.fp_known.load(Ordering::Acquire).then(|| self.fp.load(Ordering::Relaxed))
    }

    /// Fills a lazily loaded page with its (checked) bytes; a no-op when it
    /// has them already.
    fn fill(&self, bytes: Box<PageBytes>) {
        if !self.bytes.load(Ordering::Acquire).is_null() {
            return;
        }
        let fresh = Box::into_raw(bytes);
        if self
            .bytes
            .compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `fresh` was never published.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }

    /// Caches the fingerprint of `bytes` (this page's bytes).
    fn remember(&self, fp: u64) {
        self.fp.store(fp, Ordering::Relaxed);
        self.fp_known.store(true, Ordering::Release);
    }
}

/// Reads lazily loaded pages: one lazily opened file.
pub(crate) trait LazySource: Send + Sync {
    /// Reads, checks and decompresses the frame holding page record
    /// `record`, and calls `fill(record, bytes)` for every page record of
    /// that frame. On failure (an I/O error, a corrupt frame, a page that
    /// does not match its hash) it fills nothing and keeps the error for the
    /// file's owner; a later call tries again.
    fn load(&self, record: u32, fill: &mut dyn FnMut(u32, Box<PageBytes>));
}

/// A lazy source and its block of records. The store holds the source
/// weakly: the tables whose pages it loads hold it (see `Root::keep`), and
/// a source may hold a parent snapshot of the same store (the XOR bases of
/// an incremental file), which must not keep the store alive in a cycle.
struct Source {
    source: std::sync::Weak<dyn LazySource>,
    records: NonNull<PageRec>,
    len: u32,
    /// What the source's records hold: equal identities and record
    /// numbers mean equal bytes (a file's index hash).
    identity: [u8; 32],
    /// Serializes this source's reads, so a frame is read once. One lock per
    /// source: loading a child file's frame may read its parent's pages.
    loading: Mutex<()>,
}

// SAFETY: `records` points into a block owned by the store that owns this
// entry; the other fields are `Send + Sync`.
unsafe impl Send for Source {}
// SAFETY: as above.
unsafe impl Sync for Source {}

/// What the lock guards: the free records, every record chunk, and spare
/// page buffers and nodes for reuse (a recorder frees as many pages and
/// nodes per step as it makes: reusing them skips the allocator).
pub(super) struct Pool {
    free: Vec<NonNull<PageRec>>,
    chunks: Vec<Box<[PageRec]>>,
    spare_pages: Vec<Box<PageBytes>>,
    /// The slabs of loaded pages.
    pub(super) slabs: super::slab::SlabTable,
    // Boxes on purpose: a spare is an allocation to reuse, not a value.
    #[allow(clippy::vec_box)]
    pub(super) spare_nodes: Vec<Box<super::node::Node>>,
}

/// Spare page buffers kept for reuse (4 MiB).
const SPARE_PAGES: usize = 1024;
/// Spare nodes kept for reuse (about 1.2 MiB).
pub(super) const SPARE_NODES: usize = 1024;

/// See the module docs.
pub(crate) struct Store {
    lock: Mutex<Pool>,
    sources: Mutex<Vec<Arc<Source>>>,
}

// SAFETY: the raw record pointers in `Pool` and `Source` point into chunks
// the store owns (boxed slices that never move); all access goes through
// the mutexes.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

/// Frozen pages alive in this process (see [`crate::frozen_pages_alive`]).
static FROZEN_PAGES: AtomicU64 = AtomicU64::new(0);

/// The number of frozen pages alive in the whole process: pages held by
/// snapshots and page tables (not zero pages, not the live overlay's
/// buffers). A diagnostic for leak tests: it returns to its old value when
/// every version holding a page is dropped. Time: O(1).
pub fn frozen_pages_alive() -> u64 {
    FROZEN_PAGES.load(Ordering::Relaxed)
}

impl Store {
    pub(crate) fn new() -> Arc<Store> {
        Arc::new(Store {
            lock: Mutex::new(Pool {
                free: Vec::new(),
                chunks: Vec::new(),
                spare_pages: Vec::new(),
                slabs: Default::default(),
                spare_nodes: Vec::new(),
            }),
            sources: Mutex::new(Vec::new()),
        })
    }

    /// Takes the lock: reference counts may change while the guard lives.
    pub(crate) fn lock(&self) -> Guard<'_> {
        Guard { pool: self.lock.lock().unwrap_or_else(PoisonError::into_inner) }
    }

    /// Registers a lazy source with `len` page records (numbered `0..len`),
    /// returning a handle to each record's page: records start unreferenced
    /// and without bytes, with the given fingerprints. `identity` names what
    /// the records hold (see [`Store::origin`]).
    pub(crate) fn add_source(
        &self,
        source: &Arc<dyn LazySource>,
        fingerprints: &[u64],
        identity: [u8; 32],
    ) -> LazyRecords {
        let len = u32::try_from(fingerprints.len()).expect("record counts are bounded by the format");
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let id = u16::try_from(sources.len() + 1).expect("fewer than 65,535 sources per store");
        let block: Box<[PageRec]> = fingerprints
            .iter()
            .enumerate()
            .map(|(i, &fp)| {
                let rec = PageRec { source: id, record: i as u32, ..PageRec::empty() };
                rec.remember(fp);
                rec
            })
            .collect();
        let mut pool = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        pool.chunks.push(block);
        let chunk = pool.chunks.last_mut().expect("just pushed");
        let records = NonNull::new(chunk.as_mut_ptr()).unwrap_or(NonNull::dangling());
        sources.push(Arc::new(Source {
            source: Arc::downgrade(source),
            records,
            len,
            identity,
            loading: Mutex::new(()),
        }));
        LazyRecords { records, len }
    }

    /// Where a lazily loaded page comes from: its source's identity and its
    /// record number there (`None` for any other page). Two pages with the
    /// same origin hold the same bytes, in any store, without reading them.
    /// Time: O(1) (the sources' lock).
    pub(crate) fn origin(&self, rec: &PageRec) -> Option<([u8; 32], u32)> {
        if rec.source == 0 {
            return None;
        }
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        Some((sources[usize::from(rec.source) - 1].identity, rec.record))
    }

    /// The bytes of `rec`, reading its frame first when it is a lazily
    /// loaded page not read yet; `None` when that read fails.
    pub(crate) fn bytes<'a>(&self, rec: &'a PageRec) -> Option<&'a PageBytes> {
        if let Some(b) = rec.loaded() {
            return Some(b);
        }
        if rec.source == 0 {
            return None;
        }
        let entry =
            self.sources.lock().unwrap_or_else(PoisonError::into_inner)[usize::from(rec.source) - 1].clone();
        // One read per frame: a thread that waited here finds the page
        // filled by the read it waited for.
        let _one_at_a_time = entry.loading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = rec.loaded() {
            return Some(b);
        }
        // The table the caller reads keeps the source alive.
        let source = entry.source.upgrade()?;
        let (records, len) = (entry.records, entry.len);
        source.load(rec.record, &mut |r, bytes| {
            if r < len {
                // SAFETY: `records` is the source's block of `len` records,
                // owned by this store (which `self` keeps alive).
                unsafe { records.add(r as usize).as_ref() }.fill(bytes);
            }
        });
        rec.loaded()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Every table of this store is gone (each holds the store), so every
        // referenced record was released; what remains are the bytes of
        // lazily loaded records filled after their last release.
        let pool = self.lock.get_mut().unwrap_or_else(PoisonError::into_inner);
        for chunk in &mut pool.chunks {
            for rec in chunk.iter_mut() {
                if *rec.refs.get_mut() != 0 {
                    // Never left over today; counted out all the same.
                    FROZEN_PAGES.fetch_sub(1, Ordering::Relaxed);
                }
                let p = rec.bytes.swap(std::ptr::null_mut(), Ordering::AcqRel);
                // A slab's pages go with the slab table (below).
                if !p.is_null() && *rec.slab.get_mut() == 0 {
                    // SAFETY: the store's last owner is dropping it: no
                    // table, and so no reader, is left.
                    drop(unsafe { Box::from_raw(p) });
                }
            }
        }
    }
}

/// The records of one lazy source (see [`Store::add_source`]); valid while
/// the store lives (hold it beside them).
pub(crate) struct LazyRecords {
    records: NonNull<PageRec>,
    len: u32,
}

// SAFETY: a pointer to a block of `Sync` records owned by a store.
unsafe impl Send for LazyRecords {}
// SAFETY: as above.
unsafe impl Sync for LazyRecords {}

impl LazyRecords {
    fn rec(&self, i: u32, _store: &Store) -> &PageRec {
        assert!(i < self.len, "record {i} of {}", self.len);
        // SAFETY: in bounds of the block, which the store (borrowed by the
        // caller, who holds it beside these records) owns.
        unsafe { self.records.add(i as usize).as_ref() }
    }

    /// True when record `i` has its bytes. `store` is the store the records
    /// belong to (kept alive by the caller).
    pub(crate) fn is_loaded(&self, store: &Store, i: u32) -> bool {
        self.rec(i, store).loaded().is_some()
    }

    /// Fills record `i` with its checked bytes (a no-op when it has them).
    pub(crate) fn fill(&self, store: &Store, i: u32, bytes: Box<PageBytes>) {
        if i < self.len {
            self.rec(i, store).fill(bytes);
        }
    }

    /// Record `i`'s page, for placing into a table of the same store with
    /// [`Guard::retain_page`].
    pub(crate) fn get(&self, i: u32) -> RecPtr {
        assert!(i < self.len, "record {i} of {}", self.len);
        // SAFETY: in bounds of the block.
        RecPtr(unsafe { self.records.add(i as usize) })
    }
}

/// A pointer to a page record of some store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct RecPtr(pub(super) NonNull<PageRec>);

// SAFETY: a pointer to a `Sync` record.
unsafe impl Send for RecPtr {}
// SAFETY: as above.
unsafe impl Sync for RecPtr {}

impl RecPtr {
    /// The record. The caller holds a reference to it through a table for
    /// as long as the borrow lives.
    ///
    /// # Safety
    /// The record must stay referenced (count above zero) while the borrow
    /// lives.
    #[inline]
    pub(crate) unsafe fn get<'a>(self) -> &'a PageRec {
        // SAFETY: by the caller's promise the record is alive.
        unsafe { self.0.as_ref() }
    }

    /// The slot word a leaf stores for this page. The pointer's provenance
    /// is exposed, so [`from_word`](Self::from_word) may take it back.
    #[inline]
    pub(super) fn to_word(self) -> u64 {
        self.0.as_ptr().expose_provenance() as u64
    }

    /// The page of a leaf's slot word (non-zero, not a view page's).
    #[inline]
    pub(super) fn from_word(word: u64) -> RecPtr {
        debug_assert!(word != 0);
        // SAFETY: the word was made by `to_word` from a non-null pointer,
        // whose provenance it exposed.
        RecPtr(unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(word as usize)) })
    }
}

/// Proof that a store's lock is held: reference counts change only
/// through it.
pub(crate) struct Guard<'s> {
    pub(super) pool: MutexGuard<'s, Pool>,
}

/// A new heap page holding a copy of `src` (copied once, straight into
/// the heap).
pub(crate) fn boxed_copy(src: &PageBytes) -> Box<PageBytes> {
    let mut b = Box::<PageBytes>::new_uninit();
    // SAFETY: `b` is a fresh allocation of exactly one page; every byte is
    // written before `assume_init`.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), b.as_mut_ptr().cast::<u8>(), src.len());
        b.assume_init()
    }
}

impl Guard<'_> {
    /// A new page record owning `bytes`, referenced once (by the caller).
    pub(crate) fn new_page(&mut self, bytes: Box<PageBytes>, fingerprint: Option<u64>) -> RecPtr {
        self.init_record(Box::into_raw(bytes), 0, fingerprint)
    }

    /// A new page record whose bytes are page `bytes` of slab `slab`
    /// (written whole), referenced once (by the caller).
    pub(super) fn new_slab_page(&mut self, slab: u32, bytes: NonNull<PageBytes>, fingerprint: u64) -> RecPtr {
        self.pool.slabs.created(slab);
        self.init_record(bytes.as_ptr(), slab + 1, Some(fingerprint))
    }

    /// A free record made a page: `bytes` (a `Box` turned raw when `slab`
    /// is 0, else in the 1-based slab `slab`), referenced once.
    fn init_record(&mut self, bytes: *mut PageBytes, slab: u32, fingerprint: Option<u64>) -> RecPtr {
        let rec = match self.pool.free.pop() {
            Some(rec) => rec,
            None => {
                let chunk: Box<[PageRec]> = (0..CHUNK).map(|_| PageRec::empty()).collect();
                self.pool.chunks.push(chunk);
                let chunk = self.pool.chunks.last_mut().expect("just pushed");
                let base = chunk.as_mut_ptr();
                // Hand out the lowest addresses first: records frozen
                // together sit together, so copying a leaf touches few lines.
                self.pool.free.extend((1..CHUNK).rev().map(|i| {
                    // SAFETY: in bounds of the chunk just made.
                    NonNull::new(unsafe { base.add(i) }).expect("non-null")
                }));
                NonNull::new(base).expect("non-null")
            }
        };
        // SAFETY: a free record is referenced by nothing; the chunk lives as
        // long as the store.
        let r = unsafe { rec.as_ref() };
        debug_assert!(r.loaded().is_none() && r.source == 0);
        r.fp_known.store(false, Ordering::Relaxed);
        if let Some(fp) = fingerprint {
            r.remember(fp);
        }
        r.bytes.store(bytes, Ordering::Release);
        // SAFETY: the lock is held (`self`).
        unsafe {
            *r.refs.get() = 1;
            *r.slab.get() = slab;
        }
        FROZEN_PAGES.fetch_add(1, Ordering::Relaxed);
        RecPtr(rec)
    }

    /// Adds a reference to `rec`.
    #[inline]
    pub(crate) fn retain_page(&mut self, rec: RecPtr) {
        // SAFETY: the lock is held; `rec` is alive (referenced by the caller's
        // table) or a lazy record (its block lives with the store).
        let refs = unsafe { &mut *rec.0.as_ref().refs.get() };
        if *refs == 0 {
            FROZEN_PAGES.fetch_add(1, Ordering::Relaxed);
        }
        *refs += 1;
    }

    /// Drops a reference to `rec`, freeing it with the last.
    #[inline]
    pub(crate) fn release_page(&mut self, rec: RecPtr) {
        // SAFETY: as in `retain_page`.
        let r = unsafe { rec.0.as_ref() };
        // SAFETY: the lock is held.
        let refs = unsafe { &mut *r.refs.get() };
        debug_assert!(*refs > 0, "released an unreferenced page");
        *refs -= 1;
        if *refs == 0 {
            FROZEN_PAGES.fetch_sub(1, Ordering::Relaxed);
            let bytes = r.bytes.swap(std::ptr::null_mut(), Ordering::AcqRel);
            // SAFETY: the lock is held.
            let slab = std::mem::replace(unsafe { &mut *r.slab.get() }, 0);
            if slab != 0 {
                // The slab's memory goes with its last page.
                self.pool.slabs.released(slab - 1);
            } else if !bytes.is_null() {
                // SAFETY: the last reference is gone: no table, and so no
                // reader, can reach the record or its bytes.
                let bytes = unsafe { Box::from_raw(bytes) };
                if self.pool.spare_pages.len() < SPARE_PAGES {
                    self.pool.spare_pages.push(bytes);
                }
            }
            if r.source == 0 {
                self.pool.free.push(rec.0);
            }
        }
    }

    /// A spare page buffer (contents stale), if one was freed lately.
    pub(crate) fn take_spare_page(&mut self) -> Option<Box<PageBytes>> {
        self.pool.spare_pages.pop()
    }

    /// References to `rec` (for sharing statistics).
    pub(crate) fn page_refs(&self, rec: RecPtr) -> u32 {
        // SAFETY: the lock is held; the caller's table references `rec`.
        unsafe { *rec.0.as_ref().refs.get() }
    }
}

/// The fingerprint of a record's page, computed from its bytes on first
/// need and cached; `None` for a lazily loaded page whose bytes cannot be
/// read and whose fingerprint is unknown (never: lazy pages carry theirs).
pub(crate) fn fingerprint_of(store: &Store, rec: &PageRec) -> Option<u64> {
    if let Some(fp) = rec.known_fingerprint() {
        return Some(fp);
    }
    let bytes = store.bytes(rec)?;
    let fp = fingerprint(bytes);
    rec.remember(fp);
    Some(fp)
}

/// True when `bytes` is the zero page. Stops at the first non-zero word, so
/// a written page costs a cache line or two, not 4 KiB.
#[inline]
pub(crate) fn is_zero_page(bytes: &PageBytes) -> bool {
    bytes.chunks_exact(64).all(|c| c == &ZERO_PAGE[..64])
}
