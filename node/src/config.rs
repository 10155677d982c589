//! The node's configuration: a TOML file (`shoal serve --config shoal.toml`), every key
//! overridable by a flag of the same name, validated at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_membership::Preset;

pub use shoal_core::{BLOCK_SIZE_BYTES_MAX, BLOCK_SIZE_BYTES_MIN};

/// Most bytes of blocks one upload may hold in memory.
pub const UPLOAD_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Settings of `shoal serve`. Each field's doc is its documentation in `shoal.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding this node's data: its id, the fjall database and the block files.
    /// Default `./shoal-data`.
    pub data_dir: PathBuf,
    /// Address of the HTTP API. Default `127.0.0.1:7700`.
    pub http_addr: SocketAddr,
    /// Address for cluster traffic (gossip over UDP, RPC over TCP, one port number). Reported
    /// in `shoal status`; peers reach this node here once clustering is on. Default
    /// `127.0.0.1:7701`.
    pub cluster_addr: SocketAddr,
    /// Files are cut into blocks of this many bytes (4 KiB to 64 MiB). Default 1 MiB.
    pub block_size_bytes: u32,
    /// Free disk space kept in reserve; uploads that would eat into it get `507`, deletes and
    /// reads keep working. Default 256 MiB.
    pub disk_reserve_bytes: u64,
    /// Most bytes this node stores, or absent for the whole disk.
    pub capacity_bytes: Option<u64>,
    /// fjall's block cache for records, in bytes. Default 64 MiB.
    pub cache_bytes: u64,
    /// Blocks of one upload being written at once: more overlaps network and disk, each costs
    /// one block of memory. 1 to 64, default 4.
    pub upload_blocks_in_flight_max: usize,
    /// Uploads served at once; more get `503` and may retry. Bounds the memory uploads take
    /// (each holds up to `upload_blocks_in_flight_max + 1` blocks). 1 to 4096, default 64.
    pub uploads_in_flight_max: usize,
    /// Blocks of one download read ahead of the client. 1 to 64, default 2.
    pub download_blocks_ahead_max: usize,
    /// Seconds that in-flight requests get to finish after SIGTERM before the node exits
    /// anyway. Default 30.
    pub shutdown_grace_secs: u64,
    /// Name of the cluster; gossip from a cluster with another name is dropped. Default
    /// `shoal`.
    pub cluster_name: String,
    /// Cluster addresses (`host:port`) of members to join through. Empty for the first node.
    /// The node keeps asking them until it has joined.
    pub seeds: Vec<String>,
    /// Gossip timing: `lan` (probe every 1 s), `wan` (every 5 s) or `local` (every 200 ms, for
    /// loopback clusters and tests). Default `lan`.
    pub gossip_preset: Preset,
    /// Failure domain of this node (rack, room, region). Default `default`.
    pub zone: String,
    /// Expected cluster size; scales gossip dissemination and suspicion timeouts. Default 16.
    pub expected_members: u32,
    /// Copies of every block and record (N). 1 to 16, default 3. A cluster with fewer members
    /// keeps one copy per member.
    pub replicas: usize,
    /// Owners that must make a write durable before it is acknowledged (W). 1 to N, default 2.
    /// With W + R > N a read that starts after a write was acknowledged sees it.
    pub write_quorum: usize,
    /// Owners whose answers a read merges (R). 1 to N, default 2.
    pub read_quorum: usize,
    /// Seconds a member SWIM declared down keeps its place in the ring before its ranges move
    /// to others: a flapping node or a short partition moves no data. Default 600.
    pub evict_after_secs: u64,
    /// Milliseconds a replica has to answer one request before it counts as timed out (a write
    /// without a quorum by then is *in doubt*). Default 5000.
    pub rpc_timeout_ms: u64,
    /// Requests in flight to one peer at most (one pooled connection each). 1 to 1024,
    /// default 64.
    pub rpc_in_flight_per_peer_max: usize,
    /// Bytes per second of blocks the anti-entropy exchanges this node runs may copy, so
    /// repair never starves clients (a second's worth may go at once). Default 134217728
    /// (128 MiB/s).
    pub repair_bytes_per_sec: u64,
    /// Block copies one exchange keeps in flight at most. 1 to 64, default 4.
    pub repair_transfers_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./shoal-data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 7701)),
            block_size_bytes: 1 << 20,
            disk_reserve_bytes: 256 << 20,
            capacity_bytes: None,
            cache_bytes: 64 << 20,
            upload_blocks_in_flight_max: 4,
            uploads_in_flight_max: 64,
            download_blocks_ahead_max: 2,
            shutdown_grace_secs: 30,
            cluster_name: "shoal".into(),
            seeds: Vec::new(),
            gossip_preset: Preset::Lan,
            zone: "default".into(),
            expected_members: 16,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            evict_after_secs: 600,
            rpc_timeout_ms: 5000,
            rpc_in_flight_per_peer_max: 64,
            repair_bytes_per_sec: 128 << 20,
            repair_transfers_max: 4,
        }
    }
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("config file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The key in `shoal.toml` (and the flag `--key-with-dashes`).
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl Config {
    /// Reads `path`; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if !(BLOCK_SIZE_BYTES_MIN..=BLOCK_SIZE_BYTES_MAX).contains(&self.block_size_bytes) {
            return invalid(
                "block_size_bytes",
                format!("{} is outside {BLOCK_SIZE_BYTES_MIN}..={BLOCK_SIZE_BYTES_MAX}", self.block_size_bytes),
            );
        }
        if self.http_addr == self.cluster_addr {
            return invalid("cluster_addr", format!("{} is also the HTTP address", self.cluster_addr));
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty".into());
        }
        if self.capacity_bytes == Some(0) {
            return invalid("capacity_bytes", "must be positive (leave it out for the whole disk)".into());
        }
        if !(1..=64).contains(&self.upload_blocks_in_flight_max) {
            return invalid(
                "upload_blocks_in_flight_max",
                format!("{} is outside 1..=64", self.upload_blocks_in_flight_max),
            );
        }
        if self.zone.is_empty() || self.zone.len() > shoal_membership::ZONE_BYTES_MAX {
            return invalid("zone", format!("must be 1 to {} bytes", shoal_membership::ZONE_BYTES_MAX));
        }
        if self.expected_members == 0 {
            return invalid("expected_members", "must be positive".into());
        }
        if let Err(err) = self.membership_config().validate() {
            return invalid("cluster_name", err.to_string());
        }
        for seed in &self.seeds {
            if seed.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return invalid("seeds", format!("{seed:?} is not host:port"));
            }
        }
        let upload_bytes = (self.upload_blocks_in_flight_max as u64 + 1) * u64::from(self.block_size_bytes);
        if upload_bytes > UPLOAD_BYTES_MAX {
            return invalid(
                "upload_blocks_in_flight_max",
                format!(
                    "one upload could hold {upload_bytes} bytes of blocks; keep (in flight + 1) × block size ≤ {UPLOAD_BYTES_MAX}"
                ),
            );
        }
        if !(1..=4096).contains(&self.uploads_in_flight_max) {
            return invalid("uploads_in_flight_max", format!("{} is outside 1..=4096", self.uploads_in_flight_max));
        }
        if self.cluster_addr.ip().is_unspecified() {
            return invalid(
                "cluster_addr",
                format!("{} is not an address peers can reach; give the interface's address", self.cluster_addr),
            );
        }
        if !(1..=64).contains(&self.download_blocks_ahead_max) {
            return invalid(
                "download_blocks_ahead_max",
                format!("{} is outside 1..=64", self.download_blocks_ahead_max),
            );
        }
        if !(1..=16).contains(&self.replicas) {
            return invalid("replicas", format!("{} is outside 1..=16", self.replicas));
        }
        if !(1..=self.replicas).contains(&self.write_quorum) {
            return invalid(
                "write_quorum",
                format!("{} is outside 1..={} (replicas)", self.write_quorum, self.replicas),
            );
        }
        if !(1..=self.replicas).contains(&self.read_quorum) {
            return invalid("read_quorum", format!("{} is outside 1..={} (replicas)", self.read_quorum, self.replicas));
        }
        if self.rpc_timeout_ms == 0 {
            return invalid("rpc_timeout_ms", "must be positive".into());
        }
        if !(1..=1024).contains(&self.rpc_in_flight_per_peer_max) {
            return invalid(
                "rpc_in_flight_per_peer_max",
                format!("{} is outside 1..=1024", self.rpc_in_flight_per_peer_max),
            );
        }
        if self.repair_bytes_per_sec == 0 {
            return invalid("repair_bytes_per_sec", "must be positive".into());
        }
        if !(1..=64).contains(&self.repair_transfers_max) {
            return invalid("repair_transfers_max", format!("{} is outside 1..=64", self.repair_transfers_max));
        }
        Ok(())
    }
}

impl Config {
    /// N, W and R.
    pub fn quorum(&self) -> crate::core::replication::Quorum {
        crate::core::replication::Quorum { n: self.replicas, w: self.write_quorum, r: self.read_quorum }
    }

    /// The node core's settings: these, and the core's defaults for the rest (hand-off
    /// batching and retry, how often the placement is re-evaluated).
    pub fn core_config(&self) -> shoal_core::node::CoreConfig {
        use std::time::Duration;
        shoal_core::node::CoreConfig {
            quorum: self.quorum(),
            block_size_bytes: self.block_size_bytes,
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
            evict_after: Duration::from_secs(self.evict_after_secs),
            upload_blocks_in_flight_max: self.upload_blocks_in_flight_max,
            download_blocks_ahead_max: self.download_blocks_ahead_max,
            repair_bytes_per_sec: self.repair_bytes_per_sec,
            repair_transfers_max: self.repair_transfers_max,
            ..shoal_core::node::CoreConfig::default()
        }
    }

    /// The membership settings this config describes.
    pub fn membership_config(&self) -> shoal_membership::MembershipConfig {
        let expected = std::num::NonZeroU32::new(self.expected_members).unwrap_or(std::num::NonZeroU32::MIN);
        shoal_membership::MembershipConfig::new(self.cluster_name.clone(), self.gossip_preset, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().expect("defaults");
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, "http_addr = \"127.0.0.1:9000\"\nblock_size_bytes = 65536\n").expect("write");
        let config = Config::from_file(&path).expect("parse");
        assert_eq!(config.http_addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(config.block_size_bytes, 65536);
        assert_eq!(config.cluster_addr, Config::default().cluster_addr);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, "http_adr = \"127.0.0.1:9000\"\n").expect("write");
        let err = Config::from_file(&path).expect_err("unknown key").to_string();
        assert!(err.contains("http_adr"), "{err}");

        let config = Config { block_size_bytes: 100, ..Config::default() };
        let err = config.validate().expect_err("too small").to_string();
        assert!(err.contains("block_size_bytes"), "{err}");
        let config = Config { cluster_addr: Config::default().http_addr, ..Config::default() };
        assert!(config.validate().is_err());
        let config = Config { cluster_addr: "0.0.0.0:7701".parse().expect("addr"), ..Config::default() };
        assert!(config.validate().expect_err("wildcard").to_string().contains("cluster_addr"));
        let config = Config { block_size_bytes: 64 << 20, upload_blocks_in_flight_max: 64, ..Config::default() };
        assert!(config.validate().expect_err("too much memory").to_string().contains("upload_blocks_in_flight_max"));
        let config = Config { seeds: vec!["no-port".into()], ..Config::default() };
        assert!(config.validate().expect_err("bad seed").to_string().contains("seeds"));
        let config = Config { cluster_name: String::new(), ..Config::default() };
        assert!(config.validate().is_err());
    }
}
