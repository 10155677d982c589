//! When this node runs anti-entropy, and with whom (docs/ARCHITECTURE.md §7). Every
//! [`CoreConfig::sync_interval`](super::CoreConfig::sync_interval), once joined and with
//! nothing of this kind in flight, the node does one of:
//! - hand over copies it holds but no longer owns ([`DrainSession`]), every other tick while
//!   it knows of any, then drop them once every owner is confirmed to hold the same;
//! - look for such copies (which partitions does the store hold?), every
//!   [`HELD_CHECK_TICKS`] ticks or after the placement changed;
//! - otherwise, one exchange ([`SyncSession`]) with the next member in turn that co-owns
//!   partitions with it (as a current owner or, while a partition settles, a previous one).
//!
//! Alongside, while partitions settle after a ring change, every
//! [`CoreConfig::settle_interval`](super::CoreConfig::settle_interval) the node looks for the
//! evidence that they have ([`SettleCheck`]): that is how a transition ends.

use std::sync::Arc;

use shoal_membership::{PARTITIONS, Partition};
use shoal_storage::{NodeId, Store, StoreError};

use crate::replication::{DrainOutcome, DrainSession, PartitionSet, Placement, SettleCheck, SyncSession};

use super::config::micros;
use super::ops::{AnyOp, AnyOutput, Purpose};
use super::store_work::StoreWork;
use super::{Event, JobPurpose, NodeCore, Timer};

/// Ticks between two looks for copies this node no longer owns.
/// Even: the look is made on even ticks only.
pub const HELD_CHECK_TICKS: u64 = 16;

/// Partitions handed over by one [`DrainSession`] at most.
const DRAIN_PARTITIONS_MAX: usize = 256;

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
    /// Ticks so far.
    ticks: u64,
    /// The placement the last look for misplaced copies was made under.
    held_checked: Option<Arc<Placement>>,
    /// Partitions this node holds copies of without keeping them, still to hand over.
    misplaced: Vec<Partition>,
    /// The partitions of the hand-over in flight.
    draining: Option<PartitionSet>,
    /// How many partitions the drop in flight is for.
    dropping: usize,
    /// Whether a look for settled partitions is in flight.
    settle_running: bool,
}

impl<S: Store> NodeCore<S> {
    /// The schedule's tick: starts the next exchange if none runs.
    pub(crate) fn sync_tick(&mut self, now_us: u64) {
        self.arm(now_us.saturating_add(micros(self.config.sync_interval)), Timer::SyncTick);
        if !self.view.is_ready() || self.sync.running {
            return;
        }
        self.sync.ticks += 1;
        if self.sync.ticks.is_multiple_of(2) {
            if let Some((owners, partitions)) = self.next_drain() {
                self.sync.running = true;
                let purpose = Purpose::Drain { partitions: partitions.len() };
                self.sync.draining = Some(partitions.clone());
                self.start_op(
                    now_us,
                    purpose,
                    AnyOp::Drain(Box::new(DrainSession::new(self.this, owners, partitions))),
                );
                return;
            }
            let placement = self.view.placement();
            let moved = !self.sync.held_checked.as_ref().is_some_and(|known| Arc::ptr_eq(known, &placement));
            if moved || self.sync.ticks.is_multiple_of(HELD_CHECK_TICKS) {
                self.sync.running = true;
                self.sync.held_checked = Some(placement);
                self.queue_job(StoreWork::HeldPartitions, JobPurpose::Held);
                return;
            }
        }
        let Some((peer, partitions)) = self.next_sync_peer() else { return };
        self.sync.running = true;
        self.start_op(now_us, Purpose::Sync, AnyOp::Sync(Box::new(SyncSession::new(self.this, peer, partitions))));
    }

    /// The next group of misplaced partitions that share one owner set, with those owners,
    /// if all of them can be reached.
    fn next_drain(&mut self) -> Option<(Vec<NodeId>, PartitionSet)> {
        let placement = self.view.placement();
        self.sync.misplaced.retain(|partition| !placement.keeps(self.this, *partition));
        let owners_of = |partition: Partition| -> Vec<NodeId> {
            placement.ring().owners(partition).map(|member| NodeId(member.node_id)).collect()
        };
        let first = *self.sync.misplaced.first()?;
        let owners = owners_of(first);
        let mut group = Vec::new();
        self.sync.misplaced.retain(|partition| {
            let same = group.len() < DRAIN_PARTITIONS_MAX && owners_of(*partition) == owners;
            if same {
                group.push(*partition);
            }
            !same
        });
        if owners.is_empty() || owners.iter().any(|owner| self.view.rpc_addr(*owner).is_none()) {
            // Owners not reachable yet: the next look finds these partitions again.
            return None;
        }
        Some((owners, PartitionSet::of(group)))
    }

    pub(crate) fn held_partitions(&mut self, held: Result<PartitionSet, StoreError>) {
        self.sync.running = false;
        let placement = self.view.placement();
        match held {
            Ok(held) => self.sync.misplaced = held.iter().filter(|p| !placement.keeps(self.this, *p)).collect(),
            Err(err) => tracing::warn!(%err, "could not read which partitions the store holds"),
        }
    }

    pub(crate) fn drain_ended(&mut self, partitions: usize, outcome: AnyOutput) {
        let AnyOutput::Drain(outcome) = outcome else { panic!("a hand-over answers with its outcome") };
        match outcome {
            DrainOutcome::Confirmed(roots) => {
                // Still running until the copies are dropped (or found changed). A placement
                // that changed meanwhile may have given some of them back: then keep them all.
                let placement = self.view.placement();
                let Some(op_partitions) =
                    self.sync.draining.take().filter(|set| !set.iter().any(|p| placement.keeps(self.this, p)))
                else {
                    self.sync.running = false;
                    return;
                };
                self.queue_job(StoreWork::DropVerified { partitions: op_partitions, roots }, JobPurpose::Drop);
                self.sync.dropping = partitions;
            }
            DrainOutcome::NotConfirmed(why) => {
                self.sync.running = false;
                self.sync.draining = None;
                self.out.events.push_back(Event::HandedOver { partitions, dropped: 0, failure: Some(why) });
            }
        }
    }

    pub(crate) fn copies_dropped(&mut self, dropped: Result<usize, StoreError>) {
        self.sync.running = false;
        let partitions = std::mem::take(&mut self.sync.dropping);
        let (dropped, failure) = match dropped {
            Ok(dropped) => (dropped, None),
            Err(err) => (0, Some(format!("dropping the copies failed: {err}"))),
        };
        self.out.events.push_back(Event::HandedOver { partitions, dropped, failure });
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

    /// The settle tick: looks for evidence that settling partitions settled, if none is
    /// being looked for.
    pub(crate) fn settle_tick(&mut self, now_us: u64) {
        self.arm(now_us.saturating_add(micros(self.config.settle_interval)), Timer::SettleTick);
        let placement = self.view.placement();
        if self.view.is_ready() && placement.in_transition() && !self.sync.settle_running {
            self.sync.settle_running = true;
            self.start_op(now_us, Purpose::Settle, AnyOp::Settle(SettleCheck::new(placement, PARTITIONS)));
        }
    }

    pub(crate) fn settle_checked(&mut self, outcome: AnyOutput) {
        let AnyOutput::Settle(report) = outcome else { panic!("a settle check answers with its report") };
        self.sync.settle_running = false;
        let (settled, found) = (report.settled.len(), report.found.len());
        tracing::debug!(checked = report.checked, settled, found, "looked for settled partitions");
        if settled + found > 0 {
            self.partitions_settled(&report.placement, &report.settled, &report.found);
        }
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

/// The other members that share partitions with `this` (current owners, and previous owners
/// of settling partitions), with those partitions, in id order.
fn co_owners(this: NodeId, placement: &Placement) -> Vec<(NodeId, PartitionSet)> {
    let mut shared: std::collections::BTreeMap<NodeId, Vec<Partition>> = Default::default();
    for partition in Partition::all().filter(|partition| placement.keeps(this, *partition)) {
        for owner in placement.co_owners(partition) {
            shared.entry(owner).or_default().push(partition);
        }
    }
    shared.into_iter().map(|(peer, partitions)| (peer, PartitionSet::of(partitions))).collect()
}
