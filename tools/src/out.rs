//! Standard output, checked.
//!
//! `println!` panics when standard output fails (`vmsnap info f >
//! /dev/full`: "failed printing to stdout", exit 101). `main` prints each
//! command's report, once, with [`print()`] instead, and reports a failure
//! as a one-line error and exit code 1 (a closed pipe, `vmsnap info f |
//! head`, ends the output quietly instead). What a command writes to files
//! is not affected: the command has finished before its report is printed.

use std::io::{self, Write};

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}
