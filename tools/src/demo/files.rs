//! The demo's files: the timeline saved, the rewind point alone and the
//! branch tip as an incremental file against it; reopened, verified and
//! compared with the session; the timeline opened again lazily and a
//! manager run from it.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use vmsnap::{MemoryManager, MmioHandlers, PAGE_SIZE, Snapshot, Timeline};

use super::setup::kuser_handlers;
use super::{KUSER, KUSER_TICK_COUNT, Paths, Session};
use crate::format::{duration, size};

/// What the demo saved, and how reopening it went.
#[derive(Serialize)]
pub struct Files {
    pub timeline_file: String,
    pub timeline_bytes: u64,
    /// Bytes full copies of every snapshot would take: snapshots × committed bytes.
    pub full_copy_bytes: u64,
    /// `full_copy_bytes / timeline_bytes`.
    pub full_copy_ratio: f64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    /// Seconds saving the timeline took.
    pub save_seconds: f64,
    /// The rewind point, saved alone.
    pub base_file: String,
    pub base_snapshot: String,
    pub base_bytes: u64,
    /// The branch tip, saved incrementally against the base.
    pub incremental_file: String,
    pub incremental_snapshot: String,
    pub incremental_bytes: u64,
    /// Seconds loading the timeline took.
    pub load_seconds: f64,
    /// Seconds verifying the timeline and the incremental file took.
    pub verify_seconds: f64,
    /// Always true: a file that fails is an error.
    pub verified: bool,
    /// Seconds opening the timeline lazily took (header and index).
    pub lazy_open_seconds: f64,
    /// Frames read by a manager restored from the lazy timeline, once it
    /// read the heap, of the file's frames.
    pub lazy_frames_read: u64,
    pub lazy_frames: u64,
    /// Snapshots in the timeline (in the JSON as `snapshots`).
    #[serde(skip)]
    snapshots: usize,
    /// Bytes committed (in the JSON as `committed_bytes`).
    #[serde(skip)]
    committed_bytes: u64,
}

/// Saves the files, reopens and checks them; `committed` is the bytes a
/// full copy of memory takes.
pub fn run(session: &Session, paths: &Paths, committed: u64) -> Result<Files> {
    let save_seconds = save(session, paths)?;
    let info = vmsnap::file::inspect(&paths.out).with_context(|| paths.out.display().to_string())?;
    let (load_seconds, verify_seconds) = reopen(session, paths)?;
    let (lazy_open_seconds, lazy_frames_read, lazy_frames) = run_lazily(session, &paths.out)?;
    let snapshots = session.timeline.len();
    let (timeline_bytes, full_copy_bytes) = (file_len(&paths.out)?, snapshots as u64 * committed);
    Ok(Files {
        timeline_file: paths.out.display().to_string(),
        timeline_bytes,
        full_copy_bytes,
        full_copy_ratio: full_copy_bytes as f64 / timeline_bytes as f64,
        dedup_ratio: info.dedup_ratio(),
        compression_ratio: info.compression_ratio(),
        save_seconds,
        base_file: paths.base.display().to_string(),
        base_snapshot: format!("step-{}", session.rewind_step()),
        base_bytes: file_len(&paths.base)?,
        incremental_file: paths.branch.display().to_string(),
        incremental_snapshot: session.branch_tip_name(),
        incremental_bytes: file_len(&paths.branch)?,
        load_seconds,
        verify_seconds,
        verified: true,
        lazy_open_seconds,
        lazy_frames_read,
        lazy_frames,
        snapshots,
        committed_bytes: committed,
    })
}

/// Saves the timeline (timed: the seconds returned), the rewind point
/// alone, and the branch tip incrementally against it.
fn save(session: &Session, paths: &Paths) -> Result<f64> {
    if let Some(dir) = paths.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let t = Instant::now();
    vmsnap::file::save_timeline(&session.timeline, &paths.out)
        .with_context(|| paths.out.display().to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    let base = session.step(session.rewind_step());
    vmsnap::file::save(base, &paths.base).with_context(|| paths.base.display().to_string())?;
    vmsnap::file::save_incremental(session.branch_tip(), &paths.base, &paths.branch)
        .with_context(|| paths.branch.display().to_string())?;
    Ok(seconds)
}

/// Loads the timeline and verifies both files (timed: the seconds
/// returned); the branch tip must read back as the session's, from the
/// timeline and from the incremental file.
fn reopen(session: &Session, paths: &Paths) -> Result<(f64, f64)> {
    let context = |p: &Path| p.display().to_string();
    let mut binder = kuser_binder(session);
    let t = Instant::now();
    let loaded =
        vmsnap::file::load_timeline_with(&paths.out, &mut binder).with_context(|| context(&paths.out))?;
    let load_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    vmsnap::file::verify(&paths.out).with_context(|| context(&paths.out))?;
    vmsnap::file::verify(&paths.branch).with_context(|| context(&paths.branch))?;
    let verify_seconds = t.elapsed().as_secs_f64();
    let reloaded_tip = tip_of(session, &loaded).context("the reopened timeline has no branch tip")?;
    let incremental =
        vmsnap::file::load_with(&paths.branch, &mut binder).with_context(|| context(&paths.branch))?;
    for (what, copy) in [("timeline", reloaded_tip), ("incremental file", &incremental)] {
        if !session.branch_tip().diff(copy).is_empty() {
            bail!("the reopened {what} differs from the session");
        }
        // The KUSER page reads through the handlers bound again.
        let (mut from_file, mut from_session) = ([0u8; 8], [0u8; 8]);
        copy.read_memory(KUSER + KUSER_TICK_COUNT, &mut from_file)?;
        session.branch_tip().read_memory(KUSER + KUSER_TICK_COUNT, &mut from_session)?;
        if from_file != from_session {
            bail!("the reopened {what} reads another KUSER tick count than the session");
        }
    }
    Ok((load_seconds, verify_seconds))
}

/// Binds the KUSER region of a file the demo reopens to the session's
/// handlers (a file keeps the region, not its handlers).
fn kuser_binder(session: &Session) -> impl FnMut(u64, u64) -> Option<MmioHandlers> + '_ {
    |base, size| (base == KUSER && size == PAGE_SIZE).then(|| kuser_handlers(session.process.tick.clone()))
}

/// Opens the timeline lazily (timed), restores a manager to the branch tip
/// from it and reads the heap: the seconds, the frames read and the
/// file's frames.
fn run_lazily(session: &Session, out: &Path) -> Result<(f64, u64, u64)> {
    let t = Instant::now();
    let lazy = vmsnap::file::open_lazy_with(out, &mut kuser_binder(session))
        .with_context(|| out.display().to_string())?;
    let timeline = lazy.timeline();
    let seconds = t.elapsed().as_secs_f64();
    let tip = tip_of(session, &timeline).context("the lazily opened timeline has no branch tip")?;
    let mut runner = MemoryManager::new();
    runner.restore(tip);
    let (mut from_file, mut from_session) = ([0u8; 64], [0u8; 64]);
    runner.read_memory(session.process.heap, &mut from_file)?;
    session.branch_tip().read_memory(session.process.heap, &mut from_session)?;
    if from_file != from_session {
        bail!("a manager running from the lazily opened timeline reads other bytes than the session");
    }
    Ok((seconds, lazy.frames_read(), lazy.frames()))
}

/// The branch tip in a timeline read from a file (found by name).
fn tip_of<'t>(session: &Session, timeline: &'t Timeline) -> Option<&'t Snapshot> {
    timeline.find(&session.branch_tip_name()).and_then(|id| timeline.get(id))
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| path.display().to_string())?.len())
}

impl fmt::Display for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "files")?;
        writeln!(
            f,
            "  timeline   {}: {} snapshots, {} ({:.0}x smaller than {} full copies of {} each); dedup {:.1}x, compression {:.2}x, saved in {}",
            self.timeline_file,
            self.snapshots,
            size(self.timeline_bytes),
            self.full_copy_ratio,
            self.snapshots,
            size(self.committed_bytes),
            self.dedup_ratio,
            self.compression_ratio,
            duration(self.save_seconds)
        )?;
        writeln!(
            f,
            "  base       {}: {} alone, {}",
            self.base_file,
            self.base_snapshot,
            size(self.base_bytes)
        )?;
        writeln!(
            f,
            "  increment  {}: {} against the base, {} (XOR pages and inherited ones)",
            self.incremental_file,
            self.incremental_snapshot,
            size(self.incremental_bytes)
        )?;
        self.fmt_reopened(f)
    }
}

impl Files {
    fn fmt_reopened(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  reopened in {} and verified in {} (every checksum and page hash, the incremental file's parent too): {} reads back identical (the KUSER region's handlers bound again by address)",
            duration(self.load_seconds),
            duration(self.verify_seconds),
            self.incremental_snapshot
        )?;
        writeln!(
            f,
            "  lazily     opened in {} (header and index only); a manager restored to {} from it read the heap after reading {} of {} frames",
            duration(self.lazy_open_seconds),
            self.incremental_snapshot,
            self.lazy_frames_read,
            self.lazy_frames
        )
    }
}
