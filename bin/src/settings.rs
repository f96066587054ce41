//! The settings both tiers share — NATS, the cluster, the broker, gRPC, API keys, logs — read from the
//! configuration file and the environment, validated before anything binds or connects.
//!
//! Why here, in the binaries' crate: these settings compose the tiers (a standalone gateway
//! embeds the broker and serves its gRPC API; a broker and a gateway of one cluster must agree on
//! the subject prefix, heartbeat and lease), so they belong to neither library. The gateway's own
//! tables (`[server]`, `[operator]`, `[limits]`, `[[namespace]]`) stay with the gateway's config
//! module, which validates them and accepts (without reading) the tables here. One file serves
//! both binaries: `switchboard-broker` reads the tables here and ignores the gateway's.
//!
//! Precedence: environment > file > built-in default. [`VARS`] is the one table mapping each
//! environment variable to its setting (`[table] key` in the file); [`Settings::load`] is the
//! one code path that reads both, and every setting is checked by one rule wherever it comes
//! from. Every problem is reported at once, each located by `file:line:col` (file items) or by
//! the variable's name (environment items); secrets are never repeated in a message. An empty
//! variable counts as unset.
//!
//! | file | variable | default | meaning |
//! |---|---|---|---|
//! | `[nats] url` | `SWITCHBOARD_NATS_URL` | unset: standalone gateway | NATS server URL(s), comma-separated (the broker requires it) |
//! | `[nats] user`, `password` | `SWITCHBOARD_NATS_USER`, `SWITCHBOARD_NATS_PASSWORD` | | NATS user and password |
//! | `[nats] password_file` | `SWITCHBOARD_NATS_PASSWORD_FILE` | | a file holding the password instead (a Secret volume) |
//! | `[nats] token` | `SWITCHBOARD_NATS_TOKEN` | | NATS token |
//! | `[nats] creds` | `SWITCHBOARD_NATS_CREDS` | | path of a NATS `.creds` file |
//! | `[nats] nkey_seed_file` | `SWITCHBOARD_NATS_NKEY_SEED_FILE` | | path of a file holding an nkey seed (`SU...`) |
//! | `[nats] replicas` | `SWITCHBOARD_NATS_REPLICAS` | `1` | copies of the JetStream streams and buckets Switchboard makes (recovery log, leader lease), 1 to 5; 3 in a 3-node NATS cluster |
//! | `[cluster] node_id` | `SWITCHBOARD_NODE_ID` | random | the gateway's node id |
//! | `[cluster] subject_prefix` | `SWITCHBOARD_SUBJECT_PREFIX` | `sio` | NATS subject prefix of the cluster |
//! | `[cluster] heartbeat_ms` | `SWITCHBOARD_HEARTBEAT_MS` | `2000` | the gateways' heartbeat interval, 10 to 3600000 |
//! | `[cluster] lease_ms` | `SWITCHBOARD_LEASE_MS` | 3 heartbeats | a gateway silent this long is lost (also the leader lease); above the heartbeat |
//! | `[cluster] drain_ms` | `SWITCHBOARD_DRAIN_MS` | 10000 in a cluster, 0 standalone | on SIGTERM, sessions close spread over this window |
//! | `[cluster] advertise_addr` | `SWITCHBOARD_ADVERTISE_ADDR` | the bound address | `host:port` other gateways reach this one at |
//! | `[cluster] forward` | `SWITCHBOARD_FORWARD` | `true` | pass requests for other gateways' sessions to their owner |
//! | `[cluster] member_batches` | `SWITCHBOARD_MEMBER_BATCHES` | `true` | publish membership messages queued together as one batch (off while brokers older than batches run) |
//! | `[cluster] presence_batches` | `SWITCHBOARD_PRESENCE_BATCHES` | `true` | the leading broker publishes the presence announcements of one change as one batch per namespace (off while gateways or workers older than presence batches run) |
//! | `[broker] host` | `SWITCHBOARD_BROKER_HOST` | `127.0.0.1` | the broker's HTTP listen address (name or IP) |
//! | `[broker] http_port` | `SWITCHBOARD_BROKER_HTTP_PORT` | `9090` | the broker's HTTP port; 0 = any free port |
//! | `[broker] id` | `SWITCHBOARD_BROKER_ID` | random | the broker's id (`A-Z a-z 0-9 _ -`, at most 64) |
//! | `[broker] leader` | `SWITCHBOARD_BROKER_LEADER` | `kv` | `kv` (JetStream lease, several brokers) or `always` (one broker) |
//! | `[broker] snapshot_budget_bytes` | `SWITCHBOARD_BROKER_SNAPSHOT_BUDGET_BYTES` | `16777216` | snapshot bytes a rebuilding broker lets be in flight towards it, 65536 to 1073741824 |
//! | `[grpc] admin_token` | `SWITCHBOARD_ADMIN_TOKEN` | unset | an API key named `admin_token` with the `admin` scope, at least 16 bytes |
//! | `[api] keys` | `SWITCHBOARD_API_KEYS` | unset | API keys: `name:scope,scope:secret` entries separated by `;` |
//! | `[api] keys_file` | `SWITCHBOARD_API_KEYS_FILE` | unset | a TOML file of `[[key]]` tables (`name`, `scopes`, `secret`) |
//! | `[grpc] host` | `SWITCHBOARD_GRPC_HOST` | `127.0.0.1` | gRPC listen address (name or IP) |
//! | `[grpc] port` | `SWITCHBOARD_GRPC_PORT` | `50051` | gRPC port; 0 = any free port |
//! | `[grpc] tls_cert`, `tls_key` | `SWITCHBOARD_GRPC_TLS_CERT`, `SWITCHBOARD_GRPC_TLS_KEY` | unset: plaintext | PEM files (both or neither) |
//! | `[log] format` | `SWITCHBOARD_LOG_FORMAT` | `text` | `text` or `json` (`RUST_LOG` filters) |
//! | `[server] host` | `SWITCHBOARD_HOST` | `127.0.0.1` | the gateway's client listen address |
//! | `[server] port` | `SWITCHBOARD_PORT`, else `PORT` | `3000` | the gateway's client port |
//! | `[server] client_js` | `SWITCHBOARD_CLIENT_JS` | the test suite's copy | the demo page's `socket.io.min.js` |
//! | `[operator] host` | `SWITCHBOARD_OPERATOR_HOST` | `127.0.0.1` | the gateway's operator listen address |
//! | `[operator] port` | `SWITCHBOARD_OPERATOR_PORT` | `9464` | the gateway's operator port |
//! | `[admin_ui] password_hash` | `SWITCHBOARD_ADMIN_UI_PASSWORD_HASH` | unset: no Admin UI | the bcrypt hash of the Socket.IO Admin UI's password; set, it turns the UI on ([admin-ui.md](../../docs/admin-ui.md)) |
//! | `[admin_ui] username` | `SWITCHBOARD_ADMIN_UI_USERNAME` | `admin` | its user name |
//! | `[admin_ui] static_dir` | `SWITCHBOARD_ADMIN_UI_STATIC_DIR` | unset: not served | the UI's files (`@socket.io/admin-ui`'s `ui/dist`) |
//! | `[admin_ui] path` | `SWITCHBOARD_ADMIN_UI_PATH` | `/admin-ui/` | where they are served on the client port |
//! | `[admin_ui] broker_url` | `SWITCHBOARD_ADMIN_UI_BROKER_URL` | | in a cluster (required there): the broker's gRPC URL, `http://host:port` (no TLS yet) |
//! | `[admin_ui] api_key` | `SWITCHBOARD_ADMIN_UI_API_KEY` | | in a cluster (required there): an API key with the `read` and `admin` scopes |
//!
//! The admin APIs (gRPC and the HTTP API) are served when at least one API key is configured
//! (by any of the three `[grpc] admin_token`, `[api] keys`, `[api] keys_file`, together): by the
//! broker, and by a standalone gateway (in a cluster, the brokers serve them). Key names are
//! unique, as are secrets; scopes are `read`, `emit`, `admin` (`switchboard_broker::keys`).
//!
//! The `[server]` and `[operator]` rows are the gateway's tables: the file side is validated by
//! the gateway's config module, the environment side here ([`Settings::apply_to`]), with the
//! same host and port rules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_broker::LeaderMode;
use switchboard_broker::grpc::{self, DEFAULT_GRPC_PORT, GrpcOptions, MIN_TOKEN_BYTES};
use switchboard_broker::keys::{self, ApiKey, ApiKeys, Scope};
use switchboard_bus::NatsOptions;
use switchboard_gateway::admin_ui::{Credentials as AdminCredentials, CredentialsError};
use switchboard_gateway::config::{
    Config as GatewayConfig, Location, Problem, Problems, bare_host, line_col, valid_host,
};
use switchboard_gateway::forward::reachable;
use switchboard_gateway::id::NodeId;
use switchboard_proto::subject::{DEFAULT_PREFIX, Subjects};

/// One setting: its place in the file and the environment variable that overrides it.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The file's table.
    pub table: &'static str,
    /// The key in that table.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// A secret: its value is never repeated in a message.
    pub secret: bool,
}

const fn var(table: &'static str, key: &'static str, env: &'static str) -> Var {
    Var {
        table,
        key,
        env,
        secret: false,
    }
}

const fn secret(table: &'static str, key: &'static str, env: &'static str) -> Var {
    Var {
        table,
        key,
        env,
        secret: true,
    }
}

/// Every setting read from the environment. Where two variables name one setting, the first one
/// set wins (`SWITCHBOARD_PORT` before `PORT`).
pub const VARS: &[Var] = &[
    var("nats", "url", "SWITCHBOARD_NATS_URL"),
    var("nats", "user", "SWITCHBOARD_NATS_USER"),
    secret("nats", "password", "SWITCHBOARD_NATS_PASSWORD"),
    var("nats", "password_file", "SWITCHBOARD_NATS_PASSWORD_FILE"),
    secret("nats", "token", "SWITCHBOARD_NATS_TOKEN"),
    var("nats", "creds", "SWITCHBOARD_NATS_CREDS"),
    var("nats", "nkey_seed_file", "SWITCHBOARD_NATS_NKEY_SEED_FILE"),
    var("nats", "replicas", "SWITCHBOARD_NATS_REPLICAS"),
    var("cluster", "node_id", "SWITCHBOARD_NODE_ID"),
    var("cluster", "subject_prefix", "SWITCHBOARD_SUBJECT_PREFIX"),
    var("cluster", "heartbeat_ms", "SWITCHBOARD_HEARTBEAT_MS"),
    var("cluster", "lease_ms", "SWITCHBOARD_LEASE_MS"),
    var("cluster", "drain_ms", "SWITCHBOARD_DRAIN_MS"),
    var("cluster", "advertise_addr", "SWITCHBOARD_ADVERTISE_ADDR"),
    var("cluster", "forward", "SWITCHBOARD_FORWARD"),
    var("cluster", "member_batches", "SWITCHBOARD_MEMBER_BATCHES"),
    var(
        "cluster",
        "presence_batches",
        "SWITCHBOARD_PRESENCE_BATCHES",
    ),
    var("broker", "host", "SWITCHBOARD_BROKER_HOST"),
    var("broker", "http_port", "SWITCHBOARD_BROKER_HTTP_PORT"),
    var("broker", "id", "SWITCHBOARD_BROKER_ID"),
    var("broker", "leader", "SWITCHBOARD_BROKER_LEADER"),
    var(
        "broker",
        "snapshot_budget_bytes",
        "SWITCHBOARD_BROKER_SNAPSHOT_BUDGET_BYTES",
    ),
    secret("grpc", "admin_token", "SWITCHBOARD_ADMIN_TOKEN"),
    secret("api", "keys", "SWITCHBOARD_API_KEYS"),
    var("api", "keys_file", "SWITCHBOARD_API_KEYS_FILE"),
    var("grpc", "host", "SWITCHBOARD_GRPC_HOST"),
    var("grpc", "port", "SWITCHBOARD_GRPC_PORT"),
    var("grpc", "tls_cert", "SWITCHBOARD_GRPC_TLS_CERT"),
    var("grpc", "tls_key", "SWITCHBOARD_GRPC_TLS_KEY"),
    var("log", "format", "SWITCHBOARD_LOG_FORMAT"),
    var("server", "host", "SWITCHBOARD_HOST"),
    var("server", "port", "SWITCHBOARD_PORT"),
    var("server", "port", "PORT"),
    var("server", "client_js", "SWITCHBOARD_CLIENT_JS"),
    var("operator", "host", "SWITCHBOARD_OPERATOR_HOST"),
    var("operator", "port", "SWITCHBOARD_OPERATOR_PORT"),
    secret(
        "admin_ui",
        "password_hash",
        "SWITCHBOARD_ADMIN_UI_PASSWORD_HASH",
    ),
    var("admin_ui", "username", "SWITCHBOARD_ADMIN_UI_USERNAME"),
    var("admin_ui", "static_dir", "SWITCHBOARD_ADMIN_UI_STATIC_DIR"),
    var("admin_ui", "path", "SWITCHBOARD_ADMIN_UI_PATH"),
    var("admin_ui", "broker_url", "SWITCHBOARD_ADMIN_UI_BROKER_URL"),
    secret("admin_ui", "api_key", "SWITCHBOARD_ADMIN_UI_API_KEY"),
    #[cfg(feature = "fault-injection")]
    var(
        "fault",
        "drop_member_seq",
        "SWITCHBOARD_FAULT_DROP_MEMBER_SEQ",
    ),
];

/// The environment variables `process` reads and their settings, for its `--help` (the broker
/// does not read the gateway's listener tables).
pub fn env_help(process: Process) -> String {
    let mut text = String::from(
        "Environment (overrides the file's setting; an empty variable counts as unset):\n",
    );
    let read = |v: &&Var| {
        process == Process::Gateway
            || !(GATEWAY_TABLES.contains(&v.table) || GATEWAY_ONLY_TABLES.contains(&v.table))
    };
    for v in VARS.iter().filter(read) {
        text.push_str(&format!("  {:<34} [{}] {}\n", v.env, v.table, v.key));
    }
    text
}

/// The tables read from the file here; the gateway's config module owns the others.
const TABLES: [&str; 7] = [
    "nats", "cluster", "broker", "grpc", "api", "log", "admin_ui",
];
/// Tables the gateway's config module reads (the broker accepts and ignores them).
pub const GATEWAY_TABLES: [&str; 4] = ["server", "operator", "limits", "namespace"];
/// Tables read here for the gateway only (the broker accepts and ignores them).
const GATEWAY_ONLY_TABLES: [&str; 1] = ["admin_ui"];

/// Default gateway heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2000);
/// How many heartbeats the default lease lasts.
pub const DEFAULT_LEASE_HEARTBEATS: u32 = 3;
/// Shortest and longest heartbeat and lease, in milliseconds.
pub const TIMING_MS: std::ops::RangeInclusive<u64> = 10..=3_600_000;
/// JetStream replicas: 1 (one NATS server) to 5 (JetStream's most).
pub const REPLICAS: std::ops::RangeInclusive<usize> = 1..=5;
/// Longest drain window, in milliseconds.
pub const MAX_DRAIN_MS: u64 = 3_600_000;
/// The drain window of a gateway in a cluster (standalone: 0, there is no other gateway).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Default listen address of the broker's HTTP port and of gRPC: loopback only.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default broker HTTP port.
pub const DEFAULT_BROKER_HTTP_PORT: u16 = 9090;
/// Longest broker id.
pub const MAX_BROKER_ID_BYTES: usize = 64;
/// The range of `[broker] snapshot_budget_bytes`: 64 KiB to 1 GiB.
const SNAPSHOT_BUDGET_BYTES: std::ops::RangeInclusive<usize> = 65_536..=1_073_741_824;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The broker's own settings.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// HTTP listen address (name or IP).
    pub host: String,
    /// HTTP port.
    pub http_port: u16,
    /// The broker's id; `None`: random at start.
    pub id: Option<String>,
    /// How the leader is chosen.
    pub leader: LeaderMode,
    /// Snapshot bytes a rebuilding broker lets be in flight towards it.
    pub snapshot_budget_bytes: usize,
}

/// The Socket.IO Admin UI's settings (docs/admin-ui.md).
#[derive(Clone)]
pub struct AdminUiSettings {
    /// The user the UI logs in as.
    pub credentials: AdminCredentials,
    /// The UI's files, served at `path`; `None`: not served.
    pub static_dir: Option<PathBuf>,
    /// Where the files are served on the client port.
    pub path: String,
    /// In a cluster: the broker's gRPC URL and the API key.
    pub remote: Option<(String, String)>,
}

impl fmt::Debug for AdminUiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminUiSettings")
            .field("credentials", &self.credentials)
            .field("static_dir", &self.static_dir)
            .field("path", &self.path)
            .field("broker_url", &self.remote.as_ref().map(|r| &r.0))
            .finish_non_exhaustive()
    }
}

/// Where the Admin UI's files are served by default.
pub const DEFAULT_ADMIN_UI_PATH: &str = "/admin-ui/";
/// Longest Admin UI path.
pub const MAX_ADMIN_UI_PATH_BYTES: usize = 256;

/// Where and how gRPC is served (on when an API key is set; the HTTP API is on with it).
#[derive(Clone, Debug)]
pub struct GrpcSettings {
    /// Listen address (name or IP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The API keys and the TLS pair.
    pub options: GrpcOptions,
}

/// Which binary reads the settings: what is required and what is read differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// `switchboard-gateway`: standalone without a NATS URL; in a cluster the brokers serve
    /// gRPC, so the gateway does not read (or load the TLS files of) `[grpc]`.
    Gateway,
    /// `switchboard-broker`: the NATS URL is required.
    Broker,
}

/// The shared settings, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How to reach NATS; `None` (no URL): a standalone gateway.
    pub nats: Option<NatsOptions>,
    /// The gateway's node id; `None`: random.
    pub node: Option<NodeId>,
    /// The cluster's subjects.
    pub subjects: Subjects,
    /// The gateways' heartbeat interval.
    pub heartbeat: Duration,
    /// A node silent this long is lost.
    pub lease: Duration,
    /// The drain window; `None`: the mode's default ([`Settings::drain`]).
    pub drain: Option<Duration>,
    /// The `host:port` other gateways reach this one at.
    pub advertise: Option<String>,
    /// Whether requests for other gateways' sessions are passed to their owner.
    pub forward: bool,
    /// Whether the gateway publishes membership messages queued together as one batch.
    pub member_batches: bool,
    /// Whether the broker (standalone: the embedded one) publishes presence announcements in
    /// batches.
    pub presence_batches: bool,
    /// The broker binary's settings.
    pub broker: BrokerSettings,
    /// The admin APIs: gRPC, and with the same keys the HTTP API; `None`: off (no key, or a
    /// gateway in a cluster).
    pub grpc: Option<GrpcSettings>,
    /// A gateway in a cluster given API keys: said once at startup (the brokers serve the admin
    /// APIs).
    pub grpc_ignored: bool,
    /// How logs are written.
    pub log: LogFormat,
    /// The Socket.IO Admin UI; `None`: off (no password hash, or the broker).
    pub admin_ui: Option<AdminUiSettings>,
    /// Overrides of the gateway's `[server]` / `[operator]` host and port, from the environment.
    gateway: GatewayOverrides,
    /// Test fault injection: membership sequence numbers not published.
    #[cfg(feature = "fault-injection")]
    pub drop_seqs: Vec<u64>,
}

#[derive(Clone, Debug, Default)]
struct GatewayOverrides {
    server_host: Option<String>,
    server_port: Option<u16>,
    client_js: Option<PathBuf>,
    operator_host: Option<String>,
    operator_port: Option<u16>,
}

/// A configuration file's text and the name its problems are reported under.
#[derive(Clone, Copy, Debug)]
pub struct File<'a> {
    /// The path as given.
    pub origin: &'a str,
    /// Its content.
    pub text: &'a str,
}

/// A configuration file, read.
#[derive(Clone, Debug)]
pub struct Source {
    /// The path as given, for messages.
    pub origin: String,
    /// Its content.
    pub text: String,
}

impl Source {
    /// Reads `path`; the problem names the file.
    pub fn read(path: &Path) -> Result<Source, Problems> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source { origin, text }),
            Err(e) => Err(Problems(vec![Problem {
                location: Location {
                    origin,
                    line: None,
                    column: None,
                },
                message: format!("cannot read: {e}"),
            }])),
        }
    }

    /// The file, for [`Settings::load`].
    pub fn file(&self) -> File<'_> {
        File {
            origin: &self.origin,
            text: &self.text,
        }
    }
}

/// The first address a listen setting's `host:port` resolves to (a host may be a name).
pub async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve host {host:?}"))?
        .next()
        .with_context(|| format!("host {host:?} has no address"))
}

/// A value as given, and where.
#[derive(Clone, Debug)]
struct Given {
    value: String,
    /// The setting's name in the file: `[table] key`.
    setting: String,
    at: Location,
    /// The variable, when it came from the environment.
    env: Option<&'static str>,
    secret: bool,
    /// The directory of the file it came from: a relative path in the file is relative to the
    /// file, as in the gateway's tables (from the environment: to the working directory).
    base: Option<PathBuf>,
}

impl Given {
    /// The value as a path, resolved against the file's directory when it came from a file.
    fn path(&self) -> PathBuf {
        match &self.base {
            Some(base) => base.join(&self.value),
            None => PathBuf::from(&self.value),
        }
    }

    /// The problem `message` about this value, located, naming the value unless it is secret.
    fn problem(&self, message: impl fmt::Display) -> Problem {
        // The location names the variable, or the file's line; the message adds the setting
        // (from a file) and the value (unless secret).
        let what = match (self.env, self.secret) {
            (Some(_), true) => String::new(),
            (Some(_), false) => format!("{:?}: ", self.value),
            (None, true) => format!("{}: ", self.setting),
            (None, false) => format!("{} = {:?}: ", self.setting, self.value),
        };
        Problem {
            location: self.at.clone(),
            message: format!("{what}{message}"),
        }
    }
}

/// The raw values of the file's shared tables, with their spans.
type RawTable = BTreeMap<String, toml::Spanned<toml::Value>>;

#[derive(Deserialize, Default)]
struct RawFile {
    nats: Option<RawTable>,
    cluster: Option<RawTable>,
    broker: Option<RawTable>,
    grpc: Option<RawTable>,
    api: Option<RawTable>,
    log: Option<RawTable>,
    admin_ui: Option<RawTable>,
}

/// The settings as given, before validation: `(table, key)` → value.
struct Gathered {
    items: BTreeMap<(&'static str, &'static str), Given>,
    problems: Vec<Problem>,
}

impl Gathered {
    fn get(&self, table: &'static str, key: &'static str) -> Option<&Given> {
        self.items.get(&(table, key))
    }
}

/// Where a value at `offset` of `file` is.
fn file_location(file: &File<'_>, offset: usize) -> Location {
    let (line, column) = line_col(file.text, offset);
    Location {
        origin: file.origin.to_owned(),
        line: Some(line),
        column: Some(column),
    }
}

/// Reads the file's shared tables and the environment into one map (environment over file).
fn gather(file: Option<File<'_>>, env: &dyn Fn(&str) -> Option<String>) -> Gathered {
    let mut items = BTreeMap::new();
    let mut problems = Vec::new();
    if let Some(file) = file {
        match toml::from_str::<RawFile>(file.text) {
            Err(e) => problems.push(Problem {
                location: match e.span() {
                    Some(span) => file_location(&file, span.start),
                    None => Location {
                        origin: file.origin.to_owned(),
                        line: None,
                        column: None,
                    },
                },
                message: e.message().trim().to_owned(),
            }),
            Ok(raw) => {
                let tables = [
                    raw.nats,
                    raw.cluster,
                    raw.broker,
                    raw.grpc,
                    raw.api,
                    raw.log,
                    raw.admin_ui,
                ];
                for (name, table) in TABLES.into_iter().zip(tables) {
                    for (key, value) in table.into_iter().flatten() {
                        let at = file_location(&file, value.span().start);
                        let Some(row) = VARS.iter().find(|v| v.table == name && v.key == key)
                        else {
                            problems.push(Problem {
                                location: at,
                                message: format!("[{name}]: unknown key {key:?}"),
                            });
                            continue;
                        };
                        let value = match value.into_inner() {
                            toml::Value::String(s) => s,
                            toml::Value::Integer(n) => n.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            other => {
                                problems.push(Problem {
                                    location: at,
                                    message: format!(
                                        "[{name}] {key}: expected a string, number or boolean, \
                                         found {}",
                                        other.type_str()
                                    ),
                                });
                                continue;
                            }
                        };
                        items.insert(
                            (row.table, row.key),
                            Given {
                                value,
                                setting: format!("[{}] {}", row.table, row.key),
                                at,
                                env: None,
                                secret: row.secret,
                                base: Path::new(file.origin).parent().map(Path::to_path_buf),
                            },
                        );
                    }
                }
            }
        }
    }
    let mut from_env = std::collections::BTreeSet::new();
    for row in VARS {
        // The first variable set wins among those naming one setting.
        if from_env.contains(&(row.table, row.key)) {
            continue;
        }
        let Some(value) = env(row.env).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        from_env.insert((row.table, row.key));
        items.insert(
            (row.table, row.key),
            Given {
                value: value.trim().to_owned(),
                setting: format!("[{}] {}", row.table, row.key),
                at: Location {
                    origin: row.env.to_owned(),
                    line: None,
                    column: None,
                },
                env: Some(row.env),
                secret: row.secret,
                base: None,
            },
        );
    }
    Gathered { items, problems }
}

/// The validation rules: each parses one kind of value, the same wherever it comes from.
mod rule {
    use super::*;

    pub(super) fn millis(
        g: &Given,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, Problem> {
        match g.value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Duration::from_millis(n)),
            _ => Err(g.problem(format!(
                "must be a number of milliseconds from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }

    pub(super) fn count(
        g: &Given,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, Problem> {
        match g.value.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(g.problem(format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }

    pub(super) fn port(g: &Given) -> Result<u16, Problem> {
        g.value
            .parse::<u16>()
            .map_err(|_| g.problem("is not a port number (0 to 65535)"))
    }

    pub(super) fn host(g: &Given) -> Result<String, Problem> {
        let host = bare_host(&g.value);
        if valid_host(&g.value) {
            Ok(host.to_owned())
        } else {
            Err(g.problem("is not an IP address or host name"))
        }
    }

    pub(super) fn switch(g: &Given) -> Result<bool, Problem> {
        match g.value.as_str() {
            "1" | "true" | "on" => Ok(true),
            "0" | "false" | "off" => Ok(false),
            _ => Err(g.problem("must be on or off")),
        }
    }

    pub(super) fn file(g: &Given) -> Result<PathBuf, Problem> {
        let path = g.path();
        if path.is_file() {
            Ok(path)
        } else {
            Err(g.problem("is not a readable file"))
        }
    }

    pub(super) fn read(g: &Given) -> Result<Vec<u8>, Problem> {
        std::fs::read(g.path()).map_err(|e| g.problem(format!("cannot read: {e}")))
    }
}

/// Collects the problems of one validation pass.
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    /// `rule` applied to the setting, if given; `None` when unset or invalid (noted).
    fn opt<T>(
        &mut self,
        given: &Gathered,
        (table, key): (&'static str, &'static str),
        rule: impl FnOnce(&Given) -> Result<T, Problem>,
    ) -> Option<T> {
        let g = given.get(table, key)?;
        rule(g).map_err(|p| self.problems.push(p)).ok()
    }
}

/// How much longer than the longest recovery window the log keeps an emit: a client's last
/// offset may be older than its disconnect by the time the packet waited in its queue.
pub const RECOVERY_RETENTION_MARGIN: Duration = Duration::from_secs(30);
/// The recovery log's byte bound (the oldest emits go first beyond it; a recovery whose offset
/// was evicted gets a fresh session).
pub const RECOVERY_LOG_MAX_BYTES: i64 = 1024 * 1024 * 1024;
/// How long the log recognises a retried publish by its message id.
pub const RECOVERY_DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

impl Settings {
    /// The recovery log's stream for namespaces whose longest window is `longest_window`
    /// (`None`: no namespace has recovery, no log). File-backed, `[nats] replicas` copies (one
    /// standalone), kept for the window plus [`RECOVERY_RETENTION_MARGIN`] and at most
    /// [`RECOVERY_LOG_MAX_BYTES`] (docs/recovery.md).
    pub fn recovery_log(
        &self,
        longest_window: Option<Duration>,
    ) -> Option<switchboard_bus::LogConfig> {
        let window = longest_window?;
        Some(switchboard_bus::LogConfig {
            stream: self.subjects.log_stream(),
            subjects: vec![self.subjects.all_log()],
            max_age: window + RECOVERY_RETENTION_MARGIN,
            max_bytes: RECOVERY_LOG_MAX_BYTES,
            replicas: self.nats.as_ref().map_or(1, |n| n.replicas.max(1)),
            memory: false,
            duplicate_window: RECOVERY_DUPLICATE_WINDOW,
        })
    }

    /// Reads and validates the shared settings from `file` (if any) and the environment, read
    /// through `env` (the process's: `|k| std::env::var(k).ok()`). Reads the files the settings
    /// name (password, TLS pair), nothing else.
    pub fn load(
        process: Process,
        file: Option<File<'_>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, Problems> {
        let given = gather(file, &env);
        let mut c = Check {
            problems: given.problems.clone(),
        };
        let cluster = given.get("nats", "url").is_some();
        if process == Process::Broker && !cluster {
            c.problems.push(Problem {
                location: Location {
                    origin: "SWITCHBOARD_NATS_URL".to_owned(),
                    line: None,
                    column: None,
                },
                message: "required ([nats] url in the file, or this variable; e.g. \
                          nats://127.0.0.1:4222)"
                    .to_owned(),
            });
        }

        let heartbeat = c
            .opt(&given, ("cluster", "heartbeat_ms"), |g| {
                rule::millis(g, TIMING_MS)
            })
            .unwrap_or(DEFAULT_HEARTBEAT);
        let lease = c.opt(&given, ("cluster", "lease_ms"), |g| {
            rule::millis(g, TIMING_MS)
        });
        if let (Some(lease), Some(g)) = (lease, given.get("cluster", "lease_ms"))
            && lease <= heartbeat
        {
            c.problems.push(Problem {
                location: g.at.clone(),
                message: format!(
                    "the lease ({} ms) must exceed the heartbeat ({} ms, [cluster] heartbeat_ms \
                     or SWITCHBOARD_HEARTBEAT_MS)",
                    lease.as_millis(),
                    heartbeat.as_millis()
                ),
            });
        }
        let lease = lease.unwrap_or(heartbeat * DEFAULT_LEASE_HEARTBEATS);
        let node = c.opt(&given, ("cluster", "node_id"), |g| {
            NodeId::parse(&g.value).map_err(|e| g.problem(e))
        });
        let subjects = c
            .opt(&given, ("cluster", "subject_prefix"), |g| {
                Subjects::new(&g.value).map_err(|e| g.problem(e))
            })
            .unwrap_or_else(|| Subjects::new(DEFAULT_PREFIX).expect("the default prefix is valid"));
        let drain = c.opt(&given, ("cluster", "drain_ms"), |g| {
            rule::millis(g, 0..=MAX_DRAIN_MS)
        });
        let advertise = c.opt(&given, ("cluster", "advertise_addr"), |g| {
            reachable(&g.value).map(|a| a.to_string()).ok_or_else(|| {
                g.problem(
                    "must be the host (name or IP address, not 0.0.0.0) and port other \
                     gateways reach this one at (e.g. 10.0.0.7:3000)",
                )
            })
        });
        let forward = c
            .opt(&given, ("cluster", "forward"), rule::switch)
            .unwrap_or(true);
        let member_batches = c
            .opt(&given, ("cluster", "member_batches"), rule::switch)
            .unwrap_or(true);
        let presence_batches = c
            .opt(&given, ("cluster", "presence_batches"), rule::switch)
            .unwrap_or(true);

        let nats = c.nats(&given);
        let broker = BrokerSettings {
            host: c
                .opt(&given, ("broker", "host"), rule::host)
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            http_port: c
                .opt(&given, ("broker", "http_port"), rule::port)
                .unwrap_or(DEFAULT_BROKER_HTTP_PORT),
            id: c.opt(&given, ("broker", "id"), |g| {
                let ok = !g.value.is_empty()
                    && g.value.len() <= MAX_BROKER_ID_BYTES
                    && g.value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                ok.then(|| g.value.clone()).ok_or_else(|| {
                    g.problem(format!(
                        "expected 1 to {MAX_BROKER_ID_BYTES} of A-Z a-z 0-9 _ -"
                    ))
                })
            }),
            leader: c
                .opt(&given, ("broker", "leader"), |g| match g.value.as_str() {
                    "kv" => Ok(LeaderMode::KvLease),
                    "always" => Ok(LeaderMode::Always),
                    _ => Err(g.problem("expected kv or always")),
                })
                .unwrap_or(LeaderMode::KvLease),
            snapshot_budget_bytes: c
                .opt(&given, ("broker", "snapshot_budget_bytes"), |g| {
                    rule::count(g, SNAPSHOT_BUDGET_BYTES)
                })
                .unwrap_or(switchboard_broker::RebuildConfig::default().budget_bytes),
        };
        // Only a standalone gateway serves gRPC, so only then are its settings read (and its TLS
        // files loaded); in a cluster they belong to the brokers.
        let serves_grpc = process == Process::Broker || !cluster;
        let grpc = if serves_grpc { c.grpc(&given) } else { None };
        let grpc_ignored =
            !serves_grpc && KEY_SETTINGS.iter().any(|&k| given.get(k.0, k.1).is_some());
        let log = c
            .opt(&given, ("log", "format"), |g| match g.value.as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(g.problem("expected text or json")),
            })
            .unwrap_or_default();
        // The gateway's own listeners: the broker neither reads nor checks them.
        let gateway = if process == Process::Gateway {
            GatewayOverrides {
                server_host: c.opt(&given, ("server", "host"), rule::host),
                server_port: c.opt(&given, ("server", "port"), rule::port),
                client_js: given
                    .get("server", "client_js")
                    .map(|g| PathBuf::from(&g.value)),
                operator_host: c.opt(&given, ("operator", "host"), rule::host),
                operator_port: c.opt(&given, ("operator", "port"), rule::port),
            }
        } else {
            GatewayOverrides::default()
        };
        let admin_ui = if process == Process::Gateway {
            c.admin_ui(&given, cluster)
        } else {
            None
        };
        #[cfg(feature = "fault-injection")]
        let drop_seqs = c
            .opt(&given, ("fault", "drop_member_seq"), |g| {
                g.value
                    .split(',')
                    .map(|part| match part.trim().parse::<u64>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(g.problem("must list sequence numbers (1, 2, ...)")),
                    })
                    .collect()
            })
            .unwrap_or_default();

        if !c.problems.is_empty() {
            return Err(Problems(c.problems));
        }
        Ok(Settings {
            nats,
            node,
            subjects,
            heartbeat,
            lease,
            drain,
            advertise,
            forward,
            member_batches,
            presence_batches,
            broker,
            grpc,
            grpc_ignored,
            log,
            admin_ui,
            gateway,
            #[cfg(feature = "fault-injection")]
            drop_seqs,
        })
    }

    /// The drain window: as set, else [`DEFAULT_DRAIN`] in a cluster and none standalone.
    pub fn drain(&self) -> Duration {
        match (self.drain, &self.nats) {
            (Some(d), _) => d,
            (None, Some(_)) => DEFAULT_DRAIN,
            (None, None) => Duration::ZERO,
        }
    }

    /// Applies the environment's overrides of the gateway's `[server]` and `[operator]` host and
    /// port (the file's values are the gateway config's own).
    pub fn apply_to(&self, config: &mut GatewayConfig) {
        let o = &self.gateway;
        if let Some(h) = &o.server_host {
            config.server.host = h.clone();
        }
        if let Some(p) = o.server_port {
            config.server.port = p;
        }
        if let Some(p) = &o.client_js {
            config.server.client_js = Some(p.clone());
        }
        if let Some(h) = &o.operator_host {
            config.operator.host = h.clone();
        }
        if let Some(p) = o.operator_port {
            config.operator.port = p;
        }
    }
}

impl Check {
    /// `[nats]`: the URL and the credentials.
    fn nats(&mut self, given: &Gathered) -> Option<NatsOptions> {
        // The password, from the setting or from a file (a Kubernetes Secret volume: a
        // StatefulSet pod reads the key of its own node); never logged.
        let password = match (
            given.get("nats", "password"),
            given.get("nats", "password_file"),
        ) {
            (Some(_), Some(file)) => {
                self.problems
                    .push(file.problem("set with the password itself; set one of them"));
                None
            }
            (None, Some(file)) => match std::fs::read_to_string(file.path()) {
                Ok(p) => Some(p.trim().to_owned()),
                Err(e) => {
                    self.problems
                        .push(file.problem(format!("cannot read: {e}")));
                    None
                }
            },
            (password, None) => password.map(|g| g.value.clone()),
        };
        let user = given.get("nats", "user").map(|g| g.value.clone());
        if let (Some(_), None) = (&password, &user) {
            let at = given
                .get("nats", "password")
                .or(given.get("nats", "password_file"));
            if let Some(g) = at {
                self.problems.push(g.problem(
                    "a NATS password is set without a user ([nats] user or SWITCHBOARD_NATS_USER)",
                ));
            }
        }
        let credentials_file = self.opt(given, ("nats", "creds"), rule::file);
        let nkey_seed_file = self.opt(given, ("nats", "nkey_seed_file"), rule::file);
        let replicas = self
            .opt(given, ("nats", "replicas"), |g| rule::count(g, REPLICAS))
            .unwrap_or(1);
        let url = given.get("nats", "url")?.value.clone();
        Some(NatsOptions {
            url,
            name: String::new(),
            user: user.map(|u| (u, password.unwrap_or_default())),
            token: given.get("nats", "token").map(|g| g.value.clone()),
            credentials_file,
            nkey_seed_file,
            replicas,
        })
    }

    /// `[admin_ui]`: off without a password hash; in a cluster the broker's URL and a key are
    /// required (the gateway reaches the broker's admin service with them).
    fn admin_ui(&mut self, given: &Gathered, cluster: bool) -> Option<AdminUiSettings> {
        let hash = given.get("admin_ui", "password_hash")?;
        let username = given
            .get("admin_ui", "username")
            .map_or("admin", |g| g.value.as_str());
        let credentials = AdminCredentials::new(username, &hash.value)
            .map_err(|e| {
                let at = match e {
                    CredentialsError::Username => given.get("admin_ui", "username").unwrap_or(hash),
                    CredentialsError::Hash => hash,
                };
                self.problems.push(at.problem(e));
            })
            .ok();
        let static_dir = self.opt(given, ("admin_ui", "static_dir"), |g| {
            let dir = g.path();
            if dir.join("index.html").is_file() {
                Ok(dir)
            } else {
                Err(g.problem("is not a directory holding index.html (the package's ui/dist)"))
            }
        });
        let path = self
            .opt(given, ("admin_ui", "path"), |g| {
                let ok = g.value.starts_with('/')
                    && g.value.ends_with('/')
                    && g.value.len() <= MAX_ADMIN_UI_PATH_BYTES
                    && g.value.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
                ok.then(|| g.value.clone()).ok_or_else(|| {
                    g.problem("must start and end with '/' (e.g. /admin-ui/), printable ASCII")
                })
            })
            .unwrap_or_else(|| DEFAULT_ADMIN_UI_PATH.to_owned());
        let mut remote = None;
        if cluster {
            let url = self.opt(given, ("admin_ui", "broker_url"), |g| {
                let ok = g.value.starts_with("http://") && g.value.len() <= MAX_ADMIN_UI_PATH_BYTES;
                ok.then(|| g.value.clone()).ok_or_else(|| {
                    g.problem("must be the broker's gRPC URL, http://host:port (no TLS yet)")
                })
            });
            let key = self.opt(given, ("admin_ui", "api_key"), |g| {
                (g.value.len() >= MIN_TOKEN_BYTES && g.value.bytes().all(|b| b.is_ascii_graphic()))
                    .then(|| g.value.clone())
                    .ok_or_else(|| {
                        g.problem(format!(
                            "must be at least {MIN_TOKEN_BYTES} printable ASCII bytes"
                        ))
                    })
            });
            for (key_name, var) in [
                ("broker_url", "SWITCHBOARD_ADMIN_UI_BROKER_URL"),
                ("api_key", "SWITCHBOARD_ADMIN_UI_API_KEY"),
            ] {
                if given.get("admin_ui", key_name).is_none() {
                    self.problems.push(hash.problem(format!(
                        "in a cluster the Admin UI also needs [admin_ui] {key_name} (or {var})"
                    )));
                }
            }
            remote = Some((url?, key?));
        }
        Some(AdminUiSettings {
            credentials: credentials?,
            static_dir,
            path,
            remote,
        })
    }

    /// `[grpc]`: off without a token; the TLS pair is loaded and checked now, so that a bad pair
    /// stops the process before it serves anything.
    fn grpc(&mut self, given: &Gathered) -> Option<GrpcSettings> {
        let host = self
            .opt(given, ("grpc", "host"), rule::host)
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = self
            .opt(given, ("grpc", "port"), rule::port)
            .unwrap_or(DEFAULT_GRPC_PORT);
        let keys = self.api_keys(given);
        if keys.is_empty() {
            return None;
        }
        let tls = match (given.get("grpc", "tls_cert"), given.get("grpc", "tls_key")) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert_pem = rule::read(cert).map_err(|p| self.problems.push(p)).ok();
                let key_pem = rule::read(key).map_err(|p| self.problems.push(p)).ok();
                let (cert_pem, key_pem) = (cert_pem?, key_pem?);
                if let Err(e) = grpc::check_identity(&cert_pem, &key_pem) {
                    self.problems
                        .push(cert.problem(format!("unusable certificate or key: {e}")));
                    return None;
                }
                Some((cert_pem, key_pem))
            }
            (Some(cert), None) => {
                self.problems.push(
                    cert.problem("needs the key too ([grpc] tls_key or SWITCHBOARD_GRPC_TLS_KEY)"),
                );
                return None;
            }
            (None, Some(key)) => {
                self.problems.push(key.problem(
                    "needs the certificate too ([grpc] tls_cert or SWITCHBOARD_GRPC_TLS_CERT)",
                ));
                return None;
            }
        };
        Some(GrpcSettings {
            host,
            port,
            options: GrpcOptions { keys, tls },
        })
    }

    /// The API keys of `[grpc] admin_token`, `[api] keys` and `[api] keys_file`, together;
    /// empty when none is set. Every problem is noted; no secret is repeated.
    fn api_keys(&mut self, given: &Gathered) -> ApiKeys {
        // (key, where it was given)
        let mut found: Vec<(ApiKey, String, Location)> = Vec::new();
        if let Some(g) = given.get("grpc", "admin_token") {
            match keys::check_secret(&g.value) {
                Ok(()) => found.push((
                    ApiKey::new(ADMIN_TOKEN_KEY, &[Scope::Admin], &g.value),
                    g.value.clone(),
                    g.at.clone(),
                )),
                Err(e) => self.problems.push(g.problem(format!(
                    "must be at least {MIN_TOKEN_BYTES} bytes without spaces ({e})"
                ))),
            }
        }
        if let Some(g) = given.get("api", "keys") {
            for (n, entry) in g.value.split(';').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let mut parts = entry.splitn(3, ':');
                let (Some(name), Some(scopes), Some(secret)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    self.problems.push(
                        g.problem(format!("entry {}: expected name:scope,scope:secret", n + 1)),
                    );
                    continue;
                };
                let scopes: Vec<&str> = scopes.split(',').map(str::trim).collect();
                match key(name.trim(), &scopes, secret.trim()) {
                    Ok(k) => found.push((k, secret.trim().to_owned(), g.at.clone())),
                    Err(e) => self
                        .problems
                        .push(g.problem(format!("entry {}: {e}", n + 1))),
                }
            }
        }
        if let Some(g) = given.get("api", "keys_file") {
            match rule::read(g).map(String::from_utf8) {
                Err(p) => self.problems.push(p),
                Ok(Err(_)) => self.problems.push(g.problem("is not UTF-8 text")),
                Ok(Ok(text)) => {
                    let origin = g.path().display().to_string();
                    let file = File {
                        origin: &origin,
                        text: &text,
                    };
                    match toml::from_str::<KeysFile>(&text) {
                        Err(e) => self.problems.push(Problem {
                            location: match e.span() {
                                Some(span) => file_location(&file, span.start),
                                None => file_location(&file, 0),
                            },
                            message: e.message().trim().to_owned(),
                        }),
                        Ok(raw) => {
                            for k in raw.key {
                                let at = file_location(&file, k.span().start);
                                let k = k.into_inner();
                                let scopes: Vec<&str> =
                                    k.scopes.iter().map(String::as_str).collect();
                                match key(&k.name, &scopes, &k.secret) {
                                    Ok(key) => found.push((key, k.secret, at)),
                                    Err(e) => self.problems.push(Problem {
                                        location: at,
                                        message: format!("[[key]]: {e}"),
                                    }),
                                }
                            }
                        }
                    }
                }
            }
        }
        // Names and secrets are unique: a log line names one key, a secret is one key's.
        let mut names = std::collections::BTreeSet::new();
        let mut secrets = std::collections::BTreeSet::new();
        let mut keys = Vec::new();
        for (key, secret, at) in found {
            if !names.insert(key.name().to_owned()) {
                self.problems.push(Problem {
                    location: at,
                    message: format!("API key {:?}: the name is taken by another key", key.name()),
                });
            } else if !secrets.insert(secret) {
                self.problems.push(Problem {
                    location: at,
                    message: format!(
                        "API key {:?}: its secret is another key's (each key needs its own)",
                        key.name()
                    ),
                });
            } else {
                keys.push(key);
            }
        }
        ApiKeys::new(keys)
    }
}

/// The settings that configure API keys.
const KEY_SETTINGS: [(&str, &str); 3] = [
    ("grpc", "admin_token"),
    ("api", "keys"),
    ("api", "keys_file"),
];

/// The name of the key `[grpc] admin_token` makes.
pub const ADMIN_TOKEN_KEY: &str = "admin_token";

/// A keys file (`[api] keys_file`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<toml::Spanned<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    scopes: Vec<String>,
    secret: String,
}

/// One key from its parts; the message never repeats the secret.
fn key(name: &str, scopes: &[&str], secret: &str) -> Result<ApiKey, String> {
    keys::check_name(name)?;
    let parsed = scopes
        .iter()
        .map(|s| {
            Scope::parse(s)
                .ok_or_else(|| format!("key {name:?}: unknown scope {s:?} (read, emit or admin)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err(format!("key {name:?}: no scope (read, emit or admin)"));
    }
    keys::check_secret(secret).map_err(|e| format!("key {name:?}: {e}"))?;
    Ok(ApiKey::new(name, &parsed, secret))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const URL: (&str, &str) = ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222");

    fn load(
        process: Process,
        file: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let file = file.map(|text| File {
            origin: "sb.toml",
            text,
        });
        Settings::load(process, file, |k| vars.get(k).cloned()).map_err(|e| e.to_string())
    }

    fn gateway(vars: &[(&str, &str)]) -> Result<Settings, String> {
        load(Process::Gateway, None, vars)
    }

    fn broker(vars: &[(&str, &str)]) -> Result<Settings, String> {
        load(Process::Broker, None, vars)
    }

    #[test]
    fn no_url_is_standalone_with_the_default_timings() {
        let s = gateway(&[]).unwrap();
        assert!(s.nats.is_none());
        assert_eq!(s.heartbeat, Duration::from_millis(2000));
        assert_eq!(s.lease, Duration::from_millis(6000));
        assert_eq!(s.subjects.prefix(), "sio");
        assert_eq!(s.drain(), Duration::ZERO, "standalone closes at once");
        assert_eq!(s.log, LogFormat::Text);
    }

    #[test]
    fn jetstream_replicas_are_read_and_bounded() {
        let one = gateway(&[URL]).unwrap();
        assert_eq!(one.nats.as_ref().unwrap().replicas, 1);
        let window = Some(Duration::from_secs(60));
        assert_eq!(one.recovery_log(window).unwrap().replicas, 1);

        let three = broker(&[URL, ("SWITCHBOARD_NATS_REPLICAS", "3")]).unwrap();
        assert_eq!(three.nats.as_ref().unwrap().replicas, 3);
        assert_eq!(three.recovery_log(window).unwrap().replicas, 3);
        let file = "[nats]\nurl = \"nats://a:4222,nats://b:4222\"\nreplicas = 5\n";
        let five = load(Process::Gateway, Some(file), &[]).unwrap();
        assert_eq!(five.nats.unwrap().replicas, 5);

        for bad in ["0", "6", "three", "-1"] {
            let e = gateway(&[URL, ("SWITCHBOARD_NATS_REPLICAS", bad)]).unwrap_err();
            assert!(
                e.contains("SWITCHBOARD_NATS_REPLICAS") && e.contains("from 1 to 5"),
                "{bad}: {e}"
            );
        }
        // Checked standalone too (no URL), not silently ignored.
        let e = gateway(&[("SWITCHBOARD_NATS_REPLICAS", "9")]).unwrap_err();
        assert!(e.contains("from 1 to 5"), "{e}");
    }

    #[test]
    fn cluster_settings_are_read() {
        let s = gateway(&[
            URL,
            ("SWITCHBOARD_NATS_USER", "gw"),
            ("SWITCHBOARD_NATS_PASSWORD", "p:w"),
            ("SWITCHBOARD_NODE_ID", "gw7"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "prod"),
            ("SWITCHBOARD_HEARTBEAT_MS", "500"),
            ("SWITCHBOARD_LOG_FORMAT", "json"),
        ])
        .unwrap();
        let nats = s.nats.clone().unwrap();
        assert_eq!(nats.url, "nats://127.0.0.1:4222");
        assert_eq!(nats.user, Some(("gw".to_owned(), "p:w".to_owned())));
        assert_eq!(s.node.as_ref().unwrap().as_str(), "gw7");
        assert_eq!(s.subjects.prefix(), "prod");
        assert_eq!(s.lease, Duration::from_millis(1500), "three heartbeats");
        assert_eq!(s.log, LogFormat::Json);
        // Drain and forwarding defaults of a cluster node.
        assert_eq!(s.drain(), DEFAULT_DRAIN);
        assert!(s.forward && s.advertise.is_none());
        assert!(s.member_batches, "batches by default");
        assert!(s.presence_batches, "presence batches by default");
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn fault_injection_lists_sequence_numbers() {
        let s = gateway(&[("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ", "3, 5")]).unwrap();
        assert_eq!(s.drop_seqs, [3, 5]);
        let e = gateway(&[("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ", "x")]).unwrap_err();
        assert!(e.contains("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ"), "{e}");
    }

    #[test]
    fn drain_and_forwarding_settings() {
        let s = gateway(&[
            URL,
            ("SWITCHBOARD_DRAIN_MS", "0"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "gw1:3000"),
            ("SWITCHBOARD_FORWARD", "off"),
            ("SWITCHBOARD_MEMBER_BATCHES", "false"),
            ("SWITCHBOARD_PRESENCE_BATCHES", "off"),
        ])
        .unwrap();
        assert_eq!(s.drain(), Duration::ZERO);
        assert_eq!(s.advertise.as_deref(), Some("gw1:3000"));
        assert!(!s.forward);
        assert!(!s.member_batches);
        assert!(!s.presence_batches);
        for (var, bad) in [
            ("SWITCHBOARD_DRAIN_MS", "-1"),
            ("SWITCHBOARD_DRAIN_MS", "3600001"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "0.0.0.0:3000"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "10.0.0.7"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "10.0.0.7:0"),
            ("SWITCHBOARD_FORWARD", "maybe"),
            ("SWITCHBOARD_MEMBER_BATCHES", "sometimes"),
            ("SWITCHBOARD_PRESENCE_BATCHES", "often"),
        ] {
            let e = gateway(&[(var, bad)]).expect_err(var);
            assert!(e.starts_with(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn grpc_is_read_only_where_it_is_served() {
        let tls = [
            ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef-token"),
            ("SWITCHBOARD_GRPC_TLS_CERT", "/nonexistent/cert.pem"),
            ("SWITCHBOARD_GRPC_TLS_KEY", "/nonexistent/key.pem"),
        ];
        // Standalone: the TLS files are loaded, so missing ones are a startup error.
        let e = gateway(&tls).expect_err("missing TLS files");
        assert!(e.contains("SWITCHBOARD_GRPC_TLS_CERT"), "{e}");
        let standalone = gateway(&tls[..1]).unwrap();
        assert!(standalone.grpc.is_some() && !standalone.grpc_ignored);
        // A gateway in a cluster: the brokers serve gRPC, the same variables are not read.
        let mut cluster = tls.to_vec();
        cluster.push(URL);
        let s = gateway(&cluster).unwrap();
        assert!(s.grpc.is_none() && s.grpc_ignored);
        // The broker reads them.
        let e = broker(&cluster).expect_err("missing TLS files");
        assert!(e.contains("SWITCHBOARD_GRPC_TLS_CERT"), "{e}");
    }

    #[test]
    fn grpc_options() {
        assert!(broker(&[URL]).unwrap().grpc.is_none());
        let g = broker(&[URL, ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef")])
            .unwrap()
            .grpc
            .unwrap();
        assert_eq!((g.host.as_str(), g.port), ("127.0.0.1", DEFAULT_GRPC_PORT));
        let keys = g.options.keys.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name(), ADMIN_TOKEN_KEY);
        assert_eq!(keys[0].scopes(), [Scope::Admin]);
        assert!(g.options.tls.is_none());
        let g = broker(&[
            URL,
            ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef"),
            ("SWITCHBOARD_GRPC_HOST", "[::1]"),
            ("SWITCHBOARD_GRPC_PORT", "0"),
        ])
        .unwrap()
        .grpc
        .unwrap();
        assert_eq!((g.host.as_str(), g.port), ("::1", 0));
        let token = ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("SWITCHBOARD_ADMIN_TOKEN", "short")],
                "SWITCHBOARD_ADMIN_TOKEN",
            ),
            (
                &[token, ("SWITCHBOARD_GRPC_PORT", "x")],
                "SWITCHBOARD_GRPC_PORT",
            ),
            (
                &[token, ("SWITCHBOARD_GRPC_HOST", "no such host!")],
                "SWITCHBOARD_GRPC_HOST",
            ),
            (
                &[token, ("SWITCHBOARD_GRPC_TLS_CERT", "/x")],
                "SWITCHBOARD_GRPC_TLS_CERT",
            ),
            (
                &[token, ("SWITCHBOARD_GRPC_TLS_KEY", "/x")],
                "SWITCHBOARD_GRPC_TLS_KEY",
            ),
        ];
        for (vars, var) in cases {
            let mut vars = vars.to_vec();
            vars.push(URL);
            let e = broker(&vars).expect_err(var);
            assert!(e.starts_with(var), "{var}: {e}");
            assert!(!e.contains("0123456789abcdef"), "the token is secret: {e}");
        }
    }

    fn key_names(s: &Settings) -> Vec<(String, Vec<Scope>)> {
        s.grpc
            .as_ref()
            .map(|g| g.options.keys.keys())
            .unwrap_or_default()
            .iter()
            .map(|k| (k.name().to_owned(), k.scopes().to_vec()))
            .collect()
    }

    #[test]
    fn api_keys_come_from_the_environment_a_file_and_the_admin_token() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.toml");
        std::fs::write(
            &file,
            "[[key]]\nname = \"ops-new\"\nscopes = [\"admin\"]\nsecret = \"file-secret-0123456789\"\n",
        )
        .unwrap();
        let s = broker(&[
            URL,
            ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef"),
            (
                "SWITCHBOARD_API_KEYS",
                "chat:emit:emit-secret-0123456789; stats:read,emit:read-secret-0123:456789;",
            ),
            ("SWITCHBOARD_API_KEYS_FILE", file.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(
            key_names(&s),
            [
                ("admin_token".to_owned(), vec![Scope::Admin]),
                ("chat".to_owned(), vec![Scope::Emit]),
                ("stats".to_owned(), vec![Scope::Read, Scope::Emit]),
                ("ops-new".to_owned(), vec![Scope::Admin]),
            ]
        );
        // The keys work: a secret with a colon is the rest of its entry.
        let keys = &s.grpc.as_ref().unwrap().options.keys;
        let ok = |secret: &str, method: &str| {
            keys.authorize(
                keys::Api::Http,
                method,
                Some(format!("Bearer {secret}").as_bytes()),
            )
            .map(|k| k.name().to_owned())
            .map_err(|e| e.code())
        };
        assert_eq!(
            ok("read-secret-0123:456789", "Stats"),
            Ok("stats".to_owned())
        );
        assert_eq!(
            ok("file-secret-0123456789", "Disconnect"),
            Ok("ops-new".to_owned())
        );
        assert_eq!(
            ok("emit-secret-0123456789", "Disconnect"),
            Err(tonic::Code::PermissionDenied)
        );
        // A key alone turns the admin APIs on, and a cluster gateway ignores it.
        let only = broker(&[URL, ("SWITCHBOARD_API_KEYS", "a:read:0123456789abcdef")]).unwrap();
        assert_eq!(key_names(&only), [("a".to_owned(), vec![Scope::Read])]);
        let gw = gateway(&[URL, ("SWITCHBOARD_API_KEYS", "a:read:0123456789abcdef")]).unwrap();
        assert!(gw.grpc.is_none() && gw.grpc_ignored);
        // The same from the file's `[api]` table.
        let from_file = load(
            Process::Broker,
            Some("[api]\nkeys = \"a:admin:0123456789abcdef\"\n"),
            &[URL],
        )
        .unwrap();
        assert_eq!(
            key_names(&from_file),
            [("a".to_owned(), vec![Scope::Admin])]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_api_keys_are_each_reported_without_their_secret() {
        let dir = std::env::temp_dir().join(format!("sb-badkeys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.toml");
        std::fs::write(
            &file,
            "[[key]]\nname = \"f\"\nscopes = [\"root\"]\nsecret = \"file-secret-0123456789\"\n\n\
             [[key]]\nname = \"g\"\nscopes = [\"read\"]\nsecret = \"tiny-secret\"\n",
        )
        .unwrap();
        let e = broker(&[
            URL,
            (
                "SWITCHBOARD_API_KEYS",
                "a:read:short-secret;b c:read:0123456789abcdef;d::0123456789abcdef;nocolon;\
                 e:read:dup-secret-0123456789;e:emit:other-secret-0123456789;\
                 f2:read:dup-secret-0123456789",
            ),
            ("SWITCHBOARD_API_KEYS_FILE", file.to_str().unwrap()),
        ])
        .unwrap_err();
        for expected in [
            "entry 1: key \"a\": a secret must be at least 16 bytes",
            "entry 2: a key name must be",
            "entry 3: key \"d\": unknown scope \"\"",
            "entry 4: expected name:scope,scope:secret",
            "API key \"e\": the name is taken",
            "API key \"f2\": its secret is another key's",
            "keys.toml:1:1: [[key]]: key \"f\": unknown scope \"root\"",
            "keys.toml:6:1: [[key]]: key \"g\": a secret must be",
        ] {
            assert!(e.contains(expected), "{expected:?} in {e}");
        }
        for secret in ["short-secret", "dup-secret", "file-secret", "tiny-secret"] {
            assert!(!e.contains(secret), "{secret} shown: {e}");
        }
        let e =
            broker(&[URL, ("SWITCHBOARD_API_KEYS_FILE", "/nonexistent/keys.toml")]).unwrap_err();
        assert!(e.starts_with("SWITCHBOARD_API_KEYS_FILE"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broker_defaults_and_explicit_values() {
        let s = broker(&[URL]).unwrap();
        assert_eq!(s.broker.host, "127.0.0.1");
        assert_eq!(s.broker.http_port, DEFAULT_BROKER_HTTP_PORT);
        assert_eq!(s.broker.leader, LeaderMode::KvLease);
        assert_eq!(s.broker.id, None);
        assert_eq!(s.lease, Duration::from_millis(6000));
        assert_eq!(s.nats.unwrap().user, None);
        let s = broker(&[
            URL,
            ("SWITCHBOARD_NATS_USER", "u"),
            ("SWITCHBOARD_NATS_PASSWORD", "p:w"),
            ("SWITCHBOARD_NATS_TOKEN", "t"),
            ("SWITCHBOARD_BROKER_HOST", "::1"),
            ("SWITCHBOARD_BROKER_HTTP_PORT", "0"),
            ("SWITCHBOARD_LEASE_MS", "1200"),
            ("SWITCHBOARD_HEARTBEAT_MS", "200"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "test.x1"),
            ("SWITCHBOARD_BROKER_ID", "broker-1"),
            ("SWITCHBOARD_BROKER_LEADER", "always"),
        ])
        .unwrap();
        let nats = s.nats.unwrap();
        assert_eq!(nats.user, Some(("u".to_owned(), "p:w".to_owned())));
        assert_eq!(nats.token.as_deref(), Some("t"));
        assert_eq!((s.broker.host.as_str(), s.broker.http_port), ("::1", 0));
        assert_eq!(s.lease, Duration::from_millis(1200));
        assert_eq!(s.heartbeat, Duration::from_millis(200));
        assert_eq!(s.subjects.prefix(), "test.x1");
        assert_eq!(s.broker.id.as_deref(), Some("broker-1"));
        assert_eq!(s.broker.leader, LeaderMode::Always);
        // A host name is a host, for the broker as for the gateway.
        let s = broker(&[URL, ("SWITCHBOARD_BROKER_HOST", "localhost")]).unwrap();
        assert_eq!(s.broker.host, "localhost");
    }

    #[test]
    fn nats_credentials_from_files() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-settings-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("gw0");
        std::fs::write(&password, "sbsecret\n").unwrap();
        let seed = dir.join("seed");
        std::fs::write(&seed, "SUAEXAMPLE").unwrap();
        let (password, seed) = (password.to_str().unwrap(), seed.to_str().unwrap());
        for process in [Process::Gateway, Process::Broker] {
            let s = load(
                process,
                None,
                &[
                    URL,
                    ("SWITCHBOARD_NATS_USER", "gateway-gw0"),
                    ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
                    ("SWITCHBOARD_NATS_NKEY_SEED_FILE", seed),
                ],
            )
            .unwrap();
            let nats = s.nats.unwrap();
            assert_eq!(
                nats.user,
                Some(("gateway-gw0".to_owned(), "sbsecret".to_owned()))
            );
            assert_eq!(nats.nkey_seed_file.as_deref(), Some(Path::new(seed)));
        }
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("SWITCHBOARD_NATS_PASSWORD_FILE", "/nonexistent/password")],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                &[
                    ("SWITCHBOARD_NATS_USER", "u"),
                    ("SWITCHBOARD_NATS_PASSWORD", "p"),
                    ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
                ],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                &[("SWITCHBOARD_NATS_PASSWORD", "sbsecret")],
                "SWITCHBOARD_NATS_PASSWORD",
            ),
            (
                &[("SWITCHBOARD_NATS_NKEY_SEED_FILE", "/nonexistent/seed")],
                "SWITCHBOARD_NATS_NKEY_SEED_FILE",
            ),
            (
                &[("SWITCHBOARD_NATS_CREDS", "/nonexistent/x.creds")],
                "SWITCHBOARD_NATS_CREDS",
            ),
        ];
        for (problem, var) in cases {
            let mut vars = vec![URL];
            vars.extend_from_slice(problem);
            for process in [Process::Gateway, Process::Broker] {
                let e = load(process, None, &vars).expect_err(var);
                assert!(e.starts_with(var), "{var} missing from: {e}");
                // The password itself is never part of a message.
                assert!(!e.contains("sbsecret"), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A relative path in the file is relative to the file, as in the gateway's tables; from
    /// the environment it is relative to the working directory.
    #[test]
    fn relative_paths_in_the_file_are_relative_to_the_file() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-settings-rel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::write(dir.join("secrets/password"), "sbsecret\n").unwrap();
        std::fs::write(dir.join("secrets/seed"), "SUAEXAMPLE").unwrap();
        let origin = dir.join("sb.toml");
        let text = "[nats]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"u\"\n\
                    password_file = \"secrets/password\"\nnkey_seed_file = \"secrets/seed\"\n";
        let file = File {
            origin: origin.to_str().unwrap(),
            text,
        };
        let s = Settings::load(Process::Broker, Some(file), |_| None).unwrap();
        let nats = s.nats.unwrap();
        assert_eq!(nats.user, Some(("u".to_owned(), "sbsecret".to_owned())));
        assert_eq!(nats.nkey_seed_file, Some(dir.join("secrets/seed")));
        // The same relative path from the environment is not found beside the file.
        let e = load(
            Process::Broker,
            None,
            &[URL, ("SWITCHBOARD_NATS_NKEY_SEED_FILE", "secrets/seed")],
        )
        .expect_err("relative to the working directory");
        assert!(e.starts_with("SWITCHBOARD_NATS_NKEY_SEED_FILE"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The broker's help lists what it reads, not the gateway's listener variables.
    #[test]
    fn help_lists_the_variables_each_binary_reads() {
        let gateway = env_help(Process::Gateway);
        let broker = env_help(Process::Broker);
        for var in [
            "SWITCHBOARD_NATS_URL",
            "SWITCHBOARD_BROKER_ID",
            "SWITCHBOARD_LOG_FORMAT",
        ] {
            assert!(gateway.contains(var) && broker.contains(var), "{var}");
        }
        for var in [
            "SWITCHBOARD_OPERATOR_HOST",
            "SWITCHBOARD_CLIENT_JS",
            "SWITCHBOARD_PORT",
        ] {
            assert!(gateway.contains(var), "{var}");
            assert!(!broker.contains(var), "{var} in the broker's help");
        }
    }

    /// The same rule for a setting in both tiers; each problem names its variable.
    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("SWITCHBOARD_BROKER_HOST", "no such host!"),
            ("SWITCHBOARD_BROKER_HTTP_PORT", "70000"),
            ("SWITCHBOARD_BROKER_HTTP_PORT", "-1"),
            ("SWITCHBOARD_LEASE_MS", "0"),
            ("SWITCHBOARD_LEASE_MS", "6s"),
            ("SWITCHBOARD_HEARTBEAT_MS", "x"),
            ("SWITCHBOARD_HEARTBEAT_MS", "9"),
            ("SWITCHBOARD_HEARTBEAT_MS", "3600001"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "a b"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "a..b"),
            ("SWITCHBOARD_NODE_ID", "a.b"),
            ("SWITCHBOARD_BROKER_ID", "a.b"),
            ("SWITCHBOARD_BROKER_LEADER", "raft"),
            ("SWITCHBOARD_LOG_FORMAT", "xml"),
        ];
        for (var, bad) in cases {
            for process in [Process::Gateway, Process::Broker] {
                let e = load(process, None, &[URL, (var, bad)]).expect_err(var);
                assert!(e.starts_with(var), "{var}={bad}: {e}");
            }
        }
        // The gateway's listeners: the broker does not read them.
        for (var, bad) in [
            ("SWITCHBOARD_HOST", "no such host!"),
            ("SWITCHBOARD_PORT", "x"),
            ("PORT", "65536"),
            ("SWITCHBOARD_OPERATOR_HOST", "-bad"),
            ("SWITCHBOARD_OPERATOR_PORT", "x"),
        ] {
            let e = gateway(&[(var, bad)]).expect_err(var);
            assert!(e.starts_with(var), "{var}={bad}: {e}");
            assert!(broker(&[URL, (var, bad)]).is_ok(), "{var}");
        }
        let e = broker(&[]).expect_err("no URL");
        assert!(e.starts_with("SWITCHBOARD_NATS_URL"), "{e}");
        let e = broker(&[
            URL,
            ("SWITCHBOARD_LEASE_MS", "2000"),
            ("SWITCHBOARD_HEARTBEAT_MS", "2000"),
        ])
        .expect_err("lease not above the heartbeat");
        assert!(e.starts_with("SWITCHBOARD_LEASE_MS"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        for process in [Process::Gateway, Process::Broker] {
            let e = load(
                process,
                None,
                &[
                    URL,
                    ("SWITCHBOARD_NATS_PASSWORD", "secret"),
                    ("SWITCHBOARD_HEARTBEAT_MS", "2000"),
                    ("SWITCHBOARD_LEASE_MS", "1000"),
                    ("SWITCHBOARD_BROKER_LEADER", "raft"),
                    ("SWITCHBOARD_BROKER_HTTP_PORT", "x"),
                ],
            )
            .expect_err("invalid");
            for var in [
                "SWITCHBOARD_NATS_PASSWORD",
                "SWITCHBOARD_LEASE_MS",
                "SWITCHBOARD_BROKER_LEADER",
                "SWITCHBOARD_BROKER_HTTP_PORT",
            ] {
                assert!(
                    e.lines().any(|l| l.starts_with(var)),
                    "{var} missing from: {e}"
                );
            }
        }
    }

    const FILE: &str = "\
[server]
port = 1

[nats]
url = \"nats://10.0.0.1:4222\"

[cluster]
heartbeat_ms = 500
subject_prefix = \"file\"
presence_batches = false

[broker]
leader = \"always\"
http_port = 0

[log]
format = \"json\"
";

    #[test]
    fn the_file_sets_and_the_environment_overrides() {
        let s = load(Process::Broker, Some(FILE), &[]).unwrap();
        assert_eq!(s.nats.unwrap().url, "nats://10.0.0.1:4222");
        assert_eq!(s.heartbeat, Duration::from_millis(500));
        assert_eq!(s.lease, Duration::from_millis(1500));
        assert_eq!(s.subjects.prefix(), "file");
        assert_eq!(s.broker.leader, LeaderMode::Always);
        assert_eq!(s.broker.http_port, 0);
        assert_eq!(s.log, LogFormat::Json);
        assert!(!s.presence_batches);
        let s = load(
            Process::Broker,
            Some(FILE),
            &[
                ("SWITCHBOARD_NATS_URL", "nats://env:4222"),
                ("SWITCHBOARD_HEARTBEAT_MS", "250"),
                ("SWITCHBOARD_BROKER_LEADER", "kv"),
                ("SWITCHBOARD_PRESENCE_BATCHES", "true"),
                // Empty counts as unset: the file's value stays.
                ("SWITCHBOARD_SUBJECT_PREFIX", " "),
            ],
        )
        .unwrap();
        assert_eq!(s.nats.unwrap().url, "nats://env:4222");
        assert_eq!(s.heartbeat, Duration::from_millis(250));
        assert_eq!(s.broker.leader, LeaderMode::KvLease);
        assert!(s.presence_batches);
        assert_eq!(s.subjects.prefix(), "file");
    }

    #[test]
    fn file_problems_have_their_line_and_column() {
        let text = "\
[cluster]
heartbeat_ms = 5
lease_ms = \"x\"
colour = true

[grpc]
port = [1]

[log]
format = \"xml\"
";
        let e = load(Process::Gateway, Some(text), &[]).unwrap_err();
        for want in [
            "sb.toml:2:16: ",
            "sb.toml:3:12: ",
            "sb.toml:4:10: [cluster]: unknown key \"colour\"",
            "sb.toml:7:8: ",
            "sb.toml:10:10: ",
        ] {
            assert!(
                e.lines().any(|l| l.starts_with(want)),
                "{want} missing from:\n{e}"
            );
        }
        // The environment overrides a bad file value: it is then not read.
        let s = load(
            Process::Gateway,
            Some("[cluster]\nheartbeat_ms = 5\n"),
            &[("SWITCHBOARD_HEARTBEAT_MS", "100")],
        )
        .unwrap();
        assert_eq!(s.heartbeat, Duration::from_millis(100));
    }

    #[test]
    fn gateway_host_and_port_come_from_the_environment() {
        let mut config = GatewayConfig::builtin().unwrap();
        let s = gateway(&[
            ("SWITCHBOARD_HOST", "[::1]"),
            ("PORT", "4000"),
            ("SWITCHBOARD_OPERATOR_HOST", "0.0.0.0"),
            ("SWITCHBOARD_OPERATOR_PORT", "0"),
        ])
        .unwrap();
        s.apply_to(&mut config);
        assert_eq!(
            (config.server.host.as_str(), config.server.port),
            ("::1", 4000)
        );
        assert_eq!(
            (config.operator.host.as_str(), config.operator.port),
            ("0.0.0.0", 0)
        );
        // SWITCHBOARD_PORT before PORT; an empty one counts as unset.
        let s = gateway(&[("SWITCHBOARD_PORT", "5000"), ("PORT", "4000")]).unwrap();
        s.apply_to(&mut config);
        assert_eq!(config.server.port, 5000);
        let s = gateway(&[("SWITCHBOARD_PORT", ""), ("PORT", "4001")]).unwrap();
        s.apply_to(&mut config);
        assert_eq!(config.server.port, 4001);
    }

    /// "changeit" at cost 10, from the `@socket.io/admin-ui` README.
    const ADMIN_HASH: &str = "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS";

    #[test]
    fn admin_ui_is_off_by_default_and_checked_when_on() {
        assert!(gateway(&[]).unwrap().admin_ui.is_none());
        let hash = ("SWITCHBOARD_ADMIN_UI_PASSWORD_HASH", ADMIN_HASH);
        let on = gateway(&[hash]).unwrap().admin_ui.unwrap();
        assert_eq!(on.path, DEFAULT_ADMIN_UI_PATH);
        assert!(on.static_dir.is_none() && on.remote.is_none());
        assert!(on.credentials.verify(&serde_json::json!({
            "username": "admin", "password": "changeit"
        })));

        let err = gateway(&[("SWITCHBOARD_ADMIN_UI_PASSWORD_HASH", "changeit")]).unwrap_err();
        assert!(err.contains("SWITCHBOARD_ADMIN_UI_PASSWORD_HASH"), "{err}");
        assert!(err.contains("bcrypt") && !err.contains("changeit"), "{err}");
        let long = "u".repeat(300);
        let err = gateway(&[hash, ("SWITCHBOARD_ADMIN_UI_USERNAME", &long)]).unwrap_err();
        assert!(err.contains("SWITCHBOARD_ADMIN_UI_USERNAME"), "{err}");
        let err = gateway(&[hash, ("SWITCHBOARD_ADMIN_UI_PATH", "admin")]).unwrap_err();
        assert!(err.contains("SWITCHBOARD_ADMIN_UI_PATH"), "{err}");
        let err = gateway(&[hash, ("SWITCHBOARD_ADMIN_UI_STATIC_DIR", "/nonexistent")]);
        assert!(err.unwrap_err().contains("index.html"));

        // In a cluster the gateway reaches the broker's admin service: URL and key required.
        let err = gateway(&[URL, hash]).unwrap_err();
        assert!(
            err.contains("broker_url") && err.contains("api_key"),
            "{err}"
        );
        let key = "k".repeat(MIN_TOKEN_BYTES);
        let s = gateway(&[
            URL,
            hash,
            ("SWITCHBOARD_ADMIN_UI_BROKER_URL", "http://127.0.0.1:50051"),
            ("SWITCHBOARD_ADMIN_UI_API_KEY", &key),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        let remote = s.admin_ui.unwrap().remote.unwrap();
        assert_eq!(remote, ("http://127.0.0.1:50051".to_owned(), key.clone()));
        assert!(!shown.contains(&key), "the key is secret: {shown}");

        // The broker accepts the table and does not read it.
        let file = "[admin_ui]\npassword_hash = \"not a hash\"\n";
        let b = load(Process::Broker, Some(file), &[URL]).unwrap();
        assert!(b.admin_ui.is_none());
        assert!(!env_help(Process::Broker).contains("ADMIN_UI"));
        assert!(env_help(Process::Gateway).contains("SWITCHBOARD_ADMIN_UI_PASSWORD_HASH"));
    }

    #[test]
    fn every_variable_names_one_setting() {
        let mut seen = std::collections::HashSet::new();
        for v in VARS {
            assert!(seen.insert(v.env), "{} twice", v.env);
            assert!(
                TABLES.contains(&v.table)
                    || GATEWAY_TABLES.contains(&v.table)
                    || v.table == "fault",
                "{}: table {}",
                v.env,
                v.table
            );
        }
    }
}
