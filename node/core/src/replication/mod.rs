//! Replication (docs/ARCHITECTURE.md §5, §6): who owns a key, what coordinators and replicas say to
//! each other, and the quorum operations built from those messages. Sans-IO: operations queue
//! requests and take replies; the tokio driver and the simulator carry them.

pub mod coordinator;
pub mod digests;
pub mod drain;
pub mod local;
pub mod messages;
pub mod placement;
pub mod quorum;
pub mod replica;
pub mod settle;
pub mod sync;

pub use coordinator::{Coordinator, FileOp, FileOutcome};
pub use digests::PartitionSet;
pub use drain::{DrainOutcome, DrainSession};
pub use local::LocalCluster;
pub use messages::{
    BlockRpc, Exchanged, PartitionOwners, RecordKey, RecordRpc, RecordValue, Refusal, Reply, Request, RpcError, SyncRpc,
};
pub use placement::{
    ClusterMemory, Findings, KnownMember, Placement, PlacementTracker, Quorum, Settling, Sources, partition_of,
};
pub use quorum::{FetchBlock, Op, Outgoing, QuorumFailure, ReadKeys, WriteQuorum};
pub use settle::{LearnReport, LearnSets, SettleCheck, SettleReport};
pub use sync::{SyncProgress, SyncReport, SyncSession};

#[cfg(test)]
mod tests;
