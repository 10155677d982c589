//! `shoal-bench ring`: what the consistent-hash ring costs in process. A preference-list lookup
//! (`Ring::owners`) runs once per record key and once per block a request touches; a rebuild
//! (`Ring::new`) runs on every membership change. Both are measured at 10, 100 and 1,000
//! members of equal capacity (512 virtual nodes each), N = 3, with one zone (the default
//! configuration) and with three zones (each preference list spread over distinct zones).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use shoal_membership::{Partition, Ring, RingMember, VNODES_PER_MEDIAN_MEMBER};

/// The partition a key falls in, as the node places it.
fn partition(key: &[u8]) -> Partition {
    Partition::of_position(shoal_storage::position(key))
}

use crate::report::Report;

/// Replicas per key: the node's default N.
const REPLICAS: usize = 3;
/// Cluster sizes measured.
const SIZES: [usize; 3] = [10, 100, 1000];
/// Distinct keys looked up, in a fixed pseudo-random order: enough that the lookups touch
/// the whole ring rather than a few cached arcs.
const KEYS: usize = 100_000;
/// Each lookup figure is the median of this many timed passes.
const PASSES: usize = 3;

/// Options of `ring`.
#[derive(Debug, clap::Args)]
pub struct RingArgs {
    /// Fewer lookups and rebuilds for a smoke run (the figures mean less).
    #[arg(long)]
    pub quick: bool,
}

/// How much the benchmark does.
#[derive(Debug, Clone, Copy)]
pub struct RingPlan {
    /// Lookups per timed pass.
    lookups: usize,
    /// Rebuilds are repeated until at least this much time was spent...
    build_time_min: Duration,
    /// ...and at least this many were timed.
    builds_min: usize,
}

impl RingPlan {
    /// The full plan, or the `--quick` one.
    pub fn new(quick: bool) -> Self {
        if quick {
            RingPlan { lookups: 200_000, build_time_min: Duration::from_millis(200), builds_min: 2 }
        } else {
            RingPlan { lookups: 2_000_000, build_time_min: Duration::from_secs(1), builds_min: 5 }
        }
    }
}

/// Runs `shoal-bench ring` and prints its report.
pub fn run(args: RingArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    report.note(format!("load average at start: {}", crate::load_average()));
    let table = measure(RingPlan::new(args.quick), &mut report);
    report.note(format!("load average at end: {}", crate::load_average()));
    println!("{}\n{table}", report.markdown());
    Ok(())
}

/// `count` members with pseudo-random ids, equal capacity, spread over `zones` zones.
fn members(count: usize, zones: usize) -> Vec<RingMember> {
    shoal_tests::pseudo_random_bytes(count as u64, count * 16)
        .chunks_exact(16)
        .enumerate()
        .map(|(index, id)| RingMember {
            node_id: u128::from_le_bytes(id.try_into().expect("16 bytes")),
            zone: format!("zone-{}", index % zones),
            capacity_bytes: 1 << 40,
        })
        .collect()
}

/// Block names (32-byte BLAKE3 hashes), the most common key a node looks up: one per block.
fn keys() -> Vec<[u8; 32]> {
    (0..KEYS as u64).map(|index| *blake3::hash(&index.to_le_bytes()).as_bytes()).collect()
}

/// The median of some durations.
fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

/// Nanoseconds per call of `pass` over `lookups` keys, the median of [`PASSES`] passes.
fn per_lookup_ns(lookups: usize, mut pass: impl FnMut(usize) -> u128) -> f64 {
    let runs = (0..PASSES)
        .map(|_| {
            let start = Instant::now();
            black_box(pass(lookups));
            start.elapsed()
        })
        .collect();
    median(runs).as_secs_f64() * 1e9 / lookups as f64
}

/// Measures every size and zone layout; adds a summary row per size to `report` and returns
/// the full table as markdown.
pub fn measure(plan: RingPlan, report: &mut Report) -> String {
    let keys = keys();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| members | zones | virtual nodes | `Ring::new` median (min–max, builds) | `owners()` iterated, ns/call | `owners()` collected into a `Vec<u128>`, ns/call | `position` (the key's hash) alone, ns/call | largest primary share ÷ mean |"
    );
    let _ = writeln!(table, "|---:|---:|---:|---|---:|---:|---:|---:|");
    for size in SIZES {
        for zones in [1, 3] {
            eprintln!("  ring: {size} members, {zones} zone(s)...");
            let members = members(size, zones);
            let mut builds = Vec::new();
            let started = Instant::now();
            while builds.len() < plan.builds_min || started.elapsed() < plan.build_time_min {
                let input = members.clone();
                let start = Instant::now();
                let ring = Ring::new(input, REPLICAS);
                builds.push(start.elapsed());
                drop(black_box(ring));
            }
            let (fastest, slowest) = (builds.iter().min().copied(), builds.iter().max().copied());
            let count = builds.len();
            let build = median(builds);

            let ring = Ring::new(members, REPLICAS);
            // Checked outside the timing: every key has N distinct owners, spread over the
            // zones when there are enough of them.
            for key in keys.iter().take(1000) {
                let owners: Vec<&RingMember> = ring.owners(partition(key)).collect();
                assert_eq!(owners.len(), REPLICAS, "a preference list has N owners");
                for (i, owner) in owners.iter().enumerate() {
                    assert!(owners[..i].iter().all(|o| o.node_id != owner.node_id), "owners are distinct");
                    if zones >= REPLICAS {
                        assert!(owners[..i].iter().all(|o| o.zone != owner.zone), "owners are in distinct zones");
                    }
                }
            }
            let iterated = per_lookup_ns(plan.lookups, |lookups| {
                let mut acc = 0u128;
                for i in 0..lookups {
                    for owner in ring.owners(partition(black_box(&keys[i % KEYS]))) {
                        acc ^= owner.node_id;
                    }
                }
                acc
            });
            let collected = per_lookup_ns(plan.lookups, |lookups| {
                let mut acc = 0u128;
                for i in 0..lookups {
                    let owners: Vec<u128> =
                        ring.owners(partition(black_box(&keys[i % KEYS]))).map(|m| m.node_id).collect();
                    acc ^= black_box(owners)[0];
                }
                acc
            });
            let token = per_lookup_ns(plan.lookups, |lookups| {
                let mut acc = 0u128;
                for i in 0..lookups {
                    acc ^= u128::from(shoal_storage::position(black_box(&keys[i % KEYS])));
                }
                acc
            });
            let shares = ring.primary_shares();
            let mean = 1.0 / shares.len() as f64;
            let largest = shares.iter().map(|(_, share)| *share).fold(0.0, f64::max);
            let vnodes = size * VNODES_PER_MEDIAN_MEMBER as usize;
            let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
            let _ = writeln!(
                table,
                "| {size} | {zones} | {vnodes} | {:.2} ms ({:.2}–{:.2}, {count}) | {iterated:.1} | {collected:.1} | {token:.1} | {:.2} |",
                build.as_secs_f64() * 1e3,
                ms(fastest),
                ms(slowest),
                largest / mean
            );
            if zones == 1 {
                report.info(
                    format!("ring of {size} members (1 zone, N = 3): `owners()` iterated / collected; `Ring::new`"),
                    format!(
                        "{iterated:.0} / {collected:.0} ns per lookup; {:.2} ms per build",
                        build.as_secs_f64() * 1e3
                    ),
                );
            }
        }
    }
    let _ = writeln!(
        table,
        "\n{} lookups per timed pass over {KEYS} distinct 32-byte keys (block names), median of {PASSES} passes; \
         `Ring::new` repeated for at least {:?} and {} builds, its input cloned outside the timing.",
        plan.lookups, plan.build_time_min, plan.builds_min
    );
    table
}
