//! HTTP/1.1 `Upgrade` (WebSocket and friends): the handshake is forwarded,
//! and only an upstream `101 Switching Protocols` turns the exchange into a
//! raw bidirectional tunnel between the two connections.
//!
//! `Upgrade` and `Connection` are hop-by-hop and stripped everywhere else;
//! here they are put back on purpose. A refused upgrade (any other status)
//! is an ordinary response and the client connection stays HTTP.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use crate::exchange::Exchange;
use crate::shutdown::Shutdown;
use crate::upstream::InFlightGuard;

mod idle;

use idle::{LastTraffic, Watched};

/// What a tunnel needs from the client connection it came from.
#[derive(Debug, Clone)]
pub struct TunnelContext {
    /// The client connection's `max_connections` slot: a tunnel outlives the
    /// HTTP connection that opened it, and graceful shutdown waits for every
    /// slot, so the tunnel holds a share of it until it closes.
    pub _permit: Arc<OwnedSemaphorePermit>,
    /// Raised at graceful shutdown; tunnels then get `shutdown_timeout` to finish.
    pub shutdown: Shutdown,
}

/// How long a tunnel may live in the two cases where weir closes it.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    /// No bytes either way for this long closes the tunnel (`tunnel_idle_timeout`).
    pub idle: Duration,
    /// After graceful shutdown starts, the tunnel is closed after this (`shutdown_timeout`).
    pub shutdown: Duration,
}

/// A client's request to switch protocols, taken out of its request head.
#[derive(Debug)]
pub struct UpgradeRequest {
    /// The client's `Upgrade` value, such as `websocket`.
    protocol: HeaderValue,
    /// Resolves to the client connection once weir has sent the 101.
    client: OnUpgrade,
}

/// Takes the upgrade out of an HTTP/1.1 request that asks for one
/// (`Connection: upgrade` and an `Upgrade` header). `h2c` is refused here:
/// switching weir's own hop to HTTP/2 is not something to pass upstream.
pub fn take(parts: &mut http::request::Parts) -> Option<UpgradeRequest> {
    let protocol = wanted(parts.version, &parts.headers)?;
    let client = parts.extensions.remove::<OnUpgrade>()?;
    Some(UpgradeRequest { protocol, client })
}

/// The protocol a request head asks to upgrade to, if it is an upgrade weir passes on.
fn wanted(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || !connection_has_upgrade(headers) {
        return None;
    }
    let protocol = headers.get(header::UPGRADE)?;
    let is_h2c = protocol.to_str().map_or(true, |p| {
        p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
    });
    (!is_h2c).then(|| protocol.clone())
}

/// Sets the handshake headers a hop-by-hop strip removed.
fn set_handshake(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::UPGRADE, protocol.clone());
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

impl UpgradeRequest {
    /// Puts the handshake headers back after hop-by-hop stripping, for the upstream.
    pub fn restore(&self, headers: &mut HeaderMap) {
        set_handshake(headers, &self.protocol);
    }

    /// Looks at the upstream's answer (before its hop-by-hop headers are
    /// stripped): a 101 yields the tunnel to open; anything else drops the
    /// client's upgrade, so its connection goes on as HTTP.
    pub fn accept(self, resp: &mut http::response::Parts) -> Option<Tunnel> {
        if resp.status != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let upstream = resp.extensions.remove::<OnUpgrade>()?;
        let protocol = resp
            .headers
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or(self.protocol);
        Some(Tunnel {
            protocol,
            client: self.client,
            upstream,
        })
    }
}

/// An accepted upgrade, opened once the 101 goes out to the client.
#[derive(Debug)]
pub struct Tunnel {
    /// The protocol the upstream switched to.
    protocol: HeaderValue,
    /// The client connection, once hyper has written the 101.
    client: OnUpgrade,
    /// The upstream connection, released by hyper's client on the 101.
    upstream: OnUpgrade,
}

impl Tunnel {
    /// Restores the 101's handshake headers (after stripping) and starts the
    /// tunnel task. The exchange's in-flight guard moves into the task, so the
    /// server counts as busy for least_conn until the tunnel closes; the
    /// upstream connection is the tunnel's now and never returns to the pool.
    pub fn open(
        self,
        headers: &mut HeaderMap,
        exchange: &mut Exchange,
        context: TunnelContext,
        limits: TunnelLimits,
    ) {
        set_handshake(headers, &self.protocol);
        let guard = exchange.guard.take();
        drop(exchange.conn.take());
        tokio::spawn(self.run(guard, context, limits));
    }

    async fn run(self, guard: Option<InFlightGuard>, context: TunnelContext, limits: TunnelLimits) {
        let protocol = self.protocol.to_str().unwrap_or("?").to_owned();
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(both) => both,
            Err(error) => {
                debug!(%error, protocol, "upgrade did not complete");
                return;
            }
        };
        let traffic = Arc::new(LastTraffic::new());
        let mut client = Watched::new(TokioIo::new(client), traffic.clone());
        let mut upstream = Watched::new(TokioIo::new(upstream), traffic.clone());
        let upstream_addr = guard.as_ref().map(|g| g.server().addr);
        debug!(protocol, upstream = ?upstream_addr, "tunnel open");
        let shutdown = async {
            context.shutdown.raised().await;
            tokio::time::sleep(limits.shutdown).await;
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => debug!(protocol, upstream = ?upstream_addr,
                    bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(error) => debug!(protocol, upstream = ?upstream_addr, %error,
                    "tunnel ended with an error"),
            },
            _ = traffic.idle_for(limits.idle) => info!(protocol, upstream = ?upstream_addr,
                timeout = ?limits.idle, "tunnel idle; closing"),
            _ = shutdown => info!(protocol, upstream = ?upstream_addr,
                "shutdown_timeout reached; closing tunnel"),
        }
        // Both connections close as they drop here; then the server's
        // in-flight count and the connection slot are given back.
        drop((client, upstream));
        drop(guard);
        drop(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> HeaderMap {
        headers
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn only_http11_requests_with_connection_upgrade_are_upgrades() {
        let ws = head(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(wanted(Version::HTTP_11, &ws).expect("upgrade"), "websocket");
        assert!(wanted(Version::HTTP_10, &ws).is_none());
        assert!(wanted(Version::HTTP_11, &head(&[("upgrade", "websocket")])).is_none());
        assert!(wanted(Version::HTTP_11, &head(&[("connection", "upgrade")])).is_none());
        let h2c = head(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(wanted(Version::HTTP_11, &h2c).is_none());
    }

    #[test]
    fn the_handshake_survives_hop_by_hop_stripping() {
        let mut headers = head(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
        ]);
        let protocol = wanted(Version::HTTP_11, &headers).expect("upgrade");
        crate::headers::strip_hop_by_hop(&mut headers);
        set_handshake(&mut headers, &protocol);
        assert_eq!(headers.get("upgrade").expect("upgrade"), "websocket");
        assert_eq!(headers.get("connection").expect("connection"), "upgrade");
        assert!(headers.get("x-secret").is_none());
    }
}
