//! The durable backend: fjall for records and small blocks, content-addressed files for large
//! blocks.
//!
//! Why large blocks are files and not fjall values: fjall writes every value to its journal
//! first and again when the memtable flushes (into a blob file with key-value separation), so
//! each block byte would hit the disk at least twice and PUT throughput would be capped near
//! half the disk's bandwidth. A block file is written once, fsynced, renamed into place and
//! its directory fsynced, so it is durable when `put_block` returns and its bytes cross the
//! disk once. Small blocks (up to [`INLINE_BLOCK_BYTES_MAX`]) stay in fjall, where they share
//! the journal's group-committed fsync with the record that names them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::{self, DigestCache};
use crate::{
    BlockHash, Digest, DigestEntry, DigestKind, DirEntry, DirRecord, EntryKey, FileRecord, GroupCommit, Merge, Prefix,
    RecordUpdate, Store, StoreError, Usage,
};

/// Blocks up to this size live in fjall; larger ones are files.
pub const INLINE_BLOCK_BYTES_MAX: usize = 64 * 1024;

/// A stored record larger than this is treated as corrupt instead of being allocated. A file
/// record lists 32 bytes per block, so this allows files of 2 million blocks (2 TiB at 1 MiB).
const RECORD_BYTES_MAX: usize = 64 << 20;

type RecordConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<RECORD_BYTES_MAX>,
>;

fn record_config() -> RecordConfig {
    bincode::config::standard().with_limit::<RECORD_BYTES_MAX>()
}

/// Settings of a [`FjallStore`].
#[derive(Clone, Debug)]
pub struct FjallStoreConfig {
    /// The data directory; created if missing.
    pub path: PathBuf,
    /// Free disk space kept in reserve: a write that would leave less is refused with
    /// [`StoreError::Full`], so deletes (tombstones) and fjall's own compactions still have
    /// room. 64 MiB is a sensible minimum.
    pub disk_reserve_bytes: u64,
    /// Upper bound on the bytes this store may use, or `None` for the whole disk.
    pub capacity_bytes: Option<u64>,
    /// fjall's block cache in bytes.
    pub cache_bytes: u64,
}

impl FjallStoreConfig {
    /// Defaults for a data directory: 64 MiB reserve, no capacity cap, 64 MiB cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), disk_reserve_bytes: 64 << 20, capacity_bytes: None, cache_bytes: 64 << 20 }
    }
}

/// The durable [`Store`]. See the module doc for the layout.
pub struct FjallStore {
    config: FjallStoreConfig,
    db: Database,
    pub(crate) files: Keyspace,
    /// One key per directory entry, `dir \0 name` (NUL never occurs in a path), so writes
    /// touch only their entries and a listing is a prefix scan.
    pub(crate) dir_entries: Keyspace,
    pub(crate) small_blocks: Keyspace,
    /// The position index of every entry (`EntryKey::index_key` -> entry hash), written in
    /// the same batch as the entry (fjall_digests.rs).
    pub(crate) digest_index: Keyspace,
    /// Its cached digests, rebuilt when the store opens.
    pub(crate) digests: Mutex<DigestCache>,
    /// Serialises a block's index check, index write and cache update, so two writers of one
    /// block count it once.
    pub(crate) block_index_lock: Mutex<()>,
    block_dir: PathBuf,
    tmp_dir: PathBuf,
    commit: GroupCommit,
    /// Serialises read-merge-write of records, so two merges of one key never lose either.
    pub(crate) merge_lock: Mutex<()>,
    /// Serialises renaming block files into place and removing them, with their byte count.
    pub(crate) file_lock: Mutex<()>,
    /// Bytes in block files, counted at open and kept up to date.
    pub(crate) block_file_bytes: AtomicU64,
    /// Bytes of block writes in progress. Counted before the room check, so concurrent writers
    /// cannot all pass the check and overshoot the capacity together.
    reserved_bytes: AtomicU64,
    tmp_counter: AtomicU64,
}

impl FjallStore {
    /// Whether a store was made under `path` before (by [`open`](FjallStore::open)).
    pub fn exists(path: &std::path::Path) -> bool {
        path.join("db").exists()
    }

    /// Opens (or creates) the store. Leftover temporary block files from a crash are removed:
    /// no record can name them, because a block is renamed into place before any record that
    /// names it is written.
    pub fn open(config: FjallStoreConfig) -> Result<Self, StoreError> {
        fs::create_dir_all(&config.path)?;
        let db = Database::builder(config.path.join("db")).cache_size(config.cache_bytes).open()?;
        let files = db.keyspace("files", KeyspaceCreateOptions::default)?;
        let dir_entries = db.keyspace("dir_entries", KeyspaceCreateOptions::default)?;
        let small_blocks = db.keyspace("blocks", KeyspaceCreateOptions::default)?;
        let digest_index = db.keyspace("digest_index", KeyspaceCreateOptions::default)?;

        let block_dir = config.path.join("blocks");
        let tmp_dir = block_dir.join("tmp");
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir)?;
        }
        fs::create_dir_all(&tmp_dir)?;
        // All 256 shard directories exist from the start, so writing a block never creates a
        // directory whose own entry would need another fsync.
        let mut block_file_bytes = 0;
        for shard in 0..=255u8 {
            let shard_dir = block_dir.join(format!("{shard:02x}"));
            fs::create_dir_all(&shard_dir)?;
            for entry in fs::read_dir(&shard_dir)? {
                block_file_bytes += entry?.metadata()?.len();
            }
        }
        sync_dir(&block_dir)?;
        sync_dir(&config.path)?;

        let store = Self {
            config,
            db,
            files,
            dir_entries,
            small_blocks,
            digest_index,
            digests: Mutex::new(DigestCache::default()),
            block_index_lock: Mutex::new(()),
            block_dir,
            tmp_dir,
            commit: GroupCommit::new(),
            merge_lock: Mutex::new(()),
            file_lock: Mutex::new(()),
            block_file_bytes: AtomicU64::new(block_file_bytes),
            reserved_bytes: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
        };
        store.load_digests()?;
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    pub(crate) fn db_batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch()
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The configured capacity and disk reserve.
    pub(crate) fn capacity_config(&self) -> (Option<u64>, u64) {
        (self.config.capacity_bytes, self.config.disk_reserve_bytes)
    }

    pub(crate) fn block_path(&self, hash: &BlockHash) -> PathBuf {
        let hex = hash.to_hex();
        self.block_dir.join(&hex[..2]).join(hex)
    }

    /// Writes a block whose name is known to be right. A copy already stored is kept only if it
    /// still matches its name: a corrupt copy is replaced, so writing the same content again
    /// repairs it instead of acknowledging bytes that will not read back.
    fn write_block(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.refuse_if_poisoned()?;
        if bytes.len() > INLINE_BLOCK_BYTES_MAX {
            return self.put_block_file(hash, bytes);
        }
        if self.small_blocks.get(hash.0)?.is_some_and(|stored| hash.matches(&stored)) {
            return self.index_block(hash, None);
        }
        let _reservation = self.reserve(bytes.len() as u64)?;
        let mut batch = self.db.batch();
        batch.insert(&self.small_blocks, hash.0, bytes);
        self.index_block(hash, Some(batch))
    }

    fn put_block_file(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.block_path(hash);
        match fs::read(&path) {
            Ok(stored) if hash.matches(&stored) => return self.index_block(hash, None),
            Ok(_) => tracing::warn!(block = %hash, "replacing a corrupt copy of a block"),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        let len = bytes.len() as u64;
        let reservation = self.reserve(len)?;
        let tmp = self.tmp_dir.join(format!("{}.{}", hash.to_hex(), self.tmp_counter.fetch_add(1, Ordering::Relaxed)));
        let written = (|| -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            {
                // Rename and count together, so two writers of one block count it once and a
                // replaced copy's bytes are taken off.
                let _renaming = self.file_lock.lock().unwrap_or_else(|poison| poison.into_inner());
                let replaced = fs::metadata(&path).map_or(0, |meta| meta.len());
                fs::rename(&tmp, &path)?;
                self.block_file_bytes.fetch_add(len, Ordering::Relaxed);
                self.block_file_bytes.fetch_sub(replaced, Ordering::Relaxed);
                // Counted now: holding the claim any longer would count these bytes twice.
                drop(reservation);
            }
            sync_dir(path.parent().unwrap_or(&self.block_dir))
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::from_io(err));
        }
        // Indexed after the file is durable: a crash in between leaves a block the digests
        // miss (anti-entropy sends it again, and writing it indexes it), never the reverse.
        self.index_block(hash, None)
    }

    /// After a failed fsync, what is on disk is unknown: accept no more writes.
    pub(crate) fn refuse_if_poisoned(&self) -> Result<(), StoreError> {
        if self.commit.is_poisoned() { Err(StoreError::Poisoned) } else { Ok(()) }
    }

    /// Claims room for `bytes` until the returned guard is dropped, or fails with
    /// [`StoreError::Full`] claiming nothing.
    fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, StoreError> {
        self.reserved_bytes.fetch_add(bytes, Ordering::SeqCst);
        let reservation = Reservation { counter: &self.reserved_bytes, bytes };
        // Our own claim is part of the reserved total; the room check must not count it twice.
        let usage = self.usage()?;
        let others_and_us = self.reserved_bytes.load(Ordering::SeqCst);
        let available_bytes = usage.available_bytes.saturating_add(bytes).saturating_sub(others_and_us);
        if bytes > available_bytes {
            return Err(StoreError::Full { needed_bytes: bytes, available_bytes });
        }
        Ok(reservation)
    }

    /// Replaces a small block's stored bytes without checking them, as bit rot would. Only for
    /// tests of read verification; nothing in the node calls it.
    #[doc(hidden)]
    pub fn overwrite_small_block_for_tests(&self, hash: &BlockHash, bytes: &[u8]) {
        let _ = self.small_blocks.insert(hash.0, bytes);
    }

    /// Adds to `batch` the merge of `record` into what is stored at `key`. Two updates of one
    /// key in the same batch must see each other, not the stored value: `seen` holds what the
    /// batch already wrote.
    /// Its digest-index entry goes into the same batch; the cache change is returned, to be
    /// applied once the batch commits.
    #[allow(clippy::too_many_arguments)]
    fn merge_into<T: Merge + Clone + Serialize + DeserializeOwned>(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        keyspace: &Keyspace,
        what: &'static str,
        seen: &mut HashMap<Vec<u8>, T>,
        entry: EntryKey,
        key: Vec<u8>,
        record: &T,
    ) -> Result<CacheChange, StoreError> {
        let base = match seen.remove(&key) {
            Some(seen) => Some(seen),
            None => self.get_record(keyspace, what, &key)?,
        };
        let old = base.as_ref().map(|base| digest::record_hash(&entry, base)).transpose()?;
        let merged = match base {
            Some(base) => base.merge(record.clone()),
            None => record.clone(),
        };
        let new = digest::record_hash(&entry, &merged)?;
        batch.insert(keyspace, key.clone(), encode(what, &merged)?);
        batch.insert(&self.digest_index, entry.index_key(), new.0);
        seen.insert(key, merged);
        Ok(CacheChange { kind: entry.kind(), position: entry.position(), old, new: Some(new) })
    }

    fn get_record<T: DeserializeOwned>(
        &self,
        keyspace: &Keyspace,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        keyspace.get(key)?.map(|bytes| decode(what, &bytes)).transpose()
    }
}

/// A change to the digest cache, applied once the write that makes it has committed.
pub(crate) struct CacheChange {
    pub(crate) kind: DigestKind,
    pub(crate) position: u64,
    pub(crate) old: Option<Digest>,
    pub(crate) new: Option<Digest>,
}

/// Room claimed for a block write in progress; released on drop, when the write has either
/// failed or been counted in `block_file_bytes`.
struct Reservation<'a> {
    counter: &'a AtomicU64,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, record_config())
        .map_err(|err| StoreError::Decode { what, detail: err.to_string() })?;
    if used != bytes.len() {
        return Err(StoreError::Decode { what, detail: format!("{} trailing bytes", bytes.len() - used) });
    }
    Ok(value)
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, record_config())
        .map_err(|err| StoreError::Decode { what, detail: err.to_string() })
}

/// The key of entry `name` of directory `dir`; with an empty name, the prefix of all of them.
pub(crate) fn entry_key(dir: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(dir.len() + 1 + name.len());
    key.extend_from_slice(dir.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Store for FjallStore {
    fn scan_files(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, FileRecord)>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.as_bytes().to_vec()));
        let mut out = Vec::new();
        for guard in self.files.range::<Vec<u8>, _>((start, Bound::Unbounded)).take(limit) {
            let (key, value) = guard.into_inner()?;
            let path = String::from_utf8(key.to_vec())
                .map_err(|_| StoreError::Decode { what: "file", detail: "path is not UTF-8".into() })?;
            out.push((path, decode("file", &value)?));
        }
        Ok(out)
    }

    fn scan_dir_entries(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String, DirEntry)>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |(dir, name)| Bound::Excluded(entry_key(dir, name)));
        let mut out = Vec::new();
        for guard in self.dir_entries.range::<Vec<u8>, _>((start, Bound::Unbounded)).take(limit) {
            let (key, value) = guard.into_inner()?;
            let bad = || StoreError::Decode { what: "directory entry", detail: "malformed key".into() };
            let split = key.iter().position(|byte| *byte == 0).ok_or_else(bad)?;
            let dir = std::str::from_utf8(&key[..split]).map_err(|_| bad())?;
            let name = std::str::from_utf8(&key[split + 1..]).map_err(|_| bad())?;
            out.push((dir.to_string(), name.to_string(), decode("directory entry", &value)?));
        }
        Ok(out)
    }

    fn scan_blocks(&self, after: Option<&BlockHash>, limit: usize) -> Result<Vec<BlockHash>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.0.to_vec()));
        let mut out = Vec::new();
        for guard in self.small_blocks.range::<Vec<u8>, _>((start, Bound::Unbounded)).take(limit) {
            let key = guard.key()?;
            let hash: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Decode { what: "block", detail: "key is not 32 bytes".into() })?;
            out.push(BlockHash(hash));
        }
        // Large blocks are files under blocks/<first two hex digits>/<hex>: walk the fan-out
        // directories from `after`'s onwards, in order, until `limit` names are found.
        let after_hex = after.map(BlockHash::to_hex);
        let mut from_files = Vec::new();
        let mut fanout: Vec<String> = match std::fs::read_dir(&self.block_dir) {
            Ok(dirs) => dirs.filter_map(|d| d.ok()?.file_name().into_string().ok()).collect(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        fanout.sort();
        for dir in fanout {
            if after_hex.as_ref().is_some_and(|after| dir.as_str() < &after[..2]) {
                continue;
            }
            let mut names: Vec<String> = std::fs::read_dir(self.block_dir.join(&dir))?
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.len() == 64 && after_hex.as_ref().is_none_or(|after| name > after))
                .collect();
            names.sort();
            from_files.extend(names.into_iter().filter_map(|name| name.parse::<BlockHash>().ok()));
            if from_files.len() >= limit {
                break;
            }
        }
        out.extend(from_files);
        out.sort();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    fn put_block(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        if !hash.matches(bytes) {
            return Err(StoreError::HashMismatch(*hash));
        }
        self.write_block(hash, bytes)
    }

    fn store_block(&self, bytes: &[u8]) -> Result<BlockHash, StoreError> {
        let hash = BlockHash::of(bytes);
        self.write_block(&hash, bytes)?;
        Ok(hash)
    }

    fn get_block(&self, hash: &BlockHash) -> Result<Option<Bytes>, StoreError> {
        let bytes = match self.small_blocks.get(hash.0)? {
            Some(slice) => Bytes::copy_from_slice(&slice),
            None => match fs::read(self.block_path(hash)) {
                Ok(bytes) => Bytes::from(bytes),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err.into()),
            },
        };
        if !hash.matches(&bytes) {
            return Err(StoreError::Corrupt(*hash));
        }
        Ok(Some(bytes))
    }

    fn has_block(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(self.small_blocks.contains_key(hash.0)? || self.block_path(hash).exists())
    }

    fn delete_block(&self, hash: &BlockHash) -> Result<(), StoreError> {
        self.refuse_if_poisoned()?;
        self.unindex_block(hash)
    }

    fn get_file(&self, path: &str) -> Result<Option<FileRecord>, StoreError> {
        self.get_record(&self.files, "file", path.as_bytes())
    }

    fn get_dir(&self, path: &str) -> Result<Option<DirRecord>, StoreError> {
        let prefix = entry_key(path, "");
        let mut record = DirRecord::default();
        for guard in self.dir_entries.prefix(&prefix) {
            let (key, value) = guard.into_inner()?;
            let name = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| StoreError::Decode { what: "directory entry", detail: "name is not UTF-8".into() })?;
            record.children.insert(name.to_string(), decode("directory entry", &value)?);
        }
        Ok((!record.children.is_empty()).then_some(record))
    }

    fn get_dir_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError> {
        self.get_record(&self.dir_entries, "directory entry", &entry_key(dir, name))
    }

    fn merge_records(&self, updates: &[RecordUpdate]) -> Result<(), StoreError> {
        self.refuse_if_poisoned()?;
        let _guard = self.merge_lock.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut batch = self.db.batch();
        let mut files_seen = HashMap::new();
        let mut entries_seen = HashMap::new();
        let mut changes = Vec::new();
        for update in updates {
            match update {
                RecordUpdate::File(path, record) => {
                    let key = path.as_bytes().to_vec();
                    let entry = EntryKey::File(path.clone());
                    changes.push(self.merge_into(
                        &mut batch,
                        &self.files,
                        "file",
                        &mut files_seen,
                        entry,
                        key,
                        record,
                    )?);
                }
                RecordUpdate::Dir(path, record) => {
                    for (name, dir_entry) in &record.children {
                        let key = entry_key(path, name);
                        let entry = EntryKey::Entry { dir: path.clone(), name: name.clone() };
                        changes.push(self.merge_into(
                            &mut batch,
                            &self.dir_entries,
                            "directory entry",
                            &mut entries_seen,
                            entry,
                            key,
                            dir_entry,
                        )?);
                    }
                }
            }
        }
        batch.commit()?;
        // Still under the merge lock: the cache follows commits in their order.
        self.apply_cache_changes(changes);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Block files are already durable (fsynced in put_block); the journal holds the rest.
        self.commit.sync(|| Ok(self.db.persist(PersistMode::SyncAll)?))
    }

    fn ensure_room(&self, bytes: u64) -> Result<(), StoreError> {
        let usage = self.usage()?;
        let usage = Usage {
            available_bytes: usage.available_bytes.saturating_sub(self.reserved_bytes.load(Ordering::SeqCst)),
            ..usage
        };
        if bytes > usage.available_bytes {
            return Err(StoreError::Full { needed_bytes: bytes, available_bytes: usage.available_bytes });
        }
        Ok(())
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        // Block files plus the keyspaces' tables. fjall's journal is left out: it is
        // preallocated while open (64 MiB that vanish on reopen) and bounded by fjall itself.
        let tables = self.files.disk_space() + self.dir_entries.disk_space() + self.small_blocks.disk_space();
        let used_bytes = self.block_file_bytes.load(Ordering::Relaxed) + tables;
        let free = fs4::available_space(&self.config.path)?;
        let mut available_bytes = free.saturating_sub(self.config.disk_reserve_bytes);
        if let Some(capacity) = self.config.capacity_bytes {
            available_bytes = available_bytes.min(capacity.saturating_sub(used_bytes));
        }
        Ok(Usage { used_bytes, available_bytes, capacity_bytes: self.capacity_bytes()? })
    }

    fn digest(&self, kind: DigestKind, prefix: Prefix) -> Result<Digest, StoreError> {
        digest::digest(self, kind, prefix)
    }

    fn digest_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Result<Vec<Digest>, StoreError> {
        digest::digest_children(self, kind, prefix, fanout_bits)
    }

    fn digest_entries(
        &self,
        kind: DigestKind,
        prefix: Prefix,
        after: Option<&EntryKey>,
        limit: usize,
    ) -> Result<Vec<DigestEntry>, StoreError> {
        digest::digest_entries(self, kind, prefix, after, limit)
    }

    fn digest_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> Result<Digest, StoreError> {
        digest::digest_sum(self, kind, prefixes)
    }

    fn drop_prefix(&self, kind: DigestKind, prefix: Prefix, expected: u64) -> Result<bool, StoreError> {
        self.drop_entries_under(kind, prefix, expected)
    }

    fn digest_len(&self, kind: DigestKind) -> Result<u64, StoreError> {
        Ok(self.lock_digests().entries(kind))
    }
}
