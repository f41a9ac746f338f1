//! Sections and views: pagefile-backed memory that several views show.
//!
//! ```text
//!   user space                                  section pages (above user space)
//!   view A ┌────┬────┬────┐ ─── page entries ──► ┌────┬────┬────┬────┐ section
//!          └────┴────┴────┘     name the        │ k  │k+1 │k+2 │k+3 │ key..key+pages
//!   view B      ┌────┬────┐ ─── section page ──►└────┴────┴────┴────┘
//!               └────┴────┘
//! ```
//!
//! A section's bytes live in the page table like any page, at page numbers
//! above user space, so snapshots, restore, diffs and serialization carry
//! them with no extra machinery. A view is an allocation (kind
//! `PagefileView`) whose pages carry the `VIEW` state bit and name the
//! section page holding their bytes: every view reads and writes the same
//! bytes. Commit state belongs to the section (committing through one view
//! commits for all, each view with its own protection); protection belongs to
//! the view. A write-copy view page that the guest writes gets a private copy.

use super::MemoryManager;
use crate::address::{checked_end, page_up, vpn};
use crate::error::MemoryError;
use crate::page_table::RangeOp;
use crate::protection::{Protection, RegionKind, meta};
use crate::region_map::{Allocation, Backing, Section, ViewOf};
use crate::{ALLOCATION_GRANULARITY, PAGE_SIZE};

/// Identifies a section of one [`MemoryManager`] (its handle, in NT terms).
///
/// An id belongs to the manager that handed it out, as an NT handle belongs
/// to its process: it carries that manager's process-unique tag next to the
/// section's number, and every other manager refuses it
/// ([`MemoryError::ForeignSection`], `STATUS_INVALID_HANDLE` from the
/// [`nt`](crate::nt) face; [`MemoryManager::section_info`] answers `None`),
/// even when it holds a section with the same number. Only the number is
/// part of the manager's state (snapshots, serialization and snapshot files
/// store numbers, never tags): a manager that restores or deserializes
/// another manager's state gets its sections, and hands out its own ids for
/// them through [`MemoryManager::sections`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionId {
    /// The tag of the manager that handed the id out.
    pub(crate) manager: u64,
    /// The section's number in that manager's state.
    pub(crate) number: u64,
}

impl SectionId {
    /// The section's number in its manager's state (stable for the life of
    /// the section; numbers are not reused by the manager that made them).
    /// Two managers may each have a section with the same number: the id,
    /// not the number, names a section. Time: O(1).
    pub fn get(self) -> u64 {
        self.number
    }
}

/// What [`MemoryManager::section_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Size in bytes (whole pages).
    pub size: u64,
    /// The most access a view may have.
    pub max_protection: Protection,
    /// The handle is open (closed sections live on while views exist).
    pub open: bool,
    /// Number of mapped views.
    pub views: u64,
}

/// The section page state: committed, accessible (view pages carry the
/// view's protection; this one only marks commitment).
const SECTION_PAGE: u8 = Protection::READ_WRITE.bits();

/// True when `requested` (guard bit aside) asks for no more than `maximum`.
/// Write-copy needs read access; it never needs write access.
pub(crate) fn within(requested: Protection, maximum: Protection) -> bool {
    let mut needed = requested - Protection::GUARD;
    if needed.contains(Protection::WRITE_COPY) {
        needed = (needed - Protection::WRITE_COPY) | Protection::READ;
    }
    maximum.contains(needed)
}

impl MemoryManager {
    /// Creates a pagefile-backed section of `size` bytes (rounded up to
    /// pages) whose views may have at most `max_protection`. `commit`: every
    /// page is committed (zeros), as `SEC_COMMIT`; otherwise reserved, as
    /// `SEC_RESERVE` (commit through a view). A layout change.
    /// Time: O(log n + levels).
    pub fn create_section(
        &mut self,
        size: u64,
        max_protection: Protection,
        commit: bool,
    ) -> Result<SectionId, MemoryError> {
        if !max_protection.is_valid() || max_protection.contains(Protection::GUARD) {
            return Err(MemoryError::InvalidProtection(max_protection));
        }
        if size == 0 {
            return Err(MemoryError::ZeroSize { address: 0 });
        }
        let pages = page_up(size).ok_or(MemoryError::RangeOverflow { address: 0, size })? / PAGE_SIZE;
        let (id, section) =
            self.add_section(pages, max_protection).ok_or(MemoryError::NoFreeSpace { size, start: 0 })?;
        if commit {
            self.pages.update(section.key, section.key + pages, RangeOp::Commit(SECTION_PAGE));
        }
        self.bump_layout();
        Ok(self.section_id(id))
    }

    /// Maps a view of `section` at `address` (64 KiB aligned; 0 picks the
    /// first free slot from the default allocation address) showing
    /// `[offset, offset + size)` of it (`offset` 64 KiB aligned; `size` 0 means
    /// to the end). `protection` is the view's protection and its maximum; it
    /// may not exceed the section's. Pages committed in the section are
    /// committed in the view. Returns the view's base. A layout change.
    /// Time: O(log n + view pages / 64).
    pub fn map_view_of_section(
        &mut self,
        section: SectionId,
        address: u64,
        offset: u64,
        size: u64,
        protection: Protection,
    ) -> Result<u64, MemoryError> {
        let s = *self.open_section(section)?;
        if !protection.is_valid() {
            return Err(MemoryError::InvalidProtection(protection));
        }
        if !within(protection, s.max_protection) {
            return Err(MemoryError::ProtectionExceedsMaximum {
                requested: protection,
                maximum: s.max_protection,
            });
        }
        if !offset.is_multiple_of(ALLOCATION_GRANULARITY) {
            return Err(MemoryError::Misaligned { address: offset, alignment: ALLOCATION_GRANULARITY });
        }
        let section_size = s.pages * PAGE_SIZE;
        let size = if size == 0 { section_size.saturating_sub(offset) } else { size };
        let outside = MemoryError::ViewOutsideSection { offset, size, section_size };
        let view_end = offset.checked_add(size).ok_or(outside.clone())?;
        if size == 0 || page_up(view_end).is_none_or(|e| e > section_size) {
            return Err(outside);
        }
        let length = page_up(size).ok_or(outside)?;
        let base = if address == 0 {
            self.find_free_allocation_base(length, 0)
                .ok_or(MemoryError::NoFreeSpace { size: length, start: 0 })?
        } else {
            if !address.is_multiple_of(ALLOCATION_GRANULARITY) {
                return Err(MemoryError::Misaligned { address, alignment: ALLOCATION_GRANULARITY });
            }
            address
        };
        if base < crate::MIN_ALLOCATION_ADDRESS {
            return Err(MemoryError::OutsideUserSpace { address: base, size: length });
        }
        let end = checked_end(base, length)?;
        if let Some(existing) = self.regions.overlapping(base, end) {
            return Err(MemoryError::ConflictingAddresses {
                address: base,
                size: length,
                existing: existing.base,
            });
        }
        let key = s.key + offset / PAGE_SIZE;
        // The view's pages are new: those whose section page is committed
        // are committed by the mapping.
        let pages = length / PAGE_SIZE;
        self.charge(pages, |mm| mm.committed_in(key, key + pages))?;
        self.regions.insert(Allocation {
            base,
            length,
            initial: protection,
            kind: RegionKind::PagefileView,
            attributes: 0,
            backing: Backing::View(ViewOf { section: section.number, key }),
        });
        let (lo, hi) = (vpn(base), vpn(end));
        self.pages.update(lo, hi, RangeOp::View { meta: meta::VIEW, key_offset: key - lo });
        self.commit_view_pages(lo, hi, key, RangeOp::Commit(protection.bits()));
        self.bump_layout();
        Ok(base)
    }

    /// Applies `op` (a commit) to the view pages `[lo, hi)` (page numbers)
    /// whose section pages (from `key`) are committed.
    fn commit_view_pages(&mut self, lo: u64, hi: u64, key: u64, op: RangeOp) {
        let mut k = key;
        let key_end = key + (hi - lo);
        while k < key_end {
            let run_end = self.pages.table().run_end(k, key_end);
            if self.pages.table().get(k).meta & meta::COMMITTED != 0 {
                self.apply_pages(lo + (k - key), lo + (run_end - key), op);
            }
            k = run_end;
        }
    }

    /// Commits `[lo, hi)` (byte addresses, page aligned) of `view`: the
    /// section's pages become committed for every view; this view's pages take
    /// `protection`, the other views' newly committed pages their own.
    pub(crate) fn commit_view(
        &mut self,
        view: &Allocation,
        v: ViewOf,
        lo: u64,
        hi: u64,
        protection: Protection,
    ) -> Result<(), MemoryError> {
        if !within(protection, view.initial) {
            return Err(MemoryError::ProtectionExceedsMaximum {
                requested: protection,
                maximum: view.initial,
            });
        }
        let key_lo = v.key + (lo - view.base) / PAGE_SIZE;
        let key_hi = key_lo + (hi - lo) / PAGE_SIZE;
        // Every view showing a page of `[key_lo, key_hi)`, with the range of
        // its own pages that show them.
        let views: Vec<(Allocation, u64, u64)> = self
            .regions
            .views_of(v.section)
            .filter_map(|other| {
                let o = other.backing.view()?;
                let (o_lo, o_hi) = (o.key, o.key + other.length / PAGE_SIZE);
                let (from, to) = (key_lo.max(o_lo), key_hi.min(o_hi));
                let page = |k: u64| vpn(other.base) + (k - o_lo);
                (from < to).then(|| (other.clone(), page(from), page(to)))
            })
            .collect();
        // The commit charge: the pages of those ranges not committed yet.
        let at_most = views.iter().map(|(_, a, b)| b - a).sum();
        self.charge(at_most, |mm| views.iter().map(|(_, a, b)| b - a - mm.committed_in(*a, *b)).sum())?;
        self.pages.update(key_lo, key_hi, RangeOp::CommitReserved(SECTION_PAGE));
        for (other, from, to) in views {
            let op = if other.base == view.base {
                RangeOp::Commit(protection.bits())
            } else {
                RangeOp::CommitReserved(other.initial.bits())
            };
            self.apply_pages(from, to, op);
        }
        Ok(())
    }

    /// Unmaps the view containing `address` (any address inside it). If its
    /// section's handle is closed and this was its last view, the section's
    /// pages are freed. A layout change. Time: O(log n + view pages / 64).
    pub fn unmap_view_of_section(&mut self, address: u64) -> Result<(), MemoryError> {
        let view = self
            .regions
            .containing(address)
            .and_then(|a| Some((a.clone(), a.backing.view()?)))
            .ok_or(MemoryError::NotAView { address })?;
        let (view, v) = view;
        self.regions.remove(view.base);
        self.apply_pages(vpn(view.base), vpn(view.end()), RangeOp::Clear);
        self.free_section_if_unused(v.section);
        self.bump_layout();
        Ok(())
    }

    /// Closes the section's handle. Its views stay mapped and keep it alive;
    /// with no views its pages are freed. A layout change. Time: O(n).
    pub fn close_section(&mut self, section: SectionId) -> Result<(), MemoryError> {
        let s = *self.open_section(section)?;
        self.regions.set_section(section.number, Some(Section { open: false, ..s }));
        self.free_section_if_unused(section.number);
        self.bump_layout();
        Ok(())
    }

    /// Size, maximum protection, handle state and view count of a section
    /// (open, or closed with views). `None` for an unknown section and for an
    /// id another manager handed out. Time: O(n).
    pub fn section_info(&self, section: SectionId) -> Option<SectionInfo> {
        if section.manager != self.tag {
            return None;
        }
        let s = self.regions.section(section.number)?;
        Some(self.info_of(section.number, s))
    }

    /// Every section of the current state (open, or closed with views), by
    /// number, with this manager's id for it: how a manager that restored or
    /// deserialized another manager's state names the sections it got.
    /// Time: O(sections · allocations) (each section's views are counted).
    pub fn sections(&self) -> impl Iterator<Item = (SectionId, SectionInfo)> + '_ {
        self.regions.sections().map(|(number, s)| (self.section_id(number), self.info_of(number, s)))
    }

    fn info_of(&self, number: u64, s: &Section) -> SectionInfo {
        SectionInfo {
            size: s.pages * PAGE_SIZE,
            max_protection: s.max_protection,
            open: s.open,
            views: self.regions.views_of(number).count() as u64,
        }
    }

    /// This manager's id for section `number`.
    fn section_id(&self, number: u64) -> SectionId {
        SectionId { manager: self.tag, number }
    }

    /// The open section `section` names: `ForeignSection` for another
    /// manager's id, `UnknownSection` when it is not open here.
    fn open_section(&self, section: SectionId) -> Result<&Section, MemoryError> {
        if section.manager != self.tag {
            return Err(MemoryError::ForeignSection { id: section.number });
        }
        self.regions
            .section(section.number)
            .filter(|s| s.open)
            .ok_or(MemoryError::UnknownSection { id: section.number })
    }

    fn free_section_if_unused(&mut self, id: u64) {
        if let Some(s) = self.regions.section(id).copied()
            && !s.open
            && self.regions.views_of(id).next().is_none()
        {
            self.pages.update(s.key, s.key + s.pages, RangeOp::Clear);
            self.regions.set_section(id, None);
        }
    }
}
