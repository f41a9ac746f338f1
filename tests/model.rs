//! Model-based property test: random operation sequences run against
//! `vmsnap::MemoryManager` and against a trivially correct reference model
//! (plain `BTreeMap`s of pages and allocations), compared after every step.
//!
//! Ops: allocate (fixed address and first fit), MMIO regions, commit,
//! decommit, release (whole and partial), protect, host and guest reads and
//! writes, guest fetches, snapshot, restore (to any kept snapshot), dropping a
//! kept snapshot, unmap-all, default-address changes; with hostile inputs
//! (size 0, overflowing ranges, ranges past user space, misaligned bases,
//! invalid protections and kinds).
//!
//! Every step checks the op's result (Ok/Err; the exact error for guest and
//! host accesses; old protection; bytes read; first-fit base; MMIO handler
//! calls), `overlaps_reserved_region` / `find_free_allocation_base` before it,
//! the layout version, and then the whole observable state: `reserved_regions`,
//! `compute_memory_stats`, `region_info` (length included), `region_kind`,
//! `page_protection` and one-byte host reads of every page in the address
//! window and of every allocated page, and the bytes of every committed page;
//! `live_versions` equals the number of snapshots kept, and
//! `diff_from(kept snapshot)` lists exactly the pages (with their change kind)
//! whose committed-ness or bytes differ between the model's saved copy and the
//! model now. `diff_from` folds the dirty pages into the page table, so in half
//! of the cases (`sparse_diffs`) it runs only every `SPARSE_DIFF_STRIDE` steps,
//! letting dirty pages meet decommits, snapshots and restores as before.
//! At the end of each case every kept `Snapshot` is checked the same way
//! against the model's copy, and `Snapshot::diff` between every pair of them.
//!
//! `CASES` x `OPS_PER_CASE` ops per run; `PROPTEST_CASES=n` runs more.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use vmsnap::{
    Access, AddressSpace, MemoryError, MemoryManager, PageChangeKind, Protection, RegionInfo, RegionKind,
    ReservedRegion, Snapshot, USER_SPACE_END,
};

mod common;

const PAGE: u64 = 0x1000;
const GRAN: u64 = 0x10000;
const MIN_ALLOC: u64 = 0x10000;
/// Every page below this is checked after every step (allocations outside it
/// are checked page by page too).
const WINDOW_END: u64 = 0xc_0000;
const CASES: u32 = 64;
const OPS_PER_CASE: usize = 160;
const MAX_SNAPSHOTS: usize = 8;
/// With `sparse_diffs`, `diff_from` is checked every this many steps.
const SPARSE_DIFF_STRIDE: usize = 8;

// ------------------------------------------------------------------ helpers

/// A `u64` that prints in hex, so failing op sequences are readable.
#[derive(Clone, Copy, PartialEq, Eq)]
struct H(u64);

impl fmt::Debug for H {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

fn page_down(a: u64) -> u64 {
    a - a % PAGE
}

fn page_up(a: u64) -> Option<u64> {
    if a.is_multiple_of(PAGE) { Some(a) } else { page_down(a).checked_add(PAGE) }
}

fn granule_up(a: u64) -> Option<u64> {
    if a.is_multiple_of(GRAN) { Some(a) } else { (a - a % GRAN).checked_add(GRAN) }
}

/// The pages touched by `[address, address + size)`, or `None` for size 0,
/// overflow, or an end past user space.
fn page_range(address: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 {
        return None;
    }
    let end = address.checked_add(size)?;
    if end > USER_SPACE_END {
        return None;
    }
    Some((page_down(address), page_up(end)?))
}

/// Written independently of `Protection::is_valid`: only known bits, no
/// write without read, no guard without some access.
fn prot_valid(p: Protection) -> bool {
    let b = p.bits();
    if b & !0x0f != 0 {
        return false;
    }
    if b & 2 != 0 && b & 1 == 0 {
        return false;
    }
    if b & 8 != 0 && b & 7 == 0 {
        return false;
    }
    true
}

fn kind_allocatable(k: RegionKind) -> bool {
    !matches!(k, RegionKind::Free | RegionKind::Mmio)
}

fn allows(p: Protection, access: Access) -> bool {
    match access {
        Access::Read => p.contains(Protection::READ),
        Access::Write => p.contains(Protection::WRITE),
        Access::Execute => p.contains(Protection::EXECUTE),
    }
}

/// Period of the noise stream: prime, so that whole pages cut from it differ.
const NOISE_PERIOD: usize = 4093;

/// Two periods of a pseudo-random byte stream: any window of up to one
/// period starting in the first is contiguous. Used for written data and for
/// what MMIO handlers return (byte loops are slow in debug builds).
fn noise() -> &'static [u8; 2 * NOISE_PERIOD] {
    static NOISE: OnceLock<[u8; 2 * NOISE_PERIOD]> = OnceLock::new();
    NOISE.get_or_init(|| {
        let mut out = [0u8; 2 * NOISE_PERIOD];
        common::Rng(0x9e37_79b9_7f4a_7c15).fill(&mut out[..NOISE_PERIOD]);
        out.copy_within(..NOISE_PERIOD, NOISE_PERIOD);
        out
    })
}

/// Fills `buf` with the noise stream starting at position `start`.
fn fill_noise(start: u64, buf: &mut [u8]) {
    let mut pos = (start % NOISE_PERIOD as u64) as usize;
    for chunk in buf.chunks_mut(NOISE_PERIOD) {
        chunk.copy_from_slice(&noise()[pos..pos + chunk.len()]);
        pos = (pos + chunk.len()) % NOISE_PERIOD;
    }
}

/// What the handler of the MMIO region based at `base` reads at `offset`.
fn fill_mmio(base: u64, offset: u64, buf: &mut [u8]) {
    fill_noise((base >> 12).wrapping_mul(0x35) + offset, buf);
}

/// Data written by write ops.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_noise(u64::from(seed) * 0x61, &mut out);
    out
}

fn zero_page() -> Box<[u8; 4096]> {
    Box::new([0u8; 4096])
}

// -------------------------------------------------------------------- model

#[derive(Clone)]
struct ModelPage {
    prot: Protection,
    bytes: Box<[u8; 4096]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelAlloc {
    length: u64,
    initial: Protection,
    kind: RegionKind,
    is_mmio: bool,
}

#[derive(Clone)]
struct Model {
    /// Committed pages by page address.
    pages: BTreeMap<u64, ModelPage>,
    /// Allocations by base.
    allocs: BTreeMap<u64, ModelAlloc>,
    default_alloc: u64,
}

/// One MMIO handler call: (write?, region base, offset, length).
type MmioCall = (bool, u64, u64, usize);

#[derive(Debug, PartialEq, Eq)]
enum GuestOutcome {
    Done,
    Violation(u64),
    Guard(u64),
    /// `address + len` overflows: any error, nothing changes.
    Overflow,
}

impl Model {
    fn new(default_alloc: u64) -> Self {
        Model { pages: BTreeMap::new(), allocs: BTreeMap::new(), default_alloc }
    }

    fn containing(&self, addr: u64) -> Option<(u64, ModelAlloc)> {
        self.allocs.range(..=addr).next_back().filter(|(b, a)| addr < **b + a.length).map(|(b, a)| (*b, *a))
    }

    fn overlaps(&self, lo: u64, hi: u64) -> Option<(u64, ModelAlloc)> {
        self.allocs.iter().find(|(b, a)| **b < hi && lo < **b + a.length).map(|(b, a)| (*b, *a))
    }

    /// The allocation that holds all of `[lo, hi)`.
    fn enclosing(&self, lo: u64, hi: u64) -> Option<(u64, ModelAlloc)> {
        self.containing(lo).filter(|(b, a)| hi <= b + a.length)
    }

    /// Page addresses from page-aligned `lo` up to (not including) `hi`.
    fn pages_in(lo: u64, hi: u64) -> impl DoubleEndedIterator<Item = u64> {
        (lo / PAGE..hi.div_ceil(PAGE)).map(|i| i * PAGE)
    }

    fn allocate_at(
        &mut self,
        address: u64,
        size: u64,
        prot: Protection,
        reserve_only: bool,
        kind: RegionKind,
    ) -> bool {
        if !kind_allocatable(kind) || !prot_valid(prot) {
            return false;
        }
        if !address.is_multiple_of(GRAN) || address < MIN_ALLOC {
            return false;
        }
        let Some((lo, hi)) = page_range(address, size) else { return false };
        if self.overlaps(lo, hi).is_some() {
            return false;
        }
        self.allocs.insert(lo, ModelAlloc { length: hi - lo, initial: prot, kind, is_mmio: false });
        if !reserve_only {
            for p in Self::pages_in(lo, hi) {
                self.pages.insert(p, ModelPage { prot, bytes: zero_page() });
            }
        }
        true
    }

    fn find_free(&self, size: u64, start: u64) -> Option<u64> {
        if size == 0 {
            return None;
        }
        let start = if start == 0 { self.default_alloc } else { start };
        if start >= USER_SPACE_END {
            return None;
        }
        let size = page_up(size)?;
        let mut c = granule_up(start.max(MIN_ALLOC))?;
        loop {
            let end = c.checked_add(size)?;
            if end > USER_SPACE_END {
                return None;
            }
            match self.overlaps(c, end) {
                None => return Some(c),
                // Every candidate below that allocation's end overlaps it too.
                Some((b, a)) => c = granule_up(b + a.length)?,
            }
        }
    }

    fn allocate(
        &mut self,
        size: u64,
        prot: Protection,
        reserve_only: bool,
        start: u64,
        kind: RegionKind,
    ) -> Option<u64> {
        if !kind_allocatable(kind) || !prot_valid(prot) || size == 0 {
            return None;
        }
        let base = self.find_free(size, start)?;
        assert!(self.allocate_at(base, size, prot, reserve_only, kind), "model: free base refused");
        Some(base)
    }

    fn allocate_mmio(&mut self, address: u64, size: u64) -> bool {
        if !address.is_multiple_of(PAGE) || address < MIN_ALLOC {
            return false;
        }
        let Some((lo, hi)) = page_range(address, size) else { return false };
        if self.overlaps(lo, hi).is_some() {
            return false;
        }
        self.allocs.insert(
            lo,
            ModelAlloc {
                length: hi - lo,
                initial: Protection::READ_WRITE,
                kind: RegionKind::Mmio,
                is_mmio: true,
            },
        );
        for p in Self::pages_in(lo, hi) {
            self.pages.insert(p, ModelPage { prot: Protection::READ_WRITE, bytes: zero_page() });
        }
        true
    }

    fn commit(&mut self, address: u64, size: u64, prot: Protection) -> bool {
        if !prot_valid(prot) {
            return false;
        }
        let Some((lo, hi)) = page_range(address, size) else { return false };
        match self.enclosing(lo, hi) {
            Some((_, a)) if !a.is_mmio => {}
            _ => return false,
        }
        for p in Self::pages_in(lo, hi) {
            self.pages
                .entry(p)
                .and_modify(|pg| pg.prot = prot)
                .or_insert_with(|| ModelPage { prot, bytes: zero_page() });
        }
        true
    }

    fn decommit(&mut self, address: u64, size: u64) -> bool {
        let Some((lo, hi)) = page_range(address, size) else { return false };
        match self.enclosing(lo, hi) {
            Some((_, a)) if !a.is_mmio => {}
            _ => return false,
        }
        for p in Self::pages_in(lo, hi) {
            self.pages.remove(&p);
        }
        true
    }

    fn release(&mut self, address: u64, size: u64) -> bool {
        if size == 0 {
            let base = page_down(address);
            let Some((b, a)) = self.containing(base) else { return false };
            if b != base {
                return false;
            }
            self.allocs.remove(&b);
            for p in Self::pages_in(b, b + a.length) {
                self.pages.remove(&p);
            }
            return true;
        }
        let Some((lo, hi)) = page_range(address, size) else { return false };
        let Some((b, a)) = self.enclosing(lo, hi) else { return false };
        let end = b + a.length;
        if a.is_mmio && (lo, hi) != (b, end) {
            return false;
        }
        self.allocs.remove(&b);
        if lo > b {
            self.allocs.insert(b, ModelAlloc { length: lo - b, ..a });
        }
        if hi < end {
            self.allocs.insert(hi, ModelAlloc { length: end - hi, ..a });
        }
        for p in Self::pages_in(lo, hi) {
            self.pages.remove(&p);
        }
        true
    }

    fn protect(&mut self, address: u64, size: u64, prot: Protection) -> Option<Protection> {
        if !prot_valid(prot) {
            return None;
        }
        let (lo, hi) = page_range(address, size)?;
        match self.enclosing(lo, hi) {
            Some((_, a)) if !a.is_mmio => {}
            _ => return None,
        }
        if !Self::pages_in(lo, hi).all(|p| self.pages.contains_key(&p)) {
            return None;
        }
        let old = self.pages[&lo].prot;
        for p in Self::pages_in(lo, hi) {
            self.pages.get_mut(&p).unwrap().prot = prot;
        }
        Some(old)
    }

    /// Host view: `Ok`, or the documented error at the first byte that cannot
    /// be accessed (`NotCommitted` inside an allocation, else `NotAllocated`);
    /// `None` when `address + len` overflows (any error will do).
    fn host_result(&self, address: u64, len: usize) -> Option<Result<(), MemoryError>> {
        if len == 0 {
            return Some(Ok(()));
        }
        let end = address.checked_add(len as u64)?;
        for p in Self::pages_in(page_down(address), end) {
            if !self.pages.contains_key(&p) {
                let address = p.max(address);
                return Some(Err(if self.containing(address).is_some() {
                    MemoryError::NotCommitted { address }
                } else {
                    MemoryError::NotAllocated { address }
                }));
            }
        }
        Some(Ok(()))
    }

    fn host_ok(&self, address: u64, len: usize) -> bool {
        self.host_result(address, len) == Some(Ok(()))
    }

    /// Splits `[address, address + len)` into its per-page pieces:
    /// (page, offset in page, offset in the range, length).
    fn pieces(address: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let end = address + len as u64;
        let (first, last) = if len == 0 { (0, 0) } else { (page_down(address), end) };
        Self::pages_in(first, last).map(move |p| {
            let lo = p.max(address);
            let hi = (p + PAGE).min(end);
            (p, (lo - p) as usize, (lo - address) as usize, (hi - lo) as usize)
        })
    }

    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        if !self.host_ok(address, len) {
            return None;
        }
        let mut out = vec![0u8; len];
        for (p, in_page, at, n) in Self::pieces(address, len) {
            let (b, a) = self.containing(p).expect("committed page is allocated");
            if a.is_mmio {
                fill_mmio(b, p + in_page as u64 - b, &mut out[at..at + n]);
            } else {
                out[at..at + n].copy_from_slice(&self.pages[&p].bytes[in_page..in_page + n]);
            }
        }
        Some(out)
    }

    /// Stores `data` (already checked); MMIO pages keep reading their handler
    /// (and keep zero bytes in the model).
    fn store(&mut self, address: u64, data: &[u8]) {
        for (p, in_page, at, n) in Self::pieces(address, data.len()) {
            if self.is_mmio(p) {
                continue;
            }
            let pg = self.pages.get_mut(&p).expect("checked");
            pg.bytes[in_page..in_page + n].copy_from_slice(&data[at..at + n]);
        }
    }

    fn is_mmio(&self, address: u64) -> bool {
        self.containing(address).is_some_and(|(_, a)| a.is_mmio)
    }

    /// The MMIO handler calls an (allowed) access of `[address, address + len)`
    /// makes: one per contiguous run inside one MMIO region.
    fn mmio_calls(&self, write: bool, address: u64, len: usize) -> Vec<MmioCall> {
        let mut calls = Vec::new();
        let end = address + len as u64;
        let mut at = address;
        while at < end {
            let (b, a) = self.containing(at).expect("accessed byte is allocated");
            if a.is_mmio {
                let n = end.min(b + a.length) - at;
                calls.push((write, b, at - b, n as usize));
                at += n;
            } else {
                at = (page_down(at) + PAGE).min(end);
            }
        }
        calls
    }

    /// Guest access check; a guard page met first loses its guard bit.
    fn guest(&mut self, address: u64, len: usize, access: Access) -> GuestOutcome {
        if len == 0 {
            return GuestOutcome::Done;
        }
        let Some(end) = address.checked_add(len as u64) else { return GuestOutcome::Overflow };
        for p in Self::pages_in(page_down(address), end) {
            let at = p.max(address);
            match self.pages.get_mut(&p) {
                None => return GuestOutcome::Violation(at),
                Some(pg) if !allows(pg.prot, access) => return GuestOutcome::Violation(at),
                Some(pg) if pg.prot.contains(Protection::GUARD) => {
                    pg.prot.remove(Protection::GUARD);
                    return GuestOutcome::Guard(at);
                }
                Some(_) => {}
            }
        }
        GuestOutcome::Done
    }

    fn reserved_regions(&self) -> Vec<ReservedRegion> {
        self.allocs
            .iter()
            .map(|(b, a)| ReservedRegion {
                base: *b,
                length: a.length,
                kind: a.kind,
                initial_permissions: a.initial,
                attributes: 0,
            })
            .collect()
    }

    /// `region_info` of every allocated page, by page address.
    fn allocated_infos(&self) -> BTreeMap<u64, RegionInfo> {
        let mut out = BTreeMap::new();
        for (&b, a) in &self.allocs {
            let end = b + a.length;
            let mut next: Option<(Option<Protection>, u64)> = None; // (key, run end) of page + 1
            for p in Self::pages_in(b, end).rev() {
                let key = self.pages.get(&p).map(|pg| pg.prot);
                let run_end = match next {
                    Some((k, e)) if k == key => e,
                    _ => p + PAGE,
                };
                next = Some((key, run_end));
                out.insert(
                    p,
                    RegionInfo {
                        start: p,
                        length: run_end - p,
                        allocation_base: b,
                        allocation_length: a.length,
                        is_reserved: true,
                        is_committed: key.is_some(),
                        permissions: key.unwrap_or(Protection::empty()),
                        initial_permissions: a.initial,
                        kind: a.kind,
                        attributes: 0,
                    },
                );
            }
        }
        out
    }

    fn free_info(&self, address: u64) -> RegionInfo {
        let start = page_down(address);
        let length = if address >= USER_SPACE_END {
            0
        } else {
            let next = self.allocs.range(address + 1..).next().map_or(USER_SPACE_END, |(b, _)| *b);
            next - start
        };
        common::free_info(start, length)
    }

    /// Addresses (not all page aligned) whose region info and host readability
    /// are checked: every window page, every allocated page, the pages around
    /// each allocation, and the top of user space.
    fn query_addresses(&self) -> Vec<u64> {
        let mut pages: Vec<u64> = Self::pages_in(0, WINDOW_END).collect();
        for (&b, a) in &self.allocs {
            let end = b + a.length;
            pages.extend(Self::pages_in(b.max(WINDOW_END), end.max(WINDOW_END)));
            pages.push(end);
            pages.push(b - PAGE);
        }
        pages.extend([USER_SPACE_END - PAGE, USER_SPACE_END, u64::MAX - PAGE + 1]);
        pages.sort_unstable();
        pages.dedup();
        // A varying offset inside the page: region_info rounds down.
        pages.into_iter().map(|p| p + ((p >> 12).wrapping_mul(0x1d3) & 0xfff)).collect()
    }
}

// ----------------------------------------------------------------------- ops

/// The address of a range operation or access: absolute, or relative to the
/// `alloc`-th allocation (modulo their number, in address order) existing
/// when the op runs, so that ops hit allocations often. Failure messages
/// print the resolved address too.
#[derive(Clone, Copy)]
enum Addr {
    Abs(u64),
    /// `base(allocation) + (page % pages) * PAGE + offset`; with no
    /// allocation: `0x10000 + page * PAGE + offset`.
    In {
        alloc: usize,
        page: u64,
        offset: u64,
    },
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Addr::Abs(a) => write!(f, "{a:#x}"),
            Addr::In { alloc, page, offset } => write!(f, "alloc[{alloc}]+page[{page}]+{offset:#x}"),
        }
    }
}

impl Model {
    fn resolve(&self, addr: Addr) -> u64 {
        match addr {
            Addr::Abs(a) => a,
            Addr::In { alloc, page, offset } => {
                let (base, pages) = if self.allocs.is_empty() {
                    (MIN_ALLOC, page + 1)
                } else {
                    let (b, a) = self.allocs.iter().nth(alloc % self.allocs.len()).unwrap();
                    (*b, a.length / PAGE)
                };
                base + (page % pages) * PAGE + offset
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    AllocAt { address: H, size: H, prot: Protection, reserve_only: bool, kind: RegionKind },
    Alloc { size: H, prot: Protection, reserve_only: bool, start: H, kind: RegionKind },
    AllocMmio { address: H, size: H },
    Commit { address: Addr, size: H, prot: Protection },
    Decommit { address: Addr, size: H },
    Release { address: Addr, size: H },
    Protect { address: Addr, size: H, prot: Protection },
    Write { address: Addr, len: usize, seed: u8 },
    Read { address: Addr, len: usize },
    GuestRead { address: Addr, len: usize },
    GuestWrite { address: Addr, len: usize, seed: u8 },
    GuestFetch { address: Addr, len: usize },
    Snapshot,
    Restore { index: usize },
    DropSnapshot { index: usize },
    UnmapAll,
    SetDefault { address: H },
}

/// The op sequence of a case: `OPS_PER_CASE` slots, each holding an op that
/// shrinking can switch off (`None`), so every case runs the full number of
/// ops yet a failure shrinks to a short sequence. `Debug` lists only the ops
/// that run, with their slot numbers.
#[derive(Clone)]
struct Ops {
    ops: Vec<Option<Op>>,
    /// Check `diff_from` only every `SPARSE_DIFF_STRIDE` steps (else after every step).
    sparse_diffs: bool,
}

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sparse_diffs: {}, [", self.sparse_diffs)?;
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(op) = op {
                writeln!(f, "    /* {i:3} */ {op:?},")?;
            }
        }
        write!(f, "]")
    }
}

/// Generates `Some(value)`; shrinks first to `None`, and only when the failure
/// needs the op, shrinks the op itself.
#[derive(Debug)]
struct Slot<S>(S);

impl<S: Strategy> Strategy for Slot<S> {
    type Tree = SlotTree<S::Tree>;
    type Value = Option<S::Value>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        Ok(SlotTree { inner: self.0.new_tree(runner)?, on: true, tried_off: false, last: SlotStep::None })
    }
}

#[derive(Clone, Copy)]
enum SlotStep {
    None,
    Off,
    Inner,
}

struct SlotTree<T> {
    inner: T,
    on: bool,
    tried_off: bool,
    last: SlotStep,
}

impl<T: ValueTree> ValueTree for SlotTree<T> {
    type Value = Option<T::Value>;

    fn current(&self) -> Self::Value {
        self.on.then(|| self.inner.current())
    }

    fn simplify(&mut self) -> bool {
        if !self.on {
            return false;
        }
        if !self.tried_off {
            self.tried_off = true;
            self.on = false;
            self.last = SlotStep::Off;
            return true;
        }
        if self.inner.simplify() {
            self.last = SlotStep::Inner;
            true
        } else {
            self.last = SlotStep::None;
            false
        }
    }

    fn complicate(&mut self) -> bool {
        match self.last {
            SlotStep::Off => {
                self.on = true;
                self.last = SlotStep::None;
                true
            }
            SlotStep::Inner => {
                if self.inner.complicate() {
                    true
                } else {
                    self.last = SlotStep::None;
                    false
                }
            }
            SlotStep::None => false,
        }
    }
}

fn hostile_addr() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![
        0,
        0x1000,
        0xffff,
        USER_SPACE_END - GRAN,
        USER_SPACE_END - PAGE,
        USER_SPACE_END,
        USER_SPACE_END + PAGE,
        u64::MAX - GRAN + 1,
        u64::MAX - PAGE + 1,
        u64::MAX,
    ])
}

fn hostile_size() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![0, u64::MAX, u64::MAX - 0xfff, USER_SPACE_END, 1 << 63])
}

/// Addresses for range operations and accesses: mostly in the window.
fn range_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0x10u64..0x90).prop_map(|p| p * PAGE),
        2 => 0x10000u64..0x90000,
        2 => (1u64..=8).prop_map(|g| g * GRAN),
        1 => (0x11u64..0x90, 1u64..=8).prop_map(|(p, k)| p * PAGE - k),
        1 => hostile_addr(),
    ]
}

/// Addresses of range operations and accesses: often inside an allocation.
fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        2 => range_addr().prop_map(Addr::Abs),
        4 => (0usize..8, 0u64..32, prop_oneof![
            6 => Just(0u64),
            1 => 1u64..PAGE,
            1 => (PAGE - 8)..PAGE,
        ])
            .prop_map(|(alloc, page, offset)| Addr::In { alloc, page, offset }),
    ]
}

fn alloc_base() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (1u64..=8).prop_map(|g| g * GRAN),
        1 => (0x10u64..0x90).prop_map(|p| p * PAGE),
        1 => hostile_addr(),
    ]
}

fn mmio_base() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0x10u64..0x90).prop_map(|p| p * PAGE),
        1 => 0x10000u64..0x90000,
        1 => hostile_addr(),
    ]
}

/// Sizes of new allocations.
fn alloc_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (1u64..=3).prop_map(|g| g * GRAN),
        4 => (1u64..=32).prop_map(|p| p * PAGE),
        2 => 1u64..=0x20000,
        1 => hostile_size(),
    ]
}

/// Sizes of commit / decommit / protect / release ranges.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (1u64..=4).prop_map(|p| p * PAGE),
        4 => (1u64..=16).prop_map(|p| p * PAGE),
        2 => 1u64..=0x20000,
        1 => hostile_size(),
    ]
}

fn access_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..=16,
        3 => 1usize..=0x2000,
        1 => Just(PAGE as usize),
        1 => Just(0usize),
    ]
}

fn prot() -> impl Strategy<Value = Protection> {
    let valid = vec![
        Protection::empty(),
        Protection::READ,
        Protection::READ_WRITE,
        Protection::EXECUTE,
        Protection::READ_EXECUTE,
        Protection::ALL_ACCESS,
        Protection::READ_WRITE | Protection::GUARD,
        Protection::READ | Protection::GUARD,
    ];
    let invalid = vec![
        Protection::WRITE,
        Protection::GUARD,
        Protection::from_bits_retain(0x40),
        Protection::WRITE | Protection::EXECUTE,
    ];
    prop_oneof![
        20 => prop::sample::select(valid),
        1 => prop::sample::select(invalid),
    ]
}

fn kind() -> impl Strategy<Value = RegionKind> {
    prop_oneof![
        12 => Just(RegionKind::Private),
        2 => Just(RegionKind::Image),
        2 => Just(RegionKind::FileView),
        2 => Just(RegionKind::PagefileView),
        1 => Just(RegionKind::Free),
        1 => Just(RegionKind::Mmio),
    ]
}

fn reserve_only() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.3)
}

fn op() -> impl Strategy<Value = Op> {
    let h = |s: BoxedStrategy<u64>| s.prop_map(H);
    prop_oneof![
        10 => (h(alloc_base().boxed()), h(alloc_size().boxed()), prot(), reserve_only(), kind())
            .prop_map(|(address, size, prot, reserve_only, kind)| Op::AllocAt {
                address, size, prot, reserve_only, kind
            }),
        5 => (
            h(alloc_size().boxed()),
            prot(),
            reserve_only(),
            h(prop_oneof![
                4 => Just(0u64),
                3 => (0x1u64..0x90).prop_map(|p| p * PAGE),
                1 => 0x10000u64..0x90000,
                1 => hostile_addr(),
            ]
            .boxed()),
            kind(),
        )
            .prop_map(|(size, prot, reserve_only, start, kind)| Op::Alloc {
                size, prot, reserve_only, start, kind
            }),
        2 => (h(mmio_base().boxed()), h(alloc_size().boxed()))
            .prop_map(|(address, size)| Op::AllocMmio { address, size }),
        10 => (addr(), h(size().boxed()), prot())
            .prop_map(|(address, size, prot)| Op::Commit { address, size, prot }),
        6 => (addr(), h(size().boxed()))
            .prop_map(|(address, size)| Op::Decommit { address, size }),
        6 => (
            addr(),
            h(prop_oneof![3 => Just(0u64), 4 => size()].boxed()),
        )
            .prop_map(|(address, size)| Op::Release { address, size }),
        10 => (addr(), h(size().boxed()), prot())
            .prop_map(|(address, size, prot)| Op::Protect { address, size, prot }),
        10 => (addr(), access_len(), 1u8..=255)
            .prop_map(|(address, len, seed)| Op::Write { address, len, seed }),
        5 => (addr(), access_len())
            .prop_map(|(address, len)| Op::Read { address, len }),
        8 => (addr(), access_len())
            .prop_map(|(address, len)| Op::GuestRead { address, len }),
        8 => (addr(), access_len(), 1u8..=255)
            .prop_map(|(address, len, seed)| Op::GuestWrite { address, len, seed }),
        5 => (addr(), access_len())
            .prop_map(|(address, len)| Op::GuestFetch { address, len }),
        4 => Just(Op::Snapshot),
        3 => (0usize..MAX_SNAPSHOTS).prop_map(|index| Op::Restore { index }),
        2 => (0usize..MAX_SNAPSHOTS).prop_map(|index| Op::DropSnapshot { index }),
        1 => Just(Op::UnmapAll),
        1 => h(prop::sample::select(vec![0u64, 0x10000, 0x23456, 0x40000, 0xa0000]).boxed())
            .prop_map(|address| Op::SetDefault { address }),
    ]
}

fn ops() -> impl Strategy<Value = Ops> {
    (prop::collection::vec(Slot(op()), OPS_PER_CASE), any::<bool>())
        .prop_map(|(ops, sparse_diffs)| Ops { ops, sparse_diffs })
}

// ------------------------------------------------------------------ harness

fn check_view(v: &impl AddressSpace, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(v.reserved_regions().collect::<Vec<_>>(), m.reserved_regions(), "reserved_regions");
    let stats = v.compute_memory_stats();
    let reserved: u64 = m.allocs.values().map(|a| a.length).sum();
    prop_assert_eq!(stats.reserved_memory, reserved, "reserved_memory");
    prop_assert_eq!(stats.committed_memory, m.pages.len() as u64 * PAGE, "committed_memory");
    prop_assert_eq!(stats.allocation_count, m.allocs.len() as u64, "allocation_count");
    prop_assert_eq!(v.default_allocation_address(), m.default_alloc, "default_allocation_address");

    let infos = m.allocated_infos();
    let mut byte = [0u8; 1];
    for q in m.query_addresses() {
        let p = page_down(q);
        let expected = infos.get(&p).copied().unwrap_or_else(|| m.free_info(q));
        prop_assert_eq!(v.region_info(q), expected, "region_info({:#x})", q);
        prop_assert_eq!(v.region_kind(q), expected.kind, "region_kind({:#x})", q);
        let want = expected.is_committed.then_some(expected.permissions);
        prop_assert_eq!(v.page_protection(q), want, "page_protection({:#x})", q);
        // Host readability of one byte, with the documented error.
        let got = v.read_memory(q, &mut byte);
        let want = if expected.is_committed {
            Ok(())
        } else if expected.is_reserved {
            Err(MemoryError::NotCommitted { address: q })
        } else {
            Err(MemoryError::NotAllocated { address: q })
        };
        prop_assert_eq!(got, want, "read_memory({:#x}, 1)", q);
    }

    let mut buf = vec![0u8; PAGE as usize];
    for (&p, pg) in &m.pages {
        prop_assert!(v.read_memory(p, &mut buf).is_ok(), "read of committed page {:#x} failed", p);
        let (b, a) = m.containing(p).expect("committed page is allocated");
        if a.is_mmio {
            let mut want = vec![0u8; PAGE as usize];
            fill_mmio(b, p - b, &mut want);
            prop_assert!(buf == want, "MMIO bytes of page {:#x} differ", p);
        } else if buf[..] != pg.bytes[..] {
            let i = buf.iter().zip(pg.bytes.iter()).position(|(x, y)| x != y).unwrap();
            prop_assert!(
                false,
                "bytes of page {:#x} differ at +{:#x}: engine {:#x}, model {:#x}",
                p,
                i,
                buf[i],
                pg.bytes[i]
            );
        }
    }
    Ok(())
}

/// `Snapshot::diff` both ways: pages committed in exactly one version, or in
/// both with different bytes. Pages of MMIO regions (whose bytes come from
/// handlers; the diff does not define them) are left out on both sides.
fn check_diff(x: &SavedSnapshot, y: &SavedSnapshot) -> Result<(), TestCaseError> {
    let (mx, my) = (&x.model, &y.model);
    let mmio = |p: u64| mx.is_mmio(p) || my.is_mmio(p);
    let mut want: Vec<u64> = mx.pages.keys().chain(my.pages.keys()).copied().collect();
    want.sort_unstable();
    want.dedup();
    want.retain(|&p| {
        !mmio(p)
            && match (mx.pages.get(&p), my.pages.get(&p)) {
                (Some(a), Some(b)) => a.bytes != b.bytes,
                _ => true,
            }
    });
    let forward: Vec<u64> = x.snapshot.diff(&y.snapshot).changed_pages().filter(|&p| !mmio(p)).collect();
    let backward: Vec<u64> = y.snapshot.diff(&x.snapshot).changed_pages().filter(|&p| !mmio(p)).collect();
    prop_assert_eq!(&forward, &want, "changed_pages");
    prop_assert_eq!(&backward, &want, "changed_pages (reverse order)");
    Ok(())
}

/// The pages whose committed-ness or bytes differ from model `old` to model
/// `new`, with how they changed; MMIO pages left out.
fn page_changes(old: &Model, new: &Model) -> Vec<(u64, PageChangeKind)> {
    let mut all: Vec<u64> = old.pages.keys().chain(new.pages.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    all.into_iter()
        .filter(|&p| !old.is_mmio(p) && !new.is_mmio(p))
        .filter_map(|p| match (old.pages.get(&p), new.pages.get(&p)) {
            (Some(a), Some(b)) => (a.bytes != b.bytes).then_some((p, PageChangeKind::Modified)),
            (Some(_), None) => Some((p, PageChangeKind::Decommitted)),
            (None, Some(_)) => Some((p, PageChangeKind::Committed)),
            (None, None) => None,
        })
        .collect()
}

struct SavedSnapshot {
    snapshot: Snapshot,
    model: Model,
    layout_version: u64,
}

struct Harness {
    mm: MemoryManager,
    model: Model,
    snapshots: Vec<SavedSnapshot>,
    log: Arc<Mutex<Vec<MmioCall>>>,
}

fn guest_expect(outcome: &GuestOutcome, access: Access) -> Option<Result<(), MemoryError>> {
    match *outcome {
        GuestOutcome::Done => Some(Ok(())),
        GuestOutcome::Violation(address) => Err(MemoryError::AccessViolation { address, access }).into(),
        GuestOutcome::Guard(address) => Err(MemoryError::GuardPageViolation { address, access }).into(),
        GuestOutcome::Overflow => None,
    }
}

impl Harness {
    fn new() -> Self {
        let mut mm = MemoryManager::new();
        mm.set_default_allocation_address(MIN_ALLOC);
        Harness { mm, model: Model::new(MIN_ALLOC), snapshots: Vec::new(), log: Arc::default() }
    }

    fn take_log(&self) -> Vec<MmioCall> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn check_ok<T: fmt::Debug>(got: &Result<T, MemoryError>, want: bool) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.is_ok(), want, "engine returned {:?}, model expected ok = {}", got, want);
        Ok(())
    }

    /// A host access result: exact, or any error when `want` is `None`.
    fn check_host(
        got: &Result<(), MemoryError>,
        want: Option<Result<(), MemoryError>>,
    ) -> Result<(), TestCaseError> {
        match want {
            Some(want) => prop_assert_eq!(got, &want, "host access result"),
            None => prop_assert!(got.is_err(), "overflowing host access returned {:?}", got),
        }
        Ok(())
    }

    /// `overlaps_reserved_region` (the end saturates at `u64::MAX`).
    fn check_overlaps(&self, address: u64, size: u64) -> Result<(), TestCaseError> {
        let want = size != 0 && self.model.overlaps(address, address.saturating_add(size)).is_some();
        let got = self.mm.overlaps_reserved_region(address, size);
        prop_assert_eq!(got, want, "overlaps_reserved_region({:#x}, {:#x})", address, size);
        Ok(())
    }

    /// A guest access: result, and for reads the bytes.
    fn guest(&mut self, address: u64, len: usize, access: Access, seed: u8) -> Result<bool, TestCaseError> {
        let outcome = self.model.guest(address, len, access);
        let expected = guest_expect(&outcome, access);
        let data = pattern(seed, len);
        let mut buf = vec![0u8; len];
        let got = match access {
            Access::Read => self.mm.guest_read(address, &mut buf),
            Access::Execute => self.mm.guest_fetch(address, &mut buf),
            Access::Write => self.mm.guest_write(address, &data),
        };
        match expected {
            Some(want) => prop_assert_eq!(&got, &want, "guest {:?} result", access),
            None => prop_assert!(got.is_err(), "overflowing guest access returned {:?}", got),
        }
        let mut calls = Vec::new();
        if outcome == GuestOutcome::Done {
            let write = access == Access::Write;
            calls = self.model.mmio_calls(write, address, len);
            if write {
                self.model.store(address, &data);
            } else {
                let want = self.model.read(address, len).expect("guest-readable is host-readable");
                prop_assert!(buf == want, "guest {:?} bytes differ", access);
            }
        }
        prop_assert_eq!(self.take_log(), calls, "MMIO handler calls");
        Ok(matches!(outcome, GuestOutcome::Guard(_)))
    }

    /// Runs one op on both sides; returns whether the layout version must grow.
    fn apply(&mut self, op: &Op) -> Result<bool, TestCaseError> {
        let _ = self.take_log();
        let changed = match *op {
            Op::AllocAt { address: H(address), size: H(size), prot, reserve_only, kind } => {
                self.check_overlaps(address, size)?;
                let got = self.mm.allocate_memory_at(address, size, prot, reserve_only, kind);
                let want = self.model.allocate_at(address, size, prot, reserve_only, kind);
                Self::check_ok(&got, want)?;
                want
            }
            Op::Alloc { size: H(size), prot, reserve_only, start: H(start), kind } => {
                prop_assert_eq!(
                    self.mm.find_free_allocation_base(size, start),
                    self.model.find_free(size, start),
                    "find_free_allocation_base"
                );
                let got = self.mm.allocate_memory(size, prot, reserve_only, start, kind);
                let want = self.model.allocate(size, prot, reserve_only, start, kind);
                prop_assert_eq!(got.as_ref().ok().copied(), want, "allocate_memory: engine {:?}", got);
                want.is_some()
            }
            Op::AllocMmio { address: H(address), size: H(size) } => {
                self.check_overlaps(address, size)?;
                let (rlog, wlog) = (self.log.clone(), self.log.clone());
                let base = address;
                let got = self.mm.allocate_mmio(
                    address,
                    size,
                    move |off, buf: &mut [u8]| {
                        rlog.lock().unwrap().push((false, base, off, buf.len()));
                        fill_mmio(base, off, buf);
                    },
                    move |off, data: &[u8]| {
                        wlog.lock().unwrap().push((true, base, off, data.len()));
                    },
                );
                let want = self.model.allocate_mmio(address, size);
                Self::check_ok(&got, want)?;
                want
            }
            Op::Commit { address, size: H(size), prot } => {
                let address = self.model.resolve(address);
                self.check_overlaps(address, size)?;
                let got = self.mm.commit_memory(address, size, prot);
                let want = self.model.commit(address, size, prot);
                Self::check_ok(&got, want)?;
                want
            }
            Op::Decommit { address, size: H(size) } => {
                let address = self.model.resolve(address);
                self.check_overlaps(address, size)?;
                let got = self.mm.decommit_memory(address, size);
                let want = self.model.decommit(address, size);
                Self::check_ok(&got, want)?;
                want
            }
            Op::Release { address, size: H(size) } => {
                let address = self.model.resolve(address);
                self.check_overlaps(address, size)?;
                let got = self.mm.release_memory(address, size);
                let want = self.model.release(address, size);
                Self::check_ok(&got, want)?;
                want
            }
            Op::Protect { address, size: H(size), prot } => {
                let address = self.model.resolve(address);
                self.check_overlaps(address, size)?;
                let got = self.mm.protect_memory(address, size, prot);
                let want = self.model.protect(address, size, prot);
                prop_assert_eq!(got.as_ref().ok().copied(), want, "protect_memory: engine {:?}", got);
                want.is_some()
            }
            Op::Write { address, len, seed } => {
                let address = self.model.resolve(address);
                let data = pattern(seed, len);
                self.check_overlaps(address, len as u64)?;
                let got = self.mm.write_memory(address, &data);
                Self::check_host(&got, self.model.host_result(address, len))?;
                let want = self.model.host_ok(address, len);
                let calls = if want { self.model.mmio_calls(true, address, len) } else { Vec::new() };
                if want {
                    self.model.store(address, &data);
                }
                prop_assert_eq!(self.take_log(), calls, "MMIO handler calls");
                false
            }
            Op::Read { address, len } => {
                let address = self.model.resolve(address);
                let mut buf = vec![0u8; len];
                self.check_overlaps(address, len as u64)?;
                let got = self.mm.read_memory(address, &mut buf);
                Self::check_host(&got, self.model.host_result(address, len))?;
                let want = self.model.read(address, len);
                let calls =
                    if want.is_some() { self.model.mmio_calls(false, address, len) } else { Vec::new() };
                if let Some(want) = want {
                    prop_assert!(buf == want, "read_memory bytes differ");
                }
                prop_assert_eq!(self.take_log(), calls, "MMIO handler calls");
                false
            }
            Op::GuestRead { address, len } => {
                self.guest(self.model.resolve(address), len, Access::Read, 0)?
            }
            Op::GuestWrite { address, len, seed } => {
                self.guest(self.model.resolve(address), len, Access::Write, seed)?
            }
            Op::GuestFetch { address, len } => {
                self.guest(self.model.resolve(address), len, Access::Execute, 0)?
            }
            Op::Snapshot => {
                let layout_version = self.mm.layout_version();
                let snapshot = self.mm.snapshot();
                prop_assert_eq!(snapshot.layout_version(), layout_version, "Snapshot::layout_version");
                if self.snapshots.len() == MAX_SNAPSHOTS {
                    self.snapshots.remove(0);
                }
                self.snapshots.push(SavedSnapshot { snapshot, model: self.model.clone(), layout_version });
                false
            }
            Op::Restore { index } => {
                if self.snapshots.is_empty() {
                    false
                } else {
                    let saved = &self.snapshots[index % self.snapshots.len()];
                    self.mm.restore(&saved.snapshot);
                    self.model = saved.model.clone();
                    true
                }
            }
            Op::DropSnapshot { index } => {
                if !self.snapshots.is_empty() {
                    let len = self.snapshots.len();
                    drop(self.snapshots.remove(index % len));
                }
                false
            }
            Op::UnmapAll => {
                self.mm.unmap_all_memory();
                self.model.allocs.clear();
                self.model.pages.clear();
                true
            }
            Op::SetDefault { address: H(address) } => {
                self.mm.set_default_allocation_address(address);
                self.model.default_alloc = address;
                false
            }
        };
        Ok(changed)
    }

    /// The address an op acts on, resolved against the current state.
    fn resolved(&self, op: &Op) -> Option<u64> {
        match *op {
            Op::Commit { address, .. }
            | Op::Decommit { address, .. }
            | Op::Release { address, .. }
            | Op::Protect { address, .. }
            | Op::Write { address, .. }
            | Op::Read { address, .. }
            | Op::GuestRead { address, .. }
            | Op::GuestWrite { address, .. }
            | Op::GuestFetch { address, .. } => Some(self.model.resolve(address)),
            _ => None,
        }
    }

    /// Runs step `i`; `diff` says whether to check `diff_from` after it.
    fn step(&mut self, i: usize, op: &Op, diff: bool) -> Result<(), TestCaseError> {
        let before = self.mm.layout_version();
        let changed = self.apply(op)?;
        let after = self.mm.layout_version();
        if changed {
            prop_assert!(after > before, "layout version did not grow: {} -> {}", before, after);
        } else {
            prop_assert_eq!(after, before, "layout version changed");
        }
        check_view(&self.mm, &self.model)?;
        self.check_versions(i, diff)
    }

    /// Live versions, and `diff_from` one kept snapshot (chosen by the step
    /// index) against the model.
    fn check_versions(&mut self, i: usize, diff: bool) -> Result<(), TestCaseError> {
        let kept = self.snapshots.len() as u64;
        prop_assert_eq!(self.mm.compute_memory_stats().live_versions, kept, "live_versions of the manager");
        if let Some(saved) = self.snapshots.first() {
            prop_assert_eq!(
                saved.snapshot.compute_memory_stats().live_versions,
                kept,
                "live_versions of a snapshot"
            );
        }
        if self.snapshots.is_empty() || !diff {
            return Ok(());
        }
        let k = i % self.snapshots.len();
        let saved = &self.snapshots[k];
        let layout_version = self.mm.layout_version();
        let d = self.mm.diff_from(&saved.snapshot);
        prop_assert_eq!(self.mm.layout_version(), layout_version, "diff_from changed the layout version");
        let (old, new) = (&saved.model, &self.model);
        let got: Vec<(u64, PageChangeKind)> = d
            .page_changes()
            .iter()
            .map(|c| (c.address(), c.kind()))
            .filter(|&(p, _)| !old.is_mmio(p) && !new.is_mmio(p))
            .collect();
        let pages: Vec<u64> = d.changed_pages().filter(|&p| !old.is_mmio(p) && !new.is_mmio(p)).collect();
        let want = page_changes(old, new);
        prop_assert_eq!(&got, &want, "diff_from(snapshot {} of those kept): page changes", k);
        prop_assert_eq!(pages, want.iter().map(|&(p, _)| p).collect::<Vec<_>>(), "changed_pages");
        Ok(())
    }

    fn check_snapshots(&self) -> Result<(), TestCaseError> {
        for (i, saved) in self.snapshots.iter().enumerate() {
            prop_assert_eq!(saved.snapshot.layout_version(), saved.layout_version, "snapshot {}", i);
            check_view(&saved.snapshot, &saved.model)
                .map_err(|e| TestCaseError::fail(format!("snapshot {i} (of those kept): {e}")))?;
        }
        for (i, x) in self.snapshots.iter().enumerate() {
            for (j, y) in self.snapshots.iter().enumerate().skip(i + 1) {
                check_diff(x, y)
                    .map_err(|e| TestCaseError::fail(format!("diff of snapshots {i}, {j}: {e}")))?;
            }
        }
        Ok(())
    }
}

fn run(ops: &Ops) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    check_view(&h.mm, &h.model)?;
    for (i, op) in ops.ops.iter().enumerate() {
        if let Some(op) = op {
            let at = h.resolved(op).map_or(String::new(), |a| format!(" (address {a:#x})"));
            let diff = !ops.sparse_diffs || i % SPARSE_DIFF_STRIDE == SPARSE_DIFF_STRIDE - 1;
            h.step(i, op, diff).map_err(|e| TestCaseError::fail(format!("step {i} {op:?}{at}: {e}")))?;
        }
    }
    h.check_snapshots()
}

proptest! {
    #![proptest_config(Config {
        // Stored beside this file, as tests/model.proptest-regressions.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 20_000,
        max_shrink_time: 120_000,
        // CASES cases, or PROPTEST_CASES for a deeper run.
        ..common::proptest_config(CASES)
    })]

    /// `CASES` x `OPS_PER_CASE` random operations, compared with the model
    /// after every one.
    #[test]
    fn manager_agrees_with_model(ops in ops()) {
        run(&ops)?;
    }
}
