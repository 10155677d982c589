//! The tokio driver: owns the sockets, the clock and the tasks, and feeds the sans-IO core
//! (docs/ARCHITECTURE.md §2). The only module allowed to read the clock or spawn tasks.
#![allow(clippy::disallowed_methods)]

mod cluster;
mod gossip;
mod http;
mod identity;
mod metrics;
mod rpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use shoal_membership::{MemberRecord, Membership, NodeIdentity, RecordStatus};
use shoal_storage::{FjallStore, FjallStoreConfig, NodeId, Store};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::Config;
use crate::core::files::FileError;

pub use identity::{has_node_id, load_or_create_node_id, next_generation, store_lost_marker};

use gossip::Gossip;

/// Microseconds since the Unix epoch, as the wall clock says now.
fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The `now` the cores are fed, in µs since the Unix epoch: the wall clock when the process
/// started, advanced by the monotonic clock. Versions need wall time; deadlines need a clock
/// that never jumps: an NTP step would otherwise fire every pending request timeout at once
/// (a forward step) or stall evictions and hand-off retries (a backward one). The monotonic
/// clock follows NTP's rate corrections, so only steps since the start are not reflected.
pub(crate) fn now_us() -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (instant, wall) = *ANCHOR.get_or_init(|| (std::time::Instant::now(), wall_us()));
    wall.saturating_add(instant.elapsed().as_micros() as u64)
}

/// Milliseconds since the Unix epoch, on the cores' clock.
pub(crate) fn now_ms() -> u64 {
    now_us() / 1000
}

/// Runs `work` on the blocking pool: the core and fjall block, async workers must not.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        // A panic in the core is a bug; re-raise it here rather than hide it.
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// A running node: its addresses and a way to stop it.
pub struct Node {
    /// Where the HTTP API listens (the real port when the config asked for port 0).
    pub http_addr: SocketAddr,
    /// Where gossip (UDP) and RPC (TCP) listen.
    pub cluster_addr: SocketAddr,
    /// This node's id.
    pub node_id: NodeId,
    /// This run's generation.
    pub generation: u64,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Opens the store, binds the HTTP API and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        config.validate()?;
        // File IO blocks: off the async workers, like every store call.
        let data_dir = config.data_dir.clone();
        let (node_id, generation, lost_marker) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            let had_identity = has_node_id(&data_dir);
            let node_id = load_or_create_node_id(&data_dir)?;
            let lost_marker = store_lost_marker(&data_dir, had_identity, FjallStore::exists(&data_dir))?;
            Ok((node_id, next_generation(&data_dir, now_ms() / 1000)?, lost_marker))
        })
        .await??;
        if let Some(marker) = &lost_marker {
            tracing::warn!(
                marker = %marker.display(),
                "this node's store was lost (its identity is kept): it refuses reads until refilled from its peers"
            );
        }
        let store_config = FjallStoreConfig {
            path: config.data_dir.clone(),
            disk_reserve_bytes: config.disk_reserve_bytes,
            capacity_bytes: config.capacity_bytes,
            cache_bytes: config.cache_bytes,
        };
        let store = tokio::task::spawn_blocking(move || FjallStore::open(store_config))
            .await?
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let store = Arc::new(store);
        let members_path = config.data_dir.join(cluster::KNOWN_MEMBERS_FILE);
        let remembered = {
            let path = members_path.clone();
            tokio::task::spawn_blocking(move || cluster::load_known(&path)).await?
        };
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let socket = UdpSocket::bind(config.cluster_addr)
            .await
            .with_context(|| format!("cannot listen for gossip on {}", config.cluster_addr))?;
        let cluster_addr = socket.local_addr()?;
        // RPC on the same port number, over TCP.
        let rpc_listener = TcpListener::bind(cluster_addr)
            .await
            .with_context(|| format!("cannot listen for RPC on {cluster_addr} (TCP)"))?;

        let usage = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.usage()).await??
        };
        let identity = NodeIdentity { node_id: node_id.0, addr: cluster_addr, generation };
        let record = MemberRecord {
            node_id: node_id.0,
            generation,
            version: 0,
            zone: config.zone.clone(),
            // A stable capacity, never free space: the ring changes only when the cluster or
            // its configuration does.
            capacity_bytes: usage.capacity_bytes,
            http_addr,
            rpc_addr: cluster_addr,
            status: RecordStatus::Active,
            disk_used_bytes: usage.used_bytes,
        };
        let mut seeds = gossip::resolve_seeds(&config.seeds).await;
        // The members it knew last time are greeted too: a restarted node rejoins even if
        // its seeds are down.
        let remembered_addrs: Vec<SocketAddr> = remembered
            .members
            .iter()
            .map(|member| member.rpc_addr)
            .filter(|addr| *addr != cluster_addr && !seeds.contains(addr))
            .collect();
        seeds.extend(remembered_addrs);
        if !config.seeds.is_empty() && seeds.is_empty() {
            tracing::warn!(seeds = ?config.seeds, "no seed resolved; this node starts a cluster of its own");
        }
        let membership_config = config.membership_config();
        let linger = membership_config.foca_config().probe_period * 2;
        let rng = rand::rngs::StdRng::seed_from_u64(rand::rng().random());
        let membership = Membership::new(identity, record, membership_config, seeds, rng);
        let (gossip, views, gossip_task) = Gossip::start(socket, membership, config.data_dir.clone());
        let refresher = tokio::spawn(refresh_disk_usage(store.clone(), gossip.clone(), config.core_config()));

        let metrics = Arc::new(metrics::Metrics::new());
        let limits = rpc::RpcLimits {
            request_timeout: Duration::from_millis(config.rpc_timeout_ms),
            in_flight_per_peer_max: config.rpc_in_flight_per_peer_max,
            connect_timeout: Duration::from_millis(config.rpc_timeout_ms).min(rpc::CONNECT_TIMEOUT_MAX),
            idle_timeout: rpc::IDLE_TIMEOUT,
            connections_max: rpc::CONNECTIONS_MAX,
        };
        let rpc_client = rpc::RpcClient::new(limits, metrics.clone());
        let cluster = cluster::Cluster::new(
            config.core_config(),
            node_id,
            store.clone(),
            remembered,
            cluster::Start { has_seeds: !config.seeds.is_empty(), lost_marker },
            rpc_client,
            metrics.clone(),
            members_path,
        );
        let follower = tokio::spawn(cluster.clone().follow(views));
        let timers = tokio::spawn(cluster.clone().run_timers());
        let state = http::AppState::new(
            cluster.clone(),
            store.clone(),
            gossip.clone(),
            metrics.clone(),
            &config,
            node_id,
            now_ms(),
        );
        let (shutdown, mut stop) = watch::channel(false);
        // Peers keep reaching this node's replica until the very end: other coordinators
        // still count on it while it leaves.
        let (stop_rpc, rpc_stopped) = watch::channel(false);
        let rpc_server = tokio::spawn(rpc::serve(rpc_listener, cluster, limits, metrics, rpc_stopped));
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        tracing::info!(
            node_id = %node_id, generation, %http_addr, %cluster_addr, seeds = ?config.seeds,
            data_dir = %config.data_dir.display(), "shoal node serving"
        );

        let task = tokio::spawn(async move {
            let mut stop_serving = stop.clone();
            let mut stop_gossip = stop.clone();
            // Leave the cluster while in-flight requests finish, so peers stop counting on
            // this node and show it `left` rather than `down`.
            let gossip_on_error = gossip.clone();
            let leaving = tokio::spawn(async move {
                let _ = stop_gossip.wait_for(|stop| *stop).await;
                gossip.leave(linger).await;
            });
            let serve = axum::serve(listener, http::router(state))
                .with_graceful_shutdown(async move {
                    let _ = stop_serving.wait_for(|stop| *stop).await;
                })
                .into_future();
            tokio::pin!(serve);
            let served: anyhow::Result<()> = tokio::select! {
                result = &mut serve => result.map_err(anyhow::Error::from),
                _ = async {
                    let _ = stop.wait_for(|stop| *stop).await;
                    tokio::time::sleep(grace).await;
                } => {
                    tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
                    Ok(())
                }
            };
            // The same cleanup whether serving ended well or not.
            refresher.abort();
            let _ = refresher.await;
            follower.abort();
            let _ = follower.await;
            timers.abort();
            let _ = timers.await;
            if let Err(err) = &served {
                tracing::error!(%err, "the HTTP server failed; leaving the cluster");
                leaving.abort();
                gossip_on_error.leave(linger).await;
            } else {
                let _ = leaving.await;
            }
            let _ = gossip_task.await;
            let _ = stop_rpc.send(true);
            let _ = rpc_server.await;
            // Whatever was acknowledged is already durable; this makes the rest durable too.
            // The store is dropped there as well: fjall's drop fsyncs, which must not happen
            // on an async worker.
            tokio::task::spawn_blocking(move || {
                let synced = store.sync();
                drop(store);
                synced
            })
            .await??;
            served?;
            tracing::info!("shoal node stopped");
            Ok(())
        });
        Ok(Node { http_addr, cluster_addr, node_id, generation, shutdown, task })
    }

    /// Stops accepting requests, lets in-flight ones finish (within the grace period), syncs
    /// and returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
        self.stop().await
    }
}

/// Keeps this node's record's disk usage current, without flooding gossip: the core's
/// config says how often and when it moved enough.
async fn refresh_disk_usage(store: Arc<FjallStore>, gossip: Gossip, config: shoal_core::node::CoreConfig) {
    let mut published: Option<u64> = None;
    let mut tick = tokio::time::interval(config.usage_refresh);
    loop {
        tick.tick().await;
        let store = store.clone();
        let Ok(Ok(usage)) = tokio::task::spawn_blocking(move || store.usage()).await else { continue };
        if config.usage_worth_publishing(published, usage.used_bytes) {
            published = Some(usage.used_bytes);
            gossip.update_record(move |record| record.disk_used_bytes = usage.used_bytes).await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
