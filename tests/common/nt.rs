//! Helpers for the `nt` tests: each call wrapped so that a failure also
//! checks Windows' rule that the in/out parameters are left as given.

use vmsnap::nt::*;
use vmsnap::{MemoryManager, ReservedRegion};

/// `NtAllocateVirtualMemory`; on failure also checks that base and size were
/// left as given.
pub fn alloc_zb(
    mm: &mut MemoryManager,
    base: u64,
    zero_bits: u64,
    size: u64,
    ty: u32,
    prot: u32,
) -> Result<(u64, u64), NtStatus> {
    let (mut b, mut s) = (base, size);
    let status = nt_allocate_virtual_memory(mm, &mut b, zero_bits, &mut s, ty, prot);
    if status.is_success() {
        assert_eq!(status, NtStatus::SUCCESS);
        Ok((b, s))
    } else {
        assert_eq!((b, s), (base, size), "outputs written on failure ({status})");
        Err(status)
    }
}

/// [`alloc_zb`] with zero_bits 0.
pub fn alloc(
    mm: &mut MemoryManager,
    base: u64,
    size: u64,
    ty: u32,
    prot: u32,
) -> Result<(u64, u64), NtStatus> {
    alloc_zb(mm, base, 0, size, ty, prot)
}

/// `NtFreeVirtualMemory`; on failure also checks the outputs are unchanged.
pub fn free(mm: &mut MemoryManager, base: u64, size: u64, ty: u32) -> Result<(u64, u64), NtStatus> {
    let (mut b, mut s) = (base, size);
    let status = nt_free_virtual_memory(mm, &mut b, &mut s, ty);
    if status.is_success() {
        Ok((b, s))
    } else {
        assert_eq!((b, s), (base, size), "outputs written on failure ({status})");
        Err(status)
    }
}

/// `NtProtectVirtualMemory`; on failure checks old = PAGE_NOACCESS and the
/// base/size outputs unchanged.
pub fn protect(mm: &mut MemoryManager, base: u64, size: u64, prot: u32) -> Result<(u64, u64, u32), NtStatus> {
    let (mut b, mut s, mut old) = (base, size, 0xDEAD_BEEF);
    let status = nt_protect_virtual_memory(mm, &mut b, &mut s, prot, &mut old);
    if status.is_success() {
        Ok((b, s, old))
    } else {
        assert_eq!(old, PAGE_NOACCESS, "old protection on failure ({status})");
        assert_eq!((b, s), (base, size), "outputs written on failure ({status})");
        Err(status)
    }
}

/// `NtQueryVirtualMemory`, which must succeed.
pub fn query(mm: &MemoryManager, address: u64) -> MemoryBasicInformation {
    nt_query_virtual_memory(mm, address).expect("query")
}

/// What a failed call must leave unchanged.
pub type Fingerprint = (u64, Vec<ReservedRegion>, u64);

/// The manager's [`Fingerprint`].
pub fn fingerprint(mm: &MemoryManager) -> Fingerprint {
    (mm.layout_version(), mm.reserved_regions().collect(), mm.compute_memory_stats().committed_memory)
}

/// Runs a call that must fail with `expected`, and checks nothing changed.
pub fn fails_unchanged(
    mm: &mut MemoryManager,
    expected: NtStatus,
    call: impl FnOnce(&mut MemoryManager) -> NtStatus,
) {
    let before = fingerprint(mm);
    let status = call(mm);
    assert_eq!(status, expected);
    assert_eq!(fingerprint(mm), before, "state changed by a failed call ({status})");
}

/// `len` bytes at `address` (host view), which must be readable.
pub fn read(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    mm.read_memory(address, &mut buf).expect("read");
    buf
}

/// (base_address, region_size, state, protect) of every region of the
/// allocation containing `address`.
pub fn regions(mm: &MemoryManager, address: u64) -> Vec<(u64, u64, u32, u32)> {
    let base = query(mm, address).allocation_base;
    let end = base + mm.region_info(address).allocation_length;
    let mut out = Vec::new();
    let mut at = base;
    while at < end {
        let m = query(mm, at);
        assert_eq!(m.allocation_base, base);
        out.push((m.base_address, m.region_size, m.state, m.protect));
        at += m.region_size;
    }
    out
}
