//! `shoal-bench membership`: the membership protocol measured in the deterministic simulator
//! (`shoal-sim`): crash detection time against SWIM's analytic bound, false downs under packet
//! loss, gossip traffic per member in steady state and after a healed partition, and the
//! simulator's own speed. Every figure is replayable from the seed printed next to it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_membership::Preset;
use shoal_sim::measure::{self, Detection};
use shoal_sim::scenario::{check_split, start_and_converge};
use shoal_sim::{CheckFailure, Sim, SimConfig, SimStats};

/// Target: mean detection time of a crash, as a multiple of SWIM's analytic bound.
const DETECTION_RATIO_MAX: f64 = 1.2;
/// Target: false downs per run at this loss or less.
const FALSE_DOWN_LOSS_MAX: f64 = 0.05;
/// Target: per-member traffic stays within this fraction of its mean over the cluster sizes.
const TRAFFIC_SPREAD_MAX: f64 = 0.20;
/// Upper bound on the views converging again after a heal (virtual time).
const RECONVERGE_MAX: Duration = Duration::from_secs(600);

/// Options of `membership`.
#[derive(Debug, clap::Args)]
pub struct MembershipArgs {
    /// Fewer seeds and shorter windows for a smoke run (the figures mean less).
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections (comma-separated); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Wall-clock cap in seconds on the 1,000-node speed run (join plus steady window).
    #[arg(long, default_value_t = 120)]
    pub speed_wall_max_secs: u64,
}

/// The parts of `membership`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Crash detection time against SWIM's bound.
    Detection,
    /// False downs under packet loss.
    FalseDowns,
    /// Gossip traffic per member, steady and after a healed partition.
    Traffic,
    /// Simulated seconds per wall-clock second.
    Speed,
}

/// How much each section does.
#[derive(Debug, Clone)]
struct Plan {
    detection_sizes: Vec<usize>,
    detection_seeds: u64,
    false_down_nodes: usize,
    false_down_losses: Vec<f64>,
    false_down_seeds: u64,
    false_down_duration: Duration,
    traffic_sizes: Vec<usize>,
    traffic_window: Duration,
    heal_nodes: Vec<usize>,
    heal_late_after: Duration,
    speed_sizes: Vec<usize>,
    speed_window: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let full = Plan {
            detection_sizes: vec![8, 32, 128],
            detection_seeds: 5,
            false_down_nodes: 32,
            false_down_losses: vec![0.0, 0.01, 0.05, 0.10],
            false_down_seeds: 2,
            false_down_duration: Duration::from_secs(3600),
            traffic_sizes: vec![8, 32, 128],
            traffic_window: Duration::from_secs(120),
            heal_nodes: vec![32, 128],
            heal_late_after: Duration::from_secs(600),
            speed_sizes: vec![5, 100, 1000],
            speed_window: Duration::from_secs(60),
        };
        if !quick {
            return full;
        }
        Plan {
            detection_seeds: 2,
            false_down_seeds: 1,
            false_down_duration: Duration::from_secs(300),
            traffic_window: Duration::from_secs(30),
            heal_nodes: vec![32],
            heal_late_after: Duration::from_secs(120),
            speed_sizes: vec![5, 100],
            speed_window: Duration::from_secs(20),
            ..full
        }
    }
}

/// Seeds used: `1..=count`, offset per section so the sections do not share runs.
fn seeds(base: u64, count: u64) -> impl Iterator<Item = u64> {
    (1..=count).map(move |i| base + i)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn verdict(met: bool) -> &'static str {
    if met { "pass" } else { "**MISS**" }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Runs the sections asked for and prints the markdown report on stdout (progress on stderr).
pub fn run(args: MembershipArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let runs = |section| args.only.is_empty() || args.only.contains(&section);
    let started = Instant::now();
    let mut out = String::new();
    writeln!(out, "## Membership (simulator){}\n", if args.quick { " — QUICK run, figures indicative" } else { "" })?;
    writeln!(out, "Preset `{:?}`; network 1–10 ms one-way latency unless noted; plan: {plan:?}\n", Preset::Lan)?;
    if runs(Section::Detection) {
        detection(&plan, &mut out)?;
    }
    if runs(Section::FalseDowns) {
        false_downs(&plan, &mut out)?;
    }
    if runs(Section::Traffic) {
        traffic(&plan, &mut out)?;
    }
    if runs(Section::Speed) {
        speed(&plan, Duration::from_secs(args.speed_wall_max_secs), &mut out)?;
    }
    writeln!(out, "\nwall time of the membership benchmark: {:.0} s", started.elapsed().as_secs_f64())?;
    print!("{out}");
    Ok(())
}

fn config(name: &str, seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(name, seed, nodes).with_preset(Preset::Lan);
    config.replay = Some(format!("shoal-bench membership (run {name}, seed {seed}, {nodes} nodes)"));
    config
}

/// 1a: crash detection.
fn detection(plan: &Plan, out: &mut String) -> anyhow::Result<()> {
    writeln!(out, "### Crash detection (the last node crashes once the cluster has converged)\n")?;
    writeln!(
        out,
        "| N | seeds | first node marks it down, mean / max s | every node has it down, mean / max s | SWIM bound s | mean(every) / bound | target ≤ {DETECTION_RATIO_MAX} |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---|")?;
    let mut detail = String::new();
    for &n in &plan.detection_sizes {
        let (mut first, mut last, mut bound) = (Vec::new(), Vec::new(), Duration::ZERO);
        let mut failures = Vec::new();
        let used: Vec<u64> = seeds(100 + n as u64 * 1000, plan.detection_seeds).collect();
        for &seed in &used {
            let wall = Instant::now();
            match measure::crash_detection(config("detect", seed, n)) {
                Ok(Detection { first: f, last: l, bound: b }) => {
                    eprintln!(
                        "  detection N={n} seed={seed}: first {:.2} s, last {:.2} s, bound {:.2} s ({:.1} s wall)",
                        secs(f),
                        secs(l),
                        secs(b),
                        wall.elapsed().as_secs_f64()
                    );
                    writeln!(detail, "- N={n} seed={seed}: first {:.2} s, every node {:.2} s", secs(f), secs(l))?;
                    first.push(secs(f));
                    last.push(secs(l));
                    bound = b;
                }
                Err(failure) => failures.push(failure_line(&failure)),
            }
        }
        let ratio = mean(&last) / secs(bound);
        writeln!(
            out,
            "| {n} | {:?} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.2} | {}{} |",
            used,
            mean(&first),
            max(&first),
            mean(&last),
            max(&last),
            secs(bound),
            ratio,
            verdict(ratio <= DETECTION_RATIO_MAX && failures.is_empty()),
            if failures.is_empty() { String::new() } else { format!("; {} run(s) failed", failures.len()) }
        )?;
        for failure in failures {
            writeln!(detail, "- N={n}: FAILED {failure}")?;
        }
    }
    writeln!(out, "\nPer run:\n\n{detail}")?;
    Ok(())
}

fn failure_line(failure: &CheckFailure) -> String {
    format!("seed {} at {} ms: {} (replay: {})", failure.seed, failure.at_ms, failure.message, failure.replay)
}

/// 1b: false downs under loss.
fn false_downs(plan: &Plan, out: &mut String) -> anyhow::Result<()> {
    let n = plan.false_down_nodes;
    writeln!(
        out,
        "### False downs: N = {n}, {} s of virtual time at each loss rate (checker samples every view every second)\n",
        secs(plan.false_down_duration)
    )?;
    writeln!(
        out,
        "| loss | seed | false downs (observer→subject pairs) | identity renewals | packets sent / lost | target | verdict |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---|---|")?;
    for &loss in &plan.false_down_losses {
        for seed in seeds(200 + (loss * 1000.0) as u64 * 10, plan.false_down_seeds) {
            let wall = Instant::now();
            let target = if loss <= FALSE_DOWN_LOSS_MAX { "0" } else { "(none)" };
            match measure::false_downs(config("false-downs", seed, n), loss, plan.false_down_duration) {
                Ok(report) => {
                    let count = report.false_downs.len();
                    eprintln!(
                        "  false downs N={n} loss={loss} seed={seed}: {count} false downs, {} renewals ({:.1} s wall)",
                        report.renewals,
                        wall.elapsed().as_secs_f64()
                    );
                    let judged = if loss <= FALSE_DOWN_LOSS_MAX { verdict(count == 0) } else { "" };
                    writeln!(
                        out,
                        "| {:.0} % | {seed} | {count} | {} | {} / {} | {target} | {judged} |",
                        loss * 100.0,
                        report.renewals,
                        report.stats.packets_sent,
                        report.stats.dropped_loss
                    )?;
                    for down in report.false_downs.iter().take(5) {
                        writeln!(
                            out,
                            "|  | | node {} marked node {} down at {:.1} s | | | | |",
                            down.observer,
                            down.subject,
                            down.since_ms as f64 / 1e3
                        )?;
                    }
                }
                Err(failure) => {
                    eprintln!("  false downs N={n} loss={loss} seed={seed}: FAILED {}", failure_line(&failure));
                    writeln!(
                        out,
                        "| {:.0} % | {seed} | run failed: {} | | | {target} | **MISS** |",
                        loss * 100.0,
                        failure.message
                    )?;
                }
            }
        }
    }
    writeln!(out)?;
    Ok(())
}

/// Packets and bytes per member per second sent between two stats snapshots.
fn per_member(before: SimStats, after: SimStats, members: usize, window: Duration) -> (f64, f64) {
    let member_seconds = members as f64 * secs(window);
    (
        (after.packets_sent - before.packets_sent) as f64 / member_seconds,
        (after.bytes_sent - before.bytes_sent) as f64 / member_seconds,
    )
}

/// 1c: steady traffic, and traffic after a 50/50 partition heals.
fn traffic(plan: &Plan, out: &mut String) -> anyhow::Result<()> {
    writeln!(
        out,
        "### Gossip traffic per member (everything a member sends, probes and gossip), {} s window\n",
        secs(plan.traffic_window)
    )?;
    writeln!(out, "| N | packets / member / s | bytes / member / s |")?;
    writeln!(out, "|---:|---:|---:|")?;
    let (mut packets, mut bytes) = (Vec::new(), Vec::new());
    for &n in &plan.traffic_sizes {
        let wall = Instant::now();
        match measure::steady_traffic(config("traffic", 300 + n as u64, n), plan.traffic_window) {
            Ok(traffic) => {
                eprintln!(
                    "  traffic N={n}: {:.2} packets, {:.0} bytes per member per s ({:.1} s wall)",
                    traffic.packets_per_member_per_sec,
                    traffic.bytes_per_member_per_sec,
                    wall.elapsed().as_secs_f64()
                );
                writeln!(
                    out,
                    "| {n} | {:.2} | {:.0} |",
                    traffic.packets_per_member_per_sec, traffic.bytes_per_member_per_sec
                )?;
                packets.push(traffic.packets_per_member_per_sec);
                bytes.push(traffic.bytes_per_member_per_sec);
            }
            Err(failure) => writeln!(out, "| {n} | run failed: {} | |", failure_line(&failure))?,
        }
    }
    writeln!(
        out,
        "\nWhere the bytes go (same runs, replayed with a tap on every delivered datagram; bytes per member per second by datagram size, and the busiest node):\n"
    )?;
    writeln!(
        out,
        "| N | < 128 B | 128–511 B | 512–1023 B | ≥ 1024 B | mean datagram B | busiest node: index, bytes / s |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for &n in &plan.traffic_sizes {
        match traffic_breakdown(config("traffic", 300 + n as u64, n), plan.traffic_window) {
            Ok(b) => writeln!(
                out,
                "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {}, {:.0} |",
                b.bytes_by_size[0],
                b.bytes_by_size[1],
                b.bytes_by_size[2],
                b.bytes_by_size[3],
                b.mean_datagram,
                b.busiest.0,
                b.busiest.1
            )?,
            Err(failure) => writeln!(out, "| {n} | run failed: {} | | | | | |", failure_line(&failure))?,
        }
    }
    let spread = |values: &[f64]| {
        let m = mean(values);
        values.iter().map(|v| (v - m).abs() / m).fold(0.0, f64::max)
    };
    let (packet_spread, byte_spread) = (spread(&packets), spread(&bytes));
    writeln!(
        out,
        "\nLargest deviation from the mean over N: packets {:.1} %, bytes {:.1} % (target ≤ {:.0} %): {}\n",
        packet_spread * 100.0,
        byte_spread * 100.0,
        TRAFFIC_SPREAD_MAX * 100.0,
        verdict(
            packet_spread <= TRAFFIC_SPREAD_MAX
                && byte_spread <= TRAFFIC_SPREAD_MAX
                && packets.len() == plan.traffic_sizes.len()
        )
    )?;

    writeln!(out, "#### After a 50/50 partition heals\n")?;
    writeln!(
        out,
        "Same cluster throughout: a {} s window before the partition, the partition until each half sees the other down, the heal, a {} s window once the views converge again, and the same window again {} s after the heal.\n",
        secs(plan.traffic_window),
        secs(plan.traffic_window),
        secs(plan.heal_late_after)
    )?;
    writeln!(
        out,
        "| N | split seen after s | reconverged after s | packets / member / s: before / after heal / later | bytes / member / s: before / after heal / later | after ÷ before (packets, bytes) | renewals |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for &n in &plan.heal_nodes {
        let wall = Instant::now();
        match healed_traffic(config("heal-traffic", 400 + n as u64, n), plan) {
            Ok(h) => {
                eprintln!("  heal traffic N={n}: {h:?} ({:.1} s wall)", wall.elapsed().as_secs_f64());
                writeln!(
                    out,
                    "| {n} | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} | {:.0} / {:.0} / {:.0} | {:.2}, {:.2} | {} |",
                    secs(h.split),
                    secs(h.healed),
                    h.before.0,
                    h.after.0,
                    h.late.0,
                    h.before.1,
                    h.after.1,
                    h.late.1,
                    h.late.0 / h.before.0,
                    h.late.1 / h.before.1,
                    h.renewals
                )?;
            }
            Err(failure) => writeln!(out, "| {n} | run failed: {} | | | | | |", failure_line(&failure))?,
        }
    }
    writeln!(out)?;
    Ok(())
}

/// Delivered bytes per member per second by datagram size, and the node that sends most.
struct Breakdown {
    bytes_by_size: [f64; 4],
    mean_datagram: f64,
    busiest: (usize, f64),
}

/// The [`measure::steady_traffic`] run again, with a tap on every delivered datagram.
fn traffic_breakdown(config: SimConfig, window: Duration) -> Result<Breakdown, CheckFailure> {
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    let n = sim.len();
    let sizes: Rc<RefCell<[u64; 5]>> = Rc::default();
    let tap_sizes = Rc::clone(&sizes);
    sim.set_tap(Some(Box::new(move |_, _, _, bytes: &[u8]| {
        let len = bytes.len();
        let bucket = match len {
            0..128 => 0,
            128..512 => 1,
            512..1024 => 2,
            _ => 3,
        };
        let mut sizes = tap_sizes.borrow_mut();
        sizes[bucket] += len as u64;
        sizes[4] += 1;
    })));
    let sent_before: Vec<(u64, u64)> = (0..n).map(|index| sim.sent_by(index)).collect();
    sim.run_for(window);
    sim.set_tap(None);
    let member_seconds = n as f64 * secs(window);
    let sizes = *sizes.borrow();
    let total: u64 = sizes[..4].iter().sum();
    let busiest = (0..n)
        .map(|index| (index, (sim.sent_by(index).1 - sent_before[index].1) as f64 / secs(window)))
        .fold((0, 0.0), |best, this| if this.1 > best.1 { this } else { best });
    Ok(Breakdown {
        bytes_by_size: [0, 1, 2, 3].map(|bucket| sizes[bucket] as f64 / member_seconds),
        mean_datagram: total as f64 / sizes[4].max(1) as f64,
        busiest,
    })
}

#[derive(Debug)]
struct Healed {
    split: Duration,
    healed: Duration,
    before: (f64, f64),
    after: (f64, f64),
    late: (f64, f64),
    renewals: u64,
}

fn healed_traffic(config: SimConfig, plan: &Plan) -> Result<Healed, CheckFailure> {
    let mut sim = Sim::new(config);
    start_and_converge(&mut sim)?;
    let n = sim.len();
    let window = plan.traffic_window;
    let measure_window = |sim: &mut Sim| {
        let before = sim.stats();
        sim.run_for(window);
        per_member(before, sim.stats(), n, window)
    };
    let before = measure_window(&mut sim);
    let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|&index| index < n / 2);
    sim.partition(&[&a, &b]);
    let bound = sim.membership_config().detection_bound(n as u32);
    let split = sim.wait_for("each half to mark the other down", bound * 30, |sim| check_split(sim, &a, &b))?;
    sim.heal();
    let healed_at = sim.now();
    let healed = sim.wait_for("the views to converge after the heal", RECONVERGE_MAX, Sim::check_converged)?;
    let after = measure_window(&mut sim);
    let late_start = healed_at + plan.heal_late_after;
    if sim.now() < late_start {
        sim.run_for(late_start - sim.now());
    }
    let late = measure_window(&mut sim);
    sim.check_converged()?;
    Ok(Healed { split, healed, before, after, late, renewals: sim.renewals() })
}

/// 1d: simulator speed. The join and a steady window are timed separately; the 1,000-node
/// run stops (and says so) when it reaches the wall-clock cap.
fn speed(plan: &Plan, wall_max: Duration, out: &mut String) -> anyhow::Result<()> {
    writeln!(out, "### Simulator speed (release build, one thread)\n")?;
    writeln!(
        out,
        "| N | join: simulated s / wall s | window after the join: simulated s / wall s | steady simulated s per wall s | events / wall s | whole run simulated s per wall s |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|")?;
    for &n in &plan.speed_sizes {
        let mut config = config("speed", 500 + n as u64, n);
        // Checking convergence reads every view (n² members): every 250 ms of virtual time it
        // would cost more than the simulation itself at 1,000 nodes.
        if n >= 500 {
            config.poll_interval = Duration::from_secs(5);
        }
        let bound = Instant::now();
        let mut sim = Sim::new(config);
        sim.start_all(Duration::from_millis(10));
        let mut timed_out = false;
        let converged = sim.run_until(
            |sim| {
                if bound.elapsed() > wall_max * 3 / 4 {
                    timed_out = true;
                    return true;
                }
                sim.is_converged()
            },
            Duration::from_secs(300),
        );
        let join_wall = bound.elapsed();
        let join_sim = sim.now();
        let join_note = if timed_out || !converged {
            // How far the join got: members seen alive (itself included) by a sample of nodes.
            let sample: Vec<usize> = (0..n).step_by((n / 10).max(1)).collect();
            let alive: Vec<usize> = sample.iter().map(|&observer| sim.alive_count(observer)).collect();
            format!(
                " (join NOT converged{}; sampled nodes see {}–{} of {n} alive)",
                if timed_out { ": stopped at 3/4 of the wall cap" } else { " within 300 simulated s" },
                alive.iter().min().copied().unwrap_or(0),
                alive.iter().max().copied().unwrap_or(0)
            )
        } else {
            String::new()
        };
        let events_before = sim.stats().events;
        let steady_started = Instant::now();
        let steady_sim_start = sim.now();
        let step = Duration::from_secs(1);
        while sim.now() - steady_sim_start < plan.speed_window && bound.elapsed() < wall_max {
            sim.run_for(step);
        }
        let steady_wall = steady_started.elapsed();
        let steady_sim = sim.now() - steady_sim_start;
        let events = sim.stats().events - events_before;
        let total_wall = bound.elapsed();
        eprintln!(
            "  speed N={n}: join {:.1} sim s in {:.2} wall s{join_note}; steady {:.1} sim s in {:.2} wall s, {events} events",
            secs(join_sim),
            secs(join_wall),
            secs(steady_sim),
            secs(steady_wall)
        );
        writeln!(
            out,
            "| {n} | {:.1} / {:.2}{join_note} | {:.1} / {:.2}{} | {:.1} | {:.0} | {:.1} |",
            secs(join_sim),
            secs(join_wall),
            secs(steady_sim),
            secs(steady_wall),
            if steady_sim < plan.speed_window { " (cut at the wall cap)" } else { "" },
            secs(steady_sim) / secs(steady_wall).max(1e-9),
            events as f64 / secs(steady_wall).max(1e-9),
            secs(sim.now()) / secs(total_wall).max(1e-9)
        )?;
    }
    writeln!(out)?;
    Ok(())
}
