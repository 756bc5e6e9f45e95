//! An identity provider's keys (its JWKS): fetched, cached by key id, refreshed.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::keys::VerifyingKey;

/// The shortest time between two fetches of the JWKS made because a token named an unknown key.
const MIN_REFETCH: Duration = Duration::from_secs(10);

pub(crate) struct Jwks {
    pub(crate) url: String,
    client: reqwest::Client,
    pub(crate) refresh: Duration,
    by_kid: RwLock<HashMap<String, VerifyingKey>>,
    /// When the key set was last fetched (serialises fetches).
    fetched: Mutex<Option<Instant>>,
}

impl Jwks {
    /// The keys at `url`, fetched every `refresh` (once the verifier starts its refresh).
    pub(crate) fn new(url: String, refresh: Duration) -> Result<Self, crate::IdentityError> {
        Ok(Self {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| crate::IdentityError::Settings(format!("JWKS client: {e}")))?,
            refresh,
            by_kid: RwLock::new(HashMap::new()),
            fetched: Mutex::new(None),
        })
    }

    /// The key `kid`, fetching the set again if it is unknown and the last fetch is not recent
    /// (a token naming keys at random makes at most one fetch every [`MIN_REFETCH`]).
    pub(crate) async fn key(&self, kid: &str) -> Option<VerifyingKey> {
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
    pub(crate) async fn fetch(&self) {
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
