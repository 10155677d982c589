//! The membership state machine: foca plus the envelope, the seed handshake and member records.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State};
use rand::rngs::StdRng;

use crate::codec::{decode_exact, encode};
use crate::envelope::{self, Kind, Rejection};
use crate::record::RecordBook;
use crate::{BincodeCodec, MemberRecord, MembershipConfig, NodeIdentity, RecordStatus};

/// A timer the caller must deliver back through [`Membership::handle_timer`] after the
/// requested delay. Every timer must be delivered, in the order of their deadlines (ties in
/// the order they were requested): foca relies on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerEvent {
    /// One of foca's own timers.
    Foca(foca::Timer<NodeIdentity>),
    /// Ask the seeds again if not joined yet.
    SeedRetry,
    /// Ask members whose record is missing or stale for it.
    RecordRepair,
}

/// An effect for the caller to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `packet` as one datagram to `to`.
    Send {
        /// Destination gossip address.
        to: SocketAddr,
        /// The datagram, envelope included (at most [`envelope::PACKET_BYTES_MAX`] bytes).
        packet: Vec<u8>,
    },
    /// Deliver `timer` after `after`.
    Schedule {
        /// Delay from now.
        after: Duration,
        /// What to deliver.
        timer: TimerEvent,
    },
}

/// Counters for `/metrics` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received, whatever became of them.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Dropped: not a Shoal packet, truncated, or undecodable.
    pub dropped_malformed: u64,
    /// Dropped: larger than a packet may be.
    pub dropped_oversized: u64,
    /// Dropped: from another cluster.
    pub dropped_foreign_cluster: u64,
}

impl std::ops::AddAssign for Stats {
    /// Sums counters, e.g. over the members of a simulated cluster.
    fn add_assign(&mut self, more: Stats) {
        self.packets_in += more.packets_in;
        self.bytes_in += more.bytes_in;
        self.packets_out += more.packets_out;
        self.bytes_out += more.bytes_out;
        self.dropped_malformed += more.dropped_malformed;
        self.dropped_oversized += more.dropped_oversized;
        self.dropped_foreign_cluster += more.dropped_foreign_cluster;
    }
}

/// A member's state as this node sees it: SWIM's verdict, refined by the member's own record
/// (a member that said it left is `Left`, not `Down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; not yet declared down.
    Suspect,
    /// Declared down by the cluster.
    Down,
    /// Being decommissioned.
    Leaving,
    /// Left on purpose.
    Left,
}

impl MemberState {
    /// Lower-case name, as the API prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Leaving => "leaving",
            MemberState::Left => "left",
        }
    }
}

/// One member in [`Membership::members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its identity (latest generation known).
    pub identity: NodeIdentity,
    /// Its state.
    pub state: MemberState,
    /// Its record, once received.
    pub record: Option<MemberRecord>,
    /// When (caller's clock, ms) this node first saw the member in its current state.
    pub state_since_ms: u64,
}

/// One node's view of the cluster. Sans-IO: feed it packets and timers with the current
/// time, then drain [`poll_output`](Membership::poll_output) and carry out each effect.
///
/// Call order: `new` (queues the first hellos and timers), then any number of
/// `handle_packet` / `handle_timer` / `update_record` / `leave`, draining outputs after each.
pub struct Membership {
    foca: Foca<NodeIdentity, BincodeCodec, StdRng, RecordBook>,
    runtime: AccumulatingRuntime<NodeIdentity>,
    book: RecordBook,
    own_record: MemberRecord,
    config: MembershipConfig,
    cluster: u64,
    seeds: Vec<SocketAddr>,
    outputs: VecDeque<Output>,
    stats: Stats,
    since: HashMap<u128, (MemberState, u64)>,
    left: bool,
    seed_rounds: u64,
    /// Whether the view changed since [`take_changed`](Membership::take_changed) last said.
    changed: bool,
    /// The record book's count of accepted records at that moment.
    records_seen: u64,
    /// Record repair rounds so far: picks each round's digest window and peer.
    repair_rounds: u64,
}

/// Once joined, a member greets the seeds on one retry round in this many times the cluster's
/// size: enough to merge two halves that forgot each other after a long partition (foca drops
/// down members after `remove_down_after`), and, because a seed answers a greeting with a full
/// member list, scaled by the size so the seeds' load stays flat as the cluster grows.
const JOINED_SEED_ROUND_EVERY: u64 = 10;

/// Records named in one digest (a packet's worth, well under the envelope's limit).
const DIGEST_ENTRIES_MAX: usize = 24;
/// Newer records one digest is answered with at most: a digest cannot make a node flood.
const DIGEST_REPLIES_MAX: usize = 4;
/// Members an isolated node greets per retry round besides its seeds.
const ISOLATED_GREETINGS_MAX: usize = 32;

/// A record as a digest names it.
type DigestEntry = (u128, u64, u64);

impl Membership {
    /// A member with `identity` and `record`, joining through `seeds` (none for the first node
    /// of a cluster). `rng` drives foca's random choices: seed it for a reproducible run.
    pub fn new(
        identity: NodeIdentity,
        record: MemberRecord,
        config: MembershipConfig,
        seeds: Vec<SocketAddr>,
        rng: StdRng,
    ) -> Self {
        let book = RecordBook::default();
        let foca = Foca::with_custom_broadcast(identity, config.foca_config(), rng, BincodeCodec, book.clone());
        let mut membership = Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            book,
            cluster: envelope::cluster_id(&config.cluster_name),
            own_record: record,
            config,
            seeds: seeds.into_iter().filter(|seed| *seed != identity.addr).collect(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            since: HashMap::new(),
            left: false,
            seed_rounds: 0,
            changed: true,
            records_seen: 0,
            repair_rounds: 0,
        };
        membership.broadcast_own_record();
        membership.hello_seeds();
        membership.schedule(membership.config.seed_retry, TimerEvent::SeedRetry);
        membership.schedule(membership.config.record_repair, TimerEvent::RecordRepair);
        membership.drain(0);
        membership
    }

    /// This node's identity (its generation changes if the cluster wrongly declared it down
    /// and it renewed itself).
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// This node's own record.
    pub fn own_record(&self) -> &MemberRecord {
        &self.own_record
    }

    /// Whether at least one other member is active in this node's view.
    pub fn is_joined(&self) -> bool {
        self.foca.num_members() > 0
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the view ([`members`](Membership::members)) may have changed since this was
    /// last asked: a member came up, went down, restarted or left, a record arrived, or this
    /// node's own record changed. A suspicion alone is not a change (a suspect member is
    /// still counted on). Consumers re-read the view only then, instead of polling it.
    pub fn take_changed(&mut self) -> bool {
        let records = self.book.accepted();
        let changed = self.changed || records != self.records_seen;
        self.changed = false;
        self.records_seen = records;
        changed
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Handles one datagram from `from`. Anything malformed, oversized or foreign is dropped
    /// and counted; nothing a peer sends can panic this.
    pub fn handle_packet(&mut self, now_ms: u64, from: SocketAddr, packet: &[u8]) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let (kind, payload) = match envelope::open(self.cluster, packet) {
            Ok(opened) => opened,
            Err(Rejection::Malformed) => return self.stats.dropped_malformed += 1,
            Err(Rejection::Oversized) => return self.stats.dropped_oversized += 1,
            Err(Rejection::ForeignCluster) => return self.stats.dropped_foreign_cluster += 1,
        };
        match kind {
            Kind::Swim => {
                if let Err(err) = self.foca.handle_data(payload, &mut self.runtime) {
                    match err {
                        foca::Error::DataFromOurselves => {}
                        foca::Error::DataTooBig => self.stats.dropped_oversized += 1,
                        _ => {
                            tracing::debug!(%from, %err, "dropped a gossip packet");
                            self.stats.dropped_malformed += 1;
                        }
                    }
                }
            }
            Kind::Hello => {
                if let Ok(me) = encode(self.foca.identity()) {
                    self.send(from, Kind::HelloReply, &me);
                }
            }
            Kind::HelloReply => match decode_exact::<NodeIdentity>(payload) {
                Ok(seed) if seed.node_id != self.identity().node_id && !self.left => {
                    if let Err(err) = self.foca.announce(seed, &mut self.runtime) {
                        tracing::debug!(%err, "announce failed");
                    }
                }
                Ok(_) => {}
                Err(_) => self.stats.dropped_malformed += 1,
            },
            Kind::RecordRequest => {
                if let Ok(record) = encode(&self.own_record) {
                    self.send(from, Kind::RecordReply, &record);
                }
            }
            Kind::RecordDigest => match decode_exact::<Vec<DigestEntry>>(payload) {
                Ok(digest) if digest.len() <= DIGEST_ENTRIES_MAX => self.answer_digest(from, &digest),
                _ => self.stats.dropped_malformed += 1,
            },
            Kind::RecordReply => match decode_exact::<MemberRecord>(payload) {
                // Only for members foca knows: a reply nobody asked for must not grow the book.
                Ok(record) if self.foca.iter_membership_state().any(|m| m.id().node_id == record.node_id) => {
                    self.book.offer(record);
                }
                Ok(_) => {}
                Err(_) => self.stats.dropped_malformed += 1,
            },
        }
        self.drain(now_ms);
    }

    /// Handles a timer that came due.
    pub fn handle_timer(&mut self, now_ms: u64, timer: TimerEvent) {
        match timer {
            TimerEvent::Foca(timer) => {
                if let Err(err) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!(%err, "foca timer failed");
                }
            }
            TimerEvent::SeedRetry => {
                self.seed_rounds += 1;
                if !self.left && !self.is_joined() {
                    if !self.seeds.is_empty() {
                        tracing::info!(seeds = ?self.seeds, "not joined yet: no seed answered; asking again");
                    }
                    self.hello_seeds();
                    self.hello_known_members();
                } else if !self.left
                    && self.seed_rounds.is_multiple_of(JOINED_SEED_ROUND_EVERY * (self.foca.num_members() as u64 + 1))
                {
                    self.hello_seeds();
                }
                self.schedule(self.config.seed_retry, TimerEvent::SeedRetry);
            }
            TimerEvent::RecordRepair => {
                self.forget_departed_records();
                self.request_missing_records();
                self.send_digest();
                self.schedule(self.config.record_repair, TimerEvent::RecordRepair);
            }
        }
        self.drain(now_ms);
    }

    /// Changes this node's record (zone, disk usage, status...) and spreads the new version.
    /// Does nothing if `change` changes nothing.
    pub fn update_record(&mut self, now_ms: u64, change: impl FnOnce(&mut MemberRecord)) {
        let before = self.own_record.clone();
        change(&mut self.own_record);
        self.own_record.node_id = before.node_id;
        self.own_record.generation = before.generation;
        self.own_record.version = before.version;
        if self.own_record != before {
            self.changed = true;
            self.own_record.version += 1;
            self.broadcast_own_record();
            self.drain(now_ms);
        }
    }

    /// Leaves the cluster on purpose: the record says `Left` and foca declares this identity
    /// down, so the others show `left`, not `down`. Keep delivering outputs for a moment
    /// afterwards so the news gets out.
    pub fn leave(&mut self, now_ms: u64) {
        self.update_record(now_ms, |record| record.status = RecordStatus::Left);
        // Push the record out directly before foca stops gossiping for us.
        if let Err(err) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!(%err, "broadcast before leaving failed");
        }
        // Set first: foca answers leave_cluster with `Defunct`, expected now, not a warning.
        self.left = true;
        if let Err(err) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(%err, "leave failed");
        }
        self.drain(now_ms);
    }

    /// Every member this node knows, itself first, then by node id.
    pub fn members(&mut self, now_ms: u64) -> Vec<MemberView> {
        let records = self.book.lock().clone();
        let me = *self.foca.identity();
        let own_state = match (self.left, self.own_record.status) {
            (true, _) | (_, RecordStatus::Left) => MemberState::Left,
            (_, RecordStatus::Leaving) => MemberState::Leaving,
            _ => MemberState::Alive,
        };
        let mut views = vec![(me, own_state, Some(self.own_record.clone()))];
        let mut others: Vec<_> = self
            .foca
            .iter_membership_state()
            .map(|member| {
                let record = records.get(&member.id().node_id).cloned();
                (*member.id(), derive_state(member.state(), record.as_ref()), record)
            })
            .collect();
        others.sort_by_key(|(identity, _, _)| identity.node_id);
        views.extend(others);
        // Bounded by the members foca keeps (it forgets down ones after `remove_down_after`).
        self.since.retain(|id, _| views.iter().any(|(identity, _, _)| identity.node_id == *id));
        views
            .into_iter()
            .map(|(identity, state, record)| {
                let entry = self.since.entry(identity.node_id).or_insert((state, now_ms));
                if entry.0 != state {
                    *entry = (state, now_ms);
                }
                MemberView { identity, state, record, state_since_ms: entry.1 }
            })
            .collect()
    }

    fn broadcast_own_record(&mut self) {
        match encode(&self.own_record) {
            Ok(bytes) => {
                if let Err(err) = self.foca.add_broadcast(&bytes) {
                    tracing::warn!(%err, "cannot broadcast this node's record");
                }
            }
            Err(err) => tracing::warn!(%err, "cannot encode this node's record"),
        }
    }

    fn hello_seeds(&mut self) {
        for seed in self.seeds.clone() {
            self.send(seed, Kind::Hello, &[]);
        }
    }

    /// Greets every member foca still knows (down ones included). foca announces to down
    /// members only while it has an active one, so a node whose every peer is down in its
    /// view (after a long partition, with its seeds down) would otherwise stay alone forever.
    fn hello_known_members(&mut self) {
        let known: Vec<SocketAddr> = self
            .foca
            .iter_membership_state()
            .map(|member| member.id().addr)
            .filter(|addr| !self.seeds.contains(addr))
            .collect();
        // A window that moves every round, so every member is greeted in time.
        let start = (self.seed_rounds as usize).saturating_mul(ISOLATED_GREETINGS_MAX) % known.len().max(1);
        let addrs: Vec<SocketAddr> =
            known.iter().skip(start).chain(known.iter().take(start)).take(ISOLATED_GREETINGS_MAX).copied().collect();
        for addr in addrs {
            self.send(addr, Kind::Hello, &[]);
        }
    }

    /// Sends one active member a digest of a window of the records this node holds; the
    /// window moves every round, so over rounds every record is compared. foca forgets to
    /// gossip about a member once it is down, so without this a node that missed a member's
    /// later run would show the earlier run's last state (`left`, say) for as long as foca
    /// keeps it, while everyone else shows the later one.
    fn send_digest(&mut self) {
        self.repair_rounds += 1;
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|member| member.id().addr).collect();
        if members.is_empty() {
            return;
        }
        let target = members[(self.repair_rounds as usize) % members.len()];
        let records = self.book.lock();
        let start = (self.repair_rounds as usize * DIGEST_ENTRIES_MAX) % records.len().max(1);
        let digest: Vec<DigestEntry> = records
            .values()
            .skip(start)
            .chain(records.values().take(start))
            .take(DIGEST_ENTRIES_MAX)
            .map(|record| (record.node_id, record.generation, record.version))
            .collect();
        drop(records);
        if let Ok(payload) = encode(&digest) {
            self.send(target, Kind::RecordDigest, &payload);
        }
    }

    /// Answers a digest with the records this node holds that are newer than those it names.
    fn answer_digest(&mut self, from: SocketAddr, digest: &[DigestEntry]) {
        let records = self.book.lock();
        let newer: Vec<MemberRecord> = digest
            .iter()
            .filter_map(|&(node_id, generation, version)| {
                let held = records.get(&node_id)?;
                ((held.generation, held.version) > (generation, version)).then(|| held.clone())
            })
            .take(DIGEST_REPLIES_MAX)
            .collect();
        drop(records);
        for record in newer {
            if let Ok(bytes) = encode(&record) {
                self.send(from, Kind::RecordReply, &bytes);
            }
        }
    }

    /// Drops the records of members foca no longer knows, so the book stays as bounded as
    /// foca's member list.
    fn forget_departed_records(&mut self) {
        let me = self.foca.identity().node_id;
        let known: std::collections::HashSet<u128> =
            self.foca.iter_membership_state().map(|member| member.id().node_id).collect();
        self.book.lock().retain(|id, _| *id == me || known.contains(id));
    }

    fn request_missing_records(&mut self) {
        let records = self.book.lock().clone();
        let stale: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .filter(|member| records.get(&member.id().node_id).is_none_or(|r| r.generation < member.id().generation))
            .map(|member| member.id().addr)
            .collect();
        for addr in stale {
            self.send(addr, Kind::RecordRequest, &[]);
        }
    }

    fn send(&mut self, to: SocketAddr, kind: Kind, payload: &[u8]) {
        let packet = envelope::seal(self.cluster, kind, payload);
        self.stats.packets_out += 1;
        self.stats.bytes_out += packet.len() as u64;
        self.outputs.push_back(Output::Send { to, packet });
    }

    fn schedule(&mut self, after: Duration, timer: TimerEvent) {
        self.outputs.push_back(Output::Schedule { after, timer });
    }

    /// Moves foca's queued effects into ours, wrapping packets in the envelope.
    fn drain(&mut self, now_ms: u64) {
        // This node's own state dates from the first event it handled (`new` has no clock).
        if now_ms > 0 {
            self.since.entry(self.foca.identity().node_id).or_insert((MemberState::Alive, now_ms));
        }
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(to.addr, Kind::Swim, &data);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.schedule(after, TimerEvent::Foca(timer));
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.changed = true;
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::debug!(member = %id.short_id(), generation = id.generation, "member up");
                    self.since.insert(id.node_id, (MemberState::Alive, now_ms));
                    // Ask for its record now rather than at the next repair round.
                    if self.book.lock().get(&id.node_id).is_none_or(|r| r.generation < id.generation) {
                        self.send(id.addr, Kind::RecordRequest, &[]);
                    }
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::debug!(member = %id.short_id(), "member down");
                    self.since.insert(id.node_id, (MemberState::Down, now_ms));
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::debug!(member = %new.short_id(), from = old.generation, to = new.generation, "member restarted");
                }
                OwnedNotification::Rejoin(me) => {
                    tracing::info!(generation = me.generation, "the cluster declared this node down; rejoined");
                    // The record follows the identity's generation; otherwise peers would see
                    // it as stale forever and keep asking for it.
                    self.own_record.generation = me.generation;
                    self.own_record.version = 0;
                    self.broadcast_own_record();
                }
                OwnedNotification::Idle => tracing::info!("no active members left in view"),
                OwnedNotification::Active => tracing::info!("joined the cluster"),
                OwnedNotification::Defunct if self.left => tracing::debug!("left the cluster"),
                OwnedNotification::Defunct => tracing::warn!("this node's identity was declared down"),
            }
        }
    }
}

/// SWIM's verdict, refined by the member's record.
fn derive_state(swim: State, record: Option<&MemberRecord>) -> MemberState {
    match (swim, record.map(|r| r.status)) {
        (_, Some(RecordStatus::Left)) => MemberState::Left,
        (State::Down, _) => MemberState::Down,
        (_, Some(RecordStatus::Leaving)) => MemberState::Leaving,
        (State::Suspect, _) => MemberState::Suspect,
        (State::Alive, _) => MemberState::Alive,
    }
}
