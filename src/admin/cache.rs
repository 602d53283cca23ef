//! The response cache in the admin listener: its metrics, its line per
//! route on the status page, and `POST /api/cache/purge`.

use std::fmt::Error as FmtError;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde_json::{json, Value};
use tracing::info;

use super::{json as json_response, text, Body, State};
use crate::cache::{Cache, RouteCounters};

/// `weir_cache_requests_total{route,result}`, `weir_cache_bytes`, `weir_cache_entries`.
pub(super) fn encode(cache: &Cache, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
    {
        let mut enc = d.encode_descriptor(
            "weir_cache_requests",
            "Requests on cached routes, by route and result (hit, miss, stale, bypass)",
            None,
            MetricType::Counter,
        )?;
        for (route, counters) in cache.route_counters() {
            for (result, n) in results(&counters) {
                let labels = [("route", route.as_str()), ("result", result)];
                enc.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
    }
    let (entries, bytes) = cache.usage();
    for (name, help, value) in [
        (
            "weir_cache_bytes",
            "Bytes held by the in-process cache tier",
            bytes,
        ),
        (
            "weir_cache_entries",
            "Keys held by the in-process cache tier (each with its Vary variants)",
            entries,
        ),
        (
            "weir_cache_capacity_bytes",
            "The bound of the in-process cache tier ([cache] memory)",
            cache.capacity(),
        ),
    ] {
        let mut enc = d.encode_descriptor(name, help, None, MetricType::Gauge)?;
        enc.encode_gauge(&(i64::try_from(value).unwrap_or(i64::MAX)))?;
    }
    Ok(())
}

fn results(c: &RouteCounters) -> [(&'static str, u64); 4] {
    [
        ("hit", c.hit.load(Ordering::Relaxed)),
        ("miss", c.miss.load(Ordering::Relaxed)),
        ("stale", c.stale.load(Ordering::Relaxed)),
        ("bypass", c.bypass.load(Ordering::Relaxed)),
    ]
}

/// The `cache` part of `/status.json`: usage, and per route its counts and
/// hit ratio (hits and stale answers over all cacheable requests).
pub(super) fn status(cache: &Cache) -> Value {
    let (entries, bytes) = cache.usage();
    let routes: Vec<Value> = cache
        .route_counters()
        .into_iter()
        .map(|(route, c)| {
            let [hit, miss, stale, bypass] = results(&c).map(|(_, n)| n);
            let served = hit + stale;
            let total = served + miss;
            let ratio = if total == 0 {
                None
            } else {
                Some((served as f64 / total as f64 * 10_000.0).round() / 10_000.0)
            };
            json!({
                "route": route,
                "hit": hit,
                "miss": miss,
                "stale": stale,
                "bypass": bypass,
                "hit_ratio": ratio,
            })
        })
        .collect();
    json!({
        "entries": entries,
        "bytes": bytes,
        "capacity_bytes": cache.capacity(),
        "routes": routes,
    })
}

/// `POST /api/cache/purge?host=H&path=P`: drops the entries of host `H`
/// (every host without it) whose path starts with `P` (`/` without it).
pub(super) async fn purge(state: &State, query: Option<&str>) -> Response<Body> {
    let mut host = None;
    let mut path = "/".to_owned();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "host" if !value.is_empty() => host = Some(value.into_owned()),
            "path" if !value.is_empty() => path = value.into_owned(),
            _ => {}
        }
    }
    let snapshot = state.snapshot.load_full();
    let Some(cache) = snapshot.cache.as_ref() else {
        return text(
            StatusCode::NOT_FOUND,
            "404 Not Found: no [cache] is configured\n",
        );
    };
    let purged = cache.purge(host.as_deref(), &path).await;
    info!(host = host.as_deref().unwrap_or("*"), %path, purged, "cache purged");
    json_response(&json!({ "purged": purged, "host": host, "path": path }))
}
