//! The order table: writing the transitions that the machine computed, leases and claims. The
//! statements carry no rules of the order's life: [`Orders::record`] writes the row, its event
//! and its lease as `machine::transition` made them, if the order is still as its writer saw it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::command::PacketLine;
use protocol::ids::{AgentId, HubId, OrderId, PacketId, TxnId};
use service_kit::group_commit::GroupCommit;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use crate::machine::{Lease, Order, OrderState, Transition, UnknownName, Writer};
use crate::outbox::OutboxEvent;

pub mod hubs;
mod leases;
mod writes;

pub use leases::{
    LeaseToken, Unfinished, claim, claim_expired, end_lease, renew_lease, take, unfinished,
};
use writes::{Insert, OrderWrite, Save};

/// Why the order table did not answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A row holds a name the code does not know (a newer version wrote it, or a bug).
    #[error("order {id} cannot be read: {name}")]
    Unreadable {
        /// The order.
        id: OrderId,
        /// The unknown name.
        name: UnknownName,
    },
    /// A new order's insert conflicted, yet neither its id nor its idempotency key finds it.
    #[error("order {0} was neither recorded nor found")]
    NotRecorded(OrderId),
    /// The order that was saved is gone.
    #[error("order {0} is gone")]
    Gone(OrderId),
}

impl service_kit::db::Transient for RepoError {
    fn is_transient(&self) -> bool {
        matches!(self, RepoError::Db(err) if service_kit::db::is_transient(err))
    }
}

/// A row of the order table as read: the order and its driver's lease.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: OrderId,
    customer_id: String,
    hub_id: HubId,
    lines: sqlx::types::Json<Vec<PacketLine>>,
    state: String,
    reason: Option<String>,
    txn_id: TxnId,
    attempt: i32,
    packet_ids: Option<Vec<PacketId>>,
    agent_id: Option<AgentId>,
    reserved_until: Option<DateTime<Utc>>,
    deadline: DateTime<Utc>,
    lease_token: Option<LeaseToken>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    traceparent: Option<String>,
}

impl OrderRow {
    /// The order, and the token of the lease on it (none once final).
    fn read(self) -> Result<(Order, Option<LeaseToken>), RepoError> {
        let id = self.id;
        let unreadable = |name| RepoError::Unreadable { id, name };
        let order = Order {
            id,
            customer_id: self.customer_id,
            hub_id: self.hub_id,
            lines: self.lines.0,
            state: self.state.parse().map_err(unreadable)?,
            reason: self
                .reason
                .map(|s| s.parse())
                .transpose()
                .map_err(unreadable)?,
            txn_id: self.txn_id,
            attempt: self.attempt,
            packet_ids: self.packet_ids.unwrap_or_default(),
            agent_id: self.agent_id,
            reserved_until: self.reserved_until,
            deadline: self.deadline,
            created_at: self.created_at,
            decided_at: self.decided_at,
            finished_at: self.finished_at,
            traceparent: self.traceparent,
        };
        Ok((order, self.lease_token))
    }
}

const COLUMNS: &str = "id, customer_id, hub_id, lines, state, reason, txn_id, attempt, packet_ids, \
                       agent_id, reserved_until, deadline, lease_token, created_at, decided_at, \
                       finished_at, traceparent";

fn sql(template: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(template.replace("{columns}", COLUMNS))
}

fn sql_text(template: &str) -> Arc<str> {
    template.replace("{columns}", COLUMNS).into()
}

fn order_of(row: Option<OrderRow>) -> Result<Option<Order>, RepoError> {
    Ok(row.map(OrderRow::read).transpose()?.map(|(order, _)| order))
}

/// A new order as asked for, before its phase 1.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// Its id.
    pub id: OrderId,
    /// Who orders.
    pub customer_id: String,
    /// The dark store.
    pub hub_id: HubId,
    /// What: each food at most once.
    pub lines: Vec<PacketLine>,
    /// The first transaction attempt.
    pub txn_id: TxnId,
    /// The W3C trace of the request.
    pub traceparent: String,
    /// The client's key for this order (unique per customer), if it sent one.
    pub idempotency_key: Option<String>,
}

impl NewOrder {
    /// The order as phase 1 starts, in `reserving`, with its deadline `deadline` from now (by
    /// this process's clock). Phase 1 runs on it in memory; it is recorded once phase 1 ends.
    pub fn draft(&self, deadline: Duration) -> Order {
        let now = service_kit::fault::now();
        Order {
            id: self.id,
            customer_id: self.customer_id.clone(),
            hub_id: self.hub_id,
            lines: self.lines.clone(),
            state: OrderState::Reserving,
            reason: None,
            txn_id: self.txn_id,
            attempt: 1,
            packet_ids: Vec::new(),
            agent_id: None,
            reserved_until: None,
            deadline: now + deadline,
            created_at: now,
            decided_at: None,
            finished_at: None,
            traceparent: Some(self.traceparent.clone()),
        }
    }
}

/// What writing a transition came to.
#[derive(Clone, Debug)]
pub enum Recorded {
    /// Written: the order as recorded now.
    Written(Order),
    /// Not written, a first record only: the customer already has an order with this
    /// idempotency key; that order, as recorded.
    KeyTaken(Order),
    /// Not written: the order is no longer as the writer saw it, or another driver holds its
    /// lease; the order as it is now, when it was read.
    Changed(Option<Box<Order>>),
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
    /// The order database; its writers run on `tracker`, and give up on a call to the database
    /// after `bound`.
    pub fn new(pool: PgPool, bound: Duration, tracker: &TaskTracker) -> Self {
        Self {
            writes: GroupCommit::start(pool.clone(), WRITERS, bound, tracker),
            pool,
        }
    }

    /// The pool, for reads and for the writes of recovery.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes transition `t`, the one way an order's record changes: the order the machine
    /// computed, with the event it publishes (to the outbox, in the same statement) and the lease
    /// it says, held or taken for `token` for at least `lease` from now. The statement is the
    /// writer's ([`Writer`]):
    /// - a first record inserts the order, unless the customer's `idempotency_key` is taken;
    /// - a driver's save presents its lease token and the state and transaction it saw;
    /// - a report or a customer's cancel presents the state and transaction it saw (a cancel
    ///   also that no driver holds the order).
    ///
    /// Writing twice is harmless: a write whose acknowledgement was lost is found written.
    pub async fn record(
        &self,
        t: &Transition,
        token: LeaseToken,
        lease: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<Recorded, RepoError> {
        let outbox = crate::outbox::event_of(t);
        debug_assert!(
            !t.after.state.is_final() || outbox.is_some() || t.writer == Writer::Report,
            "final orders carry their event"
        );
        let leased = match t.lease {
            Lease::Hold | Lease::Take => Some(whole_micros(lease)),
            Lease::End => None,
        };
        match t.writer {
            Writer::First => {
                let age = (t.at - t.before.created_at).to_std().unwrap_or_default();
                let write = OrderWrite::Insert(Insert {
                    order: t.after.clone(),
                    idempotency_key: idempotency_key.map(str::to_owned),
                    age: whole_micros(age),
                    lease: leased,
                    token,
                    outbox,
                });
                self.insert(&t.after, idempotency_key, write).await
            }
            Writer::Driver => {
                let write = OrderWrite::Save(Save {
                    before_state: t.before.state.as_str(),
                    before_txn: t.before.txn_id,
                    after: t.after.clone(),
                    lease: leased,
                    token,
                    outbox,
                });
                self.save(&t.before, &t.after, token, write).await
            }
            Writer::Report | Writer::Customer => {
                let lease = leased.map(|lease| (token, lease));
                let written = advance(&self.pool, t, lease, outbox.as_ref()).await?;
                Ok(written.map_or(Recorded::Changed(None), Recorded::Written))
            }
        }
    }

    /// A first record: recorded now, or found recorded already (by id: an earlier attempt
    /// committed although its connection failed), or the key is taken.
    async fn insert(
        &self,
        order: &Order,
        idempotency_key: Option<&str>,
        write: OrderWrite,
    ) -> Result<Recorded, RepoError> {
        if let Some(order) = order_of(self.writes.run(write).await?)? {
            return Ok(Recorded::Written(order));
        }
        // A conflict. Either on the id: a group whose commit looked failed had in fact committed,
        // and the insert ran again alone (ids are drawn by the coordinator that takes the
        // request, so a row with this id is ours). Or on the idempotency key: another request
        // of the customer's recorded its order first.
        if let Some(found) = load(&self.pool, order.id).await? {
            return Ok(Recorded::Written(found));
        }
        if let Some(key) = idempotency_key
            && let Some(found) = load_by_key(&self.pool, &order.customer_id, key).await?
        {
            return Ok(Recorded::KeyTaken(found));
        }
        Err(RepoError::NotRecorded(order.id))
    }

    /// A driver's save: written, or found written already (under our lease, or final), or the
    /// order changed under us.
    async fn save(
        &self,
        before: &Order,
        after: &Order,
        token: LeaseToken,
        write: OrderWrite,
    ) -> Result<Recorded, RepoError> {
        if let Some(saved) = order_of(self.writes.run(write).await?)? {
            return Ok(Recorded::Written(saved));
        }
        let (current, holder) = load_leased(&self.pool, before.id)
            .await?
            .ok_or(RepoError::Gone(before.id))?;
        let saved_already = current.state == after.state
            && current.txn_id == after.txn_id
            && (holder == Some(token) || after.state.is_final());
        if saved_already {
            Ok(Recorded::Written(current))
        } else {
            Ok(Recorded::Changed(Some(Box::new(current))))
        }
    }
}

/// `d` to whole microseconds (the precision of PostgreSQL's `interval`).
fn whole_micros(d: Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Moves an order on without a driver's lease: a report from delivery, or the start of a cancel
/// (which takes the lease `token` for `lease`, for the driver of the cancel). Only the state
/// changes, if the order is still in the state and transaction the writer saw and holds no
/// lease, or it is ended (a report on a cancelling order: delivery's answer to the cancel is
/// known from it). The event, if any, is written in the same statement. `None` if the order was
/// not as expected.
async fn advance(
    pool: &PgPool,
    t: &Transition,
    lease: Option<(LeaseToken, Duration)>,
    outbox: Option<&OutboxEvent>,
) -> Result<Option<Order>, RepoError> {
    let statement = "WITH saved AS (
             UPDATE orders SET
                 state = $3,
                 lease_token = $4,
                 lease_until = CASE WHEN $4::uuid IS NULL THEN NULL ELSE now() + $5 END,
                 lease_holder = CASE WHEN $4::uuid IS NULL THEN lease_holder ELSE {holder} END
             WHERE id = $1 AND state = $2 AND txn_id = $9
               AND (lease_token IS NULL OR $4::uuid IS NULL)
             RETURNING {columns}
         ),
         event AS (
             INSERT INTO outbox (event_id, order_id, routing_key, payload)
             SELECT $6, id, $7, $8 FROM saved WHERE $6::uuid IS NOT NULL
         )
         SELECT {columns} FROM saved"
        .replace("{holder}", leases::HOLDER);
    let row: Option<OrderRow> = sqlx::query_as(sql(&statement))
        .bind(t.before.id)
        .bind(t.before.state.as_str())
        .bind(t.after.state.as_str())
        .bind(lease.map(|(token, _)| token))
        .bind(lease.map(|(_, lease)| lease))
        .bind(outbox.map(|e| e.event_id))
        .bind(outbox.map(|e| e.routing_key))
        .bind(outbox.map(|e| sqlx::types::Json(e.payload.clone())))
        .bind(t.before.txn_id)
        .fetch_optional(pool)
        .await?;
    order_of(row)
}

/// The order, if it exists.
pub async fn load(pool: &PgPool, id: OrderId) -> Result<Option<Order>, RepoError> {
    Ok(load_leased(pool, id).await?.map(|(order, _)| order))
}

/// The order and the token of its lease, if it exists.
async fn load_leased(
    pool: &PgPool,
    id: OrderId,
) -> Result<Option<(Order, Option<LeaseToken>)>, RepoError> {
    let row: Option<OrderRow> = sqlx::query_as(sql("SELECT {columns} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(OrderRow::read).transpose()
}

/// The customer's order with idempotency key `key`, if there is one.
pub async fn load_by_key(
    pool: &PgPool,
    customer_id: &str,
    key: &str,
) -> Result<Option<Order>, RepoError> {
    order_of(
        sqlx::query_as(sql(
            "SELECT {columns} FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
        ))
        .bind(customer_id)
        .bind(key)
        .fetch_optional(pool)
        .await?,
    )
}

/// The statement of [`oldest_unfinished`]: for each unfinished state, the age in seconds of its
/// oldest order (NULL if none). Each state is a literal, so that the planner answers each
/// `min(created_at)` from the first entry of the partial index `orders_unfinished_by_age`,
/// however many finished orders the table holds.
pub fn oldest_unfinished_sql() -> String {
    OrderState::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| {
            format!(
                "SELECT '{s}'::text AS state, \
                 extract(epoch FROM now() - (SELECT min(created_at) FROM orders WHERE state = '{s}'))::float8 AS age"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The age of the oldest order of each unfinished state that has one (by the database's clock,
/// which stamped `created_at`).
pub async fn oldest_unfinished(pool: &PgPool) -> Result<Vec<(OrderState, Duration)>, RepoError> {
    let rows: Vec<(String, Option<f64>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(oldest_unfinished_sql()))
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(state, age)| {
            let state = OrderState::ALL.iter().find(|s| s.as_str() == state)?;
            let age = Duration::try_from_secs_f64(age?.max(0.0)).unwrap_or_default();
            Some((*state, age))
        })
        .collect())
}

#[cfg(test)]
mod tests;
