//! End-to-end tests of `parse`: the README's example, the shipped
//! `config/weir.toml`, every validation error's position and key, and properties.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::error_tests::fails;
use super::*;

const README_EXAMPLE: &str = r#"
[server]
listen = ["0.0.0.0:80"]            # one or more addresses; "[::]:80" for IPv6

[admin]                             # optional; absent = no admin listener
listen = "127.0.0.1:9090"

[log]
level = "info"                      # error | warn | info | debug | trace

[[upstream]]
name = "express_servers"
balance = "round_robin"             # round_robin | least_conn  (more may follow)
servers = ["127.0.0.1:3000", "127.0.0.1:3001", "127.0.0.1:3002"]

[[route]]
host = "yoursite.com"               # optional: exact host, or "*.example.com"; absent = any host
path = "/"                          # prefix, default "/"; the longest matching prefix wins
upstream = "express_servers"
"#;

fn ok(src: &str) -> Config {
    match parse(src, Path::new("weir.toml")) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}\n{src}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn server(a: &str) -> ServerConfig {
    ServerConfig {
        addr: addr(a),
        weight: 1,
        backup: false,
        from: None,
    }
}

#[test]
fn readme_example_parses_with_defaults() {
    let c = ok(README_EXAMPLE);
    let expected = Config {
        server: ServerSettings {
            listen: vec![ListenerConfig {
                addr: addr("0.0.0.0:80"),
                tls: None,
                redirect_https: false,
                proxy_protocol: false,
            }],
            threads: 0,
            max_connections: 20_000,
            shutdown_timeout: Duration::from_secs(30),
            trusted_proxies: vec![],
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_body_size: None,
            body_read_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
            underscores_in_headers: false,
            request_id: None,
        },
        admin: Some(AdminSettings {
            listen: addr("127.0.0.1:9090"),
            token: None,
        }),
        log: LogSettings {
            level: LogLevel::Info,
            format: LogFormat::Text,
            access: AccessLog::Stdout,
            access_format: AccessFormat::Combined,
        },
        resolver: ResolverSettings::default(),
        upstreams: vec![UpstreamConfig {
            hash_key: None,
            sticky: None,
            name: "express_servers".into(),
            balance: Balance::RoundRobin,
            protocol: UpstreamProtocol::Http1,
            servers: vec![
                server("127.0.0.1:3000"),
                server("127.0.0.1:3001"),
                server("127.0.0.1:3002"),
            ],
            dns: vec![],
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            keepalive: 64,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            retries: 2,
            retry_timeout: None,
            request_timeout: None,
            fail_on_status: vec![],
            slow_start: None,
            health_check: None,
        }],
        routes: vec![RouteConfig {
            host: Some(HostPattern::Exact("yoursite.com".into())),
            path: "/".into(),
            upstream: "express_servers".into(),
            request_timeout: None,
            cache: None,
            rate_limit: None,
            strip_prefix: false,
            compress: false,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            access: None,
        }],
        cache: None,
        redis: None,
    };
    assert_eq!(c, expected);
}

#[test]
fn shipped_config_parses() {
    let c = ok(include_str!("../../config/weir.toml"));
    assert_eq!(c.server.listen[0].addr, addr("127.0.0.1:8080"));
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].name, "express_servers");
    let servers: Vec<_> = c.upstreams[0].servers.iter().map(|s| s.addr).collect();
    let want: Vec<_> = (3000..=3002)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    assert_eq!(servers, want);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].path, "/");
    assert_eq!(c.routes[0].host, None);
    let admin = c.admin.as_ref().map(|a| a.listen);
    assert_eq!(admin, Some(addr("127.0.0.1:9090")));
}

#[test]
fn every_key_is_read() {
    let c = ok(r#"
[server]
listen = ["127.0.0.1:8080", { addr = "[::1]:8443" }]
threads = 4
max_connections = 100
shutdown_timeout = "5s"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "10.1.2.3/16", "::1"]
header_read_timeout = "500ms"
idle_timeout = "1m"
body_read_timeout = "2s"

[admin]
listen = "127.0.0.1:9090"
token = "s3cret"

[log]
level = "debug"
format = "json"
access = "/var/log/weir/access.log"
access_format = "json"

[[upstream]]
name = "api"
balance = "least_conn"
servers = [{ addr = "127.0.0.1:3000", weight = 256 }, { addr = "127.0.0.1:3001", backup = true }, "10.0.0.1:80"]
connect_timeout = "1s"
response_timeout = "30s"
keepalive = 0
max_fails = 0
fail_timeout = "20s"
retries = 0

[upstream.health_check]
path = "/health"
interval = "5s"
timeout = "250ms"
rise = 1
fall = 1

[[route]]
host = "*.Example.COM."
path = "/api"
upstream = "api"

[[route]]
upstream = "api"
"#);
    let s = &c.server;
    assert_eq!(s.listen[1].addr, addr("[::1]:8443"));
    assert_eq!((s.threads, s.max_connections), (4, 100));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    let nets: Vec<String> = s.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.168.1.7/32", "10.1.0.0/16", "::1/128"]
    );
    assert_eq!(s.header_read_timeout, Duration::from_millis(500));
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.body_read_timeout, Duration::from_secs(2));
    assert_eq!(
        c.admin.as_ref().and_then(|a| a.token.as_deref()),
        Some("s3cret")
    );
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.log.access,
        AccessLog::File("/var/log/weir/access.log".into())
    );
    assert_eq!(c.log.access_format, AccessFormat::Json);
    let u = &c.upstreams[0];
    assert_eq!(u.balance, Balance::LeastConn);
    assert_eq!((u.servers[0].weight, u.servers[0].backup), (256, false));
    assert_eq!((u.servers[1].weight, u.servers[1].backup), (1, true));
    assert_eq!((u.keepalive, u.max_fails, u.retries), (0, 0, 0));
    assert_eq!(u.response_timeout, Duration::from_secs(30));
    let hc = u.health_check.as_ref().expect("health check");
    assert_eq!(hc.path, "/health");
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(5), Duration::from_millis(250))
    );
    assert_eq!((hc.rise, hc.fall), (1, 1));
    assert_eq!(
        c.routes[0].host,
        Some(HostPattern::Wildcard(".example.com".into()))
    );
    assert_eq!(c.routes[1].path, "/");
}

#[test]
fn access_log_words() {
    let doc = |access: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[log]\naccess = \"{access}\"\n\
             [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:2\"]\n[[route]]\nupstream = \"a\"\n"
        )
    };
    assert_eq!(ok(&doc("off")).log.access, AccessLog::Off);
    assert_eq!(ok(&doc("stdout")).log.access, AccessLog::Stdout);
    fails(&doc(""), 4, "log.access", "file path");
}

#[test]
fn summary_lists_listeners_upstreams_routes_admin() {
    let s = ok(README_EXAMPLE).summary();
    assert_eq!(
        s,
        "listen: 0.0.0.0:80\n\
         upstream express_servers (round_robin):\n  \
         127.0.0.1:3000 weight 1\n  127.0.0.1:3001 weight 1\n  127.0.0.1:3002 weight 1\n\
         route yoursite.com / -> express_servers\n\
         admin: 127.0.0.1:9090\n"
    );
}

#[test]
fn load_reads_a_file_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("weir-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("weir.toml");
    std::fs::write(&path, include_str!("../../config/weir.toml")).expect("write");
    assert!(load(&path).is_ok());
    let missing = dir.join("missing.toml");
    let e = load(&missing).expect_err("missing file");
    assert_eq!((e.line, e.column), (0, 0));
    assert!(e.io.is_some());
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server as the generator writes it: port, weight, backup, and whether to
/// use the short string form (only possible for weight 1, not backup).
fn server_entries() -> impl Strategy<Value = Vec<(u16, u32, bool, bool)>> {
    prop::collection::btree_map(
        1u16..=65535,
        (1u32..=256, any::<bool>(), any::<bool>()),
        1..12,
    )
    .prop_map(|m| m.into_iter().map(|(p, (w, b, s))| (p, w, b, s)).collect())
    // At least one server must take traffic normally.
    .prop_filter("needs a primary", |v: &Vec<(u16, u32, bool, bool)>| {
        v.iter().any(|s| !s.2)
    })
}

fn render(servers: &[(u16, u32, bool, bool)], balance: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|&(port, weight, backup, short)| {
            if short && weight == 1 && !backup {
                format!("\"127.0.0.1:{port}\"")
            } else {
                format!("{{ addr = \"127.0.0.1:{port}\", weight = {weight}, backup = {backup} }}")
            }
        })
        .collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[[upstream]]\nname = \"pool\"\n\
         balance = \"{balance}\"\nservers = [\n  {}\n]\n\n[[route]]\nupstream = \"pool\"\n",
        list.join(",\n  ")
    )
}

proptest! {
    #[test]
    fn generated_pools_round_trip(servers in server_entries(), least in any::<bool>()) {
        let balance = if least { "least_conn" } else { "round_robin" };
        let c = ok(&render(&servers, balance));
        let got: Vec<(u16, u32, bool)> = c.upstreams[0]
            .servers
            .iter()
            .map(|s| (s.addr.port(), s.weight, s.backup))
            .collect();
        let want: Vec<(u16, u32, bool)> = servers
            .iter()
            .map(|&(p, w, b, short)| if short && w == 1 && !b { (p, 1, false) } else { (p, w, b) })
            .collect();
        prop_assert_eq!(got, want);
        let expected = if least { Balance::LeastConn } else { Balance::RoundRobin };
        prop_assert_eq!(c.upstreams[0].balance, expected);
    }

    #[test]
    fn out_of_range_weights_are_rejected_on_their_line(weight in prop_oneof![-1000i64..=0, 257i64..=100_000]) {
        let src = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstream]]\nname = \"p\"\nservers = [\n\
             \"127.0.0.1:1\",\n{{ addr = \"127.0.0.1:2\", weight = {weight} }}]\n[[route]]\nupstream = \"p\"\n"
        );
        let e = parse(&src, Path::new("w.toml")).expect_err("weight out of range");
        prop_assert_eq!(e.line, 7);
        prop_assert_eq!(e.key, "upstream[0].servers[1].weight");
    }

    #[test]
    fn garbage_never_panics(src in "\\PC{0,200}") {
        if let Err(e) = parse(&src, Path::new("g.toml")) {
            let lines = src.split('\n').count();
            for e in e.each() {
                prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {}: {}", e.line, lines, e);
            }
        }
    }

    #[test]
    fn mangled_valid_configs_never_panic(cut in 0usize..2000, junk in "[\\[\\]{}=\",.a-z0-9 \n]{0,8}") {
        let base = include_str!("../../config/weir.toml");
        let mut at = cut.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let src = format!("{}{}{}", &base[..at], junk, &base[at..]);
        if let Err(e) = parse(&src, Path::new("g.toml")) {
            for e in e.each() {
                prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
            }
        }
    }
}

#[test]
fn limits_timeouts_and_health_keys_parse() {
    let c = ok(r#"
[server]
listen = ["127.0.0.1:0"]
max_header_size = "16KiB"
max_headers = 200
max_body_size = "10MB"
underscores_in_headers = true

[[upstream]]
name = "a"
servers = ["127.0.0.1:3000", "127.0.0.1:3001"]
retry_timeout = "5s"
request_timeout = "30s"
fail_on_status = [502, 503]
slow_start = "20s"
[upstream.health_check]
path = "/health"
status = [200, 204]
host = "health.internal"

[[route]]
upstream = "a"
request_timeout = "2s"
"#);
    assert_eq!(c.server.max_header_size, 16 * 1024);
    assert_eq!(c.server.max_headers, 200);
    assert_eq!(c.server.max_body_size, Some(10 * 1024 * 1024));
    assert!(c.server.underscores_in_headers);
    let u = &c.upstreams[0];
    assert_eq!(u.retry_timeout, Some(Duration::from_secs(5)));
    assert_eq!(u.request_timeout, Some(Duration::from_secs(30)));
    assert_eq!(u.fail_on_status, vec![502, 503]);
    assert_eq!(u.slow_start, Some(Duration::from_secs(20)));
    let hc = u.health_check.as_ref().expect("health check");
    assert_eq!(hc.status, vec![200, 204]);
    assert_eq!(hc.host.as_deref(), Some("health.internal"));
    assert_eq!(c.routes[0].request_timeout, Some(Duration::from_secs(2)));
}

/// A valid document around `[server]` and `[log]` bodies.
fn with_server_and_log(server: &str, log: &str) -> String {
    format!(
        "[server]\n{server}\n[log]\n{log}\n\
         [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:2\"]\n[[route]]\nupstream = \"a\"\n"
    )
}

#[test]
fn a_single_listener_may_be_a_plain_string_or_one_table() {
    let listen = |value: &str| with_server_and_log(&format!("listen = {value}"), "");
    let as_string = ok(&listen("\"127.0.0.1:8080\""));
    let as_list = ok(&listen("[\"127.0.0.1:8080\"]"));
    assert_eq!(as_string.server.listen, as_list.server.listen);
    assert_eq!(as_string.server.listen[0].addr, addr("127.0.0.1:8080"));
    let as_table = ok(&listen(
        "{ addr = \"127.0.0.1:8080\", redirect_https = true }",
    ));
    assert_eq!(
        as_table.server.listen,
        [ListenerConfig {
            addr: addr("127.0.0.1:8080"),
            tls: None,
            redirect_https: true,
            proxy_protocol: false,
        }]
    );
    let tls = ok(&listen(
        "{ addr = \"127.0.0.1:8443\", tls = { cert = \"a.pem\", key = \"a.key\" } }",
    ));
    assert!(tls.server.listen[0].tls.is_some());
}

#[test]
fn a_single_listener_error_names_server_listen() {
    let listen = |value: &str| with_server_and_log(&format!("listen = {value}"), "");
    fails(
        &listen("\"8080\""),
        2,
        "server.listen",
        "invalid address \"8080\"",
    );
    fails(
        &listen("{ addr = \"nowhere\" }"),
        2,
        "server.listen.addr",
        "invalid address",
    );
    fails(
        &listen("{ addr = \"127.0.0.1:1\", bogus = 1 }"),
        2,
        "server.listen.bogus",
        "unknown field `bogus`",
    );
    fails(
        &listen("{ addr = \"127.0.0.1:1\", tls = [] }"),
        2,
        "server.listen.tls",
        "at least one certificate",
    );
    fails(&listen("5"), 2, "server.listen", "a list of them");
}

#[test]
fn a_relative_access_log_is_relative_to_the_config_file() {
    let access = |value: &str, file: &str| {
        let src = with_server_and_log("listen = \"127.0.0.1:1\"", &format!("access = {value:?}"));
        match parse(&src, Path::new(file)) {
            Ok(c) => c.log.access,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        access("logs/access.log", "/etc/weir/weir.toml"),
        AccessLog::File("/etc/weir/logs/access.log".into())
    );
    assert_eq!(
        access("/var/log/weir/access.log", "/etc/weir/weir.toml"),
        AccessLog::File("/var/log/weir/access.log".into())
    );
    // A config named without a directory is in the working directory.
    assert_eq!(
        access("access.log", "weir.toml"),
        AccessLog::File("access.log".into())
    );
    // The words stay words, wherever the file is.
    assert_eq!(access("stdout", "/etc/weir/weir.toml"), AccessLog::Stdout);
    assert_eq!(access("off", "/etc/weir/weir.toml"), AccessLog::Off);
}

#[test]
fn certificate_and_access_log_paths_share_one_base() {
    let src = with_server_and_log(
        "listen = { addr = \"127.0.0.1:8443\", tls = { cert = \"tls/site.pem\", key = \"tls/site.key\" } }",
        "access = \"logs/access.log\"",
    );
    let c = match parse(&src, Path::new("/srv/weir/weir.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let tls = c.server.listen[0].tls.as_ref().expect("tls listener");
    assert_eq!(tls.certs[0].cert, Path::new("/srv/weir/tls/site.pem"));
    assert_eq!(
        c.log.access,
        AccessLog::File("/srv/weir/logs/access.log".into())
    );
}
