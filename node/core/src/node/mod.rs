//! One node, whole, as a sans-IO state machine: [`NodeCore`]. The tokio driver and the
//! simulator each drive one per node and hold no protocol rule of their own
//! (docs/ARCHITECTURE.md §2).

mod antientropy;
mod budget;
mod clients;
mod config;
mod durability;
mod ops;
mod refill;
mod store_work;
mod view;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_storage::{BlockHash, NodeId, Store};

use crate::replication::{
    ClusterMemory, Coordinator, Outgoing, PartitionOwners, Placement, Reply, Request, RpcError, SyncReport, SyncRpc,
};

pub use clients::{Answer, Client, Deleted, Listing, Made, Put, PutProgress, Read, RecordRead, Removed};
pub use config::CoreConfig;
pub use durability::Durability;
pub use store_work::{JobId, StoreDone, StoreJob, StoreWork};

use antientropy::SyncState;
use clients::ClientState;
use config::micros;
use ops::{AnyOp, OpId, Purpose, Running};
use refill::Refill;
use view::ViewState;

/// Names a client operation (an upload, a read, a file operation) of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(u64);

/// Names a request this node sends until its answer (or its failure) comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(u64);

/// Names a peer's request this node serves until the reply leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRequestId(u64);

/// A request for another node: send it to `addr` and hand the answer (or why none came) to
/// [`NodeCore::handle_reply`] under `id`.
#[derive(Debug)]
pub struct Transmit {
    /// Names the request.
    pub id: MessageId,
    /// The node it is for.
    pub to: NodeId,
    /// Where that node's RPC listens.
    pub addr: SocketAddr,
    /// What to ask.
    pub request: Request,
}

/// The reply to a peer's request, to send back on the connection it came on.
#[derive(Debug)]
pub struct PeerReply {
    /// The request it answers.
    pub id: PeerRequestId,
    /// The answer.
    pub reply: Reply,
}

/// Something that happened, for metrics, logs and tests. Nothing needs to act on an event
/// except [`Event::KnownMembers`], which the driver persists.
#[derive(Clone, Debug)]
pub enum Event {
    /// The node joined its cluster and coordinates from now on.
    Ready,
    /// The placement changed: a ring change, partitions settling, or more members known.
    PlacementChanged(Arc<Placement>),
    /// The ring itself changed (members, zones or capacities), before the
    /// [`Event::PlacementChanged`] that carries it: ownership moves.
    RingChanged {
        /// Members in the new ring.
        members: usize,
    },
    /// What the placement remembers (members, settling partitions) changed: persist it, and
    /// give it back to [`NodeCore::new`] after a restart.
    KnownMembers(ClusterMemory),
    /// Evidence showed `partitions` settled: their previous owners are no longer asked.
    Settled {
        /// Partitions that settled now.
        partitions: usize,
        /// Owner sets found in other nodes' views and honoured from now on.
        found: usize,
        /// Partitions still settling.
        settling: usize,
    },
    /// An operation sent this many read-repair writes.
    RepairsSent(u64),
    /// A request got no answer within [`CoreConfig::rpc_timeout`].
    Timeout(NodeId),
    /// A request was for a node whose address this node does not know.
    Unreachable(NodeId),
    /// A client write was answered "in doubt".
    WriteInDoubt,
    /// No owner served a verified copy of a block a client read.
    BlockUnavailable(BlockHash),
    /// An anti-entropy exchange ended (docs/ARCHITECTURE.md §7).
    SyncEnded(SyncReport),
    /// A hand-over of copies this node no longer owns ended: confirmed on every owner (and
    /// `dropped` partition copies removed here), or not (`failure`; the copies stay).
    HandedOver {
        /// Partitions handed over.
        partitions: usize,
        /// Partition copies (per kind) dropped here afterwards.
        dropped: usize,
        /// Why it was not confirmed, if it was not.
        failure: Option<String>,
    },
    /// A node started on a lost store has refilled every partition it keeps from its
    /// co-owners and answers reads again (the driver may forget that its store was lost).
    Refilled,
}

/// A request in flight and when it times out.
struct Pending {
    op: OpId,
    token: u64,
    to: NodeId,
    deadline_us: u64,
}

/// Why a store job was queued.
#[derive(Clone, Copy, Debug)]
enum JobPurpose {
    /// A request of this node's own operation to its own store.
    Local(MessageId),
    /// A peer's request.
    Peer(PeerRequestId),
    /// Which partitions the store holds (anti-entropy's over-replication check).
    Held,
    /// Dropping copies handed over.
    Drop,
}

/// The core's timers, ordered by deadline in [`NodeCore::timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Request `id` has had its time.
    Rpc(MessageId),
    /// Re-evaluate the placement against the last view.
    PlacementRefresh,
    /// Start the next anti-entropy exchange.
    SyncTick,
    /// Look for evidence that settling partitions settled.
    SettleTick,
    /// The repair budget has refilled enough for the exchange waiting on it.
    RepairBudget,
}

/// What the caller drains after every input.
#[derive(Default)]
struct Outputs {
    transmits: VecDeque<Transmit>,
    jobs: VecDeque<StoreJob>,
    peer_replies: VecDeque<PeerReply>,
    clients: VecDeque<ClientId>,
    clients_queued: BTreeSet<ClientId>,
    events: VecDeque<Event>,
}

/// One Shoal node as a state machine that does no IO: it coordinates clients' file
/// operations across the owners, serves its peers' requests from its store, follows the
/// membership (readiness, placement, transitions, eviction) and repairs what it shares with
/// its co-owners (anti-entropy), which is also how data reaches new owners after a ring change.
///
/// **Inputs** (each with `now_us`, this node's wall clock in µs since the Unix epoch; every
/// deadline the core reports is on the same clock):
/// - a client request: `start_put` (then `push_put` / `end_put`), `start_read`, `start_stat`,
///   `start_delete`, `start_mkdir`, `start_list`, `start_rmdir`, `start_read_record`; and
///   [`abandon`](NodeCore::abandon) when the client went away;
/// - a peer's request: [`handle_peer_request`](NodeCore::handle_peer_request);
/// - the answer to a request this node sent: [`handle_reply`](NodeCore::handle_reply);
/// - a store job's result: [`handle_store_done`](NodeCore::handle_store_done);
/// - a membership change: [`handle_membership`](NodeCore::handle_membership);
/// - time passing: [`handle_timeout`](NodeCore::handle_timeout).
///
/// **Outputs**, drained by the caller after every input, in any order:
/// [`poll_transmit`](NodeCore::poll_transmit) (requests to send to peers),
/// [`poll_store_job`](NodeCore::poll_store_job) (work for the local store, to run on a thread
/// of the caller's choosing), [`poll_peer_reply`](NodeCore::poll_peer_reply),
/// [`poll_client`](NodeCore::poll_client) (clients with progress to take through their
/// typed [`Client`] handle), [`poll_event`](NodeCore::poll_event), and
/// [`poll_timeout`](NodeCore::poll_timeout) (when to call `handle_timeout` next).
///
/// **Call order.** Create it with [`NodeCore::new`]; then, from one thread at a time, feed
/// inputs as they come and drain the outputs after each. Every [`Transmit`] must be answered
/// exactly once through `handle_reply` (a reply, or the transport's error); answers after the
/// core's own timeout are ignored. Every [`StoreJob`] must be run and its result handed back.
/// Dropping the core abandons everything in flight (a crash).
pub struct NodeCore<S> {
    this: NodeId,
    config: CoreConfig,
    store: Arc<S>,
    coordinator: Arc<Coordinator>,
    view: ViewState,
    ops: BTreeMap<OpId, Running>,
    next_op: u64,
    messages: BTreeMap<MessageId, Pending>,
    next_message: u64,
    jobs: BTreeMap<JobId, JobPurpose>,
    next_job: u64,
    next_peer_request: u64,
    timers: BTreeSet<(u64, Timer)>,
    /// Answers to deliver before the input returns (requests no one could be asked).
    immediate: VecDeque<(MessageId, Result<Reply, RpcError>)>,
    clients: BTreeMap<ClientId, ClientState>,
    next_client: u64,
    sync: SyncState,
    out: Outputs,
}

impl<S: Store> NodeCore<S> {
    /// Node `this` over `store`, placing data by the members `remembered` from its previous
    /// run (see [`Event::KnownMembers`]). A node started with seeds (`has_seeds`) coordinates
    /// nothing until it has seen another member alive.
    ///
    /// `lost_store`: this node ran before, and its store has since been lost (until an
    /// [`Event::Refilled`] of a later run, every start must say so). It refuses reads until
    /// anti-entropy has refilled it (`refill.rs`) and, unless it remembers being alone, waits
    /// to see another member as if it had seeds: a founding node with an empty store and no
    /// memory would otherwise form a cluster of one.
    pub fn new(
        now_us: u64,
        this: NodeId,
        config: CoreConfig,
        store: Arc<S>,
        remembered: ClusterMemory,
        has_seeds: bool,
        lost_store: bool,
    ) -> NodeCore<S> {
        assert!(config.validate().is_ok(), "invalid core config: {:?}", config.validate());
        let view = ViewState::new(now_us, this, &config, remembered, has_seeds, lost_store);
        let mut core = NodeCore {
            this,
            coordinator: Coordinator::new(this, config.block_size_bytes),
            config,
            store,
            view,
            ops: BTreeMap::new(),
            next_op: 0,
            messages: BTreeMap::new(),
            next_message: 0,
            jobs: BTreeMap::new(),
            next_job: 0,
            next_peer_request: 0,
            timers: BTreeSet::new(),
            immediate: VecDeque::new(),
            clients: BTreeMap::new(),
            next_client: 0,
            sync: SyncState::new(lost_store.then(|| Refill::new(now_us))),
            out: Outputs::default(),
        };
        // A restarted node's remembered transitions are dated from its start.
        let placement = core.view.placement();
        core.placement_moved(now_us, &placement);
        core.arm(now_us + micros(core.config.placement_refresh), Timer::PlacementRefresh);
        core.arm(now_us + micros(core.config.sync_interval), Timer::SyncTick);
        core.arm(now_us + micros(core.config.settle_interval), Timer::SettleTick);
        core
    }

    /// This node's id.
    pub fn this(&self) -> NodeId {
        self.this
    }

    /// The settings it runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Its store, for the caller to run [`StoreJob`]s on.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The placement in force (before the node is ready too, for status).
    pub fn placement(&self) -> Arc<Placement> {
        self.view.placement()
    }

    /// Whether it coordinates: it has no seeds, or has joined through them.
    pub fn is_ready(&self) -> bool {
        self.view.is_ready()
    }

    /// Why this node does not coordinate client requests now, if it does not (not joined,
    /// no majority in sight, or still learning the others' owner sets).
    pub fn not_coordinating(&self) -> Option<String> {
        self.view.for_client().err().map(|err| err.to_string())
    }

    /// Operations in flight (client stages, read repair, anti-entropy).
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Read-repair writes sent by operations still in flight (finished ones were reported
    /// through [`Event::RepairsSent`]).
    pub fn repairs_in_flight(&self) -> u64 {
        self.ops.values().map(|running| running.op.repairs_sent()).sum()
    }

    // ----- inputs ------------------------------------------------------------------------------

    /// A peer asks this node's replica something; the reply comes out of
    /// [`poll_peer_reply`](NodeCore::poll_peer_reply) under the returned id.
    pub fn handle_peer_request(&mut self, now_us: u64, request: Request) -> PeerRequestId {
        let id = PeerRequestId(self.next_peer_request);
        self.next_peer_request += 1;
        match request {
            // A node that has not joined never coordinated: its placement is no one's. A
            // malformed set (from a confused or hostile peer) is refused, never a panic.
            Request::Sync(SyncRpc::OwnerSets { partitions, .. }) if !self.view.is_ready() || !partitions.is_valid() => {
                let why = if partitions.is_valid() {
                    "this node has not joined its cluster yet"
                } else {
                    "a partition set of the wrong size"
                };
                let refusal = crate::replication::Refusal::Other(why.into());
                self.out.peer_replies.push_back(PeerReply { id, reply: Reply::Refused(refusal) });
            }
            // What this node's placement honours is the node's to say, not its store's.
            Request::Sync(SyncRpc::OwnerSets { partitions, exchanges }) => {
                let placement = self.view.placement();
                let mut done = if exchanges { self.exchanges_of(now_us, partitions.iter()) } else { BTreeMap::new() };
                let owners = partitions
                    .iter()
                    .map(|partition| PartitionOwners {
                        sets: placement.partition_sets(partition),
                        exchanges: done.remove(&partition).unwrap_or_default(),
                    })
                    .collect();
                let coordinating = self.view.for_client().is_ok();
                self.out.peer_replies.push_back(PeerReply { id, reply: Reply::OwnerSets { coordinating, owners } });
            }
            request => match self.refuses(&request) {
                Some(refusal) => self.out.peer_replies.push_back(PeerReply { id, reply: Reply::Refused(refusal) }),
                None => self.queue_job(StoreWork::Serve(request), JobPurpose::Peer(id)),
            },
        }
        id
    }

    /// The answer to request `id` (or the transport's reason there is none).
    pub fn handle_reply(&mut self, now_us: u64, id: MessageId, reply: Result<Reply, RpcError>) {
        self.deliver(now_us, id, reply);
        self.settle(now_us);
    }

    /// The result of store job `id`.
    pub fn handle_store_done(&mut self, now_us: u64, id: JobId, done: StoreDone) {
        let Some(purpose) = self.jobs.remove(&id) else { return };
        match (purpose, done) {
            (JobPurpose::Local(message), StoreDone::Served(reply)) => self.deliver(now_us, message, Ok(reply)),
            (JobPurpose::Peer(id), StoreDone::Served(reply)) => {
                self.out.peer_replies.push_back(PeerReply { id, reply })
            }
            (JobPurpose::Held, StoreDone::Held(held)) => self.held_partitions(held),
            (JobPurpose::Drop, StoreDone::Dropped(dropped)) => self.copies_dropped(dropped),
            (purpose, done) => panic!("store job {purpose:?} came back as {done:?}"),
        }
        self.settle(now_us);
    }

    /// Fires every timer due at `now_us`.
    pub fn handle_timeout(&mut self, now_us: u64) {
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now_us {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Rpc(id) => {
                    if let Some(pending) = self.messages.get(&id) {
                        self.out.events.push_back(Event::Timeout(pending.to));
                    }
                    self.deliver(now_us, id, Err(RpcError::Timeout));
                }
                Timer::PlacementRefresh => {
                    self.refresh_view(now_us);
                    self.arm(now_us + micros(self.config.placement_refresh), Timer::PlacementRefresh);
                }
                Timer::SyncTick => self.sync_tick(now_us),
                Timer::SettleTick => self.settle_tick(now_us),
                Timer::RepairBudget => self.sync.budget.wake_us = None,
            }
            self.settle(now_us);
        }
    }

    // ----- outputs -----------------------------------------------------------------------------

    /// The next request to send to a peer.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next piece of work for the local store.
    pub fn poll_store_job(&mut self) -> Option<StoreJob> {
        self.out.jobs.pop_front()
    }

    /// The next reply to a peer's request.
    pub fn poll_peer_reply(&mut self) -> Option<PeerReply> {
        self.out.peer_replies.pop_front()
    }

    /// The next client with progress to take (an answer, a piece of a read, room for more of
    /// an upload).
    pub fn poll_client(&mut self) -> Option<ClientId> {
        let id = self.out.clients.pop_front()?;
        self.out.clients_queued.remove(&id);
        Some(id)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`handle_timeout`](NodeCore::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    // ----- plumbing ----------------------------------------------------------------------------

    fn arm(&mut self, deadline_us: u64, timer: Timer) {
        self.timers.insert((deadline_us, timer));
    }

    fn queue_job(&mut self, work: StoreWork, purpose: JobPurpose) {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(id, purpose);
        self.out.jobs.push_back(StoreJob { id, work });
    }

    fn wake_client(&mut self, id: ClientId) {
        if self.out.clients_queued.insert(id) {
            self.out.clients.push_back(id);
        }
    }

    /// Starts `op` for `purpose` and sends what it asks.
    fn start_op(&mut self, now_us: u64, purpose: Purpose, op: AnyOp) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, Running { purpose, op });
        self.drive(now_us, id);
        id
    }

    /// Sends what operation `id` queued, hands its outcome on, and forgets it once finished.
    fn drive(&mut self, now_us: u64, id: OpId) {
        let Some(running) = self.ops.get_mut(&id) else { return };
        let mut requests = Vec::new();
        while let Some(outgoing) = running.op.poll_request() {
            requests.push(outgoing);
        }
        let outcome = running.op.poll_outcome();
        let purpose = running.purpose;
        if running.op.is_finished() {
            let repairs = running.op.repairs_sent();
            self.ops.remove(&id);
            if repairs > 0 {
                self.out.events.push_back(Event::RepairsSent(repairs));
            }
        }
        for outgoing in requests {
            self.send(now_us, id, outgoing);
        }
        if let Some(outcome) = outcome {
            match purpose {
                Purpose::Client { client, part } => self.client_progress(now_us, client, part, outcome),
                Purpose::Settle => self.settle_checked(now_us, outcome),
                Purpose::Learn => self.sets_learned(now_us, outcome),
                Purpose::Sync => self.sync_ended(outcome),
                Purpose::Drain { partitions } => self.drain_ended(partitions, outcome),
            }
        }
    }

    /// Sends one request of operation `op`: to this node's store, to a peer, or nowhere (no
    /// address known: it fails at once).
    fn send(&mut self, now_us: u64, op: OpId, outgoing: Outgoing) {
        let Outgoing { token, to, request } = outgoing;
        let id = MessageId(self.next_message);
        self.next_message += 1;
        let deadline_us = now_us.saturating_add(micros(self.config.rpc_timeout));
        self.messages.insert(id, Pending { op, token, to, deadline_us });
        self.arm(deadline_us, Timer::Rpc(id));
        if to == self.this {
            match self.refuses(&request) {
                Some(refusal) => self.immediate.push_back((id, Ok(Reply::Refused(refusal)))),
                None => self.queue_job(StoreWork::Serve(request), JobPurpose::Local(id)),
            }
        } else if let Some(addr) = self.view.rpc_addr(to) {
            self.out.transmits.push_back(Transmit { id, to, addr, request });
        } else {
            self.out.events.push_back(Event::Unreachable(to));
            self.immediate.push_back((id, Err(RpcError::Unreachable(format!("no address known for {to}")))));
        }
    }

    /// Feeds the first answer of request `id` to its operation; later ones are ignored.
    fn deliver(&mut self, now_us: u64, id: MessageId, reply: Result<Reply, RpcError>) {
        let Some(pending) = self.messages.remove(&id) else { return };
        self.timers.remove(&(pending.deadline_us, Timer::Rpc(id)));
        let Some(running) = self.ops.get_mut(&pending.op) else { return };
        running.op.handle_reply(now_us, pending.token, reply);
        self.drive(now_us, pending.op);
    }

    /// Delivers the answers decided without asking anyone, until there are none.
    /// Then lets the exchange in flight copy what the repair budget allows.
    fn settle(&mut self, now_us: u64) {
        loop {
            while let Some((id, reply)) = self.immediate.pop_front() {
                self.deliver(now_us, id, reply);
            }
            if !self.feed_repair(now_us) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
