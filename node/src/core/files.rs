//! File and directory operations of a single node (N = 1): write = blocks then record, read by
//! byte range, stat, delete (tombstone), mkdir, list, rmdir.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_storage::{
    BlockHash, DirEntry, DirRecord, EntryKind, FileMeta, FileRecord, NodeId, RecordUpdate, Store, StoreError, Version,
};

use super::chunker::Chunker;
use super::hlc::Hlc;
use super::path::{PathError, ShoalPath};

/// Why a file operation failed. Every variant leaves the store as it was, except where noted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path is malformed.
    #[error("invalid path: {0}")]
    InvalidPath(#[from] PathError),
    /// Nothing lives at the path.
    #[error("{0}: no such file or directory")]
    NotFound(ShoalPath),
    /// The operation needs a directory but found a file, or the other way round.
    #[error("{path}: {reason}")]
    Conflict {
        /// The path the operation named.
        path: ShoalPath,
        /// What is in the way.
        reason: String,
    },
    /// The directory has children and the removal was not recursive.
    #[error("{0}: directory not empty (remove it recursively)")]
    NotEmpty(ShoalPath),
    /// The uploaded content does not hash to what the client declared. Blocks written for it
    /// are orphans for garbage collection; no record was written.
    #[error("content hash mismatch: declared {declared}, received {received}")]
    HashMismatch {
        /// What the client said.
        declared: BlockHash,
        /// What arrived.
        received: BlockHash,
    },
    /// The byte range lies outside the file.
    #[error("range {start}..{end} is not satisfiable for a file of {size} bytes")]
    RangeNotSatisfiable {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The file's size.
        size: u64,
    },
    /// A stored version is at the end of the clock's range, so no later version exists. Only
    /// a corrupt or hostile record can cause it; nothing was written.
    #[error("a stored version of {0} is at the end of the clock's range; no newer version can be made")]
    ClockExhausted(ShoalPath),
    /// A block the file names is missing or corrupt here; nothing wrong was served.
    #[error("block {0} of the file is unavailable on this node")]
    BlockUnavailable(BlockHash),
    /// The store failed (disk full, IO error, poisoned).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A file as `stat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Where it lives.
    pub path: ShoalPath,
    /// The write that made it.
    pub version: Version,
    /// Its content.
    pub meta: FileMeta,
}

/// One directory child as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The child's name.
    pub name: String,
    /// File or directory, size, version.
    pub entry: DirEntry,
}

/// A part of one block that a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The block.
    pub block: BlockHash,
    /// First byte of the block to return.
    pub offset: usize,
    /// How many bytes.
    pub len: usize,
}

/// What a read returns, as block pieces to fetch in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// The file.
    pub stat: FileStat,
    /// First byte returned.
    pub start: u64,
    /// One past the last byte returned.
    pub end: u64,
    /// The blocks to fetch.
    pub pieces: Vec<Piece>,
}

impl ReadPlan {
    /// Plans a read of bytes `range` (start, end exclusive; the whole file if `None`) of the
    /// file `stat` describes. Pure: a caller that already looked the file up (to resolve an
    /// HTTP range against its size) plans from that same record instead of reading it again.
    pub fn new(stat: FileStat, range: Option<(u64, u64)>) -> Result<ReadPlan, FileError> {
        let size = stat.meta.size;
        // A whole-file read of an empty file is fine; an explicit range must hold a byte.
        let (start, end) = range.unwrap_or((0, size));
        let satisfiable = match range {
            None => true,
            Some(_) => start < end && end <= size,
        };
        if !satisfiable {
            return Err(FileError::RangeNotSatisfiable { start, end, size });
        }
        let block_size = u64::from(stat.meta.block_size);
        if block_size == 0 && size > 0 {
            let detail = format!("{} names a block size of 0", stat.path);
            return Err(FileError::Store(StoreError::Decode { what: "file", detail }));
        }
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let index = at / block_size;
            let block_start = index * block_size;
            let block_end = block_start.saturating_add(block_size).min(size);
            let piece_end = block_end.min(end);
            let block =
                *stat.meta.blocks.get(index as usize).ok_or(FileError::RangeNotSatisfiable { start, end, size })?;
            pieces.push(Piece { block, offset: (at - block_start) as usize, len: (piece_end - at) as usize });
            at = piece_end;
        }
        Ok(ReadPlan { stat, start, end, pieces })
    }
}

/// An upload in progress: the driver feeds it the body and stores the blocks it hands out.
/// Nothing becomes visible until [`FileCore::commit_upload`]; dropping an upload (a client
/// that went away) leaves at most orphan blocks.
#[derive(Debug)]
pub struct Upload {
    path: ShoalPath,
    /// `None` once the content ended.
    chunker: Option<Chunker>,
    content: blake3::Hasher,
    size: u64,
    blocks: Vec<Option<BlockHash>>,
}

impl Upload {
    /// The path being written.
    pub fn path(&self) -> &ShoalPath {
        &self.path
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the next piece of content; returns the blocks it completed with their indices.
    pub fn push(&mut self, data: &[u8]) -> Vec<(usize, Bytes)> {
        let chunker = self.chunker.as_mut().expect("no content after the upload finished");
        self.content.update(data);
        self.size += data.len() as u64;
        chunker.push(data).into_iter().map(|block| self.index(block)).collect()
    }

    /// Ends the content; returns the last, short block if there is one.
    pub fn finish(&mut self) -> Option<(usize, Bytes)> {
        self.chunker.take()?.finish().map(|block| self.index(block))
    }

    /// Records that block `index` is stored under `hash`.
    pub fn block_stored(&mut self, index: usize, hash: BlockHash) {
        self.blocks[index] = Some(hash);
    }

    fn index(&mut self, block: Bytes) -> (usize, Bytes) {
        self.blocks.push(None);
        (self.blocks.len() - 1, block)
    }
}

/// The file logic of one node over a [`Store`]. Every method is synchronous and may block on
/// the store; no method reads the clock.
pub struct FileCore<S> {
    store: Arc<S>,
    node: NodeId,
    block_size: u32,
    hlc: Mutex<Hlc>,
    namespace: Mutex<()>,
}

impl<S: Store> FileCore<S> {
    /// A core for node `node` cutting files into blocks of `block_size` bytes.
    pub fn new(store: Arc<S>, node: NodeId, block_size: u32) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self { store, node, block_size, hlc: Mutex::new(Hlc::new()), namespace: Mutex::new(()) }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Starts an upload to `raw_path`, refusing early what the commit would refuse: a bad path,
    /// a file in the way of a parent directory, a directory at the path itself, a full disk
    /// (`expected_size`, when the client declared one).
    pub fn begin_upload(&self, raw_path: &str, expected_size: Option<u64>) -> Result<Upload, FileError> {
        let path = ShoalPath::parse_file(raw_path)?;
        self.check_file_can_live_at(&path)?;
        if let Some(size) = expected_size {
            self.store.ensure_room(size)?;
        }
        Ok(Upload {
            path,
            chunker: Some(Chunker::new(self.block_size as usize)),
            content: blake3::Hasher::new(),
            size: 0,
            blocks: Vec::new(),
        })
    }

    /// Stores one block of an upload and returns its name.
    pub fn store_block(&self, bytes: &[u8]) -> Result<BlockHash, FileError> {
        Ok(self.store.store_block(bytes)?)
    }

    /// Makes an upload visible and durable: checks the declared content hash, merges the file
    /// record and its parents' directory entries in one atomic write, syncs. The caller must
    /// have stored every block the upload handed out.
    pub fn commit_upload(
        &self,
        upload: Upload,
        declared: Option<BlockHash>,
        now_us: u64,
    ) -> Result<FileStat, FileError> {
        let received = BlockHash::from(upload.content.finalize());
        if let Some(declared) = declared
            && declared != received
        {
            return Err(FileError::HashMismatch { declared, received });
        }
        let blocks: Vec<BlockHash> =
            upload.blocks.iter().map(|b| b.expect("every block stored before commit")).collect();
        let path = upload.path;
        let meta = FileMeta { size: upload.size, content_hash: received, block_size: self.block_size, blocks };
        let version = {
            let _namespace = self.namespace();
            // The tree may have changed while the body streamed in.
            self.check_file_can_live_at(&path)?;
            let previous = self.store.get_file(path.as_str())?;
            let version = self.next_version(&path, previous.iter().map(|r| r.version), now_us)?;
            let mut updates =
                vec![RecordUpdate::File(path.to_string(), FileRecord { version, meta: Some(meta.clone()) })];
            updates.extend(Self::lineage_entries(&path, version, EntryKind::File, upload.size));
            self.store.merge_records(&updates)?;
            version
        };
        self.store.sync()?;
        Ok(FileStat { path, version, meta })
    }

    /// The live file at `raw_path`.
    pub fn stat(&self, raw_path: &str) -> Result<FileStat, FileError> {
        let path = ShoalPath::parse_file(raw_path)?;
        match self.store.get_file(path.as_str())? {
            Some(FileRecord { version, meta: Some(meta) }) => Ok(FileStat { path, version, meta }),
            _ => Err(FileError::NotFound(path)),
        }
    }

    /// Plans a read of bytes `range` (start, end exclusive; the whole file if `None`).
    pub fn read_plan(&self, raw_path: &str, range: Option<(u64, u64)>) -> Result<ReadPlan, FileError> {
        ReadPlan::new(self.stat(raw_path)?, range)
    }

    /// Fetches one piece of a read, verified.
    pub fn read_piece(&self, piece: &Piece) -> Result<Bytes, FileError> {
        let block = match self.store.get_block(&piece.block) {
            Ok(Some(block)) => block,
            Ok(None) | Err(StoreError::Corrupt(_)) => return Err(FileError::BlockUnavailable(piece.block)),
            Err(err) => return Err(err.into()),
        };
        if piece.offset + piece.len > block.len() {
            return Err(FileError::BlockUnavailable(piece.block));
        }
        Ok(block.slice(piece.offset..piece.offset + piece.len))
    }

    /// Deletes the file at `raw_path` by writing a tombstone.
    pub fn delete(&self, raw_path: &str, now_us: u64) -> Result<Version, FileError> {
        let version = {
            let _namespace = self.namespace();
            let stat = self.stat(raw_path)?;
            let version = self.next_version(&stat.path, [stat.version], now_us)?;
            let (parent, name) = stat.path.split_parent().expect("a file path has a parent");
            let updates = [
                RecordUpdate::File(stat.path.to_string(), FileRecord { version, meta: None }),
                RecordUpdate::Dir(parent.to_string(), Self::one_entry(name, version, EntryKind::File, true, 0)),
            ];
            self.store.merge_records(&updates)?;
            version
        };
        self.store.sync()?;
        Ok(version)
    }

    /// Makes the directory `raw_path` and any missing parents. Returns whether it was new.
    pub fn mkdir(&self, raw_path: &str, now_us: u64) -> Result<bool, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        if path.is_root() {
            return Ok(false);
        }
        let namespace = self.namespace();
        let mut seen = Vec::new();
        for (dir, name) in path.lineage() {
            let entry = self.entry(&dir, &name)?;
            if let Some(entry) = entry.filter(|entry| !entry.tombstone) {
                if entry.kind == EntryKind::File {
                    return Err(FileError::Conflict {
                        path: path.clone(),
                        reason: format!("{} is a file", dir.join(&name)),
                    });
                }
                if dir.join(&name) == path {
                    return Ok(false);
                }
            }
            seen.extend(entry.map(|entry| entry.version));
        }
        let version = self.next_version(&path, seen, now_us)?;
        // The directory exists through its entry in its parent; it has no entries of its own.
        let updates: Vec<_> = Self::lineage_entries(&path, version, EntryKind::Dir, 0).collect();
        self.store.merge_records(&updates)?;
        drop(namespace);
        self.store.sync()?;
        Ok(true)
    }

    /// The live children of the directory `raw_path`, by name.
    pub fn list(&self, raw_path: &str) -> Result<Vec<Listed>, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        self.check_is_dir(&path)?;
        let record = self.store.get_dir(path.as_str())?.unwrap_or_default();
        Ok(record.live_children().map(|(name, entry)| Listed { name: name.clone(), entry: *entry }).collect())
    }

    /// Removes the directory `raw_path`: refused with [`FileError::NotEmpty`] if it has
    /// children, unless `recursive`, which tombstones every file and directory below it in one
    /// atomic write. Returns how many files were deleted.
    pub fn rmdir(&self, raw_path: &str, recursive: bool, now_us: u64) -> Result<u64, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        let Some((parent, name)) = path.split_parent() else {
            return Err(FileError::Conflict { path, reason: "the root cannot be removed".into() });
        };
        let namespace = self.namespace();
        let own = self.check_is_dir(&path)?;
        let mut seen: Vec<Version> = own.into_iter().collect();
        // Walk the subtree first, gathering what to tombstone and every version seen, so the
        // tombstones are newer than all of it.
        let mut doomed_files = Vec::new();
        let mut doomed_dirs = Vec::new();
        let mut pending = vec![path.clone()];
        while let Some(dir) = pending.pop() {
            let record = self.store.get_dir(dir.as_str())?.unwrap_or_default();
            if !recursive && record.has_live_children() {
                return Err(FileError::NotEmpty(path));
            }
            for (child, entry) in record.live_children() {
                seen.push(entry.version);
                match entry.kind {
                    EntryKind::File => doomed_files.push((dir.clone(), child.clone())),
                    EntryKind::Dir => {
                        doomed_dirs.push((dir.clone(), child.clone()));
                        pending.push(dir.join(child));
                    }
                }
            }
        }
        let version = self.next_version(&path, seen, now_us)?;
        let mut updates =
            vec![RecordUpdate::Dir(parent.to_string(), Self::one_entry(name, version, EntryKind::Dir, true, 0))];
        for (dir, child) in &doomed_dirs {
            updates.push(RecordUpdate::Dir(dir.to_string(), Self::one_entry(child, version, EntryKind::Dir, true, 0)));
        }
        for (dir, child) in &doomed_files {
            updates.push(RecordUpdate::Dir(dir.to_string(), Self::one_entry(child, version, EntryKind::File, true, 0)));
            updates.push(RecordUpdate::File(dir.join(child).to_string(), FileRecord { version, meta: None }));
        }
        self.store.merge_records(&updates)?;
        drop(namespace);
        self.store.sync()?;
        Ok(doomed_files.len() as u64)
    }

    /// A new version later than `now_us` and than every version in `seen`.
    fn next_version(
        &self,
        path: &ShoalPath,
        seen: impl IntoIterator<Item = Version>,
        now_us: u64,
    ) -> Result<Version, FileError> {
        let mut hlc = self.hlc.lock().unwrap_or_else(|poison| poison.into_inner());
        for version in seen {
            hlc.observe(version.hlc);
        }
        let hlc = hlc.tick(now_us).ok_or_else(|| FileError::ClockExhausted(path.clone()))?;
        Ok(Version { hlc, node: self.node })
    }

    /// Held from the checks of a tree change to its merge, so two changes cannot both pass
    /// their checks and leave, say, `/a` a file and a directory at once. The fsync happens
    /// after it is released, so concurrent writers still share fsyncs.
    fn namespace(&self) -> std::sync::MutexGuard<'_, ()> {
        self.namespace.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The entry `name` in directory `dir`, tombstones included.
    fn entry(&self, dir: &ShoalPath, name: &str) -> Result<Option<DirEntry>, FileError> {
        Ok(self.store.get_dir_entry(dir.as_str(), name)?)
    }

    /// Fails unless every proper ancestor of `path` is (or can implicitly become) a directory
    /// and `path` itself is not a directory.
    fn check_file_can_live_at(&self, path: &ShoalPath) -> Result<(), FileError> {
        for (dir, name) in path.lineage() {
            let Some(entry) = self.entry(&dir, &name)?.filter(|entry| !entry.tombstone) else { continue };
            let child = dir.join(&name);
            match entry.kind {
                EntryKind::File if child != *path => {
                    return Err(FileError::Conflict { path: path.clone(), reason: format!("{child} is a file") });
                }
                EntryKind::Dir if child == *path => {
                    return Err(FileError::Conflict { path: path.clone(), reason: "it is a directory".into() });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fails unless `path` is a live directory; returns its entry's version (none for `/`).
    fn check_is_dir(&self, path: &ShoalPath) -> Result<Option<Version>, FileError> {
        let Some((parent, name)) = path.split_parent() else { return Ok(None) };
        match self.entry(&parent, name)?.filter(|entry| !entry.tombstone) {
            Some(entry) if entry.kind == EntryKind::Dir => Ok(Some(entry.version)),
            Some(_) => Err(FileError::Conflict { path: path.clone(), reason: "it is a file, not a directory".into() }),
            None => Err(FileError::NotFound(path.clone())),
        }
    }

    /// Directory entries that make every ancestor of `path` a live directory and `path` a
    /// live `kind` child of its parent.
    fn lineage_entries(
        path: &ShoalPath,
        version: Version,
        kind: EntryKind,
        size: u64,
    ) -> impl Iterator<Item = RecordUpdate> {
        path.lineage().into_iter().map(move |(dir, name)| {
            let (kind, size) = if dir.join(&name) == *path { (kind, size) } else { (EntryKind::Dir, 0) };
            RecordUpdate::Dir(dir.to_string(), Self::one_entry(&name, version, kind, false, size))
        })
    }

    fn one_entry(name: &str, version: Version, kind: EntryKind, tombstone: bool, size: u64) -> DirRecord {
        DirRecord { children: [(name.to_string(), DirEntry { version, kind, tombstone, size })].into() }
    }
}

#[cfg(test)]
mod tests {
    use shoal_storage::MemStore;

    use super::*;

    const BLOCK: u32 = 4;

    fn core() -> FileCore<MemStore> {
        FileCore::new(Arc::new(MemStore::new(1 << 20)), NodeId(1), BLOCK)
    }

    fn put(core: &FileCore<MemStore>, path: &str, content: &[u8], now_us: u64) -> Result<FileStat, FileError> {
        let upload = prepared(core, path, content)?;
        core.commit_upload(upload, None, now_us)
    }

    fn read(core: &FileCore<MemStore>, path: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, FileError> {
        let plan = core.read_plan(path, range)?;
        let mut out = Vec::new();
        for piece in &plan.pieces {
            out.extend_from_slice(&core.read_piece(piece)?);
        }
        Ok(out)
    }

    fn names(core: &FileCore<MemStore>, dir: &str) -> Vec<String> {
        core.list(dir).expect("list").into_iter().map(|listed| listed.name).collect()
    }

    #[test]
    fn a_written_file_reads_back_whole_and_by_range() {
        let core = core();
        let stat = put(&core, "/a/b.txt", b"hello, shoal!", 10).expect("put");
        assert_eq!(stat.meta.size, 13);
        assert_eq!(stat.meta.blocks.len(), 4);
        assert_eq!(stat.meta.content_hash, BlockHash::of(b"hello, shoal!"));
        assert_eq!(read(&core, "/a/b.txt", None).expect("read"), b"hello, shoal!");
        assert_eq!(read(&core, "/a/b.txt", Some((3, 9))).expect("read"), b"lo, sh");
        assert_eq!(read(&core, "/a/b.txt", Some((12, 13))).expect("read"), b"!");
        assert!(matches!(read(&core, "/a/b.txt", Some((5, 14))), Err(FileError::RangeNotSatisfiable { .. })));
        assert!(matches!(read(&core, "/a/b.txt", Some((5, 5))), Err(FileError::RangeNotSatisfiable { .. })));
    }

    #[test]
    fn an_empty_file_has_no_blocks_and_reads_empty() {
        let core = core();
        let stat = put(&core, "/empty", b"", 10).expect("put");
        assert!(stat.meta.blocks.is_empty());
        assert_eq!(read(&core, "/empty", None).expect("read"), b"");
    }

    #[test]
    fn an_overwrite_replaces_the_content_and_gets_a_newer_version() {
        let core = core();
        let first = put(&core, "/f", b"one", 100).expect("put");
        // The clock went back: the later write must still win.
        let second = put(&core, "/f", b"two!", 50).expect("put");
        assert!(second.version > first.version);
        assert_eq!(read(&core, "/f", None).expect("read"), b"two!");
    }

    #[test]
    fn a_mismatched_content_hash_stores_no_record() {
        let core = core();
        put(&core, "/f", b"old", 1).expect("put");
        let upload = prepared(&core, "/f", b"new content").expect("prepare");
        let refused = core.commit_upload(upload, Some(BlockHash::of(b"something else")), 2);
        assert!(matches!(refused, Err(FileError::HashMismatch { .. })));
        assert_eq!(read(&core, "/f", None).expect("the old version stays"), b"old");
    }

    #[test]
    fn an_abandoned_upload_leaves_the_previous_version_readable() {
        let core = core();
        put(&core, "/f", b"old", 1).expect("put");
        let mut upload = core.begin_upload("/f", None).expect("begin");
        for (_, block) in upload.push(b"partial new cont") {
            core.store_block(&block).expect("store");
        }
        drop(upload);
        assert_eq!(read(&core, "/f", None).expect("read"), b"old");
    }

    #[test]
    fn parents_appear_implicitly_and_listing_reads_one_record() {
        let core = core();
        put(&core, "/photos/2024/beach.jpg", b"sand", 1).expect("put");
        put(&core, "/photos/cat.jpg", b"meow", 2).expect("put");
        assert_eq!(names(&core, "/"), ["photos"]);
        assert_eq!(names(&core, "/photos"), ["2024", "cat.jpg"]);
        let listed = core.list("/photos").expect("list");
        assert_eq!(listed[0].entry.kind, EntryKind::Dir);
        assert_eq!((listed[1].entry.kind, listed[1].entry.size), (EntryKind::File, 4));
        assert!(matches!(core.list("/nope"), Err(FileError::NotFound(_))));
        assert!(matches!(core.list("/photos/cat.jpg"), Err(FileError::Conflict { .. })));
    }

    #[test]
    fn a_deleted_file_is_gone_and_a_second_delete_is_not_found() {
        let core = core();
        put(&core, "/d/f", b"x", 1).expect("put");
        core.delete("/d/f", 2).expect("delete");
        assert!(matches!(core.stat("/d/f"), Err(FileError::NotFound(_))));
        assert!(names(&core, "/d").is_empty());
        assert!(matches!(core.delete("/d/f", 3), Err(FileError::NotFound(_))));
        assert!(matches!(core.delete("/never", 3), Err(FileError::NotFound(_))));
    }

    #[test]
    fn files_and_directories_do_not_overlap() {
        let core = core();
        put(&core, "/a", b"file", 1).expect("put");
        assert!(matches!(put(&core, "/a/b", b"x", 2), Err(FileError::Conflict { .. })));
        assert!(matches!(core.mkdir("/a", 2), Err(FileError::Conflict { .. })));
        assert!(matches!(core.mkdir("/a/b", 2), Err(FileError::Conflict { .. })));
        core.mkdir("/dir", 3).expect("mkdir");
        assert!(matches!(put(&core, "/dir", b"x", 4), Err(FileError::Conflict { .. })));
    }

    #[test]
    fn mkdir_makes_empty_directories_and_is_idempotent() {
        let core = core();
        assert!(core.mkdir("/x/y", 1).expect("mkdir"));
        assert!(!core.mkdir("/x/y", 2).expect("again"));
        assert_eq!(names(&core, "/x"), ["y"]);
        assert!(names(&core, "/x/y").is_empty());
    }

    #[test]
    fn rmdir_refuses_a_non_empty_directory_unless_recursive() {
        let core = core();
        put(&core, "/t/a/1", b"1", 1).expect("put");
        put(&core, "/t/a/b/2", b"2", 2).expect("put");
        core.mkdir("/t/empty", 3).expect("mkdir");
        assert!(matches!(core.rmdir("/t", false, 4), Err(FileError::NotEmpty(_))));
        assert_eq!(core.rmdir("/t/empty", false, 4).expect("rmdir"), 0);
        assert_eq!(core.rmdir("/t", true, 5).expect("rmdir -r"), 2);
        assert!(matches!(core.stat("/t/a/b/2"), Err(FileError::NotFound(_))));
        assert!(matches!(core.list("/t"), Err(FileError::NotFound(_))));
        assert!(names(&core, "/").is_empty());
        assert!(matches!(core.rmdir("/t", true, 6), Err(FileError::NotFound(_))));
        assert!(matches!(core.rmdir("/", true, 6), Err(FileError::Conflict { .. })));
        // The name is free again, for a file or a directory.
        put(&core, "/t", b"now a file", 7).expect("put");
    }

    #[test]
    fn a_corrupt_block_is_reported_never_served() {
        let store = Arc::new(MemStore::new(1 << 20));
        let core = FileCore::new(store.clone(), NodeId(1), BLOCK);
        let stat = put(&core, "/f", b"abcdefgh", 1).expect("put");
        store.corrupt_block(&stat.meta.blocks[1]);
        assert!(matches!(read(&core, "/f", None), Err(FileError::BlockUnavailable(_))));
        assert_eq!(read(&core, "/f", Some((0, 4))).expect("the intact block still reads"), b"abcd");
    }

    #[test]
    fn a_full_store_refuses_uploads_but_still_reads_and_deletes() {
        let core = FileCore::new(Arc::new(MemStore::new(8)), NodeId(1), BLOCK);
        put(&core, "/fits", b"12345678", 1).expect("put");
        assert!(matches!(put(&core, "/more", b"x", 2), Err(FileError::Store(StoreError::Full { .. }))));
        assert!(matches!(core.begin_upload("/more", Some(1)), Err(FileError::Store(StoreError::Full { .. }))));
        assert_eq!(read(&core, "/fits", None).expect("read"), b"12345678");
        core.delete("/fits", 3).expect("delete");
    }

    #[test]
    fn a_file_and_a_directory_racing_for_one_name_never_both_win() {
        for _ in 0..200 {
            let core = Arc::new(core());
            // Both uploads pass their early checks before either commits.
            let file = prepared(&core, "/a", b"file").expect("prepare");
            let child = prepared(&core, "/a/b", b"child").expect("prepare");
            let (first, second) = std::thread::scope(|scope| {
                let a = scope.spawn(|| core.commit_upload(file, None, 1));
                let b = scope.spawn(|| core.commit_upload(child, None, 1));
                (a.join().expect("join"), b.join().expect("join"))
            });
            assert!(first.is_ok() != second.is_ok(), "exactly one wins: {first:?} / {second:?}");
        }
    }

    /// An upload whose blocks are stored, ready to commit. The body arrives in uneven pieces,
    /// as a network would deliver it.
    fn prepared(core: &FileCore<MemStore>, path: &str, content: &[u8]) -> Result<Upload, FileError> {
        let mut upload = core.begin_upload(path, None)?;
        let mut blocks = Vec::new();
        for piece in content.chunks(3) {
            blocks.extend(upload.push(piece));
        }
        blocks.extend(upload.finish());
        for (index, block) in blocks {
            let hash = core.store_block(&block)?;
            upload.block_stored(index, hash);
        }
        Ok(upload)
    }

    #[test]
    fn invalid_paths_are_refused_before_anything_is_stored() {
        let core = core();
        for bad in ["relative", "/a/../b", "/a//b", "/", "/nul\0"] {
            assert!(matches!(core.begin_upload(bad, None), Err(FileError::InvalidPath(_))), "{bad:?}");
        }
        assert!(matches!(core.mkdir("/a/./b", 1), Err(FileError::InvalidPath(_))));
        assert!(matches!(core.list("//"), Err(FileError::InvalidPath(_))));
    }
}
