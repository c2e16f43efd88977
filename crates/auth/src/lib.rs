//! Security shared by node, router and client, so those stay thin:
//!
//! - [`identity`]: who a TLS peer is (the `spiffe://hongbao/...` URI SAN of its certificate) and
//!   the [`Role`]s of services calling the cluster.
//! - [`dir`]: the security folder every process is pointed at (`--security-dir`), and the
//!   tonic TLS configs built from it (mutual TLS between servers).
//! - [`devpki`]: a development CA that fills that folder (`scripts/cluster up`, test harness).
//! - [`token`]: end-user JWTs (EdDSA), verified with a cache, and the dev login service.
//! - [`pin`]: the payment PIN, kept only as a salted slow hash.
//! - [`limit`]: per-caller token-bucket rate limits at the boundary.

pub mod devpki;
pub mod dir;
pub mod identity;
pub mod limit;
pub mod pin;
pub mod token;

pub use devpki::{ensure_dev_pki, ensure_identity, generate_foreign_identity, DevFolder, DEV_CA_NAME, DEV_KID};
pub use dir::SecurityDir;
pub use identity::{node_dns_name, peer_identity, Identity, Role};
pub use limit::RateLimiter;
pub use pin::{hash_pin, pin_salt, valid_pin, verify_pin, PIN_ITERATIONS};
pub use token::{
    bearer, Claims, DevKey, DevSigner, TokenError, TokenKeys, TokenVerifier, AUDIENCE, CLOCK_SKEW_S, ISSUER, MAX_DEVICE_BYTES,
    MAX_TOKEN_BYTES, MAX_TOKEN_TTL_S,
};

#[cfg(test)]
mod tls_tests;
