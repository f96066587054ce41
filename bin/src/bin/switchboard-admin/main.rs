//! `switchboard-admin`: the operators' command line for the broker's gRPC Admin API
//! (`proto/proto/admin.proto`, service `switchboard.admin.v1.Admin`), served by the broker and by
//! a standalone gateway.
//!
//! ```text
//! switchboard-admin [--addr ADDR] [--token TOKEN] [--ca FILE] [--json] [--timeout-ms N] <command> [options]
//!
//!   sockets   --ns NS [selector]             every matching socket: id, node, user, rooms (FetchSockets)
//!   stream    --ns NS [selector]             the same, one line per socket as it comes (StreamSockets)
//!   rooms     --ns NS [--prefix P]           every room: name, members, users (Rooms)
//!   members   --ns NS --room R               the sockets in a room (RoomMembers)
//!   presence  --ns NS --room R               the users in a room, with their socket counts (Presence)
//!   history   --ns NS --room R [--limit N]   a room's last N messages, oldest first (RoomHistory)
//!   user-sockets --user U [--ns NS]          a user's sockets (UserSockets)
//!   stats                                    nodes, namespaces and totals (Stats)
//!   kick      --ns NS [selector] [--reason TEXT] [--close]
//!                                            disconnects the matching sockets: "disconnected N"
//!   broadcast --ns NS [selector] --event E [--args JSON_ARRAY] [--volatile] [--uncompressed]
//!             [--ack-timeout-ms N]
//!                                            emits to the matching sockets: "targeted N", then
//!                                            one line per ack (socket id, args or "timeout")
//!   emit      --ns NS --socket ID --event E [--args JSON_ARRAY] [--ack-timeout-ms N]
//!                                            emits to one socket: "sent", or its ack (EmitToSocket)
//!   join      --ns NS [selector] ROOM...     the matching sockets join the rooms: "joined N"
//!   leave     --ns NS [selector] ROOM...     the matching sockets leave the rooms: "left N"
//!   set-data  --socket ID --data JSON        sets a socket's data: "updated" (UpdateSocketData)
//!   token     (--config FILE --ns NS | --secret-env VAR --alg HS256) --sub USER [--ttl 1h] [--claim K=V]
//!                                            mints a JWT for a namespace's HMAC key (no server)
//!   help, --help, -h                         the usage
//!
//!   selector: --room R, --except R, --user U, --socket ID (each repeatable; they intersect)
//! ```
//!
//! * `--addr` defaults to `$SWITCHBOARD_ADMIN_ADDR`, else `127.0.0.1:50051`. It is `HOST:PORT`
//!   (what the servers print: `grpc on 127.0.0.1:50051`; plaintext), `http://HOST:PORT` or
//!   `https://HOST:PORT`. An `https://` server's certificate is verified with the system's root
//!   certificates, or with `--ca FILE` (PEM) only when given.
//! * `--token` defaults to `$SWITCHBOARD_ADMIN_TOKEN`; every call carries it as
//!   `authorization: Bearer <token>`.
//! * `--timeout-ms` (default 10000) is the deadline of each call (`grpc-timeout`); a broadcast
//!   that collects acks gets `--ack-timeout-ms` more; for `stream` it bounds the whole stream.
//! * `--json`: one JSON object per line: a socket, a room, a user, a message; for `stats` one
//!   object with everything; for the actions one object with the counts (and the acks); for
//!   `token` `{"token": …}`.
//!
//! `sockets`, `rooms`, `members` and `history` page through the whole result (pages of
//! [`PAGE_SIZE`]). Exit status: 0 ok; 1 when the connection or a call fails
//! (`switchboard-admin: <code>: <message>` on stderr), or `emit` / `set-data` name an unknown
//! socket; 2 for a usage error (a one-line message and "try --help" on stderr), which includes
//! every `token` failure (a missing secret, a namespace without an HMAC key).
//!
//! The command line is parsed by clap ([`Cli`]) and checked by [`Cli::into_task`]; the output
//! comes from pure functions of the response messages, so both are unit-tested without a server.

use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use switchboard_broker::grpc::MAX_ACK_TIMEOUT_MS;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_client::AdminClient;
use tonic::codegen::http::Uri;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

mod token;

/// The address used when neither `--addr` nor `$SWITCHBOARD_ADMIN_ADDR` gives one.
const DEFAULT_ADDR: &str = "127.0.0.1:50051";
/// The environment variable `--addr` defaults to.
const ENV_ADDR: &str = "SWITCHBOARD_ADMIN_ADDR";
/// The environment variable `--token` defaults to (the one the server reads, too).
const ENV_TOKEN: &str = "SWITCHBOARD_ADMIN_TOKEN";
/// The default per-call deadline, in milliseconds.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The longest per-call deadline `--timeout-ms` accepts (a day).
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Sockets, rooms or messages asked for per page.
const PAGE_SIZE: u32 = 1000;
/// The default of `history --limit`.
const DEFAULT_HISTORY_LIMIT: u32 = 100;
/// The largest `history --limit`.
const MAX_HISTORY_LIMIT: u32 = 100_000;
/// The largest response accepted (tonic's default, 4 MiB, is too small for a page of 1000
/// sockets with large handshake headers).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Printed after the options by `--help`.
const AFTER_HELP: &str = "\
Selector options (sockets, stream, kick, broadcast, join, leave) repeat; the restrictions
intersect. Without one, kick, broadcast, join and leave address every socket of the namespace.

Exit status: 0 ok, 1 the connection or a call failed (or emit / set-data found no such socket),
2 usage error (token: every failure).";

/// The operators' command line for Switchboard's gRPC Admin API (served by the broker and by a
/// standalone gateway).
#[derive(Parser, Debug)]
#[command(name = "switchboard-admin", version, after_help = AFTER_HELP)]
struct Cli {
    /// The broker's (or a standalone gateway's) gRPC address: HOST:PORT as the server prints it
    /// (plaintext), http://HOST:PORT or https://HOST:PORT.
    #[arg(long, global = true, value_name = "ADDR", env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    addr: String,
    /// The admin bearer token (required).
    #[arg(long, global = true, value_name = "TOKEN", env = ENV_TOKEN, hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate(s) to verify an https:// address with, instead of the system's root
    /// certificates.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Machine output: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// The deadline of each call, in milliseconds.
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = DEFAULT_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS),
    )]
    timeout_ms: u64,
    #[command(subcommand)]
    command: CommandLine,
}

/// The commands, as given.
#[derive(Subcommand, Debug)]
enum CommandLine {
    /// Every matching socket: id, node, user, rooms.
    Sockets(SelectorArgs),
    /// Every room (optionally by name prefix): name, members, users.
    Rooms {
        /// The namespace.
        #[arg(long)]
        ns: String,
        /// Only the rooms whose name starts with this.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        prefix: String,
    },
    /// The users in a room, with their socket counts.
    Presence {
        /// The namespace.
        #[arg(long)]
        ns: String,
        /// The room.
        #[arg(long, allow_hyphen_values = true)]
        room: String,
    },
    /// Every matching socket, one line each as the server streams them (the deadline,
    /// --timeout-ms, bounds the whole stream).
    Stream(SelectorArgs),
    /// The sockets in a room.
    Members {
        /// The namespace.
        #[arg(long)]
        ns: String,
        /// The room.
        #[arg(long, allow_hyphen_values = true)]
        room: String,
    },
    /// A room's last messages, oldest first (namespaces with connection state recovery).
    History {
        /// The namespace.
        #[arg(long)]
        ns: String,
        /// The room.
        #[arg(long, allow_hyphen_values = true)]
        room: String,
        /// At most this many messages (the newest).
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_HISTORY_LIMIT,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_HISTORY_LIMIT)),
        )]
        limit: u32,
    },
    /// The sockets of a user.
    UserSockets {
        /// The user id.
        #[arg(long, value_name = "U", allow_hyphen_values = true)]
        user: String,
        /// Only in this namespace (default: every namespace).
        #[arg(long)]
        ns: Option<String>,
    },
    /// Nodes, namespaces and totals.
    Stats,
    /// Disconnects the matching sockets; prints "disconnected N".
    Kick {
        #[command(flatten)]
        selector: SelectorArgs,
        /// Told to the sockets (event `kicked`).
        #[arg(long, default_value = "", value_name = "TEXT")]
        reason: String,
        /// Close the sockets' whole connections.
        #[arg(long)]
        close: bool,
    },
    /// Emits E to the matching sockets; prints "targeted N" and, with --ack-timeout-ms, one
    /// line per socket: its ack's arguments or "timeout" (the call's deadline grows by N).
    Broadcast {
        #[command(flatten)]
        selector: SelectorArgs,
        #[command(flatten)]
        emit: EventArgs,
        /// May be dropped for a slow client.
        #[arg(long)]
        volatile: bool,
        /// Never compressed on its way to the clients (socket.io's `compress(false)`).
        #[arg(long)]
        uncompressed: bool,
    },
    /// Emits E to one socket; prints "sent" or, with --ack-timeout-ms, its ack's arguments or
    /// "timeout". An unknown socket exits 1.
    Emit {
        /// The namespace.
        #[arg(long)]
        ns: String,
        /// The socket id.
        #[arg(long, value_name = "ID")]
        socket: String,
        #[command(flatten)]
        emit: EventArgs,
    },
    /// Makes the matching sockets join the rooms; prints "joined N" (the sockets matched).
    Join {
        #[command(flatten)]
        selector: SelectorArgs,
        /// The rooms to join.
        #[arg(value_name = "ROOM", required = true)]
        to: Vec<String>,
    },
    /// Makes the matching sockets leave the rooms; prints "left N" (the sockets matched).
    Leave {
        #[command(flatten)]
        selector: SelectorArgs,
        /// The rooms to leave.
        #[arg(value_name = "ROOM", required = true)]
        from: Vec<String>,
    },
    /// Sets a socket's data (shown by later queries); prints "updated". An unknown socket
    /// exits 1.
    SetData {
        /// The socket id.
        #[arg(long, value_name = "ID")]
        socket: String,
        /// The data: any JSON value.
        #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
        data: String,
    },
    /// Mints a JWT for a namespace's HMAC key and prints it (needs no server): the key from a
    /// gateway configuration file (--config FILE --ns NS) or from --secret-env VAR --alg ALG.
    Token(token::TokenArgs),
    /// Prints the shell completion script for this command (needs no address or token).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The event an emit sends (broadcast, emit).
#[derive(clap::Args, Debug)]
struct EventArgs {
    /// The event name.
    #[arg(long, value_name = "E")]
    event: String,
    /// The event's arguments: a JSON array.
    #[arg(long, value_name = "JSON_ARRAY", allow_hyphen_values = true)]
    args: Option<String>,
    /// Collect the acks for this long, in milliseconds (0: none).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_ACK_TIMEOUT_MS)),
    )]
    ack_timeout_ms: u32,
}

/// The sockets a command addresses.
#[derive(clap::Args, Debug)]
struct SelectorArgs {
    /// The namespace.
    #[arg(long)]
    ns: String,
    /// Members of any of these rooms (none: every socket of the namespace).
    #[arg(long = "room", value_name = "R", allow_hyphen_values = true)]
    rooms: Vec<String>,
    /// Not members of any of these rooms.
    #[arg(long = "except", value_name = "R", allow_hyphen_values = true)]
    except: Vec<String>,
    /// Only the sockets of these users.
    #[arg(long = "user", value_name = "U", allow_hyphen_values = true)]
    users: Vec<String>,
    /// Only these sockets.
    #[arg(long = "socket", value_name = "ID")]
    sockets: Vec<String>,
}

impl SelectorArgs {
    fn into_pb(self) -> pb::Selector {
        pb::Selector {
            ns: self.ns,
            rooms: self.rooms,
            except_rooms: self.except,
            socket_ids: self.sockets,
            user_ids: self.users,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
enum Task {
    /// A call to the Admin API.
    Call(Run),
    /// A token, made here.
    Mint { args: token::TokenArgs, json: bool },
}

/// A command and how to run it.
#[derive(Debug, PartialEq)]
struct Run {
    target: Target,
    /// `--json`: machine output.
    json: bool,
    /// The deadline of each call.
    timeout: Duration,
    command: Command,
}

/// Where the Admin API is and how to authenticate to it.
#[derive(PartialEq)]
struct Target {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    addr: String,
    /// The bearer token (a valid header value).
    token: String,
    /// The CA certificates (PEM) of an `https://` address.
    ca: Option<PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("ca", &self.ca)
            .finish()
    }
}

/// One command, with its request (page fields are filled in while paging).
#[derive(Debug, PartialEq)]
enum Command {
    /// Every socket the selector matches (FetchSockets, paged).
    Sockets(pb::Selector),
    /// Every room of a namespace whose name starts with `prefix` (Rooms, paged).
    Rooms { ns: String, prefix: String },
    /// The users in one room (Presence).
    Presence(pb::PresenceRequest),
    /// Nodes, namespaces and totals (Stats).
    Stats,
    /// Disconnect the sockets a selector matches (Disconnect).
    Kick(pb::DisconnectRequest),
    /// Emit an event to the sockets a selector matches (Broadcast).
    Broadcast(pb::BroadcastRequest),
    /// Every socket the selector matches, as streamed (StreamSockets).
    Stream(pb::Selector),
    /// The sockets in a room (RoomMembers, paged).
    Members { ns: String, room: String },
    /// A room's newest `limit` messages (RoomHistory, paged).
    History {
        ns: String,
        room: String,
        limit: u32,
    },
    /// A user's sockets (UserSockets).
    UserSockets(pb::UserSocketsRequest),
    /// Emit an event to one socket (EmitToSocket).
    Emit(pb::EmitToSocketRequest),
    /// The sockets a selector matches join rooms (SocketsJoin).
    Join(pb::RoomsChangeRequest),
    /// The sockets a selector matches leave rooms (SocketsLeave).
    Leave(pb::RoomsChangeRequest),
    /// Set a socket's data (UpdateSocketData).
    SetData(pb::UpdateSocketDataRequest),
}

/// A command line that cannot be run; exit status 2.
#[derive(Debug, PartialEq)]
pub(crate) struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

impl Cli {
    /// The command and its target, checked beyond what clap checks: the address, the token, the
    /// CA and the arguments' JSON.
    fn into_task(self) -> Result<Task, UsageError> {
        let command = match self.command {
            CommandLine::Token(args) => {
                return Ok(Task::Mint {
                    args,
                    json: self.json,
                });
            }
            CommandLine::Sockets(selector) => Command::Sockets(selector.into_pb()),
            CommandLine::Rooms { ns, prefix } => Command::Rooms { ns, prefix },
            CommandLine::Presence { ns, room } => {
                Command::Presence(pb::PresenceRequest { ns, room })
            }
            CommandLine::Stats => Command::Stats,
            // Answered by `main` before anything is checked; not a call.
            CommandLine::Completions { .. } => {
                return Err(usage("completions makes no call"));
            }
            CommandLine::Kick {
                selector,
                reason,
                close,
            } => Command::Kick(pb::DisconnectRequest {
                selector: Some(selector.into_pb()),
                close_connection: close,
                reason,
            }),
            CommandLine::Broadcast {
                selector,
                emit,
                volatile,
                uncompressed,
            } => Command::Broadcast(pb::BroadcastRequest {
                selector: Some(selector.into_pb()),
                args_json: args_array(emit.args)?,
                event: emit.event,
                attachments: Vec::new(),
                volatile,
                ack_timeout_ms: emit.ack_timeout_ms,
                uncompressed,
            }),
            CommandLine::Stream(selector) => Command::Stream(selector.into_pb()),
            CommandLine::Members { ns, room } => Command::Members { ns, room },
            CommandLine::History { ns, room, limit } => Command::History { ns, room, limit },
            CommandLine::UserSockets { user, ns } => Command::UserSockets(pb::UserSocketsRequest {
                user,
                ns: ns.unwrap_or_default(),
            }),
            CommandLine::Emit { ns, socket, emit } => Command::Emit(pb::EmitToSocketRequest {
                ns,
                socket_id: socket,
                args_json: args_array(emit.args)?,
                event: emit.event,
                attachments: Vec::new(),
                ack_timeout_ms: emit.ack_timeout_ms,
            }),
            CommandLine::Join { selector, to } => Command::Join(pb::RoomsChangeRequest {
                selector: Some(selector.into_pb()),
                rooms: to,
            }),
            CommandLine::Leave { selector, from } => Command::Leave(pb::RoomsChangeRequest {
                selector: Some(selector.into_pb()),
                rooms: from,
            }),
            CommandLine::SetData { socket, data } => {
                if let Err(e) = serde_json::from_str::<Value>(&data) {
                    return Err(usage(format!(
                        "--data: invalid JSON: {e} (a string is quoted: '\"gold\"')"
                    )));
                }
                Command::SetData(pb::UpdateSocketDataRequest {
                    socket_id: socket,
                    data_json: data,
                })
            }
        };
        let (addr, https) = check_addr(&self.addr)?;
        if !https && self.ca.is_some() {
            return Err(usage("--ca is only for https:// addresses"));
        }
        let token = self.token.unwrap_or_default();
        if token.is_empty() {
            return Err(usage(format!(
                "no token: give --token TOKEN or set ${ENV_TOKEN}"
            )));
        }
        if bearer(&token).is_none() {
            return Err(usage(
                "the token may not contain control characters (it goes in a header)",
            ));
        }
        Ok(Task::Call(Run {
            target: Target {
                addr,
                token,
                ca: self.ca,
            },
            json: self.json,
            timeout: Duration::from_millis(self.timeout_ms),
            command,
        }))
    }
}

/// `--args`: empty when not given, else a JSON array.
fn args_array(args: Option<String>) -> Result<String, UsageError> {
    let Some(text) = args else {
        return Ok(String::new());
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(_)) => Ok(text),
        Ok(_) => Err(usage(r#"--args: must be a JSON array (e.g. '["hi", 1]')"#)),
        Err(e) => Err(usage(format!("--args: invalid JSON: {e}"))),
    }
}

/// Checks that `addr` is `HOST:PORT` (what the servers print; plaintext) or
/// `http[s]://HOST[:PORT]`; the address as a URL, and true for `https`.
fn check_addr(given: &str) -> Result<(String, bool), UsageError> {
    let bad = |why: &str| {
        usage(format!(
            "{given:?} is not a gRPC address: {why} (e.g. {DEFAULT_ADDR}, \
             http://{DEFAULT_ADDR} or https://admin.example:443)"
        ))
    };
    let addr = if given.contains("://") {
        given.to_owned()
    } else {
        if given.parse::<std::net::SocketAddr>().is_err()
            && given.rsplit_once(':').is_none_or(|(host, port)| {
                host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())
            })
        {
            return Err(bad("expected HOST:PORT or a URL"));
        }
        format!("http://{given}")
    };
    let uri: Uri = addr.parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("the scheme must be http:// or https://")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("it may not have a path"));
    }
    if Endpoint::from_shared(addr.clone()).is_err() {
        return Err(bad("not a valid endpoint"));
    }
    Ok((addr, https))
}

/// The `authorization` header value of `token` (`None` if it cannot be a header value).
fn bearer(token: &str) -> Option<MetadataValue<Ascii>> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().ok()?;
    value.set_sensitive(true);
    Some(value)
}

// ---------------------------------------------------------------------------------------------
// Output: pure functions from response messages to lines
// ---------------------------------------------------------------------------------------------

/// How a table column is aligned.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// A header line and one line per row, columns separated by two spaces (no trailing spaces).
fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(title, _)| title.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, ((cell, (_, align)), width)) in cells.zip(columns).zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            match align {
                Align::Right => {
                    out.push_str(&pad);
                    out.push_str(cell);
                }
                Align::Left => {
                    out.push_str(cell);
                    if i + 1 < columns.len() {
                        out.push_str(&pad);
                    }
                }
            }
        }
        out.truncate(out.trim_end().len());
        out
    };
    let mut lines = Vec::with_capacity(rows.len() + 1);
    lines.push(line(&mut columns.iter().map(|(title, _)| *title)));
    for row in rows {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines
}

/// `text` safe for a terminal: control characters (newlines, escapes) are shown escaped.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `n` and the noun, singular or plural.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A JSON text carried in a string field: its value, `null` when empty, the text itself (as a
/// string) when it is not JSON.
fn embedded(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The `sockets` table: id, node, user (`-` for none), rooms; then the count.
fn sockets_table(sockets: &[pb::SocketSummary]) -> Vec<String> {
    let rows: Vec<Vec<String>> = sockets
        .iter()
        .map(|s| {
            let rooms: Vec<String> = s.rooms.iter().map(|r| clean(r)).collect();
            vec![
                clean(&s.id),
                clean(&s.node),
                s.user.as_deref().map_or_else(|| "-".to_owned(), clean),
                rooms.join(","),
            ]
        })
        .collect();
    let columns = [
        ("ID", Align::Left),
        ("NODE", Align::Left),
        ("USER", Align::Left),
        ("ROOMS", Align::Left),
    ];
    let mut lines = table(&columns, &rows);
    lines.push(count(sockets.len(), "socket", "sockets"));
    lines
}

/// One socket as a JSON line (the JSON fields of the message decoded).
fn socket_json(s: &pb::SocketSummary) -> String {
    let handshake = s.handshake.as_ref().map(|h| {
        json!({
            "address": h.address,
            "headers": h.headers.iter().map(|x| json!({"name": x.name, "value": x.value})).collect::<Vec<_>>(),
            "query": h.query,
            "claims": embedded(&h.claims_json),
            "connected_at_ms": h.connected_at_ms,
        })
    });
    json!({
        "id": s.id,
        "ns": s.ns,
        "node": s.node,
        "user": s.user,
        "rooms": s.rooms,
        "handshake": handshake,
        "data": embedded(&s.data_json),
    })
    .to_string()
}

/// The `rooms` table: name, members, users; then the count.
fn rooms_table(rooms: &[pb::RoomInfo]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rooms
        .iter()
        .map(|r| vec![clean(&r.name), r.members.to_string(), r.users.to_string()])
        .collect();
    let columns = [
        ("NAME", Align::Left),
        ("MEMBERS", Align::Right),
        ("USERS", Align::Right),
    ];
    let mut lines = table(&columns, &rows);
    lines.push(count(rooms.len(), "room", "rooms"));
    lines
}

/// One room as a JSON line.
fn room_json(r: &pb::RoomInfo) -> String {
    json!({"name": r.name, "members": r.members, "users": r.users}).to_string()
}

/// The `presence` output: one line per user (a table, or JSON objects).
fn presence_lines(resp: &pb::PresenceResponse, as_json: bool) -> Vec<String> {
    if as_json {
        return resp
            .users
            .iter()
            .map(|u| json!({"user": u.user, "sockets": u.sockets}).to_string())
            .collect();
    }
    let rows: Vec<Vec<String>> = resp
        .users
        .iter()
        .map(|u| vec![clean(&u.user), u.sockets.to_string()])
        .collect();
    let mut lines = table(&[("USER", Align::Left), ("SOCKETS", Align::Right)], &rows);
    lines.push(count(resp.users.len(), "user", "users"));
    lines
}

/// The `stats` output: a node table, a namespace table and the totals; or one JSON object.
fn stats_lines(resp: &pb::StatsResponse, as_json: bool) -> Vec<String> {
    if as_json {
        let nodes: Vec<Value> = resp
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "epoch": n.epoch,
                    "address": n.address,
                    "connections": n.connections,
                    "sockets": n.sockets,
                    "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago,
                })
            })
            .collect();
        let namespaces: Vec<Value> = resp
            .namespaces
            .iter()
            .map(|s| json!({"ns": s.ns, "sockets": s.sockets, "rooms": s.rooms, "users": s.users}))
            .collect();
        let all = json!({
            "nodes": nodes,
            "namespaces": namespaces,
            "sockets": resp.sockets,
            "rooms": resp.rooms,
        });
        return vec![all.to_string()];
    }
    let nodes: Vec<Vec<String>> = resp
        .nodes
        .iter()
        .map(|n| {
            vec![
                clean(&n.id),
                n.connections.to_string(),
                n.sockets.to_string(),
                format!("{} ms ago", n.last_heartbeat_ms_ago),
            ]
        })
        .collect();
    let mut lines = table(
        &[
            ("NODE", Align::Left),
            ("CONNECTIONS", Align::Right),
            ("SOCKETS", Align::Right),
            ("LAST HEARTBEAT", Align::Right),
        ],
        &nodes,
    );
    lines.push(String::new());
    let namespaces: Vec<Vec<String>> = resp
        .namespaces
        .iter()
        .map(|s| {
            vec![
                clean(&s.ns),
                s.sockets.to_string(),
                s.rooms.to_string(),
                s.users.to_string(),
            ]
        })
        .collect();
    lines.extend(table(
        &[
            ("NAMESPACE", Align::Left),
            ("SOCKETS", Align::Right),
            ("ROOMS", Align::Right),
            ("USERS", Align::Right),
        ],
        &namespaces,
    ));
    lines.push(String::new());
    lines.push(format!(
        "total: {}, {}, {}",
        count(resp.nodes.len(), "node", "nodes"),
        count(
            usize::try_from(resp.sockets).unwrap_or(usize::MAX),
            "socket",
            "sockets"
        ),
        count(
            usize::try_from(resp.rooms).unwrap_or(usize::MAX),
            "room",
            "rooms"
        ),
    ));
    lines
}

/// The `kick` output.
fn kick_lines(resp: &pb::DisconnectResponse, as_json: bool) -> Vec<String> {
    vec![if as_json {
        json!({"disconnected": resp.disconnected}).to_string()
    } else {
        format!("disconnected {}", resp.disconnected)
    }]
}

/// The `broadcast` output: the count, then (when acks were asked for) one line per socket.
fn broadcast_lines(resp: &pb::BroadcastResponse, with_acks: bool, as_json: bool) -> Vec<String> {
    if as_json {
        let mut out = json!({"targeted": resp.targeted});
        if with_acks {
            out["acks"] = Value::Array(resp.acks.iter().map(ack_json).collect());
        }
        return vec![out.to_string()];
    }
    let mut lines = vec![format!("targeted {}", resp.targeted)];
    for ack in &resp.acks {
        lines.push(format!("{}  {}", clean(&ack.socket_id), ack_text(ack)));
    }
    lines
}

/// One ack as JSON.
fn ack_json(a: &pb::SocketAck) -> Value {
    json!({
        "socket_id": a.socket_id,
        "timed_out": a.timed_out,
        "args": if a.timed_out { Value::Null } else { embedded(&a.args_json) },
        "attachments": a.attachments.len(),
    })
}

/// One ack as text: its arguments (and attachment count), or `timeout`.
fn ack_text(ack: &pb::SocketAck) -> String {
    if ack.timed_out {
        return "timeout".to_owned();
    }
    let args = match ack.args_json.trim() {
        "" => "[]".to_owned(),
        text => clean(text),
    };
    match ack.attachments.len() {
        0 => args,
        n => format!("{args} (+{})", count(n, "attachment", "attachments")),
    }
}

/// The `emit` output: `sent`, or the ack (when one was waited for); `not found` for an unknown
/// socket.
fn emit_lines(resp: &pb::EmitToSocketResponse, with_ack: bool, as_json: bool) -> Vec<String> {
    let ack = resp.ack.as_ref().filter(|_| with_ack && resp.found);
    if as_json {
        let mut out = json!({"found": resp.found});
        if let Some(ack) = ack {
            out["ack"] = ack_json(ack);
        }
        return vec![out.to_string()];
    }
    vec![match (resp.found, ack) {
        (false, _) => "not found".to_owned(),
        (true, None) => "sent".to_owned(),
        (true, Some(ack)) => ack_text(ack),
    }]
}

/// The `join` / `leave` output: the verb and how many sockets the selector matched.
fn rooms_change_lines(verb: &str, resp: &pb::RoomsChangeResponse, as_json: bool) -> Vec<String> {
    vec![if as_json {
        json!({"sockets": resp.sockets}).to_string()
    } else {
        format!("{verb} {}", resp.sockets)
    }]
}

/// The `set-data` output.
fn set_data_lines(resp: &pb::UpdateSocketDataResponse, as_json: bool) -> Vec<String> {
    vec![if as_json {
        json!({"updated": resp.updated}).to_string()
    } else if resp.updated {
        "updated".to_owned()
    } else {
        "not found".to_owned()
    }]
}

/// One streamed socket as a text line: id, node, user (`-` for none), rooms.
fn stream_line(s: &pb::SocketSummary) -> String {
    let rooms: Vec<String> = s.rooms.iter().map(|r| clean(r)).collect();
    let user = s.user.as_deref().map_or_else(|| "-".to_owned(), clean);
    let line = format!(
        "{}  {}  {user}  {}",
        clean(&s.id),
        clean(&s.node),
        rooms.join(",")
    );
    line.trim_end().to_owned()
}

/// The `history` output: a table (offset, time, event, arguments) and the count, or one JSON
/// object per message.
fn history_lines(messages: &[pb::HistoryMessage], as_json: bool) -> Vec<String> {
    if as_json {
        return messages
            .iter()
            .map(|m| {
                json!({
                    "seq": m.seq,
                    "offset": m.offset,
                    "time_ms": m.time_ms,
                    "event": m.event,
                    "args": embedded(&m.args_json),
                })
                .to_string()
            })
            .collect();
    }
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            vec![
                m.seq.to_string(),
                m.time_ms.to_string(),
                clean(&m.event),
                clean(&m.args_json),
            ]
        })
        .collect();
    let columns = [
        ("SEQ", Align::Right),
        ("TIME MS", Align::Right),
        ("EVENT", Align::Left),
        ("ARGS", Align::Left),
    ];
    let mut lines = table(&columns, &rows);
    lines.push(count(messages.len(), "message", "messages"));
    lines
}

/// The newest `limit` messages of pages fetched newest page first (each page oldest first),
/// oldest first.
fn newest(pages: Vec<Vec<pb::HistoryMessage>>, limit: usize) -> Vec<pb::HistoryMessage> {
    let mut all: Vec<pb::HistoryMessage> = pages.into_iter().rev().flatten().collect();
    let extra = all.len().saturating_sub(limit);
    all.drain(..extra);
    all
}

// ---------------------------------------------------------------------------------------------
// Calling the Admin API
// ---------------------------------------------------------------------------------------------

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// Why a run failed; exit status 1.
#[derive(Debug)]
enum Failure {
    /// No connection to the server.
    Connect { addr: String, error: String },
    /// A call failed.
    Rpc(Status),
    /// The server's answers make no sense.
    Protocol(String),
    /// The socket named does not exist (emit, set-data).
    NotFound(String),
    /// The output could not be written.
    Io(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect { addr, error } => write!(f, "cannot connect to {addr}: {error}"),
            Failure::Rpc(status) => f.write_str(&status_line(status)),
            Failure::Protocol(message) => write!(f, "unexpected answer: {message}"),
            Failure::NotFound(socket) => write!(f, "NotFound: no socket {}", clean(socket)),
            Failure::Io(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

/// `<code name>: <message>` (the code's description when there is no message), with the
/// status's sources (a transport failure's cause).
fn status_line(status: &Status) -> String {
    let message = match status.message() {
        "" => status.code().description(),
        message => message,
    };
    let line = with_sources(message.to_owned(), std::error::Error::source(status));
    format!("{:?}: {line}", status.code())
}

/// tonic reports a passed deadline as `Cancelled: Timeout expired`; says what happened instead.
fn deadline_status(status: Status, timeout: Duration) -> Status {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        Status::deadline_exceeded(format!(
            "no answer within {} ms (see --timeout-ms)",
            timeout.as_millis()
        ))
    } else {
        status
    }
}

/// An error with its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    with_sources(error.to_string(), error.source())
}

/// `first`, then each source's text not already said, joined by `: ` (terminal-safe).
fn with_sources(first: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut line = first;
    while let Some(e) = source {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = e.source();
    }
    clean(&line)
}

/// Connects to `target` (within `timeout`).
async fn connect(target: &Target, timeout: Duration) -> Result<Client, Failure> {
    let fail = |error: String| Failure::Connect {
        addr: target.addr.clone(),
        error,
    };
    let mut endpoint = Endpoint::from_shared(target.addr.clone())
        .map_err(|e| fail(error_chain(&e)))?
        .connect_timeout(timeout);
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = match &target.ca {
            // Only the given roots: a private CA does not widen to every public one.
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| fail(format!("cannot read --ca {}: {e}", ca.display())))?;
                const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
                if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
                    return Err(fail(format!(
                        "--ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                        ca.display()
                    )));
                }
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| fail(error_chain(&e)))?;
    }
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            let mut error = error_chain(&e);
            if error.contains("UnknownIssuer") && target.ca.is_none() {
                error.push_str(
                    " (not signed by a system root: give the server's CA with --ca FILE)",
                );
            }
            return Err(fail(error));
        }
        Err(_) => {
            return Err(fail(format!(
                "no connection within {} ms",
                timeout.as_millis()
            )));
        }
    };
    let auth = bearer(&target.token)
        .ok_or_else(|| fail("the token is not a valid header value".into()))?;
    Ok(AdminClient::with_interceptor(channel, Bearer(auth))
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// `message` with the deadline `timeout`.
fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The answer of a call made with the deadline `timeout`.
async fn answer<T>(
    call: impl Future<Output = Result<Response<T>, Status>>,
    timeout: Duration,
) -> Result<T, Failure> {
    call.await
        .map(Response::into_inner)
        .map_err(|status| Failure::Rpc(deadline_status(status, timeout)))
}

/// The token of the next page (`None` after the last page).
fn next_page(previous: &str, next: String) -> Result<Option<String>, Failure> {
    if next.is_empty() {
        Ok(None)
    } else if next == previous {
        Err(Failure::Protocol(format!(
            "the page token {next:?} came back twice"
        )))
    } else {
        Ok(Some(next))
    }
}

/// Writes `lines`, each with a newline.
fn write_lines(
    out: &mut dyn Write,
    lines: impl IntoIterator<Item = String>,
) -> Result<(), Failure> {
    for line in lines {
        writeln!(out, "{line}").map_err(Failure::Io)?;
    }
    Ok(())
}

/// Runs the command, writing its output to `out`.
async fn execute(run: &Run, out: &mut dyn Write) -> Result<(), Failure> {
    let mut client = connect(&run.target, run.timeout).await?;
    let timeout = run.timeout;
    let as_json = run.json;
    match &run.command {
        Command::Sockets(selector) => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let req = pb::FetchSocketsRequest {
                    selector: Some(selector.clone()),
                    page_size: PAGE_SIZE,
                    page_token: token.clone(),
                };
                let page = answer(client.fetch_sockets(request(req, timeout)), timeout).await?;
                if as_json {
                    write_lines(out, page.sockets.iter().map(socket_json))?;
                } else {
                    all.extend(page.sockets);
                }
                match next_page(&token, page.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            if !as_json {
                write_lines(out, sockets_table(&all))?;
            }
        }
        Command::Rooms { ns, prefix } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let req = pb::RoomsRequest {
                    ns: ns.clone(),
                    prefix: prefix.clone(),
                    page_size: PAGE_SIZE,
                    page_token: token.clone(),
                };
                let page = answer(client.rooms(request(req, timeout)), timeout).await?;
                if as_json {
                    write_lines(out, page.rooms.iter().map(room_json))?;
                } else {
                    all.extend(page.rooms);
                }
                match next_page(&token, page.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            if !as_json {
                write_lines(out, rooms_table(&all))?;
            }
        }
        Command::Presence(req) => {
            let resp = answer(client.presence(request(req.clone(), timeout)), timeout).await?;
            write_lines(out, presence_lines(&resp, as_json))?;
        }
        Command::Stats => {
            let resp = answer(client.stats(request(pb::StatsRequest {}, timeout)), timeout).await?;
            write_lines(out, stats_lines(&resp, as_json))?;
        }
        Command::Kick(req) => {
            let resp = answer(client.disconnect(request(req.clone(), timeout)), timeout).await?;
            write_lines(out, kick_lines(&resp, as_json))?;
        }
        Command::Broadcast(req) => {
            // The broker answers after collecting the acks: give it that long on top.
            let timeout =
                timeout.saturating_add(Duration::from_millis(u64::from(req.ack_timeout_ms)));
            let resp = answer(client.broadcast(request(req.clone(), timeout)), timeout).await?;
            write_lines(out, broadcast_lines(&resp, req.ack_timeout_ms > 0, as_json))?;
        }
        Command::Stream(selector) => {
            let mut stream = answer(
                client.stream_sockets(request(selector.clone(), timeout)),
                timeout,
            )
            .await?;
            loop {
                let next = stream
                    .message()
                    .await
                    .map_err(|status| Failure::Rpc(deadline_status(status, timeout)))?;
                let Some(socket) = next else { break };
                let line = if as_json {
                    socket_json(&socket)
                } else {
                    stream_line(&socket)
                };
                write_lines(out, [line])?;
                // As they come: a reader of the pipe sees each socket when it arrives.
                out.flush().map_err(Failure::Io)?;
            }
        }
        Command::Members { ns, room } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let req = pb::RoomMembersRequest {
                    ns: ns.clone(),
                    room: room.clone(),
                    page_size: PAGE_SIZE,
                    page_token: token.clone(),
                };
                let page = answer(client.room_members(request(req, timeout)), timeout).await?;
                if as_json {
                    write_lines(out, page.members.iter().map(socket_json))?;
                } else {
                    all.extend(page.members);
                }
                match next_page(&token, page.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            if !as_json {
                write_lines(out, sockets_table(&all))?;
            }
        }
        Command::History { ns, room, limit } => {
            // Pages come newest first; each is oldest first.
            let mut pages = Vec::new();
            let mut left = *limit;
            let mut token = String::new();
            while left > 0 {
                let req = pb::RoomHistoryRequest {
                    ns: ns.clone(),
                    room: room.clone(),
                    page_size: left.min(PAGE_SIZE),
                    page_token: token.clone(),
                };
                let page = answer(client.room_history(request(req, timeout)), timeout).await?;
                let got = u32::try_from(page.messages.len()).unwrap_or(u32::MAX);
                left = left.saturating_sub(got.max(1));
                pages.push(page.messages);
                match next_page(&token, page.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
            write_lines(out, history_lines(&newest(pages, limit), as_json))?;
        }
        Command::UserSockets(req) => {
            let resp = answer(client.user_sockets(request(req.clone(), timeout)), timeout).await?;
            if as_json {
                write_lines(out, resp.sockets.iter().map(socket_json))?;
            } else {
                write_lines(out, sockets_table(&resp.sockets))?;
            }
        }
        Command::Emit(req) => {
            let timeout =
                timeout.saturating_add(Duration::from_millis(u64::from(req.ack_timeout_ms)));
            let resp = answer(
                client.emit_to_socket(request(req.clone(), timeout)),
                timeout,
            )
            .await?;
            if as_json || resp.found {
                write_lines(out, emit_lines(&resp, req.ack_timeout_ms > 0, as_json))?;
            }
            if !resp.found {
                return Err(Failure::NotFound(req.socket_id.clone()));
            }
        }
        Command::Join(req) => {
            let resp = answer(client.sockets_join(request(req.clone(), timeout)), timeout).await?;
            write_lines(out, rooms_change_lines("joined", &resp, as_json))?;
        }
        Command::Leave(req) => {
            let resp = answer(client.sockets_leave(request(req.clone(), timeout)), timeout).await?;
            write_lines(out, rooms_change_lines("left", &resp, as_json))?;
        }
        Command::SetData(req) => {
            let resp = answer(
                client.update_socket_data(request(req.clone(), timeout)),
                timeout,
            )
            .await?;
            if as_json || resp.updated {
                write_lines(out, set_data_lines(&resp, as_json))?;
            }
            if !resp.updated {
                return Err(Failure::NotFound(req.socket_id.clone()));
            }
        }
    }
    Ok(())
}

/// Writes `message` to stderr (ignoring a closed stderr: there is nowhere else to say it).
fn say(message: &str) {
    let _ = writeln!(io::stderr().lock(), "switchboard-admin: {message}");
}

fn usage_exit(error: &UsageError) -> ExitCode {
    say(&error.0);
    let _ = writeln!(io::stderr().lock(), "try `switchboard-admin --help`");
    ExitCode::from(2)
}

/// `token`: prints the minted token (exit 0) or says why not (exit 2).
fn mint(args: &token::TokenArgs, as_json: bool) -> ExitCode {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match args.mint(|var| std::env::var(var).ok(), now) {
        Ok(token) => {
            let line = if as_json {
                json!({"token": token}).to_string()
            } else {
                token
            };
            if writeln!(io::stdout().lock(), "{line}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => usage_exit(&e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let CommandLine::Completions { shell } = cli.command {
        return switchboard::process::completions::<Cli>(shell);
    }
    let run = match cli.into_task() {
        Ok(Task::Call(run)) => run,
        Ok(Task::Mint { args, json }) => return mint(&args, json),
        Err(e) => return usage_exit(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = runtime
        .block_on(execute(&run, &mut out))
        .and_then(|()| out.flush().map_err(Failure::Io));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): not an error of ours.
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(failure) => {
            let _ = out.flush();
            say(&failure.to_string());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn words(line: &str) -> Vec<String> {
        std::iter::once("switchboard-admin")
            .chain(line.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    /// Parses `line` as given (the process environment is not consulted by these tests: they
    /// pass the token as an option).
    fn parse(line: &str) -> Result<Run, String> {
        let cli = Cli::try_parse_from(words(line)).map_err(|e| e.to_string())?;
        match cli.into_task().map_err(|e| e.0)? {
            Task::Call(run) => Ok(run),
            Task::Mint { .. } => Err("a token, not a call".into()),
        }
    }

    /// Parses with a token.
    fn run(line: &str) -> Run {
        parse(&format!("--token {TOKEN} {line}")).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn command(line: &str) -> Command {
        run(line).command
    }

    /// The usage error of `line` (with a token).
    fn error(line: &str) -> String {
        match parse(&format!("--token {TOKEN} {line}")) {
            Err(e) => e,
            Ok(run) => panic!("{line}: parsed as {run:?}"),
        }
    }

    fn sel(ns: &str) -> pb::Selector {
        pb::Selector {
            ns: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            command("sockets --ns /chat"),
            Command::Sockets(sel("/chat"))
        );
        assert_eq!(
            command("rooms --ns /chat"),
            Command::Rooms {
                ns: "/chat".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            command("rooms --ns / --prefix team-"),
            Command::Rooms {
                ns: "/".into(),
                prefix: "team-".into()
            }
        );
        assert_eq!(
            command("presence --ns /chat --room lobby"),
            Command::Presence(pb::PresenceRequest {
                ns: "/chat".into(),
                room: "lobby".into()
            })
        );
        assert_eq!(command("stats"), Command::Stats);
        assert_eq!(
            command("kick --ns /chat --socket abc --reason spam --close"),
            Command::Kick(pb::DisconnectRequest {
                selector: Some(pb::Selector {
                    socket_ids: vec!["abc".into()],
                    ..sel("/chat")
                }),
                close_connection: true,
                reason: "spam".into(),
            })
        );
        assert_eq!(
            command("kick --ns /chat"),
            Command::Kick(pb::DisconnectRequest {
                selector: Some(sel("/chat")),
                ..Default::default()
            })
        );
        assert_eq!(
            command(
                r#"broadcast --ns /chat --room vip --event news --args ["hi",1] --volatile --uncompressed --ack-timeout-ms 500"#
            ),
            Command::Broadcast(pb::BroadcastRequest {
                selector: Some(pb::Selector {
                    rooms: vec!["vip".into()],
                    ..sel("/chat")
                }),
                event: "news".into(),
                args_json: r#"["hi",1]"#.into(),
                attachments: Vec::new(),
                volatile: true,
                ack_timeout_ms: 500,
                uncompressed: true,
            })
        );
        let plain = command("broadcast --ns /chat --event news");
        let Command::Broadcast(req) = plain else {
            panic!("{plain:?}")
        };
        assert_eq!(
            (
                req.args_json.as_str(),
                req.volatile,
                req.uncompressed,
                req.ack_timeout_ms
            ),
            ("", false, false, 0)
        );
        let Command::Broadcast(req) = command("broadcast --ns / --event e --ack-timeout-ms 600000")
        else {
            panic!()
        };
        assert_eq!(req.ack_timeout_ms, 600_000);
        assert_eq!(
            command("stream --ns /chat --user u"),
            Command::Stream(pb::Selector {
                user_ids: vec!["u".into()],
                ..sel("/chat")
            })
        );
        assert_eq!(
            command("members --ns /chat --room lobby"),
            Command::Members {
                ns: "/chat".into(),
                room: "lobby".into()
            }
        );
        assert_eq!(
            command("history --ns /chat --room lobby"),
            Command::History {
                ns: "/chat".into(),
                room: "lobby".into(),
                limit: DEFAULT_HISTORY_LIMIT
            }
        );
        assert_eq!(
            command("history --ns /chat --room lobby --limit 5000"),
            Command::History {
                ns: "/chat".into(),
                room: "lobby".into(),
                limit: 5000
            }
        );
        assert_eq!(
            command("user-sockets --user alice"),
            Command::UserSockets(pb::UserSocketsRequest {
                user: "alice".into(),
                ns: String::new()
            })
        );
        assert_eq!(
            command("user-sockets --user alice --ns /chat"),
            Command::UserSockets(pb::UserSocketsRequest {
                user: "alice".into(),
                ns: "/chat".into()
            })
        );
        assert_eq!(
            command(
                r#"emit --ns /chat --socket gw1.a --event ping --args [1] --ack-timeout-ms 900"#
            ),
            Command::Emit(pb::EmitToSocketRequest {
                ns: "/chat".into(),
                socket_id: "gw1.a".into(),
                event: "ping".into(),
                args_json: "[1]".into(),
                attachments: Vec::new(),
                ack_timeout_ms: 900,
            })
        );
        assert_eq!(
            command("join --ns /chat --user alice --room lobby vip staff"),
            Command::Join(pb::RoomsChangeRequest {
                selector: Some(pb::Selector {
                    rooms: vec!["lobby".into()],
                    user_ids: vec!["alice".into()],
                    ..sel("/chat")
                }),
                rooms: vec!["vip".into(), "staff".into()],
            })
        );
        assert_eq!(
            command("leave --ns /chat vip"),
            Command::Leave(pb::RoomsChangeRequest {
                selector: Some(sel("/chat")),
                rooms: vec!["vip".into()],
            })
        );
        assert_eq!(
            command(r#"set-data --socket gw1.a --data {"tier":"gold"}"#),
            Command::SetData(pb::UpdateSocketDataRequest {
                socket_id: "gw1.a".into(),
                data_json: r#"{"tier":"gold"}"#.into(),
            })
        );
    }

    #[test]
    fn selector_options_repeat_in_order() {
        let line = "sockets --ns /chat --room a --except x --room b --user u1 --socket s1 \
                    --user u2 --except y --socket s2";
        assert_eq!(
            command(line),
            Command::Sockets(pb::Selector {
                ns: "/chat".into(),
                rooms: vec!["a".into(), "b".into()],
                except_rooms: vec!["x".into(), "y".into()],
                socket_ids: vec!["s1".into(), "s2".into()],
                user_ids: vec!["u1".into(), "u2".into()],
            })
        );
    }

    #[test]
    fn help_and_version_need_nothing_else() {
        for line in [
            "help",
            "--help",
            "-h",
            "sockets --help",
            "help sockets",
            "--json -h",
        ] {
            let e = Cli::try_parse_from(words(line)).expect_err(line);
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{line}");
        }
        let e = Cli::try_parse_from(words("--version")).expect_err("version");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    /// What a server prints (`grpc on HOST:PORT`) is what `--addr` takes; URLs keep their scheme.
    #[test]
    fn addresses_in_every_form() {
        let cases = [
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("[::1]:50051", "http://[::1]:50051"),
            ("localhost:1", "http://localhost:1"),
            ("admin.example:443", "http://admin.example:443"),
            ("http://127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("https://admin.example:443", "https://admin.example:443"),
            ("https://admin.example", "https://admin.example"),
        ];
        for (given, want) in cases {
            let r = run(&format!("--addr {given} stats"));
            assert_eq!(r.target.addr, want, "{given}");
        }
        assert_eq!(run("stats").target.addr, format!("http://{DEFAULT_ADDR}"));
        // https:// without --ca: the system's roots (no usage error).
        assert_eq!(run("--addr https://h:1 stats").target.ca, None);
    }

    #[test]
    fn defaults_and_the_token() {
        let r = run("stats");
        assert_eq!(r.target.token, TOKEN);
        assert_eq!(r.target.ca, None);
        assert_eq!(r.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert!(!r.json);
        let r = run("--addr http://h:1 stats");
        assert_eq!(r.target.addr, "http://h:1");
        // `token` needs no admin token.
        let cli = Cli::try_parse_from(words("token --secret-env S --alg HS256 --sub a")).unwrap();
        assert!(matches!(
            cli.into_task(),
            Ok(Task::Mint { json: false, .. })
        ));
        let e = parse("--token= stats").unwrap_err();
        assert!(e.contains("no token") && e.contains(ENV_TOKEN), "{e}");
        // The server compares bytes, so a UTF-8 token works.
        assert!(parse("--token tökén0123456789 stats").is_ok());
        let e = Cli::try_parse_from(["switchboard-admin", "--token", "tok\nen", "stats"])
            .unwrap()
            .into_task()
            .unwrap_err();
        assert!(e.0.contains("control characters"), "{e}");
    }

    #[test]
    fn global_options_go_anywhere_and_take_both_forms() {
        let r = run("--json --timeout-ms 2500 sockets --ns /chat");
        assert!(r.json);
        assert_eq!(r.timeout, Duration::from_millis(2500));
        let r = run(
            "sockets --ns=/chat --json --timeout-ms=300 --addr=https://admin.example:443 --ca=/etc/ca.pem",
        );
        assert!(r.json);
        assert_eq!(r.timeout, Duration::from_millis(300));
        assert_eq!(r.target.addr, "https://admin.example:443");
        assert_eq!(r.target.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(r.command, Command::Sockets(sel("/chat")));
        // `=` lets a value start with `--`.
        let Command::Kick(req) = command("kick --ns /chat --reason=--spam--") else {
            panic!()
        };
        assert_eq!(req.reason, "--spam--");
        // A value may start with a single dash.
        let Command::Broadcast(req) = command("broadcast --ns /chat --event e --args [-1]") else {
            panic!()
        };
        assert_eq!(req.args_json, "[-1]");
    }

    /// Usage errors clap finds: the argument at fault is named.
    #[test]
    fn bad_command_lines_are_usage_errors() {
        let cases = [
            ("sockets --ns", "--ns"),
            ("sockets --ns /chat --room", "--room"),
            ("stats --addr", "--addr"),
            ("stats --timeout-ms", "--timeout-ms"),
            ("sockets", "--ns"),
            ("sockets --room a", "--ns"),
            ("rooms", "--ns"),
            ("presence --ns /chat", "--room"),
            ("presence --room lobby", "--ns"),
            ("kick", "--ns"),
            ("broadcast --ns /chat", "--event"),
            ("", "Usage"),
            ("--json", "Usage"),
            ("frobnicate", "frobnicate"),
            ("SOCKETS --ns /", "SOCKETS"),
            ("stats --frob", "--frob"),
            ("sockets --ns /chat -r a", "-r"),
            ("stats --ns /chat", "--ns"),
            ("sockets --ns /chat --prefix a", "--prefix"),
            ("rooms --ns /chat --room a", "--room"),
            ("sockets --ns /chat --event e", "--event"),
            ("kick --ns /chat --volatile", "--volatile"),
            ("--ns /chat sockets", "--ns"),
            ("stats extra", "extra"),
            ("sockets --ns /chat lobby", "lobby"),
            ("--json=yes stats", "--json"),
            ("kick --ns /chat --close=1", "--close"),
            ("sockets --ns /a --ns /b", "--ns"),
            ("presence --ns /a --room x --room y", "--room"),
            ("--timeout-ms abc stats", "--timeout-ms"),
            ("--timeout-ms 0 stats", "--timeout-ms"),
            ("--timeout-ms 1.5 stats", "--timeout-ms"),
            ("--timeout-ms 99999999999999999999999 stats", "--timeout-ms"),
            (
                "broadcast --ns / --event e --ack-timeout-ms x",
                "--ack-timeout-ms",
            ),
            (
                "broadcast --ns / --event e --ack-timeout-ms 600001",
                "--ack-timeout-ms",
            ),
            ("join --ns /chat", "ROOM"),
            ("leave --ns /chat --room a", "ROOM"),
            ("members --ns /chat", "--room"),
            ("history --ns /chat --room r --limit 0", "--limit"),
            ("history --ns /chat --room r --limit 100001", "--limit"),
            ("user-sockets --ns /chat", "--user"),
            ("emit --ns / --event e", "--socket"),
            ("emit --ns / --socket s", "--event"),
            (
                "emit --ns / --socket s --event e --ack-timeout-ms 600001",
                "--ack-timeout-ms",
            ),
            ("set-data --socket s", "--data"),
            ("token --sub a", "--config"),
            ("token --config c.toml --sub a", "--ns"),
            ("token --secret-env S --sub a", "--alg"),
            ("token --secret-env S --alg RS256 --sub a", "RS256"),
            (
                "token --config c.toml --ns / --secret-env S --alg HS256 --sub a",
                "--secret-env",
            ),
            ("token --secret-env S --alg HS256", "--sub"),
            ("token --secret-env S --alg HS256 --sub a --ttl 0", "--ttl"),
            (
                "token --secret-env S --alg HS256 --sub a --claim x",
                "--claim",
            ),
        ];
        for (line, want) in cases {
            let e = error(line);
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    /// Usage errors found after parsing.
    #[test]
    fn bad_values_are_usage_errors() {
        let cases = [
            (
                "broadcast --ns / --event e --args {}",
                "--args: must be a JSON array",
            ),
            (
                "broadcast --ns / --event e --args [1,",
                "--args: invalid JSON",
            ),
            (
                "broadcast --ns / --event e --args hi",
                "--args: invalid JSON",
            ),
            ("--addr 127.0.0.1 stats", "expected HOST:PORT or a URL"),
            ("--addr host: stats", "expected HOST:PORT or a URL"),
            ("--addr :50051 stats", "expected HOST:PORT or a URL"),
            ("--addr h:x1 stats", "expected HOST:PORT or a URL"),
            ("--addr h:1/path stats", "expected HOST:PORT or a URL"),
            (
                "--addr ftp://h:1 stats",
                "the scheme must be http:// or https://",
            ),
            ("--addr http:// stats", "not a gRPC address"),
            ("--addr http://h:1/admin stats", "it may not have a path"),
            (
                "--ca /tmp/ca.pem stats",
                "--ca is only for https:// addresses",
            ),
            (
                "--addr 127.0.0.1:50051 --ca /tmp/ca.pem stats",
                "--ca is only for https:// addresses",
            ),
            (
                "emit --ns / --socket s --event e --args 1",
                "--args: must be a JSON array",
            ),
            ("set-data --socket s --data {", "--data: invalid JSON"),
            ("set-data --socket s --data gold", "--data: invalid JSON"),
        ];
        for (line, want) in cases {
            let got = error(line);
            assert!(got.contains(want), "{line}: {got}");
        }
    }

    #[test]
    fn the_token_debug_is_redacted() {
        let text = format!("{:?}", run("stats"));
        assert!(!text.contains(TOKEN), "{text}");
        let mut value = bearer(TOKEN).unwrap();
        assert_eq!(value.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(value.is_sensitive());
        value.set_sensitive(false);
    }

    fn socket(id: &str, node: &str, user: Option<&str>, rooms: &[&str]) -> pb::SocketSummary {
        pb::SocketSummary {
            id: id.into(),
            ns: "/chat".into(),
            node: node.into(),
            user: user.map(str::to_owned),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            handshake: Some(pb::Handshake {
                address: "127.0.0.1:4000".into(),
                headers: vec![pb::Header {
                    name: "user-agent".into(),
                    value: "node".into(),
                }],
                query: "EIO=4".into(),
                claims_json: r#"{"sub":"alice"}"#.into(),
                connected_at_ms: 1_700_000_000_000,
            }),
            data_json: "null".into(),
        }
    }

    #[test]
    fn sockets_as_a_table_and_as_json() {
        let sockets = [
            socket("gw1.aaaa", "gw1", Some("alice"), &["lobby", "vip"]),
            socket("gw2.b", "gw2", None, &[]),
        ];
        assert_eq!(
            sockets_table(&sockets),
            [
                "ID        NODE  USER   ROOMS",
                "gw1.aaaa  gw1   alice  lobby,vip",
                "gw2.b     gw2   -",
                "2 sockets",
            ]
        );
        assert_eq!(sockets_table(&[]), ["ID  NODE  USER  ROOMS", "0 sockets"]);
        assert_eq!(
            socket_json(&sockets[0]),
            r#"{"id":"gw1.aaaa","ns":"/chat","node":"gw1","user":"alice","rooms":["lobby","vip"],"handshake":{"address":"127.0.0.1:4000","headers":[{"name":"user-agent","value":"node"}],"query":"EIO=4","claims":{"sub":"alice"},"connected_at_ms":1700000000000},"data":null}"#
        );
        let mut bare = socket("s", "n", None, &[]);
        bare.handshake = None;
        bare.data_json = r#"{"score":3}"#.into();
        let v: Value = serde_json::from_str(&socket_json(&bare)).unwrap();
        assert_eq!(v["user"], Value::Null);
        assert_eq!(v["handshake"], Value::Null);
        assert_eq!(v["data"], json!({"score": 3}));
    }

    #[test]
    fn table_cells_cannot_reach_the_terminal_raw() {
        let sockets = [socket("a\x1b[31m", "n", Some("bob\nmallory"), &["r\tx"])];
        let lines = sockets_table(&sockets);
        assert!(
            lines.iter().all(|l| !l.chars().any(char::is_control)),
            "{lines:?}"
        );
        assert!(lines[1].contains(r"a\u{1b}[31m") && lines[1].contains(r"bob\nmallory"));
        assert_eq!(embedded("not json"), Value::String("not json".into()));
        assert_eq!(embedded(""), Value::Null);
    }

    #[test]
    fn rooms_and_presence() {
        let rooms = [
            pb::RoomInfo {
                name: "lobby".into(),
                members: 12,
                users: 3,
            },
            pb::RoomInfo {
                name: "a-long-room-name".into(),
                members: 1,
                users: 1,
            },
        ];
        assert_eq!(
            rooms_table(&rooms),
            [
                "NAME              MEMBERS  USERS",
                "lobby                  12      3",
                "a-long-room-name        1      1",
                "2 rooms",
            ]
        );
        assert_eq!(
            room_json(&rooms[0]),
            r#"{"name":"lobby","members":12,"users":3}"#
        );
        let presence = pb::PresenceResponse {
            users: vec![
                pb::UserPresence {
                    user: "alice".into(),
                    sockets: 2,
                },
                pb::UserPresence {
                    user: "bob".into(),
                    sockets: 1,
                },
            ],
        };
        assert_eq!(
            presence_lines(&presence, false),
            [
                "USER   SOCKETS",
                "alice        2",
                "bob          1",
                "2 users"
            ]
        );
        assert_eq!(
            presence_lines(&presence, true),
            [
                r#"{"user":"alice","sockets":2}"#,
                r#"{"user":"bob","sockets":1}"#
            ]
        );
        assert_eq!(
            presence_lines(&pb::PresenceResponse::default(), true),
            Vec::<String>::new()
        );
    }

    #[test]
    fn stats_output() {
        let stats = pb::StatsResponse {
            nodes: vec![pb::NodeStats {
                id: "gw1".into(),
                epoch: 7,
                connections: 3,
                sockets: 4,
                address: "10.0.0.1:3000".into(),
                last_heartbeat_ms_ago: 120,
            }],
            namespaces: vec![pb::NamespaceStats {
                ns: "/chat".into(),
                sockets: 4,
                rooms: 2,
                users: 1,
            }],
            sockets: 4,
            rooms: 2,
        };
        assert_eq!(
            stats_lines(&stats, false),
            [
                "NODE  CONNECTIONS  SOCKETS  LAST HEARTBEAT",
                "gw1             3        4      120 ms ago",
                "",
                "NAMESPACE  SOCKETS  ROOMS  USERS",
                "/chat            4      2      1",
                "",
                "total: 1 node, 4 sockets, 2 rooms",
            ]
        );
        assert_eq!(
            stats_lines(&stats, true),
            [
                r#"{"nodes":[{"id":"gw1","epoch":7,"address":"10.0.0.1:3000","connections":3,"sockets":4,"last_heartbeat_ms_ago":120}],"namespaces":[{"ns":"/chat","sockets":4,"rooms":2,"users":1}],"sockets":4,"rooms":2}"#
            ]
        );
        let empty = stats_lines(&pb::StatsResponse::default(), false);
        assert_eq!(empty.last().unwrap(), "total: 0 nodes, 0 sockets, 0 rooms");
    }

    #[test]
    fn action_output() {
        let kicked = pb::DisconnectResponse { disconnected: 3 };
        assert_eq!(kick_lines(&kicked, false), ["disconnected 3"]);
        assert_eq!(kick_lines(&kicked, true), [r#"{"disconnected":3}"#]);
        let sent = pb::BroadcastResponse {
            targeted: 3,
            acks: vec![
                pb::SocketAck {
                    socket_id: "s1".into(),
                    args_json: r#"["ok"]"#.into(),
                    ..Default::default()
                },
                pb::SocketAck {
                    socket_id: "s2".into(),
                    timed_out: true,
                    ..Default::default()
                },
                pb::SocketAck {
                    socket_id: "s3".into(),
                    args_json: r#"[{"_placeholder":true,"num":0}]"#.into(),
                    attachments: vec![tonic::codegen::Bytes::from_static(b"x")],
                    timed_out: false,
                },
            ],
        };
        assert_eq!(
            broadcast_lines(&sent, true, false),
            [
                "targeted 3",
                r#"s1  ["ok"]"#,
                "s2  timeout",
                r#"s3  [{"_placeholder":true,"num":0}] (+1 attachment)"#,
            ]
        );
        assert_eq!(
            broadcast_lines(&sent, true, true),
            [
                r#"{"targeted":3,"acks":[{"socket_id":"s1","timed_out":false,"args":["ok"],"attachments":0},{"socket_id":"s2","timed_out":true,"args":null,"attachments":0},{"socket_id":"s3","timed_out":false,"args":[{"_placeholder":true,"num":0}],"attachments":1}]}"#
            ]
        );
        let fire = pb::BroadcastResponse {
            targeted: 2,
            acks: Vec::new(),
        };
        assert_eq!(broadcast_lines(&fire, false, false), ["targeted 2"]);
        assert_eq!(broadcast_lines(&fire, false, true), [r#"{"targeted":2}"#]);
        assert_eq!(
            broadcast_lines(&fire, true, true),
            [r#"{"targeted":2,"acks":[]}"#]
        );
    }

    #[test]
    fn new_action_output() {
        let found = pb::EmitToSocketResponse {
            found: true,
            ack: Some(pb::SocketAck {
                socket_id: "s1".into(),
                args_json: r#"["pong"]"#.into(),
                ..Default::default()
            }),
        };
        assert_eq!(emit_lines(&found, true, false), [r#"["pong"]"#]);
        assert_eq!(emit_lines(&found, false, false), ["sent"]);
        assert_eq!(
            emit_lines(&found, true, true),
            [
                r#"{"found":true,"ack":{"socket_id":"s1","timed_out":false,"args":["pong"],"attachments":0}}"#
            ]
        );
        assert_eq!(emit_lines(&found, false, true), [r#"{"found":true}"#]);
        let late = pb::EmitToSocketResponse {
            found: true,
            ack: Some(pb::SocketAck {
                socket_id: "s1".into(),
                timed_out: true,
                ..Default::default()
            }),
        };
        assert_eq!(emit_lines(&late, true, false), ["timeout"]);
        let missing = pb::EmitToSocketResponse::default();
        assert_eq!(emit_lines(&missing, true, false), ["not found"]);
        assert_eq!(emit_lines(&missing, true, true), [r#"{"found":false}"#]);
        let moved = pb::RoomsChangeResponse { sockets: 2 };
        assert_eq!(rooms_change_lines("joined", &moved, false), ["joined 2"]);
        assert_eq!(
            rooms_change_lines("left", &moved, true),
            [r#"{"sockets":2}"#]
        );
        let set = pb::UpdateSocketDataResponse { updated: true };
        assert_eq!(set_data_lines(&set, false), ["updated"]);
        assert_eq!(set_data_lines(&set, true), [r#"{"updated":true}"#]);
        assert_eq!(
            set_data_lines(&pb::UpdateSocketDataResponse::default(), true),
            [r#"{"updated":false}"#]
        );
        assert_eq!(
            Failure::NotFound("gw1.x\n".into()).to_string(),
            r"NotFound: no socket gw1.x\n"
        );
    }

    #[test]
    fn stream_lines_are_one_per_socket() {
        assert_eq!(
            stream_line(&socket("gw1.a", "gw1", Some("alice"), &["lobby", "vip"])),
            "gw1.a  gw1  alice  lobby,vip"
        );
        assert_eq!(
            stream_line(&socket("gw2.b\x1b", "gw2", None, &[])),
            r"gw2.b\u{1b}  gw2  -"
        );
    }

    fn message(seq: u64) -> pb::HistoryMessage {
        pb::HistoryMessage {
            seq,
            offset: format!("o{seq}"),
            time_ms: 1_700_000_000_000 + seq,
            event: "say".into(),
            args_json: format!(r#"[{{"n":{seq}}}]"#),
        }
    }

    #[test]
    fn history_is_oldest_first_and_keeps_the_newest() {
        // Newest page first, each page oldest first.
        let pages = vec![
            vec![message(5), message(6)],
            vec![message(3), message(4)],
            vec![message(1), message(2)],
        ];
        let seqs = |v: Vec<pb::HistoryMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(newest(pages.clone(), 100)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(newest(pages.clone(), 3)), [4, 5, 6]);
        assert_eq!(seqs(newest(Vec::new(), 3)), Vec::<u64>::new());
        assert_eq!(
            history_lines(&[message(7), message(12)], false),
            [
                "SEQ        TIME MS  EVENT  ARGS",
                "  7  1700000000007  say    [{\"n\":7}]",
                " 12  1700000000012  say    [{\"n\":12}]",
                "2 messages",
            ]
        );
        assert_eq!(
            history_lines(&[message(7)], true),
            [r#"{"seq":7,"offset":"o7","time_ms":1700000000007,"event":"say","args":[{"n":7}]}"#]
        );
    }

    #[test]
    fn failures_say_what_went_wrong() {
        let status = Status::unauthenticated("invalid bearer token");
        assert_eq!(
            Failure::Rpc(status).to_string(),
            "Unauthenticated: invalid bearer token"
        );
        let status = Status::invalid_argument("selector.ns: must start with '/' (got \"chat\")");
        assert_eq!(
            status_line(&status),
            "InvalidArgument: selector.ns: must start with '/' (got \"chat\")"
        );
        assert_eq!(
            status_line(&Status::new(Code::Unimplemented, "")),
            "Unimplemented: Operation is not implemented or not supported"
        );
        let mut transport = Status::unknown("transport error");
        transport.set_source(std::sync::Arc::new(io::Error::other(
            "frame with invalid size",
        )));
        assert_eq!(
            status_line(&transport),
            "Unknown: transport error: frame with invalid size"
        );
        let late = deadline_status(
            Status::cancelled("Timeout expired"),
            Duration::from_millis(250),
        );
        assert_eq!(
            status_line(&late),
            "DeadlineExceeded: no answer within 250 ms (see --timeout-ms)"
        );
        let other = deadline_status(
            Status::cancelled("client went away"),
            Duration::from_millis(250),
        );
        assert_eq!(other.code(), Code::Cancelled);
        let refused = Failure::Connect {
            addr: "http://127.0.0.1:1".into(),
            error: "tcp connect error".into(),
        };
        assert_eq!(
            refused.to_string(),
            "cannot connect to http://127.0.0.1:1: tcp connect error"
        );
    }

    #[test]
    fn paging_stops_at_the_last_page_and_on_a_repeated_token() {
        assert_eq!(next_page("", String::new()).unwrap(), None);
        assert_eq!(
            next_page("", "after:a".into()).unwrap(),
            Some("after:a".into())
        );
        assert_eq!(
            next_page("after:a", "after:b".into()).unwrap(),
            Some("after:b".into())
        );
        assert!(matches!(
            next_page("after:a", "after:a".into()),
            Err(Failure::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn connection_failures_are_reported_not_panicked() {
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let run = run(&format!(
            "--addr http://127.0.0.1:{port} --timeout-ms 2000 stats"
        ));
        let mut out = Vec::new();
        let err = execute(&run, &mut out).await.unwrap_err();
        assert!(matches!(err, Failure::Connect { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot connect to http://127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(out.is_empty());
        let missing = Run {
            target: Target {
                addr: "https://127.0.0.1:1".into(),
                token: TOKEN.into(),
                ca: Some("/nonexistent/ca.pem".into()),
            },
            ..run
        };
        let err = execute(&missing, &mut out).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read --ca /nonexistent/ca.pem"),
            "{err}"
        );
        let not_pem =
            std::env::temp_dir().join(format!("switchboard-admin-test-{}.pem", std::process::id()));
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let bad_ca = Run {
            target: Target {
                ca: Some(not_pem.clone()),
                ..missing.target
            },
            ..missing
        };
        let err = execute(&bad_ca, &mut out).await.unwrap_err();
        let _ = std::fs::remove_file(&not_pem);
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
