//! HTTP long-polling: the handshake, GET (wait for frames, answer them batched) and POST (packets
//! from the client).
//!
//! Rules from the reference server that clients and the official suites rely on: one GET at a time
//! (a second one closes the session: the first gets a close packet, the second 400); a GET whose
//! client goes away closes the session; a client close packet answers a pending GET with noop;
//! while a WebSocket upgrade is under way a GET is answered with noop, or 400 once the upgrade
//! completed. Likewise one POST at a time: a second concurrent one closes the session and gets 400.
//! Both overlaps are answered as the reference answers them, 400 with an empty body ("overlap from
//! client"); a POST whose session closed while its body was arriving gets 400 (code 1) instead of
//! having its packets dropped behind an `ok` (the reference drops its connection).
//!
//! A POST body must arrive whole within `body_timeout` of its headers: a body trickled in byte by
//! byte would otherwise hold the request (and the session's one POST slot) open for as long as
//! the client likes. A late body is answered 408 and its connection closed (what is left of the
//! body is never read, so the connection cannot be reused).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use switchboard_codec::engineio::{self, Compress, Frame};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Body, EioError, compress};
use crate::engine::{CloseReason, Conn, Engine, Handler, State, Transport, Waiter};
use crate::metrics::{self, Limit};

/// How long a GET that arrives during an upgrade waits for the upgrade to complete before it is
/// answered with noop (the reference server checks every 100 ms).
pub(super) const UPGRADE_POLL_WAIT: Duration = Duration::from_millis(100);

/// A GET's answer's `Content-Type` (payloads and noop), as the reference server sends it; both
/// paths (hyper here, `direct`) write these.
pub(super) const PAYLOAD_TYPE: &str = "text/plain; charset=UTF-8";
/// A noop answer's body.
pub(super) const NOOP_BODY: &[u8] = b"6";
/// A delivered POST's `Content-Type` and body.
pub(super) const DELIVERED_TYPE: &str = "text/html";
pub(super) const DELIVERED_BODY: &[u8] = b"ok";

fn text_response(body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PAYLOAD_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A GET's payload. As Node's engine.io, the body may be compressed only if at least one of its
/// frames allows it ([`engineio::Compress`]); otherwise the response is marked [`compress::Uncompressed`].
fn payload_response<'a>(frames: impl IntoIterator<Item = &'a Frame> + Clone) -> Response<Body> {
    let len = engineio::payload_len(frames.clone());
    let packets = frames.clone().into_iter().count();
    metrics::wire(false).sent(packets as u64, len as u64);
    let allowed = frames.clone().into_iter().any(|f| f.compress().allowed());
    let mut out = BytesMut::with_capacity(len);
    engineio::encode_payload(frames, &mut out);
    let mut res = text_response(out.freeze());
    if !allowed {
        res.extensions_mut().insert(compress::Uncompressed);
    }
    res
}

/// Answers a polling handshake and starts the session's heartbeat.
pub(super) fn handshake<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H::Data>>,
    open: Frame,
) -> Response<Body> {
    let res = payload_response([&open]);
    started(&engine, conn);
    res
}

/// Tells the handler about a new polling session whose handshake is answered, and starts its
/// heartbeat.
pub(super) fn started<H: Handler>(engine: &Arc<Engine<H>>, conn: Arc<Conn<H::Data>>) {
    engine.opened(&conn);
    engine.spawn(heartbeat(conn));
}

/// Drives the heartbeat of a session while it polls; the WebSocket task takes over after an
/// upgrade.
async fn heartbeat<D: Send + Sync + 'static>(conn: Arc<Conn<D>>) {
    loop {
        if conn.transport() == Transport::WebSocket {
            return;
        }
        let Some(deadline) = conn.tick(Instant::now()) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = conn.wake.notified() => {
                // `wake` belongs to the WebSocket writer once upgraded: hand the wakeup on.
                if conn.transport() == Transport::WebSocket {
                    conn.wake.notify_one();
                    return;
                }
            }
        }
    }
}

/// Closes the session if the GET is dropped before it was answered (the client went away).
struct CancelGuard<'a, D: Send + Sync + 'static> {
    conn: &'a Arc<Conn<D>>,
    armed: bool,
}

impl<D: Send + Sync + 'static> Drop for CancelGuard<'_, D> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.close(CloseReason::TransportClose);
        }
    }
}

/// What a GET is answered with, whichever path (hyper or `direct`) writes it.
pub(super) enum Answer {
    /// 200 with these frames as the payload.
    Frames(VecDeque<Frame>),
    /// 200 with a noop packet.
    Noop,
    /// The reference server's error.
    Error(EioError),
    /// A second GET or POST while one is in flight: 400 with no body (the session is closed).
    Overlap,
}

impl Answer {
    /// As a response for hyper.
    pub(super) fn response(self) -> Response<Body> {
        match self {
            Self::Frames(frames) => payload_response(frames.iter()),
            Self::Noop => text_response(Bytes::from_static(NOOP_BODY)),
            Self::Error(e) => e.response(),
            Self::Overlap => overlap(),
        }
    }
}

/// What happened to a GET as it arrived.
pub(super) enum Begin {
    /// Answer it now.
    Answer(Answer),
    /// Its waiter is the session's pending poll; `during_upgrade`: a WebSocket is attached, so
    /// it is answered after [`UPGRADE_POLL_WAIT`] at the latest.
    Wait { during_upgrade: bool },
}

/// A long-poll GET arrives: answers it at once or makes `waiter` the session's pending poll (in
/// the same critical section that found nothing to send).
pub(super) fn begin<D: Send + Sync + 'static>(
    conn: &Arc<Conn<D>>,
    waiter: impl FnOnce() -> Waiter,
) -> Begin {
    if conn.heartbeat_expired(Instant::now()) {
        conn.close(CloseReason::PingTimeout);
        return Begin::Answer(Answer::Error(EioError::SessionUnknown));
    }
    {
        let mut st = conn.lock();
        if let Some(reason) = st.closed {
            return Begin::Answer(if std::mem::take(&mut st.farewell) {
                farewell(&mut st, reason)
            } else {
                Answer::Error(EioError::SessionUnknown)
            });
        } else if st.transport == Transport::WebSocket {
            return Begin::Answer(Answer::Error(EioError::BadRequest));
        } else if st.poll.is_none() {
            if !st.outbox.is_empty() {
                return Begin::Answer(Answer::Frames(st.drain()));
            }
            st.poll = Some(waiter());
            return Begin::Wait {
                during_upgrade: st.ws_attached,
            };
        }
    }
    conn.close(CloseReason::DuplicatePoll);
    Begin::Answer(Answer::Overlap)
}

/// What a pending GET answers once woken (its waiter already taken from the session).
pub(super) fn woken(st: &mut State, during_upgrade: bool) -> Answer {
    match st.closed {
        Some(reason) => farewell(st, reason),
        None if st.transport == Transport::WebSocket => {
            if during_upgrade {
                Answer::Error(EioError::BadRequest)
            } else {
                Answer::Noop
            }
        }
        None if !st.outbox.is_empty() => Answer::Frames(st.drain()),
        None => Answer::Noop,
    }
}

/// A long-poll GET.
pub(super) async fn poll<D: Send + Sync + 'static>(conn: Arc<Conn<D>>) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    let during_upgrade = match begin(&conn, || Waiter::Hyper(tx)) {
        Begin::Answer(answer) => return answer.response(),
        Begin::Wait { during_upgrade } => during_upgrade,
    };
    let mut guard = CancelGuard {
        conn: &conn,
        armed: true,
    };
    if during_upgrade {
        let _ = tokio::time::timeout(UPGRADE_POLL_WAIT, rx).await;
    } else {
        let _ = rx.await;
    }
    guard.armed = false;
    let mut st = conn.lock();
    // Drop our waker if it was not used (upgrade wait timed out).
    st.poll = None;
    woken(&mut st, during_upgrade).response()
}

/// The last answer of a closed session: noop after the client's own close, else whatever was
/// still queued and a close packet.
fn farewell(st: &mut State, reason: CloseReason) -> Answer {
    if reason == CloseReason::ClientClose {
        return Answer::Noop;
    }
    st.push_back(closing());
    Answer::Frames(st.drain())
}

/// The transport's close packet. It does not count towards compressing the body: as in Node's
/// engine.io (whose polling transport sends it without options), a farewell of `compress(false)`
/// frames and the close goes uncompressed.
fn closing() -> Frame {
    Frame::close().with_compress(Compress::Off)
}

/// Clears the POST-in-progress flag when the POST ends, however it ends.
pub(super) struct PostGuard<'a, D: Send + Sync + 'static>(&'a Conn<D>);

impl<D: Send + Sync + 'static> Drop for PostGuard<'_, D> {
    fn drop(&mut self) {
        self.0.lock().post_active = false;
    }
}

/// A POST's headers arrived: it may go on (its body is read while the guard lives), or is
/// answered at once.
pub(super) fn post_begin<D: Send + Sync + 'static>(
    conn: &Arc<Conn<D>>,
) -> Result<PostGuard<'_, D>, Answer> {
    {
        let mut st = conn.lock();
        if st.closed.is_some() {
            return Err(Answer::Error(EioError::SessionUnknown));
        }
        if st.transport == Transport::WebSocket {
            return Err(Answer::Error(EioError::BadRequest));
        }
        if !st.post_active {
            st.post_active = true;
            return Ok(PostGuard(conn));
        }
    }
    conn.close(CloseReason::TransportError);
    Err(Answer::Overlap)
}

/// Delivers a POST's body; `None`: delivered (answer `ok`).
pub(super) fn post_deliver<H: Handler>(
    engine: &Engine<H>,
    conn: &Arc<Conn<H::Data>>,
    body: &Bytes,
) -> Option<Answer> {
    let packets = match engineio::decode_payload(body) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %conn.sid(), error = %e, "invalid polling payload");
            conn.close(CloseReason::ParseError);
            return Some(Answer::Error(EioError::BadRequest));
        }
    };
    metrics::wire(false).received(packets.len() as u64, body.len() as u64);
    if conn.is_closed() {
        // Closed while the body arrived (by an overlapping POST, say): nothing was delivered.
        return Some(Answer::Error(EioError::SessionUnknown));
    }
    let now = Instant::now();
    for packet in packets {
        engine.on_packet(conn, packet, now);
    }
    None
}

/// A POST of packets from the client.
pub(super) async fn post<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H::Data>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let max = engine.config.max_payload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let _guard = match post_begin(&conn) {
        Ok(guard) => guard,
        Err(answer) => return answer.response(),
    };
    let collect = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(engine.config.body_timeout, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Err(_) => {
            tracing::debug!(sid = %conn.sid(), "polling body not finished in time");
            metrics::limited(Limit::BodyTime);
            return request_timeout();
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large();
            }
            // The client went away mid-body.
            return EioError::BadRequest.response();
        }
    };
    if let Some(answer) = post_deliver(&engine, &conn, &body) {
        return answer.response();
    }
    let mut res = Response::new(Full::new(Bytes::from_static(DELIVERED_BODY)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(DELIVERED_TYPE),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A second GET or POST while one is in flight: the session is closed, and the request gets what
/// the reference server answers, 400 with no body.
pub(super) fn overlap() -> Response<Body> {
    metrics::limited(Limit::PollingInFlight);
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res
}

fn too_large() -> Response<Body> {
    metrics::limited(Limit::BodyBytes);
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    res
}

/// 408 for a body that did not arrive in time; the connection is closed after it (hyper would
/// close it anyway, the body being unread: the header says so to the client).
fn request_timeout() -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::REQUEST_TIMEOUT;
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `compress::response` would compress the payload of `frames` (threshold 0, gzip
    /// accepted).
    fn compressed(frames: &[Frame]) -> bool {
        let res = payload_response(frames);
        let res = futures_util::FutureExt::now_or_never(compress::response(
            Some(0),
            Some(compress::Coding::Gzip),
            res,
        ))
        .expect("ready");
        res.headers().contains_key(header::CONTENT_ENCODING)
    }

    #[test]
    fn a_body_is_compressed_only_if_a_frame_allows_it() {
        let on = Frame::text(Bytes::from_static(b"42[\"a\"]"));
        let off = on.clone().with_compress(Compress::Off);
        let bin_off = Frame::binary(Bytes::from_static(b"\x01")).with_compress(Compress::Off);
        let table: Vec<(Vec<Frame>, bool)> = vec![
            (vec![on.clone()], true),
            (vec![off.clone()], false),
            (vec![off.clone(), bin_off], false),
            (vec![off.clone(), on], true),
            (vec![off.clone(), Frame::ping()], true),
            (vec![off, closing()], false),
        ];
        for (frames, want) in table {
            assert_eq!(compressed(&frames), want, "{frames:?}");
        }
    }
}
