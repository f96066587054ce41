//! permessage-deflate (RFC 7692): the negotiation of `Sec-WebSocket-Extensions` and the
//! compression and bounded decompression of one message.
//!
//! What is agreed, always: `server_no_context_takeover` and `client_no_context_takeover`. Every
//! message is then compressed and decompressed on its own, so a connection keeps no zlib state
//! between messages and the caller can share one [`Deflater`] and one [`Inflater`] among all the
//! connections of a thread. zlib's context takeover would cost every compressed connection its
//! own window and state (about 300 KB for a deflate stream at window 15, 40 KB for an inflate
//! one); with it, a negotiated connection costs nothing while idle. The price is a worse ratio for
//! small messages, which the threshold keeps uncompressed anyway (as Node's `ws` does).
//!
//! Invariants:
//! - [`negotiate`] never panics on any header bytes; it accepts an offer only if every parameter
//!   is known, appears once and has a valid value, and declines (returns `None`) otherwise.
//! - [`Inflater::inflate`] never produces more than `max` bytes: it stops as soon as the output
//!   would pass `max` ([`DecodeError::TooLarge`], close 1009), so a decompression bomb costs at
//!   most `max` bytes of memory; invalid deflate data is [`DecodeError::InvalidDeflate`].
//! - `inflate(compress(m)) == m` for every message `m` (checked by the tests and the fuzz target
//!   `websocket_deflate`).
//!
//! The backend is flate2 on zlib-rs: it honours `server_max_window_bits` (miniz_oxide has only
//! window 15), and it was faster than miniz_oxide on the JSON messages of `docs/scaling.md`
//! (Compression).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::websocket::DecodeError;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The largest LZ77 window (RFC 7692 section 7.1.2).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window we compress with: zlib cannot write raw deflate with a 256-byte window,
/// so an offer that asks for `server_max_window_bits=8` is declined.
pub const MIN_WINDOW_BITS: u8 = 9;

/// Every deflate block flushed with `Z_SYNC_FLUSH` ends with these bytes; RFC 7692 section 7.2.1
/// removes them from the message and the receiver appends them again.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The window our compressor may use (the client's `server_max_window_bits`, else 15).
    pub server_max_window_bits: u8,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub fn response_header(&self) -> String {
        let mut out =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.server_max_window_bits < MAX_WINDOW_BITS {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        out
    }
}

/// Picks the first acceptable permessage-deflate offer among the request's
/// `Sec-WebSocket-Extensions` values (each may list several extensions, comma-separated).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in value.split(',') {
            let mut parts = offer.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
            {
                continue;
            }
            if let Some(agreement) = accept(parts) {
                return Some(agreement);
            }
        }
    }
    None
}

/// One offer's parameters: `None` declines it (unknown, repeated or invalid parameter, or a
/// window we cannot honour).
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreement> {
    let mut seen = [false; 4];
    let mut server_bits = MAX_WINDOW_BITS;
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        let index = match name {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (2, Some(v)) => server_bits = window_bits(v)?,
            (3, None) => {}
            (3, Some(v)) => {
                // The client's own window: any value it may use, we can inflate (window 15).
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    (server_bits >= MIN_WINDOW_BITS).then_some(Agreement {
        server_max_window_bits: server_bits,
    })
}

/// A window size parameter: 8 to 15, digits only (RFC 7692 section 7.1.2.1).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = v.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// A parameter value as a token or a quoted string (RFC 6455 section 9.1).
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// Compresses messages, each on its own (no context takeover).
pub struct Deflater {
    inner: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor with a window of `window_bits` (clamped to 9..=15).
    pub fn new(level: u32, window_bits: u8) -> Self {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        Self {
            inner: Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits),
        }
    }

    /// Appends `data` compressed as one permessage-deflate message (without the trailing
    /// `00 00 ff ff`) to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.inner.reset();
        let start = out.len();
        let mut consumed = 0;
        loop {
            // Deflate never grows data by more than about 5 bytes per 16 KB block plus the flush.
            out.reserve((data.len() - consumed) / 8 + 64);
            let before = self.inner.total_in();
            let spare_before = out.capacity() - out.len();
            let written_before = out.len();
            // With the output reserved above, a stream error cannot happen (a fresh state, valid
            // flush); a `BufError` only means "no progress possible", handled by the loop.
            let _ = self
                .inner
                .compress_vec(&data[consumed..], out, FlushCompress::Sync);
            consumed += usize::try_from(self.inner.total_in() - before).unwrap_or(0);
            let wrote = out.len() - written_before;
            if consumed == data.len() && wrote < spare_before {
                break;
            }
        }
        if out.len() >= start + TAIL.len() && out[out.len() - TAIL.len()..] == TAIL {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

/// Decompresses messages, each on its own (no context takeover), with a bound on the output.
pub struct Inflater {
    inner: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            inner: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
        }
    }
}

/// Output is grown by at most this much at a time, so a small message never reserves `max`.
const INFLATE_STEP: usize = 16 * 1024;

impl Inflater {
    /// Appends the decompressed `data` (one message, its `00 00 ff ff` removed) to `out`.
    /// Errors: more than `max` bytes of output ([`DecodeError::TooLarge`], found after at most
    /// `max + 1` bytes were produced), invalid deflate data ([`DecodeError::InvalidDeflate`]).
    pub fn inflate(
        &mut self,
        data: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        self.inner.reset(false);
        let start = out.len();
        let limit = start.saturating_add(max).saturating_add(1);
        for input in [data, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                if out.len() == out.capacity() {
                    let room = limit.saturating_sub(out.len()).min(INFLATE_STEP);
                    if room == 0 {
                        return Err(DecodeError::TooLarge);
                    }
                    out.reserve_exact(room);
                }
                let (before_in, before_out) = (self.inner.total_in(), out.len());
                let status = self
                    .inner
                    .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                    .map_err(|_| DecodeError::InvalidDeflate)?;
                consumed += usize::try_from(self.inner.total_in() - before_in).unwrap_or(0);
                if out.len() - start > max {
                    return Err(DecodeError::TooLarge);
                }
                if status == Status::StreamEnd {
                    // A final block: whatever follows it (such as the tail) is not read.
                    return Ok(());
                }
                let progress = self.inner.total_in() != before_in || out.len() != before_out;
                if consumed == input.len() && out.len() < out.capacity() {
                    break;
                }
                if !progress && out.len() < out.capacity() {
                    // Input left, room left, nothing moved: the data cannot be decoded.
                    return Err(DecodeError::InvalidDeflate);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn agreed(bits: u8) -> Option<Agreement> {
        Some(Agreement {
            server_max_window_bits: bits,
        })
    }

    #[test]
    fn negotiation_vectors() {
        let table: &[(&[&str], Option<Agreement>)] = &[
            (&[], None),
            (&["x-webkit-deflate-frame"], None),
            // What browsers and `ws` offer.
            (&["permessage-deflate; client_max_window_bits"], agreed(15)),
            (&["permessage-deflate"], agreed(15)),
            (&["Permessage-Deflate"], agreed(15)),
            (
                &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
                agreed(15),
            ),
            (
                &["permessage-deflate; server_max_window_bits=10"],
                agreed(10),
            ),
            (
                &["permessage-deflate; server_max_window_bits=\"12\""],
                agreed(12),
            ),
            (
                &["permessage-deflate; client_max_window_bits=9"],
                agreed(15),
            ),
            // zlib cannot honour 8: declined, the next offer is taken.
            (&["permessage-deflate; server_max_window_bits=8"], None),
            (
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
                agreed(15),
            ),
            (
                &["foo", "permessage-deflate; server_max_window_bits=11"],
                agreed(11),
            ),
            // Invalid: declined.
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits=7"], None),
            (&["permessage-deflate; server_max_window_bits=010"], None),
            (&["permessage-deflate; server_max_window_bits=+9"], None),
            (&["permessage-deflate; server_max_window_bits=\"9"], None),
            (&["permessage-deflate; client_max_window_bits=0"], None),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (&["permessage-deflate; mystery"], None),
        ];
        for (values, want) in table {
            let got = negotiate(values.iter().map(|v| v.as_bytes()));
            assert_eq!(&got, want, "{values:?}");
        }
        assert_eq!(negotiate([&b"permessage-deflate\xff"[..]]), None);
    }

    #[test]
    fn response_headers() {
        assert_eq!(
            agreed(15).expect("some").response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            agreed(10).expect("some").response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
    }

    #[test]
    fn rfc_7692_examples() {
        // Section 7.2.3.1: "Hello" compressed, without the tail.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut out = Vec::new();
        Inflater::default()
            .inflate(&hello, 100, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
        // Section 7.2.3.3: a stored (uncompressed) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        out.clear();
        Inflater::default()
            .inflate(&stored, 100, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
        // Section 7.2.3.4: two blocks, the first final-less.
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        out.clear();
        Inflater::default()
            .inflate(&two, 100, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
        // Section 7.2.3.5: BFINAL set (the trailing tail is then not read).
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        out.clear();
        Inflater::default()
            .inflate(&last, 100, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
        // What we write for it decodes back.
        let mut z = Vec::new();
        Deflater::new(6, 15).compress(b"Hello", &mut z);
        assert!(!z.ends_with(&TAIL));
        out.clear();
        Inflater::default()
            .inflate(&z, 100, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn inflate_is_bounded() {
        let big = vec![b'a'; 1 << 20];
        let mut z = Vec::new();
        Deflater::new(6, 15).compress(&big, &mut z);
        assert!(
            z.len() < 2048,
            "1 MiB of one byte compresses to {}",
            z.len()
        );
        let mut inf = Inflater::default();
        for max in [0, 1, 1000, 16 * 1024, (1 << 20) - 1] {
            let mut out = Vec::new();
            assert_eq!(
                inf.inflate(&z, max, &mut out),
                Err(DecodeError::TooLarge),
                "max {max}"
            );
            assert!(out.capacity() <= max + 1 + INFLATE_STEP, "max {max}");
        }
        let mut out = Vec::new();
        inf.inflate(&z, 1 << 20, &mut out)
            .expect("exactly the limit");
        assert_eq!(out, big);
    }

    #[test]
    fn invalid_deflate_is_refused() {
        let mut inf = Inflater::default();
        // 0xff: BTYPE 11 is reserved.
        for bad in [
            &[0xffu8][..],
            &[0x07, 0xff, 0xff, 0xff],
            &[0x00, 0x05, 0x00, 0x00, 0x00],
        ] {
            let mut out = Vec::new();
            assert_eq!(
                inf.inflate(bad, 1000, &mut out),
                Err(DecodeError::InvalidDeflate),
                "{bad:02x?}"
            );
        }
        // And the inflater is usable afterwards.
        let mut out = Vec::new();
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 10, &mut out)
            .expect("valid");
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn round_trip_random_messages() {
        let mut rng = Rng::seeded(0x5eed_7692);
        let mut inf = Inflater::default();
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            let mut def = Deflater::new(rng.below(10) as u32, bits);
            for _ in 0..60 {
                let len = match rng.below(3) {
                    0 => rng.below(100),
                    1 => rng.below(5000),
                    _ => rng.below(70_000),
                };
                // Mostly repetitive (JSON-like), sometimes random.
                let msg: Vec<u8> = if rng.below(2) == 0 {
                    (0..len).map(|_| rng.next() as u8).collect()
                } else {
                    let words: [&[u8]; 4] = [b"{\"user\":", b"\"hello\",", b"42,", b"\"text\":"];
                    words
                        .iter()
                        .cycle()
                        .skip(rng.below(4))
                        .flat_map(|w| w.iter().copied())
                        .take(len)
                        .collect()
                };
                let mut z = vec![7u8; 3];
                def.compress(&msg, &mut z);
                assert_eq!(&z[..3], &[7, 7, 7], "compress appends");
                let mut out = Vec::new();
                inf.inflate(&z[3..], msg.len(), &mut out)
                    .expect("round trip");
                assert_eq!(out, msg, "bits {bits} len {len}");
                if !msg.is_empty() {
                    out.clear();
                    assert_eq!(
                        inf.inflate(&z[3..], msg.len() - 1, &mut out),
                        Err(DecodeError::TooLarge)
                    );
                }
            }
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng::seeded(0x5eed_7693);
        let mut inf = Inflater::default();
        for _ in 0..20_000 {
            let len = rng.below(64);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let max = rng.below(300);
            let mut out = Vec::new();
            if inf.inflate(&data, max, &mut out).is_ok() {
                assert!(out.len() <= max);
            }
        }
    }
}
