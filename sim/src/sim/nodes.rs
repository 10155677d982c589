//! The simulated nodes: starting, crashing, restarting, leaving, and what the simulator
//! knows of each (the truth the checkers compare views with).

use super::*;

impl Sim {
    /// Node `index`'s status.
    pub fn status(&self, index: usize) -> NodeStatus {
        self.node(index).status
    }

    /// Node `index`'s gossip address.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.node(index).addr
    }

    /// Node `index`'s permanent id.
    pub fn node_id(&self, index: usize) -> u128 {
        self.node(index).node_id
    }

    /// The index of the node with id `node_id`, if it is one of ours.
    pub fn index_of(&self, node_id: u128) -> Option<usize> {
        self.by_id.get(&node_id).copied()
    }

    /// Node `index`'s identity as its running core has it (a renewal after a false down
    /// raises the generation), or `None` if it is not running.
    pub fn identity(&self, index: usize) -> Option<NodeIdentity> {
        self.node(index).membership.as_ref().map(|membership| *membership.identity())
    }

    /// Whether node `index`'s current (or last) run announced that it leaves (a node that
    /// crashed during its linger did leave).
    pub fn announced_leave(&self, index: usize) -> bool {
        self.node(index).announced_leave
    }

    /// The generation node `index` started its current (or last) run with (or renewed its
    /// identity to, once that run ended).
    pub fn generation(&self, index: usize) -> u64 {
        self.node(index).generation
    }

    /// Indices of the nodes with a running core (leaving ones included).
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&index| self.nodes[index].status.is_up()).collect()
    }

    /// Indices of the nodes in [`NodeStatus::Running`] (leaving ones excluded).
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&index| self.nodes[index].status == NodeStatus::Running).collect()
    }

    /// Node `index`'s view of the cluster (itself first), or `None` if it is not running.
    pub fn try_view(&mut self, index: usize) -> Option<Vec<MemberView>> {
        let now_ms = self.now_ms();
        self.nodes[index].membership.as_mut().map(|membership| membership.members(now_ms))
    }

    /// Node `index`'s view of the cluster (itself first). Panics if it is not running.
    pub fn view(&mut self, index: usize) -> Vec<MemberView> {
        self.try_view(index).unwrap_or_else(|| panic!("node {index} is not running"))
    }

    /// Node `index`'s membership counters, its previous runs included.
    pub fn node_stats(&self, index: usize) -> Stats {
        let node = self.node(index);
        let mut total = node.past_stats;
        if let Some(membership) = &node.membership {
            total += membership.stats();
        }
        total
    }

    /// The membership counters of every node, summed.
    pub fn total_node_stats(&self) -> Stats {
        let mut total = Stats::default();
        for index in 0..self.nodes.len() {
            total += self.node_stats(index);
        }
        total
    }

    /// Datagrams and bytes node `index` handed to the network, all runs included.
    pub fn sent_by(&self, index: usize) -> (u64, u64) {
        let node = self.node(index);
        (node.packets_sent, node.bytes_sent)
    }

    /// Starts node `index`: the first time with generation 1, after a crash or a leave with
    /// the next generation (as the node persists it), the same id and address, and a fresh
    /// RNG derived from the seed.
    pub fn start_node(&mut self, index: usize) {
        let status = self.node(index).status;
        assert!(!status.is_up(), "node {index} is already running");
        let node = &mut self.nodes[index];
        node.generation += 1;
        node.epoch += 1;
        node.announced_leave = false;
        node.status = NodeStatus::Running;
        node.started_at_us = self.now_us;
        let identity = NodeIdentity { node_id: node.node_id, addr: node.addr, generation: node.generation };
        let record = MemberRecord {
            node_id: node.node_id,
            generation: node.generation,
            version: 0,
            zone: format!("zone-{}", index % 3),
            capacity_bytes: 1 << 40,
            http_addr: SocketAddr::new(node.addr.ip(), HTTP_PORT),
            rpc_addr: node.addr,
            status: RecordStatus::Active,
            disk_used_bytes: 0,
        };
        let mut seeds: Vec<SocketAddr> =
            self.config.seeds.iter().filter(|&&seed| seed != index).map(|&seed| node_addr(seed)).collect();
        seeds.extend(node.remembered.iter().filter(|addr| !seeds.contains(addr)).copied().collect::<Vec<_>>());
        let rng = StdRng::from_seed(derive_seed(self.config.seed, b"node rng", index as u64, node.generation));
        node.membership = Some(Membership::new(identity, record, self.membership_config.clone(), seeds, rng));
        let generation = self.nodes[index].generation;
        self.record_action(format_args!("start {index} gen {generation}"));
        self.drain(index);
        self.start_data_node(index);
    }

    /// Starts nodes `0..n` one after another, `spacing` apart (the clock runs in between).
    pub fn start_all(&mut self, spacing: Duration) {
        for index in 0..self.nodes.len() {
            if !self.nodes[index].status.is_up() {
                self.start_node(index);
            }
            self.run_for(spacing);
        }
    }

    /// Crashes node `index`: it stops without a word, its pending timers are dropped, and the
    /// datagrams already on their way to it are lost when they arrive.
    pub fn crash(&mut self, index: usize) {
        assert!(self.node(index).status.is_up(), "node {index} is not running");
        self.stop(index, NodeStatus::Crashed);
        self.record_action(format_args!("crash {index}"));
    }

    /// Restarts node `index` with the next generation (crashing it first if it runs).
    pub fn restart(&mut self, index: usize) {
        if self.node(index).status.is_up() {
            self.crash(index);
        }
        self.start_node(index);
    }

    /// Node `index` leaves the cluster on purpose: it says so, keeps running for
    /// [`SimConfig::leave_linger`] so the news gets out, then stops.
    pub fn leave(&mut self, index: usize) {
        assert_eq!(self.node(index).status, NodeStatus::Running, "node {index} is not running");
        let now_ms = self.now_ms();
        let node = &mut self.nodes[index];
        node.status = NodeStatus::Leaving;
        node.announced_leave = true;
        node.membership.as_mut().expect("a running node has a core").leave(now_ms);
        let epoch = node.epoch;
        self.record_action(format_args!("leave {index}"));
        self.drain(index);
        let at = self.now_us + duration_us(self.config.leave_linger);
        self.push(at, EventKind::Stop { node: index, epoch });
    }

    /// Changes node `index`'s record through its core (as the driver does when disk usage
    /// changes).
    pub fn update_record(&mut self, index: usize, change: impl FnOnce(&mut MemberRecord)) {
        let now_ms = self.now_ms();
        let membership = self.nodes[index].membership.as_mut().unwrap_or_else(|| panic!("node {index} is not running"));
        membership.update_record(now_ms, change);
        self.record_action(format_args!("update record {index}"));
        self.drain(index);
    }

    pub(super) fn stop(&mut self, index: usize, status: NodeStatus) {
        self.stop_data_node(index, status == NodeStatus::Crashed);
        let node = &mut self.nodes[index];
        if let Some(mut membership) = node.membership.take() {
            let now_ms = self.now_us / 1000;
            let own = membership.identity().addr;
            node.remembered =
                membership.members(now_ms).iter().map(|view| view.identity.addr).filter(|addr| *addr != own).collect();
            node.past_renewals += membership.identity().generation.saturating_sub(node.generation);
            // A renewed identity's generation is saved like a start's (the driver does so),
            // so the next run never reuses a generation the cluster saw leave or go down.
            node.generation = node.generation.max(membership.identity().generation);
            node.past_stats += membership.stats();
        }
        node.status = status;
        node.epoch += 1;
    }

    /// Calls `tap` with every datagram handed to a node from now on (`None` removes it): for
    /// debugging and for measurements of what travels.
    pub fn set_tap(&mut self, tap: Option<Tap>) {
        self.tap = tap;
    }
}
