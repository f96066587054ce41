//! Socket.IO protocol v5 packet codec (the default parser's text format), carried in Engine.IO
//! messages.
//!
//! This module owns the packet text `<type>[<count>-][<namespace>,][<id>][<JSON>]`, the binary
//! attachment placeholders `{"_placeholder":true,"num":N}`, and the reassembly of a BINARY_EVENT
//! or BINARY_ACK from its header and the binary Engine.IO messages that follow it. It does no
//! I/O, reads no clock and knows nothing of sockets or namespaces beyond their names.
//!
//! Decoding follows the reference parser (socket.io-parser 4.x) on everything the official test
//! suite checks, and is stricter where the reference parser accepts nonsense through JavaScript
//! coercions (an attachment count with no digits, spaces taken as ack-id digits) or fails open (an
//! EVENT or ACK without payload, an ACK without id).
//!
//! Invariants:
//! - Decoding never panics and never allocates in proportion to a declared attachment count.
//! - JSON is kept as parsed, keys in their original order, and written back compact.
//! - For every `Decoded::Complete(p)` from [`decode`], and every packet a [`Reassembly`] returns,
//!   decoding the text frame of [`encode`]`(&p)` gives `p` back (attachments aside, which travel
//!   in their own frames).
//! - A completed binary packet's placeholders all reference attachments that exist.
//! - A [`Reassembly`] never holds more attachment bytes than its bound, nor accepts an
//!   attachment after its deadline.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::engineio::{self, Frame, put_decimal};

pub use switchboard_proto::RESERVED_EVENTS;

/// The seven Socket.IO packet types, written as the digits `'0'`..`'6'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: connect to a namespace (client, with optional auth object) or accept (server, `{"sid"}`).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event: `["name", args…]`.
    Event,
    /// `3`: the answer to an event that carried an id: `[args…]`.
    Ack,
    /// `4`: the server refused a namespace connection.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl PacketType {
    /// The type whose digit is `byte`, if any.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The digit this type is written as.
    pub const fn as_byte(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    /// Whether packets of this type declare binary attachments.
    pub const fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// One Socket.IO packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// The packet type. A decoded BINARY_EVENT / BINARY_ACK keeps its binary type.
    pub kind: PacketType,
    /// The namespace, `"/"` when absent. Otherwise starts with `/` and contains no `,`.
    pub nsp: String,
    /// The ack id, if any.
    pub id: Option<u64>,
    /// For events/acks: the JSON array, placeholders `{"_placeholder":true,"num":N}` left in place.
    pub data: Option<Value>,
    /// Binary attachments in order (len == declared count once complete).
    pub attachments: Vec<Bytes>,
}

/// The name and arguments of an EVENT of namespace `nsp` without attachments or an ack id,
/// from its Engine.IO text frame (`42/chat,["say",{…}]`, the form emits are stored in); `None`
/// for anything else. The name is the first array element as it was (a string, or a number).
pub fn plain_event(frame: &[u8], nsp: &str) -> Option<(Value, Vec<Value>)> {
    let text = std::str::from_utf8(frame).ok()?.strip_prefix('4')?;
    let Ok(Decoded::Complete(packet)) = decode(text) else {
        return None;
    };
    if packet.kind != PacketType::Event || packet.nsp != nsp || packet.id.is_some() {
        return None;
    }
    let Some(Value::Array(mut values)) = packet.data else {
        return None;
    };
    if values.is_empty() {
        return None;
    }
    let name = values.remove(0);
    Some((name, values))
}

/// What [`decode`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A whole packet.
    Complete(Packet),
    /// The header of a binary packet (attachments empty so far) and how many attachments it
    /// declared (at least one); feed them to a [`Reassembly`].
    NeedAttachments(Packet, usize),
}

/// Why a packet could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet text is empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet-type digit `0`..`6`.
    #[error("unknown packet type")]
    UnknownType,
    /// A binary packet's attachment count is missing, too large, or not followed by `-`.
    #[error("invalid attachment count")]
    InvalidAttachmentCount,
    /// The ack id does not fit in a `u64`.
    #[error("invalid ack id")]
    InvalidId,
    /// The payload is not valid JSON.
    #[error("payload is not valid JSON")]
    InvalidJson,
    /// The payload does not have the shape the packet type requires.
    #[error("invalid payload for this packet type")]
    InvalidPayload,
    /// An ACK or BINARY_ACK has no ack id.
    #[error("ack without id")]
    MissingId,
    /// A placeholder is malformed or references an attachment beyond the declared count.
    #[error("invalid attachment placeholder")]
    InvalidPlaceholder,
    /// A binary attachment arrived that no packet was waiting for.
    #[error("unexpected binary attachment")]
    UnexpectedAttachment,
    /// A binary packet's attachments together are larger than its [`Reassembly`] allows.
    #[error("attachments too large")]
    AttachmentsTooLarge,
    /// A binary packet's attachment arrived after its [`Reassembly`]'s deadline.
    #[error("binary packet timeout")]
    AttachmentsTooLate,
}

/// Decodes the text of one Socket.IO packet (an Engine.IO message without its `4`).
///
/// Binary packets that declare attachments come back as [`Decoded::NeedAttachments`]; their
/// placeholders have already been checked against the declared count.
pub fn decode(text: &str) -> Result<Decoded, DecodeError> {
    let b = text.as_bytes();
    let (&first, _) = b.split_first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_byte(first).ok_or(DecodeError::UnknownType)?;
    let mut i = 1;

    let mut expected = 0;
    if kind.is_binary() {
        let digits = leading_digits(&b[i..]);
        if digits == 0 || b.get(i + digits) != Some(&b'-') {
            return Err(DecodeError::InvalidAttachmentCount);
        }
        expected = parse_decimal(&b[i..i + digits])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(DecodeError::InvalidAttachmentCount)?;
        i += digits + 1;
    }

    let nsp = if b.get(i) == Some(&b'/') {
        let end = b[i..]
            .iter()
            .position(|&c| c == b',')
            .map_or(b.len(), |p| i + p);
        let nsp = &text[i..end];
        i = (end + 1).min(b.len());
        nsp
    } else {
        "/"
    };

    let digits = leading_digits(&b[i..]);
    let id = if digits > 0 {
        Some(parse_decimal(&b[i..i + digits]).ok_or(DecodeError::InvalidId)?)
    } else {
        None
    };
    i += digits;

    let data = if i < b.len() {
        Some(parse_json(&text[i..]).ok_or(DecodeError::InvalidJson)?)
    } else {
        None
    };
    check_payload(kind, id, data.as_ref())?;
    if kind.is_binary() {
        check_placeholders(data.as_ref(), expected)?;
    }

    let packet = Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments: Vec::new(),
    };
    Ok(if expected == 0 {
        Decoded::Complete(packet)
    } else {
        Decoded::NeedAttachments(packet, expected)
    })
}

fn leading_digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// Parses ASCII digits; `None` on overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn check_payload(
    kind: PacketType,
    id: Option<u64>,
    data: Option<&Value>,
) -> Result<(), DecodeError> {
    let valid = match (kind, data) {
        (PacketType::Connect, None | Some(Value::Object(_))) => true,
        (PacketType::Disconnect, None) => true,
        (PacketType::ConnectError, None | Some(Value::Object(_) | Value::String(_))) => true,
        (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(args))) => {
            match args.first() {
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                Some(Value::Number(_)) => true,
                _ => false,
            }
        }
        (PacketType::Ack | PacketType::BinaryAck, Some(Value::Array(_))) => {
            return id.map(drop).ok_or(DecodeError::MissingId);
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(DecodeError::InvalidPayload)
    }
}

/// Checks that every placeholder (an object whose `_placeholder` is `true`) has an integer `num`
/// below `count`. Walks with an explicit stack: values built in code have no depth limit.
/// Public for arguments that come from the bus rather than from a decoded packet.
pub fn check_placeholders(data: Option<&Value>, count: usize) -> Result<(), DecodeError> {
    let mut stack: Vec<&Value> = data.into_iter().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
                match map.get("num").and_then(Value::as_u64) {
                    Some(num) if num < count as u64 => {}
                    _ => return Err(DecodeError::InvalidPlaceholder),
                }
            }
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON text as JavaScript writes it.
//
// A JavaScript string is UTF-16 and may hold a lone surrogate, which `JSON.stringify` writes as
// an escape (`"\ud800"`) and `JSON.parse` reads back. A Rust string cannot hold one, and
// serde_json refuses such escapes. So that what Node accepts is accepted and reaches recipients
// unchanged, strings are kept in an escaped form that can hold them: a lone surrogate `u` is the
// two characters [`MARK`] and `LONE_BASE + (u - 0xD800)`, and a `MARK` the client sent is doubled.
// Strings without either (all but a handful) are untouched. [`parse_json`] reads into this form,
// [`write_json`] writes it back as JavaScript would; a string built in code that contains a
// `MARK` (U+10FFFF, a noncharacter) followed by a `MARK` or a character of the lone range is
// written as the escape, not as itself.

/// Marks an escaped character in a string (U+10FFFF, a noncharacter).
const MARK: char = '\u{10FFFF}';
/// The lone surrogate 0xD800 + k is kept as `MARK` then the character `LONE_BASE + k`.
const LONE_BASE: u32 = 0x10_F000;

/// Parses JSON text the way `JSON.parse` does, lone surrogate escapes included (see above).
/// `None` if it is not JSON (or nests deeper than serde_json's limit of 128).
pub fn parse_json(text: &str) -> Option<Value> {
    // `JSON.stringify` escapes only control characters and lone surrogates: most texts have no
    // escape at all and are parsed as they are.
    if text.contains("\\u") || text.contains(MARK) {
        serde_json::from_str(&escape_lone_surrogates(text)).ok()
    } else {
        serde_json::from_str(text).ok()
    }
}

/// Rewrites JSON text so that serde_json reads it into the escaped form: a lone surrogate escape
/// becomes the escapes of `MARK` and its stand-in, a `MARK` (raw or escaped) becomes two. Escapes
/// are only valid inside strings, so the text needs no further parsing: outside strings it was
/// invalid before and stays invalid.
fn escape_lone_surrogates(text: &str) -> String {
    fn hex4(b: &[u8]) -> Option<u32> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u32::from_str_radix(s, 16)
            .ok()
            .filter(|_| s.bytes().all(|c| c.is_ascii_hexdigit()))
    }
    fn put_escaped(out: &mut String, c: char) {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if let Some(after) = rest.strip_prefix(MARK) {
            out.push(MARK);
            out.push(MARK);
            i = text.len() - after.len();
            continue;
        }
        if !rest.starts_with('\\') {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let Some(unit) = (b.get(i + 1) == Some(&b'u'))
            .then(|| hex4(&b[i + 2..]))
            .flatten()
        else {
            // Another escape (or a broken one): copied with the character it escapes.
            let len = 1 + rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..len]);
            i += len;
            continue;
        };
        let low = (b.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
            .then(|| hex4(&b[i + 8..]))
            .flatten()
            .filter(|l| (0xDC00..0xE000).contains(l));
        match (unit, low) {
            (0xD800..0xDC00, Some(low)) => {
                let c = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                    .expect("a surrogate pair is a character");
                out.push_str(&rest[..12]);
                if c == MARK {
                    out.push_str(&rest[..12]);
                }
                i += 12;
            }
            (0xD800..0xE000, _) => {
                put_escaped(&mut out, MARK);
                let stand_in = char::from_u32(LONE_BASE + (unit - 0xD800))
                    .expect("the lone range lies below U+10FFFF");
                put_escaped(&mut out, stand_in);
                i += 6;
            }
            _ => {
                out.push_str(&rest[..6]);
                i += 6;
            }
        }
    }
    out
}

/// Writes a value as compact JSON, strings as JavaScript writes them (see above).
pub fn write_json(out: &mut BytesMut, value: &(impl serde::Serialize + ?Sized)) {
    let mut ser = serde_json::Serializer::with_formatter(out.writer(), JsFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing into memory cannot fail");
}

/// A value as compact JSON text, strings as JavaScript writes them (for workers).
pub fn json_text(value: &Value) -> String {
    let mut out = BytesMut::new();
    write_json(&mut out, value);
    String::from_utf8(out.to_vec()).expect("JSON text is UTF-8")
}

/// serde_json's compact formatter, but a string's escaped characters are written as the escape
/// `JSON.stringify` gives a lone surrogate (`\ud800`, lower case).
struct JsFormatter;

impl serde_json::ser::Formatter for JsFormatter {
    fn write_string_fragment<W: std::io::Write + ?Sized>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        // Escaped characters are never escaped by JSON, so a mark and what follows it are
        // always in the same fragment.
        if !fragment.contains(MARK) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut chars = fragment.chars();
        while let Some(c) = chars.next() {
            if c != MARK {
                writer.write_all(c.encode_utf8(&mut [0; 4]).as_bytes())?;
                continue;
            }
            match chars.clone().next() {
                Some(MARK) => {
                    chars.next();
                    writer.write_all(c.encode_utf8(&mut [0; 4]).as_bytes())?;
                }
                Some(n) if (LONE_BASE..LONE_BASE + 0x800).contains(&u32::from(n)) => {
                    chars.next();
                    write!(writer, "\\u{:04x}", u32::from(n) - LONE_BASE + 0xD800)?;
                }
                _ => writer.write_all(c.encode_utf8(&mut [0; 4]).as_bytes())?,
            }
        }
        Ok(())
    }
}

/// Collects binary attachments after a BINARY_* header, within a byte bound and a deadline
/// (time comes in as an argument: the caller owns the clock and the timer).
#[derive(Clone, Debug)]
pub struct Reassembly {
    /// The packet being completed; `None` once it has been handed out.
    packet: Option<Packet>,
    expected: usize,
    /// Bytes of the attachments so far.
    bytes: usize,
    max_bytes: usize,
    deadline: Instant,
}

impl Reassembly {
    /// Starts collecting `expected` attachments for `packet` (as returned by
    /// [`Decoded::NeedAttachments`]), at most `max_bytes` of them in total, the last one
    /// before `deadline`.
    pub fn new(packet: Packet, expected: usize, max_bytes: usize, deadline: Instant) -> Self {
        Self {
            packet: Some(packet),
            expected,
            bytes: 0,
            max_bytes,
            deadline,
        }
    }

    /// When the packet must be complete.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How many attachments are still missing.
    pub fn remaining(&self) -> usize {
        self.packet
            .as_ref()
            .map_or(0, |p| self.expected.saturating_sub(p.attachments.len()))
    }

    /// Adds one attachment, arrived at `now`; Some(packet) once all have arrived. Placeholders
    /// must reference 0..expected, each number well-formed, else error when completing. An
    /// attachment beyond the declared count (or after completion) is
    /// [`DecodeError::UnexpectedAttachment`]; one that takes the total over the byte bound is
    /// [`DecodeError::AttachmentsTooLarge`], one at or after the deadline
    /// [`DecodeError::AttachmentsTooLate`] (both before it is kept).
    pub fn push(&mut self, attachment: Bytes, now: Instant) -> Result<Option<Packet>, DecodeError> {
        let expected = self.expected;
        let packet = match self.packet.as_mut() {
            Some(p) if p.attachments.len() < expected => p,
            _ => return Err(DecodeError::UnexpectedAttachment),
        };
        if now >= self.deadline {
            return Err(DecodeError::AttachmentsTooLate);
        }
        self.bytes = self.bytes.saturating_add(attachment.len());
        if self.bytes > self.max_bytes {
            return Err(DecodeError::AttachmentsTooLarge);
        }
        packet.attachments.push(attachment);
        if packet.attachments.len() < expected {
            return Ok(None);
        }
        let packet = self.packet.take().expect("matched Some above");
        check_placeholders(packet.data.as_ref(), expected)?;
        Ok(Some(packet))
    }
}

/// `{"_placeholder":true,"num":num}`, with `_placeholder` first.
pub fn placeholder(num: usize) -> Value {
    let mut map = Map::with_capacity(2);
    map.insert("_placeholder".to_owned(), Value::Bool(true));
    map.insert("num".to_owned(), Value::from(num));
    Value::Object(map)
}

/// Encodes a packet into Engine.IO frames: first the text frame (which begins with the Engine.IO
/// message digit b'4', e.g. `42/chat,["say",1]`, `451-["m",{"_placeholder":true,"num":0}]`,
/// `43/custom,456[1]`, `40{"sid":"x"}`, `44/random,{"message":"Invalid namespace"}`), then one
/// Frame::Binary per attachment. The type is chosen by the caller's `kind`; if `attachments` is
/// non-empty an EVENT is written as BINARY_EVENT and an ACK as BINARY_ACK with the count. The
/// namespace is written only when not "/", followed by ',' when something follows it.
///
/// Attachments of CONNECT, DISCONNECT and CONNECT_ERROR packets are not written: the protocol
/// has no place for them. `nsp` must be `"/"` or start with `/` and contain no `,`.
pub fn encode(packet: &Packet) -> Vec<Frame> {
    let (kind, attachments) = wire_kind(packet.kind, &packet.attachments);
    let mut out = BytesMut::with_capacity(64 + packet.nsp.len());
    write_header(&mut out, kind, attachments.len(), &packet.nsp, packet.id);
    if let Some(data) = &packet.data {
        write_json(&mut out, data);
    }
    frames(out, attachments)
}

/// Fast path used for broadcasts: encode an EVENT from an event name and already-serialized
/// compact JSON argument texts, without building a Value. Same output format as encode.
///
/// `args` is the array of arguments (written after `event` inside one JSON array); any value
/// that is not an array is written as a single argument. Non-empty `attachments` make it a
/// BINARY_EVENT, their placeholders being in `args` already.
pub fn encode_event(
    nsp: &str,
    event: &str,
    args: &Value,
    id: Option<u64>,
    attachments: &[Bytes],
) -> Vec<Frame> {
    let kind = if attachments.is_empty() {
        PacketType::Event
    } else {
        PacketType::BinaryEvent
    };
    let mut out = BytesMut::with_capacity(64 + nsp.len() + event.len());
    write_header(&mut out, kind, attachments.len(), nsp, id);
    out.put_u8(b'[');
    write_json(&mut out, event);
    let args = match args {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    for arg in args {
        out.put_u8(b',');
        write_json(&mut out, arg);
    }
    out.put_u8(b']');
    frames(out, attachments)
}

/// The type to write and the attachments that go with it.
fn wire_kind(kind: PacketType, attachments: &[Bytes]) -> (PacketType, &[Bytes]) {
    match kind {
        PacketType::Event if !attachments.is_empty() => (PacketType::BinaryEvent, attachments),
        PacketType::Ack if !attachments.is_empty() => (PacketType::BinaryAck, attachments),
        PacketType::Event | PacketType::Ack => (kind, &[]),
        PacketType::BinaryEvent | PacketType::BinaryAck => (kind, attachments),
        PacketType::Connect | PacketType::Disconnect | PacketType::ConnectError => (kind, &[]),
    }
}

/// Writes `4<type>[<count>-][<nsp>,][<id>]`.
fn write_header(
    out: &mut BytesMut,
    kind: PacketType,
    attachments: usize,
    nsp: &str,
    id: Option<u64>,
) {
    out.put_u8(engineio::PacketType::Message.as_byte());
    out.put_u8(kind.as_byte());
    if kind.is_binary() {
        put_decimal(out, attachments as u64);
        out.put_u8(b'-');
    }
    // Like the reference encoder: a namespace other than `/` is always followed by a comma.
    if nsp != "/" && !nsp.is_empty() {
        out.put_slice(nsp.as_bytes());
        out.put_u8(b',');
    }
    if let Some(id) = id {
        put_decimal(out, id);
    }
}

fn frames(text: BytesMut, attachments: &[Bytes]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(Frame::text(text.freeze()));
    frames.extend(attachments.iter().cloned().map(Frame::binary));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn packet(kind: PacketType, nsp: &str, id: Option<u64>, data: Option<Value>) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    fn ph(n: usize) -> Value {
        placeholder(n)
    }

    #[test]
    fn plain_events_are_told_from_everything_else() {
        let got = plain_event(br#"42/chat,["say",{"n":1},"k.9"]"#, "/chat");
        assert_eq!(
            got,
            Some((json!("say"), vec![json!({"n": 1}), json!("k.9")]))
        );
        assert_eq!(
            plain_event(br#"42/chat,[7]"#, "/chat"),
            Some((json!(7), vec![]))
        );
        for (frame, nsp) in [
            (&br#"42/chat,["say"]"#[..], "/"),
            (br#"42["say"]"#, "/chat"),
            (br#"42/chat,1["say"]"#, "/chat"),
            (br#"43/chat,["say"]"#, "/chat"),
            (
                br#"451-/chat,["say",{"_placeholder":true,"num":0}]"#,
                "/chat",
            ),
            (br#"40/chat,{"sid":"x"}"#, "/chat"),
            (br#"2/chat,["say"]"#, "/chat"),
            (b"42/chat,[]", "/chat"),
            (b"\xff", "/chat"),
        ] {
            assert_eq!(
                plain_event(frame, nsp),
                None,
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    fn text_of(frames: &[Frame]) -> &str {
        match frames.first() {
            Some(Frame::Text(t, _)) => std::str::from_utf8(t).expect("text frames are UTF-8"),
            other => panic!("expected a text frame first, got {other:?}"),
        }
    }

    #[test]
    fn decode_spec_vectors() {
        use PacketType::*;
        // The encoding table of the Socket.IO v5 protocol document, plus the official test
        // suite's inputs.
        let complete: &[(&str, Packet)] = &[
            ("0", packet(Connect, "/", None, None)),
            (
                "0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}",
                packet(
                    Connect,
                    "/",
                    None,
                    Some(json!({"sid":"wZX3oN0bSVIhsaknAAAI"})),
                ),
            ),
            ("0/admin,", packet(Connect, "/admin", None, None)),
            ("0/admin", packet(Connect, "/admin", None, None)),
            (
                "0/custom,{\"token\":\"abc\"}",
                packet(Connect, "/custom", None, Some(json!({"token":"abc"}))),
            ),
            (
                "4{\"message\":\"Not authorized\"}",
                packet(
                    ConnectError,
                    "/",
                    None,
                    Some(json!({"message":"Not authorized"})),
                ),
            ),
            (
                "4/random,{\"message\":\"Invalid namespace\"}",
                packet(
                    ConnectError,
                    "/random",
                    None,
                    Some(json!({"message":"Invalid namespace"})),
                ),
            ),
            (
                "4\"legacy\"",
                packet(ConnectError, "/", None, Some(json!("legacy"))),
            ),
            ("2[\"foo\"]", packet(Event, "/", None, Some(json!(["foo"])))),
            (
                "2/admin,[\"bar\"]",
                packet(Event, "/admin", None, Some(json!(["bar"]))),
            ),
            (
                "212[\"foo\"]",
                packet(Event, "/", Some(12), Some(json!(["foo"]))),
            ),
            ("312[]", packet(Ack, "/", Some(12), Some(json!([])))),
            (
                "2/admin,13[\"foo\"]",
                packet(Event, "/admin", Some(13), Some(json!(["foo"]))),
            ),
            (
                "3/admin,13[\"bar\"]",
                packet(Ack, "/admin", Some(13), Some(json!(["bar"]))),
            ),
            (
                "2[\"message\",1,\"2\",{\"3\":[true]}]",
                packet(
                    Event,
                    "/",
                    None,
                    Some(json!(["message",1,"2",{"3":[true]}])),
                ),
            ),
            (
                "2[42,\"numeric event\"]",
                packet(Event, "/", None, Some(json!([42, "numeric event"]))),
            ),
            ("1", packet(Disconnect, "/", None, None)),
            ("1/admin,", packet(Disconnect, "/admin", None, None)),
            ("1/custom", packet(Disconnect, "/custom", None, None)),
            (
                "50-[\"x\"]",
                packet(BinaryEvent, "/", None, Some(json!(["x"]))),
            ),
            (
                "3/a,18446744073709551615[]",
                packet(Ack, "/a", Some(u64::MAX), Some(json!([]))),
            ),
            ("0/a[1]", packet(Connect, "/a[1]", None, None)),
            ("41", packet(ConnectError, "/", Some(1), None)),
        ];
        for (input, want) in complete {
            assert_eq!(
                decode(input),
                Ok(Decoded::Complete(want.clone())),
                "input {input}"
            );
        }
        let partial: &[(&str, Packet, usize)] = &[
            (
                "51-[\"baz\",{\"_placeholder\":true,\"num\":0}]",
                packet(BinaryEvent, "/", None, Some(json!(["baz", ph(0)]))),
                1,
            ),
            (
                "52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
                packet(
                    BinaryEvent,
                    "/admin",
                    None,
                    Some(json!(["baz", ph(0), ph(1)])),
                ),
                2,
            ),
            (
                "51-14[\"foo\",{\"_placeholder\":true,\"num\":0}]",
                packet(BinaryEvent, "/", Some(14), Some(json!(["foo", ph(0)]))),
                1,
            ),
            (
                "61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]",
                packet(BinaryAck, "/", Some(15), Some(json!(["bar", ph(0)]))),
                1,
            ),
            (
                "61-/admin,1[{\"_placeholder\":true,\"num\":0}]",
                packet(BinaryAck, "/admin", Some(1), Some(json!([ph(0)]))),
                1,
            ),
            // Nested placeholders, and more declared than referenced, are both fine.
            (
                "53-[\"m\",{\"a\":[{\"_placeholder\":true,\"num\":2}]}]",
                packet(BinaryEvent, "/", None, Some(json!(["m", {"a": [ph(2)]}]))),
                3,
            ),
        ];
        for (input, want, n) in partial {
            assert_eq!(
                decode(input),
                Ok(Decoded::NeedAttachments(want.clone(), *n)),
                "input {input}"
            );
        }
    }

    #[test]
    fn decode_rejects() {
        use DecodeError::*;
        let table: &[(&str, DecodeError)] = &[
            ("", Empty),
            ("abc", UnknownType), // the official suite's `4abc`, once Engine.IO took the `4`
            ("7", UnknownType),
            ("/", UnknownType),
            ("42[\"x\"]", InvalidPayload), // CONNECT_ERROR with id 2 and an array
            ("2{}", InvalidPayload),
            ("2abc[\"x\"]", InvalidJson),
            ("2", InvalidPayload),
            ("2/a[1]", InvalidPayload),
            ("212", InvalidPayload),
            ("2[]", InvalidPayload),
            ("2[{}]", InvalidPayload),
            ("2[null]", InvalidPayload),
            ("2[\"connect\"]", InvalidPayload),
            ("2[\"disconnecting\",1]", InvalidPayload),
            ("2[\"removeListener\"]", InvalidPayload),
            ("2\"x\"", InvalidPayload),
            ("2[\"x\"", InvalidJson),
            ("2[\"x\"]garbage", InvalidJson),
            ("2,[\"x\"]", InvalidJson),
            ("218446744073709551616[\"x\"]", InvalidId),
            ("3[]", MissingId),
            ("3/a,[]", MissingId),
            ("31", InvalidPayload),
            ("31{}", InvalidPayload),
            ("0[]", InvalidPayload),
            ("0\"x\"", InvalidPayload),
            ("1{}", InvalidPayload),
            ("1/a,[]", InvalidPayload),
            ("4[]", InvalidPayload),
            ("5", InvalidAttachmentCount),
            ("5[\"x\"]", InvalidAttachmentCount),
            ("5-[\"x\"]", InvalidAttachmentCount),
            ("51[\"x\"]", InvalidAttachmentCount),
            ("51", InvalidAttachmentCount),
            ("599999999999999999999-[\"x\"]", InvalidAttachmentCount),
            ("61-[{\"_placeholder\":true,\"num\":0}]", MissingId),
            (
                "51-[\"m\",{\"_placeholder\":true,\"num\":1}]",
                InvalidPlaceholder,
            ),
            (
                "51-[\"m\",{\"_placeholder\":true,\"num\":-1}]",
                InvalidPlaceholder,
            ),
            (
                "51-[\"m\",{\"_placeholder\":true,\"num\":0.5}]",
                InvalidPlaceholder,
            ),
            (
                "51-[\"m\",{\"_placeholder\":true,\"num\":\"0\"}]",
                InvalidPlaceholder,
            ),
            ("51-[\"m\",{\"_placeholder\":true}]", InvalidPlaceholder),
            (
                "50-[\"m\",{\"_placeholder\":true,\"num\":0}]",
                InvalidPlaceholder,
            ),
        ];
        for (input, want) in table {
            assert_eq!(decode(input), Err(*want), "input {input}");
        }
        // Not placeholders: left alone, in binary and plain packets alike.
        for input in [
            "2[\"m\",{\"_placeholder\":true,\"num\":9}]",
            "51-[\"m\",{\"_placeholder\":false,\"num\":9}]",
            "51-[\"m\",{\"_placeholder\":\"true\"}]",
        ] {
            assert!(decode(input).is_ok(), "input {input}");
        }
    }

    #[test]
    fn decode_keeps_key_order() {
        let Ok(Decoded::Complete(p)) = decode("2[\"m\",{\"z\":1,\"a\":2,\"m\":{\"y\":0,\"b\":1}}]")
        else {
            panic!("valid event");
        };
        let frames = encode(&p);
        assert_eq!(
            text_of(&frames),
            "42[\"m\",{\"z\":1,\"a\":2,\"m\":{\"y\":0,\"b\":1}}]"
        );
    }

    #[test]
    fn decode_compacts_whitespace() {
        let Ok(Decoded::Complete(p)) = decode("2 [ \"m\" , { \"a\" : [ 1 , 2 ] } ] ") else {
            panic!("valid event");
        };
        assert_eq!(text_of(&encode(&p)), "42[\"m\",{\"a\":[1,2]}]");
    }

    #[test]
    fn encode_vectors() {
        use PacketType::*;
        let bin = |b: &'static [u8]| Bytes::from_static(b);
        let with = |mut p: Packet, a: Vec<Bytes>| {
            p.attachments = a;
            p
        };
        let table: Vec<(Packet, &str)> = vec![
            (packet(Connect, "/", None, None), "40"),
            (
                packet(Connect, "/", None, Some(json!({"sid":"x"}))),
                "40{\"sid\":\"x\"}",
            ),
            (packet(Connect, "/admin", None, None), "40/admin,"),
            (
                packet(
                    Connect,
                    "/admin",
                    None,
                    Some(json!({"sid":"oSO0OpakMV_3jnilAAAA"})),
                ),
                "40/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}",
            ),
            (
                packet(
                    ConnectError,
                    "/",
                    None,
                    Some(json!({"message":"Not authorized"})),
                ),
                "44{\"message\":\"Not authorized\"}",
            ),
            (
                packet(
                    ConnectError,
                    "/random",
                    None,
                    Some(json!({"message":"Invalid namespace"})),
                ),
                "44/random,{\"message\":\"Invalid namespace\"}",
            ),
            (packet(Disconnect, "/", None, None), "41"),
            (packet(Disconnect, "/admin", None, None), "41/admin,"),
            (
                packet(Event, "/", None, Some(json!(["foo"]))),
                "42[\"foo\"]",
            ),
            (
                packet(Event, "/chat", None, Some(json!(["say", 1]))),
                "42/chat,[\"say\",1]",
            ),
            (
                packet(Event, "/", Some(12), Some(json!(["foo"]))),
                "4212[\"foo\"]",
            ),
            (packet(Ack, "/", Some(12), Some(json!([]))), "4312[]"),
            (
                packet(Ack, "/custom", Some(456), Some(json!([1]))),
                "43/custom,456[1]",
            ),
            (packet(Ack, "/admin", Some(13), None), "43/admin,13"),
            (packet(Event, "/", None, Some(json!([0]))), "42[0]"),
            (
                with(
                    packet(Event, "/", None, Some(json!(["m", ph(0)]))),
                    vec![bin(b"\x01")],
                ),
                "451-[\"m\",{\"_placeholder\":true,\"num\":0}]",
            ),
            (
                with(
                    packet(Event, "/admin", None, Some(json!(["baz", ph(0), ph(1)]))),
                    vec![bin(b"\x01\x02"), bin(b"\x03\x04")],
                ),
                "452-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            ),
            (
                with(
                    packet(Ack, "/", Some(789), Some(json!([ph(0), ph(1)]))),
                    vec![bin(b"a"), bin(b"b")],
                ),
                "462-789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            ),
            (
                with(
                    packet(Ack, "/admin", Some(1), Some(json!([ph(0)]))),
                    vec![bin(b"")],
                ),
                "461-/admin,1[{\"_placeholder\":true,\"num\":0}]",
            ),
            (
                packet(BinaryEvent, "/", None, Some(json!(["x"]))),
                "450-[\"x\"]",
            ),
            (
                with(packet(Connect, "/", None, None), vec![bin(b"dropped")]),
                "40",
            ),
        ];
        for (p, want) in &table {
            let frames = encode(p);
            assert_eq!(text_of(&frames), *want, "packet {p:?}");
            let binaries: Vec<Frame> = frames[1..].to_vec();
            let want_bin: Vec<Frame> = if p.kind == Connect {
                vec![]
            } else {
                p.attachments.iter().cloned().map(Frame::binary).collect()
            };
            assert_eq!(binaries, want_bin, "packet {p:?}");
        }
    }

    #[test]
    fn encode_event_vectors() {
        let a = Bytes::from_static(b"\x01\x02\x03");
        let b = Bytes::from_static(b"\x04\x05\x06");
        // (nsp, event, args, id, attachments, text frame)
        type Case = (
            &'static str,
            &'static str,
            Value,
            Option<u64>,
            Vec<Bytes>,
            &'static str,
        );
        let table: Vec<Case> = vec![
            ("/", "auth", json!([{}]), None, vec![], "42[\"auth\",{}]"),
            (
                "/custom",
                "auth",
                json!([{"token":"abc"}]),
                None,
                vec![],
                "42/custom,[\"auth\",{\"token\":\"abc\"}]",
            ),
            (
                "/",
                "message-back",
                json!([1, "2", {"3": [true]}]),
                None,
                vec![],
                "42[\"message-back\",1,\"2\",{\"3\":[true]}]",
            ),
            ("/", "ping", json!([]), None, vec![], "42[\"ping\"]"),
            ("/", "ask", json!([]), Some(0), vec![], "420[\"ask\"]"),
            (
                "/chat",
                "ask",
                json!([1]),
                Some(7),
                vec![],
                "42/chat,7[\"ask\",1]",
            ),
            (
                "/",
                "single",
                json!({"k": "v"}),
                None,
                vec![],
                "42[\"single\",{\"k\":\"v\"}]",
            ),
            (
                "/",
                "q\"uote",
                json!(["\u{1}"]),
                None,
                vec![],
                "42[\"q\\\"uote\",\"\\u0001\"]",
            ),
            (
                "/",
                "message-back",
                json!([ph(0), ph(1)]),
                None,
                vec![a.clone(), b.clone()],
                "452-[\"message-back\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            ),
        ];
        for (nsp, event, args, id, attachments, want) in &table {
            let frames = encode_event(nsp, event, args, *id, attachments);
            assert_eq!(text_of(&frames), *want);
            assert_eq!(frames.len(), 1 + attachments.len());
            // Same bytes as the general encoder.
            let mut data = vec![Value::from(*event)];
            match args {
                Value::Array(items) => data.extend(items.iter().cloned()),
                other => data.push(other.clone()),
            }
            let general = encode(&Packet {
                kind: PacketType::Event,
                nsp: (*nsp).to_owned(),
                id: *id,
                data: Some(Value::Array(data)),
                attachments: attachments.clone(),
            });
            assert_eq!(frames, general);
        }
    }

    #[test]
    fn placeholder_shape() {
        assert_eq!(
            serde_json::to_string(&placeholder(3)).ok().as_deref(),
            Some("{\"_placeholder\":true,\"num\":3}")
        );
    }

    #[test]
    fn reassembly() {
        let text =
            "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
        let Ok(Decoded::NeedAttachments(header, n)) = decode(&text[1..]) else {
            panic!("binary header");
        };
        assert_eq!(n, 2);
        let mut r = Reassembly::new(header.clone(), n, 6, later());
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.push(Bytes::from_static(&[1, 2, 3]), t0()), Ok(None));
        assert_eq!(r.remaining(), 1);
        let done = r
            .push(Bytes::from_static(&[4, 5, 6]), t0())
            .expect("valid")
            .expect("complete");
        assert_eq!(
            done.attachments,
            [
                Bytes::from_static(&[1, 2, 3]),
                Bytes::from_static(&[4, 5, 6])
            ]
        );
        assert_eq!(done.data, header.data);
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            r.push(Bytes::new(), t0()),
            Err(DecodeError::UnexpectedAttachment)
        );

        // The official suite echoes it back unchanged.
        let echoed = encode(&done);
        assert_eq!(text_of(&echoed), text);
        assert_eq!(echoed[1], Frame::binary(Bytes::from_static(&[1, 2, 3])));

        // Nothing expected: any attachment is unexpected.
        let mut none = Reassembly::new(
            packet(PacketType::BinaryEvent, "/", None, Some(json!(["x"]))),
            0,
            6,
            later(),
        );
        assert_eq!(
            none.push(Bytes::new(), t0()),
            Err(DecodeError::UnexpectedAttachment)
        );

        // A packet built elsewhere with a bad placeholder fails on completion.
        let bad = packet(
            PacketType::BinaryEvent,
            "/",
            None,
            Some(json!(["x", ph(5)])),
        );
        let mut r = Reassembly::new(bad, 1, 6, later());
        assert_eq!(
            r.push(Bytes::new(), t0()),
            Err(DecodeError::InvalidPlaceholder)
        );
    }

    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn later() -> Instant {
        t0() + std::time::Duration::from_secs(10)
    }

    #[test]
    fn reassembly_bounds_bytes_and_time() {
        let header = || {
            packet(
                PacketType::BinaryEvent,
                "/",
                None,
                Some(json!(["x", ph(0), ph(1), ph(2)])),
            )
        };
        let two = Bytes::from_static(&[1, 2]);
        // (bound in bytes, arrival of each attachment after t0 in ms, outcome of each push)
        type Case = (usize, [u64; 3], [Result<bool, DecodeError>; 3]);
        let table: [Case; 4] = [
            (6, [0, 5, 9_999], [Ok(false), Ok(false), Ok(true)]),
            (
                5,
                [0, 0, 0],
                [Ok(false), Ok(false), Err(DecodeError::AttachmentsTooLarge)],
            ),
            (
                6,
                [0, 10_000, 0],
                [Ok(false), Err(DecodeError::AttachmentsTooLate), Ok(false)],
            ),
            (
                0,
                [0, 0, 0],
                [Err(DecodeError::AttachmentsTooLarge), Ok(false), Ok(false)],
            ),
        ];
        for (bound, at, want) in table {
            let mut r = Reassembly::new(header(), 3, bound, later());
            assert_eq!(r.deadline(), later());
            for (i, (ms, want)) in at.iter().zip(want).enumerate() {
                let now = t0() + std::time::Duration::from_millis(*ms);
                let got = r.push(two.clone(), now).map(|p| p.is_some());
                assert_eq!(got, want, "bound {bound}, attachment {i}");
                if got.is_err() {
                    // The caller closes the connection; nothing more is looked at.
                    break;
                }
            }
        }
    }

    #[test]
    fn deep_values_do_not_overflow_the_stack() {
        let mut v = json!(["x"]);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(check_placeholders(Some(&v), 0), Ok(()));
        // Dropping a deep Value recurses; keep the test about our walk, not serde_json's Drop.
        let mut v = v;
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
        // Deeply nested JSON text is refused by serde_json's recursion limit, not a crash.
        let deep = format!("2[\"x\",{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(decode(&deep), Err(DecodeError::InvalidJson));
    }

    /// Strings as `JSON.stringify` writes them come back as it writes them, lone UTF-16
    /// surrogates included (Node's socket.io accepts and relays them).
    #[test]
    fn lone_surrogates_travel_as_javascript_writes_them() {
        // (event text after `2`, the text frame of its re-encoding)
        let table: &[(&str, &str)] = &[
            (r#"["m","\ud800"]"#, r#"42["m","\ud800"]"#),
            (
                r#"["m","a\uDC00b","\udbff"]"#,
                r#"42["m","a\udc00b","\udbff"]"#,
            ),
            // Reversed: two lone surrogates.
            (r#"["m","\udc00\ud800"]"#, r#"42["m","\udc00\ud800"]"#),
            // A pair is a character, written as itself.
            (r#"["m","\ud83d\ude00"]"#, "42[\"m\",\"\u{1f600}\"]"),
            // The mark itself, raw or escaped, stays itself.
            ("[\"m\",\"\u{10FFFF}x\"]", "42[\"m\",\"\u{10FFFF}x\"]"),
            (
                r#"["m","\udbff\udfff\ud800"]"#,
                "42[\"m\",\"\u{10FFFF}\\ud800\"]",
            ),
            // The lone range's stand-ins, sent as characters, stay characters.
            ("[\"m\",\"\u{10F000}\"]", "42[\"m\",\"\u{10F000}\"]"),
            // In keys and event names too; other escapes as serde_json writes them.
            (
                r#"["\ud800",{"\udfff":"\u0001\u00e9"}]"#,
                "42[\"\\ud800\",{\"\\udfff\":\"\\u0001\u{e9}\"}]",
            ),
            // An escaped backslash is not the start of an escape.
            (r#"["m","\\ud800"]"#, r#"42["m","\\ud800"]"#),
        ];
        for (text, want) in table {
            let Ok(Decoded::Complete(p)) = decode(&format!("2{text}")) else {
                panic!("{text} is accepted");
            };
            let frames = encode(&p);
            assert_eq!(text_of(&frames), *want, "{text}");
            assert_eq!(decode_frames(&frames), Ok(p.clone()), "{text}");
            // The fast path for broadcasts writes the same.
            let Some(Value::Array(items)) = &p.data else {
                panic!("an array")
            };
            let Value::String(name) = &items[0] else {
                panic!("a name")
            };
            let args = Value::Array(items[1..].to_vec());
            assert_eq!(text_of(&encode_event("/", name, &args, None, &[])), *want);
            // And what workers get.
            assert_eq!(json_text(p.data.as_ref().expect("data")), want[2..]);
        }
        // Still refused: broken escapes.
        for bad in [r#"["m","\ud8"]"#, r#"["m","\uZZZZ"]"#, r#"["m","\u+fff"]"#] {
            assert_eq!(
                decode(&format!("2{bad}")),
                Err(DecodeError::InvalidJson),
                "{bad}"
            );
        }
    }

    /// Found by the `socketio_packet` fuzz target: a number with many digits changed on decode →
    /// encode → decode (and differed from what JavaScript's `JSON.parse` gives), because serde_json
    /// parses floats correctly rounded only with its `float_roundtrip` feature.
    #[test]
    fn long_numbers_survive_round_trip() {
        let digits = format!("{}31", "1".repeat(105));
        let input = format!("2[{digits}]");
        let Ok(Decoded::Complete(p)) = decode(&input) else {
            panic!("valid event");
        };
        let exact: f64 = digits.parse().expect("a decimal number");
        assert_eq!(p.data.as_ref().and_then(|d| d[0].as_f64()), Some(exact));
        assert_eq!(decode_frames(&encode(&p)), Ok(p));
    }

    use crate::testing::Rng;

    impl Rng {
        fn string(&mut self) -> String {
            const CHARS: &[char] = &[
                'a',
                'Z',
                '0',
                '9',
                ' ',
                '"',
                '\\',
                '/',
                ',',
                '\u{0}',
                '\u{e9}',
                '\u{1f600}',
                '-',
            ];
            (0..self.below(8))
                .map(|_| CHARS[self.below(CHARS.len())])
                .collect()
        }

        fn number(&mut self) -> Value {
            match self.below(4) {
                0 => Value::from(self.next()),
                1 => Value::from(self.next() as i64),
                2 => Value::from(self.below(1000)),
                // Floats with a short decimal form, which serde_json parses back exactly.
                _ => Value::from(self.below(100_000) as f64 / 8.0 - 1000.0),
            }
        }

        fn value(&mut self, depth: usize) -> Value {
            match self.below(if depth == 0 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => self.number(),
                3 | 4 => Value::String(self.string()),
                5 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
                _ => Value::Object(
                    (0..self.below(4))
                        .map(|_| (self.string(), self.value(depth - 1)))
                        .collect(),
                ),
            }
        }

        fn nsp(&mut self) -> String {
            match self.below(3) {
                0 => "/".to_owned(),
                _ => format!("/{}", self.string().replace(',', "")),
            }
        }

        fn event_name(&mut self) -> Value {
            if self.below(4) == 0 {
                return self.number();
            }
            loop {
                let name = self.string();
                if !RESERVED_EVENTS.contains(&name.as_str()) {
                    return Value::String(name);
                }
            }
        }

        fn id(&mut self) -> Option<u64> {
            match self.below(3) {
                0 => None,
                1 => Some(self.below(100) as u64),
                _ => Some(self.next()),
            }
        }

        fn sio_packet(&mut self) -> Packet {
            let kind = PacketType::from_byte(b'0' + self.below(7) as u8).expect("0..=6 are types");
            let nsp = self.nsp();
            let args = |rng: &mut Self| -> Vec<Value> {
                (0..rng.below(4)).map(|_| rng.value(3)).collect()
            };
            let (id, data, attachments) = match kind {
                PacketType::Connect => {
                    let data = (self.below(2) == 0).then(|| {
                        Value::Object(
                            (0..self.below(3))
                                .map(|_| (self.string(), self.value(2)))
                                .collect(),
                        )
                    });
                    (self.id(), data, vec![])
                }
                PacketType::Disconnect => (self.id(), None, vec![]),
                PacketType::ConnectError => {
                    let data = match self.below(3) {
                        0 => None,
                        1 => Some(Value::String(self.string())),
                        _ => Some(json!({"message": self.string()})),
                    };
                    (self.id(), data, vec![])
                }
                PacketType::Event | PacketType::BinaryEvent => {
                    let mut items = vec![self.event_name()];
                    items.extend(args(self));
                    (self.id(), Some(Value::Array(items)), vec![])
                }
                PacketType::Ack | PacketType::BinaryAck => (
                    Some(self.id().unwrap_or(0)),
                    Some(Value::Array(args(self))),
                    vec![],
                ),
            };
            let mut p = Packet {
                kind,
                nsp,
                id,
                data,
                attachments,
            };
            if kind.is_binary() {
                let n = self.below(4);
                if let Some(Value::Array(items)) = p.data.as_mut() {
                    for i in 0..n {
                        items.push(placeholder(i));
                    }
                }
                p.attachments = (0..n).map(|i| Bytes::from(vec![i as u8; i])).collect();
            }
            p
        }
    }

    /// Decodes encoded frames the way the session layer does.
    fn decode_frames(frames: &[Frame]) -> Result<Packet, DecodeError> {
        let Some((Frame::Text(text, _), rest)) = frames.split_first() else {
            panic!("text frame first");
        };
        assert_eq!(text.first(), Some(&b'4'));
        let text = std::str::from_utf8(&text[1..]).expect("UTF-8");
        match decode(text)? {
            Decoded::Complete(p) => {
                assert!(rest.is_empty());
                Ok(p)
            }
            Decoded::NeedAttachments(p, n) => {
                assert_eq!(n, rest.len());
                let mut r = Reassembly::new(p, n, usize::MAX, later());
                let mut out = None;
                for f in rest {
                    let Frame::Binary(b, _) = f else {
                        panic!("binary attachment")
                    };
                    out = r.push(b.clone(), t0())?;
                }
                Ok(out.expect("complete after the last attachment"))
            }
        }
    }

    #[test]
    fn round_trip() {
        let mut rng = Rng::seeded(0x5eed_1001);
        for _ in 0..5000 {
            let p = rng.sio_packet();
            let frames = encode(&p);
            assert_eq!(decode_frames(&frames), Ok(p.clone()), "frames {frames:?}");
        }
    }

    #[test]
    fn round_trip_event_fast_path() {
        let mut rng = Rng::seeded(0x5eed_1002);
        for _ in 0..2000 {
            let nsp = rng.nsp();
            let Value::String(event) = rng.event_name() else {
                continue;
            };
            let n = rng.below(3);
            let mut args: Vec<Value> = (0..rng.below(4)).map(|_| rng.value(3)).collect();
            args.extend((0..n).map(placeholder));
            let attachments: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![7; i])).collect();
            let id = rng.id();
            let frames = encode_event(&nsp, &event, &Value::Array(args.clone()), id, &attachments);
            let mut data = vec![Value::String(event)];
            data.extend(args);
            let kind = if n == 0 {
                PacketType::Event
            } else {
                PacketType::BinaryEvent
            };
            let want = Packet {
                kind,
                nsp,
                id,
                data: Some(Value::Array(data)),
                attachments,
            };
            assert_eq!(decode_frames(&frames), Ok(want));
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let mut rng = Rng::seeded(0x5eed_1003);
        const PIECES: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "-",
            "/",
            ",",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "x",
            "12",
            "\u{e9}",
            " ",
            "_placeholder",
            ":",
            "true",
            "num",
            "\\ud800",
            "\\udfff",
            "\\u",
            "\\",
            "\u{10FFFF}",
            "\u{10F000}",
        ];
        for _ in 0..20_000 {
            let s: String = (0..rng.below(12))
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect();
            if let Ok(Decoded::Complete(p)) = decode(&s) {
                let frames = encode(&p);
                assert_eq!(decode_frames(&frames), Ok(p), "input {s:?}");
            }
        }
    }
}
