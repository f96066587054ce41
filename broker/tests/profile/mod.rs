//! The bench profile of a socket (broker/examples/broker_bench.rs, `Workload::info`), shared by
//! the directory's memory test (`tests/directory_memory.rs`) and its micro-benchmark
//! (`examples/directory_bench.rs`): namespace `/chat`, two sockets per user on two gateways,
//! rooms `user:{sub}` and one chat room of [`ROOM_MEMBERS`] members, a browser handshake (user
//! agent, origin, address, query, claims), `data` null, presence on.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each includer uses part of it, and it is private to each"
)]

use switchboard_proto::bus as pb;

/// Simulated gateways (the broker bench's default).
pub const GATEWAYS: usize = 50;
/// Members per chat room.
pub const ROOM_MEMBERS: usize = 100;
/// Topic rooms that join/leave pairs pick from.
pub const TOPICS: usize = 1000;
/// A browser's user agent, as the gateway would record it.
pub const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The gateway of socket `i`.
pub fn node(i: usize) -> String {
    format!("bench{:03}", i % GATEWAYS)
}

/// The id of socket `i`: `{node}.{random}`, 16 characters standing for the gateway's random bits.
pub fn id(i: usize) -> String {
    let mixed = (i as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    format!("{}.{mixed:016x}", node(i))
}

/// Socket `i` of `sockets`, as its gateway announces it.
pub fn info(i: usize, sockets: usize) -> pb::SocketInfo {
    let user = format!("user-{}", i / 2);
    let rooms = (sockets / ROOM_MEMBERS).max(1);
    pb::SocketInfo {
        id: id(i),
        ns: "/chat".into(),
        rooms: vec![format!("user:{user}"), format!("room-{}", i % rooms)],
        handshake: Some(pb::Handshake {
            address: format!("10.0.{}.{}:{}", (i >> 8) & 255, i & 255, 1024 + i % 60000),
            headers: vec![
                pb::Header {
                    name: "user-agent".into(),
                    value: USER_AGENT.into(),
                },
                pb::Header {
                    name: "origin".into(),
                    value: "https://chat.example.com".into(),
                },
            ],
            query: "EIO=4&transport=websocket".into(),
            claims_json: format!("{{\"sub\":\"{user}\"}}"),
            connected_at_ms: 1_765_000_000_000 + i as u64,
        }),
        user: Some(user),
        data_json: "null".into(),
        presence: Some(pb::PresenceFlags {
            rooms: true,
            users: true,
        }),
        recovery: None,
        recovered: false,
    }
}

/// The topic room of the `k`-th join/leave pair.
pub fn topic(k: usize) -> String {
    format!("topic-{}", k % TOPICS)
}
