//! The event loop: a virtual clock, a queue of events, the simulated network and the nodes.

mod clients;
mod data;
mod false_downs;
mod network;
mod nodes;

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_membership::{
    MemberRecord, MemberState, MemberView, Membership, MembershipConfig, NodeIdentity, Output, RecordStatus, Stats,
    TimerEvent,
};

use crate::config::{NetworkConfig, SimConfig};
use data::{DataEvent, DataNode, DataPlane};

pub use data::{DataStats, Workload, wall_clock_us};

/// Port every simulated node gossips on (addresses are labels: nothing touches a socket).
const GOSSIP_PORT: u16 = 7946;
/// Port written into the records as the HTTP address.
const HTTP_PORT: u16 = 8080;
/// How many false downs the checker keeps the details of.
const FALSE_DOWN_LOG_MAX: usize = 32;

/// What the simulator knows a node is doing: the truth the checkers compare views with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Never started.
    Idle,
    /// Running.
    Running,
    /// Called `leave`; still running until the linger ends.
    Leaving,
    /// Left and stopped.
    Left,
    /// Crashed: stopped without a word, its pending timers dropped.
    Crashed,
}

impl NodeStatus {
    /// Whether the node's core is running (and receives packets and timers).
    pub fn is_up(self) -> bool {
        matches!(self, NodeStatus::Running | NodeStatus::Leaving)
    }
}

/// Network and event counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events handled (packets, timers, stops), stale timers excluded.
    pub events: u64,
    /// Datagrams the nodes handed to the network.
    pub packets_sent: u64,
    /// Bytes the nodes handed to the network.
    pub bytes_sent: u64,
    /// Datagrams handed to a node (duplicates and injected packets included).
    pub packets_delivered: u64,
    /// Datagrams lost at random.
    pub dropped_loss: u64,
    /// Datagrams stopped by a partition (when sent or when they would have arrived).
    pub dropped_partition: u64,
    /// Datagrams that arrived at a node that was not running.
    pub dropped_node_down: u64,
    /// Datagrams to an address no simulated node has.
    pub dropped_unknown_address: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Datagrams injected from outside the cluster.
    pub injected: u64,
    /// Timers delivered.
    pub timers_fired: u64,
}

/// A false `down`: a node's view said `subject` was down while the subject was running and no
/// fault (crash, restart, partition) had touched it for the grace period before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FalseDown {
    /// The node whose view was wrong.
    pub observer: usize,
    /// The node it wrongly marked down.
    pub subject: usize,
    /// When the observer marked it down (virtual ms).
    pub since_ms: u64,
}

/// One scheduled event.
struct Event {
    at_us: u64,
    seq: u64,
    kind: EventKind,
}

enum EventKind {
    /// A datagram arrives at node `to`.
    Packet { from: SocketAddr, from_node: Option<usize>, to: usize, bytes: Vec<u8> },
    /// A timer of node `node`'s run `epoch` comes due.
    Timer { node: usize, epoch: u64, timer: TimerEvent },
    /// The linger after `leave` ends for node `node`'s run `epoch`.
    Stop { node: usize, epoch: u64 },
    /// Replication traffic, node-core timeouts and client operations (the data plane).
    Data(DataEvent),
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed, so the max-heap pops the earliest event, and among events due at the same
    /// time the one scheduled first (timers must come in the order they were requested).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

struct Node {
    node_id: u128,
    addr: SocketAddr,
    membership: Option<Membership>,
    status: NodeStatus,
    /// Bumped whenever the node stops, so its pending timers and stop events become stale.
    epoch: u64,
    /// Generation of the current (or last) run, as the node persists it.
    generation: u64,
    started_at_us: u64,
    /// Whether a partition in force involves the node.
    partitioned: bool,
    /// When the last partition involving the node ended.
    disturbed_until_us: u64,
    /// Times the cluster declared a previous run down and it renewed its identity.
    past_renewals: u64,
    /// Counters of previous runs.
    past_stats: Stats,
    /// The gossip addresses of the members its last run knew: what a real node keeps in
    /// `members.json` and greets, besides its seeds, when it starts again.
    remembered: Vec<SocketAddr>,
    /// Whether the current (or last) run announced that it leaves.
    announced_leave: bool,
    packets_sent: u64,
    bytes_sent: u64,
    /// Store, coordinator and placement, with [`SimConfig::replication`].
    data: Option<DataNode>,
}

/// A cluster of membership cores in one process, on a virtual clock and a simulated network,
/// all decided by one seed.
///
/// Nothing happens between calls: [`run_for`](Sim::run_for) and
/// [`run_until`](Sim::run_until) advance the clock from event to event; the fault methods
/// (`crash`, `partition`, `set_network`...) take effect at the current virtual time.
pub struct Sim {
    config: SimConfig,
    membership_config: MembershipConfig,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Event>,
    /// Every network decision (loss, duplication, delay) draws from this one stream.
    net_rng: StdRng,
    network: NetworkConfig,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<u128, usize>,
    /// `blocked[from * n + to]`: datagrams from `from` to `to` are dropped.
    blocked: Vec<bool>,
    trace: blake3::Hasher,
    stats: SimStats,
    next_false_down_check_us: u64,
    false_downs: BTreeSet<FalseDown>,
    tap: Option<Tap>,
    /// Requests in flight, client operations and their history, with
    /// [`SimConfig::replication`].
    data: Option<DataPlane>,
}

/// Sees every datagram handed to a node: virtual time, sender, receiving node, bytes.
pub type Tap = Box<dyn FnMut(Duration, SocketAddr, usize, &[u8])>;

impl Sim {
    /// A cluster of `config.nodes` stopped nodes. Prints `SEED=` and every parameter to stderr
    /// first (the test harness shows it when a test fails).
    pub fn new(config: SimConfig) -> Self {
        config.validate();
        eprintln!("{config}");
        let membership_config = config.membership_config();
        let nodes: Vec<Node> = (0..config.nodes)
            .map(|index| Node {
                node_id: derive_u128(config.seed, b"node id", index as u64),
                addr: node_addr(index),
                membership: None,
                status: NodeStatus::Idle,
                epoch: 0,
                generation: 0,
                started_at_us: 0,
                partitioned: false,
                disturbed_until_us: 0,
                past_renewals: 0,
                past_stats: Stats::default(),
                remembered: Vec::new(),
                announced_leave: false,
                packets_sent: 0,
                bytes_sent: 0,
                data: config.replication.as_ref().map(|replication| DataNode::new(&config, replication, index)),
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(index, node)| (node.addr, index)).collect();
        let by_id: HashMap<u128, usize> = nodes.iter().enumerate().map(|(index, node)| (node.node_id, index)).collect();
        assert_eq!(by_id.len(), nodes.len(), "node ids derived from the seed collide");
        let net_rng = StdRng::from_seed(derive_seed(config.seed, b"network", 0, 0));
        let mut trace = blake3::Hasher::new();
        trace.update(config.to_string().as_bytes());
        let first_check = config.false_down_check.map_or(u64::MAX, duration_us);
        Self {
            membership_config,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            net_rng,
            network: config.network.clone(),
            blocked: vec![false; nodes.len() * nodes.len()],
            nodes,
            by_addr,
            by_id,
            trace,
            stats: SimStats::default(),
            next_false_down_check_us: first_check,
            false_downs: BTreeSet::new(),
            tap: None,
            data: config.replication.as_ref().map(|replication| DataPlane::new(&config, replication)),
            config,
        }
    }

    /// The run's settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The membership settings every node runs with.
    pub fn membership_config(&self) -> &MembershipConfig {
        &self.membership_config
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`SimConfig::validate`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual time since the start of the run.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    /// Virtual time in milliseconds, as the nodes see it.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        self.config.replay_command()
    }

    /// Network and event counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// An RNG for the scenario's own choices (which node to crash...), derived from the seed
    /// and `stream` but independent of the network's, so a scenario's choices do not shift
    /// every later network decision.
    pub fn scenario_rng(&self, stream: u64) -> StdRng {
        StdRng::from_seed(derive_seed(self.config.seed, b"scenario", stream, 0))
    }

    /// A hash of everything that happened: every delivered datagram (time, sender, receiver,
    /// bytes), every timer delivered and every fault injected. The same seed and the same
    /// calls give the same hash.
    pub fn trace_hash(&self) -> TraceHash {
        TraceHash(*self.trace.finalize().as_bytes())
    }

    // ----- the loop --------------------------------------------------------------------------

    /// Runs the cluster for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now_us.saturating_add(duration_us(duration));
        self.run_to(until);
    }

    /// Runs until `condition` holds (checked now, then every [`SimConfig::poll_interval`]) or
    /// `max` of virtual time has passed; says whether it holds.
    pub fn run_until(&mut self, mut condition: impl FnMut(&mut Sim) -> bool, max: Duration) -> bool {
        let deadline = self.now_us.saturating_add(duration_us(max));
        let poll = duration_us(self.config.poll_interval);
        loop {
            if condition(self) {
                return true;
            }
            if self.now_us >= deadline {
                return false;
            }
            self.run_to(self.now_us.saturating_add(poll).min(deadline));
        }
    }

    fn run_to(&mut self, until_us: u64) {
        while let Some(event) = self.queue.peek() {
            if event.at_us > until_us {
                break;
            }
            let at_us = event.at_us;
            while self.next_false_down_check_us <= at_us {
                self.now_us = self.now_us.max(self.next_false_down_check_us);
                self.check_false_downs();
                let every = self.config.false_down_check.map_or(u64::MAX, duration_us);
                self.next_false_down_check_us = self.next_false_down_check_us.saturating_add(every);
            }
            let event = self.queue.pop().expect("peeked");
            self.now_us = event.at_us;
            self.dispatch(event.kind);
        }
        self.now_us = self.now_us.max(until_us);
    }

    fn dispatch(&mut self, kind: EventKind) {
        let now_ms = self.now_ms();
        match kind {
            EventKind::Packet { from, from_node, to, bytes } => {
                if let Some(from_node) = from_node
                    && !self.can_reach(from_node, to)
                {
                    self.stats.dropped_partition += 1;
                    return;
                }
                let Some(membership) = self.nodes[to].membership.as_mut() else {
                    self.stats.dropped_node_down += 1;
                    return;
                };
                let _span = tracing::debug_span!("node", node = to, now_ms).entered();
                self.stats.events += 1;
                self.stats.packets_delivered += 1;
                self.trace.update(b"P");
                self.trace.update(&self.now_us.to_le_bytes());
                match from_node {
                    Some(index) => self.trace.update(&(index as u64).to_le_bytes()),
                    None => self.trace.update(from.to_string().as_bytes()),
                };
                self.trace.update(&(to as u64).to_le_bytes());
                self.trace.update(&(bytes.len() as u64).to_le_bytes());
                self.trace.update(&bytes);
                if let Some(tap) = self.tap.as_mut() {
                    tap(Duration::from_micros(self.now_us), from, to, &bytes);
                }
                membership.handle_packet(now_ms, from, &bytes);
                self.drain(to);
                self.feed_view(to);
            }
            EventKind::Timer { node, epoch, timer } => {
                if self.nodes[node].epoch != epoch {
                    return; // a timer of a run that crashed or stopped
                }
                let Some(membership) = self.nodes[node].membership.as_mut() else {
                    return;
                };
                let _span = tracing::debug_span!("node", node, now_ms).entered();
                self.stats.events += 1;
                self.stats.timers_fired += 1;
                self.trace.update(b"T");
                self.trace.update(&self.now_us.to_le_bytes());
                self.trace.update(&(node as u64).to_le_bytes());
                // Timers carry identities and tokens: hash their full debug form.
                let _ = write!(HashWriter(&mut self.trace), "{timer:?}");
                membership.handle_timer(now_ms, timer);
                self.drain(node);
                self.feed_view(node);
            }
            EventKind::Stop { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].status == NodeStatus::Leaving {
                    self.stats.events += 1;
                    self.stop(node, NodeStatus::Left);
                    self.record_action(format_args!("stopped {node} after leaving"));
                }
            }
            EventKind::Data(event) => self.dispatch_data(event),
        }
    }

    /// Carries out everything node `index`'s core queued.
    fn drain(&mut self, index: usize) {
        let epoch = self.nodes[index].epoch;
        while let Some(output) = self.nodes[index].membership.as_mut().and_then(Membership::poll_output) {
            match output {
                Output::Send { to, packet } => self.send(index, to, packet),
                Output::Schedule { after, timer } => {
                    let at = self.now_us.saturating_add(duration_us(after));
                    self.push(at, EventKind::Timer { node: index, epoch, timer });
                }
            }
        }
    }

    fn push(&mut self, at_us: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Event { at_us, seq: self.seq, kind });
    }

    fn record_action(&mut self, action: fmt::Arguments<'_>) {
        self.trace.update(b"A");
        self.trace.update(&self.now_us.to_le_bytes());
        let _ = HashWriter(&mut self.trace).write_fmt(action);
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes.get(index).unwrap_or_else(|| panic!("node {index} does not exist ({} nodes)", self.nodes.len()))
    }
}

/// A run's trace hash (BLAKE3), printed in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceHash(pub [u8; 32]);

impl fmt::Display for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceHash({self})")
    }
}

/// Feeds formatted text into the trace without allocating.
struct HashWriter<'a>(&'a mut blake3::Hasher);

impl fmt::Write for HashWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// Node `index`'s gossip address: `10.0.x.y:7946` (a label; nothing is sent on a network).
pub fn node_addr(index: usize) -> SocketAddr {
    let high = u8::try_from(index / 250).expect("at most 64,000 simulated nodes");
    let low = u8::try_from(index % 250 + 1).expect("below 251");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, high, low)), GOSSIP_PORT)
}

fn derive_seed(seed: u64, purpose: &[u8], a: u64, b: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(purpose);
    hasher.update(&seed.to_le_bytes());
    hasher.update(&a.to_le_bytes());
    hasher.update(&b.to_le_bytes());
    *hasher.finalize().as_bytes()
}

fn derive_u128(seed: u64, purpose: &[u8], a: u64) -> u128 {
    let bytes = derive_seed(seed, purpose, a, 0);
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(id)
}

fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_in_time_order_then_in_the_order_they_were_scheduled() {
        let mut queue = BinaryHeap::new();
        let stop = |node| EventKind::Stop { node, epoch: 0 };
        for (seq, (at_us, node)) in [(5, 0), (1, 1), (5, 2), (1, 3), (3, 4)].into_iter().enumerate() {
            queue.push(Event { at_us, seq: seq as u64, kind: stop(node) });
        }
        let order: Vec<usize> = std::iter::from_fn(|| queue.pop())
            .map(|event| match event.kind {
                EventKind::Stop { node, .. } => node,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![1, 3, 4, 0, 2]);
    }

    #[test]
    fn node_addresses_are_distinct() {
        let addrs: BTreeSet<SocketAddr> = (0..1000).map(node_addr).collect();
        assert_eq!(addrs.len(), 1000);
    }
}
