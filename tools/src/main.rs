//! `vmsnap`: the command line of the vmsnap engine.
//!
//! A thin layer over the library: it parses arguments (clap), calls
//! `vmsnap::file`, `Snapshot` and `AddressSpace`, and formats what they
//! answer as text or JSON. `vmsnap demo` is the main job: a rewindable
//! process-like session, saved to a file every other command can read.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod demo;
mod format;
mod fuzz;
mod open;
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
    Info(commands::InfoArgs),
    /// A VirtualQuery-style table of the address space (like WinDbg's !address).
    #[command(after_help = "Example:\n  vmsnap regions demo.vmsnap --snapshot step-10")]
    Regions(commands::RegionsArgs),
    /// A hexdump of memory (unreadable pages show as ??).
    #[command(after_help = "Example:\n  vmsnap dump demo.vmsnap 0x7ffe0000 0x40 --snapshot branch-1")]
    Dump(commands::DumpArgs),
    /// What changed between two files or two snapshots of one file.
    #[command(after_help = "Example:\n  vmsnap diff demo.vmsnap --from step-5 --to branch-2\n  \
                            vmsnap diff base.vmsnap other.vmsnap")]
    Diff(commands::DiffArgs),
    /// Check every checksum and page hash, parent files included.
    #[command(after_help = "Example:\n  vmsnap verify demo.vmsnap")]
    Verify(commands::VerifyArgs),
    /// Memory statistics: reserved, committed, by kind; private and shared bytes per version.
    #[command(after_help = "Example:\n  vmsnap stats demo.vmsnap")]
    Stats(commands::StatsArgs),
    /// Write a self-contained copy of a file: an incremental chain merged, or one snapshot taken out.
    #[command(after_help = "Example:\n  vmsnap rebase demo-branch.vmsnap merged.vmsnap\n  \
                            vmsnap rebase demo.vmsnap step5.vmsnap --snapshot step-5")]
    Rebase(commands::RebaseArgs),
    /// Draw the address space as an SVG (like VMMap's picture).
    #[command(after_help = "Example:\n  vmsnap map demo.vmsnap --svg map.svg")]
    Map(commands::MapArgs),
    /// The main job: build a process-like address space, run, rewind, branch, diff, save, verify.
    #[command(after_help = "Example:\n  vmsnap demo\n  vmsnap demo --steps 50 --out /tmp/session.vmsnap")]
    Demo(demo::DemoArgs),
    /// A fuzzer's reset loop: resets per second next to memcpy-dirty-list and full-copy baselines.
    #[command(name = "fuzz-demo", after_help = "Example:\n  vmsnap fuzz-demo --memory-mib 64 --seconds 0.5")]
    FuzzDemo(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    // `vmsnap info big.vmsnap | head`: a closed stdout ends the output
    // quietly, as it does for other command-line tools, not with a panic.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info(&a, cli.json),
        Command::Regions(a) => commands::regions(&a, cli.json),
        Command::Dump(a) => commands::dump(&a, cli.json),
        Command::Diff(a) => commands::diff(&a, cli.json),
        Command::Verify(a) => commands::verify(&a, cli.json),
        Command::Stats(a) => commands::stats(&a, cli.json),
        Command::Rebase(a) => commands::rebase(&a, cli.json),
        Command::Map(a) => commands::map(&a, cli.json),
        Command::Demo(a) => demo::run(&a, cli.json),
        Command::FuzzDemo(a) => fuzz::run(&a, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined by ": ".
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
