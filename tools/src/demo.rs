//! `vmsnap demo`, the main job: a process-like address space — an image
//! mapped from a PE file written in memory, a heap, a stack with a guard
//! page, a KUSER_SHARED_DATA-style MMIO page, a section with two views — runs
//! a deterministic workload with a snapshot per step, rewinds and branches,
//! diffs two execution points, saves the timeline, reopens and verifies it,
//! and reports sizes and timings as ratios to the full-copy baseline.

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use vmsnap::nt::{self, NtStatus};
use vmsnap::{MemoryError, MemoryManager, PAGE_SIZE, RegionChange, Snapshot, SnapshotId, Timeline};

use crate::format::{duration, size};
use crate::progress::Bar;

/// Arguments of `demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Steps of the workload (one snapshot each); the branch runs a tenth as many (at least 3).
    #[arg(long, default_value_t = 500)]
    pub steps: u64,
    /// Where to save the timeline (default: vmsnap-demo.vmsnap in the temporary directory).
    /// Two more files go beside it: NAME-base.vmsnap and the incremental NAME-branch.vmsnap (NAME: OUT without .vmsnap).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Heap committed, in MiB.
    #[arg(long, default_value_t = 16)]
    pub heap_mib: u64,
}

const IMAGE_BASE: u64 = 0x1_4000_0000;
const KUSER: u64 = 0x7FFE_0000;
/// `KUSER_SHARED_DATA.TickCount` (a `KSYSTEM_TIME`; its low part here).
const KUSER_TICK_COUNT: u64 = 0x320;
const HEAP_RESERVE: u64 = 64 << 20;
const STACK_RESERVE: u64 = 1 << 20;
const STACK_COMMIT_PAGES: u64 = 16;
const SECTION_SIZE: u64 = 0x10000;
const SEED: u64 = 0x2545_F491_4F6C_DD1D;

fn check(status: NtStatus, what: &str) -> Result<()> {
    if !status.is_success() {
        bail!("{what}: {status}");
    }
    Ok(())
}

/// Commits the stack page at `page` as a guard page, as a thread's stack
/// keeps one below its committed part (`NtAllocateVirtualMemory`).
fn commit_guard_page(mm: &mut MemoryManager, page: u64, what: &str) -> Result<()> {
    let (mut at, mut len) = (page, PAGE_SIZE);
    check(
        nt::nt_allocate_virtual_memory(
            mm,
            &mut at,
            0,
            &mut len,
            nt::MEM_COMMIT,
            nt::PAGE_READWRITE | nt::PAGE_GUARD,
        ),
        what,
    )
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A small PE32+ executable (`.text`, `.rdata`, `.data` with a pointer the
/// loader relocates, `.bss`, `.reloc`), written with the `object` crate.
fn demo_pe() -> Result<(Vec<u8>, u32)> {
    use object::pe;
    use object::write::pe::{NtHeaders, Writer};

    let mut out = Vec::new();
    let mut w = Writer::new(true, 0x1000, 0x200, &mut out);
    w.reserve_dos_header_and_stub();
    w.reserve_nt_headers(16);
    w.reserve_section_headers(5);
    // mov eax, [rip+...]; inc eax; ret — the bytes only need to look like code.
    let code = [0x8Bu8, 0x05, 0xFA, 0x0F, 0x00, 0x00, 0xFF, 0xC0, 0xC3];
    let text = w.reserve_text_section(code.len() as u32);
    let message = b"vmsnap demo: hello from .rdata\0";
    let rdata = w.reserve_rdata_section(message.len() as u32);
    let data = w.reserve_data_section(0x2000, 0x40);
    w.reserve_bss_section(0x3000);
    // .data+0: a pointer to the .rdata message, fixed up if the image moves.
    w.add_reloc(data.virtual_address, pe::IMAGE_REL_BASED_DIR64);
    w.reserve_reloc_section();
    w.write_dos_header_and_stub().context("PE writer")?;
    w.write_nt_headers(NtHeaders {
        machine: pe::IMAGE_FILE_MACHINE_AMD64,
        time_date_stamp: 0,
        characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE,
        major_linker_version: 14,
        minor_linker_version: 0,
        address_of_entry_point: text.virtual_address,
        image_base: IMAGE_BASE,
        major_operating_system_version: 10,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 10,
        minor_subsystem_version: 0,
        subsystem: pe::IMAGE_SUBSYSTEM_WINDOWS_CUI,
        dll_characteristics: pe::DllFlags(0),
        size_of_stack_reserve: STACK_RESERVE,
        size_of_stack_commit: STACK_COMMIT_PAGES * PAGE_SIZE,
        size_of_heap_reserve: HEAP_RESERVE,
        size_of_heap_commit: 0x1000,
    });
    w.write_section_headers();
    w.write_section(text.file_offset, &code);
    w.write_section(rdata.file_offset, message);
    let mut data_bytes = [0u8; 0x40];
    data_bytes[..8].copy_from_slice(&(IMAGE_BASE + u64::from(rdata.virtual_address)).to_le_bytes());
    w.write_section(data.file_offset, &data_bytes);
    w.write_reloc_section();
    Ok((out, data.virtual_address))
}

/// The KUSER_SHARED_DATA page as the guest reads it for `tick`.
fn kuser_page(tick: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[0..4].copy_from_slice(&(tick as u32).to_le_bytes()); // TickCountLowDeprecated
    page[4..8].copy_from_slice(&0x0FA0_0000u32.to_le_bytes()); // TickCountMultiplier
    page[8..16].copy_from_slice(&(tick * 10_000).to_le_bytes()); // InterruptTime (100 ns)
    page[0x26C..0x270].copy_from_slice(&10u32.to_le_bytes()); // NtMajorVersion
    let t = KUSER_TICK_COUNT as usize;
    page[t..t + 8].copy_from_slice(&tick.to_le_bytes());
    page
}

/// Addresses of the process's parts.
struct Process {
    image_base: u64,
    data: u64,
    heap: u64,
    heap_pages: u64,
    stack_top: u64,
    guard: u64,
    view_a: u64,
    view_b: u64,
    tick: Arc<AtomicU64>,
}

/// What one workload step did to the layout.
#[derive(Default)]
struct Arenas {
    live: VecDeque<u64>,
    allocated: u64,
    released: u64,
}

/// One deterministic step: heap objects, a stack frame, the tick count read
/// from KUSER_SHARED_DATA by the guest, a message through section view A,
/// a global in the image's `.data` (the first guest write makes the
/// write-copy page private), and every 25 steps a 64 KiB arena allocated
/// (the oldest of four released).
fn step(mm: &mut MemoryManager, p: &Process, rng: &mut u64, n: u64, arenas: &mut Arenas) -> Result<()> {
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
        let (mut base, mut len) = (0u64, 0x10000u64);
        check(
            nt::nt_allocate_virtual_memory(
                mm,
                &mut base,
                0,
                &mut len,
                nt::MEM_RESERVE | nt::MEM_COMMIT,
                nt::PAGE_READWRITE,
            ),
            "NtAllocateVirtualMemory(arena)",
        )?;
        mm.write_memory(base, format!("arena of step {n}").as_bytes())?;
        arenas.live.push_back(base);
        arenas.allocated += 1;
        if arenas.live.len() > 4 {
            let (mut old, mut zero) = (arenas.live.pop_front().expect("five arenas"), 0u64);
            check(
                nt::nt_free_virtual_memory(mm, &mut old, &mut zero, nt::MEM_RELEASE),
                "NtFreeVirtualMemory",
            )?;
            arenas.released += 1;
        }
    }
    Ok(())
}

/// Best of `runs` timings of `f`, in seconds.
fn best(runs: u32, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[derive(Serialize)]
struct Timing {
    operation: &'static str,
    vmsnap_seconds: f64,
    full_copy_seconds: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    steps: u64,
    branch_steps: u64,
    snapshots: usize,
    regions: usize,
    committed_bytes: u64,
    image_base: u64,
    heap: u64,
    stack_top: u64,
    guard_page: u64,
    kuser: u64,
    view_a: u64,
    view_b: u64,
    rewound_to: String,
    branch_tip: String,
    main_tip: String,
    diff_far_region_changes: usize,
    diff_far_pages: usize,
    diff_next_pages: usize,
    timeline_file: String,
    timeline_bytes: u64,
    full_copy_bytes: u64,
    base_file: String,
    base_bytes: u64,
    incremental_file: String,
    incremental_bytes: u64,
    dedup_ratio: f64,
    compression_ratio: f64,
    verified: bool,
    lazy_open_seconds: f64,
    lazy_frames_read: u64,
    lazy_frames: u64,
    snapshot_mean_seconds: f64,
    timings: Vec<Timing>,
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| path.display().to_string())?.len())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem =
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "vmsnap-demo".into());
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "vmsnap".into());
    path.with_file_name(format!("{stem}-{suffix}.{ext}"))
}

/// `vmsnap demo`.
pub fn run(args: &DemoArgs, json: bool) -> Result<()> {
    if args.steps < 4 || args.steps > 1_000_000 {
        bail!("--steps must be between 4 and 1000000");
    }
    if args.heap_mib == 0 || args.heap_mib > HEAP_RESERVE >> 20 {
        bail!("--heap-mib must be between 1 and {}", HEAP_RESERVE >> 20);
    }
    let out = args.out.clone().unwrap_or_else(|| std::env::temp_dir().join("vmsnap-demo.vmsnap"));
    let base_path = sibling(&out, "base");
    let branch_path = sibling(&out, "branch");
    let say = |line: String| {
        if !json {
            outln!("{line}");
        }
    };
    say(format!(
        "vmsnap demo: a rewindable Windows-like process, {} steps ({} build)\n",
        args.steps,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    ));

    // ---------------------------------------------------------------- setup
    let mut mm = MemoryManager::new();
    let (pe, data_rva) = demo_pe()?;
    let image = vmsnap::image::map_image(&mut mm, &pe).context("mapping the demo's PE image")?;
    let sections: Vec<String> =
        image.sections.iter().map(|s| format!("{} {}", s.name, s.protection)).collect();
    say("address space".into());
    say(format!(
        "  image    demo.exe ({} bytes of PE written in memory) at {:#x}, {} mapped, entry {:#x}: {}",
        pe.len(),
        image.base,
        size(image.size),
        image.entry_point,
        sections.join(", ")
    ));

    let (mut heap, mut reserve) = (0u64, HEAP_RESERVE);
    check(
        nt::nt_allocate_virtual_memory(
            &mut mm,
            &mut heap,
            0,
            &mut reserve,
            nt::MEM_RESERVE,
            nt::PAGE_READWRITE,
        ),
        "NtAllocateVirtualMemory(heap)",
    )?;
    let (mut at, mut len) = (heap, args.heap_mib << 20);
    check(
        nt::nt_allocate_virtual_memory(&mut mm, &mut at, 0, &mut len, nt::MEM_COMMIT, nt::PAGE_READWRITE),
        "NtAllocateVirtualMemory(heap commit)",
    )?;
    say(format!(
        "  heap     {heap:#x}: {} reserved, {} committed (NtAllocateVirtualMemory)",
        size(reserve),
        size(len)
    ));

    let (mut stack, mut stack_len) = (0u64, STACK_RESERVE);
    check(
        nt::nt_allocate_virtual_memory(
            &mut mm,
            &mut stack,
            0,
            &mut stack_len,
            nt::MEM_RESERVE,
            nt::PAGE_READWRITE,
        ),
        "NtAllocateVirtualMemory(stack)",
    )?;
    let stack_top = stack + STACK_RESERVE;
    let (mut at, mut len) = (stack_top - STACK_COMMIT_PAGES * PAGE_SIZE, STACK_COMMIT_PAGES * PAGE_SIZE);
    check(
        nt::nt_allocate_virtual_memory(&mut mm, &mut at, 0, &mut len, nt::MEM_COMMIT, nt::PAGE_READWRITE),
        "stack commit",
    )?;
    let guard = stack_top - (STACK_COMMIT_PAGES + 1) * PAGE_SIZE;
    commit_guard_page(&mut mm, guard, "stack guard page")?;
    say(format!(
        "  stack    {stack:#x}..{stack_top:#x}: {} reserved, {} committed at the top, a guard page at {guard:#x}",
        size(STACK_RESERVE),
        size(STACK_COMMIT_PAGES * PAGE_SIZE)
    ));

    let tick = Arc::new(AtomicU64::new(0));
    let reader = tick.clone();
    mm.allocate_mmio(
        KUSER,
        PAGE_SIZE,
        move |offset, buf| {
            let page = kuser_page(reader.load(Ordering::Relaxed));
            let start = offset as usize;
            buf.copy_from_slice(&page[start..start + buf.len()]);
        },
        |_, _| {}, // read-only to the guest: writes are ignored
    )?;
    say(format!(
        "  kuser    {KUSER:#x}: a KUSER_SHARED_DATA-style MMIO page; TickCount at +{KUSER_TICK_COUNT:#x} computed on each read"
    ));

    let section = nt::nt_create_section(&mut mm, SECTION_SIZE, nt::PAGE_READWRITE, nt::SEC_COMMIT)
        .map_err(|s| anyhow::anyhow!("NtCreateSection: {s}"))?;
    let (mut view_a, mut size_a, mut view_b, mut size_b) = (0u64, 0u64, 0u64, 0u64);
    check(
        nt::nt_map_view_of_section(&mut mm, section, &mut view_a, 0, &mut size_a, nt::PAGE_READWRITE),
        "NtMapViewOfSection(A)",
    )?;
    check(
        nt::nt_map_view_of_section(&mut mm, section, &mut view_b, 0, &mut size_b, nt::PAGE_READONLY),
        "NtMapViewOfSection(B)",
    )?;
    mm.guest_write(view_a + 0x40, b"written through view A")?;
    let mut seen = [0u8; 22];
    mm.guest_read(view_b + 0x40, &mut seen)?;
    let denied = mm.guest_write(view_b + 0x40, b"x").is_err();
    say(format!(
        "  section  {} pagefile-backed, views at {view_a:#x} (rw) and {view_b:#x} (r): view B reads {:?}; a guest write through B is {}",
        size(SECTION_SIZE),
        String::from_utf8_lossy(&seen),
        if denied { "refused" } else { "allowed" }
    ));

    // The guard page fires once, as the first touch below the stack does.
    let first = mm.guest_write(guard + 8, &[0xCC; 8]);
    let second = mm.guest_write(guard + 8, &[0xCC; 8]);
    let outcome = |r: &Result<(), MemoryError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => nt::exception_code(e).map_or_else(|| e.to_string(), |s| s.name().unwrap_or("?").to_owned()),
    };
    let new_guard = guard - PAGE_SIZE;
    commit_guard_page(&mut mm, new_guard, "new guard page")?;
    say(format!(
        "  guard    first touch of {guard:#x}: {}; second: {}; the stack grew a page and a new guard page went in at {new_guard:#x}",
        outcome(&first),
        outcome(&second)
    ));
    if first.is_ok() || second.is_err() {
        bail!("the guard page did not fire exactly once");
    }

    let process = Process {
        image_base: image.base,
        data: image.base + u64::from(data_rva),
        heap,
        heap_pages: (args.heap_mib << 20) / PAGE_SIZE,
        stack_top,
        guard,
        view_a,
        view_b,
        tick,
    };

    // ------------------------------------------------------------------ run
    let mut timeline = Timeline::new();
    let mut rng = SEED;
    let mut arenas = Arenas::default();
    let mut ids: Vec<SnapshotId> = Vec::with_capacity(args.steps as usize);
    let mut snapshot_times: Vec<f64> = Vec::new();
    let run_started = Instant::now();
    {
        let mut bar = Bar::new("running", args.steps, false);
        for n in 0..args.steps {
            step(&mut mm, &process, &mut rng, n, &mut arenas)?;
            if n == args.steps / 3 {
                // VirtualProtect a heap page read-only: a layout change diffs show.
                let (mut at, mut len, mut old) = (heap + PAGE_SIZE, PAGE_SIZE, 0u32);
                check(
                    nt::nt_protect_virtual_memory(&mut mm, &mut at, &mut len, nt::PAGE_READONLY, &mut old),
                    "NtProtectVirtualMemory",
                )?;
            }
            let t = Instant::now();
            let id = timeline.take(&mut mm, Some(&format!("step-{n}")))?;
            snapshot_times.push(t.elapsed().as_secs_f64());
            ids.push(id);
            bar.set(n + 1, args.steps);
        }
    }
    let run_time = run_started.elapsed().as_secs_f64();
    let committed = mm.compute_memory_stats().committed_memory;
    say(String::new());
    say("run".into());
    say(format!(
        "  {} steps in {}, a snapshot after each (\"step-0\" .. \"step-{}\"): 4 heap objects, a stack frame, the tick read from KUSER, a message through view A and a .data global per step; arenas allocated: {}, released: {}; a heap page made read-only at step {}",
        args.steps,
        duration(run_time),
        args.steps - 1,
        arenas.allocated,
        arenas.released,
        args.steps / 3
    ));

    // Rewind to the middle and branch.
    let rewind_step = args.steps / 2;
    let rewind_to = ids[rewind_step as usize];
    let t = Instant::now();
    timeline.restore(&mut mm, rewind_to)?;
    let restore_time = t.elapsed().as_secs_f64();
    let mut tick_seen = [0u8; 8];
    mm.read_memory(heap, &mut tick_seen)?;
    let (mut a_bytes, mut b_bytes) = ([0u8; 8], [0u8; 8]);
    mm.read_memory(view_a, &mut a_bytes)?;
    mm.read_memory(view_b, &mut b_bytes)?;
    if u64::from_le_bytes(tick_seen) != rewind_step + 1
        || a_bytes != b_bytes
        || u64::from_le_bytes(a_bytes) != rewind_step
    {
        bail!("the rewound state is not the state of step {rewind_step}");
    }
    say(format!(
        "  rewound to step-{rewind_step} in {}: the heap's last tick reads {} again and both section views read step {}",
        duration(restore_time),
        u64::from_le_bytes(tick_seen),
        u64::from_le_bytes(b_bytes)
    ));
    let branch_steps = (args.steps / 10).max(3);
    let mut branch_rng = SEED ^ 0xB4A2_C4E5;
    let mut branch_arenas = Arenas { live: arenas.live.clone(), ..Arenas::default() };
    let mut branch_tip = rewind_to;
    for k in 1..=branch_steps {
        step(&mut mm, &process, &mut branch_rng, rewind_step + k, &mut branch_arenas)?;
        if k == 1 {
            mm.write_memory(heap + 0x40, b"a different future")?;
        }
        let t = Instant::now();
        branch_tip = timeline.take(&mut mm, Some(&format!("branch-{k}")))?;
        snapshot_times.push(t.elapsed().as_secs_f64());
    }
    let snapshots = timeline.len();
    say(format!(
        "  branched from step-{rewind_step}: {branch_steps} more steps, \"branch-1\" .. \"branch-{branch_steps}\" ({} snapshots in the timeline)",
        snapshots
    ));

    // Diff two execution points: the tips of the two branches, and two consecutive steps.
    let main_tip = *ids.last().expect("steps ≥ 4");
    let (main_snap, branch_snap) =
        (timeline.get(main_tip).expect("taken"), timeline.get(branch_tip).expect("taken"));
    let t = Instant::now();
    let far = main_snap.diff(branch_snap);
    let far_time = t.elapsed().as_secs_f64();
    let (next_a, next_b) = (
        timeline.get(ids[rewind_step as usize]).expect("taken"),
        timeline.get(ids[rewind_step as usize + 1]).expect("taken"),
    );
    let t = Instant::now();
    let next = next_a.diff(next_b);
    let next_time = t.elapsed().as_secs_f64();
    let far_pages = far.changed_pages().len();
    let example = far
        .page_changes()
        .into_iter()
        .find(|c| c.address() == heap)
        .map(|c| {
            format!(
                "; e.g. the heap's first page at {:#x} differs in bytes {:?}",
                c.address(),
                c.byte_ranges()
            )
        })
        .unwrap_or_default();
    say(format!(
        "  diff step-{} → branch-{branch_steps}: {} region changes, {} pages changed, in {}{example}",
        args.steps - 1,
        far.region_changes().len(),
        far_pages,
        duration(far_time)
    ));
    say(format!(
        "  diff step-{rewind_step} → step-{}: {} pages changed, in {} (read from the snapshot's change log)",
        rewind_step + 1,
        next.changed_pages().len(),
        duration(next_time)
    ));

    // ---------------------------------------------------------------- files
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let t = Instant::now();
    vmsnap::file::save_timeline(&timeline, &out).with_context(|| out.display().to_string())?;
    let save_time = t.elapsed().as_secs_f64();
    let rewind_snapshot: Snapshot = timeline.get(rewind_to).expect("taken").clone();
    vmsnap::file::save(&rewind_snapshot, &base_path).with_context(|| base_path.display().to_string())?;
    vmsnap::file::save_incremental(branch_snap, &base_path, &branch_path)
        .with_context(|| branch_path.display().to_string())?;
    let info = vmsnap::file::inspect(&out).with_context(|| out.display().to_string())?;
    let (timeline_bytes, base_bytes, incremental_bytes) =
        (file_len(&out)?, file_len(&base_path)?, file_len(&branch_path)?);
    let full_copy_bytes = snapshots as u64 * committed;

    let t = Instant::now();
    let loaded = vmsnap::file::load_timeline(&out).with_context(|| out.display().to_string())?;
    let load_time = t.elapsed().as_secs_f64();
    let t = Instant::now();
    vmsnap::file::verify(&out).with_context(|| out.display().to_string())?;
    vmsnap::file::verify(&branch_path).with_context(|| branch_path.display().to_string())?;
    let verify_time = t.elapsed().as_secs_f64();
    let reloaded_tip = loaded
        .find(&format!("branch-{branch_steps}"))
        .and_then(|id| loaded.get(id))
        .context("the reopened timeline has no branch tip")?;
    let incremental = vmsnap::file::load(&branch_path).with_context(|| branch_path.display().to_string())?;
    let is_kuser = |c: &RegionChange| match *c {
        RegionChange::Allocated(r) | RegionChange::Released(r) => r.base == KUSER,
        RegionChange::Committed { address, .. }
        | RegionChange::Decommitted { address, .. }
        | RegionChange::ProtectionChanged { address, .. } => address == KUSER,
    };
    // The same file opened lazily: the index now, a frame on first touch.
    let t = Instant::now();
    let lazy = vmsnap::file::open_lazy(&out).with_context(|| out.display().to_string())?;
    let lazy_timeline = lazy.timeline();
    let lazy_open_time = t.elapsed().as_secs_f64();
    let lazy_tip = lazy_timeline
        .find(&format!("branch-{branch_steps}"))
        .and_then(|id| lazy_timeline.get(id))
        .context("the lazily opened timeline has no branch tip")?;
    let mut runner = MemoryManager::new();
    runner.restore(lazy_tip);
    let (mut from_file, mut from_session) = ([0u8; 64], [0u8; 64]);
    runner.read_memory(heap, &mut from_file)?;
    branch_snap.read_memory(heap, &mut from_session)?;
    if from_file != from_session {
        bail!("a manager running from the lazily opened timeline reads other bytes than the session");
    }
    let (lazy_frames_read, lazy_frames) = (lazy.frames_read(), lazy.frames());
    for (what, copy) in [("timeline", reloaded_tip), ("incremental file", &incremental)] {
        let d = branch_snap.diff(copy);
        if d.changed_pages().any(|p| p != KUSER) || !d.region_changes().iter().all(is_kuser) {
            bail!("the reopened {what} differs from the session");
        }
    }
    say(String::new());
    say("files".into());
    say(format!(
        "  timeline   {}: {} snapshots, {} ({:.0}x smaller than {} full copies of {} each); dedup {:.1}x, compression {:.2}x, saved in {}",
        out.display(),
        snapshots,
        size(timeline_bytes),
        full_copy_bytes as f64 / timeline_bytes as f64,
        snapshots,
        size(committed),
        info.dedup_ratio(),
        info.compression_ratio(),
        duration(save_time)
    ));
    say(format!("  base       {}: step-{rewind_step} alone, {}", base_path.display(), size(base_bytes)));
    say(format!(
        "  increment  {}: branch-{branch_steps} against the base, {} (XOR pages and inherited ones)",
        branch_path.display(),
        size(incremental_bytes)
    ));
    say(format!(
        "  reopened in {} and verified in {} (every checksum and page hash, the incremental file's parent too): branch-{branch_steps} reads back identical (the KUSER page is saved as layout only: its handler cannot be)",
        duration(load_time),
        duration(verify_time)
    ));
    say(format!(
        "  lazily     opened in {} (header and index only); a manager restored to branch-{branch_steps} from it read the heap after reading {lazy_frames_read} of {lazy_frames} frames",
        duration(lazy_open_time)
    ));

    // -------------------------------------------------------------- timings
    let flat_a = vec![0x5Au8; committed as usize];
    let mut flat_b = vec![0x5Au8; committed as usize];
    let copy = best(5, || {
        flat_b.copy_from_slice(black_box(&flat_a));
        black_box(&flat_b);
    });
    let compare = best(5, || {
        black_box(black_box(&flat_a) == black_box(&flat_b));
    });
    snapshot_times.sort_by(f64::total_cmp);
    let snapshot_median = snapshot_times[snapshot_times.len() / 2];
    let snapshot_mean = snapshot_times.iter().sum::<f64>() / snapshots as f64;
    let timings = vec![
        Timing {
            operation: "snapshot (median)",
            vmsnap_seconds: snapshot_median,
            full_copy_seconds: copy,
            ratio: snapshot_median / copy,
        },
        Timing {
            operation: "rewind (restore)",
            vmsnap_seconds: restore_time,
            full_copy_seconds: copy,
            ratio: restore_time / copy,
        },
        Timing {
            operation: "diff, branch tips",
            vmsnap_seconds: far_time,
            full_copy_seconds: compare,
            ratio: far_time / compare,
        },
        Timing {
            operation: "diff, next step",
            vmsnap_seconds: next_time,
            full_copy_seconds: compare,
            ratio: next_time / compare,
        },
    ];
    say(String::new());
    say(format!(
        "timings against the full-copy baseline (memcpy / memcmp of the {} committed, best of 5)",
        size(committed)
    ));
    say(format!("  {:<20} {:>10} {:>11} {:>11}", "operation", "vmsnap", "full copy", "ratio"));
    for t in &timings {
        say(format!(
            "  {:<20} {:>10} {:>11} {:>10.5}x",
            t.operation,
            duration(t.vmsnap_seconds),
            duration(t.full_copy_seconds),
            t.ratio
        ));
    }
    say(format!(
        "  {:<20} {:>10} {:>11} {:>10.5}x",
        "file size",
        size(timeline_bytes),
        size(full_copy_bytes),
        timeline_bytes as f64 / full_copy_bytes as f64
    ));
    if cfg!(debug_assertions) {
        say("  (a debug build: cargo run --release -p vmsnap-cli -- demo for real figures)".into());
    }

    let regions = crate::format::regions(&mm).len();
    if json {
        let report = Report {
            steps: args.steps,
            branch_steps,
            snapshots,
            regions,
            committed_bytes: committed,
            image_base: process.image_base,
            heap,
            stack_top,
            guard_page: process.guard,
            kuser: KUSER,
            view_a: process.view_a,
            view_b: process.view_b,
            rewound_to: format!("step-{rewind_step}"),
            branch_tip: format!("branch-{branch_steps}"),
            main_tip: format!("step-{}", args.steps - 1),
            diff_far_region_changes: far.region_changes().len(),
            diff_far_pages: far_pages,
            diff_next_pages: next.changed_pages().len(),
            timeline_file: out.display().to_string(),
            timeline_bytes,
            full_copy_bytes,
            base_file: base_path.display().to_string(),
            base_bytes,
            incremental_file: branch_path.display().to_string(),
            incremental_bytes,
            dedup_ratio: info.dedup_ratio(),
            compression_ratio: info.compression_ratio(),
            verified: true,
            lazy_open_seconds: lazy_open_time,
            lazy_frames_read,
            lazy_frames,
            snapshot_mean_seconds: snapshot_mean,
            timings,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let f = out.display();
    outln!(
        "\nnext, on the saved files (from the repository: cargo run --release -p vmsnap-cli -- <command>):"
    );
    outln!("  vmsnap info {f}");
    outln!("  vmsnap regions {f} --snapshot step-{rewind_step}");
    outln!("  vmsnap dump {f} {:#x} 64 --snapshot branch-{branch_steps}", process.view_a);
    outln!("  vmsnap diff {f} --from step-{} --to branch-{branch_steps}", args.steps - 1);
    outln!("  vmsnap diff {} {}", base_path.display(), branch_path.display());
    outln!("  vmsnap verify {}", branch_path.display());
    outln!("  vmsnap stats {f}");
    outln!("  vmsnap rebase {} merged.vmsnap", branch_path.display());
    outln!("  vmsnap map {f} --svg map.svg      (then open map.svg in a browser)");
    Ok(())
}
