//! `shoal-bench`: benchmarks of Shoal against real `shoal serve` processes on loopback, with
//! the machine's physical ceilings measured in the same run. Results are kept in
//! `bench/RESULTS.md`.
//!
//! ```text
//! CARGO_TARGET_DIR=... cargo run --release -p shoal-bench -- single-node [--quick]
//! CARGO_TARGET_DIR=... cargo run --release -p shoal-bench -- membership [--quick]
//! CARGO_TARGET_DIR=... cargo run --release -p shoal-bench -- cluster [--quick]
//! CARGO_TARGET_DIR=... cargo run --release -p shoal-bench -- ring [--quick]
//! CARGO_TARGET_DIR=... cargo run --release -p shoal-bench -- sync [--quick]
//! ```
#![forbid(unsafe_code)]
// A benchmark measures wall time and drives its own tasks: the workspace bans on the clock and
// on spawning protect protocol logic, of which there is none here.
#![allow(clippy::disallowed_methods)]

mod ceilings;
mod cluster;
mod heal;
mod membership;
mod procfs;
mod report;
mod ring;
mod sync;
mod workload;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_tests::{NodeOptions, ShoalProcess};

use crate::ceilings::{MIB, mib_per_sec};
use crate::procfs::{Meter, Pid, status_bytes};
use crate::report::{Report, Verdict};
use crate::workload::{LargeFile, Layout};

/// Shoal benchmarks.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", about)]
struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum Command {
    /// One node: disk and loopback ceilings, 64 MiB PUT/GET, 4 KiB durable PUTs from 32
    /// clients, and the node's peak memory while a 4 GiB file streams in and out. Prints a
    /// markdown report on stdout, progress on stderr.
    SingleNode(SingleNodeArgs),
    /// The membership protocol in the deterministic simulator: crash detection against SWIM's
    /// bound, false downs under loss, gossip traffic per member (steady and after a healed
    /// partition) and the simulator's speed. Prints a markdown report on stdout.
    Membership(membership::MembershipArgs),
    /// Three nodes on loopback replicating with N = 3, W = 2, R = 2, requests round robin over
    /// them: 1 MiB PUTs and cached GETs (throughput, latency, time to first byte) and 1 KiB
    /// durable PUTs from 16 clients, against the disk and loopback ceilings of the same run;
    /// then the ring micro-benchmark. Prints a markdown report on stdout, progress on stderr.
    Cluster(cluster::ClusterArgs),
    /// The consistent-hash ring in process: ns per preference-list lookup and ms per rebuild at
    /// 10, 100 and 1,000 members. Prints a markdown report on stdout.
    Ring(ring::RingArgs),
    /// Anti-entropy in process: bytes each way and round trips of one exchange between two
    /// stores of 1,000,000 records with 0, 1 and 1,000 differences, against the
    /// information-theoretic floor; digest cost per write, rebuild and reload times.
    Sync(sync::SyncArgs),
    /// Heal throughput: four nodes, one wiped after 1 GiB was written and refilled by
    /// anti-entropy while a client reads, against the disk's durable write ceiling and the
    /// client's p99 without repair.
    Heal(heal::HealArgs),
}

/// Options of `single-node`.
#[derive(Debug, clap::Args)]
struct SingleNodeArgs {
    /// Small sizes for a smoke run (under a minute); the figures mean little.
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Extra flag for every `shoal serve` started (repeatable), such as
    /// `--node-arg=--upload-blocks-in-flight-max=8`.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
}

/// The parts of `single-node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Disk, loopback and hashing ceilings.
    Ceilings,
    /// 64 MiB PUT and GET.
    Large,
    /// 4 KiB durable PUTs from 32 clients.
    Small,
    /// Peak memory of the node while a 4 GiB file streams in and out.
    Memory,
}

/// How much each section does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// The sequential durable write ceiling writes this many MiB.
    sequential_mib: usize,
    /// How many times the sequential ceiling is measured, before and again after.
    sequential_repeats: usize,
    /// The per-block ceilings write this many 1 MiB files.
    per_block_files: usize,
    /// Bytes pushed through loopback TCP.
    loopback_mib: usize,
    /// Bytes hashed for the BLAKE3 ceiling.
    blake3_mib: usize,
    /// Size of each large file.
    large_file_mib: usize,
    /// Large files per pass.
    large_files: usize,
    /// How many times each large-file measurement is repeated (with fresh contents).
    large_repeats: usize,
    /// Concurrency of the concurrent large pass.
    large_concurrency: usize,
    /// Concurrent small-PUT clients.
    small_clients: usize,
    /// Size of a small file.
    small_bytes: usize,
    /// Small PUTs per run, at most.
    small_ops_max: u64,
    /// Duration of a small-PUT run, at most.
    small_duration_max: Duration,
    /// Size of the huge file.
    huge_mib: usize,
}

impl Sizes {
    /// The full sizes, or the `--quick` ones.
    fn new(quick: bool) -> Self {
        let full = Sizes {
            sequential_mib: 512,
            sequential_repeats: 3,
            per_block_files: 256,
            loopback_mib: 2048,
            blake3_mib: 256,
            large_file_mib: 64,
            large_files: 8,
            large_repeats: 3,
            large_concurrency: 4,
            small_clients: 32,
            small_bytes: 4096,
            small_ops_max: 20_000,
            small_duration_max: Duration::from_secs(10),
            huge_mib: 4096,
        };
        if !quick {
            return full;
        }
        Sizes {
            sequential_mib: 64,
            sequential_repeats: 1,
            per_block_files: 32,
            loopback_mib: 256,
            blake3_mib: 64,
            large_file_mib: 16,
            large_files: 4,
            large_repeats: 1,
            small_ops_max: 2_000,
            small_duration_max: Duration::from_secs(3),
            huge_mib: 256,
            ..full
        }
    }
}

/// Target: a 64 MiB PUT reaches this fraction of the durable sequential write ceiling.
const PUT_FRACTION_OF_CEILING_MIN: f64 = 0.70;
/// Target: a GET streams at least this many MiB/s.
const GET_MIB_PER_SEC_MIN: f64 = 1024.0;
/// Target: durable 4 KiB PUTs per second from 32 clients.
const SMALL_PUTS_PER_SEC_MIN: f64 = 3000.0;
/// Target: the node's peak resident memory while a 4 GiB file streams in and out.
const HUGE_FILE_RSS_BYTES_MAX: u64 = 256 * MIB as u64;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::SingleNode(args) => runtime.block_on(single_node(args)),
        Command::Membership(args) => membership::run(args),
        Command::Cluster(args) => runtime.block_on(cluster::run(args)),
        Command::Ring(args) => ring::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Heal(args) => runtime.block_on(heal::run(args)),
    }
}

/// First line of a command's output, or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(err) => format!("({program} failed: {err})"),
    }
}

/// The `df` line of the filesystem holding `path`.
fn df_line(path: &Path) -> String {
    let text = command_line("df", &["-hP", &path.to_string_lossy()]);
    text.lines().last().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Measures the sequential durable write ceiling `sizes.sequential_repeats` times.
async fn sequential_write_runs(dir: &Path, sizes: Sizes, chunk: &[u8]) -> anyhow::Result<Vec<f64>> {
    let mut runs = Vec::new();
    for _ in 0..sizes.sequential_repeats {
        let (dir, data) = (dir.to_path_buf(), chunk.to_vec());
        runs.push(
            tokio::task::spawn_blocking(move || ceilings::sequential_write(&dir, sizes.sequential_mib, &data))
                .await??,
        );
    }
    Ok(runs)
}

/// `a / b / c MiB/s`.
fn format_runs(runs: &[f64]) -> String {
    let figures: Vec<String> = runs.iter().map(|run| format!("{run:.0}")).collect();
    format!("{} MiB/s", figures.join(" / "))
}

/// Starts a node with `args` on fresh loopback ports and a fresh temporary data directory.
async fn start_node(args: &[String]) -> anyhow::Result<ShoalProcess> {
    let options = NodeOptions { args: args.to_vec(), env: Vec::new() };
    let node = tokio::task::spawn_blocking(move || ShoalProcess::start(options)).await??;
    eprintln!("  node pid {} on {}, data in {}", node.pid().unwrap_or(0), node.url(), node.data_dir.display());
    Ok(node)
}

/// The node's process id.
fn node_pid(node: &ShoalProcess) -> anyhow::Result<u32> {
    node.pid().context("the node is not running")
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// Runs the sections asked for and prints the report.
async fn single_node(args: SingleNodeArgs) -> anyhow::Result<()> {
    let sizes = Sizes::new(args.quick);
    let runs = |section| args.only.is_empty() || args.only.contains(&section);
    let ticks = procfs::clock_ticks_per_sec();
    let mut report = Report::default();
    let started = Instant::now();

    eprintln!("locating (building if needed) the shoal binary...");
    let binary = tokio::task::spawn_blocking(|| shoal_tests::shoal_binary().to_path_buf()).await?;
    eprintln!("shoal binary: {} (after {:.0} s)", binary.display(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    eprintln!("sizes: {sizes:?}; node args: {:?}", args.node_arg);
    report.note(format!("load average at start: {}", load_average()));

    // Same parent as the nodes' data directories (the system temp dir): same filesystem.
    let scratch = tempfile::tempdir()?;
    report.note(format!("scratch dir for ceilings: {} ({})", scratch.path().display(), df_line(scratch.path())));
    let chunk = shoal_tests::pseudo_random_bytes(1, MIB);

    let mut sequential_ceilings = Vec::new();
    let mut put_rates = Vec::new();
    let (mut direct_ceiling, mut sustained_ceiling, mut huge_put_rate) = (None, None, None);
    if runs(Section::Ceilings) {
        eprintln!("== ceilings");
        let measured = sequential_write_runs(scratch.path(), sizes, &chunk).await?;
        report.info(
            format!(
                "disk: sequential write {} MiB in 1 MiB writes + one fdatasync, {} runs before the node benchmarks",
                sizes.sequential_mib, sizes.sequential_repeats
            ),
            format_runs(&measured),
        );
        sequential_ceilings.extend(measured);
        for threads in [1, 4] {
            let (dir, data) = (scratch.path().to_path_buf(), chunk.clone());
            let rate = tokio::task::spawn_blocking(move || {
                ceilings::per_block_write(&dir, sizes.per_block_files, threads, &data)
            })
            .await??;
            report.info(
                format!(
                    "disk: {} files of 1 MiB, each write+fdatasync+rename+dir fsync (node's block pattern), {threads} thread(s)",
                    sizes.per_block_files
                ),
                format!("{rate:.0} MiB/s"),
            );
        }
        let (dir, data) = (scratch.path().to_path_buf(), chunk.clone());
        let direct =
            tokio::task::spawn_blocking(move || ceilings::sequential_write_direct(&dir, sizes.sequential_mib, &data))
                .await??;
        report.info(
            format!("disk: sequential write {} MiB with O_DIRECT, 1 MiB writes + one fdatasync", sizes.sequential_mib),
            format!("{direct:.0} MiB/s"),
        );
        direct_ceiling = Some(direct);
        let tcp = ceilings::loopback_tcp(sizes.loopback_mib).await?;
        report.info(format!("loopback TCP, {} MiB, 1 MiB writes", sizes.loopback_mib), format!("{tcp:.0} MiB/s"));
        let data = chunk.clone();
        let blake3 = tokio::task::spawn_blocking(move || ceilings::blake3_one_thread(sizes.blake3_mib, &data)).await?;
        report.info("BLAKE3, one thread", format!("{blake3:.0} MiB/s"));
    }

    if runs(Section::Large) {
        eprintln!("== large files");
        put_rates = large_files(&args, sizes, ticks, scratch.path(), &mut report).await?;
    }

    if runs(Section::Small) {
        eprintln!("== small durable PUTs");
        small_files(&args, sizes, ticks, &mut report).await?;
    }

    if runs(Section::Memory) {
        eprintln!("== huge file memory");
        huge_put_rate = Some(huge_file(&args, sizes, ticks, &mut report).await?);
    }

    if runs(Section::Ceilings) {
        eprintln!("== ceilings again");
        let (dir, data) = (scratch.path().to_path_buf(), chunk.clone());
        let sustained =
            tokio::task::spawn_blocking(move || ceilings::sequential_write(&dir, sizes.huge_mib, &data)).await??;
        report.info(
            format!(
                "disk: sequential write {} MiB in 1 MiB writes + one fdatasync (page cache grows by the whole file, as under the huge-file PUT)",
                sizes.huge_mib
            ),
            format!("{sustained:.0} MiB/s"),
        );
        sustained_ceiling = Some(sustained);
        let measured = sequential_write_runs(scratch.path(), sizes, &chunk).await?;
        report.info(
            format!(
                "disk: sequential write {} MiB in 1 MiB writes + one fdatasync, {} runs after the node benchmarks",
                sizes.sequential_mib, sizes.sequential_repeats
            ),
            format_runs(&measured),
        );
        sequential_ceilings.extend(measured);
    }
    // Judged against the best sequential run, before or after: the strictest reading.
    let best =
        sequential_ceilings.iter().copied().fold(None, |best: Option<f64>, run| Some(best.map_or(run, |b| b.max(run))));
    let put_rates_for_context = put_rates.clone();
    for (what, runs) in put_rates {
        let rate = median(&runs);
        match best {
            Some(ceiling) => {
                let target = ceiling * PUT_FRACTION_OF_CEILING_MIN;
                report.row(
                    what,
                    format!("{} = {:.0} % of {ceiling:.0}", format_median(&runs), 100.0 * rate / ceiling),
                    format!("median ≥ 70 % of the best sequential run = {target:.0} MiB/s"),
                    Verdict::of(rate >= target),
                );
            }
            None => report.note(format!("{what}: not judged, the ceilings section did not run")),
        }
    }
    if let (Some(put), Some(sustained)) = (huge_put_rate, sustained_ceiling) {
        report.info(
            format!("PUT of the {} MiB file against the same-size sequential write", sizes.huge_mib),
            format!("{put:.0} MiB/s = {:.0} % of {sustained:.0}", 100.0 * put / sustained),
        );
    }
    if let Some(direct) = direct_ceiling {
        for (what, runs) in &put_rates_for_context {
            report.info(
                format!("{what} against the O_DIRECT sequential write"),
                format!("{:.0} MiB/s = {:.0} % of {direct:.0}", median(runs), 100.0 * median(runs) / direct),
            );
        }
    }
    if !sequential_ceilings.is_empty() {
        report.note(format!(
            "sequential write ceiling: best {:.0} MiB/s, median {:.0} MiB/s over {} runs",
            sequential_ceilings.iter().copied().fold(0.0, f64::max),
            median(&sequential_ceilings),
            sequential_ceilings.len()
        ));
    }

    report.note(format!("load average at end: {}", load_average()));
    report.note(format!(
        "wall time of the benchmarks (after the shoal binary was built): {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    println!("{}", report.markdown());
    Ok(())
}

/// The median of some runs (the upper middle one for an even count).
fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// `median M MiB/s (runs a / b / c)`.
fn format_median(runs: &[f64]) -> String {
    if runs.len() == 1 {
        return format!("{:.0} MiB/s", runs[0]);
    }
    let figures: Vec<String> = runs.iter().map(|run| format!("{run:.0}")).collect();
    format!("{:.0} MiB/s (runs: {})", median(runs), figures.join(" / "))
}

/// 64 MiB files, `sizes.large_repeats` times with fresh contents: PUTs, then raw GETs, verified
/// GETs, and raw GETs after evicting the node's files from the page cache; first one file at a
/// time, then several at once. Returns the PUT figures, to be judged once every ceiling run
/// is in.
async fn large_files(
    args: &SingleNodeArgs,
    sizes: Sizes,
    ticks: f64,
    scratch: &Path,
    report: &mut Report,
) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    let node = start_node(&args.node_arg).await?;
    let pid = node_pid(&node)?;
    let same_disk = std::fs::metadata(scratch)?.dev() == std::fs::metadata(&node.data_dir)?.dev();
    report.note(format!(
        "node data dir: {} ({}); same device as the scratch dir: {same_disk}",
        node.data_dir.display(),
        df_line(&node.data_dir)
    ));
    let client = node.client();
    let http = reqwest::Client::builder().build()?;
    let base = shoal_tests::pseudo_random_bytes(2, sizes.large_file_mib * MIB);
    let total = (sizes.large_files * sizes.large_file_mib * MIB) as u64;
    let mut put_rates = Vec::new();
    let label = format!("{} × {} MiB", sizes.large_files, sizes.large_file_mib);

    for concurrency in [1, sizes.large_concurrency] {
        let (mut puts, mut raws, mut verifieds, mut colds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut evicted = 0;
        for repeat in 0..sizes.large_repeats {
            let stamp = (concurrency * 100 + repeat) as u64 * 1000;
            let files: Vec<LargeFile> =
                workload::make_files(&base, &format!("/large-c{concurrency}-r{repeat}"), stamp, sizes.large_files);

            let meter = Meter::start(&format!("PUT {label}, concurrency {concurrency}"), pid)?;
            let wall = workload::put_all(&client, &files, concurrency).await?;
            report.phase(meter.finish(total, ticks)?);
            puts.push(mib_per_sec(total, wall));

            let meter = Meter::start(&format!("GET raw {label}, concurrency {concurrency}"), pid)?;
            let wall = workload::get_raw_all(&http, &node.url(), &files, concurrency).await?;
            report.phase(meter.finish(total, ticks)?);
            raws.push(mib_per_sec(total, wall));

            let meter = Meter::start(&format!("GET verified {label}, concurrency {concurrency}"), pid)?;
            let wall = workload::get_verified_all(&client, &files, concurrency).await?;
            report.phase(meter.finish(total, ticks)?);
            verifieds.push(mib_per_sec(total, wall));

            evicted = {
                let data_dir = node.data_dir.clone();
                tokio::task::spawn_blocking(move || workload::evict_page_cache(&data_dir)).await??
            };
            let meter = Meter::start(&format!("GET raw, page cache evicted, {label}, concurrency {concurrency}"), pid)?;
            let wall = workload::get_raw_all(&http, &node.url(), &files, concurrency).await?;
            report.phase(meter.finish(total, ticks)?);
            colds.push(mib_per_sec(total, wall));
        }
        // Diagnostic: the same PUT right after a scratch file of the same size was written and
        // deleted, so the page cache can reuse just-freed memory, as the ceiling runs do. On a
        // VM whose freed memory goes back to the host, growing the page cache into memory not
        // touched lately costs far more than reusing it; this run shows the node's figure
        // without that cost. It is not used for the verdict.
        let recycled = {
            let (dir, data) = (scratch.to_path_buf(), shoal_tests::pseudo_random_bytes(3, MIB));
            let mib = (total as usize) / MIB;
            tokio::task::spawn_blocking(move || ceilings::sequential_write(&dir, mib, &data)).await??;
            let files = workload::make_files(
                &base,
                &format!("/large-c{concurrency}-recycled"),
                (concurrency * 100 + 99) as u64 * 1000,
                sizes.large_files,
            );
            let meter = Meter::start(&format!("PUT {label}, concurrency {concurrency}, page cache recycled"), pid)?;
            let wall = workload::put_all(&client, &files, concurrency).await?;
            report.phase(meter.finish(total, ticks)?);
            mib_per_sec(total, wall)
        };
        let what = format!("PUT {label}, concurrency {concurrency}");
        report.info(format!("{what} (judged below)"), format_median(&puts));
        report.info(
            format!("{what}, right after writing and deleting a {} MiB scratch file (diagnostic)", total / MIB as u64),
            format!("{recycled:.0} MiB/s"),
        );
        put_rates.push((what, puts));
        for (how, runs) in [
            ("raw stream to sink", &raws),
            ("client verifies BLAKE3", &verifieds),
            (&*format!("raw, after evicting the node's {evicted} files from the page cache"), &colds),
        ] {
            report.row(
                format!("GET {label}, concurrency {concurrency}, {how}"),
                format_median(runs),
                "≥ 1024 MiB/s (median)",
                Verdict::of(median(runs) >= GET_MIB_PER_SEC_MIN),
            );
        }
    }
    report.info("node peak RSS (VmHWM) after the large-file phase", mib(status_bytes(Pid::Of(pid), "VmHWM")?));
    Ok(put_rates)
}

/// 4 KiB durable PUTs from many clients, in per-client directories, then all in one directory.
async fn small_files(args: &SingleNodeArgs, sizes: Sizes, ticks: f64, report: &mut Report) -> anyhow::Result<()> {
    for layout in [Layout::PerClientDirs, Layout::OneDir, Layout::Fanout] {
        // A fresh node for each layout, so neither inherits the other's directories.
        let node = start_node(&args.node_arg).await?;
        let pid = node_pid(&node)?;
        let client = node.client();
        let where_ = match layout {
            Layout::PerClientDirs => "one directory per client",
            Layout::OneDir => "all in one directory",
            Layout::Fanout => "≤ 16 files per directory (diagnostic)",
        };
        let label = format!("{} KiB PUTs, {} clients, {where_}", sizes.small_bytes / 1024, sizes.small_clients);
        let meter = Meter::start(&label, pid)?;
        let result = workload::small_puts(
            &client,
            layout,
            sizes.small_clients,
            sizes.small_bytes,
            sizes.small_ops_max,
            sizes.small_duration_max,
        )
        .await?;
        report.phase(meter.finish(result.ops * sizes.small_bytes as u64, ticks)?);
        let rate = result.ops_per_sec();
        let what = format!("{label}: {} acknowledged in {:.1} s", result.ops, result.wall.as_secs_f64());
        if layout == Layout::PerClientDirs {
            report.row(what, format!("{rate:.0} PUT/s"), "≥ 3000 PUT/s", Verdict::of(rate >= SMALL_PUTS_PER_SEC_MIN));
        } else {
            report.info(what, format!("{rate:.0} PUT/s"));
        }
        report.info(
            format!("{label}: latency p50 / p99 / max"),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                result.percentile(50).as_secs_f64() * 1e3,
                result.percentile(99).as_secs_f64() * 1e3,
                result.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
            ),
        );
        report.info(
            format!("{label}: PUT/s in the first / second half of the run"),
            format!("{:.0} / {:.0}", result.halves_ops_per_sec.0, result.halves_ops_per_sec.1),
        );
        if result.errors.0 > 0 {
            report.row(
                format!("{label}: failed PUTs"),
                format!("{} (first: {})", result.errors.0, result.errors.1.unwrap_or_default()),
                "0",
                Verdict::Miss,
            );
        }
    }
    Ok(())
}

/// One huge file streamed in and out of a fresh node, whose memory is watched.
/// Returns the PUT throughput, to be set against the same-size write ceiling measured later.
async fn huge_file(args: &SingleNodeArgs, sizes: Sizes, ticks: f64, report: &mut Report) -> anyhow::Result<f64> {
    let node = start_node(&args.node_arg).await?;
    let pid = node_pid(&node)?;
    let client = node.client();
    let stat = nix::sys::statvfs::statvfs(&node.data_dir).context("statvfs of the node's data dir")?;
    let available = stat.blocks_available() * stat.fragment_size();
    // The file, plus a margin for the node's disk reserve and everything else.
    let needed = (sizes.huge_mib * MIB) as u64 + (1 << 30);
    anyhow::ensure!(
        available >= needed,
        "only {} free on the node's filesystem; the huge-file test needs {}",
        mib(available),
        mib(needed)
    );
    let size = (sizes.huge_mib * MIB) as u64;
    let meter = Meter::start(&format!("PUT + GET of one {} MiB file", sizes.huge_mib), pid)?;
    let result = workload::huge_file(&client, pid, sizes.huge_mib).await?;
    report.phase(meter.finish(2 * size, ticks)?);
    let peak = result.hwm_after_get.max(result.rss_sampled_max);
    report.row(
        format!("node peak RSS (VmHWM) while one {} MiB file streams in then out", sizes.huge_mib),
        mib(peak),
        "< 256 MiB",
        Verdict::of(peak < HUGE_FILE_RSS_BYTES_MAX),
    );
    report.info(
        "node RSS: idle before / VmHWM after PUT / VmHWM after GET / max sampled VmRSS",
        format!(
            "{} / {} / {} / {}",
            mib(result.rss_before),
            mib(result.hwm_after_put),
            mib(result.hwm_after_get),
            mib(result.rss_sampled_max)
        ),
    );
    report.info(
        format!("{} MiB file: PUT / verified GET throughput", sizes.huge_mib),
        format!("{:.0} / {:.0} MiB/s", mib_per_sec(result.size, result.put), mib_per_sec(result.size, result.get)),
    );
    Ok(mib_per_sec(result.size, result.put))
}
