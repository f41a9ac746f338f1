//! `vmsnap fuzz-demo`: a fuzzer's reset loop on vmsnap next to the two
//! resets fuzzers use today — copying all of memory back (full copy), and
//! copying back the dirty pages from a pristine copy (a dirty list, as wtf
//! and Nyx do) — with resets per second for each.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind};

use crate::format::{parse_u64, size};

const BASE: u64 = 0x1_0000_0000;
const PAGE: usize = PAGE_SIZE as usize;

/// Arguments of `fuzz-demo`.
#[derive(Args)]
pub struct FuzzArgs {
    /// Target memory, in MiB (every page written before the base snapshot).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// Dirty pages per execution, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 10, 100, 1000])]
    pub dirty: Vec<u64>,
    /// Time budget of each measurement, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Run exactly this many executions per measurement instead of a time budget.
    #[arg(long, value_parser = parse_u64)]
    pub iterations: Option<u64>,
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs `iteration` for the budget (or the fixed count) and returns
/// executions per second.
fn rate(args: &FuzzArgs, mut iteration: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    match args.iterations {
        Some(count) => {
            while n < count {
                iteration(n);
                n += 1;
            }
        }
        None => {
            let budget = Duration::from_secs_f64(args.seconds);
            while start.elapsed() < budget {
                for _ in 0..16 {
                    iteration(n);
                    n += 1;
                }
            }
        }
    }
    n as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

#[derive(Serialize)]
struct Row {
    dirty_pages: u64,
    vmsnap_resets_per_second: f64,
    dirty_list_resets_per_second: f64,
    full_copy_resets_per_second: f64,
    vs_dirty_list: f64,
    vs_full_copy: f64,
}

/// `vmsnap fuzz-demo`.
pub fn run(args: &FuzzArgs, json: bool) -> Result<()> {
    if args.memory_mib == 0 || args.memory_mib > 4096 {
        bail!("--memory-mib must be between 1 and 4096");
    }
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        bail!("--seconds must be above 0 and at most 60");
    }
    let memory = args.memory_mib << 20;
    let pages = memory / PAGE_SIZE;
    if args.dirty.iter().any(|&k| k == 0 || k > pages) {
        bail!("--dirty values must be between 1 and {pages} (the target's pages)");
    }

    // The target's memory: every page written, then frozen as the base snapshot.
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, memory, Protection::READ_WRITE, false, RegionKind::Private)?;
    let mut pristine = vec![0u8; memory as usize];
    for (i, page) in pristine.chunks_exact_mut(PAGE).enumerate() {
        page.fill(i as u8 | 1);
        mm.write_memory(BASE + i as u64 * PAGE_SIZE, page)?;
    }
    let base = mm.snapshot();

    if !json {
        outln!(
            "fuzz reset loop: {} of target memory, random dirty pages, 8 bytes written in each",
            size(memory)
        );
        outln!(
            "{:>6} {:>14} {:>14} {:>14} {:>9} {:>9}",
            "dirty",
            "vmsnap/s",
            "dirty-list/s",
            "full-copy/s",
            "vs list",
            "vs full"
        );
    }
    let mut rows = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for &k in &args.dirty {
        let sets: Vec<Vec<u64>> =
            (0..256).map(|_| (0..k).map(|_| xorshift(&mut seed) % pages).collect()).collect();
        let input = [0xA5u8; 8];

        let mut failed = None;
        let vmsnap_rate = rate(args, |n| {
            for &p in &sets[n as usize % sets.len()] {
                if let Err(e) = mm.write_memory(BASE + p * PAGE_SIZE + 8, &input) {
                    failed = Some(e);
                }
            }
            mm.restore(&base);
        });
        if let Some(e) = failed {
            return Err(e.into());
        }

        let mut memory_copy = pristine.clone();
        let mut bits = vec![0u64; (pages as usize).div_ceil(64)];
        let mut dirty: Vec<usize> = Vec::new();
        let list_rate = rate(args, |n| {
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

        let full_rate = rate(args, |n| {
            for &p in &sets[n as usize % sets.len()] {
                let p = p as usize;
                memory_copy[p * PAGE + 8..p * PAGE + 16].copy_from_slice(&input);
            }
            memory_copy.copy_from_slice(&pristine);
        });
        let row = Row {
            dirty_pages: k,
            vmsnap_resets_per_second: vmsnap_rate,
            dirty_list_resets_per_second: list_rate,
            full_copy_resets_per_second: full_rate,
            vs_dirty_list: vmsnap_rate / list_rate,
            vs_full_copy: vmsnap_rate / full_rate,
        };
        if !json {
            outln!(
                "{:>6} {:>14.0} {:>14.0} {:>14.0} {:>8.2}x {:>8.1}x",
                k,
                vmsnap_rate,
                list_rate,
                full_rate,
                row.vs_dirty_list,
                row.vs_full_copy
            );
        }
        rows.push(row);
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"memory_bytes": memory, "rows": rows}))?
        );
    } else {
        outln!("(\"vs\" columns: vmsnap resets per second divided by the baseline's; above 1 is faster)");
        if cfg!(debug_assertions) {
            outln!("(a debug build: run with --release for real figures)");
        }
    }
    Ok(())
}
