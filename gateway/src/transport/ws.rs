//! WebSocket transport: one task per connection that reads, writes and runs the heartbeat.
//!
//! A new session's upgrade is usually answered here directly ([`open_direct`]: the 101 and the
//! handshake frame in one write); otherwise fastwebsockets performs the HTTP upgrade handshake
//! through hyper, and we take the raw `TcpStream` back. Either way we speak RFC 6455 with our
//! own pure codec ([`switchboard_codec::websocket`]). The reason is memory and
//! syscalls: fastwebsockets keeps an 8 KiB read buffer per connection for its whole life and writes
//! frame by frame, whereas here
//! - an idle connection holds no buffer: reads go through a stack buffer once the socket is
//!   readable, and only an incomplete frame is kept on the heap (and freed once complete);
//! - every frame queued for the connection is written with one `write` (coalescing), built in a
//!   per-thread scratch buffer; only bytes the kernel would not take stay with the connection;
//! - a frame for a connection that has been quiet is written by the pusher itself (the task hands
//!   out a direct-write handle while nothing waits), so low-rate deliveries wake no task. Every
//!   write to the socket, the task's and the pushers', happens under the session's lock.
//!
//! The task selects only over cancel-safe futures (polled socket readiness, `Notify`, `Sleep`).
//!
//! permessage-deflate ([`switchboard_codec::deflate`]) is agreed when the engine allows it and
//! the client offers it, always without context takeover: the compressor and the decompressor
//! are per thread, reset for every message, so a compressed connection holds no zlib state.
//! Frames of at least the threshold are compressed where they are encoded (the task's flush or a
//! pusher's direct write); a compressed message from the client is inflated with the same size
//! limit as any message.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchboard_codec::deflate::{self, Deflater, Inflater};
use switchboard_codec::engineio::{self, Frame, Packet, Payload};
use switchboard_codec::websocket::{self, Assembler, Message, OpCode, Role, close_code};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{Body, DIRECT_HEAD_MAX, EioError, too_many, write_some};
use crate::engine::{
    CloseReason, Conn, DirectWrite, Engine, Handler, HandshakeInfo, State, Transport,
};
use crate::metrics::{self, Limit};

/// Bytes read from the socket per `read` call (on the stack, not kept).
const READ_CHUNK: usize = 16 * 1024;
/// A per-thread write scratch buffer larger than this is freed after use.
const SCRATCH_KEEP: usize = 256 * 1024;
/// Pause between a CONNECT reply written on its own and the frames queued after it.
const APART_GAP: std::time::Duration = std::time::Duration::from_millis(5);
/// Most bytes of unsent control frames (pongs) a connection may accumulate.
const MAX_CONTROL_BACKLOG: usize = 64 * 1024;
/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// permessage-deflate compressors, by window bits (9 to 15), made on first use.
    static DEFLATERS: RefCell<[Option<Deflater>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// One message's compressed bytes, before its header is known.
    static DEFLATED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The permessage-deflate decompressor (taken out while in use).
    static INFLATER: RefCell<Option<Inflater>> = const { RefCell::new(None) };
    /// The last message compressed on this thread: (window bits, message, compressed bytes).
    static LAST_DEFLATED: RefCell<(u8, Vec<u8>, Vec<u8>)> =
        const { RefCell::new((0, Vec::new(), Vec::new())) };
}

/// Largest message whose compressed form is kept for the next connection (see
/// [`write_deflated`]).
const DEFLATE_REUSE_MAX: usize = 64 * 1024;

/// zlib level of permessage-deflate: 1 (fastest) was chosen by measurement on JSON chat
/// messages (docs/scaling.md, Compression).
const DEFLATE_LEVEL: u32 = 1;

/// permessage-deflate as agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deflate {
    /// The window our compressor may use.
    window_bits: u8,
    /// Frames of this many bytes or more are sent compressed.
    threshold: usize,
}

/// Agrees permessage-deflate for an upgrade request, if the engine allows it and the client
/// offers it, and says so in the 101 response.
fn negotiate<B>(
    config: &crate::engine::Config,
    headers: &HeaderMap,
    res: &mut Response<B>,
) -> Option<Deflate> {
    let threshold = config.per_message_deflate?;
    let agreed = deflate::negotiate(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(HeaderValue::as_bytes),
    )?;
    let value = HeaderValue::from_str(&agreed.response_header()).ok()?;
    res.headers_mut()
        .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    Some(Deflate {
        window_bits: agreed.server_max_window_bits,
        threshold,
    })
}

fn switching(res: Response<http_body_util::Empty<Bytes>>) -> Response<Body> {
    let (parts, _) = res.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Upgrades a request that opens a new session over WebSocket.
pub(super) fn open<H: Handler>(
    engine: Arc<Engine<H>>,
    mut req: Request<Incoming>,
    info: HandshakeInfo,
) -> Response<Body> {
    let Ok((mut res, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
        return EioError::BadRequest.response();
    };
    let deflate = negotiate(&engine.config, req.headers(), &mut res);
    // Open the session (and start its heartbeat clock) before the 101 goes out.
    let (conn, open) = match engine.open(Transport::WebSocket, info, Instant::now()) {
        Ok(x) => x,
        Err(e) => return too_many(e),
    };
    conn.push(open);
    engine.clone().spawn(async move {
        match take_stream(fut).await {
            Some((tcp, pre)) => {
                engine.opened(&conn);
                run(engine, conn, tcp, pre, Vec::new(), Phase::Open, deflate).await;
            }
            None => conn.close(CloseReason::TransportError),
        }
    });
    switching(res)
}

/// Opens a new session over a WebSocket whose upgrade request was read off `tcp` without hyper
/// (see `Endpoint::open_direct`): consumes the request's `head_len` bytes, and queues the 101
/// response `res` in front of the handshake frame, so that both go out in one write. Hands `tcp`
/// back, untouched, when the session cannot be opened (hyper then answers with the error).
pub(super) fn open_direct<H: Handler>(
    engine: Arc<Engine<H>>,
    res: &mut Response<http_body_util::Empty<Bytes>>,
    headers: &HeaderMap,
    info: HandshakeInfo,
    head_len: usize,
    tcp: TcpStream,
) -> Result<(), TcpStream> {
    let (conn, open) = match engine.open(Transport::WebSocket, info, Instant::now()) {
        Ok(x) => x,
        Err(_) => return Err(tcp),
    };
    // The head was peeked, so it is all in the socket's buffer: one read takes exactly it.
    let mut head = [0u8; DIRECT_HEAD_MAX];
    match head.get_mut(..head_len).map(|h| tcp.try_read(h)) {
        Some(Ok(n)) if n == head_len => {}
        _ => {
            conn.close(CloseReason::TransportError);
            return Ok(());
        }
    }
    conn.push(open);
    engine.opened(&conn);
    let deflate = negotiate(&engine.config, headers, res);
    let response = response_head(res);
    engine.clone().spawn(async move {
        run(
            engine,
            conn,
            tcp,
            Bytes::new(),
            response,
            Phase::Open,
            deflate,
        )
        .await;
    });
    Ok(())
}

/// A response head as hyper writes it (less the `date` header).
fn response_head<B>(res: &Response<B>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(res.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        res.status()
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Upgrades a polling session to WebSocket (the probe exchange follows on the socket).
pub(super) fn upgrade_existing<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H::Data>>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    {
        let mut st = conn.lock();
        if st.closed.is_some() {
            return EioError::SessionUnknown.response();
        }
        if st.ws_attached || st.transport != Transport::Polling {
            drop(st);
            return refuse_after_upgrade(&engine, req);
        }
        st.ws_attached = true;
    }
    let Ok((mut res, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
        conn.lock().ws_attached = false;
        return EioError::BadRequest.response();
    };
    let deflate = negotiate(&engine.config, req.headers(), &mut res);
    engine.clone().spawn(async move {
        match take_stream(fut).await {
            Some((tcp, pre)) => {
                run(engine, conn, tcp, pre, Vec::new(), Phase::Probe, deflate).await;
            }
            None => abort_upgrade(&conn),
        }
    });
    switching(res)
}

/// A WebSocket for a session that already has one: like the reference server, complete the
/// upgrade and close it at once (clients handle a close better than a failed handshake).
fn refuse_after_upgrade<H: Handler>(
    engine: &Engine<H>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Ok((res, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
        return EioError::BadRequest.response();
    };
    engine.spawn(async move {
        if let Some((tcp, _)) = take_stream(fut).await {
            let mut frame = Vec::with_capacity(4);
            let payload = websocket::close_payload(close_code::POLICY, "");
            websocket::write_head(&mut frame, OpCode::Close, payload.len());
            frame.extend_from_slice(&payload);
            if tcp.writable().await.is_ok() && write_some(&tcp, &frame).is_ok() {
                let until = tokio::time::sleep(CLOSE_FLUSH);
                tokio::pin!(until);
                linger(&tcp, until).await;
            }
        }
    });
    switching(res)
}

/// Waits for hyper to hand over the connection and takes the raw TCP stream back out of it.
async fn take_stream(fut: fastwebsockets::upgrade::UpgradeFut) -> Option<(TcpStream, Bytes)> {
    let ws = fut.await.ok()?;
    let upgraded = ws.into_inner().into_inner();
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((parts.io.into_inner(), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    // A connection hyper took over from the direct polling path.
    match upgraded.downcast::<TokioIo<super::Rewind>>() {
        Ok(parts) => {
            let (tcp, pre) = parts.io.into_inner().into_parts();
            if pre.is_empty() {
                return Some((tcp, parts.read_buf));
            }
            // What hyper read came off the stream before what it had not read yet.
            let mut all = parts.read_buf.to_vec();
            all.extend_from_slice(&pre);
            Some((tcp, Bytes::from(all)))
        }
        Err(_) => {
            tracing::error!("upgraded connection is not a TcpStream");
            None
        }
    }
}

fn abort_upgrade<D: Send + Sync + 'static>(conn: &Conn<D>) {
    let mut st = conn.lock();
    st.ws_attached = false;
    if st.transport == Transport::Upgrading {
        st.transport = Transport::Polling;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Upgrade: waiting for `2probe`.
    Probe,
    /// Upgrade: probe answered, waiting for `5`.
    Upgrade,
    /// This socket carries the session.
    Open,
}

/// What the read side decided.
enum Flow {
    Continue,
    /// Stop reading; close the WebSocket with this code (the session is closed or aborted).
    Close(u16),
    /// The peer closed or the upgrade failed: drop the socket now.
    Gone,
}

struct Io<'a, H: Handler> {
    engine: &'a Engine<H>,
    conn: &'a Arc<Conn<H::Data>>,
    phase: Phase,
    asm: Assembler,
    /// Bytes of an incomplete frame.
    partial: Vec<u8>,
    /// Control frames to send before the queued frames (pongs, the probe answer).
    control: Vec<u8>,
    /// A close frame to send after everything else.
    close: Option<u16>,
    /// Queued frames wait until then (after frames that had to be written apart).
    gap_until: Option<Instant>,
    /// Whether bytes wait in the session's spill buffer (as of the last flush).
    backlog: bool,
    /// The socket, for pushers to write to while nothing else waits (see `State::direct`).
    direct: Arc<dyn DirectWrite>,
    /// permessage-deflate, if agreed.
    deflate: Option<Deflate>,
}

/// Lets pushers write frames to the socket directly.
impl DirectWrite for TcpStream {
    fn write(&self, frames: &[Frame], spill: &mut Vec<u8>) -> io::Result<()> {
        write_direct(self, frames, None, spill)
    }
}

/// Encodes `frames` (compressed with `deflate`, if given) into the thread's scratch buffer and
/// writes what the socket takes now; the rest goes to `spill`.
fn write_direct(
    tcp: &TcpStream,
    frames: &[Frame],
    deflate: Option<Deflate>,
    spill: &mut Vec<u8>,
) -> io::Result<()> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        encode_frames(&mut s, frames.iter(), deflate);
        let result = write_some(tcp, &s);
        if let Ok(n) = result
            && n < s.len()
        {
            spill.extend_from_slice(&s[n..]);
        }
        s.clear();
        if s.capacity() > SCRATCH_KEEP {
            *s = Vec::new();
        }
        result.map(|_| ())
    })
}

/// A socket with permessage-deflate, for pushers' direct writes.
struct Compressing {
    tcp: Arc<TcpStream>,
    deflate: Deflate,
}

impl DirectWrite for Compressing {
    fn write(&self, frames: &[Frame], spill: &mut Vec<u8>) -> io::Result<()> {
        write_direct(&self.tcp, frames, Some(self.deflate), spill)
    }
}

/// Serves the WebSocket; `head` (the 101 response, when this side writes it) goes out first.
async fn run<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H::Data>>,
    tcp: TcpStream,
    pre: Bytes,
    head: Vec<u8>,
    phase: Phase,
    deflate: Option<Deflate>,
) {
    let _ = tcp.set_nodelay(true);
    let tcp = Arc::new(tcp);
    let direct: Arc<dyn DirectWrite> = match deflate {
        None => tcp.clone(),
        Some(deflate) => Arc::new(Compressing {
            tcp: tcp.clone(),
            deflate,
        }),
    };
    let mut io = Io {
        engine: &engine,
        conn: &conn,
        phase,
        asm: Assembler::default(),
        partial: Vec::new(),
        control: head,
        close: None,
        gap_until: None,
        backlog: false,
        direct,
        deflate,
    };
    let upgrade_deadline = Instant::now() + engine.config.upgrade_timeout;
    let mut closing: Option<Instant> = None;
    let mut flow = if pre.is_empty() {
        Flow::Continue
    } else {
        io.on_bytes(&mut pre.to_vec())
    };
    // `pre` is a slice of hyper's read buffer: keeping it would keep that whole buffer alive for
    // the life of the connection.
    drop(pre);
    let sleep: Sleep = tokio::time::sleep_until(upgrade_deadline);
    tokio::pin!(sleep);
    // When the session's heartbeat must be looked at next. Its deadlines only ever move later
    // (a pong, a namespace connect), so a cached one at worst wakes the task once for nothing;
    // an application deadline (`Conn::set_deadline`) asks for a fresh look.
    let mut tick_at: Option<Instant> = None;
    loop {
        match flow {
            Flow::Continue => {}
            Flow::Gone => break,
            Flow::Close(code) => {
                if closing.is_none() {
                    io.close = Some(code);
                    closing = Some(Instant::now() + CLOSE_FLUSH);
                }
            }
        }
        flow = Flow::Continue;
        let now = Instant::now();
        let closed = match io.flush(&tcp, now) {
            Ok(closed) => closed,
            Err(e) => {
                tracing::debug!(sid = %conn.sid(), error = %e, "websocket write failed");
                break;
            }
        };
        if closing.is_none() && closed.is_some() {
            // The queue was flushed above; the close frame follows.
            flow = Flow::Close(close_code_for(closed));
            continue;
        }
        if closing.is_some() && !io.backlog {
            break;
        }
        let deadline = match (closing, io.phase) {
            (Some(d), _) => d,
            (None, Phase::Open) => {
                if tick_at.is_none_or(|t| t <= now) || conn.take_retick() {
                    tick_at = conn.tick(now);
                }
                match tick_at {
                    Some(d) => d,
                    None => {
                        flow = Flow::Close(close_code_for(conn.lock().closed));
                        continue;
                    }
                }
            }
            (None, _) => upgrade_deadline,
        };
        let deadline = io.gap_until.map_or(deadline, |g| g.min(deadline));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        let (want_read, want_write) = (closing.is_none(), io.backlog);
        tokio::select! {
            biased;
            // Polled readiness rather than `readable()`/`writable()` futures, which are a few
            // hundred bytes each of every connection's task; this task is the only one waiting
            // on the socket's readiness (pushers only try writes).
            r = poll_fn(|cx| poll_ready(&tcp, cx, want_read, want_write)),
                if want_read || want_write => {
                match r {
                    // Writable: the flush at the top of the loop writes the backlog.
                    Ok(true) => flow = io.read(&tcp),
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
            () = conn.wake.notified(), if !io.backlog => {}
            () = &mut sleep => {
                if closing.is_some() {
                    break;
                }
                if io.phase != Phase::Open && Instant::now() >= upgrade_deadline {
                    tracing::debug!(sid = %conn.sid(), "upgrade timed out");
                    flow = Flow::Gone;
                }
            }
        }
    }
    // Pushers must not write to (nor keep open) a socket this task is done with.
    conn.lock().direct = None;
    if let Some(deadline) = closing
        && !io.backlog
    {
        // The heartbeat's timer serves as the deadline: a second one would grow every
        // connection's task by its size.
        sleep.as_mut().reset(deadline);
        linger(&tcp, sleep.as_mut()).await;
    }
    match io.phase {
        Phase::Open => {
            if !conn.is_closed() {
                conn.close(CloseReason::TransportClose);
            }
        }
        Phase::Probe | Phase::Upgrade => abort_upgrade(&conn),
    }
}

/// Ready once the socket is readable (if `read`) or writable (if `write`), with whether it is
/// readable.
fn poll_ready(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    read: bool,
    write: bool,
) -> Poll<io::Result<bool>> {
    let readable = read && ready(tcp.poll_read_ready(cx))?;
    let writable = write && ready(tcp.poll_write_ready(cx))?;
    if readable || writable {
        Poll::Ready(Ok(readable))
    } else {
        Poll::Pending
    }
}

/// Whether a readiness poll is ready; its error.
fn ready(poll: Poll<io::Result<()>>) -> io::Result<bool> {
    match poll {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// After our close frame: stop writing and discard what the client still sends until it closes
/// too (or `until` fires). Dropping a socket with unread bytes makes the kernel send a reset,
/// and the client would lose the close frame and whatever else it had not read yet.
async fn linger(tcp: &TcpStream, mut until: Pin<&mut Sleep>) {
    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
    loop {
        tokio::select! {
            biased;
            r = poll_fn(|cx| tcp.poll_read_ready(cx)) => {
                if r.is_err() || !discard(tcp) {
                    return;
                }
            }
            () = until.as_mut() => return,
        }
    }
}

/// Reads and drops what is available; false once the stream has ended or failed.
fn discard(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn close_code_for(reason: Option<CloseReason>) -> u16 {
    match reason {
        Some(CloseReason::ParseError) => close_code::PROTOCOL_ERROR,
        Some(CloseReason::Shutdown) => close_code::GOING_AWAY,
        Some(CloseReason::SlowConsumer) => close_code::POLICY,
        Some(CloseReason::Limited(Limit::AttachmentBytes)) => close_code::TOO_BIG,
        Some(CloseReason::Limited(_)) => close_code::POLICY,
        _ => close_code::NORMAL,
    }
}

/// The reason text of the close frame: which limit ended the session, else none.
fn close_text_for(reason: Option<CloseReason>) -> &'static str {
    match reason {
        Some(CloseReason::Limited(Limit::Attachments)) => "too many attachments",
        Some(CloseReason::Limited(Limit::AttachmentBytes)) => "attachments too large",
        Some(CloseReason::Limited(Limit::AttachmentTime)) => "binary packet timeout",
        _ => "",
    }
}

impl<H: Handler> Io<'_, H> {
    /// Reads everything the socket has.
    fn read(&mut self, tcp: &TcpStream) -> Flow {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match tcp.try_read(&mut buf) {
                Ok(0) => return Flow::Gone,
                Ok(n) => match self.on_bytes(&mut buf[..n]) {
                    Flow::Continue => {}
                    other => return other,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Continue,
                Err(e) => {
                    tracing::debug!(sid = %self.conn.sid(), error = %e, "websocket read failed");
                    return Flow::Gone;
                }
            }
        }
    }

    /// Handles received bytes (unmasked in place); keeps an incomplete frame for later.
    fn on_bytes(&mut self, data: &mut [u8]) -> Flow {
        if self.partial.is_empty() {
            let (consumed, flow) = self.on_frames(data);
            if matches!(flow, Flow::Continue) && consumed < data.len() {
                self.partial = data[consumed..].to_vec();
            }
            flow
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let (consumed, flow) = self.on_frames(&mut buf);
            if matches!(flow, Flow::Continue) && consumed < buf.len() {
                buf.drain(..consumed);
                self.partial = buf;
            }
            flow
        }
    }

    /// Handles the complete frames at the start of `buf`; returns how many bytes they took.
    fn on_frames(&mut self, buf: &mut [u8]) -> (usize, Flow) {
        let max = self.engine.config.max_payload;
        let mut off = 0;
        loop {
            let parsed =
                websocket::parse_with(&mut buf[off..], Role::Server, max, self.deflate.is_some());
            let head = match parsed {
                Ok(Some(head)) => head,
                Ok(None) => return (off, Flow::Continue),
                Err(e) => return (off, self.protocol_error(&e)),
            };
            let start = off + head.header_len;
            let end = start + head.payload_len;
            off = end;
            // A data frame on a deflate connection may start or continue a compressed message.
            let mut inflater = (self.deflate.is_some() && !head.opcode.is_control())
                .then(|| INFLATER.with(|i| i.borrow_mut().take()).unwrap_or_default());
            let pushed = self
                .asm
                .push_inflating(head, &buf[start..end], max, inflater.as_mut());
            if let Some(inflater) = inflater {
                INFLATER.with(|i| *i.borrow_mut() = Some(inflater));
            }
            let message = match pushed {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    let flow = self.protocol_error(&e);
                    return (off, flow);
                }
            };
            let flow = match message {
                Message::Text(text) => {
                    let text = match text {
                        Cow::Owned(owned) => Bytes::from(owned),
                        Cow::Borrowed(b) => Bytes::copy_from_slice(b.as_bytes()),
                    };
                    self.on_text(text)
                }
                Message::Binary(data) => {
                    let data = match data {
                        Cow::Owned(owned) => Bytes::from(owned),
                        Cow::Borrowed(b) => Bytes::copy_from_slice(b),
                    };
                    self.on_binary(data)
                }
                Message::Ping(data) => {
                    if self.control.len() > MAX_CONTROL_BACKLOG {
                        // Pings faster than the client reads our pongs.
                        self.conn.close(CloseReason::SlowConsumer);
                        return (off, Flow::Close(close_code::POLICY));
                    }
                    let data = data.to_vec();
                    self.queue_raw(OpCode::Pong, &data);
                    Flow::Continue
                }
                Message::Pong(_) => Flow::Continue,
                Message::Close(_) => Flow::Close(close_code::NORMAL),
            };
            if !matches!(flow, Flow::Continue) {
                return (off, flow);
            }
        }
    }

    fn protocol_error(&mut self, e: &websocket::DecodeError) -> Flow {
        tracing::debug!(sid = %self.conn.sid(), error = %e, "websocket protocol error");
        if self.phase == Phase::Open {
            self.conn.close(CloseReason::TransportError);
        }
        Flow::Close(e.close_code())
    }

    fn on_text(&mut self, text: Bytes) -> Flow {
        if self.phase == Phase::Open {
            metrics::wire(true).received(1, text.len() as u64);
        }
        match self.phase {
            Phase::Open => match engineio::decode_ws_text(text) {
                Ok(packet) => {
                    self.engine.on_packet(self.conn, packet, Instant::now());
                    Flow::Continue
                }
                Err(e) => {
                    tracing::debug!(sid = %self.conn.sid(), error = %e, "invalid packet");
                    self.conn.close(CloseReason::ParseError);
                    Flow::Close(close_code::PROTOCOL_ERROR)
                }
            },
            Phase::Probe => {
                if &text[..] != b"2probe" {
                    return Flow::Gone;
                }
                self.queue_raw(OpCode::Text, b"3probe");
                let mut st = self.conn.lock();
                if st.closed.is_some() {
                    return Flow::Gone;
                }
                st.transport = Transport::Upgrading;
                // Release a pending GET (it gets noop) so the client can pause polling.
                st.wake_poll();
                self.phase = Phase::Upgrade;
                Flow::Continue
            }
            Phase::Upgrade => match &text[..] {
                b"5" => {
                    let mut st = self.conn.lock();
                    if st.closed.is_some() {
                        return Flow::Gone;
                    }
                    st.transport = Transport::WebSocket;
                    metrics::wire(false).connections.decrement(1.0);
                    metrics::wire(true).connections.increment(1.0);
                    st.wake_poll();
                    self.phase = Phase::Open;
                    tracing::debug!(sid = %self.conn.sid(), "upgraded to websocket");
                    Flow::Continue
                }
                b"2probe" => Flow::Continue,
                _ => Flow::Gone,
            },
        }
    }

    fn on_binary(&mut self, data: Bytes) -> Flow {
        if self.phase != Phase::Open {
            return Flow::Gone;
        }
        metrics::wire(true).received(1, data.len() as u64);
        let packet = Packet::Message(Payload::Binary(data));
        self.engine.on_packet(self.conn, packet, Instant::now());
        Flow::Continue
    }

    fn queue_raw(&mut self, opcode: OpCode, payload: &[u8]) {
        websocket::write_head(&mut self.control, opcode, payload.len());
        self.control.extend_from_slice(payload);
    }

    /// Writes, under the session's lock (so that pushers writing directly never interleave with
    /// it): first the bytes the kernel did not take last time, then control frames, every queued
    /// frame (while this socket carries the session) and a requested close frame — coalesced into
    /// one write built in the per-thread scratch buffer. What the kernel does not take goes to the
    /// spill buffer. Afterwards pushers may write directly only if nothing at all is waiting.
    ///
    /// Returns why the session closed, if it has (seen while taking the queue).
    fn flush(&mut self, tcp: &TcpStream, now: Instant) -> io::Result<Option<CloseReason>> {
        if self.gap_until.is_some_and(|g| g <= now) {
            self.gap_until = None;
        }
        let mut st = self.conn.lock();
        let result = self.flush_locked(&mut st, tcp, now);
        self.backlog = !st.spill.is_empty();
        let idle = result.is_ok()
            && self.phase == Phase::Open
            && self.close.is_none()
            && self.gap_until.is_none()
            && self.control.is_empty()
            && st.closed.is_none()
            && st.outbox.is_empty()
            && st.spill.is_empty();
        st.direct = idle.then(|| self.direct.clone());
        if idle && st.outbox.capacity() > 0 {
            // Pushes to an idle connection are written directly: the (empty) queue's allocation
            // would only sit there (most connections are idle most of the time).
            st.outbox = VecDeque::new();
        }
        result
    }

    fn flush_locked(
        &mut self,
        st: &mut State,
        tcp: &TcpStream,
        now: Instant,
    ) -> io::Result<Option<CloseReason>> {
        if !st.spill.is_empty() {
            let n = write_some(tcp, &st.spill)?;
            st.spill.drain(..n);
            if st.spill.is_empty() {
                st.spill = Vec::new();
            } else if self.close.is_none() {
                // The client is not reading: leave new frames in the bounded queue, where a
                // client that stays behind meets the slow-consumer limit, instead of moving
                // them into an unbounded byte buffer.
                return Ok(None);
            }
        }
        let take = self.phase == Phase::Open && (self.gap_until.is_none() || self.close.is_some());
        let close = self.close.take();
        let control = std::mem::take(&mut self.control);
        let mut gap = false;
        let closed = if take { st.closed } else { None };
        // Frames are encoded straight from the queue (a memcpy per frame), so that a flush
        // allocates nothing.
        let mut build = |out: &mut Vec<u8>, st: &mut State| {
            out.extend_from_slice(&control);
            if take {
                let n = if st.boundary > 0 && close.is_none() {
                    st.boundary.min(st.outbox.len())
                } else {
                    st.outbox.len()
                };
                encode_frames(out, st.outbox.iter().take(n), self.deflate);
                if n > 0 {
                    st.last_write = Some(now);
                }
                st.discard_front(n);
                st.boundary = 0;
                gap = !st.outbox.is_empty();
                st.release_spare();
            }
            if let Some(code) = close {
                let payload = websocket::close_payload(code, close_text_for(st.closed));
                websocket::write_head(out, OpCode::Close, payload.len());
                out.extend_from_slice(&payload);
            }
        };
        let result = if st.spill.is_empty() {
            SCRATCH.with(|s| -> io::Result<()> {
                let mut s = s.borrow_mut();
                s.clear();
                build(&mut s, st);
                if s.is_empty() {
                    return Ok(());
                }
                let result = write_some(tcp, &s);
                if let Ok(n) = result
                    && n < s.len()
                {
                    st.spill.extend_from_slice(&s[n..]);
                }
                s.clear();
                if s.capacity() > SCRATCH_KEEP {
                    *s = Vec::new();
                }
                result.map(|_| ())
            })
        } else {
            // Only when closing: everything goes behind the unsent bytes.
            let mut spill = std::mem::take(&mut st.spill);
            build(&mut spill, st);
            let written = write_some(tcp, &spill);
            if let Ok(n) = written {
                spill.drain(..n);
            }
            st.spill = spill;
            written.map(|_| ())
        };
        if gap {
            // What was queued behind frames that had to go apart waits a moment.
            self.gap_until = Some(now + APART_GAP);
        }
        result.map(|()| closed)
    }
}

/// Server frames for Engine.IO frames, appended to `out`; counted as sent (once per batch).
/// With permessage-deflate, frames of at least its threshold are compressed, unless the frame
/// says [`engineio::Compress::Off`] (an emit with `compress(false)`), as Node's `ws` sender does.
fn encode_frames<'a>(
    out: &mut Vec<u8>,
    frames: impl Iterator<Item = &'a Frame>,
    deflate: Option<Deflate>,
) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    for frame in frames {
        let (opcode, data, compress) = match frame {
            Frame::Text(t, c) => (OpCode::Text, t, c),
            Frame::Binary(b, c) => (OpCode::Binary, b, c),
        };
        match deflate {
            Some(d) if compress.allowed() && data.len() >= d.threshold => {
                write_deflated(out, opcode, data, d)
            }
            _ => {
                websocket::write_head(out, opcode, data.len());
                out.extend_from_slice(data);
            }
        }
        packets += 1;
        bytes += data.len() as u64;
    }
    metrics::wire(true).sent(packets, bytes);
}

/// Appends `data` as one compressed frame, with this thread's compressor for the window.
///
/// Without context takeover, a message compresses to the same bytes on every connection with
/// the same window, so a room broadcast, which encodes the same frame for each member in turn,
/// compresses it once: the last message (up to [`DEFLATE_REUSE_MAX`] bytes) and its compressed
/// form are kept per thread, and reused when the next one is equal byte for byte.
fn write_deflated(out: &mut Vec<u8>, opcode: OpCode, data: &[u8], d: Deflate) {
    let bits = d
        .window_bits
        .clamp(deflate::MIN_WINDOW_BITS, deflate::MAX_WINDOW_BITS);
    let reused = LAST_DEFLATED.with(|last| {
        let last = last.borrow();
        let (last_bits, input, output) = &*last;
        let hit = *last_bits == bits && input.as_slice() == data;
        if hit {
            websocket::write_compressed_head(out, opcode, output.len());
            out.extend_from_slice(output);
        }
        hit
    });
    if reused {
        return;
    }
    let index = usize::from(bits - deflate::MIN_WINDOW_BITS);
    DEFLATED.with(|z| {
        let mut z = z.borrow_mut();
        z.clear();
        DEFLATERS.with(|all| {
            let mut all = all.borrow_mut();
            all[index]
                .get_or_insert_with(|| Deflater::new(DEFLATE_LEVEL, bits))
                .compress(data, &mut z);
        });
        websocket::write_compressed_head(out, opcode, z.len());
        out.extend_from_slice(&z);
        if data.len() <= DEFLATE_REUSE_MAX {
            LAST_DEFLATED.with(|last| {
                let mut last = last.borrow_mut();
                let (last_bits, input, output) = &mut *last;
                *last_bits = bits;
                input.clear();
                input.extend_from_slice(data);
                output.clear();
                output.extend_from_slice(&z);
            });
        }
        z.clear();
        if z.capacity() > SCRATCH_KEEP {
            *z = Vec::new();
        }
    });
}

#[cfg(test)]
mod tests {
    use switchboard_codec::engineio::Compress;

    use super::*;

    /// The RSV1 bit of a server frame's first byte: set on a compressed message.
    const RSV1: u8 = 0x40;

    /// The first byte of each server frame in `out` (all shorter than 126 bytes or 16-bit long).
    fn first_bytes(mut out: &[u8]) -> Vec<u8> {
        let mut firsts = Vec::new();
        while let [first, len, rest @ ..] = out {
            let (len, rest) = match len & 0x7f {
                126 => (
                    usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                    &rest[2..],
                ),
                n => (usize::from(n), rest),
            };
            firsts.push(*first);
            out = &rest[len..];
        }
        firsts
    }

    #[test]
    fn frames_marked_off_are_never_deflated() {
        let big = Bytes::from(format!("4{}", "x".repeat(300)));
        let small = Bytes::from_static(b"4hi");
        let d = Deflate {
            window_bits: 15,
            threshold: 100,
        };
        // (frames, deflate, whether each frame goes compressed)
        let table: Vec<(Vec<Frame>, Option<Deflate>, Vec<bool>)> = vec![
            (vec![Frame::text(big.clone())], Some(d), vec![true]),
            (vec![Frame::text(small.clone())], Some(d), vec![false]),
            (
                vec![Frame::Text(big.clone(), Compress::Off)],
                Some(d),
                vec![false],
            ),
            (
                vec![
                    Frame::Text(big.clone(), Compress::Off),
                    Frame::binary(big.clone()),
                    Frame::Binary(big.clone(), Compress::Off),
                    Frame::text(big.clone()),
                ],
                Some(d),
                vec![false, true, false, true],
            ),
            (vec![Frame::text(big.clone())], None, vec![false]),
        ];
        for (frames, deflate, want) in table {
            let mut out = Vec::new();
            encode_frames(&mut out, frames.iter(), deflate);
            let got: Vec<bool> = first_bytes(&out)
                .into_iter()
                .map(|b| b & RSV1 != 0)
                .collect();
            assert_eq!(got, want, "{frames:?}");
        }
    }
}
