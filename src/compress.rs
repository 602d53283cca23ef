//! Response compression for routes with `compress = true`.
//!
//! # What is compressed
//!
//! A response is compressed when all of these hold:
//! - the client accepts gzip, br or zstd ([`negotiate`]) and the request is not `HEAD`;
//! - the status is not 1xx, 204, 206 or 304;
//! - it has no `Content-Encoding` (already encoded), no `Content-Range` and
//!   no `Cache-Control: no-transform`;
//! - its `Content-Type` is text-like ([`compressible_type`]);
//! - its `Content-Length`, when declared, is at least [`MIN_LENGTH`]; a body
//!   of unknown length (chunked) is compressed.
//!
//! A compressed response loses `Content-Length` and `Accept-Ranges`, gets
//! `Content-Encoding`, and a strong `ETag` is weakened (`W/`): the bytes
//! differ from the upstream's. Every response that could be compressed
//! carries `Vary: Accept-Encoding`, also when this client took it plain, so
//! caches keep the two apart.
//!
//! # How
//!
//! The upstream body is streamed through an async-compression encoder
//! frame by frame, never buffered whole; when the upstream pauses, the
//! encoder flushes what it has, so server-sent events and other slow streams
//! reach the client as they come. Trailers follow the compressed data.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame};
use tokio_util::io::{poll_read_buf, StreamReader};

use crate::body::BoxError;
use crate::upstream::UpstreamBody;

/// Responses declared shorter than this are sent as they are: the
/// encoding's own overhead and the CPU would buy next to nothing.
pub const MIN_LENGTH: u64 = 1024;

/// gzip level: 5 keeps most of level 6's ratio on text at a clearly lower
/// cost (nginx's default, 1, gives up a lot of ratio for a small saving).
const GZIP_LEVEL: i32 = 5;
/// brotli level: 4 is the fast end that still beats gzip's ratio; brotli's
/// default (11) is meant for precompressed static files, far too slow per request.
const BROTLI_LEVEL: i32 = 4;
/// zstd level: its default, 3, which beats gzip's ratio at a fraction of its cost.
const ZSTD_LEVEL: i32 = 3;

/// A content coding weir can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip`.
    Gzip,
    /// `br`.
    Br,
    /// `zstd`.
    Zstd,
}

/// The order among codings a client rates equally, best first: zstd beats
/// gzip's ratio at several times its speed and decompresses fastest; br at
/// level 4 compresses about as well as zstd at 3 but costs more CPU; gzip is
/// what every client has.
pub const PREFERENCE: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

impl Coding {
    /// Its `Content-Encoding` token.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding an `Accept-Encoding` token names, if weir can produce it.
    fn from_token(token: &str) -> Option<Self> {
        [Coding::Gzip, Coding::Br, Coding::Zstd]
            .into_iter()
            .find(|c| token.eq_ignore_ascii_case(c.name()))
            // RFC 9110 §8.4.1.3: `x-gzip` is the same coding.
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Coding::Gzip))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a request allows its response, decided before forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The route does not compress: the response is not touched.
    Off,
    /// The route compresses, this client gets the response plain (it
    /// accepts no coding weir has, or it is a `HEAD`); `Vary` is still added.
    Plain,
    /// Compress with this coding when the response qualifies.
    Encode(Coding),
}

impl Plan {
    /// The plan for a request with `method` and `headers` on a route that
    /// compresses when `compress` is set.
    pub fn for_request(compress: bool, method: &Method, headers: &HeaderMap) -> Self {
        if !compress {
            return Plan::Off;
        }
        if method == Method::HEAD {
            return Plan::Plain;
        }
        negotiate(headers).map_or(Plan::Plain, Plan::Encode)
    }
}

/// The coding to answer with, from the client's `Accept-Encoding`: the one
/// with the highest q-value, ties broken by [`PREFERENCE`]; `None` without
/// the header, when every coding weir has is refused (`q=0`), or when the
/// client rates `identity` above all of them.
///
/// A coding's q-value is its own entry's, else that of `*`, else 0; a coding
/// listed twice gets its lowest; an entry whose q-value cannot be read counts
/// as a refusal.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    // q-values in thousandths, by `Coding::index`.
    let mut listed: [Option<u16>; 3] = [None; 3];
    let mut star = None;
    let mut identity = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for item in text.split(',') {
            let mut params = item.split(';');
            let token = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1000), |(_, v)| qvalue(v.trim()))
                .unwrap_or(0);
            let slot = if token == "*" {
                &mut star
            } else if token.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if let Some(coding) = Coding::from_token(token) {
                &mut listed[coding.index()]
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old: u16| old.min(q)));
        }
    }
    let mut best: Option<(u16, Coding)> = None;
    for coding in PREFERENCE {
        let q = listed[coding.index()].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(top, _)| q > top) {
            best = Some((q, coding));
        }
    }
    // `identity` wins only when the client says it prefers it: unlisted, it
    // ranks below any coding the client asked for.
    best.filter(|&(q, _)| identity.is_none_or(|i| i <= q))
        .map(|(_, coding)| coding)
}

/// An RFC 9110 §12.4.2 qvalue in thousandths: `0`, `0.5`, `1`, `1.000`.
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match int {
        "1" => frac.bytes().all(|b| b == b'0').then_some(1000),
        "0" => Some(
            frac.bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0, |q, b| q * 10 + u16::from(b - b'0')),
        ),
        _ => None,
    }
}

/// Whether a media type is worth compressing: text, JSON, JavaScript, XML,
/// SVG, WebAssembly and uncompressed fonts. Images, audio, video, archives
/// and woff2 fonts are compressed already.
pub fn compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    match top {
        "text" => true,
        "application" => {
            matches!(
                sub,
                "json"
                    | "x-ndjson"
                    | "javascript"
                    | "x-javascript"
                    | "ecmascript"
                    | "xml"
                    | "wasm"
                    | "graphql"
                    | "x-www-form-urlencoded"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        "image" => matches!(sub, "svg+xml" | "x-icon" | "vnd.microsoft.icon" | "bmp"),
        "font" => matches!(sub, "ttf" | "otf"),
        _ => false,
    }
}

/// Whether the upstream's response (`status`, `headers`) may be compressed
/// at all, whatever the client accepts.
pub fn compressible(status: StatusCode, headers: &HeaderMap) -> bool {
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return false;
    }
    if headers.contains_key(header::CONTENT_ENCODING) || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    if no_transform {
        return false;
    }
    let short = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len < MIN_LENGTH);
    !short
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(compressible_type)
}

/// Rewrites the head of a response planned as `plan`; returns the coding to
/// compress its body with, if any.
pub fn rewrite_head(plan: Plan, status: StatusCode, headers: &mut HeaderMap) -> Option<Coding> {
    if plan == Plan::Off || !compressible(status, headers) {
        return None;
    }
    add_vary(headers);
    let Plan::Encode(coding) = plan else {
        return None;
    };
    headers.remove(header::CONTENT_LENGTH);
    // A range of the compressed bytes is not something weir can serve.
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.name()),
    );
    if let Some(etag) = headers.get_mut(header::ETAG) {
        weaken(etag);
    }
    Some(coding)
}

/// Adds `Accept-Encoding` to `Vary`, merged into one field with what the
/// upstream listed; left alone when it is listed already or `Vary: *`.
fn add_vary(headers: &mut HeaderMap) {
    let mut merged = String::new();
    for value in headers.get_all(header::VARY) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        let covered = text.split(',').map(str::trim).any(|token| {
            token == "*" || token.eq_ignore_ascii_case(header::ACCEPT_ENCODING.as_str())
        });
        if covered {
            return;
        }
        if !text.trim().is_empty() {
            merged.push_str(text.trim());
            merged.push_str(", ");
        }
    }
    if merged.is_empty() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    merged.push_str("Accept-Encoding");
    // Made of valid header values and a constant, so always valid.
    if let Ok(value) = HeaderValue::from_str(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// A strong entity tag made weak (`"x"` → `W/"x"`): the compressed body is
/// not byte-for-byte the entity the upstream tagged.
fn weaken(etag: &mut HeaderValue) {
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            *etag = value;
        }
    }
}

/// Room kept free in the output buffer for the encoder to write into.
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Below this much free room the output buffer gets a new chunk.
const MIN_SPARE: usize = 2 * 1024;

/// An upstream body, compressed as it streams.
pub struct Compressed<B = UpstreamBody> {
    encoder: Encoder<B>,
    /// Compressed bytes not yet handed out; split off as each frame.
    out: BytesMut,
    /// The encoder has written its last byte (or failed).
    done: bool,
}

impl<B> std::fmt::Debug for Compressed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressed")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The encoder for each coding, reading the upstream's data.
// brotli keeps ~5 KiB inline where the others keep pointers; the body is
// boxed once whole, and next to the codecs' own heap state (hundreds of KiB
// for gzip's window and hash chains) the difference is noise, while boxing
// the variant would cost every br response a second allocation.
#[allow(clippy::large_enum_variant)]
enum Encoder<B> {
    Gzip(GzipEncoder<StreamReader<Frames<B>, Bytes>>),
    Br(BrotliEncoder<StreamReader<Frames<B>, Bytes>>),
    Zstd(ZstdEncoder<StreamReader<Frames<B>, Bytes>>),
}

impl<B> Encoder<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn frames(&self) -> &Frames<B> {
        match self {
            Encoder::Gzip(e) => e.get_ref().get_ref(),
            Encoder::Br(e) => e.get_ref().get_ref(),
            Encoder::Zstd(e) => e.get_ref().get_ref(),
        }
    }

    fn frames_mut(&mut self) -> &mut Frames<B> {
        match self {
            Encoder::Gzip(e) => e.get_mut().get_mut(),
            Encoder::Br(e) => e.get_mut().get_mut(),
            Encoder::Zstd(e) => e.get_mut().get_mut(),
        }
    }

    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Encoder::Gzip(e) => poll_read_buf(Pin::new(e), cx, out),
            Encoder::Br(e) => poll_read_buf(Pin::new(e), cx, out),
            Encoder::Zstd(e) => poll_read_buf(Pin::new(e), cx, out),
        }
    }
}

impl<B> Compressed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// `body` (after `first`, its frame taken early if any) compressed with `coding`.
    pub fn new(body: B, first: Option<Box<Frame<Bytes>>>, coding: Coding) -> Self {
        let frames = StreamReader::new(Frames {
            first,
            body,
            trailers: None,
        });
        let encoder = match coding {
            Coding::Gzip => Encoder::Gzip(GzipEncoder::with_quality(
                frames,
                Level::Precise(GZIP_LEVEL),
            )),
            Coding::Br => Encoder::Br(BrotliEncoder::with_quality(
                frames,
                Level::Precise(BROTLI_LEVEL),
            )),
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::with_quality(
                frames,
                Level::Precise(ZSTD_LEVEL),
            )),
        };
        Self {
            encoder,
            out: BytesMut::new(),
            done: false,
        }
    }
}

impl<B> Body for Compressed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.done {
            if this.out.capacity() - this.out.len() < MIN_SPARE {
                this.out.reserve(OUTPUT_CHUNK);
            }
            match ready!(this.encoder.poll_read_buf(cx, &mut this.out)) {
                Ok(0) => this.done = true,
                Ok(_) => return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze())))),
                Err(error) => {
                    this.done = true;
                    // A body cut off has no trailers to send.
                    this.encoder.frames_mut().trailers = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
        let trailers = this.encoder.frames_mut().trailers.take();
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.encoder.frames().trailers.is_none()
    }
}

/// The upstream body as a stream of its data for the encoder to read; its
/// trailers are kept to be sent after the compressed data.
struct Frames<B> {
    /// A frame taken before the response head went out.
    first: Option<Box<Frame<Bytes>>>,
    body: B,
    trailers: Option<HeaderMap>,
}

impl<B> Stream for Frames<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Each turn consumes a frame of the body.
        loop {
            let frame = match this.first.take() {
                Some(frame) => *frame,
                None => match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => {
                        return Poll::Ready(Some(Err(io::Error::other(error.into()))))
                    }
                    None => return Poll::Ready(None),
                },
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => return Poll::Ready(Some(Ok(data))),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        this.trailers = Some(trailers);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accept(value: &str) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("value"),
        );
        negotiate(&headers).map(Coding::name)
    }

    #[test]
    fn the_client_s_q_values_choose_the_coding() {
        for (value, chosen) in [
            ("gzip", Some("gzip")),
            ("gzip, deflate, br, zstd", Some("zstd")),
            ("gzip, deflate, br", Some("br")),
            ("br;q=0.5, gzip", Some("gzip")),
            ("zstd;q=0, br;q=0, gzip;q=0.001", Some("gzip")),
            ("gzip;q=0", None),
            ("deflate", None),
            ("", None),
            ("*", Some("zstd")),
            ("*;q=0", None),
            ("*;q=0, gzip", Some("gzip")),
            ("*, zstd;q=0", Some("br")),
            ("identity", None),
            ("identity;q=1, gzip;q=0.5", None),
            ("identity;q=0.5, gzip", Some("gzip")),
            ("gzip, identity", Some("gzip")),
            ("GZIP;Q=1.000", Some("gzip")),
            ("x-gzip", Some("gzip")),
            ("gzip;q=2", None),
            ("gzip;q=0.5000", None),
            ("gzip;q=abc, br", Some("br")),
            ("gzip, gzip;q=0", None),
            ("br ; q=0.8 , gzip ; q=0.9", Some("gzip")),
        ] {
            assert_eq!(accept(value), chosen, "{value:?}");
        }
    }

    #[test]
    fn q_values_read_as_thousandths() {
        for (text, q) in [
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.123", Some(123)),
            ("0.1234", None),
            (".5", None),
            ("-1", None),
        ] {
            assert_eq!(qvalue(text), q, "{text}");
        }
    }

    #[test]
    fn text_like_types_are_compressible() {
        for t in [
            "text/html",
            "text/html; charset=utf-8",
            "Text/CSS",
            "application/json",
            "application/problem+json",
            "application/javascript",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
        ] {
            assert!(compressible_type(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "font/woff2",
            "video/mp4",
            "",
            "json",
        ] {
            assert!(!compressible_type(t), "{t}");
        }
    }

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_compressed_head_varies_drops_its_length_and_weakens_its_tag() {
        let mut h = head(&[
            ("content-type", "application/json"),
            ("content-length", "5000"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
            ("vary", "Cookie"),
            ("accept-ranges", "bytes"),
        ]);
        let coding = rewrite_head(Plan::Encode(Coding::Br), StatusCode::OK, &mut h);
        assert_eq!(coding, Some(Coding::Br));
        assert_eq!(h["content-encoding"], "br");
        assert_eq!(h["etag"], "W/\"abc\"");
        assert_eq!(h["vary"], "Origin, Cookie, Accept-Encoding");
        assert_eq!(h.get_all("vary").iter().count(), 1);
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("accept-ranges"));

        let mut h = head(&[("content-type", "text/html"), ("etag", "W/\"x\"")]);
        rewrite_head(Plan::Encode(Coding::Gzip), StatusCode::OK, &mut h);
        assert_eq!(h["etag"], "W/\"x\"");
        assert_eq!(h["vary"], "Accept-Encoding");

        let mut h = head(&[("content-type", "text/html"), ("vary", "accept-encoding")]);
        rewrite_head(Plan::Encode(Coding::Gzip), StatusCode::OK, &mut h);
        assert_eq!(h["vary"], "accept-encoding");
    }

    #[test]
    fn a_plain_answer_on_a_compressing_route_still_varies() {
        let mut h = head(&[("content-type", "text/html"), ("etag", "\"abc\"")]);
        assert_eq!(rewrite_head(Plan::Plain, StatusCode::OK, &mut h), None);
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(h["etag"], "\"abc\"");
        let mut h = head(&[("content-type", "text/html")]);
        assert_eq!(rewrite_head(Plan::Off, StatusCode::OK, &mut h), None);
        assert!(!h.contains_key("vary"));
    }

    #[test]
    fn responses_that_must_stay_as_they_are_are_not_compressed() {
        let text = ("content-type", "text/html");
        for (status, pairs) in [
            (StatusCode::NO_CONTENT, vec![text]),
            (StatusCode::NOT_MODIFIED, vec![text]),
            (StatusCode::PARTIAL_CONTENT, vec![text]),
            (StatusCode::SWITCHING_PROTOCOLS, vec![text]),
            (StatusCode::OK, vec![text, ("content-encoding", "gzip")]),
            (
                StatusCode::OK,
                vec![text, ("content-range", "bytes 0-9/100")],
            ),
            (
                StatusCode::OK,
                vec![text, ("cache-control", "public, No-Transform")],
            ),
            (StatusCode::OK, vec![text, ("content-length", "1023")]),
            (StatusCode::OK, vec![("content-type", "image/png")]),
            (StatusCode::OK, vec![]),
        ] {
            let mut h = head(&pairs);
            let coding = rewrite_head(Plan::Encode(Coding::Gzip), status, &mut h);
            assert_eq!(coding, None, "{status} {pairs:?}");
            assert!(
                !h.contains_key("content-encoding")
                    || pairs.iter().any(|p| p.0 == "content-encoding")
            );
        }
        let mut h = head(&[text, ("content-length", "1024")]);
        assert!(rewrite_head(Plan::Encode(Coding::Gzip), StatusCode::NOT_FOUND, &mut h).is_some());
    }

    #[test]
    fn head_requests_are_planned_plain() {
        let h = head(&[("accept-encoding", "gzip")]);
        assert_eq!(Plan::for_request(true, &Method::HEAD, &h), Plan::Plain);
        assert_eq!(
            Plan::for_request(true, &Method::GET, &h),
            Plan::Encode(Coding::Gzip)
        );
        assert_eq!(Plan::for_request(false, &Method::GET, &h), Plan::Off);
    }

    /// An `Accept-Encoding` entry: a token and maybe a q-value.
    fn entry() -> impl Strategy<Value = (String, Option<String>)> {
        let token = prop_oneof![
            Just("gzip"),
            Just("br"),
            Just("zstd"),
            Just("x-gzip"),
            Just("*"),
            Just("identity"),
            Just("deflate"),
            Just("GZip"),
        ];
        let q = proptest::option::of(prop_oneof![
            Just("0".to_owned()),
            Just("0.000".to_owned()),
            Just("1".to_owned()),
            "0\\.[0-9]{1,3}",
            "[a-z0-9.]{0,5}",
        ]);
        (token.prop_map(str::to_owned), q)
    }

    proptest! {
        /// The coding chosen is never one the client refused with `q=0`,
        /// neither by name nor through `*` when it is not named.
        #[test]
        fn never_picks_a_refused_coding(entries in proptest::collection::vec(entry(), 0..6)) {
            let value = entries
                .iter()
                .map(|(t, q)| match q {
                    Some(q) => format!("{t};q={q}"),
                    None => t.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let Ok(header_value) = HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, header_value);
            if let Some(coding) = negotiate(&headers) {
                let named = |e: &&(String, Option<String>)| {
                    Coding::from_token(&e.0) == Some(coding)
                };
                let zero = |e: &(String, Option<String>)| {
                    e.1.as_deref().is_some_and(|q| qvalue(q).is_none_or(|q| q == 0))
                };
                let mine: Vec<_> = entries.iter().filter(named).collect();
                if mine.is_empty() {
                    let stars: Vec<_> = entries.iter().filter(|e| e.0 == "*").collect();
                    prop_assert!(!stars.is_empty(), "{value}: picked an unlisted coding");
                    prop_assert!(!stars.iter().any(|e| zero(e)), "{value}: * refused");
                } else {
                    prop_assert!(!mine.iter().any(|e| zero(e)), "{value}: picked a refused coding");
                }
            }
        }
    }
}
