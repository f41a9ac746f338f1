//! Helpers shared by the integration tests: each test binary that needs
//! one includes this module (`mod common;`, or `#[path = "../common/mod.rs"]
//! mod common;` from a binary of several modules) and uses a subset.
//!
//! - [`Rng`]: the deterministic random generator (`rng.rs`);
//! - [`temp_dir`]: a temporary directory removed on drop (`tmp.rs`);
//! - [`proptest_config`]: a proptest configuration that honours
//!   `PROPTEST_CASES`;
//! - [`pe`]: a PE writer for the image tests;
//! - [`nt`]: the `nt` calls wrapped with Windows' failure rules;
//! - address-space checks: [`read_vec`], [`assert_same`], [`free_info`].
#![allow(dead_code)]

use proptest::test_runner::Config as ProptestConfig;
use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionInfo, RegionKind, Snapshot};

pub mod nt;
pub mod pe;
mod rng;
mod tmp;

// Each binary uses a subset: an unused re-export is not a mistake.
#[allow(unused_imports)]
pub use rng::Rng;
#[allow(unused_imports)]
pub use tmp::{TempDir, temp_dir};

/// A proptest configuration of `PROPTEST_CASES` cases when that variable is
/// set (a deeper run: `.ci/soak`, or the issue's `PROPTEST_CASES=2560`),
/// else `default_cases`. `ProptestConfig::with_cases(n)` alone would ignore
/// the variable; the other fields are proptest's defaults (which read the
/// other `PROPTEST_*` variables).
pub fn proptest_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig { cases: cases_from_env().unwrap_or(default_cases), ..ProptestConfig::default() }
}

/// `PROPTEST_CASES`, if set and not empty (a value that is not a number is
/// an error, not a silent default).
pub fn cases_from_env() -> Option<u32> {
    let value = std::env::var("PROPTEST_CASES").ok().filter(|v| !v.trim().is_empty())?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("PROPTEST_CASES={value:?} is not a number of cases")))
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
