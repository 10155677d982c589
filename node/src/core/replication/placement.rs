//! Who owns a key, as this node sees it, including ownership transitions (ARCHITECTURE §5).
//!
//! When the ring changes, the owners of some keys change. Until the new owners have caught up,
//! an acknowledged write may live only on the old ones. So for a while after every change the
//! placement keeps the previous ring too: writes need a quorum among the old owners *and* among
//! the new ones, reads ask both and need a quorum of each, and read repair (plus the hand-off
//! that pushes records to their new owners) fills the new owners in. A read that starts after
//! a write was acknowledged therefore meets at least one copy of it as long as the reader's and
//! the writer's views differ by at most the one change each still remembers.

use std::sync::Arc;

use shoal_membership::{Ring, RingMember};
use shoal_storage::NodeId;

/// Replication factor and quorum sizes (ARCHITECTURE §6).
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
}

impl Placement {
    /// The placement of node `this` over `current`, still honouring `previous` owners.
    pub fn new(this: NodeId, quorum: Quorum, current: Ring, previous: Option<Ring>) -> Placement {
        Placement { this, quorum, current, previous }
    }

    /// A placement where `this` is the only member.
    pub fn alone(this: NodeId, quorum: Quorum) -> Placement {
        let member = RingMember { node_id: this.0, zone: String::new(), capacity_bytes: 1 };
        Placement::new(this, quorum, Ring::new(vec![member], quorum.n), None)
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

    /// The owner sets a request about `key` must reach a quorum in: the current owners, then
    /// the previous owners if they differ. Never empty sets (a ring has at least one member).
    pub fn owner_sets(&self, key: &[u8]) -> Vec<Vec<NodeId>> {
        let owners = |ring: &Ring| ring.owners(key).map(|m| NodeId(m.node_id)).collect::<Vec<_>>();
        let mut sets = vec![owners(&self.current)];
        if let Some(previous) = &self.previous {
            let old = owners(previous);
            let mut sorted_old = old.clone();
            let mut sorted_new = sets[0].clone();
            sorted_old.sort();
            sorted_new.sort();
            if sorted_old != sorted_new && !old.is_empty() {
                sets.push(old);
            }
        }
        sets
    }

    /// The owners of `key` in the current ring that did not own it in the previous one
    /// (other than this node): whom a hand-off must give the key to. Empty outside a
    /// transition.
    pub fn new_owners(&self, key: &[u8]) -> Vec<NodeId> {
        let Some(previous) = &self.previous else { return Vec::new() };
        let old: Vec<u128> = previous.owners(key).map(|m| m.node_id).collect();
        self.current
            .owners(key)
            .filter(|m| !old.contains(&m.node_id) && m.node_id != self.this.0)
            .map(|m| NodeId(m.node_id))
            .collect()
    }

    /// How many answers a set of `size` owners must give for a write (`w`) or read (`r`)
    /// quorum: the configured size, or every owner when the ring has fewer members than N.
    pub fn need(size: usize, quorum_size: usize) -> usize {
        quorum_size.min(size)
    }
}

/// Follows the membership and yields a new [`Placement`] whenever the ring changes, keeping the
/// previous ring for `transition_ms` after each change (sans-IO: time is an argument).
#[derive(Debug)]
pub struct PlacementTracker {
    this: NodeId,
    quorum: Quorum,
    transition_ms: u64,
    members: Vec<RingMember>,
    current: Arc<Placement>,
    /// When the last change happened.
    changed_ms: u64,
}

impl PlacementTracker {
    /// A tracker that starts with this node alone.
    pub fn new(this: NodeId, quorum: Quorum, transition_ms: u64) -> PlacementTracker {
        PlacementTracker {
            this,
            quorum,
            transition_ms,
            members: Vec::new(),
            current: Arc::new(Placement::alone(this, quorum)),
            changed_ms: 0,
        }
    }

    /// The placement in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.current.clone()
    }

    /// Feeds the ring members of the current view (see [`shoal_membership::ring_members`]);
    /// returns the new placement if it changed. Call it whenever the view may have changed and
    /// periodically, so a finished transition is dropped.
    pub fn update(&mut self, now_ms: u64, mut members: Vec<RingMember>) -> Option<Arc<Placement>> {
        members.sort_by_key(|member| member.node_id);
        if members.is_empty() {
            // Not even this node's own record yet: keep what we have.
            return None;
        }
        if members != self.members {
            let previous = (!self.members.is_empty()).then(|| self.current.ring().clone());
            self.members = members.clone();
            self.changed_ms = now_ms;
            self.current =
                Arc::new(Placement::new(self.this, self.quorum, Ring::new(members, self.quorum.n), previous));
            return Some(self.current.clone());
        }
        if self.current.in_transition() && now_ms.saturating_sub(self.changed_ms) >= self.transition_ms {
            self.current = Arc::new(Placement::new(self.this, self.quorum, self.current.ring().clone(), None));
            return Some(self.current.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u128) -> RingMember {
        RingMember {
            node_id: id.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            zone: "z".into(),
            capacity_bytes: 1,
        }
    }

    #[test]
    fn a_ring_change_keeps_the_previous_owners_for_the_transition_then_drops_them() {
        let mut tracker = PlacementTracker::new(NodeId(member(1).node_id), Quorum::DEFAULT, 1_000);
        tracker.update(0, (1..=3).map(member).collect()).expect("first ring");
        let grown = tracker.update(10, (1..=4).map(member).collect()).expect("a new ring");
        assert!(grown.in_transition());
        let moved = (0u32..1000).map(|i| i.to_le_bytes()).find(|key| grown.owner_sets(key).len() == 2);
        let moved = moved.expect("a fourth member takes over some keys");
        assert_eq!(grown.owner_sets(&moved)[0].len(), 3);
        assert!(tracker.update(500, (1..=4).map(member).collect()).is_none(), "still settling");
        let settled = tracker.update(1_010, (1..=4).map(member).collect()).expect("transition over");
        assert!(!settled.in_transition());
        assert_eq!(settled.owner_sets(&moved).len(), 1);
    }

    #[test]
    fn quorums_shrink_to_the_members_there_are() {
        assert_eq!(Placement::need(1, 2), 1);
        assert_eq!(Placement::need(3, 2), 2);
        let alone = Placement::alone(NodeId(7), Quorum::DEFAULT);
        assert_eq!(alone.owner_sets(b"/x"), vec![vec![NodeId(7)]]);
    }
}
