//! Verifying tokens: against one public key, or the keys of an identity provider's JWKS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::jwks::Jwks;
use crate::keys::VerifyingKey;
use crate::{Caller, IdentityError, Rejected, Role, read};

/// How much a token's `exp` may be behind the verifier's clock and still be taken.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The claims a verifier reads (issuer, audience and expiry are checked by the validation).
#[derive(Debug, Deserialize)]
struct Presented {
    sub: String,
    role: Role,
    #[serde(default)]
    agent_id: Option<i64>,
}

/// How a verifier finds its keys.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A PEM public key file (Ed25519, ECDSA P-256 or RSA).
    PublicKeyFile(std::path::PathBuf),
    /// An identity provider's JWKS address, fetched at start, every `refresh`, and when a
    /// token names a key id not seen yet (at most every ten seconds).
    Jwks {
        /// The address.
        url: String,
        /// How often the key set is fetched again.
        refresh: Duration,
    },
    /// No verification: every caller is [`Caller::Anyone`]. Development only.
    Disabled,
}

/// Checks tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    issuer: String,
    audience: String,
}

enum Keys {
    Disabled,
    One(VerifyingKey),
    Jwks(Jwks),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.inner.keys {
            Keys::Disabled => "disabled".to_owned(),
            Keys::One(key) => format!("public key ({:?})", key.algorithms),
            Keys::Jwks(jwks) => format!("jwks {}", jwks.url),
        };
        f.debug_struct("Verifier")
            .field("keys", &keys)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish()
    }
}

impl Verifier {
    /// A verifier of tokens from `issuer` for `audience`, with keys from `source`. A JWKS is
    /// fetched now (a failure is logged: the provider may come up later) and then refreshed in
    /// the background; call from within a Tokio runtime.
    pub async fn new(
        source: KeySource,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, IdentityError> {
        if issuer.trim().is_empty() || audience.trim().is_empty() {
            return Err(IdentityError::Settings(
                "AUTH_ISSUER and AUTH_AUDIENCE must not be empty".to_owned(),
            ));
        }
        let keys = match source {
            KeySource::Disabled => Keys::Disabled,
            KeySource::PublicKeyFile(path) => Keys::One(public_key_file(&path)?),
            KeySource::Jwks { url, refresh } => Keys::Jwks(Jwks::new(url, refresh)?),
        };
        let verifier = Self {
            inner: Arc::new(Inner {
                keys,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
            }),
        };
        if let Keys::Jwks(jwks) = &verifier.inner.keys {
            jwks.fetch().await;
            let weak = Arc::downgrade(&verifier.inner);
            let refresh = jwks.refresh;
            if !refresh.is_zero() {
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(refresh);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        let Some(inner) = weak.upgrade() else { return };
                        if let Keys::Jwks(jwks) = &inner.keys {
                            jwks.fetch().await;
                        }
                    }
                });
            }
        }
        Ok(verifier)
    }

    /// A verifier that takes everyone (identity turned off).
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: Keys::Disabled,
                issuer: String::new(),
                audience: String::new(),
            }),
        }
    }

    /// Whether identity is turned off.
    pub fn is_disabled(&self) -> bool {
        matches!(self.inner.keys, Keys::Disabled)
    }

    /// Who `token` (the text after `Bearer `) says is calling, if it verifies. With identity
    /// turned off, [`Caller::Anyone`] whatever the token.
    pub async fn verify(&self, token: &str) -> Result<Caller, Rejected> {
        let key = match &self.inner.keys {
            Keys::Disabled => return Ok(Caller::Anyone),
            Keys::One(key) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| rejected(&e))?;
                if !key.algorithms.contains(&header.alg) {
                    return Err(Rejected::Algorithm);
                }
                key.clone()
            }
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| rejected(&e))?;
                let kid = header.kid.ok_or(Rejected::UnknownKey)?;
                let key = jwks.key(&kid).await.ok_or(Rejected::UnknownKey)?;
                if !key.algorithms.contains(&header.alg) {
                    return Err(Rejected::Algorithm);
                }
                key
            }
        };
        let mut validation = Validation::new(key.algorithms[0]);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = LEEWAY.as_secs();
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Presented>(token, &key.key, &validation)
            .map_err(|e| rejected(&e))?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(Rejected::Claims("empty sub"));
        }
        Ok(match claims.role {
            Role::Customer => Caller::Customer(claims.sub),
            Role::Operator => Caller::Operator(claims.sub),
            Role::Rider => Caller::Rider {
                agent_id: claims
                    .agent_id
                    .ok_or(Rejected::Claims("a rider's token names its agent_id"))?,
                subject: claims.sub,
            },
        })
    }
}

/// The verifying key in a PEM public key file.
fn public_key_file(path: &Path) -> Result<VerifyingKey, IdentityError> {
    let pem = read(path)?;
    let found = if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        (key, vec![Algorithm::EdDSA])
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (key, vec![Algorithm::ES256])
    } else if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (
            key,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        )
    } else {
        return Err(IdentityError::Key {
            path: path.display().to_string(),
            kind: "public",
        });
    };
    Ok(VerifyingKey {
        key: found.0,
        algorithms: found.1,
    })
}

fn rejected(err: &jsonwebtoken::errors::Error) -> Rejected {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => Rejected::Signature,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Rejected::Expired,
        ErrorKind::InvalidIssuer => Rejected::Issuer,
        ErrorKind::InvalidAudience => Rejected::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejected::Algorithm,
        ErrorKind::MissingRequiredClaim(_) => {
            Rejected::Claims("exp, iss, aud and sub are required")
        }
        _ => Rejected::Malformed,
    }
}
