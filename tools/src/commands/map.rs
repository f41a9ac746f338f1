//! `vmsnap map --svg`: a snapshot's address space drawn as an SVG picture
//! (see [`crate::svg`]), written atomically.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::format;
use crate::open::{Opened, label};

/// Arguments of `map`.
#[derive(Args)]
pub struct MapArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// Where to write the SVG picture.
    #[arg(long)]
    pub svg: PathBuf,
    /// The snapshot: `#N` (an id), `N` (the id N, else the name N) or a name; default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// What `vmsnap map` drew.
#[derive(Serialize)]
pub struct Mapped {
    /// The picture written.
    pub svg: String,
    /// Regions inside allocations, one shape each.
    pub regions: usize,
    /// Free gaps between them.
    pub free_regions: usize,
}

/// `vmsnap map`.
pub fn run(args: &MapArgs) -> Result<Mapped> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let rows = format::regions(snapshot);
    let title = format!("{} {}", args.file.display(), label(summary));
    let svg = crate::svg::render(&title, &rows);
    // Atomically, as snapshot files are: a full disk leaves the old picture,
    // not a truncated one; a target that is not a regular file is refused.
    vmsnap::file::write_atomic(&args.svg, svg.as_bytes()).with_context(|| args.svg.display().to_string())?;
    let free_regions = rows.iter().filter(|r| r.is_free()).count();
    Ok(Mapped { svg: args.svg.display().to_string(), regions: rows.len() - free_regions, free_regions })
}

impl fmt::Display for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {}: {} regions, {} free gaps (open it in a browser; hover a region for details)",
            self.svg, self.regions, self.free_regions
        )
    }
}
