//! API keys with scopes: who may call which Admin operation, on gRPC and on the HTTP API alike.
//!
//! A key has a name (for logs and metrics, never the secret), a set of [`Scope`]s and a secret of
//! at least [`MIN_SECRET_BYTES`]. A request presents `authorization: Bearer <secret>`;
//! [`ApiKeys::authorize`] finds its key by comparing SHA-256 digests of the presented and every
//! configured secret in constant time (every key is compared, so neither the matching key's
//! position nor a secret's length shows in the timing), then checks the operation's scope:
//! no or an unknown secret is `UNAUTHENTICATED`, a known key without the scope
//! `PERMISSION_DENIED`. Both are counted in [`API_AUTH_REFUSED`](crate::metrics::API_AUTH_REFUSED).
//!
//! | scope | operations |
//! |---|---|
//! | `read` | FetchSockets, StreamSockets, Rooms, RoomMembers, RoomHistory, Presence, UserSockets, Stats |
//! | `emit` | Broadcast, EmitToSocket |
//! | `admin` | every operation (also Disconnect, SocketsJoin, SocketsLeave, UpdateSocketData) |

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::Status;

/// Shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest key name.
pub const MAX_NAME_BYTES: usize = 64;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The queries.
    Read,
    /// Broadcast and EmitToSocket.
    Emit,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope, in the order of the docs.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Emit, Scope::Admin];

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Emit => "emit",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The scope an Admin operation (its RPC name, e.g. `Broadcast`) needs; `admin` for any
    /// name not listed (reflection, an unknown method).
    pub fn needed_by(method: &str) -> Scope {
        match method {
            "FetchSockets" | "StreamSockets" | "Rooms" | "RoomMembers" | "RoomHistory"
            | "Presence" | "UserSockets" | "Stats" => Scope::Read,
            "Broadcast" | "EmitToSocket" => Scope::Emit,
            _ => Scope::Admin,
        }
    }
}

/// One key: a name, its scopes and its secret.
#[derive(Clone)]
pub struct ApiKey {
    name: String,
    scopes: Vec<Scope>,
    digest: [u8; 32],
}

impl ApiKey {
    /// A key. The caller validated the name and the secret (see [`check_name`],
    /// [`check_secret`]).
    pub fn new(name: impl Into<String>, scopes: &[Scope], secret: &str) -> Self {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        Self {
            name: name.into(),
            scopes,
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may call an operation needing `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Its scopes.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks a key name: 1 to [`MAX_NAME_BYTES`] of `A-Z a-z 0-9 _ - .`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(())
        .ok_or_else(|| format!("a key name must be 1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 _ - ."))
}

/// Checks a secret: at least [`MIN_SECRET_BYTES`], no whitespace or control characters (it
/// travels in a header). The message never repeats it.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let ok = secret.len() >= MIN_SECRET_BYTES
        && !secret.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(()).ok_or_else(|| {
        format!(
            "a secret must be at least {MIN_SECRET_BYTES} bytes without spaces (e.g. `openssl \
             rand -hex 24`)"
        )
    })
}

/// Which API a request came on: the `api` label of the refusal metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// The gRPC Admin service.
    Grpc,
    /// The HTTP/JSON API.
    Http,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Http => "http",
        }
    }
}

/// The configured keys; cheap to clone.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[ApiKey]>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

impl ApiKeys {
    /// These keys.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys: keys.into() }
    }

    /// One admin-scoped key named `name` (the `[grpc] admin_token` of old).
    pub fn admin(name: &str, secret: &str) -> Self {
        Self::new(vec![ApiKey::new(name, &[Scope::Admin], secret)])
    }

    /// Whether no key is configured (the APIs are then off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys.
    pub fn keys(&self) -> &[ApiKey] {
        &self.keys
    }

    /// The key whose secret is `presented`, compared in constant time against every key.
    fn find(&self, presented: &[u8]) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for key in self.keys.iter() {
            // No early exit: every key is compared.
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }

    /// The key an `authorization` header value (`Bearer <secret>`) names. A refusal is counted
    /// and comes back as the status to answer (`UNAUTHENTICATED`).
    pub fn authenticate(&self, api: Api, authorization: Option<&[u8]>) -> Result<&ApiKey, Status> {
        let Some(value) = authorization else {
            return Err(refuse(
                api,
                "missing",
                Status::unauthenticated("missing authorization: Bearer <key>"),
            ));
        };
        let secret = value.strip_prefix(b"Bearer ").unwrap_or_default();
        match (!secret.is_empty()).then(|| self.find(secret)).flatten() {
            Some(key) => Ok(key),
            None => Err(refuse(
                api,
                "unknown_key",
                Status::unauthenticated("invalid bearer token"),
            )),
        }
    }

    /// The key an `authorization` header value names, if it may call `method` (an Admin RPC
    /// name; see [`Scope::needed_by`]): `UNAUTHENTICATED` without a known key,
    /// `PERMISSION_DENIED` without the scope (counted, and logged by key name).
    pub fn authorize(
        &self,
        api: Api,
        method: &str,
        authorization: Option<&[u8]>,
    ) -> Result<&ApiKey, Status> {
        let key = self.authenticate(api, authorization)?;
        let scope = Scope::needed_by(method);
        if key.allows(scope) {
            return Ok(key);
        }
        tracing::info!(
            key = key.name(),
            method,
            api = api.label(),
            "API key lacks the scope"
        );
        Err(refuse(
            api,
            "scope",
            Status::permission_denied(format!(
                "key {:?} lacks the {} scope that {method} needs",
                key.name(),
                scope.name()
            )),
        ))
    }
}

/// Counts a refusal.
fn refuse(api: Api, reason: &'static str, status: Status) -> Status {
    metrics::counter!(crate::metrics::API_AUTH_REFUSED, "api" => api.label(), "reason" => reason)
        .increment(1);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMIT: &str = "emit-secret-0123456789";
    const READ: &str = "read-secret-0123456789";
    const ADMIN: &str = "admin-secret-0123456789";

    fn keys() -> ApiKeys {
        ApiKeys::new(vec![
            ApiKey::new("emitter", &[Scope::Emit], EMIT),
            ApiKey::new("reader", &[Scope::Read], READ),
            ApiKey::new("ops", &[Scope::Admin], ADMIN),
        ])
    }

    fn check(keys: &ApiKeys, method: &str, header: Option<&str>) -> Result<String, tonic::Code> {
        keys.authorize(Api::Http, method, header.map(str::as_bytes))
            .map(|k| k.name().to_owned())
            .map_err(|s| s.code())
    }

    #[test]
    fn scopes_decide_what_a_key_may_call() {
        let keys = keys();
        let bearer = |s: &str| format!("Bearer {s}");
        use tonic::Code::PermissionDenied as Denied;
        for (method, emit, read) in [
            ("Broadcast", Ok("emitter"), Err(Denied)),
            ("EmitToSocket", Ok("emitter"), Err(Denied)),
            ("FetchSockets", Err(Denied), Ok("reader")),
            ("StreamSockets", Err(Denied), Ok("reader")),
            ("Stats", Err(Denied), Ok("reader")),
            ("Disconnect", Err(Denied), Err(Denied)),
            ("SocketsJoin", Err(Denied), Err(Denied)),
            ("SocketsLeave", Err(Denied), Err(Denied)),
            ("UpdateSocketData", Err(Denied), Err(Denied)),
            ("ServerReflectionInfo", Err(Denied), Err(Denied)),
        ] {
            let owned = |r: Result<&str, tonic::Code>| r.map(str::to_owned);
            assert_eq!(
                check(&keys, method, Some(&bearer(EMIT))),
                owned(emit),
                "{method}"
            );
            assert_eq!(
                check(&keys, method, Some(&bearer(READ))),
                owned(read),
                "{method}"
            );
            assert_eq!(
                check(&keys, method, Some(&bearer(ADMIN))),
                Ok("ops".to_owned()),
                "{method}"
            );
        }
    }

    #[test]
    fn unknown_or_missing_keys_are_unauthenticated() {
        let keys = keys();
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Bearer admin-secret-012345678"),
            Some("Bearer admin-secret-01234567890"),
            Some("admin-secret-0123456789"),
            Some("Basic admin-secret-0123456789"),
            Some("bearer admin-secret-0123456789"),
        ] {
            assert_eq!(
                check(&keys, "Stats", bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
        assert_eq!(
            check(&ApiKeys::default(), "Stats", Some("Bearer x")),
            Err(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn names_and_secrets_are_checked_and_secrets_never_shown() {
        assert!(check_name("ops-2024.a_b").is_ok());
        for bad in ["", "a b", "a:b", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_secret("0123456789abcdef").is_ok());
        for bad in ["0123456789abcde", "0123456789 abcdef", "0123456789abcdef\n"] {
            let err = check_secret(bad).unwrap_err();
            assert!(!err.contains(bad.trim()), "{err}");
        }
        let shown = format!("{:?}", keys());
        assert!(
            shown.contains("emitter") && !shown.contains(EMIT),
            "{shown}"
        );
    }
}
