//! `vmsnap dump`: a hexdump of a snapshot's memory, unreadable pages shown
//! as `??`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use vmsnap::{AddressSpace, MemoryError, PAGE_SIZE};

use super::InFile;
use crate::format::{self, parse_u64, serialize_hex};
use crate::open::{Opened, label};

/// The most bytes one dump shows.
const MAX_LENGTH: u64 = 16 << 20;

/// Arguments of `dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// First address (`0x...` hex, WinDbg's `00000001`40000000`, or decimal).
    #[arg(value_parser = parse_u64)]
    pub address: u64,
    /// Bytes to show (at most 16 MiB).
    #[arg(value_parser = parse_u64)]
    pub length: u64,
    /// The snapshot: `#N` (an id), `N` (the id N, else the name N) or a name; default: the last one.
    #[arg(long, short)]
    pub snapshot: Option<String>,
}

/// What `vmsnap dump` reports.
#[derive(Serialize)]
pub struct Dump {
    /// The file and the snapshot (`file`, `snapshot`, `name`).
    #[serde(flatten)]
    pub of: InFile,
    /// First address.
    pub address: u64,
    /// Bytes read.
    pub length: u64,
    /// The bytes at `address`, zeros where unreadable (`hex` in JSON).
    #[serde(rename = "hex", serialize_with = "serialize_hex")]
    pub bytes: Vec<u8>,
    /// The unreadable address ranges (`start`, `end`), ascending.
    pub unreadable: Vec<Range<u64>>,
}

/// `vmsnap dump`: fails when no byte of the range is readable.
pub fn run(args: &DumpArgs) -> Result<Dump> {
    if args.length == 0 || args.length > MAX_LENGTH {
        bail!("length must be between 1 and 16 MiB, not {}", args.length);
    }
    if args.address.checked_add(args.length).is_none() {
        bail!("{:#x} + {:#x} overflows", args.address, args.length);
    }
    let opened = Opened::open(&args.file)?;
    let (summary, snapshot) = opened.select(args.snapshot.as_deref())?;
    let (bytes, unreadable, first_error) = read_pages(snapshot, args.address, args.length);
    opened.check_pages()?;
    if let Some(error) =
        first_error.filter(|_| unreadable.iter().map(|r| r.end - r.start).sum::<u64>() == args.length)
    {
        bail!(
            "{:#x}..{:#x} is not readable in {} {}: {error} (try `vmsnap regions`)",
            args.address,
            args.address + args.length,
            args.file.display(),
            label(summary)
        );
    }
    Ok(Dump {
        of: InFile::new(&args.file, summary),
        address: args.address,
        length: args.length,
        bytes,
        unreadable,
    })
}

/// Reads `[address, address + length)` page by page; unreadable pages stay
/// zero and are returned as ranges, with the first one's error.
fn read_pages(
    space: &dyn AddressSpace,
    address: u64,
    length: u64,
) -> (Vec<u8>, Vec<Range<u64>>, Option<MemoryError>) {
    let mut bytes = vec![0u8; length as usize];
    let mut unreadable: Vec<Range<u64>> = Vec::new();
    let mut first_error = None;
    let mut at = address;
    let end = address + length;
    while at < end {
        let page_end = ((at / PAGE_SIZE) + 1) * PAGE_SIZE;
        let chunk_end = page_end.min(end);
        let buf = &mut bytes[(at - address) as usize..(chunk_end - address) as usize];
        if let Err(e) = space.read_memory(at, buf) {
            first_error.get_or_insert(e);
            match unreadable.last_mut() {
                Some(r) if r.end == at => r.end = chunk_end,
                _ => unreadable.push(at..chunk_end),
            }
        }
        at = chunk_end;
    }
    (bytes, unreadable, first_error)
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let readable = |a: u64| !self.unreadable.iter().any(|r| r.contains(&a));
        f.write_str(&format::hexdump(self.address, &self.bytes, &readable))
    }
}
