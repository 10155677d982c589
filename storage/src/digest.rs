//! Merkle digests of what a store holds (docs/ARCHITECTURE.md §7), kept current by every
//! write, so anti-entropy compares two stores without reading either.
//!
//! Every entry (a file record, a directory entry, a block) has a *position*: a 64-bit hash of
//! the bytes it is placed by (a file's path, an entry's directory, a block's name). The
//! entries of one kind form a binary prefix tree over positions; a tree node's digest is the
//! XOR of the hashes of the entries beneath it ("tictac" trees, as in Riak's anti-entropy).
//! XOR makes a write cheap: changing an entry XORs `old ^ new` into each ancestor, with no
//! rescan; and it makes any subtree's digest the XOR of its children's.
//!
//! An entry's hash covers its kind, its key and its value (a record's version and content),
//! so two stores holding different versions of a file differ at that file's leaf.
//!
//! Each backend keeps a *position index* (`kind, position, key -> entry hash`), written
//! atomically with the entry, and an in-memory [`DigestCache`] of the digests at depth
//! [`CACHE_BITS`], rebuilt from the index when the store opens. A digest at depth
//! `CACHE_BITS` or above comes from the cache; a deeper one from one range scan of the index.

use serde::{Deserialize, Serialize};

use crate::{BlockHash, StoreError};

/// Depth of the cached digests: one per prefix of this many bits, per kind.
pub const CACHE_BITS: u8 = 12;

/// A directory entry's position is its directory's in these top bits and its name's below:
/// any partitioning of up to this many bits keeps a directory whole, and the entries of a
/// directory of a million children still spread over the tree below.
pub const DIRECTORY_BITS: u32 = 32;

/// The position of an entry placed by `placement_key`: the first 8 bytes of its BLAKE3 hash.
/// The ring names partitions by the top bits of positions, so a partition is a subtree.
pub fn position(placement_key: &[u8]) -> u64 {
    let hash = blake3::hash(placement_key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The kinds of entries a store digests, each in its own tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DigestKind {
    /// File records, by path.
    Files,
    /// Directory entries, by directory and name (placed by the directory).
    Entries,
    /// Blocks, by name.
    Blocks,
}

impl DigestKind {
    /// Every kind.
    pub const ALL: [DigestKind; 3] = [DigestKind::Files, DigestKind::Entries, DigestKind::Blocks];

    fn tag(self) -> u8 {
        match self {
            DigestKind::Files => 0,
            DigestKind::Entries => 1,
            DigestKind::Blocks => 2,
        }
    }

    fn index(self) -> usize {
        usize::from(self.tag())
    }

    /// The kind an index key's first byte names.
    pub(crate) fn of_index_key(key: &[u8]) -> Result<DigestKind, StoreError> {
        match key.first() {
            Some(0) => Ok(DigestKind::Files),
            Some(1) => Ok(DigestKind::Entries),
            Some(2) => Ok(DigestKind::Blocks),
            _ => Err(StoreError::Decode { what: "digest index", detail: "unknown kind".into() }),
        }
    }
}

/// The XOR of the hashes of a set of entries; all zeros for none.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of nothing.
    pub const EMPTY: Digest = Digest([0; 32]);

    /// Adds (or, being XOR, removes) `other`'s entries.
    pub fn toggle(&mut self, other: &Digest) {
        for i in 0..32 {
            self.0[i] ^= other.0[i];
        }
    }

    /// The first 8 bytes: what a comparison on the wire sends (a 2^-64 chance that two
    /// different sets compare equal, per comparison).
    pub fn short(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({:016x})", self.short())
    }
}

/// A node of a digest tree: every position whose top `bits` bits are `value`. Decoding one
/// from a peer checks it like [`Prefix::new`]: a malformed prefix is a decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawPrefix")]
pub struct Prefix {
    bits: u8,
    value: u64,
}

/// A prefix as it arrives, before it is checked.
#[derive(Deserialize)]
struct RawPrefix {
    bits: u8,
    value: u64,
}

impl TryFrom<RawPrefix> for Prefix {
    type Error = String;

    fn try_from(raw: RawPrefix) -> Result<Prefix, String> {
        Prefix::new(raw.bits, raw.value)
            .ok_or_else(|| format!("prefix {} does not fit in {} bits", raw.value, raw.bits))
    }
}

impl Prefix {
    /// The root: every position.
    pub const ROOT: Prefix = Prefix { bits: 0, value: 0 };

    /// The prefix of `bits` bits with that value, or `None` if `value` does not fit (or
    /// `bits` > 64): a peer's malformed request is refused, not truncated.
    pub fn new(bits: u8, value: u64) -> Option<Prefix> {
        let fits = match bits {
            0 => value == 0,
            1..=63 => value >> bits == 0,
            64 => true,
            _ => false,
        };
        fits.then_some(Prefix { bits, value })
    }

    /// The prefix of `bits` bits that `position` falls under.
    pub fn of_position(position: u64, bits: u8) -> Prefix {
        let bits = bits.min(64);
        let value = if bits == 0 { 0 } else { position >> (64 - u32::from(bits)) };
        Prefix { bits, value }
    }

    /// Its length in bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Its value, in `0..2^bits`.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The first and last positions under it.
    pub fn range(&self) -> (u64, u64) {
        if self.bits == 0 {
            return (0, u64::MAX);
        }
        let shift = 64 - u32::from(self.bits);
        let start = self.value.checked_shl(shift).unwrap_or(0);
        let span = if shift == 64 { u64::MAX } else { (1u64 << shift) - 1 };
        (start, start | span)
    }

    /// Whether `position` is under it.
    pub fn contains(&self, position: u64) -> bool {
        let (start, end) = self.range();
        (start..=end).contains(&position)
    }

    /// The `2^fanout_bits` children `fanout_bits` deeper, in order; `None` past depth 64.
    pub fn children(&self, fanout_bits: u8) -> Option<impl Iterator<Item = Prefix> + use<>> {
        let bits = self.bits.checked_add(fanout_bits).filter(|bits| *bits <= 64 && fanout_bits <= 16)?;
        let base = self.value << fanout_bits;
        Some((0..1u64 << fanout_bits).map(move |i| Prefix { bits, value: base | i }))
    }
}

/// The key of one digested entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntryKey {
    /// The file record at a path.
    File(String),
    /// One entry of a directory.
    Entry {
        /// The directory.
        dir: String,
        /// The child's name.
        name: String,
    },
    /// A block.
    Block(BlockHash),
}

impl EntryKey {
    /// Which tree it is in.
    pub fn kind(&self) -> DigestKind {
        match self {
            EntryKey::File(_) => DigestKind::Files,
            EntryKey::Entry { .. } => DigestKind::Entries,
            EntryKey::Block(_) => DigestKind::Blocks,
        }
    }

    /// The bytes it is placed by.
    pub fn placement(&self) -> &[u8] {
        match self {
            EntryKey::File(path) => path.as_bytes(),
            EntryKey::Entry { dir, .. } => dir.as_bytes(),
            EntryKey::Block(hash) => &hash.0,
        }
    }

    /// Its position in the digest tree: its placement's, except that a directory entry's low
    /// bits come from its name ([`DIRECTORY_BITS`]).
    pub fn position(&self) -> u64 {
        let placed = position(self.placement());
        match self {
            EntryKey::Entry { .. } => {
                let low = u64::MAX >> DIRECTORY_BITS;
                (placed & !low) | (position(&self.key_bytes()) & low)
            }
            _ => placed,
        }
    }

    /// The entry's key bytes within its kind (paths, `dir \0 name`, a block's 32 bytes).
    fn key_bytes(&self) -> Vec<u8> {
        match self {
            EntryKey::File(path) => path.as_bytes().to_vec(),
            EntryKey::Entry { dir, name } => {
                let mut key = Vec::with_capacity(dir.len() + 1 + name.len());
                key.extend_from_slice(dir.as_bytes());
                key.push(0);
                key.extend_from_slice(name.as_bytes());
                key
            }
            EntryKey::Block(hash) => hash.0.to_vec(),
        }
    }

    /// Its key in a position index: kind, position (big-endian, so index order is position
    /// order), then the key bytes.
    pub fn index_key(&self) -> Vec<u8> {
        let key = self.key_bytes();
        let mut out = Vec::with_capacity(9 + key.len());
        out.push(self.kind().tag());
        out.extend_from_slice(&self.position().to_be_bytes());
        out.extend_from_slice(&key);
        out
    }

    /// Parses an index key back; a malformed one is a decode error.
    pub fn from_index_key(bytes: &[u8]) -> Result<EntryKey, StoreError> {
        let bad = |detail: &str| StoreError::Decode { what: "digest index", detail: detail.into() };
        let (&tag, rest) = bytes.split_first().ok_or_else(|| bad("empty key"))?;
        let key = rest.get(8..).ok_or_else(|| bad("key shorter than a position"))?;
        let text = || std::str::from_utf8(key).map_err(|_| bad("key is not UTF-8"));
        match tag {
            0 => Ok(EntryKey::File(text()?.to_string())),
            1 => {
                let text = text()?;
                let (dir, name) = text.split_once('\0').ok_or_else(|| bad("entry key without a separator"))?;
                Ok(EntryKey::Entry { dir: dir.to_string(), name: name.to_string() })
            }
            2 => Ok(EntryKey::Block(BlockHash(key.try_into().map_err(|_| bad("block key is not 32 bytes"))?))),
            _ => Err(bad("unknown kind")),
        }
    }

    /// The hash of this entry holding `value` (a record's stored encoding; empty for blocks,
    /// whose name already covers their content).
    pub fn hash(&self, value: &[u8]) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[self.kind().tag()]);
        let key = self.key_bytes();
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(&key);
        hasher.update(value);
        Digest(*hasher.finalize().as_bytes())
    }
}

/// The first index key of `kind` at or after `position`.
pub(crate) fn index_start(kind: DigestKind, position: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(kind.tag());
    out.extend_from_slice(&position.to_be_bytes());
    out
}

/// The index key range (inclusive start, exclusive end) of the entries of `kind` under
/// `prefix`.
pub(crate) fn index_range(kind: DigestKind, prefix: Prefix) -> (Vec<u8>, Vec<u8>) {
    let (start, end) = prefix.range();
    let end = match end.checked_add(1) {
        Some(next) => index_start(kind, next),
        None => vec![kind.tag() + 1],
    };
    (index_start(kind, start), end)
}

/// One entry under a prefix, as a digest exchange lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// What it is.
    pub key: EntryKey,
    /// Its hash (key and value).
    pub hash: Digest,
}

/// The digests at depth [`CACHE_BITS`] of each kind, kept equal to the XOR of the position
/// index by every write. Shallower digests are XORs of these.
#[derive(Clone, Debug)]
pub(crate) struct DigestCache {
    kinds: [Vec<Digest>; 3],
    entries: [u64; 3],
}

impl Default for DigestCache {
    fn default() -> Self {
        let empty = || vec![Digest::EMPTY; 1 << CACHE_BITS];
        DigestCache { kinds: [empty(), empty(), empty()], entries: [0; 3] }
    }
}

impl DigestCache {
    /// Records that the entry of `kind` at `position` changed from `old` to `new` (`None`:
    /// absent).
    pub fn apply(&mut self, kind: DigestKind, position: u64, old: Option<&Digest>, new: Option<&Digest>) {
        let slot = &mut self.kinds[kind.index()][Prefix::of_position(position, CACHE_BITS).value as usize];
        for hash in [old, new].into_iter().flatten() {
            slot.toggle(hash);
        }
        let count = &mut self.entries[kind.index()];
        match (old.is_some(), new.is_some()) {
            (false, true) => *count += 1,
            (true, false) => *count = count.saturating_sub(1),
            _ => {}
        }
    }

    /// How many entries of `kind` the index holds.
    pub fn entries(&self, kind: DigestKind) -> u64 {
        self.entries[kind.index()]
    }

    /// The digests of `prefix`'s children `fanout_bits` deeper, if they are at depth
    /// [`CACHE_BITS`] or above: one pass over the cached slots beneath.
    pub fn children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Option<Vec<Digest>> {
        let child_bits = prefix.bits.checked_add(fanout_bits).filter(|bits| *bits <= CACHE_BITS)?;
        let per_child = 1usize << (CACHE_BITS - child_bits);
        let first = (prefix.value as usize) << (CACHE_BITS - prefix.bits);
        let slots = &self.kinds[kind.index()][first..first + (per_child << fanout_bits)];
        Some(
            slots
                .chunks(per_child)
                .map(|chunk| {
                    let mut digest = Digest::EMPTY;
                    chunk.iter().for_each(|slot| digest.toggle(slot));
                    digest
                })
                .collect(),
        )
    }

    /// The XOR of the digests of the cached `prefixes`; the deeper ones are handed back.
    pub fn sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> (Digest, Vec<Prefix>) {
        let mut sum = Digest::EMPTY;
        let mut deep = Vec::new();
        for prefix in prefixes {
            if prefix.bits == CACHE_BITS {
                sum.toggle(&self.kinds[kind.index()][prefix.value as usize]);
            } else if let Some(digest) = self.digest(kind, prefix) {
                sum.toggle(&digest);
            } else {
                deep.push(prefix);
            }
        }
        (sum, deep)
    }

    /// The digest of `prefix` if it is at depth [`CACHE_BITS`] or above.
    pub fn digest(&self, kind: DigestKind, prefix: Prefix) -> Option<Digest> {
        if prefix.bits > CACHE_BITS {
            return None;
        }
        let below = CACHE_BITS - prefix.bits;
        let first = (prefix.value << below) as usize;
        let mut digest = Digest::EMPTY;
        for slot in &self.kinds[kind.index()][first..first + (1 << below)] {
            digest.toggle(slot);
        }
        Some(digest)
    }
}

/// The digests of the children of `prefix`, `fanout_bits` deeper, from the index entries
/// under it (`(position, hash)` in any order).
pub(crate) fn children_from_entries(
    prefix: Prefix,
    fanout_bits: u8,
    entries: impl IntoIterator<Item = (u64, Digest)>,
) -> Vec<Digest> {
    let mut children = vec![Digest::EMPTY; 1 << fanout_bits];
    let child_bits = prefix.bits + fanout_bits;
    let mask = (1u64 << fanout_bits) - 1;
    for (position, hash) in entries {
        let child = Prefix::of_position(position, child_bits).value & mask;
        children[child as usize].toggle(&hash);
    }
    children
}

/// Why a digest request is refused: a prefix too deep for its fan-out.
pub(crate) fn check_fanout(prefix: Prefix, fanout_bits: u8) -> Result<(), StoreError> {
    if fanout_bits > 16 || u32::from(prefix.bits) + u32::from(fanout_bits) > 64 {
        return Err(StoreError::Decode {
            what: "digest request",
            detail: format!("fan-out of {fanout_bits} bits below a {}-bit prefix", prefix.bits),
        });
    }
    Ok(())
}

/// The hash of `key` holding `record`, over the record's stored encoding (bincode, standard
/// configuration, as both backends store it).
pub(crate) fn record_hash<T: Serialize>(key: &EntryKey, record: &T) -> Result<Digest, StoreError> {
    let bytes = bincode::serde::encode_to_vec(record, bincode::config::standard())
        .map_err(|err| StoreError::Decode { what: "record", detail: err.to_string() })?;
    Ok(key.hash(&bytes))
}

/// What a backend provides for digests: its cache and a scan of its position index.
pub(crate) trait PositionIndex {
    /// The cached digest of `prefix`, if it is shallow enough to be cached.
    fn cached(&self, kind: DigestKind, prefix: Prefix) -> Option<Digest>;

    /// The XOR of the cached digests of `prefixes` that are shallow enough to be cached; the
    /// others are handed back.
    fn cached_sum(&self, kind: DigestKind, prefixes: &mut dyn Iterator<Item = Prefix>) -> (Digest, Vec<Prefix>);

    /// The cached digests of `prefix`'s children, if they are shallow enough to be cached.
    fn cached_children(&self, kind: DigestKind, prefix: Prefix, fanout_bits: u8) -> Option<Vec<Digest>>;

    /// Visits the index entries with keys in `from..to`, in order, until `visit` says stop.
    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], Digest) -> bool) -> Result<(), StoreError>;
}

/// The position in an index key.
pub(crate) fn key_position(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(1..9)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StoreError::Decode { what: "digest index", detail: "key shorter than a position".into() })?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn digest(index: &impl PositionIndex, kind: DigestKind, prefix: Prefix) -> Result<Digest, StoreError> {
    if let Some(digest) = index.cached(kind, prefix) {
        return Ok(digest);
    }
    let mut digest = Digest::EMPTY;
    let (from, to) = index_range(kind, prefix);
    index.scan(&from, &to, &mut |_, hash| {
        digest.toggle(&hash);
        true
    })?;
    Ok(digest)
}

pub(crate) fn digest_sum(
    index: &impl PositionIndex,
    kind: DigestKind,
    prefixes: &mut dyn Iterator<Item = Prefix>,
) -> Result<Digest, StoreError> {
    let (mut sum, deep) = index.cached_sum(kind, prefixes);
    for prefix in deep {
        sum.toggle(&digest(index, kind, prefix)?);
    }
    Ok(sum)
}

pub(crate) fn digest_children(
    index: &impl PositionIndex,
    kind: DigestKind,
    prefix: Prefix,
    fanout_bits: u8,
) -> Result<Vec<Digest>, StoreError> {
    check_fanout(prefix, fanout_bits)?;
    if let Some(children) = index.cached_children(kind, prefix, fanout_bits) {
        return Ok(children);
    }
    let (from, to) = index_range(kind, prefix);
    let mut entries = Vec::new();
    let mut failed = None;
    index.scan(&from, &to, &mut |key, hash| match key_position(key) {
        Ok(position) => {
            entries.push((position, hash));
            true
        }
        Err(err) => {
            failed = Some(err);
            false
        }
    })?;
    match failed {
        Some(err) => Err(err),
        None => Ok(children_from_entries(prefix, fanout_bits, entries)),
    }
}

pub(crate) fn digest_entries(
    index: &impl PositionIndex,
    kind: DigestKind,
    prefix: Prefix,
    after: Option<&EntryKey>,
    limit: usize,
) -> Result<Vec<DigestEntry>, StoreError> {
    let (mut from, to) = index_range(kind, prefix);
    if let Some(after) = after {
        // Just past `after`: its key with a zero byte appended.
        let mut next = after.index_key();
        next.push(0);
        from = from.max(next);
    }
    let mut out = Vec::new();
    let mut failed = None;
    if limit > 0 && from < to {
        index.scan(&from, &to, &mut |key, hash| match EntryKey::from_index_key(key) {
            Ok(key) => {
                out.push(DigestEntry { key, hash });
                out.len() < limit
            }
            Err(err) => {
                failed = Some(err);
                false
            }
        })?;
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_exactly_their_positions() {
        let prefix = Prefix::of_position(0xABCD_0000_0000_0000, 16);
        assert_eq!(prefix.value(), 0xABCD);
        assert_eq!(prefix.range(), (0xABCD_0000_0000_0000, 0xABCD_FFFF_FFFF_FFFF));
        assert_eq!(Prefix::ROOT.range(), (0, u64::MAX));
        assert_eq!(Prefix::new(64, u64::MAX).map(|p| p.range()), Some((u64::MAX, u64::MAX)));
        assert!(Prefix::new(4, 16).is_none(), "16 does not fit in 4 bits");
        assert!(Prefix::new(65, 0).is_none());
        let children: Vec<Prefix> = prefix.children(2).expect("room").collect();
        assert_eq!(children.len(), 4);
        assert_eq!(children[3].range().1, prefix.range().1);
        assert!(Prefix::new(63, 0).and_then(|p| p.children(2)).is_none());
    }

    #[test]
    fn a_malformed_prefix_from_a_peer_does_not_decode() {
        let config = bincode::config::standard();
        let good = bincode::serde::encode_to_vec(Prefix::new(4, 3).expect("prefix"), config).expect("encode");
        let decoded: Prefix = bincode::serde::decode_from_slice(&good, config).expect("decode").0;
        assert_eq!(decoded, Prefix::new(4, 3).expect("prefix"));
        #[derive(Serialize)]
        struct Forged {
            bits: u8,
            value: u64,
        }
        for (bits, value) in [(0, 1), (4, 16), (65, 0)] {
            let forged = bincode::serde::encode_to_vec(Forged { bits, value }, config).expect("encode");
            assert!(bincode::serde::decode_from_slice::<Prefix, _>(&forged, config).is_err(), "{bits} {value}");
        }
    }

    #[test]
    fn index_keys_round_trip_and_sort_by_kind_then_position() {
        let keys = [
            EntryKey::File("/a/b".into()),
            EntryKey::Entry { dir: "/a".into(), name: "b".into() },
            EntryKey::Block(BlockHash([7; 32])),
        ];
        for key in &keys {
            assert_eq!(&EntryKey::from_index_key(&key.index_key()).expect("parses"), key);
            let (start, end) = index_range(key.kind(), Prefix::of_position(key.position(), 12));
            assert!(start <= key.index_key() && key.index_key() < end);
        }
        assert!(EntryKey::from_index_key(&[9, 0, 0]).is_err());
    }

    #[test]
    fn a_directorys_entries_share_its_top_bits_and_spread_below() {
        let entry = |name: &str| EntryKey::Entry { dir: "/big".into(), name: name.into() };
        let dir = position(b"/big");
        let top = |p: u64| p >> (64 - DIRECTORY_BITS);
        assert!((0..100).all(|i| top(entry(&format!("f{i}")).position()) == top(dir)));
        assert_ne!(entry("a").position(), entry("b").position());
    }

    #[test]
    fn a_cached_digest_is_the_xor_of_the_entries_beneath_and_an_update_replaces_the_old_hash() {
        let mut cache = DigestCache::default();
        let (a, b) = (EntryKey::File("/a".into()), EntryKey::File("/b".into()));
        let (a1, a2, b1) = (a.hash(b"v1"), a.hash(b"v2"), b.hash(b"v1"));
        cache.apply(DigestKind::Files, a.position(), None, Some(&a1));
        cache.apply(DigestKind::Files, b.position(), None, Some(&b1));
        cache.apply(DigestKind::Files, a.position(), Some(&a1), Some(&a2));
        let mut expected = a2;
        expected.toggle(&b1);
        assert_eq!(cache.digest(DigestKind::Files, Prefix::ROOT), Some(expected));
        assert_eq!(cache.entries(DigestKind::Files), 2);
        assert_eq!(cache.digest(DigestKind::Blocks, Prefix::ROOT), Some(Digest::EMPTY));
        let under_a = Prefix::of_position(a.position(), 12);
        let children = children_from_entries(Prefix::ROOT, 12, [(a.position(), a2), (b.position(), b1)]);
        assert_eq!(cache.digest(DigestKind::Files, under_a), Some(children[under_a.value() as usize]));
    }
}
