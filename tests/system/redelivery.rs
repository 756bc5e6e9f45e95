//! A command delivered twice changes state once and gets the same reply; a reply lost on its way
//! is asked for again.

use protocol::command::{
    AgentRequest, Assign, AssignReply, Command, PacketLine, PacketRequest, Release, ReleaseReason,
    ReleaseReply, Reply, ReserveReply,
};
use protocol::envelope::TxnEnvelope;
use protocol::ids::{FoodId, HubId, ItemId, OrderId, TxnId};
use protocol::topology::Participant;
use serde::Serialize;
use sqlx::PgPool;

use crate::helpers::client::CommandClient;
use crate::helpers::{Options, TestSystem};

/// Rows of `table` in `state` held by `txn`.
async fn held(pool: &PgPool, table: &str, txn: TxnId, state: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE txn_id = $1 AND state = $2"
    )))
    .bind(txn.0)
    .bind(state)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn twice<R: Serialize + Clone>(
    client: &CommandClient,
    to: Participant,
    order: OrderId,
    txn: TxnId,
    command: Command<R>,
) -> Reply {
    let envelope = TxnEnvelope::txn(order, txn, command);
    let first = client.call(to, &envelope).await;
    let second = client.call(to, &envelope).await;
    assert_eq!(
        first, second,
        "the redelivered {to} command got another reply"
    );
    first
}

async fn check<R: Serialize + Clone>(
    system: &TestSystem,
    client: &CommandClient,
    to: Participant,
    table: &str,
    pool: &PgPool,
    reserve: R,
) {
    // Reserve twice: one item held, the same reply.
    let (order, txn) = (OrderId::new(), TxnId::new());
    let reply = twice(client, to, order, txn, Command::Reserve(reserve.clone())).await;
    let Reply::ReserveReply(ReserveReply::Reserved { items, .. }) = reply else {
        panic!("reserve: {reply:?}");
    };
    assert_eq!(items.len(), 1);
    assert_eq!(held(pool, table, txn, "reserved").await, 1);

    // Assign twice: assigned once, the same reply.
    let assign: Command<R> = Command::Assign(Assign {
        items: items.clone(),
    });
    let reply = twice(client, to, order, txn, assign).await;
    assert_eq!(reply, Reply::AssignReply(AssignReply::Assigned { items }));
    assert_eq!(held(pool, table, txn, "assigned").await, 1);

    // Another transaction: reserve, then release twice: freed once, the same reply.
    let (order, txn) = (OrderId::new(), TxnId::new());
    let envelope = TxnEnvelope::txn(order, txn, Command::Reserve(reserve.clone()));
    let reserved = client.call(to, &envelope).await;
    let Reply::ReserveReply(ReserveReply::Reserved { items, .. }) = reserved.clone() else {
        panic!("reserve: {reserved:?}");
    };
    let release: Command<R> = Command::Release(Release {
        reason: ReleaseReason::Abort,
    });
    let reply = twice(client, to, order, txn, release).await;
    assert_eq!(
        reply,
        Reply::ReleaseReply(ReleaseReply::Released {
            items: items.clone()
        })
    );
    let item: ItemId = items[0];
    let state: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT state FROM {table} WHERE id = $1"
    )))
    .bind(item.0)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(state, "available");

    // The reserve delivered again after the release: the recorded reply, nothing held.
    assert_eq!(client.call(to, &envelope).await, reserved);
    assert_eq!(held(pool, table, txn, "reserved").await, 0);
    let _ = system;
}

#[tokio::test]
async fn commands_delivered_twice_apply_once_and_reply_the_same() {
    let system = TestSystem::start().await;
    let food = system.create_food("Pongal", 5).await;
    system.create_agents(5).await;
    let client = CommandClient::connect(&system.infra).await;

    let request = PacketRequest {
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(food))],
    };
    let store_db = system.infra.store_db().await.clone();
    check(
        &system,
        &client,
        Participant::Store,
        "packets",
        &store_db,
        request,
    )
    .await;
    let delivery_db = system.infra.delivery_db().await.clone();
    check(
        &system,
        &client,
        Participant::Delivery,
        "agents",
        &delivery_db,
        AgentRequest::default(),
    )
    .await;
}

#[tokio::test]
async fn a_batch_of_commands_is_applied_and_answered_command_by_command() {
    let system = TestSystem::start().await;
    let food = system.create_food("Poori", 5).await;
    let client = CommandClient::connect(&system.infra).await;
    let request = PacketRequest {
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(food))],
    };
    let (a, b) = (
        TxnEnvelope::txn(
            OrderId::new(),
            TxnId::new(),
            Command::Reserve(request.clone()),
        ),
        TxnEnvelope::txn(
            OrderId::new(),
            TxnId::new(),
            Command::Reserve(request.clone()),
        ),
    );
    // The same command twice in one batch (a copy), and another one.
    let mut again = a.clone();
    again.message_id = protocol::ids::MessageId::new();
    let replies = client
        .call_batch(Participant::Store, &[a.clone(), b.clone(), again])
        .await;
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0], replies[2], "the copy gets the recorded reply");
    let held = |r: &Reply| match r {
        Reply::ReserveReply(ReserveReply::Reserved { items, .. }) => items.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(
        held(&replies[0]),
        held(&replies[1]),
        "two transactions, two packets"
    );
    let store = system.infra.store_db().await;
    assert_eq!(
        held_by(store, "packets", a.txn_id()).await + held_by(store, "packets", b.txn_id()).await,
        2
    );
    assert_eq!(system.food(food).await["reserved"], 2);
}

async fn held_by(pool: &PgPool, table: &str, txn: TxnId) -> i64 {
    held(pool, table, txn, "reserved").await
}

/// The model's counterexample of a lost reply: replies are published without confirms, and a
/// reserve whose reply was lost used to be waited for until the order's deadline, which refused
/// (`timeout`) an order whose items were free. The coordinator now asks again after its reply
/// timeout, and the store answers the repeat from its barrier.
#[tokio::test]
async fn a_lost_reserve_reply_is_asked_again_and_the_order_placed() {
    let system = TestSystem::start_with(
        Options::patient().store("FAULT_POINTS", "participant.drop_reply=drop"),
    )
    .await;
    let food = system.create_food("Kesari", 1).await;
    system.create_agents(1).await;

    let (_, body) = system.place_order(food).await;
    let id = body["order_id"].as_str().expect("an order id");
    let order = system.order_when_final(&system.order, id).await;
    assert_eq!(order["status"], "placed", "{order}");
    assert!(
        system.store.logged("dropping the message"),
        "the store lost a reply: {}",
        system.store.tail(20)
    );
    assert_eq!(system.food(food).await["assigned"], 1);
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

const FINISH: std::time::Duration = std::time::Duration::from_secs(30);
