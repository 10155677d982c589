//! The file operations end to end over in-process replicas: one node (N = 1) and three
//! (N = 3, W = 2, R = 2) with owners failing.

use std::sync::Arc;

use bytes::Bytes;
use shoal_membership::{Ring, RingMember};
use shoal_storage::{BlockHash, EntryKind, MemStore, NodeId, Store};

use super::*;
use crate::files::{FileError, FileStat, ReadPlan, Upload};

const BLOCK: u32 = 4;
/// The clock reading of reads in these tests.
const READ_AT_US: u64 = 1 << 40;

struct Harness {
    cluster: LocalCluster<MemStore>,
    nodes: Vec<NodeId>,
    coordinators: Vec<Arc<Coordinator>>,
    placements: Vec<Arc<Placement>>,
}

impl Harness {
    fn new(count: u128, quorum: Quorum, capacity_bytes: u64) -> Harness {
        let nodes: Vec<NodeId> =
            (1..=count).map(|i| NodeId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))).collect();
        let members: Vec<RingMember> =
            nodes.iter().map(|n| RingMember { node_id: n.0, zone: String::new(), capacity_bytes: 1 }).collect();
        let ring = Ring::new(members, quorum.n);
        Harness {
            cluster: LocalCluster::new(nodes.iter().map(|n| (*n, Arc::new(MemStore::new(capacity_bytes))))),
            coordinators: nodes.iter().map(|n| Coordinator::new(*n, BLOCK)).collect(),
            placements: nodes
                .iter()
                .map(|n| Arc::new(Placement::new(*n, quorum, ring.clone(), Arc::default(), count as usize)))
                .collect(),
            nodes,
        }
    }

    fn single() -> Harness {
        Harness::new(1, Quorum::SINGLE, 1 << 20)
    }

    fn three() -> Harness {
        Harness::new(3, Quorum::DEFAULT, 1 << 20)
    }

    fn run(&self, op: Result<FileOp, FileError>, now_us: u64) -> Result<FileOutcome, FileError> {
        self.cluster.run(now_us, op?)
    }

    /// An upload through node `via` whose blocks are stored, ready to commit. The body arrives
    /// in uneven pieces, as a network would deliver it.
    fn prepared(&self, via: usize, path: &str, content: &[u8]) -> Result<Upload, FileError> {
        let coordinator = &self.coordinators[via];
        let mut upload = coordinator.begin_upload(path)?;
        let mut blocks = Vec::new();
        for piece in content.chunks(3) {
            blocks.extend(upload.push(piece));
        }
        blocks.extend(upload.finish());
        for (index, block) in blocks {
            let (hash, write) = coordinator.put_block(&self.placements[via], block);
            self.cluster.run(0, write).map_err(coordinator::block_write_failed)?;
            upload.block_stored(index, hash);
        }
        Ok(upload)
    }

    fn put(&self, via: usize, path: &str, content: &[u8], now_us: u64) -> Result<FileStat, FileError> {
        let upload = self.prepared(via, path, content)?;
        let op = self.coordinators[via].commit(self.placements[via].clone(), upload, None);
        match self.run(op, now_us)? {
            FileOutcome::File(stat) => Ok(stat),
            other => panic!("a commit answers with the file, not {other:?}"),
        }
    }

    fn stat(&self, via: usize, path: &str) -> Result<FileStat, FileError> {
        // Reads happen long after the writes (whose clocks are small numbers), so read repair
        // considers every write settled.
        match self.run(self.coordinators[via].stat(self.placements[via].clone(), path), READ_AT_US)? {
            FileOutcome::File(stat) => Ok(stat),
            other => panic!("stat answers with the file, not {other:?}"),
        }
    }

    fn read(&self, via: usize, path: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, FileError> {
        let plan = ReadPlan::new(self.stat(via, path)?, range)?;
        let mut out = Vec::new();
        for piece in &plan.pieces {
            let fetch = self.coordinators[via].fetch_block(&self.placements[via], piece.block);
            let block = self.cluster.run(0, fetch).map_err(|_| FileError::BlockUnavailable(piece.block))?;
            out.extend_from_slice(&block[piece.offset..piece.offset + piece.len]);
        }
        Ok(out)
    }

    fn delete(&self, via: usize, path: &str, now_us: u64) -> Result<FileOutcome, FileError> {
        self.run(self.coordinators[via].delete(self.placements[via].clone(), path), now_us)
    }

    fn mkdir(&self, via: usize, path: &str, now_us: u64) -> Result<bool, FileError> {
        match self.run(self.coordinators[via].mkdir(self.placements[via].clone(), path), now_us)? {
            FileOutcome::Made(made) => Ok(made),
            other => panic!("mkdir answers whether it made one, not {other:?}"),
        }
    }

    fn rmdir(&self, via: usize, path: &str, recursive: bool, now_us: u64) -> Result<u64, FileError> {
        match self.run(self.coordinators[via].rmdir(self.placements[via].clone(), path, recursive), now_us)? {
            FileOutcome::Removed(count) => Ok(count),
            other => panic!("rmdir answers with a count, not {other:?}"),
        }
    }

    fn list(&self, via: usize, path: &str) -> Result<Vec<crate::files::Listed>, FileError> {
        match self.run(self.coordinators[via].list(self.placements[via].clone(), path), 0)? {
            FileOutcome::Listing(listing) => Ok(listing),
            other => panic!("list answers with a listing, not {other:?}"),
        }
    }

    fn names(&self, via: usize, dir: &str) -> Vec<String> {
        self.list(via, dir).expect("list").into_iter().map(|listed| listed.name).collect()
    }
}

#[test]
fn a_written_file_reads_back_whole_and_by_range() {
    let h = Harness::single();
    let stat = h.put(0, "/a/b.txt", b"hello, shoal!", 10).expect("put");
    assert_eq!(stat.meta.size, 13);
    assert_eq!(stat.meta.blocks.len(), 4);
    assert_eq!(stat.meta.content_hash, BlockHash::of(b"hello, shoal!"));
    assert_eq!(h.read(0, "/a/b.txt", None).expect("read"), b"hello, shoal!");
    assert_eq!(h.read(0, "/a/b.txt", Some((3, 9))).expect("read"), b"lo, sh");
    assert_eq!(h.read(0, "/a/b.txt", Some((12, 13))).expect("read"), b"!");
    assert!(matches!(h.read(0, "/a/b.txt", Some((5, 14))), Err(FileError::RangeNotSatisfiable { .. })));
    assert!(matches!(h.read(0, "/a/b.txt", Some((5, 5))), Err(FileError::RangeNotSatisfiable { .. })));
}

#[test]
fn an_empty_file_has_no_blocks_and_reads_empty() {
    let h = Harness::single();
    let stat = h.put(0, "/empty", b"", 10).expect("put");
    assert!(stat.meta.blocks.is_empty());
    assert_eq!(h.read(0, "/empty", None).expect("read"), b"");
}

#[test]
fn an_overwrite_replaces_the_content_and_gets_a_newer_version() {
    let h = Harness::single();
    let first = h.put(0, "/f", b"one", 100).expect("put");
    // The clock went back: the later write must still win.
    let second = h.put(0, "/f", b"two!", 50).expect("put");
    assert!(second.version > first.version);
    assert_eq!(h.read(0, "/f", None).expect("read"), b"two!");
}

#[test]
fn a_mismatched_content_hash_stores_no_record() {
    let h = Harness::single();
    h.put(0, "/f", b"old", 1).expect("put");
    let upload = h.prepared(0, "/f", b"new content").expect("prepare");
    let refused = h.coordinators[0].commit(h.placements[0].clone(), upload, Some(BlockHash::of(b"else")));
    assert!(matches!(refused, Err(FileError::HashMismatch { .. })));
    assert_eq!(h.read(0, "/f", None).expect("the old version stays"), b"old");
}

#[test]
fn an_abandoned_upload_leaves_the_previous_version_readable() {
    let h = Harness::single();
    h.put(0, "/f", b"old", 1).expect("put");
    let upload = h.prepared(0, "/f", b"partial new cont").expect("prepare");
    drop(upload);
    assert_eq!(h.read(0, "/f", None).expect("read"), b"old");
}

#[test]
fn parents_appear_implicitly_and_listing_reads_one_record() {
    let h = Harness::single();
    h.put(0, "/photos/2024/beach.jpg", b"sand", 1).expect("put");
    h.put(0, "/photos/cat.jpg", b"meow", 2).expect("put");
    assert_eq!(h.names(0, "/"), ["photos"]);
    assert_eq!(h.names(0, "/photos"), ["2024", "cat.jpg"]);
    let listed = h.list(0, "/photos").expect("list");
    assert_eq!(listed[0].entry.kind, EntryKind::Dir);
    assert_eq!((listed[1].entry.kind, listed[1].entry.size), (EntryKind::File, 4));
    assert!(matches!(h.list(0, "/nope"), Err(FileError::NotFound(_))));
    assert!(matches!(h.list(0, "/photos/cat.jpg"), Err(FileError::Conflict { .. })));
}

#[test]
fn a_deleted_file_is_gone_and_a_second_delete_is_not_found() {
    let h = Harness::single();
    h.put(0, "/d/f", b"x", 1).expect("put");
    h.delete(0, "/d/f", 2).expect("delete");
    assert!(matches!(h.stat(0, "/d/f"), Err(FileError::NotFound(_))));
    assert!(h.names(0, "/d").is_empty());
    assert!(matches!(h.delete(0, "/d/f", 3), Err(FileError::NotFound(_))));
    assert!(matches!(h.delete(0, "/never", 3), Err(FileError::NotFound(_))));
}

#[test]
fn files_and_directories_do_not_overlap() {
    let h = Harness::single();
    h.put(0, "/a", b"file", 1).expect("put");
    assert!(matches!(h.put(0, "/a/b", b"x", 2), Err(FileError::Conflict { .. })));
    assert!(matches!(h.mkdir(0, "/a", 2), Err(FileError::Conflict { .. })));
    assert!(matches!(h.mkdir(0, "/a/b", 2), Err(FileError::Conflict { .. })));
    h.mkdir(0, "/dir", 3).expect("mkdir");
    assert!(matches!(h.put(0, "/dir", b"x", 4), Err(FileError::Conflict { .. })));
}

#[test]
fn mkdir_makes_empty_directories_and_is_idempotent() {
    let h = Harness::single();
    assert!(h.mkdir(0, "/x/y", 1).expect("mkdir"));
    assert!(!h.mkdir(0, "/x/y", 2).expect("again"));
    assert_eq!(h.names(0, "/x"), ["y"]);
    assert!(h.names(0, "/x/y").is_empty());
}

#[test]
fn rmdir_refuses_a_non_empty_directory_unless_recursive() {
    let h = Harness::single();
    h.put(0, "/t/a/1", b"1", 1).expect("put");
    h.put(0, "/t/a/b/2", b"2", 2).expect("put");
    h.mkdir(0, "/t/empty", 3).expect("mkdir");
    assert!(matches!(h.rmdir(0, "/t", false, 4), Err(FileError::NotEmpty(_))));
    assert_eq!(h.rmdir(0, "/t/empty", false, 4).expect("rmdir"), 0);
    assert_eq!(h.rmdir(0, "/t", true, 5).expect("rmdir -r"), 2);
    assert!(matches!(h.stat(0, "/t/a/b/2"), Err(FileError::NotFound(_))));
    assert!(matches!(h.list(0, "/t"), Err(FileError::NotFound(_))));
    assert!(h.names(0, "/").is_empty());
    assert!(matches!(h.rmdir(0, "/t", true, 6), Err(FileError::NotFound(_))));
    assert!(matches!(h.rmdir(0, "/", true, 6), Err(FileError::Conflict { .. })));
    // The name is free again, for a file or a directory.
    h.put(0, "/t", b"now a file", 7).expect("put");
}

#[test]
fn a_corrupt_block_is_reported_never_served() {
    let h = Harness::single();
    let stat = h.put(0, "/f", b"abcdefgh", 1).expect("put");
    h.cluster.store(h.nodes[0]).corrupt_block(&stat.meta.blocks[1]);
    assert!(matches!(h.read(0, "/f", None), Err(FileError::BlockUnavailable(_))));
    assert_eq!(h.read(0, "/f", Some((0, 4))).expect("the intact block still reads"), b"abcd");
}

#[test]
fn a_full_store_refuses_uploads_but_still_reads_and_deletes() {
    let h = Harness::new(1, Quorum::SINGLE, 8);
    h.put(0, "/fits", b"12345678", 1).expect("put");
    assert!(matches!(h.put(0, "/more", b"x", 2), Err(FileError::NoRoom(why)) if why.contains("full")));
    assert_eq!(h.read(0, "/fits", None).expect("read"), b"12345678");
    h.delete(0, "/fits", 3).expect("delete");
}

#[test]
fn invalid_paths_are_refused_before_anything_is_sent() {
    let h = Harness::single();
    for bad in ["relative", "/a/../b", "/a//b", "/", "/nul\0"] {
        assert!(matches!(h.coordinators[0].begin_upload(bad), Err(FileError::InvalidPath(_))), "{bad:?}");
    }
    assert!(matches!(h.mkdir(0, "/a/./b", 1), Err(FileError::InvalidPath(_))));
    assert!(matches!(h.list(0, "//"), Err(FileError::InvalidPath(_))));
}

#[test]
fn a_write_through_one_node_reads_back_through_another_with_three_copies() {
    let h = Harness::three();
    h.put(0, "/docs/report.txt", b"replicated content", 10).expect("put");
    assert_eq!(h.read(2, "/docs/report.txt", None).expect("read via another node"), b"replicated content");
    assert_eq!(h.names(1, "/docs"), ["report.txt"]);
    // N = 3 on three nodes: every node holds the record and every block.
    let stat = h.stat(1, "/docs/report.txt").expect("stat");
    for node in &h.nodes {
        let store = h.cluster.store(*node);
        assert!(store.get_file("/docs/report.txt").expect("get").is_some());
        for block in &stat.meta.blocks {
            assert!(store.has_block(block).expect("has"));
        }
    }
}

#[test]
fn with_one_owner_down_writes_and_reads_still_succeed_and_read_repair_catches_it_up() {
    let mut h = Harness::three();
    h.put(0, "/f", b"first", 10).expect("put");
    h.cluster.set_down(h.nodes[2], true);
    let second = h.put(0, "/f", b"second!", 20).expect("W = 2 of 3 is enough");
    assert_eq!(h.read(1, "/f", None).expect("R = 2 of 3 is enough"), b"second!");
    let lagging = h.cluster.store(h.nodes[2]).get_file("/f").expect("get").expect("the first version");
    assert!(lagging.version < second.version, "the down node missed the write");
    h.cluster.set_down(h.nodes[2], false);
    // A read through any node asks every owner and repairs the stale one.
    assert_eq!(h.read(2, "/f", None).expect("read"), b"second!");
    let repaired = h.cluster.store(h.nodes[2]).get_file("/f").expect("get").expect("record");
    assert_eq!(repaired.version, second.version);
    // The blocks it lacked were pushed to it by the block fetch.
    for block in &second.meta.blocks {
        assert!(h.cluster.store(h.nodes[2]).has_block(block).expect("has"));
    }
}

#[test]
fn with_two_owners_down_a_write_is_not_acknowledged() {
    let mut h = Harness::three();
    h.put(0, "/f", b"first", 10).expect("put");
    h.cluster.set_down(h.nodes[1], true);
    h.cluster.set_down(h.nodes[2], true);
    // The blocks reach one owner only: not a write quorum, and no record names them, so the
    // file's write certainly failed.
    let refused = h.put(0, "/f", b"second", 20);
    assert!(matches!(refused, Err(FileError::Unavailable(_))), "{refused:?}");
    assert!(matches!(h.stat(0, "/f"), Err(FileError::Unavailable(_))), "nor can a read reach R = 2");
}

#[test]
fn a_write_that_reached_some_owners_is_in_doubt_not_failed() {
    let mut h = Harness::three();
    // Blocks stored while everyone is up; then only the coordinator's own copy takes the record.
    let upload = h.prepared(0, "/f", b"content").expect("prepare");
    h.cluster.set_down(h.nodes[1], true);
    h.cluster.set_down(h.nodes[2], true);
    let commit = h.coordinators[0].commit(h.placements[0].clone(), upload, None);
    // The read stage cannot reach R, so nothing was written: a definite failure.
    assert!(matches!(h.run(commit, 5), Err(FileError::Unavailable(_))));
    // A write stage that reaches one of three owners is in doubt.
    let stat = h.stat_via_store(0, "/f");
    assert!(stat.is_none());
    let write = WriteQuorum::records(
        &h.placements[0],
        vec![shoal_storage::RecordUpdate::File(
            "/g".into(),
            shoal_storage::FileRecord { version: Default::default(), meta: None },
        )],
    );
    let failure = h.cluster.run(6, write).expect_err("one ack of three");
    assert!(failure.in_doubt);
}

impl Harness {
    fn stat_via_store(&self, node: usize, path: &str) -> Option<shoal_storage::FileRecord> {
        self.cluster.store(self.nodes[node]).get_file(path).expect("get")
    }
}

#[test]
fn a_block_missing_on_one_owner_is_fetched_from_the_next() {
    let h = Harness::three();
    let stat = h.put(0, "/f", b"abcdefgh", 1).expect("put");
    h.cluster.store(h.nodes[0]).delete_block(&stat.meta.blocks[0]).expect("delete");
    h.cluster.store(h.nodes[1]).corrupt_block(&stat.meta.blocks[0]);
    assert_eq!(h.read(0, "/f", None).expect("the third owner has it"), b"abcdefgh");
    assert!(h.cluster.store(h.nodes[0]).has_block(&stat.meta.blocks[0]).expect("has"), "pushed back");
}

#[test]
fn a_later_write_wins_even_from_a_node_whose_clock_is_behind() {
    let h = Harness::three();
    let first = h.put(0, "/f", b"from the future", 60_000_000).expect("put");
    let second = h.put(1, "/f", b"from the past", 1).expect("put");
    assert!(second.version > first.version);
    assert_eq!(h.read(2, "/f", None).expect("read"), b"from the past");
}

#[test]
fn a_store_error_on_a_replica_is_a_refusal_not_a_panic() {
    let h = Harness::new(1, Quorum::SINGLE, 1 << 20);
    let reply = replica::serve(
        &**h.cluster.store(h.nodes[0]),
        Request::Block(BlockRpc::Put { hash: BlockHash::of(b"x"), bytes: Bytes::from_static(b"y") }),
    );
    assert_eq!(reply, Reply::Refused(Refusal::HashMismatch));
}

#[test]
fn mkdir_of_the_root_and_an_empty_write_finish_at_once() {
    let h = Harness::three();
    assert!(!h.mkdir(0, "/", 1).expect("the root always exists"));
    let nothing = WriteQuorum::records(&h.placements[0], Vec::new());
    assert_eq!(h.cluster.run(1, nothing), Ok(()));
}

#[test]
fn after_a_join_exchanges_with_previous_owners_settle_every_moved_partition_and_the_new_ring_alone_serves() {
    // Four stores; the first three form the old ring, the fourth joins.
    let mut h = Harness::new(4, Quorum::DEFAULT, 1 << 20);
    let member = |n: &NodeId| RingMember { node_id: n.0, zone: String::new(), capacity_bytes: 1 };
    let old_ring = Ring::new(h.nodes[..3].iter().map(member).collect(), 3);
    let new_ring = Ring::new(h.nodes.iter().map(member).collect(), 3);
    h.placements = h
        .nodes
        .iter()
        .map(|n| Arc::new(Placement::new(*n, Quorum::DEFAULT, old_ring.clone(), Arc::default(), 3)))
        .collect();
    let paths: Vec<String> = (0..40).map(|i| format!("/d{}/f{i}", i % 4)).collect();
    for (i, path) in paths.iter().enumerate() {
        h.put(i % 3, path, format!("content {i}").as_bytes(), 10 + i as u64).expect("put");
    }
    // The ring changes: moved partitions settle from their old owners.
    let owners = |ring: &Ring, p| ring.owners(p).map(|m| NodeId(m.node_id)).collect::<Vec<_>>();
    let settling: Settling = shoal_membership::Partition::all()
        .filter(|p| {
            let (mut old, mut new) = (owners(&old_ring, *p), owners(&new_ring, *p));
            old.sort();
            new.sort();
            old != new
        })
        .map(|p| (p, vec![owners(&old_ring, p)]))
        .collect();
    let settling = Arc::new(settling);
    let placement = |n: &NodeId| Arc::new(Placement::new(*n, Quorum::DEFAULT, new_ring.clone(), settling.clone(), 4));
    let before = h.cluster.run(
        0,
        SettleCheck::new(placement(&h.nodes[0]), &h.nodes, usize::MAX, 0, Default::default(), &Default::default()),
    );
    // Where the two owners that stay agree, they alone are the evidence: every write was on
    // one of them, every read meets one of them.
    assert_eq!(before.checked, settling.len());
    // Anti-entropy: every node exchanges with everyone it shares partitions with.
    for node in &h.nodes {
        let placement = placement(node);
        for peer in &h.nodes {
            let shared =
                shoal_membership::Partition::all().filter(|p| placement.keeps(*node, *p) && placement.keeps(*peer, *p));
            let shared = PartitionSet::of(shared);
            if peer != node && !shared.is_empty() {
                let report = h.cluster.run(0, SyncSession::unbounded(*node, *peer, shared));
                assert_eq!(report.failure, None);
            }
        }
    }
    let after = h.cluster.run(
        0,
        SettleCheck::new(placement(&h.nodes[0]), &h.nodes, usize::MAX, 0, Default::default(), &Default::default()),
    );
    assert_eq!(after.findings.settled.len(), settling.len(), "every moved partition settled");
    // The transition is over: only the new ring is asked, and it has everything.
    h.placements = h
        .nodes
        .iter()
        .map(|n| Arc::new(Placement::new(*n, Quorum::DEFAULT, new_ring.clone(), Arc::default(), 4)))
        .collect();
    let joined = h.cluster.store(h.nodes[3]);
    assert!(joined.scan_files(None, usize::MAX).expect("scan").len() > 5, "the newcomer took over some files");
    for (i, path) in paths.iter().enumerate() {
        // Only the new owners: take the old ones away.
        for old in &h.nodes[..3] {
            let owns = new_ring.owners(crate::replication::partition_of(path.as_bytes())).any(|m| m.node_id == old.0);
            h.cluster.set_down(*old, !owns);
        }
        assert_eq!(h.read(3, path, None).expect("read"), format!("content {i}").as_bytes(), "{path}");
        for old in &h.nodes[..3] {
            h.cluster.set_down(*old, false);
        }
    }
}

#[test]
fn read_repair_leaves_writes_younger_than_a_second_to_arrive_on_their_own() {
    let mut h = Harness::three();
    h.cluster.set_down(h.nodes[2], true);
    let written = h.put(0, "/f", b"fresh", 5_000_000).expect("put");
    h.cluster.set_down(h.nodes[2], false);
    let stat = |now_us| h.cluster.run(now_us, h.coordinators[1].stat(h.placements[1].clone(), "/f").expect("op"));
    stat(5_500_000).expect("read half a second later");
    assert!(h.stat_via_store(2, "/f").is_none(), "a write half a second old is not repaired");
    stat(6_500_000).expect("read a second and a half later");
    assert_eq!(h.stat_via_store(2, "/f").map(|record| record.version), Some(written.version), "now it is");
}
