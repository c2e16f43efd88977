//! Raw gRPC, for tests that must see exactly what a server answers: a channel with no client
//! library in between (no retries, no failover, no leader hints followed) and requests that
//! carry a token by hand.

use crate::Cluster;
use hongbao_auth::{Identity, Role, SecurityDir};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long a raw channel tries to connect before a call on it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A channel to `addr` over mutual TLS with `tls`, connected on its first call.
pub fn channel(addr: &str, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("address")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy()
}

/// `msg` as a request carrying `Authorization: Bearer <token>`.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    r
}

impl Cluster {
    /// A raw channel to `addr` with the certificate of `role`.
    pub fn channel_as_role(&self, addr: &str, role: Role) -> Channel {
        let (_, tls) = self.credentials().tls(role).expect("the cluster's security folder has every role");
        channel(addr, tls)
    }

    /// A raw channel to `addr` as `id`, with a certificate from the cluster's own CA.
    pub fn channel_as(&self, addr: &str, id: &Identity) -> Channel {
        channel(addr, SecurityDir::new(self.security_dir()).client_tls(id).expect("identity in the security folder"))
    }

    /// A raw channel to node `id` as the harness's router identity (`node_credentials`), every
    /// call made as admin would be.
    pub fn node_channel(&self, id: u64) -> Channel {
        let (_, tls) = self.node_credentials().tls(Role::Admin).expect("the harness's certificate");
        channel(&self.node_addr(id), tls)
    }
}
