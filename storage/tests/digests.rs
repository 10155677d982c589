//! Merkle digests, both backends (STYLE §11): what anti-entropy relies on, each store does.

use shoal_storage::{
    BlockHash, CACHE_BITS, Digest, DigestKind, DirEntry, DirRecord, EntryKey, EntryKind, FileRecord, FjallStore,
    FjallStoreConfig, MemStore, NodeId, Prefix, RecordUpdate, Store, Version,
};

fn version(hlc: u64) -> Version {
    Version { hlc, node: NodeId(7) }
}

fn tombstone(hlc: u64) -> FileRecord {
    FileRecord { version: version(hlc), meta: None }
}

fn entry(name: &str, hlc: u64) -> DirRecord {
    let entry = DirEntry { version: version(hlc), kind: EntryKind::File, tombstone: false, size: 1 };
    DirRecord { children: [(name.to_string(), entry)].into() }
}

/// A mix of records and blocks, small and large.
fn writes(count: usize) -> (Vec<RecordUpdate>, Vec<Vec<u8>>) {
    let mut records = Vec::new();
    let mut blocks = Vec::new();
    for i in 0..count {
        records.push(RecordUpdate::File(format!("/d{}/f{i}", i % 7), tombstone(i as u64 + 1)));
        records.push(RecordUpdate::Dir(format!("/d{}", i % 7), entry(&format!("f{i}"), i as u64 + 1)));
        let size = if i % 10 == 0 { 70_000 } else { 100 + i };
        blocks.push(vec![(i % 251) as u8; size]);
    }
    (records, blocks)
}

fn write_all<S: Store>(store: &S, records: &[RecordUpdate], blocks: &[Vec<u8>]) {
    for chunk in records.chunks(5) {
        store.merge_records(chunk).expect("merge");
    }
    for block in blocks {
        store.put_block(&BlockHash::of(block), block).expect("put");
    }
}

/// Every digest along a descent: the root, the cached level and a few deeper ones.
fn fingerprint<S: Store>(store: &S) -> Vec<Vec<Digest>> {
    let mut out = Vec::new();
    for kind in DigestKind::ALL {
        out.push(vec![store.digest(kind, Prefix::ROOT).expect("root")]);
        out.push(store.digest_children(kind, Prefix::ROOT, CACHE_BITS).expect("cached level"));
        for value in [0u64, 5, 4095] {
            let prefix = Prefix::new(CACHE_BITS, value).expect("prefix");
            out.push(store.digest_children(kind, prefix, 4).expect("below the cache"));
        }
    }
    out
}

fn the_same_writes_in_any_order_give_the_same_digests<S: Store>(make: &dyn Fn() -> S) {
    let (records, blocks) = writes(200);
    let (a, b) = (make(), make());
    write_all(&a, &records, &blocks);
    let mut reversed = records.clone();
    reversed.reverse();
    let mut blocks_reversed = blocks.clone();
    blocks_reversed.reverse();
    write_all(&b, &reversed, &blocks_reversed);
    // And again, merged twice: idempotent.
    write_all(&b, &records[..20], &blocks[..5]);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(a.digest(DigestKind::Files, Prefix::ROOT).expect("root"), Digest::EMPTY);
    for kind in DigestKind::ALL {
        assert_eq!(a.digest_len(kind).expect("len"), 200, "{kind:?}");
    }
}

/// Descends from the root to the entries where two stores differ, as anti-entropy does.
fn differing_entries<S: Store>(a: &S, b: &S, kind: DigestKind) -> Vec<EntryKey> {
    let mut pending = vec![Prefix::ROOT];
    let mut found = Vec::new();
    while let Some(prefix) = pending.pop() {
        if a.digest(kind, prefix).expect("a") == b.digest(kind, prefix).expect("b") {
            continue;
        }
        if prefix.bits() >= 24 {
            let listed = |store: &S| store.digest_entries(kind, prefix, None, usize::MAX).expect("entries");
            let (ours, theirs) = (listed(a), listed(b));
            found.extend(ours.iter().filter(|e| !theirs.contains(e)).map(|e| e.key.clone()));
            found.extend(theirs.iter().filter(|e| !ours.contains(e)).map(|e| e.key.clone()));
            continue;
        }
        let fanout = 4;
        let (ours, theirs) =
            (a.digest_children(kind, prefix, fanout).expect("a"), b.digest_children(kind, prefix, fanout).expect("b"));
        for (child, (x, y)) in prefix.children(fanout).expect("room").zip(ours.iter().zip(&theirs)) {
            if x != y {
                pending.push(child);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn a_newer_version_or_a_missing_entry_shows_at_its_own_leaf_only<S: Store>(make: &dyn Fn() -> S) {
    let (records, blocks) = writes(100);
    let (a, b) = (make(), make());
    write_all(&a, &records, &blocks);
    write_all(&b, &records, &blocks);
    b.merge_records(&[RecordUpdate::File("/d3/f10".into(), tombstone(5_000))]).expect("newer");
    b.merge_records(&[RecordUpdate::Dir("/d1".into(), entry("new", 9))]).expect("new entry");
    let gone = BlockHash::of(&blocks[42]);
    b.delete_block(&gone).expect("delete");
    assert_eq!(differing_entries(&a, &b, DigestKind::Files), vec![EntryKey::File("/d3/f10".into())]);
    assert_eq!(
        differing_entries(&a, &b, DigestKind::Entries),
        vec![EntryKey::Entry { dir: "/d1".into(), name: "new".into() }]
    );
    assert_eq!(differing_entries(&a, &b, DigestKind::Blocks), vec![EntryKey::Block(gone)]);
    // Putting the block back makes the stores equal there again.
    b.put_block(&gone, &blocks[42]).expect("put");
    assert!(differing_entries(&a, &b, DigestKind::Blocks).is_empty());
    // An older version changes nothing: merging keeps the newer record.
    b.merge_records(&[RecordUpdate::File("/d3/f10".into(), tombstone(1))]).expect("older");
    assert_eq!(differing_entries(&a, &b, DigestKind::Files).len(), 1);
}

fn a_digest_is_the_xor_of_its_children_at_every_depth<S: Store>(make: &dyn Fn() -> S) {
    let store = make();
    let (records, blocks) = writes(300);
    write_all(&store, &records, &blocks);
    for kind in DigestKind::ALL {
        // Across the cache's depth too: 10 bits with 4 more reaches below it.
        for (bits, value, fanout) in [(0, 0, 2), (10, 3, 4), (12, 77, 8), (20, 1000, 4)] {
            let prefix = Prefix::new(bits, value).expect("prefix");
            let mut xor = Digest::EMPTY;
            for child in store.digest_children(kind, prefix, fanout).expect("children") {
                xor.toggle(&child);
            }
            assert_eq!(xor, store.digest(kind, prefix).expect("digest"), "{kind:?} {prefix:?}");
        }
    }
}

fn entries_under_a_prefix_come_in_bounded_pages<S: Store>(make: &dyn Fn() -> S) {
    let store = make();
    let (records, blocks) = writes(150);
    write_all(&store, &records, &blocks);
    let all = store.digest_entries(DigestKind::Files, Prefix::ROOT, None, usize::MAX).expect("all");
    assert_eq!(all.len(), 150);
    let mut paged = Vec::new();
    loop {
        let page = store
            .digest_entries(
                DigestKind::Files,
                Prefix::ROOT,
                paged.last().map(|e: &shoal_storage::DigestEntry| &e.key),
                7,
            )
            .expect("page");
        assert!(page.len() <= 7);
        let done = page.len() < 7;
        paged.extend(page);
        if done {
            break;
        }
    }
    assert_eq!(paged, all);
    let positions: Vec<u64> = all.iter().map(|e| e.key.position()).collect();
    assert!(positions.is_sorted(), "position order");
    let one = Prefix::of_position(positions[40], 16);
    let under = store.digest_entries(DigestKind::Files, one, None, usize::MAX).expect("under");
    assert!(!under.is_empty() && under.iter().all(|e| one.contains(e.key.position())));
}

fn a_bad_fanout_is_an_error_not_a_panic<S: Store>(make: &dyn Fn() -> S) {
    let store = make();
    assert!(store.digest_children(DigestKind::Files, Prefix::ROOT, 17).is_err());
    let deep = Prefix::new(62, 1).expect("prefix");
    assert!(store.digest_children(DigestKind::Files, deep, 4).is_err());
}

fn a_prefix_is_dropped_only_while_its_digest_is_what_was_confirmed<S: Store>(make: &dyn Fn() -> S) {
    let store = make();
    let (records, blocks) = writes(200);
    write_all(&store, &records, &blocks);
    for kind in DigestKind::ALL {
        let others = store.digest_len(kind).expect("len");
        let some = store.digest_entries(kind, Prefix::ROOT, None, 1).expect("an entry");
        let prefix = Prefix::of_position(some[0].key.position(), CACHE_BITS);
        let under = store.digest_entries(kind, prefix, None, usize::MAX).expect("under").len() as u64;
        let expected = store.digest(kind, prefix).expect("digest").short();
        assert!(!store.drop_prefix(kind, prefix, expected ^ 1).expect("drop"), "a stale digest drops nothing");
        assert_eq!(store.digest_len(kind).expect("len"), others);
        assert!(store.drop_prefix(kind, prefix, expected).expect("drop"));
        assert_eq!(store.digest(kind, prefix).expect("digest"), Digest::EMPTY, "{kind:?}");
        assert_eq!(store.digest_len(kind).expect("len"), others - under);
        match &some[0].key {
            EntryKey::File(path) => assert!(store.get_file(path).expect("get").is_none()),
            EntryKey::Entry { dir, name } => assert!(store.get_dir_entry(dir, name).expect("get").is_none()),
            EntryKey::Block(hash) => assert!(!store.has_block(hash).expect("has")),
        }
    }
    // What is left still digests like a store that never held the dropped entries.
    let total: u64 = DigestKind::ALL.iter().map(|kind| store.digest_len(*kind).expect("len")).sum();
    assert!(total > 0 && total < 600);
}

fn digest_suite<S: Store>(make: &dyn Fn() -> S) {
    the_same_writes_in_any_order_give_the_same_digests(make);
    a_newer_version_or_a_missing_entry_shows_at_its_own_leaf_only(make);
    a_digest_is_the_xor_of_its_children_at_every_depth(make);
    entries_under_a_prefix_come_in_bounded_pages(make);
    a_bad_fanout_is_an_error_not_a_panic(make);
    a_prefix_is_dropped_only_while_its_digest_is_what_was_confirmed(make);
}

fn fjall_store(dir: &std::path::Path) -> FjallStore {
    FjallStore::open(FjallStoreConfig { disk_reserve_bytes: 0, ..FjallStoreConfig::new(dir) }).expect("open")
}

#[test]
fn the_memory_store_passes_the_digest_suite() {
    digest_suite(&|| MemStore::new(1 << 30));
}

#[test]
fn the_fjall_store_passes_the_digest_suite() {
    let root = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    digest_suite(&|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fjall_store(&root.path().join(n.to_string()))
    });
}

#[test]
fn both_backends_digest_the_same_entries_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, blocks) = writes(120);
    let (mem, fjall) = (MemStore::new(1 << 30), fjall_store(dir.path()));
    write_all(&mem, &records, &blocks);
    write_all(&fjall, &records, &blocks);
    assert_eq!(fingerprint(&mem), fingerprint(&fjall));
}

#[test]
fn the_fjall_store_keeps_its_digests_across_reopen_and_rebuilds_them_from_the_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, blocks) = writes(150);
    let before = {
        let store = fjall_store(dir.path());
        write_all(&store, &records, &blocks);
        store.delete_block(&BlockHash::of(&blocks[10])).expect("delete a large block");
        store.delete_block(&BlockHash::of(&blocks[11])).expect("delete a small block");
        store.sync().expect("sync");
        fingerprint(&store)
    };
    let store = fjall_store(dir.path());
    assert_eq!(fingerprint(&store), before, "reopened");
    store.rebuild_digests().expect("rebuild");
    assert_eq!(fingerprint(&store), before, "rebuilt from the records and blocks");
    assert_eq!(store.digest_len(DigestKind::Blocks).expect("len"), 148);
    // A dropped prefix stays dropped across a reopen.
    let block = BlockHash::of(&blocks[20]);
    let prefix = Prefix::of_position(EntryKey::Block(block).position(), CACHE_BITS);
    let expected = store.digest(DigestKind::Blocks, prefix).expect("digest").short();
    assert!(store.drop_prefix(DigestKind::Blocks, prefix, expected).expect("drop"));
    store.sync().expect("sync");
    let after = fingerprint(&store);
    drop(store);
    let store = fjall_store(dir.path());
    assert_eq!(fingerprint(&store), after);
    assert!(!store.has_block(&block).expect("has"));
}

#[test]
fn a_memory_store_crash_keeps_digests_consistent_with_what_survived() {
    let (records, blocks) = writes(60);
    let store = MemStore::new(1 << 30);
    write_all(&store, &records[..60], &blocks[..30]);
    store.sync().expect("sync");
    write_all(&store, &records[60..], &blocks[30..]);
    store.crash();
    let survivor = MemStore::new(1 << 30);
    write_all(&survivor, &records[..60], &blocks[..30]);
    assert_eq!(fingerprint(&store), fingerprint(&survivor));
}
