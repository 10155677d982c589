//! The consistent-hash ring (docs/ARCHITECTURE.md §5): which members own a key.
//!
//! Every node builds the ring from its own membership view, deterministically: members are
//! sorted by id, virtual nodes are named by fixed bytes, and hashing is `hashring`'s
//! `DefaultHashBuilder` (SipHash with zero keys, the same in every process). The same view
//! therefore gives the same ring everywhere.
//!
//! `hashring` gives the order of virtual nodes but no positions, ranges or distinct-member
//! replica lists (its `get_with_replicas` clones the ring per call and repeats members). So
//! the ring computes, once per change, each arc's preference list; a lookup is then one binary
//! search over the tokens and a slice.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::RangeInclusive;

use hashring::{DefaultHashBuilder, HashRing};

/// Virtual nodes of a member of median capacity. 512 keeps the largest of ten equal members'
/// shares within about 10 % of the mean.
pub const VNODES_PER_MEDIAN_MEMBER: u32 = 512;

/// A member as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingMember {
    /// Its permanent id.
    pub node_id: u128,
    /// Its failure domain.
    pub zone: String,
    /// Bytes it offers; virtual nodes are in proportion.
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
    /// Token of every virtual node, ascending.
    tokens: Vec<u64>,
    /// `prefs[i * replicas..][..replicas]`: indices into `members` owning the arc that ends at
    /// `tokens[i]` (the keys hashing into `(tokens[i - 1], tokens[i]]`).
    prefs: Vec<u32>,
}

impl Ring {
    /// Builds the ring of `members` with `replicas` owners per key (fewer if there are fewer
    /// members). Spreads each preference list over distinct zones when there are at least
    /// `replicas` zones.
    pub fn new(mut members: Vec<RingMember>, replicas: usize) -> Ring {
        members.sort_by_key(|member| member.node_id);
        members.dedup_by_key(|member| member.node_id);
        let replicas = replicas.min(members.len());
        if members.is_empty() || replicas == 0 {
            return Ring { members, replicas, tokens: Vec::new(), prefs: Vec::new() };
        }

        let median = {
            let mut capacities: Vec<u64> = members.iter().map(|m| m.capacity_bytes.max(1)).collect();
            capacities.sort_unstable();
            capacities[capacities.len() / 2]
        };
        let mut vnodes = Vec::new();
        for member in &members {
            let weight = member.capacity_bytes.max(1) as f64 / median as f64;
            let count = (f64::from(VNODES_PER_MEDIAN_MEMBER) * weight).round().clamp(1.0, 64.0 * 1024.0) as u32;
            vnodes.extend((0..count).map(|index| VNode { member: member.node_id, index }));
        }
        let mut ring = HashRing::new();
        ring.batch_add(vnodes);
        // In ring order; the tokens are the same hashes hashring sorted by.
        let ordered: Vec<VNode> = ring.into_iter().collect();
        let tokens: Vec<u64> = ordered.iter().map(|vnode| DefaultHashBuilder.hash_one(vnode)).collect();
        debug_assert!(tokens.is_sorted());

        let index_of: HashMap<u128, u32> = members.iter().enumerate().map(|(i, m)| (m.node_id, i as u32)).collect();
        let owner: Vec<u32> = ordered.iter().map(|vnode| index_of[&vnode.member]).collect();
        let zones = members.iter().map(|m| m.zone.as_str()).collect::<BTreeSet<_>>().len();
        let spread_zones = zones >= replicas;

        let mut prefs = Vec::with_capacity(tokens.len() * replicas);
        let mut chosen: Vec<u32> = Vec::with_capacity(replicas);
        let mut used_zones: Vec<&str> = Vec::with_capacity(replicas);
        for start in 0..owner.len() {
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
        Ring { members, replicas, tokens, prefs }
    }

    /// The members in the ring, sorted by id.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// Owners per key.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The position of `key` on the ring.
    pub fn token_of(key: &[u8]) -> u64 {
        DefaultHashBuilder.hash_one(key)
    }

    /// The arc whose preference list serves `token`.
    fn arc_of(&self, token: u64) -> usize {
        match self.tokens.binary_search(&token) {
            Ok(i) => i,
            Err(i) if i == self.tokens.len() => 0,
            Err(i) => i,
        }
    }

    /// The preference list of `key`: `replicas` distinct members, first the primary, clockwise.
    /// Empty when the ring is.
    pub fn owners(&self, key: &[u8]) -> impl ExactSizeIterator<Item = &RingMember> + '_ {
        let slice = if self.tokens.is_empty() {
            &self.prefs[..0]
        } else {
            let arc = self.arc_of(Self::token_of(key));
            &self.prefs[arc * self.replicas..(arc + 1) * self.replicas]
        };
        slice.iter().map(|&i| &self.members[i as usize])
    }

    /// Each member's share of the token space as primary owner, in [0, 1]; they sum to 1.
    pub fn primary_shares(&self) -> Vec<(u128, f64)> {
        let mut shares = vec![0u128; self.members.len()];
        for arc in 0..self.tokens.len() {
            let start = if arc == 0 { self.tokens[self.tokens.len() - 1] } else { self.tokens[arc - 1] };
            let length = self.tokens[arc].wrapping_sub(start);
            // A ring of one vnode covers everything.
            let length = if self.tokens.len() == 1 { u64::MAX as u128 + 1 } else { length as u128 };
            shares[self.prefs[arc * self.replicas] as usize] += length;
        }
        let total = u64::MAX as f64 + 1.0;
        self.members.iter().zip(shares).map(|(m, share)| (m.node_id, share as f64 / total)).collect()
    }

    /// The token ranges `member` owns (as any replica), each with all its owners: what
    /// anti-entropy compares, and with whom. Ranges are inclusive and may wrap (start > end
    /// means the range passes through `u64::MAX`).
    pub fn ranges_of(&self, node_id: u128) -> Vec<(RangeInclusive<u64>, Vec<u128>)> {
        let Some(me) = self.members.iter().position(|m| m.node_id == node_id) else { return Vec::new() };
        let mut ranges = Vec::new();
        for arc in 0..self.tokens.len() {
            let owners = &self.prefs[arc * self.replicas..(arc + 1) * self.replicas];
            if !owners.contains(&(me as u32)) {
                continue;
            }
            let start =
                if arc == 0 { self.tokens[self.tokens.len() - 1] } else { self.tokens[arc - 1] }.wrapping_add(1);
            let ids = owners.iter().map(|&i| self.members[i as usize].node_id).collect();
            ranges.push((start..=self.tokens[arc], ids));
        }
        ranges
    }
}

#[cfg(test)]
mod share_tests {
    use super::*;

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

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};

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

    fn keys(count: usize) -> Vec<[u8; 16]> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        (0..count).map(|_| rng.random::<[u8; 16]>()).collect()
    }

    fn primary(ring: &Ring, key: &[u8]) -> u128 {
        ring.owners(key).next().expect("an owner").node_id
    }

    fn shares(ring: &Ring, keys: &[[u8; 16]]) -> HashMap<u128, usize> {
        let mut counts = HashMap::new();
        for key in keys {
            for owner in ring.owners(key) {
                *counts.entry(owner.node_id).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn the_same_members_in_any_order_give_the_same_ring() {
        let mut shuffled = members(6, 2);
        shuffled.reverse();
        let a = Ring::new(members(6, 2), 3);
        let b = Ring::new(shuffled, 3);
        assert_eq!((a.tokens.clone(), a.prefs.clone()), (b.tokens, b.prefs));
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
        for key in keys(20_000) {
            let expected = reference.get(&&key[..]).expect("non-empty").member;
            assert_eq!(primary(&ring, &key), expected);
        }
    }

    #[test]
    fn ten_equal_members_own_nearly_equal_shares() {
        let keys = keys(200_000);
        for replicas in [1, 3] {
            let ring = Ring::new(members(10, 10), replicas);
            let counts = shares(&ring, &keys);
            let mean = (keys.len() * replicas) as f64 / 10.0;
            let max = *counts.values().max().expect("owners") as f64;
            assert!(max / mean <= 1.10, "replicas {replicas}: max/mean = {:.3}", max / mean);
        }
    }

    #[test]
    fn adding_an_eleventh_member_moves_about_an_eleventh_of_the_keys() {
        let keys = keys(100_000);
        let before = Ring::new(members(10, 10), 3);
        let after = Ring::new(members(11, 11), 3);
        let moved = keys.iter().filter(|key| primary(&before, &key[..]) != primary(&after, &key[..])).count();
        let fraction = moved as f64 / keys.len() as f64;
        assert!(fraction <= 1.2 / 11.0, "moved {fraction:.4}");
        // And every moved key moved to the newcomer.
        let newcomer = members(11, 11)[10].node_id;
        assert!(keys.iter().all(|k| primary(&before, k) == primary(&after, k) || primary(&after, k) == newcomer));
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let keys = keys(50_000);
        let all = members(10, 10);
        let gone = all[3].node_id;
        let before = Ring::new(all.clone(), 3);
        let after = Ring::new(all.into_iter().filter(|m| m.node_id != gone).collect(), 3);
        for key in &keys {
            if primary(&before, key) != gone {
                assert_eq!(primary(&before, key), primary(&after, key));
            }
        }
    }

    #[test]
    fn a_member_with_twice_the_capacity_owns_about_twice_as_much() {
        let mut list = members(8, 8);
        list[0].capacity_bytes *= 2;
        let big = list[0].node_id;
        let ring = Ring::new(list, 1);
        let counts = shares(&ring, &keys(200_000));
        let others = counts.iter().filter(|(id, _)| **id != big).map(|(_, c)| *c as f64).sum::<f64>() / 7.0;
        let ratio = counts[&big] as f64 / others;
        assert!((1.8..=2.2).contains(&ratio), "ratio {ratio:.3}");
    }

    #[test]
    fn with_three_zones_every_preference_list_spans_three_zones() {
        let ring = Ring::new(members(9, 3), 3);
        for key in keys(20_000) {
            let zones: BTreeSet<&str> = ring.owners(&key).map(|m| m.zone.as_str()).collect();
            assert_eq!(zones.len(), 3);
        }
        // With fewer zones than replicas, lists still hold distinct members.
        let ring = Ring::new(members(5, 2), 3);
        for key in keys(5_000) {
            let ids: BTreeSet<u128> = ring.owners(&key).map(|m| m.node_id).collect();
            assert_eq!(ids.len(), 3);
        }
    }

    #[test]
    fn small_and_empty_rings_are_well_behaved() {
        assert_eq!(Ring::new(Vec::new(), 3).owners(b"k").len(), 0);
        let single = Ring::new(members(1, 1), 3);
        assert_eq!(single.replicas(), 1);
        assert_eq!(single.owners(b"k").len(), 1);
    }

    #[test]
    fn a_members_ranges_cover_exactly_the_keys_it_owns() {
        let ring = Ring::new(members(6, 3), 3);
        let me = ring.members()[2].node_id;
        let ranges = ring.ranges_of(me);
        let in_ranges = |token: u64| {
            ranges.iter().any(|(range, owners)| {
                let (start, end) = (*range.start(), *range.end());
                let inside = if start <= end { (start..=end).contains(&token) } else { token >= start || token <= end };
                inside && owners.contains(&me)
            })
        };
        for key in keys(20_000) {
            let owns = ring.owners(&key).any(|m| m.node_id == me);
            assert_eq!(owns, in_ranges(Ring::token_of(&key)));
        }
    }
}
