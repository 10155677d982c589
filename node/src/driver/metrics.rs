//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// GET, PUT, ...
    pub method: String,
    /// The route pattern, not the concrete path (bounded cardinality).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// File content bytes accepted from clients (committed or not).
    pub bytes_received: Counter,
    /// File content bytes sent to clients.
    pub bytes_sent: Counter,
    /// Uploads that ended before their body did (client gone, truncated body).
    pub uploads_aborted: Counter,
    /// Reads that found a block missing or corrupt.
    pub blocks_unavailable: Counter,
    /// Bytes stored, updated on every scrape.
    pub disk_used_bytes: Gauge,
    /// Bytes still available for data, updated on every scrape.
    pub disk_available_bytes: Gauge,
    /// Gossip datagrams and bytes, by direction.
    pub gossip_traffic: Family<TrafficLabels, Counter>,
    /// Gossip datagrams dropped, by reason.
    pub gossip_dropped: Family<DropLabels, Counter>,
    /// Records written to replicas found stale by a read (read repair).
    pub read_repairs: Counter,
    /// Ring changes this node saw (members, zones or capacities; never free space).
    pub ring_changes: Counter,
    /// Partitions whose ownership change is not confirmed yet in this node's ring.
    pub partitions_settling: Gauge,
    /// Partitions whose transition ended on anti-entropy's evidence.
    pub partitions_settled: Counter,
    /// Anti-entropy exchanges this node started, by result.
    pub sync_exchanges: Family<ResultLabels, Counter>,
    /// Entries anti-entropy copied, by kind and direction.
    pub sync_repairs: Family<RepairLabels, Counter>,
    /// Hand-overs of copies this node no longer owns, by result.
    pub handovers: Family<ResultLabels, Counter>,
    /// Partition copies (per kind) dropped after a confirmed hand-over.
    pub copies_dropped: Counter,
    /// Writes answered as in doubt (no write quorum, but possibly applied somewhere).
    pub writes_in_doubt: Counter,
    /// Partitions this node answers for by confirmed copies (`full`: N, `fewer`), and
    /// partitions it holds extra copies of (`extra`); updated on every scrape.
    pub partitions_copies: Family<StateLabels, Gauge>,
    /// Entries found different and not yet repaired; updated on every scrape.
    pub repair_backlog_entries: Gauge,
    /// Estimated bytes of that backlog; updated on every scrape.
    pub repair_backlog_bytes: Gauge,
    /// Block bytes copied by repair per second, over about the last minute.
    pub repair_rate_bytes: Gauge<f64, AtomicU64>,
    /// Seconds until the known backlog is repaired at that rate (-1: cannot be told).
    pub repair_eta_seconds: Gauge<f64, AtomicU64>,
    /// Block bytes copied by anti-entropy.
    pub repair_bytes: Counter,
    /// RPC connections closed because of what the peer sent, by reason.
    pub rpc_rejected: Family<DropLabels, Counter>,
    /// RPC connections accepted from peers.
    pub rpc_connections_accepted: Counter,
    /// RPC connections closed on accept because the server was at its connection limit.
    pub rpc_connections_refused: Counter,
    /// Members by state in this node's view, updated on every scrape.
    pub members: Family<StateLabels, Gauge>,
    last_gossip: std::sync::Mutex<shoal_membership::Stats>,
}

/// Labels of the gossip traffic counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// `in` or `out`.
    pub direction: &'static str,
    /// `packets` or `bytes`.
    pub unit: &'static str,
}

/// Labels of the gossip drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `malformed`, `oversized` or `foreign_cluster`.
    pub reason: &'static str,
}

/// Labels of the exchange counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `completed` or `failed`.
    pub result: &'static str,
}

/// Labels of the anti-entropy repair counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// `records` or `blocks`.
    pub kind: &'static str,
    /// `pulled` (to this node) or `pushed` (to the peer).
    pub direction: &'static str,
}

/// Labels of the member gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// alive, suspect, down, leaving, left.
    pub state: &'static str,
}

impl Metrics {
    /// Counts one finished anti-entropy exchange.
    pub fn observe_sync(&self, report: &shoal_core::replication::SyncReport) {
        let result = if report.failure.is_some() { "failed" } else { "completed" };
        self.sync_exchanges.get_or_create(&ResultLabels { result }).inc();
        let counts = [
            ("records", "pulled", report.records_pulled),
            ("records", "pushed", report.records_pushed),
            ("blocks", "pulled", report.blocks_pulled),
            ("blocks", "pushed", report.blocks_pushed),
        ];
        for (kind, direction, count) in counts {
            if count > 0 {
                self.sync_repairs.get_or_create(&RepairLabels { kind, direction }).inc_by(count);
            }
        }
        self.repair_bytes.inc_by(report.block_bytes);
    }

    /// Brings the durability gauges up to date with the core's account.
    pub fn observe_durability(&self, account: &shoal_core::node::Durability) {
        let states = [
            ("full", account.full),
            ("fewer", account.fewer),
            ("extra", account.extra),
            ("refilling", account.refilling),
        ];
        for (state, count) in states {
            self.partitions_copies.get_or_create(&StateLabels { state }).set(count as i64);
        }
        self.repair_backlog_entries.set(account.backlog_entries as i64);
        self.repair_backlog_bytes.set(account.backlog_bytes as i64);
        self.repair_rate_bytes.set(account.rate_bytes_per_sec);
        self.repair_eta_seconds.set(account.eta_secs().unwrap_or(-1.0));
    }

    /// All metrics at zero, registered under the `shoal` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shoal");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", requests.clone());
        let bytes_received = Counter::default();
        registry.register("file_bytes_received", "File content bytes received from clients", bytes_received.clone());
        let bytes_sent = Counter::default();
        registry.register("file_bytes_sent", "File content bytes sent to clients", bytes_sent.clone());
        let uploads_aborted = Counter::default();
        registry.register("uploads_aborted", "Uploads whose body ended early", uploads_aborted.clone());
        let blocks_unavailable = Counter::default();
        registry.register(
            "blocks_unavailable",
            "Block reads that found a block missing or corrupt",
            blocks_unavailable.clone(),
        );
        let disk_used_bytes = Gauge::default();
        registry.register("disk_used_bytes", "Bytes stored by this node", disk_used_bytes.clone());
        let disk_available_bytes = Gauge::default();
        registry.register("disk_available_bytes", "Bytes still available for data", disk_available_bytes.clone());
        let gossip_traffic = Family::<TrafficLabels, Counter>::default();
        registry.register("gossip_traffic", "Gossip datagrams and bytes by direction", gossip_traffic.clone());
        let gossip_dropped = Family::<DropLabels, Counter>::default();
        registry.register("gossip_dropped", "Gossip datagrams dropped, by reason", gossip_dropped.clone());
        let read_repairs = Counter::default();
        registry.register("read_repairs", "Stale replicas repaired by reads", read_repairs.clone());
        let ring_changes = Counter::default();
        registry.register("ring_changes", "Ring changes seen (membership or configuration)", ring_changes.clone());
        let partitions_settling = Gauge::default();
        registry.register(
            "partitions_settling",
            "Partitions whose new owners are not yet confirmed to hold what the previous ones did",
            partitions_settling.clone(),
        );
        let partitions_settled = Counter::default();
        registry.register(
            "partitions_settled",
            "Partitions whose transition ended on anti-entropy's evidence",
            partitions_settled.clone(),
        );
        let sync_exchanges = Family::<ResultLabels, Counter>::default();
        registry.register("sync_exchanges", "Anti-entropy exchanges started here, by result", sync_exchanges.clone());
        let handovers = Family::<ResultLabels, Counter>::default();
        registry.register("handovers", "Hand-overs of copies no longer owned, by result", handovers.clone());
        let copies_dropped = Counter::default();
        registry.register(
            "copies_dropped",
            "Partition copies dropped after a confirmed hand-over",
            copies_dropped.clone(),
        );
        let sync_repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "sync_repairs",
            "Entries copied by anti-entropy, by kind and direction",
            sync_repairs.clone(),
        );
        let writes_in_doubt = Counter::default();
        registry.register("writes_in_doubt", "Writes answered as in doubt", writes_in_doubt.clone());
        let rpc_rejected = Family::<DropLabels, Counter>::default();
        registry.register("rpc_rejected", "RPC connections closed for what the peer sent", rpc_rejected.clone());
        let rpc_connections_accepted = Counter::default();
        registry.register("rpc_connections_accepted", "RPC connections accepted", rpc_connections_accepted.clone());
        let rpc_connections_refused = Counter::default();
        registry.register(
            "rpc_connections_refused",
            "RPC connections closed on accept at the connection limit",
            rpc_connections_refused.clone(),
        );
        let members = Family::<StateLabels, Gauge>::default();
        registry.register("members", "Members by state in this node's view", members.clone());
        let partitions_copies = Family::<StateLabels, Gauge>::default();
        registry.register(
            "partitions_copies",
            "Partitions this node answers for with N confirmed copies (full) or fewer, partitions it holds extra copies of, and partitions it refills after losing its store",
            partitions_copies.clone(),
        );
        let repair_backlog_entries = Gauge::default();
        registry.register(
            "repair_backlog_entries",
            "Entries found different and not yet repaired",
            repair_backlog_entries.clone(),
        );
        let repair_backlog_bytes = Gauge::default();
        registry.register(
            "repair_backlog_bytes",
            "Estimated bytes of the repair backlog",
            repair_backlog_bytes.clone(),
        );
        let repair_rate_bytes = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "repair_rate_bytes_per_second",
            "Block bytes copied by repair per second over about the last minute",
            repair_rate_bytes.clone(),
        );
        let repair_eta_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "repair_eta_seconds",
            "Seconds until the known repair backlog is done at the current rate (-1: unknown)",
            repair_eta_seconds.clone(),
        );
        let repair_bytes = Counter::default();
        registry.register("repair_bytes", "Block bytes copied by anti-entropy", repair_bytes.clone());
        Self {
            read_repairs,
            ring_changes,
            partitions_settling,
            partitions_settled,
            sync_exchanges,
            sync_repairs,
            handovers,
            copies_dropped,
            writes_in_doubt,
            rpc_rejected,
            rpc_connections_accepted,
            rpc_connections_refused,
            gossip_traffic,
            gossip_dropped,
            members,
            partitions_copies,
            repair_backlog_entries,
            repair_backlog_bytes,
            repair_rate_bytes,
            repair_eta_seconds,
            repair_bytes,
            last_gossip: Default::default(),
            registry,
            requests,
            bytes_received,
            bytes_sent,
            uploads_aborted,
            blocks_unavailable,
            disk_used_bytes,
            disk_available_bytes,
        }
    }

    /// Brings the gossip counters and member gauges up to date with the core's figures.
    pub fn observe_gossip(&self, stats: shoal_membership::Stats, views: &[shoal_membership::MemberView]) {
        let mut last = self.last_gossip.lock().unwrap_or_else(|poison| poison.into_inner());
        let traffic = |direction, unit, now: u64, before: u64| {
            self.gossip_traffic.get_or_create(&TrafficLabels { direction, unit }).inc_by(now.saturating_sub(before));
        };
        traffic("in", "packets", stats.packets_in, last.packets_in);
        traffic("in", "bytes", stats.bytes_in, last.bytes_in);
        traffic("out", "packets", stats.packets_out, last.packets_out);
        traffic("out", "bytes", stats.bytes_out, last.bytes_out);
        let dropped = |reason, now: u64, before: u64| {
            self.gossip_dropped.get_or_create(&DropLabels { reason }).inc_by(now.saturating_sub(before));
        };
        dropped("malformed", stats.dropped_malformed, last.dropped_malformed);
        dropped("oversized", stats.dropped_oversized, last.dropped_oversized);
        dropped("foreign_cluster", stats.dropped_foreign_cluster, last.dropped_foreign_cluster);
        *last = stats;
        use shoal_membership::MemberState;
        for state in
            [MemberState::Alive, MemberState::Suspect, MemberState::Down, MemberState::Leaving, MemberState::Left]
        {
            let count = views.iter().filter(|view| view.state == state).count();
            self.members.get_or_create(&StateLabels { state: state.as_str() }).set(count as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
