//! Framing of node-to-node RPC messages (docs/ARCHITECTURE.md §8): pure and incremental, no IO.
//!
//! A message (one [`Request`](crate::replication::Request) or one
//! [`Reply`](crate::replication::Reply)) is its bincode 2 encoding, cut into frames:
//!
//! ```text
//! frame   = length:u32 (big-endian, payload bytes) | flags:u8 | payload:[u8; length]
//! flags   = 0 (last frame of the message) | 1 (more frames follow)
//! message = frame(flags = 1)* frame(flags = 0)
//! ```
//!
//! A frame carries at most [`FRAME_PAYLOAD_BYTES_MAX`] bytes, so a reader never buffers more
//! than one frame it has not validated; only a frame with more following may not be empty,
//! so a peer cannot keep a reader busy without sending data. The frames of one message add
//! up to at most [`MESSAGE_BYTES_MAX`], enough for the largest block with its headers. Both
//! limits are checked on the header, before any buffer grows for the payload.
//!
//! There is no checksum: TCP already catches transmission errors, and what matters is checked
//! end to end one layer up (a replica verifies a block against its name before storing it, a
//! coordinator verifies every block it reads).

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes of a frame header: the payload length (u32) and the flags (u8).
pub const FRAME_HEADER_BYTES: usize = 5;

/// Payload bytes of one frame at most: large enough that a block costs few headers, small
/// enough that an unvalidated frame costs little memory.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of one frame at most, header included.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX;

/// Bytes of one encoded message at most: the largest block
/// ([`BLOCK_SIZE_BYTES_MAX`](crate::BLOCK_SIZE_BYTES_MAX)) plus room for the message
/// around it.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024 + 64 * 1024;

/// Memory bincode may claim while decoding one message. bincode counts the in-memory size of
/// what it decodes, which for small varints is larger than their encoding (a one-byte `u128`
/// claims 16), hence the headroom over [`MESSAGE_BYTES_MAX`]; a hostile length inside a
/// message fails here instead of allocating.
const DECODE_CLAIM_BYTES_MAX: usize = 2 * MESSAGE_BYTES_MAX;

const FLAG_LAST: u8 = 0;
const FLAG_MORE: u8 = 1;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_CLAIM_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_CLAIM_BYTES_MAX>()
}

/// Why bytes could not be framed or unframed. After a decoding error the stream is out of
/// step: the connection must be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame header announces more than [`FRAME_PAYLOAD_BYTES_MAX`] payload bytes. Nothing
    /// was buffered for it.
    #[error("a frame of {payload_bytes} payload bytes exceeds the limit of {FRAME_PAYLOAD_BYTES_MAX}")]
    FrameTooLong {
        /// What the header announced.
        payload_bytes: usize,
    },
    /// A message is longer than its limit. When decoding, nothing was buffered for the frame
    /// that crossed it.
    #[error("a message of at least {message_bytes} bytes exceeds the limit of {limit_bytes}")]
    MessageTooLong {
        /// The message's length, or as much of it as was announced when it crossed the limit.
        message_bytes: usize,
        /// The limit it crossed.
        limit_bytes: usize,
    },
    /// A message whose contents claim more memory than bincode may allocate for one.
    #[error("a message claims more than {limit_bytes} bytes of memory")]
    ClaimTooLarge {
        /// The limit it crossed.
        limit_bytes: usize,
    },
    /// A frame header with flags that are neither "last" nor "more".
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// An empty frame that says more follow: it would carry nothing.
    #[error("an empty frame announces more frames")]
    EmptyFrame,
    /// Complete frames whose payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A value that cannot be encoded (a bug on this side, not the peer's).
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl WireError {
    /// The `reason` label of the rejection counter: `oversized` for what broke a limit,
    /// `malformed` for the rest.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::FrameTooLong { .. } | WireError::MessageTooLong { .. } | WireError::ClaimTooLarge { .. } => {
                "oversized"
            }
            _ => "malformed",
        }
    }
}

/// The header of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes that follow the header, at most [`FRAME_PAYLOAD_BYTES_MAX`].
    pub payload_bytes: usize,
    /// Whether this frame ends its message.
    pub last: bool,
}

impl FrameHeader {
    /// The header's bytes on the wire. Panics on a payload over [`FRAME_PAYLOAD_BYTES_MAX`]:
    /// headers come from [`frames`], which never makes one.
    pub fn to_bytes(self) -> [u8; FRAME_HEADER_BYTES] {
        assert!(self.payload_bytes <= FRAME_PAYLOAD_BYTES_MAX, "frame payload over the limit");
        // Cannot truncate: the payload fits in a frame, far below u32::MAX.
        let length = (self.payload_bytes as u32).to_be_bytes();
        let flags = if self.last { FLAG_LAST } else { FLAG_MORE };
        [length[0], length[1], length[2], length[3], flags]
    }

    /// Reads and validates the header at the start of `src` without consuming anything:
    /// `Ok(None)` if fewer than [`FRAME_HEADER_BYTES`] are there yet.
    pub fn peek(src: &[u8]) -> Result<Option<FrameHeader>, WireError> {
        let Some(&[a, b, c, d, flags]) = src.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let payload_bytes = u32::from_be_bytes([a, b, c, d]) as usize;
        let last = match flags {
            FLAG_LAST => true,
            FLAG_MORE => false,
            other => return Err(WireError::UnknownFlags(other)),
        };
        if payload_bytes > FRAME_PAYLOAD_BYTES_MAX {
            return Err(WireError::FrameTooLong { payload_bytes });
        }
        if payload_bytes == 0 && !last {
            return Err(WireError::EmptyFrame);
        }
        Ok(Some(FrameHeader { payload_bytes, last }))
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Whether this frame ends its message.
    pub last: bool,
    /// Its payload.
    pub payload: Bytes,
}

/// Takes one complete frame off the front of `src`: `Ok(None)` if it has not fully arrived
/// (then `src` has room reserved for the rest of it, at most one frame), an error if the
/// header is invalid (nothing consumed, nothing reserved).
pub fn decode_frame(src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    let Some(header) = FrameHeader::peek(src)? else {
        return Ok(None);
    };
    let frame_bytes = FRAME_HEADER_BYTES + header.payload_bytes;
    if src.len() < frame_bytes {
        // Bounded by the check in `peek`: at most one frame.
        src.reserve(frame_bytes - src.len());
        return Ok(None);
    }
    src.advance(FRAME_HEADER_BYTES);
    let payload = src.split_to(header.payload_bytes).freeze();
    Ok(Some(Frame { last: header.last, payload }))
}

/// The frames that carry `message`, in order: its header and the slice of `message` each
/// carries. An empty message is one empty last frame.
pub fn frames(message: &[u8]) -> impl Iterator<Item = (FrameHeader, &[u8])> {
    let count = message.len().div_ceil(FRAME_PAYLOAD_BYTES_MAX).max(1);
    (0..count).map(move |index| {
        let start = index * FRAME_PAYLOAD_BYTES_MAX;
        let end = message.len().min(start + FRAME_PAYLOAD_BYTES_MAX);
        let chunk = &message[start..end];
        (FrameHeader { payload_bytes: chunk.len(), last: index + 1 == count }, chunk)
    })
}

/// Appends the frames of `message` to `dst`. Writers of large messages can instead send each
/// of [`frames`] straight from the message, without this copy.
pub fn encode_frames(message: &[u8], dst: &mut BytesMut) {
    dst.reserve(message.len() + FRAME_HEADER_BYTES * message.len().div_ceil(FRAME_PAYLOAD_BYTES_MAX).max(1));
    for (header, chunk) in frames(message) {
        dst.extend_from_slice(&header.to_bytes());
        dst.extend_from_slice(chunk);
    }
}

/// Reassembles messages from frames, one at a time.
///
/// Feed it everything read from the connection: [`MessageDecoder::decode`] takes complete
/// frames off the front of the buffer and returns a message once its last frame is in. It
/// holds at most `message_bytes_max` bytes of a partial message, plus the one frame being
/// received in the caller's buffer.
#[derive(Debug)]
pub struct MessageDecoder {
    /// The payloads of the frames received so far of the current message.
    assembled: Vec<u8>,
    message_bytes_max: usize,
}

impl Default for MessageDecoder {
    fn default() -> Self {
        MessageDecoder::new(MESSAGE_BYTES_MAX)
    }
}

impl MessageDecoder {
    /// A decoder for messages of at most `message_bytes_max` bytes.
    pub fn new(message_bytes_max: usize) -> MessageDecoder {
        MessageDecoder { assembled: Vec::new(), message_bytes_max }
    }

    /// The next complete message from the front of `src`, `Ok(None)` if more bytes are needed
    /// (then `src` has room reserved for the frame being received), or why the input is
    /// invalid. After an error, the decoder and `src` are out of step: drop both.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            let Some(header) = FrameHeader::peek(src)? else {
                return Ok(None);
            };
            // Checked before `decode_frame` reserves room for the payload.
            let message_bytes = self.assembled.len() + header.payload_bytes;
            if message_bytes > self.message_bytes_max {
                return Err(WireError::MessageTooLong { message_bytes, limit_bytes: self.message_bytes_max });
            }
            let Some(frame) = decode_frame(src)? else {
                return Ok(None);
            };
            if frame.last && self.assembled.is_empty() {
                // A one-frame message needs no copy.
                return Ok(Some(frame.payload));
            }
            self.append(&frame.payload);
            if frame.last {
                return Ok(Some(Bytes::from(std::mem::take(&mut self.assembled))));
            }
        }
    }

    /// Whether no part of a message is held: at the end of the stream, the peer closed
    /// between messages rather than in the middle of one.
    pub fn is_idle(&self) -> bool {
        self.assembled.is_empty()
    }

    /// Bytes reserved for the partial message, never more than the message limit.
    pub fn buffered_bytes(&self) -> usize {
        self.assembled.capacity()
    }

    /// Appends a payload whose total was checked against the limit. Grows by doubling (few
    /// copies) but never past the limit, so a message at the limit costs no more than it.
    fn append(&mut self, payload: &[u8]) {
        let needed = self.assembled.len() + payload.len();
        if needed > self.assembled.capacity() {
            let capacity = needed.max(self.assembled.capacity().saturating_mul(2)).min(self.message_bytes_max);
            self.assembled.reserve_exact(capacity - self.assembled.len());
        }
        self.assembled.extend_from_slice(payload);
    }
}

/// Encodes `value` as one message (bincode 2, serde path), sized first so the buffer is
/// allocated once and nothing is allocated for a message over [`MESSAGE_BYTES_MAX`].
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut message_bytes = 0;
    bincode::serde::encode_into_writer(value, SizeWriter(&mut message_bytes), config())
        .map_err(|err| WireError::Encode(err.to_string()))?;
    if message_bytes > MESSAGE_BYTES_MAX {
        return Err(WireError::MessageTooLong { message_bytes, limit_bytes: MESSAGE_BYTES_MAX });
    }
    let mut message = Vec::with_capacity(message_bytes);
    bincode::serde::encode_into_std_write(value, &mut message, config())
        .map_err(|err| WireError::Encode(err.to_string()))?;
    Ok(message)
}

/// Decodes one message that must be exactly `message`: trailing bytes are malformed too.
pub fn decode_message<T: DeserializeOwned>(message: &[u8]) -> Result<T, WireError> {
    match bincode::serde::decode_from_slice::<T, _>(message, config()) {
        Ok((value, used)) if used == message.len() => Ok(value),
        Ok((_, used)) => Err(WireError::Malformed(format!("{} trailing bytes", message.len() - used))),
        Err(bincode::error::DecodeError::LimitExceeded) => {
            Err(WireError::ClaimTooLarge { limit_bytes: DECODE_CLAIM_BYTES_MAX })
        }
        Err(err) => Err(WireError::Malformed(err.to_string())),
    }
}

/// Counts encoded bytes without storing them.
struct SizeWriter<'a>(&'a mut usize);

impl bincode::enc::write::Writer for SizeWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        *self.0 += bytes.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;
    use shoal_storage::{BlockHash, DirEntry, DirRecord, EntryKind, FileRecord, NodeId, RecordUpdate, Version};

    use super::*;
    use crate::replication::{BlockRpc, RecordKey, RecordRpc, RecordValue, Reply, Request};

    /// Bytes of `len` that differ from frame to frame, cheaper to make than random ones.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn header(payload_bytes: u32, flags: u8) -> Vec<u8> {
        let mut bytes = payload_bytes.to_be_bytes().to_vec();
        bytes.push(flags);
        bytes
    }

    /// Feeds `input` to a fresh decoder in pieces ending at `cuts`, the way reads deliver it,
    /// and returns the messages decoded until the first error.
    fn feed(
        input: &[u8],
        cuts: &[usize],
        message_bytes_max: usize,
    ) -> (Vec<Bytes>, Option<WireError>, MessageDecoder, BytesMut) {
        let mut decoder = MessageDecoder::new(message_bytes_max);
        let mut src = BytesMut::new();
        let mut messages = Vec::new();
        let mut ends: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        ends.push(input.len());
        ends.sort_unstable();
        let mut start = 0;
        for end in ends {
            src.extend_from_slice(&input[start..end]);
            start = end;
            loop {
                match decoder.decode(&mut src) {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(err) => return (messages, Some(err), decoder, src),
                }
            }
        }
        (messages, None, decoder, src)
    }

    #[test]
    fn a_frame_round_trips_through_its_header() {
        for (payload_bytes, last) in [(0, true), (1, false), (FRAME_PAYLOAD_BYTES_MAX, true), (77, false)] {
            let header = FrameHeader { payload_bytes, last };
            assert_eq!(FrameHeader::peek(&header.to_bytes()), Ok(Some(header)));
        }
        let mut src = BytesMut::new();
        src.extend_from_slice(&FrameHeader { payload_bytes: 3, last: false }.to_bytes());
        src.extend_from_slice(b"abcde");
        let frame = decode_frame(&mut src).unwrap().unwrap();
        assert_eq!(frame, Frame { last: false, payload: Bytes::from_static(b"abc") });
        assert_eq!(&src[..], b"de");
    }

    #[test]
    fn a_partial_frame_needs_more_bytes_and_reserves_only_that_frame() {
        let mut src = BytesMut::from(&header(1000, FLAG_LAST)[..3]);
        assert_eq!(decode_frame(&mut src), Ok(None));
        src.extend_from_slice(&header(1000, FLAG_LAST)[3..]);
        src.extend_from_slice(&[7; 10]);
        assert_eq!(decode_frame(&mut src), Ok(None));
        assert!(src.capacity() >= FRAME_HEADER_BYTES + 1000);
        assert!(src.capacity() <= 2 * (FRAME_HEADER_BYTES + 1000));
        assert_eq!(src.len(), FRAME_HEADER_BYTES + 10, "nothing consumed while waiting");
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_the_buffer_grows() {
        let mut src = BytesMut::from(&header(u32::MAX, FLAG_MORE)[..]);
        let capacity = src.capacity();
        assert_eq!(decode_frame(&mut src), Err(WireError::FrameTooLong { payload_bytes: u32::MAX as usize }));
        assert_eq!(src.capacity(), capacity);
        let over = FRAME_PAYLOAD_BYTES_MAX as u32 + 1;
        let err = MessageDecoder::default().decode(&mut BytesMut::from(&header(over, FLAG_LAST)[..]));
        assert_eq!(err, Err(WireError::FrameTooLong { payload_bytes: over as usize }));
        assert_eq!(err.unwrap_err().reason(), "oversized");
    }

    #[test]
    fn unknown_flags_and_empty_frames_announcing_more_are_malformed() {
        let err = decode_frame(&mut BytesMut::from(&header(4, 2)[..])).unwrap_err();
        assert_eq!(err, WireError::UnknownFlags(2));
        assert_eq!(err.reason(), "malformed");
        assert_eq!(decode_frame(&mut BytesMut::from(&header(0, FLAG_MORE)[..])), Err(WireError::EmptyFrame));
        assert_eq!(
            decode_frame(&mut BytesMut::from(&header(0, FLAG_LAST)[..])),
            Ok(Some(Frame { last: true, payload: Bytes::new() }))
        );
    }

    #[test]
    fn a_message_is_cut_into_full_frames_and_a_last_one() {
        let message = pattern(2 * FRAME_PAYLOAD_BYTES_MAX + 5, 1);
        let cut: Vec<(usize, bool)> = frames(&message).map(|(h, chunk)| (chunk.len(), h.last)).collect();
        assert_eq!(cut, [(FRAME_PAYLOAD_BYTES_MAX, false), (FRAME_PAYLOAD_BYTES_MAX, false), (5, true)]);
        let exact = pattern(FRAME_PAYLOAD_BYTES_MAX, 2);
        assert_eq!(frames(&exact).map(|(h, _)| h.last).collect::<Vec<_>>(), [true]);
        let empty: Vec<_> = frames(&[]).collect();
        assert_eq!(empty, [(FrameHeader { payload_bytes: 0, last: true }, &[][..])]);
    }

    #[test]
    fn messages_round_trip_through_frames_one_after_another() {
        let messages = [pattern(0, 0), pattern(10, 1), pattern(FRAME_PAYLOAD_BYTES_MAX + 1, 2), pattern(3, 3)];
        let mut input = BytesMut::new();
        for message in &messages {
            encode_frames(message, &mut input);
        }
        let (decoded, err, decoder, rest) = feed(&input, &[], MESSAGE_BYTES_MAX);
        assert_eq!(err, None);
        assert_eq!(decoded, messages.map(Bytes::from));
        assert!(decoder.is_idle());
        assert!(rest.is_empty());
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_the_header_of_the_frame_that_crosses_it() {
        let limit = FRAME_PAYLOAD_BYTES_MAX + 10;
        let mut input = BytesMut::new();
        encode_frames(&pattern(FRAME_PAYLOAD_BYTES_MAX, 0), &mut input);
        input[FRAME_HEADER_BYTES - 1] = FLAG_MORE;
        input.extend_from_slice(&header(11, FLAG_LAST));
        let (decoded, err, decoder, _) = feed(&input, &[], limit);
        assert!(decoded.is_empty());
        assert_eq!(err, Some(WireError::MessageTooLong { message_bytes: limit + 1, limit_bytes: limit }));
        assert!(decoder.buffered_bytes() <= limit);
        // Exactly at the limit is fine.
        input.truncate(input.len() - FRAME_HEADER_BYTES);
        input.extend_from_slice(&header(10, FLAG_LAST));
        input.extend_from_slice(&[9; 10]);
        let (decoded, err, decoder, _) = feed(&input, &[], limit);
        assert_eq!(err, None);
        assert_eq!(decoded[0].len(), limit);
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn the_end_of_a_stream_inside_a_message_is_visible() {
        let mut input = BytesMut::new();
        encode_frames(&pattern(FRAME_PAYLOAD_BYTES_MAX + 1, 0), &mut input);
        let cut = FRAME_BYTES_MAX + 2;
        let (decoded, err, decoder, rest) = feed(&input[..cut], &[], MESSAGE_BYTES_MAX);
        assert!(decoded.is_empty() && err.is_none());
        assert!(!decoder.is_idle(), "one frame of the message is held");
        assert_eq!(rest.len(), 2);
    }

    fn requests() -> Vec<Request> {
        let block = Bytes::from(pattern(FRAME_PAYLOAD_BYTES_MAX + 3, 5));
        let version = Version { hlc: 1_700_000_000_000_000, node: NodeId(u128::MAX - 7) };
        let entry = DirEntry { version, kind: EntryKind::File, tombstone: false, size: 12 };
        vec![
            Request::Block(BlockRpc::Put { hash: BlockHash::of(&block), bytes: block.clone() }),
            Request::Block(BlockRpc::Get(BlockHash::of(b"x"))),
            Request::Record(RecordRpc::Read(RecordKey::Entry { dir: "/a".into(), name: "b".into() })),
            Request::Record(RecordRpc::Merge(vec![
                RecordUpdate::File("/a/b".into(), FileRecord { version, meta: None }),
                RecordUpdate::Dir("/a".into(), DirRecord { children: [("b".to_string(), entry)].into() }),
            ])),
        ]
    }

    #[test]
    fn requests_and_replies_round_trip_through_messages_and_frames() {
        for request in requests() {
            let message = encode_message(&request).unwrap();
            let mut input = BytesMut::new();
            encode_frames(&message, &mut input);
            let (decoded, err, _, _) = feed(&input, &[3, 100, FRAME_BYTES_MAX + 1], MESSAGE_BYTES_MAX);
            assert_eq!(err, None);
            assert_eq!(decode_message::<Request>(&decoded[0]), Ok(request));
        }
        let replies = [
            Reply::Durable,
            Reply::Block(Some(Bytes::from(pattern(100, 1)))),
            Reply::Block(None),
            Reply::Value(RecordValue::Dir(None)),
        ];
        for reply in replies {
            assert_eq!(decode_message::<Reply>(&encode_message(&reply).unwrap()), Ok(reply));
        }
    }

    #[test]
    fn block_bytes_are_encoded_as_one_byte_string() {
        let block = Bytes::from(pattern(1000, 0));
        let message = encode_message(&Reply::Block(Some(block))).unwrap();
        // Variant, option tag, varint length (3 bytes), then the bytes themselves.
        assert_eq!(message.len(), 1 + 1 + 3 + 1000);
    }

    #[test]
    fn trailing_bytes_and_hostile_lengths_inside_a_message_are_refused() {
        let mut message = encode_message(&Reply::Durable).unwrap();
        message.push(0);
        assert!(matches!(decode_message::<Reply>(&message), Err(WireError::Malformed(_))));
        // Reply::Block(Some(..)) claiming 2^60 bytes.
        let mut hostile = vec![2, 1, 0xFD];
        hostile.put_u64_le(1 << 60);
        let err = decode_message::<Reply>(&hostile).unwrap_err();
        assert_eq!(err, WireError::ClaimTooLarge { limit_bytes: DECODE_CLAIM_BYTES_MAX });
        assert_eq!(err.reason(), "oversized");
    }

    #[test]
    fn a_message_over_the_limit_is_not_encoded() {
        let block = Bytes::from(vec![0; MESSAGE_BYTES_MAX]);
        let err = encode_message(&Reply::Block(Some(block))).unwrap_err();
        assert!(matches!(err, WireError::MessageTooLong { limit_bytes: MESSAGE_BYTES_MAX, .. }));
    }

    /// Bytes that are often close to valid: plausible frames (small lengths, sometimes a
    /// payload of the wrong size, sometimes unknown flags) among raw garbage, so the fuzzing
    /// reaches multi-frame messages and the message limit, not only the first header.
    fn arbitrary_input() -> impl Strategy<Value = Vec<u8>> {
        let frame = (0..600u32, prop_oneof![Just(FLAG_LAST), Just(FLAG_MORE), any::<u8>()], -2..=2i64).prop_map(
            |(length, flags, skew)| {
                let mut bytes = header(length, flags);
                let payload = (i64::from(length) + skew).max(0) as usize;
                bytes.extend(pattern(payload, flags));
                bytes
            },
        );
        let piece = prop_oneof![4 => frame, 1 => prop::collection::vec(any::<u8>(), 0..64)];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        // Messages of a megabyte and more: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn any_message_split_anywhere_round_trips(
            lengths in prop::collection::vec(
                prop_oneof![0..64usize, FRAME_PAYLOAD_BYTES_MAX - 2..FRAME_PAYLOAD_BYTES_MAX + 2],
                1..4,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let messages: Vec<Vec<u8>> =
                lengths.iter().enumerate().map(|(seed, &len)| pattern(len, seed as u8)).collect();
            let mut input = BytesMut::new();
            for message in &messages {
                encode_frames(message, &mut input);
            }
            let (decoded, err, decoder, rest) = feed(&input, &cuts, MESSAGE_BYTES_MAX);
            prop_assert_eq!(err, None);
            prop_assert_eq!(decoded, messages.into_iter().map(Bytes::from).collect::<Vec<_>>());
            prop_assert!(decoder.is_idle() && rest.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_nor_allocate_past_the_limits(
            input in arbitrary_input(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            limit in 0..8192usize,
        ) {
            let (decoded, _, decoder, rest) = feed(&input, &cuts, limit);
            prop_assert!(decoder.buffered_bytes() <= limit);
            prop_assert!(decoded.iter().all(|message| message.len() <= limit));
            // At most the input plus room for one frame.
            prop_assert!(rest.capacity() <= 2 * (input.len() + FRAME_BYTES_MAX));
            for message in decoded {
                let _ = decode_message::<Request>(&message);
                let _ = decode_message::<Reply>(&message);
            }
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_request_or_an_error(input in prop::collection::vec(any::<u8>(), 0..512)) {
            // No panic, no abort on a hostile length: a value or an error.
            let _ = decode_message::<Request>(&input);
            let _ = decode_message::<Reply>(&input);
        }

        #[test]
        fn arbitrary_requests_round_trip(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            hlc in any::<u64>(),
            node in any::<u128>(),
            path in "/[a-z]{0,12}",
        ) {
            let version = Version { hlc, node: NodeId(node) };
            let bytes = Bytes::from(bytes);
            let requests = [
                Request::Block(BlockRpc::Put { hash: BlockHash::of(&bytes), bytes }),
                Request::Record(RecordRpc::Merge(vec![RecordUpdate::File(path.clone(), FileRecord { version, meta: None })])),
                Request::Record(RecordRpc::Read(RecordKey::Dir(path))),
            ];
            for request in requests {
                prop_assert_eq!(decode_message::<Request>(&encode_message(&request).unwrap()), Ok(request));
            }
        }
    }
}
