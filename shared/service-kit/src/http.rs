//! HTTP plumbing shared by the services: one JSON error type, extractors that answer bad input in
//! that format, the health routes, and serving with graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use messaging::Health;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Request bodies larger than this are refused with 413: every body of the API is a few fields.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answered as `{"error": "..."}` with a status. Internal errors are logged with their
/// details and answered with a generic message: internals never reach the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: readable but invalid.
    #[error("{0}")]
    Unprocessable(String),
    /// 503: a dependency is down; try again.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// Wraps any error as an internal one.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_transient(&err) {
            error!(error = %err, "database unavailable");
            ApiError::Unavailable("database unavailable, try again".to_owned())
        } else {
            ApiError::internal(err)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            error!(error = %err, "internal error");
        }
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::Unprocessable(message),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(message),
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge
            }
            _ => ApiError::BadRequest(message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// The longest text field the APIs take (names, customer ids), in characters.
pub const MAX_TEXT: usize = 200;

/// `value` trimmed, if it is 1 to [`MAX_TEXT`] characters and holds no NUL (which PostgreSQL
/// refuses in text); else a 422 naming `field`.
pub fn text_field<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT || value.contains('\0') {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {MAX_TEXT} characters, without NUL characters"
        )));
    }
    Ok(value)
}

/// The hub a request names (`hub_id`, optional): the default hub if absent, else a positive id;
/// a 422 otherwise.
pub fn hub_field(id: Option<i64>) -> Result<protocol::ids::HubId, ApiError> {
    use protocol::ids::HubId;
    match id {
        None => Ok(HubId::DEFAULT),
        Some(id) if id >= 1 => Ok(HubId(id)),
        Some(id) => Err(ApiError::Unprocessable(format!(
            "hub_id must be a positive integer, got {id}"
        ))),
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s, so that malformed JSON gets a JSON answer.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// What `/readyz` checks: the database answers, and every broker component is connected.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The service's database.
    pub db: PgPool,
    /// Broker components (publisher, consumers).
    pub health: Health,
}

/// `GET /healthz` (the process answers), `GET /readyz` (200 only while the database and the
/// broker are reachable; 503 with the failing checks otherwise) and `GET /metrics` (Prometheus
/// text format).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn database_up(readiness: &Readiness) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&readiness.db),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// What `/readyz` checks, now: whether the database answers, and each broker component's state.
struct Checks {
    database: bool,
    broker: Vec<(String, bool)>,
}

impl Checks {
    async fn run(readiness: &Readiness) -> Self {
        Self {
            database: database_up(readiness).await,
            broker: readiness.health.snapshot(),
        }
    }

    fn ready(&self) -> bool {
        self.database && self.broker.iter().all(|(_, up)| *up)
    }
}

fn one_if(up: bool) -> f64 {
    if up { 1.0 } else { 0.0 }
}

async fn metrics(State(readiness): State<Readiness>) -> Response {
    use crate::metrics::{BROKER_COMPONENT_UP, DATABASE_UP, DB_POOL_CONNECTIONS, SERVICE_READY};
    // Connection state is sampled at scrape time.
    let checks = Checks::run(&readiness).await;
    ::metrics::gauge!(SERVICE_READY).set(one_if(checks.ready()));
    ::metrics::gauge!(DATABASE_UP).set(one_if(checks.database));
    for (component, up) in checks.broker {
        ::metrics::gauge!(BROKER_COMPONENT_UP, "component" => component).set(one_if(up));
    }
    let idle = u32::try_from(readiness.db.num_idle()).unwrap_or(u32::MAX);
    ::metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    ::metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "open").set(f64::from(readiness.db.size()));
    let body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let checks = Checks::run(&readiness).await;
    let ready = checks.ready();
    let mut answers = serde_json::Map::new();
    answers.insert("database".to_owned(), checks.database.into());
    for (component, up) in checks.broker {
        answers.insert(component, up.into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": answers });
    (status, Json(body)).into_response()
}

/// Requires `Authorization: Bearer <token>` on every request that changes something (any method
/// but GET and HEAD) when a token is configured: the admin API (foods, packets, agents). Reads
/// stay open. `None` leaves the router as it is (local development).
pub fn admin_guard(router: Router, token: Option<String>) -> Router {
    match token.filter(|t| !t.is_empty()) {
        None => router,
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_bearer,
        )),
    }
}

/// Requires `Authorization: Bearer <token>` on every request to `router`, reads too (an
/// operator API, whose reads show customers' orders). No token (or an empty one): open.
pub fn operator_guard(router: Router, token: Option<String>) -> Router {
    match token.filter(|t| !t.is_empty()) {
        None => router,
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_bearer_always,
        )),
    }
}

async fn require_bearer(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    require_bearer_always(State(token), request, next).await
}

async fn require_bearer_always(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong admin token" })),
        )
            .into_response(),
    }
}

/// Compares without stopping at the first difference, so that the time taken does not tell how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the body size limit every service uses.
pub fn with_limits(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Binds `addr` (port 0 picks a free port) and logs the bound address.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
