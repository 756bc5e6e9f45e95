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
//!
//! Every request carries a token ([`service_kit::auth`]): the catalogue (hubs, foods and their
//! stock) is read with anyone's; creating hubs, foods and packets, and reading a packet (which
//! names its order), takes an operator's (`403` for anyone else's).
//!
//! The OpenAPI document ([`openapi`], served at `GET /openapi.json`, committed as
//! `docs/openapi/store.json`) is generated from the handlers' `#[utoipa::path]` attributes.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use protocol::ids::{FoodId, HubId, PacketId};
use serde::{Deserialize, Serialize};
use service_kit::auth::{BearerToken, Caller};
use service_kit::http::{ApiError, AppJson, AppPath, ErrorBody, hub_field, text_field};
use service_kit::idempotency;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::repo::{self, Added, FoodStock, Hub, HubFood, Packet};

/// Most packets one request may add: inserting is one statement, and one request should not
/// hold the database for long (a million took longer than a client's patience on a small
/// machine; more packets take more requests). The documents say it as `maximum` of `packets`
/// and `count`.
pub const MAX_PACKETS_PER_REQUEST: i64 = 100_000;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "store-service",
        description = "The store: hubs (dark stores), foods, and the packets of each food at each \
                       hub. Hub 1, `default`, always exists. Every request needs a token: the \
                       catalogue (hubs, foods, their stock) is read with anyone's; the rest \
                       takes an operator's."
    ),
    modifiers(&BearerToken)
)]
struct ApiDoc;

/// The routes with their documentation, without state.
fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(create_hub, list_hubs))
        .routes(routes!(get_hub))
        .routes(routes!(create_food, list_foods))
        .routes(routes!(get_food))
        .routes(routes!(add_packets))
        .routes(routes!(get_packet))
}

/// The routes, with the pool as state.
pub fn routes(pool: PgPool) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(pool)
}

/// The service's whole OpenAPI document, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    service_kit::http::document(api().into_openapi())
}

/// A new food, with its first packets at one hub.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewFood {
    /// 1 to 200 characters after trimming, without NUL characters.
    #[schema(min_length = 1, max_length = 200, example = "Masala Dosa")]
    name: String,
    /// How many packets to add at the hub (none if absent).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100000, example = 100)]
    packets: i64,
    /// The hub (the default hub, 1, if absent).
    #[schema(minimum = 1, example = 1)]
    hub_id: Option<i64>,
}

/// Packets to add to a food at one hub.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPackets {
    /// How many.
    #[schema(minimum = 1, maximum = 100000, example = 50)]
    count: i64,
    /// The hub (the default hub, 1, if absent).
    #[schema(minimum = 1, example = 2)]
    hub_id: Option<i64>,
}

/// A new hub.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewHub {
    /// 1 to 200 characters after trimming, without NUL characters.
    #[schema(min_length = 1, max_length = 200, example = "Indiranagar")]
    name: String,
}

/// A hub with the stock of every food it has packets of.
#[derive(Debug, Serialize, ToSchema)]
struct HubStock {
    /// The hub.
    id: HubId,
    /// Its name.
    name: String,
    /// Each food with packets at the hub.
    foods: Vec<HubFood>,
}

/// A food just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct FoodCreated {
    /// The food.
    id: FoodId,
    /// Its name, trimmed.
    name: String,
}

/// Packets just added.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct PacketsAdded {
    /// The food.
    food_id: FoodId,
    /// The hub.
    hub_id: HubId,
    /// How many packets were added.
    added: i64,
}

/// Creates a hub.
#[utoipa::path(
    post,
    path = "/hubs",
    tag = "hubs",
    request_body = NewHub,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "The operator's key for this call, for retries: a call that repeats a \
                           key creates nothing and is answered as the first was",
            min_length = 1, max_length = 200, pattern = "^[!-~]+$")
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The hub", body = Hub,
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
        (status = 422, description = "A field is missing, unknown or invalid, or the `Idempotency-Key` was used for another call", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn create_hub(
    State(pool): State<PgPool>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<NewHub>,
) -> Result<(StatusCode, HeaderMap, Json<Hub>), ApiError> {
    caller.require_operator()?;
    let name = text_field("name", &body.name)?;
    let key = idempotency::key(&headers)?;
    let request = format!("POST /hubs {name:?}");
    let answer = idempotency::once(&pool, key.as_deref(), &request, async |tx| {
        let id = repo::create_hub(tx, name).await?;
        tracing::info!(hub_id = %id, name, "hub created");
        Ok(Hub {
            id,
            name: name.to_owned(),
        })
    })
    .await?;
    let (headers, hub) = answer.into_parts();
    Ok((StatusCode::CREATED, headers, Json(hub)))
}

/// Every hub.
#[utoipa::path(
    get,
    path = "/hubs",
    tag = "hubs",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every hub, by id", body = Vec<Hub>),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn list_hubs(
    _caller: Caller,
    State(pool): State<PgPool>,
) -> Result<Json<Vec<Hub>>, ApiError> {
    Ok(Json(repo::list_hubs(&pool).await?))
}

/// A hub and its stock.
#[utoipa::path(
    get,
    path = "/hubs/{id}",
    tag = "hubs",
    params(("id" = i64, Path, description = "The hub")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The hub with the stock of each food it has", body = HubStock),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such hub", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_hub(
    State(pool): State<PgPool>,
    _caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<HubStock>, ApiError> {
    let hub = repo::get_hub(&pool, HubId(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no hub {id}")))?;
    let foods = repo::hub_stock(&pool, hub.id).await?;
    Ok(Json(HubStock {
        id: hub.id,
        name: hub.name,
        foods,
    }))
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

/// Creates a food, with its first packets at one hub.
#[utoipa::path(
    post,
    path = "/foods",
    tag = "foods",
    request_body = NewFood,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "The operator's key for this call, for retries: a call that repeats a \
                           key creates nothing and is answered as the first was",
            min_length = 1, max_length = 200, pattern = "^[!-~]+$")
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The food", body = FoodCreated,
            headers(("idempotent-replayed" = String, description = "`true` when this is the \
                                                                 answer for an earlier call \
                                                                 with the same key"))),
        (status = 400, description = "The body is not readable JSON, or the `Idempotency-Key` \
                                      is malformed", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such hub", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid, or the `Idempotency-Key` was used for another call", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn create_food(
    State(pool): State<PgPool>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<NewFood>,
) -> Result<(StatusCode, HeaderMap, Json<FoodCreated>), ApiError> {
    caller.require_operator()?;
    let name = text_field("name", &body.name)?;
    check_count("packets", body.packets, 0)?;
    let hub = hub_field(body.hub_id)?;
    let key = idempotency::key(&headers)?;
    let request = format!(
        "POST /foods {name:?} at hub {hub}, {} packets",
        body.packets
    );
    let answer = idempotency::once(&pool, key.as_deref(), &request, async |tx| {
        let id = repo::create_food(tx, name, hub, body.packets)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no hub {hub}")))?;
        tracing::info!(food_id = %id, name, packets = body.packets, "food created");
        Ok(FoodCreated {
            id,
            name: name.to_owned(),
        })
    })
    .await?;
    let (headers, food) = answer.into_parts();
    Ok((StatusCode::CREATED, headers, Json(food)))
}

/// Adds packets of a food at one hub.
#[utoipa::path(
    post,
    path = "/foods/{id}/packets",
    tag = "foods",
    request_body = NewPackets,
    params(
        ("id" = i64, Path, description = "The food"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "The operator's key for this call, for retries: a call that repeats a \
                           key adds nothing and is answered as the first was",
            min_length = 1, max_length = 200, pattern = "^[!-~]+$")
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The packets were added", body = PacketsAdded,
            headers(("idempotent-replayed" = String, description = "`true` when this is the \
                                                                 answer for an earlier call \
                                                                 with the same key"))),
        (status = 400, description = "The id is not an integer, or the body is not readable JSON, or the `Idempotency-Key` is malformed", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such food, or no such hub", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid, or the `Idempotency-Key` was used for another call", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn add_packets(
    State(pool): State<PgPool>,
    caller: Caller,
    headers: HeaderMap,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<NewPackets>,
) -> Result<(StatusCode, HeaderMap, Json<PacketsAdded>), ApiError> {
    caller.require_operator()?;
    check_count("count", body.count, 1)?;
    let hub = hub_field(body.hub_id)?;
    let food = FoodId(id);
    let key = idempotency::key(&headers)?;
    let request = format!("POST /foods/{id}/packets {} at hub {hub}", body.count);
    let answer = idempotency::once(&pool, key.as_deref(), &request, async |tx| {
        match repo::add_packets(tx, food, hub, body.count).await? {
            Added::Done => {}
            Added::NoFood => return Err(ApiError::NotFound(format!("no food {id}"))),
            Added::NoHub => return Err(ApiError::NotFound(format!("no hub {hub}"))),
        }
        tracing::info!(food_id = %food, hub_id = %hub, count = body.count, "packets added");
        Ok(PacketsAdded {
            food_id: food,
            hub_id: hub,
            added: body.count,
        })
    })
    .await?;
    let (headers, added) = answer.into_parts();
    Ok((StatusCode::CREATED, headers, Json(added)))
}

/// Every food, with its packet counts over every hub.
#[utoipa::path(
    get,
    path = "/foods",
    tag = "foods",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every food, by id", body = Vec<FoodStock>),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn list_foods(
    _caller: Caller,
    State(pool): State<PgPool>,
) -> Result<Json<Vec<FoodStock>>, ApiError> {
    Ok(Json(repo::list_foods(&pool).await?))
}

/// A food, with its packet counts over every hub.
#[utoipa::path(
    get,
    path = "/foods/{id}",
    tag = "foods",
    params(("id" = i64, Path, description = "The food")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The food", body = FoodStock),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No such food", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_food(
    State(pool): State<PgPool>,
    _caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<FoodStock>, ApiError> {
    repo::get_food(&pool, FoodId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no food {id}")))
}

/// One packet: its food, hub, state and order.
#[utoipa::path(
    get,
    path = "/packets/{id}",
    tag = "packets",
    params(("id" = i64, Path, description = "The packet")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The packet", body = Packet),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such packet", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
async fn get_packet(
    State(pool): State<PgPool>,
    caller: Caller,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Packet>, ApiError> {
    caller.require_operator()?;
    repo::get_packet(&pool, PacketId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no packet {id}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_committed() {
        service_kit::testing::check_openapi_document(
            &super::openapi(),
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../docs/openapi/store.json"
            )),
            "store-service",
        );
    }

    #[test]
    fn openapi_limits_are_the_ones_the_handlers_apply() {
        let document = serde_json::to_value(super::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        let max = super::MAX_PACKETS_PER_REQUEST;
        assert_eq!(schemas["NewFood"]["properties"]["packets"]["maximum"], max);
        assert_eq!(schemas["NewPackets"]["properties"]["count"]["maximum"], max);
        let text = service_kit::http::MAX_TEXT;
        assert_eq!(schemas["NewFood"]["properties"]["name"]["maxLength"], text);
        assert_eq!(schemas["NewHub"]["properties"]["name"]["maxLength"], text);
    }

    #[test]
    fn openapi_every_change_needs_the_admin_token_when_one_is_set() {
        service_kit::testing::check_security(&super::openapi());
    }
}
