//! The deterministic simulator (docs/ARCHITECTURE.md §10): many membership cores in one process, a
//! virtual clock that jumps from event to event, a simulated network (latency, loss,
//! duplication, reordering, symmetric and one-way partitions) and crashes, restarts and
//! graceful leaves, all decided by one seed.
//!
//! The cores are the very [`shoal_membership::Membership`] the tokio driver runs: the
//! simulator feeds them datagrams and timers with a virtual `now` and carries out what they
//! queue. The same seed and the same calls give the same run, bit for bit
//! ([`Sim::trace_hash`]); every run prints `SEED=` and its parameters first, and every failed
//! check carries the command that replays it.
//!
//! ```no_run
//! use std::time::Duration;
//! use shoal_membership::MemberState;
//! use shoal_sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::new("example", 42, 20));
//! sim.start_all(Duration::from_millis(10));
//! assert!(sim.run_until(|sim| sim.is_converged(), Duration::from_secs(60)));
//! sim.crash(7);
//! sim.run_for(Duration::from_secs(30));
//! sim.assert_all_see(7, MemberState::Down);
//! ```
//!
//! With [`SimConfig::replication`] set, every node also runs the replication core of
//! `shoal-node` over a [`MemStore`](shoal_storage::MemStore) (crashes lose what was not
//! synced): the simulator carries its RPCs over the same network, clients PUT, GET and DELETE
//! files through any node ([`Workload`]), and the checkers read the [`History`] of what they
//! were told (no acknowledged write lost, read-after-write, later writes win, a minority
//! acknowledges nothing).
//!
//! Time comes from the event queue and randomness from the seed: nothing here reads the wall
//! clock or a global RNG (`clippy.toml` enforces it).
#![forbid(unsafe_code)]

mod check;
mod config;
pub mod history;
pub mod measure;
pub mod scenario;
mod sim;

pub use check::{CheckFailure, ReplicaReport};
pub use config::{NetworkConfig, ReplicationConfig, SimConfig, seed_from_env};
pub use history::{ClientKind, History, OpRecord, Outcome};
pub use scenario::{Scenario, ScenarioOptions, Summary};
pub use sim::{DataStats, FalseDown, NodeStatus, Sim, SimStats, TraceHash, Workload, node_addr, wall_clock_us};
