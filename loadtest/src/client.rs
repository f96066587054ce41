//! A deliberately small Socket.IO client: a WebSocket transport ([`Client`]: one TCP stream,
//! one read buffer, no task of its own), a long-polling one ([`crate::polling::Polling`]), and
//! [`Conn`], either of them behind the Socket.IO steps they share (namespace connect, `join`
//! with its ack). Enough to open a session, connect a namespace, emit events, wait for acks and
//! answer heartbeats; nothing else (no upgrade from polling, no reconnection, no binary
//! attachments).
//!
//! Framing and packets go through the gateway's own codecs (`switchboard_codec::{websocket,
//! engineio, socketio}`), so the load generator and the server cannot disagree about the wire
//! format without the codec's tests disagreeing too. The one exception is the hot path of the fan-out
//! scenario, `say` deliveries, which [`Say`] reads without building a JSON tree (its test checks
//! it against the codec).
//!
//! Memory: the read buffer starts at [`READ_CHUNK`] bytes, grows only for a frame larger than
//! that, and is shrunk back once empty; the write buffer holds at most one outgoing burst.
//!
//! Cancel safety: [`Conn::fill`] may be raced in `select!` (it only reads); everything that
//! writes ([`Conn::flush`], [`Conn::recv`], [`Conn::send_text`]) must not be.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use switchboard_codec::engineio::{self, Frame, Payload};
use switchboard_codec::socketio::{self, Decoded, Packet, PacketType};
use switchboard_codec::websocket::{self, Assembler, Message, OpCode, Role, close_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handshake;
use crate::polling::Polling;

/// Bytes reserved for each read.
const READ_CHUNK: usize = 1024;

/// Bytes read from every connection of this process (WebSocket and polling, handshakes
/// included), for the bytes on the wire per delivery (`scripts/bench-compress.sh`).
static RX_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes read so far from every connection of this process.
pub(crate) fn rx_bytes() -> u64 {
    RX_BYTES.load(Ordering::Relaxed)
}
/// A buffer grown beyond this (by a large frame or a burst) is shrunk back when emptied.
const BUFFER_KEEP: usize = 16 * 1024;
/// Largest response head to the upgrade request.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long a closing connection waits for the server to close its end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Ack id used for the join request (the only ack a connection asks for).
const JOIN_ACK_ID: u64 = 1;

/// Where the server is: an address (loopback unless remote targets are allowed) and the
/// Engine.IO path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The server's address; loopback unless `--allow-remote` was given.
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
    /// The Engine.IO path, e.g. `/socket.io/`.
    pub(crate) path: String,
}

impl Target {
    /// Parses `http://HOST:PORT[/path/]` (or `ws://`). HOST is an IP address or `localhost`;
    /// unless `remote` (`--allow-remote`, an explicit choice to load another machine), it must
    /// be a loopback address. The unspecified address (`0.0.0.0`, `::`) is never a target.
    pub(crate) fn parse(url: &str, remote: bool) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| anyhow!("--url must start with http:// or ws:// (got {url:?})"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = match path {
            "" | "/" => "/socket.io/".to_owned(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        ensure!(
            !path.contains(['?', '#']),
            "--url must not carry a query or fragment (got {url:?})"
        );
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("--url needs an explicit port (got {url:?})"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad port in --url {url:?}"))?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .with_context(|| {
                    format!("--url host must be an IP address or localhost (got {h:?})")
                })?,
        };
        ensure!(
            !ip.is_unspecified(),
            "refusing target {ip}: the unspecified address names no server"
        );
        ensure!(
            remote || ip.is_loopback(),
            "refusing non-loopback target {ip}: this tool loads a local server unless \
             --allow-remote is given"
        );
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path,
        })
    }
}

/// The fields of the Engine.IO open packet we use.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Open {
    /// The session id.
    pub(crate) sid: String,
    /// Milliseconds between server pings.
    pub(crate) ping_interval: u64,
    /// Milliseconds the server waits for a pong.
    pub(crate) ping_timeout: u64,
    /// Largest message the server accepts.
    pub(crate) max_payload: u64,
}

/// Something the server sent, after heartbeats have been taken care of.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    /// The Engine.IO open packet.
    Open(Open),
    /// A `say` event recognised by the fast path ([`Say`]), with its `t`.
    Say(u64),
    /// A Socket.IO packet.
    Packet(Packet),
    /// The server closed the session or the connection (the reason as received).
    Closed(String),
    /// Anything else (Engine.IO noop, binary frames, pongs, binary Socket.IO packets).
    Other(String),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(open) => write!(f, "open {open:?}"),
            Self::Say(t) => write!(f, "say with t={t}"),
            Self::Packet(p) => match socketio::encode(p).first() {
                Some(Frame::Text(text, _)) => write!(f, "{:?}", String::from_utf8_lossy(text)),
                _ => write!(f, "{p:?}"),
            },
            Self::Closed(reason) => write!(f, "closed ({reason})"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// The fast path for the one message the load generator receives in bulk, `say({t, …})`.
///
/// Decoding every delivery into a `serde_json::Value` (what `socketio::decode` does) costs the
/// generator as much CPU as the server spends sending it. Instead the packet header is matched
/// literally against what the gateway's encoder writes for an EVENT without ack id in this
/// namespace (`42/chat,`), and the JSON array after it is deserialized into a typed shape
/// (`["say", {"t": …}]`, other fields skipped but still parsed): the JSON is checked as fully
/// as before, nothing is allocated. A namespace with connection state recovery appends the
/// packet's offset as the last argument (`["say", {"t": …}, "k3x9q1.1842"]`); that one extra
/// string is accepted too, so both paths cost the generator the same. Anything else falls back
/// to the codec.
pub(crate) struct Say {
    /// `42` + namespace + `,` (just `42` for `/`).
    prefix: String,
}

#[derive(Deserialize)]
struct SayArg {
    t: u64,
}

/// `[name, {"t": …}]` or `[name, {"t": …}, "offset"]`, as `(name, t)`.
struct SayEvent<'a>(&'a str, u64);

impl<'de> Deserialize<'de> for SayEvent<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = SayEvent<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[name, {t}] or [name, {t}, offset]")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let name: &'de str = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let arg: SayArg = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                // The recovery offset, if any: one string, and nothing after it.
                if seq.next_element::<&'de str>()?.is_some()
                    && seq.next_element::<serde::de::IgnoredAny>()?.is_some()
                {
                    return Err(A::Error::invalid_length(4, &self));
                }
                Ok(SayEvent(name, arg.t))
            }
        }
        d.deserialize_seq(Shape)
    }
}

impl Say {
    /// The fast path for `say` events in `nsp`.
    pub(crate) fn new(nsp: &str) -> Self {
        let probe = event_text(nsp, crate::crowd::SAY, &Value::Array(Vec::new()), None);
        let header = probe.len() - br#"["say"]"#.len();
        let prefix = String::from_utf8_lossy(&probe[..header]).into_owned();
        Self { prefix }
    }

    /// The `t` of a `say` event in a whole Engine.IO text message, or None for anything else
    /// (including a `say` this path does not recognise, which then goes through the codec).
    fn time(&self, text: &str) -> Option<u64> {
        self.message_time(text.strip_prefix('4')?)
    }

    /// The same for the data of an Engine.IO message packet (the text after its `4`).
    fn message_time(&self, data: &str) -> Option<u64> {
        let json = data.strip_prefix(&self.prefix[1..])?;
        if !json.starts_with('[') {
            return None;
        }
        match serde_json::from_str::<SayEvent<'_>>(json) {
            Ok(SayEvent(name, t)) if name == crate::crowd::SAY => Some(t),
            _ => None,
        }
    }
}

/// What one Engine.IO packet is.
pub(crate) enum Text {
    Event(Event),
    /// A heartbeat to answer with `3`.
    Ping,
}

/// Classifies an Engine.IO text message (a whole WebSocket text message).
fn classify(text: &str) -> Result<Text> {
    let packet = engineio::decode_text(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|e| anyhow!("bad Engine.IO packet {text:?}: {e}"))?;
    classify_packet(packet, None)
}

/// Classifies a decoded Engine.IO packet (of either transport); with `say`, `say` events come
/// out as [`Event::Say`].
pub(crate) fn classify_packet(packet: engineio::Packet, say: Option<&Say>) -> Result<Text> {
    use engineio::Packet as Eio;
    Ok(Text::Event(match packet {
        Eio::Open(data) => Event::Open(serde_json::from_slice(&data).with_context(|| {
            format!(
                "bad Engine.IO open packet {:?}",
                String::from_utf8_lossy(&data)
            )
        })?),
        Eio::Ping(_) => return Ok(Text::Ping),
        Eio::Close => Event::Closed("Engine.IO close packet".to_owned()),
        Eio::Message(Payload::Text(data)) => {
            let text = std::str::from_utf8(&data).context("Socket.IO packet is not UTF-8")?;
            match say.and_then(|s| s.message_time(text)) {
                Some(t) => Event::Say(t),
                None => match socketio::decode(text) {
                    Ok(Decoded::Complete(packet)) => Event::Packet(packet),
                    Ok(Decoded::NeedAttachments(..)) => {
                        Event::Other(format!("binary packet {text:?}"))
                    }
                    Err(e) => bail!("undecodable Socket.IO packet {text:?}: {e}"),
                },
            }
        }
        Eio::Message(Payload::Binary(data)) => {
            Event::Other(format!("binary message of {} bytes", data.len()))
        }
        other => Event::Other(format!("Engine.IO {:?}", other.kind())),
    }))
}

/// A fresh masking key for one client frame.
fn mask() -> [u8; 4] {
    rand::random()
}

/// The text of an EVENT packet (Engine.IO message digit included), via the gateway's encoder.
pub(crate) fn event_text(nsp: &str, event: &str, args: &Value, id: Option<u64>) -> bytes::Bytes {
    match socketio::encode_event(nsp, event, args, id, &[])
        .into_iter()
        .next()
    {
        Some(Frame::Text(text, _)) => text,
        other => unreachable!("encode_event always starts with a text frame, got {other:?}"),
    }
}

/// A TCP connection to the server with its read buffer; `buf[pos..]` is not parsed yet. Both
/// transports read through it (the long-polling one adds its HTTP response parsing).
pub(crate) struct Stream {
    pub(crate) tcp: TcpStream,
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
}

impl Stream {
    /// Connects to `target` (no delay: every write is a whole message).
    pub(crate) async fn connect(target: &Target) -> Result<Self> {
        let tcp = TcpStream::connect(target.addr)
            .await
            .context("TCP connect")?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Self {
            tcp,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
        })
    }

    /// Reads whatever the socket has (waiting for at least one byte), after dropping what was
    /// parsed. Cancel-safe. Returns 0 at end of stream.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.buf.is_empty() && self.buf.capacity() > BUFFER_KEEP {
                self.buf = Vec::with_capacity(READ_CHUNK);
            }
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.tcp.read_buf(&mut self.buf).await?;
        RX_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One WebSocket connection.
pub(crate) struct Client {
    io: Stream,
    assembler: Assembler,
    /// Frames waiting to be written (heartbeat answers, events).
    out: Vec<u8>,
    /// Server heartbeats answered so far.
    pings: u64,
    /// permessage-deflate was agreed (`SWITCHBOARD_LOADTEST_DEFLATE`, [`crate::deflate`]).
    inflater: Option<switchboard_codec::deflate::Inflater>,
}

impl Client {
    /// Opens a WebSocket connection (the upgrade); the Engine.IO open packet is the first
    /// event. The caller bounds it in time.
    async fn open(target: &Target) -> Result<Self> {
        let mut client = Self {
            io: Stream::connect(target).await?,
            assembler: Assembler::default(),
            out: Vec::new(),
            pings: 0,
            inflater: None,
        };

        let key = handshake::random_key();
        let path = format!("{}?EIO=4&transport=websocket", target.path);
        let mut request = handshake::request(&target.host, &path, &key);
        if crate::deflate::offered() {
            request.truncate(request.len() - 2);
            request.push_str(&format!(
                "Sec-WebSocket-Extensions: {}\r\n\r\n",
                crate::deflate::OFFER
            ));
        }
        client
            .io
            .tcp
            .write_all(request.as_bytes())
            .await
            .context("sending the upgrade request")?;
        loop {
            if let Some(len) = handshake::head_len(&client.io.buf) {
                handshake::check_response(&client.io.buf[..len], &key)?;
                if crate::deflate::agreed(&client.io.buf[..len]) {
                    client.inflater = Some(switchboard_codec::deflate::Inflater::default());
                }
                client.io.pos = len;
                return Ok(client);
            }
            ensure!(
                client.io.buf.len() <= MAX_RESPONSE_HEAD,
                "upgrade response head over {MAX_RESPONSE_HEAD} bytes"
            );
            if client
                .fill()
                .await
                .context("reading the upgrade response")?
                == 0
            {
                bail!(
                    "connection closed during the upgrade; received {:?}",
                    String::from_utf8_lossy(&client.io.buf)
                );
            }
        }
    }

    /// Heartbeats answered so far.
    pub(crate) fn pings(&self) -> u64 {
        self.pings
    }

    /// Reads whatever the socket has (waiting for at least one byte). Cancel-safe. Returns 0 at
    /// end of stream.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        self.io.fill().await
    }

    /// The next event already in the buffer, if any. Heartbeats are answered into the write
    /// buffer (send them with [`Client::flush`]); a close from the server is answered too.
    /// With `say`, `say` events come out as [`Event::Say`].
    pub(crate) fn next_buffered(&mut self, say: Option<&Say>) -> Result<Option<Event>> {
        loop {
            let rest = &mut self.io.buf[self.io.pos..];
            let deflate = self.inflater.is_some();
            let parsed = websocket::parse_with(rest, Role::Client, MAX_MESSAGE, deflate);
            let Some(head) = parsed.map_err(|e| {
                anyhow!(
                    "bad frame from the server: {e} (bytes {:02x?})",
                    &rest[..rest.len().min(16)]
                )
            })?
            else {
                return Ok(None);
            };
            self.io.pos += head.frame_len();
            let payload = &rest[head.header_len..head.frame_len()];
            let pushed =
                self.assembler
                    .push_inflating(head, payload, MAX_MESSAGE, self.inflater.as_mut());
            let event = match pushed {
                Err(e) => bail!("bad message from the server: {e}"),
                Ok(None) | Ok(Some(Message::Pong(_))) => continue,
                Ok(Some(Message::Ping(data))) => {
                    websocket::write_masked(&mut self.out, OpCode::Pong, data, mask());
                    continue;
                }
                Ok(Some(Message::Close(reason))) => {
                    let payload = websocket::close_payload(close_code::NORMAL, "");
                    websocket::write_masked(&mut self.out, OpCode::Close, &payload, mask());
                    Event::Closed(format!("WebSocket close {reason:?}"))
                }
                Ok(Some(Message::Binary(data))) => {
                    Event::Other(format!("binary message of {} bytes", data.len()))
                }
                Ok(Some(Message::Text(text))) => match say.and_then(|s| s.time(&text)) {
                    Some(t) => Event::Say(t),
                    None => match classify(&text)? {
                        Text::Event(event) => event,
                        Text::Ping => {
                            self.pings += 1;
                            websocket::write_masked(&mut self.out, OpCode::Text, b"3", mask());
                            continue;
                        }
                    },
                },
            };
            return Ok(Some(event));
        }
    }

    /// Writes the queued frames.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.io.tcp.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > BUFFER_KEEP {
                self.out = Vec::new();
            }
        }
        Ok(())
    }

    /// Sends one text message (an Engine.IO packet).
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        websocket::write_masked(&mut self.out, OpCode::Text, text, mask());
        self.flush().await
    }

    /// Closes the WebSocket (code 1000) and waits, briefly, for the server to close its end
    /// first, so the TIME_WAIT state lands on the server side rather than on our ports.
    pub(crate) async fn close(mut self) {
        let payload = websocket::close_payload(close_code::NORMAL, "");
        websocket::write_masked(&mut self.out, OpCode::Close, &payload, mask());
        if self.flush().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            self.io.buf.clear();
            self.io.pos = 0;
            while matches!(self.fill().await, Ok(n) if n > 0) {
                self.io.buf.clear();
            }
        })
        .await;
    }
}

/// How a connection reaches the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A WebSocket from the first request.
    #[default]
    WebSocket,
    /// HTTP long-polling only (no upgrade).
    Polling,
}

impl std::str::FromStr for Transport {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "websocket" => Ok(Self::WebSocket),
            "polling" => Ok(Self::Polling),
            other => bail!("unknown transport {other:?} (websocket or polling)"),
        }
    }
}

/// One Socket.IO connection over either transport.
pub(crate) enum Conn {
    WebSocket(Client),
    Polling(Polling),
}

impl Conn {
    /// Opens a session over `transport` and connects namespace `nsp`. The caller bounds it in
    /// time.
    pub(crate) async fn connect(
        target: &Target,
        nsp: &str,
        transport: Transport,
    ) -> Result<(Self, Open)> {
        let (conn, open, _) = Self::connect_sid(target, nsp, transport).await?;
        Ok((conn, open))
    }

    /// [`Conn::connect`], also returning the Socket.IO socket id from the CONNECT reply
    /// (`40/chat,{"sid":"…"}`), or an empty string if the reply carried none.
    pub(crate) async fn connect_sid(
        target: &Target,
        nsp: &str,
        transport: Transport,
    ) -> Result<(Self, Open, String)> {
        let mut conn = match transport {
            Transport::WebSocket => Self::WebSocket(Client::open(target).await?),
            Transport::Polling => Self::Polling(Polling::open(target).await?),
        };
        let open = match conn.recv().await? {
            Event::Open(open) => open,
            other => bail!("expected the Engine.IO open packet, got {other}"),
        };

        // Written by hand, as the official client writes it (`40/chat,`), rather than with
        // `socketio::encode`, which leaves out the comma when nothing follows the namespace.
        let connect = if nsp == "/" {
            "40".to_owned()
        } else {
            format!("40{nsp},")
        };
        conn.send_text(connect.as_bytes()).await?;
        let sid = match conn.recv().await? {
            Event::Packet(p) if p.kind == PacketType::Connect && p.nsp == nsp => p
                .data
                .as_ref()
                .and_then(|d| d.get("sid"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            other => bail!("sent {connect:?}, expected a CONNECT reply for {nsp}, got {other}"),
        };
        Ok((conn, open, sid))
    }

    /// Emits `join(room)` with an ack id and waits for the ack, which must be `[{"ok":true}]`.
    /// Returns how many events arrived meanwhile, for the caller to count.
    pub(crate) async fn join(&mut self, nsp: &str, room: &str) -> Result<u64> {
        let request = event_text(
            nsp,
            "join",
            &Value::from(vec![Value::from(room)]),
            Some(JOIN_ACK_ID),
        );
        self.send_text(&request).await?;
        let mut other = 0;
        loop {
            match self.recv().await? {
                Event::Packet(p)
                    if p.kind == PacketType::Ack && p.id == Some(JOIN_ACK_ID) && p.nsp == nsp =>
                {
                    let ok = serde_json::json!([{ "ok": true }]);
                    ensure!(
                        p.data.as_ref() == Some(&ok),
                        "sent {:?}, got ack {}",
                        String::from_utf8_lossy(&request),
                        Event::Packet(p)
                    );
                    return Ok(other);
                }
                Event::Packet(p) if p.kind == PacketType::Event => other += 1,
                e => bail!(
                    "sent {:?}, expected its ack, got {e}",
                    String::from_utf8_lossy(&request)
                ),
            }
        }
    }

    /// Heartbeats answered so far.
    pub(crate) fn pings(&self) -> u64 {
        match self {
            Self::WebSocket(c) => c.pings(),
            Self::Polling(p) => p.pings(),
        }
    }

    /// Reads whatever the server sent (waiting for at least one byte). Cancel-safe. Returns 0
    /// at end of stream.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        match self {
            Self::WebSocket(c) => c.fill().await,
            Self::Polling(p) => p.fill().await,
        }
    }

    /// The next event already received, if any; heartbeats are answered at the next flush.
    pub(crate) fn next_buffered(&mut self, say: Option<&Say>) -> Result<Option<Event>> {
        match self {
            Self::WebSocket(c) => c.next_buffered(say),
            Self::Polling(p) => p.next_buffered(say),
        }
    }

    /// Sends what is queued (and, polling, makes sure a GET is held).
    pub(crate) async fn flush(&mut self) -> Result<()> {
        match self {
            Self::WebSocket(c) => c.flush().await,
            Self::Polling(p) => p.flush().await,
        }
    }

    /// Sends one text message (an Engine.IO packet).
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        match self {
            Self::WebSocket(c) => c.send_text(text).await,
            Self::Polling(p) => p.send_text(text).await,
        }
    }

    /// Waits for the next event, answering heartbeats on the way; end of stream is
    /// [`Event::Closed`].
    pub(crate) async fn recv(&mut self) -> Result<Event> {
        loop {
            let event = self.next_buffered(None)?;
            self.flush().await?;
            if let Some(event) = event {
                return Ok(event);
            }
            if self.fill().await? == 0 {
                return Ok(Event::Closed("end of stream".to_owned()));
            }
        }
    }

    /// Closes the session (WebSocket close, or the Engine.IO close packet over polling).
    pub(crate) async fn close(self) {
        match self {
            Self::WebSocket(c) => c.close().await,
            Self::Polling(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let ok: &[(&str, &str, &str)] = &[
            ("http://127.0.0.1:3000", "127.0.0.1:3000", "/socket.io/"),
            ("http://127.0.0.1:3000/", "127.0.0.1:3000", "/socket.io/"),
            ("ws://localhost:80/custom", "127.0.0.1:80", "/custom/"),
            ("http://127.1.2.3:9/io/", "127.1.2.3:9", "/io/"),
            ("http://[::1]:3000", "[::1]:3000", "/socket.io/"),
        ];
        for &(url, addr, path) in ok {
            let t = Target::parse(url, false).expect(url);
            assert_eq!(
                (t.addr.to_string().as_str(), t.path.as_str()),
                (addr, path),
                "{url}"
            );
        }
        let bad = [
            "https://127.0.0.1:3000",
            "http://10.0.0.1:3000",
            "http://0.0.0.0:3000",
            "http://example.com:3000",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:3000/x?y=1",
        ];
        for url in bad {
            assert!(Target::parse(url, false).is_err(), "{url} must be refused");
        }
        // Allowed remote targets: any IP address but the unspecified one; still no host names
        // (no resolver in the loop) and the same URL rules.
        for (url, addr) in [
            ("http://10.0.0.1:3000", "10.0.0.1:3000"),
            ("ws://[2001:db8::1]:80/io", "[2001:db8::1]:80"),
            ("http://127.0.0.1:3000", "127.0.0.1:3000"),
        ] {
            let t = Target::parse(url, true).expect(url);
            assert_eq!(t.addr.to_string(), addr, "{url}");
        }
        for url in [
            "http://0.0.0.0:3000",
            "http://[::]:3000",
            "http://example.com:3000",
            "https://10.0.0.1:3000",
            "http://10.0.0.1",
        ] {
            assert!(Target::parse(url, true).is_err(), "{url} must be refused");
        }
    }

    fn event(text: &str) -> Event {
        match classify(text).expect(text) {
            Text::Event(e) => e,
            Text::Ping => panic!("{text} is a ping"),
        }
    }

    #[test]
    fn classify_vectors() {
        assert!(matches!(classify("2"), Ok(Text::Ping)));
        assert_eq!(
            event(
                r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ),
            Event::Open(Open {
                sid: "abc".into(),
                ping_interval: 25000,
                ping_timeout: 20000,
                max_payload: 1_000_000
            })
        );
        let connect = event(r#"40/chat,{"sid":"x"}"#);
        assert!(
            matches!(&connect, Event::Packet(p) if p.kind == PacketType::Connect && p.nsp == "/chat")
        );
        let ack = event(r#"43/chat,1[{"ok":true}]"#);
        assert!(matches!(&ack, Event::Packet(p) if p.kind == PacketType::Ack && p.id == Some(1)));
        assert_eq!(ack.to_string(), r#""43/chat,1[{\"ok\":true}]""#);
        let say = event(r#"42/chat,["say",{"room":"bench","t":123,"p":"xx"}]"#);
        let Event::Packet(p) = say else {
            panic!("not a packet")
        };
        assert_eq!(p.data.as_ref().and_then(|d| d[1]["t"].as_u64()), Some(123));
        assert!(matches!(event("1"), Event::Closed(_)));
        assert!(matches!(event("6"), Event::Other(_)));
        for bad in ["", "x", "0{", "4", "49"] {
            assert!(classify(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn say_fast_path_agrees_with_the_codec() {
        let chat = Say::new("/chat");
        let root = Say::new("/");
        assert_eq!(
            (chat.prefix.as_str(), root.prefix.as_str()),
            ("42/chat,", "42")
        );
        let table: &[(&Say, &str, Option<u64>)] = &[
            (
                &chat,
                r#"42/chat,["say",{"room":"bench","t":123,"p":"xx"}]"#,
                Some(123),
            ),
            (
                &chat,
                r#"42/chat,["say",{"t":5,"p":{"nested":[1,2]}}]"#,
                Some(5),
            ),
            (&root, r#"42["say",{"t":7}]"#, Some(7)),
            // A recovery-enabled namespace's offset, the last argument.
            (
                &chat,
                r#"42/chat,["say",{"t":7,"p":"x"},"k3x9q1.1842"]"#,
                Some(7),
            ),
            (&root, r#"42["say",{"t":8},"k3x9q1.1"]"#, Some(8)),
            // Not recognised here; the codec decides.
            (&chat, r#"42/chat,["say",{"t":7},"k3x9q1.1",2]"#, None),
            (&chat, r#"42/chat,["say",{"t":7},3]"#, None),
            (&chat, r#"42/chat,["say",{"t":7},"a\u0062"]"#, None),
            (&chat, r#"42/chat,["say"]"#, None),
            (&chat, r#"42/chat,["s\u0061y",{"t":7}]"#, None),
            (&chat, r#"42/chat,1["say",{"t":7}]"#, None),
            (&chat, r#"42/chatroom,["say",{"t":7}]"#, None),
            (&chat, r#"42["say",{"t":7}]"#, None),
            (&chat, r#"42/chat,["said",{"t":7}]"#, None),
            (&chat, r#"42/chat,["say",{"t":-1}]"#, None),
            (&chat, r#"42/chat,["say",{"t":7}"#, None),
            (&chat, r#"42/chat,["say",{"t":7}] x"#, None),
            (&chat, r#"43/chat,["say",{"t":7}]"#, None),
        ];
        for &(say, text, want) in table {
            assert_eq!(say.time(text), want, "{text:?}");
            // Whatever the fast path accepts, the codec reads the same way.
            if let Some(t) = want {
                let Ok(Text::Event(Event::Packet(p))) = classify(text) else {
                    panic!("{text}")
                };
                let nsp = if std::ptr::eq(say, &root) {
                    "/"
                } else {
                    "/chat"
                };
                assert_eq!(crate::crowd::say_time(&p, nsp), Some(t), "{text}");
            }
        }
    }

    #[test]
    fn event_texts() {
        let join = event_text("/chat", "join", &serde_json::json!(["bench"]), Some(1));
        assert_eq!(&join[..], br#"42/chat,1["join","bench"]"#);
        let say = event_text(
            "/chat",
            "say",
            &serde_json::json!([{ "room": "bench", "t": 5, "p": "ab" }]),
            None,
        );
        assert_eq!(
            &say[..],
            br#"42/chat,["say",{"room":"bench","t":5,"p":"ab"}]"#
        );
        let root = event_text("/", "say", &serde_json::json!([1]), None);
        assert_eq!(&root[..], br#"42["say",1]"#);
    }
}
