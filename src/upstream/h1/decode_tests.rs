use super::*;

/// Decodes `wire` fed in pieces of `step` bytes, as a socket might deliver
/// it: the data, the trailers, and whether the body ended.
fn decode_all(
    mut decoder: Decoder,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>, bool), UpstreamError> {
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut trailers = None;
    let mut fed: usize = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Frame(frame) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Decoded::End => return Ok((data, trailers, true)),
            Decoded::NeedMore if fed < wire.len() => {
                let end = fed.saturating_add(step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
            Decoded::NeedMore => {
                return match decoder.closed()? {
                    Decoded::End => Ok((data, trailers, true)),
                    _ => Ok((data, trailers, false)),
                }
            }
        }
    }
}

fn chunked_body(wire: &str) -> Result<(Vec<u8>, Option<HeaderMap>, bool), UpstreamError> {
    let whole = decode_all(Decoder::chunked(), wire.as_bytes(), usize::MAX);
    // Byte by byte, every split of the wire gives the same.
    let bytewise = decode_all(Decoder::chunked(), wire.as_bytes(), 1);
    assert_eq!(
        whole.as_ref().map(|w| w.0.clone()).ok(),
        bytewise.as_ref().map(|w| w.0.clone()).ok(),
        "{wire:?}"
    );
    assert_eq!(whole.is_ok(), bytewise.is_ok(), "{wire:?}");
    whole
}

#[test]
fn a_length_body_ends_at_its_length_and_leaves_the_rest() {
    let mut buf = BytesMut::from(&b"helloNEXT"[..]);
    let mut decoder = Decoder::length(5);
    assert_eq!(decoder.remaining(), Some(5));
    match decoder.decode(&mut buf) {
        Ok(Decoded::Frame(frame)) => {
            assert_eq!(frame.into_data().ok().as_deref(), Some(&b"hello"[..]))
        }
        other => panic!("{other:?}"),
    }
    assert!(decoder.is_done());
    assert_eq!(&buf[..], b"NEXT");
    assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::End)));
    // Cut short, it is an error.
    assert!(decode_all(Decoder::length(10), b"short", 2).is_err());
}

#[test]
fn a_body_until_close_takes_everything() {
    let (data, _, ended) = decode_all(Decoder::until_close(), b"all of it", 3).expect("ok");
    assert_eq!((data.as_slice(), ended), (&b"all of it"[..], true));
}

#[test]
fn chunked_bodies_decode_with_sizes_extensions_and_trailers() {
    let (data, trailers, ended) =
        chunked_body("5\r\nhello\r\na;x=1;y=\"q s\"\t\r\n0123456789\r\n0\r\n\r\n").expect("ok");
    assert_eq!(data, b"hello0123456789");
    assert!(trailers.is_none());
    assert!(ended);
    let (data, trailers, _) =
        chunked_body("3\r\nabc\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n").expect("ok");
    assert_eq!(data, b"abc");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["x-sum"], "1");
    assert_eq!(trailers["x-more"], "2");
    let (data, _, _) = chunked_body("A\r\n0123456789\r\n0\r\n\r\n").expect("uppercase hex");
    assert_eq!(data.len(), 10);
    let (data, _, _) = chunked_body("3 \r\nabc\r\n0\r\n\r\n").expect("space before CRLF");
    assert_eq!(data, b"abc");
}

#[test]
fn malformed_chunks_are_errors() {
    for wire in [
        "\r\nhello\r\n0\r\n\r\n",         // no size
        "x\r\nhello\r\n0\r\n\r\n",        // not hex
        "5\nhello\r\n0\r\n\r\n",          // bare LF
        "5\r\nhelloX\r\n0\r\n\r\n",       // data longer than its size
        "5\r\nhello\n0\r\n\r\n",          // no CR after data
        "5\r\nhello\r\r\n0\r\n\r\n",      // CR CR
        "5;a=\x01\r\nhello\r\n0\r\n\r\n", // control character in an extension
        "5;\x00\r\nhello\r\n0\r\n\r\n",
        "5;a=\"\x1b[31m\"\r\nhello\r\n0\r\n\r\n",
        "5;x\x7f\r\nhello\r\n0\r\n\r\n",
        "5;x\rz\r\nhello\r\n0\r\n\r\n", // CR inside an extension
        "5;x\nhello\r\n0\r\n\r\n",      // LF inside an extension
        "10000000000000000\r\n",        // 17 hex digits: overflow
        "ffffffffffffffffff\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
        "0\r\nbad trailer\r\n\r\n",
        "0\r\nx: \x01\r\n\r\n",
    ] {
        assert!(chunked_body(wire).is_err(), "{wire:?}");
    }
    // The largest size that fits is read, not refused.
    let mut decoder = Decoder::chunked();
    let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
    assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::Frame(_))));
}

#[test]
fn a_control_character_is_refused_before_its_line_ends() {
    let mut decoder = Decoder::chunked();
    let mut buf = BytesMut::from(&b"5;x=\x01"[..]);
    assert!(decoder.decode(&mut buf).is_err());
    let mut decoder = Decoder::chunked();
    let mut buf = BytesMut::from(&b"5;x=1\r"[..]);
    assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::NeedMore)));
}

#[test]
fn a_chunked_body_cut_short_is_an_error_not_an_end() {
    for wire in [
        "5\r\nhel",
        "5\r\nhello\r\n",
        "5\r\nhello\r\n0\r\n",
        "5\r\nhello\r\n0\r\nx: 1\r\n",
    ] {
        assert!(
            decode_all(Decoder::chunked(), wire.as_bytes(), 2).is_err(),
            "{wire:?}"
        );
    }
}

#[test]
fn endless_extensions_and_trailers_are_refused() {
    let long = format!(
        "5;{}\r\nhello\r\n0\r\n\r\n",
        "x".repeat(EXTENSIONS_LIMIT + 1)
    );
    assert!(chunked_body(&long).is_err());
    let many: String = (0..EXTENSIONS_LIMIT / 100 + 2)
        .map(|_| format!("1;{}\r\nx\r\n", "e".repeat(100)))
        .collect();
    assert!(chunked_body(&format!("{many}0\r\n\r\n")).is_err());
    let trailers = format!("0\r\nx: {}\r\n\r\n", "t".repeat(TRAILERS_LIMIT));
    assert!(chunked_body(&trailers).is_err());
}
