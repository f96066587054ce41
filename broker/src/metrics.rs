//! The broker's metric names (all prefixed `switchboard_broker_`) and their descriptions.
//!
//! The library records through the `metrics` facade only; the binaries (`bin/`) install the
//! Prometheus recorder, with [`LATENCY_BUCKETS`] for every `*_seconds` histogram.
//!
//! Labels come from closed sets only (message kinds, reserve outcomes, gRPC method names and
//! status codes); never a node, socket, room or user. Recording goes through the `metrics`
//! facade: without an installed recorder (tests, an embedding gateway that installs none) it
//! costs nothing. The directory gauges ([`SOCKETS`], [`ROOMS`], [`USERS`], [`NODES`]) are set
//! from the directory itself whenever it is scraped (`Broker::record_gauges`), so they equal its
//! state rather than a running sum of events.

/// Counter: membership messages and heartbeats applied to the directory, by `kind`
/// (`connect`, `disconnect`, `join`, `leave`, `data`, `snapshot`, `leaving`, `heartbeat`).
pub const MESSAGES_APPLIED: &str = "switchboard_broker_messages_applied_total";
/// Counter: membership batches received whole (each entry is then counted in
/// [`MESSAGES_APPLIED`] by its kind, as if it had come alone).
pub const MEMBER_BATCHES: &str = "switchboard_broker_member_batches_total";
/// Counter: bus messages that did not decode or did not fit the contract.
pub const MESSAGES_MALFORMED: &str = "switchboard_broker_messages_malformed_total";
/// Counter: sequence gaps seen in a node's membership events.
pub const SEQUENCE_GAPS: &str = "switchboard_broker_sequence_gaps_total";
/// Counter: snapshot requests sent to gateways.
pub const SNAPSHOT_REQUESTS: &str = "switchboard_broker_snapshot_requests_total";
/// Counter: multi-part snapshots abandoned because a part was missing or out of order.
pub const SNAPSHOTS_DROPPED: &str = "switchboard_broker_snapshots_dropped_total";
/// Counter: resync requests broadcast to every gateway (one per link generation: start,
/// reconnect).
pub const RESYNCS: &str = "switchboard_broker_resyncs_total";
/// Counter: bytes of snapshot parts received (this broker's requests and unsolicited ones).
pub const SNAPSHOT_BYTES: &str = "switchboard_broker_snapshot_bytes_total";
/// Gauge: snapshot bytes asked of the gateways and not yet received (at most the budget).
pub const SNAPSHOT_BYTES_IN_FLIGHT: &str = "switchboard_broker_snapshot_bytes_in_flight";
/// Gauge: the most snapshot bytes ever in flight at once since the broker started.
pub const SNAPSHOT_BYTES_IN_FLIGHT_MAX: &str = "switchboard_broker_snapshot_bytes_in_flight_max";
/// Gauge: nodes waiting for their snapshot turn or sending their snapshot.
pub const SNAPSHOT_NODES_PENDING: &str = "switchboard_broker_snapshot_nodes_pending";
/// Counter: rebuilds completed (a resync, then every node's state received).
pub const REBUILDS: &str = "switchboard_broker_rebuilds_total";
/// Gauge: seconds the last completed rebuild took, from its resync.
pub const REBUILD_SECONDS: &str = "switchboard_broker_rebuild_seconds";
/// Counter: nodes whose lease ran out.
pub const NODES_LOST: &str = "switchboard_broker_nodes_lost_total";
/// Counter: nodes that departed gracefully.
pub const NODES_LEFT: &str = "switchboard_broker_nodes_left_total";
/// Counter: presence events (announcements) published (leader only), alone or in batches.
pub const PRESENCE_EVENTS: &str = "switchboard_broker_presence_events_total";
/// Counter: presence bus messages published (leader only): a lone announcement or a batch;
/// [`PRESENCE_EVENTS`] / this is the mean batch size.
pub const PRESENCE_MESSAGES: &str = "switchboard_broker_presence_messages_total";
/// Counter: capacity reservations answered, by `outcome` (`joined`, `already_member`, `full`,
/// `unknown_socket`).
pub const RESERVATIONS: &str = "switchboard_broker_reservations_total";
/// Gauge: sessions kept for connection state recovery (claimed or not).
pub const SESSIONS_KEPT: &str = "switchboard_broker_sessions_kept";
/// Counter: kept sessions resumed by their socket's recovered `connect`.
pub const SESSIONS_RECOVERED: &str = "switchboard_broker_sessions_recovered_total";
/// Counter: kept sessions whose window ended without a recovery.
pub const SESSIONS_EXPIRED: &str = "switchboard_broker_sessions_expired_total";
/// Counter: session claims answered (`broker.recover`, leader only), by `outcome`
/// (`recovered`, `unknown`, `expired`, `busy`).
pub const RECOVER_REQUESTS: &str = "switchboard_broker_recover_requests_total";
/// Counter: bus publishes that failed.
pub const PUBLISH_ERRORS: &str = "switchboard_broker_publish_errors_total";
/// Gauge: sockets in the directory.
pub const SOCKETS: &str = "switchboard_broker_sockets";
/// Gauge: gateway nodes in the directory.
pub const NODES: &str = "switchboard_broker_nodes";
/// Gauge: rooms in the directory, counted per (namespace, room).
pub const ROOMS: &str = "switchboard_broker_rooms";
/// Gauge: distinct user ids in the directory.
pub const USERS: &str = "switchboard_broker_users";
/// Counter: gRPC Admin calls answered, by `method` (the RPC name) and `code` (the gRPC status
/// name, e.g. `OK`, `UNAUTHENTICATED`).
pub const GRPC_CALLS: &str = "switchboard_broker_grpc_calls_total";
/// Histogram: seconds from a gRPC Admin call's arrival to its status, by `method`.
pub const GRPC_SECONDS: &str = "switchboard_broker_grpc_call_seconds";
/// Counter: Admin calls (gRPC or HTTP) refused by the API key check, by `api` (`grpc`, `http`)
/// and `reason` (`missing`, `unknown_key`, `scope`).
pub const API_AUTH_REFUSED: &str = "switchboard_broker_api_auth_refused_total";
/// Counter: HTTP API calls answered, by `method` (the Admin RPC name, else `unknown`) and `code`
/// (the gRPC status name of the answer, `OK` on success).
pub const HTTP_API_CALLS: &str = "switchboard_broker_http_api_calls_total";
/// Counter (from the bus crate): messages a subscriber dropped because it fell behind.
pub const BUS_SLOW_CONSUMER_DROPS: &str = switchboard_bus::SLOW_CONSUMER_DROPS;

/// Bucket bounds, in seconds, of every `*_seconds` histogram (both tiers): 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Gauge: 1 while this broker is the leader, else 0.
pub const LEADER: &str = "switchboard_broker_leader";

/// Describes every metric to the installed recorder (call once, after installing it).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        MESSAGES_APPLIED,
        "Membership messages and heartbeats applied, by kind"
    );
    describe_counter!(
        MEMBER_BATCHES,
        "Membership batches received whole (their entries count as applied messages)"
    );
    describe_counter!(
        MESSAGES_MALFORMED,
        "Bus messages that did not decode or fit the contract"
    );
    describe_counter!(SEQUENCE_GAPS, "Sequence gaps seen in membership events");
    describe_counter!(SNAPSHOT_REQUESTS, "Snapshot requests sent to gateways");
    describe_counter!(
        SNAPSHOTS_DROPPED,
        "Multi-part snapshots abandoned (part missing or out of order)"
    );
    describe_counter!(RESYNCS, "Resync requests broadcast to every gateway");
    describe_counter!(SNAPSHOT_BYTES, "Bytes of snapshot parts received");
    describe_gauge!(
        SNAPSHOT_BYTES_IN_FLIGHT,
        "Snapshot bytes asked of the gateways and not yet received"
    );
    describe_gauge!(
        SNAPSHOT_BYTES_IN_FLIGHT_MAX,
        "The most snapshot bytes in flight at once since start"
    );
    describe_gauge!(
        SNAPSHOT_NODES_PENDING,
        "Nodes waiting for their snapshot turn or sending"
    );
    describe_counter!(
        REBUILDS,
        "Rebuilds completed (resync, then every node's state)"
    );
    describe_gauge!(
        REBUILD_SECONDS,
        "Seconds the last completed rebuild took, from its resync"
    );
    describe_counter!(NODES_LOST, "Gateway nodes whose lease ran out");
    describe_counter!(NODES_LEFT, "Gateway nodes that departed gracefully");
    describe_counter!(
        PRESENCE_EVENTS,
        "Presence events published (alone or in batches)"
    );
    describe_counter!(
        PRESENCE_MESSAGES,
        "Presence bus messages published (a lone event or a batch)"
    );
    describe_counter!(
        RESERVATIONS,
        "Room capacity reservations answered, by outcome"
    );
    describe_counter!(PUBLISH_ERRORS, "Bus publishes that failed");
    describe_gauge!(
        SESSIONS_KEPT,
        "Sessions kept for connection state recovery (claimed or not)"
    );
    describe_counter!(
        SESSIONS_RECOVERED,
        "Kept sessions resumed by their socket's recovered connect"
    );
    describe_counter!(
        SESSIONS_EXPIRED,
        "Kept sessions whose window ended without a recovery"
    );
    describe_counter!(RECOVER_REQUESTS, "Session claims answered, by outcome");
    describe_gauge!(SOCKETS, "Sockets in the directory");
    describe_gauge!(NODES, "Gateway nodes in the directory");
    describe_gauge!(LEADER, "1 while this broker is the leader");
    describe_gauge!(ROOMS, "Rooms in the directory, per (namespace, room)");
    describe_gauge!(USERS, "Distinct user ids in the directory");
    describe_counter!(
        GRPC_CALLS,
        "gRPC Admin calls answered, by method and status code"
    );
    describe_histogram!(
        GRPC_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from a gRPC Admin call's arrival to its status, by method"
    );
    describe_counter!(
        API_AUTH_REFUSED,
        "Admin calls refused by the API key check, by API and reason"
    );
    describe_counter!(
        HTTP_API_CALLS,
        "HTTP API calls answered, by method and status code"
    );
    describe_counter!(
        BUS_SLOW_CONSUMER_DROPS,
        "Bus messages a subscriber dropped because it fell behind"
    );
}
