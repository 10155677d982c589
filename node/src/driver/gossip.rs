//! The gossip task: owns the membership core, its UDP socket and its timers.
//!
//! One task owns [`Membership`] and is fed by an [`Input`] channel, datagrams and due timers
//! (foca's `examples/foca_insecure_udp_agent.rs` shape). Timers live in one min-heap ordered by
//! deadline then by request order, so every timer is delivered, in order (foca issue #26).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_membership::{MemberRecord, MemberView, Membership, Output, PACKET_BYTES_MAX, Stats, TimerEvent};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::now_ms;

/// What other tasks ask of the gossip task.
enum Input {
    /// The current view and counters.
    Members(oneshot::Sender<(Vec<MemberView>, Stats)>),
    /// Change this node's record.
    UpdateRecord(Box<dyn FnOnce(&mut MemberRecord) + Send>),
    /// Leave the cluster, keep gossiping for `linger` so the news spreads, then stop.
    Leave { linger: Duration, done: oneshot::Sender<()> },
}

/// A handle on the running gossip task.
#[derive(Clone)]
pub struct Gossip {
    inputs: mpsc::Sender<Input>,
}

/// A timer in the heap: ordered by deadline, then by the order it was requested.
struct Due {
    at: Instant,
    seq: u64,
    timer: TimerEvent,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Gossip {
    /// Starts the task on `socket`. The receiver gets the view every time the membership
    /// says it changed ([`Membership::take_changed`]), with no polling.
    pub fn start(
        socket: UdpSocket,
        mut membership: Membership,
        data_dir: std::path::PathBuf,
    ) -> (Gossip, watch::Receiver<Vec<MemberView>>, tokio::task::JoinHandle<()>) {
        let (inputs, rx) = mpsc::channel(64);
        let (views, changes) = watch::channel(membership.members(now_ms()));
        let task = tokio::spawn(run(socket, membership, rx, views, data_dir));
        (Gossip { inputs }, changes, task)
    }

    /// The members as this node sees them, and the gossip counters.
    pub async fn members(&self) -> Option<(Vec<MemberView>, Stats)> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Members(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Changes this node's record; the new version spreads by gossip.
    pub async fn update_record(&self, change: impl FnOnce(&mut MemberRecord) + Send + 'static) {
        let _ = self.inputs.send(Input::UpdateRecord(Box::new(change))).await;
    }

    /// Leaves the cluster gracefully; returns once the task stopped.
    pub async fn leave(&self, linger: Duration) {
        let (done, stopped) = oneshot::channel();
        if self.inputs.send(Input::Leave { linger, done }).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

async fn run(
    socket: UdpSocket,
    mut membership: Membership,
    mut inputs: mpsc::Receiver<Input>,
    views: watch::Sender<Vec<MemberView>>,
    data_dir: std::path::PathBuf,
) {
    let mut generation = membership.identity().generation;
    let mut timers: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    // One byte more than a packet may be, so an oversized datagram is seen as such (the
    // kernel truncates to the buffer) and dropped by the core.
    let mut buf = vec![0u8; PACKET_BYTES_MAX + 1];
    let mut stop_at: Option<(Instant, oneshot::Sender<()>)> = None;
    loop {
        if membership.take_changed() {
            views.send_replace(membership.members(now_ms()));
        }
        if membership.identity().generation > generation {
            generation = membership.identity().generation;
            let dir = data_dir.clone();
            let saved = tokio::task::spawn_blocking(move || super::identity::save_renewed_generation(&dir, generation));
            if let Ok(Err(err)) = saved.await {
                tracing::warn!(%err, generation, "cannot save the renewed generation");
            }
        }
        while let Some(output) = membership.poll_output() {
            match output {
                Output::Send { to, packet } => {
                    if let Err(err) = socket.send_to(&packet, to).await {
                        tracing::debug!(%to, %err, "gossip send failed");
                    }
                }
                Output::Schedule { after, timer } => {
                    seq += 1;
                    timers.push(Reverse(Due { at: Instant::now() + after, seq, timer }));
                }
            }
        }
        if let Some((at, _)) = &stop_at
            && Instant::now() >= *at
        {
            if let Some((_, done)) = stop_at.take() {
                let _ = done.send(());
            }
            return;
        }
        let next_timer = timers.peek().map(|Reverse(due)| due.at);
        let wake = match (next_timer, &stop_at) {
            (Some(timer), Some((stop, _))) => Some(timer.min(*stop)),
            (timer, stop) => timer.or(stop.as_ref().map(|(at, _)| *at)),
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => membership.handle_packet(now_ms(), from, &buf[..len]),
                Err(err) => tracing::debug!(%err, "gossip receive failed"),
            },
            input = inputs.recv() => match input {
                Some(Input::Members(reply)) => {
                    let _ = reply.send((membership.members(now_ms()), membership.stats()));
                }
                Some(Input::UpdateRecord(change)) => membership.update_record(now_ms(), change),
                Some(Input::Leave { linger, done }) => {
                    tracing::info!("leaving the cluster");
                    membership.leave(now_ms());
                    stop_at = Some((Instant::now() + linger, done));
                }
                None => return,
            },
            () = sleep_until(wake) => {
                let now = Instant::now();
                while timers.peek().is_some_and(|Reverse(due)| due.at <= now) {
                    if let Some(Reverse(due)) = timers.pop() {
                        membership.handle_timer(now_ms(), due.timer);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves `host:port` seeds; those that do not resolve are logged and skipped.
pub async fn resolve_seeds(seeds: &[String]) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => resolved.extend(addrs),
            Err(err) => tracing::warn!(%seed, %err, "cannot resolve seed; skipping it"),
        }
    }
    resolved
}
