//! Named scenarios: each builds a cluster from a seed, injects its faults, checks the
//! cluster from outside and returns a summary, or the failed check with the replay command.
//! The scenario tests and the `shoal-sim` binary run the same functions.

mod data;
mod repair;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use shoal_membership::{
    ENVELOPE_BYTES, MemberRecord, MemberState, Membership, MembershipConfig, NodeIdentity, Output, PACKET_BYTES_MAX,
    Preset, RecordStatus,
};

use crate::check::CheckFailure;
use crate::config::{NetworkConfig, SimConfig};
use crate::measure;
use crate::sim::{NodeStatus, Sim, SimStats, TraceHash};

/// Longest a fresh cluster may take to converge (virtual time). A late joiner learns about
/// half the members from its seed's feed and the rest as they probe it, one probe period
/// each: about a minute for 100 nodes under `Lan`.
const JOIN_MAX: Duration = Duration::from_secs(300);
/// Longest the views may take to converge again after a heal or a restart: the others
/// announce to members they believe down every 65 s (`Lan`), and a restarted node relearns
/// the members its seed's feed left out as they probe it.
const RECONVERGE_MAX: Duration = Duration::from_secs(600);

/// A scenario the binary and the tests know by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Nodes join through one seed; every node sees every node alive.
    Join,
    /// One node crashes; every other node marks it down.
    Crash,
    /// The network splits in two halves, each marks the other down; after the heal the views
    /// converge again with no operator.
    Partition,
    /// 5 % of datagrams are lost for an hour; no node is ever wrongly marked down.
    Loss,
    /// Crashed nodes restart with the next generation and are alive again everywhere.
    Restart,
    /// A node leaves gracefully and is `left` everywhere.
    Leave,
    /// Garbage and other clusters' datagrams are dropped and counted.
    Garbage,
    /// A random mix of faults derived from the seed, then a healed phase that must converge.
    Swarm,
    /// Random PUT/GET/DELETE while one node crashes and restarts and another is partitioned
    /// away; nothing acknowledged is lost.
    DataFaults,
    /// Clocks up to ±60 s apart; a write that starts after another was acknowledged wins.
    ClockSkew,
    /// A join and an eviction during the workload; read-after-write holds throughout.
    RingChange,
    /// One node cut off; writes there are never acknowledged, the majority's succeed.
    Minority,
    /// A 2 | 3 split longer than `evict_after` (both sides evict the other), with clock skew
    /// and a crash on either side in some seeds; read-after-write holds and nothing
    /// acknowledged is lost.
    Split,
    /// Two members join and one is evicted during the workload; read-after-write holds and
    /// the old owners drop what the joiners took over.
    Joins,
    /// A node flaps within `evict_after`: no ring changes, and only what it missed moves.
    Flap,
    /// A node's data directory is wiped; it restarts empty and is refilled from its peers.
    Wipe,
}

impl Scenario {
    /// Every scenario, in the order the binary lists them.
    pub const ALL: [Scenario; 16] = [
        Scenario::Join,
        Scenario::Crash,
        Scenario::Partition,
        Scenario::Loss,
        Scenario::Restart,
        Scenario::Leave,
        Scenario::Garbage,
        Scenario::Swarm,
        Scenario::DataFaults,
        Scenario::ClockSkew,
        Scenario::RingChange,
        Scenario::Minority,
        Scenario::Split,
        Scenario::Joins,
        Scenario::Flap,
        Scenario::Wipe,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Join => "join",
            Scenario::Crash => "crash",
            Scenario::Partition => "partition",
            Scenario::Loss => "loss",
            Scenario::Restart => "restart",
            Scenario::Leave => "leave",
            Scenario::Garbage => "garbage",
            Scenario::Swarm => "swarm",
            Scenario::DataFaults => "data-faults",
            Scenario::ClockSkew => "clock-skew",
            Scenario::RingChange => "ring-change",
            Scenario::Minority => "minority",
            Scenario::Split => "split",
            Scenario::Joins => "joins",
            Scenario::Flap => "flap",
            Scenario::Wipe => "wipe",
        }
    }

    /// Cluster size when none is given.
    pub fn default_nodes(self) -> usize {
        match self {
            Scenario::Join | Scenario::Crash | Scenario::Partition | Scenario::Restart | Scenario::Leave => 100,
            Scenario::Loss => 32,
            Scenario::Garbage => 10,
            Scenario::Swarm => 16,
            Scenario::DataFaults
            | Scenario::ClockSkew
            | Scenario::Minority
            | Scenario::Split
            | Scenario::Flap
            | Scenario::Wipe => 5,
            // Five at first, two join during the run.
            Scenario::Joins => 7,
            // Five at first, the sixth joins during the run.
            Scenario::RingChange => 6,
        }
    }

    /// Runs the scenario.
    pub fn run(self, options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
        match self {
            Scenario::Join => join(options),
            Scenario::Crash => crash(options),
            Scenario::Partition => partition(options),
            Scenario::Loss => loss(options),
            Scenario::Restart => restart(options),
            Scenario::Leave => leave(options),
            Scenario::Garbage => garbage(options),
            Scenario::Swarm => swarm(options),
            Scenario::DataFaults => data::data_faults(options),
            Scenario::ClockSkew => data::clock_skew(options),
            Scenario::RingChange => data::ring_change(options),
            Scenario::Minority => data::minority(options),
            Scenario::Split => data::split(options),
            Scenario::Joins => repair::joins(options),
            Scenario::Flap => repair::flap(options),
            Scenario::Wipe => repair::wipe(options),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Scenario::ALL.into_iter().find(|scenario| scenario.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|scenario| scenario.name()).collect();
            format!("unknown scenario {name:?}; one of {}", names.join(", "))
        })
    }
}

/// What a scenario run is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioOptions {
    /// The seed.
    pub seed: u64,
    /// Cluster size; `None` for the scenario's default.
    pub nodes: Option<usize>,
    /// Length of the fault phase, for the scenarios that have one (`loss`, `swarm`, the
    /// workload of `data-faults`, `clock-skew` and `ring-change`, the partition of
    /// `minority`); `None` for the scenario's default.
    pub duration: Option<Duration>,
}

impl ScenarioOptions {
    /// Default size and duration with `seed`.
    pub fn seed(seed: u64) -> Self {
        Self { seed, nodes: None, duration: None }
    }

    /// With `nodes` nodes.
    pub fn nodes(self, nodes: usize) -> Self {
        Self { nodes: Some(nodes), ..self }
    }

    /// With a fault phase of `duration`.
    pub fn duration(self, duration: Duration) -> Self {
        Self { duration: Some(duration), ..self }
    }

    /// The settings of `scenario`'s cluster (healthy LAN, `Lan` preset), with the command
    /// that replays it.
    pub fn sim_config(&self, scenario: Scenario) -> SimConfig {
        let nodes = self.nodes.unwrap_or(scenario.default_nodes());
        let mut config = SimConfig::new(scenario.name(), self.seed, nodes);
        let mut replay = format!("cargo run -p shoal-sim -- {scenario} --seed {} --nodes {nodes}", self.seed);
        if let Some(duration) = self.duration {
            replay.push_str(&format!(" --duration-secs {}", duration.as_secs()));
        }
        config.replay = Some(replay);
        config
    }
}

/// What a successful run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Measurements, in the order they were taken: `(what, value)`.
    pub facts: Vec<(String, String)>,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Network counters.
    pub stats: SimStats,
    /// The trace hash.
    pub trace_hash: TraceHash,
}

impl Summary {
    fn new(scenario: Scenario, sim: &Sim, facts: Vec<(String, String)>) -> Self {
        Self {
            scenario,
            seed: sim.config().seed,
            nodes: sim.len(),
            facts,
            virtual_time: sim.now(),
            stats: sim.stats(),
            trace_hash: sim.trace_hash(),
        }
    }

    /// The value of fact `what`, if recorded.
    pub fn fact(&self, what: &str) -> Option<&str> {
        self.facts.iter().find(|(key, _)| key == what).map(|(_, value)| value.as_str())
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {} passed: SEED={} nodes={}", self.scenario, self.seed, self.nodes)?;
        for (what, value) in &self.facts {
            writeln!(f, "  {what}: {value}")?;
        }
        let s = &self.stats;
        writeln!(f, "  virtual time: {:.1} s, events: {}", self.virtual_time.as_secs_f64(), s.events)?;
        writeln!(
            f,
            "  datagrams: {} sent ({} bytes), {} delivered, {} lost, {} partitioned, {} to stopped nodes, {} duplicated",
            s.packets_sent,
            s.bytes_sent,
            s.packets_delivered,
            s.dropped_loss,
            s.dropped_partition,
            s.dropped_node_down,
            s.duplicated
        )?;
        write!(f, "  trace hash: {}", self.trace_hash)
    }
}

fn fact(what: &str, value: impl fmt::Display) -> (String, String) {
    (what.to_string(), value.to_string())
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// Starts every node 10 ms apart and waits until the views agree with the truth; returns the
/// virtual time from the first start.
pub fn start_and_converge(sim: &mut Sim) -> Result<Duration, CheckFailure> {
    let start = sim.now();
    sim.start_all(Duration::from_millis(10));
    sim.wait_for("the cluster to converge after the joins", JOIN_MAX, Sim::check_converged)?;
    Ok(sim.now() - start)
}

/// A random node other than the seeds, from the scenario's own RNG.
fn pick_non_seed(sim: &Sim, rng: &mut StdRng) -> usize {
    let candidates: Vec<usize> =
        sim.running_nodes().into_iter().filter(|index| !sim.config().seeds.contains(index)).collect();
    assert!(!candidates.is_empty(), "the scenario needs a node that is not a seed");
    candidates[rng.random_range(0..candidates.len())]
}

/// Nodes join through one seed; every node sees all of them alive.
pub fn join(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Join));
    let converged = start_and_converge(&mut sim)?;
    let n = sim.len();
    for observer in 0..n {
        let alive = sim.alive_count(observer);
        sim.check(alive == n, || format!("node {observer} sees {alive} members alive, expected {n}"))?;
    }
    let facts = vec![fact("converged after", secs(converged))];
    Ok(Summary::new(Scenario::Join, &sim, facts))
}

/// One node crashes; every other node marks it down within three times SWIM's bound.
pub fn crash(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Crash));
    let converged = start_and_converge(&mut sim)?;
    let victim = pick_non_seed(&sim, &mut sim.scenario_rng(1));
    let detection = measure::detect_crash(&mut sim, victim)?;
    // The crash must not take anyone else down with it.
    sim.check_converged()?;
    let facts = vec![
        fact("converged after", secs(converged)),
        fact("crashed node", victim),
        fact("first node marked it down after", secs(detection.first)),
        fact("last node marked it down after", secs(detection.last)),
        fact("SWIM bound", secs(detection.bound)),
    ];
    Ok(Summary::new(Scenario::Crash, &sim, facts))
}

/// Every node of `a` sees every node of `b` down and every other node of `a` alive, and the
/// other way round.
pub fn check_split(sim: &mut Sim, a: &[usize], b: &[usize]) -> Result<(), CheckFailure> {
    for (side, other) in [(a, b), (b, a)] {
        for &observer in side {
            let view = sim.view(observer);
            for member in view.iter().skip(1) {
                let Some(index) = sim.index_of(member.identity.node_id) else { continue };
                let expected = if other.contains(&index) { MemberState::Down } else { MemberState::Alive };
                sim.check(member.state == expected, || {
                    format!(
                        "node {observer} sees node {index} as {}, expected {} during the partition",
                        member.state.as_str(),
                        expected.as_str()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// The network splits into two halves; each half marks the other down; after the heal the
/// views converge with no operator.
pub fn partition(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Partition));
    let converged = start_and_converge(&mut sim)?;
    let n = sim.len();
    let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|&index| index < n / 2);
    sim.partition(&[&a, &b]);
    let bound = sim.membership_config().detection_bound(n as u32);
    // Fifty members going down at once spread by gossip, a few per packet: far slower than
    // one crash.
    let split = sim.wait_for("each half to mark the other down", bound * 30, |sim| check_split(sim, &a, &b))?;
    sim.heal();
    let healed = sim.wait_for("the views to converge after the heal", RECONVERGE_MAX, Sim::check_converged)?;
    let facts = vec![
        fact("converged after", secs(converged)),
        fact("halves", format!("{} and {} nodes", a.len(), b.len())),
        fact("each half saw the other down after", secs(split)),
        fact("converged after the heal in", secs(healed)),
        fact("identity renewals", sim.renewals()),
    ];
    Ok(Summary::new(Scenario::Partition, &sim, facts))
}

/// 5 % of datagrams are lost for an hour (by default); no node is wrongly marked down.
pub fn loss(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let duration = options.duration.unwrap_or(Duration::from_secs(3600));
    let nodes = options.nodes.unwrap_or(Scenario::Loss.default_nodes());
    let report = measure::false_downs(options.sim_config(Scenario::Loss), 0.05, duration)?;
    let facts = vec![
        fact("loss", "5 %"),
        fact("duration", secs(duration)),
        fact("false downs", report.false_downs.len()),
        // Not a false down (no view ever shows the node down) but worth watching: foca 2.0.0
        // tells a member "you are down" when a suspicion of it times out even if it refuted
        // it, and the member then renews its identity.
        fact("identity renewals", report.renewals),
        fact("datagrams lost", report.stats.dropped_loss),
    ];
    let summary = Summary {
        scenario: Scenario::Loss,
        seed: options.seed,
        nodes,
        facts,
        virtual_time: report.virtual_time,
        stats: report.stats,
        trace_hash: report.trace_hash,
    };
    if let Some(first) = report.false_downs.first() {
        return Err(report.failure(format!(
            "{} false downs, the first: node {} marked node {} down at {} ms",
            report.false_downs.len(),
            first.observer,
            first.subject,
            first.since_ms
        )));
    }
    Ok(summary)
}

/// Crashed nodes restart with the next generation and are alive again everywhere: one after
/// the cluster marked it down, one before anyone noticed, and the seed node itself.
pub fn restart(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Restart));
    let converged = start_and_converge(&mut sim)?;
    let n = sim.len();
    let bound = sim.membership_config().detection_bound(n as u32);
    let probe_period = sim.membership_config().foca_config().probe_period;
    let mut rng = sim.scenario_rng(1);
    let mut facts = vec![fact("converged after", secs(converged))];

    // Restarted after the cluster marked it down.
    let late = pick_non_seed(&sim, &mut rng);
    sim.crash(late);
    sim.wait_for("the crashed node to be marked down", bound * 3, |sim| sim.check_all_see(late, MemberState::Down))?;
    sim.restart(late);
    let took = sim.wait_for("the restarted node to be alive everywhere", Duration::from_secs(120), |sim| {
        sim.check_all_see(late, MemberState::Alive)
    })?;
    facts.push(fact(&format!("node {late}, restarted after being marked down, alive everywhere in"), secs(took)));

    // Restarted before anyone noticed the crash.
    let quick = pick_non_seed(&sim, &mut rng);
    sim.crash(quick);
    sim.run_for(probe_period / 2);
    sim.restart(quick);
    let took = sim.wait_for("the quickly restarted node to be alive everywhere", Duration::from_secs(120), |sim| {
        sim.check_all_see(quick, MemberState::Alive)
    })?;
    facts.push(fact(&format!("node {quick}, restarted within half a probe period, alive everywhere in"), secs(took)));

    // The seed itself has no seed to ask: the others' announcements to members they believe
    // down must bring it back.
    let seed = sim.config().seeds[0];
    sim.crash(seed);
    sim.wait_for("the crashed seed to be marked down", bound * 3, |sim| sim.check_all_see(seed, MemberState::Down))?;
    sim.restart(seed);
    let took = sim.wait_for("the restarted seed to be alive everywhere", Duration::from_secs(300), |sim| {
        sim.check_all_see(seed, MemberState::Alive)
    })?;
    facts.push(fact(&format!("seed node {seed}, restarted after being marked down, alive everywhere in"), secs(took)));

    for index in [late, quick, seed] {
        let generation = sim.identity(index).map(|identity| identity.generation);
        sim.check(generation >= Some(2), || format!("node {index} runs generation {generation:?} after a restart"))?;
    }
    let took = sim.wait_for("the views to converge", RECONVERGE_MAX, Sim::check_converged)?;
    facts.push(fact("every view complete again after", secs(took)));
    Ok(Summary::new(Scenario::Restart, &sim, facts))
}

/// A node leaves gracefully; every node shows it `left` (not `down`), and still does a while
/// after it stopped.
pub fn leave(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Leave));
    let converged = start_and_converge(&mut sim)?;
    let n = sim.len();
    let bound = sim.membership_config().detection_bound(n as u32);
    let leaver = pick_non_seed(&sim, &mut sim.scenario_rng(1));
    sim.leave(leaver);
    let took = sim
        .wait_for("the leaver to be left everywhere", bound * 3, |sim| sim.check_all_see(leaver, MemberState::Left))?;
    // Long after it stopped, probes and suspicion must not turn `left` into `down`.
    sim.run_for(bound * 3);
    sim.check(sim.status(leaver) == NodeStatus::Left, || format!("node {leaver} did not stop after leaving"))?;
    sim.check_all_see(leaver, MemberState::Left)?;
    sim.check_converged()?;
    let facts = vec![
        fact("converged after", secs(converged)),
        fact("leaving node", leaver),
        fact("left everywhere in", secs(took)),
    ];
    Ok(Summary::new(Scenario::Leave, &sim, facts))
}

/// Datagrams that are not a Shoal packet, are too large, or come from another cluster are
/// dropped and counted, and change nothing.
pub fn garbage(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut sim = Sim::new(options.sim_config(Scenario::Garbage));
    start_and_converge(&mut sim)?;
    let mut rng = sim.scenario_rng(2);
    let n = sim.len();
    let outsider = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 77, i)), 7946);

    // A packet of this cluster, to borrow its envelope: what a stranger who knows the
    // cluster's name could send.
    let ours = first_packet(&sim.config().cluster_name, outsider(1), vec![sim.addr(0)]);
    let prefix = &ours[..ENVELOPE_BYTES - 1];
    let with_kind = |kind: u8, payload: &[u8]| {
        let mut packet = prefix.to_vec();
        packet.push(kind);
        packet.extend_from_slice(payload);
        packet
    };
    // Always malformed: too short, wrong magic, unknown kind, undecodable handshake replies
    // (0xff never starts a bincode varint).
    let malformed: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"SHL1".to_vec(),
        b"not a shoal packet at all".to_vec(),
        with_kind(9, b"payload"),
        with_kind(2, &[0xff; 40]),
        with_kind(4, &[0xff; 40]),
    ];
    let oversized = vec![vec![0u8; PACKET_BYTES_MAX + 1], with_kind(0, &vec![7u8; PACKET_BYTES_MAX])];
    let foreign = foreign_packets(outsider(2), outsider(3));
    let mut fuzz = Vec::new();
    for _ in 0..20 {
        let len = rng.random_range(0..PACKET_BYTES_MAX);
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        fuzz.push(bytes);
        // A well-formed envelope around random foca data.
        let len = rng.random_range(0..200);
        let mut payload = vec![0u8; len];
        rng.fill(&mut payload[..]);
        fuzz.push(with_kind(0, &payload));
    }

    let before: Vec<_> = (0..n).map(|index| sim.node_stats(index)).collect();
    for to in 0..n {
        for (i, packet) in malformed.iter().chain(&oversized).chain(&foreign).chain(&fuzz).enumerate() {
            sim.inject(outsider(10 + (i % 200) as u8), to, packet.clone());
        }
    }
    sim.run_for(Duration::from_secs(1));
    for (to, was) in before.into_iter().enumerate() {
        let now = sim.node_stats(to);
        let malformed_count = now.dropped_malformed - was.dropped_malformed;
        let oversized_count = now.dropped_oversized - was.dropped_oversized;
        let foreign_count = now.dropped_foreign_cluster - was.dropped_foreign_cluster;
        sim.check(oversized_count == oversized.len() as u64, || {
            format!("node {to} counted {oversized_count} oversized datagrams, {} injected", oversized.len())
        })?;
        sim.check(foreign_count == foreign.len() as u64, || {
            format!("node {to} counted {foreign_count} foreign datagrams, {} injected", foreign.len())
        })?;
        // Random data may, rarely, pass for a foca packet meant for someone else (ignored,
        // not counted), so the fuzz only bounds the count from above.
        let (low, high) = (malformed.len() as u64, (malformed.len() + fuzz.len()) as u64);
        sim.check((low..=high).contains(&malformed_count), || {
            format!("node {to} counted {malformed_count} malformed datagrams, expected {low} to {high}")
        })?;
    }
    // Nothing injected may have changed anyone's view.
    sim.run_for(Duration::from_secs(10));
    sim.check_converged()?;
    let stats = sim.total_node_stats();
    let facts = vec![
        fact("injected per node", malformed.len() + oversized.len() + foreign.len() + fuzz.len()),
        fact("dropped malformed (all nodes)", stats.dropped_malformed),
        fact("dropped oversized (all nodes)", stats.dropped_oversized),
        fact("dropped foreign cluster (all nodes)", stats.dropped_foreign_cluster),
    ];
    Ok(Summary::new(Scenario::Garbage, &sim, facts))
}

/// The first datagram a fresh member of `cluster` at `addr` sends (a hello to its seed).
fn first_packet(cluster: &str, addr: SocketAddr, seeds: Vec<SocketAddr>) -> Vec<u8> {
    let mut member = standalone(cluster, addr, seeds, 0);
    std::iter::from_fn(|| member.poll_output())
        .find_map(|output| match output {
            Output::Send { packet, .. } => Some(packet),
            Output::Schedule { .. } => None,
        })
        .expect("a member with a seed says hello")
}

/// Datagrams of another cluster: its hello, and the SWIM announce that follows the handshake.
fn foreign_packets(a: SocketAddr, b: SocketAddr) -> Vec<Vec<u8>> {
    let cluster = "intruders";
    let mut seed = standalone(cluster, a, Vec::new(), 1);
    let mut joiner = standalone(cluster, b, vec![a], 2);
    let sends = |member: &mut Membership| -> Vec<Vec<u8>> {
        std::iter::from_fn(|| member.poll_output())
            .filter_map(|output| match output {
                Output::Send { packet, .. } => Some(packet),
                Output::Schedule { .. } => None,
            })
            .collect()
    };
    sends(&mut seed);
    let hello = sends(&mut joiner).pop().expect("the joiner says hello");
    seed.handle_packet(0, b, &hello);
    let reply = sends(&mut seed).pop().expect("the seed answers the hello");
    joiner.handle_packet(0, a, &reply);
    let announce = sends(&mut joiner);
    assert!(!announce.is_empty(), "the joiner announces itself after the handshake");
    let mut packets = vec![hello, reply];
    packets.extend(announce);
    packets
}

fn standalone(cluster: &str, addr: SocketAddr, seeds: Vec<SocketAddr>, seed: u64) -> Membership {
    let node_id = 0xdead_0000 + u128::from(seed);
    let identity = NodeIdentity { node_id, addr, generation: 1 };
    let record = MemberRecord {
        node_id,
        generation: 1,
        version: 0,
        zone: "elsewhere".into(),
        capacity_bytes: 1,
        http_addr: addr,
        rpc_addr: addr,
        status: RecordStatus::Active,
        disk_used_bytes: 0,
    };
    let config = MembershipConfig::new(cluster, Preset::Lan, NonZeroU32::MIN);
    Membership::new(identity, record, config, seeds, StdRng::seed_from_u64(seed))
}

/// One fault the swarm injects.
#[derive(Clone, Debug, PartialEq)]
enum Fault {
    Crash,
    Restart,
    Leave,
    Split,
    OneWay,
    Heal,
    Network(NetworkConfig),
}

/// A random mix of faults derived from the seed (loss, duplication, latency, crashes,
/// restarts, leaves, symmetric and one-way partitions), then a healed phase in which the
/// views must converge.
pub fn swarm(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut config = options.sim_config(Scenario::Swarm);
    let fault_phase = options.duration.unwrap_or(Duration::from_secs(120));
    // Every parameter comes from the seed and is printed before the run.
    let mut plan_rng = StdRng::seed_from_u64(options.seed ^ 0x5EED_5EED_5EED_5EED);
    let random_network = |rng: &mut StdRng| NetworkConfig {
        latency_min: Duration::from_micros(rng.random_range(100..2_000)),
        latency_max: Duration::from_millis(rng.random_range(2..200)),
        loss: rng.random_range(0.0..0.10),
        duplicate: rng.random_range(0.0..0.05),
    };
    config.network = random_network(&mut plan_rng);
    let mut plan = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        at += Duration::from_millis(plan_rng.random_range(2_000..15_000));
        if at >= fault_phase {
            break;
        }
        let fault = match plan_rng.random_range(0..100) {
            0..25 => Fault::Crash,
            25..50 => Fault::Restart,
            50..55 => Fault::Leave,
            55..70 => Fault::Split,
            70..80 => Fault::OneWay,
            80..92 => Fault::Heal,
            _ => Fault::Network(random_network(&mut plan_rng)),
        };
        plan.push((at, fault));
    }
    let mut sim = Sim::new(config);
    eprintln!("swarm plan (times after the cluster converged): {plan:?}");
    start_and_converge(&mut sim)?;
    let n = sim.len();
    let mut rng = sim.scenario_rng(3);
    let start = sim.now();
    for (at, fault) in &plan {
        sim.run_for((start + *at).saturating_sub(sim.now()));
        let up = sim.up_nodes();
        let running = sim.running_nodes();
        let down: Vec<usize> = (0..n).filter(|&index| !sim.status(index).is_up()).collect();
        match fault {
            // Keep a majority up, so the cluster has someone to converge with.
            Fault::Crash if up.len() > n / 2 + 1 => sim.crash(up[rng.random_range(0..up.len())]),
            Fault::Restart if !down.is_empty() => sim.restart(down[rng.random_range(0..down.len())]),
            Fault::Leave if running.len() > n / 2 + 1 => sim.leave(running[rng.random_range(0..running.len())]),
            Fault::Split => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                let cut = rng.random_range(1..n);
                sim.partition(&[&order[..cut], &order[cut..]]);
            }
            Fault::OneWay => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                let from = rng.random_range(1..n / 2 + 1);
                let to = rng.random_range(from + 1..=n);
                sim.partition_one_way(&order[..from], &order[from..to]);
            }
            Fault::Heal => sim.heal(),
            Fault::Network(network) => sim.set_network(network.clone()),
            _ => {}
        }
    }
    sim.run_for((start + fault_phase).saturating_sub(sim.now()));

    // The healed phase: the network is repaired, crashed nodes stay down.
    sim.heal();
    sim.set_network(NetworkConfig::default());
    let healed = sim.wait_for("the views to converge after the faults", RECONVERGE_MAX, Sim::check_converged)?;
    let stopped = (0..n).filter(|&index| !sim.status(index).is_up()).count();
    let facts = vec![
        fact("faults", plan.len()),
        fact("nodes stopped at the end", stopped),
        fact("identity renewals", sim.renewals()),
        fact("converged after the heal in", secs(healed)),
    ];
    Ok(Summary::new(Scenario::Swarm, &sim, facts))
}
