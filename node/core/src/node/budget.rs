//! The bandwidth repair may use (docs/ARCHITECTURE.md §7): a token bucket filled at
//! [`CoreConfig::repair_bytes_per_sec`](super::CoreConfig::repair_bytes_per_sec), holding at
//! most one second's worth (or one block, if that is more). The exchange or hand-over in
//! flight asks for what its next block copies need; it gets what the bucket holds, and
//! when that is not enough a timer wakes the node once it will be.

use shoal_storage::Store;

use super::ops::{AnyOp, OpId};
use super::{NodeCore, Timer};

/// The bucket.
#[derive(Debug, Default)]
pub(crate) struct RepairBudget {
    /// Bytes it holds.
    tokens: u64,
    /// When it was last filled (µs; 0: never).
    filled_us: u64,
    /// The exchange or hand-over in flight, if any.
    pub(super) repairing: Option<OpId>,
    /// When the node is woken for the bucket, if it is.
    pub(super) wake_us: Option<u64>,
}

impl<S: Store> NodeCore<S> {
    /// Grants the repair in flight what it wants and the bucket holds; returns whether it
    /// granted anything (the repair then has requests to send).
    pub(crate) fn feed_repair(&mut self, now_us: u64) -> bool {
        let Some(id) = self.sync.budget.repairing else { return false };
        let wants = match self.ops.get(&id).map(|running| &running.op) {
            Some(AnyOp::Sync(session)) => session.wants(),
            Some(AnyOp::Drain(drain)) => drain.wants(),
            _ => {
                self.sync.budget.repairing = None;
                return false;
            }
        };
        if wants == 0 {
            return false;
        }
        let rate = self.config.repair_bytes_per_sec.max(1);
        let capacity = rate.max(self.config.block_size_bytes as u64);
        let budget = &mut self.sync.budget;
        if budget.filled_us == 0 {
            budget.tokens = capacity;
        } else {
            let elapsed = now_us.saturating_sub(budget.filled_us) as u128;
            let earned = elapsed * rate as u128 / 1_000_000;
            budget.tokens = budget.tokens.saturating_add(earned.min(capacity as u128) as u64).min(capacity);
            // The clock moves on only by the time the whole bytes earned took, so calls
            // closer together than one byte's worth still add up.
            let used_us = (earned * 1_000_000 / rate as u128) as u64;
            budget.filled_us = budget.filled_us.saturating_add(used_us).min(now_us);
        }
        if budget.filled_us == 0 {
            budget.filled_us = now_us;
        }
        let granted = wants.min(budget.tokens);
        budget.tokens -= granted;
        if granted < wants {
            // Wake when the rest (at most what one block copy needs) will have been earned.
            let missing = (wants - granted).min(self.config.block_size_bytes as u64).max(1);
            let wake = now_us.saturating_add((missing as u128 * 1_000_000 / rate as u128) as u64 + 1);
            if budget.wake_us.is_none_or(|at| at > wake) {
                budget.wake_us = Some(wake);
                self.arm(wake, Timer::RepairBudget);
            }
        }
        if granted == 0 {
            return false;
        }
        match self.ops.get_mut(&id).map(|running| &mut running.op) {
            Some(AnyOp::Sync(session)) => session.grant(granted),
            Some(AnyOp::Drain(drain)) => drain.grant(granted),
            _ => return false,
        }
        self.drive(now_us, id);
        true
    }
}
