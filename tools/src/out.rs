//! Standard output through a checked writer.
//!
//! `println!` panics when standard output fails (`vmsnap info f >
//! /dev/full`: "failed printing to stdout", exit 101). Every command prints
//! through the `outln!` and `out!` macros instead: the first failure is kept, later
//! output is dropped, and `main` reports it with [`finish`] as a one-line
//! error and exit code 1 (a closed pipe, `vmsnap info f | head`, ends the
//! output quietly instead). What a command writes to files is not affected:
//! a file written before the output failed is complete.

use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

/// The first failure to write standard output.
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `args` to standard output, unless an earlier write failed.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut failed = FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    if failed.is_none()
        && let Err(e) = io::stdout().lock().write_fmt(args)
    {
        *failed = Some(e);
    }
}

/// Flushes standard output; the first failure of the run, if any.
pub fn finish() -> io::Result<()> {
    let mut failed = FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    if failed.is_none()
        && let Err(e) = io::stdout().lock().flush()
    {
        *failed = Some(e);
    }
    failed.take().map_or(Ok(()), Err)
}

/// `print!` through the checked writer.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` through the checked writer.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
