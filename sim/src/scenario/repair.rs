//! Scenarios of self-repair (docs/ARCHITECTURE.md §7): members that come and go while clients
//! write, a node that flaps, a node whose store is wiped. Each ends like every data scenario
//! (the replicas equal on their owners, read-after-write held, nothing acknowledged lost),
//! and checks that the faults reached the repair paths and that the durability account
//! shows every partition back at N confirmed copies.

use std::time::Duration;

use rand::RngExt;
use shoal_storage::Store;

use super::data::{data_config, heal_and_check, start_and_settle};
use super::{Scenario, ScenarioOptions, Summary, fact, secs};
use crate::check::CheckFailure;
use crate::config::ReplicationConfig;
use crate::sim::{Sim, Workload};

/// How long after the replicas agree every node's exchanges have confirmed them again.
const CONFIRM_QUIET: Duration = Duration::from_secs(60);

/// Two members join and one crashes for good (evicted after `evict_after`, 30 s) while clients
/// write: the ring changes three times, read-after-write holds throughout, and the joins'
/// hand-overs drop the copies old owners no longer own.
pub(super) fn joins(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut replication = ReplicationConfig::default();
    replication.core.evict_after = Duration::from_secs(30);
    let config = data_config(options, Scenario::Joins, replication);
    let n = config.nodes;
    assert!(n >= 6, "the scenario needs at least 6 nodes");
    let duration = options.duration.unwrap_or(Duration::from_secs(120));
    let mut sim = Sim::new(config);
    let first = n - 2;
    for index in 0..first {
        sim.start_node(index);
        sim.run_for(Duration::from_millis(10));
    }
    let converged = sim.wait_for("the first nodes to converge", super::JOIN_MAX, Sim::check_converged)?;
    sim.wait_for_settled(Duration::from_secs(60))?;
    let mut plan = sim.scenario_rng(7);
    let victim = plan.random_range(1..first);
    let join_at = [Duration::from_millis(plan.random_range(3_000..10_000)), Duration::ZERO];
    let join_at = [join_at[0], join_at[0] + Duration::from_millis(plan.random_range(2_000..15_000))];
    let crash_at = join_at[1] + Duration::from_millis(plan.random_range(5_000..20_000));
    eprintln!(
        "plan: nodes {first} and {} join at {} and {}, node {victim} crashes for good at {}",
        first + 1,
        secs(join_at[0]),
        secs(join_at[1]),
        secs(crash_at)
    );
    let before = sim.data_stats();
    sim.start_workload(Workload::default());
    let start = sim.now();
    for (i, at) in join_at.iter().enumerate() {
        sim.run_for((start + *at).saturating_sub(sim.now()));
        sim.start_node(first + i);
    }
    sim.run_for((start + crash_at).saturating_sub(sim.now()));
    sim.crash(victim);
    sim.run_for((start + duration).saturating_sub(sim.now()));
    let (joined, gone) = ([sim.node_id(first), sim.node_id(first + 1)], sim.node_id(victim));
    for index in sim.running_nodes() {
        let placement = sim.placement(index).expect("a running node has a placement");
        let members: Vec<u128> = placement.ring().members().iter().map(|member| member.node_id).collect();
        sim.check(joined.iter().all(|id| members.contains(id)) && !members.contains(&gone), || {
            format!("node {index}'s ring after the run does not hold both joiners without node {victim}")
        })?;
    }
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact("joined", format!("nodes {first} and {} at {} and {}", first + 1, secs(join_at[0]), secs(join_at[1]))),
        fact("crashed for good", format!("node {victim} at {}", secs(crash_at))),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[victim])?);
    let after = sim.data_stats();
    sim.check(after.sync_records + after.sync_blocks > before.sync_records + before.sync_blocks, || {
        format!("anti-entropy copied nothing to the new owners: {after:?}")
    })?;
    sim.check(after.copies_dropped > before.copies_dropped, || {
        format!("no old owner dropped a copy the joiners took over: {after:?}")
    })?;
    check_full_redundancy(&mut sim)?;
    Ok(Summary::new(Scenario::Joins, &sim, facts))
}

/// One node of 5 flaps: down and up three times, each outage well within `evict_after`
/// (60 s), while clients write. No other node's ring changes or enters a transition, nothing
/// is handed over or dropped, and anti-entropy copies about what the node missed, not more.
pub(super) fn flap(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let mut replication = ReplicationConfig::default();
    replication.core.evict_after = Duration::from_secs(60);
    let config = data_config(options, Scenario::Flap, replication);
    let n = config.nodes;
    let mut sim = Sim::new(config);
    let converged = start_and_settle(&mut sim)?;
    let mut plan = sim.scenario_rng(8);
    let flapper = plan.random_range(0..n);
    let before = sim.data_stats();
    sim.start_workload(Workload::default());
    let mut downtime = Vec::new();
    sim.run_for(Duration::from_secs(5));
    for _ in 0..3 {
        let down = Duration::from_millis(plan.random_range(3_000..15_000));
        let up = Duration::from_millis(plan.random_range(5_000..10_000));
        let from = sim.now();
        sim.crash(flapper);
        watch_rings(&mut sim, flapper, n, down)?;
        sim.restart(flapper);
        downtime.push((from, sim.now()));
        watch_rings(&mut sim, flapper, n, up)?;
    }
    let mut facts = vec![
        fact("converged after", secs(converged)),
        fact(
            "flapped",
            format!(
                "node {flapper}, down {}",
                downtime.iter().map(|(a, b)| format!("{}..{}", secs(*a), secs(*b))).collect::<Vec<_>>().join(", ")
            ),
        ),
    ];
    let mut rng = sim.scenario_rng(4);
    facts.extend(heal_and_check(&mut sim, &mut rng, &[])?);
    let after = sim.data_stats();
    sim.check(after.copies_dropped == before.copies_dropped && after.handovers == before.handovers, || {
        format!("a flap that changed no ring handed over or dropped copies: {after:?}")
    })?;
    // What it can have missed: the writes that started or ended while it was down, each a
    // file record, its directory entries and its blocks (at most 4 of them, 4 directory
    // levels), on both sides of each exchange.
    let missed = sim
        .history()
        .ops
        .iter()
        .filter(|op| op.kind.is_write())
        .filter(|op| {
            let end = op.end.unwrap_or(Duration::MAX);
            downtime.iter().any(|(from, to)| op.start < *to && end > *from)
        })
        .count() as u64;
    let copied = (after.sync_records - before.sync_records) + (after.sync_blocks - before.sync_blocks);
    sim.check(copied > 0, || format!("the flapping node caught up on nothing: {after:?}"))?;
    sim.check(copied <= 2 * 9 * missed + 50, || {
        format!("anti-entropy copied {copied} entries for {missed} writes the flapping node may have missed")
    })?;
    facts.push(fact("repair", format!("{copied} entries copied for {missed} writes during the outages")));
    check_full_redundancy(&mut sim)?;
    Ok(Summary::new(Scenario::Flap, &sim, facts))
}

/// Runs the cluster for `duration`, checking every second that no running node but
/// `flapper` saw its ring change or a partition start settling.
fn watch_rings(sim: &mut Sim, flapper: usize, members: usize, duration: Duration) -> Result<(), CheckFailure> {
    let end = sim.now() + duration;
    while sim.now() < end {
        sim.run_for(Duration::from_secs(1).min(end.saturating_sub(sim.now())));
        for index in sim.running_nodes().into_iter().filter(|index| *index != flapper) {
            let Some(placement) = sim.placement(index) else { continue };
            let (size, moving) = (placement.ring().members().len(), placement.settling().len());
            sim.check(size == members && moving == 0, || {
                format!(
                    "node {index}'s ring has {size} members and {moving} partitions settling while node {flapper} flaps"
                )
            })?;
        }
    }
    Ok(())
}

/// One node of 5 loses its whole data directory (store and remembered members) while
/// clients write; it restarts empty, under its old identity, and is refilled from its peers.
pub(super) fn wipe(options: &ScenarioOptions) -> Result<Summary, CheckFailure> {
    let config = data_config(options, Scenario::Wipe, ReplicationConfig::default());
    let n = config.nodes;
    let mut sim = Sim::new(config);
    let converged = start_and_settle(&mut sim)?;
    let wiped = sim.scenario_rng(9).random_range(0..n);
    let writes = Workload { put_percent: 80, get_percent: 10, ..Workload::default() };
    sim.start_workload(writes);
    sim.run_for(Duration::from_secs(30));
    let held = sim.store(wiped).scan_files(None, usize::MAX).map_or(0, |files| files.len());
    sim.crash(wiped);
    sim.wipe(wiped);
    let before = sim.data_stats();
    sim.run_for(Duration::from_secs(5));
    sim.restart(wiped);
    sim.run_for(Duration::from_secs(30));
    let facts = vec![
        fact("converged after", secs(converged)),
        fact("wiped", format!("node {wiped}, which held {held} file records")),
    ];
    let mut rng = sim.scenario_rng(4);
    let mut facts = [facts, heal_and_check(&mut sim, &mut rng, &[])?].concat();
    let after = sim.data_stats();
    let refilled = sim.store(wiped).scan_files(None, usize::MAX).map_or(0, |files| files.len());
    sim.check(held == 0 || refilled > 0, || format!("node {wiped} held {held} files before the wipe and none after"))?;
    sim.check(after.sync_blocks > before.sync_blocks, || format!("no block was copied back: {after:?}"))?;
    sim.check(after.refills > before.refills, || format!("node {wiped} never reported its store refilled"))?;
    facts.push(fact("refilled", format!("{refilled} file records back on node {wiped}")));
    check_full_redundancy(&mut sim)?;
    Ok(Summary::new(Scenario::Wipe, &sim, facts))
}

/// After a quiet period, the nodes' durability accounts (what `shoal status` adds up) show
/// every partition accounted for once, each with N confirmed copies.
fn check_full_redundancy(sim: &mut Sim) -> Result<(), CheckFailure> {
    sim.run_for(CONFIRM_QUIET);
    let (mut partitions, mut full) = (0, 0);
    for account in (0..sim.len()).filter_map(|index| sim.durability(index)) {
        (partitions, full) = (partitions + account.partitions, full + account.full);
    }
    let all = shoal_membership::PARTITIONS as u64;
    sim.check(partitions == all && full == all, || {
        format!("the durability accounts show {full} of {partitions} partitions at N confirmed copies (of {all})")
    })
}
