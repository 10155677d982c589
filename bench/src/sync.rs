//! `shoal-bench sync`: what an anti-entropy exchange costs (docs/ARCHITECTURE.md §7). Two
//! in-memory stores hold the same 1,000,000 file records except for `d` records only one of
//! them holds; one [`SyncSession`] over every partition brings them together. The bytes each
//! way are the encoded messages exactly as the RPC carries them, split into finding the
//! differences (digests, listings) and moving them (fetches, merges); round trips count the
//! questions put to both sides. The floor is the information-theoretic one for naming `d`
//! of 2^256 hashes: d · (256 − log2 d + 1.44) bits. Also: the CPU cost a write pays for its
//! digest, and how long a fjall store of 1,000,000 records takes to rebuild its digests and to
//! reopen.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_membership::Partition;
use shoal_node::core::replication::{Op, PartitionSet, Reply, Request, SyncRpc, SyncSession, replica};
use shoal_node::core::wire::encode_message;
use shoal_storage::{
    Digest, DigestKind, EntryKey, FileRecord, FjallStore, FjallStoreConfig, MemStore, NodeId, Prefix, RecordUpdate,
    Store, Version,
};

use crate::report::{Report, Verdict};

/// Options of `sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// 100,000 keys instead of 1,000,000 (the figures mean less).
    #[arg(long)]
    pub quick: bool,
}

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// Bytes and round trips of one exchange.
#[derive(Debug, Default)]
struct Traffic {
    find_to_b: usize,
    find_to_a: usize,
    move_to_b: usize,
    move_to_a: usize,
    round_trips: u64,
    differences: u64,
}

pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    let keys: u64 = if args.quick { 100_000 } else { 1_000_000 };
    let mut report = Report::default();
    report.note(format!("load average at start: {}", crate::load_average()));
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| keys | d | round trips | finding: A→B / B→A bytes | moving: A→B / B→A bytes | floor (bytes) | finding ÷ floor |"
    );
    let _ = writeln!(table, "|---:|---:|---:|---:|---:|---:|---:|");
    for d in [0u64, 1, 1000] {
        eprintln!("  sync: {keys} keys, {d} differences...");
        let (a, b) = (filled(keys), filled(keys));
        for i in 0..d {
            a.merge_records(&[record(&format!("/only-a/{i}"), 1)])?;
        }
        let traffic = exchange(&a, &b);
        let floor = floor_bytes(d);
        let found = (traffic.find_to_b + traffic.find_to_a) as f64;
        let ratio = if floor > 0.0 { format!("{:.1}", found / floor) } else { "–".into() };
        let _ = writeln!(
            table,
            "| {keys} | {d} | {} | {} / {} | {} / {} | {floor:.0} | {ratio} |",
            traffic.round_trips, traffic.find_to_b, traffic.find_to_a, traffic.move_to_b, traffic.move_to_a
        );
        assert_eq!(traffic.differences, d, "the exchange found exactly the differences");
        assert_eq!(
            a.digest(DigestKind::Files, Prefix::ROOT)?,
            b.digest(DigestKind::Files, Prefix::ROOT)?,
            "the stores are equal afterwards"
        );
        judge(&mut report, keys, d, &traffic, floor);
    }
    digest_costs(&mut report, keys)?;
    report.note(format!("load average at end: {}", crate::load_average()));
    println!("{}\n{table}", report.markdown());
    Ok(())
}

fn judge(report: &mut Report, keys: u64, d: u64, traffic: &Traffic, floor: f64) {
    let found = traffic.find_to_b + traffic.find_to_a;
    let what = format!("exchange, {keys} keys, d = {d}");
    let result = format!("{} round trips, {found} bytes finding the differences", traffic.round_trips);
    match d {
        0 => report.row(what, result, "1 round trip, < 1 KiB", Verdict::of(traffic.round_trips == 1 && found < 1024)),
        1 => report.row(what, result, "≤ 8 KiB", Verdict::of(found <= 8 * 1024)),
        _ => report.row(
            what,
            result,
            format!("≤ 10 × floor = {:.0} bytes", 10.0 * floor),
            Verdict::of(found as f64 <= 10.0 * floor),
        ),
    }
}

/// d · (256 − log2 d + 1.44) bits, in bytes.
fn floor_bytes(d: u64) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let d = d as f64;
    d * (256.0 - d.log2() + 1.44) / 8.0
}

fn record(path: &str, hlc: u64) -> RecordUpdate {
    RecordUpdate::File(path.into(), FileRecord { version: Version { hlc, node: A }, meta: None })
}

/// A store of `keys` file records.
fn filled(keys: u64) -> MemStore {
    let store = MemStore::new(1 << 30);
    let batch: Vec<u64> = (0..keys).collect();
    for chunk in batch.chunks(1000) {
        let updates: Vec<RecordUpdate> = chunk.iter().map(|i| record(&format!("/data/{i:08}"), 1)).collect();
        // An in-memory store only fails when full, which records never make it.
        let _ = store.merge_records(&updates);
    }
    store
}

/// Runs one exchange between `a` (the initiator) and `b`, counting encoded bytes.
fn exchange(a: &MemStore, b: &MemStore) -> Traffic {
    let mut session = SyncSession::unbounded(A, B, PartitionSet::of(Partition::all()));
    let mut traffic = Traffic::default();
    let mut pending = std::collections::VecDeque::new();
    loop {
        while let Some(outgoing) = session.poll_request() {
            let finding = matches!(
                outgoing.request,
                Request::Sync(SyncRpc::Roots { .. } | SyncRpc::Children { .. } | SyncRpc::Entries { .. })
            );
            let to_b = outgoing.to == B;
            let request_bytes = encode_message(&outgoing.request).map_or(0, |bytes| bytes.len());
            let reply: Reply = replica::serve(if to_b { b } else { a }, outgoing.request);
            let reply_bytes = encode_message(&reply).map_or(0, |bytes| bytes.len());
            // Only what crosses the network: requests to B and B's replies.
            if to_b {
                if finding {
                    traffic.find_to_b += request_bytes;
                    traffic.find_to_a += reply_bytes;
                } else {
                    traffic.move_to_b += request_bytes;
                    traffic.move_to_a += reply_bytes;
                }
            }
            pending.push_back((outgoing.token, reply));
        }
        let Some((token, reply)) = pending.pop_front() else { break };
        session.handle_reply(0, token, Ok(reply));
    }
    if let Some(outcome) = session.poll_outcome() {
        traffic.round_trips = outcome.round_trips;
        traffic.differences = outcome.differences;
    }
    traffic
}

/// What a write pays for its digest, and how long a store of `keys` records takes to rebuild
/// and to reload its digests.
fn digest_costs(report: &mut Report, keys: u64) -> anyhow::Result<()> {
    let key = EntryKey::File("/data/00000042".into());
    let value = [7u8; 40];
    let rounds = 1_000_000u32;
    let start = Instant::now();
    let mut acc = Digest::EMPTY;
    for i in 0..rounds {
        let mut hash = key.hash(&value[..(i % 40) as usize]);
        hash.toggle(&acc);
        acc = std::hint::black_box(hash);
    }
    let per_write = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    report.info("digest work per write (entry hash + XOR, one core)", format!("{per_write:.0} ns"));

    let dir = tempfile::tempdir()?;
    let store =
        Arc::new(FjallStore::open(FjallStoreConfig { disk_reserve_bytes: 0, ..FjallStoreConfig::new(dir.path()) })?);
    let started = Instant::now();
    let all: Vec<u64> = (0..keys).collect();
    for chunk in all.chunks(1000) {
        let updates: Vec<RecordUpdate> = chunk.iter().map(|i| record(&format!("/data/{i:08}"), 1)).collect();
        store.merge_records(&updates)?;
    }
    store.sync()?;
    let write = started.elapsed();
    report.info(format!("fjall: {keys} records written in batches of 1,000, digests included"), secs(write));
    let started = Instant::now();
    store.rebuild_digests()?;
    report.info(format!("fjall: digests rebuilt from {keys} records"), secs(started.elapsed()));
    drop(store);
    let started = Instant::now();
    let reopened = FjallStore::open(FjallStoreConfig { disk_reserve_bytes: 0, ..FjallStoreConfig::new(dir.path()) })?;
    report.info(format!("fjall: reopen, digests loaded from the index of {keys}"), secs(started.elapsed()));
    anyhow::ensure!(reopened.digest_len(DigestKind::Files)? == keys, "every record indexed");
    Ok(())
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}
