//! The consistent-hash ring (docs/ARCHITECTURE.md §5): which members own each partition.
//!
//! The key space is cut into [`PARTITIONS`] fixed partitions by the top bits of a key's
//! position (`shoal_storage::position`); a partition is the unit of ownership, of transitions
//! and of anti-entropy. The ring decides who owns each partition: every partition has a fixed
//! point on a consistent-hash ring of virtual nodes, and its owners are the first `replicas`
//! distinct members clockwise from that point. A join or leave therefore moves only about 1/n
//! of the partitions, and two owners of a partition hold exactly the same key range, so they
//! compare it with one digest.
//!
//! Every node builds the ring from its own membership view, deterministically: members are
//! sorted by id, virtual nodes and partition points are named by fixed bytes, and hashing is
//! `hashring`'s `DefaultHashBuilder` (SipHash with zero keys, the same in every process). The
//! same view therefore gives the same ring everywhere.
//!
//! `hashring` gives the order of virtual nodes but no distinct-member replica lists (its
//! `get_with_replicas` clones the ring per call and repeats members). So the ring computes,
//! once per change, each partition's preference list; a lookup is then a slice.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use hashring::{DefaultHashBuilder, HashRing};

/// Virtual nodes of a member of median capacity. 512 keeps the largest of ten equal members'
/// shares within about 10 % of the mean.
pub const VNODES_PER_MEDIAN_MEMBER: u32 = 512;

/// Bits of a key's position that name its partition.
pub const PARTITION_BITS: u32 = 12;

/// Fixed partitions of the key space: enough that each member of a large cluster owns many
/// (balance), few enough that a node compares all it owns with each peer cheaply.
pub const PARTITIONS: usize = 1 << PARTITION_BITS;

/// One fixed partition of the key space: the keys whose position starts with its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Partition(pub u16);

impl Partition {
    /// The partition of a key at `position` (its top [`PARTITION_BITS`] bits).
    pub fn of_position(position: u64) -> Partition {
        Partition((position >> (64 - PARTITION_BITS)) as u16)
    }

    /// Every partition, in order.
    pub fn all() -> impl ExactSizeIterator<Item = Partition> {
        (0..PARTITIONS as u16).map(Partition)
    }

    /// Its index in `0..PARTITIONS`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Where a partition sits on the ring: hashed like a virtual node, so `hashring` itself says
/// which virtual node serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionPoint(u16);

impl Hash for PartitionPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"partition");
        state.write(&self.0.to_le_bytes());
    }
}

/// A member as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingMember {
    /// Its permanent id.
    pub node_id: u128,
    /// Its failure domain.
    pub zone: String,
    /// Bytes it offers (a stable capacity, never its free space); virtual nodes are in
    /// proportion.
    pub capacity_bytes: u64,
}

/// A virtual node: member and index, hashed as fixed little-endian bytes so its position never
/// depends on how a type implements `Hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct VNode {
    member: u128,
    index: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.member.to_le_bytes());
        state.write(&self.index.to_le_bytes());
    }
}

/// A built ring. Cheap to query, rebuilt on membership changes.
#[derive(Clone, Debug)]
pub struct Ring {
    members: Vec<RingMember>,
    replicas: usize,
    /// `prefs[p * replicas..][..replicas]`: indices into `members` owning partition `p`,
    /// primary first.
    prefs: Vec<u32>,
}

impl Ring {
    /// Builds the ring of `members` with `replicas` owners per partition (fewer if there are
    /// fewer members). Spreads each preference list over distinct zones when there are at
    /// least `replicas` zones.
    pub fn new(mut members: Vec<RingMember>, replicas: usize) -> Ring {
        members.sort_by_key(|member| member.node_id);
        members.dedup_by_key(|member| member.node_id);
        let replicas = replicas.min(members.len());
        if members.is_empty() || replicas == 0 {
            return Ring { members, replicas, prefs: Vec::new() };
        }
        let ordered = virtual_nodes(&members);
        let tokens: Vec<u64> = ordered.iter().map(|vnode| DefaultHashBuilder.hash_one(vnode)).collect();
        debug_assert!(tokens.is_sorted());
        let index_of: HashMap<u128, u32> = members.iter().enumerate().map(|(i, m)| (m.node_id, i as u32)).collect();
        let owner: Vec<u32> = ordered.iter().map(|vnode| index_of[&vnode.member]).collect();
        let zones = members.iter().map(|m| m.zone.as_str()).collect::<BTreeSet<_>>().len();
        let spread_zones = zones >= replicas;

        let mut prefs = Vec::with_capacity(PARTITIONS * replicas);
        let mut chosen: Vec<u32> = Vec::with_capacity(replicas);
        let mut used_zones: Vec<&str> = Vec::with_capacity(replicas);
        for partition in Partition::all() {
            let start = first_vnode_at(&tokens, DefaultHashBuilder.hash_one(PartitionPoint(partition.0)));
            chosen.clear();
            used_zones.clear();
            for step in 0..owner.len() {
                let candidate = owner[(start + step) % owner.len()];
                let zone = members[candidate as usize].zone.as_str();
                if chosen.contains(&candidate) || (spread_zones && used_zones.contains(&zone)) {
                    continue;
                }
                chosen.push(candidate);
                used_zones.push(zone);
                if chosen.len() == replicas {
                    break;
                }
            }
            assert_eq!(chosen.len(), replicas, "a full walk of the ring finds enough owners");
            prefs.extend_from_slice(&chosen);
        }
        Ring { members, replicas, prefs }
    }

    /// The members in the ring, sorted by id.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// Owners per partition.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The preference list of `partition`: `replicas` distinct members, first the primary,
    /// clockwise. Empty when the ring is.
    pub fn owners(&self, partition: Partition) -> impl ExactSizeIterator<Item = &RingMember> + '_ {
        let slice = if self.prefs.is_empty() {
            &self.prefs[..0]
        } else {
            &self.prefs[partition.index() * self.replicas..][..self.replicas]
        };
        slice.iter().map(|&i| &self.members[i as usize])
    }

    /// Whether `node_id` is among the owners of `partition`.
    pub fn owns(&self, node_id: u128, partition: Partition) -> bool {
        self.owners(partition).any(|member| member.node_id == node_id)
    }

    /// The partitions `node_id` owns (as any replica), in order: what anti-entropy compares.
    pub fn partitions_of(&self, node_id: u128) -> Vec<Partition> {
        Partition::all().filter(|&partition| self.owns(node_id, partition)).collect()
    }

    /// Each member's share of the partitions as primary owner, in [0, 1]; they sum to 1.
    pub fn primary_shares(&self) -> Vec<(u128, f64)> {
        let mut counts = vec![0usize; self.members.len()];
        for chunk in self.prefs.chunks(self.replicas.max(1)) {
            counts[chunk[0] as usize] += 1;
        }
        let total = PARTITIONS as f64;
        self.members.iter().zip(counts).map(|(m, count)| (m.node_id, count as f64 / total)).collect()
    }
}

/// Every member's virtual nodes, in ring order (as `hashring` sorts them).
fn virtual_nodes(members: &[RingMember]) -> Vec<VNode> {
    let median = {
        let mut capacities: Vec<u64> = members.iter().map(|m| m.capacity_bytes.max(1)).collect();
        capacities.sort_unstable();
        capacities[capacities.len() / 2]
    };
    let mut vnodes = Vec::new();
    for member in members {
        let weight = member.capacity_bytes.max(1) as f64 / median as f64;
        let count = (f64::from(VNODES_PER_MEDIAN_MEMBER) * weight).round().clamp(1.0, 64.0 * 1024.0) as u32;
        vnodes.extend((0..count).map(|index| VNode { member: member.node_id, index }));
    }
    let mut ring = HashRing::new();
    ring.batch_add(vnodes);
    ring.into_iter().collect()
}

/// The first virtual node at or after `token`, clockwise (hashring's lookup rule).
fn first_vnode_at(tokens: &[u64], token: u64) -> usize {
    match tokens.binary_search(&token) {
        Ok(i) => i,
        Err(i) if i == tokens.len() => 0,
        Err(i) => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(count: u128, zones: u128) -> Vec<RingMember> {
        // Spread-out ids, as random node ids would be.
        (1..=count)
            .map(|i| RingMember {
                node_id: i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                zone: format!("z{}", i % zones),
                capacity_bytes: 1 << 40,
            })
            .collect()
    }

    fn primary(ring: &Ring, partition: Partition) -> u128 {
        ring.owners(partition).next().expect("an owner").node_id
    }

    /// Partitions each member owns, as any replica.
    fn shares(ring: &Ring) -> HashMap<u128, usize> {
        let mut counts = HashMap::new();
        for partition in Partition::all() {
            for owner in ring.owners(partition) {
                *counts.entry(owner.node_id).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn a_position_falls_in_the_partition_named_by_its_top_bits() {
        assert_eq!(Partition::of_position(0), Partition(0));
        assert_eq!(Partition::of_position(u64::MAX), Partition(PARTITIONS as u16 - 1));
        assert_eq!(Partition::of_position(1 << (64 - PARTITION_BITS)), Partition(1));
        assert_eq!(Partition::all().len(), PARTITIONS);
    }

    #[test]
    fn the_same_members_in_any_order_give_the_same_ring() {
        let mut shuffled = members(6, 2);
        shuffled.reverse();
        let a = Ring::new(members(6, 2), 3);
        let b = Ring::new(shuffled, 3);
        assert_eq!(a.prefs, b.prefs);
    }

    #[test]
    fn the_primary_owner_is_what_hashring_itself_says() {
        let list = members(5, 5);
        let ring = Ring::new(list.clone(), 1);
        let mut reference = HashRing::new();
        reference.batch_add(
            list.iter()
                .flat_map(|m| (0..VNODES_PER_MEDIAN_MEMBER).map(|index| VNode { member: m.node_id, index }))
                .collect(),
        );
        for partition in Partition::all() {
            let expected = reference.get(&PartitionPoint(partition.0)).expect("non-empty").member;
            assert_eq!(primary(&ring, partition), expected);
        }
    }

    #[test]
    fn ten_equal_members_own_nearly_equal_shares() {
        for replicas in [1, 3] {
            let ring = Ring::new(members(10, 10), replicas);
            let counts = shares(&ring);
            let mean = (PARTITIONS * replicas) as f64 / 10.0;
            let max = *counts.values().max().expect("owners") as f64;
            assert!(max / mean <= 1.15, "replicas {replicas}: max/mean = {:.3}", max / mean);
        }
    }

    #[test]
    fn adding_an_eleventh_member_moves_about_an_eleventh_of_the_partitions_all_to_it() {
        let before = Ring::new(members(10, 10), 3);
        let after = Ring::new(members(11, 11), 3);
        let moved = Partition::all().filter(|&p| primary(&before, p) != primary(&after, p)).count();
        let fraction = moved as f64 / PARTITIONS as f64;
        assert!(fraction <= 1.25 / 11.0, "moved {fraction:.4}");
        let newcomer = members(11, 11)[10].node_id;
        assert!(Partition::all().all(|p| primary(&before, p) == primary(&after, p) || primary(&after, p) == newcomer));
    }

    #[test]
    fn removing_a_member_moves_only_its_partitions() {
        let all = members(10, 10);
        let gone = all[3].node_id;
        let before = Ring::new(all.clone(), 3);
        let after = Ring::new(all.into_iter().filter(|m| m.node_id != gone).collect(), 3);
        for partition in Partition::all() {
            if primary(&before, partition) != gone {
                assert_eq!(primary(&before, partition), primary(&after, partition));
            }
        }
    }

    #[test]
    fn a_member_with_twice_the_capacity_owns_about_twice_as_much() {
        let mut list = members(8, 8);
        list[0].capacity_bytes *= 2;
        let big = list[0].node_id;
        let ring = Ring::new(list, 1);
        let counts = shares(&ring);
        let others = counts.iter().filter(|(id, _)| **id != big).map(|(_, c)| *c as f64).sum::<f64>() / 7.0;
        let ratio = counts[&big] as f64 / others;
        assert!((1.7..=2.3).contains(&ratio), "ratio {ratio:.3}");
    }

    #[test]
    fn with_three_zones_every_preference_list_spans_three_zones() {
        let ring = Ring::new(members(9, 3), 3);
        for partition in Partition::all() {
            let zones: BTreeSet<&str> = ring.owners(partition).map(|m| m.zone.as_str()).collect();
            assert_eq!(zones.len(), 3);
        }
        // With fewer zones than replicas, lists still hold distinct members.
        let ring = Ring::new(members(5, 2), 3);
        for partition in Partition::all() {
            let ids: BTreeSet<u128> = ring.owners(partition).map(|m| m.node_id).collect();
            assert_eq!(ids.len(), 3);
        }
    }

    #[test]
    fn small_and_empty_rings_are_well_behaved() {
        assert_eq!(Ring::new(Vec::new(), 3).owners(Partition(7)).len(), 0);
        assert!(Ring::new(Vec::new(), 3).partitions_of(1).is_empty());
        let single = Ring::new(members(1, 1), 3);
        assert_eq!(single.replicas(), 1);
        assert_eq!(single.owners(Partition(7)).len(), 1);
        assert_eq!(single.partitions_of(single.members()[0].node_id).len(), PARTITIONS);
    }

    #[test]
    fn a_member_owns_exactly_the_partitions_that_list_it() {
        let ring = Ring::new(members(6, 3), 3);
        let me = ring.members()[2].node_id;
        let mine = ring.partitions_of(me);
        for partition in Partition::all() {
            assert_eq!(ring.owns(me, partition), mine.contains(&partition));
        }
        // Three owners per partition among six: about half of them.
        assert!((PARTITIONS * 2 / 5..PARTITIONS * 3 / 5).contains(&mine.len()), "{}", mine.len());
    }

    #[test]
    fn primary_shares_sum_to_one_and_track_capacity() {
        let member = |id: u128, capacity_bytes| RingMember { node_id: id, zone: String::new(), capacity_bytes };
        let ring = Ring::new(vec![member(1, 1 << 40), member(2, 1 << 40), member(3, 2 << 40)], 3);
        let shares = ring.primary_shares();
        let total: f64 = shares.iter().map(|(_, share)| share).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let big = shares.iter().find(|(id, _)| *id == 3).expect("member 3").1;
        assert!((0.4..0.6).contains(&big), "twice the capacity owns about half: {big}");
        let alone = Ring::new(vec![member(9, 1)], 3).primary_shares();
        assert!((alone[0].1 - 1.0).abs() < 1e-9);
    }
}
