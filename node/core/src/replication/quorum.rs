//! The building blocks of every replicated operation: a quorum read of record keys, a quorum
//! write, a block fetch with fallback. Each is a sans-IO [`Op`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use shoal_storage::{BlockHash, NodeId, RecordUpdate};

use super::messages::{BlockRpc, RecordKey, RecordRpc, RecordValue, Refusal, Reply, Request, RpcError};
use super::placement::Placement;

/// A request an operation wants sent. The driver answers every token exactly once, with the
/// reply or with why none came.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Names this request among the operation's requests.
    pub token: u64,
    /// The replica (possibly this node itself).
    pub to: NodeId,
    /// What to ask.
    pub request: Request,
}

/// A replicated operation as a state machine (foca's shape). Call order: create it, then
/// repeatedly send everything [`poll_request`](Op::poll_request) gives, feed each answer to
/// [`handle_reply`](Op::handle_reply), and check [`poll_outcome`](Op::poll_outcome); the
/// outcome comes once, possibly before [`is_finished`](Op::is_finished) (read repair and
/// stragglers continue after the client was answered). Time is an argument; no IO inside.
pub trait Op: Send {
    /// What the client gets.
    type Output;
    /// The next request to send, if any.
    fn poll_request(&mut self) -> Option<Outgoing>;
    /// The answer (or the failure) for `token`.
    fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>);
    /// The outcome, once, when decided.
    fn poll_outcome(&mut self) -> Option<Self::Output>;
    /// Whether every request was answered and nothing more will be sent.
    fn is_finished(&self) -> bool;
    /// Read-repair writes this operation sent, for the metrics.
    fn repairs_sent(&self) -> u64 {
        0
    }
}

/// Why a quorum operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumFailure {
    /// The write may have taken effect on some owners (a timeout, a lost connection, or fewer
    /// acknowledgements than the quorum): neither success nor failure can be promised. For a
    /// read: some owner did not answer in time.
    pub in_doubt: bool,
    /// What the owners said, for the error message.
    pub detail: String,
    /// Every owner that answered refused for lack of room (and none may have applied it).
    pub full: bool,
}

/// Sends requests and tracks which are still unanswered.
#[derive(Debug, Default)]
struct Sender {
    queue: VecDeque<Outgoing>,
    next_token: u64,
    outstanding: usize,
}

impl Sender {
    fn send(&mut self, to: NodeId, request: Request) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.outstanding += 1;
        self.queue.push_back(Outgoing { token, to, request });
        token
    }

    fn answered(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.outstanding == 0
    }
}

/// Every node in `sets`, once, in order.
fn union(sets: &[Vec<NodeId>]) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    sets.iter().flatten().copied().filter(|node| seen.insert(*node)).collect()
}

/// Read repair leaves alone writes younger than this (by the reader's clock): they are
/// probably still on their way to the replica that lacks them.
const REPAIR_SETTLE_US: u64 = 1_000_000;

/// Owner sets, each with how many of its members must answer.
type OwnerSets = Vec<(Vec<NodeId>, usize)>;

/// Whether `answered` holds the needed number of members of every set.
fn quorum_met(sets: &[(Vec<NodeId>, usize)], answered: &HashSet<NodeId>) -> bool {
    sets.iter().all(|(set, need)| set.iter().filter(|node| answered.contains(node)).count() >= *need)
}

/// Every node of the owner sets, once, in order.
fn owners(sets: &[(Vec<NodeId>, usize)]) -> Vec<NodeId> {
    let plain: Vec<Vec<NodeId>> = sets.iter().map(|(set, _)| set.clone()).collect();
    union(&plain)
}

/// One key of a [`ReadKeys`].
#[derive(Debug)]
struct KeyRead {
    key: RecordKey,
    sets: OwnerSets,
    answers: Vec<(NodeId, RecordValue)>,
    failures: Vec<(NodeId, String)>,
    timed_out: bool,
    outstanding: usize,
}

impl KeyRead {
    fn answered(&self) -> HashSet<NodeId> {
        self.answers.iter().map(|(node, _)| *node).collect()
    }

    fn merged(&self) -> Option<RecordValue> {
        self.answers.iter().map(|(_, value)| value.clone()).reduce(RecordValue::merge)
    }
}

/// Reads record keys from their owners: each key's answer is the merge of a read quorum of
/// owners (newest wins). Once every owner of a key has answered, those holding less than the
/// merge are repaired (read repair).
#[derive(Debug)]
pub struct ReadKeys {
    keys: Vec<KeyRead>,
    sender: Sender,
    /// Token to the key it reads, or `None` for a repair write.
    tokens: HashMap<u64, Option<(usize, NodeId)>>,
    decided: bool,
    outcome: Option<Result<Vec<RecordValue>, QuorumFailure>>,
    repairs_sent: u64,
}

impl ReadKeys {
    /// Reads `keys` as `placement` places them.
    pub fn new(placement: &Placement, keys: Vec<RecordKey>) -> ReadKeys {
        let mut read = ReadKeys {
            keys: Vec::new(),
            sender: Sender::default(),
            tokens: HashMap::new(),
            decided: false,
            outcome: None,
            repairs_sent: 0,
        };
        for (index, key) in keys.into_iter().enumerate() {
            let sets = placement.quorum_sets(key.placement(), placement.quorum().r);
            let owners = owners(&sets);
            for node in &owners {
                let token = read.sender.send(*node, Request::Record(RecordRpc::Read(key.clone())));
                read.tokens.insert(token, Some((index, *node)));
            }
            read.keys.push(KeyRead {
                key,
                sets,
                answers: Vec::new(),
                failures: Vec::new(),
                timed_out: false,
                outstanding: owners.len(),
            });
        }
        // Nothing to read (the root's lineage) is decided at once.
        read.decide();
        read
    }

    fn decide(&mut self) {
        if self.decided {
            return;
        }
        let mut values = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            if quorum_met(&key.sets, &key.answered()) {
                values.push(key.merged().expect("a met quorum has answers"));
                continue;
            }
            if key.outstanding > 0 {
                return;
            }
            let detail = key.failures.iter().map(|(node, why)| format!("{node}: {why}")).collect::<Vec<_>>();
            self.decided = true;
            self.outcome = Some(Err(QuorumFailure {
                full: false,
                in_doubt: key.timed_out,
                detail: format!(
                    "read quorum not reached for {:?} ({} of {} owners answered; {})",
                    key.key,
                    key.answers.len(),
                    owners(&key.sets).len(),
                    detail.join(", ")
                ),
            }));
            return;
        }
        self.decided = true;
        self.outcome = Some(Ok(values));
    }

    fn repair(&mut self, index: usize, now_us: u64) {
        let key = &self.keys[index];
        let Some(merged) = key.merged() else { return };
        let settled = now_us.saturating_sub(REPAIR_SETTLE_US);
        let repairs: Vec<(NodeId, RecordUpdate)> = key
            .answers
            .iter()
            .filter_map(|(node, held)| Some((*node, held.repair_to(&key.key, &merged, settled)?)))
            .collect();
        for (node, update) in repairs {
            let token = self.sender.send(node, Request::Record(RecordRpc::Merge(vec![update])));
            self.tokens.insert(token, None);
            self.repairs_sent += 1;
        }
    }
}

impl Op for ReadKeys {
    type Output = Result<Vec<RecordValue>, QuorumFailure>;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.sender.queue.pop_front()
    }

    fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        let Some(target) = self.tokens.remove(&token) else { return };
        self.sender.answered();
        let Some((index, node)) = target else {
            // A repair that fails is retried by the next read or by anti-entropy.
            if let Ok(Reply::Refused(why)) = &reply {
                tracing::debug!(%why, "a read repair was refused");
            }
            return;
        };
        let key = &mut self.keys[index];
        key.outstanding -= 1;
        match reply {
            Ok(Reply::Value(value)) => key.answers.push((node, value)),
            Ok(Reply::Refused(why)) => key.failures.push((node, why.to_string())),
            Ok(other) => key.failures.push((node, format!("unexpected answer {other:?}"))),
            Err(err) => {
                key.timed_out |= matches!(err, RpcError::Timeout);
                key.failures.push((node, err.to_string()));
            }
        }
        let complete = key.outstanding == 0;
        self.decide();
        if complete {
            self.repair(index, now_us);
        }
    }

    fn poll_outcome(&mut self) -> Option<Self::Output> {
        self.outcome.take()
    }

    fn is_finished(&self) -> bool {
        self.decided && self.sender.is_idle()
    }

    fn repairs_sent(&self) -> u64 {
        self.repairs_sent
    }
}

/// A write to the owners of one or more keys: acknowledged once, for every key, a write quorum
/// of each of its owner sets made it durable.
#[derive(Debug)]
pub struct WriteQuorum {
    /// For each key group, its owner sets with the acknowledgements each needs.
    groups: Vec<OwnerSets>,
    sender: Sender,
    tokens: HashMap<u64, NodeId>,
    acks: HashSet<NodeId>,
    failures: Vec<(NodeId, String)>,
    refused_full: usize,
    maybe_applied: bool,
    decided: bool,
    outcome: Option<Result<(), QuorumFailure>>,
}

impl WriteQuorum {
    fn empty() -> WriteQuorum {
        WriteQuorum {
            groups: Vec::new(),
            sender: Sender::default(),
            tokens: HashMap::new(),
            acks: HashSet::new(),
            failures: Vec::new(),
            refused_full: 0,
            maybe_applied: false,
            decided: false,
            outcome: None,
        }
    }

    /// Merges `updates` on the owners of their keys. Each owner gets the updates it owns in
    /// one request, applied atomically there.
    pub fn records(placement: &Placement, updates: Vec<RecordUpdate>) -> WriteQuorum {
        let mut write = WriteQuorum::empty();
        let mut per_node: BTreeMap<NodeId, Vec<RecordUpdate>> = BTreeMap::new();
        let mut groups: BTreeMap<Vec<u8>, OwnerSets> = BTreeMap::new();
        for update in updates {
            let key = match &update {
                RecordUpdate::File(path, _) | RecordUpdate::Dir(path, _) => path.as_bytes(),
            };
            let sets =
                groups.entry(key.to_vec()).or_insert_with(|| placement.quorum_sets(key, placement.quorum().w)).clone();
            for node in owners(&sets) {
                per_node.entry(node).or_default().push(update.clone());
            }
        }
        write.groups = groups.into_values().collect();
        for (node, updates) in per_node {
            let token = write.sender.send(node, Request::Record(RecordRpc::Merge(updates)));
            write.tokens.insert(token, node);
        }
        // Nothing to write is done at once.
        write.decide();
        write
    }

    /// Stores block `bytes`, named `hash`, on the owners of the hash.
    pub fn block(placement: &Placement, hash: BlockHash, bytes: Bytes) -> WriteQuorum {
        let mut write = WriteQuorum::empty();
        let sets = placement.quorum_sets(&hash.0, placement.quorum().w);
        for node in owners(&sets) {
            let token = write.sender.send(node, Request::Block(BlockRpc::Put { hash, bytes: bytes.clone() }));
            write.tokens.insert(token, node);
        }
        write.groups = vec![sets];
        write
    }

    fn decide(&mut self) {
        if self.decided {
            return;
        }
        if self.groups.iter().all(|sets| quorum_met(sets, &self.acks)) {
            self.decided = true;
            self.outcome = Some(Ok(()));
            return;
        }
        if self.sender.outstanding > 0 {
            return;
        }
        self.decided = true;
        let detail = self.failures.iter().map(|(node, why)| format!("{node}: {why}")).collect::<Vec<_>>().join(", ");
        // Nothing landed only if no owner acknowledged and no request may have been applied.
        let in_doubt = self.maybe_applied || !self.acks.is_empty();
        self.outcome = Some(Err(QuorumFailure {
            full: !in_doubt && self.refused_full > 0 && self.refused_full == self.failures.len(),
            in_doubt,
            detail: format!("write quorum not reached ({} owners made it durable; {detail})", self.acks.len()),
        }));
    }
}

impl Op for WriteQuorum {
    type Output = Result<(), QuorumFailure>;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.sender.queue.pop_front()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        let Some(node) = self.tokens.remove(&token) else { return };
        self.sender.answered();
        match reply {
            Ok(Reply::Durable) => {
                self.acks.insert(node);
            }
            Ok(Reply::Refused(why)) => {
                self.refused_full += usize::from(why == Refusal::Full);
                self.failures.push((node, why.to_string()));
            }
            Ok(other) => self.failures.push((node, format!("unexpected answer {other:?}"))),
            Err(err) => {
                self.maybe_applied |= err.maybe_applied();
                self.failures.push((node, err.to_string()));
            }
        }
        self.decide();
    }

    fn poll_outcome(&mut self) -> Option<Self::Output> {
        self.outcome.take()
    }

    fn is_finished(&self) -> bool {
        self.decided && self.sender.is_idle()
    }
}

/// Fetches one block from an owner holding a verified copy: this node first if it is an
/// owner, then the others in preference order, one at a time, falling back on a miss, an
/// error, a timeout or bytes that do not match the name. Owners found missing the block are
/// sent the good copy afterwards.
#[derive(Debug)]
pub struct FetchBlock {
    hash: BlockHash,
    this: NodeId,
    candidates: VecDeque<NodeId>,
    sender: Sender,
    asked: HashMap<u64, NodeId>,
    missing: Vec<NodeId>,
    failures: Vec<String>,
    decided: bool,
    outcome: Option<Result<Bytes, QuorumFailure>>,
}

impl FetchBlock {
    /// Fetches `hash` as `placement` places it.
    pub fn new(placement: &Placement, hash: BlockHash) -> FetchBlock {
        let this = placement.this();
        let mut candidates: VecDeque<NodeId> = union(&placement.owner_sets(&hash.0)).into();
        if let Some(at) = candidates.iter().position(|node| *node == this) {
            candidates.remove(at);
            candidates.push_front(this);
        }
        let mut fetch = FetchBlock {
            hash,
            this,
            candidates,
            sender: Sender::default(),
            asked: HashMap::new(),
            missing: Vec::new(),
            failures: Vec::new(),
            decided: false,
            outcome: None,
        };
        fetch.ask_next();
        fetch
    }

    fn ask_next(&mut self) {
        match self.candidates.pop_front() {
            Some(node) => {
                let token = self.sender.send(node, Request::Block(BlockRpc::Get(self.hash)));
                self.asked.insert(token, node);
            }
            None => {
                self.decided = true;
                self.outcome = Some(Err(QuorumFailure {
                    full: false,
                    in_doubt: false,
                    detail: format!("block {} is on no reachable owner ({})", self.hash, self.failures.join(", ")),
                }));
            }
        }
    }
}

impl Op for FetchBlock {
    type Output = Result<Bytes, QuorumFailure>;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.sender.queue.pop_front()
    }

    fn handle_reply(&mut self, _now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        let Some(node) = self.asked.remove(&token) else { return };
        self.sender.answered();
        if self.decided {
            return; // the answer to a repair
        }
        match reply {
            // This node's store verified its own copy; a peer's bytes are checked here.
            Ok(Reply::Block(Some(bytes))) if node == self.this || self.hash.matches(&bytes) => {
                self.decided = true;
                for owner in std::mem::take(&mut self.missing) {
                    let put = BlockRpc::Put { hash: self.hash, bytes: bytes.clone() };
                    let token = self.sender.send(owner, Request::Block(put));
                    self.asked.insert(token, owner);
                }
                self.outcome = Some(Ok(bytes));
                return;
            }
            Ok(Reply::Block(Some(_))) => self.failures.push(format!("{node}: bytes do not match the name")),
            Ok(Reply::Block(None)) => {
                self.missing.push(node);
                self.failures.push(format!("{node}: missing"));
            }
            Ok(Reply::Refused(why)) => self.failures.push(format!("{node}: {why}")),
            Ok(other) => self.failures.push(format!("{node}: unexpected answer {other:?}")),
            Err(err) => self.failures.push(format!("{node}: {err}")),
        }
        self.ask_next();
    }

    fn poll_outcome(&mut self) -> Option<Self::Output> {
        self.outcome.take()
    }

    fn is_finished(&self) -> bool {
        self.decided && self.sender.is_idle()
    }
}
