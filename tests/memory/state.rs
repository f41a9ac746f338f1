//! `serialize_memory_state` / `deserialize_memory_state`: byte-identical round
//! trips in both modes, version and mode checks, and hostile buffers (every
//! truncation, every bit flip, arbitrary and mutated bytes) that must give an
//! error or a valid state — never a panic, never a half-restored manager.

use proptest::prelude::*;
use vmsnap::{
    MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionKind, STATE_FORMAT_VERSION, StateError,
};

use crate::common;

fn sample() -> MemoryManager {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x6000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    mm.allocate_memory_at(0x20000, 0x4000, Protection::READ, true, RegionKind::Image).unwrap();
    mm.commit_memory(0x21000, 0x1000, Protection::READ_EXECUTE).unwrap();
    mm.protect_memory(0x11000, 1, Protection::READ_WRITE | Protection::GUARD).unwrap();
    mm.release_memory(0x13000, 0x1000).unwrap(); // splits: [0x10000,0x13000) and [0x14000,0x16000)
    mm.write_memory(0x10ff0, b"crosses a page boundary").unwrap();
    mm.write_memory(0x14000, &[0xAB; 64]).unwrap();
    mm
}

fn serialize(mm: &MemoryManager, layout_only: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    mm.serialize_memory_state(&mut buf, layout_only);
    buf
}

/// Everything observable about a manager, to compare before and after.
fn observe(mm: &MemoryManager) -> (Vec<vmsnap::ReservedRegion>, vmsnap::MemoryStats, u64, u64, Vec<u8>) {
    (
        mm.reserved_regions().collect(),
        mm.compute_memory_stats(),
        mm.layout_version(),
        mm.default_allocation_address(),
        serialize(mm, false),
    )
}

#[test]
fn contents_round_trip_is_byte_identical() {
    let mm = sample();
    let a = serialize(&mm, false);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&a, false).unwrap();
    assert_eq!(serialize(&copy, false), a);
    assert_eq!(copy.reserved_regions().collect::<Vec<_>>(), mm.reserved_regions().collect::<Vec<_>>());
    for page in (0x10000..0x26000).step_by(PAGE_SIZE as usize) {
        assert_eq!(copy.region_info(page), mm.region_info(page), "region at {page:#x}");
    }
    let mut text = [0u8; 23];
    copy.read_memory(0x10ff0, &mut text).unwrap();
    assert_eq!(&text, b"crosses a page boundary");
}

#[test]
fn layout_round_trip_is_byte_identical() {
    let mm = sample();
    let a = serialize(&mm, true);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&a, true).unwrap();
    assert_eq!(serialize(&copy, true), a);
    // No bytes travelled: the copy's committed pages read zeros.
    let mut text = [0xFFu8; 8];
    copy.read_memory(0x10ff0, &mut text).unwrap();
    assert_eq!(text, [0; 8]);
    assert!(a.len() < serialize(&mm, false).len());
}

#[test]
fn deserialize_replaces_the_whole_state() {
    let mut target = MemoryManager::new();
    target.allocate_memory_at(0x50000, 0x1000, Protection::READ, false, RegionKind::Private).unwrap();
    target.set_default_allocation_address(0x7000_0000);
    let mm = sample();
    target.deserialize_memory_state(&serialize(&mm, false), false).unwrap();
    assert!(!target.overlaps_reserved_region(0x50000, 0x1000));
    assert_eq!(target.default_allocation_address(), mm.default_allocation_address());
}

#[test]
fn layout_version_never_repeats() {
    let mm = sample();
    let buf = serialize(&mm, false);
    let mut target = MemoryManager::new();
    for _ in 0..40 {
        target.allocate_memory(0x1000, Protection::READ, false, 0, RegionKind::Private).unwrap();
    }
    let before = target.layout_version();
    assert!(before > mm.layout_version());
    target.deserialize_memory_state(&buf, false).unwrap();
    assert_eq!(target.layout_version(), before + 1);
}

#[test]
fn mmio_regions_come_back_unbound() {
    let mut mm = sample();
    mm.allocate_mmio(0x7FFE_0000, 0x1000, |_, b| b.fill(1), |_, _| {}).unwrap();
    let buf = serialize(&mm, false);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&buf, false).unwrap();
    assert_eq!(copy.region_kind(0x7FFE_0000), RegionKind::Mmio);
    assert_eq!(copy.reserved_regions().collect::<Vec<_>>(), mm.reserved_regions().collect::<Vec<_>>());
    // Its owner binds its handlers again, and it reads as the original.
    copy.bind_mmio(0x7FFE_0000, 0x1000, |_, b| b.fill(1), |_, _| {}).unwrap();
    let mut byte = [0u8];
    copy.read_memory(0x7FFE_0000, &mut byte).unwrap();
    assert_eq!(byte, [1]);
}

#[test]
fn other_versions_and_modes_are_refused() {
    let mut mm = sample();
    let good = serialize(&mm, false);
    let before = observe(&mm);
    let mut v2 = good.clone();
    v2[8..12].copy_from_slice(&(STATE_FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        mm.deserialize_memory_state(&v2, false),
        Err(MemoryError::State(StateError::UnsupportedVersion {
            found: STATE_FORMAT_VERSION + 1,
            supported: STATE_FORMAT_VERSION
        }))
    );
    assert_eq!(
        mm.deserialize_memory_state(&good, true),
        Err(MemoryError::State(StateError::ModeMismatch { buffer_has_contents: true }))
    );
    let mut magic = good.clone();
    magic[0] ^= 0x20;
    assert_eq!(mm.deserialize_memory_state(&magic, false), Err(MemoryError::State(StateError::BadMagic)));
    assert_eq!(mm.deserialize_memory_state(&[], false), Err(MemoryError::State(StateError::BadMagic)));
    assert_eq!(observe(&mm), before);
}

#[test]
fn every_truncation_is_refused_and_changes_nothing() {
    let mut mm = sample();
    for layout_only in [false, true] {
        let good = serialize(&mm, layout_only);
        let before = observe(&mm);
        for cut in 0..good.len() {
            assert!(mm.deserialize_memory_state(&good[..cut], layout_only).is_err(), "cut at {cut}");
        }
        assert_eq!(observe(&mm), before);
    }
}

#[test]
fn every_bit_flip_gives_an_error_or_a_consistent_state() {
    let small = {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 0x3000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        mm.protect_memory(0x11000, 0x1000, Protection::READ).unwrap();
        mm.write_memory(0x10000, &[7; 16]).unwrap();
        mm
    };
    let good = serialize(&small, true);
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let mut mm = sample();
        let before = observe(&mm);
        match mm.deserialize_memory_state(&bad, true) {
            Err(_) => assert_eq!(observe(&mm), before, "bit {bit}: a refused buffer changed the manager"),
            Ok(()) => assert_consistent(&mm),
        }
    }
}

/// A manager restored from a buffer must be internally consistent: its own
/// serialization round-trips and its region walk covers user space.
fn assert_consistent(mm: &MemoryManager) {
    let again = serialize(mm, false);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&again, false).unwrap();
    assert_eq!(serialize(&copy, false), again);
    let mut address = 0;
    let mut regions = 0;
    while address < vmsnap::USER_SPACE_END && regions < 10_000 {
        let r = mm.region_info(address);
        assert!(r.length > 0);
        address = r.start + r.length;
        regions += 1;
    }
    assert_eq!(address, vmsnap::USER_SPACE_END);
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512), layout_only: bool) {
        let mut buf = b"VMSNAPMS".to_vec();
        buf.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&payload);
        let mut mm = sample();
        let before = observe(&mm);
        match mm.deserialize_memory_state(&buf, layout_only) {
            Err(_) => prop_assert_eq!(observe(&mm), before),
            Ok(()) => assert_consistent(&mm),
        }
    }

    #[test]
    fn mutated_buffers_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        layout_only: bool,
    ) {
        let mut buf = serialize(&sample(), layout_only);
        for (at, byte) in edits {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x30000, 0x1000, Protection::READ, false, RegionKind::Private).unwrap();
        let before = observe(&mm);
        match mm.deserialize_memory_state(&buf, layout_only) {
            Err(_) => prop_assert_eq!(observe(&mm), before),
            Ok(()) => assert_consistent(&mm),
        }
    }
}

/// A state record as the tests see it (mirror of the `StateRecord` of
/// `src/state.rs`): contents, default allocation address, layout version,
/// allocations (base, length, protection, kind, attributes, view), page runs
/// (first page, count, state), pages, sections, section counters.
type Record = (
    bool,
    u64,
    u64,
    Vec<(u64, u64, u8, u8, u32, Option<(u64, u64)>)>,
    Vec<(u64, u64, u8)>,
    Vec<(u64, serde_bytes::ByteBuf)>,
    Vec<(u64, u64, u64, u8, bool)>,
    (u64, u64),
);

/// The kind code of `RegionKind::Mmio` in a record.
const MMIO_KIND: u8 = 5;

fn decode_record(buf: &[u8]) -> Record {
    rmp_serde::from_slice(&buf[12..]).unwrap()
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut buf = b"VMSNAPMS".to_vec();
    buf.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&rmp_serde::to_vec(record).unwrap());
    buf
}

#[test]
fn mmio_records_unlike_the_engines_are_refused() {
    let mut source = sample();
    source.allocate_mmio(0x7FFE_0000, 0x2000, |_, b| b.fill(1), |_, _| {}).unwrap();
    let good = serialize(&source, false);
    let record = decode_record(&good);
    assert_eq!(encode_record(&record), good, "the mirror re-encodes the buffer");
    let mmio = record.3.iter().position(|a| a.3 == MMIO_KIND).unwrap();
    let run = record.4.iter().position(|r| r.0 == 0x7FFE0).unwrap();
    let corrupt = |what| Err(MemoryError::State(StateError::Corrupt(what)));

    let mut mm = sample();
    let before = observe(&mm);
    let mut read_only = record.clone();
    read_only.3[mmio].2 = Protection::READ.bits();
    assert_eq!(
        mm.deserialize_memory_state(&encode_record(&read_only), false),
        corrupt("MMIO region not created read-write")
    );
    let mut state = record.clone();
    state.4[run].2 = (state.4[run].2 & !Protection::READ_WRITE.bits()) | Protection::READ.bits();
    assert_eq!(
        mm.deserialize_memory_state(&encode_record(&state), false),
        corrupt("MMIO pages not committed read-write")
    );
    let mut half = record.clone();
    half.4[run].1 = 1;
    assert_eq!(
        mm.deserialize_memory_state(&encode_record(&half), false),
        corrupt("MMIO region not wholly committed")
    );
    let mut bytes = record.clone();
    bytes.5.push((0x7FFE1, serde_bytes::ByteBuf::from(vec![1; 4096])));
    assert_eq!(
        mm.deserialize_memory_state(&encode_record(&bytes), false),
        corrupt("page bytes for a page that is not committed")
    );
    assert_eq!(observe(&mm), before, "refused buffers changed nothing");
    // The untouched record is accepted, with the region unbound.
    mm.deserialize_memory_state(&good, false).unwrap();
    assert_eq!(mm.read_memory(0x7FFE_1000, &mut [0]), Err(MemoryError::MmioUnbound { address: 0x7FFE_1000 }));
}

#[test]
fn every_bit_flip_of_a_state_with_mmio_gives_an_error_or_a_consistent_state() {
    let mut small = MemoryManager::new();
    small.allocate_memory_at(0x10000, 0x1000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    small.allocate_mmio(0x7FFE_0000, 0x1000, |_, b| b.fill(1), |_, _| {}).unwrap();
    let good = serialize(&small, true);
    let mut accepted = 0;
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let mut mm = sample();
        let before = observe(&mm);
        match mm.deserialize_memory_state(&bad, true) {
            Err(_) => assert_eq!(observe(&mm), before, "bit {bit}: a refused buffer changed the manager"),
            Ok(()) => {
                assert_consistent(&mm);
                accepted += 1;
                // Whatever MMIO region it holds is unbound: never zeros.
                for r in mm.reserved_regions().filter(|r| r.kind == RegionKind::Mmio).collect::<Vec<_>>() {
                    assert_eq!(
                        mm.read_memory(r.base, &mut [0]),
                        Err(MemoryError::MmioUnbound { address: r.base }),
                        "bit {bit}"
                    );
                }
            }
        }
    }
    assert!(accepted > 0, "some flips (addresses, attributes) give other valid states");
}
