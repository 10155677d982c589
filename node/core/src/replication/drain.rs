//! Handing over copies this node holds but no longer owns (over-replication, docs/ARCHITECTURE.md
//! §7), as an [`Op`]: an anti-entropy exchange with each current owner of the partitions,
//! one after the other, so each owner holds the merge of its copy and this one; then the
//! digests of this node and every owner, which must all be equal. Only then may this node
//! drop its copy, and only if its digest has not changed since (`StoreWork::DropVerified`).

use std::collections::{HashMap, VecDeque};

use shoal_storage::NodeId;

use super::digests::PartitionSet;
use super::messages::{Reply, Request, RpcError, SyncRpc};
use super::quorum::{Op, Outgoing};
use super::sync::SyncSession;

/// What a hand-over found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every owner holds exactly what this node holds there: these are the root digests
    /// (short, per kind) all of them showed.
    Confirmed(Vec<u64>),
    /// Not confirmed (an owner unreachable, or holding something else, such as a newer
    /// write): keep the copy and try again later.
    NotConfirmed(String),
}

#[derive(Debug)]
enum Stage {
    /// Exchanging with `owners[i]`.
    Sync(usize, Box<SyncSession>),
    /// Waiting for the roots of this node and every owner.
    Verify {
        roots: HashMap<NodeId, Vec<u64>>,
        waiting: usize,
    },
    Done,
}

/// Hands `partitions` over to `owners`.
#[derive(Debug)]
pub struct DrainSession {
    this: NodeId,
    owners: Vec<NodeId>,
    partitions: PartitionSet,
    stage: Stage,
    /// Outer token to the inner session's token, for the exchange running now.
    tokens: HashMap<u64, u64>,
    next_token: u64,
    queue: VecDeque<Outgoing>,
    /// Tokens of the roots questions, by the node asked.
    verifying: HashMap<u64, NodeId>,
    /// Block copies in flight at most, and what one is charged (see [`SyncSession::new`]).
    transfers_max: usize,
    block_cost: u64,
    outcome: Option<DrainOutcome>,
}

impl DrainSession {
    /// Hands `partitions` (owned by `owners`, not by `this`) over, its exchanges copying
    /// blocks within the allowance [`grant`](DrainSession::grant) gives them.
    pub fn new(
        this: NodeId,
        owners: Vec<NodeId>,
        partitions: PartitionSet,
        transfers_max: usize,
        block_cost: u64,
    ) -> DrainSession {
        let mut session = DrainSession {
            transfers_max,
            block_cost,
            this,
            owners,
            partitions,
            stage: Stage::Done,
            tokens: HashMap::new(),
            next_token: 0,
            queue: VecDeque::new(),
            verifying: HashMap::new(),
            outcome: None,
        };
        session.start_stage(0);
        session
    }

    /// Starts the exchange with owner `i`, or the verification after the last.
    fn start_stage(&mut self, i: usize) {
        if let Some(&owner) = self.owners.get(i) {
            let session =
                SyncSession::new(self.this, owner, self.partitions.clone(), self.transfers_max, self.block_cost);
            self.stage = Stage::Sync(i, Box::new(session));
            self.pump();
            return;
        }
        let asked: Vec<NodeId> = std::iter::once(self.this).chain(self.owners.iter().copied()).collect();
        self.stage = Stage::Verify { roots: HashMap::new(), waiting: asked.len() };
        for node in asked {
            let token = self.token();
            self.verifying.insert(token, node);
            let request = Request::Sync(SyncRpc::Roots { partitions: self.partitions.clone(), durable: true });
            self.queue.push_back(Outgoing { token, to: node, request });
        }
    }

    /// Bytes its exchange in flight could use now (see [`SyncSession::wants`]).
    pub fn wants(&self) -> u64 {
        match &self.stage {
            Stage::Sync(_, session) => session.wants(),
            _ => 0,
        }
    }

    /// Adds `bytes` to what its exchange in flight may copy.
    pub fn grant(&mut self, bytes: u64) {
        if let Stage::Sync(_, session) = &mut self.stage {
            session.grant(bytes);
            self.pump();
        }
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Moves the running exchange's requests out, and goes on when it has finished.
    fn pump(&mut self) {
        let Stage::Sync(i, session) = &mut self.stage else { return };
        let i = *i;
        let mut inner = Vec::new();
        while let Some(outgoing) = session.poll_request() {
            inner.push(outgoing);
        }
        let report = session.poll_outcome();
        let finished = session.is_finished();
        for outgoing in inner {
            let token = self.token();
            self.tokens.insert(token, outgoing.token);
            self.queue.push_back(Outgoing { token, ..outgoing });
        }
        if let Some(report) = report
            && let Some(why) = report.failure
        {
            self.finish(DrainOutcome::NotConfirmed(format!("the exchange with {} stopped: {why}", report.peer)));
            return;
        }
        if finished {
            self.tokens.clear();
            self.start_stage(i + 1);
        }
    }

    fn finish(&mut self, outcome: DrainOutcome) {
        if self.outcome.is_none() && !matches!(self.stage, Stage::Done) {
            self.outcome = Some(outcome);
        }
        self.stage = Stage::Done;
        self.queue.clear();
    }

    fn verified(&mut self, node: NodeId, reply: Result<Reply, RpcError>) {
        let Stage::Verify { roots, waiting } = &mut self.stage else { return };
        match reply {
            Ok(Reply::Roots(digests)) => {
                roots.insert(node, digests);
                *waiting -= 1;
            }
            Ok(other) => return self.finish(DrainOutcome::NotConfirmed(format!("{node} answered {other:?}"))),
            Err(err) => return self.finish(DrainOutcome::NotConfirmed(format!("{node} did not answer: {err}"))),
        }
        if *waiting > 0 {
            return;
        }
        let mine = roots.get(&self.this).cloned().unwrap_or_default();
        let outcome = match roots.iter().find(|(_, theirs)| **theirs != mine) {
            None => DrainOutcome::Confirmed(mine),
            Some((node, _)) => DrainOutcome::NotConfirmed(format!("{node} holds something else there")),
        };
        self.finish(outcome);
    }
}

impl Op for DrainSession {
    type Output = DrainOutcome;

    fn poll_request(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }

    fn handle_reply(&mut self, now_us: u64, token: u64, reply: Result<Reply, RpcError>) {
        if let Some(node) = self.verifying.remove(&token) {
            return self.verified(node, reply);
        }
        let Some(inner) = self.tokens.remove(&token) else { return };
        if let Stage::Sync(_, session) = &mut self.stage {
            session.handle_reply(now_us, inner, reply);
            self.pump();
        }
    }

    fn poll_outcome(&mut self) -> Option<DrainOutcome> {
        self.outcome.take()
    }

    fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done) && self.tokens.is_empty() && self.verifying.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_membership::Partition;
    use shoal_storage::{FileRecord, MemStore, RecordUpdate, Store, Version};

    use super::*;
    use crate::replication::{LocalCluster, partition_of};

    fn write(store: &MemStore, path: &str, hlc: u64) {
        let record = FileRecord { version: Version { hlc, node: NodeId(9) }, meta: None };
        store.merge_records(&[RecordUpdate::File(path.into(), record)]).expect("merge");
    }

    fn cluster() -> LocalCluster<MemStore> {
        LocalCluster::new((1..=4).map(|i| (NodeId(i), Arc::new(MemStore::new(1 << 20)))))
    }

    #[test]
    fn a_hand_over_confirms_once_every_owner_holds_what_this_node_holds() {
        let cluster = cluster();
        write(cluster.store(NodeId(4)), "/moved", 1);
        write(cluster.store(NodeId(1)), "/moved", 1);
        let partitions = PartitionSet::of([partition_of(b"/moved")]);
        let owners = vec![NodeId(1), NodeId(2), NodeId(3)];
        let outcome = cluster.run(0, DrainSession::new(NodeId(4), owners, partitions, 2, 0));
        assert!(matches!(outcome, DrainOutcome::Confirmed(_)), "{outcome:?}");
        for owner in 1..=3 {
            assert!(cluster.store(NodeId(owner)).get_file("/moved").expect("get").is_some(), "owner {owner} has it");
        }
    }

    #[test]
    fn an_unreachable_owner_means_no_confirmation() {
        let mut cluster = cluster();
        write(cluster.store(NodeId(4)), "/moved", 1);
        cluster.set_down(NodeId(3), true);
        let partitions = PartitionSet::of(Partition::all());
        let outcome =
            cluster.run(0, DrainSession::new(NodeId(4), vec![NodeId(1), NodeId(2), NodeId(3)], partitions, 2, 0));
        assert!(matches!(outcome, DrainOutcome::NotConfirmed(_)), "{outcome:?}");
    }
}
