//! Delivery's HTTP API.
//!
//! - `POST /agents` `{"count": 10}` or `{"count": 2, "names": ["Asha", "Ravi"]}` → `201 {"ids": [..]}`
//! - `GET /agents/summary` → `{"available", "reserved", "assigned"}`
//! - `GET /agents/{id}` → `{"id", "name", "state", "order_id"}`

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::ids::AgentId;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, text_field};
use sqlx::PgPool;

use crate::repo::{self, Agent, Summary};

/// Most agents one request may create.
pub const MAX_AGENTS_PER_REQUEST: i64 = 100_000;

/// The routes, with the pool as state.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/agents", post(create_agents))
        .route("/agents/summary", get(summary))
        .route("/agents/{id}", get(get_agent))
        .with_state(pool)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgents {
    count: Option<i64>,
    names: Option<Vec<String>>,
}

async fn create_agents(
    State(pool): State<PgPool>,
    AppJson(body): AppJson<NewAgents>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let ids = repo::create_agents(&pool, count, names.as_deref()).await?;
    repo::analyze_after_load(&pool, count).await?;
    tracing::info!(count, "agents created");
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))))
}

async fn summary(State(pool): State<PgPool>) -> Result<Json<Summary>, ApiError> {
    Ok(Json(repo::summary(&pool).await?))
}

async fn get_agent(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    repo::get_agent(&pool, AgentId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}
