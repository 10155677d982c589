//! The durability truth this node can tell (docs/ARCHITECTURE.md §7): for the partitions it
//! answers for, how many copies its anti-entropy exchanges confirmed; what it knows is still
//! to repair; how fast repair goes. `shoal status` adds up every node's account.
//!
//! A copy is *confirmed* when a mutual exchange of the partition with that owner completed
//! recently: both then held what either held when it started. A node that confirmed nothing
//! (every co-owner away) holds one copy as far as it can tell, and one that lost its store
//! none until it has refilled the partition.

use std::collections::VecDeque;

use shoal_membership::Partition;
use shoal_storage::{NodeId, Store};

use super::NodeCore;
use super::config::micros;
use super::ops::AnyOp;
use crate::replication::SyncProgress;

/// Samples of the repair counters kept for the rate: one per sync tick, about a minute.
const RATE_SAMPLES: usize = 31;

/// One node's account of durability.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durability {
    /// Partitions this node answers for: those whose first owner alive in its view is itself.
    pub partitions: u64,
    /// Of those, the ones with N confirmed copies on their current owners.
    pub full: u64,
    /// The ones with fewer.
    pub fewer: u64,
    /// Partitions this node holds copies of without keeping them: extra copies, still to be
    /// handed over and dropped.
    pub extra: u64,
    /// Entries (records and blocks) found different and not yet repaired.
    pub backlog_entries: u64,
    /// The bytes of that backlog, estimated: each block counted at the configured block size.
    pub backlog_bytes: u64,
    /// Entries repaired since this node started.
    pub repaired_entries: u64,
    /// Bytes of blocks copied by repair since this node started.
    pub repaired_bytes: u64,
    /// Entries repaired per second, over about the last minute.
    pub rate_entries_per_sec: f64,
    /// Block bytes copied per second, over about the last minute.
    pub rate_bytes_per_sec: f64,
    /// Partitions whose reads this node refuses until it has refilled its lost store.
    pub refilling: u64,
}

impl Durability {
    /// Seconds until the known backlog is repaired at the current rate; `None` when the rate
    /// is nil while something is short (then it cannot be told).
    pub fn eta_secs(&self) -> Option<f64> {
        match (self.backlog_entries, self.fewer) {
            (0, 0) => Some(0.0),
            (0, _) => None,
            (backlog, _) if self.rate_entries_per_sec > 0.0 => Some(backlog as f64 / self.rate_entries_per_sec),
            _ => None,
        }
    }
}

/// What the repair meter remembers.
#[derive(Debug, Default)]
pub(crate) struct RepairMeter {
    /// Totals of finished exchanges.
    repaired: u64,
    block_bytes: u64,
    /// Per peer, what the last exchange with it left unrepaired (records, blocks).
    leftover: std::collections::BTreeMap<NodeId, (u64, u64)>,
    /// (time µs, repaired, block bytes), oldest first.
    samples: VecDeque<(u64, u64, u64)>,
}

impl RepairMeter {
    /// When the last sample was taken (µs; 0 before the first).
    pub(crate) fn last_sample_us(&self) -> u64 {
        self.samples.back().map_or(0, |sample| sample.0)
    }

    pub(crate) fn exchange_ended(&mut self, report: &crate::replication::SyncReport) {
        self.repaired += report.repaired();
        self.block_bytes += report.block_bytes;
        self.leftover.insert(report.peer, (report.unrepaired_records, report.unrepaired_blocks));
    }

    /// Forgets what exchanges with members that are no longer co-owners left: no exchange
    /// will repair it, and another co-owner's exchange lists it again if it is still due.
    pub(crate) fn keep_peers(&mut self, peers: &[(NodeId, crate::replication::PartitionSet)]) {
        self.leftover.retain(|peer, _| peers.iter().any(|(known, _)| known == peer));
    }
}

impl<S: Store> NodeCore<S> {
    /// The exchange in flight, with its peer and progress.
    fn sync_in_flight(&self) -> Option<(NodeId, SyncProgress)> {
        self.ops.values().find_map(|running| match &running.op {
            AnyOp::Sync(session) => Some((session.peer(), session.progress())),
            _ => None,
        })
    }

    /// Repair totals so far, the exchange in flight included.
    fn repair_totals(&self) -> (u64, u64) {
        let meter = &self.sync.meter;
        let live = self.sync_in_flight().map(|(_, progress)| progress).unwrap_or_default();
        (meter.repaired + live.repaired, meter.block_bytes + live.block_bytes)
    }

    /// Takes a sample of the repair counters (each sync tick).
    pub(crate) fn sample_repairs(&mut self, now_us: u64) {
        let (repaired, bytes) = self.repair_totals();
        let samples = &mut self.sync.meter.samples;
        samples.push_back((now_us, repaired, bytes));
        while samples.len() > RATE_SAMPLES {
            samples.pop_front();
        }
    }

    /// This node's account of durability at `now_us`.
    pub fn durability(&self, now_us: u64) -> Durability {
        let placement = self.view.placement();
        let n = placement.quorum().n.min(placement.ring().members().len()) as u64;
        let window = self.confirm_window();
        let live = |node: NodeId| node == self.this || self.view.is_live(node);
        let draining = self.sync.draining.as_ref().map_or(0, |set| set.len());
        let extra = (self.sync.misplaced.len() + draining) as u64;
        let refilling = self.refilling() as u64;
        let mut account = Durability { extra, refilling, ..Durability::default() };
        for partition in Partition::all() {
            let owners = placement.owners(partition);
            if owners.iter().copied().find(|owner| live(*owner)) != Some(self.this) {
                continue;
            }
            account.partitions += 1;
            if self.confirmed_copies(partition, &owners, now_us, window) >= n {
                account.full += 1;
            } else {
                account.fewer += 1;
            }
        }
        let in_flight = self.sync_in_flight();
        let (mut records, mut blocks) = (0, 0);
        for (peer, (r, b)) in &self.sync.meter.leftover {
            if in_flight.is_none_or(|(current, _)| current != *peer) {
                (records, blocks) = (records + r, blocks + b);
            }
        }
        if let Some((_, progress)) = in_flight {
            (records, blocks) = (records + progress.records_pending, blocks + progress.blocks_pending);
        }
        account.backlog_entries = records + blocks;
        account.backlog_bytes = blocks * self.config.block_size_bytes as u64;
        (account.repaired_entries, account.repaired_bytes) = self.repair_totals();
        if let (Some(first), Some(last)) = (self.sync.meter.samples.front(), self.sync.meter.samples.back()) {
            let secs = last.0.saturating_sub(first.0) as f64 / 1e6;
            if secs > 0.0 {
                account.rate_entries_per_sec = last.1.saturating_sub(first.1) as f64 / secs;
                account.rate_bytes_per_sec = last.2.saturating_sub(first.2) as f64 / secs;
            }
        }
        account
    }

    /// Copies of `partition` (owned by `owners`) confirmed by mutual exchanges (each side
    /// then held what either held) that started within `window` µs before `now_us`, this
    /// node's own included unless it is still refilling it after losing its store.
    pub(super) fn confirmed_copies(&self, partition: Partition, owners: &[NodeId], now_us: u64, window: u64) -> u64 {
        let recent = self.sync.exchanges.get(&partition);
        let confirmed = owners
            .iter()
            .filter(|owner| **owner != self.this && self.view.is_live(**owner))
            .filter(|owner| {
                let mutual = recent.and_then(|peers| peers.get(owner)).and_then(|exchange| exchange.mutual_us);
                mutual.is_some_and(|at| now_us.saturating_sub(at) <= window)
            })
            .count() as u64;
        let own = self.sync.refill.as_ref().is_none_or(|refill| !refill.pending(partition));
        u64::from(own) + confirmed
    }

    /// How recent an exchange must be to confirm a copy: a few rounds of the schedule, which
    /// visits one co-owner per tick and hands over on every other tick.
    pub(super) fn confirm_window(&self) -> u64 {
        let rounds = 4 * (self.sync.peer_count() as u64 + 1);
        micros(self.config.sync_interval).saturating_mul(2 * rounds)
    }
}
