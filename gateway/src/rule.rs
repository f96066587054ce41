//! The rule vocabulary shared by the configuration and the policy layer: room name templates
//! (`user:{sub}`, `game:*`), argument paths (`0.room`) and the compiled event rules
//! ([`EventRule`], [`Action`], [`RoomRule`], …).
//!
//! The `config` module builds these from TOML; the `policy` module runs them. This module imports
//! neither, so both can depend on it without depending on each other. Everything here is pure:
//! no I/O, no clock, no server state.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::auth::Claims;

/// A template or argument path that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// An empty template (room names are never empty).
    #[error("empty template")]
    Empty,
    /// A `{` without its `}`.
    #[error("unclosed `{{` at byte {0} (write `{{{{` for a literal brace)")]
    Unclosed(usize),
    /// A `}` without a `{`.
    #[error("`}}` without `{{` at byte {0} (write `}}}}` for a literal brace)")]
    UnmatchedClose(usize),
    /// `{}`.
    #[error("empty placeholder `{{}}`; name a claim, like {{sub}}")]
    EmptyPlaceholder,
    /// A placeholder with spaces in it, like `{ sub }`.
    #[error("placeholder {{{0}}} contains spaces")]
    SpaceInPlaceholder(String),
    /// `*` where exact room names are needed (auto_join).
    #[error("`*` is not allowed here: rooms joined automatically have exact names")]
    StarNotAllowed,
    /// An argument path that is not `N` or `N.field…`.
    #[error("{0:?} must be an argument index followed by field names, like 0 or \"0.room\"")]
    BadArgPath(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Star,
    Claim(String),
}

/// A room name template: literal text, `{claim}` placeholders filled from the socket's token
/// claims, and (in allow/deny patterns) `*` wildcards matching any run of characters.
/// `{{` and `}}` are literal braces.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segs: Vec<Seg>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl Template {
    /// A pattern: `*` is a wildcard.
    pub fn parse(source: &str) -> Result<Self, SyntaxError> {
        Self::parse_with(source, true)
    }

    /// An exact name template (no wildcards), for auto_join.
    pub fn parse_exact(source: &str) -> Result<Self, SyntaxError> {
        Self::parse_with(source, false)
    }

    fn parse_with(source: &str, allow_star: bool) -> Result<Self, SyntaxError> {
        if source.is_empty() {
            return Err(SyntaxError::Empty);
        }
        let mut segs = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, segs: &mut Vec<Seg>| {
            if !lit.is_empty() {
                segs.push(Seg::Lit(std::mem::take(lit)));
            }
        };
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    lit.push('{');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        match n {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => return Err(SyntaxError::Unclosed(i)),
                            n => name.push(n),
                        }
                    }
                    if !closed {
                        return Err(SyntaxError::Unclosed(i));
                    }
                    if name.is_empty() {
                        return Err(SyntaxError::EmptyPlaceholder);
                    }
                    if name.chars().any(char::is_whitespace) {
                        return Err(SyntaxError::SpaceInPlaceholder(name));
                    }
                    flush(&mut lit, &mut segs);
                    segs.push(Seg::Claim(name));
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err(SyntaxError::UnmatchedClose(i)),
                '*' if !allow_star => return Err(SyntaxError::StarNotAllowed),
                '*' => {
                    flush(&mut lit, &mut segs);
                    if segs.last() != Some(&Seg::Star) {
                        segs.push(Seg::Star);
                    }
                }
                c => lit.push(c),
            }
        }
        flush(&mut lit, &mut segs);
        Ok(Self {
            source: source.to_owned(),
            segs,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The claims it uses.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Claim(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// The room name with claims filled in; None if a claim is missing (or not a string,
    /// number or boolean, or empty). Wildcards are kept as a literal `*`.
    pub fn render(&self, claims: Option<&Claims>) -> Option<String> {
        let mut out = String::new();
        for seg in &self.segs {
            match seg {
                Seg::Lit(l) => out.push_str(l),
                Seg::Star => out.push('*'),
                Seg::Claim(c) => out.push_str(&claim_text(claims?.lookup(c)?)?),
            }
        }
        Some(out)
    }

    /// Whether a room name matches; a pattern using a missing claim matches nothing.
    pub fn matches(&self, room: &str, claims: Option<&Claims>) -> bool {
        // Literal chunks between wildcards, claims filled in as literal text.
        let mut parts: Vec<String> = Vec::with_capacity(2);
        let mut cur = String::new();
        for seg in &self.segs {
            match seg {
                Seg::Lit(l) => cur.push_str(l),
                Seg::Claim(c) => {
                    let Some(text) = claims.and_then(|cl| cl.lookup(c)).and_then(claim_text) else {
                        return false;
                    };
                    cur.push_str(&text);
                }
                Seg::Star => parts.push(std::mem::take(&mut cur)),
            }
        }
        parts.push(cur);
        glob_match(&parts, room)
    }
}

/// A claim value as room-name text.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `parts` are the literal chunks around `*`s (one chunk: no wildcard). Greedy leftmost matching
/// of the middle chunks is exact for `*`-only globs and linear in the text.
fn glob_match(parts: &[String], text: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|p| p == text);
    };
    if text.len() < first.len() + last.len()
        || !text.starts_with(first.as_str())
        || !text.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in middle {
        match rest.find(part.as_str()) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Where a room name is among an event's arguments: an argument index, then object fields (or
/// array indices) — `0`, `0.room`, `1.target.room`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgPath {
    index: usize,
    fields: Vec<String>,
}

impl ArgPath {
    /// The argument itself.
    pub fn index(index: usize) -> Self {
        Self {
            index,
            fields: Vec::new(),
        }
    }

    /// Parses `N` or `N.field.field…`.
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        let bad = || SyntaxError::BadArgPath(s.to_owned());
        let mut parts = s.split('.');
        let first = parts.next().ok_or_else(bad)?;
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let index = first.parse().map_err(|_| bad())?;
        let fields: Vec<String> = parts.map(str::to_owned).collect();
        if fields.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(Self { index, fields })
    }

    /// The value at this path, if there is one.
    pub fn get<'a>(&self, args: &'a [Value]) -> Option<&'a Value> {
        let mut cur = args.get(self.index)?;
        for field in &self.fields {
            cur = match cur {
                Value::Object(map) => map.get(field)?,
                Value::Array(items) => items.get(field.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for ArgPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index)?;
        for field in &self.fields {
            write!(f, ".{field}")?;
        }
        Ok(())
    }
}

/// One `[[namespace.event]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRule {
    /// The client event name.
    pub name: String,
    /// What to do.
    pub action: Action,
}

/// The built-in actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Join the room named by an argument.
    Join(JoinRule),
    /// Leave the room named by an argument.
    Leave(LeaveRule),
    /// Re-emit the event to the room named by an argument.
    Relay(RelayRule),
    /// Re-emit the event to the whole namespace.
    Broadcast(BroadcastRule),
    /// Send the event back to the sender.
    Echo(EchoRule),
    /// Hand the event to backend workers over the bus (queue group per namespace and event).
    Forward(ForwardRule),
}

impl Action {
    /// The action's name as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::Leave(_) => "leave",
            Self::Relay(_) => "relay",
            Self::Broadcast(_) => "broadcast",
            Self::Echo(_) => "echo",
            Self::Forward(_) => "forward",
        }
    }
}

/// Which room an event names and which rooms are permitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRule {
    /// The argument holding the room name.
    pub room_arg: ArgPath,
    /// The room must match one of these (empty: any room).
    pub allow: Vec<Template>,
    /// The room must match none of these.
    pub deny: Vec<Template>,
}

/// `action = "join"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRule {
    /// Room and permissions.
    pub room: RoomRule,
    /// Room capacity (0 = unlimited).
    pub max_members: usize,
    /// Event emitted to the other members on a new join.
    pub announce: Option<String>,
    /// The room's recent messages, sent with the join's ack (`history_last`,
    /// `history_max_age_ms`; needs the namespace's recovery log).
    pub history: Option<HistoryRule>,
}

/// Which of a room's recent messages a join hands back ([`JoinRule::history`]): the last
/// `last`, only those younger than `max_age`, or both (docs/recovery.md, "Room history").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRule {
    /// At most this many, the newest.
    pub last: usize,
    /// Only messages stored within this long.
    pub max_age: Option<std::time::Duration>,
}

/// The most messages a join's history may hand back.
pub const MAX_HISTORY: usize = 1000;

/// `action = "leave"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRule {
    /// Room and permissions.
    pub room: RoomRule,
    /// Event emitted to the remaining members when the socket left.
    pub announce: Option<String>,
}

/// `action = "relay"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRule {
    /// Room and permissions.
    pub room: RoomRule,
    /// The sender must be a member of the room.
    pub member_only: bool,
    /// The sender receives its own event too.
    pub include_sender: bool,
    /// Emitted under this name (None: the event's own name).
    pub as_event: Option<String>,
}

/// `action = "broadcast"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastRule {
    /// The sender receives its own event too.
    pub include_sender: bool,
    /// Emitted under this name (None: the event's own name).
    pub as_event: Option<String>,
}

/// `action = "echo"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoRule {
    /// Emit back under this name; None: ack with the arguments if an ack was asked for, else
    /// emit back under the event's own name.
    pub as_event: Option<String>,
}

/// `action = "forward"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    /// How long to wait for a worker's reply when the client asked for an ack.
    pub timeout: Duration,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Claims {
        Claims::new(v.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn template_parse_table() {
        // (source, allow_star, Ok(claims used) | Err)
        let cases: Vec<(&str, bool, Result<Vec<&str>, SyntaxError>)> = vec![
            ("lobby", true, Ok(vec![])),
            ("user:{sub}", false, Ok(vec!["sub"])),
            ("{org.id}:{sub}", false, Ok(vec!["org.id", "sub"])),
            ("a{{b}}c", false, Ok(vec![])),
            ("*", true, Ok(vec![])),
            ("team:{team}:*", true, Ok(vec!["team"])),
            ("", true, Err(SyntaxError::Empty)),
            ("user:{sub", false, Err(SyntaxError::Unclosed(5))),
            ("user:{s{ub}", false, Err(SyntaxError::Unclosed(5))),
            ("a}b", true, Err(SyntaxError::UnmatchedClose(1))),
            ("x{}", true, Err(SyntaxError::EmptyPlaceholder)),
            (
                "{ sub }",
                true,
                Err(SyntaxError::SpaceInPlaceholder(" sub ".into())),
            ),
            ("room*", false, Err(SyntaxError::StarNotAllowed)),
        ];
        for (src, star, want) in cases {
            let got = if star {
                Template::parse(src)
            } else {
                Template::parse_exact(src)
            };
            let got = got.map(|t| t.claims().map(str::to_owned).collect::<Vec<_>>());
            let want = want.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "{src:?}");
        }
    }

    #[test]
    fn template_render_table() {
        let c = claims(
            json!({"sub": "alice", "n": 7, "b": true, "empty": "", "obj": {"id": "o1"}, "arr": [1]}),
        );
        let cases: Vec<(&str, Option<&Claims>, Option<&str>)> = vec![
            ("lobby", None, Some("lobby")),
            ("user:{sub}", Some(&c), Some("user:alice")),
            ("user:{sub}", None, None),
            ("n:{n}:{b}", Some(&c), Some("n:7:true")),
            ("org:{obj.id}", Some(&c), Some("org:o1")),
            ("x:{empty}", Some(&c), None),
            ("x:{arr}", Some(&c), None),
            ("x:{obj}", Some(&c), None),
            ("x:{missing}", Some(&c), None),
            ("{{literal}}", None, Some("{literal}")),
        ];
        for (src, cl, want) in cases {
            let t = Template::parse_exact(src).unwrap();
            assert_eq!(t.render(cl).as_deref(), want, "{src:?}");
        }
    }

    #[test]
    fn template_match_table() {
        let alice = claims(json!({"sub": "alice", "team": "red"}));
        let starry = claims(json!({"sub": "*"}));
        // (pattern, room, claims, expected)
        let cases: Vec<(&str, &str, Option<&Claims>, bool)> = vec![
            ("*", "anything", None, true),
            ("*", "", None, true),
            ("lobby", "lobby", None, true),
            ("lobby", "lobby2", None, false),
            ("user:*", "user:bob", None, true),
            ("user:*", "user:", None, true),
            ("user:*", "users", None, false),
            ("*:admin", "team:admin", None, true),
            ("a*b*c", "abc", None, true),
            ("a*b*c", "aXbYc", None, true),
            ("a*b*c", "aXcYb", None, false),
            ("a*a", "a", None, false),
            ("a*a", "aa", None, true),
            ("**", "x", None, true),
            ("é*", "éclair", None, true),
            ("*é", "café", None, true),
            ("user:{sub}", "user:alice", Some(&alice), true),
            ("user:{sub}", "user:bob", Some(&alice), false),
            ("user:{sub}", "user:alice", None, false),
            ("team:{team}:*", "team:red:general", Some(&alice), true),
            ("team:{team}:*", "team:blue:general", Some(&alice), false),
            // A claim is literal text: a `*` in it is not a wildcard.
            ("user:{sub}", "user:bob", Some(&starry), false),
            ("user:{sub}", "user:*", Some(&starry), true),
            ("{{x}}*", "{x}1", None, true),
        ];
        for (pattern, room, cl, want) in cases {
            let t = Template::parse(pattern).unwrap();
            assert_eq!(t.matches(room, cl), want, "{pattern:?} vs {room:?}");
        }
    }

    #[test]
    fn arg_path_table() {
        let args = vec![
            json!("lobby"),
            json!({"room": "r1", "to": {"room": "r2"}, "n": 5, "list": ["r3"]}),
        ];
        // (path, parsed ok, value at path)
        let cases: Vec<(&str, bool, Option<Value>)> = vec![
            ("0", true, Some(json!("lobby"))),
            ("1.room", true, Some(json!("r1"))),
            ("1.to.room", true, Some(json!("r2"))),
            ("1.list.0", true, Some(json!("r3"))),
            ("1.list.x", true, None),
            ("1.missing", true, None),
            ("0.room", true, None),
            ("2", true, None),
            ("room", false, None),
            ("", false, None),
            ("-1", false, None),
            ("+1", false, None),
            ("0.", false, None),
            ("0..room", false, None),
            ("99999999999999999999999", false, None),
        ];
        for (src, ok, want) in cases {
            match ArgPath::parse(src) {
                Ok(p) => {
                    assert!(ok, "{src:?} should not parse");
                    assert_eq!(p.get(&args).cloned(), want, "{src:?}");
                    assert_eq!(p.to_string(), src);
                }
                Err(e) => {
                    assert!(!ok, "{src:?}: {e}");
                    assert!(matches!(e, SyntaxError::BadArgPath(_)));
                }
            }
        }
    }
}
