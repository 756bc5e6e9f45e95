//! Order events: one per finished order, through the transactional outbox.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::events::EventTap;
use crate::helpers::{Options, TestSystem, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// Waits until the relay has marked every event of the outbox sent: it will not publish them
/// again.
async fn assert_outbox_sent(system: &TestSystem) {
    eventually("the outbox sent", WAIT, || async {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(system.infra.order_db().await)
            .await
            .unwrap();
        unsent == 0
    })
    .await;
}

#[tokio::test]
async fn placed_and_not_placed_orders_publish_one_event_each() {
    let system = TestSystem::start().await;
    let tap = EventTap::start(&system.infra).await;
    let food = system.create_food("Dhokla", 1).await;
    system.create_agents(2).await;

    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let (status, not_placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CONFLICT, "{not_placed}");

    let mut events: Vec<Value> = Vec::new();
    for _ in 0..2 {
        events.push(tap.next(WAIT).await.expect("an event"));
    }
    events.sort_by_key(|e| e["kind"].as_str().map(str::to_owned));
    let (not, yes) = (&events[0], &events[1]);

    assert_eq!(yes["kind"], "placed");
    assert_eq!(yes["schema_version"], 1);
    assert_eq!(yes["order_id"], placed["order_id"]);
    assert_eq!(yes["food_id"], food);
    assert_eq!(yes["packet_id"], placed["packet_id"]);
    assert_eq!(yes["agent_id"], placed["agent_id"]);
    assert_eq!(yes["customer_id"], "c-42");
    assert!(yes["reason"].is_null());
    assert!(
        yes["event_id"].is_string()
            && yes["created_at"].is_string()
            && yes["finished_at"].is_string()
    );

    assert_eq!(not["kind"], "not_placed");
    assert_eq!(not["order_id"], not_placed["order_id"]);
    assert_eq!(not["reason"], "food_unavailable");
    assert!(not["packet_id"].is_null() && not["agent_id"].is_null());
    assert_ne!(yes["event_id"], not["event_id"]);

    // Both are marked sent, so the relay will not publish them again; none was published twice.
    assert_outbox_sent(&system).await;
    tap.assert_nothing_unread("one event per order").await;
}

#[tokio::test]
async fn a_coordinator_killed_before_publishing_still_publishes_after_restart() {
    let mut system = TestSystem::start_with(
        Options::fast().order("FAULT_POINTS", "coordinator.after_final_state"),
    )
    .await;
    let tap = EventTap::start(&system.infra).await;
    let food = system.create_food("Khandvi", 2).await;
    system.create_agents(2).await;

    let answer = system
        .http()
        .post(system.order.url("/orders"))
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-7" }))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "the coordinator died after recording the final state"
    );
    system.order.wait_exit(Duration::from_secs(10)).await;
    let (order_id, state, event_id): (uuid::Uuid, String, uuid::Uuid) = sqlx::query_as(
        "SELECT o.id, o.state, e.event_id FROM orders o JOIN outbox e ON e.order_id = o.id",
    )
    .fetch_one(system.infra.order_db().await)
    .await
    .unwrap();
    assert_eq!(state, "placed");
    tap.assert_nothing_unread("not published before the crash")
        .await;

    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    let event = tap.next(WAIT).await.expect("the event, after restart");
    assert_eq!(event["order_id"], order_id.to_string());
    assert_eq!(event["event_id"], event_id.to_string());
    assert_eq!(event["kind"], "placed");
    assert_eq!(event["customer_id"], "c-7");
    // Published once: the restarted relay marked it sent, and nothing else came.
    assert_outbox_sent(&system).await;
    tap.assert_nothing_unread("no duplicate after the restart")
        .await;
}
