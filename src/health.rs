//! Active health checks: one probing task per server of each upstream that
//! has `[upstream.health_check]`, kept in step with the config by reloads.
//!
//! The decision logic is [`HealthMachine`], a pure state machine; the tasks
//! only do the probing I/O and feed it results.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::body::RequestBody;
use crate::config::{HealthCheckConfig, UpstreamProtocol};
use crate::snapshot::Snapshot;
use crate::upstream::{self, ServerState};

/// Consecutive probe results turned into up/down decisions (`rise`/`fall`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

impl HealthMachine {
    /// A machine starting in state `up`.
    pub fn new(rise: u32, fall: u32, up: bool) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up,
            streak: 0,
        }
    }

    /// Records one probe; returns the new state when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// The running probe tasks, by (upstream, server).
#[derive(Debug, Default)]
pub struct HealthChecks {
    tasks: HashMap<(String, SocketAddr), Probe>,
}

#[derive(Debug)]
struct Probe {
    config: ProbeConfig,
    state: Arc<ServerState>,
    task: JoinHandle<()>,
}

impl HealthChecks {
    /// Starts, restarts and stops probes so they match `snapshot`. A server
    /// keeps its health across this; a server without checks counts as up.
    pub fn sync(&mut self, snapshot: &Snapshot) {
        let mut wanted: HashMap<(String, SocketAddr), (ProbeConfig, Arc<ServerState>)> =
            HashMap::new();
        for upstream in &snapshot.upstreams {
            for server in &upstream.servers {
                match &upstream.config.health_check {
                    Some(check) => {
                        let key = (upstream.name().to_owned(), server.config.addr);
                        let config = ProbeConfig {
                            check: check.clone(),
                            protocol: upstream.config.protocol,
                        };
                        wanted.insert(key, (config, server.state.clone()));
                    }
                    None => server.state.set_active_up(true),
                }
            }
        }
        self.tasks.retain(|key, probe| {
            let keep = wanted.get(key).is_some_and(|(config, state)| {
                *config == probe.config && Arc::ptr_eq(state, &probe.state)
            });
            if !keep {
                probe.task.abort();
            }
            keep
        });
        for (key, (config, state)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run(key.0.clone(), config.clone(), state.clone()));
            self.tasks.insert(
                key,
                Probe {
                    config,
                    state,
                    task,
                },
            );
        }
    }

    /// Stops every probe.
    pub fn stop(&mut self) {
        for (_, probe) in self.tasks.drain() {
            probe.task.abort();
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(upstream: String, probe_config: ProbeConfig, state: Arc<ServerState>) {
    let addr = state.addr;
    let config = &probe_config.check;
    let mut machine = HealthMachine::new(config.rise, config.fall, state.is_active_up());
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result =
            tokio::time::timeout(config.timeout, probe(addr, config, probe_config.protocol))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", config.timeout)));
        if let Err(reason) = &result {
            debug!(upstream = %upstream, server = %addr, %reason, "health probe failed");
        }
        match machine.record(result.is_ok()) {
            Some(true) => {
                info!(upstream = %upstream, server = %addr, reason = "health checks passed",
                    rise = config.rise, "server up");
                state.set_active_up(true);
            }
            Some(false) => {
                let reason = result.err().unwrap_or_default();
                warn!(upstream = %upstream, server = %addr, %reason, fall = config.fall,
                    "server down");
                state.set_active_up(false);
            }
            None => {}
        }
    }
}

/// One probe on a fresh connection: `GET path`, in the upstream's protocol;
/// healthy when the status is expected.
async fn probe(
    addr: SocketAddr,
    config: &HealthCheckConfig,
    protocol: UpstreamProtocol,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let host = config.host.clone().unwrap_or_else(|| addr.to_string());
    let req = Request::get(config.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "weir-health-check");
    let status = match protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake failed: {e}"))?;
            let conn = tokio::spawn(conn);
            let req = req
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("bad probe request: {e}"))?;
            let resp = sender.send_request(req).await;
            conn.abort();
            resp.map_err(|e| format!("request failed: {e}"))?.status()
        }
        // The connection's task ends when the sender goes.
        UpstreamProtocol::H2c => {
            let (mut sender, authority) = upstream::handshake_h2(stream, addr)
                .await
                .map_err(|e| format!("h2c handshake failed: {e}"))?;
            let req = req
                .body(RequestBody::Empty)
                .map_err(|e| format!("bad probe request: {e}"))?;
            sender
                .send_request(upstream::for_h2(req, &authority))
                .await
                .map_err(|e| format!("request failed: {e}"))?
                .status()
        }
    };
    if expected(status, &config.status) {
        Ok(())
    } else {
        Err(format!("unexpected status {}", status.as_u16()))
    }
}

/// What a server's probe does: the check, spoken in the upstream's protocol.
#[derive(Debug, Clone, PartialEq)]
struct ProbeConfig {
    check: HealthCheckConfig,
    protocol: UpstreamProtocol,
}

fn expected(status: StatusCode, wanted: &[u16]) -> bool {
    if wanted.is_empty() {
        status.is_success() || status.is_redirection()
    } else {
        wanted.contains(&status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fall_failures_take_it_down_and_rise_successes_bring_it_back() {
        let mut m = HealthMachine::new(2, 3, true);
        assert_eq!(m.record(false), None);
        assert_eq!(m.record(false), None);
        assert_eq!(m.record(false), Some(false));
        assert_eq!(m.record(true), None);
        assert_eq!(m.record(true), Some(true));
    }

    #[test]
    fn a_good_probe_resets_the_failure_streak() {
        let mut m = HealthMachine::new(2, 3, true);
        for _ in 0..10 {
            assert_eq!(m.record(false), None);
            assert_eq!(m.record(false), None);
            assert_eq!(m.record(true), None);
        }
    }

    #[test]
    fn expected_statuses() {
        assert!(expected(StatusCode::OK, &[]));
        assert!(expected(StatusCode::MOVED_PERMANENTLY, &[]));
        assert!(!expected(StatusCode::INTERNAL_SERVER_ERROR, &[]));
        assert!(expected(StatusCode::NO_CONTENT, &[204]));
        assert!(!expected(StatusCode::OK, &[204]));
    }

    proptest! {
        /// The state only changes after `fall` (or `rise`) disagreeing results in a row.
        #[test]
        fn changes_need_a_full_streak(rise in 1u32..5, fall in 1u32..5, results in proptest::collection::vec(any::<bool>(), 0..60)) {
            let mut m = HealthMachine::new(rise, fall, true);
            let mut up = true;
            let mut streak = 0;
            for ok in results {
                streak = if ok == up { 0 } else { streak + 1 };
                let change = m.record(ok);
                let needed = if up { fall } else { rise };
                if streak == needed {
                    prop_assert_eq!(change, Some(ok));
                    up = ok;
                    streak = 0;
                } else {
                    prop_assert_eq!(change, None);
                }
            }
        }
    }
}
