//! Who a member is: a permanent node id, where it listens, and which run of it this is.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A member's identity in SWIM. `node_id` is permanent (made on first start, kept in the data
/// directory) and is foca's `Addr`, the key that makes two identities the same member.
/// `generation` goes up on every start, and on [`renew`](foca::Identity::renew) after the
/// cluster wrongly declared this member down, so a restarted or refuted member rejoins by
/// itself: the higher generation wins the conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Permanent 128-bit id.
    pub node_id: u128,
    /// Gossip address (UDP).
    pub addr: SocketAddr,
    /// Which run of the node this is.
    pub generation: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = u128;

    fn renew(&self) -> Option<Self> {
        Some(Self { generation: self.generation + 1, ..*self })
    }

    fn addr(&self) -> u128 {
        self.node_id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The newer run wins; the address breaks a tie only if one id runs twice at once,
        // which is an operator error that this keeps deterministic.
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

impl NodeIdentity {
    /// The first eight hex digits of the node id, as `shoal status` prints it.
    pub fn short_id(&self) -> String {
        format!("{:032x}", self.node_id)[..8].to_string()
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    #[test]
    fn a_renewed_identity_is_the_same_member_and_wins() {
        let old = NodeIdentity { node_id: 7, addr: "127.0.0.1:1".parse().expect("addr"), generation: 3 };
        let new = old.renew().expect("renewable");
        assert_eq!(new.addr(), old.addr());
        assert_eq!(new.generation, 4);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }
}
