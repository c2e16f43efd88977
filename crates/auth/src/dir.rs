//! The security folder: one per cluster, every process gets `--security-dir DIR`.
//!
//! ```text
//! ca.crt                 trusted CA certificate(s), PEM; several during a CA rotation (old + new)
//! ca.key                 the dev CA's private key (a production CA keeps its key elsewhere)
//! certs/<stem>.crt|.key  one certificate + key per identity: node-3, router-shenzhen, app, ...
//! token-keys/<kid>.pub.pem  public keys trusted for end-user JWTs
//! dev-signing.key        the dev login service's Ed25519 key (kid "dev")
//! challenge.key          32 random bytes, hex: the cluster's shared secret (PIN salts)
//! .dev-ca                the mark of a folder `hongbao dev-ca` created (and the only kind it fills)
//! ```
//!
//! Errors name the missing file and how to make it, because a missing cert is the first thing
//! anyone setting up TLS hits.

use crate::identity::Identity;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

/// A TLS handshake that has not finished by then is dropped, so half-open connections cannot
/// pile up on a server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const HOW_TO_CREATE: &str = "for a development cluster run `scripts/cluster up` (it creates the dev CA, certificates and keys)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDir {
    pub root: PathBuf,
}

impl SecurityDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SecurityDir { root: root.into() }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    pub fn cert(&self, id: &Identity) -> PathBuf {
        self.certs_dir().join(format!("{}.crt", id.file_stem()))
    }

    pub fn key(&self, id: &Identity) -> PathBuf {
        self.certs_dir().join(format!("{}.key", id.file_stem()))
    }

    pub fn token_keys(&self) -> PathBuf {
        self.root.join("token-keys")
    }

    pub fn dev_signing_key(&self) -> PathBuf {
        self.root.join("dev-signing.key")
    }

    pub fn challenge_key(&self) -> PathBuf {
        self.root.join("challenge.key")
    }

    /// Written by `hongbao dev-ca` into a folder it creates, before anything else: it fills no
    /// folder without it (`devpki`).
    pub fn dev_ca_marker(&self) -> PathBuf {
        self.root.join(".dev-ca")
    }

    pub fn has_identity(&self, id: &Identity) -> bool {
        self.cert(id).is_file() && self.key(id).is_file()
    }

    /// Own cert + key; clients must present a certificate signed by a CA in `ca.crt`.
    pub fn server_tls(&self, id: &Identity) -> anyhow::Result<ServerTlsConfig> {
        let (cert, key) = self.load_identity(id)?;
        let ca = self.load_ca()?;
        Ok(ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .client_ca_root(ca)
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT))
    }

    /// `ca.crt` as the only root, own cert + key as the client certificate. The server name
    /// checked is the host of the URI dialed (an IP or DNS name in the server's SANs).
    pub fn client_tls(&self, id: &Identity) -> anyhow::Result<ClientTlsConfig> {
        let (cert, key) = self.load_identity(id)?;
        let ca = self.load_ca()?;
        Ok(ClientTlsConfig::new().ca_certificate(ca).identity(tonic::transport::Identity::from_pem(cert, key)))
    }

    pub fn load_challenge_key(&self) -> anyhow::Result<[u8; 32]> {
        let path = self.challenge_key();
        let text = read(&path, "the cluster's challenge key")?;
        let bytes = hex::decode(String::from_utf8_lossy(&text).trim())
            .ok()
            .filter(|b| b.len() == 32)
            .with_context(|| format!("{}: expected 64 hex digits (32 bytes)", path.display()))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(key)
    }

    /// Reads an identity's cert and key (PEM) and checks the cert really names `id`: a file copied
    /// to the wrong name would otherwise surface later as a confusing "permission denied". Public
    /// for the metrics endpoint's TLS, which serves the process's own certificate.
    pub fn load_identity(&self, id: &Identity) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let cert_path = self.cert(id);
        let cert = read(&cert_path, &format!("the certificate of {id}"))?;
        let key = read(&self.key(id), &format!("the private key of {id}"))?;
        let first = pem_certs(&cert).into_iter().next();
        let found = first.as_deref().and_then(Identity::from_cert_der);
        if found.as_ref() != Some(id) {
            let found = found.map_or("no hongbao identity".to_string(), |f| f.to_string());
            bail!("{}: holds {found}, expected {id}", cert_path.display());
        }
        Ok((cert, key))
    }

    fn load_ca(&self) -> anyhow::Result<Certificate> {
        let path = self.ca_cert();
        let pem = read(&path, "the cluster's trusted CA certificate(s)")?;
        if pem_certs(&pem).is_empty() {
            bail!("{}: no PEM certificate in it", path.display());
        }
        Ok(Certificate::from_pem(pem))
    }
}

/// Reads a file the security set-up needs; a missing one says what it is and how to make it.
pub(crate) fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("missing {} ({what}); {HOW_TO_CREATE}", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("read {} ({what})", path.display())),
    }
}

/// The DER certificates in a PEM text ("CERTIFICATE" blocks only).
pub(crate) fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Ok((next, block)) = x509_parser::pem::parse_x509_pem(rest) {
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
        if next.len() >= rest.len() {
            break;
        }
        rest = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(dir.path());
        let err = sec.server_tls(&Identity::Node(1)).unwrap_err().to_string();
        assert!(err.contains("certs/node-1.crt") && err.contains("scripts/cluster up"), "{err}");
        let err = sec.load_challenge_key().unwrap_err().to_string();
        assert!(err.contains("challenge.key") && err.contains("scripts/cluster up"), "{err}");
        assert!(!sec.has_identity(&Identity::Node(1)));
    }

    #[test]
    fn a_malformed_challenge_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(dir.path());
        std::fs::write(sec.challenge_key(), "abcd\n").unwrap();
        assert!(sec.load_challenge_key().unwrap_err().to_string().contains("64 hex digits"));
        std::fs::write(sec.challenge_key(), format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(sec.load_challenge_key().unwrap(), [0xab; 32]);
    }
}
