//! The demo's workload: deterministic steps (a fixed seed) on the process,
//! a named snapshot after each (`step-0` …), a progress bar on standard
//! error while it runs.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use vmsnap::{MemoryManager, PAGE_SIZE, nt};

use super::{Arenas, KUSER, KUSER_TICK_COUNT, Process, SEED, Session, allocate, check};
use crate::format::duration;
use crate::progress::Bar;

/// What the workload did.
#[derive(Serialize)]
pub struct Workload {
    /// Steps run, one snapshot each.
    pub steps: u64,
    /// The last step's snapshot (`step-N`).
    pub main_tip: String,
    /// Seconds the steps and their snapshots took.
    pub run_seconds: f64,
    /// 64 KiB arenas allocated (one every 25 steps) and released (the
    /// oldest of five).
    pub arenas_allocated: u64,
    pub arenas_released: u64,
    /// The step after which a heap page was made read-only.
    pub read_only_step: u64,
    /// Bytes committed at the end: what a full copy of memory copies.
    pub committed_bytes: u64,
}

/// Runs `steps` steps with a snapshot after each.
pub fn run(session: &mut Session, steps: u64) -> Result<Workload> {
    let read_only_step = steps / 3;
    let started = Instant::now();
    let mut rng = SEED;
    let mut bar = Bar::new("running", steps, false);
    for n in 0..steps {
        step(&mut session.mm, &session.process, &mut rng, n, &mut session.arenas)?;
        if n == read_only_step {
            protect_heap_page(session)?;
        }
        let id = take(session, &format!("step-{n}"))?;
        session.steps.push(id);
        bar.set(n + 1, steps);
    }
    drop(bar);
    Ok(Workload {
        steps,
        main_tip: format!("step-{}", steps - 1),
        run_seconds: started.elapsed().as_secs_f64(),
        arenas_allocated: session.arenas.allocated,
        arenas_released: session.arenas.released,
        read_only_step,
        committed_bytes: session.mm.compute_memory_stats().committed_memory,
    })
}

/// Takes a snapshot named `name`, timed (the timings report the median).
pub(super) fn take(session: &mut Session, name: &str) -> Result<vmsnap::SnapshotId> {
    let t = Instant::now();
    let id = session.timeline.take(&mut session.mm, Some(name))?;
    session.snapshot_seconds.push(t.elapsed().as_secs_f64());
    Ok(id)
}

/// VirtualProtect a heap page read-only: a layout change diffs show.
fn protect_heap_page(session: &mut Session) -> Result<()> {
    let (mut at, mut len, mut old) = (session.process.heap + PAGE_SIZE, PAGE_SIZE, 0u32);
    check(
        nt::nt_protect_virtual_memory(&mut session.mm, &mut at, &mut len, nt::PAGE_READONLY, &mut old),
        "NtProtectVirtualMemory",
    )
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One deterministic step: heap objects, a stack frame, the tick count read
/// from KUSER_SHARED_DATA by the guest, a message through section view A,
/// a global in the image's `.data` (the first guest write makes the
/// write-copy page private), and every 25 steps a 64 KiB arena allocated
/// (the oldest of four released).
pub(super) fn step(
    mm: &mut MemoryManager,
    p: &Process,
    rng: &mut u64,
    n: u64,
    arenas: &mut Arenas,
) -> Result<()> {
    p.tick.store(n + 1, Ordering::Relaxed);
    for _ in 0..4 {
        let page = xorshift(rng) % p.heap_pages;
        let offset = (xorshift(rng) % (PAGE_SIZE - 16)) & !7;
        let mut object = [0u8; 16];
        object[..8].copy_from_slice(&n.to_le_bytes());
        object[8..].copy_from_slice(&rng.to_le_bytes());
        mm.write_memory(p.heap + page * PAGE_SIZE + offset, &object)?;
    }
    let frame = p.stack_top - 0x200 - (n % 16) * 0x100;
    mm.guest_write(frame, &[n as u8; 0x40])?;
    let mut tick = [0u8; 8];
    mm.guest_read(KUSER + KUSER_TICK_COUNT, &mut tick)?;
    mm.guest_write(p.heap, &tick)?; // the heap's "last tick seen"
    mm.guest_write(p.view_a, &n.to_le_bytes())?;
    let message = format!("step {n:<8}");
    mm.guest_write(p.view_a + 0x100 * (1 + n % 15), message.as_bytes())?;
    mm.guest_write(p.data + 0x10, &n.to_le_bytes())?;
    if n % 25 == 24 {
        cycle_arena(mm, n, arenas)?;
    }
    Ok(())
}

/// Allocates a 64 KiB arena and writes in it; releases the oldest of five.
fn cycle_arena(mm: &mut MemoryManager, n: u64, arenas: &mut Arenas) -> Result<()> {
    let (base, _) = allocate(mm, 0, 0x10000, nt::MEM_RESERVE | nt::MEM_COMMIT, nt::PAGE_READWRITE, "arena")?;
    mm.write_memory(base, format!("arena of step {n}").as_bytes())?;
    arenas.live.push_back(base);
    arenas.allocated += 1;
    if arenas.live.len() > 4 {
        let (mut old, mut zero) = (arenas.live.pop_front().expect("five arenas"), 0u64);
        check(nt::nt_free_virtual_memory(mm, &mut old, &mut zero, nt::MEM_RELEASE), "NtFreeVirtualMemory")?;
        arenas.released += 1;
    }
    Ok(())
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run")?;
        writeln!(
            f,
            "  {} steps in {}, a snapshot after each (\"step-0\" .. \"{}\"): 4 heap objects, a stack frame, the tick read from KUSER, a message through view A and a .data global per step; arenas allocated: {}, released: {}; a heap page made read-only at step {}",
            self.steps,
            duration(self.run_seconds),
            self.main_tip,
            self.arenas_allocated,
            self.arenas_released,
            self.read_only_step
        )
    }
}
