//! The false-down checker: samples every view and remembers each live node marked down
//! while no fault had touched it.

use super::*;

impl Sim {
    /// The false downs seen so far (with [`SimConfig::false_down_check`] on), each
    /// `(observer, subject, since)` once.
    pub fn false_downs(&self) -> Vec<FalseDown> {
        self.false_downs.iter().copied().collect()
    }

    /// How many times a node learned that the cluster had declared it down and renewed its
    /// identity. Catches false downs too brief for the sampling checker; crashes, partitions
    /// and restarts cause legitimate ones.
    pub fn renewals(&self) -> u64 {
        self.nodes
            .iter()
            .map(|node| {
                let current =
                    node.membership.as_ref().map_or(0, |m| m.identity().generation.saturating_sub(node.generation));
                node.past_renewals + current
            })
            .sum()
    }

    /// How long after a fault a `down` verdict still counts as caused by it: the detection
    /// bound twice over, for stale gossip still spreading.
    pub fn fault_grace(&self) -> Duration {
        self.membership_config.detection_bound(self.nodes.len() as u32) * 2
    }

    /// Samples every running node's view for members marked down that are running, and that
    /// no crash, restart or partition touched within [`fault_grace`](Sim::fault_grace)
    /// before the verdict.
    pub(super) fn check_false_downs(&mut self) {
        let now_ms = self.now_ms();
        let grace_us = duration_us(self.fault_grace());
        for observer in 0..self.nodes.len() {
            if self.nodes[observer].status != NodeStatus::Running {
                continue;
            }
            let Some(membership) = self.nodes[observer].membership.as_mut() else { continue };
            for view in membership.members(now_ms).into_iter().skip(1) {
                if view.state != MemberState::Down {
                    continue;
                }
                let Some(&subject) = self.by_id.get(&view.identity.node_id) else { continue };
                let truth = &self.nodes[subject];
                if truth.status != NodeStatus::Running || truth.partitioned {
                    continue;
                }
                let quiet_since_us = truth.started_at_us.max(truth.disturbed_until_us).saturating_add(grace_us);
                if view.state_since_ms.saturating_mul(1000) > quiet_since_us {
                    let found = FalseDown { observer, subject, since_ms: view.state_since_ms };
                    if self.false_downs.insert(found) && self.false_downs.len() <= FALSE_DOWN_LOG_MAX {
                        eprintln!("false down at {now_ms}ms: node {observer} marked node {subject} down");
                    }
                }
            }
        }
    }
}
