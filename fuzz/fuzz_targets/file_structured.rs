//! Structure-aware fuzzing of the snapshot-file decoder (eager paths):
//! builds a session from arbitrary operations, saves it (a timeline, or an
//! incremental file against its first snapshot), edits header fields, index
//! nodes, snapshot states, page bodies and frames with every checksum
//! recomputed (`structured/mod.rs`), then decodes. Any input must give an
//! error or a file that verifies, loads, and re-encodes deterministically;
//! an unedited file must load.
//!
//! Run: `cargo fuzz run file_structured` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsnap::file;

mod structured;

fuzz_target!(|input: structured::Input| {
    let session = structured::build(&input.ops);
    if input.incremental {
        let parent_file = file::to_bytes(&session.first).expect("encode parent");
        let child = file::incremental_to_bytes(&session.last, &session.first, &parent_file, "parent.vmsnap")
            .expect("encode child");
        let bytes = structured::edit(&child, &input.edits, input.fix_checksums);
        structured::dump(&bytes);
        let loaded = file::incremental_from_bytes(&bytes, &session.first, &parent_file);
        if input.edits.is_empty() {
            loaded.as_ref().expect("an unedited incremental file loads");
        }
        if let Ok(snapshot) = loaded {
            let again = file::to_bytes(&snapshot).expect("re-encode");
            let reloaded = file::load_from_bytes(&again).expect("own output loads");
            assert_eq!(file::to_bytes(&reloaded).expect("re-encode"), again, "encoding is not deterministic");
        }
        return;
    }
    let original = file::timeline_to_bytes(&session.timeline).expect("encode");
    let bytes = structured::edit(&original, &input.edits, input.fix_checksums);
    structured::dump(&bytes);
    if input.edits.is_empty() {
        assert_eq!(bytes, original, "rebuilding an unedited file changed it");
    }
    let verified = file::verify_bytes(&bytes);
    match file::timeline_from_bytes(&bytes) {
        Ok(timeline) => {
            assert!(verified.is_ok(), "loaded what verify refused: {verified:?}");
            let again = file::timeline_to_bytes(&timeline).expect("re-encode");
            let reloaded = file::timeline_from_bytes(&again).expect("own output loads");
            assert_eq!(file::timeline_to_bytes(&reloaded).expect("re-encode"), again, "not deterministic");
            if timeline.len() == 1 {
                assert!(file::load_from_bytes(&bytes).is_ok(), "a one-snapshot file loads as a snapshot");
            }
        }
        Err(e) => {
            assert!(!input.edits.is_empty(), "an unedited file failed to load: {e}");
            assert!(verified.is_err(), "verify accepted what load refused: {e}");
        }
    }
});
