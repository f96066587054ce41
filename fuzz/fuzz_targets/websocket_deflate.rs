//! permessage-deflate: inflating any bytes never panics and never yields more than the limit
//! (the decompression-bomb bound); frames with RSV1 on a deflate connection go through
//! `parse_with` and `push_inflating` within the limit; and any input compressed with any window
//! inflates back to itself, and is refused as too large one byte below its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_codec::deflate::{Deflater, Inflater, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use switchboard_codec::websocket::{self, Assembler, DecodeError, Message, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    // Small limits make the TooLarge paths reachable.
    let max = usize::from(knob) * 16;
    let mut inflater = Inflater::default();

    // Any bytes as a compressed message.
    let mut out = Vec::new();
    if inflater.inflate(rest, max, &mut out).is_ok() {
        assert!(out.len() <= max);
    }

    // Any bytes as frames on a deflate connection.
    let mut buf = rest.to_vec();
    let mut asm = Assembler::default();
    let mut at = 0;
    while at < buf.len() {
        let head = match websocket::parse_with(&mut buf[at..], Role::Server, max, true) {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => break,
        };
        let payload = &buf[at + head.header_len..at + head.frame_len()];
        match asm.push_inflating(head, payload, max, Some(&mut inflater)) {
            Ok(Some(Message::Text(text))) => assert!(text.len() <= max),
            Ok(Some(Message::Binary(bin))) => assert!(bin.len() <= max),
            Ok(_) => {}
            Err(_) => break,
        }
        at += head.frame_len();
    }

    // Round trip with the knob's window and level.
    let bits = MIN_WINDOW_BITS + knob % (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1);
    let mut z = Vec::new();
    Deflater::new(u32::from(knob / 7 % 10), bits).compress(rest, &mut z);
    let mut back = Vec::new();
    inflater
        .inflate(&z, rest.len(), &mut back)
        .expect("what we compress inflates");
    assert_eq!(back, rest);
    if !rest.is_empty() {
        back.clear();
        assert_eq!(
            inflater.inflate(&z, rest.len() - 1, &mut back),
            Err(DecodeError::TooLarge)
        );
    }
});
