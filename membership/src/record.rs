//! Member records: what the cluster knows about a member beyond liveness, spread as versioned
//! foca custom broadcasts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::NodeIdentity;
use crate::codec::{CodecError, decode_exact};

/// A member's own account of where it stands; SWIM's alive/suspect/down come from probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordStatus {
    /// Serving.
    Active,
    /// Decommission in progress.
    Leaving,
    /// Left the cluster on purpose.
    Left,
}

/// A member's record. A newer `(generation, version)` replaces an older one; a restarted
/// member starts a new generation at version 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Whose record.
    pub node_id: u128,
    /// The run of the node that wrote it.
    pub generation: u64,
    /// Bumped by the member on every change within a generation.
    pub version: u64,
    /// Failure domain (rack, room, region); replicas spread over distinct zones.
    pub zone: String,
    /// Bytes the member offers.
    pub capacity_bytes: u64,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// RPC address (TCP, same port number as gossip).
    pub rpc_addr: SocketAddr,
    /// Active, leaving or left.
    pub status: RecordStatus,
    /// Bytes stored.
    pub disk_used_bytes: u64,
}

impl MemberRecord {
    fn order(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// Whether this record replaces `other` (same member, newer).
    pub fn supersedes(&self, other: &MemberRecord) -> bool {
        self.node_id == other.node_id && self.order() > other.order()
    }
}

/// The dissemination key of a record: foca keeps only the newest per member in its backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordKey {
    node_id: u128,
    generation: u64,
    version: u64,
}

impl foca::Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_id == other.node_id && (self.generation, self.version) >= (other.generation, other.version)
    }
}

/// Every record this member knows, shared between foca's broadcast handler and the
/// [`Membership`](crate::Membership) that owns foca.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecordBook {
    inner: Arc<Mutex<BTreeMap<u128, MemberRecord>>>,
    /// Records accepted so far: tells the membership that its view changed.
    accepted: Arc<std::sync::atomic::AtomicU64>,
}

impl RecordBook {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<u128, MemberRecord>> {
        // Only whole-value inserts happen under the lock, so a poisoned map is still valid.
        self.inner.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Keeps `record` if it is new information; says whether it was.
    pub(crate) fn offer(&self, record: MemberRecord) -> bool {
        let mut records = self.lock();
        match records.get(&record.node_id) {
            Some(known) if !record.supersedes(known) => false,
            _ => {
                records.insert(record.node_id, record);
                self.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
        }
    }

    /// How many records were accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl foca::BroadcastHandler<NodeIdentity> for RecordBook {
    type Key = RecordKey;
    type Error = CodecError;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&NodeIdentity>) -> Result<Option<RecordKey>, CodecError> {
        let record: MemberRecord = decode_exact(data)?;
        let key = RecordKey { node_id: record.node_id, generation: record.generation, version: record.version };
        // Only new information is re-broadcast; stale or repeated records stop here.
        Ok(self.offer(record).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use foca::{BroadcastHandler, Invalidates};

    use super::*;
    use crate::codec::encode;

    fn record(generation: u64, version: u64) -> MemberRecord {
        MemberRecord {
            node_id: 1,
            generation,
            version,
            zone: "a".into(),
            capacity_bytes: 1,
            http_addr: "127.0.0.1:1".parse().expect("addr"),
            rpc_addr: "127.0.0.1:2".parse().expect("addr"),
            status: RecordStatus::Active,
            disk_used_bytes: 0,
        }
    }

    #[test]
    fn only_newer_records_are_kept_and_rebroadcast() {
        let mut book = RecordBook::default();
        let fresh = |r: &MemberRecord| encode(r).expect("encode");
        assert!(book.receive_item(&fresh(&record(1, 1)), None).expect("decode").is_some());
        assert!(book.receive_item(&fresh(&record(1, 1)), None).expect("decode").is_none(), "a repeat stops here");
        assert!(book.receive_item(&fresh(&record(1, 0)), None).expect("decode").is_none(), "an older one too");
        assert!(book.receive_item(&fresh(&record(2, 0)), None).expect("decode").is_some(), "a new generation wins");
        assert_eq!(book.lock()[&1].generation, 2);
        assert!(book.receive_item(b"garbage", None).is_err());
    }

    #[test]
    fn a_newer_key_invalidates_an_older_one_of_the_same_member_only() {
        let key = |node_id, generation, version| RecordKey { node_id, generation, version };
        assert!(key(1, 2, 0).invalidates(&key(1, 1, 9)));
        assert!(!key(1, 1, 0).invalidates(&key(1, 1, 1)));
        assert!(!key(2, 9, 9).invalidates(&key(1, 1, 1)));
    }

    #[test]
    fn a_record_fits_many_times_in_a_packet() {
        let mut long = record(u64::MAX, u64::MAX);
        long.zone = "z".repeat(crate::config::ZONE_BYTES_MAX);
        long.http_addr = "[2001:db8::1]:65535".parse().expect("addr");
        long.rpc_addr = long.http_addr;
        assert!(encode(&long).expect("encode").len() < 200);
    }
}
