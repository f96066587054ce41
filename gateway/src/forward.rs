//! Requests for sessions owned by another gateway, passed on to their owner.
//!
//! Every sid starts with the id of the node that issued it (see [`crate::id`]). Behind a load
//! balancer without stickiness (plain round robin), a long-polling request or a WebSocket upgrade
//! may reach a gateway that does not hold its session; instead of answering "Session ID unknown"
//! (which ends the client's session), the gateway passes the request to the owner over HTTP and
//! hands the answer back: plain requests as a reverse proxy, upgrades by relaying the bytes of the
//! upgraded connection both ways.
//!
//! Where the owners are: [`Peers`] follows the cluster's heartbeats, which carry each gateway's
//! HTTP address (its advertised address, `SWITCHBOARD_ADVERTISE_ADDR`, or the bound one). A node
//! not heard from for a lease is forgotten, so requests for a dead gateway's sessions get the
//! reference's "Session ID unknown" and their clients reconnect.
//!
//! Requests are passed on with their Authorization headers, so an address is trusted only for
//! the node named by the subject its heartbeat came on (`{prefix}.heartbeat.{node}`), never for
//! the node the body names: with the shipped NATS permissions only gateway `node` may publish on
//! that subject (docs/security.md), and a heartbeat whose body names another node is refused and
//! counted (`switchboard_gateway_bus_refused_total{why="heartbeat_node"}`).
//!
//! Invariants: a request is passed on at most once (the `x-switchboard-forwarded` header marks
//! it, and a marked request is never passed on again, so two gateways that disagree about an
//! owner cannot bounce a request between them); nothing about the request is interpreted beyond
//! its sid, so the owner answers exactly as it would have answered the client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use switchboard_bus::Bus;
use switchboard_proto::Message as _;
use switchboard_proto::bus as pb;
use switchboard_proto::subject::{Parsed, Subjects};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::id::{NodeId, owner_of};
use crate::metrics::{FORWARD_SECONDS, FORWARDED};
use crate::transport::{Body, json_response, parse_query};

/// Marks a request one gateway passed to another (its value: the passing node's id).
pub const FORWARDED_HEADER: &str = "x-switchboard-forwarded";
/// Largest answer taken from an owner (its poll responses are bounded by its outbound queue,
/// 16 MiB or 4 × maxPayload).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Idle connections kept to each owner.
const POOL_IDLE_PER_HOST: usize = 32;
/// How long an idle pooled connection to an owner is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Gateways of the cluster and where their HTTP ports are, from their heartbeats.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<Mutex<HashMap<String, (Authority, Instant)>>>,
    /// Woken when a node appears or moves.
    changed: Arc<tokio::sync::Notify>,
}

impl Peers {
    /// Records that `node` was heard from at `now`, at `address` (`host:port`; ignored unless
    /// [`reachable`]: a gateway bound to `0.0.0.0` without an advertised address cannot be
    /// reached, and is left out).
    pub fn heard(&self, node: &str, address: &str, now: Instant) {
        let Some(addr) = reachable(address) else {
            return;
        };
        let before = self
            .inner
            .lock()
            .insert(node.to_owned(), (addr.clone(), now));
        if before.is_none_or(|(a, _)| a != addr) {
            self.changed.notify_waiters();
        }
    }

    /// Where `node` listens, waiting up to `wait` for it to be heard from (a gateway that just
    /// started, or a peer this one has not heard from since it started itself).
    pub async fn resolve(&self, node: &str, lease: Duration, wait: Duration) -> Option<Authority> {
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(addr) = self.address(node, lease, Instant::now()) {
                return Some(addr);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Where `node` listens, if it was heard from within `lease` before `now`.
    pub fn address(&self, node: &str, lease: Duration, now: Instant) -> Option<Authority> {
        let mut peers = self.inner.lock();
        match peers.get(node) {
            Some((addr, seen)) if now.saturating_duration_since(*seen) <= lease => {
                Some(addr.clone())
            }
            Some(_) => {
                peers.remove(node);
                None
            }
            None => None,
        }
    }

    /// Forgets `node` (it said it is leaving).
    pub fn forget(&self, node: &str) {
        self.inner.lock().remove(node);
    }

    /// Follows the cluster's heartbeats on `bus` until the bus closes.
    pub async fn follow(
        self,
        bus: Bus,
        subjects: Subjects,
    ) -> Result<(), switchboard_bus::BusError> {
        let mut sub = bus.subscribe(subjects.all_heartbeats()).await?;
        while let Some(msg) = sub.next().await {
            if let Some((node, hb)) = heartbeat_of(&subjects, msg) {
                self.heard(&node, &hb.address, Instant::now());
            }
        }
        Ok(())
    }
}

/// The sending node and the heartbeat of a message on `{prefix}.heartbeat.{node}`, trusted for
/// that node only: `None` for another subject, an undecodable body, or a body naming another
/// node (refused and counted).
pub fn heartbeat_of(
    subjects: &Subjects,
    msg: switchboard_bus::Message,
) -> Option<(String, pb::Heartbeat)> {
    tracing::trace!(subject = %msg.subject, "heartbeat");
    let Ok(Parsed::Heartbeat { node }) = subjects.parse(&msg.subject) else {
        return None;
    };
    match pb::Heartbeat::decode(msg.payload) {
        Ok(hb) if hb.node.is_empty() || hb.node == node => Some((node, hb)),
        Ok(hb) => {
            ::metrics::counter!(crate::metrics::BUS_REFUSED, "why" => "heartbeat_node")
                .increment(1);
            tracing::debug!(%node, named = %hb.node, "heartbeat for another node refused");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "undecodable heartbeat");
            None
        }
    }
}

/// What the gateway does with a request for a session it does not hold.
pub struct Forwarder {
    node: NodeId,
    peers: Peers,
    lease: Duration,
    /// How long a request waits for an owner not heard from yet: one heartbeat interval.
    wait: Duration,
    client: Client<HttpConnector, Incoming>,
    /// Upgraded connections being relayed (closed and awaited at shutdown).
    relays: TaskTracker,
    /// Set to the drain window when the node drains: each relay then ends at its own random
    /// moment of it, like the node's own sessions.
    drain: tokio::sync::watch::Sender<Option<Duration>>,
}

impl Forwarder {
    /// A forwarder for node `node`, with owners from `peers` (forgotten after `lease` without a
    /// heartbeat; an owner not known yet is waited for up to one `heartbeat` interval).
    pub fn new(node: NodeId, peers: Peers, lease: Duration, heartbeat: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Self {
            node,
            peers,
            lease,
            wait: heartbeat,
            client,
            relays: TaskTracker::new(),
            drain: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The owner of the request's session, if it is another node and the request was not
    /// already passed on by a gateway. `None`: serve it here.
    pub fn owner<'a>(&self, headers: &http::HeaderMap, sid: Option<&'a str>) -> Option<&'a str> {
        let owner = owner_of(sid?)?;
        (owner != self.node.as_str() && !headers.contains_key(FORWARDED_HEADER)).then_some(owner)
    }

    /// Passes `req` (from `remote`) to `owner` and returns its answer; "Session ID unknown" when
    /// the owner is not known (gone, or never heard of), 502 when it cannot be reached.
    pub async fn forward(
        &self,
        owner: &str,
        mut req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let kind = kind(&req);
        let Some(addr) = self.peers.resolve(owner, self.lease, self.wait).await else {
            tracing::debug!(%owner, "request for a session of an unknown node");
            ::metrics::counter!(FORWARDED, "kind" => kind, "result" => "unknown_owner")
                .increment(1);
            return crate::transport::EioError::SessionUnknown.response();
        };
        let upgrade = kind == "upgrade";
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = format!("http://{addr}{path}").parse::<http::Uri>() else {
            return json_response(
                StatusCode::BAD_REQUEST,
                r#"{"code":3,"message":"Bad request"}"#,
            );
        };
        *req.uri_mut() = uri;
        prepare_headers(req.headers_mut(), &self.node, remote, upgrade);
        let started = Instant::now();
        let res = match self.client.request(req).await {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(error = %e, %owner, %addr, "owner unreachable");
                ::metrics::counter!(FORWARDED, "kind" => kind, "result" => "unreachable")
                    .increment(1);
                return owner_unreachable();
            }
        };
        ::metrics::histogram!(FORWARD_SECONDS).record(started.elapsed().as_secs_f64());
        let switched = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let Some(client_upgrade) = client_upgrade.filter(|_| switched) {
            ::metrics::counter!(FORWARDED, "kind" => kind, "result" => "ok").increment(1);
            return self.relay(res, client_upgrade);
        }
        // A plain answer, or the owner's refusal of an upgrade: passed back whole.
        let (mut parts, body) = res.into_parts();
        match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(body) => {
                let result = if upgrade { "refused" } else { "ok" };
                ::metrics::counter!(FORWARDED, "kind" => kind, "result" => result).increment(1);
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Full::new(body.to_bytes()))
            }
            Err(e) => {
                tracing::debug!(error = %e, %owner, "owner's answer failed");
                ::metrics::counter!(FORWARDED, "kind" => kind, "result" => "broken").increment(1);
                owner_unreachable()
            }
        }
    }

    /// Answers the client with the owner's 101 and relays the two upgraded connections to each
    /// other until either side ends (or the drain ends it).
    fn relay(
        &self,
        mut res: Response<Incoming>,
        client_upgrade: hyper::upgrade::OnUpgrade,
    ) -> Response<Body> {
        let owner_upgrade = hyper::upgrade::on(&mut res);
        let drain = self.drain.subscribe();
        self.relays.spawn(async move {
            let (client, owner) = match tokio::join!(client_upgrade, owner_upgrade) {
                (Ok(c), Ok(o)) => (c, o),
                (c, o) => {
                    tracing::debug!(
                        client = c.is_ok(),
                        owner = o.is_ok(),
                        "relay upgrade failed"
                    );
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut owner = TokioIo::new(owner);
            // Dropping the copy loses nothing: both connections are closed right after.
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut owner) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "relayed connection ended with an error");
                    }
                }
                () = drained(drain) => tracing::debug!("relayed connection closed by the drain"),
            }
        });
        let (parts, _) = res.into_parts();
        Response::from_parts(parts, Full::new(Bytes::new()))
    }

    /// Drains the relayed connections: each is closed at its own random moment of `window`
    /// (its client reconnects, as the node's own sessions' clients do); returns when all have
    /// ended, or `window + grace` has passed.
    pub async fn drain(&self, window: Duration, grace: Duration) {
        self.drain.send_replace(Some(window));
        self.relays.close();
        let _ = tokio::time::timeout(window + grace, self.relays.wait()).await;
    }
}

/// Resolves at a random moment of the drain window, once a drain has started.
async fn drained(mut drain: tokio::sync::watch::Receiver<Option<Duration>>) {
    let window = loop {
        if let Some(w) = *drain.borrow_and_update() {
            break w;
        }
        if drain.changed().await.is_err() {
            // The forwarder is gone without a drain: the process is ending anyway.
            std::future::pending::<()>().await;
        }
    };
    let at = crate::engine::drain_schedule(1, window, &mut rand::rng());
    tokio::time::sleep(at.first().copied().unwrap_or_default()).await;
}

/// `address` as an HTTP authority another gateway can connect to: `host:port` with a port other
/// than 0 and a host that is a name or an IP address other than `0.0.0.0` / `::`.
pub fn reachable(address: &str) -> Option<Authority> {
    let auth = address.parse::<Authority>().ok()?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    (auth.port_u16().is_some_and(|p| p != 0) && !host.is_empty() && !unspecified).then_some(auth)
}

/// What a client gets when its session's owner cannot be reached or answered badly.
fn owner_unreachable() -> Response<Body> {
    json_response(
        StatusCode::BAD_GATEWAY,
        r#"{"code":1,"message":"Session owner unreachable"}"#,
    )
}

/// The request's sid, if any (the only thing a gateway reads before choosing to forward).
pub fn sid_of(uri: &http::Uri) -> Option<String> {
    let query = uri.query()?;
    if !query.contains("sid=") {
        return None;
    }
    parse_query(Some(query))
        .into_iter()
        .find(|(k, _)| k == "sid")
        .map(|(_, v)| v)
}

fn kind(req: &Request<Incoming>) -> &'static str {
    if fastwebsockets::upgrade::is_upgrade_request(req) {
        "upgrade"
    } else if req.method() == http::Method::POST {
        "post"
    } else {
        "poll"
    }
}

/// Headers that describe one hop and are not passed on (RFC 9110 §7.6.1); an upgrade keeps
/// `connection` and `upgrade`, which are what it asks for.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove("keep-alive");
}

/// Marks the request as passed on by `node` and adds the client's address to
/// `x-forwarded-for`, as a proxy does.
fn prepare_headers(
    headers: &mut http::HeaderMap,
    node: &NodeId,
    remote: SocketAddr,
    upgrade: bool,
) {
    if !upgrade {
        strip_hop_by_hop(headers);
    }
    if let Ok(v) = HeaderValue::from_str(node.as_str()) {
        headers.insert(FORWARDED_HEADER, v);
    }
    let ip = remote.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_known_for_a_lease_and_only_with_a_reachable_address() {
        let peers = Peers::default();
        let t0 = Instant::now();
        let lease = Duration::from_secs(6);
        peers.heard("gw1", "127.0.0.1:3001", t0);
        peers.heard("gw2", "0.0.0.0:3002", t0);
        peers.heard("gw3", "gw3.internal:3003", t0);
        peers.heard("gw4", "127.0.0.1:0", t0);
        peers.heard("gw5", "[::]:3005", t0);
        peers.heard("gw6", "no-port", t0);
        peers.heard("gw7", "[::1]:3007", t0);
        let at = |s: &str| Some(s.parse::<Authority>().unwrap());
        assert_eq!(
            peers.address("gw1", lease, t0 + lease),
            at("127.0.0.1:3001")
        );
        assert_eq!(peers.address("gw3", lease, t0), at("gw3.internal:3003"));
        assert_eq!(peers.address("gw7", lease, t0), at("[::1]:3007"));
        for unreachable in ["gw2", "gw4", "gw5", "gw6", "gw8"] {
            assert_eq!(peers.address(unreachable, lease, t0), None, "{unreachable}");
        }
        // A newer heartbeat moves the node and renews the lease.
        peers.heard("gw1", "127.0.0.1:4001", t0 + lease);
        assert_eq!(
            peers.address("gw1", lease, t0 + lease * 2),
            at("127.0.0.1:4001")
        );
        // Past the lease it is forgotten for good, not only hidden.
        assert_eq!(peers.address("gw1", lease, t0 + lease * 3), None);
        assert!(!peers.inner.lock().contains_key("gw1"));
        peers.heard("gw1", "127.0.0.1:3001", t0);
        peers.forget("gw1");
        assert_eq!(peers.address("gw1", lease, t0), None);
    }

    #[tokio::test]
    async fn only_other_nodes_sessions_are_passed_on_and_only_once() {
        let fwd = Forwarder::new(
            NodeId::parse("gw1").unwrap(),
            Peers::default(),
            Duration::from_secs(6),
            Duration::from_secs(2),
        );
        let plain = http::HeaderMap::new();
        let mut marked = http::HeaderMap::new();
        marked.insert(FORWARDED_HEADER, HeaderValue::from_static("gw3"));
        let cases = [
            (&plain, Some("gw2.AAAAAAAAAAAAAAAA"), Some("gw2")),
            (&plain, Some("gw1.AAAAAAAAAAAAAAAA"), None),
            (&plain, Some("nodot"), None),
            (&plain, None, None),
            (&marked, Some("gw2.AAAAAAAAAAAAAAAA"), None),
        ];
        for (headers, sid, want) in cases {
            assert_eq!(fwd.owner(headers, sid), want, "{sid:?}");
        }
        let uri: http::Uri = "/socket.io/?EIO=4&transport=polling&sid=gw2.a%2Bb&t=1"
            .parse()
            .unwrap();
        assert_eq!(sid_of(&uri).as_deref(), Some("gw2.a+b"));
        let uri: http::Uri = "/socket.io/?EIO=4&transport=polling".parse().unwrap();
        assert_eq!(sid_of(&uri), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_an_owner_it_has_not_heard_from_yet() {
        let peers = Peers::default();
        let lease = Duration::from_secs(6);
        let wait = Duration::from_secs(2);
        let later = peers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            later.heard("gw9", "127.0.0.1:3009", Instant::now());
        });
        assert_eq!(
            peers.resolve("gw9", lease, wait).await,
            Some("127.0.0.1:3009".parse::<Authority>().unwrap())
        );
        let asked = Instant::now();
        assert_eq!(peers.resolve("gw8", lease, wait).await, None);
        assert_eq!(Instant::now() - asked, wait, "gave up after one wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_ends_within_the_drain_window_once_a_drain_starts() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let relay = tokio::spawn(drained(rx));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!relay.is_finished(), "no drain, no end");
        let window = Duration::from_secs(10);
        let started = Instant::now();
        tx.send_replace(Some(window));
        relay.await.unwrap();
        assert!(Instant::now() - started < window);
    }

    #[tokio::test]
    async fn peers_follow_the_heartbeats_on_the_bus() {
        let hub = switchboard_bus::Hub::new();
        let subjects = Subjects::new("t").unwrap();
        let peers = Peers::default();
        tokio::spawn(peers.clone().follow(hub.client(), subjects.clone()));
        let gw = hub.client();
        let hb = pb::Heartbeat {
            node: "gw7".into(),
            address: "127.0.0.1:3007".into(),
            ..Default::default()
        };
        let lease = Duration::from_secs(6);
        for _ in 0..200 {
            gw.publish(
                subjects.heartbeat("gw7").unwrap(),
                Bytes::from(hb.encode_to_vec()),
            )
            .await
            .unwrap();
            if peers.address("gw7", lease, Instant::now()).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            peers.address("gw7", lease, Instant::now()),
            Some("127.0.0.1:3007".parse::<Authority>().unwrap())
        );

        // A heartbeat on gw8's subject whose body names gw7 (what a client allowed to publish
        // only gw8's heartbeats could send) is trusted for neither node.
        let liar = pb::Heartbeat {
            address: "127.0.0.1:6666".into(),
            ..hb.clone()
        };
        gw.publish(
            subjects.heartbeat("gw8").unwrap(),
            Bytes::from(liar.encode_to_vec()),
        )
        .await
        .unwrap();
        // Then gw9's own heartbeat, from the same client: once it is known, the liar was handled.
        let gw9 = pb::Heartbeat {
            node: "gw9".into(),
            address: "127.0.0.1:3009".into(),
            ..Default::default()
        };
        gw.publish(
            subjects.heartbeat("gw9").unwrap(),
            Bytes::from(gw9.encode_to_vec()),
        )
        .await
        .unwrap();
        while peers.address("gw9", lease, Instant::now()).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            peers.address("gw7", lease, Instant::now()),
            Some("127.0.0.1:3007".parse::<Authority>().unwrap())
        );
        assert_eq!(peers.address("gw8", lease, Instant::now()), None);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let node = NodeId::parse("gw2").unwrap();
        prepare_headers(&mut h, &node, "10.1.2.3:5555".parse().unwrap(), false);
        assert_eq!(h[FORWARDED_HEADER], "gw2");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert!(!h.contains_key(header::CONNECTION) && !h.contains_key("keep-alive"));
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
        // An upgrade keeps what asks for it.
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        prepare_headers(&mut h, &node, "127.0.0.1:1".parse().unwrap(), true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }
}
