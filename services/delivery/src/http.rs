//! Delivery's HTTP API. Every request carries a token ([`service_kit::auth`]): a rider's (it
//! names the rider's agent) reads its own agent, takes it on and off duty, and reports the
//! progress of the orders that agent holds; nobody else reports them (`403`), not even an
//! operator. An operator's creates agents and reads everything.
//!
//! Agents:
//! - `POST /agents` `{"count": 10, "hub_id": 1}` or `{"names": ["Asha", "Ravi"]}` →
//!   `201 {"ids": [..], "hub_id"}` (`hub_id` defaults to the default hub, 1; hub ids are the
//!   store's, taken as given)
//! - `GET /agents/summary` (`?hub_id=1` for one hub) →
//!   `{"available", "reserved", "assigned", "delivering", "off_duty"}`
//! - `GET /agents/{id}` → `{"id", "name", "hub_id", "state", "order_id"}`
//! - `POST /agents/{id}/off-duty` → `200` with the agent (`off_duty`: never reserved), or `409`
//!   if it holds an order (or a reservation); `POST /agents/{id}/on-duty` → `200` (available),
//!   `409` unless it is off duty.
//!
//! The rider's progress with a placed order (each reported to the coordinator):
//! - `POST /deliveries/{order_id}/picked-up` → `200 {"order_id", "agent_id", "hub_id",
//!   "picked_up_at", "delivered_at"}`; the same again if repeated; `404` if no agent is assigned
//!   to the order (not placed here, cancelled, or not yet assigned). After a pick-up the order
//!   can no longer be cancelled.
//! - `POST /deliveries/{order_id}/delivered` → `200` with the delivery; the agent is available
//!   again; the same again if repeated; `409` if the order was not picked up.
//! - `GET /deliveries/{order_id}` → the delivery, or `404`.
//!
//! The OpenAPI document ([`openapi`], served at `GET /openapi.json`, committed as
//! `docs/openapi/delivery.json`) is generated from the handlers' `#[utoipa::path]` attributes.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use protocol::ids::{AgentId, HubId, OrderId};
use serde::{Deserialize, Serialize};
use service_kit::auth::{BearerToken, Caller, Who};
use service_kit::http::{ApiError, AppJson, AppPath, AppQuery, ErrorBody, hub_field, text_field};
use service_kit::idempotency;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::repo::{self, Agent, Delivery, Reported, Summary};

/// Most agents one request may create. (The document says it as `maximum` of `count`.)
pub const MAX_AGENTS_PER_REQUEST: i64 = 100_000;

/// What the handlers share: the pool, and the outbox relay to wake after a report.
#[derive(Clone)]
pub struct Api {
    pool: PgPool,
    reports: Arc<Notify>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "delivery-service",
        description = "Delivery: agents (each at a hub), their duty, and the rider's progress with \
                       each placed order (picked up, delivered), reported to the coordinator. \
                       Every request needs a token: a rider's for their own agent and the \
                       orders it holds, an operator's for the rest."
    ),
    modifiers(&BearerToken)
)]
struct ApiDoc;

/// The routes with their documentation, without state.
fn api() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(create_agents))
        .routes(routes!(summary))
        .routes(routes!(get_agent))
        .routes(routes!(off_duty))
        .routes(routes!(on_duty))
        .routes(routes!(get_delivery))
        .routes(routes!(picked_up))
        .routes(routes!(delivered))
}

/// The routes; `reports` wakes the relay of progress reports.
pub fn routes(pool: PgPool, reports: Arc<Notify>) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(Api { pool, reports })
}

/// The service's whole OpenAPI document, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    service_kit::http::document(api().into_openapi())
}

/// New agents at one hub: a count, names, or both (as many names as the count).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAgents {
    /// How many agents (the number of names if absent).
    #[schema(minimum = 1, maximum = 100000, example = 10)]
    count: Option<i64>,
    /// Their names, each 1 to 200 characters after trimming, without NUL characters (else
    /// `agent-<id>`).
    #[schema(min_items = 1, max_items = 100000)]
    names: Option<Vec<String>>,
    /// The hub (the default hub, 1, if absent). Hub ids are the store's, taken as given.
    #[schema(minimum = 1, example = 1)]
    hub_id: Option<i64>,
}

/// Agents just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct AgentsCreated {
    /// Their ids, in the order of the names if given.
    ids: Vec<AgentId>,
    /// Their hub.
    hub_id: HubId,
}

/// Creates agents at a hub.
#[utoipa::path(
    post,
    path = "/agents",
    tag = "agents",
    request_body = NewAgents,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "The operator's key for this call, for retries: a call that repeats a \
                           key creates nothing and is answered as the first was",
            min_length = 1, max_length = 200, pattern = "^[!-~]+$")
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The agents", body = AgentsCreated,
            headers(("idempotent-replayed" = String, description = "`true` when this is the \
                                                                 answer for an earlier call \
                                                                 with the same key"))),
        (status = 400, description = "The body is not readable JSON, or the `Idempotency-Key` \
                                      is malformed", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid, the count and the names disagree, or the key was used for another call", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn create_agents(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<NewAgents>,
) -> Result<(StatusCode, HeaderMap, Json<AgentsCreated>), ApiError> {
    caller.require_operator()?;
    let key = idempotency::key(&headers)?;
    let hub = hub_field(body.hub_id)?;
    let count = match (&body.count, &body.names) {
        (Some(count), Some(names)) if usize::try_from(*count).ok() != Some(names.len()) => {
            return Err(ApiError::Unprocessable(format!(
                "count is {count} but {} names were given",
                names.len()
            )));
        }
        (Some(count), _) => *count,
        (None, Some(names)) => i64::try_from(names.len()).unwrap_or(i64::MAX),
        (None, None) => {
            return Err(ApiError::Unprocessable(
                "give count, names, or both".to_owned(),
            ));
        }
    };
    if !(1..=MAX_AGENTS_PER_REQUEST).contains(&count) {
        return Err(ApiError::Unprocessable(format!(
            "count must be between 1 and {MAX_AGENTS_PER_REQUEST}, got {count}"
        )));
    }
    let names: Option<Vec<String>> = match body.names {
        Some(names) => {
            let names = names
                .iter()
                .map(|n| text_field("every name", n).map(str::to_owned))
                .collect::<Result<Vec<String>, ApiError>>()?;
            Some(names)
        }
        None => None,
    };
    let request = format!("POST /agents {count} at hub {hub}, names {names:?}");
    let answer = idempotency::once(&api.pool, key.as_deref(), &request, async |tx| {
        let ids = repo::create_agents(tx, hub, count, names.as_deref()).await?;
        tracing::info!(count, %hub, "agents created");
        Ok(AgentsCreated { ids, hub_id: hub })
    })
    .await?;
    repo::analyze_after_load(&api.pool, count).await?;
    let (headers, created) = answer.into_parts();
    Ok((StatusCode::CREATED, headers, Json(created)))
}

/// Which agents to count.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SummaryQuery {
    /// One hub (every hub if absent).
    #[param(minimum = 1)]
    hub_id: Option<i64>,
}

/// Agents by state, at one hub or over every hub.
#[utoipa::path(
    get,
    path = "/agents/summary",
    tag = "agents",
    params(SummaryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many agents are in each state", body = Summary),
        (status = 400, description = "The query is not readable (`hub_id` not an integer, or an unknown parameter)", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 422, description = "`hub_id` is not a positive integer", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn summary(
    State(api): State<Api>,
    caller: Caller,
    AppQuery(query): AppQuery<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    caller.require_operator()?;
    let hub = query.hub_id.map(|id| hub_field(Some(id))).transpose()?;
    Ok(Json(repo::summary(&api.pool, hub).await?))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/agents/{id}",
    tag = "agents",
    params(("id" = i64, Path, description = "The agent")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Neither the agent's rider nor an operator", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_agent(
    State(api): State<Api>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    own_agent(&caller, id)?;
    repo::get_agent(&api.pool, AgentId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

/// Puts an agent off duty: it is never reserved until it is back on duty.
#[utoipa::path(
    post,
    path = "/agents/{id}/off-duty",
    tag = "agents",
    params(("id" = i64, Path, description = "The agent")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, off duty (the same again if it already was)", body = Agent),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Neither the agent's rider nor an operator", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The agent holds an order or a reservation", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn off_duty(
    State(api): State<Api>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    own_agent(&caller, id)?;
    let agent = repo::set_duty(&api.pool, AgentId(id), true)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
    match agent.state.as_str() {
        "off_duty" => Ok(Json(agent)),
        state => Err(ApiError::Conflict(format!(
            "agent {id} is {state}: only an agent that holds no order goes off duty"
        ))),
    }
}

/// Puts an off-duty agent back on duty: available.
#[utoipa::path(
    post,
    path = "/agents/{id}/on-duty",
    tag = "agents",
    params(("id" = i64, Path, description = "The agent")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, on duty (the same again if it already was: \
                                      available, or busy with an order)", body = Agent),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Neither the agent's rider nor an operator", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "Another call put the agent off duty again meanwhile",
            body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn on_duty(
    State(api): State<Api>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    own_agent(&caller, id)?;
    let agent = repo::set_duty(&api.pool, AgentId(id), false)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
    // Safe to repeat, as off duty is: a second call (a retry after an answer lost in a database
    // failover, say) finds the agent on duty, perhaps already given an order, and says so.
    match agent.state.as_str() {
        "off_duty" => Err(ApiError::Conflict(format!(
            "agent {id} was put off duty again by another call meanwhile"
        ))),
        _ => Ok(Json(agent)),
    }
}

/// The delivery of an order: its agent and its progress.
#[utoipa::path(
    get,
    path = "/deliveries/{order_id}",
    tag = "deliveries",
    params(("order_id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery", body = Delivery),
        (status = 400, description = "The order id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "The order was not picked up (or, for a rider, is not \
                                      their agent's)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_delivery(
    State(api): State<Api>,
    caller: Caller,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let not_found = || ApiError::NotFound(format!("order {order} was not picked up"));
    if !caller.is_operator() {
        let rider = caller.rider_agent().map(AgentId);
        let holder = repo::holder(&api.pool, OrderId(order)).await?;
        if rider.is_none() || holder != rider {
            return Err(not_found());
        }
    }
    repo::get_delivery(&api.pool, OrderId(order))
        .await?
        .map(Json)
        .ok_or_else(not_found)
}

/// The rider has picked the order up: it can no longer be cancelled. Taken only once delivery
/// has seen the order placed (`409` before: ask again).
#[utoipa::path(
    post,
    path = "/deliveries/{order_id}/picked-up",
    tag = "deliveries",
    params(("order_id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery (the same again for a repeat)", body = Delivery),
        (status = 400, description = "The order id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not the rider whose agent holds the order", body = ErrorBody),
        (status = 404, description = "No agent is assigned to the order (not placed here, cancelled, or not assigned yet)", body = ErrorBody),
        (status = 409, description = "The order is not placed yet (its agent is assigned, but the store's packets may still fail): try again in a moment", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn picked_up(
    State(api): State<Api>,
    caller: Caller,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let by = holding_rider(&api, &caller, order).await?;
    let reported = repo::pick_up(&api.pool, OrderId(order), by).await?;
    answer(&api, order, reported)
}

/// The rider has delivered the order: its agent is available again.
#[utoipa::path(
    post,
    path = "/deliveries/{order_id}/delivered",
    tag = "deliveries",
    params(("order_id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery (the same again for a repeat)", body = Delivery),
        (status = 400, description = "The order id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not the rider whose agent holds the order", body = ErrorBody),
        (status = 409, description = "The order was not picked up", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn delivered(
    State(api): State<Api>,
    caller: Caller,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let by = holding_rider(&api, &caller, order).await?;
    let reported = repo::deliver(&api.pool, OrderId(order), by).await?;
    answer(&api, order, reported)
}

/// `403` unless the caller is the rider of agent `id`, or an operator.
fn own_agent(caller: &Caller, id: i64) -> Result<(), ApiError> {
    if caller.is_operator() || caller.rider_agent() == Some(id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "a rider acts only for their own agent".to_owned(),
        ))
    }
}

/// Whose report this is: the caller's agent, for a rider (`None` with identity off). `403`
/// for anyone but a rider, and for a rider when another agent holds `order`
/// ([`repo::holder`]). Not even an operator reports a rider's progress: the report frees the
/// agent or ends the customer's right to cancel. An order no agent holds (cancelled, never
/// placed here) is answered as such (`404`); the statements take the report only from the
/// agent that holds the order, whatever happens meanwhile.
async fn holding_rider(
    api: &Api,
    caller: &Caller,
    order: Uuid,
) -> Result<Option<AgentId>, ApiError> {
    let not_yours = || {
        ApiError::Forbidden(format!(
            "only the rider whose agent holds order {order} reports its progress"
        ))
    };
    match &**caller {
        Who::Anyone => Ok(None),
        Who::Rider { agent_id, .. } => {
            let mine = AgentId(*agent_id);
            match repo::holder(&api.pool, OrderId(order)).await? {
                Some(holder) if holder != mine => Err(not_yours()),
                _ => Ok(Some(mine)),
            }
        }
        Who::Customer(_) | Who::Operator(_) => Err(not_yours()),
    }
}

fn answer(api: &Api, order: Uuid, reported: Reported) -> Result<Json<Delivery>, ApiError> {
    match reported {
        Reported::Now(delivery) => {
            // A process that dies with the report recorded but not yet published (tests only).
            service_kit::fault::point("delivery.after_progress_commit");
            tracing::info!(order_id = %order, agent_id = %delivery.agent_id, delivered = delivery.delivered_at.is_some(), "delivery progress");
            api.reports.notify_one();
            Ok(Json(delivery))
        }
        Reported::Before(delivery) => Ok(Json(delivery)),
        Reported::NotAssigned => Err(ApiError::NotFound(format!(
            "no agent is assigned to order {order}"
        ))),
        Reported::NotPlacedYet => Err(ApiError::Conflict(format!(
            "order {order} is not placed yet; try again in a moment"
        ))),
        Reported::NotPickedUp => Err(ApiError::Conflict(format!(
            "order {order} was not picked up"
        ))),
        Reported::NotYours => Err(ApiError::Forbidden(format!(
            "only the rider whose agent holds order {order} reports its progress"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_committed() {
        service_kit::testing::check_openapi_document(
            &super::openapi(),
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../docs/openapi/delivery.json"
            )),
            "delivery-service",
        );
    }

    #[test]
    fn openapi_limits_are_the_ones_the_handlers_apply() {
        let document = serde_json::to_value(super::openapi()).unwrap();
        let agents = &document["components"]["schemas"]["NewAgents"]["properties"];
        assert_eq!(agents["count"]["maximum"], super::MAX_AGENTS_PER_REQUEST);
        assert_eq!(agents["names"]["maxItems"], super::MAX_AGENTS_PER_REQUEST);
    }

    #[test]
    fn openapi_every_operation_needs_a_token() {
        service_kit::testing::check_security(&super::openapi());
    }
}
