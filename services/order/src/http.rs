//! The order API.
//!
//! - `POST /orders` `{"customer_id": "c-42", "hub_id": 1, "lines": [{"food_id": 1, "quantity": 2}]}`
//!   → `201 {"order_id", "status": "placed", "hub_id", "lines", "packet_ids", "agent_id"}`, or
//!   `409 {"order_id", "status": "not_placed", "reason", "food_ids"?}`, or, when no decision is
//!   reached within the response budget, `202 {"order_id", "status": "pending", "stage"}`.
//!   `{"customer_id", "food_id": 1}` (no `lines`, no `hub_id`) is one line of quantity 1 at the
//!   default hub, as the one-item API had it; answers then also carry `food_id` and
//!   `packet_id`. A basket has 1 to 50 lines, each food at most once, each quantity 1 to 20.
//!
//!   With an `Idempotency-Key` header (1 to 200 visible ASCII characters), a request that repeats
//!   a key the customer used before creates nothing: it is answered with that order as recorded
//!   now (the status code as above) and the header `Idempotent-Replayed: true`; `422` if that
//!   order is for another basket.
//! - `GET /orders/{id}` → `200` with the same body for the order's current state (`placed`,
//!   `picked_up`, `delivered`, `cancelling`, `cancelled`, ...); `404` if there is no such order.
//! - `POST /orders/{id}/cancel` `{"customer_id"}` → `200 {"status": "cancelled", ...}`, or `409`
//!   with `reason` `already_picked_up`, `not_placed` or `not_placed_yet`, or `202 {"status":
//!   "cancelling"}` when the cancel has not ended within the response budget; `404` if the
//!   customer has no such order. A second cancel gets the first one's answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::command::{MAX_LINES, MAX_QUANTITY, PacketLine};
use protocol::ids::{FoodId, HubId, OrderId};
use protocol::trace::TraceContext;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, hub_field, text_field};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use crate::cancellation::CancelError;
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
        .route("/orders/{id}/cancel", post(cancel_order))
        .with_state(coordinator)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    customer_id: String,
    hub_id: Option<i64>,
    lines: Option<Vec<Line>>,
    /// The one-item API: one line of quantity 1.
    food_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    food_id: i64,
    quantity: Option<i64>,
}

/// The hub and lines of a request, checked against the limits.
fn basket(body: &PlaceOrder) -> Result<(HubId, Vec<PacketLine>), ApiError> {
    let unprocessable = |msg: String| Err(ApiError::Unprocessable(msg));
    let hub_id = hub_field(body.hub_id)?;
    let wanted: Vec<(i64, i64)> = match (&body.lines, body.food_id) {
        (Some(_), Some(_)) => return unprocessable("give lines or food_id, not both".to_owned()),
        (None, None) => return unprocessable("give lines (or food_id for one item)".to_owned()),
        (None, Some(food_id)) => vec![(food_id, 1)],
        (Some(lines), None) => lines
            .iter()
            .map(|l| (l.food_id, l.quantity.unwrap_or(1)))
            .collect(),
    };
    if wanted.is_empty() || wanted.len() > MAX_LINES {
        return unprocessable(format!(
            "an order has 1 to {MAX_LINES} lines, got {}",
            wanted.len()
        ));
    }
    let mut lines: Vec<PacketLine> = Vec::with_capacity(wanted.len());
    for (food_id, quantity) in wanted {
        if food_id < 1 {
            return unprocessable(format!("food_id must be a positive integer, got {food_id}"));
        }
        let quantity = match u32::try_from(quantity) {
            Ok(q) if (1..=MAX_QUANTITY).contains(&q) => q,
            _ => {
                return unprocessable(format!(
                    "quantity must be 1 to {MAX_QUANTITY}, got {quantity} for food {food_id}"
                ));
            }
        };
        if lines.iter().any(|l| l.food_id == FoodId(food_id)) {
            return unprocessable(format!(
                "food {food_id} is on two lines: give it once, with its quantity"
            ));
        }
        lines.push(PacketLine {
            food_id: FoodId(food_id),
            quantity,
        });
    }
    Ok((hub_id, lines))
}

async fn place_order(
    State(coordinator): State<Arc<Coordinator>>,
    headers: HeaderMap,
    AppJson(body): AppJson<PlaceOrder>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let (hub_id, lines) = basket(&body)?;
    let customer_id = text_field("customer_id", &body.customer_id)?;
    let key = idempotency_key(&headers)?;
    // Continue the caller's trace if it sent one, else start a new one. The order records the
    // context of this request's span: every later step of the order is in that trace.
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let span = info_span!("place_order", customer_id = %customer_id, hub_id = %hub_id);
    if let Some(incoming) = incoming {
        messaging::trace::set_parent(&span, incoming);
    }
    let trace = messaging::trace::context_of(&span)
        .unwrap_or_else(|| incoming.map_or_else(TraceContext::root, |t| t.child()));
    let placement = coordinator
        .place(customer_id.to_owned(), hub_id, lines.clone(), key, trace)
        .instrument(span)
        .await?;
    let mut response_headers = HeaderMap::new();
    let order = match placement {
        Placement::New(order) => order,
        Placement::Replayed(order) => {
            if order.hub_id != hub_id || order.lines != lines {
                return Err(ApiError::Unprocessable(format!(
                    "this Idempotency-Key was used for order {} of another basket",
                    order.id
                )));
            }
            response_headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            order
        }
    };
    let status = match order.state {
        OrderState::NotPlaced => StatusCode::CONFLICT,
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => {
            StatusCode::ACCEPTED
        }
        // Placed (a replayed key may find it further on).
        OrderState::Placed
        | OrderState::PickedUp
        | OrderState::Delivered
        | OrderState::Cancelling
        | OrderState::Cancelled => StatusCode::CREATED,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelOrder {
    customer_id: String,
}

async fn cancel_order(
    State(coordinator): State<Arc<Coordinator>>,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<CancelOrder>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let customer_id = text_field("customer_id", &body.customer_id)?;
    let order = coordinator
        .cancel_order(OrderId(id), customer_id)
        .await
        .map_err(|err| match err {
            CancelError::NotFound(_) => ApiError::NotFound(err.to_string()),
            CancelError::Repo(err) => err.into(),
        })?;
    let mut body = view(&order);
    let mut refused = |reason: &str| {
        body["reason"] = json!(reason);
        StatusCode::CONFLICT
    };
    let status = match order.state {
        OrderState::Cancelled => StatusCode::OK,
        OrderState::Cancelling => StatusCode::ACCEPTED,
        OrderState::PickedUp | OrderState::Delivered => refused("already_picked_up"),
        OrderState::NotPlaced => refused("not_placed"),
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => {
            refused("not_placed_yet")
        }
        // Only if the order changed under the cancel in a way the machine does not allow.
        OrderState::Placed => StatusCode::ACCEPTED,
    };
    Ok((status, Json(body)))
}

/// The public view of an order: recorded facts only.
fn view(order: &Order) -> Value {
    let mut view = json!({
        "order_id": order.id,
        "status": order.state,
        "hub_id": order.hub_id,
        "lines": order.lines,
    });
    match order.state {
        OrderState::NotPlaced => {
            view["reason"] = json!(order.reason.map(|r| r.as_str()));
        }
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => {
            view["status"] = json!("pending");
            view["stage"] = json!(order.state);
        }
        OrderState::Placed
        | OrderState::PickedUp
        | OrderState::Delivered
        | OrderState::Cancelling
        | OrderState::Cancelled => {
            view["packet_ids"] = json!(order.packet_ids);
            view["agent_id"] = json!(order.agent_id);
        }
    }
    // The fields of the one-item API, for an order of one packet of one food.
    if let [line] = order.lines.as_slice()
        && line.quantity == 1
    {
        view["food_id"] = json!(line.food_id);
        if let [packet] = order.packet_ids.as_slice() {
            view["packet_id"] = json!(packet);
        }
    }
    view
}
