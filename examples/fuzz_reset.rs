//! A fuzzer's reset loop on vmsnap next to the two resets fuzzers use today:
//! copying all of memory back, and copying back the dirty pages from a
//! pristine copy (wtf, Nyx). Prints resets per second for each.
//!
//! Run: `cargo run --release --example fuzz_reset [MEMORY_MIB] [DIRTY_PAGES]`
//! (defaults: 64 MiB, 1, 10, 100 and 1000 dirty pages per execution).

use std::time::{Duration, Instant};

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind};

const BASE: u64 = 0x1_0000_0000;
const PAGE: usize = PAGE_SIZE as usize;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs `iteration` for about `budget` and returns iterations per second.
fn rate(budget: Duration, mut iteration: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            iteration(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), vmsnap::MemoryError> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let memory = args.first().copied().unwrap_or(64) << 20;
    let ks: Vec<u64> = match args.get(1) {
        Some(&k) => vec![k],
        None => vec![1, 10, 100, 1000],
    };
    let pages = memory / PAGE_SIZE;

    // The target's memory: every page written, then frozen as the base snapshot.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, memory, Protection::READ_WRITE, false, RegionKind::Private)?;
    let mut pristine = vec![0u8; memory as usize];
    for (i, page) in pristine.chunks_exact_mut(PAGE).enumerate() {
        page.fill(i as u8 | 1);
        mm.write_memory(BASE + i as u64 * PAGE_SIZE, page)?;
    }
    let base = mm.snapshot();

    println!("fuzz reset loop, {} MiB of target memory, random dirty pages", memory >> 20);
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "dirty", "vmsnap/s", "dirty-list/s", "full-copy/s", "vs list", "vs full"
    );
    let budget = Duration::from_millis(700);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for k in ks {
        let sets: Vec<Vec<u64>> =
            (0..512).map(|_| (0..k).map(|_| xorshift(&mut seed) % pages).collect()).collect();
        let input = [0xA5u8; 8];

        let vmsnap_rate = rate(budget, |n| {
            for &p in &sets[n as usize % sets.len()] {
                mm.write_memory(BASE + p * PAGE_SIZE + 8, &input).expect("committed");
            }
            mm.restore(&base);
        });

        let mut memory_copy = pristine.clone();
        let mut bits = vec![0u64; (pages as usize).div_ceil(64)];
        let mut dirty: Vec<usize> = Vec::new();
        let list_rate = rate(budget, |n| {
            for &p in &sets[n as usize % sets.len()] {
                let p = p as usize;
                if bits[p / 64] & (1 << (p % 64)) == 0 {
                    bits[p / 64] |= 1 << (p % 64);
                    dirty.push(p);
                }
                memory_copy[p * PAGE + 8..p * PAGE + 16].copy_from_slice(&input);
            }
            for &p in &dirty {
                memory_copy[p * PAGE..(p + 1) * PAGE].copy_from_slice(&pristine[p * PAGE..(p + 1) * PAGE]);
                bits[p / 64] = 0;
            }
            dirty.clear();
        });

        let full_rate = rate(budget, |n| {
            for &p in &sets[n as usize % sets.len()] {
                let p = p as usize;
                memory_copy[p * PAGE + 8..p * PAGE + 16].copy_from_slice(&input);
            }
            memory_copy.copy_from_slice(&pristine);
        });

        println!(
            "{:>6} {:>14.0} {:>14.0} {:>14.0} {:>8.2}x {:>8.1}x",
            k,
            vmsnap_rate,
            list_rate,
            full_rate,
            vmsnap_rate / list_rate,
            vmsnap_rate / full_rate
        );
    }
    println!("(\"vs\" columns: vmsnap resets per second divided by the baseline's; above 1 is faster)");
    Ok(())
}
