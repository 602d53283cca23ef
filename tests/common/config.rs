//! Config texts for the proxy under test: small TOML documents built from
//! backend addresses, every listener on an ephemeral port unless a test names one.

use std::net::SocketAddr;

/// A config with `listen` (TOML array body), `server_extra` keys in `[server]`,
/// the access log off, one upstream `app` over `servers` (TOML server entries)
/// with `upstream_extra` keys, and a `/` route to it.
pub fn config_with(
    listen: &str,
    servers: &[String],
    upstream_extra: &str,
    server_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = [{listen}]
{server_extra}

[log]
access = "off"

[[upstream]]
name = "app"
servers = [{servers}]
{upstream_extra}

[[route]]
path = "/"
upstream = "app"
"#,
        servers = servers.join(", ")
    )
}

/// [`config_with`] listening on `127.0.0.1:0`, balancing `app` by `balance`,
/// with `extra` keys in the upstream.
pub fn one_upstream(balance: &str, servers: &[String], extra: &str) -> String {
    let upstream_extra = format!("balance = \"{balance}\"\n{extra}");
    config_with("\"127.0.0.1:0\"", servers, &upstream_extra, "")
}

/// `"addr"` for a servers list.
pub fn server(addr: SocketAddr) -> String {
    format!("\"{addr}\"")
}

/// `toml` with `keys` added to its `[server]` table (after a `127.0.0.1:0` listen line).
pub fn with_server_keys(toml: &str, keys: &str) -> String {
    toml.replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\"]\n{keys}"),
    )
}

/// `toml` with an `[admin]` listener on an ephemeral port, and a token when given.
pub fn with_admin(toml: &str, token: Option<&str>) -> String {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    format!("{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n{token}")
}
