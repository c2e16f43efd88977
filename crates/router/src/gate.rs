//! Who may call what through a router. Callers are services, named by their client certificate
//! (`hongbao_auth::Identity::Service(role)`); calls that act for an end user also carry the
//! user's token, and act only for the token's subject. Each RPC states its rule in `route.rs`
//! with one of `Gate::roles`, `Gate::user` or `Gate::user_or`.
//!
//! | role              | may                                                              |
//! |-------------------|------------------------------------------------------------------|
//! | `app`             | act for the user its token names: open, send, grab, transfer, withdraw, set PIN, read own wallet, show packets |
//! | `payment-gateway` | top up (money in from a bank)                                    |
//! | `risk`            | freeze / grade accounts, read any wallet                         |
//! | `admin`           | cluster status, audit, drain, leader transfer, cluster map and membership; read any wallet |
//! | `notifier`        | read and acknowledge the challenge-code outbox                   |
//!
//! Tokens of the development key (kid `dev`) are accepted only when the topology says
//! `development = true` (`hongbao_auth::DevKey`); elsewhere they are UNAUTHENTICATED, and a
//! `dev.pub.pem` among the trusted keys is named in the log at start and at every reload.

use crate::limits::{MAX_INFLIGHT_PER_USER, MAX_LIMITED_USERS};
use hongbao_auth::{Claims, DevKey, Identity, RateLimiter, Role, TokenKeys, TokenVerifier, DEV_KID};
use hongbao_proto::{denied, error, unauthenticated, ErrorCode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use tonic::{Request, Status};

/// Per-user limits at the boundary (token buckets), so one user cannot flood reads or have
/// challenge codes issued without end.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub reads_per_s: f64,
    pub spends_per_s: f64,
    pub grabs_per_s: f64,
}

pub struct Gate {
    tokens: TokenVerifier,
    token_dir: PathBuf,
    /// Whether this cluster takes tokens of the development key (from the topology, at start).
    dev_key: DevKey,
    reads: RateLimiter<u64>,
    spends: RateLimiter<u64>,
    grabs: RateLimiter<u64>,
    /// Requests in flight per user (only users with one or more: bounded by the in-flight
    /// bounds of the shards).
    in_flight: Mutex<HashMap<u64, usize>>,
}

/// One of a user's in-flight places (`Gate::read_allowed` and the like): held while the call is
/// forwarded, given back when dropped.
#[must_use = "the user's in-flight place is held until this is dropped: keep it while forwarding"]
pub struct InFlight<'a> {
    gate: &'a Gate,
    user: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut all = self.gate.in_flight.lock().expect("in-flight lock");
        let n = all.get_mut(&self.user).expect("a held place is counted");
        assert!(*n > 0, "in-flight count of user {} underflows", self.user);
        *n -= 1;
        if *n == 0 {
            all.remove(&self.user);
        }
    }
}

/// Interceptor: every call through a router comes from a service whose certificate names it.
pub fn services_only(mut req: Request<()>) -> Result<Request<()>, Status> {
    match hongbao_auth::peer_identity(&req) {
        Some(id @ Identity::Service(_)) => {
            req.extensions_mut().insert(id);
            Ok(req)
        }
        Some(other) => {
            metrics::counter!(crate::metrics::DENIED, "reason" => "not_a_service").increment(1);
            Err(denied(format!("{other} is not a service identity; routers serve services")))
        }
        None => {
            metrics::counter!(crate::metrics::DENIED, "reason" => "no_identity").increment(1);
            Err(unauthenticated("client certificate names no hongbao identity"))
        }
    }
}

/// A development key among the trusted keys of a cluster that refuses its tokens: someone
/// copied a dev folder's `token-keys/` here. Its tokens are refused anyway; the operator should
/// know, and remove the file.
fn warn_of_refused_dev_key(keys: &TokenKeys, token_dir: &std::path::Path) {
    if keys.holds_refused_dev_key() {
        tracing::warn!(
            "{}/{DEV_KID}.pub.pem is the development token key, but this is not a development cluster (its topology \
             does not say development = true): tokens signed with it are refused (UNAUTHENTICATED); remove that file",
            token_dir.display()
        );
    }
}

fn role_of<T>(req: &Request<T>) -> Result<Role, Status> {
    match req.extensions().get::<Identity>() {
        Some(Identity::Service(r)) => Ok(*r),
        _ => Err(unauthenticated("no verified client certificate")),
    }
}

impl Gate {
    pub fn new(keys: TokenKeys, token_dir: PathBuf, limits: Limits) -> Gate {
        let dev_key = keys.dev_key();
        warn_of_refused_dev_key(&keys, &token_dir);
        Gate {
            tokens: TokenVerifier::new(keys),
            token_dir,
            dev_key,
            reads: RateLimiter::new(limits.reads_per_s, limits.reads_per_s * 2.0, MAX_LIMITED_USERS),
            spends: RateLimiter::new(limits.spends_per_s, limits.spends_per_s * 2.0, MAX_LIMITED_USERS),
            grabs: RateLimiter::new(limits.grabs_per_s, limits.grabs_per_s * 2.0, MAX_LIMITED_USERS),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// One of `user`'s `MAX_INFLIGHT_PER_USER` places, or RATE_LIMITED when all are taken.
    fn place(&self, user: u64) -> Result<InFlight<'_>, Status> {
        let mut all = self.in_flight.lock().expect("in-flight lock");
        let n = all.entry(user).or_insert(0);
        if *n >= MAX_INFLIGHT_PER_USER {
            drop(all);
            metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "in_flight").increment(1);
            return Err(error(
                ErrorCode::RateLimited,
                format!("user {user}: {MAX_INFLIGHT_PER_USER} requests in flight already; wait for their answers"),
            ));
        }
        *n += 1;
        Ok(InFlight { gate: self, user })
    }

    /// Re-reads the trusted token keys (rotation: add the new key, then remove the old one).
    pub fn reload(&self) -> anyhow::Result<usize> {
        let keys = TokenKeys::load_dir(&self.token_dir, self.dev_key)?;
        let n = keys.len();
        anyhow::ensure!(n > 0, "no token keys in {}", self.token_dir.display());
        warn_of_refused_dev_key(&keys, &self.token_dir);
        self.tokens.reload(keys);
        Ok(n)
    }

    /// The call is open to these roles only.
    pub fn roles<T>(&self, req: &Request<T>, allowed: &[Role], what: &str) -> Result<Role, Status> {
        let role = role_of(req)?;
        if !allowed.contains(&role) {
            metrics::counter!(crate::metrics::DENIED, "reason" => "role").increment(1);
            tracing::warn!(role = role.name(), what, "refused: role may not make this call");
            return Err(denied(format!("role {} may not {what}", role.name())));
        }
        Ok(role)
    }

    /// The call acts for `acting`: only the `app` role, with a valid token whose subject is
    /// `acting`. The claims carry the device the token was issued to.
    pub fn user<T>(&self, req: &Request<T>, acting: u64, what: &str) -> Result<Claims, Status> {
        let claims = self.claims(req, what)?;
        self.same_user(claims, acting, what)
    }

    /// The `app` role's call, with a valid token: its claims.
    fn claims<T>(&self, req: &Request<T>, what: &str) -> Result<Claims, Status> {
        self.roles(req, &[Role::App], what)?;
        let token = hongbao_auth::bearer(req).map_err(|e| self.refused_token(e))?;
        self.tokens.verify(token).map_err(|e| self.refused_token(e))
    }

    /// `user` for one entry of a batch that carries its own token (`GrabGateway.Grabs`, whose
    /// caller's role the handler checked already): the token must be valid and name `acting`.
    pub fn user_token(&self, token: &str, acting: u64, what: &str) -> Result<Claims, Status> {
        if token.is_empty() {
            return Err(self.refused_token(hongbao_auth::TokenError::Missing));
        }
        if token.len() > hongbao_auth::MAX_TOKEN_BYTES {
            return Err(self.refused_token(hongbao_auth::TokenError::TooLong));
        }
        let claims = self.tokens.verify(token).map_err(|e| self.refused_token(e))?;
        self.same_user(claims, acting, what)
    }

    fn same_user(&self, claims: Claims, acting: u64, what: &str) -> Result<Claims, Status> {
        if claims.user() != Some(acting) {
            metrics::counter!(crate::metrics::DENIED, "reason" => "other_user").increment(1);
            tracing::warn!(token_user = %claims.sub, acting, what, "refused: token names another user");
            return Err(denied(format!("the token's user may not {what} as user {acting}")));
        }
        Ok(claims)
    }

    /// Any signed-in user (app role with a valid token): the token's user.
    pub fn signed_in<T>(&self, req: &Request<T>, what: &str) -> Result<u64, Status> {
        self.claims(req, what)?.user().ok_or_else(|| unauthenticated("user token names no user"))
    }

    /// For the user themself (app role with their token), or for any user by one of `roles`.
    /// The call acts for `acting` (as `user`), or comes from one of `roles` with no user token.
    /// The token's issue time (Unix s; 0: no token), which the node checks against revocations.
    pub fn user_or<T>(&self, req: &Request<T>, acting: u64, roles: &[Role], what: &str) -> Result<u64, Status> {
        if roles.contains(&role_of(req)?) {
            return Ok(0);
        }
        self.user(req, acting, what).map(|c| c.iat.max(1))
    }

    fn refused_token(&self, e: hongbao_auth::TokenError) -> Status {
        metrics::counter!(crate::metrics::DENIED, "reason" => "token").increment(1);
        tracing::info!(reason = %e, "refused: user token");
        unauthenticated(format!("user token refused: {e}"))
    }

    pub fn read_allowed(&self, user: u64) -> Result<InFlight<'_>, Status> {
        if self.reads.allow(&user) {
            return self.place(user);
        }
        metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "read").increment(1);
        Err(error(ErrorCode::RateLimited, format!("user {user}: too many reads; back off")))
    }

    /// Grabs have a bucket of their own: a storm has every member grab at once, and a bot that
    /// counts through packet ids with one token must not flood the shards' logs (#28).
    pub fn grab_allowed(&self, user: u64) -> Result<InFlight<'_>, Status> {
        if self.grabs.allow(&user) {
            return self.place(user);
        }
        metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "grab").increment(1);
        Err(error(ErrorCode::RateLimited, format!("user {user}: too many grabs; back off")))
    }

    pub fn spend_allowed(&self, user: u64) -> Result<InFlight<'_>, Status> {
        if self.spends.allow(&user) {
            return self.place(user);
        }
        metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "spend").increment(1);
        Err(error(ErrorCode::RateLimited, format!("user {user}: too many payments; back off")))
    }
}
