//! Calling guest functions: the Windows x64 calling convention with a stack
//! and a return trap, and export lookup in mapped PE images.

use unicorn_engine::RegisterX86;
use vmsnap::image::{IMAGE_DIRECTORY_ENTRY_EXPORT, MappedImage};
use vmsnap::{MemoryManager, Protection, RegionKind};

use crate::PAGE;
use crate::error::SessionError;
use crate::session::{Exit, Session};

/// A stack for [`Session::call`]: one allocation whose lowest page is the
/// return trap (`READ | EXECUTE`, filled with `int3`) and whose other pages
/// are the stack (`READ | WRITE`). A stack overflow runs into the trap page
/// and faults as an access violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallStack {
    /// Base of the allocation (the trap page).
    pub base: u64,
    /// The return address every call pushes: the CPU stops when `rip`
    /// reaches it.
    pub trap: u64,
    /// One past the highest stack byte.
    pub top: u64,
}

/// The most arguments [`Session::call`] passes.
pub const MAX_ARGUMENTS: usize = 16;

impl Session {
    /// Allocates a [`CallStack`] with `size` bytes of stack (rounded up to
    /// pages) anywhere in the address space.
    pub fn create_call_stack(&mut self, size: u64) -> Result<CallStack, SessionError> {
        let size = size.div_ceil(PAGE).max(1) * PAGE;
        let base = self.allocate_memory(size + PAGE, Protection::READ_WRITE, true, 0, RegionKind::Private)?;
        self.commit_memory(base, PAGE, Protection::READ_WRITE)?;
        self.write(base, &[0xCC; PAGE as usize])?;
        self.protect_memory(base, PAGE, Protection::READ_EXECUTE)?;
        self.commit_memory(base + PAGE, size, Protection::READ_WRITE)?;
        Ok(CallStack { base, trap: base, top: base + PAGE + size })
    }

    /// Sets up a call as [`call`](Self::call) does — arguments, stack
    /// frame, return address, `rip` — without running it, for stepping
    /// through a call with [`run`](Self::run) (`until` = `stack.trap`).
    pub fn prepare_call(
        &mut self,
        stack: &CallStack,
        function: u64,
        args: &[u64],
    ) -> Result<(), SessionError> {
        if args.len() > MAX_ARGUMENTS {
            return Err(SessionError::TooManyArguments(args.len()));
        }
        let stacked = args.len().saturating_sub(4) as u64;
        // `frame` is 16-byte aligned: the caller's rsp before `call`.
        let frame = (stack.top - 64 - 32 - 8 * stacked) & !0xF;
        let rsp = frame - 8;
        let mut bytes = Vec::with_capacity(8 + 32 + 8 * stacked as usize);
        bytes.extend_from_slice(&stack.trap.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 32]);
        for a in args.iter().skip(4) {
            bytes.extend_from_slice(&a.to_le_bytes());
        }
        self.write(rsp, &bytes)?;
        let regs = [RegisterX86::RCX, RegisterX86::RDX, RegisterX86::R8, RegisterX86::R9];
        for (r, v) in regs.iter().zip(args) {
            self.set_reg(*r, *v)?;
        }
        self.set_reg(RegisterX86::RSP, rsp)?;
        self.set_reg(RegisterX86::RIP, function)?;
        Ok(())
    }

    /// Calls the guest function at `function` with the Windows x64 calling
    /// convention and returns `rax`: the first four arguments in `rcx`,
    /// `rdx`, `r8`, `r9`, the rest on the stack above 32 bytes of shadow
    /// space, `rsp` 16-byte aligned before the call (so `rsp % 16 == 8` at
    /// entry), the return address pointing at `stack.trap`. Runs until `rip`
    /// reaches the trap, or at most `limit` instructions (0: no limit).
    ///
    /// Other registers keep their values; the stack frame is written through
    /// the session (its pages become dirty like any write).
    pub fn call(
        &mut self,
        stack: &CallStack,
        function: u64,
        args: &[u64],
        limit: usize,
    ) -> Result<u64, SessionError> {
        self.prepare_call(stack, function, args)?;
        match self.run(function, stack.trap, limit)? {
            Exit::Until => self.reg(RegisterX86::RAX),
            Exit::InstructionLimit { rip } | Exit::Stopped { rip } => {
                Err(SessionError::CallDidNotReturn { rip })
            }
        }
    }
}

/// The address of the export `name` of `image` (read through `mm`), or
/// `None` when the image has no such export or it is a forwarder. Time:
/// O(log exports) (a binary search of the sorted name table).
pub fn find_export(mm: &MemoryManager, image: &MappedImage, name: &str) -> Option<u64> {
    let (dir, size) = image.directory(IMAGE_DIRECTORY_ENTRY_EXPORT)?;
    let u32_at = |address: u64| -> Option<u32> {
        let mut b = [0u8; 4];
        mm.read_memory(address, &mut b).ok()?;
        Some(u32::from_le_bytes(b))
    };
    let names = u64::from(u32_at(dir + 0x18)?);
    let functions = image.base + u64::from(u32_at(dir + 0x1C)?);
    let name_rvas = image.base + u64::from(u32_at(dir + 0x20)?);
    let ordinals = image.base + u64::from(u32_at(dir + 0x24)?);
    let name_at = |i: u64| -> Option<Vec<u8>> {
        let at = image.base + u64::from(u32_at(name_rvas + 4 * i)?);
        let mut out = Vec::new();
        let mut b = [0u8];
        while out.len() < 512 {
            mm.read_memory(at + out.len() as u64, &mut b).ok()?;
            if b[0] == 0 {
                return Some(out);
            }
            out.push(b[0]);
        }
        None
    };
    let (mut lo, mut hi) = (0, names);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match name_at(mid)?.as_slice().cmp(name.as_bytes()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                let mut b = [0u8; 2];
                mm.read_memory(ordinals + 2 * mid, &mut b).ok()?;
                let index = u64::from(u16::from_le_bytes(b));
                let rva = u64::from(u32_at(functions + 4 * index)?);
                let address = image.base + rva;
                // A forwarder's RVA points inside the export directory.
                return (address < dir || address >= dir + u64::from(size)).then_some(address);
            }
        }
    }
    None
}
