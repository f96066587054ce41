//! permessage-deflate on the load generator's WebSocket connections, for
//! `scripts/bench-compress.sh`: with `SWITCHBOARD_LOADTEST_DEFLATE=1` in the environment every
//! WebSocket connection offers the extension (as a browser or Node's `ws` does) and inflates what
//! the server sends compressed, with the gateway's own codec (`switchboard_codec::deflate`).
//! Off by default, so that every other scenario measures what it always measured.

use std::sync::OnceLock;

/// The environment variable that turns the offer on (`1`).
pub(crate) const ENV: &str = "SWITCHBOARD_LOADTEST_DEFLATE";

/// The offer, as a browser makes it.
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Whether WebSocket connections offer permessage-deflate (read once).
pub(crate) fn offered() -> bool {
    static OFFERED: OnceLock<bool> = OnceLock::new();
    *OFFERED.get_or_init(|| std::env::var(ENV).is_ok_and(|v| v == "1"))
}

/// The environment variable that makes `fanout`'s padding chat-like text (`1`) instead of `x`s,
/// which would compress to nothing and flatter compression.
pub(crate) const TEXT_ENV: &str = "SWITCHBOARD_LOADTEST_CHAT_TEXT";

/// `len` bytes of padding for a message: `x`s, or with [`TEXT_ENV`] words of chat drawn from a
/// small vocabulary by a fixed pseudo-random sequence (it compresses about as well as English
/// chat does with a per-message dictionary, not as a repeated letter).
pub(crate) fn padding(len: usize) -> String {
    static TEXT: OnceLock<bool> = OnceLock::new();
    if !*TEXT.get_or_init(|| std::env::var(TEXT_ENV).is_ok_and(|v| v == "1")) {
        return "x".repeat(len);
    }
    const WORDS: [&str; 48] = [
        "the",
        "a",
        "to",
        "and",
        "you",
        "I",
        "is",
        "it",
        "that",
        "in",
        "we",
        "for",
        "on",
        "this",
        "meeting",
        "lunch",
        "tomorrow",
        "today",
        "project",
        "deploy",
        "release",
        "build",
        "test",
        "review",
        "thanks",
        "great",
        "sounds",
        "good",
        "let's",
        "at",
        "noon",
        "call",
        "room",
        "switchboard",
        "gateway",
        "broker",
        "latency",
        "numbers",
        "yesterday",
        "coffee",
        "ok",
        "see",
        "later",
        "can",
        "someone",
        "check",
        "please",
        "done",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let word = WORDS[((state >> 33) % WORDS.len() as u64) as usize];
        out.push_str(word);
        out.push(if (state >> 20).is_multiple_of(9) {
            '.'
        } else {
            ' '
        });
    }
    out.truncate(len);
    out
}

/// Whether a `101` response head agreed permessage-deflate.
pub(crate) fn agreed(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    text.split("\r\n").any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value
                    .trim()
                    .starts_with(switchboard_codec::deflate::EXTENSION)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_is_read_from_the_head() {
        assert!(agreed(
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate; \
              server_no_context_takeover\r\n\r\n"
        ));
        assert!(!agreed(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
        ));
        assert!(!agreed(
            b"HTTP/1.1 101 x\r\nsec-websocket-extensions: x-other\r\n\r\n"
        ));
    }
}
