//! The end-to-end harness: real `shoal` processes on loopback ports, killed when dropped (even
//! when a test fails), plus helpers to run the CLI.
//!
//! The binary is built once per test process with `escargot` (the `tests` crate is not the
//! package that owns the binary, so `CARGO_BIN_EXE_shoal` does not exist here).
// Harness code, not protocol logic: it reads the wall clock to bound its waits.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_node::client::Client;

/// How long a node may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `shoal` binary, built on first use with the profile the tests run under.
pub fn shoal_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let build = escargot::CargoBuild::new().package("shoal-node").bin("shoal").current_release().run();
        match build {
            Ok(run) => run.path().to_path_buf(),
            Err(err) => panic!("cannot build the shoal binary: {err}"),
        }
    })
}

/// A loopback address whose port was free a moment ago, for both TCP and UDP (the cluster
/// port carries both).
pub fn free_addr() -> SocketAddr {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = tcp.local_addr().expect("local addr");
        if UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// Extra `shoal serve` settings for a test node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Extra flags passed to `shoal serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `shoal serve` process with its own data directory.
pub struct ShoalProcess {
    child: Option<Child>,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// Cluster address.
    pub cluster_addr: SocketAddr,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    log: PathBuf,
    options: NodeOptions,
    _dir: tempfile::TempDir,
}

impl ShoalProcess {
    /// Starts a node on fresh ports and a fresh data directory; waits until it answers.
    pub fn start(options: NodeOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut node = ShoalProcess {
            child: None,
            http_addr: free_addr(),
            cluster_addr: free_addr(),
            data_dir: dir.path().join("data"),
            log: dir.path().join("shoal.log"),
            options,
            _dir: dir,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(shoal_binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(self.http_addr.to_string())
            .arg("--cluster-addr")
            .arg(self.cluster_addr.to_string())
            .args(&self.options.args)
            .envs(self.options.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(command.spawn().context("spawn shoal serve")?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/v1/status", self.url());
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("shoal serve exited with {status} while starting; log:\n{}", self.log_text());
            }
            let answered = std::net::TcpStream::connect_timeout(&self.http_addr, Duration::from_millis(200)).is_ok()
                && http_get_ok(&url);
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "shoal serve did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.http_addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://<http_addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// A client of this node.
    pub fn client(&self) -> Client {
        Client::new(&self.url()).expect("client")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the node logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most `timeout`) for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("not running") };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("shoal serve did not exit within {timeout:?} of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on the same ports and data directory, with these extra flags
    /// from now on.
    pub fn restart_with_args(&mut self, args: Vec<String>) -> anyhow::Result<()> {
        self.options.args = args;
        self.restart()
    }

    /// Starts the node again on the same ports and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Runs the `shoal` CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        shoal_cli(&self.url(), args)
    }
}

impl Drop for ShoalProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- log of the node on {} ---\n{}", self.http_addr, self.log_text());
        }
    }
}

/// Runs `shoal ARGS` against the node at `node_url`, capturing its output.
pub fn shoal_cli(node_url: &str, args: &[&str]) -> Output {
    Command::new(shoal_binary())
        .args(args)
        .env("SHOAL_NODE", node_url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the shoal CLI")
}

/// A minimal blocking GET that reports whether the answer was 200, without an async runtime.
fn http_get_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate and a failure
/// reproduces.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A base port such that `count` consecutive loopback ports from it were free a moment ago,
/// for both TCP and UDP (for `shoal dev --port-base`). Picked in 20000..32000, below Linux's
/// ephemeral range where [`free_addr`] finds its ports, so tests running at once do not
/// collide.
pub fn free_port_range(count: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const ATTEMPTS: usize = 1000;
    let free = |port: u16| {
        TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
    };
    for _ in 0..ATTEMPTS {
        // Every RandomState has fresh keys: a random number without an RNG crate.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let base = 20_000 + (random % 12_000) as u16;
        if (base..base.saturating_add(count)).all(free) {
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports found in {ATTEMPTS} attempts");
}

/// Waits until every node has every other alive in its ring, no partition settling (the
/// transition confirmed by anti-entropy) and coordinates.
pub async fn wait_for_ring(nodes: &[&ShoalProcess], size: usize) {
    let start = Instant::now();
    loop {
        let mut ready = true;
        for node in nodes {
            let status = node.client().status().await.expect("status");
            let in_ring = status.members.iter().filter(|m| m.state == "alive" && m.ring_share_percent > 0.0).count();
            ready &= in_ring == size && status.settling_partitions == 0 && status.not_coordinating.is_none();
        }
        if ready {
            return;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let mut views = String::new();
            for node in nodes {
                let status = node.client().status().await;
                views.push_str(&format!("{:#?}\n", status.map(|s| (s.settling_partitions, s.members))));
            }
            panic!("the ring did not form and settle within 60 s:\n{views}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of a labelled counter's series in a node's `/metrics` whose labels contain
/// `label` (such as `direction="pulled"`), 0 if absent.
pub async fn metric_sum(node: &ShoalProcess, name: &str, label: &str) -> u64 {
    let url = format!("{}/metrics", node.url());
    let text = reqwest::get(&url).await.expect("metrics").text().await.expect("metrics body");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// A counter or gauge from a node's `/metrics`, 0 if absent.
pub async fn metric(node: &ShoalProcess, name: &str) -> u64 {
    let url = format!("{}/metrics", node.url());
    let text = reqwest::get(&url).await.expect("metrics").text().await.expect("metrics body");
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
