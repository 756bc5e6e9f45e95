//! What an operator reads about a hub's orders in flight: being placed, placed, picked up or
//! being cancelled. Both reads use the index `orders_in_flight_by_hub` and touch only the
//! orders in flight at the hub (as many as its agents, plus those being placed), never the
//! finished ones.

use chrono::{DateTime, Utc};
use protocol::ids::{HubId, OrderId};
use sqlx::{AssertSqlSafe, PgPool};

use super::RepoError;

/// The states of an order in flight.
const IN_FLIGHT: &str =
    "('reserving', 'assigning', 'compensating', 'placed', 'picked_up', 'cancelling')";

/// An order in flight.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InFlight {
    /// The order.
    pub id: OrderId,
    /// Its state.
    pub state: String,
    /// Its agent, from the commit decision on.
    pub agent_id: Option<i64>,
    /// When it was received.
    pub created_at: DateTime<Utc>,
}

/// How many orders are in flight at `hub`, by state.
pub async fn in_flight_counts(pool: &PgPool, hub: HubId) -> Result<Vec<(String, i64)>, RepoError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT state, count(*) FROM orders
         WHERE hub_id = $1 AND state IN {IN_FLIGHT}
         GROUP BY state ORDER BY state"
    )))
    .bind(hub.0)
    .fetch_all(pool)
    .await?)
}

/// Up to `limit` orders in flight at `hub`, oldest first.
pub async fn in_flight(pool: &PgPool, hub: HubId, limit: i64) -> Result<Vec<InFlight>, RepoError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, state, agent_id, created_at FROM orders
         WHERE hub_id = $1 AND state IN {IN_FLIGHT}
         ORDER BY created_at LIMIT $2"
    )))
    .bind(hub.0)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
