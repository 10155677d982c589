//! A disk filling up is no ring change (issue 9): a real three-process cluster fills its
//! disks until writes are refused, and no node's ring moves. Alone in its test binary,
//! because it measures this machine's free space and other tests' writes would eat it.
// Harness code: waiting on real processes reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use shoal_node::client::ClientError;
use shoal_tests::{NodeOptions, ShoalProcess, metric, pseudo_random_bytes, wait_for_ring};

fn start(seed: Option<&ShoalProcess>, reserve: u64) -> ShoalProcess {
    // A configured capacity of 1 GiB, a power of two, above what the reserve leaves: a node
    // that reported used + available bytes (rounded to a power of two) changed its weight as
    // the shared free space shrank by about 2 MiB per upload.
    let mut args: Vec<String> = ["--gossip-preset", "local", "--capacity-bytes", "1073741824", "--disk-reserve-bytes"]
        .into_iter()
        .map(String::from)
        .collect();
    args.push(reserve.to_string());
    if let Some(seed) = seed {
        args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
    }
    ShoalProcess::start(NodeOptions { args, ..NodeOptions::default() }).expect("start shoal serve")
}

async fn capacities(node: &ShoalProcess) -> Vec<(String, u64)> {
    let status = node.client().status().await.expect("status");
    let mut capacities: Vec<(String, u64)> =
        status.members.into_iter().map(|m| (m.node_id, m.capacity_bytes)).collect();
    capacities.sort();
    capacities
}

/// Ring weights used to follow the free space each node reported, so a write workload
/// alone changed the ring (three times in 1.5 GiB of uploads on three nodes) and moved data.
/// Three nodes share this machine's disk with a reserve that leaves them ~400 MiB, so every
/// upload visibly shrinks everyone's free space; the ring must not change while they fill up
/// and refuse writes with 507.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disks_until_writes_are_refused_changes_no_ring() {
    let free = fs4::available_space(std::env::temp_dir()).expect("free space of the temp dir");
    let reserve = free.saturating_sub(400 << 20);
    let a = start(None, reserve);
    let b = start(Some(&a), reserve);
    let c = start(Some(&a), reserve);
    let nodes = [&a, &b, &c];
    wait_for_ring(&nodes, 3).await;
    let capacities_before = capacities(&a).await;
    let mut changes_before = Vec::new();
    for node in nodes {
        changes_before.push(metric(node, "shoal_ring_changes_total").await);
    }

    let mut refused = false;
    let mut stored = 0;
    for i in 0..400u64 {
        match nodes[i as usize % 3].client().put_bytes(&format!("/fill/{i}"), pseudo_random_bytes(i, 1 << 20)).await {
            Ok(_) => stored += 1,
            Err(ClientError::Api { status: 507, .. }) => {
                refused = true;
                break;
            }
            Err(err) => panic!("upload {i}: {err}"),
        }
    }
    assert!(refused, "the disks filled up and writes were refused with 507");
    assert!(stored >= 20, "{stored} uploads went in before the disks were full");
    // Past one usage refresh (10 s): the records republished their disk use.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let status = a.client().status().await.expect("status");
    assert!(status.members.iter().all(|m| m.disk_used_bytes > 0), "disk use was republished: {:?}", status.members);
    assert_eq!(capacities(&a).await, capacities_before, "capacities are stable");
    assert!(capacities_before.iter().all(|(_, capacity)| *capacity == 1 << 30), "{capacities_before:?}");
    for (node, before) in nodes.iter().zip(changes_before) {
        assert_eq!(metric(node, "shoal_ring_changes_total").await, before, "no ring change while filling");
    }
    // Reads still work on full disks.
    assert_eq!(b.client().get_bytes("/fill/0").await.expect("read on a full cluster"), pseudo_random_bytes(0, 1 << 20));
}
