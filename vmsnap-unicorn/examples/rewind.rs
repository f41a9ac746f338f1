//! Rewind demo: RtlComputeCrc32 from Wine's ntdll.dll runs over a buffer in
//! steps of a fixed instruction count, taking a session snapshot after each;
//! then the session rewinds to a middle step, changes the not-yet-read input,
//! runs on as a branch, and the two end states are diffed.
//!
//! ```sh
//! cargo run --release -p vmsnap-unicorn --example rewind
//! ```

use vmsnap_unicorn::wine::{Ntdll, ntdll_path};
use vmsnap_unicorn::{Exit, RegisterX86, SessionError, SessionSnapshot};

const STEP: usize = 2_000;
const LEN: usize = 4096;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Runs the prepared call to its end in steps, snapshotting after each.
fn run_in_steps(n: &mut Ntdll, steps: &mut Vec<SessionSnapshot>) -> Result<u32, SessionError> {
    loop {
        let rip = n.session.reg(RegisterX86::RIP)?;
        let exit = n.session.run(rip, n.stack.trap, STEP)?;
        steps.push(n.session.snapshot()?);
        if exit == Exit::Until {
            return Ok(n.session.reg(RegisterX86::RAX)? as u32);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = ntdll_path()?;
    let mut n = Ntdll::load(&std::fs::read(&path)?)?;
    println!("ntdll.dll from {} mapped at {:#x}", path.display(), n.image.base);
    let crc = n.export("RtlComputeCrc32").ok_or("no RtlComputeCrc32 export")?;

    let input: Vec<u8> = (0..LEN).map(|i| (i * 13 + i / 7) as u8).collect();
    n.session.write(n.scratch, &input)?;
    n.session.prepare_call(&n.stack, crc, &[0, n.scratch, LEN as u64])?;
    let mut steps = vec![n.session.snapshot()?];
    let result = run_in_steps(&mut n, &mut steps)?;
    println!(
        "run A: {} steps of {STEP} instructions, crc {result:#010x} (Rust: {:#010x})",
        steps.len() - 1,
        crc32(&input)
    );
    assert_eq!(result, crc32(&input));
    let end_a = steps.last().expect("at least one step").clone();

    // Rewind to the middle; the CRC has read part of the buffer by then.
    let middle = steps.len() / 2;
    n.session.restore(&steps[middle])?;
    let regs = n.session.regs()?;
    println!("rewound to step {middle}: rip {:#x}, rdx {:#x}", regs.rip, regs.rdx);
    let mut changed = input.clone();
    changed[LEN - 1] ^= 0xFF; // the last byte: not read yet at the middle step
    n.session.write(n.scratch + LEN as u64 - 1, &changed[LEN - 1..])?;
    let mut branch = Vec::new();
    let result_b = run_in_steps(&mut n, &mut branch)?;
    println!("run B (branch from step {middle}): crc {result_b:#010x} (Rust: {:#010x})", crc32(&changed));
    assert_eq!(result_b, crc32(&changed));
    let end_b = branch.last().expect("at least one step");

    let diff = end_a.diff(end_b);
    println!("end A → end B:");
    for change in diff.memory.page_changes() {
        println!("  page {:#x}: bytes {:?}", change.address(), change.byte_ranges());
    }
    for r in &diff.registers {
        println!("  {}: {:#x} → {:#x}", r.name, r.old, r.new);
    }

    // Any version, any branch: back to the end of A, then to step 1 of A.
    n.session.restore(&end_a)?;
    assert_eq!(n.session.reg(RegisterX86::RAX)? as u32, result);
    n.session.restore(&steps[1])?;
    let rip = n.session.reg(RegisterX86::RIP)?;
    while n.session.run(n.session.reg(RegisterX86::RIP)?, n.stack.trap, 0)? != Exit::Until {}
    assert_eq!(n.session.reg(RegisterX86::RAX)? as u32, result);
    println!("restored A's step 1 (rip {rip:#x}) and re-ran: same crc {result:#010x}");
    Ok(())
}
