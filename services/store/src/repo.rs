//! The SQL behind the store's HTTP API. (The transaction's SQL is in `inventory` and the
//! shared participant crate.)

use protocol::ids::{FoodId, OrderId, PacketId};
use serde::Serialize;
use sqlx::PgPool;

/// A food with its packet counts.
#[derive(Debug, Serialize, sqlx::FromRow)]
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

/// One packet.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Packet {
    /// The packet.
    pub id: PacketId,
    /// Its food.
    pub food_id: FoodId,
    /// `available`, `reserved` or `assigned`.
    pub state: String,
    /// The order it is reserved for or assigned to.
    pub order_id: Option<OrderId>,
}

/// Creates a food with `packets` packets, in one transaction.
pub async fn create_food(pool: &PgPool, name: &str, packets: i64) -> Result<FoodId, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: FoodId = sqlx::query_scalar("INSERT INTO foods (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    insert_packets(&mut tx, id, packets).await?;
    tx.commit().await?;
    Ok(id)
}

/// Adds `count` packets to a food. `None` if there is no such food.
pub async fn add_packets(
    pool: &PgPool,
    food: FoodId,
    count: i64,
) -> Result<Option<()>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Lock the food row: the food cannot vanish between the check and the insert, and concurrent
    // additions update its packet range one at a time.
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM foods WHERE id = $1 FOR UPDATE")
        .bind(food)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    insert_packets(&mut tx, food, count).await?;
    tx.commit().await?;
    Ok(Some(()))
}

async fn insert_packets(
    tx: &mut sqlx::PgConnection,
    food: FoodId,
    count: i64,
) -> Result<(), sqlx::Error> {
    // The food's row is locked by the caller's transaction, so ranges of concurrent additions
    // cannot overwrite each other.
    sqlx::query(
        "WITH added AS (
             INSERT INTO packets (food_id) SELECT $1 FROM generate_series(1, $2) RETURNING id
         )
         UPDATE foods SET
             packets_lo = least(packets_lo, (SELECT min(id) FROM added)),
             packets_hi = greatest(packets_hi, (SELECT max(id) FROM added))
         WHERE id = $1",
    )
    .bind(food)
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

/// Counts per state, each through the partial index of that state (no scan of other foods).
const STOCK: &str = "SELECT f.id, f.name,
        (SELECT count(*) FROM packets p WHERE p.food_id = f.id AND p.state = 'available') AS available,
        (SELECT count(*) FROM packets p WHERE p.food_id = f.id AND p.state = 'reserved') AS reserved,
        (SELECT count(*) FROM packets p WHERE p.food_id = f.id AND p.state = 'assigned') AS assigned
 FROM foods f";

/// Every food with its counts.
pub async fn list_foods(pool: &PgPool) -> Result<Vec<FoodStock>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{STOCK} ORDER BY f.id")))
        .fetch_all(pool)
        .await
}

/// One food with its counts.
pub async fn get_food(pool: &PgPool, id: FoodId) -> Result<Option<FoodStock>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{STOCK} WHERE f.id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One packet.
pub async fn get_packet(pool: &PgPool, id: PacketId) -> Result<Option<Packet>, sqlx::Error> {
    sqlx::query_as("SELECT id, food_id, state, order_id FROM packets WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
