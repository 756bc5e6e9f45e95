//! The operator API: what is stuck, and two things to do about one order. Operators only (every
//! request, reads too: `401` without a valid token, `403` for a customer's or rider's).
//!
//! - `GET /admin/orders?state=assigning&older_than=30s&limit=100` → `200 {"orders": [{"order_id",
//!   "state", "hub_id", "reason", "age_seconds", "attempt", "deadline", "lease_holder",
//!   "lease_until", "lease_expired"}]}`: unfinished orders received more than `older_than` ago (default `0s`),
//!   oldest first, at most `limit` (default 100, at most 1,000).
//! - `GET /admin/hubs/{id}/orders?limit=100` → `200 {"hub_id", "counts": {"placed": 3, …},
//!   "orders": [{"order_id", "state", "agent_id", "age_seconds", "created_at"}]}`: the orders in
//!   flight at a hub (being placed, placed, picked up, being cancelled), counted by state, and
//!   the oldest `limit` of them (read through an index of the orders in flight per hub).
//! - `POST /admin/orders/{id}/retry` → `202 {"order_id", "state", "driving": true}`: a decided
//!   order that is not final (`assigning`, `compensating`, `cancelling`) is taken over by this
//!   coordinator now, whoever held its lease (the holder is fenced off: its next save fails), and
//!   driven from its recorded state, as recovery would once the lease ran out. `409` for an
//!   undecided order (it is aborted at its deadline; abort it to end it now) or a final one.
//! - `POST /admin/orders/{id}/abort` → `200` with the final order (`not_placed`, reason
//!   `aborted`), or `202` if releasing both sides takes longer than the response budget: an
//!   undecided order (`reserving`) is taken over and aborted, both sides released. `409` with
//!   the reason for a decided order: its items may already be assigned to it, and taking them
//!   back would break the promise made by its commit decision (retry it instead).
//!
//! `404` for an order that does not exist; `503` if this coordinator has no room to drive one
//! more taken-over order (`RECOVERY_CONCURRENCY`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use chrono::Utc;
use protocol::ids::OrderId;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppPath, AppQuery, ErrorBody};
use tracing::info;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::coordinator::Coordinator;
use crate::machine::rules::Driving;
use crate::machine::{Order, OrderState};
use crate::repo;

/// Orders listed at most per request.
const MAX_LIST: i64 = 1_000;
/// Orders listed when `limit` is not given.
const DEFAULT_LIST: i64 = 100;

/// The routes with their documentation, without state.
fn api() -> OpenApiRouter<Arc<Coordinator>> {
    OpenApiRouter::new()
        .routes(routes!(list_unfinished))
        .routes(routes!(hub_orders))
        .routes(routes!(retry))
        .routes(routes!(abort))
}

/// The routes, with the coordinator as state, for operators only (every request, reads too).
pub fn routes(coordinator: Arc<Coordinator>) -> Router {
    let (router, _) = api().split_for_parts();
    service_kit::auth::operators_only(router.with_state(coordinator))
}

/// The operator API's part of the service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// Which unfinished orders to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// One unfinished state: `reserving`, `assigning`, `compensating` or `cancelling`.
    state: Option<String>,
    /// Only orders received longer ago than this (`30s`, `5m`; `0s` if absent).
    older_than: Option<String>,
    /// At most this many (100 if absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Unfinished orders, oldest first, with their lease.
#[utoipa::path(
    get,
    path = "/admin/orders",
    tag = "operator",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{\"orders\": [{\"order_id\", \"state\", \"hub_id\", \"reason\", \"age_seconds\", \"attempt\", \"created_at\", \"deadline\", \"lease_holder\", \"lease_until\", \"lease_expired\"}]}`", body = Object),
        (status = 400, description = "The query is not readable (an unknown parameter, `limit` not an integer)", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 422, description = "An unknown or final `state`, a malformed `older_than`, or `limit` out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn list_unfinished(
    State(coordinator): State<Arc<Coordinator>>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = match query.state.as_deref() {
        None => None,
        Some(name) => match name.parse::<OrderState>() {
            Ok(state) if !state.is_final() => Some(state),
            _ => {
                return Err(ApiError::Unprocessable(format!(
                    "state must be one of the unfinished states {}, got {name:?}",
                    unfinished_names()
                )));
            }
        },
    };
    let older_than = match query.older_than.as_deref() {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text).map_err(|err| {
            ApiError::Unprocessable(format!(
                "older_than must be a duration such as 30s or 5m, got {text:?}: {err}"
            ))
        })?,
    };
    let limit = list_limit(query.limit)?;
    let orders = repo::unfinished(coordinator.pool(), state, older_than, limit).await?;
    let now = Utc::now();
    let orders: Vec<Value> = orders
        .into_iter()
        .map(|o| {
            json!({
                "order_id": o.id,
                "state": o.state,
                "hub_id": o.hub_id,
                "reason": o.reason,
                "age_seconds": age_seconds(now, o.created_at),
                "attempt": o.attempt,
                "created_at": o.created_at,
                "deadline": o.deadline,
                "lease_holder": o.lease_holder,
                "lease_until": o.lease_until,
                "lease_expired": o.lease_until.is_none_or(|until| until < now),
            })
        })
        .collect();
    Ok(Json(json!({ "orders": orders })))
}

/// How many of a hub's orders in flight to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HubQuery {
    /// At most this many (100 if absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The orders in flight at a hub (being placed, placed, picked up, being cancelled): how many in
/// each state, and the oldest of them.
#[utoipa::path(
    get,
    path = "/admin/hubs/{id}/orders",
    tag = "operator",
    params(("id" = i64, Path, description = "The hub"), HubQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{\"hub_id\", \"counts\": {\"placed\": 3, …}, \"orders\": [{\"order_id\", \"state\", \"agent_id\", \"age_seconds\", \"created_at\"}]}`: orders oldest first, at most `limit`; a hub with no orders in flight (or no such hub) has none", body = Object),
        (status = 400, description = "The id is not an integer, or the query is not readable", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 422, description = "The id is not a positive integer, or `limit` is out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn hub_orders(
    State(coordinator): State<Arc<Coordinator>>,
    AppPath(hub): AppPath<i64>,
    AppQuery(query): AppQuery<HubQuery>,
) -> Result<Json<Value>, ApiError> {
    let hub = service_kit::http::hub_field(Some(hub))?;
    let limit = list_limit(query.limit)?;
    let counts = repo::hubs::in_flight_counts(coordinator.pool(), hub).await?;
    let orders = repo::hubs::in_flight(coordinator.pool(), hub, limit).await?;
    let now = Utc::now();
    let counts: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(state, count)| (state, json!(count)))
        .collect();
    let orders: Vec<Value> = orders
        .into_iter()
        .map(|o| {
            json!({
                "order_id": o.id,
                "state": o.state,
                "agent_id": o.agent_id,
                "age_seconds": age_seconds(now, o.created_at),
                "created_at": o.created_at,
            })
        })
        .collect();
    Ok(Json(
        json!({ "hub_id": hub, "counts": counts, "orders": orders }),
    ))
}

/// How many orders a list may hold: `limit` if given ([`DEFAULT_LIST`] if not), 1 to
/// [`MAX_LIST`].
fn list_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST);
    if (1..=MAX_LIST).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::Unprocessable(format!(
            "limit must be 1 to {MAX_LIST}, got {limit}"
        )))
    }
}

/// How long ago `at` was, in seconds (never negative: clocks differ).
fn age_seconds(now: chrono::DateTime<Utc>, at: chrono::DateTime<Utc>) -> f64 {
    (now - at).num_milliseconds().max(0) as f64 / 1000.0
}

fn unfinished_names() -> String {
    OrderState::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decided and not final: what `retry` may take.
const DECIDED_UNFINISHED: [OrderState; 3] = [
    OrderState::Assigning,
    OrderState::Compensating,
    OrderState::Cancelling,
];

/// An order taken by the operator: its lease, and room to drive it.
struct Taken {
    order: Order,
    token: repo::LeaseToken,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// Takes order `id` if it is in one of `states`, with room to drive it: `Ok(None)` if it is not
/// (the caller says why), `503` if this coordinator has no room.
async fn take(
    coordinator: &Coordinator,
    id: OrderId,
    states: &[OrderState],
) -> Result<Option<Taken>, ApiError> {
    let Some((slot, _)) = coordinator.recovery_room(1) else {
        return Err(busy());
    };
    let lease = coordinator.settings().lease;
    Ok(repo::take(coordinator.pool(), id, states, lease)
        .await?
        .map(|(order, token)| Taken { order, token, slot }))
}

/// Drives a decided, unfinished order now, from this coordinator.
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/retry",
    tag = "operator",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Taken over and being driven: `{\"order_id\", \"state\", \"driving\": true}`", body = Object),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Undecided (its deadline aborts it) or already final: `error` says which", body = Object),
        (status = 503, description = "No room to drive one more order here, or the database is unavailable", body = ErrorBody)
    )
)]
async fn retry(
    State(coordinator): State<Arc<Coordinator>>,
    AppPath(id): AppPath<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = OrderId(id);
    let Some(Taken { order, token, slot }) = take(&coordinator, id, &DECIDED_UNFINISHED).await?
    else {
        return refused(&coordinator, id, "retry").await;
    };
    info!(order_id = %id, state = %order.state, "operator: driving the order now");
    let body = json!({ "order_id": id, "state": order.state, "driving": true });
    drop(coordinator.drive_taken(order, token, Driving::TakenOver, slot));
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Aborts an undecided order: both sides released, `not_placed` (`aborted`).
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/abort",
    tag = "operator",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Aborted: `{\"order_id\", \"state\": \"not_placed\", \"reason\": \"aborted\"}`", body = Object),
        (status = 202, description = "Still being aborted after the response budget", body = Object),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Decided or final: never aborted; `error` says why", body = Object),
        (status = 503, description = "No room to drive one more order here, or the database is unavailable", body = ErrorBody)
    )
)]
async fn abort(
    State(coordinator): State<Arc<Coordinator>>,
    AppPath(id): AppPath<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = OrderId(id);
    let Some(Taken { order, token, slot }) =
        take(&coordinator, id, &[OrderState::Reserving]).await?
    else {
        return refused(&coordinator, id, "abort").await;
    };
    info!(order_id = %id, "operator: aborting the undecided order");
    let driving = coordinator.drive_taken(order.clone(), token, Driving::OperatorAbort, slot);
    let budget = coordinator.settings().response_budget;
    let ended = match tokio::time::timeout(budget, driving).await {
        Ok(Ok(ended)) => ended,
        // Still releasing (or the task ended without an order): the driver, or recovery after
        // it, finishes it.
        Ok(Err(_)) | Err(_) => order,
    };
    let status = if ended.state.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(summary(&ended))))
}

/// Why `action` cannot be done to order `id` as it is now: `404` or `409` with the reason.
async fn refused(
    coordinator: &Coordinator,
    id: OrderId,
    action: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let order = repo::load(coordinator.pool(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?;
    let why = match (action, order.state) {
        (_, state) if state.is_final() => format!("the order is already {state}"),
        ("retry", OrderState::Reserving) => "the order is undecided: it is aborted at its \
                                             deadline; abort it to end it now"
            .to_owned(),
        ("abort", _) => "the order's commit decision is recorded: its items may already be \
                         assigned to it, and taking them back would break the promise made to \
                         the customer; retry it instead"
            .to_owned(),
        // Raced: it moved on between the two reads.
        (_, state) => format!("the order is {state} now; look again"),
    };
    let mut body = summary(&order);
    body["error"] = json!(why);
    Ok((StatusCode::CONFLICT, Json(body)))
}

fn summary(order: &Order) -> Value {
    json!({
        "order_id": order.id,
        "state": order.state,
        "reason": order.reason.map(|r| r.as_str()),
    })
}

fn busy() -> ApiError {
    ApiError::Unavailable(
        "this coordinator is driving as many taken-over orders as it may; try again".to_owned(),
    )
}
