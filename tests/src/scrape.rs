//! GETs on a node's or router's metrics endpoint (`hongbao_telemetry::http`), as Prometheus or
//! an operator's browser makes them: plain HTTP, or HTTPS trusting the cluster's CA, with or
//! without a bearer token. Bounded: 5 s per request, 8 MiB per answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

/// The flags that turn TLS and the credential on (`HttpArgs`), for `Spec::env`.
pub const TLS_ENV: &str = "HONGBAO_METRICS_TLS";
pub const CREDENTIAL_ENV: &str = "HONGBAO_METRICS_CREDENTIAL_FILE";

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER: u64 = 8 << 20;

/// How to reach a metrics endpoint.
#[derive(Clone, Default)]
pub struct Scraper {
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<String>,
}

/// An answer: its status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Scraper {
    /// Plain HTTP, no credential: a loopback endpoint as a process serves it by default.
    pub fn plain() -> Scraper {
        Scraper::default()
    }

    /// HTTPS trusting the CA certificates in `ca_pem_file` (no client certificate).
    pub fn tls(ca_pem_file: &Path) -> Scraper {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem_file).unwrap_or_else(|e| panic!("{}: {e}", ca_pem_file.display())) {
            roots.add(cert.expect("a CA certificate")).expect("a usable CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Scraper { tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))), token: None }
    }

    /// The same, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Scraper {
        self.token = Some(token.to_string());
        self
    }

    /// The same, without a token.
    pub fn without_token(mut self) -> Scraper {
        self.token = None;
        self
    }

    /// `GET path` on `addr` (IP:port; with TLS the IP is the name checked in the certificate).
    /// None when nothing answered in time (refused, reset, a failed handshake, silence).
    pub async fn get(&self, addr: &str, path: &str) -> Option<Answer> {
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        let fetch = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            match &self.tls {
                None => exchange(tcp, &request).await,
                Some(tls) => {
                    let host = addr.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or(addr);
                    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
                    exchange(tls.connect(name, tcp).await.ok()?, &request).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, fetch).await.ok()?
    }

    /// The body of `GET /metrics` when it answers 200.
    pub async fn metrics(&self, addr: &str) -> Option<String> {
        self.get(addr, "/metrics").await.filter(|a| a.status == 200).map(|a| a.body)
    }
}

/// The sum of every series of metric `name` in a Prometheus text page whose line contains
/// `label` ("": every series); 0 when there is none.
pub fn sum(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn exchange(mut s: impl AsyncRead + AsyncWrite + Unpin, request: &str) -> Option<Answer> {
    s.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    // A peer that closes without TLS's close_notify still gave its whole answer (Connection: close).
    let _ = (&mut s).take(MAX_ANSWER).read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.strip_prefix("HTTP/1.")?.split(' ').nth(1)?.parse().ok()?;
    Some(Answer { status, body: body.to_string() })
}

/// Writes a new random bearer token (32 hex digits) to `path`, readable by its owner only, as
/// `scripts/cluster` does for containers; returns the token.
pub fn new_token_file(path: &Path) -> String {
    use rand::Rng;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token: String = (0..32).map(|_| char::from_digit(rand::thread_rng().gen_range(0..16), 16).expect("a hex digit")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writeln!(f, "{token}").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    token
}
