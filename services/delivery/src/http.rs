//! Delivery's HTTP API. Every request that changes something needs the admin token when one is
//! configured (the rider's app holds it too).
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

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::ids::{AgentId, OrderId};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, AppQuery, hub_field, text_field};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::repo::{self, Agent, Delivery, Reported, Summary};

/// Most agents one request may create.
pub const MAX_AGENTS_PER_REQUEST: i64 = 100_000;

/// What the handlers share: the pool, and the outbox relay to wake after a report.
#[derive(Clone)]
pub struct Api {
    pool: PgPool,
    reports: Arc<Notify>,
}

/// The routes; `reports` wakes the relay of progress reports.
pub fn routes(pool: PgPool, reports: Arc<Notify>) -> Router {
    Router::new()
        .route("/agents", post(create_agents))
        .route("/agents/summary", get(summary))
        .route("/agents/{id}", get(get_agent))
        .route("/agents/{id}/off-duty", post(off_duty))
        .route("/agents/{id}/on-duty", post(on_duty))
        .route("/deliveries/{order_id}", get(get_delivery))
        .route("/deliveries/{order_id}/picked-up", post(picked_up))
        .route("/deliveries/{order_id}/delivered", post(delivered))
        .with_state(Api { pool, reports })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgents {
    count: Option<i64>,
    names: Option<Vec<String>>,
    hub_id: Option<i64>,
}

async fn create_agents(
    State(api): State<Api>,
    AppJson(body): AppJson<NewAgents>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let ids = repo::create_agents(&api.pool, hub, count, names.as_deref()).await?;
    repo::analyze_after_load(&api.pool, count).await?;
    tracing::info!(count, %hub, "agents created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ids": ids, "hub_id": hub })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    hub_id: Option<i64>,
}

async fn summary(
    State(api): State<Api>,
    AppQuery(query): AppQuery<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    let hub = query.hub_id.map(|id| hub_field(Some(id))).transpose()?;
    Ok(Json(repo::summary(&api.pool, hub).await?))
}

async fn get_agent(
    State(api): State<Api>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    repo::get_agent(&api.pool, AgentId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

async fn off_duty(
    State(api): State<Api>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
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

async fn on_duty(
    State(api): State<Api>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    let agent = repo::set_duty(&api.pool, AgentId(id), false)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
    match agent.state.as_str() {
        "available" => Ok(Json(agent)),
        state => Err(ApiError::Conflict(format!(
            "agent {id} is {state}, not off duty"
        ))),
    }
}

async fn get_delivery(
    State(api): State<Api>,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    repo::get_delivery(&api.pool, OrderId(order))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("order {order} was not picked up")))
}

async fn picked_up(
    State(api): State<Api>,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let reported = repo::pick_up(&api.pool, OrderId(order)).await?;
    answer(&api, order, reported)
}

async fn delivered(
    State(api): State<Api>,
    AppPath(order): AppPath<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let reported = repo::deliver(&api.pool, OrderId(order)).await?;
    answer(&api, order, reported)
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
        Reported::NotPickedUp => Err(ApiError::Conflict(format!(
            "order {order} was not picked up"
        ))),
    }
}
