//! All SQL of the order service.

use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::ids::{AgentId, EventId, FoodId, OrderId, PacketId, TxnId};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use service_kit::group_commit::{GroupCommit, Write};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio_util::task::TaskTracker;

use crate::state::{Event, IllegalEvent, NotPlacedReason, OrderState, next};

/// A lease token: proves that the holder may change an order.
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

/// An order as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    /// The order.
    pub id: OrderId,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub food_id: FoodId,
    /// Where it is.
    pub state: OrderState,
    /// Why it is (being) not placed.
    pub reason: Option<NotPlacedReason>,
    /// The current transaction attempt.
    pub txn_id: TxnId,
    /// Attempts so far.
    pub attempt: i32,
    /// The packet (from the commit decision on).
    pub packet_id: Option<PacketId>,
    /// The agent (from the commit decision on).
    pub agent_id: Option<AgentId>,
    /// The earlier reservation expiry (from the commit decision on).
    pub reserved_until: Option<DateTime<Utc>>,
    /// When it should be final at the latest.
    pub deadline: DateTime<Utc>,
    /// The lease token of its driver.
    pub lease_token: Option<LeaseToken>,
    /// Lease expiry.
    pub lease_until: Option<DateTime<Utc>>,
    /// When received.
    pub created_at: DateTime<Utc>,
    /// When it became final.
    pub finished_at: Option<DateTime<Utc>>,
    /// The W3C trace it belongs to.
    pub traceparent: Option<String>,
}

/// An order row as read.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRecord {
    id: OrderId,
    customer_id: String,
    food_id: FoodId,
    state: String,
    reason: Option<String>,
    txn_id: TxnId,
    attempt: i32,
    packet_id: Option<PacketId>,
    agent_id: Option<AgentId>,
    reserved_until: Option<DateTime<Utc>>,
    deadline: DateTime<Utc>,
    lease_token: Option<LeaseToken>,
    lease_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    traceparent: Option<String>,
}

impl TryFrom<OrderRecord> for Order {
    type Error = sqlx::Error;

    fn try_from(r: OrderRecord) -> Result<Self, Self::Error> {
        let decode = |e: crate::state::UnknownState| sqlx::Error::Decode(Box::new(e));
        Ok(Order {
            id: r.id,
            customer_id: r.customer_id,
            food_id: r.food_id,
            state: r.state.parse().map_err(decode)?,
            reason: r.reason.map(|s| s.parse()).transpose().map_err(decode)?,
            txn_id: r.txn_id,
            attempt: r.attempt,
            packet_id: r.packet_id,
            agent_id: r.agent_id,
            reserved_until: r.reserved_until,
            deadline: r.deadline,
            lease_token: r.lease_token,
            lease_until: r.lease_until,
            created_at: r.created_at,
            finished_at: r.finished_at,
            traceparent: r.traceparent,
        })
    }
}

const COLUMNS: &str = "id, customer_id, food_id, state, reason, txn_id, attempt, packet_id, \
                       agent_id, reserved_until, deadline, lease_token, lease_until, created_at, \
                       finished_at, traceparent";

fn sql(template: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(template.replace("{columns}", COLUMNS))
}

fn sql_text(template: &str) -> Arc<str> {
    template.replace("{columns}", COLUMNS).into()
}

fn one(record: Option<OrderRecord>) -> Result<Option<Order>, sqlx::Error> {
    record.map(Order::try_from).transpose()
}

/// A new order, before it is recorded.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// Its id.
    pub id: OrderId,
    /// Who orders.
    pub customer_id: String,
    /// What.
    pub food_id: FoodId,
    /// The first transaction attempt.
    pub txn_id: TxnId,
    /// The W3C trace of the request.
    pub traceparent: String,
    /// The client's key for this order (unique per customer), if it sent one.
    pub idempotency_key: Option<String>,
}

/// What recording a new order came to.
#[derive(Clone, Debug)]
pub enum Inserted {
    /// Recorded now, leased to the caller.
    New(Order),
    /// The customer already has an order with this idempotency key: that order, as recorded.
    Existing(Order),
}

/// The order database, with group commit for the writes of the drivers.
#[derive(Clone, Debug)]
pub struct Orders {
    pool: PgPool,
    writes: GroupCommit<OrderWrite>,
}

/// Group-commit workers of the coordinator's writes.
const WRITERS: usize = 4;

impl Orders {
    /// The order database; its writers run on `tracker`.
    pub fn new(pool: PgPool, tracker: &TaskTracker) -> Self {
        Self {
            writes: GroupCommit::start(pool.clone(), WRITERS, tracker),
            pool,
        }
    }

    /// The pool, for reads and for the writes of recovery.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records a new order in phase 1 with a deadline `deadline` from now, leased to `token`
    /// until its deadline plus `lease`; or finds the customer's order with the same idempotency
    /// key.
    pub async fn insert(
        &self,
        new: &NewOrder,
        deadline: Duration,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Inserted, sqlx::Error> {
        let write = OrderWrite::Insert {
            new: new.clone(),
            deadline,
            token,
            lease,
        };
        if let Some(record) = self.writes.run(write).await? {
            return Order::try_from(record).map(Inserted::New);
        }
        // A conflict. Either on the id: a group whose commit looked failed had in fact committed,
        // and the insert ran again alone (the order is ours if it carries our lease token). Or on
        // the idempotency key: the customer's earlier request recorded the order.
        if let Some(order) = load(&self.pool, new.id).await?
            && order.lease_token == Some(token)
        {
            return Ok(Inserted::New(order));
        }
        if let Some(key) = &new.idempotency_key
            && let Some(order) = load_by_key(&self.pool, &new.customer_id, key).await?
            && order.id != new.id
        {
            return Ok(Inserted::Existing(order));
        }
        Err(sqlx::Error::RowNotFound)
    }

    /// Records `event` for `order`, if the order is still as the caller saw it (state and
    /// transaction) and the caller still holds the lease `token`. A transition to a non-final
    /// state extends the lease to at least `lease` from now (never shortens it); a final one ends
    /// it and must carry its outbox event, written in the same statement (so in the same
    /// transaction).
    pub async fn transition(
        &self,
        order: &Order,
        event: Event,
        changes: Changes,
        token: LeaseToken,
        lease: Duration,
        outbox: Option<&OutboxEvent>,
    ) -> Result<Order, TransitionError> {
        let to = next(order.state, event)?;
        debug_assert_eq!(
            to.is_final(),
            outbox.is_some(),
            "final transitions carry their event"
        );
        let write = OrderWrite::Transition {
            id: order.id,
            from: order.state,
            txn_id: order.txn_id,
            to,
            changes,
            lease,
            token,
            outbox: outbox.cloned(),
        };
        match one(self.writes.run(write).await?)? {
            Some(order) => Ok(order),
            None => {
                let current = load(&self.pool, order.id)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?;
                Err(TransitionError::Lost(Box::new(current)))
            }
        }
    }
}

/// A write of a driver: one statement, run with group commit.
#[derive(Debug)]
pub(crate) enum OrderWrite {
    Insert {
        new: NewOrder,
        deadline: Duration,
        token: LeaseToken,
        lease: Duration,
    },
    Transition {
        id: OrderId,
        from: OrderState,
        txn_id: TxnId,
        to: OrderState,
        changes: Changes,
        lease: Duration,
        token: LeaseToken,
        outbox: Option<OutboxEvent>,
    },
}

/// The namespace of the name-based UUIDs that order keyed inserts in a group.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_2d0e_8a4b_4c5e_9f3a_7b2d_1e0c_5a94);

static INSERT: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "INSERT INTO orders
             (id, customer_id, food_id, state, txn_id, deadline, lease_token, lease_until, traceparent,
              idempotency_key)
         VALUES ($1, $2, $3, 'reserving', $4, now() + $5, $6, now() + $5 + $7, $8, $9)
         ON CONFLICT DO NOTHING
         RETURNING {columns}",
    )
});

static TRANSITION: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "WITH moved AS (
             UPDATE orders SET
                 state = $4,
                 reason = coalesce($5, reason),
                 txn_id = coalesce($6, txn_id),
                 attempt = attempt + CASE WHEN $6::uuid IS NULL THEN 0 ELSE 1 END,
                 packet_id = coalesce($7, packet_id),
                 agent_id = coalesce($8, agent_id),
                 reserved_until = coalesce($9, reserved_until),
                 deadline = coalesce($10, deadline),
                 decided_at = CASE WHEN $4 = 'assigning' THEN now() ELSE decided_at END,
                 finished_at = $13,
                 lease_token = CASE WHEN $4 IN ('placed', 'not_placed') THEN NULL ELSE lease_token END,
                 lease_until = CASE WHEN $4 IN ('placed', 'not_placed') THEN NULL
                                    ELSE greatest(lease_until, now() + $11) END
             WHERE id = $1 AND state = $2 AND txn_id = $3 AND lease_token = $12
             RETURNING {columns}
         ),
         event AS (
             INSERT INTO outbox (event_id, order_id, routing_key, payload)
             SELECT $14, id, $15, $16 FROM moved WHERE $14::uuid IS NOT NULL
         )
         SELECT {columns} FROM moved",
    )
});

impl Write for OrderWrite {
    type Output = Option<OrderRecord>;

    fn order_key(&self) -> u128 {
        match self {
            // A keyed insert waits for an uncommitted insert of the same key in another group:
            // ordered by the key (the same in every process), two groups never wait crosswise.
            OrderWrite::Insert {
                new:
                    NewOrder {
                        customer_id,
                        idempotency_key: Some(key),
                        ..
                    },
                ..
            } => uuid::Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("{customer_id}\0{key}").as_bytes(),
            )
            .as_u128(),
            OrderWrite::Insert { new, .. } => new.id.0.as_u128(),
            OrderWrite::Transition { id, .. } => id.0.as_u128(),
        }
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Option<OrderRecord>, sqlx::Error>> + Send + 'c>> {
        match self {
            OrderWrite::Insert {
                new,
                deadline,
                token,
                lease,
            } => Box::pin(
                sqlx::query_as(AssertSqlSafe(INSERT.clone()))
                    .bind(new.id)
                    .bind(new.customer_id.clone())
                    .bind(new.food_id)
                    .bind(new.txn_id)
                    .bind(*deadline)
                    .bind(*token)
                    .bind(*lease)
                    .bind(new.traceparent.clone())
                    .bind(new.idempotency_key.clone())
                    .fetch_optional(conn),
            ),
            OrderWrite::Transition {
                id,
                from,
                txn_id,
                to,
                changes,
                lease,
                token,
                outbox,
            } => Box::pin(
                sqlx::query_as(AssertSqlSafe(TRANSITION.clone()))
                    .bind(*id)
                    .bind(from.as_str())
                    .bind(*txn_id)
                    .bind(to.as_str())
                    .bind(changes.reason.map(NotPlacedReason::as_str))
                    .bind(changes.txn_id)
                    .bind(changes.packet_id)
                    .bind(changes.agent_id)
                    .bind(changes.reserved_until)
                    .bind(changes.deadline)
                    .bind(*lease)
                    .bind(*token)
                    .bind(outbox.as_ref().map(|e| e.finished_at))
                    .bind(outbox.as_ref().map(|e| e.event_id))
                    .bind(outbox.as_ref().map(|e| e.routing_key))
                    .bind(
                        outbox
                            .as_ref()
                            .map(|e| sqlx::types::Json(e.payload.clone())),
                    )
                    .fetch_optional(conn),
            ),
        }
    }
}

/// The order, if it exists.
pub async fn load(pool: &PgPool, id: OrderId) -> Result<Option<Order>, sqlx::Error> {
    one(
        sqlx::query_as(sql("SELECT {columns} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The customer's order with idempotency key `key`, if there is one.
pub async fn load_by_key(
    pool: &PgPool,
    customer_id: &str,
    key: &str,
) -> Result<Option<Order>, sqlx::Error> {
    one(sqlx::query_as(sql(
        "SELECT {columns} FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
    ))
    .bind(customer_id)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// What a transition changes besides the state.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// A new transaction attempt (retry).
    pub txn_id: Option<TxnId>,
    /// The reserved packet (commit decision).
    pub packet_id: Option<PacketId>,
    /// The reserved agent (commit decision).
    pub agent_id: Option<AgentId>,
    /// The earlier reservation expiry (commit decision).
    pub reserved_until: Option<DateTime<Utc>>,
    /// A new deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Why not placed.
    pub reason: Option<NotPlacedReason>,
}

/// Why a transition was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// The event is illegal in the order's state (a bug).
    #[error(transparent)]
    Illegal(#[from] IllegalEvent),
    /// The order changed under us: another driver holds the lease, or it moved on. Carries the
    /// order as it is now.
    #[error("order changed by another driver")]
    Lost(Box<Order>),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An order event to write to the outbox with a final transition.
#[derive(Clone, Debug)]
pub struct OutboxEvent {
    /// The event's id.
    pub event_id: EventId,
    /// `order.placed` or `order.not_placed`.
    pub routing_key: &'static str,
    /// The event, as published.
    pub payload: serde_json::Value,
    /// When the order became final (also written to the order).
    pub finished_at: DateTime<Utc>,
}

/// An event waiting in the outbox.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingEvent {
    /// Row id.
    pub id: i64,
    /// The event's id.
    pub event_id: EventId,
    /// Its order.
    pub order_id: OrderId,
    /// Its routing key.
    pub routing_key: String,
    /// The event.
    pub payload: sqlx::types::Json<serde_json::Value>,
}

/// Locks up to `limit` unsent events, oldest first, skipping those another relay holds.
pub async fn lock_unsent(
    tx: &mut sqlx::PgConnection,
    limit: i64,
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, order_id, routing_key, payload FROM outbox
         WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Marks events sent.
pub async fn mark_sent(tx: &mut sqlx::PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Deletes up to `limit` events sent more than `retention` ago.
pub async fn prune_sent(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM outbox WHERE id = ANY (ARRAY(
             SELECT id FROM outbox WHERE sent_at < now() - $1 ORDER BY sent_at LIMIT $2))",
    )
    .bind(retention)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Extends the lease of `token` on `order` by `lease`. False if the lease was lost.
pub async fn renew_lease(
    pool: &PgPool,
    order: OrderId,
    token: LeaseToken,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE orders SET lease_until = now() + $3
         WHERE id = $1 AND lease_token = $2 AND state IN ('reserving', 'assigning', 'compensating')",
    )
    .bind(order)
    .bind(token)
    .bind(lease)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Claims those of `orders` that are unfinished and whose lease has run out, each with a fresh
/// token (returned with it). One statement for a whole timer batch: nearly all of its orders are
/// long finished and are skipped by the primary-key lookup.
pub async fn claim(
    pool: &PgPool,
    orders: &[OrderId],
    lease: Duration,
) -> Result<Vec<(Order, LeaseToken)>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = orders.iter().map(|o| o.0).collect();
    let records: Vec<OrderRecord> = sqlx::query_as(sql(
        "UPDATE orders SET lease_token = gen_random_uuid(), lease_until = now() + $2
         WHERE id = ANY($1) AND state IN ('reserving', 'assigning', 'compensating')
           AND (lease_until IS NULL OR lease_until < now())
         RETURNING {columns}",
    ))
    .bind(&ids)
    .bind(lease)
    .fetch_all(pool)
    .await?;
    with_tokens(records)
}

fn with_tokens(records: Vec<OrderRecord>) -> Result<Vec<(Order, LeaseToken)>, sqlx::Error> {
    records
        .into_iter()
        .map(|r| {
            let order = Order::try_from(r)?;
            let token = order.lease_token.ok_or(sqlx::Error::RowNotFound)?;
            Ok((order, token))
        })
        .collect()
}

/// Claims up to `limit` unfinished orders whose lease has run out, each with its own fresh token
/// (returned with it). Several coordinators may run this at once: `SKIP LOCKED` keeps them apart.
pub async fn claim_expired(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(Order, LeaseToken)>, sqlx::Error> {
    let records: Vec<OrderRecord> = sqlx::query_as(sql(
        "UPDATE orders o SET lease_token = gen_random_uuid(), lease_until = now() + $1
         FROM (
             SELECT id AS expired_id FROM orders
             WHERE state IN ('reserving', 'assigning', 'compensating') AND lease_until < now()
             ORDER BY lease_until
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ) expired
         WHERE o.id = expired.expired_id
         RETURNING {columns}",
    ))
    .bind(lease)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    with_tokens(records)
}
