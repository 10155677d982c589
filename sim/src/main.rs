//! `shoal-sim`: runs one simulator scenario from a seed, prints `SEED=` and its parameters
//! first and a summary at the end; on a failed check, prints the command that replays the run
//! and exits non-zero.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_sim::{Scenario, ScenarioOptions};
use tracing_subscriber::EnvFilter;

/// Runs a Shoal simulator scenario.
#[derive(Debug, Parser)]
#[command(name = "shoal-sim", version, about)]
struct Args {
    /// Scenario: join, crash, partition, loss, restart, leave, garbage, swarm, or, with clients
    /// reading and writing files through the replication core: data-faults, clock-skew,
    /// ring-change, minority, split, joins, flap, wipe.
    scenario: Scenario,
    /// Seed of the run; a random one (printed) if not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of nodes (each scenario has a default).
    #[arg(long)]
    nodes: Option<usize>,
    /// Length of the fault phase in virtual seconds (`loss`, `swarm`, `data-faults`,
    /// `clock-skew`, `ring-change`; the partition's for `minority`).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Runs this many consecutive seeds, starting at `--seed`, and stops at the first failure.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// With `--count`: runs every seed whatever fails, prints one line per seed, then the
    /// number that passed and the seeds that failed (a sweep).
    #[arg(long)]
    keep_going: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let first_seed = args.seed.unwrap_or_else(random_seed);
    if args.keep_going {
        return sweep(&args, first_seed);
    }
    for seed in first_seed..first_seed.saturating_add(args.count) {
        let options =
            ScenarioOptions { seed, nodes: args.nodes, duration: args.duration_secs.map(Duration::from_secs) };
        let (result, wall) = timed(|| args.scenario.run(&options));
        match result {
            Ok(summary) => {
                println!("{summary}");
                let ratio = summary.virtual_time.as_secs_f64() / wall.as_secs_f64().max(1e-9);
                println!("  wall-clock time: {:.2} s ({ratio:.0} simulated seconds per second)", wall.as_secs_f64());
            }
            Err(failure) => {
                println!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Runs `args.count` seeds from `first_seed`, one line each, and sums them up.
fn sweep(args: &Args, first_seed: u64) -> ExitCode {
    let mut failed = Vec::new();
    for seed in first_seed..first_seed.saturating_add(args.count) {
        let options =
            ScenarioOptions { seed, nodes: args.nodes, duration: args.duration_secs.map(Duration::from_secs) };
        match args.scenario.run(&options) {
            Ok(_) => println!("seed {seed}: ok"),
            Err(failure) => {
                let first_line = failure.to_string().lines().next().unwrap_or_default().to_string();
                println!("seed {seed}: FAILED {first_line}");
                failed.push(seed);
            }
        }
    }
    println!(
        "{:?}: {} of {} seeds passed; failed: {failed:?}",
        args.scenario,
        args.count - failed.len() as u64,
        args.count
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A seed for a run the user did not pin. Only this binary may read the clock: the simulator
/// takes everything from the seed.
#[allow(clippy::disallowed_methods)]
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// Runs `f` and measures its wall-clock time, for the simulated-seconds-per-second figure.
#[allow(clippy::disallowed_methods)]
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = std::time::Instant::now();
    let result = f();
    (result, start.elapsed())
}
