//! The frame codec and its worker pool: zstd frames of up to 16 pages, each
//! with an 8-byte BLAKE3 checksum (FORMAT.md §4), compressed and
//! decompressed on a given number of threads. No process-global state: the
//! thread count travels with the call ([`Pool`]).

use std::ops::Range;

use super::{FileError, PAGES_PER_FRAME, blake3_prefix};
use crate::page_table::PAGE;

/// Frames handed to one worker at a time (1 MiB of pages).
pub(super) const FRAMES_PER_BATCH: usize = 16;

/// How many threads frame work runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pool {
    threads: usize,
}

impl Pool {
    /// `threads` workers; 0 means one per available core, at most 8.
    pub(super) fn new(threads: usize) -> Pool {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(8),
            n => n,
        };
        Pool { threads }
    }

    /// Frames per batch: what is in flight at once.
    pub(super) fn batch_frames(self) -> usize {
        FRAMES_PER_BATCH * self.threads
    }

    /// Runs `work` over `range` split into at most `threads` contiguous
    /// parts of at least `min_part` items (the first on the calling
    /// thread), and returns the results in range order.
    pub(super) fn run<R: Send>(
        self,
        range: Range<usize>,
        min_part: usize,
        work: impl Fn(Range<usize>) -> R + Sync,
    ) -> Vec<R> {
        let parts = self.threads.min(range.len().div_ceil(min_part.max(1))).max(1);
        if parts == 1 {
            return vec![work(range)];
        }
        let step = range.len().div_ceil(parts);
        let ranges: Vec<_> =
            (range.start..range.end).step_by(step).map(|a| a..(a + step).min(range.end)).collect();
        std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = ranges[1..].iter().map(|r| scope.spawn(move || work(r.clone()))).collect();
            let mut out = vec![work(ranges[0].clone())];
            // Invariant: a worker only panics if `work` does, which is a
            // bug; pass that panic on.
            out.extend(
                handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
            );
            out
        })
    }
}

/// One compressed frame: its page count, bytes and checksum.
pub(super) struct Compressed {
    pub(super) pages: u8,
    pub(super) bytes: Vec<u8>,
    pub(super) checksum: [u8; 8],
}

/// Compresses frames `frames` of a body list on the pool: frame `n` holds
/// bodies `16n..16n+16`, each body's bytes written by `fill` (the page, or
/// its XOR with a base). One zstd context per worker, with the parameters
/// of a fresh one, so the bytes never depend on the thread count.
pub(super) fn compress_frames(
    pool: Pool,
    level: i32,
    bodies: usize,
    frames: Range<usize>,
    fill: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
) -> Vec<Compressed> {
    let parts = pool.run(frames, FRAMES_PER_BATCH / 4, |range| {
        // Invariant: the level was checked when the writer was made, and
        // creating a context with a valid level cannot fail.
        let mut compressor = zstd::bulk::Compressor::new(level).expect("zstd context");
        let mut raw = Vec::with_capacity(PAGES_PER_FRAME * PAGE);
        let mut out = Vec::with_capacity(range.len());
        for n in range {
            let chunk = n * PAGES_PER_FRAME..((n + 1) * PAGES_PER_FRAME).min(bodies);
            raw.clear();
            for body in chunk.clone() {
                fill(body, &mut raw);
            }
            // Invariant: compressing a bounded in-memory buffer cannot fail.
            let bytes = compressor.compress(&raw).expect("zstd compression of 64 KiB");
            let checksum = blake3_prefix(&bytes);
            out.push(Compressed { pages: chunk.len() as u8, bytes, checksum });
        }
        out
    });
    parts.into_iter().flatten().collect()
}

/// A zstd decompression context and a frame buffer, one per worker.
pub(super) struct FrameDecoder {
    pub(super) zstd: zstd::bulk::Decompressor<'static>,
    pub(super) raw: Box<[u8]>,
}

impl FrameDecoder {
    pub(super) fn new() -> Result<Self, FileError> {
        let zstd = zstd::bulk::Decompressor::new().map_err(|_| FileError::FrameCorrupt { frame: 0 })?;
        Ok(FrameDecoder { zstd, raw: vec![0u8; PAGES_PER_FRAME * PAGE].into_boxed_slice() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_range_order_and_the_frames_do_not_depend_on_the_thread_count() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads);
            let parts = pool.run(0..100, 7, |r| r.collect::<Vec<_>>());
            assert_eq!(parts.concat(), (0..100).collect::<Vec<_>>());
        }
        let fill = |body: usize, raw: &mut Vec<u8>| raw.extend(std::iter::repeat_n(body as u8, PAGE));
        let one = compress_frames(Pool::new(1), 3, 40, 0..3, &fill);
        let four = compress_frames(Pool::new(4), 3, 40, 0..3, &fill);
        assert_eq!(one.iter().map(|c| c.pages).collect::<Vec<_>>(), [16, 16, 8]);
        for (a, b) in one.iter().zip(&four) {
            assert_eq!((a.pages, &a.bytes, a.checksum), (b.pages, &b.bytes, b.checksum));
        }
    }
}
