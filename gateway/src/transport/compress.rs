//! Compression of long-polling responses, as Node's engine.io does it (`httpCompression`, on by
//! default with a threshold of 1 024 bytes): a GET's payload of at least the threshold is
//! compressed with gzip or deflate (zlib format), whichever the request's `Accept-Encoding`
//! prefers (gzip on a tie, as Node's `accepts(req).encodings(["gzip", "deflate"])`), and sent
//! with `Content-Encoding`; smaller ones, and requests that accept neither, go as they are.

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;

/// zlib level of polling responses: the same as permessage-deflate's (docs/scaling.md).
const LEVEL: u32 = 1;

/// A content coding we can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coding {
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib format, RFC 1950).
    Deflate,
}

impl Coding {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }
}

/// The coding `Accept-Encoding` prefers among gzip and deflate: the higher quality, gzip on a
/// tie; `*` stands for a coding not named; `q=0` refuses. `None`: neither is acceptable.
pub(super) fn preferred<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Coding> {
    // Quality in thousandths, per coding: gzip, deflate, `*`.
    let mut q: [Option<u16>; 3] = [None; 3];
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let index = match parts.next() {
                Some(c) if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => 0,
                Some(c) if c.eq_ignore_ascii_case("deflate") => 1,
                Some("*") => 2,
                _ => continue,
            };
            let mut quality = Some(1000);
            for param in parts {
                if let Some((name, v)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    quality = parse_quality(v.trim());
                }
            }
            if let Some(quality) = quality {
                q[index] = Some(q[index].map_or(quality, |old| old.max(quality)));
            }
        }
    }
    let gzip = q[0].or(q[2]).unwrap_or(0);
    let deflate = q[1].or(q[2]).unwrap_or(0);
    match (gzip, deflate) {
        (0, 0) => None,
        (g, d) if g >= d => Some(Coding::Gzip),
        _ => Some(Coding::Deflate),
    }
}

/// A `q` value (RFC 9110 section 12.4.2) in thousandths; `None` if malformed (the item is ignored).
fn parse_quality(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// `data` compressed with `coding`.
pub(super) fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() / 3 + 64);
    let level = Compression::new(LEVEL);
    // Writing into a Vec cannot fail.
    match coding {
        Coding::Gzip => {
            let mut e = GzEncoder::new(out, level);
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Coding::Deflate => {
            let mut e = ZlibEncoder::new(out, level);
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
    }
}

/// Marks a polling response whose frames all said
/// [`Compress::Off`](switchboard_codec::engineio::Compress::Off): it is sent as it is, whatever
/// its size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Uncompressed;

/// Compresses a polling GET's successful response if it is at least `threshold` bytes long, the
/// request accepts a coding (`accept`: the request's `Accept-Encoding` values) and the response
/// is not marked [`Uncompressed`].
pub(super) async fn response(
    threshold: Option<usize>,
    accept: Option<Coding>,
    res: Response<Body>,
) -> Response<Body> {
    let (Some(threshold), Some(coding)) = (threshold, accept) else {
        return res;
    };
    if res.status() != StatusCode::OK || res.extensions().get::<Uncompressed>().is_some() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let data: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if data.len() < threshold {
        return Response::from_parts(parts, Full::new(data));
    }
    let encoded = encode(coding, &data);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.name()),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(Bytes::from(encoded)))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn accept_encoding_vectors() {
        use Coding::*;
        let table: &[(&[&str], Option<Coding>)] = &[
            (&[], None),
            (&["identity"], None),
            (&["br"], None),
            (&["gzip"], Some(Gzip)),
            (&["deflate"], Some(Deflate)),
            (&["gzip, deflate, br"], Some(Gzip)),
            (&["deflate, gzip"], Some(Gzip)),
            (&["GZIP"], Some(Gzip)),
            (&["x-gzip"], Some(Gzip)),
            (&["gzip;q=0.5, deflate"], Some(Deflate)),
            (&["gzip;q=0, deflate;q=0"], None),
            (&["gzip;q=0"], None),
            (&["*"], Some(Gzip)),
            (&["*;q=0"], None),
            (&["gzip;q=0, *"], Some(Deflate)),
            (&["deflate;q=0.001"], Some(Deflate)),
            (&["gzip;q=1.0"], Some(Gzip)),
            (&["gzip;q=1.5"], None),
            (&["gzip;q=abc, deflate"], Some(Deflate)),
            (&["gzip;q=0.1234"], None),
            (&["br", "deflate"], Some(Deflate)),
        ];
        for (values, want) in table {
            let values: Vec<HeaderValue> = values
                .iter()
                .map(|v| HeaderValue::from_str(v).expect("value"))
                .collect();
            assert_eq!(
                preferred(values.iter().map(HeaderValue::as_bytes)),
                *want,
                "{values:?}"
            );
        }
    }

    fn body(res: Response<Body>) -> (Option<String>, Vec<u8>) {
        let encoding = res
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let data = futures_util::FutureExt::now_or_never(res.into_body().collect())
            .expect("ready")
            .expect("infallible")
            .to_bytes();
        (encoding, data.to_vec())
    }

    #[test]
    fn responses_at_the_threshold_are_compressed() {
        let payload = "4{\"text\":\"hello\"}\u{1e}".repeat(200);
        let plain = |len: usize| Response::new(Full::new(Bytes::from(payload[..len].to_owned())));
        let now = |f| futures_util::FutureExt::now_or_never(f).expect("ready");

        // Below the threshold: as it is.
        let (enc, data) = body(now(response(Some(1024), Some(Coding::Gzip), plain(1023))));
        assert_eq!((enc, data), (None, payload.as_bytes()[..1023].to_vec()));
        // Off, or nothing accepted: as it is.
        let (enc, _) = body(now(response(None, Some(Coding::Gzip), plain(2000))));
        assert_eq!(enc, None);
        let (enc, _) = body(now(response(Some(0), None, plain(2000))));
        assert_eq!(enc, None);
        // An error status: as it is.
        let mut err = plain(2000);
        *err.status_mut() = StatusCode::BAD_REQUEST;
        let (enc, _) = body(now(response(Some(0), Some(Coding::Gzip), err)));
        assert_eq!(enc, None);

        // At the threshold: compressed, and it decodes back.
        let (enc, data) = body(now(response(Some(1024), Some(Coding::Gzip), plain(1024))));
        assert_eq!(enc.as_deref(), Some("gzip"));
        assert!(data.len() < 300, "{} bytes", data.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_string(&mut back)
            .expect("gzip");
        assert_eq!(back, payload[..1024]);

        let (enc, data) = body(now(response(Some(10), Some(Coding::Deflate), plain(2000))));
        assert_eq!(enc.as_deref(), Some("deflate"));
        let mut back = String::new();
        flate2::read::ZlibDecoder::new(&data[..])
            .read_to_string(&mut back)
            .expect("zlib");
        assert_eq!(back, payload[..2000]);
    }
}
