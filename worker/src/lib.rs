//! A backend worker's client of Switchboard's bus: what a service behind the gateways needs,
//! typed, over the contract of `proto/proto/bus.proto` and the subjects of
//! `switchboard_proto::subject` (docs/cluster.md, "NATS subjects").
//!
//! - **Connect**: [`Worker::connect`] over [`switchboard_bus::Bus`] (NATS URL, user and
//!   password, token, `.creds` file; the subject prefix), or [`Worker::with_bus`].
//! - **Forwarded events with acks**: [`Namespace::events`], a stream of [`ClientEvent`]s in a
//!   queue group; each answers its client's ack once with an [`EventReply`] (arguments or an
//!   error, and rooms the asking socket joins or leaves). An event dropped unanswered answers
//!   [`event::NO_REPLY`] ([`event`] module docs).
//! - **Emits**: `worker.of(ns).to(room).except(room).emit(event, args)` ([`Broadcast`]), also
//!   to socket ids, volatile and uncompressed ([`Broadcast::compress`]), routed as the gateways
//!   route their broadcasts, and into the recovery log for namespaces declared with
//!   [`Namespace::recovery`] ([`namespace`] module docs). Packets are encoded by the codec crate, as the gateways write them ([`frame`]).
//! - **Commands**: [`Broadcast::sockets_join`], [`Broadcast::sockets_leave`],
//!   [`Broadcast::disconnect_sockets`] on `{p}.cmd.ns.{ns}`. The `worker` NATS role of
//!   `deploy/nats/` may **not** publish commands: these need a user with the `emitter` role.
//! - **Presence** ([`Namespace::presence`], [`PresenceEvent`]: one item per announcement, the
//!   broker's batches taken apart in order) and **life events** ([`Namespace::life`],
//!   [`LifeEvent`]).
//! - **Server-side events**: [`Namespace::server_side_emit`] and [`Namespace::server_events`]
//!   (`{p}.srv.{ns}.{event}`).
//! - **Room reservations**: [`Namespace::reserve`] (`{p}.broker.reserve`): a place in a room
//!   with a member limit, counted by the broker for the whole cluster.
//!
//! Everything from the bus is bounded and checked before it is handed out: malformed messages
//! are skipped and counted ([`stream::MALFORMED`]), never a panic ([`stream`] module docs).
//!
//! # Example
//!
//! A worker answering `join {room}` (with a reservation in a room of at most 50 members) and
//! `say {room, text}` in `/chat`, where the gateways have a `forward` rule for both events:
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use switchboard_worker::{EventReply, Options, Reservation, Worker};
//!
//! # async fn run() -> Result<(), switchboard_worker::WorkerError> {
//! let worker = Worker::connect(Options::from_env()?).await?;
//! let chat = worker.of("/chat");
//! let mut events = chat.events(Some("chat-workers")).await?;
//! worker.ready(Duration::from_secs(10)).await?;
//! while let Some(mut ev) = events.next().await {
//!     let room = ev.args.first()["room"].as_str().unwrap_or_default().to_owned();
//!     let reply = match ev.event.as_str() {
//!         "join" => match chat.reserve(&room, &ev.socket_id, 50, Duration::from_secs(2)).await? {
//!             Reservation::Joined | Reservation::AlreadyMember => {
//!                 EventReply::ok(json!({ "ok": true })).join(room)
//!             }
//!             Reservation::Full => EventReply::error("room full"),
//!             Reservation::UnknownSocket => EventReply::error("try again"),
//!         },
//!         "say" if ev.rooms.contains(&room) => {
//!             let text = ev.args.first()["text"].clone();
//!             chat.to(room.as_str())
//!                 .except_socket(ev.socket_id.as_str())
//!                 .emit("say", json!({ "from": ev.user, "room": room, "text": text }))
//!                 .await?;
//!             EventReply::ok(json!({ "ok": true }))
//!         }
//!         _ => EventReply::error("bad request"),
//!     };
//!     ev.reply(reply).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `worker/examples/chat_worker.rs` is the complete worked example (README, docs/cluster.md).

pub mod args;
pub mod event;
pub mod frame;
pub mod namespace;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_bus::{Bus, BusError, NatsOptions, Subscription};
use switchboard_proto::subject::{SubjectError, Subjects};

pub use args::Args;
pub use event::{Ack, ClientEvent, EventReply};
pub use namespace::{Broadcast, Namespace, Reservation, Sent};
pub use stream::{LifeEvent, PresenceEvent, PresenceKind, ServerEvent, SocketInfo, Stream};
pub use switchboard_bus;
pub use switchboard_proto::bus as pb;
pub use switchboard_proto::subject;

/// The subject prefix the gateways use unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "sio";

/// What can go wrong for a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The bus refused or failed an operation (publish, subscribe, request, log).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A name cannot be part of a subject (bad prefix, name too long).
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// Something the worker was asked to send is not valid (a reserved event name, a bad
    /// namespace, placeholders naming missing attachments).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A reply from the bus could not be understood.
    #[error("{0}")]
    Reply(&'static str),
    /// A setting from the environment is unusable.
    #[error("{0}")]
    Config(String),
}

/// How a worker connects.
#[derive(Clone, Debug)]
pub struct Options {
    /// The NATS connection (URL, credentials, connection name).
    pub nats: NatsOptions,
    /// The cluster's subject prefix (the gateways' `subject_prefix`).
    pub prefix: String,
    /// This worker's name, the `origin` of what it publishes.
    pub origin: String,
}

impl Options {
    /// NATS at `url`, without credentials, prefix [`DEFAULT_PREFIX`], origin `worker`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            nats: NatsOptions {
                url: url.into(),
                name: "switchboard worker".to_owned(),
                ..Default::default()
            },
            prefix: DEFAULT_PREFIX.to_owned(),
            origin: "worker".to_owned(),
        }
    }

    /// From the environment, as the gateways name these settings: `SWITCHBOARD_NATS_URL`
    /// (default `nats://127.0.0.1:4222`), `SWITCHBOARD_NATS_USER` with
    /// `SWITCHBOARD_NATS_PASSWORD` or `SWITCHBOARD_NATS_PASSWORD_FILE` (a file holding it),
    /// `SWITCHBOARD_NATS_TOKEN`, `SWITCHBOARD_NATS_CREDS` (a `.creds` file),
    /// `SWITCHBOARD_NATS_NKEY_SEED_FILE`, `SWITCHBOARD_SUBJECT_PREFIX` (default `sio`), and
    /// `SWITCHBOARD_WORKER_NAME` (the origin, default `worker`). Unset and empty are the same.
    pub fn from_env() -> Result<Self, WorkerError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, WorkerError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut opts = Self::new(
            var("SWITCHBOARD_NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned()),
        );
        let password = match (
            var("SWITCHBOARD_NATS_PASSWORD"),
            var("SWITCHBOARD_NATS_PASSWORD_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(WorkerError::Config(
                    "SWITCHBOARD_NATS_PASSWORD and SWITCHBOARD_NATS_PASSWORD_FILE are both set"
                        .to_owned(),
                ));
            }
            (Some(p), None) => Some(p),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        WorkerError::Config(format!("SWITCHBOARD_NATS_PASSWORD_FILE {file}: {e}"))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        match (var("SWITCHBOARD_NATS_USER"), password) {
            (Some(user), password) => opts.nats.user = Some((user, password.unwrap_or_default())),
            (None, Some(_)) => {
                return Err(WorkerError::Config(
                    "a NATS password is set without SWITCHBOARD_NATS_USER".to_owned(),
                ));
            }
            (None, None) => {}
        }
        opts.nats.token = var("SWITCHBOARD_NATS_TOKEN");
        opts.nats.credentials_file = var("SWITCHBOARD_NATS_CREDS").map(Into::into);
        opts.nats.nkey_seed_file = var("SWITCHBOARD_NATS_NKEY_SEED_FILE").map(Into::into);
        if let Some(prefix) = var("SWITCHBOARD_SUBJECT_PREFIX") {
            opts.prefix = prefix;
        }
        if let Some(origin) = var("SWITCHBOARD_WORKER_NAME") {
            opts.origin = origin;
        }
        Ok(opts)
    }
}

/// A worker's handle on the bus (cheap to clone; every clone shares one connection).
#[derive(Clone)]
pub struct Worker(Arc<Inner>);

struct Inner {
    bus: Bus,
    subjects: Subjects,
    origin: String,
    /// Random per worker: with `log_count`, the message ids of its log publishes (unique, so
    /// JetStream's deduplication only drops this worker's own retries); with `split_count`,
    /// the names of its split deliveries.
    epoch: u64,
    log_count: AtomicU64,
    /// Numbers the deliveries this worker splits into fragments.
    split_count: AtomicU64,
}

impl Worker {
    /// Connects to NATS. Returns at once: the connection is made (and remade after a loss) in
    /// the background. Call [`Worker::ready`] after subscribing to know the subscriptions are
    /// in effect.
    pub async fn connect(opts: Options) -> Result<Self, WorkerError> {
        let subjects = Subjects::new(&opts.prefix)?;
        let bus = Bus::connect(&opts.nats).await?;
        Ok(Self::with_bus(bus, subjects, &opts.origin))
    }

    /// A worker over a bus client made elsewhere.
    pub fn with_bus(bus: Bus, subjects: Subjects, origin: &str) -> Self {
        Self(Arc::new(Inner {
            bus,
            subjects,
            origin: origin.to_owned(),
            epoch: rand::random(),
            log_count: AtomicU64::new(0),
            split_count: AtomicU64::new(0),
        }))
    }

    /// The namespace `ns` (`/chat`). Its name is checked when it is used.
    pub fn of(&self, ns: &str) -> Namespace {
        Namespace::new(self.clone(), ns)
    }

    /// Waits until the NATS server has processed everything sent so far, subscriptions included,
    /// so that what is published after this returns reaches them ([`Bus::barrier`]).
    pub async fn ready(&self, timeout: Duration) -> Result<(), WorkerError> {
        self.0.bus.barrier(timeout).await.map_err(Into::into)
    }

    /// Waits until everything published so far is written to the server (before exiting).
    pub async fn flush(&self) -> Result<(), WorkerError> {
        self.0.bus.flush().await.map_err(Into::into)
    }

    /// The bus client underneath.
    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// The subject builder of the cluster's prefix.
    pub fn subjects(&self) -> &Subjects {
        &self.0.subjects
    }

    /// The name this worker publishes as.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    async fn subscribe(
        &self,
        subject: String,
        group: Option<&str>,
    ) -> Result<Subscription, WorkerError> {
        let sub = match group {
            Some(group) => self.0.bus.queue_subscribe(subject, group.to_owned()).await,
            None => self.0.bus.subscribe(subject).await,
        };
        sub.map_err(Into::into)
    }

    /// The name and number of a split delivery: the gateways reassemble fragments by both, so
    /// the name carries this worker's random epoch (workers may share an origin).
    fn next_split(&self) -> (String, u64) {
        let id = self.0.split_count.fetch_add(1, Ordering::Relaxed);
        (format!("{}.{:016x}", self.0.origin, self.0.epoch), id)
    }

    fn next_log_id(&self) -> String {
        let n = self.0.log_count.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}.{:016x}.{n}", self.0.origin, self.0.epoch)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("prefix", &self.0.subjects.prefix())
            .field("origin", &self.0.origin)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Options, WorkerError> {
        Options::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn options_from_the_environment() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(
            (opts.prefix.as_str(), opts.origin.as_str()),
            ("sio", "worker")
        );
        assert!(opts.nats.user.is_none());

        let opts = from(&[
            ("SWITCHBOARD_NATS_URL", "nats://n:4222"),
            ("SWITCHBOARD_NATS_USER", "worker"),
            ("SWITCHBOARD_NATS_PASSWORD", "pw"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "c1"),
            ("SWITCHBOARD_WORKER_NAME", "chat"),
            ("SWITCHBOARD_NATS_CREDS", " "),
        ])
        .expect("valid");
        assert_eq!(opts.nats.url, "nats://n:4222");
        assert_eq!(opts.nats.user, Some(("worker".to_owned(), "pw".to_owned())));
        assert_eq!((opts.prefix.as_str(), opts.origin.as_str()), ("c1", "chat"));
        assert_eq!(opts.nats.credentials_file, None, "blank is unset");

        let file = std::env::temp_dir().join(format!("sbw-pw-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").expect("a temporary file");
        let path = file.to_string_lossy().into_owned();
        let opts = from(&[
            ("SWITCHBOARD_NATS_USER", "worker"),
            ("SWITCHBOARD_NATS_PASSWORD_FILE", &path),
        ])
        .expect("valid");
        assert_eq!(
            opts.nats.user,
            Some(("worker".to_owned(), "from-file".to_owned()))
        );
        let both = from(&[
            ("SWITCHBOARD_NATS_PASSWORD", "pw"),
            ("SWITCHBOARD_NATS_PASSWORD_FILE", &path),
        ]);
        std::fs::remove_file(&file).expect("removed");
        assert!(both.is_err());
        assert!(from(&[("SWITCHBOARD_NATS_PASSWORD", "pw")]).is_err());
        assert!(from(&[("SWITCHBOARD_NATS_PASSWORD_FILE", "/nonexistent/pw")]).is_err());
    }
}
