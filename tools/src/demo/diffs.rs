//! The demo's diffs of two execution points: the tips of the two lines
//! (the workload's last step against the branch's), and two consecutive
//! steps (read from the snapshot's change log).

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use serde::Serialize;
use vmsnap::{MemoryDiff, Snapshot};

use super::Session;
use crate::format::duration;

/// What the two diffs found.
#[derive(Serialize)]
pub struct Diffs {
    /// The tips diffed: the workload's last step and the branch's last.
    pub diff_far_from: String,
    pub diff_far_to: String,
    pub diff_far_region_changes: usize,
    pub diff_far_pages: usize,
    pub diff_far_seconds: f64,
    /// The heap's first page, when the tips differ there.
    pub diff_far_heap_page: Option<PageRanges>,
    /// The consecutive steps diffed: the rewind point and the step after it.
    pub diff_next_from: String,
    pub diff_next_to: String,
    pub diff_next_pages: usize,
    pub diff_next_seconds: f64,
}

/// A changed page and the byte ranges (offsets in it) that differ.
#[derive(Serialize)]
pub struct PageRanges {
    pub address: u64,
    pub ranges: Vec<Range<usize>>,
}

/// Diffs the two tips, then the rewind point against the step after it.
pub fn run(session: &Session) -> Diffs {
    let (far, far_seconds) = timed_diff(session.main_tip(), session.branch_tip());
    let n = session.rewind_step();
    let (next, next_seconds) = timed_diff(session.step(n), session.step(n + 1));
    let heap = session.process.heap;
    let heap_page = far
        .iter_page_changes()
        .find(|c| c.address() == heap)
        .map(|c| PageRanges { address: c.address(), ranges: c.byte_ranges() });
    Diffs {
        diff_far_from: format!("step-{}", session.steps.len() - 1),
        diff_far_to: session.branch_tip_name(),
        diff_far_region_changes: far.region_changes().len(),
        diff_far_pages: far.changed_pages().len(),
        diff_far_seconds: far_seconds,
        diff_far_heap_page: heap_page,
        diff_next_from: format!("step-{n}"),
        diff_next_to: format!("step-{}", n + 1),
        diff_next_pages: next.changed_pages().len(),
        diff_next_seconds: next_seconds,
    }
}

/// `old.diff(new)` and the seconds it took.
fn timed_diff(old: &Snapshot, new: &Snapshot) -> (MemoryDiff, f64) {
    let t = Instant::now();
    let d = old.diff(new);
    (d, t.elapsed().as_secs_f64())
}

impl fmt::Display for Diffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let example = self.diff_far_heap_page.as_ref().map_or(String::new(), |p| {
            format!("; e.g. the heap's first page at {:#x} differs in bytes {:?}", p.address, p.ranges)
        });
        writeln!(
            f,
            "  diff {} → {}: {} region changes, {} pages changed, in {}{example}",
            self.diff_far_from,
            self.diff_far_to,
            self.diff_far_region_changes,
            self.diff_far_pages,
            duration(self.diff_far_seconds)
        )?;
        writeln!(
            f,
            "  diff {} → {}: {} pages changed, in {} (read from the snapshot's change log)",
            self.diff_next_from,
            self.diff_next_to,
            self.diff_next_pages,
            duration(self.diff_next_seconds)
        )
    }
}
