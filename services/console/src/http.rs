//! The console's routes: its two pages, the live picture, the operator's actions, and the
//! customer page's way to the order service.
//!
//! - `GET /`: the console (operators); `GET /shop`: the customer's page; `GET /assets/...`:
//!   their scripts and style, built into the binary (nothing is fetched from elsewhere).
//! - `GET /api/snapshot` → the [`Snapshot`] as JSON; `GET /api/live` → `text/event-stream`:
//!   the snapshot (event `snapshot`) now and after each change. Operators only.
//! - `POST /api/orders/{id}/abort`, `POST /api/orders/{id}/retry`: the order service's
//!   operator API, called with the caller's own token (the order service decides).
//! - `GET /api/dead-letters/{queue}`: a dry run (what a replay would move back, what it would
//!   leave and why); `POST /api/dead-letters/{queue}/replay`: the replay. Operators only.
//! - `/api/shop/...`: the customer page's calls, passed to the store (`GET hubs`, `GET
//!   hubs/{id}`, `GET foods`) and the order service (`POST orders`, `GET orders/{id}`, `GET
//!   orders/{id}/events`, `POST orders/{id}/cancel`) with the caller's token, untouched.
//! - `GET /api/session`: whether identity is on and whether the development sign-in is offered;
//!   `POST /api/dev/token {"role": "customer" | "operator", "subject"}`: a development token
//!   (only with `AUTH_SIGNING_KEY_FILE`; `404` otherwise).
//! - `GET /healthz`, `GET /readyz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use identity::Issuer;
use messaging::{Broker, Health, Publisher, dlq};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::auth::{Caller, Verifier};
use service_kit::http::{ApiError, AppJson, AppPath};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::services::{Service, Services};
use crate::snapshot::Snapshot;

/// What the routes share.
pub struct Console {
    /// The services' APIs.
    pub services: Arc<Services>,
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The broker (dead-letter queues).
    pub broker: Broker,
    /// Publishes replayed messages.
    pub publisher: Publisher,
    /// The dead-letter queues of the topology.
    pub dead_letter_queues: Vec<String>,
    /// Development sign-in, if the signing key is given.
    pub issuer: Option<Arc<Issuer>>,
    /// Whether tokens are checked.
    pub identity_on: bool,
    /// The console's own broker link.
    pub health: Health,
    /// Cancelled at shutdown: the live streams end.
    pub shutdown: CancellationToken,
}

/// Messages looked at in one dry run or replay.
const REPLAY_LIMIT: usize = 100;
/// Messages parked longer ago than this stay parked (as `tenminute-admin dlq replay`).
const REPLAY_MAX_AGE: Duration = Duration::from_secs(12 * 3_600);
/// How long development tokens last.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(8 * 3_600);
/// How often an idle live stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every route, with `verifier` for the callers' tokens.
pub fn routes(console: Arc<Console>, verifier: Verifier) -> Router {
    Router::new()
        .route("/", get(|| async { page(CONSOLE_HTML) }))
        .route("/shop", get(|| async { page(SHOP_HTML) }))
        .route("/assets/{name}", get(asset))
        .route("/api/session", get(session))
        .route("/api/dev/token", post(dev_token))
        .route("/api/snapshot", get(snapshot))
        .route("/api/live", get(live))
        .route("/api/orders/{id}/abort", post(abort))
        .route("/api/orders/{id}/retry", post(retry))
        .route("/api/dead-letters/{queue}", get(dry_run))
        .route("/api/dead-letters/{queue}/replay", post(replay))
        .route("/api/shop/hubs", get(shop_hubs))
        .route("/api/shop/hubs/{id}", get(shop_hub))
        .route("/api/shop/foods", get(shop_foods))
        .route("/api/shop/orders", post(shop_place))
        .route("/api/shop/orders/{id}", get(shop_order))
        .route("/api/shop/orders/{id}/events", get(shop_events))
        .route("/api/shop/orders/{id}/cancel", post(shop_cancel))
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(console)
        .layer(axum::Extension(verifier))
}

const CONSOLE_HTML: &str = include_str!("../assets/console.html");
const SHOP_HTML: &str = include_str!("../assets/shop.html");

fn page(html: &'static str) -> Response {
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'",
        ),
    );
    response
}

async fn asset(AppPath(name): AppPath<String>) -> Result<Response, ApiError> {
    let (body, kind) = match name.as_str() {
        "console.js" => (include_str!("../assets/console.js"), "text/javascript"),
        "shop.js" => (include_str!("../assets/shop.js"), "text/javascript"),
        "common.js" => (include_str!("../assets/common.js"), "text/javascript"),
        "style.css" => (include_str!("../assets/style.css"), "text/css"),
        _ => return Err(ApiError::NotFound(format!("no asset {name}"))),
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn ready(State(console): State<Arc<Console>>) -> Response {
    if console.health.all_up() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "broker": "down"})),
        )
            .into_response()
    }
}

async fn session(State(console): State<Arc<Console>>) -> Json<Value> {
    Json(json!({
        "identity": console.identity_on,
        "dev_sign_in": console.issuer.is_some(),
    }))
}

/// A development token's request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevToken {
    role: String,
    subject: String,
}

async fn dev_token(
    State(console): State<Arc<Console>>,
    AppJson(body): AppJson<DevToken>,
) -> Result<Json<Value>, ApiError> {
    let Some(issuer) = &console.issuer else {
        return Err(ApiError::NotFound(
            "development sign-in is off (no AUTH_SIGNING_KEY_FILE)".to_owned(),
        ));
    };
    let subject = service_kit::http::text_field("subject", &body.subject)?;
    let token = match body.role.as_str() {
        "customer" => issuer.customer(subject, DEV_TOKEN_TTL),
        "operator" => issuer.operator(subject, DEV_TOKEN_TTL),
        other => {
            return Err(ApiError::Unprocessable(format!(
                "role must be customer or operator, got {other:?}"
            )));
        }
    }
    .map_err(ApiError::internal)?;
    Ok(Json(json!({ "token": token })))
}

async fn snapshot(
    State(console): State<Arc<Console>>,
    caller: Caller,
) -> Result<Json<Arc<Snapshot>>, ApiError> {
    caller.require_operator()?;
    Ok(Json(console.snapshots.borrow().clone()))
}

async fn live(State(console): State<Arc<Console>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let mut snapshots = console.snapshots.clone();
    snapshots.mark_changed();
    let shutdown = console.shutdown.clone();
    let stream = futures::stream::unfold(snapshots, move |mut snapshots| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                changed = snapshots.changed() => changed.ok()?,
            }
            let data = serde_json::to_string(&*snapshots.borrow_and_update()).ok()?;
            let event = Event::default().event("snapshot").data(data);
            Some((Ok::<_, Infallible>(event), snapshots))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

async fn abort(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let path = format!("/admin/orders/{id}/abort");
    forward(
        &console,
        Service::Order,
        "POST",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

async fn retry(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let path = format!("/admin/orders/{id}/retry");
    forward(
        &console,
        Service::Order,
        "POST",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

/// `queue` if it is a dead-letter queue of the topology, else `422`.
fn dead_letter_queue(console: &Console, queue: &str) -> Result<(String, String), ApiError> {
    if !console.dead_letter_queues.iter().any(|q| q == queue) {
        return Err(ApiError::Unprocessable(format!(
            "{queue} is not a dead-letter queue of this deployment"
        )));
    }
    let target = queue.strip_suffix(".dlq").unwrap_or(queue).to_owned();
    Ok((queue.to_owned(), target))
}

fn limits() -> dlq::ReplayLimits {
    dlq::ReplayLimits {
        limit: REPLAY_LIMIT,
        max_age: REPLAY_MAX_AGE,
        force: false,
    }
}

fn parked(message: &dlq::Parked, left: Option<String>) -> Value {
    json!({
        "reason": message.reason,
        "kind": message.kind,
        "order_id": message.order_id,
        "message_id": message.message_id,
        "age_seconds": message.age.map(|a| a.as_secs()),
        "preview": message.preview,
        "left": left,
    })
}

async fn dry_run(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(queue): AppPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let (queue, target) = dead_letter_queue(&console, &queue)?;
    let found = dlq::peek(&console.broker, &queue, REPLAY_LIMIT)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the broker: {err}")))?;
    let limits = limits();
    let messages: Vec<Value> = found.iter().map(|m| parked(m, limits.refuses(m))).collect();
    let moving = messages.iter().filter(|m| m["left"].is_null()).count();
    Ok(Json(json!({
        "queue": queue,
        "target": target,
        "would_move": moving,
        "would_leave": messages.len() - moving,
        "messages": messages,
    })))
}

async fn replay(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(queue): AppPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let (queue, target) = dead_letter_queue(&console, &queue)?;
    let replayed = dlq::replay(
        &console.broker,
        &console.publisher,
        &queue,
        &target,
        limits(),
    )
    .await
    .map_err(|err| ApiError::Unavailable(format!("the broker: {err}")))?;
    tracing::info!(%queue, %target, moved = replayed.moved.len(), left = replayed.left.len(),
        "dead letters moved back from the console");
    Ok(Json(json!({
        "queue": queue,
        "target": target,
        "moved": replayed.moved.len(),
        "left": replayed.left.iter().map(|(m, why)| parked(m, Some(why.clone()))).collect::<Vec<_>>(),
    })))
}

async fn shop_hubs(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(
        &console,
        Service::Store,
        "GET",
        "/hubs",
        &headers,
        Bytes::new(),
    )
    .await
}

async fn shop_foods(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(
        &console,
        Service::Store,
        "GET",
        "/foods",
        &headers,
        Bytes::new(),
    )
    .await
}

async fn shop_hub(
    State(console): State<Arc<Console>>,
    AppPath(id): AppPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/hubs/{id}");
    forward(
        &console,
        Service::Store,
        "GET",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

async fn shop_place(
    State(console): State<Arc<Console>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, service_kit::http::MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::BadRequest("the body is over 64 KiB or unreadable".to_owned()))?;
    forward(
        &console,
        Service::Order,
        "POST",
        "/orders",
        &parts.headers,
        body,
    )
    .await
}

async fn shop_order(
    State(console): State<Arc<Console>>,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/orders/{id}");
    forward(
        &console,
        Service::Order,
        "GET",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

async fn shop_events(
    State(console): State<Arc<Console>>,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/orders/{id}/events");
    forward(
        &console,
        Service::Order,
        "GET",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

async fn shop_cancel(
    State(console): State<Arc<Console>>,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = format!("/orders/{id}/cancel");
    forward(
        &console,
        Service::Order,
        "POST",
        &path,
        &headers,
        Bytes::from_static(b"{}"),
    )
    .await
}

/// The request headers passed on to a service.
const FORWARDED: [&str; 5] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "traceparent",
];

/// Calls `path` on `service` with the caller's token and headers, and answers with its answer
/// as it comes (a stream of events stays a stream).
async fn forward(
    console: &Console,
    service: Service,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(ApiError::internal)?;
    let mut request = console
        .services
        .http()
        .request(method, format!("{}{path}", console.services.url(service)));
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    if !body.is_empty() {
        if !headers.contains_key(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE.as_str(), "application/json");
        }
        request = request.body(body);
    }
    let answer = request
        .send()
        .await
        .map_err(|err| ApiError::Unavailable(format!("the {service:?} service: {err}")))?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in [
        header::CONTENT_TYPE.as_str(),
        "retry-after",
        "idempotent-replayed",
        "www-authenticate",
    ] {
        if let Some(value) = answer.headers().get(name) {
            response = response.header(name, value.as_bytes());
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(ApiError::internal)
}
