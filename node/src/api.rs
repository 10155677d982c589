//! The JSON bodies of the HTTP API (docs/ARCHITECTURE.md §9), shared by the server and the client.

use serde::{Deserialize, Serialize};

/// Header carrying a file's BLAKE3 content hash (hex), on PUT (checked) and on GET/HEAD.
pub const HEADER_BLAKE3: &str = "x-shoal-blake3";
/// Header carrying a file's version on GET/HEAD: `<hlc>-<node id>`.
pub const HEADER_VERSION: &str = "x-shoal-version";

/// Every error: `{"error": "..."}` with a fitting status code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub error: String,
}

/// A stored file, as PUT answers and as HEAD's headers describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's path.
    pub path: String,
    /// Content length in bytes.
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// The version, `<hlc>-<node id>`.
    pub version: String,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// `GET /v1/dirs/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// The directory listed.
    pub path: String,
    /// Its children, sorted by name.
    pub entries: Vec<DirListingEntry>,
}

/// One child in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListingEntry {
    /// The child's name.
    pub name: String,
    /// `file` or `dir`.
    pub kind: String,
    /// Bytes (0 for directories).
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// `PUT /v1/dirs/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkdirResult {
    /// The directory.
    pub path: String,
    /// Whether it was made now (`false`: it existed).
    pub created: bool,
}

/// `DELETE /v1/files/{path}` and `DELETE /v1/dirs/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// What was deleted.
    pub path: String,
    /// Files deleted (1 for a file; everything below for a recursive directory removal).
    pub files_deleted: u64,
}

/// `GET /v1/status`: the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The answering node.
    pub node_id: String,
    /// Shoal's version.
    pub shoal_version: String,
    /// Replication factor and quorums in force.
    pub replication: Replication,
    /// Every member this node knows, itself included.
    pub members: Vec<Member>,
    /// Partitions whose owners changed in this node's ring without anti-entropy having
    /// confirmed yet that the new owners hold what the previous ones did: reads and writes
    /// there still need the previous owners too. 0 in a settled cluster.
    #[serde(default)]
    pub settling_partitions: u64,
    /// Why this node does not coordinate client requests now (not joined yet, fewer than a
    /// strict majority of its members in sight, or learning where the others place data);
    /// absent when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_coordinating: Option<String>,
    /// This node's account of durability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
    /// Every node's account added up (filled by `shoal status`, which asks each member; a
    /// node's own `/v1/status` leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_durability: Option<ClusterDurability>,
}

/// One node's account of durability (docs/ARCHITECTURE.md §7). A partition is counted by the
/// first of its current owners that this node sees alive, so adding up every node's account
/// counts each partition once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durability {
    /// Partitions this node answers for.
    pub partitions: u64,
    /// Of those, the ones whose N current owners anti-entropy confirmed recently to hold
    /// the same.
    pub full: u64,
    /// The ones with fewer confirmed copies.
    pub fewer: u64,
    /// Partitions this node holds extra copies of (it no longer owns them), to hand over
    /// and drop.
    pub extra: u64,
    /// Entries (records and blocks) found different and not yet repaired.
    pub backlog_entries: u64,
    /// Estimated bytes of that backlog (blocks at the configured block size).
    pub backlog_bytes: u64,
    /// Entries repaired since the node started.
    pub repaired_entries: u64,
    /// Block bytes copied by repair since the node started.
    pub repaired_bytes: u64,
    /// Entries repaired per second, over about the last minute.
    pub rate_entries_per_sec: f64,
    /// Block bytes copied per second, over about the last minute.
    pub rate_bytes_per_sec: f64,
    /// Seconds until the known backlog is repaired at that rate; absent when it cannot be
    /// told (short of copies with nothing being repaired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
    /// Partitions whose reads this node refuses until it has refilled the store it lost
    /// (its disk was wiped or replaced) from the other owners.
    #[serde(default)]
    pub refilling: u64,
}

/// Every node's account added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterDurability {
    /// The sum (the ETA is the longest of the nodes').
    pub total: Durability,
    /// Partitions no node that answered accounted for (no owner alive, or it did not answer).
    pub unaccounted: u64,
    /// Each member asked, by node id, with its account if it answered.
    pub nodes: Vec<(String, Option<Durability>)>,
}

impl Durability {
    /// Adds another node's account to this one.
    pub fn add(&mut self, other: &Durability) {
        // Saturating: the figures come from other nodes' answers.
        self.partitions = self.partitions.saturating_add(other.partitions);
        self.full = self.full.saturating_add(other.full);
        self.fewer = self.fewer.saturating_add(other.fewer);
        self.extra = self.extra.saturating_add(other.extra);
        self.refilling = self.refilling.saturating_add(other.refilling);
        self.backlog_entries = self.backlog_entries.saturating_add(other.backlog_entries);
        self.backlog_bytes = self.backlog_bytes.saturating_add(other.backlog_bytes);
        self.repaired_entries = self.repaired_entries.saturating_add(other.repaired_entries);
        self.repaired_bytes = self.repaired_bytes.saturating_add(other.repaired_bytes);
        self.rate_entries_per_sec += other.rate_entries_per_sec;
        self.rate_bytes_per_sec += other.rate_bytes_per_sec;
        self.eta_secs = match (self.eta_secs, other.eta_secs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
}

/// N, W and R.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// Copies of every block and record.
    pub n: u32,
    /// Owners that must make a write durable before it is acknowledged.
    pub w: u32,
    /// Owners a read consults.
    pub r: u32,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Full node id (32 hex digits).
    pub node_id: String,
    /// HTTP API address (empty until the member's record arrived).
    pub http_addr: String,
    /// Cluster (gossip and RPC) address.
    pub cluster_addr: String,
    /// Failure domain.
    pub zone: String,
    /// `alive`, `suspect`, `down`, `leaving` or `left`.
    pub state: String,
    /// Percentage of the key space this member owns as primary in this node's ring (0 when
    /// it is not in the ring).
    #[serde(default)]
    pub ring_share_percent: f64,
    /// Which run of the node this is; goes up on every restart.
    pub generation: u64,
    /// Bytes the member offers.
    pub capacity_bytes: u64,
    /// Bytes of data stored.
    pub disk_used_bytes: u64,
    /// Milliseconds since this node saw the member enter its current state.
    pub state_age_ms: u64,
}
