//! The development CA: a convenience for `scripts/cluster up` and the test harness, not a
//! production PKI (its key sits next to the certificates it signs). It fills a
//! [`SecurityDir`] with whatever is missing: the CA, one certificate per node, router and
//! [`Role`], the dev JWT signing key and the cluster's challenge key.
//!
//! Re-running is a no-op; a node added to the topology gets a certificate from the existing
//! CA. Certificates already present are kept as they are, even if a node's address changed:
//! delete its `certs/node-N.*` to re-issue it.
//!
//! It only ever fills a folder it created itself, marked by a `.dev-ca` file written before
//! anything else. Pointed at any other folder that holds something (a production folder with
//! its own CA, a router's mount) it refuses and writes nothing: otherwise it would add a CA key,
//! the dev signing key and a trusted `token-keys/dev.pub.pem` to it, and anyone with the folder
//! could then sign in as any user. A folder made by a dev-ca older than the marker is known by
//! its own contents (a CA key whose certificate is [`DEV_CA_NAME`], and the dev signing key) and
//! is marked then.

use crate::dir::{pem_certs, read, SecurityDir};
use crate::identity::{valid_name, Identity, Role};
use anyhow::{bail, Context};
use hongbao_topology::Topology;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

/// The kid of the dev login service's signing key.
pub const DEV_KID: &str = "dev";
/// The common name of every CA this module makes.
pub const DEV_CA_NAME: &str = "hongbao development CA (not for production)";
/// What the `.dev-ca` marker says to whoever opens it.
const MARKER_TEXT: &str = "This folder was created by `hongbao dev-ca`: a development CA whose key sits next to the \
certificates, and a development token-signing key (kid \"dev\"). Never use it for production.\n";

/// What [`ensure_dev_pki`] found in the folder it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevFolder {
    /// None, or an empty one: made from scratch.
    Created,
    /// One it created before (marked): whatever was missing has been added.
    Existing,
    /// One an earlier version created, before folders were marked (its CA is the dev CA and it
    /// holds the dev signing key): marked now, and whatever was missing added.
    Adopted,
}
/// Dev certificates live this long; a dev cluster older than that re-creates its folder.
const VALID_YEARS: i32 = 10;

/// Creates whatever is missing under `dir` (see the module doc). Keys are written 0600. A
/// folder `dev-ca` did not create is refused with nothing written.
pub fn ensure_dev_pki(dir: &SecurityDir, topology: &Topology) -> anyhow::Result<DevFolder> {
    let folder = claim(dir)?;
    for d in [dir.root.clone(), dir.certs_dir(), dir.token_keys()] {
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    }
    // Every identity with the hosts its certificate must name (several routers may serve one
    // region, so a router's certificate covers all of their hosts).
    let mut wanted: BTreeMap<String, (Identity, BTreeSet<String>)> = BTreeMap::new();
    let mut want = |id: Identity, host: Option<String>| {
        let entry = wanted.entry(id.file_stem()).or_insert_with(|| (id, BTreeSet::new()));
        entry.1.extend(host);
    };
    for n in &topology.nodes {
        want(Identity::Node(n.id), Some(host_of(&n.addr)?));
    }
    for r in &topology.routers {
        if !valid_name(&r.region) {
            bail!("region name {:?} cannot be a certificate identity (letters, digits, '-', '_')", r.region);
        }
        want(Identity::Router(r.region.clone()), Some(host_of(&r.addr)?));
    }
    for role in Role::ALL {
        want(Identity::Service(role), None);
    }

    let ca_exists = (dir.ca_cert().exists(), dir.ca_key().exists());
    let fresh_ca = ca_exists == (false, false);
    // A node certificate from before node DNS names (#28) is issued again: without the name,
    // the other nodes and the routers refuse it at the handshake.
    let missing: Vec<_> = wanted.values().filter(|(id, _)| fresh_ca || !dir.has_identity(id) || !names_its_node_dns(dir, id)).collect();
    if !missing.is_empty() {
        let ca = if fresh_ca { new_ca(dir)? } else { load_ca(dir)? };
        for (id, hosts) in missing {
            issue(dir, &ca, id, hosts)?;
        }
    }

    if !dir.dev_signing_key().exists() {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        write_secret(&dir.dev_signing_key(), key.serialize_pem().as_bytes())?;
    }
    let dev_pub = dir.token_keys().join(format!("{DEV_KID}.pub.pem"));
    if !dev_pub.exists() {
        let pem = read(&dir.dev_signing_key(), "the dev JWT signing key")?;
        let key = KeyPair::from_pem(&String::from_utf8_lossy(&pem)).context("dev-signing.key")?;
        write_public(&dev_pub, key.public_key_pem().as_bytes())?;
    }
    if !dir.challenge_key().exists() {
        let mut secret = [0u8; 32];
        random(&mut secret)?;
        write_secret(&dir.challenge_key(), format!("{}\n", hex::encode(secret)).as_bytes())?;
    }
    Ok(folder)
}

/// Makes sure `dir` is a folder of dev-ca's before anything is written to it: marked already,
/// new or empty (marked now, first), or made by an earlier dev-ca (marked now). Any other
/// folder is refused, and nothing in it changes.
fn claim(dir: &SecurityDir) -> anyhow::Result<DevFolder> {
    let marker = dir.dev_ca_marker();
    if marker.is_file() {
        return Ok(DevFolder::Existing);
    }
    let entries = match std::fs::read_dir(&dir.root) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<Result<Vec<_>, _>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e),
    }
    .with_context(|| format!("read {}", dir.root.display()))?;
    let folder = if entries.is_empty() {
        DevFolder::Created
    } else if made_by_an_earlier_dev_ca(dir) {
        DevFolder::Adopted
    } else {
        let mut names = entries;
        names.sort();
        let holds = if names.len() > 6 { format!("{}, ...", names[..6].join(", ")) } else { names.join(", ") };
        let ca = if dir.ca_cert().exists() { ", a CA certificate (ca.crt) among them" } else { "" };
        bail!(
            "refusing {}: `hongbao dev-ca` did not create this folder (it has no .dev-ca marker) and it already holds files ({holds}){ca}. \
             dev-ca would add a development CA key, the development token-signing key and trust its public key \
             (token-keys/{DEV_KID}.pub.pem), with which anyone holding the folder signs in as any user; it adds them only to \
             folders it created, so nothing here was changed. For a development cluster give --security-dir a new or empty \
             folder; a production folder is filled from your own CA and login service (deploy/README.md, \"Replacing the dev CA\")",
            dir.root.display()
        );
    };
    std::fs::create_dir_all(&dir.root).with_context(|| format!("create {}", dir.root.display()))?;
    write_public(&marker, MARKER_TEXT.as_bytes())?;
    Ok(folder)
}

/// A folder an earlier dev-ca made, before the marker: its CA key's certificate is the dev CA
/// and the dev signing key is there. A production folder has neither (its CA key is elsewhere,
/// its CA has another name, and no login key sits in it).
fn made_by_an_earlier_dev_ca(dir: &SecurityDir) -> bool {
    if !dir.dev_signing_key().is_file() {
        return false;
    }
    let Ok(key_pem) = std::fs::read(dir.ca_key()) else { return false };
    let Ok(key) = KeyPair::from_pem(&String::from_utf8_lossy(&key_pem)) else { return false };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let Ok(ca_pem) = std::fs::read(dir.ca_cert()) else { return false };
    pem_certs(&ca_pem).iter().any(|der| {
        x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| {
            c.tbs_certificate.subject_pki.raw == spki.as_slice()
                && c.subject().iter_common_name().any(|cn| cn.as_str().ok() == Some(DEV_CA_NAME))
        })
    })
}

/// A separate folder under `dir` with its own, unrelated CA and a certificate for `id` signed
/// by it: for tests proving that a certificate from another CA is refused.
pub fn generate_foreign_identity(dir: &Path, id: &Identity) -> anyhow::Result<SecurityDir> {
    let sec = SecurityDir::new(dir);
    std::fs::create_dir_all(sec.certs_dir()).with_context(|| format!("create {}", sec.certs_dir().display()))?;
    if sec.ca_cert().exists() || sec.ca_key().exists() {
        bail!("{} already holds a CA", dir.display());
    }
    let ca = new_ca(&sec)?;
    issue(&sec, &ca, id, &BTreeSet::new())?;
    Ok(sec)
}

/// Issues a certificate for `id` from the folder's existing CA, if it has none yet: for the test
/// harness, which reads wallets straight from nodes as a router would (nodes serve their public
/// API to routers only), also in clusters whose topology lists no router.
pub fn ensure_identity(dir: &SecurityDir, id: &Identity) -> anyhow::Result<()> {
    if dir.has_identity(id) {
        return Ok(());
    }
    issue(dir, &load_ca(dir)?, id, &BTreeSet::new())
}

/// Whether `id`'s certificate names its node DNS name (true for any identity but a node's).
fn names_its_node_dns(dir: &SecurityDir, id: &Identity) -> bool {
    let Identity::Node(n) = id else { return true };
    let want = crate::identity::node_dns_name(*n);
    let Ok(pem) = std::fs::read(dir.cert(id)) else { return false };
    pem_certs(&pem).first().is_some_and(|der| {
        x509_parser::parse_x509_certificate(der).ok().and_then(|(_, c)| {
            c.subject_alternative_name().ok().flatten().map(|san| {
                san.value.general_names.iter().any(|g| matches!(g, x509_parser::extensions::GeneralName::DNSName(d) if *d == want))
            })
        }) == Some(true)
    })
}

/// The host part of a `host:port` address: an IP literal (IPv6 in brackets) or a DNS name.
fn host_of(addr: &str) -> anyhow::Result<String> {
    if addr.parse::<IpAddr>().is_ok() {
        return Ok(addr.to_string()); // a bare IPv6 address would otherwise lose its last group as a "port"
    }
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        bail!("address {addr:?} has no host");
    }
    Ok(host.to_string())
}

fn new_ca(dir: &SecurityDir) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = base_params(DEV_CA_NAME)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    write_secret(&dir.ca_key(), key.serialize_pem().as_bytes())?;
    write_public(&dir.ca_cert(), cert.pem().as_bytes())?;
    Ok(Issuer::new(params, key))
}

/// The existing CA: `ca.key` and the certificate in `ca.crt` whose public key matches it
/// (during a rotation `ca.crt` also holds the old CA).
fn load_ca(dir: &SecurityDir) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_pem = read(&dir.ca_key(), "the dev CA's private key, needed to sign a new certificate")?;
    let key = KeyPair::from_pem(&String::from_utf8_lossy(&key_pem)).with_context(|| format!("{}", dir.ca_key().display()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let certs = pem_certs(&read(&dir.ca_cert(), "the dev CA's certificate")?);
    let der = certs
        .into_iter()
        .find(|der| x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| c.tbs_certificate.subject_pki.raw == spki.as_slice()))
        .with_context(|| format!("no certificate in {} matches {}", dir.ca_cert().display(), dir.ca_key().display()))?;
    Ok(Issuer::from_ca_cert_der(&der.into(), key)?)
}

/// Signs a new key + certificate for `id` and writes both (key first, so a certificate on
/// disk always has its key).
fn issue(dir: &SecurityDir, ca: &Issuer<'_, KeyPair>, id: &Identity, hosts: &BTreeSet<String>) -> anyhow::Result<()> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = base_params(&id.uri())?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names = vec![SanType::URI(id.uri().try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if id.is_server() {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        let mut names: BTreeSet<String> = hosts.clone();
        if let Identity::Node(n) = id {
            names.insert(crate::identity::node_dns_name(*n));
        }
        names.insert("localhost".into());
        names.insert("127.0.0.1".into());
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into().with_context(|| format!("host {name:?}"))?),
            });
        }
    }
    let cert = params.signed_by(&key, ca)?;
    write_secret(&dir.key(id), key.serialize_pem().as_bytes())?;
    write_public(&dir.cert(id), cert.pem().as_bytes())?;
    Ok(())
}

fn base_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hongbao");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // From a year back (clock skew between machines) to VALID_YEARS ahead.
    let year = current_year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + VALID_YEARS, 1, 1);
    let mut serial = [0u8; 16];
    random(&mut serial)?;
    serial[0] &= 0x7f; // a positive DER integer
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32 // mean Gregorian year; off by a day at most, and not_before is a year back
}

fn random(buf: &mut [u8]) -> anyhow::Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| anyhow::anyhow!("the system random generator failed"))
}

/// Writes a private key: mode 0600 from creation (no window where it is world-readable),
/// through a temporary file renamed into place so a crash never leaves half a key.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let _ = std::fs::remove_file(&tmp); // a leftover from a crash may have another mode
    let mut f = opts.open(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TOPOLOGY: &str = r#"
slots = 10
regions = [{ name = "shenzhen" }, { name = "shanghai" }]
nodes = [
  { id = 1, region = "shenzhen", addr = "127.0.0.1:7101", metrics_addr = "127.0.0.1:9101" },
  { id = 2, region = "shanghai", addr = "node2.example.internal:7102", metrics_addr = "127.0.0.1:9102" },
]
routers = [{ region = "shenzhen", addr = "[::1]:7001" }]
[[shards]]
id = 1
home = "shenzhen"
replicas = [1, 2]
slots = [[0, 10]]
"#;

    fn read_der(path: &Path) -> Vec<u8> {
        pem_certs(&std::fs::read(path).unwrap()).remove(0)
    }

    #[test]
    fn identity_round_trips_through_a_generated_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(tmp.path().join("sec"));
        ensure_dev_pki(&sec, &Topology::parse(TOPOLOGY).unwrap()).unwrap();
        let ids =
            [Identity::Node(1), Identity::Node(2), Identity::Router("shenzhen".into())].into_iter().chain(Role::ALL.map(Identity::Service));
        for id in ids {
            assert!(sec.has_identity(&id), "{id}");
            assert_eq!(Identity::from_cert_der(&read_der(&sec.cert(&id))), Some(id.clone()));
        }
        // A server certificate names its host (IP or DNS), localhost and 127.0.0.1; EKUs fit the kind.
        let der = read_der(&sec.cert(&Identity::Node(2)));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(sans.contains("node2.example.internal") && sans.contains("localhost") && sans.contains("[127, 0, 0, 1]"), "{sans}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value.clone();
        assert!(eku.server_auth && eku.client_auth);
        let der = read_der(&sec.cert(&Identity::Service(Role::App)));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value.clone();
        assert!(!eku.server_auth && eku.client_auth);
        let der = read_der(&sec.cert(&Identity::Router("shenzhen".into())));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(sans.contains("[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]"), "{sans}");
        // The server/client TLS configs load from what was written.
        sec.server_tls(&Identity::Node(1)).unwrap();
        sec.client_tls(&Identity::Service(Role::Admin)).unwrap();
        sec.load_challenge_key().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(tmp.path());
        ensure_dev_pki(&sec, &Topology::parse(TOPOLOGY).unwrap()).unwrap();
        for p in
            [sec.ca_key(), sec.key(&Identity::Node(1)), sec.key(&Identity::Service(Role::App)), sec.dev_signing_key(), sec.challenge_key()]
        {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn rerunning_keeps_files_and_a_new_node_is_signed_by_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(tmp.path());
        let topo = Topology::parse(TOPOLOGY).unwrap();
        ensure_dev_pki(&sec, &topo).unwrap();
        let snapshot = |p: &Path| std::fs::read(p).unwrap();
        let files = [sec.ca_cert(), sec.ca_key(), sec.cert(&Identity::Node(1)), sec.dev_signing_key(), sec.challenge_key()];
        let before: Vec<_> = files.iter().map(|p| snapshot(p)).collect();
        ensure_dev_pki(&sec, &topo).unwrap();
        assert_eq!(before, files.iter().map(|p| snapshot(p)).collect::<Vec<_>>(), "re-running is a no-op");

        let grown = TOPOLOGY.replace(
            "]\nrouters",
            "  { id = 3, region = \"shanghai\", addr = \"127.0.0.1:7103\", metrics_addr = \"127.0.0.1:9103\" },\n]\nrouters",
        );
        let grown = Topology::parse(&grown.replace("replicas = [1, 2]", "replicas = [1, 2, 3]")).unwrap();
        assert!(!sec.has_identity(&Identity::Node(3)));
        ensure_dev_pki(&sec, &grown).unwrap();
        assert_eq!(before, files.iter().map(|p| snapshot(p)).collect::<Vec<_>>(), "existing files kept");
        let der = read_der(&sec.cert(&Identity::Node(3)));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = read_der(&sec.ca_cert());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        cert.verify_signature(Some(ca.public_key())).expect("signed by the existing CA");
    }

    #[test]
    fn a_foreign_identity_is_signed_by_another_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(tmp.path().join("dev"));
        ensure_dev_pki(&sec, &Topology::parse(TOPOLOGY).unwrap()).unwrap();
        let foreign = generate_foreign_identity(&tmp.path().join("foreign"), &Identity::Node(1)).unwrap();
        let der = read_der(&foreign.cert(&Identity::Node(1)));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(Identity::from_cert_der(&der), Some(Identity::Node(1)), "same name");
        let dev_ca = read_der(&sec.ca_cert());
        let (_, dev_ca) = x509_parser::parse_x509_certificate(&dev_ca).unwrap();
        assert!(cert.verify_signature(Some(dev_ca.public_key())).is_err(), "not signed by the dev CA");
        let own_ca = read_der(&foreign.ca_cert());
        let (_, own_ca) = x509_parser::parse_x509_certificate(&own_ca).unwrap();
        cert.verify_signature(Some(own_ca.public_key())).unwrap();
    }

    /// Every file under `root` with its bytes: "nothing changed" is these being equal.
    fn files(root: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_new_or_empty_folder_is_created_and_marked_and_a_marked_one_is_filled_again() {
        let tmp = tempfile::tempdir().unwrap();
        let topo = Topology::parse(TOPOLOGY).unwrap();
        let sec = SecurityDir::new(tmp.path().join("new"));
        assert_eq!(ensure_dev_pki(&sec, &topo).unwrap(), DevFolder::Created);
        let marker = std::fs::read_to_string(sec.dev_ca_marker()).unwrap();
        assert!(marker.contains("hongbao dev-ca") && marker.contains("Never use it for production"), "{marker}");
        assert_eq!(ensure_dev_pki(&sec, &topo).unwrap(), DevFolder::Existing);
        std::fs::remove_file(sec.challenge_key()).unwrap();
        assert_eq!(ensure_dev_pki(&sec, &topo).unwrap(), DevFolder::Existing);
        assert!(sec.challenge_key().exists(), "what is missing of its own folder is added");
        let empty = SecurityDir::new(tmp.path().join("empty"));
        std::fs::create_dir(&empty.root).unwrap();
        assert_eq!(ensure_dev_pki(&empty, &topo).unwrap(), DevFolder::Created, "an empty folder is as good as none");
    }

    #[test]
    fn a_folder_dev_ca_did_not_create_is_refused_and_nothing_in_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let topo = Topology::parse(TOPOLOGY).unwrap();
        let dev = SecurityDir::new(tmp.path().join("dev"));
        ensure_dev_pki(&dev, &topo).unwrap();
        // A production folder: the CA's certificate, a node's certificate and key, the challenge
        // key and the login service's public key. No CA key, no signing key, no marker.
        let prod = SecurityDir::new(tmp.path().join("prod"));
        std::fs::create_dir_all(prod.certs_dir()).unwrap();
        std::fs::create_dir_all(prod.token_keys()).unwrap();
        std::fs::copy(dev.ca_cert(), prod.ca_cert()).unwrap();
        std::fs::copy(dev.cert(&Identity::Node(1)), prod.cert(&Identity::Node(1))).unwrap();
        std::fs::copy(dev.key(&Identity::Node(1)), prod.key(&Identity::Node(1))).unwrap();
        std::fs::copy(dev.challenge_key(), prod.challenge_key()).unwrap();
        std::fs::copy(dev.token_keys().join("dev.pub.pem"), prod.token_keys().join("login-2026.pub.pem")).unwrap();
        let before = files(&prod.root);
        let err = format!("{:#}", ensure_dev_pki(&prod, &topo).unwrap_err());
        for words in [prod.root.display().to_string().as_str(), "did not create this folder", "ca.crt", "nothing here was changed"] {
            assert!(err.contains(words), "{words:?} in: {err}");
        }
        assert_eq!(files(&prod.root), before, "not one file added or changed");

        // A CA key of another CA, even beside a copied signing key: not dev-ca's folder.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = base_params("Example Corp Root CA").unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(prod.ca_cert(), cert.pem()).unwrap();
        std::fs::write(prod.ca_key(), key.serialize_pem()).unwrap();
        std::fs::copy(dev.dev_signing_key(), prod.dev_signing_key()).unwrap();
        let before = files(&prod.root);
        assert!(ensure_dev_pki(&prod, &topo).is_err());
        assert_eq!(files(&prod.root), before);
        // A dev-named CA without the dev signing key (here: a foreign test identity) is refused too.
        let foreign = generate_foreign_identity(&tmp.path().join("foreign"), &Identity::Node(1)).unwrap();
        let before = files(&foreign.root);
        assert!(ensure_dev_pki(&foreign, &topo).is_err());
        assert_eq!(files(&foreign.root), before);
    }

    #[test]
    fn a_folder_of_an_earlier_dev_ca_without_the_marker_is_adopted_with_its_files_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let topo = Topology::parse(TOPOLOGY).unwrap();
        let sec = SecurityDir::new(tmp.path());
        ensure_dev_pki(&sec, &topo).unwrap();
        std::fs::remove_file(sec.dev_ca_marker()).unwrap(); // as an older dev-ca left it
        let before = files(&sec.root);
        assert_eq!(ensure_dev_pki(&sec, &topo).unwrap(), DevFolder::Adopted);
        assert!(sec.dev_ca_marker().is_file(), "marked now");
        let mut after = files(&sec.root);
        after.remove(&sec.dev_ca_marker());
        assert_eq!(after, before, "its CA, keys and certificates are kept");
        assert_eq!(ensure_dev_pki(&sec, &topo).unwrap(), DevFolder::Existing);
    }

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host_of("127.0.0.1:7101").unwrap(), "127.0.0.1");
        assert_eq!(host_of("[::1]:7001").unwrap(), "::1");
        assert_eq!(host_of("node.example:80").unwrap(), "node.example");
        assert_eq!(host_of("node.example").unwrap(), "node.example");
        assert!(host_of(":80").is_err());
    }
}
