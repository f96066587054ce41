//! JWT authentication of namespace connects: key loading, token extraction from the handshake,
//! and verification (signature, algorithm, `exp`, `nbf`, `iss`, `aud`, required claims).
//!
//! Verification is pure: the current time comes in as an argument (`now_unix`, seconds since
//! the Unix epoch), so expiry is tested without a clock. Signatures are checked by
//! `jsonwebtoken` (RustCrypto backend) against the configured algorithms only: a token whose
//! header names another algorithm is refused before any key is touched, which rules out
//! algorithm-confusion attacks (an HMAC token "signed" with a public RSA key). Time and audience
//! checks are done here, not by `jsonwebtoken`, because its checks read the system clock.
//!
//! The key is either one configured key (an HS secret or a PEM public key, one algorithm) or a
//! JWKS ([`crate::jwks::Source`], possibly several algorithms), where the token header's `kid`
//! picks the key and the key must also fit the header's algorithm.
//!
//! [`AuthError`]'s `Display` is the message the client sees in its `connect_error`: it never
//! contains key material or token contents. [`KeyError`] is for operators (start-up).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};
use serde_json::{Map, Value};

use crate::jwks;

pub use jsonwebtoken::Algorithm;

/// Longest token accepted; anything longer is refused as invalid without being parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Installs the RustCrypto provider as `jsonwebtoken`'s process-wide crypto provider.
///
/// `jsonwebtoken` picks its provider from crate features; if feature unification ever enables
/// both backends (or none), it panics on first use unless a provider was installed. Calling this
/// at start-up (and [`Verifier::new`] does) rules that out. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// Why a verification key could not be set up (an operator problem, reported at start-up).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An HMAC secret shorter than the hash output (RFC 7518 §3.2).
    #[error("the {algorithm:?} secret is {len} bytes long; it must be at least {min} bytes")]
    WeakSecret {
        /// The algorithm the secret is for.
        algorithm: Algorithm,
        /// The secret's length in bytes.
        len: usize,
        /// The minimum length for the algorithm.
        min: usize,
    },
    /// A shared secret was given for a public-key algorithm, or a public key for HMAC.
    #[error("{algorithm:?} needs {needs}")]
    WrongKeyKind {
        /// The configured algorithm.
        algorithm: Algorithm,
        /// What kind of key it needs.
        needs: &'static str,
    },
    /// A JWKS configured with no algorithm.
    #[error("no algorithm configured")]
    NoAlgorithm,
    /// The PEM text is not a public key usable with the algorithm.
    #[error("not a {algorithm:?} public key in PEM format (-----BEGIN PUBLIC KEY-----): {reason}")]
    BadPublicKey {
        /// The configured algorithm.
        algorithm: Algorithm,
        /// What the parser said (no key material).
        reason: String,
    },
}

/// Why a connect was refused. `Display` is the client-facing message (safe to send).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the CONNECT payload nor in an `Authorization: Bearer` header.
    #[error("missing token")]
    MissingToken,
    /// Not a well-formed JWT (shape, base64, JSON, claim types, size).
    #[error("invalid token")]
    Malformed,
    /// The signature does not verify with the configured key.
    #[error("invalid token")]
    BadSignature,
    /// The token header names another algorithm than the configured ones (or one its JWKS key
    /// does not serve).
    #[error("invalid token")]
    WrongAlgorithm,
    /// JWKS: the token's `kid` is not in the key set (or it has none and the set has several
    /// keys). An early refetch of the set was asked for.
    #[error("invalid token")]
    UnknownKey,
    /// JWKS: no key set has been loaded yet.
    #[error("token keys unavailable")]
    KeysUnavailable,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token has no `exp` claim; tokens that never expire are refused.
    #[error("token has no expiry")]
    NoExpiry,
    /// `iss` is missing or not one of the configured issuers.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences, or the token names an
    /// audience and none is configured (RFC 7519 §4.1.3).
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim is absent.
    #[error("claim {0} missing")]
    ClaimMissing(String),
    /// A required claim has a value that is not accepted.
    #[error("claim {0} not allowed")]
    ClaimNotAllowed(String),
}

impl AuthError {
    /// A short label from a closed set, for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NoExpiry => "no_expiry",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::ClaimMissing(_) => "claim_missing",
            Self::ClaimNotAllowed(_) => "claim_not_allowed",
        }
    }
}

/// The verified claims of a token. Attached to the socket as typed data by the policy layer
/// (`socket.get::<Claims>()`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// Claims from a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// A claim by name; a name that is not a top-level claim and contains `.` is looked up as a
    /// path into nested objects (`org.id` → `{"org":{"id":…}}`). Exact names win, so claims
    /// like `https://example.com/roles` work as they are.
    pub fn lookup(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(name) {
            return Some(v);
        }
        if !name.contains('.') {
            return None;
        }
        let mut parts = name.split('.');
        let first = parts.next()?;
        let mut cur = self.0.get(first)?;
        for part in parts {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur)
    }

    /// The `sub` claim, if any.
    pub fn subject(&self) -> Option<&Value> {
        self.0.get("sub")
    }

    /// The claims as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

impl Deref for Claims {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A claim that must be present with one of the accepted values.
///
/// A claim whose value is an array (e.g. `roles: ["admin", "dev"]`) passes if any element is
/// accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct RequiredClaim {
    /// Claim name (or dotted path, see [`Claims::lookup`]).
    pub name: String,
    /// Accepted values (JSON equality); never empty in a validated config.
    pub accepted: Vec<Value>,
}

impl RequiredClaim {
    /// Checks one claim.
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let value = match claims.lookup(&self.name) {
            None | Some(Value::Null) => return Err(AuthError::ClaimMissing(self.name.clone())),
            Some(v) => v,
        };
        let ok = match value {
            Value::Array(items) => items.iter().any(|i| self.accepts(i)),
            v => self.accepts(v),
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::ClaimNotAllowed(self.name.clone()))
        }
    }

    fn accepts(&self, v: &Value) -> bool {
        self.accepted.iter().any(|a| json_eq(a, v))
    }
}

/// JSON equality where `1` and `1.0` are equal.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// Minimum HMAC secret length for an algorithm: the hash output size (RFC 7518 §3.2).
pub fn min_secret_bytes(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Whether an algorithm verifies with a shared secret (HS*) rather than a public key.
pub fn uses_secret(algorithm: Algorithm) -> bool {
    algorithm.family() == AlgorithmFamily::Hmac
}

/// A verification key from an HMAC shared secret.
pub fn key_from_secret(algorithm: Algorithm, secret: &[u8]) -> Result<DecodingKey, KeyError> {
    if !uses_secret(algorithm) {
        return Err(KeyError::WrongKeyKind {
            algorithm,
            needs: "a public key file (public_key_file), not a shared secret",
        });
    }
    let min = min_secret_bytes(algorithm);
    if secret.len() < min {
        return Err(KeyError::WeakSecret {
            algorithm,
            len: secret.len(),
            min,
        });
    }
    Ok(DecodingKey::from_secret(secret))
}

/// A verification key from a PEM public key (`-----BEGIN PUBLIC KEY-----`, or
/// `-----BEGIN RSA PUBLIC KEY-----` for RSA). The key is fully parsed here, so a bad key is
/// reported at start-up, not at the first connect.
pub fn key_from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    let bad = |reason: String| KeyError::BadPublicKey { algorithm, reason };
    match pem_label(pem) {
        None => return Err(bad("no PEM block found".to_owned())),
        Some(label) if label.contains("PRIVATE") => {
            return Err(bad(format!(
                "this is a private key ({label}); give the public key \
                 (openssl pkey -in private.pem -pubout)"
            )));
        }
        Some("PUBLIC KEY") => {}
        Some("RSA PUBLIC KEY") if algorithm.family() == AlgorithmFamily::Rsa => {}
        Some(label) => return Err(bad(format!("unsupported PEM block {label}"))),
    }
    let key = match algorithm.family() {
        AlgorithmFamily::Hmac => {
            return Err(KeyError::WrongKeyKind {
                algorithm,
                needs: "a shared secret (secret_env), not a public key file",
            });
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| bad(describe_key_error(e.kind())))?;
    check_key(algorithm, &key).map_err(bad)?;
    Ok(key)
}

/// The label of the first PEM block (`PUBLIC KEY` for `-----BEGIN PUBLIC KEY-----`).
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = text[start..].find("-----")?;
    Some(&text[start..start + len])
}

/// Parses the key fully, the way verification will (the PEM decoder alone only extracts bytes,
/// and the RSA verifier parses lazily, at the first token).
pub(crate) fn check_key(algorithm: Algorithm, key: &DecodingKey) -> Result<(), String> {
    install_crypto_provider();
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    (provider.verifier_factory)(&algorithm, key).map_err(|e| describe_key_error(e.kind()))?;
    if let (AlgorithmFamily::Rsa, DecodingKeyKind::SecretOrDer(der)) =
        (algorithm.family(), key.kind())
    {
        (provider.key_utils.rsa_pub_components_from_public_key)(der)
            .map_err(|_| "not a valid RSA public key".to_owned())?;
    }
    Ok(())
}

fn describe_key_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidKeyFormat => "unrecognised PEM block or key type".to_owned(),
        ErrorKind::InvalidRsaKey(_) => "not a valid RSA public key".to_owned(),
        ErrorKind::InvalidEcdsaKey => "not a valid key for this curve".to_owned(),
        ErrorKind::InvalidEddsaKey => "not a valid Ed25519 public key".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Where a [`Verifier`]'s keys come from.
#[derive(Clone)]
enum Keys {
    /// One configured key.
    Fixed(DecodingKey),
    /// A key set, by `kid`.
    Jwks(Arc<jwks::Source>),
}

/// Verifies tokens for one namespace. Cheap to share (`Arc`), immutable.
#[derive(Clone)]
pub struct Verifier {
    /// The accepted algorithms, each with its `jsonwebtoken` validation (never empty).
    algorithms: Vec<(Algorithm, Validation)>,
    keys: Keys,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_seconds: u64,
    required_claims: Vec<RequiredClaim>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "algorithms",
                &self.algorithms.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("required_claims", &self.required_claims)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for one algorithm and key, with no issuer, audience or claim requirements and
    /// no leeway. Checks that the key fits the algorithm.
    pub fn new(algorithm: Algorithm, key: DecodingKey) -> Result<Self, KeyError> {
        let family_ok = key.family() == algorithm.family();
        if !family_ok {
            return Err(KeyError::WrongKeyKind {
                algorithm,
                needs: if uses_secret(algorithm) {
                    "a shared secret"
                } else {
                    "a public key of its own family"
                },
            });
        }
        check_key(algorithm, &key)
            .map_err(|reason| KeyError::BadPublicKey { algorithm, reason })?;
        Ok(Self::with_keys(vec![algorithm], Keys::Fixed(key)))
    }

    /// A verifier whose keys come from a JWKS, for its configured algorithms (each key serves
    /// only those that fit it; see [`jwks`]).
    pub fn with_jwks(source: Arc<jwks::Source>) -> Result<Self, KeyError> {
        let algorithms = source.settings().algorithms.clone();
        if algorithms.is_empty() {
            return Err(KeyError::NoAlgorithm);
        }
        Ok(Self::with_keys(algorithms, Keys::Jwks(source)))
    }

    fn with_keys(algorithms: Vec<Algorithm>, keys: Keys) -> Self {
        // Only the signature and the header's algorithm are left to jsonwebtoken: its time
        // checks read the system clock, and ours take `now` as an argument.
        let validation = |algorithm| {
            let mut v = Validation::new(algorithm);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.leeway = 0;
            (algorithm, v)
        };
        Self {
            algorithms: algorithms.into_iter().map(validation).collect(),
            keys,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_seconds: 0,
            required_claims: Vec::new(),
        }
    }

    /// Accepts only tokens whose `iss` is one of these (empty: `iss` is not checked).
    pub fn with_issuers(mut self, issuers: Vec<String>) -> Self {
        self.issuers = issuers;
        self
    }

    /// Accepts only tokens whose `aud` names one of these (empty: tokens naming any audience
    /// are refused, tokens without `aud` pass).
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Clock-skew allowance for `exp` and `nbf`.
    pub fn with_leeway_seconds(mut self, leeway: u64) -> Self {
        self.leeway_seconds = leeway;
        self
    }

    /// Claims every token must carry with an accepted value.
    pub fn with_required_claims(mut self, claims: Vec<RequiredClaim>) -> Self {
        self.required_claims = claims;
        self
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.algorithms.iter().map(|(a, _)| *a).collect()
    }

    /// The key set it reads, when its keys come from a JWKS.
    pub fn jwks(&self) -> Option<Arc<jwks::Source>> {
        match &self.keys {
            Keys::Fixed(_) => None,
            Keys::Jwks(source) => Some(Arc::clone(source)),
        }
    }

    /// Verifies a token at `now_unix` (seconds since the Unix epoch) and returns its claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let Some((_, validation)) = self.algorithms.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::WrongAlgorithm);
        };
        let jwks_key;
        let key = match &self.keys {
            Keys::Fixed(key) => key,
            Keys::Jwks(source) => {
                jwks_key = source.key_for(header.kid.as_deref(), header.alg)?;
                &*jwks_key
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                _ => AuthError::Malformed,
            },
        )?;
        let claims = Claims(data.claims);
        self.check_claims(&claims, now_unix)?;
        Ok(claims)
    }

    /// The checks after the signature: time, issuer, audience, required claims.
    fn check_claims(&self, claims: &Claims, now: u64) -> Result<(), AuthError> {
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(AuthError::NoExpiry),
            Some(v) => numeric_date(v)?,
        };
        // RFC 7519 §4.1.4: the current time must be before `exp`.
        if now >= exp.saturating_add(self.leeway_seconds) {
            return Err(AuthError::Expired);
        }
        if let Some(v) = claims.get("nbf").filter(|v| !v.is_null()) {
            let nbf = numeric_date(v)?;
            if now.saturating_add(self.leeway_seconds) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        if !self.issuers.is_empty() {
            let ok =
                matches!(claims.get("iss"), Some(Value::String(iss)) if self.issuers.contains(iss));
            if !ok {
                return Err(AuthError::WrongIssuer);
            }
        }
        self.check_audience(claims.get("aud"))?;
        for required in &self.required_claims {
            required.check(claims)?;
        }
        Ok(())
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), AuthError> {
        let named: Vec<&str> = match aud {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(item.as_str().ok_or(AuthError::Malformed)?);
                }
                out
            }
            Some(_) => return Err(AuthError::Malformed),
        };
        if self.audiences.is_empty() {
            // A token meant for specific audiences is not for us unless we are one of them.
            return if named.is_empty() {
                Ok(())
            } else {
                Err(AuthError::WrongAudience)
            };
        }
        if named.iter().any(|a| self.audiences.iter().any(|c| c == a)) {
            Ok(())
        } else {
            Err(AuthError::WrongAudience)
        }
    }
}

/// A NumericDate (seconds since the epoch; fractions allowed and floored).
fn numeric_date(v: &Value) -> Result<u64, AuthError> {
    let Value::Number(n) = v else {
        return Err(AuthError::Malformed);
    };
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        // Negative dates are long past.
        Some(f) if f.is_finite() && f < 0.0 => Ok(0),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f.is_finite() => Ok(if f >= u64::MAX as f64 {
            u64::MAX
        } else {
            f as u64
        }),
        _ => Err(AuthError::Malformed),
    }
}

/// A token's header, read without verifying anything (to pick its key); `None` for what is not a
/// bounded JWT.
pub fn peek_header(token: &str) -> Option<jsonwebtoken::Header> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()
}

/// The token a client presented: the CONNECT payload's `token` field (Socket.IO's
/// `auth: { token }`), else an `Authorization: Bearer …` header of the handshake.
///
/// `Ok(None)` means no token at all; a `token` field that is not a string is malformed. A
/// `Bearer ` prefix inside the `token` field is tolerated (a common client mistake).
pub fn extract_token<'a>(
    auth: &'a Value,
    authorization: Option<&'a str>,
) -> Result<Option<&'a str>, AuthError> {
    match auth.get("token") {
        Some(Value::String(t)) => {
            let t = strip_bearer(t).unwrap_or(t).trim();
            if !t.is_empty() {
                return Ok(Some(t));
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(AuthError::Malformed),
    }
    Ok(authorization
        .and_then(strip_bearer)
        .map(str::trim)
        .filter(|t| !t.is_empty()))
}

/// `Bearer xyz` (scheme case-insensitive, RFC 7235) → `xyz`.
fn strip_bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
    const NOW: u64 = 1_800_000_000;

    const RS_PRIVATE: &str = include_str!("../tests/keys/rs256-private.pem");
    const RS_PUBLIC: &str = include_str!("../tests/keys/rs256-public.pem");
    const RS_PUBLIC_PKCS1: &str = include_str!("../tests/keys/rs256-public-pkcs1.pem");
    const ES_PRIVATE: &str = include_str!("../tests/keys/es256-private.pem");
    const ES_PUBLIC: &str = include_str!("../tests/keys/es256-public.pem");
    const ES384_PUBLIC: &str = include_str!("../tests/keys/es384-public.pem");
    const ED_PRIVATE: &str = include_str!("../tests/keys/eddsa-private.pem");
    const ED_PUBLIC: &str = include_str!("../tests/keys/eddsa-public.pem");

    fn sign(alg: Algorithm, claims: &Value) -> String {
        let key = match alg.family() {
            AlgorithmFamily::Hmac => EncodingKey::from_secret(SECRET),
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap(),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap(),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        };
        install_crypto_provider();
        encode(&Header::new(alg), claims, &key).unwrap()
    }

    fn hs_verifier() -> Verifier {
        Verifier::new(
            Algorithm::HS256,
            key_from_secret(Algorithm::HS256, SECRET).unwrap(),
        )
        .unwrap()
    }

    fn valid() -> Value {
        json!({ "sub": "alice", "exp": NOW + 600, "role": "admin" })
    }

    #[test]
    fn time_checks_table() {
        // (name, claims, leeway, expected)
        let cases: Vec<(&str, Value, u64, Result<(), AuthError>)> = vec![
            ("valid", valid(), 0, Ok(())),
            ("no exp", json!({"sub": "a"}), 0, Err(AuthError::NoExpiry)),
            (
                "null exp",
                json!({"exp": null}),
                0,
                Err(AuthError::NoExpiry),
            ),
            (
                "expired",
                json!({"exp": NOW - 1}),
                0,
                Err(AuthError::Expired),
            ),
            (
                "expires now",
                json!({"exp": NOW}),
                0,
                Err(AuthError::Expired),
            ),
            ("expired within leeway", json!({"exp": NOW - 1}), 30, Ok(())),
            (
                "expired beyond leeway",
                json!({"exp": NOW - 30}),
                30,
                Err(AuthError::Expired),
            ),
            (
                "fractional exp",
                json!({"exp": (NOW as f64) + 0.5}),
                0,
                Err(AuthError::Expired),
            ),
            (
                "negative exp",
                json!({"exp": -5}),
                0,
                Err(AuthError::Expired),
            ),
            (
                "string exp",
                json!({"exp": "soon"}),
                0,
                Err(AuthError::Malformed),
            ),
            (
                "nbf past",
                json!({"exp": NOW + 10, "nbf": NOW - 10}),
                0,
                Ok(()),
            ),
            ("nbf now", json!({"exp": NOW + 10, "nbf": NOW}), 0, Ok(())),
            (
                "nbf future",
                json!({"exp": NOW + 10, "nbf": NOW + 5}),
                0,
                Err(AuthError::NotYetValid),
            ),
            (
                "nbf within leeway",
                json!({"exp": NOW + 10, "nbf": NOW + 5}),
                5,
                Ok(()),
            ),
            (
                "bad nbf",
                json!({"exp": NOW + 10, "nbf": true}),
                0,
                Err(AuthError::Malformed),
            ),
            ("huge exp", json!({"exp": 1e300}), 0, Ok(())),
        ];
        for (name, claims, leeway, want) in cases {
            let v = hs_verifier().with_leeway_seconds(leeway);
            let got = v.verify(&sign(Algorithm::HS256, &claims), NOW).map(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn issuer_audience_table() {
        let iss = || vec!["https://auth.example".to_owned()];
        let aud = || vec!["switchboard".to_owned(), "chat".to_owned()];
        // (name, issuers, audiences, extra claims, expected)
        let cases: Vec<(&str, Vec<String>, Vec<String>, Value, Result<(), AuthError>)> = vec![
            ("no requirements", vec![], vec![], json!({}), Ok(())),
            (
                "issuer ok",
                iss(),
                vec![],
                json!({"iss": "https://auth.example"}),
                Ok(()),
            ),
            (
                "issuer wrong",
                iss(),
                vec![],
                json!({"iss": "https://evil"}),
                Err(AuthError::WrongIssuer),
            ),
            (
                "issuer missing",
                iss(),
                vec![],
                json!({}),
                Err(AuthError::WrongIssuer),
            ),
            (
                "issuer not a string",
                iss(),
                vec![],
                json!({"iss": 1}),
                Err(AuthError::WrongIssuer),
            ),
            (
                "aud string ok",
                vec![],
                aud(),
                json!({"aud": "chat"}),
                Ok(()),
            ),
            (
                "aud array ok",
                vec![],
                aud(),
                json!({"aud": ["x", "switchboard"]}),
                Ok(()),
            ),
            (
                "aud wrong",
                vec![],
                aud(),
                json!({"aud": "other"}),
                Err(AuthError::WrongAudience),
            ),
            (
                "aud missing",
                vec![],
                aud(),
                json!({}),
                Err(AuthError::WrongAudience),
            ),
            (
                "aud bad type",
                vec![],
                aud(),
                json!({"aud": 5}),
                Err(AuthError::Malformed),
            ),
            (
                "aud not configured but named",
                vec![],
                vec![],
                json!({"aud": "x"}),
                Err(AuthError::WrongAudience),
            ),
            (
                "aud not configured, empty list",
                vec![],
                vec![],
                json!({"aud": []}),
                Ok(()),
            ),
        ];
        for (name, issuers, audiences, extra, want) in cases {
            let mut claims = valid();
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            let v = hs_verifier()
                .with_issuers(issuers)
                .with_audiences(audiences);
            let got = v.verify(&sign(Algorithm::HS256, &claims), NOW).map(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn required_claims_table() {
        let role = |accepted: Vec<Value>| RequiredClaim {
            name: "role".into(),
            accepted,
        };
        // (name, requirement, claims, expected)
        let cases: Vec<(&str, RequiredClaim, Value, Result<(), AuthError>)> = vec![
            (
                "exact",
                role(vec![json!("admin")]),
                json!({"role": "admin"}),
                Ok(()),
            ),
            (
                "one of",
                role(vec![json!("ops"), json!("admin")]),
                json!({"role": "admin"}),
                Ok(()),
            ),
            (
                "not allowed",
                role(vec![json!("admin")]),
                json!({"role": "user"}),
                Err(AuthError::ClaimNotAllowed("role".into())),
            ),
            (
                "missing",
                role(vec![json!("admin")]),
                json!({}),
                Err(AuthError::ClaimMissing("role".into())),
            ),
            (
                "null is missing",
                role(vec![json!("admin")]),
                json!({"role": null}),
                Err(AuthError::ClaimMissing("role".into())),
            ),
            (
                "array claim contains",
                role(vec![json!("admin")]),
                json!({"role": ["dev", "admin"]}),
                Ok(()),
            ),
            (
                "array claim lacks",
                role(vec![json!("admin")]),
                json!({"role": ["dev"]}),
                Err(AuthError::ClaimNotAllowed("role".into())),
            ),
            ("number", role(vec![json!(2)]), json!({"role": 2.0}), Ok(())),
            (
                "bool",
                role(vec![json!(true)]),
                json!({"role": true}),
                Ok(()),
            ),
            (
                "type mismatch",
                role(vec![json!("1")]),
                json!({"role": 1}),
                Err(AuthError::ClaimNotAllowed("role".into())),
            ),
            (
                "nested path",
                RequiredClaim {
                    name: "org.plan".into(),
                    accepted: vec![json!("pro")],
                },
                json!({"org": {"plan": "pro"}}),
                Ok(()),
            ),
            (
                "dotted name wins",
                RequiredClaim {
                    name: "https://x.io/tier".into(),
                    accepted: vec![json!("gold")],
                },
                json!({"https://x.io/tier": "gold"}),
                Ok(()),
            ),
        ];
        for (name, req, claims, want) in cases {
            assert_eq!(
                req.check(&Claims(claims.as_object().unwrap().clone())),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn required_claims_are_checked_by_verify() {
        let v = hs_verifier().with_required_claims(vec![RequiredClaim {
            name: "role".into(),
            accepted: vec![json!("admin")],
        }]);
        let ok = sign(Algorithm::HS256, &valid());
        assert_eq!(
            v.verify(&ok, NOW).unwrap().lookup("sub"),
            Some(&json!("alice"))
        );
        let user = sign(Algorithm::HS256, &json!({"exp": NOW + 5, "role": "user"}));
        let err = v.verify(&user, NOW).unwrap_err();
        assert_eq!(err.to_string(), "claim role not allowed");
    }

    #[test]
    fn signature_and_shape_table() {
        let good = sign(Algorithm::HS256, &valid());
        let other_secret = encode(
            &Header::new(Algorithm::HS256),
            &valid(),
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .unwrap();
        let hs384 = sign(Algorithm::HS384, &valid());
        let mut tampered = good.clone();
        let at = good.rfind('.').unwrap() + 1;
        let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, flipped);
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let swapped_payload = format!(
            "{head}.{}.{sig}",
            sign(
                Algorithm::HS256,
                &json!({"sub": "mallory", "exp": NOW + 600})
            )
            .split('.')
            .nth(1)
            .unwrap()
        );
        // An unsigned token: {"alg":"none","typ":"JWT"}.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            good.split('.').nth(1).unwrap()
        );
        let array_payload = {
            // header {"alg":"HS256"} with payload [1] and a garbage signature
            "eyJhbGciOiJIUzI1NiJ9.WzFd.AAAA".to_owned()
        };
        let cases: Vec<(&str, String, Result<(), AuthError>)> = vec![
            ("good", good.clone(), Ok(())),
            ("other secret", other_secret, Err(AuthError::BadSignature)),
            ("other algorithm", hs384, Err(AuthError::WrongAlgorithm)),
            ("tampered signature", tampered, Err(AuthError::BadSignature)),
            (
                "swapped payload",
                swapped_payload,
                Err(AuthError::BadSignature),
            ),
            ("alg none", none, Err(AuthError::Malformed)),
            ("garbage", "not a token".into(), Err(AuthError::Malformed)),
            ("empty", String::new(), Err(AuthError::Malformed)),
            ("two parts", "a.b".into(), Err(AuthError::Malformed)),
            ("array payload", array_payload, Err(AuthError::BadSignature)),
            (
                "too long",
                "a".repeat(MAX_TOKEN_BYTES + 1),
                Err(AuthError::Malformed),
            ),
        ];
        let v = hs_verifier();
        for (name, token, want) in cases {
            assert_eq!(v.verify(&token, NOW).map(|_| ()), want, "{name}");
        }
    }

    #[test]
    fn public_key_algorithms_table() {
        let cases: &[(Algorithm, &str)] = &[
            (Algorithm::RS256, RS_PUBLIC),
            (Algorithm::RS256, RS_PUBLIC_PKCS1),
            (Algorithm::RS384, RS_PUBLIC),
            (Algorithm::PS256, RS_PUBLIC),
            (Algorithm::ES256, ES_PUBLIC),
            (Algorithm::EdDSA, ED_PUBLIC),
        ];
        for &(alg, pem) in cases {
            let key = key_from_pem(alg, pem.as_bytes()).unwrap();
            let v = Verifier::new(alg, key).unwrap();
            let claims = v.verify(&sign(alg, &valid()), NOW).unwrap();
            assert_eq!(claims.subject(), Some(&json!("alice")), "{alg:?}");
            // An HS256 token must not pass a public-key verifier (algorithm confusion).
            assert_eq!(
                v.verify(&sign(Algorithm::HS256, &valid()), NOW),
                Err(AuthError::WrongAlgorithm),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn hmac_token_signed_with_public_key_bytes_is_refused() {
        // The classic confusion attack: HS256 with the RSA public key as the secret.
        let v = Verifier::new(
            Algorithm::RS256,
            key_from_pem(Algorithm::RS256, RS_PUBLIC.as_bytes()).unwrap(),
        )
        .unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &valid(),
            &EncodingKey::from_secret(RS_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&forged, NOW), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn key_loading_table() {
        let cases: Vec<(&str, Algorithm, &[u8], bool)> = vec![
            ("rsa public", Algorithm::RS256, RS_PUBLIC.as_bytes(), true),
            ("ec public", Algorithm::ES256, ES_PUBLIC.as_bytes(), true),
            ("ed public", Algorithm::EdDSA, ED_PUBLIC.as_bytes(), true),
            (
                "rsa private is not a public key",
                Algorithm::RS256,
                RS_PRIVATE.as_bytes(),
                false,
            ),
            (
                "ec private is not a public key",
                Algorithm::ES256,
                ES_PRIVATE.as_bytes(),
                false,
            ),
            (
                "p384 key for ES256",
                Algorithm::ES256,
                ES384_PUBLIC.as_bytes(),
                false,
            ),
            (
                "pkcs1 rsa public",
                Algorithm::PS256,
                RS_PUBLIC_PKCS1.as_bytes(),
                true,
            ),
            (
                "pkcs1 label for EC",
                Algorithm::ES256,
                RS_PUBLIC_PKCS1.as_bytes(),
                false,
            ),
            (
                "ec key for RS256",
                Algorithm::RS256,
                ES_PUBLIC.as_bytes(),
                false,
            ),
            (
                "rsa key for ES256",
                Algorithm::ES256,
                RS_PUBLIC.as_bytes(),
                false,
            ),
            ("garbage", Algorithm::RS256, b"hello", false),
            ("empty", Algorithm::ES256, b"", false),
            (
                "hmac with pem",
                Algorithm::HS256,
                RS_PUBLIC.as_bytes(),
                false,
            ),
        ];
        for (name, alg, pem, ok) in cases {
            let got = key_from_pem(alg, pem);
            assert_eq!(got.is_ok(), ok, "{name}: {:?}", got.err());
            if let Err(e) = got {
                // No key material in messages.
                let msg = e.to_string();
                assert!(!msg.contains("MII"), "{name}: {msg}");
            }
        }
    }

    #[test]
    fn secret_table() {
        let cases: Vec<(Algorithm, usize, bool)> = vec![
            (Algorithm::HS256, 32, true),
            (Algorithm::HS256, 31, false),
            (Algorithm::HS384, 47, false),
            (Algorithm::HS384, 48, true),
            (Algorithm::HS512, 63, false),
            (Algorithm::HS512, 64, true),
            (Algorithm::RS256, 64, false),
        ];
        for (alg, len, ok) in cases {
            assert_eq!(
                key_from_secret(alg, &vec![b'x'; len]).is_ok(),
                ok,
                "{alg:?} {len}"
            );
        }
        let err = key_from_secret(Algorithm::HS256, b"short").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the HS256 secret is 5 bytes long; it must be at least 32 bytes"
        );
    }

    #[test]
    fn verifier_rejects_mismatched_key_family() {
        let secret = key_from_secret(Algorithm::HS256, SECRET).unwrap();
        assert!(Verifier::new(Algorithm::RS256, secret).is_err());
        let rsa = key_from_pem(Algorithm::RS256, RS_PUBLIC.as_bytes()).unwrap();
        assert!(Verifier::new(Algorithm::HS256, rsa).is_err());
    }

    #[test]
    fn extract_token_table() {
        // (name, auth payload, authorization header, expected)
        let cases: Vec<(&str, Value, Option<&str>, Result<Option<&str>, AuthError>)> = vec![
            ("auth token", json!({"token": "abc"}), None, Ok(Some("abc"))),
            (
                "auth wins over header",
                json!({"token": "abc"}),
                Some("Bearer def"),
                Ok(Some("abc")),
            ),
            ("header", json!({}), Some("Bearer def"), Ok(Some("def"))),
            (
                "header scheme case",
                json!({}),
                Some("bearer  def "),
                Ok(Some("def")),
            ),
            ("other scheme", json!({}), Some("Basic dXNlcg=="), Ok(None)),
            ("bare header value", json!({}), Some("def"), Ok(None)),
            ("empty bearer", json!({}), Some("Bearer "), Ok(None)),
            ("nothing", json!({}), None, Ok(None)),
            ("no payload object", Value::Null, None, Ok(None)),
            ("string payload", json!("abc"), None, Ok(None)),
            (
                "empty token falls back",
                json!({"token": ""}),
                Some("Bearer def"),
                Ok(Some("def")),
            ),
            ("null token", json!({"token": null}), None, Ok(None)),
            (
                "token not a string",
                json!({"token": 5}),
                Some("Bearer def"),
                Err(AuthError::Malformed),
            ),
            (
                "bearer inside token",
                json!({"token": "Bearer abc"}),
                None,
                Ok(Some("abc")),
            ),
        ];
        for (name, auth, header, want) in cases {
            assert_eq!(extract_token(&auth, header), want, "{name}");
        }
    }

    #[test]
    fn client_messages_do_not_leak() {
        let cases: Vec<(AuthError, &str, &str)> = vec![
            (AuthError::MissingToken, "missing token", "missing_token"),
            (AuthError::Malformed, "invalid token", "malformed"),
            (AuthError::BadSignature, "invalid token", "bad_signature"),
            (
                AuthError::WrongAlgorithm,
                "invalid token",
                "wrong_algorithm",
            ),
            (AuthError::Expired, "token expired", "expired"),
            (
                AuthError::NotYetValid,
                "token not yet valid",
                "not_yet_valid",
            ),
            (AuthError::NoExpiry, "token has no expiry", "no_expiry"),
            (
                AuthError::WrongIssuer,
                "token issuer not accepted",
                "wrong_issuer",
            ),
            (
                AuthError::WrongAudience,
                "token audience not accepted",
                "wrong_audience",
            ),
            (
                AuthError::ClaimMissing("role".into()),
                "claim role missing",
                "claim_missing",
            ),
            (
                AuthError::ClaimNotAllowed("role".into()),
                "claim role not allowed",
                "claim_not_allowed",
            ),
        ];
        for (err, msg, label) in cases {
            assert_eq!(err.to_string(), msg);
            assert_eq!(err.label(), label);
        }
    }

    #[test]
    fn claims_lookup_table() {
        let c = Claims(
            json!({"sub": "u1", "org": {"id": 7, "team": {"name": "x"}}, "a.b": 1})
                .as_object()
                .unwrap()
                .clone(),
        );
        let cases: Vec<(&str, Option<Value>)> = vec![
            ("sub", Some(json!("u1"))),
            ("org.id", Some(json!(7))),
            ("org.team.name", Some(json!("x"))),
            ("a.b", Some(json!(1))),
            ("org.missing", None),
            ("sub.x", None),
            ("nope", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(c.lookup(path).cloned(), want, "{path}");
        }
    }
}
