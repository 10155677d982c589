//! Readings from `/proc`: a process's memory high-water mark, its CPU time and the bytes it
//! caused to be written to disk, and the machine's total busy CPU time. Linux only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Which process to read: the node under test, or the benchmark itself.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// Another process.
    Of(u32),
    /// This process.
    Myself,
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::Of(pid) => PathBuf::from(format!("/proc/{pid}")),
            Pid::Myself => PathBuf::from("/proc/self"),
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: Pid, field: &str) -> anyhow::Result<u64> {
    let path = pid.dir().join("status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')) {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parse {field} in {}", path.display()))?;
            return Ok(kib * 1024);
        }
    }
    bail!("no {field} in {}", path.display())
}

/// `write_bytes` of `/proc/<pid>/io`: bytes this process caused to be sent to the block layer.
pub fn write_bytes(pid: Pid) -> anyhow::Result<u64> {
    let path = pid.dir().join("io");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("write_bytes:") {
            return rest.trim().parse().with_context(|| format!("parse write_bytes in {}", path.display()));
        }
    }
    bail!("no write_bytes in {}", path.display())
}

/// User and system CPU time of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: Pid) -> anyhow::Result<(u64, u64)> {
    let path = pid.dir().join("stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    // The command name (field 2) may hold spaces; fields after it are plain numbers.
    let after_name = text.rsplit_once(')').map(|(_, rest)| rest).context("malformed stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is index 0, so utime (field 14) is index 11 and stime index 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime, stime))
}

/// Busy CPU time of the whole machine (all cores; user, nice, system, irq, softirq), in ticks.
fn machine_busy_ticks() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = text.lines().find(|line| line.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let values: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let pick = |i: usize| values.get(i).copied().unwrap_or(0);
    Ok(pick(0) + pick(1) + pick(2) + pick(5) + pick(6))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, the Linux default).
pub fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// Where the CPU time and the node's disk writes went during one phase.
#[derive(Debug, Clone)]
pub struct PhaseUsage {
    /// The phase's name.
    pub name: String,
    /// Wall time.
    pub wall: Duration,
    /// CPU seconds of the node process (of every node, for a cluster).
    pub server_cpu_secs: f64,
    /// Of which in the kernel (system time).
    pub server_sys_secs: f64,
    /// CPU seconds of the benchmark process (the client side).
    pub bench_cpu_secs: f64,
    /// CPU seconds of everything else on the machine (other processes, kernel threads such as
    /// writeback): a measure of how much the figures were disturbed.
    pub other_cpu_secs: f64,
    /// Bytes the node (every node, for a cluster) caused to be written to disk.
    pub server_write_bytes: u64,
    /// Bytes of payload the phase moved (uploaded or downloaded).
    pub payload_bytes: u64,
}

impl PhaseUsage {
    /// Adds another run of the same phase.
    pub fn add(&mut self, other: &PhaseUsage) {
        self.wall += other.wall;
        self.server_cpu_secs += other.server_cpu_secs;
        self.server_sys_secs += other.server_sys_secs;
        self.bench_cpu_secs += other.bench_cpu_secs;
        self.other_cpu_secs += other.other_cpu_secs;
        self.server_write_bytes += other.server_write_bytes;
        self.payload_bytes += other.payload_bytes;
    }
}

/// Takes readings at the start of a phase; [`Meter::finish`] turns them into a
/// [`PhaseUsage`].
#[derive(Debug)]
pub struct Meter {
    name: String,
    servers: Vec<u32>,
    start: Instant,
    server_ticks: (u64, u64),
    bench_ticks: (u64, u64),
    machine_ticks: u64,
    server_written: u64,
}

/// User and system ticks of every process in `pids`, summed.
fn cpu_ticks_sum(pids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let mut sum = (0, 0);
    for &pid in pids {
        let (user, sys) = cpu_ticks(Pid::Of(pid))?;
        sum = (sum.0 + user, sum.1 + sys);
    }
    Ok(sum)
}

/// `write_bytes` of every process in `pids`, summed.
fn write_bytes_sum(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| write_bytes(Pid::Of(pid))).sum()
}

impl Meter {
    /// Starts measuring a phase of the node `server`.
    pub fn start(name: &str, server: u32) -> anyhow::Result<Self> {
        Self::start_all(name, &[server])
    }

    /// Starts measuring a phase of several nodes, whose CPU time and disk writes are summed
    /// (a cluster on one machine).
    pub fn start_all(name: &str, servers: &[u32]) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            servers: servers.to_vec(),
            start: Instant::now(),
            server_ticks: cpu_ticks_sum(servers)?,
            bench_ticks: cpu_ticks(Pid::Myself)?,
            machine_ticks: machine_busy_ticks()?,
            server_written: write_bytes_sum(servers)?,
        })
    }

    /// Ends the phase, which moved `payload_bytes` of file content.
    pub fn finish(self, payload_bytes: u64, ticks_per_sec: f64) -> anyhow::Result<PhaseUsage> {
        let wall = self.start.elapsed();
        let (server_user, server_sys) = cpu_ticks_sum(&self.servers)?;
        let server_user = server_user.saturating_sub(self.server_ticks.0);
        let server_sys = server_sys.saturating_sub(self.server_ticks.1);
        let server = server_user + server_sys;
        let (bench_user, bench_sys) = cpu_ticks(Pid::Myself)?;
        let bench = (bench_user + bench_sys).saturating_sub(self.bench_ticks.0 + self.bench_ticks.1);
        let machine = machine_busy_ticks()?.saturating_sub(self.machine_ticks);
        let other = machine.saturating_sub(server + bench);
        Ok(PhaseUsage {
            name: self.name,
            wall,
            server_cpu_secs: server as f64 / ticks_per_sec,
            server_sys_secs: server_sys as f64 / ticks_per_sec,
            bench_cpu_secs: bench as f64 / ticks_per_sec,
            other_cpu_secs: other as f64 / ticks_per_sec,
            server_write_bytes: write_bytes_sum(&self.servers)?.saturating_sub(self.server_written),
            payload_bytes,
        })
    }
}
