//! Who is calling: the identity in a signed token (a JWT in `Authorization: Bearer`).
//!
//! Three roles act on the system, each only for itself:
//! - a **customer** (`"role": "customer"`): the token's subject (`sub`) is the customer id;
//! - a **rider** (`"role": "rider"`, `"agent_id": 7`): the rider of one delivery agent;
//! - an **operator** (`"role": "operator"`): runs the hubs, the riders and the transactions.
//!
//! A [`Verifier`] checks a token's signature against configured keys (a public key file, or an
//! identity provider's JWKS, fetched, cached and refreshed), its issuer, audience and expiry, and
//! refuses `alg: none` and any algorithm the key was not made for. An [`Issuer`] mints tokens
//! with a private key: the development key of `scripts/run`, `tenminute-admin token` and the
//! tests. Production tokens come from the identity provider.

mod issuer;
mod jwks;
mod keys;
mod verifier;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use issuer::Issuer;
pub use verifier::{KeySource, LEEWAY, Verifier};

/// A caller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Places, reads and cancels their own orders.
    Customer,
    /// Reports the pick-up and delivery of the orders their agent holds; goes on and off duty.
    Rider,
    /// Everything else: hubs, foods, packets, agents, stuck orders, parked messages.
    Operator,
}

/// Who a verified token says is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A customer, by customer id.
    Customer(String),
    /// A rider, by the id of their delivery agent.
    Rider {
        /// The agent the rider rides as.
        agent_id: i64,
        /// The token's subject (the rider's account).
        subject: String,
    },
    /// An operator, by subject.
    Operator(String),
    /// Identity is turned off (`AUTH_DISABLED`, development only): every check passes.
    Anyone,
}

impl Caller {
    /// Whether the caller may act as an operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Caller::Operator(_) | Caller::Anyone)
    }
}

/// The claims of a token, as minted by [`Issuer`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: the customer id for a customer.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// The rider's agent (riders only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
    /// The issuer.
    pub iss: String,
    /// The audience.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Why a token was not taken. The text is safe to show the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    /// The token is not a JWT, or its header or claims cannot be read.
    #[error("the token cannot be read")]
    Malformed,
    /// `alg` is `none` or one the key was not made for.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No configured key has the token's key id (or the JWKS could not be fetched).
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` does not name this system.
    #[error("the token's audience is not accepted")]
    Audience,
    /// A claim is missing or does not fit its role (a rider without `agent_id`).
    #[error("the token's claims are incomplete: {0}")]
    Claims(&'static str),
}

/// Why keys could not be loaded or a token minted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key is not an Ed25519, P-256 or RSA key in PEM.
    #[error("{path}: not an Ed25519, ECDSA P-256 or RSA {kind} key in PEM")]
    Key {
        /// The file.
        path: String,
        /// `public` or `private`.
        kind: &'static str,
    },
    /// Signing failed.
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// Settings that do not fit together.
    #[error("{0}")]
    Settings(String),
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
