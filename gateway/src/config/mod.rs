//! The gateway's configuration: a TOML file for the structured parts (server options, namespaces
//! and their event rules) plus environment variables for the scalars operators change per
//! deployment (host, port) and for secrets.
//!
//! Loading is two steps, both pure apart from reading the file and key files:
//! [`Config::from_file`] / [`Config::from_str`] parse and validate everything the file says, and
//! [`Config::apply_env`] applies the environment (taking a lookup function, so tests need no real
//! environment). Nothing is bound or started before both succeeded: a bad configuration is one
//! error listing every problem found, each with the file, line and column of the offending item
//! (`config.toml:12:5: namespace "/chat": event "say": …`).
//!
//! The file is parsed into private `Raw*` structs that mirror the TOML (unknown keys are errors,
//! every item keeps its span), then validated into the public model ([`Config`],
//! [`NamespaceConfig`], [`EventRule`], …), which holds only checked, compiled values: regexes,
//! room templates, argument paths and verification keys. The policy layer (the `policy` module)
//! runs that model; it never sees raw TOML.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::auth::{self, Algorithm, RequiredClaim};
use crate::ratelimit;
use crate::rule::{ArgPath, Template};

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
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1_000_000;
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
/// Default event used to tell a client that an event without ack was rate limited.
pub const DEFAULT_RATE_LIMIT_EVENT: &str = "error";
/// Socket.IO clients run `setTimeout(pingInterval + pingTimeout)`; JavaScript timers fire at
/// once past 2^31 - 1 ms, so larger values would make every client time out immediately.
const MAX_JS_TIMER_MS: u64 = 2_147_483_647;
/// Largest key file read (a PEM public key is a few KiB).
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Regex size limit for namespace patterns (bytes of compiled program).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

pub use switchboard_proto::RESERVED_EVENTS;

// The event rules are defined beside the templates they hold; they stay reachable here as part
// of the configuration model.
pub use crate::rule::{
    Action, BroadcastRule, EchoRule, EventRule, ForwardRule, JoinRule, LeaveRule, RelayRule,
    RoomRule,
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
    /// Time a polling POST has to deliver its whole body.
    pub body_timeout: Duration,
    /// Longest handshake query string accepted (it is kept for the session's life).
    pub max_query_bytes: usize,
    /// Most bytes of kept handshake header values, all together.
    pub max_kept_header_bytes: usize,
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
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_kept_header_bytes: DEFAULT_MAX_KEPT_HEADER_BYTES,
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
    /// Where the entry is in the file.
    pub location: Location,
}

/// `[namespace.jwt]`.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The one accepted algorithm.
    pub algorithm: Algorithm,
    /// Where the key comes from.
    pub key_source: KeySource,
    /// The key: loaded at parse time for key files, by [`Config::apply_env`] for secrets.
    pub key: Option<DecodingKey>,
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
    /// Reads and validates a config file. Relative key file paths are resolved against the
    /// file's directory. Does not read the environment: call [`Config::apply_env`] next.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and validates config text; `origin` names it in error messages. Relative key
    /// file paths are resolved against the current directory.
    pub fn from_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse(text, origin, Path::new("."))
    }

    /// Parses and validates config text, resolving relative key file paths against `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse(Problem {
                location: Location {
                    origin: origin.to_owned(),
                    line,
                    column,
                },
                message: e.message().trim().to_owned(),
            })
        })?;
        let mut v = Validator {
            origin,
            text,
            base_dir,
            problems: Vec::new(),
        };
        let server = v.server(raw.server.unwrap_or_default());
        let operator = v.operator(raw.operator.unwrap_or_default());
        let namespaces = v.namespaces(raw.namespace);
        let limits = v.limits(raw.limits.unwrap_or_default(), &server);
        if v.problems.is_empty() {
            Ok(Self {
                origin: origin.to_owned(),
                server,
                operator,
                namespaces,
                limits,
            })
        } else {
            Err(ConfigError::Invalid(Problems(v.problems)))
        }
    }

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

    /// Applies the environment, read through `env` (pass `|k| std::env::var(k).ok()`):
    ///
    /// - `SWITCHBOARD_HOST` overrides `server.host`;
    /// - `SWITCHBOARD_PORT`, else `PORT`, overrides `server.port`;
    /// - `SWITCHBOARD_OPERATOR_HOST` / `SWITCHBOARD_OPERATOR_PORT` override `operator.host` /
    ///   `operator.port`;
    /// - every `secret_env` a namespace names is read and turned into its verification key.
    ///
    /// Empty host and port variables count as unset. All problems are
    /// reported together; on error `self` may be partly updated and should be dropped.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let env_problem = |message: String| Problem {
            location: Location {
                origin: "environment".to_owned(),
                line: None,
                column: None,
            },
            message,
        };
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let host = |var: &str, into: &mut String, problems: &mut Vec<Problem>| {
            let Some(host) = set(var) else { return };
            let host = host.trim();
            if valid_host(host) {
                *into = bare_host(host).to_owned();
            } else {
                problems.push(env_problem(format!(
                    "{var}={host:?} is not an IP address or host name"
                )));
            }
        };
        let port = |found: Option<(&str, String)>, into: &mut u16, problems: &mut Vec<Problem>| {
            let Some((var, value)) = found else { return };
            match value.trim().parse::<u16>() {
                Ok(p) => *into = p,
                Err(_) => problems.push(env_problem(format!(
                    "{var}={value:?} is not a port number (0 to 65535)"
                ))),
            }
        };
        host("SWITCHBOARD_HOST", &mut self.server.host, &mut problems);
        let client_port = set("SWITCHBOARD_PORT")
            .map(|v| ("SWITCHBOARD_PORT", v))
            .or_else(|| set("PORT").map(|v| ("PORT", v)));
        port(client_port, &mut self.server.port, &mut problems);
        host(
            "SWITCHBOARD_OPERATOR_HOST",
            &mut self.operator.host,
            &mut problems,
        );
        let operator_port =
            set("SWITCHBOARD_OPERATOR_PORT").map(|v| ("SWITCHBOARD_OPERATOR_PORT", v));
        port(operator_port, &mut self.operator.port, &mut problems);
        for ns in &mut self.namespaces {
            let Some(jwt) = ns.jwt.as_mut() else { continue };
            let KeySource::SecretEnv { var, location } = &jwt.key_source else {
                continue;
            };
            let problem = |message: String| Problem {
                location: location.clone(),
                message: format!("namespace {}: {message}", ns.matcher.describe()),
            };
            match env(var) {
                None => problems.push(problem(format!(
                    "environment variable {var} is not set; it must hold the {:?} secret",
                    jwt.algorithm
                ))),
                Some(secret) if secret.is_empty() => {
                    problems.push(problem(format!("environment variable {var} is empty")));
                }
                Some(secret) => match auth::key_from_secret(jwt.algorithm, secret.as_bytes()) {
                    Ok(key) => jwt.key = Some(key),
                    Err(e) => problems.push(problem(format!("{var}: {e}"))),
                },
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Env(Problems(problems)))
        }
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

// ---------------------------------------------------------------------------------------------
// The raw TOML shape.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    operator: Option<RawOperator>,
    #[serde(default)]
    namespace: Vec<Spanned<RawNamespace>>,
    limits: Option<RawLimits>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_name_bytes: Option<Spanned<u64>>,
    max_attachments: Option<Spanned<u64>>,
    max_attachment_bytes: Option<Spanned<u64>>,
    binary_timeout_ms: Option<Spanned<u64>>,
    max_namespaces: Option<Spanned<u64>>,
    connects_per_interval: Option<Spanned<u64>>,
    connect_interval_ms: Option<Spanned<u64>>,
    max_pending_acks: Option<Spanned<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<Spanned<String>>,
    port: Option<u16>,
    path: Option<Spanned<String>>,
    ping_interval_ms: Option<Spanned<u64>>,
    ping_timeout_ms: Option<Spanned<u64>>,
    max_payload_bytes: Option<Spanned<u64>>,
    connect_timeout_ms: Option<Spanned<u64>>,
    upgrade_timeout_ms: Option<Spanned<u64>>,
    max_connections_per_ip: Option<Spanned<u64>>,
    outbound_queue_max_messages: Option<Spanned<u64>>,
    cors: Option<RawCors>,
    transports: Option<Spanned<Vec<Spanned<Transport>>>>,
    serve_demo_page: Option<bool>,
    body_timeout_ms: Option<Spanned<u64>>,
    max_query_bytes: Option<Spanned<u64>>,
    max_kept_header_bytes: Option<Spanned<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    host: Option<Spanned<String>>,
    port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<Spanned<Vec<Spanned<String>>>>,
    credentials: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    auth: Option<Spanned<AuthMode>>,
    jwt: Option<Spanned<RawJwt>>,
    required_claims: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    auto_join: Option<Vec<Spanned<String>>>,
    max_rooms: Option<Spanned<u64>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    presence: Option<Spanned<RawPresence>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPresence {
    rooms: Option<bool>,
    users: Option<bool>,
    event: Option<Spanned<String>>,
    to_clients: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    algorithm: Spanned<String>,
    secret_env: Option<Spanned<String>>,
    public_key_file: Option<Spanned<String>>,
    issuer: Option<Spanned<toml::Value>>,
    audience: Option<Spanned<toml::Value>>,
    leeway_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: Spanned<u64>,
    burst: Option<Spanned<u64>>,
    max_violations: Option<Spanned<u64>>,
    violation_window_ms: Option<Spanned<u64>>,
    error_event: Option<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionKind {
    Join,
    Leave,
    Relay,
    Broadcast,
    Echo,
    Forward,
}

impl ActionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Relay => "relay",
            Self::Broadcast => "broadcast",
            Self::Echo => "echo",
            Self::Forward => "forward",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: Spanned<String>,
    action: Spanned<ActionKind>,
    room_arg: Option<Spanned<toml::Value>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    max_members: Option<Spanned<u64>>,
    announce: Option<Spanned<String>>,
    member_only: Option<Spanned<bool>>,
    include_sender: Option<Spanned<bool>>,
    as_event: Option<Spanned<String>>,
    /// `forward`: the ack timeout.
    timeout_ms: Option<Spanned<u64>>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Validator<'a> {
    origin: &'a str,
    text: &'a str,
    base_dir: &'a Path,
    problems: Vec<Problem>,
}

/// An event-rule key as written (its span, if present) and the actions it applies to.
type FieldUse<'a> = (&'a str, Option<Range<usize>>, &'a [ActionKind]);

/// Context prefix of messages about a namespace or an event rule.
#[derive(Clone)]
struct Ctx(String);

impl Validator<'_> {
    fn at(&self, span: &Range<usize>) -> Location {
        let (line, column) = line_col(self.text, span.start);
        Location {
            origin: self.origin.to_owned(),
            line: Some(line),
            column: Some(column),
        }
    }

    fn problem(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let location = self.at(span);
        self.problems.push(Problem {
            location,
            message: message.into(),
        });
    }

    fn ctx_problem(&mut self, ctx: &Ctx, span: &Range<usize>, message: impl fmt::Display) {
        self.problem(span, format!("{}: {message}", ctx.0));
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    /// A positive duration of `[server]` in milliseconds.
    fn duration_ms(&mut self, key: &str, v: Option<Spanned<u64>>, default: Duration) -> Duration {
        self.positive_ms(&format!("server.{key}"), v, default)
    }

    /// A positive duration in milliseconds; `key` is the full key (`section.name`).
    fn positive_ms(&mut self, key: &str, v: Option<Spanned<u64>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) if *s.get_ref() == 0 => {
                self.problem(&s.span(), format!("{key} must be greater than 0"));
                default
            }
            Some(s) => Duration::from_millis(*s.get_ref()),
        }
    }

    fn positive_usize(&mut self, key: &str, v: Option<Spanned<u64>>, default: usize) -> usize {
        match v {
            None => default,
            Some(s) => match usize::try_from(*s.get_ref()) {
                Ok(0) => {
                    self.problem(&s.span(), format!("{key} must be greater than 0"));
                    default
                }
                Ok(n) => n,
                Err(_) => {
                    self.problem(&s.span(), format!("{key} is too large"));
                    default
                }
            },
        }
    }

    /// A listen host (`key` names it in problems).
    fn host(&mut self, key: &str, raw: Option<Spanned<String>>, default: String) -> String {
        match raw {
            None => default,
            Some(h) if valid_host(h.get_ref()) => bare_host(h.get_ref()).to_owned(),
            Some(h) => {
                self.problem(
                    &h.span(),
                    format!("{key} {:?} is not an IP address or host name", h.get_ref()),
                );
                default
            }
        }
    }

    fn operator(&mut self, raw: RawOperator) -> OperatorConfig {
        let d = OperatorConfig::default();
        OperatorConfig {
            host: self.host("operator.host", raw.host, d.host),
            port: raw.port.unwrap_or(d.port),
        }
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let d = ServerConfig::default();
        let host = self.host("server.host", raw.host, d.host);
        let path = match raw.path {
            None => d.path,
            Some(p) => match normalize_path(p.get_ref()) {
                Ok(path) => path,
                Err(msg) => {
                    self.problem(&p.span(), format!("server.path {:?}: {msg}", p.get_ref()));
                    d.path
                }
            },
        };
        let ping_interval = self.duration_ms(
            "ping_interval_ms",
            raw.ping_interval_ms.clone(),
            d.ping_interval,
        );
        let ping_timeout = self.duration_ms(
            "ping_timeout_ms",
            raw.ping_timeout_ms.clone(),
            d.ping_timeout,
        );
        let total = ping_interval
            .as_millis()
            .saturating_add(ping_timeout.as_millis());
        if total > u128::from(MAX_JS_TIMER_MS) {
            let span = raw
                .ping_interval_ms
                .as_ref()
                .or(raw.ping_timeout_ms.as_ref())
                .map(Spanned::span)
                .unwrap_or(0..0);
            self.problem(
                &span,
                format!(
                    "server.ping_interval_ms + server.ping_timeout_ms = {total} ms is more than \
                     JavaScript timers allow ({MAX_JS_TIMER_MS} ms); clients would time out at once"
                ),
            );
        }
        let max_payload_bytes = self.positive_usize(
            "server.max_payload_bytes",
            raw.max_payload_bytes,
            d.max_payload_bytes,
        );
        let connect_timeout = self.duration_ms(
            "connect_timeout_ms",
            raw.connect_timeout_ms,
            d.connect_timeout,
        );
        let upgrade_timeout = self.duration_ms(
            "upgrade_timeout_ms",
            raw.upgrade_timeout_ms,
            d.upgrade_timeout,
        );
        let max_connections_per_ip = match raw.max_connections_per_ip {
            None => 0,
            Some(s) => usize::try_from(*s.get_ref()).unwrap_or_else(|_| {
                self.problem(&s.span(), "server.max_connections_per_ip is too large");
                0
            }),
        };
        let outbound_queue_max_messages = self.positive_usize(
            "server.outbound_queue_max_messages",
            raw.outbound_queue_max_messages,
            d.outbound_queue_max_messages,
        );
        let cors = match raw.cors {
            None => d.cors,
            Some(c) => self.cors(c),
        };
        let transports = match raw.transports {
            None => d.transports,
            Some(list) => self.transports(list),
        };
        let body_timeout = self.duration_ms("body_timeout_ms", raw.body_timeout_ms, d.body_timeout);
        let max_query_bytes = self.positive_usize(
            "server.max_query_bytes",
            raw.max_query_bytes,
            d.max_query_bytes,
        );
        let max_kept_header_bytes = self.positive_usize(
            "server.max_kept_header_bytes",
            raw.max_kept_header_bytes,
            d.max_kept_header_bytes,
        );
        ServerConfig {
            host,
            port: raw.port.unwrap_or(d.port),
            path,
            ping_interval,
            ping_timeout,
            max_payload_bytes,
            connect_timeout,
            upgrade_timeout,
            max_connections_per_ip,
            outbound_queue_max_messages,
            cors,
            transports,
            serve_demo_page: raw.serve_demo_page.unwrap_or(false),
            body_timeout,
            max_query_bytes,
            max_kept_header_bytes,
        }
    }

    /// The `[limits]` section; `max_attachment_bytes` defaults to `max_payload_bytes`. Every
    /// limit is positive: 0 would refuse everything (or, for times, fire at once).
    fn limits(&mut self, raw: RawLimits, server: &ServerConfig) -> crate::sio::Limits {
        let d = crate::sio::Limits::default();
        let connects_per_interval = match raw.connects_per_interval {
            Some(s) if u32::try_from(*s.get_ref()).is_err() => {
                self.problem(&s.span(), "limits.connects_per_interval is too large");
                d.connects_per_interval
            }
            v => self.positive_usize(
                "limits.connects_per_interval",
                v,
                d.connects_per_interval as usize,
            ) as u32,
        };
        // A name longer than a bus subject can carry would pass the client edge and then be
        // refused by every cluster path: the subject bound is the ceiling.
        let max_name_bytes = match raw.max_name_bytes {
            Some(s) if *s.get_ref() > switchboard_proto::subject::MAX_NAME_BYTES as u64 => {
                self.problem(
                    &s.span(),
                    format!(
                        "limits.max_name_bytes must be at most {} (the longest name a bus subject carries)",
                        switchboard_proto::subject::MAX_NAME_BYTES
                    ),
                );
                d.max_name_bytes
            }
            v => self.positive_usize("limits.max_name_bytes", v, d.max_name_bytes),
        };
        crate::sio::Limits {
            max_name_bytes,
            max_attachments: self.positive_usize(
                "limits.max_attachments",
                raw.max_attachments,
                d.max_attachments,
            ),
            max_attachment_bytes: self.positive_usize(
                "limits.max_attachment_bytes",
                raw.max_attachment_bytes,
                server.max_payload_bytes,
            ),
            binary_timeout: self.positive_ms(
                "limits.binary_timeout_ms",
                raw.binary_timeout_ms,
                d.binary_timeout,
            ),
            max_namespaces: self.positive_usize(
                "limits.max_namespaces",
                raw.max_namespaces,
                d.max_namespaces,
            ),
            connects_per_interval,
            connect_interval: self.positive_ms(
                "limits.connect_interval_ms",
                raw.connect_interval_ms,
                d.connect_interval,
            ),
            max_pending_acks: self.positive_usize(
                "limits.max_pending_acks",
                raw.max_pending_acks,
                d.max_pending_acks,
            ),
        }
    }

    fn cors(&mut self, raw: RawCors) -> Cors {
        let credentials = raw.credentials.as_ref().is_some_and(|c| *c.get_ref());
        let Some(list) = raw.allowed_origins else {
            return Cors {
                allowed_origins: AllowedOrigins::None,
                credentials,
            };
        };
        let list_span = list.span();
        let items = list.into_inner();
        let any = items.iter().any(|o| o.get_ref() == "*");
        if any {
            if items.len() > 1 {
                self.problem(
                    &list_span,
                    "server.cors.allowed_origins: \"*\" must be the only entry",
                );
            }
            if credentials {
                let span = raw.credentials.map_or(list_span, |c| c.span());
                self.problem(
                    &span,
                    "server.cors: credentials = true cannot be combined with allowed_origins = [\"*\"] \
                     (browsers refuse it); list the origins instead",
                );
            }
            return Cors {
                allowed_origins: AllowedOrigins::Any,
                credentials,
            };
        }
        let mut out: Vec<String> = Vec::new();
        for o in items {
            if let Err(msg) = check_origin(o.get_ref()) {
                self.problem(
                    &o.span(),
                    format!("server.cors.allowed_origins: {:?} {msg}", o.get_ref()),
                );
            } else if out.iter().any(|x| x.eq_ignore_ascii_case(o.get_ref())) {
                self.problem(
                    &o.span(),
                    format!(
                        "server.cors.allowed_origins: {:?} is listed twice",
                        o.get_ref()
                    ),
                );
            } else {
                out.push(o.into_inner());
            }
        }
        Cors {
            allowed_origins: if out.is_empty() {
                AllowedOrigins::None
            } else {
                AllowedOrigins::List(out)
            },
            credentials,
        }
    }

    fn transports(&mut self, list: Spanned<Vec<Spanned<Transport>>>) -> Transports {
        let span = list.span();
        let mut t = Transports {
            polling: false,
            websocket: false,
        };
        for item in list.into_inner() {
            let slot = match item.get_ref() {
                Transport::Polling => &mut t.polling,
                Transport::Websocket => &mut t.websocket,
            };
            if *slot {
                self.problem(&item.span(), "server.transports: listed twice");
            }
            *slot = true;
        }
        if !t.polling && !t.websocket {
            self.problem(
                &span,
                "server.transports must name at least one of \"polling\", \"websocket\"",
            );
            return Transports::default();
        }
        t
    }

    fn namespaces(&mut self, raw: Vec<Spanned<RawNamespace>>) -> Vec<NamespaceConfig> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for ns in raw {
            let span = ns.span();
            let ns = ns.into_inner();
            let key_and_span = match (&ns.name, &ns.pattern) {
                (Some(n), None) => Some((format!("name {:?}", n.get_ref()), n.span())),
                (None, Some(p)) => Some((format!("pattern {:?}", p.get_ref()), p.span())),
                (Some(n), Some(_)) => {
                    self.problem(
                        &n.span(),
                        "a namespace has either `name` (static) or `pattern` (dynamic), not both",
                    );
                    None
                }
                (None, None) => {
                    self.problem(
                        &span,
                        "a namespace needs `name = \"/...\"` or `pattern = \"...\"`",
                    );
                    None
                }
            };
            if let Some((key, key_span)) = key_and_span {
                let line = self.line_of(&key_span);
                if let Some(first) = seen.get(&key) {
                    self.problem(
                        &key_span,
                        format!("namespace {key} is defined twice (first at line {first})"),
                    );
                } else {
                    seen.insert(key, line);
                }
            }
            if let Some(cfg) = self.namespace(ns, &span) {
                out.push(cfg);
            }
        }
        out
    }

    fn namespace(&mut self, raw: RawNamespace, span: &Range<usize>) -> Option<NamespaceConfig> {
        let matcher = match (raw.name, raw.pattern) {
            (Some(n), None) => {
                if let Err(msg) = check_namespace_name(n.get_ref()) {
                    self.problem(&n.span(), format!("namespace {:?}: {msg}", n.get_ref()));
                    return None;
                }
                NamespaceMatch::Static(n.into_inner())
            }
            (None, Some(p)) => {
                // Compiled as written first so that errors point into the operator's text, then
                // anchored: a pattern selects whole namespace names.
                let compiled = regex::RegexBuilder::new(p.get_ref())
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .and_then(|_| {
                        regex::RegexBuilder::new(&format!("^(?:{})$", p.get_ref()))
                            .size_limit(PATTERN_SIZE_LIMIT)
                            .build()
                    });
                match compiled {
                    Ok(re) => NamespaceMatch::Pattern(re),
                    Err(e) => {
                        self.problem(
                            &p.span(),
                            format!(
                                "namespace pattern {:?} is not a valid regex: {}",
                                p.get_ref(),
                                regex_reason(&e)
                            ),
                        );
                        return None;
                    }
                }
            }
            // Reported by `namespaces`.
            _ => return None,
        };
        let ctx = Ctx(format!("namespace {}", matcher.describe()));
        let location = self.at(span);
        let auth = raw.auth.as_ref().map_or(AuthMode::None, |a| *a.get_ref());
        let auth_span = raw.auth.as_ref().map_or(span.clone(), Spanned::span);
        let jwt = match (auth, raw.jwt) {
            (AuthMode::None, Some(j)) => {
                self.ctx_problem(&ctx, &j.span(), "has auth = \"none\" (the default) but a [namespace.jwt] section; set auth = \"optional\" or \"required\", or remove the section");
                None
            }
            (AuthMode::None, None) => None,
            (_, None) => {
                self.ctx_problem(
                    &ctx,
                    &auth_span,
                    "auth needs a [namespace.jwt] section (algorithm and key)",
                );
                None
            }
            (_, Some(j)) => self.jwt(&ctx, j.into_inner()),
        };
        let claims_ok = auth != AuthMode::None;
        let required_claims = match raw.required_claims {
            None => Vec::new(),
            Some(rc) if !claims_ok => {
                self.ctx_problem(
                    &ctx,
                    &rc.span(),
                    "required_claims needs auth = \"optional\" or \"required\"",
                );
                Vec::new()
            }
            Some(rc) => self.required_claims(&ctx, rc.into_inner()),
        };
        let mut auto_join = Vec::new();
        for t in raw.auto_join.unwrap_or_default() {
            match Template::parse_exact(t.get_ref()) {
                Ok(tpl) => {
                    if self.check_claims_usable(&ctx, &t.span(), &tpl, claims_ok, "auto_join")
                        && !auto_join.contains(&tpl)
                    {
                        auto_join.push(tpl);
                    }
                }
                Err(e) => {
                    self.ctx_problem(&ctx, &t.span(), format!("auto_join {:?}: {e}", t.get_ref()))
                }
            }
        }
        let max_rooms = match raw.max_rooms {
            None => DEFAULT_MAX_ROOMS,
            Some(m) => usize::try_from(*m.get_ref()).unwrap_or(usize::MAX),
        };
        if max_rooms != 0 && auto_join.len() > max_rooms {
            self.ctx_problem(
                &ctx,
                span,
                format!(
                    "auto_join lists {} rooms but max_rooms is {max_rooms}",
                    auto_join.len()
                ),
            );
        }
        let rate_limit = raw
            .rate_limit
            .map(|r| self.rate_limit(&ctx, r.into_inner()));
        let presence = raw.presence.and_then(|p| {
            let span = p.span();
            let p = p.into_inner();
            if !matches!(matcher, NamespaceMatch::Static(_)) {
                self.ctx_problem(
                    &ctx,
                    &span,
                    "presence is only available on namespaces with a fixed name",
                );
                return None;
            }
            let event = match p.event {
                None => "presence".to_owned(),
                Some(e) => {
                    self.emitted_event_name(&ctx, "presence.event", &e);
                    e.into_inner()
                }
            };
            Some(PresenceRule {
                rooms: p.rooms.unwrap_or(true),
                users: p.users.unwrap_or(true),
                event,
                to_clients: p.to_clients.unwrap_or(true),
            })
        });
        let mut events: Vec<EventRule> = Vec::new();
        let mut event_lines: HashMap<String, usize> = HashMap::new();
        for e in raw.event {
            let name_span = e.get_ref().name.span();
            let name = e.get_ref().name.get_ref().clone();
            let line = self.line_of(&name_span);
            if let Some(first) = event_lines.get(&name) {
                self.ctx_problem(
                    &ctx,
                    &name_span,
                    format!("event {name:?} has two rules (first at line {first})"),
                );
                continue;
            }
            event_lines.insert(name, line);
            if let Some(rule) = self.event(&ctx, e.into_inner(), claims_ok) {
                events.push(rule);
            }
        }
        Some(NamespaceConfig {
            matcher,
            auth,
            jwt,
            required_claims,
            auto_join,
            max_rooms,
            rate_limit,
            events,
            presence,
            location,
        })
    }

    fn jwt(&mut self, ctx: &Ctx, raw: RawJwt) -> Option<JwtConfig> {
        let alg_span = raw.algorithm.span();
        let algorithm = match raw.algorithm.get_ref().parse::<Algorithm>() {
            Ok(a) => a,
            Err(_) => {
                self.ctx_problem(
                    ctx,
                    &alg_span,
                    format!(
                        "jwt.algorithm {:?} is not supported; use one of HS256, HS384, HS512, RS256, \
                         RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                        raw.algorithm.get_ref()
                    ),
                );
                return None;
            }
        };
        let issuers = raw
            .issuer
            .map_or_else(Vec::new, |v| self.string_list(ctx, "jwt.issuer", v));
        let audiences = raw
            .audience
            .map_or_else(Vec::new, |v| self.string_list(ctx, "jwt.audience", v));
        let leeway_seconds = match raw.leeway_seconds {
            None => DEFAULT_LEEWAY_SECONDS,
            Some(l) if *l.get_ref() > MAX_LEEWAY_SECONDS => {
                self.ctx_problem(
                    ctx,
                    &l.span(),
                    format!("jwt.leeway_seconds must be at most {MAX_LEEWAY_SECONDS}"),
                );
                DEFAULT_LEEWAY_SECONDS
            }
            Some(l) => *l.get_ref(),
        };
        let (key_source, key) = if auth::uses_secret(algorithm) {
            if let Some(f) = &raw.public_key_file {
                self.ctx_problem(
                    ctx,
                    &f.span(),
                    format!("{algorithm:?} uses a shared secret (secret_env), not public_key_file"),
                );
            }
            let Some(var) = raw.secret_env else {
                self.ctx_problem(
                    ctx,
                    &alg_span,
                    format!(
                        "{algorithm:?} needs secret_env = \"NAME_OF_ENV_VAR\" holding the secret"
                    ),
                );
                return None;
            };
            if !valid_env_name(var.get_ref()) {
                self.ctx_problem(
                    ctx,
                    &var.span(),
                    format!(
                        "jwt.secret_env {:?} is not an environment variable name",
                        var.get_ref()
                    ),
                );
                return None;
            }
            let location = self.at(&var.span());
            (
                KeySource::SecretEnv {
                    var: var.into_inner(),
                    location,
                },
                None,
            )
        } else {
            if let Some(s) = &raw.secret_env {
                self.ctx_problem(
                    ctx,
                    &s.span(),
                    format!(
                        "{algorithm:?} verifies with a public key (public_key_file), not secret_env"
                    ),
                );
            }
            let Some(file) = raw.public_key_file else {
                self.ctx_problem(
                    ctx,
                    &alg_span,
                    format!("{algorithm:?} needs public_key_file = \"path/to/public.pem\""),
                );
                return None;
            };
            let path = self.base_dir.join(file.get_ref());
            match read_limited(&path) {
                Err(e) => {
                    self.ctx_problem(
                        ctx,
                        &file.span(),
                        format!("cannot read public_key_file {}: {e}", path.display()),
                    );
                    return None;
                }
                Ok(pem) => match auth::key_from_pem(algorithm, &pem) {
                    Ok(key) => (KeySource::PublicKeyFile { path }, Some(key)),
                    Err(e) => {
                        self.ctx_problem(
                            ctx,
                            &file.span(),
                            format!("public_key_file {}: {e}", path.display()),
                        );
                        return None;
                    }
                },
            }
        };
        Some(JwtConfig {
            algorithm,
            key_source,
            key,
            issuers,
            audiences,
            leeway_seconds,
        })
    }

    /// A string or a non-empty list of non-empty strings.
    fn string_list(&mut self, ctx: &Ctx, key: &str, v: Spanned<toml::Value>) -> Vec<String> {
        let span = v.span();
        let items = match v.into_inner() {
            toml::Value::String(s) => vec![toml::Value::String(s)],
            toml::Value::Array(a) if !a.is_empty() => a,
            _ => {
                self.ctx_problem(
                    ctx,
                    &span,
                    format!("{key} must be a string or a non-empty list of strings"),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                toml::Value::String(s) if !s.is_empty() => out.push(s),
                _ => self.ctx_problem(
                    ctx,
                    &span,
                    format!("{key} must contain only non-empty strings"),
                ),
            }
        }
        out
    }

    fn required_claims(
        &mut self,
        ctx: &Ctx,
        raw: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    ) -> Vec<RequiredClaim> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let span = value.span();
            let accepted: Option<Vec<Value>> = match value.into_inner() {
                toml::Value::Array(items) if items.is_empty() => None,
                toml::Value::Array(items) => items.into_iter().map(claim_value).collect(),
                other => claim_value(other).map(|v| vec![v]),
            };
            match accepted {
                Some(accepted) if !name.get_ref().is_empty() => out.push(RequiredClaim {
                    name: name.into_inner(),
                    accepted,
                }),
                Some(_) => self.ctx_problem(ctx, &name.span(), "required_claims: empty claim name"),
                None => self.ctx_problem(
                    ctx,
                    &span,
                    format!(
                        "required_claims.{}: give a string, number or boolean, or a non-empty list of them",
                        name.get_ref()
                    ),
                ),
            }
        }
        out
    }

    /// False (and a problem) if a template uses claims where there are none.
    fn check_claims_usable(
        &mut self,
        ctx: &Ctx,
        span: &Range<usize>,
        t: &Template,
        claims_ok: bool,
        key: &str,
    ) -> bool {
        match t.claims().next() {
            Some(claim) if !claims_ok => {
                self.ctx_problem(
                    ctx,
                    span,
                    format!(
                        "{key} {:?} uses the claim {{{claim}}}, but the namespace has auth = \"none\" \
                         so there are no claims",
                        t.source()
                    ),
                );
                false
            }
            _ => true,
        }
    }

    fn rate_limit(&mut self, ctx: &Ctx, raw: RawRateLimit) -> RateLimitConfig {
        let mut count = |key: &str, v: Option<&Spanned<u64>>, default: u32, min: u32| -> u32 {
            match v {
                None => default,
                Some(s) => match u32::try_from(*s.get_ref()) {
                    Ok(n) if n >= min => n,
                    _ => {
                        self.ctx_problem(
                            ctx,
                            &s.span(),
                            format!("rate_limit.{key} must be between {min} and {}", u32::MAX),
                        );
                        default
                    }
                },
            }
        };
        let per_second = count("per_second", Some(&raw.per_second), 1, 1);
        let burst = count("burst", raw.burst.as_ref(), per_second, 1);
        let max_violations = count(
            "max_violations",
            raw.max_violations.as_ref(),
            ratelimit::DEFAULT_MAX_VIOLATIONS,
            0,
        );
        let violation_window = match &raw.violation_window_ms {
            None => ratelimit::DEFAULT_VIOLATION_WINDOW,
            Some(w) if *w.get_ref() == 0 => {
                self.ctx_problem(
                    ctx,
                    &w.span(),
                    "rate_limit.violation_window_ms must be greater than 0",
                );
                ratelimit::DEFAULT_VIOLATION_WINDOW
            }
            Some(w) => Duration::from_millis(*w.get_ref()),
        };
        let error_event = match raw.error_event {
            None => Some(DEFAULT_RATE_LIMIT_EVENT.to_owned()),
            Some(e) if e.get_ref().is_empty() => None,
            Some(e) => {
                self.emitted_event_name(ctx, "rate_limit.error_event", &e);
                Some(e.into_inner())
            }
        };
        RateLimitConfig {
            settings: ratelimit::Settings {
                per_second,
                burst,
                max_violations,
                violation_window,
            },
            error_event,
        }
    }

    /// Checks a name the server emits (as_event, announce, error_event).
    fn emitted_event_name(&mut self, ctx: &Ctx, key: &str, name: &Spanned<String>) {
        if name.get_ref().is_empty() {
            self.ctx_problem(ctx, &name.span(), format!("{key} must not be empty"));
        } else if RESERVED_EVENTS.contains(&name.get_ref().as_str()) {
            self.ctx_problem(
                ctx,
                &name.span(),
                format!("{key} {:?} is reserved by Socket.IO", name.get_ref()),
            );
        }
    }

    fn event(&mut self, ns_ctx: &Ctx, raw: RawEvent, claims_ok: bool) -> Option<EventRule> {
        let name = raw.name.get_ref().clone();
        let ctx = Ctx(format!("{}: event {name:?}", ns_ctx.0));
        let mut ok = true;
        if name.is_empty() {
            self.ctx_problem(
                ns_ctx,
                &raw.name.span(),
                "an event rule needs a non-empty name",
            );
            ok = false;
        } else if RESERVED_EVENTS.contains(&name.as_str()) {
            self.ctx_problem(
                &ctx,
                &raw.name.span(),
                "is reserved by Socket.IO; clients cannot emit it",
            );
            ok = false;
        }
        let kind = *raw.action.get_ref();
        use ActionKind::{Broadcast, Echo, Join, Leave, Relay};
        let fields: [FieldUse<'_>; 9] = [
            (
                "room_arg",
                raw.room_arg.as_ref().map(Spanned::span),
                &[Join, Leave, Relay],
            ),
            (
                "allow",
                raw.allow.as_ref().map(Spanned::span),
                &[Join, Leave, Relay],
            ),
            (
                "deny",
                raw.deny.as_ref().map(Spanned::span),
                &[Join, Leave, Relay],
            ),
            (
                "max_members",
                raw.max_members.as_ref().map(Spanned::span),
                &[Join],
            ),
            (
                "announce",
                raw.announce.as_ref().map(Spanned::span),
                &[Join, Leave],
            ),
            (
                "member_only",
                raw.member_only.as_ref().map(Spanned::span),
                &[Relay],
            ),
            (
                "include_sender",
                raw.include_sender.as_ref().map(Spanned::span),
                &[Relay, Broadcast],
            ),
            (
                "as_event",
                raw.as_event.as_ref().map(Spanned::span),
                &[Relay, Broadcast, Echo],
            ),
            (
                "timeout_ms",
                raw.timeout_ms.as_ref().map(Spanned::span),
                &[ActionKind::Forward],
            ),
        ];
        for (field, span, applies) in &fields {
            if let Some(span) = span
                && !applies.contains(&kind)
            {
                let list: Vec<&str> = applies.iter().map(|a| a.as_str()).collect();
                self.ctx_problem(
                    &ctx,
                    span,
                    format!(
                        "`{field}` does not apply to action \"{}\" (only to: {})",
                        kind.as_str(),
                        list.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let as_event = raw.as_event.map(|a| {
            self.emitted_event_name(&ctx, "as_event", &a);
            a.into_inner()
        });
        let announce = raw.announce.map(|a| {
            self.emitted_event_name(&ctx, "announce", &a);
            a.into_inner()
        });
        let room = self.room_rule(&ctx, raw.room_arg, raw.allow, raw.deny, claims_ok);
        let action = match kind {
            Join => {
                let max_members = match raw.max_members {
                    None => 0,
                    Some(m) if *m.get_ref() == 0 => {
                        self.ctx_problem(
                            &ctx,
                            &m.span(),
                            "max_members must be greater than 0 (leave it out for no limit)",
                        );
                        0
                    }
                    Some(m) => usize::try_from(*m.get_ref()).unwrap_or(usize::MAX),
                };
                Action::Join(JoinRule {
                    room: room?,
                    max_members,
                    announce,
                })
            }
            Leave => Action::Leave(LeaveRule {
                room: room?,
                announce,
            }),
            Relay => Action::Relay(RelayRule {
                room: room?,
                member_only: raw.member_only.is_none_or(|m| *m.get_ref()),
                include_sender: raw.include_sender.is_some_and(|m| *m.get_ref()),
                as_event,
            }),
            Broadcast => Action::Broadcast(BroadcastRule {
                include_sender: raw.include_sender.is_some_and(|m| *m.get_ref()),
                as_event,
            }),
            Echo => Action::Echo(EchoRule { as_event }),
            ActionKind::Forward => {
                let ms = match raw.timeout_ms {
                    None => DEFAULT_FORWARD_TIMEOUT_MS,
                    Some(t) if !(1..=600_000).contains(t.get_ref()) => {
                        self.ctx_problem(
                            &ctx,
                            &t.span(),
                            "timeout_ms must be between 1 and 600000",
                        );
                        ok = false;
                        DEFAULT_FORWARD_TIMEOUT_MS
                    }
                    Some(t) => *t.get_ref(),
                };
                Action::Forward(ForwardRule {
                    timeout: Duration::from_millis(ms),
                })
            }
        };
        ok.then_some(EventRule { name, action })
    }

    fn room_rule(
        &mut self,
        ctx: &Ctx,
        room_arg: Option<Spanned<toml::Value>>,
        allow: Option<Spanned<Vec<Spanned<String>>>>,
        deny: Option<Spanned<Vec<Spanned<String>>>>,
        claims_ok: bool,
    ) -> Option<RoomRule> {
        let mut ok = true;
        let room_arg = match room_arg {
            None => ArgPath::index(0),
            Some(v) => {
                let span = v.span();
                let parsed = match v.into_inner() {
                    toml::Value::Integer(i) => usize::try_from(i)
                        .map(ArgPath::index)
                        .map_err(|_| "must not be negative".to_owned()),
                    toml::Value::String(s) => ArgPath::parse(&s).map_err(|e| e.to_string()),
                    _ => Err("must be an argument index (0) or a path (\"0.room\")".to_owned()),
                };
                match parsed {
                    Ok(p) => p,
                    Err(msg) => {
                        self.ctx_problem(ctx, &span, format!("room_arg {msg}"));
                        ok = false;
                        ArgPath::index(0)
                    }
                }
            }
        };
        let mut patterns =
            |key: &str, list: Option<Spanned<Vec<Spanned<String>>>>| -> Vec<Template> {
                let mut out = Vec::new();
                for p in list.map(Spanned::into_inner).unwrap_or_default() {
                    match Template::parse(p.get_ref()) {
                        Ok(t) => {
                            if self.check_claims_usable(ctx, &p.span(), &t, claims_ok, key) {
                                out.push(t);
                            } else {
                                ok = false;
                            }
                        }
                        Err(e) => {
                            self.ctx_problem(
                                ctx,
                                &p.span(),
                                format!("{key} pattern {:?}: {e}", p.get_ref()),
                            );
                            ok = false;
                        }
                    }
                }
                out
            };
        let allow_span = allow.as_ref().map(Spanned::span);
        let allow = patterns("allow", allow);
        let deny = patterns("deny", deny);
        if let Some(span) = allow_span
            && allow.is_empty()
            && ok
        {
            self.ctx_problem(
                ctx,
                &span,
                "allow = [] permits no room; remove it to permit every room",
            );
            ok = false;
        }
        ok.then_some(RoomRule {
            room_arg,
            allow,
            deny,
        })
    }
}

/// The one-line reason of a regex error (its `Display` draws the pattern over several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}

/// Converts an accepted claim value.
fn claim_value(v: toml::Value) -> Option<Value> {
    match v {
        toml::Value::String(s) => Some(Value::String(s)),
        toml::Value::Integer(i) => Some(Value::from(i)),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map(Value::Number),
        toml::Value::Boolean(b) => Some(Value::Bool(b)),
        _ => None,
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(std::io::Error::other("file too large for a public key"));
    }
    Ok(buf)
}

/// `[::1]` → `::1` (the bracketed form is for URLs, not for binding).
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// An IP address (IPv6 optionally in brackets) or a DNS host name.
fn valid_host(host: &str) -> bool {
    if bare_host(host).parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The Engine.IO path with a trailing slash (as the reference server normalises it).
fn normalize_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("must start with /");
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a plain URL path (no query, fragment or spaces)");
    }
    if path.ends_with('/') {
        Ok(path.to_owned())
    } else {
        Ok(format!("{path}/"))
    }
}

/// `scheme://host[:port]`, as browsers send in `Origin`.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("is not an origin (scheme://host[:port])");
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    if !scheme_ok || rest.is_empty() {
        return Err("is not an origin (scheme://host[:port])");
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "must not have a path or a trailing slash (browsers send scheme://host[:port])",
        );
    }
    if rest.chars().any(|c| c.is_whitespace() || c == '*') {
        return Err("is not an origin (wildcards other than a lone \"*\" are not supported)");
    }
    Ok(())
}

fn check_namespace_name(name: &str) -> Result<(), &'static str> {
    if !name.starts_with('/') {
        Err("a namespace name starts with /")
    } else if name.chars().any(|c| c.is_control()) {
        Err("contains control characters")
    } else {
        Ok(())
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new(env!("CARGO_MANIFEST_DIR")))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert!(c.namespaces.is_empty());
    }

    #[test]
    fn builtin_config_loads_without_environment() {
        let mut c = Config::builtin().unwrap();
        c.apply_env(|_| None).unwrap();
        assert!(c.namespace("/").is_some());
        let chat = c.namespace("/chat").unwrap();
        let names: Vec<&str> = chat.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["join", "leave", "say", "shout"]);
        assert!(chat.rate_limit.is_some());
        assert!(c.secret_vars().is_empty());
    }

    #[test]
    fn server_section_is_read() {
        let c = parse(
            r#"
            [server]
            host = "0.0.0.0"
            port = 8080
            path = "/rt"
            ping_interval_ms = 1000
            ping_timeout_ms = 500
            max_payload_bytes = 2048
            connect_timeout_ms = 3000
            upgrade_timeout_ms = 4000
            max_connections_per_ip = 7
            outbound_queue_max_messages = 16
            transports = ["websocket"]
            serve_demo_page = true
            body_timeout_ms = 2500
            max_query_bytes = 512
            max_kept_header_bytes = 1024
            [server.cors]
            allowed_origins = ["https://app.example.com", "http://localhost:5173"]
            credentials = true
            [operator]
            host = "0.0.0.0"
            port = 9100
            "#,
        )
        .unwrap();
        let s = &c.server;
        assert_eq!(s.host, "0.0.0.0");
        assert_eq!(s.port, 8080);
        assert_eq!(s.path, "/rt/");
        assert_eq!(s.ping_interval, Duration::from_secs(1));
        assert_eq!(s.ping_timeout, Duration::from_millis(500));
        assert_eq!(s.max_payload_bytes, 2048);
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.upgrade_timeout, Duration::from_secs(4));
        assert_eq!(s.max_connections_per_ip, 7);
        assert_eq!(s.outbound_queue_max_messages, 16);
        assert_eq!(
            s.transports,
            Transports {
                polling: false,
                websocket: true
            }
        );
        assert!(s.serve_demo_page);
        assert!(s.cors.credentials);
        assert!(s.cors.allows("http://localhost:5173"));
        assert!(s.cors.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!s.cors.allows("https://evil.example"));
        assert_eq!(s.body_timeout, Duration::from_millis(2500));
        assert_eq!((s.max_query_bytes, s.max_kept_header_bytes), (512, 1024));
        assert_eq!(
            c.operator,
            OperatorConfig {
                host: "0.0.0.0".into(),
                port: 9100
            }
        );
    }

    #[test]
    fn operator_listener_defaults_to_loopback_and_follows_the_environment() {
        let mut c = parse("").unwrap();
        assert_eq!(c.operator, OperatorConfig::default());
        assert_eq!(c.operator.host, "127.0.0.1");
        assert_eq!(c.operator.port, 9464);
        c.apply_env(env_of(&[
            ("SWITCHBOARD_OPERATOR_HOST", "::"),
            ("SWITCHBOARD_OPERATOR_PORT", "0"),
        ]))
        .unwrap();
        assert_eq!((c.operator.host.as_str(), c.operator.port), ("::", 0));
        let e = parse("")
            .unwrap()
            .apply_env(env_of(&[
                ("SWITCHBOARD_OPERATOR_HOST", "a b"),
                ("SWITCHBOARD_OPERATOR_PORT", "x"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHBOARD_OPERATOR_HOST=\"a b\""), "{e}");
        assert!(e.contains("SWITCHBOARD_OPERATOR_PORT=\"x\""), "{e}");
        let e = err("[operator]\nhost = \"exa mple\"\nport = 1");
        assert!(e.contains("test.toml:2:") && e.contains("operator.host"), "{e}");
        let e = err("[server]\nbody_timeout_ms = 0\nmax_query_bytes = 0\nmax_kept_header_bytes = 0");
        for key in ["body_timeout_ms", "max_query_bytes", "max_kept_header_bytes"] {
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn limits_section_is_read_and_checked() {
        let d = parse("").unwrap();
        assert_eq!(d.limits, crate::sio::Limits::default());
        assert_eq!(d.sio_config().limits, d.limits);
        assert_eq!(
            Config::builtin().unwrap().limits,
            crate::sio::Limits::default(),
            "default.toml states the defaults"
        );
        // Attachment bytes follow max_payload_bytes unless set.
        let c = parse("[server]\nmax_payload_bytes = 5000").unwrap();
        assert_eq!(c.limits.max_attachment_bytes, 5000);
        let c = parse(
            r#"
            [limits]
            max_name_bytes = 10
            max_attachments = 2
            max_attachment_bytes = 300
            binary_timeout_ms = 700
            max_namespaces = 3
            connects_per_interval = 4
            connect_interval_ms = 900
            max_pending_acks = 5
            "#,
        )
        .unwrap();
        assert_eq!(
            c.limits,
            crate::sio::Limits {
                max_name_bytes: 10,
                max_attachments: 2,
                max_attachment_bytes: 300,
                binary_timeout: Duration::from_millis(700),
                max_namespaces: 3,
                connects_per_interval: 4,
                connect_interval: Duration::from_millis(900),
                max_pending_acks: 5,
            }
        );
        // (text, expected substrings of the error)
        let table: &[(&str, &[&str])] = &[
            (
                "[limits]\nmax_name_bytes = 0",
                &[
                    "test.toml:2:18",
                    "limits.max_name_bytes must be greater than 0",
                ],
            ),
            (
                "[limits]\nmax_name_bytes = 257",
                &[
                    "test.toml:2:18",
                    "limits.max_name_bytes must be at most 256",
                ],
            ),
            (
                "[limits]\nbinary_timeout_ms = 0",
                &[
                    "test.toml:2:21",
                    "limits.binary_timeout_ms must be greater than 0",
                ],
            ),
            (
                "[limits]\nconnects_per_interval = 5000000000",
                &["limits.connects_per_interval is too large"],
            ),
            (
                "[limits]\nmax_namespace = 3",
                &["test.toml:2:1", "unknown field `max_namespace`"],
            ),
        ];
        for (text, want) in table {
            let e = err(text);
            for w in *want {
                assert!(e.contains(w), "{text:?}: {e}");
            }
        }
    }

    /// (name, config text, expected substrings of the error, including file:line:col)
    #[test]
    fn errors_table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("toml syntax", "[server\nport = 1", &["test.toml:1:"]),
            (
                "unknown top key",
                "colour = 1",
                &["test.toml:1:1:", "unknown field `colour`"],
            ),
            (
                "unknown server key",
                "[server]\nprot = 1",
                &["test.toml:2:1:", "unknown field `prot`"],
            ),
            (
                "wrong type",
                "[server]\nport = \"x\"",
                &["test.toml:2:8:", "invalid type"],
            ),
            ("port range", "[server]\nport = 70000", &["test.toml:2:8:"]),
            (
                "zero duration",
                "[server]\nping_interval_ms = 0",
                &["test.toml:2:20:", "ping_interval_ms must be greater than 0"],
            ),
            (
                "negative duration",
                "[server]\nping_timeout_ms = -5",
                &["test.toml:2:"],
            ),
            (
                "js timer overflow",
                "[server]\nping_interval_ms = 2147483000\nping_timeout_ms = 1000",
                &["test.toml:2:", "JavaScript timers"],
            ),
            (
                "zero payload",
                "[server]\nmax_payload_bytes = 0",
                &["test.toml:2:", "max_payload_bytes must be greater than 0"],
            ),
            (
                "zero queue",
                "[server]\noutbound_queue_max_messages = 0",
                &["outbound_queue_max_messages must be greater than 0"],
            ),
            (
                "bad host",
                "[server]\nhost = \"exa mple\"",
                &["test.toml:2:8:", "not an IP address or host name"],
            ),
            (
                "bad path",
                "[server]\npath = \"socket.io\"",
                &["test.toml:2:", "must start with /"],
            ),
            (
                "no transports",
                "[server]\ntransports = []",
                &["test.toml:2:", "at least one"],
            ),
            (
                "unknown transport",
                "[server]\ntransports = [\"ws\"]",
                &["test.toml:2:", "unknown variant `ws`"],
            ),
            (
                "twice transport",
                "[server]\ntransports = [\"polling\", \"polling\"]",
                &["listed twice"],
            ),
            (
                "star with credentials",
                "[server.cors]\nallowed_origins = [\"*\"]\ncredentials = true",
                &["test.toml:3:", "cannot be combined"],
            ),
            (
                "star not alone",
                "[server.cors]\nallowed_origins = [\"*\", \"https://a.b\"]",
                &["must be the only entry"],
            ),
            (
                "origin with path",
                "[server.cors]\nallowed_origins = [\"https://a.b/\"]",
                &["test.toml:2:", "trailing slash"],
            ),
            (
                "origin without scheme",
                "[server.cors]\nallowed_origins = [\"a.b\"]",
                &["is not an origin"],
            ),
            (
                "namespace without name",
                "[[namespace]]\nauth = \"none\"",
                &["test.toml:", "needs `name"],
            ),
            (
                "name and pattern",
                "[[namespace]]\nname = \"/a\"\npattern = \"/b\"",
                &["test.toml:2:", "not both"],
            ),
            (
                "name without slash",
                "[[namespace]]\nname = \"chat\"",
                &["test.toml:2:8:", "starts with /"],
            ),
            (
                "duplicate namespace",
                "[[namespace]]\nname = \"/a\"\n[[namespace]]\nname = \"/a\"",
                &["test.toml:4:8:", "defined twice (first at line 2)"],
            ),
            (
                "bad regex",
                "[[namespace]]\npattern = \"/t-[\"",
                &[
                    "test.toml:2:11:",
                    "not a valid regex: unclosed character class",
                ],
            ),
            (
                "unknown namespace key",
                "[[namespace]]\nname = \"/a\"\nauht = \"none\"",
                &["test.toml:3:1:", "unknown field `auht`"],
            ),
            (
                "bad auth",
                "[[namespace]]\nname = \"/a\"\nauth = \"maybe\"",
                &["test.toml:3:8:", "unknown variant `maybe`"],
            ),
            (
                "auth without jwt",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"",
                &["test.toml:3:8:", "needs a [namespace.jwt] section"],
            ),
            (
                "jwt without auth",
                "[[namespace]]\nname = \"/a\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
                &["test.toml:", "auth = \"none\""],
            ),
            (
                "bad algorithm",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"none\"",
                &["test.toml:5:13:", "not supported"],
            ),
            (
                "hs without secret",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"",
                &["test.toml:5:", "needs secret_env"],
            ),
            (
                "bad env name",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"MY-SECRET\"",
                &["test.toml:6:14:", "not an environment variable name"],
            ),
            (
                "hs with key file",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"\npublic_key_file = \"x.pem\"",
                &["test.toml:7:", "not public_key_file"],
            ),
            (
                "rs without key file",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"",
                &["test.toml:5:", "needs public_key_file"],
            ),
            (
                "missing key file",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"nope.pem\"",
                &["test.toml:6:19:", "cannot read public_key_file", "nope.pem"],
            ),
            (
                "private key file",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-private.pem\"",
                &["test.toml:6:", "private key"],
            ),
            (
                "wrong curve",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"ES256\"\npublic_key_file = \"tests/keys/es384-public.pem\"",
                &["test.toml:6:", "ES256"],
            ),
            (
                "leeway too large",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-public.pem\"\nleeway_seconds = 86400",
                &["test.toml:7:", "at most 3600"],
            ),
            (
                "bad audience",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-public.pem\"\naudience = []",
                &["test.toml:7:", "non-empty list"],
            ),
            (
                "claims without auth",
                "[[namespace]]\nname = \"/a\"\nrequired_claims = { role = \"admin\" }",
                &["test.toml:3:", "required_claims needs auth"],
            ),
            (
                "empty claim list",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\nrequired_claims = { role = [] }\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
                &["test.toml:4:", "non-empty list"],
            ),
            (
                "table claim",
                "[[namespace]]\nname = \"/a\"\nauth = \"required\"\nrequired_claims = { role = { x = 1 } }\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
                &["test.toml:4:", "required_claims.role"],
            ),
            (
                "template without claims",
                "[[namespace]]\nname = \"/a\"\nauto_join = [\"user:{sub}\"]",
                &["test.toml:3:14:", "no claims"],
            ),
            (
                "bad template",
                "[[namespace]]\nname = \"/a\"\nauto_join = [\"user:{sub\"]",
                &["test.toml:3:14:", "unclosed"],
            ),
            (
                "star in auto_join",
                "[[namespace]]\nname = \"/a\"\nauto_join = [\"room*\"]",
                &["test.toml:3:", "`*`"],
            ),
            (
                "rate zero",
                "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 0 }",
                &["test.toml:3:", "per_second must be between 1"],
            ),
            (
                "rate window zero",
                "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, violation_window_ms = 0 }",
                &["violation_window_ms must be greater than 0"],
            ),
            (
                "rate unknown key",
                "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, brust = 2 }",
                &["test.toml:3:", "unknown field `brust`"],
            ),
            (
                "rate reserved event",
                "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, error_event = \"disconnect\" }",
                &["reserved"],
            ),
            (
                "forward timeout",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"forward\"\ntimeout_ms = 0",
                &["test.toml:6:14:", "timeout_ms must be between 1 and 600000"],
            ),
            (
                "forward with a room",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"forward\"\nroom_arg = 0",
                &["`room_arg` does not apply to action \"forward\""],
            ),
            (
                "presence on a pattern",
                "[[namespace]]\npattern = \"^/t-\\\\d+$\"\npresence = { rooms = true }",
                &["presence is only available on namespaces with a fixed name"],
            ),
            (
                "presence event reserved",
                "[[namespace]]\nname = \"/a\"\npresence = { event = \"connect\" }",
                &["presence.event"],
            ),
            (
                "unknown action",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"jump\"",
                &["test.toml:5:10:", "unknown variant `jump`"],
            ),
            (
                "missing action",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"",
                &["test.toml:", "missing field `action`"],
            ),
            (
                "unknown event key",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom = 0",
                &["test.toml:6:1:", "unknown field `room`"],
            ),
            (
                "duplicate event",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\n[[namespace.event]]\nname = \"x\"\naction = \"leave\"",
                &["test.toml:7:8:", "two rules (first at line 4)"],
            ),
            (
                "reserved event",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"disconnect\"\naction = \"echo\"",
                &["test.toml:4:8:", "reserved by Socket.IO"],
            ),
            (
                "empty event",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"\"\naction = \"echo\"",
                &["non-empty name"],
            ),
            (
                "field for other action",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"relay\"\nmax_members = 3",
                &[
                    "test.toml:6:15:",
                    "`max_members` does not apply to action \"relay\" (only to: join)",
                ],
            ),
            (
                "room_arg negative",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = -1",
                &["test.toml:6:12:", "negative"],
            ),
            (
                "room_arg bad path",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = \"room\"",
                &["test.toml:6:12:", "room_arg"],
            ),
            (
                "room_arg bool",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = true",
                &["room_arg must be"],
            ),
            (
                "allow empty",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nallow = []",
                &["test.toml:6:9:", "permits no room"],
            ),
            (
                "allow claim without auth",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nallow = [\"u:{sub}\"]",
                &["test.toml:6:10:", "no claims"],
            ),
            (
                "deny bad template",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\ndeny = [\"a}\"]",
                &["test.toml:6:9:", "deny pattern"],
            ),
            (
                "max_members zero",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nmax_members = 0",
                &["test.toml:6:15:", "max_members must be greater than 0"],
            ),
            (
                "reserved as_event",
                "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"echo\"\nas_event = \"connect\"",
                &["test.toml:6:12:", "reserved"],
            ),
        ];
        for (name, text, want) in cases {
            let msg = err(text);
            for w in *want {
                assert!(msg.contains(w), "{name}: {w:?} not in:\n{msg}");
            }
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let msg = err(
            "[server]\nping_interval_ms = 0\n[[namespace]]\nname = \"x\"\n[[namespace]]\npattern = \"(\"",
        );
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 3, "{msg}");
        assert!(lines[0].starts_with("test.toml:2:"), "{msg}");
        assert!(lines[1].starts_with("test.toml:4:"), "{msg}");
        assert!(lines[2].starts_with("test.toml:6:"), "{msg}");
    }

    #[test]
    fn namespaces_and_rules_are_compiled() {
        let c = parse(
            r#"
            [[namespace]]
            name = "/chat"
            max_rooms = 5
            rate_limit = { per_second = 2, max_violations = 0 }
            [[namespace.event]]
            name = "join"
            action = "join"
            allow = ["*"]
            deny = ["user:*"]
            max_members = 10
            announce = "joined"
            [[namespace.event]]
            name = "say"
            action = "relay"
            room_arg = "0.room"
            [[namespace.event]]
            name = "all"
            action = "broadcast"
            include_sender = true
            as_event = "everyone"
            [[namespace.event]]
            name = "ping"
            action = "echo"
            as_event = "pong"

            [[namespace]]
            pattern = "/tenant-[a-z0-9]+"
            "#,
        )
        .unwrap();
        let chat = c.namespace("/chat").unwrap();
        assert_eq!(chat.max_rooms, 5);
        let rl = chat.rate_limit.as_ref().unwrap();
        assert_eq!(rl.settings.per_second, 2);
        assert_eq!(rl.settings.burst, 2);
        assert_eq!(rl.settings.max_violations, 0);
        assert_eq!(rl.error_event.as_deref(), Some("error"));
        let Action::Join(join) = &chat.event("join").unwrap().action else {
            panic!()
        };
        assert_eq!(join.max_members, 10);
        assert_eq!(join.announce.as_deref(), Some("joined"));
        assert_eq!(join.room.room_arg, ArgPath::index(0));
        assert_eq!(join.room.allow.len(), 1);
        let Action::Relay(relay) = &chat.event("say").unwrap().action else {
            panic!()
        };
        assert!(relay.member_only, "member_only defaults to true");
        assert!(!relay.include_sender);
        assert_eq!(relay.room.room_arg.to_string(), "0.room");
        let Action::Broadcast(b) = &chat.event("all").unwrap().action else {
            panic!()
        };
        assert!(b.include_sender);
        assert_eq!(b.as_event.as_deref(), Some("everyone"));
        let Action::Echo(e) = &chat.event("ping").unwrap().action else {
            panic!()
        };
        assert_eq!(e.as_event.as_deref(), Some("pong"));

        // Patterns are anchored.
        assert!(c.namespace("/tenant-abc1").is_some());
        assert!(c.namespace("/tenant-ABC").is_none());
        assert!(c.namespace("/x/tenant-abc").is_none());
        assert!(c.namespace("/tenant-abc/x").is_none());
    }

    #[test]
    fn jwt_with_public_key_and_claims() {
        let c = parse(
            r#"
            [[namespace]]
            name = "/admin"
            auth = "required"
            auto_join = ["user:{sub}", "admins"]
            required_claims = { role = "admin", tier = ["gold", "silver"], level = 3 }
            [namespace.jwt]
            algorithm = "ES256"
            public_key_file = "tests/keys/es256-public.pem"
            issuer = "https://auth.example"
            audience = ["switchboard", "admin"]
            leeway_seconds = 5
            "#,
        )
        .unwrap();
        let ns = c.namespace("/admin").unwrap();
        let jwt = ns.jwt.as_ref().unwrap();
        assert_eq!(jwt.algorithm, Algorithm::ES256);
        assert!(jwt.key.is_some());
        assert_eq!(jwt.issuers, ["https://auth.example"]);
        assert_eq!(jwt.audiences, ["switchboard", "admin"]);
        assert_eq!(jwt.leeway_seconds, 5);
        assert_eq!(ns.auto_join.len(), 2);
        let claims: Vec<(&str, Vec<Value>)> = ns
            .required_claims
            .iter()
            .map(|r| (r.name.as_str(), r.accepted.clone()))
            .collect();
        assert_eq!(
            claims,
            vec![
                ("level", vec![json!(3)]),
                ("role", vec![json!("admin")]),
                ("tier", vec![json!("gold"), json!("silver")]),
            ]
        );
    }

    const HS_NS: &str = r#"
        [[namespace]]
        name = "/admin"
        auth = "required"
        [namespace.jwt]
        algorithm = "HS256"
        secret_env = "ADMIN_SECRET"
    "#;

    #[test]
    fn env_table() {
        // (name, env, expected host, port, or error substrings)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Result<(&'static str, u16), &'static [&'static str]>,
        );
        let cases: &[Case] = &[
            (
                "nothing set",
                &[("ADMIN_SECRET", SECRET)],
                Ok(("127.0.0.1", 3000)),
            ),
            (
                "host and port",
                &[
                    ("ADMIN_SECRET", SECRET),
                    ("SWITCHBOARD_HOST", "0.0.0.0"),
                    ("SWITCHBOARD_PORT", "8080"),
                ],
                Ok(("0.0.0.0", 8080)),
            ),
            (
                "PORT fallback",
                &[("ADMIN_SECRET", SECRET), ("PORT", "9000")],
                Ok(("127.0.0.1", 9000)),
            ),
            (
                "SWITCHBOARD_PORT wins",
                &[
                    ("ADMIN_SECRET", SECRET),
                    ("PORT", "9000"),
                    ("SWITCHBOARD_PORT", "9001"),
                ],
                Ok(("127.0.0.1", 9001)),
            ),
            (
                "empty counts as unset",
                &[
                    ("ADMIN_SECRET", SECRET),
                    ("SWITCHBOARD_PORT", ""),
                    ("PORT", "9002"),
                ],
                Ok(("127.0.0.1", 9002)),
            ),
            (
                "ipv6 host",
                &[("ADMIN_SECRET", SECRET), ("SWITCHBOARD_HOST", "::")],
                Ok(("::", 3000)),
            ),
            (
                "bracketed ipv6 host",
                &[("ADMIN_SECRET", SECRET), ("SWITCHBOARD_HOST", "[::1]")],
                Ok(("::1", 3000)),
            ),
            (
                "bad port",
                &[("ADMIN_SECRET", SECRET), ("SWITCHBOARD_PORT", "http")],
                Err(&["environment: SWITCHBOARD_PORT=\"http\" is not a port number"]),
            ),
            (
                "port too big",
                &[("ADMIN_SECRET", SECRET), ("PORT", "65536")],
                Err(&["PORT=\"65536\""]),
            ),
            (
                "bad host",
                &[("ADMIN_SECRET", SECRET), ("SWITCHBOARD_HOST", "a b")],
                Err(&["SWITCHBOARD_HOST"]),
            ),
            (
                "missing secret",
                &[],
                Err(&[
                    "test.toml:7:22:",
                    "namespace \"/admin\"",
                    "ADMIN_SECRET is not set",
                ]),
            ),
            (
                "empty secret",
                &[("ADMIN_SECRET", "")],
                Err(&["ADMIN_SECRET is empty"]),
            ),
            (
                "weak secret",
                &[("ADMIN_SECRET", "hunter2")],
                Err(&["ADMIN_SECRET", "7 bytes long; it must be at least 32"]),
            ),
            (
                "all problems",
                &[("PORT", "x")],
                Err(&["PORT=\"x\"", "ADMIN_SECRET is not set"]),
            ),
        ];
        for (name, env, want) in cases {
            let mut c = parse(HS_NS).unwrap();
            assert!(c.namespaces[0].jwt.as_ref().unwrap().key.is_none());
            let got = c.apply_env(env_of(env));
            match (got, want) {
                (Ok(()), Ok((host, port))) => {
                    assert_eq!(
                        (c.server.host.as_str(), c.server.port),
                        (*host, *port),
                        "{name}"
                    );
                    assert!(
                        c.namespaces[0].jwt.as_ref().unwrap().key.is_some(),
                        "{name}"
                    );
                }
                (Err(e), Err(subs)) => {
                    let msg = e.to_string();
                    assert!(matches!(e, ConfigError::Env(_)), "{name}");
                    for s in *subs {
                        assert!(msg.contains(s), "{name}: {s:?} not in {msg}");
                    }
                    assert!(!msg.contains("hunter2"), "{name}: secret leaked: {msg}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn secret_vars_lists_needed_variables() {
        assert_eq!(parse(HS_NS).unwrap().secret_vars(), ["ADMIN_SECRET"]);
    }

    #[test]
    fn from_file_names_the_file_and_resolves_keys_next_to_it() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = include_str!("../../tests/keys/rs256-public.pem");
        std::fs::write(dir.join("jwt.pem"), key).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"jwt.pem\"\n",
        )
        .unwrap();
        let c = Config::from_file(&good).unwrap();
        assert_eq!(
            c.namespaces[0].jwt.as_ref().unwrap().key_source,
            KeySource::PublicKeyFile {
                path: dir.join("jwt.pem")
            }
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[server]\nport = 1\nportt = 2\n").unwrap();
        let msg = Config::from_file(&bad).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:3:1:", bad.display())), "{msg}");
        let missing = Config::from_file(dir.join("missing.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
        assert!(missing.to_string().contains("missing.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runtime_options_follow_the_server_section() {
        let d = ServerConfig::default();
        let (e, ed) = (d.engine_config(), crate::engine::Config::default());
        assert_eq!(
            (
                e.ping_interval,
                e.ping_timeout,
                e.max_payload,
                e.upgrade_timeout
            ),
            (
                ed.ping_interval,
                ed.ping_timeout,
                ed.max_payload,
                ed.upgrade_timeout
            )
        );
        assert_eq!(
            (
                e.max_queued_frames,
                e.allow_polling,
                e.allow_websocket,
                e.max_connections_per_ip
            ),
            (
                ed.max_queued_frames,
                ed.allow_polling,
                ed.allow_websocket,
                ed.max_connections_per_ip
            )
        );
        assert_eq!(
            Config::builtin().unwrap().sio_config().connect_timeout,
            crate::sio::Config::default().connect_timeout
        );
        let c = parse(
            "[server]\ntransports = [\"websocket\"]\nmax_payload_bytes = 10\n[server.cors]\nallowed_origins = [\"https://a.b\"]\ncredentials = true",
        )
        .unwrap();
        let e = c.server.engine_config();
        assert!(!e.allow_polling && e.allow_websocket);
        assert_eq!(e.max_payload, 10);
        let cors = c.server.http_cors();
        assert_eq!(
            (cors.origins, cors.credentials),
            (vec!["https://a.b".to_owned()], true)
        );
        let any = parse("[server.cors]\nallowed_origins = [\"*\"]").unwrap();
        assert_eq!(any.server.http_cors().origins, ["*"]);
        assert!(parse("").unwrap().server.http_cors().origins.is_empty());
    }

    #[test]
    fn line_col_table() {
        let text = "ab\ncdé\nf";
        let cases = [
            (0, (1, 1)),
            (2, (1, 3)),
            (3, (2, 1)),
            (5, (2, 3)),
            (6, (2, 3)),
            (8, (3, 1)),
            (100, (3, 2)),
        ];
        for (offset, want) in cases {
            assert_eq!(line_col(text, offset), want, "offset {offset}");
        }
    }

    #[test]
    fn host_and_origin_tables() {
        for (host, ok) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("[::1]", true),
            ("localhost", true),
            ("gw-1.example.com", true),
            ("", false),
            ("a b", false),
            ("-a", false),
            ("a..b", false),
        ] {
            assert_eq!(valid_host(host), ok, "{host}");
        }
        for (origin, ok) in [
            ("https://a.com", true),
            ("http://localhost:5173", true),
            ("capacitor://localhost", true),
            ("https://a.com/", false),
            ("a.com", false),
            ("https://", false),
            ("https://*.a.com", false),
            ("1http://a", false),
        ] {
            assert_eq!(check_origin(origin).is_ok(), ok, "{origin}");
        }
    }
}
