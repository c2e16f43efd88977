//! What a client shows the cluster: a client certificate per service role (TLS), and for calls
//! that act for an end user, that user's token (`authorization: Bearer <JWT>`).
//!
//! A real app server holds only the `app` certificate and its users' tokens from the login
//! service. The local cluster's security folder (`scripts/cluster up`) holds every role's
//! certificate and a development signing key, so the CLI, the demo, the bench and the tests can
//! act as any role and mint tokens for any user: a development convenience, never production.

use crate::limits::{DEV_TOKEN_RENEW, DEV_TOKEN_TTL, MAX_DEV_TOKENS};
use hongbao_auth::{DevSigner, Role, SecurityDir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::transport::ClientTlsConfig;

/// Gives the token of a user for a call. `device`: the device the call names, if any.
pub trait TokenSource: Send + Sync {
    fn token(&self, user: u64, device: Option<&str>) -> Result<String, String>;
}

/// Device of a user's development token when no call has named one yet.
pub const DEFAULT_DEVICE: &str = "dev-device";

/// Mints tokens with the security folder's development key, for the device a call names (or the
/// last one named for that user). Tokens are kept until near their end, so a storm does not sign
/// (and the router does not verify) a new token per request.
pub struct DevTokens {
    signer: DevSigner,
    minted: Mutex<HashMap<u64, (String, String, Instant)>>,
}

impl DevTokens {
    pub fn load(dir: &SecurityDir) -> anyhow::Result<DevTokens> {
        Ok(DevTokens { signer: DevSigner::load(dir)?, minted: Mutex::new(HashMap::new()) })
    }
}

impl TokenSource for DevTokens {
    fn token(&self, user: u64, device: Option<&str>) -> Result<String, String> {
        let mut minted = self.minted.lock().expect("dev token lock");
        if let Some((dev, tok, at)) = minted.get(&user) {
            if device.is_none_or(|d| d == dev) && at.elapsed() + DEV_TOKEN_RENEW < DEV_TOKEN_TTL {
                return Ok(tok.clone());
            }
        }
        let dev = device.map(str::to_string).or_else(|| minted.get(&user).map(|(d, _, _)| d.clone())).unwrap_or(DEFAULT_DEVICE.into());
        let tok = self.signer.mint(user, &dev, DEV_TOKEN_TTL.as_secs());
        if minted.len() >= MAX_DEV_TOKENS {
            minted.clear();
        }
        minted.insert(user, (dev, tok.clone(), Instant::now()));
        Ok(tok)
    }
}

/// Tokens saved by `hongbao login` under `<dir>/<user>.jwt`.
pub struct SavedTokens {
    pub dir: PathBuf,
}

impl SavedTokens {
    pub fn path(&self, user: u64) -> PathBuf {
        self.dir.join(format!("{user}.jwt"))
    }
}

impl TokenSource for SavedTokens {
    fn token(&self, user: u64, _device: Option<&str>) -> Result<String, String> {
        let p = self.path(user);
        std::fs::read_to_string(&p)
            .map(|t| t.trim().to_string())
            .map_err(|_| format!("no token for user {user} ({} missing): run `hongbao login {user} --device DEVICE` first", p.display()))
    }
}

pub struct Credentials {
    pub dir: SecurityDir,
    tls: HashMap<Role, ClientTlsConfig>,
    pub tokens: Option<Arc<dyn TokenSource>>,
    /// Every call made as this one role (e.g. admin, or app without tokens, in tests).
    only: Option<Role>,
    /// A certificate shown instead of the role's: the test harness stands in for a router to
    /// read and fund wallets straight at nodes (`presenting`).
    presented: Option<ClientTlsConfig>,
}

impl Credentials {
    /// Every role certificate found in the security folder (at least one), and no tokens.
    pub fn load(dir: &Path) -> anyhow::Result<Credentials> {
        let dir = SecurityDir::new(dir);
        let mut tls = HashMap::new();
        for role in Role::ALL {
            let id = hongbao_auth::Identity::Service(role);
            if dir.has_identity(&id) {
                tls.insert(role, dir.client_tls(&id)?);
            }
        }
        anyhow::ensure!(!tls.is_empty(), "no service certificates under {}/certs (run scripts/cluster up)", dir.root.display());
        Ok(Credentials { dir, tls, tokens: None, only: None, presented: None })
    }

    /// The local cluster's folder: every role, and tokens minted with the development key.
    pub fn dev(dir: &Path) -> anyhow::Result<Credentials> {
        let c = Credentials::load(dir)?;
        let tokens = DevTokens::load(&c.dir)?;
        Ok(c.with_tokens(Arc::new(tokens)))
    }

    pub fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> Credentials {
        self.tokens = Some(tokens);
        self
    }

    /// Makes every call as `role` (which must be loaded).
    pub fn only(mut self, role: Role) -> Credentials {
        self.only = Some(role);
        self
    }

    /// Shows `id`'s certificate on every call (the calls are still made as the one role of
    /// `only`, e.g. no user tokens). For tests: a node serves its public API to routers only,
    /// and the harness, holding the cluster's CA, stands in for one.
    pub fn presenting(mut self, id: &hongbao_auth::Identity) -> anyhow::Result<Credentials> {
        self.presented = Some(self.dir.client_tls(id)?);
        Ok(self)
    }

    /// Whether calls for a user go as that user (the app role with tokens); otherwise they go
    /// as the one role these credentials are made for (e.g. admin).
    pub fn acts_for_users(&self) -> bool {
        self.tokens.is_some() && self.only.unwrap_or(Role::App) == Role::App && self.tls.contains_key(&Role::App)
    }

    /// The role a call is made as, and its TLS settings.
    pub fn tls(&self, role: Role) -> Result<(Role, ClientTlsConfig), NoCertificate> {
        let role = self.only.unwrap_or(role);
        if let Some(tls) = &self.presented {
            return Ok((role, tls.clone()));
        }
        self.tls.get(&role).map(|t| (role, t.clone())).ok_or_else(|| NoCertificate { role, certs: self.dir.root.join("certs") })
    }
}

/// The security folder holds no certificate for the role a call is made as.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no certificate for role {} under {}", role.name(), certs.display())]
pub struct NoCertificate {
    pub role: Role,
    pub certs: PathBuf,
}

/// For callers that collect errors as words (`?` in a function returning `Result<_, String>`).
impl From<NoCertificate> for String {
    fn from(e: NoCertificate) -> String {
        e.to_string()
    }
}

/// The security folder of the local cluster: `$HONGBAO_SECURITY_DIR`, else `security/` beside the
/// topology file (`scripts/cluster up` and the test harness put it there).
pub fn local_security_dir(topology: &Path) -> PathBuf {
    if let Ok(d) = std::env::var("HONGBAO_SECURITY_DIR") {
        return PathBuf::from(d);
    }
    topology.parent().map(|p| p.join("security")).unwrap_or_else(|| PathBuf::from("security"))
}
