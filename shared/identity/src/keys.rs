//! A verifying key, wherever it came from (a PEM file or a JWKS).

use jsonwebtoken::{Algorithm, DecodingKey};

/// A key and the algorithms it verifies.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}
