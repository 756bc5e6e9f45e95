//! Single orders: placed, not placed for each reason, and bad input.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestSystem, eventually};

const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_order_is_placed_when_a_packet_and_an_agent_are_assigned() {
    let system = TestSystem::start().await;
    let food = system.create_food("Masala Dosa", 3).await;
    system.create_agents(2).await;

    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "placed");
    assert_eq!(body["food_id"], food);
    let order_id = body["order_id"].as_str().expect("order id").to_owned();
    let packet = body["packet_id"].as_i64().expect("packet id");
    let agent = body["agent_id"].as_i64().expect("agent id");

    let (_, packet_view) = system
        .get(&system.store, &format!("/packets/{packet}"))
        .await;
    assert_eq!(packet_view["state"], "assigned");
    assert_eq!(packet_view["order_id"], order_id.as_str());
    assert_eq!(packet_view["food_id"], food);
    let (_, agent_view) = system
        .get(&system.delivery, &format!("/agents/{agent}"))
        .await;
    assert_eq!(agent_view["state"], "assigned");
    assert_eq!(agent_view["order_id"], order_id.as_str());

    let stock = system.food(food).await;
    assert_eq!(
        (&stock["available"], &stock["reserved"], &stock["assigned"]),
        (&json!(2), &json!(0), &json!(1))
    );
    let agents = system.agents_summary().await;
    assert_eq!(
        (
            &agents["available"],
            &agents["reserved"],
            &agents["assigned"]
        ),
        (&json!(1), &json!(0), &json!(1))
    );

    let (status, again) = system
        .get(&system.order, &format!("/orders/{order_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, body, "GET answers what POST answered");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn no_packet_left_means_not_placed_and_the_agent_is_freed() {
    let system = TestSystem::start().await;
    let food = system.create_food("Idli", 0).await;
    system.create_agents(1).await;

    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "not_placed");
    assert_eq!(body["reason"], "food_unavailable");

    system.assert_nothing_reserved(SETTLE).await;
    let agents = system.agents_summary().await;
    assert_eq!(agents["available"], 1, "{agents}");
    assert_eq!(agents["assigned"], 0, "{agents}");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn no_agent_left_means_not_placed_and_the_packet_is_freed() {
    let system = TestSystem::start().await;
    let food = system.create_food("Vada", 2).await;

    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "not_placed");
    assert_eq!(body["reason"], "agent_unavailable");

    system.assert_nothing_reserved(SETTLE).await;
    let stock = system.food(food).await;
    assert_eq!(stock["available"], 2, "{stock}");
    assert_eq!(stock["assigned"], 0, "{stock}");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn an_unknown_food_is_not_placed() {
    let system = TestSystem::start().await;
    system.create_agents(1).await;

    let (status, body) = system.place_order(987_654).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "unknown_food");
    system.assert_nothing_reserved(SETTLE).await;
    assert_eq!(system.agents_summary().await["available"], 1);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let system = TestSystem::start().await;
    let food = system.create_food("Upma", 1).await;
    system.create_agents(1).await;
    let http = system.http();

    // Malformed JSON: 400.
    let response = http
        .post(system.order.url("/orders"))
        .header("content-type", "application/json")
        .body("{\"food_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    // Not JSON at all: 415.
    let response = http
        .post(system.order.url("/orders"))
        .body("food_id=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Wrong types, missing fields, unknown fields, invalid values: 422.
    for body in [
        json!({ "food_id": "one", "customer_id": "c" }),
        json!({ "customer_id": "c" }),
        json!({ "food_id": food }),
        json!({ "food_id": food, "customer_id": "c", "extra": true }),
        json!({ "food_id": -1, "customer_id": "c" }),
        json!({ "food_id": food, "customer_id": "   " }),
    ] {
        let (status, answer) = system.post(&system.order, "/orders", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert!(answer["error"].is_string(), "{answer}");
    }
    for (path, body) in [
        ("/foods", json!({ "name": "x", "packets": -5 })),
        ("/foods", json!({ "name": "", "packets": 1 })),
        ("/foods", json!({ "packets": 1 })),
        (
            &format!("/foods/{food}/packets") as &str,
            json!({ "count": 0 }),
        ),
        (
            &format!("/foods/{food}/packets"),
            json!({ "count": "many" }),
        ),
    ] {
        let (status, answer) = system.post(&system.store, path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body} → {answer}"
        );
    }
    for body in [
        json!({ "count": 0 }),
        json!({ "count": -3 }),
        json!({ "count": 2, "names": ["only one"] }),
        json!({}),
    ] {
        let (status, answer) = system.post(&system.delivery, "/agents", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
    }

    // Unknown ids: 404; malformed ids: 400.
    let unknown = uuid::Uuid::now_v7();
    for (service, path) in [
        (&system.order, format!("/orders/{unknown}")),
        (&system.store, "/foods/424242".to_owned()),
        (&system.store, "/packets/424242".to_owned()),
        (&system.delivery, "/agents/424242".to_owned()),
    ] {
        let (status, answer) = system.get(service, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, _) = system
        .post(
            &system.store,
            "/foods/424242/packets",
            json!({ "count": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = system.get(&system.order, "/orders/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Nothing was created or changed.
    assert!(system.infra.order_states().await.is_empty());
    let stock = system.food(food).await;
    assert_eq!(
        (&stock["available"], &stock["assigned"]),
        (&json!(1), &json!(0))
    );
    let (_, foods) = system.get(&system.store, "/foods").await;
    assert_eq!(foods.as_array().map(Vec::len), Some(1), "{foods}");
    assert_eq!(system.agents_summary().await["available"], 1);
}

/// Posts an order for `customer` with `Idempotency-Key: key`; the status, whether the answer is
/// marked as a replay, and the body.
async fn place_with_key(
    system: &TestSystem,
    food: i64,
    customer: &str,
    key: &str,
) -> (StatusCode, bool, serde_json::Value) {
    let response = system
        .http()
        .post(system.order.url("/orders"))
        .header("idempotency-key", key)
        .json(&json!({ "food_id": food, "customer_id": customer }))
        .send()
        .await
        .expect("POST /orders");
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = response.json().await.expect("JSON body");
    (status, replayed, body)
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_order_and_creates_no_other() {
    let system = TestSystem::start().await;
    let food = system.create_food("Pongal", 5).await;
    let other_food = system.create_food("Vada", 5).await;
    system.create_agents(5).await;

    let (status, replayed, first) = place_with_key(&system, food, "c-42", "k-1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed, "a first request is not a replay");

    // The same request again: the same order, nothing new reserved or assigned; not even for a
    // moment (a replay runs no phase 1, which could hold the last packets of other customers).
    let reserves = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM txn_barrier WHERE operation = 'reserve'")
            .fetch_one(system.infra.store_db().await)
            .await
            .expect("count the store's reserves")
    };
    let reserved_before = reserves().await;
    let (status, replayed, again) = place_with_key(&system, food, "c-42", "k-1").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed, "a repeated key is answered as a replay");
    assert_eq!(again, first);
    assert_eq!(
        reserves().await,
        reserved_before,
        "a replay reserves nothing"
    );

    // Keys belong to a customer: another customer's "k-1" is another order.
    let (status, replayed, other) = place_with_key(&system, food, "c-7", "k-1").await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert!(!replayed);
    assert_ne!(other["order_id"], first["order_id"]);

    // The same key for another food is a client error.
    let (status, _, answer) = place_with_key(&system, other_food, "c-42", "k-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");

    // Concurrent requests with one key: one order, and every answer names it.
    let answers = join_all((0..8).map(|_| place_with_key(&system, food, "c-42", "k-2"))).await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(_, _, body)| body["order_id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "exactly one request created the order: {answers:?}"
    );

    // Malformed keys: 400, nothing created.
    for key in ["", &"k".repeat(201), "two words"] {
        let (status, _, answer) = place_with_key(&system, food, "c-42", key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }

    let id = answers[0].2["order_id"].as_str().expect("order id");
    let settled = system.order_when_final(&system.order, id).await;
    assert_eq!(settled["status"], "placed", "{settled}");
    let states = system.infra.order_states().await;
    assert_eq!(states, [("placed".to_owned(), 3)].into(), "{states:?}");
    assert_eq!(system.food(food).await["assigned"], 3);
    assert_eq!(system.food(other_food).await["assigned"], 0);
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn an_order_recorded_after_its_request_was_answered_is_driven_only_if_keyed() {
    // The shortest response budget, and the `orders` table held by the test while each request
    // is made: every request is answered `503` before its order can be recorded.
    let system = TestSystem::start_with(Options::default().order("RESPONSE_BUDGET", "1ms")).await;
    let food = system.create_food("Poha", 4).await;
    system.create_agents(4).await;

    let hold = hold_orders_table(&system).await;
    let (status, answer) = system.place_order(food).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    hold.commit().await.expect("release the orders table");
    // Nobody can find an unkeyed order recorded too late: it is not placed, and holds nothing.
    eventually("the unkeyed order is final", SETTLE, || async {
        system.infra.order_states().await == [("not_placed".to_owned(), 1)].into()
    })
    .await;

    // A keyed one is found by a retry with its key, so it is driven to its end.
    let hold = hold_orders_table(&system).await;
    let (status, _, answer) = place_with_key(&system, food, "c-42", "late").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    hold.commit().await.expect("release the orders table");
    eventually("the keyed order is placed", SETTLE, || async {
        system.infra.order_states().await
            == [("not_placed".to_owned(), 1), ("placed".to_owned(), 1)].into()
    })
    .await;
    assert_eq!(system.food(food).await["assigned"], 1);
    system.assert_nothing_reserved(SETTLE).await;
    system.assert_audit_clean(SETTLE).await;
}

/// Locks the coordinator's `orders` table against writes (reads go on) until the returned
/// transaction ends.
async fn hold_orders_table(system: &TestSystem) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut hold = system
        .infra
        .order_db()
        .await
        .begin()
        .await
        .expect("begin a transaction on the order database");
    sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .expect("lock the orders table");
    hold
}
