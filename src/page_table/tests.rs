use super::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

const RW: u8 = meta::COMMITTED | 3;
const RO: u8 = meta::COMMITTED | 1;

fn page(byte: u8) -> PageRef {
    PageRef::new_in(&Store::new(), &[byte; PAGE], None)
}

fn frozen(bytes: &PageBytes) -> PageRef {
    PageRef::new_in(&Store::new(), bytes, None)
}

fn collect(t: &PageTable) -> BTreeMap<u64, (u8, Option<u8>)> {
    let mut out = BTreeMap::new();
    t.for_each_run(|first, n, v| {
        for vpn in first..first + n {
            out.insert(vpn, (v.meta, v.page.map(|p| p.bytes()[0])));
        }
    });
    out
}

#[test]
fn fingerprints_separate_pages() {
    assert_eq!(fingerprint(&ZERO_PAGE), 0);
    let mut a = [0u8; PAGE];
    a[4095] = 1;
    let mut b = [0u8; PAGE];
    b[0] = 1;
    assert_ne!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), 0);
    let (pa, pb) = (frozen(&a), frozen(&a));
    let (pa, pb) = (pa.page(), pb.page());
    assert!(pa.same_bytes(pb));
    assert!(!pa.same_bytes(frozen(&b).page()));
    assert!(!pa.is_zero());
    assert!(frozen(&ZERO_PAGE).page().is_zero());
    // Pages of one repeated byte (0xCC padding, 0xFF fill) have equal
    // lane sums: the lane rotations must still tell them apart.
    let uniform: Vec<u64> = (1..=255u8).map(|b| fingerprint(&[b; PAGE])).collect();
    assert!(uniform.iter().all(|&f| f != 0));
    let distinct: std::collections::HashSet<u64> = uniform.iter().copied().collect();
    assert_eq!(distinct.len(), 255);
}

/// FORMAT.md §4.1, written from the text: the file format stores this
/// value, so the engine's fingerprint must never drift from it.
#[test]
fn fingerprint_follows_the_format_spec() {
    fn spec(b: &[u8]) -> u64 {
        let mut lane = [0u64; 8];
        for k in 0..64 {
            for (i, l) in lane.iter_mut().enumerate() {
                let at = 64 * k + 8 * i;
                *l = l.wrapping_add(u64::from_le_bytes(b[at..at + 8].try_into().unwrap()));
            }
        }
        let mut h = 0u64;
        for l in lane {
            h = ((h ^ l).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(31);
        }
        h
    }
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    for _ in 0..50 {
        let mut page = [0u8; PAGE];
        for byte in page.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = if x.is_multiple_of(3) { x as u8 } else { 0 };
        }
        assert_eq!(fingerprint(&page), spec(&page));
    }
    let mut one = [0u8; PAGE];
    one[0] = 1;
    assert_eq!(fingerprint(&one), spec(&one));
    assert_eq!(fingerprint(&ZERO_PAGE), 0);
}

/// The bytes of record `r`: distinct, non-uniform pages.
fn page_of(r: u32) -> PageBytes {
    let mut p = [0u8; PAGE];
    p[0] = (r as u8).wrapping_add(1);
    p[1] = (r >> 8) as u8;
    p[100] = 7;
    p
}

/// A source that hands out `page_of(record)` with its frame mate (the
/// record of the other parity), or fails for records 0 and 1, counting
/// its loads.
struct CountingSource(AtomicU64);

impl LazySource for CountingSource {
    fn load(&self, record: u32, fill: &mut dyn FnMut(u32, Box<PageBytes>)) {
        self.0.fetch_add(1, Ordering::Relaxed);
        if record > 1 {
            let first = record & !1;
            fill(first, Box::new(page_of(first)));
            fill(first + 1, Box::new(page_of(first + 1)));
        }
    }
}

#[test]
fn lazy_pages_load_once_per_frame_and_fail_without_lying() {
    let source = Arc::new(CountingSource(AtomicU64::new(0)));
    let dynamic: Arc<dyn LazySource> = source.clone();
    let store = Store::new();
    let fps: Vec<u64> = (0..4).map(|r| fingerprint(&page_of(r))).collect();
    let records = store.add_source(&dynamic, &fps, [7; 32]);
    let pages: Vec<PageRef> = (0..4).map(|r| PageRef::retained(&store, records.get(r))).collect();
    let page = |i: usize| pages[i].page();
    assert!(!page(2).is_loaded());
    assert_eq!(page(2).try_bytes(), Some(&page_of(2)));
    assert_eq!(page(2).bytes()[0], 3);
    assert!(page(3).is_loaded(), "its frame mate came with it");
    assert_eq!(page(3).try_bytes(), Some(&page_of(3)));
    assert_eq!(source.0.load(Ordering::Relaxed), 1, "one read per frame");
    // Fingerprints first: different pages are told apart without a read.
    assert!(!page(1).same_bytes(page(2)));
    assert_eq!(source.0.load(Ordering::Relaxed), 1);
    // A page that cannot be read: None every time (each a new try), zeros
    // for the consumers that cannot fail, equal to nothing but itself.
    assert_eq!(page(0).try_bytes(), None);
    assert_eq!(page(0).try_bytes(), None);
    assert_eq!(page(0).bytes(), &ZERO_PAGE);
    assert!(!page(0).same_bytes(frozen(&ZERO_PAGE).page()));
    assert!(!page(0).is_zero());
    assert!(page(0).same_bytes(page(0)));
    assert!(source.0.load(Ordering::Relaxed) >= 4);
    // The store holds the source weakly; a table holding the pages
    // keeps it (see `keep_source`), and without one, nothing loads.
    let before = source.0.load(Ordering::Relaxed);
    drop(dynamic);
    drop(source);
    assert_eq!(page(1).try_bytes(), None);
    let _ = before;
}

#[test]
fn one_read_per_frame_under_concurrency() {
    struct Slow(AtomicU64);
    impl LazySource for Slow {
        fn load(&self, record: u32, fill: &mut dyn FnMut(u32, Box<PageBytes>)) {
            self.0.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(2));
            let first = record & !15;
            for r in first..first + 16 {
                fill(r, Box::new(page_of(r)));
            }
        }
    }
    let source = Arc::new(Slow(AtomicU64::new(0)));
    let dynamic: Arc<dyn LazySource> = source.clone();
    let store = Store::new();
    let fps: Vec<u64> = (0..1024).map(|r| fingerprint(&page_of(r))).collect();
    let records = store.add_source(&dynamic, &fps, [7; 32]);
    let pages: Vec<PageRef> = (0..1024).map(|r| PageRef::retained(&store, records.get(r))).collect();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let pages = &pages;
            s.spawn(move || {
                for i in 0..1024u32 {
                    let r = (i * 7 + t * 131) % 1024;
                    assert_eq!(pages[r as usize].page().try_bytes(), Some(&page_of(r)));
                }
            });
        }
    });
    assert_eq!(source.0.load(Ordering::Relaxed), 64, "64 frames, each read once");
}

#[test]
fn empty_table_reads_absent() {
    let t = PageTable::default();
    assert_eq!(t.get(0).meta, 0);
    assert_eq!(t.get(VPN_LIMIT - 1).meta, 0);
    assert_eq!(t.run_end(0, 100), 100);
}

#[test]
fn commit_counts_and_shares_uniform_nodes() {
    let mut t = PageTable::default();
    // A fully covered level-2 subtree: 262,144 pages (1 GiB).
    let delta = t.update(1 << 18, 2 << 18, RangeOp::Commit(3));
    assert_eq!(delta, 1 << 18);
    assert_eq!(t.get(1 << 18).meta, RW);
    assert_eq!(t.get((2 << 18) - 1).meta, RW);
    assert_eq!(t.get(2 << 18).meta, 0);
    assert_eq!(t.run_end(1 << 18, 3 << 18), 2 << 18);
    // Unaligned range.
    let delta = t.update(5, 200, RangeOp::Commit(1));
    assert_eq!(delta, 195);
    assert_eq!(t.get(4).meta, 0);
    assert_eq!(t.get(5).meta, RO);
    assert_eq!(t.get(199).meta, RO);
    assert_eq!(t.run_end(5, 1000), 200);
}

#[test]
fn recommit_keeps_bytes_decommit_drops_them() {
    let mut t = PageTable::default();
    t.update(10, 20, RangeOp::Commit(3));
    t.set_page(12, Some(page(7)));
    assert_eq!(t.update(10, 20, RangeOp::Commit(1)), 0);
    assert_eq!(t.get(12).meta, RO);
    assert_eq!(t.get(12).bytes()[0], 7);
    assert_eq!(t.update(12, 13, RangeOp::Clear), -1);
    assert_eq!(t.get(12).meta, 0);
    t.update(12, 13, RangeOp::Commit(3));
    assert_eq!(t.get(12).bytes()[0], 0);
    // Clearing everything prunes the tree.
    assert_eq!(t.update(0, VPN_LIMIT, RangeOp::Clear), -10);
    assert!(t.top().is_none());
}

#[test]
fn huge_uniform_ranges_change_as_a_whole() {
    let mut t = PageTable::default();
    // 256 GiB committed, then protected, queried and released.
    let (lo, hi) = (1 << 24, 65 << 24);
    assert_eq!(t.update(lo, hi, RangeOp::Commit(3)), 1 << 30);
    assert_eq!(t.update(lo, hi, RangeOp::Protect(1)), 0);
    assert_eq!(t.get(lo + 12345).meta, RO);
    assert_eq!(t.run_end(lo, VPN_LIMIT), hi);
    assert_eq!(t.find_first(lo, hi, |m| m & meta::COMMITTED == 0), None);
    // Carve a hole in the middle: only the touched path is split.
    assert_eq!(t.update(lo + 100, lo + 200, RangeOp::Clear), -100);
    assert_eq!(t.run_end(lo, hi), lo + 100);
    assert_eq!(t.run_end(lo + 100, hi), lo + 200);
    assert_eq!(t.run_end(lo + 200, hi), hi);
    assert_eq!(t.update(0, VPN_LIMIT, RangeOp::Clear), -((1 << 30) - 100));
    assert!(t.top().is_none());
}

#[test]
fn protect_touches_committed_pages_only() {
    let mut t = PageTable::default();
    t.update(0, 4, RangeOp::Commit(3));
    assert_eq!(t.update(0, 8, RangeOp::Protect(1)), 0);
    assert_eq!(t.get(3).meta, RO);
    assert_eq!(t.get(5).meta, 0);
}

#[test]
fn versions_are_independent() {
    let mut a = PageTable::default();
    a.update(0, 128, RangeOp::Commit(3));
    a.set_page(3, Some(page(1)));
    let b = a.clone();
    let mut same = Vec::new();
    a.diff(&b, |v, n, _, _| same.extend(v..v + n));
    assert!(same.is_empty());
    a.set_page(3, Some(page(2)));
    a.set_page(100, Some(page(9)));
    assert_eq!(b.get(3).bytes()[0], 1);
    assert_eq!(a.get(3).bytes()[0], 2);
    let mut changed = Vec::new();
    a.diff(&b, |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, vec![3, 100]);
    let mut changed = Vec::new();
    b.diff(&a, |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, vec![3, 100]);
}

#[test]
fn stored_counts_and_sharing_follow_reference_counts() {
    let mut a = PageTable::default();
    a.update(0, 300, RangeOp::Commit(3));
    for v in [1u64, 2, 100, 250] {
        a.set_page(v, Some(page(v as u8)));
    }
    assert_eq!(a.stored_pages(), 4);
    assert_eq!(a.sharing(), (4, 0));
    let b = a.clone();
    assert_eq!(a.sharing(), (0, 4), "a clone shares everything");
    a.set_page(1, Some(page(9)));
    assert_eq!(a.sharing(), (1, 3), "only the rewritten page is private");
    assert_eq!(b.sharing(), (1, 3), "b's old page 1 is private to b");
    drop(b);
    assert_eq!(a.sharing(), (4, 0));
    a.set_page(2, None);
    assert_eq!(a.stored_pages(), 3);
    a.update(0, 64, RangeOp::Clear);
    assert_eq!(a.stored_pages(), 2);
    a.update(90, 300, RangeOp::Commit(1));
    assert_eq!(a.stored_pages(), 2, "re-commit keeps bytes");
    a.update(200, 300, RangeOp::Clear);
    assert_eq!(a.stored_pages(), 1);
}

#[test]
fn diff_sees_changes_on_both_sides_of_a_copied_leaf() {
    let mut a = PageTable::default();
    a.update(0, 64, RangeOp::Commit(3));
    a.set_page(1, Some(page(1)));
    let mut b = a.clone();
    b.set_page(2, Some(page(2))); // b's leaf is a copy of a's
    a.set_page(3, Some(page(3))); // a's leaf, unique again, changes in place
    a.update(10, 11, RangeOp::Protect(1));
    let mut changed = Vec::new();
    a.diff(&b, |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, vec![2, 3, 10]);
    let mut changed = Vec::new();
    b.diff(&a, |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, vec![2, 3, 10]);
    // A grandchild is not related to its grandparent: full comparison.
    let c = b.clone();
    let mut d = c.clone();
    d.set_page(5, Some(page(5)));
    let mut changed = Vec::new();
    a.diff(&d, |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, vec![2, 3, 5, 10]);
}

#[test]
fn diff_matches_brute_force_across_random_versions() {
    // Versions made by random changes, some while shared and some in place,
    // diffed pairwise against a page-by-page comparison.
    let mut seed = 0x0DDB_1A5E_5BAD_5EEDu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const SPAN: u64 = 9000;
    let mut live = PageTable::default();
    let mut versions: Vec<PageTable> = Vec::new();
    for step in 0..400u64 {
        let lo = next() % SPAN;
        match next() % 5 {
            0 => {
                live.update(lo, (lo + next() % 200 + 1).min(SPAN), RangeOp::Commit((next() % 2 + 1) as u8));
            }
            1 => {
                live.update(lo, (lo + next() % 50 + 1).min(SPAN), RangeOp::Clear);
            }
            2 => {
                live.update(lo, (lo + next() % 100 + 1).min(SPAN), RangeOp::Protect(1));
            }
            _ => {
                if live.get(lo).meta & meta::COMMITTED != 0 {
                    live.set_page(lo, Some(page(step as u8)));
                }
            }
        }
        if next() % 8 == 0 {
            versions.push(live.clone());
        }
        if next() % 16 == 0 && !versions.is_empty() {
            let i = (next() % versions.len() as u64) as usize;
            versions.swap_remove(i); // some nodes become unique again
        }
    }
    versions.push(live);
    for a in &versions {
        for b in &versions {
            let mut got = Vec::new();
            a.diff(b, |v, n, _, _| got.extend(v..v + n));
            let expected: Vec<u64> = (0..SPAN)
                .filter(|&v| {
                    let (x, y) = (a.get(v), b.get(v));
                    let same_page = match (x.page, y.page) {
                        (None, None) => true,
                        (Some(p), Some(q)) => p.ptr() == q.ptr(),
                        _ => false,
                    };
                    x.meta != y.meta || !same_page
                })
                .collect();
            assert_eq!(got, expected);
        }
    }
}

#[test]
fn diff_against_empty_lists_every_page() {
    let mut a = PageTable::default();
    a.update(60, 70, RangeOp::Commit(3));
    let mut changed = Vec::new();
    a.diff(&PageTable::default(), |v, n, _, _| changed.extend(v..v + n));
    assert_eq!(changed, (60..70).collect::<Vec<_>>());
}

#[test]
fn matches_a_btreemap_model() {
    // A small deterministic random walk against a plain map.
    let mut t = PageTable::default();
    let mut model: BTreeMap<u64, u8> = BTreeMap::new();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let lo = next() % 5000;
        let hi = lo + next() % 300 + 1;
        let prot = [1u8, 3, 4, 5, 7, 0][(next() % 6) as usize];
        let op = match next() % 6 {
            0 => RangeOp::Commit(prot),
            1 => RangeOp::Protect(prot),
            2 => RangeOp::Clear,
            3 => RangeOp::CommitReserved(prot),
            4 => RangeOp::View { meta: meta::VIEW | meta::COMMITTED | prot, key_offset: 1 << 35 },
            _ => RangeOp::Set(meta::COMMITTED | meta::MMIO | 3),
        };
        let mut expected_delta = 0i64;
        for v in lo..hi {
            let old = model.get(&v).copied().unwrap_or(0);
            let new = match op {
                RangeOp::Commit(p) => meta::COMMITTED | p | (old & (meta::MMIO | meta::VIEW)),
                RangeOp::Protect(p) if old != 0 => (old & !meta::PROT) | p,
                RangeOp::Protect(_) => 0,
                RangeOp::Clear => 0,
                RangeOp::Set(m) => m,
                RangeOp::CommitReserved(p) if old & meta::COMMITTED == 0 => meta::COMMITTED | p,
                RangeOp::CommitReserved(_) => old,
                RangeOp::View { meta: m, .. } => m,
            };
            expected_delta += i64::from(new != 0) - i64::from(old != 0);
            if new == 0 {
                model.remove(&v);
            } else {
                model.insert(v, new);
            }
        }
        assert_eq!(t.update(lo, hi, op), expected_delta);
    }
    let got: BTreeMap<u64, u8> = collect(&t).into_iter().map(|(k, (m, _))| (k, m)).collect();
    assert_eq!(got, model);
    for v in 0..5400 {
        assert_eq!(t.get(v).meta, model.get(&v).copied().unwrap_or(0), "vpn {v}");
        let expected_aux = if t.get(v).meta & meta::VIEW != 0 { 1 << 35 } else { 0 };
        assert_eq!(t.get(v).aux, expected_aux, "aux of vpn {v}");
        let end = t.run_end(v, 5400);
        let first = model.get(&v).copied().unwrap_or(0);
        let expect = (v..5400).find(|w| model.get(w).copied().unwrap_or(0) != first).unwrap_or(5400);
        assert_eq!(end, expect, "run_end from {v}");
    }
}

/// A store lives exactly as long as something references it: a table, a
/// page handle. (A page moved into a table once kept its store alive
/// forever; miri's leak check found it.)
#[test]
fn a_store_is_freed_with_its_last_table() {
    let mut t = PageTable::default();
    t.update(0, 64, RangeOp::Commit(3));
    let store = t.store().clone();
    let weak = Arc::downgrade(&store);
    t.set_page(1, Some(PageRef::new_in(&store, &[1; PAGE], None))); // same store: moved in
    t.set_page(2, Some(page(2))); // another store: copied in, that store freed
    drop(store);
    let clone = t.clone();
    drop(t);
    assert!(weak.upgrade().is_some(), "a clone still holds it");
    assert_eq!(clone.get(2).bytes()[0], 2);
    drop(clone);
    assert!(weak.upgrade().is_none(), "the store went with its last table");
}

#[test]
fn slab_pages_are_written_once_made_records_once_and_freed_with_their_last_page() {
    // Leaks and use after free: miri runs this test (`.ci/miri`).
    let store = Store::new();
    // 70 pages: two full slabs of 31 and one of 8.
    let buffers = PageBuffers::new(&store, 70);
    std::thread::scope(|s| {
        for half in 0..2usize {
            let buffers = &buffers;
            s.spawn(move || {
                for i in (half..69).step_by(2) {
                    assert!(buffers.write(i, &page_of(i as u32)));
                }
            });
        }
    });
    assert!(!buffers.write(5, &page_of(99)), "a slot is written once");
    assert!(!buffers.write(70, &page_of(0)), "no slot 70");
    // Slot 69 was never written: it is skipped, as is a second record of 3.
    let items: Vec<(usize, u64)> =
        [0, 3, 30, 31, 62, 68, 69, 3].iter().map(|&i| (i, fingerprint(&page_of(i as u32)))).collect();
    let made = buffers.records(&items);
    assert_eq!(made.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 3, 30, 31, 62, 68]);
    for (i, p) in &made {
        assert_eq!(p.page().bytes(), &page_of(*i as u32));
        assert_eq!(p.page().fingerprint(), Some(fingerprint(&page_of(*i as u32))));
    }
    // Sealed with pages alive: the slabs stay until their last page goes.
    drop(buffers);
    let mut table = PageTable::in_store(store.clone());
    table.update(0, 80, RangeOp::Commit(RW));
    table.set_pages(made.iter().map(|(i, p)| (*i as u64, p.clone())).collect());
    drop(made);
    assert_eq!(collect(&table)[&31], (RW, Some(page_of(31)[0])));
    // A copy of a slab page into another store, then everything dropped.
    let mut other = PageTable::default();
    other.update(0, 1, RangeOp::Commit(RW));
    other.set_page(0, table.get(62).page.map(|p| p.to_ref()));
    drop(table);
    drop(store);
    assert_eq!(collect(&other)[&0], (RW, Some(page_of(62)[0])));
    assert_eq!(other.stored_pages(), 1);
}
