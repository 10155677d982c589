//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
}

impl Metrics {
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
        Self {
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
