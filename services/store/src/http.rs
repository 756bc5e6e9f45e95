//! The store's HTTP API.
//!
//! - `POST /foods` `{"name": "Masala Dosa", "packets": 100}` → `201 {"id": 1, "name": "Masala Dosa"}`
//! - `POST /foods/{id}/packets` `{"count": 50}` → `201 {"food_id": 1, "added": 50}`
//! - `GET /foods`, `GET /foods/{id}` → `{"id", "name", "available", "reserved", "assigned"}`
//! - `GET /packets/{id}` → `{"id", "food_id", "state", "order_id"}`

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::ids::{FoodId, PacketId};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, text_field};
use sqlx::PgPool;

use crate::repo::{self, FoodStock, Packet};

/// Most packets one request may add: inserting is one statement, and one request should not
/// hold the database for long.
pub const MAX_PACKETS_PER_REQUEST: i64 = 1_000_000;

/// The routes, with the pool as state.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/foods", post(create_food).get(list_foods))
        .route("/foods/{id}", get(get_food))
        .route("/foods/{id}/packets", post(add_packets))
        .route("/packets/{id}", get(get_packet))
        .with_state(pool)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFood {
    name: String,
    #[serde(default)]
    packets: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPackets {
    count: i64,
}

fn check_count(field: &str, count: i64, min: i64) -> Result<(), ApiError> {
    if (min..=MAX_PACKETS_PER_REQUEST).contains(&count) {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "{field} must be between {min} and {MAX_PACKETS_PER_REQUEST}, got {count}"
        )))
    }
}

async fn create_food(
    State(pool): State<PgPool>,
    AppJson(body): AppJson<NewFood>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = text_field("name", &body.name)?;
    check_count("packets", body.packets, 0)?;
    let id = repo::create_food(&pool, name, body.packets).await?;
    tracing::info!(food_id = %id, name, packets = body.packets, "food created");
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name }))))
}

async fn add_packets(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<NewPackets>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_count("count", body.count, 1)?;
    let food = FoodId(id);
    repo::add_packets(&pool, food, body.count)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no food {id}")))?;
    tracing::info!(food_id = %food, count = body.count, "packets added");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "food_id": food, "added": body.count })),
    ))
}

async fn list_foods(State(pool): State<PgPool>) -> Result<Json<Vec<FoodStock>>, ApiError> {
    Ok(Json(repo::list_foods(&pool).await?))
}

async fn get_food(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<FoodStock>, ApiError> {
    repo::get_food(&pool, FoodId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no food {id}")))
}

async fn get_packet(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Packet>, ApiError> {
    repo::get_packet(&pool, PacketId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no packet {id}")))
}
