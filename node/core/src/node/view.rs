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
use crate::replication::{KnownMember, Placement, PlacementTracker};

/// What one node knows of its cluster.
pub(crate) struct ViewState {
    tracker: PlacementTracker,
    placement: Arc<Placement>,
    /// Every member the placement knows, with its RPC address.
    routes: BTreeMap<NodeId, SocketAddr>,
    ready: bool,
    /// The last view the membership gave.
    views: Vec<MemberView>,
    /// The members last reported through [`Event::KnownMembers`].
    saved: Vec<KnownMember>,
}

impl ViewState {
    pub(crate) fn new(
        now_us: u64,
        this: NodeId,
        config: &CoreConfig,
        remembered: Vec<KnownMember>,
        has_seeds: bool,
    ) -> ViewState {
        let ms = |duration| micros(duration) / 1000;
        let tracker = PlacementTracker::new(
            this,
            config.quorum,
            ms(config.transition),
            ms(config.evict_after),
            remembered,
            now_us / 1000,
        );
        let saved = tracker.known();
        ViewState {
            // The remembered cluster is the placement from the start, before gossip says anything.
            placement: tracker.placement(),
            routes: routes_of(&saved),
            tracker,
            ready: !has_seeds,
            views: Vec::new(),
            saved,
        }
    }

    pub(crate) fn placement(&self) -> Arc<Placement> {
        self.placement.clone()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    pub(crate) fn rpc_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.routes.get(&node).copied()
    }

    /// The placement a client operation starts under, or why none can start.
    pub(crate) fn for_client(&self) -> Result<Arc<Placement>, FileError> {
        if !self.ready {
            return Err(FileError::Unavailable("this node has not joined its cluster yet".into()));
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
        if !view.ready && first.is_some() && first.into_iter().chain(others).all(|member| member.record.is_some()) {
            view.ready = true;
            self.out.events.push_back(Event::Ready);
        }
        let changed = view.tracker.update(now_us / 1000, &view.views);
        let known = view.tracker.known();
        if known != view.saved {
            view.routes = routes_of(&known);
            view.saved = known.clone();
            self.out.events.push_back(Event::KnownMembers(known));
        }
        let Some(placement) = changed else { return };
        if placement.ring().members() != view.placement.ring().members() {
            self.out.events.push_back(Event::RingChanged { members: placement.ring().members().len() });
        }
        view.placement = placement.clone();
        self.out.events.push_back(Event::PlacementChanged(placement.clone()));
        self.placement_changed(placement);
    }

    /// Tells the tracker this node's hand-off succeeded: the transition may end.
    pub(crate) fn handoff_confirmed(&mut self) {
        self.view.tracker.handoff_finished();
    }
}
