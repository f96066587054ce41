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
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `MemberMessage` field numbers written here (bus.proto).
const NODE: u32 = 1;
const EPOCH: u32 = 2;
const SEQ: u32 = 3;
const BATCH: u32 = 17;
/// `MemberBatch.messages`.
const MESSAGES: u32 = 1;

/// The bytes one entry of `message_len` bytes adds to a batch: its field header and itself.
pub const fn entry_len(message_len: usize) -> usize {
    key_len(MESSAGES) + encoded_len_varint(message_len as u64) + message_len
}

/// The length of the whole batch message of `node` at (`epoch`, `seq`) whose entries take
/// `entries_len` bytes together (the sum of their [`entry_len`]s).
pub const fn encoded_len(node: &str, epoch: u64, seq: u64, entries_len: usize) -> usize {
    let mut len = 0;
    if !node.is_empty() {
        len += key_len(NODE) + encoded_len_varint(node.len() as u64) + node.len();
    }
    if epoch != 0 {
        len += key_len(EPOCH) + encoded_len_varint(epoch);
    }
    if seq != 0 {
        len += key_len(SEQ) + encoded_len_varint(seq);
    }
    len + key_len(BATCH) + encoded_len_varint(entries_len as u64) + entries_len
}

/// The entries' length of a batch of `node` at `epoch` that takes one more message of
/// `message_len` bytes, the new last entry at `seq`, after entries of `entries_len` bytes; `None`
/// if the batch would then be longer than `max_payload` (the message starts the next batch). How
/// a publisher cuts batches.
pub const fn grow(
    node: &str,
    epoch: u64,
    seq: u64,
    entries_len: usize,
    message_len: usize,
    max_payload: usize,
) -> Option<usize> {
    let with = entries_len + entry_len(message_len);
    if encoded_len(node, epoch, seq, with) <= max_payload {
        Some(with)
    } else {
        None
    }
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
        encode_key(NODE, WireType::LengthDelimited, &mut out);
        encode_varint(node.len() as u64, &mut out);
        out.put_slice(node.as_bytes());
    }
    if epoch != 0 {
        encode_key(EPOCH, WireType::Varint, &mut out);
        encode_varint(epoch, &mut out);
    }
    if seq != 0 {
        encode_key(SEQ, WireType::Varint, &mut out);
        encode_varint(seq, &mut out);
    }
    encode_key(BATCH, WireType::LengthDelimited, &mut out);
    encode_varint(entries as u64, &mut out);
    for message in messages {
        encode_key(MESSAGES, WireType::LengthDelimited, &mut out);
        encode_varint(message.len() as u64, &mut out);
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
