//! The demo's rewind and branch: back to the middle step (checked to read
//! as that step did), then a different future from there (`branch-1` …).

use std::fmt;
use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use super::workload::{step, take};
use super::{Arenas, SEED, Session};
use crate::format::duration;

/// What the rewind and the branch did.
#[derive(Serialize)]
pub struct Branch {
    /// The snapshot rewound to (`step-N`, the middle step).
    pub rewound_to: String,
    /// Seconds the restore took.
    pub rewind_seconds: f64,
    /// The tick the heap holds once rewound (the step's tick).
    pub rewound_tick: u64,
    /// The step both section views hold once rewound.
    pub rewound_view_step: u64,
    /// Steps of the branch (a tenth of the workload's, at least 3).
    pub branch_steps: u64,
    /// The branch's last snapshot (`branch-N`).
    pub branch_tip: String,
    /// Snapshots in the timeline, both lines.
    pub snapshots: usize,
}

/// Rewinds to the middle step and runs the branch from it.
pub fn run(session: &mut Session) -> Result<Branch> {
    let n = session.rewind_step();
    let (rewind_seconds, rewound_tick, rewound_view_step) = rewind(session, n)?;
    let branch_steps = (session.steps.len() as u64 / 10).max(3);
    let mut rng = SEED ^ 0xB4A2_C4E5;
    let mut arenas = Arenas { live: session.arenas.live.clone(), ..Arenas::default() };
    for k in 1..=branch_steps {
        step(&mut session.mm, &session.process, &mut rng, n + k, &mut arenas)?;
        if k == 1 {
            session.mm.write_memory(session.process.heap + 0x40, b"a different future")?;
        }
        let id = take(session, &format!("branch-{k}"))?;
        session.branch.push(id);
    }
    Ok(Branch {
        rewound_to: format!("step-{n}"),
        rewind_seconds,
        rewound_tick,
        rewound_view_step,
        branch_steps,
        branch_tip: format!("branch-{branch_steps}"),
        snapshots: session.timeline.len(),
    })
}

/// Restores `step-n` and checks the manager reads that step's state: the
/// seconds the restore took, the heap's last tick, the views' step.
fn rewind(session: &mut Session, n: u64) -> Result<(f64, u64, u64)> {
    let t = Instant::now();
    session.timeline.restore(&mut session.mm, session.steps[n as usize])?;
    let seconds = t.elapsed().as_secs_f64();
    let p = &session.process;
    let (mut tick, mut a, mut b) = ([0u8; 8], [0u8; 8], [0u8; 8]);
    session.mm.read_memory(p.heap, &mut tick)?;
    session.mm.read_memory(p.view_a, &mut a)?;
    session.mm.read_memory(p.view_b, &mut b)?;
    let (tick, view) = (u64::from_le_bytes(tick), u64::from_le_bytes(b));
    if tick != n + 1 || a != b || view != n {
        bail!("the rewound state is not the state of step {n}");
    }
    Ok((seconds, tick, view))
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  rewound to {} in {}: the heap's last tick reads {} again and both section views read step {}",
            self.rewound_to,
            duration(self.rewind_seconds),
            self.rewound_tick,
            self.rewound_view_step
        )?;
        writeln!(
            f,
            "  branched from {}: {} more steps, \"branch-1\" .. \"{}\" ({} snapshots in the timeline)",
            self.rewound_to, self.branch_steps, self.branch_tip, self.snapshots
        )
    }
}
