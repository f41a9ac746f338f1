//! `vmsnap`: the command line of the vmsnap engine.
//!
//! A thin layer over the library: it parses arguments (clap), calls
//! `vmsnap::file`, `Snapshot` and `AddressSpace`, and formats what they
//! answer as text or JSON. `vmsnap demo` is the main job: a rewindable
//! process-like session, saved to a file every other command can read.
//!
//! Every command returns one typed report, `Serialize + Display`; [`run`]
//! prints it in one place, as JSON with `--json`, else as text, so both
//! say the same figures. Nothing else writes to standard output (progress
//! bars go to standard error).
//!
//! * [`commands`] — the file commands, one module each;
//! * [`demo`] — `vmsnap demo`, one module per phase;
//! * [`fuzz`] — `vmsnap fuzz-demo`;
//! * [`format`](mod@format), [`open`], [`svg`], [`out`], [`progress`] — what they share:
//!   text formats and the region walk, opening files and choosing a
//!   snapshot, the map's picture, checked standard output, progress bars.
//!
//! Errors are `anyhow` chains with the file as context; `main` maps them
//! to exit code 1 and one `error:` line (clap's usage errors exit with 2).

use std::fmt::Display;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;

mod commands;
mod demo;
mod format;
mod fuzz;
mod open;
mod out;
mod progress;
mod svg;

/// Inspect, diff, verify and draw vmsnap snapshot files; run the demo.
#[derive(Parser)]
#[command(
    name = "vmsnap",
    version,
    about,
    after_help = "Example:\n  vmsnap demo                      # the main job: a rewindable session, saved to a file\n  vmsnap info /tmp/vmsnap-demo.vmsnap"
)]
struct Cli {
    /// Print machine-readable JSON instead of text (read commands and the demos).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Header, snapshots and timeline, sizes, dedup and compression ratios.
    #[command(after_help = "Example:\n  vmsnap info demo.vmsnap\n  vmsnap info demo.vmsnap --json")]
    Info(commands::info::InfoArgs),
    /// A VirtualQuery-style table of the address space (like WinDbg's !address).
    #[command(after_help = "Example:\n  vmsnap regions demo.vmsnap --snapshot step-10")]
    Regions(commands::regions::RegionsArgs),
    /// A hexdump of memory (unreadable pages show as ??).
    #[command(after_help = "Example:\n  vmsnap dump demo.vmsnap 0x7ffe0000 0x40 --snapshot branch-1")]
    Dump(commands::dump::DumpArgs),
    /// What changed between two files or two snapshots of one file.
    #[command(after_help = "Example:\n  vmsnap diff demo.vmsnap --from step-5 --to branch-2\n  \
                            vmsnap diff base.vmsnap other.vmsnap")]
    Diff(commands::diff::DiffArgs),
    /// Check every checksum and page hash, parent files included.
    #[command(after_help = "Example:\n  vmsnap verify demo.vmsnap")]
    Verify(commands::verify::VerifyArgs),
    /// Memory statistics: reserved, committed, by kind; private and shared bytes per version.
    #[command(after_help = "Example:\n  vmsnap stats demo.vmsnap")]
    Stats(commands::stats::StatsArgs),
    /// Write a self-contained copy of a file: an incremental chain merged, or one snapshot taken out.
    #[command(after_help = "Example:\n  vmsnap rebase demo-branch.vmsnap merged.vmsnap\n  \
                            vmsnap rebase demo.vmsnap step5.vmsnap --snapshot step-5")]
    Rebase(commands::rebase::RebaseArgs),
    /// Draw the address space as an SVG (like VMMap's picture).
    #[command(after_help = "Example:\n  vmsnap map demo.vmsnap --svg map.svg")]
    Map(commands::map::MapArgs),
    /// The main job: build a process-like address space, run, rewind, branch, diff, save, verify.
    #[command(after_help = "Example:\n  vmsnap demo\n  vmsnap demo --steps 50 --out /tmp/session.vmsnap")]
    Demo(demo::DemoArgs),
    /// A fuzzer's reset loop: resets per second next to memcpy-dirty-list and full-copy baselines.
    #[command(name = "fuzz-demo", after_help = "Example:\n  vmsnap fuzz-demo --memory-mib 64 --seconds 0.5")]
    FuzzDemo(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    // The whole command is timed (`verify` reports it), parsing included.
    let started = Instant::now();
    let cli = Cli::parse();
    let line = match run(cli.command, cli.json, started).map(|text| out::print(&text)) {
        Err(e) => error_line(&e),
        // `vmsnap info big.vmsnap | head`: a closed pipe ends the output
        // quietly, as it does for other command-line tools.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Ok(Err(e)) => error_line(&anyhow::Error::new(e).context("writing to standard output")),
        Ok(Ok(())) => return ExitCode::SUCCESS,
    };
    // A failing standard error cannot be reported anywhere: the exit code
    // still says it.
    let _ = writeln!(std::io::stderr(), "error: {line}");
    ExitCode::FAILURE
}

/// Runs `command` and renders its report, the one place output is made:
/// JSON (serde_json of the report) with `--json`, else its text (`Display`)
/// — one value, so both say the same figures.
fn run(command: Command, json: bool, started: Instant) -> Result<String> {
    use commands::*;
    match command {
        Command::Info(a) => render(&info::run(&a)?, json),
        Command::Regions(a) => render(&regions::run(&a)?, json),
        Command::Dump(a) => render(&dump::run(&a)?, json),
        // The text shows the first --max-pages pages; JSON lists them all.
        Command::Diff(a) => render(&diff::run(&a, (!json).then_some(a.max_pages))?, json),
        Command::Verify(a) => render(&verify::run(&a, started)?, json),
        Command::Stats(a) => render(&stats::run(&a)?, json),
        Command::Rebase(a) => render(&rebase::run(&a)?, json),
        Command::Map(a) => render(&map::run(&a)?, json),
        Command::Demo(a) => render(&demo::run(&a)?, json),
        Command::FuzzDemo(a) => render(&fuzz::run(&a)?, json),
    }
}

/// `report` as pretty JSON (`json`) or as its text, ending in a newline.
fn render(report: &(impl Serialize + Display), json: bool) -> Result<String> {
    if json { Ok(serde_json::to_string_pretty(report)? + "\n") } else { Ok(report.to_string()) }
}

/// `debug` or `release`: the build the figures of the demos come from.
fn build() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

/// The error and its causes on one line, joined by ": ", each said once: a
/// message the next one already names (a path given as context, then the
/// library's "I/O error on PATH") is left out, and so is a cause the
/// message before it already ends with (an error that prints its source).
fn error_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string().replace('\n', " ")).collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let named_next = parts.get(i + 1).is_some_and(|next| names(next, part));
        let said_before = kept.last().is_some_and(|prev| prev.ends_with(part.as_str()));
        if !part.is_empty() && !named_next && !said_before {
            kept.push(part);
        }
    }
    kept.join(": ")
}

/// True when `text` contains `word` as a whole: after the start or a space,
/// before the end, a space, `:` or `,`.
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        matches!(before, None | Some(' ')) && matches!(after, None | Some(' ' | ':' | ','))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(vmsnap::file::FileError::Io { path: "/d/x.vmsnap".into(), source: io })
            .context("/d/x.vmsnap");
        assert_eq!(error_line(&e), "I/O error on /d/x.vmsnap: No such file");
        // A foreign error that prints its source too.
        #[derive(Debug)]
        struct Loud(std::io::Error);
        impl std::fmt::Display for Loud {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "loud: {}", self.0)
            }
        }
        impl std::error::Error for Loud {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Loud(std::io::Error::other("cause"))).context("a");
        assert_eq!(error_line(&e), "a: loud: cause");
    }
}
