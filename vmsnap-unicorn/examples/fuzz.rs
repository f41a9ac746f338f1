//! Snapshot fuzzing: RtlCompareMemory from Wine's ntdll.dll on random
//! inputs, the session reset to one base snapshot before every input; each
//! result is checked against Rust, and executions per second are printed.
//!
//! ```sh
//! cargo run --release -p vmsnap-unicorn --example fuzz [seconds]
//! ```

use std::time::{Duration, Instant};

use vmsnap_unicorn::wine::{Ntdll, ntdll_path};

const LEN: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args().nth(1).map_or(Ok(2.0), |s| s.parse())?;
    let mut n = Ntdll::load(&std::fs::read(ntdll_path()?)?)?;
    let compare = n.export("RtlCompareMemory").ok_or("no RtlCompareMemory export")?;
    let (reference, input) = (n.scratch, n.scratch + 0x1000);
    let expected: Vec<u8> = (0..LEN).map(|i| (i % 4) as u8).collect();
    n.session.write(reference, &expected)?;
    let base = n.session.snapshot()?;

    // xorshift64*: a tiny deterministic input generator.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (mut executions, mut best) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    while Instant::now() < deadline {
        for _ in 0..256 {
            n.session.restore(&base)?;
            // Mutate: a prefix of the reference, then random bytes.
            let r = next();
            let keep = (r % LEN as u64) as usize;
            let mut data = expected.clone();
            for (i, b) in data.iter_mut().enumerate().skip(keep) {
                *b = (next() >> (i % 8)) as u8;
            }
            n.session.write(input, &data)?;
            let got = n.call(compare, &[reference, input, LEN as u64], 1_000_000)?;
            let want = expected.iter().zip(&data).take_while(|(a, b)| a == b).count() as u64;
            assert_eq!(got, want, "RtlCompareMemory disagrees with Rust");
            best = best.max(got);
            executions += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{executions} executions in {elapsed:.2} s: {:.0} exec/s (reset to the base snapshot before each), longest match {best}/{LEN}",
        executions as f64 / elapsed
    );
    Ok(())
}
