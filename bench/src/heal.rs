//! Heal throughput (docs/ARCHITECTURE.md §7): four nodes on loopback, N = 3. After 2 GiB of
//! 1 MiB files is written (the node to be wiped holds about 1.5 GiB of it), one node is killed, its data directory wiped (identity
//! kept, as after a disk swap) and restarted empty; the others refill it through
//! anti-entropy while a client keeps reading through the other three. Judged against the
//! node's durable per-block write ceiling measured in the same run, and the client's p99
//! without repair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use shoal_node::client::Client;
use shoal_tests::ShoalProcess;

use crate::ceilings::{self, MIB};
use crate::report::{Report, Verdict};
use crate::workload::{self, LargeFile};

/// Nodes in the cluster.
const NODES: usize = 4;
/// Client readers during the baseline and the heal.
const READERS: usize = 4;
/// How long the heal may take before the run gives up.
const HEAL_MAX: Duration = Duration::from_secs(1800);

/// Options of `heal`.
#[derive(Debug, clap::Args)]
pub struct HealArgs {
    /// 64 MiB instead of 1 GiB, for a smoke run (figures meaningless).
    #[arg(long)]
    quick: bool,
    /// MiB of 1 MiB files in the data set (at 2,048, the wiped node holds about 1.5 GiB).
    #[arg(long, default_value_t = 2048)]
    mib: usize,
    /// Extra flag for every `shoal serve` started (repeatable), such as
    /// `--node-arg=--repair-bytes-per-sec=268435456`.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
}

/// Runs the benchmark and prints the report.
pub async fn run(args: HealArgs) -> anyhow::Result<()> {
    let mib_total = if args.quick { 64 } else { args.mib };
    let mut report = Report::default();
    report.note(crate::cluster::machine_line());
    report.note(format!("load average at start: {}", crate::load_average()));
    let scratch = tempfile::tempdir()?;
    let chunk = shoal_tests::pseudo_random_bytes(1, MIB);
    let (dir, data) = (scratch.path().to_path_buf(), chunk.clone());
    let files = if args.quick { 128 } else { 1024 };
    let ceiling = tokio::task::spawn_blocking(move || ceilings::per_block_write(&dir, files, READERS, &data)).await??;
    report.info(
        format!("disk ceiling: {files} files of 1 MiB in the node's block pattern (write, fdatasync, rename, dir fsync), {READERS} threads"),
        format!("{ceiling:.0} MiB/s"),
    );

    let mut nodes = start(&args.node_arg).await?;
    let clients: Vec<Client> = nodes.iter().map(ShoalProcess::client).collect();
    let files = Arc::new(make_files(mib_total).await?);
    let started = Instant::now();
    workload::put_all(&clients[0], &files, 8).await.context("writing the data set")?;
    report.info(
        format!("data set: {} files of 1 MiB written (N = 3) in", files.len()),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    wait_quiet(&nodes).await?;
    let readers = Arc::new(clients[..NODES - 1].to_vec());
    let baseline = read_load(readers.clone(), files.clone(), Duration::from_secs(20), None).await?;
    report.info("client: 1 MiB GETs through 3 nodes, 4 readers, no repair: p50 / p99", baseline.summary());

    let wiped = NODES - 1;
    nodes[wiped].kill9();
    for sub in ["db", "blocks"] {
        std::fs::remove_dir_all(nodes[wiped].data_dir.join(sub)).with_context(|| format!("wiping {sub}"))?;
    }
    let before = repair_bytes(&nodes[..wiped]).await?;
    let restarted = Instant::now();
    // Waits (blocking this worker) until the node listens; the runtime has others.
    nodes[wiped].restart().context("restarting the wiped node")?;
    let heal = tokio::spawn(wait_healed(nodes.iter().map(ShoalProcess::url).collect()));
    let during = read_load(readers, files.clone(), HEAL_MAX, Some(heal)).await?;
    let healed_in = during.healed.context("the heal did not end")?;
    let after = repair_bytes(&nodes[..wiped]).await? + repair_bytes(&nodes[wiped..]).await?;
    let copied = after.saturating_sub(before);
    // What the wiped node holds again (its block files): the useful part of what was copied.
    let refilled = dir_bytes(&nodes[wiped].data_dir.join("blocks"));
    let rate = refilled as f64 / MIB as f64 / healed_in.as_secs_f64().max(1e-9);
    report.info(
        format!("heal: node {wiped} wiped and restarted; every partition back at 3 confirmed copies after"),
        format!(
            "{:.1} s ({} of block files back on it; {} copied by all exchanges)",
            healed_in.as_secs_f64(),
            crate::mib(refilled),
            crate::mib(copied)
        ),
    );
    report.row(
        "heal throughput vs the disk ceiling",
        format!("{rate:.0} MiB/s = {:.0} %", 100.0 * rate / ceiling),
        "≥ 70 %",
        Verdict::of(rate >= 0.7 * ceiling),
    );
    report.info("client during the heal: p50 / p99", during.summary());
    let (p99, base) = (during.p99(), baseline.p99());
    report.row(
        "client p99 during the heal vs without",
        format!("{:.1}×", p99.as_secs_f64() / base.as_secs_f64().max(1e-9)),
        "≤ 2×",
        Verdict::of(p99 <= base * 2),
    );
    report.info("restarted to healed, wall clock", format!("{:.1} s", restarted.elapsed().as_secs_f64()));
    println!("{}", report.markdown());
    Ok(())
}

/// Starts the four nodes and waits until they have formed one settled ring.
async fn start(extra: &[String]) -> anyhow::Result<Vec<ShoalProcess>> {
    let args = |seed: Option<&ShoalProcess>| {
        let mut args: Vec<String> = vec!["--gossip-preset".into(), "local".into()];
        if let Some(seed) = seed {
            args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
        }
        args.extend(extra.iter().cloned());
        args
    };
    let mut nodes = vec![crate::start_node(&args(None)).await?];
    for _ in 1..NODES {
        let node = crate::start_node(&args(Some(&nodes[0]))).await?;
        nodes.push(node);
    }
    let refs: Vec<&ShoalProcess> = nodes.iter().collect();
    shoal_tests::wait_for_ring(&refs, NODES).await;
    Ok(nodes)
}

async fn make_files(mib: usize) -> anyhow::Result<Vec<LargeFile>> {
    Ok(tokio::task::spawn_blocking(move || {
        let base = shoal_tests::pseudo_random_bytes(7, MIB);
        workload::make_files(&base, "/heal", 1 << 40, mib)
    })
    .await?)
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |meta| meta.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Block bytes the nodes' exchanges copied so far.
async fn repair_bytes(nodes: &[ShoalProcess]) -> anyhow::Result<u64> {
    let mut total = 0;
    for node in nodes {
        total += shoal_tests::metric(node, "shoal_repair_bytes_total").await;
    }
    Ok(total)
}

/// Waits until the nodes' durability accounts show every partition at N confirmed copies.
async fn wait_healed(urls: Vec<String>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let all = shoal_membership::PARTITIONS as u64;
    loop {
        let (mut partitions, mut full) = (0, 0);
        for url in &urls {
            let account = Client::new(url)?.status().await.ok().and_then(|status| status.durability);
            let account = account.unwrap_or_default();
            (partitions, full) = (partitions + account.partitions, full + account.full);
        }
        if partitions == all && full == all && start.elapsed() > Duration::from_secs(2) {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < HEAL_MAX, "not healed after {HEAL_MAX:?}: {full} of {partitions} full");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until no node reports a repair backlog or a partition short of copies.
async fn wait_quiet(nodes: &[ShoalProcess]) -> anyhow::Result<()> {
    let urls = nodes.iter().map(ShoalProcess::url).collect();
    wait_healed(urls).await.map(|_| ())
}

/// Latencies of a read load, and when the heal it ran alongside ended.
struct Reads {
    latencies: Vec<Duration>,
    healed: Option<Duration>,
}

impl Reads {
    fn p99(&self) -> Duration {
        self.latencies.get(self.latencies.len() * 99 / 100).copied().unwrap_or_default()
    }

    fn summary(&self) -> String {
        let p50 = self.latencies.get(self.latencies.len() / 2).copied().unwrap_or_default();
        format!(
            "{:.1} ms / {:.1} ms ({} reads)",
            p50.as_secs_f64() * 1e3,
            self.p99().as_secs_f64() * 1e3,
            self.latencies.len()
        )
    }
}

/// [`READERS`] readers GET random files of `files` through `clients` in turn, for `time`
/// or until `until` ends (whose result is returned with the latencies).
async fn read_load(
    clients: Arc<Vec<Client>>,
    files: Arc<Vec<LargeFile>>,
    time: Duration,
    until: Option<tokio::task::JoinHandle<anyhow::Result<Duration>>>,
) -> anyhow::Result<Reads> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..READERS {
        let (clients, files, stop) = (clients.clone(), files.clone(), stop.clone());
        readers.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = reader;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let file = &files[(i * 7919) % files.len()];
                let start = Instant::now();
                let bytes = clients[i % clients.len()].get_bytes(&file.path).await?;
                ensure!(bytes.len() == file.data.len(), "GET {} returned {} bytes", file.path, bytes.len());
                latencies.push(start.elapsed());
                i += READERS;
            }
            anyhow::Ok(latencies)
        });
    }
    let healed = match until {
        Some(heal) => Some(heal.await??),
        None => {
            tokio::time::sleep(time).await;
            None
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = readers.join_next().await {
        latencies.extend(done??);
    }
    latencies.sort();
    Ok(Reads { latencies, healed })
}
