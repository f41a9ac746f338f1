//! Reads, writes and page lookups on 1 GiB committed, next to a flat
//! `Vec<u8>` of the same size measured in the same run.
//!
//! Run: `cargo bench --bench access`; ratios:
//! `python3 benches/ratios.py read_ write_ dependent_ page_lookup`.
//!
//! Both sides see the same access streams: sequential (stride = access size,
//! wrapping) and random (a precomputed list of random offsets, aligned to the
//! access size so an access never crosses a page). The vmsnap side holds
//! 1 GiB of non-zero frozen pages (written, then snapshotted), as a fuzzer's
//! base snapshot does; random writes dirty the overlay as they go.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind};

const GIB: u64 = 1 << 30;
const BASE: u64 = 0x1_0000_0000;
const RANDOM_OFFSETS: usize = 1 << 20;

// The tests' generator (tests/common/rng.rs), shared with the benches.
#[allow(dead_code)]
#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

fn random_offsets(align: u64) -> Vec<u64> {
    let mut s = Rng(0x9E37_79B9_7F4A_7C15);
    (0..RANDOM_OFFSETS).map(|_| (s.next() % GIB) & !(align - 1)).collect()
}

fn setup() -> (MemoryManager, Vec<u8>) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, GIB, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let mut flat = vec![0u8; GIB as usize];
    let mut page = [0u8; PAGE_SIZE as usize];
    for (i, chunk) in flat.chunks_exact_mut(PAGE_SIZE as usize).enumerate() {
        page[..8].copy_from_slice(&(i as u64).to_le_bytes());
        page[8] = 0xA5;
        chunk.copy_from_slice(&page);
        mm.write_memory(BASE + i as u64 * PAGE_SIZE, &page).unwrap();
    }
    // A pointer chase over the first 256 MiB: one 8-byte slot in every page,
    // the pages in a random cyclic order, each slot holding the next's offset.
    let chain = chase_order();
    for (i, &at) in chain.iter().enumerate() {
        let next = chain[(i + 1) % chain.len()].to_le_bytes();
        flat[at as usize..at as usize + 8].copy_from_slice(&next);
        mm.write_memory(BASE + at, &next).unwrap();
    }
    mm.snapshot(); // freeze: the 1 GiB now lives in the persistent page table
    (mm, flat)
}

/// The offsets of the pointer chase: every page of 256 MiB once, shuffled,
/// at a random 8-byte slot past the page's first 16 bytes.
fn chase_order() -> Vec<u64> {
    let pages = (CHASE_BYTES / PAGE_SIZE) as usize;
    let mut s = Rng(0x0DDB_1A5E_5BAD_5EED);
    let mut order: Vec<u64> = (0..pages as u64).collect();
    for i in (1..pages).rev() {
        order.swap(i, (s.next() % (i as u64 + 1)) as usize);
    }
    order.iter().map(|&p| p * PAGE_SIZE + 16 + (s.next() % 510) * 8).collect()
}

const CHASE_BYTES: u64 = 256 << 20;

fn bench_access(c: &mut Criterion) {
    let (mut mm, mut flat) = setup();
    for size in [1usize, 8, 4096] {
        let random = random_offsets(size as u64);
        let mut group = c.benchmark_group(format!("read_{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        for pattern in ["sequential", "random"] {
            let mut i = 0usize;
            let mut off = 0u64;
            group.bench_function(BenchmarkId::new("vec", pattern), |b| {
                b.iter(|| {
                    let at = next(pattern, &random, &mut i, &mut off, size) as usize;
                    buf.copy_from_slice(&flat[at..at + size]);
                    black_box(&buf);
                })
            });
            let mut i = 0usize;
            let mut off = 0u64;
            group.bench_function(BenchmarkId::new("vmsnap", pattern), |b| {
                b.iter(|| {
                    let at = next(pattern, &random, &mut i, &mut off, size);
                    mm.read_memory(BASE + at, &mut buf).unwrap();
                    black_box(&buf);
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("write_{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let data = vec![0x5Au8; size];
        for pattern in ["sequential", "random"] {
            let mut i = 0usize;
            let mut off = 0u64;
            group.bench_function(BenchmarkId::new("vec", pattern), |b| {
                b.iter(|| {
                    let at = next(pattern, &random, &mut i, &mut off, size) as usize;
                    flat[at..at + size].copy_from_slice(black_box(&data));
                })
            });
            let mut i = 0usize;
            let mut off = 0u64;
            group.bench_function(BenchmarkId::new("vmsnap", pattern), |b| {
                b.iter(|| {
                    let at = next(pattern, &random, &mut i, &mut off, size);
                    mm.write_memory(BASE + at, black_box(&data)).unwrap();
                })
            });
        }
        group.finish();
    }

    // Random 8-byte reads inside one megabyte (a working set the TLB holds).
    let mut group = c.benchmark_group("read_8_in_1MiB");
    let window: Vec<u64> = random_offsets(8).iter().map(|o| o % (1 << 20)).collect();
    let mut buf = [0u8; 8];
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("vec", "random"), |b| {
        b.iter(|| {
            i = (i + 1) % window.len();
            let at = window[i] as usize;
            buf.copy_from_slice(&flat[at..at + 8]);
            black_box(&buf);
        })
    });
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("vmsnap", "random"), |b| {
        b.iter(|| {
            i = (i + 1) % window.len();
            mm.read_memory(BASE + window[i], &mut buf).unwrap();
            black_box(&buf);
        })
    });
    group.finish();

    // Dependent 8-byte reads over 256 MiB: each read's value is the next
    // read's offset, so nothing overlaps (a pointer chase through a heap).
    let mut group = c.benchmark_group("dependent_read_256MiB");
    let start = chase_order()[0];
    let mut at = start;
    group.bench_function(BenchmarkId::new("vec", "chase"), |b| {
        b.iter(|| {
            let a = at as usize;
            at = u64::from_le_bytes(flat[a..a + 8].try_into().unwrap());
        })
    });
    black_box(at);
    let mut at = start;
    group.bench_function(BenchmarkId::new("vmsnap", "chase"), |b| {
        b.iter(|| {
            let mut v = [0u8; 8];
            mm.read_memory(BASE + at, &mut v).unwrap();
            at = u64::from_le_bytes(v);
        })
    });
    black_box(at);
    group.finish();

    // Random page lookup: is the page committed, and with what protection?
    // The flat baseline reads one byte of the page (the cheapest "lookup" a
    // flat buffer has).
    let random = random_offsets(PAGE_SIZE);
    let mut group = c.benchmark_group("page_lookup");
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("vec", "random"), |b| {
        b.iter(|| {
            i = (i + 1) % random.len();
            black_box(flat[random[i] as usize])
        })
    });
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("vmsnap", "random"), |b| {
        b.iter(|| {
            i = (i + 1) % random.len();
            black_box(mm.page_protection(BASE + random[i]))
        })
    });
    group.finish();
}

#[inline]
fn next(pattern: &str, random: &[u64], i: &mut usize, off: &mut u64, size: usize) -> u64 {
    if pattern == "random" {
        *i = (*i + 1) % random.len();
        random[*i]
    } else {
        *off = (*off + size as u64) % GIB;
        *off
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(800))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_access
}
criterion_main!(benches);
