//! `vmsnap::image::map_image`, one binary of two modules:
//!
//! - `mapping`: PE32+ and PE32 files built here and, where present, Wine's
//!   `ntdll.dll` and `kernel32.dll`;
//! - `bad_input`: malformed PE files, one test per failure mode, and a
//!   property test over mutated files.
//!
//! Both build their files with the PE writer of `tests/common/pe.rs`.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod mapping;
