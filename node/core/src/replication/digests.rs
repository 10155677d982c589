//! The replica side of anti-entropy (docs/ARCHITECTURE.md §7): answering [`SyncRpc`]s from the
//! store's digests. The initiator asks the same questions of its own store and of a peer and
//! compares the answers (`sync.rs`), so both sides compute every answer here, the same way.

use serde::{Deserialize, Serialize};
use shoal_membership::{PARTITION_BITS, PARTITIONS, Partition};
use shoal_storage::{Digest, DigestKind, DirRecord, EntryKey, Prefix, RecordUpdate, Store, StoreError};

use super::messages::{Refusal, Reply, SyncRpc};

/// How many bits a comparison descends per round trip: each differing node is opened into
/// 2^2 children. Small fan-outs cost more round trips but fewer digests per difference
/// (docs/ARCHITECTURE.md §7 has the arithmetic).
pub const FANOUT_BITS: u8 = 2;

/// Tree nodes at most per request, so a request and its answer stay far below a frame.
pub const PREFIXES_PER_REQUEST_MAX: usize = 1024;

/// Entries per listed prefix at most.
pub const ENTRIES_PER_PREFIX_MAX: u32 = 256;

/// Keys per fetch at most.
pub const FETCH_KEYS_MAX: usize = 512;

/// A set of partitions, as a bitmap.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionSet(Vec<u64>);

impl PartitionSet {
    const WORDS: usize = PARTITIONS / 64;

    /// No partition.
    pub fn empty() -> PartitionSet {
        PartitionSet(vec![0; Self::WORDS])
    }

    /// These partitions.
    pub fn of(partitions: impl IntoIterator<Item = Partition>) -> PartitionSet {
        let mut set = PartitionSet::empty();
        for partition in partitions {
            set.0[partition.index() / 64] |= 1 << (partition.index() % 64);
        }
        set
    }

    /// Whether `partition` is in it.
    pub fn contains(&self, partition: Partition) -> bool {
        self.0.get(partition.index() / 64).is_some_and(|word| word >> (partition.index() % 64) & 1 == 1)
    }

    /// How many partitions it holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its partitions, in order.
    pub fn iter(&self) -> impl Iterator<Item = Partition> + '_ {
        self.0.iter().enumerate().flat_map(|(word_index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    Partition((word_index * 64 + bit) as u16)
                })
            })
        })
    }

    /// Whether a peer's set is well formed (exactly the partitions there are).
    pub fn is_valid(&self) -> bool {
        self.0.len() == Self::WORDS
    }
}

/// Answers an anti-entropy request from `store`. A malformed request (from a confused or
/// hostile peer) is refused, never a panic.
pub fn serve_sync<S: Store + ?Sized>(store: &S, request: SyncRpc) -> Result<Reply, StoreError> {
    if let Some(why) = malformed(&request) {
        return Ok(Reply::Refused(Refusal::Other(why)));
    }
    Ok(match request {
        // Digests first, then the sync: every write the digests show returned before the
        // sync started, so all of it is durable when the answer goes out.
        SyncRpc::Roots { partitions, durable } => {
            let mut roots = Vec::with_capacity(DigestKind::ALL.len());
            for kind in DigestKind::ALL {
                let mut prefixes = partitions.iter().filter_map(|p| Prefix::new(PARTITION_BITS as u8, u64::from(p.0)));
                roots.push(store.digest_sum(kind, &mut prefixes)?.short());
            }
            if durable {
                store.sync()?;
            }
            Reply::Roots(roots)
        }
        SyncRpc::Children { kind, partitions, prefixes } => {
            let mut out = Vec::with_capacity(prefixes.len());
            let everything = PartitionSet::of(Partition::all());
            let partitions = partitions.as_ref().unwrap_or(&everything);
            for prefix in prefixes {
                let children = restricted_children(store, kind, partitions, prefix, FANOUT_BITS)?;
                out.push(children.iter().map(Digest::short).collect());
            }
            Reply::Digests(out)
        }
        SyncRpc::Entries { kind, prefixes, limit } => {
            let mut out = Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                let entries = store.digest_entries(kind, prefix, None, limit as usize)?;
                out.push(entries.into_iter().map(|entry| (entry.key, entry.hash.short())).collect());
            }
            Reply::Entries(out)
        }
        SyncRpc::Fetch(keys) => Reply::Records(fetch(store, keys)?),
        // The node answers these from its placement before any store job is queued.
        SyncRpc::OwnerSets { .. } => {
            Reply::Refused(Refusal::Other("owner sets come from the node, not its store".into()))
        }
        SyncRpc::Partitions { partitions, durable } => {
            let mut out = Vec::with_capacity(partitions.len());
            for partition in partitions.iter() {
                out.push(partition_digest(store, partition)?);
            }
            if durable {
                store.sync()?;
            }
            Reply::PartitionDigests(out)
        }
    })
}

/// One short digest of everything `store` holds in `partition`, every kind together.
fn partition_digest<S: Store + ?Sized>(store: &S, partition: Partition) -> Result<u64, StoreError> {
    let mut hasher = blake3::Hasher::new();
    for kind in DigestKind::ALL {
        if let Some(prefix) = Prefix::new(PARTITION_BITS as u8, u64::from(partition.0)) {
            hasher.update(&store.digest(kind, prefix)?.0);
        }
    }
    let mut short = [0; 8];
    short.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    Ok(u64::from_le_bytes(short))
}

/// Why a request cannot be answered, if it cannot.
fn malformed(request: &SyncRpc) -> Option<String> {
    match request {
        SyncRpc::Roots { partitions, .. }
        | SyncRpc::Partitions { partitions, .. }
        | SyncRpc::OwnerSets { partitions, .. }
        | SyncRpc::Children { partitions: Some(partitions), .. }
            if !partitions.is_valid() =>
        {
            Some("a partition set of the wrong size".into())
        }
        SyncRpc::Children { partitions: None, prefixes, .. }
            if prefixes.iter().any(|prefix| prefix.bits() < PARTITION_BITS as u8) =>
        {
            Some("prefixes above partition depth without the partitions they compare".into())
        }
        SyncRpc::Children { prefixes, .. } | SyncRpc::Entries { prefixes, .. }
            if prefixes.len() > PREFIXES_PER_REQUEST_MAX =>
        {
            Some(format!("{} prefixes in one request (at most {PREFIXES_PER_REQUEST_MAX})", prefixes.len()))
        }
        SyncRpc::Children { prefixes, .. } if prefixes.iter().any(|p| p.bits() + FANOUT_BITS > 64) => {
            Some("a prefix too deep to open".into())
        }
        SyncRpc::Entries { limit, .. } if *limit > ENTRIES_PER_PREFIX_MAX => {
            Some(format!("{limit} entries per prefix (at most {ENTRIES_PER_PREFIX_MAX})"))
        }
        SyncRpc::Fetch(keys) if keys.len() > FETCH_KEYS_MAX => {
            Some(format!("{} keys in one fetch (at most {FETCH_KEYS_MAX})", keys.len()))
        }
        _ => None,
    }
}

/// The digests of `prefix`'s children `fanout_bits` deeper, where above partition depth only
/// the partitions in `partitions` count, so two owners that share some partitions compare
/// just those. At or below partition depth a prefix lies inside one partition.
pub fn restricted_children<S: Store + ?Sized>(
    store: &S,
    kind: DigestKind,
    partitions: &PartitionSet,
    prefix: Prefix,
    fanout_bits: u8,
) -> Result<Vec<Digest>, StoreError> {
    let partition_bits = PARTITION_BITS as u8;
    if prefix.bits() >= partition_bits {
        return store.digest_children(kind, prefix, fanout_bits);
    }
    if prefix.bits() + fanout_bits > partition_bits {
        // Children inside partitions: those of partitions not compared count as empty.
        let mut children = store.digest_children(kind, prefix, fanout_bits)?;
        for (child, digest) in prefix.children(fanout_bits).into_iter().flatten().zip(children.iter_mut()) {
            if !partitions.contains(Partition::of_position(child.range().0)) {
                *digest = Digest::EMPTY;
            }
        }
        return Ok(children);
    }
    // Partition digests under `prefix` (cached in the store), folded into the children.
    let child_bits = prefix.bits() + fanout_bits;
    let per_partition = store.digest_children(kind, prefix, partition_bits - prefix.bits())?;
    let mut children = vec![Digest::EMPTY; 1 << fanout_bits];
    let first = prefix.value() << (partition_bits - prefix.bits());
    for (offset, digest) in per_partition.iter().enumerate() {
        let partition = Partition((first + offset as u64) as u16);
        if partitions.contains(partition) {
            children[offset >> (partition_bits - child_bits)].toggle(digest);
        }
    }
    Ok(children)
}

/// The records held for `keys`, as updates the other side can merge.
fn fetch<S: Store + ?Sized>(store: &S, keys: Vec<EntryKey>) -> Result<Vec<RecordUpdate>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        match key {
            EntryKey::File(path) => {
                if let Some(record) = store.get_file(&path)? {
                    out.push(RecordUpdate::File(path, record));
                }
            }
            EntryKey::Entry { dir, name } => {
                if let Some(entry) = store.get_dir_entry(&dir, &name)? {
                    out.push(RecordUpdate::Dir(dir, DirRecord { children: [(name, entry)].into() }));
                }
            }
            // Blocks travel as blocks (`BlockRpc`), not as records.
            EntryKey::Block(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use shoal_storage::{MemStore, NodeId, Version};

    use super::*;

    fn store_with(paths: &[&str]) -> MemStore {
        let store = MemStore::new(1 << 20);
        for path in paths {
            let record = shoal_storage::FileRecord { version: Version { hlc: 1, node: NodeId(1) }, meta: None };
            store.merge_records(&[RecordUpdate::File(path.to_string(), record)]).expect("merge");
        }
        store
    }

    #[test]
    fn children_above_partition_depth_count_only_the_partitions_asked_about() {
        let store = store_with(&["/a", "/b", "/c", "/d", "/e"]);
        let partition = |path: &str| super::super::partition_of(path.as_bytes());
        let only_a = PartitionSet::of([partition("/a")]);
        let roots = restricted_children(&store, DigestKind::Files, &only_a, Prefix::ROOT, 12).expect("children");
        let mut xor = Digest::EMPTY;
        roots.iter().for_each(|digest| xor.toggle(digest));
        let alone = store_with(&["/a"]);
        let all = PartitionSet::of(Partition::all());
        let expected = restricted_children(&alone, DigestKind::Files, &all, Prefix::ROOT, 2).expect("children");
        let mut expected_xor = Digest::EMPTY;
        expected.iter().for_each(|digest| expected_xor.toggle(digest));
        assert_eq!(xor, expected_xor, "only /a's partition counted");
        // With every partition, the restricted tree is the store's own.
        let full = restricted_children(&store, DigestKind::Files, &all, Prefix::ROOT, 2).expect("children");
        assert_eq!(full, store.digest_children(DigestKind::Files, Prefix::ROOT, 2).expect("children"));
    }

    #[test]
    fn malformed_requests_are_refused_not_served() {
        let store = store_with(&["/a"]);
        let refused = |request| matches!(serve_sync(&store, request), Ok(Reply::Refused(_)));
        assert!(refused(SyncRpc::Roots { partitions: PartitionSet(vec![0; 3]), durable: false }));
        let deep = Prefix::new(63, 0).expect("prefix");
        assert!(refused(SyncRpc::Children {
            kind: DigestKind::Files,
            partitions: Some(PartitionSet::empty()),
            prefixes: vec![deep]
        }));
        assert!(refused(SyncRpc::Children { kind: DigestKind::Files, partitions: None, prefixes: vec![Prefix::ROOT] }));
        assert!(refused(SyncRpc::Entries { kind: DigestKind::Files, prefixes: vec![Prefix::ROOT], limit: 100_000 }));
        assert!(refused(SyncRpc::Fetch(vec![EntryKey::File("/a".into()); FETCH_KEYS_MAX + 1])));
        assert!(matches!(
            serve_sync(&store, SyncRpc::Fetch(vec![EntryKey::File("/a".into())])),
            Ok(Reply::Records(records)) if records.len() == 1
        ));
    }
}
