//! Following the membership: readiness, the placement with its transitions and evictions,
//! and where to reach each member. Fed by [`NodeCore::handle_membership`] whenever the view
//! changes, and re-evaluated every [`CoreConfig::placement_refresh`] against the last view,
//! so that evictions and the end of a transition happen in a quiet cluster too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_membership::{MemberState, MemberView};
use shoal_storage::{NodeId, Store};

use super::{CoreConfig, Event, NodeCore, micros};
use crate::files::FileError;

use super::ops::{AnyOp, AnyOutput, Purpose};
use crate::replication::{ClusterMemory, Findings, KnownMember, LearnSets, Placement, PlacementTracker};

/// What one node knows of its cluster.
pub(crate) struct ViewState {
    tracker: PlacementTracker,
    placement: Arc<Placement>,
    /// Every member the placement knows, with its RPC address.
    routes: BTreeMap<NodeId, SocketAddr>,
    ready: bool,
    /// Whether this node learned the other members' owner sets since it last (re)gained a
    /// majority or joined: until then it does not coordinate.
    learned: bool,
    /// Whether that round is in flight.
    learning: bool,
    /// The last view the membership gave.
    views: Vec<MemberView>,
    /// What was last reported through [`Event::KnownMembers`].
    saved: ClusterMemory,
    /// The tracker's revision `saved` was taken at.
    saved_revision: u64,
}

impl ViewState {
    pub(crate) fn new(
        now_us: u64,
        this: NodeId,
        config: &CoreConfig,
        remembered: ClusterMemory,
        has_seeds: bool,
        lost_store: bool,
    ) -> ViewState {
        let ms = |duration| micros(duration) / 1000;
        // A node that lost its store waits as if it had seeds, unless it remembers being
        // alone: with no memory it would otherwise found a cluster of one.
        let remembered_alone =
            !remembered.members.is_empty() && remembered.members.iter().all(|member| member.node_id == this.0);
        let has_seeds = has_seeds || (lost_store && !remembered_alone);
        let mut tracker = PlacementTracker::new(this, config.quorum, ms(config.evict_after), remembered, now_us / 1000);
        if !has_seeds {
            tracker.joined();
        }
        let saved = tracker.memory();
        let tracker_revision = tracker.revision();
        // The first node of a cluster has nothing to learn; any other learns first.
        let alone = !has_seeds && saved.members.iter().all(|member| member.node_id == this.0);
        ViewState {
            learned: alone,
            learning: false,
            // The remembered cluster is the placement from the start, before gossip says anything.
            placement: tracker.placement(),
            routes: routes_of(&saved.members),
            tracker,
            ready: !has_seeds,
            views: Vec::new(),
            saved_revision: tracker_revision,
            saved,
        }
    }

    pub(crate) fn placement(&self) -> Arc<Placement> {
        self.placement.clone()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether the last view shows `node` alive or suspect.
    pub(crate) fn is_live(&self, node: NodeId) -> bool {
        self.views.iter().any(|view| {
            view.identity.node_id == node.0 && matches!(view.state, MemberState::Alive | MemberState::Suspect)
        })
    }

    /// Every member this node knows a route to (itself included).
    pub(crate) fn members(&self) -> Vec<NodeId> {
        self.routes.keys().copied().collect()
    }

    pub(crate) fn rpc_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.routes.get(&node).copied()
    }

    /// The placement a client operation starts under, or why none can start.
    pub(crate) fn for_client(&self) -> Result<Arc<Placement>, FileError> {
        if !self.ready {
            return Err(FileError::Unavailable("this node has not joined its cluster yet".into()));
        }
        if !self.tracker.sees_majority() {
            return Err(FileError::Unavailable(format!(
                "this node sees fewer than a strict majority of the {} members it knows; it coordinates \
                 only with a majority in sight, so that what it acknowledges the majority can read",
                self.saved.members.len()
            )));
        }
        if !self.learned {
            return Err(FileError::Unavailable(
                "this node is learning where the other members place data before it coordinates again".into(),
            ));
        }
        Ok(self.placement.clone())
    }
}

fn routes_of(known: &[KnownMember]) -> BTreeMap<NodeId, SocketAddr> {
    known.iter().map(|member| (NodeId(member.node_id), member.rpc_addr)).collect()
}

impl<S: Store> NodeCore<S> {
    /// The membership view changed (this node first, as [`Membership::members`] gives it).
    ///
    /// [`Membership::members`]: shoal_membership::Membership::members
    pub fn handle_membership(&mut self, now_us: u64, views: Vec<MemberView>) {
        self.view.views = views;
        self.refresh_view(now_us);
        self.settle(now_us);
    }

    /// Re-evaluates readiness and the placement against the last view.
    pub(crate) fn refresh_view(&mut self, now_us: u64) {
        let this = self.this.0;
        let view = &mut self.view;
        // Joined means: another member is alive, and the record of every live member has
        // arrived, so the placement holds them all. Coordinating earlier would place by a
        // ring of the few members whose records came first (at first, this node alone) and
        // answer "not found" for files the cluster holds.
        let mut others = view.views.iter().filter(|member| {
            member.identity.node_id != this && matches!(member.state, MemberState::Alive | MemberState::Suspect)
        });
        let first = others.next();
        let joins = !view.ready && first.is_some() && first.into_iter().chain(others).all(|m| m.record.is_some());
        if joins {
            view.ready = true;
            self.out.events.push_back(Event::Ready);
        }
        let changed = view.tracker.update(now_us / 1000, &view.views);
        if joins {
            // After the ring it joins with: the rings it passed through joining leave nothing.
            view.tracker.joined();
        }
        if !view.tracker.sees_majority() {
            view.learned = false;
        }
        self.placement_updated(now_us, changed);
        self.learn_if_needed(now_us);
    }

    /// Starts learning the others' owner sets if this node sees a majority again (or just
    /// joined) and has not yet: the majority may have moved partitions while this node was
    /// away, and coordinating by its own older view would miss their writes.
    fn learn_if_needed(&mut self, now_us: u64) {
        let view = &mut self.view;
        if view.learned || view.learning || !view.ready || !view.tracker.sees_majority() {
            return;
        }
        let peers: Vec<NodeId> = view.routes.keys().copied().filter(|node| *node != self.this).collect();
        if peers.is_empty() {
            view.learned = true;
            return;
        }
        view.learning = true;
        let op = LearnSets::new(view.placement.clone(), &peers);
        self.start_op(now_us, Purpose::Learn, AnyOp::Learn(op));
    }

    /// The round of learning ended: adopt what it found if a majority answered and the
    /// ring did not change meanwhile; otherwise the next refresh runs it again.
    pub(crate) fn sets_learned(&mut self, now_us: u64, outcome: AnyOutput) {
        let AnyOutput::Learn(report) = outcome else { panic!("learning answers with its report") };
        self.view.learning = false;
        let known = self.view.saved.members.len().max(1);
        let majority = (report.answered + 1) * 2 > known;
        let same_ring = report.placement.ring().members() == self.view.placement.ring().members();
        if !majority || !same_ring {
            tracing::debug!(answered = report.answered, known, "learning the owner sets again");
            return;
        }
        tracing::info!(found = report.found.len(), "learned the other members' owner sets; coordinating");
        self.view.learned = true;
        if !report.found.is_empty() {
            let findings = Findings { found: report.found, ..Findings::default() };
            self.partitions_settled(now_us, &report.placement, &findings);
        }
    }

    /// Reports what the tracker remembers if it changed, and takes a new placement in.
    fn placement_updated(&mut self, now_us: u64, changed: Option<Arc<Placement>>) {
        let view = &mut self.view;
        if view.tracker.revision() != view.saved_revision {
            view.saved_revision = view.tracker.revision();
            let memory = view.tracker.memory();
            if memory != view.saved {
                view.routes = routes_of(&memory.members);
                view.saved = memory.clone();
                self.out.events.push_back(Event::KnownMembers(memory));
            }
        }
        let Some(placement) = changed else { return };
        if placement.ring().members() != view.placement.ring().members() {
            self.out.events.push_back(Event::RingChanged { members: placement.ring().members().len() });
        }
        view.placement = placement.clone();
        self.placement_moved(now_us, &placement);
        self.out.events.push_back(Event::PlacementChanged(placement.clone()));
        if placement.in_transition() {
            tracing::debug!(settling = placement.settling().len(), "partitions settling after a ring change");
        }
    }

    /// A look under `checked` found partitions settled, previous sets covered, and owner
    /// sets other views use.
    pub(crate) fn partitions_settled(&mut self, now_us: u64, checked: &Placement, findings: &Findings) {
        let changed = self.view.tracker.confirm(checked, findings);
        if let Some(placement) = &changed {
            self.out.events.push_back(Event::Settled {
                partitions: findings.settled.len(),
                found: findings.found.len(),
                settling: placement.settling().len(),
            });
        }
        self.placement_updated(now_us, changed);
    }
}
