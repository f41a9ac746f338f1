//! Structure-aware fuzzing of the lazy decoder (`open_lazy_bytes`): the
//! inputs of `file_structured` (`structured/mod.rs`), opened lazily; every
//! committed page of every snapshot is read. Each read gives the bytes an
//! eager load gives, or `PageUnavailable` when the eager load fails; the
//! lazy file's `load_all` succeeds exactly when `verify_bytes` does.
//!
//! Run: `cargo fuzz run lazy_structured` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsnap::{MemoryError, file};

mod structured;

fuzz_target!(|input: structured::Input| {
    let session = structured::build(&input.ops);
    let original = file::timeline_to_bytes(&session.timeline).expect("encode");
    let bytes = structured::edit(&original, &input.edits, input.fix_checksums);
    let eager = file::timeline_from_bytes(&bytes).ok();
    let Ok(lazy) = file::open_lazy_bytes(bytes.clone()) else {
        assert!(eager.is_none(), "eager load accepted what the lazy open refused");
        return;
    };
    let timeline = lazy.timeline();
    let mut page = [0u8; 4096];
    for (n, entry) in timeline.iter().enumerate() {
        let want = eager.as_ref().map(|t| t.iter().nth(n).expect("same snapshots").snapshot.clone());
        for region in entry.snapshot.reserved_regions().take(64) {
            let mut at = region.base;
            while at < region.base + region.length.min(64 * 4096) {
                match entry.snapshot.read_memory(at, &mut page) {
                    Ok(()) => {
                        if let Some(w) = &want {
                            let mut expected = [0u8; 4096];
                            w.read_memory(at, &mut expected).expect("eager reads what lazy reads");
                            assert_eq!(page, expected, "lazy and eager bytes differ at {at:#x}");
                        }
                    }
                    Err(MemoryError::PageUnavailable { .. }) => {
                        assert!(eager.is_none(), "eager loaded a page lazy could not read")
                    }
                    Err(_) => {}
                }
                at += 4096;
            }
        }
    }
    if lazy.is_lazy() {
        assert_eq!(lazy.load_all().is_ok(), file::verify_bytes(&bytes).is_ok());
    }
});
