//! [`Session`]: a Unicorn x86-64 CPU running on a vmsnap address space.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashSet;
use unicorn_engine::{Arch, HookType, MemType, Mode, Prot, RegisterX86, Unicorn};
use vmsnap::image::{MappedImage, map_image};
use vmsnap::{
    Access, MemoryDiff, MemoryError, MemoryManager, Protection, RegionKind, ReservedRegion, Snapshot,
};

use crate::arena::{Arena, Run};
use crate::error::SessionError;
use crate::registers::{RegisterChange, Registers};
use crate::{PAGE, PAGE_SHIFT};

/// What the CPU's hooks record: the dirty-page log the write hook fills and
/// the fault the invalid-access hook saw. Opaque; the session reads it after
/// `emu_start` returns (hooks never change mappings).
#[derive(Debug)]
pub struct CpuData {
    dirty: DirtyLog,
    fault: Option<Fault>,
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    kind: MemType,
    address: u64,
    size: usize,
}

/// Pages written since the last fold: a list (in first-write order) plus a
/// set, with a one-entry cache so a run of stores to one page costs a compare.
#[derive(Debug)]
struct DirtyLog {
    last: u64,
    pages: Vec<u64>,
    set: FxHashSet<u64>,
}

impl DirtyLog {
    fn new() -> DirtyLog {
        DirtyLog { last: u64::MAX, pages: Vec::new(), set: FxHashSet::default() }
    }

    /// Marks the pages touched by `[address, address + size)`. Time: O(1)
    /// per page (a compare when the page is the last one marked).
    #[inline]
    fn mark(&mut self, address: u64, size: usize) {
        let first = address >> PAGE_SHIFT;
        let last = address.saturating_add(size.max(1) as u64 - 1) >> PAGE_SHIFT;
        for page in first..=last {
            if page != self.last {
                self.last = page;
                if self.set.insert(page) {
                    self.pages.push(page);
                }
            }
        }
    }

    /// Forgets every page. Time: O(pages marked).
    fn clear(&mut self) {
        if self.pages.len() * 8 < self.set.capacity() {
            for page in &self.pages {
                self.set.remove(page);
            }
        } else {
            self.set.clear();
        }
        self.pages.clear();
        self.last = u64::MAX;
    }
}

/// How [`Session::run`] stopped without a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `rip` reached the `until` address (not executed).
    Until,
    /// The instruction budget (`count`) was used up; `rip` is the next
    /// instruction.
    InstructionLimit {
        /// The next instruction.
        rip: u64,
    },
    /// The CPU stopped for another reason (e.g. `hlt`).
    Stopped {
        /// Where it stopped.
        rip: u64,
    },
}

/// A session version: a vmsnap [`Snapshot`] of the memory plus the CPU
/// [`Registers`]. `Clone` is O(1) for the memory part. Restore it with
/// [`Session::restore`] (any version, any branch).
#[derive(Clone, Debug)]
pub struct SessionSnapshot {
    memory: Snapshot,
    registers: Registers,
    /// Equal ids (from the same session) mean identical layouts.
    layout_id: u64,
    origin: u64,
}

impl SessionSnapshot {
    /// The memory of this version.
    pub fn memory(&self) -> &Snapshot {
        &self.memory
    }

    /// The CPU registers of this version.
    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    /// What changed from `self` (old) to `other` (new): memory (regions,
    /// pages, byte ranges) and registers. Time: as [`Snapshot::diff`].
    pub fn diff(&self, other: &SessionSnapshot) -> SessionDiff {
        SessionDiff {
            memory: self.memory.diff(&other.memory),
            registers: self.registers.changes(&other.registers),
        }
    }
}

/// The difference between two [`SessionSnapshot`]s.
#[derive(Debug)]
pub struct SessionDiff {
    /// Memory changes.
    pub memory: MemoryDiff,
    /// Register changes.
    pub registers: Vec<RegisterChange>,
}

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// A Unicorn x86-64 CPU on a vmsnap [`MemoryManager`]: vmsnap owns the
/// layout and the versions, the session owns the live bytes. See the
/// [crate docs](crate) for the design.
pub struct Session {
    // Field order matters: the engine drops before the arenas it points into.
    uc: Unicorn<'static, CpuData>,
    arenas: BTreeMap<u64, Arena>,
    mm: MemoryManager,
    layout_id: u64,
    origin: u64,
    scratch: Vec<(u64, bool)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("memory", &self.mm)
            .field("arenas", &self.arenas.len())
            .field("dirty_pages", &self.uc.get_data().dirty.pages.len())
            .finish()
    }
}

/// The Unicorn permissions of a committed page with vmsnap protection `p`,
/// `None` when the CPU must fault on every access (no access, or a guard page:
/// the fault handler fires it through vmsnap). Write-copy pages map read-only:
/// the first write faults and vmsnap turns the page writable.
fn unicorn_prot(p: Protection) -> Option<u32> {
    if p.contains(Protection::GUARD) {
        return None;
    }
    let mut u = 0;
    if p.contains(Protection::READ) {
        u |= Prot::READ.0;
    }
    if p.contains(Protection::WRITE) {
        u |= Prot::READ.0 | Prot::WRITE.0;
    }
    if p.contains(Protection::EXECUTE) {
        u |= Prot::EXEC.0;
    }
    (u != 0).then_some(u)
}

fn executable(p: Option<Protection>) -> bool {
    p.is_some_and(|p| p.contains(Protection::EXECUTE))
}

fn supported(kind: RegionKind) -> bool {
    matches!(kind, RegionKind::Private | RegionKind::Image)
}

/// The runs of `[base, base + len)` the CPU may touch, merged by permission.
/// Time: O(regions in the allocation).
fn desired_runs(mm: &MemoryManager, base: u64, len: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let end = base + len;
    let mut at = base;
    while at < end {
        let info = mm.region_info(at);
        let n = info.length.clamp(PAGE, end - at);
        if info.is_committed
            && let Some(prot) = unicorn_prot(info.permissions)
        {
            match runs.last_mut() {
                Some(last) if last.prot == prot && last.offset + last.len == at - base => last.len += n,
                _ => runs.push(Run { offset: at - base, len: n, prot }),
            }
        }
        at += n;
    }
    runs
}

fn arena_mut(arenas: &mut BTreeMap<u64, Arena>, address: u64) -> Option<&mut Arena> {
    arenas.range_mut(..=address).next_back().map(|(_, a)| a).filter(|a| a.contains(address))
}

fn arena(arenas: &BTreeMap<u64, Arena>, address: u64) -> Option<&Arena> {
    arenas.range(..=address).next_back().map(|(_, a)| a).filter(|a| a.contains(address))
}

impl Session {
    /// A session over `mm`: a fresh x86-64 CPU (registers zero), one host
    /// arena per allocation filled with its committed bytes, and every run of
    /// accessible pages registered with the CPU. Allocations the CPU cannot
    /// mirror (MMIO, section views) give [`SessionError::Unsupported`].
    /// Time: O(committed bytes + regions).
    pub fn new(mm: MemoryManager) -> Result<Session, SessionError> {
        let mut uc = Unicorn::new_with_data(
            Arch::X86,
            Mode::MODE_64,
            CpuData { dirty: DirtyLog::new(), fault: None },
        )?;
        uc.add_mem_hook(HookType::MEM_WRITE, 1, 0, |uc, _, address, size, _| {
            uc.get_data_mut().dirty.mark(address, size);
            true
        })?;
        uc.add_mem_hook(HookType::MEM_INVALID, 1, 0, |uc, kind, address, size, _| {
            uc.get_data_mut().fault = Some(Fault { kind, address, size });
            false
        })?;
        let layout_id = mm.layout_version();
        let mut session = Session {
            uc,
            arenas: BTreeMap::new(),
            mm,
            layout_id,
            origin: SESSIONS.fetch_add(1, Ordering::Relaxed),
            scratch: Vec::new(),
        };
        session.sync_layout()?;
        Ok(session)
    }

    /// The address space. Its layout and protections are current; its bytes
    /// are those of the last [`fold`](Self::fold) (a snapshot, a restore or a
    /// layout change folds): pages the CPU wrote since live only in the
    /// session (read them with [`read`](Self::read)).
    pub fn memory(&self) -> &MemoryManager {
        &self.mm
    }

    /// The Unicorn engine, for reads (`mem_read`, `reg_read`, `mem_regions`).
    /// Do not change its mappings: the session owns them.
    pub fn cpu(&self) -> &Unicorn<'static, CpuData> {
        &self.uc
    }

    /// Gives the session back its address space with every byte the CPU
    /// wrote folded in.
    pub fn into_memory(mut self) -> MemoryManager {
        self.fold();
        std::mem::take(&mut self.mm)
    }

    /// Pages written by the CPU or by [`write`](Self::write) since the last
    /// fold. Time: O(1).
    pub fn dirty_pages(&self) -> usize {
        self.uc.get_data().dirty.pages.len()
    }

    // ------------------------------------------------------------- the layout

    /// Runs `f` on the address space — any vmsnap call, the `nt` face,
    /// `map_image` — then mirrors what it changed into the CPU: the layout
    /// (arenas, runs, permissions) when it changed, and the bytes of every
    /// page whose contents changed (the translation cache is flushed for
    /// those executable in either version). Dirty pages are folded first.
    ///
    /// Time: O(dirty pages + pages changed by `f`), plus O(allocations +
    /// regions) when the layout changed.
    pub fn with_memory<R>(&mut self, f: impl FnOnce(&mut MemoryManager) -> R) -> Result<R, SessionError> {
        self.fold();
        let before = self.mm.snapshot();
        let layout = self.mm.layout_version();
        let result = f(&mut self.mm);
        let mut pages = std::mem::take(&mut self.scratch);
        pages.clear();
        let diff = self.mm.diff_from(&before);
        pages.extend(diff.changed_pages().map(|p| (p, executable(before.page_protection(p)))));
        let synced = if self.mm.layout_version() != layout {
            self.layout_id = self.mm.layout_version();
            self.sync_layout()
        } else {
            Ok(())
        };
        let refreshed = self.refresh(&pages);
        self.scratch = pages;
        synced?;
        refreshed?;
        Ok(result)
    }

    /// [`MemoryManager::allocate_memory`] through the session.
    pub fn allocate_memory(
        &mut self,
        size: u64,
        protection: Protection,
        reserve_only: bool,
        start: u64,
        kind: RegionKind,
    ) -> Result<u64, SessionError> {
        Ok(self.with_memory(|mm| mm.allocate_memory(size, protection, reserve_only, start, kind))??)
    }

    /// [`MemoryManager::allocate_memory_at`] through the session.
    pub fn allocate_memory_at(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
        reserve_only: bool,
        kind: RegionKind,
    ) -> Result<(), SessionError> {
        Ok(self.with_memory(|mm| mm.allocate_memory_at(address, size, protection, reserve_only, kind))??)
    }

    /// [`MemoryManager::commit_memory`] through the session.
    pub fn commit_memory(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), SessionError> {
        Ok(self.with_memory(|mm| mm.commit_memory(address, size, protection))??)
    }

    /// [`MemoryManager::decommit_memory`] through the session: the pages
    /// read as zeros in the arena and fault in the CPU.
    pub fn decommit_memory(&mut self, address: u64, size: u64) -> Result<(), SessionError> {
        Ok(self.with_memory(|mm| mm.decommit_memory(address, size))??)
    }

    /// [`MemoryManager::release_memory`] through the session.
    pub fn release_memory(&mut self, address: u64, size: u64) -> Result<(), SessionError> {
        Ok(self.with_memory(|mm| mm.release_memory(address, size))??)
    }

    /// [`MemoryManager::protect_memory`] through the session; returns the
    /// old protection of the first page.
    pub fn protect_memory(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<Protection, SessionError> {
        Ok(self.with_memory(|mm| mm.protect_memory(address, size, protection))??)
    }

    /// [`vmsnap::image::map_image`] through the session.
    pub fn map_image(&mut self, file: &[u8]) -> Result<MappedImage, SessionError> {
        Ok(self.with_memory(|mm| map_image(mm, file))??)
    }

    /// Mirrors the whole layout into the CPU: drops arenas whose allocation
    /// is gone or changed size, creates arenas (filled from vmsnap) for new
    /// ones, and re-registers the runs of any allocation whose accessible
    /// runs or permissions differ. Unmapping flushes the translation cache of
    /// the range. Time: O(allocations + regions + bytes of new arenas).
    fn sync_layout(&mut self) -> Result<(), SessionError> {
        let wanted: Vec<ReservedRegion> = self.mm.reserved_regions().collect();
        let stale: Vec<u64> = self
            .arenas
            .values()
            .filter(|a| {
                wanted
                    .binary_search_by_key(&a.base, |r| r.base)
                    .map_or(true, |i| wanted[i].length != a.len || !supported(wanted[i].kind))
            })
            .map(|a| a.base)
            .collect();
        for base in stale {
            // Invariant: `stale` lists keys of `arenas`.
            let mut a = self.arenas.remove(&base).expect("stale arena exists");
            if let Err(e) = a.unmap_all(&mut self.uc) {
                // The CPU may still point into it: never free it.
                std::mem::forget(a);
                return Err(e.into());
            }
        }
        let mut unsupported = None;
        for r in &wanted {
            if !supported(r.kind) {
                unsupported.get_or_insert(SessionError::Unsupported { base: r.base, kind: r.kind });
                continue;
            }
            let runs = desired_runs(&self.mm, r.base, r.length);
            match self.arenas.get_mut(&r.base) {
                Some(a) => {
                    if a.runs != runs {
                        a.unmap_all(&mut self.uc)?;
                        for run in runs {
                            a.map(&mut self.uc, run)?;
                        }
                    }
                }
                None => {
                    let mut a = Arena::new(r.base, r.length);
                    let mut at = r.base;
                    while at < r.base + r.length {
                        let info = self.mm.region_info(at);
                        let n = info.length.clamp(PAGE, r.base + r.length - at);
                        if info.is_committed {
                            self.mm.read_memory(at, a.slice_mut(at, n as usize))?;
                        }
                        at += n;
                    }
                    for run in runs {
                        a.map(&mut self.uc, run)?;
                    }
                    self.arenas.insert(r.base, a);
                }
            }
        }
        unsupported.map_or(Ok(()), Err)
    }

    /// Copies the vmsnap bytes of `pages` (page addresses, with whether each
    /// was executable before) into the arenas — zeros for pages not
    /// committed — and flushes the translation cache of those executable in
    /// either version. Time: O(pages).
    fn refresh(&mut self, pages: &[(u64, bool)]) -> Result<(), SessionError> {
        for &(page, was_executable) in pages {
            let Some(a) = arena_mut(&mut self.arenas, page) else { continue };
            let protection = self.mm.page_protection(page);
            if protection.is_some() {
                self.mm.read_memory(page, a.slice_mut(page, PAGE as usize))?;
            } else {
                a.zero(page, PAGE as usize);
            }
            if was_executable || executable(protection) {
                self.uc.ctl_remove_cache(page, page + PAGE)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------- host view

    /// Reads guest memory as the host (ignoring protection), from the live
    /// bytes. Fails as [`MemoryManager::read_memory`] does on memory that is
    /// not committed. Time: O(bytes + pages).
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), SessionError> {
        self.check_host(address, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let at = address + done as u64;
            let n = ((PAGE - (at & (PAGE - 1))) as usize).min(buf.len() - done);
            // Invariant: `check_host` found an arena for every page.
            arena(&self.arenas, at).expect("checked").read(at, &mut buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes guest memory as the host (ignoring protection): the pages are
    /// marked dirty and, when executable, dropped from the translation cache.
    /// A refused write writes nothing. Time: O(bytes + pages).
    pub fn write(&mut self, address: u64, data: &[u8]) -> Result<(), SessionError> {
        self.check_host(address, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let at = address + done as u64;
            let n = ((PAGE - (at & (PAGE - 1))) as usize).min(data.len() - done);
            // Invariant: `check_host` found an arena for every page.
            arena_mut(&mut self.arenas, at).expect("checked").write(at, &data[done..done + n]);
            if executable(self.mm.page_protection(at)) {
                let page = at & !(PAGE - 1);
                self.uc.ctl_remove_cache(page, page + PAGE)?;
            }
            done += n;
        }
        if !data.is_empty() {
            self.uc.get_data_mut().dirty.mark(address, data.len());
        }
        Ok(())
    }

    /// Every page of `[address, address + len)` committed and mirrored.
    fn check_host(&self, address: u64, len: usize) -> Result<(), SessionError> {
        if len == 0 {
            return Ok(());
        }
        let end = address
            .checked_add(len as u64)
            .ok_or(MemoryError::RangeOverflow { address, size: len as u64 })?;
        let mut at = address;
        while at < end {
            if self.mm.page_protection(at).is_none() || arena(&self.arenas, at).is_none() {
                // vmsnap names the failure (NotAllocated / NotCommitted); an
                // MMIO page it accepts is one the session cannot mirror.
                self.mm.read_memory(at, &mut [0u8])?;
                return Err(SessionError::Unsupported { base: at, kind: self.mm.region_kind(at) });
            }
            at = (at & !(PAGE - 1)) + PAGE;
        }
        Ok(())
    }

    /// Copies every page written since the last fold into vmsnap, so
    /// [`memory`](Self::memory) shows the live bytes. Snapshots, restores and
    /// layout changes fold on their own. Time: O(dirty pages).
    pub fn fold(&mut self) {
        let data = self.uc.get_data_mut();
        let pages = std::mem::take(&mut data.dirty.pages);
        for &page in &pages {
            let address = page << PAGE_SHIFT;
            if self.mm.page_protection(address).is_some()
                && let Some(a) = arena(&self.arenas, address)
            {
                // Invariant: committed pages of a mirrored allocation are
                // writable by the host.
                self.mm.write_memory(address, a.slice(address, PAGE as usize)).expect("committed page");
            }
        }
        let dirty = &mut self.uc.get_data_mut().dirty;
        dirty.pages = pages;
        dirty.clear();
    }

    // -------------------------------------------------------------- versions

    /// Folds the dirty pages into vmsnap and takes a version: a vmsnap
    /// [`Snapshot`] plus the registers. Time: O(dirty pages).
    pub fn snapshot(&mut self) -> Result<SessionSnapshot, SessionError> {
        self.fold();
        let registers = Registers::read(&self.uc)?;
        Ok(SessionSnapshot {
            memory: self.mm.snapshot(),
            registers,
            layout_id: self.layout_id,
            origin: self.origin,
        })
    }

    /// Returns to `target` — any version of this session, on any branch.
    /// Copies only the pages that differ (the vmsnap diff between the last
    /// fold and `target`, plus the pages dirtied since), zero-filling pages
    /// not committed in `target`; re-registers the runs of allocations whose
    /// layout or protections differ; flushes the translation cache of every
    /// copied page executable in either version; restores the registers.
    ///
    /// Time: O(pages that differ) + a fixed cost (the registers), plus
    /// O(allocations + regions) when the layouts differ.
    pub fn restore(&mut self, target: &SessionSnapshot) -> Result<(), SessionError> {
        let mut pages = std::mem::take(&mut self.scratch);
        pages.clear();
        let diff = self.mm.diff_from(&target.memory);
        for page in diff.changed_pages() {
            pages.push((page, executable(self.mm.page_protection(page))));
        }
        drop(diff);
        let dirty = &mut self.uc.get_data_mut().dirty;
        for &page in &dirty.pages {
            let address = page << PAGE_SHIFT;
            pages.push((address, executable(self.mm.page_protection(address))));
        }
        dirty.clear();
        self.mm.restore(&target.memory);
        let same_layout = target.origin == self.origin && target.layout_id == self.layout_id;
        self.layout_id =
            if target.origin == self.origin { target.layout_id } else { self.mm.layout_version() };
        let synced = if same_layout { Ok(()) } else { self.sync_layout() };
        let refreshed = self.refresh(&pages);
        self.scratch = pages;
        synced?;
        refreshed?;
        target.registers.write(&mut self.uc)?;
        Ok(())
    }

    // ------------------------------------------------------------------- CPU

    /// The CPU registers.
    pub fn regs(&self) -> Result<Registers, SessionError> {
        Ok(Registers::read(&self.uc)?)
    }

    /// Sets the CPU registers.
    pub fn set_regs(&mut self, registers: &Registers) -> Result<(), SessionError> {
        Ok(registers.write(&mut self.uc)?)
    }

    /// Reads one register.
    pub fn reg(&self, register: RegisterX86) -> Result<u64, SessionError> {
        Ok(self.uc.reg_read(register)?)
    }

    /// Writes one register.
    pub fn set_reg(&mut self, register: RegisterX86, value: u64) -> Result<(), SessionError> {
        Ok(self.uc.reg_write(register, value)?)
    }

    /// Runs the CPU from `begin` until `rip == until` or `count`
    /// instructions ran (0: no limit).
    ///
    /// An access the CPU refuses is decided by vmsnap's guest view: a
    /// write-copy page becomes writable and the access goes through (the run
    /// goes on; the instruction budget restarts from there); otherwise the
    /// run stops with [`SessionError::Memory`] holding
    /// [`MemoryError::AccessViolation`] or [`MemoryError::GuardPageViolation`]
    /// (the guard bit is cleared, so running again from `rip`, which is the
    /// faulting instruction, retries the access and goes through). Layout
    /// changes are mirrored after `emu_start` returns, never from a hook.
    pub fn run(&mut self, begin: u64, until: u64, count: usize) -> Result<Exit, SessionError> {
        let mut begin = begin;
        loop {
            self.uc.get_data_mut().fault = None;
            let result = self.uc.emu_start(begin, until, 0, count);
            let fault = self.uc.get_data_mut().fault.take();
            match (result, fault) {
                (Ok(()), _) => {
                    let rip = self.uc.pc_read()?;
                    return Ok(if rip == until {
                        Exit::Until
                    } else if count != 0 {
                        Exit::InstructionLimit { rip }
                    } else {
                        Exit::Stopped { rip }
                    });
                }
                (Err(_), Some(fault)) => {
                    self.resolve_fault(fault)?;
                    begin = self.uc.pc_read()?;
                }
                (Err(e), None) => return Err(e.into()),
            }
        }
    }

    /// Decides a refused access with vmsnap's guest view. `Ok` means the
    /// access is now allowed (a write-copy page turned writable): retry.
    #[cold]
    fn resolve_fault(&mut self, fault: Fault) -> Result<(), SessionError> {
        let access = match fault.kind {
            MemType::WRITE | MemType::WRITE_UNMAPPED | MemType::WRITE_PROT => Access::Write,
            MemType::FETCH | MemType::FETCH_UNMAPPED | MemType::FETCH_PROT => Access::Execute,
            _ => Access::Read,
        };
        let size = fault.size.clamp(1, 64);
        let mut buf = [0u8; 64];
        let layout = self.mm.layout_version();
        let outcome = match access {
            Access::Read => self.mm.guest_read(fault.address, &mut buf[..size]),
            Access::Execute => self.mm.guest_fetch(fault.address, &mut buf[..1]),
            Access::Write => {
                // The bytes already there: turning a write-copy page writable
                // must not change its contents (the CPU then does the write).
                let _ = self.read(fault.address, &mut buf[..size]);
                self.mm.guest_write(fault.address, &buf[..size])
            }
        };
        let changed = self.mm.layout_version() != layout;
        if changed {
            self.layout_id = self.mm.layout_version();
            self.sync_layout()?;
        }
        match outcome {
            Err(e) => Err(e.into()),
            Ok(()) if changed => Ok(()),
            Ok(()) => Err(SessionError::Desync { address: fault.address, access }),
        }
    }
}
