//! The file commands: `info`, `regions`, `dump`, `diff`, `verify`, `stats`,
//! `rebase`, `map`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use vmsnap::file::FileInfo;
use vmsnap::{AddressSpace, PAGE_SIZE, PageChangeKind, RegionChange, Snapshot};

use crate::format::{self, Region, hex, parse_u64, size, windbg};
use crate::open::{Opened, file_kind, label};
use crate::progress::Bar;

fn print_json(value: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

// ------------------------------------------------------------------ info ----

/// Arguments of `info`.
#[derive(Args)]
pub struct InfoArgs {
    /// The snapshot file.
    pub file: PathBuf,
}

fn info_json(path: &Path, info: &FileInfo) -> serde_json::Value {
    json!({
        "file": path.display().to_string(),
        "kind": file_kind(info),
        "format": format!("{}.{}", info.format_major, info.format_minor),
        "flags": info.flags,
        "file_bytes": info.file_length,
        "frames_bytes": info.frames_length,
        "index_bytes": info.index_length,
        "frames": info.frame_count,
        "snapshot_count": info.snapshots.len(),
        "page_references": info.page_references(),
        "unique_pages": info.stored_pages,
        "xor_pages": info.xor_pages,
        "zero_pages": info.snapshots.iter().map(|s| s.zero_pages).sum::<u64>(),
        "inherited_pages": info.snapshots.iter().map(|s| s.inherited_pages).sum::<u64>(),
        "raw_bytes": info.raw_bytes(),
        "unique_bytes": info.unique_bytes(),
        "stored_bytes": info.frames_length,
        "dedup_ratio": info.dedup_ratio(),
        "compression_ratio": info.compression_ratio(),
        "overall_ratio": info.overall_ratio(),
        "parent": info.parent.as_ref().map(|p| json!({
            "file_name_hint": p.file_name_hint,
            "index_hash": hex(&p.index_hash).replace(' ', ""),
        })),
        "snapshots": info.snapshots.iter().map(|s| json!({
            "id": s.id,
            "name": s.name,
            "parent": s.parent,
            "layout_version": s.layout_version,
            "allocations": s.allocations,
            "committed_pages": s.committed_pages,
            "stored_pages": s.stored_entries,
            "inherited_pages": s.inherited_pages,
            "zero_pages": s.zero_pages,
        })).collect::<Vec<_>>(),
    })
}

/// The timeline as a tree: a straight line of descendants stays in its
/// column, each branch is indented under the snapshot it left from.
fn timeline_tree(info: &FileInfo) -> String {
    let mut children: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
    for (i, s) in info.snapshots.iter().enumerate() {
        children.entry(s.parent).or_default().push(i);
    }
    let mut out = String::new();
    // (snapshot, depth) to print, as a stack.
    let mut stack: Vec<(usize, usize)> =
        children.get(&None).map(|v| v.iter().rev().map(|&i| (i, 0)).collect()).unwrap_or_default();
    let mut run_start: Option<usize> = None;
    let mut run: Vec<usize> = Vec::new();
    let flush = |out: &mut String, run: &mut Vec<usize>, depth: usize| {
        if run.is_empty() {
            return;
        }
        let pad = "  ".repeat(depth);
        let first = &info.snapshots[run[0]];
        let last = &info.snapshots[*run.last().expect("non-empty")];
        let branch = if depth > 0 { "└─ " } else { "" };
        let from = match (depth, first.parent) {
            (1.., Some(p)) => format!("branched from #{p}"),
            _ => String::new(),
        };
        if run.len() == 1 {
            let from = if from.is_empty() { from } else { format!(" ({from})") };
            let _ = writeln!(out, "  {pad}{branch}{}{from}", label(first));
        } else {
            let from = if from.is_empty() { from } else { format!(", {from}") };
            let (a, b, n) = (label(first), label(last), run.len());
            let _ = writeln!(out, "  {pad}{branch}{a} → {b} ({n} snapshots{from})");
        }
        run.clear();
    };
    while let Some((i, depth)) = stack.pop() {
        // Follow the first child in a straight line; the others branch.
        let mut current = i;
        run_start.get_or_insert(depth);
        loop {
            run.push(current);
            let kids = children.get(&Some(info.snapshots[current].id)).cloned().unwrap_or_default();
            for &k in kids.iter().skip(1).rev() {
                stack.push((k, depth + 1));
            }
            if kids.len() > 1 {
                flush(&mut out, &mut run, depth);
            }
            match kids.first() {
                Some(&k) if kids.len() == 1 => current = k,
                Some(&k) => {
                    // The main line goes on after the branch point.
                    stack.push((k, depth));
                    break;
                }
                None => break,
            }
        }
        flush(&mut out, &mut run, depth);
        run_start = None;
    }
    out
}

/// `vmsnap info`.
pub fn info(args: &InfoArgs, json: bool) -> Result<()> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    if json {
        return print_json(&info_json(&args.file, &info));
    }
    let zero: u64 = info.snapshots.iter().map(|s| s.zero_pages).sum();
    let inherited: u64 = info.snapshots.iter().map(|s| s.inherited_pages).sum();
    outln!(
        "{}: vmsnap {} (format {}.{})",
        args.file.display(),
        file_kind(&info),
        info.format_major,
        info.format_minor
    );
    outln!(
        "  file {} = header 64 B + frames {} + index {}",
        size(info.file_length),
        size(info.frames_length),
        size(info.index_length)
    );
    outln!("  flags {:#x}{}", info.flags, if info.is_incremental() { " (incremental)" } else { "" });
    if let Some(p) = &info.parent {
        outln!("  parent {} (index BLAKE3 {}…)", p.file_name_hint, hex(&p.index_hash[..8]).replace(' ', ""));
    }
    outln!(
        "  {} snapshots, {} page references, {} unique pages in {} frames ({} xor), {} zero pages stored as nothing{}",
        info.snapshots.len(),
        info.page_references(),
        info.stored_pages,
        info.frame_count,
        info.xor_pages,
        zero,
        if inherited > 0 { format!(", {inherited} pages inherited from the parent") } else { String::new() }
    );
    outln!(
        "  raw {} → unique {} → stored {}: dedup {:.2}x, compression {:.2}x, overall {:.2}x",
        size(info.raw_bytes()),
        size(info.unique_bytes()),
        size(info.frames_length),
        info.dedup_ratio(),
        info.compression_ratio(),
        info.overall_ratio()
    );
    outln!(
        "\n  {:>6}  {:<16} {:>6} {:>8} {:>6} {:>10} {:>8} {:>8}",
        "id",
        "name",
        "parent",
        "layout",
        "allocs",
        "committed",
        "stored",
        "zero"
    );
    let shown = 12;
    let n = info.snapshots.len();
    for (i, s) in info.snapshots.iter().enumerate() {
        if n > 2 * shown && i == shown {
            outln!("  {:>6}  ... {} more ...", "", n - 2 * shown);
        }
        if n > 2 * shown && i >= shown && i < n - shown {
            continue;
        }
        outln!(
            "  {:>6}  {:<16} {:>6} {:>8} {:>6} {:>10} {:>8} {:>8}",
            format!("#{}", s.id),
            s.name.as_deref().unwrap_or("-"),
            s.parent.map_or("-".to_owned(), |p| format!("#{p}")),
            s.layout_version,
            s.allocations,
            size(s.committed_pages * PAGE_SIZE),
            s.stored_entries + s.inherited_pages,
            s.zero_pages
        );
    }
    if n > 1 {
        outln!("\ntimeline:");
        out!("{}", timeline_tree(&info));
    }
    Ok(())
}

// --------------------------------------------------------------- regions ----

/// Arguments of `regions`.
#[derive(Args)]
pub struct RegionsArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The snapshot: `#3` is always the id 3; a bare `3` is the id 3 when the file has one, else the
    /// snapshot named "3"; anything else is a name. Default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
    /// Leave free regions out.
    #[arg(long)]
    pub no_free: bool,
}

/// `vmsnap regions`.
pub fn regions(args: &RegionsArgs, json: bool) -> Result<()> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let rows: Vec<Region> =
        format::regions(snapshot).into_iter().filter(|r| !args.no_free || r.state != "MEM_FREE").collect();
    if json {
        return print_json(&json!({
            "file": args.file.display().to_string(),
            "snapshot": summary.id,
            "name": summary.name,
            "regions": rows,
        }));
    }
    outln!("{} {}", args.file.display(), label(summary));
    outln!(
        "{:>17}  {:>17}  {:>17}  {:<11} {:<26} {:<11} {:<12}",
        "BaseAddress",
        "EndAddress+1",
        "RegionSize",
        "State",
        "Protect",
        "Type",
        "Kind"
    );
    for r in &rows {
        outln!(
            "{:>17}  {:>17}  {:>17}  {:<11} {:<26} {:<11} {:<12}",
            windbg(r.base),
            windbg(r.end),
            windbg(r.size),
            r.state,
            r.protect_name,
            r.type_,
            if r.state == "MEM_FREE" { "" } else { r.kind }
        );
    }
    let busy = rows.iter().filter(|r| r.state != "MEM_FREE").count();
    outln!("{} regions ({} in allocations)", rows.len(), busy);
    Ok(())
}

// ------------------------------------------------------------------ dump ----

/// Arguments of `dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// First address (`0x...` hex, WinDbg's `00000001`40000000`, or decimal).
    #[arg(value_parser = parse_u64)]
    pub address: u64,
    /// Bytes to show (at most 16 MiB).
    #[arg(value_parser = parse_u64)]
    pub length: u64,
    /// The snapshot: `#N` (an id), `N` (the id N, else the name N) or a name; default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// Reads `[address, address + length)` page by page; unreadable pages stay
/// zero and are reported as false in the returned map.
fn read_pages(space: &dyn AddressSpace, address: u64, length: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut bytes = vec![0u8; length as usize];
    let mut unreadable: Vec<(u64, u64)> = Vec::new();
    let mut at = address;
    let end = address + length;
    while at < end {
        let page_end = ((at / PAGE_SIZE) + 1) * PAGE_SIZE;
        let chunk_end = page_end.min(end);
        let buf = &mut bytes[(at - address) as usize..(chunk_end - address) as usize];
        if space.read_memory(at, buf).is_err() {
            match unreadable.last_mut() {
                Some(r) if r.1 == at => r.1 = chunk_end,
                _ => unreadable.push((at, chunk_end)),
            }
        }
        at = chunk_end;
    }
    (bytes, unreadable)
}

/// `vmsnap dump`.
pub fn dump(args: &DumpArgs, json: bool) -> Result<()> {
    if args.length == 0 || args.length > 16 << 20 {
        bail!("length must be between 1 and 16 MiB, not {}", args.length);
    }
    if args.address.checked_add(args.length).is_none() {
        bail!("{:#x} + {:#x} overflows", args.address, args.length);
    }
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let (bytes, unreadable) = read_pages(snapshot, args.address, args.length);
    opened.check_pages()?;
    if unreadable.iter().map(|r| r.1 - r.0).sum::<u64>() == args.length {
        bail!(
            "{:#x}..{:#x} is not readable in {} {} (no committed page; try `vmsnap regions`)",
            args.address,
            args.address + args.length,
            args.file.display(),
            label(summary)
        );
    }
    if json {
        return print_json(&json!({
            "address": args.address,
            "length": args.length,
            "snapshot": summary.id,
            "hex": hex(&bytes).replace(' ', ""),
            "unreadable": unreadable.iter().map(|r| json!({"start": r.0, "end": r.1})).collect::<Vec<_>>(),
        }));
    }
    let readable = |a: u64| !unreadable.iter().any(|r| r.0 <= a && a < r.1);
    out!("{}", format::hexdump(args.address, &bytes, &readable));
    Ok(())
}

// ------------------------------------------------------------------ diff ----

/// Arguments of `diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The old file.
    pub a: PathBuf,
    /// The new file (default: the same file as A).
    pub b: Option<PathBuf>,
    /// Snapshot in A (id or name); default: the last one, or with one file the head's parent.
    #[arg(long)]
    pub from: Option<String>,
    /// Snapshot in B (id or name); default: the last one.
    #[arg(long)]
    pub to: Option<String>,
    /// Pages whose bytes are shown (the rest are counted).
    #[arg(long, default_value_t = 16)]
    pub max_pages: usize,
}

fn region_change_json(c: &RegionChange) -> serde_json::Value {
    match *c {
        RegionChange::Allocated(r) => json!({"change": "allocated", "address": r.base, "length": r.length,
            "kind": format::kind_name(r.kind), "protection": r.initial_permissions.to_string()}),
        RegionChange::Released(r) => json!({"change": "released", "address": r.base, "length": r.length,
            "kind": format::kind_name(r.kind)}),
        RegionChange::Committed { address, length, permissions } => json!({"change": "committed",
            "address": address, "length": length, "protection": permissions.to_string()}),
        RegionChange::Decommitted { address, length } => json!({"change": "decommitted",
            "address": address, "length": length}),
        RegionChange::ProtectionChanged { address, length, old, new } => json!({"change": "protection",
            "address": address, "length": length, "old": old.to_string(), "new": new.to_string()}),
    }
}

fn region_change_text(c: &RegionChange) -> String {
    match *c {
        RegionChange::Allocated(r) => format!(
            "+ allocated   {}  {:>9}  {} {}",
            windbg(r.base),
            size(r.length),
            format::kind_name(r.kind),
            r.initial_permissions
        ),
        RegionChange::Released(r) => {
            format!("- released    {}  {:>9}  {}", windbg(r.base), size(r.length), format::kind_name(r.kind))
        }
        RegionChange::Committed { address, length, permissions } => {
            format!("+ committed   {}  {:>9}  {permissions}", windbg(address), size(length))
        }
        RegionChange::Decommitted { address, length } => {
            format!("- decommitted {}  {:>9}", windbg(address), size(length))
        }
        RegionChange::ProtectionChanged { address, length, old, new } => {
            format!("~ protection  {}  {:>9}  {old} -> {new}", windbg(address), size(length))
        }
    }
}

fn kind_word(k: PageChangeKind) -> &'static str {
    match k {
        PageChangeKind::Modified => "modified",
        PageChangeKind::Committed => "committed",
        PageChangeKind::Decommitted => "decommitted",
    }
}

/// `vmsnap diff`.
pub fn diff(args: &DiffArgs, json: bool) -> Result<()> {
    let a = Opened::open(&args.a)?;
    let b_opened;
    let (b, same_file) = match &args.b {
        Some(path) => {
            b_opened = Opened::open(path)?;
            (&b_opened, false)
        }
        None => (&a, true),
    };
    let to = b.position(args.to.as_deref())?;
    let from = match (&args.from, same_file) {
        (Some(sel), _) => a.position(Some(sel))?,
        (None, false) => a.position(None)?,
        (None, true) => {
            let parent = a.info.snapshots[to].parent.with_context(|| {
                format!(
                    "{}: {} has no parent: name one with --from",
                    args.a.display(),
                    label(&a.info.snapshots[to])
                )
            })?;
            a.position(Some(&parent.to_string()))?
        }
    };
    let (old, new): (&Snapshot, &Snapshot) = (a.snapshot(from), b.snapshot(to));
    let (old_label, new_label) = (label(&a.info.snapshots[from]), label(&b.info.snapshots[to]));
    let started = std::time::Instant::now();
    let d = old.diff(new);
    let elapsed = started.elapsed().as_secs_f64();
    // Text shows the first --max-pages pages only: read no more (all of user
    // space committed is 2^35 changed pages, in one run).
    let total = d.changed_page_count();
    let changes: Vec<_> =
        if json { d.page_changes() } else { d.iter_page_changes().take(args.max_pages).collect() };
    // The changed pages' bytes, read (from the files, lazily) and compared
    // once; a page a damaged file cannot give is an error, not zeros.
    let ranges: Vec<_> = changes.iter().map(|c| c.byte_ranges()).collect();
    a.check_pages()?;
    b.check_pages()?;
    if json {
        let pages: Vec<_> = changes
            .iter()
            .zip(&ranges)
            .map(|(c, ranges)| {
                let ranges: Vec<_> = ranges
                    .iter()
                    .cloned()
                    .map(|r| {
                        json!({"start": r.start, "end": r.end,
                        "old": hex(&c.old_bytes()[r.clone()]).replace(' ', ""),
                        "new": hex(&c.new_bytes()[r]).replace(' ', "")})
                    })
                    .collect();
                json!({"address": c.address(), "kind": kind_word(c.kind()), "ranges": ranges})
            })
            .collect();
        return print_json(&json!({
            "from": {"file": args.a.display().to_string(), "snapshot": a.info.snapshots[from].id},
            "to": {"file": args.b.as_ref().unwrap_or(&args.a).display().to_string(), "snapshot": b.info.snapshots[to].id},
            "region_changes": d.region_changes().iter().map(region_change_json).collect::<Vec<_>>(),
            "page_changes": pages,
        }));
    }
    let b_path = args.b.as_ref().unwrap_or(&args.a);
    outln!("diff {} {old_label} → {} {new_label}", args.a.display(), b_path.display());
    outln!(
        "{} region changes, {} pages changed ({} to compute)",
        d.region_changes().len(),
        total,
        format::duration(elapsed)
    );
    if !d.region_changes().is_empty() {
        outln!("\nregions:");
        for c in d.region_changes() {
            outln!("  {}", region_change_text(c));
        }
    }
    if !changes.is_empty() {
        outln!("\npages:");
    }
    for (c, ranges) in changes.iter().zip(&ranges).take(args.max_pages) {
        let changed: usize = ranges.iter().map(|r| r.len()).sum();
        let list: Vec<String> =
            ranges.iter().take(8).map(|r| format!("{:#x}..{:#x}", r.start, r.end)).collect();
        outln!(
            "  {} {:<11} {} bytes in {} ranges: {}{}",
            windbg(c.address()),
            kind_word(c.kind()),
            changed,
            ranges.len(),
            list.join(" "),
            if ranges.len() > 8 { " ..." } else { "" }
        );
        if ranges.is_empty() {
            outln!("      (reads zeros in both versions)");
        }
        let mut lines = 0;
        for r in ranges {
            let mut at = r.start;
            while at < r.end && lines < 8 {
                let end = (at + 16).min(r.end);
                outln!("      +{at:03x}  - {}", hex(&c.old_bytes()[at..end]));
                outln!("      +{at:03x}  + {}", hex(&c.new_bytes()[at..end]));
                lines += 1;
                at = end;
            }
        }
        if lines >= 8 {
            outln!("      ...");
        }
    }
    if total > args.max_pages {
        outln!("  ... and {} more pages (--max-pages, or --json for all)", total - args.max_pages);
    }
    Ok(())
}

// ---------------------------------------------------------------- verify ----

/// Arguments of `verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The snapshot file.
    pub file: PathBuf,
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

/// What `vmsnap verify` checked.
struct Verified {
    /// The file and its parents, the file first.
    files: Vec<PathBuf>,
    snapshots: usize,
    pages: u64,
    frames: u64,
    /// Seconds since `started`: the whole command, not only the check.
    seconds: f64,
}

/// Checks `args.file` and its chain; the time is measured from `started`
/// (the start of the command) to the end of the last step, so that it is
/// what the user waited for.
fn verified(args: &VerifyArgs, started: Instant) -> Result<Verified> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    let mut bar = Bar::new("verifying", info.unique_bytes(), true);
    vmsnap::file::verify_with_progress(&args.file, &mut bar.hook())
        .with_context(|| args.file.display().to_string())?;
    drop(bar);
    let files = chain(&args.file);
    let pages: u64 = files.iter().map(|(_, i)| i.stored_pages).sum();
    let frames: u64 = files.iter().map(|(_, i)| i.frame_count).sum();
    Ok(Verified {
        files: files.into_iter().map(|(p, _)| p).collect(),
        snapshots: info.snapshots.len(),
        pages,
        frames,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `vmsnap verify`; `started` is when the command started.
pub fn verify(args: &VerifyArgs, json: bool, started: Instant) -> Result<()> {
    let v = verified(args, started)?;
    if json {
        return print_json(&json!({
            "ok": true,
            "file": args.file.display().to_string(),
            "files": v.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "snapshots": v.snapshots,
            "pages_checked": v.pages,
            "frames_checked": v.frames,
            "seconds": v.seconds,
        }));
    }
    outln!(
        "OK {}: header and index checksums, {} frames, {} page hashes (BLAKE3), {} snapshot layouts checked in {}",
        args.file.display(),
        v.frames,
        v.pages,
        v.snapshots,
        format::duration(v.seconds)
    );
    for p in v.files.iter().skip(1) {
        outln!("   parent {} OK", p.display());
    }
    Ok(())
}

// ----------------------------------------------------------------- stats ----

/// Arguments of `stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The snapshot: `#N` (an id), `N` (the id N, else the name N) or a name; default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// `vmsnap stats`.
pub fn stats(args: &StatsArgs, json: bool) -> Result<()> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let stats = snapshot.compute_memory_stats();
    let mut by_kind: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for r in format::regions(snapshot) {
        if r.state == "MEM_FREE" {
            continue;
        }
        let e = by_kind.entry(r.kind).or_default();
        e.0 += r.size;
        if r.state == "MEM_COMMIT" {
            e.1 += r.size;
        }
    }
    for r in snapshot.reserved_regions() {
        by_kind.entry(format::kind_name(r.kind)).or_default().2 += 1;
    }
    // Versions of the file: bytes private to each and shared with others.
    let memory = opened.timeline.memory();
    let total_private: u64 = memory.iter().map(|m| m.private_bytes).sum();
    if json {
        return print_json(&json!({
            "snapshot": summary.id,
            "name": summary.name,
            "reserved_bytes": stats.reserved_memory,
            "committed_bytes": stats.committed_memory,
            "allocations": stats.allocation_count,
            "private_bytes": stats.private_memory,
            "shared_bytes": stats.shared_memory,
            "live_versions": stats.live_versions,
            "by_kind": by_kind.iter().map(|(k, v)| (k.to_string(), json!({
                "reserved_bytes": v.0, "committed_bytes": v.1, "allocations": v.2}))).collect::<serde_json::Map<_, _>>(),
            "versions": memory.iter().map(|m| json!({"private_bytes": m.private_bytes, "shared_bytes": m.shared_bytes})).collect::<Vec<_>>(),
        }));
    }
    outln!("{} {}", args.file.display(), label(summary));
    outln!(
        "  reserved {}, committed {}, {} allocations",
        size(stats.reserved_memory),
        size(stats.committed_memory),
        stats.allocation_count
    );
    outln!(
        "  stored pages: {} private to this version, {} shared with the file's other {} versions",
        size(stats.private_memory),
        size(stats.shared_memory),
        opened.timeline.len().saturating_sub(1)
    );
    outln!("\n  {:<14} {:>7} {:>12} {:>12}", "kind", "allocs", "reserved", "committed");
    for (k, (reserved, committed, count)) in &by_kind {
        outln!("  {k:<14} {count:>7} {:>12} {:>12}", size(*reserved), size(*committed));
    }
    if opened.timeline.len() > 1 {
        outln!(
            "\n  {} versions in the file; pages held by a single version (what removing it would free): {}",
            opened.timeline.len(),
            size(total_private)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- rebase ----

/// Arguments of `rebase`.
#[derive(Args)]
pub struct RebaseArgs {
    /// The file: incremental (its chain is merged), a timeline or a snapshot.
    pub file: PathBuf,
    /// Where to write the self-contained file (may be FILE).
    pub out: PathBuf,
    /// Write only this snapshot (id or name) as a one-snapshot file.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// `vmsnap rebase`.
pub fn rebase(args: &RebaseArgs, json: bool) -> Result<()> {
    let info = vmsnap::file::inspect(&args.file).with_context(|| args.file.display().to_string())?;
    let out = || args.out.display().to_string();
    let what = if let Some(sel) = &args.snapshot {
        let opened = Opened::open(&args.file)?;
        let (summary, snapshot) = opened.select(Some(sel))?;
        let mut bar = Bar::new("saving", 0, true);
        let saved = vmsnap::file::save_with_progress(snapshot, &args.out, &mut bar.hook());
        opened.check_pages()?;
        saved.with_context(out)?;
        format!("snapshot {}", label(summary))
    } else if info.is_incremental() {
        vmsnap::file::rebase(&args.file, &args.out).with_context(|| args.file.display().to_string())?;
        "the parent chain merged".to_owned()
    } else if info.snapshots.len() == 1 && file_kind(&info) == "snapshot" {
        vmsnap::file::rebase(&args.file, &args.out).with_context(|| args.file.display().to_string())?;
        "already self-contained: rewritten".to_owned()
    } else {
        let opened = Opened::open(&args.file)?;
        let saved = vmsnap::file::save_timeline(&opened.timeline, &args.out);
        opened.check_pages()?;
        saved.with_context(out)?;
        format!("timeline of {} snapshots, already self-contained: rewritten", opened.timeline.len())
    };
    let written = std::fs::metadata(&args.out).with_context(out)?.len();
    if json {
        return print_json(&json!({"file": args.file.display().to_string(), "out": out(),
            "bytes": written, "input_bytes": info.file_length}));
    }
    outln!(
        "wrote {} (self-contained): {} ({} → {})",
        args.out.display(),
        what,
        size(info.file_length),
        size(written)
    );
    Ok(())
}

// ------------------------------------------------------------------- map ----

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

/// `vmsnap map`.
pub fn map(args: &MapArgs, json: bool) -> Result<()> {
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let rows = format::regions(snapshot);
    let title = format!("{} {}", args.file.display(), label(summary));
    let svg = crate::svg::render(&title, &rows);
    // Atomically, as snapshot files are: a full disk leaves the old picture,
    // not a truncated one; a target that is not a regular file is refused.
    vmsnap::file::write_atomic(&args.svg, svg.as_bytes()).with_context(|| args.svg.display().to_string())?;
    let busy = rows.iter().filter(|r| r.state != "MEM_FREE").count();
    if json {
        return print_json(&json!({"svg": args.svg.display().to_string(), "regions": busy,
            "free_regions": rows.len() - busy}));
    }
    outln!(
        "wrote {}: {} regions, {} free gaps (open it in a browser; hover a region for details)",
        args.svg.display(),
        busy,
        rows.len() - busy
    );
    Ok(())
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
        let v = verified(&VerifyArgs { file }, started).unwrap();
        assert!(v.seconds >= 10.0, "{}", v.seconds);
        assert_eq!((v.files.len(), v.snapshots), (1, 1));
    }
}
