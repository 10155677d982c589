//! Checkers: properties of the cluster verified from outside the nodes, against what the
//! simulator knows to be true (who runs, who crashed, who left).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::replication::Placement;
use shoal_membership::{MemberState, MemberView};
use shoal_storage::NodeId;

use crate::sim::{NodeStatus, Sim};

/// A failed check: what was wrong, when, and the command that replays the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    /// What was wrong.
    pub message: String,
    /// The run's seed.
    pub seed: u64,
    /// Virtual time of the check, in ms.
    pub at_ms: u64,
    /// The command that replays the run.
    pub replay: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "check failed at {} ms (SEED={}): {}\nreplay with: {}",
            self.at_ms, self.seed, self.message, self.replay
        )
    }
}

impl std::error::Error for CheckFailure {}

impl Sim {
    /// A failure of a check at the current time.
    pub fn failure(&self, message: impl Into<String>) -> CheckFailure {
        CheckFailure {
            message: message.into(),
            seed: self.config().seed,
            at_ms: self.now_ms(),
            replay: self.replay_command(),
        }
    }

    /// `Ok` if `ok`, otherwise a failure with the message `message` builds.
    pub fn check(&self, ok: bool, message: impl FnOnce() -> String) -> Result<(), CheckFailure> {
        if ok { Ok(()) } else { Err(self.failure(message())) }
    }

    /// Every running node but `subject` sees `subject` in `state`; for a running subject and
    /// `Alive`, with the identity (generation) it runs with now.
    pub fn check_all_see(&mut self, subject: usize, state: MemberState) -> Result<(), CheckFailure> {
        let subject_id = self.node_id(subject);
        let expected_identity = self.identity(subject).filter(|_| state == MemberState::Alive);
        for observer in self.running_nodes() {
            if observer == subject {
                continue;
            }
            let view = self.view(observer);
            let seen = view.iter().find(|member| member.identity.node_id == subject_id);
            let ok = seen.is_some_and(|member| {
                member.state == state && expected_identity.is_none_or(|identity| member.identity == identity)
            });
            if !ok {
                return Err(self.failure(format!(
                    "node {observer} sees node {subject} as {}, expected {}{}",
                    describe(seen),
                    state.as_str(),
                    expected_identity.map(|id| format!(" generation {}", id.generation)).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Whether [`check_all_see`](Sim::check_all_see) passes.
    pub fn all_see(&mut self, subject: usize, state: MemberState) -> bool {
        self.check_all_see(subject, state).is_ok()
    }

    /// Panics, with the replay command, unless every running node but `subject` sees
    /// `subject` in `state`.
    pub fn assert_all_see(&mut self, subject: usize, state: MemberState) {
        if let Err(failure) = self.check_all_see(subject, state) {
            panic!("{failure}");
        }
    }

    /// The views agree with the truth. Every running node sees:
    /// - every other running node `alive`, with its current identity and the record of its
    ///   current run;
    /// - every crashed node `down` (or not at all, if it joined after the crash);
    /// - every node that left `left` or `down` (or not at all);
    /// - no member the simulator did not start.
    ///
    /// Nodes still lingering after `leave` are neither checked nor observers.
    pub fn check_converged(&mut self) -> Result<(), CheckFailure> {
        let n = self.len();
        let statuses: Vec<NodeStatus> = (0..n).map(|index| self.status(index)).collect();
        let identities: Vec<_> = (0..n).map(|index| self.identity(index)).collect();
        let generations: Vec<u64> = (0..n).map(|index| self.generation(index)).collect();
        for observer in self.running_nodes() {
            let view = self.view(observer);
            let mut seen: HashMap<usize, &MemberView> = HashMap::with_capacity(view.len());
            for member in view.iter().skip(1) {
                match self.index_of(member.identity.node_id) {
                    Some(index) => {
                        seen.insert(index, member);
                    }
                    None => {
                        return Err(self.failure(format!(
                            "node {observer} knows a member no one started: {:?} ({})",
                            member.identity,
                            member.state.as_str()
                        )));
                    }
                }
            }
            for subject in (0..n).filter(|&subject| subject != observer) {
                let member = seen.get(&subject).copied();
                let ok = match statuses[subject] {
                    NodeStatus::Running => member.is_some_and(|member| {
                        Some(member.identity) == identities[subject]
                            && member.state == MemberState::Alive
                            // A record follows its member's identity, renewals included.
                            && member.record.as_ref().is_some_and(|r| r.generation == member.identity.generation)
                    }),
                    NodeStatus::Leaving => true,
                    // `left` too, if the run crashed during its leave's linger, or if what the
                    // observer saw leave was an earlier run: the later run crashed before
                    // anyone up now heard of it, so nothing better can be known.
                    NodeStatus::Crashed => member.is_none_or(|member| {
                        member.state == MemberState::Down
                            || (member.state == MemberState::Left
                                && (self.announced_leave(subject) || member.identity.generation < generations[subject]))
                    }),
                    // `down` is accepted too: a member that missed the leaver's last words
                    // (partitioned away during its linger) is never sent them again; that
                    // is stale but safe, and the `leave` scenario checks `left` itself.
                    NodeStatus::Left => {
                        member.is_none_or(|member| matches!(member.state, MemberState::Left | MemberState::Down))
                    }
                    NodeStatus::Idle => member.is_none(),
                };
                if !ok {
                    return Err(self.failure(format!(
                        "node {observer} sees node {subject} ({:?}{}) as {}",
                        statuses[subject],
                        identities[subject].map(|id| format!(", generation {}", id.generation)).unwrap_or_default(),
                        describe(member)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether [`check_converged`](Sim::check_converged) passes.
    pub fn is_converged(&mut self) -> bool {
        self.check_converged().is_ok()
    }

    /// Panics, with the replay command, unless the views agree with the truth.
    pub fn assert_converged(&mut self) {
        if let Err(failure) = self.check_converged() {
            panic!("{failure}");
        }
    }

    /// Members node `observer` sees alive, itself included.
    pub fn alive_count(&mut self, observer: usize) -> usize {
        self.view(observer).iter().filter(|member| member.state == MemberState::Alive).count()
    }

    /// Runs until `check` passes (tried now, then every poll interval) and returns how long
    /// that took; after `max`, the last failure, prefixed with `what`.
    pub fn wait_for(
        &mut self,
        what: &str,
        max: Duration,
        mut check: impl FnMut(&mut Sim) -> Result<(), CheckFailure>,
    ) -> Result<Duration, CheckFailure> {
        let start = self.now();
        let mut last = None;
        let passed = self.run_until(
            |sim| match check(sim) {
                Ok(()) => true,
                Err(failure) => {
                    last = Some(failure);
                    false
                }
            },
            max,
        );
        if passed {
            return Ok(self.now() - start);
        }
        let detail = last.map_or_else(String::new, |failure| format!(": still {}", failure.message));
        // What every view held, for whoever replays the failure (`RUST_LOG=shoal_sim=debug`).
        for index in 0..self.len() {
            let (status, generation) = (self.status(index), self.generation(index));
            for member in self.try_view(index).unwrap_or_default() {
                let subject = self.index_of(member.identity.node_id);
                let record = member.record.as_ref().map(|r| (r.generation, r.status));
                tracing::debug!(
                    index,
                    ?status,
                    generation,
                    ?subject,
                    member_generation = member.identity.generation,
                    state = member.state.as_str(),
                    ?record,
                    "view at the failure"
                );
            }
        }
        Err(self.failure(format!("{what} did not happen within {} s{detail}", max.as_secs_f64())))
    }
}

fn describe(member: Option<&MemberView>) -> String {
    match member {
        None => "absent".to_string(),
        Some(member) => format!(
            "{} (generation {}, record {})",
            member.state.as_str(),
            member.identity.generation,
            member.record.as_ref().map_or("missing".to_string(), |r| format!("generation {}", r.generation))
        ),
    }
}

/// Checkers of the data plane: the clients' history against the properties of docs/ARCHITECTURE.md
/// §5 and §6 (see [`History`](crate::History)).
impl Sim {
    /// Reads saw every write acknowledged before they started, returned only what PUTs
    /// wrote, and every write that started after another was acknowledged got a greater
    /// version.
    pub fn check_history(&self) -> Result<(), CheckFailure> {
        let history = self.history();
        history.check_reads().map_err(|message| self.failure(message))?;
        history.check_later_writes_win().map_err(|message| self.failure(message))
    }

    /// No write coordinated by one of `nodes` that started at or after `from` and was
    /// answered by `until` was acknowledged.
    pub fn check_none_acked(&self, nodes: &[usize], from: Duration, until: Duration) -> Result<(), CheckFailure> {
        self.history().check_none_acked(nodes, from, until).map_err(|message| self.failure(message))
    }

    /// Runs until every client operation has its answer (or was abandoned), at most `max`.
    pub fn wait_for_clients(&mut self, max: Duration) -> Result<Duration, CheckFailure> {
        self.wait_for("every client operation to end", max, |sim| {
            let in_flight = sim.clients_in_flight();
            sim.check(in_flight == 0, || format!("{in_flight} client operations in flight"))
        })
    }

    /// No acknowledged write lost: reads every path the clients touched through node
    /// `reader`, each with a quorum read of its record and then its blocks, once every client
    /// operation has ended; each must hold the newest acknowledged write to its path (or
    /// something newer), with exactly the content its PUT wrote. Returns how many paths were
    /// read.
    pub fn check_no_acknowledged_write_lost(&mut self, reader: usize) -> Result<usize, CheckFailure> {
        self.wait_for_clients(Duration::from_secs(60))?;
        let paths: std::collections::BTreeSet<String> = self.history().ops.into_iter().map(|op| op.path).collect();
        let reads: Vec<u64> = paths.iter().map(|path| self.start_read_record(reader, path)).collect();
        self.wait_for_clients(Duration::from_secs(60))?;
        self.history().check_final_reads(&reads).map_err(|message| self.failure(message))?;
        Ok(paths.len())
    }
}

/// What [`Sim::check_replicas_agree`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Partitions whose running owners were compared.
    pub partitions: usize,
    /// Entries (records and blocks) held by the cluster, counted once each.
    pub entries: u64,
}

impl Sim {
    /// Anti-entropy's promise, checked from outside: every running node places by the same
    /// ring, and in every partition, for every kind, all its running owners hold exactly the
    /// same entries (their digests are equal), and no running node holds anything of a
    /// partition it does not own. So every entry has exactly N copies, on its owners, when all
    /// of them run. Call it after a quiet period.
    pub fn check_replicas_agree(&self) -> Result<ReplicaReport, CheckFailure> {
        use shoal_membership::Partition;
        use shoal_storage::{Digest, DigestKind, Prefix, Store};

        let running = self.running_nodes();
        let placements: Vec<_> =
            running.iter().filter_map(|&index| self.placement(index).map(|p| (index, p))).collect();
        let Some((first, reference)) = placements.first().cloned() else { return Ok(ReplicaReport::default()) };
        for (index, placement) in &placements {
            if placement.ring().members() != reference.ring().members() || placement.in_transition() {
                return Err(self.failure(format!(
                    "node {index} places by another ring than node {first} (or is still in transition)"
                )));
            }
        }
        let index_of: HashMap<u128, usize> = (0..self.len()).map(|index| (self.node_id(index), index)).collect();
        let mut report = ReplicaReport::default();
        for partition in Partition::all() {
            let Some(prefix) = Prefix::new(shoal_membership::PARTITION_BITS as u8, u64::from(partition.0)) else {
                continue;
            };
            let owners: Vec<usize> = reference
                .ring()
                .owners(partition)
                .filter_map(|member| index_of.get(&member.node_id).copied())
                .filter(|index| running.contains(index))
                .collect();
            for kind in DigestKind::ALL {
                let digest = |index: usize| self.store(index).digest(kind, prefix).unwrap_or_default();
                let digests: Vec<(usize, Digest)> = owners.iter().map(|&index| (index, digest(index))).collect();
                if digests.windows(2).any(|pair| pair[0].1 != pair[1].1) {
                    let counts: Vec<String> = owners
                        .iter()
                        .map(|&index| {
                            let entries =
                                self.store(index).digest_entries(kind, prefix, None, usize::MAX).map_or(0, |e| e.len());
                            format!("node {index}: {entries}")
                        })
                        .collect();
                    return Err(self.failure(format!(
                        "the owners of partition {} differ in their {kind:?} after the quiet period ({})",
                        partition.0,
                        counts.join(", ")
                    )));
                }
                if let Some(&owner) = owners.first() {
                    report.entries +=
                        self.store(owner).digest_entries(kind, prefix, None, usize::MAX).map_or(0, |e| e.len() as u64);
                }
            }
            let misplaced = running.iter().filter(|index| !owners.contains(index)).find(|&&index| {
                DigestKind::ALL
                    .iter()
                    .any(|kind| self.store(index).digest(*kind, prefix).unwrap_or_default() != Digest::EMPTY)
            });
            if let Some(index) = misplaced {
                return Err(self.failure(format!(
                    "node {index} still holds copies of partition {}, which it does not own",
                    partition.0
                )));
            }
            report.partitions += usize::from(!owners.is_empty());
        }
        Ok(report)
    }

    /// Runs until [`check_replicas_agree`](Sim::check_replicas_agree) passes, checking every
    /// 5 s of virtual time, for at most `max`; returns the report and how long it took.
    /// Waits until no running node's placement has a partition settling: anti-entropy gave
    /// every node the evidence that ends its transitions. Returns how long it took.
    pub fn wait_for_settled(&mut self, max: Duration) -> Result<Duration, CheckFailure> {
        self.wait_for("every placement to settle", max, |sim| {
            let settling: Vec<(usize, Arc<Placement>)> = sim
                .running_nodes()
                .into_iter()
                .filter_map(|index| Some((index, sim.placement(index)?)))
                .filter(|(_, placement)| placement.in_transition())
                .collect();
            sim.check(settling.is_empty(), || {
                let counts: Vec<(usize, usize)> = settling.iter().map(|(i, p)| (*i, p.settling().len())).collect();
                let (index, placement) = &settling[0];
                let (partition, sets) = placement.settling().iter().next().expect("in transition");
                let name = |sets: &[Vec<NodeId>]| -> Vec<Vec<Option<usize>>> {
                    sets.iter().map(|set| set.iter().map(|node| sim.index_of(node.0)).collect()).collect()
                };
                format!(
                    "partitions still settling (node, count): {counts:?}; node {index}'s {partition:?}: owners {:?}, \
                     previous {:?}",
                    name(&[placement.owners(*partition)]),
                    name(sets)
                )
            })
        })
    }

    pub fn wait_for_replicas(&mut self, max: Duration) -> Result<(ReplicaReport, Duration), CheckFailure> {
        let start = self.now();
        loop {
            match self.check_replicas_agree() {
                Ok(report) => return Ok((report, self.now() - start)),
                Err(failure) if self.now() - start >= max => {
                    return Err(CheckFailure {
                        message: format!("replicas did not converge within {max:?}: {}", failure.message),
                        ..failure
                    });
                }
                Err(_) => self.run_for(Duration::from_secs(5)),
            }
        }
    }
}
