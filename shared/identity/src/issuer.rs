//! Minting tokens with a private key: the development key and the tests.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::{Claims, IdentityError, Role, read};

/// Mints tokens with a private key: for development (`scripts/run`'s key) and tests.
#[derive(Clone)]
pub struct Issuer {
    key: EncodingKey,
    algorithm: Algorithm,
    key_id: Option<String>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer signing with the PEM private key (Ed25519, ECDSA P-256 or RSA) in `path`.
    pub fn from_pem_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, IdentityError> {
        let pem = read(path)?;
        let (key, algorithm) = if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
            (key, Algorithm::RS256)
        } else {
            return Err(IdentityError::Key {
                path: path.display().to_string(),
                kind: "private",
            });
        };
        Ok(Self {
            key,
            algorithm,
            key_id: None,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The same, putting `kid` in each token's header (for a verifier reading a JWKS).
    pub fn with_key_id(mut self, kid: &str) -> Self {
        self.key_id = Some(kid.to_owned());
        self
    }

    /// A token for `role`, subject `sub` (the customer id for a customer), valid for `ttl`.
    pub fn mint(
        &self,
        role: Role,
        sub: &str,
        agent_id: Option<i64>,
        ttl: Duration,
    ) -> Result<String, IdentityError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign(&Claims {
            sub: sub.to_owned(),
            role,
            agent_id,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        })
    }

    /// A customer's token.
    pub fn customer(&self, customer_id: &str, ttl: Duration) -> Result<String, IdentityError> {
        self.mint(Role::Customer, customer_id, None, ttl)
    }

    /// A rider's token, for agent `agent_id`.
    pub fn rider(&self, agent_id: i64, ttl: Duration) -> Result<String, IdentityError> {
        self.mint(
            Role::Rider,
            &format!("rider-{agent_id}"),
            Some(agent_id),
            ttl,
        )
    }

    /// An operator's token.
    pub fn operator(&self, sub: &str, ttl: Duration) -> Result<String, IdentityError> {
        self.mint(Role::Operator, sub, None, ttl)
    }

    /// Signs `claims` as they are (tests make expired or foreign tokens with it).
    pub fn sign(&self, claims: &Claims) -> Result<String, IdentityError> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.key_id.clone();
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}
