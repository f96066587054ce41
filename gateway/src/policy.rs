//! Namespace policies: the configured application logic (docs/architecture.md, "Where
//! application logic lives", layer 1) run on the embedding API ([`crate::sio`]).
//!
//! For every configured namespace, [`install`] registers a connect middleware (token check,
//! required claims, rooms auto-joined from claim templates, typed [`Claims`] attached to the
//! socket, rate-limit state kept for the connection so that re-entering the namespace does not
//! refill it) and an `on_any` handler that charges the rate limit and dispatches the
//! event to its rule: join, leave, relay, broadcast or echo. Every action answers the client's ack,
//! if one was asked for, with `{"ok":true}` or `{"ok":false,"error":"<reason>"}`; events without
//! a rule are dropped and counted, and a requested ack gets `"unknown event"`.
//!
//! The decisions (which rule, the room argument, allow/deny matching with claim templates,
//! capacity, ack values) are pure functions at the top of this file, tested without a server.
//! The glue at the bottom only reads socket state, calls them, and acts. Handlers written in code
//! with `Namespace::on` take precedence over rules (and bypass the rate limit): `on_any` only
//! sees events without a specific handler.
//!
//! Room templates (`user:{sub}`) substitute claim values as literal text: a claim containing `*`
//! cannot widen an allow pattern. Capacity (`max_members`) is counted on this node only until the
//! broker enforces it cluster-wide, and the check and the join are not atomic (two concurrent
//! joins can overshoot by one each).

use std::collections::HashMap;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::auth::{self, AuthError, Claims, KeyError, Verifier};
use crate::config::HistoryRule;
use crate::config::{
    AuthMode, Config, KeySource, NamespaceConfig, NamespaceMatch, RateLimitConfig,
};
use crate::metrics::Limit;
use crate::ratelimit::{Limiter, Verdict};
use crate::rule::{
    Action, ArgPath, BroadcastRule, EchoRule, ForwardRule, JoinRule, LeaveRule, RelayRule,
    RoomRule, Template,
};
use crate::sio::{Args, ConnectError, ConnectRequest, Event, Server, Socket};

/// Longest room name a client may name in an event.
pub const MAX_ROOM_NAME_BYTES: usize = 256;

/// Why a client event was refused. `Display` is the `error` string of the ack.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No rule for the event name.
    #[error("unknown event")]
    UnknownEvent,
    /// The socket's token bucket is empty.
    #[error("rate limited")]
    RateLimited,
    /// The argument that should name the room is absent (or null).
    #[error("missing room argument")]
    MissingRoom,
    /// The room argument is not a string.
    #[error("room must be a string")]
    RoomNotString,
    /// The room name is empty.
    #[error("invalid room")]
    InvalidRoom,
    /// The room name is longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("room name too long")]
    RoomTooLong,
    /// The room is not permitted by the rule's allow/deny patterns.
    #[error("room not allowed")]
    RoomNotAllowed,
    /// The room is at its capacity.
    #[error("room full")]
    RoomFull,
    /// The socket is in as many rooms as the namespace allows.
    #[error("too many rooms")]
    TooManyRooms,
    /// A relay to a room the sender is not in, with `member_only`.
    #[error("not a member of the room")]
    NotMember,
    /// A `forward`ed event got no answer from a worker (no worker, timeout, worker error).
    #[error("{0}")]
    Forward(String),
    /// The cluster could not be asked (room capacity check, forwarding without a bus).
    #[error("cluster unavailable")]
    Unavailable,
}

impl Rejection {
    /// A short label from a closed set, for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownEvent => "unknown_event",
            Self::RateLimited => "rate_limited",
            Self::MissingRoom => "missing_room",
            Self::RoomNotString => "room_not_string",
            Self::InvalidRoom => "invalid_room",
            Self::RoomTooLong => "room_too_long",
            Self::RoomNotAllowed => "room_not_allowed",
            Self::RoomFull => "room_full",
            Self::TooManyRooms => "too_many_rooms",
            Self::NotMember => "not_member",
            Self::Forward(_) => "forward_failed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The ack argument for an outcome: `{"ok":true}` or `{"ok":false,"error":"<reason>"}`.
pub fn reply(outcome: &Result<(), Rejection>) -> Value {
    match outcome {
        Ok(()) => json!({ "ok": true }),
        Err(r) => json!({ "ok": false, "error": r.to_string() }),
    }
}

/// Checks a room name a client gave.
pub fn check_room_name(room: &str) -> Result<&str, Rejection> {
    if room.is_empty() {
        Err(Rejection::InvalidRoom)
    } else if room.len() > MAX_ROOM_NAME_BYTES {
        Err(Rejection::RoomTooLong)
    } else {
        Ok(room)
    }
}

/// The room an event names, checked.
pub fn room_from_args<'a>(args: &'a [Value], path: &ArgPath) -> Result<&'a str, Rejection> {
    match path.get(args) {
        None | Some(Value::Null) => Err(Rejection::MissingRoom),
        Some(Value::String(s)) => check_room_name(s),
        Some(_) => Err(Rejection::RoomNotString),
    }
}

/// Whether a rule's allow/deny patterns permit a room for these claims.
pub fn check_room(room: &str, rule: &RoomRule, claims: Option<&Claims>) -> Result<(), Rejection> {
    let allowed = rule.allow.is_empty() || rule.allow.iter().any(|p| p.matches(room, claims));
    if !allowed || rule.deny.iter().any(|p| p.matches(room, claims)) {
        return Err(Rejection::RoomNotAllowed);
    }
    Ok(())
}

/// The room of an event under a rule: extracted, well-formed and permitted.
pub fn permitted_room<'a>(
    args: &'a [Value],
    rule: &RoomRule,
    claims: Option<&Claims>,
) -> Result<&'a str, Rejection> {
    let room = room_from_args(args, &rule.room_arg)?;
    check_room(room, rule, claims)?;
    Ok(room)
}

/// What the glue knows about a join when it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinState {
    /// The socket is already in the room.
    pub already_member: bool,
    /// Rooms the socket is in, plus those it is waiting to join (a reservation in flight).
    pub room_count: usize,
    /// The namespace's `max_rooms` (0 = unlimited).
    pub max_rooms: usize,
    /// Members of the room now.
    pub room_len: usize,
    /// The rule's `max_members` (0 = unlimited).
    pub max_members: usize,
}

/// What a permitted join does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinDecision {
    /// Already a member: nothing to do, ack ok, no announcement.
    AlreadyMember,
    /// Join (and announce).
    Join,
}

/// Capacity checks of a join.
pub fn decide_join(s: &JoinState) -> Result<JoinDecision, Rejection> {
    if s.already_member {
        return Ok(JoinDecision::AlreadyMember);
    }
    if s.max_rooms != 0 && s.room_count >= s.max_rooms {
        return Err(Rejection::TooManyRooms);
    }
    if s.max_members != 0 && s.room_len >= s.max_members {
        return Err(Rejection::RoomFull);
    }
    Ok(JoinDecision::Join)
}

/// Membership check of a relay.
pub fn decide_relay(is_member: bool, member_only: bool) -> Result<(), Rejection> {
    if member_only && !is_member {
        Err(Rejection::NotMember)
    } else {
        Ok(())
    }
}

/// What an echo does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EchoPlan<'a> {
    /// Emit the arguments back under this name (and ack `{"ok":true}` if asked).
    Emit(&'a str),
    /// Ack with the arguments themselves.
    AckWithArgs,
}

/// Decides an echo: `as_event` if set; else the ack if one was asked for; else the same name.
pub fn plan_echo<'a>(rule: &'a EchoRule, event_name: &'a str, wants_ack: bool) -> EchoPlan<'a> {
    match (&rule.as_event, wants_ack) {
        (Some(name), _) => EchoPlan::Emit(name),
        (None, true) => EchoPlan::AckWithArgs,
        (None, false) => EchoPlan::Emit(event_name),
    }
}

/// The payload of a join/leave announcement: `{"id", "room", "user"?}` (`user` is `sub`).
pub fn announce_payload(socket_id: &str, room: &str, claims: Option<&Claims>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("id".into(), socket_id.into());
    map.insert("room".into(), room.into());
    if let Some(sub) = claims.and_then(Claims::subject) {
        map.insert("user".into(), sub.clone());
    }
    Value::Object(map)
}

/// Rooms to join on connect: rendered templates, skipping those with missing claims or
/// unusable names, without duplicates.
pub fn auto_join_rooms(templates: &[Template], claims: Option<&Claims>) -> Vec<String> {
    let mut rooms: Vec<String> = Vec::with_capacity(templates.len());
    for t in templates {
        if let Some(room) = t.render(claims)
            && check_room_name(&room).is_ok()
            && !rooms.contains(&room)
        {
            rooms.push(room);
        }
    }
    rooms
}

/// A namespace's token requirement with its verifier.
#[derive(Clone, Debug)]
pub enum Gate {
    /// `auth = "none"`.
    Open,
    /// `auth = "optional"`.
    Optional(Arc<Verifier>),
    /// `auth = "required"`.
    Required(Arc<Verifier>),
}

impl Gate {
    /// The key set its verifier reads, if it has one.
    fn jwks(&self) -> Option<Arc<crate::jwks::Source>> {
        match self {
            Gate::Open => None,
            Gate::Optional(v) | Gate::Required(v) => v.jwks(),
        }
    }
}

/// What a successful connect brings.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectPlan {
    /// Verified claims (None: anonymous).
    pub claims: Option<Claims>,
    /// Rooms to join before the CONNECT reply.
    pub rooms: Vec<String>,
}

/// Decides a connect from the CONNECT payload and the `Authorization` header at `now_unix`.
pub fn plan_connect(
    gate: &Gate,
    auto_join: &[Template],
    auth_payload: &Value,
    authorization: Option<&str>,
    now_unix: u64,
) -> Result<ConnectPlan, AuthError> {
    let claims = match gate {
        Gate::Open => None,
        Gate::Optional(v) | Gate::Required(v) => {
            match auth::extract_token(auth_payload, authorization)? {
                Some(token) => Some(v.verify(token, now_unix)?),
                None if matches!(gate, Gate::Required(_)) => return Err(AuthError::MissingToken),
                None => None,
            }
        }
    };
    let rooms = auto_join_rooms(auto_join, claims.as_ref());
    Ok(ConnectPlan { claims, rooms })
}

// ---------------------------------------------------------------------------------------------
// Counters.

/// Counters of the policy layer, shared by all namespaces (read with [`Stats::snapshot`]). Only
/// the tests read them, so other builds carry neither the type nor its increments (see
/// `tally!`); operators get the `metrics` counters instead.
#[cfg(test)]
#[derive(Debug, Default)]
struct Stats {
    connects_accepted: AtomicU64,
    connects_refused: AtomicU64,
    events_handled: AtomicU64,
    events_rejected: AtomicU64,
    events_unmatched: AtomicU64,
    events_rate_limited: AtomicU64,
    abuse_disconnects: AtomicU64,
}

/// A copy of the counters.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StatsSnapshot {
    /// Connects the middleware let through.
    connects_accepted: u64,
    /// Connects refused (token missing or invalid, claims not allowed).
    connects_refused: u64,
    /// Events a rule carried out.
    events_handled: u64,
    /// Events a rule refused (room not allowed, full, not a member, …).
    events_rejected: u64,
    /// Events with no rule (dropped).
    events_unmatched: u64,
    /// Events over the rate limit (dropped).
    events_rate_limited: u64,
    /// Sockets disconnected for repeated rate-limit violations.
    abuse_disconnects: u64,
}

#[cfg(test)]
impl Stats {
    /// The counters now.
    fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connects_accepted: r(&self.connects_accepted),
            connects_refused: r(&self.connects_refused),
            events_handled: r(&self.events_handled),
            events_rejected: r(&self.events_rejected),
            events_unmatched: r(&self.events_unmatched),
            events_rate_limited: r(&self.events_rate_limited),
            abuse_disconnects: r(&self.abuse_disconnects),
        }
    }
}

/// Bumps one `Stats` counter of a [`NamespacePolicy`] in test builds; nothing in others.
macro_rules! tally {
    ($policy:expr, $counter:ident) => {{
        #[cfg(test)]
        $policy.stats.$counter.fetch_add(1, Ordering::Relaxed);
    }};
}

// ---------------------------------------------------------------------------------------------
// Glue: the policies on the embedding API.

/// Why the policies could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A namespace needs a secret that [`Config::apply_env`] has not loaded.
    #[error(
        "namespace {namespace}: the JWT secret from {var} is not loaded (call Config::apply_env first)"
    )]
    SecretNotLoaded {
        /// The namespace (name or pattern).
        namespace: String,
        /// The environment variable.
        var: String,
    },
    /// A namespace with auth has no `[namespace.jwt]` (a config built by hand).
    #[error("namespace {namespace}: auth is {auth:?} but there is no jwt configuration")]
    NoJwt {
        /// The namespace (name or pattern).
        namespace: String,
        /// Its auth mode.
        auth: AuthMode,
    },
    /// The verification key does not fit the algorithm.
    #[error("namespace {namespace}: {source}")]
    Key {
        /// The namespace (name or pattern).
        namespace: String,
        /// The key problem.
        source: KeyError,
    },
}

/// The cluster-wide outcome of a capacity-checked join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// There was room: the socket may join (the authority counts it as a member already).
    Joined,
    /// The socket already was a member.
    AlreadyMember,
    /// The room has reached its capacity.
    Full,
}

/// What the policies need from the cluster: forwarding client events to workers, and room
/// capacity checked across every node.
pub trait Bridge: Send + Sync + 'static {
    /// Hands a client event to the workers. With `timeout`, waits that long for a worker's
    /// reply: Ok(the ack's arguments) or Err(a reason for the client).
    fn forward(
        &self,
        socket: &Socket,
        event: &str,
        args: Args,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Result<Args, String>>;
    /// Resolves once what this node's sockets have joined so far is subscribed cluster-wide, so
    /// that a join's ack promises the room's traffic.
    fn settled(&self) -> BoxFuture<'static, ()>;
    /// Reserves a place in a room with capacity `max_members` for the socket.
    fn reserve(
        &self,
        socket: &Socket,
        room: &str,
        max_members: usize,
    ) -> BoxFuture<'static, Result<Reservation, String>>;
    /// Runs `join` (a local join) with the namespace's log held still and returns the last
    /// sequence the log delivered here: a history read up to it meets the socket's live traffic
    /// exactly, without a gap or a duplicate. `None` (and `join` run as it is): no log.
    fn hold_log(&self, ns: &str, join: &mut dyn FnMut()) -> Option<u64> {
        let _ = ns;
        join();
        None
    }
    /// The messages of `room` stored in the log up to sequence `end` that `rule` keeps, oldest
    /// first, each `{"event", "args", "offset"}`.
    fn history(
        &self,
        ns: &str,
        room: &str,
        end: u64,
        rule: HistoryRule,
    ) -> BoxFuture<'static, Result<Vec<Value>, String>> {
        let _ = (ns, room, end, rule);
        Box::pin(async { Err("no history here".to_owned()) })
    }
}

/// The state a rate-limited socket carries (private type: nobody else can replace it). Kept
/// for the connection ([`ConnectRequest::keep`]): leaving and re-entering the namespace does not
/// refill the bucket.
struct SocketLimiter(Mutex<Limiter>);

/// Joins of a socket that wait for a cluster reservation: they count against `max_rooms` from
/// the moment they are let through, so that a batch of joins cannot overshoot it.
#[derive(Default)]
struct JoinsInFlight(AtomicUsize);

/// One join counted in [`JoinsInFlight`] until dropped.
struct JoinInFlight(Arc<JoinsInFlight>);

impl JoinInFlight {
    fn new(joins: Arc<JoinsInFlight>) -> Self {
        joins.0.fetch_add(1, Ordering::Relaxed);
        Self(joins)
    }
}

impl Drop for JoinInFlight {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One namespace's policy, shared by its handlers.
struct NamespacePolicy {
    gate: Gate,
    auto_join: Vec<Template>,
    max_rooms: usize,
    rate_limit: Option<RateLimitConfig>,
    rules: HashMap<String, Action>,
    #[cfg(test)]
    stats: Arc<Stats>,
    bridge: Option<Arc<dyn Bridge>>,
}

impl NamespacePolicy {
    fn build(ns: &NamespaceConfig, bridge: Option<Arc<dyn Bridge>>) -> Result<Self, PolicyError> {
        let namespace = ns.matcher.describe();
        let gate = match ns.auth {
            AuthMode::None => Gate::Open,
            mode => {
                let jwt = ns.jwt.as_ref().ok_or_else(|| PolicyError::NoJwt {
                    namespace: namespace.clone(),
                    auth: mode,
                })?;
                let verifier = match &jwt.jwks {
                    Some(source) => Verifier::with_jwks(Arc::clone(source)),
                    None => {
                        let key = jwt
                            .key
                            .clone()
                            .ok_or_else(|| PolicyError::SecretNotLoaded {
                                namespace: namespace.clone(),
                                var: match &jwt.key_source {
                                    KeySource::SecretEnv { var, .. } => var.clone(),
                                    KeySource::PublicKeyFile { path } => path.display().to_string(),
                                    KeySource::Jwks(origin) => origin.to_string(),
                                },
                            })?;
                        Verifier::new(jwt.algorithm, key)
                    }
                }
                .map_err(|source| PolicyError::Key {
                    namespace: namespace.clone(),
                    source,
                })?
                .with_issuers(jwt.issuers.clone())
                .with_audiences(jwt.audiences.clone())
                .with_leeway_seconds(jwt.leeway_seconds)
                .with_required_claims(ns.required_claims.clone());
                if mode == AuthMode::Required {
                    Gate::Required(Arc::new(verifier))
                } else {
                    Gate::Optional(Arc::new(verifier))
                }
            }
        };
        Ok(Self {
            gate,
            auto_join: ns.auto_join.clone(),
            max_rooms: ns.max_rooms,
            rate_limit: ns.rate_limit.clone(),
            rules: ns
                .events
                .iter()
                .map(|e| (e.name.clone(), e.action.clone()))
                .collect(),
            #[cfg(test)]
            stats: Arc::default(),
            bridge,
        })
    }

    fn on_connect_request(&self, req: &mut ConnectRequest<'_>) -> Result<(), ConnectError> {
        let plan = plan_connect(
            &self.gate,
            &self.auto_join,
            req.auth(),
            req.header("authorization"),
            unix_now(),
        );
        match plan {
            Err(e) => {
                tally!(self, connects_refused);
                ::metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => e.label())
                    .increment(1);
                tracing::debug!(nsp = req.namespace(), reason = e.label(), "connect refused");
                Err(ConnectError::new(e.to_string()).with_data(json!({ "code": e.label() })))
            }
            Ok(plan) => {
                for room in plan.rooms {
                    req.join(room);
                }
                if let Some(claims) = plan.claims {
                    req.insert(claims);
                }
                if let Some(rl) = &self.rate_limit {
                    req.keep(|| {
                        SocketLimiter(Mutex::new(Limiter::new(&rl.settings, Instant::now())))
                    });
                }
                if self.max_rooms != 0 && self.bridge.is_some() {
                    req.insert(JoinsInFlight::default());
                }
                tally!(self, connects_accepted);
                Ok(())
            }
        }
    }

    fn on_event(self: &Arc<Self>, socket: &Socket, mut event: Event, now: Instant) {
        if let Some(rl) = &self.rate_limit
            && socket.get::<SocketLimiter>().is_none()
        {
            // A recovered socket that skipped the connect checks starts a bucket of its own, as
            // every new connection does.
            socket.insert(SocketLimiter(Mutex::new(Limiter::new(&rl.settings, now))));
        }
        if self.max_rooms != 0 && self.bridge.is_some() && socket.get::<JoinsInFlight>().is_none() {
            socket.insert(JoinsInFlight::default());
        }
        if let (Some(rl), Some(limiter)) = (&self.rate_limit, socket.get::<SocketLimiter>()) {
            let verdict = limiter.0.lock().check(now);
            if verdict != Verdict::Allow {
                tally!(self, events_rate_limited);
                crate::metrics::limited(Limit::RateLimit);
                if event.wants_ack() {
                    event.ack(ack_args(&Err(Rejection::RateLimited)));
                } else if let Some(name) = &rl.error_event {
                    let payload =
                        json!({ "error": Rejection::RateLimited.to_string(), "event": event.name });
                    socket.emit(name, Args::new(vec![payload]));
                }
                if verdict == Verdict::Disconnect {
                    tally!(self, abuse_disconnects);
                    tracing::debug!(
                        socket = socket.id(),
                        "disconnected for repeated rate-limit violations"
                    );
                    socket.disconnect();
                }
                return;
            }
        }
        let Some(action) = self.rules.get(event.name.as_str()) else {
            tally!(self, events_unmatched);
            ::metrics::counter!(crate::metrics::EVENTS_UNMATCHED).increment(1);
            tracing::trace!(socket = socket.id(), event = %event.name, "event without rule dropped");
            event.ack(ack_args(&Err(Rejection::UnknownEvent)));
            return;
        };
        let claims = socket.get::<Claims>();
        let claims = claims.as_deref();
        let outcome = match action {
            Action::Join(rule) if rule.max_members > 0 && self.bridge.is_some() => {
                return self.join_cluster(socket, event, rule, claims);
            }
            Action::Forward(rule) => return self.forward(socket, event, rule),
            Action::Join(rule) if rule.history.is_some() && self.bridge.is_some() => {
                return self.join_with_history(socket, event, rule, claims);
            }
            Action::Join(rule) => {
                let outcome = self.join(socket, &event, rule, claims);
                // Only take the ack when a bridge will send it: taking it otherwise would drop it.
                if let (Ok(()), Some(bridge)) = (&outcome, &self.bridge)
                    && let Some(acker) = event.take_ack()
                {
                    let settled = bridge.settled();
                    socket.spawn(async move {
                        settled.await;
                        acker.send(ack_args(&Ok(())));
                    });
                }
                outcome
            }
            Action::Leave(rule) => leave(socket, &event, rule, claims),
            Action::Relay(rule) => return self.finish_owned(relay(socket, event, rule, claims)),
            Action::Broadcast(rule) => return self.finish_owned(broadcast(socket, event, rule)),
            Action::Echo(rule) => return self.finish_owned(echo(socket, event, rule)),
        };
        self.count(&outcome);
        event.ack(ack_args(&outcome));
    }

    fn count(&self, outcome: &Result<(), Rejection>) {
        match outcome {
            Ok(()) => tally!(self, events_handled),
            Err(r) => {
                if *r == Rejection::TooManyRooms {
                    crate::metrics::limited(Limit::Rooms);
                }
                tally!(self, events_rejected);
                tracing::trace!(reason = r.label(), "event refused");
            }
        }
    }

    /// Counts an outcome whose ack the action already sent.
    fn finish_owned(&self, outcome: Result<(), Rejection>) {
        self.count(&outcome);
    }

    /// A join whose capacity is counted cluster-wide: the broker reserves the place, then the
    /// socket joins here; the ack waits for both.
    fn join_cluster(
        self: &Arc<Self>,
        socket: &Socket,
        mut event: Event,
        rule: &JoinRule,
        claims: Option<&Claims>,
    ) {
        let decided = self.precheck_join(socket, &event, rule, claims, 0);
        let (room, decision) = match decided {
            Ok(d) => d,
            Err(r) => {
                let outcome = Err(r);
                self.count(&outcome);
                event.ack(ack_args(&outcome));
                return;
            }
        };
        if decision == JoinDecision::AlreadyMember {
            self.count(&Ok(()));
            event.ack(ack_args(&Ok(())));
            return;
        }
        let Some(bridge) = self.bridge.clone() else {
            return;
        };
        let in_flight = socket.get::<JoinsInFlight>().map(JoinInFlight::new);
        let acker = event.take_ack();
        let policy = self.clone();
        let joining = socket.clone();
        let rule = rule.clone();
        let announce_claims = claims.cloned();
        socket.spawn(async move {
            let socket = joining;
            let mut history = None;
            let outcome = match bridge.reserve(&socket, &room, rule.max_members).await {
                Ok(Reservation::Full) => Err(Rejection::RoomFull),
                Ok(Reservation::Joined | Reservation::AlreadyMember) => {
                    let mut joined = false;
                    let end = bridge.hold_log(socket.namespace().name(), &mut || {
                        joined = socket.join(room.as_str());
                    });
                    if joined && let Some(announce) = &rule.announce {
                        let payload =
                            announce_payload(socket.id(), &room, announce_claims.as_ref());
                        let _ = socket
                            .to(room.as_str())
                            .emit(announce, Args::new(vec![payload]));
                    }
                    bridge.settled().await;
                    if let (Some(h), Some(end)) = (rule.history, end) {
                        let ns = socket.namespace().name().to_owned();
                        history = Some(bridge.history(&ns, &room, end, h).await);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, room = %room, "room capacity check failed");
                    Err(Rejection::Unavailable)
                }
            };
            drop(in_flight);
            policy.count(&outcome);
            if let Some(acker) = acker {
                acker.send(history_ack(&outcome, history));
            }
        });
    }

    /// A join whose ack carries the room's recent messages: the join is made with the log held
    /// still, so the history (read up to that point) and the live traffic that follows meet
    /// exactly.
    fn join_with_history(
        self: &Arc<Self>,
        socket: &Socket,
        mut event: Event,
        rule: &JoinRule,
        claims: Option<&Claims>,
    ) {
        let (Some(bridge), Some(h)) = (self.bridge.clone(), rule.history) else {
            return;
        };
        let mut outcome = Ok(());
        let ns = socket.namespace().name().to_owned();
        let end = bridge.hold_log(&ns, &mut || {
            outcome = self.join(socket, &event, rule, claims);
        });
        self.count(&outcome);
        let Some(acker) = event.take_ack() else {
            return;
        };
        let room = permitted_room(&event.args, &rule.room, claims)
            .map(str::to_owned)
            .ok();
        let settled = bridge.settled();
        socket.spawn(async move {
            settled.await;
            let history = match (&outcome, room, end) {
                (Ok(()), Some(room), Some(end)) => Some(bridge.history(&ns, &room, end, h).await),
                _ => None,
            };
            acker.send(history_ack(&outcome, history));
        });
    }

    /// Hands the event to the workers; the worker's reply is the client's ack.
    fn forward(&self, socket: &Socket, mut event: Event, rule: &ForwardRule) {
        let Some(bridge) = self.bridge.clone() else {
            let outcome = Err(Rejection::Unavailable);
            self.count(&outcome);
            event.ack(ack_args(&outcome));
            return;
        };
        let acker = event.take_ack();
        let name = std::mem::take(&mut event.name);
        let timeout = acker.is_some().then_some(rule.timeout);
        let reply = bridge.forward(socket, &name, event.into_args(), timeout);
        tally!(self, events_handled);
        socket.spawn(async move {
            let result = reply.await;
            match (acker, result) {
                (Some(acker), Ok(args)) => acker.send(args),
                (Some(acker), Err(e)) => acker.send(ack_args(&Err(Rejection::Forward(e)))),
                (None, Err(e)) => tracing::debug!(event = %name, error = %e, "forward failed"),
                (None, Ok(_)) => {}
            }
        });
    }

    /// The checks of a join that need no capacity count: the permitted room and whether the
    /// socket is a member already or in too many rooms.
    fn precheck_join(
        &self,
        socket: &Socket,
        event: &Event,
        rule: &JoinRule,
        claims: Option<&Claims>,
        room_len: usize,
    ) -> Result<(String, JoinDecision), Rejection> {
        let room = permitted_room(&event.args, &rule.room, claims)?;
        // A room named after a live socket would receive what is sent to that socket if ids are
        // ever used as rooms; never let a client in.
        if socket.namespace().socket(room).is_some() {
            return Err(Rejection::RoomNotAllowed);
        }
        let in_flight = socket
            .get::<JoinsInFlight>()
            .map_or(0, |joins| joins.0.load(Ordering::Relaxed));
        let state = JoinState {
            already_member: socket.in_room(room),
            room_count: socket.room_count() + in_flight,
            max_rooms: self.max_rooms,
            room_len,
            max_members: rule.max_members,
        };
        Ok((room.to_owned(), decide_join(&state)?))
    }

    fn join(
        &self,
        socket: &Socket,
        event: &Event,
        rule: &JoinRule,
        claims: Option<&Claims>,
    ) -> Result<(), Rejection> {
        let room = permitted_room(&event.args, &rule.room, claims)?;
        let room_len = socket.namespace().room_len(room);
        let (room, decision) = self.precheck_join(socket, event, rule, claims, room_len)?;
        let room = room.as_str();
        // precheck_join answers from a snapshot; join_within re-checks the capacity atomically.
        if decision == JoinDecision::Join
            && socket
                .join_within(room, rule.max_members)
                .map_err(|_| Rejection::RoomFull)?
            && let Some(announce) = &rule.announce
        {
            let payload = announce_payload(socket.id(), room, claims);
            let _ = socket.to(room).emit(announce, Args::new(vec![payload]));
        }
        Ok(())
    }
}

fn leave(
    socket: &Socket,
    event: &Event,
    rule: &LeaveRule,
    claims: Option<&Claims>,
) -> Result<(), Rejection> {
    let room = permitted_room(&event.args, &rule.room, claims)?;
    if socket.leave(room)
        && let Some(announce) = &rule.announce
    {
        let payload = announce_payload(socket.id(), room, claims);
        let _ = socket.to(room).emit(announce, Args::new(vec![payload]));
    }
    Ok(())
}

fn relay(
    socket: &Socket,
    mut event: Event,
    rule: &RelayRule,
    claims: Option<&Claims>,
) -> Result<(), Rejection> {
    let room = match permitted_room(&event.args, &rule.room, claims).and_then(|room| {
        decide_relay(socket.in_room(room), rule.member_only).map(|()| room.to_owned())
    }) {
        Ok(room) => room,
        Err(r) => {
            event.ack(ack_args(&Err(r.clone())));
            return Err(r);
        }
    };
    let acker = event.take_ack();
    let name = std::mem::take(&mut event.name);
    let out = rule.as_event.as_deref().unwrap_or(&name);
    let target = if rule.include_sender {
        socket.namespace().to(room)
    } else {
        socket.to(room)
    };
    let _ = target.emit(out, event.into_args());
    if let Some(acker) = acker {
        acker.send(ack_args(&Ok(())));
    }
    Ok(())
}

fn broadcast(socket: &Socket, mut event: Event, rule: &BroadcastRule) -> Result<(), Rejection> {
    let acker = event.take_ack();
    let name = std::mem::take(&mut event.name);
    let out = rule.as_event.as_deref().unwrap_or(&name);
    let target = if rule.include_sender {
        socket.namespace().broadcast()
    } else {
        socket.broadcast()
    };
    let _ = target.emit(out, event.into_args());
    if let Some(acker) = acker {
        acker.send(ack_args(&Ok(())));
    }
    Ok(())
}

fn echo(socket: &Socket, mut event: Event, rule: &EchoRule) -> Result<(), Rejection> {
    let acker = event.take_ack();
    let name = std::mem::take(&mut event.name);
    match plan_echo(rule, &name, acker.is_some()) {
        EchoPlan::Emit(out) => {
            socket.emit(out, event.into_args());
            if let Some(acker) = acker {
                acker.send(ack_args(&Ok(())));
            }
        }
        EchoPlan::AckWithArgs => {
            if let Some(acker) = acker {
                acker.send(event.into_args());
            }
        }
    }
    Ok(())
}

fn ack_args(outcome: &Result<(), Rejection>) -> Args {
    Args::new(vec![reply(outcome)])
}

/// A join's ack with the room's history: `{"ok":true,"history":[…]}`; a history that could not
/// be read leaves the join as it is and says why in `history_error`.
fn history_ack(
    outcome: &Result<(), Rejection>,
    history: Option<Result<Vec<Value>, String>>,
) -> Args {
    let mut reply = reply(outcome);
    if let (Some(history), Value::Object(map)) = (history, &mut reply) {
        match history {
            Ok(items) => {
                ::metrics::counter!(crate::metrics::HISTORY_SERVED).increment(items.len() as u64);
                map.insert("history".into(), Value::Array(items));
            }
            Err(e) => {
                map.insert("history".into(), Value::Array(Vec::new()));
                map.insert("history_error".into(), Value::String(e));
            }
        }
    }
    Args::new(vec![reply])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Registers every configured namespace's policy on the server: middleware (auth, required
/// claims, auto-join, rate-limit state) and an `on_any` event dispatcher. Call once, after
/// [`Config::apply_env`]; nothing is registered if any namespace fails.
pub fn install(
    server: &Server,
    config: &Config,
    bridge: Option<Arc<dyn Bridge>>,
) -> Result<(), PolicyError> {
    register(server, build_all(config, bridge)?);
    Ok(())
}

/// [`install`], sharing one set of counters among the namespaces and returning it.
#[cfg(test)]
fn install_counting(
    server: &Server,
    config: &Config,
    bridge: Option<Arc<dyn Bridge>>,
) -> Result<Arc<Stats>, PolicyError> {
    let stats = Arc::<Stats>::default();
    let mut policies = build_all(config, bridge)?;
    for (_, policy) in &mut policies {
        policy.stats = Arc::clone(&stats);
    }
    register(server, policies);
    Ok(stats)
}

fn build_all(
    config: &Config,
    bridge: Option<Arc<dyn Bridge>>,
) -> Result<Vec<(&NamespaceConfig, NamespacePolicy)>, PolicyError> {
    auth::install_crypto_provider();
    config
        .namespaces
        .iter()
        .map(|ns| NamespacePolicy::build(ns, bridge.clone()).map(|p| (ns, p)))
        .collect()
}

fn register(server: &Server, policies: Vec<(&NamespaceConfig, NamespacePolicy)>) {
    for (ns, policy) in policies {
        let handle = match &ns.matcher {
            NamespaceMatch::Static(name) => server.of(name),
            NamespaceMatch::Pattern(re) => server.of_pattern(re.clone()),
        };
        if let Some(r) = &ns.recovery {
            handle.set_recovery(crate::sio::Recovery {
                max_disconnection: r.window,
                skip_middlewares: r.skip_middlewares,
            });
        }
        if let Some(source) = policy.gate.jwks() {
            // A token naming a key the set does not hold yet waits for the fetch it asks for
            // (bounded, rate-limited), so the first token of a rotated key is accepted.
            handle.prepare_connect(move |auth_payload, authorization| {
                let token = auth::extract_token(auth_payload, authorization).ok()??;
                let header = auth::peek_header(token)?;
                let wait = source.wait_for_key(header.kid.as_deref())?;
                Some(Box::pin(wait) as futures_util::future::BoxFuture<'static, ()>)
            });
        }
        let policy = Arc::new(policy);
        let p = policy.clone();
        handle.use_middleware(move |req| p.on_connect_request(req));
        let p = policy;
        handle.on_any(move |socket, event| p.on_event(socket, event, Instant::now()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Claims {
        Claims::new(v.as_object().cloned().unwrap_or_default())
    }

    fn room_rule(allow: &[&str], deny: &[&str], arg: &str) -> RoomRule {
        RoomRule {
            room_arg: ArgPath::parse(arg).unwrap(),
            allow: allow.iter().map(|p| Template::parse(p).unwrap()).collect(),
            deny: deny.iter().map(|p| Template::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn permitted_room_table() {
        let alice = claims(json!({"sub": "alice"}));
        let long = "x".repeat(MAX_ROOM_NAME_BYTES + 1);
        let max = "x".repeat(MAX_ROOM_NAME_BYTES);
        // (name, allow, deny, arg path, args, claims, expected)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a str,
            Vec<Value>,
            Option<&'a Claims>,
            Result<&'a str, Rejection>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "any room",
                &[],
                &[],
                "0",
                vec![json!("lobby")],
                None,
                Ok("lobby"),
            ),
            (
                "default chat rule",
                &["*"],
                &["user:*"],
                "0",
                vec![json!("lobby")],
                None,
                Ok("lobby"),
            ),
            (
                "user rooms denied",
                &["*"],
                &["user:*"],
                "0",
                vec![json!("user:bob")],
                None,
                Err(Rejection::RoomNotAllowed),
            ),
            (
                "own user room",
                &["user:{sub}"],
                &[],
                "0",
                vec![json!("user:alice")],
                Some(&alice),
                Ok("user:alice"),
            ),
            (
                "other's user room",
                &["user:{sub}"],
                &[],
                "0",
                vec![json!("user:bob")],
                Some(&alice),
                Err(Rejection::RoomNotAllowed),
            ),
            (
                "anonymous templated allow",
                &["user:{sub}"],
                &[],
                "0",
                vec![json!("user:alice")],
                None,
                Err(Rejection::RoomNotAllowed),
            ),
            (
                "allow list",
                &["lobby", "game:*"],
                &[],
                "0",
                vec![json!("game:42")],
                None,
                Ok("game:42"),
            ),
            (
                "not in allow list",
                &["lobby", "game:*"],
                &[],
                "0",
                vec![json!("other")],
                None,
                Err(Rejection::RoomNotAllowed),
            ),
            (
                "deny wins",
                &["*"],
                &["game:*"],
                "0",
                vec![json!("game:1")],
                None,
                Err(Rejection::RoomNotAllowed),
            ),
            (
                "object field",
                &[],
                &[],
                "0.room",
                vec![json!({"room": "r"})],
                None,
                Ok("r"),
            ),
            (
                "missing arg",
                &[],
                &[],
                "0",
                vec![],
                None,
                Err(Rejection::MissingRoom),
            ),
            (
                "null arg",
                &[],
                &[],
                "0",
                vec![Value::Null],
                None,
                Err(Rejection::MissingRoom),
            ),
            (
                "missing field",
                &[],
                &[],
                "0.room",
                vec![json!({"text": "hi"})],
                None,
                Err(Rejection::MissingRoom),
            ),
            (
                "not a string",
                &[],
                &[],
                "0",
                vec![json!(42)],
                None,
                Err(Rejection::RoomNotString),
            ),
            (
                "object where string",
                &[],
                &[],
                "0",
                vec![json!({"room": "r"})],
                None,
                Err(Rejection::RoomNotString),
            ),
            (
                "empty",
                &[],
                &[],
                "0",
                vec![json!("")],
                None,
                Err(Rejection::InvalidRoom),
            ),
            (
                "too long",
                &[],
                &[],
                "0",
                vec![json!(long)],
                None,
                Err(Rejection::RoomTooLong),
            ),
            (
                "longest",
                &[],
                &[],
                "0",
                vec![json!(max.clone())],
                None,
                Ok(max.as_str()),
            ),
        ];
        for (name, allow, deny, arg, args, cl, want) in cases {
            let rule = room_rule(allow, deny, arg);
            assert_eq!(permitted_room(&args, &rule, cl), want, "{name}");
        }
    }

    #[test]
    fn decide_join_table() {
        let base = JoinState {
            already_member: false,
            room_count: 1,
            max_rooms: 10,
            room_len: 3,
            max_members: 0,
        };
        let cases = [
            ("plain join", base, Ok(JoinDecision::Join)),
            (
                "already member",
                JoinState {
                    already_member: true,
                    room_count: 10,
                    room_len: 99,
                    max_members: 5,
                    ..base
                },
                Ok(JoinDecision::AlreadyMember),
            ),
            (
                "too many rooms",
                JoinState {
                    room_count: 10,
                    ..base
                },
                Err(Rejection::TooManyRooms),
            ),
            (
                "unlimited rooms",
                JoinState {
                    room_count: 10_000,
                    max_rooms: 0,
                    ..base
                },
                Ok(JoinDecision::Join),
            ),
            (
                "room full",
                JoinState {
                    room_len: 5,
                    max_members: 5,
                    ..base
                },
                Err(Rejection::RoomFull),
            ),
            (
                "last seat",
                JoinState {
                    room_len: 4,
                    max_members: 5,
                    ..base
                },
                Ok(JoinDecision::Join),
            ),
            (
                "too many rooms checked first",
                JoinState {
                    room_count: 10,
                    room_len: 5,
                    max_members: 5,
                    ..base
                },
                Err(Rejection::TooManyRooms),
            ),
        ];
        for (name, state, want) in cases {
            assert_eq!(decide_join(&state), want, "{name}");
        }
    }

    #[test]
    fn decide_relay_table() {
        let cases = [
            (true, true, Ok(())),
            (false, true, Err(Rejection::NotMember)),
            (false, false, Ok(())),
            (true, false, Ok(())),
        ];
        for (member, member_only, want) in cases {
            assert_eq!(
                decide_relay(member, member_only),
                want,
                "{member} {member_only}"
            );
        }
    }

    #[test]
    fn plan_echo_table() {
        let with = EchoRule {
            as_event: Some("pong".into()),
        };
        let without = EchoRule { as_event: None };
        let cases = [
            (&with, true, EchoPlan::Emit("pong")),
            (&with, false, EchoPlan::Emit("pong")),
            (&without, true, EchoPlan::AckWithArgs),
            (&without, false, EchoPlan::Emit("ping")),
        ];
        for (rule, wants_ack, want) in cases {
            assert_eq!(
                plan_echo(rule, "ping", wants_ack),
                want,
                "{rule:?} {wants_ack}"
            );
        }
    }

    #[test]
    fn reply_table() {
        let cases = [
            (Ok(()), r#"{"ok":true}"#),
            (
                Err(Rejection::UnknownEvent),
                r#"{"ok":false,"error":"unknown event"}"#,
            ),
            (
                Err(Rejection::RateLimited),
                r#"{"ok":false,"error":"rate limited"}"#,
            ),
            (
                Err(Rejection::MissingRoom),
                r#"{"ok":false,"error":"missing room argument"}"#,
            ),
            (
                Err(Rejection::RoomNotString),
                r#"{"ok":false,"error":"room must be a string"}"#,
            ),
            (
                Err(Rejection::InvalidRoom),
                r#"{"ok":false,"error":"invalid room"}"#,
            ),
            (
                Err(Rejection::RoomTooLong),
                r#"{"ok":false,"error":"room name too long"}"#,
            ),
            (
                Err(Rejection::RoomNotAllowed),
                r#"{"ok":false,"error":"room not allowed"}"#,
            ),
            (
                Err(Rejection::RoomFull),
                r#"{"ok":false,"error":"room full"}"#,
            ),
            (
                Err(Rejection::TooManyRooms),
                r#"{"ok":false,"error":"too many rooms"}"#,
            ),
            (
                Err(Rejection::NotMember),
                r#"{"ok":false,"error":"not a member of the room"}"#,
            ),
        ];
        for (outcome, want) in cases {
            // Key order matters to byte-comparing clients: serde_json keeps insertion order.
            assert_eq!(reply(&outcome).to_string(), want);
        }
    }

    #[test]
    fn announce_payload_table() {
        let with_sub = claims(json!({"sub": "alice"}));
        let numeric = claims(json!({"sub": 42}));
        let no_sub = claims(json!({"role": "x"}));
        let cases: Vec<(Option<&Claims>, &str)> = vec![
            (
                Some(&with_sub),
                r#"{"id":"n1.abc","room":"lobby","user":"alice"}"#,
            ),
            (
                Some(&numeric),
                r#"{"id":"n1.abc","room":"lobby","user":42}"#,
            ),
            (Some(&no_sub), r#"{"id":"n1.abc","room":"lobby"}"#),
            (None, r#"{"id":"n1.abc","room":"lobby"}"#),
        ];
        for (cl, want) in cases {
            assert_eq!(announce_payload("n1.abc", "lobby", cl).to_string(), want);
        }
    }

    #[test]
    fn auto_join_table() {
        let t = |srcs: &[&str]| {
            srcs.iter()
                .map(|s| Template::parse_exact(s).unwrap())
                .collect::<Vec<_>>()
        };
        let alice = claims(json!({"sub": "alice", "org": "acme"}));
        let huge = claims(json!({"sub": "x".repeat(MAX_ROOM_NAME_BYTES)}));
        let cases: Vec<(Vec<Template>, Option<&Claims>, Vec<&str>)> = vec![
            (
                t(&["user:{sub}", "org:{org}", "lobby"]),
                Some(&alice),
                vec!["user:alice", "org:acme", "lobby"],
            ),
            (t(&["user:{sub}", "lobby"]), None, vec!["lobby"]),
            (t(&["{org}", "acme"]), Some(&alice), vec!["acme"]),
            (t(&["user:{sub}"]), Some(&huge), vec![]),
            (t(&["team:{team}"]), Some(&alice), vec![]),
        ];
        for (templates, cl, want) in cases {
            assert_eq!(auto_join_rooms(&templates, cl), want);
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn token(v: Value) -> String {
        use jsonwebtoken::{EncodingKey, Header, encode};
        auth::install_crypto_provider();
        encode(
            &Header::new(auth::Algorithm::HS256),
            &v,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier() -> Arc<Verifier> {
        let key = auth::key_from_secret(auth::Algorithm::HS256, SECRET).unwrap();
        Arc::new(
            Verifier::new(auth::Algorithm::HS256, key)
                .unwrap()
                .with_required_claims(vec![auth::RequiredClaim {
                    name: "role".into(),
                    accepted: vec![json!("admin")],
                }]),
        )
    }

    #[test]
    fn plan_connect_table() {
        let admin = token(json!({"sub": "alice", "role": "admin", "exp": NOW + 60}));
        let user = token(json!({"sub": "bob", "role": "user", "exp": NOW + 60}));
        let expired = token(json!({"sub": "alice", "role": "admin", "exp": NOW - 60}));
        let templates = vec![
            Template::parse_exact("user:{sub}").unwrap(),
            Template::parse_exact("everyone").unwrap(),
        ];
        let open = Gate::Open;
        let optional = Gate::Optional(verifier());
        let required = Gate::Required(verifier());
        let bearer = format!("Bearer {admin}");
        // (name, gate, auth payload, header, expected rooms or error)
        type Case<'a> = (
            &'a str,
            &'a Gate,
            Value,
            Option<&'a str>,
            Result<Vec<&'a str>, AuthError>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "open ignores tokens",
                &open,
                json!({"token": "garbage"}),
                None,
                Ok(vec!["everyone"]),
            ),
            (
                "optional anonymous",
                &optional,
                json!({}),
                None,
                Ok(vec!["everyone"]),
            ),
            (
                "optional with token",
                &optional,
                json!({"token": admin}),
                None,
                Ok(vec!["user:alice", "everyone"]),
            ),
            (
                "optional bad token refused",
                &optional,
                json!({"token": "garbage"}),
                None,
                Err(AuthError::Malformed),
            ),
            (
                "optional claim checked",
                &optional,
                json!({"token": user}),
                None,
                Err(AuthError::ClaimNotAllowed("role".into())),
            ),
            (
                "required missing",
                &required,
                json!({}),
                None,
                Err(AuthError::MissingToken),
            ),
            (
                "required ok",
                &required,
                json!({"token": admin}),
                None,
                Ok(vec!["user:alice", "everyone"]),
            ),
            (
                "required via header",
                &required,
                json!({}),
                Some(bearer.as_str()),
                Ok(vec!["user:alice", "everyone"]),
            ),
            (
                "required expired",
                &required,
                json!({"token": expired}),
                None,
                Err(AuthError::Expired),
            ),
            (
                "required wrong role",
                &required,
                json!({"token": user}),
                None,
                Err(AuthError::ClaimNotAllowed("role".into())),
            ),
            (
                "token not a string",
                &required,
                json!({"token": 1}),
                None,
                Err(AuthError::Malformed),
            ),
        ];
        for (name, gate, payload, header, want) in cases {
            let got = plan_connect(gate, &templates, &payload, header, NOW).map(|p| p.rooms);
            let want = want.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
        let plan = plan_connect(
            &required,
            &templates,
            &json!({"token": token(json!({"sub": "alice", "role": "admin", "exp": NOW + 60}))}),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(plan.claims.unwrap().subject(), Some(&json!("alice")));
    }

    #[test]
    fn building_policies_checks_keys() {
        let mut config = Config::from_str(
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"\n",
            "t.toml",
        )
        .unwrap();
        let err = NamespacePolicy::build(&config.namespaces[0], None)
            .err()
            .unwrap();
        assert!(matches!(err, PolicyError::SecretNotLoaded { .. }), "{err}");
        assert!(err.to_string().contains("apply_env"));
        config
            .apply_env(|k| (k == "S").then(|| String::from_utf8_lossy(SECRET).into_owned()))
            .unwrap();
        let p = NamespacePolicy::build(&config.namespaces[0], None).unwrap();
        assert!(matches!(p.gate, Gate::Required(_)));
    }

    #[test]
    fn a_jwks_namespace_refuses_tokens_until_its_set_is_loaded() {
        let config = Config::from_str(
            "[[namespace]]\nname = \"/a\"\nauth = \"optional\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\n",
            "t.toml",
        )
        .unwrap();
        let p = NamespacePolicy::build(&config.namespaces[0], None).unwrap();
        assert!(matches!(p.gate, Gate::Optional(_)));
        let token = json!({ "token": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln" });
        assert_eq!(
            plan_connect(&p.gate, &[], &token, None, 0),
            Err(AuthError::KeysUnavailable)
        );
        // The header's algorithm is checked first: HS256 is not configured.
        let hs = json!({ "token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.c2ln" });
        assert_eq!(
            plan_connect(&p.gate, &[], &hs, None, 0),
            Err(AuthError::WrongAlgorithm)
        );
        // Optional: no token, anonymous.
        assert!(plan_connect(&p.gate, &[], &json!({}), None, 0).is_ok());
    }

    #[test]
    fn builtin_config_builds() {
        let mut config = Config::builtin().unwrap();
        config.apply_env(|_| None).unwrap();
        for ns in &config.namespaces {
            let p = NamespacePolicy::build(ns, None).unwrap();
            assert!(matches!(p.gate, Gate::Open));
        }
    }
}

/// The policies on the real session core: Engine.IO sessions opened in-process, packets fed
/// through the handler, frames read back from the connections' queues (as `sio`'s own tests do).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod glue_tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::install_counting;
    use crate::config::Config;
    use crate::engine::{
        Config as EngineConfig, Conn, Engine, Handler as _, HandshakeInfo, Transport,
    };
    use crate::id::NodeId;
    use crate::sio::{self, ConnData, Server};
    use switchboard_codec::engineio::{Frame, Payload};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    struct World {
        io: Server,
        engine: Arc<Engine<Server>>,
        stats: Arc<super::Stats>,
    }

    fn world(toml: &str) -> World {
        let mut config = Config::from_str(toml, "test.toml").unwrap();
        config
            .apply_env(|k| (k == "TEST_SECRET").then(|| SECRET.to_owned()))
            .unwrap();
        let io = Server::new(sio::Config::default());
        let stats = install_counting(&io, &config, None).unwrap();
        let engine = Engine::new(
            EngineConfig::default(),
            io.clone(),
            NodeId::parse("n1").unwrap(),
        );
        World { io, engine, stats }
    }

    fn builtin() -> World {
        world(crate::config::DEFAULT_TOML)
    }

    impl World {
        fn open_with(&self, headers: http::HeaderMap) -> Arc<Conn<ConnData>> {
            let info = HandshakeInfo::new("127.0.0.1:1".parse().unwrap(), &headers, None, 0);
            let opened = self
                .engine
                .open(Transport::WebSocket, info, tokio::time::Instant::now())
                .unwrap();
            out(&opened.0);
            opened.0
        }

        fn open(&self) -> Arc<Conn<ConnData>> {
            self.open_with(http::HeaderMap::new())
        }

        /// Sends a Socket.IO packet (without the Engine.IO `4`).
        fn send(&self, conn: &Arc<Conn<ConnData>>, packet: &str) {
            self.engine.handler.on_message(
                conn,
                Payload::Text(Bytes::copy_from_slice(packet.as_bytes())),
            );
        }

        fn send_bin(&self, conn: &Arc<Conn<ConnData>>, data: &'static [u8]) {
            self.engine
                .handler
                .on_message(conn, Payload::Binary(Bytes::from_static(data)));
        }

        /// Connects and returns the CONNECT reply (or CONNECT_ERROR) frame.
        fn connect(&self, conn: &Arc<Conn<ConnData>>, nsp: &str, auth: Option<Value>) -> String {
            let auth = auth.map(|a| a.to_string()).unwrap_or_default();
            let packet = if nsp == "/" {
                format!("0{auth}")
            } else {
                format!("0{nsp},{auth}")
            };
            self.send(conn, &packet);
            let frames = out(conn);
            assert_eq!(frames.len(), 1, "{frames:?}");
            frames[0].clone()
        }

        fn client(&self, nsp: &str) -> Arc<Conn<ConnData>> {
            let conn = self.open();
            let reply = self.connect(&conn, nsp, None);
            let prefix = if nsp == "/" {
                "40{\"sid\":".to_owned()
            } else {
                format!("40{nsp},{{\"sid\":")
            };
            assert!(reply.starts_with(&prefix), "{reply}");
            conn
        }
    }

    /// Queued frames as text (the Engine.IO `4` included), binary as `<bin:len>`.
    fn out(conn: &Arc<Conn<ConnData>>) -> Vec<String> {
        conn.lock()
            .drain()
            .into_iter()
            .map(|f| match f {
                Frame::Text(t, _) => String::from_utf8(t.to_vec()).unwrap(),
                Frame::Binary(b, _) => format!("<bin:{}>", b.len()),
            })
            .collect()
    }

    fn token(claims: Value) -> String {
        use jsonwebtoken::{EncodingKey, Header, encode};
        crate::auth::install_crypto_provider();
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        super::unix_now() + 600
    }

    #[test]
    fn chat_join_say_shout_leave() {
        let w = builtin();
        let (a, b, c) = (w.client("/chat"), w.client("/chat"), w.client("/chat"));
        w.send(&a, r#"2/chat,1["join","lobby"]"#);
        assert_eq!(out(&a), [r#"43/chat,1[{"ok":true}]"#]);
        w.send(&b, r#"2/chat,7["join","lobby"]"#);
        assert_eq!(out(&b), [r#"43/chat,7[{"ok":true}]"#]);
        // Joining twice is fine.
        w.send(&b, r#"2/chat,8["join","lobby"]"#);
        assert_eq!(out(&b), [r#"43/chat,8[{"ok":true}]"#]);
        assert_eq!(w.io.get("/chat").unwrap().room_len("lobby"), 2);

        w.send(&a, r#"2/chat,2["say",{"room":"lobby","text":"hi"},3]"#);
        assert_eq!(out(&a), [r#"43/chat,2[{"ok":true}]"#]);
        assert_eq!(
            out(&b),
            [r#"42/chat,["say",{"room":"lobby","text":"hi"},3]"#]
        );
        assert!(out(&c).is_empty());

        // Not a member; per-user rooms; bad arguments.
        w.send(&c, r#"2/chat,1["say",{"room":"lobby","text":"x"}]"#);
        assert_eq!(
            out(&c),
            [r#"43/chat,1[{"ok":false,"error":"not a member of the room"}]"#]
        );
        w.send(&c, r#"2/chat,2["join","user:bob"]"#);
        assert_eq!(
            out(&c),
            [r#"43/chat,2[{"ok":false,"error":"room not allowed"}]"#]
        );
        w.send(&c, r#"2/chat,3["join",5]"#);
        assert_eq!(
            out(&c),
            [r#"43/chat,3[{"ok":false,"error":"room must be a string"}]"#]
        );
        w.send(&c, r#"2/chat,4["say","lobby"]"#);
        assert_eq!(
            out(&c),
            [r#"43/chat,4[{"ok":false,"error":"missing room argument"}]"#]
        );
        w.send(&c, r#"2/chat,5["join"]"#);
        assert_eq!(
            out(&c),
            [r#"43/chat,5[{"ok":false,"error":"missing room argument"}]"#]
        );
        // A refusal without ack is silent.
        w.send(&c, r#"2/chat,["join","user:bob"]"#);
        assert!(out(&c).is_empty());

        w.send(&a, r#"2/chat,["shout","hey",{"n":1}]"#);
        assert!(out(&a).is_empty(), "the sender is left out");
        assert_eq!(out(&b), [r#"42/chat,["shout","hey",{"n":1}]"#]);
        assert_eq!(out(&c), [r#"42/chat,["shout","hey",{"n":1}]"#]);

        w.send(&b, r#"2/chat,9["leave","lobby"]"#);
        assert_eq!(out(&b), [r#"43/chat,9[{"ok":true}]"#]);
        w.send(&a, r#"2/chat,["say",{"room":"lobby"}]"#);
        assert!(out(&b).is_empty(), "left the room");

        w.send(&a, r#"2/chat,4["dance"]"#);
        assert_eq!(
            out(&a),
            [r#"43/chat,4[{"ok":false,"error":"unknown event"}]"#]
        );
        w.send(&a, r#"2/chat,["dance"]"#);
        assert!(out(&a).is_empty());

        let s = w.stats.snapshot();
        assert_eq!(s.connects_accepted, 3);
        assert_eq!(s.events_unmatched, 2);
        assert_eq!(s.events_rejected, 6);
    }

    #[test]
    fn binary_relay_keeps_attachments() {
        let w = builtin();
        let (a, b) = (w.client("/chat"), w.client("/chat"));
        w.send(&a, r#"2/chat,["join","r"]"#);
        w.send(&b, r#"2/chat,["join","r"]"#);
        w.send(
            &a,
            r#"51-/chat,3["say",{"room":"r","blob":{"_placeholder":true,"num":0}}]"#,
        );
        w.send_bin(&a, b"\x01\x02\x03");
        assert_eq!(out(&a), [r#"43/chat,3[{"ok":true}]"#]);
        assert_eq!(
            out(&b),
            [
                r#"451-/chat,["say",{"room":"r","blob":{"_placeholder":true,"num":0}}]"#,
                "<bin:3>"
            ]
        );
    }

    #[test]
    fn rate_limit_rejects_then_disconnects() {
        let w = world(
            r#"
            [[namespace]]
            name = "/rl"
            rate_limit = { per_second = 1, burst = 1, max_violations = 3 }
            [[namespace.event]]
            name = "e"
            action = "echo"
            as_event = "back"
            "#,
        );
        let a = w.client("/rl");
        w.send(&a, r#"2/rl,1["e"]"#);
        assert_eq!(out(&a), [r#"42/rl,["back"]"#, r#"43/rl,1[{"ok":true}]"#]);
        w.send(&a, r#"2/rl,2["e"]"#);
        assert_eq!(out(&a), [r#"43/rl,2[{"ok":false,"error":"rate limited"}]"#]);
        w.send(&a, r#"2/rl,["e"]"#);
        assert_eq!(
            out(&a),
            [r#"42/rl,["error",{"error":"rate limited","event":"e"}]"#]
        );
        // Unknown events are charged too; the third violation disconnects the namespace.
        w.send(&a, r#"2/rl,["whatever"]"#);
        let frames = out(&a);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(
            frames[0],
            r#"42/rl,["error",{"error":"rate limited","event":"whatever"}]"#
        );
        assert!(frames[1].starts_with("41/rl"), "a DISCONNECT: {frames:?}");
        assert_eq!(w.io.get("/rl").unwrap().len(), 0);
        let s = w.stats.snapshot();
        assert_eq!((s.events_rate_limited, s.abuse_disconnects), (3, 1));
    }

    const ADMIN: &str = r#"
        [[namespace]]
        name = "/admin"
        auth = "required"
        auto_join = ["user:{sub}", "admins"]
        required_claims = { role = ["admin", "ops"] }
        [namespace.jwt]
        algorithm = "HS256"
        secret_env = "TEST_SECRET"
        [[namespace.event]]
        name = "join"
        action = "join"
        allow = ["user:{sub}:*"]
        max_members = 1
        announce = "joined"
        [[namespace.event]]
        name = "leave"
        action = "leave"
        deny = ["user:{sub}", "admins"]
        announce = "left"
    "#;

    #[test]
    fn auth_required_claims_and_auto_join() {
        let w = world(ADMIN);
        let conn = w.open();
        assert_eq!(
            w.connect(&conn, "/admin", None),
            r#"44/admin,{"message":"missing token","data":{"code":"missing_token"}}"#
        );
        let user = token(json!({"sub": "bob", "role": "user", "exp": exp()}));
        assert_eq!(
            w.connect(&conn, "/admin", Some(json!({ "token": user }))),
            r#"44/admin,{"message":"claim role not allowed","data":{"code":"claim_not_allowed"}}"#
        );
        let old = token(json!({"sub": "bob", "role": "admin", "exp": 1000}));
        assert_eq!(
            w.connect(&conn, "/admin", Some(json!({ "token": old }))),
            r#"44/admin,{"message":"token expired","data":{"code":"expired"}}"#
        );
        assert_eq!(
            w.connect(&conn, "/admin", Some(json!({ "token": "x.y.z" }))),
            r#"44/admin,{"message":"invalid token","data":{"code":"malformed"}}"#
        );
        let good = token(json!({"sub": "alice", "role": "ops", "exp": exp()}));
        let reply = w.connect(&conn, "/admin", Some(json!({ "token": good })));
        assert!(reply.starts_with(r#"40/admin,{"sid":"#), "{reply}");
        let ns = w.io.get("/admin").unwrap();
        assert_eq!(ns.room_len("user:alice"), 1);
        assert_eq!(ns.room_len("admins"), 1);
        let socket = ns.socket(&ns_socket_id(&reply)).unwrap();
        let claims = socket.get::<crate::auth::Claims>().unwrap();
        assert_eq!(claims.subject(), Some(&json!("alice")));

        // Auto-joined rooms cannot be left; allow patterns are templated with the claims.
        w.send(&conn, r#"2/admin,1["leave","admins"]"#);
        assert_eq!(
            out(&conn),
            [r#"43/admin,1[{"ok":false,"error":"room not allowed"}]"#]
        );
        w.send(&conn, r#"2/admin,2["join","user:bob:inbox"]"#);
        assert_eq!(
            out(&conn),
            [r#"43/admin,2[{"ok":false,"error":"room not allowed"}]"#]
        );
        w.send(&conn, r#"2/admin,3["join","user:alice:inbox"]"#);
        assert_eq!(out(&conn), [r#"43/admin,3[{"ok":true}]"#]);

        // Header token; capacity; announcements.
        let mut headers = http::HeaderMap::new();
        let bearer = format!(
            "Bearer {}",
            token(json!({"sub": "alice", "role": "admin", "exp": exp()}))
        );
        headers.insert("authorization", bearer.parse().unwrap());
        let second = w.open_with(headers);
        let reply = w.connect(&second, "/admin", None);
        assert!(reply.starts_with(r#"40/admin,{"sid":"#), "{reply}");
        w.send(&second, r#"2/admin,1["join","user:alice:inbox"]"#);
        assert_eq!(
            out(&second),
            [r#"43/admin,1[{"ok":false,"error":"room full"}]"#]
        );
        w.send(&conn, r#"2/admin,4["leave","user:alice:inbox"]"#);
        assert_eq!(out(&conn), [r#"43/admin,4[{"ok":true}]"#]);
        w.send(&conn, r#"2/admin,5["join","user:alice:two"]"#);
        out(&conn);
        w.send(&second, r#"2/admin,2["join","user:alice:two"]"#);
        assert_eq!(
            out(&second),
            [r#"43/admin,2[{"ok":false,"error":"room full"}]"#]
        );
        w.send(&second, r#"2/admin,3["join","user:alice:three"]"#);
        assert_eq!(out(&second), [r#"43/admin,3[{"ok":true}]"#]);
        assert!(out(&conn).is_empty(), "no other member to announce to");
        w.send(&conn, r#"2/admin,6["leave","user:alice:two"]"#);
        assert_eq!(out(&conn), [r#"43/admin,6[{"ok":true}]"#]);
        assert_eq!(w.stats.snapshot().connects_refused, 4);
    }

    #[test]
    fn announcements_reach_other_members() {
        let w = world(
            r#"
            [[namespace]]
            name = "/"
            [[namespace.event]]
            name = "join"
            action = "join"
            announce = "joined"
            [[namespace.event]]
            name = "leave"
            action = "leave"
            announce = "left"
            "#,
        );
        let (a, b) = (w.client("/"), w.client("/"));
        w.send(&a, r#"2["join","r"]"#);
        assert!(out(&a).is_empty());
        w.send(&b, r#"21["join","r"]"#);
        let b_frames = out(&b);
        assert_eq!(b_frames, [r#"431[{"ok":true}]"#]);
        let joined = out(&a);
        assert_eq!(joined.len(), 1, "{joined:?}");
        assert!(
            joined[0].starts_with(r#"42["joined",{"id":"n1."#),
            "{joined:?}"
        );
        assert!(joined[0].ends_with(r#"","room":"r"}]"#), "{joined:?}");
        w.send(&b, r#"2["leave","r"]"#);
        let left = out(&a);
        assert!(left[0].starts_with(r#"42["left",{"id":"n1."#), "{left:?}");
        // Joining a room named after a live socket is refused.
        let id = joined[0]
            .split("\"id\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        w.send(&a, &format!(r#"21["join","{id}"]"#));
        assert_eq!(out(&a), [r#"431[{"ok":false,"error":"room not allowed"}]"#]);
    }

    #[test]
    fn optional_auth_and_dynamic_namespaces_with_echo() {
        let w = world(
            r#"
            [[namespace]]
            pattern = "/tenant-[a-z0-9]+"
            auth = "optional"
            auto_join = ["user:{sub}", "all"]
            [namespace.jwt]
            algorithm = "HS256"
            secret_env = "TEST_SECRET"
            [[namespace.event]]
            name = "echo"
            action = "echo"
            [[namespace.event]]
            name = "ping"
            action = "echo"
            as_event = "pong"
            "#,
        );
        let anon = w.client("/tenant-a1");
        assert_eq!(w.io.get("/tenant-a1").unwrap().room_len("all"), 1);
        w.send(&anon, r#"2/tenant-a1,5["echo",{"x":1},"y"]"#);
        assert_eq!(out(&anon), [r#"43/tenant-a1,5[{"x":1},"y"]"#]);
        w.send(&anon, r#"2/tenant-a1,["echo",1]"#);
        assert_eq!(out(&anon), [r#"42/tenant-a1,["echo",1]"#]);
        w.send(&anon, r#"2/tenant-a1,6["ping",2]"#);
        assert_eq!(
            out(&anon),
            [
                r#"42/tenant-a1,["pong",2]"#,
                r#"43/tenant-a1,6[{"ok":true}]"#
            ]
        );

        let conn = w.open();
        let t = token(json!({"sub": "carol", "exp": exp()}));
        let reply = w.connect(&conn, "/tenant-b2", Some(json!({ "token": t })));
        assert!(reply.starts_with(r#"40/tenant-b2,{"sid":"#), "{reply}");
        assert_eq!(w.io.get("/tenant-b2").unwrap().room_len("user:carol"), 1);
        // A bad token is refused even where tokens are optional.
        let reply = w.connect(&conn, "/tenant-c3", Some(json!({ "token": "nope" })));
        assert!(
            reply.starts_with(r#"44/tenant-c3,{"message":"invalid token""#),
            "{reply}"
        );
        // Names the pattern does not match in full are not namespaces.
        let reply = w.connect(&conn, "/tenant-B2", None);
        assert!(
            reply.starts_with(r#"44/tenant-B2,{"message":"Invalid namespace""#),
            "{reply}"
        );
    }

    /// The socket id from a CONNECT reply `40/nsp,{"sid":"…"}`.
    fn ns_socket_id(reply: &str) -> String {
        let json = &reply[reply.find('{').unwrap()..];
        let v: Value = serde_json::from_str(json).unwrap();
        v["sid"].as_str().unwrap().to_owned()
    }
}
