//! One anti-entropy exchange between this node and one peer over the partitions both own
//! (docs/ARCHITECTURE.md §7), as an [`Op`]: it asks every question of its own store and of
//! the peer alike, compares the answers, descends only where they differ, then brings both
//! sides to the merge of what either holds. The peer keeps no state: each answer comes from
//! its store alone (`digests.rs`).
//!
//! 1. **Roots**: one digest per kind over the shared partitions. Equal everywhere: done, in
//!    one round trip.
//! 2. **Descent**: each differing tree node is opened [`FANOUT_BITS`] deeper, down to
//!    [`LEAF_BITS`].
//! 3. **Listing**: the entries of each differing leaf (a leaf with more than a page is opened
//!    further instead).
//! 4. **Repair**: records that differ are fetched from both sides and each side is sent the
//!    merge where it lacks it; blocks one side lacks are copied to it, or, in the exchanges
//!    of the schedule ([`SyncSession::pulling`]), only to this node: the peer's own exchanges
//!    fill the peer, so two exchanges running at once never copy the same block twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use shoal_membership::PARTITION_BITS;
use shoal_storage::{BlockHash, DigestKind, DirRecord, EntryKey, NodeId, Prefix, RecordUpdate};

use super::digests::{ENTRIES_PER_PREFIX_MAX, FANOUT_BITS, FETCH_KEYS_MAX, PREFIXES_PER_REQUEST_MAX, PartitionSet};
use super::messages::{BlockRpc, RecordRpc, Reply, Request, RpcError, SyncRpc};
use super::quorum::{Op, Outgoing};

/// Depth at which a differing tree node is listed instead of opened: about one entry per
/// leaf at a million entries per node.
pub const LEAF_BITS: u8 = 20;

/// Leaves listed per request.
const LEAVES_PER_REQUEST: usize = 64;

/// What one exchange did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The peer.
    pub peer: NodeId,
    /// Partitions compared.
    pub partitions: usize,
    /// Questions asked of both sides (each one round trip).
    pub round_trips: u64,
    /// Entries found different (records and blocks).
    pub differences: u64,
    /// Records this node took from the peer.
    pub records_pulled: u64,
    /// Records the peer took from this node.
    pub records_pushed: u64,
    /// Blocks copied from the peer to this node.
    pub blocks_pulled: u64,
    /// Blocks copied from this node to the peer.
    pub blocks_pushed: u64,
    /// Bytes of the blocks copied either way.
    pub block_bytes: u64,
    /// Records found different but not merged when it stopped early.
    pub unrepaired_records: u64,
    /// Blocks found missing on one side but not copied when it stopped early.
    pub unrepaired_blocks: u64,
    /// Why the exchange stopped early, if it did (what was repaired before stays repaired).
    pub failure: Option<String>,
    /// Whether this node ended holding everything either held when asked (and, but for the
    /// blocks a pulling exchange leaves, so did the peer): no failure, no block gone missing
    /// meanwhile, no leaf compared in part. Only a complete exchange is evidence for a
    /// settling partition (docs/ARCHITECTURE.md §5).
    pub complete: bool,
    /// Whether it was complete and the peer, too, ended holding everything either held: it
    /// lacked no block this node held (or they were copied to it).
    pub mutual: bool,
}

/// A question put to both sides, waiting for both answers.
#[derive(Debug)]
struct Ask {
    question: Question,
    mine: Option<Reply>,
    theirs: Option<Reply>,
}

#[derive(Clone, Debug)]
enum Question {
    Roots,
    Children(DigestKind, Vec<Prefix>),
    Entries(DigestKind, Vec<Prefix>),
    Fetch(Vec<EntryKey>),
}

/// A request to one side only.
#[derive(Debug)]
enum Single {
    /// A merge of records the side lacked.
    Merge { pulled: bool, count: u64 },
    /// Reading a block to copy to `to`.
    GetBlock { hash: BlockHash, to: NodeId },
    /// Storing a copied block.
    PutBlock { pulled: bool, bytes: u64 },
}

#[derive(Debug)]
enum Waiting {
    /// One side's answer to ask `id`: this node's own (`mine`) or the peer's.
    Both {
        id: u64,
        mine: bool,
    },
    Single(Single),
}

/// An anti-entropy exchange with one peer.
#[derive(Debug)]
pub struct SyncSession {
    this: NodeId,
    peer: NodeId,
    partitions: PartitionSet,
    queue: VecDeque<Outgoing>,
    next_token: u64,
    /// Token to what it waits for; a question's two tokens share one [`Ask`].
    waiting: HashMap<u64, Waiting>,
    asks: BTreeMap<u64, Ask>,
    next_ask: u64,
    /// Tree nodes still to open, per kind.
    frontier: BTreeMap<DigestKind, Vec<Prefix>>,
    /// Differing leaves still to list, per kind.
    leaves: BTreeMap<DigestKind, Vec<Prefix>>,
    /// Records found different, still to fetch.
    records: BTreeSet<EntryKey>,
    /// Blocks one side lacks: (block, the side that lacks it).
    blocks: VecDeque<(BlockHash, NodeId)>,
    blocks_in_flight: usize,
    /// Block copies in flight at most.
    transfers_max: usize,
    /// Bytes of block copies it may still start (granted by the node's repair budget).
    allowance: u64,
    /// What one copy is charged before its size is known: the largest block.
    block_cost: u64,
    /// Whether blocks the peer lacks are copied to it too (a hand-over), or left to the
    /// peer's own exchanges.
    both_ways: bool,
    report: SyncReport,
    outcome: Option<SyncReport>,
    done: bool,
}

impl SyncSession {
    /// An exchange between `this` and `peer` over `partitions` that brings both sides to
    /// the merge, copying blocks of at most `block_cost` bytes with up to `transfers_max` in
    /// flight, each charged to the allowance [`grant`](SyncSession::grant) gives it.
    /// [`SyncSession::unbounded`] has no limit.
    pub fn new(
        this: NodeId,
        peer: NodeId,
        partitions: PartitionSet,
        transfers_max: usize,
        block_cost: u64,
    ) -> SyncSession {
        SyncSession::with_copies(this, peer, partitions, transfers_max, block_cost, true)
    }

    /// Like [`new`](SyncSession::new), but blocks are copied only into `this`: records still
    /// go both ways (they are small), and the report says whether the peer lacked anything.
    pub fn pulling(
        this: NodeId,
        peer: NodeId,
        partitions: PartitionSet,
        transfers_max: usize,
        block_cost: u64,
    ) -> SyncSession {
        SyncSession::with_copies(this, peer, partitions, transfers_max, block_cost, false)
    }

    fn with_copies(
        this: NodeId,
        peer: NodeId,
        partitions: PartitionSet,
        transfers_max: usize,
        block_cost: u64,
        both_ways: bool,
    ) -> SyncSession {
        let report =
            SyncReport { peer, partitions: partitions.len(), complete: true, mutual: true, ..SyncReport::default() };
        let mut session = SyncSession {
            this,
            peer,
            partitions,
            queue: VecDeque::new(),
            next_token: 0,
            waiting: HashMap::new(),
            asks: BTreeMap::new(),
            next_ask: 0,
            frontier: BTreeMap::new(),
            leaves: BTreeMap::new(),
            records: BTreeSet::new(),
            blocks: VecDeque::new(),
            blocks_in_flight: 0,
            transfers_max: transfers_max.max(1),
            allowance: 0,
            block_cost,
            both_ways,
            report,
            outcome: None,
            done: false,
        };
        session.ask(Question::Roots);
        session
    }

    fn send(&mut self, to: NodeId, request: Request, waiting: Waiting) {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, waiting);
        self.queue.push_back(Outgoing { token, to, request });
    }

    fn ask(&mut self, question: Question) {
        let request = Request::Sync(match &question {
            // Durable: a complete exchange is evidence that settles partitions, confirms
            // copies and ends refills, so what it compares must outlive a crash of either
            // side (one shared fsync per side and exchange; what it merges later is durable
            // before it is acknowledged).
            Question::Roots => SyncRpc::Roots { partitions: self.partitions.clone(), durable: true },
            Question::Children(kind, prefixes) => {
                let above = prefixes.iter().any(|prefix| prefix.bits() < PARTITION_BITS as u8);
                let partitions = above.then(|| self.partitions.clone());
                SyncRpc::Children { kind: *kind, partitions, prefixes: prefixes.clone() }
            }
            Question::Entries(kind, prefixes) => {
                SyncRpc::Entries { kind: *kind, prefixes: prefixes.clone(), limit: ENTRIES_PER_PREFIX_MAX }
            }
            Question::Fetch(keys) => SyncRpc::Fetch(keys.clone()),
        });
        let id = self.next_ask;
        self.next_ask += 1;
        self.report.round_trips += 1;
        self.asks.insert(id, Ask { question, mine: None, theirs: None });
        let (this, peer) = (self.this, self.peer);
        self.send(this, request.clone(), Waiting::Both { id, mine: true });
        self.send(peer, request, Waiting::Both { id, mine: false });
    }

    /// Asks the next question, or starts the next repairs, once nothing is waiting.
    fn advance(&mut self) {
        if self.done {
            return;
        }
        if self.asks.is_empty()
            && let Some(question) = self.next_question()
        {
            self.ask(question);
            return;
        }
        while self.asks.is_empty() && self.blocks_in_flight < self.transfers_max && self.allowance >= self.block_cost {
            let Some((hash, lacking)) = self.blocks.pop_front() else { break };
            let from = if lacking == self.this { self.peer } else { self.this };
            self.blocks_in_flight += 1;
            self.allowance -= self.block_cost;
            self.send(
                from,
                Request::Block(BlockRpc::Get(hash)),
                Waiting::Single(Single::GetBlock { hash, to: lacking }),
            );
        }
        if self.asks.is_empty() && self.waiting.is_empty() && self.blocks.is_empty() {
            self.finish(None);
        }
    }

    /// The next question: open tree nodes, then list leaves, then fetch records.
    fn next_question(&mut self) -> Option<Question> {
        for (kind, prefixes) in &mut self.frontier {
            if !prefixes.is_empty() {
                let take = prefixes.len().min(PREFIXES_PER_REQUEST_MAX);
                return Some(Question::Children(*kind, prefixes.drain(..take).collect()));
            }
        }
        for (kind, prefixes) in &mut self.leaves {
            if !prefixes.is_empty() {
                let take = prefixes.len().min(LEAVES_PER_REQUEST);
                return Some(Question::Entries(*kind, prefixes.drain(..take).collect()));
            }
        }
        if !self.records.is_empty() {
            let keys: Vec<EntryKey> = self.records.iter().take(FETCH_KEYS_MAX).cloned().collect();
            for key in &keys {
                self.records.remove(key);
            }
            return Some(Question::Fetch(keys));
        }
        None
    }

    fn finish(&mut self, failure: Option<String>) {
        if !self.done {
            self.done = true;
            self.report.complete &= failure.is_none();
            self.report.mutual &= self.report.complete;
            if failure.is_some() {
                let left = self.progress();
                self.report.unrepaired_records = left.records_pending;
                self.report.unrepaired_blocks = left.blocks_pending;
            }
            self.report.failure = failure;
            self.outcome = Some(self.report.clone());
            // Nothing more is sent; answers still due are ignored.
            self.queue.clear();
            self.blocks.clear();
            self.frontier.clear();
            self.leaves.clear();
            self.records.clear();
        }
    }

    /// Both answers to question `id` are in.
    fn answered(&mut self, question: Question, mine: Reply, theirs: Reply) -> Result<(), String> {
        match (question, mine, theirs) {
            (Question::Roots, Reply::Roots(mine), Reply::Roots(theirs)) if mine.len() == theirs.len() => {
                for ((kind, a), b) in DigestKind::ALL.iter().zip(&mine).zip(&theirs) {
                    if a != b {
                        self.frontier.entry(*kind).or_default().push(Prefix::ROOT);
                    }
                }
            }
            (Question::Children(kind, prefixes), Reply::Digests(mine), Reply::Digests(theirs))
                if mine.len() == prefixes.len() && theirs.len() == prefixes.len() =>
            {
                for ((prefix, a), b) in prefixes.iter().zip(&mine).zip(&theirs) {
                    self.open(kind, *prefix, a, b)?;
                }
            }
            (Question::Entries(kind, prefixes), Reply::Entries(mine), Reply::Entries(theirs))
                if mine.len() == prefixes.len() && theirs.len() == prefixes.len() =>
            {
                for ((prefix, a), b) in prefixes.iter().zip(mine).zip(theirs) {
                    self.compare_entries(kind, *prefix, a, b);
                }
            }
            (Question::Fetch(keys), Reply::Records(mine), Reply::Records(theirs)) => {
                self.merge_records(&keys, mine, theirs)
            }
            (_, Reply::Refused(why), _) => return Err(format!("this node's store refused: {why}")),
            (_, _, Reply::Refused(why)) => return Err(format!("the peer refused: {why}")),
            (question, _, _) => return Err(format!("answers that do not fit the question {question:?}")),
        }
        Ok(())
    }

    /// Queues the differing children of `prefix` for opening or listing.
    fn open(&mut self, kind: DigestKind, prefix: Prefix, mine: &[u64], theirs: &[u64]) -> Result<(), String> {
        let children = prefix.children(FANOUT_BITS).ok_or("a prefix too deep to open")?;
        if mine.len() != theirs.len() || mine.len() != 1 << FANOUT_BITS {
            return Err("a digest answer of the wrong size".into());
        }
        for ((child, a), b) in children.zip(mine).zip(theirs) {
            if a != b {
                let queue = if child.bits() >= LEAF_BITS { &mut self.leaves } else { &mut self.frontier };
                queue.entry(kind).or_default().push(child);
            }
        }
        Ok(())
    }

    /// Compares one leaf's entries; a leaf too full to list is opened further.
    fn compare_entries(
        &mut self,
        kind: DigestKind,
        prefix: Prefix,
        mine: Vec<(EntryKey, u64)>,
        theirs: Vec<(EntryKey, u64)>,
    ) {
        let full = ENTRIES_PER_PREFIX_MAX as usize;
        if (mine.len() >= full || theirs.len() >= full) && prefix.bits() + FANOUT_BITS <= 64 {
            self.frontier.entry(kind).or_default().push(prefix);
            return;
        }
        if mine.len() >= full || theirs.len() >= full {
            // A full page at the deepest prefix: what lies past it is not compared.
            self.report.complete = false;
        }
        let mine: HashMap<EntryKey, u64> = mine.into_iter().collect();
        let theirs: HashMap<EntryKey, u64> = theirs.into_iter().collect();
        let differing = mine
            .iter()
            .filter(|(key, hash)| theirs.get(*key) != Some(*hash))
            .map(|(key, _)| key)
            .chain(theirs.keys().filter(|key| !mine.contains_key(*key)));
        for key in differing {
            self.report.differences += 1;
            match key {
                EntryKey::Block(hash) => {
                    let lacking = if mine.contains_key(key) { self.peer } else { self.this };
                    if lacking == self.peer && !self.both_ways {
                        self.report.mutual = false;
                    } else {
                        self.blocks.push_back((*hash, lacking));
                    }
                }
                record => {
                    self.records.insert(record.clone());
                }
            }
        }
    }

    /// Sends each side the merge of both where it holds less. Records for keys not asked
    /// about are ignored: a peer chooses nothing this node stores.
    fn merge_records(&mut self, asked: &[EntryKey], mine: Vec<RecordUpdate>, theirs: Vec<RecordUpdate>) {
        let asked: BTreeSet<&EntryKey> = asked.iter().collect();
        let only_asked = |(key, update): (EntryKey, RecordUpdate)| asked.contains(&key).then_some((key, update));
        let mine: BTreeMap<EntryKey, RecordUpdate> =
            mine.into_iter().filter_map(keyed).filter_map(only_asked).collect();
        let theirs: BTreeMap<EntryKey, RecordUpdate> =
            theirs.into_iter().filter_map(keyed).filter_map(only_asked).collect();
        let (mut to_me, mut to_peer) = (Vec::new(), Vec::new());
        for key in mine.keys().chain(theirs.keys()).collect::<BTreeSet<_>>() {
            let (a, b) = (mine.get(key), theirs.get(key));
            let merged = match (a, b) {
                (Some(a), Some(b)) => merge(a, b),
                (Some(only), None) | (None, Some(only)) => only.clone(),
                (None, None) => continue,
            };
            if a != Some(&merged) {
                to_me.push(merged.clone());
            }
            if b != Some(&merged) {
                to_peer.push(merged);
            }
        }
        let (this, peer) = (self.this, self.peer);
        for (to, updates, pulled) in [(this, to_me, true), (peer, to_peer, false)] {
            if !updates.is_empty() {
                let count = updates.len() as u64;
                self.send(
                    to,
                    Request::Record(RecordRpc::Merge(updates)),
                    Waiting::Single(Single::Merge { pulled, count }),
                );
            }
        }
    }

    fn single_answered(&mut self, single: Single, reply: Result<Reply, RpcError>) -> Result<(), String> {
        match (single, reply) {
            (Single::Merge { pulled, count }, Ok(Reply::Durable)) => {
                if pulled {
                    self.report.records_pulled += count;
                } else {
                    self.report.records_pushed += count;
                }
            }
            (Single::GetBlock { hash, to }, Ok(Reply::Block(Some(bytes)))) => {
                // The side that stores it verifies the bytes against the name.
                let pulled = to == self.this;
                let size = bytes.len() as u64;
                // Charged the largest block; the rest goes back.
                self.allowance += self.block_cost.saturating_sub(size);
                self.send(
                    to,
                    Request::Block(BlockRpc::Put { hash, bytes }),
                    Waiting::Single(Single::PutBlock { pulled, bytes: size }),
                );
                return Ok(());
            }
            (Single::GetBlock { .. }, Ok(Reply::Block(None))) => {
                // Gone or corrupt since it was listed: nothing to copy; the next exchange sees.
                self.blocks_in_flight -= 1;
                self.allowance += self.block_cost;
                self.report.complete = false;
            }
            (Single::PutBlock { pulled, bytes }, Ok(Reply::Durable)) => {
                self.blocks_in_flight -= 1;
                self.report.block_bytes += bytes;
                if pulled {
                    self.report.blocks_pulled += 1;
                } else {
                    self.report.blocks_pushed += 1;
                }
            }
            (_, Ok(Reply::Refused(why))) => return Err(format!("a repair was refused: {why}")),
            (_, Err(err)) => return Err(format!("a repair got no answer: {err}")),
            (single, Ok(other)) => return Err(format!("an answer that does not fit {single:?}: {other:?}")),
        }
        Ok(())
    }
}

/// A record update with the key it is for (one entry per directory update, as fetched).
fn keyed(update: RecordUpdate) -> Option<(EntryKey, RecordUpdate)> {
    let key = match &update {
        RecordUpdate::File(path, _) => EntryKey::File(path.clone()),
        RecordUpdate::Dir(dir, record) => {
            let mut names = record.children.keys();
            let (Some(name), None) = (names.next(), names.next()) else { return None };
            EntryKey::Entry { dir: dir.clone(), name: name.clone() }
        }
    };
    Some((key, update))
}

/// The merge of two updates for one key.
fn merge(a: &RecordUpdate, b: &RecordUpdate) -> RecordUpdate {
    match (a, b) {
        (RecordUpdate::File(path, x), RecordUpdate::File(_, y)) => {
            RecordUpdate::File(path.clone(), x.clone().merge(y.clone()))
        }
        (RecordUpdate::Dir(dir, x), RecordUpdate::Dir(_, y)) => {
            RecordUpdate::Dir(dir.clone(), DirRecord::merge(x.clone(), y.clone()))
        }
        // Different kinds under one key cannot come from correct stores: keep ours.
        (ours, _) => ours.clone(),
    }
}

/// How far an exchange in flight has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Records found different and not yet merged.
    pub records_pending: u64,
    /// Blocks one side lacks and not yet copied.
    pub blocks_pending: u64,
    /// Entries repaired so far (records merged and blocks copied, either way).
    pub repaired: u64,
    /// Bytes of blocks copied so far.
    pub block_bytes: u64,
}

impl SyncReport {
    /// Entries it repaired, either way.
    pub fn repaired(&self) -> u64 {
        self.records_pulled + self.records_pushed + self.blocks_pulled + self.blocks_pushed
    }
}

impl SyncSession {
    /// An exchange with no budget (copies charged nothing), two copies in flight.
    pub fn unbounded(this: NodeId, peer: NodeId, partitions: PartitionSet) -> SyncSession {
        SyncSession::new(this, peer, partitions, 2, 0)
    }

    /// Bytes it could use now: copies waiting that the allowance does not cover (0 when it
    /// waits for nothing but answers).
    pub fn wants(&self) -> u64 {
        let startable = self.blocks.len().min(self.transfers_max.saturating_sub(self.blocks_in_flight)) as u64;
        if self.done || !self.asks.is_empty() || startable == 0 {
            return 0;
        }
        (startable * self.block_cost).saturating_sub(self.allowance)
    }

    /// Adds `bytes` to what it may copy, and starts what that allows.
    pub fn grant(&mut self, bytes: u64) {
        self.allowance = self.allowance.saturating_add(bytes);
        self.advance();
    }

    /// The peer it exchanges with.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// How far it has got: what it found still to repair, and what it repaired.
    pub fn progress(&self) -> SyncProgress {
        let merging: u64 = self
            .waiting
            .values()
            .map(|waiting| match waiting {
                Waiting::Single(Single::Merge { count, .. }) => *count,
                _ => 0,
            })
            .sum();
        SyncProgress {
            records_pending: self.records.len() as u64 + merging,
            blocks_pending: self.blocks.len() as u64 + self.blocks_in_flight as u64,
            repaired: self.report.repaired(),
            block_bytes: self.report.block_bytes,
        }
    }
}

impl Op for SyncSession {
    type Output = SyncReport;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        let Some(waiting) = self.waiting.remove(&token) else { return };
        if self.done {
            return;
        }
        let result = match waiting {
            Waiting::Single(single) => self.single_answered(single, reply),
            Waiting::Both { id, mine } => match reply {
                Err(err) => Err(format!("a digest question got no answer: {err}")),
                Ok(reply) => {
                    let Some(ask) = self.asks.get_mut(&id) else { return };
                    if mine {
                        ask.mine = Some(reply)
                    } else {
                        ask.theirs = Some(reply)
                    }
                    if ask.mine.is_some() && ask.theirs.is_some() {
                        match self.asks.remove(&id) {
                            Some(Ask { question, mine: Some(mine), theirs: Some(theirs) }) => {
                                self.answered(question, mine, theirs)
                            }
                            _ => Ok(()),
                        }
                    } else {
                        Ok(())
                    }
                }
            },
        };
        match result {
            Ok(()) => self.advance(),
            Err(why) => self.finish(Some(why)),
        }
    }

    fn poll_outcome(&mut self) -> Option<SyncReport> {
        self.outcome.take()
    }

    fn is_finished(&self) -> bool {
        self.done && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_membership::Partition;
    use shoal_storage::{DirEntry, EntryKind, FileRecord, MemStore, Store, Version};

    use super::*;
    use crate::replication::{LocalCluster, partition_of};

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn file(path: &str, hlc: u64) -> RecordUpdate {
        RecordUpdate::File(path.into(), FileRecord { version: Version { hlc, node: A }, meta: None })
    }

    fn entry(dir: &str, name: &str, hlc: u64) -> RecordUpdate {
        let entry = DirEntry { version: Version { hlc, node: A }, kind: EntryKind::File, tombstone: false, size: 0 };
        RecordUpdate::Dir(dir.into(), DirRecord { children: [(name.to_string(), entry)].into() })
    }

    /// Two stores holding the same 2,000 files, entries and blocks.
    fn twins() -> LocalCluster<MemStore> {
        let cluster = LocalCluster::new([(A, Arc::new(MemStore::new(1 << 30))), (B, Arc::new(MemStore::new(1 << 30)))]);
        for node in [A, B] {
            let store = cluster.store(node);
            for i in 0..2000 {
                store.merge_records(&[file(&format!("/f{i}"), 1), entry("/", &format!("f{i}"), 1)]).expect("merge");
                store.store_block(format!("block {i}").as_bytes()).expect("block");
            }
        }
        cluster
    }

    fn all() -> PartitionSet {
        PartitionSet::of(Partition::all())
    }

    fn roots(store: &MemStore) -> Vec<shoal_storage::Digest> {
        DigestKind::ALL.iter().map(|kind| store.digest(*kind, Prefix::ROOT).expect("root")).collect()
    }

    #[test]
    fn identical_stores_compare_in_one_round_trip() {
        let cluster = twins();
        let report = cluster.run(0, SyncSession::unbounded(A, B, all()));
        assert_eq!((report.round_trips, report.differences, report.failure), (1, 0, None));
    }

    #[test]
    fn an_exchange_brings_both_sides_to_the_merge_of_what_either_holds() {
        let cluster = twins();
        let (a, b) = (cluster.store(A), cluster.store(B));
        a.merge_records(&[file("/only-a", 5), file("/f7", 9)]).expect("newer on A");
        b.merge_records(&[file("/only-b", 5), entry("/", "only-b", 5)]).expect("only on B");
        a.store_block(b"only on A").expect("block");
        b.store_block(b"only on B").expect("block");
        let report = cluster.run(0, SyncSession::unbounded(A, B, all()));
        assert_eq!(report.failure, None);
        assert_eq!(roots(a), roots(b), "equal everywhere afterwards");
        assert_eq!(b.get_file("/f7").expect("get").map(|r| r.version.hlc), Some(9), "the newer version won");
        assert_eq!((report.records_pulled, report.records_pushed), (2, 2));
        assert_eq!((report.blocks_pulled, report.blocks_pushed), (1, 1));
        assert_eq!(report.differences, 6);
        // Nothing left to do.
        let again = cluster.run(0, SyncSession::unbounded(A, B, all()));
        assert_eq!((again.round_trips, again.differences), (1, 0));
    }

    #[test]
    fn a_pulling_exchange_copies_blocks_only_into_the_node_that_runs_it_and_says_the_peer_still_lacks_some() {
        let cluster = twins();
        let (a, b) = (cluster.store(A), cluster.store(B));
        let only_a = a.store_block(b"only on A").expect("block");
        let only_b = b.store_block(b"only on B").expect("block");
        b.merge_records(&[file("/only-b", 5)]).expect("only on B");
        let pulling = |this, peer| SyncSession::pulling(this, peer, all(), 2, 0);
        let report = cluster.run(0, pulling(A, B));
        assert!(report.complete && !report.mutual, "{report:?}");
        assert_eq!((report.blocks_pulled, report.blocks_pushed), (1, 0));
        assert!(a.has_block(&only_b).expect("has"));
        assert!(!b.has_block(&only_a).expect("has"), "the peer fills itself");
        assert!(a.get_file("/only-b").expect("get").is_some(), "records still go both ways");
        // The peer's own exchange fills it; then both hold the same, and say so.
        let report = cluster.run(0, pulling(B, A));
        assert_eq!((report.blocks_pulled, report.mutual), (1, true));
        let report = cluster.run(0, pulling(A, B));
        assert!(report.mutual && report.differences == 0, "{report:?}");
        assert_eq!(roots(a), roots(b));
    }

    #[test]
    fn only_the_partitions_asked_about_are_compared_and_repaired() {
        let cluster = twins();
        let (a, b) = (cluster.store(A), cluster.store(B));
        a.merge_records(&[file("/inside", 5), file("/outside", 5)]).expect("merge");
        let inside = partition_of(b"/inside");
        assert_ne!(inside, partition_of(b"/outside"), "two partitions for the test");
        let report = cluster.run(0, SyncSession::unbounded(A, B, PartitionSet::of([inside])));
        assert_eq!(report.records_pushed, 1);
        assert!(b.get_file("/inside").expect("get").is_some());
        assert!(b.get_file("/outside").expect("get").is_none());
    }

    /// Answers every request `session` has queued, until it queues none.
    fn pump(cluster: &LocalCluster<MemStore>, session: &mut SyncSession) {
        loop {
            let mut replies = Vec::new();
            while let Some(outgoing) = session.poll_request() {
                let store = cluster.store(outgoing.to);
                replies.push((outgoing.token, Ok(crate::replication::replica::serve(&**store, outgoing.request))));
            }
            if replies.is_empty() {
                return;
            }
            for (token, reply) in replies {
                session.handle_reply(0, token, reply);
            }
        }
    }

    #[test]
    fn block_copies_wait_for_the_budget_they_are_granted_and_get_back_what_small_blocks_left() {
        let cluster = twins();
        let (a, b) = (cluster.store(A), cluster.store(B));
        for i in 0..3u8 {
            a.store_block(&[i; 10]).expect("block");
        }
        // Each copy is charged 100 bytes up front; 10-byte blocks give 90 back.
        let mut session = SyncSession::new(A, B, all(), 4, 100);
        pump(&cluster, &mut session);
        assert_eq!(session.wants(), 300, "three copies waiting, nothing granted");
        assert!(session.poll_outcome().is_none(), "an exchange waiting for budget has not ended");
        session.grant(100);
        pump(&cluster, &mut session);
        assert_eq!(session.progress().repaired, 1, "one copy's worth granted, one copy made");
        assert_eq!(session.wants(), 110, "two copies waiting, 90 bytes given back");
        session.grant(110);
        pump(&cluster, &mut session);
        let report = session.poll_outcome().expect("done once every copy was made");
        assert_eq!((report.blocks_pushed, report.block_bytes, report.failure), (3, 30, None));
        assert_eq!(roots(a), roots(b));
    }

    #[test]
    fn a_peer_that_does_not_answer_ends_the_exchange_with_the_reason() {
        let mut cluster = twins();
        cluster.store(A).merge_records(&[file("/new", 5)]).expect("merge");
        cluster.set_down(B, true);
        let report = cluster.run(0, SyncSession::unbounded(A, B, all()));
        assert!(report.failure.as_deref().is_some_and(|why| why.contains("no answer")), "{report:?}");
    }
}
