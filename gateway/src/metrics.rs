//! Metric names of the gateway, in one place, and their descriptions.
//!
//! Labels come from closed sets only (transport, reason, kind) — never a sid, room or user.
//! The Prometheus exporter and the full metric set of the operations issue build on these.

/// Open Engine.IO sessions (gauge).
pub const CONNECTIONS: &str = "switchboard_gateway_connections";
/// Engine.IO handshakes by transport (counter).
pub const HANDSHAKES: &str = "switchboard_gateway_handshakes_total";
/// Ended sessions by reason (counter).
pub const DISCONNECTS: &str = "switchboard_gateway_disconnects_total";
/// Frames not delivered because a client's queue was full, by reason (counter).
pub const EMITS_DROPPED: &str = "switchboard_gateway_emits_dropped_total";
/// Client events that matched no handler or rule (counter).
pub const EVENTS_UNMATCHED: &str = "switchboard_gateway_events_unmatched_total";
/// Recipients of one broadcast (histogram).
pub const FANOUT_SIZE: &str = "switchboard_gateway_fanout_size";
/// Connect attempts refused, by reason (counter).
pub const CONNECTS_REFUSED: &str = "switchboard_gateway_connects_refused_total";

/// Registers the descriptions with the installed recorder (call once at start-up).
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open Engine.IO sessions");
    describe_counter!(HANDSHAKES, "Engine.IO handshakes by transport");
    describe_counter!(DISCONNECTS, "Ended sessions by reason");
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
}
