//! The head of a long-polling request, parsed in place from the bytes of one read: what the
//! direct polling path (`transport::direct`) needs to decide whether it serves the request
//! itself or hands the connection to hyper.
//!
//! Pure: bytes in, a borrowed view out; no allocation, no I/O. Never panics.
//!
//! Invariants: a [`Head`] is only produced for a complete HTTP/1.1 head whose request target is in
//! origin form (`/path?query`); [`Head::len`] is the head's length in `buf`, at most `buf.len()`.
//! Anything hyper must decide (a body framing other than one `Content-Length`, `Expect`,
//! `Upgrade`, a repeated `Origin`) sets [`Head::unusual`]: the direct path never serves those.

pub use httparse::{EMPTY_HEADER, Header};

/// The request methods the direct path tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// Anything else (`OPTIONS`, `HEAD`, …): hyper serves it.
    Other,
}

/// Outcome of [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'b> {
    /// A complete head.
    Complete(Head<'b>),
    /// More bytes are needed.
    Partial,
    /// Not a head the direct path takes (malformed, HTTP/1.0, too many headers, another request
    /// target form): hyper answers it.
    Invalid,
}

/// A complete request head (borrowed from the buffer it was parsed from).
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'b> {
    /// The method.
    pub method: Method,
    /// The request target's path.
    pub path: &'b str,
    /// The request target's query, without the `?`.
    pub query: Option<&'b str>,
    /// Bytes of the head, its final empty line included.
    pub len: usize,
    /// The one `Content-Length`, if given.
    pub content_length: Option<u64>,
    /// The request asks for the connection to close after the response (`Connection: close`).
    pub close: bool,
    /// The request was passed on by another gateway (it has `x-switchboard-forwarded`).
    pub forwarded: bool,
    /// The `Origin` header's value.
    pub origin: Option<&'b [u8]>,
    /// Something only hyper serves: `Transfer-Encoding`, `Expect`, `Upgrade` (or
    /// `Connection: upgrade`), a repeated or malformed `Content-Length`, a repeated `Origin`.
    pub unusual: bool,
    /// How many headers the head has (the first this-many of the array given to [`parse`]).
    pub headers: usize,
}

/// Parses the request head at the start of `buf`, with room for `headers.len()` headers (more:
/// [`Parse::Invalid`]).
pub fn parse<'b>(buf: &'b [u8], headers: &mut [httparse::Header<'b>]) -> Parse<'b> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Invalid,
    };
    let (Some(method), Some(1), Some(target)) = (req.method, req.version, req.path) else {
        return Parse::Invalid;
    };
    if !target.starts_with('/') {
        return Parse::Invalid;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let mut head = Head {
        method,
        path,
        query,
        len,
        content_length: None,
        close: false,
        forwarded: false,
        origin: None,
        unusual: false,
        headers: req.headers.len(),
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (head.content_length, digits(h.value)) {
                (None, Some(n)) => head.content_length = Some(n),
                _ => head.unusual = true,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    head.unusual = true;
                }
            }
        } else if name.eq_ignore_ascii_case("origin") {
            if head.origin.is_some() {
                head.unusual = true;
            }
            head.origin = Some(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            head.unusual = true;
        } else if name.eq_ignore_ascii_case(crate::forward::FORWARDED_HEADER) {
            head.forwarded = true;
        }
    }
    Parse::Complete(head)
}

/// A `Content-Length` value: ASCII digits only, at most 18 of them (no overflow).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(buf: &[u8]) -> Parse<'_> {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        // The view borrows only `buf`: re-parse with a local array, return the owned facts.
        match parse(buf, &mut headers) {
            Parse::Complete(h) => Parse::Complete(Head { ..h }),
            Parse::Partial => Parse::Partial,
            Parse::Invalid => Parse::Invalid,
        }
    }

    #[test]
    fn heads() {
        let get = b"GET /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: h\r\n\
                    Origin: https://a.example\r\nAccept-Encoding: gzip\r\n\r\n";
        let Parse::Complete(h) = parsed(get) else {
            panic!("complete");
        };
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/socket.io/");
        assert_eq!(h.query, Some("EIO=4&transport=polling&sid=x"));
        assert_eq!(h.len, get.len());
        assert_eq!(h.origin, Some(&b"https://a.example"[..]));
        assert_eq!(h.headers, 3);
        assert!(!h.unusual && !h.close && !h.forwarded);
        assert_eq!(h.content_length, None);

        // (head, method, content length, close, unusual)
        type Case = (&'static [u8], Method, Option<u64>, bool, bool);
        let table: &[Case] = &[
            (
                b"POST /a HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n",
                Method::Post,
                Some(12),
                true,
                false,
            ),
            (
                b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Method::Post,
                Some(1),
                false,
                true,
            ),
            (
                b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Method::Post,
                None,
                false,
                true,
            ),
            (
                b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Method::Post,
                None,
                false,
                true,
            ),
            (
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Post,
                None,
                false,
                true,
            ),
            (
                b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                Method::Post,
                Some(1),
                false,
                true,
            ),
            (
                b"GET /a HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Method::Get,
                None,
                false,
                true,
            ),
            (
                b"GET /a HTTP/1.1\r\nOrigin: a\r\norigin: b\r\n\r\n",
                Method::Get,
                None,
                false,
                true,
            ),
            (
                b"OPTIONS /a HTTP/1.1\r\n\r\n",
                Method::Other,
                None,
                false,
                false,
            ),
            (
                b"GET /a HTTP/1.1\r\nCONNECTION:  Close \r\n\r\n",
                Method::Get,
                None,
                true,
                false,
            ),
        ];
        for (buf, method, length, close, unusual) in table {
            let Parse::Complete(h) = parsed(buf) else {
                panic!("{:?}", String::from_utf8_lossy(buf));
            };
            let got = (h.method, h.content_length, h.close, h.unusual);
            assert_eq!(
                got,
                (*method, *length, *close, *unusual),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }

        let others: &[(&[u8], Parse<'_>)] = &[
            (b"GET /a HTTP/1.1\r\nHost: h\r\n", Parse::Partial),
            (b"GET /a HTTP/1.0\r\n\r\n", Parse::Invalid),
            (b"GET http://h/a HTTP/1.1\r\n\r\n", Parse::Invalid),
            (b"GET * HTTP/1.1\r\n\r\n", Parse::Invalid),
            (b"\x00\x01", Parse::Invalid),
            (
                b"GET /a HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\nh: 1\r\ni: 1\r\n\r\n",
                Parse::Invalid,
            ),
        ];
        for (buf, want) in others {
            assert_eq!(&parsed(buf), want, "{:?}", String::from_utf8_lossy(buf));
        }
    }
}
