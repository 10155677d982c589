//! When this node runs anti-entropy exchanges, and with whom (docs/ARCHITECTURE.md §7). The
//! exchange itself is [`SyncSession`]; this decides the schedule: every
//! [`CoreConfig::sync_interval`](super::CoreConfig::sync_interval), once joined, one
//! exchange with the next member in turn that co-owns partitions with this node, never two
//! at once.

use std::sync::Arc;

use shoal_storage::{NodeId, Store};

use crate::replication::{PartitionSet, Placement, SyncSession};

use super::config::micros;
use super::ops::{AnyOp, AnyOutput, Purpose};
use super::{Event, NodeCore, Timer};

/// The schedule's state.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Index (into the ring's other members) of the next peer to try.
    next_peer: usize,
    /// Whether an exchange is in flight.
    running: bool,
    /// The placement the peers below were computed for.
    placement: Option<Arc<Placement>>,
    /// The other ring members that share partitions with this node, with those partitions.
    peers: Vec<(NodeId, PartitionSet)>,
}

impl<S: Store> NodeCore<S> {
    /// The schedule's tick: starts the next exchange if none runs.
    pub(crate) fn sync_tick(&mut self, now_us: u64) {
        self.arm(now_us.saturating_add(micros(self.config.sync_interval)), Timer::SyncTick);
        if !self.view.is_ready() || self.sync.running {
            return;
        }
        let Some((peer, partitions)) = self.next_sync_peer() else { return };
        self.sync.running = true;
        self.start_op(now_us, Purpose::Sync, AnyOp::Sync(SyncSession::new(self.this, peer, partitions)));
    }

    /// The next member in turn that shares partitions with this node in the current ring and
    /// whose address is known, with the partitions they share.
    fn next_sync_peer(&mut self) -> Option<(NodeId, PartitionSet)> {
        let placement = self.view.placement();
        if !self.sync.placement.as_ref().is_some_and(|known| Arc::ptr_eq(known, &placement)) {
            self.sync.peers = co_owners(self.this, &placement);
            self.sync.placement = Some(placement);
        }
        let count = self.sync.peers.len();
        for step in 0..count {
            let index = (self.sync.next_peer + step) % count;
            let (peer, shared) = &self.sync.peers[index];
            if self.view.rpc_addr(*peer).is_some() {
                self.sync.next_peer = index + 1;
                return Some((*peer, shared.clone()));
            }
        }
        None
    }

    pub(crate) fn sync_ended(&mut self, outcome: AnyOutput) {
        let AnyOutput::Sync(report) = outcome else { panic!("an exchange answers with its report") };
        self.sync.running = false;
        if let Some(why) = &report.failure {
            tracing::debug!(peer = %report.peer, why, "an anti-entropy exchange stopped early");
        }
        self.out.events.push_back(Event::SyncEnded(report));
    }
}

/// The other members of the current ring that share partitions with `this`, with those
/// partitions, in id order.
fn co_owners(this: NodeId, placement: &Placement) -> Vec<(NodeId, PartitionSet)> {
    let ring = placement.ring();
    let mut shared: std::collections::BTreeMap<NodeId, Vec<shoal_membership::Partition>> = Default::default();
    for partition in ring.partitions_of(this.0) {
        for owner in ring.owners(partition).filter(|owner| owner.node_id != this.0) {
            shared.entry(NodeId(owner.node_id)).or_default().push(partition);
        }
    }
    shared.into_iter().map(|(peer, partitions)| (peer, PartitionSet::of(partitions))).collect()
}
