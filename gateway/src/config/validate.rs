//! Turning the raw TOML shapes into the checked model, collecting every problem with its
//! `file:line:col` instead of stopping at the first; and reading the secrets the file names.
//! The loading entry points ([`Config::from_file`], [`Config::parse`], [`Config::apply_env`])
//! live here because they are this step's front door; the model itself knows nothing of TOML.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::raw::*;
use super::*;
use crate::auth;
use crate::jwks;

/// Socket.IO clients run `setTimeout(pingInterval + pingTimeout)`; JavaScript timers fire at
/// once past 2^31 - 1 ms, so larger values would make every client time out immediately.
const MAX_JS_TIMER_MS: u64 = 2_147_483_647;
/// Largest key file read (a PEM public key is a few KiB).
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Regex size limit for namespace patterns (bytes of compiled program).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

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
            queue_max: usize::MAX,
        };
        let server = v.server(raw.server.unwrap_or_default());
        v.queue_max = server.outbound_queue_max_messages;
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

    /// Reads the secrets the file names (`[namespace.jwt] secret_env`) through `env` (pass
    /// `|k| std::env::var(k).ok()`) and turns each into its verification key.
    ///
    /// The other environment variables (host, port, and the cluster's settings) are read by the
    /// binaries' one settings table (`bin/src/settings.rs`), which applies them to this model.
    /// All problems are reported together; on error `self` may be partly updated and should be
    /// dropped.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
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
}

/// 1-based line and character column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
    /// `[server] outbound_queue_max_messages`, which bounds a recovery's replay.
    queue_max: usize,
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

    /// A join rule's history: `history_last` (1 ..= [`MAX_HISTORY`], default the most) and/or
    /// `history_max_age_ms`; only in a namespace with recovery, whose log holds the messages.
    fn history(
        &mut self,
        ctx: &Ctx,
        last: Option<Spanned<u64>>,
        max_age: Option<Spanned<u64>>,
        logged: bool,
    ) -> Option<HistoryRule> {
        let span = last.as_ref().or(max_age.as_ref()).map(Spanned::span)?;
        if !logged {
            self.ctx_problem(
                ctx,
                &span,
                "a join's history needs [namespace.recovery] (the log that keeps the messages)",
            );
            return None;
        }
        let last = match last {
            None => MAX_HISTORY,
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_HISTORY as u64 => {
                self.ctx_problem(
                    ctx,
                    &n.span(),
                    format!("history_last must be between 1 and {MAX_HISTORY}"),
                );
                MAX_HISTORY
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(MAX_HISTORY),
        };
        let max_age = max_age.map(|a| {
            let key = format!("{}: history_max_age_ms", ctx.0);
            self.positive_ms(&key, Some(a), Duration::from_secs(1))
        });
        Some(HistoryRule { last, max_age })
    }

    /// A byte count that may be 0; `key` is the full key (`section.name`).
    fn any_usize(&mut self, key: &str, v: Option<Spanned<u64>>, default: usize) -> usize {
        match v {
            None => default,
            Some(s) => usize::try_from(*s.get_ref()).unwrap_or_else(|_| {
                self.problem(&s.span(), format!("{key} is too large"));
                default
            }),
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
        let per_message_deflate_threshold_bytes = self.any_usize(
            "server.per_message_deflate_threshold_bytes",
            raw.per_message_deflate_threshold_bytes,
            d.per_message_deflate_threshold_bytes,
        );
        let http_compression_threshold_bytes = self.any_usize(
            "server.http_compression_threshold_bytes",
            raw.http_compression_threshold_bytes,
            d.http_compression_threshold_bytes,
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
            client_js: raw.client_js.map(|p| self.base_dir.join(p)),
            body_timeout,
            max_query_bytes,
            max_kept_header_bytes,
            per_message_deflate: raw.per_message_deflate.unwrap_or(d.per_message_deflate),
            per_message_deflate_threshold_bytes,
            http_compression: raw.http_compression.unwrap_or(d.http_compression),
            http_compression_threshold_bytes,
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
        let recovery = raw.recovery.and_then(|r| {
            let span = r.span();
            let r = r.into_inner();
            if !r.enabled.unwrap_or(true) {
                return None;
            }
            if !matches!(matcher, NamespaceMatch::Static(_)) {
                self.ctx_problem(
                    &ctx,
                    &span,
                    "recovery is only available on namespaces with a fixed name",
                );
                return None;
            }
            let window = self.positive_ms(
                "recovery.max_disconnection_ms",
                r.max_disconnection_ms,
                DEFAULT_RECOVERY_WINDOW,
            );
            let max_replay_packets = self.positive_usize(
                "recovery.max_replay_packets",
                r.max_replay_packets.clone(),
                DEFAULT_MAX_REPLAY_PACKETS,
            );
            if let Some(p) = &r.max_replay_packets
                && max_replay_packets.saturating_mul(2).saturating_add(16) > self.queue_max
            {
                self.ctx_problem(
                    &ctx,
                    &p.span(),
                    format!(
                        "recovery.max_replay_packets must be at most (server.outbound_queue_max_messages - 16) / 2 = {}",
                        self.queue_max.saturating_sub(16) / 2
                    ),
                );
            }
            let max_replay_bytes = self.positive_usize(
                "recovery.max_replay_bytes",
                r.max_replay_bytes.clone(),
                DEFAULT_MAX_REPLAY_BYTES,
            );
            if let Some(b) = &r.max_replay_bytes
                && max_replay_bytes.saturating_mul(2) > crate::engine::DEFAULT_MAX_QUEUED_BYTES
            {
                self.ctx_problem(
                    &ctx,
                    &b.span(),
                    format!(
                        "recovery.max_replay_bytes must be at most {} (half the outbound queue's byte bound)",
                        crate::engine::DEFAULT_MAX_QUEUED_BYTES / 2
                    ),
                );
            }
            Some(RecoveryRule {
                window,
                skip_middlewares: r.skip_middlewares.unwrap_or(true),
                max_replay_packets,
                max_replay_bytes,
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
            if let Some(rule) = self.event(&ctx, e.into_inner(), claims_ok, recovery.is_some()) {
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
            recovery,
            location,
        })
    }

    fn jwt(&mut self, ctx: &Ctx, mut raw: RawJwt) -> Option<JwtConfig> {
        let alg_span = raw.algorithm.span();
        let uses_jwks = raw.jwks_url.is_some() || raw.jwks_file.is_some();
        let algorithms = self.algorithms(ctx, raw.algorithm.clone(), uses_jwks)?;
        let algorithm = algorithms[0];
        let issuers = raw
            .issuer
            .take()
            .map_or_else(Vec::new, |v| self.string_list(ctx, "jwt.issuer", v));
        let audiences = raw
            .audience
            .take()
            .map_or_else(Vec::new, |v| self.string_list(ctx, "jwt.audience", v));
        let leeway_seconds = match raw.leeway_seconds.take() {
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
        if uses_jwks {
            let source = self.jwks(ctx, &raw, algorithms.clone())?;
            return Some(JwtConfig {
                algorithm,
                algorithms,
                key_source: KeySource::Jwks(source.settings().origin.clone()),
                key: None,
                jwks: Some(source),
                issuers,
                audiences,
                leeway_seconds,
            });
        }
        for (key, span) in jwks_only_keys(&raw) {
            self.ctx_problem(ctx, &span, format!("jwt.{key} needs jwks_url or jwks_file"));
        }
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
            algorithms,
            key_source,
            key,
            jwks: None,
            issuers,
            audiences,
            leeway_seconds,
        })
    }

    /// `jwt.algorithm`: one name, or (with a JWKS) a non-empty list of names of one kind (HMAC or
    /// public-key). `none` is not an algorithm here.
    fn algorithms(
        &mut self,
        ctx: &Ctx,
        raw: Spanned<toml::Value>,
        uses_jwks: bool,
    ) -> Option<Vec<Algorithm>> {
        let span = raw.span();
        let names: Vec<String> = match raw.into_inner() {
            toml::Value::String(s) => vec![s],
            toml::Value::Array(items) if uses_jwks => {
                let names: Option<Vec<String>> = items
                    .into_iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                match names {
                    Some(n) if !n.is_empty() => n,
                    _ => {
                        self.ctx_problem(
                            ctx,
                            &span,
                            "jwt.algorithm must be a name or a non-empty list of names",
                        );
                        return None;
                    }
                }
            }
            toml::Value::Array(_) => {
                self.ctx_problem(
                    ctx,
                    &span,
                    "a list of algorithms needs a key set (jwks_url or jwks_file); a single key \
                     has one algorithm",
                );
                return None;
            }
            _ => {
                self.ctx_problem(ctx, &span, "jwt.algorithm must be a string");
                return None;
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match name.parse::<Algorithm>() {
                Ok(a) if !out.contains(&a) => out.push(a),
                Ok(_) => {}
                Err(_) => {
                    self.ctx_problem(
                        ctx,
                        &span,
                        format!(
                            "jwt.algorithm {name:?} is not supported; use one of HS256, HS384, \
                             HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                        ),
                    );
                    return None;
                }
            }
        }
        if out.iter().any(|a| auth::uses_secret(*a)) && out.iter().any(|a| !auth::uses_secret(*a)) {
            self.ctx_problem(
                ctx,
                &span,
                "jwt.algorithm mixes HMAC (HS*) and public-key algorithms; use one kind",
            );
            return None;
        }
        Some(out)
    }

    /// The key set of `[namespace.jwt]` with `jwks_url` or `jwks_file`: the source, not loaded.
    fn jwks(
        &mut self,
        ctx: &Ctx,
        raw: &RawJwt,
        algorithms: Vec<Algorithm>,
    ) -> Option<Arc<jwks::Source>> {
        for (key, other) in [
            ("secret_env", raw.secret_env.as_ref()),
            ("public_key_file", raw.public_key_file.as_ref()),
        ] {
            if let Some(o) = other {
                self.ctx_problem(
                    ctx,
                    &o.span(),
                    format!("jwt.{key} cannot be used with a key set (jwks_url / jwks_file)"),
                );
            }
        }
        let allow_http = raw.jwks_allow_http.as_ref().is_some_and(|b| *b.get_ref());
        let origin = match (&raw.jwks_url, &raw.jwks_file) {
            (Some(_), Some(f)) => {
                self.ctx_problem(ctx, &f.span(), "give jwks_url or jwks_file, not both");
                None
            }
            (Some(url), None) => match check_jwks_url(url.get_ref(), allow_http) {
                Ok(uri) => Some(jwks::Origin::Url(uri)),
                Err(why) => {
                    self.ctx_problem(ctx, &url.span(), format!("jwt.jwks_url: {why}"));
                    None
                }
            },
            (None, Some(file)) => {
                let path = self.base_dir.join(file.get_ref());
                let read = std::fs::File::open(&path).and_then(|f| {
                    let mut buf = Vec::new();
                    f.take(jwks::MAX_JWKS_BYTES as u64 + 1)
                        .read_to_end(&mut buf)
                        .map(|_| buf)
                });
                let checked = match read {
                    Err(e) => Err(format!("cannot read jwks_file {}: {e}", path.display())),
                    Ok(b) if b.len() > jwks::MAX_JWKS_BYTES => Err(format!(
                        "jwks_file {}: larger than {} bytes",
                        path.display(),
                        jwks::MAX_JWKS_BYTES
                    )),
                    Ok(b) => jwks::parse_set(&b, &algorithms)
                        .map(drop)
                        .map_err(|e| format!("jwks_file {}: {e}", path.display())),
                };
                match checked {
                    Err(why) => {
                        self.ctx_problem(ctx, &file.span(), why);
                        None
                    }
                    Ok(()) => Some(jwks::Origin::File(path)),
                }
            }
            (None, None) => None,
        };
        if let (Some(a), Some(jwks::Origin::File(_))) = (&raw.jwks_allow_http, &origin) {
            self.ctx_problem(ctx, &a.span(), "jwt.jwks_allow_http is for jwks_url");
        }
        // The durations are checked even when the origin is not, to report every problem.
        let mut settings = jwks::Settings::new(jwks::Origin::File(PathBuf::new()), algorithms);
        for (name, value, field) in [
            (
                "jwks_refresh_ms",
                &raw.jwks_refresh_ms,
                &mut settings.refresh,
            ),
            (
                "jwks_refresh_min_ms",
                &raw.jwks_refresh_min_ms,
                &mut settings.min_refresh,
            ),
            (
                "jwks_refresh_max_ms",
                &raw.jwks_refresh_max_ms,
                &mut settings.max_refresh,
            ),
            (
                "jwks_unknown_kid_interval_ms",
                &raw.jwks_unknown_kid_interval_ms,
                &mut settings.unknown_kid_interval,
            ),
            (
                "jwks_timeout_ms",
                &raw.jwks_timeout_ms,
                &mut settings.timeout,
            ),
        ] {
            *field = self.positive_ms(&format!("{}: jwt.{name}", ctx.0), value.clone(), *field);
        }
        if settings.min_refresh > settings.max_refresh {
            let span = raw
                .jwks_refresh_min_ms
                .as_ref()
                .or(raw.jwks_refresh_max_ms.as_ref())
                .map(Spanned::span);
            if let Some(span) = span {
                self.ctx_problem(
                    ctx,
                    &span,
                    "jwt.jwks_refresh_min_ms must not exceed jwks_refresh_max_ms",
                );
            }
        }
        if let Some(t) = &raw.jwks_timeout_ms
            && *t.get_ref() > MAX_JWKS_TIMEOUT_MS
        {
            self.ctx_problem(
                ctx,
                &t.span(),
                format!("jwt.jwks_timeout_ms must be at most {MAX_JWKS_TIMEOUT_MS}"),
            );
        }
        if let Some(g) = &raw.jwks_grace_ms {
            if *g.get_ref() > MAX_JWKS_GRACE_MS {
                self.ctx_problem(
                    ctx,
                    &g.span(),
                    format!("jwt.jwks_grace_ms must be at most {MAX_JWKS_GRACE_MS}"),
                );
            } else {
                settings.grace = Duration::from_millis(*g.get_ref());
            }
        }
        settings.origin = origin?;
        Some(jwks::Source::new(settings))
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

    fn event(
        &mut self,
        ns_ctx: &Ctx,
        raw: RawEvent,
        claims_ok: bool,
        logged: bool,
    ) -> Option<EventRule> {
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
        let fields: [FieldUse<'_>; 11] = [
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
                "history_last",
                raw.history_last.as_ref().map(Spanned::span),
                &[Join],
            ),
            (
                "history_max_age_ms",
                raw.history_max_age_ms.as_ref().map(Spanned::span),
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
                let history = self.history(&ctx, raw.history_last, raw.history_max_age_ms, logged);
                Action::Join(JoinRule {
                    room: room?,
                    max_members,
                    announce,
                    history,
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

/// The `jwks_*` keys that mean nothing without a key set, with their spans.
fn jwks_only_keys(raw: &RawJwt) -> Vec<(&'static str, Range<usize>)> {
    let ms = [
        ("jwks_refresh_ms", &raw.jwks_refresh_ms),
        ("jwks_refresh_min_ms", &raw.jwks_refresh_min_ms),
        ("jwks_refresh_max_ms", &raw.jwks_refresh_max_ms),
        (
            "jwks_unknown_kid_interval_ms",
            &raw.jwks_unknown_kid_interval_ms,
        ),
        ("jwks_grace_ms", &raw.jwks_grace_ms),
        ("jwks_timeout_ms", &raw.jwks_timeout_ms),
    ];
    let mut out: Vec<_> = ms
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_ref()?.span())))
        .collect();
    if let Some(a) = &raw.jwks_allow_http {
        out.push(("jwks_allow_http", a.span()));
    }
    out
}

/// A `jwks_url`: absolute `https://host/…`, or `http://` to a loopback host (or any host with
/// `allow_http`); no credentials in it (they would end up in logs).
fn check_jwks_url(url: &str, allow_http: bool) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    let Some(authority) = uri.authority() else {
        return Err("needs a scheme and a host (https://host/path)".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (user@host)".to_owned());
    }
    let host = bare_host(authority.host());
    if host.is_empty() {
        return Err("needs a host".to_owned());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_http || is_loopback(host) => Ok(uri),
        Some("http") => Err(
            "http is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1); use https, \
             or set jwks_allow_http = true if the network path is trusted"
                .to_owned(),
        ),
        _ => Err("the scheme must be https (or http to a loopback host)".to_owned()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[::1]` → `::1` (the bracketed form is for URLs, not for binding).
pub fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// An IP address (IPv6 optionally in brackets) or a DNS host name: the rule of every listen
/// address, in the file and in the environment, of both tiers.
pub fn valid_host(host: &str) -> bool {
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
mod tests {
    use super::*;

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
