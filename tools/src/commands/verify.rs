//! `vmsnap verify`: every checksum and page hash of a file and of its
//! parent chain, timed as the user waits for it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vmsnap::file::FileInfo;

use crate::format;
use crate::progress::Bar;

/// Arguments of `verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The snapshot file.
    pub file: PathBuf,
}

/// What `vmsnap verify` checked (a file that fails is an error, not a report).
#[derive(Serialize)]
pub struct Verified {
    /// Always true: the JSON says it in so many words.
    pub ok: bool,
    /// The path given.
    pub file: String,
    /// The file and its parents, the file first.
    pub files: Vec<String>,
    /// Snapshot layouts checked (the file's).
    pub snapshots: usize,
    /// Page hashes checked, over the chain.
    pub pages_checked: u64,
    /// Frames checked, over the chain.
    pub frames_checked: u64,
    /// Seconds since `started`: the whole command, not only the check.
    pub seconds: f64,
}

/// Checks `args.file` and its chain; the time is measured from `started`
/// (the start of the command) to the end of the last step, so that it is
/// what the user waited for.
pub fn run(args: &VerifyArgs, started: Instant) -> Result<Verified> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    let mut bar = Bar::new("verifying", info.unique_bytes(), true);
    vmsnap::file::verify_with_progress(&args.file, &mut bar.hook())
        .with_context(|| args.file.display().to_string())?;
    drop(bar);
    let files = chain(&args.file);
    Ok(Verified {
        ok: true,
        file: args.file.display().to_string(),
        pages_checked: files.iter().map(|(_, i)| i.stored_pages).sum(),
        frames_checked: files.iter().map(|(_, i)| i.frame_count).sum(),
        files: files.into_iter().map(|(p, _)| p.display().to_string()).collect(),
        snapshots: info.snapshots.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The file and its parents: `(path, info)`, the file first. Stops at a
/// parent that cannot be inspected (verify reports why).
fn chain(path: &Path) -> Vec<(PathBuf, FileInfo)> {
    let mut out: Vec<(PathBuf, FileInfo)> = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(p) = next.take() {
        let Ok(info) = vmsnap::file::inspect(&p) else { break };
        if out.len() >= vmsnap::file::MAX_CHAIN_LENGTH as usize {
            break;
        }
        if let Some(parent) = &info.parent {
            let dir = p.parent().map(Path::to_owned).unwrap_or_default();
            next = Some(dir.join(&parent.file_name_hint));
        }
        out.push((p, info));
    }
    out
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "OK {}: header and index checksums, {} frames, {} page hashes (BLAKE3), {} snapshot layouts checked in {}",
            self.file,
            self.frames_checked,
            self.pages_checked,
            self.snapshots,
            format::duration(self.seconds)
        )?;
        for p in self.files.iter().skip(1) {
            writeln!(f, "   parent {p} OK")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `verify` reports the time of the whole command: from the start it is
    /// given (here ten seconds ago), not from the start of the check.
    #[test]
    fn verify_times_the_whole_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.vmsnap");
        vmsnap::file::save(&vmsnap::MemoryManager::new().snapshot(), &file).unwrap();
        let Some(started) = Instant::now().checked_sub(std::time::Duration::from_secs(10)) else {
            return; // a monotonic clock younger than ten seconds: nothing to compare
        };
        let v = run(&VerifyArgs { file }, started).unwrap();
        assert!(v.seconds >= 10.0, "{}", v.seconds);
        assert_eq!((v.files.len(), v.snapshots), (1, 1));
        // The text says the same time.
        assert!(v.to_string().contains(&format!("checked in {}", format::duration(v.seconds))), "{v}");
    }
}
