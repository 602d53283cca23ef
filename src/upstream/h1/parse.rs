//! The response head, read with `httparse`, and how its body is framed
//! (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::decode::Decoder;
use super::encode::{agreed_length, final_coding_is_chunked};
use crate::error::UpstreamError;

/// The largest response head weir reads.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header lines a response head may have (hyper's default too).
pub(super) const MAX_HEADERS: usize = 100;

/// A response head as it arrived.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// The reason phrase, when it is not the status's usual one (kept, as
    /// hyper keeps it, for the client's response).
    pub(super) reason: Option<Bytes>,
    /// Whether the server keeps the connection open after this response:
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `keep-alive`.
    pub(super) keep_alive: bool,
    /// What the `Content-Length` fields say, read as the head was parsed.
    length: Length,
    /// Whether the head has a `Transfer-Encoding` field.
    transfer_encoding: bool,
}

/// What a head's `Content-Length` fields say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// No `Content-Length`.
    Absent,
    /// All the values agree on this length.
    Agreed(u64),
    /// A value that is not a number, or two that differ.
    Invalid,
}

/// Where a header's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// Header names kept from one response of a connection to the next: at most
/// this many, the first ones of a head.
const KEPT_NAMES: usize = 32;

/// What a connection keeps from one response head to parse the next.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Room for the fields, so no response pays for initialising room for a hundred.
    fields: Vec<Field>,
    /// The names of the last head's first fields, as spelled and as parsed.
    /// A server answers in the same shape each time: a name spelled as the
    /// last head spelled it at the same place is that name again, without
    /// being parsed again.
    names: Vec<(Box<[u8]>, HeaderName)>,
}

impl Scratch {
    /// The name of the `i`th field of a head, spelled `raw`.
    fn name(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, UpstreamError> {
        if let Some((spelled, name)) = self.names.get(i) {
            if **spelled == *raw {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw)
            .map_err(|_| UpstreamError::Malformed("invalid header name"))?;
        if i < KEPT_NAMES {
            self.names.truncate(i);
            self.names.push((raw.into(), name.clone()));
        }
        Ok(name)
    }
}

/// Reads a response head at the start of `buf`, taking it out when it is
/// complete; `None` while more bytes are needed. `scratch` is the
/// connection's; the head's headers go into `spare`'s room (taken, cleared),
/// as hyper reuses the request's header map for the response.
pub(super) fn head(
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    spare: &mut HeaderMap,
) -> Result<Option<Head>, UpstreamError> {
    if buf.is_empty() {
        return Ok(None);
    }
    scratch.fields.clear();
    let (len, code, version, reason) = {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => {
                return Err(UpstreamError::Malformed("response head too large"))
            }
            Err(error) => return Err(UpstreamError::Head(error)),
        };
        if len > MAX_HEAD {
            return Err(UpstreamError::Malformed("response head too large"));
        }
        let start = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let from = s.as_ptr() as usize - start;
            (from, from + s.len())
        };
        scratch
            .fields
            .extend(response.headers.iter().map(|header| Field {
                name: at(header.name.as_bytes()),
                value: at(header.value),
            }));
        let code = response.code.unwrap_or_default();
        let usual = StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason());
        let reason = response
            .reason
            .filter(|r| usual != Some(*r))
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        (len, code, response.version, reason)
    };
    let bytes = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| UpstreamError::Malformed("invalid status code"))?;
    let version = match version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = std::mem::take(spare);
    headers.clear();
    // Taken while the names are looked up in the rest of `scratch`.
    let fields = std::mem::take(&mut scratch.fields);
    headers.reserve(fields.len());
    let mut keep_alive = version == Version::HTTP_11;
    let mut close = false;
    // `None` once a value is invalid; `Some(None)` while there is none.
    let mut length = Some(None);
    let mut transfer_encoding = false;
    // The fields framing reads are noted here, on the way, rather than
    // looked up in the map again.
    for (i, field) in fields.iter().enumerate() {
        let name = scratch.name(i, &bytes[field.name.0..field.name.1])?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(field.value.0..field.value.1))
            .map_err(|_| UpstreamError::Malformed("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            length = length.and_then(|l| agreed_length(l, &value));
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
        } else if name == header::CONNECTION {
            close |= has_token(&value, b"close");
            keep_alive |= has_token(&value, b"keep-alive");
        }
        headers.append(name, value);
    }
    // Given back for the next head (an error ends the connection anyway).
    scratch.fields = fields;
    Ok(Some(Head {
        status,
        version,
        headers,
        reason,
        keep_alive: keep_alive && !close,
        length: match length {
            None => Length::Invalid,
            Some(None) => Length::Absent,
            Some(Some(n)) => Length::Agreed(n),
        },
        transfer_encoding,
    }))
}

/// Whether a comma-separated header value lists `token` (any case).
fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the body of a response to a request with `method` is delimited, and
/// whether the connection can carry another request after it (RFC 9112 §6.3).
/// A `Content-Length` that `Transfer-Encoding` overrides is removed, as a
/// proxy must before it forwards the message.
pub(super) fn framing(
    head: &mut Head,
    method: &http::Method,
) -> Result<(Decoder, bool), UpstreamError> {
    let reusable = head.keep_alive;
    // 1. No body, whatever the head says.
    if head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
        || method == http::Method::HEAD
    {
        // A 101's connection is the upgraded protocol's now.
        let reusable = reusable && head.status != StatusCode::SWITCHING_PROTOCOLS;
        return Ok((Decoder::length(0), reusable));
    }
    let headers = &mut head.headers;
    // 3. Transfer-Encoding wins over Content-Length; with both, the message
    // may be a smuggling attempt, so the connection ends with it.
    if head.transfer_encoding {
        let with_length = head.length != Length::Absent;
        if with_length {
            headers.remove(header::CONTENT_LENGTH);
        }
        if head.version == Version::HTTP_10 {
            return Err(UpstreamError::Malformed(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        if final_coding_is_chunked(headers) {
            return Ok((Decoder::chunked(), reusable && !with_length));
        }
        return Ok((Decoder::until_close(), false));
    }
    // 5. Content-Length: several that differ, or one that is no number, are
    // an unrecoverable error.
    match head.length {
        Length::Agreed(len) => Ok((Decoder::length(len), reusable)),
        Length::Invalid => Err(UpstreamError::Malformed("invalid content-length")),
        // 8. Otherwise the body runs until the server closes.
        Length::Absent => Ok((Decoder::until_close(), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Head>, UpstreamError> {
        head(
            &mut BytesMut::from(bytes),
            &mut Scratch::default(),
            &mut HeaderMap::new(),
        )
    }

    fn framed(bytes: &str, method: http::Method) -> Result<(Decoder, bool), UpstreamError> {
        let mut head = parse(bytes.as_bytes())?.ok_or(UpstreamError::Closed)?;
        framing(&mut head, &method)
    }

    fn get(bytes: &str) -> Result<(Decoder, bool), UpstreamError> {
        framed(bytes, http::Method::GET)
    }

    #[test]
    fn a_head_is_read_whole_and_taken_out_of_the_buffer() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nB: x y\r\n\r\nbody"[..]);
        let head = head(&mut buf, &mut Scratch::default(), &mut HeaderMap::new())
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["a"], "1");
        assert_eq!(head.headers["b"], "x y");
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn names_kept_from_the_last_head_are_read_again_only_where_spelled_the_same() {
        let mut scratch = Scratch::default();
        let mut next = |head: &str| {
            let mut buf = BytesMut::from(head.as_bytes());
            let head = super::head(&mut buf, &mut scratch, &mut HeaderMap::new());
            let head = head.expect("valid").expect("complete");
            let names: Vec<String> = head.headers.keys().map(|n| n.to_string()).collect();
            names.join(" ")
        };
        assert_eq!(next("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), "a b");
        assert_eq!(next("HTTP/1.1 200 OK\r\nA: 1\r\nC: 2\r\n\r\n"), "a c");
        assert_eq!(
            next("HTTP/1.1 200 OK\r\nX-Y: 1\r\nA: 2\r\nC: 3\r\nD: 4\r\n\r\n"),
            "x-y a c d"
        );
        assert_eq!(next("HTTP/1.1 200 OK\r\nx-y: 1\r\n\r\n"), "x-y");
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Y\x01: 1\r\n\r\n"[..]);
        let bad = head(&mut buf, &mut scratch, &mut HeaderMap::new());
        assert!(bad.is_err(), "a name is checked wherever it differs");
    }

    #[test]
    fn a_partial_head_waits_and_an_endless_one_is_refused() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nA: 1\r\n")
            .expect("valid")
            .is_none());
        let endless = format!("HTTP/1.1 200 OK\r\nA: {}", "a".repeat(MAX_HEAD));
        assert!(parse(endless.as_bytes()).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
        assert!(parse(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()).is_err());
        assert!(parse(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nA\x01: 1\r\n\r\n").is_err());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let alive = |head: &str| parse(head.as_bytes()).ok().flatten().map(|h| h.keep_alive);
        assert_eq!(alive("HTTP/1.1 200 OK\r\n\r\n"), Some(true));
        assert_eq!(
            alive("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            alive("HTTP/1.1 200 OK\r\nConnection: x, Close\r\n\r\n"),
            Some(false)
        );
        assert_eq!(alive("HTTP/1.0 200 OK\r\n\r\n"), Some(false));
        let ka = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(alive(ka), Some(true));
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        let (d, reuse) = get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").expect("ok");
        assert_eq!((d, reuse), (Decoder::length(5), true));
        let same = get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(same.expect("same values"), (Decoder::length(5), true));
        for bad in [
            "5\r\nContent-Length: 6",
            "+5",
            "5 5",
            "",
            "0x5",
            "99999999999999999999",
        ] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(get(&head).is_err(), "{bad}");
        }
        let te = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").expect("ok");
        assert_eq!(te, (Decoder::chunked(), true));
        let both = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(get(both).expect("ok"), (Decoder::chunked(), false));
        let mut head = parse(both.as_bytes()).expect("ok").expect("whole");
        framing(&mut head, &http::Method::GET).expect("ok");
        assert!(
            !head.headers.contains_key(header::CONTENT_LENGTH),
            "removed"
        );
        let invalid = "HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(get(invalid).expect("ok"), (Decoder::chunked(), false));
        let gzip = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(gzip.expect("ok"), (Decoder::until_close(), false));
        let two =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(get(two).expect("ok"), (Decoder::chunked(), true));
        assert!(get("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        let close = get("HTTP/1.1 200 OK\r\n\r\n").expect("ok");
        assert_eq!(close, (Decoder::until_close(), false));
    }

    #[test]
    fn some_responses_never_have_a_body() {
        for status in ["204 No Content", "304 Not Modified"] {
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(get(&head).expect("ok"), (Decoder::length(0), true));
        }
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let framed = framed(head, http::Method::HEAD).expect("ok");
        assert_eq!(framed, (Decoder::length(0), true));
        let upgrade = get("HTTP/1.1 101 Switching Protocols\r\n\r\n").expect("ok");
        assert_eq!(upgrade, (Decoder::length(0), false));
    }
}
