//! End-to-end tests of the `vmsnap` binary on files the tests create: the
//! demo's files, files written with the library, and corrupt ones.

mod common;

use std::path::{Path, PathBuf};

use common::{Demo, demo, fails, json, ok, s, vmsnap};
use vmsnap::{AddressSpace, MemoryManager, PAGE_SIZE, Protection, RegionKind, Snapshot, USER_SPACE_END};

/// Every region from 0 to the end of user space, as the library answers.
fn library_regions(space: &dyn AddressSpace) -> Vec<vmsnap::RegionInfo> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < USER_SPACE_END {
        let r = space.region_info(at);
        out.push(r);
        at = r.start + r.length;
    }
    out
}

fn timeline_snapshot(path: &Path, name: &str) -> Snapshot {
    let t = vmsnap::file::load_timeline(path).unwrap();
    t.get(t.find(name).unwrap()).unwrap().clone()
}

#[test]
fn the_demo_reports_and_saves_its_files() {
    let d = demo();
    let r = &d.report;
    assert_eq!(r["steps"], 12);
    assert_eq!(r["branch_steps"], 3);
    assert_eq!(r["snapshots"], 15);
    assert_eq!(r["verified"], true);
    // The lazily opened timeline ran a manager after reading a frame or so,
    // not the whole file.
    let (read, frames) = (r["lazy_frames_read"].as_u64().unwrap(), r["lazy_frames"].as_u64().unwrap());
    assert!(read >= 1 && read < frames, "{read} of {frames} frames");
    assert_eq!(r["timeline_file"], s(&d.file));
    for f in [&d.file, &d.base, &d.branch] {
        assert!(f.exists(), "{}", f.display());
    }
    assert_eq!(r["timeline_bytes"], std::fs::metadata(&d.file).unwrap().len());
    assert!(r["diff_far_pages"].as_u64().unwrap() > 0);
    let timings = r["timings"].as_array().unwrap();
    assert_eq!(timings.len(), 4);
    assert!(timings.iter().all(|t| t["ratio"].as_f64().unwrap() > 0.0));

    // The text report: what happened, the files, the ratios and what to try next.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("text.vmsnap");
    let text = ok(&["demo", "--steps", "8", "--heap-mib", "2", "--out", s(&out)]);
    for needle in [
        "STATUS_GUARD_PAGE_VIOLATION",
        "rewound to step-4",
        "branched from step-4",
        "diff step-7 → branch-3",
        "full copy",
        "vmsnap map",
        s(&out),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn every_read_command_works_on_the_demo_file() {
    let d = demo();
    info_of_the_demo_file(&d);
    regions_of_the_demo_file(&d);
    dump_of_the_demo_file(&d);
    diff_of_the_demo_file(&d);
    verify_and_stats_of_the_demo_file(&d);
    rebase_of_the_demo_file(&d);
}

fn info_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    let info = json(&["info", file]);
    assert_eq!(info["kind"], "timeline");
    assert_eq!(info["snapshot_count"], 15);
    let names: Vec<&str> =
        info["snapshots"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.first(), Some(&"step-0"));
    assert_eq!(names.last(), Some(&"branch-3"));
    let library = vmsnap::file::inspect(&d.file).unwrap();
    assert_eq!(info["unique_pages"], library.stored_pages);
    assert_eq!(info["file_bytes"], library.file_length);
    assert!(info["dedup_ratio"].as_f64().unwrap() > 1.0);
    let text = ok(&["info", file]);
    assert!(text.contains("timeline") && text.contains("dedup") && text.contains("branched from"), "{text}");
}

/// The same regions the library reports, in both forms.
fn regions_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    let expected = library_regions(&timeline_snapshot(&d.file, "step-6"));
    let regions = json(&["regions", file, "--snapshot", "step-6"]);
    let rows = regions["regions"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, r) in rows.iter().zip(&expected) {
        assert_eq!((row["base"].as_u64(), row["size"].as_u64()), (Some(r.start), Some(r.length)));
    }
    assert!(rows.iter().any(|r| r["protect_name"] == "PAGE_EXECUTE_READ" && r["type"] == "MEM_IMAGE"));
    assert!(rows.iter().any(|r| r["protect_name"] == "PAGE_READWRITE|PAGE_GUARD"));
    assert_eq!(rows.iter().filter(|r| r["type"] == "MEM_MAPPED").count(), 2, "the section's two views");
    let text = ok(&["regions", file, "--snapshot", "7"]);
    assert!(text.contains("BaseAddress") && text.contains("MEM_COMMIT") && text.contains("MEM_RESERVE"));
    assert_eq!(json(&["regions", file, "--snapshot", "#7"])["name"], "step-6");
}

/// View A of the section holds the step counter.
fn dump_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    let view_a = d.report["view_a"].as_u64().unwrap();
    let address = format!("{view_a:#x}");
    let dumped = json(&["dump", file, &address, "16", "--snapshot", "step-6"]);
    assert_eq!(&dumped["hex"].as_str().unwrap()[..16], "0600000000000000");
    let text = ok(&["dump", file, &address, "0x20", "--snapshot", "step-6"]);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{:08x}`{:08x}  06 00", view_a >> 32, view_a & 0xFFFF_FFFF)),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2);
    assert!(ok(&["dump", file, &format!("{:#x}", view_a + 0x600), "16"]).contains("|step "));
}

/// Two snapshots of the file: the library's changes.
fn diff_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    let (a, b) = (timeline_snapshot(&d.file, "step-11"), timeline_snapshot(&d.file, "branch-3"));
    let library = a.diff(&b);
    let diff = json(&["diff", file, "--from", "step-11", "--to", "branch-3"]);
    let pages = diff["page_changes"].as_array().unwrap();
    assert_eq!(pages.len(), library.changed_pages().len());
    assert_eq!(diff["region_changes"].as_array().unwrap().len(), library.region_changes().len());
    for (p, c) in pages.iter().zip(library.page_changes()) {
        assert_eq!(p["address"], c.address());
        assert_eq!(p["ranges"].as_array().unwrap().len(), c.byte_ranges().len());
    }
    let text = ok(&["diff", file, "--from", "step-11", "--to", "branch-3"]);
    assert!(text.contains("pages changed") && text.contains(" - ") && text.contains(" + "), "{text}");
    // With one file and no --from: the head against its parent.
    assert!(ok(&["diff", file]).contains("#14 branch-2 → "), "head's parent");
}

fn verify_and_stats_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    assert!(ok(&["verify", file]).starts_with("OK "));
    assert_eq!(json(&["verify", file])["ok"], true);
    let stats = json(&["stats", file, "--snapshot", "branch-3"]);
    let library = timeline_snapshot(&d.file, "branch-3").compute_memory_stats();
    assert_eq!(stats["committed_bytes"], library.committed_memory);
    assert_eq!(stats["reserved_bytes"], library.reserved_memory);
    assert_eq!(stats["allocations"], library.allocation_count);
    assert!(ok(&["stats", file]).contains("Image"));
}

/// The timeline rewritten, still 15 snapshots; one snapshot taken out.
fn rebase_of_the_demo_file(d: &Demo) {
    let file = s(&d.file);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.vmsnap");
    ok(&["rebase", file, s(&copy)]);
    assert_eq!(json(&["info", s(&copy)])["snapshot_count"], 15);
    let one = dir.path().join("one.vmsnap");
    ok(&["rebase", file, s(&one), "--snapshot", "step-6"]);
    let step6 = timeline_snapshot(&d.file, "step-6");
    assert!(vmsnap::file::load(&one).unwrap().diff(&step6).is_empty());
    assert_eq!(json(&["info", s(&one)])["kind"], "snapshot");
}

#[test]
fn diff_and_rebase_of_the_demo_files() {
    let d = demo();
    let (base, branch) = (s(&d.base), s(&d.branch));
    let (a, b) = (vmsnap::file::load(&d.base).unwrap(), vmsnap::file::load(&d.branch).unwrap());
    let library = a.diff(&b);
    let diff = json(&["diff", base, branch]);
    assert_eq!(diff["page_changes"].as_array().unwrap().len(), library.changed_pages().len());
    assert_eq!(diff["region_changes"].as_array().unwrap().len(), library.region_changes().len());
    assert_eq!(json(&["info", branch])["kind"], "incremental snapshot");
    assert_eq!(json(&["verify", branch])["files"].as_array().unwrap().len(), 2, "the parent checked too");

    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged.vmsnap");
    ok(&["rebase", branch, s(&merged)]);
    let info = json(&["info", s(&merged)]);
    assert_eq!((info["kind"].as_str(), info["parent"].is_null()), (Some("snapshot"), true));
    assert!(vmsnap::file::load(&merged).unwrap().diff(&b).is_empty());
}

#[test]
fn the_map_is_well_formed_svg_with_one_shape_per_region() {
    let d = demo();
    let dir = tempfile::tempdir().unwrap();
    for snapshot in ["step-0", "branch-3"] {
        let svg = dir.path().join(format!("{snapshot}.svg"));
        let out = json(&["map", s(&d.file), "--svg", s(&svg), "--snapshot", snapshot]);
        let text = std::fs::read_to_string(&svg).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert_eq!(doc.root_element().tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
        let expected = library_regions(&timeline_snapshot(&d.file, snapshot));
        let of_class = |class: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some(class))
                .collect::<Vec<_>>()
        };
        let regions = of_class("region");
        let free = of_class("free");
        assert_eq!(regions.len(), expected.iter().filter(|r| r.is_reserved).count());
        assert_eq!(free.len(), expected.iter().filter(|r| !r.is_reserved).count());
        assert_eq!(out["regions"], regions.len());
        for (rect, r) in regions.iter().zip(expected.iter().filter(|r| r.is_reserved)) {
            let title = rect.children().find(|n| n.has_tag_name("title")).expect("a tooltip").text().unwrap();
            assert!(
                title.starts_with(&format!("{:08x}`{:08x}", r.start >> 32, r.start & 0xFFFF_FFFF)),
                "{title}"
            );
        }
        assert!(text.contains("00000001`40000000"), "addresses labelled in hex");
    }
}

/// A one-snapshot file, an incremental child of it, and a self-check.
fn library_files(dir: &Path) -> (PathBuf, PathBuf) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x40000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    for p in 0..32u64 {
        mm.write_memory(0x10000 + p * PAGE_SIZE, &[p as u8 + 1; 300]).unwrap();
    }
    let parent = dir.join("parent.vmsnap");
    vmsnap::file::save(&mm.snapshot(), &parent).unwrap();
    mm.write_memory(0x10000, b"changed in the child").unwrap();
    let child = dir.join("child.vmsnap");
    vmsnap::file::save_incremental(&mm.snapshot(), &parent, &child).unwrap();
    (parent, child)
}

#[test]
fn rebase_merges_an_incremental_file_made_by_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (_, child) = library_files(dir.path());
    let out = dir.path().join("merged.vmsnap");
    let text = ok(&["rebase", s(&child), s(&out)]);
    assert!(text.contains("parent chain merged"), "{text}");
    assert!(vmsnap::file::load(&out).unwrap().diff(&vmsnap::file::load(&child).unwrap()).is_empty());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        vmsnap::file::to_bytes(&vmsnap::file::load(&child).unwrap()).unwrap()
    );
    assert!(ok(&["verify", s(&out)]).starts_with("OK"));
}

#[test]
fn corrupt_files_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, child) = library_files(dir.path());
    let bytes = std::fs::read(&parent).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut flipped = bytes.clone();
    flipped[100] ^= 0x10; // inside the first frame
    let flipped = write("flipped.vmsnap", &flipped);
    let truncated = write("truncated.vmsnap", &bytes[..bytes.len() - 7]);
    let mut magic = bytes.clone();
    magic[1] = b'X';
    let magic = write("magic.vmsnap", &magic);
    let text = write("text.vmsnap", b"hello, I am not a snapshot\n");

    let err = fails(&["verify", s(&flipped)]);
    assert!(err.contains("flipped.vmsnap") && err.contains("frame 0 is corrupt"), "{err}");
    let err = fails(&["verify", s(&truncated)]);
    assert!(err.contains("truncated file"), "{err}");
    let err = fails(&["verify", s(&magic)]);
    assert!(err.contains("bad magic"), "{err}");
    assert!(fails(&["info", s(&text)]).contains("bad magic"));
    let err = fails(&["verify", s(&dir.path().join("absent.vmsnap"))]);
    assert!(err.contains("absent.vmsnap"), "{err}");

    // Every reading command refuses a damaged header or index the same way.
    for cmd in [&["info"][..], &["regions"], &["stats"], &["dump", "_", "0x10000", "16"]] {
        for f in [&truncated, &magic] {
            let mut args = cmd.to_vec();
            if args.len() > 1 {
                args[1] = s(f);
            } else {
                args.push(s(f));
            }
            fails(&args);
        }
    }
    // A damaged frame: files open lazily, so the commands that read only
    // the header and the index (info, regions, stats) still answer, and the
    // first one that needs a page of that frame fails with the reason.
    for cmd in ["info", "regions", "stats"] {
        ok(&[cmd, s(&flipped)]);
    }
    let err = fails(&["dump", s(&flipped), "0x10000", "16"]);
    assert!(err.contains("flipped.vmsnap") && err.contains("frame 0 is corrupt"), "{err}");

    // A missing parent.
    std::fs::remove_file(&parent).unwrap();
    let err = fails(&["verify", s(&child)]);
    assert!(err.contains("parent file") && err.contains("parent.vmsnap") && err.contains("missing"), "{err}");
    fails(&["rebase", s(&child), s(&dir.path().join("out.vmsnap"))]);
    // info still describes the child and names the parent it needs.
    assert_eq!(json(&["info", s(&child)])["parent"]["file_name_hint"], "parent.vmsnap");
}

#[test]
fn bad_requests_fail_cleanly() {
    let d = demo();
    let file = s(&d.file);
    let err = fails(&["regions", file, "--snapshot", "no-such-step"]);
    assert!(err.contains("no snapshot \"no-such-step\""), "{err}");
    let err = fails(&["dump", file, "0x10000", "16"]);
    assert!(err.contains("not readable") && err.contains("memory at 0x10000 is not allocated"), "{err}");
    fails(&["dump", file, "0x10000", "0"]);
    // Usage errors are clap's: exit code 2.
    assert_eq!(vmsnap(&["dump", file, "zz", "16"]).status.code(), Some(2));
    assert_eq!(vmsnap(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(vmsnap(&[]).status.code(), Some(2));
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands =
        ["info", "regions", "dump", "diff", "verify", "stats", "rebase", "map", "demo", "fuzz-demo"];
    let top = ok(&["--help"]);
    for c in commands {
        assert!(top.contains(c), "{c} missing from --help");
        let help = ok(&[c, "--help"]);
        assert!(help.contains("Example:") && help.contains(&format!("vmsnap {c}")), "{c}: {help}");
    }
    assert!(top.contains("Example:"));
}

#[test]
fn fuzz_demo_compares_resets_with_both_baselines() {
    let out = json(&["fuzz-demo", "--memory-mib", "2", "--dirty", "1,8", "--iterations", "50"]);
    assert_eq!(out["memory_bytes"], 2 << 20);
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["dirty_pages"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 8]);
    for r in rows {
        for key in ["vmsnap_resets_per_second", "dirty_list_resets_per_second", "full_copy_resets_per_second"]
        {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key}");
        }
    }
    let text = ok(&["fuzz-demo", "--memory-mib", "1", "--dirty", "4", "--iterations", "20"]);
    assert!(text.contains("dirty-list/s") && text.contains("full-copy/s"), "{text}");
    fails(&["fuzz-demo", "--memory-mib", "1", "--dirty", "100000"]);
}

#[test]
fn snapshot_selector_hash_n_is_always_an_id_and_a_name_never_shadows_one() {
    // #12 item 9: `--snapshot 2` picked the snapshot *named* "2" over id #2.
    // Timeline: #1 (no name), #2 named "3", #3 named "x", #4 named "9".
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.vmsnap");
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x1000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let mut t = vmsnap::Timeline::new();
    t.take(&mut mm, None).unwrap();
    t.take(&mut mm, Some("3")).unwrap();
    t.take(&mut mm, Some("x")).unwrap();
    t.take(&mut mm, Some("9")).unwrap();
    assert_eq!(
        t.take(&mut mm, Some("#1")),
        Err(vmsnap::TimelineError::ReservedName("#1".into())),
        "names cannot start with '#'"
    );
    vmsnap::file::save_timeline(&t, &path).unwrap();
    let file = s(&path);
    let pick = |sel: &str| json(&["regions", file, "--snapshot", sel])["snapshot"].as_u64().unwrap();
    assert_eq!(pick("3"), 3, "a bare number is the id when the file has it, not the snapshot named \"3\"");
    assert_eq!(pick("#3"), 3);
    assert_eq!(pick("#2"), 2);
    assert_eq!(pick("x"), 3);
    assert_eq!(pick("9"), 4, "a bare number with no such id is the name");
    let err = fails(&["regions", file, "--snapshot", "#9"]);
    assert!(err.contains("no snapshot \"#9\""), "#N never falls back to a name: {err}");
    let err = fails(&["regions", file, "--snapshot", "#x"]);
    assert!(err.contains("an id is #N"), "{err}");
}

#[test]
fn the_demo_files_show_the_kuser_page_as_mmio() {
    // #13 item 6: the KUSER_SHARED_DATA page is saved as layout; a loaded
    // file shows it as the MMIO region it was, not as free memory.
    let d = demo();
    for (file, snapshot) in [(&d.file, Some("step-6")), (&d.file, None), (&d.base, None), (&d.branch, None)] {
        let mut args = vec!["regions", s(file)];
        args.extend(snapshot.map(|n| ["--snapshot", n]).iter().flatten());
        let regions = json(&args);
        let rows = regions["regions"].as_array().unwrap();
        let kuser = rows.iter().find(|r| r["base"] == 0x7ffe_0000u64).unwrap_or_else(|| panic!("{args:?}"));
        assert_eq!(
            (kuser["kind"].as_str(), kuser["state"].as_str(), kuser["size"].as_u64()),
            (Some("Mmio"), Some("MEM_COMMIT"), Some(PAGE_SIZE)),
            "{args:?}: {kuser}"
        );
        assert_eq!(kuser["protect_name"], "PAGE_READWRITE", "{args:?}");
    }
    let text = ok(&["regions", s(&d.file)]);
    let line = text.lines().find(|l| l.starts_with("00000000`7ffe0000")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("MEM_COMMIT") && line.contains("Mmio"), "{line}");
    // Its bytes come from handlers a file cannot hold: dump says so.
    let err = fails(&["dump", s(&d.file), "0x7ffe0000", "16"]);
    assert!(
        err.contains("not readable") && err.contains("no MMIO handlers are bound at 0x7ffe0000"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("map.svg");
    ok(&["map", s(&d.file), "--svg", s(&svg)]);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(picture.matches(r#"class="region" data-kind="Mmio""#).count(), 1, "one MMIO region drawn");
}
