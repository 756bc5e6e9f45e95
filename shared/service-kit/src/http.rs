//! HTTP plumbing shared by the services: one JSON error type, extractors that answer bad input in
//! that format, the health routes, the OpenAPI document and its route, a span and an id for every
//! request, and serving with graceful shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use messaging::Health;
use serde::Serialize;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use tracing::{Level, Span, debug, debug_span, error, info, info_span, warn};
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this are refused with 413: every body of the API is a few fields.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answered as `{"error": "..."}` with a status. Internal errors are logged with their
/// details and answered with a generic message: internals never reach the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one that does not verify (the answer says `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token of someone who may not do this.
    #[error("{0}")]
    Forbidden(String),
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
    /// 429: the caller sent more than its share; `Retry-After` says when to try again.
    #[error("{message}")]
    TooManyRequests {
        /// What to tell the caller.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503: a dependency is down; try again.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After: 1`: the service is at its bound of work in flight; try again in a
    /// moment (said at once rather than after a long wait).
    #[error("{0}")]
    Busy(String),
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
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
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

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for a person to read (never internals).
    pub error: String,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> Json<Self> {
        Json(Self {
            error: error.into(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            error!(error = %err, "internal error");
        }
        let mut response = (self.status(), ErrorBody::new(self.to_string())).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(retry_after.max(1)),
                );
            }
            ApiError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
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

/// Whether the process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    pub status: AliveStatus,
}

/// The one answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AliveStatus {
    /// The process runs.
    Ok,
}

/// Whether the service can do its work, and which of its checks fail.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `ready` when every check passes.
    pub status: ReadyStatus,
    /// Each check (`database`, then every broker component) and whether it passes.
    pub checks: BTreeMap<String, bool>,
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Every check passes.
    Ready,
    /// At least one check fails.
    NotReady,
}

/// The routes of [`health_routes`], documented.
fn health_api() -> OpenApiRouter<Readiness> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `GET /healthz` (the process answers), `GET /readyz` (200 only while the database and the
/// broker are reachable; 503 with the failing checks otherwise) and `GET /metrics` (Prometheus
/// text format).
pub fn health_routes(readiness: Readiness) -> Router {
    let (router, _) = health_api().split_for_parts();
    router.with_state(readiness)
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process runs", body = Alive))
)]
async fn healthz() -> Json<Alive> {
    Json(Alive {
        status: AliveStatus::Ok,
    })
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

/// Prometheus metrics: orders by outcome and reason, phase latencies, retries, recoveries,
/// timers, expiries, dead letters, in-flight orders, broker and database state.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((
        status = 200,
        description = "Prometheus text format (version 0.0.4)",
        body = String,
        content_type = "text/plain"
    ))
)]
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

/// Whether the service can do its work: its database answers, and its publisher and every
/// broker consumer are connected.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Every check passes", body = ReadinessReport),
        (status = 503, description = "A check fails: it is named in `checks`", body = ReadinessReport)
    )
)]
async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<ReadinessReport>) {
    let checks = Checks::run(&readiness).await;
    let ready = checks.ready();
    let mut answers = BTreeMap::new();
    answers.insert("database".to_owned(), checks.database);
    for (component, up) in checks.broker {
        answers.insert(component, up);
    }
    let (status, report) = if ready {
        (StatusCode::OK, ReadyStatus::Ready)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady)
    };
    (
        status,
        Json(ReadinessReport {
            status: report,
            checks: answers,
        }),
    )
}

/// The OpenAPI document, serialised once, as the state of its route.
#[derive(Clone, Debug)]
struct Document(Bytes);

/// The OpenAPI document of this service (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json(State(Document(document)): State<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

fn document_api() -> OpenApiRouter<Document> {
    OpenApiRouter::default().routes(routes!(openapi_json))
}

/// `GET /openapi.json`, answering with `document`.
pub fn document_route(document: &OpenApi) -> Result<Router, serde_json::Error> {
    let bytes = Bytes::from(serde_json::to_vec(document)?);
    let (router, _) = document_api().split_for_parts();
    Ok(router.with_state(Document(bytes)))
}

/// The whole OpenAPI document of a service: `service` (its info, its own routes and their
/// schemas) with the routes every service shares (health, metrics, this document), and the
/// `x-request-id` header on every operation and every response.
pub fn document(mut service: OpenApi) -> OpenApi {
    service.merge(health_api().into_openapi());
    service.merge(document_api().into_openapi());
    for item in service.paths.paths.values_mut() {
        for operation in operations(item) {
            document_request_id(operation);
        }
    }
    service
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn document_request_id(operation: &mut Operation) {
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_REQUEST_ID_LEN))
        .pattern(Some("^[!-~]+$"));
    let parameter = ParameterBuilder::new()
        .name(REQUEST_ID.as_str())
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The request's id, for the logs: 1 to 200 visible ASCII characters. Any other \
             value, or none, gets a fresh UUID.",
        ))
        .schema(Some(id))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(parameter);
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                REQUEST_ID.as_str().to_owned(),
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(
                        "The request's id: the one it came with, or a fresh UUID",
                    ))
                    .build(),
            );
        }
    }
}

/// Adds the body size limit every service uses.
pub fn with_limits(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The header that carries a request's id, on the request and on its answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// Routes polled by probes and scrapers: their requests are logged at debug level only.
const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Gives every request of `router` an id and a span, and logs its answer.
///
/// The id is the request's `x-request-id` if it has a usable one (1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters), else a fresh UUID; it is answered in
/// `x-request-id` too. The span, `request`, has the method, the matched route, the path and the
/// id, and gets the status and the latency when the answer is ready: every line logged while the
/// request is handled (and by work it starts, such as an order's placement) carries them. The
/// answer is logged at info level (debug for [`QUIET_ROUTES`]; warning for a 5xx).
///
/// Apply it to the whole router, with every route in it: the route is matched before the span
/// is made.
pub fn with_request_tracing(router: Router) -> Router {
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unusable_request_id))
}

/// Removes a request id that is not 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII characters, so that
/// the request gets a fresh one: ids go into every log line of the request.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = |value: &axum::http::HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(u8::is_ascii_graphic)
    };
    let headers = request.headers();
    let count = headers.get_all(&REQUEST_ID).iter().count();
    if count > 1 || headers.get(&REQUEST_ID).is_some_and(|v| !usable(v)) {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let method = request.method().as_str();
    let path = request.uri().path();
    if route.is_some_and(|route| QUIET_ROUTES.contains(&route)) {
        debug_span!(
            "request",
            method,
            route,
            path,
            request_id,
            status = Empty,
            latency_ms = Empty
        )
    } else {
        info_span!(
            "request",
            method,
            route,
            path,
            request_id,
            status = Empty,
            latency_ms = Empty
        )
    }
}

fn log_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    let quiet = span.metadata().is_some_and(|m| *m.level() == Level::DEBUG);
    if quiet {
        debug!(status, latency_ms, "request answered");
    } else if response.status().is_server_error() {
        warn!(status, latency_ms, "request answered");
    } else {
        info!(status, latency_ms, "request answered");
    }
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
