//! The data plane (ARCHITECTURE §5, §6): every node's store, replication coordinator and
//! placement, the RPCs between them over the simulated network, and the clients that PUT,
//! GET and DELETE files through any node.
//!
//! The simulator is the driver here, doing what the tokio driver does (and what
//! [`LocalCluster`](shoal_core::replication::LocalCluster) does synchronously): it sends
//! every request an operation queues, answers every token exactly once (the reply, or a
//! timeout, whichever comes first), and serves requests with [`replica::serve`]. Only the
//! core of `shoal-node` is used; nothing here touches tokio.
//!
//! - A request to another node crosses the network (latency, loss, partitions, both at
//!   sending and at arrival); a crashed or partitioned destination never answers, so the
//!   coordinator's timeout fires. A request to the coordinating node itself is served through
//!   the event queue without the network. A request to a node the coordinator's view has no
//!   record (no address) of fails at once as unreachable, as in the driver.
//! - A crash abandons every operation the node coordinates (their clients never get an
//!   answer), drops the store's unsynced writes ([`MemStore::crash`]) and the requests in
//!   flight to it; a restart gets a fresh coordinator (its clock starts over) and a fresh
//!   placement tracker, like a new process.
//! - Like the driver, a node that has seeds coordinates nothing until it has seen another
//!   member alive.
//! - Each node's wall clock (the `now_us` its operations get) is virtual time plus
//!   [`WALL_CLOCK_EPOCH_US`] plus its own offset (clock skew).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_membership::MemberState;
use shoal_core::files::{FileError, Upload};
use shoal_core::replication::{
    BlockRpc, Coordinator, FetchBlock, FileOp, FileOutcome, Handoff, HandoffReport, KnownMember, Op, Outgoing,
    Placement, PlacementTracker, QuorumFailure, ReadKeys, RecordKey, RecordRpc, RecordValue, Reply, Request, RpcError,
    WriteQuorum, coordinator, replica,
};
use shoal_storage::{BlockHash, DirRecord, FileMeta, MemStore, NodeId, RecordUpdate, Store, Version};

use super::{EventKind, NodeStatus, Sim, derive_seed, duration_us};
use crate::config::{ReplicationConfig, SimConfig};
use crate::history::{ClientKind, History, OpRecord, Outcome};

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
    /// Requests operations queued (local ones included).
    pub requests_sent: u64,
    /// Requests a replica served.
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
    /// Records and blocks pushed by hand-offs after ring changes.
    pub handoff_pushes: u64,
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

/// The data plane's part of one node; the store outlives crashes, the rest is per run.
pub(super) struct DataNode {
    store: Arc<MemStore>,
    /// Added to virtual time to make this node's wall clock.
    clock_offset_us: i64,
    run: Option<DataRun>,
    /// The members its placement remembers, kept across restarts like the real node's
    /// `members.json`.
    known: Vec<KnownMember>,
}

/// What a running node has besides its store (a restart makes new ones).
struct DataRun {
    coordinator: Arc<Coordinator>,
    tracker: PlacementTracker,
    placement: Arc<Placement>,
    /// Members the view holds a record (so an RPC address) of.
    routes: BTreeSet<u128>,
    /// Whether the node may coordinate: it has no seeds or has seen another member alive.
    ready: bool,
    /// The hand-off after the last ring change, while it runs.
    handoff: Option<HandoffTask>,
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
            run: None,
            known: Vec::new(),
        }
    }
}

/// One operation of the core in flight, and what it works for.
struct RunningOp {
    node: usize,
    purpose: Purpose,
    op: AnyOp,
}

#[derive(Clone, Copy)]
enum Purpose {
    /// A stage of client operation `id`; `part` is the block, for block writes and fetches.
    Client { id: u64, part: usize },
    /// A batch of the node's hand-off.
    Handoff,
}

enum AnyOp {
    Block(WriteQuorum),
    Fetch(FetchBlock),
    File(FileOp),
    Read(ReadKeys),
    Handoff(Handoff),
}

enum AnyOutput {
    Block(Result<(), QuorumFailure>),
    Fetch(Result<Bytes, QuorumFailure>),
    File(Result<FileOutcome, FileError>),
    Read(Result<Vec<RecordValue>, QuorumFailure>),
    Handoff(HandoffReport),
}

/// Records read per hand-off batch (as the tokio driver).
const HANDOFF_RECORDS_PER_BATCH: usize = 256;
/// Blocks per hand-off batch (as the tokio driver).
const HANDOFF_BLOCKS_PER_BATCH: usize = 8;

/// A node's hand-off after a ring change, as the tokio driver runs it: the store walked in
/// bounded batches (file records, then directory entries, then blocks), one [`Handoff`] at a
/// time. A newer ring supersedes it.
struct HandoffTask {
    placement: Arc<Placement>,
    cursor: HandoffCursor,
    /// The batch in flight.
    op: Option<u64>,
    pushed: u64,
    failed: u64,
}

enum HandoffCursor {
    Files(Option<String>),
    Dirs(Option<(String, String)>),
    Blocks(Option<BlockHash>),
    Done,
}

impl AnyOp {
    fn poll_request(&mut self) -> Option<Outgoing> {
        match self {
            AnyOp::Block(op) => op.poll_request(),
            AnyOp::Fetch(op) => op.poll_request(),
            AnyOp::File(op) => op.poll_request(),
            AnyOp::Read(op) => op.poll_request(),
            AnyOp::Handoff(op) => op.poll_request(),
        }
    }

    fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        match self {
            AnyOp::Block(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Fetch(op) => op.handle_reply(now_us, token, reply),
            AnyOp::File(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Read(op) => op.handle_reply(now_us, token, reply),
            AnyOp::Handoff(op) => op.handle_reply(now_us, token, reply),
        }
    }

    fn poll_outcome(&mut self) -> Option<AnyOutput> {
        match self {
            AnyOp::Block(op) => op.poll_outcome().map(AnyOutput::Block),
            AnyOp::Fetch(op) => op.poll_outcome().map(AnyOutput::Fetch),
            AnyOp::File(op) => op.poll_outcome().map(AnyOutput::File),
            AnyOp::Read(op) => op.poll_outcome().map(AnyOutput::Read),
            AnyOp::Handoff(op) => op.poll_outcome().map(AnyOutput::Handoff),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            AnyOp::Block(op) => op.is_finished(),
            AnyOp::Fetch(op) => op.is_finished(),
            AnyOp::File(op) => op.is_finished(),
            AnyOp::Read(op) => op.is_finished(),
            AnyOp::Handoff(op) => op.is_finished(),
        }
    }

    fn repairs_sent(&self) -> u64 {
        match self {
            AnyOp::Block(op) => op.repairs_sent(),
            AnyOp::Fetch(op) => op.repairs_sent(),
            AnyOp::File(op) => op.repairs_sent(),
            AnyOp::Read(op) => op.repairs_sent(),
            AnyOp::Handoff(op) => op.repairs_sent(),
        }
    }
}

/// A client operation in progress: the stages of a PUT, GET, DELETE or record read.
struct ClientOp {
    kind: ClientKind,
    node: usize,
    path: String,
    start_us: u64,
    /// For a PUT, the content's BLAKE3.
    content_hash: Option<BlockHash>,
    /// The coordinator's ring when it started (for the history).
    ring: (Vec<usize>, bool),
    from_workload: bool,
    stage: Stage,
}

enum Stage {
    /// A PUT stores its blocks; `hashes[i]` names block `i`. (The upload carries a BLAKE3
    /// hasher, kilobytes: boxed.)
    Blocks { upload: Option<Box<Upload>>, hashes: Vec<BlockHash>, pending: usize },
    /// A PUT commits its record.
    Commit,
    /// A GET looks the file up.
    Stat,
    /// A record read asks the owners for the file record.
    ReadRecord,
    /// A GET or record read fetches the blocks of the version it found.
    Fetch { version: Version, meta: FileMeta, parts: Vec<Option<Bytes>>, pending: usize },
    /// A DELETE writes its tombstone.
    Delete,
}

/// Everything of the data plane that is not one node's.
pub(super) struct DataPlane {
    config: ReplicationConfig,
    ops: BTreeMap<u64, RunningOp>,
    next_op: u64,
    /// `(op, token)` of every request still waiting for its reply or timeout.
    outstanding: BTreeSet<(u64, u64)>,
    clients: BTreeMap<u64, ClientOp>,
    next_client: u64,
    history: History,
    /// Content of every PUT issued, by content hash (unique: each starts with the op's id).
    contents: BTreeMap<BlockHash, (u64, Bytes)>,
    workload: Option<Workload>,
    workload_generation: u64,
    workload_rng: StdRng,
    stats: DataStats,
}

impl DataPlane {
    pub(super) fn new(config: &SimConfig, replication: &ReplicationConfig) -> DataPlane {
        DataPlane {
            config: replication.clone(),
            ops: BTreeMap::new(),
            next_op: 0,
            outstanding: BTreeSet::new(),
            clients: BTreeMap::new(),
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
    /// Request `token` of operation `op`, coordinated on `from`, arrives at node `to`, sent
    /// while `to` ran epoch `to_epoch` (a restarted node never gets requests meant for its
    /// previous run).
    Request { from: usize, to: usize, to_epoch: u64, op: u64, token: u64, request: Request },
    /// The answer to request `token` of operation `op` arrives back at node `to`, from `from`.
    Reply { from: usize, to: usize, op: u64, token: u64, reply: Result<Reply, RpcError> },
    /// Request `token` of operation `op` timed out.
    Timeout { op: u64, token: u64 },
    /// Node `node`'s run `epoch` feeds its view to its placement.
    Refresh { node: usize, epoch: u64 },
    /// The workload's next client operation is due.
    Workload { generation: u64 },
}

impl Sim {
    fn data(&self) -> &DataPlane {
        self.data.as_ref().expect("the simulation has no data plane (SimConfig::replication)")
    }

    fn data_mut(&mut self) -> &mut DataPlane {
        self.data.as_mut().expect("the simulation has no data plane (SimConfig::replication)")
    }

    fn data_node(&self, index: usize) -> &DataNode {
        self.node(index).data.as_ref().expect("the simulation has no data plane (SimConfig::replication)")
    }

    fn data_run(&mut self, index: usize) -> &mut DataRun {
        self.nodes[index].data.as_mut().and_then(|data| data.run.as_mut()).expect("a running node has a data plane")
    }

    /// Whether the run has a data plane ([`SimConfig::replication`]).
    pub fn has_data_plane(&self) -> bool {
        self.data.is_some()
    }

    /// Data-plane counters.
    pub fn data_stats(&self) -> DataStats {
        let mut stats = self.data().stats;
        stats.read_repairs += self.data().ops.values().map(|running| running.op.repairs_sent()).sum::<u64>();
        stats
    }

    /// Node `index`'s store (the same across its restarts).
    pub fn store(&self, index: usize) -> Arc<MemStore> {
        self.data_node(index).store.clone()
    }

    /// Node `index`'s clock offset, in µs.
    pub fn clock_offset_us(&self, index: usize) -> i64 {
        self.data_node(index).clock_offset_us
    }

    /// Sets node `index`'s clock offset from now on: a clock jump if it runs.
    pub fn set_clock_offset(&mut self, index: usize, offset: i64) {
        self.nodes[index].data.as_mut().expect("the simulation has no data plane").clock_offset_us = offset;
        self.record_action(format_args!("clock offset {index} {offset}us"));
    }

    /// Node `index`'s wall clock now (µs since the Unix epoch), as its operations see it.
    pub fn wall_clock_us(&self, index: usize) -> u64 {
        wall_clock_us(self.now_us, self.clock_offset_us(index))
    }

    /// Node `index`'s placement, if it runs.
    pub fn placement(&self, index: usize) -> Option<Arc<Placement>> {
        self.data_node(index).run.as_ref().map(|run| run.placement.clone())
    }

    /// Whether node `index` runs and may coordinate (it has joined, as the driver requires).
    pub fn is_ready(&self, index: usize) -> bool {
        self.node(index).status == NodeStatus::Running && self.data_node(index).run.as_ref().is_some_and(|r| r.ready)
    }

    /// Every client operation so far: finished ones, abandoned ones and those in flight.
    pub fn history(&self) -> History {
        let data = self.data();
        let mut history = data.history.clone();
        for (&id, client) in &data.clients {
            history.ops.push(OpRecord {
                id,
                kind: client.kind,
                node: client.node,
                path: client.path.clone(),
                start: Duration::from_micros(client.start_us),
                end: None,
                outcome: Outcome::Pending,
                content_hash: client.content_hash,
                ring: client.ring.clone(),
            });
        }
        history.ops.sort_by_key(|op| op.id);
        history
    }

    /// The record of client operation `id` once it ended (answered or abandoned).
    pub fn client_outcome(&self, id: u64) -> Option<&OpRecord> {
        let data = self.data();
        if data.clients.contains_key(&id) {
            return None;
        }
        data.history.ops.iter().rev().find(|op| op.id == id)
    }

    /// Client operations not yet answered.
    pub fn clients_in_flight(&self) -> usize {
        self.data().clients.len()
    }

    // ----- nodes -----------------------------------------------------------------------------

    /// A new run of node `index` (called by `start_node`): a coordinator with a fresh clock,
    /// a placement tracker that starts alone, and the periodic placement refresh.
    pub(super) fn start_data_node(&mut self, index: usize) {
        let Some(data) = &self.data else { return };
        let config = data.config.clone();
        let id = NodeId(self.nodes[index].node_id);
        let has_seeds = self.config.seeds.iter().any(|&seed| seed != index);
        let remembered = self.nodes[index].data.as_ref().map(|node| node.known.clone()).unwrap_or_default();
        let tracker = PlacementTracker::new(
            id,
            config.quorum,
            duration_us(config.transition) / 1000,
            duration_us(config.evict_after) / 1000,
            remembered,
            self.now_ms(),
        );
        let run = DataRun {
            coordinator: Coordinator::new(id, config.block_size_bytes),
            placement: tracker.placement(),
            tracker,
            routes: BTreeSet::new(),
            ready: !has_seeds,
            handoff: None,
        };
        self.nodes[index].data.as_mut().expect("a data node").run = Some(run);
        self.refresh_placement(index);
        let epoch = self.nodes[index].epoch;
        let at = self.now_us + duration_us(config.placement_refresh);
        self.push(at, EventKind::Data(DataEvent::Refresh { node: index, epoch }));
    }

    /// Node `index` stops (called by `stop`): every operation it coordinates is abandoned, its
    /// clients never hear back; a crash loses the store's unsynced writes.
    pub(super) fn stop_data_node(&mut self, index: usize, crashed: bool) {
        if self.data.is_none() {
            return;
        }
        let data = self.data_mut();
        let abandoned: Vec<u64> = data.ops.iter().filter(|(_, op)| op.node == index).map(|(&id, _)| id).collect();
        for id in &abandoned {
            if let Some(op) = data.ops.remove(id) {
                data.stats.read_repairs += op.op.repairs_sent();
            }
        }
        let abandoned: BTreeSet<u64> = abandoned.into_iter().collect();
        data.outstanding.retain(|(op, _)| !abandoned.contains(op));
        let clients: Vec<u64> = data.clients.iter().filter(|(_, c)| c.node == index).map(|(&id, _)| id).collect();
        for id in clients {
            self.finish_client(id, Outcome::Unanswered);
        }
        let node = self.nodes[index].data.as_mut().expect("a data node");
        node.run = None;
        if crashed {
            node.store.crash();
        }
    }

    /// Feeds node `index`'s membership view to its placement (and learns its routes), as the
    /// driver does periodically; records placement changes in the trace.
    pub(super) fn refresh_placement(&mut self, index: usize) {
        if self.data.is_none() {
            return;
        }
        let now_ms = self.now_ms();
        let Some(membership) = self.nodes[index].membership.as_mut() else { return };
        let views = membership.members(now_ms);
        let Some(node) = self.nodes[index].data.as_mut() else { return };
        let Some(run) = node.run.as_mut() else { return };
        let joined = !run.ready
            && views.iter().skip(1).any(|view| matches!(view.state, MemberState::Alive | MemberState::Suspect));
        let changed = run.tracker.update(now_ms, &views);
        // Routes: every member the placement knows (the view's records and those remembered).
        node.known = run.tracker.known();
        run.routes = node.known.iter().map(|member| member.node_id).collect();
        if let Some(placement) = &changed {
            run.placement = placement.clone();
        }
        if joined {
            run.ready = true;
            self.record_action(format_args!("ready {index}"));
        }
        if let Some(placement) = changed {
            if placement.in_transition() {
                self.start_handoff(index, placement.clone());
            }
            self.data_mut().stats.placement_changes += 1;
            let mut members: Vec<usize> =
                placement.ring().members().iter().filter_map(|m| self.by_id.get(&m.node_id).copied()).collect();
            members.sort_unstable();
            let transition = placement.in_transition();
            tracing::debug!(node = index, ?members, transition, "placement changed");
            self.record_action(format_args!("placement {index} {members:?} transition={transition}"));
        }
    }

    // ----- events ----------------------------------------------------------------------------

    pub(super) fn dispatch_data(&mut self, event: DataEvent) {
        match event {
            DataEvent::Request { from, to, to_epoch, op, token, request } => {
                self.deliver_request(from, to, to_epoch, op, token, request)
            }
            DataEvent::Reply { from, to, op, token, reply } => {
                if from != to && !self.can_reach(from, to) {
                    self.data_mut().stats.dropped_partition += 1;
                    return;
                }
                self.answer(to, op, token, reply);
            }
            DataEvent::Timeout { op, token } => {
                let Some(node) = self.data().ops.get(&op).map(|running| running.node) else { return };
                if self.data().outstanding.contains(&(op, token)) {
                    self.data_mut().stats.timeouts += 1;
                }
                self.answer(node, op, token, Err(RpcError::Timeout));
            }
            DataEvent::Refresh { node, epoch } => {
                if self.nodes[node].epoch != epoch || !self.nodes[node].status.is_up() {
                    return;
                }
                self.refresh_placement(node);
                let at = self.now_us + duration_us(self.data().config.placement_refresh);
                self.push(at, EventKind::Data(DataEvent::Refresh { node, epoch }));
            }
            DataEvent::Workload { generation } => {
                if self.data().workload_generation == generation {
                    self.workload_tick(generation);
                }
            }
        }
    }

    /// Sends one request of operation `op` (coordinated on `from`) and arms its timeout.
    fn send_request(&mut self, from: usize, op: u64, outgoing: Outgoing) {
        let Outgoing { token, to, request } = outgoing;
        let timeout_at = self.now_us + duration_us(self.data().config.rpc_timeout);
        let data = self.data_mut();
        data.stats.requests_sent += 1;
        data.outstanding.insert((op, token));
        self.push(timeout_at, EventKind::Data(DataEvent::Timeout { op, token }));
        let target = self.by_id.get(&to.0).copied();
        let routed = self.data_run(from).routes.contains(&to.0);
        match target {
            Some(target) if target == from => {
                let to_epoch = self.nodes[target].epoch;
                let event = DataEvent::Request { from, to: target, to_epoch, op, token, request };
                self.push(self.now_us, EventKind::Data(event));
            }
            Some(target) if routed => {
                if !self.can_reach(from, target) {
                    self.data_mut().stats.dropped_partition += 1;
                    return;
                }
                if self.network.loss > 0.0 && self.net_rng.random_bool(self.network.loss) {
                    self.data_mut().stats.dropped_loss += 1;
                    return;
                }
                let to_epoch = self.nodes[target].epoch;
                let delay = self.random_latency_us();
                let event = DataEvent::Request { from, to: target, to_epoch, op, token, request };
                self.push(self.now_us + delay, EventKind::Data(event));
            }
            _ => {
                self.data_mut().stats.unreachable += 1;
                let reply = Err(RpcError::Unreachable(format!("no address known for {to}")));
                self.push(self.now_us, EventKind::Data(DataEvent::Reply { from, to: from, op, token, reply }));
            }
        }
    }

    /// A request arrives at node `to`: served from its store, the answer sent back.
    fn deliver_request(&mut self, from: usize, to: usize, to_epoch: u64, op: u64, token: u64, request: Request) {
        if from != to && !self.can_reach(from, to) {
            self.data_mut().stats.dropped_partition += 1;
            return;
        }
        if self.nodes[to].epoch != to_epoch || !self.nodes[to].status.is_up() {
            self.data_mut().stats.dropped_node_down += 1;
            return;
        }
        self.stats.events += 1;
        self.trace.update(b"Q");
        self.trace.update(&self.now_us.to_le_bytes());
        self.trace.update(&(from as u64).to_le_bytes());
        self.trace.update(&(to as u64).to_le_bytes());
        self.trace.update(&op.to_le_bytes());
        self.trace.update(&token.to_le_bytes());
        trace_request(&mut self.trace, &request);
        let reply = {
            let _span = tracing::debug_span!("replica", node = to, now_ms = self.now_ms()).entered();
            replica::serve(&*self.data_node(to).store, request)
        };
        self.data_mut().stats.requests_served += 1;
        if from == to {
            self.push(self.now_us, EventKind::Data(DataEvent::Reply { from, to: from, op, token, reply: Ok(reply) }));
            return;
        }
        if !self.can_reach(to, from) {
            self.data_mut().stats.dropped_partition += 1;
            return;
        }
        if self.network.loss > 0.0 && self.net_rng.random_bool(self.network.loss) {
            self.data_mut().stats.dropped_loss += 1;
            return;
        }
        let delay = self.random_latency_us();
        let event = DataEvent::Reply { from: to, to: from, op, token, reply: Ok(reply) };
        self.push(self.now_us + delay, EventKind::Data(event));
    }

    /// Feeds the first answer (reply or timeout) of request `token` to operation `op`, which
    /// runs on node `node`.
    fn answer(&mut self, node: usize, op: u64, token: u64, reply: Result<Reply, RpcError>) {
        if !self.data_mut().outstanding.remove(&(op, token)) {
            return; // the timeout after the reply, or the reply after the timeout
        }
        if !self.data().ops.contains_key(&op) {
            return;
        }
        self.stats.events += 1;
        self.trace.update(b"R");
        self.trace.update(&self.now_us.to_le_bytes());
        self.trace.update(&op.to_le_bytes());
        self.trace.update(&token.to_le_bytes());
        trace_reply(&mut self.trace, &reply);
        let now_us = self.wall_clock_us(node);
        let running = self.data_mut().ops.get_mut(&op).expect("checked above");
        {
            let _span = tracing::debug_span!("coordinator", node, op, token).entered();
            running.op.handle_reply(now_us, token, reply);
        }
        self.drive(op);
    }

    /// Starts operation `op` on node `node` for client `client`.
    fn start_op(&mut self, node: usize, purpose: Purpose, op: AnyOp) -> u64 {
        let data = self.data_mut();
        let id = data.next_op;
        data.next_op += 1;
        data.ops.insert(id, RunningOp { node, purpose, op });
        self.drive(id);
        id
    }

    /// Sends what operation `id` queued, hands its outcome to its client, and forgets it once
    /// it has finished.
    fn drive(&mut self, id: u64) {
        let Some(running) = self.data_mut().ops.get_mut(&id) else { return };
        let node = running.node;
        let mut requests = Vec::new();
        while let Some(outgoing) = running.op.poll_request() {
            requests.push(outgoing);
        }
        let outcome = running.op.poll_outcome();
        let purpose = running.purpose;
        if running.op.is_finished() {
            let running = self.data_mut().ops.remove(&id).expect("present");
            self.data_mut().stats.read_repairs += running.op.repairs_sent();
        }
        for outgoing in requests {
            self.send_request(node, id, outgoing);
        }
        match (outcome, purpose) {
            (None, _) => {}
            (Some(AnyOutput::Handoff(report)), Purpose::Handoff) => self.handoff_batch_done(node, id, report),
            (Some(outcome), Purpose::Client { id, part }) => self.progress(id, part, outcome),
            (Some(_), Purpose::Handoff) => unreachable!("a hand-off batch answers with its report"),
        }
    }

    // ----- clients ---------------------------------------------------------------------------

    fn new_client(&mut self, kind: ClientKind, node: usize, path: &str, stage: Stage, from_workload: bool) -> u64 {
        assert!(self.nodes[node].status.is_up(), "node {node} is not running");
        let start_us = self.now_us;
        self.refresh_placement(node);
        let ring = match self.placement(node) {
            Some(placement) => {
                let mut members: Vec<usize> =
                    placement.ring().members().iter().filter_map(|m| self.by_id.get(&m.node_id).copied()).collect();
                members.sort_unstable();
                (members, placement.in_transition())
            }
            None => (Vec::new(), false),
        };
        let data = self.data_mut();
        let id = data.next_client;
        data.next_client += 1;
        data.stats.client_ops += 1;
        let client =
            ClientOp { kind, node, path: path.to_string(), start_us, content_hash: None, ring, from_workload, stage };
        data.clients.insert(id, client);
        self.record_action(format_args!("client {id} {kind:?} {path} at {node}"));
        id
    }

    /// Whether node `node` refuses to coordinate: the client gets a failure at once.
    fn refuse_if_not_ready(&mut self, id: u64) -> bool {
        let node = self.data().clients[&id].node;
        if self.data_node(node).run.as_ref().is_some_and(|run| run.ready) {
            return false;
        }
        self.finish_client(id, Outcome::Failed("the node has not joined its cluster yet".into()));
        true
    }

    /// Starts a PUT of `content` to `path` through node `node`; returns the client operation's
    /// id. The content must be unique to this PUT (the checkers find a PUT by its content).
    pub fn start_put(&mut self, node: usize, path: &str, content: Vec<u8>) -> u64 {
        let content = Bytes::from(content);
        let stage = Stage::Blocks { upload: None, hashes: Vec::new(), pending: 0 };
        let id = self.new_client(ClientKind::Put, node, path, stage, false);
        let content_hash = BlockHash::of(&content);
        let data = self.data_mut();
        let previous = data.contents.insert(content_hash, (id, content.clone()));
        assert!(previous.is_none(), "two PUTs with the same content cannot be told apart");
        data.clients.get_mut(&id).expect("just made").content_hash = Some(content_hash);
        if self.refuse_if_not_ready(id) {
            return id;
        }
        let run = self.data_run(node);
        let (coordinator, placement) = (run.coordinator.clone(), run.placement.clone());
        let mut upload = match coordinator.begin_upload(path) {
            Ok(upload) => upload,
            Err(err) => {
                self.finish_client(id, Outcome::Failed(err.to_string()));
                return id;
            }
        };
        let mut blocks = upload.push(&content);
        blocks.extend(upload.finish());
        let mut writes = Vec::with_capacity(blocks.len());
        let mut hashes = Vec::with_capacity(blocks.len());
        for (index, bytes) in blocks {
            assert_eq!(index, hashes.len(), "the upload hands out blocks in order");
            let (hash, write) = coordinator.put_block(&placement, bytes);
            hashes.push(hash);
            writes.push(write);
        }
        let pending = writes.len();
        self.data_mut().clients.get_mut(&id).expect("just made").stage =
            Stage::Blocks { upload: Some(Box::new(upload)), hashes, pending };
        if pending == 0 {
            self.commit(id);
            return id;
        }
        for (part, write) in writes.into_iter().enumerate() {
            self.start_op(node, Purpose::Client { id, part }, AnyOp::Block(write));
        }
        id
    }

    /// Starts a GET of `path` through node `node` (stat, then every block, verified against
    /// what the PUT that wrote that content sent).
    pub fn start_get(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::Get, node, path, Stage::Stat, false);
        if self.refuse_if_not_ready(id) {
            return id;
        }
        let run = self.data_run(node);
        match run.coordinator.stat(run.placement.clone(), path) {
            Ok(op) => {
                self.start_op(node, Purpose::Client { id, part: 0 }, AnyOp::File(op));
            }
            Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
        }
        id
    }

    /// Starts a DELETE of `path` through node `node`.
    pub fn start_delete(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::Delete, node, path, Stage::Delete, false);
        if self.refuse_if_not_ready(id) {
            return id;
        }
        let run = self.data_run(node);
        match run.coordinator.delete(run.placement.clone(), path) {
            Ok(op) => {
                self.start_op(node, Purpose::Client { id, part: 0 }, AnyOp::File(op));
            }
            Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
        }
        id
    }

    /// Starts a quorum read of `path`'s file record through node `node` (tombstones
    /// included), then of its blocks if it is live: what the final checks read.
    pub fn start_read_record(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::ReadRecord, node, path, Stage::ReadRecord, false);
        if self.refuse_if_not_ready(id) {
            return id;
        }
        let placement = self.data_run(node).placement.clone();
        let read = ReadKeys::new(&placement, vec![RecordKey::File(path.to_string())]);
        self.start_op(node, Purpose::Client { id, part: 0 }, AnyOp::Read(read));
        id
    }

    fn commit(&mut self, id: u64) {
        let client = self.data_mut().clients.get_mut(&id).expect("a client in flight");
        let node = client.node;
        let upload = match std::mem::replace(&mut client.stage, Stage::Commit) {
            Stage::Blocks { upload: Some(mut upload), hashes, .. } => {
                for (index, hash) in hashes.into_iter().enumerate() {
                    upload.block_stored(index, hash);
                }
                *upload
            }
            _ => unreachable!("a PUT commits after its blocks"),
        };
        self.refresh_placement(node);
        let run = self.data_run(node);
        match run.coordinator.commit(run.placement.clone(), upload, None) {
            Ok(op) => {
                self.start_op(node, Purpose::Client { id, part: 0 }, AnyOp::File(op));
            }
            Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
        }
    }

    /// Starts fetching the blocks of `meta` for client `id`.
    fn fetch(&mut self, id: u64, version: Version, meta: FileMeta) {
        let node = self.data().clients[&id].node;
        let blocks = meta.blocks.clone();
        let pending = blocks.len();
        self.data_mut().clients.get_mut(&id).expect("a client in flight").stage =
            Stage::Fetch { version, meta, parts: vec![None; pending], pending };
        if pending == 0 {
            self.verify_content(id);
            return;
        }
        self.refresh_placement(node);
        let run = self.data_run(node);
        let (coordinator, placement) = (run.coordinator.clone(), run.placement.clone());
        for (part, hash) in blocks.into_iter().enumerate() {
            let fetch = coordinator.fetch_block(&placement, hash);
            self.start_op(node, Purpose::Client { id, part }, AnyOp::Fetch(fetch));
        }
    }

    /// The fetched content against what the PUT that wrote it sent.
    fn verify_content(&mut self, id: u64) {
        let data = self.data();
        let Stage::Fetch { version, meta, parts, .. } = &data.clients[&id].stage else {
            unreachable!("verified after a fetch")
        };
        let content: Vec<u8> = parts.iter().flat_map(|part| part.as_deref().unwrap_or_default().to_vec()).collect();
        let outcome = match data.contents.get(&meta.content_hash) {
            None => Outcome::Corrupt(format!("version {version:?} names content {} no PUT wrote", meta.content_hash)),
            Some((_, expected)) if content[..] != expected[..] || meta.size != expected.len() as u64 => {
                Outcome::Corrupt(format!(
                    "version {version:?} read {} bytes that differ from the {} the PUT of {} wrote",
                    content.len(),
                    expected.len(),
                    meta.content_hash
                ))
            }
            Some(_) => Outcome::Found { version: *version, content_hash: meta.content_hash },
        };
        self.finish_client(id, outcome);
    }

    /// What an operation's outcome means for its client.
    fn progress(&mut self, id: u64, part: usize, output: AnyOutput) {
        let Some(client) = self.data_mut().clients.get_mut(&id) else {
            return; // the client already has its answer (a failed block of a PUT)
        };
        match (&mut client.stage, output) {
            (Stage::Blocks { pending, .. }, AnyOutput::Block(result)) => match result {
                Ok(()) => {
                    *pending -= 1;
                    if *pending == 0 {
                        self.commit(id);
                    }
                }
                // Without all its blocks the record is never written: certainly no effect.
                Err(failure) => {
                    let err = coordinator::block_write_failed(failure);
                    self.finish_client(id, Outcome::Failed(format!("block {part} not stored: {err}")))
                }
            },
            (Stage::Commit, AnyOutput::File(result)) => {
                let outcome = match result {
                    Ok(FileOutcome::File(stat)) => {
                        assert_eq!(Some(stat.meta.content_hash), client.content_hash, "a commit answers with its file");
                        Outcome::Acked(stat.version)
                    }
                    Ok(other) => Outcome::Corrupt(format!("a commit answered {other:?}")),
                    Err(err) => write_error(err),
                };
                self.finish_client(id, outcome);
            }
            (Stage::Delete, AnyOutput::File(result)) => {
                let outcome = match result {
                    Ok(FileOutcome::Deleted(version)) => Outcome::Acked(version),
                    Ok(other) => Outcome::Corrupt(format!("a delete answered {other:?}")),
                    Err(FileError::NotFound(_)) => Outcome::NotFound,
                    Err(err) => write_error(err),
                };
                self.finish_client(id, outcome);
            }
            (Stage::Stat, AnyOutput::File(result)) => match result {
                Ok(FileOutcome::File(stat)) => self.fetch(id, stat.version, stat.meta),
                Ok(other) => self.finish_client(id, Outcome::Corrupt(format!("a stat answered {other:?}"))),
                Err(FileError::NotFound(_)) => self.finish_client(id, Outcome::NotFound),
                Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
            },
            (Stage::ReadRecord, AnyOutput::Read(result)) => match result {
                Ok(values) => match values.into_iter().next() {
                    Some(RecordValue::File(None)) => self.finish_client(id, Outcome::NotFound),
                    Some(RecordValue::File(Some(record))) => match record.meta {
                        Some(meta) => self.fetch(id, record.version, meta),
                        None => self.finish_client(id, Outcome::Tombstone(record.version)),
                    },
                    other => {
                        let outcome = Outcome::Corrupt(format!("a file record read answered {other:?}"));
                        self.finish_client(id, outcome)
                    }
                },
                Err(failure) => self.finish_client(id, Outcome::Failed(failure.detail)),
            },
            (Stage::Fetch { parts, pending, .. }, AnyOutput::Fetch(result)) => match result {
                Ok(bytes) => {
                    parts[part] = Some(bytes);
                    *pending -= 1;
                    if *pending == 0 {
                        self.verify_content(id);
                    }
                }
                Err(failure) => {
                    let outcome = Outcome::Failed(format!("block {part} unavailable: {}", failure.detail));
                    self.finish_client(id, outcome)
                }
            },
            (_, _) => unreachable!("an operation's outcome for another stage"),
        }
    }

    /// Ends client operation `id` with `outcome`, now (an abandoned one never ends).
    fn finish_client(&mut self, id: u64, outcome: Outcome) {
        let now = self.now();
        let data = self.data_mut();
        let Some(client) = data.clients.remove(&id) else { return };
        let end = (outcome != Outcome::Unanswered).then_some(now);
        self.record_action(format_args!("client {id} ended: {outcome:?}"));
        if let Outcome::Corrupt(why) = &outcome {
            tracing::error!(id, path = client.path, why, "a client read wrong data");
        }
        self.data_mut().history.ops.push(OpRecord {
            id,
            kind: client.kind,
            node: client.node,
            path: client.path,
            start: Duration::from_micros(client.start_us),
            end,
            outcome,
            content_hash: client.content_hash,
            ring: client.ring,
        });
    }

    // ----- hand-off ----------------------------------------------------------------------------

    /// Starts node `index`'s hand-off to the owners `placement` added, superseding (dropping)
    /// the one to the previous ring, as the driver does.
    fn start_handoff(&mut self, index: usize, placement: Arc<Placement>) {
        let task = HandoffTask { placement, cursor: HandoffCursor::Files(None), op: None, pushed: 0, failed: 0 };
        if let Some(old) = self.data_run(index).handoff.replace(task)
            && let Some(op) = old.op
        {
            let data = self.data_mut();
            data.ops.remove(&op);
            data.outstanding.retain(|(id, _)| *id != op);
        }
        self.next_handoff_batch(index);
    }

    /// Scans node `index`'s store for the next batch its hand-off must push, and sends it.
    fn next_handoff_batch(&mut self, index: usize) {
        let store = self.data_node(index).store.clone();
        loop {
            let Some(task) = self.data_run(index).handoff.as_mut() else { return };
            let placement = task.placement.clone();
            let moved = |key: &[u8]| !placement.new_owners(key).is_empty();
            let scanned = match &mut task.cursor {
                HandoffCursor::Files(after) => {
                    store.scan_files(after.as_deref(), HANDOFF_RECORDS_PER_BATCH).map(|batch| {
                        let full = batch.len() == HANDOFF_RECORDS_PER_BATCH;
                        *after = batch.last().map(|(path, _)| path.clone());
                        let updates: Vec<RecordUpdate> = batch
                            .into_iter()
                            .filter(|(path, _)| moved(path.as_bytes()))
                            .map(|(path, record)| RecordUpdate::File(path, record))
                            .collect();
                        (updates, Vec::new(), full)
                    })
                }
                HandoffCursor::Dirs(after) => {
                    let cursor = after.as_ref().map(|(dir, name)| (dir.as_str(), name.as_str()));
                    store.scan_dir_entries(cursor, HANDOFF_RECORDS_PER_BATCH).map(|batch| {
                        let full = batch.len() == HANDOFF_RECORDS_PER_BATCH;
                        *after = batch.last().map(|(dir, name, _)| (dir.clone(), name.clone()));
                        let updates: Vec<RecordUpdate> = batch
                            .into_iter()
                            .filter(|(dir, _, _)| moved(dir.as_bytes()))
                            .map(|(dir, name, entry)| {
                                RecordUpdate::Dir(dir, DirRecord { children: [(name, entry)].into() })
                            })
                            .collect();
                        (updates, Vec::new(), full)
                    })
                }
                HandoffCursor::Blocks(after) => {
                    let mut blocks = Vec::new();
                    let mut more = true;
                    let mut result = Ok(());
                    while more && blocks.len() < HANDOFF_BLOCKS_PER_BATCH {
                        match store.scan_blocks(after.as_ref(), HANDOFF_RECORDS_PER_BATCH) {
                            Ok(hashes) => {
                                more = hashes.len() == HANDOFF_RECORDS_PER_BATCH;
                                for hash in hashes {
                                    *after = Some(hash);
                                    // A corrupt or vanished copy is not handed off; another owner has one.
                                    if moved(&hash.0)
                                        && let Ok(Some(bytes)) = store.get_block(&hash)
                                    {
                                        blocks.push((hash, bytes));
                                        if blocks.len() == HANDOFF_BLOCKS_PER_BATCH {
                                            more = true;
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(err) => {
                                result = Err(err);
                                break;
                            }
                        }
                    }
                    result.map(|()| (Vec::new(), blocks, more))
                }
                HandoffCursor::Done => {
                    let (pushed, failed, placement) = (task.pushed, task.failed, task.placement.clone());
                    let run = self.data_run(index);
                    run.handoff = None;
                    if failed == 0 {
                        run.tracker.handoff_finished();
                    } else {
                        // As the driver does: run it again (here at once; the network decides).
                        self.start_handoff(index, placement);
                    }
                    self.record_action(format_args!("hand-off {index} done: {pushed} pushed, {failed} failed"));
                    return;
                }
            };
            let (updates, blocks, more) = match scanned {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(node = index, %err, "hand-off stopped by a store error");
                    self.data_run(index).handoff = None;
                    return;
                }
            };
            if !more {
                let task = self.data_run(index).handoff.as_mut().expect("checked above");
                task.cursor = match task.cursor {
                    HandoffCursor::Files(_) => HandoffCursor::Dirs(None),
                    HandoffCursor::Dirs(_) => HandoffCursor::Blocks(None),
                    _ => HandoffCursor::Done,
                };
            }
            if updates.is_empty() && blocks.is_empty() {
                continue;
            }
            let handoff = Handoff::new(&placement, updates, blocks);
            let op = self.data().next_op;
            self.data_run(index).handoff.as_mut().expect("checked above").op = Some(op);
            self.start_op(index, Purpose::Handoff, AnyOp::Handoff(handoff));
            return;
        }
    }

    /// A hand-off batch of node `index` ended: on to the next.
    fn handoff_batch_done(&mut self, index: usize, op: u64, report: HandoffReport) {
        let Some(task) = self.nodes[index].data.as_mut().and_then(|data| data.run.as_mut()?.handoff.as_mut()) else {
            return;
        };
        if task.op.is_some_and(|current| current != op) {
            return; // a superseded hand-off's batch
        }
        task.op = None;
        task.pushed += report.pushed;
        task.failed += report.failed;
        self.data_mut().stats.handoff_pushes += report.pushed;
        self.next_handoff_batch(index);
    }

    // ----- workload --------------------------------------------------------------------------

    /// Starts `workload` now (replacing any running one).
    pub fn start_workload(&mut self, workload: Workload) {
        assert!(!workload.paths.is_empty(), "a workload needs paths");
        assert!(workload.size_max_bytes > 0, "a PUT writes at least a byte");
        assert!(workload.put_percent + workload.get_percent <= 100, "the shares exceed 100 %");
        let data = self.data_mut();
        data.workload = Some(workload);
        data.workload_generation += 1;
        let generation = data.workload_generation;
        self.record_action(format_args!("workload {generation} starts"));
        self.push(self.now_us, EventKind::Data(DataEvent::Workload { generation }));
    }

    /// Stops starting new client operations (those in flight carry on).
    pub fn stop_workload(&mut self) {
        let data = self.data_mut();
        data.workload = None;
        data.workload_generation += 1;
        self.record_action(format_args!("workload stops"));
    }

    fn workload_tick(&mut self, generation: u64) {
        let Some(workload) = self.data().workload.clone() else { return };
        let in_flight = self.data().clients.values().filter(|client| client.from_workload).count();
        let candidates: Vec<usize> = match &workload.coordinators {
            Some(nodes) => nodes.iter().copied().filter(|&node| self.is_ready(node)).collect(),
            None => (0..self.nodes.len()).filter(|&node| self.is_ready(node)).collect(),
        };
        let data = self.data_mut();
        let rng = &mut data.workload_rng;
        let wait = rng.random_range(0..=duration_us(workload.interval_mean) * 2);
        let kind = rng.random_range(0..100u32);
        let path = workload.paths[rng.random_range(0..workload.paths.len())].clone();
        let node = (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())]);
        self.push(self.now_us + wait.max(1), EventKind::Data(DataEvent::Workload { generation }));
        let Some(node) = node else { return };
        if in_flight >= workload.in_flight_max {
            return;
        }
        let id = if kind < workload.put_percent {
            let data = self.data_mut();
            // Unique content: the id the operation will get, then random bytes.
            let size = data.workload_rng.random_range(8..=workload.size_max_bytes.max(8));
            let mut content = vec![0; size];
            content[..8].copy_from_slice(&data.next_client.to_le_bytes());
            data.workload_rng.fill(&mut content[8..]);
            self.start_put(node, &path, content)
        } else if kind < workload.put_percent + workload.get_percent {
            self.start_get(node, &path)
        } else {
            self.start_delete(node, &path)
        };
        if let Some(client) = self.data_mut().clients.get_mut(&id) {
            client.from_workload = true;
        }
    }
}

/// The client's view of a failed write: in doubt or certainly without effect.
fn write_error(err: FileError) -> Outcome {
    match err {
        FileError::InDoubt(why) => Outcome::InDoubt(why),
        other => Outcome::Failed(other.to_string()),
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
    }
}

fn trace_reply(trace: &mut blake3::Hasher, reply: &Result<Reply, RpcError>) {
    match reply {
        Ok(Reply::Block(Some(bytes))) => {
            trace.update(b"block");
            trace.update(bytes);
        }
        other => {
            trace.update(format!("{other:?}").as_bytes());
        }
    }
}
