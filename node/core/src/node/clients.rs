//! The client pipelines: an upload writes its blocks (a bounded number in flight) and then
//! commits the file record; a read fetches the blocks of a plan in order with bounded
//! read-ahead; the other file operations are one coordinated [`FileOp`] each. A client holds
//! a typed [`Client`] handle and takes its progress through it.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;

use bytes::Bytes;
use shoal_storage::{BlockHash, FileRecord, Store, Version};

use super::ops::{AnyOp, AnyOutput, Purpose};
use super::{ClientId, Event, NodeCore};
use crate::files::{FileError, FileStat, Listed, Piece, ReadPlan, Upload};
use crate::replication::{FileOp, FileOutcome, ReadKeys, RecordKey, RecordValue, coordinator};

/// A client operation's handle; `T` says what it answers.
#[derive(Debug)]
pub struct Client<T> {
    id: ClientId,
    kind: PhantomData<fn() -> T>,
}

impl<T> Client<T> {
    fn new(id: ClientId) -> Self {
        Client { id, kind: PhantomData }
    }

    /// The id [`NodeCore::poll_client`] names it by.
    pub fn id(&self) -> ClientId {
        self.id
    }
}

/// An upload ([`NodeCore::start_put`]); answers with the stored file.
#[derive(Debug)]
pub enum Put {}
/// A streamed read of a plan ([`NodeCore::start_read`]).
#[derive(Debug)]
pub enum Read {}
/// A deletion's tombstone version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted(pub Version);
/// Whether `mkdir` made a new directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Made(pub bool);
/// A directory's live children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing(pub Vec<Listed>);
/// How many files a directory removal deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed(pub u64);
/// A file record as a read quorum merged it, tombstones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRead(pub Option<FileRecord>);

/// What a finished client operation answered, before it is taken through its typed handle.
#[doc(hidden)]
pub enum Finished {
    File(FileOutcome),
    Record(Option<FileRecord>),
}

/// An answer a [`Client`] handle can take with [`NodeCore::take_answer`].
pub trait Answer: Sized {
    #[doc(hidden)]
    fn from_finished(finished: Finished) -> Option<Self>;
}

macro_rules! file_answer {
    ($type:ty, $pattern:pat => $value:expr) => {
        impl Answer for $type {
            fn from_finished(finished: Finished) -> Option<Self> {
                match finished {
                    Finished::File($pattern) => Some($value),
                    _ => None,
                }
            }
        }
    };
}

file_answer!(FileStat, FileOutcome::File(stat) => stat);
file_answer!(Deleted, FileOutcome::Deleted(version) => Deleted(version));
file_answer!(Made, FileOutcome::Made(created) => Made(created));
file_answer!(Listing, FileOutcome::Listing(listed) => Listing(listed));
file_answer!(Removed, FileOutcome::Removed(count) => Removed(count));

impl Answer for RecordRead {
    fn from_finished(finished: Finished) -> Option<Self> {
        match finished {
            Finished::Record(record) => Some(RecordRead(record)),
            Finished::File(_) => None,
        }
    }
}

/// Where an upload stands, for the client feeding it.
#[derive(Debug)]
pub enum PutProgress {
    /// It takes more content.
    Accepting,
    /// Too many blocks are in flight: wait for [`NodeCore::poll_client`] to name it.
    Busy,
    /// It is over: the stored file, or why not.
    Finished(Result<FileStat, FileError>),
}

pub(crate) enum ClientState {
    Put(PutState),
    /// A single coordinated operation and, once decided, its answer.
    Single(Option<Result<Finished, FileError>>),
    Read(ReadState),
}

pub(crate) struct PutState {
    /// `None` once committing or failed. (It carries a BLAKE3 hasher, kilobytes: boxed.)
    upload: Option<Box<Upload>>,
    declared: Option<BlockHash>,
    /// Block writes in flight, by block index, with the name of the block.
    writing: BTreeMap<usize, BlockHash>,
    ended: bool,
    answer: Option<Result<FileStat, FileError>>,
}

pub(crate) struct ReadState {
    pieces: Vec<Piece>,
    /// The next piece to start fetching and the next to hand out.
    next_start: usize,
    next_take: usize,
    fetched: BTreeMap<usize, Result<Bytes, FileError>>,
}

/// A piece of a read, as the reader takes it.
pub type ReadStep = Option<Result<Option<Bytes>, FileError>>;

impl<S: Store> NodeCore<S> {
    fn new_client(&mut self, state: ClientState) -> ClientId {
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.clients.insert(id, state);
        id
    }

    /// Forgets client `id` (it went away): its operations finish unobserved.
    pub fn abandon(&mut self, id: ClientId) {
        self.clients.remove(&id);
    }

    // ----- uploads -----------------------------------------------------------------------------

    /// Starts an upload to `raw_path`. `declared` is the content hash the client promised, if
    /// any: a mismatch fails the upload before anything becomes visible.
    pub fn start_put(
        &mut self,
        _now_us: u64,
        raw_path: &str,
        declared: Option<BlockHash>,
    ) -> Result<Client<Put>, FileError> {
        self.view.for_client()?;
        let upload = self.coordinator.begin_upload(raw_path)?;
        let state =
            PutState { upload: Some(Box::new(upload)), declared, writing: BTreeMap::new(), ended: false, answer: None };
        Ok(Client::new(self.new_client(ClientState::Put(state))))
    }

    /// Where upload `client` stands; a finished one is forgotten once this reports it.
    pub fn poll_put(&mut self, client: &Client<Put>) -> PutProgress {
        let limit = self.config.upload_blocks_in_flight_max;
        let Some(ClientState::Put(put)) = self.clients.get_mut(&client.id) else {
            return PutProgress::Finished(Err(FileError::Unavailable("the upload was abandoned".into())));
        };
        if let Some(answer) = put.answer.take() {
            self.clients.remove(&client.id);
            return PutProgress::Finished(answer);
        }
        if put.ended || put.writing.len() >= limit { PutProgress::Busy } else { PutProgress::Accepting }
    }

    /// More content of upload `client`; the blocks it completes go to their owners.
    pub fn push_put(&mut self, now_us: u64, client: &Client<Put>, data: &[u8]) {
        let Some(ClientState::Put(put)) = self.clients.get_mut(&client.id) else { return };
        let Some(upload) = put.upload.as_mut().filter(|_| !put.ended) else { return };
        let blocks = upload.push(data);
        self.write_blocks(now_us, client.id, blocks);
        self.settle(now_us);
    }

    /// The content of upload `client` is complete: once its blocks are stored, it commits.
    pub fn end_put(&mut self, now_us: u64, client: &Client<Put>) {
        let Some(ClientState::Put(put)) = self.clients.get_mut(&client.id) else { return };
        let Some(upload) = put.upload.as_mut().filter(|_| !put.ended) else { return };
        put.ended = true;
        let last: Vec<_> = upload.finish().into_iter().collect();
        self.write_blocks(now_us, client.id, last);
        self.commit_if_stored(now_us, client.id);
        self.settle(now_us);
    }

    fn write_blocks(&mut self, now_us: u64, id: ClientId, blocks: Vec<(usize, Bytes)>) {
        for (index, bytes) in blocks {
            let placement = self.view.placement();
            let (hash, write) = self.coordinator.put_block(&placement, bytes);
            if let Some(ClientState::Put(put)) = self.clients.get_mut(&id) {
                put.writing.insert(index, hash);
            }
            self.start_op(now_us, Purpose::Client { client: id, part: index }, AnyOp::Block(write));
        }
    }

    fn block_written(
        &mut self,
        now_us: u64,
        id: ClientId,
        index: usize,
        result: Result<(), crate::replication::QuorumFailure>,
    ) {
        let Some(ClientState::Put(put)) = self.clients.get_mut(&id) else { return };
        let Some(hash) = put.writing.remove(&index) else { return };
        let Some(upload) = put.upload.as_mut() else { return };
        match result {
            Ok(()) => {
                upload.block_stored(index, hash);
                self.commit_if_stored(now_us, id);
            }
            // Without all its blocks the record is never written: certainly no effect.
            Err(failure) => {
                put.upload = None;
                put.answer = Some(Err(coordinator::block_write_failed(failure)));
            }
        }
        self.wake_client(id);
    }

    fn commit_if_stored(&mut self, now_us: u64, id: ClientId) {
        let Some(ClientState::Put(put)) = self.clients.get_mut(&id) else { return };
        if !put.ended || !put.writing.is_empty() {
            return;
        }
        let Some(upload) = put.upload.take() else { return };
        // The record goes by the placement in force now, which may be newer than its blocks'.
        match self.coordinator.commit(self.view.placement(), *upload, put.declared) {
            Ok(op) => {
                self.start_op(now_us, Purpose::Client { client: id, part: 0 }, AnyOp::File(op));
            }
            Err(err) => {
                put.answer = Some(Err(err));
                self.wake_client(id);
            }
        }
    }

    // ----- single operations -------------------------------------------------------------------

    fn start_single(
        &mut self,
        now_us: u64,
        make: impl FnOnce(&NodeCore<S>, std::sync::Arc<crate::replication::Placement>) -> Result<AnyOp, FileError>,
    ) -> Result<ClientId, FileError> {
        let placement = self.view.for_client()?;
        let op = make(self, placement)?;
        let id = self.new_client(ClientState::Single(None));
        self.start_op(now_us, Purpose::Client { client: id, part: 0 }, op);
        self.settle(now_us);
        Ok(id)
    }

    fn start_file_op<T>(
        &mut self,
        now_us: u64,
        make: impl FnOnce(&NodeCore<S>, std::sync::Arc<crate::replication::Placement>) -> Result<FileOp, FileError>,
    ) -> Result<Client<T>, FileError> {
        self.start_single(now_us, |core, placement| make(core, placement).map(AnyOp::File)).map(Client::new)
    }

    /// Looks up the live file at `raw_path` (a read quorum of its owners).
    pub fn start_stat(&mut self, now_us: u64, raw_path: &str) -> Result<Client<FileStat>, FileError> {
        self.start_file_op(now_us, |core, placement| core.coordinator.stat(placement, raw_path))
    }

    /// Deletes the file at `raw_path`.
    pub fn start_delete(&mut self, now_us: u64, raw_path: &str) -> Result<Client<Deleted>, FileError> {
        self.start_file_op(now_us, |core, placement| core.coordinator.delete(placement, raw_path))
    }

    /// Makes the directory `raw_path` and its missing parents.
    pub fn start_mkdir(&mut self, now_us: u64, raw_path: &str) -> Result<Client<Made>, FileError> {
        self.start_file_op(now_us, |core, placement| core.coordinator.mkdir(placement, raw_path))
    }

    /// Lists the directory `raw_path`.
    pub fn start_list(&mut self, now_us: u64, raw_path: &str) -> Result<Client<Listing>, FileError> {
        self.start_file_op(now_us, |core, placement| core.coordinator.list(placement, raw_path))
    }

    /// Removes the directory `raw_path` (with everything under it if `recursive`).
    pub fn start_rmdir(&mut self, now_us: u64, raw_path: &str, recursive: bool) -> Result<Client<Removed>, FileError> {
        self.start_file_op(now_us, |core, placement| core.coordinator.rmdir(placement, raw_path, recursive))
    }

    /// Reads the file record at `path` from a read quorum, tombstones included: what an
    /// operator (or a checker) asks to see what the cluster holds.
    pub fn start_read_record(&mut self, now_us: u64, path: &str) -> Result<Client<RecordRead>, FileError> {
        let key = RecordKey::File(path.to_string());
        self.start_single(now_us, |_, placement| Ok(AnyOp::Read(ReadKeys::new(&placement, vec![key])))).map(Client::new)
    }

    /// The answer of a single operation once decided; it is forgotten once taken.
    pub fn take_answer<T: Answer>(&mut self, client: &Client<T>) -> Option<Result<T, FileError>> {
        let Some(ClientState::Single(answer)) = self.clients.get_mut(&client.id) else {
            return Some(Err(FileError::Unavailable("the operation was abandoned".into())));
        };
        let answer = answer.take()?;
        self.clients.remove(&client.id);
        Some(answer.map(|finished| T::from_finished(finished).expect("a client handle answers with its own kind")))
    }

    // ----- reads -------------------------------------------------------------------------------

    /// Streams the pieces of `plan` (planned from a [`start_stat`](NodeCore::start_stat)
    /// answer), fetching at most [`CoreConfig::download_blocks_ahead_max`] ahead of the reader.
    ///
    /// [`CoreConfig::download_blocks_ahead_max`]: super::CoreConfig::download_blocks_ahead_max
    pub fn start_read(&mut self, now_us: u64, plan: ReadPlan) -> Result<Client<Read>, FileError> {
        self.view.for_client()?;
        let state = ReadState { pieces: plan.pieces, next_start: 0, next_take: 0, fetched: BTreeMap::new() };
        let id = self.new_client(ClientState::Read(state));
        self.fetch_ahead(now_us, id);
        self.settle(now_us);
        Ok(Client::new(id))
    }

    /// The next piece of read `client`: `None` while it is on its way, `Some(Ok(None))` at
    /// the end. After an error or the end the read is forgotten.
    pub fn take_piece(&mut self, now_us: u64, client: &Client<Read>) -> ReadStep {
        let Some(ClientState::Read(read)) = self.clients.get_mut(&client.id) else {
            return Some(Err(FileError::Unavailable("the read was abandoned".into())));
        };
        if read.next_take == read.pieces.len() {
            self.clients.remove(&client.id);
            return Some(Ok(None));
        }
        let piece = read.fetched.remove(&read.next_take)?;
        read.next_take += 1;
        if piece.is_err() {
            self.clients.remove(&client.id);
            return Some(piece.map(Some));
        }
        self.fetch_ahead(now_us, client.id);
        self.settle(now_us);
        Some(piece.map(Some))
    }

    fn fetch_ahead(&mut self, now_us: u64, id: ClientId) {
        let ahead = self.config.download_blocks_ahead_max;
        let mut starts = VecDeque::new();
        if let Some(ClientState::Read(read)) = self.clients.get_mut(&id) {
            while read.next_start < read.pieces.len() && read.next_start - read.next_take < ahead {
                starts.push_back((read.next_start, read.pieces[read.next_start].block));
                read.next_start += 1;
            }
            if read.next_take == read.pieces.len() {
                self.wake_client(id);
            }
        }
        for (part, hash) in starts {
            let fetch = self.coordinator.fetch_block(&self.view.placement(), hash);
            self.start_op(now_us, Purpose::Client { client: id, part }, AnyOp::Fetch(fetch));
        }
    }

    fn piece_fetched(&mut self, id: ClientId, part: usize, result: Result<Bytes, crate::replication::QuorumFailure>) {
        let Some(ClientState::Read(read)) = self.clients.get_mut(&id) else { return };
        let piece = read.pieces[part].clone();
        let sliced = match result {
            Ok(block) if piece.offset + piece.len <= block.len() => {
                Ok(block.slice(piece.offset..piece.offset + piece.len))
            }
            Ok(_) => Err(FileError::BlockUnavailable(piece.block)),
            Err(failure) => {
                tracing::warn!(block = %piece.block, detail = %failure.detail, "no owner served a verified copy");
                Err(FileError::BlockUnavailable(piece.block))
            }
        };
        if sliced.is_err() {
            self.out.events.push_back(Event::BlockUnavailable(piece.block));
        }
        read.fetched.insert(part, sliced);
        self.wake_client(id);
    }

    // ----- outcomes ----------------------------------------------------------------------------

    /// What an operation's outcome means for client `id`.
    pub(crate) fn client_progress(&mut self, now_us: u64, id: ClientId, part: usize, outcome: AnyOutput) {
        let answer = match outcome {
            AnyOutput::Block(result) => return self.block_written(now_us, id, part, result),
            AnyOutput::Fetch(result) => return self.piece_fetched(id, part, result),
            AnyOutput::File(result) => result.map(Finished::File),
            AnyOutput::Read(result) => match result {
                Ok(values) => match values.into_iter().next() {
                    Some(RecordValue::File(record)) => Ok(Finished::Record(record)),
                    // A peer answered a file key with another kind of value.
                    other => Err(FileError::Unavailable(format!("a file record read answered {other:?}"))),
                },
                Err(failure) => Err(FileError::Unavailable(failure.detail)),
            },
            AnyOutput::Settle(_) | AnyOutput::Learn(_) | AnyOutput::Sync(_) | AnyOutput::Drain(_) => {
                panic!("a client operation answered with a report")
            }
        };
        if matches!(answer, Err(FileError::InDoubt(_))) {
            self.out.events.push_back(Event::WriteInDoubt);
        }
        match self.clients.get_mut(&id) {
            Some(ClientState::Single(slot)) => *slot = Some(answer),
            Some(ClientState::Put(put)) => {
                put.answer = Some(answer.map(|finished| match finished {
                    Finished::File(FileOutcome::File(stat)) => stat,
                    _ => panic!("a commit answers with its file"),
                }))
            }
            _ => return,
        }
        self.wake_client(id);
    }
}
