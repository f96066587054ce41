//! The client side of the WebSocket opening handshake (RFC 6455 section 4): the HTTP/1.1
//! upgrade request and the check of the server's `101 Switching Protocols` answer, including
//! `Sec-WebSocket-Accept` (hence the small SHA-1 below: it runs once per connection).
//!
//! Pure: bytes in, bytes out. The connection code in [`crate::client`] does the I/O.

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Appended to the key before hashing (RFC 6455 section 1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh random `Sec-WebSocket-Key`: 16 random bytes, base64.
pub(crate) fn random_key() -> String {
    BASE64.encode(rand::random::<[u8; 16]>())
}

/// The upgrade request for `path_and_query` on `host` (the `Host` header value).
pub(crate) fn request(host: &str, path_and_query: &str, key: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         \r\n"
    )
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with.
pub(crate) fn accept_for(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha1(&input))
}

/// Length of the response head (through the blank line), once `buf` holds all of it.
pub(crate) fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a complete response head (`head_len` bytes, blank line included) against the key we
/// sent. On failure the error quotes the response (status line and headers) so that it can be
/// reported as it was received.
pub(crate) fn check_response(head: &[u8], key: &str) -> Result<()> {
    let Ok(text) = std::str::from_utf8(head) else {
        bail!(
            "upgrade response is not UTF-8: {:?}",
            String::from_utf8_lossy(head)
        );
    };
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if version != "HTTP/1.1" || code != "101" {
        bail!(
            "expected 101 Switching Protocols, got: {:?}",
            text.trim_end()
        );
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?} in: {:?}", text.trim_end());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value);
        }
    }
    let want = accept_for(key);
    if !upgrade || !connection || accept != Some(want.as_str()) {
        bail!(
            "invalid 101 (want Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Accept: {want}): {:?}",
            text.trim_end()
        );
    }
    Ok(())
}

/// SHA-1 (FIPS 180-4). Only used for the handshake check, where SHA-1 is what the protocol
/// specifies; not for anything that needs collision resistance.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());

    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().expect("chunks of 4"));
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (bytes, word) in out.chunks_exact_mut(4).zip(h) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_vectors() {
        let table: &[(&[u8], &str)] = &[
            (b"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
            ),
            (&[b'a'; 1000], "291e9a6c66994949b57ba5e650361e98fc36b1ba"),
        ];
        for &(input, want) in table {
            assert_eq!(hex(&sha1(input)), want, "input of {} bytes", input.len());
        }
    }

    #[test]
    fn rfc6455_accept() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn random_keys_are_16_bytes() {
        let key = random_key();
        assert_eq!(BASE64.decode(&key).expect("base64").len(), 16);
        assert_ne!(key, random_key());
    }

    #[test]
    fn request_text() {
        let r = request(
            "127.0.0.1:3000",
            "/socket.io/?EIO=4&transport=websocket",
            "k==",
        );
        assert!(r.starts_with(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
        ));
        assert!(r.contains("\r\nSec-WebSocket-Key: k==\r\n"));
        assert!(r.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
    }

    #[test]
    fn responses() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let table: &[(&str, bool)] = &[
            (good, true),
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: AAAA\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 101\r\nbroken\r\n\r\n", false),
        ];
        for &(text, ok) in table {
            assert_eq!(head_len(text.as_bytes()), Some(text.len()));
            assert_eq!(check_response(text.as_bytes(), key).is_ok(), ok, "{text:?}");
        }
        let err = check_response(table[1].0.as_bytes(), key).expect_err("400");
        assert!(
            err.to_string().contains("HTTP/1.1 400 Bad Request"),
            "{err}"
        );
        assert_eq!(head_len(b"HTTP/1.1 101 Switching Protocols\r\n"), None);
    }
}
