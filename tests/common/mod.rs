//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use vmsnap::MemoryManager;

pub mod nt;

/// xorshift64*: a deterministic, dependency-free random source.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times out of 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `len` bytes at `address` through the host view (panics if unreadable).
pub fn read_vec(mm: &MemoryManager, address: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mm.read_memory(address, &mut buf).unwrap();
    buf
}
