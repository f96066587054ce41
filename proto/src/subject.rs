//! NATS subjects: the only place they are built and parsed (design.md, "NATS contract").
//!
//! # Tokens
//!
//! A NATS subject is a list of `.`-separated tokens; `*` and `>` are wildcards, and whitespace
//! ends a subject in the protocol's control line. Namespace, room and event names come from
//! clients and configuration and may hold any of these, so every name goes through [`escape`]
//! before it becomes a token:
//!
//! - ASCII letters, digits and `-` are kept as they are;
//! - every other byte of the UTF-8 encoding becomes `_` and two uppercase hex digits (`.` is
//!   `_2E`, `_` itself is `_5F`, `ü` is `_C3_BC`);
//! - the empty string becomes the single token `_`, which no other name produces (any other `_`
//!   is followed by two hex digits).
//!
//! The mapping is injective, and [`unescape`] accepts exactly its outputs (no lowercase hex, no
//! escaped letter where the letter itself is expected, no invalid UTF-8), so a name and its token
//! are in one-to-one correspondence: two different rooms never share a subject, and a subject read
//! from the wire decodes to exactly one name. A token is at most three times as long as the name's
//! UTF-8 bytes (plus one for the empty name). This module does not truncate or refuse long
//! names: callers must bound them upstream to [`MAX_NAME_BYTES`] (the gateway refuses longer
//! room names from clients), so a token is at most 768 bytes and a subject stays far below the
//! NATS server's control-line limit (4 KiB by default; a longer subject makes the server drop the
//! whole connection, with every subscription on it).
//!
//! # Subjects
//!
//! [`Subjects`] holds the cluster prefix (default [`DEFAULT_PREFIX`], `sio`) and builds every
//! subject of the contract; [`Subjects::parse`] maps a received subject back to a [`Parsed`].
//! With prefix `p`:
//!
//! | subject | published by | subscribed by |
//! |---|---|---|
//! | `p.member.{node}` | gateway `node`: connect, disconnect, join, leave, with sequence numbers | brokers (`p.member.*`) |
//! | `p.heartbeat.{node}` | gateway `node`: node id, counts, address | brokers (`p.heartbeat.*`) |
//! | `p.room.{ns}.{room}` | anyone emitting to one room | gateways with ≥ 1 local member of the room |
//! | `p.ns.{ns}` | anyone emitting to several rooms, with exceptions, or to the namespace; broker commands by selector | every gateway serving `ns` |
//! | `p.node.{node}` | anyone emitting to specific sockets; broker commands to one node | gateway `node` |
//! | `p.event.{ns}.{event}` | gateways forwarding a client event (request/reply when an ack is wanted) | workers, in a queue group (`p.event.{ns}.*`, `p.event.>`) |
//! | `p.life.{ns}.connect`, `p.life.{ns}.disconnect` | gateways, when a socket connects to or leaves `ns` | workers, in a queue group (`p.life.>`) |
//! | `p.resync` | a broker, on start and on detected gaps | every gateway |
//! | `p.snapshot.{node}` | a broker that saw a gap in `node`'s sequence (request/reply) | gateway `node` |
//!
//! `{ns}`, `{room}` and `{event}` are escaped names (the namespace keeps its leading `/`: `/chat`
//! is `_2Fchat`, the main namespace `/` is `_2F`). `{node}` is a node id; node ids are already
//! plain tokens (`a-z0-9`, 1 to 32 characters) but are escaped anyway, so nothing unvalidated can
//! reach a subject.
//!
//! Every builder returns a subject whose kind token fixes how many tokens follow, so subjects of
//! different kinds, or of the same kind with different names, never coincide.
//!
//! Clusters sharing one NATS account are isolated by their prefixes, which must therefore not be
//! token-wise prefixes of one another (`sio` and `sio.member` would overlap).

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "sio";

/// Longest namespace, room or event name, in bytes, that callers should put in a subject.
///
/// Its token is at most `3 × 256 = 768` bytes, so even a subject with two names and a long prefix
/// fits the NATS server's default 4 KiB control line with room to spare.
pub const MAX_NAME_BYTES: usize = 256;

/// The first token of NATS request/reply inboxes, refused as a prefix.
const RESERVED_INBOX: &str = "_INBOX";

const MEMBER: &str = "member";
const HEARTBEAT: &str = "heartbeat";
const ROOM: &str = "room";
const NAMESPACE: &str = "ns";
const NODE: &str = "node";
const EVENT: &str = "event";
const LIFE: &str = "life";
const CONNECT: &str = "connect";
const DISCONNECT: &str = "disconnect";
const RESYNC: &str = "resync";
const SNAPSHOT: &str = "snapshot";
const PRESENCE: &str = "presence";
const BROKER: &str = "broker";
const RESERVE: &str = "reserve";

/// Uppercase hex digits used by [`escape`].
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Why a prefix, token or subject was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The prefix is not one or more `.`-separated tokens of `[A-Za-z0-9_-]`, or starts with the
    /// reserved `_INBOX` token.
    #[error("invalid subject prefix {0:?}: expected dot-separated tokens of A-Z a-z 0-9 _ -")]
    InvalidPrefix(String),
    /// The token is not the output of [`escape`] for any string (bad character, malformed or
    /// non-canonical escape, or empty).
    #[error("invalid escaped token {0:?}")]
    InvalidToken(String),
    /// The token's escapes decode to bytes that are not UTF-8.
    #[error("escaped token {0:?} does not decode to UTF-8")]
    NotUtf8(String),
    /// The subject does not start with this cluster's prefix.
    #[error("subject {0:?} does not start with this cluster's prefix")]
    ForeignPrefix(String),
    /// The subject has this cluster's prefix but none of the contract's shapes.
    #[error("subject {0:?} is not part of the NATS contract")]
    UnknownSubject(String),
}

/// Whether `escape` keeps this byte as it is.
fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Length of `escape(name)`, without building it.
fn escaped_len(name: &str) -> usize {
    if name.is_empty() {
        return 1;
    }
    name.bytes()
        .map(|b| if is_literal(b) { 1 } else { 3 })
        .sum()
}

/// Appends `escape(name)` to `out`.
fn escape_into(name: &str, out: &mut String) {
    if name.is_empty() {
        out.push('_');
        return;
    }
    for b in name.bytes() {
        if is_literal(b) {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

/// The value of one uppercase hex digit, as [`escape`] writes them.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Turns any string into one valid NATS subject token, injectively.
///
/// ASCII letters, digits and `-` are kept; every other byte of the UTF-8 encoding becomes `_`
/// followed by two uppercase hex digits; the empty string becomes `_`. The result is never
/// empty, is pure ASCII, and never contains `.`, `*`, `>` or whitespace. It is at most
/// `3 × name.len()` bytes long (1 for the empty name); callers bound their names upstream.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(escaped_len(name));
    escape_into(name, &mut out);
    out
}

/// The name a token produced by [`escape`] stands for.
///
/// Accepts exactly the outputs of [`escape`]: anything else (an empty token, a character other
/// than `[A-Za-z0-9_-]`, `_` not followed by two uppercase hex digits, an escaped byte that
/// `escape` would have kept literal) is [`SubjectError::InvalidToken`], and escapes that decode
/// to invalid UTF-8 are [`SubjectError::NotUtf8`]. Hence `unescape(&escape(x)) == Ok(x)` and,
/// whenever `unescape(t)` succeeds, `escape(&unescape(t)?) == t`.
pub fn unescape(token: &str) -> Result<String, SubjectError> {
    if token == "_" {
        return Ok(String::new());
    }
    let invalid = || SubjectError::InvalidToken(token.to_owned());
    if token.is_empty() {
        return Err(invalid());
    }
    let mut out = Vec::with_capacity(token.len());
    let mut bytes = token.bytes();
    while let Some(b) = bytes.next() {
        if is_literal(b) {
            out.push(b);
        } else if b == b'_' {
            let hi = bytes.next().and_then(hex_value).ok_or_else(invalid)?;
            let lo = bytes.next().and_then(hex_value).ok_or_else(invalid)?;
            let value = (hi << 4) | lo;
            if is_literal(value) {
                // `escape` never writes `_41` for `A`: accepting it would give one name two
                // tokens.
                return Err(invalid());
            }
            out.push(value);
        } else {
            return Err(invalid());
        }
    }
    String::from_utf8(out).map_err(|_| SubjectError::NotUtf8(token.to_owned()))
}

/// A subject read back by [`Subjects::parse`], with its names unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// Membership events (connect, disconnect, join, leave) of gateway `node`.
    Member {
        /// The publishing gateway's node id.
        node: String,
    },
    /// Heartbeats of gateway `node`.
    Heartbeat {
        /// The publishing gateway's node id.
        node: String,
    },
    /// An emit to one room.
    Room {
        /// The namespace, with its leading `/`.
        ns: String,
        /// The room name.
        room: String,
    },
    /// An emit or command for a whole namespace, filtered by the receiving gateways.
    Namespace {
        /// The namespace, with its leading `/`.
        ns: String,
    },
    /// An emit or command for sockets of gateway `node`.
    Node {
        /// The owning gateway's node id.
        node: String,
    },
    /// A client event forwarded to workers.
    Event {
        /// The namespace, with its leading `/`.
        ns: String,
        /// The event name.
        event: String,
    },
    /// A socket connected to a namespace (notice for workers).
    Connect {
        /// The namespace, with its leading `/`.
        ns: String,
    },
    /// A socket left a namespace (notice for workers).
    Disconnect {
        /// The namespace, with its leading `/`.
        ns: String,
    },
    /// A broker asks every gateway to resend its membership.
    Resync,
    /// A broker asks gateway `node` for a full membership snapshot.
    Snapshot {
        /// The gateway asked.
        node: String,
    },
    /// Presence changes of a namespace, announced by the leading broker.
    Presence {
        /// The namespace, with its leading `/`.
        ns: String,
    },
    /// A gateway asks a broker to admit a socket into a room with a capacity.
    Reserve,
}

/// Builds and parses the subjects of one cluster, identified by its prefix.
///
/// Build one from configuration at start-up (before connecting to NATS) and share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// Validated: one or more `.`-separated tokens of `[A-Za-z0-9_-]`.
    prefix: String,
}

impl Default for Subjects {
    /// Subjects under [`DEFAULT_PREFIX`].
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix`: one or more `.`-separated tokens of `[A-Za-z0-9_-]`, not starting
    /// with `_INBOX` (NATS request/reply inboxes live there). The prefix is used as it is, not
    /// escaped.
    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let first_reserved = prefix.split('.').next() == Some(RESERVED_INBOX);
        if prefix.split('.').all(token_ok) && !first_reserved {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(SubjectError::InvalidPrefix(prefix.to_owned()))
        }
    }

    /// The cluster prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.{kind}` followed by `.{escape(name)}` for each name, then `.{suffix}` for each
    /// literal suffix token.
    fn build(&self, kind: &str, names: &[&str], suffix: &[&str]) -> String {
        let len = self.prefix.len()
            + 1
            + kind.len()
            + names.iter().map(|n| 1 + escaped_len(n)).sum::<usize>()
            + suffix.iter().map(|s| 1 + s.len()).sum::<usize>();
        let mut out = String::with_capacity(len);
        out.push_str(&self.prefix);
        out.push('.');
        out.push_str(kind);
        for name in names {
            out.push('.');
            escape_into(name, &mut out);
        }
        for token in suffix {
            out.push('.');
            out.push_str(token);
        }
        out
    }

    /// `{p}.member.{node}`: membership events published by gateway `node`.
    pub fn member(&self, node: &str) -> String {
        self.build(MEMBER, &[node], &[])
    }

    /// `{p}.member.*`: membership events of every gateway (brokers subscribe).
    pub fn all_members(&self) -> String {
        self.build(MEMBER, &[], &["*"])
    }

    /// `{p}.heartbeat.{node}`: heartbeats published by gateway `node`.
    pub fn heartbeat(&self, node: &str) -> String {
        self.build(HEARTBEAT, &[node], &[])
    }

    /// `{p}.heartbeat.*`: heartbeats of every gateway (brokers subscribe).
    pub fn all_heartbeats(&self) -> String {
        self.build(HEARTBEAT, &[], &["*"])
    }

    /// `{p}.room.{ns}.{room}`: emits to one room; a gateway subscribes while it holds a member.
    pub fn room(&self, ns: &str, room: &str) -> String {
        self.build(ROOM, &[ns, room], &[])
    }

    /// `{p}.room.{ns}.*`: emits to every room of a namespace.
    pub fn all_rooms_in(&self, ns: &str) -> String {
        self.build(ROOM, &[ns], &["*"])
    }

    /// `{p}.ns.{ns}`: emits to several rooms, with exceptions or to the whole namespace, and
    /// commands by selector; every gateway serving `ns` subscribes and filters locally.
    pub fn namespace(&self, ns: &str) -> String {
        self.build(NAMESPACE, &[ns], &[])
    }

    /// `{p}.node.{node}`: emits to specific sockets and commands for gateway `node`, the owner
    /// named in their sids.
    pub fn node(&self, node: &str) -> String {
        self.build(NODE, &[node], &[])
    }

    /// `{p}.event.{ns}.{event}`: client event `event` of namespace `ns` forwarded to workers
    /// (a request when the client wants an ack).
    pub fn event(&self, ns: &str, event: &str) -> String {
        self.build(EVENT, &[ns, event], &[])
    }

    /// `{p}.event.{ns}.*`: every forwarded event of one namespace (workers subscribe).
    pub fn all_events_in(&self, ns: &str) -> String {
        self.build(EVENT, &[ns], &["*"])
    }

    /// `{p}.event.>`: every forwarded event of every namespace (workers subscribe).
    pub fn all_events(&self) -> String {
        self.build(EVENT, &[], &[">"])
    }

    /// `{p}.life.{ns}.connect`: a socket connected to namespace `ns` (notice for workers).
    pub fn connect(&self, ns: &str) -> String {
        self.build(LIFE, &[ns], &[CONNECT])
    }

    /// `{p}.life.{ns}.disconnect`: a socket left namespace `ns` (notice for workers).
    pub fn disconnect(&self, ns: &str) -> String {
        self.build(LIFE, &[ns], &[DISCONNECT])
    }

    /// `{p}.life.>`: connect and disconnect notices of every namespace (workers subscribe).
    pub fn all_life(&self) -> String {
        self.build(LIFE, &[], &[">"])
    }

    /// `{p}.resync`: a broker asks every gateway to resend its membership.
    pub fn resync(&self) -> String {
        self.build(RESYNC, &[], &[])
    }

    /// `{p}.snapshot.{node}`: a broker requests a full membership snapshot from gateway `node`.
    pub fn snapshot(&self, node: &str) -> String {
        self.build(SNAPSHOT, &[node], &[])
    }

    /// `{p}.presence.{ns}`: presence changes of namespace `ns` (users joining and leaving rooms,
    /// coming online and going offline), published by the leading broker.
    pub fn presence(&self, ns: &str) -> String {
        self.build(PRESENCE, &[ns], &[])
    }

    /// `{p}.presence.*`: presence changes of every namespace.
    pub fn all_presence(&self) -> String {
        self.build(PRESENCE, &[], &["*"])
    }

    /// `{p}.broker.reserve`: request/reply, a gateway asks a broker (queue group) to admit a
    /// socket into a room that has a capacity, decided for the whole cluster.
    pub fn reserve(&self) -> String {
        self.build(BROKER, &[], &[RESERVE])
    }

    /// The subject a message arrived on, with its names unescaped: the inverse of the builders
    /// above (wildcard subscriptions are not subjects and do not parse).
    ///
    /// Allocates the unescaped names; on the fan-out path, prefer telling subscriptions apart by
    /// the subscription itself over parsing each message's subject.
    pub fn parse(&self, subject: &str) -> Result<Parsed, SubjectError> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or_else(|| SubjectError::ForeignPrefix(subject.to_owned()))?;
        let mut tokens = rest.split('.');
        let kind = tokens.next();
        let a = tokens.next();
        let b = tokens.next();
        if tokens.next().is_some() {
            return Err(SubjectError::UnknownSubject(subject.to_owned()));
        }
        let parsed = match (kind, a, b) {
            (Some(MEMBER), Some(node), None) => Parsed::Member {
                node: unescape(node)?,
            },
            (Some(HEARTBEAT), Some(node), None) => Parsed::Heartbeat {
                node: unescape(node)?,
            },
            (Some(ROOM), Some(ns), Some(room)) => Parsed::Room {
                ns: unescape(ns)?,
                room: unescape(room)?,
            },
            (Some(NAMESPACE), Some(ns), None) => Parsed::Namespace { ns: unescape(ns)? },
            (Some(NODE), Some(node), None) => Parsed::Node {
                node: unescape(node)?,
            },
            (Some(EVENT), Some(ns), Some(event)) => Parsed::Event {
                ns: unescape(ns)?,
                event: unescape(event)?,
            },
            (Some(LIFE), Some(ns), Some(CONNECT)) => Parsed::Connect { ns: unescape(ns)? },
            (Some(LIFE), Some(ns), Some(DISCONNECT)) => Parsed::Disconnect { ns: unescape(ns)? },
            (Some(RESYNC), None, None) => Parsed::Resync,
            (Some(SNAPSHOT), Some(node), None) => Parsed::Snapshot {
                node: unescape(node)?,
            },
            (Some(PRESENCE), Some(ns), None) => Parsed::Presence { ns: unescape(ns)? },
            (Some(BROKER), Some(RESERVE), None) => Parsed::Reserve,
            _ => return Err(SubjectError::UnknownSubject(subject.to_owned())),
        };
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// Random inputs per property test.
    const CASES: usize = 100_000;

    /// Xorshift64: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const PUNCTUATION: &[char] = &[
        ' ', '.', '*', '>', '_', '-', '/', '%', '\t', '\n', '\r', '\0', '\u{7F}', '!', '#', '$',
        ':', ';', ',', '~', '"', '\\',
    ];
    const MULTIBYTE: &[char] = &[
        'é',
        'ü',
        'ı',
        'Ω',
        '中',
        '🎉',
        '\u{80}',
        '\u{7FF}',
        '\u{800}',
        '\u{FFFF}',
        '\u{10000}',
        '\u{10FFFF}',
        '\u{2028}',
        '\u{A0}',
    ];
    const TRICKY: &[&str] = &["_2E", "_5F", "_", "2E", "_2", "__", "..", ".*", ".>"];

    /// A random name mixing ASCII, punctuation, `_`, multi-byte unicode, escape look-alikes and
    /// the empty string.
    fn name(rng: &mut Rng) -> String {
        let mut s = String::new();
        if rng.below(10) == 0 {
            return s;
        }
        for _ in 0..1 + rng.below(10) {
            match rng.below(6) {
                0 => s.push(char::from(rng.pick(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                ))),
                1 => s.push(rng.pick(PUNCTUATION)),
                2 => s.push('_'),
                3 => s.push(rng.pick(MULTIBYTE)),
                4 => {
                    let c = char::from_u32((rng.next() % 0x11_0000) as u32).unwrap_or('\u{FFFD}');
                    s.push(c);
                }
                _ => s.push_str(rng.pick(TRICKY)),
            }
        }
        s
    }

    fn is_token(t: &str) -> bool {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// A valid NATS subject whose tokens are plain, except `*` (any token) and a final `>` when
    /// `wildcards` is set.
    fn is_subject(s: &str, wildcards: bool) -> bool {
        let tokens: Vec<&str> = s.split('.').collect();
        let last = tokens.len() - 1;
        !s.is_empty()
            && tokens.iter().enumerate().all(|(i, t)| match *t {
                "*" => wildcards,
                ">" => wildcards && i == last,
                t => is_token(t),
            })
    }

    /// NATS subject matching of a subscription `pattern`.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn escape_vectors() {
        let cases = [
            ("a.b", "a_2Eb"),
            ("", "_"),
            ("*", "_2A"),
            (">", "_3E"),
            ("x y", "x_20y"),
            ("_", "_5F"),
            ("ünï", "_C3_BCn_C3_AF"),
            ("/chat", "_2Fchat"),
            ("/", "_2F"),
            ("room-1", "room-1"),
            ("Ab9", "Ab9"),
            ("\t\n", "_09_0A"),
            ("\0", "_00"),
            ("\u{7F}", "_7F"),
            ("🎉", "_F0_9F_8E_89"),
            ("_2E", "_5F2E"),
            ("a..b", "a_2E_2Eb"),
            ("%41", "_2541"),
            ("user:42", "user_3A42"),
        ];
        for (name, token) in cases {
            assert_eq!(escape(name), token, "escape({name:?})");
            assert_eq!(unescape(token).as_deref(), Ok(name), "unescape({token:?})");
        }
    }

    #[test]
    fn unescape_refuses_what_escape_never_writes() {
        let invalid = [
            "", "a.b", "a b", "*", ">", "é", "a_", "_2", "_G0", "__", "_5F_", "_2e", "_2D", "_41",
            "_7A", "_30", "x\n",
        ];
        for token in invalid {
            assert_eq!(
                unescape(token),
                Err(SubjectError::InvalidToken(token.to_owned())),
                "{token:?}"
            );
        }
        let not_utf8 = ["_FF", "_C3", "_C3_28", "_ED_A0_80", "_C0_AF", "a_80"];
        for token in not_utf8 {
            assert_eq!(
                unescape(token),
                Err(SubjectError::NotUtf8(token.to_owned())),
                "{token:?}"
            );
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["sio", "a.b", "my_app-1.sio", "A", "x._INBOX", "_inbox"] {
            assert_eq!(
                Subjects::new(ok).map(|s| s.prefix().to_owned()),
                Ok(ok.to_owned())
            );
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a*", ">", "a.>", "ü", "_INBOX", "_INBOX.x", "a\n",
        ] {
            assert_eq!(
                Subjects::new(bad),
                Err(SubjectError::InvalidPrefix(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(Subjects::default().prefix(), DEFAULT_PREFIX);
        assert_eq!(Subjects::new("sio"), Ok(Subjects::default()));
    }

    #[test]
    fn builder_vectors() {
        let s = Subjects::default();
        let cases = [
            (s.member("gw1"), "sio.member.gw1"),
            (s.all_members(), "sio.member.*"),
            (s.heartbeat("gw1"), "sio.heartbeat.gw1"),
            (s.all_heartbeats(), "sio.heartbeat.*"),
            (s.room("/chat", "a.b"), "sio.room._2Fchat.a_2Eb"),
            (s.room("/", ""), "sio.room._2F._"),
            (s.all_rooms_in("/chat"), "sio.room._2Fchat.*"),
            (s.namespace("/"), "sio.ns._2F"),
            (s.node("k3x9q2"), "sio.node.k3x9q2"),
            (s.event("/chat", "message"), "sio.event._2Fchat.message"),
            (s.event("/", "a b"), "sio.event._2F.a_20b"),
            (s.all_events_in("/chat"), "sio.event._2Fchat.*"),
            (s.all_events(), "sio.event.>"),
            (s.connect("/chat"), "sio.life._2Fchat.connect"),
            (s.disconnect("/chat"), "sio.life._2Fchat.disconnect"),
            (s.all_life(), "sio.life.>"),
            (s.resync(), "sio.resync"),
            (s.snapshot("gw1"), "sio.snapshot.gw1"),
            (s.presence("/chat"), "sio.presence._2Fchat"),
            (s.all_presence(), "sio.presence.*"),
            (s.reserve(), "sio.broker.reserve"),
            // Unvalidated node ids are escaped too.
            (s.node("a.*"), "sio.node.a_2E_2A"),
        ];
        for (built, expected) in cases {
            assert_eq!(built, expected);
        }
        let p = Subjects::new("prod.eu-1").expect("valid prefix");
        assert_eq!(p.room("/", "r"), "prod.eu-1.room._2F.r");
        assert_eq!(p.resync(), "prod.eu-1.resync");
    }

    #[test]
    fn parse_vectors() {
        let s = Subjects::default();
        let own = |x: &str| x.to_owned();
        let cases = [
            ("sio.member.gw1", Parsed::Member { node: own("gw1") }),
            ("sio.heartbeat.gw1", Parsed::Heartbeat { node: own("gw1") }),
            (
                "sio.room._2Fchat.a_2Eb",
                Parsed::Room {
                    ns: own("/chat"),
                    room: own("a.b"),
                },
            ),
            ("sio.ns._2F", Parsed::Namespace { ns: own("/") }),
            ("sio.node.gw1", Parsed::Node { node: own("gw1") }),
            (
                "sio.event._2F.message",
                Parsed::Event {
                    ns: own("/"),
                    event: own("message"),
                },
            ),
            ("sio.life._2F.connect", Parsed::Connect { ns: own("/") }),
            (
                "sio.life._2F.disconnect",
                Parsed::Disconnect { ns: own("/") },
            ),
            ("sio.resync", Parsed::Resync),
            ("sio.snapshot.gw1", Parsed::Snapshot { node: own("gw1") }),
            ("sio.presence._2F", Parsed::Presence { ns: own("/") }),
            ("sio.broker.reserve", Parsed::Reserve),
        ];
        for (subject, parsed) in cases {
            assert_eq!(s.parse(subject), Ok(parsed), "{subject:?}");
        }

        let foreign = [
            "other.member.x",
            "sio",
            "siox.member.a",
            "",
            "si",
            ".sio.resync",
        ];
        for subject in foreign {
            assert_eq!(
                s.parse(subject),
                Err(SubjectError::ForeignPrefix(subject.to_owned())),
                "{subject:?}"
            );
        }
        let unknown = [
            "sio.",
            "sio.member",
            "sio.member.a.b",
            "sio.room._2F",
            "sio.room._2F.a.b",
            "sio.life._2F",
            "sio.life._2F.other",
            "sio.life._2F.connect.x",
            "sio.resync.x",
            "sio.event.>",
            "sio.bogus.x",
            "sio.Member.x",
        ];
        for subject in unknown {
            assert_eq!(
                s.parse(subject),
                Err(SubjectError::UnknownSubject(subject.to_owned())),
                "{subject:?}"
            );
        }
        let bad_token = [
            ("sio.member.*", "*"),
            ("sio.member.", ""),
            ("sio.room.*.x", "*"),
            ("sio.room._2F.*", "*"),
            ("sio.event._2f.x", "_2f"),
            ("sio.life..connect", ""),
        ];
        for (subject, token) in bad_token {
            assert_eq!(
                s.parse(subject),
                Err(SubjectError::InvalidToken(token.to_owned())),
                "{subject:?}"
            );
        }
        assert_eq!(
            s.parse("sio.room._2F._FF"),
            Err(SubjectError::NotUtf8("_FF".to_owned()))
        );
        let multi = Subjects::new("a.b").expect("valid prefix");
        assert_eq!(multi.parse("a.b.resync"), Ok(Parsed::Resync));
        assert_eq!(
            multi.parse("a.resync"),
            Err(SubjectError::ForeignPrefix("a.resync".to_owned()))
        );
    }

    #[test]
    fn escape_is_an_injective_token_map() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut empty = 0;
        for _ in 0..CASES {
            let name = name(&mut rng);
            empty += usize::from(name.is_empty());
            let token = escape(&name);
            assert!(is_token(&token), "escape({name:?}) = {token:?}");
            assert!(token.len() <= 3 * name.len().max(1), "{name:?}");
            assert_eq!(token.len(), escaped_len(&name));
            assert_eq!(unescape(&token).as_deref(), Ok(name.as_str()), "{token:?}");
            if let Some(other) = seen.insert(token.clone(), name.clone()) {
                assert_eq!(other, name, "two names share the token {token:?}");
            }
        }
        // The generator really produced the interesting cases.
        assert!(empty > CASES / 20, "{empty}");
        assert!(seen.len() > CASES / 2, "{}", seen.len());
    }

    #[test]
    fn unescape_accepts_only_canonical_tokens() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let alphabet = b"_0123456789ABCDEFaf-xZ.*> ";
        let mut accepted = 0;
        for _ in 0..CASES {
            let token: String = (0..rng.below(12))
                .map(|_| char::from(rng.pick(alphabet)))
                .collect();
            if let Ok(name) = unescape(&token) {
                accepted += 1;
                assert_eq!(escape(&name), token, "{name:?}");
            }
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn builders_make_valid_subjects_that_parse_back() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let prefixes = ["sio", "a.b", "x_y-1.Z"];
        for _ in 0..CASES {
            let s = Subjects::new(rng.pick(&prefixes)).expect("valid prefix");
            let (ns, a, node) = (name(&mut rng), name(&mut rng), name(&mut rng));
            let own = || ns.clone();
            let concrete = [
                (s.member(&node), Parsed::Member { node: node.clone() }),
                (s.heartbeat(&node), Parsed::Heartbeat { node: node.clone() }),
                (
                    s.room(&ns, &a),
                    Parsed::Room {
                        ns: own(),
                        room: a.clone(),
                    },
                ),
                (s.namespace(&ns), Parsed::Namespace { ns: own() }),
                (s.node(&node), Parsed::Node { node: node.clone() }),
                (
                    s.event(&ns, &a),
                    Parsed::Event {
                        ns: own(),
                        event: a.clone(),
                    },
                ),
                (s.connect(&ns), Parsed::Connect { ns: own() }),
                (s.disconnect(&ns), Parsed::Disconnect { ns: own() }),
                (s.resync(), Parsed::Resync),
                (s.snapshot(&node), Parsed::Snapshot { node: node.clone() }),
                (s.presence(&ns), Parsed::Presence { ns: own() }),
                (s.reserve(), Parsed::Reserve),
            ];
            for (subject, parsed) in concrete {
                assert!(is_subject(&subject, false), "{subject:?}");
                assert!(subject.starts_with(&format!("{}.", s.prefix())));
                assert_eq!(s.parse(&subject), Ok(parsed), "{subject:?}");
            }
            let wildcards = [
                (s.all_members(), s.member(&node), s.heartbeat(&node)),
                (s.all_heartbeats(), s.heartbeat(&node), s.member(&node)),
                (s.all_rooms_in(&ns), s.room(&ns, &a), s.event(&ns, &a)),
                (s.all_events_in(&ns), s.event(&ns, &a), s.room(&ns, &a)),
                (s.all_events(), s.event(&ns, &a), s.connect(&ns)),
                (s.all_life(), s.connect(&ns), s.event(&ns, &a)),
                (s.all_life(), s.disconnect(&ns), s.namespace(&ns)),
                (s.all_presence(), s.presence(&ns), s.namespace(&ns)),
            ];
            for (pattern, hit, miss) in wildcards {
                assert!(is_subject(&pattern, true), "{pattern:?}");
                assert!(!is_subject(&pattern, false), "{pattern:?}");
                assert!(s.parse(&pattern).is_err(), "{pattern:?}");
                assert!(matches(&pattern, &hit), "{pattern:?} {hit:?}");
                assert!(!matches(&pattern, &miss), "{pattern:?} {miss:?}");
            }
            // A wildcard on one namespace never reaches another's subjects.
            let other = name(&mut rng);
            if other != ns {
                assert!(!matches(&s.all_events_in(&ns), &s.event(&other, &a)));
                assert!(!matches(&s.all_rooms_in(&ns), &s.room(&other, &a)));
            }
        }
    }

    #[test]
    fn longest_names_fit_a_control_line() {
        let worst = "\u{10FFFF}".repeat(MAX_NAME_BYTES / 4);
        assert_eq!(worst.len(), MAX_NAME_BYTES);
        assert_eq!(escape(&worst).len(), 3 * MAX_NAME_BYTES);
        let s = Subjects::new(&"p".repeat(256)).expect("valid prefix");
        for subject in [s.room(&worst, &worst), s.event(&worst, &worst)] {
            // `PUB <subject> <reply inbox> <size>\r\n` must fit in 4096 bytes.
            assert!(subject.len() + 200 < 4096, "{}", subject.len());
        }
    }

    #[test]
    fn different_names_never_share_a_subject() {
        let s = Subjects::default();
        assert_ne!(s.room("a.b", "c"), s.room("a", "b.c"));
        assert_ne!(s.room("", "a"), s.room("a", ""));
        assert_ne!(s.event("a", "b"), s.room("a", "b"));
        assert_ne!(s.connect("/"), s.event("/", "connect"));

        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let mut rooms: HashMap<String, (String, String)> = HashMap::new();
        let mut all: HashSet<String> = HashSet::new();
        for _ in 0..CASES {
            let pair = (name(&mut rng), name(&mut rng));
            let subject = s.room(&pair.0, &pair.1);
            if let Some(other) = rooms.insert(subject.clone(), pair.clone()) {
                assert_eq!(other, pair, "two rooms share {subject:?}");
            }
            all.insert(subject);
        }
        // Subjects of other kinds never collide with room subjects.
        for _ in 0..CASES / 10 {
            let (ns, x) = (name(&mut rng), name(&mut rng));
            for subject in [
                s.event(&ns, &x),
                s.namespace(&ns),
                s.connect(&ns),
                s.member(&x),
                s.node(&x),
            ] {
                assert!(!all.contains(&subject), "{subject:?}");
            }
        }
    }

    #[test]
    fn parse_never_panics() {
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        let s = Subjects::default();
        let heads = [
            "sio.",
            "sio.room.",
            "sio.life.",
            "sio.event._2F.",
            "",
            "sio",
        ];
        for _ in 0..CASES {
            let subject = format!("{}{}", rng.pick(&heads), name(&mut rng));
            if let Ok(parsed) = s.parse(&subject) {
                // Anything that parses was built by a builder: rebuilding gives the same subject.
                let rebuilt = match &parsed {
                    Parsed::Member { node } => s.member(node),
                    Parsed::Heartbeat { node } => s.heartbeat(node),
                    Parsed::Room { ns, room } => s.room(ns, room),
                    Parsed::Namespace { ns } => s.namespace(ns),
                    Parsed::Node { node } => s.node(node),
                    Parsed::Event { ns, event } => s.event(ns, event),
                    Parsed::Connect { ns } => s.connect(ns),
                    Parsed::Disconnect { ns } => s.disconnect(ns),
                    Parsed::Resync => s.resync(),
                    Parsed::Snapshot { node } => s.snapshot(node),
                    Parsed::Presence { ns } => s.presence(ns),
                    Parsed::Reserve => s.reserve(),
                };
                assert_eq!(rebuilt, subject);
            }
        }
    }
}
