//! The sans-IO core of a Shoal node: every protocol decision, with no sockets, no clock reads
//! and no task spawning (docs/ARCHITECTURE.md §2). Time comes in as `now_us` arguments;
//! storage is reached through the synchronous [`Store`](shoal_storage::Store) trait, on a
//! thread the caller chooses. The tokio driver (`shoal-node`) and the simulator (`shoal-sim`)
//! both drive this crate and nothing else of each other.
#![forbid(unsafe_code)]

pub mod chunker;
pub mod files;
pub mod hlc;
pub mod node;
pub mod path;
pub mod replication;
pub mod wire;

/// Smallest block size accepted: below this, per-block overhead dominates.
pub const BLOCK_SIZE_BYTES_MIN: u32 = 4 * 1024;
/// Largest block size accepted: a block is held in memory whole while it is hashed and stored.
pub const BLOCK_SIZE_BYTES_MAX: u32 = 64 * 1024 * 1024;
