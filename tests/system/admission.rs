//! Admission: a coordinator at its bound of orders in flight answers `503` with `Retry-After`
//! at once (not a `timeout` after the order deadline), and a customer past their rate gets
//! `429`; neither records or reserves anything, and both take orders again once there is room.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(60);

async fn place(
    system: &TestSystem,
    customer: &str,
    food: i64,
    key: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = system
        .http()
        .post(system.order.url("/orders"))
        .json(&json!({ "food_id": food, "customer_id": customer }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("the coordinator answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn at_its_bound_of_orders_in_flight_a_coordinator_refuses_at_once_with_retry_after() {
    let options = Options::default()
        .order("MAX_ORDERS_IN_FLIGHT", "2")
        .order("ORDER_DEADLINE", "30s")
        .order("RESPONSE_BUDGET", "500ms")
        .all("RESERVATION_TTL", "60s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Dhokla", 10).await;
    system.create_agents(10).await;

    // Delivery stops answering: two orders wait in phase 1, each holding a slot.
    system.delivery.signal("STOP").await;
    for customer in ["c-1", "c-2"] {
        let (status, _, body) = place(&system, customer, food, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let sent = Instant::now();
    let (status, retry_after, body) = place(&system, "c-3", food, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "answered at once, not after the deadline: {:?}",
        sent.elapsed()
    );
    assert_eq!(
        system.infra.order_states().await.values().sum::<i64>(),
        2,
        "nothing was recorded for the refused order"
    );

    // Delivery is back: the two orders end, their slots are free, and orders are taken again.
    system.delivery.signal("CONT").await;
    system.assert_all_orders_final(FINISH).await;
    eventually("a new order is taken again", FINISH, || async {
        place(&system, "c-3", food, None).await.0 == StatusCode::CREATED
    })
    .await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn a_customer_past_their_rate_gets_429_and_others_and_replays_are_not_held_back() {
    let options = Options::default()
        .order("CUSTOMER_ORDER_RATE", "0.5")
        .order("CUSTOMER_ORDER_BURST", "2");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Kachori", 10).await;
    system.create_agents(10).await;

    for key in ["k-1", "k-2"] {
        let (status, _, body) = place(&system, "c-1", food, Some(key)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, retry_after, body) = place(&system, "c-1", food, Some("k-3")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let wait: u64 = retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in seconds: {retry_after:?}"));
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        system.infra.order_states().await.values().sum::<i64>(),
        2,
        "nothing recorded"
    );

    // A repeat of a key answered before creates nothing: it is answered, rate or not.
    let (status, _, body) = place(&system, "c-1", food, Some("k-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Another customer is not held back.
    let (status, _, body) = place(&system, "c-2", food, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // After Retry-After, the customer orders again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, body) = place(&system, "c-1", food, Some("k-3")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_audit_clean(FINISH).await;
}
