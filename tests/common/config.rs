//! Config texts for the proxy under test: small TOML documents built from
//! backend addresses, every listener on an ephemeral port.

use std::net::SocketAddr;

/// A config with one upstream `app` over `servers` (TOML server entries) and a `/` route.
pub fn one_upstream(balance: &str, servers: &[String], extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[log]
access = "off"

[[upstream]]
name = "app"
balance = "{balance}"
servers = [{servers}]
{extra}

[[route]]
path = "/"
upstream = "app"
"#,
        servers = servers.join(", ")
    )
}

/// `"addr"` for a servers list.
pub fn server(addr: SocketAddr) -> String {
    format!("\"{addr}\"")
}

/// `toml` with an `[admin]` listener on an ephemeral port, and a token when given.
pub fn with_admin(toml: &str, token: Option<&str>) -> String {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    format!("{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n{token}")
}
