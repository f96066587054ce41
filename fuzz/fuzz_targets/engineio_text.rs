//! WebSocket text frames: decoding never panics, text stays UTF-8, and a decoded packet
//! survives re-encoding; `decode_ws_text` (what the WebSocket transport uses) agrees with
//! `decode_text` on everything but a `b` + base64 frame, which is a binary message. Binary
//! frames always decode and round-trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_codec::engineio::{self, Frame, Packet, Payload};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(packet) = engineio::decode_text(frame.clone()) {
        assert!(std::str::from_utf8(data).is_ok(), "only UTF-8 text decodes");
        if let Packet::Message(payload) = &packet {
            assert!(payload.text().is_some(), "text payloads are UTF-8");
        }
        let Frame::Text(text, _) = packet.encode() else {
            panic!("a packet decoded from text encodes as text");
        };
        assert_eq!(engineio::decode_text(text), Ok(packet));
    }

    match data.strip_prefix(b"b") {
        None => assert_eq!(
            engineio::decode_ws_text(frame.clone()),
            engineio::decode_text(frame.clone())
        ),
        Some(_) => {
            if let Ok(packet) = engineio::decode_ws_text(frame.clone()) {
                assert!(matches!(packet, Packet::Message(Payload::Binary(_))));
            }
        }
    }

    let packet = engineio::decode_binary(frame.clone());
    assert_eq!(packet, Packet::Message(Payload::Binary(frame.clone())));
    assert_eq!(packet.encode(), Frame::binary(frame));
});
