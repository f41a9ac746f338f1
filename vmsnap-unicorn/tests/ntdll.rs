//! Real Windows code: Wine's PE ntdll.dll mapped with `map_image`, its
//! functions called on the CPU, every result checked against Rust.

mod common;

use common::*;
use vmsnap_unicorn::wine;

fn export(n: &wine::Ntdll, name: &str) -> u64 {
    n.export(name).unwrap_or_else(|| panic!("export {name}"))
}

fn call(n: &mut wine::Ntdll, function: u64, args: &[u64]) -> u64 {
    n.call(function, args, 10_000_000).unwrap()
}

#[test]
fn rtl_compute_crc32_matches_rust() {
    let Some(mut n) = Ntdll::load() else { return };
    let scratch = n.scratch;
    let f = export(&n, "RtlComputeCrc32");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    n.session.write(scratch, &data).unwrap();
    for (initial, len) in [(0u32, 0usize), (0, 1), (0, 9), (0xFFFF_FFFF, 100), (0x1234_5678, 3000)] {
        let got = call(&mut n, f, &[u64::from(initial), scratch, len as u64]) as u32;
        assert_eq!(got, crc32(initial, &data[..len]), "crc of {len} bytes from {initial:#x}");
    }
    assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926); // the reference's own check value
}

#[test]
fn rtl_compare_memory_matches_rust() {
    let Some(mut n) = Ntdll::load() else { return };
    let scratch = n.scratch;
    let f = export(&n, "RtlCompareMemory");
    let a: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
    for diff_at in [0usize, 1, 7, 8, 63, 300, 511, 512] {
        let mut b = a.clone();
        if diff_at < b.len() {
            b[diff_at] ^= 0x55;
        }
        n.session.write(scratch, &a).unwrap();
        n.session.write(scratch + 0x1000, &b).unwrap();
        for len in [0usize, 5, 100, 512] {
            let expected = a[..len].iter().zip(&b[..len]).take_while(|(x, y)| x == y).count();
            let got = call(&mut n, f, &[scratch, scratch + 0x1000, len as u64]);
            assert_eq!(got, expected as u64, "len {len}, first difference at {diff_at}");
        }
    }
}

#[test]
fn memcpy_and_strlen_match_rust() {
    let Some(mut n) = Ntdll::load() else { return };
    let scratch = n.scratch;
    let memcpy = export(&n, "memcpy");
    let strlen = export(&n, "strlen");
    let src: Vec<u8> = (0..2000u32).map(|i| (i * 31) as u8).collect();
    n.session.write(scratch, &src).unwrap();
    for (offset, len) in [(0u64, 0u64), (0, 1), (3, 17), (5, 255), (1, 2000 - 1)] {
        let dst = scratch + 0x2000 + offset;
        n.session.write(dst, &vec![0xEE; len as usize + 16]).unwrap();
        assert_eq!(call(&mut n, memcpy, &[dst, scratch, len]), dst, "memcpy returns dst");
        let mut out = vec![0u8; len as usize + 16];
        n.session.read(dst, &mut out).unwrap();
        assert_eq!(&out[..len as usize], &src[..len as usize]);
        assert!(out[len as usize..].iter().all(|&b| b == 0xEE), "no byte past the end");
    }
    for s in ["", "a", "hello, world", &"x".repeat(1000)] {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        n.session.write(scratch + 3, &bytes).unwrap();
        assert_eq!(call(&mut n, strlen, &[scratch + 3]), s.len() as u64);
    }
}

#[test]
fn sprintf_matches_rust() {
    let Some(mut n) = Ntdll::load() else { return };
    let scratch = n.scratch;
    let sprintf = export(&n, "sprintf");
    let fmt = scratch;
    let word = scratch + 0x100;
    let out = scratch + 0x200;
    n.session.write(fmt, b"%d|%s|%x|%5u|%-3c|%08X|%lld\0").unwrap();
    n.session.write(word, b"vmsnap\0").unwrap();
    let args =
        [out, fmt, (-42i64) as u64, word, 0xbeef, 77, u64::from(b'z'), 0xC0FFEE, (-1234567890123i64) as u64];
    let len = call(&mut n, sprintf, &args);
    let expected = format!(
        "{}|{}|{:x}|{:5}|{:<3}|{:08X}|{}",
        -42, "vmsnap", 0xbeef, 77, 'z', 0xC0FFEE, -1234567890123i64
    );
    let mut got = vec![0u8; expected.len() + 1];
    n.session.read(out, &mut got).unwrap();
    assert_eq!(len, expected.len() as u64);
    assert_eq!(&got[..expected.len()], expected.as_bytes());
    assert_eq!(got[expected.len()], 0);
}

/// A call's effects rewound: the session restored to before a memcpy shows
/// the old bytes and registers, and the same call gives the same result.
#[test]
fn a_real_call_rewinds_exactly() {
    let Some(mut n) = Ntdll::load() else { return };
    let scratch = n.scratch;
    let memcpy = export(&n, "memcpy");
    let crc = export(&n, "RtlComputeCrc32");
    n.session.write(scratch, b"source bytes").unwrap();
    let before = n.session.snapshot().unwrap();
    call(&mut n, memcpy, &[scratch + 0x800, scratch, 12]);
    let after_crc = call(&mut n, crc, &[0, scratch + 0x800, 12]);
    n.session.restore(&before).unwrap();
    let mut b = [0u8; 12];
    n.session.read(scratch + 0x800, &mut b).unwrap();
    assert_eq!(b, [0; 12]);
    assert_eq!(n.session.regs().unwrap(), *before.registers());
    call(&mut n, memcpy, &[scratch + 0x800, scratch, 12]);
    assert_eq!(call(&mut n, crc, &[0, scratch + 0x800, 12]), after_crc);
    assert_eq!(after_crc as u32, crc32(0, b"source bytes"));
}
