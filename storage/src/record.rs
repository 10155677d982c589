//! File and directory records (docs/ARCHITECTURE.md §3) and their merge rules.
//!
//! Every record is a state-based CRDT. `merge` is commutative, associative and idempotent
//! (property-tested below), so any two replicas that have seen the same writes, in any order
//! and any number of times, hold the same record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BlockHash;

/// A state-based CRDT: `merge` is commutative, associative and idempotent, so replicas that
/// merged the same records in any order, any number of times, agree.
pub trait Merge: Sized {
    /// The least upper bound of `self` and `other`.
    fn merge(self, other: Self) -> Self;
}

impl Merge for FileRecord {
    fn merge(self, other: Self) -> Self {
        FileRecord::merge(self, other)
    }
}

impl Merge for DirEntry {
    /// The greater entry: newest version first, then a total order on the rest.
    fn merge(self, other: Self) -> Self {
        std::cmp::max(self, other)
    }
}

impl Merge for DirRecord {
    fn merge(self, other: Self) -> Self {
        DirRecord::merge(self, other)
    }
}

/// A node's permanent identity: a random 128-bit id made on first start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The version of a write: a hybrid logical clock reading plus the writing node's id.
///
/// `hlc` counts microseconds since the Unix epoch, but a node never issues a reading at or
/// below one it has already seen (`max(now, last_seen + 1)`), so a write that starts after
/// another was acknowledged gets a larger version even when clocks disagree. The node id breaks
/// ties between concurrent writes, identically on every replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Hybrid logical clock reading, in microseconds since the Unix epoch.
    pub hlc: u64,
    /// The node that made the write.
    pub node: NodeId,
}

impl Version {
    /// The wall-clock time the version stands for, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        self.hlc / 1000
    }
}

/// What a live file holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileMeta {
    /// Length of the content in bytes.
    pub size: u64,
    /// BLAKE3 of the whole content.
    pub content_hash: BlockHash,
    /// The size every block but the last has; content is cut at multiples of it.
    pub block_size: u32,
    /// The content's blocks, in order.
    pub blocks: Vec<BlockHash>,
}

/// `path -> {version, size, content hash, block list, tombstone}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileRecord {
    /// The write that made this record. Compared first, so the newest write wins a merge.
    pub version: Version,
    /// The content, or `None` for a tombstone (the file was deleted at `version`).
    pub meta: Option<FileMeta>,
}

impl FileRecord {
    /// Whether this record marks a deletion.
    pub fn is_tombstone(&self) -> bool {
        self.meta.is_none()
    }

    /// Keeps the newer of two records. Commutative, associative and idempotent: records are
    /// totally ordered (version first, the content only if two records claim one version,
    /// which a correct node never makes), and `max` of a total order has all three properties.
    pub fn merge(self, other: FileRecord) -> FileRecord {
        std::cmp::max(self, other)
    }
}

/// What a directory child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A file; its record is under the child's full path.
    File,
    /// A directory; its record is under the child's full path.
    Dir,
}

/// One child of a directory, as of `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DirEntry {
    /// The write that made this entry. Compared first, so the newest write wins.
    pub version: Version,
    /// File or directory.
    pub kind: EntryKind,
    /// Whether the child was removed at `version`.
    pub tombstone: bool,
    /// A file's size in bytes (0 for directories), so a listing reads one record.
    pub size: u64,
}

/// `dir path -> {child name -> entry}`: a directory's children, merged child by child.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirRecord {
    /// Children by name, tombstones included (they win over older live entries).
    pub children: BTreeMap<String, DirEntry>,
}

impl DirRecord {
    /// Merges child by child, keeping the greater entry for each name. Commutative,
    /// associative and idempotent because per-key `max` over a total order is.
    pub fn merge(mut self, other: DirRecord) -> DirRecord {
        for (name, theirs) in other.children {
            self.children.entry(name).and_modify(|ours| *ours = std::cmp::max(*ours, theirs)).or_insert(theirs);
        }
        self
    }

    /// The children that are not deleted.
    pub fn live_children(&self) -> impl Iterator<Item = (&String, &DirEntry)> {
        self.children.iter().filter(|(_, entry)| !entry.tombstone)
    }

    /// Whether any child is not deleted.
    pub fn has_live_children(&self) -> bool {
        self.live_children().next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn version() -> impl Strategy<Value = Version> {
        // Few distinct values, so that ties (same version, different content) get exercised.
        (0u64..4, 0u128..3).prop_map(|(hlc, node)| Version { hlc, node: NodeId(node) })
    }

    fn file_record() -> impl Strategy<Value = FileRecord> {
        let meta = (0u64..3, any::<u8>()).prop_map(|(size, byte)| FileMeta {
            size,
            content_hash: BlockHash([byte; 32]),
            block_size: 1 << 20,
            blocks: vec![BlockHash([byte; 32])],
        });
        (version(), proptest::option::of(meta)).prop_map(|(version, meta)| FileRecord { version, meta })
    }

    fn dir_record() -> impl Strategy<Value = DirRecord> {
        let entry =
            (version(), any::<bool>(), any::<bool>(), 0u64..2).prop_map(|(version, is_dir, tombstone, size)| {
                DirEntry { version, kind: if is_dir { EntryKind::Dir } else { EntryKind::File }, tombstone, size }
            });
        proptest::collection::btree_map("[ab]", entry, 0..3).prop_map(|children| DirRecord { children })
    }

    proptest! {
        #[test]
        fn file_merge_is_commutative(a in file_record(), b in file_record()) {
            prop_assert_eq!(a.clone().merge(b.clone()), b.merge(a));
        }

        #[test]
        fn file_merge_is_associative(a in file_record(), b in file_record(), c in file_record()) {
            prop_assert_eq!(a.clone().merge(b.clone()).merge(c.clone()), a.merge(b.merge(c)));
        }

        #[test]
        fn file_merge_is_idempotent(a in file_record(), b in file_record()) {
            prop_assert_eq!(a.clone().merge(a.clone()), a.clone());
            let once = a.clone().merge(b.clone());
            prop_assert_eq!(once.clone().merge(b), once);
        }

        #[test]
        fn dir_merge_is_commutative(a in dir_record(), b in dir_record()) {
            prop_assert_eq!(a.clone().merge(b.clone()), b.merge(a));
        }

        #[test]
        fn dir_merge_is_associative(a in dir_record(), b in dir_record(), c in dir_record()) {
            prop_assert_eq!(a.clone().merge(b.clone()).merge(c.clone()), a.merge(b.merge(c)));
        }

        #[test]
        fn dir_merge_is_idempotent(a in dir_record(), b in dir_record()) {
            prop_assert_eq!(a.clone().merge(a.clone()), a.clone());
            let once = a.clone().merge(b.clone());
            prop_assert_eq!(once.clone().merge(b), once);
        }
    }

    #[test]
    fn the_newer_version_wins_a_file_merge_whatever_it_holds() {
        let old = FileRecord {
            version: Version { hlc: 1, node: NodeId(9) },
            meta: Some(FileMeta { size: 1, content_hash: BlockHash([1; 32]), block_size: 1, blocks: vec![] }),
        };
        let tombstone = FileRecord { version: Version { hlc: 2, node: NodeId(0) }, meta: None };
        assert_eq!(old.clone().merge(tombstone.clone()), tombstone);
        assert_eq!(tombstone.clone().merge(old), tombstone);
    }
}
