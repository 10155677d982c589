//! Runs operations against replicas in the same process, synchronously: the unit tests' and
//! benchmarks' driver, and the reference for what a real driver must do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use shoal_storage::{NodeId, Store};

use super::messages::{Reply, RpcError};
use super::quorum::Op;
use super::replica;

/// Replicas by node id, some of which may be unreachable.
pub struct LocalCluster<S> {
    stores: BTreeMap<NodeId, Arc<S>>,
    down: BTreeSet<NodeId>,
}

impl<S: Store> LocalCluster<S> {
    /// A cluster of these replicas, all reachable.
    pub fn new(stores: impl IntoIterator<Item = (NodeId, Arc<S>)>) -> Self {
        Self { stores: stores.into_iter().collect(), down: BTreeSet::new() }
    }

    /// The store of `node`.
    pub fn store(&self, node: NodeId) -> &Arc<S> {
        &self.stores[&node]
    }

    /// Makes `node` unreachable (`true`) or reachable again.
    pub fn set_down(&mut self, node: NodeId, down: bool) {
        if down {
            self.down.insert(node);
        } else {
            self.down.remove(&node);
        }
    }

    /// Runs `op` to its end (read repair included) at time `now_us` and returns its outcome.
    /// Requests to an unreachable node fail as [`RpcError::Unreachable`].
    pub fn run<O: Op>(&self, now_us: u64, mut op: O) -> O::Output {
        let mut outcome = None;
        let mut replies: VecDeque<(u64, Result<Reply, RpcError>)> = VecDeque::new();
        loop {
            while let Some(outgoing) = op.poll_request() {
                let reply = match self.stores.get(&outgoing.to) {
                    Some(store) if !self.down.contains(&outgoing.to) => Ok(replica::serve(&**store, outgoing.request)),
                    _ => Err(RpcError::Unreachable(format!("{} is down", outgoing.to))),
                };
                replies.push_back((outgoing.token, reply));
            }
            if outcome.is_none() {
                outcome = op.poll_outcome();
            }
            let Some((token, reply)) = replies.pop_front() else { break };
            op.handle_reply(now_us, token, reply);
        }
        if outcome.is_none() {
            outcome = op.poll_outcome();
        }
        assert!(op.is_finished(), "an operation with no requests left must be finished");
        outcome.expect("a finished operation has an outcome")
    }
}
