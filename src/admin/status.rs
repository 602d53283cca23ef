//! `/status` (a self-contained HTML page) and `/status.json` (the data it shows).

use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::api::server_json;
use super::history::{rates, round, unix_now, Series, UpstreamHistory, WINDOW};
use super::{respond, Body, State};
use crate::upstream::Upstream;

/// The page: inline CSS, JS and SVG, nothing fetched but `/status.json`.
const PAGE: &str = include_str!("status.html");

/// `GET /status`.
pub(super) fn page() -> Response<Body> {
    respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.into())
}

/// Per-second series of a history, oldest first.
fn series_json(series: &Series) -> Value {
    let points = &series.points;
    let ms = |q: f64| -> Vec<Option<f64>> {
        points
            .iter()
            .map(|p| p.latency.quantile(q).map(|s| round(s * 1000.0, 2)))
            .collect()
    };
    json!({
        "t": points.iter().map(|p| p.t).collect::<Vec<_>>(),
        "requests_per_second": points.iter().map(|p| p.requests).collect::<Vec<_>>(),
        "error_rate": points.iter().map(|p| if p.requests == 0 { 0.0 } else { round(p.errors as f64 / p.requests as f64, 4) }).collect::<Vec<_>>(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
    })
}

fn upstream_document(upstream: &Upstream, history: Option<&UpstreamHistory>) -> Value {
    let empty = Series::default();
    let total = history.map_or(&empty, |h| &h.total);
    let (window, seconds) = total.recent(WINDOW);
    let servers: Vec<Value> = upstream
        .servers
        .iter()
        .map(|server| {
            let series = history
                .and_then(|h| h.servers.get(&server.config.addr))
                .unwrap_or(&empty);
            let (point, secs) = series.recent(WINDOW);
            let stats = &server.state.stats;
            let codes = stats.codes.nonzero();
            let mut value = server_json(server);
            let extra = json!({
                "requests_total": codes.iter().map(|(_, n)| n).sum::<u64>(),
                "errors_total": codes.iter().filter(|(c, _)| *c >= 500).map(|(_, n)| n).sum::<u64>(),
                "now": rates(&point, secs),
                "history": series.points.iter().map(|p| p.requests).collect::<Vec<_>>(),
            });
            if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), extra) {
                v.extend(extra);
            }
            value
        })
        .collect();
    json!({
        "name": upstream.name(),
        "balance": upstream.config.balance.to_string(),
        "requests_total": upstream.stats.latency.snapshot().count(),
        "retries_total": upstream.stats.retries.load(Ordering::Relaxed),
        "now": rates(&window, seconds),
        "servers": servers,
        "history": series_json(total),
    })
}

/// `GET /status.json`: see the README's "Admin endpoints" section for its shape.
pub(super) fn document(state: &State) -> Value {
    let snapshot = state.snapshot.load_full();
    let reloads = *state.reloads.borrow();
    let history = state.history.lock().unwrap_or_else(|e| e.into_inner());
    let upstreams: Vec<Value> = snapshot
        .upstreams
        .iter()
        .map(|u| upstream_document(u, history.upstreams.get(u.name())))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generated_at": unix_now(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "window_seconds": WINDOW,
        "connections_open": snapshot.stats.connections_open.load(Ordering::Relaxed),
        "connections_parked": snapshot.stats.connections_parked.load(Ordering::Relaxed),
        "unrouted_total": snapshot.stats.unrouted.latency.snapshot().count(),
        "reloads": {
            "ok": reloads.ok,
            "error": reloads.failed,
            "last_success_unix": reloads.last_success_unix,
        },
        "upstreams": upstreams,
        "cache": snapshot.cache.as_deref().map(super::cache::status),
    })
}
