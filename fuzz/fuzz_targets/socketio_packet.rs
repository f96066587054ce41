//! Socket.IO packet text: decoding never panics; a complete packet encodes back to text that
//! decodes to the same packet; a binary header, once given its attachments, does too.
//! `plain_event` (what a history reads from a stored frame) answers only for an EVENT of the
//! namespace asked for, without an ack id, and gives back its name and arguments.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_codec::socketio::{self, Decoded, Packet, PacketType, Reassembly};
use switchboard_fuzz::round_trip;

/// More declared attachments than this are checked for decoding only, to keep runs fast.
const MAX_REASSEMBLED: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = format!("4{text}");
    if let Some((name, args)) = socketio::plain_event(frame.as_bytes(), "/chat") {
        let Ok(Decoded::Complete(p)) = socketio::decode(text) else {
            panic!("plain_event accepted what decode does not complete: {text:?}");
        };
        assert!(p.kind == PacketType::Event && p.nsp == "/chat" && p.id.is_none());
        let mut all = vec![name];
        all.extend(args);
        assert_eq!(p.data, Some(Value::Array(all)));
    }
    let packet = match socketio::decode(text) {
        Err(_) => return,
        Ok(Decoded::Complete(packet)) => packet,
        Ok(Decoded::NeedAttachments(header, n)) => {
            assert!(n > 0);
            if n > MAX_REASSEMBLED {
                return;
            }
            // No byte or time bound here: the checks are about placeholders, not limits.
            let now = Instant::now();
            let mut r = Reassembly::new(header, n, usize::MAX, now + Duration::from_secs(60));
            let mut done = None;
            for i in 0..n {
                assert!(done.is_none(), "completed before the last attachment");
                done = r
                    .push(Bytes::from(vec![i as u8; i]), now)
                    .expect("placeholders were checked");
            }
            let packet = done.expect("complete after the last attachment");
            assert_eq!(packet.attachments.len(), n);
            packet
        }
    };
    assert_eq!(round_trip(&packet), packet);
    check_event_fast_path(&packet);
});

/// For an event named by a string, the broadcast fast path writes the same frames as `encode`.
fn check_event_fast_path(packet: &Packet) {
    if !matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent) {
        return;
    }
    let Some(Value::Array(items)) = &packet.data else {
        return;
    };
    let Some((Value::String(event), args)) = items.split_first() else {
        return;
    };
    if packet.kind == PacketType::BinaryEvent && packet.attachments.is_empty() {
        return; // `450-[…]`: the fast path writes a plain EVENT when there are no attachments.
    }
    let args = Value::Array(args.to_vec());
    let fast = socketio::encode_event(&packet.nsp, event, &args, packet.id, &packet.attachments);
    assert_eq!(fast, socketio::encode(packet));
}
