//! `/metrics`: the Prometheus text format, collected from the live snapshot at scrape time.
//!
//! Nothing is registered ahead of time: every scrape walks the current
//! upstreams and servers and encodes their atomics with `prometheus-client`'s
//! encoder, so label sets always follow the config in force.

use std::fmt::Error as FmtError;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{respond, text, Body, State};
use crate::snapshot::Snapshot;
use crate::stats::{Check, HistogramSnapshot, ProxyRejection, UpstreamStats, BUCKETS};

/// `GET /metrics`.
pub(super) fn render(state: &State) -> Response<Body> {
    let mut out = String::with_capacity(16 * 1024);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Scrape {
        snapshot: state.snapshot.load_full(),
        reloads: *state.reloads.borrow(),
    }));
    match prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        Ok(()) => respond(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            out.into(),
        ),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    }
}

/// One scrape's view: the snapshot and reload counts read once, so a scrape is consistent.
#[derive(Debug)]
struct Scrape {
    snapshot: std::sync::Arc<Snapshot>,
    reloads: crate::stats::ReloadCount,
}

/// Labels of a per-server series.
type ServerLabels<'a> = [(&'static str, &'a str); 2];

fn counter(enc: &mut MetricEncoder<'_>, value: u64) -> Result<(), FmtError> {
    enc.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn histogram(enc: &mut MetricEncoder<'_>, h: &HistogramSnapshot) -> Result<(), FmtError> {
    let buckets: Vec<(f64, u64)> = BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(h.counts)
        .collect();
    enc.encode_histogram::<NoLabelSet>(h.sum, h.count(), &buckets, None)
}

impl Scrape {
    /// Every (upstream, server address) pair in the config, with the server.
    fn servers(&self) -> impl Iterator<Item = (&str, String, &crate::upstream::Server)> {
        self.snapshot.upstreams.iter().flat_map(|u| {
            u.servers
                .iter()
                .map(move |s| (u.name(), s.config.addr.to_string(), s))
        })
    }

    /// Upstreams plus the unrouted pseudo-upstream `""`.
    fn upstream_stats(&self) -> impl Iterator<Item = (&str, &UpstreamStats)> {
        let unrouted = std::iter::once(("", &*self.snapshot.stats.unrouted));
        self.snapshot
            .upstreams
            .iter()
            .map(|u| (u.name(), &*u.stats))
            .chain(unrouted)
    }

    fn requests(&self, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let help = "Responses sent to clients, by upstream, server and status (server=\"\": no server was tried; upstream=\"\": no route matched)";
        let mut enc = d.encode_descriptor("weir_requests", help, None, MetricType::Counter)?;
        for (upstream, addr, server) in self.servers() {
            for (code, n) in server.state.stats.codes.nonzero() {
                let code = code.to_string();
                let labels = [("upstream", upstream), ("server", &addr), ("code", &code)];
                counter(&mut enc.encode_family(&labels)?, n)?;
            }
        }
        for (upstream, stats) in self.upstream_stats() {
            for (code, n) in stats.unassigned.nonzero() {
                let code = code.to_string();
                let labels = [("upstream", upstream), ("server", ""), ("code", &code)];
                counter(&mut enc.encode_family(&labels)?, n)?;
            }
        }
        Ok(())
    }

    fn per_server(
        &self,
        d: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&crate::upstream::Server) -> u64,
    ) -> Result<(), FmtError> {
        let mut enc = d.encode_descriptor(name, help, None, kind)?;
        for (upstream, addr, server) in self.servers() {
            let labels: ServerLabels<'_> = [("upstream", upstream), ("server", &addr)];
            let mut fam = enc.encode_family(&labels)?;
            match kind {
                MetricType::Counter => counter(&mut fam, value(server))?,
                _ => fam.encode_gauge(&(value(server) as i64))?,
            }
        }
        Ok(())
    }

    fn client_timeouts(&self, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let help = "Clients cut off for sending nothing in time, by phase: header (part of a request head, then nothing for header_read_timeout; upstream=\"\") and body (a request body that sent nothing for body_read_timeout)";
        let mut enc =
            d.encode_descriptor("weir_client_timeouts", help, None, MetricType::Counter)?;
        let header = self.snapshot.stats.header_timeouts.load(Ordering::Relaxed);
        counter(
            &mut enc.encode_family(&[("upstream", ""), ("phase", "header")])?,
            header,
        )?;
        for u in &self.snapshot.upstreams {
            let labels = [("upstream", u.name()), ("phase", "body")];
            let stalls = u.stats.body_stalls.load(Ordering::Relaxed);
            counter(&mut enc.encode_family(&labels)?, stalls)?;
        }
        Ok(())
    }

    /// `weir_rate_limited_total{route}`, and `weir_redis_errors_total` when `[redis]` is set.
    fn rate_limits(&self, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let mut limiters: Vec<_> = self.snapshot.limiters.iter().collect();
        if !limiters.is_empty() {
            limiters.sort_by(|a, b| a.route.cmp(&b.route));
            let help =
                "Requests answered 429 by a route's rate limit, by route (host or *, and path)";
            let mut enc =
                d.encode_descriptor("weir_rate_limited", help, None, MetricType::Counter)?;
            for limiter in limiters {
                let labels = [("route", &*limiter.route)];
                counter(
                    &mut enc.encode_family(&labels)?,
                    limiter.limited.load(Ordering::Relaxed),
                )?;
            }
        }
        if self.snapshot.redis.is_some() {
            let errors =
                ConstCounter::new(self.snapshot.stats.redis_errors.load(Ordering::Relaxed));
            errors.encode(d.encode_descriptor(
                "weir_redis_errors",
                "Redis calls that got no answer: failed, timed out, or skipped while backing off after a failure",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }

    fn transitions(&self, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let help =
            "Health state changes of a server, by check (passive, active) and new state (up, down)";
        let mut enc = d.encode_descriptor(
            "weir_upstream_health_transitions",
            help,
            None,
            MetricType::Counter,
        )?;
        for (upstream, addr, server) in self.servers() {
            for (check, name) in [(Check::Passive, "passive"), (Check::Active, "active")] {
                let (down, up) = server.state.stats.transitions(check);
                for (to, n) in [("down", down), ("up", up)] {
                    let labels = [
                        ("upstream", upstream),
                        ("server", &addr),
                        ("check", name),
                        ("to", to),
                    ];
                    counter(&mut enc.encode_family(&labels)?, n)?;
                }
            }
        }
        Ok(())
    }
}

impl Scrape {
    /// `weir_dns_resolutions_total{upstream,result}`, for upstreams with DNS names.
    fn dns_resolutions(&self, d: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let help = "DNS lookups of an upstream's server names and SRV records, by result (ok, empty: no records, error: no answer)";
        let mut enc =
            d.encode_descriptor("weir_dns_resolutions", help, None, MetricType::Counter)?;
        for u in self
            .snapshot
            .upstreams
            .iter()
            .filter(|u| !u.config.dns.is_empty())
        {
            let dns = &u.stats.dns;
            for (result, n) in [
                ("ok", &dns.ok),
                ("empty", &dns.empty),
                ("error", &dns.error),
            ] {
                let labels = [("upstream", u.name()), ("result", result)];
                counter(&mut enc.encode_family(&labels)?, n.load(Ordering::Relaxed))?;
            }
        }
        Ok(())
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut d: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        self.requests(&mut d)?;
        {
            let help = "Time from a request's arrival to the end of its response, by upstream";
            let mut enc = d.encode_descriptor(
                "weir_request_duration_seconds",
                help,
                None,
                MetricType::Histogram,
            )?;
            for (upstream, stats) in self.upstream_stats() {
                let labels = [("upstream", upstream)];
                histogram(&mut enc.encode_family(&labels)?, &stats.latency.snapshot())?;
            }
        }
        {
            let help = "Attempts made on another server after an attempt failed, by upstream";
            let mut enc =
                d.encode_descriptor("weir_upstream_retries", help, None, MetricType::Counter)?;
            for u in &self.snapshot.upstreams {
                let labels = [("upstream", u.name())];
                counter(
                    &mut enc.encode_family(&labels)?,
                    u.stats.retries.load(Ordering::Relaxed),
                )?;
            }
        }
        self.client_timeouts(&mut d)?;
        {
            let help = "Connections a proxy_protocol listener closed before any request, by reason (untrusted, missing, invalid, timeout, closed)";
            let mut enc = d.encode_descriptor(
                "weir_proxy_protocol_rejected",
                help,
                None,
                MetricType::Counter,
            )?;
            for reason in ProxyRejection::ALL {
                let n = self.snapshot.stats.proxy_rejections(reason);
                counter(&mut enc.encode_family(&[("reason", reason.label())])?, n)?;
            }
        }
        let gauge = MetricType::Gauge;
        let count = MetricType::Counter;
        self.per_server(
            &mut d,
            "weir_upstream_in_flight",
            "Requests in flight to a server",
            gauge,
            |s| s.state.in_flight(),
        )?;
        self.per_server(
            &mut d,
            "weir_upstream_server_up",
            "1 when health checks, passive and active, let the server take requests, else 0",
            gauge,
            |s| u64::from(s.health().healthy()),
        )?;
        self.per_server(
            &mut d,
            "weir_upstream_server_draining",
            "1 while an operator drains the server, else 0",
            gauge,
            |s| u64::from(s.health().draining),
        )?;
        self.per_server(
            &mut d,
            "weir_upstream_request_bytes",
            "Request body bytes received from clients and forwarded to a server",
            count,
            |s| s.state.stats.bytes_in.load(Ordering::Relaxed),
        )?;
        self.per_server(
            &mut d,
            "weir_upstream_response_bytes",
            "Response body bytes from a server sent to clients",
            count,
            |s| s.state.stats.bytes_out.load(Ordering::Relaxed),
        )?;
        self.transitions(&mut d)?;
        self.dns_resolutions(&mut d)?;

        let stats = &self.snapshot.stats;
        for (name, help, value) in [
            (
                "weir_connections_open",
                "Client connections open now",
                &stats.connections_open,
            ),
            (
                "weir_connections_parked",
                "Idle HTTP/1.1 client connections parked without buffers now",
                &stats.connections_parked,
            ),
        ] {
            let gauge = ConstGauge::new(value.load(Ordering::Relaxed));
            gauge.encode(d.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        {
            let mut enc = d.encode_descriptor(
                "weir_config_reloads",
                "Configuration reloads, by result (ok, error)",
                None,
                count,
            )?;
            counter(
                &mut enc.encode_family(&[("result", "ok")])?,
                self.reloads.ok,
            )?;
            counter(
                &mut enc.encode_family(&[("result", "error")])?,
                self.reloads.failed,
            )?;
        }
        let last = ConstGauge::new(self.reloads.last_success_unix as f64);
        last.encode(d.encode_descriptor(
            "weir_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload (or of the start)",
            None,
            gauge,
        )?)?;
        self.rate_limits(&mut d)?;
        let dropped = ConstCounter::new(self.snapshot.access.as_ref().map_or(0, |a| a.dropped()));
        dropped.encode(d.encode_descriptor(
            "weir_access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            None,
            count,
        )?)?;
        if let Some(cache) = &self.snapshot.cache {
            super::cache::encode(cache, &mut d)?;
        }
        Ok(())
    }
}
