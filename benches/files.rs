//! Snapshot files: save and eager load of realistic pages, against writing the
//! raw bytes and against one zstd level-8 frame of everything (the C++
//! original's approach), all in the same run.
//!
//! Run: `cargo bench --bench files`; size with `VMSNAP_BENCH_FILE_MIB`
//! (default 256; the figure is 1024). Ratios:
//! `python3 benches/ratios.py --baseline raw_write file_save`,
//! `python3 benches/ratios.py --baseline raw_read file_load` and
//! `python3 benches/ratios.py --baseline load file_open_lazy`; the
//! `file_incremental` rows are time per changed page (1,000 changed pages
//! over a 64 and a 256 MiB parent opened lazily). Compression
//! ratios are printed on stderr. `vmsnap` rows use every core (frames are
//! compressed and checked in parallel), `vmsnap_1_thread` rows one;
//! `floor_*` rows are the codec alone on one core (zstd level 3 over the same
//! 16-page frames, BLAKE3 of the same pages), the floor of the format.
//!
//! The pages:
//! - **heap**: heap-like objects — 16-byte chunk headers with sizes, pointers
//!   into a heap range, small counters and flags, zero padding, and short
//!   strings from a word list;
//! - **code**: real x86-64 machine code, read from the Wine DLLs when present
//!   (`target/libwine`), else from this bench's own executable;
//! - **mixed**: 40% heap, 20% code, 40% zero pages, as a process snapshot.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

// The tests' generator (tests/common/rng.rs), shared with the benches.
#[allow(dead_code)]
#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

/// Counts the heap bytes alive, for the lazy-open memory figure.
struct Counting;

static LIVE_HEAP: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, counting sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_HEAP.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> isize {
    LIVE_HEAP.load(std::sync::atomic::Ordering::Relaxed)
}

const BASE: u64 = 0x1_0000_0000;
const PAGE: usize = PAGE_SIZE as usize;

const WORDS: [&str; 16] = [
    "name", "value", "buffer", "handle", "window", "class", "module", "thread", "event", "file", "path",
    "error", "count", "size", "index", "config",
];

/// A page of heap-like objects.
fn heap_page(rng: &mut Rng, page: &mut [u8]) {
    let mut at = 0;
    while at + 16 <= PAGE {
        let object = 32 + (rng.next() % 12) as usize * 16; // 32..208 bytes
        let end = (at + object).min(PAGE);
        // Chunk header: previous size (often 0) and size | flags.
        page[at + 8..at + 16].copy_from_slice(&((object as u64) | 1).to_le_bytes());
        let mut field = at + 16;
        while field + 8 <= end {
            let word = match rng.next() % 10 {
                0..=2 => 0,                                                   // zero fields
                3..=5 => 0x0000_01d4_2000_0000 + (rng.next() % 0x40000) * 16, // heap pointers
                6 => 0x0000_7ffb_1000_0000 + (rng.next() % 0x1000) * 8,       // pointers into a DLL
                7 => rng.next() % 256,                                        // small counters
                _ => {
                    let w = WORDS[(rng.next() % 16) as usize].as_bytes();
                    let mut b = [0u8; 8];
                    b[..w.len().min(8)].copy_from_slice(&w[..w.len().min(8)]);
                    u64::from_le_bytes(b)
                }
            };
            page[field..field + 8].copy_from_slice(&word.to_le_bytes());
            field += 8;
        }
        at = end;
    }
}

fn code_bytes() -> Vec<u8> {
    let wine = PathBuf::from("target/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntdll.dll");
    let path = if wine.exists() { wine } else { std::env::current_exe().expect("own executable") };
    let mut bytes = std::fs::read(path).expect("readable");
    bytes.truncate(bytes.len() / PAGE * PAGE);
    bytes
}

/// A manager with `mib` MiB of pages of the given mix, frozen, and the same
/// bytes flat.
fn build(mib: usize, heap: u32, code: u32) -> (Snapshot, Vec<u8>) {
    let pages = mib * 256;
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, (pages * PAGE) as u64, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    let machine_code = code_bytes();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut flat = vec![0u8; pages * PAGE];
    for (i, page) in flat.chunks_exact_mut(PAGE).enumerate() {
        let pick = (rng.next() % 100) as u32;
        if pick < heap {
            heap_page(&mut rng, page);
        } else if pick < heap + code {
            let at = (i * PAGE) % machine_code.len();
            page.copy_from_slice(&machine_code[at..at + PAGE]);
        } else {
            continue; // a zero page
        }
        mm.write_memory(BASE + (i * PAGE) as u64, page).unwrap();
    }
    (mm.snapshot(), flat)
}

fn files(c: &mut Criterion) {
    let mib: usize = std::env::var("VMSNAP_BENCH_FILE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let dir = std::env::temp_dir().join(format!("vmsnap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (label, heap, code) in [("heap", 100, 0), ("mixed", 40, 20)] {
        let (snap, flat) = build(mib, heap, code);
        let bytes = (mib << 20) as u64;
        let (file, raw, l8) = (dir.join("snap.vmsnap"), dir.join("raw.bin"), dir.join("all.zst"));

        vmsnap::file::save(&snap, &file).unwrap();
        let l8_bytes = zstd::bulk::compress(&flat, 8).unwrap();
        std::fs::write(&l8, &l8_bytes).unwrap();
        std::fs::write(&raw, &flat).unwrap();
        // Written back before any timing: the kernel's writeback of these
        // files would otherwise take a core from the first rows measured.
        for f in [&l8, &raw] {
            std::fs::File::open(f).unwrap().sync_all().unwrap();
        }
        let saved = std::fs::metadata(&file).unwrap().len();
        eprintln!(
            "files/{label}: {mib} MiB -> vmsnap {:.1} MiB ({:.2}x), one zstd L8 frame {:.1} MiB ({:.2}x)",
            saved as f64 / (1 << 20) as f64,
            bytes as f64 / saved as f64,
            l8_bytes.len() as f64 / (1 << 20) as f64,
            bytes as f64 / l8_bytes.len() as f64
        );

        let mut group = c.benchmark_group("file_save");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(BenchmarkId::new("vmsnap", label), |b| {
            b.iter(|| vmsnap::file::save(&snap, &file).unwrap())
        });
        // One core: the per-core rate (the bytes written are the same).
        group.bench_function(BenchmarkId::new("vmsnap_1_thread", label), |b| {
            b.iter(|| vmsnap::file::Writer::new().threads(1).save(&snap, &file).unwrap())
        });
        group.bench_function(BenchmarkId::new("raw_write", label), |b| {
            b.iter(|| std::fs::write(&raw, &flat).unwrap())
        });
        group.bench_function(BenchmarkId::new("zstd_l8_frame", label), |b| {
            b.iter(|| std::fs::write(&l8, zstd::bulk::compress(&flat, 8).unwrap()).unwrap())
        });
        // The codec's floor on one core: compressing the same data in 16-page
        // level-3 frames, in memory, nothing else.
        group.bench_function(BenchmarkId::new("floor_zstd_frames_1_thread", label), |b| {
            let mut c = zstd::bulk::Compressor::new(vmsnap::file::ZSTD_LEVEL).unwrap();
            b.iter(|| {
                for f in flat.chunks(16 * PAGE).filter(|f| f.iter().any(|&b| b != 0)) {
                    black_box(c.compress(f).unwrap());
                }
            })
        });
        group.finish();

        let mut group = c.benchmark_group("file_load");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(BenchmarkId::new("vmsnap", label), |b| {
            b.iter(|| black_box(vmsnap::file::load(&file).unwrap()))
        });
        group.bench_function(BenchmarkId::new("vmsnap_1_thread", label), |b| {
            b.iter(|| black_box(vmsnap::file::Loader::new().threads(1).load(&file).unwrap()))
        });
        group.bench_function(BenchmarkId::new("raw_read", label), |b| {
            b.iter(|| black_box(std::fs::read(&raw).unwrap()))
        });
        group.bench_function(BenchmarkId::new("zstd_l8_frame", label), |b| {
            b.iter(|| {
                let compressed = std::fs::read(&l8).unwrap();
                black_box(zstd::bulk::decompress(&compressed, flat.len()).unwrap())
            })
        });
        // The floor of the format on one core: decompressing the same 16-page
        // level-3 frames into one reused buffer, and BLAKE3 of every page,
        // each alone (no file, no allocation, no page table).
        let frames: Vec<Vec<u8>> = flat
            .chunks(16 * PAGE)
            .filter(|f| f.iter().any(|&b| b != 0))
            .map(|f| zstd::bulk::compress(f, vmsnap::file::ZSTD_LEVEL).unwrap())
            .collect();
        group.bench_function(BenchmarkId::new("floor_zstd_frames_1_thread", label), |b| {
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            let mut out = vec![0u8; 16 * PAGE];
            b.iter(|| {
                for f in &frames {
                    black_box(d.decompress_to_buffer(f, &mut out).unwrap());
                }
            })
        });
        group.bench_function(BenchmarkId::new("floor_blake3_pages_1_thread", label), |b| {
            b.iter(|| {
                for page in flat.chunks(PAGE).filter(|p| p.iter().any(|&b| b != 0)) {
                    black_box(blake3::hash(page));
                }
            })
        });
        group.finish();

        // Memory: the heap a lazily opened file adds per stored page (its
        // snapshot held, nothing read), and the first read of one page.
        {
            let before = live_heap();
            let lazy = vmsnap::file::open_lazy(&file).unwrap();
            let s = lazy.snapshot().unwrap();
            let stats = s.compute_memory_stats();
            let stored = (stats.private_memory + stats.shared_memory) / PAGE_SIZE;
            let added = live_heap() - before;
            let t = std::time::Instant::now();
            let mut buf = [0u8; 8];
            s.read_memory(BASE + (stored / 2) * PAGE as u64, &mut buf).unwrap();
            let first = t.elapsed();
            eprintln!(
                "lazy open {label}: {stored} stored pages, heap added {added} bytes = {:.1} bytes per stored page; first read of a page {:.1} us",
                added as f64 / stored.max(1) as f64,
                first.as_secs_f64() * 1e6
            );
            black_box((lazy, s, buf));
        }

        // Lazy opening: the header and the index, then one page (one frame),
        // against the eager load of everything.
        let mut group = c.benchmark_group("file_open_lazy");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_secs(5));
        let pages = (mib * 256) as u64;
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("open_and_read_one_page", label), |b| {
            b.iter(|| {
                let lazy = vmsnap::file::open_lazy(&file).unwrap();
                let s = lazy.snapshot().unwrap();
                n = (n + 7919) % pages;
                let mut buf = [0u8; 8];
                s.read_memory(BASE + n * PAGE as u64, &mut buf).unwrap();
                black_box(buf)
            })
        });
        group.bench_function(BenchmarkId::new("load", label), |b| {
            b.iter(|| black_box(vmsnap::file::load(&file).unwrap()))
        });
        group.finish();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Incremental saves of 1,000 changed pages against parents of growing size,
/// opened lazily and run from (a fuzzer's or a recorder's increments): the
/// time per changed page should not grow with the parent.
fn incremental(c: &mut Criterion) {
    const CHANGED: u64 = 1000;
    let dir = std::env::temp_dir().join(format!("vmsnap-bench-inc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("file_incremental");
    group.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CHANGED));
    for mib in [64usize, 256] {
        let (snap, _) = build(mib, 100, 0);
        let (parent, child) = (dir.join(format!("parent-{mib}.vmsnap")), dir.join("child.vmsnap"));
        vmsnap::file::save(&snap, &parent).unwrap();
        drop(snap);
        let opened = vmsnap::file::open(&parent).unwrap();
        let base = opened.snapshot().unwrap();
        let mut mm = MemoryManager::new();
        let pages = (mib * 256) as u64;
        let mut rng = Rng(mib as u64);
        // `save_incremental` opens the parent each time; `from_opened`
        // saves against the file the run was restored from.
        for (name, reopen) in [("save_1000_changed", true), ("save_1000_changed_from_opened", false)] {
            group.bench_function(BenchmarkId::new(name, format!("{mib}MiB")), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // 1,000 fresh changes against the parent each time.
                        mm.restore(&base);
                        for _ in 0..CHANGED {
                            let page = rng.next() % pages;
                            mm.write_memory(BASE + page * PAGE as u64 + 16, &rng.next().to_le_bytes())
                                .unwrap();
                        }
                        let snapshot = mm.snapshot();
                        let started = std::time::Instant::now();
                        if reopen {
                            vmsnap::file::save_incremental(&snapshot, &parent, &child).unwrap();
                        } else {
                            vmsnap::file::Writer::new()
                                .save_incremental_from(&snapshot, &opened, &parent, &child)
                                .unwrap();
                        }
                        total += started.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, files, incremental);
criterion_main!(benches);
