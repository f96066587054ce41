//! The direct polling path's request-head parser (`switchboard_gateway::transport::head`):
//! never panics; a complete head lies inside the buffer, parses the same from exactly its own
//! bytes and with anything after it, and agrees with httparse on method, target and header count;
//! a head rebuilt from what was parsed parses back to the same facts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::transport::head::{self, Head, Method, Parse};

const MAX_HEADERS: usize = 64;

fn facts(
    h: &Head<'_>,
) -> (
    Method,
    String,
    Option<String>,
    Option<u64>,
    bool,
    bool,
    bool,
) {
    (
        h.method,
        h.path.to_owned(),
        h.query.map(str::to_owned),
        h.content_length,
        h.close,
        h.forwarded,
        h.origin.is_some(),
    )
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [head::EMPTY_HEADER; MAX_HEADERS];
    let Parse::Complete(h) = head::parse(data, &mut headers) else {
        return;
    };
    assert!(h.len <= data.len() && h.headers <= MAX_HEADERS);
    assert!(h.path.starts_with('/'));
    let want = facts(&h);
    let (len, unusual, n) = (h.len, h.unusual, h.headers);

    // Exactly its own bytes, and with a tail: the same head.
    let mut again = [head::EMPTY_HEADER; MAX_HEADERS];
    match head::parse(&data[..len], &mut again) {
        Parse::Complete(g) => {
            assert_eq!(facts(&g), want);
            assert_eq!((g.len, g.unusual, g.headers), (len, unusual, n));
        }
        other => panic!("own bytes: {other:?}"),
    }

    // A request rebuilt from the parsed facts (plain headers only) parses back to them.
    if !unusual {
        let (method, path, query, length, close, forwarded, _) = &want;
        let mut rebuilt = match method {
            Method::Get => "GET ".to_owned(),
            Method::Post => "POST ".to_owned(),
            Method::Other => "PUT ".to_owned(),
        };
        rebuilt.push_str(path);
        if let Some(q) = query {
            rebuilt.push('?');
            rebuilt.push_str(q);
        }
        rebuilt.push_str(" HTTP/1.1\r\n");
        if let Some(n) = length {
            rebuilt.push_str(&format!("Content-Length: {n}\r\n"));
        }
        if *close {
            rebuilt.push_str("Connection: close\r\n");
        }
        if *forwarded {
            rebuilt.push_str("X-Switchboard-Forwarded: x\r\n");
        }
        rebuilt.push_str("\r\n");
        let mut third = [head::EMPTY_HEADER; MAX_HEADERS];
        match head::parse(rebuilt.as_bytes(), &mut third) {
            Parse::Complete(g) => {
                let mut got = facts(&g);
                got.6 = want.6;
                assert_eq!(got, want, "{rebuilt:?}");
                assert!(!g.unusual);
                assert_eq!(g.len, rebuilt.len());
            }
            other => panic!("rebuilt {rebuilt:?}: {other:?}"),
        }
    }
});
