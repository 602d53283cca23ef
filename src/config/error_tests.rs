//! Every validation error: the line it points at, the key it names, what it says.

use std::path::Path;

use super::parse;

/// Asserts `src` fails at `line` on `key` with a message containing `msg`,
/// and with nothing else: one mistake is reported once, and not again as the
/// cause of another error.
#[track_caller]
pub(super) fn fails(src: &str, line: usize, key: &str, msg: &str) {
    let e = fails_first(src, line, key, msg);
    assert!(e.more.is_empty(), "more than one error:\n{e}");
}

/// Asserts the first error of `src` is at `line` on `key` (none when empty)
/// with a message containing `msg`.
#[track_caller]
fn fails_first(src: &str, line: usize, key: &str, msg: &str) -> super::ConfigError {
    let e = match parse(src, Path::new("weir.toml")) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    };
    assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
    assert!(
        e.message.contains(msg),
        "message {:?} lacks {msg:?}",
        e.message
    );
    assert!(e.column >= 1, "{e}");
    let prefix = match key {
        "" => format!("weir.toml:{line}:{}: ", e.column),
        key => format!("weir.toml:{line}:{}: {key}: ", e.column),
    };
    assert!(e.to_string().starts_with(&prefix), "{e}");
    e
}

/// A valid document with `server`, `upstream` and `route` bodies swapped in;
/// with two-line bodies, `[server]` is line 1, `[[upstream]]` line 5 and `[[route]]` line 9.
fn doc(server: &str, upstream: &str, route: &str) -> String {
    format!("[server]\n{server}\n\n[[upstream]]\n{upstream}\n\n[[route]]\n{route}\n")
}

const LISTEN: &str = "listen = [\"127.0.0.1:8080\"]\nthreads = 0";
const UP: &str = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]";
const ROUTE: &str = "path = \"/\"\nupstream = \"app\"";

#[test]
fn baseline_is_valid() {
    assert!(parse(&doc(LISTEN, UP, ROUTE), Path::new("weir.toml")).is_ok());
}

#[test]
fn unknown_key() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nbalanse = \"least_conn\"";
    let e = parse(&doc(LISTEN, up, ROUTE), Path::new("weir.toml")).expect_err("unknown key");
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (8, 1, "upstream[0].balanse"),
        "{e}"
    );
    assert!(
        e.message.contains("unknown field `balanse`"),
        "{}",
        e.message
    );
    fails(
        &doc("listen = [\"127.0.0.1:8080\"]\nthread = 1", UP, ROUTE),
        3,
        "server.thread",
        "unknown field",
    );
    fails(
        &format!("{}[bogus]\n", doc(LISTEN, UP, ROUTE)),
        12,
        "bogus",
        "unknown field `bogus`",
    );
    let srv = "name = \"app\"\nservers = [{ addr = \"127.0.0.1:3000\", wieght = 2 }]";
    fails(
        &doc(LISTEN, srv, ROUTE),
        7,
        "upstream[0].servers[0].wieght",
        "unknown field `wieght`",
    );
}

#[test]
fn bad_address() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\", \"127.0.0.1:99999\"]";
    let e = parse(&doc(LISTEN, up, ROUTE), Path::new("weir.toml")).expect_err("bad address");
    assert_eq!(
        e.to_string(),
        "weir.toml:7:30: upstream[0].servers[1]: invalid address \"127.0.0.1:99999\": \
         expected IP:port or name:port, such as 127.0.0.1:3000 or app:3000"
    );
    let up = "name = \"app\"\nservers = [{ addr = \"local host:3000\" }]";
    fails(
        &doc(LISTEN, up, ROUTE),
        7,
        "upstream[0].servers[0].addr",
        "invalid address",
    );
    fails(
        &doc("listen = [\"8080\"]\nthreads = 0", UP, ROUTE),
        2,
        "server.listen[0]",
        "invalid address",
    );
    let admin = format!("{}[admin]\nlisten = \"nowhere\"\n", doc(LISTEN, UP, ROUTE));
    fails(&admin, 13, "admin.listen", "invalid address");
    let up = "name = \"app\"\nservers = [\"127.0.0.1:0\"]";
    fails(
        &doc(LISTEN, up, ROUTE),
        7,
        "upstream[0].servers[0]",
        "port 0",
    );
}

#[test]
fn duplicate_upstream_name_points_at_the_second() {
    let src = format!(
        "{}[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:3001\"]\n",
        doc(LISTEN, UP, ROUTE)
    );
    fails(
        &src,
        13,
        "upstream[1].name",
        "duplicate upstream name \"app\" (first defined on line 6)",
    );
}

#[test]
fn route_to_missing_upstream() {
    fails(
        &doc(LISTEN, UP, "path = \"/\"\nupstream = \"nope\""),
        11,
        "route[0].upstream",
        "no upstream named \"nope\"",
    );
}

#[test]
fn empty_servers() {
    fails(
        &doc(LISTEN, "name = \"app\"\nservers = []", ROUTE),
        7,
        "upstream[0].servers",
        "at least one server",
    );
}

#[test]
fn missing_required_keys() {
    fails(
        &doc(LISTEN, "name = \"app\"\nretries = 1", ROUTE),
        5,
        "upstream[0]",
        "missing field `servers`: an upstream needs `servers`, `discover` or both",
    );
    fails(
        &doc(LISTEN, UP, "path = \"/\"\nhost = \"a.b\""),
        9,
        "route[0]",
        "missing field `upstream`",
    );
}

#[test]
fn bad_duration() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nconnect_timeout = \"2 parsecs\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].connect_timeout",
        "invalid duration \"2 parsecs\"",
    );
    let server = "listen = [\"127.0.0.1:8080\"]\nidle_timeout = 5";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.idle_timeout",
        "invalid type",
    );
}

#[test]
fn zero_timeout() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nresponse_timeout = \"0s\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].response_timeout",
        "greater than zero",
    );
    let server = "listen = [\"127.0.0.1:8080\"]\nheader_read_timeout = \"0ms\"";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.header_read_timeout",
        "greater than zero",
    );
}

#[test]
fn weight_out_of_range() {
    for w in [0, 300, -1] {
        let up = format!(
            "name = \"app\"\nservers = [\"127.0.0.1:3001\",\n  {{ addr = \"127.0.0.1:3000\", weight = {w} }}]"
        );
        fails(
            &doc(LISTEN, &up, ROUTE),
            8,
            "upstream[0].servers[1].weight",
            &format!("between 1 and 256, got {w}"),
        );
    }
}

#[test]
fn other_integer_ranges() {
    let server = "listen = [\"127.0.0.1:8080\"]\nmax_connections = 0";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.max_connections",
        "at least 1, got 0",
    );
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\n[upstream.health_check]\npath = \"/h\"\nfall = 0";
    fails(
        &doc(LISTEN, up, ROUTE),
        10,
        "upstream[0].health_check.fall",
        "at least 1",
    );
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nretries = -2";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].retries",
        "at least 0, got -2",
    );
}

#[test]
fn duplicate_server() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\", \"127.0.0.1:3001\",\n  { addr = \"127.0.0.1:3000\", weight = 2 }]";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].servers[2]",
        "duplicate server 127.0.0.1:3000",
    );
}

#[test]
fn duplicate_listener() {
    let server = "listen = [\"127.0.0.1:8080\",\n  \"127.0.0.1:8080\"]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.listen[1]",
        "duplicate listener",
    );
}

#[test]
fn tls_listener_errors_point_at_the_tls_keys() {
    let server =
        "listen = [\"0.0.0.0:80\",\n  { addr = \"0.0.0.0:443\", tls = { cert = \"a.pem\" } }]";
    fails(&doc(server, UP, ROUTE), 3, "server.listen[1].tls", "key");
    let server = "listen = [\n  { addr = \"0.0.0.0:443\", tls = [] }]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.listen[0].tls",
        "at least one certificate",
    );
    let server =
        "listen = [\n  { addr = \"0.0.0.0:443\", tls = [{ cert = \"a.pem\", key = \"\" }] }]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.listen[0].tls.key",
        "file path",
    );
    let server = "listen = [\n  { addr = \"0.0.0.0:443\", redirect_https = true, tls = { cert = \"a\", key = \"b\" } }]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.listen[0].tls",
        "redirect_https",
    );
}

#[test]
fn unknown_upstream_protocol() {
    let up = "name = \"app\"\nprotocol = \"h3\"\nservers = [\"127.0.0.1:3000\"]";
    fails(
        &doc(LISTEN, up, ROUTE),
        7,
        "upstream[0].protocol",
        "unknown variant",
    );
}

#[test]
fn bad_host_pattern() {
    for host in [
        "example.com:8080",
        "a.*.example.com",
        "*",
        "exa mple.com",
        "",
    ] {
        let route = format!("host = \"{host}\"\nupstream = \"app\"");
        fails(
            &doc(LISTEN, UP, &route),
            10,
            "route[0].host",
            "invalid host",
        );
    }
}

#[test]
fn bad_cidr() {
    let server =
        "listen = [\"127.0.0.1:8080\"]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.trusted_proxies[1]",
        "invalid CIDR \"10.0.0.0/33\"",
    );
}

#[test]
fn bad_path() {
    fails(
        &doc(LISTEN, UP, "path = \"api\"\nupstream = \"app\""),
        10,
        "route[0].path",
        "must start with /",
    );
    fails(
        &doc(LISTEN, UP, "path = \"/a b\"\nupstream = \"app\""),
        10,
        "route[0].path",
        "not allowed",
    );
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\n[upstream.health_check]\npath = \"health\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        9,
        "upstream[0].health_check.path",
        "must start with /",
    );
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\n[upstream.health_check]\ninterval = \"1s\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].health_check",
        "missing field `path`",
    );
}

#[test]
fn duplicate_route() {
    // `A.com` and `a.com.` are the same host; an absent path is "/".
    let route = "host = \"A.com\"\nupstream = \"app\"\n[[route]]\nhost = \"a.com.\"\npath = \"/\"\nupstream = \"app\"";
    fails(
        &doc(LISTEN, UP, route),
        14,
        "route[1]",
        "same host and path as route[0]",
    );
    // Without host or path the route's own header is the place to point at.
    let bare = format!(
        "{}[[route]]\nupstream = \"app\"\n",
        doc(LISTEN, UP, "upstream = \"app\"")
    );
    fails(&bare, 11, "route[1]", "same host and path as route[0]");
}

#[test]
fn no_routes() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:3000\"]\n";
    fails(src, 1, "route", "at least one [[route]]");
}

#[test]
fn no_listeners() {
    fails(
        &doc("listen = []\nthreads = 1", UP, ROUTE),
        2,
        "server.listen",
        "at least one listener",
    );
    let src = "\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:3000\"]\n[[route]]\nupstream = \"app\"\n";
    fails(src, 1, "server.listen", "at least one listener");
    fails(
        &doc("threads = 1", UP, ROUTE),
        1,
        "server",
        "missing field `listen`",
    );
}

#[test]
fn only_backup_servers() {
    let up = "name = \"app\"\nservers = [{ addr = \"127.0.0.1:3000\", backup = true }]";
    fails(
        &doc(LISTEN, up, ROUTE),
        7,
        "upstream[0].servers",
        "must not be a backup",
    );
}

#[test]
fn bad_words() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nbalance = \"random\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].balance",
        "unknown variant `random`",
    );
    let src = format!("{}[log]\nlevel = \"loud\"\n", doc(LISTEN, UP, ROUTE));
    fails(&src, 13, "log.level", "unknown variant `loud`");
}

#[test]
fn empty_name_and_token() {
    // The route to "app" is a second mistake here: no upstream is named so.
    fails_first(
        &doc(LISTEN, "name = \"\"\nservers = [\"127.0.0.1:3000\"]", ROUTE),
        6,
        "upstream[0].name",
        "must not be empty",
    );
    let src = format!(
        "{}[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"\"\n",
        doc(LISTEN, UP, ROUTE)
    );
    fails(&src, 14, "admin.token", "must not be empty");
}

#[test]
fn syntax_error() {
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"";
    // The unclosed array swallows the `[[route]]` header, which is where it breaks.
    fails(
        &doc(LISTEN, up, ROUTE),
        9,
        "upstream[0].servers[1]",
        "missing comma",
    );
    fails(
        &doc(LISTEN, "name = \"app\nservers = []", ROUTE),
        6,
        "upstream[0].name",
        "",
    );
    fails("[server]\nlisten = = 3\n", 2, "server.listen", "");
}

#[test]
fn bad_sizes_statuses_and_optional_timeouts() {
    let listen = "listen = [\"127.0.0.1:8080\"]\nmax_body_size = \"10 parsecs\"";
    fails(
        &doc(listen, UP, ROUTE),
        3,
        "server.max_body_size",
        "positive size",
    );
    let listen = "listen = [\"127.0.0.1:8080\"]\nmax_header_size = 1024";
    fails(
        &doc(listen, UP, ROUTE),
        3,
        "server.max_header_size",
        "at least 8192",
    );
    for bad in ["0", "1001"] {
        let listen = format!("listen = [\"127.0.0.1:8080\"]\nmax_headers = {bad}");
        fails(
            &doc(&listen, UP, ROUTE),
            3,
            "server.max_headers",
            "between 1 and 1000",
        );
    }
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nfail_on_status = [502, 700]";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].fail_on_status[1]",
        "between 100 and 599",
    );
    let up = "name = \"app\"\nservers = [\"127.0.0.1:3000\"]\nslow_start = \"0s\"";
    fails(
        &doc(LISTEN, up, ROUTE),
        8,
        "upstream[0].slow_start",
        "greater than zero",
    );
    let route = "upstream = \"app\"\nrequest_timeout = \"soon\"";
    fails(
        &doc(LISTEN, UP, route),
        11,
        "route[0].request_timeout",
        "invalid duration",
    );
}

#[test]
fn three_mistakes_make_three_lines() {
    let src = "[server]\nlisten = \"127.0.0.1:8080\"\nidle_timeout = \"soon\"\n\n\
               [[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:3000\", \"nowhere\"]\n\n\
               [[route]]\nupstream = \"nope\"\n";
    let e = parse(src, Path::new("weir.toml")).expect_err("three mistakes");
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines,
        [
            "weir.toml:3:16: server.idle_timeout: invalid duration \"soon\": \
             expected number at 0; expected e.g. \"500ms\", \"2s\" or \"1m\"",
            "weir.toml:7:30: upstream[0].servers[1]: invalid address \"nowhere\": \
             expected IP:port or name:port, such as 127.0.0.1:3000 or app:3000",
            "weir.toml:10:12: route[0].upstream: no upstream named \"nope\"",
        ]
    );
    assert_eq!(e.each().count(), 3);
}

#[test]
fn every_kind_of_value_mistake_is_collected_section_by_section() {
    // Routes first in the file, but reported last: errors come section by
    // section, so the first is the one weir reported when it stopped at one.
    let src = "\
[[route]]
path = \"api\"
upstream = \"app\"
[[route]]
path = \"/x\"
upstream = \"missing\"
request_timeout = \"0s\"

[server]
listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\", \"nowhere\"]
max_connections = 0
trusted_proxies = [\"10.0.0.0/33\"]
max_body_size = \"lots\"

[admin]
listen = \"127.0.0.1:8080\"
token = \"\"

[[upstream]]
name = \"app\"
servers = [{ addr = \"127.0.0.1:0\", weight = 0 }, \"127.0.0.1:1\", \"127.0.0.1:1\"]
fail_on_status = [99]
[upstream.health_check]
path = \"health\"
rise = 0

[[upstream]]
name = \"app\"
servers = []
";
    let e = parse(src, Path::new("weir.toml")).expect_err("many mistakes");
    let keys: Vec<(usize, &str)> = e.each().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (10, "server.listen[1]"),
            (10, "server.listen[2]"),
            (11, "server.max_connections"),
            (12, "server.trusted_proxies[0]"),
            (13, "server.max_body_size"),
            (16, "admin.listen"),
            (17, "admin.token"),
            (21, "upstream[0].servers[0].weight"),
            (21, "upstream[0].servers[0]"),
            (21, "upstream[0].servers[2]"),
            (22, "upstream[0].fail_on_status[0]"),
            (24, "upstream[0].health_check.path"),
            (25, "upstream[0].health_check.rise"),
            (28, "upstream[1].name"),
            (29, "upstream[1].servers"),
            (2, "route[0].path"),
            (6, "route[1].upstream"),
            (7, "route[1].request_timeout"),
        ],
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), keys.len());
}

#[test]
fn a_missing_server_section_is_reported_with_the_rest() {
    let src =
        "[[upstream]]\nname = \"app\"\nservers = [\"nowhere\"]\n[[route]]\nupstream = \"app\"\n";
    let e = parse(src, Path::new("weir.toml")).expect_err("two mistakes");
    let keys: Vec<&str> = e.each().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["server.listen", "upstream[0].servers[0]"], "{e}");
}

#[test]
fn a_serde_error_stops_at_the_first() {
    // toml rejects types and unknown keys before validation runs: one error.
    let src = doc("listen = \"127.0.0.1:8080\"\nthread = 1", "name = 5", ROUTE);
    let e = parse(&src, Path::new("weir.toml")).expect_err("serde error");
    assert_eq!(
        (e.line, e.key.as_str(), e.more.len()),
        (3, "server.thread", 0),
        "{e}"
    );
}

#[test]
fn hash_key_needs_balance_hash_and_a_known_form() {
    let up = |extra: &str| format!("{UP}\n{extra}");
    // [[upstream]] is line 5; UP takes lines 6-7, the extra lines 8 on.
    fails(
        &doc(LISTEN, &up("hash_key = \"ip\""), ROUTE),
        8,
        "upstream[0].hash_key",
        "needs balance = \"hash\"",
    );
    fails(
        &doc(
            LISTEN,
            &up("balance = \"hash\"\nhash_key = \"body\""),
            ROUTE,
        ),
        9,
        "upstream[0].hash_key",
        "expected ip, uri, path, header:NAME or cookie:NAME",
    );
    fails(
        &doc(
            LISTEN,
            &up("balance = \"hash\"\nhash_key = \"header:bad header\""),
            ROUTE,
        ),
        9,
        "upstream[0].hash_key",
        "invalid hash_key",
    );
    fails(
        &doc(
            LISTEN,
            &up("balance = \"hash\"\nhash_key = \"cookie:\""),
            ROUTE,
        ),
        9,
        "upstream[0].hash_key",
        "invalid hash_key",
    );
}

#[test]
fn hash_keys_parse_and_default_to_the_client_address() {
    use super::{Balance, HashKey};
    let parsed = |extra: &str| {
        let src = doc(LISTEN, &format!("{UP}\n{extra}"), ROUTE);
        let cfg = parse(&src, Path::new("weir.toml")).expect("valid");
        let up = &cfg.upstreams[0];
        (up.balance, up.hash_key.clone())
    };
    assert_eq!(parsed(""), (Balance::RoundRobin, None));
    assert_eq!(
        parsed("balance = \"random_two\""),
        (Balance::RandomTwo, None)
    );
    assert_eq!(
        parsed("balance = \"hash\""),
        (Balance::Hash, Some(HashKey::Ip))
    );
    assert_eq!(
        parsed("balance = \"hash\"\nhash_key = \"header:X-User\""),
        (
            Balance::Hash,
            Some(HashKey::Header(http::HeaderName::from_static("x-user")))
        )
    );
    assert_eq!(
        parsed("balance = \"hash\"\nhash_key = \"cookie:sid\""),
        (Balance::Hash, Some(HashKey::Cookie("sid".into())))
    );
    assert_eq!(
        parsed("balance = \"hash\"\nhash_key = \"path\""),
        (Balance::Hash, Some(HashKey::Path))
    );
}

#[test]
fn sticky_needs_a_token_cookie_name_and_secure_for_same_site_none() {
    let up = |extra: &str| doc(LISTEN, &format!("{UP}\n{extra}"), ROUTE);
    fails(
        &up("sticky = { cookie = \"a b\" }"),
        8,
        "upstream[0].sticky.cookie",
        "invalid cookie name",
    );
    fails(
        &up("sticky = { same_site = \"none\" }"),
        8,
        "upstream[0].sticky.same_site",
        "needs secure = true",
    );
    fails(
        &up("sticky = { max_age = \"soon\" }"),
        8,
        "upstream[0].sticky.max_age",
        "invalid duration",
    );
    let cfg = parse(&up("sticky = {}"), Path::new("weir.toml")).expect("valid");
    let sticky = cfg.upstreams[0].sticky.clone().expect("sticky");
    assert_eq!(
        (
            sticky.cookie.as_str(),
            sticky.max_age,
            sticky.secure,
            sticky.http_only,
            sticky.same_site
        ),
        ("weir_server", None, false, true, "Lax")
    );
}

#[test]
fn server_names_and_discover() {
    let ok = |up: &str| parse(&doc(LISTEN, up, ROUTE), Path::new("weir.toml"));
    let names =
        ok("name = \"app\"\nservers = [\"app:3000\", { addr = \"b.internal:3001\", weight = 2 }]")
            .expect("names are servers");
    assert_eq!(names.upstreams[0].dns.len(), 2);
    assert!(ok("name = \"app\"\ndiscover = \"_http._tcp.app.service.consul\"").is_ok());
    // SRV records may hold the primaries: named backups alone are fine with discover.
    assert!(ok("name = \"app\"\nservers = [{ addr = \"app:3000\", backup = true }]\ndiscover = \"_app._tcp.x\"").is_ok());
    fails(
        &doc(
            LISTEN,
            "name = \"app\"\nservers = [\"app:3000\", \"APP:3000\"]",
            ROUTE,
        ),
        7,
        "upstream[0].servers[1]",
        "duplicate server app:3000 in this upstream",
    );
    fails(
        &doc(LISTEN, "name = \"app\"\nservers = [\"app:0\"]", ROUTE),
        7,
        "upstream[0].servers[0]",
        "invalid address \"app:0\": port 0",
    );
    fails(
        &doc(LISTEN, "name = \"app\"\nservers = [\"app\"]", ROUTE),
        7,
        "upstream[0].servers[0]",
        "expected IP:port or name:port",
    );
    fails(
        &doc(
            LISTEN,
            "name = \"app\"\nservers = [{ addr = \"app:1\", backup = true }]",
            ROUTE,
        ),
        7,
        "upstream[0].servers",
        "must not be a backup",
    );
    fails(
        &doc(
            LISTEN,
            "name = \"app\"\ndiscover = \"_http._tcp..x\"",
            ROUTE,
        ),
        7,
        "upstream[0].discover",
        "invalid SRV name \"_http._tcp..x\"",
    );
    fails(
        &doc(LISTEN, "name = \"app\"\nservers = []\ndiscover = 5", ROUTE),
        8,
        "upstream[0].discover",
        "invalid type",
    );
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let server = "listen = [\"127.0.0.1:8080\"]\nproxy_protocol = true";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.proxy_protocol",
        "needs trusted_proxies",
    );
    let server =
        "listen = [\"127.0.0.1:8080\",\n  { addr = \"127.0.0.1:8081\", proxy_protocol = true }]";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.listen[1].proxy_protocol",
        "needs trusted_proxies",
    );
}

#[test]
fn resolver_settings() {
    let with = |resolver: &str| format!("{}[resolver]\n{resolver}\n", doc(LISTEN, UP, ROUTE));
    let c = parse(
        &with("nameservers = [\"127.0.0.1:8600\", \"::1\"]\nmin_ttl = \"2s\""),
        Path::new("weir.toml"),
    )
    .expect("valid");
    assert_eq!(c.resolver.nameservers[1].to_string(), "[::1]:53");
    assert_eq!(c.resolver.min_ttl, std::time::Duration::from_secs(2));
    assert_eq!(c.resolver.max_ttl, std::time::Duration::from_secs(60));
    fails(
        &with("nameservers = [\"ns1\"]"),
        13,
        "resolver.nameservers[0]",
        "invalid address \"ns1\"",
    );
    fails(
        &with("min_ttl = \"0s\""),
        13,
        "resolver.min_ttl",
        "greater than zero",
    );
    fails(
        &with("min_ttl = \"2m\""),
        13,
        "resolver.min_ttl",
        "max_ttl must not be less than min_ttl",
    );
    fails(
        &with("min_ttl = \"5s\"\nmax_ttl = \"2s\""),
        14,
        "resolver.max_ttl",
        "max_ttl must not be less than min_ttl",
    );
    fails(&with("ttl = \"5s\""), 13, "resolver.ttl", "unknown field");
}

#[test]
fn cache_mistakes_name_their_keys() {
    let route = "upstream = \"app\"\ncache = { ttl = \"5s\" }";
    fails(
        &doc(LISTEN, UP, route),
        11,
        "route[0].cache",
        "needs a [cache] section",
    );
    let with_cache =
        |route: &str, cache: &str| format!("{}\n[cache]\n{cache}\n", doc(LISTEN, UP, route));
    assert!(parse(&with_cache(route, ""), Path::new("weir.toml")).is_ok());
    fails(
        &with_cache("upstream = \"app\"\ncache = { ttl = \"soon\" }", ""),
        11,
        "route[0].cache.ttl",
        "invalid duration",
    );
    fails(
        &with_cache(
            "upstream = \"app\"\ncache = { stale_if_error = \"0s\" }",
            "",
        ),
        11,
        "route[0].cache.stale_if_error",
        "greater than zero",
    );
    fails(
        &with_cache("upstream = \"app\"\ncache = { shared = true }", ""),
        11,
        "route[0].cache.shared",
        "needs a [redis] section",
    );
    fails(
        &with_cache(route, "memory = \"lots\""),
        14,
        "cache.memory",
        "positive size",
    );
    fails(
        &with_cache(route, "lock_timeout = \"0s\""),
        14,
        "cache.lock_timeout",
        "greater than zero",
    );
    fails(
        &with_cache("upstream = \"app\"\ncache = { ttl = \"1s\", tll = 1 }", ""),
        11,
        "route[0].cache.tll",
        "unknown field `tll`",
    );
    let shared = format!(
        "{}\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
        with_cache(
            "upstream = \"app\"\ncache = { shared = true }",
            "memory = \"1MiB\""
        )
    );
    let config = parse(&shared, Path::new("weir.toml")).expect("valid");
    assert_eq!(config.cache.map(|c| c.memory), Some(1 << 20));
    assert_eq!(
        config.redis.map(|r| r.url),
        Some("redis://127.0.0.1:6379".into())
    );
}

#[test]
fn compress_and_cache_are_not_combined_yet() {
    let route = "upstream = \"app\"\ncompress = true\ncache = { ttl = \"5s\" }";
    fails(
        &format!("{}\n[cache]\n", doc(LISTEN, UP, route)),
        12,
        "route[0].compress",
        "compress and cache on one route are not supported yet",
    );
}

#[test]
fn rate_limit_errors() {
    // The route's `rate_limit` is line 12.
    let route = |limit: &str| doc(LISTEN, UP, &format!("{ROUTE}\nrate_limit = {limit}"));
    fails(
        &route("{ requests = 10, per = \"1s\", scope = \"global\" }"),
        12,
        "route[0].rate_limit.scope",
        "needs a [redis] section",
    );
    fails(
        &route("{ requests = 10, per = \"soon\" }"),
        12,
        "route[0].rate_limit.per",
        "invalid duration",
    );
    fails(
        &route("{ requests = 10, per = \"0s\" }"),
        12,
        "route[0].rate_limit.per",
        "greater than zero",
    );
    fails(
        &route("{ requests = 0, per = \"1s\" }"),
        12,
        "route[0].rate_limit.requests",
        "between 1 and",
    );
    fails(
        &route("{ requests = 5, per = \"1s\", burst = 0 }"),
        12,
        "route[0].rate_limit.burst",
        "between 1 and",
    );
    for bad in ["cookie:a", "header:", "header:a b", "IP", "address"] {
        fails(
            &route(&format!(
                "{{ requests = 5, per = \"1s\", key = \"{bad}\" }}"
            )),
            12,
            "route[0].rate_limit.key",
            "expected ip or header:NAME",
        );
    }
    fails(
        &route("{ requests = 5 }"),
        12,
        "route[0].rate_limit",
        "missing field `per`",
    );
    fails(
        &route("{ requests = 5, per = \"1s\", scope = \"world\" }"),
        12,
        "route[0].rate_limit.scope",
        "unknown variant",
    );

    let cfg = parse(
        &route("{ requests = 5, per = \"1m\", key = \"header:X-Api-Key\" }"),
        Path::new("weir.toml"),
    )
    .expect("valid");
    let limit = cfg.routes[0].rate_limit.clone().expect("rate_limit");
    assert_eq!(
        (limit.requests, limit.per, limit.burst, limit.scope),
        (
            5,
            std::time::Duration::from_secs(60),
            5,
            super::LimitScope::Local
        ),
        "burst defaults to requests, scope to local"
    );
    assert_eq!(
        limit.key,
        super::LimitKey::Header(http::HeaderName::from_static("x-api-key"))
    );
}

#[test]
fn redis_errors() {
    let with_redis = |redis: &str| {
        format!(
            "{}\n[redis]\n{redis}\n",
            doc(
                LISTEN,
                UP,
                &format!(
                    "{ROUTE}\nrate_limit = {{ requests = 5, per = \"1s\", scope = \"global\" }}"
                )
            )
        )
    };
    // [redis] is line 14.
    fails(
        &with_redis("url = \"http://127.0.0.1:6379\""),
        15,
        "redis.url",
        "invalid Redis URL",
    );
    fails(
        &with_redis("url = \"redis://127.0.0.1:6379\"\nfail = \"maybe\""),
        16,
        "redis.fail",
        "unknown variant",
    );
    fails(
        &with_redis("url = \"redis://127.0.0.1:6379\"\ntimeout = \"fast\""),
        16,
        "redis.timeout",
        "invalid duration",
    );
    fails(
        &with_redis("fail = \"open\""),
        14,
        "redis",
        "missing field `url`",
    );
    let cfg = parse(
        &with_redis("url = \"redis://127.0.0.1:6379\"\nfail = \"closed\""),
        Path::new("weir.toml"),
    )
    .expect("valid");
    let redis = cfg.redis.expect("redis");
    assert_eq!(
        (redis.fail, redis.timeout),
        (
            super::RedisFail::Closed,
            std::time::Duration::from_millis(100)
        )
    );
}

#[test]
fn header_rules_cannot_touch_weir_s_own_headers() {
    let route = |rules: &str| format!("{ROUTE}\n{rules}");
    for (rules, key, msg) in [
        (
            "request_headers = { remove = [\"X-Forwarded-For\"] }",
            "route[0].request_headers.remove[0]",
            "\"X-Forwarded-For\" is a forwarding header weir sets",
        ),
        (
            "request_headers = { set = { \"host\" = \"evil\" } }",
            "route[0].request_headers.set.host",
            "\"host\" is a forwarding header weir sets",
        ),
        (
            "request_headers = { set = { \"X-Real-IP\" = \"1.2.3.4\" } }",
            "route[0].request_headers.set.X-Real-IP",
            "cannot be changed by a rule",
        ),
        (
            "response_headers = { remove = [\"Transfer-Encoding\"] }",
            "route[0].response_headers.remove[0]",
            "\"Transfer-Encoding\" frames the message",
        ),
        (
            "response_headers = { set = { \"Content-Length\" = \"3\" } }",
            "route[0].response_headers.set.Content-Length",
            "frames the message",
        ),
        (
            "request_headers = { remove = [\"connection\"] }",
            "route[0].request_headers.remove[0]",
            "frames the message",
        ),
        (
            "response_headers = { set = { \"Content-Encoding\" = \"gzip\" } }",
            "route[0].response_headers.set.Content-Encoding",
            "cannot be changed by a rule",
        ),
    ] {
        fails(&doc(LISTEN, UP, &route(rules)), 12, key, msg);
    }
}

#[test]
fn header_rules_cannot_touch_the_request_id() {
    let server = format!("{LISTEN}\nrequest_id = \"X-Request-Id\"");
    for (rules, key) in [
        (
            "request_headers = { remove = [\"x-request-id\"] }",
            "route[0].request_headers.remove[0]",
        ),
        (
            "response_headers = { set = { \"X-Request-ID\" = \"1\" } }",
            "route[0].response_headers.set.X-Request-ID",
        ),
    ] {
        let src = doc(&server, UP, &format!("{ROUTE}\n{rules}"));
        fails(&src, 13, key, "is [server] request_id");
    }
    // Without `request_id`, the header is the app's to change.
    let src = doc(
        LISTEN,
        UP,
        &format!("{ROUTE}\nrequest_headers = {{ remove = [\"x-request-id\"] }}"),
    );
    assert!(parse(&src, Path::new("weir.toml")).is_ok());
}

#[test]
fn header_rules_need_valid_names_and_values() {
    let route = |rules: &str| format!("{ROUTE}\n{rules}");
    for (rules, key, msg) in [
        (
            "response_headers = { remove = [\"X Powered\"] }",
            "route[0].response_headers.remove[0]",
            "invalid header name \"X Powered\"",
        ),
        (
            "request_headers = { set = { \":path\" = \"/\" } }",
            "route[0].request_headers.set.:path",
            "invalid header name",
        ),
        (
            "response_headers = { set = { \"X-A\" = \"a\\nb\" } }",
            "route[0].response_headers.set.X-A",
            "invalid header value",
        ),
        (
            "response_headers = { set = { \"X-A\" = \"1\" }, remove = [\"x-a\"] }",
            "route[0].response_headers.set.X-A",
            "is both set and removed",
        ),
        (
            "response_headers = { set = { \"X-A\" = \"1\", \"x-a\" = \"2\" } }",
            "route[0].response_headers.set.x-a",
            "is set twice",
        ),
        (
            "response_headers = { add = { \"X-A\" = \"1\" } }",
            "route[0].response_headers.add",
            "unknown field `add`",
        ),
    ] {
        fails(&doc(LISTEN, UP, &route(rules)), 12, key, msg);
    }
}

#[test]
fn request_id_must_be_a_header_weir_does_not_own() {
    let server = "listen = [\"127.0.0.1:8080\"]\nrequest_id = \"X Request\"";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.request_id",
        "invalid header name",
    );
    let server = "listen = [\"127.0.0.1:8080\"]\nrequest_id = \"X-Forwarded-For\"";
    fails(
        &doc(server, UP, ROUTE),
        3,
        "server.request_id",
        "a header weir sets",
    );
}

#[test]
fn access_lists_hold_networks() {
    let route = "path = \"/\"\nupstream = \"app\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]";
    fails(
        &doc(LISTEN, UP, route),
        12,
        "route[0].allow[1]",
        "invalid CIDR",
    );
    let route = "path = \"/\"\nupstream = \"app\"\ndeny = [\"nonsense\"]";
    fails(
        &doc(LISTEN, UP, route),
        12,
        "route[0].deny[0]",
        "invalid CIDR",
    );
    let route = "path = \"/\"\nupstream = \"app\"\nallow = []";
    fails(
        &doc(LISTEN, UP, route),
        12,
        "route[0].allow",
        "at least one network",
    );
}
