//! RFC 6455 WebSocket frame codec for our own WebSocket I/O loop (the HTTP upgrade handshake is
//! done elsewhere).
//!
//! Why hand-written rather than fastwebsockets' frame I/O (the gateway still uses fastwebsockets
//! for the upgrade handshake): memory and syscalls per connection, which are measured.
//! fastwebsockets keeps an 8 KiB read buffer for a connection's whole life and writes frame by
//! frame. With this codec the caller keeps no buffer while a connection is idle and writes
//! everything queued for a connection in one `write`. Measured with `scripts/bench-compare.sh`
//! (docs/benchmarks.md, 10 000 idle connections): 3.1–3.4 KB of server RSS per idle WebSocket
//! connection over the runs recorded there, against about 15.4 KB for Node's socket.io; that
//! buffer alone would be 8 192 B. At 10 msg/s to 1 000 members, 8.8–10.7 µs of server CPU per
//! delivery, 1.1–1.4× the cost of one small loopback `write` measured in the same run; about
//! 0.5 µs at saturation. The numbers are for the whole
//! gateway, not an A/B run against fastwebsockets; the hand-written codec stays because the
//! fastwebsockets buffer on its own would be more than the whole idle connection costs now.
//!
//! This module owns frame headers, masking, close payloads and the reassembly of fragmented
//! messages. It does no I/O and keeps no buffer of its own except while a fragmented message is
//! in progress; the caller owns the read buffer and hands slices of it in.
//!
//! Invariants:
//! - [`parse`] never panics and never reads or writes outside `buf`; on `Ok(Some(head))`,
//!   `head.header_len + head.payload_len <= buf.len()`.
//! - A header is rejected (including [`DecodeError::TooLarge`]) as soon as its bytes are present,
//!   so no payload of a refused frame is ever waited for or buffered.
//! - The only extension is permessage-deflate ([`crate::deflate`]): RSV1 is accepted only where
//!   the caller says it was negotiated ([`parse_with`]), and only on the first frame of a data
//!   message; RSV2 and RSV3 are always errors. A compressed message is inflated by the
//!   [`Assembler`] with the same size bound as an uncompressed one.
//! - Every [`Message::Text`] is valid UTF-8; every [`Message::Close`] code may be sent on the wire.

use std::borrow::Cow;

/// Largest payload of a control frame (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest possible frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const RSV1: u8 = 0x40;
const MASK: u8 = 0x80;

/// Frame opcodes (RFC 6455 section 5.2); the reserved ones are refused by [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// `0x0`: a later fragment of a data message.
    Continuation,
    /// `0x1`: a text message (or its first fragment).
    Text,
    /// `0x2`: a binary message (or its first fragment).
    Binary,
    /// `0x8`: close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl OpCode {
    /// Every opcode that is not reserved.
    pub const ALL: [Self; 6] = [
        Self::Continuation,
        Self::Text,
        Self::Binary,
        Self::Close,
        Self::Ping,
        Self::Pong,
    ];

    /// The opcode for these 4 bits, if it is not reserved.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4 bits this opcode is written as.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Which end of the connection we are; decides the masking rule for incoming frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the server: incoming frames MUST be masked (unmasked → error).
    Server,
    /// We are the client: incoming frames MUST NOT be masked.
    Client,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Whether this is the last frame of its message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// Bytes of header (including mask key) before the payload.
    pub header_len: usize,
    /// Bytes of payload after the header.
    pub payload_len: usize,
    /// RSV1: the message this frame starts is compressed (permessage-deflate).
    pub compressed: bool,
}

impl Head {
    /// `header_len + payload_len`: how many bytes of the buffer this frame occupies.
    pub const fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a frame or message is refused. [`DecodeError::close_code`] gives the close code to send.
/// "Need more bytes" is not an error: [`parse`] returns `Ok(None)` for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// RSV1, RSV2 or RSV3 is set, but no extension was negotiated.
    #[error("reserved bits set")]
    ReservedBits,
    /// RSV1 (compressed) on a control frame or a continuation frame (RFC 7692 section 6).
    #[error("compressed bit on a control or continuation frame")]
    MisplacedCompressed,
    /// A compressed message is not valid deflate data (close with 1007, as Node's `ws`).
    #[error("invalid compressed data")]
    InvalidDeflate,
    /// The opcode is one of the reserved values.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A server received an unmasked frame.
    #[error("frame from client is not masked")]
    Unmasked,
    /// A client received a masked frame.
    #[error("frame from server is masked")]
    Masked,
    /// A control frame has FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame's payload is longer than 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A 64-bit payload length has its most significant bit set.
    #[error("invalid payload length")]
    InvalidLength,
    /// A frame or a reassembled message is larger than the allowed maximum (close with 1009).
    #[error("message too large")]
    TooLarge,
    /// A continuation frame arrived with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was in progress.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A text message or a close reason is not valid UTF-8 (close with 1007).
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A close payload of exactly one byte.
    #[error("close payload of one byte")]
    InvalidClosePayload,
    /// A close code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl DecodeError {
    /// The close code to answer this error with.
    pub const fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge => close_code::TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidDeflate => close_code::INVALID_DATA,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// Close codes we send.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_DATA: u16 = 1007;
    /// A policy was violated.
    pub const POLICY: u16 = 1008;
    /// A message was too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// Parses one frame at the start of `buf`. Ok(None) = need more bytes (distinct from invalid).
/// On success the payload, buf[header_len .. header_len+payload_len], has been UNMASKED IN PLACE.
/// Errors: reserved bits set (no extensions are negotiated), unknown opcode, masking rule of `role` violated,
/// control frame with fin=0 or payload > 125, 64-bit length with the top bit set, and payload_len > max_payload
/// (a distinct `TooLarge` variant, because the caller must close with 1009). Header must be fully
/// checked (including TooLarge) as soon as the header bytes are present, before the payload has arrived.
///
/// Because the payload is unmasked in place, call it once per frame and then consume the frame's
/// bytes; parsing the same bytes again would mask them back. Non-minimal length encodings are
/// accepted.
pub fn parse(buf: &mut [u8], role: Role, max_payload: usize) -> Result<Option<Head>, DecodeError> {
    parse_with(buf, role, max_payload, false)
}

/// [`parse`] on a connection where permessage-deflate was negotiated if `deflate`: RSV1 is then
/// accepted on the first frame of a data message ([`Head::compressed`]) and refused on control
/// and continuation frames ([`DecodeError::MisplacedCompressed`]). Without `deflate`, RSV1 is
/// [`DecodeError::ReservedBits`] as any reserved bit.
pub fn parse_with(
    buf: &mut [u8],
    role: Role,
    max_payload: usize,
    deflate: bool,
) -> Result<Option<Head>, DecodeError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let rsv = if deflate { RSV & !RSV1 } else { RSV };
    if b0 & rsv != 0 {
        return Err(DecodeError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(DecodeError::UnknownOpcode(b0 & 0x0F))?;
    let compressed = b0 & RSV1 != 0;
    if compressed && (opcode.is_control() || opcode == OpCode::Continuation) {
        return Err(DecodeError::MisplacedCompressed);
    }
    let fin = b0 & FIN != 0;
    let masked = b1 & MASK != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(DecodeError::Unmasked),
        (Role::Client, true) => return Err(DecodeError::Masked),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(DecodeError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(DecodeError::ControlTooLong);
        }
    }

    let (payload_len, len_end) = match len7 {
        126 => {
            let Some(bytes) = buf.get(2..4).and_then(|s| <[u8; 2]>::try_from(s).ok()) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes(bytes)), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
                return Ok(None);
            };
            let n = u64::from_be_bytes(bytes);
            if n >> 63 != 0 {
                return Err(DecodeError::InvalidLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let payload_len = usize::try_from(payload_len).map_err(|_| DecodeError::TooLarge)?;
    if payload_len > max_payload {
        return Err(DecodeError::TooLarge);
    }

    let header_len: usize = if masked { len_end + 4 } else { len_end };
    let Some(frame_len) = header_len.checked_add(payload_len) else {
        return Err(DecodeError::TooLarge);
    };
    if buf.len() < frame_len {
        return Ok(None);
    }
    if masked {
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[len_end..header_len]);
        apply_mask(&mut buf[header_len..frame_len], mask);
    }
    Ok(Some(Head {
        fin,
        opcode,
        header_len,
        payload_len,
        compressed,
    }))
}

/// XORs `data` with the repeating 4-byte `mask` (masking and unmasking are the same operation).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks of 8 keep the mask aligned, so the tail starts at mask index 0.
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Appends a frame header (server side: unmasked; FIN set) for a payload of `len` bytes.
pub fn write_head(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    write_header(out, true, opcode, len, None);
}

/// Appends a server frame header like [`write_head`], with RSV1 set: the `len` bytes that follow
/// are a permessage-deflate message ([`crate::deflate::Deflater::compress`]).
pub fn write_compressed_head(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let at = out.len();
    write_header(out, true, opcode, len, None);
    out[at] |= RSV1;
}

/// Appends a whole client frame with RSV1 set (masked with `mask` if given): for tests, fuzzing
/// and the load-test client. `fin` false starts a fragmented compressed message.
pub fn write_compressed_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let at = out.len();
    write_frame(out, fin, opcode, payload, mask);
    out[at] |= RSV1;
}

/// Appends a whole client frame (masked with `mask`) — used by the load-test client and tests.
pub fn write_masked(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    write_frame(out, true, opcode, payload, Some(mask));
}

/// Appends a whole frame with any FIN bit, masked when `mask` is given. Lets tests and the
/// load-test client send fragmented messages.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    write_header(out, fin, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

fn write_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, len: usize, mask: Option<[u8; 4]>) {
    out.push(if fin { FIN } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { MASK } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Close frame payload: 2-byte code + reason. The reason is cut (at a character boundary) so
/// the payload fits a control frame (125 bytes).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

/// Parses a received close payload: None for empty, error for 1 byte, invalid UTF-8 reason, or a code that may not be sent on the wire.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, DecodeError> {
    match payload {
        [] => Ok(None),
        [_] => Err(DecodeError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(DecodeError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Whether `code` may appear in a close frame: the codes RFC 6455 defines for the wire, the
/// IANA-registered 1012–1014, and the application ranges 3000–4999. 1004–1006 and 1015 are
/// reserved or only for local reporting.
pub const fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A complete message, as returned by [`Assembler::push`].
///
/// Data is `Cow::Borrowed` when the message was a single unfragmented frame: it is then exactly
/// the `payload` slice given to `push` (zero copy; a caller that owns the read buffer can split
/// those bytes off instead of copying them). It is `Cow::Owned` when it was reassembled from
/// fragments; the assembler gives that buffer away and keeps none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(Cow<'a, str>),
    /// A binary message.
    Binary(Cow<'a, [u8]>),
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// A close frame: code and reason, or `None` for an empty close payload.
    Close(Option<(u16, &'a str)>),
}

/// Reassembles fragmented messages. Holds no buffer unless a fragmented message is in progress.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    /// The message is compressed: `buf` holds deflate data, inflated (and its UTF-8 checked)
    /// once the last fragment is in.
    compressed: bool,
    buf: Vec<u8>,
    /// Prefix of `buf` already known to be valid UTF-8 (text only), so each byte is checked once
    /// and invalid text fails at the fragment that carries it.
    checked: usize,
}

impl Partial {
    /// Checks the newly appended text; a character cut at the end is fine until the last fragment.
    fn check_utf8(&mut self, last: bool) -> Result<(), DecodeError> {
        if !self.text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.buf[self.checked..]) {
            Ok(_) => {
                self.checked = self.buf.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !last => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(DecodeError::InvalidUtf8),
        }
    }
}

impl Assembler {
    /// Whether a fragmented message is in progress.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Feed one parsed frame (head + its unmasked payload). Returns a complete message when one is
    /// done (a single unfragmented data frame returns its payload without copying; fragments are
    /// accumulated in an owned Vec; control frames may arrive between fragments). Errors: continuation
    /// without a start, new data frame during a fragmented message, total message size > max_payload
    /// (TooLarge), invalid UTF-8 in a completed text message (InvalidUtf8 → close 1007).
    ///
    /// Invalid UTF-8 is reported as soon as a fragment makes it certain, not only at the end.
    /// After an error the message in progress is dropped.
    pub fn push<'a>(
        &'a mut self,
        head: Head,
        payload: &'a [u8],
        max_payload: usize,
    ) -> Result<Option<Message<'a>>, DecodeError> {
        self.push_inflating(head, payload, max_payload, None)
    }

    /// [`Self::push`] on a connection with permessage-deflate: a compressed message (RSV1 on its
    /// first frame) is inflated with `inflater` into an owned buffer, bounded by `max_payload`
    /// like any message ([`DecodeError::TooLarge`]); invalid deflate data is
    /// [`DecodeError::InvalidDeflate`]. Without an inflater, a compressed frame is
    /// [`DecodeError::ReservedBits`].
    pub fn push_inflating<'a>(
        &'a mut self,
        head: Head,
        payload: &'a [u8],
        max_payload: usize,
        inflater: Option<&mut crate::deflate::Inflater>,
    ) -> Result<Option<Message<'a>>, DecodeError> {
        let result = match (head.compressed, inflater) {
            (false, inflater) => self.assemble_with(head, payload, max_payload, inflater),
            (true, None) => Err(DecodeError::ReservedBits),
            (true, Some(inflater)) => {
                self.assemble_compressed(head, payload, max_payload, inflater)
            }
        };
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    /// The first frame of a compressed message: inflated now if it is the only one, else kept.
    fn assemble_compressed<'a>(
        &mut self,
        head: Head,
        payload: &[u8],
        max_payload: usize,
        inflater: &mut crate::deflate::Inflater,
    ) -> Result<Option<Message<'a>>, DecodeError> {
        let text = match head.opcode {
            OpCode::Text => true,
            OpCode::Binary => false,
            // `parse_with` refuses RSV1 on anything else.
            _ => return Err(DecodeError::MisplacedCompressed),
        };
        if self.partial.is_some() {
            return Err(DecodeError::ExpectedContinuation);
        }
        if payload.len() > max_payload {
            return Err(DecodeError::TooLarge);
        }
        if !head.fin {
            self.partial = Some(Partial {
                text,
                compressed: true,
                buf: payload.to_vec(),
                checked: 0,
            });
            return Ok(None);
        }
        inflated(text, payload, max_payload, inflater).map(Some)
    }

    /// [`Self::push_inflating`] without dropping the message in progress on error.
    fn assemble_with<'a>(
        &mut self,
        head: Head,
        payload: &'a [u8],
        max_payload: usize,
        inflater: Option<&mut crate::deflate::Inflater>,
    ) -> Result<Option<Message<'a>>, DecodeError> {
        let text = match head.opcode {
            OpCode::Ping => return Ok(Some(Message::Ping(payload))),
            OpCode::Pong => return Ok(Some(Message::Pong(payload))),
            OpCode::Close => return parse_close(payload).map(|c| Some(Message::Close(c))),
            OpCode::Text => true,
            OpCode::Binary => false,
            OpCode::Continuation => {
                let partial = self
                    .partial
                    .as_mut()
                    .ok_or(DecodeError::UnexpectedContinuation)?;
                if payload.len() > max_payload.saturating_sub(partial.buf.len()) {
                    return Err(DecodeError::TooLarge);
                }
                partial.buf.extend_from_slice(payload);
                partial.check_utf8(head.fin)?;
                if !head.fin {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("checked Some above");
                if partial.compressed {
                    // Only `push_inflating` starts a compressed message.
                    let inflater = inflater.ok_or(DecodeError::ReservedBits)?;
                    return inflated(partial.text, &partial.buf, max_payload, inflater).map(Some);
                }
                return Ok(Some(if partial.text {
                    let text =
                        String::from_utf8(partial.buf).map_err(|_| DecodeError::InvalidUtf8)?;
                    Message::Text(Cow::Owned(text))
                } else {
                    Message::Binary(Cow::Owned(partial.buf))
                }));
            }
        };
        if self.partial.is_some() {
            return Err(DecodeError::ExpectedContinuation);
        }
        if payload.len() > max_payload {
            return Err(DecodeError::TooLarge);
        }
        if head.fin {
            return Ok(Some(if text {
                let text = std::str::from_utf8(payload).map_err(|_| DecodeError::InvalidUtf8)?;
                Message::Text(Cow::Borrowed(text))
            } else {
                Message::Binary(Cow::Borrowed(payload))
            }));
        }
        let mut partial = Partial {
            text,
            compressed: false,
            buf: payload.to_vec(),
            checked: 0,
        };
        partial.check_utf8(false)?;
        self.partial = Some(partial);
        Ok(None)
    }
}

/// A whole compressed message, inflated into an owned message.
fn inflated<'a>(
    text: bool,
    data: &[u8],
    max_payload: usize,
    inflater: &mut crate::deflate::Inflater,
) -> Result<Message<'a>, DecodeError> {
    let mut out = Vec::new();
    inflater.inflate(data, max_payload, &mut out)?;
    Ok(if text {
        Message::Text(Cow::Owned(
            String::from_utf8(out).map_err(|_| DecodeError::InvalidUtf8)?,
        ))
    } else {
        Message::Binary(Cow::Owned(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn head(fin: bool, opcode: OpCode, header_len: usize, payload_len: usize) -> Head {
        Head {
            fin,
            opcode,
            header_len,
            payload_len,
            compressed: false,
        }
    }

    #[test]
    fn parse_rfc_examples() {
        // RFC 6455 section 5.7.
        let table: &[(&[u8], Role, Head, &[u8])] = &[
            // A single-frame unmasked text message.
            (
                &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
                Role::Client,
                head(true, OpCode::Text, 2, 5),
                b"Hello",
            ),
            // A single-frame masked text message.
            (
                &[
                    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ],
                Role::Server,
                head(true, OpCode::Text, 6, 5),
                b"Hello",
            ),
            // A fragmented unmasked text message.
            (
                &[0x01, 0x03, 0x48, 0x65, 0x6c],
                Role::Client,
                head(false, OpCode::Text, 2, 3),
                b"Hel",
            ),
            (
                &[0x80, 0x02, 0x6c, 0x6f],
                Role::Client,
                head(true, OpCode::Continuation, 2, 2),
                b"lo",
            ),
            // Unmasked ping, and masked pong, each with "Hello".
            (
                &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
                Role::Client,
                head(true, OpCode::Ping, 2, 5),
                b"Hello",
            ),
            (
                &[
                    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ],
                Role::Server,
                head(true, OpCode::Pong, 6, 5),
                b"Hello",
            ),
            // Empty masked close.
            (
                &[0x88, 0x80, 1, 2, 3, 4],
                Role::Server,
                head(true, OpCode::Close, 6, 0),
                b"",
            ),
        ];
        for (bytes, role, want, payload) in table {
            let mut buf = bytes.to_vec();
            let got = parse(&mut buf, *role, 1 << 20);
            assert_eq!(got, Ok(Some(*want)), "frame {bytes:02x?}");
            assert_eq!(&buf[want.header_len..want.frame_len()], *payload);
        }
        // 256 bytes binary message in a single unmasked frame, and 64 KiB.
        let mut buf = vec![0x82, 0x7E, 0x01, 0x00];
        buf.extend(std::iter::repeat_n(7, 256));
        assert_eq!(
            parse(&mut buf, Role::Client, 1 << 20),
            Ok(Some(head(true, OpCode::Binary, 4, 256)))
        );
        let mut buf = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        buf.extend(std::iter::repeat_n(7, 65536));
        assert_eq!(
            parse(&mut buf, Role::Client, 1 << 20),
            Ok(Some(head(true, OpCode::Binary, 10, 65536)))
        );
    }

    #[test]
    fn parse_errors() {
        use DecodeError::*;
        let table: &[(&[u8], Role, usize, DecodeError)] = &[
            (&[0xC1, 0x80], Role::Server, 100, ReservedBits),
            (&[0xA1, 0x80], Role::Server, 100, ReservedBits),
            (&[0x91, 0x80], Role::Server, 100, ReservedBits),
            (&[0x83, 0x80], Role::Server, 100, UnknownOpcode(3)),
            (&[0x87, 0x80], Role::Server, 100, UnknownOpcode(7)),
            (&[0x8B, 0x80], Role::Server, 100, UnknownOpcode(0xB)),
            (&[0x8F, 0x80], Role::Server, 100, UnknownOpcode(0xF)),
            (&[0x81, 0x00], Role::Server, 100, Unmasked),
            (&[0x81, 0x80], Role::Client, 100, Masked),
            (&[0x09, 0x80], Role::Server, 100, FragmentedControl),
            (&[0x08, 0x80], Role::Server, 100, FragmentedControl),
            (&[0x89, 0xFE], Role::Server, 1000, ControlTooLong),
            (&[0x8A, 0xFF], Role::Server, 1000, ControlTooLong),
            // Too large is known from the header alone: no payload, not even the mask key yet.
            (&[0x82, 0xE5], Role::Server, 100, TooLarge),
            (&[0x82, 0xFE, 0x00, 0x65], Role::Server, 100, TooLarge),
            (
                &[0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0],
                Role::Server,
                1 << 20,
                TooLarge,
            ),
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Role::Server,
                usize::MAX,
                InvalidLength,
            ),
        ];
        for (bytes, role, max, want) in table {
            let mut buf = bytes.to_vec();
            assert_eq!(
                parse(&mut buf, *role, *max),
                Err(*want),
                "frame {bytes:02x?}"
            );
        }
    }

    #[test]
    fn parse_needs_more() {
        // The largest legal length is not an error when the caller allows it, just a long wait.
        let mut huge = [0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let want = if usize::BITS >= 64 {
            Ok(None)
        } else {
            Err(DecodeError::TooLarge)
        };
        assert_eq!(parse(&mut huge, Role::Client, usize::MAX), want);

        let mut frame = Vec::new();
        write_masked(&mut frame, OpCode::Binary, &[9; 300], M);
        for cut in 0..frame.len() {
            let mut buf = frame[..cut].to_vec();
            assert_eq!(
                parse(&mut buf, Role::Server, 1000),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(
                buf,
                frame[..cut],
                "nothing unmasked before the frame is whole"
            );
        }
        let mut buf = frame.clone();
        buf.extend_from_slice(b"next frame");
        let h = parse(&mut buf, Role::Server, 1000)
            .expect("valid")
            .expect("whole");
        assert_eq!(h, head(true, OpCode::Binary, 8, 300));
        assert_eq!(&buf[8..308], &[9; 300][..]);
        assert_eq!(&buf[308..], b"next frame");
    }

    #[test]
    fn write_head_vectors() {
        let table: &[(OpCode, usize, &[u8])] = &[
            (OpCode::Text, 0, &[0x81, 0x00]),
            (OpCode::Text, 5, &[0x81, 0x05]),
            (OpCode::Binary, 125, &[0x82, 0x7D]),
            (OpCode::Binary, 126, &[0x82, 0x7E, 0x00, 0x7E]),
            (OpCode::Binary, 65535, &[0x82, 0x7E, 0xFF, 0xFF]),
            (OpCode::Binary, 65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
            (OpCode::Close, 2, &[0x88, 0x02]),
            (OpCode::Ping, 0, &[0x89, 0x00]),
            (OpCode::Pong, 5, &[0x8A, 0x05]),
        ];
        for (op, len, want) in table {
            let mut out = vec![0xEE];
            write_head(&mut out, *op, *len);
            assert_eq!(&out[1..], *want, "{op:?} {len}");
        }
    }

    #[test]
    fn write_masked_matches_rfc() {
        let mut out = Vec::new();
        write_masked(&mut out, OpCode::Text, b"Hello", M);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn close_payload_vectors() {
        assert_eq!(close_payload(1000, ""), [0x03, 0xE8]);
        assert_eq!(close_payload(1009, "too big"), b"\x03\xF1too big");
        let long = "é".repeat(100);
        let p = close_payload(1001, &long);
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(parse_close(&p), Ok(Some((1001, &long[..122]))));
    }

    #[test]
    fn parse_close_vectors() {
        use DecodeError::*;
        type Case = (
            &'static [u8],
            Result<Option<(u16, &'static str)>, DecodeError>,
        );
        let table: &[Case] = &[
            (b"", Ok(None)),
            (b"\x03", Err(InvalidClosePayload)),
            (b"\x03\xE8", Ok(Some((1000, "")))),
            (b"\x03\xE8bye", Ok(Some((1000, "bye")))),
            (b"\x03\xE9", Ok(Some((1001, "")))),
            (b"\x03\xEA", Ok(Some((1002, "")))),
            (b"\x03\xEB", Ok(Some((1003, "")))),
            (b"\x03\xEF", Ok(Some((1007, "")))),
            (b"\x03\xF3", Ok(Some((1011, "")))),
            (b"\x03\xF6", Ok(Some((1014, "")))),
            (b"\x0B\xB8", Ok(Some((3000, "")))),
            (b"\x13\x87", Ok(Some((4999, "")))),
            (b"\x00\x00", Err(InvalidCloseCode(0))),
            (b"\x03\xE7", Err(InvalidCloseCode(999))),
            (b"\x03\xEC", Err(InvalidCloseCode(1004))),
            (b"\x03\xED", Err(InvalidCloseCode(1005))),
            (b"\x03\xEE", Err(InvalidCloseCode(1006))),
            (b"\x03\xF7", Err(InvalidCloseCode(1015))),
            (b"\x03\xF8", Err(InvalidCloseCode(1016))),
            (b"\x07\xD0", Err(InvalidCloseCode(2000))),
            (b"\x0B\xB7", Err(InvalidCloseCode(2999))),
            (b"\x13\x88", Err(InvalidCloseCode(5000))),
            (b"\xFF\xFF", Err(InvalidCloseCode(65535))),
            (
                b"\x03\xE8\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5",
                Ok(Some((1000, "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}"))),
            ),
            (b"\x03\xE8\xFF", Err(InvalidUtf8)),
        ];
        for (payload, want) in table {
            assert_eq!(&parse_close(payload), want, "payload {payload:02x?}");
        }
    }

    #[test]
    fn error_close_codes() {
        assert_eq!(DecodeError::TooLarge.close_code(), close_code::TOO_BIG);
        assert_eq!(
            DecodeError::InvalidUtf8.close_code(),
            close_code::INVALID_DATA
        );
        assert_eq!(
            DecodeError::Unmasked.close_code(),
            close_code::PROTOCOL_ERROR
        );
    }

    /// Runs frames (already parsed heads + payloads) through an assembler; collects owned results.
    #[derive(Debug, PartialEq)]
    enum Out {
        Text(String, bool),
        Binary(Vec<u8>, bool),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
        Pending,
    }

    fn feed(
        asm: &mut Assembler,
        fin: bool,
        op: OpCode,
        payload: &[u8],
        max: usize,
    ) -> Result<Out, DecodeError> {
        let h = head(fin, op, 2, payload.len());
        Ok(match asm.push(h, payload, max)? {
            None => Out::Pending,
            Some(Message::Text(t)) => Out::Text(t.to_string(), matches!(t, Cow::Borrowed(_))),
            Some(Message::Binary(b)) => Out::Binary(b.to_vec(), matches!(b, Cow::Borrowed(_))),
            Some(Message::Ping(p)) => Out::Ping(p.to_vec()),
            Some(Message::Pong(p)) => Out::Pong(p.to_vec()),
            Some(Message::Close(c)) => Out::Close(c.map(|(c, r)| (c, r.to_owned()))),
        })
    }

    #[test]
    fn assembler_sequences() {
        use DecodeError::*;
        use OpCode::*;
        type Step = (bool, OpCode, &'static [u8], Result<Out, DecodeError>);
        let table: Vec<(&str, usize, Vec<Step>)> = vec![
            (
                "single text is borrowed",
                100,
                vec![(true, Text, b"Hello", Ok(Out::Text("Hello".into(), true)))],
            ),
            (
                "single binary is borrowed",
                100,
                vec![(
                    true,
                    Binary,
                    b"\x00\xff",
                    Ok(Out::Binary(vec![0, 255], true)),
                )],
            ),
            (
                "empty text",
                100,
                vec![(true, Text, b"", Ok(Out::Text(String::new(), true)))],
            ),
            (
                "fragments are owned",
                100,
                vec![
                    (false, Text, b"Hel", Ok(Out::Pending)),
                    (
                        true,
                        Continuation,
                        b"lo",
                        Ok(Out::Text("Hello".into(), false)),
                    ),
                ],
            ),
            (
                "control frames between fragments",
                100,
                vec![
                    (false, Binary, b"a", Ok(Out::Pending)),
                    (true, Ping, b"p", Ok(Out::Ping(b"p".to_vec()))),
                    (false, Continuation, b"", Ok(Out::Pending)),
                    (true, Pong, b"", Ok(Out::Pong(vec![]))),
                    (
                        true,
                        Continuation,
                        b"b",
                        Ok(Out::Binary(b"ab".to_vec(), false)),
                    ),
                    (true, Text, b"next", Ok(Out::Text("next".into(), true))),
                ],
            ),
            (
                "character split across fragments",
                100,
                vec![
                    (false, Text, b"\xce", Ok(Out::Pending)),
                    (false, Continuation, b"\xba\xe1", Ok(Out::Pending)),
                    (
                        true,
                        Continuation,
                        b"\xbd\xb9",
                        Ok(Out::Text("\u{3ba}\u{1f79}".into(), false)),
                    ),
                ],
            ),
            (
                "continuation without start",
                100,
                vec![(true, Continuation, b"x", Err(UnexpectedContinuation))],
            ),
            (
                "new message during fragments",
                100,
                vec![
                    (false, Text, b"a", Ok(Out::Pending)),
                    (true, Binary, b"b", Err(ExpectedContinuation)),
                    // The broken message is dropped.
                    (true, Text, b"c", Ok(Out::Text("c".into(), true))),
                ],
            ),
            (
                "invalid utf8 single",
                100,
                vec![(true, Text, b"\xff", Err(InvalidUtf8))],
            ),
            (
                "invalid utf8 fails fast",
                100,
                vec![(false, Text, b"ok\xc0\xaf", Err(InvalidUtf8))],
            ),
            (
                "truncated utf8 at the end",
                100,
                vec![
                    (false, Text, b"\xce", Ok(Out::Pending)),
                    (true, Continuation, b"", Err(InvalidUtf8)),
                ],
            ),
            (
                "binary may hold anything",
                100,
                vec![
                    (false, Binary, b"\xff", Ok(Out::Pending)),
                    (
                        true,
                        Continuation,
                        b"\xce",
                        Ok(Out::Binary(vec![0xff, 0xce], false)),
                    ),
                ],
            ),
            (
                "total too large",
                4,
                vec![
                    (false, Binary, b"ab", Ok(Out::Pending)),
                    (false, Continuation, b"cd", Ok(Out::Pending)),
                    (true, Continuation, b"e", Err(TooLarge)),
                ],
            ),
            (
                "exactly the limit",
                4,
                vec![
                    (false, Binary, b"ab", Ok(Out::Pending)),
                    (
                        true,
                        Continuation,
                        b"cd",
                        Ok(Out::Binary(b"abcd".to_vec(), false)),
                    ),
                ],
            ),
            (
                "single too large",
                4,
                vec![(true, Text, b"abcde", Err(TooLarge))],
            ),
            (
                "close frames",
                100,
                vec![
                    (true, Close, b"", Ok(Out::Close(None))),
                    (
                        true,
                        Close,
                        b"\x03\xe8bye",
                        Ok(Out::Close(Some((1000, "bye".into())))),
                    ),
                    (true, Close, b"\x03", Err(InvalidClosePayload)),
                    (true, Close, b"\x03\xed", Err(InvalidCloseCode(1005))),
                    (true, Close, b"\x03\xe8\xff", Err(InvalidUtf8)),
                ],
            ),
        ];
        for (name, max, steps) in table {
            let mut asm = Assembler::default();
            for (i, (fin, op, payload, want)) in steps.into_iter().enumerate() {
                assert_eq!(
                    feed(&mut asm, fin, op, payload, max),
                    want,
                    "{name}: step {i}"
                );
            }
        }
    }

    #[test]
    fn parse_with_deflate() {
        use DecodeError::*;
        // (first byte, deflate negotiated, want: Ok(compressed) or the error).
        let table: &[(u8, bool, Result<bool, DecodeError>)] = &[
            (0xC1, true, Ok(true)),  // text, RSV1
            (0xC2, true, Ok(true)),  // binary, RSV1
            (0x41, true, Ok(true)),  // first fragment, RSV1
            (0x81, true, Ok(false)), // plain text on a deflate connection
            (0xC1, false, Err(ReservedBits)),
            (0xC2, false, Err(ReservedBits)),
            (0xA1, true, Err(ReservedBits)),        // RSV2
            (0x91, true, Err(ReservedBits)),        // RSV3
            (0xE1, true, Err(ReservedBits)),        // RSV1 + RSV2
            (0xC0, true, Err(MisplacedCompressed)), // continuation
            (0x40, true, Err(MisplacedCompressed)),
            (0xC8, true, Err(MisplacedCompressed)), // close
            (0xC9, true, Err(MisplacedCompressed)), // ping
            (0xCA, true, Err(MisplacedCompressed)), // pong
            (0xC8, false, Err(ReservedBits)),
        ];
        for (b0, deflate, want) in table {
            let mut buf = vec![*b0, 0x80, 1, 2, 3, 4];
            let got = parse_with(&mut buf, Role::Server, 100, *deflate)
                .map(|h| h.expect("whole").compressed);
            assert_eq!(&got, want, "{b0:#x} deflate {deflate}");
        }
        let mut buf = Vec::new();
        write_compressed_head(&mut buf, OpCode::Text, 300);
        assert_eq!(buf, [0xC1, 126, 1, 44]);
        assert_eq!(
            DecodeError::InvalidDeflate.close_code(),
            close_code::INVALID_DATA
        );
        assert_eq!(
            DecodeError::MisplacedCompressed.close_code(),
            close_code::PROTOCOL_ERROR
        );
    }

    /// Frames of one message through `parse_with` and `push_inflating`; the message or the error.
    fn through_inflater(wire: &mut [u8], max: usize) -> Result<Option<Vec<u8>>, DecodeError> {
        let mut asm = Assembler::default();
        let mut inf = crate::deflate::Inflater::default();
        let mut at = 0;
        let mut got = None;
        while at < wire.len() {
            let h = parse_with(&mut wire[at..], Role::Server, max, true)?.expect("whole");
            let payload = &wire[at + h.header_len..at + h.frame_len()];
            match asm.push_inflating(h, payload, max, Some(&mut inf))? {
                Some(Message::Text(t)) => got = Some(t.into_owned().into_bytes()),
                Some(Message::Binary(b)) => got = Some(b.into_owned()),
                Some(_) | None => {}
            }
            at += h.frame_len();
        }
        assert!(!asm.in_progress() || got.is_none());
        Ok(got)
    }

    #[test]
    fn compressed_messages() {
        use crate::deflate::Deflater;
        let text = "{\"user\":\"ana\",\"text\":\"héllo\"}".repeat(20);
        let mut z = Vec::new();
        Deflater::new(6, 15).compress(text.as_bytes(), &mut z);

        // One frame.
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, true, OpCode::Text, &z, Some(M));
        assert_eq!(
            through_inflater(&mut wire, 1 << 16),
            Ok(Some(text.clone().into_bytes()))
        );

        // Fragmented, with a ping between: RSV1 on the first frame only.
        let mut wire = Vec::new();
        let (a, b) = z.split_at(z.len() / 2);
        write_compressed_frame(&mut wire, false, OpCode::Binary, a, Some(M));
        write_masked(&mut wire, OpCode::Ping, b"p", M);
        write_frame(&mut wire, true, OpCode::Continuation, b, Some(M));
        assert_eq!(
            through_inflater(&mut wire, 1 << 16),
            Ok(Some(text.clone().into_bytes()))
        );

        // Inflated past the limit: TooLarge (close 1009), though the compressed bytes fit.
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, true, OpCode::Text, &z, Some(M));
        assert!(z.len() < 200);
        assert_eq!(
            through_inflater(&mut wire, text.len() - 1),
            Err(DecodeError::TooLarge)
        );
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, false, OpCode::Text, a, Some(M));
        write_frame(&mut wire, true, OpCode::Continuation, b, Some(M));
        assert_eq!(
            through_inflater(&mut wire, text.len() - 1),
            Err(DecodeError::TooLarge)
        );

        // RSV1 on the continuation: refused.
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, false, OpCode::Text, a, Some(M));
        write_compressed_frame(&mut wire, true, OpCode::Continuation, b, Some(M));
        assert_eq!(
            through_inflater(&mut wire, 1 << 16),
            Err(DecodeError::MisplacedCompressed)
        );

        // Not deflate data.
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, true, OpCode::Text, &[0xff, 0xff], Some(M));
        assert_eq!(
            through_inflater(&mut wire, 1 << 16),
            Err(DecodeError::InvalidDeflate)
        );

        // Deflate data that inflates to invalid UTF-8 in a text message.
        let mut bad = Vec::new();
        Deflater::new(6, 15).compress(b"ok\xff", &mut bad);
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, true, OpCode::Text, &bad, Some(M));
        assert_eq!(
            through_inflater(&mut wire, 1 << 16),
            Err(DecodeError::InvalidUtf8)
        );

        // Without an inflater, a compressed head is a reserved bit.
        let mut wire = Vec::new();
        write_compressed_frame(&mut wire, true, OpCode::Text, &z, Some(M));
        let h = parse_with(&mut wire, Role::Server, 1 << 16, true)
            .expect("valid")
            .expect("whole");
        let mut asm = Assembler::default();
        assert_eq!(
            asm.push_inflating(h, &wire[h.header_len..], 1 << 16, None),
            Err(DecodeError::ReservedBits)
        );
        assert_eq!(
            asm.push(h, &wire[h.header_len..], 1 << 16),
            Err(DecodeError::ReservedBits)
        );
    }

    #[test]
    fn assembler_holds_no_buffer_when_idle() {
        let mut asm = Assembler::default();
        assert!(!asm.in_progress());
        assert_eq!(
            feed(&mut asm, false, OpCode::Text, b"a", 10),
            Ok(Out::Pending)
        );
        assert!(asm.in_progress());
        assert_eq!(
            feed(&mut asm, true, OpCode::Continuation, b"b", 10),
            Ok(Out::Text("ab".into(), false))
        );
        assert!(!asm.in_progress());
    }

    #[test]
    fn apply_mask_matches_bytewise() {
        let mut rng = Rng::seeded(0x5eed_2000);
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mask = (rng.next() as u32).to_ne_bytes();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    use crate::testing::Rng;

    #[test]
    fn round_trip_frames() {
        let mut rng = Rng::seeded(0x5eed_2001);
        let ops = OpCode::ALL;
        for _ in 0..3000 {
            let op = ops[rng.below(ops.len())];
            let len = match rng.below(4) {
                0 => rng.below(126),
                1 => 120 + rng.below(20),
                2 => 65530 + rng.below(12),
                _ => rng.below(2000),
            };
            let len = if op.is_control() { len.min(125) } else { len };
            let fin = op.is_control() || rng.below(2) == 0;
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mask = (rng.next() as u32).to_be_bytes();

            let mut buf = Vec::new();
            write_frame(&mut buf, fin, op, &payload, Some(mask));
            let h = parse(&mut buf, Role::Server, 1 << 20)
                .expect("valid")
                .expect("whole");
            assert_eq!(
                (h.fin, h.opcode, h.payload_len, h.frame_len()),
                (fin, op, len, buf.len())
            );
            assert_eq!(&buf[h.header_len..], &payload[..]);

            let mut buf = Vec::new();
            write_head(&mut buf, op, len);
            buf.extend_from_slice(&payload);
            let h = parse(&mut buf, Role::Client, 1 << 20)
                .expect("valid")
                .expect("whole");
            assert_eq!(
                (h.fin, h.opcode, h.payload_len, h.frame_len()),
                (true, op, len, buf.len())
            );
            assert_eq!(&buf[h.header_len..], &payload[..]);
        }
    }

    #[test]
    fn round_trip_fragmented_messages() {
        let mut rng = Rng::seeded(0x5eed_2002);
        for _ in 0..500 {
            let text = rng.below(2) == 0;
            let message: Vec<u8> = if text {
                let chars = ['a', 'é', '€', '😀'];
                (0..rng.below(50))
                    .map(|_| chars[rng.below(4)])
                    .collect::<String>()
                    .into_bytes()
            } else {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            };
            // Split at arbitrary byte offsets (possibly inside a character), with pings between.
            let mut wire = Vec::new();
            let mut start = 0;
            let mut first = true;
            loop {
                let end = (start + rng.below(40)).min(message.len());
                let last = end == message.len() && rng.below(3) != 0;
                let op = if !first {
                    OpCode::Continuation
                } else if text {
                    OpCode::Text
                } else {
                    OpCode::Binary
                };
                write_frame(
                    &mut wire,
                    last,
                    op,
                    &message[start..end],
                    Some((rng.next() as u32).to_le_bytes()),
                );
                if rng.below(3) == 0 {
                    write_masked(&mut wire, OpCode::Ping, b"hb", [1, 2, 3, 4]);
                }
                first = false;
                start = end;
                if last {
                    break;
                }
            }
            let mut asm = Assembler::default();
            let mut got = None;
            let mut at = 0;
            while at < wire.len() {
                let h = parse(&mut wire[at..], Role::Server, 1 << 16)
                    .expect("valid")
                    .expect("whole");
                let payload = &wire[at + h.header_len..at + h.frame_len()];
                match asm.push(h, payload, 1 << 16).expect("valid") {
                    Some(Message::Text(t)) => got = Some(t.into_owned().into_bytes()),
                    Some(Message::Binary(b)) => got = Some(b.into_owned()),
                    Some(Message::Ping(p)) => assert_eq!(p, b"hb"),
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {}
                }
                at += h.frame_len();
            }
            assert_eq!(got, Some(message));
            assert!(!asm.in_progress());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng::seeded(0x5eed_2003);
        for _ in 0..20_000 {
            let len = rng.below(20);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            for role in [Role::Server, Role::Client] {
                let mut buf = bytes.clone();
                if let Ok(Some(h)) = parse(&mut buf, role, rng.below(300)) {
                    assert!(h.frame_len() <= buf.len());
                    let mut asm = Assembler::default();
                    let _ = asm.push(h, &buf[h.header_len..h.frame_len()], 300);
                }
            }
        }
    }
}
