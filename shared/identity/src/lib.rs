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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How much a token's `exp` may be behind the verifier's clock and still be taken.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The shortest time between two fetches of the JWKS made because a token named an unknown key.
const MIN_REFETCH: Duration = Duration::from_secs(10);

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

/// The claims a verifier reads (issuer, audience and expiry are checked by the validation).
#[derive(Debug, Deserialize)]
struct Presented {
    sub: String,
    role: Role,
    #[serde(default)]
    agent_id: Option<i64>,
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

/// A key and the algorithms it verifies.
#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
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

struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    by_kid: RwLock<HashMap<String, VerifyingKey>>,
    /// When the key set was last fetched (serialises fetches).
    fetched: Mutex<Option<Instant>>,
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
            KeySource::Jwks { url, refresh } => Keys::Jwks(Jwks {
                url,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| IdentityError::Settings(format!("JWKS client: {e}")))?,
                refresh,
                by_kid: RwLock::new(HashMap::new()),
                fetched: Mutex::new(None),
            }),
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

impl Jwks {
    /// The key `kid`, fetching the set again if it is unknown and the last fetch is not recent
    /// (a token naming keys at random makes at most one fetch every [`MIN_REFETCH`]).
    async fn key(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        if !matches!(*fetched, Some(at) if at.elapsed() < MIN_REFETCH) {
            self.fetch_holding(&mut fetched).await;
        }
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        self.by_kid.read().ok()?.get(kid).cloned()
    }

    /// Fetches the key set and replaces the cached one; a failure keeps the old one.
    async fn fetch(&self) {
        let mut fetched = self.fetched.lock().await;
        self.fetch_holding(&mut fetched).await;
    }

    async fn fetch_holding(&self, fetched: &mut Option<Instant>) {
        *fetched = Some(Instant::now());
        let set = async {
            let response = self.client.get(&self.url).send().await?;
            response.error_for_status()?.json::<JwkSet>().await
        }
        .await;
        match set {
            Ok(set) => {
                let keys: HashMap<String, VerifyingKey> = set
                    .keys
                    .iter()
                    .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk_key(jwk)?)))
                    .collect();
                info!(url = %self.url, keys = keys.len(), "identity provider's keys fetched");
                if let Ok(mut by_kid) = self.by_kid.write() {
                    *by_kid = keys;
                }
            }
            Err(err) => {
                warn!(url = %self.url, error = %err, "identity provider's keys not fetched: keeping the ones held")
            }
        }
    }
}

/// The verifying key of a JWK, if it is an asymmetric key of a supported kind.
fn jwk_key(jwk: &Jwk) -> Option<VerifyingKey> {
    let algorithms = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::OctetKeyPair(p), _) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        (AlgorithmParameters::EllipticCurve(p), _) if p.curve == EllipticCurve::P256 => {
            vec![Algorithm::ES256]
        }
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => vec![Algorithm::RS384],
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => vec![Algorithm::RS512],
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => vec![Algorithm::PS256],
        (AlgorithmParameters::RSA(_), _) => vec![Algorithm::RS256],
        _ => return None,
    };
    Some(VerifyingKey {
        key: DecodingKey::from_jwk(jwk).ok()?,
        algorithms,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.display().to_string(),
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair made with `openssl` (`ed25519`, `ec` for P-256, `rsa`) in a folder of its own.
    fn key_pair(algorithm: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "identity-test-{algorithm}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
        let mut genpkey = std::process::Command::new("openssl");
        genpkey.arg("genpkey");
        match algorithm {
            "ec" => genpkey.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            "rsa" => genpkey.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            other => genpkey.args(["-algorithm", other]),
        };
        assert!(
            genpkey
                .arg("-out")
                .arg(&private)
                .status()
                .unwrap()
                .success()
        );
        assert!(
            std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public)
                .status()
                .unwrap()
                .success()
        );
        (private, public)
    }

    fn claims(role: Role, agent_id: Option<i64>) -> Claims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Claims {
            sub: "s-1".to_owned(),
            role,
            agent_id,
            iss: "iss".to_owned(),
            aud: "aud".to_owned(),
            iat: now,
            exp: now + 60,
        }
    }

    #[tokio::test]
    async fn each_kind_of_key_verifies_its_own_tokens_and_refuses_every_bad_one() {
        for algorithm in ["ed25519", "ec", "rsa"] {
            let (private, public) = key_pair(algorithm);
            let issuer = Issuer::from_pem_file(&private, "iss", "aud").unwrap();
            let verifier = Verifier::new(KeySource::PublicKeyFile(public.clone()), "iss", "aud")
                .await
                .unwrap();
            let ttl = Duration::from_secs(60);
            let verify = |token: String| {
                let verifier = verifier.clone();
                async move { verifier.verify(&token).await }
            };
            assert_eq!(
                verify(issuer.customer("c-42", ttl).unwrap()).await,
                Ok(Caller::Customer("c-42".to_owned())),
                "{algorithm}"
            );
            assert_eq!(
                verify(issuer.rider(7, ttl).unwrap()).await,
                Ok(Caller::Rider {
                    agent_id: 7,
                    subject: "rider-7".to_owned()
                })
            );
            assert!(matches!(
                verify(issuer.operator("ops", ttl).unwrap()).await,
                Ok(Caller::Operator(_))
            ));

            let mut expired = claims(Role::Operator, None);
            expired.exp -= 3_600;
            assert_eq!(
                verify(issuer.sign(&expired).unwrap()).await,
                Err(Rejected::Expired)
            );
            let mut foreign = claims(Role::Operator, None);
            foreign.iss = "other".to_owned();
            assert_eq!(
                verify(issuer.sign(&foreign).unwrap()).await,
                Err(Rejected::Issuer)
            );
            let mut elsewhere = claims(Role::Operator, None);
            elsewhere.aud = "other".to_owned();
            assert_eq!(
                verify(issuer.sign(&elsewhere).unwrap()).await,
                Err(Rejected::Audience)
            );
            assert!(matches!(
                verify(issuer.sign(&claims(Role::Rider, None)).unwrap()).await,
                Err(Rejected::Claims(_))
            ));
            // An HMAC made with the public key as its secret (algorithm confusion).
            let pem = std::fs::read(&public).unwrap();
            let hmac = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(Role::Operator, None),
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            assert_eq!(verify(hmac).await, Err(Rejected::Algorithm), "{algorithm}");
            assert_eq!(verify("a.b.c".to_owned()).await, Err(Rejected::Malformed));
            remove(&private);
        }
    }

    #[tokio::test]
    async fn a_token_of_another_key_is_refused() {
        let (_, public) = key_pair("ed25519");
        let (forger, _) = key_pair("ed25519");
        let verifier = Verifier::new(KeySource::PublicKeyFile(public.clone()), "iss", "aud")
            .await
            .unwrap();
        let forged = Issuer::from_pem_file(&forger, "iss", "aud")
            .unwrap()
            .operator("ops", Duration::from_secs(60))
            .unwrap();
        assert_eq!(verifier.verify(&forged).await, Err(Rejected::Signature));
        remove(&public);
        remove(&forger);
    }

    fn remove(file: &std::path::Path) {
        if let Some(dir) = file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn roles_are_snake_case_in_tokens() {
        let json = serde_json::to_string(&Role::Operator).unwrap_or_default();
        assert_eq!(json, "\"operator\"");
    }
}
