//! The SQL behind delivery's HTTP API: agents and their hubs, duty, and the progress of a
//! delivery. (The transaction's SQL is in `inventory` and the shared participant crate.)

use chrono::{DateTime, Utc};
use protocol::envelope::TxnEnvelope;
use protocol::ids::{AgentId, HubId, OrderId, TxnId};
use protocol::progress::DeliveryProgress;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

/// Agent counts by state.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Summary {
    /// Free to reserve.
    pub available: i64,
    /// Held by unfinished transactions (including expired ones not yet swept).
    pub reserved: i64,
    /// Given to orders not yet picked up.
    pub assigned: i64,
    /// Out with an order they picked up.
    pub delivering: i64,
    /// Off duty: never reserved.
    pub off_duty: i64,
}

/// One agent.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Agent {
    /// The agent.
    pub id: AgentId,
    /// Its name (`agent-<id>` unless one was given).
    pub name: String,
    /// Its hub.
    pub hub_id: HubId,
    /// `available`, `reserved`, `assigned`, `delivering` or `off_duty`.
    pub state: String,
    /// The order it is reserved for, assigned to or delivering.
    pub order_id: Option<OrderId>,
}

/// Creates `count` agents at `hub`, named from `names` where given. Returns their ids.
pub async fn create_agents(
    tx: &mut PgConnection,
    hub: HubId,
    count: i64,
    names: Option<&[String]>,
) -> Result<Vec<AgentId>, sqlx::Error> {
    // The hub's row must exist for the agents' foreign key; its range of ids is widened below,
    // by an update that locks the row (concurrent additions take turns, and widening commutes).
    sqlx::query(
        "INSERT INTO hubs (id, agents_lo, agents_hi) VALUES ($1, 0, 0) ON CONFLICT (id) DO NOTHING",
    )
    .bind(hub)
    .execute(&mut *tx)
    .await?;
    let ids: Vec<AgentId> = match names {
        Some(names) => {
            sqlx::query_scalar(
                "INSERT INTO agents (name, hub_id) SELECT unnest($1::text[]), $2 RETURNING id",
            )
            .bind(names)
            .bind(hub)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO agents (name, hub_id) SELECT NULL, $2 FROM generate_series(1, $1)
                 RETURNING id",
            )
            .bind(count)
            .bind(hub)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    sqlx::query(
        "UPDATE hubs SET
             agents_lo = CASE WHEN agents_lo = 0 THEN $2 ELSE least(agents_lo, $2) END,
             agents_hi = greatest(agents_hi, $3)
         WHERE id = $1",
    )
    .bind(hub)
    .bind(ids.iter().map(|a| a.0).min().unwrap_or(0))
    .bind(ids.iter().map(|a| a.0).max().unwrap_or(0))
    .execute(&mut *tx)
    .await?;
    Ok(ids)
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

/// Counts by state, of one hub or of all.
pub async fn summary(pool: &PgPool, hub: Option<HubId>) -> Result<Summary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'available') AS available,
                count(*) FILTER (WHERE state = 'reserved') AS reserved,
                count(*) FILTER (WHERE state = 'assigned') AS assigned,
                count(*) FILTER (WHERE state = 'delivering') AS delivering,
                count(*) FILTER (WHERE state = 'off_duty') AS off_duty
         FROM agents WHERE $1::bigint IS NULL OR hub_id = $1",
    )
    .bind(hub)
    .fetch_one(pool)
    .await
}

/// One agent.
pub async fn get_agent(pool: &PgPool, id: AgentId) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, coalesce(name, 'agent-' || id) AS name, hub_id, state, order_id
         FROM agents WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Puts an agent off duty (`off = true`) or back on duty. Only an agent that holds nothing goes
/// off duty; only an off-duty agent comes back. `None` if there is no such agent; else the agent
/// after the change, or as it is if the change is not allowed (the caller tells which from its
/// state).
pub async fn set_duty(pool: &PgPool, id: AgentId, off: bool) -> Result<Option<Agent>, sqlx::Error> {
    let (from, to) = if off {
        ("available", "off_duty")
    } else {
        ("off_duty", "available")
    };
    sqlx::query("UPDATE agents SET state = $3, updated_at = now() WHERE id = $1 AND state = $2")
        .bind(id)
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
    get_agent(pool, id).await
}

/// A delivery: the order, its agent, and its progress.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Delivery {
    /// The order.
    pub order_id: OrderId,
    /// Its agent.
    pub agent_id: AgentId,
    /// The agent's hub.
    pub hub_id: HubId,
    /// When the agent picked it up.
    pub picked_up_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    txn_id: TxnId,
}

/// What a report of progress came to.
#[derive(Debug)]
pub enum Reported {
    /// Recorded now (with its message to the coordinator).
    Now(Delivery),
    /// Recorded before: the delivery as it is.
    Before(Delivery),
    /// No agent is assigned to the order (it was never placed here, was cancelled, or its
    /// agent is only reserved).
    NotAssigned,
    /// An agent is assigned to the order, but delivery has not seen its `order.placed` event
    /// yet: the order may still fail to be placed. A rider asks again.
    NotPlacedYet,
    /// `delivered` for an order that was not picked up.
    NotPickedUp,
    /// The order is another agent's (the report came from a rider who does not hold it).
    NotYours,
}

const DELIVERY: &str = "order_id, agent_id, hub_id, picked_up_at, delivered_at, txn_id";

/// The delivery of `order`, if it was picked up.
pub async fn get_delivery(pool: &PgPool, order: OrderId) -> Result<Option<Delivery>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    delivery(&mut conn, order).await
}

async fn delivery(
    conn: &mut PgConnection,
    order: OrderId,
) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM deliveries WHERE order_id = $1"
    )))
    .bind(order)
    .fetch_optional(&mut *conn)
    .await
}

/// The agent that holds `order`: the one assigned to it or delivering it, or the one that
/// delivered it. `None` if no agent holds it (not placed here, cancelled, or not yet assigned).
/// An order's agent never changes once assigned, so the answer stays true for the order's
/// reports. Both lookups are by index.
pub async fn holder(pool: &PgPool, order: OrderId) -> Result<Option<AgentId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT agent_id FROM deliveries WHERE order_id = $1
         UNION ALL
         SELECT id FROM agents WHERE order_id = $1 AND state IN ('assigned', 'delivering')
         LIMIT 1",
    )
    .bind(order)
    .fetch_optional(pool)
    .await
}

/// The agent assigned to `order` picked it up: from now on a cancel of the order is refused.
/// Only an order whose placement delivery has seen ([`mark_placed`]) can be picked up. One
/// statement: the agent goes from `assigned` to `delivering` (its row lock orders it against a
/// cancel or a compensation: whichever comes first wins), the delivery is recorded, and so is its
/// report. With `by`, only if that agent holds the order (the rider's own report).
pub async fn pick_up(
    pool: &PgPool,
    order: OrderId,
    by: Option<AgentId>,
) -> Result<Reported, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let picked: Option<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH agent AS (
             UPDATE agents SET state = 'delivering', updated_at = now()
             WHERE order_id = $1 AND state = 'assigned' AND placed_order_id = $1
               AND ($2::bigint IS NULL OR id = $2)
             RETURNING id, hub_id, txn_id
         )
         INSERT INTO deliveries (order_id, agent_id, hub_id, txn_id, picked_up_at)
         SELECT $1, id, hub_id, txn_id, now() FROM agent
         RETURNING {DELIVERY}"
    )))
    .bind(order)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(picked) = picked else {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        if let Some(before) = delivery(&mut conn, order).await? {
            return Ok(mine(before, by));
        }
        let assigned: Option<AgentId> =
            sqlx::query_scalar("SELECT id FROM agents WHERE order_id = $1 AND state = 'assigned'")
                .bind(order)
                .fetch_optional(&mut *conn)
                .await?;
        if assigned.is_some() && by.is_some() && assigned != by {
            return Ok(Reported::NotYours);
        }
        let assigned = assigned.is_some();
        return Ok(if assigned {
            Reported::NotPlacedYet
        } else {
            Reported::NotAssigned
        });
    };
    let report = DeliveryProgress::PickedUp {
        agent_id: picked.agent_id,
        at: picked.picked_up_at,
    };
    write_report(&mut tx, &picked, report).await?;
    tx.commit().await?;
    Ok(Reported::Now(picked))
}

/// The coordinator's `order.placed` event for `order` arrived: its agent may now leave with it.
/// Marks the agent that holds the order, if one still does (an event that arrives after a cancel
/// freed the agent marks nothing). Safe to repeat. Returns whether an agent was marked.
pub async fn mark_placed(pool: &PgPool, order: OrderId) -> Result<bool, sqlx::Error> {
    let marked = sqlx::query(
        "UPDATE agents SET placed_order_id = $1
         WHERE order_id = $1 AND state IN ('assigned', 'delivering')",
    )
    .bind(order)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(marked > 0)
}

/// A delivery recorded before, answered to the report of `by`: its own, or not theirs.
fn mine(before: Delivery, by: Option<AgentId>) -> Reported {
    match by {
        Some(by) if by != before.agent_id => Reported::NotYours,
        _ => Reported::Before(before),
    }
}

/// The order is delivered: the agent is free for other orders in the same transaction, and the
/// report is written with it. With `by`, only if that agent delivered it.
pub async fn deliver(
    pool: &PgPool,
    order: OrderId,
    by: Option<AgentId>,
) -> Result<Reported, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let delivered: Option<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH done AS (
             UPDATE deliveries SET delivered_at = now()
             WHERE order_id = $1 AND delivered_at IS NULL AND ($2::bigint IS NULL OR agent_id = $2)
             RETURNING {DELIVERY}
         ),
         freed AS (
             UPDATE agents a
             SET state = 'available', txn_id = NULL, order_id = NULL, updated_at = now()
             FROM done
             WHERE a.id = done.agent_id AND a.state = 'delivering' AND a.order_id = $1
         )
         SELECT {DELIVERY} FROM done"
    )))
    .bind(order)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(delivered) = delivered else {
        let before = delivery(&mut tx, order).await?;
        tx.rollback().await?;
        return Ok(match before {
            Some(before) => mine(before, by),
            None => Reported::NotPickedUp,
        });
    };
    let report = DeliveryProgress::Delivered {
        agent_id: delivered.agent_id,
        at: delivered.delivered_at.unwrap_or_else(Utc::now),
    };
    write_report(&mut tx, &delivered, report).await?;
    tx.commit().await?;
    Ok(Reported::Now(delivered))
}

/// Writes the report of `delivery` to the outbox, in the caller's transaction.
async fn write_report(
    tx: &mut PgConnection,
    delivery: &Delivery,
    report: DeliveryProgress,
) -> Result<(), sqlx::Error> {
    let routing_key = report.routing_key();
    let envelope = TxnEnvelope::txn(delivery.order_id, delivery.txn_id, report);
    let payload =
        serde_json::to_value(&envelope).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, routing_key, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.message_id.0)
    .bind(delivery.order_id)
    .bind(routing_key)
    .bind(sqlx::types::Json(payload))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
