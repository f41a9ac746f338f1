//! Reset cost for K pages dirtied by the CPU (K = 16, 256, 4096 of an 8192-page
//! data region), with the baselines in the same run:
//!
//! * `vmsnap`: `Session::restore` to the base snapshot (diff ∪ dirty log);
//! * `unicorn_snapshot`: Unicorn's own memory snapshot
//!   (`ContextMode::CPU | MEMORY`, `context_restore`); K = 4096 is left out:
//!   its copy-on-write costs milliseconds per page (seconds per iteration);
//! * `remap_all`: unmap the region, map it again and write the pristine
//!   bytes back (O(memory size)).
//!
//! Group `reset` times the reset alone (the CPU dirties the pages untimed
//! before each one); group `dirty_and_reset` times the whole cycle, so the
//! cost of tracking (the write hook, Unicorn's copy-on-write) is counted too.
//!
//! ```sh
//! cargo bench -p vmsnap-unicorn --bench reset -- --warm-up-time 1 --measurement-time 3
//! ```

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use unicorn_engine::{Arch, ContextMode, Mode, Prot, RegisterX86, Unicorn};
use vmsnap::{MemoryManager, Protection, RegionKind};
use vmsnap_unicorn::Session;

const PAGES: u64 = 8192;
const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x100_0000;

/// `loop: mov [rdi], rcx; add rdi, 0x1000; dec rcx; jnz loop` — one store per
/// page for `rcx` pages from `rdi`.
const DIRTY_LOOP: [u8; 15] =
    [0x48, 0x89, 0x0F, 0x48, 0x81, 0xC7, 0x00, 0x10, 0x00, 0x00, 0x48, 0xFF, 0xC9, 0x75, 0xF1];
const LOOP_END: u64 = CODE + DIRTY_LOOP.len() as u64;

fn vmsnap_session() -> Session {
    let mut s = Session::new(MemoryManager::new()).unwrap();
    s.allocate_memory_at(CODE, 0x1000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    s.write(CODE, &DIRTY_LOOP).unwrap();
    s.protect_memory(CODE, 0x1000, Protection::READ_EXECUTE).unwrap();
    s.allocate_memory_at(DATA, PAGES * 0x1000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    s
}

fn dirty_session(s: &mut Session, k: u64) {
    s.set_reg(RegisterX86::RDI, DATA).unwrap();
    s.set_reg(RegisterX86::RCX, k).unwrap();
    s.run(CODE, LOOP_END, 0).unwrap();
}

fn plain_unicorn() -> Unicorn<'static, ()> {
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_64).unwrap();
    uc.mem_map(CODE, 0x1000, Prot::READ | Prot::EXEC).unwrap();
    uc.mem_write(CODE, &DIRTY_LOOP).unwrap();
    uc.mem_map(DATA, PAGES * 0x1000, Prot::READ | Prot::WRITE).unwrap();
    uc
}

fn dirty_unicorn(uc: &mut Unicorn<'static, ()>, k: u64) {
    uc.reg_write(RegisterX86::RDI, DATA).unwrap();
    uc.reg_write(RegisterX86::RCX, k).unwrap();
    uc.emu_start(CODE, LOOP_END, 0, 0).unwrap();
}

/// Runs `iters` cycles of `dirty` then `reset`, timing the reset alone
/// (`whole = false`) or both.
fn cycles(iters: u64, whole: bool, mut dirty: impl FnMut(), mut reset: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        dirty();
        let reset_start = Instant::now();
        reset();
        total += if whole { start.elapsed() } else { reset_start.elapsed() };
    }
    total
}

fn bench(c: &mut Criterion, group_name: &str, whole: bool) {
    let mut group = c.benchmark_group(group_name);
    for k in [16u64, 256, 4096] {
        let mut s = vmsnap_session();
        let base = s.snapshot().unwrap();
        group.bench_with_input(BenchmarkId::new("vmsnap", k), &k, |b, &k| {
            b.iter_custom(|iters| {
                let s = std::cell::RefCell::new(&mut s);
                cycles(
                    iters,
                    whole,
                    || dirty_session(&mut s.borrow_mut(), k),
                    || s.borrow_mut().restore(&base).unwrap(),
                )
            })
        });

        if k <= 256 {
            let mut uc = plain_unicorn();
            uc.ctl_set_context_mode(ContextMode::CPU | ContextMode::MEMORY).unwrap();
            let context = uc.context_init().unwrap();
            group.bench_with_input(BenchmarkId::new("unicorn_snapshot", k), &k, |b, &k| {
                b.iter_custom(|iters| {
                    let uc = std::cell::RefCell::new(&mut uc);
                    cycles(
                        iters,
                        whole,
                        || dirty_unicorn(&mut uc.borrow_mut(), k),
                        || uc.borrow().context_restore(&context).unwrap(),
                    )
                })
            });
        }

        let mut uc = plain_unicorn();
        let pristine = vec![0u8; (PAGES * 0x1000) as usize];
        let registers = uc.context_init().unwrap();
        group.bench_with_input(BenchmarkId::new("remap_all", k), &k, |b, &k| {
            b.iter_custom(|iters| {
                let uc = std::cell::RefCell::new(&mut uc);
                cycles(
                    iters,
                    whole,
                    || dirty_unicorn(&mut uc.borrow_mut(), k),
                    || {
                        let mut uc = uc.borrow_mut();
                        uc.mem_unmap(DATA, PAGES * 0x1000).unwrap();
                        uc.mem_map(DATA, PAGES * 0x1000, Prot::READ | Prot::WRITE).unwrap();
                        uc.mem_write(DATA, &pristine).unwrap();
                        uc.context_restore(&registers).unwrap();
                    },
                )
            })
        });
    }
    group.finish();
}

fn reset(c: &mut Criterion) {
    bench(c, "reset", false);
}

fn dirty_and_reset(c: &mut Criterion) {
    bench(c, "dirty_and_reset", true);
}

criterion_group!(benches, reset, dirty_and_reset);
criterion_main!(benches);
