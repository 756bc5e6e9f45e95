use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::command::PacketLine;
use protocol::ids::{AgentId, EventId, FoodId, HubId, OrderId, PacketId, TxnId};
use service_kit::group_commit::Write;
use service_kit::testing::ScratchDatabase;

use super::{Insert, OrderWrite, PgConnection, Save};
use crate::machine::{NotPlacedReason, Order, OrderState};
use crate::outbox::OutboxEvent;
use crate::repo::{LeaseToken, OrderRow};

const LEASE: Duration = Duration::from_secs(30);

/// Times of the machine's own: the same in both databases.
fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn event(order: &Order) -> OutboxEvent {
    OutboxEvent {
        event_id: EventId(uuid::Uuid::from_u128(order.id.0.as_u128() ^ 1)),
        routing_key: "order.test",
        payload: serde_json::json!({ "order_id": order.id, "state": order.state.as_str() }),
    }
}

/// An order as phase 1 ends: decided, or not placed.
fn ended(id: OrderId, customer: &str, decided: bool) -> Order {
    let at = at();
    Order {
        id,
        customer_id: customer.to_owned(),
        hub_id: HubId(1),
        lines: vec![PacketLine {
            food_id: FoodId(4),
            quantity: 2,
        }],
        state: if decided {
            OrderState::Assigning
        } else {
            OrderState::NotPlaced
        },
        reason: (!decided).then_some(NotPlacedReason::FoodUnavailable),
        txn_id: TxnId(uuid::Uuid::from_u128(id.0.as_u128() + 1)),
        attempt: 2,
        packet_ids: if decided {
            vec![PacketId(5), PacketId(6)]
        } else {
            Vec::new()
        },
        agent_id: decided.then_some(AgentId(3)),
        reserved_until: decided.then(|| at + chrono::Duration::seconds(30)),
        deadline: at + chrono::Duration::seconds(60),
        created_at: at,
        decided_at: decided.then_some(at),
        finished_at: (!decided).then_some(at),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
    }
}

fn insert(order: Order, key: Option<&str>, token: LeaseToken) -> OrderWrite {
    let last = order.state.is_final();
    OrderWrite::Insert(Insert {
        outbox: last.then(|| event(&order)),
        lease: (!last).then_some(LEASE),
        idempotency_key: key.map(str::to_owned),
        age: Duration::from_millis(7),
        order,
        token,
    })
}

fn save(before: &Order, after: Order, token: LeaseToken, event: bool) -> OrderWrite {
    OrderWrite::Save(Save {
        before_state: before.state.as_str(),
        before_txn: before.txn_id,
        outbox: event.then(|| self::event(&after)),
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
        "SELECT (to_jsonb(o) - 'created_at' - 'lease_until')::text
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

    // Three orders recorded before, decided, one of them with a key.
    let mut recorded = Vec::new();
    for (n, key) in [(1, Some("k-1")), (2, None), (3, None)] {
        let write = insert(ended(id(n), "c-1", true), key, token);
        let row = write.run(&mut conn).await.unwrap().unwrap();
        recorded.push(row.read().unwrap().0);
    }
    let placed = |order: &Order| Order {
        state: OrderState::Placed,
        finished_at: Some(at()),
        ..order.clone()
    };
    let compensating = |order: &Order| Order {
        state: OrderState::Compensating,
        reason: Some(NotPlacedReason::AssignFailed),
        ..order.clone()
    };
    let writes = vec![
        // New orders: decided without a key, not placed with a new key (and its event), one
        // whose key is taken, and one with the same key from another customer.
        insert(ended(id(4), "c-1", true), None, token),
        insert(ended(id(5), "c-1", false), Some("k-2"), token),
        insert(ended(id(6), "c-1", true), Some("k-1"), token),
        insert(ended(id(7), "c-2", false), Some("k-1"), token),
        // Saves: a final state with its event (which ends the lease), one by a driver that
        // lost its lease, and a compensation.
        save(&recorded[0], placed(&recorded[0]), token, true),
        save(&recorded[1], placed(&recorded[1]), other_token, true),
        save(&recorded[2], compensating(&recorded[2]), token, false),
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
    // The events of the not-placed inserts and of the placed save; the lease of a final
    // order ends with its insert.
    assert_eq!(left_one_by_one.1.len(), 3, "{left_one_by_one:#?}");
    assert_eq!(
        left_one_by_one
            .0
            .iter()
            .filter(|o| o.ends_with("true"))
            .count(),
        3,
        "{left_one_by_one:#?}"
    );
}
