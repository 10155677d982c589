//! The envelope around every gossip packet: magic, cluster id, kind.
//!
//! It lets a node drop packets of another cluster (or of no cluster at all) before foca sees
//! them, and carries the seed handshake: a joining node knows a seed only by address, but
//! foca announces to an identity, so the joiner first asks the address who is there.

/// `SHL` plus a format version.
const MAGIC: [u8; 4] = *b"SHL1";

/// Bytes the envelope adds in front of the payload.
pub const ENVELOPE_BYTES: usize = MAGIC.len() + 8 + 1;

/// Largest datagram sent or accepted, envelope included.
pub const PACKET_BYTES_MAX: usize = 1400;

/// What a packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A foca packet.
    Swim = 0,
    /// "Who is at this address?" (seed handshake).
    Hello = 1,
    /// "I am this identity" (bincode `NodeIdentity`).
    HelloReply = 2,
    /// "Send me your record."
    RecordRequest = 3,
    /// A member's record, sent directly (bincode `MemberRecord`).
    RecordReply = 4,
    /// "These are the records I hold" (bincode `Vec<(node id, generation, version)>`, at
    /// most a few dozen): the receiver answers with its newer ones (record anti-entropy).
    RecordDigest = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Swim,
            1 => Kind::Hello,
            2 => Kind::HelloReply,
            3 => Kind::RecordRequest,
            4 => Kind::RecordReply,
            5 => Kind::RecordDigest,
            _ => return None,
        })
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Shorter than an envelope, wrong magic, unknown kind.
    Malformed,
    /// Larger than [`PACKET_BYTES_MAX`].
    Oversized,
    /// From another cluster.
    ForeignCluster,
}

/// The cluster id: the first 8 bytes of BLAKE3 of the cluster's name.
pub(crate) fn cluster_id(name: &str) -> u64 {
    let hash = blake3::hash(name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(id)
}

/// Wraps `payload`.
pub(crate) fn seal(cluster: u64, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(ENVELOPE_BYTES + payload.len());
    packet.extend_from_slice(&MAGIC);
    packet.extend_from_slice(&cluster.to_le_bytes());
    packet.push(kind as u8);
    packet.extend_from_slice(payload);
    packet
}

/// Unwraps a packet of cluster `cluster`.
pub(crate) fn open(cluster: u64, packet: &[u8]) -> Result<(Kind, &[u8]), Rejection> {
    if packet.len() > PACKET_BYTES_MAX {
        return Err(Rejection::Oversized);
    }
    if packet.len() < ENVELOPE_BYTES || packet[..MAGIC.len()] != MAGIC {
        return Err(Rejection::Malformed);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&packet[MAGIC.len()..MAGIC.len() + 8]);
    if u64::from_le_bytes(id) != cluster {
        return Err(Rejection::ForeignCluster);
    }
    let kind = Kind::from_byte(packet[ENVELOPE_BYTES - 1]).ok_or(Rejection::Malformed)?;
    Ok((kind, &packet[ENVELOPE_BYTES..]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_sealed_packet_opens_only_in_its_own_cluster() {
        let ours = cluster_id("prod");
        let packet = seal(ours, Kind::Swim, b"payload");
        assert_eq!(open(ours, &packet), Ok((Kind::Swim, &b"payload"[..])));
        assert_eq!(open(cluster_id("staging"), &packet), Err(Rejection::ForeignCluster));
    }

    #[test]
    fn short_unknown_and_oversized_packets_are_rejected() {
        let ours = cluster_id("prod");
        assert_eq!(open(ours, b"SHL1"), Err(Rejection::Malformed));
        let mut unknown = seal(ours, Kind::Swim, b"");
        unknown[ENVELOPE_BYTES - 1] = 99;
        assert_eq!(open(ours, &unknown), Err(Rejection::Malformed));
        assert_eq!(open(ours, &vec![0u8; PACKET_BYTES_MAX + 1]), Err(Rejection::Oversized));
    }

    proptest! {
        #[test]
        fn opening_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = open(cluster_id("prod"), &bytes);
        }
    }
}
