//! Three real `shoal serve` processes replicating with N = 3, W = 2, R = 2: a file written
//! through one node reads back through another, a `kill -9` blocks nothing, and read repair
//! brings the restarted node up to date.
// Harness code: waiting on real processes reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use shoal_tests::{NodeOptions, ShoalProcess, metric, metric_sum, pseudo_random_bytes, wait_for_ring};

fn args(seed: Option<&ShoalProcess>) -> Vec<String> {
    let mut args = vec!["--gossip-preset", "local"].into_iter().map(String::from).collect::<Vec<_>>();
    if let Some(seed) = seed {
        args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
    }
    args
}

fn start(seed: Option<&ShoalProcess>) -> ShoalProcess {
    ShoalProcess::start(NodeOptions { args: args(seed), ..NodeOptions::default() }).expect("start shoal serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_replicate_survive_a_kill_and_repair_the_restarted_node() {
    let a = start(None);
    let mut b = start(Some(&a));
    let c = start(Some(&a));
    wait_for_ring(&[&a, &b, &c], 3).await;
    assert!(b.data_dir.join("members.json").exists(), "the members a node knows are saved");
    let status = c.client().status().await.expect("status");
    assert_eq!((status.replication.n, status.replication.w, status.replication.r), (3, 2, 2));

    // 50 MiB through A, back through C, byte for byte.
    let big = pseudo_random_bytes(50, 50 << 20);
    let stored = a.client().put_bytes("/big/file.bin", big.clone()).await.expect("put through A");
    assert_eq!(stored.size, big.len() as u64);
    let read = c.client().get_bytes("/big/file.bin").await.expect("get through C");
    assert!(read == big, "50 MiB read back through C differ");

    // kill -9 B: W = 2 and R = 2 still hold with A and C.
    b.kill9();
    let small = pseudo_random_bytes(7, 3 << 20);
    a.client().put_bytes("/after/kill.bin", small.clone()).await.expect("a write with one owner dead");
    assert_eq!(c.client().get_bytes("/after/kill.bin").await.expect("a read with one owner dead"), small);
    assert!(
        c.client().get_range("/big/file.bin", 1 << 20, (2 << 20) - 1).await.expect("range") == big[1 << 20..2 << 20]
    );
    a.client().delete_file("/big/file.bin").await.expect("a delete with one owner dead");

    // B comes back; it missed the write and the delete. Reads or anti-entropy repair it,
    // whichever comes first: B's read repairs, B's pulls, or A's and C's pushes since B came
    // back (only B lacked anything) count.
    let pushes = |node| metric_sum(node, "shoal_sync_repairs_total", "direction=\"pushed\"");
    let pushed_before = pushes(&a).await + pushes(&c).await;
    b.restart().expect("restart B");
    wait_for_ring(&[&a, &b, &c], 3).await;
    let repairs_before = metric(&b, "shoal_read_repairs_total").await;
    assert_eq!(b.client().get_bytes("/after/kill.bin").await.expect("read through B"), small);
    assert!(b.client().stat("/big/file.bin").await.is_err(), "the delete is seen through B");
    let start = Instant::now();
    loop {
        let read_repairs = metric(&b, "shoal_read_repairs_total").await - repairs_before;
        let pulled = metric_sum(&b, "shoal_sync_repairs_total", "direction=\"pulled\"").await;
        let pushed = (pushes(&a).await + pushes(&c).await).saturating_sub(pushed_before);
        if read_repairs + pulled + pushed >= 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "neither read repair nor anti-entropy repaired B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Proof that B now holds the record, its blocks and the tombstone itself: with A and C
    // gone, B restarted with no seed and without the member list it keeps (so it no longer
    // knows it belongs to a three-node cluster) forms a ring of one and serves only its own
    // copies.
    drop(a);
    drop(c);
    b.kill9();
    std::fs::remove_file(b.data_dir.join("members.json")).expect("B remembers its cluster");
    b.restart_with_args(args(None)).expect("restart B alone");
    assert_eq!(b.client().get_bytes("/after/kill.bin").await.expect("B alone has the repaired copy"), small);
    assert!(b.client().stat("/big/file.bin").await.is_err(), "B alone has the tombstone");
}
