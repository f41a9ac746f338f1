//! Fuzzes `vmsnap::file::load_from_bytes`: any input must give an error or a
//! snapshot whose encoding loads again and re-encodes to the same bytes.
//!
//! Run: `cargo fuzz run load_file` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

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
    let verified = vmsnap::file::verify_bytes(&buf).is_ok();
    match vmsnap::file::load_from_bytes(&buf) {
        Ok(snapshot) => {
            assert!(verified, "load accepted what verify refused");
            let again = vmsnap::file::to_bytes(&snapshot).unwrap();
            let reloaded = vmsnap::file::load_from_bytes(&again).expect("own output loads");
            assert_eq!(vmsnap::file::to_bytes(&reloaded).unwrap(), again, "encoding is not deterministic");
        }
        Err(_) => {}
    }
});
