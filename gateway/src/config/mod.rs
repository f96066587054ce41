//! The gateway's configuration: a TOML file for the structured parts (server options, namespaces
//! and their event rules) plus the secrets the file names, read from the environment.
//!
//! The file is shared with the broker: its `[nats]`, `[cluster]`, `[broker]`, `[grpc]` and `[log]`
//! tables are accepted here but read by the binaries' settings (`bin/src/settings.rs`), which
//! also own the one table of environment variables (the `[server]` / `[operator]` host and port
//! included) and apply it on top of this model, with the same rules ([`valid_host`]).
//!
//! Loading is two steps, both pure apart from reading the file and key files:
//! [`Config::from_file`] / [`Config::from_str`] parse and validate everything the file says, and
//! [`Config::apply_env`] reads the secrets (taking a lookup function, so tests need no real
//! environment). Nothing is bound or started before both succeeded: a bad configuration is one
//! error listing every problem found, each with the file, line and column of the offending item
//! (`config.toml:12:5: namespace "/chat": event "say": …`).
//!
//! The file is parsed into private `Raw*` structs that mirror the TOML (`raw`: unknown keys are
//! errors, every item keeps its span), then validated (`validate`) into the public model defined
//! here ([`Config`], [`NamespaceConfig`], [`EventRule`], …), which holds only checked, compiled
//! values: regexes, room templates, argument paths and verification keys. The loading functions
//! above live in `validate`; this file is the model alone and imports neither submodule. The
//! policy layer (the `policy` module) runs that model; it never sees raw TOML.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use regex::Regex;
use serde::Deserialize;

use crate::auth::{Algorithm, RequiredClaim};
use crate::jwks;
use crate::ratelimit;
use crate::rule::{ArgPath, Template};

mod raw;
mod validate;

// The rules the binaries' settings share with this module: one rule per kind of value.
pub use validate::{bare_host, line_col, valid_host};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests;

/// The configuration shipped with the gateway (used when no file is given): namespace `/` and a
/// demo namespace `/chat`, no secrets needed.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Default listen address.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 3000;
/// Default Engine.IO path.
pub const DEFAULT_PATH: &str = "/socket.io/";
/// Default interval between server pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_millis(25_000);
/// Default time a client has to answer a ping.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_millis(20_000);
/// Default largest message accepted from a client.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = crate::engine::DEFAULT_MAX_PAYLOAD_BYTES;
/// Default time a new connection has to connect to a namespace.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(45_000);
/// Default time a transport upgrade may take.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default bound of a connection's outbound queue, in messages.
pub const DEFAULT_OUTBOUND_QUEUE_MAX_MESSAGES: usize = 1024;
/// Default time a polling POST has to deliver its whole body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default bound of the handshake query string a session keeps.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 2048;
/// Default bound of the handshake headers a session keeps, all together.
pub const DEFAULT_MAX_KEPT_HEADER_BYTES: usize = 4096;
/// Default address of the operator listener (`/metrics`, `/v1/state`): loopback only.
pub const DEFAULT_OPERATOR_HOST: &str = "127.0.0.1";
/// Default port of the operator listener (Prometheus exporters' customary 9464).
pub const DEFAULT_OPERATOR_PORT: u16 = 9464;
/// Default number of rooms one socket may be in.
pub const DEFAULT_MAX_ROOMS: usize = 100;
/// Default clock-skew allowance for `exp` / `nbf`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Largest accepted leeway: more would make `exp` meaningless.
pub const MAX_LEEWAY_SECONDS: u64 = 3600;
/// Longest `jwt.jwks_timeout_ms`.
pub const MAX_JWKS_TIMEOUT_MS: u64 = 60_000;
/// Longest `jwt.jwks_grace_ms` (a day: longer than any sensible token lifetime).
pub const MAX_JWKS_GRACE_MS: u64 = 24 * 60 * 60 * 1000;
/// Default event used to tell a client that an event without ack was rate limited.
pub const DEFAULT_RATE_LIMIT_EVENT: &str = "error";

pub use switchboard_proto::RESERVED_EVENTS;

// The event rules are defined beside the templates they hold; they stay reachable here as part
// of the configuration model.
pub use crate::rule::{
    Action, BroadcastRule, EchoRule, EventRule, ForwardRule, HistoryRule, JoinRule, LeaveRule,
    MAX_HISTORY, RelayRule, RoomRule,
};

/// Where a problem is: the file (or `environment`), and line and column when known (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file name given to the loader, or `environment`.
    pub origin: String,
    /// Line, 1-based.
    pub line: Option<usize>,
    /// Column in characters, 1-based.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub location: Location,
    /// What, in words for the operator.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or does not fit the schema (unknown key, wrong type).
    #[error("{0}")]
    Parse(Problem),
    /// The file parsed but describes an unusable configuration.
    #[error("{0}")]
    Invalid(Problems),
    /// An environment variable has an unusable value, or one the configuration needs is unset.
    #[error("{0}")]
    Env(Problems),
}

impl ConfigError {
    /// The individual problems (one for read and parse errors).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { path, source } => vec![Problem {
                location: Location {
                    origin: path.display().to_string(),
                    line: None,
                    column: None,
                },
                message: format!("cannot read: {source}"),
            }],
            Self::Parse(p) => vec![p.clone()],
            Self::Invalid(ps) | Self::Env(ps) => ps.0.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated model.

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (file name, or the name given to [`Config::from_str`]).
    pub origin: String,
    /// HTTP / Engine.IO options.
    pub server: ServerConfig,
    /// The operator listener.
    pub operator: OperatorConfig,
    /// Namespaces, in file order (dynamic ones are tried in this order too).
    pub namespaces: Vec<NamespaceConfig>,
    /// The `[limits]` section: what one client connection may make the gateway hold.
    pub limits: crate::sio::Limits,
}

/// The `[server]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Listen address (IP or host name).
    pub host: String,
    /// Listen port (0 = any free port).
    pub port: u16,
    /// Engine.IO path, always with a leading and a trailing `/`.
    pub path: String,
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping.
    pub ping_timeout: Duration,
    /// Largest message accepted from a client.
    pub max_payload_bytes: usize,
    /// Time a new connection has to connect to a namespace.
    pub connect_timeout: Duration,
    /// Time a transport upgrade may take.
    pub upgrade_timeout: Duration,
    /// Concurrent connections from one IP address (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Bound of each connection's outbound queue, in messages.
    pub outbound_queue_max_messages: usize,
    /// Cross-origin access for browsers.
    pub cors: Cors,
    /// Transports clients may use.
    pub transports: Transports,
    /// Serve the demo page at `/`.
    pub serve_demo_page: bool,
    /// The demo page's copy of the official client (`socket.io.min.js`); `None`: the copy the
    /// binary has built in (if its build could fetch it), else the test suite's `node_modules`.
    pub client_js: Option<PathBuf>,
    /// Time a polling POST has to deliver its whole body.
    pub body_timeout: Duration,
    /// Longest handshake query string accepted (it is kept for the session's life).
    pub max_query_bytes: usize,
    /// Most bytes of kept handshake header values, all together.
    pub max_kept_header_bytes: usize,
    /// permessage-deflate over WebSocket when the client offers it (Node: `perMessageDeflate`,
    /// off by default).
    pub per_message_deflate: bool,
    /// WebSocket messages shorter than this are sent uncompressed.
    pub per_message_deflate_threshold_bytes: usize,
    /// gzip or deflate polling responses, as `Accept-Encoding` allows (Node: `httpCompression`,
    /// on by default).
    pub http_compression: bool,
    /// Polling responses shorter than this are sent uncompressed.
    pub http_compression_threshold_bytes: usize,
}

/// The `[operator]` section: where `/metrics` and `/v1/state` are served, apart from clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Listen address (IP or host name).
    pub host: String,
    /// Listen port (0 = any free port).
    pub port: u16,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_OPERATOR_HOST.to_owned(),
            port: DEFAULT_OPERATOR_PORT,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            path: DEFAULT_PATH.to_owned(),
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            max_connections_per_ip: 0,
            outbound_queue_max_messages: DEFAULT_OUTBOUND_QUEUE_MAX_MESSAGES,
            cors: Cors::default(),
            transports: Transports::default(),
            serve_demo_page: false,
            client_js: None,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_kept_header_bytes: DEFAULT_MAX_KEPT_HEADER_BYTES,
            per_message_deflate: false,
            per_message_deflate_threshold_bytes: crate::engine::DEFAULT_COMPRESSION_THRESHOLD_BYTES,
            http_compression: true,
            http_compression_threshold_bytes: crate::engine::DEFAULT_COMPRESSION_THRESHOLD_BYTES,
        }
    }
}

impl ServerConfig {
    /// The Engine.IO options of the endpoint (`max_queued_frames` is the outbound queue bound).
    pub fn engine_config(&self) -> crate::engine::Config {
        crate::engine::Config {
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            max_payload: self.max_payload_bytes,
            upgrade_timeout: self.upgrade_timeout,
            max_queued_frames: self.outbound_queue_max_messages,
            // Room for a few messages of the largest size a client may send, at least.
            max_queued_bytes: crate::engine::DEFAULT_MAX_QUEUED_BYTES
                .max(self.max_payload_bytes.saturating_mul(4)),
            allow_polling: self.transports.polling,
            allow_websocket: self.transports.websocket,
            max_connections_per_ip: self.max_connections_per_ip,
            body_timeout: self.body_timeout,
            max_query_bytes: self.max_query_bytes,
            max_kept_header_bytes: self.max_kept_header_bytes,
            per_message_deflate: self
                .per_message_deflate
                .then_some(self.per_message_deflate_threshold_bytes),
            http_compression: self
                .http_compression
                .then_some(self.http_compression_threshold_bytes),
        }
    }

    /// The CORS rules in the HTTP layer's form (`["*"]` for any origin, empty for none).
    pub fn http_cors(&self) -> crate::http::Cors {
        crate::http::Cors {
            origins: match &self.cors.allowed_origins {
                AllowedOrigins::Any => vec!["*".to_owned()],
                AllowedOrigins::List(list) => list.clone(),
                AllowedOrigins::None => Vec::new(),
            },
            credentials: self.cors.credentials,
        }
    }
}

/// CORS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Origins allowed to connect from a browser.
    pub allowed_origins: AllowedOrigins,
    /// Send `Access-Control-Allow-Credentials: true` (never combined with any-origin).
    pub credentials: bool,
}

/// Which browser origins may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: any origin.
    Any,
    /// Exactly these origins (`scheme://host[:port]`); empty: no cross-origin access (the
    /// default, as in the reference server).
    List(Vec<String>),
    /// No cross-origin access.
    #[default]
    None,
}

impl Cors {
    /// Whether a request's `Origin` header value is allowed (ASCII case-insensitive).
    pub fn allows(&self, origin: &str) -> bool {
        match &self.allowed_origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            AllowedOrigins::None => false,
        }
    }
}

/// The transports clients may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports {
    /// HTTP long-polling.
    pub polling: bool,
    /// WebSocket.
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Self {
            polling: true,
            websocket: true,
        }
    }
}

/// A transport name in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// Whether a namespace asks for a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token is looked at; there are no claims.
    #[default]
    None,
    /// Anonymous clients may connect; a token, if presented, must be valid.
    Optional,
    /// A valid token is needed to connect.
    Required,
}

/// How a namespace entry selects namespaces.
#[derive(Clone, Debug)]
pub enum NamespaceMatch {
    /// Exactly this name (`name = "/chat"`).
    Static(String),
    /// Every name the regex matches in full (`pattern = "/tenant-[a-z0-9]+"`, anchored).
    Pattern(Regex),
}

impl NamespaceMatch {
    /// Whether a namespace name is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Static(n) => n == name,
            Self::Pattern(re) => re.is_match(name),
        }
    }

    /// The name or the pattern as written, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Static(n) => format!("{n:?}"),
            Self::Pattern(re) => format!("pattern {:?}", re.as_str()),
        }
    }
}

/// One `[[namespace]]` entry.
#[derive(Clone, Debug)]
pub struct NamespaceConfig {
    /// Which namespaces it applies to.
    pub matcher: NamespaceMatch,
    /// Token requirement.
    pub auth: AuthMode,
    /// Token verification (present iff `auth` is not `none`).
    pub jwt: Option<JwtConfig>,
    /// Claims a token must carry.
    pub required_claims: Vec<RequiredClaim>,
    /// Rooms joined on connect (claim templates; anonymous sockets skip templated ones).
    pub auto_join: Vec<Template>,
    /// Rooms one socket may be in (0 = unlimited).
    pub max_rooms: usize,
    /// Per-socket event rate limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// Client events and what to do with them; unique names.
    pub events: Vec<EventRule>,
    /// Presence announcements shown to the namespace's sockets (static namespaces only).
    pub presence: Option<PresenceRule>,
    /// Connection state recovery (static namespaces only; `None`: off).
    pub recovery: Option<RecoveryRule>,
    /// Where the entry is in the file.
    pub location: Location,
}

/// `[namespace.jwt]`.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The accepted algorithm (the first of [`JwtConfig::algorithms`]).
    pub algorithm: Algorithm,
    /// Every accepted algorithm: just `algorithm` for a fixed key; one or more for a JWKS.
    pub algorithms: Vec<Algorithm>,
    /// Where the key comes from.
    pub key_source: KeySource,
    /// The key: loaded at parse time for key files, by [`Config::apply_env`] for secrets; `None`
    /// for a JWKS.
    pub key: Option<DecodingKey>,
    /// The key set (`jwks_url` / `jwks_file`): empty until [`crate::jwks::start`] loads it.
    pub jwks: Option<Arc<jwks::Source>>,
    /// Accepted `iss` values (empty: not checked).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (empty: tokens naming an audience are refused).
    pub audiences: Vec<String>,
    /// Clock-skew allowance for `exp` / `nbf`.
    pub leeway_seconds: u64,
}

/// Where a verification key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An HMAC secret in an environment variable.
    SecretEnv {
        /// The variable's name.
        var: String,
        /// Where `secret_env` is written.
        location: Location,
    },
    /// A PEM public key file.
    PublicKeyFile {
        /// The path (resolved against the config file's directory).
        path: PathBuf,
    },
    /// A JWKS (`jwks_url` or `jwks_file`, the path resolved against the config file's
    /// directory).
    Jwks(jwks::Origin),
}

/// A namespace's rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Bucket and abuse settings.
    pub settings: ratelimit::Settings,
    /// Event emitted to a client whose event without ack was rejected (None: stay silent).
    pub error_event: Option<String>,
}

/// Default ack timeout of `forward`.
pub const DEFAULT_FORWARD_TIMEOUT_MS: u64 = 5000;

/// `[namespace.recovery]`: connection state recovery, as socket.io's `connectionStateRecovery`
/// (docs/recovery.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryRule {
    /// How long a disconnected client's session is kept (`max_disconnection_ms`, default 2 min).
    pub window: Duration,
    /// Whether a recovered socket skips the connect checks (token, claims, auto-join) and keeps
    /// its session's (`skip_middlewares`, default true).
    pub skip_middlewares: bool,
    /// A recovery that would replay more packets gives a fresh session instead (default 256;
    /// with the packets that arrive during the replay, at most twice this is queued at once, so
    /// it is bounded by `[server] outbound_queue_max_messages`).
    pub max_replay_packets: usize,
    /// The same in bytes (default 4 MiB).
    pub max_replay_bytes: usize,
}

/// Default of [`RecoveryRule::window`].
pub const DEFAULT_RECOVERY_WINDOW: Duration = Duration::from_secs(120);
/// Default of [`RecoveryRule::max_replay_packets`].
pub const DEFAULT_MAX_REPLAY_PACKETS: usize = 256;
/// Default of [`RecoveryRule::max_replay_bytes`].
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// `[namespace.presence]`: which of the broker's presence announcements the namespace's sockets
/// receive, and under which event name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceRule {
    /// Users joining and leaving rooms, sent to the room's members.
    pub rooms: bool,
    /// Users coming online and going offline, sent to the whole namespace.
    pub users: bool,
    /// The event name (default `presence`).
    pub event: String,
    /// Whether the gateway shows the announcements to the namespace's sockets (default true);
    /// false leaves them to workers, which receive them on the bus either way.
    pub to_clients: bool,
}

impl Config {
    /// The Socket.IO options of the server: `[server] connect_timeout_ms` and the `[limits]`.
    pub fn sio_config(&self) -> crate::sio::Config {
        crate::sio::Config {
            connect_timeout: self.server.connect_timeout,
            limits: self.limits.clone(),
        }
    }

    /// The built-in configuration ([`DEFAULT_TOML`]).
    pub fn builtin() -> Result<Self, ConfigError> {
        Self::from_str(DEFAULT_TOML, "default.toml (built in)")
    }

    /// The environment variables holding secrets this configuration needs.
    pub fn secret_vars(&self) -> Vec<&str> {
        self.namespaces
            .iter()
            .filter_map(|ns| match ns.jwt.as_ref().map(|j| &j.key_source) {
                Some(KeySource::SecretEnv { var, .. }) => Some(var.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The JWKS sources of the namespaces, for [`crate::jwks::start`].
    pub fn jwks_sources(&self) -> Vec<Arc<jwks::Source>> {
        self.namespaces
            .iter()
            .filter_map(|ns| ns.jwt.as_ref()?.jwks.clone())
            .collect()
    }

    /// The first namespace entry that applies to a namespace name.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        self.namespaces.iter().find(|n| n.matcher.matches(name))
    }
}

impl NamespaceConfig {
    /// The rule for an event name.
    pub fn event(&self, name: &str) -> Option<&EventRule> {
        self.events.iter().find(|e| e.name == name)
    }
}
