//! Fuzzes `vmsnap::image::map_image`: any input must give an `ImageError`
//! that leaves the manager untouched, or an image allocation that is
//! consistent with what `map_image` reported; a second mapping of the same
//! bytes must land elsewhere (relocated) or be refused without a change.
//!
//! Run: `cargo fuzz run map_image` (from the repository root). Real DLLs make
//! good seeds: `mkdir -p fuzz/corpus/map_image && cp
//! target/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/{ntdll,kernel32}.dll
//! fuzz/corpus/map_image/` (see `.ci/run` for fetching libwine).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsnap::image::map_image;
use vmsnap::{MemoryManager, Protection, RegionKind, ReservedRegion};

fn state(mm: &MemoryManager) -> (Vec<ReservedRegion>, u64) {
    (mm.reserved_regions().collect(), mm.layout_version())
}

fuzz_target!(|data: &[u8]| {
    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x7000_0000, 0x10000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let before = state(&mm);
    let image = match map_image(&mut mm, data) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(state(&mm), before, "refused with {e:?} but changed the manager");
            return;
        }
        Ok(image) => image,
    };
    assert!(mm.layout_version() > before.1);
    assert_eq!(image.base % 0x10000, 0);
    let r = mm.region_info(image.base);
    assert_eq!((r.allocation_base, r.allocation_length, r.kind), (image.base, image.size, RegionKind::Image));
    assert_eq!(r.permissions, Protection::READ, "header page");
    assert!(
        image.entry_point == 0
            || (image.entry_point >= image.base && image.entry_point < image.base + image.size)
    );
    for s in &image.sections {
        assert!(s.address >= image.base && s.address + s.size <= image.base + image.size);
        if s.size != 0 {
            assert_eq!(mm.page_protection(s.address), Some(s.protection));
        }
    }
    let before = state(&mm);
    match map_image(&mut mm, data) {
        Ok(second) => assert!(second.relocated && second.base != image.base),
        Err(e) => assert_eq!(state(&mm), before, "refused with {e:?} but changed the manager"),
    }
});
