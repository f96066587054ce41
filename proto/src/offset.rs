//! Offsets of the recovery log, as clients see them (docs/recovery.md, "Wire behaviour"):
//! `{tag}.{seq}`, the log stream's incarnation (its creation time in milliseconds) in base 36,
//! then the stream sequence in decimal. A client sends back the last one it saw; one that this
//! module did not make, or that names another incarnation of the stream, is refused, never
//! misread.

/// The offset of sequence `seq` of the stream incarnation `tag`.
pub fn format(tag: u64, seq: u64) -> String {
    let mut digits = Vec::new();
    let mut t = tag;
    loop {
        let d = u8::try_from(t % 36).unwrap_or(0);
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        t /= 36;
        if t == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{}.{seq}", String::from_utf8_lossy(&digits))
}

/// `(tag, seq)` of an offset [`format`] made; `None` for anything else (leading zeros
/// included: each position has one text).
pub fn parse(s: &str) -> Option<(u64, u64)> {
    let (tag, seq) = s.split_once('.')?;
    let padded = |t: &str| t.len() > 1 && t.starts_with('0');
    if padded(tag) || padded(seq) {
        return None;
    }
    let lower36 = |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase();
    if tag.is_empty() || tag.len() > 13 || !tag.bytes().all(lower36) {
        return None;
    }
    if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((u64::from_str_radix(tag, 36).ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_refuse_what_they_cannot_be() {
        for (tag, seq) in [
            (0, 0),
            (1_765_000_000_000, 1),
            (u64::MAX, u64::MAX),
            (35, 36),
        ] {
            let text = format(tag, seq);
            assert_eq!(parse(&text), Some((tag, seq)), "{text}");
        }
        assert_eq!(format(36, 7), "10.7");
        for bad in [
            "",
            ".",
            "a.",
            ".1",
            "a.b",
            "a.-1",
            "a.+1",
            "a.1.2",
            "zzzzzzzzzzzzzz.1",
            "A.1",
            "a_.1",
            "01.1x",
            "00.1",
            "a.01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
