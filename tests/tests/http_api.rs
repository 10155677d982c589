//! The HTTP API of one real `shoal serve` process, bad inputs included.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use shoal_tests::{NodeOptions, ShoalProcess, pseudo_random_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node() -> ShoalProcess {
    ShoalProcess::start(NodeOptions::default()).expect("start shoal serve")
}

async fn raw_status(node: &ShoalProcess, method: reqwest::Method, path_and_query: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path_and_query}", node.url()))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_with_stat_list_and_delete() {
    let node = node();
    let client = node.client();
    let content = pseudo_random_bytes(1, 2_500_000);
    let put = client.put_bytes("/docs/report.bin", content.clone()).await.expect("put");
    assert_eq!(put.size, content.len() as u64);
    assert_eq!(put.blake3, blake3::hash(&content).to_hex().to_string());

    assert_eq!(client.get_bytes("/docs/report.bin").await.expect("get"), content);
    let stat = client.stat("/docs/report.bin").await.expect("stat");
    assert_eq!((stat.size, stat.blake3.clone(), stat.version.clone()), (put.size, put.blake3.clone(), put.version));

    let root = client.list("/").await.expect("list /");
    assert_eq!(root.entries.iter().map(|e| (e.name.as_str(), e.kind.as_str())).collect::<Vec<_>>(), [("docs", "dir")]);
    let docs = client.list("/docs").await.expect("list /docs");
    assert_eq!(docs.entries.len(), 1);
    assert_eq!((docs.entries[0].name.as_str(), docs.entries[0].size), ("report.bin", content.len() as u64));

    client.delete_file("/docs/report.bin").await.expect("delete");
    assert_eq!(client.get_bytes("/docs/report.bin").await.expect_err("gone").status(), Some(404));
    assert_eq!(client.delete_file("/docs/report.bin").await.expect_err("already gone").status(), Some(404));
    assert!(client.list("/docs").await.expect("list").entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_gets_206_with_exactly_those_bytes() {
    let node = node();
    let client = node.client();
    // Several blocks, so ranges cross block boundaries.
    let content = pseudo_random_bytes(2, 3 * 1024 * 1024 + 17);
    client.put_bytes("/r", content.clone()).await.expect("put");
    for (start, end) in [(0u64, 0u64), (10, 20), (1_048_570, 1_048_590), (3 * 1024 * 1024, 3 * 1024 * 1024 + 16)] {
        let got = client.get_range("/r", start, end).await.expect("range");
        assert_eq!(got, &content[start as usize..=end as usize], "{start}-{end}");
    }
    let response = reqwest::Client::new()
        .get(format!("{}/v1/files/r", node.url()))
        .header("Range", "bytes=-5")
        .send()
        .await
        .expect("suffix range");
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes {}-{}/{}", content.len() - 5, content.len() - 1, content.len())
    );
    assert_eq!(response.bytes().await.expect("body"), &content[content.len() - 5..]);
    let response = reqwest::Client::new()
        .get(format!("{}/v1/files/r", node.url()))
        .header("Range", format!("bytes={}-", content.len() + 10))
        .send()
        .await
        .expect("bad range");
    assert_eq!(response.status().as_u16(), 416);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_file_round_trips_byte_for_byte() {
    let node = node();
    let client = node.client();
    let content = Bytes::from(pseudo_random_bytes(3, 100 * 1024 * 1024));
    let hash = blake3::hash(&content).to_hex().to_string();
    // Stream it in 256 KiB pieces, as a real upload arrives.
    let pieces: Vec<std::io::Result<Bytes>> = (0..content.len())
        .step_by(256 * 1024)
        .map(|at| Ok(content.slice(at..(at + 256 * 1024).min(content.len()))))
        .collect();
    let put =
        client.put_stream("/big", stream::iter(pieces), Some(content.len() as u64), Some(&hash)).await.expect("put");
    assert_eq!(put.blake3, hash);
    let got = client.get_bytes("/big").await.expect("get");
    assert!(got == content, "100 MiB differ after a round trip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_paths_are_refused_with_400_and_a_json_error() {
    let node = node();
    let too_long = format!("/v1/files/{}", "x".repeat(1100));
    for path in ["/v1/files/a/../b", "/v1/files/a//b", "/v1/files/a/./b", "/v1/files/nul%00byte", too_long.as_str()] {
        // Raw TCP, so no client normalises the path on the way.
        let mut stream = tokio::net::TcpStream::connect(node.http_addr).await.expect("connect");
        let request = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("{\"error\":"), "{path}: {answer}");
    }
    assert!(node.client().list("/").await.expect("list").entries.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_hash_mismatch_is_400_and_stores_nothing() {
    let node = node();
    let client = node.client();
    client.put_bytes("/f", &b"original"[..]).await.expect("put");
    let wrong = blake3::hash(b"something else").to_hex().to_string();
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"replacement"))]);
    let err = client.put_stream("/f", body, Some(11), Some(&wrong)).await.expect_err("mismatch");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("mismatch"), "{err}");
    assert_eq!(client.get_bytes("/f").await.expect("get"), b"original");
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let err = client.put_stream("/g", body, Some(1), Some("not-hex")).await.expect_err("bad header");
    assert_eq!(err.status(), Some(400));
    assert_eq!(client.stat("/g").await.expect_err("absent").status(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_leaves_the_previous_version() {
    let node = node();
    let client = node.client();
    client.put_bytes("/doc", &b"version one"[..]).await.expect("put");

    // Declare 10 MiB, send 3 MiB, hang up.
    let mut stream = tokio::net::TcpStream::connect(node.http_addr).await.expect("connect");
    let head = "PUT /v1/files/doc HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&pseudo_random_bytes(4, 3 * 1024 * 1024)).await.expect("part of the body");
    drop(stream);
    // The same through a chunked body whose stream fails halfway.
    let failing = stream::iter(vec![
        Ok(Bytes::from(pseudo_random_bytes(5, 2 * 1024 * 1024))),
        Err(std::io::Error::other("the client's disk failed")),
    ]);
    assert!(client.put_stream("/fresh", failing, None, None).await.is_err());

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.get_bytes("/doc").await.expect("get"), b"version one");
    assert_eq!(client.stat("/fresh").await.expect_err("never committed").status(), Some(404));
    let metrics = reqwest::get(format!("{}/metrics", node.url())).await.expect("metrics").text().await.expect("text");
    let aborted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("shoal_uploads_aborted_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("uploads_aborted metric");
    assert!(aborted >= 2, "both aborted uploads are counted: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_make_list_and_refuse_non_recursive_removal_when_not_empty() {
    let node = node();
    let client = node.client();
    assert!(client.mkdir("/projects/shoal").await.expect("mkdir").created);
    assert!(!client.mkdir("/projects/shoal").await.expect("again").created);
    client.put_bytes("/projects/shoal/notes.txt", &b"hi"[..]).await.expect("put");

    let (status, body) = raw_status(&node, reqwest::Method::DELETE, "/v1/dirs/projects").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not empty"), "{body}");
    let removed = client.remove_dir("/projects", true).await.expect("recursive");
    assert_eq!(removed.files_deleted, 1);
    assert_eq!(client.stat("/projects/shoal/notes.txt").await.expect_err("gone").status(), Some(404));
    assert_eq!(raw_status(&node, reqwest::Method::GET, "/v1/dirs/projects").await.0, 404);
    assert_eq!(raw_status(&node, reqwest::Method::DELETE, "/v1/dirs/projects").await.0, 404);

    client.put_bytes("/plain", &b"file"[..]).await.expect("put");
    assert_eq!(raw_status(&node, reqwest::Method::PUT, "/v1/dirs/plain").await.0, 409);
    assert_eq!(raw_status(&node, reqwest::Method::PUT, "/v1/files/plain/child").await.0, 409);
    assert_eq!(raw_status(&node, reqwest::Method::GET, "/v1/nothing-here").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_keeps_serving_reads_and_deletes() {
    // The capacity stands in for a full disk: the same check guards both (free space above the
    // reserve, and the configured capacity).
    let node = ShoalProcess::start(NodeOptions {
        args: vec!["--capacity-bytes".into(), (3 * 1024 * 1024).to_string()],
        ..NodeOptions::default()
    })
    .expect("start");
    let client = node.client();
    let kept = pseudo_random_bytes(6, 2 * 1024 * 1024);
    client.put_bytes("/kept", kept.clone()).await.expect("fits");
    let err = client.put_bytes("/more", pseudo_random_bytes(7, 2 * 1024 * 1024)).await.expect_err("full");
    assert_eq!(err.status(), Some(507), "{err}");
    // Without a declared length the refusal comes from the block writes instead.
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from(pseudo_random_bytes(8, 2 * 1024 * 1024)))]);
    let err = client.put_stream("/more", body, None, None).await.expect_err("full");
    assert_eq!(err.status(), Some(507), "{err}");
    // A fresh client: the refused upload's connection may have been closed mid-body.
    let missing = node.client().stat("/more").await.expect_err("nothing stored");
    assert_eq!(missing.status(), Some(404), "{missing}");
    assert_eq!(client.get_bytes("/kept").await.expect("reads keep working"), kept);
    client.delete_file("/kept").await.expect("deletes keep working");

    // And the disk-reserve path: a reserve larger than the disk refuses every upload.
    let reserved = ShoalProcess::start(NodeOptions {
        args: vec!["--disk-reserve-bytes".into(), u64::MAX.to_string()],
        ..NodeOptions::default()
    })
    .expect("start");
    let err = reserved.client().put_bytes("/x", &b"tiny"[..]).await.expect_err("reserve reached");
    assert_eq!(err.status(), Some(507), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_describe_the_node() {
    let node = node();
    let status = node.client().status().await.expect("status");
    assert_eq!(status.members.len(), 1);
    let me = &status.members[0];
    assert_eq!((me.node_id.as_str(), me.state.as_str()), (status.node_id.as_str(), "alive"));
    assert_eq!(me.http_addr, node.http_addr.to_string());
    assert_eq!(me.cluster_addr, node.cluster_addr.to_string());
    // The configured quorum (defaults); a node alone keeps its one copy.
    assert_eq!((status.replication.n, status.replication.w, status.replication.r), (3, 2, 2));
    assert!((me.ring_share_percent - 100.0).abs() < 1e-6, "alone, it owns the whole ring: {me:?}");
    let metrics = reqwest::get(format!("{}/metrics", node.url())).await.expect("metrics").text().await.expect("text");
    // The harness polls /v1/status until the node answers, so the count is at least ours.
    assert!(
        metrics.contains("shoal_http_requests_total{method=\"GET\",route=\"/v1/status\",status=\"200\"} "),
        "{metrics}"
    );
    assert!(metrics.contains("shoal_disk_available_bytes"), "{metrics}");
}
