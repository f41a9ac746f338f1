//! The demo's timings: snapshot, rewind and the two diffs against the
//! full-copy baseline — a `memcpy` (or `memcmp`) of every committed byte,
//! best of 5 — and the timeline's size against full copies.

use std::fmt;
use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;

use super::Session;
use super::branch::Branch;
use super::diffs::Diffs;
use super::files::Files;
use super::workload::Workload;
use crate::format::{duration, size};

/// The timings and their ratios to the baseline.
#[derive(Serialize)]
pub struct Timings {
    /// Bytes the baseline copies and compares: the bytes committed.
    pub baseline_bytes: u64,
    /// The mean of every snapshot's seconds (the table shows the median).
    pub snapshot_mean_seconds: f64,
    /// One row per operation.
    pub timings: Vec<Timing>,
    /// `timeline_bytes / full_copy_bytes`.
    pub file_size_ratio: f64,
    /// The file sizes compared (in the JSON as `timeline_bytes` and `full_copy_bytes`).
    #[serde(skip)]
    file_bytes: (u64, u64),
}

/// One operation: vmsnap's seconds, the baseline's, and their ratio.
#[derive(Serialize)]
pub struct Timing {
    pub operation: &'static str,
    pub vmsnap_seconds: f64,
    pub full_copy_seconds: f64,
    /// `vmsnap_seconds / full_copy_seconds`.
    pub ratio: f64,
}

/// Times the baseline and sets the phases' timings against it.
pub fn run(session: &Session, workload: &Workload, branch: &Branch, diffs: &Diffs, files: &Files) -> Timings {
    let (copy, compare) = baseline(workload.committed_bytes);
    let mut snapshots = session.snapshot_seconds.clone();
    snapshots.sort_by(f64::total_cmp);
    let median = snapshots[snapshots.len() / 2];
    let row = |operation, vmsnap_seconds: f64, full_copy_seconds: f64| Timing {
        operation,
        vmsnap_seconds,
        full_copy_seconds,
        ratio: vmsnap_seconds / full_copy_seconds,
    };
    Timings {
        baseline_bytes: workload.committed_bytes,
        snapshot_mean_seconds: snapshots.iter().sum::<f64>() / snapshots.len() as f64,
        timings: vec![
            row("snapshot (median)", median, copy),
            row("rewind (restore)", branch.rewind_seconds, copy),
            row("diff, branch tips", diffs.diff_far_seconds, compare),
            row("diff, next step", diffs.diff_next_seconds, compare),
        ],
        file_size_ratio: files.timeline_bytes as f64 / files.full_copy_bytes as f64,
        file_bytes: (files.timeline_bytes, files.full_copy_bytes),
    }
}

/// Seconds a copy and a comparison of `bytes` bytes take, best of 5 each.
fn baseline(bytes: u64) -> (f64, f64) {
    let flat_a = vec![0x5Au8; bytes as usize];
    let mut flat_b = vec![0x5Au8; bytes as usize];
    let copy = best(5, || {
        flat_b.copy_from_slice(black_box(&flat_a));
        black_box(&flat_b);
    });
    let compare = best(5, || {
        black_box(black_box(&flat_a) == black_box(&flat_b));
    });
    (copy, compare)
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

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "timings against the full-copy baseline (memcpy / memcmp of the {} committed, best of 5)",
            size(self.baseline_bytes)
        )?;
        writeln!(f, "  {:<20} {:>10} {:>11} {:>11}", "operation", "vmsnap", "full copy", "ratio")?;
        for t in &self.timings {
            writeln!(
                f,
                "  {:<20} {:>10} {:>11} {:>10.5}x",
                t.operation,
                duration(t.vmsnap_seconds),
                duration(t.full_copy_seconds),
                t.ratio
            )?;
        }
        let (timeline, full_copy) = self.file_bytes;
        writeln!(
            f,
            "  {:<20} {:>10} {:>11} {:>10.5}x",
            "file size",
            size(timeline),
            size(full_copy),
            self.file_size_ratio
        )
    }
}
