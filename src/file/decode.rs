//! The decoder: a checked file to its snapshots, with their layouts, page
//! maps and pages ([`build_snapshots`]), MMIO regions bound by a
//! [`Binding`].

use super::*;

#[derive(Clone)]
pub(super) struct Decoded {
    pub(super) id: u64,
    pub(super) name: Option<String>,
    pub(super) parent: Option<u64>,
    pub(super) snapshot: Snapshot,
}

/// Finds the parent of an incremental file (its loaded snapshot), checking
/// its identity.
pub(super) type Resolver<'r> = dyn FnMut(&ParentRecord) -> Result<Snapshot, FileError> + 'r;

pub(super) fn decode(
    bytes: &[u8],
    resolve: &mut Resolver<'_>,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let (area, index_bytes, header) = split(bytes)?;
    let parsed = parse_index(index_bytes, &header)?;
    // The parent (incremental files only), found and checked by `resolve`.
    let parent_snapshot = match &parsed.parent {
        Some(p) => Some(resolve(p)?),
        None => None,
    };
    let parent_version = parent_snapshot.as_ref().map(Snapshot::version);
    let store = file_store(parent_version);
    let stored = decode_frames(&parsed, area, parent_version, &store, loader)?;
    build_snapshots(&parsed, &stored, parent_version, &store, None, &mut loader.binding)
}

/// The store a file's pages go into: its parent's (an incremental file
/// shares the pages it inherits), or a new one.
pub(super) fn file_store(parent: Option<&Version>) -> Arc<Store> {
    parent.and_then(|v| v.pages.store_ref().cloned()).unwrap_or_else(Store::new)
}

/// The snapshots of a file whose page records are `stored` (loaded or lazy,
/// in `store`), checking §6.8–§6.9.
pub(super) fn build_snapshots(
    parsed: &Parsed,
    stored: &[PageRef],
    parent_version: Option<&Version>,
    store: &Arc<Store>,
    keep: Option<&Arc<dyn LazySource>>,
    binding: &mut Binding<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let Parsed { pages, snapshots, .. } = parsed;
    let lineage = Lineage::default();
    let mut referenced = vec![false; pages.len()];
    // The first page number referencing each record (for canonical kinds).
    let mut first_use: Vec<Option<u64>> = vec![None; pages.len()];
    let mut ids: HashSet<u64> = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut built = Vec::with_capacity(snapshots.len());
    // Delta page maps (1.2): each parent's table and layout-only table are
    // kept while a later record names it.
    let deltas = parsed.minor >= FORMAT_MINOR_FINGERPRINTS;
    let mut pending: HashMap<u64, usize> = HashMap::new();
    if deltas {
        for p in snapshots.iter().filter_map(|r| r.2) {
            *pending.entry(p).or_default() += 1;
        }
    }
    let mut tables: HashMap<u64, (PageTable, PageTable)> = HashMap::new();
    for SnapshotRecord(id, name, parent, layout_version, state, runs) in snapshots {
        if let Some(p) = parent
            && !ids.contains(p)
        {
            return Err(corrupt("snapshot parent is not an earlier snapshot"));
        }
        if !ids.insert(*id) {
            return Err(corrupt("two snapshots have the same id"));
        }
        if let Some(n) = name
            && !names.insert(n.as_str())
        {
            return Err(corrupt("two snapshots have the same name"));
        }
        if name.as_deref().is_some_and(crate::timeline::reserved_name) {
            return Err(corrupt("a snapshot name starts with '#' (reserved for ids)"));
        }
        let layout = crate::state::decode_layout(state, store.clone())?;
        if layout.layout_version != *layout_version {
            return Err(corrupt("snapshot layout version differs from its state"));
        }
        let delta_parent = parent.filter(|_| deltas).map(|p| tables.get(&p).cloned());
        let mut table;
        if let Some(from) = delta_parent {
            // A delta page map (1.2, §5.1): the parent's table, brought to
            // this record's layout where the two layouts differ, with the
            // delta applied — in the cost of the differences, not of the
            // pages (the tables keep their lineage, so diffs between the
            // file's snapshots stay cheap too).
            let (parent_table, parent_layout) =
                from.ok_or(corrupt("snapshot parent is not an earlier snapshot"))?;
            table = parent_table;
            // Inherited pages the new layout cannot hold: the delta must
            // drop each of them.
            let mut must_drop: HashSet<u64> = HashSet::new();
            parent_layout.diff(&layout.table, |vpn, count, _, now| {
                if count == 1 {
                    let page = table.get(vpn).page.map(|p| p.to_ref());
                    let keep = if meta::holds_bytes(now.meta) { page } else { None };
                    if keep.is_none() && table.get(vpn).page.is_some() {
                        must_drop.insert(vpn);
                    }
                    table.set_entry(vpn, now.meta, keep, now.view_offset);
                    return;
                }
                // A uniform run (say, all of user space reprotected): the
                // new state laid over the range at once, then the parent's
                // pages there kept or dropped one by one.
                let mut had = Vec::new();
                table.for_each_stored_in(vpn, vpn + count, |page, _, bytes| had.push((page, bytes.to_ref())));
                table.set_range(vpn, vpn + count, now.meta, now.view_offset);
                for (page, bytes) in had {
                    if meta::holds_bytes(now.meta) {
                        table.set_entry(page, now.meta, Some(bytes), 0);
                    } else {
                        must_drop.insert(page);
                    }
                }
            });
            for (page, index) in entries_of(runs)? {
                let here = table.get(page);
                if index == 0 {
                    if !must_drop.remove(&page) {
                        if here.page.is_none() {
                            return Err(corrupt(
                                "page map removes a page its parent snapshot does not store",
                            ));
                        }
                        table.set_page(page, None);
                    }
                    continue;
                }
                if !meta::holds_bytes(here.meta) {
                    return Err(corrupt("page map names a page that is not committed"));
                }
                let frozen =
                    stored.get(index as usize - 1).ok_or(corrupt("page map names a missing page record"))?;
                if here.page.is_some_and(|p| p.ptr() == frozen.page().ptr()) {
                    return Err(corrupt("page map repeats its parent snapshot's entry"));
                }
                referenced[index as usize - 1] = true;
                table.set_page(page, Some(frozen.clone()));
            }
            if !must_drop.is_empty() {
                return Err(corrupt("page map names a page that is not committed"));
            }
        } else {
            table = layout.table.clone();
            for (page, index) in entries_of(runs)? {
                if !meta::holds_bytes(table.get(page).meta) {
                    return Err(corrupt("page map names a page that is not committed"));
                }
                let under = parent_version.and_then(|pv| stored_page(pv, page));
                if index == 0 {
                    // Inherited: the parent's page at the same page number.
                    let under = under.ok_or(corrupt("page map inherits a page the parent does not store"))?;
                    table.set_page(page, Some(under.to_ref()));
                    continue;
                }
                let frozen =
                    stored.get(index as usize - 1).ok_or(corrupt("page map names a missing page record"))?;
                // Fingerprints first: a lazily loaded page is read only when
                // they match (never, in a canonical file).
                if under.is_some_and(|u| u.same_bytes(frozen.page())) {
                    return Err(corrupt("a page equal to the parent's is stored instead of inherited"));
                }
                let i = index as usize - 1;
                if first_use[i].is_none() {
                    first_use[i] = Some(page);
                    // Canonical kinds: xor exactly where the parent has a page.
                    let expected = under.map(|_| page);
                    if pages[i].4 != expected {
                        return Err(corrupt("page kind or xor base is not the canonical one"));
                    }
                }
                referenced[i] = true;
                table.set_page(page, Some(frozen.clone()));
            }
        }
        if pending.get(id).is_some_and(|&n| n > 0) {
            tables.insert(*id, (table.clone(), layout.table));
        }
        if let Some(p) = parent.filter(|_| deltas)
            && let Some(left) = pending.get_mut(&p)
        {
            *left -= 1;
            if *left == 0 {
                tables.remove(&p);
            }
        }
        if let Some(source) = keep {
            table.keep_source(source.clone());
        }
        let version = Version::new(
            layout.regions,
            table,
            layout.committed_pages,
            layout.default_allocation_address,
            layout.layout_version,
            &lineage,
        );
        built.push((*id, name.clone(), *parent, version));
    }
    if referenced.iter().any(|r| !r) {
        return Err(corrupt("a stored page is referenced by no snapshot"));
    }
    // The file is checked: its MMIO regions may be bound now.
    let mut out = Vec::with_capacity(built.len());
    for (id, name, parent, mut version) in built {
        binding.bind(&mut version.regions);
        out.push(Decoded { id, name, parent, snapshot: Snapshot::new(version) });
    }
    Ok(out)
}

/// What a loader does with the MMIO regions of the snapshots it builds,
/// which a file holds without handlers: nothing (they stay unbound), or
/// what a caller's binder says ([`load_with`]), asked once per distinct
/// region and shared by every snapshot of the file that has it.
#[derive(Default)]
pub(super) struct Binding<'b> {
    pub(super) binder: Option<&'b mut dyn FnMut(u64, u64) -> Option<MmioHandlers>>,
    pub(super) asked: HashMap<(u64, u64), Option<Arc<MmioHandlers>>>,
}

impl<'b> Binding<'b> {
    /// Leaves every region unbound.
    pub(super) fn none() -> Self {
        Binding { binder: None, asked: HashMap::new() }
    }

    /// Binds with `binder(base, length)`.
    pub(super) fn with(binder: &'b mut dyn FnMut(u64, u64) -> Option<MmioHandlers>) -> Self {
        Binding { binder: Some(binder), asked: HashMap::new() }
    }

    /// Binds the unbound MMIO regions of `regions`. Time: nothing without a
    /// binder; O(allocations) with one, plus a call per new region.
    pub(super) fn bind(&mut self, regions: &mut RegionMap) {
        let Binding { binder: Some(binder), asked } = self else { return };
        regions.bind_unbound(&mut |base, length| {
            asked.entry((base, length)).or_insert_with(|| binder(base, length).map(Arc::new)).clone()
        });
    }
}

/// The resolver of the in-memory forms: they have no parent to offer.
pub(super) fn no_parent(p: &ParentRecord) -> Result<Snapshot, FileError> {
    Err(FileError::ParentMissing { path: PathBuf::from(&p.1) })
}

pub(super) fn one_snapshot(mut all: Vec<Decoded>) -> Result<Snapshot, FileError> {
    if all.len() != 1 {
        return Err(FileError::SnapshotCount { found: all.len() });
    }
    Ok(all.pop().expect("one snapshot").snapshot)
}

pub(super) fn timeline_of(decoded: Vec<Decoded>) -> Result<Timeline, FileError> {
    let mut timeline = Timeline::new();
    let mut new_ids: HashMap<u64, SnapshotId> = HashMap::new();
    for d in decoded {
        let parent = d.parent.map(|p| new_ids[&p]);
        // Invariant: decode checked parents (earlier ids) and unique names.
        let id = timeline.insert(d.snapshot, parent, d.name.as_deref()).expect("checked by decode");
        new_ids.insert(d.id, id);
    }
    Ok(timeline)
}
