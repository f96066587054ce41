//! The broker's metric names (all prefixed `switchboard_broker_`) and their descriptions.
//!
//! Labels come from closed sets only (message kinds, reserve outcomes); never a node, socket,
//! room or user. Recording goes through the `metrics` facade: without an installed recorder
//! (tests, an embedding gateway that installs none) it costs nothing.

/// Counter: membership messages and heartbeats applied to the directory, by `kind`
/// (`connect`, `disconnect`, `join`, `leave`, `snapshot`, `leaving`, `heartbeat`).
pub const MESSAGES_APPLIED: &str = "switchboard_broker_messages_applied_total";
/// Counter: bus messages that did not decode or did not fit the contract.
pub const MESSAGES_MALFORMED: &str = "switchboard_broker_messages_malformed_total";
/// Counter: sequence gaps seen in a node's membership events.
pub const SEQUENCE_GAPS: &str = "switchboard_broker_sequence_gaps_total";
/// Counter: snapshot requests sent to gateways.
pub const SNAPSHOT_REQUESTS: &str = "switchboard_broker_snapshot_requests_total";
/// Counter: multi-part snapshots abandoned because a part was missing or out of order.
pub const SNAPSHOTS_DROPPED: &str = "switchboard_broker_snapshots_dropped_total";
/// Counter: resync requests broadcast to every gateway (start, reconnect).
pub const RESYNCS: &str = "switchboard_broker_resyncs_total";
/// Counter: nodes whose lease ran out.
pub const NODES_LOST: &str = "switchboard_broker_nodes_lost_total";
/// Counter: nodes that departed gracefully.
pub const NODES_LEFT: &str = "switchboard_broker_nodes_left_total";
/// Counter: presence events published (leader only).
pub const PRESENCE_EVENTS: &str = "switchboard_broker_presence_events_total";
/// Counter: capacity reservations answered, by `outcome` (`joined`, `already_member`, `full`,
/// `unknown_socket`).
pub const RESERVATIONS: &str = "switchboard_broker_reservations_total";
/// Counter: bus publishes that failed.
pub const PUBLISH_ERRORS: &str = "switchboard_broker_publish_errors_total";
/// Gauge: sockets in the directory.
pub const SOCKETS: &str = "switchboard_broker_sockets";
/// Gauge: gateway nodes in the directory.
pub const NODES: &str = "switchboard_broker_nodes";
/// Gauge: 1 while this broker is the leader, else 0.
pub const LEADER: &str = "switchboard_broker_leader";

/// Describes every metric to the installed recorder (call once, after installing it).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        MESSAGES_APPLIED,
        "Membership messages and heartbeats applied, by kind"
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
    describe_counter!(NODES_LOST, "Gateway nodes whose lease ran out");
    describe_counter!(NODES_LEFT, "Gateway nodes that departed gracefully");
    describe_counter!(PRESENCE_EVENTS, "Presence events published");
    describe_counter!(
        RESERVATIONS,
        "Room capacity reservations answered, by outcome"
    );
    describe_counter!(PUBLISH_ERRORS, "Bus publishes that failed");
    describe_gauge!(SOCKETS, "Sockets in the directory");
    describe_gauge!(NODES, "Gateway nodes in the directory");
    describe_gauge!(LEADER, "1 while this broker is the leader");
}
