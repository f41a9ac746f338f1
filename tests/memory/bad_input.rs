//! Hostile inputs: every operation returns a typed error (or None/false/empty
//! for queries), never panics, and changes nothing. Section numbers refer to
//! docs/windows-semantics.md; the range rules are those of the crate docs
//! (`MemoryManager::commit_memory` and its siblings, `vmsnap::page_down`/`page_up`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vmsnap::{
    MAX_ALLOCATION_ADDRESS, MIN_ALLOCATION_ADDRESS, MemoryError, MemoryManager, MemoryStats, PAGE_SIZE,
    Protection, RegionInfo, RegionKind, ReservedRegion, USER_SPACE_END, page_down, page_up,
};

use crate::common;

const RW: Protection = Protection::READ_WRITE;
/// Lowest allocation: [LOW, LOW + 0x10000), committed.
const LOW: u64 = MIN_ALLOCATION_ADDRESS;
/// [A, A + 0x10000): first 4 pages committed and patterned, the rest reserved.
const A: u64 = 0x5000_0000;
/// MMIO region [M, M + 0x1000).
const M: u64 = 0x6000_0000;
/// Highest allocation: [TOP, USER_SPACE_END), committed.
const TOP: u64 = USER_SPACE_END - 0x10000;
/// A free, 64 KiB-aligned address.
const FREE: u64 = 0x7000_0000;

/// The allocations of `setup()`, as (base, end).
const ALLOCS: [(u64, u64); 4] =
    [(LOW, LOW + 0x10000), (A, A + 0x10000), (M, M + 0x1000), (TOP, USER_SPACE_END)];

const ADDRESSES: [u64; 22] = [
    0,
    1,
    0xFFF,
    0x1000,
    0xFFFF,
    LOW + 0x8001,
    A + 1,
    A + 0x1123,
    A + 0xFFFF,
    A + 0x10000,
    FREE + 0x1000,
    TOP + 0x1000,
    USER_SPACE_END - 0x1000,
    USER_SPACE_END - 1,
    USER_SPACE_END,
    USER_SPACE_END + 0x10000,
    MAX_ALLOCATION_ADDRESS + 1,
    1 << 47,
    1 << 63,
    u64::MAX - 0xFFFF,
    u64::MAX - 0xFFF,
    u64::MAX,
];

const SIZES: [u64; 11] = [
    0,
    1,
    0x1000,
    0x2000,
    0x10001,
    USER_SPACE_END,
    1 << 47,
    1 << 63,
    u64::MAX - 0xFFF,
    u64::MAX - 1,
    u64::MAX,
];

const BAD_PROTECTIONS: [Protection; 6] = [
    Protection::WRITE,
    Protection::GUARD,
    Protection::WRITE.union(Protection::EXECUTE),
    Protection::WRITE.union(Protection::GUARD),
    Protection::from_bits_retain(0x40),
    Protection::from_bits_retain(0xFF),
];

struct Fixture {
    mm: MemoryManager,
    mmio_calls: Arc<AtomicUsize>,
}

fn setup() -> Fixture {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(LOW, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(A, 0x10000, RW, true, RegionKind::Private).unwrap();
    mm.commit_memory(A, 0x4000, RW).unwrap();
    mm.protect_memory(A + 0x3000, 0x1000, RW | Protection::GUARD).unwrap();
    let data: Vec<u8> = (0..0x4000u32).map(|i| (i % 253) as u8).collect();
    mm.write_memory(A, &data).unwrap();
    mm.allocate_memory_at(TOP, 0x10000, RW, false, RegionKind::Image).unwrap();
    mm.write_memory(USER_SPACE_END - 4, b"top!").unwrap();
    mm.write_memory(LOW, b"low!").unwrap();
    let mmio_calls = Arc::new(AtomicUsize::new(0));
    let (r, w) = (mmio_calls.clone(), mmio_calls.clone());
    mm.allocate_mmio(
        M,
        0x1000,
        move |_, _| {
            r.fetch_add(1, Ordering::SeqCst);
        },
        move |_, _| {
            w.fetch_add(1, Ordering::SeqCst);
        },
    )
    .unwrap();
    Fixture { mm, mmio_calls }
}

/// Everything observable about a manager (without calling MMIO handlers).
#[derive(Debug, PartialEq)]
struct State {
    regions: Vec<ReservedRegion>,
    stats: MemoryStats,
    layout_version: u64,
    default_address: u64,
    infos: Vec<RegionInfo>,
    bytes: Vec<u8>,
}

fn state(f: &Fixture) -> State {
    let mm = &f.mm;
    let mut infos = Vec::new();
    for (base, end) in ALLOCS {
        let mut at = base;
        while at < end {
            let i = mm.region_info(at);
            infos.push(i);
            at += i.length;
        }
        infos.push(mm.region_info(end));
    }
    let mut bytes = vec![0u8; 0x4000];
    mm.read_memory(A, &mut bytes).unwrap();
    let mut top = [0u8; 4];
    mm.read_memory(USER_SPACE_END - 4, &mut top).unwrap();
    bytes.extend_from_slice(&top);
    let mut low = [0u8; 4];
    mm.read_memory(LOW, &mut low).unwrap();
    bytes.extend_from_slice(&low);
    State {
        regions: mm.reserved_regions().collect(),
        stats: mm.compute_memory_stats(),
        layout_version: mm.layout_version(),
        default_address: mm.default_allocation_address(),
        infos,
        bytes,
    }
}

/// Runs `op`, which must fail, and checks that nothing changed.
fn refused<T: std::fmt::Debug>(
    f: &mut Fixture,
    what: &str,
    op: impl FnOnce(&mut MemoryManager) -> Result<T, MemoryError>,
) -> MemoryError {
    let before = state(f);
    let calls = f.mmio_calls.load(Ordering::SeqCst);
    let r = op(&mut f.mm);
    assert_eq!(state(f), before, "{what} changed the state");
    assert_eq!(f.mmio_calls.load(Ordering::SeqCst), calls, "{what} called an MMIO handler");
    match r {
        Ok(v) => panic!("{what} succeeded: {v:?}"),
        Err(e) => e,
    }
}

fn containing(address: u64) -> Option<(u64, u64)> {
    ALLOCS.into_iter().find(|&(b, e)| b <= address && address < e)
}

/// The error a commit/decommit/protect/partial release of `[address, address + size)`
/// must give in `setup()`, for ranges that are not inside one allocation.
fn range_error(address: u64, size: u64) -> Option<MemoryError> {
    if size == 0 {
        return Some(MemoryError::ZeroSize { address });
    }
    let Some(end) = address.checked_add(size) else {
        return Some(MemoryError::RangeOverflow { address, size });
    };
    if end > USER_SPACE_END {
        return Some(MemoryError::OutsideUserSpace { address, size });
    }
    let (lo, hi) = (page_down(address), page_up(end).unwrap());
    match containing(lo) {
        Some((_, e)) if hi <= e => None, // a legal range
        _ => Some(MemoryError::NotInOneAllocation { address: lo, size: hi - lo }),
    }
}

// ------------------------------------------------------------------- exact errors

#[test]
fn overflowing_ranges_are_range_overflow() {
    let mut f = setup();
    for (address, size) in [(u64::MAX - 0xFFF, 0x2000), (0x10000, u64::MAX), (A, u64::MAX - 1)] {
        let e = MemoryError::RangeOverflow { address, size };
        assert_eq!(refused(&mut f, "commit", |mm| mm.commit_memory(address, size, RW)), e);
        assert_eq!(refused(&mut f, "decommit", |mm| mm.decommit_memory(address, size)), e);
        assert_eq!(refused(&mut f, "protect", |mm| mm.protect_memory(address, size, RW)), e);
        assert_eq!(refused(&mut f, "release", |mm| mm.release_memory(address, size)), e);
    }
    for (address, size) in [(u64::MAX - 0xFFFF, 0x20000), (0x10000, u64::MAX), (FREE, u64::MAX - 0xFFF)] {
        let e = MemoryError::RangeOverflow { address, size };
        assert_eq!(
            refused(&mut f, "allocate_at", |mm| {
                mm.allocate_memory_at(address, size, RW, false, RegionKind::Private)
            }),
            e
        );
        assert_eq!(refused(&mut f, "mmio", |mm| mm.allocate_mmio(address, size, |_, _| {}, |_, _| {})), e);
    }
    // u64::MAX - 0xFFF is page aligned but not 64 KiB aligned.
    assert_eq!(
        refused(&mut f, "allocate_at", |mm| {
            mm.allocate_memory_at(u64::MAX - 0xFFF, 0x2000, RW, false, RegionKind::Private)
        }),
        MemoryError::Misaligned { address: u64::MAX - 0xFFF, alignment: 0x10000 }
    );
    assert_eq!(
        refused(&mut f, "mmio", |mm| mm.allocate_mmio(u64::MAX - 0xFFF, 0x2000, |_, _| {}, |_, _| {})),
        MemoryError::RangeOverflow { address: u64::MAX - 0xFFF, size: 0x2000 }
    );
}

#[test]
fn ranges_past_user_space_end_are_outside_user_space() {
    // §2: ranges past the limit are rejected.
    let mut f = setup();
    for (address, size) in [
        (USER_SPACE_END - 0x1000, 0x1001),
        (USER_SPACE_END - 1, 2),
        (USER_SPACE_END, 0x1000),
        (1 << 63, 1),
        (A, USER_SPACE_END),
    ] {
        let e = MemoryError::OutsideUserSpace { address, size };
        assert_eq!(refused(&mut f, "commit", |mm| mm.commit_memory(address, size, RW)), e);
        assert_eq!(refused(&mut f, "decommit", |mm| mm.decommit_memory(address, size)), e);
        assert_eq!(refused(&mut f, "protect", |mm| mm.protect_memory(address, size, RW)), e);
        assert_eq!(refused(&mut f, "release", |mm| mm.release_memory(address, size)), e);
    }
    for (address, size) in
        [(TOP, 0x10001), (USER_SPACE_END, 0x1000), (1 << 63, 0x1000), (FREE, USER_SPACE_END)]
    {
        let e = MemoryError::OutsideUserSpace { address, size };
        assert_eq!(
            refused(&mut f, "allocate_at", |mm| {
                mm.allocate_memory_at(address, size, RW, true, RegionKind::Private)
            }),
            e
        );
        assert_eq!(refused(&mut f, "mmio", |mm| mm.allocate_mmio(address, size, |_, _| {}, |_, _| {})), e);
    }
}

#[test]
fn size_zero_is_zero_size() {
    // §3: a size of 0 is an error for allocation (and for every range operation).
    let mut f = setup();
    for address in [A, A + 0x1000, FREE, USER_SPACE_END - 0x1000] {
        let e = MemoryError::ZeroSize { address };
        assert_eq!(refused(&mut f, "commit", |mm| mm.commit_memory(address, 0, RW)), e);
        assert_eq!(refused(&mut f, "decommit", |mm| mm.decommit_memory(address, 0)), e);
        assert_eq!(refused(&mut f, "protect", |mm| mm.protect_memory(address, 0, RW)), e);
    }
    assert_eq!(
        refused(&mut f, "allocate_at", |mm| mm.allocate_memory_at(FREE, 0, RW, false, RegionKind::Private)),
        MemoryError::ZeroSize { address: FREE }
    );
    assert_eq!(
        refused(&mut f, "mmio", |mm| mm.allocate_mmio(FREE, 0, |_, _| {}, |_, _| {})),
        MemoryError::ZeroSize { address: FREE }
    );
    assert_eq!(
        refused(&mut f, "allocate", |mm| mm.allocate_memory(0, RW, false, FREE, RegionKind::Private)),
        MemoryError::ZeroSize { address: FREE }
    );
    assert_eq!(f.mm.find_free_allocation_base(0, FREE), None);
    assert!(!f.mm.overlaps_reserved_region(A, 0));
}

#[test]
fn misaligned_and_low_allocation_addresses_are_refused() {
    // §2 and §4.2.
    let mut f = setup();
    for address in [1, 0xFFF, 0x1000, 0xFFFF, FREE + 0x1000, FREE + 1, u64::MAX] {
        assert_eq!(
            refused(&mut f, "allocate_at", |mm| {
                mm.allocate_memory_at(address, 0x1000, RW, false, RegionKind::Private)
            }),
            MemoryError::Misaligned { address, alignment: 0x10000 }
        );
    }
    for address in [FREE + 1, FREE + 0x800, u64::MAX] {
        assert_eq!(
            refused(&mut f, "mmio", |mm| mm.allocate_mmio(address, 0x1000, |_, _| {}, |_, _| {})),
            MemoryError::Misaligned { address, alignment: PAGE_SIZE }
        );
    }
    assert_eq!(
        refused(&mut f, "allocate_at", |mm| mm.allocate_memory_at(0, 0x1000, RW, false, RegionKind::Private)),
        MemoryError::OutsideUserSpace { address: 0, size: 0x1000 }
    );
    for address in [0, 0x1000, 0xF000] {
        assert_eq!(
            refused(&mut f, "mmio", |mm| mm.allocate_mmio(address, 0x1000, |_, _| {}, |_, _| {})),
            MemoryError::OutsideUserSpace { address, size: 0x1000 }
        );
    }
}

#[test]
fn invalid_protections_are_invalid_protection() {
    // §5: STATUS_INVALID_PAGE_PROTECTION, whatever the rest of the call.
    let mut f = setup();
    for p in BAD_PROTECTIONS {
        let e = MemoryError::InvalidProtection(p);
        assert_eq!(
            refused(&mut f, "allocate_at", |mm| mm.allocate_memory_at(
                FREE,
                0x1000,
                p,
                false,
                RegionKind::Private
            )),
            e
        );
        assert_eq!(
            refused(&mut f, "allocate_at reserve", |mm| mm.allocate_memory_at(
                FREE,
                0x1000,
                p,
                true,
                RegionKind::Private
            )),
            e
        );
        assert_eq!(
            refused(&mut f, "allocate", |mm| mm.allocate_memory(0x1000, p, false, 0, RegionKind::Private)),
            e
        );
        assert_eq!(refused(&mut f, "commit", |mm| mm.commit_memory(A + 0x4000, 0x1000, p)), e);
        assert_eq!(refused(&mut f, "recommit", |mm| mm.commit_memory(A, 0x1000, p)), e);
        assert_eq!(refused(&mut f, "protect", |mm| mm.protect_memory(A, 0x1000, p)), e);
        assert_eq!(refused(&mut f, "protect", |mm| mm.protect_memory(A, 0x4000, p)), e);
    }
}

#[test]
fn free_and_mmio_kinds_are_invalid_kind() {
    let mut f = setup();
    for kind in [RegionKind::Free, RegionKind::Mmio] {
        let e = MemoryError::InvalidKind(kind);
        assert_eq!(
            refused(&mut f, "allocate_at", |mm| mm.allocate_memory_at(FREE, 0x1000, RW, false, kind)),
            e
        );
        assert_eq!(
            refused(&mut f, "allocate_at reserve", |mm| mm.allocate_memory_at(FREE, 0x1000, RW, true, kind)),
            e
        );
        assert_eq!(refused(&mut f, "allocate", |mm| mm.allocate_memory(0x1000, RW, false, 0, kind)), e);
    }
}

#[test]
fn addresses_at_and_above_user_space_end_are_free_with_length_zero() {
    let f = setup();
    let mm = &f.mm;
    for address in [USER_SPACE_END, USER_SPACE_END + 1, USER_SPACE_END + 0x10000, 1 << 47, 1 << 63, u64::MAX]
    {
        assert_eq!(mm.region_info(address), common::free_info(page_down(address), 0), "{address:#x}");
        assert_eq!(mm.region_kind(address), RegionKind::Free);
        assert!(!mm.overlaps_reserved_region(address, u64::MAX));
        assert_eq!(mm.find_free_allocation_base(0x1000, address), None);
    }
    // The last page below the end is the top allocation.
    let i = mm.region_info(USER_SPACE_END - 1);
    assert_eq!((i.start, i.length, i.allocation_base), (USER_SPACE_END - 0x1000, 0x1000, TOP));
    // Free memory below MIN_ALLOCATION_ADDRESS (NULL included) is queryable (§2, §8).
    let i = mm.region_info(0);
    assert_eq!((i.start, i.length, i.kind, i.allocation_base), (0, LOW, RegionKind::Free, 0));
}

#[test]
fn release_of_bad_addresses_with_size_zero_is_refused() {
    let mut f = setup();
    for address in [0, 0x1000, FREE, USER_SPACE_END, 1 << 63, u64::MAX - 0xFFF, u64::MAX] {
        assert_eq!(
            refused(&mut f, "release", |mm| mm.release_memory(address, 0)),
            MemoryError::NotAllocated { address }
        );
    }
    for (address, base) in
        [(A + 0x1123, A), (TOP + 0x1000, TOP), (USER_SPACE_END - 1, TOP), (LOW + 0x8001, LOW)]
    {
        assert_eq!(
            refused(&mut f, "release", |mm| mm.release_memory(address, 0)),
            MemoryError::NotAllocationBase { address, base }
        );
    }
}

#[test]
fn host_and_guest_accesses_outside_user_space_fail() {
    let mut f = setup();
    let mut buf = [0u8; 16];
    // Running off the top allocation into the end of user space.
    assert_eq!(
        f.mm.read_memory(USER_SPACE_END - 8, &mut buf),
        Err(MemoryError::NotAllocated { address: USER_SPACE_END })
    );
    assert_eq!(
        refused(&mut f, "write", |mm| mm.write_memory(USER_SPACE_END - 8, &[9; 16])),
        MemoryError::NotAllocated { address: USER_SPACE_END }
    );
    assert_eq!(
        refused(&mut f, "guest_read", |mm| mm.guest_read(USER_SPACE_END - 8, &mut [0u8; 16])),
        MemoryError::AccessViolation { address: USER_SPACE_END, access: vmsnap::Access::Read }
    );
    assert_eq!(
        refused(&mut f, "guest_write", |mm| mm.guest_write(USER_SPACE_END - 8, &[9; 16])),
        MemoryError::AccessViolation { address: USER_SPACE_END, access: vmsnap::Access::Write }
    );
    for address in [USER_SPACE_END, 1 << 47, 1 << 63, u64::MAX - 0xFFF] {
        assert_eq!(f.mm.read_memory(address, &mut buf), Err(MemoryError::NotAllocated { address }));
        assert_eq!(
            refused(&mut f, "guest_fetch", |mm| mm.guest_fetch(address, &mut [0u8; 16])),
            MemoryError::AccessViolation { address, access: vmsnap::Access::Execute }
        );
    }
    // address + len overflows.
    let address = u64::MAX - 7;
    assert_eq!(f.mm.read_memory(address, &mut buf), Err(MemoryError::RangeOverflow { address, size: 16 }));
    assert_eq!(
        refused(&mut f, "write", |mm| mm.write_memory(address, &[0; 16])),
        MemoryError::RangeOverflow { address, size: 16 }
    );
    assert_eq!(
        refused(&mut f, "guest_write", |mm| mm.guest_write(address, &[0; 16])),
        MemoryError::RangeOverflow { address, size: 16 }
    );
    assert!(!f.mm.try_read_memory(address, &mut buf));
    assert!(!f.mm.try_write_memory(address, &buf));
}

#[test]
fn find_free_allocation_base_with_hostile_inputs_is_none() {
    let f = setup();
    for size in [0, USER_SPACE_END, 1 << 47, 1 << 63, u64::MAX - 0xFFF, u64::MAX] {
        for start in [0, 1, LOW, A, USER_SPACE_END, 1 << 63, u64::MAX] {
            assert_eq!(f.mm.find_free_allocation_base(size, start), None, "{size:#x} {start:#x}");
        }
    }
    for start in [USER_SPACE_END, USER_SPACE_END + 1, 1 << 63, u64::MAX, TOP, TOP + 1] {
        for size in SIZES {
            assert_eq!(f.mm.find_free_allocation_base(size, start), None, "{size:#x} {start:#x}");
        }
    }
}

// --------------------------------------------------------------------------- grids

#[test]
fn grid_commit_decommit_protect_refuse_hostile_ranges() {
    let mut f = setup();
    let mut checked = 0;
    for address in ADDRESSES {
        for size in SIZES {
            let Some(expected) = range_error(address, size) else { continue };
            let what = format!("({address:#x}, {size:#x})");
            assert_eq!(
                refused(&mut f, &what, |mm| mm.commit_memory(address, size, RW)),
                expected,
                "commit {what}"
            );
            assert_eq!(
                refused(&mut f, &what, |mm| mm.decommit_memory(address, size)),
                expected,
                "decommit {what}"
            );
            assert_eq!(
                refused(&mut f, &what, |mm| mm.protect_memory(address, size, Protection::READ)),
                expected,
                "protect {what}"
            );
            for p in BAD_PROTECTIONS {
                assert_eq!(
                    refused(&mut f, &what, |mm| mm.commit_memory(address, size, p)),
                    MemoryError::InvalidProtection(p)
                );
                assert_eq!(
                    refused(&mut f, &what, |mm| mm.protect_memory(address, size, p)),
                    MemoryError::InvalidProtection(p)
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn grid_release_refuses_hostile_ranges() {
    let mut f = setup();
    for address in ADDRESSES {
        for size in SIZES {
            let what = format!("release({address:#x}, {size:#x})");
            let expected = if size == 0 {
                match containing(page_down(address)) {
                    // A whole-allocation release: legal at the base page.
                    Some((base, _)) if base == page_down(address) => continue,
                    Some((base, _)) => MemoryError::NotAllocationBase { address, base },
                    None => MemoryError::NotAllocated { address },
                }
            } else {
                match range_error(address, size) {
                    None => continue,
                    Some(MemoryError::NotInOneAllocation { .. })
                        if containing(page_down(address)).is_none() =>
                    {
                        MemoryError::NotAllocated { address }
                    }
                    Some(e) => e,
                }
            };
            assert_eq!(refused(&mut f, &what, |mm| mm.release_memory(address, size)), expected, "{what}");
        }
    }
}

#[test]
fn grid_allocate_at_and_mmio_refuse_hostile_ranges() {
    let mut f = setup();
    let mut addresses = ADDRESSES.to_vec();
    // Aligned addresses: occupied, at the end, or beyond it.
    addresses.extend([LOW, A, TOP, 0, u64::MAX - 0xFFFF, 1 << 63]);
    for address in addresses {
        for size in SIZES {
            let fits = size != 0
                && address >= MIN_ALLOCATION_ADDRESS
                && address.checked_add(size).is_some_and(|e| e <= USER_SPACE_END)
                && !f.mm.overlaps_reserved_region(address, size);
            let what = format!("({address:#x}, {size:#x})");
            if !(fits && address.is_multiple_of(0x10000)) {
                refused(&mut f, &what, |mm| {
                    mm.allocate_memory_at(address, size, RW, false, RegionKind::Private)
                });
                refused(&mut f, &what, |mm| {
                    mm.allocate_memory_at(address, size, RW, true, RegionKind::Image)
                });
            }
            if !(fits && address.is_multiple_of(PAGE_SIZE)) {
                refused(&mut f, &what, |mm| mm.allocate_mmio(address, size, |_, _| {}, |_, _| {}));
            }
            for p in BAD_PROTECTIONS {
                assert_eq!(
                    refused(&mut f, &what, |mm| mm.allocate_memory_at(
                        address,
                        size,
                        p,
                        true,
                        RegionKind::Private
                    )),
                    MemoryError::InvalidProtection(p)
                );
            }
            for kind in [RegionKind::Free, RegionKind::Mmio] {
                assert_eq!(
                    refused(&mut f, &what, |mm| mm.allocate_memory_at(address, size, RW, false, kind)),
                    MemoryError::InvalidKind(kind)
                );
            }
        }
    }
}

#[test]
fn grid_allocate_memory_refuses_hostile_sizes_and_starts() {
    let mut f = setup();
    let huge = [0, USER_SPACE_END, 1 << 47, 1 << 63, u64::MAX - 0xFFF, u64::MAX];
    let high_starts = [TOP, TOP + 1, USER_SPACE_END - 1, USER_SPACE_END, 1 << 63, u64::MAX];
    let mut cases = Vec::new();
    for size in huge {
        for start in ADDRESSES {
            cases.push((size, start));
        }
    }
    for start in high_starts {
        for size in SIZES {
            cases.push((size, start));
        }
    }
    for (size, start) in cases {
        let what = format!("allocate_memory({size:#x}, start {start:#x})");
        let e = refused(&mut f, &what, |mm| mm.allocate_memory(size, RW, false, start, RegionKind::Private));
        if size == 0 {
            assert_eq!(e, MemoryError::ZeroSize { address: start }, "{what}");
        } else {
            assert!(matches!(e, MemoryError::NoFreeSpace { size: s, .. } if s == size), "{what}: {e:?}");
        }
    }
}

#[test]
fn grid_host_and_guest_accesses_refuse_hostile_ranges() {
    let mut f = setup();
    let lens = [1usize, 0x10, 0x1001, 0x2000];
    for address in ADDRESSES {
        for len in lens {
            let legal = address
                .checked_add(len as u64)
                .is_some_and(|end| ALLOCS.iter().any(|&(b, e)| b <= address && end <= e));
            if legal {
                continue;
            }
            let what = format!("({address:#x}, {len:#x})");
            let mut buf = vec![0xCCu8; len];
            let r = f.mm.read_memory(address, &mut buf);
            assert!(
                matches!(
                    r,
                    Err(MemoryError::NotAllocated { .. }
                        | MemoryError::NotCommitted { .. }
                        | MemoryError::RangeOverflow { .. })
                ),
                "read {what}: {r:?}"
            );
            let e = refused(&mut f, &what, |mm| mm.write_memory(address, &vec![0x99; len]));
            assert_eq!(Err(e), r, "write and read disagree at {what}");
            refused(&mut f, &what, |mm| mm.guest_write(address, &vec![0x99; len]));
            refused(&mut f, &what, |mm| mm.guest_read(address, &mut vec![0u8; len]));
            refused(&mut f, &what, |mm| mm.guest_fetch(address, &mut vec![0u8; len]));
        }
    }
}

#[test]
fn queries_with_hostile_inputs_do_not_panic_or_change_anything() {
    let f = setup();
    let before = state(&f);
    for address in ADDRESSES {
        let i = f.mm.region_info(address);
        assert_eq!(i.start, page_down(address));
        assert!(i.start.checked_add(i.length).is_some_and(|e| e <= USER_SPACE_END) || i.length == 0);
        let _ = f.mm.region_kind(address);
        for size in SIZES {
            let _ = f.mm.overlaps_reserved_region(address, size);
            let _ = f.mm.find_free_allocation_base(size, address);
        }
    }
    assert_eq!(state(&f), before);
}

#[test]
fn hostile_default_allocation_addresses_make_allocate_memory_fail_cleanly() {
    let mut f = setup();
    for default in [USER_SPACE_END, USER_SPACE_END + 1, TOP + 1, 1 << 63, u64::MAX] {
        f.mm.set_default_allocation_address(default);
        assert_eq!(f.mm.default_allocation_address(), default);
        assert_eq!(f.mm.find_free_allocation_base(0x1000, 0), None);
        let e = refused(&mut f, "allocate_memory", |mm| {
            mm.allocate_memory(0x1000, RW, false, 0, RegionKind::Private)
        });
        assert!(matches!(e, MemoryError::NoFreeSpace { size: 0x1000, .. }), "{default:#x}: {e:?}");
    }
    // A default below MIN_ALLOCATION_ADDRESS searches from MIN_ALLOCATION_ADDRESS (LOW is taken).
    f.mm.set_default_allocation_address(1);
    assert_eq!(f.mm.find_free_allocation_base(0x1000, 0), Some(LOW + 0x10000));
}
