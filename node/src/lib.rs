//! The Shoal node: the sans-IO core, the tokio driver with its HTTP API, the HTTP client, and
//! the `shoal` command line (docs/ARCHITECTURE.md §1).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster_status;
pub mod config;
pub mod dev;
pub mod driver;

/// The sans-IO core, its own crate so the simulator builds without the driver.
pub use shoal_core as core;
pub use shoal_core::wire;
