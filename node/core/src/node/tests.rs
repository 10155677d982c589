//! The node core driven by hand: every input and output of one [`NodeCore`], with nothing
//! answered unless the test answers it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_membership::{MemberRecord, MemberState, MemberView, NodeIdentity, RecordStatus};
use shoal_storage::{MemStore, NodeId};

use super::*;
use crate::files::FileError;
use crate::replication::{Quorum, RecordKey, RecordRpc, Refusal};

const NOW: u64 = 1_700_000_000_000_000;

fn addr(i: u16) -> SocketAddr {
    ([127, 0, 0, 1], 7000 + i).into()
}

fn view(i: u16, state: MemberState) -> MemberView {
    let node_id = u128::from(i) << 64 | 1;
    MemberView {
        identity: NodeIdentity { node_id, addr: addr(i), generation: 1 },
        state,
        record: Some(MemberRecord {
            node_id,
            generation: 1,
            version: 0,
            zone: "z".into(),
            capacity_bytes: 1 << 40,
            http_addr: addr(i),
            rpc_addr: addr(i),
            status: RecordStatus::Active,
            disk_used_bytes: 0,
        }),
        state_since_ms: 0,
    }
}

fn config() -> CoreConfig {
    CoreConfig { quorum: Quorum { n: 2, w: 2, r: 2 }, block_size_bytes: 4096, ..CoreConfig::default() }
}

/// Node 0 of a cluster of nodes 0 and 1, both alive.
fn pair(has_seeds: bool) -> NodeCore<MemStore> {
    let this = NodeId(view(0, MemberState::Alive).identity.node_id);
    let mut core =
        NodeCore::new(NOW, this, config(), Arc::new(MemStore::new(1 << 30)), Default::default(), has_seeds, false);
    core.handle_membership(NOW, vec![view(0, MemberState::Alive), view(1, MemberState::Alive)]);
    core
}

/// Runs every store job queued, as a driver would.
fn run_jobs(core: &mut NodeCore<MemStore>, now: u64) {
    while let Some(job) = core.poll_store_job() {
        let done = job.work.run(&**core.store());
        core.handle_store_done(now, job.id, done);
    }
}

#[test]
fn a_node_with_seeds_refuses_clients_until_it_sees_another_member_alive() {
    let this = NodeId(view(0, MemberState::Alive).identity.node_id);
    let mut core =
        NodeCore::new(NOW, this, config(), Arc::new(MemStore::new(1 << 30)), Default::default(), true, false);
    assert!(matches!(core.start_stat(NOW, "/a"), Err(FileError::Unavailable(_))));
    core.handle_membership(NOW, vec![view(0, MemberState::Alive), view(1, MemberState::Down)]);
    assert!(!core.is_ready(), "a down member is no sign of having joined");
    core.handle_membership(NOW, vec![view(0, MemberState::Alive), view(1, MemberState::Alive)]);
    assert!(core.is_ready());
    assert!(std::iter::from_fn(|| core.poll_event()).any(|event| matches!(event, Event::Ready)));
}

#[test]
fn a_request_a_peer_never_answers_times_out_at_the_configured_deadline_and_the_client_hears_why() {
    let mut core = pair(false);
    let stat = core.start_stat(NOW, "/a").expect("ready");
    run_jobs(&mut core, NOW);
    let transmit = core.poll_transmit().expect("the peer is asked");
    assert_eq!(transmit.addr, addr(1));
    let deadline = NOW + config().rpc_timeout.as_micros() as u64;
    core.handle_timeout(deadline - 1);
    assert!(core.take_answer(&stat).is_none(), "nothing is decided before the deadline");
    core.handle_timeout(deadline);
    assert!(matches!(core.take_answer(&stat), Some(Err(FileError::Unavailable(_)))));
    assert!(std::iter::from_fn(|| core.poll_event()).any(|event| matches!(event, Event::Timeout(_))));
    // The late reply changes nothing.
    core.handle_reply(deadline + 1, transmit.id, Err(crate::replication::RpcError::Timeout));
}

#[test]
fn an_upload_takes_no_more_content_while_its_blocks_are_in_flight() {
    let mut core = pair(false);
    let put = core.start_put(NOW, "/big", None).expect("ready");
    let limit = config().upload_blocks_in_flight_max;
    core.push_put(NOW, &put, &vec![7u8; 4096 * limit]);
    assert!(matches!(core.poll_put(&put), PutProgress::Busy));
    // The local copies land, the peer's acknowledgements do not come: still busy.
    run_jobs(&mut core, NOW);
    assert!(matches!(core.poll_put(&put), PutProgress::Busy));
    let transmits: Vec<Transmit> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert_eq!(transmits.len(), limit, "one block write per block to the other owner");
    core.handle_reply(NOW, transmits[0].id, Ok(crate::replication::Reply::Durable));
    assert!(matches!(core.poll_put(&put), PutProgress::Accepting), "one block stored: room for more");
}

#[test]
fn a_peer_request_is_served_from_the_store_through_a_store_job() {
    let mut core = pair(false);
    let key = crate::replication::RecordKey::File("/a".into());
    let id = core.handle_peer_request(NOW, Request::Record(crate::replication::RecordRpc::Read(key)));
    assert!(core.poll_peer_reply().is_none(), "nothing is served before the store job ran");
    run_jobs(&mut core, NOW);
    let reply = core.poll_peer_reply().expect("served");
    assert_eq!(reply.id, id);
    assert_eq!(reply.reply, Reply::Value(crate::replication::RecordValue::File(None)));
}

#[test]
fn the_placement_is_re_evaluated_on_the_cores_own_timer() {
    let mut core = pair(false);
    let refresh = config().placement_refresh.as_micros() as u64;
    assert!(core.poll_timeout().is_some_and(|deadline| deadline <= NOW + refresh));
    // Node 2 was seen alive, then goes down; ten minutes later, with no new view, it is
    // evicted by the timer (the two others are a majority of three).
    let all = vec![view(0, MemberState::Alive), view(1, MemberState::Alive), view(2, MemberState::Alive)];
    core.handle_membership(NOW, all);
    let views = vec![view(0, MemberState::Alive), view(1, MemberState::Alive), view(2, MemberState::Down)];
    core.handle_membership(NOW, views);
    std::iter::from_fn(|| core.poll_event()).for_each(drop);
    let later = NOW + (config().evict_after + Duration::from_secs(1)).as_micros() as u64;
    assert_eq!(core.placement().ring().members().len(), 3);
    core.handle_timeout(later);
    assert_eq!(core.placement().ring().members().len(), 2, "the down member was evicted");
}

#[test]
fn disk_usage_is_republished_only_once_it_moved_by_64_mib_or_1_percent() {
    let config = CoreConfig::default();
    assert!(config.usage_worth_publishing(None, 0));
    let ten_gib = 10u64 << 30;
    assert!(!config.usage_worth_publishing(Some(ten_gib), ten_gib + (50 << 20)), "50 MiB of 10 GiB");
    assert!(config.usage_worth_publishing(Some(ten_gib), ten_gib + (64 << 20)));
    assert!(config.usage_worth_publishing(Some(1000), 1010), "1 % of a small figure");
    assert!(!config.usage_worth_publishing(Some(1000), 1000), "no change");
}

#[test]
fn a_malformed_owner_sets_request_is_refused_not_a_panic() {
    let mut core = pair(false);
    let oversized: crate::replication::PartitionSet = bincode::serde::decode_from_slice(
        &bincode::serde::encode_to_vec(vec![u64::MAX; 65], bincode::config::standard()).expect("encodes"),
        bincode::config::standard(),
    )
    .expect("decodes")
    .0;
    let request = Request::Sync(crate::replication::SyncRpc::OwnerSets { partitions: oversized, exchanges: true });
    let id = core.handle_peer_request(NOW, request);
    let reply = core.poll_peer_reply().expect("answered at once");
    assert_eq!(reply.id, id);
    assert!(matches!(reply.reply, Reply::Refused(_)), "{:?}", reply.reply);
}

#[test]
fn a_node_that_lost_its_store_founds_no_cluster_of_its_own_and_refuses_reads_until_refilled() {
    let this = NodeId(view(0, MemberState::Alive).identity.node_id);
    let store = Arc::new(MemStore::new(1 << 30));
    // No seeds and no memory, as the first node of a cluster restarted on a wiped disk.
    let mut core = NodeCore::new(NOW, this, config(), store, Default::default(), false, true);
    assert!(!core.is_ready(), "it waits to see a member instead of forming a cluster of one");
    core.handle_membership(NOW, vec![view(0, MemberState::Alive), view(1, MemberState::Alive)]);
    assert!(core.is_ready());
    assert!(core.durability(NOW).refilling > 0);

    let read = Request::Record(RecordRpc::Read(RecordKey::File("/a".into())));
    let id = core.handle_peer_request(NOW, read);
    let reply = core.poll_peer_reply().expect("answered at once");
    assert_eq!((reply.id, reply.reply), (id, Reply::Refused(Refusal::Refilling)));
    // Writes it takes as usual: a store job serves them.
    core.handle_peer_request(NOW, Request::Record(RecordRpc::Merge(Vec::new())));
    assert!(core.poll_peer_reply().is_none());
    assert!(core.poll_store_job().is_some());
}
