//! End-user tokens: JWTs signed with Ed25519 (`alg: EdDSA`), the header's `kid` naming the
//! key. Servers trust the public keys in `token-keys/<kid>.pub.pem`; a login service holds the
//! private key. Only EdDSA is accepted: no `none`, no HMAC (a public key misused as an HMAC
//! secret is the classic JWT forgery).
//!
//! The development key (kid [`DEV_KID`], minted by `hongbao login`) is trusted only by the
//! routers of a development cluster ([`DevKey`]): its private key lives in the security folder
//! `hongbao dev-ca` makes, so a production router refuses it whatever its `token-keys/` hold.
//!
//! A red-packet storm sends many requests with the same token and an Ed25519 verify costs tens
//! of microseconds, so [`TokenVerifier`] remembers tokens it has verified until they expire.

use crate::devpki::DEV_KID;
use crate::dir::{read, SecurityDir};
use crate::identity::valid_name;
use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub const ISSUER: &str = "hongbao-login";
pub const AUDIENCE: &str = "hongbao";
/// Tokens living longer than this (`exp - iat`) are refused: a stolen token stays useful for a
/// day at most.
pub const MAX_TOKEN_TTL_S: u64 = 24 * 3600;
pub const MAX_TOKEN_BYTES: usize = 4096;
pub const MAX_DEVICE_BYTES: usize = 128;
/// How far a token's `iat` or `nbf` may lie in the future: the login service's clock may run
/// ahead.
pub const CLOCK_SKEW_S: u64 = 60;
/// Tokens remembered by a [`TokenVerifier`]; about 200 bytes each.
const CACHE_ENTRIES: usize = 65_536;
const CACHE_SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, decimal.
    pub sub: String,
    /// The device the user logged in on.
    pub dev: String,
    pub iat: u64,
    pub exp: u64,
    /// Not before (optional, RFC 7519 4.1.5): a login service may issue a token that becomes
    /// valid later. Honoured with the same clock skew as `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
}

impl Claims {
    /// The user id, if `sub` is one in its only spelling (digits, no leading zero).
    pub fn user(&self) -> Option<u64> {
        let s = self.sub.as_str();
        let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if canonical {
            s.parse().ok()
        } else {
            None
        }
    }
}

/// Why a token was refused. The message never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token algorithm not allowed (EdDSA only)")]
    BadAlgorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lifetime longer than {MAX_TOKEN_TTL_S} s")]
    TtlTooLong,
    #[error("token from another issuer")]
    WrongIssuer,
    #[error("token for another audience")]
    WrongAudience,
    #[error("token names no valid user or device")]
    BadSubject,
    #[error("token signed with the development key (kid \"dev\"), which this cluster refuses: its topology is not a development cluster (no `development = true`)")]
    DevKeyRefused,
}

/// Whether tokens signed with the development key (kid [`DEV_KID`]) are accepted. Only a
/// development cluster accepts them (topology `development = true`): that key's private half
/// sits in every dev security folder, so whoever has a copy can sign in as anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKey {
    Accepted,
    Refused,
}

impl DevKey {
    /// The rule for a cluster whose topology says `development = development`.
    pub fn for_cluster(development: bool) -> DevKey {
        if development {
            DevKey::Accepted
        } else {
            DevKey::Refused
        }
    }
}

impl From<TokenError> for tonic::Status {
    fn from(e: TokenError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// The public keys trusted for end-user tokens, by kid, and whether the development key may
/// be one of them.
pub struct TokenKeys {
    keys: HashMap<String, DecodingKey>,
    dev_key: DevKey,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("TokenKeys").field("kids", &kids).field("dev_key", &self.dev_key).finish()
    }
}

impl TokenKeys {
    /// Every `<kid>.pub.pem` in `dir` (an Ed25519 public key in SPKI PEM). At least one.
    /// Tokens of the development key verify only with `DevKey::Accepted`.
    pub fn load_dir(dir: &Path, dev_key: DevKey) -> anyhow::Result<TokenKeys> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "missing {} (trusted JWT public keys, <kid>.pub.pem); for a development cluster run `scripts/cluster up`",
                    dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut pems = Vec::new();
        for entry in entries {
            let path = entry.with_context(|| format!("read {}", dir.display()))?.path();
            let Some(kid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pub.pem")) else { continue };
            pems.push((kid.to_string(), read(&path, "a trusted JWT public key")?));
        }
        if pems.is_empty() {
            bail!("{}: no <kid>.pub.pem in it; every token would be refused", dir.display());
        }
        TokenKeys::from_pems(pems.iter().map(|(k, p)| (k.as_str(), p.as_slice())), dev_key)
    }

    /// Keys from memory: (kid, Ed25519 public key PEM).
    pub fn from_pems<'a>(pems: impl IntoIterator<Item = (&'a str, &'a [u8])>, dev_key: DevKey) -> anyhow::Result<TokenKeys> {
        let mut keys = HashMap::new();
        for (kid, pem) in pems {
            if !valid_name(kid) {
                bail!("token key id {kid:?}: letters, digits, '-' and '_' only");
            }
            let key = DecodingKey::from_ed_pem(pem).map_err(|e| anyhow::anyhow!("token key {kid:?} is not an Ed25519 public key: {e}"))?;
            keys.insert(kid.to_string(), key);
        }
        Ok(TokenKeys { keys, dev_key })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether tokens of the development key verify with these keys.
    pub fn dev_key(&self) -> DevKey {
        self.dev_key
    }

    /// Whether a key of this kid is trusted.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The development key is among these keys but its tokens are refused: worth a line in the
    /// log at start, because someone copied a dev folder's `token-keys/` into this cluster.
    pub fn holds_refused_dev_key(&self) -> bool {
        self.dev_key == DevKey::Refused && self.has_kid(DEV_KID)
    }

    /// Checks signature and claims at time `now_s` (Unix seconds), without any cache.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        // An unknown `alg` (such as "none") fails to parse: malformed.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::BadAlgorithm);
        }
        // Refused by its kid before any key is looked at: whether or not `dev.pub.pem` is in the
        // folder, a non-development cluster takes no token of the development key.
        if self.dev_key == DevKey::Refused && header.kid.as_deref() == Some(DEV_KID) {
            return Err(TokenError::DevKeyRefused);
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or(TokenError::UnknownKey)?;
        // The library checks the signature only; the claims are checked below against the
        // caller's clock, with this module's rules.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::BadAlgorithm,
            _ => TokenError::Malformed,
        })?;
        check_claims(&data.claims, now_s)?;
        Ok(data.claims)
    }
}

fn check_claims(c: &Claims, now_s: u64) -> Result<(), TokenError> {
    if c.iss != ISSUER {
        return Err(TokenError::WrongIssuer);
    }
    if c.aud != AUDIENCE {
        return Err(TokenError::WrongAudience);
    }
    if c.exp <= c.iat {
        return Err(TokenError::Malformed);
    }
    if c.exp - c.iat > MAX_TOKEN_TTL_S {
        return Err(TokenError::TtlTooLong);
    }
    if c.nbf.is_some_and(|nbf| nbf >= c.exp) {
        return Err(TokenError::Malformed); // valid at no time at all
    }
    if c.iat > now_s.saturating_add(CLOCK_SKEW_S) || c.nbf.is_some_and(|nbf| nbf > now_s.saturating_add(CLOCK_SKEW_S)) {
        return Err(TokenError::NotYetValid);
    }
    if now_s >= c.exp {
        return Err(TokenError::Expired);
    }
    if c.user().is_none() || c.dev.is_empty() || c.dev.len() > MAX_DEVICE_BYTES {
        return Err(TokenError::BadSubject);
    }
    Ok(())
}

pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verifies tokens, remembering verified ones (by SHA-256 of the token) until their `exp`.
/// Clones share keys and cache.
#[derive(Clone)]
pub struct TokenVerifier {
    state: Arc<RwLock<Arc<VerifierState>>>,
}

/// Keys and the cache of tokens verified with them: replaced as one, so a token verified
/// with a key just removed can never land in the new cache.
struct VerifierState {
    keys: TokenKeys,
    cache: Vec<Mutex<HashMap<[u8; 32], Claims>>>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.current();
        let cached: usize = state.cache.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum();
        f.debug_struct("TokenVerifier").field("keys", &state.keys).field("cached", &cached).finish()
    }
}

impl TokenVerifier {
    pub fn new(keys: TokenKeys) -> Self {
        TokenVerifier { state: Arc::new(RwLock::new(Arc::new(VerifierState::new(keys)))) }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, now_s())
    }

    /// [`verify`](Self::verify) at a given time (Unix seconds).
    pub fn verify_at(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong); // before hashing: the cost of a refusal stays flat
        }
        let state = self.current();
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        let shard = &state.cache[id[0] as usize % CACHE_SHARDS];
        {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(claims) = map.get(&id) {
                if now_s < claims.exp {
                    return Ok(claims.clone());
                }
                map.remove(&id);
                return Err(TokenError::Expired);
            }
        }
        let claims = state.keys.verify(token, now_s)?;
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut map, now_s);
        map.insert(id, claims.clone());
        Ok(claims)
    }

    /// Swaps in a new key set (rotation) and forgets every cached token.
    pub fn reload(&self, keys: TokenKeys) {
        let fresh = Arc::new(VerifierState::new(keys));
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    pub fn key_count(&self) -> usize {
        self.current().keys.len()
    }

    fn current(&self) -> Arc<VerifierState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl VerifierState {
    fn new(keys: TokenKeys) -> Self {
        VerifierState { keys, cache: (0..CACHE_SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

/// Keeps a cache shard under its bound: drop expired tokens, and if that frees less than an
/// eighth, drop an arbitrary eighth too (re-verifying costs only time), so the sweep is paid
/// once per many inserts.
fn make_room(map: &mut HashMap<[u8; 32], Claims>, now_s: u64) {
    let cap = CACHE_ENTRIES / CACHE_SHARDS;
    if map.len() < cap {
        return;
    }
    map.retain(|_, c| now_s < c.exp);
    let target = cap - cap / 8;
    if map.len() > target {
        let victims: Vec<[u8; 32]> = map.keys().take(map.len() - target).copied().collect();
        for v in victims {
            map.remove(&v);
        }
    }
}

/// The dev login service: mints tokens with `dev-signing.key` (kid "dev"). A development
/// convenience; a production login service keeps its key out of the cluster's folder.
pub struct DevSigner {
    key: EncodingKey,
    kid: String,
}

impl fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DevSigner {
    pub fn load(dir: &SecurityDir) -> anyhow::Result<DevSigner> {
        let path = dir.dev_signing_key();
        let pem = read(&path, "the dev login service's signing key")?;
        DevSigner::from_pem(&pem, crate::devpki::DEV_KID).with_context(|| format!("{}", path.display()))
    }

    /// An Ed25519 private key in PKCS#8 PEM.
    pub fn from_pem(pem: &[u8], kid: &str) -> anyhow::Result<DevSigner> {
        if !valid_name(kid) {
            bail!("token key id {kid:?}: letters, digits, '-' and '_' only");
        }
        let key = EncodingKey::from_ed_pem(pem).map_err(|e| anyhow::anyhow!("not an Ed25519 private key: {e}"))?;
        let signer = DevSigner { key, kid: kid.to_string() };
        // The library parses the key only when signing: sign once now so mint cannot fail.
        signer.try_mint(0, "probe", 0, 1).map_err(|e| anyhow::anyhow!("not a usable Ed25519 private key: {e}"))?;
        Ok(signer)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `user` on `device`, valid from now for `ttl_s` (at most [`MAX_TOKEN_TTL_S`]).
    /// `device` must be 1..=[`MAX_DEVICE_BYTES`] bytes or verifiers refuse the token.
    pub fn mint(&self, user: u64, device: &str, ttl_s: u64) -> String {
        self.mint_at(user, device, now_s(), ttl_s)
    }

    /// [`mint`](Self::mint) with an explicit issue time (tests: expired or future tokens).
    pub fn mint_at(&self, user: u64, device: &str, iat: u64, ttl_s: u64) -> String {
        self.try_mint(user, device, iat, ttl_s.min(MAX_TOKEN_TTL_S)).expect("key checked when loaded; claims always serialize")
    }

    /// Signs exactly `claims`, unchecked: for tests of tokens a login service might issue
    /// (a `nbf` in the future, odd lifetimes) and of what verifiers make of them.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("key checked when loaded; claims always serialize")
    }

    /// Without the TTL clamp, for tests of over-long tokens.
    pub(crate) fn try_mint(&self, user: u64, device: &str, iat: u64, ttl_s: u64) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            sub: user.to_string(),
            dev: device.to_string(),
            iat,
            exp: iat.saturating_add(ttl_s),
            nbf: None,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// The token of an `authorization: Bearer <jwt>` header.
pub fn bearer<T>(req: &tonic::Request<T>) -> Result<&str, TokenError> {
    let value = req.metadata().get("authorization").ok_or(TokenError::Missing)?;
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PKCS_ED25519};

    const NOW: u64 = 1_800_000_000;

    fn signer(kid: &str) -> (DevSigner, TokenKeys) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let signer = DevSigner::from_pem(key.serialize_pem().as_bytes(), kid).unwrap();
        let keys = TokenKeys::from_pems([(kid, key.public_key_pem().as_bytes())], DevKey::Accepted).unwrap();
        (signer, keys)
    }

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let (s, keys) = signer("dev");
        let token = s.mint_at(1001, "phone-a", NOW, 3600);
        let c = keys.verify(&token, NOW + 10).unwrap();
        assert_eq!((c.user(), c.dev.as_str(), c.iat, c.exp), (Some(1001), "phone-a", NOW, NOW + 3600));
        assert_eq!((c.iss.as_str(), c.aud.as_str()), (ISSUER, AUDIENCE));
        assert!(s.mint(7, "d", 60).len() < MAX_TOKEN_BYTES);
        assert!(keys.verify(&s.mint(7, "d", 60), now_s()).is_ok());
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let (s, keys) = signer("dev");
        let token = s.mint_at(1, "d", NOW, 60);
        assert_eq!(keys.verify(&token, NOW + 60), Err(TokenError::Expired));
        assert_eq!(keys.verify(&token, NOW + 59), Ok(keys.verify(&token, NOW).unwrap()), "valid until exp");
        assert_eq!(keys.verify(&s.mint_at(1, "d", NOW + CLOCK_SKEW_S + 1, 600), NOW), Err(TokenError::NotYetValid));
        assert!(keys.verify(&s.mint_at(1, "d", NOW + CLOCK_SKEW_S, 600), NOW).is_ok(), "a little clock skew is fine");
    }

    #[test]
    fn a_token_whose_nbf_lies_ahead_is_refused_until_then_with_the_same_clock_skew_as_iat() {
        let (s, keys) = signer("login");
        let claims = |nbf: Option<u64>| Claims {
            sub: "1".into(),
            dev: "d".into(),
            iat: NOW,
            exp: NOW + 3600,
            nbf,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let later = s.sign(&claims(Some(NOW + 600)));
        assert_eq!(keys.verify(&later, NOW), Err(TokenError::NotYetValid), "not before 10 minutes from now");
        assert_eq!(keys.verify(&later, NOW + 600 - CLOCK_SKEW_S - 1), Err(TokenError::NotYetValid));
        assert_eq!(keys.verify(&later, NOW + 600 - CLOCK_SKEW_S).unwrap().nbf, Some(NOW + 600), "a little clock skew is fine");
        assert!(keys.verify(&later, NOW + 601).is_ok());
        assert!(keys.verify(&s.sign(&claims(Some(NOW - 10))), NOW).is_ok(), "a past nbf is no obstacle");
        assert!(keys.verify(&s.sign(&claims(None)), NOW).is_ok(), "nbf is optional");
        assert_eq!(keys.verify(&s.sign(&claims(Some(NOW + 3600))), NOW + 3599), Err(TokenError::Malformed), "valid at no time");
        // Minted tokens carry no nbf at all (left out, not null).
        assert!(!serde_json::to_string(&claims(None)).unwrap().contains("nbf"));
        // The cache never holds a token before its nbf: a refused token is not remembered.
        let v = TokenVerifier::new(keys);
        assert_eq!(v.verify_at(&later, NOW), Err(TokenError::NotYetValid));
        assert_eq!(v.verify_at(&later, NOW + 1), Err(TokenError::NotYetValid), "still refused: nothing cached");
        assert!(v.verify_at(&later, NOW + 600).is_ok());
    }

    #[test]
    fn a_cluster_not_for_development_refuses_dev_key_tokens_even_when_it_trusts_the_dev_public_key() {
        let dev_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let dev = DevSigner::from_pem(dev_key.serialize_pem().as_bytes(), DEV_KID).unwrap();
        let login_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let login = DevSigner::from_pem(login_key.serialize_pem().as_bytes(), "login-2026").unwrap();
        let (dev_pub, login_pub) = (dev_key.public_key_pem(), login_key.public_key_pem());
        let keys = |rule| TokenKeys::from_pems([(DEV_KID, dev_pub.as_bytes()), ("login-2026", login_pub.as_bytes())], rule).unwrap();
        let dev_token = dev.mint_at(1, "d", NOW, 60);
        let login_token = login.mint_at(1, "d", NOW, 60);

        assert!(keys(DevKey::Accepted).verify(&dev_token, NOW).is_ok(), "a development cluster takes it");
        assert!(!keys(DevKey::Accepted).holds_refused_dev_key());
        let production = keys(DevKey::Refused);
        assert!(production.holds_refused_dev_key(), "worth a warning at start");
        assert_eq!(production.verify(&dev_token, NOW), Err(TokenError::DevKeyRefused));
        assert!(production.verify(&login_token, NOW).is_ok(), "only the dev kid is refused");
        // Refused by its kid whether or not the folder holds the dev public key.
        let without = TokenKeys::from_pems([("login-2026", login_pub.as_bytes())], DevKey::Refused).unwrap();
        assert!(!without.holds_refused_dev_key());
        assert_eq!(without.verify(&dev_token, NOW), Err(TokenError::DevKeyRefused));
        // Through the cached verifier a router runs; the caller hears why, as UNAUTHENTICATED,
        // and never the token.
        let v = TokenVerifier::new(production);
        assert_eq!(v.verify_at(&dev_token, NOW), Err(TokenError::DevKeyRefused));
        assert_eq!(v.verify_at(&dev_token, NOW + 1), Err(TokenError::DevKeyRefused), "never cached");
        let status: tonic::Status = TokenError::DevKeyRefused.into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("development key") && !status.message().contains(&dev_token), "{}", status.message());
        assert_eq!(DevKey::for_cluster(false), DevKey::Refused);
        assert_eq!(DevKey::for_cluster(true), DevKey::Accepted);
    }

    #[test]
    fn a_token_living_longer_than_the_maximum_is_refused() {
        let (s, keys) = signer("dev");
        let long = s.try_mint(1, "d", NOW, MAX_TOKEN_TTL_S + 1).unwrap();
        assert_eq!(keys.verify(&long, NOW), Err(TokenError::TtlTooLong));
        let clamped = s.mint_at(1, "d", NOW, 10 * MAX_TOKEN_TTL_S);
        assert_eq!(keys.verify(&clamped, NOW).unwrap().exp, NOW + MAX_TOKEN_TTL_S);
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let (_, keys) = signer("dev");
        let (other_same_kid, _) = signer("dev");
        let (other_kid, _) = signer("other");
        assert_eq!(keys.verify(&other_same_kid.mint_at(1, "d", NOW, 60), NOW), Err(TokenError::BadSignature));
        assert_eq!(keys.verify(&other_kid.mint_at(1, "d", NOW, 60), NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let (s, keys) = signer("dev");
        let mine = s.mint_at(1, "d", NOW, 60);
        let other = s.mint_at(2, "d", NOW, 60);
        let parts: Vec<&str> = mine.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));
        let mut flipped = mine.clone().into_bytes();
        let i = parts[0].len() + 5;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        assert!(matches!(keys.verify(std::str::from_utf8(&flipped).unwrap(), NOW), Err(TokenError::BadSignature | TokenError::Malformed)));
    }

    #[test]
    fn alg_none_and_hmac_tokens_are_refused() {
        let (s, keys) = signer("dev");
        let good = s.mint_at(1, "d", NOW, 60);
        let payload = good.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT","kid":"dev"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiZGV2In0.{payload}.");
        assert!(matches!(keys.verify(&none, NOW), Err(TokenError::Malformed | TokenError::BadAlgorithm)));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("dev".into());
        let claims = keys.verify(&good, NOW).unwrap();
        let hmac = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"guessable")).unwrap();
        assert_eq!(keys.verify(&hmac, NOW), Err(TokenError::BadAlgorithm));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_refused_without_echo() {
        let (_, keys) = signer("dev");
        assert_eq!(keys.verify("", NOW), Err(TokenError::Missing));
        assert_eq!(keys.verify("a.b.c", NOW), Err(TokenError::Malformed));
        assert_eq!(keys.verify("secret-looking-garbage", NOW), Err(TokenError::Malformed));
        let big = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(keys.verify(&big, NOW), Err(TokenError::TooLong));
        for e in [TokenError::Malformed, TokenError::BadSignature] {
            assert!(!e.to_string().contains("garbage"));
        }
    }

    #[test]
    fn bad_subjects_and_devices_are_refused() {
        let (s, keys) = signer("dev");
        assert_eq!(keys.verify(&s.mint_at(1, "", NOW, 60), NOW), Err(TokenError::BadSubject));
        assert_eq!(keys.verify(&s.mint_at(1, &"d".repeat(MAX_DEVICE_BYTES + 1), NOW, 60), NOW), Err(TokenError::BadSubject));
        assert!(keys.verify(&s.mint_at(1, &"d".repeat(MAX_DEVICE_BYTES), NOW, 60), NOW).is_ok());
        let c =
            |sub: &str| Claims { sub: sub.into(), dev: "d".into(), iat: 0, exp: 1, nbf: None, iss: ISSUER.into(), aud: AUDIENCE.into() };
        assert_eq!(c("42").user(), Some(42));
        assert_eq!(c("0").user(), Some(0));
        for bad in ["", "042", "+42", "-1", "4 2", "18446744073709551616"] {
            assert_eq!(c(bad).user(), None, "{bad}");
        }
    }

    #[test]
    fn the_cache_returns_the_same_claims_and_forgets_expired_tokens() {
        let (s, keys) = signer("dev");
        let v = TokenVerifier::new(keys);
        let token = s.mint_at(5, "d", NOW, 60);
        let first = v.verify_at(&token, NOW).unwrap();
        assert_eq!(v.verify_at(&token, NOW + 1), Ok(first.clone()), "cache hit");
        assert_eq!(v.verify_at(&token, NOW + 60), Err(TokenError::Expired), "a cached token still dies at exp");
        assert_eq!(v.verify_at(&token, NOW + 61), Err(TokenError::Expired));
        let shared = v.clone();
        assert_eq!(shared.verify_at(&s.mint_at(6, "d", NOW, 60), NOW).unwrap().user(), Some(6));
        assert!(format!("{v:?}").contains("cached"));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut map = HashMap::new();
        let cap = CACHE_ENTRIES / CACHE_SHARDS;
        let claims =
            Claims { sub: "1".into(), dev: "d".into(), iat: NOW, exp: NOW + 60, nbf: None, iss: ISSUER.into(), aud: AUDIENCE.into() };
        for i in 0..(3 * cap) as u32 {
            make_room(&mut map, NOW);
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            map.insert(id, claims.clone());
            assert!(map.len() <= cap);
        }
        make_room(&mut map, NOW + 60);
        assert!(map.is_empty(), "expired entries go first");
    }

    #[test]
    fn reload_drops_the_old_key_and_the_cache() {
        let (old, old_keys) = signer("k1");
        let (new, new_keys) = signer("k2");
        let v = TokenVerifier::new(old_keys);
        let old_token = old.mint_at(1, "d", NOW, 600);
        assert!(v.verify_at(&old_token, NOW).is_ok());
        assert_eq!(v.verify_at(&new.mint_at(1, "d", NOW, 600), NOW), Err(TokenError::UnknownKey));
        v.reload(new_keys);
        assert_eq!(v.verify_at(&old_token, NOW + 1), Err(TokenError::UnknownKey), "cached token forgotten");
        assert!(v.verify_at(&new.mint_at(1, "d", NOW, 600), NOW).is_ok());
        assert_eq!(v.key_count(), 1);
    }

    #[test]
    fn keys_load_from_a_folder_and_debug_shows_no_key_material() {
        let tmp = tempfile::tempdir().unwrap();
        let sec = SecurityDir::new(tmp.path());
        assert!(TokenKeys::load_dir(&sec.token_keys(), DevKey::Accepted).unwrap_err().to_string().contains("scripts/cluster up"));
        std::fs::create_dir_all(sec.token_keys()).unwrap();
        assert!(TokenKeys::load_dir(&sec.token_keys(), DevKey::Accepted).is_err(), "an empty folder trusts nobody: an error");
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        std::fs::write(sec.token_keys().join("dev.pub.pem"), key.public_key_pem()).unwrap();
        std::fs::write(sec.token_keys().join("README"), "ignored").unwrap();
        std::fs::write(sec.dev_signing_key(), key.serialize_pem()).unwrap();
        let keys = TokenKeys::load_dir(&sec.token_keys(), DevKey::Accepted).unwrap();
        assert_eq!(keys.len(), 1);
        let s = DevSigner::load(&sec).unwrap();
        assert!(keys.verify(&s.mint(9, "d", 60), now_s()).is_ok());
        let pem = key.serialize_pem();
        let secret_line = pem.lines().nth(1).unwrap();
        for dbg in [format!("{s:?}"), format!("{keys:?}"), format!("{:?}", TokenVerifier::new(keys))] {
            assert!(!dbg.contains(secret_line) && !dbg.contains("PRIVATE"), "{dbg}");
        }
        assert!(DevSigner::from_pem(b"not a key", "dev").is_err());
        assert!(TokenKeys::from_pems([("dev", b"not a key".as_slice())], DevKey::Accepted).is_err());
    }

    #[test]
    fn bearer_reads_the_authorization_header() {
        let mut req = tonic::Request::new(());
        assert_eq!(bearer(&req), Err(TokenError::Missing));
        req.metadata_mut().insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer(&req), Ok("abc.def.ghi"));
        req.metadata_mut().insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&req), Ok("abc"));
        req.metadata_mut().insert("authorization", "Basic dXNlcg==".parse().unwrap());
        assert_eq!(bearer(&req), Err(TokenError::Malformed));
        req.metadata_mut().insert("authorization", "Bearer ".parse().unwrap());
        assert!(bearer(&req).is_err());
        let status: tonic::Status = TokenError::Expired.into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    /// Measured cost of one uncached verify (run with --nocapture to see it).
    #[test]
    fn uncached_verify_cost() {
        let (s, keys) = signer("dev");
        let token = s.mint_at(1, "phone", NOW, 600);
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            keys.verify(&token, NOW).unwrap();
        }
        let per = t.elapsed() / n;
        let v = TokenVerifier::new(keys);
        v.verify_at(&token, NOW).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            v.verify_at(&token, NOW).unwrap();
        }
        let cached = t.elapsed() / n;
        println!("token verify: uncached {per:?}, cached {cached:?}");
        assert!(cached < per, "the cache must be cheaper than a verify");
    }
}
