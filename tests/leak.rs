//! No leaks: 100,000 snapshot / write / restore cycles keep the number of
//! frozen pages and of live versions flat, and dropping every version frees
//! every page.
//!
//! This file holds ONE test on purpose: it reads the process-wide counter
//! `vmsnap::frozen_pages_alive()`, which another test running in the same
//! binary would disturb.

use std::collections::VecDeque;
use std::time::Instant;

mod common;
use common::Rng;

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, frozen_pages_alive};

const BASE: u64 = 0x2000_0000;
/// Pages the base snapshot holds (every one written, so every one stored).
const BASE_PAGES: u64 = 64;
/// The cycles write to the first `HOT_PAGES` pages only.
const HOT_PAGES: u64 = 32;
/// Snapshots kept at most, besides the base.
const RING: usize = 8;
const CYCLES: u64 = 100_000;
const SAMPLE_EVERY: u64 = 10_000;
/// At most: the base's pages, plus for each kept snapshot its own copy of
/// every hot page. Independent of the number of cycles.
const BOUND: u64 = BASE_PAGES + RING as u64 * HOT_PAGES;

fn page(i: u64) -> u64 {
    BASE + i * PAGE_SIZE
}

/// The 8-byte stamp at the start of each hot page, per version.
type Stamps = [u64; HOT_PAGES as usize];

fn read_stamp(mm: &MemoryManager, i: u64) -> u64 {
    let mut b = [0u8; 8];
    mm.read_memory(page(i), &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn snap_stamp(s: &Snapshot, i: u64) -> u64 {
    let mut b = [0u8; 8];
    s.read_memory(page(i), &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn snapshot_write_restore_cycles_keep_memory_flat_and_free_everything() {
    let started = Instant::now();
    let start = frozen_pages_alive();
    let mut rng = Rng(0x1EAC_0DE5_EED5_0001);

    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, BASE_PAGES * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    let mut base_stamps: Stamps = [0; HOT_PAGES as usize];
    for i in 0..BASE_PAGES {
        // Non-zero everywhere, so every base page is stored.
        mm.write_memory(page(i), &[i as u8 | 0x80; PAGE_SIZE as usize]).unwrap();
        let stamp = 0xBA5E_0000 + i;
        mm.write_memory(page(i), &stamp.to_le_bytes()).unwrap();
        if i < HOT_PAGES {
            base_stamps[i as usize] = stamp;
        }
    }
    let base = mm.snapshot();
    assert_eq!(frozen_pages_alive(), start + BASE_PAGES);
    assert_eq!(mm.compute_memory_stats().live_versions, 1);

    let mut ring: VecDeque<(Snapshot, Stamps)> = VecDeque::new();
    let mut current = base_stamps;
    let mut samples = Vec::new();
    let mut kept = 0u64;
    for cycle in 1..=CYCLES {
        // Write a few hot pages (which ones varies), with this cycle's stamp.
        for _ in 0..1 + rng.below(2) {
            let i = rng.below(HOT_PAGES);
            let stamp = (cycle << 8) | i;
            mm.write_memory(page(i), &stamp.to_le_bytes()).unwrap();
            current[i as usize] = stamp;
        }
        let s = mm.snapshot();
        if rng.below(4) == 0 {
            ring.push_back((s, current));
            kept += 1;
            if ring.len() > RING {
                ring.pop_front();
            }
        } else {
            drop(s);
        }
        // Back to a kept snapshot or to the base.
        let k = rng.below(ring.len() as u64 + 1) as usize;
        let (target, stamps) = if k == 0 { (&base, base_stamps) } else { (&ring[k - 1].0, ring[k - 1].1) };
        mm.restore(target);
        current = stamps;
        // The restored state, one page every cycle and all of them now and then.
        let i = rng.below(HOT_PAGES);
        assert_eq!(read_stamp(&mm, i), current[i as usize], "cycle {cycle}: page {i}");
        if cycle % 1000 == 0 {
            for i in 0..HOT_PAGES {
                assert_eq!(read_stamp(&mm, i), current[i as usize], "cycle {cycle}: page {i}");
            }
        }

        if cycle % SAMPLE_EVERY == 0 {
            let frozen = frozen_pages_alive() - start;
            let versions = mm.compute_memory_stats().live_versions;
            samples.push((cycle, frozen, versions));
            assert!(frozen <= BOUND, "cycle {cycle}: {frozen} frozen pages alive (bound {BOUND})");
            assert!(frozen >= BASE_PAGES, "cycle {cycle}: the base's pages are alive");
            assert_eq!(versions, 1 + ring.len() as u64, "cycle {cycle}: live versions = base + ring");
            assert_eq!(ring.len(), RING, "cycle {cycle}: the ring is full");
        }
    }
    eprintln!("samples (cycle, frozen pages, live versions): {samples:?}; kept {kept} snapshots");
    assert_eq!(samples.len(), (CYCLES / SAMPLE_EVERY) as usize);
    assert!(kept > CYCLES / 5, "many snapshots went through the ring");

    // Every kept snapshot still holds its own bytes, and the base its own.
    for (s, stamps) in &ring {
        for i in 0..HOT_PAGES {
            assert_eq!(snap_stamp(s, i), stamps[i as usize]);
        }
    }
    for i in 0..HOT_PAGES {
        assert_eq!(snap_stamp(&base, i), base_stamps[i as usize]);
    }

    // Dropping the ring with the manager at the base leaves exactly the base's pages.
    mm.restore(&base);
    drop(ring);
    assert_eq!(frozen_pages_alive(), start + BASE_PAGES);
    assert_eq!(mm.compute_memory_stats().live_versions, 1);
    let stats = base.compute_memory_stats();
    assert_eq!((stats.private_memory, stats.shared_memory), (0, BASE_PAGES * PAGE_SIZE), "shared with mm");
    drop(mm);
    let stats = base.compute_memory_stats();
    assert_eq!((stats.private_memory, stats.shared_memory), (BASE_PAGES * PAGE_SIZE, 0), "base alone");
    drop(base);
    assert_eq!(frozen_pages_alive(), start, "every page is freed");

    let elapsed = started.elapsed();
    eprintln!("{CYCLES} cycles in {elapsed:?}");
}
