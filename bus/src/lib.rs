//! The message bus both tiers talk over: NATS in a cluster, an in-process hub in standalone mode.
//!
//! [`Bus`] is a cheap clonable handle with the few operations Switchboard needs — publish,
//! subscribe (optionally in a queue group), request with a timeout — and the same semantics on
//! both backends, so the gateway and the broker run the same code in both modes:
//!
//! - **No echo**: a client never receives what it published itself (NATS `no_echo`), so a
//!   gateway does not deliver its own cluster emits twice.
//! - **At most once, bounded**: a subscriber that falls behind its buffer loses messages (NATS
//!   calls it a slow consumer); both backends count it in [`SLOW_CONSUMER_DROPS`] rather than
//!   queueing without bound. Reliability is the protocol's job (sequence numbers, snapshots).
//! - **Order**: messages from one publisher on one subject reach a subscriber in order.
//! - **Bounded payloads**: a message longer than [`Bus::max_payload`] (the NATS server's
//!   `max_payload`; the hub's configured bound) is refused with [`BusError::TooLarge`], never
//!   truncated or half-sent.
//!
//! - **A durable log** besides (`log_*` methods, [`LogConfig`]): JetStream in a cluster, a ring
//!   per stream on the hub; stored, sequenced, read in one order and replayable. Unlike core
//!   publish it has no "no echo" and no drops short of retention.
//!
//! Subjects are built by `switchboard_proto::subject`, never here. This crate knows nothing of
//! what the payloads mean.

mod local;
mod log;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;

pub use local::Hub;
pub use log::{
    DEFAULT_DUPLICATE_WINDOW, HUB_DEFAULT_MAX_BYTES, LOG_SKIPPED, LogAck, LogConfig, LogEntry,
    LogInfo, LogReader, LogTail,
};

/// Messages a subscription buffers before new ones are dropped (slow consumer).
pub const SUBSCRIPTION_CAPACITY: usize = 8192;

/// The NATS server's default `max_payload` (1 MiB), also the in-process hub's default bound.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Counter (metric name) of messages dropped because a subscriber's buffer was full.
pub const SLOW_CONSUMER_DROPS: &str = "switchboard_bus_slow_consumer_drops_total";

/// One message as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// Where an answer goes, for a request.
    pub reply: Option<String>,
    /// The payload, as published.
    pub payload: Bytes,
}

/// What can go wrong talking to the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS URL or options are unusable.
    #[error("invalid NATS options: {0}")]
    Options(String),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A publish could not be queued (the client is closed).
    #[error("publish failed: {0}")]
    Publish(String),
    /// A subscription could not be made.
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    /// Nobody subscribes to the request's subject.
    #[error("no responders")]
    NoResponders,
    /// The request got no answer in time.
    #[error("request timed out")]
    Timeout,
    /// The request failed otherwise.
    #[error("request failed: {0}")]
    Request(String),
    /// The log stream does not exist (or, for a publish, no log stream stores the subject).
    #[error("no such log stream")]
    NoLog,
    /// Part of the range asked from the log has been evicted (retention): a replay would miss
    /// entries.
    #[error("log entries of the range were evicted")]
    LogEvicted,
    /// The log (JetStream) refused or failed an operation.
    #[error("log: {0}")]
    Log(String),
    /// The payload is longer than the server accepts (`max_payload`).
    #[error("message too large: {size} bytes, the bus takes at most {max}")]
    TooLarge {
        /// The payload's length.
        size: usize,
        /// The bus's bound.
        max: usize,
    },
}

/// How to reach NATS. Its `Debug` output leaves the password and the token out.
#[derive(Clone, Default)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated: `nats://127.0.0.1:4222`.
    pub url: String,
    /// Connection name shown by the server (`switchboard-gateway gw1`).
    pub name: String,
    /// User and password, if the server wants them.
    pub user: Option<(String, String)>,
    /// A token, if the server wants one.
    pub token: Option<String>,
    /// A `.creds` file (JWT + nkey seed), if the server wants one.
    pub credentials_file: Option<std::path::PathBuf>,
    /// A file holding an nkey seed (`SU...`), if the server authenticates users by nkey.
    pub nkey_seed_file: Option<std::path::PathBuf>,
    /// Copies a JetStream stream or bucket this client makes keeps in a NATS cluster (the
    /// recovery log, the brokers' leader lease); 0 counts as 1. More than 1 needs a clustered
    /// JetStream with at least that many servers; 3 survives the loss of one.
    pub replicas: usize,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("NatsOptions")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("password", &redacted(self.user.is_some()))
            .field("token", &redacted(self.token.is_some()))
            .field("credentials_file", &self.credentials_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// Connection state as seen by the bus client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Connected to the server now.
    pub up: bool,
    /// How many times the connection has come (back) up: a change means "reconnected", after
    /// which whatever the server forgot (subscriptions are restored by the client, but messages
    /// published meanwhile are lost) needs a resync.
    pub generation: u64,
}

#[derive(Clone)]
enum Backend {
    Nats(async_nats::Client),
    Local { hub: Arc<local::Inner>, client: u64 },
}

/// A handle on the bus (cheap to clone; every clone is the same client).
#[derive(Clone)]
pub struct Bus {
    backend: Backend,
    /// The JetStream context of a NATS client, for the log (`None` for the hub).
    jetstream: Option<async_nats::jetstream::Context>,
    link: watch::Receiver<Link>,
    inboxes: Arc<AtomicU64>,
    /// [`NatsOptions::replicas`], at least 1.
    replicas: usize,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Nats(_) => "nats",
            Backend::Local { .. } => "local",
        };
        f.debug_struct("Bus").field("backend", &kind).finish()
    }
}

impl Bus {
    /// Connects to NATS. The first connection attempt is retried in the background (the call
    /// returns at once), and a lost connection is re-established forever with backoff; watch
    /// [`Bus::link`] to know when it is up.
    ///
    /// The URLs of a comma-separated list are tried in the order given (then the servers the
    /// cluster advertises), at start and after a lost connection alike: give each process its
    /// own (nearest) node first, and the client fails over to the next one that answers.
    pub async fn connect(opts: &NatsOptions) -> Result<Self, BusError> {
        let servers = server_addrs(&opts.url)?;
        let (tx, rx) = watch::channel(Link {
            up: false,
            generation: 0,
        });
        let tx = Arc::new(tx);
        let events = tx.clone();
        let mut options = async_nats::ConnectOptions::new()
            .no_echo()
            .retain_servers_order()
            .retry_on_initial_connect()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let events = events.clone();
                async move { on_event(&events, event) }
            });
        if !opts.name.is_empty() {
            options = options.name(&opts.name);
        }
        if let Some((user, password)) = &opts.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &opts.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &opts.nkey_seed_file {
            // The seed is a secret: it is read here (once, at start-up), handed to the client and
            // never logged.
            let seed = std::fs::read_to_string(path)
                .map_err(|e| BusError::Options(format!("{}: {e}", path.display())))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &opts.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Options(format!("{}: {e}", path.display())))?;
        }
        let client = options
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        // The Connected event may have fired before the callback's sender was read; the state
        // tells the truth either way.
        if client.connection_state() == async_nats::connection::State::Connected {
            tx.send_if_modified(|l| {
                if l.up {
                    false
                } else {
                    l.up = true;
                    l.generation += 1;
                    true
                }
            });
        }
        Ok(Self {
            jetstream: Some(async_nats::jetstream::new(client.clone())),
            backend: Backend::Nats(client),
            link: rx,
            inboxes: Arc::new(AtomicU64::new(0)),
            replicas: opts.replicas.max(1),
        })
    }

    pub(crate) fn local(hub: Arc<local::Inner>, client: u64, link: watch::Receiver<Link>) -> Self {
        Self {
            jetstream: None,
            backend: Backend::Local { hub, client },
            link,
            inboxes: Arc::new(AtomicU64::new(0)),
            replicas: 1,
        }
    }

    /// Whether this is an in-process hub client (standalone mode).
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// The NATS client underneath, for what this crate does not wrap (JetStream, for the
    /// brokers' leader lease); `None` for an in-process hub client.
    pub fn nats_client(&self) -> Option<async_nats::Client> {
        match &self.backend {
            Backend::Nats(c) => Some(c.clone()),
            Backend::Local { .. } => None,
        }
    }

    /// How many copies the JetStream streams and buckets this client makes keep
    /// ([`NatsOptions::replicas`]; 1 on the hub).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The connection state, to watch.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
    }

    /// Connected now.
    pub fn is_up(&self) -> bool {
        self.link.borrow().up
    }

    /// The id of the NATS server the connection is on (`server_id` of its latest `INFO`); `None`
    /// before the first connection and on an in-process hub. It changes when a reconnect lands
    /// on another server, and is read fresh after one only once a round trip made after the
    /// reconnect ([`Bus::barrier`]) has come back: the client records the new server's `INFO`
    /// before it serves anything sent afterwards.
    pub fn server_id(&self) -> Option<String> {
        match &self.backend {
            Backend::Nats(c) => Some(c.server_info().server_id).filter(|id| !id.is_empty()),
            Backend::Local { .. } => None,
        }
    }

    /// The longest payload one message may carry: the NATS server's `max_payload` as announced
    /// in its `INFO` (the NATS default until the first `INFO` arrives), or the hub's bound.
    pub fn max_payload(&self) -> usize {
        match &self.backend {
            Backend::Nats(c) => c.max_payload(),
            Backend::Local { hub, .. } => hub.max_payload,
        }
    }

    fn check_size(&self, size: usize) -> Result<(), BusError> {
        let max = self.max_payload();
        if size > max {
            return Err(BusError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Publishes a message. Queued, not acknowledged: core NATS is at most once.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        self.check_size(payload.len())?;
        match &self.backend {
            Backend::Nats(c) => c
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Publish(e.to_string())),
            Backend::Local { hub, client } => {
                hub.publish(*client, &subject, None, payload);
                Ok(())
            }
        }
    }

    /// Publishes a message that asks for an answer on `reply`.
    pub async fn publish_with_reply(
        &self,
        subject: String,
        reply: String,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.check_size(payload.len())?;
        match &self.backend {
            Backend::Nats(c) => c
                .publish_with_reply(subject, reply, payload)
                .await
                .map_err(|e| BusError::Publish(e.to_string())),
            Backend::Local { hub, client } => {
                hub.publish(*client, &subject, Some(reply), payload);
                Ok(())
            }
        }
    }

    /// Subscribes to a subject (wildcards `*` and `>` allowed). Dropping the subscription
    /// unsubscribes.
    pub async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, None).await
    }

    /// Subscribes in a queue group: each message goes to one member of the group.
    pub async fn queue_subscribe(
        &self,
        subject: String,
        group: String,
    ) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, Some(group)).await
    }

    async fn subscribe_inner(
        &self,
        subject: String,
        group: Option<String>,
    ) -> Result<Subscription, BusError> {
        match &self.backend {
            Backend::Nats(c) => {
                let sub = match group {
                    Some(g) => c.queue_subscribe(subject, g).await,
                    None => c.subscribe(subject).await,
                }
                .map_err(|e| BusError::Subscribe(e.to_string()))?;
                Ok(Subscription(SubInner::Nats(sub)))
            }
            Backend::Local { hub, client } => {
                let (rx, guard) = hub.subscribe(*client, &subject, group)?;
                Ok(Subscription(SubInner::Local(rx, guard)))
            }
        }
    }

    /// A fresh subject for answers to this client.
    pub fn new_inbox(&self) -> String {
        match &self.backend {
            Backend::Nats(c) => c.new_inbox(),
            Backend::Local { client, .. } => {
                let n = self.inboxes.fetch_add(1, Ordering::Relaxed);
                format!("_INBOX.local{client}.{n}")
            }
        }
    }

    /// Sends a request and waits up to `timeout` for the first answer.
    pub async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.check_size(payload.len())?;
        match &self.backend {
            Backend::Nats(c) => {
                let request = async_nats::Request::new()
                    .payload(payload)
                    .timeout(Some(timeout));
                match c.send_request(subject, request).await {
                    Ok(m) => Ok(m.payload),
                    Err(e) => Err(match e.kind() {
                        async_nats::RequestErrorKind::TimedOut => BusError::Timeout,
                        async_nats::RequestErrorKind::NoResponders => BusError::NoResponders,
                        _ => BusError::Request(e.to_string()),
                    }),
                }
            }
            Backend::Local { hub, client } => {
                let inbox = self.new_inbox();
                let (mut rx, _guard) = hub.subscribe(*client, &inbox, None)?;
                if !hub.publish(*client, &subject, Some(inbox), payload) {
                    return Err(BusError::NoResponders);
                }
                match tokio::time::timeout(timeout, rx.recv()).await {
                    Ok(Some(m)) => Ok(m.payload),
                    Ok(None) => Err(BusError::Request("hub closed".into())),
                    Err(_) => Err(BusError::Timeout),
                }
            }
        }
    }

    /// Waits until the server has *processed* everything this client sent before (its SUBs
    /// included), so a message another client publishes after this returns reaches those
    /// subscriptions. [`Bus::flush`] is not enough for that: async-nats' flush only empties the
    /// socket buffer, and the SUB may still sit unread at the server. This is a request to a
    /// fresh inbox nobody subscribes to: the server handles one connection's operations in order
    /// and answers "no responders" itself, so that answer comes after every earlier SUB took
    /// effect. In-process hubs apply subscriptions at once.
    pub async fn barrier(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.backend {
            Backend::Nats(c) => {
                let request = async_nats::Request::new().timeout(Some(timeout));
                match c.send_request(c.new_inbox(), request).await {
                    Ok(_) => Ok(()),
                    Err(e) => match e.kind() {
                        async_nats::RequestErrorKind::NoResponders => Ok(()),
                        async_nats::RequestErrorKind::TimedOut => Err(BusError::Timeout),
                        _ => Err(BusError::Request(e.to_string())),
                    },
                }
            }
            Backend::Local { .. } => Ok(()),
        }
    }

    /// Waits until everything published so far has been written to the server (NATS), so a
    /// process that exits right after does not lose it.
    pub async fn flush(&self) -> Result<(), BusError> {
        match &self.backend {
            Backend::Nats(c) => c
                .flush()
                .await
                .map_err(|e| BusError::Publish(e.to_string())),
            Backend::Local { .. } => Ok(()),
        }
    }
}

/// The servers of a URL setting: comma-separated, each as async-nats reads one (`host:port`,
/// `nats://…`, `tls://…`), in order. async-nats takes a string as one URL, so a list given as
/// one string must be split here. Errors name the entry by position, never by its text, which
/// may hold a password.
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let entries: Vec<&str> = url.split(',').map(str::trim).collect();
    if entries.iter().all(|e| e.is_empty()) {
        return Err(BusError::Options("empty NATS URL".into()));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            if entry.is_empty() {
                return Err(BusError::Options(format!(
                    "NATS URL list: entry {} of {} is empty",
                    i + 1,
                    entries.len()
                )));
            }
            entry.parse::<async_nats::ServerAddr>().map_err(|e| {
                BusError::Options(format!(
                    "NATS URL list: entry {} of {} is not a server URL: {e}",
                    i + 1,
                    entries.len()
                ))
            })
        })
        .collect()
}

fn on_event(tx: &watch::Sender<Link>, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            tracing::info!("NATS connected");
            tx.send_modify(|l| {
                if !l.up {
                    l.up = true;
                    l.generation += 1;
                }
            });
        }
        async_nats::Event::Disconnected => {
            tracing::warn!("NATS connection lost; reconnecting");
            tx.send_modify(|l| l.up = false);
        }
        async_nats::Event::SlowConsumer(sid) => {
            metrics::counter!(SLOW_CONSUMER_DROPS).increment(1);
            tracing::warn!(sid, "NATS slow consumer: a subscription dropped messages");
        }
        other => tracing::info!(event = %other, "NATS"),
    }
}

enum SubInner {
    Nats(async_nats::Subscriber),
    /// The guard is held for its `Drop`: it unsubscribes.
    Local(
        tokio::sync::mpsc::Receiver<Message>,
        #[allow(dead_code)] local::SubGuard,
    ),
}

/// A subscription: messages in order of arrival. Dropping it unsubscribes.
pub struct Subscription(SubInner);

impl Subscription {
    /// The next message; `None` once the subscription or the client is closed.
    pub async fn next(&mut self) -> Option<Message> {
        match &mut self.0 {
            SubInner::Nats(s) => s.next().await.map(|m| Message {
                subject: m.subject.to_string(),
                reply: m.reply.map(|r| r.to_string()),
                payload: m.payload,
            }),
            SubInner::Local(rx, _) => rx.recv().await,
        }
    }
}

#[cfg(test)]
mod tests;
