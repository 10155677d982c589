//! The Shoal node: the sans-IO core, the tokio driver with its HTTP API, the HTTP client, and
//! the `shoal` command line (ARCHITECTURE §1).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod dev;
pub mod driver;
pub mod wire;
