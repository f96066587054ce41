//! Engine.IO protocol v4 packet codec: WebSocket frames and long-polling bodies in, packets out,
//! and back.
//!
//! This module owns the wire format only: the packet-type digits `0`..`6`, the `b` + base64 form
//! of binary messages over polling, the `0x1e` record separator between packets of a polling body
//! and the handshake (open packet) JSON. It does no I/O, keeps no state and reads no clock;
//! heartbeats, sessions and transports live elsewhere.
//!
//! Invariants:
//! - Decoding never panics, whatever the input; every malformed input is a [`DecodeError`].
//! - A decoded [`Payload::Text`] (and the data of `Open`, `Ping`, `Pong`) is valid UTF-8 and is a
//!   slice of the input (no copy).
//! - Decoding the output of [`Packet::encode`] (or of [`encode_payload`]) gives back the same
//!   packets, except that `Close`, `Upgrade` and `Noop` drop any data a peer appended to them.
//! - [`payload_len`] is exactly the number of bytes [`encode_payload`] writes.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{BufMut, Bytes, BytesMut};

/// Separates the packets of a long-polling body.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Encodes binary messages in polling bodies: standard alphabet, padded.
const BASE64_ENCODE: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Decodes binary messages in polling bodies. Clients differ (browsers pad, some libraries do
/// not, Node's decoder ignores stray trailing bits), so accept all of those forms.
const BASE64_DECODE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The seven Engine.IO packet types, written as the digits `'0'`..`'6'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: handshake, sent by the server when a session opens.
    Open,
    /// `1`: the session is closing.
    Close,
    /// `2`: heartbeat request (server to client), or upgrade probe (`2probe`, client to server).
    Ping,
    /// `3`: heartbeat answer, or upgrade probe answer (`3probe`).
    Pong,
    /// `4`: an application message (text); binary messages have no digit.
    Message,
    /// `5`: the client has switched to the upgraded transport.
    Upgrade,
    /// `6`: no-op, used to release a pending poll during an upgrade.
    Noop,
}

impl PacketType {
    /// The type whose digit is `byte`, if any.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    /// The digit this type is written as.
    pub const fn as_byte(self) -> u8 {
        match self {
            Self::Open => b'0',
            Self::Close => b'1',
            Self::Ping => b'2',
            Self::Pong => b'3',
            Self::Message => b'4',
            Self::Upgrade => b'5',
            Self::Noop => b'6',
        }
    }
}

/// One decoded packet. Text payloads are guaranteed UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Handshake; holds the JSON text after the digit.
    Open(Bytes),
    /// Close. Any data after the digit is ignored.
    Close,
    /// Ping with its (possibly empty) data, e.g. `probe`.
    Ping(Bytes),
    /// Pong with its (possibly empty) data, e.g. `probe`.
    Pong(Bytes),
    /// An application message.
    Message(Payload),
    /// Upgrade. Any data after the digit is ignored.
    Upgrade,
    /// No-op. Any data after the digit is ignored.
    Noop,
}

impl Packet {
    /// This packet's type.
    pub const fn kind(&self) -> PacketType {
        match self {
            Self::Open(_) => PacketType::Open,
            Self::Close => PacketType::Close,
            Self::Ping(_) => PacketType::Ping,
            Self::Pong(_) => PacketType::Pong,
            Self::Message(_) => PacketType::Message,
            Self::Upgrade => PacketType::Upgrade,
            Self::Noop => PacketType::Noop,
        }
    }

    /// Encodes the packet as one WebSocket frame: `Message(Binary)` becomes [`Frame::Binary`]
    /// (no prefix), everything else a [`Frame::Text`] starting with the type digit.
    pub fn encode(&self) -> Frame {
        let data: &[u8] = match self {
            Self::Message(Payload::Binary(bytes)) => return Frame::binary(bytes.clone()),
            Self::Close => return Frame::close(),
            Self::Upgrade => return Frame::upgrade(),
            Self::Noop => return Frame::noop(),
            Self::Open(data) | Self::Ping(data) | Self::Pong(data) => data,
            Self::Message(Payload::Text(text)) => text,
        };
        let mut out = BytesMut::with_capacity(1 + data.len());
        out.put_u8(self.kind().as_byte());
        out.put_slice(data);
        Frame::text(out.freeze())
    }
}

/// A message's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A text message; always valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Payload {
    /// The text of a `Text` payload, or `None` for `Binary`. Decoded text is valid UTF-8, so this
    /// returns `None` for `Text` only if the value was built elsewhere from bad bytes; it costs
    /// one validation pass.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(bytes) => std::str::from_utf8(bytes).ok(),
            Self::Binary(_) => None,
        }
    }
}

/// One encoded frame as it goes on a WebSocket: Text holds the full text frame including the
/// packet-type digit (e.g. b"4hello", b"2", b"3probe"); Binary is a raw binary message (no prefix).
///
/// Each frame also says whether it may be compressed ([`Compress`]): Node's
/// `socket.compress(false)` marks one emit's packets, and the flag has to reach the WebSocket
/// writer and the polling response, which see only queued frames. It lives in the variants
/// rather than in a wrapper around `Frame` because a wrapper would cost every queued frame 8
/// bytes: `Bytes` is 32 bytes with no niche for a tag, so the enum already spends 8 bytes on its
/// tag, and the one-byte flag fits in their padding (`size_of::<Frame>()` stays 40, checked by
/// a test). A tuple field rather than two more variants, so that every `match` and `let ... else`
/// on a frame still sees exactly Text and Binary and the compiler points at each one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame, type digit included.
    Text(Bytes, Compress),
    /// A binary message, sent as-is over WebSocket and as `b` + base64 over polling.
    Binary(Bytes, Compress),
}

/// Whether a frame may be compressed (permessage-deflate on WebSocket, gzip or deflate of the
/// polling body), as Node's per-packet `options.compress`. Compression also needs the transport
/// to have agreed to it and the frame (or body) to reach its threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compress {
    /// The default: compressed when the transport's rules say so.
    #[default]
    Allowed,
    /// Never compressed: the emitter asked for `compress(false)`.
    Off,
}

impl Compress {
    /// `Allowed` for `true`, `Off` for `false`.
    pub const fn from_allowed(allowed: bool) -> Self {
        if allowed { Self::Allowed } else { Self::Off }
    }

    /// Whether compression is allowed.
    pub const fn allowed(self) -> bool {
        matches!(self, Self::Allowed)
    }
}

impl Frame {
    /// A text frame that may be compressed. `bytes` must start with a type digit.
    pub const fn text(bytes: Bytes) -> Self {
        Self::Text(bytes, Compress::Allowed)
    }

    /// A binary frame that may be compressed.
    pub const fn binary(bytes: Bytes) -> Self {
        Self::Binary(bytes, Compress::Allowed)
    }

    /// A text frame over static bytes (no allocation). The bytes must start with a type digit.
    pub const fn text_static(bytes: &'static [u8]) -> Self {
        Self::text(Bytes::from_static(bytes))
    }

    /// `2`: a heartbeat ping.
    pub const fn ping() -> Self {
        Self::text_static(b"2")
    }

    /// `3`: a heartbeat pong.
    pub const fn pong() -> Self {
        Self::text_static(b"3")
    }

    /// `3probe`: the answer to an upgrade probe.
    pub const fn pong_probe() -> Self {
        Self::text_static(b"3probe")
    }

    /// `1`: close.
    pub const fn close() -> Self {
        Self::text_static(b"1")
    }

    /// `5`: upgrade.
    pub const fn upgrade() -> Self {
        Self::text_static(b"5")
    }

    /// `6`: no-op.
    pub const fn noop() -> Self {
        Self::text_static(b"6")
    }

    /// The frame's bytes as they go on a WebSocket (before base64 for polling).
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the frame has no bytes at all (never true for an encoded packet).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The frame's bytes as they go on a WebSocket.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Self::Text(bytes, _) | Self::Binary(bytes, _) => bytes,
        }
    }

    /// Whether this frame may be compressed.
    pub const fn compress(&self) -> Compress {
        match self {
            Self::Text(_, c) | Self::Binary(_, c) => *c,
        }
    }

    /// Sets whether this frame may be compressed.
    pub fn set_compress(&mut self, compress: Compress) {
        match self {
            Self::Text(_, c) | Self::Binary(_, c) => *c = compress,
        }
    }

    /// This frame with its compression flag set to `compress`.
    #[must_use]
    pub fn with_compress(mut self, compress: Compress) -> Self {
        self.set_compress(compress);
        self
    }

    /// The size of this frame inside a polling body, separator excluded.
    fn polling_len(&self) -> usize {
        match self {
            Self::Text(bytes, _) => bytes.len(),
            Self::Binary(bytes, _) => 1 + base64_len(bytes.len()),
        }
    }
}

/// Why a frame or polling body could not be decoded. Engine.IO frames arrive whole, so there is
/// no "need more bytes" case here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (or the whole polling body) has no bytes, so no type digit.
    #[error("empty packet")]
    Empty,
    /// The first byte is not a packet-type digit `0`..`6`.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// A text packet is not valid UTF-8.
    #[error("text packet is not valid UTF-8")]
    InvalidUtf8,
    /// A `b`-prefixed polling segment is not valid base64.
    #[error("binary packet is not valid base64")]
    InvalidBase64,
}

/// Decodes a WebSocket text frame, or one polling segment that is not `b`-prefixed.
///
/// The whole frame must be valid UTF-8, start with a type digit, and may carry data after it.
pub fn decode_text(frame: Bytes) -> Result<Packet, DecodeError> {
    let (&first, _) = frame.split_first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_byte(first).ok_or(DecodeError::UnknownType(first))?;
    std::str::from_utf8(&frame).map_err(|_| DecodeError::InvalidUtf8)?;
    let data = frame.slice(1..);
    Ok(match kind {
        PacketType::Open => Packet::Open(data),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data),
        PacketType::Pong => Packet::Pong(data),
        PacketType::Message => Packet::Message(Payload::Text(data)),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a WebSocket text frame as Node's engine.io does: like one polling segment, so a
/// `b`-prefixed frame is base64 for a binary message (what a client with `forceBase64` sends
/// over WebSocket), anything else as [`decode_text`].
pub fn decode_ws_text(frame: Bytes) -> Result<Packet, DecodeError> {
    decode_segment(frame)
}

/// Decodes a WebSocket binary frame: always a binary message.
pub fn decode_binary(frame: Bytes) -> Packet {
    Packet::Message(Payload::Binary(frame))
}

/// Decodes a long-polling POST body: segments separated by [`RECORD_SEPARATOR`], each decoded
/// like [`decode_text`] unless it starts with `b`, in which case the rest is base64 for a binary
/// message. Any bad segment (an empty one included) fails the whole body.
pub fn decode_payload(body: &Bytes) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut start = 0;
    while start <= body.len() {
        let end = body[start..]
            .iter()
            .position(|&b| b == RECORD_SEPARATOR)
            .map_or(body.len(), |i| start + i);
        let segment = body.slice(start..end);
        packets.push(decode_segment(segment)?);
        start = end + 1;
    }
    Ok(packets)
}

fn decode_segment(segment: Bytes) -> Result<Packet, DecodeError> {
    match segment.strip_prefix(b"b") {
        Some(encoded) => BASE64_DECODE
            .decode(encoded)
            .map(|bin| decode_binary(Bytes::from(bin)))
            .map_err(|_| DecodeError::InvalidBase64),
        None => decode_text(segment),
    }
}

/// Writes a long-polling response body: the frames joined by [`RECORD_SEPARATOR`], binary ones
/// as `b` + base64. Appends to `out`; call `out.reserve(payload_len(..))` first to allocate once.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut BytesMut) {
    let mut first = true;
    for frame in frames {
        if !first {
            out.put_u8(RECORD_SEPARATOR);
        }
        first = false;
        match frame {
            Frame::Text(text, _) => out.put_slice(text),
            Frame::Binary(bin, _) => {
                out.put_u8(b'b');
                let start = out.len();
                out.resize(start + base64_len(bin.len()), 0);
                let written = BASE64_ENCODE
                    .encode_slice(bin, &mut out[start..])
                    .expect("the slice was sized with base64_len");
                debug_assert_eq!(written, base64_len(bin.len()));
            }
        }
    }
}

/// The exact number of bytes [`encode_payload`] writes for these frames.
pub fn payload_len<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> usize {
    let (count, bytes) = frames.into_iter().fold((0usize, 0usize), |(n, len), f| {
        (n + 1, len + f.polling_len())
    });
    bytes + count.saturating_sub(1)
}

/// Padded base64 length of `n` bytes.
const fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The fields of the open packet the server sends when a session starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// The session id.
    pub sid: &'a str,
    /// Transports the client may upgrade to (`["websocket"]` over polling, `[]` over WebSocket).
    pub upgrades: &'a [&'a str],
    /// Milliseconds between server pings.
    pub ping_interval_ms: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout_ms: u64,
    /// Largest body or message, in bytes, the server accepts.
    pub max_payload: u64,
}

impl Handshake<'_> {
    /// The open packet: `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`,
    /// exactly these keys in this order, compact JSON, strings escaped.
    pub fn encode(&self) -> Frame {
        let mut out = BytesMut::with_capacity(96 + self.sid.len());
        out.put_slice(b"0{\"sid\":");
        write_json_str(&mut out, self.sid);
        out.put_slice(b",\"upgrades\":[");
        for (i, upgrade) in self.upgrades.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            write_json_str(&mut out, upgrade);
        }
        out.put_slice(b"],\"pingInterval\":");
        put_decimal(&mut out, self.ping_interval_ms);
        out.put_slice(b",\"pingTimeout\":");
        put_decimal(&mut out, self.ping_timeout_ms);
        out.put_slice(b",\"maxPayload\":");
        put_decimal(&mut out, self.max_payload);
        out.put_u8(b'}');
        Frame::text(out.freeze())
    }
}

fn write_json_str(out: &mut BytesMut, s: &str) {
    serde_json::to_writer(out.writer(), s).expect("serializing a str into memory cannot fail");
}

/// Appends `n` in decimal. Shared with the Socket.IO encoder.
pub(crate) fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn msg(s: &'static str) -> Packet {
        Packet::Message(Payload::Text(text(s)))
    }

    fn bin(b: &'static [u8]) -> Packet {
        Packet::Message(Payload::Binary(Bytes::from_static(b)))
    }

    #[test]
    fn a_base64_text_frame_over_websocket_is_a_binary_message() {
        assert_eq!(decode_ws_text(text("bAQID")), Ok(bin(&[1, 2, 3])));
        assert_eq!(decode_ws_text(text("4hi")), Ok(msg("hi")));
        assert_eq!(decode_ws_text(text("b!!")), Err(DecodeError::InvalidBase64));
        assert_eq!(
            decode_ws_text(text("7")),
            Err(DecodeError::UnknownType(b'7'))
        );
    }

    #[test]
    fn decode_text_vectors() {
        // From the Engine.IO v4 protocol document's packet table and examples.
        let table: &[(&[u8], Result<Packet, DecodeError>)] = &[
            (
                b"0{\"sid\":\"x\"}",
                Ok(Packet::Open(text("{\"sid\":\"x\"}"))),
            ),
            (b"1", Ok(Packet::Close)),
            (b"2", Ok(Packet::Ping(Bytes::new()))),
            (b"2probe", Ok(Packet::Ping(text("probe")))),
            (b"3", Ok(Packet::Pong(Bytes::new()))),
            (b"3probe", Ok(Packet::Pong(text("probe")))),
            (b"4", Ok(msg(""))),
            (b"4hello", Ok(msg("hello"))),
            (b"4\xc3\xa9t\xc3\xa9", Ok(msg("\u{e9}t\u{e9}"))),
            (b"5", Ok(Packet::Upgrade)),
            (b"6", Ok(Packet::Noop)),
            (b"1junk", Ok(Packet::Close)),
            (b"", Err(DecodeError::Empty)),
            (b"7", Err(DecodeError::UnknownType(b'7'))),
            (b"abc", Err(DecodeError::UnknownType(b'a'))),
            (b"bAQID", Err(DecodeError::UnknownType(b'b'))),
            (b"4\xff", Err(DecodeError::InvalidUtf8)),
            (b"4\xc3", Err(DecodeError::InvalidUtf8)),
        ];
        for (input, want) in table {
            let got = decode_text(Bytes::copy_from_slice(input));
            assert_eq!(&got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn decode_binary_is_a_message() {
        assert_eq!(
            decode_binary(Bytes::from_static(&[1, 2, 3])),
            bin(&[1, 2, 3])
        );
        assert_eq!(decode_binary(Bytes::new()), bin(&[]));
    }

    #[test]
    fn decode_payload_vectors() {
        type Case = (&'static [u8], Result<Vec<Packet>, DecodeError>);
        let table: &[Case] = &[
            // The spec's example bodies.
            (b"4hello\x1e4world", Ok(vec![msg("hello"), msg("world")])),
            (
                b"4hello\x1ebAQIDBA==",
                Ok(vec![msg("hello"), bin(&[1, 2, 3, 4])]),
            ),
            (b"bAQIDBA==", Ok(vec![bin(&[1, 2, 3, 4])])),
            (b"bAQIDBA", Ok(vec![bin(&[1, 2, 3, 4])])),
            (b"b", Ok(vec![bin(&[])])),
            (b"1", Ok(vec![Packet::Close])),
            (
                b"2probe\x1e6",
                Ok(vec![Packet::Ping(text("probe")), Packet::Noop]),
            ),
            (b"", Err(DecodeError::Empty)),
            (b"\x1e", Err(DecodeError::Empty)),
            (b"4a\x1e", Err(DecodeError::Empty)),
            (b"4a\x1e\x1e4b", Err(DecodeError::Empty)),
            (b"4a\x1eabc", Err(DecodeError::UnknownType(b'a'))),
            (b"b!!!!", Err(DecodeError::InvalidBase64)),
            (b"bAQIDB", Err(DecodeError::InvalidBase64)),
            (b"4\xff\x1e4a", Err(DecodeError::InvalidUtf8)),
        ];
        for (input, want) in table {
            let got = decode_payload(&Bytes::copy_from_slice(input));
            assert_eq!(&got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn encode_vectors() {
        let table: &[(Packet, Frame)] = &[
            (Packet::Open(text("{}")), Frame::text_static(b"0{}")),
            (Packet::Close, Frame::close()),
            (Packet::Ping(Bytes::new()), Frame::ping()),
            (Packet::Ping(text("probe")), Frame::text_static(b"2probe")),
            (Packet::Pong(Bytes::new()), Frame::pong()),
            (Packet::Pong(text("probe")), Frame::pong_probe()),
            (msg("hello"), Frame::text_static(b"4hello")),
            (
                bin(&[1, 2, 3]),
                Frame::binary(Bytes::from_static(&[1, 2, 3])),
            ),
            (Packet::Upgrade, Frame::upgrade()),
            (Packet::Noop, Frame::noop()),
        ];
        for (packet, want) in table {
            assert_eq!(&packet.encode(), want, "packet {packet:?}");
        }
    }

    #[test]
    fn encode_payload_vectors() {
        let table: &[(Vec<Frame>, &[u8])] = &[
            (vec![], b""),
            (vec![Frame::text_static(b"4hello")], b"4hello"),
            (
                vec![Frame::text_static(b"4hello"), Frame::text_static(b"4world")],
                b"4hello\x1e4world",
            ),
            (
                vec![
                    Frame::text_static(b"4hello"),
                    Frame::binary(Bytes::from_static(&[1, 2, 3, 4])),
                ],
                b"4hello\x1ebAQIDBA==",
            ),
            (vec![Frame::binary(Bytes::new())], b"b"),
            (vec![Frame::ping(), Frame::noop()], b"2\x1e6"),
        ];
        for (frames, want) in table {
            let mut out = BytesMut::new();
            encode_payload(frames, &mut out);
            assert_eq!(&out[..], *want, "frames {frames:?}");
            assert_eq!(payload_len(frames), want.len(), "frames {frames:?}");
        }
    }

    #[test]
    fn encode_payload_appends() {
        let mut out = BytesMut::from(&b"xx"[..]);
        encode_payload(&[Frame::binary(Bytes::from_static(b"ab"))], &mut out);
        assert_eq!(&out[..], b"xxbYWI=");
    }

    #[test]
    fn handshake_vectors() {
        let table: &[(Handshake<'_>, &str)] = &[
            (
                Handshake {
                    sid: "lv_VI97HAXpY6yYWAAAC",
                    upgrades: &["websocket"],
                    ping_interval_ms: 300,
                    ping_timeout_ms: 200,
                    max_payload: 1_000_000,
                },
                r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#,
            ),
            (
                Handshake {
                    sid: "a\"b\\c\u{1}",
                    upgrades: &[],
                    ping_interval_ms: 25_000,
                    ping_timeout_ms: 0,
                    max_payload: u64::MAX,
                },
                r#"0{"sid":"a\"b\\c\u0001","upgrades":[],"pingInterval":25000,"pingTimeout":0,"maxPayload":18446744073709551615}"#,
            ),
        ];
        for (handshake, want) in table {
            let Frame::Text(got, _) = handshake.encode() else {
                panic!("handshake must be a text frame");
            };
            assert_eq!(std::str::from_utf8(&got), Ok(*want));
            // The JSON after the digit is valid and keeps its key order.
            let v: serde_json::Value = serde_json::from_slice(&got[1..]).expect("valid JSON");
            let keys: Vec<&str> = v
                .as_object()
                .expect("object")
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(
                keys,
                [
                    "sid",
                    "upgrades",
                    "pingInterval",
                    "pingTimeout",
                    "maxPayload"
                ]
            );
        }
    }

    #[test]
    fn the_compress_flag_costs_a_frame_nothing() {
        // Bytes (32) and the tag's word: the flag sits in the tag's padding.
        assert_eq!(std::mem::size_of::<Frame>(), 40);
        let off = Frame::text_static(b"4x").with_compress(Compress::Off);
        assert_eq!(off, Frame::Text(Bytes::from_static(b"4x"), Compress::Off));
        assert!(!off.compress().allowed());
        assert!(Frame::binary(Bytes::new()).compress().allowed());
        assert_eq!(Compress::from_allowed(false), Compress::Off);
        // The flag does not change the wire bytes.
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        encode_payload(std::slice::from_ref(&off), &mut a);
        encode_payload(&[off.with_compress(Compress::Allowed)], &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn frame_helpers() {
        assert_eq!(Frame::ping().len(), 1);
        assert_eq!(Frame::pong_probe().bytes(), &Bytes::from_static(b"3probe"));
        assert!(!Frame::noop().is_empty());
        assert!(Frame::binary(Bytes::new()).is_empty());
        assert_eq!(Payload::Text(text("hé")).text(), Some("hé"));
        assert_eq!(Payload::Binary(text("x")).text(), None);
        for b in 0..=255u8 {
            if let Some(t) = PacketType::from_byte(b) {
                assert_eq!(t.as_byte(), b);
            }
        }
    }

    use crate::testing::Rng;

    impl Rng {
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }

        fn text(&mut self, max: usize) -> String {
            const CHARS: &[char] = &[
                'a',
                'Z',
                '0',
                ' ',
                '"',
                '\u{1e}',
                '\u{e9}',
                '\u{1f600}',
                'b',
                '\n',
            ];
            let len = self.below(max + 1);
            (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect()
        }

        fn packet(&mut self) -> Packet {
            let data = Bytes::from(self.text(12));
            match self.below(8) {
                0 => Packet::Open(data),
                1 => Packet::Close,
                2 => Packet::Ping(data),
                3 => Packet::Pong(data),
                4 => Packet::Message(Payload::Text(data)),
                5 => Packet::Message(Payload::Binary(Bytes::from(self.bytes(12)))),
                6 => Packet::Upgrade,
                _ => Packet::Noop,
            }
        }
    }

    #[test]
    fn websocket_round_trip() {
        let mut rng = Rng::seeded(0x5eed_0001);
        for _ in 0..2000 {
            let packet = rng.packet();
            let decoded = match packet.encode() {
                Frame::Text(t, _) => decode_text(t),
                Frame::Binary(b, _) => Ok(decode_binary(b)),
            };
            assert_eq!(decoded, Ok(packet));
        }
    }

    #[test]
    fn polling_round_trip() {
        let mut rng = Rng::seeded(0x5eed_0002);
        for _ in 0..1000 {
            // Text segments may not contain the separator; generate them without it.
            let packets: Vec<Packet> = (0..1 + rng.below(5))
                .map(|_| loop {
                    let p = rng.packet();
                    let has_sep = matches!(&p, Packet::Open(d) | Packet::Ping(d) | Packet::Pong(d)
                        | Packet::Message(Payload::Text(d)) if d.contains(&RECORD_SEPARATOR));
                    if !has_sep {
                        break p;
                    }
                })
                .collect();
            let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
            let mut body = BytesMut::new();
            encode_payload(&frames, &mut body);
            assert_eq!(body.len(), payload_len(&frames));
            assert_eq!(decode_payload(&body.freeze()), Ok(packets));
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        let mut rng = Rng::seeded(0x5eed_0003);
        for _ in 0..5000 {
            let mut raw = rng.bytes(16);
            if let Some(first) = raw.first_mut() {
                *first = b"0123456b\x1e"[rng.below(9)];
            }
            let body = Bytes::from(raw);
            let _ = decode_text(body.clone());
            if let Ok(packets) = decode_payload(&body) {
                assert!(!packets.is_empty());
            }
        }
    }
}
