//! Metric names of the gateway, in one place, and their descriptions.
//!
//! Labels come from closed sets only — transport (`polling`, `websocket`), reason and kind labels
//! from fixed lists, the namespace as configured (a name or a pattern, never what a client asked
//! for), bus operations — never a sid, room, user or free-form string.
//!
//! Hot paths (every write batch, every received packet) use handles registered once per
//! transport ([`wire`]) so that recording is an atomic add: no label allocation, no registry
//! lookup. Those handles bind to the recorder installed when they are first used, so the binary
//! installs its recorder before it serves anything; without one (tests, an embedder that installs
//! none) they are no-ops.

use std::sync::OnceLock;

use metrics::{Counter, Gauge};
use switchboard_bus::BusError;

/// Open Engine.IO sessions, by `transport` (gauge; an upgraded session moves from `polling` to
/// `websocket`).
pub const CONNECTIONS: &str = "switchboard_gateway_connections";
/// Engine.IO handshakes by transport (counter).
pub const HANDSHAKES: &str = "switchboard_gateway_handshakes_total";
/// Ended sessions by reason (counter).
pub const DISCONNECTS: &str = "switchboard_gateway_disconnects_total";
/// Connected Socket.IO sockets, by `namespace` (gauge).
pub const SOCKETS: &str = "switchboard_gateway_sockets";
/// Socket.IO namespace connects accepted, by `namespace` (counter).
pub const NAMESPACE_CONNECTS: &str = "switchboard_gateway_namespace_connects_total";
/// Engine.IO packets received, by `transport` (counter).
pub const PACKETS_IN: &str = "switchboard_gateway_packets_received_total";
/// Engine.IO packets sent, by `transport` (counter).
pub const PACKETS_OUT: &str = "switchboard_gateway_packets_sent_total";
/// Bytes of Engine.IO packets received, by `transport` (counter; without HTTP or WebSocket
/// framing).
pub const BYTES_IN: &str = "switchboard_gateway_bytes_received_total";
/// Bytes of Engine.IO packets sent, by `transport` (counter; without HTTP or WebSocket framing).
pub const BYTES_OUT: &str = "switchboard_gateway_bytes_sent_total";
/// Frames not delivered because a client's queue was full, by reason (counter).
pub const EMITS_DROPPED: &str = "switchboard_gateway_emits_dropped_total";
/// Client events that matched no handler or rule (counter).
pub const EVENTS_UNMATCHED: &str = "switchboard_gateway_events_unmatched_total";
/// Recipients of one broadcast (histogram).
pub const FANOUT_SIZE: &str = "switchboard_gateway_fanout_size";
/// Connect attempts refused, by reason (counter).
pub const CONNECTS_REFUSED: &str = "switchboard_gateway_connects_refused_total";
/// Session recoveries asked for (a CONNECT with `pid` and `offset`), by `outcome` (counter):
/// `recovered`, `unknown`, `expired`, `busy`, `bad_offset`, `evicted`, `too_large`,
/// `unavailable`, `overflow` (docs/recovery.md).
pub const RECOVERIES: &str = "switchboard_gateway_recoveries_total";
/// Messages of a room's history handed to joining sockets (counter).
pub const HISTORY_SERVED: &str = "switchboard_gateway_history_served_total";
/// Packets replayed to recovered sessions (counter).
pub const REPLAYED_PACKETS: &str = "switchboard_gateway_replayed_packets_total";
/// Bytes of packets replayed to recovered sessions (counter).
pub const REPLAYED_BYTES: &str = "switchboard_gateway_replayed_bytes_total";
/// Emits published into the recovery log, by `result` (counter): `ok`, `retried`, `failed`.
pub const LOG_PUBLISHED: &str = "switchboard_gateway_log_published_total";
/// Logged emits received from the log and delivered to local sockets (counter).
pub const LOG_RECEIVED: &str = "switchboard_gateway_log_received_total";
/// Namespace connects refused by token authentication, by `reason` (counter).
pub const AUTH_FAILURES: &str = "switchboard_gateway_auth_failures_total";
/// JWKS fetches, by `result` (counter): `ok`, or why it failed (`network`, `timeout`, `status`,
/// `too_large`, `bad_json`, `too_many_keys`, `no_usable_key`, `file`).
pub const JWKS_FETCHES: &str = "switchboard_gateway_jwks_fetches_total";
/// Bus messages not published — the publisher's queue was full, or the publish failed — by
/// `kind` (counter).
pub const BUS_OUT_DROPPED: &str = "switchboard_gateway_bus_out_dropped_total";
/// Bus messages published, by `kind` (counter; a membership batch counts each message in it).
pub const BUS_PUBLISHED: &str = "switchboard_gateway_bus_published_total";
/// Membership batches published (counter): bus messages carrying two or more membership
/// messages.
pub const MEMBER_BATCHES: &str = "switchboard_gateway_member_batches_total";
/// Membership messages published inside batches (counter; / [`MEMBER_BATCHES`] is the mean
/// batch size).
pub const MEMBER_BATCHED: &str = "switchboard_gateway_member_batched_total";
/// Deliveries received from the bus (counter).
pub const BUS_RECEIVED: &str = "switchboard_gateway_bus_received_total";
/// Bus messages that could not be decoded or did not fit the contract, and presence
/// announcements refused one by one (another namespace than their subject's, a batch inside a
/// batch) (counter).
pub const BUS_MALFORMED: &str = "switchboard_gateway_bus_malformed_total";
/// Bus messages refused for where they came from, by `why` (counter):
/// `command_on_delivery_subject`, `delivery_on_command_subject` (an envelope on a subject of the
/// other kind, which NATS permissions let more clients publish to), `heartbeat_node` (a
/// heartbeat whose body names another node than its subject).
pub const BUS_REFUSED: &str = "switchboard_gateway_bus_refused_total";
/// Failed bus operations, by `op` and `kind` (counter).
pub const BUS_ERRORS: &str = "switchboard_gateway_bus_errors_total";
/// Seconds a bus round trip took, by `op` (histogram): `forward` (a worker's reply), `reserve`
/// (the broker's capacity answer), `barrier` (subscriptions in effect at the server).
pub const BUS_SECONDS: &str = "switchboard_gateway_bus_request_seconds";
/// Membership snapshots sent to the broker, by `why` (counter).
pub const SNAPSHOTS: &str = "switchboard_gateway_snapshots_total";
/// Requests for another gateway's session passed to their owner, by `kind` (`poll`, `post`,
/// `upgrade`) and `result` (`ok`, `unknown_owner`, `unreachable`, `broken`, `refused`) (counter).
pub const FORWARDED: &str = "switchboard_gateway_forwarded_requests_total";
/// Seconds from passing a request on to having the owner's answer head (histogram).
pub const FORWARD_SECONDS: &str = "switchboard_gateway_forward_seconds";
/// Client input refused by a limit, by `limit` (counter). The label is one of [`Limit`]'s names:
/// every limit a client can hit (issue 12, docs/security.md) counts here, whatever form the
/// refusal takes on the wire (close code, `connect_error`, error ack, HTTP status).
pub const LIMITED: &str = "switchboard_gateway_limited_total";
/// 1 while the cluster bus (NATS, or the in-process hub) is connected, else 0 (gauge). `/ready`
/// stays 200 through an outage; this shows it.
pub const BUS_UP: &str = "switchboard_gateway_bus_up";
/// Counter (from the bus crate): messages a subscriber dropped because it fell behind.
pub const BUS_SLOW_CONSUMER_DROPS: &str = switchboard_bus::SLOW_CONSUMER_DROPS;

/// Bucket bounds of [`FANOUT_SIZE`] (recipients).
pub const FANOUT_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 2500.0, 10000.0, 25000.0, 100000.0,
];

/// Registers the descriptions with the installed recorder (call once at start-up).
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open Engine.IO sessions, by transport");
    describe_counter!(HANDSHAKES, "Engine.IO handshakes by transport");
    describe_counter!(DISCONNECTS, "Ended sessions by reason");
    describe_gauge!(SOCKETS, "Connected Socket.IO sockets, by namespace");
    describe_counter!(
        NAMESPACE_CONNECTS,
        "Socket.IO namespace connects accepted, by namespace"
    );
    describe_counter!(PACKETS_IN, "Engine.IO packets received, by transport");
    describe_counter!(PACKETS_OUT, "Engine.IO packets sent, by transport");
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Bytes of Engine.IO packets received, by transport"
    );
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Bytes of Engine.IO packets sent, by transport"
    );
    describe_counter!(
        EMITS_DROPPED,
        "Frames not delivered because a client's queue was full"
    );
    describe_counter!(
        EVENTS_UNMATCHED,
        "Client events that matched no handler or rule"
    );
    describe_histogram!(FANOUT_SIZE, "Recipients of one broadcast");
    describe_counter!(CONNECTS_REFUSED, "Namespace connects refused, by reason");
    describe_counter!(RECOVERIES, "Session recoveries asked for, by outcome");
    describe_counter!(REPLAYED_PACKETS, "Packets replayed to recovered sessions");
    describe_counter!(
        HISTORY_SERVED,
        "Messages of room histories handed to joining sockets"
    );
    describe_counter!(
        REPLAYED_BYTES,
        "Bytes of packets replayed to recovered sessions"
    );
    describe_counter!(
        LOG_PUBLISHED,
        "Emits published into the recovery log, by result"
    );
    describe_counter!(LOG_RECEIVED, "Logged emits received from the recovery log");
    describe_counter!(
        AUTH_FAILURES,
        "Namespace connects refused by token authentication, by reason"
    );
    describe_counter!(
        JWKS_FETCHES,
        "JWKS fetches, by result (a failure keeps the last good set)"
    );
    describe_counter!(BUS_OUT_DROPPED, "Bus messages not published, by kind");
    describe_counter!(BUS_PUBLISHED, "Bus messages published, by kind");
    describe_counter!(
        MEMBER_BATCHES,
        "Membership batches published (two or more membership messages in one bus message)"
    );
    describe_counter!(
        MEMBER_BATCHED,
        "Membership messages published inside batches"
    );
    describe_counter!(BUS_RECEIVED, "Deliveries received from the bus");
    describe_counter!(BUS_MALFORMED, "Bus messages that could not be decoded");
    describe_counter!(
        BUS_REFUSED,
        "Bus messages refused for the subject they came on, by why"
    );
    describe_counter!(BUS_ERRORS, "Failed bus operations, by op and kind");
    describe_histogram!(
        BUS_SECONDS,
        Unit::Seconds,
        "Seconds a bus round trip took, by op"
    );
    describe_counter!(SNAPSHOTS, "Membership snapshots sent, by why");
    describe_counter!(
        FORWARDED,
        "Requests for another gateway's session passed to their owner, by kind and result"
    );
    describe_histogram!(
        FORWARD_SECONDS,
        Unit::Seconds,
        "Seconds from passing a request on to the owner's answer head"
    );
    describe_counter!(LIMITED, "Client input refused by a limit, by limit");
    describe_gauge!(BUS_UP, "1 while the cluster bus is connected, else 0");
    describe_counter!(
        BUS_SLOW_CONSUMER_DROPS,
        "Bus messages a subscriber dropped because it fell behind"
    );
}

/// Every limit a client can run into, the closed label set of [`LIMITED`].
///
/// Add a variant (and its name) for each new limit; [`limited`] records one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A namespace or event name longer than the configured maximum.
    NameBytes,
    /// Handshake query or kept headers over their bound.
    Handshake,
    /// A binary packet announcing more attachments than allowed.
    Attachments,
    /// A binary packet's attachments, in total, over their byte bound.
    AttachmentBytes,
    /// A binary packet not completed in time.
    AttachmentTime,
    /// More namespaces on one connection than allowed.
    Namespaces,
    /// Too many CONNECT packets on one connection within the interval.
    ConnectRate,
    /// More acks outstanding than allowed.
    PendingAcks,
    /// A request body not finished by its deadline.
    BodyTime,
    /// A request body over `max_payload_bytes`.
    BodyBytes,
    /// Concurrent requests on one polling session over the bound.
    PollingInFlight,
    /// Events over a namespace's rate limit.
    RateLimit,
    /// Rooms per socket over `max_rooms`.
    Rooms,
    /// Sessions per client address over `max_connections_per_ip`.
    ConnectionsPerIp,
    /// A bus message (relay, emit, snapshot part) over the bus's payload limit.
    BusPayload,
}

impl Limit {
    /// Every variant, for tests and documentation.
    pub const ALL: [Limit; 15] = [
        Limit::NameBytes,
        Limit::Handshake,
        Limit::Attachments,
        Limit::AttachmentBytes,
        Limit::AttachmentTime,
        Limit::Namespaces,
        Limit::ConnectRate,
        Limit::PendingAcks,
        Limit::BodyTime,
        Limit::BodyBytes,
        Limit::PollingInFlight,
        Limit::RateLimit,
        Limit::Rooms,
        Limit::ConnectionsPerIp,
        Limit::BusPayload,
    ];

    /// The `limit` label value.
    pub fn name(self) -> &'static str {
        match self {
            Limit::NameBytes => "name_bytes",
            Limit::Handshake => "handshake",
            Limit::Attachments => "attachments",
            Limit::AttachmentBytes => "attachment_bytes",
            Limit::AttachmentTime => "attachment_time",
            Limit::Namespaces => "namespaces",
            Limit::ConnectRate => "connect_rate",
            Limit::PendingAcks => "pending_acks",
            Limit::BodyTime => "body_time",
            Limit::BodyBytes => "body_bytes",
            Limit::PollingInFlight => "polling_in_flight",
            Limit::RateLimit => "rate_limit",
            Limit::Rooms => "rooms",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::BusPayload => "bus_payload",
        }
    }
}

/// Records one refusal by `limit` in [`LIMITED`].
pub fn limited(limit: Limit) {
    ::metrics::counter!(LIMITED, "limit" => limit.name()).increment(1);
}

/// The per-transport handles of the hot paths.
pub struct Wire {
    /// [`CONNECTIONS`] of this transport.
    pub connections: Gauge,
    /// [`PACKETS_IN`] of this transport.
    pub packets_in: Counter,
    /// [`PACKETS_OUT`] of this transport.
    pub packets_out: Counter,
    /// [`BYTES_IN`] of this transport.
    pub bytes_in: Counter,
    /// [`BYTES_OUT`] of this transport.
    pub bytes_out: Counter,
}

impl Wire {
    fn new(transport: &'static str) -> Self {
        Self {
            connections: ::metrics::gauge!(CONNECTIONS, "transport" => transport),
            packets_in: ::metrics::counter!(PACKETS_IN, "transport" => transport),
            packets_out: ::metrics::counter!(PACKETS_OUT, "transport" => transport),
            bytes_in: ::metrics::counter!(BYTES_IN, "transport" => transport),
            bytes_out: ::metrics::counter!(BYTES_OUT, "transport" => transport),
        }
    }

    /// Counts `packets` received, `bytes` long in all.
    pub fn received(&self, packets: u64, bytes: u64) {
        self.packets_in.increment(packets);
        self.bytes_in.increment(bytes);
    }

    /// Counts `packets` sent, `bytes` long in all (one call per write batch).
    pub fn sent(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            self.packets_out.increment(packets);
            self.bytes_out.increment(bytes);
        }
    }
}

/// The handles of the WebSocket transport (`websocket`) or of long-polling (`polling`).
pub fn wire(websocket: bool) -> &'static Wire {
    static POLLING: OnceLock<Wire> = OnceLock::new();
    static WEBSOCKET: OnceLock<Wire> = OnceLock::new();
    if websocket {
        WEBSOCKET.get_or_init(|| Wire::new("websocket"))
    } else {
        POLLING.get_or_init(|| Wire::new("polling"))
    }
}

/// The `kind` label of a failed bus operation.
pub fn bus_error_kind(e: &BusError) -> &'static str {
    match e {
        BusError::Options(_) => "options",
        BusError::Connect(_) => "connect",
        BusError::Publish(_) => "publish",
        BusError::Subscribe(_) => "subscribe",
        BusError::NoResponders => "no_responders",
        BusError::Timeout => "timeout",
        BusError::Request(_) => "request",
        BusError::TooLarge { .. } => "too_large",
        BusError::NoLog => "no_log",
        BusError::LogEvicted => "log_evicted",
        BusError::Log(_) => "log",
    }
}

/// Counts a failed bus operation `op` (`publish`, `subscribe`, `forward`, `reserve`, `barrier`,
/// `reply`).
pub fn bus_error(op: &'static str, e: &BusError) {
    ::metrics::counter!(BUS_ERRORS, "op" => op, "kind" => bus_error_kind(e)).increment(1);
}

/// Records how long a bus round trip `op` took, from `start`.
pub fn bus_latency(op: &'static str, start: tokio::time::Instant) {
    ::metrics::histogram!(BUS_SECONDS, "op" => op).record(start.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_errors_map_to_a_closed_set() {
        assert_eq!(bus_error_kind(&BusError::Timeout), "timeout");
        assert_eq!(bus_error_kind(&BusError::NoResponders), "no_responders");
        assert_eq!(
            bus_error_kind(&BusError::Request("connection reset".into())),
            "request"
        );
    }

    #[test]
    fn every_name_has_the_gateway_prefix_and_no_duplicate() {
        let names = [
            CONNECTIONS,
            HANDSHAKES,
            DISCONNECTS,
            SOCKETS,
            NAMESPACE_CONNECTS,
            PACKETS_IN,
            PACKETS_OUT,
            BYTES_IN,
            BYTES_OUT,
            EMITS_DROPPED,
            EVENTS_UNMATCHED,
            FANOUT_SIZE,
            CONNECTS_REFUSED,
            AUTH_FAILURES,
            JWKS_FETCHES,
            BUS_OUT_DROPPED,
            BUS_PUBLISHED,
            MEMBER_BATCHES,
            MEMBER_BATCHED,
            BUS_RECEIVED,
            BUS_MALFORMED,
            BUS_REFUSED,
            BUS_ERRORS,
            BUS_SECONDS,
            SNAPSHOTS,
            LIMITED,
        ];
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        for n in names {
            assert!(n.starts_with("switchboard_gateway_"), "{n}");
        }
        assert!(FANOUT_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let limits: std::collections::BTreeSet<_> = Limit::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(limits.len(), Limit::ALL.len());
    }
}
