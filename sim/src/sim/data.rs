//! The data plane (docs/ARCHITECTURE.md §5, §6): one [`NodeCore`] per running node over its
//! [`MemStore`], the RPCs between them over the simulated network, and the clients that PUT,
//! GET and DELETE files through any node ([`clients`](super::clients)).
//!
//! The simulator is the driver here, as the tokio driver is in production: it carries each
//! core's transmits across the network, runs its store jobs in place, hands it its membership
//! view when that changes and its timeouts when they are due. Every protocol decision
//! (timeouts, hand-off, readiness, placement, the file pipelines) is the core's, the very
//! code the `shoal` binary runs; nothing here touches tokio.
//!
//! - A request to another node crosses the network (latency, loss, partitions, both at
//!   sending and at arrival); a crashed or partitioned destination never answers, so the
//!   core's timeout fires.
//! - A crash drops the node's core (every operation it coordinates is abandoned, its clients
//!   never get an answer), the store's unsynced writes ([`MemStore::crash`]) and the requests
//!   in flight to it; a restart makes a new core (its clock starts over) from the members the
//!   previous run remembered, like the real node's `members.json`.
//! - Each node's wall clock (the `now_us` its core gets, and the clock its deadlines are on)
//!   is virtual time plus [`WALL_CLOCK_EPOCH_US`] plus its own offset (clock skew).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_core::node::{ClientId, CoreConfig, Event, MessageId, NodeCore, PeerRequestId, StoreWork, Transmit};
use shoal_core::replication::{BlockRpc, ClusterMemory, Placement, RecordRpc, Reply, Request};
use shoal_membership::MemberView;
use shoal_storage::{MemStore, NodeId};

use super::clients::ClientOp;
use super::{EventKind, NodeStatus, Sim, derive_seed, duration_us};
use crate::config::{ReplicationConfig, SimConfig};
use crate::history::History;

/// The wall-clock time (µs since the Unix epoch) at virtual time zero: 2024-01-01T00:00:00Z,
/// so versions look like real ones and a clock set back a minute does not go below zero.
pub const WALL_CLOCK_EPOCH_US: u64 = 1_704_067_200_000_000;

/// A node's wall clock at virtual time `virtual_us`, `offset_us` off (never below zero).
pub fn wall_clock_us(virtual_us: u64, offset_us: i64) -> u64 {
    let us = i128::from(WALL_CLOCK_EPOCH_US) + i128::from(virtual_us) + i128::from(offset_us);
    u64::try_from(us.max(0)).unwrap_or(u64::MAX)
}

/// Data-plane counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Requests cores sent to other nodes.
    pub requests_sent: u64,
    /// Requests a store served (from peers and from the node's own operations).
    pub requests_served: u64,
    /// Requests or replies lost at random.
    pub dropped_loss: u64,
    /// Requests or replies stopped by a partition.
    pub dropped_partition: u64,
    /// Requests that reached a node that was not running (or had restarted since).
    pub dropped_node_down: u64,
    /// Requests to a node the coordinator had no address for.
    pub unreachable: u64,
    /// Requests whose timeout fired before an answer came.
    pub timeouts: u64,
    /// Read-repair writes sent.
    pub read_repairs: u64,
    /// Times a node's placement changed (ring changes and transitions ending).
    pub placement_changes: u64,
    /// Times a node's ring changed (members, zones or capacities).
    pub ring_changes: u64,
    /// Partitions whose transition ended on anti-entropy's evidence.
    pub partitions_settled: u64,
    /// Owner sets found in other nodes' views that a placement did not honour yet.
    pub owner_sets_found: u64,
    /// Anti-entropy exchanges that ended.
    pub sync_exchanges: u64,
    /// Anti-entropy exchanges that stopped early (a peer down, a timeout).
    pub sync_failed: u64,
    /// Records anti-entropy copied (either way).
    pub sync_records: u64,
    /// Blocks anti-entropy copied (either way).
    pub sync_blocks: u64,
    /// Hand-overs of copies no longer owned, and those not confirmed.
    pub handovers: u64,
    /// Hand-overs not confirmed (an owner unreachable or holding something else).
    pub handovers_failed: u64,
    /// Partition copies (per kind) dropped after a confirmed hand-over.
    pub copies_dropped: u64,
    /// Nodes that refilled a wiped store and answer reads again.
    pub refills: u64,
    /// Client operations started.
    pub client_ops: u64,
}

/// A random client workload: operations on a fixed set of paths, started at random running
/// nodes at random times, a bounded number at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// The paths the clients touch.
    pub paths: Vec<String>,
    /// Mean time between two operation starts (uniform between zero and twice this).
    pub interval_mean: Duration,
    /// Most client operations of the workload in flight at once; a start finding that many
    /// running is skipped.
    pub in_flight_max: usize,
    /// Share of PUTs, in percent.
    pub put_percent: u32,
    /// Share of GETs, in percent (the rest are DELETEs).
    pub get_percent: u32,
    /// Largest file a PUT writes (at least 1 byte; random content).
    pub size_max_bytes: usize,
    /// The nodes clients go to; `None` for any running node.
    pub coordinators: Option<Vec<usize>>,
}

impl Default for Workload {
    /// 20 paths in 3 directories, an operation every 200 ms on average, at most 4 at once,
    /// 45 % PUT, 40 % GET, 15 % DELETE, files up to 3½ blocks of 4 KiB.
    fn default() -> Self {
        Self {
            paths: (0..20).map(|i| format!("/dir{}/file{i}", i % 3)).collect(),
            interval_mean: Duration::from_millis(200),
            in_flight_max: 4,
            put_percent: 45,
            get_percent: 40,
            size_max_bytes: 4096 * 3 + 2048,
            coordinators: None,
        }
    }
}

/// The data plane's part of one node; the store outlives crashes, the core is per run.
pub(super) struct DataNode {
    store: Arc<MemStore>,
    /// Added to virtual time to make this node's wall clock.
    clock_offset_us: i64,
    pub(super) core: Option<NodeCore<MemStore>>,
    /// The members its core remembers, kept across restarts like the real node's
    /// `members.json`.
    known: ClusterMemory,
    /// Its store was wiped and its core has not yet reported it refilled: every start says
    /// so, like the real node's `store_lost` marker.
    lost_store: bool,
    /// The membership view last handed to the core.
    fed: Option<Vec<MemberView>>,
    /// When the pending timeout event of this run fires (virtual µs).
    timer_at: Option<u64>,
    /// Peers' requests its core serves: who asked, in which run, under which message id.
    serving: BTreeMap<PeerRequestId, (usize, u64, MessageId)>,
}

impl DataNode {
    /// Node `index`'s store and clock offset (from the seed, within the configured skew).
    pub(super) fn new(config: &SimConfig, replication: &ReplicationConfig, index: usize) -> DataNode {
        let skew = i64::try_from(duration_us(replication.clock_skew_max)).unwrap_or(i64::MAX);
        let clock_offset_us = if skew == 0 {
            0
        } else {
            StdRng::from_seed(derive_seed(config.seed, b"clock skew", index as u64, 0)).random_range(-skew..=skew)
        };
        DataNode {
            store: Arc::new(MemStore::new(replication.store_capacity_bytes)),
            clock_offset_us,
            core: None,
            known: ClusterMemory::default(),
            lost_store: false,
            fed: None,
            timer_at: None,
            serving: BTreeMap::new(),
        }
    }
}

/// Everything of the data plane that is not one node's.
pub(super) struct DataPlane {
    pub(super) config: ReplicationConfig,
    pub(super) clients: BTreeMap<u64, ClientOp>,
    /// The simulator's client id of each core's client.
    pub(super) handles: BTreeMap<(usize, ClientId), u64>,
    pub(super) next_client: u64,
    pub(super) history: History,
    /// Content of every PUT issued, by content hash (unique: each starts with the op's id).
    pub(super) contents: BTreeMap<shoal_storage::BlockHash, (u64, bytes::Bytes)>,
    pub(super) workload: Option<Workload>,
    pub(super) workload_generation: u64,
    pub(super) workload_rng: StdRng,
    pub(super) stats: DataStats,
}

impl DataPlane {
    pub(super) fn new(config: &SimConfig, replication: &ReplicationConfig) -> DataPlane {
        DataPlane {
            config: replication.clone(),
            clients: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_client: 0,
            history: History::default(),
            contents: BTreeMap::new(),
            workload: None,
            workload_generation: 0,
            workload_rng: StdRng::from_seed(derive_seed(config.seed, b"workload", 0, 0)),
            stats: DataStats::default(),
        }
    }
}

/// A data-plane event.
pub(super) enum DataEvent {
    /// Request `id` of node `from`'s run `from_epoch` arrives at node `to`, sent while `to`
    /// ran epoch `to_epoch` (a restarted node never gets requests meant for its previous run).
    Request { from: usize, from_epoch: u64, to: usize, to_epoch: u64, id: MessageId, request: Request },
    /// The reply to request `id` arrives back at node `to`'s run `to_epoch`, from `from`.
    Reply { from: usize, to: usize, to_epoch: u64, id: MessageId, reply: Reply },
    /// Node `node`'s run `epoch` has a timeout due.
    Timeout { node: usize, epoch: u64 },
    /// The workload's next client operation is due.
    Workload { generation: u64 },
}

impl Sim {
    pub(super) fn data(&self) -> &DataPlane {
        self.data.as_ref().expect("the simulation has no data plane (SimConfig::replication)")
    }

    pub(super) fn data_mut(&mut self) -> &mut DataPlane {
        self.data.as_mut().expect("the simulation has no data plane (SimConfig::replication)")
    }

    fn data_node(&self, index: usize) -> &DataNode {
        self.node(index).data.as_ref().expect("the simulation has no data plane (SimConfig::replication)")
    }

    fn data_node_mut(&mut self, index: usize) -> &mut DataNode {
        self.nodes[index].data.as_mut().expect("the simulation has no data plane (SimConfig::replication)")
    }

    /// Node `index`'s core, if it runs.
    pub(super) fn core_mut(&mut self, index: usize) -> Option<&mut NodeCore<MemStore>> {
        self.nodes[index].data.as_mut()?.core.as_mut()
    }

    /// Whether the run has a data plane ([`SimConfig::replication`]).
    pub fn has_data_plane(&self) -> bool {
        self.data.is_some()
    }

    /// Data-plane counters.
    pub fn data_stats(&self) -> DataStats {
        let mut stats = self.data().stats;
        let in_flight = self.nodes.iter().filter_map(|node| node.data.as_ref()?.core.as_ref());
        stats.read_repairs += in_flight.map(NodeCore::repairs_in_flight).sum::<u64>();
        stats
    }

    /// Node `index`'s store (the same across its restarts).
    pub fn store(&self, index: usize) -> Arc<MemStore> {
        self.data_node(index).store.clone()
    }

    /// Wipes stopped node `index`'s data directory: an empty store and no remembered
    /// members (its identity, kept apart from the data in this model, stays). Its next run
    /// must refill from its peers.
    pub fn wipe(&mut self, index: usize) {
        assert!(!self.node(index).status.is_up(), "node {index} must be stopped to be wiped");
        let capacity = self.data().config.store_capacity_bytes;
        let node = self.data_node_mut(index);
        node.store = Arc::new(MemStore::new(capacity));
        node.known = ClusterMemory::default();
        node.lost_store = true;
        self.record_action(format_args!("wipe {index}"));
    }

    /// Node `index`'s clock offset, in µs.
    pub fn clock_offset_us(&self, index: usize) -> i64 {
        self.data_node(index).clock_offset_us
    }

    /// Sets node `index`'s clock offset from now on: a clock jump if it runs (its pending
    /// deadlines come due by the new clock).
    pub fn set_clock_offset(&mut self, index: usize, offset: i64) {
        self.data_node_mut(index).clock_offset_us = offset;
        self.record_action(format_args!("clock offset {index} {offset}us"));
        self.schedule_timeout(index);
    }

    /// Node `index`'s wall clock now (µs since the Unix epoch), as its core sees it.
    pub fn wall_clock_us(&self, index: usize) -> u64 {
        wall_clock_us(self.now_us, self.clock_offset_us(index))
    }

    /// Node `index`'s account of durability, if it runs (what `shoal status` shows of it).
    pub fn durability(&self, index: usize) -> Option<shoal_core::node::Durability> {
        let now = self.wall_clock_us(index);
        self.data_node(index).core.as_ref().map(|core| core.durability(now))
    }

    /// Node `index`'s placement, if it runs.
    pub fn placement(&self, index: usize) -> Option<Arc<Placement>> {
        self.data_node(index).core.as_ref().map(NodeCore::placement)
    }

    /// Whether node `index` runs and may coordinate (it has joined, as its core decides).
    pub fn is_ready(&self, index: usize) -> bool {
        self.node(index).status == NodeStatus::Running
            && self.data_node(index).core.as_ref().is_some_and(NodeCore::is_ready)
    }

    // ----- nodes -----------------------------------------------------------------------------

    /// A new run of node `index` (called by `start_node`): a new core from the members the
    /// previous run remembered, fed the current view.
    pub(super) fn start_data_node(&mut self, index: usize) {
        let Some(data) = &self.data else { return };
        let config: CoreConfig = data.config.core.clone();
        let id = NodeId(self.nodes[index].node_id);
        let has_seeds = self.config.seeds.iter().any(|&seed| seed != index);
        let now = self.wall_clock_us(index);
        let node = self.data_node_mut(index);
        let core = NodeCore::new(now, id, config, node.store.clone(), node.known.clone(), has_seeds, node.lost_store);
        node.core = Some(core);
        node.fed = None;
        node.timer_at = None;
        node.serving.clear();
        self.feed_view(index);
    }

    /// Node `index` stops (called by `stop`): its core is dropped with everything it had in
    /// flight, its clients never hear back; a crash loses the store's unsynced writes.
    pub(super) fn stop_data_node(&mut self, index: usize, crashed: bool) {
        if self.data.is_none() {
            return;
        }
        let clients: Vec<u64> =
            self.data().clients.iter().filter(|(_, client)| client.node == index).map(|(&id, _)| id).collect();
        for id in clients {
            self.finish_client(id, crate::history::Outcome::Unanswered);
        }
        let node = self.data_node_mut(index);
        let repairs = node.core.take().map_or(0, |core| core.repairs_in_flight());
        if crashed {
            node.store.crash();
        }
        self.data_mut().stats.read_repairs += repairs;
        self.data_mut().handles.retain(|(node, _), _| *node != index);
    }

    /// Hands node `index`'s membership view to its core when the membership says it changed
    /// ([`Membership::take_changed`]); the core re-evaluates the last view on its own timer.
    ///
    /// [`Membership::take_changed`]: shoal_membership::Membership::take_changed
    pub(super) fn feed_view(&mut self, index: usize) {
        if self.data.is_none() {
            return;
        }
        let now_ms = self.now_ms();
        let first = self.data_node(index).fed.is_none();
        let Some(membership) = self.nodes[index].membership.as_mut() else { return };
        if !membership.take_changed() && !first {
            return;
        }
        let mut views = membership.members(now_ms);
        let now = self.wall_clock_us(index);
        // The membership runs on virtual time, the core on the node's wall clock (in
        // production both are the same clock): the view's dates move to the core's.
        let offset = self.clock_offset_us(index);
        for view in &mut views {
            view.state_since_ms = wall_clock_us(view.state_since_ms.saturating_mul(1000), offset) / 1000;
        }
        let node = self.data_node_mut(index);
        if node.fed.as_ref() == Some(&views) {
            return;
        }
        node.fed = Some(views.clone());
        let Some(core) = node.core.as_mut() else { return };
        core.handle_membership(now, views);
        self.drain_core(index);
    }

    // ----- carrying the core's outputs ---------------------------------------------------------

    /// Carries out everything node `index`'s core queued, then arms its next timeout.
    pub(super) fn drain_core(&mut self, index: usize) {
        loop {
            let now = self.wall_clock_us(index);
            let store = self.data_node(index).store.clone();
            let Some(core) = self.core_mut(index) else { return };
            if let Some(transmit) = core.poll_transmit() {
                self.transmit(index, transmit);
            } else if let Some(job) = core.poll_store_job() {
                let served = matches!(job.work, StoreWork::Serve(_));
                let done = {
                    let _span = tracing::debug_span!("store", node = index).entered();
                    job.work.run(&*store)
                };
                core.handle_store_done(now, job.id, done);
                self.data_mut().stats.requests_served += u64::from(served);
            } else if let Some(reply) = core.poll_peer_reply() {
                self.reply_to_peer(index, reply.id, reply.reply);
            } else if let Some(event) = core.poll_event() {
                self.core_event(index, event);
            } else if let Some(client) = core.poll_client() {
                self.client_progress(index, client);
            } else {
                break;
            }
        }
        self.schedule_timeout(index);
    }

    /// Pushes a timeout event for node `index`'s next deadline unless one is due earlier.
    fn schedule_timeout(&mut self, index: usize) {
        let (offset, epoch) = (self.clock_offset_us(index), self.nodes[index].epoch);
        let now = self.now_us;
        let node = self.data_node_mut(index);
        let Some(deadline) = node.core.as_ref().and_then(NodeCore::poll_timeout) else { return };
        // The deadline is on the node's wall clock; the event queue runs on virtual time.
        let virtual_deadline = i128::from(deadline) - i128::from(WALL_CLOCK_EPOCH_US) - i128::from(offset);
        let at = u64::try_from(virtual_deadline.max(i128::from(now))).unwrap_or(u64::MAX);
        if node.timer_at.is_some_and(|pending| pending <= at) {
            return;
        }
        node.timer_at = Some(at);
        self.push(at, EventKind::Data(DataEvent::Timeout { node: index, epoch }));
    }

    fn core_event(&mut self, index: usize, event: Event) {
        let stats = &mut self.data_mut().stats;
        match event {
            Event::Ready => self.record_action(format_args!("ready {index}")),
            Event::KnownMembers(known) => self.data_node_mut(index).known = known,
            Event::PlacementChanged(placement) => {
                stats.placement_changes += 1;
                let members = self.ring_indices(&placement);
                let settling = placement.settling().len();
                tracing::debug!(node = index, ?members, settling, "placement changed");
                self.record_action(format_args!("placement {index} {members:?} settling={settling}"));
            }
            Event::RingChanged { .. } => stats.ring_changes += 1,
            Event::Settled { partitions, found, settling } => {
                stats.partitions_settled += partitions as u64;
                stats.owner_sets_found += found as u64;
                self.record_action(format_args!(
                    "settled {index}: {partitions} partitions, {found} sets from other views, {settling} still settling"
                ));
            }
            Event::RepairsSent(count) => stats.read_repairs += count,
            Event::Timeout(_) => stats.timeouts += 1,
            Event::Unreachable(_) => stats.unreachable += 1,
            Event::SyncEnded(report) => {
                stats.sync_exchanges += 1;
                stats.sync_failed += u64::from(report.failure.is_some());
                stats.sync_records += report.records_pulled + report.records_pushed;
                stats.sync_blocks += report.blocks_pulled + report.blocks_pushed;
            }
            Event::HandedOver { dropped, failure, .. } => {
                stats.handovers += 1;
                stats.handovers_failed += u64::from(failure.is_some());
                stats.copies_dropped += dropped as u64;
            }
            Event::Refilled => {
                stats.refills += 1;
                self.data_node_mut(index).lost_store = false;
                self.record_action(format_args!("refilled {index}"));
            }
            Event::WriteInDoubt | Event::BlockUnavailable(_) => {}
        }
    }

    /// The simulator indices of a placement's ring members, sorted.
    pub(super) fn ring_indices(&self, placement: &Placement) -> Vec<usize> {
        let mut members: Vec<usize> =
            placement.ring().members().iter().filter_map(|m| self.by_id.get(&m.node_id).copied()).collect();
        members.sort_unstable();
        members
    }

    /// Puts a request of node `from` on the network.
    fn transmit(&mut self, from: usize, transmit: Transmit) {
        let Transmit { id, to, request, .. } = transmit;
        self.data_mut().stats.requests_sent += 1;
        let Some(target) = self.by_id.get(&to.0).copied() else { return };
        if !self.can_reach(from, target) {
            self.data_mut().stats.dropped_partition += 1;
            return;
        }
        if self.lost() {
            return;
        }
        let (from_epoch, to_epoch) = (self.nodes[from].epoch, self.nodes[target].epoch);
        let delay = self.random_latency_us();
        let event = DataEvent::Request { from, from_epoch, to: target, to_epoch, id, request };
        self.push(self.now_us + delay, EventKind::Data(event));
    }

    /// Whether the network loses this message (counted).
    fn lost(&mut self) -> bool {
        let lost = self.network.loss > 0.0 && self.net_rng.random_bool(self.network.loss);
        if lost {
            self.data_mut().stats.dropped_loss += 1;
        }
        lost
    }

    /// Sends node `index`'s reply to a peer's request back to the peer.
    fn reply_to_peer(&mut self, index: usize, id: PeerRequestId, reply: Reply) {
        let Some((to, to_epoch, message)) = self.data_node_mut(index).serving.remove(&id) else { return };
        if !self.can_reach(index, to) {
            self.data_mut().stats.dropped_partition += 1;
            return;
        }
        if self.lost() {
            return;
        }
        let delay = self.random_latency_us();
        let event = DataEvent::Reply { from: index, to, to_epoch, id: message, reply };
        self.push(self.now_us + delay, EventKind::Data(event));
    }

    // ----- events ----------------------------------------------------------------------------

    pub(super) fn dispatch_data(&mut self, event: DataEvent) {
        match event {
            DataEvent::Request { from, from_epoch, to, to_epoch, id, request } => {
                if !self.arrives(from, to, to_epoch) {
                    return;
                }
                self.trace_message(b"Q", from, to, id);
                trace_request(&mut self.trace, &request);
                let now = self.wall_clock_us(to);
                let core = self.core_mut(to).expect("a running node has a core");
                let served = core.handle_peer_request(now, request);
                self.data_node_mut(to).serving.insert(served, (from, from_epoch, id));
                self.drain_core(to);
            }
            DataEvent::Reply { from, to, to_epoch, id, reply } => {
                if !self.arrives(from, to, to_epoch) {
                    return;
                }
                self.trace_message(b"R", from, to, id);
                trace_reply(&mut self.trace, &reply);
                let now = self.wall_clock_us(to);
                self.core_mut(to).expect("a running node has a core").handle_reply(now, id, Ok(reply));
                self.drain_core(to);
            }
            DataEvent::Timeout { node, epoch } => {
                if self.nodes[node].epoch != epoch || self.data_node(node).timer_at != Some(self.now_us) {
                    return; // a stale timeout: the run ended, or an earlier one took its place
                }
                self.data_node_mut(node).timer_at = None;
                let now = self.wall_clock_us(node);
                if let Some(core) = self.core_mut(node) {
                    core.handle_timeout(now);
                    self.drain_core(node);
                }
            }
            DataEvent::Workload { generation } => {
                if self.data().workload_generation == generation {
                    self.workload_tick(generation);
                }
            }
        }
    }

    /// Whether a message from `from` reaches node `to`'s run `to_epoch` now (counted if not).
    fn arrives(&mut self, from: usize, to: usize, to_epoch: u64) -> bool {
        if !self.can_reach(from, to) {
            self.data_mut().stats.dropped_partition += 1;
            return false;
        }
        if self.nodes[to].epoch != to_epoch || !self.nodes[to].status.is_up() {
            self.data_mut().stats.dropped_node_down += 1;
            return false;
        }
        self.stats.events += 1;
        true
    }

    fn trace_message(&mut self, kind: &[u8], from: usize, to: usize, id: MessageId) {
        self.trace.update(kind);
        self.trace.update(&self.now_us.to_le_bytes());
        self.trace.update(&(from as u64).to_le_bytes());
        self.trace.update(&(to as u64).to_le_bytes());
        self.trace.update(format!("{id:?}").as_bytes());
    }
}

/// Feeds a request into the trace: records in full, blocks by name (the name is the hash of
/// the bytes, checked by the replica).
fn trace_request(trace: &mut blake3::Hasher, request: &Request) {
    match request {
        Request::Block(BlockRpc::Put { hash, bytes }) => {
            trace.update(b"put");
            trace.update(&hash.0);
            trace.update(&(bytes.len() as u64).to_le_bytes());
        }
        Request::Block(BlockRpc::Get(hash)) => {
            trace.update(b"get");
            trace.update(&hash.0);
        }
        Request::Record(RecordRpc::Read(key)) => {
            trace.update(format!("read {key:?}").as_bytes());
        }
        Request::Record(RecordRpc::Merge(updates)) => {
            trace.update(format!("merge {updates:?}").as_bytes());
        }
        Request::Sync(rpc) => {
            // Encoded, not formatted: digest exchanges are many and long.
            trace.update(b"sync");
            trace.update(&shoal_core::wire::encode_message(rpc).unwrap_or_default());
        }
    }
}

fn trace_reply(trace: &mut blake3::Hasher, reply: &Reply) {
    match reply {
        Reply::Block(Some(bytes)) => {
            trace.update(b"block");
            trace.update(bytes);
        }
        other => {
            trace.update(&shoal_core::wire::encode_message(other).unwrap_or_default());
        }
    }
}
