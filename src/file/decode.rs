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

/// Decodes the file `bytes`, held in memory.
pub(super) fn decode(
    bytes: &[u8],
    resolve: &mut Resolver<'_>,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let (area, index_bytes, header) = split(bytes)?;
    decode_parts(Area::Bytes(area), &header, index_bytes, resolve, loader)
}

/// Decodes a file from its checked `header` and index, its frames read
/// from `area`.
pub(super) fn decode_parts(
    area: Area<'_>,
    header: &Header,
    index_bytes: &[u8],
    resolve: &mut Resolver<'_>,
    loader: &mut Loader<'_>,
) -> Result<Vec<Decoded>, FileError> {
    let parsed = parse_index(index_bytes, header)?;
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
    let mut builder = Builder::new(parsed, stored, parent_version);
    let lineage = Lineage::default();
    let mut built = Vec::with_capacity(parsed.snapshots.len());
    for record in &parsed.snapshots {
        let (id, parent, runs) = (record.id(), record.parent(), record.page_map());
        builder.check_names(id, record.name(), parent)?;
        let layout = crate::state::decode_layout(record.state(), store.clone())?;
        if layout.layout_version != record.layout_version() {
            return Err(corrupt("snapshot layout version differs from its state"));
        }
        let mut table = match parent.filter(|_| builder.deltas) {
            Some(p) => {
                let (table, parent_layout) = builder
                    .tables
                    .get(&p)
                    .cloned()
                    .ok_or(corrupt("snapshot parent is not an earlier snapshot"))?;
                builder.delta_table(table, &parent_layout, &layout.table, runs)?
            }
            None => builder.whole_table(layout.table.clone(), runs)?,
        };
        builder.keep_for_children(id, parent, &table, layout.table);
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
        built.push((id, record.name().map(str::to_owned), parent, version));
    }
    if builder.referenced.iter().any(|r| !r) {
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

/// What building a file's snapshots keeps between its records.
struct Builder<'p> {
    /// The file's page records and their decoded pages.
    records: &'p [PageRecord],
    stored: &'p [PageRef],
    /// The parent file's snapshot (incremental files).
    parent_version: Option<&'p Version>,
    /// Which page records some page map names.
    referenced: Vec<bool>,
    /// The first page number referencing each record (canonical kinds).
    first_use: Vec<Option<u64>>,
    ids: HashSet<u64>,
    names: HashSet<String>,
    /// Delta page maps (1.2): each parent's table and layout-only table are
    /// kept while a later record names it.
    deltas: bool,
    pending: HashMap<u64, usize>,
    tables: HashMap<u64, (PageTable, PageTable)>,
}

impl<'p> Builder<'p> {
    fn new(parsed: &'p Parsed, stored: &'p [PageRef], parent_version: Option<&'p Version>) -> Self {
        let deltas = parsed.minor >= FORMAT_MINOR_FINGERPRINTS;
        let mut pending: HashMap<u64, usize> = HashMap::new();
        if deltas {
            for p in parsed.snapshots.iter().filter_map(SnapshotRecord::parent) {
                *pending.entry(p).or_default() += 1;
            }
        }
        Builder {
            records: &parsed.pages,
            stored,
            parent_version,
            referenced: vec![false; parsed.pages.len()],
            first_use: vec![None; parsed.pages.len()],
            ids: HashSet::new(),
            names: HashSet::new(),
            deltas,
            pending,
            tables: HashMap::new(),
        }
    }

    /// A record's id, name and parent: unique, not reserved, earlier.
    fn check_names(&mut self, id: u64, name: Option<&str>, parent: Option<u64>) -> Result<(), FileError> {
        if parent.is_some_and(|p| !self.ids.contains(&p)) {
            return Err(corrupt("snapshot parent is not an earlier snapshot"));
        }
        if !self.ids.insert(id) {
            return Err(corrupt("two snapshots have the same id"));
        }
        if let Some(n) = name
            && !self.names.insert(n.to_owned())
        {
            return Err(corrupt("two snapshots have the same name"));
        }
        if name.is_some_and(crate::timeline::reserved_name) {
            return Err(corrupt("a snapshot name starts with '#' (reserved for ids)"));
        }
        Ok(())
    }

    /// The page record `index` names (1-based).
    fn record(&self, index: u32) -> Result<&'p PageRef, FileError> {
        self.stored.get(index as usize - 1).ok_or(corrupt("page map names a missing page record"))
    }

    /// A delta page map (1.2, §5.1): the parent's table, brought to this
    /// record's layout where the two layouts differ, with the delta applied
    /// — in the cost of the differences, not of the pages (the tables keep
    /// their lineage, so diffs between the file's snapshots stay cheap).
    fn delta_table(
        &mut self,
        mut table: PageTable,
        parent_layout: &PageTable,
        layout: &PageTable,
        runs: &[RunRecord],
    ) -> Result<PageTable, FileError> {
        let mut must_drop = relayout(&mut table, parent_layout, layout);
        for (page, index) in entries_of(runs)? {
            let here = table.get(page);
            if index == 0 {
                if !must_drop.remove(&page) {
                    if here.page.is_none() {
                        return Err(corrupt("page map removes a page its parent snapshot does not store"));
                    }
                    table.set_page(page, None);
                }
                continue;
            }
            if !meta::holds_bytes(here.meta) {
                return Err(corrupt("page map names a page that is not committed"));
            }
            let frozen = self.record(index)?;
            if here.page.is_some_and(|p| p.ptr() == frozen.page().ptr()) {
                return Err(corrupt("page map repeats its parent snapshot's entry"));
            }
            self.referenced[index as usize - 1] = true;
            table.set_page(page, Some(frozen.clone()));
        }
        if !must_drop.is_empty() {
            return Err(corrupt("page map names a page that is not committed"));
        }
        Ok(table)
    }

    /// A whole page map over a layout-only table; an incremental file's
    /// page 0 entries inherit the parent file's page at the same number.
    fn whole_table(&mut self, mut table: PageTable, runs: &[RunRecord]) -> Result<PageTable, FileError> {
        let entries = entries_of(runs)?;
        // Set in one walk once all are checked (ascending: `entries_of`).
        let mut pages = Vec::with_capacity(entries.len());
        for (page, index) in entries {
            if !meta::holds_bytes(table.get(page).meta) {
                return Err(corrupt("page map names a page that is not committed"));
            }
            let under = self.parent_version.and_then(|pv| stored_page(pv, page));
            if index == 0 {
                // Inherited: the parent's page at the same page number.
                let under = under.ok_or(corrupt("page map inherits a page the parent does not store"))?;
                pages.push((page, under.to_ref()));
                continue;
            }
            let frozen = self.record(index)?;
            // Fingerprints first: a lazily loaded page is read only when
            // they match (never, in a canonical file).
            if under.is_some_and(|u| u.same_bytes(frozen.page())) {
                return Err(corrupt("a page equal to the parent's is stored instead of inherited"));
            }
            let i = index as usize - 1;
            if self.first_use[i].is_none() {
                self.first_use[i] = Some(page);
                // Canonical kinds: xor exactly where the parent has a page.
                if self.records[i].base() != under.map(|_| page) {
                    return Err(corrupt("page kind or xor base is not the canonical one"));
                }
            }
            self.referenced[i] = true;
            pages.push((page, frozen.clone()));
        }
        table.set_pages(pages);
        Ok(table)
    }

    /// Keeps a record's tables while a later record names it as parent,
    /// and drops its parent's once the last child is built.
    fn keep_for_children(&mut self, id: u64, parent: Option<u64>, table: &PageTable, layout: PageTable) {
        if self.pending.get(&id).is_some_and(|&n| n > 0) {
            self.tables.insert(id, (table.clone(), layout));
        }
        if let Some(p) = parent.filter(|_| self.deltas)
            && let Some(left) = self.pending.get_mut(&p)
        {
            *left -= 1;
            if *left == 0 {
                self.tables.remove(&p);
            }
        }
    }
}

/// Brings `table` (a parent's pages) to the layout `layout` where it
/// differs from `parent_layout`, keeping the pages the new layout can
/// hold. Returns the inherited pages it cannot: the delta must drop each.
fn relayout(table: &mut PageTable, parent_layout: &PageTable, layout: &PageTable) -> HashSet<u64> {
    let mut must_drop: HashSet<u64> = HashSet::new();
    parent_layout.diff(layout, |vpn, count, _, now| {
        if count == 1 {
            let page = table.get(vpn).page.map(|p| p.to_ref());
            let keep = if meta::holds_bytes(now.meta) { page } else { None };
            if keep.is_none() && table.get(vpn).page.is_some() {
                must_drop.insert(vpn);
            }
            table.set_entry(vpn, now.meta, keep, now.view_offset);
            return;
        }
        // A uniform run (say, all of user space reprotected): the new state
        // laid over the range at once, then the parent's pages there kept
        // or dropped one by one.
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
    must_drop
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
    Err(FileError::ParentMissing { path: PathBuf::from(p.hint()) })
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
