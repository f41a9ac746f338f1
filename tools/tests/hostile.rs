//! The `vmsnap` binary against hostile files and a hostile environment (the
//! hardening issue #12): parents that are not files, outputs that are not
//! files, a full standard output, error messages. Each test is named after
//! the defect it pins down.

#![cfg(unix)]

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot};

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Runs `vmsnap args` with `stdout` as its standard output; a run still
/// going after two minutes (blocked on a FIFO or a device) is killed and
/// fails the test instead of hanging it. Not a timing assertion: the bound
/// only turns a hang into a failure.
fn run_with(args: &[&str], stdout: Stdio) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmsnap"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vmsnap binary runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmsnap {args:?} never returned: it blocked on its input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> Output {
    run_with(args, Stdio::piped())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run that must fail with exit code 1 and one `error:` line, no panic.
fn fails(o: &Output, args: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "vmsnap {args:?}: {err}");
    assert!(err.starts_with("error: "), "vmsnap {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "vmsnap {args:?}: one line: {err:?}");
    assert!(!err.contains("panicked"), "vmsnap {args:?}: {err}");
    err
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn snapshot(tag: u8) -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x8000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    for p in 0..4u64 {
        mm.write_memory(0x10000 + p * PAGE_SIZE, &[tag.wrapping_add(p as u8) | 1; 64]).unwrap();
    }
    mm.snapshot()
}

/// An incremental file `dir/name` whose parent hint is `hint`.
fn child_with_hint(dir: &Path, name: &str, hint: &str) -> PathBuf {
    let parent = snapshot(1);
    let parent_bytes = vmsnap::file::to_bytes(&parent).unwrap();
    let bytes = vmsnap::file::incremental_to_bytes(&snapshot(2), &parent, &parent_bytes, hint).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every command that reads a file, on `file` (output files in `dir`).
fn file_commands(file: &str, dir: &Path) -> Vec<Vec<String>> {
    let out = |name: &str| s(&dir.join(name)).to_owned();
    let f = file.to_owned();
    let cmd = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    vec![
        cmd(&["info", &f]),
        cmd(&["regions", &f]),
        cmd(&["dump", &f, "0x10000", "16"]),
        cmd(&["diff", &f, &f]),
        cmd(&["diff", &f]),
        cmd(&["verify", &f]),
        cmd(&["stats", &f]),
        cmd(&["rebase", &f, &out("rebased.vmsnap")]),
        cmd(&["map", &f, "--svg", &out("map.svg")]),
    ]
}

// ----------------------------------- 1. parents that are not files ----

#[test]
fn a_parent_hint_naming_a_fifo_or_dev_zero_fails_every_command_at_once() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("pipe"));
    let to_fifo = child_with_hint(dir.path(), "to-fifo.vmsnap", "pipe");
    let to_zero = child_with_hint(dir.path(), "to-zero.vmsnap", &format!("{}dev/zero", "../".repeat(40)));
    for child in [&to_fifo, &to_zero] {
        for args in file_commands(s(child), dir.path()) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(&args);
            if args[0] == "info" {
                // info reads the child only, and names the parent it needs.
                assert!(o.status.success(), "{args:?}: {}", stderr(&o));
                continue;
            }
            let err = fails(&o, &args);
            assert!(err.contains("not a regular file"), "{args:?}: {err}");
        }
    }
    assert!(!dir.path().join("rebased.vmsnap").exists() && !dir.path().join("map.svg").exists());
}

// ------------------------------------- 2. outputs that are not files ----

#[test]
fn rebase_refuses_dev_null_and_other_non_files_as_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.vmsnap");
    vmsnap::file::save(&snapshot(1), &file).unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    // The real /dev/null last: only once the FIFO and a link to it were
    // refused (a broken build must not replace it).
    for out in [&fifo, &link, Path::new("/dev/null")] {
        let args = ["rebase", s(&file), s(out)];
        let err = fails(&run(&args), &args);
        assert!(err.contains(s(out)) && err.contains("not a regular file"), "{err}");
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

// --------------------------------------- 3. the map's SVG, atomically ----

#[test]
fn map_writes_its_svg_atomically_not_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.vmsnap");
    vmsnap::file::save(&snapshot(1), &file).unwrap();
    let svg = dir.path().join("map.svg");
    std::fs::write(&svg, b"the old picture").unwrap();
    std::fs::set_permissions(&svg, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A reader holding the old file keeps reading all of it: the new one is
    // renamed over the name, never written into the old file.
    let mut old = std::fs::File::open(&svg).unwrap();
    let args = ["map", s(&file), "--svg", s(&svg)];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut text = String::new();
    old.read_to_string(&mut text).unwrap();
    assert_eq!(text, "the old picture");
    let new = std::fs::read_to_string(&svg).unwrap();
    assert!(new.starts_with("<svg") || new.starts_with("<?xml"), "{new}");
    assert_eq!(std::fs::metadata(&svg).unwrap().permissions().mode() & 0o777, 0o600);
    // A FIFO in the way is refused, not written into (nor waited on).
    let fifo = dir.path().join("fifo.svg");
    mkfifo(&fifo);
    let args = ["map", s(&file), "--svg", s(&fifo)];
    assert!(fails(&run(&args), &args).contains("not a regular file"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "no temporary file left");
}

// ------------------------------------------ 5. a failing standard output ----

#[test]
fn every_command_with_stdout_on_dev_full_fails_with_one_line_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.vmsnap");
    vmsnap::file::save(&snapshot(1), &file).unwrap();
    let demo_out = dir.path().join("demo.vmsnap");
    // `diff FILE` needs a second snapshot: every other command succeeds here.
    let mut all: Vec<Vec<String>> =
        file_commands(s(&file), dir.path()).into_iter().filter(|c| c.len() != 2 || c[0] != "diff").collect();
    let owned = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    all.push(owned(&["demo", "--steps", "4", "--heap-mib", "1", "--out", s(&demo_out)]));
    all.push(owned(&["fuzz-demo", "--memory-mib", "1", "--dirty", "1", "--iterations", "5"]));
    for json in [false, true] {
        for args in &all {
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            if json {
                args.push("--json");
            }
            let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
            let err = fails(&run_with(&args, Stdio::from(full)), &args);
            assert!(err.contains("standard output") && err.contains("No space left"), "{args:?}: {err}");
        }
    }
    // The files written before the output failed are complete.
    vmsnap::file::verify(&dir.path().join("rebased.vmsnap")).unwrap();
    vmsnap::file::verify(&demo_out).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("map.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"));
}

// ------------------------------------------------------- 8. messages ----

#[test]
fn errors_name_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.vmsnap");
    let args = ["verify", s(&absent)];
    let err = fails(&run(&args), &args);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.matches("absent.vmsnap").count(), 1, "{err}");

    let parent = dir.path().join("parent.vmsnap");
    vmsnap::file::save(&snapshot(1), &parent).unwrap();
    let child = dir.path().join("child.vmsnap");
    vmsnap::file::save_incremental(&snapshot(2), &parent, &child).unwrap();
    let mut bytes = std::fs::read(&parent).unwrap();
    bytes[0] = b'X';
    std::fs::write(&parent, bytes).unwrap();
    let args = ["verify", s(&child)];
    let err = fails(&run(&args), &args);
    assert_eq!(err.matches("bad magic").count(), 1, "{err}");
    assert!(err.contains("in parent file") && err.contains("child.vmsnap"), "{err}");
}

#[test]
fn rebase_and_demo_errors_name_the_destination_not_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.vmsnap");
    vmsnap::file::save(&snapshot(1), &file).unwrap();
    let out = dir.path().join("no-such-dir").join("out.vmsnap");
    let args = ["rebase", s(&file), s(&out)];
    let err = fails(&run(&args), &args);
    assert!(err.contains(s(&out)) && !err.contains(".tmp-"), "{err}");
    // The demo saving where no file can be created (its directory exists).
    if Path::new("/proc/self").exists() {
        let out = "/proc/vmsnap-hostile-test.vmsnap";
        let args = ["demo", "--steps", "4", "--heap-mib", "1", "--out", out];
        let err = fails(&run(&args), &args);
        assert!(err.contains(out) && !err.contains(".tmp-"), "{err}");
    }
}
