//! Killing a save at any point (#13: "interrupting a save at any point
//! leaves the previous file intact"): a child process saves snapshots to one
//! path in a loop and is killed (SIGKILL) at a random moment, 100 times.
//! After every kill the path holds nothing (no save finished yet) or one
//! whole file that verifies and loads as one of the snapshots the child
//! saves, never a torn or partial one. The temporary files killed saves
//! leave are removed by the next save to the same path.
//!
//! The child is this test binary run again with `VMSNAP_KILL_TARGET` set
//! (the `child` test saves in a loop then; without the variable it returns
//! at once).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, file};

const PAGES: u64 = 512;
const BASE: u64 = 0x1000_0000;
const GENERATIONS: u64 = 4;
const KILLS: usize = 100;

/// The byte every page `i` of generation `g` is filled with.
fn fill(g: u64, i: u64) -> u8 {
    (g * 37 + i * 11 + 1) as u8
}

/// Generation `g`: `PAGES` pages, each filled with its own byte (so each
/// page is stored, none deduplicated), distinct in every generation.
fn generation(g: u64) -> Snapshot {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(BASE, PAGES * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
        .unwrap();
    for i in 0..PAGES {
        mm.write_memory(BASE + i * PAGE_SIZE, &[fill(g, i); PAGE_SIZE as usize]).unwrap();
    }
    mm.snapshot()
}

/// Which generation `snapshot` is, if it is one of them whole.
fn which(snapshot: &Snapshot) -> Option<u64> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    snapshot.read_memory(BASE, &mut page).ok()?;
    let g = (0..GENERATIONS).find(|&g| fill(g, 0) == page[0])?;
    (0..PAGES)
        .all(|i| {
            snapshot.read_memory(BASE + i * PAGE_SIZE, &mut page).is_ok()
                && page.iter().all(|&b| b == fill(g, i))
        })
        .then_some(g)
}

/// The temporary files of saves of `target` in its directory.
fn temporaries(target: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}.tmp-", target.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<PathBuf> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// A small deterministic generator (xorshift64).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The child: saves the generations to the target in turn, forever (until
/// killed). Returns at once in a normal test run.
#[test]
fn child() {
    let Some(target) = std::env::var_os("VMSNAP_KILL_TARGET") else { return };
    let snapshots: Vec<Snapshot> = (0..GENERATIONS).map(generation).collect();
    for g in (0..GENERATIONS).cycle() {
        file::save(&snapshots[g as usize], Path::new(&target)).unwrap();
    }
}

#[test]
fn a_save_killed_at_any_point_leaves_the_previous_file_whole_and_its_temporary_is_swept() {
    let dir = std::env::temp_dir().join(format!("vmsnap-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("session.vmsnap");

    // How long one save takes here: the kills are spread over a few saves.
    let started = Instant::now();
    file::save(&generation(0), &dir.join("probe.vmsnap")).unwrap();
    let save_time = started.elapsed();
    std::fs::remove_file(dir.join("probe.vmsnap")).unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut whole, mut interrupted) = (0usize, 0usize);
    let mut seen = [false; GENERATIONS as usize];
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env("VMSNAP_KILL_TARGET", &target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from before the first save to the middle of the fourth
        // (the child also builds its snapshots first).
        let span = save_time.as_micros() as u64 * 8 + 20_000;
        std::thread::sleep(Duration::from_micros(next(&mut rng) % span));
        child.kill().unwrap();
        child.wait().unwrap();

        if !temporaries(&target).is_empty() {
            interrupted += 1;
        }
        if target.exists() {
            file::verify(&target).unwrap_or_else(|e| panic!("kill {kill}: the file is torn: {e}"));
            let loaded = file::load(&target).unwrap();
            let g = which(&loaded).unwrap_or_else(|| panic!("kill {kill}: not one whole generation"));
            seen[g as usize] = true;
            whole += 1;
        }
        // At most the temporary of the save just killed, and those of
        // children killed before their first save finished (each finished
        // save sweeps the earlier ones).
        assert!(temporaries(&target).len() <= kill + 1);
    }
    eprintln!(
        "{KILLS} kills: {whole} found a whole file, {interrupted} interrupted a save, generations seen {seen:?}, one save {save_time:?}"
    );
    // The kills landed both between saves and inside them.
    assert!(whole > KILLS / 2, "{whole} of {KILLS} kills found a whole file");
    assert!(interrupted >= 10, "only {interrupted} of {KILLS} kills interrupted a save");
    assert!(seen.iter().filter(|&&s| s).count() >= 2, "the file was replaced: {seen:?}");

    // The next save sweeps every leftover of the killed ones.
    file::save(&generation(1), &target).unwrap();
    assert_eq!(temporaries(&target), Vec::<PathBuf>::new());
    assert_eq!(which(&file::load(&target).unwrap()), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}
