//! `vmsnap demo`, the main job: a process-like address space — an image
//! mapped from a PE file written in memory, a heap, a stack with a guard
//! page, a KUSER_SHARED_DATA-style MMIO page, a section with two views — runs
//! a deterministic workload with a snapshot per step, rewinds and branches,
//! diffs two execution points, saves the timeline, reopens and verifies it,
//! and reports sizes and timings as ratios to the full-copy baseline.
//!
//! One module per phase, run in this order on one [`Session`], each
//! returning its part of the report (`Serialize + Display`):
//! [`setup`], [`workload`], [`branch`] (rewind and branch), [`diffs`],
//! [`files`], [`timings`]. [`Demo`] holds the parts: its JSON is theirs
//! side by side in one object, its text theirs in order, then the commands
//! to try next. [`pe`] writes the demo's executable. The only output while
//! it runs is the workload's progress bar, on standard error.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use vmsnap::nt::{self, NtStatus};
use vmsnap::{MemoryManager, Snapshot, SnapshotId, Timeline};

pub mod branch;
pub mod diffs;
pub mod files;
pub mod pe;
pub mod setup;
pub mod timings;
pub mod workload;

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

/// The whole report of `vmsnap demo`: each phase's part, in order.
#[derive(Serialize)]
pub struct Demo {
    /// `debug` or `release`: what the timings are worth.
    pub build: &'static str,
    #[serde(flatten)]
    pub setup: setup::Setup,
    #[serde(flatten)]
    pub workload: workload::Workload,
    #[serde(flatten)]
    pub branch: branch::Branch,
    #[serde(flatten)]
    pub diffs: diffs::Diffs,
    #[serde(flatten)]
    pub files: files::Files,
    #[serde(flatten)]
    pub timings: timings::Timings,
    /// Regions of the manager at the end, free ones included.
    pub regions: usize,
}

/// The addresses of the process's parts the workload uses.
struct Process {
    /// The image's `.data` section.
    data: u64,
    heap: u64,
    /// Pages of the heap committed.
    heap_pages: u64,
    stack_top: u64,
    view_a: u64,
    view_b: u64,
    /// The tick count the KUSER page reads.
    tick: Arc<AtomicU64>,
}

/// The arenas the workload allocates (every 25 steps) and releases.
#[derive(Default)]
struct Arenas {
    /// Bases of the arenas allocated and not released, oldest first.
    live: VecDeque<u64>,
    allocated: u64,
    released: u64,
}

/// The running session the phases share: the manager, the process, the
/// timeline, and what later phases need of earlier ones.
pub struct Session {
    mm: MemoryManager,
    process: Process,
    timeline: Timeline,
    /// The snapshot after each workload step (`step-N`), in order.
    steps: Vec<SnapshotId>,
    /// The snapshot after each branch step (`branch-N`), in order.
    branch: Vec<SnapshotId>,
    /// Seconds each snapshot took, workload and branch.
    snapshot_seconds: Vec<f64>,
    /// The arenas live at the end of the workload.
    arenas: Arenas,
}

impl Session {
    fn new(mm: MemoryManager, process: Process) -> Session {
        let (steps, branch, snapshot_seconds) = (Vec::new(), Vec::new(), Vec::new());
        Session {
            mm,
            process,
            timeline: Timeline::new(),
            steps,
            branch,
            snapshot_seconds,
            arenas: Arenas::default(),
        }
    }

    /// The workload step the session rewinds to: the middle one.
    fn rewind_step(&self) -> u64 {
        self.steps.len() as u64 / 2
    }

    /// The snapshot of `step-N`.
    fn step(&self, n: u64) -> &Snapshot {
        self.get(self.steps[n as usize])
    }

    /// The last snapshot of the workload (`step-N`, N = steps - 1).
    fn main_tip(&self) -> &Snapshot {
        self.step(self.steps.len() as u64 - 1)
    }

    /// The last snapshot of the branch (the rewind point before it runs).
    fn branch_tip(&self) -> &Snapshot {
        self.branch.last().map_or_else(|| self.step(self.rewind_step()), |&id| self.get(id))
    }

    /// The name of the branch's last snapshot (`branch-N`).
    fn branch_tip_name(&self) -> String {
        format!("branch-{}", self.branch.len())
    }

    fn get(&self, id: SnapshotId) -> &Snapshot {
        // Invariant: the session only keeps ids its timeline took.
        self.timeline.get(id).expect("taken")
    }
}

/// Where the demo saves its files.
pub struct Paths {
    /// The timeline.
    out: PathBuf,
    /// The rewind point alone (`NAME-base.vmsnap`).
    base: PathBuf,
    /// The branch tip, incremental against the base (`NAME-branch.vmsnap`).
    branch: PathBuf,
}

impl Paths {
    fn new(out: Option<&Path>) -> Paths {
        let out = out.map_or_else(|| std::env::temp_dir().join("vmsnap-demo.vmsnap"), Path::to_owned);
        Paths { base: sibling(&out, "base"), branch: sibling(&out, "branch"), out }
    }
}

/// `DIR/NAME-suffix.EXT` for `DIR/NAME.EXT`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem =
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "vmsnap-demo".into());
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "vmsnap".into());
    path.with_file_name(format!("{stem}-{suffix}.{ext}"))
}

/// `vmsnap demo`: the phases in order.
pub fn run(args: &DemoArgs) -> Result<Demo> {
    if args.steps < 4 || args.steps > 1_000_000 {
        bail!("--steps must be between 4 and 1000000");
    }
    if args.heap_mib == 0 || args.heap_mib > HEAP_RESERVE >> 20 {
        bail!("--heap-mib must be between 1 and {}", HEAP_RESERVE >> 20);
    }
    let paths = Paths::new(args.out.as_deref());
    let (mut session, setup) = setup::run(args.heap_mib)?;
    let workload = workload::run(&mut session, args.steps)?;
    let branch = branch::run(&mut session)?;
    let diffs = diffs::run(&session);
    let files = files::run(&session, &paths, workload.committed_bytes)?;
    let timings = timings::run(&session, &workload, &branch, &diffs, &files);
    let regions = crate::format::regions(&session.mm).len();
    Ok(Demo { build: crate::build(), setup, workload, branch, diffs, files, timings, regions })
}

fn check(status: NtStatus, what: &str) -> Result<()> {
    if !status.is_success() {
        bail!("{what}: {status}");
    }
    Ok(())
}

/// `NtAllocateVirtualMemory` of `length` bytes at `base` (0: anywhere):
/// the base and length it answers.
fn allocate(
    mm: &mut MemoryManager,
    base: u64,
    length: u64,
    allocation_type: u32,
    protect: u32,
    what: &str,
) -> Result<(u64, u64)> {
    let (mut at, mut len) = (base, length);
    let status = nt::nt_allocate_virtual_memory(mm, &mut at, 0, &mut len, allocation_type, protect);
    check(status, &format!("NtAllocateVirtualMemory({what})"))?;
    Ok((at, len))
}

impl fmt::Display for Demo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vmsnap demo: a rewindable Windows-like process, {} steps ({} build)\n",
            self.workload.steps, self.build
        )?;
        writeln!(f, "{}", self.setup)?;
        writeln!(f, "{}{}{}", self.workload, self.branch, self.diffs)?;
        writeln!(f, "{}", self.files)?;
        write!(f, "{}", self.timings)?;
        if self.build == "debug" {
            writeln!(f, "  (a debug build: cargo run --release -p vmsnap-cli -- demo for real figures)")?;
        }
        self.fmt_next(f)
    }
}

impl Demo {
    /// The commands to try next, on the files the demo saved.
    fn fmt_next(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, base, branch) =
            (&self.files.timeline_file, &self.files.base_file, &self.files.incremental_file);
        let (rewound, tip) = (&self.branch.rewound_to, &self.branch.branch_tip);
        writeln!(
            f,
            "\nnext, on the saved files (from the repository: cargo run --release -p vmsnap-cli -- <command>):"
        )?;
        writeln!(f, "  vmsnap info {file}")?;
        writeln!(f, "  vmsnap regions {file} --snapshot {rewound}")?;
        writeln!(f, "  vmsnap dump {file} {:#x} 64 --snapshot {tip}", self.setup.view_a)?;
        writeln!(f, "  vmsnap diff {file} --from {} --to {tip}", self.workload.main_tip)?;
        writeln!(f, "  vmsnap diff {base} {branch}")?;
        writeln!(f, "  vmsnap verify {branch}")?;
        writeln!(f, "  vmsnap stats {file}")?;
        writeln!(f, "  vmsnap rebase {branch} merged.vmsnap")?;
        writeln!(f, "  vmsnap map {file} --svg map.svg      (then open map.svg in a browser)")
    }
}
