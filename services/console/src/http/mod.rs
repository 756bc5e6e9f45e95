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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use identity::Issuer;
use messaging::{Broker, Health, Publisher};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::auth::Verifier;
use service_kit::http::{ApiError, AppJson, AppPath};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::services::Services;
use crate::snapshot::Snapshot;

mod forward;
mod operator;
mod shop;

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

/// How long development tokens last.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(8 * 3_600);

/// Every route, with `verifier` for the callers' tokens.
pub fn routes(console: Arc<Console>, verifier: Verifier) -> Router {
    Router::new()
        .route("/", get(|| async { page(CONSOLE_HTML) }))
        .route("/shop", get(|| async { page(SHOP_HTML) }))
        .route("/assets/{name}", get(asset))
        .route("/api/session", get(session))
        .route("/api/dev/token", post(dev_token))
        .route("/api/snapshot", get(operator::snapshot))
        .route("/api/live", get(operator::live))
        .route("/api/orders/{id}/{action}", post(operator::act))
        .route("/api/dead-letters/{queue}", get(operator::dry_run))
        .route("/api/dead-letters/{queue}/replay", post(operator::replay))
        .route("/api/shop/{*path}", any(shop::shop))
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(console)
        .layer(axum::Extension(verifier))
}

const CONSOLE_HTML: &str = include_str!("../../assets/console.html");
const SHOP_HTML: &str = include_str!("../../assets/shop.html");

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
        "console.js" => (include_str!("../../assets/console.js"), "text/javascript"),
        "shop.js" => (include_str!("../../assets/shop.js"), "text/javascript"),
        "common.js" => (include_str!("../../assets/common.js"), "text/javascript"),
        "style.css" => (include_str!("../../assets/style.css"), "text/css"),
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
