//! The SQL behind the store's HTTP API: hubs, foods and their packets at each hub. (The
//! transaction's SQL is in `inventory` and the shared participant crate.)

use protocol::ids::{FoodId, HubId, OrderId, PacketId};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

/// A food with its packet counts over every hub.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct FoodStock {
    /// The food.
    pub id: FoodId,
    /// Its name.
    pub name: String,
    /// Packets free to reserve.
    pub available: i64,
    /// Packets held by unfinished transactions (including expired ones not yet swept).
    pub reserved: i64,
    /// Packets given to orders.
    pub assigned: i64,
}

/// A hub.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Hub {
    /// The hub.
    pub id: HubId,
    /// Its name.
    pub name: String,
}

/// The stock of one food at one hub.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct HubFood {
    /// The food.
    pub food_id: FoodId,
    /// Packets free to reserve.
    pub available: i64,
    /// Packets held by unfinished transactions.
    pub reserved: i64,
    /// Packets given to orders.
    pub assigned: i64,
}

/// One packet.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Packet {
    /// The packet.
    pub id: PacketId,
    /// Its food.
    pub food_id: FoodId,
    /// Its hub.
    pub hub_id: HubId,
    /// `available`, `reserved` or `assigned`.
    pub state: String,
    /// The order it is reserved for or assigned to.
    pub order_id: Option<OrderId>,
}

/// Creates a hub (in the caller's transaction).
pub async fn create_hub(tx: &mut PgConnection, name: &str) -> Result<HubId, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO hubs (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(tx)
        .await
}

/// Every hub.
pub async fn list_hubs(pool: &PgPool) -> Result<Vec<Hub>, sqlx::Error> {
    sqlx::query_as("SELECT id, name FROM hubs ORDER BY id")
        .fetch_all(pool)
        .await
}

/// A hub, if it exists.
pub async fn get_hub(pool: &PgPool, id: HubId) -> Result<Option<Hub>, sqlx::Error> {
    sqlx::query_as("SELECT id, name FROM hubs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The stock of every food the hub has packets of, each count through the partial index of its
/// state within the (hub, food).
pub async fn hub_stock(pool: &PgPool, hub: HubId) -> Result<Vec<HubFood>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT s.food_id, {STOCK_COUNTS} FROM stock s WHERE s.hub_id = $1 ORDER BY s.food_id"
    )))
    .bind(hub)
    .fetch_all(pool)
    .await
}

/// What adding packets came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// Added.
    Done,
    /// No such food.
    NoFood,
    /// No such hub.
    NoHub,
}

/// Creates a food with `packets` packets at `hub`, in the caller's transaction. `None` if there
/// is no such hub.
pub async fn create_food(
    tx: &mut PgConnection,
    name: &str,
    hub: HubId,
    packets: i64,
) -> Result<Option<FoodId>, sqlx::Error> {
    if !hub_exists(tx, hub).await? {
        return Ok(None);
    }
    let id: FoodId = sqlx::query_scalar("INSERT INTO foods (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    if packets > 0 {
        insert_packets(tx, id, hub, packets).await?;
    }
    Ok(Some(id))
}

/// Adds `count` packets of a food at `hub`, in the caller's transaction.
pub async fn add_packets(
    tx: &mut PgConnection,
    food: FoodId,
    hub: HubId,
    count: i64,
) -> Result<Added, sqlx::Error> {
    // Lock the food row: the food cannot vanish between the check and the insert, and concurrent
    // additions update its packet ranges one at a time.
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM foods WHERE id = $1 FOR UPDATE")
        .bind(food)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(Added::NoFood);
    }
    if !hub_exists(tx, hub).await? {
        return Ok(Added::NoHub);
    }
    insert_packets(tx, food, hub, count).await?;
    Ok(Added::Done)
}

async fn hub_exists(tx: &mut sqlx::PgConnection, hub: HubId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM hubs WHERE id = $1 FOR SHARE")
        .bind(hub)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(found.is_some())
}

async fn insert_packets(
    tx: &mut sqlx::PgConnection,
    food: FoodId,
    hub: HubId,
    count: i64,
) -> Result<(), sqlx::Error> {
    if count >= ANALYZE_AFTER {
        // A bulk load (up to 100,000 rows, with their indexes, then `ANALYZE`) may take longer
        // than the statement timeout meant for the transaction's short statements: it gets its
        // own, for this transaction only.
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(BULK_STATEMENT_TIMEOUT)
            .execute(&mut *tx)
            .await?;
    }
    // The food's row is locked by the caller's transaction, so ranges of concurrent additions
    // cannot overwrite each other.
    sqlx::query(
        "WITH added AS (
             INSERT INTO packets (food_id, hub_id)
             SELECT $1, $2 FROM generate_series(1, $3) RETURNING id
         )
         INSERT INTO stock (hub_id, food_id, packets_lo, packets_hi)
         SELECT $2, $1, min(id), max(id) FROM added
         ON CONFLICT (hub_id, food_id) DO UPDATE SET
             packets_lo = least(stock.packets_lo, excluded.packets_lo),
             packets_hi = greatest(stock.packets_hi, excluded.packets_hi)",
    )
    .bind(food)
    .bind(hub)
    .bind(count)
    .execute(&mut *tx)
    .await?;
    if count >= ANALYZE_AFTER {
        // A bulk load makes the planner's statistics stale; refresh them now rather than wait
        // for autovacuum (which may be off), so that reserves keep their plan.
        sqlx::query("ANALYZE packets").execute(&mut *tx).await?;
    }
    Ok(())
}

/// Loads of at least this many rows refresh the table's statistics.
pub const ANALYZE_AFTER: i64 = 10_000;

/// The statement timeout of a bulk load (of at least [`ANALYZE_AFTER`] packets): inserting the
/// most one request may add takes seconds on a small machine.
const BULK_STATEMENT_TIMEOUT: &str = "60s";

/// The counts per state of the stock row `s` (one food at one hub), each through the partial
/// index of that state within the (hub, food).
const STOCK_COUNTS: &str = "
    (SELECT count(*) FROM packets p WHERE p.hub_id = s.hub_id AND p.food_id = s.food_id
        AND p.state = 'available') AS available,
    (SELECT count(*) FROM packets p WHERE p.hub_id = s.hub_id AND p.food_id = s.food_id
        AND p.state = 'reserved') AS reserved,
    (SELECT count(*) FROM packets p WHERE p.hub_id = s.hub_id AND p.food_id = s.food_id
        AND p.state = 'assigned') AS assigned";

/// Counts per state over every hub of the food ([`STOCK_COUNTS`] per stock row, summed).
static STOCK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT f.id, f.name,
                coalesce(sum(c.available), 0)::bigint AS available,
                coalesce(sum(c.reserved), 0)::bigint AS reserved,
                coalesce(sum(c.assigned), 0)::bigint AS assigned
         FROM foods f
         LEFT JOIN stock s ON s.food_id = f.id
         LEFT JOIN LATERAL (SELECT {STOCK_COUNTS}) c ON s.hub_id IS NOT NULL"
    )
});

/// Every food with its counts.
pub async fn list_foods(pool: &PgPool) -> Result<Vec<FoodStock>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} GROUP BY f.id, f.name ORDER BY f.id",
        *STOCK
    )))
    .fetch_all(pool)
    .await
}

/// One food with its counts.
pub async fn get_food(pool: &PgPool, id: FoodId) -> Result<Option<FoodStock>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} WHERE f.id = $1 GROUP BY f.id, f.name",
        *STOCK
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One packet.
pub async fn get_packet(pool: &PgPool, id: PacketId) -> Result<Option<Packet>, sqlx::Error> {
    sqlx::query_as("SELECT id, food_id, hub_id, state, order_id FROM packets WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
