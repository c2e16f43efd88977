//! Who a peer is. Every certificate the cluster trusts carries exactly one URI SAN
//! `spiffe://hongbao/<kind>/<name>`: `node/3`, `router/shenzhen` or `service/<role>`. The TLS
//! layer has already checked the chain against `ca.crt`; this module only reads the name, so
//! authorization decisions ("only nodes may call Raft", "only admin may drain") are plain
//! matches on [`Identity`].

use std::fmt;
use x509_parser::extensions::GeneralName;

const PREFIX: &str = "spiffe://hongbao/";
/// Region names become URI path segments and file names: keep them short and plain.
const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Node(u64),
    /// A router, named by its region.
    Router(String),
    Service(Role),
}

/// A service calling the cluster from outside (through the routers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The chat app's backend: acts for end users, who prove themselves with a JWT.
    App,
    /// Tops wallets up and pays them out.
    PaymentGateway,
    /// Reads and freezes accounts.
    Risk,
    /// Operators: drain, audit, faults.
    Admin,
    /// Reads events to notify users.
    Notifier,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::App, Role::PaymentGateway, Role::Risk, Role::Admin, Role::Notifier];

    pub fn name(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::PaymentGateway => "payment-gateway",
            Role::Risk => "risk",
            Role::Admin => "admin",
            Role::Notifier => "notifier",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A region name usable in a URI and a file name: ASCII letters, digits, '-' and '_'.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Node(id) => format!("{PREFIX}node/{id}"),
            Identity::Router(region) => format!("{PREFIX}router/{region}"),
            Identity::Service(role) => format!("{PREFIX}service/{}", role.name()),
        }
    }

    /// Strict: one spelling per identity (no leading zeros, no '+', no extra segments), so
    /// two certificates can never name the same identity differently.
    pub fn from_uri(s: &str) -> Option<Identity> {
        let rest = s.strip_prefix(PREFIX)?;
        let (kind, name) = rest.split_once('/')?;
        match kind {
            "node" => {
                let canonical = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0');
                if !canonical {
                    return None;
                }
                name.parse().ok().map(Identity::Node)
            }
            "router" if valid_name(name) => Some(Identity::Router(name.to_string())),
            "service" => Role::parse(name).map(Identity::Service),
            _ => None,
        }
    }

    /// The identity in a DER certificate: exactly one `spiffe://hongbao/` URI SAN that parses,
    /// else None (two hongbao names in one certificate is ambiguous, so it names nobody).
    pub fn from_cert_der(der: &[u8]) -> Option<Identity> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let san = cert.subject_alternative_name().ok()??;
        let mut ours = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(PREFIX) => Some(*u),
            _ => None,
        });
        let only = ours.next()?;
        if ours.next().is_some() {
            return None;
        }
        Identity::from_uri(only)
    }

    /// The file name (without extension) of this identity's cert and key in `certs/`.
    pub fn file_stem(&self) -> String {
        match self {
            Identity::Node(id) => format!("node-{id}"),
            Identity::Router(region) => format!("router-{region}"),
            Identity::Service(role) => role.name().to_string(),
        }
    }

    /// Nodes and routers accept connections, so their certificates are also server certs.
    pub fn is_server(&self) -> bool {
        matches!(self, Identity::Node(_) | Identity::Router(_))
    }
}

/// The DNS name that only node `id`'s certificate carries (the dev CA adds it; a CA of your own
/// must too, docs/security.md). Whoever connects to a node (another node, a router) asks TLS
/// for this name, so a certificate of another identity of the same CA is refused at the
/// handshake: every node certificate also names its host (often a shared one, like
/// `127.0.0.1`), and checking the host alone let any key pose as any node (#28).
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.id.hongbao")
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The verified identity of the caller of a gRPC request: the first certificate of the TLS
/// peer chain (tonic's server has checked it against `ca.crt`). None without TLS or without a
/// client certificate, or when the certificate names no single hongbao identity.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<Identity> {
    let certs = req.peer_certs()?;
    let der: &[u8] = certs.first()?;
    // Parsing X.509 on every request (every grab, every Raft message) is measurable; a cluster
    // has few distinct certificates, so their identities are remembered by their exact bytes.
    if let Some(id) = SEEN.read().expect("identity cache lock").get(der) {
        return id.clone();
    }
    let id = Identity::from_cert_der(der);
    let mut seen = SEEN.write().expect("identity cache lock");
    if seen.len() >= MAX_SEEN {
        seen.clear();
    }
    seen.insert(der.to_vec(), id.clone());
    id
}

/// Distinct peer certificates remembered at most (then the memory starts over).
const MAX_SEEN: usize = 4096;
static SEEN: std::sync::LazyLock<std::sync::RwLock<std::collections::HashMap<Vec<u8>, Option<Identity>>>> =
    std::sync::LazyLock::new(Default::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_have_one_spelling() {
        let all = [Identity::Node(3), Identity::Node(u64::MAX), Identity::Router("shenzhen".into())]
            .into_iter()
            .chain(Role::ALL.map(Identity::Service));
        for id in all {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id.clone()), "{id}");
            assert_eq!(id.to_string(), id.uri());
        }
        assert_eq!(Identity::Node(3).uri(), "spiffe://hongbao/node/3");
        assert_eq!(Identity::Service(Role::PaymentGateway).uri(), "spiffe://hongbao/service/payment-gateway");
        for bad in [
            "spiffe://hongbao/node/03",
            "spiffe://hongbao/node/+3",
            "spiffe://hongbao/node/0",
            "spiffe://hongbao/node/",
            "spiffe://hongbao/node/3/x",
            "spiffe://hongbao/node/18446744073709551616",
            "spiffe://hongbao/router/a/b",
            "spiffe://hongbao/router/",
            "spiffe://hongbao/router/../x",
            "spiffe://hongbao/service/root",
            "spiffe://other/node/3",
            "spiffe://hongbao/user/3",
            "",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn roles_parse_by_name_and_file_stems_are_distinct() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("App"), None);
        assert_eq!(Identity::Node(3).file_stem(), "node-3");
        assert_eq!(Identity::Router("shenzhen".into()).file_stem(), "router-shenzhen");
        assert_eq!(Identity::Service(Role::PaymentGateway).file_stem(), "payment-gateway");
        let stems: std::collections::BTreeSet<String> = Role::ALL.map(|r| Identity::Service(r).file_stem()).into_iter().collect();
        assert_eq!(stems.len(), Role::ALL.len());
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(Identity::from_cert_der(b""), None);
        assert_eq!(Identity::from_cert_der(b"not a certificate"), None);
    }
}
