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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_membership::{PARTITIONS, Partition};
use shoal_storage::{NodeId, Store, StoreError};

use crate::replication::placement::same_owners;
use crate::replication::{
    DrainOutcome, DrainSession, Exchanged, PartitionSet, Placement, SettleCheck, SettleReport, SyncSession,
};

use super::budget::RepairBudget;
use super::config::micros;
use super::durability::RepairMeter;
use super::ops::{AnyOp, AnyOutput, Purpose};
use super::refill::Refill;
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
    /// What is left of this round of the schedule: indexes into `peers`, the peer sharing
    /// the most partitions short of confirmed copies first.
    round: Vec<usize>,
    /// The co-owners this round has visited (or passed over, their address unknown).
    visited: BTreeSet<NodeId>,
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
    pub(super) misplaced: Vec<Partition>,
    /// The partitions of the hand-over in flight.
    pub(super) draining: Option<PartitionSet>,
    /// How many partitions the drop in flight is for.
    dropping: usize,
    /// Whether a look for settled partitions is in flight.
    settle_running: bool,
    /// The exchange in flight: when it started and the partitions it covers.
    exchange: Option<(u64, PartitionSet)>,
    /// Per partition this node keeps: each peer it completed exchanges of it with.
    pub(super) exchanges: BTreeMap<Partition, BTreeMap<NodeId, Exchange>>,
    /// Per settling partition: its owner sets, since when it has had them, and since when
    /// exchanges of it are evidence.
    settling_since: BTreeMap<Partition, Dated>,
    /// Looks in a row that changed nothing, since the placement last moved: each doubles
    /// the wait before the next (up to [`SETTLE_BACKOFF_MAX`] doublings), so a transition
    /// that cannot end yet (owners away, views apart) costs little.
    settle_idle: u32,
    /// No look starts before this time (µs).
    settle_not_before_us: u64,
    /// What repair did and has left, for the durability account.
    pub(super) meter: RepairMeter,
    /// The bandwidth repair may use.
    pub(super) budget: RepairBudget,
    /// What is left to refill of a store this node lost, if it lost one.
    pub(super) refill: Option<Refill>,
}

impl SyncState {
    /// The schedule of a node that starts, refilling a lost store if `refill` says so.
    pub(super) fn new(refill: Option<Refill>) -> SyncState {
        SyncState { refill, ..SyncState::default() }
    }

    /// How many co-owners the schedule visits in turn.
    pub(super) fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

/// When (µs, this node's clock) the last complete exchanges of a partition with one peer
/// started: the last (this node then came to hold all the peer held), and the last that was
/// mutual (the peer then held all this node held, too).
#[derive(Clone, Copy, Debug)]
pub(super) struct Exchange {
    pub(super) pulled_us: u64,
    pub(super) mutual_us: Option<u64>,
}

/// A settling partition's owner sets, dated.
#[derive(Debug)]
struct Dated {
    sets: Vec<Vec<NodeId>>,
    /// When this node took these sets in (µs).
    since_us: u64,
    /// From when an exchange of the partition is evidence (µs), once a look found every
    /// coordinating member writing to the same current owners: until then a member whose view
    /// lags may still acknowledge writes on previous owners only, after an exchange between
    /// them and a current owner has started. Its writes already sent arrive within an RPC
    /// timeout of its answer, or never, so the date is that far after the look. Only
    /// evidence gathered at a look (identical digests) counts before.
    exchanges_from_us: Option<u64>,
}

/// Doublings of the wait between two looks that found nothing.
const SETTLE_BACKOFF_MAX: u32 = 3;

impl<S: Store> NodeCore<S> {
    /// The schedule's tick: starts the next exchange if none runs.
    pub(crate) fn sync_tick(&mut self, now_us: u64) {
        self.arm(now_us.saturating_add(micros(self.config.sync_interval)), Timer::SyncTick);
        self.sample_repairs(now_us);
        if !self.view.is_ready() || self.sync.running {
            return;
        }
        self.sync.ticks += 1;
        if self.sync.ticks.is_multiple_of(2) {
            if let Some((owners, partitions)) = self.next_drain() {
                self.sync.running = true;
                let purpose = Purpose::Drain { partitions: partitions.len() };
                self.sync.draining = Some(partitions.clone());
                let (transfers, cost) = (self.config.repair_transfers_max, self.config.block_size_bytes as u64);
                let drain = DrainSession::new(self.this, owners, partitions, transfers, cost);
                let id = self.start_op(now_us, purpose, AnyOp::Drain(Box::new(drain)));
                self.sync.budget.repairing = Some(id);
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
        self.sync.exchange = Some((now_us, partitions.clone()));
        let (transfers, cost) = (self.config.repair_transfers_max, self.config.block_size_bytes as u64);
        // Out of transitions, blocks only come in: the peer fills itself in its own exchanges
        // with this node, so a wiped node's co-owners never copy it the same block twice.
        // While a shared partition settles, views may differ on who owns it (a previous owner
        // this node learned of may be unknown to a current owner, which then never pulls from
        // it), so both sides are filled, as a hand-over does.
        let settling = self.view.placement();
        let session = if partitions.iter().any(|partition| settling.settling().contains_key(&partition)) {
            SyncSession::new(self.this, peer, partitions, transfers, cost)
        } else {
            SyncSession::pulling(self.this, peer, partitions, transfers, cost)
        };
        let id = self.start_op(now_us, Purpose::Sync, AnyOp::Sync(Box::new(session)));
        self.sync.budget.repairing = Some(id);
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
            self.sync.meter.keep_peers(&self.sync.peers);
            self.sync.placement = Some(placement.clone());
            // The round goes on under the new placement: one that moves every few seconds
            // (a long transition) would otherwise restart it each time, and the co-owners
            // last in its order would wait for ever.
            let visited = &self.sync.visited;
            let peers = &self.sync.peers;
            let left = self.round_order(&placement).into_iter().filter(|i| !visited.contains(&peers[*i].0));
            self.sync.round = left.collect();
        }
        if self.sync.round.is_empty() {
            self.sync.visited.clear();
            self.sync.round = self.round_order(&placement);
        }
        while !self.sync.round.is_empty() {
            let index = self.sync.round.remove(0);
            let Some((peer, shared)) = self.sync.peers.get(index) else { continue };
            self.sync.visited.insert(*peer);
            if self.view.rpc_addr(*peer).is_some() {
                return Some((*peer, shared.clone()));
            }
        }
        None
    }

    /// The order of the next round: every co-owner once, those sharing the most partitions
    /// short of confirmed copies first (the most endangered are repaired first), the rest
    /// in id order.
    fn round_order(&self, placement: &Placement) -> Vec<usize> {
        let (now_us, window) = (self.sync.meter.last_sample_us(), self.confirm_window());
        let n = placement.quorum().n.min(placement.ring().members().len()) as u64;
        let mut short: BTreeMap<Partition, bool> = BTreeMap::new();
        let mut endangered = |partition: Partition| {
            *short
                .entry(partition)
                .or_insert_with(|| self.confirmed_copies(partition, &placement.owners(partition), now_us, window) < n)
        };
        let mut order: Vec<(usize, usize)> = self
            .sync
            .peers
            .iter()
            .enumerate()
            .map(|(index, (_, shared))| (shared.iter().filter(|p| endangered(*p)).count(), index))
            .collect();
        order.sort_by_key(|(score, index)| (std::cmp::Reverse(*score), *index));
        order.into_iter().map(|(_, index)| index).collect()
    }

    /// The settle tick: looks for evidence that settling partitions settled, if none is
    /// being looked for.
    pub(crate) fn settle_tick(&mut self, now_us: u64) {
        self.arm(now_us.saturating_add(micros(self.config.settle_interval)), Timer::SettleTick);
        let placement = self.view.placement();
        let due = now_us >= self.sync.settle_not_before_us;
        if self.view.is_ready() && placement.in_transition() && !self.sync.settle_running && due {
            self.sync.settle_running = true;
            let since = self.sync.settling_since.iter().map(|(partition, dated)| {
                (*partition, dated.exchanges_from_us.map_or(u64::MAX, |from| from.max(dated.since_us)))
            });
            let since = since.collect();
            let exchanges = self.exchanges_of(now_us, placement.settling().keys().copied());
            // Members the view shows down would only run the look into its timeout.
            let members: Vec<NodeId> =
                self.view.members().into_iter().filter(|node| *node == self.this || self.view.is_live(*node)).collect();
            let check = SettleCheck::new(placement, &members, PARTITIONS, now_us, since, &exchanges);
            self.start_op(now_us, Purpose::Settle, AnyOp::Settle(check));
        }
    }

    pub(crate) fn settle_checked(&mut self, now_us: u64, outcome: AnyOutput) {
        let AnyOutput::Settle(report) = outcome else { panic!("a settle check answers with its report") };
        self.sync.settle_running = false;
        self.date_exchange_evidence(now_us, &report);
        let findings = &report.findings;
        if findings.is_empty() {
            self.sync.settle_idle = (self.sync.settle_idle + 1).min(SETTLE_BACKOFF_MAX);
            let wait = micros(self.config.settle_interval) << self.sync.settle_idle;
            self.sync.settle_not_before_us = now_us.saturating_add(wait);
        } else {
            self.sync.settle_idle = 0;
        }
        let (settled, vouched, found) = (findings.settled.len(), findings.vouched.len(), findings.found.len());
        tracing::debug!(checked = report.checked, settled, vouched, found, "looked for settled partitions");
        if !findings.is_empty() {
            self.partitions_settled(now_us, &report.placement, findings);
        }
    }

    /// Dates exchange evidence of each partition the look agreed on from now (plus an RPC
    /// timeout), unless it is already dated; a partition views disagreed on counts no
    /// exchange until a later look agrees.
    fn date_exchange_evidence(&mut self, now_us: u64, report: &SettleReport) {
        let from = now_us.saturating_add(micros(self.config.rpc_timeout));
        for partition in report.placement.settling().keys().take(report.checked) {
            let Some(dated) = self.sync.settling_since.get_mut(partition) else { continue };
            // The look was for these sets (the placement may have moved meanwhile).
            if !same_sets(&dated.sets, &report.placement.partition_sets(*partition)) {
                continue;
            }
            if report.agreed.contains(partition) {
                dated.exchanges_from_us.get_or_insert(from);
            } else {
                dated.exchanges_from_us = None;
            }
        }
    }

    pub(crate) fn sync_ended(&mut self, outcome: AnyOutput) {
        let AnyOutput::Sync(report) = outcome else { panic!("an exchange answers with its report") };
        self.sync.running = false;
        if let Some(why) = &report.failure {
            tracing::debug!(peer = %report.peer, why, "an anti-entropy exchange stopped early");
        }
        if let Some((started_us, partitions)) = self.sync.exchange.take()
            && report.complete
        {
            let mutual_us = report.mutual.then_some(started_us);
            for partition in partitions.iter() {
                let peers = self.sync.exchanges.entry(partition).or_default();
                let last = peers.insert(report.peer, Exchange { pulled_us: started_us, mutual_us });
                if let (Some(last), Some(exchange)) = (last, peers.get_mut(&report.peer)) {
                    exchange.mutual_us = exchange.mutual_us.or(last.mutual_us);
                }
            }
            self.refill_advance();
        }
        self.sync.meter.exchange_ended(&report);
        self.out.events.push_back(Event::SyncEnded(report));
    }

    /// This node's completed exchanges of `partitions`, as it answers
    /// [`SyncRpc::OwnerSets`](crate::replication::SyncRpc::OwnerSets): per partition, each
    /// peer with how long ago (µs) the last exchanges with it started.
    pub(crate) fn exchanges_of(
        &self,
        now_us: u64,
        partitions: impl Iterator<Item = Partition>,
    ) -> BTreeMap<Partition, Vec<Exchanged>> {
        let exchanged = |(peer, exchange): (&NodeId, &Exchange)| Exchanged {
            peer: *peer,
            pulled_age_us: now_us.saturating_sub(exchange.pulled_us),
            mutual_age_us: exchange.mutual_us.map(|at| now_us.saturating_sub(at)),
        };
        partitions
            .filter_map(|partition| {
                let peers = self.sync.exchanges.get(&partition)?;
                Some((partition, peers.iter().map(exchanged).collect()))
            })
            .collect()
    }

    /// Takes a new placement in: dates the owner sets of each settling partition that
    /// changed (evidence older than that proves nothing about them), and forgets the
    /// exchanges of partitions this node no longer keeps.
    pub(crate) fn placement_moved(&mut self, now_us: u64, placement: &Placement) {
        let settling = placement.settling();
        self.sync.settle_idle = 0;
        self.sync.settle_not_before_us = 0;
        self.sync.settling_since.retain(|partition, _| settling.contains_key(partition));
        for partition in settling.keys() {
            let sets = placement.partition_sets(*partition);
            let dated = self.sync.settling_since.get(partition).is_some_and(|known| same_sets(&known.sets, &sets));
            if !dated {
                self.sync.settling_since.insert(*partition, Dated { sets, since_us: now_us, exchanges_from_us: None });
            }
        }
        let this = self.this;
        self.sync.exchanges.retain(|partition, _| placement.keeps(this, *partition));
        self.refill_advance();
    }
}

/// Whether two lists of owner sets are the same sets, in order.
fn same_sets(a: &[Vec<NodeId>], b: &[Vec<NodeId>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_owners(a, b))
}

/// The other members that share partitions with `this` (current owners, and previous owners
/// of settling partitions), with those partitions, in id order.
fn co_owners(this: NodeId, placement: &Placement) -> Vec<(NodeId, PartitionSet)> {
    let mut shared: BTreeMap<NodeId, Vec<Partition>> = Default::default();
    for partition in Partition::all().filter(|partition| placement.keeps(this, *partition)) {
        for owner in placement.co_owners(partition) {
            shared.entry(owner).or_default().push(partition);
        }
    }
    shared.into_iter().map(|(peer, partitions)| (peer, PartitionSet::of(partitions))).collect()
}
