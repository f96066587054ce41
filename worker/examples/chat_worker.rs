//! The worked example: a chat service as a backend worker behind Switchboard gateways.
//!
//! Run the cluster (nats-server, `switchboard-broker`, gateways started with
//! `deploy/chat.toml`), then this worker:
//!
//! ```text
//! SWITCHBOARD_NATS_URL=nats://127.0.0.1:4222 cargo run --release -p switchboard-worker --example chat_worker
//! ```
//!
//! Clients (official socket.io-client, with a JWT whose `sub` is the user id) talk to the `/chat`
//! namespace. The gateways `forward` these events to this worker (queue group `chat-workers`)
//! and send its replies back as the events' acks:
//!
//! | client emits | worker does | ack |
//! |---|---|---|
//! | `pm {to, text}` | emits `pm {from, text}` to room `user:{to}` (every socket of that user, on any gateway; each socket joins `user:{sub}` on connect) | `{ok:true}` / `{ok:false,error}` |
//! | `join {room, password?, limit?}` | the first joiner creates the room with its password and member limit (default and cap: `CHAT_MAX_MEMBERS`, 50); later joiners must give the password; the place is reserved by the broker (capacity counted cluster-wide), then the reply tells the socket's gateway to join it | `{ok:true, room}` / `{ok:false, error: "wrong password" \| "room full" \| ...}` |
//! | `leave {room}` | the reply tells the socket's gateway to leave the room | `{ok:true}` |
//! | `say {room, text}` | emits `say {from, room, text}` to the room's other members (only a member may speak) | `{ok:true}` / `{ok:false, error: "not a member"}` |
//!
//! And from the broker's presence stream (the namespace has `[namespace.presence]` with
//! `to_clients = false`, so the gateways leave the wording to the worker): `notice {kind, user,
//! room?, text}` — "alice joined #lobby" / "alice left #lobby" to the room's members, "alice is
//! online" / "alice is offline" to the namespace.
//!
//! `join` and `leave` take effect through the reply, so a client sends them with an ack (as
//! every event of the table expects one); without one there is no reply to carry the rooms.
//!
//! Everything goes through the `switchboard-worker` crate (this file is the chat logic and its
//! wiring): replies to the forwarded requests (with the rooms the asking socket joins or
//! leaves), emits to rooms and the namespace (into the recovery log), reservations to the broker.
//! That is all a worker credential of `deploy/nats/` may publish: no commands, no deliveries to
//! node subjects.
//!
//! State (rooms and their passwords and limits) lives in this process: run one worker, or move
//! it to a shared store before running several.
//!
//! Environment: `SWITCHBOARD_NATS_URL` (default `nats://127.0.0.1:4222`), the NATS credentials
//! `SWITCHBOARD_NATS_USER` / `SWITCHBOARD_NATS_PASSWORD` or `SWITCHBOARD_NATS_CREDS` (optional),
//! `SWITCHBOARD_SUBJECT_PREFIX` (`sio`), `CHAT_NAMESPACE` (`/chat`), `CHAT_MAX_MEMBERS` (50),
//! `CHAT_RECOVERY` (`true`: the namespace has `[namespace.recovery]`, as in `deploy/chat.toml`,
//! so the worker's emits go into the recovery log; must match the gateways' configuration).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_worker::{
    ClientEvent, EventReply, Namespace, Options, PresenceEvent, PresenceKind, Reservation, Worker,
    pb,
};

/// Longest chat message, in characters.
const MAX_TEXT: usize = 2000;
/// How long the broker may take to reserve a place in a room.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The workers' queue group: each event goes to one of them.
const QUEUE_GROUP: &str = "chat-workers";

/// A room the worker manages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChatRoom {
    password: Option<String>,
    limit: u32,
}

/// What the worker sends in answer to something.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// Emit `event(payload)` in the namespace to `target`.
    Emit {
        target: pb::Target,
        event: &'static str,
        payload: Value,
    },
    /// Ask the broker for a place in `room` (capacity `limit`), then tell the socket's gateway to
    /// join it.
    ReserveAndJoin { room: String, limit: u32 },
    /// Tell the socket's gateway to leave `room`.
    Leave { room: String },
}

/// What the chat logic reads of a forwarded event.
#[derive(Debug)]
struct Request {
    event: String,
    args: Vec<Value>,
    user: Option<String>,
    socket_id: String,
    rooms: Vec<String>,
}

impl Request {
    fn of(ev: &mut ClientEvent) -> Self {
        Self {
            event: std::mem::take(&mut ev.event),
            args: std::mem::take(&mut ev.args.values),
            user: ev.user.take(),
            socket_id: std::mem::take(&mut ev.socket_id),
            rooms: std::mem::take(&mut ev.rooms),
        }
    }
}

/// The chat logic: no I/O, so it can be tested as is.
struct Chat {
    max_members: u32,
    rooms: HashMap<String, ChatRoom>,
}

/// A refused request: the client's ack is `{ok:false, error}`.
type Refusal = &'static str;

fn room_target(room: &str) -> pb::Target {
    pb::Target {
        rooms: vec![room.to_owned()],
        ..Default::default()
    }
}

fn text_arg(args: &Value, key: &str) -> Result<String, Refusal> {
    match args.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT => {
            Ok(s.clone())
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Err("text too long"),
        _ => Err("bad request"),
    }
}

impl Chat {
    fn new(max_members: u32) -> Self {
        Self {
            max_members,
            rooms: HashMap::new(),
        }
    }

    /// Handles one forwarded client event: the actions to take, or why it is refused.
    fn on_event(&mut self, ev: &Request) -> Result<Vec<Action>, Refusal> {
        let first = ev.args.first().cloned().unwrap_or(Value::Null);
        let user = ev.user.clone().ok_or("not signed in")?;
        match ev.event.as_str() {
            "pm" => {
                let to = text_arg(&first, "to")?;
                let text = text_arg(&first, "text")?;
                Ok(vec![Action::Emit {
                    target: room_target(&format!("user:{to}")),
                    event: "pm",
                    payload: json!({ "from": user, "text": text }),
                }])
            }
            "join" => {
                let room = text_arg(&first, "room")?;
                if room.starts_with("user:") {
                    return Err("room not allowed");
                }
                let password = first
                    .get("password")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let limit =
                    first
                        .get("limit")
                        .and_then(Value::as_u64)
                        .map_or(self.max_members, |l| {
                            u32::try_from(l)
                                .unwrap_or(u32::MAX)
                                .clamp(1, self.max_members)
                        });
                let entry = self.rooms.entry(room.clone()).or_insert(ChatRoom {
                    password: password.clone(),
                    limit,
                });
                if entry.password.is_some() && entry.password != password {
                    return Err("wrong password");
                }
                Ok(vec![Action::ReserveAndJoin {
                    room,
                    limit: entry.limit,
                }])
            }
            "leave" => Ok(vec![Action::Leave {
                room: text_arg(&first, "room")?,
            }]),
            "say" => {
                let room = text_arg(&first, "room")?;
                let text = text_arg(&first, "text")?;
                if !ev.rooms.contains(&room) {
                    return Err("not a member");
                }
                Ok(vec![Action::Emit {
                    target: pb::Target {
                        except_sockets: vec![ev.socket_id.clone()],
                        ..room_target(&room)
                    },
                    event: "say",
                    payload: json!({ "from": user, "room": room, "text": text }),
                }])
            }
            _ => Err("unknown event"),
        }
    }

    /// Turns a presence announcement of the broker into a notice.
    fn on_presence(ev: &PresenceEvent) -> Option<Action> {
        let user = ev.user.as_deref().unwrap_or_default();
        if user.is_empty() {
            return None;
        }
        let room = ev.room.as_deref().unwrap_or_default();
        // `user:{sub}` rooms are how private messages reach a user, not chat rooms.
        if room.starts_with("user:") {
            return None;
        }
        let (kind, text, target) = match ev.kind {
            PresenceKind::UserJoined => (
                "user_joined",
                format!("{user} joined #{room}"),
                room_target(room),
            ),
            PresenceKind::UserLeft => (
                "user_left",
                format!("{user} left #{room}"),
                room_target(room),
            ),
            PresenceKind::UserOnline => (
                "user_online",
                format!("{user} is online"),
                pb::Target::default(),
            ),
            PresenceKind::UserOffline => (
                "user_offline",
                format!("{user} is offline"),
                pb::Target::default(),
            ),
            PresenceKind::MemberJoined | PresenceKind::MemberLeft => return None,
        };
        let room = if matches!(kind, "user_joined" | "user_left") {
            Value::String(room.to_owned())
        } else {
            Value::Null
        };
        Some(Action::Emit {
            target,
            event: "notice",
            payload: json!({ "kind": kind, "user": user, "room": room, "text": text, "reason": ev.reason }),
        })
    }
}

/// Emits `event(payload)` to `target`; a failure is logged (the chat goes on).
async fn emit(ns: &Namespace, target: pb::Target, event: &str, payload: Value) {
    if let Err(e) = ns.select(target).emit(event, payload).await {
        tracing::warn!(error = %e, "emit not published");
    }
}

async fn reserve(ns: &Namespace, socket_id: &str, room: &str, limit: u32) -> Result<(), Refusal> {
    match ns.reserve(room, socket_id, limit, RESERVE_TIMEOUT).await {
        Ok(Reservation::Joined | Reservation::AlreadyMember) => Ok(()),
        Ok(Reservation::Full) => Err("room full"),
        Ok(Reservation::UnknownSocket) => Err("try again"),
        Err(_) => Err("broker unavailable"),
    }
}

/// Handles one forwarded event: its actions, then the answer to its ack (which carries the
/// rooms the asking socket joins or leaves).
async fn handle_event(ns: Namespace, chat: Arc<Mutex<Chat>>, mut ev: ClientEvent) {
    let req = Request::of(&mut ev);
    let planned = chat.lock().on_event(&req);
    let (mut outcome, actions) = match planned {
        Ok(actions) => (Ok(json!({ "ok": true })), actions),
        Err(e) => (Err(e), Vec::new()),
    };
    let (mut join, mut leave) = (Vec::new(), Vec::new());
    for action in actions {
        match action {
            Action::Emit {
                target,
                event,
                payload,
            } => emit(&ns, target, event, payload).await,
            Action::ReserveAndJoin { room, limit } => {
                match reserve(&ns, &req.socket_id, &room, limit).await {
                    Ok(()) => {
                        outcome = Ok(json!({ "ok": true, "room": room }));
                        join.push(room);
                    }
                    Err(e) => outcome = Err(e),
                }
            }
            Action::Leave { room } => leave.push(room),
        }
    }
    // The chat's refusals are acks with `{ok: false, error}` arguments (not `EventReply::error`,
    // which the client could not tell from the gateway's own errors).
    let reply = match outcome {
        Ok(v) => join.into_iter().fold(EventReply::ok(v), EventReply::join),
        Err(e) => EventReply::ok(json!({ "ok": false, "error": e })),
    };
    let reply = leave.into_iter().fold(reply, EventReply::leave);
    if let Err(e) = ev.reply(reply).await {
        tracing::warn!(error = %e, "reply failed");
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

async fn run() -> Result<(), String> {
    let mut opts = Options::from_env().map_err(|e| e.to_string())?;
    opts.nats.name = "switchboard chat worker".to_owned();
    opts.origin = "chat-worker".to_owned();
    let ns = env_or("CHAT_NAMESPACE", "/chat");
    let max_members = env_or("CHAT_MAX_MEMBERS", "50")
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or("CHAT_MAX_MEMBERS must be a positive number")?;
    let worker = Worker::connect(opts).await.map_err(|e| e.to_string())?;
    // deploy/chat.toml runs /chat with connection state recovery: the emits go into the log,
    // so a client that comes back gets them with the rest of what it missed.
    let recovery = match env_or("CHAT_RECOVERY", "true").as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        _ => return Err("CHAT_RECOVERY must be true or false".to_owned()),
    };
    let chat_ns = worker.of(&ns).recovery(recovery);
    let mut events = chat_ns
        .events(Some(QUEUE_GROUP))
        .await
        .map_err(|e| e.to_string())?;
    let mut presence = chat_ns
        .presence(Some(QUEUE_GROUP))
        .await
        .map_err(|e| e.to_string())?;
    // "ready" means the subscriptions are in effect at the server, not just sent.
    worker
        .ready(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "chat worker ready: namespace {ns}, prefix {}, recovery {recovery}",
        worker.subjects().prefix()
    );
    let chat = Arc::new(Mutex::new(Chat::new(max_members)));
    loop {
        tokio::select! {
            Some(ev) = events.next() => {
                tokio::spawn(handle_event(chat_ns.clone(), chat.clone(), ev));
            }
            Some(ev) = presence.next() => {
                if let Some(Action::Emit { target, event, payload }) = Chat::on_presence(&ev) {
                    emit(&chat_ns, target, event, payload).await;
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            else => return Err("the bus closed".to_owned()),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat worker: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, args: Value, user: Option<&str>, rooms: &[&str]) -> Request {
        let Value::Array(args) = args else {
            panic!("arguments are an array");
        };
        Request {
            event: name.into(),
            args,
            user: user.map(str::to_owned),
            socket_id: "gw1.abc".into(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn private_message_goes_to_the_user_room() {
        let mut chat = Chat::new(50);
        let got = chat.on_event(&event(
            "pm",
            json!([{ "to": "bob", "text": "hi" }]),
            Some("alice"),
            &[],
        ));
        assert_eq!(
            got,
            Ok(vec![Action::Emit {
                target: room_target("user:bob"),
                event: "pm",
                payload: json!({ "from": "alice", "text": "hi" }),
            }])
        );
        let anonymous = chat.on_event(&event(
            "pm",
            json!([{ "to": "bob", "text": "hi" }]),
            None,
            &[],
        ));
        assert_eq!(anonymous, Err("not signed in"));
        let bad = chat.on_event(&event("pm", json!([{ "to": "bob" }]), Some("alice"), &[]));
        assert_eq!(bad, Err("bad request"));
    }

    #[test]
    fn rooms_keep_their_first_password_and_limit() {
        let mut chat = Chat::new(10);
        let create = json!([{ "room": "r", "password": "pw", "limit": 99 }]);
        assert_eq!(
            chat.on_event(&event("join", create, Some("a"), &[])),
            Ok(vec![Action::ReserveAndJoin {
                room: "r".into(),
                limit: 10
            }])
        );
        let wrong = json!([{ "room": "r", "password": "nope", "limit": 1 }]);
        assert_eq!(
            chat.on_event(&event("join", wrong, Some("b"), &[])),
            Err("wrong password")
        );
        let none = json!([{ "room": "r" }]);
        assert_eq!(
            chat.on_event(&event("join", none, Some("b"), &[])),
            Err("wrong password")
        );
        let right = json!([{ "room": "r", "password": "pw" }]);
        assert_eq!(
            chat.on_event(&event("join", right, Some("b"), &[])),
            Ok(vec![Action::ReserveAndJoin {
                room: "r".into(),
                limit: 10
            }])
        );
        let user_room = json!([{ "room": "user:b" }]);
        assert_eq!(
            chat.on_event(&event("join", user_room, Some("a"), &[])),
            Err("room not allowed")
        );
    }

    #[test]
    fn only_members_speak_and_not_to_themselves() {
        let mut chat = Chat::new(10);
        let say = json!([{ "room": "r", "text": "yo" }]);
        assert_eq!(
            chat.on_event(&event("say", say.clone(), Some("a"), &[])),
            Err("not a member")
        );
        let Ok(actions) = chat.on_event(&event("say", say, Some("a"), &["r"])) else {
            panic!("a member may speak");
        };
        let [Action::Emit { target, event, .. }] = actions.as_slice() else {
            panic!("one emit expected: {actions:?}");
        };
        assert_eq!(*event, "say");
        assert_eq!(target.rooms, vec!["r".to_owned()]);
        assert_eq!(target.except_sockets, vec!["gw1.abc".to_owned()]);
    }

    #[test]
    fn presence_becomes_notices() {
        use PresenceKind as Kind;
        let ev = |kind: Kind, user: &str| PresenceEvent {
            kind,
            ns: "/chat".into(),
            room: Some("lobby".into()),
            user: Some(user.into()),
            socket_id: "gw1.x".into(),
            reason: "node_lost".into(),
        };
        let Some(Action::Emit {
            target, payload, ..
        }) = Chat::on_presence(&ev(Kind::UserLeft, "al"))
        else {
            panic!("a notice expected");
        };
        assert_eq!(target, room_target("lobby"));
        assert_eq!(payload["text"], "al left #lobby");
        assert_eq!(payload["reason"], "node_lost");
        let Some(Action::Emit {
            target, payload, ..
        }) = Chat::on_presence(&ev(Kind::UserOnline, "al"))
        else {
            panic!("a notice expected");
        };
        assert_eq!(target, pb::Target::default());
        assert_eq!(payload["room"], Value::Null);
        assert_eq!(Chat::on_presence(&ev(Kind::MemberJoined, "al")), None);
        assert_eq!(Chat::on_presence(&ev(Kind::UserJoined, "")), None);
        let own_room = PresenceEvent {
            room: Some("user:al".into()),
            ..ev(Kind::UserJoined, "al")
        };
        assert_eq!(Chat::on_presence(&own_room), None);
    }
}
