//! Anti-entropy through the simulator (docs/ARCHITECTURE.md §7): replicas that missed writes
//! catch up with no read and no operator, and the checker that says so can fail.
//!
//! Each test prints `SEED=` first and fails with the command that replays it;
//! `SHOAL_SIM_SEED` overrides the fixed seeds.

use std::time::Duration;

use shoal_membership::Preset;
use shoal_sim::{CheckFailure, ReplicaReport, ReplicationConfig, Sim, SimConfig, Workload, seed_from_env};

fn ok<T>(result: Result<T, CheckFailure>) -> T {
    result.unwrap_or_else(|failure| panic!("{failure}"))
}

/// Three nodes, N = 3: node 2 is down while clients write (PUT and DELETE only, so no read
/// repairs anything), then comes back; after a quiet period the replicas are compared.
/// Returns the simulator, the read repairs made before node 2 came back, and the check.
fn missed_writes(name: &str, replication: ReplicationConfig) -> (Sim, u64, Result<ReplicaReport, CheckFailure>) {
    let mut config = SimConfig::new(name, seed_from_env(7), 3).with_preset(Preset::Lan);
    config.replication = Some(replication);
    let mut sim = Sim::new(config);
    ok(shoal_sim::scenario::start_and_converge(&mut sim));
    // Past the transition of the ring's forming (60 s), so the ring holds still.
    sim.run_for(Duration::from_secs(62));
    sim.crash(2);
    let writes_only =
        Workload { put_percent: 85, get_percent: 0, coordinators: Some(vec![0, 1]), ..Workload::default() };
    sim.start_workload(writes_only);
    sim.run_for(Duration::from_secs(20));
    sim.stop_workload();
    ok(sim.wait_for_clients(Duration::from_secs(60)));
    // A PUT reads its parent directories, which can repair them: count those apart.
    let repairs_before = sim.data_stats().read_repairs;
    sim.restart(2);
    ok(sim.wait_for("the views to converge", Duration::from_secs(60), Sim::check_converged));
    sim.run_for(Duration::from_secs(30));
    let report = sim.check_replicas_agree();
    (sim, repairs_before, report)
}

#[test]
fn a_node_back_from_an_outage_catches_up_on_what_it_missed_without_any_read() {
    let (sim, repairs_before, report) = missed_writes("catch up", ReplicationConfig::default());
    let report = ok(report);
    let stats = sim.data_stats();
    eprintln!("{report:?} {stats:?}");
    assert!(report.entries > 0, "the workload wrote something");
    assert!(stats.sync_records > 0 && stats.sync_blocks > 0, "anti-entropy copied what node 2 missed: {stats:?}");
    assert_eq!(stats.read_repairs, repairs_before, "no read repaired anything after node 2 came back");
    // And what the clients were told is consistent.
    ok(sim.check_history());
}

#[test]
fn the_replica_checker_sees_a_node_that_missed_writes_when_anti_entropy_is_off() {
    let mut replication = ReplicationConfig::default();
    replication.core.sync_interval = Duration::from_secs(365 * 24 * 3600);
    let (_, _, report) = missed_writes("checker self-test", replication);
    let failure = report.expect_err("with no anti-entropy, node 2 still lacks what it missed");
    assert!(failure.message.contains("differ"), "{failure}");
    eprintln!("caught, as it should: {failure}");
}

/// Runs `scenario` over `seeds` (or `SHOAL_SIM_SEED` alone), panicking with the replay
/// command at the first failure.
fn run_seeds(scenario: shoal_sim::Scenario, seeds: std::ops::Range<u64>) {
    let seeds: Vec<u64> = match std::env::var("SHOAL_SIM_SEED") {
        Ok(_) => vec![seed_from_env(seeds.start)],
        Err(_) => seeds.collect(),
    };
    for seed in seeds {
        eprintln!("{}", ok(scenario.run(&shoal_sim::ScenarioOptions::seed(seed))));
    }
}

#[test]
fn two_joins_and_an_eviction_during_writes_keep_read_after_write_and_drop_what_the_joiners_took_over() {
    run_seeds(shoal_sim::Scenario::Joins, 1..3);
}

#[test]
fn a_node_that_flaps_within_evict_after_changes_no_ring_and_moves_only_what_it_missed() {
    run_seeds(shoal_sim::Scenario::Flap, 1..3);
}

#[test]
fn a_node_whose_store_is_wiped_is_refilled_from_its_peers() {
    run_seeds(shoal_sim::Scenario::Wipe, 1..3);
}

/// The founding node (no seeds), wiped with its memory, came back as a cluster of one and
/// answered "not found" for an acknowledged file (seed 176 of 250). A node that lost its
/// store now waits to see another member, and refuses reads of a partition until it has
/// exchanged it with enough co-owners that every acknowledged write meets one of them.
#[test]
fn a_wiped_node_neither_founds_a_cluster_of_its_own_nor_answers_reads_before_it_is_refilled() {
    run_seeds(shoal_sim::Scenario::Wipe, 176..177);
}
