//! `shoal dev`: a local cluster of several nodes in one process, started with one command.
//!
//! Node `i` listens for HTTP on `127.0.0.1:(port_base + 2i)` and for cluster traffic on the
//! next port, so node 0 sits at the CLI's default address and `shoal put` needs no `--node`.
//! Nodes 1.. join through node 0. Data goes to a temporary directory removed on exit, unless
//! `--data-dir` names one to keep. SIGINT or SIGTERM stops every node gracefully; a second
//! signal exits without waiting.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::future::join_all;
use shoal_membership::Preset;

use crate::cli::DevArgs;
use crate::client::Client;
use crate::config::Config;
use crate::driver::Node;

/// Most nodes one `shoal dev` runs: each has its own store, gossip and RPC tasks.
pub const NODES_MAX: usize = 16;

/// How long the nodes get to see each other before the addresses are printed anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the nodes' views are polled while waiting.
const READY_POLL: Duration = Duration::from_millis(100);

/// The address the CLI talks to when given no `--node`.
const DEFAULT_CLIENT_HTTP_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7700);

/// The config of every node: ports from `args.port_base`, data under `data_root/node-<i>`,
/// seeded with node 0, local gossip timing; validated.
pub fn node_configs(args: &DevArgs, data_root: &Path) -> anyhow::Result<Vec<Config>> {
    if !(1..=NODES_MAX).contains(&args.nodes) {
        bail!("--nodes {} is outside 1..={NODES_MAX}", args.nodes);
    }
    let last_port = u32::from(args.port_base) + 2 * args.nodes as u32 - 1;
    if args.port_base == 0 || last_port > u32::from(u16::MAX) {
        bail!(
            "--port-base {} does not fit {} nodes: they need ports {}..={last_port}, within 1..=65535",
            args.port_base,
            args.nodes,
            args.port_base
        );
    }
    let addr = |port: u32| SocketAddr::from((Ipv4Addr::LOCALHOST, port as u16));
    let seed = addr(u32::from(args.port_base) + 1);
    let mut configs = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let http_port = u32::from(args.port_base) + 2 * i as u32;
        let mut config = Config {
            data_dir: data_root.join(format!("node-{i}")),
            http_addr: addr(http_port),
            cluster_addr: addr(http_port + 1),
            seeds: if i == 0 { Vec::new() } else { vec![seed.to_string()] },
            gossip_preset: Preset::Local,
            ..Config::default()
        };
        if let Some(block_size_bytes) = args.block_size_bytes {
            config.block_size_bytes = block_size_bytes;
        }
        config.validate()?;
        configs.push(config);
    }
    Ok(configs)
}

/// Runs the cluster until SIGINT or SIGTERM, then stops every node and removes the temporary
/// data directory.
pub async fn run(args: &DevArgs) -> anyhow::Result<()> {
    // Listen before anything starts, so a signal during start-up is not lost.
    let mut signals = Signals::listen()?;
    let (temp_dir, data_root) = match &args.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("shoal-dev-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            let root = temp.path().to_path_buf();
            (Some(temp), root)
        }
    };
    let configs = node_configs(args, &data_root)?;
    check_ports_free(&configs, args.port_base).await?;

    let mut nodes = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        match Node::start(config.clone()).await {
            Ok(node) => nodes.push(node),
            Err(err) => {
                // Whatever started stops first, so the temporary directory can go.
                let _ = stop_all(nodes).await;
                let hint = if is_addr_in_use(&err) { "; choose other ports with --port-base" } else { "" };
                return Err(err.context(format!("node {i} did not start{hint}")));
            }
        }
    }

    let not_ready = tokio::select! {
        not_ready = wait_until_ready(&nodes) => not_ready,
        () = signals.recv() => return shut_down(nodes, temp_dir, &mut signals).await,
    };
    print_banner(&nodes, &configs, &data_root, temp_dir.is_some(), &not_ready);

    signals.recv().await;
    shut_down(nodes, temp_dir, &mut signals).await
}

/// Stops every node at once and removes the temporary directory; a second signal gives up
/// waiting.
async fn shut_down(nodes: Vec<Node>, temp_dir: Option<tempfile::TempDir>, signals: &mut Signals) -> anyhow::Result<()> {
    println!("stopping {}...", count(nodes.len(), "node"));
    tokio::select! {
        stopped = stop_all(nodes) => stopped?,
        () = signals.recv() => bail!("second signal: exiting without waiting for the nodes to stop"),
    }
    if let Some(temp_dir) = temp_dir {
        let path = temp_dir.path().to_path_buf();
        temp_dir.close().with_context(|| format!("cannot remove the temporary data directory {}", path.display()))?;
        println!("stopped; removed {}", path.display());
    } else {
        println!("stopped");
    }
    Ok(())
}

/// Stops the nodes concurrently; reports every node that did not stop cleanly.
async fn stop_all(nodes: Vec<Node>) -> anyhow::Result<()> {
    let results = join_all(nodes.into_iter().map(Node::stop)).await;
    let failures: Vec<String> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, result)| result.err().map(|err| format!("node {i}: {err:#}")))
        .collect();
    if !failures.is_empty() {
        bail!("not every node stopped cleanly: {}", failures.join("; "));
    }
    Ok(())
}

/// Binds every port once before any node starts, so a busy one is named with its node rather
/// than found halfway through start-up.
async fn check_ports_free(configs: &[Config], port_base: u16) -> anyhow::Result<()> {
    let last_port = configs.last().map_or(port_base, |config| config.cluster_addr.port());
    for (i, config) in configs.iter().enumerate() {
        let http = tokio::net::TcpListener::bind(config.http_addr).await.map(drop);
        // The cluster port carries gossip over UDP and RPC over TCP.
        let cluster = match tokio::net::TcpListener::bind(config.cluster_addr).await {
            Ok(_tcp) => tokio::net::UdpSocket::bind(config.cluster_addr).await.map(drop),
            Err(err) => Err(err),
        };
        for (result, addr, what) in [(http, config.http_addr, "HTTP"), (cluster, config.cluster_addr, "cluster")] {
            if let Err(err) = result {
                bail!(
                    "port {} (node {i}'s {what} port) is not free: {err}; is another shoal running? \
                     Choose other ports with --port-base (this cluster needs {port_base}..={last_port})",
                    addr.port()
                );
            }
        }
    }
    Ok(())
}

/// `1 node`, `3 nodes`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn is_addr_in_use(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Polls every node until each sees all of them alive and in its ring, so that each has
/// joined and serves requests, or [`READY_TIMEOUT`] passes. Returns the nodes not ready then.
async fn wait_until_ready(nodes: &[Node]) -> Vec<usize> {
    let clients: Vec<Option<Client>> =
        nodes.iter().map(|node| Client::new(&format!("http://{}", node.http_addr)).ok()).collect();
    let mut waiting: Vec<usize> = (0..nodes.len()).collect();
    let _ = tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            let mut still = Vec::new();
            for &i in &waiting {
                if !is_ready(clients[i].as_ref(), nodes.len()).await {
                    still.push(i);
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return;
            }
            tokio::time::sleep(READY_POLL).await;
        }
    })
    .await;
    waiting
}

/// Whether the node sees `count` members alive, each with a share of its ring (its placement
/// caught up with the membership, which is also when it starts serving).
async fn is_ready(client: Option<&Client>, count: usize) -> bool {
    let Some(client) = client else { return false };
    let Ok(status) = client.status().await else { return false };
    status.members.len() == count
        && status.members.iter().all(|m| m.state == "alive" && !m.http_addr.is_empty() && m.ring_share_percent > 0.0)
}

fn print_banner(nodes: &[Node], configs: &[Config], data_root: &Path, temporary: bool, not_ready: &[usize]) {
    let Some(first) = configs.first() else { return };
    let copies = if nodes.len() < first.replicas { " (fewer nodes than N: one copy on each)" } else { "" };
    println!(
        "shoal dev: {}, N={} W={} R={}{copies}, gossip preset local",
        count(nodes.len(), "node"),
        first.replicas,
        first.write_quorum,
        first.read_quorum
    );
    for (i, (node, config)) in nodes.iter().zip(configs).enumerate() {
        println!(
            "  node {i:<2} http://{}  cluster {}  data {}",
            node.http_addr,
            node.cluster_addr,
            config.data_dir.display()
        );
    }
    println!("data dir: {}", data_root.display());
    if temporary {
        println!("  temporary: removed when the cluster stops (--data-dir DIR keeps the data)");
    } else {
        println!("  kept after the cluster stops; a later run with the same --data-dir reuses it");
    }
    if !not_ready.is_empty() {
        let list: Vec<String> = not_ready.iter().map(usize::to_string).collect();
        println!(
            "warning: after {READY_TIMEOUT:?}, node(s) {} do not see all {} alive yet; `shoal status` shows why",
            list.join(", "),
            nodes.len()
        );
    }
    let first_url = format!("http://{}", nodes[0].http_addr);
    let put_node =
        if nodes[0].http_addr == DEFAULT_CLIENT_HTTP_ADDR { String::new() } else { format!("--node {first_url} ") };
    let last_url = nodes.last().map_or(first_url.clone(), |node| format!("http://{}", node.http_addr));
    println!();
    println!("Try it from another terminal (`shoal` is `cargo run -q --release --bin shoal --`):");
    println!("  shoal {put_node}put ./README.md /hello/README.md");
    println!("  shoal --node {last_url} get /hello/README.md -");
    println!("  shoal {put_node}status");
    println!();
    println!("Ctrl-C stops every node.");
}

/// SIGINT and SIGTERM, listened for from the start.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    fn listen() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// The next signal.
    #[cfg(unix)]
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// The next Ctrl-C.
    #[cfg(not(unix))]
    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn dev_args(argv: &[&str]) -> DevArgs {
        let cli = Cli::parse_from(["shoal", "dev"].iter().chain(argv));
        let Command::Dev(args) = cli.command else { panic!("dev") };
        args
    }

    #[test]
    fn nodes_get_consecutive_port_pairs_and_join_through_node_zero() {
        let configs = node_configs(&dev_args(&["--port-base", "9000"]), Path::new("/tmp/x")).expect("valid");
        assert_eq!(configs.len(), 3);
        for (i, config) in configs.iter().enumerate() {
            assert_eq!(config.http_addr.port(), 9000 + 2 * i as u16);
            assert_eq!(config.cluster_addr.port(), 9001 + 2 * i as u16);
            assert_eq!(config.data_dir, Path::new("/tmp/x").join(format!("node-{i}")));
            assert_eq!(config.gossip_preset, Preset::Local);
            assert_eq!(config.seeds, if i == 0 { vec![] } else { vec!["127.0.0.1:9001".to_string()] });
        }
    }

    #[test]
    fn the_default_puts_node_zero_at_the_clients_default_address() {
        let configs = node_configs(&dev_args(&[]), Path::new("d")).expect("valid");
        assert_eq!(configs[0].http_addr, DEFAULT_CLIENT_HTTP_ADDR);
        assert_eq!(configs[0].quorum(), Config::default().quorum());
    }

    #[test]
    fn ports_past_65535_and_bad_block_sizes_are_refused() {
        let err = node_configs(&dev_args(&["--port-base", "65530", "--nodes", "4"]), Path::new("d"))
            .expect_err("too high")
            .to_string();
        assert!(err.contains("--port-base"), "{err}");
        let err =
            node_configs(&dev_args(&["--block-size-bytes", "10"]), Path::new("d")).expect_err("too small").to_string();
        assert!(err.contains("block_size_bytes"), "{err}");
        assert!(Cli::try_parse_from(["shoal", "dev", "--nodes", "17"]).is_err());
        assert!(Cli::try_parse_from(["shoal", "dev", "--nodes", "0"]).is_err());
    }
}
