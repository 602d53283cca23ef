//! Helpers for the protocol tests: a test PKI, and TLS and HTTP/2 clients.
//! Backends, the proxy and its config come from `common`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A test certificate authority that issues leaf certificates.
pub struct Pki {
    /// Signs leaves.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, for clients that verify.
    pub ca: CertificateDer<'static>,
    /// Where PEM files are written.
    pub dir: tempfile::TempDir,
}

/// A leaf certificate as written to disk.
pub struct Leaf {
    /// The certificate as DER, to compare with what a client sees.
    pub der: CertificateDer<'static>,
    /// The certificate PEM file.
    pub cert: PathBuf,
    /// The key PEM file.
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "weir test CA");
        let ca = params.self_signed(&key).expect("CA cert");
        Self {
            issuer: Issuer::new(params, key),
            ca: ca.der().clone(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Issues a certificate for `names`, written as `{file}.pem` and `{file}.key`
    /// (overwriting earlier files of that name).
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let (cert_path, key_path) = self.paths(file);
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            der: cert.der().clone(),
            cert: cert_path,
            key: key_path,
        }
    }

    /// `{dir}/{file}.pem` and `{dir}/{file}.key`.
    pub fn paths(&self, file: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        )
    }
}

/// `{ cert = "...", key = "..." }` for a TOML `tls` value.
pub fn tls_entry(leaf: &Leaf) -> String {
    format!(
        "{{ cert = {:?}, key = {:?} }}",
        path_str(&leaf.cert),
        path_str(&leaf.key)
    )
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// A client config that trusts only `ca`, offering `alpn`.
pub fn verifying_client(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("add CA");
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config that accepts any certificate and records the leaf it was shown.
pub fn recording_client(seen: Arc<Mutex<Option<CertificateDer<'static>>>>) -> Arc<ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(Recorder {
        seen,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct Recorder {
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("lock") = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `addr` over TLS with `sni`. Bounded by 10 s.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("TLS connect within 10 s")
}

/// The leaf certificate weir shows for `sni`.
pub async fn cert_for(addr: SocketAddr, sni: &str) -> CertificateDer<'static> {
    let seen = Arc::new(Mutex::new(None));
    let _tls = tls_connect(addr, sni, recording_client(seen.clone()))
        .await
        .expect("handshake");
    let cert = seen.lock().expect("lock").take();
    cert.expect("a certificate was shown")
}

/// An HTTP/2 client on `io` (prior knowledge), sending bodies of type `B`;
/// the connection runs in a task.
pub async fn h2_client<I, B>(io: I) -> http2::SendRequest<B>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends a bodiless request on an h2 connection; returns status, body and trailers.
pub async fn h2_get(
    sender: &mut http2::SendRequest<Empty<Bytes>>,
    uri: &str,
) -> (http::StatusCode, String, Option<http::HeaderMap>) {
    let req = Request::get(uri).body(Empty::new()).expect("request");
    let fut = async {
        let resp = sender.send_request(req).await.expect("h2 response");
        let status = resp.status();
        let collected = resp.into_body().collect().await.expect("h2 body");
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        (status, body, trailers)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("h2 request within 10 s")
}
