//! What the core asks of the local store. The core never calls the store on its own: it
//! queues [`StoreJob`]s, the driver runs each one on a thread of its choosing (fjall blocks;
//! the tokio driver uses its blocking pool, the simulator runs them in place) and hands the
//! [`StoreDone`] back. What a job does is decided here, in the core.

use bytes::Bytes;
use shoal_membership::{PARTITION_BITS, Partition};
use shoal_storage::{BlockHash, DigestKind, DirRecord, Prefix, RecordUpdate, Store, StoreError};

use crate::replication::{PartitionSet, Placement, Refusal, Reply, Request, replica};
use std::sync::Arc;

/// Names a store job until its result comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub(crate) u64);

/// Work for the local store; run it with [`StoreWork::run`] and hand the result to
/// [`NodeCore::handle_store_done`](super::NodeCore::handle_store_done).
#[derive(Debug)]
pub struct StoreJob {
    /// Which job this is.
    pub id: JobId,
    /// What to do.
    pub work: StoreWork,
}

/// The kinds of store work.
#[derive(Debug)]
pub enum StoreWork {
    /// Serve a replica request (from a peer, or from one of this node's own operations).
    Serve(Request),
    /// Read the next hand-off batch.
    Scan(HandoffScan),
    /// Say which partitions the store holds anything of.
    HeldPartitions,
    /// Drop this node's copy of `partitions` if its root digests (short, per kind) are still
    /// `roots`, the ones every owner was seen to hold.
    DropVerified {
        /// The partitions handed over.
        partitions: PartitionSet,
        /// The roots confirmed on every owner.
        roots: Vec<u64>,
    },
}

/// The result of a [`StoreWork`].
#[derive(Debug)]
pub enum StoreDone {
    /// A replica request's answer (a store failure is a [`Reply::Refused`]).
    Served(Reply),
    /// A hand-off batch, or the store error that stopped the scan.
    Scanned(Result<ScanBatch, StoreError>),
    /// The partitions the store holds entries of.
    Held(Result<PartitionSet, StoreError>),
    /// Partitions dropped (none if the copy changed since it was confirmed).
    Dropped(Result<usize, StoreError>),
}

impl StoreWork {
    /// What to hand back if running this work panicked (a bug in the store): a refusal, or a
    /// failed scan that the hand-off retries, so nothing waits forever for it.
    pub fn failure(&self) -> StoreDone {
        match self {
            StoreWork::Serve(_) => {
                StoreDone::Served(Reply::Refused(Refusal::Other("the store failed serving this request".into())))
            }
            StoreWork::Scan(_) => StoreDone::Scanned(Err(StoreError::Poisoned)),
            StoreWork::HeldPartitions => StoreDone::Held(Err(StoreError::Poisoned)),
            StoreWork::DropVerified { .. } => StoreDone::Dropped(Err(StoreError::Poisoned)),
        }
    }

    /// Carries the work out on `store`. Blocks (fjall fsyncs); never panics on stored data.
    pub fn run<S: Store + ?Sized>(self, store: &S) -> StoreDone {
        match self {
            StoreWork::Serve(request) => StoreDone::Served(replica::serve(store, request)),
            StoreWork::Scan(scan) => StoreDone::Scanned(scan.run(store)),
            StoreWork::HeldPartitions => StoreDone::Held(held_partitions(store)),
            StoreWork::DropVerified { partitions, roots } => {
                StoreDone::Dropped(drop_verified(store, &partitions, &roots))
            }
        }
    }
}

/// The partitions of which the store holds any entry.
fn held_partitions<S: Store + ?Sized>(store: &S) -> Result<PartitionSet, StoreError> {
    let mut held = vec![false; shoal_membership::PARTITIONS];
    for kind in DigestKind::ALL {
        for (slot, digest) in held.iter_mut().zip(store.digest_children(kind, Prefix::ROOT, PARTITION_BITS as u8)?) {
            *slot |= digest != shoal_storage::Digest::EMPTY;
        }
    }
    Ok(PartitionSet::of(Partition::all().filter(|partition| held[partition.index()])))
}

/// [`StoreWork::DropVerified`]: drops each partition's entries of each kind, each only while
/// its digest is what this check saw, and only if the whole copy still has the confirmed roots.
fn drop_verified<S: Store + ?Sized>(store: &S, partitions: &PartitionSet, roots: &[u64]) -> Result<usize, StoreError> {
    let prefix = |partition: Partition| Prefix::new(PARTITION_BITS as u8, u64::from(partition.0));
    let mut dropped = 0;
    for (kind, root) in DigestKind::ALL.into_iter().zip(roots) {
        let digests = store.digest_children(kind, Prefix::ROOT, PARTITION_BITS as u8)?;
        let mut now = shoal_storage::Digest::EMPTY;
        partitions.iter().filter_map(|p| digests.get(p.index())).for_each(|digest| now.toggle(digest));
        if now.short() != *root {
            continue;
        }
        for partition in partitions.iter() {
            let (Some(prefix), Some(digest)) = (prefix(partition), digests.get(partition.index())) else { continue };
            if *digest != shoal_storage::Digest::EMPTY && store.drop_prefix(kind, prefix, digest.short())? {
                dropped += 1;
            }
        }
    }
    store.sync()?;
    Ok(dropped)
}

/// Where a hand-off's walk of the store stands: file records, then directory entries, then
/// blocks, each after a cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffCursor {
    /// File records after this path.
    Files(Option<String>),
    /// Directory entries after this (directory, name).
    Dirs(Option<(String, String)>),
    /// Blocks after this hash.
    Blocks(Option<BlockHash>),
    /// The walk is over.
    Done,
}

/// One step of a hand-off's walk: read one batch after `cursor`, keep what `placement` moved.
#[derive(Debug)]
pub struct HandoffScan {
    /// The placement whose new owners get what moved.
    pub placement: Arc<Placement>,
    /// Where to go on.
    pub cursor: HandoffCursor,
    /// Records per store scan.
    pub records_per_batch: usize,
    /// Blocks per batch at most.
    pub blocks_per_batch: usize,
}

/// What one hand-off scan found: records and blocks to push, and where the walk goes on.
#[derive(Debug)]
pub struct ScanBatch {
    /// Records whose owners changed.
    pub records: Vec<RecordUpdate>,
    /// Blocks whose owners changed, with their bytes.
    pub blocks: Vec<(BlockHash, Bytes)>,
    /// Where the next scan starts.
    pub next: HandoffCursor,
}

impl HandoffScan {
    fn run<S: Store + ?Sized>(self, store: &S) -> Result<ScanBatch, StoreError> {
        let limit = self.records_per_batch;
        let moved = |key: &[u8]| !self.placement.new_owners(key).is_empty();
        let mut batch = ScanBatch { records: Vec::new(), blocks: Vec::new(), next: HandoffCursor::Done };
        let next = match self.cursor {
            HandoffCursor::Files(after) => {
                let found = store.scan_files(after.as_deref(), limit)?;
                let full = found.len() == limit;
                let last = found.last().map(|(path, _)| path.clone());
                batch.records = found
                    .into_iter()
                    .filter(|(path, _)| moved(path.as_bytes()))
                    .map(|(path, record)| RecordUpdate::File(path, record))
                    .collect();
                if full { HandoffCursor::Files(last) } else { HandoffCursor::Dirs(None) }
            }
            HandoffCursor::Dirs(after) => {
                let cursor = after.as_ref().map(|(dir, name)| (dir.as_str(), name.as_str()));
                let found = store.scan_dir_entries(cursor, limit)?;
                let full = found.len() == limit;
                let last = found.last().map(|(dir, name, _)| (dir.clone(), name.clone()));
                batch.records = found
                    .into_iter()
                    .filter(|(dir, _, _)| moved(dir.as_bytes()))
                    .map(|(dir, name, entry)| RecordUpdate::Dir(dir, DirRecord { children: [(name, entry)].into() }))
                    .collect();
                if full { HandoffCursor::Dirs(last) } else { HandoffCursor::Blocks(None) }
            }
            HandoffCursor::Blocks(after) => self.scan_blocks(store, after, &mut batch)?,
            HandoffCursor::Done => HandoffCursor::Done,
        };
        batch.next = next;
        Ok(batch)
    }

    /// Blocks after `after` that moved, up to a batch; returns where the walk goes on.
    fn scan_blocks<S: Store + ?Sized>(
        &self,
        store: &S,
        mut after: Option<BlockHash>,
        batch: &mut ScanBatch,
    ) -> Result<HandoffCursor, StoreError> {
        let limit = self.records_per_batch;
        loop {
            let hashes = store.scan_blocks(after.as_ref(), limit)?;
            let end = hashes.len() < limit;
            for hash in hashes {
                after = Some(hash);
                if self.placement.new_owners(&hash.0).is_empty() {
                    continue;
                }
                // A corrupt or vanished copy is not handed off; another owner has one.
                if let Ok(Some(bytes)) = store.get_block(&hash) {
                    batch.blocks.push((hash, bytes));
                    if batch.blocks.len() == self.blocks_per_batch {
                        return Ok(HandoffCursor::Blocks(after));
                    }
                }
            }
            if end {
                return Ok(HandoffCursor::Done);
            }
        }
    }
}
