//! The replica side: what a node does with a request from a coordinator (itself included).
//! Synchronous, over the [`Store`]; the driver calls it off the async workers.

use shoal_storage::{Store, StoreError};

use super::digests::serve_sync;
use super::messages::{BlockRpc, RecordKey, RecordRpc, RecordValue, Reply, Request};

/// Carries out `request` on `store`. Writes are durable (synced) before the reply says so.
/// Never panics on what a peer sent.
pub fn serve<S: Store + ?Sized>(store: &S, request: Request) -> Reply {
    match handle(store, request) {
        Ok(reply) => reply,
        Err(err) => {
            tracing::warn!(%err, "a replica request failed");
            Reply::Refused(err.into())
        }
    }
}

fn handle<S: Store + ?Sized>(store: &S, request: Request) -> Result<Reply, StoreError> {
    Ok(match request {
        Request::Record(RecordRpc::Read(key)) => Reply::Value(match key {
            RecordKey::File(path) => RecordValue::File(store.get_file(&path)?),
            RecordKey::Entry { dir, name } => RecordValue::Entry(store.get_dir_entry(&dir, &name)?),
            RecordKey::Dir(dir) => RecordValue::Dir(store.get_dir(&dir)?),
        }),
        Request::Record(RecordRpc::Merge(updates)) => {
            store.merge_records(&updates)?;
            store.sync()?;
            Reply::Durable
        }
        Request::Block(BlockRpc::Put { hash, bytes }) => {
            store.put_block(&hash, &bytes)?;
            store.sync()?;
            Reply::Durable
        }
        Request::Block(BlockRpc::Get(hash)) => match store.get_block(&hash) {
            Ok(block) => Reply::Block(block),
            // A corrupt copy is never served; the coordinator tries another owner.
            Err(StoreError::Corrupt(_)) => {
                tracing::warn!(block = %hash, "a stored block failed its hash; not served");
                Reply::Block(None)
            }
            Err(err) => return Err(err),
        },
        Request::Sync(rpc) => serve_sync(store, rpc)?,
    })
}
