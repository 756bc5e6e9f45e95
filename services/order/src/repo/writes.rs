//! The writes of the drivers, run with group commit: recording a new order and saving the order
//! that the machine computed. A group's inserts run as one statement, and so do its saves
//! ([`INSERT_SET`], [`SAVE_SET`]: the same statements over arrays, one element per write).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use service_kit::group_commit::{SetFuture, Write};
use sqlx::{AssertSqlSafe, PgConnection};

use super::{LeaseToken, NewOrder, OrderRow, sql_text};
use crate::machine::Order;
use crate::outbox::OutboxEvent;
use protocol::ids::TxnId;

/// A write of a driver: one statement, run with group commit.
#[derive(Debug)]
pub(crate) enum OrderWrite {
    Insert(Insert),
    Save(Save),
}

/// Records a new order.
#[derive(Debug)]
pub(crate) struct Insert {
    pub(crate) new: NewOrder,
    pub(crate) deadline: Duration,
    pub(crate) token: LeaseToken,
    pub(crate) lease: Duration,
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

/// [`INSERT`] for many orders: element `n` of each array is bound as the `$` parameters of the
/// `n`-th insert. Inserted in the order of the arrays.
static INSERT_SET: LazyLock<Arc<str>> = LazyLock::new(|| {
    sql_text(
        "INSERT INTO orders
             (id, customer_id, hub_id, lines, state, txn_id, deadline, lease_token, lease_until,
              traceparent, idempotency_key)
         SELECT v_id, v_customer_id, v_hub_id, v_lines, 'reserving', v_txn_id, now() + v_deadline,
                v_token, now() + v_deadline + v_lease, v_traceparent, v_key
         FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::uuid[], $5::interval[],
                     $6::uuid[], $7::interval[], $8::text[], $9::text[], $10::jsonb[])
              WITH ORDINALITY AS v(v_id, v_customer_id, v_hub_id, v_txn_id, v_deadline, v_token,
                                   v_lease, v_traceparent, v_key, v_lines, v_n)
         ORDER BY v_n
         ON CONFLICT DO NOTHING
         RETURNING {columns}",
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

/// The inserts of a set, as one statement.
fn insert_set<'c>(writes: &[&OrderWrite], conn: &'c mut PgConnection) -> SetFuture<'c, OrderWrite> {
    let inserts: Vec<&Insert> = writes
        .iter()
        .filter_map(|write| match write {
            OrderWrite::Insert(insert) => Some(insert),
            OrderWrite::Save(_) => None,
        })
        .collect();
    let ids = column(&inserts, |i| i.new.id);
    let query = sqlx::query_as::<_, OrderRow>(AssertSqlSafe(INSERT_SET.clone()))
        .bind(column(&ids, |id| id.0))
        .bind(column(&inserts, |i| i.new.customer_id.clone()))
        .bind(column(&inserts, |i| i.new.hub_id.0))
        .bind(column(&inserts, |i| i.new.txn_id.0))
        .bind(column(&inserts, |i| i.deadline))
        .bind(column(&inserts, |i| i.token.0))
        .bind(column(&inserts, |i| i.lease))
        .bind(column(&inserts, |i| i.new.traceparent.clone()))
        .bind(column(&inserts, |i| i.new.idempotency_key.clone()))
        .bind(column(&inserts, |i| sqlx::types::Json(i.new.lines.clone())));
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
                new:
                    NewOrder {
                        customer_id,
                        idempotency_key: Some(key),
                        ..
                    },
                ..
            }) => uuid::Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("{customer_id}\0{key}").as_bytes(),
            )
            .as_u128(),
            OrderWrite::Insert(insert) => insert.new.id.0.as_u128(),
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
            OrderWrite::Insert(Insert {
                new,
                deadline,
                token,
                lease,
            }) => Box::pin(
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
mod tests {
    use std::time::Duration;

    use protocol::command::PacketLine;
    use protocol::ids::{AgentId, EventId, FoodId, HubId, OrderId, PacketId, TxnId};
    use service_kit::group_commit::Write;
    use service_kit::testing::ScratchDatabase;

    use super::{Insert, OrderWrite, PgConnection, Save};
    use crate::machine::{NotPlacedReason, Order, OrderState};
    use crate::outbox::OutboxEvent;
    use crate::repo::{LeaseToken, NewOrder, OrderRow};

    const LEASE: Duration = Duration::from_secs(30);

    fn new_order(id: OrderId, customer: &str, key: Option<&str>) -> NewOrder {
        NewOrder {
            id,
            customer_id: customer.to_owned(),
            hub_id: HubId(1),
            lines: vec![PacketLine {
                food_id: FoodId(4),
                quantity: 2,
            }],
            txn_id: TxnId(uuid::Uuid::from_u128(id.0.as_u128() + 1)),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    fn insert(new: &NewOrder, token: LeaseToken) -> OrderWrite {
        OrderWrite::Insert(Insert {
            new: NewOrder {
                id: new.id,
                customer_id: new.customer_id.clone(),
                hub_id: new.hub_id,
                lines: new.lines.clone(),
                txn_id: new.txn_id,
                traceparent: new.traceparent.clone(),
                idempotency_key: new.idempotency_key.clone(),
            },
            deadline: Duration::from_secs(5),
            token,
            lease: LEASE,
        })
    }

    fn save(before: &Order, after: Order, token: LeaseToken, event: bool) -> OrderWrite {
        OrderWrite::Save(Save {
            before_state: before.state.as_str(),
            before_txn: before.txn_id,
            outbox: event.then(|| OutboxEvent {
                event_id: EventId(uuid::Uuid::from_u128(after.id.0.as_u128() ^ 1)),
                routing_key: "order.test",
                payload: serde_json::json!({ "order_id": after.id, "state": after.state.as_str() }),
            }),
            lease: (!after.state.is_final()).then_some(LEASE),
            after,
            token,
        })
    }

    /// What a set of writes returned, without the times the database chose.
    fn outcome(rows: &[Option<OrderRow>]) -> Vec<Option<String>> {
        rows.iter()
            .map(|row| {
                row.as_ref()
                    .map(|r| format!("{} {} {:?} {:?}", r.id, r.state, r.reason, r.lease_token))
            })
            .collect()
    }

    /// Both tables as text, without the times the database chose.
    async fn contents(conn: &mut PgConnection) -> (Vec<String>, Vec<String>) {
        let orders = sqlx::query_scalar(
            "SELECT (to_jsonb(o) - 'created_at' - 'lease_until'
                     - CASE WHEN state = 'reserving' THEN 'deadline' ELSE '' END)::text
                    || (lease_until IS NULL)::text
             FROM orders o ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let outbox = sqlx::query_scalar(
            "SELECT concat_ws(' ', event_id, order_id, routing_key, payload) FROM outbox ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        (orders, outbox)
    }

    /// Runs the same writes in a database of their own, one by one or as sets, and returns what
    /// they returned and left.
    async fn run(as_sets: bool) -> (Vec<Option<String>>, (Vec<String>, Vec<String>)) {
        let database = ScratchDatabase::create("order_writes_test").await.unwrap();
        crate::MIGRATOR.run(database.pool()).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        let id = |n: u128| OrderId(uuid::Uuid::from_u128(n << 64));
        let token = LeaseToken(uuid::Uuid::from_u128(77));
        let other_token = LeaseToken(uuid::Uuid::from_u128(78));

        // Three orders recorded before, one of them with a key.
        let mut recorded = Vec::new();
        for (n, key) in [(1, Some("k-1")), (2, None), (3, None)] {
            let write = insert(&new_order(id(n), "c-1", key), token);
            let row = write.run(&mut conn).await.unwrap().unwrap();
            recorded.push(row.read().unwrap().0);
        }
        // Times of the machine's own: the same in both databases.
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let decided = |order: &Order| Order {
            state: OrderState::Assigning,
            packet_ids: vec![PacketId(5), PacketId(6)],
            agent_id: Some(AgentId(3)),
            reserved_until: Some(at + chrono::Duration::seconds(30)),
            deadline: at + chrono::Duration::seconds(60),
            decided_at: Some(at),
            ..order.clone()
        };
        let timed_out = |order: &Order| Order {
            state: OrderState::NotPlaced,
            reason: Some(NotPlacedReason::Timeout),
            deadline: at,
            finished_at: Some(at),
            ..order.clone()
        };
        let writes = vec![
            // New orders: one without a key, one with a new key, one whose key is taken, and one
            // with the same key from another customer.
            insert(&new_order(id(4), "c-1", None), token),
            insert(&new_order(id(5), "c-1", Some("k-2")), token),
            insert(&new_order(id(6), "c-1", Some("k-1")), token),
            insert(&new_order(id(7), "c-2", Some("k-1")), token),
            // Saves: a decision with its event, one by a driver that lost its lease, and a final
            // state with its event (which ends the lease).
            save(&recorded[0], decided(&recorded[0]), token, true),
            save(&recorded[1], decided(&recorded[1]), other_token, true),
            save(&recorded[2], timed_out(&recorded[2]), token, true),
        ];
        let mut outputs = Vec::new();
        if as_sets {
            let inserts: Vec<&OrderWrite> = writes[..4].iter().collect();
            let saves: Vec<&OrderWrite> = writes[4..].iter().collect();
            outputs.extend(OrderWrite::run_set(&inserts, &mut conn).await.unwrap());
            outputs.extend(OrderWrite::run_set(&saves, &mut conn).await.unwrap());
        } else {
            for write in &writes {
                outputs.push(write.run(&mut conn).await.unwrap());
            }
        }
        let left = contents(&mut conn).await;
        drop(conn);
        database.drop_database().await.unwrap();
        (outcome(&outputs), left)
    }

    #[tokio::test]
    async fn inserts_and_saves_as_sets_return_and_leave_what_they_would_one_by_one() {
        let (one_by_one, left_one_by_one) = run(false).await;
        let (as_sets, left_as_sets) = run(true).await;
        assert_eq!(
            one_by_one.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, true, false, true, true, false, true],
            "{one_by_one:#?}"
        );
        assert_eq!(as_sets, one_by_one);
        assert_eq!(left_as_sets, left_one_by_one);
        assert_eq!(left_one_by_one.1.len(), 2, "{left_one_by_one:#?}");
    }
}
