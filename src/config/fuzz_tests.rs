//! The config parser against arbitrary and mutated input: it never panics,
//! and every error it reports points at a line and column of the file.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;

use super::parse_with;

/// The shipped example config: every section and most keys.
const SHIPPED: &str = include_str!("../../config/weir.toml");

/// A small config with the forms the shipped one lacks: inline tables, a TLS
/// listener with a credential path, a health check table, a host route.
const FORMS: &str = r#"[server]
listen = ["127.0.0.1:8080", { addr = "127.0.0.1:8443", tls = { cert = "${CREDENTIALS_DIRECTORY}/a.pem", key = "k.pem" } }]
threads = 2
max_body_size = "10MB"

[admin]
listen = "127.0.0.1:9090"

[log]
access = "off"

[[upstream]]
name = "a"
servers = ["127.0.0.1:3000", { addr = "127.0.0.1:3001", weight = 2, backup = true }]
[upstream.health_check]
path = "/health"
status = [200, 204]

[[route]]
host = "*.example.com"
path = "/api"
upstream = "a"
"#;

/// Fragments that TOML or weir's schema give a meaning to.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "#",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "\\",
    "\\u00e9",
    "\\x",
    "é",
    "\u{0}",
    "\u{feff}",
    "server",
    "upstream",
    "route",
    "admin",
    "log",
    "listen",
    "servers",
    "tls",
    "cert",
    "key",
    "addr",
    "name",
    "weight",
    "health_check",
    "threads",
    "path",
    "host",
    "upstream.health_check",
    "\"1s\"",
    "1",
    "-1",
    "99999999999999999999",
    "1.5",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:80\"",
    "1979-05-27T07:32:00Z",
    "${CREDENTIALS_DIRECTORY}/",
    "$CREDENTIALS_DIRECTORY",
    "inf",
    "nan",
    "0x10",
    "1_000",
    "\"10MB\"",
    "\"*.a.b\"",
    "\"/\"",
];

/// One edit of a document, at positions taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    /// Puts a token before a character.
    Insert(Index, &'static str),
    /// Removes up to this many characters.
    Delete(Index, usize),
    /// Replaces a character.
    Replace(Index, char),
    /// Writes a line a second time, right after itself.
    DuplicateLine(Index),
    /// Exchanges two lines.
    SwapLines(Index, Index),
    /// Cuts the document short.
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<Index>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// `text` with `edits` applied in order; edits work on characters, so the
/// result stays a `&str` as `config::load` would have read it.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match edit {
            Edit::Insert(at, token) => {
                let at = at.index(len + 1).min(chars.len());
                chars.splice(at..at, token.chars());
            }
            Edit::Delete(at, n) => {
                let at = at.index(len).min(chars.len());
                let end = (at + n).min(chars.len());
                chars.drain(at..end);
            }
            Edit::Replace(at, c) => {
                if let Some(slot) = chars.get_mut(at.index(len)) {
                    *slot = *c;
                }
            }
            Edit::DuplicateLine(at) | Edit::SwapLines(at, _) => {
                let joined: String = chars.iter().collect();
                let mut lines: Vec<&str> = joined.split('\n').collect();
                let a = at.index(lines.len());
                match edit {
                    Edit::SwapLines(_, other) => {
                        let b = other.index(lines.len());
                        lines.swap(a, b);
                    }
                    _ => lines.insert(a, lines[a]),
                }
                chars = lines.join("\n").chars().collect();
            }
            Edit::Truncate(at) => chars.truncate(at.index(len)),
        }
    }
    chars.into_iter().collect()
}

/// Parses `src` with and without a credentials folder; it must not panic,
/// and each error must name a line and column inside `src`.
fn parses_or_points_into(src: &str) -> Result<(), TestCaseError> {
    let last_line = src.matches('\n').count() + 1;
    for credentials in [None, Some(Path::new("/run/credentials/weir.service"))] {
        let Err(e) = parse_with(src, Path::new("weir.toml"), credentials) else {
            continue;
        };
        for one in e.each() {
            prop_assert!((1..=last_line).contains(&one.line), "{one}");
            prop_assert!(one.column >= 1, "{one}");
            prop_assert!(!one.message.is_empty(), "{one}");
            let prefix = format!("weir.toml:{}:{}: ", one.line, one.column);
            prop_assert!(e.to_string().contains(&prefix), "{e}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_errors_have_a_line(
        chars in prop::collection::vec(any::<char>(), 0..400)
    ) {
        parses_or_points_into(&chars.into_iter().collect::<String>())?;
    }

    #[test]
    fn toml_like_token_soup_never_panics_and_errors_have_a_line(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..120)
    ) {
        parses_or_points_into(&tokens.concat())?;
    }

    #[test]
    fn edited_configs_never_panic_and_errors_have_a_line(
        base in prop::sample::select(&[SHIPPED, FORMS][..]),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        parses_or_points_into(&apply(base, &edits))?;
    }
}

#[test]
fn the_bases_are_valid_so_edits_start_from_a_good_file() {
    for base in [SHIPPED, FORMS] {
        let parsed = parse_with(base, Path::new("weir.toml"), Some(Path::new("/run/c")));
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
