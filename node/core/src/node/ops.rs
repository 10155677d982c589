//! The operations a node runs, in one enum so the node can hold them side by side, and what
//! each works for.

use bytes::Bytes;

use crate::files::FileError;
use crate::replication::{
    DrainOutcome, DrainSession, FetchBlock, FileOp, FileOutcome, LearnReport, LearnSets, Op, Outgoing, QuorumFailure,
    ReadKeys, RecordValue, Reply, RpcError, SettleCheck, SettleReport, SyncReport, SyncSession, WriteQuorum,
};

use super::ClientId;

/// Names one operation a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OpId(pub(crate) u64);

/// What an operation works for: its outcome goes there.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// Part `part` of client operation `client` (the block, for block writes and fetches).
    Client { client: ClientId, part: usize },
    /// A look for evidence that settling partitions settled.
    Settle,
    /// Learning other members' owner sets before coordinating again.
    Learn,
    /// An anti-entropy exchange.
    Sync,
    /// A hand-over of this many partitions this node no longer owns.
    Drain { partitions: usize },
}

/// An operation in progress.
pub(crate) struct Running {
    pub(crate) purpose: Purpose,
    pub(crate) op: AnyOp,
}

/// Every kind of operation a node runs.
pub(crate) enum AnyOp {
    Block(WriteQuorum),
    Fetch(FetchBlock),
    File(FileOp),
    Read(ReadKeys),
    Settle(SettleCheck),
    Learn(LearnSets),
    Sync(Box<SyncSession>),
    Drain(Box<DrainSession>),
}

/// The outcome of an [`AnyOp`], of the matching kind.
pub(crate) enum AnyOutput {
    Block(Result<(), QuorumFailure>),
    Fetch(Result<Bytes, QuorumFailure>),
    File(Result<FileOutcome, FileError>),
    Read(Result<Vec<RecordValue>, QuorumFailure>),
    Settle(SettleReport),
    Learn(LearnReport),
    Sync(SyncReport),
    Drain(DrainOutcome),
}

impl AnyOp {
    pub(crate) fn poll_request(&mut self) -> Option<Outgoing> {
        match self {
            AnyOp::Block(op) => op.poll_request(),
            AnyOp::Fetch(op) => op.poll_request(),
            AnyOp::File(op) => op.poll_request(),
            AnyOp::Read(op) => op.poll_request(),
            AnyOp::Settle(op) => op.poll_request(),
            AnyOp::Learn(op) => op.poll_request(),
            AnyOp::Sync(op) => op.poll_request(),
            AnyOp::Drain(op) => op.poll_request(),
        }
    }

    pub(crate) fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        match self {
            AnyOp::Block(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Fetch(op) => op.handle_reply(now_us, token, reply),
            AnyOp::File(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Read(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Settle(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Learn(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Sync(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Drain(op) => op.handle_reply(now_us, token, reply),
        }
    }

    pub(crate) fn poll_outcome(&mut self) -> Option<AnyOutput> {
        match self {
            AnyOp::Block(op) => op.poll_outcome().map(AnyOutput::Block),
            AnyOp::Fetch(op) => op.poll_outcome().map(AnyOutput::Fetch),
            AnyOp::File(op) => op.poll_outcome().map(AnyOutput::File),
            AnyOp::Read(op) => op.poll_outcome().map(AnyOutput::Read),
            AnyOp::Settle(op) => op.poll_outcome().map(AnyOutput::Settle),
            AnyOp::Learn(op) => op.poll_outcome().map(AnyOutput::Learn),
            AnyOp::Sync(op) => op.poll_outcome().map(AnyOutput::Sync),
            AnyOp::Drain(op) => op.poll_outcome().map(AnyOutput::Drain),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        match self {
            AnyOp::Block(op) => op.is_finished(),
            AnyOp::Fetch(op) => op.is_finished(),
            AnyOp::File(op) => op.is_finished(),
            AnyOp::Read(op) => op.is_finished(),
            AnyOp::Settle(op) => op.is_finished(),
            AnyOp::Learn(op) => op.is_finished(),
            AnyOp::Sync(op) => op.is_finished(),
            AnyOp::Drain(op) => op.is_finished(),
        }
    }

    pub(crate) fn repairs_sent(&self) -> u64 {
        match self {
            AnyOp::Block(op) => op.repairs_sent(),
            AnyOp::Fetch(op) => op.repairs_sent(),
            AnyOp::File(op) => op.repairs_sent(),
            AnyOp::Read(op) => op.repairs_sent(),
            AnyOp::Settle(op) => op.repairs_sent(),
            AnyOp::Learn(op) => op.repairs_sent(),
            AnyOp::Sync(op) => op.repairs_sent(),
            AnyOp::Drain(op) => op.repairs_sent(),
        }
    }
}
