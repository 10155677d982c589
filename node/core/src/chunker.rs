//! Cuts a byte stream into fixed-size blocks.

use bytes::{Bytes, BytesMut};

/// Accumulates bytes and hands out whole blocks of `block_size` bytes; the last block may be
/// shorter. Holds at most one block in memory, and no more than has arrived: a 4 KiB upload
/// does not cost a whole block's buffer.
#[derive(Debug)]
pub struct Chunker {
    block_size: usize,
    pending: BytesMut,
}

impl Chunker {
    /// A chunker for blocks of `block_size` bytes (at least 1).
    pub fn new(block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self { block_size, pending: BytesMut::new() }
    }

    /// Takes `data` and returns the blocks it completed, in order.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Bytes> {
        let mut full = Vec::new();
        while !data.is_empty() {
            let take = (self.block_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == self.block_size {
                full.push(self.pending.split().freeze());
            }
        }
        full
    }

    /// The final, possibly short, block; `None` if nothing is pending.
    pub fn finish(self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.freeze())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn blocks_concatenate_to_the_input_and_all_but_the_last_are_full(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..20),
            block_size in 1usize..40,
        ) {
            let mut chunker = Chunker::new(block_size);
            let mut blocks: Vec<Bytes> = pieces.iter().flat_map(|piece| chunker.push(piece)).collect();
            prop_assert!(blocks.iter().all(|block| block.len() == block_size));
            blocks.extend(chunker.finish());
            prop_assert_eq!(blocks.concat(), pieces.concat());
            prop_assert!(blocks.iter().all(|block| !block.is_empty() && block.len() <= block_size));
        }
    }
}
