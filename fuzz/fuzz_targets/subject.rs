//! NATS subjects (`proto/src/subject.rs`): token escaping and `Subjects::parse`.
//!
//! - `escape` gives a non-empty token of `[A-Za-z0-9_-]`, at most 3 bytes per name byte (1 for
//!   the empty name), that `unescape` turns back into the name;
//! - whatever `unescape` accepts, `escape` writes back byte for byte (one token per name);
//! - a builder refuses exactly the names over `MAX_NAME_BYTES`; a subject built for any other
//!   names parses back to those names, and is at most the prefix, the fixed tokens and the
//!   escaped names long;
//! - whatever `parse` accepts, the builder for what it parsed gives back the very same subject.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchboard_proto::subject::{self, MAX_NAME_BYTES, Parsed, SubjectError, Subjects};

const PREFIXES: &[&str] = &["sio", "t", "a.b", "x_y-1", "_INBOX", "", "a..b", "s io"];
/// Tokens received subjects are made of, so that parsing gets past the kind token.
const TOKENS: &[&str] = &[
    "sio",
    "t",
    "member",
    "heartbeat",
    "room",
    "ns",
    "node",
    "event",
    "life",
    "connect",
    "disconnect",
    "resync",
    "snapshot",
    "presence",
    "broker",
    "reserve",
    "_",
    "_2F",
    "_2Fchat",
    "_5F",
    "_41",
    "_2f",
    "_C3_BC",
    "_C3",
    "_FF",
    "a",
    "",
    "*",
    ">",
    "a b",
];
/// Longest fixed part of a subject after the prefix: `.presence.` or `.life.` + `.disconnect`.
const MAX_FIXED_BYTES: usize = ".life.".len() + ".disconnect".len();

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let prefix: String = if u.ratio(1, 4)? {
        u.arbitrary()?
    } else {
        (*u.choose(PREFIXES)?).to_owned()
    };
    let subjects = match Subjects::new(&prefix) {
        Ok(s) => {
            assert_eq!(s.prefix(), prefix);
            s
        }
        Err(_) => Subjects::default(),
    };
    match u.int_in_range(0..=3u8)? {
        0 => names(u, &subjects),
        1 => {
            let token: String = u.arbitrary()?;
            tokens(&token);
            received(&subjects, &token);
            Ok(())
        }
        _ => {
            let mut subject = subjects.prefix().to_owned();
            for _ in 0..u.int_in_range(0..=4u8)? {
                subject.push('.');
                if u.ratio(1, 4)? {
                    subject.push_str(&subject::escape(&u.arbitrary::<String>()?));
                } else {
                    subject.push_str(u.choose(TOKENS)?);
                }
            }
            for token in subject.split('.') {
                tokens(token);
            }
            received(&subjects, &subject);
            Ok(())
        }
    }
}

/// Escaping round-trips both ways.
fn tokens(token: &str) {
    if let Ok(name) = subject::unescape(token) {
        assert_eq!(subject::escape(&name), token, "{token:?} is not canonical");
    }
}

/// Every builder, for arbitrary names, parses back.
fn names(u: &mut Unstructured<'_>, s: &Subjects) -> Result<()> {
    let a: String = u.arbitrary()?;
    let b: String = u.arbitrary()?;
    for name in [&a, &b] {
        let token = subject::escape(name);
        assert!(!token.is_empty());
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(token.len() <= (3 * name.len()).max(1));
        assert_eq!(subject::unescape(&token).as_deref(), Ok(name.as_str()));
    }
    let (a, b) = (a.as_str(), b.as_str());
    let built = [
        (s.member(a), Parsed::Member { node: a.into() }),
        (
            s.command_namespace(a),
            Parsed::CommandNamespace { ns: a.into() },
        ),
        (s.command_node(a), Parsed::CommandNode { node: a.into() }),
        (s.heartbeat(a), Parsed::Heartbeat { node: a.into() }),
        (
            s.room(a, b),
            Parsed::Room {
                ns: a.into(),
                room: b.into(),
            },
        ),
        (s.namespace(a), Parsed::Namespace { ns: a.into() }),
        (s.node(a), Parsed::Node { node: a.into() }),
        (
            s.event(a, b),
            Parsed::Event {
                ns: a.into(),
                event: b.into(),
            },
        ),
        (
            s.server(a, b),
            Parsed::Server {
                ns: a.into(),
                event: b.into(),
            },
        ),
        (s.connect(a), Parsed::Connect { ns: a.into() }),
        (s.disconnect(a), Parsed::Disconnect { ns: a.into() }),
        (Ok(s.resync()), Parsed::Resync),
        (s.snapshot(a), Parsed::Snapshot { node: a.into() }),
        (s.presence(a), Parsed::Presence { ns: a.into() }),
        (Ok(s.reserve()), Parsed::Reserve),
        (Ok(s.recover()), Parsed::Recover),
        (s.sync(a), Parsed::Sync { server: a.into() }),
        (
            s.log_room(a, b),
            Parsed::LogRoom {
                ns: a.into(),
                room: b.into(),
            },
        ),
        (s.log_namespace(a), Parsed::LogNamespace { ns: a.into() }),
        (
            s.log_socket(a, b),
            Parsed::LogSocket {
                ns: a.into(),
                socket: b.into(),
            },
        ),
    ];
    let bound = s.prefix().len()
        + MAX_FIXED_BYTES
        + subject::escape(a).len()
        + 1
        + subject::escape(b).len();
    for (subject, parsed) in built {
        let subject = match subject {
            Ok(subject) => subject,
            Err(SubjectError::NameTooLong(n)) => {
                assert!(
                    n > MAX_NAME_BYTES && (n == a.len() || n == b.len()),
                    "refused {n} bytes"
                );
                continue;
            }
            Err(e) => panic!("{parsed:?}: {e}"),
        };
        assert!(subject.len() <= bound, "{subject:?} is longer than {bound}");
        assert_eq!(s.parse(&subject).as_ref(), Ok(&parsed), "{subject:?}");
        assert_eq!(rebuild(s, &parsed), Ok(subject));
    }
    Ok(())
}

/// A subject read from the wire parses to at most one meaning: the one that builds it.
fn received(s: &Subjects, subject: &str) {
    if let Ok(parsed) = s.parse(subject) {
        assert_eq!(
            rebuild(s, &parsed).as_deref(),
            Ok(subject),
            "parsed as {parsed:?}"
        );
    }
}

fn rebuild(s: &Subjects, parsed: &Parsed) -> Result<String, SubjectError> {
    match parsed {
        Parsed::Member { node } => s.member(node),
        Parsed::Heartbeat { node } => s.heartbeat(node),
        Parsed::Room { ns, room } => s.room(ns, room),
        Parsed::Namespace { ns } => s.namespace(ns),
        Parsed::Node { node } => s.node(node),
        Parsed::CommandNamespace { ns } => s.command_namespace(ns),
        Parsed::CommandNode { node } => s.command_node(node),
        Parsed::Event { ns, event } => s.event(ns, event),
        Parsed::Server { ns, event } => s.server(ns, event),
        Parsed::Connect { ns } => s.connect(ns),
        Parsed::Disconnect { ns } => s.disconnect(ns),
        Parsed::Resync => Ok(s.resync()),
        Parsed::Snapshot { node } => s.snapshot(node),
        Parsed::Presence { ns } => s.presence(ns),
        Parsed::Reserve => Ok(s.reserve()),
        Parsed::Recover => Ok(s.recover()),
        Parsed::Sync { server } => s.sync(server),
        Parsed::LogRoom { ns, room } => s.log_room(ns, room),
        Parsed::LogNamespace { ns } => s.log_namespace(ns),
        Parsed::LogSocket { ns, socket } => s.log_socket(ns, socket),
    }
}
