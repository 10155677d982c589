//! Who owns a key, as this node sees it, including ownership transitions (docs/ARCHITECTURE.md §5).
//!
//! When the ring changes, the owners of some partitions change. Until the new owners are
//! confirmed to hold what the previous ones held, an acknowledged write may live only on the
//! previous ones. So each such partition stays *settling*: writes need a quorum among its
//! previous owners *and* among the new ones, reads ask both and need a quorum of each. The
//! transition of a partition ends on evidence, not on a timer: when enough current owners are
//! known to hold what enough previous owners held, through identical digests or completed
//! anti-entropy exchanges ([`Placement::settled_by`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_membership::{MemberState, MemberView, Partition, Ring, RingMember};
use shoal_storage::NodeId;

/// The partition of a key placed by `key` (a path, a directory, a block's hash).
pub fn partition_of(key: &[u8]) -> Partition {
    Partition::of_position(shoal_storage::position(key))
}

/// Replication factor and quorum sizes (docs/ARCHITECTURE.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Copies of every block and record.
    pub n: usize,
    /// Owners that must make a write durable before it is acknowledged.
    pub w: usize,
    /// Owners whose answers a read merges before answering.
    pub r: usize,
}

impl Quorum {
    /// N = 3, W = 2, R = 2.
    pub const DEFAULT: Quorum = Quorum { n: 3, w: 2, r: 2 };
    /// One copy, for a single node.
    pub const SINGLE: Quorum = Quorum { n: 1, w: 1, r: 1 };
}

/// The owner sets a settling partition had before its unconfirmed changes: the previous
/// owners in this node's ring, and owner sets other nodes' views were found to use for it.
pub type Settling = BTreeMap<Partition, Vec<Vec<NodeId>>>;

/// For previous sets learned from other nodes (not this node's own history): the nodes each
/// was learned from. Such a set is covered once one of them says it has settled the
/// partition onto the same current owners: its own evidence covered every set it honoured.
pub type Sources = BTreeMap<Partition, Vec<(Vec<NodeId>, Vec<NodeId>)>>;

/// What one look at other nodes found (docs/ARCHITECTURE.md §5), for
/// [`PlacementTracker::confirm`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Partitions whose change the evidence proved complete.
    pub settled: Vec<Partition>,
    /// Previous sets learned from a node that has since settled the partition onto the same
    /// current owners.
    pub vouched: Vec<(Partition, Vec<NodeId>)>,
    /// Owner sets another node honours that this placement does not, with that node.
    pub found: Vec<(Partition, Vec<NodeId>, NodeId)>,
}

impl Findings {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.settled.is_empty() && self.vouched.is_empty() && self.found.is_empty()
    }
}

/// Whether two owner sets hold the same members (in any order).
pub fn same_owners(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|node| b.contains(node))
}

/// The owners of every key as one node sees them at one moment: immutable, shared by the
/// requests that started under it.
#[derive(Clone, Debug)]
pub struct Placement {
    this: NodeId,
    quorum: Quorum,
    current: Ring,
    /// Partitions whose ownership changed without confirmation yet, with their previous owners.
    settling: Arc<Settling>,
    /// Where the previous sets learned from other nodes came from.
    sources: Arc<Sources>,
    /// How many members this node knows the cluster has (the ring's members plus those
    /// evicted but never seen leaving): quorums never shrink below what such a cluster needs.
    members_known: usize,
}

impl Placement {
    /// The placement of node `this` over `current`, still honouring the previous owners of
    /// the `settling` partitions, in a cluster this node knows to have `members_known` members.
    pub fn new(
        this: NodeId,
        quorum: Quorum,
        current: Ring,
        settling: Arc<Settling>,
        members_known: usize,
    ) -> Placement {
        let members_known = members_known.max(current.members().len()).max(1);
        Placement { this, quorum, current, settling, sources: Arc::default(), members_known }
    }

    /// A placement where `this` is the only member it knows.
    pub fn alone(this: NodeId, quorum: Quorum) -> Placement {
        let member = RingMember { node_id: this.0, zone: String::new(), capacity_bytes: 1 };
        Placement::new(this, quorum, Ring::new(vec![member], quorum.n), Arc::default(), 1)
    }

    /// The node this placement belongs to.
    pub fn this(&self) -> NodeId {
        self.this
    }

    /// The configured quorum sizes.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// The current ring.
    pub fn ring(&self) -> &Ring {
        &self.current
    }

    /// Whether some partition still honours its previous owners.
    pub fn in_transition(&self) -> bool {
        !self.settling.is_empty()
    }

    /// The settling partitions with their previous owners.
    pub fn settling(&self) -> &Settling {
        &self.settling
    }

    /// The current owners of `partition`.
    pub fn owners(&self, partition: Partition) -> Vec<NodeId> {
        self.current.owners(partition).map(|member| NodeId(member.node_id)).collect()
    }

    /// Whether `node` owns `partition` now or, while it settles, did before: whether it must
    /// keep what it holds there.
    pub fn keeps(&self, node: NodeId, partition: Partition) -> bool {
        self.current.owns(node.0, partition)
            || self.settling.get(&partition).is_some_and(|sets| sets.iter().any(|old| old.contains(&node)))
    }

    /// The nodes previous set `set` of `partition` was learned from (none for a set from this
    /// node's own history).
    pub fn learned_from(&self, partition: Partition, set: &[NodeId]) -> &[NodeId] {
        let sources = self.sources.get(&partition).into_iter().flatten();
        sources.filter(|(known, _)| same_owners(known, set)).map(|(_, from)| from.as_slice()).next().unwrap_or(&[])
    }

    /// Every member `this` must compare `partition` with: its current owners and, while it
    /// settles, its previous ones (without `this`).
    pub fn co_owners(&self, partition: Partition) -> Vec<NodeId> {
        let mut all = self.owners(partition);
        for old in self.settling.get(&partition).into_iter().flatten().flatten() {
            if !all.contains(old) {
                all.push(*old);
            }
        }
        all.retain(|node| *node != self.this);
        all
    }

    /// The owner sets a request about `key` must reach a quorum in: the current owners, then
    /// the previous owners if the partition is settling.
    pub fn owner_sets(&self, key: &[u8]) -> Vec<Vec<NodeId>> {
        self.quorum_sets(key, 1).into_iter().map(|(set, _)| set).collect()
    }

    /// How many answers a quorum of `size` (W or R) needs from the current owners: `size`,
    /// lowered only when the whole cluster this node knows is smaller (a one-node cluster
    /// with W = 2 writes one copy); never because members are missing from the ring, so a
    /// node cut off from the others, or restarted alone, cannot acknowledge a write nobody
    /// else holds.
    pub fn need(&self, size: usize) -> usize {
        size.min(self.members_known).max(1)
    }

    /// The owner sets of `key`, each with how many of its members must answer for a quorum of
    /// `size` (W or R). A previous set needs at most its size: readers still on that
    /// (smaller, forming) ring asked only those owners.
    pub fn quorum_sets(&self, key: &[u8], size: usize) -> Vec<(Vec<NodeId>, usize)> {
        let partition = partition_of(key);
        let need = self.need(size);
        let mut sets = vec![(self.owners(partition), need)];
        for old in self.settling.get(&partition).into_iter().flatten() {
            sets.push((old.clone(), need.min(old.len())));
        }
        sets
    }

    /// Every owner set of `partition` this placement honours: the current one first.
    pub fn partition_sets(&self, partition: Partition) -> Vec<Vec<NodeId>> {
        let mut sets = vec![self.owners(partition)];
        sets.extend(self.settling.get(&partition).into_iter().flatten().cloned());
        sets
    }

    /// Whether `set` is one of the owner sets this placement honours for `partition`.
    pub fn honours(&self, partition: Partition, set: &[NodeId]) -> bool {
        let mut current = self.current.owners(partition);
        (current.len() == set.len() && current.all(|member| set.contains(&NodeId(member.node_id))))
            || self.settling.get(&partition).into_iter().flatten().any(|known| same_owners(known, set))
    }

    /// Whether the evidence gathered on owners of a settling `partition` proves its change
    /// complete (docs/ARCHITECTURE.md §5). Owner `a` is *linked* to owner `b` when `a` is
    /// known to hold everything `b` held at some moment since the partition began settling:
    /// they showed one identical durable digest (`digests`, which links both ways), or an
    /// anti-entropy exchange brought `a` all `b` held (`synced` holds `(a, b)`). The change is
    /// complete when some group of current owners that meets every current read quorum is
    /// linked, each of its members, to enough owners of every previous set to meet each of
    /// that set's write quorums: every write acknowledged under a previous set is then on
    /// every member of the group, and every read under the current owners meets the group.
    pub fn settled_by(&self, partition: Partition, digests: &[(NodeId, u64)], synced: &[(NodeId, NodeId)]) -> bool {
        let Some(previous) = self.settling.get(&partition) else { return true };
        self.covers(partition, previous, digests, synced)
    }

    /// Whether the evidence covers the `previous` sets of `partition` (see [`settled_by`]).
    ///
    /// [`settled_by`]: Placement::settled_by
    pub fn covers(
        &self,
        partition: Partition,
        previous: &[Vec<NodeId>],
        digests: &[(NodeId, u64)],
        synced: &[(NodeId, NodeId)],
    ) -> bool {
        let current = self.owners(partition);
        let (w, r) = (self.need(self.quorum.w), self.need(self.quorum.r));
        // Every write acknowledged under a previous set is on at least `held` of it: a write
        // quorum while it was current, or the group whose evidence confirmed its own change
        // (below: never smaller than a write quorum of it).
        let old_cover = |old: &[NodeId]| old.len() + 1 - w.min(old.len()).max(1);
        // The group must meet every current read quorum, and be a write quorum of the current
        // set itself: then, once it becomes a previous set in turn, everything acknowledged
        // before is on `held` of it however small it is, so a forming cluster's two-member
        // set that later loses one member for good still settles on the other.
        let current_cover =
            (current.len() + 1).saturating_sub(r).max(w.min(current.len())).clamp(1, current.len().max(1));
        let digest = |node: NodeId| digests.iter().find(|(n, _)| *n == node).map(|(_, d)| *d);
        let linked = |a: NodeId, b: NodeId| {
            a == b || digest(a).is_some_and(|d| digest(b) == Some(d)) || synced.contains(&(a, b))
        };
        // Owner sets have at most N members: every group of current owners can be tried.
        let owners = &current[..current.len().min(16)];
        (1u32..1 << owners.len()).any(|mask| {
            let group: Vec<NodeId> =
                owners.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, node)| *node).collect();
            group.len() >= current_cover
                && previous.iter().all(|old| {
                    old.iter().filter(|held| group.iter().all(|owner| linked(*owner, **held))).count() >= old_cover(old)
                })
        })
    }
}

/// A member as the placement remembers it, across restarts too (the driver persists these):
/// a node restarted alone still knows the cluster it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownMember {
    /// Its ring data.
    pub node_id: u128,
    /// Its failure domain.
    pub zone: String,
    /// Bytes it offers.
    pub capacity_bytes: u64,
    /// Where its RPC listens.
    pub rpc_addr: SocketAddr,
}

/// What the placement remembers across restarts (the driver persists it): the members, and
/// the partitions still settling with their previous owners, so a node restarted in the
/// middle of a transition does not forget where acknowledged writes may still be.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterMemory {
    /// Every member remembered.
    pub members: Vec<KnownMember>,
    /// Settling partitions and their previous owners.
    #[serde(default)]
    pub settling: Vec<(Partition, Vec<Vec<u128>>)>,
}

#[derive(Clone, Debug)]
struct Remembered {
    member: KnownMember,
    /// Last time (ms) the view showed it alive, suspect or leaving; since when it is missing
    /// or down counts towards `evict_after`.
    present_ms: u64,
}

/// Follows the membership and yields a new [`Placement`] whenever the ring changes or a
/// partition settles (sans-IO: time is an argument).
///
/// It remembers every member it has seen until that member *leaves*: a member that is down,
/// or simply absent from this node's view (a node that rejoined while it was down never hears
/// of it from foca), stays in the ring until `evict_after_ms` after it was last seen present.
#[derive(Debug)]
pub struct PlacementTracker {
    this: NodeId,
    quorum: Quorum,
    evict_after_ms: u64,
    known: BTreeMap<u128, Remembered>,
    members: Vec<RingMember>,
    current: Arc<Placement>,
    /// Whether the last view showed a strict majority of the members this node knows
    /// (itself included) alive or suspect.
    sees_majority: bool,
    /// Whether the node has joined (it may coordinate, so others may have written under its
    /// view from now on).
    joined: bool,
    /// Until it joins, what its transitions are computed from: the placement it restarted
    /// with (its persisted history), or nothing for a new node. Rings it passes through while
    /// joining never served a client, so they leave no previous sets behind; what others
    /// wrote meanwhile it learns from them.
    base: Option<Arc<Placement>>,
    /// Counts the changes to what [`memory`](PlacementTracker::memory) returns.
    revision: u64,
}

impl PlacementTracker {
    /// A tracker that starts from what a previous run remembered (each member counted as
    /// present at `now_ms`), or alone.
    pub fn new(
        this: NodeId,
        quorum: Quorum,
        evict_after_ms: u64,
        remembered: ClusterMemory,
        now_ms: u64,
    ) -> PlacementTracker {
        let mut tracker = PlacementTracker {
            this,
            quorum,
            evict_after_ms,
            known: remembered
                .members
                .into_iter()
                .map(|member| (member.node_id, Remembered { member, present_ms: now_ms }))
                .collect(),
            members: Vec::new(),
            current: Arc::new(Placement::alone(this, quorum)),
            sees_majority: false,
            joined: false,
            base: None,
            revision: 0,
        };
        tracker.sees_majority = tracker.known.keys().all(|id| *id == this.0);
        let members = tracker.ring_members(now_ms);
        if members.len() > 1 || members.first().is_some_and(|m| m.node_id != this.0) {
            let settling: Settling = remembered
                .settling
                .into_iter()
                .filter(|(partition, sets)| partition.index() < shoal_membership::PARTITIONS && !sets.is_empty())
                .map(|(partition, sets)| {
                    (partition, sets.into_iter().map(|set| set.into_iter().map(NodeId).collect()).collect())
                })
                .collect();
            tracker.current = Arc::new(Placement::new(
                this,
                quorum,
                Ring::new(members.clone(), quorum.n),
                Arc::new(settling),
                tracker.known.len(),
            ));
            tracker.members = members;
            tracker.base = Some(tracker.current.clone());
        }
        tracker
    }

    /// The node joined its cluster: from now on every ring change leaves previous sets.
    pub fn joined(&mut self) {
        self.joined = true;
        self.base = None;
    }

    /// The placement in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.current.clone()
    }

    /// A number that changes whenever [`memory`](PlacementTracker::memory) may have.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What to persist.
    pub fn memory(&self) -> ClusterMemory {
        ClusterMemory {
            members: self.known.values().map(|known| known.member.clone()).collect(),
            settling: self
                .current
                .settling
                .iter()
                .map(|(partition, sets)| {
                    (*partition, sets.iter().map(|set| set.iter().map(|node| node.0).collect()).collect())
                })
                .collect(),
        }
    }

    /// Where member `node` listens for RPC, if known.
    pub fn rpc_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.known.get(&node.0).map(|known| known.member.rpc_addr)
    }

    /// Takes in what a look under `checked` (the placement the evidence was gathered under)
    /// found, for each partition still settling exactly as it was then (same previous and
    /// current owners): settled partitions settle; vouched previous sets are dropped; found
    /// owner sets that other nodes' views use become previous sets too, so reads and writes
    /// reach them until evidence covers them as well. Returns the new placement if anything
    /// changed.
    pub fn confirm(&mut self, checked: &Placement, findings: &Findings) -> Option<Arc<Placement>> {
        let unchanged = |partition: &Partition| {
            self.current.settling.get(partition) == checked.settling.get(partition)
                && self.current.owners(*partition) == checked.owners(*partition)
        };
        let settled: Vec<Partition> = findings.settled.iter().copied().filter(unchanged).collect();
        let vouched: Vec<&(Partition, Vec<NodeId>)> =
            findings.vouched.iter().filter(|(partition, _)| unchanged(partition)).collect();
        let found: Vec<&(Partition, Vec<NodeId>, NodeId)> = findings
            .found
            .iter()
            .filter(|(partition, set, _)| unchanged(partition) && !checked.honours(*partition, set))
            .collect();
        if settled.is_empty() && vouched.is_empty() && found.is_empty() {
            return None;
        }
        let mut settling = (*self.current.settling).clone();
        let mut sources = (*self.current.sources).clone();
        for partition in settled {
            settling.remove(&partition);
        }
        for (partition, set) in vouched {
            if let Some(sets) = settling.get_mut(partition) {
                sets.retain(|known| !same_owners(known, set));
            }
        }
        for (partition, set, from) in found {
            let sets = settling.entry(*partition).or_default();
            if !sets.iter().any(|known| same_owners(known, set)) {
                sets.push(set.clone());
            }
            let learned = sources.entry(*partition).or_default();
            match learned.iter_mut().find(|(known, _)| same_owners(known, set)) {
                Some((_, nodes)) if !nodes.contains(from) => nodes.push(*from),
                Some(_) => {}
                None => learned.push((set.clone(), vec![*from])),
            }
        }
        settling.retain(|_, sets| !sets.is_empty());
        let sources = kept_sources(&sources, &settling);
        self.current =
            Arc::new(Placement { settling: Arc::new(settling), sources: Arc::new(sources), ..(*self.current).clone() });
        self.revision += 1;
        Some(self.current.clone())
    }

    /// Whether the last view showed a strict majority of the members this node knows alive
    /// or suspect. Only then may it evict anyone, or coordinate (docs/ARCHITECTURE.md §5).
    pub fn sees_majority(&self) -> bool {
        self.sees_majority
    }

    /// The members of the ring: every member remembered, except those missing for
    /// `evict_after` while this node sees a majority. A node cut off from the majority evicts
    /// no one: the majority may be acknowledging writes under the ring it keeps.
    fn ring_members(&self, now_ms: u64) -> Vec<RingMember> {
        self.known
            .values()
            .filter(|known| {
                known.member.node_id == self.this.0
                    || !self.sees_majority
                    || now_ms.saturating_sub(known.present_ms) < self.evict_after_ms
            })
            .map(|known| RingMember {
                node_id: known.member.node_id,
                zone: known.member.zone.clone(),
                capacity_bytes: known.member.capacity_bytes,
            })
            .collect()
    }

    /// Feeds the current membership view; returns the new placement if it changed. Call it
    /// whenever the view may have changed and periodically, so evictions happen. Members whose
    /// record has not arrived are not placed yet (their zone and capacity are unknown).
    pub fn update(&mut self, now_ms: u64, views: &[MemberView]) -> Option<Arc<Placement>> {
        self.remember(now_ms, views);
        let present = views
            .iter()
            .filter(|view| {
                view.identity.node_id == self.this.0
                    || matches!(view.state, MemberState::Alive | MemberState::Suspect | MemberState::Leaving)
            })
            .filter(|view| self.known.contains_key(&view.identity.node_id))
            .count()
            .max(1);
        self.sees_majority = present * 2 > self.known.len().max(1);
        let members = self.ring_members(now_ms);
        if members.is_empty() {
            return None;
        }
        let known = self.known.len();
        if members != self.members {
            let ring = Ring::new(members.clone(), self.quorum.n);
            // The very first ring has no previous one; a restarted node's comes back with
            // what it remembered as settling.
            let settling = match (&self.base, self.joined) {
                _ if self.members.is_empty() => Settling::new(),
                (_, true) => next_settling(&self.current, &ring),
                (Some(base), false) => next_settling(base, &ring),
                (None, false) => Settling::new(),
            };
            self.members = members;
            let sources = kept_sources(&self.current.sources, &settling);
            let placement = Placement::new(self.this, self.quorum, ring, Arc::new(settling), known);
            self.current = Arc::new(Placement { sources: Arc::new(sources), ..placement });
            self.revision += 1;
            return Some(self.current.clone());
        }
        if known != self.current.members_known {
            let members_known = known.max(self.current.ring().members().len()).max(1);
            self.current = Arc::new(Placement { members_known, ..(*self.current).clone() });
            self.revision += 1;
            return Some(self.current.clone());
        }
        None
    }

    fn remember(&mut self, now_ms: u64, views: &[MemberView]) {
        for view in views {
            let Some(record) = &view.record else { continue };
            let id = view.identity.node_id;
            if view.state == MemberState::Left {
                if self.known.remove(&id).is_some() {
                    self.revision += 1;
                }
                continue;
            }
            let member = KnownMember {
                node_id: id,
                zone: record.zone.clone(),
                capacity_bytes: record.capacity_bytes,
                rpc_addr: record.rpc_addr,
            };
            let present = matches!(view.state, MemberState::Alive | MemberState::Suspect | MemberState::Leaving);
            match self.known.get_mut(&id) {
                Some(known) => {
                    if known.member != member {
                        known.member = member;
                        self.revision += 1;
                    }
                    if present {
                        known.present_ms = now_ms;
                    }
                }
                None => {
                    // First seen down: its absence dates from when the view says it went down.
                    let present_ms = if present { now_ms } else { view.state_since_ms.min(now_ms) };
                    self.known.insert(id, Remembered { member, present_ms });
                    self.revision += 1;
                }
            }
        }
    }
}

/// The sources of the learned sets still in `settling`: a set that became current again, or
/// settled, leaves none behind.
fn kept_sources(sources: &Sources, settling: &Settling) -> Sources {
    let mut kept = Sources::new();
    for (partition, learned) in sources {
        let Some(sets) = settling.get(partition) else { continue };
        let still: Vec<_> =
            learned.iter().filter(|(set, _)| sets.iter().any(|s| same_owners(s, set))).cloned().collect();
        if !still.is_empty() {
            kept.insert(*partition, still);
        }
    }
    kept
}

/// The settling partitions after the ring becomes `ring`: every partition whose owners
/// differ from those it last settled with. A partition already settling keeps its older
/// previous sets (what was acknowledged under them is still only guaranteed there); a
/// previous set equal to the new owners is simply current again.
fn next_settling(old: &Placement, ring: &Ring) -> Settling {
    let mut settling = Settling::new();
    for partition in Partition::all() {
        let now: Vec<NodeId> = ring.owners(partition).map(|member| NodeId(member.node_id)).collect();
        let mut previous = old.settling.get(&partition).cloned().unwrap_or_default();
        let before = old.owners(partition);
        if !previous.iter().any(|set| same_owners(set, &before)) {
            previous.push(before);
        }
        previous.retain(|set| !same_owners(set, &now));
        if !previous.is_empty() {
            settling.insert(partition, previous);
        }
    }
    settling
}

#[cfg(test)]
mod tests {
    use shoal_membership::{MemberRecord, NodeIdentity, RecordStatus};

    use super::*;

    fn id(i: u128) -> u128 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    }

    fn view(i: u128, state: MemberState) -> MemberView {
        let addr: SocketAddr = ([127, 0, 0, 1], 7000 + i as u16).into();
        MemberView {
            identity: NodeIdentity { node_id: id(i), addr, generation: 1 },
            state,
            record: Some(MemberRecord {
                node_id: id(i),
                generation: 1,
                version: 0,
                zone: "z".into(),
                capacity_bytes: (1 << 40) + i as u64,
                http_addr: addr,
                rpc_addr: addr,
                status: RecordStatus::Active,
                disk_used_bytes: 0,
            }),
            state_since_ms: 0,
        }
    }

    fn views(alive: std::ops::RangeInclusive<u128>) -> Vec<MemberView> {
        alive.map(|i| view(i, MemberState::Alive)).collect()
    }

    fn settled(partition: Partition) -> Findings {
        Findings { settled: vec![partition], ..Findings::default() }
    }

    /// A tracker of a node that has joined its cluster.
    fn tracker(remembered: ClusterMemory) -> PlacementTracker {
        let mut tracker = PlacementTracker::new(NodeId(id(1)), Quorum::DEFAULT, 60_000, remembered, 0);
        tracker.joined();
        tracker
    }

    #[test]
    fn rings_a_node_passes_through_while_joining_leave_no_previous_sets() {
        let mut joining = PlacementTracker::new(NodeId(id(1)), Quorum::DEFAULT, 60_000, ClusterMemory::default(), 0);
        joining.update(0, &views(1..=2));
        assert!(joining.update(1, &views(1..=3)).expect("a third member").settling().is_empty());
        joining.joined();
        assert!(joining.update(2, &views(1..=4)).expect("a fourth member").in_transition());
    }

    /// A placement over `current` whose partition `p` settles from `previous`.
    fn settling(previous: &[u128], current: &[u128]) -> (Placement, Partition, Vec<NodeId>, Vec<NodeId>) {
        let member = |i: &u128| RingMember { node_id: id(*i), zone: "z".into(), capacity_bytes: 1 << 40 };
        let ring = Ring::new(current.iter().map(member).collect(), 3);
        let partition = Partition(7);
        let old: Vec<NodeId> = previous.iter().map(|i| NodeId(id(*i))).collect();
        let now: Vec<NodeId> = ring.owners(partition).map(|m| NodeId(m.node_id)).collect();
        let settling = Arc::new(Settling::from([(partition, vec![old.clone()])]));
        (Placement::new(NodeId(id(1)), Quorum::DEFAULT, ring, settling, 5), partition, old, now)
    }

    #[test]
    fn the_ring_holds_alive_suspect_and_recently_down_members_never_those_that_left_or_have_no_record() {
        let mut tracker = tracker(ClusterMemory::default());
        let mut down_recently = view(3, MemberState::Down);
        down_recently.state_since_ms = 50_000;
        let mut down_long = view(4, MemberState::Down);
        down_long.state_since_ms = 1_000;
        let mut no_record = view(6, MemberState::Alive);
        no_record.record = None;
        let views = vec![
            view(1, MemberState::Alive),
            view(2, MemberState::Suspect),
            down_recently,
            down_long,
            view(5, MemberState::Left),
            no_record,
            view(7, MemberState::Alive),
            view(8, MemberState::Alive),
        ];
        let placement = tracker.update(70_000, &views).expect("a ring");
        let mut ids: Vec<u128> = placement.ring().members().iter().map(|m| m.node_id).collect();
        ids.sort_unstable();
        let mut expected = vec![id(1), id(2), id(3), id(7), id(8)];
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }

    #[test]
    fn a_ring_change_keeps_the_previous_owners_of_moved_partitions_until_evidence_confirms_them() {
        let mut tracker = tracker(ClusterMemory::default());
        tracker.update(0, &views(1..=3)).expect("first ring");
        let grown = tracker.update(10, &views(1..=4)).expect("a new ring");
        assert!(grown.in_transition());
        let moved = (0u32..1000).map(|i| i.to_le_bytes()).find(|key| grown.owner_sets(key).len() == 2);
        let moved = moved.expect("a fourth member takes over some keys");
        assert_eq!(grown.owner_sets(&moved)[0].len(), 3);
        assert!(tracker.update(3_600_000, &views(1..=4)).is_none(), "time alone ends nothing");
        let partition = partition_of(&moved);
        let mut gone = views(1..=3);
        gone.push(view(4, MemberState::Left));
        tracker.update(3_600_001, &gone).expect("the fourth is gone");
        assert!(
            tracker.confirm(&grown, &settled(partition)).is_none(),
            "evidence from an older placement counts for nothing"
        );
        let regrown = tracker.update(3_600_002, &views(1..=4)).expect("and back");
        let settled = tracker.confirm(&regrown, &settled(partition)).expect("confirmed under the placement in force");
        assert_eq!(settled.owner_sets(&moved).len(), 1);
        assert_eq!(settled.ring().members(), regrown.ring().members());
        // Another node's view places the partition elsewhere: that set is honoured too.
        let elsewhere = vec![NodeId(id(2)), NodeId(id(3)), NodeId(id(9))];
        let from = NodeId(id(2));
        let found = Findings { found: vec![(partition, elsewhere.clone(), from)], ..Findings::default() };
        let widened = tracker.confirm(&settled, &found).expect("a set found in another view");
        assert!(widened.owner_sets(&moved).iter().any(|set| same_owners(set, &elsewhere)));
        assert_eq!(widened.learned_from(partition, &elsewhere), &[from]);
        // The node it was learned from settles the partition onto the same owners: covered.
        let vouched = Findings { vouched: vec![(partition, elsewhere.clone())], ..Findings::default() };
        let narrowed = tracker.confirm(&widened, &vouched).expect("a vouched set is dropped");
        assert_eq!(narrowed.owner_sets(&moved).len(), 1);
        assert!(narrowed.learned_from(partition, &elsewhere).is_empty());
    }

    #[test]
    fn evidence_needs_a_group_with_one_digest_covering_previous_write_quorums_and_current_read_quorums() {
        // One owner replaced by another (A B C -> A B D): A and B agreeing is enough.
        let (placement, p, old, now) = settling(&[1, 2, 3], &[1, 2, 4]);
        let common: Vec<NodeId> = old.iter().filter(|n| now.contains(n)).copied().collect();
        assert!(common.len() >= 2, "the test ring keeps two owners: {old:?} {now:?}");
        assert!(placement.settled_by(p, &[(common[0], 9), (common[1], 9)], &[]));
        assert!(!placement.settled_by(p, &[(common[0], 9), (common[1], 8)], &[]), "owners that differ prove nothing");
        // Only one previous owner in the group: a write acknowledged by the two others is missed.
        let newcomer = *now.iter().find(|n| !old.contains(n)).expect("a new owner");
        assert!(!placement.settled_by(p, &[(common[0], 9), (newcomer, 9)], &[]));
        assert!(placement.settled_by(p, &[(common[0], 9), (common[1], 9), (newcomer, 3)], &[]));
    }

    #[test]
    fn owners_linked_by_completed_exchanges_settle_a_partition_whose_digests_never_meet() {
        // Written without pause: no two owners ever show one digest.
        let (placement, p, old, now) = settling(&[1, 2, 3], &[1, 2, 4]);
        let digests: Vec<(NodeId, u64)> = old.iter().chain(&now).enumerate().map(|(i, n)| (*n, i as u64)).collect();
        assert!(!placement.settled_by(p, &digests, &[]));
        let common: Vec<NodeId> = old.iter().filter(|n| now.contains(n)).copied().collect();
        // Linked both ways (a mutual exchange, or one each way).
        let both = [(common[1], common[0]), (common[0], common[1])];
        assert!(placement.settled_by(p, &digests, &both));
        let newcomer = *now.iter().find(|n| !old.contains(n)).expect("a new owner");
        assert!(!placement.settled_by(p, &digests, &[(newcomer, common[0]), (common[0], newcomer)]));

        // Every owner replaced: two new owners must each be linked to the same two old ones.
        let (placement, p, old, now) = settling(&[1, 2, 3], &[4, 5, 6]);
        let (a, b) = (now[0], now[1]);
        let crossed = [(a, old[0]), (a, old[1]), (b, old[2])];
        assert!(!placement.settled_by(p, &[], &crossed), "a write on old[0] and old[1] never reached b");
        let backwards = [(a, old[0]), (a, old[1]), (old[0], b), (b, old[1])];
        assert!(!placement.settled_by(p, &[], &backwards), "old[0] took b's data, not b old[0]'s");
        let covered = [(a, old[0]), (a, old[1]), (b, old[0]), (b, old[1])];
        assert!(placement.settled_by(p, &[], &covered));
    }

    #[test]
    fn a_side_cut_off_from_most_previous_owners_of_a_partition_never_settles_it() {
        // Previous owners D E A; the side holding A B C evicted D and E: only A can answer.
        let (placement, p, old, now) = settling(&[4, 5, 1], &[1, 2, 3]);
        let digests: Vec<(NodeId, u64)> = now.iter().map(|n| (*n, 1)).collect();
        assert!(old.iter().filter(|n| digests.iter().any(|(d, _)| d == *n)).count() < 2);
        assert!(!placement.settled_by(p, &digests, &[]));
        let reads = placement.quorum_sets(&[0], 2);
        assert!(reads.iter().all(|(set, need)| *need <= set.len()));
    }

    #[test]
    fn a_cluster_of_one_needs_one_answer_and_a_node_cut_off_from_the_majority_evicts_no_one() {
        let alone = Placement::alone(NodeId(7), Quorum::DEFAULT);
        assert_eq!(alone.quorum_sets(b"/x", 2), vec![(vec![NodeId(7)], 1)]);
        // Five members, then this node and one other cut off from the three others for
        // longer than `evict_after`: the majority may be writing under the ring it keeps, so
        // this side keeps it too.
        let mut tracker = tracker(ClusterMemory::default());
        tracker.update(0, &views(1..=5));
        let mut cut_off = views(1..=2);
        cut_off.extend((3..=5).map(|i| view(i, MemberState::Down)));
        assert!(tracker.update(61_000, &cut_off).is_none(), "no eviction without a majority");
        assert!(!tracker.sees_majority());
        assert_eq!(tracker.placement().ring().members().len(), 5);
        // The side with three of five evicts the other two.
        let mut majority = views(1..=3);
        majority.extend((4..=5).map(|i| view(i, MemberState::Down)));
        let evicted = tracker.update(122_000, &majority).expect("evictions change the ring");
        assert!(tracker.sees_majority());
        assert_eq!(evicted.ring().members().len(), 3);
    }

    #[test]
    fn a_restarted_node_places_by_what_it_remembers_and_a_member_that_left_is_forgotten() {
        let mut before = tracker(ClusterMemory::default());
        before.update(0, &views(1..=4));
        let grown = before.update(1, &views(1..=5)).expect("a fifth member");
        let remembered = before.memory();
        assert_eq!(remembered.members.len(), 5);
        assert_eq!(remembered.settling.len(), grown.settling().len());
        let config = bincode::config::standard();
        let encoded = bincode::serde::encode_to_vec(&remembered, config).expect("encodes");
        let (decoded, _): (ClusterMemory, usize) =
            bincode::serde::decode_from_slice(&encoded, config).expect("decodes");
        let mut after = tracker(decoded);
        assert_eq!(after.placement().ring().members().len(), 5, "restarted alone, it still knows five");
        assert_eq!(after.placement().settling(), grown.settling(), "and what was still settling");
        assert!(after.rpc_addr(NodeId(id(3))).is_some());
        // Nobody shows up for `evict_after`: alone, it evicts no one.
        assert!(after.update(60_001, &views(1..=1)).is_none());
        assert_eq!(after.placement().ring().members().len(), 5);
        assert_eq!(after.placement().quorum_sets(b"/k", 2)[0].1, 2);
        // A member that leaves on purpose is forgotten and no longer counts.
        let mut leaving = views(1..=4);
        leaving.push(view(5, MemberState::Left));
        let placement = after.update(60_002, &leaving).expect("four back, one left");
        assert_eq!(placement.ring().members().len(), 4);
        assert_eq!(after.memory().members.len(), 4);
    }

    #[test]
    fn disk_usage_changing_is_not_a_ring_change() {
        let mut tracker = tracker(ClusterMemory::default());
        tracker.update(0, &views(1..=3));
        tracker.update(10, &views(1..=4)).expect("a fourth member");
        let mut drifted = views(1..=4);
        if let Some(record) = drifted[1].record.as_mut() {
            record.disk_used_bytes += 1 << 30;
        }
        assert!(tracker.update(500, &drifted).is_none(), "a member filling its disk is not a new ring");
    }

    #[test]
    fn a_second_change_during_a_transition_keeps_the_owners_from_before_it() {
        let mut tracker = tracker(ClusterMemory::default());
        let original = tracker.update(0, &views(1..=3)).expect("three members");
        let first = tracker.update(10, &views(1..=4)).expect("a fourth member");
        let second = tracker.update(20, &views(1..=5)).expect("a fifth member");
        for partition in first.settling().keys() {
            let sets = second.partition_sets(*partition);
            assert!(sets.iter().any(|set| same_owners(set, &original.owners(*partition))), "{partition:?}: {sets:?}");
        }
        // Back to the first members: the first owners are current again, not settling; the
        // owner sets in between stay until evidence covers them.
        let mut back = views(1..=3);
        back.extend([view(4, MemberState::Left), view(5, MemberState::Left)]);
        let back = tracker.update(30, &back).expect("back to three");
        for (partition, sets) in back.settling() {
            assert!(!sets.iter().any(|set| same_owners(set, &original.owners(*partition))));
        }
    }

    #[test]
    fn a_forming_cluster_settles_once_every_member_holds_what_the_smaller_ring_had() {
        let mut tracker = tracker(ClusterMemory::default());
        tracker.update(0, &views(1..=1));
        let grown = tracker.update(10, &views(1..=2)).expect("a second member");
        for i in 0u32..50 {
            for (set, need) in grown.quorum_sets(&i.to_le_bytes(), 2) {
                assert!(need <= set.len(), "every set can reach its quorum: {set:?} needs {need}");
            }
        }
        // The first member alone held everything, but both must hold it before the partition
        // settles: each is then enough, should the other be lost later.
        let p = partition_of(&0u32.to_le_bytes());
        assert!(!grown.settled_by(p, &[(NodeId(id(1)), 5)], &[]));
        assert!(grown.settled_by(p, &[(NodeId(id(1)), 5), (NodeId(id(2)), 5)], &[]));
        let later = Placement::new(
            NodeId(id(1)),
            Quorum::DEFAULT,
            Ring::new(
                (1..=3).map(|i| RingMember { node_id: id(i), zone: "z".into(), capacity_bytes: 1 << 40 }).collect(),
                3,
            ),
            Arc::new(Settling::from([(p, vec![vec![NodeId(id(1)), NodeId(id(2))]])])),
            3,
        );
        let linked = [(NodeId(id(3)), NodeId(id(1)))];
        assert!(later.settled_by(p, &[], &linked), "the two-member set settles on one of its members");
    }
}
