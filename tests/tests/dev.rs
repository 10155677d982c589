//! `shoal dev`: one command starts a local cluster whose nodes find each other and share
//! files, and Ctrl-C stops it cleanly, leaving no data behind.
// Harness code: waiting on a real process reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_node::api::Status;
use shoal_tests::{free_port_range, pseudo_random_bytes, shoal_binary, shoal_cli};

/// How long the cluster may take to start and converge, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `shoal dev`, its stdout and stderr collected as they come; killed when dropped,
/// even when the test fails.
struct DevProcess {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    /// The temporary data directory it printed, once seen.
    data_dir: Option<PathBuf>,
}

impl DevProcess {
    fn start(args: &[&str]) -> DevProcess {
        let mut child = Command::new(shoal_binary())
            .arg("dev")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal dev");
        let output = Arc::new(Mutex::new(String::new()));
        let collect = |stream: Box<dyn Read + Send>, label: &'static str| {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    output.push_str(label);
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        };
        if let Some(stdout) = child.stdout.take() {
            collect(Box::new(stdout), "");
        }
        if let Some(stderr) = child.stderr.take() {
            collect(Box::new(stderr), "[stderr] ");
        }
        DevProcess { child: Some(child), output, data_dir: None }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Starts `shoal dev --nodes N` on a range of ports that was free and waits until it
    /// prints its data directory. Should another process take one of the ports before `shoal
    /// dev` binds it, another range is tried, a few times at most.
    fn start_on_free_ports(nodes: u16) -> (DevProcess, u16) {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let base = free_port_range(2 * nodes);
            let mut dev = DevProcess::start(&["--nodes", &nodes.to_string(), "--port-base", &base.to_string()]);
            match dev.wait_for_line("data dir: ", START_TIMEOUT) {
                Some(data_dir) => {
                    dev.data_dir = Some(PathBuf::from(data_dir));
                    return (dev, base);
                }
                None if dev.output().contains("is not free") => {
                    println!("a port from {base} was taken meanwhile; trying another range:\n{}", dev.output());
                }
                None => panic!("shoal dev exited while starting; output:\n{}", dev.output()),
            }
        }
        panic!("shoal dev found a port taken in {ATTEMPTS} ranges in a row");
    }

    /// The rest of the first stdout line starting with `prefix`, waiting for it at most
    /// `limit`; `None` if the process exits first.
    fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(rest) = self.output().lines().find_map(|line| line.strip_prefix(prefix)) {
                return Some(rest.to_string());
            }
            if self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some()) {
                // Give the reader threads a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
            assert!(Instant::now() < deadline, "no {prefix:?} line within {limit:?}; output:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, as Ctrl-C sends, then waits (at most `limit`) for the exit.
    fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "shoal dev still running {limit:?} after SIGINT; output:\n{}", {
                self.output()
            });
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // Killed, it could not remove its temporary directory.
            if let Some(dir) = &self.data_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- output of shoal dev ---\n{}", self.output());
        }
    }
}

/// Polls `shoal status` on `url` until it shows `count` members alive, each owning part of
/// its ring (so that node has joined and serves requests), or panics after `limit`.
fn wait_until_members_alive(dev: &DevProcess, url: &str, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let output = shoal_cli(url, &["--json", "status"]);
        let last = if output.status.success() {
            let status: Status = serde_json::from_slice(&output.stdout).expect("status JSON");
            let alive = status
                .members
                .iter()
                .filter(|m| m.state == "alive" && !m.http_addr.is_empty() && m.ring_share_percent > 0.0)
                .count();
            if status.members.len() == count && alive == count {
                return;
            }
            format!("{:#?}", status.members)
        } else {
            String::from_utf8_lossy(&output.stderr).into_owned()
        };
        assert!(
            Instant::now() < deadline,
            "{url} did not see {count} members alive within {limit:?}; last view:\n{last}\noutput:\n{}",
            dev.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dev_runs_a_three_node_cluster_that_shares_files_and_stops_cleanly_on_ctrl_c() {
    let (mut dev, base) = DevProcess::start_on_free_ports(3);
    let data_dir = dev.data_dir.clone().expect("printed");
    assert!(data_dir.is_dir(), "{} should exist while the cluster runs", data_dir.display());
    // The banner ends with this line; everything above it has arrived once it has.
    dev.wait_for_line("Ctrl-C stops every node.", START_TIMEOUT).expect("the whole banner");
    let banner = dev.output();
    for i in 0..3u16 {
        let (http, cluster) = (base + 2 * i, base + 2 * i + 1);
        assert!(banner.contains(&format!("http://127.0.0.1:{http}  cluster 127.0.0.1:{cluster}")), "{banner}");
        assert!(data_dir.join(format!("node-{i}")).is_dir(), "node {i} has its own data directory");
    }
    let node0 = format!("http://127.0.0.1:{base}");
    let node2 = format!("http://127.0.0.1:{}", base + 4);
    assert!(banner.contains(&format!("shoal --node {node2} get /hello/README.md -")), "{banner}");
    assert!(!banner.contains("warning"), "dev prints its addresses once every node is ready: {banner}");
    for i in 0..3u16 {
        wait_until_members_alive(&dev, &format!("http://127.0.0.1:{}", base + 2 * i), 3, START_TIMEOUT);
    }

    // Written through the first node, read back whole through the last: several blocks.
    let local = tempfile::tempdir().expect("tempdir");
    let file = local.path().join("data.bin");
    let content = pseudo_random_bytes(7, 2_500_000);
    std::fs::write(&file, &content).expect("write");
    let put = shoal_cli(&node0, &["put", file.to_str().expect("utf-8"), "/hello/data.bin"]);
    assert!(put.status.success(), "put: {}\noutput:\n{}", String::from_utf8_lossy(&put.stderr), dev.output());
    let get = shoal_cli(&node2, &["get", "/hello/data.bin", "-"]);
    assert!(get.status.success(), "get: {}\noutput:\n{}", String::from_utf8_lossy(&get.stderr), dev.output());
    assert!(get.stdout == content, "node 2 returned {} bytes, not the {} written", get.stdout.len(), content.len());

    let status = dev.interrupt(STOP_TIMEOUT);
    assert!(status.success(), "exit {status}; output:\n{}", dev.output());
    assert!(!data_dir.exists(), "{} should be removed on exit", data_dir.display());
    assert!(dev.output().contains(&format!("stopped; removed {}", data_dir.display())), "{}", dev.output());
}

#[test]
fn dev_names_the_busy_port_and_the_flag_to_change_it() {
    // The port may be taken between the check and the bind: then another pair.
    let (base, _holder) = (0..10)
        .find_map(|_| {
            let base = free_port_range(2);
            std::net::TcpListener::bind(("127.0.0.1", base + 1)).ok().map(|holder| (base, holder))
        })
        .expect("a free port to hold");
    let output = Command::new(shoal_binary())
        .args(["dev", "--nodes", "1", "--port-base", &base.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run shoal dev");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("port {}", base + 1)) && err.contains("--port-base"), "{err}");
}
