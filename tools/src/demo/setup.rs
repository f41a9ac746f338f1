//! The demo's first phase: the address space of a process-like session —
//! an image mapped from the demo's PE file, a heap, a stack with a guard
//! page (fired once), a KUSER_SHARED_DATA-style MMIO page and a section
//! with two views.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use vmsnap::nt;
use vmsnap::{MemoryError, MemoryManager, MmioHandlers, PAGE_SIZE};

use super::{
    HEAP_RESERVE, KUSER, KUSER_TICK_COUNT, Process, SECTION_SIZE, STACK_COMMIT_PAGES, STACK_RESERVE, Session,
    allocate, check, pe,
};
use crate::format::size;

/// What the setup built (addresses, sizes) and what its checks saw.
#[derive(Default, Serialize)]
pub struct Setup {
    /// Bytes of the PE file written in memory.
    pub image_file_bytes: usize,
    pub image_base: u64,
    /// Bytes mapped for the image.
    pub image_bytes: u64,
    pub entry_point: u64,
    /// Each section's name and protection letters (`.text r-x`).
    pub image_sections: Vec<String>,
    pub heap: u64,
    pub heap_reserved_bytes: u64,
    pub heap_committed_bytes: u64,
    pub stack_base: u64,
    pub stack_top: u64,
    pub stack_reserved_bytes: u64,
    pub stack_committed_bytes: u64,
    /// The stack's guard page.
    pub guard_page: u64,
    /// The KUSER_SHARED_DATA-style MMIO page.
    pub kuser: u64,
    /// Where the page's tick count is, from its start.
    pub kuser_tick_count_offset: u64,
    pub section_bytes: u64,
    /// The read-write view of the section.
    pub view_a: u64,
    /// The read-only view.
    pub view_b: u64,
    /// What view B reads where view A was written.
    pub view_b_reads: String,
    /// True when a guest write through view B was refused.
    pub view_b_write_refused: bool,
    /// The first guest write to the guard page: its exception, or `ok`.
    pub guard_first_touch: String,
    /// The second one.
    pub guard_second_touch: String,
    /// The guard page committed below the first once it fired.
    pub new_guard_page: u64,
}

/// Builds the session's address space with `heap_mib` MiB of heap committed.
pub fn run(heap_mib: u64) -> Result<(Session, Setup)> {
    let mut mm = MemoryManager::new();
    let mut report = Setup::default();
    let data = image(&mut mm, &mut report)?;
    heap(&mut mm, heap_mib << 20, &mut report)?;
    stack(&mut mm, &mut report)?;
    let tick = kuser(&mut mm, &mut report)?;
    section(&mut mm, &mut report)?;
    guard(&mut mm, &mut report)?;
    let process = Process {
        data,
        heap: report.heap,
        heap_pages: (heap_mib << 20) / PAGE_SIZE,
        stack_top: report.stack_top,
        view_a: report.view_a,
        view_b: report.view_b,
        tick,
    };
    Ok((Session::new(mm, process), report))
}

/// Maps the demo's PE image; the address of its `.data` section.
fn image(mm: &mut MemoryManager, report: &mut Setup) -> Result<u64> {
    let (pe, data_rva) = pe::demo_pe()?;
    let image = vmsnap::image::map_image(mm, &pe).context("mapping the demo's PE image")?;
    report.image_file_bytes = pe.len();
    report.image_base = image.base;
    report.image_bytes = image.size;
    report.entry_point = image.entry_point;
    report.image_sections = image.sections.iter().map(|s| format!("{} {}", s.name, s.protection)).collect();
    Ok(image.base + u64::from(data_rva))
}

/// Reserves the heap and commits `commit` bytes of it.
fn heap(mm: &mut MemoryManager, commit: u64, report: &mut Setup) -> Result<()> {
    let (heap, reserved) = allocate(mm, 0, HEAP_RESERVE, nt::MEM_RESERVE, nt::PAGE_READWRITE, "heap")?;
    let (_, committed) = allocate(mm, heap, commit, nt::MEM_COMMIT, nt::PAGE_READWRITE, "heap commit")?;
    (report.heap, report.heap_reserved_bytes, report.heap_committed_bytes) = (heap, reserved, committed);
    Ok(())
}

/// Reserves the stack, commits its top and a guard page below it.
fn stack(mm: &mut MemoryManager, report: &mut Setup) -> Result<()> {
    let (base, _) = allocate(mm, 0, STACK_RESERVE, nt::MEM_RESERVE, nt::PAGE_READWRITE, "stack")?;
    let top = base + STACK_RESERVE;
    let commit = STACK_COMMIT_PAGES * PAGE_SIZE;
    allocate(mm, top - commit, commit, nt::MEM_COMMIT, nt::PAGE_READWRITE, "stack commit")?;
    let guard = top - commit - PAGE_SIZE;
    commit_guard_page(mm, guard, "stack guard page")?;
    report.stack_base = base;
    report.stack_top = top;
    report.stack_reserved_bytes = STACK_RESERVE;
    report.stack_committed_bytes = commit;
    report.guard_page = guard;
    Ok(())
}

/// Commits the stack page at `page` as a guard page, as a thread's stack
/// keeps one below its committed part (`NtAllocateVirtualMemory`).
fn commit_guard_page(mm: &mut MemoryManager, page: u64, what: &str) -> Result<()> {
    allocate(mm, page, PAGE_SIZE, nt::MEM_COMMIT, nt::PAGE_READWRITE | nt::PAGE_GUARD, what).map(|_| ())
}

/// The KUSER_SHARED_DATA page, its tick count computed on each read from
/// the counter returned.
fn kuser(mm: &mut MemoryManager, report: &mut Setup) -> Result<Arc<AtomicU64>> {
    let tick = Arc::new(AtomicU64::new(0));
    mm.allocate_mmio(KUSER, PAGE_SIZE, kuser_read(tick.clone()), |_, _| {})?;
    (report.kuser, report.kuser_tick_count_offset) = (KUSER, KUSER_TICK_COUNT);
    Ok(tick)
}

/// The KUSER page's handlers over the counter `tick`: read-only to the
/// guest (writes are ignored). A file keeps the region, not its handlers:
/// reopening a file binds these again.
pub(super) fn kuser_handlers(tick: Arc<AtomicU64>) -> MmioHandlers {
    MmioHandlers::new(kuser_read(tick), |_, _| {})
}

/// The KUSER page's read handler: the page computed for the tick now.
fn kuser_read(tick: Arc<AtomicU64>) -> impl Fn(u64, &mut [u8]) + Send + Sync + 'static {
    move |offset, buf| {
        let page = kuser_page(tick.load(Ordering::Relaxed));
        let start = offset as usize;
        buf.copy_from_slice(&page[start..start + buf.len()]);
    }
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

/// A pagefile-backed section mapped twice: written through view A, read
/// through view B, and a write through B (read-only) tried.
fn section(mm: &mut MemoryManager, report: &mut Setup) -> Result<()> {
    let section = nt::nt_create_section(mm, SECTION_SIZE, nt::PAGE_READWRITE, nt::SEC_COMMIT)
        .map_err(|s| anyhow::anyhow!("NtCreateSection: {s}"))?;
    let (mut view_a, mut size_a, mut view_b, mut size_b) = (0u64, 0u64, 0u64, 0u64);
    check(
        nt::nt_map_view_of_section(mm, section, &mut view_a, 0, &mut size_a, nt::PAGE_READWRITE),
        "NtMapViewOfSection(A)",
    )?;
    check(
        nt::nt_map_view_of_section(mm, section, &mut view_b, 0, &mut size_b, nt::PAGE_READONLY),
        "NtMapViewOfSection(B)",
    )?;
    mm.guest_write(view_a + 0x40, b"written through view A")?;
    let mut seen = [0u8; 22];
    mm.guest_read(view_b + 0x40, &mut seen)?;
    report.view_b_write_refused = mm.guest_write(view_b + 0x40, b"x").is_err();
    report.view_b_reads = String::from_utf8_lossy(&seen).into_owned();
    (report.section_bytes, report.view_a, report.view_b) = (SECTION_SIZE, view_a, view_b);
    Ok(())
}

/// Touches the guard page twice: it fires once, as the first touch below
/// the stack does; then a new guard page goes in below it.
fn guard(mm: &mut MemoryManager, report: &mut Setup) -> Result<()> {
    let guard = report.guard_page;
    let first = mm.guest_write(guard + 8, &[0xCC; 8]);
    let second = mm.guest_write(guard + 8, &[0xCC; 8]);
    report.new_guard_page = guard - PAGE_SIZE;
    commit_guard_page(mm, report.new_guard_page, "new guard page")?;
    (report.guard_first_touch, report.guard_second_touch) = (outcome(&first), outcome(&second));
    if first.is_ok() || second.is_err() {
        bail!("the guard page did not fire exactly once");
    }
    Ok(())
}

/// `ok`, or the exception a guest access raised (`STATUS_GUARD_PAGE_VIOLATION`).
fn outcome(r: &Result<(), MemoryError>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => nt::exception_code(e).map_or_else(|| e.to_string(), |s| s.name().unwrap_or("?").to_owned()),
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "address space")?;
        writeln!(
            f,
            "  image    demo.exe ({} bytes of PE written in memory) at {:#x}, {} mapped, entry {:#x}: {}",
            self.image_file_bytes,
            self.image_base,
            size(self.image_bytes),
            self.entry_point,
            self.image_sections.join(", ")
        )?;
        writeln!(
            f,
            "  heap     {:#x}: {} reserved, {} committed (NtAllocateVirtualMemory)",
            self.heap,
            size(self.heap_reserved_bytes),
            size(self.heap_committed_bytes)
        )?;
        writeln!(
            f,
            "  stack    {:#x}..{:#x}: {} reserved, {} committed at the top, a guard page at {:#x}",
            self.stack_base,
            self.stack_top,
            size(self.stack_reserved_bytes),
            size(self.stack_committed_bytes),
            self.guard_page
        )?;
        writeln!(
            f,
            "  kuser    {:#x}: a KUSER_SHARED_DATA-style MMIO page; TickCount at +{:#x} computed on each read",
            self.kuser, self.kuser_tick_count_offset
        )?;
        self.fmt_section_and_guard(f)
    }
}

impl Setup {
    fn fmt_section_and_guard(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  section  {} pagefile-backed, views at {:#x} (rw) and {:#x} (r): view B reads {:?}; a guest write through B is {}",
            size(self.section_bytes),
            self.view_a,
            self.view_b,
            self.view_b_reads,
            if self.view_b_write_refused { "refused" } else { "allowed" }
        )?;
        writeln!(
            f,
            "  guard    first touch of {:#x}: {}; second: {}; the stack grew a page and a new guard page went in at {:#x}",
            self.guard_page, self.guard_first_touch, self.guard_second_touch, self.new_guard_page
        )
    }
}
