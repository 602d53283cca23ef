//! PROXY protocol in (HAProxy's v1 text and v2 binary headers, parsed by the
//! `ppp` crate): on a `proxy_protocol` listener, a connection from a trusted
//! proxy opens with a header naming the client, and that client becomes the
//! connection's peer for everything after (forwarding headers, access log,
//! hashing, access lists).
//!
//! The header is read before anything else, TLS included, within
//! `header_read_timeout`, and never a byte past it: what follows belongs to
//! the HTTP or TLS stream. The socket is peeked, and only bytes known to be
//! part of the header are consumed, so no buffer has to be handed on.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::v1;
use ppp::v2::{self, Command};
use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::stats::ProxyRejection;

/// The longest header read. A v1 header is at most 107 bytes; a v2 header
/// is 16 bytes, addresses and TLVs. Load balancers send a few dozen bytes of
/// TLVs (AWS its endpoint id); a larger header is refused rather than buffered.
const MAX_HEADER: usize = 4096;

/// Whether a connection from `peer` may send a PROXY header: only trusted
/// proxies may name another client.
pub(super) fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// Reads the PROXY header at the start of `stream`, within `deadline`.
///
/// `Some(client)`: the header names the connection's client. `None`: a v2
/// `LOCAL` header (the load balancer's own health check) or a v1 `UNKNOWN`
/// one, where the connection's own peer is the client.
pub(super) async fn read_client(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Result<Option<SocketAddr>, ProxyRejection> {
    match tokio::time::timeout(deadline, read_header(stream)).await {
        Ok(read) => read,
        Err(_) => Err(ProxyRejection::Timeout),
    }
}

async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyRejection> {
    // On the heap: it would otherwise sit in every connection's task.
    let mut buf = vec![0u8; MAX_HEADER];
    // Bytes of the header consumed from the socket so far, in `buf[..have]`.
    let mut have = 0;
    loop {
        let peeked = match stream.peek(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Err(ProxyRejection::Closed),
            Ok(n) => n,
        };
        let seen = have + peeked;
        match parse(&buf[..seen]) {
            Parsed::Complete { len, client } => {
                // `buf[..have]` was incomplete, so the header is longer.
                let rest = buf.get_mut(have..len).ok_or(ProxyRejection::Invalid)?;
                stream
                    .read_exact(rest)
                    .await
                    .map_err(|_| ProxyRejection::Closed)?;
                return Ok(client);
            }
            // Every byte seen belongs to the header: consume them, so the
            // next peek waits for more instead of returning them again.
            Parsed::Incomplete if seen < buf.len() => {
                stream
                    .read_exact(&mut buf[have..seen])
                    .await
                    .map_err(|_| ProxyRejection::Closed)?;
                have = seen;
            }
            Parsed::Incomplete | Parsed::Invalid => return Err(ProxyRejection::Invalid),
            Parsed::Missing => return Err(ProxyRejection::Missing),
        }
    }
}

/// What the first bytes of a connection hold.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A whole header of `len` bytes, naming `client` (`None`: use the peer).
    Complete {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// The start of a header; more bytes are needed.
    Incomplete,
    /// Not a PROXY header at all (a client speaking HTTP or TLS directly).
    Missing,
    /// A PROXY signature followed by something that does not parse.
    Invalid,
}

/// Parses the start of a connection.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    if buf.starts_with(V2_SIGNATURE) || V2_SIGNATURE.starts_with(buf) {
        return parse_v2(buf);
    }
    if V1_PREFIX.starts_with(buf) {
        return Parsed::Incomplete;
    }
    if !buf.starts_with(V1_PREFIX) {
        return Parsed::Missing;
    }
    // A v1 header is one line: complete at its CRLF, and only then parsed.
    // (`ppp` takes some cut-short lines, such as one that stops after a
    // space, for malformed ones.)
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return match buf.len() < V1_MAX {
            true => Parsed::Incomplete,
            false => Parsed::Invalid,
        };
    };
    let line = &buf[..end + 2];
    match v1::Header::try_from(line) {
        Ok(header) if line.len() <= V1_MAX => Parsed::Complete {
            len: line.len(),
            client: match header.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Unknown => None,
            },
        },
        _ => Parsed::Invalid,
    }
}

/// A v2 header, or the start of one: its length is in its first 16 bytes.
fn parse_v2(buf: &[u8]) -> Parsed {
    match v2::Header::try_from(buf) {
        Ok(header) => Parsed::Complete {
            len: header.len(),
            client: match (header.command, header.addresses) {
                (Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                // LOCAL, or addresses that are not IP: the spec says to use
                // the connection's own then.
                _ => None,
            },
        },
        Err(error) if error.is_incomplete() => Parsed::Incomplete,
        Err(_) => Parsed::Invalid,
    }
}

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn v2(command: Command, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
        let protocol = match command {
            Command::Local => v2::Protocol::Unspecified,
            Command::Proxy => v2::Protocol::Stream,
        };
        v2::Builder::with_addresses(v2::Version::Two | command, protocol, addresses)
            .build()
            .expect("v2 header")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn v1_headers_name_their_client() {
        let text = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(text),
            Parsed::Complete {
                len: 42,
                client: Some(addr("203.0.113.9:51000"))
            }
        );
        let text = b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 443\r\n";
        assert_eq!(
            parse(text),
            Parsed::Complete {
                len: text.len(),
                client: Some(addr("[2001:db8::9]:51000"))
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                len: 15,
                client: None
            }
        );
    }

    #[test]
    fn v2_proxy_names_its_client_and_local_uses_the_peer() {
        let header = v2(
            Command::Proxy,
            (addr("198.51.100.4:40000"), addr("10.0.0.1:80")),
        );
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x16\x03\x01 TLS after it");
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                len: header.len(),
                client: Some(addr("198.51.100.4:40000"))
            }
        );
        let local = v2(Command::Local, v2::Addresses::Unspecified);
        assert_eq!(
            parse(&local),
            Parsed::Complete {
                len: 16,
                client: None
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\n".to_vec();
        let v2 = v2(
            Command::Proxy,
            (addr("198.51.100.4:40000"), addr("10.0.0.1:80")),
        );
        for header in [v1, v2] {
            for end in 1..header.len() {
                assert_eq!(parse(&header[..end]), Parsed::Incomplete, "{end}");
            }
        }
    }

    #[test]
    fn other_protocols_are_missing_and_garbled_headers_invalid() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Missing);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Parsed::Missing);
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid);
        assert_eq!(
            parse(b"PROXY TCP9 1.2.3.4 1.2.3.5 1 2\r\n"),
            Parsed::Invalid
        );
        let mut bad_version = v2(
            Command::Proxy,
            (addr("198.51.100.4:40000"), addr("10.0.0.1:80")),
        );
        bad_version[12] = 0x31;
        assert_eq!(parse(&bad_version), Parsed::Invalid);
    }

    #[test]
    fn only_trusted_peers_may_send_one() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert!(is_trusted(&trusted, "10.1.2.3".parse().expect("ip")));
        assert!(is_trusted(&trusted, "::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!is_trusted(&trusted, "192.0.2.1".parse().expect("ip")));
    }

    /// A connected pair: what the client writes, the server side reads.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_header_sent_in_pieces_is_read_and_the_bytes_after_it_kept() {
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            for piece in [&b"PROX"[..], b"Y TCP4 203.0.113.9 ", b"10.0.0.1 51000 80\r"] {
                client.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
                .write_all(b"\nGET / HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            client
        });
        let got = read_client(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got, Ok(Some(addr("203.0.113.9:51000"))));
        let _client = writer.await.expect("writer");
        let mut rest = [0u8; 18];
        server.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn silence_times_out_and_a_close_is_seen() {
        let (client, mut server) = pair().await;
        let got = read_client(&mut server, Duration::from_millis(50)).await;
        assert_eq!(got, Err(ProxyRejection::Timeout));
        drop(client);
        let got = read_client(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got, Err(ProxyRejection::Closed));
    }

    #[tokio::test]
    async fn an_endless_v1_line_is_refused() {
        let (mut client, mut server) = pair().await;
        let mut line = b"PROXY TCP4 ".to_vec();
        line.resize(300, b'1');
        client.write_all(&line).await.expect("write");
        let got = read_client(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got, Err(ProxyRejection::Invalid));
    }
}
