//! A reference peer for scripts/bench-compare.sh: socketioxide 0.18 (a Rust Socket.IO server,
//! the closest peer to Switchboard) with the same `/chat` behaviours as `../server.js` (Node's
//! socket.io) and Switchboard's `loadtest/bench.toml`, so that the load generator runs the same
//! scenarios against all three.
//!
//! ```text
//!   /       accepts every connection (idle, connect)
//!   /chat   join(room, ack)  → joins (not `user:*`, at most MAX_ROOMS rooms), ack({ok:true})
//!           leave(room, ack) → leaves, ack({ok:true})
//!           say({room,…}, …) → relayed as `say` with the same arguments to the room's other
//!                              members; the sender must be in the room
//!           shout(…)         → `shout` to every other socket of /chat
//!           Refusals answer the ack, if any, with {ok:false, error}.
//! ```
//!
//! `socketioxide-peer --version` prints the socketioxide version. Environment: PORT (0 or unset:
//! a free port; a first command-line argument overrides it),
//! HOST (default 127.0.0.1), SIO_RUNTIME (`current_thread`, the default, or `multi_thread`: one
//! worker thread; docs/benchmarks.md says which is faster and by how much). Prints
//! `listening on http://HOST:PORT (…)` once it accepts connections; SIGTERM/SIGINT stop it.
//!
//! The limits are those of server.js (and gateway/config/default.toml): ping interval 25 s,
//! ping timeout 20 s, connect timeout 45 s, payloads up to 1 MB, at most 50 rooms per socket,
//! and 1024 packets queued per connection (Switchboard's `outbound_queue_max_messages`).
//! TCP_NODELAY is set on every connection, as Node and Switchboard do.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::service::SocketIoService;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const MAX_ROOMS: usize = 50;
const PING_INTERVAL: Duration = Duration::from_millis(25_000);
const PING_TIMEOUT: Duration = Duration::from_millis(20_000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(45_000);
const MAX_PAYLOAD_BYTES: u64 = 1_000_000;
/// Packets queued per connection before emits to it fail: Switchboard's
/// `outbound_queue_max_messages` (socketioxide's default is 128).
const MAX_BUFFERED_PACKETS: usize = 1024;
const SOCKETIOXIDE_VERSION: &str = "0.18.9";

/// All of an event's arguments, in order. socketioxide hands a non-tuple type only the first
/// argument, so this deserializes as a tuple (every argument) and serializes as one (emitted as
/// that many arguments): `say` is relayed with exactly the arguments it came with.
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event's arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(v) = seq.next_element()? {
                    args.push(v);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            tuple.serialize_element(v)?;
        }
        tuple.end()
    }
}

fn refuse(ack: AckSender, error: &str) {
    // No ack id: nothing to answer. A closed socket: nobody to answer.
    let _ = ack.send(&json!({ "ok": false, "error": error }));
}

fn accept(ack: AckSender) {
    let _ = ack.send(&json!({ "ok": true }));
}

fn chat(socket: SocketRef) {
    socket.on(
        "join",
        async |socket: SocketRef, TryData(args): TryData<Args>, ack: AckSender| {
            let room = match args.as_ref().ok().and_then(|a| a.0.first()) {
                Some(Value::String(room)) if !room.is_empty() && !room.starts_with("user:") => {
                    room.clone()
                }
                _ => return refuse(ack, "room not allowed"),
            };
            // socketioxide does not put a socket in a room of its own id: rooms() is the joined
            // rooms only.
            let rooms = socket.rooms();
            if rooms.len() >= MAX_ROOMS && !rooms.iter().any(|r| *r == room) {
                return refuse(ack, "too many rooms");
            }
            socket.join(room);
            accept(ack);
        },
    );
    socket.on(
        "leave",
        async |socket: SocketRef, TryData(args): TryData<Args>, ack: AckSender| match args
            .as_ref()
            .ok()
            .and_then(|a| a.0.first())
        {
            Some(Value::String(room)) => {
                socket.leave(room.clone());
                accept(ack);
            }
            _ => refuse(ack, "bad room"),
        },
    );
    socket.on(
        "say",
        async |socket: SocketRef, TryData(args): TryData<Args>, ack: AckSender| {
            let Ok(args) = args else {
                return refuse(ack, "no room");
            };
            let room = match args.0.first().and_then(|first| first.get("room")) {
                Some(Value::String(room)) => room.clone(),
                _ => return refuse(ack, "no room"),
            };
            if !socket.rooms().iter().any(|r| *r == room) {
                return refuse(ack, "not a member of the room");
            }
            // A member whose buffer is full misses this one, as with Node's volatile-free emit
            // to a closed socket: the error names the sockets, and there is nobody to tell.
            let _ = socket.to(room).emit("say", &args).await;
            accept(ack);
        },
    );
    socket.on(
        "shout",
        async |socket: SocketRef, TryData(args): TryData<Args>, ack: AckSender| {
            if let Ok(args) = args {
                let _ = socket.broadcast().emit("shout", &args).await;
            }
            accept(ack);
        },
    );
}

fn config() -> Result<(String, u16, bool), String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .unwrap_or_else(|| "0".to_owned());
    let port: u16 = port
        .parse()
        .map_err(|_| format!("PORT must be 0..65535 (got {port:?})"))?;
    let multi = match std::env::var("SIO_RUNTIME").as_deref() {
        Err(_) | Ok("" | "current_thread") => false,
        Ok("multi_thread") => true,
        Ok(other) => {
            return Err(format!(
                "SIO_RUNTIME must be current_thread or multi_thread (got {other:?})"
            ));
        }
    };
    Ok((host, port, multi))
}

async fn serve(host: String, port: u16, multi: bool) -> std::io::Result<()> {
    let (svc, io): (SocketIoService<_>, SocketIo) = SocketIo::builder()
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .max_payload(MAX_PAYLOAD_BYTES)
        .max_buffer_size(MAX_BUFFERED_PACKETS)
        .build_svc();
    io.ns("/", async |_: SocketRef| {});
    io.ns("/chat", async |socket: SocketRef| chat(socket));

    let listener = TcpListener::bind((host.as_str(), port)).await?;
    let bound: SocketAddr = listener.local_addr()?;
    println!(
        "listening on http://{host}:{} (socketioxide {SOCKETIOXIDE_VERSION}, {} runtime, pid {})",
        bound.port(),
        if multi {
            "multi_thread (1 worker)"
        } else {
            "current_thread"
        },
        std::process::id()
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            // A client that goes away mid-request is no error of ours.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
    // Anything still open (held polls) must not keep the process alive.
    let _ = tokio::time::timeout(Duration::from_secs(2), io.close()).await;
    Ok(())
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("{SOCKETIOXIDE_VERSION}");
        return;
    }
    let (host, port, multi) = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("socketioxide-peer: {e}");
            std::process::exit(2);
        }
    };
    let runtime = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(serve(host, port, multi)),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("socketioxide-peer: {e}");
        std::process::exit(2);
    }
    std::process::exit(0);
}
