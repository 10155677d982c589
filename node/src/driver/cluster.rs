//! Drives this node's [`NodeCore`]: carries its transmits over RPC, runs its store jobs on
//! the blocking pool (fjall blocks), delivers its timeouts, feeds it the membership view when
//! gossip says it changed, and wakes the HTTP handlers whose clients made progress. No
//! protocol rule lives here: every decision is the core's (docs/ARCHITECTURE.md §2).
//!
//! One mutex guards the core; every call into it is short (no IO, no await inside), and the
//! outputs it queued are drained before the lock is released and carried out after.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use shoal_membership::MemberView;
use shoal_storage::{BlockHash, FjallStore, NodeId};
use tokio::sync::{Notify, oneshot, watch};

use super::metrics::Metrics;
use super::now_us;
use super::rpc::{Replica, RpcClient};
use crate::core::files::{FileError, FileStat, ReadPlan};
use crate::core::node::{
    Answer, Client, ClientId, CoreConfig, Event, NodeCore, PeerRequestId, Put, PutProgress, Read, StoreJob, Transmit,
};
use crate::core::replication::{ClusterMemory, KnownMember, Placement, Reply, Request};

/// A handle on this node's core, shared by every task of the node.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    store: Arc<FjallStore>,
    rpc: RpcClient,
    metrics: Arc<Metrics>,
    /// Wakes the timer task when the core's next deadline moved earlier.
    timer: Notify,
    /// The members the core remembers, for the task that saves them.
    known: watch::Sender<ClusterMemory>,
    /// The marker of a lost store, removed once the core has refilled it.
    lost_marker: Mutex<Option<PathBuf>>,
}

/// How this run starts.
pub struct Start {
    /// Seeds were given: the node waits to join through them.
    pub has_seeds: bool,
    /// The marker of a lost store, if its store was lost ([`super::store_lost_marker`]).
    pub lost_marker: Option<PathBuf>,
}

struct State {
    core: NodeCore<FjallStore>,
    /// Who waits for each client's progress.
    wakers: HashMap<ClientId, Arc<Notify>>,
    /// Where each peer request's reply goes.
    peers: HashMap<PeerRequestId, oneshot::Sender<Reply>>,
    /// The deadline the timer task sleeps towards (`u64::MAX`: none).
    timer_target: u64,
}

/// What one call into the core left to carry out.
#[derive(Default)]
struct Drained {
    transmits: Vec<Transmit>,
    jobs: Vec<StoreJob>,
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    wake: Vec<Arc<Notify>>,
    events: Vec<Event>,
    timer_moved: bool,
}

impl State {
    fn drain(&mut self) -> Drained {
        let mut drained = Drained::default();
        let core = &mut self.core;
        drained.transmits.extend(std::iter::from_fn(|| core.poll_transmit()));
        drained.jobs.extend(std::iter::from_fn(|| core.poll_store_job()));
        while let Some(reply) = core.poll_peer_reply() {
            if let Some(sender) = self.peers.remove(&reply.id) {
                drained.replies.push((sender, reply.reply));
            }
        }
        while let Some(client) = core.poll_client() {
            if let Some(waker) = self.wakers.get(&client) {
                drained.wake.push(waker.clone());
            }
        }
        drained.events.extend(std::iter::from_fn(|| core.poll_event()));
        drained.timer_moved = core.poll_timeout().unwrap_or(u64::MAX) < self.timer_target;
        drained
    }
}

impl Cluster {
    /// Node `this`'s core over `store`, placing data by the members `remembered` from the
    /// previous run; the members it learns are saved to `members_path`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: CoreConfig,
        this: NodeId,
        store: Arc<FjallStore>,
        remembered: ClusterMemory,
        start: Start,
        rpc: RpcClient,
        metrics: Arc<Metrics>,
        members_path: PathBuf,
    ) -> Cluster {
        let lost = start.lost_marker.is_some();
        let core = NodeCore::new(now_us(), this, config, store.clone(), remembered.clone(), start.has_seeds, lost);
        let state = State { core, wakers: HashMap::new(), peers: HashMap::new(), timer_target: u64::MAX };
        let (known, saved) = watch::channel(remembered);
        tokio::spawn(save_known(members_path, saved));
        let lost_marker = Mutex::new(start.lost_marker);
        let shared = Shared { state: Mutex::new(state), store, rpc, metrics, timer: Notify::new(), known, lost_marker };
        Cluster { shared: Arc::new(shared) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Calls into the core, then carries out what it queued.
    fn with<R>(&self, call: impl FnOnce(&mut State) -> R) -> R {
        let (result, drained) = {
            let mut state = self.lock();
            let result = call(&mut state);
            (result, state.drain())
        };
        self.dispatch(drained);
        result
    }

    fn dispatch(&self, drained: Drained) {
        for Transmit { id, addr, request, .. } in drained.transmits {
            let cluster = self.clone();
            tokio::spawn(async move {
                let reply = cluster.shared.rpc.call(addr, request).await;
                cluster.with(|state| state.core.handle_reply(now_us(), id, reply));
            });
        }
        for job in drained.jobs {
            let cluster = self.clone();
            let store = self.shared.store.clone();
            tokio::task::spawn_blocking(move || {
                let failure = job.work.failure();
                let run = std::panic::AssertUnwindSafe(|| job.work.run(&*store));
                // A panic in the store is a bug, already reported by the panic hook; the core
                // still gets an answer, so no peer or hand-off waits for this job forever.
                let done = std::panic::catch_unwind(run).unwrap_or(failure);
                cluster.with(|state| state.core.handle_store_done(now_us(), job.id, done));
            });
        }
        for (sender, reply) in drained.replies {
            let _ = sender.send(reply);
        }
        for waker in drained.wake {
            waker.notify_one();
        }
        for event in drained.events {
            self.observe(event);
        }
        if drained.timer_moved {
            self.shared.timer.notify_one();
        }
    }

    fn observe(&self, event: Event) {
        let metrics = &self.shared.metrics;
        match event {
            Event::Ready => tracing::info!("joined the cluster; coordinating requests"),
            Event::KnownMembers(known) => {
                self.shared.known.send_replace(known);
            }
            Event::PlacementChanged(placement) => {
                let (members, settling) = (placement.ring().members().len(), placement.settling().len());
                metrics.partitions_settling.set(settling as i64);
                tracing::debug!(members, settling, "placement changed");
            }
            Event::Settled { partitions, found, settling } => {
                metrics.partitions_settled.inc_by(partitions as u64);
                tracing::info!(partitions, found, settling, "partitions settled on anti-entropy's evidence");
            }
            Event::RingChanged { members } => {
                metrics.ring_changes.inc();
                tracing::info!(members, "the ring changed");
            }
            Event::RepairsSent(count) => {
                metrics.read_repairs.inc_by(count);
            }
            Event::WriteInDoubt => {
                metrics.writes_in_doubt.inc();
            }
            Event::BlockUnavailable(block) => {
                metrics.blocks_unavailable.inc();
                tracing::warn!(%block, "no owner served a verified copy of a block");
            }
            Event::Timeout(to) => tracing::debug!(%to, "a request timed out"),
            Event::Unreachable(to) => tracing::debug!(%to, "no address known for a member"),
            Event::SyncEnded(report) => metrics.observe_sync(&report),
            Event::Refilled => {
                let marker = self.shared.lost_marker.lock().unwrap_or_else(|poison| poison.into_inner()).take();
                if let Some(marker) = marker {
                    tokio::task::spawn_blocking(move || forget_lost_store(&marker));
                }
            }
            Event::HandedOver { partitions, dropped, failure } => {
                let result = if failure.is_some() { "failed" } else { "completed" };
                metrics.handovers.get_or_create(&super::metrics::ResultLabels { result }).inc();
                metrics.copies_dropped.inc_by(dropped as u64);
                tracing::debug!(partitions, dropped, ?failure, "hand-over of copies no longer owned");
            }
        }
    }

    /// Why this node does not coordinate client requests now, if it does not.
    pub fn not_coordinating(&self) -> Option<String> {
        self.lock().core.not_coordinating()
    }

    /// This node's account of durability now.
    pub fn durability(&self) -> shoal_core::node::Durability {
        self.lock().core.durability(now_us())
    }

    /// The placement in force (before this node joined too, for status).
    pub fn placement(&self) -> Arc<Placement> {
        self.lock().core.placement()
    }

    /// Delivers the core's timeouts until the task is aborted.
    pub async fn run_timers(self) {
        loop {
            let deadline = {
                let mut state = self.lock();
                let deadline = state.core.poll_timeout().unwrap_or(u64::MAX);
                state.timer_target = deadline;
                deadline
            };
            let wait = Duration::from_micros(deadline.saturating_sub(now_us()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shared.timer.notified() => continue,
            }
            self.with(|state| state.core.handle_timeout(now_us()));
        }
    }

    /// Feeds the core every membership view gossip publishes, until gossip stops.
    pub async fn follow(self, mut views: watch::Receiver<Vec<MemberView>>) {
        loop {
            let view = views.borrow_and_update().clone();
            self.with(|state| state.core.handle_membership(now_us(), view));
            if views.changed().await.is_err() {
                return;
            }
        }
    }

    /// Registers a waker for client `id`, under the same lock that started it.
    fn register(state: &mut State, id: ClientId) -> Arc<Notify> {
        let waker = Arc::new(Notify::new());
        state.wakers.insert(id, waker.clone());
        waker
    }

    /// Runs one coordinated file operation to its answer.
    pub async fn run<T: Answer>(
        &self,
        start: impl FnOnce(&mut NodeCore<FjallStore>, u64) -> Result<Client<T>, FileError>,
    ) -> Result<T, FileError> {
        let (client, waker) = self.with(|state| {
            let client = start(&mut state.core, now_us())?;
            let waker = Cluster::register(state, client.id());
            Ok::<_, FileError>((client, waker))
        })?;
        let _guard = Forget { cluster: self.clone(), id: client.id() };
        loop {
            if let Some(answer) = self.with(|state| state.core.take_answer(&client)) {
                return answer;
            }
            waker.notified().await;
        }
    }

    /// The live file at `path`.
    pub async fn stat(&self, path: &str) -> Result<FileStat, FileError> {
        self.run(|core, now| core.start_stat(now, path)).await
    }

    /// Starts an upload to `path` (refused at once if this node cannot coordinate).
    pub fn start_put(&self, path: &str, declared: Option<BlockHash>) -> Result<Upload, FileError> {
        self.with(|state| {
            let client = state.core.start_put(now_us(), path, declared)?;
            let waker = Cluster::register(state, client.id());
            let guard = Forget { cluster: self.clone(), id: client.id() };
            Ok(Upload { client, waker, guard })
        })
    }

    /// Starts streaming the pieces of `plan`.
    pub fn start_read(&self, plan: ReadPlan) -> Result<Download, FileError> {
        self.with(|state| {
            let client = state.core.start_read(now_us(), plan)?;
            let waker = Cluster::register(state, client.id());
            let guard = Forget { cluster: self.clone(), id: client.id() };
            Ok(Download { client, waker, guard })
        })
    }
}

impl Replica for Cluster {
    /// A peer's request, served through the core (which runs it against the store).
    async fn serve(&self, request: Request) -> Option<Reply> {
        let (sender, reply) = oneshot::channel();
        self.with(|state| {
            let id = state.core.handle_peer_request(now_us(), request);
            state.peers.insert(id, sender);
        });
        reply.await.ok()
    }
}

/// Forgets a client in the core when its HTTP handler ends, however it ends.
struct Forget {
    cluster: Cluster,
    id: ClientId,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let id = self.id;
        self.cluster.with(|state| {
            state.wakers.remove(&id);
            state.core.abandon(id);
        });
    }
}

/// An upload in progress: content goes in as it arrives, at the pace the core takes it.
pub struct Upload {
    client: Client<Put>,
    waker: Arc<Notify>,
    guard: Forget,
}

impl Upload {
    /// Hands `data` to the core once it has room for more (bounded blocks in flight).
    pub async fn push(&mut self, data: &[u8]) -> Result<(), FileError> {
        loop {
            let pushed = self.guard.cluster.with(|state| match state.core.poll_put(&self.client) {
                PutProgress::Accepting => {
                    state.core.push_put(now_us(), &self.client, data);
                    Some(Ok(()))
                }
                PutProgress::Busy => None,
                PutProgress::Finished(Ok(_)) => Some(Err(FileError::Unavailable("the upload ended early".into()))),
                PutProgress::Finished(Err(err)) => Some(Err(err)),
            });
            if let Some(pushed) = pushed {
                return pushed;
            }
            self.waker.notified().await;
        }
    }

    /// Ends the content and waits until the file is committed (or why not).
    pub async fn finish(self) -> Result<FileStat, FileError> {
        self.guard.cluster.with(|state| state.core.end_put(now_us(), &self.client));
        loop {
            let progress = self.guard.cluster.with(|state| state.core.poll_put(&self.client));
            if let PutProgress::Finished(answer) = progress {
                return answer;
            }
            self.waker.notified().await;
        }
    }
}

/// A read in progress: its pieces, in order, as the core fetches them.
pub struct Download {
    client: Client<Read>,
    waker: Arc<Notify>,
    guard: Forget,
}

impl Download {
    /// The next piece, `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, FileError>> {
        loop {
            match self.guard.cluster.with(|state| state.core.take_piece(now_us(), &self.client)) {
                None => self.waker.notified().await,
                Some(Ok(Some(piece))) => return Some(Ok(piece)),
                Some(Ok(None)) => return None,
                Some(Err(err)) => return Some(Err(err)),
            }
        }
    }
}

/// The file in the data directory listing the members this node knows.
pub const KNOWN_MEMBERS_FILE: &str = "members.json";

/// Removes the lost-store marker, durably; if that fails the next start refills again.
fn forget_lost_store(marker: &std::path::Path) {
    let removed = std::fs::remove_file(marker)
        .and_then(|()| marker.parent().map_or(Ok(()), |dir| std::fs::File::open(dir)?.sync_all()));
    match removed {
        Ok(()) => tracing::info!("the lost store is refilled; this node answers reads again"),
        Err(err) => tracing::warn!(%err, marker = %marker.display(), "cannot remove the lost-store marker"),
    }
}

/// What a previous run saved: members and settling partitions (nothing if the file is
/// missing or unreadable). A file from before settling partitions were saved is the member
/// list alone.
pub fn load_known(path: &std::path::Path) -> ClusterMemory {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Memory(ClusterMemory),
        Members(Vec<KnownMember>),
    }
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Saved::Memory(memory)) => memory,
            Ok(Saved::Members(members)) => ClusterMemory { members, settling: Vec::new() },
            Err(err) => {
                tracing::warn!(%err, path = %path.display(), "unreadable member list; starting from the view alone");
                ClusterMemory::default()
            }
        },
        Err(_) => ClusterMemory::default(),
    }
}

/// Saves the known members whenever they change, atomically (temporary file, fsync,
/// rename); a failure is logged and retried at the next change.
async fn save_known(path: PathBuf, mut known: watch::Receiver<ClusterMemory>) {
    while known.changed().await.is_ok() {
        let Ok(bytes) = serde_json::to_vec_pretty(&*known.borrow_and_update()) else { continue };
        let path = path.clone();
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
}
