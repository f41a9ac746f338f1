//! The frame codec and its worker pool: zstd frames of up to 16 pages, each
//! with an 8-byte BLAKE3 checksum (FORMAT.md §4), compressed and
//! decompressed on a given number of threads. No process-global state: the
//! thread count travels with the call ([`Pool`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{FileError, PAGES_PER_FRAME, blake3_prefix};
use crate::page_table::PAGE;

/// Frames between two progress reports (1 MiB of pages).
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

/// Frames one worker claims at a time in [`Pool::stream`] (256 KiB of
/// pages): small enough that the workers finish together, large enough
/// that claiming costs nothing.
pub(super) const FRAMES_PER_CHUNK: usize = 4;

/// Chunks in flight per worker in [`Pool::stream`]: done and not yet
/// consumed, or being worked on. Bounds memory to O(threads × frame).
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the threads of one [`Pool::stream`] share.
struct Stream<R> {
    state: Mutex<StreamState<R>>,
    /// Signalled on every change of `state`.
    changed: Condvar,
    /// How many chunks may be claimed beyond the last one consumed.
    window: usize,
    chunks: usize,
}

struct StreamState<R> {
    /// The next chunk to claim.
    next: usize,
    /// The chunks the consumer has taken.
    consumed: usize,
    /// Done chunks not yet consumed, by chunk number.
    done: BTreeMap<usize, R>,
    /// The consumer left (an error, the end, a panic) or a worker
    /// panicked: claim nothing more.
    stop: bool,
}

impl<R> Stream<R> {
    fn lock(&self) -> MutexGuard<'_, StreamState<R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, StreamState<R>>) -> MutexGuard<'a, StreamState<R>> {
        self.changed.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    /// The next chunk to work on, once the window has room; `None` when
    /// there is none or the stream stopped.
    fn claim(&self) -> Option<usize> {
        let mut s = self.lock();
        while !s.stop && s.next < self.chunks && s.next >= s.consumed + self.window {
            s = self.wait(s);
        }
        if s.stop || s.next >= self.chunks {
            return None;
        }
        s.next += 1;
        Some(s.next - 1)
    }

    fn finish(&self, chunk: usize, result: R) {
        self.lock().done.insert(chunk, result);
        self.changed.notify_all();
    }

    /// Chunk `chunk`'s result once done; `None` if a worker panicked.
    fn take(&self, chunk: usize) -> Option<R> {
        let mut s = self.lock();
        let result = loop {
            if let Some(r) = s.done.remove(&chunk) {
                s.consumed = chunk + 1;
                break Some(r);
            }
            if s.stop {
                break None;
            }
            s = self.wait(s);
        };
        drop(s);
        self.changed.notify_all();
        result
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

/// Stops a stream when dropped: by the consumer's leaving, or by a
/// worker's unwinding (a worker forgets it on a normal exit).
struct StopOnDrop<'a, R>(&'a Stream<R>);

impl<R> Drop for StopOnDrop<'_, R> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Pool {
    /// Runs `work` over `range` in chunks of `chunk` items on the pool's
    /// threads, and hands each chunk's result to `consume` on the calling
    /// thread, in range order, while later chunks are worked on. Each
    /// worker keeps a state made by `init` (a codec context). At most
    /// `CHUNKS_IN_FLIGHT` chunks per thread are ahead of `consume`, so
    /// memory stays bounded whatever the range. `consume`'s first error
    /// stops the stream and is returned; a `work` error should be passed
    /// through `R` to `consume`, so the first error in range order wins. A
    /// panic in `work` or `consume` stops the stream and goes on to the
    /// caller. On one thread, work and consume alternate on the caller,
    /// with no thread spawned.
    pub(super) fn stream<S, R: Send, E>(
        self,
        range: Range<usize>,
        chunk: usize,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, Range<usize>) -> R + Sync,
        mut consume: impl FnMut(Range<usize>, R) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunk = chunk.max(1);
        let chunks = range.len().div_ceil(chunk);
        let part = |c: usize| range.start + c * chunk..(range.start + (c + 1) * chunk).min(range.end);
        if self.threads == 1 || chunks <= 1 {
            let mut state = init();
            return (0..chunks).try_for_each(|c| consume(part(c), work(&mut state, part(c))));
        }
        let stream = Stream {
            state: Mutex::new(StreamState { next: 0, consumed: 0, done: BTreeMap::new(), stop: false }),
            changed: Condvar::new(),
            window: CHUNKS_IN_FLIGHT * self.threads,
            chunks,
        };
        std::thread::scope(|scope| {
            let worker = || {
                let stop_on_panic = StopOnDrop(&stream);
                let mut state = init();
                while let Some(c) = stream.claim() {
                    stream.finish(c, work(&mut state, part(c)));
                }
                std::mem::forget(stop_on_panic);
            };
            let workers: Vec<_> = (0..self.threads.min(chunks)).map(|_| scope.spawn(worker)).collect();
            let stop = StopOnDrop(&stream);
            let mut outcome = Ok(());
            for c in 0..chunks {
                let Some(result) = stream.take(c) else { break };
                outcome = consume(part(c), result);
                if outcome.is_err() {
                    break;
                }
            }
            drop(stop);
            // A worker's panic, with its own message.
            for w in workers {
                w.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            }
            outcome
        })
    }
}

/// One compressed frame: its page count, bytes and checksum.
pub(super) struct Compressed {
    pub(super) pages: u8,
    pub(super) bytes: Vec<u8>,
    pub(super) checksum: [u8; 8],
}

/// Compresses frames `frames` of a body list with `compressor`: frame `n`
/// holds bodies `16n..16n+16`, each body's bytes written by `fill` (the
/// page, or its XOR with a base). Every context has the parameters of a
/// fresh one, so the bytes never depend on the thread count.
pub(super) fn compress_frames(
    compressor: &mut zstd::bulk::Compressor<'static>,
    bodies: usize,
    frames: Range<usize>,
    fill: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
) -> Vec<Compressed> {
    let mut raw = Vec::with_capacity(PAGES_PER_FRAME * PAGE);
    let mut out = Vec::with_capacity(frames.len());
    for n in frames {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_pool_keeps_range_order() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads);
            let parts = pool.run(0..100, 7, |r| r.collect::<Vec<_>>());
            assert_eq!(parts.concat(), (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_stream_hands_every_chunk_over_in_order_with_one_state_per_worker() {
        for threads in [1, 2, 3, 8] {
            for (range, chunk) in [(0..0, 4), (0..1, 4), (5..105, 4), (0..100, 1), (0..10, 32)] {
                let (inits, mut seen) = (AtomicUsize::new(0), Vec::new());
                let work = |state: &mut usize, r: Range<usize>| {
                    *state += 1;
                    r.collect::<Vec<_>>()
                };
                let init = || {
                    inits.fetch_add(1, Ordering::Relaxed);
                    0
                };
                Pool::new(threads)
                    .stream(range.clone(), chunk, init, work, |r, items| {
                        assert_eq!(r.clone().collect::<Vec<_>>(), items);
                        seen.extend(items);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                assert_eq!(
                    seen,
                    range.clone().collect::<Vec<_>>(),
                    "{threads} threads, {range:?} by {chunk}"
                );
                assert!(inits.load(Ordering::Relaxed) <= threads.max(1));
            }
        }
    }

    #[test]
    fn a_stream_stops_at_the_first_error_in_order_and_works_a_bounded_window_ahead() {
        for threads in [1, 2, 4] {
            let worked = AtomicUsize::new(0);
            let work = |_: &mut (), r: Range<usize>| {
                worked.fetch_add(1, Ordering::Relaxed);
                // Chunks 10 and 30 fail: 10 is the one reported.
                if r.start == 10 || r.start == 30 { Err(r.start) } else { Ok(r.start) }
            };
            let mut consumed = Vec::new();
            let outcome = Pool::new(threads).stream(
                0..1000,
                1,
                || (),
                work,
                |_, r| {
                    consumed.push(r?);
                    Ok(())
                },
            );
            assert_eq!(outcome, Err(10));
            assert_eq!(consumed, (0..10).collect::<Vec<_>>());
            let bound = 11 + CHUNKS_IN_FLIGHT * threads + threads;
            assert!(worked.load(Ordering::Relaxed) <= bound, "{} > {bound}", worked.load(Ordering::Relaxed));
        }
    }

    #[test]
    #[should_panic(expected = "worker bug")]
    fn a_panicking_worker_stops_the_stream_and_its_panic_goes_on() {
        let work = |_: &mut (), r: Range<usize>| {
            assert!(r.start != 50, "worker bug");
        };
        let _ = Pool::new(2).stream(0..1000, 1, || (), work, |_, ()| Ok::<(), ()>(()));
    }

    #[test]
    #[should_panic(expected = "consumer bug")]
    fn a_panicking_consumer_stops_the_workers_and_its_panic_goes_on() {
        let _ = Pool::new(2).stream(
            0..1000,
            1,
            || (),
            |_, _| (),
            |r, ()| {
                assert!(r.start != 50, "consumer bug");
                Ok::<(), ()>(())
            },
        );
    }

    #[test]
    fn frames_do_not_depend_on_how_they_are_split_between_contexts() {
        let fill = |body: usize, raw: &mut Vec<u8>| raw.extend(std::iter::repeat_n(body as u8, PAGE));
        let fresh = || zstd::bulk::Compressor::new(3).unwrap();
        let whole = compress_frames(&mut fresh(), 40, 0..3, &fill);
        assert_eq!(whole.iter().map(|c| c.pages).collect::<Vec<_>>(), [16, 16, 8]);
        // Frames 0 and 2 through one context, frame 1 through another.
        let (mut reused, mut other) = (fresh(), fresh());
        let mut split = compress_frames(&mut reused, 40, 0..1, &fill);
        split.extend(compress_frames(&mut other, 40, 1..2, &fill));
        split.extend(compress_frames(&mut reused, 40, 2..3, &fill));
        for (a, b) in whole.iter().zip(&split) {
            assert_eq!((a.pages, &a.bytes, a.checksum), (b.pages, &b.bytes, b.checksum));
        }
    }
}
