//! The order API.
//!
//! Every request carries a customer's token (`Authorization: Bearer`, see
//! [`service_kit::auth`]): the customer is the token's subject, never a field of the body, and a
//! customer sees and cancels only their own orders (another's is a `404`, as no order is). An
//! operator's token reads and cancels any order.
//!
//! - `POST /orders` `{"hub_id": 1, "lines": [{"food_id": 1, "quantity": 2}]}`
//!   → `201 {"order_id", "status": "placed", "hub_id", "lines", "packet_ids", "agent_id"}`, or
//!   `409 {"order_id", "status": "not_placed", "reason", "food_ids"?}`, or, when no decision is
//!   reached within the response budget, `202 {"order_id", "status": "pending", "stage"}`.
//!   `{"food_id": 1}` (no `lines`, no `hub_id`) is one line of quantity 1 at the
//!   default hub, as the one-item API had it; answers then also carry `food_id` and
//!   `packet_id`. A basket has 1 to 50 lines, each food at most once, each quantity 1 to 20.
//!
//!   A new order is refused at once, with nothing recorded, when this coordinator has
//!   `MAX_ORDERS_IN_FLIGHT` orders in flight (`503`, `Retry-After: 1`) or the customer placed
//!   more than `CUSTOMER_ORDER_RATE` (`429`, `Retry-After`): see [`crate::admission`].
//!
//!   With an `Idempotency-Key` header (1 to 200 visible ASCII characters), a request that repeats
//!   a key the customer used before creates nothing: it is answered with that order as recorded
//!   now (the status code as above) and the header `Idempotent-Replayed: true`; `422` if that
//!   order is for another basket.
//! - `GET /orders/{id}` → `200` with the same body for the order's current state (`placed`,
//!   `picked_up`, `delivered`, `cancelling`, `cancelled`, ...); `404` if there is no such order.
//! - `GET /orders/{id}/events` → `text/event-stream`: the order's states as they happen,
//!   resumable with `Last-Event-ID` (see [`events`]).
//! - `POST /orders/{id}/cancel` `{}` → `200 {"status": "cancelled", ...}`, or `409`
//!   with `reason` `already_picked_up`, `not_placed` or `not_placed_yet`, or `202 {"status":
//!   "cancelling"}` when the cancel has not ended within the response budget; `404` if the
//!   customer has no such order. A second cancel gets the first one's answer.
//!
//! The OpenAPI document ([`openapi`], served at `GET /openapi.json`, committed as
//! `docs/openapi/order.json`) is generated from the handlers' `#[utoipa::path]` attributes and
//! the types of the bodies.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::{Json, Router};
use protocol::command::{MAX_LINES, MAX_QUANTITY, PacketLine};
use protocol::ids::{FoodId, HubId, OrderId};
use protocol::trace::TraceContext;
use serde::Deserialize;
use service_kit::auth::{BearerToken, Caller, Who};
use service_kit::http::{ApiError, AppJson, AppPath, ErrorBody, hub_field, text_field};
use service_kit::idempotency;
use tracing::{Instrument, info_span};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::admission::Refused;
use crate::cancellation::CancelError;
use crate::coordinator::Coordinator;
use crate::machine::OrderState;
use crate::placement::{PlaceError, Placement};
use crate::repo::{self, RepoError};

mod events;
mod view;

use view::{OrderView, Reason, view};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "The coordinator: takes orders (a basket at one hub), places each with a \
                       distributed transaction over the store and delivery, and cancels them. An \
                       order is `placed` only when every packet of every line and an agent are \
                       assigned to it. Every request needs a token: a customer's places, reads \
                       and cancels their own orders; an operator's reads and cancels any, and is \
                       the only one the operator API (`/admin/...`) takes."
    ),
    modifiers(&BearerToken)
)]
struct ApiDoc;

/// The routes with their documentation, without state.
fn api() -> OpenApiRouter<Arc<Coordinator>> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(place_order))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(events::order_events))
}

/// The routes, with the coordinator as state.
pub fn routes(coordinator: Arc<Coordinator>) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(coordinator)
}

/// The service's whole OpenAPI document, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api().into_openapi();
    document.merge(crate::operator::openapi());
    service_kit::http::document(document)
}

/// An order: a basket at one hub, or (the one-item API) one packet of `food_id` at the default
/// hub. Give `lines` or `food_id`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    /// Who orders. The customer is the token's subject: if given, this must be the same. Only
    /// with identity turned off (development) is it taken from here: 1 to 200 characters after
    /// trimming, without NUL characters.
    #[schema(min_length = 1, max_length = 200, example = "c-42")]
    customer_id: Option<String>,
    /// The hub (the default hub, 1, if absent).
    #[schema(minimum = 1, example = 1)]
    hub_id: Option<i64>,
    /// The basket: 1 to 50 lines, each food at most once.
    #[schema(min_items = 1, max_items = 50)]
    lines: Option<Vec<BasketLine>>,
    /// The one-item API: one packet of this food at the default hub (instead of `lines`).
    #[schema(minimum = 1)]
    food_id: Option<i64>,
}

/// One line of a basket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BasketLine {
    /// The food.
    #[schema(minimum = 1, example = 1)]
    food_id: i64,
    /// How many packets of it: 1 to 20 (1 if absent).
    #[schema(minimum = 1, maximum = 20, example = 2)]
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

/// Places an order: answers with its state once decided, or `pending` after the response
/// budget.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body = PlaceOrder,
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "The client's key for this order, for retries: a request that repeats \
                           a key the customer used before creates nothing and is answered with \
                           that order as recorded now",
            min_length = 1, max_length = 200, pattern = "^[!-~]+$"),
        ("traceparent" = Option<String>, Header,
            description = "A W3C trace context: the order's messages and log lines continue this \
                           trace (a new one is started without it, or if it is malformed)")
    ),
    responses(
        (status = 201, description = "Placed (a replayed key may find the order further on: \
                                      picked up, delivered, cancelling, cancelled)",
            body = OrderView,
            headers(("idempotent-replayed" = String, description = "`true` when this is the \
                                                                 answer for an earlier request \
                                                                 with the same key"))),
        (status = 202, description = "Not decided within the response budget: `pending`; ask \
                                      `GET /orders/{id}` later",
            body = OrderView,
            headers(("idempotent-replayed" = String, description = "`true` for a replayed key"))),
        (status = 400, description = "The body is not readable JSON, or the `Idempotency-Key` \
                                      is malformed", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 403, description = "Not a customer's token, or `customer_id` names another \
                                      customer", body = ErrorBody),
        (status = 409, description = "Not placed: `reason` says why",
            body = OrderView,
            headers(("idempotent-replayed" = String, description = "`true` for a replayed key"))),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid (the basket's \
                                      limits), or the key was used for another basket",
            body = ErrorBody),
        (status = 429, description = "Too many orders from this customer \
                                      (`CUSTOMER_ORDER_RATE`): nothing was recorded; try again \
                                      after `Retry-After` seconds", body = ErrorBody,
            headers(("retry-after" = String, description = "Seconds to wait"))),
        (status = 503, description = "The order could not be recorded in time (the database \
                                      is unavailable or failing over): the message names the \
                                      order, which may still be recorded (`GET` it before \
                                      placing again, or try again with the same key), or this \
                                      coordinator has `MAX_ORDERS_IN_FLIGHT` orders in flight \
                                      (nothing was recorded; `Retry-After: 1`)",
            body = ErrorBody)
    )
)]
async fn place_order(
    State(coordinator): State<Arc<Coordinator>>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<PlaceOrder>,
) -> Result<(StatusCode, HeaderMap, Json<OrderView>), ApiError> {
    let (hub_id, lines) = basket(&body)?;
    let customer_id = ordering_customer(&caller, body.customer_id.as_deref())?;
    let key = idempotency::key(&headers)?;
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
            response_headers.insert(
                idempotency::IDEMPOTENT_REPLAYED,
                HeaderValue::from_static("true"),
            );
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
            // Its record may yet commit (or have committed, its answer lost): a retry without
            // a key would place a second order, so the answer names this one.
            PlaceError::NotRecordedInTime(order) => ApiError::Unavailable(format!(
                "order {order} was not recorded in time (the database is slow or failing over); \
                 it may still be: GET /orders/{order} before placing it again, or place with an \
                 Idempotency-Key"
            )),
            PlaceError::Stopping => {
                ApiError::Unavailable("database unavailable, try again".to_owned())
            }
            PlaceError::Refused(refused @ Refused::Busy(_)) => ApiError::Busy(refused.to_string()),
            PlaceError::Refused(refused @ Refused::TooFast(wait)) => ApiError::TooManyRequests {
                message: refused.to_string(),
                retry_after: wait.as_secs_f64().ceil() as u64,
            },
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

/// Who places an order: the customer of the token. Only a customer orders, and only for
/// themselves; with identity off, the body names the customer.
fn ordering_customer<'a>(
    caller: &'a Caller,
    claimed: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    let claimed = claimed.map(|c| text_field("customer_id", c)).transpose()?;
    match (&**caller, claimed) {
        (Who::Customer(me), None) => Ok(me),
        (Who::Customer(me), Some(claimed)) if claimed == me => Ok(me),
        (Who::Customer(_), Some(_)) => Err(ApiError::Forbidden(
            "customer_id names another customer: a customer orders for themselves".to_owned(),
        )),
        (Who::Anyone, Some(claimed)) => Ok(claimed),
        (Who::Anyone, None) => Err(ApiError::Unprocessable(
            "customer_id is required while identity is turned off".to_owned(),
        )),
        (Who::Rider { .. } | Who::Operator(_), _) => Err(ApiError::Forbidden(
            "only a customer places orders, with their own token".to_owned(),
        )),
    }
}

/// Whose orders the caller may read and cancel: `Some(customer)` for a customer (their own),
/// `None` for an operator (every one); a rider none (the answer is `404`, as for no order).
/// With identity off, `claimed` (a cancel's body) narrows it as a customer's token would.
fn whose_orders(
    caller: &Caller,
    claimed: Option<&str>,
    id: Uuid,
) -> Result<Option<String>, ApiError> {
    let claimed = claimed.map(|c| text_field("customer_id", c)).transpose()?;
    match &**caller {
        Who::Customer(me) if claimed.is_none_or(|c| c == me) => Ok(Some(me.clone())),
        Who::Operator(_) | Who::Anyone => Ok(claimed.map(str::to_owned)),
        Who::Customer(_) | Who::Rider { .. } => Err(no_order(id)),
    }
}

fn no_order(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no order {id}"))
}

/// An order in its current state.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order as recorded now", body = OrderView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 404, description = "No such order of the caller's (any order for an \
                                      operator)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_order(
    State(coordinator): State<Arc<Coordinator>>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderView>, ApiError> {
    let whose = whose_orders(&caller, None, id)?;
    let order = repo::load(coordinator.pool(), OrderId(id))
        .await?
        .filter(|order| whose.as_ref().is_none_or(|c| *c == order.customer_id))
        .ok_or_else(|| no_order(id))?;
    Ok(Json(view(&order)))
}

/// A cancel's body: `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelOrder {
    /// The customer who placed the order, if given (an order of anyone else is a `404`). The
    /// token says who cancels; with identity turned off, this does.
    #[schema(min_length = 1, max_length = 200, example = "c-42")]
    customer_id: Option<String>,
}

/// Cancels a placed order, until the rider has picked it up. A repeat gets the same answer.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    request_body = CancelOrder,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled: the packets are back in stock and the agent is \
                                      free", body = OrderView),
        (status = 202, description = "`cancelling`: not ended within the response budget",
            body = OrderView),
        (status = 400, description = "The id is not a UUID, or the body is not readable JSON",
            body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 404, description = "The customer has no such order", body = ErrorBody),
        (status = 409, description = "Refused, nothing changed: `reason` is \
                                      `already_picked_up`, `not_placed`, or `not_placed_yet` \
                                      (ask again once placed)", body = OrderView),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn cancel_order(
    State(coordinator): State<Arc<Coordinator>>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<CancelOrder>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let whose = whose_orders(&caller, body.customer_id.as_deref(), id)?;
    let order = coordinator
        .cancel_order(OrderId(id), whose.as_deref())
        .await
        .map_err(|err| match err {
            CancelError::NotFound(_) => ApiError::NotFound(err.to_string()),
            CancelError::Repo(err) => err.into(),
        })?;
    let mut body = view(&order);
    let mut refused = |reason: Reason| {
        body.reason = Some(reason);
        StatusCode::CONFLICT
    };
    let status = match order.state {
        OrderState::Cancelled => StatusCode::OK,
        OrderState::Cancelling => StatusCode::ACCEPTED,
        OrderState::PickedUp | OrderState::Delivered => refused(Reason::AlreadyPickedUp),
        OrderState::NotPlaced => refused(Reason::NotPlaced),
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => {
            refused(Reason::NotPlacedYet)
        }
        // Only if the order changed under the cancel in a way the machine does not allow.
        OrderState::Placed => StatusCode::ACCEPTED,
    };
    Ok((status, Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        service_kit::testing::check_openapi_document(
            &openapi(),
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../docs/openapi/order.json"
            )),
            "order-service",
        );
    }

    #[test]
    fn openapi_every_operation_needs_a_token() {
        service_kit::testing::check_security(&openapi());
    }

    #[test]
    fn openapi_limits_are_the_ones_the_handlers_apply() {
        let document = serde_json::to_value(openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        let order = &schemas["PlaceOrder"]["properties"];
        assert_eq!(order["lines"]["maxItems"], MAX_LINES);
        assert_eq!(
            order["customer_id"]["maxLength"],
            service_kit::http::MAX_TEXT
        );
        let line = &schemas["BasketLine"]["properties"];
        assert_eq!(line["quantity"]["maximum"], MAX_QUANTITY);
        let key = document["paths"]["/orders"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .cloned()
            .unwrap();
        assert_eq!(key["schema"]["maxLength"], idempotency::MAX_KEY_LEN);
    }
}
