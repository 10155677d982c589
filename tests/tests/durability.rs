//! What survives a crash of a real process: kill -9 during uploads, SIGTERM during an upload.
// End-to-end tests drive real processes from the outside: spawning client tasks and reading
// the wall clock are part of the harness, not protocol logic.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use shoal_tests::{NodeOptions, ShoalProcess, pseudo_random_bytes};

/// The content of upload `i` of writer `w`: sizes from one small block to several blocks.
fn content(w: u64, i: u64) -> Bytes {
    let size = [3_000, 70_000, 1_048_576, 2_500_000][(i % 4) as usize];
    Bytes::from(pseudo_random_bytes(w * 1_000_000 + i, size))
}

/// The body as a stream of 64 KiB pieces that records when its last piece was handed over:
/// until then the node cannot have the whole body, so the file must not become visible.
fn tracked_body(content: Bytes, complete: Arc<AtomicBool>) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let pieces: Vec<Bytes> =
        (0..content.len()).step_by(65_536).map(|at| content.slice(at..(at + 65_536).min(content.len()))).collect();
    let count = pieces.len();
    stream::iter(pieces.into_iter().enumerate().map(move |(index, piece)| {
        if index + 1 == count {
            complete.store(true, Ordering::SeqCst);
        }
        Ok(piece)
    }))
}

#[derive(Debug)]
struct Attempt {
    path: String,
    content: Bytes,
    acknowledged: bool,
    body_complete: Arc<AtomicBool>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_uploads_survive_kill_9_and_unfinished_ones_never_appear() {
    let mut node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let node_id = node.client().status().await.expect("status").node_id;
    let mut attempts: Vec<Attempt> = Vec::new();
    for round in 0..3u64 {
        let client = node.client();
        let writers: Vec<_> = (0..6u64)
            .map(|w| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0.. {
                        let (path, content) = (format!("/crash/r{round}/w{w}/{i}"), content(round * 10 + w, i));
                        let body_complete = Arc::new(AtomicBool::new(false));
                        let body = tracked_body(content.clone(), body_complete.clone());
                        let hash = blake3::hash(&content).to_hex().to_string();
                        let result = client.put_stream(&path, body, Some(content.len() as u64), Some(&hash)).await;
                        let acknowledged = result.is_ok();
                        mine.push(Attempt { path, content, acknowledged, body_complete });
                        if !acknowledged {
                            break; // the node is gone
                        }
                    }
                    mine
                })
            })
            .collect();
        // Let the writers get going, then crash the node under them.
        tokio::time::sleep(Duration::from_millis(800 + round * 400)).await;
        node.kill9();
        for writer in writers {
            attempts.extend(writer.await.expect("writer"));
        }
        node.restart().expect("restart");

        let client = node.client();
        assert_eq!(client.status().await.expect("status").node_id, node_id, "the node id survives restarts");
        let mut acknowledged = 0;
        for attempt in &attempts {
            let read = client.get_bytes(&attempt.path).await;
            if attempt.acknowledged {
                acknowledged += 1;
                let got = read.unwrap_or_else(|err| panic!("acknowledged {} lost: {err}", attempt.path));
                assert!(got == attempt.content, "acknowledged {} changed", attempt.path);
            } else if !attempt.body_complete.load(Ordering::SeqCst) {
                let err = read.expect_err("a file whose body never fully left the client cannot exist");
                assert_eq!(err.status(), Some(404), "{}: {err}", attempt.path);
            } else if let Ok(got) = read {
                // Sent in full but unanswered: in doubt, so either absent or whole.
                assert!(got == attempt.content, "in-doubt {} is torn", attempt.path);
            }
        }
        assert!(acknowledged > 0, "round {round}: some uploads should have been acknowledged before the kill");
        eprintln!("round {round}: {} attempts so far, {acknowledged} acknowledged, all intact", attempts.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_upload_in_flight_finish_then_exits_cleanly() {
    let node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let client = node.client();
    let content = Bytes::from(pseudo_random_bytes(99, 3 * 1024 * 1024));
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let hash = blake3::hash(&content).to_hex().to_string();
    let upload = {
        let (client, hash) = (client.clone(), hash.clone());
        let size = content.len() as u64;
        tokio::spawn(async move { client.put_stream("/in-flight", body, Some(size), Some(&hash)).await })
    };
    tx.send(Ok(content.slice(..1024 * 1024))).await.expect("first part");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::task::spawn_blocking(move || {
        let mut node = node;
        let status = node.terminate(Duration::from_secs(20));
        (node, status)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(Ok(content.slice(1024 * 1024..))).await.expect("rest");
    drop(tx);

    let stored = upload.await.expect("task").expect("the upload in flight completes");
    assert_eq!(stored.blake3, hash);
    let (mut node, status) = stopping.await.expect("join");
    let status = status.expect("exits after SIGTERM");
    assert!(status.success(), "graceful exit, got {status}; log:\n{}", node.log_text());
    assert!(node.log_text().contains("shoal node stopped"), "{}", node.log_text());

    node.restart().expect("restart");
    assert!(node.client().get_bytes("/in-flight").await.expect("get") == content);
}
