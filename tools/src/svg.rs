//! `vmsnap map --svg`: the address space as a self-contained SVG picture,
//! low addresses at the top, like VMMap's.
//!
//! One `<rect class="region">` per region inside an allocation (with a
//! `<title>` tooltip), coloured by kind, solid when committed and pale with a
//! dashed outline when only reserved; a stripe on its left coloured by
//! protection (`class="prot"`); guard pages outlined in orange. Heights grow
//! with the logarithm of the size, so a 4 KiB page and a 1 GiB heap are both
//! visible; free gaps (`class="free"`) are drawn compressed, hatched, with
//! their size. Addresses are labelled in hex on the left.

use std::fmt::Write;

use crate::format::{Region, size, windbg};

const WIDTH: u32 = 1080;
const ADDRESS_X: u32 = 148;
const BAR_X: u32 = 160;
const BAR_WIDTH: u32 = 300;
const STRIPE: u32 = 10;
const TEXT_X: u32 = BAR_X + BAR_WIDTH + 12;
const LEGEND_X: u32 = 850;
const TOP: u32 = 64;
const FREE_HEIGHT: u32 = 22;

/// Fill colour of a region kind.
fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "Image" => "#8e6cc7",
        "Private" => "#e8a33d",
        "PagefileView" | "FileView" => "#3aa6a0",
        "Mmio" => "#d9534f",
        _ => "#cccccc",
    }
}

/// Colour of the protection stripe, from the engine's `rwx` letters.
fn protection_colour(rwx: &str) -> &'static str {
    let b = rwx.as_bytes();
    if rwx.is_empty() {
        "#ffffff" // reserved: no protection
    } else if b.get(2) == Some(&b'x') {
        "#c0392b" // executable
    } else if b.get(1) == Some(&b'w') {
        "#2471a3" // writable
    } else if b.get(1) == Some(&b'c') {
        "#7d3c98" // write-copy
    } else if b.first() == Some(&b'r') {
        "#27ae60" // read-only
    } else {
        "#333333" // no access
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Height of a region: 14 px for a page, 3 px more per doubling, at most 72.
fn height(bytes: u64) -> u32 {
    let pages = (bytes / 4096).max(1);
    (14 + 3 * (63 - pages.leading_zeros())).min(72)
}

/// The SVG document for `regions` (every region from 0 to the end of user
/// space, as `format::regions` returns them).
pub fn render(title: &str, regions: &[Region]) -> String {
    let mut s = String::new();
    header(&mut s, title, regions);
    let mut y = TOP;
    for r in regions {
        y += if r.is_free() { free_gap(&mut s, r, y) } else { region(&mut s, r, y) };
    }
    let _ = writeln!(
        s,
        r##"<text x="{ADDRESS_X}" y="{}" text-anchor="end" fill="#888">{}</text>"##,
        y + 9,
        windbg(regions.last().map_or(0, |r| r.end))
    );
    legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// The document's start: its size (the regions' heights, or the legend's),
/// the hatch pattern, the title and the counts.
fn header(s: &mut String, title: &str, regions: &[Region]) {
    let total: u32 = regions.iter().map(|r| if r.is_free() { FREE_HEIGHT } else { height(r.size) }).sum();
    let legend_height = 330;
    let h = TOP + total.max(legend_height) + 40;
    let free = regions.iter().filter(|r| r.is_free()).count();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="Consolas, Menlo, monospace" font-size="11">
<title>{}</title>
<defs>
  <pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
    <rect width="8" height="8" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="8" stroke="#d0d0d0" stroke-width="3"/>
  </pattern>
</defs>
<rect width="{WIDTH}" height="{h}" fill="#ffffff"/>
<text x="{BAR_X}" y="28" font-size="16" font-weight="bold">{}</text>
<text x="{BAR_X}" y="48" fill="#555">{} regions in allocations, {} free gaps; heights grow with log(size), free gaps compressed</text>"##,
        escape(title),
        escape(title),
        regions.len() - free,
        free,
    );
}

/// A region's tooltip: range, size, state, protection, type, kind, allocation base.
fn tooltip(r: &Region) -> String {
    format!(
        "{} - {}  {} ({:#x})\n{} {} {} {}\nallocation base {:#x}",
        windbg(r.base),
        windbg(r.end),
        size(r.size),
        r.size,
        r.state,
        r.protect_name,
        r.type_,
        r.kind,
        r.allocation_base
    )
}

/// A free gap at `y`, hatched and labelled with its size; its height.
fn free_gap(s: &mut String, r: &Region, y: u32) -> u32 {
    let _ = writeln!(
        s,
        r##"<rect class="free" x="{BAR_X}" y="{y}" width="{BAR_WIDTH}" height="{FREE_HEIGHT}" fill="url(#hatch)" stroke="#bbbbbb"><title>{}</title></rect>"##,
        escape(&tooltip(r))
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#888">free {}</text>"##,
        BAR_X + 8,
        y + 15,
        escape(&size(r.size))
    );
    let _ = writeln!(
        s,
        r##"<text x="{ADDRESS_X}" y="{}" text-anchor="end" fill="#888">{}</text>"##,
        y + 9,
        windbg(r.base)
    );
    FREE_HEIGHT
}

/// A region inside an allocation at `y`: its shape, protection stripe,
/// address and size, kind and protection; its height.
fn region(s: &mut String, r: &Region, y: u32) -> u32 {
    let rh = height(r.size);
    let committed = r.state == "MEM_COMMIT";
    let guard = r.rwx.contains("guard");
    let (opacity, dash) = if committed { ("1", "") } else { ("0.35", r#" stroke-dasharray="4 3""#) };
    let (stroke, stroke_width) = if guard { ("#ff7f0e", 3) } else { ("#444444", 1) };
    let _ = writeln!(
        s,
        r#"<rect class="region" data-kind="{}" data-state="{}" x="{}" y="{y}" width="{}" height="{rh}" fill="{}" fill-opacity="{opacity}" stroke="{stroke}" stroke-width="{stroke_width}"{dash}><title>{}</title></rect>"#,
        r.kind,
        r.state,
        BAR_X + STRIPE,
        BAR_WIDTH - STRIPE,
        kind_colour(r.kind),
        escape(&tooltip(r))
    );
    let _ = writeln!(
        s,
        r##"<rect class="prot" x="{BAR_X}" y="{y}" width="{STRIPE}" height="{rh}" fill="{}" stroke="#444444"/>"##,
        protection_colour(&r.rwx)
    );
    let _ =
        writeln!(s, r##"<text x="{ADDRESS_X}" y="{}" text-anchor="end">{}</text>"##, y + 9, windbg(r.base));
    let protection = if committed { r.protect_name.as_str() } else { "reserved" };
    let detail = format!("{:>9}  {}  {protection}", size(r.size), r.kind);
    let _ = writeln!(s, r#"<text x="{TEXT_X}" y="{}">{}</text>"#, y + rh.min(24) / 2 + 4, escape(&detail));
    rh
}

/// The legend, right of the picture: kinds, protections, states.
fn legend(s: &mut String) {
    let mut y = TOP;
    let _ = writeln!(s, r#"<text x="{LEGEND_X}" y="{y}" font-weight="bold">kind (fill)</text>"#);
    for (name, kind) in
        [("image", "Image"), ("private", "Private"), ("mapped view", "PagefileView"), ("MMIO", "Mmio")]
    {
        y += 18;
        swatch(s, y, &format!(r##"fill="{}" stroke="#444""##, kind_colour(kind)), name);
    }
    y += 28;
    let _ = writeln!(s, r#"<text x="{LEGEND_X}" y="{y}" font-weight="bold">protection (stripe)</text>"#);
    for (name, rwx) in [
        ("execute", "r-x"),
        ("read-write", "rw-"),
        ("write-copy", "rc-"),
        ("read-only", "r--"),
        ("no access", "---"),
        ("reserved", ""),
    ] {
        y += 18;
        swatch(s, y, &format!(r##"fill="{}" stroke="#444""##, protection_colour(rwx)), name);
    }
    y += 28;
    let _ = writeln!(s, r#"<text x="{LEGEND_X}" y="{y}" font-weight="bold">state</text>"#);
    for (name, attributes) in [
        ("committed", r##"fill="#e8a33d" stroke="#444""##),
        ("reserved", r##"fill="#e8a33d" fill-opacity="0.35" stroke="#444" stroke-dasharray="4 3""##),
        ("guard page", r##"fill="#e8a33d" stroke="#ff7f0e" stroke-width="3""##),
        ("free (compressed)", r##"fill="url(#hatch)" stroke="#bbb""##),
    ] {
        y += 18;
        swatch(s, y, attributes, name);
    }
}

/// One legend entry on the line `y`: a 14×12 square drawn with
/// `attributes`, then `name`.
fn swatch(s: &mut String, y: u32, attributes: &str, name: &str) {
    let _ = writeln!(
        s,
        r#"<rect x="{LEGEND_X}" y="{}" width="14" height="12" {attributes}/><text x="{}" y="{y}">{name}</text>"#,
        y - 10,
        LEGEND_X + 20
    );
}
