//! Every setting that shapes a node's behaviour, in one struct that the tokio driver and the
//! simulator both hand to [`NodeCore`](super::NodeCore): the simulator runs the very policies
//! that ship, with only the numbers it chooses to change.

use std::time::Duration;

use crate::replication::Quorum;

/// How one node coordinates, serves and follows the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// Replication factor and quorum sizes (N, W, R).
    pub quorum: Quorum,
    /// Size of the blocks files are cut into.
    pub block_size_bytes: u32,
    /// How long an operation waits for one replica's answer (this node's own store included)
    /// before it counts the request as timed out: a write then is in doubt, a read asks on.
    pub rpc_timeout: Duration,
    /// How long a member that is down or missing from the view stays in the ring before its
    /// ranges move to others.
    pub evict_after: Duration,
    /// How often the placement re-evaluates the last membership view it was given, so that
    /// evictions happen even when the view does not change.
    pub placement_refresh: Duration,
    /// Blocks of one upload being written to their owners at once; the upload takes no more
    /// content while that many are in flight.
    pub upload_blocks_in_flight_max: usize,
    /// Blocks of one read fetched ahead of what the reader has taken.
    pub download_blocks_ahead_max: usize,
    /// How often the node reads its disk usage to republish it in its member record.
    pub usage_refresh: Duration,
    /// The record's disk usage is republished only once usage moved by this many bytes...
    pub usage_republish_bytes: u64,
    /// ...or by this percentage of the last published figure, so gossip is not flooded.
    pub usage_republish_percent: u64,
    /// How often the node starts an anti-entropy exchange with the next co-owner in turn
    /// (one at a time; identical partitions cost one round trip of about 1 KiB).
    pub sync_interval: Duration,
    /// How often, while partitions settle after a ring change, the node asks their owners for
    /// the evidence that they settled (one durable digest per partition and owner).
    pub settle_interval: Duration,
    /// Bytes per second of blocks the exchanges this node runs may copy (either way), so that
    /// repair never starves clients; a burst of one second's worth is allowed.
    pub repair_bytes_per_sec: u64,
    /// Block copies one exchange keeps in flight at most.
    pub repair_transfers_max: usize,
}

impl Default for CoreConfig {
    /// Production values: N = 3, W = 2, R = 2, 1 MiB blocks, 5 s RPC timeout, eviction after
    /// 10 minutes, placement re-evaluated every 200 ms, 4 blocks per upload in flight, 2 read ahead,
    /// disk usage read every 10 s and republished when it moved by 64 MiB or 1 %, an
    /// anti-entropy exchange started every 2 s, settling partitions checked every 1 s, repair
    /// copying at most 128 MiB/s with 4 blocks in flight.
    fn default() -> Self {
        Self {
            quorum: Quorum::DEFAULT,
            block_size_bytes: 1024 * 1024,
            rpc_timeout: Duration::from_secs(5),
            evict_after: Duration::from_secs(600),
            placement_refresh: Duration::from_millis(200),
            upload_blocks_in_flight_max: 4,
            download_blocks_ahead_max: 2,
            usage_refresh: Duration::from_secs(10),
            usage_republish_bytes: 64 << 20,
            usage_republish_percent: 1,
            sync_interval: Duration::from_secs(2),
            settle_interval: Duration::from_secs(1),
            repair_bytes_per_sec: 128 << 20,
            repair_transfers_max: 4,
        }
    }
}

impl CoreConfig {
    /// Why these settings cannot run, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        let q = self.quorum;
        if q.n == 0 || q.w == 0 || q.r == 0 || q.w > q.n || q.r > q.n {
            return Err(format!("quorum N={} W={} R={} needs 1 <= W, R <= N", q.n, q.w, q.r));
        }
        let positive = [
            ("block_size_bytes", self.block_size_bytes > 0),
            ("rpc_timeout", !self.rpc_timeout.is_zero()),
            ("placement_refresh", !self.placement_refresh.is_zero()),
            ("upload_blocks_in_flight_max", self.upload_blocks_in_flight_max > 0),
            ("download_blocks_ahead_max", self.download_blocks_ahead_max > 0),
            ("sync_interval", !self.sync_interval.is_zero()),
            ("settle_interval", !self.settle_interval.is_zero()),
            ("repair_bytes_per_sec", self.repair_bytes_per_sec > 0),
            ("repair_transfers_max", self.repair_transfers_max > 0),
        ];
        match positive.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(format!("{name} must be positive")),
            None => Ok(()),
        }
    }
}

impl CoreConfig {
    /// Whether disk usage `used_bytes` is worth republishing after `published` (`None`: never
    /// published).
    pub fn usage_worth_publishing(&self, published: Option<u64>, used_bytes: u64) -> bool {
        published.is_none_or(|before| {
            let delta = used_bytes.abs_diff(before);
            delta > 0
                && (delta >= self.usage_republish_bytes
                    || delta.saturating_mul(100) >= before.saturating_mul(self.usage_republish_percent))
        })
    }
}

/// A duration in whole microseconds (saturating), the unit of the core's clock.
pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
