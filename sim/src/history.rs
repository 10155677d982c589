//! What the clients of a run did and were told, and the properties checked on it from
//! outside the nodes (docs/ARCHITECTURE.md §6, §10): no acknowledged write lost, reads that start
//! after a write was acknowledged see it, a write that starts after another was acknowledged
//! wins, and a minority acknowledges nothing.
//!
//! Times are the simulator's virtual time (the truth), never a node's skewed clock. A PUT is
//! recognised by its content (every PUT writes unique bytes), so a read can be traced back to
//! the PUT it returns even when that PUT was never acknowledged.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use shoal_storage::{BlockHash, Version};

use crate::sim::wall_clock_us;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKind {
    /// Store blocks, then commit the file record.
    Put,
    /// Stat the file, then fetch and verify its blocks.
    Get,
    /// Write a tombstone.
    Delete,
    /// A quorum read of the file record itself, tombstones included, then its blocks: what
    /// the final checks read.
    ReadRecord,
}

impl ClientKind {
    /// Whether it changes the file.
    pub fn is_write(self) -> bool {
        matches!(self, ClientKind::Put | ClientKind::Delete)
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write quorum made the write durable; PUT: the file's version, DELETE: the
    /// tombstone's.
    Acked(Version),
    /// A read found a live file at `version` and read back exactly what the PUT of that
    /// content wrote.
    Found {
        /// The version read.
        version: Version,
        /// Its content's hash.
        content_hash: BlockHash,
    },
    /// A record read found a tombstone.
    Tombstone(Version),
    /// A read found no live file; a DELETE found nothing to delete.
    NotFound,
    /// Certainly without effect (nothing reached a quorum and nothing may have landed).
    Failed(String),
    /// A write that may or may not take effect.
    InDoubt(String),
    /// The coordinating node crashed before answering.
    Unanswered,
    /// Still running when the history was taken.
    Pending,
    /// A read returned content no PUT wrote, or other than the PUT wrote: always a bug.
    Corrupt(String),
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Its number, in start order.
    pub id: u64,
    /// What it did.
    pub kind: ClientKind,
    /// The node that coordinated it.
    pub node: usize,
    /// The file.
    pub path: String,
    /// When the client sent it (virtual time).
    pub start: Duration,
    /// When the client got its answer; `None` if it never did.
    pub end: Option<Duration>,
    /// The answer.
    pub outcome: Outcome,
    /// For a PUT, the hash of the content it wrote.
    pub content_hash: Option<BlockHash>,
    /// The members (node indices) of the coordinator's ring when the operation started, and
    /// whether it was still honouring a previous ring; empty if the node refused it.
    pub ring: (Vec<usize>, bool),
}

impl OpRecord {
    /// The version an acknowledged write made.
    pub fn acked_version(&self) -> Option<Version> {
        match self.outcome {
            Outcome::Acked(version) if self.kind.is_write() => Some(version),
            _ => None,
        }
    }

    /// Whether the client was answered before `at`.
    fn ended_before(&self, at: Duration) -> bool {
        self.end.is_some_and(|end| end < at)
    }
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.end.map_or("never".to_string(), |end| format!("{:.3}", end.as_secs_f64()));
        write!(
            f,
            "#{} {:?} {} via node {}, {:.3}..{end} s: {}",
            self.id,
            self.kind,
            self.path,
            self.node,
            self.start.as_secs_f64(),
            describe(&self.outcome)
        )?;
        if let Some(hash) = self.content_hash {
            write!(f, " (content {})", short(&hash))?;
        }
        let (members, transition) = &self.ring;
        write!(f, " [ring {members:?}{}]", if *transition { " in transition" } else { "" })
    }
}

/// A version as `wall-clock seconds since the simulation's epoch @ node`, for messages.
pub fn show_version(version: &Version) -> String {
    let epoch = wall_clock_us(0, 0);
    let hlc = i128::from(version.hlc) - i128::from(epoch);
    format!("{:.6}s@{:08x}", hlc as f64 / 1e6, (version.node.0 >> 96) as u32)
}

fn short(hash: &BlockHash) -> String {
    hash.0[..6].iter().map(|byte| format!("{byte:02x}")).collect()
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Acked(version) => format!("acked {}", show_version(version)),
        Outcome::Found { version, content_hash } => {
            format!("found {} ({})", show_version(version), short(content_hash))
        }
        Outcome::Tombstone(version) => format!("tombstone {}", show_version(version)),
        Outcome::NotFound => "not found".to_string(),
        Outcome::Failed(why) => format!("failed: {why}"),
        Outcome::InDoubt(why) => format!("in doubt: {why}"),
        Outcome::Unanswered => "unanswered (coordinator crashed)".to_string(),
        Outcome::Pending => "pending".to_string(),
        Outcome::Corrupt(why) => format!("CORRUPT: {why}"),
    }
}

/// Every client operation of a run, in start order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub ops: Vec<OpRecord>,
}

/// How many operations ended how, for a summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Writes acknowledged.
    pub acked: usize,
    /// Reads that found a file or a tombstone.
    pub found: usize,
    /// Reads (or deletes) that found nothing.
    pub not_found: usize,
    /// Operations that certainly failed.
    pub failed: usize,
    /// Writes in doubt.
    pub in_doubt: usize,
    /// Operations never answered or still pending.
    pub unanswered: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acked, {} found, {} not found, {} failed, {} in doubt, {} unanswered",
            self.acked, self.found, self.not_found, self.failed, self.in_doubt, self.unanswered
        )
    }
}

impl History {
    /// Counts of outcomes of the operations `filter` keeps.
    pub fn tally(&self, filter: impl Fn(&OpRecord) -> bool) -> Tally {
        let mut tally = Tally::default();
        for op in self.ops.iter().filter(|op| filter(op)) {
            match op.outcome {
                Outcome::Acked(_) => tally.acked += 1,
                Outcome::Found { .. } | Outcome::Tombstone(_) => tally.found += 1,
                Outcome::NotFound => tally.not_found += 1,
                Outcome::Failed(_) | Outcome::Corrupt(_) => tally.failed += 1,
                Outcome::InDoubt(_) => tally.in_doubt += 1,
                Outcome::Unanswered | Outcome::Pending => tally.unanswered += 1,
            }
        }
        tally
    }

    /// The operations on `path`, in start order.
    pub fn on_path<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a OpRecord> + 'a {
        self.ops.iter().filter(move |op| op.path == path)
    }

    /// The operations on `path`, one per line (at most `limit`, the latest), for a failure
    /// message.
    pub fn describe_path(&self, path: &str, limit: usize) -> String {
        let ops: Vec<&OpRecord> = self.on_path(path).collect();
        let skipped = ops.len().saturating_sub(limit);
        let mut text = String::new();
        if skipped > 0 {
            text.push_str(&format!("\n    ... {skipped} earlier operations on {path}"));
        }
        for op in &ops[skipped..] {
            text.push_str(&format!("\n    {op}"));
        }
        text
    }

    fn by_path(&self) -> BTreeMap<&str, Vec<&OpRecord>> {
        let mut paths: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
        for op in &self.ops {
            paths.entry(op.path.as_str()).or_default().push(op);
        }
        paths
    }

    /// No read returned content other than a PUT wrote, and every read that started after
    /// writes to its path were acknowledged saw the newest of them (by version) or something
    /// newer:
    /// - a live file at a version at least that write's (the very PUT if the same version);
    /// - a tombstone at least as new (record reads);
    /// - no live file only if that write was a DELETE, or a DELETE that may have come later
    ///   (acknowledged with a newer version, or in doubt, or unanswered) started before the
    ///   read ended.
    ///
    /// DELETEs that found nothing count as reads. Also: a read of content an acknowledged PUT
    /// wrote has that PUT's version, and no read returns the content of a PUT whose client
    /// was told it failed (certainly without effect).
    pub fn check_reads(&self) -> Result<(), String> {
        let puts: BTreeMap<BlockHash, &OpRecord> = self
            .ops
            .iter()
            .filter(|op| op.kind == ClientKind::Put)
            .filter_map(|op| Some((op.content_hash?, op)))
            .collect();
        for (path, ops) in self.by_path() {
            let acked: Vec<&OpRecord> = ops.iter().copied().filter(|op| op.acked_version().is_some()).collect();
            for read in &ops {
                let is_read = match read.kind {
                    ClientKind::Get | ClientKind::ReadRecord => true,
                    ClientKind::Delete => read.outcome == Outcome::NotFound,
                    ClientKind::Put => false,
                };
                if !is_read {
                    continue;
                }
                let fail = |what: String| {
                    Err(format!(
                        "{what}\n  the read: {read}\n  every operation on {path}:{}",
                        self.describe_path(path, 40)
                    ))
                };
                if let Outcome::Corrupt(why) = &read.outcome {
                    return fail(format!("a read returned wrong data ({why})"));
                }
                if let Outcome::Found { version, content_hash } = &read.outcome
                    && let Some(put) = puts.get(content_hash)
                {
                    if put.acked_version().is_some_and(|put_version| put_version != *version) {
                        return fail(format!(
                            "a read returned the content of {put} under another version {}",
                            show_version(version)
                        ));
                    }
                    if matches!(put.outcome, Outcome::Failed(_)) {
                        return fail(format!("a read returned the content of {put}, which was told it failed"));
                    }
                }
                let newest = acked
                    .iter()
                    .filter(|write| write.ended_before(read.start))
                    .max_by_key(|write| write.acked_version().expect("acked"));
                let Some(newest) = newest else { continue };
                let newest_version = newest.acked_version().expect("acked");
                let seen = |version: &Version| format!("{} ", show_version(version));
                match &read.outcome {
                    Outcome::Found { version, content_hash } => {
                        if *version < newest_version {
                            return fail(format!(
                                "a read that started after {newest} was acknowledged returned the older {}",
                                seen(version)
                            ));
                        }
                        if *version == newest_version && newest.content_hash != Some(*content_hash) {
                            return fail(format!("a read returned other content than {newest} under its version"));
                        }
                    }
                    Outcome::Tombstone(version) => {
                        if *version < newest_version {
                            return fail(format!(
                                "a read that started after {newest} was acknowledged returned the older tombstone {}",
                                seen(version)
                            ));
                        }
                        if *version == newest_version && newest.kind != ClientKind::Delete {
                            return fail(format!("a read returned a tombstone under the version of {newest}"));
                        }
                    }
                    Outcome::NotFound => {
                        if newest.kind == ClientKind::Delete {
                            continue;
                        }
                        if read.kind == ClientKind::ReadRecord {
                            return fail(format!("a record read found nothing after {newest} was acknowledged"));
                        }
                        let read_end = read.end.unwrap_or(Duration::MAX);
                        let later_delete = ops.iter().any(|delete| {
                            delete.kind == ClientKind::Delete
                                && delete.start < read_end
                                && match &delete.outcome {
                                    Outcome::Acked(version) => *version > newest_version,
                                    Outcome::InDoubt(_) | Outcome::Unanswered | Outcome::Pending => true,
                                    _ => false,
                                }
                        });
                        if !later_delete {
                            return fail(format!(
                                "a read that started after {newest} was acknowledged found no file, and no delete \
                                 could explain it"
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A write that starts after another write to the same path was acknowledged gets a
    /// greater version, whatever the nodes' clocks say (docs/ARCHITECTURE.md §3).
    pub fn check_later_writes_win(&self) -> Result<(), String> {
        for (path, ops) in self.by_path() {
            let acked: Vec<&OpRecord> = ops.into_iter().filter(|op| op.acked_version().is_some()).collect();
            for earlier in &acked {
                for later in &acked {
                    if !earlier.ended_before(later.start) {
                        continue;
                    }
                    if later.acked_version() <= earlier.acked_version() {
                        return Err(format!(
                            "{later}\n  started after\n  {earlier}\n  was acknowledged, yet its version is not \
                             greater\n  every operation on {path}:{}",
                            self.describe_path(path, 40)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// No write coordinated by one of `nodes` that started at or after `from` and was
    /// answered before `until` was acknowledged.
    pub fn check_none_acked(&self, nodes: &[usize], from: Duration, until: Duration) -> Result<(), String> {
        match self.ops.iter().find(|op| {
            op.kind.is_write()
                && nodes.contains(&op.node)
                && op.start >= from
                && op.end.is_some_and(|end| end <= until)
                && op.acked_version().is_some()
        }) {
            Some(op) => Err(format!(
                "a write coordinated inside the minority {nodes:?} during the partition ({:.3}..{:.3} s) was \
                 acknowledged: {op}",
                from.as_secs_f64(),
                until.as_secs_f64()
            )),
            None => Ok(()),
        }
    }

    /// Every read in `reads` (the final reads, after every write ended) got a definite
    /// answer, and it holds every acknowledged write to its path: a version at least the
    /// newest acknowledged one, a tombstone if that was a DELETE, the very content if a PUT
    /// (see [`check_reads`](History::check_reads) for the rest).
    pub fn check_final_reads(&self, reads: &[u64]) -> Result<(), String> {
        for &id in reads {
            let Some(read) = self.ops.iter().find(|op| op.id == id) else {
                return Err(format!("final read #{id} is not in the history"));
            };
            match &read.outcome {
                Outcome::Found { .. } | Outcome::Tombstone(_) | Outcome::NotFound => {}
                _ => {
                    return Err(format!(
                        "{} is not readable after the heal: {read}\n  every operation on it:{}",
                        read.path,
                        self.describe_path(&read.path, 40)
                    ));
                }
            }
            let overlaps =
                |op: &&OpRecord| op.outcome == Outcome::Pending || op.end.is_some_and(|end| end >= read.start);
            if let Some(late) = self.on_path(&read.path).filter(|op| op.id != id && op.kind.is_write()).find(overlaps) {
                return Err(format!("the final read {read} overlaps {late}"));
            }
        }
        self.check_reads()
    }
}
