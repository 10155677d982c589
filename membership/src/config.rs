//! Membership settings with presets built on foca's LAN and WAN configurations.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::{ENVELOPE_BYTES, PACKET_BYTES_MAX};

/// Longest zone name, in bytes (records must stay small).
pub const ZONE_BYTES_MAX: usize = 64;
/// Longest cluster name, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;

/// Timing presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A data centre: foca's `new_lan` (probe every 1 s, suspicion 4·max(1, log10 n) s).
    Lan,
    /// Across regions: foca's `new_wan` (probe every 5 s, suspicion 6·max(1, log10 n)·5 s).
    Wan,
    /// Loopback and tests: LAN shape, five times faster (probe every 200 ms).
    Local,
}

/// Membership settings. `foca_config` derives foca's own configuration from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Packets of other clusters are dropped (and counted): two clusters on one network never
    /// merge by accident.
    pub cluster_name: String,
    /// Timing preset.
    pub preset: Preset,
    /// Expected number of members: scales dissemination and the suspicion timeout.
    pub expected_members: NonZeroU32,
    /// How often a node that has not joined asks its seeds again.
    pub seed_retry: Duration,
    /// How often a node asks members whose record it lacks to send it.
    pub record_repair: Duration,
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cluster name is empty or too long.
    #[error("cluster_name must be 1 to {CLUSTER_NAME_BYTES_MAX} bytes")]
    ClusterName,
    /// The zone name is too long.
    #[error("zone must be at most {ZONE_BYTES_MAX} bytes")]
    Zone,
    /// A period is zero.
    #[error("{0} must be positive")]
    ZeroPeriod(&'static str),
}

impl MembershipConfig {
    /// A preset for a cluster of about `expected_members`.
    pub fn new(cluster_name: impl Into<String>, preset: Preset, expected_members: NonZeroU32) -> Self {
        let (seed_retry, record_repair) = match preset {
            Preset::Lan => (Duration::from_secs(2), Duration::from_secs(10)),
            Preset::Wan => (Duration::from_secs(5), Duration::from_secs(30)),
            Preset::Local => (Duration::from_millis(500), Duration::from_secs(2)),
        };
        Self { cluster_name: cluster_name.into(), preset, expected_members, seed_retry, record_repair }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_name.is_empty() || self.cluster_name.len() > CLUSTER_NAME_BYTES_MAX {
            return Err(ConfigError::ClusterName);
        }
        if self.seed_retry.is_zero() {
            return Err(ConfigError::ZeroPeriod("seed_retry"));
        }
        if self.record_repair.is_zero() {
            return Err(ConfigError::ZeroPeriod("record_repair"));
        }
        Ok(())
    }

    /// foca's configuration for this preset. Periodic announces to active members and to
    /// members believed down are on in every preset, so a partition heals with no operator.
    pub fn foca_config(&self) -> foca::Config {
        let mut config = match self.preset {
            Preset::Lan => foca::Config::new_lan(self.expected_members),
            Preset::Wan => foca::Config::new_wan(self.expected_members),
            Preset::Local => {
                let mut config = foca::Config::new_lan(self.expected_members);
                config.probe_period /= 5;
                config.probe_rtt /= 5;
                config.suspect_to_down_after /= 5;
                config.periodic_gossip = config.periodic_gossip.map(|mut p| {
                    p.frequency /= 2;
                    p
                });
                config.periodic_announce =
                    Some(foca::PeriodicParams { frequency: Duration::from_secs(3), num_members: NonZeroUsize::MIN });
                config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
                    frequency: Duration::from_secs(5),
                    num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
                });
                config
            }
        };
        // Our envelope rides in front of every foca packet.
        config.max_packet_size = NonZeroUsize::new(PACKET_BYTES_MAX - ENVELOPE_BYTES).unwrap_or(NonZeroUsize::MIN);
        config
    }

    /// SWIM's analytic bound on the time from a crash to the cluster marking the member down:
    /// ≈ 1.58 probe periods until someone probes it (the expected wait under foca's
    /// round-robin probing), the probe's round trip, the suspicion timeout, and the gossip
    /// rounds that spread the verdict (log₂ n rounds of `periodic_gossip`).
    pub fn detection_bound(&self, members: u32) -> Duration {
        let config = self.foca_config();
        let gossip = config.periodic_gossip.map_or(config.probe_period, |p| p.frequency);
        let rounds = f64::from(members.max(2)).log2().ceil();
        config.probe_period.mul_f64(1.58) + config.probe_rtt + config.suspect_to_down_after + gossip.mul_f64(rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(members: u32) -> NonZeroU32 {
        NonZeroU32::new(members).expect("non-zero")
    }

    #[test]
    fn presets_are_valid_and_leave_room_for_the_envelope() {
        for preset in [Preset::Lan, Preset::Wan, Preset::Local] {
            let config = MembershipConfig::new("prod", preset, n(10));
            config.validate().expect("valid");
            let foca = config.foca_config();
            assert_eq!(foca.max_packet_size.get() + ENVELOPE_BYTES, PACKET_BYTES_MAX);
            assert!(foca.periodic_announce.is_some() && foca.periodic_announce_to_down_members.is_some());
            assert!(foca.probe_rtt < foca.probe_period);
        }
    }

    #[test]
    fn the_local_preset_is_faster_than_lan() {
        let lan = MembershipConfig::new("c", Preset::Lan, n(5));
        let local = MembershipConfig::new("c", Preset::Local, n(5));
        assert!(local.detection_bound(5) * 4 < lan.detection_bound(5));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(MembershipConfig::new("", Preset::Lan, n(1)).validate(), Err(ConfigError::ClusterName));
        let long = "x".repeat(CLUSTER_NAME_BYTES_MAX + 1);
        assert_eq!(MembershipConfig::new(long, Preset::Lan, n(1)).validate(), Err(ConfigError::ClusterName));
    }
}
