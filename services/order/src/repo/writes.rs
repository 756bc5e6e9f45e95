//! The writes of the drivers, run with group commit: recording a new order at the end of its
//! phase 1, and saving the order that the machine computed. A group's inserts run as one
//! statement, and so do its saves ([`INSERT`], [`SAVE_SET`]: statements over arrays, one element
//! per write).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use service_kit::group_commit::{SetFuture, Write};
use sqlx::{AssertSqlSafe, PgConnection};

use super::{LeaseToken, OrderRow, sql_text};
use crate::machine::Order;
use crate::outbox::OutboxEvent;
use protocol::ids::TxnId;

/// A write of a driver: one statement, run with group commit.
#[derive(Debug)]
pub(crate) enum OrderWrite {
    Insert(Insert),
    Save(Save),
}

/// Records a new order for the first time, as the machine computed it at the end of phase 1:
/// its commit decision, or `not_placed` with its event.
#[derive(Debug)]
pub(crate) struct Insert {
    pub(crate) order: Order,
    pub(crate) idempotency_key: Option<String>,
    /// How long ago the order was asked for (`created_at` is the database's `now()` less this).
    pub(crate) age: Duration,
    /// `None`: final, so no driver holds it.
    pub(crate) lease: Option<Duration>,
    pub(crate) token: LeaseToken,
    pub(crate) outbox: Option<OutboxEvent>,
}

/// Saves the order that the machine computed, if it is still as its driver saw it.
#[derive(Debug)]
pub(crate) struct Save {
    pub(crate) before_state: &'static str,
    pub(crate) before_txn: TxnId,
    pub(crate) after: Order,
    /// `None` ends the lease (final orders).
    pub(crate) lease: Option<Duration>,
    pub(crate) token: LeaseToken,
    pub(crate) outbox: Option<OutboxEvent>,
}

/// The namespace of the name-based UUIDs that order keyed inserts in a group.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_2d0e_8a4b_4c5e_9f3a_7b2d_1e0c_5a94);

static SAVE: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "WITH saved AS (
             UPDATE orders SET
                 state = $4, reason = $5, txn_id = $6, attempt = $7, packet_ids = $8,
                 agent_id = $9, reserved_until = $10, deadline = $11, decided_at = $12,
                 finished_at = $13,
                 lease_token = CASE WHEN $14::interval IS NULL THEN NULL ELSE lease_token END,
                 lease_until = CASE WHEN $14::interval IS NULL THEN NULL
                                    ELSE greatest(lease_until, now() + $14) END
             WHERE id = $1 AND state = $2 AND txn_id = $3 AND lease_token = $15
             RETURNING {columns}
         ),
         event AS (
             INSERT INTO outbox (event_id, order_id, routing_key, payload)
             SELECT $16, id, $17, $18 FROM saved WHERE $16::uuid IS NOT NULL
         )
         SELECT {columns} FROM saved",
    )
});

/// Inserts orders: element `n` of each array is the `n`-th insert (one element for a write
/// alone), inserted in the order of the arrays; the packets as array literals (`{1,2}`), the
/// arrays being of different lengths. A final order's event goes to the outbox with it.
static INSERT: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "WITH v AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[],
                                  $6::text[], $7::uuid[], $8::int[], $9::text[], $10::bigint[],
                                  $11::timestamptz[], $12::timestamptz[], $13::interval[],
                                  $14::timestamptz[], $15::timestamptz[], $16::interval[],
                                  $17::uuid[], $18::text[], $19::text[], $20::uuid[],
                                  $21::text[], $22::jsonb[])
                  WITH ORDINALITY AS v(v_id, v_customer_id, v_hub_id, v_lines, v_state, v_reason,
                                       v_txn_id, v_attempt, v_packet_ids, v_agent_id,
                                       v_reserved_until, v_deadline, v_age, v_decided_at,
                                       v_finished_at, v_lease, v_token, v_traceparent, v_key,
                                       v_event_id, v_routing_key, v_payload, v_n)
         ),
         inserted AS (
             INSERT INTO orders
                 (id, customer_id, hub_id, lines, state, reason, txn_id, attempt, packet_ids,
                  agent_id, reserved_until, deadline, created_at, decided_at, finished_at,
                  lease_token, lease_until, traceparent, idempotency_key)
             SELECT v_id, v_customer_id, v_hub_id, v_lines, v_state, v_reason, v_txn_id,
                    v_attempt, v_packet_ids::bigint[], v_agent_id, v_reserved_until, v_deadline,
                    now() - v_age, v_decided_at, v_finished_at, v_token, now() + v_lease,
                    v_traceparent, v_key
             FROM v
             ORDER BY v_n
             ON CONFLICT DO NOTHING
             RETURNING {columns}
         ),
         event AS (
             INSERT INTO outbox (event_id, order_id, routing_key, payload)
             SELECT v_event_id, i.id, v_routing_key, v_payload
             FROM inserted i JOIN v ON v.v_id = i.id
             WHERE v_event_id IS NOT NULL
             ORDER BY v_n
         )
         SELECT {columns} FROM inserted",
    )
});

/// [`SAVE`] for many orders (each a different one): element `n` of each array is bound as the
/// `$` parameters of the `n`-th save; the packets as array literals (`{1,2}`), the arrays being
/// of different lengths. Events are added to the outbox in the order of the arrays.
static SAVE_SET: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "WITH v AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                                  $6::uuid[], $7::int[], $8::text[], $9::bigint[],
                                  $10::timestamptz[], $11::timestamptz[], $12::timestamptz[],
                                  $13::timestamptz[], $14::interval[], $15::uuid[], $16::uuid[],
                                  $17::text[], $18::jsonb[])
                  WITH ORDINALITY AS v(v_id, v_before_state, v_before_txn, v_state, v_reason,
                                       v_txn_id, v_attempt, v_packet_ids, v_agent_id,
                                       v_reserved_until, v_deadline, v_decided_at, v_finished_at,
                                       v_lease, v_token, v_event_id, v_routing_key, v_payload, v_n)
         ),
         saved AS (
             UPDATE orders o SET
                 state = v_state, reason = v_reason, txn_id = v_txn_id, attempt = v_attempt,
                 packet_ids = v_packet_ids::bigint[], agent_id = v_agent_id,
                 reserved_until = v_reserved_until, deadline = v_deadline,
                 decided_at = v_decided_at, finished_at = v_finished_at,
                 lease_token = CASE WHEN v_lease IS NULL THEN NULL ELSE o.lease_token END,
                 lease_until = CASE WHEN v_lease IS NULL THEN NULL
                                    ELSE greatest(o.lease_until, now() + v_lease) END
             FROM v
             WHERE o.id = v_id AND o.state = v_before_state AND o.txn_id = v_before_txn
               AND o.lease_token = v_token
             RETURNING {columns}, v_n, v_event_id, v_routing_key, v_payload
         ),
         event AS (
             INSERT INTO outbox (event_id, order_id, routing_key, payload)
             SELECT v_event_id, id, v_routing_key, v_payload FROM saved
             WHERE v_event_id IS NOT NULL
             ORDER BY v_n
         )
         SELECT {columns} FROM saved",
    )
});

/// The outputs of a set of writes that returned `rows`: each write's row (matched by order id),
/// or none.
fn matched(ids: &[protocol::ids::OrderId], rows: Vec<OrderRow>) -> Vec<Option<OrderRow>> {
    let mut rows: std::collections::HashMap<_, _> =
        rows.into_iter().map(|row| (row.id, row)).collect();
    ids.iter().map(|id| rows.remove(id)).collect()
}

/// One field of every write of a set, as the array bound for it.
fn column<T, U>(writes: &[T], field: impl Fn(&T) -> U) -> Vec<U> {
    writes.iter().map(field).collect()
}

/// The inserts of a set (or one alone), as one statement.
fn insert_set<'c>(writes: &[&OrderWrite], conn: &'c mut PgConnection) -> SetFuture<'c, OrderWrite> {
    let inserts: Vec<&Insert> = writes
        .iter()
        .filter_map(|write| match write {
            OrderWrite::Insert(insert) => Some(insert),
            OrderWrite::Save(_) => None,
        })
        .collect();
    let ids = column(&inserts, |i| i.order.id);
    let query = sqlx::query_as::<_, OrderRow>(AssertSqlSafe(INSERT.clone()))
        .bind(column(&ids, |id| id.0))
        .bind(column(&inserts, |i| i.order.customer_id.clone()))
        .bind(column(&inserts, |i| i.order.hub_id.0))
        .bind(column(&inserts, |i| {
            sqlx::types::Json(i.order.lines.clone())
        }))
        .bind(column(&inserts, |i| i.order.state.as_str()))
        .bind(column(&inserts, |i| i.order.reason.map(|r| r.as_str())))
        .bind(column(&inserts, |i| i.order.txn_id.0))
        .bind(column(&inserts, |i| i.order.attempt))
        .bind(column(&inserts, |i| {
            (!i.order.packet_ids.is_empty()).then(|| array_literal(&i.order.packet_ids))
        }))
        .bind(column(&inserts, |i| i.order.agent_id.map(|a| a.0)))
        .bind(column(&inserts, |i| i.order.reserved_until))
        .bind(column(&inserts, |i| i.order.deadline))
        .bind(column(&inserts, |i| i.age))
        .bind(column(&inserts, |i| i.order.decided_at))
        .bind(column(&inserts, |i| i.order.finished_at))
        .bind(column(&inserts, |i| i.lease))
        .bind(column(&inserts, |i| i.lease.map(|_| i.token.0)))
        .bind(column(&inserts, |i| i.order.traceparent.clone()))
        .bind(column(&inserts, |i| i.idempotency_key.clone()))
        .bind(column(&inserts, |i| {
            i.outbox.as_ref().map(|e| e.event_id.0)
        }))
        .bind(column(&inserts, |i| {
            i.outbox.as_ref().map(|e| e.routing_key)
        }))
        .bind(column(&inserts, |i| {
            i.outbox
                .as_ref()
                .map(|e| sqlx::types::Json(e.payload.clone()))
        }));
    Box::pin(async move { Ok(matched(&ids, query.fetch_all(conn).await?)) })
}

/// The saves of a set, as one statement.
fn save_set<'c>(writes: &[&OrderWrite], conn: &'c mut PgConnection) -> SetFuture<'c, OrderWrite> {
    let saves: Vec<&Save> = writes
        .iter()
        .filter_map(|write| match write {
            OrderWrite::Save(save) => Some(save),
            OrderWrite::Insert(_) => None,
        })
        .collect();
    let ids = column(&saves, |s| s.after.id);
    let query = sqlx::query_as::<_, OrderRow>(AssertSqlSafe(SAVE_SET.clone()))
        .bind(column(&ids, |id| id.0))
        .bind(column(&saves, |s| s.before_state))
        .bind(column(&saves, |s| s.before_txn.0))
        .bind(column(&saves, |s| s.after.state.as_str()))
        .bind(column(&saves, |s| s.after.reason.map(|r| r.as_str())))
        .bind(column(&saves, |s| s.after.txn_id.0))
        .bind(column(&saves, |s| s.after.attempt))
        .bind(column(&saves, |s| {
            (!s.after.packet_ids.is_empty()).then(|| array_literal(&s.after.packet_ids))
        }))
        .bind(column(&saves, |s| s.after.agent_id.map(|a| a.0)))
        .bind(column(&saves, |s| s.after.reserved_until))
        .bind(column(&saves, |s| s.after.deadline))
        .bind(column(&saves, |s| s.after.decided_at))
        .bind(column(&saves, |s| s.after.finished_at))
        .bind(column(&saves, |s| s.lease))
        .bind(column(&saves, |s| s.token.0))
        .bind(column(&saves, |s| s.outbox.as_ref().map(|e| e.event_id.0)))
        .bind(column(&saves, |s| s.outbox.as_ref().map(|e| e.routing_key)))
        .bind(column(&saves, |s| {
            s.outbox
                .as_ref()
                .map(|e| sqlx::types::Json(e.payload.clone()))
        }));
    Box::pin(async move { Ok(matched(&ids, query.fetch_all(conn).await?)) })
}

/// `{1,2,3}`: packet ids as a PostgreSQL array literal.
fn array_literal(ids: &[protocol::ids::PacketId]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
    format!("{{{}}}", ids.join(","))
}

impl Write for OrderWrite {
    type Output = Option<OrderRow>;

    fn order_key(&self) -> u128 {
        match self {
            // A keyed insert waits for an uncommitted insert of the same key in another group:
            // ordered by the key (the same in every process), two groups never wait crosswise.
            OrderWrite::Insert(Insert {
                order,
                idempotency_key: Some(key),
                ..
            }) => uuid::Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("{}\0{key}", order.customer_id).as_bytes(),
            )
            .as_u128(),
            OrderWrite::Insert(insert) => insert.order.id.0.as_u128(),
            OrderWrite::Save(save) => save.after.id.0.as_u128(),
        }
    }

    fn set_kind(&self) -> Option<u8> {
        Some(match self {
            OrderWrite::Insert(_) => 0,
            OrderWrite::Save(_) => 1,
        })
    }

    fn run_set<'c>(writes: &'c [&'c Self], conn: &'c mut PgConnection) -> SetFuture<'c, Self> {
        match writes.first() {
            Some(OrderWrite::Insert(_)) => insert_set(writes, conn),
            _ => save_set(writes, conn),
        }
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Option<OrderRow>, sqlx::Error>> + Send + 'c>> {
        match self {
            OrderWrite::Insert(_) => {
                let inserted = insert_set(&[self], conn);
                Box::pin(async move { Ok(inserted.await?.pop().flatten()) })
            }
            OrderWrite::Save(Save {
                before_state,
                before_txn,
                after,
                lease,
                token,
                outbox,
            }) => Box::pin(
                sqlx::query_as(AssertSqlSafe(SAVE.clone()))
                    .bind(after.id)
                    .bind(*before_state)
                    .bind(*before_txn)
                    .bind(after.state.as_str())
                    .bind(after.reason.map(|r| r.as_str()))
                    .bind(after.txn_id)
                    .bind(after.attempt)
                    .bind((!after.packet_ids.is_empty()).then(|| after.packet_ids.clone()))
                    .bind(after.agent_id)
                    .bind(after.reserved_until)
                    .bind(after.deadline)
                    .bind(after.decided_at)
                    .bind(after.finished_at)
                    .bind(*lease)
                    .bind(*token)
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

#[cfg(test)]
mod tests;
