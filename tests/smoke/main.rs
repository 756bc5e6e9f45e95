//! Black-box smoke tests: they talk to a deployment only through its public HTTP APIs (and, for
//! events, the broker), so they run against any running system:
//!
//! ```sh
//! ORDER_URL=http://localhost:8080 STORE_URL=http://localhost:8081 \
//! DELIVERY_URL=http://localhost:8082 AUTH_SIGNING_KEY_FILE=.dev/signing-key.pem \
//! SMOKE_AMQP_URL=amqp://admin:...@localhost:5672/%2f cargo test --test smoke
//! ```
//!
//! With `AUTH_SIGNING_KEY_FILE` (and `AUTH_ISSUER`, `AUTH_AUDIENCE` if not the development ones)
//! they sign their own tokens: an operator's to seed, the customer `smoke`'s to order, the
//! rider's of the order's agent to report. Without `ORDER_URL` they start a system of their own, as the system tests do. They create
//! their own food (with a unique name) and agents, so they can run against a deployment in use.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test binary exports nothing; `pub` marks what the test modules share.
#![allow(unreachable_pub)]

#[path = "../system/helpers/mod.rs"]
mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use helpers::events::EventTap;
use helpers::{TestSystem, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The customer the suite orders as.
const CUSTOMER: &str = "smoke";

/// Whose token a request carries.
#[derive(Clone, Copy, Debug)]
enum As {
    Operator,
    Customer,
    Rider(i64),
}

/// The deployment under test: given by URLs, or started here.
struct Target {
    order: String,
    store: String,
    delivery: String,
    /// Signs the suite's tokens (none: the deployment runs with identity off).
    tokens: Option<identity::Issuer>,
    amqp_url: Option<String>,
    http: reqwest::Client,
    // Keeps a self-started system alive for the test.
    _own: Option<TestSystem>,
}

impl Target {
    async fn connect() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        match std::env::var("ORDER_URL") {
            Ok(order) => {
                let var = |name: &str| {
                    std::env::var(name)
                        .unwrap_or_else(|_| panic!("{name} is required with ORDER_URL"))
                };
                Self {
                    order,
                    store: var("STORE_URL"),
                    delivery: var("DELIVERY_URL"),
                    tokens: std::env::var("AUTH_SIGNING_KEY_FILE").ok().map(|path| {
                        let env = |name: &str, default: &str| {
                            std::env::var(name).unwrap_or_else(|_| default.to_owned())
                        };
                        identity::Issuer::from_pem_file(
                            std::path::Path::new(&path),
                            &env("AUTH_ISSUER", "tenminute-dev"),
                            &env("AUTH_AUDIENCE", "tenminute"),
                        )
                        .expect("AUTH_SIGNING_KEY_FILE holds a private key")
                    }),
                    amqp_url: Some(var("SMOKE_AMQP_URL")),
                    http,
                    _own: None,
                }
            }
            Err(_) => {
                let system = TestSystem::start().await;
                Self {
                    order: system.order.url(""),
                    store: system.store.url(""),
                    delivery: system.delivery.url(""),
                    tokens: None,
                    amqp_url: Some(system.infra.amqp_url.clone()),
                    http,
                    _own: Some(system),
                }
            }
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, who: As) -> (StatusCode, Value) {
        let request = match &self.tokens {
            Some(issuer) => {
                let ttl = Duration::from_secs(600);
                let token = match who {
                    As::Operator => issuer.operator("smoke-operator", ttl),
                    As::Customer => issuer.customer(CUSTOMER, ttl),
                    As::Rider(agent) => issuer.rider(agent, ttl),
                };
                request.bearer_auth(token.expect("signs"))
            }
            None => request,
        };
        let response = request.send().await.expect("the deployment answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Orders are the customer's; everything else the operator's (riders report with
    /// [`Self::report`]).
    fn who(&self, base: &str, path: &str) -> As {
        if base == self.order && path.starts_with("/orders") {
            As::Customer
        } else {
            As::Operator
        }
    }

    async fn post(&self, base: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let who = self.who(base, path);
        self.send(self.http.post(format!("{base}{path}")).json(&body), who)
            .await
    }

    async fn get(&self, base: &str, path: &str) -> (StatusCode, Value) {
        let who = self.who(base, path);
        self.send(self.http.get(format!("{base}{path}")), who).await
    }

    /// The rider of `agent` reports `step` (`picked-up`, `delivered`) of `order`.
    async fn report(&self, agent: i64, order: &str, step: &str) -> (StatusCode, Value) {
        let url = format!("{}/deliveries/{order}/{step}", self.delivery);
        self.send(self.http.post(url), As::Rider(agent)).await
    }

    /// A food of our own with `packets` packets, and `agents` more agents.
    async fn seed(&self, packets: i64, agents: i64) -> i64 {
        let name = format!("smoke {}", uuid::Uuid::new_v4());
        let (status, food) = self
            .post(
                &self.store,
                "/foods",
                json!({ "name": name, "packets": packets }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{food}");
        let (status, body) = self
            .post(&self.delivery, "/agents", json!({ "count": agents }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        food["id"].as_i64().unwrap()
    }

    async fn order(&self, food: i64) -> (StatusCode, Value) {
        self.post(
            &self.order,
            "/orders",
            json!({ "food_id": food, "customer_id": "smoke" }),
        )
        .await
    }

    /// The order's body once it is final.
    async fn final_order(&self, id: &str) -> Value {
        let mut body = Value::Null;
        for _ in 0..600 {
            body = self.get(&self.order, &format!("/orders/{id}")).await.1;
            if body["status"] != "pending" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order {id} not final: {body}");
    }
}

#[tokio::test]
async fn every_service_is_healthy_ready_and_measured() {
    let target = Target::connect().await;
    for base in [&target.order, &target.store, &target.delivery] {
        for path in ["/healthz", "/readyz"] {
            let (status, body) = target.get(base, path).await;
            assert_eq!(status, StatusCode::OK, "{base}{path}: {body}");
        }
        let metrics = target
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("database_up 1"),
            "{base}/metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn orders_are_placed_exactly_as_far_as_the_stock_goes() {
    let target = Target::connect().await;
    let food = target.seed(3, 6).await;

    let answers = join_all((0..6).map(|_| target.order(food))).await;
    let mut placed = Vec::new();
    for (status, body) in &answers {
        let id = body["order_id"].as_str().expect("an order id");
        let order = target.final_order(id).await;
        match order["status"].as_str() {
            Some("placed") => placed.push(order),
            Some("not_placed") => assert_eq!(order["reason"], "food_unavailable", "{order}"),
            _ => panic!("{status}: {order}"),
        }
    }
    assert_eq!(placed.len(), 3, "as many placed as packets");

    // Invariants through the public APIs: each placed order's packet and agent are assigned to
    // it, and none is shared.
    let mut packets = HashSet::new();
    let mut agents = HashSet::new();
    for order in &placed {
        let id = order["order_id"].as_str().unwrap();
        let packet = order["packet_id"].as_i64().unwrap();
        let agent = order["agent_id"].as_i64().unwrap();
        assert!(
            packets.insert(packet) && agents.insert(agent),
            "shared item: {order}"
        );
        let (_, p) = target
            .get(&target.store, &format!("/packets/{packet}"))
            .await;
        assert_eq!(
            (
                p["state"].as_str(),
                p["order_id"].as_str(),
                p["food_id"].as_i64()
            ),
            (Some("assigned"), Some(id), Some(food))
        );
        let (_, a) = target
            .get(&target.delivery, &format!("/agents/{agent}"))
            .await;
        assert_eq!(
            (a["state"].as_str(), a["order_id"].as_str()),
            (Some("assigned"), Some(id))
        );
    }
    let (_, stock) = target.get(&target.store, &format!("/foods/{food}")).await;
    assert_eq!(
        (stock["assigned"].as_i64(), stock["available"].as_i64()),
        (Some(3), Some(0)),
        "{stock}"
    );
    // Nothing stays reserved for the refused orders.
    eventually("nothing reserved", Duration::from_secs(10), || async {
        target.get(&target.store, &format!("/foods/{food}")).await.1["reserved"].as_i64() == Some(0)
    })
    .await;
}

#[tokio::test]
async fn order_events_arrive_for_placed_and_not_placed_orders() {
    let target = Target::connect().await;
    let url = target.amqp_url.clone().expect("SMOKE_AMQP_URL");
    let tap = EventTap::start_at(&url).await;
    let food = target.seed(1, 2).await;
    let mut ids = HashSet::new();
    for _ in 0..2 {
        let (_, body) = target.order(food).await;
        let id = body["order_id"].as_str().unwrap().to_owned();
        target.final_order(&id).await;
        ids.insert(id);
    }
    // Other orders' events may arrive too on a shared deployment: keep ours.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = tap
            .next(Duration::from_secs(30))
            .await
            .expect("events of both orders");
        if event["order_id"]
            .as_str()
            .is_some_and(|id| ids.contains(id))
        {
            assert_eq!(event["food_id"], food);
            kinds.push(event["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["not_placed", "placed"]);
}

#[tokio::test]
async fn a_day_at_a_new_hub_basket_cancel_pick_up_and_delivery() {
    let target = Target::connect().await;
    let (status, hub) = target
        .post(
            &target.store,
            "/hubs",
            json!({ "name": format!("smoke hub {}", uuid::Uuid::new_v4()) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hub}");
    let hub = hub["id"].as_i64().unwrap();
    let mut foods = Vec::new();
    for name in ["smoke dosa", "smoke chai"] {
        let (status, food) = target
            .post(
                &target.store,
                "/foods",
                json!({ "name": name, "packets": 4, "hub_id": hub }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{food}");
        foods.push(food["id"].as_i64().unwrap());
    }
    let (status, body) = target
        .post(
            &target.delivery,
            "/agents",
            json!({ "count": 1, "hub_id": hub }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let basket = json!({ "customer_id": "smoke", "hub_id": hub,
        "lines": [{ "food_id": foods[0], "quantity": 2 }, { "food_id": foods[1] }] });

    // Placed, then cancelled: the hub's one agent is free again.
    let (status, first) = target.post(&target.order, "/orders", basket.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["packet_ids"].as_array().map(Vec::len),
        Some(3),
        "{first}"
    );
    let first = first["order_id"].as_str().unwrap().to_owned();
    let cancel = json!({ "customer_id": "smoke" });
    let (status, body) = target
        .post(
            &target.order,
            &format!("/orders/{first}/cancel"),
            cancel.clone(),
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("cancelled")),
        "{body}"
    );

    // Placed again, picked up (no cancel any more), delivered.
    let (status, second) = target.post(&target.order, "/orders", basket).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let agent = second["agent_id"].as_i64().unwrap();
    let second = second["order_id"].as_str().unwrap().to_owned();
    // Delivery takes the pick-up once it has seen the order placed (`409` until then).
    let deadline = tokio::time::Instant::now() + helpers::PLACED_SEEN;
    let picked_up = loop {
        let answer = target.report(agent, &second, "picked-up").await;
        if answer.0 != StatusCode::CONFLICT || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, body) = picked_up;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = target
        .post(&target.order, &format!("/orders/{second}/cancel"), cancel)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "already_picked_up", "{body}");
    let (status, body) = target.report(agent, &second, "delivered").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(
        "the order is delivered",
        Duration::from_secs(30),
        || async {
            target
                .get(&target.order, &format!("/orders/{second}"))
                .await
                .1["status"]
                == "delivered"
        },
    )
    .await;
}
