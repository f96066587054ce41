//! The `/admin` namespace on a [`sio::Server`]: authentication, the UI's commands and the poller
//! that turns fetches of the cluster's sockets into the UI's live events (docs/admin-ui.md).
//!
//! The cluster is behind [`Cluster`], which the binary implements over the broker's admin
//! service; nothing here knows the broker. The poller is one task, started by [`install`] on the
//! caller's tracker and ended by its token; it fetches only while an admin socket is connected.
//!
//! bcrypt is slow on purpose, so a password is never checked on a connection's task: the
//! namespace's prepare step checks it on the blocking pool (at most
//! [`MAX_CONCURRENT_VERIFICATIONS`] at a time, a CONNECT waiting at most [`VERIFY_TIMEOUT`]) and
//! remembers a success, keyed by a SHA-256 of the user name and password, for the middleware to
//! consume.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    Command, Credentials, INVALID_CREDENTIALS, MAX_PASSWORD_BYTES, MAX_SESSIONS,
    MAX_USERNAME_BYTES, NAMESPACE, NodeInfo, SUPPORTED_FEATURES, Sessions, SocketInfo, Target,
    diff, parse_command, serialize, server_stats,
};
use crate::sio::{self, Args, ConnectError, Socket};

/// How many bcrypt checks run at once; further CONNECTs wait for a turn.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// The longest a CONNECT waits for its password check (queue included); then it is refused.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a checked password may wait for the middleware that consumes it.
const VERIFIED_TTL: Duration = Duration::from_secs(30);
/// The longest one call to the cluster may take before the poller gives up on this round.
pub const CLUSTER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the cluster failed (shown in logs only).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

/// What the admin namespace needs from the cluster: the broker's view and its admin actions.
pub trait Cluster: Send + Sync + 'static {
    /// Every socket of the cluster (the implementation bounds how many).
    fn sockets(&self) -> BoxFuture<'_, Result<Vec<SocketInfo>, ClusterError>>;
    /// Every gateway node.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>>;
    /// Carries out a command; returns how many sockets it matched.
    fn run(&self, command: Command) -> BoxFuture<'_, Result<u64, ClusterError>>;
}

/// How the namespace is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The user the UI logs in as; `None` turns authentication off (an explicit choice, as the
    /// package's `auth: false`).
    pub credentials: Option<Credentials>,
    /// How long a session id lets the UI reconnect without the password.
    pub session_ttl: Duration,
    /// How often the cluster is fetched while an admin is connected.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            credentials: None,
            session_ttl: super::DEFAULT_SESSION_TTL,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// A session id issued by the middleware, sent as `session` once connected.
struct NewSession(String);

struct Auth {
    credentials: Credentials,
    sessions: Mutex<Sessions>,
    /// Digests of credentials bcrypt accepted, waiting for their middleware.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    permits: Arc<Semaphore>,
}

impl Auth {
    /// The digest of a CONNECT's user name and password, if it carries both within bounds.
    fn digest(auth: &Value) -> Option<[u8; 32]> {
        let user = auth.get("username")?.as_str()?;
        let password = auth.get("password")?.as_str()?;
        if user.len() > MAX_USERNAME_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return None;
        }
        let mut h = Sha256::new();
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        Some(h.finalize().into())
    }

    /// The password check to wait for before the middleware, if one is needed.
    fn prepare(self: &Arc<Self>, payload: &Value) -> Option<BoxFuture<'static, ()>> {
        if self.sessions.lock().check(payload, Instant::now()) {
            return None;
        }
        let key = Self::digest(payload)?;
        let auth = self.clone();
        let payload = payload.clone();
        Some(Box::pin(async move {
            let check = async {
                let permit = auth.permits.clone().acquire_owned().await.ok()?;
                let credentials = auth.credentials.clone();
                // The permit goes with the hashing: a CONNECT that gives up waiting does not
                // free a turn while its bcrypt still runs.
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    credentials.verify(&payload)
                })
                .await
                .ok()
            };
            if let Ok(Some(true)) = tokio::time::timeout(VERIFY_TIMEOUT, check).await {
                let now = Instant::now();
                let mut verified = auth.verified.lock();
                verified.retain(|_, at| now.saturating_duration_since(*at) < VERIFIED_TTL);
                if verified.len() < MAX_SESSIONS {
                    verified.insert(key, now);
                }
            }
        }))
    }

    /// The middleware: a live session, or credentials the prepare step accepted.
    fn admit(&self, req: &mut sio::ConnectRequest<'_>) -> Result<(), ConnectError> {
        let now = Instant::now();
        if self.sessions.lock().check(req.auth(), now) {
            return Ok(());
        }
        let accepted = Self::digest(req.auth())
            .and_then(|key| self.verified.lock().remove(&key))
            .is_some_and(|at| now.saturating_duration_since(at) < VERIFIED_TTL);
        if !accepted {
            return Err(ConnectError::new(INVALID_CREDENTIALS));
        }
        let id = self.sessions.lock().issue(now);
        req.insert(NewSession(id));
        Ok(())
    }
}

/// Sets up the `/admin` namespace on `io` and starts its poller on `tracker` until `shutdown`.
pub fn install(
    io: &sio::Server,
    options: Options,
    cluster: Arc<dyn Cluster>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let ns = io.of(NAMESPACE);
    if let Some(credentials) = options.credentials.clone() {
        let auth = Arc::new(Auth {
            credentials,
            sessions: Mutex::new(Sessions::new(options.session_ttl)),
            verified: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
        });
        let a = auth.clone();
        ns.prepare_connect(move |payload, _| a.prepare(payload));
        ns.use_middleware(move |req| auth.admit(req));
    }
    // Set once an admin got its `all_sockets`: the poller's next round sends everyone a fresh
    // `all_sockets` instead of the diff, as the changes since its last fetch may or may not be in
    // what the newcomer got.
    let resync = Arc::new(AtomicBool::new(false));
    let c = cluster.clone();
    let fresh = resync.clone();
    ns.on_connect(move |socket| {
        if let Some(session) = socket.get::<NewSession>() {
            socket.emit("session", Args::new(vec![session.0.clone().into()]));
        }
        socket.emit(
            "config",
            Args::new(vec![json!({ "supportedFeatures": SUPPORTED_FEATURES })]),
        );
        let (c, s, fresh) = (c.clone(), socket.clone(), fresh.clone());
        socket.spawn(async move {
            match call(c.sockets()).await {
                Ok(sockets) => s.emit("all_sockets", all_sockets(&sockets)),
                Err(e) => tracing::warn!(error = %e, "admin UI: fetching the sockets failed"),
            }
            fresh.store(true, Ordering::Release);
        });
    });
    for event in ["_disconnect", "join", "leave"] {
        let c = cluster.clone();
        ns.on(event, move |socket, event| on_command(socket, event, &c));
    }
    let poller = poll(ns, cluster, options.poll_interval, resync, shutdown);
    tracker.spawn(poller);
}

/// A UI command: checked here, carried out on a task of the admin socket, answered on its ack
/// (`{sockets}` or `{error}`) if it asked for one. A filter is a socket id when a fresh fetch
/// knows that socket (the UI's socket page sends the id), a room otherwise.
fn on_command(socket: &Socket, mut event: sio::Event, cluster: &Arc<dyn Cluster>) {
    let ack = event.take_ack();
    let reply = |ack: Option<sio::Acker>, v: Value| {
        if let Some(ack) = ack {
            ack.send(Args::new(vec![v]));
        }
    };
    let command = match parse_command(&event.name, &event.args, |_, _| false) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "admin UI: command refused");
            reply(ack, json!({ "error": e.to_string() }));
            return;
        }
    };
    let cluster = cluster.clone();
    socket.spawn(async move {
        let done = async {
            let command = resolve(command, &*cluster).await?;
            call(cluster.run(command)).await
        };
        match done.await {
            Ok(n) => reply(ack, json!({ "sockets": n })),
            Err(e) => {
                tracing::warn!(error = %e, "admin UI: command failed");
                reply(ack, json!({ "error": e.to_string() }));
            }
        }
    });
}

/// Turns a room filter that names a socket of the namespace into that socket.
async fn resolve(command: Command, cluster: &dyn Cluster) -> Result<Command, ClusterError> {
    let (ns, target) = match &command {
        Command::Disconnect { ns, target, .. }
        | Command::Join { ns, target, .. }
        | Command::Leave { ns, target, .. } => (ns, target),
    };
    let Target::Room(filter) = target else {
        return Ok(command);
    };
    let sockets = call(cluster.sockets()).await?;
    if !sockets.iter().any(|s| s.ns == *ns && s.id == *filter) {
        return Ok(command);
    }
    let socket = Target::Socket(filter.clone());
    Ok(match command {
        Command::Disconnect { ns, close, .. } => Command::Disconnect {
            ns,
            close,
            target: socket,
        },
        Command::Join { ns, room, .. } => Command::Join {
            ns,
            room,
            target: socket,
        },
        Command::Leave { ns, room, .. } => Command::Leave {
            ns,
            room,
            target: socket,
        },
    })
}

/// The `all_sockets` event's arguments.
fn all_sockets(sockets: &[SocketInfo]) -> Args {
    Args::new(vec![Value::Array(sockets.iter().map(serialize).collect())])
}

/// A cluster call bounded by [`CLUSTER_CALL_TIMEOUT`].
async fn call<T>(f: BoxFuture<'_, Result<T, ClusterError>>) -> Result<T, ClusterError> {
    tokio::time::timeout(CLUSTER_CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(ClusterError("timed out".into())))
}

/// Every `interval` while an admin socket is connected here: fetch, emit the diff's events and
/// one `server_stats` per node to this gateway's admin sockets only (`local`: every gateway with
/// an admin connected polls for its own, so a cluster-wide emit would repeat each event once per
/// such gateway). A round without a base to diff against (the first one, or after a failed
/// fetch) or after an admin connected (`resync`) sends `all_sockets` instead, which the UI takes
/// as the whole state: a change between a newcomer's `all_sockets` and the poller's next fetch is
/// so never lost (the UI's events list does not show it). With no admin connected it forgets the
/// last fetch.
async fn poll(
    ns: sio::Namespace,
    cluster: Arc<dyn Cluster>,
    interval: Duration,
    resync: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    // The first round one interval from now: nobody is connected yet.
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<SocketInfo>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if ns.is_empty() {
            last = None;
            continue;
        }
        // Taken before the fetch: this round's fetch is newer than a newcomer's `all_sockets`.
        let whole = resync.swap(false, Ordering::AcqRel);
        let (sockets, nodes) = match (call(cluster.sockets()).await, call(cluster.nodes()).await) {
            (Ok(s), Ok(n)) => (s, n),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "admin UI: polling the cluster failed");
                last = None;
                continue;
            }
        };
        // As a JavaScript `Date` is sent: ISO 8601 in UTC with milliseconds (the UI sorts them).
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let previous = last.replace(sockets.clone());
        match previous {
            Some(previous) if !whole => {
                for change in diff(&previous, &sockets) {
                    let (name, args) = change.event(&now);
                    ns.broadcast().local().emit(name, Args::new(args));
                }
            }
            _ => {
                ns.broadcast()
                    .local()
                    .emit("all_sockets", all_sockets(&sockets));
            }
        }
        // The broker does not know a node's start time: the UI shows 0.
        for node in &nodes {
            let stats = server_stats(node, &sockets, 0.0);
            ns.broadcast()
                .local()
                .emit("server_stats", Args::new(vec![stats]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use switchboard_codec::engineio::{Frame, Payload};

    use super::*;
    use crate::engine::{
        Config as EngineConfig, Conn, Engine, Handler as _, HandshakeInfo, Transport,
    };
    use crate::id::NodeId;
    use crate::sio::{ConnData, Server};

    struct Fake {
        sockets: Mutex<Vec<SocketInfo>>,
        /// What the cluster holds once the next fetch has been answered.
        then: Mutex<Option<Vec<SocketInfo>>>,
        ran: Mutex<Vec<Command>>,
    }

    impl Cluster for Fake {
        fn sockets(&self) -> BoxFuture<'_, Result<Vec<SocketInfo>, ClusterError>> {
            let mut sockets = self.sockets.lock();
            let now = sockets.clone();
            if let Some(then) = self.then.lock().take() {
                *sockets = then;
            }
            Box::pin(async { Ok(now) })
        }
        fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
            Box::pin(async {
                Ok(vec![NodeInfo {
                    id: "gw-1".into(),
                    connections: 1,
                }])
            })
        }
        fn run(&self, command: Command) -> BoxFuture<'_, Result<u64, ClusterError>> {
            self.ran.lock().push(command);
            Box::pin(async { Ok(1) })
        }
    }

    /// The poller's interval in most tests.
    const POLL: Duration = Duration::from_millis(20);

    struct Harness {
        engine: Arc<Engine<Server>>,
        conn: Arc<Conn<ConnData>>,
        seen: Vec<String>,
        fake: Arc<Fake>,
        shutdown: CancellationToken,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    /// A cluster adapter that records what the namespace broadcasts through the cluster.
    #[derive(Default)]
    struct Broadcasts(Mutex<Vec<String>>);

    impl sio::Adapter for Broadcasts {
        fn connected(&self, _: &Socket) {}
        fn disconnected(&self, _: &Socket, _: &[sio::Room], _: sio::DisconnectReason) {}
        fn joined(&self, _: &Socket, _: &sio::Room) {}
        fn left(&self, _: &Socket, _: &sio::Room) {}
        fn broadcast(&self, ns: &str, _: &sio::Target, _: &[Frame], _: bool) {
            self.0.lock().push(ns.to_owned());
        }
    }

    fn harness(credentials: Option<Credentials>) -> Harness {
        harness_with(credentials, Arc::new(Broadcasts::default()), POLL)
    }

    fn harness_with(
        credentials: Option<Credentials>,
        adapter: Arc<Broadcasts>,
        poll_interval: Duration,
    ) -> Harness {
        let io = Server::new(sio::Config::default());
        io.set_adapter(adapter);
        let engine = Engine::new(
            EngineConfig::default(),
            io.clone(),
            NodeId::parse("n1").expect("node id"),
        );
        let fake = Arc::new(Fake {
            sockets: Mutex::new(vec![socket("s1")]),
            then: Mutex::new(None),
            ran: Mutex::new(Vec::new()),
        });
        let shutdown = CancellationToken::new();
        let options = Options {
            credentials,
            poll_interval,
            ..Options::default()
        };
        install(
            &io,
            options,
            fake.clone(),
            shutdown.clone(),
            &TaskTracker::new(),
        );
        let conn = open(&engine);
        Harness {
            engine,
            conn,
            seen: Vec::new(),
            fake,
            shutdown,
        }
    }

    fn open(engine: &Arc<Engine<Server>>) -> Arc<Conn<ConnData>> {
        let info = HandshakeInfo::new(
            "127.0.0.1:1".parse().expect("addr"),
            &http::HeaderMap::new(),
            None,
            0,
        );
        let (conn, _) = engine
            .open(Transport::WebSocket, info, Instant::now())
            .expect("open");
        conn
    }

    impl Harness {
        /// Goes on with a new Engine.IO connection to the same server.
        fn reconnect(&mut self) {
            self.conn = open(&self.engine);
            self.seen.clear();
        }

        fn send(&self, packet: &str) {
            let payload = Payload::Text(Bytes::copy_from_slice(packet.as_bytes()));
            self.engine.handler.on_message(&self.conn, payload);
        }

        /// Waits until a frame starting with `prefix` has come (bounded: the failure path).
        async fn until(&mut self, prefix: &str) -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                for f in self.conn.lock().drain() {
                    if let Frame::Text(t, _) = f {
                        self.seen.push(String::from_utf8_lossy(&t).into_owned());
                    }
                }
                if let Some(found) = self.seen.iter().find(|f| f.starts_with(prefix)) {
                    return found.clone();
                }
                assert!(Instant::now() < deadline, "no {prefix} in {:?}", self.seen);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn socket(id: &str) -> SocketInfo {
        SocketInfo {
            id: id.into(),
            ns: "/".into(),
            node: "gw-1".into(),
            rooms: vec!["lobby".into()],
            ..Default::default()
        }
    }

    fn credentials() -> Credentials {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        Credentials::new("admin", &hash).expect("credentials")
    }

    /// The JSON after a frame's namespace prefix (and ack id).
    fn body(frame: &str) -> Value {
        let at = frame.find(',').expect("a namespace prefix");
        let json = frame[at + 1..].trim_start_matches(|c: char| c.is_ascii_digit());
        serde_json::from_str(json).expect("json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_password_is_refused() {
        let mut h = harness(Some(credentials()));
        h.send(r#"0/admin,{"username":"admin","password":"wrong"}"#);
        let refusal = h.until("44/admin,").await;
        assert_eq!(body(&refusal), json!({"message": "invalid credentials"}));
        h.reconnect();
        h.send(r#"0/admin,{"sessionId":"0123456789abcdef"}"#);
        h.until("44/admin,").await;
        h.reconnect();
        h.send("0/admin,");
        h.until("44/admin,").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_right_password_gets_a_session_config_and_the_sockets() {
        let mut h = harness(Some(credentials()));
        h.send(r#"0/admin,{"username":"admin","password":"s3cret"}"#);
        h.until("40/admin,").await;
        let session = body(&h.until(r#"42/admin,["session""#).await);
        let config = body(&h.until(r#"42/admin,["config""#).await);
        assert_eq!(config[1]["supportedFeatures"], json!(SUPPORTED_FEATURES));
        let all = body(&h.until(r#"42/admin,["all_sockets""#).await);
        assert_eq!(all[1][0]["id"], "s1");
        assert_eq!(all[1][0]["rooms"], json!(["lobby"]));
        let stats = body(&h.until(r#"42/admin,["server_stats""#).await);
        assert_eq!(stats[1]["serverId"], "gw-1");

        // The session id lets the UI back in without the password.
        let id = session[1].as_str().expect("session id").to_owned();
        h.reconnect();
        h.send(&format!(r#"0/admin,{{"sessionId":"{id}"}}"#));
        h.until("40/admin,").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pollers_events_stay_on_this_gateway() {
        let adapter = Arc::new(Broadcasts::default());
        let mut h = harness_with(None, adapter.clone(), POLL);
        h.send("0/admin,{}");
        h.until("40/admin,").await;
        h.until(r#"42/admin,["server_stats""#).await;
        assert!(adapter.0.lock().is_empty(), "{:?}", adapter.0.lock());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_in_the_cluster_become_live_events() {
        let mut h = harness(None);
        h.send("0/admin,{}");
        h.until(r#"42/admin,["all_sockets""#).await;
        // Two polls: the second one has seen the first as its base.
        h.until(r#"42/admin,["server_stats""#).await;
        h.seen.clear();
        h.until(r#"42/admin,["server_stats""#).await;
        *h.fake.sockets.lock() = vec![socket("s2")];
        let came = body(&h.until(r#"42/admin,["socket_connected""#).await);
        assert_eq!(came[1]["id"], "s2");
        let gone = body(&h.until(r#"42/admin,["socket_disconnected""#).await);
        let gone = gone.as_array().expect("an event");
        assert_eq!(gone[1..4], [json!("/"), json!("s1"), json!("unknown")]);
        // A JavaScript Date's JSON: 2026-01-02T03:04:05.678Z.
        let at = gone[4].as_str().expect("a date");
        assert!(
            at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "{at}"
        );
        h.seen.clear();
        h.until(r#"42/admin,["server_stats""#).await;
        h.seen.clear();
        h.until(r#"42/admin,["server_stats""#).await;
        assert!(
            !h.seen.iter().any(|f| f.contains("socket_connected")),
            "a change is reported once: {:?}",
            h.seen
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_right_after_the_admins_all_sockets_reaches_it() {
        // Rounds far apart, so that the admin's own fetch comes first (the case to check).
        let mut h = harness_with(None, Arc::default(), Duration::from_millis(300));
        // The cluster changes as soon as the connecting admin's `all_sockets` was fetched.
        *h.fake.then.lock() = Some(vec![socket("s2")]);
        h.send("0/admin,{}");
        // A few poll rounds (bounded: the failure path) until the admin has heard of s2, in an
        // `all_sockets` or a `socket_connected`.
        let stats = r#"42/admin,["server_stats""#;
        for _ in 0..3 {
            h.until(stats).await;
            if h.seen.iter().any(|f| f.contains(r#""s2""#)) {
                return;
            }
            h.seen.retain(|f| !f.starts_with(stats));
        }
        panic!("s2 never reached the admin: {:?}", h.seen);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_reach_the_cluster_with_socket_ids_told_from_rooms() {
        let mut h = harness(None);
        h.send("0/admin,{}");
        h.until("40/admin,").await;
        h.send(r#"2/admin,1["_disconnect","/",false,"s1"]"#);
        assert_eq!(body(&h.until("43/admin,1").await), json!([{"sockets": 1}]));
        h.send(r#"2/admin,2["join","/","vip","lobby"]"#);
        h.until("43/admin,2").await;
        h.send(r#"2/admin,3["leave",7]"#);
        let refused = body(&h.until("43/admin,3").await);
        assert_eq!(
            refused[0]["error"],
            "admin command leave: bad argument 0: must be a string"
        );
        assert_eq!(
            *h.fake.ran.lock(),
            vec![
                Command::Disconnect {
                    ns: "/".into(),
                    close: false,
                    target: Target::Socket("s1".into()),
                },
                Command::Join {
                    ns: "/".into(),
                    room: "vip".into(),
                    target: Target::Room("lobby".into()),
                },
            ]
        );
    }
}
