//! The TOML file as written: serde shapes that mirror its sections one to one. Unknown keys are
//! errors and every item keeps its span, so `validate` can point at `file:line:col`. Nothing
//! here is checked beyond its TOML type; the public model (in the parent module) never holds these.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use super::{AuthMode, Transport};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Option<RawServer>,
    pub(super) operator: Option<RawOperator>,
    #[serde(default)]
    pub(super) namespace: Vec<Spanned<RawNamespace>>,
    pub(super) limits: Option<RawLimits>,
    // The tables both tiers share: accepted here, read and validated by the binaries' settings
    // (`bin/src/settings.rs`), so one file configures a gateway and a broker.
    #[serde(rename = "nats")]
    _nats: Option<IgnoredAny>,
    #[serde(rename = "cluster")]
    _cluster: Option<IgnoredAny>,
    #[serde(rename = "broker")]
    _broker: Option<IgnoredAny>,
    #[serde(rename = "grpc")]
    _grpc: Option<IgnoredAny>,
    #[serde(rename = "api")]
    _api: Option<IgnoredAny>,
    #[serde(rename = "log")]
    _log: Option<IgnoredAny>,
    #[serde(rename = "admin_ui")]
    _admin_ui: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_name_bytes: Option<Spanned<u64>>,
    pub(super) max_attachments: Option<Spanned<u64>>,
    pub(super) max_attachment_bytes: Option<Spanned<u64>>,
    pub(super) binary_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_namespaces: Option<Spanned<u64>>,
    pub(super) connects_per_interval: Option<Spanned<u64>>,
    pub(super) connect_interval_ms: Option<Spanned<u64>>,
    pub(super) max_pending_acks: Option<Spanned<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<u16>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) ping_interval_ms: Option<Spanned<u64>>,
    pub(super) ping_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_payload_bytes: Option<Spanned<u64>>,
    pub(super) connect_timeout_ms: Option<Spanned<u64>>,
    pub(super) upgrade_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_connections_per_ip: Option<Spanned<u64>>,
    pub(super) outbound_queue_max_messages: Option<Spanned<u64>>,
    pub(super) cors: Option<RawCors>,
    pub(super) transports: Option<Spanned<Vec<Spanned<Transport>>>>,
    pub(super) serve_demo_page: Option<bool>,
    pub(super) client_js: Option<String>,
    pub(super) body_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_query_bytes: Option<Spanned<u64>>,
    pub(super) max_kept_header_bytes: Option<Spanned<u64>>,
    pub(super) per_message_deflate: Option<bool>,
    pub(super) per_message_deflate_threshold_bytes: Option<Spanned<u64>>,
    pub(super) http_compression: Option<bool>,
    pub(super) http_compression_threshold_bytes: Option<Spanned<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperator {
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allowed_origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) credentials: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNamespace {
    pub(super) name: Option<Spanned<String>>,
    pub(super) pattern: Option<Spanned<String>>,
    pub(super) auth: Option<Spanned<AuthMode>>,
    pub(super) jwt: Option<Spanned<RawJwt>>,
    pub(super) required_claims: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    pub(super) auto_join: Option<Vec<Spanned<String>>>,
    pub(super) max_rooms: Option<Spanned<u64>>,
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(super) presence: Option<Spanned<RawPresence>>,
    pub(super) recovery: Option<Spanned<RawRecovery>>,
    #[serde(default)]
    pub(super) event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPresence {
    pub(super) rooms: Option<bool>,
    pub(super) users: Option<bool>,
    pub(super) event: Option<Spanned<String>>,
    pub(super) to_clients: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecovery {
    pub(super) enabled: Option<bool>,
    pub(super) max_disconnection_ms: Option<Spanned<u64>>,
    pub(super) skip_middlewares: Option<bool>,
    pub(super) max_replay_packets: Option<Spanned<u64>>,
    pub(super) max_replay_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    /// A name, or (with a JWKS) a list of names.
    pub(super) algorithm: Spanned<toml::Value>,
    pub(super) secret_env: Option<Spanned<String>>,
    pub(super) public_key_file: Option<Spanned<String>>,
    pub(super) jwks_url: Option<Spanned<String>>,
    pub(super) jwks_file: Option<Spanned<String>>,
    pub(super) jwks_allow_http: Option<Spanned<bool>>,
    pub(super) jwks_refresh_ms: Option<Spanned<u64>>,
    pub(super) jwks_refresh_min_ms: Option<Spanned<u64>>,
    pub(super) jwks_refresh_max_ms: Option<Spanned<u64>>,
    pub(super) jwks_unknown_kid_interval_ms: Option<Spanned<u64>>,
    pub(super) jwks_grace_ms: Option<Spanned<u64>>,
    pub(super) jwks_timeout_ms: Option<Spanned<u64>>,
    pub(super) issuer: Option<Spanned<toml::Value>>,
    pub(super) audience: Option<Spanned<toml::Value>>,
    pub(super) leeway_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) per_second: Spanned<u64>,
    pub(super) burst: Option<Spanned<u64>>,
    pub(super) max_violations: Option<Spanned<u64>>,
    pub(super) violation_window_ms: Option<Spanned<u64>>,
    pub(super) error_event: Option<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ActionKind {
    Join,
    Leave,
    Relay,
    Broadcast,
    Echo,
    Forward,
}

impl ActionKind {
    pub(super) fn as_str(self) -> &'static str {
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
pub(super) struct RawEvent {
    pub(super) name: Spanned<String>,
    pub(super) action: Spanned<ActionKind>,
    pub(super) room_arg: Option<Spanned<toml::Value>>,
    pub(super) allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) max_members: Option<Spanned<u64>>,
    /// `join`: the room's last messages sent with the join's ack.
    pub(super) history_last: Option<Spanned<u64>>,
    /// `join`: only messages younger than this.
    pub(super) history_max_age_ms: Option<Spanned<u64>>,
    pub(super) announce: Option<Spanned<String>>,
    pub(super) member_only: Option<Spanned<bool>>,
    pub(super) include_sender: Option<Spanned<bool>>,
    pub(super) as_event: Option<Spanned<String>>,
    /// `forward`: the ack timeout.
    pub(super) timeout_ms: Option<Spanned<u64>>,
}
