//! Five real `shoal serve` processes gossiping on loopback: they find each other from one
//! seed, and `shoal status` tells the truth through a crash, a restart and a graceful leave.
// Harness code: waiting on real processes reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use shoal_membership::{MembershipConfig, Preset};
use shoal_node::api::Status;
use shoal_tests::{NodeOptions, ShoalProcess};

fn local_node(seed: Option<&ShoalProcess>) -> ShoalProcess {
    let mut args = vec!["--gossip-preset".to_string(), "local".to_string()];
    if let Some(seed) = seed {
        args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
    }
    ShoalProcess::start(NodeOptions { args, ..NodeOptions::default() }).expect("start shoal serve")
}

async fn status(node: &ShoalProcess) -> Status {
    node.client().status().await.expect("status")
}

/// The state of member `of` in `observer`'s view, with its generation.
async fn state_of(observer: &ShoalProcess, of: &str) -> Option<(String, u64)> {
    status(observer).await.members.into_iter().find(|m| m.node_id == of).map(|m| (m.state, m.generation))
}

/// Polls until `check` holds for every observer, or panics after `limit`. Returns how long it
/// took.
async fn wait_until<F>(observers: &[&ShoalProcess], limit: Duration, what: &str, check: F) -> Duration
where
    F: Fn(&Status) -> bool,
{
    let start = Instant::now();
    loop {
        let mut all = true;
        for observer in observers {
            all &= check(&status(observer).await);
        }
        if all {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let mut views = String::new();
            for observer in observers {
                views.push_str(&format!("{:#?}\n", status(observer).await.members));
            }
            panic!("{what}: not true within {limit:?}; views:\n{views}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_form_a_cluster_and_status_tracks_crash_restart_and_leave() {
    let seed = local_node(None);
    let mut nodes = vec![seed];
    for _ in 1..5 {
        let node = local_node(Some(&nodes[0]));
        nodes.push(node);
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for node in &nodes {
            ids.push(status(node).await.node_id);
        }
        ids
    };
    let everyone: Vec<&ShoalProcess> = nodes.iter().collect();
    let all_alive =
        |s: &Status| s.members.len() == 5 && s.members.iter().all(|m| m.state == "alive" && !m.http_addr.is_empty());
    wait_until(&everyone, Duration::from_secs(20), "all five see five alive members", all_alive).await;

    // The detection window of the local preset at this size (see MembershipConfig). Polling,
    // process scheduling on a small machine and the HTTP round trips add to it, so the
    // assertion allows twice the window: still far below what a missing detection would take.
    let expected = NonZeroU32::new(16).expect("non-zero");
    let window = MembershipConfig::new("shoal", Preset::Local, expected).detection_bound(5);

    // kill -9 the third node: the others mark it down.
    nodes[2].kill9();
    let crashed = ids[2].clone();
    let survivors: Vec<&ShoalProcess> = nodes.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, n)| n).collect();
    let took = wait_until(&survivors, window * 2, "the crashed node is down everywhere", |s| {
        s.members.iter().any(|m| m.node_id == crashed && m.state == "down")
    })
    .await;
    eprintln!("crash detected everywhere after {took:?} (window {window:?})");

    // Restart it: alive again everywhere, with a higher generation.
    let first_generation = state_of(&nodes[0], &crashed).await.expect("known").1;
    nodes[2].restart().expect("restart");
    let everyone: Vec<&ShoalProcess> = nodes.iter().collect();
    wait_until(&everyone, Duration::from_secs(20), "the restarted node is alive with a higher generation", |s| {
        s.members.iter().any(|m| m.node_id == crashed && m.state == "alive" && m.generation > first_generation)
    })
    .await;

    // SIGTERM the fourth node: it leaves gracefully, so the others show `left`, not `down`.
    let leaver = ids[3].clone();
    let status = nodes[3].terminate(Duration::from_secs(20)).expect("terminate");
    assert!(status.success(), "graceful exit: {status}");
    let others: Vec<&ShoalProcess> = nodes.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, n)| n).collect();
    wait_until(&others, Duration::from_secs(10), "the node that left is `left` everywhere", |s| {
        s.members.iter().any(|m| m.node_id == leaver && m.state == "left")
    })
    .await;
    assert_eq!(state_of(&nodes[0], &leaver).await.map(|(state, _)| state).as_deref(), Some("left"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_foreign_cluster_packets_are_dropped_and_counted() {
    let node = local_node(None);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let foreign = {
        // A well-formed envelope of another cluster.
        let mut packet = b"SHL1".to_vec();
        packet.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        packet.push(0);
        packet
    };
    for packet in [b"garbage".to_vec(), vec![0u8; 1], vec![0xffu8; 3000], foreign, b"SHL1".to_vec()] {
        socket.send_to(&packet, node.cluster_addr).expect("send");
    }
    let start = Instant::now();
    loop {
        let metrics =
            reqwest::get(format!("{}/metrics", node.url())).await.expect("metrics").text().await.expect("text");
        let count = |reason: &str| {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(&format!("shoal_gossip_dropped_total{{reason=\"{reason}\"}} ")))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if count("malformed") >= 3 && count("oversized") >= 1 && count("foreign_cluster") >= 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "drops not counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the node still works.
    assert_eq!(status(&node).await.members.len(), 1);
}
