//! `vmsnap regions`: a `VirtualQuery`-style table of one snapshot's address
//! space, like WinDbg's `!address`.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::InFile;
use crate::format::{self, Region, windbg};
use crate::open::Opened;

/// Arguments of `regions`.
#[derive(Args)]
pub struct RegionsArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The snapshot: `#3` is always the id 3; a bare `3` is the id 3 when the file has one, else the
    /// snapshot named "3"; anything else is a name. Default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
    /// Leave free regions out.
    #[arg(long)]
    pub no_free: bool,
}

/// What `vmsnap regions` reports.
#[derive(Serialize)]
pub struct Regions {
    /// The file and the snapshot (`file`, `snapshot`, `name`).
    #[serde(flatten)]
    pub of: InFile,
    /// Every region from 0 to the end of user space (free ones left out with `--no-free`).
    pub regions: Vec<Region>,
    /// Regions inside an allocation (not `MEM_FREE`).
    pub allocated_regions: usize,
}

/// `vmsnap regions`.
pub fn run(args: &RegionsArgs) -> Result<Regions> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let regions: Vec<Region> =
        format::regions(snapshot).into_iter().filter(|r| !args.no_free || !r.is_free()).collect();
    let allocated_regions = regions.iter().filter(|r| !r.is_free()).count();
    Ok(Regions { of: InFile::new(&args.file, summary), regions, allocated_regions })
}

impl fmt::Display for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.of)?;
        writeln!(
            f,
            "{:>17}  {:>17}  {:>17}  {:<11} {:<26} {:<11} {:<12}",
            "BaseAddress", "EndAddress+1", "RegionSize", "State", "Protect", "Type", "Kind"
        )?;
        for r in &self.regions {
            writeln!(
                f,
                "{:>17}  {:>17}  {:>17}  {:<11} {:<26} {:<11} {:<12}",
                windbg(r.base),
                windbg(r.end),
                windbg(r.size),
                r.state,
                r.protect_name,
                r.type_,
                if r.is_free() { "" } else { r.kind }
            )?;
        }
        writeln!(f, "{} regions ({} in allocations)", self.regions.len(), self.allocated_regions)
    }
}
