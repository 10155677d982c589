//! foca's wire codec, with bincode 2 and a byte limit.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NodeIdentity;

/// Claimed allocation allowed while decoding one item. Packets are at most 1400 bytes; a
/// hostile length prefix must fail here, not abort the process with a huge allocation.
const DECODE_BYTES_MAX: usize = 4096;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// Why an item could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Malformed, truncated or oversized input.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The item cannot be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The item does not fit in the space left in the packet; nothing was written.
    #[error("item does not fit in the packet")]
    NoRoom,
}

/// Encodes foca headers and members with bincode 2 (serde path), decodes them with a byte
/// limit. Decoding consumes exactly one item from the front of a contiguous buffer (foca's
/// contract); encoding writes nothing when the item does not fit.
#[derive(Debug, Default, Clone, Copy)]
pub struct BincodeCodec;

impl BincodeCodec {
    fn encode<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = bincode::serde::encode_to_vec(value, config())?;
        if buf.remaining_mut() < bytes.len() {
            return Err(CodecError::NoRoom);
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn decode<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
        // foca hands over contiguous buffers, so the first chunk is everything.
        let (value, used) = bincode::serde::decode_from_slice::<T, _>(buf.chunk(), config())?;
        buf.advance(used);
        Ok(value)
    }
}

impl Codec<NodeIdentity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<NodeIdentity>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, CodecError> {
        Self::decode(buf)
    }

    fn encode_member(&mut self, member: &Member<NodeIdentity>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, CodecError> {
        Self::decode(buf)
    }
}

/// Decodes a whole buffer as one `T` with the byte limit; trailing bytes are an error.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Decode(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        ))));
    }
    Ok(value)
}

/// Encodes `T` with the same configuration.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

#[cfg(test)]
mod tests {
    use foca::{Incarnation, Message, State};
    use proptest::prelude::*;

    use super::*;

    fn identity(n: u128) -> NodeIdentity {
        NodeIdentity { node_id: n, addr: "127.0.0.1:7701".parse().expect("addr"), generation: n as u64 }
    }

    #[test]
    fn headers_and_members_round_trip() {
        let mut codec = BincodeCodec;
        let header = Header {
            src: identity(1),
            src_incarnation: 3 as Incarnation,
            dst: identity(2),
            message: Message::IndirectPing { probe_number: 9, origin: identity(3) },
        };
        let mut buf = Vec::new();
        codec.encode_header(&header, &mut buf).expect("encode");
        let member = Member::new(identity(4), 1, State::Suspect);
        codec.encode_member(&member, &mut buf).expect("encode");
        let mut slice = &buf[..];
        assert_eq!(codec.decode_header(&mut slice).expect("decode"), header);
        assert_eq!(codec.decode_member(&mut slice).expect("decode"), member);
        assert!(slice.is_empty(), "each decode consumed exactly its item");
    }

    #[test]
    fn an_item_that_does_not_fit_leaves_the_buffer_untouched() {
        let mut codec = BincodeCodec;
        let mut storage = [0u8; 8];
        let mut buf = &mut storage[..];
        let member = Member::new(identity(4), 1, State::Alive);
        assert!(matches!(codec.encode_member(&member, &mut buf), Err(CodecError::NoRoom)));
        assert_eq!(buf.len(), 8);
    }

    #[test]
    fn a_hostile_length_prefix_is_refused_without_allocating() {
        // A varint claiming an enormous sequence: must fail on the limit, not abort.
        let hostile = [0xfcu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4];
        assert!(decode_exact::<Vec<u64>>(&hostile).is_err());
        let mut codec = BincodeCodec;
        assert!(codec.decode_header(&hostile[..]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut codec = BincodeCodec;
            let _ = codec.decode_header(&bytes[..]);
            let _ = codec.decode_member(&bytes[..]);
            let _ = decode_exact::<crate::MemberRecord>(&bytes);
        }
    }
}
