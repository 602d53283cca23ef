//! Request ids (`[server] request_id = "X-Request-Id"`): the id a client
//! sent, when it is a sane one, or a new UUID v7, which sorts by creation
//! time so ids read in a log line up in time order.
//!
//! A leaf: it knows headers, not requests. The proxy puts the id in the
//! request before forwarding it and copies it onto the response; the access
//! log reads it from the request's headers.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The longest id kept from a client; a longer one is replaced.
pub const MAX_LEN: usize = 200;

/// The request's id under `name`: the client's own when valid (any others
/// under that name are dropped), else a new one, which is put in `headers`.
pub fn ensure(headers: &mut HeaderMap, name: &HeaderName) -> HeaderValue {
    let mut values = headers.get_all(name).iter();
    if let (Some(first), None) = (values.next(), values.next()) {
        if is_valid(first) {
            return first.clone();
        }
    }
    // None, several (which one would the upstream read?), or not valid.
    let id = generate();
    headers.insert(name.clone(), id.clone());
    id
}

/// Whether a client's id is kept: 1 to [`MAX_LEN`] visible ASCII characters.
/// No spaces or control characters, so it stays one field in a log line.
pub fn is_valid(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

/// A new UUID v7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then the
/// version, 74 random bits and the variant, as 36 lower-case characters.
pub fn generate() -> HeaderValue {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let bytes = uuid_v7(millis, fastrand::u128(..));
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        for nibble in [byte >> 4, byte & 0x0f] {
            text[at] = HEX[usize::from(nibble)];
            at += 1;
        }
    }
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of a UUID v7 made at `millis` from `random`'s low 74 bits.
/// Ids of one millisecond are unordered among themselves; random bits make
/// them unique without coordination between workers or weir instances.
fn uuid_v7(millis: u64, random: u128) -> [u8; 16] {
    let timestamp = u128::from(millis & 0xffff_ffff_ffff) << 80;
    // Version 7 at the top of byte 6, then 12 random bits (`rand_a`).
    let version = 0x7 << 76;
    let rand_a = ((random >> 62) & 0xfff) << 64;
    // Variant 0b10 at the top of byte 8, then 62 random bits (`rand_b`).
    let variant = 0x2 << 62;
    let rand_b = random & ((1 << 62) - 1);
    (timestamp | version | rand_a | variant | rand_b).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuid_v7_and_sort_by_time() {
        let id = generate();
        let text = id.to_str().expect("ascii");
        assert_eq!(text.len(), 36);
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('7'), "{text}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{text}");
        assert!(is_valid(&id));

        let early = uuid_v7(1_700_000_000_000, u128::MAX);
        let late = uuid_v7(1_700_000_000_001, 0);
        assert!(early < late);
        assert_eq!(&early[..6], &1_700_000_000_000u64.to_be_bytes()[2..]);
        assert_eq!(early[6] >> 4, 7);
        assert_eq!(late[8] >> 6, 0b10);
    }

    #[test]
    fn two_ids_differ() {
        assert_ne!(generate(), generate());
    }

    #[test]
    fn a_valid_client_id_is_kept_and_others_replaced() {
        let name = HeaderName::from_static("x-request-id");
        let mut headers = HeaderMap::new();
        headers.insert(&name, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut headers, &name), "abc-123");
        assert_eq!(headers[&name], "abc-123");

        for bad in ["", "has space", "x".repeat(MAX_LEN + 1).as_str()] {
            let mut headers = HeaderMap::new();
            headers.insert(&name, HeaderValue::from_str(bad).expect("value"));
            let id = ensure(&mut headers, &name);
            assert_ne!(id, bad);
            assert_eq!(headers[&name], id);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            &name,
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("value"),
        );
        assert_ne!(ensure(&mut headers, &name), "café");

        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_static("one"));
        headers.append(&name, HeaderValue::from_static("two"));
        let id = ensure(&mut headers, &name);
        assert_eq!(headers.get_all(&name).iter().collect::<Vec<_>>(), [&id]);

        let mut headers = HeaderMap::new();
        let id = ensure(&mut headers, &name);
        assert_eq!(headers[&name], id);
        assert!(is_valid(&"x".repeat(MAX_LEN).parse().expect("value")));
    }
}
