//! Who is calling, in every handler: the [`Caller`] extractor verifies the request's bearer token
//! (a JWT, see the `identity` crate) with the service's [`Verifier`], which [`verifier`] makes
//! from the [`IdentityArgs`] and [`crate::app::Foundation`] puts in every request's extensions.
//!
//! A handler takes `caller: Caller` and decides from it: `caller.require_operator()?`, or a match
//! on the role (a customer's own order, the rider of the agent that holds the delivery). A
//! missing or invalid token is a `401` before the handler runs; a valid token of the wrong party
//! is the handler's `403` (or `404` where even the existence of the thing is not theirs to know).

use std::ops::Deref;

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

use crate::config::IdentityArgs;
use crate::http::ApiError;

/// The verifier that `args` describe (fetching a JWKS once now).
pub async fn verifier(args: &IdentityArgs) -> Result<Verifier, IdentityError> {
    let source = match (
        &args.auth_public_key_file,
        args.auth_jwks_url
            .as_deref()
            .filter(|u| !u.trim().is_empty()),
        args.auth_disabled,
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
            refresh: args.auth_jwks_refresh,
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
    Verifier::new(source, &args.auth_issuer, &args.auth_audience).await
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
