//! What the fuzz tests send weir: HTTP/1.1 request heads and chunked bodies
//! built from a vocabulary of the words and bytes that smuggling and parser
//! bugs hide in, HTTP/2 frame sequences after the client preface, each mutated
//! byte by byte, and plain arbitrary bytes.

use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---- HTTP/1.1 request heads --------------------------------------------------

/// A word from `good` most of the time, else one from `odd`: inputs stay close
/// enough to valid that weir forwards many of them, which is where framing
/// mistakes would show.
fn mostly(
    good: &'static [&'static str],
    odd: &'static [&'static str],
) -> impl Strategy<Value = &'static str> + Clone {
    prop_oneof![6 => select(good), 1 => select(odd)]
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE"];
const ODD_METHODS: &[&str] = &[
    "CONNECT", "TRACE", "PRI", "get", "G\0T", "", "GET GET", "X-Custom",
];
const TARGETS: &[&str] = &["/", "/a?b=c", "/x/y", "http://fuzz.test/x"];
const ODD_TARGETS: &[&str] = &[
    "*",
    "https://fuzz.test:443/",
    "fuzz.test:443",
    "//",
    "/%00",
    "/a b",
    "/\u{e9}",
    "",
    "/../../etc",
    "?",
    "/#frag",
    "http://user@fuzz.test/",
];
const VERSIONS: &[&str] = &["HTTP/1.1"];
const ODD_VERSIONS: &[&str] = &[
    "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "", "HTTP/11",
];
/// Header names that decide framing, routing and forwarding, and misspellings.
pub const NAMES: &[&str] = &[
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Expect",
    "TE",
    "Trailer",
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Keep-Alive",
    "Proxy-Connection",
    "X_Forwarded_For",
    "Transfer_Encoding",
    "Content-Type",
    " Host",
    "Host ",
    "",
    "X-\u{1}",
    "Sec-WebSocket-Key",
    "Forwarded",
    "HTTP2-Settings",
];
/// Values those headers take, and ones they should not.
pub const VALUES: &[&str] = &[
    "fuzz.test",
    "fuzz.test:8080",
    "",
    " ",
    "0",
    "5",
    "-1",
    "+5",
    "5, 5",
    "5,6",
    " 5",
    "0x5",
    "99999999999999999999",
    "chunked",
    "Chunked",
    "chunked, gzip",
    "gzip, chunked",
    "identity",
    "chunked\0",
    "close",
    "keep-alive",
    "upgrade",
    "Upgrade, HTTP2-Settings",
    "websocket",
    "h2c",
    "100-continue",
    "trailers",
    "1.2.3.4",
    "a\tb",
    "\u{7f}",
    "x\0y",
    "\u{e9}",
    "fuzz.test/evil",
    "user@fuzz.test",
    "[::1]:80",
];
const CRLF: &[&str] = &["\r\n"];
const ODD_EOLS: &[&str] = &["\n", "\r", "\r\n ", "\r\r\n", ""];
const COLONS: &[&str] = &[": "];
const ODD_COLONS: &[&str] = &[":", " : ", ":\t", "", ";"];

const BENIGN_HEADERS: &[&str] = &[
    "Accept: */*\r\n",
    "User-Agent: fuzz/1\r\n",
    "Content-Type: text/plain\r\n",
    "X-Request-Id: 7\r\n",
    "Cookie: a=b\r\n",
];

/// A header line: a harmless one three times in four, else a name and a
/// value from the vocabulary, oddly joined now and then.
fn header_line() -> impl Strategy<Value = String> {
    let odd = (
        select(NAMES),
        mostly(COLONS, ODD_COLONS),
        select(VALUES),
        mostly(CRLF, ODD_EOLS),
    )
        .prop_map(|(name, colon, value, eol)| format!("{name}{colon}{value}{eol}"));
    prop_oneof![
        3 => select(BENIGN_HEADERS).prop_map(str::to_owned),
        1 => odd,
    ]
}

/// One request head from the vocabulary above (with a `Host` most of the
/// time), then up to 64 body bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        mostly(METHODS, ODD_METHODS),
        mostly(TARGETS, ODD_TARGETS),
        mostly(VERSIONS, ODD_VERSIONS),
        mostly(CRLF, ODD_EOLS),
    );
    let host = mostly(
        &["Host: fuzz.test\r\n"],
        &["", "Host: fuzz.test\r\nHost: other.test\r\n"],
    );
    let headers = prop::collection::vec(header_line(), 0..4);
    let body = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    (line, host, headers, mostly(CRLF, ODD_EOLS), body).prop_map(
        |((method, target, version, eol), host, headers, end, body)| {
            let text = format!(
                "{method} {target} {version}{eol}{host}{}{end}",
                headers.concat()
            );
            [text.into_bytes(), body].concat()
        },
    )
}

/// A byte-level edit: positions are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Set(Index, u8),
    Repeat(Index, usize),
}

const INSERTS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"\xff",
    b"\x7f",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 3\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
];

fn edit() -> impl Strategy<Value = Edit> {
    let insert = prop_oneof![
        select(INSERTS).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<Index>(), insert).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Insert(at, more) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Set(at, b) if len > 0 => bytes[at.index(len)] = *b,
            Edit::Repeat(at, n) if len > 0 => {
                let at = at.index(len);
                let piece = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, piece);
            }
            _ => {}
        }
    }
    bytes
}

/// `inputs`, then up to `most` edits.
fn mutated(inputs: impl Strategy<Value = Vec<u8>>, most: usize) -> impl Strategy<Value = Vec<u8>> {
    (inputs, prop::collection::vec(edit(), 0..most)).prop_map(|(bytes, edits)| apply(bytes, &edits))
}

/// One to three pipelined requests.
fn pipelined() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(request(), 1..4).prop_map(|r| r.concat())
}

/// Pipelined requests, edited one time in two; or arbitrary bytes.
pub fn heads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => pipelined(),
        4 => mutated(pipelined(), 4),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

// ---- HTTP/1.1 chunked bodies -------------------------------------------------

const ODD_SIZES: &[&str] = &[
    "-1",
    "0x5",
    "fffffffffffffffffff",
    "",
    " 5",
    "5 ",
    "5;a=b",
    "5;\u{1}",
    "5\0",
    "+5",
    "1_0",
];
const EXTENSIONS: &[&str] = &["", ";name=value", ";n=\"q\""];
const ODD_EXTENSIONS: &[&str] = &[";\t", "; x", ";a=\u{1}", ";=", ";a=\"unclosed"];
const ODD_ENDINGS: &[&str] = &["\n", "", "xx", "\r", "\r\r\n"];

/// A chunk: its size line (true, off by up to two, or oddly spelled), data, ending.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let size = prop_oneof![
        8 => Just(None),
        1 => select(ODD_SIZES).prop_map(Some),
    ];
    let skew = prop_oneof![8 => Just(0i64), 1 => -2i64..=2];
    (
        prop::collection::vec(any::<u8>(), 0..40),
        size,
        mostly(EXTENSIONS, ODD_EXTENSIONS),
        mostly(CRLF, ODD_EOLS),
        mostly(CRLF, ODD_ENDINGS),
        skew,
    )
        .prop_map(|(data, size, ext, eol, ending, skew)| {
            let size = size.map_or_else(
                || format!("{:x}", (data.len() as i64 + skew).max(0)),
                str::to_owned,
            );
            [
                format!("{size}{ext}{eol}").as_bytes(),
                &data,
                ending.as_bytes(),
            ]
            .concat()
        })
}

const CHUNKED_HEADS: &[&str] = &[
    "POST /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    "PUT /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\
     Content-Type: text/plain\r\n\r\n",
];
const ODD_CHUNKED_HEADS: &[&str] = &[
    "PUT /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\
     Content-Length: 4\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "GET /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\
     Expect: 100-continue\r\n\r\n",
    "POST /upload HTTP/1.0\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\
     Transfer-Encoding: chunked\r\n\r\n",
];
const LAST_CHUNKS: &[&str] = &["0"];
const ODD_LAST_CHUNKS: &[&str] = &["00", "0;x=y", "000000000000000000000", "0 ", ""];

/// A chunked upload: chunks, the last chunk and trailers (or not), then maybe
/// a second request on the same connection.
fn chunked_upload() -> impl Strategy<Value = Vec<u8>> {
    let trailers = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(header_line(), 1..3),
    ];
    let last = (
        mostly(LAST_CHUNKS, ODD_LAST_CHUNKS),
        mostly(CRLF, ODD_EOLS),
        trailers,
        mostly(CRLF, ODD_EOLS),
    )
        .prop_map(|(zero, eol, trailers, end)| format!("{zero}{eol}{}{end}", trailers.concat()));
    let next = select(&["", "", "GET /next HTTP/1.1\r\nHost: fuzz.test\r\n\r\n"][..]);
    (
        mostly(CHUNKED_HEADS, ODD_CHUNKED_HEADS),
        prop::collection::vec(chunk(), 0..5),
        last,
        next,
    )
        .prop_map(|(head, chunks, last, next)| {
            [
                head.as_bytes(),
                &chunks.concat(),
                last.as_bytes(),
                next.as_bytes(),
            ]
            .concat()
        })
}

/// Chunked uploads, edited one time in two.
pub fn chunked() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![chunked_upload(), mutated(chunked_upload(), 3)]
}

// ---- HTTP/2 frames -----------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_NAMES: &[&str] = &["accept", "user-agent", "x-fuzz", "content-type", "cookie"];
const ODD_H2_NAMES: &[&str] = &[
    ":method",
    ":path",
    ":scheme",
    ":authority",
    ":status",
    ":protocol",
    "host",
    "content-length",
    "connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "x-forwarded-for",
    "Host",
    "",
    "x\0y",
    "x_forwarded_for",
];
const H2_VALUES: &[&str] = &["*/*", "fuzz/1", "1", "text/plain", "a=b"];
const ODD_H2_VALUES: &[&str] = &[
    "GET",
    "POST",
    "CONNECT",
    "/",
    "*",
    "",
    "https",
    "other.test",
    "0",
    "5",
    "-1",
    "trailers",
    "chunked",
    "close",
    "websocket",
    "a\r\nb",
    "\u{e9}",
];

/// Frame types and flags.
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The setting that a client may set to 0, granting weir no window for any
/// response body: weir then holds the stream past all its timeouts (see
/// `an_http2_client_granting_no_window_is_cut_off` in fuzz_http.rs), so the
/// fuzzer leaves that value out until weir bounds it.
const INITIAL_WINDOW_SIZE: u16 = 4;

/// A frame: its 9-byte header, and the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0).min(0xff_ffff);
    [
        &len.to_be_bytes()[1..],
        &[kind, flags],
        &stream.to_be_bytes(),
        payload,
    ]
    .concat()
}

/// A header block: the pseudo-headers of a GET or a POST to `/` (or none),
/// then a few literal fields ("literal without indexing, new name").
fn header_block() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        mostly(H2_NAMES, ODD_H2_NAMES),
        mostly(H2_VALUES, ODD_H2_VALUES),
    );
    let method = prop_oneof![3 => Just(Some(0x82u8)), 2 => Just(Some(0x83)), 1 => Just(None)];
    (method, prop::collection::vec(field, 0..4)).prop_map(|(method, fields)| {
        // :method GET or POST, :scheme http, :path / from HPACK's static
        // table, and :authority fuzz.test with an indexed name.
        let mut block = match method {
            Some(method) => [&[method, 0x86, 0x84, 0x41, 9][..], b"fuzz.test"].concat(),
            None => Vec::new(),
        };
        for (name, value) in fields {
            block.push(0);
            block.push(name.len() as u8);
            block.extend(name.as_bytes());
            block.push(value.len() as u8);
            block.extend(value.as_bytes());
        }
        block
    })
}

/// A request on stream 1: HEADERS, then any DATA frames, the last one ending
/// the stream (most of the time).
fn h2_request() -> impl Strategy<Value = Vec<u8>> {
    let bodies = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..3);
    (header_block(), bodies, prop::bool::weighted(0.97)).prop_map(|(block, bodies, ends)| {
        let end = if ends { END_STREAM } else { 0 };
        let headers_flags = END_HEADERS | if bodies.is_empty() { end } else { 0 };
        let mut frames = frame(HEADERS, headers_flags, 1, &block);
        for (i, body) in bodies.iter().enumerate() {
            let last = i + 1 == bodies.len();
            frames.extend(frame(DATA, if last { end } else { 0 }, 1, body));
        }
        frames
    })
}

/// Any frame, mostly on the request's stream or ones next to it.
fn h2_frame() -> impl Strategy<Value = Vec<u8>> {
    let stream = prop_oneof![
        6 => select(&[1u32, 1, 3, 5][..]),
        1 => select(&[0u32, 2, 0x7fff_ffff, 0x8000_0001][..]),
    ];
    let flags = prop_oneof![
        3 => select(&[0u8, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS][..]),
        1 => any::<u8>(),
    ];
    let bytes = |n| prop::collection::vec(any::<u8>(), 0..n);
    let setting = (
        select(&[0u16, 1, 2, 3, 4, 5, 6, 8, 0xffff][..]),
        select(&[0u32, 1, 100, 65535, 0x7fff_ffff, 0xffff_ffff][..]),
    );
    prop_oneof![
        3 => (header_block(), flags.clone(), stream.clone())
            .prop_map(|(b, f, s)| frame(HEADERS, f, s, &b)),
        3 => (bytes(64), flags.clone(), stream.clone()).prop_map(|(b, f, s)| frame(DATA, f, s, &b)),
        1 => (header_block(), flags, stream.clone()).prop_map(|(b, f, s)| frame(9, f, s, &b)),
        1 => (prop::collection::vec(setting, 0..4), any::<bool>()).prop_map(|(pairs, ack)| {
            let payload: Vec<u8> = pairs
                .iter()
                .map(|&(id, v)| (id, if id == INITIAL_WINDOW_SIZE { v.max(1) } else { v }))
                .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
                .collect();
            frame(SETTINGS, u8::from(ack), 0, &payload)
        }),
        1 => (select(&[0u32, 1, 65535, 0x7fff_ffff, 0x8000_0000][..]), stream.clone())
            .prop_map(|(inc, s)| frame(8, 0, s, &inc.to_be_bytes())),
        1 => (any::<u32>(), stream.clone()).prop_map(|(code, s)| frame(3, 0, s, &code.to_be_bytes())),
        1 => (bytes(12), any::<bool>()).prop_map(|(b, ack)| frame(6, u8::from(ack), 0, &b)),
        1 => (bytes(16), stream.clone()).prop_map(|(b, s)| frame(GOAWAY, 0, s, &b)),
        1 => (bytes(8), stream).prop_map(|(b, s)| frame(2, 0, s, &b)),
        1 => (any::<u8>(), any::<u8>(), any::<u32>(), bytes(32))
            .prop_map(|(k, f, s, b)| frame(k, f, s, &b)),
    ]
}

/// The client preface and SETTINGS (most of the time), a request on stream 1
/// and odd frames (most of the time), and a GOAWAY saying the client is done:
/// a client's closing its side would reset the streams before they reach the
/// upstream, where the GOAWAY lets them finish before weir closes.
fn h2_sequence() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        6 => Just([PREFACE, &frame(SETTINGS, 0, 0, &[])].concat()),
        1 => select(vec![
            [PREFACE, &frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 0])].concat(),
            PREFACE.to_vec(),
            PREFACE[..10].to_vec(),
        ]),
    ];
    // Odd frames before a request may leave it be; after it, a connection
    // error they cause may reset it before it reaches the upstream.
    let odd = || prop::collection::vec(h2_frame(), 1..4).prop_map(|f| f.concat());
    let frames = prop_oneof![
        3 => h2_request(),
        1 => (odd(), h2_request()).prop_map(|(odd, request)| [odd, request].concat()),
        1 => (h2_request(), odd()).prop_map(|(request, odd)| [request, odd].concat()),
        1 => odd(),
    ];
    let goaway = frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    (start, frames).prop_map(move |(start, frames)| [start, frames, goaway.clone()].concat())
}

/// Frame sequences, one in five mutated.
pub fn h2_frames() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => h2_sequence(),
        1 => mutated(h2_sequence(), 3),
    ]
}
