//! Block names: the BLAKE3 hash of a block's bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The name of a block: the BLAKE3 hash of its bytes. Also used for a whole file's content
/// hash. Equal bytes have equal names, so identical blocks are stored once.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// The name of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` are the block this hash names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; speed, not secrecy, is what matters here,
        // but there is no reason to use a different comparison.
        blake3::Hash::from_bytes(self.0) == blake3::hash(bytes)
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for BlockHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Twelve hex digits identify a block in logs without flooding them.
        write!(f, "BlockHash({})", &self.to_hex()[..12])
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a BLAKE3 hash is 64 hex digits")]
pub struct ParseBlockHashError;

impl FromStr for BlockHash {
    type Err = ParseBlockHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseBlockHashError)?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_round_trips_through_hex() {
        let hash = BlockHash::of(b"hello");
        assert_eq!(hash.to_hex().parse::<BlockHash>(), Ok(hash));
        assert_eq!("xyz".parse::<BlockHash>(), Err(ParseBlockHashError));
    }

    #[test]
    fn a_hash_matches_only_its_own_bytes() {
        let hash = BlockHash::of(b"hello");
        assert!(hash.matches(b"hello"));
        assert!(!hash.matches(b"hellO"));
    }
}
