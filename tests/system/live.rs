//! `GET /orders/{id}/events`: an order's states as they happen, as a customer app follows them
//! (server-sent events, identity on).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::keys::TestKeys;
use crate::helpers::sse::SseStream;
use crate::helpers::{Options, TestSystem};

/// How long an event may take to come (an event wakes the stream; it also reads the order
/// every five seconds).
const EVENT: Duration = Duration::from_secs(15);

struct Shop {
    system: TestSystem,
    keys: TestKeys,
    food: i64,
}

impl Shop {
    async fn open(packets: i64, agents: i64) -> Self {
        let keys = TestKeys::new("ed25519");
        let system = TestSystem::start_with(Options::default().identity(&keys)).await;
        let operator = keys.operator();
        let (status, food) = system
            .request_as(
                &system.store,
                Method::POST,
                "/foods",
                Some(&json!({ "name": "Poha", "packets": packets })),
                Some(&operator),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{food}");
        if agents > 0 {
            let (status, body) = system
                .request_as(
                    &system.delivery,
                    Method::POST,
                    "/agents",
                    Some(&json!({ "count": agents })),
                    Some(&operator),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        Self {
            food: food["id"].as_i64().unwrap(),
            system,
            keys,
        }
    }

    async fn place(&self, customer: &str) -> (StatusCode, Value) {
        self.system
            .request_as(
                &self.system.order,
                Method::POST,
                "/orders",
                Some(&json!({ "food_id": self.food })),
                Some(&self.keys.customer(customer)),
            )
            .await
    }

    async fn events(&self, id: &str, token: Option<&str>, last: Option<&str>) -> reqwest::Response {
        let mut request = self
            .system
            .http()
            .get(self.system.order.url(&format!("/orders/{id}/events")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send().await.expect("the order service answers")
    }

    /// The rider of `agent` reports `step` of `order`.
    async fn ride(&self, order: &str, agent: i64, step: &str) {
        let token = self.keys.rider(agent);
        let (status, body) = self.system.rider_as(order, step, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }
}

#[tokio::test]
async fn an_orders_stream_sends_each_state_as_it_happens_and_ends_after_the_final_one() {
    let shop = Shop::open(5, 2).await;
    let (status, placed) = shop.place("c-1").await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let agent = placed["agent_id"].as_i64().unwrap();
    let owner = shop.keys.customer("c-1");

    let mut stream = SseStream::new(shop.events(&id, Some(&owner), None).await);
    // It starts with the current state, with the order as `GET /orders/{id}` shows it.
    let first = stream.next(EVENT).await.expect("the current state");
    assert_eq!(first.name, "placed");
    assert_eq!(first.id.as_deref(), Some("placed"));
    assert_eq!(first.data["order_id"], id.as_str());
    assert_eq!(first.data["agent_id"], agent);
    assert_eq!(first.data["packet_ids"], placed["packet_ids"]);

    shop.ride(&id, agent, "picked-up").await;
    let picked = stream.next(EVENT).await.expect("the pick-up");
    assert_eq!(
        (picked.name.as_str(), picked.id.as_deref()),
        ("picked_up", Some("picked_up"))
    );
    assert_eq!(picked.data["status"], "picked_up");

    shop.ride(&id, agent, "delivered").await;
    let delivered = stream.next(EVENT).await.expect("the delivery");
    assert_eq!(delivered.name, "delivered");
    assert_eq!(delivered.data["status"], "delivered");
    assert!(
        stream.next(EVENT).await.is_none(),
        "the stream ends after the final state"
    );

    // Coming back after `placed`: the steps since, each once, each the order as it is now.
    let mut resumed = SseStream::new(shop.events(&id, Some(&owner), Some("placed")).await);
    let picked = resumed.next(EVENT).await.expect("the pick-up again");
    assert_eq!(picked.name, "picked_up");
    assert_eq!(picked.data["status"], "picked_up", "its step's status");
    assert_eq!(picked.data["order_id"], id.as_str());
    assert_eq!(picked.data["agent_id"], agent, "the order as it is now");
    let delivered = resumed.next(EVENT).await.expect("the delivery again");
    assert_eq!(delivered.name, "delivered");
    assert_eq!(delivered.data["agent_id"], agent);
    assert!(resumed.next(EVENT).await.is_none());

    // Coming back after the final state: nothing more will come (an EventSource stops on 204).
    let done = shop.events(&id, Some(&owner), Some("delivered")).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    // An id the stream never sent: from the current state.
    let mut fresh = SseStream::new(shop.events(&id, Some(&owner), Some("bogus")).await);
    assert_eq!(fresh.next(EVENT).await.expect("current").name, "delivered");
    assert!(fresh.next(EVENT).await.is_none());
}

#[tokio::test]
async fn an_orders_stream_is_its_customers_and_an_operators_only() {
    let shop = Shop::open(5, 2).await;
    let (status, placed) = shop.place("c-owner").await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let agent = placed["agent_id"].as_i64().unwrap();

    let none = shop.events(&id, None, None).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.json::<Value>().await.unwrap()["error"].is_string());
    for token in [shop.keys.customer("c-stranger"), shop.keys.rider(agent)] {
        let refused = shop.events(&id, Some(&token), None).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND, "as for no order");
    }
    let missing = shop
        .events(
            &uuid::Uuid::new_v4().to_string(),
            Some(&shop.keys.operator()),
            None,
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let malformed = shop
        .events("not-a-uuid", Some(&shop.keys.operator()), None)
        .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let mut operator = SseStream::new(shop.events(&id, Some(&shop.keys.operator()), None).await);
    assert_eq!(operator.next(EVENT).await.expect("current").name, "placed");
}

#[tokio::test]
async fn a_refused_orders_stream_says_not_placed_with_its_reason_and_ends() {
    // No agent: every order is refused.
    let shop = Shop::open(5, 0).await;
    let (status, refused) = shop.place("c-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let id = refused["order_id"].as_str().unwrap().to_owned();
    let mut stream = SseStream::new(
        shop.events(&id, Some(&shop.keys.customer("c-1")), None)
            .await,
    );
    let event = stream.next(EVENT).await.expect("the final state");
    assert_eq!(event.name, "not_placed");
    assert_eq!(event.data["reason"], "agent_unavailable");
    assert!(stream.next(EVENT).await.is_none());
    let resumed = shop
        .events(&id, Some(&shop.keys.customer("c-1")), Some("pending"))
        .await;
    let mut resumed = SseStream::new(resumed);
    assert_eq!(
        resumed.next(EVENT).await.expect("after pending").name,
        "not_placed"
    );
}
