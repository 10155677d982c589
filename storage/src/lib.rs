//! Local storage for a Shoal node (docs/ARCHITECTURE.md §1, §3).
//!
//! One narrow [`Store`] trait and two backends that pass one conformance suite
//! (`storage/tests/conformance.rs`):
//!
//! - [`FjallStore`], the durable backend: records and small blocks in fjall keyspaces, large
//!   blocks as content-addressed files beside them, fsyncs shared between concurrent writers
//!   (group commit, [`GroupCommit`]).
//! - [`MemStore`], the simulator's backend: everything in memory, with a crash model in which
//!   writes that were not yet synced are lost ([`MemStore::crash`]).
//!
//! What is stored: immutable blocks named by their BLAKE3 hash and verified on every read,
//! file records and directory records. Records are state-based CRDTs: every write is a
//! [`merge`](FileRecord::merge) that is commutative, associative and idempotent, so
//! replication, read repair and anti-entropy can all just merge.
#![forbid(unsafe_code)]

mod block;
mod digest;
mod error;
mod fjall_digests;
mod fjall_store;
mod group_commit;
mod mem_store;
mod record;
mod store;

pub use block::BlockHash;
pub use digest::{CACHE_BITS, DIRECTORY_BITS, Digest, DigestEntry, DigestKind, EntryKey, Prefix, position};
pub use error::StoreError;
pub use fjall_store::{FjallStore, FjallStoreConfig};
pub use group_commit::GroupCommit;
pub use mem_store::MemStore;
pub use record::{DirEntry, DirRecord, EntryKind, FileMeta, FileRecord, Merge, NodeId, Version};
pub use store::{RecordUpdate, Store, Usage};
