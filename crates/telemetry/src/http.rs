//! The HTTP endpoint of every node and router, on its `metrics_addr`: Prometheus text on
//! `/metrics`, plus the pages the process adds (a router's status page on `/`). Served by hyper 1
//! (HTTP/1.1) and, with TLS, rustls with ring: both already under tonic, no HTTP parsing here.
//!
//! One rule for nodes and routers (docs/operations.md, "Who may read the metrics"):
//! - a loopback address (127.0.0.0/8, ::1) may be served as plain HTTP without a credential, so
//!   `curl -s 127.0.0.1:9101/metrics` works on the process's own host;
//! - any other address is served only over TLS, with the process's own certificate and key
//!   from its security folder (`--metrics-tls`), AND with a bearer token read from a file
//!   (`--metrics-credential-file`): without both the process refuses to start (`check`);
//! - with a credential (on any address), a request without `Authorization: Bearer <token>`
//!   gets 401. The token is compared in constant time and never logged or echoed.
//!
//! Limits: `MAX_CONNECTIONS` connections at once (more wait in the listen backlog), the request
//! head within 5 s and at most 16 KiB and 64 headers, no request body read, one request per
//! connection, each connection (TLS handshake included) done within 30 s; GET and HEAD only.

use anyhow::{bail, Context};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::{rustls, TlsAcceptor};

/// Connections served at once; Prometheus needs one, an operator's browser a few.
pub const MAX_CONNECTIONS: usize = 64;
/// The request head must have arrived by then (a slow client cannot hold a slot long).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Everything of one connection: TLS handshake, request, rendering and writing the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's read buffer, so the most a request head can be (its minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 << 10;
const MAX_HEADERS: usize = 64;
/// The recorder's housekeeping (histogram buckets of summaries), as the exporter's own
/// listener did it.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A bearer token's length in bytes: long enough to be guessed by no one, short enough for a header.
const MIN_CREDENTIAL: usize = 16;
const MAX_CREDENTIAL: usize = 4096;
/// Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The flags both binaries take for their metrics endpoint (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Serve the metrics endpoint over TLS with this process's own certificate and key (from
    /// its --security-dir). Needed, with --metrics-credential-file, on any address but loopback.
    /// From the environment: HONGBAO_METRICS_TLS=1 (or true, yes, on).
    #[arg(long, env = "HONGBAO_METRICS_TLS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_tls: bool,
    /// A file holding the bearer token every request to the metrics endpoint must then carry
    /// (`Authorization: Bearer <token>`): one line of 16 to 4096 visible ASCII characters.
    #[arg(long, env = "HONGBAO_METRICS_CREDENTIAL_FILE")]
    pub metrics_credential_file: Option<PathBuf>,
}

impl HttpArgs {
    /// What to serve on `listen`: checks the rule ([`check`]), reads the credential file and,
    /// with `--metrics-tls`, the certificate chain and key `identity` returns (PEM).
    pub fn options(&self, listen: SocketAddr, identity: impl FnOnce() -> anyhow::Result<(Vec<u8>, Vec<u8>)>) -> anyhow::Result<Options> {
        check(listen, self.metrics_tls, self.metrics_credential_file.is_some())?;
        let credential = self.metrics_credential_file.as_deref().map(Credential::load).transpose()?;
        let tls = if self.metrics_tls {
            let (cert, key) = identity()?;
            Some(server_config(&cert, &key).context("the metrics endpoint's TLS certificate")?)
        } else {
            None
        };
        Ok(Options { listen, tls, credential })
    }
}

/// The rule: a loopback address may go without TLS and credential; any other needs both.
pub fn check(listen: SocketAddr, tls: bool, credential: bool) -> anyhow::Result<()> {
    if listen.ip().to_canonical().is_loopback() || (tls && credential) {
        return Ok(());
    }
    let missing = match (tls, credential) {
        (false, false) => "--metrics-tls and --metrics-credential-file FILE are",
        (false, true) => "--metrics-tls is",
        _ => "--metrics-credential-file FILE is",
    };
    bail!(
        "refusing to serve metrics on {listen} without TLS and a credential ({missing} not given): an address other \
         than loopback needs both --metrics-tls (HONGBAO_METRICS_TLS=1: this process's certificate from its security \
         folder) and --metrics-credential-file FILE (HONGBAO_METRICS_CREDENTIAL_FILE: a bearer token); or bind \
         127.0.0.1 (docs/operations.md, \"Who may read the metrics\")"
    )
}

/// A bearer token every request must carry. Its bytes are never printed (`Debug` hides them).
pub struct Credential(Vec<u8>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(hidden)")
    }
}

impl Credential {
    /// The token in `path`: its one line, surrounding whitespace removed. Errors name the file
    /// and what is wrong, never the content.
    pub fn load(path: &Path) -> anyhow::Result<Credential> {
        let bytes = std::fs::read(path).with_context(|| format!("read the metrics credential file {}", path.display()))?;
        Credential::new(bytes.trim_ascii()).with_context(|| format!("the metrics credential file {}", path.display()))
    }

    fn new(token: &[u8]) -> anyhow::Result<Credential> {
        if !(MIN_CREDENTIAL..=MAX_CREDENTIAL).contains(&token.len()) {
            bail!("the token must be {MIN_CREDENTIAL} to {MAX_CREDENTIAL} characters long, it has {}", token.len());
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            bail!("the token must be one line of visible ASCII characters (no spaces)");
        }
        Ok(Credential(token.to_vec()))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>` (the scheme in any case).
    /// The token's bytes are compared in constant time; only a length mismatch answers early.
    fn admits(&self, value: Option<&HeaderValue>) -> bool {
        let Some(v) = value.map(HeaderValue::as_bytes) else { return false };
        const SCHEME: &[u8] = b"bearer ";
        if v.len() <= SCHEME.len() || !v[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
            return false;
        }
        v[SCHEME.len()..].ct_eq(&self.0).into()
    }
}

/// A rustls server configuration from a PEM certificate chain and key: no client certificate
/// asked (the bearer token is the credential), TLS 1.2 and 1.3, ring as on the gRPC port.
fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().context("read the certificate (PEM)")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM");
    // The key's own errors say what is wrong with its PEM, never its bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("read the private key (PEM)")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where and how to serve: made by [`HttpArgs::options`].
pub struct Options {
    pub listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    credential: Option<Credential>,
}

/// A page a process serves besides `/metrics`.
pub struct Page {
    pub content_type: &'static str,
    pub body: String,
}

/// The pages a process adds to its endpoint (the router's status page).
pub trait Pages: Send + Sync + 'static {
    /// The page at `path` (without the query), or None: 404.
    fn get(&self, path: &str) -> Option<Pin<Box<dyn Future<Output = Page> + Send>>>;
}

/// A bound endpoint, not yet serving.
pub struct Endpoint {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    credential: Option<Credential>,
}

impl Endpoint {
    /// Checks the rule once more (an `Options` cannot be made to break it, but this is where
    /// the socket opens) and binds.
    pub async fn bind(o: Options) -> anyhow::Result<Endpoint> {
        check(o.listen, o.tls.is_some(), o.credential.is_some())?;
        let listener = TcpListener::bind(o.listen).await.with_context(|| format!("bind the metrics endpoint on {}", o.listen))?;
        tracing::info!(addr = %o.listen, tls = o.tls.is_some(), credential = o.credential.is_some(), "metrics endpoint bound");
        Ok(Endpoint { listener, tls: o.tls.map(TlsAcceptor::from), credential: o.credential })
    }

    /// Serves until the process ends: `/metrics` from `metrics` (the installed recorder's
    /// handle, kept up here), anything else from `pages`.
    pub async fn serve(self, metrics: PrometheusHandle, pages: Option<Arc<dyn Pages>>) {
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                upkeep.run_upkeep();
            }
        });
        let shared = Arc::new(Shared { metrics, pages, credential: self.credential });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // A slot first: beyond MAX_CONNECTIONS, connections wait in the kernel's backlog.
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (tls, shared) = (self.tls.clone(), shared.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, tls, shared)).await;
            });
        }
    }
}

struct Shared {
    metrics: PrometheusHandle,
    pages: Option<Arc<dyn Pages>>,
    credential: Option<Credential>,
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD_BYTES).max_headers(MAX_HEADERS).keep_alive(false);
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.answer(req).await) }
    });
    let served = match tls {
        None => http.serve_connection(TokioIo::new(stream), service).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
            Err(e) => {
                tracing::debug!("metrics endpoint: TLS handshake failed: {e}");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!("metrics endpoint: connection ended: {e}");
    }
}

impl Shared {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // The credential before anything else: without it, not even which paths exist.
        if let Some(c) = &self.credential {
            if !c.admits(req.headers().get(header::AUTHORIZATION)) {
                let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "a bearer token is required\n".into());
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hongbao metrics\""));
                return r;
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET or HEAD only\n".into());
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        if path == "/metrics" {
            // Rendering walks every series: off the runtime's workers.
            let metrics = self.metrics.clone();
            let text = tokio::task::spawn_blocking(move || metrics.render()).await.unwrap_or_default();
            return reply(StatusCode::OK, PROMETHEUS_TEXT, text);
        }
        match self.pages.as_ref().and_then(|p| p.get(path)) {
            Some(page) => {
                let page = page.await;
                reply(StatusCode::OK, page.content_type, page.body)
            }
            None => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_may_go_plain_and_any_other_address_needs_tls_and_a_credential() {
        for plain in ["127.0.0.1:9101", "127.0.0.2:9101", "[::1]:9101", "[::ffff:127.0.0.1]:9101"] {
            check(plain.parse().unwrap(), false, false).unwrap_or_else(|e| panic!("{plain}: {e}"));
        }
        for open in ["0.0.0.0:9101", "[::]:9101", "10.0.0.7:9101"] {
            let a: SocketAddr = open.parse().unwrap();
            check(a, true, true).unwrap();
            for (tls, cred, names) in
                [(false, false, "--metrics-tls and"), (true, false, "--metrics-credential-file FILE is"), (false, true, "--metrics-tls is")]
            {
                let e = check(a, tls, cred).unwrap_err().to_string();
                assert!(e.starts_with(&format!("refusing to serve metrics on {a} without TLS and a credential")), "{e}");
                assert!(e.contains(names), "{open} tls={tls} credential={cred}: {e}");
            }
        }
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let c = Credential::new(b"0123456789abcdef-token").unwrap();
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(c.admits(h("Bearer 0123456789abcdef-token").as_ref()));
        assert!(c.admits(h("bearer 0123456789abcdef-token").as_ref()));
        assert!(!c.admits(None));
        assert!(!c.admits(h("Bearer 0123456789abcdef-tokeN").as_ref()));
        assert!(!c.admits(h("Bearer 0123456789abcdef-token2").as_ref()));
        assert!(!c.admits(h("Basic 0123456789abcdef-token").as_ref()));
        assert!(!c.admits(h("Bearer ").as_ref()));
        assert!(!format!("{c:?}").contains("0123"), "Debug hides the token");
    }

    #[test]
    fn a_credential_file_is_one_line_of_visible_ascii_and_errors_never_show_it() {
        let dir = std::env::temp_dir().join(format!("hongbao-credential-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret-s3cret-s3cret\n").unwrap();
        assert!(Credential::load(&file).unwrap().admits(Some(&HeaderValue::from_static("Bearer s3cret-s3cret-s3cret"))));
        for bad in ["short-s3cret", "two words s3cret-s3cret", "s3cret-s3cret\ns3cret-s3cret"] {
            std::fs::write(&file, bad).unwrap();
            let e = format!("{:#}", Credential::load(&file).unwrap_err());
            assert!(e.contains(&file.display().to_string()) && !e.contains("s3cret"), "{e}");
        }
        let e = format!("{:#}", Credential::load(&dir.join("missing")).unwrap_err());
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
