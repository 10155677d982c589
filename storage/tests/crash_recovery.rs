//! A writer process is killed with SIGKILL mid-write, again and again; after each kill the
//! store reopens with every acknowledged (synced) write intact and nothing half-written
//! visible: no record without its blocks, no block whose bytes do not match its name.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_storage::{
    BlockHash, FileMeta, FileRecord, FjallStore, FjallStoreConfig, NodeId, RecordUpdate, Store, Version,
};

const CHILD_DIR: &str = "SHOAL_CRASH_CHILD_DIR";
const CHILD_START: &str = "SHOAL_CRASH_CHILD_START";
const WRITER_THREADS: u64 = 4;
const KEYS_PER_THREAD: u64 = 10_000;

/// The content written under key `i`: small and large blocks alternate, so both the fjall
/// path and the block-file path are cut off mid-write.
fn content(i: u64) -> Vec<u8> {
    let size = if i.is_multiple_of(2) { 1_000 } else { 150_000 };
    let mut bytes = vec![(i % 251) as u8; size];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes
}

fn path(i: u64) -> String {
    format!("/crash/{i}")
}

fn open(dir: &std::path::Path) -> FjallStore {
    FjallStore::open(FjallStoreConfig { disk_reserve_bytes: 0, ..FjallStoreConfig::new(dir) }).expect("open")
}

/// Writes block then record then syncs, and only then reports the key as acknowledged.
fn run_writer(dir: &std::path::Path, start: u64) -> ! {
    let store = open(dir);
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|scope| {
        for thread in 0..WRITER_THREADS {
            let (store, stdout) = (&store, &stdout);
            scope.spawn(move || {
                for k in 0..KEYS_PER_THREAD {
                    let i = start + thread * KEYS_PER_THREAD + k;
                    let bytes = content(i);
                    let hash = BlockHash::of(&bytes);
                    store.put_block(&hash, &bytes).expect("put block");
                    let meta = FileMeta {
                        size: bytes.len() as u64,
                        content_hash: hash,
                        block_size: 1 << 20,
                        blocks: vec![hash],
                    };
                    let record = FileRecord { version: Version { hlc: i, node: NodeId(1) }, meta: Some(meta) };
                    store.merge_records(&[RecordUpdate::File(path(i), record)]).expect("merge");
                    store.sync().expect("sync");
                    let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
                    writeln!(out, "acked {i}").expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
    std::process::exit(0)
}

#[test]
fn synced_writes_survive_kill_9_and_nothing_half_written_is_visible() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let start = std::env::var(CHILD_START).ok().and_then(|s| s.parse().ok()).expect("start");
        run_writer(std::path::Path::new(&dir), start);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut acked: Vec<u64> = Vec::new();
    let rounds = 8u64;
    for round in 0..rounds {
        let start = round * WRITER_THREADS * KEYS_PER_THREAD;
        let mut child = Command::new(&exe)
            .args(["--exact", "synced_writes_survive_kill_9_and_nothing_half_written_is_visible", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| line.strip_prefix("acked ").and_then(|i| i.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        });
        // Different moments in each round: during open, early writes, steady state.
        std::thread::sleep(Duration::from_millis(150 + round * 70));
        child.kill().expect("kill -9 the writer");
        child.wait().expect("reap the writer");
        let round_acked = reader.join().expect("reader");
        acked.extend(&round_acked);

        let store = open(dir.path());
        for &i in &acked {
            let record = store.get_file(&path(i)).expect("read record").unwrap_or_else(|| panic!("acked key {i} lost"));
            let meta = record.meta.expect("a live record");
            let block = store.get_block(&meta.blocks[0]).expect("verified block").expect("acked block present");
            assert_eq!(&block[..], &content(i)[..], "key {i}");
        }
        // Unacknowledged keys of this round may or may not be there, but never half-there.
        for i in start..start + WRITER_THREADS * KEYS_PER_THREAD {
            if let Some(record) = store.get_file(&path(i)).expect("read record") {
                let meta = record.meta.expect("a live record");
                assert!(
                    store.get_block(&meta.blocks[0]).expect("verified block").is_some(),
                    "key {i} has a record without its block"
                );
            }
        }
        drop(store);
        eprintln!(
            "round {round}: {} acknowledged in this round, {} in all, all intact",
            round_acked.len(),
            acked.len()
        );
    }
    assert!(acked.len() > 100, "the writer should have acknowledged writes before being killed ({} did)", acked.len());
}
