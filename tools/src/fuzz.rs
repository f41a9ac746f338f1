//! `vmsnap fuzz-demo`: a fuzzer's reset loop on vmsnap next to the two
//! resets fuzzers use today — copying all of memory back (full copy), and
//! copying back the dirty pages from a pristine copy (a dirty list, as wtf
//! and Nyx do) — with resets per second for each.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

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

/// What `vmsnap fuzz-demo` measured.
#[derive(Serialize)]
pub struct FuzzReport {
    /// Bytes of target memory.
    pub memory_bytes: u64,
    /// One row per `--dirty` value, in order.
    pub rows: Vec<Row>,
    /// `debug` or `release`: what the figures are worth.
    pub build: &'static str,
}

/// Resets per second for one number of dirty pages.
#[derive(Serialize)]
pub struct Row {
    pub dirty_pages: u64,
    pub vmsnap_resets_per_second: f64,
    pub dirty_list_resets_per_second: f64,
    pub full_copy_resets_per_second: f64,
    /// vmsnap's rate divided by the dirty list's.
    pub vs_dirty_list: f64,
    /// vmsnap's rate divided by the full copy's.
    pub vs_full_copy: f64,
}

/// The target: its memory written page by page and frozen as the base
/// snapshot, with a pristine copy for the two baselines.
struct Target {
    mm: MemoryManager,
    base: Snapshot,
    pristine: Vec<u8>,
    pages: u64,
}

/// `vmsnap fuzz-demo`.
pub fn run(args: &FuzzArgs) -> Result<FuzzReport> {
    check(args)?;
    let memory = args.memory_mib << 20;
    let mut target = Target::new(memory)?;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let rows = args.dirty.iter().map(|&k| target.measure(args, k, &mut seed)).collect::<Result<_>>()?;
    Ok(FuzzReport { memory_bytes: memory, rows, build: crate::build() })
}

fn check(args: &FuzzArgs) -> Result<()> {
    if args.memory_mib == 0 || args.memory_mib > 4096 {
        bail!("--memory-mib must be between 1 and 4096");
    }
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        bail!("--seconds must be above 0 and at most 60");
    }
    let pages = (args.memory_mib << 20) / PAGE_SIZE;
    if args.dirty.iter().any(|&k| k == 0 || k > pages) {
        bail!("--dirty values must be between 1 and {pages} (the target's pages)");
    }
    Ok(())
}

/// The 8 bytes each execution writes in each of its dirty pages.
const INPUT: [u8; 8] = [0xA5; 8];

impl Target {
    fn new(memory: u64) -> Result<Target> {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(BASE, memory, Protection::READ_WRITE, false, RegionKind::Private)?;
        let mut pristine = vec![0u8; memory as usize];
        for (i, page) in pristine.chunks_exact_mut(PAGE).enumerate() {
            page.fill(i as u8 | 1);
            mm.write_memory(BASE + i as u64 * PAGE_SIZE, page)?;
        }
        let base = mm.snapshot();
        Ok(Target { mm, base, pristine, pages: memory / PAGE_SIZE })
    }

    /// The three reset loops with `k` random dirty pages per execution.
    fn measure(&mut self, args: &FuzzArgs, k: u64, seed: &mut u64) -> Result<Row> {
        let sets: Vec<Vec<u64>> =
            (0..256).map(|_| (0..k).map(|_| xorshift(seed) % self.pages).collect()).collect();
        let vmsnap = self.vmsnap_rate(args, &sets)?;
        let mut copy = self.pristine.clone();
        let dirty_list = self.dirty_list_rate(args, &sets, &mut copy);
        let full_copy = self.full_copy_rate(args, &sets, &mut copy);
        Ok(Row {
            dirty_pages: k,
            vmsnap_resets_per_second: vmsnap,
            dirty_list_resets_per_second: dirty_list,
            full_copy_resets_per_second: full_copy,
            vs_dirty_list: vmsnap / dirty_list,
            vs_full_copy: vmsnap / full_copy,
        })
    }

    /// Writes through the manager, then restores the base snapshot.
    fn vmsnap_rate(&mut self, args: &FuzzArgs, sets: &[Vec<u64>]) -> Result<f64> {
        let mut failed = None;
        let (mm, base) = (&mut self.mm, &self.base);
        let rate = rate(args, |n| {
            for &p in &sets[n as usize % sets.len()] {
                if let Err(e) = mm.write_memory(BASE + p * PAGE_SIZE + 8, &INPUT) {
                    failed = Some(e);
                }
            }
            mm.restore(base);
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(rate),
        }
    }

    /// Writes into a copy of memory, marking pages in a bitmap and a list,
    /// then copies the listed pages back from the pristine copy.
    fn dirty_list_rate(&self, args: &FuzzArgs, sets: &[Vec<u64>], memory: &mut [u8]) -> f64 {
        let pristine = &self.pristine;
        let mut bits = vec![0u64; (self.pages as usize).div_ceil(64)];
        let mut dirty: Vec<usize> = Vec::new();
        rate(args, |n| {
            for &p in &sets[n as usize % sets.len()] {
                let p = p as usize;
                if bits[p / 64] & (1 << (p % 64)) == 0 {
                    bits[p / 64] |= 1 << (p % 64);
                    dirty.push(p);
                }
                memory[p * PAGE + 8..p * PAGE + 16].copy_from_slice(&INPUT);
            }
            for &p in &dirty {
                memory[p * PAGE..(p + 1) * PAGE].copy_from_slice(&pristine[p * PAGE..(p + 1) * PAGE]);
                bits[p / 64] = 0;
            }
            dirty.clear();
        })
    }

    /// Writes into a copy of memory, then copies all of it back.
    fn full_copy_rate(&self, args: &FuzzArgs, sets: &[Vec<u64>], memory: &mut [u8]) -> f64 {
        rate(args, |n| {
            for &p in &sets[n as usize % sets.len()] {
                let p = p as usize;
                memory[p * PAGE + 8..p * PAGE + 16].copy_from_slice(&INPUT);
            }
            memory.copy_from_slice(&self.pristine);
        })
    }
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz reset loop: {} of target memory, random dirty pages, 8 bytes written in each",
            size(self.memory_bytes)
        )?;
        writeln!(
            f,
            "{:>6} {:>14} {:>14} {:>14} {:>9} {:>9}",
            "dirty", "vmsnap/s", "dirty-list/s", "full-copy/s", "vs list", "vs full"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>6} {:>14.0} {:>14.0} {:>14.0} {:>8.2}x {:>8.1}x",
                r.dirty_pages,
                r.vmsnap_resets_per_second,
                r.dirty_list_resets_per_second,
                r.full_copy_resets_per_second,
                r.vs_dirty_list,
                r.vs_full_copy
            )?;
        }
        writeln!(
            f,
            "(\"vs\" columns: vmsnap resets per second divided by the baseline's; above 1 is faster)"
        )?;
        if self.build == "debug" {
            writeln!(f, "(a debug build: run with --release for real figures)")?;
        }
        Ok(())
    }
}
