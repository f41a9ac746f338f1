//! Page maps (FORMAT.md §5.1): runs to entries, a delta applied to its
//! parent's map, and the one resolver every reader uses ([`MapResolver`]).

use super::*;

/// The `(page, entry)` pairs a record's runs list, checking their shape:
/// non-empty, ascending, not touching, inside the page-number space.
pub(super) fn entries_of(runs: &[RunRecord]) -> Result<Vec<(u64, u32)>, FileError> {
    let mut entries = Vec::with_capacity(runs.iter().map(|r| r.records().len()).sum());
    let mut previous_end: Option<u64> = None;
    for run in runs {
        let (first, list) = (run.first_page(), run.records());
        let end = first
            .checked_add(list.len() as u64)
            .filter(|&e| e <= VPN_LIMIT)
            .ok_or(corrupt("page map run out of range"))?;
        if list.is_empty() || previous_end.is_some_and(|p| first <= p) {
            return Err(corrupt("page map runs empty, overlapping, adjacent or out of order"));
        }
        previous_end = Some(end);
        entries.extend((first..end).zip(list.iter().copied()));
    }
    Ok(entries)
}

/// `delta` (sorted) applied to the page map `base` (sorted): an entry
/// replaces `base`'s at its page (it must differ), a 0 removes `base`'s
/// (there must be one), every other page of `base` stays (§5, 1.2).
pub(super) fn apply_delta(base: &[(u64, u32)], delta: &[(u64, u32)]) -> Result<Vec<(u64, u32)>, FileError> {
    let mut out = Vec::with_capacity(base.len() + delta.len());
    let mut b = base.iter().peekable();
    for &(page, entry) in delta {
        while let Some(&&kept) = b.peek().filter(|(p, _)| *p < page) {
            out.push(kept);
            b.next();
        }
        let under = b.next_if(|(p, _)| *p == page).map(|&(_, e)| e);
        match (under, entry) {
            (None, 0) => return Err(corrupt("page map removes a page its parent snapshot does not store")),
            (Some(u), e) if u == e => return Err(corrupt("page map repeats its parent snapshot's entry")),
            (_, 0) => {}
            (_, e) => out.push((page, e)),
        }
    }
    out.extend(b.copied());
    Ok(out)
}

/// Resolves the snapshot records' page maps in file order: from 1.2 on, a
/// record with a parent lists only what differs from its parent's map, so
/// a parent's whole map is kept while a later record names it.
pub(super) struct MapResolver {
    pub(super) deltas: bool,
    /// Later records naming each id as their parent.
    pub(super) pending: HashMap<u64, usize>,
    pub(super) kept: HashMap<u64, Vec<(u64, u32)>>,
}

impl MapResolver {
    pub(super) fn new(parsed: &Parsed) -> Self {
        let deltas = parsed.minor >= FORMAT_MINOR_FINGERPRINTS;
        let mut pending: HashMap<u64, usize> = HashMap::new();
        if deltas {
            for p in parsed.snapshots.iter().filter_map(SnapshotRecord::parent) {
                *pending.entry(p).or_default() += 1;
            }
        }
        MapResolver { deltas, pending, kept: HashMap::new() }
    }

    /// The whole page map of the next record (`id`, `parent`, `runs`).
    pub(super) fn resolve(
        &mut self,
        id: u64,
        parent: Option<u64>,
        runs: &[RunRecord],
    ) -> Result<Vec<(u64, u32)>, FileError> {
        let listed = entries_of(runs)?;
        let full = match parent.filter(|_| self.deltas) {
            Some(p) => {
                let base = self.kept.get(&p).ok_or(corrupt("snapshot parent is not an earlier snapshot"))?;
                let full = apply_delta(base, &listed)?;
                if let Some(left) = self.pending.get_mut(&p) {
                    *left -= 1;
                    if *left == 0 {
                        self.kept.remove(&p);
                    }
                }
                full
            }
            None => listed,
        };
        if self.pending.get(&id).is_some_and(|&n| n > 0) {
            self.kept.insert(id, full.clone());
        }
        Ok(full)
    }
}
