//! The order API.
//!
//! - `POST /orders` `{"food_id": 1, "customer_id": "c-42"}` →
//!   `201 {"order_id", "status": "placed", "food_id", "packet_id", "agent_id"}`, or
//!   `409 {"order_id", "status": "not_placed", "food_id", "reason"}`, or, when no decision is
//!   reached within the response budget, `202 {"order_id", "status": "pending", "stage"}`.
//!
//!   With an `Idempotency-Key` header (1 to 200 visible ASCII characters), a request that repeats
//!   a key the customer used before creates nothing: it is answered with that order as recorded
//!   now (the status code as above) and the header `Idempotent-Replayed: true`; `422` if that
//!   order is for another food.
//! - `GET /orders/{id}` → `200` with the same body for the order's current state; `404` if
//!   there is no such order.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::ids::{FoodId, OrderId};
use protocol::trace::TraceContext;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, text_field};
use uuid::Uuid;

use crate::coordinator::Coordinator;
use crate::machine::{Order, OrderState};
use crate::placement::{PlaceError, Placement};
use crate::repo::{self, RepoError};

/// The request header that carries the client's key for an order.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header that marks an answer with an earlier request's order.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest idempotency key accepted.
const MAX_KEY_LEN: usize = 200;

/// The routes, with the coordinator as state.
pub fn routes(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .with_state(coordinator)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    food_id: i64,
    customer_id: String,
}

async fn place_order(
    State(coordinator): State<Arc<Coordinator>>,
    headers: HeaderMap,
    AppJson(body): AppJson<PlaceOrder>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    if body.food_id < 1 {
        return Err(ApiError::Unprocessable(format!(
            "food_id must be a positive integer, got {}",
            body.food_id
        )));
    }
    let customer_id = text_field("customer_id", &body.customer_id)?;
    let key = idempotency_key(&headers)?;
    // Continue the caller's trace if it sent one, else start a new one.
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::root, |t| t.child());
    let placement = coordinator
        .place(customer_id.to_owned(), FoodId(body.food_id), key, trace)
        .await?;
    let mut response_headers = HeaderMap::new();
    let order = match placement {
        Placement::New(order) => order,
        Placement::Replayed(order) => {
            if order.food_id != FoodId(body.food_id) {
                return Err(ApiError::Unprocessable(format!(
                    "this Idempotency-Key was used for order {} of food {}",
                    order.id, order.food_id
                )));
            }
            response_headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            order
        }
    };
    let status = match order.state {
        OrderState::Placed => StatusCode::CREATED,
        OrderState::NotPlaced => StatusCode::CONFLICT,
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => {
            StatusCode::ACCEPTED
        }
    };
    Ok((status, response_headers, Json(view(&order))))
}

impl From<PlaceError> for ApiError {
    fn from(err: PlaceError) -> Self {
        match err {
            PlaceError::Repo(err) => err.into(),
            PlaceError::NotRecordedInTime | PlaceError::Stopping => {
                ApiError::Unavailable("database unavailable, try again".to_owned())
            }
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::Db(err) => err.into(),
            other => ApiError::internal(other),
        }
    }
}

/// The `Idempotency-Key` header, if sent and well-formed.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let visible = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(visible) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

async fn get_order(
    State(coordinator): State<Arc<Coordinator>>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let order = repo::load(coordinator.pool(), OrderId(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?;
    Ok(Json(view(&order)))
}

/// The public view of an order: recorded facts only.
fn view(order: &Order) -> Value {
    match order.state {
        OrderState::Placed => json!({
            "order_id": order.id,
            "status": "placed",
            "food_id": order.food_id,
            "packet_id": order.packet_id,
            "agent_id": order.agent_id,
        }),
        OrderState::NotPlaced => json!({
            "order_id": order.id,
            "status": "not_placed",
            "food_id": order.food_id,
            "reason": order.reason.map(|r| r.as_str()),
        }),
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => json!({
            "order_id": order.id,
            "status": "pending",
            "stage": order.state,
            "food_id": order.food_id,
        }),
    }
}
