//! Long-polling without hyper, on a kept-alive HTTP/1.1 connection.
//!
//! A connection whose requests are this endpoint's polling handshake, GETs and POSTs is served
//! here, request after request: each head is read into a stack buffer and parsed in place
//! ([`super::head`]) within one poll of the connection's task, so an idle connection keeps no
//! read buffer. A GET with nothing to send becomes the session's pending poll
//! ([`Waiter::Direct`]): whoever queues the next frame (or closes the session) writes the whole
//! response — status line, headers and payload in one `write` — under the session's lock, and no
//! task is woken for it; the connection's task wakes only when the next request arrives.
//!
//! What is answered here is answered as on the hyper path (`polling`, and the CORS headers of
//! `http::Router`): the same state checks and bodies ([`polling::begin`], [`polling::woken`],
//! [`polling::post_begin`], [`polling::post_deliver`]), the same `Content-Type`s, compression
//! per `Accept-Encoding` above the threshold, `body_timeout` for a POST's body (408 and close),
//! the same metrics. The response head carries no `date` header.
//!
//! Everything else goes to hyper with the bytes already read ([`Handoff`]): another path or
//! method, a head that did not arrive whole in one read or is larger than
//! [`DIRECT_HEAD_MAX`](super::DIRECT_HEAD_MAX) (hyper applies its size bound, 431, and its
//! header-read timeout, with what is left of ours), a body framing other than one
//! `Content-Length`, `Expect`, upgrades, a POST body over `maxHttpBufferSize` (hyper answers
//! 413), bytes after a request (pipelining), a session this gateway does not hold (hyper answers
//! 400, or forwards it to its owner in cluster mode), a handshake while draining, CORS
//! preflights. Once hyper has a connection it keeps it.
//!
//! Invariants: the bytes of a previous response are all written before the next request head is
//! read, so responses go out in request order; a pending GET whose client closes its connection
//! closes the session (as a dropped request does on the hyper path); the session's lock is taken
//! before the link's, never the other way round.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use switchboard_codec::engineio;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::compress::{self, Coding};
use super::head::{self, Method, Parse};
use super::polling::{
    self, Answer, Begin, DELIVERED_BODY, DELIVERED_TYPE, NOOP_BODY, PAYLOAD_TYPE, UPGRADE_POLL_WAIT,
};
use super::{DIRECT_HEAD_MAX, Direct, EioError, EioQuery, Handoff, unix_ms, write_some};
use crate::engine::{
    AnswerPoll, CloseReason, Conn, Engine, Handler, HandshakeInfo, HandshakeRefusal, KEPT_HEADERS,
    OpenError, State, Transport, Waiter,
};
use crate::metrics::{self, Limit};

/// Most headers a request served here may have (more: hyper serves it).
const MAX_HEADERS: usize = 64;
/// A per-thread scratch buffer larger than this is freed after use.
const SCRATCH_KEEP: usize = 256 * 1024;

thread_local! {
    /// Where responses are built before their one write.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The connection, shared with the session while a GET of it is pending.
struct Link {
    tcp: TcpStream,
    /// Polling responses of this many bytes or more are compressed.
    threshold: Option<usize>,
    state: Mutex<LinkState>,
    /// Wakes the connection's task: the pending GET was answered and it asked to be told
    /// (`want_wake`), or bytes wait in `spill`.
    wake: Notify,
}

#[derive(Default)]
struct LinkState {
    /// The CORS header lines of the current request's responses.
    cors: Vec<u8>,
    /// How the current request accepts a compressed response.
    coding: Option<Coding>,
    /// The current request asked for the connection to close after its response.
    close: bool,
    /// The pending GET arrived while a WebSocket was attached.
    during_upgrade: bool,
    /// The pending GET was answered.
    answered: bool,
    /// The task no longer watches the socket and waits to be told of the answer.
    want_wake: bool,
    /// Response bytes the kernel did not take yet.
    spill: Vec<u8>,
    /// Writing failed: the connection is broken.
    failed: bool,
}

impl Link {
    /// Writes `out` now, as far as the kernel takes it; the rest waits in `spill`.
    fn write(&self, l: &mut LinkState, out: &[u8]) {
        if l.failed {
            return;
        }
        match write_some(&self.tcp, out) {
            Ok(n) if n < out.len() => l.spill.extend_from_slice(&out[n..]),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "polling response write failed");
                l.failed = true;
            }
        }
    }

    /// Builds `reply` for the current request and writes it.
    fn send(&self, reply: Reply) {
        let mut l = self.state.lock();
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            encode(&mut s, reply, &l, self.threshold);
            self.write(&mut l, &s);
            s.clear();
            if s.capacity() > SCRATCH_KEEP {
                *s = BytesMut::new();
            }
        });
    }
}

impl AnswerPoll for Link {
    fn answer(&self, st: &mut State) {
        let during_upgrade = self.state.lock().during_upgrade;
        let answer = polling::woken(st, during_upgrade);
        self.send(Reply::Answer(answer));
        let mut l = self.state.lock();
        l.answered = true;
        if l.want_wake || !l.spill.is_empty() || l.failed {
            self.wake.notify_one();
        }
    }
}

/// A response to write.
enum Reply {
    /// A GET's answer (also the handshake's).
    Answer(Answer),
    /// A POST was delivered: `ok`.
    Delivered,
    /// A JSON error body with its status.
    Json(StatusCode, &'static str),
    /// A status with an empty body.
    Status(StatusCode),
}

/// Appends the status line and headers; the body of `len` bytes follows.
fn head(
    out: &mut BytesMut,
    status: StatusCode,
    content_type: Option<&str>,
    l: &LinkState,
    encoding: Option<Coding>,
    len: usize,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(content_type) = content_type {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status == StatusCode::OK {
        out.extend_from_slice(b"cache-control: no-store\r\n");
    }
    out.extend_from_slice(&l.cors);
    if let Some(coding) = encoding {
        out.extend_from_slice(b"content-encoding: ");
        out.extend_from_slice(coding.name().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if l.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    // Writing into a `BytesMut` cannot fail.
    let _ = write!(out, "content-length: {len}\r\n\r\n");
}

/// Appends the whole response for `reply`.
fn encode(out: &mut BytesMut, reply: Reply, l: &LinkState, threshold: Option<usize>) {
    match reply {
        Reply::Answer(Answer::Frames(frames)) => {
            let len = engineio::payload_len(frames.iter());
            metrics::wire(false).sent(frames.len() as u64, len as u64);
            let allowed = frames.iter().any(|f| f.compress().allowed());
            match (l.coding, threshold) {
                (Some(coding), Some(threshold)) if allowed && len >= threshold => {
                    let mut plain = BytesMut::with_capacity(len);
                    engineio::encode_payload(frames.iter(), &mut plain);
                    let body = compress::encode(coding, &plain);
                    head(
                        out,
                        StatusCode::OK,
                        Some(PAYLOAD_TYPE),
                        l,
                        Some(coding),
                        body.len(),
                    );
                    out.extend_from_slice(&body);
                }
                _ => {
                    head(out, StatusCode::OK, Some(PAYLOAD_TYPE), l, None, len);
                    engineio::encode_payload(frames.iter(), out);
                }
            }
        }
        Reply::Answer(Answer::Noop) => {
            head(
                out,
                StatusCode::OK,
                Some(PAYLOAD_TYPE),
                l,
                None,
                NOOP_BODY.len(),
            );
            out.extend_from_slice(NOOP_BODY);
        }
        Reply::Answer(Answer::Error(e)) => {
            encode(out, Reply::Json(e.status(), e.body()), l, threshold);
        }
        Reply::Answer(Answer::Overlap) => {
            metrics::limited(Limit::PollingInFlight);
            head(out, StatusCode::BAD_REQUEST, None, l, None, 0);
        }
        Reply::Delivered => {
            let len = DELIVERED_BODY.len();
            head(out, StatusCode::OK, Some(DELIVERED_TYPE), l, None, len);
            out.extend_from_slice(DELIVERED_BODY);
        }
        Reply::Json(status, body) => {
            head(out, status, Some("application/json"), l, None, body.len());
            out.extend_from_slice(body.as_bytes());
        }
        Reply::Status(status) => head(out, status, None, l, None, 0),
    }
}

/// What the next request on the connection is.
enum Next<D> {
    /// The client closed the connection (or it failed, or sent nothing in time).
    Gone,
    /// Not for this path: hyper serves the connection from here on, starting with these bytes.
    Hyper(Vec<u8>),
    /// Answer at once.
    Reply(Reply),
    /// A GET now pending on the session.
    Wait {
        conn: Arc<Conn<D>>,
        during_upgrade: bool,
    },
    /// A POST whose body (`body` so far, `want` bytes in all) is to be read.
    Post {
        conn: Arc<Conn<D>>,
        body: Vec<u8>,
        want: usize,
    },
}

/// Serves polling requests on `direct.tcp` until the client closes it, shutdown, or a request
/// that hyper must serve (returned with the bytes read of it).
pub(super) async fn serve<H: Handler>(engine: Arc<Engine<H>>, direct: Direct) -> Option<Handoff> {
    let Direct {
        tcp,
        remote,
        prefix,
        front,
        shutdown,
        header_timeout,
    } = direct;
    let link = Arc::new(Link {
        tcp,
        threshold: engine.config.http_compression,
        state: Mutex::new(LinkState::default()),
        wake: Notify::new(),
    });
    let ctx = Ctx {
        engine: &engine,
        front: &*front,
        prefix: &prefix,
        remote,
    };
    loop {
        let waited = Instant::now();
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            r = tokio::time::timeout(header_timeout, poll_fn(|cx| ctx.poll_next(&link, cx))) => {
                r.unwrap_or(Next::Gone)
            }
        };
        match next {
            Next::Gone => return None,
            Next::Hyper(pre) => {
                let left = header_timeout.saturating_sub(waited.elapsed());
                return match Arc::try_unwrap(link) {
                    Ok(link) => Some(Handoff {
                        tcp: link.tcp,
                        pre,
                        header_timeout: left.max(std::time::Duration::from_secs(1)),
                    }),
                    Err(_) => None,
                };
            }
            Next::Reply(reply) => link.send(reply),
            Next::Wait {
                conn,
                during_upgrade,
            } => {
                if !wait_answer(&link, &conn, during_upgrade, &shutdown, header_timeout).await {
                    return None;
                }
            }
            Next::Post { conn, body, want } => {
                let (reply, whole) = post(&ctx, &link, &conn, body, want).await;
                if !whole {
                    // The rest of the body was not read: the connection cannot carry another
                    // request (hyper closes it too).
                    link.state.lock().close = true;
                }
                link.send(reply);
            }
        }
        if !flush(&link).await || link.state.lock().close || shutdown.is_cancelled() {
            return None;
        }
    }
}

/// Waits until the pending GET of `link` on `conn` is answered; false if the connection is
/// gone (then the session is closed, as when a held request is dropped on the hyper path).
///
/// The pusher that answers does not wake this task (that is the point): it finds out when the
/// client's next request arrives, at shutdown, or at the latest `idle` after it last looked, so
/// that an answered connection left idle is closed as hyper closes one (its next head then has
/// the header-read timeout).
async fn wait_answer<D: Send + Sync + 'static>(
    link: &Arc<Link>,
    conn: &Arc<Conn<D>>,
    during_upgrade: bool,
    shutdown: &tokio_util::sync::CancellationToken,
    idle: std::time::Duration,
) -> bool {
    let mut upgrade_wait = during_upgrade.then(|| Instant::now() + UPGRADE_POLL_WAIT);
    let mut watching = true;
    let mut stopping = false;
    loop {
        if link.state.lock().answered {
            return true;
        }
        let until = upgrade_wait.unwrap_or_else(|| Instant::now() + idle);
        tokio::select! {
            biased;
            r = poll_fn(|cx| peek(link, cx)), if watching => match r {
                Ok(0) | Err(_) => {
                    let ours = {
                        let mut st = conn.lock();
                        let ours = is_ours(&st, link);
                        if ours {
                            st.poll = None;
                        }
                        ours
                    };
                    if ours {
                        conn.close(CloseReason::TransportClose);
                    }
                    return false;
                }
                Ok(_) => {
                    // Bytes while the GET is pending: the next request, if the answer was just
                    // written; else a client that pipelines, read once the GET is answered.
                    let mut l = link.state.lock();
                    if !l.answered {
                        l.want_wake = true;
                        watching = false;
                    }
                }
            },
            () = link.wake.notified() => {}
            // At shutdown a pending GET is still answered (its session is closed by the drain),
            // as hyper finishes a request in flight.
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                link.state.lock().want_wake = true;
            }
            () = tokio::time::sleep_until(until) => {
                if upgrade_wait.take().is_some() {
                    let mut st = conn.lock();
                    if is_ours(&st, link) {
                        // As the hyper path after its wait: answered with what the state says.
                        st.wake_poll();
                    }
                }
            }
        }
    }
}

/// Whether the session's pending poll is `link`'s GET.
fn is_ours(st: &State, link: &Arc<Link>) -> bool {
    matches!(&st.poll, Some(Waiter::Direct(w)) if std::ptr::addr_eq(Arc::as_ptr(w), Arc::as_ptr(link)))
}

/// Reads a POST's body and delivers it; the reply and whether the whole body was read.
async fn post<H: Handler>(
    ctx: &Ctx<'_, H>,
    link: &Link,
    conn: &Arc<Conn<H::Data>>,
    mut body: Vec<u8>,
    want: usize,
) -> (Reply, bool) {
    let _guard = match polling::post_begin(conn) {
        Ok(guard) => guard,
        Err(answer) => return (Reply::Answer(answer), body.len() == want),
    };
    let read = poll_fn(|cx| read_body(&link.tcp, cx, &mut body, want));
    match tokio::time::timeout(ctx.engine.config.body_timeout, read).await {
        Err(_) => {
            tracing::debug!(sid = %conn.sid(), "polling body not finished in time");
            metrics::limited(Limit::BodyTime);
            return (Reply::Status(StatusCode::REQUEST_TIMEOUT), false);
        }
        Ok(Err(_)) => {
            // The client went away mid-body.
            return (Reply::Answer(Answer::Error(EioError::BadRequest)), false);
        }
        Ok(Ok(())) => {}
    }
    let body = Bytes::from(body);
    match polling::post_deliver(ctx.engine, conn, &body) {
        Some(answer) => (Reply::Answer(answer), true),
        None => (Reply::Delivered, true),
    }
}

/// Reads until `body` holds `want` bytes (through a stack buffer: it grows only by what arrived).
fn read_body(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    body: &mut Vec<u8>,
    want: usize,
) -> Poll<io::Result<()>> {
    let mut buf = [0u8; DIRECT_HEAD_MAX];
    while body.len() < want {
        ready!(tcp.poll_read_ready(cx))?;
        let room = (want - body.len()).min(buf.len());
        match tcp.try_read(&mut buf[..room]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Tells tokio that `tcp` has no bytes left to read, after a read that took fewer than it asked
/// for (TCP hands over everything queued, up to the buffer): its readiness is cleared as an
/// `EAGAIN` would clear it, so the wait for the next request registers at once instead of
/// paying a `recvfrom` (a peek) that can only say "nothing yet". That is one syscall of the
/// three a long-poll delivery made. Safe as tokio's own clearing is: readiness set by an event
/// that arrived after this read carries a newer tick and is kept.
fn drained(tcp: &TcpStream) {
    let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Ready once the socket has bytes or ended: how many bytes (0: ended). Reads nothing; once the
/// GET was answered, readable is enough (the bytes are the next request: no peek needed).
fn peek(link: &Link, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    ready!(link.tcp.poll_read_ready(cx))?;
    if link.state.lock().answered {
        return Poll::Ready(Ok(usize::MAX));
    }
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    link.tcp.poll_peek(cx, &mut buf)
}

/// Writes the bytes the kernel did not take yet; false if the connection failed.
async fn flush(link: &Link) -> bool {
    loop {
        {
            let mut l = link.state.lock();
            l.answered = false;
            l.want_wake = false;
            if l.failed {
                return false;
            }
            if l.spill.is_empty() {
                l.spill = Vec::new();
                return true;
            }
            let spill = std::mem::take(&mut l.spill);
            match write_some(&link.tcp, &spill) {
                Ok(n) => l.spill = spill[n..].to_vec(),
                Err(_) => return false,
            }
            if l.spill.is_empty() {
                l.spill = Vec::new();
                return true;
            }
        }
        if poll_fn(|cx| link.tcp.poll_write_ready(cx)).await.is_err() {
            return false;
        }
    }
}

/// What a connection's requests are checked against.
struct Ctx<'a, H: Handler> {
    engine: &'a Arc<Engine<H>>,
    front: &'a dyn super::Front,
    prefix: &'a str,
    remote: SocketAddr,
}

impl<H: Handler> Ctx<'_, H> {
    /// Reads the next request head (within this poll: the buffer is on the stack) and decides.
    fn poll_next(&self, link: &Arc<Link>, cx: &mut Context<'_>) -> Poll<Next<H::Data>> {
        loop {
            if ready!(link.tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(Next::Gone);
            }
            let mut buf = [0u8; DIRECT_HEAD_MAX];
            match link.tcp.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(Next::Gone),
                Ok(n) => {
                    if n < buf.len() {
                        drained(&link.tcp);
                    }
                    return Poll::Ready(self.decide(link, &buf[..n]));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Next::Gone),
            }
        }
    }

    /// What to do with the request in `bytes` (all that one read gave).
    fn decide(&self, link: &Arc<Link>, bytes: &[u8]) -> Next<H::Data> {
        let hyper = || Next::Hyper(bytes.to_vec());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Parse::Complete(req) = head::parse(bytes, &mut headers) else {
            return hyper();
        };
        let config = &self.engine.config;
        if req.unusual
            || !(req.path == self.prefix || req.path == self.prefix.trim_end_matches('/'))
            || !config.allow_polling
        {
            return hyper();
        }
        let rest = &bytes[req.len..];
        let q = EioQuery::parse(req.query);
        if q.transport.as_deref() != Some("polling") {
            return hyper();
        }
        let headers = &headers[..req.headers];
        {
            let mut l = link.state.lock();
            l.close = req.close;
            l.during_upgrade = false;
            l.cors.clear();
            self.front.cors(req.origin, &mut l.cors);
            l.coding = config.http_compression.and_then(|_| {
                compress::preferred(
                    headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                        .map(|h| h.value),
                )
            });
        }
        let no_body = rest.is_empty() && req.content_length.is_none_or(|n| n == 0);
        match (req.method, q.sid.as_deref()) {
            (Method::Get, None) => {
                if !no_body || q.eio.as_deref() != Some("4") || self.front.draining() {
                    return hyper();
                }
                self.handshake(link, headers, req.query)
            }
            (Method::Get, Some(sid)) => {
                if !no_body || self.front.elsewhere(sid, req.forwarded) {
                    return hyper();
                }
                let Some(conn) = self.engine.get(sid) else {
                    return hyper();
                };
                let waiter = link.clone();
                match polling::begin(&conn, || Waiter::Direct(waiter)) {
                    Begin::Answer(answer) => Next::Reply(Reply::Answer(answer)),
                    Begin::Wait { during_upgrade } => {
                        link.state.lock().during_upgrade = during_upgrade;
                        Next::Wait {
                            conn,
                            during_upgrade,
                        }
                    }
                }
            }
            (Method::Post, Some(sid)) => {
                let Some(len) = req.content_length else {
                    return hyper();
                };
                let too_long = usize::try_from(len).map_or(true, |n| n > config.max_payload);
                if too_long || rest.len() as u64 > len || self.front.elsewhere(sid, req.forwarded) {
                    return hyper();
                }
                let Some(conn) = self.engine.get(sid) else {
                    return hyper();
                };
                // The body grows as its bytes arrive: a declared length costs nothing until sent.
                Next::Post {
                    conn,
                    body: rest.to_vec(),
                    want: len as usize,
                }
            }
            _ => hyper(),
        }
    }

    /// A polling handshake, checked and answered as on the hyper path.
    fn handshake(
        &self,
        link: &Arc<Link>,
        headers: &[httparse::Header<'_>],
        query: Option<&str>,
    ) -> Next<H::Data> {
        // Only the kept headers are read by the checks and kept by the session.
        let mut kept = HeaderMap::new();
        for h in headers {
            if KEPT_HEADERS.iter().any(|k| h.name.eq_ignore_ascii_case(k))
                && let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(h.name.as_bytes()),
                    HeaderValue::from_bytes(h.value),
                )
            {
                kept.append(name, value);
            }
        }
        let config = &self.engine.config;
        if let Err(refusal) = HandshakeInfo::check(config, &kept, query) {
            metrics::limited(Limit::Handshake);
            return Next::Reply(match refusal {
                HandshakeRefusal::QueryTooLong => {
                    Reply::Answer(Answer::Error(EioError::BadRequest))
                }
                HandshakeRefusal::HeadersTooLarge => Reply::Json(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    EioError::BadRequest.body(),
                ),
            });
        }
        let info = HandshakeInfo::new(self.remote, &kept, query, unix_ms());
        match self.engine.open(Transport::Polling, info, Instant::now()) {
            Ok((conn, open)) => {
                // The handshake is never compressed (nor on the hyper path).
                link.state.lock().coding = None;
                polling::started(self.engine, conn);
                Next::Reply(Reply::Answer(Answer::Frames([open].into())))
            }
            Err(OpenError::TooManyFromAddress) => Next::Reply(Reply::Json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"code":4,"message":"Too many connections from this address"}"#,
            )),
        }
    }
}
