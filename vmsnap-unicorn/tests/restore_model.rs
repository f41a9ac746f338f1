//! Restore-to-any exactness under Unicorn: random guest stores (real `mov`
//! instructions run by the CPU), host writes, protection changes, commits,
//! decommits, snapshots and restores to random earlier versions (on any
//! branch) run against the session and against a trivially correct model;
//! after every step the session's bytes (its own view, Unicorn's `mem_read`,
//! and vmsnap's after a fold) and protections must match the model.

mod common;

use common::*;
use proptest::prelude::*;
use vmsnap::{Access, MemoryError, Protection, RegionKind};
use vmsnap_unicorn::{RegisterX86, Session, SessionError, SessionSnapshot};

const PAGES: u64 = 16;
const PAGE: usize = 0x1000;

fn protections() -> [Protection; 7] {
    [
        Protection::READ_WRITE,
        Protection::READ,
        Protection::ALL_ACCESS,
        Protection::READ_EXECUTE,
        Protection::empty(),
        Protection::READ_WRITE | Protection::GUARD,
        Protection::READ | Protection::WRITE_COPY,
    ]
}

#[derive(Clone, Debug)]
enum Op {
    CpuStore { page: u64, offset: u64, value: u64 },
    HostWrite { page: u64, offset: u64, len: usize, byte: u8 },
    Protect { page: u64, count: u64, prot: usize },
    Commit { page: u64, count: u64, prot: usize },
    Decommit { page: u64, count: u64 },
    Snapshot,
    Restore(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PAGES, 0..=(PAGE as u64 - 8), any::<u64>()).prop_map(|(page, offset, value)| Op::CpuStore { page, offset, value }),
        3 => (0..PAGES, 0..PAGE as u64 - 64, 1..64usize, any::<u8>()).prop_map(|(page, offset, len, byte)| Op::HostWrite { page, offset, len, byte }),
        2 => (0..PAGES, 1..4u64, 0..7usize).prop_map(|(page, count, prot)| Op::Protect { page, count, prot }),
        1 => (0..PAGES, 1..4u64, 0..7usize).prop_map(|(page, count, prot)| Op::Commit { page, count, prot }),
        1 => (0..PAGES, 1..4u64).prop_map(|(page, count)| Op::Decommit { page, count }),
        2 => Just(Op::Snapshot),
        3 => any::<usize>().prop_map(Op::Restore),
    ]
}

/// The model: each page committed with a protection and bytes, or not.
type Model = Vec<Option<(Protection, Vec<u8>)>>;

struct Harness {
    s: Session,
    code: u64,
    base: u64,
    model: Model,
    versions: Vec<(SessionSnapshot, Model)>,
}

impl Harness {
    fn new() -> Harness {
        let (mut s, code) = session_with_code(&STORE_RBX_AT_RAX);
        let base = s
            .allocate_memory(PAGES * PAGE as u64, Protection::READ_WRITE, true, 0, RegionKind::Private)
            .unwrap();
        s.commit_memory(base, 8 * PAGE as u64, Protection::READ_WRITE).unwrap();
        let mut model: Model = vec![None; PAGES as usize];
        for p in model.iter_mut().take(8) {
            *p = Some((Protection::READ_WRITE, vec![0; PAGE]));
        }
        Harness { s, code, base, model, versions: Vec::new() }
    }

    fn addr(&self, page: u64) -> u64 {
        self.base + page * PAGE as u64
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::CpuStore { page, offset, value } => {
                let at = self.addr(page) + offset;
                self.s.set_reg(RegisterX86::RAX, at).unwrap();
                self.s.set_reg(RegisterX86::RBX, value).unwrap();
                let got = self.s.run(self.code, self.code + 3, 0);
                let m = &mut self.model[page as usize];
                match m {
                    None => assert_eq!(got, Err(av(at))),
                    Some((prot, _)) if !prot.allows(Access::Write) => assert_eq!(got, Err(av(at))),
                    Some((prot, _)) if prot.contains(Protection::GUARD) => {
                        assert_eq!(
                            got,
                            Err(SessionError::Memory(MemoryError::GuardPageViolation {
                                address: at,
                                access: Access::Write
                            }))
                        );
                        prot.remove(Protection::GUARD);
                    }
                    Some((prot, bytes)) => {
                        assert!(got.is_ok(), "{got:?}");
                        if prot.contains(Protection::WRITE_COPY) {
                            *prot = (*prot - Protection::WRITE_COPY) | Protection::WRITE;
                        }
                        bytes[offset as usize..offset as usize + 8].copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
            Op::HostWrite { page, offset, len, byte } => {
                let got = self.s.write(self.addr(page) + offset, &vec![byte; len]);
                match &mut self.model[page as usize] {
                    None => assert!(got.is_err()),
                    Some((_, bytes)) => {
                        got.unwrap();
                        bytes[offset as usize..offset as usize + len].fill(byte);
                    }
                }
            }
            Op::Protect { page, count, prot } => {
                let prot = protections()[prot];
                let got = self.s.protect_memory(self.addr(page), count * PAGE as u64, prot);
                let range = page as usize..(page + count) as usize;
                if range.end as u64 <= PAGES && self.model[range.clone()].iter().all(Option::is_some) {
                    got.unwrap();
                    for p in &mut self.model[range] {
                        p.as_mut().unwrap().0 = prot;
                    }
                } else {
                    assert!(got.is_err());
                }
            }
            Op::Commit { page, count, prot } => {
                let prot = protections()[prot];
                let got = self.s.commit_memory(self.addr(page), count * PAGE as u64, prot);
                if page + count <= PAGES {
                    got.unwrap();
                    for p in &mut self.model[page as usize..(page + count) as usize] {
                        let bytes = p.take().map_or_else(|| vec![0; PAGE], |(_, b)| b);
                        *p = Some((prot, bytes));
                    }
                } else {
                    assert!(got.is_err());
                }
            }
            Op::Decommit { page, count } => {
                let got = self.s.decommit_memory(self.addr(page), count * PAGE as u64);
                if page + count <= PAGES {
                    got.unwrap();
                    self.model[page as usize..(page + count) as usize].fill(None);
                } else {
                    assert!(got.is_err());
                }
            }
            Op::Snapshot => {
                let snap = self.s.snapshot().unwrap();
                self.versions.push((snap, self.model.clone()));
            }
            Op::Restore(i) => {
                if self.versions.is_empty() {
                    return;
                }
                let (snap, model) = &self.versions[i % self.versions.len()];
                self.s.restore(snap).unwrap();
                self.model = model.clone();
                assert_eq!(self.s.regs().unwrap(), *snap.registers());
            }
        }
    }

    fn check(&mut self, fold: bool) {
        if fold {
            self.s.fold();
        }
        for (i, m) in self.model.iter().enumerate() {
            let at = self.addr(i as u64);
            let mut live = vec![0u8; PAGE];
            let read = self.s.read(at, &mut live);
            let cpu = self.s.cpu().mem_read_as_vec(at, PAGE);
            assert_eq!(
                self.s.memory().page_protection(at),
                m.as_ref().map(|(p, _)| *p),
                "protection of page {i}"
            );
            match m {
                None => {
                    assert!(read.is_err(), "page {i} reads but is not committed");
                    assert!(cpu.is_err(), "page {i} is mapped in the CPU but not committed");
                }
                Some((prot, bytes)) => {
                    read.unwrap();
                    assert!(live == *bytes, "session bytes of page {i}");
                    let mapped = !prot.contains(Protection::GUARD) && !prot.is_empty();
                    match cpu {
                        Ok(cpu) => {
                            assert!(mapped, "page {i} ({prot}) mapped in the CPU");
                            assert!(cpu == *bytes, "CPU bytes of page {i}");
                        }
                        Err(_) => assert!(!mapped, "page {i} ({prot}) not mapped in the CPU"),
                    }
                    if fold {
                        let mut folded = vec![0u8; PAGE];
                        self.s.memory().read_memory(at, &mut folded).unwrap();
                        assert!(folded == *bytes, "vmsnap bytes of page {i} after a fold");
                    }
                }
            }
        }
    }
}

fn av(address: u64) -> SessionError {
    SessionError::Memory(MemoryError::AccessViolation { address, access: Access::Write })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn restore_to_any_version_is_exact_under_unicorn(ops in prop::collection::vec(op(), 1..48)) {
        let mut h = Harness::new();
        for (n, op) in ops.iter().enumerate() {
            h.apply(op);
            h.check(n % 5 == 4);
        }
        // Finally, every version restores exactly, in a scrambled order.
        let count = h.versions.len();
        for k in 0..count {
            h.apply(&Op::Restore(k * 7 + 3));
            h.check(k % 2 == 0);
        }
    }
}
