//! Versions: snapshot cost at three memory sizes, the fuzz reset against the
//! two baselines fuzzers use today, restore anywhere in a long history, and
//! diff against comparing every byte. Every baseline runs in the same process.
//!
//! Run: `cargo bench --bench versions`; ratios:
//! `python3 benches/ratios.py --baseline dirty_list fuzz_reset` and
//! `python3 benches/ratios.py --baseline compare_all_bytes diff`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

const BASE: u64 = 0x1_0000_0000;
const PAGE: usize = PAGE_SIZE as usize;

// The tests' generator (tests/common/rng.rs), shared with the benches.
#[allow(dead_code)]
#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

/// A manager with `bytes` committed and every page written (non-zero), frozen.
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

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    for (label, bytes) in [("1MiB", 1u64 << 20), ("64MiB", 64 << 20), ("1GiB", 1 << 30)] {
        let (mut mm, base) = filled(bytes);
        group.bench_function(BenchmarkId::new("vmsnap", label), |b| b.iter(|| black_box(mm.snapshot())));
        // Baseline: what a snapshot costs without persistence (copy everything).
        let flat = vec![0x11u8; bytes as usize];
        group.bench_function(BenchmarkId::new("copy_all", label), |b| b.iter(|| black_box(flat.clone())));
        drop((mm, base, flat));
    }
    group.finish();
}

/// Pages to dirty per iteration: `k` random pages, or `k` consecutive pages
/// from a random start ("clustered"), a fresh set each iteration.
fn page_sets(pages: u64, k: usize, clustered: bool, sets: usize) -> Vec<Vec<u64>> {
    let mut s = Rng(0x2545_F491_4F6C_DD1D);
    (0..sets)
        .map(|_| {
            if clustered {
                let start = s.next() % (pages - k as u64);
                (start..start + k as u64).collect()
            } else {
                (0..k).map(|_| s.next() % pages).collect()
            }
        })
        .collect()
}

/// The wtf / Nyx reset: one pristine copy, a dirty bitmap and list, memcpy of
/// the dirty pages back.
struct DirtyList {
    pristine: Vec<u8>,
    memory: Vec<u8>,
    bits: Vec<u64>,
    dirty: Vec<u32>,
}

impl DirtyList {
    fn new(pristine: Vec<u8>) -> Self {
        let pages = pristine.len() / PAGE;
        DirtyList { memory: pristine.clone(), pristine, bits: vec![0; pages.div_ceil(64)], dirty: Vec::new() }
    }

    #[inline]
    fn write(&mut self, offset: usize, data: &[u8]) {
        let page = offset / PAGE;
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.dirty.push(page as u32);
        }
        self.memory[offset..offset + data.len()].copy_from_slice(data);
    }

    fn reset(&mut self) {
        for &page in &self.dirty {
            let r = page as usize * PAGE..(page as usize + 1) * PAGE;
            self.memory[r.clone()].copy_from_slice(&self.pristine[r]);
            self.bits[page as usize / 64] = 0;
        }
        self.dirty.clear();
    }
}

fn fuzz_reset(c: &mut Criterion) {
    const MEMORY: u64 = 64 << 20;
    let pages = MEMORY / PAGE_SIZE;
    let (mut mm, base) = filled(MEMORY);
    let pristine: Vec<u8> = {
        let mut v = vec![0u8; MEMORY as usize];
        mm.read_memory(BASE, &mut v).unwrap();
        v
    };
    let mut dirty = DirtyList::new(pristine.clone());
    let mut flat = pristine.clone();
    let data = [0xC3u8; 8];

    for clustered in [false, true] {
        let pattern = if clustered { "clustered" } else { "random" };
        let mut group = c.benchmark_group(format!("fuzz_reset_{pattern}"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for k in [1usize, 10, 100, 1000] {
            let sets = page_sets(pages, k, clustered, 256);
            group.throughput(Throughput::Elements(k as u64));
            let mut i = 0;
            group.bench_function(BenchmarkId::new("vmsnap", k), |b| {
                b.iter(|| {
                    i = (i + 1) % sets.len();
                    for &p in &sets[i] {
                        mm.write_memory(BASE + p * PAGE_SIZE + 64, &data).unwrap();
                    }
                    mm.restore(&base);
                })
            });
            let mut i = 0;
            group.bench_function(BenchmarkId::new("dirty_list", k), |b| {
                b.iter(|| {
                    i = (i + 1) % sets.len();
                    for &p in &sets[i] {
                        dirty.write(p as usize * PAGE + 64, &data);
                    }
                    dirty.reset();
                })
            });
            if k == 1 || k == 1000 {
                let mut i = 0;
                group.bench_function(BenchmarkId::new("full_copy", k), |b| {
                    b.iter(|| {
                        i = (i + 1) % sets.len();
                        for &p in &sets[i] {
                            flat[p as usize * PAGE + 64..p as usize * PAGE + 72].copy_from_slice(&data);
                        }
                        flat.copy_from_slice(&pristine);
                    })
                });
            }
        }
        group.finish();
    }
}

fn restore_history(c: &mut Criterion) {
    const MEMORY: u64 = 64 << 20;
    const VERSIONS: usize = 10_000;
    const PAGES_PER_STEP: usize = 4;
    let pages = MEMORY / PAGE_SIZE;
    let (mut mm, _) = filled(MEMORY);
    let mut s = Rng(0x9E37_79B9_7F4A_7C15);
    let mut history = Vec::with_capacity(VERSIONS);
    for step in 0..VERSIONS as u64 {
        for _ in 0..PAGES_PER_STEP {
            let p = s.next() % pages;
            mm.write_memory(BASE + p * PAGE_SIZE + 128, &step.to_le_bytes()).unwrap();
        }
        history.push(mm.snapshot());
    }
    let targets: Vec<usize> = (0..1024).map(|_| (s.next() % VERSIONS as u64) as usize).collect();
    // Pages that differ between consecutive targets (what a restore "moves").
    let differing: usize =
        targets.windows(2).map(|w| history[w[0]].diff(&history[w[1]]).changed_pages().count()).sum::<usize>()
            / (targets.len() - 1);
    eprintln!("restore_history: {differing} pages differ on average between consecutive targets");

    let mut group = c.benchmark_group("restore_history");
    group.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let mut i = 0;
    group.bench_function(BenchmarkId::new("vmsnap", "random_version"), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            mm.restore(&history[targets[i]]);
        })
    });
    // Baseline: copying the differing pages into place (what a restore that
    // moves bytes must do at least), from a pristine buffer.
    let pristine = vec![0x11u8; MEMORY as usize];
    let mut memory = pristine.clone();
    let copies: Vec<u64> = (0..differing.max(1)).map(|_| s.next() % pages).collect();
    group.bench_function(BenchmarkId::new("memcpy_differing_pages", "random_version"), |b| {
        b.iter(|| {
            for &p in &copies {
                let r = p as usize * PAGE..(p as usize + 1) * PAGE;
                memory[r.clone()].copy_from_slice(&pristine[r]);
            }
            black_box(&memory);
        })
    });
    group.finish();
}

fn diff(c: &mut Criterion) {
    const MEMORY: u64 = 1 << 30; // 262,144 pages
    let pages = MEMORY / PAGE_SIZE;
    let (mut mm, base) = filled(MEMORY);
    let flat_a: Vec<u8> = {
        let mut v = vec![0u8; MEMORY as usize];
        mm.read_memory(BASE, &mut v).unwrap();
        v
    };
    let mut group = c.benchmark_group("diff");
    group.sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let mut s = Rng(0xD1B5_4A32_D192_ED03);
    let mut flat_b = flat_a.clone();
    for k in [1usize, 10, 100, 1000] {
        // A version with base's bytes that is not `changed`'s parent (a layout
        // change, reverting nothing, sits between them): diffing it against
        // `changed` takes the general page-table walk, not the change log.
        mm.restore(&base);
        mm.protect_memory(BASE, PAGE_SIZE, Protection::READ_WRITE).unwrap();
        let unrelated = mm.snapshot();
        mm.restore(&base);
        flat_b.copy_from_slice(&flat_a);
        for _ in 0..k {
            let p = s.next() % pages;
            let off = s.next() % PAGE_SIZE;
            mm.write_memory(BASE + p * PAGE_SIZE + off, &[0xEE]).unwrap();
            flat_b[(p * PAGE_SIZE + off) as usize] = 0xEE;
        }
        let changed = mm.snapshot();
        // Parent and child: the child's change log is the diff.
        group.bench_function(BenchmarkId::new("vmsnap", k), |b| {
            b.iter(|| black_box(base.diff(&changed).changed_pages().count()))
        });
        // Any two versions: the walk over the page tables.
        group.bench_function(BenchmarkId::new("vmsnap_walk", k), |b| {
            b.iter(|| black_box(unrelated.diff(&changed).changed_pages().count()))
        });
        group.bench_function(BenchmarkId::new("compare_all_bytes", k), |b| {
            b.iter(|| {
                black_box(
                    flat_a.chunks_exact(PAGE).zip(flat_b.chunks_exact(PAGE)).filter(|(x, y)| x != y).count(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot, fuzz_reset, restore_history, diff);
criterion_main!(benches);
