//! Measurements for the benchmarks: crash detection time, false downs under loss, gossip
//! traffic per member, and simulation speed. Each builds its cluster from a [`SimConfig`], so
//! a measurement is replayable from its seed like any run.

use std::time::Duration;

use shoal_membership::MemberState;

use crate::check::CheckFailure;
use crate::config::SimConfig;
use crate::scenario::start_and_converge;
use crate::sim::{FalseDown, Sim, SimStats, TraceHash};

/// How long the cluster took to mark a crashed node down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// From the crash until the first running node marked it down.
    pub first: Duration,
    /// From the crash until the last running node marked it down.
    pub last: Duration,
    /// SWIM's analytic bound for this cluster ([`shoal_membership::MembershipConfig::detection_bound`]).
    pub bound: Duration,
}

/// Crashes `victim` now and waits (up to three times SWIM's bound) until every running node
/// marks it down; the times come from the views' `state_since_ms`, so they are exact rather
/// than rounded to the poll interval.
pub fn detect_crash(sim: &mut Sim, victim: usize) -> Result<Detection, CheckFailure> {
    let bound = sim.membership_config().detection_bound(sim.len() as u32);
    let crashed_ms = sim.now_ms();
    sim.crash(victim);
    sim.wait_for(&format!("every node to mark node {victim} down"), bound * 3, |sim| {
        sim.check_all_see(victim, MemberState::Down)
    })?;
    let victim_id = sim.node_id(victim);
    let mut since = Vec::new();
    for observer in sim.running_nodes() {
        if let Some(member) = sim.view(observer).into_iter().find(|member| member.identity.node_id == victim_id) {
            since.push(member.state_since_ms.saturating_sub(crashed_ms));
        }
    }
    let first = since.iter().copied().min().unwrap_or(0);
    let last = since.iter().copied().max().unwrap_or(0);
    Ok(Detection { first: Duration::from_millis(first), last: Duration::from_millis(last), bound })
}

/// Builds the cluster `config` describes, waits for it to converge, crashes its last node and
/// measures the detection.
pub fn crash_detection(config: SimConfig) -> Result<Detection, CheckFailure> {
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    let victim = sim.len() - 1;
    detect_crash(&mut sim, victim)
}

/// What [`false_downs`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct FalseDownReport {
    /// Every false down the checker saw.
    pub false_downs: Vec<FalseDown>,
    /// Nodes that learned they had been declared down and renewed their identity.
    pub renewals: u64,
    /// Network counters.
    pub stats: SimStats,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// The trace hash.
    pub trace_hash: TraceHash,
    /// The seed.
    pub seed: u64,
    /// The command that replays the run.
    pub replay: String,
}

impl FalseDownReport {
    /// A failed check about this run.
    pub fn failure(&self, message: impl Into<String>) -> CheckFailure {
        CheckFailure {
            message: message.into(),
            seed: self.seed,
            at_ms: self.virtual_time.as_millis() as u64,
            replay: self.replay.clone(),
        }
    }
}

/// Builds the cluster, waits for it to converge, loses `loss` of all datagrams for
/// `duration`, and reports every false down. The false-down checker samples every second
/// unless `config` says otherwise. Fails if the cluster does not converge within a minute
/// once the loss stops.
pub fn false_downs(mut config: SimConfig, loss: f64, duration: Duration) -> Result<FalseDownReport, CheckFailure> {
    config.false_down_check = config.false_down_check.or(Some(Duration::from_secs(1)));
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    sim.set_loss(loss);
    sim.run_for(duration);
    let report = FalseDownReport {
        false_downs: sim.false_downs(),
        renewals: sim.renewals(),
        stats: sim.stats(),
        virtual_time: sim.now(),
        trace_hash: sim.trace_hash(),
        seed: sim.config().seed,
        replay: sim.replay_command(),
    };
    sim.set_loss(0.0);
    sim.wait_for("the views to converge once the loss stopped", Duration::from_secs(60), Sim::check_converged)?;
    Ok(report)
}

/// Gossip traffic in steady state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// Datagrams each member sends per second, on average.
    pub packets_per_member_per_sec: f64,
    /// Bytes each member sends per second, on average.
    pub bytes_per_member_per_sec: f64,
}

/// Builds the cluster, waits for it to converge, then measures what the members send during
/// `duration`.
pub fn steady_traffic(config: SimConfig, duration: Duration) -> Result<Traffic, CheckFailure> {
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    let before = sim.stats();
    sim.run_for(duration);
    let after = sim.stats();
    let member_seconds = sim.len() as f64 * duration.as_secs_f64();
    Ok(Traffic {
        packets_per_member_per_sec: (after.packets_sent - before.packets_sent) as f64 / member_seconds,
        bytes_per_member_per_sec: (after.bytes_sent - before.bytes_sent) as f64 / member_seconds,
    })
}

/// How fast the simulator runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Speed {
    /// Virtual time simulated.
    pub simulated: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
    /// Events handled.
    pub events: u64,
}

impl Speed {
    /// Simulated seconds per wall-clock second.
    pub fn ratio(&self) -> f64 {
        self.simulated.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Builds the cluster, lets it converge and runs it for `duration` more, timing the whole
/// run with `wall_clock` (time since any fixed point). The simulator never reads the wall
/// clock itself; the caller (a binary, a benchmark) passes one in.
pub fn speed(
    config: SimConfig,
    duration: Duration,
    mut wall_clock: impl FnMut() -> Duration,
) -> Result<Speed, CheckFailure> {
    let started = wall_clock();
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    sim.run_for(duration);
    let wall = wall_clock().saturating_sub(started);
    Ok(Speed { simulated: sim.now(), wall, events: sim.stats().events })
}
