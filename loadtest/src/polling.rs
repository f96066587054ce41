//! The long-polling transport of the load generator's client (Engine.IO v4 over HTTP/1.1).
//!
//! One session is one held GET on a kept-alive connection: the server answers it with every
//! packet it has queued, joined by the record separator `\x1e` (decoded with the gateway's own
//! `engineio::decode_payload`), and the client sends the next GET as soon as it has read the
//! answer. What the client sends (the namespace CONNECT, `join`, heartbeat answers, the close
//! packet) goes in a POST on a short-lived connection of its own (`Connection: close`), batched
//! with `\x1e` as well (`engineio::encode_payload`): posts are rare (one per heartbeat), and a
//! fresh connection cannot have been closed by the server's keep-alive timer in between.
//!
//! Cost per session: one socket and its small read buffer ([`Stream`]) while idle.
//!
//! Responses must carry `Content-Length` (both the gateway and Node's engine.io send it);
//! a chunked response is refused with a clear error rather than misread.
//!
//! Cancel safety as for the WebSocket client: [`Polling::fill`] only reads and may be raced in
//! `select!`; [`Polling::flush`] (which posts and sends the next GET) must not be.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Bytes, BytesMut};
use switchboard_codec::engineio::{self, Frame};
use tokio::io::AsyncWriteExt;

use crate::client::{Event, Say, Stream, Target, Text, classify_packet};

/// Largest response head.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long a POST (connect, send, read the answer) may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete HTTP response found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Where the body is in the buffer.
    pub(crate) body: Range<usize>,
}

/// Parses the HTTP/1.1 response at the start of `buf`: `Ok(None)` while it is incomplete.
/// Only `Content-Length` framing is accepted.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<Response>> {
    let Some(head_len) = crate::handshake::head_len(buf) else {
        ensure!(
            buf.len() <= MAX_RESPONSE_HEAD,
            "response head over {MAX_RESPONSE_HEAD} bytes"
        );
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| {
        anyhow!(
            "response head is not UTF-8: {:?}",
            String::from_utf8_lossy(&buf[..head_len])
        )
    })?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1.x response: {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| anyhow!("bad status line {status_line:?}"))?;
    let mut length = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| anyhow!("bad Content-Length {value:?}"))?;
            ensure!(
                n <= MAX_BODY,
                "response body of {n} bytes (at most {MAX_BODY})"
            );
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not supported (Transfer-Encoding: {value})");
        }
    }
    let length =
        length.ok_or_else(|| anyhow!("response without Content-Length: {:?}", head.trim_end()))?;
    if buf.len() < head_len + length {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        body: head_len..head_len + length,
    }))
}

/// The request line and headers of a polling request; `body` makes it a POST.
pub(crate) fn request(target: &Target, query: &str, body: Option<&[u8]>) -> Vec<u8> {
    let path = &target.path;
    let host = &target.host;
    match body {
        None => format!("GET {path}?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
        Some(body) => {
            let mut out = format!(
                "POST {path}?{query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                 Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        }
    }
}

/// HTTP responses on a [`Stream`] (the polling transport's part of it).
impl Stream {
    /// The next complete response in the buffer (status and body), consumed.
    fn take(&mut self) -> Result<Option<(u16, Bytes)>> {
        let rest = &self.buf[self.pos..];
        let Some(response) = parse_response(rest)? else {
            return Ok(None);
        };
        let body = Bytes::copy_from_slice(&rest[response.body.clone()]);
        self.pos += response.body.end;
        Ok(Some((response.status, body)))
    }

    /// Waits for the next complete response.
    async fn response(&mut self) -> Result<(u16, Bytes)> {
        loop {
            if let Some(response) = self.take()? {
                return Ok(response);
            }
            if self.fill().await? == 0 {
                bail!("connection closed before a complete response");
            }
        }
    }
}

/// One Engine.IO session over long-polling.
pub(crate) struct Polling {
    target: Target,
    /// `EIO=4&transport=polling&sid=…` once the session is open.
    query: String,
    /// The connection the GETs go on.
    get: Stream,
    /// Whether a GET has been sent and not answered yet.
    get_in_flight: bool,
    /// Packets of the last GET answer not handed out yet.
    queue: VecDeque<engineio::Packet>,
    /// Text packets to POST at the next flush.
    out: Vec<Frame>,
    /// Server heartbeats answered so far.
    pings: u64,
}

impl Polling {
    /// Sends the handshake GET; its answer (the open packet) is the first event.
    pub(crate) async fn open(target: &Target) -> Result<Self> {
        let mut polling = Self {
            target: target.clone(),
            query: "EIO=4&transport=polling".to_owned(),
            get: Stream::connect(target).await?,
            get_in_flight: false,
            queue: VecDeque::new(),
            out: Vec::new(),
            pings: 0,
        };
        polling.send_get().await?;
        Ok(polling)
    }

    async fn send_get(&mut self) -> Result<()> {
        let request = request(&self.target, &self.query, None);
        self.get
            .tcp
            .write_all(&request)
            .await
            .context("sending a polling GET")?;
        self.get_in_flight = true;
        Ok(())
    }

    /// Heartbeats answered so far.
    pub(crate) fn pings(&self) -> u64 {
        self.pings
    }

    /// Reads whatever the GET connection has (waiting for at least one byte). Cancel-safe.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        self.get.fill().await
    }

    /// The next event already received, if any. Heartbeats are answered into the POST queue.
    pub(crate) fn next_buffered(&mut self, say: Option<&Say>) -> Result<Option<Event>> {
        loop {
            if let Some(packet) = self.queue.pop_front() {
                if let engineio::Packet::Open(data) = &packet
                    && let Ok(open) = serde_json::from_slice::<crate::client::Open>(data)
                {
                    self.query = format!("EIO=4&transport=polling&sid={}", open.sid);
                }
                match classify_packet(packet, say)? {
                    Text::Event(event) => return Ok(Some(event)),
                    Text::Ping => {
                        self.pings += 1;
                        self.out.push(Frame::pong());
                        continue;
                    }
                }
            }
            let Some((status, body)) = self.get.take()? else {
                return Ok(None);
            };
            self.get_in_flight = false;
            ensure!(
                status == 200,
                "polling GET answered {status}: {:?}",
                String::from_utf8_lossy(&body)
            );
            let packets = engineio::decode_payload(&body).map_err(|e| {
                anyhow!(
                    "bad polling payload ({e}): {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(64)])
                )
            })?;
            self.queue.extend(packets);
        }
    }

    /// Posts the queued packets, then makes sure a GET is held by the server. Not cancel-safe.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let frames = std::mem::take(&mut self.out);
            self.post(&frames).await?;
        }
        if !self.get_in_flight && self.queue.is_empty() {
            self.send_get().await?;
        }
        Ok(())
    }

    /// Sends `frames` in one POST and checks the answer (`200 ok`).
    async fn post(&self, frames: &[Frame]) -> Result<()> {
        let mut body = BytesMut::with_capacity(engineio::payload_len(frames));
        engineio::encode_payload(frames, &mut body);
        let request = request(&self.target, &self.query, Some(&body));
        let (status, answer) = tokio::time::timeout(POST_TIMEOUT, async {
            let mut http = Stream::connect(&self.target).await?;
            http.tcp
                .write_all(&request)
                .await
                .context("sending a polling POST")?;
            http.response().await
        })
        .await
        .map_err(|_| anyhow!("polling POST took over {POST_TIMEOUT:?}"))??;
        ensure!(
            status == 200,
            "polling POST answered {status}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    }

    /// Queues one text packet (an Engine.IO packet, type digit included) and posts it.
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        self.out.push(Frame::text(Bytes::copy_from_slice(text)));
        self.flush().await
    }

    /// Posts the Engine.IO close packet; the held GET is answered and the connection dropped.
    pub(crate) async fn close(mut self) {
        self.out.push(Frame::close());
        let frames = std::mem::take(&mut self.out);
        let _ = self.post(&frames).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::parse("http://127.0.0.1:3000", false).expect("valid")
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n40/x,";
        let head = ok.len() - 5;
        assert_eq!(
            parse_response(ok).expect("valid"),
            Some(Response {
                status: 200,
                body: head..ok.len()
            })
        );
        // Incomplete: head cut, body cut.
        assert_eq!(parse_response(&ok[..20]).expect("partial"), None);
        assert_eq!(parse_response(&ok[..ok.len() - 1]).expect("partial"), None);
        // A second response behind the first is left alone.
        let mut two = ok.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            parse_response(&two).expect("valid").map(|r| r.body.end),
            Some(ok.len())
        );
        let bad_request = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(bad_request)
                .expect("valid")
                .map(|r| r.status),
            Some(400)
        );
        let errors: &[(&[u8], &str)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", "without Content-Length"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "chunked",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                "at most",
            ),
            (b"SSH-2.0\r\n\r\n", "not an HTTP/1.x response"),
            (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        ];
        for &(input, want) in errors {
            let err = parse_response(input).expect_err(want);
            assert!(format!("{err:#}").contains(want), "{want}: {err:#}");
        }
        let long = vec![b'a'; MAX_RESPONSE_HEAD + 1];
        assert!(parse_response(&long).is_err());
    }

    #[test]
    fn requests() {
        let get = request(&target(), "EIO=4&transport=polling", None);
        assert_eq!(
            get,
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\r\n"
        );
        let mut body = BytesMut::new();
        let frames = [Frame::pong(), Frame::text(Bytes::from_static(b"40/chat,"))];
        engineio::encode_payload(&frames, &mut body);
        assert_eq!(&body[..], b"3\x1e40/chat,");
        let post = request(&target(), "EIO=4&transport=polling&sid=s", Some(&body));
        let text = String::from_utf8(post).expect("ascii");
        assert!(text.starts_with("POST /socket.io/?EIO=4&transport=polling&sid=s HTTP/1.1\r\n"));
        assert!(
            text.ends_with("Content-Length: 10\r\n\r\n3\x1e40/chat,"),
            "{text:?}"
        );
    }

    #[test]
    fn batched_payloads_become_events() {
        let say = Say::new("/chat");
        let body = Bytes::from_static(
            b"2\x1e42/chat,[\"say\",{\"room\":\"r\",\"t\":9,\"p\":\"x\"}]\x1e43/chat,1[{\"ok\":true}]\x1e1",
        );
        let mut events = Vec::new();
        let mut pings = 0;
        for packet in engineio::decode_payload(&body).expect("valid payload") {
            match classify_packet(packet, Some(&say)).expect("valid packet") {
                Text::Ping => pings += 1,
                Text::Event(e) => events.push(e),
            }
        }
        assert_eq!(pings, 1);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], Event::Say(9));
        assert!(matches!(&events[1], Event::Packet(p) if p.id == Some(1)));
        assert!(matches!(&events[2], Event::Closed(_)));
        for bad in [&b""[..], b"2\x1e", b"9", b"4\xff"] {
            let decoded = engineio::decode_payload(&Bytes::copy_from_slice(bad));
            assert!(decoded.is_err(), "{bad:?}");
        }
    }
}
