//! The hand-off after a ring change: this node walks its store in bounded batches (file
//! records, then directory entries, then blocks) and pushes what moved to its new owners, one
//! batch at a time. A walk with a failed push, or stopped by a store error, runs again from
//! the start after [`CoreConfig::handoff_retry_pause`]; only a walk with every push confirmed
//! lets the transition end. A newer ring supersedes the walk in progress.
//!
//! [`CoreConfig::handoff_retry_pause`]: super::CoreConfig::handoff_retry_pause

use std::sync::Arc;

use shoal_storage::{Store, StoreError};

use super::ops::{AnyOp, AnyOutput, OpId, Purpose};
use super::store_work::{HandoffCursor, HandoffScan, ScanBatch, StoreWork};
use super::{Event, JobPurpose, NodeCore, Timer, micros};
use crate::replication::{Handoff, Placement};

/// A hand-off walk and where it stands.
pub(crate) struct HandoffTask {
    epoch: u64,
    placement: Arc<Placement>,
    cursor: HandoffCursor,
    pushed: u64,
    failed: u64,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// A scan of the store is out.
    Scanning,
    /// A batch is being pushed.
    Pushing(OpId),
    /// Some push failed; it runs again when the retry timer fires.
    Paused,
    /// Every push was confirmed.
    Finished,
}

impl<S: Store> NodeCore<S> {
    /// The placement changed: hand off to a new ring, or forget the walk once the transition
    /// is over. A change that keeps the ring (more members known) keeps the walk.
    pub(crate) fn placement_changed(&mut self, placement: Arc<Placement>) {
        if !placement.in_transition() {
            tracing::info!(members = placement.ring().members().len(), "ring settled");
            self.drop_handoff();
            return;
        }
        let same_ring =
            self.handoff.as_ref().is_some_and(|task| task.placement.ring().members() == placement.ring().members());
        if !same_ring {
            tracing::info!(members = placement.ring().members().len(), "ring changed; handing off");
            self.drop_handoff();
            self.handoff_epoch += 1;
            let task = HandoffTask {
                epoch: self.handoff_epoch,
                placement,
                cursor: HandoffCursor::Files(None),
                pushed: 0,
                failed: 0,
                state: State::Scanning,
            };
            self.handoff = Some(task);
            self.next_scan();
        }
    }

    /// Forgets the walk, abandoning its batch in flight.
    fn drop_handoff(&mut self) {
        if let Some(task) = self.handoff.take()
            && let State::Pushing(op) = task.state
        {
            self.ops.remove(&op);
        }
    }

    /// The task of hand-off `epoch`, if that is still the current one.
    fn handoff_task(&mut self, epoch: u64) -> Option<&mut HandoffTask> {
        self.handoff.as_mut().filter(|task| task.epoch == epoch)
    }

    fn next_scan(&mut self) {
        let (records_per_batch, blocks_per_batch) =
            (self.config.handoff_records_per_batch, self.config.handoff_blocks_per_batch);
        let Some(task) = self.handoff.as_mut() else { return };
        task.state = State::Scanning;
        let scan = HandoffScan {
            placement: task.placement.clone(),
            cursor: task.cursor.clone(),
            records_per_batch,
            blocks_per_batch,
        };
        let epoch = task.epoch;
        self.queue_job(StoreWork::Scan(scan), JobPurpose::Scan { epoch });
    }

    pub(crate) fn handoff_scanned(&mut self, now_us: u64, epoch: u64, scanned: Result<ScanBatch, StoreError>) {
        let Some(task) = self.handoff_task(epoch) else { return };
        let batch = match scanned {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, pushed = task.pushed, "hand-off stopped by a store error");
                task.failed += 1;
                return self.end_walk(now_us, epoch);
            }
        };
        task.cursor = batch.next;
        if batch.records.is_empty() && batch.blocks.is_empty() {
            if task.cursor == HandoffCursor::Done {
                return self.end_walk(now_us, epoch);
            }
            return self.next_scan();
        }
        let handoff = Handoff::new(&task.placement, batch.records, batch.blocks);
        let op = OpId(self.next_op);
        if let Some(task) = self.handoff_task(epoch) {
            task.state = State::Pushing(op);
        }
        self.start_op(now_us, Purpose::Handoff { epoch }, AnyOp::Handoff(handoff));
    }

    pub(crate) fn handoff_pushed(&mut self, now_us: u64, epoch: u64, outcome: AnyOutput) {
        let AnyOutput::Handoff(report) = outcome else { panic!("a hand-off batch answers with its report") };
        self.out.events.push_back(Event::HandoffPushed { pushed: report.pushed, failed: report.failed });
        let Some(task) = self.handoff_task(epoch) else { return };
        task.pushed += report.pushed;
        task.failed += report.failed;
        if task.cursor == HandoffCursor::Done {
            self.end_walk(now_us, epoch);
        } else {
            self.next_scan();
        }
    }

    /// The walk is over: the transition may end, or the walk runs again after a pause.
    fn end_walk(&mut self, now_us: u64, epoch: u64) {
        let pause = micros(self.config.handoff_retry_pause);
        let Some(task) = self.handoff_task(epoch) else { return };
        let (pushed, succeeded) = (task.pushed, task.failed == 0);
        tracing::info!(pushed, failed = task.failed, "hand-off after a ring change done");
        if succeeded {
            task.state = State::Finished;
            self.handoff_confirmed();
        } else {
            task.state = State::Paused;
            self.arm(now_us.saturating_add(pause), Timer::HandoffRetry { epoch });
        }
        self.out.events.push_back(Event::HandoffEnded { pushed, succeeded });
    }

    pub(crate) fn retry_handoff(&mut self, _now_us: u64, epoch: u64) {
        let Some(task) = self.handoff_task(epoch) else { return };
        if task.state != State::Paused {
            return;
        }
        task.cursor = HandoffCursor::Files(None);
        task.pushed = 0;
        task.failed = 0;
        self.next_scan();
    }
}
