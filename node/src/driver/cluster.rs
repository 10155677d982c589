//! Carries the replication core's operations: requests to this node go to the local store on
//! the blocking pool, requests to peers over RPC; every request gets an answer or a failure.
//! Also follows the membership to keep the placement (ring and transitions) current.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use shoal_membership::MemberState;
use shoal_storage::{FjallStore, NodeId};
use tokio::sync::oneshot;

use super::gossip::Gossip;
use super::metrics::Metrics;
use super::rpc::RpcClient;
use super::{now_ms, now_us};
use crate::core::files::FileError;
use crate::core::replication::{
    Handoff, KnownMember, Op, Placement, PlacementTracker, Quorum, Reply, Request, RpcError, replica,
};
use shoal_storage::{DirRecord, RecordUpdate, Store};

/// Records read per hand-off batch.
const HANDOFF_RECORDS_PER_BATCH: usize = 256;
/// Wait before running a hand-off again after some pushes failed.
const HANDOFF_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Blocks (held in memory) per hand-off batch.
const HANDOFF_BLOCKS_PER_BATCH: usize = 8;

/// How often the placement follows the membership view.
const PLACEMENT_REFRESH: Duration = Duration::from_millis(200);

/// The placement and where to reach each member.
#[derive(Clone)]
struct View {
    placement: Arc<Placement>,
    rpc_addrs: Arc<HashMap<NodeId, SocketAddr>>,
    /// Whether this node may coordinate: it has joined the cluster it was pointed at.
    ready: bool,
}

/// A handle shared by every request of one node.
#[derive(Clone)]
pub struct Cluster {
    this: NodeId,
    store: Arc<FjallStore>,
    rpc: RpcClient,
    view: Arc<RwLock<View>>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// A cluster handle for node `this`, alone until [`follow`](Cluster::follow) learns more.
    /// A node started with seeds refuses to coordinate until it has joined through them.
    pub fn new(
        this: NodeId,
        quorum: Quorum,
        store: Arc<FjallStore>,
        rpc: RpcClient,
        metrics: Arc<Metrics>,
        has_seeds: bool,
    ) -> Cluster {
        let view = View {
            placement: Arc::new(Placement::alone(this, quorum)),
            rpc_addrs: Arc::new(HashMap::new()),
            ready: !has_seeds,
        };
        Cluster { this, store, rpc, view: Arc::new(RwLock::new(view)), metrics }
    }

    /// The placement requests start under now, or why none can.
    pub fn placement(&self) -> Result<Arc<Placement>, FileError> {
        let view = self.view.read().unwrap_or_else(|poison| poison.into_inner());
        if !view.ready {
            return Err(FileError::Unavailable("this node has not joined its cluster yet".into()));
        }
        Ok(view.placement.clone())
    }

    /// The placement in force, even before this node joined (for status).
    pub fn placement_anyway(&self) -> Arc<Placement> {
        self.view.read().unwrap_or_else(|poison| poison.into_inner()).placement.clone()
    }

    /// Keeps the placement current with the membership until the gossip task stops. The
    /// members it knows are saved in `data_dir`, so a restart places data by the cluster this
    /// node belongs to, not by the few members it has heard from so far.
    pub async fn follow(
        self,
        gossip: Gossip,
        quorum: Quorum,
        evict_after_ms: u64,
        transition_ms: u64,
        data_dir: std::path::PathBuf,
    ) {
        let path = data_dir.join(KNOWN_MEMBERS_FILE);
        let remembered = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<Vec<KnownMember>>(&bytes).unwrap_or_else(|err| {
                tracing::warn!(%err, path = %path.display(), "unreadable member list; starting from the view alone");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let mut tracker = PlacementTracker::new(self.this, quorum, transition_ms, evict_after_ms, remembered, now_ms());
        let mut saved = tracker.known();
        // The remembered cluster is the placement from the start, before gossip says anything.
        self.view.write().unwrap_or_else(|poison| poison.into_inner()).placement = tracker.placement();
        let mut tick = tokio::time::interval(PLACEMENT_REFRESH);
        // The hand-off in progress and the ring it hands off to; aborted with this task.
        let mut handoff: Option<(AbortOnDrop, Arc<Placement>)> = None;
        loop {
            tick.tick().await;
            let Some((views, _)) = gossip.members().await else { return };
            let now = now_ms();
            let joined = views.iter().any(|view| {
                view.identity.node_id != self.this.0 && matches!(view.state, MemberState::Alive | MemberState::Suspect)
            });
            // A finished hand-off lets the transition end (once its time is up too); a failed
            // one runs again, after a pause.
            if let Some((task, placement)) = handoff.as_mut()
                && task.0.as_ref().is_some_and(|running| running.is_finished())
                && let Some(finished) = task.0.take()
            {
                if finished.await.unwrap_or(false) {
                    tracker.handoff_finished();
                } else {
                    let retry = self.clone().hand_off(placement.clone(), HANDOFF_RETRY_PAUSE);
                    task.0 = Some(tokio::spawn(retry));
                }
            }
            let changed = tracker.update(now, &views);
            let known = tracker.known();
            let rpc_addrs: HashMap<NodeId, SocketAddr> =
                known.iter().map(|member| (NodeId(member.node_id), member.rpc_addr)).collect();
            if known != saved {
                save_known(&path, &known).await;
                saved = known;
            }
            if let Some(placement) = &changed {
                let new_ring =
                    handoff.as_ref().is_none_or(|(_, running)| running.ring().members() != placement.ring().members());
                if placement.in_transition() && new_ring {
                    tracing::info!(members = placement.ring().members().len(), "ring changed; handing off");
                    // Replacing the running hand-off aborts it: the new one covers it.
                    let task =
                        AbortOnDrop(Some(tokio::spawn(self.clone().hand_off(placement.clone(), Duration::ZERO))));
                    handoff = Some((task, placement.clone()));
                } else if !placement.in_transition() {
                    tracing::info!(members = placement.ring().members().len(), "ring settled");
                    handoff = None;
                }
            }
            let mut view = self.view.write().unwrap_or_else(|poison| poison.into_inner());
            if let Some(placement) = changed {
                view.placement = placement;
            }
            view.rpc_addrs = Arc::new(rpc_addrs);
            view.ready |= joined;
        }
    }

    /// Gives everything this node holds whose owners changed to its new owners, in bounded
    /// batches. Returns whether every push was confirmed durable; the caller runs it again if not.
    async fn hand_off(self, placement: Arc<Placement>, pause: Duration) -> bool {
        tokio::time::sleep(pause).await;
        let started = now_ms();
        let (mut pushed, mut failed) = (0u64, 0u64);
        let result: Result<(), shoal_storage::StoreError> = async {
            let mut after: Option<String> = None;
            loop {
                let (store, cursor) = (self.store.clone(), after.clone());
                let batch =
                    blocking_store(move || store.scan_files(cursor.as_deref(), HANDOFF_RECORDS_PER_BATCH)).await?;
                let full = batch.len() == HANDOFF_RECORDS_PER_BATCH;
                after = batch.last().map(|(path, _)| path.clone());
                let updates: Vec<RecordUpdate> = batch
                    .into_iter()
                    .filter(|(path, _)| !placement.new_owners(path.as_bytes()).is_empty())
                    .map(|(path, record)| RecordUpdate::File(path, record))
                    .collect();
                let report = self.run(Handoff::new(&placement, updates, Vec::new())).await;
                (pushed, failed) = (pushed + report.pushed, failed + report.failed);
                if !full {
                    break;
                }
            }
            let mut after: Option<(String, String)> = None;
            loop {
                let (store, cursor) = (self.store.clone(), after.clone());
                let batch = blocking_store(move || {
                    let cursor = cursor.as_ref().map(|(dir, name)| (dir.as_str(), name.as_str()));
                    store.scan_dir_entries(cursor, HANDOFF_RECORDS_PER_BATCH)
                })
                .await?;
                let full = batch.len() == HANDOFF_RECORDS_PER_BATCH;
                after = batch.last().map(|(dir, name, _)| (dir.clone(), name.clone()));
                let updates: Vec<RecordUpdate> = batch
                    .into_iter()
                    .filter(|(dir, _, _)| !placement.new_owners(dir.as_bytes()).is_empty())
                    .map(|(dir, name, entry)| RecordUpdate::Dir(dir, DirRecord { children: [(name, entry)].into() }))
                    .collect();
                let report = self.run(Handoff::new(&placement, updates, Vec::new())).await;
                (pushed, failed) = (pushed + report.pushed, failed + report.failed);
                if !full {
                    break;
                }
            }
            let mut after = None;
            loop {
                let store = self.store.clone();
                let placement_for_scan = placement.clone();
                let (batch, next) = blocking_store(move || {
                    let mut blocks = Vec::new();
                    let mut cursor = after;
                    loop {
                        let hashes = store.scan_blocks(cursor.as_ref(), HANDOFF_RECORDS_PER_BATCH)?;
                        let end = hashes.len() < HANDOFF_RECORDS_PER_BATCH;
                        for hash in hashes {
                            cursor = Some(hash);
                            if placement_for_scan.new_owners(&hash.0).is_empty() {
                                continue;
                            }
                            // A corrupt or vanished copy is not handed off; another owner has one.
                            if let Ok(Some(bytes)) = store.get_block(&hash) {
                                blocks.push((hash, bytes));
                            }
                            if blocks.len() == HANDOFF_BLOCKS_PER_BATCH {
                                return Ok((blocks, cursor));
                            }
                        }
                        if end {
                            return Ok((blocks, None));
                        }
                    }
                })
                .await?;
                let report = self.run(Handoff::new(&placement, Vec::new(), batch)).await;
                (pushed, failed) = (pushed + report.pushed, failed + report.failed);
                match next {
                    Some(cursor) => after = Some(cursor),
                    None => break,
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(pushed, failed, took_ms = now_ms() - started, "hand-off after a ring change done");
                failed == 0
            }
            Err(err) => {
                tracing::warn!(%err, pushed, failed, "hand-off stopped by a store error");
                false
            }
        }
    }

    /// Sends one request and waits for the answer.
    async fn call(&self, to: NodeId, request: Request) -> Result<Reply, RpcError> {
        if to == self.this {
            let store = self.store.clone();
            return match tokio::task::spawn_blocking(move || replica::serve(&*store, request)).await {
                Ok(reply) => Ok(reply),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
        }
        let addr = {
            let view = self.view.read().unwrap_or_else(|poison| poison.into_inner());
            view.rpc_addrs.get(&to).copied()
        };
        match addr {
            Some(addr) => self.rpc.call(addr, request).await,
            None => Err(RpcError::Unreachable(format!("no address known for {to}"))),
        }
    }

    /// Runs `op`: returns its outcome as soon as it is decided, and lets it finish (read
    /// repair, stragglers) in the background.
    pub async fn run<O>(&self, op: O) -> O::Output
    where
        O: Op + 'static,
        O::Output: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let cluster = self.clone();
        tokio::spawn(cluster.drive(op, answer));
        match answered.await {
            Ok(outcome) => outcome,
            // The driving task panicked: a bug in the core; it was logged by the panic hook.
            Err(_) => panic!("an operation ended without an outcome"),
        }
    }

    async fn drive<O: Op>(self, mut op: O, answer: oneshot::Sender<O::Output>) {
        let mut answer = Some(answer);
        let mut calls = FuturesUnordered::new();
        loop {
            while let Some(outgoing) = op.poll_request() {
                let cluster = self.clone();
                calls.push(async move { (outgoing.token, cluster.call(outgoing.to, outgoing.request).await) });
            }
            if let Some(outcome) = op.poll_outcome()
                && let Some(answer) = answer.take()
            {
                let _ = answer.send(outcome);
            }
            if op.is_finished() {
                break;
            }
            let Some((token, reply)) = calls.next().await else {
                // No request in flight and not finished: a bug in the operation.
                tracing::error!("an operation stalled with nothing in flight");
                break;
            };
            op.handle_reply(now_us(), token, reply);
        }
        self.metrics.read_repairs.inc_by(op.repairs_sent());
    }
}

/// A task aborted when its handle is dropped, so it cannot outlive its owner.
/// (`None` once its result was taken.)
struct AbortOnDrop(Option<tokio::task::JoinHandle<bool>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// The file in the data directory listing the members this node knows.
const KNOWN_MEMBERS_FILE: &str = "members.json";

/// Saves the known members atomically (temporary file, fsync, rename); a failure is logged and
/// retried at the next change.
async fn save_known(path: &std::path::Path, known: &[KnownMember]) {
    let path = path.to_path_buf();
    let Ok(bytes) = serde_json::to_vec_pretty(known) else { return };
    let saved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    if let Ok(Err(err)) | Err(err) = saved.map_err(std::io::Error::other) {
        tracing::warn!(%err, "cannot save the member list");
    }
}

/// Runs a store call on the blocking pool.
async fn blocking_store<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, shoal_storage::StoreError> + Send + 'static,
) -> Result<T, shoal_storage::StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
