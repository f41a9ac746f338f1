//! Helpers the end-to-end test files share: running the `vmsnap` binary,
//! and the demo's files to run it on.

// Each test file uses a part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn vmsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmsnap")).args(args).output().expect("the vmsnap binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = vmsnap(args);
    assert!(o.status.success(), "vmsnap {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Runs a `--json` command that must succeed and parses its output.
pub fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vmsnap {args:?}: not JSON ({e}): {text}"))
}

/// Runs a command that must fail with exit code 1 and one `error:` line.
pub fn fails(args: &[&str]) -> String {
    let o = vmsnap(args);
    assert_eq!(o.status.code(), Some(1), "vmsnap {args:?}: {}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "vmsnap {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The demo's three files, in a temporary directory, and its JSON report.
pub struct Demo {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    pub base: PathBuf,
    pub branch: PathBuf,
    pub report: Value,
}

/// The demo's arguments for a short run saving to `out`.
pub fn demo_args(out: &Path) -> Vec<&str> {
    vec!["demo", "--steps", "12", "--heap-mib", "4", "--out", s(out)]
}

/// Runs the demo (12 steps, 4 MiB of heap) and keeps its files.
pub fn demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.vmsnap");
    let report = json(&demo_args(&file));
    Demo {
        base: dir.path().join("demo-base.vmsnap"),
        branch: dir.path().join("demo-branch.vmsnap"),
        dir,
        file,
        report,
    }
}
