//! The server side of the `@socket.io/admin-ui` 0.5 protocol, the pure part (docs/admin-ui.md).
//!
//! It owns what the `/admin` namespace says and accepts, as functions of their inputs: the
//! credentials check (user name and bcrypt hash, as the package does it) and the session ids the
//! UI reconnects with, the `SerializedSocket` and `server_stats` documents, the diff of two
//! fetches of the cluster's sockets into the UI's live events, and the parsing of the UI's
//! commands (`_disconnect`, `join`, `leave`) into actions on a selector.
//!
//! It must not do I/O, hold a lock or read the clock: time comes in as `now`. The cluster's data
//! come from the broker through the binary; this module never sees how.
//!
//! Invariants: every string taken from the UI is bounded ([`MAX_NAME_BYTES`],
//! [`MAX_USERNAME_BYTES`], [`MAX_PASSWORD_BYTES`]) before it is used; the session store holds at
//! most [`MAX_SESSIONS`] ids.

pub mod assets;
pub mod server;

pub use assets::Assets;
pub use server::{Cluster, ClusterError, Options, install};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::RngCore;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The namespace the UI connects to (the package's default `namespaceName`).
pub const NAMESPACE: &str = "/admin";
/// The longest user name looked at; a longer one is refused without hashing anything.
pub const MAX_USERNAME_BYTES: usize = 256;
/// bcrypt reads at most 72 bytes of a password; a longer one is refused rather than truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// The longest namespace, room or filter a command may name.
pub const MAX_NAME_BYTES: usize = 1024;
/// How many login sessions are kept; the oldest is dropped to make room.
pub const MAX_SESSIONS: usize = 1024;
/// How long a session id lets the UI reconnect without the password.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The reason given to the UI for a socket the diff saw go (the broker does not keep reasons).
pub const UNKNOWN_REASON: &str = "unknown";
/// The features announced in `config`. Without `AGGREGATED_EVENTS` the UI runs in its
/// "development" mode, which lists sockets from `all_sockets` and the live events.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "JOIN",
    "LEAVE",
    "DISCONNECT",
    "MJOIN",
    "MLEAVE",
    "MDISCONNECT",
];
/// The CONNECT refusal for bad credentials, the package's message (the UI shows it).
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// Why a configured credential is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    /// The user name is empty or longer than [`MAX_USERNAME_BYTES`].
    #[error("the user name must be 1 to {MAX_USERNAME_BYTES} bytes")]
    Username,
    /// The password hash is not a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`, cost, 53 chars).
    #[error("must be a bcrypt hash ($2b$10$…, 60 characters)")]
    Hash,
}

/// The one user the UI logs in as: a name and a bcrypt hash of the password.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Checks the hash's format up front, so a typo fails at start-up, not at the first login.
    pub fn new(username: &str, hash: &str) -> Result<Self, CredentialsError> {
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Err(CredentialsError::Username);
        }
        hash.parse::<bcrypt::HashParts>()
            .map_err(|_| CredentialsError::Hash)?;
        Ok(Self {
            username: username.to_owned(),
            hash: hash.to_owned(),
        })
    }

    /// Whether a CONNECT's `auth` object carries this user's name and password. Costs one
    /// bcrypt verification (tens of milliseconds at cost 10) when the name matches: callers run
    /// it off the connection's task.
    pub fn verify(&self, auth: &Value) -> bool {
        let (Some(user), Some(password)) = (
            auth.get("username").and_then(Value::as_str),
            auth.get("password").and_then(Value::as_str),
        ) else {
            return false;
        };
        if user.len() > MAX_USERNAME_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        user == self.username && bcrypt::verify(password, &self.hash).unwrap_or(false)
    }
}

/// The session ids handed out after a password login (`session` event), which the UI sends back
/// as `auth.sessionId` when it reconnects.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    issued: HashMap<String, Instant>,
}

impl Sessions {
    /// An empty store whose ids expire `ttl` after they are issued.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            issued: HashMap::new(),
        }
    }

    /// A new random id (16 hex digits, as the package makes them), valid until `now + ttl`.
    pub fn issue(&mut self, now: Instant) -> String {
        self.issued
            .retain(|_, at| now.saturating_duration_since(*at) < self.ttl);
        if self.issued.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .issued
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone())
        {
            self.issued.remove(&oldest);
        }
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.issued.insert(id.clone(), now);
        id
    }

    /// Whether a CONNECT's `auth.sessionId` is a live session.
    pub fn check(&self, auth: &Value, now: Instant) -> bool {
        auth.get("sessionId")
            .and_then(Value::as_str)
            .and_then(|id| self.issued.get(id))
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }
}

/// One socket of the cluster as the broker knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SocketInfo {
    /// The Socket.IO socket id.
    pub id: String,
    /// Its namespace.
    pub ns: String,
    /// The gateway node holding it.
    pub node: String,
    /// Its rooms.
    pub rooms: Vec<String>,
    /// The client's address.
    pub address: String,
    /// The handshake headers the broker keeps.
    pub headers: Vec<(String, String)>,
    /// The handshake query string.
    pub query: String,
    /// When it connected (ms since the Unix epoch).
    pub connected_at_ms: u64,
    /// Its `data`.
    pub data: Value,
}

/// One gateway node as the broker knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id (the UI's `serverId`).
    pub id: String,
    /// Its Engine.IO connections.
    pub connections: u64,
}

/// A socket as the UI's `SerializedSocket`. The broker knows neither the Engine.IO id nor the
/// transport: `clientId` is the node id (so the UI's client page groups a gateway's sockets) and
/// `transport` is `unknown`.
pub fn serialize(socket: &SocketInfo) -> Value {
    let headers: serde_json::Map<String, Value> = socket
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let query: serde_json::Map<String, Value> =
        form_urlencoded::parse(socket.query.trim_start_matches('?').as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect();
    json!({
        "id": socket.id,
        "clientId": socket.node,
        "transport": "unknown",
        "nsp": socket.ns,
        "data": socket.data,
        "handshake": {
            "address": socket.address,
            "headers": headers,
            "query": query,
            "issued": socket.connected_at_ms,
            "secure": false,
            "time": "",
            "url": "",
            "xdomain": false,
        },
        "rooms": socket.rooms,
    })
}

/// The `server_stats` document of one node: its connections, and its sockets per namespace
/// counted from `sockets` (the whole cluster's). `uptime` is in seconds.
pub fn server_stats(node: &NodeInfo, sockets: &[SocketInfo], uptime: f64) -> Value {
    let mut per_ns: BTreeMap<&str, u64> = BTreeMap::new();
    for s in sockets.iter().filter(|s| s.node == node.id) {
        *per_ns.entry(s.ns.as_str()).or_default() += 1;
    }
    let namespaces: Vec<Value> = per_ns
        .into_iter()
        .map(|(name, n)| json!({ "name": name, "socketsCount": n }))
        .collect();
    json!({
        "serverId": node.id,
        "hostname": node.id,
        "pid": 0,
        "uptime": uptime,
        "clientsCount": node.connections,
        "pollingClientsCount": 0,
        "namespaces": namespaces,
    })
}

/// A difference between two fetches of the cluster's sockets, as one UI event.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A socket appeared (`socket_connected`).
    Connected(SocketInfo),
    /// A socket went (`socket_disconnected`).
    Disconnected {
        /// Its namespace.
        ns: String,
        /// Its id.
        id: String,
    },
    /// A known socket joined a room (`room_joined`).
    Joined {
        /// Its namespace.
        ns: String,
        /// The room.
        room: String,
        /// Its id.
        id: String,
    },
    /// A known socket left a room (`room_left`).
    Left {
        /// Its namespace.
        ns: String,
        /// The room.
        room: String,
        /// Its id.
        id: String,
    },
}

impl Change {
    /// The event name and arguments the UI expects; `now` is the `Date` argument (an ISO 8601
    /// string with milliseconds, as a JavaScript `Date` becomes in JSON).
    pub fn event(&self, now: &str) -> (&'static str, Vec<Value>) {
        match self {
            Self::Connected(s) => ("socket_connected", vec![serialize(s), now.into()]),
            Self::Disconnected { ns, id } => (
                "socket_disconnected",
                strings(&[ns, id, UNKNOWN_REASON, now]),
            ),
            Self::Joined { ns, room, id } => ("room_joined", strings(&[ns, room, id, now])),
            Self::Left { ns, room, id } => ("room_left", strings(&[ns, room, id, now])),
        }
    }
}

fn strings(values: &[&str]) -> Vec<Value> {
    values.iter().map(|v| Value::from(*v)).collect()
}

/// What changed from `old` to `new` (each a whole fetch), keyed by namespace and socket id: a
/// new socket is `Connected` (with its rooms, so no `Joined` for them), a gone one
/// `Disconnected`, and a socket in both gets a `Joined` / `Left` per room difference. The order
/// is deterministic: disconnects, then connects, then room changes, each by (namespace, id).
pub fn diff(old: &[SocketInfo], new: &[SocketInfo]) -> Vec<Change> {
    let index = |list: &[SocketInfo]| -> BTreeMap<(String, String), SocketInfo> {
        list.iter()
            .map(|s| ((s.ns.clone(), s.id.clone()), s.clone()))
            .collect()
    };
    let (old, new) = (index(old), index(new));
    let mut gone = Vec::new();
    let mut came = Vec::new();
    let mut rooms = Vec::new();
    for ((ns, id), before) in &old {
        match new.get(&(ns.clone(), id.clone())) {
            None => gone.push(Change::Disconnected {
                ns: ns.clone(),
                id: id.clone(),
            }),
            Some(after) => {
                let was: BTreeSet<&String> = before.rooms.iter().collect();
                let is: BTreeSet<&String> = after.rooms.iter().collect();
                rooms.extend(is.difference(&was).map(|room| Change::Joined {
                    ns: ns.clone(),
                    room: (*room).clone(),
                    id: id.clone(),
                }));
                rooms.extend(was.difference(&is).map(|room| Change::Left {
                    ns: ns.clone(),
                    room: (*room).clone(),
                    id: id.clone(),
                }));
            }
        }
    }
    for (key, after) in new {
        if !old.contains_key(&key) {
            came.push(Change::Connected(after));
        }
    }
    gone.into_iter().chain(came).chain(rooms).collect()
}

/// Which sockets of a namespace a command is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every socket of the namespace (no filter).
    All,
    /// One socket, by id (the filter named a socket of the last fetch).
    Socket(String),
    /// The members of a room.
    Room(String),
}

/// A UI command, checked and ready for the broker's admin service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `_disconnect`: disconnect the target (`close`: the whole Engine.IO connection).
    Disconnect {
        /// The namespace.
        ns: String,
        /// Close the whole connection, not only this namespace.
        close: bool,
        /// Which sockets.
        target: Target,
    },
    /// `join`: make the target join `room`.
    Join {
        /// The namespace.
        ns: String,
        /// The room to join.
        room: String,
        /// Which sockets.
        target: Target,
    },
    /// `leave`: make the target leave `room`.
    Leave {
        /// The namespace.
        ns: String,
        /// The room to leave.
        room: String,
        /// Which sockets.
        target: Target,
    },
}

/// Why a UI command was not carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The event is not a command this server supports.
    #[error("unsupported admin command {0:?}")]
    Unsupported(String),
    /// An argument is missing, of the wrong type, empty or too long.
    #[error("admin command {event}: bad argument {index}: {why}")]
    Argument {
        /// The command.
        event: &'static str,
        /// The argument's position.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Parses one UI command. `is_socket(ns, id)` says whether a filter names a socket (the UI's
/// socket page passes the socket id as the filter, which Socket.IO treats as the socket's own
/// room); any other filter is a room.
pub fn parse_command(
    event: &str,
    args: &[Value],
    is_socket: impl Fn(&str, &str) -> bool,
) -> Result<Command, CommandError> {
    let name: &'static str = match event {
        "_disconnect" => "_disconnect",
        "join" => "join",
        "leave" => "leave",
        other => return Err(CommandError::Unsupported(other.chars().take(64).collect())),
    };
    let bad = |(index, why)| CommandError::Argument {
        event: name,
        index,
        why,
    };
    let ns = name_arg(args, 0)
        .map_err(bad)?
        .ok_or(bad((0, "is required")))?;
    if !ns.starts_with('/') {
        return Err(bad((0, "must start with '/'")));
    }
    let target = match name_arg(args, 2).map_err(bad)? {
        None => Target::All,
        Some(f) if is_socket(&ns, &f) => Target::Socket(f),
        Some(f) => Target::Room(f),
    };
    if name == "_disconnect" {
        let close = match args.get(1) {
            Some(Value::Bool(b)) => *b,
            None | Some(Value::Null) => false,
            Some(_) => return Err(bad((1, "must be a boolean"))),
        };
        return Ok(Command::Disconnect { ns, close, target });
    }
    let room = name_arg(args, 1)
        .map_err(bad)?
        .ok_or(bad((1, "is required")))?;
    Ok(if name == "join" {
        Command::Join { ns, room, target }
    } else {
        Command::Leave { ns, room, target }
    })
}

/// The string argument at `index`: `None` when absent or null, an error when not a string,
/// empty or longer than [`MAX_NAME_BYTES`].
fn name_arg(args: &[Value], index: usize) -> Result<Option<String>, (usize, &'static str)> {
    match args.get(index) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err((index, "must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => Err((index, "is too long")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err((index, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "changeit", hashed by bcryptjs at cost 10: the package README's example.
    const PACKAGE_HASH: &str = "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS";

    fn socket(ns: &str, id: &str, node: &str, rooms: &[&str]) -> SocketInfo {
        SocketInfo {
            id: id.into(),
            ns: ns.into(),
            node: node.into(),
            rooms: rooms.iter().map(|r| (*r).into()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_accept_the_package_hash_and_refuse_the_rest() {
        let c = Credentials::new("admin", PACKAGE_HASH).unwrap();
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let cases = [
            (json!({"username": "admin", "password": "changeit"}), true),
            (json!({"username": "admin", "password": "changeiT"}), false),
            (json!({"username": "root", "password": "changeit"}), false),
            (json!({"username": "admin"}), false),
            (json!({"password": "changeit"}), false),
            (json!({"username": "admin", "password": 1}), false),
            (json!({"username": "admin", "password": long}), false),
            (json!(null), false),
            (json!("admin:changeit"), false),
        ];
        for (auth, want) in cases {
            assert_eq!(c.verify(&auth), want, "{auth}");
        }
    }

    #[test]
    fn credentials_refuse_what_is_not_a_bcrypt_hash() {
        assert!(Credentials::new("admin", PACKAGE_HASH).is_ok());
        for bad in [
            "changeit",
            "",
            "$2b$10$short",
            "$argon2id$v=19$m=65536,t=3,p=4$abc",
        ] {
            assert!(
                matches!(Credentials::new("admin", bad), Err(CredentialsError::Hash)),
                "{bad}"
            );
        }
        assert_eq!(
            Credentials::new("", PACKAGE_HASH).unwrap_err(),
            CredentialsError::Username
        );
        let long = "u".repeat(MAX_USERNAME_BYTES + 1);
        assert_eq!(
            Credentials::new(&long, PACKAGE_HASH).unwrap_err(),
            CredentialsError::Username
        );
    }

    #[test]
    fn sessions_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut s = Sessions::new(ttl);
        let id = s.issue(t0);
        assert_eq!(id.len(), 16);
        assert!(s.check(&json!({ "sessionId": id }), t0 + Duration::from_secs(59)));
        assert!(!s.check(&json!({ "sessionId": id }), t0 + ttl));
        assert!(!s.check(&json!({ "sessionId": "0000000000000000" }), t0));
        assert!(!s.check(&json!({}), t0));
        let first = id;
        for i in 0..MAX_SESSIONS {
            s.issue(t0 + Duration::from_millis(1 + i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(!s.check(&json!({ "sessionId": first }), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn diff_reports_each_change_once() {
        let old = vec![
            socket("/", "a", "n1", &["lobby"]),
            socket("/", "b", "n2", &["lobby", "x"]),
            socket("/chat", "a", "n1", &[]),
        ];
        let new = vec![
            socket("/", "b", "n2", &["lobby", "y"]),
            socket("/", "c", "n3", &["z"]),
            socket("/chat", "a", "n1", &[]),
        ];
        let j = |room: &str| Change::Joined {
            ns: "/".into(),
            room: room.into(),
            id: "b".into(),
        };
        let l = |room: &str| Change::Left {
            ns: "/".into(),
            room: room.into(),
            id: "b".into(),
        };
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::Disconnected {
                    ns: "/".into(),
                    id: "a".into()
                },
                Change::Connected(socket("/", "c", "n3", &["z"])),
                j("y"),
                l("x"),
            ]
        );
        assert!(diff(&new, &new).is_empty());
        assert_eq!(diff(&[], &old).len(), 3);
        assert_eq!(diff(&old, &[]).len(), 3);
    }

    #[test]
    fn events_have_the_package_shapes() {
        let now = "2026-01-01T00:00:00.000Z";
        let (name, args) = Change::Disconnected {
            ns: "/".into(),
            id: "a".into(),
        }
        .event(now);
        assert_eq!(name, "socket_disconnected");
        assert_eq!(
            args,
            vec![json!("/"), json!("a"), json!("unknown"), json!(now)]
        );
        let (name, args) = Change::Left {
            ns: "/".into(),
            room: "r".into(),
            id: "a".into(),
        }
        .event(now);
        assert_eq!(name, "room_left");
        assert_eq!(args, vec![json!("/"), json!("r"), json!("a"), json!(now)]);
        let mut s = socket("/chat", "abc", "gw-1", &["r1"]);
        s.query = "EIO=4&transport=websocket&room=a%20b".into();
        s.headers = vec![("user-agent".into(), "ua".into())];
        s.address = "10.0.0.1".into();
        s.connected_at_ms = 1_700_000_000_000;
        s.data = json!({"k": 1});
        let (name, args) = Change::Connected(s).event(now);
        assert_eq!(name, "socket_connected");
        assert_eq!(
            args[0],
            json!({
                "id": "abc", "clientId": "gw-1", "transport": "unknown", "nsp": "/chat",
                "data": {"k": 1}, "rooms": ["r1"],
                "handshake": {
                    "address": "10.0.0.1", "headers": {"user-agent": "ua"},
                    "query": {"EIO": "4", "transport": "websocket", "room": "a b"},
                    "issued": 1_700_000_000_000u64, "secure": false, "time": "", "url": "",
                    "xdomain": false,
                },
            })
        );
    }

    #[test]
    fn server_stats_count_only_the_nodes_sockets() {
        let sockets = vec![
            socket("/", "a", "n1", &[]),
            socket("/", "b", "n1", &[]),
            socket("/chat", "c", "n1", &[]),
            socket("/", "d", "n2", &[]),
        ];
        let node = NodeInfo {
            id: "n1".into(),
            connections: 2,
        };
        let stats = server_stats(&node, &sockets, 12.5);
        assert_eq!(stats["serverId"], "n1");
        assert_eq!(stats["clientsCount"], 2);
        assert_eq!(stats["uptime"], 12.5);
        assert_eq!(
            stats["namespaces"],
            json!([{"name": "/", "socketsCount": 2}, {"name": "/chat", "socketsCount": 1}])
        );
    }

    #[test]
    fn commands_parse_into_targets_or_clear_errors() {
        let known = |ns: &str, id: &str| ns == "/" && id == "sock1";
        let ok = |event: &str, args: Value| parse_command(event, args.as_array().unwrap(), known);
        assert_eq!(
            ok("_disconnect", json!(["/", false, "sock1"])).unwrap(),
            Command::Disconnect {
                ns: "/".into(),
                close: false,
                target: Target::Socket("sock1".into())
            }
        );
        assert_eq!(
            ok("_disconnect", json!(["/", true, "lobby"])).unwrap(),
            Command::Disconnect {
                ns: "/".into(),
                close: true,
                target: Target::Room("lobby".into())
            }
        );
        assert_eq!(
            ok("_disconnect", json!(["/chat", false])).unwrap(),
            Command::Disconnect {
                ns: "/chat".into(),
                close: false,
                target: Target::All
            }
        );
        assert_eq!(
            ok("join", json!(["/", "r", "sock1"])).unwrap(),
            Command::Join {
                ns: "/".into(),
                room: "r".into(),
                target: Target::Socket("sock1".into())
            }
        );
        assert_eq!(
            ok("leave", json!(["/", "r"])).unwrap(),
            Command::Leave {
                ns: "/".into(),
                room: "r".into(),
                target: Target::All
            }
        );
        let long = "r".repeat(MAX_NAME_BYTES + 1);
        let refused = [
            ("emit", json!(["/", null, "ev"])),
            ("_disconnect", json!([])),
            ("_disconnect", json!(["chat", false])),
            ("_disconnect", json!(["/", "yes"])),
            ("_disconnect", json!(["/", false, 7])),
            ("join", json!(["/"])),
            ("join", json!(["/", ""])),
            ("join", json!(["/", long])),
            ("leave", json!([{}, "r"])),
        ];
        for (event, args) in refused {
            assert!(ok(event, args.clone()).is_err(), "{event} {args}");
        }
        assert_eq!(
            ok("join", json!(["/", 3])).unwrap_err().to_string(),
            "admin command join: bad argument 1: must be a string"
        );
        let huge = "e".repeat(10_000);
        match ok(&huge, json!([])).unwrap_err() {
            CommandError::Unsupported(shown) => assert_eq!(shown.len(), 64),
            other => panic!("{other:?}"),
        }
    }
}
