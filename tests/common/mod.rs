//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind, Snapshot};

pub mod nt;

/// xorshift64*: a deterministic, dependency-free random source.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times out of 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `len` bytes at `address` through the host view (panics if unreadable).
pub fn read_vec(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mm.read_memory(address, &mut buf).unwrap();
    buf
}

/// Asserts that two snapshots are the same address space: allocations, layout
/// version, default allocation address, every page's region info and bytes,
/// committed memory, and an empty diff.
pub fn assert_same(a: &Snapshot, b: &Snapshot) {
    let ra: Vec<_> = a.reserved_regions().collect();
    let rb: Vec<_> = b.reserved_regions().collect();
    assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
    assert_eq!(a.layout_version(), b.layout_version());
    assert_eq!(a.default_allocation_address(), b.default_allocation_address());
    for r in &ra {
        let mut page = r.base;
        while page < r.base + r.length {
            let (ia, ib) = (a.region_info(page), b.region_info(page));
            assert_eq!(format!("{ia:?}"), format!("{ib:?}"), "region_info at {page:#x}");
            if ia.is_committed {
                let (mut x, mut y) = ([0u8; 4096], [0u8; 4096]);
                a.read_memory(page, &mut x).unwrap();
                b.read_memory(page, &mut y).unwrap();
                assert!(x == y, "bytes differ at {page:#x}");
            }
            page += PAGE_SIZE;
        }
    }
    assert_eq!(a.compute_memory_stats().committed_memory, b.compute_memory_stats().committed_memory);
    assert!(a.diff(b).changed_pages().next().is_none());
}

/// A fresh, empty directory for one test: `vmsnap-<prefix>-<pid>-<name>`.
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmsnap-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `region_info` reports for free memory from `start`, `length` bytes
/// long (0 at or past `USER_SPACE_END`).
pub fn free_info(start: u64, length: u64) -> RegionInfo {
    RegionInfo {
        start,
        length,
        allocation_base: 0,
        allocation_length: 0,
        is_reserved: false,
        is_committed: false,
        permissions: Protection::empty(),
        initial_permissions: Protection::empty(),
        kind: RegionKind::Free,
        attributes: 0,
    }
}
