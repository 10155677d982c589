//! Workloads against a running node: large PUTs and GETs, small durable PUTs from many
//! clients, and one very large file streamed in and out while the node's memory is watched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use shoal_node::client::Client;

use crate::ceilings::MIB;
use crate::procfs::{Pid, status_bytes};

/// A file to upload, held in memory with its BLAKE3.
#[derive(Debug, Clone)]
pub struct LargeFile {
    /// Where it goes in Shoal.
    pub path: String,
    /// Its content.
    pub data: Bytes,
    /// BLAKE3 of `data`, hex, sent as `x-shoal-blake3` as the CLI does.
    pub blake3: String,
}

/// Makes a copy of `base` whose every 1 MiB block differs from every block of every other copy
/// (the store is content-addressed: identical blocks would be deduplicated and never hit the
/// disk, which would flatter the write figures).
fn stamped(base: &[u8], stamp: u64) -> Bytes {
    let mut data = BytesMut::from(base);
    for (index, block) in data.chunks_mut(MIB).enumerate() {
        let mark = (stamp << 32 | index as u64) ^ 0xA5A5_5A5A_0F0F_F0F0;
        for (byte, mark) in block.iter_mut().zip(mark.to_le_bytes()) {
            *byte ^= mark;
        }
    }
    data.freeze()
}

/// `count` files of `size` bytes with pairwise distinct blocks, under `dir`.
pub fn make_files(base: &[u8], dir: &str, first_stamp: u64, count: usize) -> Vec<LargeFile> {
    (0..count)
        .map(|index| {
            let data = stamped(base, first_stamp + index as u64);
            let blake3 = blake3::hash(&data).to_hex().to_string();
            LargeFile { path: format!("{dir}/file-{index:02}"), data, blake3 }
        })
        .collect()
}

/// The body of a PUT: the file as a stream of 1 MiB slices of the buffer (no copies).
pub fn body_stream(data: Bytes) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let chunks: Vec<std::io::Result<Bytes>> =
        (0..data.len().div_ceil(MIB)).map(|i| Ok(data.slice(i * MIB..((i + 1) * MIB).min(data.len())))).collect();
    futures_util::stream::iter(chunks)
}

/// Uploads every file, `concurrency` at a time; returns the wall time.
pub async fn put_all(client: &Client, files: &[LargeFile], concurrency: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    futures_util::stream::iter(files)
        .map(|file| async move {
            let info = client
                .put_stream(
                    &file.path,
                    body_stream(file.data.clone()),
                    Some(file.data.len() as u64),
                    Some(&file.blake3),
                )
                .await
                .with_context(|| format!("PUT {}", file.path))?;
            ensure!(info.size == file.data.len() as u64, "PUT {} stored {} bytes", file.path, info.size);
            ensure!(info.blake3 == file.blake3, "PUT {} stored hash {}", file.path, info.blake3);
            Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// Downloads every file, `concurrency` at a time, through the client library, which verifies
/// BLAKE3 as it streams, into a sink; returns the wall time.
pub async fn get_verified_all(client: &Client, files: &[LargeFile], concurrency: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    futures_util::stream::iter(files)
        .map(|file| async move {
            let info = client
                .get_to(&file.path, &mut tokio::io::sink(), None)
                .await
                .with_context(|| format!("GET {}", file.path))?;
            ensure!(info.blake3 == file.blake3, "GET {} answered hash {}", file.path, info.blake3);
            Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// Downloads every file, `concurrency` at a time, with plain reqwest, counting the bytes and
/// dropping them (no hashing on the client); returns the wall time.
pub async fn get_raw_all(
    http: &reqwest::Client,
    base_url: &str,
    files: &[LargeFile],
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    futures_util::stream::iter(files)
        .map(|file| async move {
            let received = get_raw(http, base_url, &file.path).await?;
            ensure!(received == file.data.len() as u64, "GET {} gave {received} bytes", file.path);
            Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// One raw GET to nowhere; returns the bytes received.
async fn get_raw(http: &reqwest::Client, base_url: &str, path: &str) -> anyhow::Result<u64> {
    let response = http.get(format!("{base_url}/v1/files{path}")).send().await?;
    ensure!(response.status() == reqwest::StatusCode::OK, "GET {path}: HTTP {}", response.status());
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        received += chunk.with_context(|| format!("GET {path}"))?.len() as u64;
    }
    Ok(received)
}

/// How the small files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `/small/c{client}/f{op}`: one directory per client.
    PerClientDirs,
    /// `/flat/c{client}-f{op}`: every file in one directory.
    OneDir,
    /// `/fan/c{client}/d{op / 16}/f{op % 16}`: at most 16 files per directory, so directory
    /// records stay small; isolates the fixed cost of a PUT from the cost of big directories.
    Fanout,
}

/// What a run of small PUTs achieved.
#[derive(Debug, Clone)]
pub struct SmallPutResult {
    /// PUTs acknowledged.
    pub ops: u64,
    /// Wall time from the first request to the last answer.
    pub wall: Duration,
    /// Latency of each acknowledged PUT, sorted.
    pub latencies: Vec<Duration>,
    /// Acknowledged PUTs per second over the first and the second half of the wall time.
    pub halves_ops_per_sec: (f64, f64),
    /// PUTs that failed, and the first failure.
    pub errors: (u64, Option<String>),
}

impl SmallPutResult {
    /// Acknowledged PUTs per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The latency below which `percent` % of PUTs finished.
    pub fn percentile(&self, percent: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = (self.latencies.len() * percent / 100).min(self.latencies.len() - 1);
        self.latencies[index]
    }
}

/// `clients` concurrent clients each PUT 4 KiB files (distinct contents, each acknowledged
/// only once durable) one after another, until `ops_max` PUTs were started in total or
/// `duration_max` has passed.
pub async fn small_puts(
    client: &Client,
    layout: Layout,
    clients: usize,
    size: usize,
    ops_max: u64,
    duration_max: Duration,
) -> anyhow::Result<SmallPutResult> {
    let started = Arc::new(AtomicU64::new(0));
    let base = Bytes::from(shoal_tests::pseudo_random_bytes(4242, size));
    let start = Instant::now();
    let deadline = start + duration_max;
    let mut tasks = tokio::task::JoinSet::new();
    for client_index in 0..clients {
        let (client, started, base) = (client.clone(), started.clone(), base.clone());
        tasks.spawn(async move {
            let mut done: Vec<(Duration, Duration)> = Vec::new();
            let mut errors = (0u64, None::<String>);
            let mut op = 0u64;
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < ops_max {
                let path = match layout {
                    Layout::PerClientDirs => format!("/small/c{client_index:02}/f{op:06}"),
                    Layout::OneDir => format!("/flat/c{client_index:02}-f{op:06}"),
                    Layout::Fanout => format!("/fan/c{client_index:02}/d{:05}/f{:02}", op / 16, op % 16),
                };
                let mut content = BytesMut::from(&base[..]);
                let stamp = format!("{layout:?}/{client_index}/{op}");
                content[..stamp.len()].copy_from_slice(stamp.as_bytes());
                let sent = Instant::now();
                match client.put_bytes(&path, content.freeze()).await {
                    Ok(_) => {
                        let latency = sent.elapsed();
                        done.push((latency, sent.duration_since(start) + latency));
                    }
                    Err(err) => {
                        errors.0 += 1;
                        errors.1.get_or_insert_with(|| format!("PUT {path}: {err}"));
                    }
                }
                op += 1;
            }
            (done, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut finished_at = Vec::new();
    let mut errors = (0u64, None);
    while let Some(joined) = tasks.join_next().await {
        let (done, (count, first)) = joined.context("a client task panicked")?;
        for (latency, at) in done {
            latencies.push(latency);
            finished_at.push(at);
        }
        errors.0 += count;
        if errors.1.is_none() {
            errors.1 = first;
        }
    }
    let wall = start.elapsed();
    latencies.sort();
    let half = wall / 2;
    let first_half = finished_at.iter().filter(|at| **at <= half).count() as f64;
    let second_half = finished_at.len() as f64 - first_half;
    let half_secs = half.as_secs_f64().max(1e-9);
    Ok(SmallPutResult {
        ops: latencies.len() as u64,
        wall,
        latencies,
        halves_ops_per_sec: (first_half / half_secs, second_half / half_secs),
        errors,
    })
}

/// What streaming one very large file in and out did to the node's memory.
#[derive(Debug, Clone)]
pub struct HugeFileResult {
    /// The file's size.
    pub size: u64,
    /// Resident memory of the idle node before the transfers.
    pub rss_before: u64,
    /// `VmHWM` (peak resident memory since start) after the upload.
    pub hwm_after_put: u64,
    /// `VmHWM` after the download too.
    pub hwm_after_get: u64,
    /// The largest `VmRSS` sampled (every 20 ms) during both transfers.
    pub rss_sampled_max: u64,
    /// Wall time of the upload.
    pub put: Duration,
    /// Wall time of the (verified) download.
    pub get: Duration,
}

/// Uploads `mib` MiB as one file, generated on the fly from a 64 MiB pattern with every block
/// made distinct, then downloads it, verified, into a sink; meanwhile samples the node's
/// resident memory. The client never holds more than the pattern and a few blocks.
pub async fn huge_file(client: &Client, pid: u32, mib: usize) -> anyhow::Result<HugeFileResult> {
    const PATTERN_MIB: usize = 64;
    let pattern = Bytes::from(shoal_tests::pseudo_random_bytes(777, PATTERN_MIB * MIB));
    let rss_before = status_bytes(Pid::Of(pid), "VmRSS")?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                max = max.max(status_bytes(Pid::Of(pid), "VmRSS")?);
            }
            Ok::<u64, anyhow::Error>(max)
        })
    };

    // The client hashes what it sends, to check the node's answer end to end.
    let hasher = Arc::new(std::sync::Mutex::new(blake3::Hasher::new()));
    let body = {
        let hasher = hasher.clone();
        futures_util::stream::iter(0..mib).map(move |index| {
            let offset = (index % PATTERN_MIB) * MIB;
            let block = stamped(&pattern[offset..offset + MIB], (1 << 20) + index as u64);
            hasher.lock().map_err(|_| std::io::Error::other("hasher lock poisoned"))?.update(&block);
            Ok::<Bytes, std::io::Error>(block)
        })
    };
    let path = "/huge/file.bin";
    let size = (mib * MIB) as u64;
    let start = Instant::now();
    let info = client.put_stream(path, body, Some(size), None).await.context("PUT of the huge file")?;
    let put = start.elapsed();
    let sent_hash = hasher.lock().map_err(|_| anyhow::anyhow!("hasher lock poisoned"))?.finalize().to_hex().to_string();
    ensure!(info.size == size, "the node stored {} bytes of {size}", info.size);
    ensure!(info.blake3 == sent_hash, "the node stored hash {} for content hashing to {sent_hash}", info.blake3);
    let hwm_after_put = status_bytes(Pid::Of(pid), "VmHWM")?;

    let start = Instant::now();
    let got = client.get_to(path, &mut tokio::io::sink(), None).await.context("GET of the huge file")?;
    let get = start.elapsed();
    ensure!(got.blake3 == sent_hash, "GET answered hash {}", got.blake3);
    let hwm_after_get = status_bytes(Pid::Of(pid), "VmHWM")?;

    stop.store(true, Ordering::Relaxed);
    let rss_sampled_max = match sampler.await {
        Ok(result) => result?,
        Err(join) => bail!("the memory sampler failed: {join}"),
    };
    Ok(HugeFileResult { size, rss_before, hwm_after_put, hwm_after_get, rss_sampled_max, put, get })
}

/// Drops every file under `dir` from the page cache (`posix_fadvise(DONTNEED)`; the node's
/// files are fsynced, so their pages are clean and go), so the next reads come from the disk
/// (or from whatever cache the virtual disk has below this kernel). Returns the files evicted.
pub fn evict_page_cache(dir: &std::path::Path) -> anyhow::Result<u64> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let mut evicted = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let file = std::fs::File::open(entry.path())?;
                posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                    .with_context(|| format!("fadvise {}", entry.path().display()))?;
                evicted += 1;
            }
        }
    }
    Ok(evicted)
}
