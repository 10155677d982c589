//! The `Store` trait: the one door between the node core and local storage.

use bytes::Bytes;

use crate::{
    BlockHash, Digest, DigestEntry, DigestKind, DirEntry, DirRecord, EntryKey, FileRecord, Prefix, StoreError,
};

/// A record write, merged into whatever the store already holds for that key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordUpdate {
    /// Merge into the file record at this path.
    File(String, FileRecord),
    /// Merge each entry into the directory at this path, entry by entry: other entries of the
    /// directory are neither read nor rewritten, so a write costs the same in a directory of
    /// ten entries as in one of a million.
    Dir(String, DirRecord),
}

/// How much the store holds and how much room is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes used by blocks and records.
    pub used_bytes: u64,
    /// Bytes still available for data (free disk space above the reserve, or what is left of
    /// the configured capacity, whichever is smaller).
    pub available_bytes: u64,
    /// The stable capacity the node offers (the configured capacity, or the disk's size less
    /// the reserve): what the ring weighs it by. Free space never changes the ring.
    pub capacity_bytes: u64,
}

/// Local storage of one node. Synchronous: callers off the async runtime (fjall blocks).
///
/// Durability is explicit. Writes (`put_block`, `merge_records`) are visible at once; they are
/// durable after a later [`sync`](Store::sync) returns. Durability is ordered: when a write is
/// durable, so is every write that returned before it started. A node therefore writes blocks,
/// then the record that names them, then syncs, then acknowledges; after a crash a record is
/// never present without its blocks.
pub trait Store: Send + Sync + 'static {
    /// Stores a block under `hash`. Returns [`StoreError::HashMismatch`] and stores nothing if
    /// the bytes are not that block; [`StoreError::Full`] and stores nothing if there is no
    /// room. Storing a block that is already present is a no-op.
    fn put_block(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError>;

    /// Stores bytes made on this node under the name the store computes for them, and returns
    /// it: one hash instead of the caller's plus `put_block`'s check. Blocks from elsewhere go
    /// through [`put_block`](Store::put_block), which verifies the name they came with.
    fn store_block(&self, bytes: &[u8]) -> Result<BlockHash, StoreError>;

    /// Reads a block, verified against its name: corrupt bytes give
    /// [`StoreError::Corrupt`], never data.
    fn get_block(&self, hash: &BlockHash) -> Result<Option<Bytes>, StoreError>;

    /// Whether a block is present (not verified).
    fn has_block(&self, hash: &BlockHash) -> Result<bool, StoreError>;

    /// Removes a block; absent blocks are fine.
    fn delete_block(&self, hash: &BlockHash) -> Result<(), StoreError>;

    /// Reads a file record, tombstones included.
    fn get_file(&self, path: &str) -> Result<Option<FileRecord>, StoreError>;

    /// Reads every entry of a directory, tombstones included; `None` if it has none. For
    /// listings: its cost grows with the directory.
    fn get_dir(&self, path: &str) -> Result<Option<DirRecord>, StoreError>;

    /// Reads one entry of a directory, whatever the directory's size.
    fn get_dir_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError>;

    /// Merges all updates atomically (all or none become visible, and durable, together).
    fn merge_records(&self, updates: &[RecordUpdate]) -> Result<(), StoreError>;

    /// Makes every write that returned before this call durable. Concurrent callers share
    /// one fsync (group commit). After a failed fsync the store is poisoned.
    fn sync(&self) -> Result<(), StoreError>;

    /// Fails with [`StoreError::Full`] unless `bytes` more can be written.
    fn ensure_room(&self, bytes: u64) -> Result<(), StoreError>;

    /// Space used and left.
    fn usage(&self) -> Result<Usage, StoreError>;

    /// Up to `limit` file records after path `after` (exclusive), in path order: for
    /// hand-off and repair, which walk everything a node holds in bounded batches.
    fn scan_files(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, FileRecord)>, StoreError>;

    /// Up to `limit` directory entries after `(dir, name)` (exclusive), in that order.
    fn scan_dir_entries(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String, DirEntry)>, StoreError>;

    /// Up to `limit` names of stored blocks after `after` (exclusive), in order.
    fn scan_blocks(&self, after: Option<&BlockHash>, limit: usize) -> Result<Vec<BlockHash>, StoreError>;

    /// The digest of every entry of `kind` under `prefix` (docs/ARCHITECTURE.md §7): equal
    /// in two stores exactly when they hold the same entries there, values included (up to
    /// hash collisions). Kept current by every write.
    fn digest(&self, kind: DigestKind, prefix: Prefix) -> Result<Digest, StoreError>;

    /// The digests of `prefix`'s `2^fanout_bits` children, `fanout_bits` (at most 16) deeper,
    /// in order. One range scan at most; none at or above depth [`CACHE_BITS`](crate::CACHE_BITS).
    fn digest_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Result<Vec<Digest>, StoreError>;

    /// Up to `limit` entries of `kind` under `prefix` with their hashes, in position order,
    /// after `after` (exclusive): what two stores exchange where their digests differ.
    fn digest_entries(
        &self,
        kind: DigestKind,
        prefix: Prefix,
        after: Option<&EntryKey>,
        limit: usize,
    ) -> Result<Vec<DigestEntry>, StoreError>;

    /// The XOR of the digests of `prefixes` (which must not overlap): the digest of their
    /// union, without one allocation per prefix.
    fn digest_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> Result<Digest, StoreError>;

    /// Removes every entry of `kind` under `prefix` (records outright, not as tombstones;
    /// blocks and their bytes) if their digest's [`short`](Digest::short) form is still
    /// `expected`, i.e. nothing changed there since the caller saw other nodes hold the same.
    /// Returns whether it removed them. For copies this node no longer owns; durable after the
    /// next [`sync`](Store::sync) like any write.
    fn drop_prefix(&self, kind: DigestKind, prefix: Prefix, expected: u64) -> Result<bool, StoreError>;

    /// How many entries of `kind` the digests cover.
    fn digest_len(&self, kind: DigestKind) -> Result<u64, StoreError>;
}
