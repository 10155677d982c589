//! Who owns a key, as this node sees it, including ownership transitions (docs/ARCHITECTURE.md §5).
//!
//! When the ring changes, the owners of some keys change. Until the new owners have caught up,
//! an acknowledged write may live only on the old ones. So for a while after every change the
//! placement keeps the previous ring too: writes need a quorum among the old owners *and* among
//! the new ones, reads ask both and need a quorum of each, and read repair (plus the hand-off
//! that pushes records to their new owners) fills the new owners in. A read that starts after
//! a write was acknowledged therefore meets at least one copy of it as long as the reader's and
//! the writer's views differ by at most the one change each still remembers.

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

/// The owners of every key as one node sees them at one moment: immutable, shared by the
/// requests that started under it.
#[derive(Clone, Debug)]
pub struct Placement {
    this: NodeId,
    quorum: Quorum,
    current: Ring,
    /// The ring before the last change, while that change is still settling.
    previous: Option<Ring>,
    /// How many members this node knows the cluster has (the ring's members plus those
    /// evicted but never seen leaving): quorums never shrink below what such a cluster needs.
    members_known: usize,
}

impl Placement {
    /// The placement of node `this` over `current`, still honouring `previous` owners, in a
    /// cluster this node knows to have `members_known` members.
    pub fn new(this: NodeId, quorum: Quorum, current: Ring, previous: Option<Ring>, members_known: usize) -> Placement {
        let members_known = members_known.max(current.members().len()).max(1);
        Placement { this, quorum, current, previous, members_known }
    }

    /// A placement where `this` is the only member it knows.
    pub fn alone(this: NodeId, quorum: Quorum) -> Placement {
        let member = RingMember { node_id: this.0, zone: String::new(), capacity_bytes: 1 };
        Placement::new(this, quorum, Ring::new(vec![member], quorum.n), None, 1)
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

    /// Whether a previous ring is still being honoured.
    pub fn in_transition(&self) -> bool {
        self.previous.is_some()
    }

    /// The previous ring, while it is still honoured.
    pub fn previous_ring(&self) -> Option<&Ring> {
        self.previous.as_ref()
    }

    /// Whether `node` owns `partition` in the current ring or, during a transition, in the
    /// previous one: whether it must keep what it holds there.
    pub fn keeps(&self, node: NodeId, partition: Partition) -> bool {
        self.current.owns(node.0, partition) || self.previous.as_ref().is_some_and(|ring| ring.owns(node.0, partition))
    }

    /// The owner sets a request about `key` must reach a quorum in: the current owners, then
    /// the previous owners if they differ.
    pub fn owner_sets(&self, key: &[u8]) -> Vec<Vec<NodeId>> {
        self.quorum_sets(key, 1).into_iter().map(|(set, _)| set).collect()
    }

    /// The owner sets of `key`, each with how many of its members must answer for a quorum of
    /// `size` (W or R). The current set needs `size`, lowered only when the whole cluster this
    /// node knows is smaller (a one-node cluster with W = 2 writes one copy); never because
    /// members are missing from the ring, so a node cut off from the others, or restarted
    /// alone, cannot acknowledge a write nobody else holds. A previous set needs at most its
    /// size: readers still on that (smaller, forming) ring asked only those owners.
    pub fn quorum_sets(&self, key: &[u8], size: usize) -> Vec<(Vec<NodeId>, usize)> {
        let partition = partition_of(key);
        let owners = |ring: &Ring| ring.owners(partition).map(|m| NodeId(m.node_id)).collect::<Vec<_>>();
        let need = size.min(self.members_known).max(1);
        let current = owners(&self.current);
        let mut sets = vec![(current.clone(), need)];
        if let Some(previous) = &self.previous {
            let old = owners(previous);
            let mut sorted_old = old.clone();
            let mut sorted_new = current;
            sorted_old.sort();
            sorted_new.sort();
            if sorted_old != sorted_new && !old.is_empty() {
                let old_need = need.min(old.len());
                sets.push((old, old_need));
            }
        }
        sets
    }

    /// The owners of `key` in the current ring that did not own it in the previous one
    /// (other than this node): whom a hand-off must give the key to. Empty outside a
    /// transition.
    pub fn new_owners(&self, key: &[u8]) -> Vec<NodeId> {
        let Some(previous) = &self.previous else { return Vec::new() };
        let partition = partition_of(key);
        let old: Vec<u128> = previous.owners(partition).map(|m| m.node_id).collect();
        self.current
            .owners(partition)
            .filter(|m| !old.contains(&m.node_id) && m.node_id != self.this.0)
            .map(|m| NodeId(m.node_id))
            .collect()
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

#[derive(Clone, Debug)]
struct Remembered {
    member: KnownMember,
    /// Last time (ms) the view showed it alive, suspect or leaving; since when it is missing
    /// or down counts towards `evict_after`.
    present_ms: u64,
}

/// Follows the membership and yields a new [`Placement`] whenever the ring changes, keeping the
/// previous ring for `transition_ms` after each change (sans-IO: time is an argument).
///
/// It remembers every member it has seen until that member *leaves*: a member that is down,
/// or simply absent from this node's view (a node that rejoined while it was down never hears
/// of it from foca), stays in the ring until `evict_after_ms` after it was last seen present.
#[derive(Debug)]
pub struct PlacementTracker {
    this: NodeId,
    quorum: Quorum,
    transition_ms: u64,
    evict_after_ms: u64,
    known: BTreeMap<u128, Remembered>,
    members: Vec<RingMember>,
    current: Arc<Placement>,
    /// When the last change happened.
    changed_ms: u64,
    /// Whether this node finished handing off for the transition in progress.
    handed_off: bool,
}

impl PlacementTracker {
    /// A tracker that starts from the members remembered from a previous run (each counted as
    /// present at `now_ms`), or alone.
    pub fn new(
        this: NodeId,
        quorum: Quorum,
        transition_ms: u64,
        evict_after_ms: u64,
        remembered: Vec<KnownMember>,
        now_ms: u64,
    ) -> PlacementTracker {
        let mut tracker = PlacementTracker {
            this,
            quorum,
            transition_ms,
            evict_after_ms,
            known: remembered
                .into_iter()
                .map(|member| (member.node_id, Remembered { member, present_ms: now_ms }))
                .collect(),
            members: Vec::new(),
            current: Arc::new(Placement::alone(this, quorum)),
            changed_ms: now_ms,
            handed_off: true,
        };
        let members = tracker.ring_members(now_ms);
        if members.len() > 1 || members.first().is_some_and(|m| m.node_id != this.0) {
            tracker.current =
                Arc::new(Placement::new(this, quorum, Ring::new(members.clone(), quorum.n), None, tracker.known.len()));
            tracker.members = members;
        }
        tracker
    }

    /// The placement in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.current.clone()
    }

    /// Records that this node has given everything it holds to the owners the current ring
    /// added: the transition may end once its time is also up. (A hand-off that failed must
    /// be run again instead.)
    pub fn handoff_finished(&mut self) {
        self.handed_off = true;
    }

    /// Every member remembered, for persisting.
    pub fn known(&self) -> Vec<KnownMember> {
        self.known.values().map(|known| known.member.clone()).collect()
    }

    /// Where member `node` listens for RPC, if known.
    pub fn rpc_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.known.get(&node.0).map(|known| known.member.rpc_addr)
    }

    fn ring_members(&self, now_ms: u64) -> Vec<RingMember> {
        self.known
            .values()
            .filter(|known| {
                known.member.node_id == self.this.0 || now_ms.saturating_sub(known.present_ms) < self.evict_after_ms
            })
            .map(|known| RingMember {
                node_id: known.member.node_id,
                zone: known.member.zone.clone(),
                capacity_bytes: known.member.capacity_bytes,
            })
            .collect()
    }

    /// Feeds the current membership view; returns the new placement if it changed. Call it
    /// whenever the view may have changed and periodically, so evictions and the end of a
    /// transition happen. Members whose record has not arrived are not placed yet (their zone
    /// and capacity are unknown).
    pub fn update(&mut self, now_ms: u64, views: &[MemberView]) -> Option<Arc<Placement>> {
        for view in views {
            let Some(record) = &view.record else { continue };
            let id = view.identity.node_id;
            if view.state == MemberState::Left {
                self.known.remove(&id);
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
                    known.member = member;
                    if present {
                        known.present_ms = now_ms;
                    }
                }
                None => {
                    // First seen down: its absence dates from when the view says it went down.
                    let present_ms = if present { now_ms } else { view.state_since_ms.min(now_ms) };
                    self.known.insert(id, Remembered { member, present_ms });
                }
            }
        }
        let members = self.ring_members(now_ms);
        if members.is_empty() {
            return None;
        }
        if members != self.members {
            // A change during a transition keeps the ring from before the transition began:
            // data acknowledged then is still only guaranteed there, and the hand-off for the
            // new ring must give the new owners everything that moved since.
            let previous = match &self.current.previous {
                Some(older) => Some(older.clone()),
                None => (!self.members.is_empty()).then(|| self.current.ring().clone()),
            };
            self.members = members.clone();
            self.changed_ms = now_ms;
            self.handed_off = previous.is_none();
            self.current = Arc::new(Placement::new(
                self.this,
                self.quorum,
                Ring::new(members, self.quorum.n),
                previous,
                self.known.len(),
            ));
            return Some(self.current.clone());
        }
        let known = self.known.len();
        let transition_over = self.current.in_transition()
            && self.handed_off
            && now_ms.saturating_sub(self.changed_ms) >= self.transition_ms;
        if transition_over || known != self.current.members_known {
            let previous = if transition_over { None } else { self.current.previous.clone() };
            self.current =
                Arc::new(Placement::new(self.this, self.quorum, self.current.ring().clone(), previous, known));
            return Some(self.current.clone());
        }
        None
    }
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

    fn tracker(remembered: Vec<KnownMember>) -> PlacementTracker {
        PlacementTracker::new(NodeId(id(1)), Quorum::DEFAULT, 1_000, 60_000, remembered, 0)
    }

    #[test]
    fn the_ring_holds_alive_suspect_and_recently_down_members_never_those_that_left_or_have_no_record() {
        let mut tracker = tracker(Vec::new());
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
        ];
        let placement = tracker.update(70_000, &views).expect("a ring");
        let mut ids: Vec<u128> = placement.ring().members().iter().map(|m| m.node_id).collect();
        ids.sort_unstable();
        let mut expected = vec![id(1), id(2), id(3)];
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }

    #[test]
    fn a_ring_change_keeps_the_previous_owners_for_the_transition_then_drops_them() {
        let mut tracker = tracker(Vec::new());
        tracker.update(0, &views(1..=3)).expect("first ring");
        let grown = tracker.update(10, &views(1..=4)).expect("a new ring");
        assert!(grown.in_transition());
        let moved = (0u32..1000).map(|i| i.to_le_bytes()).find(|key| grown.owner_sets(key).len() == 2);
        let moved = moved.expect("a fourth member takes over some keys");
        assert_eq!(grown.owner_sets(&moved)[0].len(), 3);
        assert!(tracker.update(500, &views(1..=4)).is_none(), "still settling");
        tracker.handoff_finished();
        let settled = tracker.update(1_010, &views(1..=4)).expect("transition over");
        assert!(!settled.in_transition());
        assert_eq!(settled.owner_sets(&moved).len(), 1);
    }

    #[test]
    fn a_cluster_of_one_needs_one_answer_but_a_node_cut_off_from_its_cluster_needs_the_full_quorum() {
        let alone = Placement::alone(NodeId(7), Quorum::DEFAULT);
        assert_eq!(alone.quorum_sets(b"/x", 2), vec![(vec![NodeId(7)], 1)]);
        // Five members, then four evicted after a long partition: the ring is this node
        // alone, but W = 2 still needs two owners, which it cannot have.
        let mut tracker = tracker(Vec::new());
        tracker.update(0, &views(1..=5));
        let mut cut_off = views(1..=1);
        cut_off.extend((2..=5).map(|i| view(i, MemberState::Down)));
        let evicted = tracker.update(61_000, &cut_off).expect("evictions change the ring");
        assert_eq!(evicted.ring().members().len(), 1);
        assert_eq!(evicted.quorum_sets(b"/x", 2)[0], (vec![NodeId(id(1))], 2));
    }

    #[test]
    fn a_restarted_node_places_by_the_members_it_remembers_and_a_member_that_left_is_forgotten() {
        let mut before = tracker(Vec::new());
        before.update(0, &views(1..=5));
        let remembered = before.known();
        assert_eq!(remembered.len(), 5);
        let mut after = tracker(remembered);
        assert_eq!(after.placement().ring().members().len(), 5, "restarted alone, it still knows five");
        assert!(after.rpc_addr(NodeId(id(3))).is_some());
        // Nobody shows up for `evict_after`: the others leave the ring, the quorum stays.
        let placement = after.update(60_001, &views(1..=1)).expect("evicted");
        assert_eq!(placement.ring().members().len(), 1);
        assert_eq!(placement.quorum_sets(b"/k", 2)[0].1, 2);
        // A member that leaves on purpose is forgotten and no longer counts.
        let mut leaving = views(1..=4);
        leaving.push(view(5, MemberState::Left));
        let placement = after.update(60_002, &leaving).expect("four back, one left");
        assert_eq!(placement.ring().members().len(), 4);
        assert_eq!(after.known().len(), 4);
    }

    #[test]
    fn disk_usage_changing_is_not_a_ring_change_and_a_transition_waits_for_the_hand_off() {
        let mut tracker = tracker(Vec::new());
        tracker.update(0, &views(1..=3));
        let grown = tracker.update(10, &views(1..=4)).expect("a fourth member");
        assert!(grown.in_transition());
        let mut drifted = views(1..=4);
        if let Some(record) = drifted[1].record.as_mut() {
            record.disk_used_bytes += 1 << 30;
        }
        assert!(tracker.update(500, &drifted).is_none(), "a member filling its disk is not a new ring");
        assert!(tracker.update(5_000, &drifted).is_none(), "time is up, but the hand-off is not done");
        tracker.handoff_finished();
        assert!(!tracker.update(5_001, &drifted).expect("now it ends").in_transition());
    }

    #[test]
    fn a_second_change_during_a_transition_keeps_the_ring_from_before_it() {
        let mut tracker = tracker(Vec::new());
        tracker.update(0, &views(1..=3));
        let first = tracker.update(10, &views(1..=4)).expect("a fourth member");
        let second = tracker.update(20, &views(1..=5)).expect("a fifth member");
        let original = Ring::new(first.previous.clone().expect("previous").members().to_vec(), 3);
        assert_eq!(second.previous.as_ref().expect("still in transition").members(), original.members());
    }

    #[test]
    fn a_forming_cluster_needs_only_what_the_previous_smaller_ring_had() {
        let mut tracker = tracker(Vec::new());
        tracker.update(0, &views(1..=1));
        let grown = tracker.update(10, &views(1..=2)).expect("a second member");
        for i in 0u32..50 {
            for (set, need) in grown.quorum_sets(&i.to_le_bytes(), 2) {
                assert!(need <= set.len(), "every set can reach its quorum: {set:?} needs {need}");
            }
        }
    }
}
