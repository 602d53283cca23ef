//! `/api/upstreams`: server states as JSON, and draining or enabling a server.

use std::net::SocketAddr;

use http::{Response, StatusCode};
use serde_json::{json, Value};
use tracing::info;

use super::history::round;
use super::{respond, text, Body, State};
use crate::upstream::{Server, Upstream};

/// The operational view of one server; its health read once, so the fields agree.
pub(super) fn server_json(server: &Server) -> Value {
    let health = server.health();
    json!({
        "addr": server.config.addr.to_string(),
        "state": health.word(server.config.backup),
        "draining": health.draining,
        "healthy": health.healthy(),
        "down_by": health.down_by().collect::<Vec<_>>(),
        "slow_start": health.ramp.map(|share| round(share, 2)),
        "backup": server.config.backup,
        "weight": server.config.weight,
        "in_flight": server.state.in_flight(),
        "from": server.config.from.as_deref(),
    })
}

fn upstream_json(upstream: &Upstream) -> Value {
    json!({
        "name": upstream.name(),
        "servers": upstream.servers.iter().map(server_json).collect::<Vec<_>>(),
    })
}

/// `GET /api/upstreams`.
pub(super) fn list(state: &State) -> Value {
    let snapshot = state.snapshot.load();
    json!({
        "upstreams": snapshot.upstreams.iter().map(|u| upstream_json(u)).collect::<Vec<_>>(),
    })
}

/// `POST /api/upstreams/{name}/servers/{addr}/drain` and `…/enable`.
pub(super) fn set_draining(
    state: &State,
    name: &str,
    addr: &str,
    draining: bool,
) -> Response<Body> {
    let snapshot = state.snapshot.load();
    let name = percent_decode(name);
    let Some(upstream) = snapshot.upstream(&name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("404 Not Found: no upstream named {name:?}\n"),
        );
    };
    let addr_text = percent_decode(addr);
    let Ok(addr) = addr_text.parse::<SocketAddr>() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("404 Not Found: {addr_text:?} is not a server address (ip:port)\n"),
        );
    };
    let Some(server) = upstream.server(addr) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("404 Not Found: upstream {name:?} has no server {addr}\n"),
        );
    };
    let was = server.health().draining;
    server.state.set_draining(draining);
    if was != draining {
        if draining {
            info!(upstream = %name, server = %addr, in_flight = server.state.in_flight(), "server drained");
        } else {
            info!(upstream = %name, server = %addr, "server enabled");
        }
    }
    let body = json!({ "upstream": name, "server": server_json(server) });
    respond(StatusCode::OK, "application/json", body.to_string().into())
}

/// Decodes `%XX` escapes (IPv6 addresses arrive as `%5B::1%5D:80`); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_ipv6_brackets_and_keeps_bad_escapes() {
        assert_eq!(percent_decode("%5B::1%5D:80"), "[::1]:80");
        assert_eq!(percent_decode("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
    }
}
