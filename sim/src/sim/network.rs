//! The simulated network: latency, loss, duplication, partitions (two-way and one-way),
//! datagrams injected from outside.

use super::*;

impl Sim {
    /// The network's current behaviour.
    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    /// Changes the network's latency, loss and duplication from now on (datagrams already in
    /// flight keep their fate).
    pub fn set_network(&mut self, network: NetworkConfig) {
        network.validate();
        self.record_action(format_args!("network {network}"));
        self.network = network;
    }

    /// Sets the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        let network = NetworkConfig { loss, ..self.network.clone() };
        self.set_network(network);
    }

    /// Cuts the network into `groups`: datagrams between nodes of different groups are
    /// dropped both ways. Nodes in no group form one more group together. Adds to the
    /// partitions already in force.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let n = self.nodes.len();
        let mut group_of = vec![groups.len(); n];
        for (group, members) in groups.iter().enumerate() {
            for &member in *members {
                assert!(member < n, "node {member} does not exist");
                group_of[member] = group;
            }
        }
        for from in 0..n {
            for to in 0..n {
                if group_of[from] != group_of[to] {
                    self.blocked[from * n + to] = true;
                }
            }
        }
        self.record_action(format_args!("partition {groups:?}"));
        self.refresh_partitioned();
    }

    /// Drops every datagram from a node in `from` to a node in `to`; the other way still
    /// works. Adds to the partitions already in force.
    pub fn partition_one_way(&mut self, from: &[usize], to: &[usize]) {
        let n = self.nodes.len();
        for &a in from {
            for &b in to {
                assert!(a < n && b < n, "node index out of range");
                if a != b {
                    self.blocked[a * n + b] = true;
                }
            }
        }
        self.record_action(format_args!("partition one way {from:?} -> {to:?}"));
        self.refresh_partitioned();
    }

    /// Lifts every partition.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|blocked| *blocked = false);
        self.record_action(format_args!("heal"));
        self.refresh_partitioned();
    }

    /// Whether datagrams from node `from` to node `to` get through the partitions.
    pub fn can_reach(&self, from: usize, to: usize) -> bool {
        !self.blocked[from * self.nodes.len() + to]
    }

    /// Delivers `bytes` to node `to` as if sent from `from` (an address outside the cluster,
    /// typically), after the network's usual delay. Loss does not apply; partitions apply
    /// only if `from` is a node's address.
    pub fn inject(&mut self, from: SocketAddr, to: usize, bytes: Vec<u8>) {
        assert!(to < self.nodes.len(), "node {to} does not exist");
        self.stats.injected += 1;
        let delay = self.random_latency_us();
        let from_node = self.by_addr.get(&from).copied();
        self.push(self.now_us + delay, EventKind::Packet { from, from_node, to, bytes });
    }

    pub(super) fn refresh_partitioned(&mut self) {
        let n = self.nodes.len();
        for index in 0..n {
            let involved = (0..n).any(|other| self.blocked[index * n + other] || self.blocked[other * n + index]);
            let node = &mut self.nodes[index];
            if node.partitioned && !involved {
                node.disturbed_until_us = self.now_us;
            }
            node.partitioned = involved;
        }
    }

    pub(super) fn random_latency_us(&mut self) -> u64 {
        let min = duration_us(self.network.latency_min);
        let max = duration_us(self.network.latency_max);
        if min == max { min } else { self.net_rng.random_range(min..=max) }
    }

    /// Puts a datagram from node `from` on the network.
    pub(super) fn send(&mut self, from: usize, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        let node = &mut self.nodes[from];
        node.packets_sent += 1;
        node.bytes_sent += bytes.len() as u64;
        let from_addr = node.addr;
        let Some(&to) = self.by_addr.get(&to) else {
            self.stats.dropped_unknown_address += 1;
            return;
        };
        if !self.can_reach(from, to) {
            self.stats.dropped_partition += 1;
            return;
        }
        if self.network.loss > 0.0 && self.net_rng.random_bool(self.network.loss) {
            self.stats.dropped_loss += 1;
            return;
        }
        if self.network.duplicate > 0.0 && self.net_rng.random_bool(self.network.duplicate) {
            self.stats.duplicated += 1;
            let delay = self.random_latency_us();
            let copy = EventKind::Packet { from: from_addr, from_node: Some(from), to, bytes: bytes.clone() };
            self.push(self.now_us + delay, copy);
        }
        let delay = self.random_latency_us();
        self.push(self.now_us + delay, EventKind::Packet { from: from_addr, from_node: Some(from), to, bytes });
    }
}
