//! What the core asks of the local store. The core never calls the store on its own: it
//! queues [`StoreJob`]s, the driver runs each one on a thread of its choosing (fjall blocks;
//! the tokio driver uses its blocking pool, the simulator runs them in place) and hands the
//! [`StoreDone`] back. What a job does is decided here, in the core.

use shoal_membership::{PARTITION_BITS, Partition};
use shoal_storage::{DigestKind, Prefix, Store, StoreError};

use crate::replication::{PartitionSet, Refusal, Reply, Request, replica};

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
    /// The partitions the store holds entries of.
    Held(Result<PartitionSet, StoreError>),
    /// Partitions dropped (none if the copy changed since it was confirmed).
    Dropped(Result<usize, StoreError>),
}

impl StoreWork {
    /// What to hand back if running this work panicked (a bug in the store): a refusal or a
    /// store error, so nothing waits forever for it.
    pub fn failure(&self) -> StoreDone {
        match self {
            StoreWork::Serve(_) => {
                StoreDone::Served(Reply::Refused(Refusal::Other("the store failed serving this request".into())))
            }
            StoreWork::HeldPartitions => StoreDone::Held(Err(StoreError::Poisoned)),
            StoreWork::DropVerified { .. } => StoreDone::Dropped(Err(StoreError::Poisoned)),
        }
    }

    /// Carries the work out on `store`. Blocks (fjall fsyncs); never panics on stored data.
    pub fn run<S: Store + ?Sized>(self, store: &S) -> StoreDone {
        match self {
            StoreWork::Serve(request) => StoreDone::Served(replica::serve(store, request)),
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
