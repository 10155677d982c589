//! What a simulation run is made of: the seed, the cluster, the network's faults.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use shoal_core::node::CoreConfig;
use shoal_membership::{MembershipConfig, Preset};

/// Settings of one simulation run. Everything that shapes the run is here (or is derived from
/// `seed`), so printing this struct is enough to replay the run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Label of the run: the scenario or test name, printed with the seed and used in the
    /// replay command.
    pub name: String,
    /// The one source of randomness: node ids, every node's RNG and every network decision
    /// derive from it.
    pub seed: u64,
    /// Number of nodes (indices `0..nodes`); none runs until started.
    pub nodes: usize,
    /// Membership timing preset; the simulator's clock is virtual, so `Lan` costs no more
    /// wall-clock time than `Local` per protocol round.
    pub preset: Preset,
    /// The cluster every node belongs to.
    pub cluster_name: String,
    /// Indices of the nodes every node asks to join (a node never asks itself).
    pub seeds: Vec<usize>,
    /// The network's behaviour at the start of the run; change it with
    /// [`Sim::set_network`](crate::Sim::set_network).
    pub network: NetworkConfig,
    /// How long a node that called `leave` keeps running so the news gets out before it stops
    /// (the tokio driver lingers two probe periods).
    pub leave_linger: Duration,
    /// How often [`Sim::run_until`](crate::Sim::run_until) evaluates its condition. The
    /// condition usually reads every node's view, so checking after every event would cost
    /// more than the simulation itself.
    pub poll_interval: Duration,
    /// How often the false-down checker samples every node's view; `None` turns it off.
    pub false_down_check: Option<Duration>,
    /// The command that replays this run; `None` prints a `cargo test` command with
    /// `SHOAL_SIM_SEED` set instead.
    pub replay: Option<String>,
    /// The data plane: `Some` gives every node a store, a replication coordinator and a
    /// placement, and carries their RPCs over the simulated network; `None` runs membership
    /// only (the membership scenarios, which stay as fast and their traces as they were).
    pub replication: Option<ReplicationConfig>,
}

/// How the simulated nodes replicate (docs/ARCHITECTURE.md §5, §6): the node core's own settings,
/// and what only the simulator has (store size, clock skew).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicationConfig {
    /// Every setting of each node's core, as the `shoal` binary takes them: quorums, block
    /// size, timeouts, eviction, transitions, hand-off batching and retry.
    pub core: CoreConfig,
    /// Room for blocks in each node's store.
    pub store_capacity_bytes: u64,
    /// Each node's wall clock is off by a random amount in `[-clock_skew_max, +clock_skew_max]`
    /// (from the seed); [`Sim::set_clock_offset`](crate::Sim::set_clock_offset) sets one
    /// exactly.
    pub clock_skew_max: Duration,
}

impl Default for ReplicationConfig {
    /// The production core settings but for 4 KiB blocks (so a file of a few KiB spans several
    /// blocks) and a 2 s RPC timeout; 1 GiB stores, no clock skew.
    fn default() -> Self {
        Self {
            core: CoreConfig { block_size_bytes: 4096, rpc_timeout: Duration::from_secs(2), ..CoreConfig::default() },
            store_capacity_bytes: 1 << 30,
            clock_skew_max: Duration::ZERO,
        }
    }
}

impl ReplicationConfig {
    /// Panics on settings that cannot be simulated.
    pub fn validate(&self) {
        if let Err(why) = self.core.validate() {
            panic!("invalid core settings: {why}");
        }
        assert!(self.clock_skew_max < Duration::from_secs(1 << 30), "clock_skew_max is absurd");
    }
}

impl fmt::Display for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.core;
        write!(
            f,
            "N={} W={} R={} block={}B evict_after={}s rpc_timeout={}ms skew_max={}s",
            core.quorum.n,
            core.quorum.w,
            core.quorum.r,
            core.block_size_bytes,
            core.evict_after.as_secs_f64(),
            core.rpc_timeout.as_millis(),
            self.clock_skew_max.as_secs_f64()
        )
    }
}

/// The simulated network. Reordering is not a setting: it falls out of random latency.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Shortest one-way delay of a datagram.
    pub latency_min: Duration,
    /// Longest one-way delay of a datagram (uniform between the two).
    pub latency_max: Duration,
    /// Probability that a datagram is lost, in `[0, 1]`.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (each copy with its own delay).
    pub duplicate: f64,
}

impl Default for NetworkConfig {
    /// A healthy LAN: 1 to 10 ms, nothing lost or duplicated.
    fn default() -> Self {
        Self {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

impl NetworkConfig {
    /// Panics on settings that cannot be simulated: the simulator is a test harness, a bad
    /// setting is a bug in the test.
    pub fn validate(&self) {
        assert!(self.latency_min <= self.latency_max, "latency_min must not exceed latency_max");
        assert!((0.0..=1.0).contains(&self.loss), "loss must be a probability");
        assert!((0.0..=1.0).contains(&self.duplicate), "duplicate must be a probability");
    }
}

impl fmt::Display for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency={}..{}ms loss={} duplicate={}",
            self.latency_min.as_secs_f64() * 1e3,
            self.latency_max.as_secs_f64() * 1e3,
            self.loss,
            self.duplicate
        )
    }
}

impl SimConfig {
    /// A run named `name` of `nodes` nodes on a healthy LAN, joining through node 0.
    pub fn new(name: impl Into<String>, seed: u64, nodes: usize) -> Self {
        let preset = Preset::Lan;
        let mut config = Self {
            name: name.into(),
            seed,
            nodes,
            preset,
            cluster_name: "sim".to_string(),
            seeds: vec![0],
            network: NetworkConfig::default(),
            leave_linger: Duration::ZERO,
            poll_interval: Duration::from_millis(250),
            false_down_check: None,
            replay: None,
            replication: None,
        };
        config.leave_linger = config.membership_config().foca_config().probe_period * 2;
        config
    }

    /// The same run with another preset (the leave linger follows the preset).
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self.leave_linger = self.membership_config().foca_config().probe_period * 2;
        self
    }

    /// The membership configuration every node runs with.
    pub fn membership_config(&self) -> MembershipConfig {
        let expected = u32::try_from(self.nodes).ok().and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MIN);
        MembershipConfig::new(self.cluster_name.clone(), self.preset, expected)
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        match &self.replay {
            Some(command) => command.clone(),
            None => format!("SHOAL_SIM_SEED={} cargo test -p shoal-sim -- {}", self.seed, self.name),
        }
    }

    /// Panics on settings that cannot be simulated.
    pub fn validate(&self) {
        assert!(self.nodes > 0, "a simulation needs at least one node");
        assert!(self.seeds.iter().all(|&seed| seed < self.nodes), "seed indices must name nodes");
        assert!(!self.poll_interval.is_zero(), "poll_interval must be positive");
        assert!(self.false_down_check.is_none_or(|every| !every.is_zero()), "false_down_check must be positive");
        self.network.validate();
        if let Some(replication) = &self.replication {
            replication.validate();
        }
        if let Err(err) = self.membership_config().validate() {
            panic!("invalid membership configuration: {err}");
        }
    }
}

impl fmt::Display for SimConfig {
    /// One line with every parameter, `SEED=` first, as printed at the start of a run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SEED={} run={} nodes={} preset={:?} seeds={:?} {} leave_linger={}ms",
            self.seed,
            self.name,
            self.nodes,
            self.preset,
            self.seeds,
            self.network,
            self.leave_linger.as_millis()
        )?;
        match &self.replication {
            Some(replication) => write!(f, " replication: {replication}"),
            None => Ok(()),
        }
    }
}

/// The seed for a test: `SHOAL_SIM_SEED` if set (to replay a failure), `default` otherwise.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var("SHOAL_SIM_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SHOAL_SIM_SEED={text:?} is not a u64")),
        Err(_) => default,
    }
}
