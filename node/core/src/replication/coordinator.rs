//! File operations coordinated across the owners (docs/ARCHITECTURE.md §6): any node coordinates any
//! request. Each operation is an [`Op`] built from quorum reads and writes: read what the
//! change depends on (so its version is newer than everything it replaces, whatever the
//! clocks say), check it, write it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_storage::{BlockHash, DirEntry, DirRecord, EntryKind, FileMeta, FileRecord, NodeId, RecordUpdate, Version};

use super::messages::{RecordKey, RecordValue, Reply, RpcError};
use super::placement::Placement;
use super::quorum::{FetchBlock, Op, Outgoing, QuorumFailure, ReadKeys, WriteQuorum};
use crate::files::{FileError, FileStat, Listed, Upload};
use crate::hlc::Hlc;
use crate::path::ShoalPath;

/// What every operation coordinated by one node shares: its id, its clock, its block size.
#[derive(Debug)]
pub struct Coordinator {
    node: NodeId,
    block_size: u32,
    hlc: Mutex<Hlc>,
}

impl Coordinator {
    /// The coordinator of node `node`, cutting files into `block_size` blocks.
    pub fn new(node: NodeId, block_size: u32) -> Arc<Coordinator> {
        assert!(block_size > 0, "block size must be positive");
        Arc::new(Coordinator { node, block_size, hlc: Mutex::new(Hlc::new()) })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Starts an upload to `raw_path`. The tree is checked when it commits.
    pub fn begin_upload(&self, raw_path: &str) -> Result<Upload, FileError> {
        Ok(Upload::new(ShoalPath::parse_file(raw_path)?, self.block_size))
    }

    /// Stores one block of an upload on its owners: its name and the write.
    pub fn put_block(&self, placement: &Placement, bytes: Bytes) -> (BlockHash, WriteQuorum) {
        let hash = BlockHash::of(&bytes);
        (hash, WriteQuorum::block(placement, hash, bytes))
    }

    /// Makes an upload whose blocks are all stored visible: checks the declared content hash,
    /// then reads the path's lineage and writes the file record and directory entries.
    pub fn commit(
        self: &Arc<Self>,
        placement: Arc<Placement>,
        upload: Upload,
        declared: Option<BlockHash>,
    ) -> Result<FileOp, FileError> {
        let (path, meta) = upload.finish_meta()?;
        if let Some(declared) = declared
            && declared != meta.content_hash
        {
            return Err(FileError::HashMismatch { declared, received: meta.content_hash });
        }
        let mut keys = lineage_keys(&path);
        keys.push(RecordKey::File(path.to_string()));
        Ok(FileOp::start(self.clone(), placement, Task::Commit { path, meta }, keys))
    }

    /// The live file at `raw_path`.
    pub fn stat(self: &Arc<Self>, placement: Arc<Placement>, raw_path: &str) -> Result<FileOp, FileError> {
        let path = ShoalPath::parse_file(raw_path)?;
        let keys = vec![RecordKey::File(path.to_string())];
        Ok(FileOp::start(self.clone(), placement, Task::Stat { path }, keys))
    }

    /// Deletes the file at `raw_path` (a tombstone).
    pub fn delete(self: &Arc<Self>, placement: Arc<Placement>, raw_path: &str) -> Result<FileOp, FileError> {
        let path = ShoalPath::parse_file(raw_path)?;
        let (parent, name) = path.split_parent().expect("a file path has a parent");
        let keys = vec![
            RecordKey::File(path.to_string()),
            RecordKey::Entry { dir: parent.to_string(), name: name.to_string() },
        ];
        Ok(FileOp::start(self.clone(), placement, Task::Delete { path }, keys))
    }

    /// Makes the directory `raw_path` and its missing parents.
    pub fn mkdir(self: &Arc<Self>, placement: Arc<Placement>, raw_path: &str) -> Result<FileOp, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        let keys = lineage_keys(&path);
        Ok(FileOp::start(self.clone(), placement, Task::Mkdir { path }, keys))
    }

    /// Lists the directory `raw_path`.
    pub fn list(self: &Arc<Self>, placement: Arc<Placement>, raw_path: &str) -> Result<FileOp, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        let keys = dir_keys(&path);
        Ok(FileOp::start(self.clone(), placement, Task::List { path }, keys))
    }

    /// Removes the directory `raw_path` (and everything under it if `recursive`).
    pub fn rmdir(
        self: &Arc<Self>,
        placement: Arc<Placement>,
        raw_path: &str,
        recursive: bool,
    ) -> Result<FileOp, FileError> {
        let path = ShoalPath::parse(raw_path)?;
        if path.is_root() {
            return Err(FileError::Conflict { path, reason: "the root cannot be removed".into() });
        }
        let keys = dir_keys(&path);
        let task = Task::Rmdir { path, recursive, walk: Walk::default() };
        Ok(FileOp::start(self.clone(), placement, task, keys))
    }

    /// Fetches a block from an owner with a verified copy.
    pub fn fetch_block(&self, placement: &Placement, hash: BlockHash) -> FetchBlock {
        FetchBlock::new(placement, hash)
    }

    /// A new version later than `now_us` and than every version in `seen`.
    fn next_version(&self, path: &ShoalPath, seen: &[Version], now_us: u64) -> Result<Version, FileError> {
        let mut hlc = self.hlc.lock().unwrap_or_else(|poison| poison.into_inner());
        for version in seen {
            hlc.observe(version.hlc);
        }
        let hlc = hlc.tick(now_us).ok_or_else(|| FileError::ClockExhausted(path.clone()))?;
        Ok(Version { hlc, node: self.node })
    }
}

/// The entry of every ancestor of `path` in its parent, and of `path` in its own.
fn lineage_keys(path: &ShoalPath) -> Vec<RecordKey> {
    path.lineage().into_iter().map(|(dir, name)| RecordKey::Entry { dir: dir.to_string(), name }).collect()
}

/// A directory's own entry (unless it is the root) and its children.
fn dir_keys(path: &ShoalPath) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    if let Some((parent, name)) = path.split_parent() {
        keys.push(RecordKey::Entry { dir: parent.to_string(), name: name.to_string() });
    }
    keys.push(RecordKey::Dir(path.to_string()));
    keys
}

/// What a [`FileOp`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// A committed or looked-up file.
    File(FileStat),
    /// A deletion's tombstone version.
    Deleted(Version),
    /// Whether `mkdir` made a new directory.
    Made(bool),
    /// A directory's live children.
    Listing(Vec<Listed>),
    /// How many files a directory removal deleted.
    Removed(u64),
}

/// The subtree a recursive removal has found so far.
#[derive(Debug, Default)]
struct Walk {
    seen: Vec<Version>,
    files: Vec<(ShoalPath, String)>,
    dirs: Vec<(ShoalPath, String)>,
    /// Directories whose listings the current read stage fetches.
    reading: Vec<ShoalPath>,
}

#[derive(Debug)]
enum Task {
    Commit { path: ShoalPath, meta: FileMeta },
    Stat { path: ShoalPath },
    Delete { path: ShoalPath },
    Mkdir { path: ShoalPath },
    List { path: ShoalPath },
    Rmdir { path: ShoalPath, recursive: bool, walk: Walk },
}

/// What a [`FileOp`] does after a read stage.
enum Next {
    /// Answer now.
    Done(Result<FileOutcome, FileError>),
    /// Read more keys.
    Read(Vec<RecordKey>),
    /// Write these updates, then answer with this.
    Write(Vec<RecordUpdate>, FileOutcome),
}

enum Stage {
    Read(ReadKeys),
    Write(WriteQuorum),
}

/// Bits of a token that belong to the stage's own token.
const STAGE_SHIFT: u32 = 40;

/// A file or directory operation: one or more read stages, then at most one write stage.
/// Stages keep running after the next one started (read repair), each in its own token space.
pub struct FileOp {
    coordinator: Arc<Coordinator>,
    placement: Arc<Placement>,
    task: Task,
    stages: Vec<Stage>,
    /// What the write stage answers once it is acknowledged.
    pending: Option<FileOutcome>,
    outcome: Option<Result<FileOutcome, FileError>>,
    decided: bool,
}

impl FileOp {
    fn start(coordinator: Arc<Coordinator>, placement: Arc<Placement>, task: Task, keys: Vec<RecordKey>) -> FileOp {
        let read = ReadKeys::new(&placement, keys);
        let mut op = FileOp {
            coordinator,
            placement,
            task,
            stages: vec![Stage::Read(read)],
            pending: None,
            outcome: None,
            decided: false,
        };
        // A read of no keys (`mkdir /`) is decided already; no operation that needs a clock
        // reading to go on reads no keys, so time 0 is never used for a version.
        op.advance(0, 0);
        op
    }

    fn finish(&mut self, outcome: Result<FileOutcome, FileError>) {
        self.decided = true;
        self.outcome = Some(outcome);
    }

    fn advance(&mut self, now_us: u64, index: usize) {
        if self.decided || index + 1 != self.stages.len() {
            return;
        }
        match &mut self.stages[index] {
            Stage::Read(read) => match read.poll_outcome() {
                None => {}
                Some(Err(failure)) => self.finish(Err(read_failed(failure))),
                Some(Ok(values)) => match self.after_read(now_us, values) {
                    Ok(Next::Done(outcome)) => self.finish(outcome),
                    Ok(Next::Read(keys)) => self.stages.push(Stage::Read(ReadKeys::new(&self.placement, keys))),
                    Ok(Next::Write(updates, outcome)) => {
                        self.pending = Some(outcome);
                        self.stages.push(Stage::Write(WriteQuorum::records(&self.placement, updates)));
                    }
                    Err(err) => self.finish(Err(err)),
                },
            },
            Stage::Write(write) => match write.poll_outcome() {
                None => {}
                Some(Ok(())) => {
                    let outcome = self.pending.take().expect("a write stage has its outcome");
                    self.finish(Ok(outcome));
                }
                Some(Err(failure)) => self.finish(Err(write_failed(failure))),
            },
        }
    }

    /// Decides what follows a read stage, from its merged values (in key order).
    fn after_read(&mut self, now_us: u64, values: Vec<RecordValue>) -> Result<Next, FileError> {
        let seen: Vec<Version> = values.iter().flat_map(RecordValue::versions).collect();
        let coordinator = self.coordinator.clone();
        match &mut self.task {
            Task::Stat { path } => Ok(Next::Done(match values.as_slice() {
                [RecordValue::File(Some(FileRecord { version, meta: Some(meta) }))] => {
                    Ok(FileOutcome::File(FileStat { path: path.clone(), version: *version, meta: meta.clone() }))
                }
                _ => Err(FileError::NotFound(path.clone())),
            })),
            Task::Commit { path, meta } => {
                let lineage = path.lineage();
                check_file_can_live_at(path, &lineage, &values[..lineage.len()])?;
                let version = coordinator.next_version(path, &seen, now_us)?;
                let mut updates =
                    vec![RecordUpdate::File(path.to_string(), FileRecord { version, meta: Some(meta.clone()) })];
                updates.extend(lineage_entries(path, version, EntryKind::File, meta.size));
                let stat = FileStat { path: path.clone(), version, meta: meta.clone() };
                Ok(Next::Write(updates, FileOutcome::File(stat)))
            }
            Task::Delete { path } => {
                let live = matches!(values.first(), Some(RecordValue::File(Some(record))) if !record.is_tombstone());
                if !live {
                    return Err(FileError::NotFound(path.clone()));
                }
                let version = coordinator.next_version(path, &seen, now_us)?;
                let (parent, name) = path.split_parent().expect("a file path has a parent");
                let updates = vec![
                    RecordUpdate::File(path.to_string(), FileRecord { version, meta: None }),
                    RecordUpdate::Dir(parent.to_string(), one_entry(name, version, EntryKind::File, true, 0)),
                ];
                Ok(Next::Write(updates, FileOutcome::Deleted(version)))
            }
            Task::Mkdir { path } => {
                if path.is_root() {
                    return Ok(Next::Done(Ok(FileOutcome::Made(false))));
                }
                for ((dir, name), value) in path.lineage().iter().zip(&values) {
                    let Some(entry) = live_entry(value) else { continue };
                    let child = dir.join(name);
                    if entry.kind == EntryKind::File {
                        let reason = format!("{child} is a file");
                        return Err(FileError::Conflict { path: path.clone(), reason });
                    }
                    if child == *path {
                        return Ok(Next::Done(Ok(FileOutcome::Made(false))));
                    }
                }
                let version = coordinator.next_version(path, &seen, now_us)?;
                // The directory exists through its entry in its parent.
                let updates = lineage_entries(path, version, EntryKind::Dir, 0).collect();
                Ok(Next::Write(updates, FileOutcome::Made(true)))
            }
            Task::List { path } => {
                let (own, listing) = split_dir_values(path, &values)?;
                let _ = own;
                let listing =
                    listing.live_children().map(|(name, entry)| Listed { name: name.clone(), entry: *entry }).collect();
                Ok(Next::Done(Ok(FileOutcome::Listing(listing))))
            }
            Task::Rmdir { path, recursive, walk } => {
                let listings: Vec<(ShoalPath, DirRecord)> = if walk.reading.is_empty() {
                    // The first stage: the directory's own entry and its listing.
                    let (own, listing) = split_dir_values(path, &values)?;
                    walk.seen.extend(own);
                    if !*recursive && listing.has_live_children() {
                        return Err(FileError::NotEmpty(path.clone()));
                    }
                    vec![(path.clone(), listing)]
                } else {
                    let dirs = std::mem::take(&mut walk.reading);
                    dirs.into_iter()
                        .zip(values)
                        .map(|(dir, value)| match value {
                            RecordValue::Dir(record) => (dir, record.unwrap_or_default()),
                            _ => (dir, DirRecord::default()),
                        })
                        .collect()
                };
                for (dir, listing) in listings {
                    for (child, entry) in listing.live_children() {
                        walk.seen.push(entry.version);
                        match entry.kind {
                            EntryKind::File => walk.files.push((dir.clone(), child.clone())),
                            EntryKind::Dir => {
                                walk.dirs.push((dir.clone(), child.clone()));
                                walk.reading.push(dir.join(child));
                            }
                        }
                    }
                }
                if !walk.reading.is_empty() {
                    let keys = walk.reading.iter().map(|dir| RecordKey::Dir(dir.to_string())).collect();
                    return Ok(Next::Read(keys));
                }
                let version = coordinator.next_version(path, &walk.seen, now_us)?;
                let (parent, name) = path.split_parent().expect("the root was refused");
                let mut updates =
                    vec![RecordUpdate::Dir(parent.to_string(), one_entry(name, version, EntryKind::Dir, true, 0))];
                for (dir, child) in &walk.dirs {
                    updates
                        .push(RecordUpdate::Dir(dir.to_string(), one_entry(child, version, EntryKind::Dir, true, 0)));
                }
                for (dir, child) in &walk.files {
                    updates
                        .push(RecordUpdate::Dir(dir.to_string(), one_entry(child, version, EntryKind::File, true, 0)));
                    updates.push(RecordUpdate::File(dir.join(child).to_string(), FileRecord { version, meta: None }));
                }
                Ok(Next::Write(updates, FileOutcome::Removed(walk.files.len() as u64)))
            }
        }
    }
}

impl Op for FileOp {
    type Output = Result<FileOutcome, FileError>;

    fn poll_request(&mut self) -> Option<Outgoing> {
        for (index, stage) in self.stages.iter_mut().enumerate() {
            let polled = match stage {
                Stage::Read(read) => read.poll_request(),
                Stage::Write(write) => write.poll_request(),
            };
            if let Some(mut outgoing) = polled {
                outgoing.token |= (index as u64) << STAGE_SHIFT;
                return Some(outgoing);
            }
        }
        None
    }

    fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        let index = (token >> STAGE_SHIFT) as usize;
        let inner = token & ((1 << STAGE_SHIFT) - 1);
        let Some(stage) = self.stages.get_mut(index) else { return };
        match stage {
            Stage::Read(read) => read.handle_reply(now_us, inner, reply),
            Stage::Write(write) => write.handle_reply(now_us, inner, reply),
        }
        self.advance(now_us, index);
    }

    fn poll_outcome(&mut self) -> Option<Self::Output> {
        self.outcome.take()
    }

    fn repairs_sent(&self) -> u64 {
        self.stages.iter().map(|stage| if let Stage::Read(read) = stage { read.repairs_sent() } else { 0 }).sum()
    }

    fn is_finished(&self) -> bool {
        self.decided
            && self.stages.iter().all(|stage| match stage {
                Stage::Read(read) => read.is_finished(),
                Stage::Write(write) => write.is_finished(),
            })
    }
}

fn read_failed(failure: QuorumFailure) -> FileError {
    FileError::Unavailable(failure.detail)
}

/// The error a failed block write of an upload is for the client. Never in doubt: no record
/// names the block yet, so whatever copies landed are invisible orphans and the file's write
/// certainly failed.
pub fn block_write_failed(failure: QuorumFailure) -> FileError {
    match write_failed(failure) {
        FileError::InDoubt(detail) => FileError::Unavailable(detail),
        other => other,
    }
}

/// The error a failed write quorum is for the client.
pub fn write_failed(failure: QuorumFailure) -> FileError {
    if failure.in_doubt {
        FileError::InDoubt(failure.detail)
    } else if failure.full {
        FileError::NoRoom(failure.detail)
    } else {
        FileError::Unavailable(failure.detail)
    }
}

fn live_entry(value: &RecordValue) -> Option<DirEntry> {
    match value {
        RecordValue::Entry(Some(entry)) if !entry.tombstone => Some(*entry),
        _ => None,
    }
}

/// Fails unless every proper ancestor of `path` is (or can implicitly become) a directory and
/// `path` itself is not a directory. `values` are the entries of `lineage`, in order.
fn check_file_can_live_at(
    path: &ShoalPath,
    lineage: &[(ShoalPath, String)],
    values: &[RecordValue],
) -> Result<(), FileError> {
    for ((dir, name), value) in lineage.iter().zip(values) {
        let Some(entry) = live_entry(value) else { continue };
        let child = dir.join(name);
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

/// Splits the answers of [`dir_keys`]: fails unless `path` is a live directory; returns its
/// entry's version (none for `/`) and its listing.
fn split_dir_values(path: &ShoalPath, values: &[RecordValue]) -> Result<(Option<Version>, DirRecord), FileError> {
    let (own, listing) = match values {
        [listing] => (None, listing),
        [own, listing] => match live_entry(own) {
            Some(entry) if entry.kind == EntryKind::Dir => (Some(entry.version), listing),
            Some(_) => {
                return Err(FileError::Conflict { path: path.clone(), reason: "it is a file, not a directory".into() });
            }
            None => return Err(FileError::NotFound(path.clone())),
        },
        _ => unreachable!("dir_keys reads one or two keys"),
    };
    let listing = match listing {
        RecordValue::Dir(record) => record.clone().unwrap_or_default(),
        _ => DirRecord::default(),
    };
    Ok((own, listing))
}

/// Directory entries that make every ancestor of `path` a live directory and `path` a live
/// `kind` child of its parent.
fn lineage_entries(
    path: &ShoalPath,
    version: Version,
    kind: EntryKind,
    size: u64,
) -> impl Iterator<Item = RecordUpdate> {
    let path = path.clone();
    path.lineage().into_iter().map(move |(dir, name)| {
        let (kind, size) = if dir.join(&name) == path { (kind, size) } else { (EntryKind::Dir, 0) };
        RecordUpdate::Dir(dir.to_string(), one_entry(&name, version, kind, false, size))
    })
}

fn one_entry(name: &str, version: Version, kind: EntryKind, tombstone: bool, size: u64) -> DirRecord {
    DirRecord { children: [(name.to_string(), DirEntry { version, kind, tombstone, size })].into() }
}
