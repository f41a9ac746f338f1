//! Snapshot files against hostile input and a hostile file system (the
//! hardening issue #12): parents that are not files, targets that are not
//! files, foreign temporary files, huge sparse files, error messages.
//!
//! Each test is named after the defect it pins down.

#![cfg(unix)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use vmsnap::file::{self, FileError};
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, Timeline};

use crate::common;

// ------------------------------------------------------------- helpers ----

fn snapshot(tag: u8) -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x8000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    for p in 0..4u64 {
        mm.write_memory(0x10000 + p * PAGE_SIZE, &[tag.wrapping_add(p as u8) | 1; 64]).unwrap();
    }
    mm.snapshot()
}

/// Runs `f` on a thread of its own and returns its result; a call still
/// blocked after a minute (reading a FIFO or a device forever) fails the
/// test instead of hanging it. Not a timing assertion: the bound only turns
/// a hang into a failure.
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} never returned: it blocked on its input"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked (see above)"),
    }
}

/// Writes an incremental file at `dir/child.vmsnap` whose parent hint is
/// `hint` (its parent index hash is a real file's, so only the hint is
/// hostile).
fn child_with_hint(dir: &Path, hint: &str) -> PathBuf {
    let parent = snapshot(1);
    let parent_bytes = file::to_bytes(&parent).unwrap();
    let bytes = file::incremental_to_bytes(&snapshot(2), &parent, &parent_bytes, hint).unwrap();
    let path = dir.join("child.vmsnap");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// True for the typed "not a regular file" refusal, at any depth of a chain.
fn not_a_file(e: &FileError) -> bool {
    matches!(e.root_cause(), FileError::NotAFile { .. })
}

/// Every entry point that follows a parent chain, on `child` (and
/// `save_incremental` against it), each returning its error.
fn every_reader(child: &Path, out: &Path) -> Vec<(&'static str, FileError)> {
    type Run = fn(&Path, &Path) -> Result<(), FileError>;
    let runs: [(&str, Run); 6] = [
        ("load", |c, _| file::load(c).map(drop)),
        ("verify", |c, _| file::verify(c)),
        ("load_timeline", |c, _| file::load_timeline(c).map(drop)),
        ("open_lazy", |c, _| file::open_lazy(c).map(drop)),
        ("rebase", |c, o| file::rebase(c, o)),
        ("save_incremental", |c, o| file::save_incremental(&snapshot(3), c, o)),
    ];
    runs.into_iter()
        .map(|(name, run)| {
            let (c, o) = (child.to_owned(), out.to_owned());
            let result = returns(name, move || run(&c, &o));
            (name, result.expect_err(name))
        })
        .collect()
}

/// The bytes this process has read so far (Linux: `rchar` of
/// `/proc/self/io`, every `read` of every thread).
fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar:"))?.trim().parse().ok()
}

/// Display of `e` and of every `source()` below it, joined by ": ".
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.join(": ")
}

// ----------------------------------- 1. parents that are not files ----

#[test]
fn a_parent_hint_naming_dev_zero_is_refused_not_read_without_bound() {
    let dir = common::temp_dir("hostile", "dev-zero");
    let child = child_with_hint(&dir, &format!("{}dev/zero", "../".repeat(40)));
    for (name, e) in every_reader(&child, &dir.join("out.vmsnap")) {
        assert!(not_a_file(&e), "{name}: {e:?}");
        assert!(e.to_string().contains("dev/zero") || chain_text(&e).contains("dev/zero"), "{name}: {e}");
    }
    // The parent given directly.
    let e = returns("save_incremental", || {
        file::save_incremental(&snapshot(3), Path::new("/dev/zero"), Path::new("/nonexistent/x.vmsnap"))
    });
    assert!(not_a_file(e.as_ref().unwrap_err()), "{e:?}");
    assert!(!dir.join("out.vmsnap").exists());
    dir.close().unwrap();
}

#[test]
fn a_parent_hint_naming_a_fifo_is_refused_not_waited_on() {
    let dir = common::temp_dir("hostile", "fifo");
    mkfifo(&dir.join("pipe"));
    let child = child_with_hint(&dir, "pipe");
    for (name, e) in every_reader(&child, &dir.join("out.vmsnap")) {
        assert!(not_a_file(&e), "{name}: {e:?}");
    }
    let pipe = dir.join("pipe");
    let e = returns("save_incremental", move || {
        file::save_incremental(&snapshot(3), &pipe, Path::new("/nonexistent/x.vmsnap"))
    });
    assert!(not_a_file(e.as_ref().unwrap_err()), "{e:?}");
    // The file asked for itself, and `inspect`.
    let pipe = dir.join("pipe");
    let e = returns("load", move || file::load(&pipe).map(drop));
    assert!(not_a_file(e.as_ref().unwrap_err()), "{e:?}");
    let pipe = dir.join("pipe");
    let e = returns("inspect", move || file::inspect(&pipe).map(drop));
    assert!(not_a_file(e.as_ref().unwrap_err()), "{e:?}");
    dir.close().unwrap();
}

// ------------------------------------ 2. targets that are not files ----

#[test]
fn an_atomic_save_refuses_a_target_that_is_not_a_regular_file() {
    let dir = common::temp_dir("hostile", "targets");
    let source = dir.join("source.vmsnap");
    file::save(&snapshot(1), &source).unwrap();
    let dev_null = Path::new("/dev/null");
    // A FIFO, a directory, a symbolic link (to /dev/null and to a file).
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let directory = dir.join("directory");
    std::fs::create_dir(&directory).unwrap();
    let to_null = dir.join("to-null");
    std::os::unix::fs::symlink(dev_null, &to_null).unwrap();
    let to_file = dir.join("to-file");
    std::os::unix::fs::symlink(&source, &to_file).unwrap();
    let before = std::fs::read(&source).unwrap();
    for target in [&fifo, &directory, &to_null, &to_file] {
        let e = file::save(&snapshot(2), target).unwrap_err();
        assert!(not_a_file(&e), "{}: {e:?}", target.display());
        assert!(e.to_string().contains(&*target.to_string_lossy()), "{e}");
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&directory).unwrap().is_dir());
    assert!(std::fs::symlink_metadata(&to_null).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(&to_file).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&source).unwrap(), before, "the link's target is untouched");
    // The real /dev/null (only now that a link to it and a FIFO were
    // refused, so that this test cannot replace it on a broken build):
    // refused before anything is created or written.
    assert!(not_a_file(&file::save(&snapshot(1), dev_null).unwrap_err()));
    assert!(not_a_file(&file::save_timeline(&Timeline::new(), dev_null).unwrap_err()));
    assert!(not_a_file(&file::rebase(&source, dev_null).unwrap_err()));
    assert!(not_a_file(&file::write_atomic(dev_null, b"text").unwrap_err()));
    assert!(std::fs::metadata(dev_null).unwrap().file_type().is_char_device());

    // Nothing was left behind: the five entries made above.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 5);
    dir.close().unwrap();
}

#[test]
fn an_atomic_save_keeps_the_mode_and_owner_of_the_file_it_replaces() {
    let dir = common::temp_dir("hostile", "mode");
    let path = dir.join("secret.vmsnap");
    file::save(&snapshot(1), &path).unwrap();
    for mode in [0o600, 0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        file::save(&snapshot(2), &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, mode);
        file::rebase(&path, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, mode);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Only root may give a file away: then the owner is kept too.
        std::os::unix::fs::chown(&path, Some(4321), Some(8765)).unwrap();
        file::save(&snapshot(3), &path).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4321, 8765, 0o604));
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    dir.close().unwrap();
}

// ------------------------------------------------ 3. temporary files ----

#[test]
fn the_temporary_files_of_killed_saves_are_swept_and_a_live_saves_kept() {
    let dir = common::temp_dir("hostile", "temporaries");
    let path = dir.join("x.vmsnap");
    // What a save killed by SIGKILL leaves, in a container whose next
    // process has the same PID: the name the next save would pick.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let pid = std::process::id();
    let stale: Vec<PathBuf> = (0..64).map(|n| dir.join(format!(".x.vmsnap.tmp-{pid}-{n}"))).collect();
    for s in &stale {
        let f = std::fs::File::create(s).unwrap();
        f.set_len(100).unwrap();
        f.set_modified(hour_ago).unwrap();
    }
    // A save killed a moment ago: no lock held, so it goes however young.
    let young = dir.join(format!(".x.vmsnap.tmp-{:016x}", 0xdead_beef_u64));
    std::fs::write(&young, b"torn").unwrap();
    // A save in progress elsewhere (another PID namespace: same PID; its
    // writer holds the lock on its temporary file), and a stale temporary
    // file of another target: neither is touched.
    let fresh = dir.join(format!(".x.vmsnap.tmp-{pid}-999"));
    std::fs::write(&fresh, b"in progress").unwrap();
    let writer = std::fs::File::open(&fresh).unwrap();
    writer.lock().unwrap();
    let other = dir.join(".y.vmsnap.tmp-1-0");
    std::fs::File::create(&other).unwrap().set_modified(hour_ago).unwrap();

    file::save(&snapshot(1), &path).unwrap();
    assert!(file::load(&path).unwrap().diff(&snapshot(1)).is_empty());
    for s in stale.iter().chain([&young]) {
        assert!(!s.exists(), "{} was not swept", s.display());
    }
    assert_eq!(std::fs::read(&fresh).unwrap(), b"in progress");
    assert!(other.exists());
    drop(writer);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [".x.vmsnap.tmp-".to_owned() + &format!("{pid}-999"), ".y.vmsnap.tmp-1-0".into(), "x.vmsnap".into()]
    );
    dir.close().unwrap();
}

// ------------------------------------ 6. headers before whole files ----

#[test]
fn a_2_gib_sparse_file_is_refused_from_its_header_without_being_read() {
    let dir = common::temp_dir("hostile", "sparse");
    let good = file::to_bytes(&snapshot(1)).unwrap();
    let big = dir.join("big.vmsnap");
    std::fs::write(&big, &good).unwrap();
    std::fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(2 << 30).unwrap();
    let zeros = dir.join("zeros.vmsnap");
    std::fs::File::create(&zeros).unwrap().set_len(2 << 30).unwrap();
    // A child whose parent is the big file (its index hash is the good file's).
    let parent = snapshot(1);
    let child = dir.join("child.vmsnap");
    std::fs::write(&child, file::incremental_to_bytes(&snapshot(2), &parent, &good, "big.vmsnap").unwrap())
        .unwrap();

    let read_before = bytes_read();
    for path in [&big, &zeros] {
        // The error `inspect` gives from the header alone...
        let expected = format!("{:?}", file::inspect(path).unwrap_err());
        assert!(expected.contains("TrailingBytes") || expected.contains("BadMagic"), "{expected}");
        // ... is every entry point's.
        let errors = [
            file::load(path).map(drop),
            file::verify(path),
            file::load_timeline(path).map(drop),
            file::open_lazy(path).map(drop),
            file::rebase(path, &dir.join("out.vmsnap")),
        ];
        for e in errors {
            assert_eq!(format!("{:?}", e.unwrap_err()), expected);
        }
    }
    for e in [file::load(&child).map(drop), file::verify(&child), file::open_lazy(&child).map(drop)] {
        let e = e.unwrap_err();
        assert!(matches!(e.root_cause(), FileError::TrailingBytes { .. }), "{e:?}");
    }
    // Structural check, where the kernel counts reads: 21 refusals of 2 GiB
    // files read a few KiB each (the other file tests, which share this
    // binary, read about 9 MB in all).
    if let (Some(before), Some(after)) = (read_before, bytes_read()) {
        assert!(after - before < 64 << 20, "{} bytes read", after - before);
    }
    assert!(!dir.join("out.vmsnap").exists());
    dir.close().unwrap();
}

// ------------------------------------------------------- 8. messages ----

#[test]
fn an_io_error_names_its_cause_once() {
    let missing = Path::new("/nonexistent/vmsnap/file.vmsnap");
    let e = file::load(missing).unwrap_err();
    let text = chain_text(&e);
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
    assert!(text.contains("/nonexistent/vmsnap/file.vmsnap"), "{text}");
}

#[test]
fn a_parent_error_names_its_cause_once() {
    let dir = common::temp_dir("hostile", "parent-message");
    let parent = dir.join("parent.vmsnap");
    file::save(&snapshot(1), &parent).unwrap();
    let child = dir.join("child.vmsnap");
    file::save_incremental(&snapshot(2), &parent, &child).unwrap();
    let mut bytes = std::fs::read(&parent).unwrap();
    bytes[0] = b'X';
    std::fs::write(&parent, bytes).unwrap();
    let e = file::load(&child).unwrap_err();
    assert!(matches!(e, FileError::InParent { .. }), "{e:?}");
    let text = chain_text(&e);
    assert_eq!(text.matches("bad magic").count(), 1, "{text}");
    assert_eq!(text.matches("parent.vmsnap").count(), 1, "{text}");
    dir.close().unwrap();
}

#[test]
fn an_invalid_layout_names_its_cause_once() {
    // A layout record fails as a state buffer does (`StateError`), never as
    // a memory access.
    let e = FileError::from(vmsnap::StateError::Corrupt("allocation outside user space"));
    let text = chain_text(&e);
    assert_eq!(text.matches("allocation outside user space").count(), 1, "{text}");
}

#[test]
fn a_failed_save_names_the_destination_not_the_temporary_file() {
    let dir = common::temp_dir("hostile", "destination");
    let dest = dir.join("no-such-dir").join("x.vmsnap");
    for e in [file::save(&snapshot(1), &dest).unwrap_err(), file::write_atomic(&dest, b"x").unwrap_err()] {
        match &e {
            FileError::Io { path, .. } => assert_eq!(path, &dest),
            other => panic!("{other:?}"),
        }
        assert!(!chain_text(&e).contains(".tmp-"), "{e}");
    }
    dir.close().unwrap();
}

// ------------------------------------ all of user space committed (#12.4) ----

/// A manager with all of user space (128 TiB) committed in one call, a few
/// pages written, then most of it reprotected: the versions a hostile or
/// careless guest makes in a few milliseconds.
fn huge_versions() -> (Snapshot, Snapshot, Snapshot) {
    let (lo, hi) = (vmsnap::MIN_ALLOCATION_ADDRESS, vmsnap::USER_SPACE_END);
    let mut mm = MemoryManager::new();
    mm.set_commit_limit(None);
    mm.allocate_memory_at(lo, hi - lo, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.write_memory(lo, b"first page").unwrap();
    mm.write_memory(hi - 8, b"last!!!!").unwrap();
    let written = mm.snapshot();
    mm.protect_memory(lo + 0x10000, hi - lo - 0x20000, Protection::READ).unwrap();
    let protected = mm.snapshot();
    mm.decommit_memory(lo + 0x10000, (hi - lo) / 2).unwrap();
    let decommitted = mm.snapshot();
    (written, protected, decommitted)
}

fn read(s: &Snapshot, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    s.read_memory(address, &mut buf).unwrap();
    buf
}

/// Each step runs under `returns`: before the fix, saving took 215 s,
/// serializing 2 minutes and the diff would have needed 550 GB, so the
/// steps never returned within the bound. The page-level results are
/// checked too: runs, not pages, carry the size.
#[test]
fn a_128_tib_commit_is_saved_inspected_serialized_and_diffed_by_runs_not_pages() {
    let (lo, hi) = (vmsnap::MIN_ALLOCATION_ADDRESS, vmsnap::USER_SPACE_END);
    let all_pages = ((hi - lo) / PAGE_SIZE) as usize;
    let (written, protected, decommitted) = returns("building the versions", huge_versions);
    let dir = common::temp_dir("hostile", "128tib");

    // Files: a snapshot, and a timeline of all three (delta page maps).
    let (w, path) = (written.clone(), dir.join("huge.vmsnap"));
    let loaded = returns("save, inspect, verify and load", move || {
        file::save(&w, &path).unwrap();
        let info = file::inspect(&path).unwrap();
        assert_eq!(info.snapshots[0].committed_pages, all_pages as u64);
        assert_eq!(info.snapshots[0].stored_entries, 2);
        file::verify(&path).unwrap();
        file::load(&path).unwrap()
    });
    assert_eq!(loaded.compute_memory_stats().committed_memory, hi - lo);
    assert_eq!(read(&loaded, lo, 10), b"first page");
    assert_eq!(read(&loaded, hi - 8, 8), b"last!!!!");
    assert_eq!(read(&loaded, lo + (hi - lo) / 2, 4), [0; 4]);
    assert!(written.diff(&loaded).is_empty());

    let (t_path, versions) = (dir.join("huge-timeline.vmsnap"), [&written, &protected, &decommitted]);
    let mut timeline = Timeline::new();
    let mut parent = None;
    for (i, s) in versions.iter().enumerate() {
        parent = Some(timeline.insert((*s).clone(), parent, Some(&format!("v{i}"))).unwrap());
    }
    let back = returns("save and reopen a timeline", move || {
        file::save_timeline(&timeline, &t_path).unwrap();
        let eager = file::load_timeline(&t_path).unwrap();
        let lazy = file::open_lazy(&t_path).unwrap().timeline();
        (eager, lazy)
    });
    for reopened in [&back.0, &back.1] {
        for (i, s) in versions.iter().enumerate() {
            let id = reopened.find(&format!("v{i}")).unwrap();
            let again = reopened.get(id).unwrap();
            assert!(s.diff(again).is_empty(), "v{i} differs after the round trip");
            assert_eq!(again.region_info(lo + 0x20000), s.region_info(lo + 0x20000));
        }
    }

    // Diffs: the commit, the reprotection, the decommit.
    let empty = MemoryManager::new().snapshot();
    let (w, p, d) = (written.clone(), protected.clone(), decommitted.clone());
    let (committed, reprotected, gone) = returns("diffs", move || (empty.diff(&w), w.diff(&p), p.diff(&d)));
    assert_eq!(committed.changed_page_count(), all_pages);
    assert_eq!(committed.changed_pages().len(), all_pages);
    assert_eq!(committed.changed_pages().next(), Some(lo));
    let runs: Vec<_> = committed.changed_page_runs().collect();
    assert_eq!(runs, vec![(lo, hi - lo, vmsnap::PageChangeKind::Committed)]);
    // Protection changes are layout, not bytes.
    assert_eq!(reprotected.changed_page_count(), 0);
    assert!(reprotected.region_changes().iter().any(|c| matches!(c,
        vmsnap::RegionChange::ProtectionChanged { address, length, .. }
            if *address == lo + 0x10000 && *length == hi - lo - 0x20000)));
    assert_eq!(gone.changed_page_count() as u64, (hi - lo) / 2 / PAGE_SIZE);
    assert_eq!(gone.changed_page_runs().len(), 1);

    // Serialization, both modes, and back.
    let s = decommitted.clone();
    let (layout, contents) = returns("serialize and deserialize", move || {
        let mut mm = MemoryManager::new();
        mm.set_commit_limit(None);
        mm.restore(&s);
        let (mut layout, mut contents) = (Vec::new(), Vec::new());
        mm.serialize_memory_state(&mut layout, true);
        mm.serialize_memory_state(&mut contents, false);
        let mut copy = MemoryManager::new();
        copy.set_commit_limit(None);
        copy.deserialize_memory_state(&contents, false).unwrap();
        assert!(s.diff(&copy.snapshot()).is_empty());
        (layout, contents)
    });
    assert!(layout.len() < 4096, "layout state is {} bytes", layout.len());
    assert!(contents.len() < 3 * 4096, "contents state is {} bytes", contents.len());
}
