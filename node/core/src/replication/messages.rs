//! What a coordinator asks of a replica and what it answers (docs/ARCHITECTURE.md §6, §8). Records and
//! blocks are separate subsystems with separate message enums; [`Request`] and [`Reply`] wrap
//! them for the one RPC connection between two nodes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_storage::{
    BlockHash, DigestKind, DirEntry, DirRecord, EntryKey, FileRecord, NodeId, Prefix, RecordUpdate, StoreError, Version,
};

use super::digests::PartitionSet;

/// A record as replicas store it. Every key of a directory (its listing and each entry) is
/// placed by the directory's path, so one owner set answers for a whole directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    /// The file record at a path.
    File(String),
    /// One child entry of a directory.
    Entry {
        /// The directory.
        dir: String,
        /// The child's name.
        name: String,
    },
    /// Every entry of a directory.
    Dir(String),
}

impl RecordKey {
    /// The bytes the ring places this key by.
    pub fn placement(&self) -> &[u8] {
        match self {
            RecordKey::File(path) => path.as_bytes(),
            RecordKey::Entry { dir, .. } | RecordKey::Dir(dir) => dir.as_bytes(),
        }
    }
}

/// What one replica holds for a [`RecordKey`]; `None` when it holds nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordValue {
    /// A file record.
    File(Option<FileRecord>),
    /// One directory entry.
    Entry(Option<DirEntry>),
    /// A directory's entries.
    Dir(Option<DirRecord>),
}

impl RecordValue {
    /// The merge of two answers for the same key (each record type's own merge; "nothing"
    /// is the identity). Answers of different kinds cannot come from a correct replica: the
    /// first one is kept.
    pub fn merge(self, other: RecordValue) -> RecordValue {
        fn either<T>(a: Option<T>, b: Option<T>, merge: impl FnOnce(T, T) -> T) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(merge(a, b)),
                (a, b) => a.or(b),
            }
        }
        match (self, other) {
            (RecordValue::File(a), RecordValue::File(b)) => RecordValue::File(either(a, b, FileRecord::merge)),
            (RecordValue::Entry(a), RecordValue::Entry(b)) => RecordValue::Entry(either(a, b, std::cmp::max)),
            (RecordValue::Dir(a), RecordValue::Dir(b)) => RecordValue::Dir(either(a, b, DirRecord::merge)),
            (first, _) => first,
        }
    }

    /// Every version in the answer, so a write that follows it can be ordered after it.
    pub fn versions(&self) -> Vec<Version> {
        match self {
            RecordValue::File(record) => record.iter().map(|record| record.version).collect(),
            RecordValue::Entry(entry) => entry.iter().map(|entry| entry.version).collect(),
            RecordValue::Dir(dir) => dir.iter().flat_map(|dir| dir.children.values().map(|e| e.version)).collect(),
        }
    }

    /// The write that brings a replica holding `self` up to `merged` for `key`, if it lacks
    /// anything written at or before `settled_hlc` (read repair). Newer writes are left
    /// alone: they are most likely still on their way to that replica (a write is answered
    /// after W of N owners, the others follow), and repairing them would double the writes of
    /// a busy cluster for nothing.
    pub fn repair_to(&self, key: &RecordKey, merged: &RecordValue, settled_hlc: u64) -> Option<RecordUpdate> {
        if self.clone().merge(merged.clone()) == *self {
            return None;
        }
        match (key, merged) {
            (RecordKey::File(path), RecordValue::File(Some(record))) if record.version.hlc <= settled_hlc => {
                Some(RecordUpdate::File(path.clone(), record.clone()))
            }
            (RecordKey::Entry { dir, name }, RecordValue::Entry(Some(entry))) if entry.version.hlc <= settled_hlc => {
                Some(RecordUpdate::Dir(dir.clone(), DirRecord { children: [(name.clone(), *entry)].into() }))
            }
            (RecordKey::Dir(dir), RecordValue::Dir(Some(record))) => {
                // Only the entries this replica is missing or holds older.
                let have = match self {
                    RecordValue::Dir(Some(have)) => have.children.clone(),
                    _ => Default::default(),
                };
                let children = record
                    .children
                    .iter()
                    .filter(|(name, entry)| have.get(*name).is_none_or(|mine| mine < *entry))
                    .filter(|(_, entry)| entry.version.hlc <= settled_hlc)
                    .map(|(name, entry)| (name.clone(), *entry))
                    .collect::<std::collections::BTreeMap<_, _>>();
                (!children.is_empty()).then(|| RecordUpdate::Dir(dir.clone(), DirRecord { children }))
            }
            _ => None,
        }
    }
}

/// Record replication messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordRpc {
    /// What do you hold for this key?
    Read(RecordKey),
    /// Merge these updates atomically and make them durable before answering.
    Merge(Vec<RecordUpdate>),
}

/// Block messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockRpc {
    /// Store this block durably; the replica verifies the bytes against the name.
    Put {
        /// The block's name.
        hash: BlockHash,
        /// Its bytes.
        bytes: Bytes,
    },
    /// Send me this block if you hold a verified copy.
    Get(BlockHash),
}

/// Anti-entropy messages (docs/ARCHITECTURE.md §7): digests of what a replica holds, and
/// the records where two replicas differ. A replica answers each from its store alone, so an
/// exchange keeps no state on the side that answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRpc {
    /// The root digest of each kind over `partitions` (answered by [`Reply::Roots`]).
    Roots {
        /// The partitions compared.
        partitions: PartitionSet,
        /// Make every write durable before answering: a hand-over drops its copy on the
        /// strength of these roots, so they must not count writes a crash could still undo.
        durable: bool,
    },
    /// The digests of each prefix's children, [`FANOUT_BITS`](super::digests::FANOUT_BITS)
    /// deeper; above partition depth only `partitions` count (answered by
    /// [`Reply::Digests`]).
    Children {
        /// The tree.
        kind: DigestKind,
        /// The partitions compared; needed only for prefixes above partition depth (a prefix
        /// at or below it lies inside one partition), so left out below, saving 512 bytes a
        /// round trip.
        partitions: Option<PartitionSet>,
        /// The tree nodes to open.
        prefixes: Vec<Prefix>,
    },
    /// The entries under each prefix, at most `limit` each (answered by [`Reply::Entries`]).
    Entries {
        /// The tree.
        kind: DigestKind,
        /// The leaves to list.
        prefixes: Vec<Prefix>,
        /// Entries per prefix at most; a prefix with more is listed as far as that.
        limit: u32,
    },
    /// The records held for these keys (answered by [`Reply::Records`]).
    Fetch(Vec<EntryKey>),
    /// One digest per partition of `partitions`, over every kind (answered by
    /// [`Reply::PartitionDigests`]): the evidence that ends a partition's transition.
    Partitions {
        /// The partitions asked about.
        partitions: PartitionSet,
        /// Make every write durable before answering (a transition ends on these digests).
        durable: bool,
    },
    /// The owner sets the answering node's placement honours for each partition of
    /// `partitions` (answered by [`Reply::OwnerSets`] by the node itself, not its store): a
    /// look for settled partitions learns where other views send reads and writes.
    OwnerSets {
        /// The partitions asked about.
        partitions: PartitionSet,
        /// Also say which anti-entropy exchanges of them the node completed, and when.
        exchanges: bool,
    },
}

/// A request from a coordinator to a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// About records.
    Record(RecordRpc),
    /// About blocks.
    Block(BlockRpc),
    /// Anti-entropy.
    Sync(SyncRpc),
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The answer to [`RecordRpc::Read`].
    Value(RecordValue),
    /// The write is durable here.
    Durable,
    /// The answer to [`BlockRpc::Get`]: the verified bytes, or `None` if this replica has no
    /// good copy.
    Block(Option<Bytes>),
    /// The answer to [`SyncRpc::Roots`]: the short digest of each kind, in
    /// [`DigestKind::ALL`] order.
    Roots(Vec<u64>),
    /// The answer to [`SyncRpc::Children`]: per prefix, its children's short digests.
    Digests(Vec<Vec<u64>>),
    /// The answer to [`SyncRpc::Entries`]: per prefix, its entries with their short hashes.
    Entries(Vec<Vec<(EntryKey, u64)>>),
    /// The answer to [`SyncRpc::Fetch`]: what is held for those keys (absent ones left out).
    Records(Vec<RecordUpdate>),
    /// The replica could not do it; nothing changed there.
    Refused(Refusal),
    /// The answer to [`SyncRpc::Partitions`]: per partition asked, in order, one short digest
    /// over every kind.
    PartitionDigests(Vec<u64>),
    /// The answer to [`SyncRpc::OwnerSets`].
    OwnerSets {
        /// Whether the answering node coordinates reads and writes now (a node that does
        /// not, cut off from the majority or still learning, writes nowhere).
        coordinating: bool,
        /// Per partition asked, in order, what its placement says of it.
        owners: Vec<PartitionOwners>,
    },
}

/// What one node's placement honours for one partition, and what it knows of its transition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOwners {
    /// The owner sets honoured (the current one first).
    pub sets: Vec<Vec<NodeId>>,
    /// If asked: each peer this node completed anti-entropy exchanges of the partition with.
    pub exchanges: Vec<Exchanged>,
}

/// The anti-entropy exchanges one node ran of one partition with one peer, dated by how long
/// before the answer (µs) they started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchanged {
    /// The peer.
    pub peer: NodeId,
    /// The last complete one: the node then came to hold everything the peer held when it
    /// started (an exchange copies blocks only into the node that runs it).
    pub pulled_age_us: u64,
    /// The last complete one that also found the peer lacking nothing the node held, if
    /// any: both then held what either held.
    pub mutual_age_us: Option<u64>,
}

/// Why a replica refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Its disk is full.
    #[error("a replica's disk is full")]
    Full,
    /// Its store failed an fsync and refuses writes until restarted.
    #[error("a replica's store is poisoned")]
    Poisoned,
    /// The block's bytes did not match its name.
    #[error("block bytes do not match their name")]
    HashMismatch,
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
    /// It lost its store and has not yet refilled this key's partition from the other
    /// owners: its answer could miss acknowledged writes.
    #[error("a replica is refilling its lost store")]
    Refilling,
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Full { .. } => Refusal::Full,
            StoreError::Poisoned => Refusal::Poisoned,
            StoreError::HashMismatch(_) => Refusal::HashMismatch,
            other => Refusal::Other(other.to_string()),
        }
    }
}

/// Why a request got no answer from a replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No answer in time: the request may or may not have taken effect.
    #[error("timed out")]
    Timeout,
    /// The request certainly did not reach the replica (no address, connection refused).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection broke after the request may have been sent.
    #[error("connection lost: {0}")]
    Lost(String),
}

impl RpcError {
    /// Whether the request may have taken effect although no answer came.
    pub fn maybe_applied(&self) -> bool {
        !matches!(self, RpcError::Unreachable(_))
    }
}
