//! Self-repair with real processes (docs/ARCHITECTURE.md §7): four `shoal serve` processes,
//! N = 3, `evict_after` shortened to 8 s. What each node holds is read from its own store
//! (opened while the node is stopped), and who should hold it from the same ring the nodes
//! build, so the test sees copies, not quorum reads (which would repair them).
// Harness code: waiting on real processes reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_membership::{Ring, RingMember};
use shoal_node::core::replication::partition_of;
use shoal_storage::{BlockHash, FjallStore, FjallStoreConfig, Store};
use shoal_tests::{NodeOptions, ShoalProcess, metric, pseudo_random_bytes, wait_for_ring};

const FILES: u64 = 30;

fn args(seed: Option<&ShoalProcess>) -> Vec<String> {
    let mut args: Vec<String> =
        ["--gossip-preset", "local", "--evict-after-secs", "8"].into_iter().map(String::from).collect();
    if let Some(seed) = seed {
        args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
    }
    args
}

fn path(i: u64) -> String {
    format!("/ae/file{i}")
}

/// What a node's store holds: file paths and block names. The node must be stopped.
fn holdings(node: &ShoalProcess) -> (BTreeSet<String>, BTreeSet<BlockHash>) {
    let store = FjallStore::open(FjallStoreConfig::new(&node.data_dir)).expect("open a stopped node's store");
    let files = store.scan_files(None, usize::MAX).expect("files").into_iter().map(|(path, _)| path).collect();
    let blocks = store.scan_blocks(None, usize::MAX).expect("blocks").into_iter().collect();
    (files, blocks)
}

/// The ring of the members `node` sees alive, as the nodes build it.
async fn ring_of(node: &ShoalProcess) -> (Ring, BTreeMap<u128, String>) {
    let status = node.client().status().await.expect("status");
    let mut members = Vec::new();
    let mut names = BTreeMap::new();
    for member in status.members.iter().filter(|m| m.state == "alive") {
        let id = u128::from_str_radix(&member.node_id, 16).expect("a hex node id");
        names.insert(id, member.http_addr.clone());
        members.push(RingMember { node_id: id, zone: member.zone.clone(), capacity_bytes: member.capacity_bytes });
    }
    (Ring::new(members, 3), names)
}

fn owners(ring: &Ring, key: &[u8]) -> BTreeSet<u128> {
    ring.owners(partition_of(key)).map(|member| member.node_id).collect()
}

async fn node_id(node: &ShoalProcess) -> u128 {
    let status = node.client().status().await.expect("status");
    u128::from_str_radix(&status.node_id, 16).expect("a hex node id")
}

/// Waits until anti-entropy on `nodes` has been quiet (no record or block copied, no copy
/// dropped) for three exchange rounds.
async fn wait_until_repaired(nodes: &[&ShoalProcess]) {
    let counters = [
        "shoal_sync_repairs_total{kind=\"records\",direction=\"pulled\"}",
        "shoal_sync_repairs_total{kind=\"records\",direction=\"pushed\"}",
        "shoal_sync_repairs_total{kind=\"blocks\",direction=\"pulled\"}",
        "shoal_sync_repairs_total{kind=\"blocks\",direction=\"pushed\"}",
        "shoal_copies_dropped_total",
    ];
    let start = Instant::now();
    let mut last = Vec::new();
    let mut quiet_since = Instant::now();
    loop {
        let mut now = Vec::new();
        for node in nodes {
            for counter in counters {
                now.push(metric(node, counter).await);
            }
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(12) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "anti-entropy did not settle within 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every node in `placed` holds exactly the files and blocks its ring says it owns.
fn assert_exactly_on_owners(ring: &Ring, placed: &[(u128, &ShoalProcess)], what: &str) {
    for (id, node) in placed {
        let (files, blocks) = holdings(node);
        let expected: BTreeSet<String> =
            (0..FILES).map(path).filter(|path| owners(ring, path.as_bytes()).contains(id)).collect();
        let ours: BTreeSet<String> = files.into_iter().filter(|path| path.starts_with("/ae/")).collect();
        assert_eq!(ours, expected, "{what}: files on node {id:032x}");
        let block_owned = blocks.iter().all(|block| owners(ring, &block.0).contains(id));
        assert!(block_owned, "{what}: node {id:032x} holds a block it does not own");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_repair_missed_writes_evictions_returns_and_a_wiped_disk_on_their_own() {
    let a = ShoalProcess::start(NodeOptions { args: args(None), ..NodeOptions::default() }).expect("start");
    let mut others: Vec<ShoalProcess> = (0..3)
        .map(|_| ShoalProcess::start(NodeOptions { args: args(Some(&a)), ..NodeOptions::default() }).expect("start"))
        .collect();
    let mut all: Vec<&ShoalProcess> = vec![&a];
    all.extend(others.iter());
    wait_for_ring(&all, 4).await;
    let (ring, _) = ring_of(&a).await;
    let d_id = node_id(&others[2]).await;

    // 1. D is down while files are written; back, it catches up with no read.
    others[2].kill9();
    for i in 0..FILES {
        a.client().put_bytes(&path(i), pseudo_random_bytes(i, 20_000 + i as usize)).await.expect("put with D down");
    }
    others[2].restart().expect("restart D");
    let mut all: Vec<&ShoalProcess> = vec![&a];
    all.extend(others.iter());
    wait_for_ring(&all, 4).await;
    wait_until_repaired(&all).await;
    let repairs: u64 = {
        let mut total = 0;
        for node in &all {
            total += metric(node, "shoal_read_repairs_total").await;
        }
        total
    };
    assert_eq!(repairs, 0, "nothing was read, so nothing was read-repaired");
    others[2].kill9();
    assert_exactly_on_owners(&ring, &[(d_id, &others[2])], "D after its outage");

    // 2. D stays down past evict_after: the three others own everything, each a full copy.
    let survivors: Vec<&ShoalProcess> = std::iter::once(&a).chain(others[..2].iter()).collect();
    wait_for_ring(&survivors, 3).await;
    wait_until_repaired(&survivors).await;
    wait_for_full_redundancy(&survivors, "after D's eviction").await;
    let (small_ring, _) = ring_of(&a).await;
    assert_eq!(small_ring.members().len(), 3, "D was evicted");
    // Stopped for the check one at a time, so the others keep the cluster up.
    for i in 0..2 {
        others[i].kill9();
        let id = node_id_offline(&others[i]);
        assert_exactly_on_owners(&small_ring, &[(id, &others[i])], "a survivor after the eviction");
        others[i].restart().expect("restart");
        let survivors: Vec<&ShoalProcess> = std::iter::once(&a).chain(others[..2].iter()).collect();
        wait_for_ring(&survivors, 3).await;
    }
    let files_on_a = a.client().list("/ae").await.expect("list").entries.len() as u64;
    assert_eq!(files_on_a, FILES, "every file is still there");

    // 3. D returns: the ring is the four again, and the copies the others took over while D
    //    was gone are dropped once D holds them.
    others[2].restart().expect("D returns");
    let mut all: Vec<&ShoalProcess> = vec![&a];
    all.extend(others.iter());
    wait_for_ring(&all, 4).await;
    wait_until_repaired(&all).await;
    let mut dropped = 0;
    for node in [&a, &others[0], &others[1]] {
        dropped += metric(node, "shoal_copies_dropped_total").await;
    }
    assert!(dropped > 0, "over-replication was cleaned up");
    wait_for_full_redundancy(&all, "after D's return").await;
    let (ring, _) = ring_of(&a).await;
    for node in others.iter_mut() {
        node.kill9();
        let id = node_id_offline(node);
        assert_exactly_on_owners(&ring, &[(id, &*node)], "after D's return");
        node.restart().expect("restart");
    }

    // 4. D's disk is wiped (identity kept, as after a disk swap): refilled from its peers.
    let mut all: Vec<&ShoalProcess> = vec![&a];
    all.extend(others.iter());
    wait_for_ring(&all, 4).await;
    others[2].kill9();
    for sub in ["db", "blocks"] {
        std::fs::remove_dir_all(others[2].data_dir.join(sub)).expect("wipe D's store");
    }
    others[2].restart().expect("D restarts on an empty disk");
    // D knows it lost its store (its identity is kept): it refuses reads until refilled.
    let marker = others[2].data_dir.join("store_lost");
    assert!(marker.exists(), "D marks its store lost before it makes a new one");
    let mut all: Vec<&ShoalProcess> = vec![&a];
    all.extend(others.iter());
    wait_for_ring(&all, 4).await;
    wait_until_repaired(&all).await;
    wait_for_full_redundancy(&all, "after D's disk was wiped").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while marker.exists() {
        assert!(Instant::now() < deadline, "D never reported its store refilled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    others[2].kill9();
    assert_exactly_on_owners(&ring, &[(d_id, &others[2])], "D after its disk was wiped");
}

/// Waits until the durability accounts of `nodes` (what `shoal status` adds up, through each
/// node's `/v1/status`) show every partition once, each with N confirmed copies.
async fn wait_for_full_redundancy(nodes: &[&ShoalProcess], what: &str) {
    let all = shoal_membership::PARTITIONS as u64;
    let start = Instant::now();
    loop {
        let mut seen = (0, 0, 0);
        for node in nodes {
            let account = node.client().status().await.ok().and_then(|status| status.durability).unwrap_or_default();
            seen = (seen.0 + account.partitions, seen.1 + account.full, seen.2 + account.fewer);
        }
        if seen == (all, all, 0) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{what}: (partitions, full, fewer) = {seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A stopped node's id, from the file it keeps it in.
fn node_id_offline(node: &ShoalProcess) -> u128 {
    let text = std::fs::read_to_string(node.data_dir.join("node_id")).expect("the node id file");
    u128::from_str_radix(text.trim(), 16).expect("a hex node id")
}
