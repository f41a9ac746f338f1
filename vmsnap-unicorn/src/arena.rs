//! Host arenas: the page-aligned buffers that hold the live bytes of one
//! allocation and that Unicorn reads and writes directly (`mem_map_ptr`).
//!
//! This is the crate's only `unsafe` module. The invariant every block relies
//! on: an [`Arena`] owns `len` bytes at `ptr`, allocated with page alignment
//! and never moved or resized; Unicorn holds a pointer into it only between a
//! [`Arena::map`] and the matching [`Arena::unmap`], and the session unmaps
//! every run before it drops an arena (and drops its Unicorn engine before its
//! arenas). Rust code touches the bytes only through raw-pointer copies made
//! while the CPU is not running (never inside `emu_start`), so no Rust
//! reference to the bytes is alive while Unicorn writes them.

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use unicorn_engine::{Prot, Unicorn, uc_error};

use crate::PAGE;

/// One mapped run of an arena: `[offset, offset + len)` with Unicorn
/// permissions `prot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub offset: u64,
    pub len: u64,
    pub prot: u32,
}

/// The bytes of one allocation, `len` bytes at guest address `base`.
pub(crate) struct Arena {
    pub base: u64,
    pub len: u64,
    ptr: NonNull<u8>,
    /// The runs currently registered with Unicorn, in address order.
    pub runs: Vec<Run>,
}

impl Arena {
    /// A zeroed arena for `[base, base + len)`; `len` is a non-zero multiple
    /// of the page size. Time: O(1) (the allocator hands out zero pages lazily).
    pub fn new(base: u64, len: u64) -> Arena {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (allocations are at least a
        // page) and a power-of-two alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Arena { base, len, ptr, runs: Vec::new() }
    }

    fn layout(len: u64) -> Layout {
        // Invariant: allocation sizes are page multiples below USER_SPACE_END,
        // so they fit a usize on 64-bit hosts and the layout is valid.
        Layout::from_size_align(usize::try_from(len).expect("allocation fits in usize"), PAGE as usize)
            .expect("page-aligned layout")
    }

    /// True when `address` is inside the arena.
    #[inline]
    pub fn contains(&self, address: u64) -> bool {
        address.wrapping_sub(self.base) < self.len
    }

    /// Copies `buf.len()` bytes at guest `address` (inside the arena) out.
    #[inline]
    pub fn read(&self, address: u64, buf: &mut [u8]) {
        let off = self.offset(address, buf.len());
        // SAFETY: `offset` checked that the range is inside the arena; `buf`
        // is a distinct Rust buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` into the arena at guest `address`.
    #[inline]
    pub fn write(&mut self, address: u64, data: &[u8]) {
        let off = self.offset(address, data.len());
        // SAFETY: as in `read`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) }
    }

    /// Zero-fills `len` bytes at guest `address`.
    #[inline]
    pub fn zero(&mut self, address: u64, len: usize) {
        let off = self.offset(address, len);
        // SAFETY: the range is inside the arena (checked by `offset`).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) }
    }

    /// A view of `len` bytes at guest `address`. The CPU is not running
    /// while the view lives (the session only runs it through `&mut self`).
    #[inline]
    pub fn slice(&self, address: u64, len: usize) -> &[u8] {
        let off = self.offset(address, len);
        // SAFETY: the range is inside the arena; Unicorn does not run (and so
        // does not write) while this shared view lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// A mutable view of `len` bytes at guest `address`, for a copy that
    /// fills it (e.g. `MemoryManager::read_memory`). The CPU is not running
    /// while the view lives (the session holds `&mut self`).
    #[inline]
    pub fn slice_mut(&mut self, address: u64, len: usize) -> &mut [u8] {
        let off = self.offset(address, len);
        // SAFETY: the range is inside the arena; `&mut self` makes this the
        // only Rust view of it, and Unicorn does not run while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }

    #[inline]
    fn offset(&self, address: u64, len: usize) -> usize {
        let off = address.wrapping_sub(self.base);
        // Invariant: callers pass ranges they found inside this arena.
        assert!(off <= self.len && len as u64 <= self.len - off, "range inside the arena");
        off as usize
    }

    /// Registers `run` with Unicorn (`mem_map_ptr`) and records it.
    pub fn map(&mut self, uc: &mut Unicorn<'_, crate::session::CpuData>, run: Run) -> Result<(), uc_error> {
        let off = self.offset(self.base + run.offset, run.len as usize);
        // SAFETY: the run is inside the arena, which stays allocated and in
        // place until the run is unmapped (module invariant).
        unsafe {
            uc.mem_map_ptr(
                self.base + run.offset,
                run.len,
                Prot(run.prot),
                self.ptr.as_ptr().add(off).cast(),
            )?
        };
        self.runs.push(run);
        Ok(())
    }

    /// Unregisters every run from Unicorn.
    pub fn unmap_all(&mut self, uc: &mut Unicorn<'_, crate::session::CpuData>) -> Result<(), uc_error> {
        for run in self.runs.drain(..) {
            uc.mem_unmap(self.base + run.offset, run.len)?;
        }
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the session unmapped
        // every run (or dropped the engine) before dropping the arena.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}
