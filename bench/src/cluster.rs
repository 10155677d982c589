//! `shoal-bench cluster`: three `shoal serve` processes on loopback forming one cluster with
//! the default replication (N = 3, W = 2, R = 2), driven by closed-loop clients that spread
//! their requests over the three nodes round robin (any node coordinates any request).
//!
//! The three nodes share this machine's one disk and its cores, so every byte PUT is written
//! three times to the same device: the PUT ceiling is the durable sequential write bandwidth
//! divided by 3, measured in the same run.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use shoal_node::client::Client;
use shoal_tests::ShoalProcess;

use crate::ceilings::{self, MIB};
use crate::procfs::{Meter, Pid, status_bytes};
use crate::report::{Report, Verdict};
use crate::ring::RingPlan;
use crate::workload::{self, LargeFile};

/// Nodes in the cluster, and copies of every block and record (the node's default N).
const NODES: usize = 3;
/// Concurrent requests of every judged run.
const CONCURRENCY: usize = 16;
/// Target: 1 MiB PUTs reach this fraction of the durable sequential write ceiling ÷ 3.
const PUT_FRACTION_OF_CEILING_MIN: f64 = 0.80;
/// Target: 99 % of 1 MiB PUTs are acknowledged within this.
const PUT_P99_MAX: Duration = Duration::from_millis(50);
/// Target: GETs of cached 1 MiB files stream at least this many MiB/s in total.
const GET_MIB_PER_SEC_MIN: f64 = 1024.0;
/// Target: half of the GETs deliver their first body byte within this.
const GET_TTFB_P50_MAX: Duration = Duration::from_millis(2);
/// Target: durable 1 KiB PUTs per second.
const SMALL_PUTS_PER_SEC_MIN: f64 = 3000.0;
/// A time bound that never ends a run (its count does).
const UNBOUNDED: Duration = Duration::from_secs(24 * 3600);
/// How long the three nodes may take to see each other in their rings.
const RING_FORM_MAX: Duration = Duration::from_secs(60);
/// Counters summed over the nodes, reported per phase when they move and at the end.
const HEALTH_COUNTERS: [&str; 4] = [
    "shoal_writes_in_doubt_total",
    "shoal_read_repairs_total",
    "shoal_blocks_unavailable_total",
    "shoal_rpc_connections_refused_total",
];

/// Options of `cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Short runs for a smoke test (about a minute); the figures mean little.
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections (comma-separated); default all. `get` without `put` first
    /// writes its files, unmeasured.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Extra flag for every `shoal serve` started (repeatable), such as
    /// `--node-arg=--upload-blocks-in-flight-max=8`.
    #[arg(long, allow_hyphen_values = true)]
    pub node_arg: Vec<String>,
}

/// The parts of `cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Durable sequential write, the node's block pattern, small durable writes, loopback TCP.
    Ceilings,
    /// 1 MiB PUTs.
    Put,
    /// GETs of the 1 MiB files just written.
    Get,
    /// 1 KiB durable PUTs.
    Small,
    /// Preference-list lookups and ring rebuilds, in process (no nodes).
    Ring,
}

/// How much each part does. Runs are bounded by a count and by a time, whichever comes first.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The sequential durable write ceiling writes this many MiB per run.
    sequential_mib: usize,
    /// Sequential runs before the cluster runs, and again after.
    sequential_repeats: usize,
    /// Files of 1 MiB in the node's block pattern, from [`CONCURRENCY`] threads.
    per_block_files: usize,
    /// Duration of each small durable write ceiling.
    small_ceiling_time: Duration,
    /// Bytes pushed through loopback TCP.
    loopback_mib: usize,
    /// 1 MiB PUTs of the judged run, at most.
    put_files_max: usize,
    /// Duration of the judged PUT run, at most.
    put_time_max: Duration,
    /// 1 MiB PUTs of the page-cache-recycled diagnostic.
    put_recycled_files: usize,
    /// 1 MiB PUTs of the one-at-a-time diagnostic, at most.
    put_serial_files_max: usize,
    /// Duration of the one-at-a-time diagnostic, at most.
    put_serial_time_max: Duration,
    /// GETs, at most.
    get_ops_max: u64,
    /// Duration of the judged GET run, at most.
    get_time_max: Duration,
    /// Duration of the one-at-a-time GET diagnostic, at most.
    get_serial_time_max: Duration,
    /// Size of a small file.
    small_bytes: usize,
    /// Small PUTs of the judged run, at most.
    small_ops_max: u64,
    /// Duration of the judged small-PUT run, at most.
    small_time_max: Duration,
    /// Duration of the one-at-a-time small-PUT diagnostic, at most.
    small_serial_time_max: Duration,
    /// The ring micro-benchmark.
    ring: RingPlan,
}

impl Plan {
    /// The full plan, or the `--quick` one.
    fn new(quick: bool) -> Self {
        let full = Plan {
            sequential_mib: 512,
            sequential_repeats: 3,
            per_block_files: 256,
            small_ceiling_time: Duration::from_secs(2),
            loopback_mib: 2048,
            put_files_max: 1024,
            put_time_max: Duration::from_secs(30),
            put_recycled_files: 256,
            put_serial_files_max: 128,
            put_serial_time_max: Duration::from_secs(5),
            get_ops_max: 8192,
            get_time_max: Duration::from_secs(10),
            get_serial_time_max: Duration::from_secs(3),
            small_bytes: 1024,
            small_ops_max: 30_000,
            small_time_max: Duration::from_secs(10),
            small_serial_time_max: Duration::from_secs(3),
            ring: RingPlan::new(false),
        };
        if !quick {
            return full;
        }
        Plan {
            sequential_mib: 64,
            sequential_repeats: 1,
            per_block_files: 32,
            small_ceiling_time: Duration::from_millis(500),
            loopback_mib: 256,
            put_files_max: 96,
            put_time_max: Duration::from_secs(3),
            put_recycled_files: 32,
            put_serial_files_max: 16,
            put_serial_time_max: Duration::from_secs(1),
            get_ops_max: 512,
            get_time_max: Duration::from_secs(2),
            get_serial_time_max: Duration::from_secs(1),
            small_ops_max: 1500,
            small_time_max: Duration::from_secs(3),
            small_serial_time_max: Duration::from_secs(1),
            ring: RingPlan::new(true),
            ..full
        }
    }
}

/// Which operation a worker of a closed loop runs next.
#[derive(Debug, Clone, Copy)]
struct OpIndex {
    /// The worker, in `0..workers`.
    worker: usize,
    /// Operations this worker started before this one.
    seq: u64,
    /// Operations all workers started before this one.
    global: u64,
}

impl OpIndex {
    /// The node this operation goes to: round robin over the cluster.
    fn node(self) -> usize {
        (self.global % NODES as u64) as usize
    }
}

/// What one operation reports besides its latency.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// File content bytes moved.
    bytes: u64,
    /// Time to the first body byte (GETs).
    ttfb: Option<Duration>,
    /// Time to the response's headers (GETs).
    headers: Option<Duration>,
}

/// What a closed-loop run achieved.
#[derive(Debug, Clone)]
struct LoadResult {
    /// Operations that succeeded.
    ops: u64,
    /// File content bytes they moved.
    bytes: u64,
    /// From the first request to the last answer.
    wall: Duration,
    /// Latency of each successful operation, sorted.
    latencies: Vec<Duration>,
    /// Time to first byte of each successful operation that measured it, sorted.
    ttfbs: Vec<Duration>,
    /// Time to the headers of each successful operation that measured it, sorted.
    headers: Vec<Duration>,
    /// `global` index of each successful operation.
    succeeded: Vec<u64>,
    /// Successful operations per second over the first and second half of the wall time.
    halves_ops_per_sec: (f64, f64),
    /// Operations that failed, and the first failure.
    errors: (u64, Option<String>),
}

impl LoadResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn mib_per_sec(&self) -> f64 {
        ceilings::mib_per_sec(self.bytes, self.wall)
    }
}

/// The value below which `percent` % of `sorted` lie.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        len => sorted[(len * percent / 100).min(len - 1)],
    }
}

/// `1.2 ms`.
fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// `workers` tasks each run `op` one call after another, until `ops_max` calls were started
/// in total or `time_max` has passed (calls in flight then finish and count).
async fn closed_loop<F, Fut>(workers: usize, ops_max: u64, time_max: Duration, op: F) -> anyhow::Result<LoadResult>
where
    F: Fn(OpIndex) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Sample>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + time_max;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            let mut done: Vec<(Duration, Duration, Sample, u64)> = Vec::new();
            let mut errors = (0u64, None::<String>);
            let mut seq = 0;
            while Instant::now() < deadline {
                let global = next.fetch_add(1, Ordering::Relaxed);
                if global >= ops_max {
                    break;
                }
                let sent = Instant::now();
                match op(OpIndex { worker, seq, global }).await {
                    Ok(sample) => {
                        let latency = sent.elapsed();
                        done.push((latency, sent.duration_since(start) + latency, sample, global));
                    }
                    Err(err) => {
                        errors.0 += 1;
                        errors.1.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
                seq += 1;
            }
            (done, errors)
        });
    }
    let (mut latencies, mut ttfbs, mut headers) = (Vec::new(), Vec::new(), Vec::new());
    let (mut finished_at, mut succeeded) = (Vec::new(), Vec::new());
    let (mut bytes, mut errors) = (0, (0, None));
    while let Some(joined) = tasks.join_next().await {
        let (done, (count, first)) = joined.context("a client task panicked")?;
        for (latency, at, sample, global) in done {
            latencies.push(latency);
            finished_at.push(at);
            ttfbs.extend(sample.ttfb);
            headers.extend(sample.headers);
            bytes += sample.bytes;
            succeeded.push(global);
        }
        errors.0 += count;
        if errors.1.is_none() {
            errors.1 = first;
        }
    }
    let wall = start.elapsed();
    latencies.sort();
    ttfbs.sort();
    headers.sort();
    succeeded.sort();
    let half = wall / 2;
    let first_half = finished_at.iter().filter(|at| **at <= half).count() as f64;
    let second_half = finished_at.len() as f64 - first_half;
    let half_secs = half.as_secs_f64().max(1e-9);
    Ok(LoadResult {
        ops: latencies.len() as u64,
        bytes,
        wall,
        latencies,
        ttfbs,
        headers,
        succeeded,
        halves_ops_per_sec: (first_half / half_secs, second_half / half_secs),
        errors,
    })
}

/// Three running nodes and a client of each.
struct Cluster {
    nodes: Vec<ShoalProcess>,
    clients: Arc<Vec<Client>>,
    pids: Vec<u32>,
    /// For raw GETs and metrics.
    http: reqwest::Client,
}

impl Cluster {
    /// Starts measuring a phase: CPU and disk writes of the nodes, and their health counters.
    async fn probe(&self, label: &str) -> anyhow::Result<Probe> {
        Ok(Probe {
            label: label.to_string(),
            counters: health_counters(&self.http, &self.nodes).await?,
            meter: Meter::start_all(label, &self.pids)?,
        })
    }
}

/// Readings at the start of a phase.
struct Probe {
    label: String,
    counters: Vec<(String, f64)>,
    meter: Meter,
}

impl Probe {
    /// Ends the phase, which moved `payload_bytes`: adds its resource use to the report, and
    /// a row for each health counter that moved.
    async fn finish(
        self,
        cluster: &Cluster,
        payload_bytes: u64,
        ticks: f64,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        report.phase(self.meter.finish(payload_bytes, ticks)?);
        let after = health_counters(&cluster.http, &cluster.nodes).await?;
        for ((name, before), (_, after)) in self.counters.iter().zip(after) {
            if after != *before {
                report.info(format!("{}: {name} went up by", self.label), format!("{}", after - before));
            }
        }
        Ok(())
    }
}

/// Flags of every node: fast gossip on loopback.
fn node_args(extra: &[String], seed: Option<&ShoalProcess>) -> Vec<String> {
    let mut args: Vec<String> = ["--gossip-preset", "local"].into_iter().map(String::from).collect();
    if let Some(seed) = seed {
        args.extend(["--seed".to_string(), seed.cluster_addr.to_string()]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// Starts A, then B and C seeded with A; waits until every node sees all three alive in its
/// ring, coordinates, and has no partition settling (the forming rings' transitions ended on
/// evidence).
async fn start_cluster(extra: &[String], report: &mut Report) -> anyhow::Result<Cluster> {
    let first = crate::start_node(&node_args(extra, None)).await?;
    let mut nodes = vec![first];
    for _ in 1..NODES {
        let args = node_args(extra, Some(&nodes[0]));
        nodes.push(crate::start_node(&args).await?);
    }
    let clients: Vec<Client> = nodes.iter().map(ShoalProcess::client).collect();
    let pids = nodes.iter().map(crate::node_pid).collect::<anyhow::Result<Vec<u32>>>()?;
    let start = Instant::now();
    loop {
        let mut shares = Vec::new();
        for client in &clients {
            let status = client.status().await.context("status")?;
            let in_ring: Vec<f64> = status
                .members
                .iter()
                .filter(|m| m.state == "alive" && m.ring_share_percent > 0.0)
                .map(|m| m.ring_share_percent)
                .collect();
            let settled = status.settling_partitions == 0 && status.not_coordinating.is_none();
            shares.push((status.replication, if settled { in_ring } else { Vec::new() }));
        }
        if shares.iter().all(|(_, in_ring)| in_ring.len() == NODES) {
            let (replication, in_ring) = &shares[0];
            let formatted: Vec<String> = in_ring.iter().map(|share| format!("{share:.1} %")).collect();
            report.note(format!(
                "cluster: {NODES} nodes formed a ring in {:.1} s; replication N = {}, W = {}, R = {}; primary ring shares seen by node A: {}",
                start.elapsed().as_secs_f64(),
                replication.n,
                replication.w,
                replication.r,
                formatted.join(", ")
            ));
            ensure!(replication.n as usize == NODES, "the nodes replicate {} times, not {NODES}", replication.n);
            break;
        }
        if start.elapsed() > RING_FORM_MAX {
            bail!("the ring did not form within {RING_FORM_MAX:?}: {shares:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Cluster { nodes, clients: Arc::new(clients), pids, http: reqwest::Client::builder().build()? })
}

/// The sum over the nodes of each counter of [`HEALTH_COUNTERS`] (labelled series added up).
async fn health_counters(http: &reqwest::Client, nodes: &[ShoalProcess]) -> anyhow::Result<Vec<(String, f64)>> {
    let mut sums = vec![0.0; HEALTH_COUNTERS.len()];
    for node in nodes {
        let text = http.get(format!("{}/metrics", node.url())).send().await?.text().await?;
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            for (name, sum) in HEALTH_COUNTERS.iter().zip(sums.iter_mut()) {
                let series = line.strip_prefix(name).filter(|rest| rest.starts_with([' ', '{']));
                if let Some(value) = series.and_then(|_| line.rsplit(' ').next()?.parse::<f64>().ok()) {
                    *sum += value;
                }
            }
        }
    }
    Ok(HEALTH_COUNTERS.iter().map(|name| name.to_string()).zip(sums).collect())
}

/// The machine: cores, CPU model, memory, kernel.
pub(crate) fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':'])))
        .unwrap_or("unknown CPU")
        .to_string();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!(
        "machine: {} cores ({model}), {memory}, kernel {}",
        crate::command_line("nproc", &[]),
        crate::command_line("uname", &["-r"])
    )
}

/// The durable sequential write ceiling, `plan.sequential_repeats` times.
async fn sequential_runs(dir: &Path, plan: Plan, chunk: &[u8]) -> anyhow::Result<Vec<f64>> {
    let mut runs = Vec::new();
    for _ in 0..plan.sequential_repeats {
        let (dir, data) = (dir.to_path_buf(), chunk.to_vec());
        runs.push(
            tokio::task::spawn_blocking(move || ceilings::sequential_write(&dir, plan.sequential_mib, &data)).await??,
        );
    }
    Ok(runs)
}

/// Runs the sections asked for and prints the report.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let runs = |section| args.only.is_empty() || args.only.contains(&section);
    let ticks = crate::procfs::clock_ticks_per_sec();
    let mut report = Report::default();
    let started = Instant::now();

    eprintln!("locating (building if needed) the shoal binary...");
    let binary = tokio::task::spawn_blocking(|| shoal_tests::shoal_binary().to_path_buf()).await?;
    eprintln!("shoal binary: {} (after {:.0} s)", binary.display(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    eprintln!("plan: {plan:?}; node args: {:?}", args.node_arg);
    // The target directory may be shared with other checkouts: say which binary ran.
    let built = std::fs::metadata(&binary)
        .and_then(|meta| meta.modified())
        .map(|time| format!("{:.0} s before the run", time.elapsed().unwrap_or_default().as_secs_f64()))
        .unwrap_or_else(|err| format!("unknown ({err})"));
    report.note(format!("shoal binary: {} (written {built})", binary.display()));
    report.note(machine_line());
    report.note(format!("load average at start: {}", crate::load_average()));

    // Same parent as the nodes' data directories (the system temp dir): same filesystem.
    let scratch = tempfile::tempdir()?;
    report.note(format!("scratch dir for ceilings: {} ({})", scratch.path().display(), crate::df_line(scratch.path())));
    let chunk = shoal_tests::pseudo_random_bytes(1, MIB);

    let mut sequential = Vec::new();
    let (mut loopback, mut small_ceiling) = (None, None);
    if runs(Section::Ceilings) {
        eprintln!("== ceilings");
        let measured = sequential_runs(scratch.path(), plan, &chunk).await?;
        report.info(
            format!(
                "disk: sequential write {} MiB in 1 MiB writes + one fdatasync, {} run(s) before the cluster runs",
                plan.sequential_mib, plan.sequential_repeats
            ),
            crate::format_runs(&measured),
        );
        sequential.extend(measured);
        let (dir, data) = (scratch.path().to_path_buf(), chunk.clone());
        let per_block = tokio::task::spawn_blocking(move || {
            ceilings::per_block_write(&dir, plan.per_block_files, CONCURRENCY, &data)
        })
        .await??;
        report.info(
            format!(
                "disk: {} files of 1 MiB, each write+fdatasync+rename+dir fsync (node's block pattern), {CONCURRENCY} threads",
                plan.per_block_files
            ),
            format!("{per_block:.0} MiB/s"),
        );
        for threads in [1, CONCURRENCY] {
            let dir = scratch.path().to_path_buf();
            let rate = tokio::task::spawn_blocking(move || {
                ceilings::small_durable_writes(&dir, threads, plan.small_bytes, plan.small_ceiling_time)
            })
            .await??;
            report.info(
                format!(
                    "disk: {} B appends each followed by fdatasync, {threads} thread(s) (a file each), {:.1} s",
                    plan.small_bytes,
                    plan.small_ceiling_time.as_secs_f64()
                ),
                format!("{rate:.0} /s"),
            );
            small_ceiling = Some(rate);
        }
        let tcp = ceilings::loopback_tcp(plan.loopback_mib).await?;
        report.info(format!("loopback TCP, {} MiB, 1 MiB writes", plan.loopback_mib), format!("{tcp:.0} MiB/s"));
        loopback = Some(tcp);
    }

    let mut put_judged = None;
    if runs(Section::Put) || runs(Section::Get) || runs(Section::Small) {
        eprintln!("== starting a {NODES}-node cluster");
        let cluster = start_cluster(&args.node_arg, &mut report).await?;
        let same_disk = cluster
            .nodes
            .iter()
            .map(|node| Ok(std::fs::metadata(&node.data_dir)?.dev()))
            .collect::<anyhow::Result<Vec<u64>>>()?
            .into_iter()
            .all(|dev| dev == std::fs::metadata(scratch.path()).map(|m| m.dev()).unwrap_or(0));
        report.note(format!(
            "node data dirs: {} ({}); all on the scratch dir's device: {same_disk}",
            cluster.nodes.iter().map(|node| node.data_dir.display().to_string()).collect::<Vec<_>>().join(", "),
            crate::df_line(&cluster.nodes[0].data_dir)
        ));
        let mut written = None;
        if runs(Section::Put) {
            eprintln!("== 1 MiB PUTs");
            let (serial, judged, files) = large_puts(&cluster, plan, scratch.path(), ticks, &mut report).await?;
            written = Some(files);
            put_judged = Some((serial, judged));
        }
        if runs(Section::Get) {
            eprintln!("== GETs of cached 1 MiB files");
            let files = match written {
                Some(files) => files,
                None => {
                    let files = Arc::new(make_large_files("/get", 1 << 20, plan.put_files_max.min(256)).await?);
                    let result = put_files(&cluster, files.clone(), CONCURRENCY, files.len(), UNBOUNDED).await?;
                    ensure!(result.errors.0 == 0, "PUTs before the GETs failed: {:?}", result.errors.1);
                    written_files(&files, &result)
                }
            };
            gets(&cluster, files, plan, ticks, loopback, &mut report).await?;
        }
        if runs(Section::Small) {
            eprintln!("== {} B durable PUTs", plan.small_bytes);
            small_puts(&cluster, plan, ticks, small_ceiling, &mut report).await?;
        }

        // Context, not targets: in-doubt writes, unavailable blocks and refused connections
        // would mean trouble; read repairs happen whenever a read reaches the owner a W = 2
        // write has not reached yet.
        for (name, sum) in health_counters(&cluster.http, &cluster.nodes).await? {
            report.info(format!("{name}, summed over the {NODES} nodes, at the end"), format!("{sum}"));
        }
        let mut peaks = Vec::new();
        for &pid in &cluster.pids {
            peaks.push(crate::mib(status_bytes(Pid::Of(pid), "VmHWM")?));
        }
        report.info("nodes' peak RSS (VmHWM), A / B / C", peaks.join(" / "));
        // Every process is killed here (ShoalProcess kills on drop).
        drop(cluster);
    }

    if runs(Section::Ceilings) {
        eprintln!("== ceilings again");
        let measured = sequential_runs(scratch.path(), plan, &chunk).await?;
        report.info(
            format!(
                "disk: sequential write {} MiB in 1 MiB writes + one fdatasync, {} run(s) after the cluster runs",
                plan.sequential_mib, plan.sequential_repeats
            ),
            crate::format_runs(&measured),
        );
        sequential.extend(measured);
    }

    if let Some((serial, judged)) = put_judged {
        let best =
            sequential.iter().copied().fold(None, |best: Option<f64>, run| Some(best.map_or(run, |b| b.max(run))));
        let rate = judged.mib_per_sec();
        match best {
            Some(ceiling) => {
                // All three copies go to the one disk.
                let per_copy = ceiling / NODES as f64;
                let target = per_copy * PUT_FRACTION_OF_CEILING_MIN;
                report.row(
                    format!("PUT 1 MiB files, concurrency {CONCURRENCY}, N = {NODES}: throughput"),
                    format!("{rate:.0} MiB/s = {:.0} % of {per_copy:.0}", 100.0 * rate / per_copy),
                    format!("≥ 80 % of (best sequential run {ceiling:.0} ÷ {NODES}) = {target:.0} MiB/s"),
                    Verdict::of(rate >= target),
                );
                let median = crate::median(&sequential) / NODES as f64;
                report.info(
                    "PUT throughput against the median sequential run ÷ 3",
                    format!("{rate:.0} MiB/s = {:.0} % of {median:.0}", 100.0 * rate / median),
                );
                report.info(
                    "PUT one at a time (diagnostic) against the best sequential run ÷ 3",
                    format!(
                        "{:.0} MiB/s = {:.0} % of {per_copy:.0}",
                        serial.mib_per_sec(),
                        100.0 * serial.mib_per_sec() / per_copy
                    ),
                );
            }
            None => report.note("PUT throughput not judged: the ceilings section did not run"),
        }
    }
    if !sequential.is_empty() {
        report.note(format!(
            "sequential write ceiling: best {:.0} MiB/s, median {:.0} MiB/s over {} runs",
            sequential.iter().copied().fold(0.0, f64::max),
            crate::median(&sequential),
            sequential.len()
        ));
    }

    let mut ring_table = String::new();
    if runs(Section::Ring) {
        eprintln!("== ring");
        ring_table = crate::ring::measure(plan.ring, &mut report);
    }

    report.note(format!("load average at end: {}", crate::load_average()));
    report.note(format!(
        "wall time of the benchmarks (after the shoal binary was built): {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    println!("{}", report.markdown());
    if !ring_table.is_empty() {
        println!("{ring_table}");
    }
    Ok(())
}

/// `count` files of `size` bytes under `dir`, every block distinct from every other file's
/// (the store is content-addressed: identical blocks would be stored once), with their hashes.
async fn make_large_files(dir: &str, size: usize, count: usize) -> anyhow::Result<Vec<LargeFile>> {
    let (dir, seed) = (dir.to_string(), dir.len() as u64);
    // Each directory's files get their own range of stamps.
    let stamp = dir.bytes().fold(0u64, |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b))) << 20;
    Ok(tokio::task::spawn_blocking(move || {
        let base = shoal_tests::pseudo_random_bytes(seed, size);
        workload::make_files(&base, &dir, stamp, count)
    })
    .await?)
}

/// PUTs `files` (up to `ops_max` of them, in order), round robin over the nodes.
async fn put_files(
    cluster: &Cluster,
    files: Arc<Vec<LargeFile>>,
    concurrency: usize,
    ops_max: usize,
    time_max: Duration,
) -> anyhow::Result<LoadResult> {
    let clients = cluster.clients.clone();
    let ops_max = ops_max.min(files.len()) as u64;
    closed_loop(concurrency, ops_max, time_max, move |index| {
        let (clients, files) = (clients.clone(), files.clone());
        async move {
            let file = &files[index.global as usize];
            let size = file.data.len() as u64;
            let info = clients[index.node()]
                .put_stream(&file.path, workload::body_stream(file.data.clone()), Some(size), Some(&file.blake3))
                .await
                .with_context(|| format!("PUT {} through node {}", file.path, index.node()))?;
            ensure!(info.size == size, "PUT {} stored {} bytes", file.path, info.size);
            ensure!(info.blake3 == file.blake3, "PUT {} stored hash {}", file.path, info.blake3);
            Ok(Sample { bytes: size, ..Sample::default() })
        }
    })
    .await
}

/// Files whose PUT succeeded, each with the node that took it.
type Written = Arc<Vec<(LargeFile, usize)>>;

/// The files whose PUT succeeded, each with the node that took it.
fn written_files(files: &[LargeFile], result: &LoadResult) -> Written {
    let node = |global: u64| (global % NODES as u64) as usize;
    Arc::new(result.succeeded.iter().map(|&global| (files[global as usize].clone(), node(global))).collect())
}

/// Adds a run's latency, halves and failures to the report.
fn report_load(report: &mut Report, label: &str, result: &LoadResult) {
    report.info(
        format!("{label}: latency p50 / p99 / max"),
        format!(
            "{} / {} / {}",
            ms(percentile(&result.latencies, 50)),
            ms(percentile(&result.latencies, 99)),
            ms(result.latencies.last().copied().unwrap_or_default())
        ),
    );
    report.info(
        format!("{label}: per second in the first / second half of the run"),
        format!("{:.0} / {:.0}", result.halves_ops_per_sec.0, result.halves_ops_per_sec.1),
    );
    if result.errors.0 > 0 {
        report.row(
            format!("{label}: failed requests"),
            format!("{} (first: {})", result.errors.0, result.errors.1.clone().unwrap_or_default()),
            "0",
            Verdict::Miss,
        );
    }
}

/// 1 MiB PUTs: one at a time (diagnostic: the cost of one replicated PUT), then
/// [`CONCURRENCY`] at a time (judged), then again with the page cache recycled (diagnostic).
/// Returns the first two results and the files the judged run wrote.
async fn large_puts(
    cluster: &Cluster,
    plan: Plan,
    scratch: &Path,
    ticks: f64,
    report: &mut Report,
) -> anyhow::Result<(LoadResult, LoadResult, Written)> {
    let serial_files = Arc::new(make_large_files("/put-serial", MIB, plan.put_serial_files_max).await?);
    let label = "PUT 1 MiB files, one at a time (diagnostic)";
    let probe = cluster.probe(label).await?;
    let serial = put_files(cluster, serial_files, 1, plan.put_serial_files_max, plan.put_serial_time_max).await?;
    probe.finish(cluster, serial.bytes, ticks, report).await?;
    report.info(
        format!("{label}: {} acknowledged in {:.1} s", serial.ops, serial.wall.as_secs_f64()),
        format!("{:.0} MiB/s", serial.mib_per_sec()),
    );
    report_load(report, label, &serial);

    let files = make_large_files("/put", MIB, plan.put_files_max).await?;
    let files = Arc::new(files);
    let label = format!("PUT 1 MiB files, concurrency {CONCURRENCY}");
    let probe = cluster.probe(&label).await?;
    let judged = put_files(cluster, files.clone(), CONCURRENCY, plan.put_files_max, plan.put_time_max).await?;
    probe.finish(cluster, judged.bytes, ticks, report).await?;
    report.info(
        format!("{label}: {} acknowledged in {:.1} s (judged below)", judged.ops, judged.wall.as_secs_f64()),
        format!("{:.0} MiB/s", judged.mib_per_sec()),
    );
    let p99 = percentile(&judged.latencies, 99);
    report.row(format!("{label}: latency p99"), ms(p99), "< 50 ms", Verdict::of(p99 < PUT_P99_MAX));
    report_load(report, &label, &judged);
    let written = written_files(&files, &judged);

    // Diagnostic: the same PUTs right after a scratch file of 3 × their size was written and
    // deleted, so the page cache can reuse just-freed memory, as the ceiling runs do. On a VM
    // whose freed memory goes back to the host, growing the page cache into memory not touched
    // lately costs far more than reusing it (see the single-node results); this run shows the
    // cluster's figure without most of that cost. It is not used for a verdict.
    let recycled_files = make_large_files("/put-recycled", MIB, plan.put_recycled_files).await?;
    let scratch_mib = NODES * recycled_files.len();
    let (dir, data) = (scratch.to_path_buf(), shoal_tests::pseudo_random_bytes(3, MIB));
    tokio::task::spawn_blocking(move || ceilings::sequential_write(&dir, scratch_mib, &data)).await??;
    let label = format!("PUT 1 MiB files, concurrency {CONCURRENCY}, page cache recycled (diagnostic)");
    let probe = cluster.probe(&label).await?;
    let recycled =
        put_files(cluster, Arc::new(recycled_files), CONCURRENCY, plan.put_recycled_files, plan.put_time_max).await?;
    probe.finish(cluster, recycled.bytes, ticks, report).await?;
    report.info(
        format!(
            "{label}: {} acknowledged in {:.1} s, right after writing and deleting a {scratch_mib} MiB scratch file",
            recycled.ops,
            recycled.wall.as_secs_f64()
        ),
        format!("{:.0} MiB/s", recycled.mib_per_sec()),
    );
    report_load(report, &label, &recycled);
    Ok((serial, judged, written))
}

/// One GET into nowhere, timed to its first body byte; checks the answer is the file.
async fn get_timed(http: &reqwest::Client, url: String, file: &LargeFile) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let response = http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let headers = start.elapsed();
    ensure!(response.status() == reqwest::StatusCode::OK, "GET {url}: HTTP {}", response.status());
    let hash = response.headers().get(shoal_node::api::HEADER_BLAKE3).and_then(|value| value.to_str().ok());
    ensure!(hash == Some(file.blake3.as_str()), "GET {url} answered hash {hash:?}, not {}", file.blake3);
    let mut stream = response.bytes_stream();
    let (mut ttfb, mut received) = (None, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("GET {url}"))?;
        if ttfb.is_none() && !chunk.is_empty() {
            ttfb = Some(start.elapsed());
        }
        received += chunk.len() as u64;
    }
    ensure!(received == file.data.len() as u64, "GET {url} gave {received} bytes");
    Ok(Sample { bytes: received, ttfb, headers: Some(headers) })
}

/// GETs of the files just written, in turn, each through one of the two nodes that did not
/// take its PUT (alternating from one pass over the files to the next), so consecutive GETs go
/// round robin over the nodes; raw: the client counts the bytes and checks the hash header, it
/// does not hash the body. One at a time first (diagnostic: the cost of one GET), then
/// [`CONCURRENCY`] at a time (judged).
async fn gets(
    cluster: &Cluster,
    files: Written,
    plan: Plan,
    ticks: f64,
    loopback: Option<f64>,
    report: &mut Report,
) -> anyhow::Result<()> {
    ensure!(!files.is_empty(), "no files to GET");
    let urls: Arc<Vec<String>> = Arc::new(cluster.nodes.iter().map(ShoalProcess::url).collect());
    let runs = [
        (1, plan.get_serial_time_max, "one at a time (diagnostic)".to_string()),
        (CONCURRENCY, plan.get_time_max, format!("concurrency {CONCURRENCY}")),
    ];
    for (workers, time_max, how) in runs {
        let label = format!("GET cached 1 MiB files ({} distinct), {how}", files.len());
        let probe = cluster.probe(&label).await?;
        let (http, files, urls) = (cluster.http.clone(), files.clone(), urls.clone());
        let result = closed_loop(workers, plan.get_ops_max, time_max, move |index| {
            let (http, files, urls) = (http.clone(), files.clone(), urls.clone());
            async move {
                let (file, put_node) = &files[index.global as usize % files.len()];
                let pass = index.global as usize / files.len();
                let node = (put_node + 1 + pass % 2) % NODES;
                get_timed(&http, format!("{}/v1/files{}", urls[node], file.path), file).await
            }
        })
        .await?;
        probe.finish(cluster, result.bytes, ticks, report).await?;
        let rate = result.mib_per_sec();
        let what = format!("{label}: {} answered in {:.1} s", result.ops, result.wall.as_secs_f64());
        let ttfb = percentile(&result.ttfbs, 50);
        let ttfbs = format!("{} ({})", ms(ttfb), ms(percentile(&result.ttfbs, 99)));
        if workers == CONCURRENCY {
            let ceiling =
                loopback.map_or(String::new(), |tcp| format!(" (loopback TCP ceiling this run: {tcp:.0} MiB/s)"));
            report.row(
                what,
                format!("{rate:.0} MiB/s"),
                format!("≥ 1024 MiB/s{ceiling}"),
                Verdict::of(rate >= GET_MIB_PER_SEC_MIN),
            );
            report.row(
                format!("{label}: time to first byte p50 (p99)"),
                ttfbs,
                "p50 < 2 ms",
                Verdict::of(ttfb < GET_TTFB_P50_MAX),
            );
        } else {
            report.info(what, format!("{rate:.0} MiB/s"));
            report.info(format!("{label}: time to first byte p50 (p99)"), ttfbs);
        }
        report.info(
            format!("{label}: time to the response headers p50 (p99)"),
            format!("{} ({})", ms(percentile(&result.headers, 50)), ms(percentile(&result.headers, 99))),
        );
        report_load(report, &label, &result);
    }
    Ok(())
}

/// `size`-byte durable PUTs: one at a time (diagnostic), then [`CONCURRENCY`] at a time
/// (judged), each worker in a directory of its own, round robin over the nodes.
async fn small_puts(
    cluster: &Cluster,
    plan: Plan,
    ticks: f64,
    ceiling: Option<f64>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let base = Bytes::from(shoal_tests::pseudo_random_bytes(4242, plan.small_bytes));
    let concurrent = format!("concurrency {CONCURRENCY}");
    let runs = [
        (1, plan.small_serial_time_max, "one at a time (diagnostic)", "serial"),
        (CONCURRENCY, plan.small_time_max, concurrent.as_str(), "small"),
    ];
    for (workers, time_max, how, dir) in runs {
        let label = format!("{} B PUTs, {how}, a directory per worker", plan.small_bytes);
        let clients = cluster.clients.clone();
        let (base, dir) = (base.clone(), dir.to_string());
        let probe = cluster.probe(&label).await?;
        let result = closed_loop(workers, plan.small_ops_max, time_max, move |index| {
            let (clients, base, dir) = (clients.clone(), base.clone(), dir.clone());
            async move {
                let path = format!("/{dir}/c{:02}/f{:06}", index.worker, index.seq);
                // Distinct contents: identical ones would be stored once.
                let mut content = BytesMut::from(&base[..]);
                let stamp = format!("{dir}/{}/{}", index.worker, index.seq);
                content[..stamp.len()].copy_from_slice(stamp.as_bytes());
                let size = content.len() as u64;
                let info = clients[index.node()]
                    .put_bytes(&path, content.freeze())
                    .await
                    .with_context(|| format!("PUT {path} through node {}", index.node()))?;
                ensure!(info.size == size, "PUT {path} stored {} bytes", info.size);
                Ok(Sample { bytes: size, ..Sample::default() })
            }
        })
        .await?;
        probe.finish(cluster, result.bytes, ticks, report).await?;
        let rate = result.ops_per_sec();
        let what = format!("{label}: {} acknowledged in {:.1} s", result.ops, result.wall.as_secs_f64());
        if workers == CONCURRENCY {
            let ceiling = ceiling.map_or(String::new(), |ceiling| {
                format!(
                    " (disk this run: {ceiling:.0} durable {} B appends/s from {CONCURRENCY} threads)",
                    plan.small_bytes
                )
            });
            report.row(
                what,
                format!("{rate:.0} PUT/s"),
                format!("≥ 3000 PUT/s{ceiling}"),
                Verdict::of(rate >= SMALL_PUTS_PER_SEC_MIN),
            );
        } else {
            report.info(what, format!("{rate:.0} PUT/s"));
        }
        report_load(report, &label, &result);
    }
    Ok(())
}
