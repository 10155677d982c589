//! Hand-off after a ring change: a node gives what it holds to the members that became its
//! owners, so they have caught up by the time the transition ends and reads stop asking the
//! previous owners (docs/ARCHITECTURE.md §5). The driver walks the store in bounded batches and runs
//! one [`Handoff`] per batch; Merkle anti-entropy (§7) will make this incremental.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use shoal_storage::{BlockHash, NodeId, RecordUpdate};

use super::messages::{BlockRpc, RecordRpc, Reply, Request, RpcError};
use super::placement::Placement;
use super::quorum::{Op, Outgoing};

/// Pushes one batch of records and blocks to their new owners.
#[derive(Debug, Default)]
pub struct Handoff {
    queue: Vec<Outgoing>,
    outstanding: HashMap<u64, NodeId>,
    failed: u64,
    sent: u64,
    reported: bool,
}

impl Handoff {
    /// The pushes `placement` calls for: each record to the new owners of its key (all of one
    /// owner's records in one atomic merge), each block to the new owners of its hash.
    pub fn new(placement: &Placement, records: Vec<RecordUpdate>, blocks: Vec<(BlockHash, Bytes)>) -> Handoff {
        let mut per_node: BTreeMap<NodeId, Vec<RecordUpdate>> = BTreeMap::new();
        for update in records {
            let key = match &update {
                RecordUpdate::File(path, _) | RecordUpdate::Dir(path, _) => path.as_bytes(),
            };
            for node in placement.new_owners(key) {
                per_node.entry(node).or_default().push(update.clone());
            }
        }
        let mut handoff = Handoff::default();
        for (node, updates) in per_node {
            handoff.push(node, Request::Record(RecordRpc::Merge(updates)));
        }
        for (hash, bytes) in blocks {
            for node in placement.new_owners(&hash.0) {
                handoff.push(node, Request::Block(BlockRpc::Put { hash, bytes: bytes.clone() }));
            }
        }
        handoff.queue.reverse();
        handoff
    }

    /// Whether the batch needs no pushes at all.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.outstanding.is_empty()
    }

    fn push(&mut self, to: NodeId, request: Request) {
        let token = self.sent;
        self.sent += 1;
        self.outstanding.insert(token, to);
        self.queue.push(Outgoing { token, to, request });
    }
}

/// How a hand-off batch went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffReport {
    /// Pushes sent.
    pub pushed: u64,
    /// Pushes that were not confirmed durable (the next hand-off or read repair retries).
    pub failed: u64,
}

impl Op for Handoff {
    type Output = HandoffReport;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        if self.outstanding.remove(&token).is_some() && !matches!(reply, Ok(Reply::Durable)) {
            self.failed += 1;
        }
    }

    fn poll_outcome(&mut self) -> Option<Self::Output> {
        if self.reported || !self.is_empty() {
            return None;
        }
        self.reported = true;
        Some(HandoffReport { pushed: self.sent, failed: self.failed })
    }

    fn is_finished(&self) -> bool {
        self.is_empty()
    }
}
