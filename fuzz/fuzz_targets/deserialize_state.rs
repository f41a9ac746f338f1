//! Fuzzes `MemoryManager::deserialize_memory_state` in both modes: any input
//! must give an error that leaves the manager untouched, or a state that
//! serializes back to a buffer that round-trips byte for byte.
//!
//! Run: `cargo fuzz run deserialize_state` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsnap::{MemoryManager, Protection, RegionKind, STATE_FORMAT_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let layout_only = mode & 1 == 1;
    // Half the inputs get a valid header so the fuzzer reaches the payload.
    let mut buf = Vec::new();
    if mode & 2 == 2 {
        buf.extend_from_slice(b"VMSNAPMS");
        buf.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    }
    buf.extend_from_slice(rest);

    let mut mm = MemoryManager::new();
    mm.allocate_memory_at(0x10000, 0x2000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
    let mut before = Vec::new();
    mm.serialize_memory_state(&mut before, false);
    match mm.deserialize_memory_state(&buf, layout_only) {
        Err(_) => {
            let mut after = Vec::new();
            mm.serialize_memory_state(&mut after, false);
            assert_eq!(before, after, "a refused buffer changed the manager");
        }
        Ok(()) => {
            let mut again = Vec::new();
            mm.serialize_memory_state(&mut again, false);
            let mut copy = MemoryManager::new();
            copy.deserialize_memory_state(&again, false).expect("own output decodes");
            let mut third = Vec::new();
            copy.serialize_memory_state(&mut third, false);
            assert_eq!(again, third);
        }
    }
});
