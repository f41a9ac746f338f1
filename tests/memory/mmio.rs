//! MMIO regions: placement, handler calls, region_info, and the operations
//! they refuse (`MemoryManager::allocate_mmio`).

use std::sync::{Arc, Mutex};

use vmsnap::{
    Access, MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind, ReservedRegion,
};

const RW: Protection = Protection::READ_WRITE;
const B: u64 = 0x4000_0000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
}

type Log = Arc<Mutex<Vec<Call>>>;

/// The byte the read handler returns at `offset`.
fn device_byte(offset: u64) -> u8 {
    (offset as u8) ^ 0xA5
}

/// Maps an MMIO region at `address` whose handlers log every call.
fn map(mm: &mut MemoryManager, address: u64, size: u64) -> Result<Log, MemoryError> {
    let log: Log = Arc::default();
    let (r, w) = (log.clone(), log.clone());
    mm.allocate_mmio(
        address,
        size,
        move |offset, buf| {
            r.lock().unwrap().push(Call::Read { offset, len: buf.len() });
            for (i, b) in buf.iter_mut().enumerate() {
                *b = device_byte(offset + i as u64);
            }
        },
        move |offset, data| {
            w.lock().unwrap().push(Call::Write { offset, data: data.to_vec() });
        },
    )?;
    Ok(log)
}

fn take(log: &Log) -> Vec<Call> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn device_bytes(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| device_byte(offset + i)).collect()
}

#[test]
fn allocate_mmio_requires_page_aligned_address() {
    let mut mm = MemoryManager::new();
    for address in [B + 1, B + 0x800, B + 0xFFF] {
        assert_eq!(
            map(&mut mm, address, 0x1000).err(),
            Some(MemoryError::Misaligned { address, alignment: PAGE_SIZE })
        );
    }
    assert_eq!(mm.reserved_regions().count(), 0);
    assert_eq!(mm.layout_version(), 0);
    // Page alignment is enough: MMIO need not be 64 KiB aligned.
    map(&mut mm, B + 0x3000, 0x1000).unwrap();
    assert_eq!(mm.region_kind(B + 0x3000), RegionKind::Mmio);
}

#[test]
fn allocate_mmio_rejects_size_zero_and_low_addresses() {
    let mut mm = MemoryManager::new();
    assert_eq!(map(&mut mm, B, 0).err(), Some(MemoryError::ZeroSize { address: B }));
    assert_eq!(
        map(&mut mm, 0x1000, 0x1000).err(),
        Some(MemoryError::OutsideUserSpace { address: 0x1000, size: 0x1000 })
    );
    assert_eq!(mm.reserved_regions().count(), 0);
}

#[test]
fn allocate_mmio_rounds_size_up_to_pages() {
    let mut mm = MemoryManager::new();
    map(&mut mm, B, 0x1801).unwrap();
    assert_eq!(
        mm.reserved_regions().collect::<Vec<_>>(),
        vec![ReservedRegion {
            base: B,
            length: 0x2000,
            kind: RegionKind::Mmio,
            initial_permissions: RW,
            attributes: 0
        }]
    );
    let stats = mm.compute_memory_stats();
    assert_eq!((stats.reserved_memory, stats.committed_memory), (0x2000, 0x2000));
}

#[test]
fn mmio_region_info_reports_committed_read_write_mmio() {
    let mut mm = MemoryManager::new();
    map(&mut mm, B, 0x3000).unwrap();
    assert_eq!(
        mm.region_info(B + 0x1234),
        RegionInfo {
            start: B + 0x1000,
            length: 0x2000,
            allocation_base: B,
            allocation_length: 0x3000,
            is_reserved: true,
            is_committed: true,
            permissions: RW,
            initial_permissions: RW,
            kind: RegionKind::Mmio,
            attributes: 0,
        }
    );
    assert_eq!(mm.region_kind(B), RegionKind::Mmio);
    assert_eq!(mm.region_kind(B + 0x3000), RegionKind::Free);
}

#[test]
fn handlers_receive_offset_from_region_base() {
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x4000).unwrap();
    let mut buf = [0u8; 4];
    mm.read_memory(B + 0x123, &mut buf).unwrap();
    assert_eq!(buf.to_vec(), device_bytes(0x123, 4));
    mm.write_memory(B + 0x2345, b"io").unwrap();
    assert_eq!(
        take(&log),
        vec![Call::Read { offset: 0x123, len: 4 }, Call::Write { offset: 0x2345, data: b"io".to_vec() },]
    );
}

#[test]
fn one_handler_call_per_contiguous_access_inside_region() {
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x4000).unwrap();
    let mut buf = vec![0u8; 0x2800];
    mm.read_memory(B + 0x800, &mut buf).unwrap();
    assert_eq!(buf, device_bytes(0x800, 0x2800));
    let data: Vec<u8> = (0..0x3000u32).map(|i| i as u8).collect();
    mm.write_memory(B + 0x1000, &data).unwrap();
    assert_eq!(
        take(&log),
        vec![Call::Read { offset: 0x800, len: 0x2800 }, Call::Write { offset: 0x1000, data },]
    );
}

#[test]
fn accesses_spanning_mmio_and_normal_memory() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(B - 0x10000, 0x10000, RW, false, RegionKind::Private).unwrap();
    let log = map(&mut mm, B, 0x10000).unwrap();
    mm.allocate_memory_at(B + 0x10000, 0x10000, RW, false, RegionKind::Private).unwrap();
    mm.write_memory(B - 0x10, &[0x77; 0x10]).unwrap();
    mm.write_memory(B + 0x10000, &[0x88; 0x10]).unwrap();
    assert_eq!(take(&log), vec![]);

    // Read: normal, MMIO (one call), normal.
    let mut buf = vec![0u8; 0x10020];
    mm.read_memory(B - 0x10, &mut buf).unwrap();
    assert_eq!(buf[..0x10], [0x77; 0x10]);
    assert_eq!(buf[0x10..0x10010], device_bytes(0, 0x10000)[..]);
    assert_eq!(buf[0x10010..], [0x88; 0x10]);
    assert_eq!(take(&log), vec![Call::Read { offset: 0, len: 0x10000 }]);

    // Write: the normal bytes land in memory, the MMIO part goes to one call.
    let data: Vec<u8> = (0..0x10020u32).map(|i| (i % 251) as u8).collect();
    mm.write_memory(B - 0x10, &data).unwrap();
    assert_eq!(take(&log), vec![Call::Write { offset: 0, data: data[0x10..0x10010].to_vec() }]);
    let mut lo = [0u8; 0x10];
    mm.read_memory(B - 0x10, &mut lo).unwrap();
    assert_eq!(lo[..], data[..0x10]);
    let mut hi = [0u8; 0x10];
    mm.read_memory(B + 0x10000, &mut hi).unwrap();
    assert_eq!(hi[..], data[0x10010..]);
    assert_eq!(take(&log), vec![]);
}

#[test]
fn failed_access_spanning_mmio_calls_no_handler() {
    // A failed write writes nothing: the device must not see part of it.
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x1000).unwrap();
    assert_eq!(
        mm.write_memory(B + 0xFF0, &[1; 0x20]),
        Err(MemoryError::NotAllocated { address: B + 0x1000 })
    );
    let mut buf = [0u8; 0x20];
    assert_eq!(mm.read_memory(B + 0xFF0, &mut buf), Err(MemoryError::NotAllocated { address: B + 0x1000 }));
    assert_eq!(take(&log), vec![]);
}

#[test]
fn guest_accesses_to_mmio_go_through_handlers() {
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x1000).unwrap();
    let mut buf = [0u8; 8];
    mm.guest_read(B + 8, &mut buf).unwrap();
    assert_eq!(buf.to_vec(), device_bytes(8, 8));
    mm.guest_write(B + 16, b"abc").unwrap();
    // READ | WRITE only: no execute.
    assert_eq!(
        mm.guest_fetch(B, &mut buf),
        Err(MemoryError::AccessViolation { address: B, access: Access::Execute })
    );
    assert_eq!(
        take(&log),
        vec![Call::Read { offset: 8, len: 8 }, Call::Write { offset: 16, data: b"abc".to_vec() },]
    );
}

#[test]
fn commit_decommit_protect_on_mmio_are_refused() {
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x3000).unwrap();
    let v = mm.layout_version();
    let err = Err(MemoryError::MmioRegion { base: B });
    assert_eq!(mm.decommit_memory(B, 0x1000), err);
    assert_eq!(mm.decommit_memory(B + 0x1000, 0x2000), err);
    assert_eq!(mm.commit_memory(B, 0x3000, RW), err);
    assert_eq!(mm.commit_memory(B + 0x2000, 1, Protection::READ), err);
    assert_eq!(mm.protect_memory(B, 0x1000, Protection::READ).map(|_| ()), err);
    assert_eq!(mm.protect_memory(B + 0x1000, 0x1000, RW).map(|_| ()), err);
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.region_info(B).length, 0x3000);
    assert_eq!(mm.region_info(B).permissions, RW);
    assert_eq!(take(&log), vec![]);
}

#[test]
fn partial_release_of_mmio_is_refused() {
    let mut mm = MemoryManager::new();
    map(&mut mm, B, 0x3000).unwrap();
    let v = mm.layout_version();
    let err = Err(MemoryError::MmioRegion { base: B });
    assert_eq!(mm.release_memory(B, 0x1000), err);
    assert_eq!(mm.release_memory(B + 0x1000, 0x1000), err);
    assert_eq!(mm.release_memory(B + 0x2000, 0x1000), err);
    assert_eq!(
        mm.release_memory(B + 0x1000, 0),
        Err(MemoryError::NotAllocationBase { address: B + 0x1000, base: B })
    );
    assert_eq!(mm.layout_version(), v);
    assert_eq!(mm.reserved_regions().map(|r| (r.base, r.length)).collect::<Vec<_>>(), vec![(B, 0x3000)]);
}

#[test]
fn release_at_base_with_size_zero_removes_mmio() {
    let mut mm = MemoryManager::new();
    let log = map(&mut mm, B, 0x3000).unwrap();
    mm.release_memory(B, 0).unwrap();
    assert_eq!(mm.reserved_regions().count(), 0);
    let stats = mm.compute_memory_stats();
    assert_eq!((stats.reserved_memory, stats.committed_memory), (0, 0));
    assert_eq!(mm.region_info(B).kind, RegionKind::Free);
    let mut buf = [0u8; 4];
    assert_eq!(mm.read_memory(B, &mut buf), Err(MemoryError::NotAllocated { address: B }));
    assert_eq!(mm.write_memory(B, &buf), Err(MemoryError::NotAllocated { address: B }));
    assert_eq!(take(&log), vec![]);
    // The range can be used for normal memory again.
    mm.allocate_memory_at(B, 0x1000, RW, false, RegionKind::Private).unwrap();
    mm.read_memory(B, &mut buf).unwrap();
    assert_eq!(buf, [0; 4]);
    assert_eq!(take(&log), vec![]);
}

#[test]
fn mmio_conflicts_with_existing_allocations() {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(B, 0x2000, RW, true, RegionKind::Private).unwrap();
    let v = mm.layout_version();
    assert_eq!(
        map(&mut mm, B + 0x1000, 0x1000).err(),
        Some(MemoryError::ConflictingAddresses { address: B + 0x1000, size: 0x1000, existing: B })
    );
    assert_eq!(
        map(&mut mm, B - 0x1000, 0x2000).err(),
        Some(MemoryError::ConflictingAddresses { address: B - 0x1000, size: 0x2000, existing: B })
    );
    assert_eq!(mm.layout_version(), v);
    // An allocation over an MMIO region conflicts too.
    map(&mut mm, B + 0x20000, 0x1000).unwrap();
    assert_eq!(
        mm.allocate_memory_at(B + 0x20000, 0x1000, RW, false, RegionKind::Private),
        Err(MemoryError::ConflictingAddresses { address: B + 0x20000, size: 0x1000, existing: B + 0x20000 })
    );
    assert_eq!(
        map(&mut mm, B + 0x20000, 0x1000).err(),
        Some(MemoryError::ConflictingAddresses { address: B + 0x20000, size: 0x1000, existing: B + 0x20000 })
    );
    // allocate_memory skips it.
    assert_eq!(mm.allocate_memory(0x1000, RW, false, B + 0x20000, RegionKind::Private), Ok(B + 0x30000));
}

#[test]
fn allocate_mmio_advances_layout_version() {
    let mut mm = MemoryManager::new();
    let v = mm.layout_version();
    map(&mut mm, B, 0x1000).unwrap();
    assert!(mm.layout_version() > v);
}

// ------------------------------------------ regions restored without handlers ----

/// A manager with private memory around a logged MMIO region of 3 pages at
/// `B`, and its state buffer in `layout_only` mode.
fn serialized(layout_only: bool) -> (MemoryManager, Log, Vec<u8>) {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(B - 0x10000, 0x10000, RW, false, RegionKind::Private).unwrap();
    let log = map(&mut mm, B, 0x3000).unwrap();
    mm.write_memory(B - 0x10, &[0x77; 0x10]).unwrap();
    take(&log);
    let mut buf = Vec::new();
    mm.serialize_memory_state(&mut buf, layout_only);
    (mm, log, buf)
}

fn state_of(mm: &MemoryManager) -> Vec<u8> {
    let mut buf = Vec::new();
    mm.serialize_memory_state(&mut buf, false);
    buf
}

/// `mm`'s MMIO region at `B` is unbound: every access to it is
/// `MmioUnbound` at its first byte in the region, never zeros, and changes
/// nothing (not the bytes of normal memory the access also covers).
fn assert_unbound(mm: &mut MemoryManager) {
    let before = (state_of(mm), mm.layout_version());
    let mut buf = [0xEEu8; 0x20];
    for address in [B, B + 0x1234, B + 0x2FF0] {
        let unbound = Err(MemoryError::MmioUnbound { address });
        assert_eq!(mm.read_memory(address, &mut buf[..8]), unbound);
        assert_eq!(mm.write_memory(address, &[1; 8]), unbound);
        assert_eq!(mm.guest_read(address, &mut buf[..8]), unbound);
        assert_eq!(mm.guest_write(address, &[1; 8]), unbound);
        assert!(!mm.try_read_memory(address, &mut buf[..1]));
    }
    assert_eq!(buf, [0xEE; 0x20], "nothing was read into the buffer");
    // An access from normal memory into the region: refused as a whole, at
    // the region's first byte.
    assert_eq!(mm.read_memory(B - 0x10, &mut buf), Err(MemoryError::MmioUnbound { address: B }));
    assert_eq!(mm.write_memory(B - 0x10, &[9; 0x20]), Err(MemoryError::MmioUnbound { address: B }));
    // Its protection is checked first: a fetch is refused as with handlers.
    assert_eq!(
        mm.guest_fetch(B, &mut buf),
        Err(MemoryError::AccessViolation { address: B, access: Access::Execute })
    );
    assert_eq!(buf, [0xEE; 0x20]);
    assert_eq!((state_of(mm), mm.layout_version()), before, "failed accesses changed nothing");
}

#[test]
fn a_deserialized_mmio_region_is_in_the_layout_unbound_in_both_modes() {
    for layout_only in [false, true] {
        let (mm, log, buf) = serialized(layout_only);
        let mut copy = MemoryManager::new();
        copy.deserialize_memory_state(&buf, layout_only).unwrap();
        // The layout as the live manager reports it.
        assert_eq!(copy.region_kind(B + 0x1000), RegionKind::Mmio);
        for page in (B..B + 0x3000).step_by(PAGE_SIZE as usize) {
            assert_eq!(copy.region_info(page), mm.region_info(page), "region at {page:#x}");
        }
        assert_eq!(copy.region_info(B).permissions, RW);
        assert!(copy.region_info(B).is_committed);
        assert_eq!(copy.reserved_regions().collect::<Vec<_>>(), mm.reserved_regions().collect::<Vec<_>>());
        let (a, b) = (copy.compute_memory_stats(), mm.compute_memory_stats());
        assert_eq!(
            (a.reserved_memory, a.committed_memory, a.allocation_count),
            (b.reserved_memory, b.committed_memory, b.allocation_count)
        );
        assert_eq!(a.committed_memory, 0x13000, "the region's 3 pages are committed");
        // Its handlers did not travel.
        assert_unbound(&mut copy);
        // The state serializes back to the same bytes.
        let mut again = Vec::new();
        copy.serialize_memory_state(&mut again, layout_only);
        assert_eq!(again, buf);
        assert_eq!(take(&log), vec![], "the original's handlers were not called");
    }
}

#[test]
fn bind_mmio_makes_accesses_call_the_handlers() {
    let (_, _, buf) = serialized(false);
    let mut mm = MemoryManager::new();
    mm.deserialize_memory_state(&buf, false).unwrap();
    let unbound = mm.snapshot();
    let (version, committed) = (mm.layout_version(), mm.compute_memory_stats().committed_memory);
    // The size is rounded up to pages, as allocate_mmio rounds it.
    let log: Log = Arc::default();
    let (r, w) = (log.clone(), log.clone());
    mm.bind_mmio(
        B,
        0x2001,
        move |offset, buf| {
            r.lock().unwrap().push(Call::Read { offset, len: buf.len() });
            buf.fill(0x5A);
        },
        move |offset, data| w.lock().unwrap().push(Call::Write { offset, data: data.to_vec() }),
    )
    .unwrap();
    assert!(mm.layout_version() > version, "binding is a layout change");
    assert_eq!(mm.compute_memory_stats().committed_memory, committed);
    assert_eq!(mm.region_kind(B), RegionKind::Mmio);

    let mut buf = [0u8; 0x20];
    mm.read_memory(B - 0x10, &mut buf).unwrap();
    assert_eq!((&buf[..0x10], &buf[0x10..]), (&[0x77; 0x10][..], &[0x5A; 0x10][..]));
    mm.guest_write(B + 0x2FFE, b"hi").unwrap();
    assert_eq!(
        take(&log),
        vec![Call::Read { offset: 0, len: 0x10 }, Call::Write { offset: 0x2FFE, data: b"hi".to_vec() }]
    );
    // The snapshot taken before keeps the region unbound, and a restore to
    // it unbinds it again.
    assert_eq!(unbound.read_memory(B, &mut buf), Err(MemoryError::MmioUnbound { address: B }));
    let bound = mm.snapshot();
    bound.read_memory(B, &mut buf[..4]).unwrap();
    assert_eq!(buf[..4], [0x5A; 4]);
    assert_eq!(take(&log), vec![Call::Read { offset: 0, len: 4 }], "the snapshot keeps the handlers");
    mm.restore(&unbound);
    assert_unbound(&mut mm);
    // A diff compares layouts and bytes, not handlers.
    assert!(unbound.diff(&bound).is_empty());
    mm.restore(&bound);
    mm.read_memory(B + 4, &mut buf[..4]).unwrap();
    assert_eq!(take(&log), vec![Call::Read { offset: 4, len: 4 }]);
}

#[test]
fn bind_mmio_refuses_anything_but_an_unbound_region_of_that_base_and_size() {
    let (_, _, buf) = serialized(false);
    let mut mm = MemoryManager::new();
    mm.deserialize_memory_state(&buf, false).unwrap();
    map(&mut mm, B + 0x10000, 0x1000).unwrap(); // bound already
    let before = (state_of(&mm), mm.layout_version());
    for (address, size) in [
        (B + 0x1000, 0x2000),       // not its base
        (B, 0x2000),                // another size
        (B, 0x4000),                // another size
        (B, 0),                     // size 0
        (B, u64::MAX),              // a size that does not round
        (B - 0x10000, 0x10000),     // private memory
        (B + 0x10000, 0x1000),      // bound by allocate_mmio
        (B + 0x20000, 0x1000),      // free
        (u64::MAX - 0xFFF, 0x1000), // past user space
    ] {
        assert_eq!(
            mm.bind_mmio(address, size, |_, _| {}, |_, _| {}),
            Err(MemoryError::NoUnboundMmio { address, size }),
            "{address:#x} + {size:#x}"
        );
    }
    assert_eq!((state_of(&mm), mm.layout_version()), before, "failed binds changed nothing");
    assert_unbound(&mut mm);
    // Handlers are bound once.
    mm.bind_mmio(B, 0x3000, |_, b| b.fill(1), |_, _| {}).unwrap();
    assert_eq!(
        mm.bind_mmio(B, 0x3000, |_, b| b.fill(2), |_, _| {}),
        Err(MemoryError::NoUnboundMmio { address: B, size: 0x3000 })
    );
    let mut byte = [0u8];
    mm.read_memory(B, &mut byte).unwrap();
    assert_eq!(byte, [1]);
}

#[test]
fn deserialize_memory_state_with_binds_what_the_binder_gives() {
    let mut mm = MemoryManager::new();
    map(&mut mm, B, 0x3000).unwrap();
    map(&mut mm, B + 0x10000, 0x1000).unwrap();
    let mut buf = Vec::new();
    mm.serialize_memory_state(&mut buf, true);

    let mut copy = MemoryManager::new();
    let mut asked = Vec::new();
    // A refused buffer calls no binder and changes nothing.
    let before = state_of(&copy);
    assert!(
        copy.deserialize_memory_state_with(&buf, false, &mut |b, l| {
            asked.push((b, l));
            None
        })
        .is_err()
    );
    assert!(
        copy.deserialize_memory_state_with(&buf[..buf.len() - 1], true, &mut |b, l| {
            asked.push((b, l));
            None
        })
        .is_err()
    );
    assert_eq!((asked.len(), state_of(&copy)), (0, before));

    copy.deserialize_memory_state_with(&buf, true, &mut |base, length| {
        asked.push((base, length));
        (base == B + 0x10000).then(|| vmsnap::MmioHandlers::new(|_, b| b.fill(3), |_, _| {}))
    })
    .unwrap();
    assert_eq!(asked, vec![(B, 0x3000), (B + 0x10000, 0x1000)], "once per region, in address order");
    let mut byte = [0u8];
    copy.read_memory(B + 0x10000, &mut byte).unwrap();
    assert_eq!(byte, [3]);
    assert_eq!(copy.read_memory(B, &mut byte), Err(MemoryError::MmioUnbound { address: B }));
    // A binder that binds nothing leaves the layout as plain deserialization does.
    let mut plain = MemoryManager::new();
    plain.deserialize_memory_state(&buf, true).unwrap();
    assert_eq!(plain.reserved_regions().collect::<Vec<_>>(), copy.reserved_regions().collect::<Vec<_>>());
}

#[test]
fn deserializing_over_a_bound_region_leaves_it_unbound_and_counts_its_commit() {
    // The buffer's regions are the buffer's: deserializing the manager's own
    // layout unbinds its MMIO region (binding is the owner's, with a binder).
    let (mut mm, log, buf) = serialized(true);
    let committed = mm.compute_memory_stats().committed_memory;
    let version = mm.layout_version();
    mm.deserialize_memory_state(&buf, true).unwrap();
    assert!(mm.layout_version() > version);
    assert_unbound(&mut mm);
    assert_eq!(take(&log), vec![]);
    // The commit count is the live manager's: the region's pages count
    // against the commit limit as they did.
    assert_eq!(mm.compute_memory_stats().committed_memory, committed);
    mm.set_commit_limit(Some(committed + PAGE_SIZE));
    mm.allocate_memory(PAGE_SIZE, RW, false, 0, RegionKind::Private).unwrap();
    assert!(matches!(
        mm.allocate_memory(PAGE_SIZE, RW, false, 0, RegionKind::Private),
        Err(MemoryError::CommitLimitExceeded { .. })
    ));
    // Releasing it frees its commit, as for a live region.
    mm.release_memory(B, 0).unwrap();
    assert_eq!(mm.compute_memory_stats().committed_memory, committed + PAGE_SIZE - 0x3000);
}
