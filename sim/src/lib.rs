//! The deterministic simulator (ARCHITECTURE §10): many membership cores in one process, a
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
//! Time comes from the event queue and randomness from the seed: nothing here reads the wall
//! clock or a global RNG (`clippy.toml` enforces it).
#![forbid(unsafe_code)]

mod check;
mod config;
pub mod measure;
pub mod scenario;
mod sim;

pub use check::CheckFailure;
pub use config::{NetworkConfig, SimConfig, seed_from_env};
pub use scenario::{Scenario, ScenarioOptions, Summary};
pub use sim::{FalseDown, NodeStatus, Sim, SimStats, TraceHash, node_addr};
