//! A real DNS server for the discovery tests: hickory's server with one
//! in-memory zone, `test.`, on 127.0.0.1 (UDP and TCP on one ephemeral port),
//! whose records a test changes while weir runs.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// The zone every test name lives in.
pub const ZONE: &str = "test.";

/// A running DNS server serving [`ZONE`].
pub struct DnsServer {
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    server: Option<Server<Catalog>>,
    serial: AtomicU32,
}

fn name(text: &str) -> Name {
    Name::from_str(text).expect("test DNS name")
}

impl DnsServer {
    /// Starts the server with an empty zone (its SOA aside).
    pub async fn start() -> Self {
        let zone = Arc::new(InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            name(ZONE),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        ));
        let soa = SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 60, 0);
        zone.upsert(Record::from_rdata(name(ZONE), 60, RData::SOA(soa)), 1)
            .await;
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&name(ZONE)), vec![zone.clone()]);
        let mut server = Server::new(catalog);
        // UDP first, then TCP on the same port: bounded tries for a port free on both.
        let (udp, tcp) = 'bound: {
            for _ in 0..20 {
                let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
                let addr = udp.local_addr().expect("udp addr");
                if let Ok(tcp) = TcpListener::bind(addr).await {
                    break 'bound (udp, tcp);
                }
            }
            panic!("no port free for both UDP and TCP");
        };
        let addr = udp.local_addr().expect("udp addr");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Self {
            addr,
            zone,
            server: Some(server),
            serial: AtomicU32::new(2),
        }
    }

    /// Replaces the records of `owner` and type `rtype` with `rdata`, all with `ttl`.
    async fn set(&self, owner: &str, rtype: RecordType, rdata: Vec<RData>, ttl: u32) {
        let owner = name(owner);
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&owner), rtype));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        for data in rdata {
            let record = Record::from_rdata(owner.clone(), ttl, data);
            assert!(self.zone.upsert(record, serial).await, "record upserted");
        }
    }

    /// Sets the A and AAAA records of `owner` (a name in [`ZONE`], with its final dot).
    pub async fn set_addrs(&self, owner: &str, ips: &[&str], ttl: u32) {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        let v4 = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(RData::A(A(*v4))),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6 = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(RData::AAAA(AAAA(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect();
        self.set(owner, RecordType::A, v4, ttl).await;
        self.set(owner, RecordType::AAAA, v6, ttl).await;
    }

    /// Sets the SRV records of `owner`: (priority, weight, port, target) each.
    pub async fn set_srv(&self, owner: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let rdata = records
            .iter()
            .map(|&(priority, weight, port, target)| {
                RData::SRV(SRV::new(priority, weight, port, name(target)))
            })
            .collect();
        self.set(owner, RecordType::SRV, rdata, ttl).await;
    }

    /// Stops answering: its sockets close.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), server.shutdown_gracefully()).await;
        }
    }
}
