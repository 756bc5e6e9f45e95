//! The store's HTTP API.
//!
//! - `POST /hubs` `{"name": "Indiranagar"}` → `201 {"id": 2, "name"}`; `GET /hubs` →
//!   `[{"id", "name"}]`; `GET /hubs/{id}` → `{"id", "name", "foods": [{"food_id", "available",
//!   "reserved", "assigned"}]}`. Hub 1, `default`, always exists.
//! - `POST /foods` `{"name": "Masala Dosa", "packets": 100, "hub_id": 1}` → `201 {"id": 1,
//!   "name": "Masala Dosa"}` (the packets go to `hub_id`, the default hub if absent)
//! - `POST /foods/{id}/packets` `{"count": 50, "hub_id": 2}` → `201 {"food_id": 1, "hub_id": 2,
//!   "added": 50}`
//! - `GET /foods`, `GET /foods/{id}` → `{"id", "name", "available", "reserved", "assigned"}`
//!   over every hub
//! - `GET /packets/{id}` → `{"id", "food_id", "hub_id", "state", "order_id"}`

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::ids::{FoodId, HubId, PacketId};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ApiError, AppJson, AppPath, hub_field, text_field};
use sqlx::PgPool;

use crate::repo::{self, Added, FoodStock, Hub, Packet};

/// Most packets one request may add: inserting is one statement, and one request should not
/// hold the database for long.
pub const MAX_PACKETS_PER_REQUEST: i64 = 1_000_000;

/// The routes, with the pool as state.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/hubs", post(create_hub).get(list_hubs))
        .route("/hubs/{id}", get(get_hub))
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
    hub_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPackets {
    count: i64,
    hub_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHub {
    name: String,
}

async fn create_hub(
    State(pool): State<PgPool>,
    AppJson(body): AppJson<NewHub>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = text_field("name", &body.name)?;
    let id = repo::create_hub(&pool, name).await?;
    tracing::info!(hub_id = %id, name, "hub created");
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name }))))
}

async fn list_hubs(State(pool): State<PgPool>) -> Result<Json<Vec<Hub>>, ApiError> {
    Ok(Json(repo::list_hubs(&pool).await?))
}

async fn get_hub(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let hub = repo::get_hub(&pool, HubId(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no hub {id}")))?;
    let foods = repo::hub_stock(&pool, hub.id).await?;
    Ok(Json(
        json!({ "id": hub.id, "name": hub.name, "foods": foods }),
    ))
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
    let hub = hub_field(body.hub_id)?;
    let id = repo::create_food(&pool, name, hub, body.packets)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no hub {hub}")))?;
    tracing::info!(food_id = %id, name, packets = body.packets, "food created");
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name }))))
}

async fn add_packets(
    State(pool): State<PgPool>,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<NewPackets>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_count("count", body.count, 1)?;
    let hub = hub_field(body.hub_id)?;
    let food = FoodId(id);
    match repo::add_packets(&pool, food, hub, body.count).await? {
        Added::Done => {}
        Added::NoFood => return Err(ApiError::NotFound(format!("no food {id}"))),
        Added::NoHub => return Err(ApiError::NotFound(format!("no hub {hub}"))),
    }
    tracing::info!(food_id = %food, hub_id = %hub, count = body.count, "packets added");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "food_id": food, "hub_id": hub, "added": body.count })),
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
