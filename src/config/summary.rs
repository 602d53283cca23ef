//! The short human summary `weir check` prints.

use std::fmt::{self, Write as _};

use super::model::*;

impl Config {
    /// Short multi-line human summary: listeners, upstreams, routes, admin listener.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let listen: Vec<String> = self
            .server
            .listen
            .iter()
            .map(|l| {
                let kind = match (&l.tls, l.redirect_https) {
                    (Some(tls), _) => format!("{} (tls, {} cert(s))", l.addr, tls.certs.len()),
                    (None, true) => format!("{} (redirect to https)", l.addr),
                    (None, false) => l.addr.to_string(),
                };
                match l.proxy_protocol {
                    true => format!("{kind} (proxy protocol)"),
                    false => kind,
                }
            })
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "listen: {}", listen.join(", "));
        for up in &self.upstreams {
            let protocol = match up.protocol {
                UpstreamProtocol::Http1 => "",
                UpstreamProtocol::H2c => ", h2c",
            };
            let _ = writeln!(out, "upstream {} ({}{protocol}):", up.name, up.balance);
            for s in &up.servers {
                let backup = if s.backup { " backup" } else { "" };
                let _ = writeln!(out, "  {} weight {}{}", s.addr, s.weight, backup);
            }
            for d in &up.dns {
                let _ = match &d.kind {
                    DnsKind::Host { .. } => {
                        let backup = if d.backup { " backup" } else { "" };
                        writeln!(out, "  {} (DNS) weight {}{backup}", d.kind, d.weight)
                    }
                    DnsKind::Srv { .. } => writeln!(out, "  {} (SRV)", d.kind),
                };
            }
        }
        for r in &self.routes {
            let host = r
                .host
                .as_ref()
                .map_or_else(|| "*".to_owned(), |h| h.to_string());
            let access = if r.access.is_some() {
                " (allow/deny)"
            } else {
                ""
            };
            let _ = writeln!(out, "route {} {} -> {}{access}", host, r.path, r.upstream);
        }
        match &self.admin {
            Some(a) => {
                let _ = writeln!(out, "admin: {}", a.listen);
            }
            None => out.push_str("admin: off\n"),
        }
        out
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::Hash => "hash",
            Balance::RandomTwo => "random_two",
        })
    }
}

impl fmt::Display for HostPattern {
    /// Written the way the config file spells it: `example.com` or `*.example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}
