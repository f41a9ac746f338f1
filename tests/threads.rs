//! Many workers, one base: a `Snapshot` shared by several threads, each with
//! its own manager restored from it (the fuzzing case); a thread reading
//! snapshots while the owning manager goes on; MMIO handlers kept across
//! restores in workers.
//!
//! Soak mode (`.ci/soak`): `VMSNAP_SOAK_THREADS` and `VMSNAP_SOAK_CYCLES`
//! set the workers and steps per worker of the base-sharing test (default
//! `WORKERS` x `ITERATIONS`); when either is set, that test also samples the
//! process's resident set (`/proc/self/statm`) and requires it flat: at most
//! `RSS_GROWTH_BOUND` more at the end than at 10 % of the steps. Its own
//! binary, since RSS is the whole process's.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;

mod common;
use common::Rng;

use vmsnap::{
    Access, AddressSpace, MemoryError, MemoryManager, PAGE_SIZE, PageChangeKind, Protection, RegionChange,
    RegionInfo, RegionKind, ReservedRegion, Snapshot, USER_SPACE_END,
};

const RW: Protection = Protection::READ_WRITE;
const R: Protection = Protection::READ;
const G: Protection = Protection::GUARD;
const PAGE: usize = PAGE_SIZE as usize;
/// The main allocation: `X_PAGES` pages.
const X: u64 = 0x2000_0000;
const X_PAGES: u64 = 16;
/// An allocation workers make and release.
const Y: u64 = 0x2010_0000;
const Y_PAGES: u64 = 2;
/// An MMIO region of two pages.
const M: u64 = 0x2020_0000;
const M_LEN: u64 = 0x2000;
const WORKERS: u64 = 4;
const ITERATIONS: u64 = 3000;
/// Soak mode: how much the resident set may grow from the sample at 10 % of
/// the steps to the last one. Every worker's own state (a manager of 20
/// pages, its model, one kept snapshot) is well under 1 MiB and does not
/// grow with the steps; a leak of even 16 bytes a step would pass this
/// bound within 8 x 200,000 steps.
const RSS_GROWTH_BOUND: u64 = 16 << 20;
const PROTS: [Protection; 6] = [
    RW,
    R,
    Protection::READ_EXECUTE,
    Protection::empty(),
    Protection::READ_WRITE.union(Protection::GUARD),
    Protection::READ.union(Protection::GUARD),
];

fn page(i: u64) -> u64 {
    X + i * PAGE_SIZE
}

// -------------------------------------------------------- soak mode

/// `name` from the environment, if set: a positive number.
fn soak_var(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    match value.trim().parse() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name}={value:?} is not a positive number"),
    }
}

/// The base-sharing test's size: (workers, steps per worker, soak mode).
fn soak_size() -> (u64, u64, bool) {
    let (threads, cycles) = (soak_var("VMSNAP_SOAK_THREADS"), soak_var("VMSNAP_SOAK_CYCLES"));
    (threads.unwrap_or(WORKERS), cycles.unwrap_or(ITERATIONS), threads.is_some() || cycles.is_some())
}

/// This process's resident set in bytes, from `/proc/self/statm` (its
/// second field, in pages).
fn rss_bytes() -> u64 {
    let statm =
        std::fs::read_to_string("/proc/self/statm").expect("soak mode reads /proc/self/statm (Linux)");
    let pages: u64 =
        statm.split_whitespace().nth(1).and_then(|f| f.parse().ok()).expect("statm's resident field");
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).expect("the page size")
}

// -------------------------------------------------------------- MMIO

/// One handler call, as the handler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
}

thread_local! {
    /// Handler calls made on this thread: every worker sees only its own.
    static LOG: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
}

fn take_log() -> Vec<Call> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// What a device with this `salt` reads at `offset`.
fn device_byte(salt: u8, offset: u64) -> u8 {
    (offset as u8) ^ ((offset >> 8) as u8).wrapping_mul(3) ^ salt
}

fn device_bytes(salt: u8, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| device_byte(salt, offset + i)).collect()
}

/// Maps a two-page MMIO region at `M` whose handlers log on the calling thread.
fn map_device(mm: &mut MemoryManager, salt: u8) -> Result<(), MemoryError> {
    mm.allocate_mmio(
        M,
        M_LEN,
        move |offset, buf| {
            LOG.with(|l| l.borrow_mut().push(Call::Read { offset, len: buf.len() }));
            for (i, b) in buf.iter_mut().enumerate() {
                *b = device_byte(salt, offset + i as u64);
            }
        },
        |offset, data| LOG.with(|l| l.borrow_mut().push(Call::Write { offset, data: data.to_vec() })),
    )
}

// ------------------------------------------------------------- model

/// A worker's reference model: committed pages (not MMIO), allocations,
/// default allocation address.
#[derive(Clone)]
struct Model {
    pages: BTreeMap<u64, (Protection, Box<[u8; PAGE]>)>,
    allocs: BTreeMap<u64, ReservedRegion>,
    default_alloc: u64,
}

fn region(base: u64, length: u64, kind: RegionKind, initial_permissions: Protection) -> ReservedRegion {
    ReservedRegion { base, length, kind, initial_permissions, attributes: 0 }
}

impl Model {
    fn containing(&self, p: u64) -> Option<ReservedRegion> {
        self.allocs.range(..=p).next_back().map(|(_, r)| *r).filter(|r| p < r.base + r.length)
    }

    fn commit(&mut self, lo: u64, hi: u64, prot: Protection) {
        for p in (lo..hi).step_by(PAGE) {
            self.pages.entry(p).and_modify(|pg| pg.0 = prot).or_insert_with(|| (prot, Box::new([0; PAGE])));
        }
    }

    fn decommit(&mut self, lo: u64, hi: u64) {
        for p in (lo..hi).step_by(PAGE) {
            self.pages.remove(&p);
        }
    }

    /// The page state region_info compares: None = reserved; MMIO pages are
    /// committed read-write.
    fn state(&self, p: u64, r: &ReservedRegion) -> Option<Protection> {
        if r.kind == RegionKind::Mmio { Some(RW) } else { self.pages.get(&p).map(|pg| pg.0) }
    }

    fn info(&self, p: u64) -> RegionInfo {
        let Some(r) = self.containing(p) else {
            let next = self.allocs.range(p..).next().map_or(USER_SPACE_END, |(b, _)| *b);
            return common::free_info(p, next - p);
        };
        let key = self.state(p, &r);
        let mut end = p + PAGE_SIZE;
        while end < r.base + r.length && self.state(end, &r) == key {
            end += PAGE_SIZE;
        }
        RegionInfo {
            start: p,
            length: end - p,
            allocation_base: r.base,
            allocation_length: r.length,
            is_reserved: true,
            is_committed: key.is_some(),
            permissions: key.unwrap_or(Protection::empty()),
            initial_permissions: r.initial_permissions,
            kind: r.kind,
            attributes: 0,
        }
    }

    fn pages_to_check() -> impl Iterator<Item = u64> {
        (0..X_PAGES)
            .map(page)
            .chain((0..Y_PAGES).map(|i| Y + i * PAGE_SIZE))
            .chain((0..M_LEN / PAGE_SIZE).map(|i| M + i * PAGE_SIZE))
    }
}

/// Compares the whole view (MMIO bytes excluded: reading them calls handlers)
/// with the model.
fn check_view(v: &impl AddressSpace, m: &Model, what: &dyn Fn() -> String) {
    assert_eq!(
        v.reserved_regions().collect::<Vec<_>>(),
        m.allocs.values().copied().collect::<Vec<_>>(),
        "{}: regions",
        what()
    );
    let mmio: u64 = m.allocs.values().filter(|r| r.kind == RegionKind::Mmio).map(|r| r.length).sum();
    assert_eq!(
        v.compute_memory_stats().committed_memory,
        m.pages.len() as u64 * PAGE_SIZE + mmio,
        "{}: committed",
        what()
    );
    assert_eq!(
        v.compute_memory_stats().reserved_memory,
        m.allocs.values().map(|r| r.length).sum::<u64>(),
        "{}: reserved",
        what()
    );
    assert_eq!(v.default_allocation_address(), m.default_alloc, "{}: default allocation address", what());
    let mut buf = vec![0u8; PAGE];
    for p in Model::pages_to_check() {
        let info = m.info(p);
        assert_eq!(v.region_info(p + 0x10), info, "{}: region_info({p:#x})", what());
        if info.kind == RegionKind::Mmio {
            continue;
        }
        let got = v.read_memory(p, &mut buf);
        match m.pages.get(&p) {
            Some((_, bytes)) => {
                assert_eq!(got, Ok(()), "{}: read {p:#x}", what());
                assert!(buf[..] == bytes[..], "{}: bytes of {p:#x}", what());
            }
            None if info.is_reserved => {
                assert_eq!(got, Err(MemoryError::NotCommitted { address: p }), "{}: read {p:#x}", what())
            }
            None => assert_eq!(got, Err(MemoryError::NotAllocated { address: p }), "{}: read {p:#x}", what()),
        }
    }
}

/// The base every worker starts from: some pages written, a read-only page,
/// a guard page, reserved pages, an MMIO region, a default allocation address.
fn base() -> (Snapshot, Model) {
    let mut mm = MemoryManager::new();
    let mut m = Model { pages: BTreeMap::new(), allocs: BTreeMap::new(), default_alloc: 0x3000_0000 };
    mm.set_default_allocation_address(0x3000_0000);
    mm.allocate_memory_at(X, X_PAGES * PAGE_SIZE, RW, true, RegionKind::Private).unwrap();
    m.allocs.insert(X, region(X, X_PAGES * PAGE_SIZE, RegionKind::Private, RW));
    mm.commit_memory(X, 12 * PAGE_SIZE, RW).unwrap();
    m.commit(X, page(12), RW);
    let mut rng = Rng(0xBA5E);
    for i in 0..8 {
        let mut bytes = Box::new([0u8; PAGE]);
        rng.fill(&mut bytes[..]);
        mm.write_memory(page(i), &bytes[..]).unwrap();
        m.pages.get_mut(&page(i)).unwrap().1 = bytes;
    }
    mm.protect_memory(page(10), PAGE_SIZE, R).unwrap();
    mm.protect_memory(page(11), PAGE_SIZE, RW | G).unwrap();
    m.commit(page(10), page(11), R);
    m.commit(page(11), page(12), RW | G);
    map_device(&mut mm, 0).unwrap();
    m.allocs.insert(M, region(M, M_LEN, RegionKind::Mmio, RW));
    let s = mm.snapshot();
    check_view(&s, &m, &|| "base".to_owned());
    // The snapshot lives on its own.
    drop(mm);
    (s, m)
}

// ---------------------------------------------------------- workers

/// What a worker did, to check that every kind of step ran.
#[derive(Debug, Default)]
struct Counts {
    base_restores: u64,
    own_restores: u64,
    guards: u64,
    mmio_calls: u64,
    writes: u64,
    layout_changes: u64,
}

/// One worker: its own manager restored from `base`, `steps` deterministic
/// steps, its view checked after every one, the base checked as it goes.
/// With `rss`, samples the resident set (step, bytes) every 5 % of the steps
/// and at the last one.
fn worker(
    id: u64,
    base: &Snapshot,
    base_model: &Model,
    steps: u64,
    mut rss: Option<&mut Vec<(u64, u64)>>,
) -> Counts {
    let mut rng = Rng(0x1234_5678 + id * 0x9E37_79B9);
    let mut counts = Counts::default();
    let mut mm = MemoryManager::new();
    mm.restore(base);
    let mut m = base_model.clone();
    check_view(&mm, &m, &|| format!("worker {id}: start"));
    let mut own: Option<(Snapshot, Model)> = None;
    let mut buf = vec![0u8; PAGE];

    for step in 0..steps {
        let what = || format!("worker {id} step {step}");
        let p = page(rng.below(X_PAGES));
        let hi = (p + (1 + rng.below(3)) * PAGE_SIZE).min(page(X_PAGES));
        let lv = mm.layout_version();
        match rng.below(100) {
            0..=34 => {
                let target = if rng.chance(20) { Y + rng.below(Y_PAGES) * PAGE_SIZE } else { p };
                let len = if rng.chance(10) { PAGE } else { 1 + rng.below(256) as usize };
                let off = rng.below((PAGE - len) as u64 + 1) as usize;
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                let got = mm.write_memory(target + off as u64, &data);
                let at = target + off as u64;
                let allocated = m.containing(target).is_some();
                match m.pages.get_mut(&target) {
                    Some((_, bytes)) => {
                        assert_eq!(got, Ok(()), "{}", what());
                        bytes[off..off + len].copy_from_slice(&data);
                        counts.writes += 1;
                    }
                    None if allocated => assert_eq!(got, Err(MemoryError::NotCommitted { address: at })),
                    None => assert_eq!(got, Err(MemoryError::NotAllocated { address: at })),
                }
            }
            35..=42 => {
                let prot = rng.pick(&PROTS);
                mm.commit_memory(p, hi - p, prot).unwrap();
                m.commit(p, hi, prot);
            }
            43..=49 => {
                mm.decommit_memory(p, hi - p).unwrap();
                m.decommit(p, hi);
            }
            50..=59 => {
                let prot = rng.pick(&PROTS);
                let got = mm.protect_memory(p, hi - p, prot);
                match (p..hi).step_by(PAGE).find(|q| !m.pages.contains_key(q)) {
                    Some(q) => assert_eq!(got, Err(MemoryError::NotCommitted { address: q }), "{}", what()),
                    None => {
                        assert_eq!(got, Ok(m.pages[&p].0), "{}", what());
                        m.commit(p, hi, prot);
                    }
                }
            }
            60..=69 => {
                // A guest access: protection first, then the guard bit.
                let write = rng.chance(50);
                let access = if write { Access::Write } else { Access::Read };
                let mut data = [0u8; 8];
                rng.fill(&mut data);
                let got =
                    if write { mm.guest_write(p + 16, &data) } else { mm.guest_read(p + 16, &mut data) };
                let need = if write { Protection::WRITE } else { R };
                match m.pages.get_mut(&p) {
                    Some((prot, _)) if prot.contains(need) && prot.contains(G) => {
                        assert_eq!(got, Err(MemoryError::GuardPageViolation { address: p + 16, access }));
                        prot.remove(G);
                        counts.guards += 1;
                    }
                    Some((prot, bytes)) if prot.contains(need) => {
                        assert_eq!(got, Ok(()), "{}", what());
                        if write {
                            bytes[16..24].copy_from_slice(&data);
                        } else {
                            assert_eq!(data[..], bytes[16..24], "{}", what());
                        }
                    }
                    _ => assert_eq!(got, Err(MemoryError::AccessViolation { address: p + 16, access })),
                }
            }
            70..=77 => {
                // MMIO: one handler call on this thread, with the offset from M.
                let len = 1 + rng.below(64) as usize;
                let offset = rng.below(M_LEN - len as u64 + 1);
                let present = m.allocs.contains_key(&M);
                if rng.chance(50) {
                    let mut got = vec![0u8; len];
                    let r = mm.read_memory(M + offset, &mut got);
                    if present {
                        assert_eq!(r, Ok(()));
                        assert_eq!(got, device_bytes(0, offset, len), "{}", what());
                        assert_eq!(take_log(), vec![Call::Read { offset, len }], "{}", what());
                        counts.mmio_calls += 1;
                    } else {
                        assert_eq!(r, Err(MemoryError::NotAllocated { address: M + offset }));
                    }
                } else {
                    let mut data = vec![0u8; len];
                    rng.fill(&mut data);
                    let r = mm.write_memory(M + offset, &data);
                    if present {
                        assert_eq!(r, Ok(()));
                        assert_eq!(take_log(), vec![Call::Write { offset, data }], "{}", what());
                        counts.mmio_calls += 1;
                    } else {
                        assert_eq!(r, Err(MemoryError::NotAllocated { address: M + offset }));
                    }
                }
                assert_eq!(take_log(), vec![], "{}: no other handler call", what());
            }
            78..=79 => {
                if m.allocs.remove(&M).is_some() {
                    mm.release_memory(M, 0).unwrap();
                }
            }
            80..=84 => {
                if m.allocs.remove(&Y).is_some() {
                    mm.release_memory(Y, 0).unwrap();
                    m.decommit(Y, Y + Y_PAGES * PAGE_SIZE);
                } else {
                    let prot = rng.pick(&[RW, R]);
                    let kind = rng.pick(&[RegionKind::Private, RegionKind::Image]);
                    mm.allocate_memory_at(Y, Y_PAGES * PAGE_SIZE, prot, false, kind).unwrap();
                    m.allocs.insert(Y, region(Y, Y_PAGES * PAGE_SIZE, kind, prot));
                    m.commit(Y, Y + Y_PAGES * PAGE_SIZE, prot);
                }
            }
            85..=86 => {
                let a = 0x4000_0000 + rng.below(16) * 0x10000;
                mm.set_default_allocation_address(a);
                m.default_alloc = a;
            }
            87..=91 => own = Some((mm.snapshot(), m.clone())),
            92..=94 => {
                if let Some((s, sm)) = &own {
                    mm.restore(s);
                    m = sm.clone();
                    counts.own_restores += 1;
                }
            }
            _ => {
                mm.restore(base);
                m = base_model.clone();
                counts.base_restores += 1;
            }
        }
        if mm.layout_version() != lv {
            counts.layout_changes += 1;
        }
        check_view(&mm, &m, &what);

        // The base never changes: one page every step, all of it now and then.
        let q = page(rng.below(8));
        base.read_memory(q, &mut buf).unwrap();
        assert!(buf[..] == base_model.pages[&q].1[..], "{}: base page {q:#x} changed", what());
        if step % 500 == 0 {
            check_view(base, base_model, &|| format!("worker {id} step {step}: base"));
        }
        if let Some(samples) = rss.as_deref_mut()
            && ((step + 1) % (steps / 20).max(1) == 0 || step + 1 == steps)
        {
            samples.push((step + 1, rss_bytes()));
        }
    }
    if let Some((s, sm)) = &own {
        check_view(s, sm, &|| format!("worker {id}: own snapshot"));
    }
    counts
}

#[test]
fn workers_restored_from_one_shared_base_snapshot() {
    let (workers, steps, soak) = soak_size();
    let (base, base_model) = base();
    let mut rss = Vec::new();
    let results: Vec<Counts> = thread::scope(|scope| {
        let mut rss = soak.then_some(&mut rss);
        let handles: Vec<_> = (0..workers)
            .map(|id| {
                let (base, base_model) = (&base, &base_model);
                // Worker 0 samples the resident set in soak mode.
                let rss = if id == 0 { rss.take() } else { None };
                if id % 2 == 0 {
                    // Shared by reference...
                    scope.spawn(move || worker(id, base, base_model, steps, rss))
                } else {
                    // ...or by a clone moved into the thread.
                    let mine = base.clone();
                    scope.spawn(move || worker(id, &mine, base_model, steps, rss))
                }
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every kind of step ran often: these bounds are for ITERATIONS steps,
    // scaled to the steps run.
    let often = |n: u64| n * steps / ITERATIONS;
    for (id, c) in results.iter().enumerate() {
        assert!(c.base_restores > often(50) && c.own_restores > often(20), "worker {id}: {c:?}");
        assert!(
            c.guards > often(5) && c.mmio_calls > often(50) && c.writes > often(500),
            "worker {id}: {c:?}"
        );
        assert!(c.layout_changes > often(500), "worker {id}: {c:?}");
    }
    if soak {
        // The resident set stays flat: from the sample at 10 % of the steps
        // (every structure warm) to the last one.
        let early = rss.iter().find(|&&(step, _)| step >= steps / 10).expect("a sample at 10 %").1;
        let last = rss.last().expect("a last sample").1;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let samples: Vec<String> = rss.iter().map(|&(step, b)| format!("{step}: {:.1}", mib(b))).collect();
        eprintln!(
            "soak: {workers} workers x {steps} steps; worker 0's RSS samples (step: MiB): {}",
            samples.join(", ")
        );
        assert!(
            last <= early + RSS_GROWTH_BOUND,
            "RSS grew from {:.1} MiB at 10 % of the steps to {:.1} MiB at the end (bound: +{:.0} MiB)",
            mib(early),
            mib(last),
            mib(RSS_GROWTH_BOUND)
        );
    }
    check_view(&base, &base_model, &|| "base after the workers".to_owned());
    // Every worker's manager and snapshot is gone: the base is the only version left.
    let stats = base.compute_memory_stats();
    assert_eq!(stats.live_versions, 1);
    assert_eq!((stats.private_memory, stats.shared_memory), (8 * PAGE_SIZE, 0));
}

#[test]
fn mmio_handlers_are_kept_across_restores_in_workers() {
    let mut mm = MemoryManager::new();
    map_device(&mut mm, 0x11).unwrap();
    mm.allocate_memory_at(X, 0x2000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(X, b"plain memory").unwrap();
    let base = mm.snapshot();
    drop(mm);

    thread::scope(|scope| {
        for id in 0..WORKERS {
            let base = &base;
            scope.spawn(move || {
                let mut mm = MemoryManager::new();
                mm.restore(base);
                for round in 0..200u64 {
                    let offset = (round * 37 + id * 11) % (M_LEN - 8);
                    // The base's handler, with the offset from the region's base.
                    let mut buf = [0u8; 8];
                    mm.read_memory(M + offset, &mut buf).unwrap();
                    assert_eq!(buf.to_vec(), device_bytes(0x11, offset, 8));
                    mm.guest_write(M + offset, &[id as u8, round as u8]).unwrap();
                    assert_eq!(
                        take_log(),
                        vec![
                            Call::Read { offset, len: 8 },
                            Call::Write { offset, data: vec![id as u8, round as u8] }
                        ]
                    );
                    // One call for an access spanning both pages of the region.
                    mm.read_memory(M + 0xFF0, &mut [0u8; 0x20]).unwrap();
                    assert_eq!(take_log(), vec![Call::Read { offset: 0xFF0, len: 0x20 }]);
                    // The snapshot calls the same handler.
                    base.read_memory(M + 3, &mut buf[..2]).unwrap();
                    assert_eq!(buf[..2], device_bytes(0x11, 3, 2)[..]);
                    assert_eq!(take_log(), vec![Call::Read { offset: 3, len: 2 }]);

                    // Release it, map another device there, then back to the base.
                    mm.release_memory(M, 0).unwrap();
                    assert_eq!(mm.read_memory(M, &mut buf), Err(MemoryError::NotAllocated { address: M }));
                    assert_eq!(take_log(), vec![]);
                    if round % 2 == 0 {
                        map_device(&mut mm, 0x80 | id as u8).unwrap();
                        mm.read_memory(M + 0x1001, &mut buf[..1]).unwrap();
                        assert_eq!(buf[0], device_byte(0x80 | id as u8, 0x1001));
                        assert_eq!(take_log(), vec![Call::Read { offset: 0x1001, len: 1 }]);
                    }
                    mm.write_memory(X + 100, &[round as u8; 4]).unwrap();
                    mm.restore(base);
                    assert_eq!(mm.region_kind(M), RegionKind::Mmio);
                    assert_eq!(mm.region_info(M).length, M_LEN);
                    mm.read_memory(M + 0x1001, &mut buf[..1]).unwrap();
                    assert_eq!(buf[0], device_byte(0x11, 0x1001), "the base's handler again");
                    assert_eq!(take_log(), vec![Call::Read { offset: 0x1001, len: 1 }]);
                    let mut plain = [0u8; 12];
                    mm.read_memory(X, &mut plain).unwrap();
                    assert_eq!(&plain, b"plain memory");
                    assert_eq!(take_log(), vec![], "plain memory calls no handler");
                }
            });
        }
    });
}

// ------------------------------------------------ a reader thread

/// Everything the reader checks about a fixed snapshot.
#[derive(Debug, PartialEq)]
struct Observed {
    walk: Vec<RegionInfo>,
    regions: Vec<ReservedRegion>,
    sizes: (u64, u64, u64),
    bytes: Vec<Vec<u8>>,
}

fn observe(s: &Snapshot) -> Observed {
    let mut walk = Vec::new();
    let mut at = X;
    while at < Y + 0x10000 {
        let i = s.region_info(at);
        walk.push(i);
        at += i.length.min(Y + 0x10000 - at);
    }
    let stats = s.compute_memory_stats();
    let bytes = (0..8)
        .map(|i| {
            let mut b = vec![0u8; PAGE];
            s.read_memory(page(i), &mut b).unwrap();
            b
        })
        .collect();
    Observed {
        walk,
        regions: s.reserved_regions().collect(),
        sizes: (stats.reserved_memory, stats.committed_memory, stats.allocation_count),
        bytes,
    }
}

fn stamp_of(s: &Snapshot, p: u64) -> u64 {
    let mut b = [0u8; 8];
    s.read_memory(p, &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn a_reader_thread_checks_snapshots_while_the_manager_goes_on() {
    const ROUNDS: u64 = 300;
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(X, X_PAGES * PAGE_SIZE, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(X, 12 * PAGE_SIZE, RW).unwrap();
    for i in 0..8u8 {
        mm.write_memory(page(u64::from(i)), &[i + 1; PAGE]).unwrap();
    }
    mm.protect_memory(page(9), PAGE_SIZE, R).unwrap();
    mm.protect_memory(page(10), PAGE_SIZE, RW | G).unwrap();
    let s0 = mm.snapshot();

    mm.write_memory(page(3) + 100, &[1, 4, 3]).unwrap();
    mm.decommit_memory(page(9), PAGE_SIZE).unwrap();
    mm.commit_memory(page(13), PAGE_SIZE, R).unwrap();
    mm.allocate_memory_at(Y, Y_PAGES * PAGE_SIZE, R, false, RegionKind::Image).unwrap();
    assert!(matches!(mm.guest_read(page(10), &mut [0u8; 1]), Err(MemoryError::GuardPageViolation { .. })));
    let s1 = mm.snapshot();

    let (o0, o1) = (observe(&s0), observe(&s1));
    assert_eq!(o0.sizes, (X_PAGES * PAGE_SIZE, 12 * PAGE_SIZE, 1));
    assert_eq!(o1.sizes, ((X_PAGES + Y_PAGES) * PAGE_SIZE, (12 + Y_PAGES) * PAGE_SIZE, 2));
    let d01_pages = vec![page(3), page(9), page(13), Y, Y + PAGE_SIZE];
    let d01_regions = [
        RegionChange::Allocated(region(Y, Y_PAGES * PAGE_SIZE, RegionKind::Image, R)),
        RegionChange::Decommitted { address: page(9), length: PAGE_SIZE },
        RegionChange::ProtectionChanged { address: page(10), length: PAGE_SIZE, old: RW | G, new: RW },
        RegionChange::Committed { address: page(13), length: PAGE_SIZE, permissions: R },
        RegionChange::Committed { address: Y, length: Y_PAGES * PAGE_SIZE, permissions: R },
    ];
    let check_fixed = || {
        assert_eq!(observe(&s0), o0);
        assert_eq!(observe(&s1), o1);
        let d = s0.diff(&s1);
        assert_eq!(d.changed_pages().collect::<Vec<_>>(), d01_pages);
        assert_eq!(d.region_changes(), &d01_regions[..]);
        assert_eq!(d.page_changes()[0].kind(), PageChangeKind::Modified);
        assert_eq!(d.page_changes()[0].byte_ranges(), vec![100..101, 102..103], "byte 101 was already 4");
        assert_eq!(s1.diff(&s0).changed_pages().collect::<Vec<_>>(), d01_pages);
    };
    check_fixed();

    // Page 11's protection in round i (toggled every fifth round, from RW).
    let prot_11 = |i: u64| if (i / 5) % 2 == 1 { R } else { RW };
    let (tx, rx) = mpsc::sync_channel::<(u64, Snapshot)>(2);
    let received = thread::scope(|scope| {
        let (s1, check_fixed) = (&s1, &check_fixed);
        let reader = scope.spawn(move || {
            let mut prev = (0u64, s1.clone());
            let mut n = 0u64;
            loop {
                check_fixed();
                let Ok((i, s)) = rx.recv() else { break };
                assert_eq!(i, prev.0 + 1, "in order");
                assert_eq!(stamp_of(&s, page(i % 8)), i, "round {i}");
                assert_eq!(s.region_info(page(11)).permissions, prot_11(i), "round {i}");
                let stats = s.compute_memory_stats();
                assert_eq!((stats.reserved_memory, stats.committed_memory), (o1.sizes.0, o1.sizes.1));
                assert!(stats.live_versions >= 3, "s0, s1 and this one at least");
                // From the previous round: this round's stamp, maybe page 11.
                let d = prev.1.diff(&s);
                let mut want = vec![page(i % 8)];
                if i % 3 == 0 {
                    want.push(page(11));
                }
                assert_eq!(d.changed_pages().collect::<Vec<_>>(), want, "round {i}");
                assert_eq!(d.page_changes()[0].byte_ranges().first().map(|r| r.start), Some(0));
                let layout: Vec<RegionChange> = if i % 5 == 0 {
                    vec![RegionChange::ProtectionChanged {
                        address: page(11),
                        length: PAGE_SIZE,
                        old: prot_11(i - 1),
                        new: prot_11(i),
                    }]
                } else {
                    vec![]
                };
                assert_eq!(d.region_changes(), &layout[..], "round {i}");
                assert_eq!(s.diff(&prev.1).changed_pages().collect::<Vec<_>>(), want, "round {i} reversed");
                prev = (i, s);
                n += 1;
            }
            n
        });
        for i in 1..=ROUNDS {
            mm.write_memory(page(i % 8), &i.to_le_bytes()).unwrap();
            if i % 3 == 0 {
                mm.write_memory(page(11) + 8, &i.to_le_bytes()).unwrap();
            }
            if i % 5 == 0 {
                mm.protect_memory(page(11), PAGE_SIZE, prot_11(i)).unwrap();
            }
            let s = mm.snapshot();
            if i % 7 == 0 {
                drop(mm.snapshot()); // one the reader never sees
            }
            if i % 25 == 0 {
                // Churn, then back.
                mm.unmap_all_memory();
                mm.allocate_memory_at(X, 0x1000, R, false, RegionKind::Image).unwrap();
                mm.restore(&s);
            }
            tx.send((i, s)).unwrap();
        }
        drop(tx);
        reader.join().unwrap()
    });
    assert_eq!(received, ROUNDS);
    check_fixed();
    // Only s0 and s1 are left of this lineage.
    assert_eq!(mm.compute_memory_stats().live_versions, 2);
    assert_eq!(stamp_of(&mm.snapshot(), page(ROUNDS % 8)), ROUNDS);
}
