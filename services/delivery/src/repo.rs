//! The SQL behind delivery's HTTP API. (The transaction's SQL is in `inventory` and the shared
//! participant crate.)

use protocol::ids::{AgentId, OrderId};
use serde::Serialize;
use sqlx::PgPool;

/// Agent counts by state.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Summary {
    /// Free to reserve.
    pub available: i64,
    /// Held by unfinished transactions (including expired ones not yet swept).
    pub reserved: i64,
    /// Given to orders.
    pub assigned: i64,
}

/// One agent.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Agent {
    /// The agent.
    pub id: AgentId,
    /// Its name (`agent-<id>` unless one was given).
    pub name: String,
    /// `available`, `reserved` or `assigned`.
    pub state: String,
    /// The order it is reserved for or assigned to.
    pub order_id: Option<OrderId>,
}

/// Creates `count` agents, named from `names` where given. Returns their ids.
pub async fn create_agents(
    pool: &PgPool,
    count: i64,
    names: Option<&[String]>,
) -> Result<Vec<AgentId>, sqlx::Error> {
    match names {
        Some(names) => {
            sqlx::query_scalar("INSERT INTO agents (name) SELECT unnest($1::text[]) RETURNING id")
                .bind(names)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO agents (name) SELECT NULL FROM generate_series(1, $1) RETURNING id",
            )
            .bind(count)
            .fetch_all(pool)
            .await
        }
    }
}

/// Loads of at least this many rows refresh the table's statistics.
const ANALYZE_AFTER: i64 = 10_000;

/// Refreshes the planner's statistics after a bulk load (rather than wait for autovacuum, which
/// may be off), so that reserves keep their plan.
pub async fn analyze_after_load(pool: &PgPool, rows: i64) -> Result<(), sqlx::Error> {
    if rows >= ANALYZE_AFTER {
        sqlx::query("ANALYZE agents").execute(pool).await?;
    }
    Ok(())
}

/// Counts by state.
pub async fn summary(pool: &PgPool) -> Result<Summary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'available') AS available,
                count(*) FILTER (WHERE state = 'reserved') AS reserved,
                count(*) FILTER (WHERE state = 'assigned') AS assigned
         FROM agents",
    )
    .fetch_one(pool)
    .await
}

/// One agent.
pub async fn get_agent(pool: &PgPool, id: AgentId) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, coalesce(name, 'agent-' || id) AS name, state, order_id
         FROM agents WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}
