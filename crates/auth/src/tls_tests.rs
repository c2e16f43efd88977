//! Real TLS handshakes through tonic: the configs from [`SecurityDir`] give mutual TLS that
//! admits dev identities and refuses a missing or foreign certificate, and the server reads
//! the caller's identity with [`peer_identity`].

use crate::{ensure_dev_pki, generate_foreign_identity, peer_identity, Identity, Role, SecurityDir};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::{http, BoxFuture};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};

/// A one-method gRPC service answering with the caller's identity, written by hand because
/// this crate has no generated code.
#[derive(Clone)]
struct Who;

impl tonic::server::NamedService for Who {
    const NAME: &'static str = "hongbao.test.Who";
}

struct WhoMethod;

impl tonic::server::UnaryService<()> for WhoMethod {
    type Response = String;
    type Future = BoxFuture<tonic::Response<String>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<()>) -> Self::Future {
        let who = peer_identity(&req).map_or_else(|| "nobody".to_string(), |id| id.uri());
        Box::pin(async move { Ok(tonic::Response::new(who)) })
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Who {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<String, ()>::default());
            Ok(grpc.unary(WhoMethod, req).await)
        })
    }
}

async fn ask(url: String, tls: ClientTlsConfig) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    let endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static("/hongbao.test.Who/Me");
    let reply = grpc.unary(tonic::Request::new(()), path, tonic_prost::ProstCodec::<(), String>::default()).await;
    reply.map(|r| r.into_inner()).map_err(|s| format!("call: {s:?}"))
}

const TOPOLOGY: &str = r#"
slots = 4
regions = [{ name = "shenzhen" }]
nodes = [
  { id = 1, region = "shenzhen", addr = "127.0.0.1:7101", metrics_addr = "127.0.0.1:9101" },
  { id = 2, region = "shenzhen", addr = "127.0.0.1:7102", metrics_addr = "127.0.0.1:9102" },
]
[[shards]]
id = 1
home = "shenzhen"
replicas = [1, 2]
slots = [[0, 4]]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_dev_identities_and_refuses_missing_or_foreign_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let sec = SecurityDir::new(tmp.path().join("dev"));
    ensure_dev_pki(&sec, &hongbao_topology::Topology::parse(TOPOLOGY).unwrap()).unwrap();
    let foreign = generate_foreign_identity(&tmp.path().join("foreign"), &Identity::Node(2)).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::builder()
        .tls_config(sec.server_tls(&Identity::Node(1)).unwrap())
        .unwrap()
        .add_service(Who)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    let ip = format!("https://127.0.0.1:{port}");
    let dns = format!("https://localhost:{port}");

    // Dev identities get in, and the server sees who they are.
    let admin = Identity::Service(Role::Admin);
    assert_eq!(ask(ip.clone(), sec.client_tls(&admin).unwrap()).await.unwrap(), admin.uri());
    assert_eq!(ask(dns.clone(), sec.client_tls(&Identity::Node(2)).unwrap()).await.unwrap(), "spiffe://hongbao/node/2");

    // No client certificate: refused. In TLS 1.3 the client finishes its side of the handshake
    // before the server judges its certificate, so it learns of the refusal on the first call,
    // as the server's alert or just a closed connection, whichever it reads first.
    let ca = Certificate::from_pem(std::fs::read(sec.ca_cert()).unwrap());
    let anonymous = ClientTlsConfig::new().ca_certificate(ca.clone());
    ask(ip.clone(), anonymous).await.unwrap_err();

    // A certificate naming node 2 but signed by another CA: refused.
    let forged = ClientTlsConfig::new().ca_certificate(ca).identity(tonic::transport::Identity::from_pem(
        std::fs::read(foreign.cert(&Identity::Node(2))).unwrap(),
        std::fs::read(foreign.key(&Identity::Node(2))).unwrap(),
    ));
    ask(ip.clone(), forged).await.unwrap_err();

    // A client trusting only the other CA refuses the dev server.
    let err = ask(ip.clone(), foreign.client_tls(&Identity::Node(2)).unwrap()).await.unwrap_err();
    assert!(err.contains("InvalidCertificate"), "{err}");

    // A name the server certificate does not hold: refused by the client.
    let err = ask(ip.clone(), sec.client_tls(&admin).unwrap().domain_name("node9.example")).await.unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");

    // The good client still gets in after all that.
    assert_eq!(ask(ip, sec.client_tls(&admin).unwrap()).await.unwrap(), admin.uri());

    server.abort();
}
