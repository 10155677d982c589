//! What file operations take and give: errors, stats, listings, read plans and uploads. The
//! operations themselves are coordinated across replicas in
//! [`replication::coordinator`](super::replication::coordinator).

use bytes::Bytes;
use shoal_storage::{BlockHash, DirEntry, FileMeta, StoreError, Version};

use super::chunker::Chunker;
use super::path::{PathError, ShoalPath};

/// Why a file operation failed. Every variant leaves the store as it was, except where noted.
#[derive(Debug, thiserror::Error)]
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
    /// Too few owners answered: the operation certainly did not take effect (a write that
    /// might have is [`FileError::InDoubt`]).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The owners refused the write for lack of room; nothing was written.
    #[error("no room: {0}")]
    NoRoom(String),
    /// A write was not acknowledged by a write quorum but may have reached some owners (a
    /// timeout, a lost connection, fewer acknowledgements than needed): it may or may not
    /// become visible. Retrying it is safe.
    #[error("in doubt: {0}")]
    InDoubt(String),
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
/// Nothing becomes visible until the coordinator commits it ([`Coordinator::commit`](super::replication::Coordinator::commit)); dropping an upload (a client
/// that went away) leaves at most orphan blocks.
#[derive(Debug)]
pub struct Upload {
    path: ShoalPath,
    /// `None` once the content ended.
    chunker: Option<Chunker>,
    content: blake3::Hasher,
    size: u64,
    blocks: Vec<Option<BlockHash>>,
    block_size: u32,
}

impl Upload {
    /// An upload to `path` cut into blocks of `block_size` bytes.
    pub fn new(path: ShoalPath, block_size: u32) -> Upload {
        Upload {
            path,
            chunker: Some(Chunker::new(block_size as usize)),
            content: blake3::Hasher::new(),
            size: 0,
            blocks: Vec::new(),
            block_size,
        }
    }

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

    /// The path and the content's description, once every block handed out was stored.
    pub fn finish_meta(mut self) -> Result<(ShoalPath, FileMeta), FileError> {
        if let Some((index, _)) = self.finish() {
            // A caller bug: it must take the last block and store it before committing.
            panic!("block {index} of {} was never stored", self.path);
        }
        let blocks: Option<Vec<BlockHash>> = self.blocks.iter().copied().collect();
        let blocks = blocks.expect("every block stored before commit");
        let content_hash = BlockHash::from(self.content.finalize());
        Ok((self.path, FileMeta { size: self.size, content_hash, block_size: self.block_size, blocks }))
    }

    fn index(&mut self, block: Bytes) -> (usize, Bytes) {
        self.blocks.push(None);
        (self.blocks.len() - 1, block)
    }
}
