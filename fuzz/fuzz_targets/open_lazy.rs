//! Fuzzes `vmsnap::file::open_lazy_bytes` and reads through the lazy pages:
//! any input must give an error, or a file whose every committed page reads
//! either the bytes an eager load gives or `PageUnavailable`, and whose
//! `load_all` and `verify` succeed exactly when `verify_bytes` does. The
//! other sources (`Arc<[u8]>` through `open_source`, a local file through
//! `open`) must accept and refuse exactly the same inputs.
//!
//! Run: `cargo fuzz run open_lazy` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmsnap::MemoryError;

fuzz_target!(|data: &[u8]| {
    // Inputs that do not start with the magic get it when their first byte
    // is odd, so half of the random inputs reach the header. An input that
    // already starts with it (the golden files, `fuzz/corpus`) is used as
    // is: 0x89, the magic's first byte, is odd.
    let mut buf = Vec::with_capacity(data.len() + 8);
    if !data.starts_with(&vmsnap::file::MAGIC) && data.first().is_some_and(|b| b & 1 == 1) {
        buf.extend_from_slice(&vmsnap::file::MAGIC);
        buf.extend_from_slice(&data[1..]);
    } else {
        buf.extend_from_slice(data);
    }
    let eager = vmsnap::file::load_from_bytes(&buf).ok();
    let opened = vmsnap::file::open_lazy_bytes(buf.clone());
    let shared: std::sync::Arc<[u8]> = buf.clone().into();
    let from_shared = vmsnap::file::open_source(std::sync::Arc::new(shared));
    assert_eq!(opened.is_ok(), from_shared.is_ok(), "Vec and Arc<[u8]> sources disagree");
    let path = std::env::temp_dir().join(format!("vmsnap-fuzz-open-{}.vmsnap", std::process::id()));
    std::fs::write(&path, &buf).expect("a temporary file");
    assert_eq!(opened.is_ok(), vmsnap::file::open(&path).is_ok(), "bytes and a local file disagree");
    let Ok(lazy) = opened else { return };
    let Ok(snapshot) = lazy.snapshot() else { return };
    let mut page = [0u8; 4096];
    for region in snapshot.reserved_regions() {
        let mut at = region.base;
        while at < region.base + region.length {
            match snapshot.read_memory(at, &mut page) {
                Ok(()) => {
                    if let Some(e) = &eager {
                        let mut want = [0u8; 4096];
                        e.read_memory(at, &mut want).expect("eager reads what lazy reads");
                        assert_eq!(page, want, "lazy and eager bytes differ at {at:#x}");
                    }
                }
                Err(MemoryError::PageUnavailable { .. }) => assert!(eager.is_none(), "eager loaded it"),
                Err(_) => {}
            }
            at += 4096;
        }
    }
    if lazy.is_lazy() {
        let verified = vmsnap::file::verify_bytes(&buf).is_ok();
        assert_eq!(lazy.verify().is_ok(), verified);
        assert_eq!(lazy.load_all().is_ok(), verified);
    }
});
