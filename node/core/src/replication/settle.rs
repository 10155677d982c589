//! The evidence that ends a partition's transition (docs/ARCHITECTURE.md §5), as an [`Op`]:
//! every previous and current owner of the settling partitions is asked for one durable
//! digest per partition it is concerned with, and for the owners it completed anti-entropy
//! exchanges of them with since they began settling. A partition has settled when enough
//! current owners are linked, by one of the two, to enough previous owners
//! ([`Placement::settled_by`]). Anti-entropy between those owners is what makes them hold the
//! same; this only looks. Identical digests settle a quiet partition within a look; one
//! written without pause never shows them, and settles on completed exchanges instead.
//!
//! Every other node asked also says which owner sets its own placement honours for those
//! partitions. A current set there that this node does not honour (a view that changed
//! differently) keeps the partition from settling and becomes one of its previous sets:
//! reads and writes reach it until evidence covers it too. ([`LearnSets`], run when a node
//! regains a majority, takes the peers' previous sets as well.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use shoal_membership::Partition;
use shoal_storage::NodeId;

use super::digests::PartitionSet;
use super::messages::{Exchanged, PartitionOwners, Reply, Request, RpcError, SyncRpc};
use super::placement::{Findings, Placement, Sources, same_owners};
use super::quorum::{Op, Outgoing};

/// What one look found.
#[derive(Clone, Debug)]
pub struct SettleReport {
    /// The placement the evidence was gathered under.
    pub placement: Arc<Placement>,
    /// Partitions looked at.
    pub checked: usize,
    /// What the look found.
    pub findings: Findings,
    /// The partitions looked at that every coordinating node that answered writes to the
    /// same current owners as this one (and no other set was found for).
    pub agreed: BTreeSet<Partition>,
}

/// What a token asked.
#[derive(Debug)]
enum Asked {
    Digests(NodeId, Vec<Partition>),
    Sets(NodeId, Vec<Partition>),
}

impl Asked {
    fn node(&self) -> NodeId {
        match self {
            Asked::Digests(node, _) | Asked::Sets(node, _) => *node,
        }
    }
}

/// Asks the owners of settling partitions for their digests.
#[derive(Debug)]
pub struct SettleCheck {
    placement: Arc<Placement>,
    queue: Vec<Outgoing>,
    /// Per token: what was asked, about which partitions (in the order of the answer).
    asked: HashMap<u64, Asked>,
    digests: BTreeMap<Partition, Vec<(NodeId, u64)>>,
    /// Per partition, pairs of owners `(a, b)` where `a` came to hold everything `b` held,
    /// by an exchange that started since exchange evidence counts for the partition.
    synced: BTreeMap<Partition, Vec<(NodeId, NodeId)>>,
    /// When the questions went out.
    now_us: u64,
    /// Since when each partition has been settling with its present owner sets.
    since_us: BTreeMap<Partition, u64>,
    /// Owner sets other nodes honour that this placement does not.
    found: FoundSets,
    /// Per partition, the nodes that honour only its current owners, the same as here.
    settled_at: BTreeMap<Partition, Vec<NodeId>>,
    /// Partitions some node's current owners differ for: none of them settles in this look.
    diverged: BTreeSet<Partition>,
    checked: usize,
    reported: bool,
}

impl SettleCheck {
    /// A look, at `now_us`, at up to `max` settling partitions of `placement` (the first ones
    /// in order). `since_us` says since when each has been settling with its present owner
    /// sets (on this node's clock): only an exchange started since then is evidence.
    /// `exchanges` are this node's own, as it would answer [`SyncRpc::OwnerSets`]. Every one
    /// of `members` is asked where it sends reads and writes now.
    pub fn new(
        placement: Arc<Placement>,
        members: &[NodeId],
        max: usize,
        now_us: u64,
        since_us: BTreeMap<Partition, u64>,
        exchanges: &BTreeMap<Partition, Vec<Exchanged>>,
    ) -> SettleCheck {
        let mut per_node: BTreeMap<NodeId, Vec<Partition>> = BTreeMap::new();
        let mut checked = 0;
        for partition in placement.settling().keys().take(max) {
            checked += 1;
            let mut concerned = placement.co_owners(*partition);
            if placement.keeps(placement.this(), *partition) {
                concerned.push(placement.this());
            }
            // The nodes its learned sets came from may say they have settled it.
            for set in placement.partition_sets(*partition).iter().skip(1) {
                for node in placement.learned_from(*partition, set) {
                    if !concerned.contains(node) {
                        concerned.push(*node);
                    }
                }
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
            synced: BTreeMap::new(),
            now_us,
            since_us,
            found: FoundSets::default(),
            settled_at: BTreeMap::new(),
            diverged: BTreeSet::new(),
            checked,
            reported: false,
        };
        let this = check.placement.this();
        for (partition, exchanges) in exchanges {
            check.linked(this, *partition, exchanges);
        }
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
                let request = Request::Sync(SyncRpc::OwnerSets { partitions: set, exchanges: true });
                check.queue.push(Outgoing { token, to: node, request });
                check.asked.insert(token, Asked::Sets(node, partitions));
                token += 1;
            }
        }
        // Every other member may coordinate: where it writes now matters even if it owns nothing.
        let all: Vec<Partition> = check.placement.settling().keys().take(max).copied().collect();
        let asked: Vec<NodeId> = check.asked.values().map(Asked::node).collect();
        for node in members.iter().filter(|node| **node != this && !asked.contains(node)) {
            let request = Request::Sync(SyncRpc::OwnerSets {
                partitions: PartitionSet::of(all.iter().copied()),
                exchanges: false,
            });
            check.queue.push(Outgoing { token, to: *node, request });
            check.asked.insert(token, Asked::Sets(*node, all.clone()));
            token += 1;
        }
        check
    }
}

impl SettleCheck {
    /// Takes in the exchanges `node` says it completed of `partition`: one that started
    /// since exchange evidence counts for the partition here links `node` to its peer (`node`
    /// came to hold what the peer held), and a mutual one the peer to `node` too. The age was
    /// measured when `node` answered, which is after the questions went out, so counting
    /// it back from then dates each exchange no later than it really started.
    fn linked(&mut self, node: NodeId, partition: Partition, exchanges: &[Exchanged]) {
        let Some(since) = self.since_us.get(&partition) else { return };
        let counts = |age: u64| self.now_us.saturating_sub(age) >= *since;
        let mut pairs = Vec::new();
        for exchange in exchanges {
            if counts(exchange.pulled_age_us) {
                pairs.push((node, exchange.peer));
            }
            if exchange.mutual_age_us.is_some_and(counts) {
                pairs.push((exchange.peer, node));
            }
        }
        if !pairs.is_empty() {
            self.synced.entry(partition).or_default().extend(pairs);
        }
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
            (Some(Asked::Sets(node, partitions)), Ok(Reply::OwnerSets { coordinating, owners }))
                if owners.len() == partitions.len() =>
            {
                for (partition, PartitionOwners { mut sets, exchanges }) in partitions.into_iter().zip(owners) {
                    self.linked(node, partition, &exchanges);
                    let owners = self.placement.owners(partition);
                    match sets.as_slice() {
                        // Only a coordinating node's placement is complete enough to vouch.
                        [only] if coordinating && same_owners(only, &owners) => {
                            self.settled_at.entry(partition).or_default().push(node)
                        }
                        // A node writing elsewhere now keeps writing there after any evidence.
                        [current, ..] if coordinating && !same_owners(current, &owners) => {
                            self.diverged.insert(partition);
                        }
                        _ => {}
                    }
                    // Only the sets peers write to now: their previous sets are covered by
                    // their own evidence, and adopting them would hand a settled partition
                    // back and forth.
                    sets.truncate(1);
                    self.found.add(&self.placement, partition, sets, node);
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
        let mut findings = Findings::default();
        for (partition, previous) in self.placement.settling().iter().take(self.checked) {
            // Sets learned from a node that has since settled the partition onto the same
            // owners are covered by that node's evidence; the rest need this look's.
            let settled_at = self.settled_at.get(partition).map_or(&[][..], Vec::as_slice);
            let (vouched, rest): (Vec<&Vec<NodeId>>, Vec<&Vec<NodeId>>) = previous.iter().partition(|set| {
                self.placement.learned_from(*partition, set).iter().any(|from| settled_at.contains(from))
            });
            let rest: Vec<Vec<NodeId>> = rest.into_iter().cloned().collect();
            let digests = self.digests.get(partition).map_or(&[][..], Vec::as_slice);
            let synced = self.synced.get(partition).map_or(&[][..], Vec::as_slice);
            if self.found.0.contains_key(partition) || self.diverged.contains(partition) {
                // Another view writes elsewhere, perhaps to a vouched set: nothing settles or
                // is dropped before the views agree.
                continue;
            }
            if rest.is_empty() || self.placement.covers(*partition, &rest, digests, synced) {
                findings.settled.push(*partition);
                continue;
            }
            findings.vouched.extend(vouched.into_iter().map(|set| (*partition, set.clone())));
        }
        let agreed = self.placement.settling().keys().take(self.checked).copied();
        let agreed = agreed.filter(|p| !self.found.0.contains_key(p) && !self.diverged.contains(p)).collect();
        findings.found = std::mem::take(&mut self.found).into_list();
        Some(SettleReport { placement: self.placement.clone(), checked: self.checked, findings, agreed })
    }

    fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.asked.is_empty()
    }
}

/// Owner sets peers honour that a placement does not, by partition, with the peers that
/// honour each.
#[derive(Debug, Default)]
struct FoundSets(Sources);

impl FoundSets {
    /// Keeps those of `peer`'s `sets` for `partition` that are plausible and new.
    fn add(&mut self, placement: &Placement, partition: Partition, sets: Vec<Vec<NodeId>>, peer: NodeId) {
        let n = placement.quorum().n;
        for set in sets.into_iter().filter(|set| plausible(set, n)) {
            if placement.honours(partition, &set) {
                continue;
            }
            let found = self.0.entry(partition).or_default();
            match found.iter_mut().find(|(known, _)| same_owners(known, &set)) {
                Some((_, peers)) => peers.push(peer),
                None => found.push((set, vec![peer])),
            }
        }
    }

    fn into_list(self) -> Vec<(Partition, Vec<NodeId>, NodeId)> {
        let mut list = Vec::new();
        for (partition, sets) in self.0 {
            for (set, peers) in sets {
                list.extend(peers.into_iter().map(|peer| (partition, set.clone(), peer)));
            }
        }
        list
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
    /// Owner sets their placements honour that this one does not, with who honours each.
    pub found: Vec<(Partition, Vec<NodeId>, NodeId)>,
}

/// Asks other members which owner sets their placements honour, for every partition: what a
/// node learns before it coordinates again after it was cut off from the majority (or first
/// joins), since the majority may have moved partitions meanwhile.
#[derive(Debug)]
pub struct LearnSets {
    placement: Arc<Placement>,
    /// The peer asked under each token.
    peers: Vec<NodeId>,
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
                request: Request::Sync(SyncRpc::OwnerSets { partitions: all.clone(), exchanges: false }),
            })
            .collect();
        LearnSets {
            placement,
            peers: peers.to_vec(),
            waiting: queue.len(),
            queue,
            answered: 0,
            found: FoundSets::default(),
            reported: false,
        }
    }
}

impl Op for LearnSets {
    type Output = LearnReport;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        self.waiting = self.waiting.saturating_sub(1);
        let Some(from) = usize::try_from(token).ok().and_then(|token| self.peers.get(token).copied()) else { return };
        let Ok(Reply::OwnerSets { owners: sets, .. }) = reply else { return };
        if sets.len() != shoal_membership::PARTITIONS {
            return;
        }
        self.answered += 1;
        for (partition, owners) in Partition::all().zip(sets) {
            self.found.add(&self.placement, partition, owners.sets, from);
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
