//! Scenarios of the data plane: clients PUT, GET and DELETE files through the replication
//! core while the simulator injects faults; the history of what they were told is checked
//! from outside (docs/ARCHITECTURE.md §5, §6, §10).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::{RECONVERGE_MAX, Scenario, ScenarioOptions, Summary, fact, secs, start_and_converge};
use crate::check::CheckFailure;
use crate::config::{ReplicationConfig, SimConfig};
use crate::history::ClientKind;
use crate::sim::{Sim, Workload};

/// The settings of a data scenario: `scenario`'s cluster with a data plane.
pub(super) fn data_config(options: &ScenarioOptions, scenario: Scenario, replication: ReplicationConfig) -> SimConfig {
    let mut config = options.sim_config(scenario);
    config.replication = Some(replication);
    config
}

/// How long the replicas may take to converge once the cluster is quiet: every pair of
/// co-owners exchanges within a few `sync_interval`s, and each node hands over the copies it
/// no longer owns one owner set every other tick.
const REPLICAS_CONVERGE_MAX: Duration = Duration::from_secs(300);

/// Starts every node and waits until the views converged and every placement settled (the
/// rings a forming cluster passes through confirmed by evidence), before any workload: the
/// faults these scenarios inject then meet a settled cluster. Returns how long it took.
pub(super) fn start_and_settle(sim: &mut Sim) -> Result<Duration, CheckFailure> {
    let converged = start_and_converge(sim)?;
    Ok(converged + sim.wait_for_settled(Duration::from_secs(60))?)
}

/// The end of every data scenario: no new client operations, every fault lifted (crashed
/// nodes restarted unless `keep_down`), the views converged, the placements settled
/// (every partition's transition confirmed by anti-entropy); after a quiet period every partition's running owners must hold the
/// same entries (anti-entropy, checked before any read could repair them); then the history
/// checks and the final read of every path through a random running node. Returns the facts
/// to report.
pub(super) fn heal_and_check(
    sim: &mut Sim,
    rng: &mut StdRng,
    keep_down: &[usize],
) -> Result<Vec<(String, String)>, CheckFailure> {
    sim.stop_workload();
    sim.heal();
    for index in 0..sim.len() {
        if !sim.status(index).is_up() && !keep_down.contains(&index) && sim.generation(index) > 0 {
            sim.restart(index);
        }
    }
    sim.wait_for_clients(Duration::from_secs(60))?;
    let converged = sim.wait_for("the views to converge after the heal", RECONVERGE_MAX, Sim::check_converged)?;
    let settled = sim.wait_for_settled(REPLICAS_CONVERGE_MAX)?;
    let (replicas, repaired) = sim.wait_for_replicas(REPLICAS_CONVERGE_MAX)?;
    sim.check_history()?;
    let running = sim.running_nodes();
    let reader = running[rng.random_range(0..running.len())];
    let paths = sim.check_no_acknowledged_write_lost(reader)?;
    let history = sim.history();
    let workload = |op: &crate::history::OpRecord| op.kind != ClientKind::ReadRecord;
    let stats = sim.data_stats();
    Ok(vec![
        fact("converged after the heal in", secs(converged)),
        fact("placements settled after that in", secs(settled)),
        fact(
            "replicas after the quiet period",
            format!(
                "{} entries, equal on the running owners of {} partitions and nowhere else, {} after the heal",
                replicas.entries,
                replicas.partitions,
                secs(repaired)
            ),
        ),
        fact("client operations", history.ops.iter().filter(|op| workload(op)).count()),
        fact("PUT", history.tally(|op| op.kind == ClientKind::Put)),
        fact("GET", history.tally(|op| op.kind == ClientKind::Get)),
        fact("DELETE", history.tally(|op| op.kind == ClientKind::Delete)),
        fact("final reads", format!("{paths} paths through node {reader}, nothing acknowledged lost")),
        fact(
            "requests",
            format!(
                "{} sent, {} served, {} timed out, {} lost, {} partitioned, {} to stopped nodes, {} read repairs",
                stats.requests_sent,
                stats.requests_served,
                stats.timeouts,
                stats.dropped_loss,
                stats.dropped_partition,
                stats.dropped_node_down,
                stats.read_repairs
            ),
        ),
        fact("placement changes (all nodes)", stats.placement_changes),
        fact("ring changes (all nodes)", stats.ring_changes),
        fact(
            "partitions settled on evidence (all nodes)",
            format!("{}; {} owner sets found in other views", stats.partitions_settled, stats.owner_sets_found),
        ),
        fact(
            "anti-entropy (all nodes)",
            format!(
                "{} exchanges ({} stopped early), {} records and {} blocks copied; {} hand-overs ({} not confirmed), \
                 {} partition copies dropped; {} lost stores refilled",
                stats.sync_exchanges,
                stats.sync_failed,
                stats.sync_records,
                stats.sync_blocks,
                stats.handovers,
                stats.handovers_failed,
                stats.copies_dropped,
                stats.refills
            ),
        ),
    ])
}

/// Random PUT/GET/DELETE on 5 nodes while one node crashes and restarts and another is
/// partitioned away, at times drawn from the seed; then every acknowledged write must be
/// readable and nothing acknowledged lost.
pub(super) fn data_faults(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let config = data_config(options, Scenario::DataFaults, ReplicationConfig::default());
    let n = config.nodes;
    assert!(n >= 3, "the scenario needs a node to crash, one to partition and one more");
    let fault_phase = options.duration.unwrap_or(Duration::from_secs(60));
    let phase_ms = u64::try_from(fault_phase.as_millis()).unwrap_or(u64::MAX).max(10_000);
    let mut plan_rng = StdRng::seed_from_u64(options.seed ^ 0xDA7A_FA17_5EED_0001);
    let crashed = plan_rng.random_range(0..n);
    let isolated = (crashed + plan_rng.random_range(1..n)) % n;
    let crash_at = Duration::from_millis(plan_rng.random_range(2_000..phase_ms / 2));
    let restart_at = crash_at + Duration::from_millis(plan_rng.random_range(2_000..20_000));
    let partition_at = Duration::from_millis(plan_rng.random_range(2_000..phase_ms / 2));
    let heal_at = partition_at + Duration::from_millis(plan_rng.random_range(5_000..30_000));
    let mut sim = Sim::new(config);
    eprintln!(
        "plan: crash node {crashed} at {}, restart it at {}; partition node {isolated} away at {}, heal at {} \
         (times after the cluster converged; fault phase {})",
        secs(crash_at),
        secs(restart_at),
        secs(partition_at),
        secs(heal_at),
        secs(fault_phase)
    );
    let converged = start_and_settle(&mut sim)?;
    sim.start_workload(Workload::default());
    let start = sim.now();
    let others: Vec<usize> = (0..n).filter(|&index| index != isolated).collect();
    let mut steps: Vec<(Duration, u8)> = vec![(crash_at, 0), (restart_at, 1), (partition_at, 2), (heal_at, 3)];
    steps.sort();
    for (at, step) in steps {
        if at >= fault_phase {
            continue;
        }
        sim.run_for((start + at).saturating_sub(sim.now()));
        match step {
            0 => sim.crash(crashed),
            1 => sim.restart(crashed),
            2 => sim.partition(&[&[isolated], &others]),
            _ => sim.heal(),
        }
    }
    sim.run_for((start + fault_phase).saturating_sub(sim.now()));
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact("crashed", format!("node {crashed} from {} to {}", secs(crash_at), secs(restart_at))),
        fact("partitioned away", format!("node {isolated} from {} to {}", secs(partition_at), secs(heal_at))),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[])?);
    Ok(Summary::new(Scenario::DataFaults, &sim, facts))
}

/// Clocks up to ±60 s apart: every write that starts after another was acknowledged gets a
/// greater version (and so wins), and the final read returns the newest acknowledged write.
pub(super) fn clock_skew(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let config = data_config(options, Scenario::ClockSkew, ReplicationConfig::default());
    let n = config.nodes;
    let duration = options.duration.unwrap_or(Duration::from_secs(60));
    let mut sim = Sim::new(config);
    // Spread the clocks over the whole ±60 s, in an order drawn from the seed, with jitter.
    let mut plan_rng = sim.scenario_rng(5);
    let skew_us = 60_000_000i64;
    let mut offsets: Vec<i64> = (0..n)
        .map(|i| if n == 1 { 0 } else { -skew_us + 2 * skew_us * i as i64 / (n as i64 - 1) })
        .map(|offset| (offset + plan_rng.random_range(-500_000..=500_000)).clamp(-skew_us, skew_us))
        .collect();
    offsets.shuffle(&mut plan_rng);
    for (index, offset) in offsets.iter().enumerate() {
        sim.set_clock_offset(index, *offset);
    }
    eprintln!("clock offsets (µs): {offsets:?}");
    let converged = start_and_settle(&mut sim)?;
    // Few paths, mostly writes: many writes follow one another on each path, through nodes
    // whose clocks disagree.
    let workload = Workload {
        paths: (0..6).map(|i| format!("/skew{}/file{i}", i % 2)).collect(),
        put_percent: 55,
        get_percent: 30,
        ..Workload::default()
    };
    sim.start_workload(workload);
    sim.run_for(duration);
    let mut facts = vec![fact("converged after", secs(converged)), fact("clock offsets (µs)", format!("{offsets:?}"))];
    // How often the check meant something: a write acknowledged, then a later write through
    // a node whose clock is behind the first one's.
    let history = sim.history();
    let mut backwards = 0usize;
    for earlier in history.ops.iter().filter(|op| op.acked_version().is_some()) {
        let Some(end) = earlier.end else { continue };
        let later =
            history.ops.iter().find(|op| op.path == earlier.path && op.acked_version().is_some() && op.start > end);
        if let Some(later) = later
            && offsets[later.node] + 1_000_000 < offsets[earlier.node]
        {
            backwards += 1;
        }
    }
    sim.check(backwards > 0, || "no acknowledged write was followed by one from a node whose clock is behind".into())?;
    facts.push(fact("acknowledged writes followed next by a write from a node >1 s behind", backwards));
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[])?);
    Ok(Summary::new(Scenario::ClockSkew, &sim, facts))
}

/// A join and an eviction while the workload runs: 5 of 6 nodes start, the 6th joins, then a
/// node crashes for good and is evicted from the ring after `evict_after` (30 s); the ring
/// changes twice and read-after-write holds throughout.
pub(super) fn ring_change(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut replication = ReplicationConfig::default();
    replication.core.evict_after = Duration::from_secs(30);
    let config = data_config(options, Scenario::RingChange, replication);
    let n = config.nodes;
    assert!(n >= 5, "the scenario needs at least 5 nodes");
    let duration = options.duration.unwrap_or(Duration::from_secs(120));
    let mut sim = Sim::new(config);
    let joiner = n - 1;
    for index in 0..joiner {
        sim.start_node(index);
        sim.run_for(Duration::from_millis(10));
    }
    let converged = sim.wait_for("the first nodes to converge", super::JOIN_MAX, Sim::check_converged)?;
    let mut plan_rng = sim.scenario_rng(6);
    let victim = plan_rng.random_range(1..joiner);
    let join_at = Duration::from_millis(plan_rng.random_range(3_000..10_000));
    let crash_at = join_at + Duration::from_millis(plan_rng.random_range(5_000..20_000));
    eprintln!("plan: node {joiner} joins at {}, node {victim} crashes for good at {}", secs(join_at), secs(crash_at));
    sim.start_workload(Workload::default());
    let start = sim.now();
    sim.run_for(join_at);
    sim.start_node(joiner);
    sim.run_for((start + crash_at).saturating_sub(sim.now()));
    sim.crash(victim);
    sim.run_for((start + duration).saturating_sub(sim.now()));
    // Both changes must have reached every running node's ring.
    let victim_id = sim.node_id(victim);
    let joiner_id = sim.node_id(joiner);
    for index in sim.running_nodes() {
        let placement = sim.placement(index).expect("a running node has a placement");
        let members: Vec<u128> = placement.ring().members().iter().map(|member| member.node_id).collect();
        sim.check(members.contains(&joiner_id) && !members.contains(&victim_id), || {
            format!(
                "node {index}'s ring after the run: joiner {joiner} {}, evicted node {victim} {}",
                if members.contains(&joiner_id) { "in" } else { "missing" },
                if members.contains(&victim_id) { "still in" } else { "out" }
            )
        })?;
    }
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact("joined", format!("node {joiner} at {}", secs(join_at))),
        fact("crashed for good", format!("node {victim} at {}", secs(crash_at))),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[victim])?);
    Ok(Summary::new(Scenario::RingChange, &sim, facts))
}

/// One node of 5 is cut off; writes coordinated on it while it is alone fail or are in doubt
/// (never acknowledged), writes on the majority side still succeed.
pub(super) fn minority(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let config = data_config(options, Scenario::Minority, ReplicationConfig::default());
    let n = config.nodes;
    assert!(n >= 3, "a minority of one needs a majority of at least two");
    let partition_length = options.duration.unwrap_or(Duration::from_secs(30));
    let mut sim = Sim::new(config);
    let converged = start_and_settle(&mut sim)?;
    let mut plan_rng = sim.scenario_rng(7);
    let isolated = plan_rng.random_range(0..n);
    let others: Vec<usize> = (0..n).filter(|&index| index != isolated).collect();
    // Half the operations go through the node that will be cut off.
    let mut coordinators = vec![isolated; others.len()];
    coordinators.extend(&others);
    sim.start_workload(Workload {
        coordinators: Some(coordinators),
        put_percent: 60,
        get_percent: 20,
        ..Workload::default()
    });
    sim.run_for(Duration::from_secs(10));
    let from = sim.now();
    sim.partition(&[&[isolated], &others]);
    eprintln!("node {isolated} partitioned away at {} for {}", secs(from), secs(partition_length));
    sim.run_for(partition_length);
    let until = sim.now();
    sim.heal();
    sim.run_for(Duration::from_secs(10));
    sim.stop_workload();
    sim.wait_for_clients(Duration::from_secs(60))?;
    sim.check_none_acked(&[isolated], from, until)?;
    let history = sim.history();
    let during = |op: &crate::history::OpRecord| op.start >= from && op.end.is_some_and(|end| end <= until);
    let minority = history.tally(|op| op.kind.is_write() && op.node == isolated && during(op));
    let majority = history.tally(|op| op.kind.is_write() && op.node != isolated && during(op));
    sim.check(minority.failed + minority.in_doubt > 0, || "no write was tried on the minority side".into())?;
    sim.check(majority.acked > 0, || "no write succeeded on the majority side".into())?;
    // Majority writes do not depend on the cut-off node: all succeed (a DELETE may find no
    // file to delete).
    if let Some(op) = history.ops.iter().find(|op| {
        op.kind.is_write()
            && op.node != isolated
            && during(op)
            && !matches!(op.outcome, crate::history::Outcome::Acked(_) | crate::history::Outcome::NotFound)
    }) {
        return Err(sim.failure(format!("a write on the majority side during the partition did not succeed: {op}")));
    }
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact("partitioned away", format!("node {isolated} for {}", secs(partition_length))),
        fact("writes on the minority side during the partition", minority),
        fact("writes on the majority side during the partition", majority),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[])?);
    Ok(Summary::new(Scenario::Minority, &sim, facts))
}

/// The network splits into two sides (2 | 3 at five nodes) for longer than `evict_after`
/// (30 s here) while clients write through every node. Some seeds skew the clocks by up to
/// ±30 s, some crash a node on one side during the split (restarted at the heal). Only the
/// side that sees a strict majority evicts the other and goes on coordinating; the other
/// stops coordinating, and after the heal learns where the majority placed data before it
/// coordinates again (docs/ARCHITECTURE.md §5): read-after-write holds throughout, nothing
/// acknowledged is lost, and after the heal every partition settles and its owners agree.
pub(super) fn split(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut replication = ReplicationConfig::default();
    replication.core.evict_after = Duration::from_secs(30);
    let seed_rng = &mut StdRng::seed_from_u64(options.seed ^ 0x5917_u64);
    let skewed = seed_rng.random_bool(0.5);
    if skewed {
        replication.clock_skew_max = Duration::from_secs(30);
    }
    let config = data_config(options, Scenario::Split, replication);
    let n = config.nodes;
    assert!(n >= 3, "a split needs two sides");
    let mut sim = Sim::new(config);
    let converged = start_and_settle(&mut sim)?;
    let mut plan_rng = sim.scenario_rng(8);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut plan_rng);
    let (small, large) = order.split_at(n / 2);
    let (small, large) = (small.to_vec(), large.to_vec());
    let split_for = Duration::from_millis(plan_rng.random_range(45_000..120_000));
    let crash = plan_rng.random_bool(0.5).then(|| order[plan_rng.random_range(0..n)]);
    let crash_after = Duration::from_millis(plan_rng.random_range(1_000..40_000));
    eprintln!(
        "plan: split {small:?} | {large:?} for {}, clocks skewed: {skewed}, crash: {crash:?} {} into the split",
        secs(split_for),
        secs(crash_after)
    );
    sim.start_workload(Workload { put_percent: 50, get_percent: 35, ..Workload::default() });
    sim.run_for(Duration::from_secs(5));
    sim.partition(&[&small, &large]);
    let split_at = sim.now();
    if let Some(victim) = crash {
        sim.run_for(crash_after);
        sim.crash(victim);
    }
    sim.run_for((split_at + split_for).saturating_sub(sim.now()));
    // Only a side that sees a strict majority evicts the other (docs/ARCHITECTURE.md §5).
    let running = sim.running_nodes();
    for &index in &running {
        let side = if small.contains(&index) { &small } else { &large };
        let up = side.iter().filter(|node| running.contains(node)).count();
        let expected = if up * 2 > n { side.len() } else { n };
        let members = sim.placement(index).expect("a running node has a placement").ring().members().len();
        sim.check(members == expected, || {
            format!("node {index} has {members} members in its ring after the split, not {expected}")
        })?;
    }
    sim.heal();
    sim.run_for(Duration::from_secs(20));
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact("split", format!("{small:?} | {large:?} for {}", secs(split_for))),
        fact("clocks skewed by up to 30 s", skewed),
        fact("crashed during the split", format!("{crash:?}")),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[])?);
    Ok(Summary::new(Scenario::Split, &sim, facts))
}
