//! The writes of the drivers, run with group commit: recording a new order and saving the order
//! that the machine computed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use service_kit::group_commit::Write;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{LeaseToken, NewOrder, OrderRow, sql_text};
use crate::machine::Order;
use crate::outbox::OutboxEvent;
use protocol::ids::TxnId;

/// A write of a driver: one statement, run with group commit.
#[derive(Debug)]
pub(crate) enum OrderWrite {
    Insert {
        new: NewOrder,
        deadline: Duration,
        token: LeaseToken,
        lease: Duration,
    },
    Save {
        before_state: &'static str,
        before_txn: TxnId,
        after: Order,
        /// `None` ends the lease (final orders).
        lease: Option<Duration>,
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
             (id, customer_id, hub_id, lines, state, txn_id, deadline, lease_token, lease_until,
              traceparent, idempotency_key)
         VALUES ($1, $2, $3, $10, 'reserving', $4, now() + $5, $6, now() + $5 + $7, $8, $9)
         ON CONFLICT DO NOTHING
         RETURNING {columns}",
    )
});

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

impl Write for OrderWrite {
    type Output = Option<OrderRow>;

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
            OrderWrite::Save { after, .. } => after.id.0.as_u128(),
        }
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Option<OrderRow>, sqlx::Error>> + Send + 'c>> {
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
                    .bind(new.hub_id)
                    .bind(new.txn_id)
                    .bind(*deadline)
                    .bind(*token)
                    .bind(*lease)
                    .bind(new.traceparent.clone())
                    .bind(new.idempotency_key.clone())
                    .bind(sqlx::types::Json(new.lines.clone()))
                    .fetch_optional(conn),
            ),
            OrderWrite::Save {
                before_state,
                before_txn,
                after,
                lease,
                token,
                outbox,
            } => Box::pin(
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
