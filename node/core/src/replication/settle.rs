//! The evidence that ends a partition's transition (docs/ARCHITECTURE.md §5), as an [`Op`]:
//! every previous and current owner of the settling partitions is asked for one durable
//! digest per partition it is concerned with; a partition has settled when a group of owners
//! with one identical digest covers the previous owners' write quorums and the current
//! owners' read quorums ([`Placement::settled_by`]). Anti-entropy between those owners is
//! what makes their digests meet; this only looks.
//!
//! Every other node asked also says which owner sets its own placement honours for those
//! partitions. A current set there that this node does not honour (a view that changed
//! differently) keeps the partition from settling and becomes one of its previous sets:
//! reads and writes reach it until evidence covers it too. ([`LearnSets`], run when a node
//! regains a majority, takes the peers' previous sets as well.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use shoal_membership::Partition;
use shoal_storage::NodeId;

use super::digests::PartitionSet;
use super::messages::{Reply, Request, RpcError, SyncRpc};
use super::placement::{Placement, same_owners};
use super::quorum::{Op, Outgoing};

/// What one look found.
#[derive(Clone, Debug)]
pub struct SettleReport {
    /// The placement the evidence was gathered under.
    pub placement: Arc<Placement>,
    /// Partitions looked at.
    pub checked: usize,
    /// Those the evidence showed settled.
    pub settled: Vec<Partition>,
    /// Owner sets other nodes' placements honour that this one does not.
    pub found: Vec<(Partition, Vec<NodeId>)>,
}

/// What a token asked.
#[derive(Debug)]
enum Asked {
    Digests(NodeId, Vec<Partition>),
    Sets(Vec<Partition>),
}

/// Asks the owners of settling partitions for their digests.
#[derive(Debug)]
pub struct SettleCheck {
    placement: Arc<Placement>,
    queue: Vec<Outgoing>,
    /// Per token: what was asked, about which partitions (in the order of the answer).
    asked: HashMap<u64, Asked>,
    digests: BTreeMap<Partition, Vec<(NodeId, u64)>>,
    /// Owner sets other nodes honour that this placement does not.
    found: FoundSets,
    checked: usize,
    reported: bool,
}

impl SettleCheck {
    /// A look at up to `max` settling partitions of `placement` (the first ones in order).
    pub fn new(placement: Arc<Placement>, max: usize) -> SettleCheck {
        let mut per_node: BTreeMap<NodeId, Vec<Partition>> = BTreeMap::new();
        let mut checked = 0;
        for partition in placement.settling().keys().take(max) {
            checked += 1;
            let mut concerned = placement.co_owners(*partition);
            if placement.keeps(placement.this(), *partition) {
                concerned.push(placement.this());
            }
            for node in concerned {
                per_node.entry(node).or_default().push(*partition);
            }
        }
        let mut check = SettleCheck {
            placement,
            queue: Vec::new(),
            asked: HashMap::new(),
            digests: BTreeMap::new(),
            found: FoundSets::default(),
            checked,
            reported: false,
        };
        let this = check.placement.this();
        let mut token = 0;
        for (node, mut partitions) in per_node {
            let set = PartitionSet::of(partitions.iter().copied());
            // Answers come in the set's order, which is partition order.
            partitions.sort();
            let request = Request::Sync(SyncRpc::Partitions { partitions: set.clone(), durable: true });
            check.queue.push(Outgoing { token, to: node, request });
            check.asked.insert(token, Asked::Digests(node, partitions.clone()));
            token += 1;
            if node != this {
                let request = Request::Sync(SyncRpc::OwnerSets { partitions: set });
                check.queue.push(Outgoing { token, to: node, request });
                check.asked.insert(token, Asked::Sets(partitions));
                token += 1;
            }
        }
        check
    }
}

impl Op for SettleCheck {
    type Output = SettleReport;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        // A node that does not answer, or answers something else, is simply not evidence.
        match (self.asked.remove(&token), reply) {
            (Some(Asked::Digests(node, partitions)), Ok(Reply::PartitionDigests(digests)))
                if digests.len() == partitions.len() =>
            {
                for (partition, digest) in partitions.into_iter().zip(digests) {
                    self.digests.entry(partition).or_default().push((node, digest));
                }
            }
            (Some(Asked::Sets(partitions)), Ok(Reply::OwnerSets(sets))) if sets.len() == partitions.len() => {
                // Only the sets peers write to now: their previous sets are covered by their
                // own evidence, and adopting them would hand a settled partition back and forth.
                for (partition, mut sets) in partitions.into_iter().zip(sets) {
                    sets.truncate(1);
                    self.found.add(&self.placement, partition, sets);
                }
            }
            _ => {}
        }
    }

    fn poll_outcome(&mut self) -> Option<SettleReport> {
        if self.reported || !self.is_finished() {
            return None;
        }
        self.reported = true;
        let settled = self
            .digests
            .iter()
            .filter(|(partition, digests)| {
                !self.found.0.contains_key(partition) && self.placement.settled_by(**partition, digests)
            })
            .map(|(partition, _)| *partition)
            .collect();
        let found = std::mem::take(&mut self.found).into_list();
        Some(SettleReport { placement: self.placement.clone(), checked: self.checked, settled, found })
    }

    fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.asked.is_empty()
    }
}

/// Owner sets peers honour that a placement does not, by partition.
#[derive(Debug, Default)]
struct FoundSets(BTreeMap<Partition, Vec<Vec<NodeId>>>);

impl FoundSets {
    /// Keeps those of a peer's `sets` for `partition` that are plausible and new.
    fn add(&mut self, placement: &Placement, partition: Partition, sets: Vec<Vec<NodeId>>) {
        let n = placement.quorum().n;
        for set in sets.into_iter().filter(|set| plausible(set, n)) {
            if placement.honours(partition, &set) {
                continue;
            }
            let known = self.0.get(&partition).is_some_and(|known| known.iter().any(|s| same_owners(s, &set)));
            if !known {
                self.0.entry(partition).or_default().push(set);
            }
        }
    }

    fn into_list(self) -> Vec<(Partition, Vec<NodeId>)> {
        self.0.into_iter().flat_map(|(partition, sets)| sets.into_iter().map(move |set| (partition, set))).collect()
    }
}

/// Whether an owner set from a peer can be one: 1 to N distinct members.
fn plausible(set: &[NodeId], n: usize) -> bool {
    !set.is_empty() && set.len() <= n && set.iter().enumerate().all(|(i, node)| !set[..i].contains(node))
}

/// What a round of [`LearnSets`] found.
#[derive(Clone, Debug)]
pub struct LearnReport {
    /// The placement the sets were compared with.
    pub placement: Arc<Placement>,
    /// Members that answered (this node not counted).
    pub answered: usize,
    /// Owner sets their placements honour that this one does not.
    pub found: Vec<(Partition, Vec<NodeId>)>,
}

/// Asks other members which owner sets their placements honour, for every partition: what a
/// node learns before it coordinates again after it was cut off from the majority (or first
/// joins), since the majority may have moved partitions meanwhile.
#[derive(Debug)]
pub struct LearnSets {
    placement: Arc<Placement>,
    queue: Vec<Outgoing>,
    waiting: usize,
    answered: usize,
    found: FoundSets,
    reported: bool,
}

impl LearnSets {
    /// Asks each of `peers`.
    pub fn new(placement: Arc<Placement>, peers: &[NodeId]) -> LearnSets {
        let all = PartitionSet::of(Partition::all());
        let queue: Vec<Outgoing> = peers
            .iter()
            .enumerate()
            .map(|(token, peer)| Outgoing {
                token: token as u64,
                to: *peer,
                request: Request::Sync(SyncRpc::OwnerSets { partitions: all.clone() }),
            })
            .collect();
        LearnSets { placement, waiting: queue.len(), queue, answered: 0, found: FoundSets::default(), reported: false }
    }
}

impl Op for LearnSets {
    type Output = LearnReport;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop()
    }

    fn handle_reply(&mut self, _now_us: u64, _token: u64, reply: Result<Reply, RpcError>) {
        self.waiting = self.waiting.saturating_sub(1);
        let Ok(Reply::OwnerSets(sets)) = reply else { return };
        if sets.len() != shoal_membership::PARTITIONS {
            return;
        }
        self.answered += 1;
        for (partition, sets) in Partition::all().zip(sets) {
            self.found.add(&self.placement, partition, sets);
        }
    }

    fn poll_outcome(&mut self) -> Option<LearnReport> {
        if self.reported || !self.is_finished() {
            return None;
        }
        self.reported = true;
        let found = std::mem::take(&mut self.found).into_list();
        Some(LearnReport { placement: self.placement.clone(), answered: self.answered, found })
    }

    fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.waiting == 0
    }
}
