//! [`Registers`]: the CPU state a session snapshot keeps, as plain values.

use serde::{Deserialize, Serialize};
use unicorn_engine::{RegisterX86, Unicorn, uc_error};

use crate::session::CpuData;

/// The user-mode x86-64 register file a [`SessionSnapshot`](crate::SessionSnapshot)
/// keeps: the general-purpose registers, `rip`, `rflags`, the `fs`/`gs`
/// bases, `mxcsr` and the sixteen XMM registers. Plain values, so a snapshot
/// is engine-independent, serializable and diffable
/// ([`Registers::changes`]). Segment selectors, control registers and the x87
/// stack are not kept: user-mode code does not change the former, and the
/// code this crate runs does not use the latter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // the field names are the register names
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub mxcsr: u64,
    pub xmm: [u128; 16],
}

/// One register that differs between two [`Registers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterChange {
    /// The register's name (`"rax"`, `"xmm3"`, ...).
    pub name: &'static str,
    /// Its value in the first (older) state.
    pub old: u128,
    /// Its value in the second (newer) state.
    pub new: u128,
}

const GPR: [(&str, RegisterX86); 21] = [
    ("rax", RegisterX86::RAX),
    ("rbx", RegisterX86::RBX),
    ("rcx", RegisterX86::RCX),
    ("rdx", RegisterX86::RDX),
    ("rsi", RegisterX86::RSI),
    ("rdi", RegisterX86::RDI),
    ("rbp", RegisterX86::RBP),
    ("rsp", RegisterX86::RSP),
    ("r8", RegisterX86::R8),
    ("r9", RegisterX86::R9),
    ("r10", RegisterX86::R10),
    ("r11", RegisterX86::R11),
    ("r12", RegisterX86::R12),
    ("r13", RegisterX86::R13),
    ("r14", RegisterX86::R14),
    ("r15", RegisterX86::R15),
    ("rip", RegisterX86::RIP),
    ("rflags", RegisterX86::RFLAGS),
    ("fs_base", RegisterX86::FS_BASE),
    ("gs_base", RegisterX86::GS_BASE),
    ("mxcsr", RegisterX86::MXCSR),
];

const XMM_NAMES: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
    "xmm12", "xmm13", "xmm14", "xmm15",
];

impl Registers {
    fn gpr(&self) -> [u64; 21] {
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.rsp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rflags,
            self.fs_base,
            self.gs_base,
            self.mxcsr,
        ]
    }

    fn set_gpr(&mut self, v: [u64; 21]) {
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.rsp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rflags,
            self.fs_base,
            self.gs_base,
            self.mxcsr,
        ] = v;
    }

    /// Every register as `(name, value)`, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u128)> + '_ {
        let gpr = self.gpr();
        GPR.iter()
            .zip(gpr)
            .map(|((name, _), v)| (*name, u128::from(v)))
            .chain(XMM_NAMES.iter().zip(self.xmm).map(|(name, v)| (*name, v)))
    }

    /// The registers whose values differ from `self` (old) to `other`
    /// (new), in the order of [`iter`](Self::iter). Time: O(registers).
    pub fn changes(&self, other: &Registers) -> Vec<RegisterChange> {
        self.iter()
            .zip(other.iter())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((name, old), (_, new))| RegisterChange { name, old, new })
            .collect()
    }

    /// Reads the register file from the CPU.
    pub(crate) fn read(uc: &Unicorn<'_, CpuData>) -> Result<Registers, uc_error> {
        let mut r = Registers::default();
        let mut gpr = [0u64; 21];
        for (slot, (_, id)) in gpr.iter_mut().zip(GPR) {
            *slot = uc.reg_read(id)?;
        }
        r.set_gpr(gpr);
        for (i, x) in r.xmm.iter_mut().enumerate() {
            let bytes = uc.reg_read_long(xmm_id(i))?;
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes[..16]);
            *x = u128::from_le_bytes(b);
        }
        Ok(r)
    }

    /// Writes the register file into the CPU.
    pub(crate) fn write(&self, uc: &mut Unicorn<'_, CpuData>) -> Result<(), uc_error> {
        for ((_, id), v) in GPR.iter().zip(self.gpr()) {
            uc.reg_write(*id, v)?;
        }
        for (i, x) in self.xmm.iter().enumerate() {
            uc.reg_write_long(xmm_id(i), &x.to_le_bytes())?;
        }
        Ok(())
    }
}

fn xmm_id(i: usize) -> i32 {
    // XMM0..XMM15 are consecutive in Unicorn's x86 register numbering.
    RegisterX86::XMM0 as i32 + i as i32
}
