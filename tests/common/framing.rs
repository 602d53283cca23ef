//! What weir sends an upstream, checked with `httparse`: HTTP/1.1 requests
//! back to back, each head carrying weir's forwarding headers and framing its
//! body one way only, each body framed as its head says.

use httparse::Status;

/// The most header lines a forwarded head is expected to have.
const MAX_HEADERS: usize = 256;

/// Checks the bytes one upstream connection received from weir; returns how
/// many request heads arrived whole. The last request may be cut short (weir ends an
/// exchange it gives up on by closing the connection), so the bytes need only
/// be a prefix of well-formed requests: nothing in them may be other than what
/// weir framed. Every head must be HTTP/1.1 with `X-Forwarded-For`, `X-Real-IP`
/// (the client, 127.0.0.1) and `X-Forwarded-Proto: http` once each.
pub fn weir_framed_requests(mut bytes: &[u8]) -> Result<usize, String> {
    let mut heads = 0;
    while !bytes.is_empty() {
        let fail = |what: String| format!("request {}: {what}: {}", heads + 1, excerpt(bytes));
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(bytes) {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) => return Ok(heads),
            Err(e) => return Err(fail(format!("not a request head ({e})"))),
        };
        if req.version != Some(1) {
            return Err(fail(format!("HTTP/1.{:?}", req.version)));
        }
        let values = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .collect()
        };
        for (name, want) in [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
        ] {
            if values(name) != [want] {
                return Err(fail(format!("{name} is {:?}, not {want}", values(name))));
            }
        }
        let body = &bytes[head_len..];
        let framed = match (
            values("content-length").as_slice(),
            values("transfer-encoding").as_slice(),
        ) {
            ([], []) => Some(0),
            ([length], []) => match length.parse::<usize>() {
                Ok(n) if length.bytes().all(|b| b.is_ascii_digit()) => {
                    (body.len() >= n).then_some(n)
                }
                _ => return Err(fail(format!("content-length {length:?}"))),
            },
            ([], [coding]) if coding.eq_ignore_ascii_case("chunked") => {
                chunked_len(body).map_err(&fail)?
            }
            (lengths, codings) => {
                return Err(fail(format!(
                    "framed by content-length {lengths:?} and transfer-encoding {codings:?}"
                )))
            }
        };
        heads += 1;
        let Some(body_len) = framed else {
            return Ok(heads);
        };
        bytes = &body[body_len..];
    }
    Ok(heads)
}

/// The length of the chunked body at the start of `body`, trailers included;
/// `None` when it is cut short.
fn chunked_len(body: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&body[at..]) {
            Ok(Status::Complete(parsed)) => parsed,
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err(format!("bad chunk size at byte {at}")),
        };
        at += size_len;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&body[at..], &mut trailers) {
                Ok(Status::Complete((len, _))) => Ok(Some(at + len)),
                Ok(Status::Partial) => Ok(None),
                Err(e) => Err(format!("bad trailers at byte {at} ({e})")),
            };
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| at.checked_add(size))
            .filter(|end| *end < usize::MAX - 2);
        let Some(end) = end else {
            return Err(format!("chunk of {size} bytes"));
        };
        match body.get(end..end + 2) {
            None => return Ok(None),
            Some(b"\r\n") => at = end + 2,
            Some(other) => return Err(format!("chunk data not followed by CRLF but {other:?}")),
        }
    }
}

/// The start of `bytes`, readable in a failure message.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}
