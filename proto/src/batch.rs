//! Membership batches written from already-encoded messages (`MemberBatch` in `bus.proto`).
//!
//! A gateway encodes each `MemberMessage` once, when the event happens, and queues the bytes; its
//! publisher may then put several of them into one bus message. This module writes that batch
//! around the queued bytes, each behind its field header, without decoding or re-encoding them,
//! and says how long it will be before it is written, so that a publisher can keep a batch within
//! the bus's `max_payload`. The bytes are what prost writes for the same `MemberMessage` with a
//! `MemberBatch` body (a test checks it), so any protobuf reader decodes them.
//!
//! It checks nothing about the entries: the writer promises that each is an encoded
//! `MemberMessage` of `node` and `epoch`, not itself a batch (the broker refuses the whole batch
//! otherwise).

use bytes::BufMut as _;

/// `MemberMessage` field numbers written here (bus.proto).
const NODE: u32 = 1;
const EPOCH: u32 = 2;
const SEQ: u32 = 3;
const BATCH: u32 = 17;
/// `MemberBatch.messages`.
const MESSAGES: u32 = 1;

/// Protobuf wire types used here.
const VARINT: u32 = 0;
const LEN: u32 = 2;

/// The encoded length of `v` as a varint.
const fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

const fn key(field: u32, wire: u32) -> u64 {
    ((field << 3) | wire) as u64
}

/// The bytes one entry of `message_len` bytes adds to a batch: its field header and itself.
pub const fn entry_len(message_len: usize) -> usize {
    varint_len(key(MESSAGES, LEN)) + varint_len(message_len as u64) + message_len
}

/// The length of the whole batch message of `node` at (`epoch`, `seq`) whose entries take
/// `entries_len` bytes together (the sum of their [`entry_len`]s).
pub const fn encoded_len(node: &str, epoch: u64, seq: u64, entries_len: usize) -> usize {
    let mut len = 0;
    if !node.is_empty() {
        len += varint_len(key(NODE, LEN)) + varint_len(node.len() as u64) + node.len();
    }
    if epoch != 0 {
        len += varint_len(key(EPOCH, VARINT)) + varint_len(epoch);
    }
    if seq != 0 {
        len += varint_len(key(SEQ, VARINT)) + varint_len(seq);
    }
    len + varint_len(key(BATCH, LEN)) + varint_len(entries_len as u64) + entries_len
}

/// Writes the `MemberMessage` of `node` at (`epoch`, `seq`) whose body is a `MemberBatch` of
/// `messages` (each an encoded `MemberMessage`), in order. `seq` is the last entry's by the
/// contract; an empty `messages` writes an empty batch, which a broker refuses.
pub fn encode<'a, I>(node: &str, epoch: u64, seq: u64, messages: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let messages = messages.into_iter();
    let entries: usize = messages.clone().map(<[u8]>::len).map(entry_len).sum();
    let mut out = Vec::with_capacity(encoded_len(node, epoch, seq, entries));
    // Fields in number order, defaults left out: what prost writes.
    if !node.is_empty() {
        put_varint(&mut out, key(NODE, LEN));
        put_varint(&mut out, node.len() as u64);
        out.put_slice(node.as_bytes());
    }
    if epoch != 0 {
        put_varint(&mut out, key(EPOCH, VARINT));
        put_varint(&mut out, epoch);
    }
    if seq != 0 {
        put_varint(&mut out, key(SEQ, VARINT));
        put_varint(&mut out, seq);
    }
    put_varint(&mut out, key(BATCH, LEN));
    put_varint(&mut out, entries as u64);
    for message in messages {
        put_varint(&mut out, key(MESSAGES, LEN));
        put_varint(&mut out, message.len() as u64);
        out.put_slice(message);
    }
    debug_assert_eq!(out.len(), encoded_len(node, epoch, seq, entries));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Message as _;
    use crate::bus::{self as pb, member_message::Body};

    fn event(node: &str, epoch: u64, seq: u64, room: &str) -> pb::MemberMessage {
        pb::MemberMessage {
            node: node.to_owned(),
            epoch,
            seq,
            body: Some(Body::Join(pb::RoomChange {
                id: format!("{node}.x"),
                room: room.to_owned(),
            })),
        }
    }

    #[test]
    fn varint_lengths() {
        let mut out = Vec::new();
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            out.clear();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    /// The batch is prost's encoding of the same message, whatever the sizes (long rooms make
    /// entries with multi-byte length prefixes, and big sequence numbers multi-byte varints).
    #[test]
    fn a_batch_is_what_prost_writes_and_decodes_to_its_entries() {
        // (node, epoch, entries as (seq, room length)).
        type Case<'a> = (&'a str, u64, &'a [(u64, usize)]);
        let cases: &[Case<'_>] = &[
            ("gw1", 1_765_000_000_000, &[(1, 1), (2, 10)]),
            ("gw1", 7, &[(5, 200), (6, 20_000), (7, 0)]),
            ("", 0, &[(0, 3)]),
            ("a", u64::MAX, &[(u64::MAX - 1, 5), (u64::MAX, 300)]),
            ("n", 3, &[]),
        ];
        for (node, epoch, entries) in cases {
            let messages: Vec<pb::MemberMessage> = entries
                .iter()
                .map(|(seq, room)| event(node, *epoch, *seq, &"r".repeat(*room)))
                .collect();
            let encoded: Vec<Vec<u8>> = messages.iter().map(|m| m.encode_to_vec()).collect();
            let last = entries.last().map_or(0, |e| e.0);
            let got = encode(node, *epoch, last, encoded.iter().map(Vec::as_slice));
            let expected = pb::MemberMessage {
                node: (*node).to_owned(),
                epoch: *epoch,
                seq: last,
                body: Some(Body::Batch(pb::MemberBatch {
                    messages: messages.clone(),
                })),
            };
            assert_eq!(got, expected.encode_to_vec(), "{node} {epoch} {entries:?}");
            let entries_len = encoded.iter().map(|m| entry_len(m.len())).sum();
            assert_eq!(got.len(), encoded_len(node, *epoch, last, entries_len));
            let back = pb::MemberMessage::decode(got.as_slice()).unwrap();
            assert_eq!(back, expected);
        }
    }
}
