//! A route's `request_headers` and `response_headers`: validated once, at
//! load, into header names and values, so applying them parses nothing.

use std::fmt::Display;

use http::header::{HeaderName, HeaderValue};
use toml::Spanned;

use super::model::HeaderRules;
use super::raw::RawHeaderRules;
use super::values::Cx;

/// Which side of the exchange a set of rules changes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// `request_headers`.
    Request,
    /// `response_headers`.
    Response,
}

/// Headers weir frames the message with, on either side: a rule changing
/// them would desynchronise the framing weir sends.
const FRAMING: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The forwarding headers weir writes for the upstream: the upstream trusts
/// them because no client can choose them, and no rule may either.
const FORWARDING: [&str; 5] = [
    "host",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Why `name` may not be changed by a rule on `side`, if it may not;
/// `request_id` is `[server] request_id`.
fn protected(
    name: &HeaderName,
    side: Side,
    request_id: Option<&HeaderName>,
) -> Option<&'static str> {
    if request_id == Some(name) {
        return Some("is [server] request_id, which weir sets on both sides, and cannot be changed by a rule");
    }
    let name = name.as_str();
    if FRAMING.contains(&name) {
        return Some("frames the message and cannot be changed by a rule");
    }
    match side {
        Side::Request if FORWARDING.contains(&name) => {
            Some("is a forwarding header weir sets and cannot be changed by a rule")
        }
        // Compression reads it to leave encoded bodies alone.
        Side::Response if name == "content-encoding" => {
            Some("describes the body weir streams and cannot be changed by a rule")
        }
        _ => None,
    }
}

/// Validates `raw`, the rules at `key` (`route[0].request_headers`).
pub(crate) fn header_rules(
    cx: &mut Cx<'_>,
    raw: Option<&Spanned<RawHeaderRules>>,
    side: Side,
    request_id: Option<&HeaderName>,
    key: &(impl Display + ?Sized),
) -> HeaderRules {
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return HeaderRules::default();
    };
    let mut rules = HeaderRules::default();
    for (i, name) in raw.remove.iter().enumerate() {
        let key = format!("{key}.remove[{i}]");
        if let Some(name) = checked_name(cx, name, side, request_id, &key) {
            rules.remove.push(name);
        }
    }
    for (name, value) in &raw.set {
        let key = format!("{key}.set.{}", name.get_ref());
        let Some(parsed) = checked_name(cx, name, side, request_id, &key) else {
            continue;
        };
        if rules.remove.contains(&parsed) {
            cx.record(cx.err(name.span(), &key, "is both set and removed"));
            continue;
        }
        // Parsed names are lower case, so `X-A` and `x-a` meet here.
        if rules.set.iter().any(|(n, _)| *n == parsed) {
            cx.record(cx.err(name.span(), &key, "is set twice (header names ignore case)"));
            continue;
        }
        match HeaderValue::from_str(value.get_ref()) {
            Ok(value) => rules.set.push((parsed, value)),
            Err(_) => cx.record(cx.err(
                value.span(),
                &key,
                "invalid header value: control characters and non-ASCII text are not allowed",
            )),
        }
    }
    rules
}

/// `name` as a header name a rule may change, or the error recorded.
fn checked_name(
    cx: &mut Cx<'_>,
    name: &Spanned<String>,
    side: Side,
    request_id: Option<&HeaderName>,
    key: &str,
) -> Option<HeaderName> {
    let text = name.get_ref();
    let Ok(parsed) = HeaderName::from_bytes(text.as_bytes()) else {
        cx.record(cx.err(
            name.span(),
            key,
            format!("invalid header name \"{text}\": letters, digits and !#$%&'*+-.^_`|~ only"),
        ));
        return None;
    };
    if let Some(why) = protected(&parsed, side, request_id) {
        cx.record(cx.err(name.span(), key, format!("\"{text}\" {why}")));
        return None;
    }
    Some(parsed)
}
