//! The sans-IO core of a node: protocol and file logic with no sockets, no clock reads and no
//! task spawning (ARCHITECTURE §2). Time comes in as `now_us` arguments; storage is reached
//! through the synchronous [`Store`](shoal_storage::Store) trait, so callers run the core off
//! the async runtime.

pub mod chunker;
pub mod files;
pub mod hlc;
pub mod path;
pub mod replication;
