//! Who is calling, in every handler: the [`Caller`] extractor verifies the request's bearer token
//! (a JWT, see the `identity` crate) with the service's [`Verifier`], which [`IdentityArgs`]
//! configures and [`crate::app::Foundation`] puts in every request's extensions.
//!
//! A handler takes `caller: Caller` and decides from it: `caller.require_operator()?`, or a match
//! on the role (a customer's own order, the rider of the agent that holds the delivery). A
//! missing or invalid token is a `401` before the handler runs; a valid token of the wrong party
//! is the handler's `403` (or `404` where even the existence of the thing is not theirs to know).

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
pub use identity::{Caller as Who, Verifier};
use identity::{IdentityError, KeySource};
use tracing::{debug, error};
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::config::parse_positive_duration;
use crate::http::ApiError;

/// How callers' tokens are verified. Exactly one of `AUTH_PUBLIC_KEY_FILE`, `AUTH_JWKS_URL`
/// and `AUTH_DISABLED=true` must be set: a service does not start open by accident.
#[derive(clap::Args, Clone, Debug)]
pub struct IdentityArgs {
    /// The identity provider's public key: a PEM file (Ed25519, ECDSA P-256 or RSA).
    /// `scripts/run` makes a development key pair and sets this.
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,

    /// The identity provider's JWKS address (its `jwks_uri`): keys by key id, fetched at start,
    /// every `AUTH_JWKS_REFRESH` and when a token names a key not seen yet.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// How often the JWKS is fetched again.
    #[arg(long, env = "AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_positive_duration)]
    pub auth_jwks_refresh: Duration,

    /// The issuer (`iss`) tokens must come from.
    #[arg(long, env = "AUTH_ISSUER", default_value = "tenminute-dev")]
    pub auth_issuer: String,

    /// The audience (`aud`) tokens must be for.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "tenminute")]
    pub auth_audience: String,

    /// Turns identity off: every request may act for anyone. For development only; the service
    /// says so loudly at start.
    #[arg(
        long,
        env = "AUTH_DISABLED",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auth_disabled: bool,
}

impl IdentityArgs {
    /// The verifier these settings describe (fetching a JWKS once now).
    pub async fn verifier(&self) -> Result<Verifier, IdentityError> {
        let source = match (
            &self.auth_public_key_file,
            self.auth_jwks_url
                .as_deref()
                .filter(|u| !u.trim().is_empty()),
            self.auth_disabled,
        ) {
            (None, None, true) => {
                error!(
                    "IDENTITY IS TURNED OFF (AUTH_DISABLED=true): every request may act for \
                     anyone, operators included. For development only; never in production"
                );
                return Ok(Verifier::disabled());
            }
            (Some(path), None, false) => KeySource::PublicKeyFile(path.clone()),
            (None, Some(url), false) => KeySource::Jwks {
                url: url.to_owned(),
                refresh: self.auth_jwks_refresh,
            },
            (None, None, false) => {
                return Err(IdentityError::Settings(
                    "identity: set AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_URL (or AUTH_DISABLED=true, \
                     for development only)"
                        .to_owned(),
                ));
            }
            _ => {
                return Err(IdentityError::Settings(
                    "identity: set only one of AUTH_PUBLIC_KEY_FILE, AUTH_JWKS_URL and \
                     AUTH_DISABLED=true"
                        .to_owned(),
                ));
            }
        };
        Verifier::new(source, &self.auth_issuer, &self.auth_audience).await
    }
}

/// The verified caller of a request (extractor). See the module's documentation.
#[derive(Clone, Debug)]
pub struct Caller(pub Who);

impl Deref for Caller {
    type Target = Who;
    fn deref(&self) -> &Who {
        &self.0
    }
}

impl Caller {
    /// `403` unless the caller is an operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("operators only".to_owned()))
        }
    }

    /// The rider's agent, if the caller is a rider.
    pub fn rider_agent(&self) -> Option<i64> {
        match &self.0 {
            Who::Rider { agent_id, .. } => Some(*agent_id),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(verifier) = parts.extensions.get::<Verifier>().cloned() else {
            return Err(ApiError::internal(NoVerifier));
        };
        if verifier.is_disabled() {
            return Ok(Caller(Who::Anyone));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".to_owned()))?;
        match verifier.verify(token).await {
            Ok(who) => Ok(Caller(who)),
            Err(rejected) => {
                debug!(%rejected, "token refused");
                Err(ApiError::Unauthorized(rejected.to_string()))
            }
        }
    }
}

/// Lets only operators through to `router` (every request, reads too): `401` without a valid
/// token, `403` for anyone else.
pub fn operators_only(router: Router) -> Router {
    router.layer(middleware::from_fn(require_operator))
}

async fn require_operator(caller: Caller, request: Request, next: Next) -> Response {
    match caller.require_operator() {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A route that takes a [`Caller`] was served without the verifier layer (a bug).
#[derive(Debug, thiserror::Error)]
#[error("no token verifier in the request's extensions")]
struct NoVerifier;

/// The name of the bearer token's security scheme in the OpenAPI documents: operations say
/// `security(("bearer" = []))` (the attribute takes a literal);
/// [`crate::testing::check_security`] holds them to this name.
pub const BEARER_SCHEME: &str = "bearer";

/// Declares the bearer token ([`BEARER_SCHEME`]) in a document:
/// `#[openapi(modifiers(&BearerToken))]`.
#[derive(Debug)]
pub struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A JWT from the identity provider (`AUTH_PUBLIC_KEY_FILE` or `AUTH_JWKS_URL`), \
                 with `iss`, `aud`, `exp`, `sub` and `role`: `customer` (the subject is the \
                 customer), `rider` (with `agent_id`, the rider's agent) or `operator`. In \
                 development, `tenminute-admin token --customer c-42` mints one.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER_SCHEME, SecurityScheme::Http(scheme));
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_an_empty_token_is_none() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
