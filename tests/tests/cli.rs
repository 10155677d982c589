//! The `shoal` command line against a real node.

use std::io::Write;
use std::process::{Command, Stdio};

use shoal_tests::{NodeOptions, ShoalProcess, pseudo_random_bytes, shoal_binary, shoal_cli};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// A failure: non-zero exit and exactly one line on stderr that says what went wrong.
#[track_caller]
fn assert_one_line_error(output: &std::process::Output, mentions: &str) {
    assert!(!output.status.success(), "should fail: {}", stdout(output));
    let err = stderr(output);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("shoal: ") && err.contains(mentions), "{err}");
}

#[test]
fn put_get_stat_ls_mkdir_and_rm_work_from_the_command_line() {
    let node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("photo.jpg");
    let content = pseudo_random_bytes(11, 1_500_000);
    std::fs::write(&local, &content).expect("write");

    let put = node.cli(&["put", local.to_str().expect("utf-8"), "/albums/2024/photo.jpg"]);
    assert_ok(&put);
    assert!(stdout(&put).contains("/albums/2024/photo.jpg"), "{}", stdout(&put));

    let back = dir.path().join("back.jpg");
    assert_ok(&node.cli(&["get", "/albums/2024/photo.jpg", back.to_str().expect("utf-8")]));
    assert_eq!(std::fs::read(&back).expect("read"), content);
    let to_stdout = node.cli(&["get", "albums/2024/photo.jpg", "-"]);
    assert_ok(&to_stdout);
    assert_eq!(to_stdout.stdout, content);

    let stat = node.cli(&["stat", "/albums/2024/photo.jpg", "--json"]);
    assert_ok(&stat);
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("json");
    assert_eq!(stat["size"], 1_500_000);
    assert_eq!(stat["blake3"], blake3::hash(&content).to_hex().to_string());

    assert_ok(&node.cli(&["mkdir", "/albums/empty"]));
    let ls = node.cli(&["ls", "/albums"]);
    assert_ok(&ls);
    assert!(stdout(&ls).contains("2024/") && stdout(&ls).contains("empty/"), "{}", stdout(&ls));
    let ls = node.cli(&["ls", "/albums/2024", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    assert_eq!(listing["entries"][0]["name"], "photo.jpg");
    assert_eq!(listing["entries"][0]["size"], 1_500_000);

    assert_one_line_error(&node.cli(&["rm", "/albums"]), "use `shoal rm -r`");
    assert_ok(&node.cli(&["rm", "/albums/2024/photo.jpg"]));
    assert_one_line_error(&node.cli(&["stat", "/albums/2024/photo.jpg"]), "no such file");
    assert_ok(&node.cli(&["rm", "-r", "/albums"]));
    let root = node.cli(&["ls", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&root.stdout).expect("json");
    assert_eq!(listing["entries"], serde_json::json!([]));
}

#[test]
fn put_reads_standard_input() {
    let node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let mut child = Command::new(shoal_binary())
        .args(["put", "-", "/from-stdin.txt"])
        .env("SHOAL_NODE", node.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"piped content\n").expect("write");
    assert_ok(&child.wait_with_output().expect("wait"));
    let got = node.cli(&["get", "/from-stdin.txt", "-"]);
    assert_eq!(got.stdout, b"piped content\n");
}

#[test]
fn failures_exit_non_zero_with_one_line_that_says_why() {
    let node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("never.bin");
    assert_one_line_error(&node.cli(&["get", "/missing.bin", target.to_str().expect("utf-8")]), "no such file");
    assert!(!target.exists(), "a failed get leaves no file behind");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "nor a partial one");

    let local = dir.path().join("x");
    std::fs::write(&local, b"x").expect("write");
    assert_one_line_error(&node.cli(&["put", local.to_str().expect("utf-8"), "/a/../b"]), "invalid path");
    assert_one_line_error(&node.cli(&["put", "/no/such/local/file", "/b"]), "put /no/such/local/file");

    // Nothing listens on this port.
    let nobody = format!("http://{}", shoal_tests::free_addr());
    assert_one_line_error(&shoal_cli(&nobody, &["status"]), "cannot reach the node");
}

#[test]
fn status_prints_a_row_per_member_and_json_on_request() {
    let node = ShoalProcess::start(NodeOptions::default()).expect("start");
    let table = node.cli(&["status"]);
    assert_ok(&table);
    let text = stdout(&table);
    assert!(text.contains("NODE") && text.contains("alive") && text.contains(&node.http_addr.to_string()), "{text}");
    let json = node.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(status["members"][0]["state"], "alive");
    assert_eq!(status["members"][0]["cluster_addr"], node.cluster_addr.to_string());
}

#[test]
fn serve_refuses_an_invalid_config_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "block_size_bytes = 12\n").expect("write");
    let output = Command::new(shoal_binary())
        .args(["serve", "--config", config.to_str().expect("utf-8"), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert_one_line_error(&output, "block_size_bytes");
    std::fs::write(&config, "no_such_key = 1\n").expect("write");
    let output = Command::new(shoal_binary())
        .args(["serve", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no_such_key"), "{}", stderr(&output));
}
