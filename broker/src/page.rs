//! A FetchSockets page encoded straight from the directory's views.
//!
//! `FetchSocketsResponse` through prost copies ~14 strings per socket into owned `String`s
//! (`grpc::summary`), encodes them, and frees them: at a 10 000-socket page that copying was
//! ~70 % of the call (`examples/directory_bench.rs`, docs/scaling.md). Here the same bytes are
//! written from the borrowed [`Socket`] views into one buffer, and the gRPC route for
//! FetchSockets sends that buffer as the message ([`Encoded`]). The output is byte for byte what
//! prost writes for `grpc::summary` (field order, proto3 defaults left out, `user` present when
//! set, `handshake` always present), which the tests check against prost itself.

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::state::Socket;

/// An already encoded protobuf message, sent as it is. It implements [`prost::Message`] only so
/// that tonic's prost codec can frame it; decoding one is never asked for (the server sends it,
/// and merging skips every field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded(pub Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `FetchSocketsResponse { sockets, next_page_token, total }` for the sockets of `page`.
///
/// One pass: each socket's length is taken and its bytes written while its record is in cache
/// (a page is memory-bound: a second pass over 10 000 records missed the cache again).
pub fn fetch_sockets(page: &[Socket<'_>], next_page_token: &str, total: u64) -> Encoded {
    let mut buf = Vec::new();
    for (i, socket) in page.iter().enumerate() {
        let (len, handshake) = summary_len(socket);
        if i == 0 {
            // Sockets of one namespace are alike: size the buffer by the first, with room.
            buf.reserve((nested_len(1, len) + nested_len(1, len) / 8) * page.len());
        }
        put_nested(&mut buf, 1, len);
        let start = buf.len();
        put_summary(&mut buf, socket, handshake);
        debug_assert_eq!(buf.len() - start, len);
    }
    put_str(&mut buf, 2, next_page_token);
    put_u64(&mut buf, 3, total);
    Encoded(buf)
}

/// The encoded lengths of a socket's `SocketSummary` and of its `Handshake`.
fn summary_len(s: &Socket<'_>) -> (usize, usize) {
    let headers: usize = s
        .headers()
        .iter()
        .map(|(name, value)| nested_len(2, str_len(1, name) + str_len(2, value)))
        .sum();
    let handshake = str_len(1, s.address())
        + headers
        + str_len(3, s.query())
        + str_len(4, s.claims_json())
        + u64_len(5, s.connected_at_ms());
    let summary = str_len(1, s.id())
        + str_len(2, s.ns())
        + str_len(3, s.node())
        + s.user().map_or(0, |u| present_str_len(4, u))
        + s.rooms().map(|r| present_str_len(5, r)).sum::<usize>()
        + nested_len(6, handshake)
        + str_len(7, s.data_json());
    (summary, handshake)
}

fn put_summary(buf: &mut Vec<u8>, s: &Socket<'_>, handshake: usize) {
    put_str(buf, 1, s.id());
    put_str(buf, 2, s.ns());
    put_str(buf, 3, s.node());
    if let Some(user) = s.user() {
        put_present_str(buf, 4, user);
    }
    for room in s.rooms() {
        put_present_str(buf, 5, room);
    }
    put_nested(buf, 6, handshake);
    put_str(buf, 1, s.address());
    for (name, value) in s.headers() {
        put_nested(buf, 2, str_len(1, name) + str_len(2, value));
        put_str(buf, 1, name);
        put_str(buf, 2, value);
    }
    put_str(buf, 3, s.query());
    put_str(buf, 4, s.claims_json());
    put_u64(buf, 5, s.connected_at_ms());
    put_str(buf, 7, s.data_json());
}

/// A proto3 string field: left out when empty.
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        present_str_len(tag, s)
    }
}

/// A string written even when empty (an `optional` field that is set, a repeated element).
fn present_str_len(tag: u32, s: &str) -> usize {
    key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
}

/// A message field of `len` encoded bytes (always written).
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A proto3 `uint64` field: left out when 0.
fn u64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_present_str(buf, tag, s);
    }
}

fn put_present_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.put_slice(s.as_bytes());
}

/// The key and length of a message field; its `len` bytes follow.
fn put_nested(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_u64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use prost::Message as _;
    use switchboard_proto::admin as pb;

    use super::*;
    use crate::state::{Directory, Handshake, Selector, SocketRecord};

    /// Sockets that exercise every field's presence rule: empty and long strings, a user set to
    /// the empty string, no rooms and many, headers with empty values, a `connected_at_ms` of 0
    /// and one past the one-byte varint, multi-byte UTF-8.
    fn directory() -> Directory {
        let now = Instant::now();
        let mut dir = Directory::new(Duration::from_secs(30));
        let long = "x".repeat(300);
        let cases: Vec<SocketRecord> = (0..40)
            .map(|i| {
                let mut rec = SocketRecord::new(format!("gw{}.s{i:03}", i % 3), "/chat", "");
                rec.node = format!("gw{}", i % 3);
                rec.user = match i % 4 {
                    0 => None,
                    1 => Some(String::new()),
                    _ => Some(format!("user-{}", i / 2)),
                };
                rec.rooms = (0..i % 5).map(|r| format!("room-{r}-ü")).collect();
                rec.handshake = Handshake {
                    address: if i % 6 == 0 {
                        String::new()
                    } else {
                        format!("10.0.0.{i}:5{i}")
                    },
                    headers: (0..i % 3)
                        .map(|h| {
                            (
                                format!("h{h}"),
                                if h == 1 { String::new() } else { long.clone() },
                            )
                        })
                        .collect(),
                    query: if i % 2 == 0 {
                        format!("EIO=4&k={i}")
                    } else {
                        String::new()
                    },
                    claims_json: if i % 5 == 0 {
                        "{}".into()
                    } else {
                        format!("{{\"sub\":\"{i}\"}}")
                    },
                    connected_at_ms: [0, 1, 127, 128, 1_765_000_000_000][i % 5],
                };
                rec.data_json = match i % 3 {
                    0 => "null".into(),
                    1 => String::new(),
                    _ => format!("{{\"n\":{i},\"s\":\"{long}\"}}"),
                };
                rec
            })
            .collect();
        for node in 0..3 {
            let mine = cases
                .iter()
                .filter(|r| r.node == format!("gw{node}"))
                .cloned();
            dir.snapshot(&format!("gw{node}"), 1, 0, mine.collect(), now);
        }
        assert_eq!(dir.len(), 40);
        dir
    }

    #[test]
    fn pages_are_what_prost_writes_for_the_summaries() {
        let dir = directory();
        let sel = Selector {
            ns: "/chat".into(),
            ..Selector::default()
        };
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = dir.select(&sel, after.as_deref(), 7);
            let token = page.next.clone().unwrap_or_default();
            for total in [0, 40, u64::MAX] {
                let expected = pb::FetchSocketsResponse {
                    sockets: page.items.iter().map(crate::grpc::summary).collect(),
                    next_page_token: token.clone(),
                    total,
                };
                let ours = fetch_sockets(&page.items, &token, total);
                assert_eq!(
                    ours.0,
                    expected.encode_to_vec(),
                    "page {pages}, total {total}"
                );
                assert_eq!(
                    pb::FetchSocketsResponse::decode(&ours.0[..]).expect("decodes"),
                    expected
                );
            }
            pages += 1;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 6);
        let empty = fetch_sockets(&[], "", 0);
        assert!(empty.0.is_empty());
    }

    #[test]
    fn an_encoded_message_is_framed_as_it_is() {
        let msg = Encoded(vec![8, 150, 1]);
        assert_eq!(msg.encode_to_vec(), [8, 150, 1]);
        assert_eq!(msg.encoded_len(), 3);
        // Merging skips what it is given.
        let mut decoded = Encoded::decode(&[8u8, 150, 1][..]).expect("skips");
        assert!(decoded.0.is_empty());
        decoded.clear();
    }
}
