//! A node that lost its store (a wiped or replaced disk, its identity kept) no longer holds
//! the writes it acknowledged before. Its answers to reads would still count toward read
//! quorums: a write made durable on W owners, this node one of them, and a read that meets
//! only this node and owners the write missed would find nothing, although it was
//! acknowledged. So, until anti-entropy has refilled a partition, the node refuses to answer
//! reads of it (docs/ARCHITECTURE.md §7); writes it takes as usual.
//!
//! A partition is refilled once, for every owner set of it this node is in, the node has
//! completed exchanges of it with enough of the set's other owners since it started: a write
//! acknowledged by `w` owners of a set of `s` is held by at least `w − 1` of the others, so
//! exchanges with `s − w + 1` of them meet one that holds it.

use std::collections::{BTreeMap, BTreeSet};

use shoal_membership::Partition;
use shoal_storage::{NodeId, Store};

use super::antientropy::Exchange;
use super::{Event, NodeCore};
use crate::replication::placement::partition_of;
use crate::replication::{Placement, RecordRpc, Refusal, Request};

/// The partitions this node still refills.
#[derive(Debug)]
pub(crate) struct Refill {
    /// When the refill began (µs): only exchanges started since count.
    since_us: u64,
    pending: BTreeSet<Partition>,
}

impl Refill {
    /// A refill of every partition, from `now_us`.
    pub(crate) fn new(now_us: u64) -> Refill {
        Refill { since_us: now_us, pending: Partition::all().collect() }
    }

    /// Whether reads of `partition` are still refused.
    pub(crate) fn pending(&self, partition: Partition) -> bool {
        self.pending.contains(&partition)
    }

    /// Partitions still to refill.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the refill of every pending partition the evidence now covers: the exchanges
    /// this node completed (`exchanges`: per partition, each peer with when the last one
    /// started). A partition this node no longer keeps needs none: if it owns it again
    /// later, it comes back as a new owner, which a transition fills before it is read.
    pub(crate) fn advance(
        &mut self,
        this: NodeId,
        placement: &Placement,
        exchanges: &BTreeMap<Partition, BTreeMap<NodeId, Exchange>>,
    ) {
        let since = self.since_us;
        let w = placement.need(placement.quorum().w);
        self.pending.retain(|partition| {
            if !placement.keeps(this, *partition) {
                return false;
            }
            let synced = exchanges.get(partition);
            let since_start =
                |peer: &NodeId| synced.and_then(|peers| peers.get(peer)).is_some_and(|at| at.pulled_us >= since);
            !placement.partition_sets(*partition).iter().filter(|set| set.contains(&this)).all(|set| {
                let others = set.len() - 1;
                let need = (set.len() - w.min(set.len()) + 1).min(others);
                set.iter().filter(|peer| **peer != this && since_start(peer)).count() >= need
            })
        });
    }
}

impl<S: Store> NodeCore<S> {
    /// Why this node's store must not answer `request`, if it must not: a record read of a
    /// partition still refilling.
    pub(super) fn refuses(&self, request: &Request) -> Option<Refusal> {
        let refill = self.sync.refill.as_ref()?;
        let Request::Record(RecordRpc::Read(key)) = request else { return None };
        refill.pending(partition_of(key.placement())).then_some(Refusal::Refilling)
    }

    /// Takes the exchanges completed so far, and the placement in force, into the refill.
    /// Not before the node joined: the placement it starts with may be itself alone.
    pub(super) fn refill_advance(&mut self) {
        if !self.view.is_ready() {
            return;
        }
        let Some(refill) = self.sync.refill.as_mut() else { return };
        refill.advance(self.this, &self.view.placement(), &self.sync.exchanges);
        if refill.len() == 0 {
            self.sync.refill = None;
            tracing::info!("every partition this node keeps is refilled; it answers reads again");
            self.out.events.push_back(Event::Refilled);
        }
    }

    /// Partitions whose reads this node still refuses.
    pub(super) fn refilling(&self) -> usize {
        self.sync.refill.as_ref().map_or(0, Refill::len)
    }
}

#[cfg(test)]
mod tests {
    use shoal_membership::{Ring, RingMember};

    use super::*;
    use crate::replication::Quorum;

    fn placement_of(this: NodeId, nodes: &[NodeId]) -> Placement {
        let members = nodes.iter().map(|n| RingMember { node_id: n.0, zone: String::new(), capacity_bytes: 1 });
        let ring = Ring::new(members.collect(), Quorum::DEFAULT.n);
        Placement::new(this, Quorum::DEFAULT, ring, Default::default(), nodes.len())
    }

    /// Each partition `this` owns, with its other owners.
    fn owned(placement: &Placement, this: NodeId) -> Vec<(Partition, Vec<NodeId>)> {
        Partition::all()
            .filter(|partition| placement.keeps(this, *partition))
            .map(|partition| (partition, placement.co_owners(partition)))
            .collect()
    }

    #[test]
    fn a_partition_is_refilled_only_after_exchanges_since_the_start_with_every_other_owner_of_three() {
        let nodes: Vec<NodeId> = (1..=4u128).map(|i| NodeId(i * 0x9E37_79B9_7F4A_7C15)).collect();
        let this = nodes[0];
        let placement = placement_of(this, &nodes);
        let owned = owned(&placement, this);
        let mut refill = Refill::new(100);
        let mut exchanges: BTreeMap<Partition, BTreeMap<NodeId, Exchange>> = BTreeMap::new();
        refill.advance(this, &placement, &exchanges);
        assert_eq!(refill.len(), owned.len(), "partitions it does not keep need no refill");

        // One co-owner since the start, the other before it: a write on W = 2 owners, this
        // node and the second, may still be missing.
        for (partition, others) in &owned {
            let peers = exchanges.entry(*partition).or_default();
            peers.insert(others[0], Exchange { pulled_us: 100, mutual_us: None });
            peers.insert(others[1], Exchange { pulled_us: 99, mutual_us: Some(99) });
        }
        refill.advance(this, &placement, &exchanges);
        assert_eq!(refill.len(), owned.len());

        for (partition, others) in &owned {
            exchanges.entry(*partition).or_default().insert(others[1], Exchange { pulled_us: 150, mutual_us: None });
        }
        refill.advance(this, &placement, &exchanges);
        assert_eq!(refill.len(), 0);
    }
}
