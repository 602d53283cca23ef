use std::convert::Infallible;
use std::task::Waker;

use futures_util::stream;
use http::Request;
use http_body::Frame;
use http_body_util::{Empty, Full, StreamBody};

use super::*;

/// Records each write call whole, so tests see what went out together.
#[derive(Default)]
struct Wire {
    writes: Vec<Vec<u8>>,
}

impl Wire {
    fn all(&self) -> String {
        String::from_utf8_lossy(&self.writes.concat()).into_owned()
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().writes.push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let len = all.len();
        self.get_mut().writes.push(all);
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Frames = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn frames(data: &[&'static str], trailers: Option<HeaderMap>) -> Frames {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = data
        .iter()
        .map(|d| Ok(Frame::data(Bytes::from_static(d.as_bytes()))))
        .collect();
    frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
    StreamBody::new(stream::iter(frames))
}

/// Frames `body` for a request with `headers`, encodes it and writes it all:
/// what went out, write by write, or the error.
fn send<B>(headers: &[(&str, &str)], body: B) -> Result<(HeaderMap, Wire), String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut req = Request::post("/up?x=1");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let (mut parts, body) = req.body(body).map_err(|e| e.to_string())?.into_parts();
    let framing = framing(&mut parts.headers, &body).map_err(|e| e.to_string())?;
    let mut encoded = BytesMut::new();
    head(&parts, None, &mut encoded);
    let mut writer = Writer::new(encoded, body, framing);
    let mut wire = Wire::default();
    let mut cx = Context::from_waker(Waker::noop());
    match writer.poll_write(&mut cx, &mut wire) {
        Poll::Ready(Ok(())) => Ok((parts.headers, wire)),
        Poll::Ready(Err(WriteError::Body(e))) => Err(e.to_string()),
        Poll::Ready(Err(WriteError::Io(e))) => Err(e.to_string()),
        Poll::Pending => Err("pending".into()),
    }
}

#[test]
fn the_forwarding_headers_follow_the_requests_own() {
    let (parts, ()) = Request::get("/a")
        .header("host", "a.test")
        .body(())
        .expect("request")
        .into_parts();
    let client = HeaderValue::from_static("192.0.2.7");
    let mut encoded = BytesMut::new();
    head(&parts, Some(&Forwarded::for_client(&client)), &mut encoded);
    assert_eq!(
        encoded,
        "GET /a HTTP/1.1\r\nhost: a.test\r\nx-real-ip: 192.0.2.7\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n\r\n"
    );
}

#[test]
fn the_head_goes_as_given_with_the_request_line_first() {
    let (_, wire) = send(&[("host", "a.test"), ("x-a", "1")], Empty::<Bytes>::new()).expect("sent");
    assert_eq!(
        wire.all(),
        "POST /up?x=1 HTTP/1.1\r\nhost: a.test\r\nx-a: 1\r\n\r\n"
    );
    let (_, wire) = send(&[("x-a", "1")], Empty::<Bytes>::new()).expect("sent");
    assert!(
        !wire.all().contains("host"),
        "no Host unless the request has one"
    );
}

#[test]
fn a_body_of_known_size_gets_a_content_length_and_goes_with_the_head() {
    let (headers, wire) = send(&[], Full::new(Bytes::from_static(b"hello"))).expect("sent");
    assert_eq!(headers["content-length"], "5");
    assert_eq!(wire.writes.len(), 1, "one write: {:?}", wire.all());
    assert!(
        wire.all().ends_with("\r\ncontent-length: 5\r\n\r\nhello"),
        "{}",
        wire.all()
    );
}

#[test]
fn a_body_of_unknown_size_is_chunked_with_its_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("1"));
    trailers.insert("content-length", HeaderValue::from_static("9"));
    let (headers, wire) = send(&[], frames(&["hello", " world"], Some(trailers))).expect("sent");
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert!(
        wire.all()
            .ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n"),
        "{}",
        wire.all()
    );
    let (_, wire) = send(&[], frames(&["abc"], None)).expect("sent");
    assert!(
        wire.all().ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{}",
        wire.all()
    );
}

#[test]
fn the_requests_own_framing_is_kept_and_chunked_wins() {
    let body = || frames(&["hello"], None);
    let (headers, wire) = send(&[("content-length", "5")], body()).expect("sent");
    assert_eq!(headers["content-length"], "5");
    assert!(wire.all().ends_with("\r\n\r\nhello"), "{}", wire.all());
    let te_and_cl = [("transfer-encoding", "chunked"), ("content-length", "5")];
    let (headers, wire) = send(&te_and_cl, body()).expect("sent");
    assert!(headers.get("content-length").is_none());
    assert!(
        wire.all().ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{}",
        wire.all()
    );
    let (headers, _) = send(&[("transfer-encoding", "gzip")], body()).expect("sent");
    let codings: Vec<_> = headers.get_all("transfer-encoding").iter().collect();
    assert_eq!(codings, ["gzip", "chunked"]);
}

#[test]
fn a_body_that_breaks_its_length_is_an_error_never_sent_wrong() {
    let long = send(&[("content-length", "3")], frames(&["hello"], None));
    assert!(long.is_err(), "{:?}", long.map(|(_, w)| w.all()));
    let short = send(&[("content-length", "9")], frames(&["hello"], None));
    assert!(short.is_err());
    let empty = send(&[("content-length", "9")], Empty::<Bytes>::new());
    assert!(empty.is_err());
    let bad = send(&[("content-length", "x")], frames(&["hello"], None));
    assert!(bad.is_err());
    let (headers, _) = send(&[("content-length", "0")], Empty::<Bytes>::new()).expect("sent");
    assert_eq!(headers["content-length"], "0");
}

#[test]
fn a_bodiless_request_sends_no_framing_header() {
    let (headers, wire) =
        send(&[("transfer-encoding", "chunked")], Empty::<Bytes>::new()).expect("sent");
    assert!(headers.get("transfer-encoding").is_none());
    assert!(wire.all().ends_with("\r\n\r\n"));
}

#[test]
fn large_chunks_are_written_from_their_own_buffers() {
    static BIG: [u8; 4096] = [b'x'; 4096];
    let big = std::str::from_utf8(&BIG).unwrap_or_default();
    let (_, wire) = send(&[], frames(&[big, big], None)).expect("sent");
    let all = wire.all();
    assert!(all.contains("\r\n\r\n1000\r\nxxxx"), "{}", &all[..200]);
    assert!(all.ends_with("xxxx\r\n0\r\n\r\n"));
    let body = all.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(body.matches('x').count(), 8192);
}
