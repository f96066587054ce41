//! WebSocket frames: parsing never panics or points outside the buffer, with either role;
//! frames feed an assembler whose messages respect the size limit; and any payload written as
//! a frame (masked client frame, or unmasked server frame) parses back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_codec::websocket::{self, Assembler, Message, OpCode, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    // Small limits make the TooLarge paths reachable.
    let max = usize::from(knob) * 4;

    for role in [Role::Server, Role::Client] {
        let mut buf = rest.to_vec();
        let mut asm = Assembler::default();
        let mut at = 0;
        while at < buf.len() {
            let head = match websocket::parse(&mut buf[at..], role, max) {
                Ok(Some(head)) => head,
                Ok(None) | Err(_) => break,
            };
            assert!(head.header_len + head.payload_len <= buf.len() - at);
            assert!(head.payload_len <= max);
            let payload = &buf[at + head.header_len..at + head.frame_len()];
            match asm.push(head, payload, max) {
                Ok(Some(Message::Text(text))) => assert!(text.len() <= max),
                Ok(Some(Message::Binary(bin))) => assert!(bin.len() <= max),
                Ok(Some(Message::Close(Some((code, _))))) => {
                    assert!(websocket::close_code_allowed(code))
                }
                Ok(_) => {}
                Err(_) => break,
            }
            at += head.frame_len();
        }
    }

    // Round trip: the rest of the input as the payload of a frame of the knob's opcode.
    let op = OpCode::ALL[usize::from(knob) % OpCode::ALL.len()];
    let payload = if op.is_control() {
        &rest[..rest.len().min(125)]
    } else {
        rest
    };
    let mask = [
        knob,
        knob.wrapping_mul(31),
        knob ^ 0x5a,
        knob.rotate_left(3),
    ];

    let mut wire = Vec::new();
    websocket::write_masked(&mut wire, op, payload, mask);
    let head = websocket::parse(&mut wire, Role::Server, usize::MAX)
        .expect("a written frame is valid")
        .expect("a written frame is whole");
    assert_eq!(
        (head.fin, head.opcode, head.frame_len()),
        (true, op, wire.len())
    );
    assert_eq!(&wire[head.header_len..], payload);

    let mut wire = Vec::new();
    websocket::write_head(&mut wire, op, payload.len());
    wire.extend_from_slice(payload);
    let head = websocket::parse(&mut wire, Role::Client, usize::MAX)
        .expect("a written frame is valid")
        .expect("a written frame is whole");
    assert_eq!(
        (head.fin, head.opcode, head.frame_len()),
        (true, op, wire.len())
    );
    assert_eq!(&wire[head.header_len..], payload);
});
