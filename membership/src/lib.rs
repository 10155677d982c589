//! Membership for Shoal (docs/ARCHITECTURE.md §4): SWIM through `foca`, member records as versioned
//! custom broadcasts, and a small envelope around every packet that carries the cluster's id
//! and the seed handshake. Pure logic: no sockets, no clock, no global RNG. The tokio driver
//! (`shoal-node`) and the simulator (`shoal-sim`) both feed [`Membership`] the same way.
//!
//! Placement: [`Ring`] turns a membership view into each key's preference list (§5).
#![forbid(unsafe_code)]

mod codec;
mod config;
mod envelope;
mod identity;
mod membership;
mod record;
mod ring;

pub use codec::BincodeCodec;
pub use config::{CLUSTER_NAME_BYTES_MAX, ConfigError, MembershipConfig, Preset, ZONE_BYTES_MAX};
pub use envelope::{ENVELOPE_BYTES, PACKET_BYTES_MAX};
pub use identity::NodeIdentity;
pub use membership::{MemberState, MemberView, Membership, Output, Stats, TimerEvent};
pub use record::{MemberRecord, RecordStatus};
pub use ring::{PARTITION_BITS, PARTITIONS, Partition, Ring, RingMember, VNODES_PER_MEDIAN_MEMBER};
