//! The simulator's backend: in memory, with a crash model.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::digest::{self, DigestCache, PositionIndex};
use crate::{
    BlockHash, Digest, DigestEntry, DigestKind, DirEntry, DirRecord, EntryKey, FileRecord, GroupCommit, Merge, Prefix,
    RecordUpdate, Store, StoreError, Usage,
};

/// An in-memory [`Store`] whose [`crash`](MemStore::crash) loses every write not yet synced,
/// the way a power cut loses what was only in OS buffers. Writes become durable in the order
/// they were made, as with the fjall backend's journal.
pub struct MemStore {
    state: Mutex<State>,
    commit: GroupCommit,
    capacity_bytes: u64,
}

#[derive(Clone, Default)]
struct Tables {
    blocks: BTreeMap<BlockHash, Bytes>,
    files: BTreeMap<String, FileRecord>,
    /// Entries by directory, then by name: merged one by one, like the fjall backend's keys.
    dirs: BTreeMap<String, BTreeMap<String, DirEntry>>,
    /// The position index (`EntryKey::index_key` -> entry hash) and its cached digests,
    /// changed with the entries, so a crash keeps them consistent with what survived.
    index: BTreeMap<Vec<u8>, Digest>,
    cache: DigestCache,
}

impl Tables {
    fn used_bytes(&self) -> u64 {
        self.blocks.values().map(|block| block.len() as u64).sum()
    }

    fn apply(&mut self, op: Op) {
        let (key, hash) = match op {
            Op::PutBlock(hash, bytes) => {
                self.blocks.insert(hash, bytes);
                (EntryKey::Block(hash), Some(EntryKey::Block(hash).hash(&[])))
            }
            Op::DeleteBlock(hash) => {
                self.blocks.remove(&hash);
                (EntryKey::Block(hash), None)
            }
            Op::File(path, record, hash) => {
                self.files.insert(path.clone(), record);
                (EntryKey::File(path), Some(hash))
            }
            Op::DirEntry(dir, name, entry, hash) => {
                self.dirs.entry(dir.clone()).or_default().insert(name.clone(), entry);
                (EntryKey::Entry { dir, name }, Some(hash))
            }
            Op::Remove(EntryKey::File(path)) => {
                self.files.remove(&path);
                (EntryKey::File(path), None)
            }
            Op::Remove(EntryKey::Entry { dir, name }) => {
                if let Some(entries) = self.dirs.get_mut(&dir) {
                    entries.remove(&name);
                    if entries.is_empty() {
                        self.dirs.remove(&dir);
                    }
                }
                (EntryKey::Entry { dir, name }, None)
            }
            Op::Remove(EntryKey::Block(hash)) => {
                self.blocks.remove(&hash);
                (EntryKey::Block(hash), None)
            }
        };
        let index_key = key.index_key();
        let old = match hash {
            Some(hash) => self.index.insert(index_key, hash),
            None => self.index.remove(&index_key),
        };
        self.cache.apply(key.kind(), key.position(), old.as_ref(), hash.as_ref());
    }
}

/// One write, as it will reach the durable state on the next sync. Records carry the merged
/// value, so replaying them in order reproduces the visible state.
#[derive(Clone)]
enum Op {
    PutBlock(BlockHash, Bytes),
    DeleteBlock(BlockHash),
    File(String, FileRecord, Digest),
    DirEntry(String, String, DirEntry, Digest),
    /// An entry dropped outright (a copy this node no longer owns).
    Remove(EntryKey),
}

#[derive(Default)]
struct State {
    visible: Tables,
    durable: Tables,
    unsynced: Vec<Op>,
    block_bytes: u64,
}

impl MemStore {
    /// An empty store with room for `capacity_bytes` of blocks.
    pub fn new(capacity_bytes: u64) -> Self {
        Self { state: Mutex::new(State::default()), commit: GroupCommit::new(), capacity_bytes }
    }

    /// Simulates a power cut and restart: every write since the last completed sync is lost.
    pub fn crash(&self) {
        let mut state = self.lock();
        state.unsynced.clear();
        state.visible = state.durable.clone();
        state.block_bytes = state.visible.used_bytes();
    }

    /// Flips one byte of a stored block (visible and durable), as bit rot would.
    pub fn corrupt_block(&self, hash: &BlockHash) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for tables in [&mut state.visible, &mut state.durable] {
            if let Some(block) = tables.blocks.get_mut(hash) {
                let mut bytes = block.to_vec();
                if let Some(first) = bytes.first_mut() {
                    *first ^= 0xff;
                }
                *block = Bytes::from(bytes);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below completes or does nothing before a panic could occur.
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Writes a block whose name is known to be right.
    fn write_block(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        if self.commit.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        let mut state = self.lock();
        // A corrupt copy is replaced, as in the fjall backend.
        match state.visible.blocks.get(hash) {
            Some(stored) if hash.matches(stored) => return Ok(()),
            Some(stored) => {
                let stale = stored.len() as u64;
                state.block_bytes -= stale;
            }
            None => {}
        }
        let available_bytes = self.capacity_bytes.saturating_sub(state.block_bytes);
        if bytes.len() as u64 > available_bytes {
            return Err(StoreError::Full { needed_bytes: bytes.len() as u64, available_bytes });
        }
        state.block_bytes += bytes.len() as u64;
        Self::write(&mut state, Op::PutBlock(*hash, Bytes::copy_from_slice(bytes)));
        Ok(())
    }

    fn write(state: &mut State, op: Op) {
        state.visible.apply(op.clone());
        state.unsynced.push(op);
    }
}

impl Store for MemStore {
    fn scan_files(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, FileRecord)>, StoreError> {
        let state = self.lock();
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.to_string()));
        let files = state.visible.files.range((start, Bound::Unbounded));
        Ok(files.take(limit).map(|(path, record)| (path.clone(), record.clone())).collect())
    }

    fn scan_dir_entries(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String, DirEntry)>, StoreError> {
        let state = self.lock();
        let entries = state
            .visible
            .dirs
            .iter()
            .flat_map(|(dir, entries)| entries.iter().map(move |(name, entry)| (dir, name, entry)))
            .filter(|(dir, name, _)| {
                after.is_none_or(|(a_dir, a_name)| (dir.as_str(), name.as_str()) > (a_dir, a_name))
            });
        Ok(entries.take(limit).map(|(dir, name, entry)| (dir.clone(), name.clone(), *entry)).collect())
    }

    fn scan_blocks(&self, after: Option<&BlockHash>, limit: usize) -> Result<Vec<BlockHash>, StoreError> {
        let state = self.lock();
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(*after));
        Ok(state.visible.blocks.range((start, Bound::Unbounded)).take(limit).map(|(hash, _)| *hash).collect())
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
        let state = self.lock();
        match state.visible.blocks.get(hash) {
            Some(bytes) if !hash.matches(bytes) => Err(StoreError::Corrupt(*hash)),
            found => Ok(found.cloned()),
        }
    }

    fn has_block(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(self.lock().visible.blocks.contains_key(hash))
    }

    fn delete_block(&self, hash: &BlockHash) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(bytes) = state.visible.blocks.get(hash) {
            state.block_bytes -= bytes.len() as u64;
            Self::write(&mut state, Op::DeleteBlock(*hash));
        }
        Ok(())
    }

    fn get_file(&self, path: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self.lock().visible.files.get(path).cloned())
    }

    fn get_dir(&self, path: &str) -> Result<Option<DirRecord>, StoreError> {
        let state = self.lock();
        let entries = state.visible.dirs.get(path).filter(|entries| !entries.is_empty());
        Ok(entries.map(|entries| DirRecord { children: entries.clone() }))
    }

    fn get_dir_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError> {
        Ok(self.lock().visible.dirs.get(dir).and_then(|entries| entries.get(name)).copied())
    }

    fn merge_records(&self, updates: &[RecordUpdate]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for update in updates {
            match update {
                RecordUpdate::File(path, record) => {
                    let merged = match state.visible.files.get(path) {
                        Some(stored) => stored.clone().merge(record.clone()),
                        None => record.clone(),
                    };
                    let hash = digest::record_hash(&EntryKey::File(path.clone()), &merged)?;
                    Self::write(&mut state, Op::File(path.clone(), merged, hash));
                }
                RecordUpdate::Dir(path, record) => {
                    for (name, entry) in &record.children {
                        let stored = state.visible.dirs.get(path).and_then(|entries| entries.get(name)).copied();
                        let merged = stored.map_or(*entry, |stored| stored.merge(*entry));
                        let key = EntryKey::Entry { dir: path.clone(), name: name.clone() };
                        let hash = digest::record_hash(&key, &merged)?;
                        Self::write(&mut state, Op::DirEntry(path.clone(), name.clone(), merged, hash));
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.commit.sync(|| {
            let mut state = self.lock();
            let ops = std::mem::take(&mut state.unsynced);
            for op in ops {
                state.durable.apply(op);
            }
            Ok(())
        })
    }

    fn ensure_room(&self, bytes: u64) -> Result<(), StoreError> {
        let available_bytes = self.capacity_bytes.saturating_sub(self.lock().block_bytes);
        if bytes > available_bytes {
            return Err(StoreError::Full { needed_bytes: bytes, available_bytes });
        }
        Ok(())
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        let used_bytes = self.lock().block_bytes;
        Ok(Usage {
            used_bytes,
            available_bytes: self.capacity_bytes.saturating_sub(used_bytes),
            capacity_bytes: self.capacity_bytes,
        })
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
        if self.commit.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        // Checked and removed under one lock: no write can slip in between.
        let mut state = self.lock();
        if digest::digest(&Locked(&state), kind, prefix)?.short() != expected {
            return Ok(false);
        }
        let (from, to) = digest::index_range(kind, prefix);
        let keys: Vec<EntryKey> = state
            .visible
            .index
            .range::<[u8], _>((Bound::Included(&from[..]), Bound::Excluded(&to[..])))
            .map(|(key, _)| EntryKey::from_index_key(key))
            .collect::<Result<_, _>>()?;
        for key in keys {
            if let EntryKey::Block(hash) = &key
                && let Some(bytes) = state.visible.blocks.get(hash)
            {
                state.block_bytes -= bytes.len() as u64;
            }
            Self::write(&mut state, Op::Remove(key));
        }
        Ok(true)
    }

    fn digest_len(&self, kind: DigestKind) -> Result<u64, StoreError> {
        Ok(self.lock().visible.cache.entries(kind))
    }
}

/// The store's state while its lock is held, as a position index.
struct Locked<'a>(&'a State);

impl PositionIndex for Locked<'_> {
    fn cached(&self, kind: DigestKind, prefix: Prefix) -> Option<Digest> {
        self.0.visible.cache.digest(kind, prefix)
    }

    fn cached_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> (Digest, Vec<Prefix>) {
        self.0.visible.cache.sum(kind, prefixes)
    }

    fn cached_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Option<Vec<Digest>> {
        self.0.visible.cache.children(kind, prefix, fanout_bits)
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], Digest) -> bool) -> Result<(), StoreError> {
        for (key, hash) in self.0.visible.index.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to))) {
            if !visit(key, *hash) {
                break;
            }
        }
        Ok(())
    }
}

impl PositionIndex for MemStore {
    fn cached(&self, kind: DigestKind, prefix: Prefix) -> Option<Digest> {
        Locked(&self.lock()).cached(kind, prefix)
    }

    fn cached_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> (Digest, Vec<Prefix>) {
        Locked(&self.lock()).cached_sum(kind, prefixes)
    }

    fn cached_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Option<Vec<Digest>> {
        Locked(&self.lock()).cached_children(kind, prefix, fanout_bits)
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], Digest) -> bool) -> Result<(), StoreError> {
        Locked(&self.lock()).scan(from, to, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeId, Version};

    fn tombstone(hlc: u64) -> FileRecord {
        FileRecord { version: Version { hlc, node: NodeId(1) }, meta: None }
    }

    #[test]
    fn a_crash_loses_unsynced_writes_and_keeps_synced_ones() {
        let store = MemStore::new(1 << 20);
        let synced = BlockHash::of(b"synced");
        store.put_block(&synced, b"synced").expect("put");
        store.merge_records(&[RecordUpdate::File("/a".into(), tombstone(1))]).expect("merge");
        store.sync().expect("sync");
        let lost = BlockHash::of(b"lost");
        store.put_block(&lost, b"lost").expect("put");
        store.merge_records(&[RecordUpdate::File("/a".into(), tombstone(2))]).expect("merge");

        store.crash();

        assert!(store.has_block(&synced).expect("has"));
        assert!(!store.has_block(&lost).expect("has"));
        assert_eq!(store.get_file("/a").expect("get"), Some(tombstone(1)));
        assert_eq!(store.usage().expect("usage").used_bytes, 6);
    }
}
