//! Text and JSON say the same figures. Each command runs twice on the
//! demo's files (or files the library writes), without `--json` and with
//! it; every figure the text shows is taken from the JSON (parsed with
//! serde_json), written the way the text writes it (sizes as `4.2 MiB`,
//! addresses as `00000001`00000000`, …) and looked up in the text.
//!
//! Timings differ from run to run, so they cannot be compared across the
//! two runs: where the JSON has seconds, the text must show a duration
//! (`5.8 ms`) at that place; the ratios of two timings are checked within
//! one run.

mod common;

use common::{demo, demo_args, json, ok, s};
use serde_json::Value;

// ------------------------------------------------------------- helpers ----

/// Runs `args` without `--json` and with it.
fn both(args: &[&str]) -> (String, Value) {
    (ok(args), json(args))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Asserts `a` and `b` are equal but for the last bits: serde_json reads
/// a float back to within an ulp or so, not always exactly.
#[track_caller]
fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-12 * a.abs().max(b.abs()), "{a} != {b}");
}

fn st(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// A line with its runs of spaces (the text's column padding) made one.
fn squash(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text's lines, squashed.
fn lines(text: &str) -> Vec<String> {
    text.lines().map(squash).collect()
}

/// Asserts a line of `text` is `line` (padding aside).
#[track_caller]
fn has_line(text: &str, line: &str) {
    let line = squash(line);
    assert!(lines(text).contains(&line), "{line:?} missing from:\n{text}");
}

/// Asserts a line of `text` reads `parts[0] D parts[1] D … parts[n]`
/// (padding aside), each `D` a duration as the text writes them (`120 ns`,
/// `3.4 µs`, `12.0 ms`, `1.20 s`).
#[track_caller]
fn has_timed_line(text: &str, parts: &[&str]) {
    let parts: Vec<String> = parts.iter().map(|p| squash_inner(p)).collect();
    let matches = |line: &String| {
        let Some(mut rest) = line.strip_prefix(parts[0].as_str()) else { return false };
        for part in &parts[1..] {
            match after_duration(rest, part) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    };
    assert!(lines(text).iter().any(matches), "no line {parts:?} (durations between) in:\n{text}");
}

/// `part` with runs of spaces made one, a space at either end kept.
fn squash_inner(part: &str) -> String {
    let lead = if part.starts_with(' ') { " " } else { "" };
    let trail = if part.ends_with(' ') && !part.trim().is_empty() { " " } else { "" };
    format!("{lead}{}{trail}", squash(part))
}

/// What follows `N unit` + `part` at the start of `text`, if it starts so.
fn after_duration<'t>(text: &'t str, part: &str) -> Option<&'t str> {
    let (number, rest) = text.split_once(' ')?;
    number.parse::<f64>().ok()?;
    ["ns", "µs", "ms", "s"].iter().find_map(|unit| rest.strip_prefix(unit)?.strip_prefix(part))
}

/// `1.5 MiB`, `4 KiB`, `512 B`: sizes as the text writes them.
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if unit == 0 || value.fract() == 0.0 { 0 } else { 1 };
    format!("{value:.decimals$} {}", units[unit])
}

/// `00000001`40000000`: addresses as WinDbg and the text write them.
fn windbg(address: u64) -> String {
    format!("{:08x}`{:08x}", address >> 32, address & 0xFFFF_FFFF)
}

/// `#id name`, or `#id` for a snapshot without a name.
fn label(id: &Value, name: &Value) -> String {
    match name.as_str() {
        Some(n) => format!("#{} {n}", u(id)),
        None => format!("#{}", u(id)),
    }
}

/// Lowercase hex digits as bytes.
fn unhex(digits: &str) -> Vec<u8> {
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
}

/// Bytes as the text writes them: hex pairs separated by spaces.
fn spaced_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- info ----

#[test]
fn info_text_shows_the_json_figures() {
    let d = demo();
    for file in [&d.file, &d.branch, &d.base] {
        let (text, j) = both(&["info", s(file)]);
        info_summary(&text, &j);
        info_table(&text, &j);
        info_timeline(&text, &j);
    }
    // A long timeline: the table shows its first and last 12 rows.
    let long = d.dir.path().join("long.vmsnap");
    long_timeline(&long, 30);
    let (text, j) = both(&["info", s(&long)]);
    info_summary(&text, &j);
    info_table(&text, &j);
    info_timeline(&text, &j);
}

fn info_summary(text: &str, j: &Value) {
    has_line(text, &format!("{}: vmsnap {} (format {})", st(&j["file"]), st(&j["kind"]), st(&j["format"])));
    let sizes = ["file_bytes", "header_bytes", "frames_bytes", "index_bytes"].map(|k| size(u(&j[k])));
    has_line(
        text,
        &format!("file {} = header {} + frames {} + index {}", sizes[0], sizes[1], sizes[2], sizes[3]),
    );
    let incremental = if j["incremental"] == true { " (incremental)" } else { "" };
    has_line(text, &format!("flags {:#x}{incremental}", u(&j["flags"])));
    assert_eq!(j["incremental"], j["parent"].is_object());
    if j["parent"].is_object() {
        let (hint, hash) = (st(&j["parent"]["file_name_hint"]), st(&j["parent"]["index_hash"]));
        has_line(text, &format!("parent {hint} (index BLAKE3 {}…)", &hash[..16]));
    }
    let inherited = match u(&j["inherited_pages"]) {
        0 => String::new(),
        n => format!(", {n} pages inherited from the parent"),
    };
    let counts = ["snapshot_count", "page_references", "unique_pages", "frames", "xor_pages", "zero_pages"]
        .map(|k| u(&j[k]));
    has_line(
        text,
        &format!(
            "{} snapshots, {} page references, {} unique pages in {} frames ({} xor), {} zero pages stored as nothing{inherited}",
            counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
        ),
    );
    has_line(
        text,
        &format!(
            "raw {} → unique {} → stored {}: dedup {:.2}x, compression {:.2}x, overall {:.2}x",
            size(u(&j["raw_bytes"])),
            size(u(&j["unique_bytes"])),
            size(u(&j["stored_bytes"])),
            f(&j["dedup_ratio"]),
            f(&j["compression_ratio"]),
            f(&j["overall_ratio"])
        ),
    );
}

/// Every row of the snapshot table, or the first and last 12 of a long one.
fn info_table(text: &str, j: &Value) {
    let snapshots = list(&j["snapshots"]);
    assert_eq!(snapshots.len() as u64, u(&j["snapshot_count"]));
    let n = snapshots.len();
    let row = |s: &Value| {
        format!(
            "#{} {} {} {} {} {} {} {}",
            u(&s["id"]),
            s["name"].as_str().unwrap_or("-"),
            s["parent"].as_u64().map_or("-".to_owned(), |p| format!("#{p}")),
            u(&s["layout_version"]),
            u(&s["allocations"]),
            size(u(&s["committed_pages"]) * 4096),
            u(&s["stored_pages"]) + u(&s["inherited_pages"]),
            u(&s["zero_pages"])
        )
    };
    let all = lines(text);
    for (i, s) in snapshots.iter().enumerate() {
        let shown = n <= 24 || !(12..n - 12).contains(&i);
        assert_eq!(all.contains(&squash(&row(s))), shown, "row {i} of {n}: {}\n{text}", row(s));
    }
    if n > 24 {
        has_line(text, &format!("... {} more ...", n - 24));
    }
}

/// The timeline tree: one line per straight line of the JSON's timeline,
/// indented by its depth.
fn info_timeline(text: &str, j: &Value) {
    let snapshots = list(&j["snapshots"]);
    let name = |id: &Value| label(id, &snapshots.iter().find(|s| s["id"] == *id).unwrap()["name"]);
    let timeline = list(&j["timeline"]);
    let total: u64 = timeline.iter().map(|l| u(&l["snapshots"])).sum();
    assert_eq!(total, snapshots.len() as u64, "every snapshot on one line");
    if snapshots.len() < 2 {
        assert!(!text.contains("timeline:"), "{text}");
        return;
    }
    let raw: Vec<&str> = text.lines().collect();
    for line in timeline {
        let depth = u(&line["depth"]) as usize;
        let (pad, branch) = ("  ".repeat(depth), if depth > 0 { "└─ " } else { "" });
        let from = line["branched_from"].as_u64().map(|p| format!("branched from #{p}"));
        let (first, n) = (name(&line["first"]), u(&line["snapshots"]));
        let expected = if n == 1 {
            format!("  {pad}{branch}{first}{}", from.map(|f| format!(" ({f})")).unwrap_or_default())
        } else {
            let from = from.map(|f| format!(", {f}")).unwrap_or_default();
            format!("  {pad}{branch}{first} → {} ({n} snapshots{from})", name(&line["last"]))
        };
        assert!(raw.contains(&expected.as_str()), "{expected:?} missing from:\n{text}");
    }
}

/// A timeline of `count` snapshots on one line, written by the library.
fn long_timeline(path: &std::path::Path, count: u64) {
    let mut mm = vmsnap::MemoryManager::new();
    let rw = vmsnap::Protection::READ_WRITE;
    mm.allocate_memory_at(0x10000, 0x10000, rw, false, vmsnap::RegionKind::Private).unwrap();
    let mut t = vmsnap::Timeline::new();
    for n in 0..count {
        mm.write_memory(0x10000 + (n % 16) * 4096, &n.to_le_bytes()).unwrap();
        t.take(&mut mm, Some(&format!("s{n}"))).unwrap();
    }
    vmsnap::file::save_timeline(&t, path).unwrap();
}

// ------------------------------------------------------------- regions ----

#[test]
fn regions_text_shows_the_json_figures() {
    let d = demo();
    let file = s(&d.file);
    for args in [
        &["regions", file, "--snapshot", "step-6"][..],
        &["regions", file, "--no-free"],
        &["regions", s(&d.branch)],
    ] {
        let (text, j) = both(args);
        let all: Vec<&str> = text.lines().collect();
        assert_eq!(all[0], format!("{} {}", st(&j["file"]), label(&j["snapshot"], &j["name"])));
        let rows = list(&j["regions"]);
        assert_eq!(all.len(), rows.len() + 3, "title, header, one line per region, count:\n{text}");
        for (line, r) in all[2..].iter().zip(rows) {
            let free = r["state"] == "MEM_FREE";
            let expected = format!(
                "{} {} {} {} {} {} {}",
                windbg(u(&r["base"])),
                windbg(u(&r["end"])),
                windbg(u(&r["size"])),
                st(&r["state"]),
                st(&r["protect_name"]),
                st(&r["type"]),
                if free { "" } else { st(&r["kind"]) }
            );
            assert_eq!(squash(line), squash(&expected));
        }
        let allocated = u(&j["allocated_regions"]);
        assert_eq!(allocated as usize, rows.iter().filter(|r| r["state"] != "MEM_FREE").count());
        assert_eq!(all[all.len() - 1], format!("{} regions ({allocated} in allocations)", rows.len()));
    }
}

// ---------------------------------------------------------------- dump ----

#[test]
fn dump_text_shows_the_json_bytes() {
    let d = demo();
    let file = s(&d.file);
    let r = &d.report;
    // The end of the heap's committed part (then reserved pages, unreadable),
    // and view A from an unaligned address.
    let heap_end = u(&r["heap"]) + u(&r["heap_committed_bytes"]);
    let view_a = u(&r["view_a"]);
    for (address, length, snapshot) in [(heap_end - 0x18, 0x30, "branch-3"), (view_a + 3, 40, "step-6")] {
        let (address, length) = (format!("{address:#x}"), length.to_string());
        let (text, j) = both(&["dump", file, &address, &length, "--snapshot", snapshot]);
        assert_eq!((st(&j["file"]), st(&j["name"])), (file, snapshot));
        let bytes = unhex(st(&j["hex"]));
        assert_eq!(bytes.len() as u64, u(&j["length"]));
        let unreadable: Vec<(u64, u64)> =
            list(&j["unreadable"]).iter().map(|r| (u(&r["start"]), u(&r["end"]))).collect();
        let start = u(&j["address"]);
        let expected: Vec<(u64, Option<u8>)> = (start..)
            .zip(&bytes)
            .map(|(a, &b)| (a, (!unreadable.iter().any(|r| r.0 <= a && a < r.1)).then_some(b)))
            .collect();
        assert_eq!(hexdump_cells(&text), expected, "{text}");
    }
    assert!(text_of_heap_end_has_unreadable_bytes(file, heap_end));
}

/// The cells of a hexdump: each shown byte's address and value (`None`
/// for `??`), checked against its ASCII column.
fn hexdump_cells(text: &str) -> Vec<(u64, Option<u8>)> {
    let mut cells = Vec::new();
    for line in text.lines() {
        let at = u64::from_str_radix(&line[..17].replace('`', ""), 16).unwrap();
        let ascii: Vec<char> =
            line[line.find(" |").unwrap() + 2..].strip_suffix('|').unwrap().chars().collect();
        assert_eq!(ascii.len(), 16, "{line}");
        for (i, &ascii) in ascii.iter().enumerate() {
            let column = 19 + 3 * i + usize::from(i >= 8);
            let cell = &line[column..column + 2];
            let value = match cell {
                "  " => continue,
                "??" => None,
                hex => Some(u8::from_str_radix(hex, 16).unwrap()),
            };
            let shown =
                value.map_or('?', |b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
            assert_eq!(ascii, shown, "{line}");
            cells.push((at + i as u64, value));
        }
    }
    cells
}

/// True when the dump across the heap's end shows `??` (the test above
/// would pass on a file with no unreadable page otherwise).
fn text_of_heap_end_has_unreadable_bytes(file: &str, heap_end: u64) -> bool {
    ok(&["dump", file, &format!("{:#x}", heap_end - 16), "32"]).contains("??")
}

// ---------------------------------------------------------------- diff ----

#[test]
fn diff_text_shows_the_json_figures() {
    let d = demo();
    let (file, base, branch) = (s(&d.file), s(&d.base), s(&d.branch));
    for (args, max_pages) in [
        (&["diff", file, "--from", "step-2", "--to", "step-9", "--max-pages", "2"][..], 2),
        (&["diff", file, "--from", "step-11", "--to", "branch-3"], 16),
        (&["diff", base, branch], 16),
        (&["diff", file], 16),
    ] {
        let (text, j) = both(args);
        let (from, to) = (&j["from"], &j["to"]);
        let title = format!(
            "diff {} {} → {} {}",
            st(&from["file"]),
            label(&from["snapshot"], &from["name"]),
            st(&to["file"]),
            label(&to["snapshot"], &to["name"])
        );
        assert_eq!(text.lines().next(), Some(title.as_str()));
        let (changes, pages) = (list(&j["region_changes"]), list(&j["page_changes"]));
        let changed = u(&j["changed_pages"]) as usize;
        assert_eq!(pages.len(), changed, "the JSON lists every changed page");
        has_timed_line(
            &text,
            &[&format!("{} region changes, {changed} pages changed (", changes.len()), " to compute)"],
        );
        let mut expected: Vec<String> = Vec::new();
        if !changes.is_empty() {
            expected.extend(["".into(), "regions:".into()]);
            expected.extend(changes.iter().map(region_change_line));
        }
        let shown = changed.min(max_pages);
        if shown > 0 {
            expected.extend(["".into(), "pages:".into()]);
        }
        for page in &pages[..shown] {
            expected.extend(page_lines(page));
        }
        if changed > shown {
            expected.push(format!("... and {} more pages (--max-pages, or --json for all)", changed - shown));
        }
        // After the title and the counts, the text is exactly that.
        let expected: Vec<String> = expected.iter().map(|l| squash(l)).collect();
        assert_eq!(lines(&text)[2..], expected, "{text}");
    }
}

/// A layout change's line, from its JSON.
fn region_change_line(c: &Value) -> String {
    let (at, length) = (windbg(u(&c["address"])), size(u(&c["length"])));
    match st(&c["change"]) {
        "allocated" => format!("+ allocated {at} {length} {} {}", st(&c["kind"]), st(&c["protection"])),
        "released" => format!("- released {at} {length} {}", st(&c["kind"])),
        "committed" => format!("+ committed {at} {length} {}", st(&c["protection"])),
        "decommitted" => format!("- decommitted {at} {length}"),
        "protection" => format!("~ protection {at} {length} {} -> {}", st(&c["old"]), st(&c["new"])),
        other => panic!("unknown change {other:?}"),
    }
}

/// A changed page's lines, from its JSON: the page, then up to 8 pairs of
/// old and new hex lines of 16 bytes.
fn page_lines(page: &Value) -> Vec<String> {
    let ranges = list(&page["ranges"]);
    let bytes: usize = ranges.iter().map(|r| (u(&r["end"]) - u(&r["start"])) as usize).sum();
    let listed: Vec<String> =
        ranges.iter().take(8).map(|r| format!("{:#x}..{:#x}", u(&r["start"]), u(&r["end"]))).collect();
    let more = if ranges.len() > 8 { " ..." } else { "" };
    let (address, kind, n) = (windbg(u(&page["address"])), st(&page["kind"]), ranges.len());
    let mut out = vec![format!("{address} {kind} {bytes} bytes in {n} ranges: {}{more}", listed.join(" "))];
    if ranges.is_empty() {
        out.push("(reads zeros in both versions)".into());
    }
    let mut hex_lines = 0;
    for r in ranges {
        let (old, new) = (unhex(st(&r["old"])), unhex(st(&r["new"])));
        assert_eq!(old.len() as u64, u(&r["end"]) - u(&r["start"]));
        for (i, (o, n)) in old.chunks(16).zip(new.chunks(16)).enumerate().take(8 - hex_lines) {
            let at = u(&r["start"]) as usize + 16 * i;
            out.push(format!("+{at:03x} - {}", spaced_hex(o)));
            out.push(format!("+{at:03x} + {}", spaced_hex(n)));
            hex_lines += 1;
        }
    }
    if hex_lines == 8 {
        out.push("...".into());
    }
    out
}

// -------------------------------------------------------------- verify ----

#[test]
fn verify_text_shows_the_json_figures() {
    let d = demo();
    for file in [&d.file, &d.branch] {
        let (text, j) = both(&["verify", s(file)]);
        assert_eq!(j["ok"], true);
        let files = list(&j["files"]);
        assert_eq!(st(&files[0]), st(&j["file"]));
        let before = format!(
            "OK {}: header and index checksums, {} frames, {} page hashes (BLAKE3), {} snapshot layouts checked in ",
            st(&j["file"]),
            u(&j["frames_checked"]),
            u(&j["pages_checked"]),
            u(&j["snapshots"])
        );
        has_timed_line(&text, &[&before, ""]);
        assert!(f(&j["seconds"]) > 0.0);
        let parents: Vec<String> = files[1..].iter().map(|p| format!("   parent {} OK", st(p))).collect();
        assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), parents, "{text}");
    }
}

// --------------------------------------------------------------- stats ----

#[test]
fn stats_text_shows_the_json_figures() {
    let d = demo();
    let file = s(&d.file);
    for args in [&["stats", file][..], &["stats", file, "--snapshot", "step-3"], &["stats", s(&d.branch)]] {
        let (text, j) = both(args);
        let versions = list(&j["versions"]);
        let private: u64 = versions.iter().map(|v| u(&v["private_bytes"])).sum();
        assert_eq!(u(&j["single_version_bytes"]), private);
        let mut expected = vec![
            format!("{} {}", st(&j["file"]), label(&j["snapshot"], &j["name"])),
            format!(
                "  reserved {}, committed {}, {} allocations",
                size(u(&j["reserved_bytes"])),
                size(u(&j["committed_bytes"])),
                u(&j["allocations"])
            ),
            format!(
                "  stored pages: {} private to this version, {} shared with the file's other {} versions",
                size(u(&j["private_bytes"])),
                size(u(&j["shared_bytes"])),
                versions.len() - 1
            ),
            String::new(),
            "kind allocs reserved committed".to_owned(),
        ];
        for (kind, k) in j["by_kind"].as_object().unwrap() {
            let (reserved, committed) = (size(u(&k["reserved_bytes"])), size(u(&k["committed_bytes"])));
            expected.push(format!("{kind} {} {reserved} {committed}", u(&k["allocations"])));
        }
        if versions.len() > 1 {
            expected.push(String::new());
            expected.push(format!(
                "{} versions in the file; pages held by a single version (what removing it would free): {}",
                versions.len(),
                size(private)
            ));
        }
        let expected: Vec<String> = expected.iter().map(|l| squash(l)).collect();
        assert_eq!(lines(&text), expected, "{text}");
    }
}

// -------------------------------------------------------------- rebase ----

#[test]
fn rebase_text_shows_the_json_figures() {
    let d = demo();
    let (file, base, branch) = (s(&d.file), s(&d.base), s(&d.branch));
    let out = d.dir.path().join("out.vmsnap");
    for (args, content) in [
        (&["rebase", branch, s(&out)][..], "the parent chain merged"),
        (&["rebase", file, s(&out), "--snapshot", "step-6"], "snapshot #7 step-6"),
        (&["rebase", file, s(&out)], "timeline of 15 snapshots, already self-contained: rewritten"),
        (&["rebase", base, s(&out)], "already self-contained: rewritten"),
    ] {
        // The same output twice: the second run rewrites the first's file.
        let (text, j) = both(args);
        assert_eq!((st(&j["out"]), st(&j["content"])), (s(&out), content));
        assert_eq!(u(&j["bytes"]), std::fs::metadata(&out).unwrap().len());
        assert_eq!(u(&j["input_bytes"]), std::fs::metadata(args[1]).unwrap().len());
        let (input, written) = (size(u(&j["input_bytes"])), size(u(&j["bytes"])));
        assert_eq!(text, format!("wrote {} (self-contained): {content} ({input} → {written})\n", s(&out)));
    }
}

// ----------------------------------------------------------------- map ----

#[test]
fn map_text_shows_the_json_figures() {
    let d = demo();
    let file = s(&d.file);
    let svg = d.dir.path().join("map.svg");
    for snapshot in ["step-0", "branch-3"] {
        let (text, j) = both(&["map", file, "--svg", s(&svg), "--snapshot", snapshot]);
        assert_eq!(st(&j["svg"]), s(&svg));
        let (regions, free) = (u(&j["regions"]), u(&j["free_regions"]));
        let expected = format!(
            "wrote {}: {regions} regions, {free} free gaps (open it in a browser; hover a region for details)\n",
            s(&svg)
        );
        assert_eq!(text, expected);
        // The counts are the region table's.
        let table = json(&["regions", file, "--snapshot", snapshot]);
        assert_eq!(regions, u(&table["allocated_regions"]));
        assert_eq!(regions + free, list(&table["regions"]).len() as u64);
    }
}

// ---------------------------------------------------------------- demo ----

/// The demo is deterministic (a fixed seed) but for its timings: the text
/// of a second run with the same arguments shows the first run's figures.
#[test]
fn demo_text_shows_the_json_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.vmsnap");
    let (text, j) = both(&demo_args(&out));
    has_line(
        &text,
        &format!(
            "vmsnap demo: a rewindable Windows-like process, {} steps ({} build)",
            u(&j["steps"]),
            st(&j["build"])
        ),
    );
    demo_setup(&text, &j);
    demo_run(&text, &j);
    demo_files(&text, &j);
    demo_timings(&text, &j);
    let (file, tip) = (st(&j["timeline_file"]), st(&j["branch_tip"]));
    assert_eq!(file, s(&out));
    has_line(&text, &format!("vmsnap regions {file} --snapshot {}", st(&j["rewound_to"])));
    has_line(&text, &format!("vmsnap dump {file} {:#x} 64 --snapshot {tip}", u(&j["view_a"])));
    has_line(&text, &format!("vmsnap diff {file} --from {} --to {tip}", st(&j["main_tip"])));
    has_line(&text, &format!("vmsnap diff {} {}", st(&j["base_file"]), st(&j["incremental_file"])));
    has_line(&text, &format!("vmsnap verify {}", st(&j["incremental_file"])));
}

fn demo_setup(text: &str, j: &Value) {
    let sections: Vec<&str> = list(&j["image_sections"]).iter().map(st).collect();
    has_line(
        text,
        &format!(
            "image demo.exe ({} bytes of PE written in memory) at {:#x}, {} mapped, entry {:#x}: {}",
            u(&j["image_file_bytes"]),
            u(&j["image_base"]),
            size(u(&j["image_bytes"])),
            u(&j["entry_point"]),
            sections.join(", ")
        ),
    );
    let (reserved, committed) = (size(u(&j["heap_reserved_bytes"])), size(u(&j["heap_committed_bytes"])));
    has_line(
        text,
        &format!(
            "heap {:#x}: {reserved} reserved, {committed} committed (NtAllocateVirtualMemory)",
            u(&j["heap"])
        ),
    );
    has_line(
        text,
        &format!(
            "stack {:#x}..{:#x}: {} reserved, {} committed at the top, a guard page at {:#x}",
            u(&j["stack_base"]),
            u(&j["stack_top"]),
            size(u(&j["stack_reserved_bytes"])),
            size(u(&j["stack_committed_bytes"])),
            u(&j["guard_page"])
        ),
    );
    has_line(
        text,
        &format!(
            "kuser {:#x}: a KUSER_SHARED_DATA-style MMIO page; TickCount at +{:#x} computed on each read",
            u(&j["kuser"]),
            u(&j["kuser_tick_count_offset"])
        ),
    );
    let refused = if j["view_b_write_refused"] == true { "refused" } else { "allowed" };
    has_line(
        text,
        &format!(
            "section {} pagefile-backed, views at {:#x} (rw) and {:#x} (r): view B reads {:?}; a guest write through B is {refused}",
            size(u(&j["section_bytes"])),
            u(&j["view_a"]),
            u(&j["view_b"]),
            st(&j["view_b_reads"])
        ),
    );
    has_line(
        text,
        &format!(
            "guard first touch of {:#x}: {}; second: {}; the stack grew a page and a new guard page went in at {:#x}",
            u(&j["guard_page"]),
            st(&j["guard_first_touch"]),
            st(&j["guard_second_touch"]),
            u(&j["new_guard_page"])
        ),
    );
}

/// The run: the workload, the rewind and branch, the diffs.
fn demo_run(text: &str, j: &Value) {
    let run = format!(
        ", a snapshot after each (\"step-0\" .. \"{}\"): 4 heap objects, a stack frame, the tick read from KUSER, a message through view A and a .data global per step; arenas allocated: {}, released: {}; a heap page made read-only at step {}",
        st(&j["main_tip"]),
        u(&j["arenas_allocated"]),
        u(&j["arenas_released"]),
        u(&j["read_only_step"])
    );
    has_timed_line(text, &[&format!("{} steps in ", u(&j["steps"])), &run]);
    let rewound = st(&j["rewound_to"]);
    let after = format!(
        ": the heap's last tick reads {} again and both section views read step {}",
        u(&j["rewound_tick"]),
        u(&j["rewound_view_step"])
    );
    has_timed_line(text, &[&format!("rewound to {rewound} in "), &after]);
    has_line(
        text,
        &format!(
            "branched from {rewound}: {} more steps, \"branch-1\" .. \"{}\" ({} snapshots in the timeline)",
            u(&j["branch_steps"]),
            st(&j["branch_tip"]),
            u(&j["snapshots"])
        ),
    );
    let far = format!(
        "diff {} → {}: {} region changes, {} pages changed, in ",
        st(&j["diff_far_from"]),
        st(&j["diff_far_to"]),
        u(&j["diff_far_region_changes"]),
        u(&j["diff_far_pages"])
    );
    let page = &j["diff_far_heap_page"];
    let ranges: Vec<String> =
        list(&page["ranges"]).iter().map(|r| format!("{}..{}", u(&r["start"]), u(&r["end"]))).collect();
    let example = format!(
        "; e.g. the heap's first page at {:#x} differs in bytes [{}]",
        u(&page["address"]),
        ranges.join(", ")
    );
    has_timed_line(text, &[&far, &example]);
    let next = format!(
        "diff {} → {}: {} pages changed, in ",
        st(&j["diff_next_from"]),
        st(&j["diff_next_to"]),
        u(&j["diff_next_pages"])
    );
    has_timed_line(text, &[&next, " (read from the snapshot's change log)"]);
}

fn demo_files(text: &str, j: &Value) {
    let ratio = u(&j["full_copy_bytes"]) as f64 / u(&j["timeline_bytes"]) as f64;
    close(f(&j["full_copy_ratio"]), ratio);
    assert_eq!(u(&j["full_copy_bytes"]), u(&j["snapshots"]) * u(&j["committed_bytes"]));
    let timeline = format!(
        "timeline {}: {} snapshots, {} ({ratio:.0}x smaller than {} full copies of {} each); dedup {:.1}x, compression {:.2}x, saved in ",
        st(&j["timeline_file"]),
        u(&j["snapshots"]),
        size(u(&j["timeline_bytes"])),
        u(&j["snapshots"]),
        size(u(&j["committed_bytes"])),
        f(&j["dedup_ratio"]),
        f(&j["compression_ratio"])
    );
    has_timed_line(text, &[&timeline, ""]);
    let (base, tip) = (st(&j["base_snapshot"]), st(&j["incremental_snapshot"]));
    assert_eq!((base, tip), (st(&j["rewound_to"]), st(&j["branch_tip"])));
    has_line(text, &format!("base {}: {base} alone, {}", st(&j["base_file"]), size(u(&j["base_bytes"]))));
    has_line(
        text,
        &format!(
            "increment {}: {tip} against the base, {} (XOR pages and inherited ones)",
            st(&j["incremental_file"]),
            size(u(&j["incremental_bytes"]))
        ),
    );
    let reopened = format!(
        " (every checksum and page hash, the incremental file's parent too): {tip} reads back identical (the KUSER region's handlers bound again by address)"
    );
    has_timed_line(text, &["reopened in ", " and verified in ", &reopened]);
    let lazily = format!(
        " (header and index only); a manager restored to {tip} from it read the heap after reading {} of {} frames",
        u(&j["lazy_frames_read"]),
        u(&j["lazy_frames"])
    );
    has_timed_line(text, &["lazily opened in ", &lazily]);
}

/// The timings table: each operation's two durations and their ratio
/// (within the text's run), the file sizes and their ratio.
fn demo_timings(text: &str, j: &Value) {
    has_line(
        text,
        &format!(
            "timings against the full-copy baseline (memcpy / memcmp of the {} committed, best of 5)",
            size(u(&j["baseline_bytes"]))
        ),
    );
    assert_eq!(u(&j["baseline_bytes"]), u(&j["committed_bytes"]));
    let all = lines(text);
    for t in list(&j["timings"]) {
        let operation = st(&t["operation"]);
        close(f(&t["ratio"]), f(&t["vmsnap_seconds"]) / f(&t["full_copy_seconds"]));
        let line =
            all.iter().find(|l| l.starts_with(operation)).unwrap_or_else(|| panic!("{operation}: {text}"));
        let rest = &line[operation.len() + 1..];
        let ratio = rest.rsplit_once(' ').map(|(_, r)| r).unwrap();
        let ratio: f64 =
            ratio.strip_suffix('x').and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        let (vmsnap, full_copy) = two_durations(rest).unwrap_or_else(|| panic!("{line}"));
        // Durations are shown to 2 digits at least (5 % each): their ratio
        // within 11 %.
        assert!((ratio - vmsnap / full_copy).abs() <= 0.11 * ratio + 1e-5, "{line}");
    }
    let (timeline, full_copy) = (u(&j["timeline_bytes"]), u(&j["full_copy_bytes"]));
    close(f(&j["file_size_ratio"]), timeline as f64 / full_copy as f64);
    has_line(
        text,
        &format!("file size {} {} {:.5}x", size(timeline), size(full_copy), f(&j["file_size_ratio"])),
    );
    let note = "(a debug build: cargo run --release -p vmsnap-cli -- demo for real figures)";
    assert_eq!(lines(text).contains(&note.to_owned()), j["build"] == "debug");
}

/// The two durations at the start of `text` (`3.4 µs 1.2 ms …`), in seconds.
fn two_durations(text: &str) -> Option<(f64, f64)> {
    let words: Vec<&str> = text.split(' ').collect();
    let seconds = |number: &str, unit: &str| {
        let scale = match unit {
            "ns" => 1e-9,
            "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            _ => return None,
        };
        Some(number.parse::<f64>().ok()? * scale)
    };
    Some((seconds(words.first()?, words.get(1)?)?, seconds(words.get(2)?, words.get(3)?)?))
}

// ----------------------------------------------------------- fuzz-demo ----

/// Rates are timings: the text's rows are compared with the JSON's dirty
/// page counts, and each row's ratios with its own rates.
#[test]
fn fuzz_demo_text_shows_the_json_figures() {
    let (text, j) = both(&["fuzz-demo", "--memory-mib", "1", "--dirty", "1,4,16", "--iterations", "20"]);
    has_line(
        &text,
        &format!(
            "fuzz reset loop: {} of target memory, random dirty pages, 8 bytes written in each",
            size(u(&j["memory_bytes"]))
        ),
    );
    has_line(&text, "dirty vmsnap/s dirty-list/s full-copy/s vs list vs full");
    let all = lines(&text);
    let rows = list(&j["rows"]);
    assert_eq!(all.len(), 2 + rows.len() + 1 + usize::from(j["build"] == "debug"), "{text}");
    for (line, r) in all[2..].iter().zip(rows) {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[0], u(&r["dirty_pages"]).to_string(), "{line}");
        let number =
            |i: usize| words[i].trim_end_matches('x').parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        let (vmsnap, list_rate, full) = (number(1), number(2), number(3));
        // Rates are shown rounded to units; ratios to 2 and 1 decimals.
        assert!((number(4) - vmsnap / list_rate).abs() <= 0.006 + 0.01 * number(4), "{line}");
        assert!((number(5) - vmsnap / full).abs() <= 0.06 + 0.01 * number(5), "{line}");
        let json_rate = f(&r["vmsnap_resets_per_second"]);
        close(f(&r["vs_dirty_list"]), json_rate / f(&r["dirty_list_resets_per_second"]));
        close(f(&r["vs_full_copy"]), json_rate / f(&r["full_copy_resets_per_second"]));
    }
    has_line(
        &text,
        "(\"vs\" columns: vmsnap resets per second divided by the baseline's; above 1 is faster)",
    );
    let note = "(a debug build: run with --release for real figures)";
    assert_eq!(all.contains(&note.to_owned()), j["build"] == "debug");
}
