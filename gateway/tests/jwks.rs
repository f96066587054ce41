//! JWKS against a real HTTP server on 127.0.0.1:0 that the test rotates: a new key is found by
//! the unknown-`kid` refetch (the scheduled refresh is an hour away), a retired key verifies
//! during its grace and not after, a failed fetch (500, garbage, oversized body) keeps the last
//! good set, and unknown-`kid` refetches are rate-limited (requests counted at the server).
//!
//! No timing assertions: every wait is a condition polled until a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::json;
use switchboard_gateway::auth::{self, AuthError, Verifier};
use switchboard_gateway::jwks::{self, Origin, Settings, Source};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const RS_PRIVATE: &str = include_str!("keys/rs256-private.pem");
const ES_PRIVATE: &str = include_str!("keys/es256-private.pem");
const DEADLINE: Duration = Duration::from_secs(20);

/// What the test server answers.
#[derive(Clone)]
enum Reply {
    Set(String),
    Status(u16),
    Garbage,
    /// A body over the limit, announced by `Content-Length`.
    Huge,
}

struct JwksServer {
    addr: std::net::SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl JwksServer {
    async fn start(set: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(Reply::Set(set)));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (r, h, s) = (reply.clone(), hits.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = s.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let reply = r.lock().clone();
                        async move { Ok::<_, Infallible>(respond(reply)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            reply,
            hits,
            stop,
        }
    }

    fn url(&self) -> http::Uri {
        format!("http://{}/.well-known/jwks.json", self.addr)
            .parse()
            .unwrap()
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock() = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn respond(reply: Reply) -> http::Response<Full<Bytes>> {
    let b = http::Response::builder();
    match reply {
        Reply::Set(body) => b
            .header("content-type", "application/json")
            .header("cache-control", "public, max-age=3600")
            .body(Full::new(body.into())),
        Reply::Status(code) => b.status(code).body(Full::new(Bytes::new())),
        Reply::Garbage => b.body(Full::new(Bytes::from_static(b"{\"keys\": [ not json"))),
        Reply::Huge => {
            let mut body = b"{\"keys\":[],\"pad\":\"".to_vec();
            body.resize(jwks::MAX_JWKS_BYTES + 10, b'x');
            b.body(Full::new(body.into()))
        }
    }
    .unwrap()
}

fn rs_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap()
}

fn es_key() -> EncodingKey {
    EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap()
}

/// A JWK of a private key's public half, with a `kid`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j
}

fn set(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &json!({"sub": "alice", "exp": now_unix() + 600}),
        key,
    )
    .unwrap()
}

/// Settings that never refresh on schedule during a test: only unknown `kid`s fetch.
fn settings(origin: Origin) -> Settings {
    let mut s = Settings::new(origin, vec![Algorithm::RS256, Algorithm::ES256]);
    s.refresh = Duration::from_secs(3600);
    s.min_refresh = Duration::from_secs(3600);
    s.unknown_kid_interval = Duration::from_millis(1);
    s.timeout = Duration::from_secs(5);
    s
}

struct Running {
    source: Arc<Source>,
    verifier: Verifier,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Running {
    async fn start(settings: Settings) -> Self {
        auth::install_crypto_provider();
        let source = Source::new(settings);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        jwks::start(std::slice::from_ref(&source), &tasks, &stop).await;
        let verifier = Verifier::with_jwks(source.clone()).unwrap();
        Self {
            source,
            verifier,
            tasks,
            stop,
        }
    }

    fn verify(&self, token: &str) -> Result<(), AuthError> {
        self.verifier.verify(token, now_unix()).map(drop)
    }

    /// Verifies until it passes (the first tries ask for the refetch that brings the key).
    async fn until_accepted(&self, token: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match self.verify(token) {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("token still refused: {e:?}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until `n` fetch attempts have finished.
    async fn until_attempts(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.source.attempts() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} attempts, waiting for {n}",
                self.source.attempts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The server drops every key but "new"; a token with an unknown kid asks for the refetch that
/// retires the others. Returns once "new" is the only current key.
async fn retire_all_but_new(run: &Running, server: &JwksServer) {
    server.set(Reply::Set(set(vec![jwk(
        &es_key(),
        Algorithm::ES256,
        "new",
    )])));
    let probe = token(&es_key(), Algorithm::ES256, Some("probe"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while run.source.current_kids() != vec![Some("new".to_owned())] {
        assert!(tokio::time::Instant::now() < deadline, "old key never left");
        assert_eq!(run.verify(&probe), Err(AuthError::UnknownKey));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rotation_new_key_by_refetch_and_retired_key_during_grace() {
    let server = JwksServer::start(set(vec![jwk(&rs_key(), Algorithm::RS256, "old")])).await;
    let mut s = settings(Origin::Url(server.url()));
    s.grace = Duration::from_secs(3600);
    let run = Running::start(s).await;
    assert!(run.source.is_loaded(), "first fetch at start");
    let old = token(&rs_key(), Algorithm::RS256, Some("old"));
    let new = token(&es_key(), Algorithm::ES256, Some("new"));
    run.verify(&old).unwrap();
    assert_eq!(run.verify(&new), Err(AuthError::UnknownKey));

    // The provider adds the new key: found by the unknown-kid refetch, long before the
    // scheduled refresh (an hour).
    server.set(Reply::Set(set(vec![
        jwk(&rs_key(), Algorithm::RS256, "old"),
        jwk(&es_key(), Algorithm::ES256, "new"),
    ])));
    run.until_accepted(&new).await;
    run.verify(&old).unwrap();

    // Then retires the old one.
    retire_all_but_new(&run, &server).await;
    // Within its grace (an hour) the retired key still verifies.
    run.verify(&old).unwrap();
    run.verify(&new).unwrap();
    run.stop().await;
}

#[tokio::test]
async fn a_connect_with_a_new_kid_waits_for_the_refetch_and_is_accepted_at_once() {
    let server = JwksServer::start(set(vec![jwk(&rs_key(), Algorithm::RS256, "old")])).await;
    let mut s = settings(Origin::Url(server.url()));
    s.unknown_kid_interval = Duration::from_secs(3600);
    let run = Running::start(s).await;
    // A known key: nothing to wait for.
    assert!(run.source.wait_for_key(Some("old")).is_none());
    server.set(Reply::Set(set(vec![
        jwk(&rs_key(), Algorithm::RS256, "old"),
        jwk(&es_key(), Algorithm::ES256, "new"),
    ])));
    // Two connects with the new kid arrive together: both wait, for one fetch.
    let first = run.source.wait_for_key(Some("new")).expect("a wait");
    let second = run
        .source
        .wait_for_key(Some("new"))
        .expect("a wait for the same fetch");
    tokio::join!(first, second);
    // The first verification after the wait accepts it (no retry).
    let new = token(&es_key(), Algorithm::ES256, Some("new"));
    run.verify(&new).unwrap();
    assert_eq!(server.hits(), 2, "start-up fetch + one refetch for both");
    // A kid still unknown after that fetch, within the interval: refused without waiting.
    assert!(run.source.wait_for_key(Some("nobody")).is_none());
    assert_eq!(
        run.verify(&token(&es_key(), Algorithm::ES256, Some("nobody"))),
        Err(AuthError::UnknownKey)
    );
    run.stop().await;
}

#[tokio::test]
async fn retired_key_is_refused_once_the_grace_ends() {
    let server = JwksServer::start(set(vec![
        jwk(&rs_key(), Algorithm::RS256, "old"),
        jwk(&es_key(), Algorithm::ES256, "new"),
    ]))
    .await;
    let mut s = settings(Origin::Url(server.url()));
    s.grace = Duration::from_millis(200);
    let run = Running::start(s).await;
    let old = token(&rs_key(), Algorithm::RS256, Some("old"));
    let new = token(&es_key(), Algorithm::ES256, Some("new"));
    run.verify(&old).unwrap();
    retire_all_but_new(&run, &server).await;
    // Once its grace is over, "old" is refused.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if run.verify(&old) == Err(AuthError::UnknownKey) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run.source.current_kids(), vec![Some("new".to_owned())]);
    run.verify(&new).unwrap();
    run.stop().await;
}

#[tokio::test]
async fn failed_fetches_keep_the_last_good_set() {
    let server = JwksServer::start(set(vec![jwk(&rs_key(), Algorithm::RS256, "a")])).await;
    let run = Running::start(settings(Origin::Url(server.url()))).await;
    let good = token(&rs_key(), Algorithm::RS256, Some("a"));
    run.verify(&good).unwrap();
    let mut attempts = run.source.attempts();
    let bad_replies = [
        Reply::Status(500),
        Reply::Status(404),
        Reply::Garbage,
        Reply::Huge,
        Reply::Set("{\"keys\": []}".to_owned()),
        Reply::Set(set(vec![jwk(&rs_key(), Algorithm::RS384, "wrong-alg")])),
    ];
    for reply in bad_replies {
        server.set(reply);
        // An unknown kid asks for a fetch; it fails; "a" still verifies.
        let unknown = token(&rs_key(), Algorithm::RS256, Some("unknown"));
        assert_eq!(run.verify(&unknown), Err(AuthError::UnknownKey));
        attempts += 1;
        run.until_attempts(attempts).await;
        run.verify(&good).unwrap();
        assert_eq!(run.source.current_kids(), vec![Some("a".to_owned())]);
    }
    run.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited_and_shared() {
    let server = JwksServer::start(set(vec![jwk(&rs_key(), Algorithm::RS256, "a")])).await;
    let mut s = settings(Origin::Url(server.url()));
    s.unknown_kid_interval = Duration::from_secs(3600);
    let run = Running::start(s).await;
    assert_eq!(server.hits(), 1, "the start-up fetch");
    // A burst of tokens with unknown kids, some concurrent: one refetch between them.
    let verifier = Arc::new(run.verifier.clone());
    let mut joins = Vec::new();
    for i in 0..20 {
        let v = verifier.clone();
        let t = token(&rs_key(), Algorithm::RS256, Some(&format!("k{i}")));
        joins.push(tokio::spawn(
            async move { v.verify(&t, now_unix()).map(drop) },
        ));
    }
    for j in joins {
        assert_eq!(j.await.unwrap(), Err(AuthError::UnknownKey));
    }
    run.until_attempts(2).await;
    for i in 20..40 {
        let t = token(&rs_key(), Algorithm::RS256, Some(&format!("k{i}")));
        assert_eq!(run.verify(&t), Err(AuthError::UnknownKey));
    }
    // Give a wrongly allowed fetch the chance to reach the server before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits(), 2, "start-up fetch + one unknown-kid refetch");
    assert_eq!(run.source.attempts(), 2);
    run.stop().await;
}

#[tokio::test]
async fn unreachable_at_start_refuses_tokens_until_a_set_loads() {
    // A port that was just free: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url: http::Uri = format!("http://127.0.0.1:{port}/jwks").parse().unwrap();
    let run = Running::start(settings(Origin::Url(url))).await;
    assert!(!run.source.is_loaded());
    let t = token(&rs_key(), Algorithm::RS256, Some("a"));
    assert_eq!(run.verify(&t), Err(AuthError::KeysUnavailable));
    run.stop().await;
}

#[tokio::test]
async fn jwks_file_is_reread_on_unknown_kid() {
    let dir = std::env::temp_dir().join(format!("sb-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, set(vec![jwk(&rs_key(), Algorithm::RS256, "a")])).unwrap();
    let run = Running::start(settings(Origin::File(path.clone()))).await;
    run.verify(&token(&rs_key(), Algorithm::RS256, Some("a")))
        .unwrap();
    std::fs::write(&path, set(vec![jwk(&es_key(), Algorithm::ES256, "b")])).unwrap();
    run.until_accepted(&token(&es_key(), Algorithm::ES256, Some("b")))
        .await;
    // Grace 0: the key that left the file is refused at once.
    assert_eq!(
        run.verify(&token(&rs_key(), Algorithm::RS256, Some("a"))),
        Err(AuthError::UnknownKey)
    );
    run.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_and_loads_nothing() {
    let server = JwksServer::start(set(vec![jwk(&rs_key(), Algorithm::RS256, "a")])).await;
    let url: http::Uri = format!("https://{}/jwks", server.addr).parse().unwrap();
    let run = Running::start(settings(Origin::Url(url))).await;
    // The TLS client (rustls, ring, the system's roots) gets no TLS answer: the fetch fails.
    run.until_attempts(1).await;
    assert!(!run.source.is_loaded());
    assert_eq!(
        run.verify(&token(&rs_key(), Algorithm::RS256, Some("a"))),
        Err(AuthError::KeysUnavailable)
    );
    run.stop().await;
}
