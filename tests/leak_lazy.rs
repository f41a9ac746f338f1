//! No leaks through lazily opened files: their pages (read or not), a
//! parent chain's pages, and the versions a manager made from them are all
//! freed when the last holder goes, and the file's page store with them.
//!
//! ONE test on purpose: it reads the process-wide counter
//! `vmsnap::frozen_pages_alive()`, which another test in the same binary
//! would disturb.

use vmsnap::{MemoryManager, PAGE_SIZE, Protection, RegionKind, file, frozen_pages_alive};

mod common;

#[test]
fn lazily_opened_pages_are_freed_with_their_last_holder() {
    let dir = common::temp_dir("leak", "lazy");
    let (parent, child) = (dir.join("parent.vmsnap"), dir.join("child.vmsnap"));
    {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 64 * PAGE_SIZE, Protection::READ_WRITE, false, RegionKind::Private)
            .unwrap();
        for n in 0..64u64 {
            mm.write_memory(0x10000 + n * PAGE_SIZE, &(n + 1).to_le_bytes()).unwrap();
        }
        file::save(&mm.snapshot(), &parent).unwrap();
        mm.write_memory(0x10000, b"changed").unwrap();
        file::save_incremental(&mm.snapshot(), &parent, &child).unwrap();
    }
    let start = frozen_pages_alive();
    for round in 0..3 {
        let lazy = file::open_lazy(&child).unwrap();
        let opened = lazy.snapshot().unwrap();
        let mut mm = MemoryManager::new();
        mm.restore(&opened);
        let mut buf = [0u8; 8];
        mm.read_memory(0x10000 + 40 * PAGE_SIZE, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 41);
        mm.write_memory(0x10000 + 5 * PAGE_SIZE, &[round; 8]).unwrap();
        let later = mm.snapshot();
        if round == 2 {
            lazy.load_all().unwrap();
        }
        assert!(frozen_pages_alive() > start);
        drop((lazy, opened, mm, later));
        assert_eq!(frozen_pages_alive(), start, "round {round}: every page freed");
    }
}
