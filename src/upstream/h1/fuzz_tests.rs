//! The response parser and body decoder against generated and mutated
//! responses: they never panic, never yield more than the wire held, and
//! read the same however the bytes are split across reads. Bounded and
//! seeded: the same cases on every run.

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed};

use super::decode::Decoded;
use super::parse;

const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.1 204 No Content\r\n",
    "HTTP/1.1 304 Not Modified\r\n",
    "HTTP/1.1 100 Continue\r\n",
    "HTTP/1.0 200 OK\r\n",
    "HTTP/1.1 101 Switching Protocols\r\n",
    "HTTP/1.1 999 Odd\r\n",
    "HTTP/1.1 200\r\n",
    "HTTP/2 200 OK\r\n",
    "ICY 200 OK\r\n",
];

const FIELDS: &[&str] = &[
    "Content-Length: 5\r\n",
    "Content-Length: 0\r\n",
    "Content-Length: 5, 5\r\n",
    "Content-Length: 6\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 99999999999999999999\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: chunked, gzip\r\n",
    "Connection: close\r\n",
    "Connection: keep-alive\r\n",
    "X-A: b\r\n",
    " folded\r\n",
    "Bad Name: x\r\n",
    "X: \x01\r\n",
];

const BODY_PIECES: &[&str] = &[
    "5\r\nhello\r\n",
    "a;ext=1\r\n0123456789\r\n",
    "3;q=\"x y\"\r\nabc\r\n",
    "0\r\n\r\n",
    "0\r\nx-t: 1\r\n\r\n",
    "ffffffffffffffffff\r\n",
    "5;x=\x01\r\nhello\r\n",
    "5\nhello\n",
    "hello",
    "\r\n",
    "HTTP/1.1 200 OK\r\n\r\n",
];

/// A response: a status line, fields, the blank line and body pieces, then
/// a few bytes overwritten anywhere.
fn responses() -> impl Strategy<Value = Vec<u8>> {
    let head = (
        select(STATUS_LINES),
        prop::collection::vec(select(FIELDS), 0..5),
        prop::collection::vec(select(BODY_PIECES), 0..5),
    )
        .prop_map(|(status, fields, body)| {
            let mut wire = status.as_bytes().to_vec();
            fields
                .iter()
                .for_each(|f| wire.extend_from_slice(f.as_bytes()));
            wire.extend_from_slice(b"\r\n");
            body.iter()
                .for_each(|p| wire.extend_from_slice(p.as_bytes()));
            wire
        });
    (
        head,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(mut wire, edits)| {
            for (at, byte) in edits {
                if !wire.is_empty() {
                    let i = at.index(wire.len());
                    wire[i] = byte;
                }
            }
            wire
        })
}

/// What reading `wire` gave: the status, the body's bytes and whether it
/// ended whole, or that it failed; `None` while the head is incomplete.
type Outcome = Option<Result<(u16, Vec<u8>, bool), ()>>;

/// Reads `wire` delivered in pieces of `step` bytes, as a socket might.
fn read(wire: &[u8], step: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut scratch = parse::Scratch::default();
    let mut fed: usize = 0;
    let mut feed = |buf: &mut BytesMut| {
        let end = fed.saturating_add(step).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        let more = end > fed;
        fed = end;
        more
    };
    let mut head = loop {
        match parse::head(&mut buf, &mut scratch, &mut http::HeaderMap::new()) {
            Ok(Some(head)) if head.status.is_informational() && head.status != 101 => {}
            Ok(Some(head)) => break head,
            Ok(None) if feed(&mut buf) => {}
            Ok(None) => return None,
            Err(_) => return Some(Err(())),
        }
    };
    let Ok((mut decoder, _)) = parse::framing(&mut head, &http::Method::GET) else {
        return Some(Err(()));
    };
    let mut data = Vec::new();
    // Bounded: every pass takes bytes out of the buffer or feeds more in.
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Frame(frame)) => {
                if let Ok(bytes) = frame.into_data() {
                    data.extend_from_slice(&bytes);
                }
            }
            Ok(Decoded::End) => return Some(Ok((head.status.as_u16(), data, true))),
            Ok(Decoded::NeedMore) if feed(&mut buf) => {}
            Ok(Decoded::NeedMore) => {
                return match decoder.closed() {
                    Ok(_) => Some(Ok((head.status.as_u16(), data, true))),
                    Err(_) => Some(Ok((head.status.as_u16(), data, false))),
                }
            }
            Err(_) => return Some(Err(())),
        }
    }
}

fn config() -> Config {
    Config {
        cases: 2000,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7765_6972),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn responses_read_the_same_however_they_are_split(wire in responses(), step in 1usize..9) {
        let whole = read(&wire, usize::MAX);
        let pieces = read(&wire, step);
        prop_assert_eq!(&whole, &pieces, "{:?}", String::from_utf8_lossy(&wire));
        if let Some(Ok((_, data, _))) = whole {
            prop_assert!(data.len() <= wire.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(wire in prop::collection::vec(any::<u8>(), 0..300), step in 1usize..9) {
        let _ = read(&wire, step);
        let mut prefixed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        prefixed.extend_from_slice(&wire);
        prop_assert_eq!(read(&prefixed, usize::MAX), read(&prefixed, step));
    }
}
