//! Leases: which driver may change an order, renewed while it drives, claimed by another
//! coordinator once run out.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};

use super::{OrderRow, RepoError, sql};
use crate::machine::{Order, OrderState};
use protocol::ids::OrderId;

/// A lease token: proves that the holder may change an order (a fencing token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct LeaseToken(pub uuid::Uuid);

impl LeaseToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for LeaseToken {
    fn default() -> Self {
        Self::new()
    }
}

/// The states of an unfinished order, as the statements below name them.
pub(super) const UNFINISHED: &str = "('reserving', 'assigning', 'compensating', 'cancelling')";

/// Who takes a lease: this coordinator, as its database connections name it.
pub(super) const HOLDER: &str = "current_setting('application_name')";

/// Extends the lease of `token` on `order` by `lease`. False if the lease was lost.
pub async fn renew_lease(
    pool: &PgPool,
    order: OrderId,
    token: LeaseToken,
    lease: Duration,
) -> Result<bool, RepoError> {
    Ok(sqlx::query(AssertSqlSafe(format!(
        "UPDATE orders SET lease_until = now() + $3
         WHERE id = $1 AND lease_token = $2 AND state IN {UNFINISHED}"
    )))
    .bind(order)
    .bind(token)
    .bind(lease)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Ends the lease of `token` on `order` now (the order stays as it is, for another driver).
pub async fn end_lease(pool: &PgPool, order: OrderId, token: LeaseToken) -> Result<(), RepoError> {
    sqlx::query("UPDATE orders SET lease_until = now() WHERE id = $1 AND lease_token = $2")
        .bind(order)
        .bind(token)
        .execute(pool)
        .await?;
    Ok(())
}

/// Claims up to `limit` of `orders` that are unfinished and whose lease has run out, each with a
/// fresh token (returned with it). One statement for a whole timer message: nearly all of its orders are
/// long finished and are skipped by the primary-key lookup.
pub async fn claim(
    pool: &PgPool,
    orders: &[OrderId],
    lease: Duration,
    limit: i64,
) -> Result<Vec<(Order, LeaseToken)>, RepoError> {
    let ids: Vec<uuid::Uuid> = orders.iter().map(|o| o.0).collect();
    let rows: Vec<OrderRow> = sqlx::query_as(sql(&format!(
        "UPDATE orders o SET lease_token = gen_random_uuid(), lease_until = now() + $2,
             lease_holder = {HOLDER}
         FROM (
             SELECT id AS expired_id FROM orders
             WHERE id = ANY($1) AND state IN {UNFINISHED}
               AND (lease_until IS NULL OR lease_until < now())
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ) expired
         WHERE o.id = expired.expired_id
         RETURNING {{columns}}"
    )))
    .bind(&ids)
    .bind(lease)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    claimed(rows)
}

/// Claims up to `limit` unfinished orders whose lease has run out, each with its own fresh token
/// (returned with it). Several coordinators may run this at once: `SKIP LOCKED` keeps them apart.
pub async fn claim_expired(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(Order, LeaseToken)>, RepoError> {
    let rows: Vec<OrderRow> = sqlx::query_as(sql(&format!(
        "UPDATE orders o SET lease_token = gen_random_uuid(), lease_until = now() + $1,
             lease_holder = {HOLDER}
         FROM (
             SELECT id AS expired_id FROM orders
             WHERE state IN {UNFINISHED} AND lease_until < now()
             ORDER BY lease_until
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ) expired
         WHERE o.id = expired.expired_id
         RETURNING {{columns}}"
    )))
    .bind(lease)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    claimed(rows)
}

/// Takes the lease on `order` now, with a fresh token, whoever holds it and whether or not it
/// ran out, if the order is in one of `states` (each unfinished): an operator's "drive it now" or
/// "abort it". A driver that held it is fenced off: its next renewal or save fails.
pub async fn take(
    pool: &PgPool,
    order: OrderId,
    states: &[OrderState],
    lease: Duration,
) -> Result<Option<(Order, LeaseToken)>, RepoError> {
    debug_assert!(states.iter().all(|s| !s.is_final()));
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let row: Option<OrderRow> = sqlx::query_as(sql(&format!(
        "UPDATE orders SET lease_token = gen_random_uuid(), lease_until = now() + $3,
             lease_holder = {HOLDER}
         WHERE id = $1 AND state = ANY($2)
         RETURNING {{columns}}"
    )))
    .bind(order)
    .bind(&states)
    .bind(lease)
    .fetch_optional(pool)
    .await?;
    Ok(claimed(row.into_iter().collect())?.pop())
}

/// An unfinished order as an operator sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Unfinished {
    /// The order.
    pub id: OrderId,
    /// Its state (unfinished).
    pub state: String,
    /// Its hub.
    pub hub_id: i64,
    /// Why it is being not placed (compensating).
    pub reason: Option<String>,
    /// Transaction attempts so far.
    pub attempt: i32,
    /// When it was received.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it should be final at the latest.
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// The coordinator holding its lease (`order-service <instance>`), if known.
    pub lease_holder: Option<String>,
    /// Until when the lease holds; past: any coordinator's recovery may claim it.
    pub lease_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Up to `limit` unfinished orders received more than `older_than` ago, oldest first, in
/// `state` if given (an index on the unfinished ones: finished orders are not read).
pub async fn unfinished(
    pool: &PgPool,
    state: Option<OrderState>,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<Unfinished>, RepoError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, state, hub_id, reason, attempt, created_at, deadline, lease_holder, lease_until
         FROM orders
         WHERE state IN {UNFINISHED} AND ($1::text IS NULL OR state = $1)
           AND created_at < now() - $2
         ORDER BY created_at
         LIMIT $3"
    )))
    .bind(state.map(|s| s.as_str()))
    .bind(older_than)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Claimed rows: each has the fresh token the claim gave it.
fn claimed(rows: Vec<OrderRow>) -> Result<Vec<(Order, LeaseToken)>, RepoError> {
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        if let (order, Some(token)) = row.read()? {
            orders.push((order, token));
        }
    }
    Ok(orders)
}
