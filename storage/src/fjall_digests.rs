//! The fjall backend's digests (digest.rs): its position index, kept in step with every write,
//! and the cache rebuilt from it when the store opens.

use std::sync::MutexGuard;

use fjall::PersistMode;

use crate::digest::{self, DigestCache, PositionIndex};
use std::sync::atomic::Ordering;

use crate::fjall_store::{CacheChange, FjallStore, entry_key};
use crate::{BlockHash, Digest, DigestKind, EntryKey, FileRecord, Prefix, Store, StoreError};

/// Entries re-indexed per batch when the index is rebuilt from the records.
const REBUILD_BATCH: usize = 4096;

/// Written once the index covers every entry (a fresh store, or a rebuild that finished): an
/// index without it (a rebuild cut off by a crash, or a store from before the index) is
/// rebuilt at open. Its first byte is no kind's, so no scan of a kind meets it.
const INDEX_COMPLETE: &[u8] = b"\xffindex complete";

impl FjallStore {
    pub(crate) fn lock_digests(&self) -> MutexGuard<'_, DigestCache> {
        // Every cache change completes before a panic could occur.
        self.digests.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn apply_cache_changes(&self, changes: Vec<CacheChange>) {
        let mut cache = self.lock_digests();
        for change in changes {
            cache.apply(change.kind, change.position, change.old.as_ref(), change.new.as_ref());
        }
    }

    /// Fills the cache from the position index, or rebuilds the index from the entries if
    /// this store predates it.
    pub(crate) fn load_digests(&self) -> Result<(), StoreError> {
        if !self.digest_index.contains_key(INDEX_COMPLETE)? {
            if self.holds_nothing()? {
                self.digest_index.clear()?;
                self.digest_index.insert(INDEX_COMPLETE, [])?;
                return self.db_persist();
            }
            return self.rebuild_digests();
        }
        let mut cache = DigestCache::default();
        for guard in self.digest_index.iter() {
            let (key, value) = guard.into_inner()?;
            if key.as_ref() == INDEX_COMPLETE {
                continue;
            }
            // Kind and position are the key's first 9 bytes: no rehashing at start-up.
            let (kind, position) = (DigestKind::of_index_key(&key)?, digest::key_position(&key)?);
            cache.apply(kind, position, None, Some(&stored_hash(&value)?));
        }
        *self.lock_digests() = cache;
        Ok(())
    }

    fn holds_nothing(&self) -> Result<bool, StoreError> {
        Ok(self.scan_files(None, 1)?.is_empty()
            && self.scan_dir_entries(None, 1)?.is_empty()
            && self.scan_blocks(None, 1)?.is_empty())
    }

    /// Re-indexes every entry from the records and blocks themselves and rebuilds the cache:
    /// for a store written before digests existed, and for measuring how long that takes.
    /// Call it while nothing else writes.
    pub fn rebuild_digests(&self) -> Result<(), StoreError> {
        // Cleared durably (marker included) first: a crash mid-way rebuilds again at open.
        self.digest_index.clear()?;
        self.db_persist()?;
        let mut cache = DigestCache::default();
        let mut pending: Vec<(EntryKey, Digest)> = Vec::with_capacity(REBUILD_BATCH);
        let flush = |pending: &mut Vec<(EntryKey, Digest)>, cache: &mut DigestCache| -> Result<(), StoreError> {
            let mut batch = self.db_batch();
            for (entry, hash) in pending.drain(..) {
                batch.insert(&self.digest_index, entry.index_key(), hash.0);
                cache.apply(entry.kind(), entry.position(), None, Some(&hash));
            }
            Ok(batch.commit()?)
        };
        let mut after: Option<String> = None;
        loop {
            let files: Vec<(String, FileRecord)> = self.scan_files(after.as_deref(), REBUILD_BATCH)?;
            let Some((last, _)) = files.last() else { break };
            after = Some(last.clone());
            for (path, record) in files {
                let entry = EntryKey::File(path);
                let hash = digest::record_hash(&entry, &record)?;
                pending.push((entry, hash));
            }
            flush(&mut pending, &mut cache)?;
        }
        let mut after: Option<(String, String)> = None;
        loop {
            let entries =
                self.scan_dir_entries(after.as_ref().map(|(d, n)| (d.as_str(), n.as_str())), REBUILD_BATCH)?;
            let Some((dir, name, _)) = entries.last() else { break };
            after = Some((dir.clone(), name.clone()));
            for (dir, name, dir_entry) in entries {
                let entry = EntryKey::Entry { dir, name };
                let hash = digest::record_hash(&entry, &dir_entry)?;
                pending.push((entry, hash));
            }
            flush(&mut pending, &mut cache)?;
        }
        let mut after: Option<BlockHash> = None;
        loop {
            let blocks = self.scan_blocks(after.as_ref(), REBUILD_BATCH)?;
            let Some(last) = blocks.last() else { break };
            after = Some(*last);
            pending.extend(blocks.into_iter().map(|hash| (EntryKey::Block(hash), EntryKey::Block(hash).hash(&[]))));
            flush(&mut pending, &mut cache)?;
        }
        self.db_persist()?;
        self.digest_index.insert(INDEX_COMPLETE, [])?;
        self.db_persist()?;
        let entries: u64 = DigestKind::ALL.iter().map(|kind| cache.entries(*kind)).sum();
        tracing::info!(entries, "digest index rebuilt from the entries");
        *self.lock_digests() = cache;
        Ok(())
    }

    /// Indexes a stored block if it is not yet, committing `batch` (the block's own write,
    /// if any) with the index entry.
    pub(crate) fn index_block(
        &self,
        hash: &BlockHash,
        batch: Option<fjall::OwnedWriteBatch>,
    ) -> Result<(), StoreError> {
        let entry = EntryKey::Block(*hash);
        let index_key = entry.index_key();
        let _indexing = self.block_index_lock.lock().unwrap_or_else(|poison| poison.into_inner());
        let indexed = self.digest_index.contains_key(&index_key)?;
        let new = entry.hash(&[]);
        if batch.is_none() && !indexed && !self.small_blocks.contains_key(hash.0)? && !self.block_path(hash).exists() {
            // Dropped (`drop_prefix`) between being stored and being indexed: not stored.
            return Err(StoreError::Io(std::io::Error::other(format!("block {hash} was dropped while being stored"))));
        }
        match (batch, indexed) {
            (Some(batch), true) => batch.commit()?,
            (Some(mut batch), false) => {
                batch.insert(&self.digest_index, index_key, new.0);
                batch.commit()?;
            }
            (None, true) => {}
            (None, false) => self.digest_index.insert(index_key, new.0)?,
        }
        if !indexed {
            self.lock_digests().apply(DigestKind::Blocks, entry.position(), None, Some(&new));
        }
        Ok(())
    }

    /// Removes a block: its index entry and inline copy, then (made durable first, so a crash
    /// never leaves the digests claiming a block that is gone) its file. All under the block
    /// index lock, so a concurrent write of the same block cannot index a file being removed.
    pub(crate) fn unindex_block(&self, hash: &BlockHash) -> Result<(), StoreError> {
        let entry = EntryKey::Block(*hash);
        let index_key = entry.index_key();
        let _indexing = self.block_index_lock.lock().unwrap_or_else(|poison| poison.into_inner());
        let indexed = self.digest_index.contains_key(&index_key)?;
        let mut batch = self.db_batch();
        batch.remove(&self.small_blocks, hash.0);
        batch.remove(&self.digest_index, index_key);
        batch.commit()?;
        if indexed {
            self.lock_digests().apply(DigestKind::Blocks, entry.position(), Some(&entry.hash(&[])), None);
        }
        let path = self.block_path(hash);
        if !path.exists() {
            return Ok(());
        }
        self.db_persist()?;
        let _removing = self.file_lock.lock().unwrap_or_else(|poison| poison.into_inner());
        match std::fs::metadata(&path) {
            Ok(meta) => {
                std::fs::remove_file(&path)?;
                self.block_file_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// [`Store::drop_prefix`]: under the lock that orders writes of `kind`, checks the
    /// digest, then removes the entries, their index entries and (for blocks) their files.
    pub(crate) fn drop_entries_under(
        &self,
        kind: DigestKind,
        prefix: Prefix,
        expected: u64,
    ) -> Result<bool, StoreError> {
        self.refuse_if_poisoned()?;
        let lock = if kind == DigestKind::Blocks { &self.block_index_lock } else { &self.merge_lock };
        let _writes = lock.lock().unwrap_or_else(|poison| poison.into_inner());
        if digest::digest(self, kind, prefix)?.short() != expected {
            return Ok(false);
        }
        let (from, to) = digest::index_range(kind, prefix);
        let mut entries = Vec::new();
        self.scan(&from, &to, &mut |key, hash| {
            entries.push((key.to_vec(), hash));
            true
        })?;
        let mut batch = self.db_batch();
        let mut changes = Vec::with_capacity(entries.len());
        let mut files = Vec::new();
        for (index_key, hash) in entries {
            let entry = EntryKey::from_index_key(&index_key)?;
            match &entry {
                EntryKey::File(path) => batch.remove(&self.files, path.as_bytes()),
                EntryKey::Entry { dir, name } => batch.remove(&self.dir_entries, entry_key(dir, name)),
                EntryKey::Block(block) => {
                    batch.remove(&self.small_blocks, block.0);
                    files.push(self.block_path(block));
                }
            }
            batch.remove(&self.digest_index, index_key);
            changes.push(CacheChange { kind, position: entry.position(), old: Some(hash), new: None });
        }
        batch.commit()?;
        self.apply_cache_changes(changes);
        if !files.is_empty() {
            // Unindexed durably before any file goes (see `unindex_block`).
            self.db_persist()?;
            let _removing = self.file_lock.lock().unwrap_or_else(|poison| poison.into_inner());
            for path in files {
                if let Ok(meta) = std::fs::metadata(&path) {
                    std::fs::remove_file(&path)?;
                    self.block_file_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
                }
            }
        }
        Ok(true)
    }

    /// The stable capacity the ring weighs this node by: the configured capacity, or the
    /// disk's size less the reserve. Never its free space.
    pub(crate) fn capacity_bytes(&self) -> Result<u64, StoreError> {
        let (configured, reserve) = self.capacity_config();
        let disk = fs4::total_space(self.path())?.saturating_sub(reserve);
        Ok(configured.map_or(disk, |configured| configured.min(disk.max(1))))
    }

    pub(crate) fn db_persist(&self) -> Result<(), StoreError> {
        Ok(self.database().persist(PersistMode::SyncAll)?)
    }
}

fn stored_hash(value: &[u8]) -> Result<Digest, StoreError> {
    let bytes: [u8; 32] = value
        .try_into()
        .map_err(|_| StoreError::Decode { what: "digest index", detail: "hash is not 32 bytes".into() })?;
    Ok(Digest(bytes))
}

impl PositionIndex for FjallStore {
    fn cached(&self, kind: DigestKind, prefix: Prefix) -> Option<Digest> {
        self.lock_digests().digest(kind, prefix)
    }

    fn cached_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> (Digest, Vec<Prefix>) {
        self.lock_digests().sum(kind, prefixes)
    }

    fn cached_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Option<Vec<Digest>> {
        self.lock_digests().children(kind, prefix, fanout_bits)
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], Digest) -> bool) -> Result<(), StoreError> {
        for guard in self.digest_index.range::<&[u8], _>(from..to) {
            let (key, value) = guard.into_inner()?;
            if !visit(&key, stored_hash(&value)?) {
                break;
            }
        }
        Ok(())
    }
}
