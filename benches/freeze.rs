//! Freezing: what `snapshot()` costs after K written pages, against copying
//! each of those pages once (a cold 4 KiB memcpy), and the recording loop of
//! a time-travel recorder (write K pages, snapshot, repeat) against a model
//! that copies each dirty page once into a history buffer. Every baseline
//! runs in the same process.
//!
//! Run: `cargo bench --bench freeze`; ratios:
//! `python3 benches/ratios.py --baseline cold_copy freeze` and
//! `python3 benches/ratios.py --baseline history_copy recording`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

const BASE: u64 = 0x1_0000_0000;
const PAGE: usize = PAGE_SIZE as usize;

// The tests' generator (tests/common/rng.rs), shared with the benches.
#[allow(dead_code)]
#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

/// A manager with `bytes` committed and every page written, frozen.
fn filled(bytes: u64) -> (MemoryManager, Snapshot) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, bytes, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let mut page = [0x11u8; PAGE];
    for i in 0..bytes / PAGE_SIZE {
        page[..8].copy_from_slice(&i.to_le_bytes());
        mm.write_memory(BASE + i * PAGE_SIZE, &page).unwrap();
    }
    let snap = mm.snapshot();
    (mm, snap)
}

/// `sets` lists of `k` page numbers below `pages`: random, or `k`
/// consecutive pages from a random start.
fn page_sets(pages: u64, k: usize, clustered: bool, sets: usize, seed: u64) -> Vec<Vec<u64>> {
    let mut s = Rng(seed);
    (0..sets)
        .map(|_| {
            if clustered {
                let start = s.next() % (pages - k as u64 + 1);
                (start..start + k as u64).collect()
            } else {
                let mut v: Vec<u64> = (0..k).map(|_| s.next() % pages).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
        })
        .collect()
}

/// Times `snapshot()` only: the writes before it and dropping the snapshot
/// after it are outside the clock.
fn time_freeze(mm: &mut MemoryManager, sets: &[Vec<u64>], iters: u64, stamp: &mut u64) -> Duration {
    let mut total = Duration::ZERO;
    for n in 0..iters as usize {
        *stamp += 1;
        for &p in &sets[n % sets.len()] {
            mm.write_memory(BASE + p * PAGE_SIZE + 64, &stamp.to_le_bytes()).unwrap();
        }
        let t = Instant::now();
        let snap = black_box(mm.snapshot());
        total += t.elapsed();
        drop(snap);
    }
    total
}

/// Times copying each listed page once out of `memory` (cold: spread over
/// it) into `out`.
fn time_copies(memory: &[u8], out: &mut [u8], sets: &[Vec<u64>], iters: u64) -> Duration {
    let t = Instant::now();
    for n in 0..iters as usize {
        for (j, &p) in sets[n % sets.len()].iter().enumerate() {
            let src = &memory[p as usize * PAGE..(p as usize + 1) * PAGE];
            let at = (j % (out.len() / PAGE)) * PAGE;
            out[at..at + PAGE].copy_from_slice(src);
        }
        black_box(&mut *out);
    }
    t.elapsed()
}

fn freeze(c: &mut Criterion) {
    let cases: [(&str, u64, usize, bool); 5] = [
        ("clustered_64MiB_all", 64 << 20, 16384, true),
        ("random_256MiB", 256 << 20, 1, false),
        ("random_256MiB", 256 << 20, 10, false),
        ("random_256MiB", 256 << 20, 100, false),
        ("random_256MiB", 256 << 20, 1000, false),
    ];
    let mut group = c.benchmark_group("freeze");
    group.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    let mut prepared: Option<(u64, MemoryManager, Snapshot, Vec<u8>)> = None;
    for (label, bytes, k, clustered) in cases {
        if prepared.as_ref().is_none_or(|p| p.0 != bytes) {
            drop(prepared.take());
            let (mm, base) = filled(bytes);
            let memory = vec![0x5Au8; bytes as usize];
            prepared = Some((bytes, mm, base, memory));
        }
        let (_, mm, _, memory) = prepared.as_mut().unwrap();
        let pages = bytes / PAGE_SIZE;
        let sets = page_sets(pages, k, clustered, 64, 0x2545_F491_4F6C_DD1D ^ k as u64);
        let id = format!("{label}/{k}");
        group.throughput(Throughput::Elements(k as u64));
        let mut stamp = 0u64;
        group.bench_function(BenchmarkId::new("vmsnap", &id), |b| {
            b.iter_custom(|iters| time_freeze(mm, &sets, iters, &mut stamp))
        });
        let mut out = vec![0u8; (k.min(16384)) * PAGE];
        group.bench_function(BenchmarkId::new("cold_copy", &id), |b| {
            b.iter_custom(|iters| time_copies(memory, &mut out, &sets, iters))
        });
    }
    group.finish();
}

/// The model of a recorder: memory in a flat buffer with a dirty bitmap;
/// at each step every dirty page is copied once into a ring of history
/// pages (what a recorder that keeps each step's dirty pages does at least).
struct HistoryModel {
    memory: Vec<u8>,
    bits: Vec<u64>,
    dirty: Vec<u32>,
    history: Vec<u8>,
    at: usize,
}

impl HistoryModel {
    fn write(&mut self, offset: usize, data: &[u8]) {
        let page = offset / PAGE;
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.dirty.push(page as u32);
        }
        self.memory[offset..offset + data.len()].copy_from_slice(data);
    }

    fn step(&mut self) {
        for &page in &self.dirty {
            let src = &self.memory[page as usize * PAGE..(page as usize + 1) * PAGE];
            if self.at + PAGE > self.history.len() {
                self.at = 0;
            }
            self.history[self.at..self.at + PAGE].copy_from_slice(src);
            self.at += PAGE;
            self.bits[page as usize / 64] = 0;
        }
        self.dirty.clear();
    }
}

fn recording(c: &mut Criterion) {
    const MEMORY: u64 = 256 << 20;
    const KEPT: usize = 256;
    let pages = MEMORY / PAGE_SIZE;
    let (mut mm, _base) = filled(MEMORY);
    let mut model = HistoryModel {
        memory: vec![0x11u8; MEMORY as usize],
        bits: vec![0; (pages as usize).div_ceil(64)],
        dirty: Vec::new(),
        history: vec![0u8; 256 << 20],
        at: 0,
    };
    let mut group = c.benchmark_group("recording");
    group.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for (label, k, clustered) in
        [("random", 10usize, false), ("random", 100, false), ("clustered", 100, true)]
    {
        let sets = page_sets(pages, k, clustered, 256, 0x9E37_79B9_7F4A_7C15 ^ k as u64);
        let id = format!("{label}/{k}");
        group.throughput(Throughput::Elements(k as u64));
        // The last KEPT versions stay alive (a recorder's window); older
        // ones are dropped inside the loop, as a recorder would.
        let mut kept: std::collections::VecDeque<Snapshot> = std::collections::VecDeque::new();
        let mut stamp = 0u64;
        let mut i = 0;
        group.bench_function(BenchmarkId::new("vmsnap", &id), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                stamp += 1;
                for &p in &sets[i] {
                    mm.write_memory(BASE + p * PAGE_SIZE + 64, &stamp.to_le_bytes()).unwrap();
                }
                kept.push_back(mm.snapshot());
                if kept.len() > KEPT {
                    kept.pop_front();
                }
            })
        });
        drop(kept);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("history_copy", &id), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                stamp += 1;
                for &p in &sets[i] {
                    model.write(p as usize * PAGE + 64, &stamp.to_le_bytes());
                }
                model.step();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, freeze, recording);
criterion_main!(benches);
