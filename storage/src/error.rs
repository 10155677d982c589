//! Errors of the local store.

use crate::BlockHash;

/// What can go wrong in a [`Store`](crate::Store). Each variant says whether state changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk (or the configured capacity) has no room for the write. Nothing was written;
    /// reads and deletes keep working.
    #[error("disk full: {needed_bytes} bytes needed, {available_bytes} available above the reserve")]
    Full {
        /// Bytes the refused write needed.
        needed_bytes: u64,
        /// Bytes that were available for data.
        available_bytes: u64,
    },
    /// A stored block's bytes do not match its name (bit rot, a torn write, tampering). No
    /// data was returned and nothing changed.
    #[error("block {0} is corrupt: its bytes do not match its hash")]
    Corrupt(BlockHash),
    /// A block handed to the store does not match the name it was given. Nothing was written.
    #[error("block bytes do not match the hash {0}")]
    HashMismatch(BlockHash),
    /// A stored record could not be decoded. Nothing changed.
    #[error("stored {what} record is unreadable: {detail}")]
    Decode {
        /// Which kind of record.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// An earlier fsync failed, so what is on disk is unknown: the store accepts no more
    /// writes until it is reopened (fjall's `Poisoned`; retrying fsync is unsafe).
    #[error("the store is poisoned by an earlier failed fsync; restart the node")]
    Poisoned,
    /// An IO error. A write that returns it was not acknowledged and may or may not be
    /// visible after a restart; reads change nothing.
    #[error("storage IO error: {0}")]
    Io(#[from] std::io::Error),
    /// An error inside fjall, with the same meaning as [`StoreError::Io`].
    #[error("fjall: {0}")]
    Fjall(fjall::Error),
}

impl From<fjall::Error> for StoreError {
    fn from(err: fjall::Error) -> Self {
        match err {
            fjall::Error::Poisoned => StoreError::Poisoned,
            fjall::Error::Io(io) => StoreError::from_io(io),
            other => StoreError::Fjall(other),
        }
    }
}

impl StoreError {
    /// Maps "no space left" to [`StoreError::Full`], everything else to [`StoreError::Io`].
    pub(crate) fn from_io(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::StorageFull || err.kind() == std::io::ErrorKind::QuotaExceeded {
            StoreError::Full { needed_bytes: 0, available_bytes: 0 }
        } else {
            StoreError::Io(err)
        }
    }
}
