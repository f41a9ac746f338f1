//! The lazy bomb (hardening issue #12, item 7): a small crafted file whose
//! index names 2^20 page records (4 GiB of pages) must not make a lazy
//! open, or the commands that read only the index, allocate anywhere near
//! 4 GiB. Lazily opened pages are 32-byte records in the file's store, so
//! the heap a lazy open keeps is bounded by the index, not by the pages.
//!
//! Its own test binary: it counts every heap byte with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use serde_bytes::ByteBuf;
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, file};

mod common;

/// Counts the heap bytes alive and their high-water mark.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RECORDS: u64 = 1 << 20;
const BASE: u64 = 0x1_0000_0000;

/// A 1.2 file (FORMAT.md §3–§5) whose one snapshot commits 4 GiB and maps
/// every page to a page record of its own: 2^20 records in 65,536 frames
/// of one byte each (never read: a lazy open reads no frame). Checksums,
/// offsets and lengths are all valid, so the reader gets to the index.
fn crafted_file() -> Vec<u8> {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, RECORDS * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    let mut state = Vec::new();
    mm.serialize_memory_state(&mut state, true);
    let layout_version = mm.layout_version();

    let frames = RECORDS / 16;
    let frame_checksum = ByteBuf::from(blake3::hash(&[0]).as_bytes()[..8].to_vec());
    let frame_table: Vec<(u64, u32, u8, &ByteBuf)> =
        (0..frames).map(|f| (f, 1, 16, &frame_checksum)).collect();
    let pages: Vec<(ByteBuf, u32, u8, u8, Option<u64>, u64)> = (0..RECORDS)
        .map(|k| {
            let hash = ByteBuf::from(blake3::hash(&k.to_le_bytes()).as_bytes().to_vec());
            (hash, (k / 16) as u32, (k % 16) as u8, 0, None, k | 1)
        })
        .collect();
    let map: Vec<(u64, Vec<u32>)> = vec![(BASE / PAGE_SIZE, (1..=RECORDS as u32).collect())];
    let snapshot = (0u64, None::<String>, None::<u64>, layout_version, ByteBuf::from(state), map);
    let index = rmp_serde::to_vec(&(frame_table, pages, vec![snapshot], None::<(ByteBuf, String)>)).unwrap();

    let frames_length = frames;
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(&[0x89, b'V', b'M', b'S', 0x0D, 0x0A, 0x1A, 0x0A]);
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(64 + frames_length).to_le_bytes());
    header.extend_from_slice(&(index.len() as u64).to_le_bytes());
    header.extend_from_slice(&blake3::hash(&index).as_bytes()[..16]);
    header.extend_from_slice(&frames_length.to_le_bytes());
    let checksum = blake3::hash(&header).as_bytes()[..8].to_vec();
    header.extend_from_slice(&checksum);

    let mut bytes = header;
    bytes.resize(bytes.len() + frames_length as usize, 0);
    bytes.extend_from_slice(&index);
    bytes
}

#[test]
fn a_lazy_bomb_file_costs_its_index_not_its_pages() {
    let bytes = crafted_file();
    let size = bytes.len() as isize;
    assert!(size < 64 << 20, "the crafted file is {size} bytes");
    let dir = common::temp_dir("lazy-bomb", "bomb");
    let path = dir.join("bomb.vmsnap");
    std::fs::write(&path, &bytes).unwrap();
    drop(bytes);

    // What `vmsnap info`, `regions`, `stats` and `map` do: inspect, open
    // lazily, query the layout.
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let info = file::inspect(&path).unwrap();
    assert_eq!(info.snapshots[0].stored_entries, RECORDS);
    let lazy = file::open_lazy(&path).unwrap();
    let snapshot = lazy.snapshot().unwrap();
    let stats = snapshot.compute_memory_stats();
    assert_eq!(stats.committed_memory, RECORDS * PAGE_SIZE);
    assert!(snapshot.region_info(BASE).is_committed);
    assert_eq!(lazy.frames_read(), 0);
    let kept = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;

    // 4 GiB of pages once cost 4.4 GB here (4,234 bytes a page). Now what
    // is kept is a few times the index (records, leaves, the index's page
    // records), and the peak adds the index bytes read and decoded.
    let per_page = kept as f64 / RECORDS as f64;
    eprintln!("lazy bomb: {size}-byte file, {kept} bytes kept ({per_page:.1} per page), peak {peak}");
    assert!(
        kept <= 4 * size,
        "a lazy open keeps {kept} bytes ({per_page:.1} per page) of a {size}-byte file"
    );
    assert!(peak <= 8 * size, "peak heap {peak} bytes for a {size}-byte file");

    // A page read is one frame, which is damaged (one byte, not a zstd
    // frame): a typed error, never a panic or wrong bytes.
    let mut buf = [0u8; 8];
    assert!(snapshot.read_memory(BASE, &mut buf).is_err());
    drop((snapshot, lazy));
}
