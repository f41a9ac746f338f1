//! [`Timeline`]: the snapshots of a rewindable session, as a tree.
//!
//! ```text
//!   #1 ── #2 ── #3 ── #4            take() appends to the head
//!          │
//!          └── #5 ── #6 (head)      restore(#2), then take(): a branch
//! ```
//!
//! Every entry holds an immutable [`Snapshot`]; entries share their unchanged
//! pages, so a long history costs what differs between its versions.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::manager::MemoryManager;
use crate::snapshot::Snapshot;

/// Identifies a snapshot in a [`Timeline`]. Ids grow and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(pub u64);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a timeline operation failed; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimelineError {
    /// No snapshot with this id (never taken, or removed).
    #[error("no snapshot {0} in the timeline")]
    UnknownSnapshot(SnapshotId),
    /// Another snapshot already has this name.
    #[error("a snapshot named {0:?} already exists")]
    DuplicateName(String),
    /// A name that starts with `#`: `#N` always means the id N (as
    /// [`SnapshotId`] displays it), so no name may look like one.
    #[error("snapshot name {0:?} starts with '#', which is reserved for ids (#N)")]
    ReservedName(String),
}

/// True for a name [`Timeline`] refuses: one that starts with `#`.
pub(crate) fn reserved_name(name: &str) -> bool {
    name.starts_with('#')
}

/// One snapshot of a timeline.
#[derive(Clone, Debug)]
pub struct TimelineEntry {
    /// Its id.
    pub id: SnapshotId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// The snapshot it was taken after (the head when it was taken), if any.
    pub parent: Option<SnapshotId>,
    /// The version itself.
    pub snapshot: Snapshot,
}

/// Memory held by one version of a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionMemory {
    /// The version.
    pub id: SnapshotId,
    /// Bytes of pages no other version (nor the live manager) holds: what
    /// removing this snapshot frees.
    pub private_bytes: u64,
    /// Bytes of pages shared with other versions.
    pub shared_bytes: u64,
}

/// The snapshots of a session, with ids, optional names and parent links.
///
/// [`take`](Timeline::take) snapshots a manager as a child of the head;
/// [`restore`](Timeline::restore) returns the manager to any snapshot and
/// makes it the head, so the next `take` starts a branch.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    entries: BTreeMap<SnapshotId, TimelineEntry>,
    names: HashMap<String, SnapshotId>,
    head: Option<SnapshotId>,
    next: u64,
}

impl Timeline {
    /// An empty timeline. Time: O(1).
    pub fn new() -> Self {
        Timeline::default()
    }

    /// Snapshots `mm` (see [`MemoryManager::snapshot`]) as a child of the head
    /// and makes it the head. Time: O(pages written since the manager's last
    /// snapshot or restore + log n).
    ///
    /// A `name` must be unique in the timeline ([`TimelineError::DuplicateName`])
    /// and must not start with `#` ([`TimelineError::ReservedName`]): `#N`
    /// always names the id N, so a name can never shadow an id. Any other
    /// string is a valid name, digits included. A refused name takes no
    /// snapshot.
    ///
    /// ```
    /// # use vmsnap::{MemoryManager, Timeline, TimelineError};
    /// let (mut mm, mut t) = (MemoryManager::new(), Timeline::new());
    /// assert_eq!(t.take(&mut mm, Some("#1")), Err(TimelineError::ReservedName("#1".into())));
    /// assert!(t.is_empty());
    /// let id = t.take(&mut mm, Some("step-1"))?;
    /// assert_eq!(id.to_string(), "#1");
    /// # Ok::<(), TimelineError>(())
    /// ```
    pub fn take(&mut self, mm: &mut MemoryManager, name: Option<&str>) -> Result<SnapshotId, TimelineError> {
        self.check_name(name)?;
        let parent = self.head;
        Ok(self.add(mm.snapshot(), parent, name))
    }

    /// Adds an existing snapshot with the given parent (for example one loaded
    /// from a file) and makes it the head. `name` follows the rules of
    /// [`take`](Self::take). Time: O(log n).
    pub fn insert(
        &mut self,
        snapshot: Snapshot,
        parent: Option<SnapshotId>,
        name: Option<&str>,
    ) -> Result<SnapshotId, TimelineError> {
        if let Some(p) = parent {
            self.entry(p)?;
        }
        self.check_name(name)?;
        Ok(self.add(snapshot, parent, name))
    }

    fn check_name(&self, name: Option<&str>) -> Result<(), TimelineError> {
        match name {
            Some(n) if reserved_name(n) => Err(TimelineError::ReservedName(n.to_owned())),
            Some(n) if self.names.contains_key(n) => Err(TimelineError::DuplicateName(n.to_owned())),
            _ => Ok(()),
        }
    }

    fn add(&mut self, snapshot: Snapshot, parent: Option<SnapshotId>, name: Option<&str>) -> SnapshotId {
        self.next += 1;
        let id = SnapshotId(self.next);
        if let Some(n) = name {
            self.names.insert(n.to_owned(), id);
        }
        self.entries.insert(id, TimelineEntry { id, name: name.map(str::to_owned), parent, snapshot });
        self.head = Some(id);
        id
    }

    /// Returns `mm` to snapshot `id` (any snapshot, on any branch) and makes
    /// it the head. Time: as [`MemoryManager::restore`] + O(log n).
    pub fn restore(&mut self, mm: &mut MemoryManager, id: SnapshotId) -> Result<(), TimelineError> {
        mm.restore(&self.entry(id)?.snapshot);
        self.head = Some(id);
        Ok(())
    }

    /// The entry `id`. Time: O(log n).
    pub fn entry(&self, id: SnapshotId) -> Result<&TimelineEntry, TimelineError> {
        self.entries.get(&id).ok_or(TimelineError::UnknownSnapshot(id))
    }

    /// The snapshot `id`, if present. Time: O(log n).
    pub fn get(&self, id: SnapshotId) -> Option<&Snapshot> {
        self.entries.get(&id).map(|e| &e.snapshot)
    }

    /// The snapshot named `name`. Time: O(1).
    pub fn find(&self, name: &str) -> Option<SnapshotId> {
        self.names.get(name).copied()
    }

    /// The snapshot the manager was last snapshotted or restored to.
    pub fn head(&self) -> Option<SnapshotId> {
        self.head
    }

    /// Every entry, by id (the order they were taken). Time: O(1) per item.
    pub fn iter(&self) -> impl Iterator<Item = &TimelineEntry> + '_ {
        self.entries.values()
    }

    /// Number of snapshots.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the timeline holds no snapshot.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The ancestors of `id`: its parent, the parent's parent, ... up to a
    /// root. Empty for an unknown id. Time: O(log n) per item.
    pub fn ancestors(&self, id: SnapshotId) -> impl Iterator<Item = SnapshotId> + '_ {
        let mut next = self.entries.get(&id).and_then(|e| e.parent);
        std::iter::from_fn(move || {
            let current = next?;
            next = self.entries.get(&current).and_then(|e| e.parent);
            Some(current)
        })
    }

    /// The snapshots whose parent is `id`, ascending. Time: O(n).
    pub fn children(&self, id: SnapshotId) -> Vec<SnapshotId> {
        self.entries.values().filter(|e| e.parent == Some(id)).map(|e| e.id).collect()
    }

    /// Removes snapshot `id` and returns it. Its children take its parent as
    /// theirs; if it was the head, its parent becomes the head. Dropping the
    /// returned snapshot frees the pages no other version holds.
    /// Time: O(n) (children are relinked).
    pub fn remove(&mut self, id: SnapshotId) -> Result<Snapshot, TimelineError> {
        let entry = self.entries.remove(&id).ok_or(TimelineError::UnknownSnapshot(id))?;
        if let Some(n) = &entry.name {
            self.names.remove(n);
        }
        for e in self.entries.values_mut() {
            if e.parent == Some(id) {
                e.parent = entry.parent;
            }
        }
        if self.head == Some(id) {
            self.head = entry.parent;
        }
        Ok(entry.snapshot)
    }

    /// Bytes private to each version and shared with others, by id.
    /// Time: O(page-table nodes private to each version).
    pub fn memory(&self) -> Vec<VersionMemory> {
        self.entries
            .values()
            .map(|e| {
                let stats = e.snapshot.compute_memory_stats();
                VersionMemory {
                    id: e.id,
                    private_bytes: stats.private_memory,
                    shared_bytes: stats.shared_memory,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PAGE_SIZE, Protection, RegionKind};

    fn manager() -> MemoryManager {
        let mut mm = MemoryManager::new();
        mm.allocate_memory_at(0x10000, 0x10000, Protection::READ_WRITE, false, RegionKind::Private).unwrap();
        mm
    }

    fn byte(mm: &MemoryManager) -> u8 {
        let mut b = [0u8];
        mm.read_memory(0x10000, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn branches_and_ancestors() {
        let mut mm = manager();
        let mut t = Timeline::new();
        let mut ids = Vec::new();
        for i in 1..=4u8 {
            mm.write_memory(0x10000, &[i]).unwrap();
            ids.push(t.take(&mut mm, None).unwrap());
        }
        t.restore(&mut mm, ids[1]).unwrap();
        assert_eq!(byte(&mm), 2);
        mm.write_memory(0x10000, &[50]).unwrap();
        let branch = t.take(&mut mm, Some("branch")).unwrap();
        assert_eq!(t.entry(branch).unwrap().parent, Some(ids[1]));
        assert_eq!(t.ancestors(branch).collect::<Vec<_>>(), vec![ids[1], ids[0]]);
        assert_eq!(t.ancestors(ids[3]).collect::<Vec<_>>(), vec![ids[2], ids[1], ids[0]]);
        assert_eq!(t.children(ids[1]), vec![ids[2], branch]);
        assert_eq!(t.find("branch"), Some(branch));
        assert_eq!(t.take(&mut mm, Some("branch")), Err(TimelineError::DuplicateName("branch".into())));
        // Restore to the tip of the other branch.
        t.restore(&mut mm, ids[3]).unwrap();
        assert_eq!(byte(&mm), 4);
        assert_eq!(t.head(), Some(ids[3]));
    }

    #[test]
    fn remove_relinks_and_frees_private_pages() {
        let mut mm = manager();
        let mut t = Timeline::new();
        let a = t.take(&mut mm, Some("a")).unwrap();
        for p in 0..8 {
            mm.write_memory(0x10000 + p * PAGE_SIZE, &[p as u8 + 1; 16]).unwrap();
        }
        let b = t.take(&mut mm, None).unwrap();
        mm.write_memory(0x10000, &[99]).unwrap();
        let c = t.take(&mut mm, None).unwrap();
        t.restore(&mut mm, a).unwrap();

        let memory = t.memory();
        let of = |id| memory.iter().find(|m| m.id == id).copied().unwrap();
        assert_eq!(of(b).private_bytes, PAGE_SIZE, "b's page 0 was rewritten in c");
        assert_eq!(of(b).shared_bytes, 7 * PAGE_SIZE);
        assert_eq!(of(c).private_bytes, PAGE_SIZE);

        let removed = t.remove(b).unwrap();
        assert_eq!(t.entry(c).unwrap().parent, Some(a));
        assert!(t.get(b).is_none());
        assert_eq!(t.remove(b).unwrap_err(), TimelineError::UnknownSnapshot(b));
        drop(removed);
        let of = |id| t.memory().iter().find(|m| m.id == id).copied().unwrap();
        assert_eq!(of(c).private_bytes, 8 * PAGE_SIZE, "c now holds the pages alone");
        assert_eq!(mm.compute_memory_stats().live_versions, 2);
    }
}
