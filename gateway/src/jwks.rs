//! JSON Web Key Sets: verification keys fetched from an identity provider (`jwt.jwks_url`) or
//! read from a local file (`jwt.jwks_file`), kept fresh in the background, selected by the token
//! header's `kid`.
//!
//! What it owns: one [`Source`] per configured set (the last good keys, their retirement times)
//! and the refresh task that feeds it ([`start`]). Verification ([`Source::key_for`]) only reads
//! memory: it never waits on the network. A token naming an unknown `kid` asks the refresh task
//! for an early fetch, at most one per [`Settings::unknown_kid_interval`]. Before verifying, the
//! connect waits for that fetch ([`Source::wait_for_key`], run by the namespace's
//! `prepare_connect` step, off the connection's read path), so the first token signed with a
//! newly published key is accepted; tokens that arrive while the fetch runs wait for the same
//! one; an unknown `kid` after it is refused without waiting.
//!
//! Invariants:
//! - Key material is parsed by `jsonwebtoken` (`Jwk`, `DecodingKey::from_jwk`); this module only
//!   splits the set's `keys` array so that one unsupported key does not void the others.
//! - The algorithm is never taken from the token alone: a key serves only the configured
//!   algorithms that fit its type, curve, and `alg` member; keys whose `use` is not `sig`, or
//!   whose `key_ops` lacks `verify`, are skipped; `oct` (HMAC) keys only when an HS algorithm is
//!   configured.
//! - A fetch is bounded (time, [`MAX_JWKS_BYTES`], [`MAX_JWKS_KEYS`]). A failed fetch keeps the
//!   last good set, is logged and counted ([`crate::metrics::JWKS_FETCHES`]).
//! - A key that leaves the set keeps verifying for [`Settings::grace`], then is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, AuthError};

/// Largest JWKS document accepted (an identity provider's set is a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted from a key set (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (the verifier's own limit).
pub const MAX_RSA_BITS: usize = 4096;
/// Most keys one set may hold; a larger set is refused as a whole.
pub const MAX_JWKS_KEYS: usize = 64;
/// Refresh interval when the response has no `Cache-Control: max-age` (and for `jwks_file`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Lower bound on a refresh interval taken from `max-age`; also the retry delay after a failure.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Upper bound on a refresh interval taken from `max-age`.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// Least time between two fetches asked for by tokens with an unknown `kid`.
pub const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// Connect and total time allowed for one fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a key that left the set keeps verifying.
pub const DEFAULT_GRACE: Duration = Duration::ZERO;

/// Where a set comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An `http` or `https` URL (validated by the config: `http` only to loopback unless
    /// allowed).
    Url(http::Uri),
    /// A local JSON file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(u) => write!(f, "{u}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How one set is fetched and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where the set comes from.
    pub origin: Origin,
    /// The algorithms tokens may use (never empty).
    pub algorithms: Vec<Algorithm>,
    /// Refresh interval without `max-age`.
    pub refresh: Duration,
    /// Bounds on an interval taken from `max-age` (`min_refresh` is also the retry delay).
    pub min_refresh: Duration,
    /// See `min_refresh`.
    pub max_refresh: Duration,
    /// Least time between two unknown-`kid` fetches.
    pub unknown_kid_interval: Duration,
    /// How long a retired key keeps verifying.
    pub grace: Duration,
    /// Connect and total time of one fetch.
    pub timeout: Duration,
}

impl Settings {
    /// Settings with the defaults for everything but the origin and algorithms.
    pub fn new(origin: Origin, algorithms: Vec<Algorithm>) -> Self {
        Self {
            origin,
            algorithms,
            refresh: DEFAULT_REFRESH,
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
            unknown_kid_interval: DEFAULT_UNKNOWN_KID_INTERVAL,
            grace: DEFAULT_GRACE,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// The delay before the next scheduled fetch after a good one: the response's `max-age`
    /// within `[min_refresh, max_refresh]`, else `refresh`.
    pub fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        match max_age {
            Some(age) => age.clamp(self.min_refresh, self.max_refresh.max(self.min_refresh)),
            None => self.refresh,
        }
    }
}

/// `max-age` of a `Cache-Control` value. `no-store` and `no-cache` count as 0 (the caller
/// raises it to its minimum); a malformed or absent `max-age` is `None`.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive
            .split_once('=')
            .map_or((directive, None), |(n, v)| (n.trim(), Some(v.trim())));
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // RFC 9111 §1.2.2: delta-seconds; a value too large for us means "a long time".
            let digits = value.map(|v| v.trim_matches('"'))?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            found = Some(Duration::from_secs(
                digits.parse::<u64>().unwrap_or(u64::MAX),
            ));
        }
    }
    found
}

/// Why a fetch gave no new set (the last good set stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Connecting, TLS, or reading the response failed.
    #[error("network error: {0}")]
    Network(String),
    /// The fetch took longer than the timeout.
    #[error("timed out")]
    Timeout,
    /// The server answered with another status than 200 (redirects are not followed).
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is larger than [`MAX_JWKS_BYTES`].
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The body is not a JWKS JSON document.
    #[error("not a JWKS document: {0}")]
    BadJson(String),
    /// The set has more than [`MAX_JWKS_KEYS`] keys.
    #[error("{0} keys, more than {MAX_JWKS_KEYS}")]
    TooManyKeys(usize),
    /// No key of the set is usable with the configured algorithms.
    #[error("no key usable with the configured algorithms ({skipped} skipped)")]
    NoUsableKey {
        /// Keys present but skipped.
        skipped: usize,
    },
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    File(String),
}

impl FetchError {
    /// A label from a closed set, for [`crate::metrics::JWKS_FETCHES`].
    pub fn label(&self) -> &'static str {
        match self {
            Self::Network(_) => "network",
            Self::Timeout => "timeout",
            Self::Status(_) => "status",
            Self::TooLarge => "too_large",
            Self::BadJson(_) => "bad_json",
            Self::TooManyKeys(_) => "too_many_keys",
            Self::NoUsableKey { .. } => "no_usable_key",
            Self::File(_) => "file",
        }
    }
}

/// One usable key of a set.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    /// The configured algorithms this key serves (never empty).
    algorithms: Vec<Algorithm>,
    key: Arc<DecodingKey>,
    /// When the key left the set.
    retired_at: Option<Instant>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The configured algorithms this key serves (never empty).
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document for the configured algorithms. Keys that do not parse or
/// fit are skipped (and counted in the error if none is left); a later duplicate `kid` is skipped.
pub fn parse_set(body: &[u8], algorithms: &[Algorithm]) -> Result<Vec<Key>, FetchError> {
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| FetchError::BadJson(e.to_string()))?;
    if raw.keys.len() > MAX_JWKS_KEYS {
        return Err(FetchError::TooManyKeys(raw.keys.len()));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(raw.keys.len());
    let mut skipped = 0;
    for value in raw.keys {
        let usable = serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| usable_key(&jwk, algorithms));
        match usable {
            Some(k) if !keys.iter().any(|o| o.kid == k.kid) => keys.push(k),
            _ => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey { skipped });
    }
    Ok(keys)
}

/// A JWK as a key for the configured algorithms it fits, or `None`.
fn usable_key(jwk: &Jwk, algorithms: &[Algorithm]) -> Option<Key> {
    let common = &jwk.common;
    if matches!(&common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(&common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    // An `alg` member we do not know (or an encryption algorithm) fits nothing.
    let jwk_alg = match common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let fits = |alg: &Algorithm| {
        jwk_alg.is_none_or(|j| j == *alg)
            && key.family() == alg.family()
            && curve_fits(&jwk.algorithm, *alg)
            && strength_fits(&key, *alg)
            && auth::check_key(*alg, &key).is_ok()
    };
    let fitting: Vec<Algorithm> = algorithms.iter().copied().filter(fits).collect();
    if fitting.is_empty() {
        return None;
    }
    Some(Key {
        kid: common.key_id.clone(),
        algorithms: fitting,
        key: Arc::new(key),
        retired_at: None,
    })
}

fn curve_fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    match params {
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        _ => true,
    }
}

/// An `oct` key is as strong as a configured secret must be (RFC 7518 §3.2); an RSA key has a
/// modulus of [`MIN_RSA_BITS`] to [`MAX_RSA_BITS`] and an odd exponent above 1 (checked here
/// because `jsonwebtoken` builds RSA keys from components lazily, at the first signature).
fn strength_fits(key: &DecodingKey, alg: Algorithm) -> bool {
    match key.kind() {
        jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
            let bits = |b: &[u8]| {
                let b = &b[b.iter().take_while(|x| **x == 0).count()..];
                b.first().map_or(0, |top| {
                    (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
                })
            };
            (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits(n))
                && bits(e) > 1
                && bits(e) <= 64
                && e.last().is_some_and(|l| l & 1 == 1)
        }
        jsonwebtoken::DecodingKeyKind::SecretOrDer(bytes)
            if alg.family() == AlgorithmFamily::Hmac =>
        {
            bytes.len() >= auth::min_secret_bytes(alg)
        }
        _ => true,
    }
}

#[derive(Debug, Default)]
struct State {
    /// Current keys first, then retired ones still in their grace.
    keys: Vec<Key>,
    loaded: bool,
    /// The last fetch asked for by an unknown `kid`.
    last_unknown_kid: Option<Instant>,
    /// How many fetches had finished when it was asked for: it is still to come while that many
    /// have.
    asked_after: u64,
}

/// One JWKS: the keys verification reads, and the handle its refresh task feeds.
pub struct Source {
    settings: Settings,
    state: Mutex<State>,
    /// Wakes the refresh task for an unknown-`kid` fetch (one stored permit: concurrent asks
    /// share one fetch).
    wake: Notify,
    /// Fetch attempts finished (good or not): the start waits for the first, connects with an
    /// unknown `kid` for the one they asked for.
    finished: watch::Sender<u64>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("origin", &self.settings.origin)
            .field("loaded", &self.state.lock().loaded)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// An empty source (no keys until the first good fetch).
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            finished: watch::Sender::new(0),
        })
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Fetch attempts finished so far (good or failed).
    pub fn attempts(&self) -> u64 {
        *self.finished.borrow()
    }

    /// Whether a set has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.state.lock().loaded
    }

    /// The key for a token's header (`kid`, `alg`; `alg` is one of the configured algorithms),
    /// now. Never waits: an unknown `kid` asks the refresh task for a fetch and is refused (a
    /// connect waits for that fetch first: [`Self::wait_for_key`]).
    pub fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        self.key_at(kid, alg, Instant::now())
    }

    fn key_at(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: Instant,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        let mut st = self.state.lock();
        if !st.loaded {
            self.ask_fetch(&mut st, now);
            return Err(AuthError::KeysUnavailable);
        }
        let live = |k: &&Key| k.retired_at.is_none_or(|at| now < at + self.settings.grace);
        let found = match kid {
            Some(kid) => st
                .keys
                .iter()
                .filter(live)
                .find(|k| k.kid.as_deref() == Some(kid)),
            // Without `kid`, only a set with exactly one current key is unambiguous.
            None => {
                let mut current = st.keys.iter().filter(|k| k.retired_at.is_none());
                match (current.next(), current.next()) {
                    (Some(k), None) => Some(k),
                    _ => return Err(AuthError::UnknownKey),
                }
            }
        };
        match found {
            Some(k) if k.algorithms.contains(&alg) => Ok(Arc::clone(&k.key)),
            Some(_) => Err(AuthError::WrongAlgorithm),
            None => {
                if kid.is_some() {
                    self.ask_fetch(&mut st, now);
                }
                Err(AuthError::UnknownKey)
            }
        }
    }

    /// Wakes the refresh task unless an unknown-`kid` fetch was asked for too recently. Returns
    /// the number of finished fetches the asked-for one will exceed while it is still to come
    /// (asked now or earlier), `None` when it is done and the limit forbids another.
    fn ask_fetch(&self, st: &mut State, now: Instant) -> Option<u64> {
        let finished = self.attempts();
        let recent = st
            .last_unknown_kid
            .is_some_and(|at| now < at + self.settings.unknown_kid_interval);
        if !recent {
            st.last_unknown_kid = Some(now);
            st.asked_after = finished;
            self.wake.notify_one();
            return Some(finished);
        }
        (st.asked_after == finished).then_some(finished)
    }

    /// For a token header's `kid`: `None` when verification can go ahead now (the key is known,
    /// or no fetch could bring it), else a wait that ends when the fetch asked for it has finished
    /// (good or not; at most the fetch timeout and a second). Never fails: verification after it
    /// decides. Tokens without `kid` never wait once a set is loaded.
    pub fn wait_for_key(
        &self,
        kid: Option<&str>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let now = Instant::now();
        let mut st = self.state.lock();
        if st.loaded {
            let kid = kid?;
            let live = |k: &&Key| k.retired_at.is_none_or(|at| now < at + self.settings.grace);
            if st
                .keys
                .iter()
                .filter(live)
                .any(|k| k.kid.as_deref() == Some(kid))
            {
                return None;
            }
        }
        let base = self.ask_fetch(&mut st, now)?;
        drop(st);
        let mut finished = self.finished.subscribe();
        let limit = self.settings.timeout + Duration::from_secs(1);
        Some(async move {
            let _ = tokio::time::timeout(limit, finished.wait_for(|n| *n > base)).await;
        })
    }

    /// Replaces the set: keys that left it are retired (kept for the grace), keys past their
    /// grace are dropped.
    pub fn install(&self, fresh: Vec<Key>, now: Instant) {
        let mut st = self.state.lock();
        let grace = self.settings.grace;
        let old = std::mem::take(&mut st.keys);
        let mut keys = fresh;
        for mut k in old {
            if keys
                .iter()
                .any(|n| n.retired_at.is_none() && n.kid == k.kid)
            {
                continue;
            }
            let at = *k.retired_at.get_or_insert(now);
            if now < at + grace {
                keys.push(k);
            }
        }
        st.keys = keys;
        st.loaded = true;
    }

    /// The `kid`s of the current (not retired) keys.
    pub fn current_kids(&self) -> Vec<Option<String>> {
        let st = self.state.lock();
        st.keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid.clone())
            .collect()
    }

    /// The refresh loop: fetches at once, then on schedule and when woken, until `stop`.
    async fn run(self: Arc<Self>, fetcher: Fetcher, stop: CancellationToken) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => {}
            }
            let Some(outcome) = stop.run_until_cancelled(self.fetch(&fetcher)).await else {
                return;
            };
            let now = Instant::now();
            next = now
                + match outcome {
                    Ok((keys, age)) => {
                        let n = keys.len();
                        let first = !self.is_loaded();
                        self.install(keys, now);
                        ::metrics::counter!(crate::metrics::JWKS_FETCHES, "result" => "ok")
                            .increment(1);
                        if first {
                            tracing::info!(jwks = %self.settings.origin, keys = n, "JWKS loaded");
                        } else {
                            tracing::debug!(jwks = %self.settings.origin, keys = n, "JWKS refreshed");
                        }
                        self.settings.next_refresh(age)
                    }
                    Err(e) => {
                        ::metrics::counter!(crate::metrics::JWKS_FETCHES, "result" => e.label())
                            .increment(1);
                        if self.is_loaded() {
                            tracing::warn!(jwks = %self.settings.origin, error = %e, "JWKS fetch failed; keeping the last good set");
                        } else {
                            tracing::warn!(jwks = %self.settings.origin, error = %e, "JWKS fetch failed; tokens for this namespace are refused until a set is loaded");
                        }
                        self.settings.min_refresh
                    }
                };
            self.finished.send_modify(|n| *n += 1);
        }
    }

    async fn fetch(&self, fetcher: &Fetcher) -> Result<(Vec<Key>, Option<Duration>), FetchError> {
        let (body, age) = match tokio::time::timeout(self.settings.timeout, fetcher.get()).await {
            Err(_) => return Err(FetchError::Timeout),
            Ok(r) => r?,
        };
        Ok((parse_set(&body, &self.settings.algorithms)?, age))
    }
}

/// How a source's document is got.
enum Fetcher {
    Plain(Client<HttpConnector, Empty<Bytes>>, http::Uri),
    Tls(
        Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
        http::Uri,
    ),
    File(PathBuf),
    /// The client could not be set up (no root certificates): every fetch fails with this.
    Broken(String),
}

impl Fetcher {
    fn new(settings: &Settings) -> Self {
        let uri = match &settings.origin {
            Origin::File(p) => return Self::File(p.clone()),
            Origin::Url(u) => u.clone(),
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.timeout));
        http.enforce_http(uri.scheme() == Some(&http::uri::Scheme::HTTP));
        let builder = Client::builder(TokioExecutor::new());
        if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            return Self::Plain(builder.build(http), uri);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
            Ok(b) => Self::Tls(
                builder.build(b.https_only().enable_http1().wrap_connector(http)),
                uri,
            ),
            Err(e) => Self::Broken(format!("no TLS root certificates: {e}")),
        }
    }

    /// The document and the response's `max-age`.
    async fn get(&self) -> Result<(Bytes, Option<Duration>), FetchError> {
        match self {
            Self::Plain(c, u) => get_http(c, u).await,
            Self::Tls(c, u) => get_http(c, u).await,
            Self::File(p) => read_file(p).await.map(|b| (b, None)),
            Self::Broken(why) => Err(FetchError::Network(why.clone())),
        }
    }
}

async fn get_http<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: &http::Uri,
) -> Result<(Bytes, Option<Duration>), FetchError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let req = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "switchboard-gateway")
        .body(Empty::new())
        .map_err(|e| FetchError::Network(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| FetchError::Network(error_chain(&e)))?;
    if resp.status() != http::StatusCode::OK {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(FetchError::TooLarge);
    }
    let age = resp
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(max_age);
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                FetchError::TooLarge
            } else {
                FetchError::Network(e.to_string())
            }
        })?
        .to_bytes();
    Ok((body, age))
}

async fn read_file(path: &PathBuf) -> Result<Bytes, FetchError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    let mut buf = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    if buf.len() > MAX_JWKS_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(buf.into())
}

/// An error and its causes on one line (hyper's own message is often just "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Starts one refresh task per source on `tasks` (they end with `stop`) and waits until each
/// has made its first attempt, at most its fetch timeout (plus a second). A source whose first
/// fetch failed stays empty: its namespace refuses tokens until a later fetch succeeds.
pub async fn start(sources: &[Arc<Source>], tasks: &TaskTracker, stop: &CancellationToken) {
    let mut waits = Vec::with_capacity(sources.len());
    for source in sources {
        let fetcher = Fetcher::new(&source.settings);
        let mut finished = source.finished.subscribe();
        tasks.spawn(Arc::clone(source).run(fetcher, stop.clone()));
        let limit = source.settings.timeout + Duration::from_secs(1);
        waits.push(async move {
            let _ = tokio::time::timeout(limit, finished.wait_for(|n| *n > 0)).await;
        });
    }
    futures_util::future::join_all(waits).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;

    #[test]
    fn max_age_table() {
        let s = |n| Some(Duration::from_secs(n));
        let cases: Vec<(&str, Option<Duration>)> = vec![
            ("max-age=300", s(300)),
            ("public, max-age=60, must-revalidate", s(60)),
            ("MAX-AGE = 7", s(7)),
            ("max-age=\"12\"", s(12)),
            ("no-cache", s(0)),
            ("max-age=600, no-store", s(0)),
            ("public", None),
            ("max-age=", None),
            ("max-age=-5", None),
            ("max-age=1e3", None),
            ("max-age", None),
            ("max-age=99999999999999999999999", s(u64::MAX)),
            ("", None),
        ];
        for (header, want) in cases {
            assert_eq!(max_age(header), want, "{header:?}");
        }
    }

    #[test]
    fn refresh_interval_is_bounded() {
        let s = Settings::new(Origin::File("x".into()), vec![Algorithm::RS256]);
        let secs = Duration::from_secs;
        let cases = [
            (None, DEFAULT_REFRESH),
            (Some(secs(0)), DEFAULT_MIN_REFRESH),
            (Some(secs(29)), DEFAULT_MIN_REFRESH),
            (Some(secs(30)), secs(30)),
            (Some(secs(3600)), secs(3600)),
            (Some(secs(86_400)), secs(86_400)),
            (Some(secs(86_401)), DEFAULT_MAX_REFRESH),
            (Some(Duration::MAX), DEFAULT_MAX_REFRESH),
        ];
        for (age, want) in cases {
            assert_eq!(s.next_refresh(age), want, "{age:?}");
        }
    }

    const RS_PRIVATE: &str = include_str!("../tests/keys/rs256-private.pem");
    const ES_PRIVATE: &str = include_str!("../tests/keys/es256-private.pem");
    const ES384_PRIVATE: &str = include_str!("../tests/keys/es384-private.pem");

    fn jwk(pem: &str, alg: Algorithm, extra: serde_json::Value) -> serde_json::Value {
        auth::install_crypto_provider();
        let key = match alg.family() {
            AlgorithmFamily::Rsa => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut v = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("alg");
        for (k, x) in extra.as_object().unwrap() {
            obj.insert(k.clone(), x.clone());
        }
        v
    }

    fn kids(
        body: &serde_json::Value,
        algs: &[Algorithm],
    ) -> Result<Vec<Option<String>>, FetchError> {
        parse_set(body.to_string().as_bytes(), algs)
            .map(|ks| ks.iter().map(|k| k.kid.clone()).collect())
    }

    #[test]
    fn only_keys_that_fit_the_configured_algorithms_are_kept() {
        use serde_json::json;
        let rs = |extra| jwk(RS_PRIVATE, Algorithm::RS256, extra);
        let es = |extra| jwk(ES_PRIVATE, Algorithm::ES256, extra);
        let es384 = |extra| jwk(ES384_PRIVATE, Algorithm::ES384, extra);
        let oct = |kid: &str, len: usize| {
            json!({"kty": "oct", "kid": kid, "k": base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD, vec![7u8; len])})
        };
        let rs256 = [Algorithm::RS256];
        // (name, keys, algorithms, kept kids or error label)
        let cases: Vec<(
            &str,
            serde_json::Value,
            Vec<Algorithm>,
            Result<Vec<&str>, &str>,
        )> = vec![
            (
                "rsa",
                json!([rs(json!({"kid": "a"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            (
                "alg fits",
                json!([rs(json!({"kid": "a", "alg": "RS256"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            (
                "alg other",
                json!([rs(json!({"kid": "a", "alg": "RS384"}))]),
                rs256.to_vec(),
                Err("no_usable_key"),
            ),
            (
                "alg unknown",
                json!([rs(json!({"kid": "a", "alg": "XX1"}))]),
                rs256.to_vec(),
                Err("no_usable_key"),
            ),
            (
                "use enc",
                json!([
                    rs(json!({"kid": "a", "use": "enc"})),
                    rs(json!({"kid": "b", "use": "sig"}))
                ]),
                rs256.to_vec(),
                Ok(vec!["b"]),
            ),
            (
                "key_ops sign only",
                json!([rs(json!({"kid": "a", "key_ops": ["sign"]}))]),
                rs256.to_vec(),
                Err("no_usable_key"),
            ),
            (
                "ec for rsa config",
                json!([es(json!({"kid": "e"}))]),
                rs256.to_vec(),
                Err("no_usable_key"),
            ),
            (
                "ec P-256",
                json!([es(json!({"kid": "e"})), es384(json!({"kid": "f"}))]),
                vec![Algorithm::ES256],
                Ok(vec!["e"]),
            ),
            (
                "ec P-384",
                json!([es(json!({"kid": "e"})), es384(json!({"kid": "f"}))]),
                vec![Algorithm::ES384],
                Ok(vec!["f"]),
            ),
            (
                "oct without HS configured",
                json!([oct("h", 32), rs(json!({"kid": "a"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            (
                "oct with HS256",
                json!([oct("h", 32)]),
                vec![Algorithm::HS256],
                Ok(vec!["h"]),
            ),
            (
                "oct too short",
                json!([oct("h", 31)]),
                vec![Algorithm::HS256],
                Err("no_usable_key"),
            ),
            (
                "unknown kty skipped",
                json!([{"kty": "XYZ", "kid": "x"}, rs(json!({"kid": "a"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            (
                "bad rsa modulus",
                json!([{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}, rs(json!({"kid": "a"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            (
                "duplicate kid: first wins",
                json!([rs(json!({"kid": "a"})), es(json!({"kid": "a"}))]),
                vec![Algorithm::RS256, Algorithm::ES256],
                Ok(vec!["a"]),
            ),
            (
                "not an object",
                json!([1, "x", null, rs(json!({"kid": "a"}))]),
                rs256.to_vec(),
                Ok(vec!["a"]),
            ),
            ("empty", json!([]), rs256.to_vec(), Err("no_usable_key")),
            (
                "too many",
                serde_json::Value::Array(vec![json!({}); MAX_JWKS_KEYS + 1]),
                rs256.to_vec(),
                Err("too_many_keys"),
            ),
        ];
        for (name, keys, algs, want) in cases {
            let got = kids(&json!({ "keys": keys }), &algs);
            match want {
                Ok(want) => {
                    let want: Vec<Option<String>> =
                        want.iter().map(|k| Some((*k).to_owned())).collect();
                    assert_eq!(got, Ok(want), "{name}");
                }
                Err(label) => assert_eq!(got.map_err(|e| e.label()), Err(label), "{name}"),
            }
        }
        for body in ["", "[]", "{\"keys\": {}}", "{\"nokeys\": []}", "\u{0}"] {
            assert_eq!(
                parse_set(body.as_bytes(), &rs256)
                    .map(drop)
                    .map_err(|e| e.label()),
                Err("bad_json"),
                "{body:?}"
            );
        }
    }

    fn source(grace: Duration) -> Arc<Source> {
        let mut s = Settings::new(
            Origin::File("x".into()),
            vec![Algorithm::RS256, Algorithm::ES256],
        );
        s.grace = grace;
        s.unknown_kid_interval = Duration::from_secs(10);
        Source::new(s)
    }

    fn keys(kids: &[&str]) -> Vec<Key> {
        let v = serde_json::json!({ "keys": kids.iter().map(|k| jwk(RS_PRIVATE, Algorithm::RS256, serde_json::json!({"kid": k}))).collect::<Vec<_>>() });
        parse_set(v.to_string().as_bytes(), &[Algorithm::RS256]).unwrap()
    }

    #[test]
    fn retired_keys_verify_during_the_grace_only() {
        let t0 = Instant::now();
        let s = source(Duration::from_secs(60));
        let rs = Algorithm::RS256;
        assert_eq!(
            s.key_at(Some("a"), rs, t0).map(drop),
            Err(AuthError::KeysUnavailable)
        );
        s.install(keys(&["a"]), t0);
        assert!(s.key_at(Some("a"), rs, t0).is_ok());
        // "a" leaves the set at t0 + 10 s.
        let t1 = t0 + Duration::from_secs(10);
        s.install(keys(&["b"]), t1);
        assert!(s.key_at(Some("a"), rs, t1).is_ok());
        assert!(
            s.key_at(Some("a"), rs, t1 + Duration::from_secs(59))
                .is_ok()
        );
        assert_eq!(
            s.key_at(Some("a"), rs, t1 + Duration::from_secs(60))
                .map(drop),
            Err(AuthError::UnknownKey)
        );
        // A later fetch keeps its retirement time (not restarted) and drops it past the grace.
        s.install(keys(&["b"]), t1 + Duration::from_secs(30));
        assert!(
            s.key_at(Some("a"), rs, t1 + Duration::from_secs(31))
                .is_ok()
        );
        s.install(keys(&["b"]), t1 + Duration::from_secs(61));
        assert_eq!(s.current_kids(), vec![Some("b".to_owned())]);
        assert_eq!(s.state.lock().keys.len(), 1);
        // A key that comes back is current again.
        s.install(keys(&["a"]), t1 + Duration::from_secs(62));
        assert_eq!(s.current_kids(), vec![Some("a".to_owned())]);

        let zero = source(Duration::ZERO);
        zero.install(keys(&["a"]), t0);
        zero.install(keys(&["b"]), t1);
        assert_eq!(
            zero.key_at(Some("a"), rs, t1).map(drop),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn kid_selection_and_algorithm_fit() {
        let t0 = Instant::now();
        let s = source(Duration::from_secs(60));
        s.install(keys(&["a"]), t0);
        // One key: a token without kid may use it.
        assert!(s.key_at(None, Algorithm::RS256, t0).is_ok());
        // The key serves RS256 only, even though ES256 is configured.
        assert_eq!(
            s.key_at(Some("a"), Algorithm::ES256, t0).map(drop),
            Err(AuthError::WrongAlgorithm)
        );
        assert_eq!(
            s.key_at(None, Algorithm::ES256, t0).map(drop),
            Err(AuthError::WrongAlgorithm)
        );
        // Two current keys: a token without kid is ambiguous.
        s.install(keys(&["a", "b"]), t0);
        assert_eq!(
            s.key_at(None, Algorithm::RS256, t0).map(drop),
            Err(AuthError::UnknownKey)
        );
        // One current and one retired: the current one is the only candidate.
        s.install(keys(&["b"]), t0);
        assert!(s.key_at(None, Algorithm::RS256, t0).is_ok());
    }

    #[test]
    fn unknown_kids_ask_for_one_fetch_per_interval() {
        let t0 = Instant::now();
        let s = source(Duration::ZERO);
        s.install(keys(&["a"]), t0);
        let asked = |s: &Source| s.state.lock().last_unknown_kid;
        assert_eq!(
            s.key_at(Some("x"), Algorithm::RS256, t0).map(drop),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(asked(&s), Some(t0));
        // Within the interval: no new ask, whatever the kid.
        for (i, kid) in ["x", "y", "z"].iter().enumerate() {
            let at = t0 + Duration::from_secs(3 * i as u64 + 1);
            let _ = s.key_at(Some(kid), Algorithm::RS256, at);
            assert_eq!(asked(&s), Some(t0), "{kid}");
        }
        // Known kids never ask.
        let _ = s.key_at(Some("a"), Algorithm::RS256, t0 + Duration::from_secs(20));
        assert_eq!(asked(&s), Some(t0));
        let t1 = t0 + Duration::from_secs(10);
        let _ = s.key_at(Some("y"), Algorithm::RS256, t1);
        assert_eq!(asked(&s), Some(t1));
    }
}
