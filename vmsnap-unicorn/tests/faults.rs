//! Faults with Windows meaning under Unicorn, and code restored exactly.

mod common;

use common::*;
use vmsnap::{Access, MemoryError, Protection, RegionKind};
use vmsnap_unicorn::{Exit, RegisterX86, SessionError};

fn data_page(s: &mut vmsnap_unicorn::Session, protection: Protection) -> u64 {
    let at = s.allocate_memory(0x1000, Protection::READ_WRITE, false, 0, RegionKind::Private).unwrap();
    s.protect_memory(at, 0x1000, protection).unwrap();
    at
}

#[test]
fn guard_page_fires_once_under_unicorn_then_the_retry_goes_through() {
    let (mut s, code) = session_with_code(&LOAD_RBX_FROM_RAX);
    let data = data_page(&mut s, Protection::READ_WRITE | Protection::GUARD);
    s.write(data, &0x1234u64.to_le_bytes()).unwrap();
    s.set_reg(RegisterX86::RAX, data).unwrap();
    let err = s.run(code, code + 3, 0).unwrap_err();
    assert_eq!(
        err,
        SessionError::Memory(MemoryError::GuardPageViolation { address: data, access: Access::Read })
    );
    assert_eq!(s.reg(RegisterX86::RIP).unwrap(), code, "rip stays on the faulting instruction");
    assert_eq!(s.memory().page_protection(data), Some(Protection::READ_WRITE), "the guard bit is gone");
    assert_eq!(s.run(code, code + 3, 0).unwrap(), Exit::Until);
    assert_eq!(s.reg(RegisterX86::RBX).unwrap(), 0x1234);
    // Once only: the next access goes straight through.
    assert_eq!(s.run(code, code + 3, 0).unwrap(), Exit::Until);
}

#[test]
fn guard_page_rearms_when_restored_to_a_version_before_it_fired() {
    let (mut s, code) = session_with_code(&STORE_RBX_AT_RAX);
    let data = data_page(&mut s, Protection::READ_WRITE | Protection::GUARD);
    s.set_reg(RegisterX86::RAX, data).unwrap();
    let armed = s.snapshot().unwrap();
    let fired = |r: Result<Exit, SessionError>| {
        matches!(r, Err(SessionError::Memory(MemoryError::GuardPageViolation { access: Access::Write, .. })))
    };
    assert!(fired(s.run(code, code + 3, 0)));
    assert_eq!(s.run(code, code + 3, 0).unwrap(), Exit::Until);
    let disarmed = s.snapshot().unwrap();
    s.restore(&armed).unwrap();
    assert!(fired(s.run(code, code + 3, 0)), "restored guard fires again");
    s.restore(&disarmed).unwrap();
    assert_eq!(s.run(code, code + 3, 0).unwrap(), Exit::Until);
}

#[test]
fn guard_page_on_code_fires_on_fetch() {
    let (mut s, code) = session_with_code(&[0x90, 0x90]);
    s.protect_memory(code, 0x1000, Protection::READ_EXECUTE | Protection::GUARD).unwrap();
    let err = s.run(code, code + 2, 0).unwrap_err();
    assert_eq!(
        err,
        SessionError::Memory(MemoryError::GuardPageViolation { address: code, access: Access::Execute })
    );
    assert_eq!(s.run(code, code + 2, 0).unwrap(), Exit::Until);
}

#[test]
fn refused_accesses_are_access_violations_with_address_and_kind() {
    let (mut s, code) = session_with_code(&STORE_RBX_AT_RAX);
    let read_only = data_page(&mut s, Protection::READ);
    s.set_reg(RegisterX86::RAX, read_only + 8).unwrap();
    assert_eq!(
        s.run(code, code + 3, 0).unwrap_err(),
        SessionError::Memory(MemoryError::AccessViolation { address: read_only + 8, access: Access::Write })
    );
    // Reserved, not committed.
    let reserved = s.allocate_memory(0x10000, Protection::READ_WRITE, true, 0, RegionKind::Private).unwrap();
    s.set_reg(RegisterX86::RAX, reserved).unwrap();
    assert_eq!(
        s.run(code, code + 3, 0).unwrap_err(),
        SessionError::Memory(MemoryError::AccessViolation { address: reserved, access: Access::Write })
    );
    // Free memory, read.
    let (mut s, code) = session_with_code(&LOAD_RBX_FROM_RAX);
    s.set_reg(RegisterX86::RAX, 0x5000_0000).unwrap();
    assert_eq!(
        s.run(code, code + 3, 0).unwrap_err(),
        SessionError::Memory(MemoryError::AccessViolation { address: 0x5000_0000, access: Access::Read })
    );
    // No-access page, read.
    let none = data_page(&mut s, Protection::empty());
    s.set_reg(RegisterX86::RAX, none).unwrap();
    assert!(matches!(
        s.run(code, code + 3, 0),
        Err(SessionError::Memory(MemoryError::AccessViolation { access: Access::Read, .. }))
    ));
    // Executing data.
    let data = data_page(&mut s, Protection::READ_WRITE);
    s.write(data, &[0x90]).unwrap();
    assert_eq!(
        s.run(data, data + 1, 0).unwrap_err(),
        SessionError::Memory(MemoryError::AccessViolation { address: data, access: Access::Execute })
    );
}

#[test]
fn write_copy_page_becomes_writable_on_the_first_write() {
    let (mut s, code) = session_with_code(&STORE_RBX_AT_RAX);
    let page = data_page(&mut s, Protection::READ | Protection::WRITE_COPY);
    s.write(page + 0x100, b"keep").unwrap();
    s.set_reg(RegisterX86::RAX, page + 8).unwrap();
    s.set_reg(RegisterX86::RBX, 0xABCD).unwrap();
    assert_eq!(s.run(code, code + 3, 0).unwrap(), Exit::Until);
    assert_eq!(read_u64(&s, page + 8), 0xABCD);
    let mut keep = [0u8; 4];
    s.read(page + 0x100, &mut keep).unwrap();
    assert_eq!(&keep, b"keep");
    assert_eq!(s.memory().page_protection(page), Some(Protection::READ_WRITE));
}

/// Code changed by the CPU itself, then restored to an earlier version: the
/// translation cache must not run the stale code.
#[test]
fn self_modifying_code_is_restored_and_the_translation_cache_flushed() {
    // At `code`: mov eax, 1. At `code + 0x100`: mov [rdx], ebx (patches the immediate).
    let mut s = vmsnap_unicorn::Session::new(vmsnap::MemoryManager::new()).unwrap();
    let code = s.allocate_memory(0x1000, Protection::ALL_ACCESS, false, 0, RegionKind::Private).unwrap();
    s.write(code, &mov_eax(1)).unwrap();
    s.write(code + 0x100, &[0x89, 0x1A]).unwrap();
    let run = |s: &mut vmsnap_unicorn::Session| {
        s.run(code, code + 5, 0).unwrap();
        s.reg(RegisterX86::RAX).unwrap()
    };
    let original = s.snapshot().unwrap();
    assert_eq!(run(&mut s), 1); // now translated and cached
    s.set_reg(RegisterX86::RDX, code + 1).unwrap();
    s.set_reg(RegisterX86::RBX, 2).unwrap();
    s.run(code + 0x100, code + 0x102, 0).unwrap();
    assert_eq!(run(&mut s), 2, "Unicorn sees its own self-modification");
    let patched = s.snapshot().unwrap();
    s.restore(&original).unwrap();
    assert_eq!(run(&mut s), 1, "restored code runs, not the cached patch");
    s.restore(&patched).unwrap();
    assert_eq!(run(&mut s), 2);
    // Patched by the host, without a snapshot in between.
    s.write(code + 1, &3u32.to_le_bytes()).unwrap();
    assert_eq!(run(&mut s), 3);
    s.restore(&original).unwrap();
    assert_eq!(run(&mut s), 1);
    // Dirtied by the CPU since the last snapshot, restored to the same version.
    s.set_reg(RegisterX86::RDX, code + 1).unwrap();
    s.set_reg(RegisterX86::RBX, 2).unwrap();
    s.run(code + 0x100, code + 0x102, 0).unwrap();
    s.restore(&original).unwrap();
    assert_eq!(run(&mut s), 1);
}

/// A page executable in one version and not in the other.
#[test]
fn protection_changes_are_restored_in_the_cpu() {
    let (mut s, code) = session_with_code(&mov_eax(7));
    let executable = s.snapshot().unwrap();
    s.protect_memory(code, 0x1000, Protection::READ_WRITE).unwrap();
    let data = s.snapshot().unwrap();
    assert!(matches!(
        s.run(code, code + 5, 0),
        Err(SessionError::Memory(MemoryError::AccessViolation { access: Access::Execute, .. }))
    ));
    s.restore(&executable).unwrap();
    assert_eq!(s.run(code, code + 5, 0).unwrap(), Exit::Until);
    assert_eq!(s.reg(RegisterX86::RAX).unwrap(), 7);
    s.restore(&data).unwrap();
    assert!(s.run(code, code + 5, 0).is_err());
    // Released in a later version, back again on restore.
    s.restore(&executable).unwrap();
    s.release_memory(code, 0).unwrap();
    assert!(s.run(code, code + 5, 0).is_err());
    s.restore(&executable).unwrap();
    assert_eq!(s.run(code, code + 5, 0).unwrap(), Exit::Until);
}

#[test]
fn registers_are_part_of_a_version_and_diffable() {
    let (mut s, code) = session_with_code(&mov_eax(5));
    s.set_reg(RegisterX86::RBX, 9).unwrap();
    let a = s.snapshot().unwrap();
    s.run(code, code + 5, 0).unwrap();
    let b = s.snapshot().unwrap();
    let d = a.diff(&b);
    let names: Vec<_> = d.registers.iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["rax", "rip"]);
    s.restore(&a).unwrap();
    assert_eq!(s.regs().unwrap(), *a.registers());
    assert_eq!(s.reg(RegisterX86::RBX).unwrap(), 9);
}

#[test]
fn instruction_limit_stops_the_cpu() {
    let (mut s, code) = session_with_code(&[0x90, 0x90, 0x90, 0x90]);
    assert_eq!(s.run(code, code + 4, 2).unwrap(), Exit::InstructionLimit { rip: code + 2 });
}
