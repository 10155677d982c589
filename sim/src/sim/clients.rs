//! The simulated clients: PUT, GET, DELETE and record reads through any node's core, a
//! random workload, and the history the checkers read. A client here is what a user of the
//! HTTP API is to the real node: it starts an operation through the core's client interface
//! and takes its answer; it checks what it reads against what was written.

use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use shoal_core::files::{FileError, ReadPlan};
use shoal_core::node::{Client, ClientId, Deleted, Put, PutProgress, Read, RecordRead};
use shoal_storage::{BlockHash, FileMeta, FileRecord, Version};

use super::data::{DataEvent, Workload};
use super::{EventKind, Sim, duration_us};
use crate::history::{ClientKind, History, OpRecord, Outcome};

/// A client operation in progress.
pub(super) struct ClientOp {
    kind: ClientKind,
    pub(super) node: usize,
    path: String,
    start_us: u64,
    /// For a PUT, the content's BLAKE3.
    content_hash: Option<BlockHash>,
    /// The coordinator's ring when it started (for the history).
    ring: (Vec<usize>, bool),
    from_workload: bool,
    stage: Stage,
}

enum Stage {
    /// Not started (or refused at once).
    Starting,
    /// A PUT's upload, blocks then record.
    Put(Client<Put>),
    /// A GET looks the file up.
    Stat(Client<shoal_core::files::FileStat>),
    /// A record read asks the owners for the file record.
    ReadRecord(Client<RecordRead>),
    /// A GET or record read streams the content of the version it found.
    Read { read: Client<Read>, version: Version, meta: FileMeta, content: Vec<u8> },
    /// A DELETE writes its tombstone.
    Delete(Client<Deleted>),
}

impl Sim {
    /// Every client operation so far: finished ones, abandoned ones and those in flight.
    pub fn history(&self) -> History {
        let data = self.data();
        let mut history = data.history.clone();
        for (&id, client) in &data.clients {
            history.ops.push(record(id, client, None, Outcome::Pending));
        }
        history.ops.sort_by_key(|op| op.id);
        history
    }

    /// The record of client operation `id` once it ended (answered or abandoned).
    pub fn client_outcome(&self, id: u64) -> Option<&OpRecord> {
        let data = self.data();
        if data.clients.contains_key(&id) {
            return None;
        }
        data.history.ops.iter().rev().find(|op| op.id == id)
    }

    /// Client operations not yet answered.
    pub fn clients_in_flight(&self) -> usize {
        self.data().clients.len()
    }

    fn new_client(&mut self, kind: ClientKind, node: usize, path: &str) -> u64 {
        assert!(self.nodes[node].status.is_up(), "node {node} is not running");
        self.feed_view(node);
        let ring = self.placement(node).map_or((Vec::new(), false), |p| (self.ring_indices(&p), p.in_transition()));
        let data = self.data_mut();
        let id = data.next_client;
        data.next_client += 1;
        data.stats.client_ops += 1;
        let client = ClientOp {
            kind,
            node,
            path: path.to_string(),
            start_us: self.now_us,
            content_hash: None,
            ring,
            from_workload: false,
            stage: Stage::Starting,
        };
        self.data_mut().clients.insert(id, client);
        self.record_action(format_args!("client {id} {kind:?} {path} at {node}"));
        id
    }

    /// Gives client `id` its stage, or ends it if the core refused to start it.
    fn started<T>(&mut self, id: u64, started: Result<Client<T>, FileError>, stage: fn(Client<T>) -> Stage) {
        let node = self.data().clients[&id].node;
        match started {
            Ok(client) => {
                self.data_mut().handles.insert((node, client.id()), id);
                self.data_mut().clients.get_mut(&id).expect("in flight").stage = stage(client);
                self.drain_core(node);
            }
            Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
        }
    }

    /// Starts a PUT of `content` to `path` through node `node`; returns the client operation's
    /// id. The content must be unique to this PUT (the checkers find a PUT by its content).
    pub fn start_put(&mut self, node: usize, path: &str, content: Vec<u8>) -> u64 {
        let content = Bytes::from(content);
        let id = self.new_client(ClientKind::Put, node, path);
        let content_hash = BlockHash::of(&content);
        let data = self.data_mut();
        let previous = data.contents.insert(content_hash, (id, content.clone()));
        assert!(previous.is_none(), "two PUTs with the same content cannot be told apart");
        data.clients.get_mut(&id).expect("just made").content_hash = Some(content_hash);
        let now = self.wall_clock_us(node);
        let core = self.core_mut(node).expect("a running node has a core");
        let started = core.start_put(now, path, None).inspect(|put| {
            core.push_put(now, put, &content);
            core.end_put(now, put);
        });
        self.started(id, started, Stage::Put);
        id
    }

    /// Starts a GET of `path` through node `node` (stat, then every block, verified against
    /// what the PUT that wrote that content sent).
    pub fn start_get(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::Get, node, path);
        let now = self.wall_clock_us(node);
        let started = self.core_mut(node).expect("a running node has a core").start_stat(now, path);
        self.started(id, started, Stage::Stat);
        id
    }

    /// Starts a DELETE of `path` through node `node`.
    pub fn start_delete(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::Delete, node, path);
        let now = self.wall_clock_us(node);
        let started = self.core_mut(node).expect("a running node has a core").start_delete(now, path);
        self.started(id, started, Stage::Delete);
        id
    }

    /// Starts a quorum read of `path`'s file record through node `node` (tombstones
    /// included), then of its blocks if it is live: what the final checks read.
    pub fn start_read_record(&mut self, node: usize, path: &str) -> u64 {
        let id = self.new_client(ClientKind::ReadRecord, node, path);
        let now = self.wall_clock_us(node);
        let started = self.core_mut(node).expect("a running node has a core").start_read_record(now, path);
        self.started(id, started, Stage::ReadRecord);
        id
    }

    /// Node `node`'s core has progress for its client `client`.
    pub(super) fn client_progress(&mut self, node: usize, client: ClientId) {
        let Some(&id) = self.data().handles.get(&(node, client)) else { return };
        let now = self.wall_clock_us(node);
        let Some(op) = self.data_mut().clients.get_mut(&id) else { return };
        let stage = std::mem::replace(&mut op.stage, Stage::Starting);
        let expected_hash = op.content_hash;
        let core = self.nodes[node].data.as_mut().and_then(|data| data.core.as_mut()).expect("a running core");
        let (stage, outcome) = match stage {
            Stage::Put(put) => match core.poll_put(&put) {
                PutProgress::Finished(Ok(stat)) => {
                    assert_eq!(Some(stat.meta.content_hash), expected_hash, "a commit answers with its file");
                    (None, Some(Outcome::Acked(stat.version)))
                }
                PutProgress::Finished(Err(err)) => (None, Some(write_error(err))),
                PutProgress::Accepting | PutProgress::Busy => (Some(Stage::Put(put)), None),
            },
            Stage::Delete(delete) => match core.take_answer(&delete) {
                None => (Some(Stage::Delete(delete)), None),
                Some(Ok(Deleted(version))) => (None, Some(Outcome::Acked(version))),
                Some(Err(FileError::NotFound(_))) => (None, Some(Outcome::NotFound)),
                Some(Err(err)) => (None, Some(write_error(err))),
            },
            Stage::Stat(stat) => match core.take_answer(&stat) {
                None => (Some(Stage::Stat(stat)), None),
                Some(Ok(stat)) => return self.read_content(id, stat.version, stat.meta),
                Some(Err(FileError::NotFound(_))) => (None, Some(Outcome::NotFound)),
                Some(Err(err)) => (None, Some(Outcome::Failed(err.to_string()))),
            },
            Stage::ReadRecord(read) => match core.take_answer(&read) {
                None => (Some(Stage::ReadRecord(read)), None),
                Some(Ok(RecordRead(None))) => (None, Some(Outcome::NotFound)),
                Some(Ok(RecordRead(Some(FileRecord { version, meta: Some(meta) })))) => {
                    return self.read_content(id, version, meta);
                }
                Some(Ok(RecordRead(Some(FileRecord { version, meta: None })))) => {
                    (None, Some(Outcome::Tombstone(version)))
                }
                Some(Err(err)) => (None, Some(Outcome::Failed(err.to_string()))),
            },
            Stage::Read { read, version, meta, mut content } => loop {
                match core.take_piece(now, &read) {
                    None => break (Some(Stage::Read { read, version, meta, content }), None),
                    Some(Ok(Some(piece))) => content.extend_from_slice(&piece),
                    Some(Ok(None)) => return self.verify_content(id, version, &meta, &content),
                    Some(Err(err)) => break (None, Some(Outcome::Failed(err.to_string()))),
                }
            },
            Stage::Starting => (None, None),
        };
        match (stage, outcome) {
            (Some(stage), _) => self.data_mut().clients.get_mut(&id).expect("in flight").stage = stage,
            (None, Some(outcome)) => self.finish_client(id, outcome),
            (None, None) => {}
        }
    }

    /// Starts streaming the content of `version` for client `id`.
    fn read_content(&mut self, id: u64, version: Version, meta: FileMeta) {
        let node = self.data().clients[&id].node;
        let path = self.data().clients[&id].path.clone();
        let stat = shoal_core::files::FileStat {
            path: shoal_core::path::ShoalPath::parse_file(&path).expect("a path the core accepted"),
            version,
            meta: meta.clone(),
        };
        let now = self.wall_clock_us(node);
        let started = ReadPlan::new(stat, None)
            .and_then(|plan| self.core_mut(node).expect("a running node has a core").start_read(now, plan));
        let content = Vec::with_capacity(meta.size as usize);
        match started {
            Ok(read) => {
                self.data_mut().handles.insert((node, read.id()), id);
                self.data_mut().clients.get_mut(&id).expect("in flight").stage =
                    Stage::Read { read, version, meta, content };
                self.drain_core(node);
            }
            Err(err) => self.finish_client(id, Outcome::Failed(err.to_string())),
        }
    }

    /// Ends client operation `id` with `outcome`, now (an abandoned one never ends).
    pub(super) fn finish_client(&mut self, id: u64, outcome: Outcome) {
        let now = self.now();
        let Some(client) = self.data_mut().clients.remove(&id) else { return };
        let end = (outcome != Outcome::Unanswered).then_some(now);
        self.record_action(format_args!("client {id} ended: {outcome:?}"));
        if let Outcome::Corrupt(why) = &outcome {
            tracing::error!(id, path = client.path, why, "a client read wrong data");
        }
        let op = record(id, &client, end, outcome);
        self.data_mut().history.ops.push(op);
    }

    // ----- workload --------------------------------------------------------------------------

    /// Starts `workload` now (replacing any running one).
    pub fn start_workload(&mut self, workload: Workload) {
        assert!(!workload.paths.is_empty(), "a workload needs paths");
        assert!(workload.size_max_bytes > 0, "a PUT writes at least a byte");
        assert!(workload.put_percent + workload.get_percent <= 100, "the shares exceed 100 %");
        let data = self.data_mut();
        data.workload = Some(workload);
        data.workload_generation += 1;
        let generation = data.workload_generation;
        self.record_action(format_args!("workload {generation} starts"));
        self.push(self.now_us, EventKind::Data(DataEvent::Workload { generation }));
    }

    /// Stops starting new client operations (those in flight carry on).
    pub fn stop_workload(&mut self) {
        let data = self.data_mut();
        data.workload = None;
        data.workload_generation += 1;
        self.record_action(format_args!("workload stops"));
    }

    pub(super) fn workload_tick(&mut self, generation: u64) {
        let Some(workload) = self.data().workload.clone() else { return };
        let in_flight = self.data().clients.values().filter(|client| client.from_workload).count();
        let candidates: Vec<usize> = match &workload.coordinators {
            Some(nodes) => nodes.iter().copied().filter(|&node| self.is_ready(node)).collect(),
            None => (0..self.nodes.len()).filter(|&node| self.is_ready(node)).collect(),
        };
        let data = self.data_mut();
        let rng = &mut data.workload_rng;
        let wait = rng.random_range(0..=duration_us(workload.interval_mean) * 2);
        let kind = rng.random_range(0..100u32);
        let path = workload.paths[rng.random_range(0..workload.paths.len())].clone();
        let node = (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())]);
        self.push(self.now_us + wait.max(1), EventKind::Data(DataEvent::Workload { generation }));
        let Some(node) = node else { return };
        if in_flight >= workload.in_flight_max {
            return;
        }
        let id = if kind < workload.put_percent {
            let data = self.data_mut();
            // Unique content: the id the operation will get, then random bytes.
            let size = data.workload_rng.random_range(8..=workload.size_max_bytes.max(8));
            let mut content = vec![0; size];
            content[..8].copy_from_slice(&data.next_client.to_le_bytes());
            data.workload_rng.fill(&mut content[8..]);
            self.start_put(node, &path, content)
        } else if kind < workload.put_percent + workload.get_percent {
            self.start_get(node, &path)
        } else {
            self.start_delete(node, &path)
        };
        if let Some(client) = self.data_mut().clients.get_mut(&id) {
            client.from_workload = true;
        }
    }
}

impl Sim {
    /// Ends read `id` by checking the content read for `version` against what the PUT that
    /// wrote it sent.
    fn verify_content(&mut self, id: u64, version: Version, meta: &FileMeta, content: &[u8]) {
        let outcome = self.verify(version, meta, content);
        self.finish_client(id, outcome);
    }

    fn verify(&self, version: Version, meta: &FileMeta, content: &[u8]) -> Outcome {
        match self.data().contents.get(&meta.content_hash) {
            None => Outcome::Corrupt(format!("version {version:?} names content {} no PUT wrote", meta.content_hash)),
            Some((_, expected)) if content != &expected[..] || meta.size != expected.len() as u64 => {
                Outcome::Corrupt(format!(
                    "version {version:?} read {} bytes that differ from the {} the PUT of {} wrote",
                    content.len(),
                    expected.len(),
                    meta.content_hash
                ))
            }
            Some(_) => Outcome::Found { version, content_hash: meta.content_hash },
        }
    }
}

fn record(id: u64, client: &ClientOp, end: Option<Duration>, outcome: Outcome) -> OpRecord {
    OpRecord {
        id,
        kind: client.kind,
        node: client.node,
        path: client.path.clone(),
        start: Duration::from_micros(client.start_us),
        end,
        outcome,
        content_hash: client.content_hash,
        ring: client.ring.clone(),
    }
}

/// The client's view of a failed write: in doubt or certainly without effect.
fn write_error(err: FileError) -> Outcome {
    match err {
        FileError::InDoubt(why) => Outcome::InDoubt(why),
        other => Outcome::Failed(other.to_string()),
    }
}
